//! Crossbar semantics of a compute-in-memory convolution, exactly as DESIGN.md section 3 defines
//! them: mapping and tiling onto N x N arrays ([`tiling`]), bit slicing of weight codes into cells
//! ([`slicing`]), LSQ quantizers ([`lsq`]), the ADC with dequantization and accumulation
//! ([`adc`]) with its calibration ([`calibration`]) and quality statistics ([`quality`]), and the layer that puts them together ([`CimConv2d`]).

pub mod activation;
pub mod adc;
pub mod calibration;
pub mod config;
pub mod device;
mod kernels;
pub mod layer;
pub mod lsq;
pub mod memory;
pub mod own;
pub mod psums;
pub mod quality;
pub mod slicing;
pub mod tiling;
pub mod variation;

pub use config::{AdcInit, AdcWindow, CimConfigError, CimConvConfig, Encoding, Granularity};
pub use device::{ComputeDevice, DeviceError};
pub use layer::CimConv2d;
pub use lsq::LsqRange;
pub use own::{LsqWeights, OwnQuantizers, PsumQuantizer, WeightQuantizer};
pub use slicing::BitSlicing;
pub use tiling::{LayerCounts, Tiling};

/// Test data from a host RNG: tests run in parallel threads, and burn's device RNG is global.
#[cfg(test)]
pub(crate) fn test_tensor<const D: usize>(
    shape: [usize; D],
    range: std::ops::Range<f32>,
    seed: u64,
    device: &burn::tensor::Device,
) -> burn::tensor::Tensor<D> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f32> = (0..shape.iter().product()).map(|_| rng.random_range(range.clone())).collect();
    burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(values, shape), device)
}
