//! What the tests of a fast path need to compare it with its reference: reproducible test data
//! from a host RNG and one closeness check. Public so that the tests of every crate with
//! hand-written passes use the same ones.

use std::ops::Range;

use burn::tensor::{Device, Tensor, TensorData};
use rand::{RngExt, SeedableRng};

/// A tensor of values uniform in `range` from a host RNG seeded with `seed`: tests run in
/// parallel threads, and burn's device RNG is global.
pub fn test_tensor<const D: usize>(shape: [usize; D], range: Range<f32>, seed: u64, device: &Device) -> Tensor<D> {
    let values = test_values(shape.iter().product(), range, seed);
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// `len` values uniform in `range` from a host RNG seeded with `seed`.
pub fn test_values(len: usize, range: Range<f32>, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(range.clone())).collect()
}

/// A tensor's values in row-major order.
pub fn test_flat<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 values")
}

/// Asserts that `got` is within `tol` x max(|expected|, `floor`) of `expected`, entry by entry;
/// `what` names the quantity in the failure message. The scale is the largest magnitude of the
/// expected values, so a tolerance is relative to the quantity, not to each entry.
pub fn assert_close<T: Into<f64> + Copy>(what: &str, got: &[T], expected: &[T], tol: f64, floor: f64) {
    assert_eq!(got.len(), expected.len(), "{what}: lengths");
    let scale = expected.iter().fold(floor, |m, v| m.max((*v).into().abs()));
    for (i, (x, y)) in got.iter().zip(expected).enumerate() {
        let (x, y) = ((*x).into(), (*y).into());
        assert!((x - y).abs() <= tol * scale, "{what}[{i}]: got {x}, expected {y} (scale {scale})");
    }
}
