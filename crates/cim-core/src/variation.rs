//! Memory-cell variation (docs/SPEC.md section 3): a programmed cell holding digit magnitude |d|
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
///
/// # Panics
/// If `sigma` is negative or not finite: run configurations (`train_variation_sigma`) and
/// variation studies (`sigmas`) refuse such values before any work.
pub fn lognormal_gains(shape: [usize; 4], sigma: f64, seed: u64, device: &Device) -> Tensor<4> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = if sigma == 0.0 {
        vec![1.0; n]
    } else {
        let normal = Normal::new(0.0, sigma).expect("a finite, non-negative sigma");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| normal.sample(&mut rng).exp() as f32).collect()
    };
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// The seed of layer `layer` on simulated chip `chip`.
pub fn cell_seed(chip: u64, layer: usize) -> u64 {
    let mut z = chip.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (layer as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: Tensor<4>) -> Vec<f64> {
        t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()
    }

    #[test]
    fn multipliers_have_the_log_normal_mean_and_variance() {
        let device = Device::flex();
        for sigma in [0.05, 0.1, 0.3] {
            let v = values(lognormal_gains([10, 10, 100, 100], sigma, 42, &device)); // 1e6 cells
            let n = v.len() as f64;
            let mean = v.iter().sum::<f64>() / n;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
            let s2: f64 = sigma * sigma;
            let (want_mean, want_var) = ((s2 / 2.0).exp(), (s2.exp() - 1.0) * s2.exp());
            // standard errors: sqrt(var/n) for the mean; the variance of a log-normal sample
            // variance is well within 2% at n = 1e6 for these sigmas
            assert!(
                (mean - want_mean).abs() < 5.0 * (want_var / n).sqrt(),
                "sigma {sigma}: mean {mean} vs {want_mean}"
            );
            assert!((var / want_var - 1.0).abs() < 0.02, "sigma {sigma}: var {var} vs {want_var}");
            assert!(v.iter().all(|x| *x > 0.0), "multipliers keep signs");
            // log-normal: the logs are normal with the given sigma
            let logs: Vec<f64> = v.iter().map(|x| x.ln()).collect();
            let lm = logs.iter().sum::<f64>() / n;
            let ls = (logs.iter().map(|x| (x - lm).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            assert!(
                lm.abs() < 5.0 * sigma / n.sqrt() && (ls / sigma - 1.0).abs() < 0.01,
                "sigma {sigma}: log mean {lm}, log std {ls}"
            );
        }
    }

    #[test]
    fn chips_are_fixed_by_their_seed_and_differ_from_each_other() {
        let device = Device::flex();
        let a = values(lognormal_gains([2, 2, 3, 4], 0.1, cell_seed(7, 0), &device));
        assert_eq!(a, values(lognormal_gains([2, 2, 3, 4], 0.1, cell_seed(7, 0), &device)));
        assert_ne!(a, values(lognormal_gains([2, 2, 3, 4], 0.1, cell_seed(8, 0), &device)));
        assert_ne!(a, values(lognormal_gains([2, 2, 3, 4], 0.1, cell_seed(7, 1), &device)), "layers differ");
        assert!(values(lognormal_gains([1, 1, 2, 2], 0.0, 1, &device)).iter().all(|x| *x == 1.0));
    }
}
