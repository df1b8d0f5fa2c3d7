//! Crossbar semantics of a compute-in-memory convolution, exactly as DESIGN.md section 3 defines
//! them: mapping and tiling onto N x N arrays ([`tiling`]), bit slicing of weight codes into cells
//! ([`slicing`]), LSQ quantizers ([`lsq`]), the ADC with dequantization and accumulation
//! ([`adc`]), and the layer that puts them together ([`CimConv2d`]).

pub mod adc;
pub mod config;
mod kernels;
pub mod layer;
pub mod lsq;
pub mod memory;
pub mod method;
pub mod psums;
pub mod slicing;
pub mod tiling;

pub use config::{CimConfigError, CimConvConfig, Encoding, Granularity};
pub use layer::CimConv2d;
pub use lsq::LsqRange;
pub use method::{Method, Recipe, Scheme, validate_method};
pub use slicing::BitSlicing;
pub use tiling::{LayerCounts, Tiling};
