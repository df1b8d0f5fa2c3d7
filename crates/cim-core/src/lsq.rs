//! Learned step size quantization (LSQ) and the straight-through pieces it is made of
//! (docs/SPEC.md section 1, "LSQ details" and "Rounding").
//!
//! `q = round(clamp(v / s, Qn, Qp))`: clamping before rounding makes "inside the range" mean
//! Qn <= v/s <= Qp, where round passes the gradient straight through; outside, v gets none.
//! Multiplying the codes by s then gives the step LSQ's gradient, round(v/s) - v/s inside and
//! Qn or Qp outside, which [`scale_grad`] multiplies by g = 1/sqrt(n * max(Qp, 1)). The weight
//! codes themselves come from [`crate::own::LsqWeights`], the built-in weight quantizer.

use burn::tensor::Tensor;
use serde::Serialize;

/// An integer code range [low, high] (stored as f32: every bound used is exact in f32).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LsqRange {
    /// Qn (or Pn).
    pub low: f32,
    /// Qp (or Pp).
    pub high: f32,
}

impl LsqRange {
    /// [low, high].
    pub fn new(low: f32, high: f32) -> Self {
        Self { low, high }
    }

    /// [-2^(bits-1), 2^(bits-1) - 1].
    pub fn signed(bits: u32) -> Self {
        let half = (1u64 << (bits - 1)) as f32;
        Self::new(-half, half - 1.0)
    }

    /// [0, 2^bits - 1].
    pub fn unsigned(bits: u32) -> Self {
        Self::new(0.0, ((1u64 << bits) - 1) as f32)
    }

    /// LSQ's initial step from the mean |v| of a group: 2 * mean / sqrt(max(Qp, 1)), or 1.0 where
    /// the mean is 0 (a group of zeros would otherwise get a zero step).
    pub fn init_step(&self, mean_abs: f64) -> f32 {
        if mean_abs == 0.0 { 1.0 } else { (2.0 * mean_abs / f64::from(self.high.max(1.0)).sqrt()) as f32 }
    }

    /// LSQ's gradient scale for a step shared by `n` elements: 1 / sqrt(n * max(Qp, 1)).
    pub fn grad_scale(&self, n: usize) -> f32 {
        (1.0 / (n as f64 * f64::from(self.high.max(1.0))).sqrt()) as f32
    }
}

/// Rounds half to even in the forward pass and passes the gradient through unchanged.
pub fn round_ste<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let rounded = x.clone().round().detach();
    let residual = rounded.sub(x.clone().detach());
    x.add(residual)
}

/// Identity in the forward pass (exactly: `x + (a - a)`); multiplies the gradient by `scale`
/// (LSQ's step gradient scale).
pub fn scale_grad<const D: usize>(x: Tensor<D>, scale: Tensor<D>) -> Tensor<D> {
    let scaled = x.clone().mul(scale);
    let zero_with_grad = scaled.clone().sub(scaled.detach());
    x.detach().add(zero_with_grad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::own::LsqWeights;
    use crate::settings::Granularity;
    use burn::tensor::Device;

    fn device() -> Device {
        Device::flex().autodiff()
    }

    fn vec1(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn ranges_and_init() {
        assert_eq!(LsqRange::signed(3), LsqRange::new(-4.0, 3.0));
        assert_eq!(LsqRange::unsigned(3), LsqRange::new(0.0, 7.0));
        assert_eq!(LsqRange::signed(1), LsqRange::new(-1.0, 0.0));
        assert_eq!(LsqRange::signed(1).init_step(0.5), 1.0); // max(Qp, 1) = 1
        assert_eq!(LsqRange::unsigned(2).init_step(0.0), 1.0);
        assert!((LsqRange::signed(4).init_step(0.7) - 2.0 * 0.7 / 7f32.sqrt()).abs() < 1e-7);
        assert!((LsqRange::signed(4).grad_scale(9) - 1.0 / 63f32.sqrt()).abs() < 1e-7);
    }

    #[test]
    fn rounding_is_half_to_even() {
        let r = LsqRange::new(-8.0, 7.0);
        let lsq = LsqWeights::of(Granularity::Layer);
        assert_eq!(lsq.code(2.5, r), 2.0);
        assert_eq!(lsq.code(3.5, r), 4.0);
        assert_eq!(lsq.code(-2.5, r), -2.0);
        let d = device();
        let t = Tensor::<1>::from_floats([0.5, 1.5, 2.5, -0.5, -1.5], &d);
        assert_eq!(vec1(round_ste(t)), vec![0.0, 2.0, 2.0, -0.0, -2.0]);
    }

    /// d(s * code(v / s))/dv and /ds of LSQ's codes against LSQ's hand-derived values, inside
    /// and outside.
    #[test]
    fn lsq_gradients_match_hand_derived_values() {
        let d = device();
        let r = LsqRange::signed(3); // [-4, 3]
        let values = [0.26f32, -0.9, 1.6, -2.3, 0.0, 0.74];
        let s0 = 0.4f32;
        let v = Tensor::<1>::from_floats(values, &d).require_grad();
        let s = Tensor::<1>::from_floats([s0], &d).require_grad();
        let sb = s.clone().expand([values.len()]);
        let n = values.len();
        let ratio = v.clone().div(sb.clone()).reshape([1, 1, n]);
        let out = LsqWeights::of(Granularity::Layer).code_tensor(ratio, r).reshape([n]).mul(sb);
        let grads = out.sum().backward();
        let gv = vec1(v.grad(&grads).unwrap());
        let gs = vec1(s.grad(&grads).unwrap())[0];
        let mut expect_gs = 0.0f32;
        for (i, &x) in values.iter().enumerate() {
            let ratio = x / s0;
            let inside = ratio >= r.low && ratio <= r.high;
            assert_eq!(gv[i], if inside { 1.0 } else { 0.0 }, "dv at {x}");
            expect_gs += if inside {
                ratio.round_ties_even() - ratio
            } else if ratio < r.low {
                r.low
            } else {
                r.high
            };
        }
        assert!((gs - expect_gs).abs() < 1e-5, "ds {gs} vs {expect_gs}");
    }

    #[test]
    fn scale_grad_scales_only_the_gradient() {
        let d = device();
        let x = Tensor::<1>::from_floats([2.0, 3.0], &d).require_grad();
        let g = Tensor::<1>::from_floats([0.5, 0.25], &d);
        let y = scale_grad(x.clone(), g);
        assert_eq!(vec1(y.clone()), vec![2.0, 3.0]);
        let grads = y.mul_scalar(3.0).sum().backward();
        assert_eq!(vec1(x.grad(&grads).unwrap()), vec![1.5, 0.75]);
        // exact in the forward pass even for large scales
        let v = 241.01f32;
        let y = scale_grad(Tensor::<1>::from_floats([v], &d), Tensor::from_floats([57_000.3f32], &d));
        assert_eq!(vec1(y), vec![v]);
    }
}
