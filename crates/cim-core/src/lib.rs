//! Crossbar semantics of a compute-in-memory convolution, exactly as docs/SPEC.md section 1 defines
//! them: mapping and tiling onto N x N arrays ([`tiling`]), bit slicing of weight codes into cells
//! ([`slicing`]), LSQ quantizers ([`lsq`]), the ADC with dequantization and accumulation
//! ([`adc`]) with its calibration ([`calibration`]) and quality statistics ([`quality`]), and the
//! layer that puts them together ([`CimConv2d`]). The generic CPU kernels it builds on (im2col,
//! autodiff plumbing, host buffers) are the crate `flex-kernels`.

pub mod activation;
pub mod adc;
pub mod calibration;
pub mod config;
pub mod device;
pub mod layer;
pub mod lsq;
pub mod own;
pub mod psums;
pub mod quality;
pub mod settings;
pub mod slicing;
pub mod tiling;
pub mod variation;

pub use config::CimConvConfig;
pub use device::{ComputeDevice, DeviceError};
pub use flex_kernels::ConvGeometry;
pub use layer::CimConv2d;
pub use lsq::LsqRange;
pub use own::{LsqWeights, OwnQuantizers, PsumQuantizer, WeightQuantizer};
pub use settings::{AdcInit, AdcWindow, CimConfigError, Encoding, Granularity};
pub use slicing::BitSlicing;
pub use tiling::{LayerCounts, Tiling};

/// The helpers every fast-path test uses (one closeness check, reproducible test data).
#[cfg(test)]
pub(crate) use flex_kernels::testing::{assert_close, test_flat, test_tensor, test_values};
