//! The activation codes entering the arrays (docs/SPEC.md section 1, first paragraph):
//! a = round(clamp(x, 0, 1) * (2^A - 1)), the gradient passed straight through inside [0, 1].
//!
//! As generic tensor ops ([`activation_codes_reference`]) that is two masked fills, a scale, a
//! rounding and the straight-through residual - five passes over the activation forward and three
//! backward, each a fresh tensor and an autodiff node. On Flex [`ActivationOps`] makes it one pass
//! each way, with the same values bit for bit (one multiply, rounding half to even) and the same
//! gradient (zero where x < 0 or x > 1, including the clamp's pass-through of NaN).

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::Tensor;
use rayon::prelude::*;

use crate::lsq::round_ste;
use flex_kernels::autodiff::{AutodiffTensor, backward_with, tracked};
use flex_kernels::host::{f32_slice, flex_tensor, fused_available, round_half_even, zeros};

/// Elements per parallel task: large enough to amortize scheduling, small enough to balance.
const CHUNK: usize = 1 << 14;

/// The activation-code pass as a backend extension (Flex, and autodiff over it).
#[backend_extension(Flex, Autodiff)]
pub trait ActivationOps: Backend {
    /// round(clamp(x, 0, 1) * (2^act_bits - 1)).
    fn activation_codes(x: FloatTensor<Self>, act_bits: u32) -> FloatTensor<Self>;

    /// The gradient with respect to x: grad * (2^act_bits - 1) where 0 <= x <= 1, else 0.
    fn activation_codes_backward(grad: FloatTensor<Self>, x: FloatTensor<Self>, act_bits: u32) -> FloatTensor<Self>;
}

fn levels(act_bits: u32) -> f32 {
    ((1u64 << act_bits) - 1) as f32
}

impl ActivationOps for Flex {
    fn activation_codes(x: FlexTensor, act_bits: u32) -> FlexTensor {
        let shape = x.layout().shape().to_vec();
        let levels = levels(act_bits);
        let x = f32_slice(&x);
        let mut out = zeros(x.len());
        out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| {
            for (o, &x) in o.iter_mut().zip(x) {
                // f32::clamp keeps NaN, as the masked fills do
                *o = round_half_even(x.clamp(0.0, 1.0) * levels);
            }
        });
        flex_tensor(out, shape)
    }

    fn activation_codes_backward(grad: FlexTensor, x: FlexTensor, act_bits: u32) -> FlexTensor {
        let shape = x.layout().shape().to_vec();
        let levels = levels(act_bits);
        let (grad, x) = (f32_slice(&grad), f32_slice(&x));
        let mut out = zeros(x.len());
        out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).zip(grad.par_chunks(CHUNK)).for_each(|((o, x), g)| {
            for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
                // written out, not `contains`: a NaN input passes its gradient, as it always has
                #[allow(clippy::manual_range_contains)]
                let outside = x < 0.0 || x > 1.0;
                *o = if outside { 0.0 } else { g * levels };
            }
        });
        flex_tensor(out, shape)
    }
}

#[derive(Debug)]
struct ActivationCodesBackward;

impl<B: Backend + ActivationOps> Backward<B, 1> for ActivationCodesBackward {
    type State = ([NodeId; 1], u32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        backward_with::<B, _, 1, 1>(ops, grads, checkpointer, |grad, [x], act_bits| {
            [B::activation_codes_backward(grad, x, act_bits)]
        });
    }
}

impl<B: Backend + ActivationOps, C: CheckpointStrategy> ActivationOps for Autodiff<B, C> {
    fn activation_codes(x: AutodiffTensor<B, C>, act_bits: u32) -> AutodiffTensor<B, C> {
        tracked::<B, C, _, _, 1>(ActivationCodesBackward, [x], act_bits, |[x]| B::activation_codes(x, act_bits))
    }

    fn activation_codes_backward(
        grad: AutodiffTensor<B, C>,
        x: AutodiffTensor<B, C>,
        act_bits: u32,
    ) -> AutodiffTensor<B, C> {
        // Second-order gradients are not needed: the result is a constant.
        AutodiffTensor::<B, C>::new(B::activation_codes_backward(grad.into_primitive(), x.into_primitive(), act_bits))
    }
}

/// A-bit activation codes entering the arrays: round(clamp(x, 0, 1) * (2^A - 1)), with the
/// gradient passed straight through inside [0, 1]. One pass each way on Flex,
/// [`activation_codes_reference`] elsewhere.
pub fn activation_codes<const D: usize>(x: Tensor<D>, act_bits: u32) -> Tensor<D> {
    if !fused_available(&x.device()) {
        return activation_codes_reference(x, act_bits);
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as ActivationOps>::activation_codes(x.into_dispatch(), act_bits))
}

/// The same from generic tensor ops (any backend; the oracle of the fused pass).
pub fn activation_codes_reference<const D: usize>(x: Tensor<D>, act_bits: u32) -> Tensor<D> {
    round_ste(x.clamp(0.0, 1.0).mul_scalar(levels(act_bits)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn fused_codes_and_gradient_equal_the_generic_ops() {
        let device = Device::flex().autodiff();
        for (bits, seed) in [(1, 0), (2, 1), (4, 2), (8, 3)] {
            let mut values =
                crate::test_tensor([3, 5, 7, 9], -0.5..1.5, seed, &device).into_data().try_to_vec::<f32>().unwrap();
            // the edges of the clamp and exact ties of the rounding
            values[..6].copy_from_slice(&[0.0, 1.0, -0.0, 0.5 / levels(bits), 1.5 / levels(bits), f32::NAN]);
            let x = Tensor::<4>::from_data(TensorData::new(values, [3, 5, 7, 9]), &device);
            let r = crate::test_tensor([3, 5, 7, 9], -1.0..1.0, seed + 10, &device);
            let mut results = Vec::new();
            for fused in [true, false] {
                let xx = x.clone().detach().require_grad();
                let f = if fused { activation_codes::<4> } else { activation_codes_reference::<4> };
                let y = f(xx.clone(), bits);
                let grads = y.clone().mul(r.clone()).sum().backward();
                let bits_of = |t: Tensor<4>| {
                    t.into_data().try_to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                };
                results.push((bits_of(y), bits_of(xx.grad(&grads).unwrap())));
            }
            assert_eq!(results[0].0, results[1].0, "A = {bits}: codes");
            assert_eq!(results[0].1, results[1].1, "A = {bits}: gradient");
        }
    }

    #[test]
    fn activation_codes_clamp_round_and_pass_gradient_inside() {
        let d = Device::flex().autodiff();
        let x = Tensor::<1>::from_data(TensorData::from([-0.2f32, 0.1, 0.5, 1.0, 1.3]), &d).require_grad();
        let a = activation_codes(x.clone(), 2); // levels 3
        assert_eq!(a.clone().into_data().try_to_vec::<f32>().unwrap(), vec![0.0, 0.0, 2.0, 3.0, 3.0]); // 1.5 rounds to 2
        let grads = a.sum().backward();
        assert_eq!(x.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap(), vec![0.0, 3.0, 3.0, 3.0, 0.0]);
    }
}
