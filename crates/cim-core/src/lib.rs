//! Crossbar semantics of a compute-in-memory convolution, exactly as DESIGN.md section 3 defines
//! them: mapping and tiling onto N x N arrays ([`tiling`]), bit slicing of weight codes into cells
//! ([`slicing`]), LSQ quantizers ([`lsq`]), the ADC with dequantization and accumulation
//! ([`adc`]) with its calibration ([`calibration`]) and quality statistics ([`quality`]), and the
//! layer that puts them together ([`CimConv2d`]). Beside them, the Flex passes of the layers
//! outside the arrays: the floating-point convolution ([`float_conv`]) and batch norm with its
//! ReLU ([`batch_norm`]).

pub mod activation;
pub mod adc;
pub mod batch_norm;
pub mod calibration;
pub mod config;
pub mod device;
pub mod float_conv;
mod im2col;
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
pub use im2col::ConvGeometry;
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
    let values = test_values(shape.iter().product(), range, seed);
    burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(values, shape), device)
}

/// `len` values uniform in `range` from a host RNG seeded with `seed`.
#[cfg(test)]
pub(crate) fn test_values(len: usize, range: std::ops::Range<f32>, seed: u64) -> Vec<f32> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(range.clone())).collect()
}

/// A tensor's values in row-major order (tests).
#[cfg(test)]
pub(crate) fn test_flat<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 values")
}

/// Asserts that a fast path's values are within `tol` x max(|reference|, `floor`) of the
/// reference's, entry by entry (tests).
#[cfg(test)]
pub(crate) fn assert_close(fast: &[f32], reference: &[f32], tol: f32, floor: f32, what: &str) {
    assert_eq!(fast.len(), reference.len(), "{what}: lengths");
    let scale = reference.iter().fold(floor, |m, v| m.max(v.abs()));
    for (i, (x, y)) in fast.iter().zip(reference).enumerate() {
        assert!((x - y).abs() <= tol * scale, "{what}[{i}]: fast {x} vs reference {y} (scale {scale})");
    }
}
