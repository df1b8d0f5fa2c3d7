//! Near-ADC-less partial sums after Saxena & Roy, "Partial-Sum Quantization for Near ADC-Less
//! Compute-In-Memory Accelerators" (ISLPED 2023): every column's partial sum is digitized by a
//! sense amplifier (binary, 1 bit) or a pair of comparators (ternary, 1.5 bits) instead of a
//! multi-bit ADC, with a learned scale per column, and the weights keep one step per layer.
//!
//! Both converters have a window per (row tile, column, polarity, slice): a step s and a
//! reference z, the level the comparators sit around. In this harness each polarity's column
//! is digitized on its own (docs/SPEC.md section 1), and those partial sums are never negative, so
//! a converter comparing against 0 would always answer +1: the reference is calibrated (least
//! squared error over the calibration batches) and trained, like the step.
//!
//! - binary: `p_q = z + s * sign(p - z)` (p = z reads +1), two levels. Gradient: straight
//!   through where |p - z| <= s (the hard-tanh estimator of binary networks), none outside.
//! - ternary: `p_q = z + s * clamp(round((p - z) / s), -1, 1)`, three levels, with LSQ's
//!   straight-through estimator.
//!
//! Neither is expressible as the built-in uniform ADC: ternary has three levels (no power of
//! two), and binary's levels are symmetric about its reference.

use burn::tensor::Tensor;
use method_api::{AdcWindow, Granularity, LsqRange, Method, PsumQuantizer, Scheme};

/// A column's converter: a few comparators around a learned reference z, output
/// `z + s * code((p - z) / s)` with codes in [-1, 1], one window per (row tile, column, polarity,
/// slice).
pub struct ColumnConverter {
    name: &'static str,
    resolution: &'static str,
    code: fn(f32) -> f32,
    code_tensor: fn(Tensor<4>) -> Tensor<4>,
}

impl PsumQuantizer for ColumnConverter {
    fn name(&self) -> &'static str {
        self.name
    }
    fn resolution(&self) -> &'static str {
        self.resolution
    }
    fn granularity(&self) -> Granularity {
        Granularity::Column
    }
    fn window(&self) -> AdcWindow {
        AdcWindow::Learned
    }
    fn codes(&self) -> LsqRange {
        LsqRange::new(-1.0, 1.0)
    }
    fn code(&self, ratio: f32) -> f32 {
        (self.code)(ratio)
    }
    fn code_tensor(&self, ratio: Tensor<4>) -> Tensor<4> {
        (self.code_tensor)(ratio)
    }
}

/// A sense amplifier per column: one comparison against the reference (p = z reads +1).
pub static BINARY: ColumnConverter = ColumnConverter {
    name: "binary",
    resolution: "1",
    code: |r| if r >= 0.0 { 1.0 } else { -1.0 },
    code_tensor: |r| {
        let sign = r.clone().greater_equal_elem(0.0).float().mul_scalar(2.0).sub_scalar(1.0);
        let surrogate = r.clamp(-1.0, 1.0);
        // forward: exactly the sign (plus c - c = 0); backward: the clamp's gradient (hard tanh)
        sign.add(surrogate.clone().sub(surrogate.detach()))
    },
};

/// Two comparators per column: below, near or above the reference.
pub static TERNARY: ColumnConverter = ColumnConverter {
    name: "ternary",
    resolution: "1.5",
    code: |r| r.clamp(-1.0, 1.0).round_ties_even(),
    code_tensor: |r| method_api::round_ste(r.clamp(-1.0, 1.0)),
};

/// Layer-wise weights, binary column-wise partial sums, one stage.
pub static SAXENA_ROY_BINARY: Method = Method::new(
    "saxena-roy-binary",
    "layer-wise weights, binary (1-bit sense-amplifier) column-wise partial sums (Saxena & Roy 2023)",
    Some(Scheme::own_adc(Granularity::Layer, &BINARY)),
);

/// Layer-wise weights, ternary column-wise partial sums, one stage.
pub static SAXENA_ROY_TERNARY: Method = Method::new(
    "saxena-roy-ternary",
    "layer-wise weights, ternary (1.5-bit) column-wise partial sums (Saxena & Roy 2023)",
    Some(Scheme::own_adc(Granularity::Layer, &TERNARY)),
);

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};
    use method_api::GroupSamples;
    use rand::{RngExt, SeedableRng};

    fn ratios(device: &Device) -> (Vec<f32>, Tensor<4>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut v: Vec<f32> = (0..200).map(|_| rng.random_range(-3.0f32..3.0)).collect();
        v.extend([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]);
        let n = v.len();
        (v.clone(), Tensor::from_data(TensorData::new(v, [n, 1, 1, 1]), device))
    }

    /// The tensor codes equal the host codes, and their gradient is 1 exactly inside [-1, 1].
    #[test]
    fn tensor_codes_match_the_converter_and_pass_gradients_inside() {
        let device = Device::flex().autodiff();
        for q in [&BINARY as &dyn PsumQuantizer, &TERNARY] {
            let (host, t) = ratios(&device);
            let t = t.require_grad();
            let codes = q.code_tensor(t.clone());
            let grads = codes.clone().sum().backward();
            let got = codes.into_data().try_to_vec::<f32>().unwrap();
            let grad = t.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
            for ((r, c), g) in host.iter().zip(&got).zip(&grad) {
                assert_eq!(*c, q.code(*r), "{} code of {r}", q.name());
                let range = q.codes();
                assert!(*c >= range.low && *c <= range.high);
                assert_eq!(*g, if r.abs() <= 1.0 { 1.0 } else { 0.0 }, "{} gradient at {r}", q.name());
            }
        }
        assert_eq!(BINARY.code(0.0), 1.0);
        assert_eq!(TERNARY.code(0.5), 0.0);
    }

    /// Calibration puts the binary levels near the two clusters of a bimodal group and the
    /// ternary levels on three clusters.
    #[test]
    fn calibration_finds_the_clusters() {
        let two: Vec<f32> = (0..400).map(|i| if i % 2 == 0 { 100.0 } else { 140.0 } + (i % 5) as f32).collect();
        let w = BINARY.calibrate(&GroupSamples::from_values(&two));
        assert!((w.offset - w.step - 102.0).abs() < 3.0 && (w.offset + w.step - 142.0).abs() < 3.0, "{w:?}");
        let three: Vec<f32> = (0..600).map(|i| [50.0, 80.0, 110.0][i % 3]).collect();
        let w = TERNARY.calibrate(&GroupSamples::from_values(&three));
        assert!((w.offset - 80.0).abs() < 1.0 && (w.step - 30.0).abs() < 1.0, "{w:?}");
    }

    #[test]
    fn methods_are_valid() {
        for m in [&SAXENA_ROY_BINARY, &SAXENA_ROY_TERNARY] {
            m.validate().unwrap();
            assert!(m.scheme().unwrap().psum.own().is_some());
        }
    }
}
