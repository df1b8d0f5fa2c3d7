//! Memory-cell variation (DESIGN.md section 5): a programmed cell holding digit magnitude |d|
//! conducts |d| * exp(theta), theta ~ Normal(0, sigma^2), drawn once per cell per simulated chip
//! and fixed for the whole evaluation; signs are kept.
//!
//! Multipliers come from a host RNG seeded per (chip, layer), never from a backend's global RNG,
//! so that a chip is the same whatever else runs in the process.

use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// exp(theta) for every cell of `shape`, theta ~ Normal(0, sigma^2), from `seed`.
pub fn lognormal_gains(shape: [usize; 4], sigma: f64, seed: u64, device: &Device) -> Tensor<4> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = if sigma == 0.0 {
        vec![1.0; n]
    } else {
        let normal = Normal::new(0.0, sigma).expect("a finite, non-negative sigma");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| (normal.sample(&mut rng) as f64).exp() as f32).collect()
    };
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// The seed of layer `layer` on simulated chip `chip`.
pub fn cell_seed(chip: u64, layer: usize) -> u64 {
    let mut z = chip.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (layer as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
