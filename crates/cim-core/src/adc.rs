//! ADC quantization, dequantization and accumulation of a layer's partial sums
//! (DESIGN.md section 3, "ADC (partial-sum) quantization" and "Dequantization and accumulation").
//!
//! The partial sums arrive as one tensor `p` [B, K, H, W] whose K = G * polarities * S * C_out
//! channels are ordered (row tile, polarity, slice, column), column fastest. Every channel k has
//! its ADC step `step[k]`, code range [`low[k]`, `high[k]`] and dequantization coefficient
//! `coef[k]` = sign * 2^(b_c*(S-1-s)) * s_w[g, c] / (2^A - 1), so that
//!
//! `y[b, c] = sum over k with k mod C_out = c of coef[k] * step[k] * clamp(round(p[b, k] / step[k]), low[k], high[k])`.
//!
//! The partial-sum tensor is G*S (x2) times larger than the layer output, so a chain of generic
//! tensor ops over it dominates the layer's cost. On the Flex backend this module runs the whole
//! chain as one pass forward and one pass backward ([`AdcOps`]); elsewhere it falls back to
//! [`adc_accumulate_reference`], which is also the oracle the fused pass is tested against.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Backend, DispatchDevice, Flex, backend_extension};
use burn::backend::tensor::FloatTensor;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::lsq::round_ste;

/// The fused ADC pass as a backend extension (Flex, and autodiff over it).
#[backend_extension(Flex, Autodiff)]
pub trait AdcOps: Backend {
    /// Forward: quantize every partial sum with its channel's ADC, dequantize and accumulate
    /// into `out_channels` outputs.
    fn adc_accumulate(
        psums: FloatTensor<Self>,
        step: FloatTensor<Self>,
        coef: FloatTensor<Self>,
        low: FloatTensor<Self>,
        high: FloatTensor<Self>,
        out_channels: usize,
    ) -> FloatTensor<Self>;

    /// Backward: gradients with respect to the partial sums (straight through inside the ADC
    /// range), the steps (LSQ's: code - p/step inside, the clamped code outside; before LSQ's
    /// gradient scale) and the coefficients.
    #[allow(clippy::type_complexity)]
    fn adc_accumulate_backward(
        grad: FloatTensor<Self>,
        psums: FloatTensor<Self>,
        step: FloatTensor<Self>,
        coef: FloatTensor<Self>,
        low: FloatTensor<Self>,
        high: FloatTensor<Self>,
        out_channels: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// Rounds half to even with the 1.5 * 2^23 trick, which vectorizes on baseline x86-64 (no
/// SSE4.1 `roundps`). Exact for |x| < 2^22; callers clamp to ADC ranges of at most 2^16.
#[inline(always)]
fn round_half_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    (x + MAGIC) - MAGIC
}

fn f32_slice(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) if t.is_contiguous() => std::borrow::Cow::Borrowed(s),
        _ => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().expect("f32 tensor").to_vec()),
    }
}

fn flex_tensor(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

struct Channels<'a> {
    step: &'a [f32],
    coef: &'a [f32],
    low: &'a [f32],
    high: &'a [f32],
}

impl AdcOps for Flex {
    fn adc_accumulate(
        psums: FlexTensor,
        step: FlexTensor,
        coef: FlexTensor,
        low: FlexTensor,
        high: FlexTensor,
        out_channels: usize,
    ) -> FlexTensor {
        let dims = psums.layout().shape().to_vec();
        let [batch, k, h, w] = [dims[0], dims[1], dims[2], dims[3]];
        let hw = h * w;
        let (p, step, coef, low, high) =
            (f32_slice(&psums), f32_slice(&step), f32_slice(&coef), f32_slice(&low), f32_slice(&high));
        let ch = Channels { step: &step, coef: &coef, low: &low, high: &high };
        let mut out = vec![0f32; batch * out_channels * hw];
        out.par_chunks_mut(out_channels * hw).enumerate().for_each(|(b, out_b)| {
            for kk in 0..k {
                let s = ch.step[kk];
                let (lo, hi) = (ch.low[kk], ch.high[kk]);
                let scale = ch.coef[kk] * s;
                let row = &p[(b * k + kk) * hw..][..hw];
                let o = &mut out_b[(kk % out_channels) * hw..][..hw];
                for (o, &v) in o.iter_mut().zip(row) {
                    *o += scale * round_half_even((v / s).clamp(lo, hi));
                }
            }
        });
        flex_tensor(out, vec![batch, out_channels, h, w])
    }

    fn adc_accumulate_backward(
        grad: FlexTensor,
        psums: FlexTensor,
        step: FlexTensor,
        coef: FlexTensor,
        low: FlexTensor,
        high: FlexTensor,
        out_channels: usize,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let dims = psums.layout().shape().to_vec();
        let [batch, k, h, w] = [dims[0], dims[1], dims[2], dims[3]];
        let hw = h * w;
        let (gy, p) = (f32_slice(&grad), f32_slice(&psums));
        let (step, coef, low, high) = (f32_slice(&step), f32_slice(&coef), f32_slice(&low), f32_slice(&high));
        let ch = Channels { step: &step, coef: &coef, low: &low, high: &high };
        let mut grad_p = vec![0f32; batch * k * hw];
        // Per-image partial sums of the step and coefficient gradients, reduced below in image
        // order so that the result does not depend on thread scheduling.
        let mut partial = vec![0f32; batch * 2 * k];
        grad_p
            .par_chunks_mut(k * hw)
            .zip(partial.par_chunks_mut(2 * k))
            .enumerate()
            .for_each(|(b, (gp_b, part))| {
                let (part_step, part_coef) = part.split_at_mut(k);
                for kk in 0..k {
                    let s = ch.step[kk];
                    let (lo, hi, cf) = (ch.low[kk], ch.high[kk], ch.coef[kk]);
                    let row = &p[(b * k + kk) * hw..][..hw];
                    let g_row = &gy[(b * out_channels + kk % out_channels) * hw..][..hw];
                    let gp = &mut gp_b[kk * hw..][..hw];
                    let (mut acc_step, mut acc_code) = (0f32, 0f32);
                    for ((gp, &v), &g) in gp.iter_mut().zip(row).zip(g_row) {
                        let ratio = v / s;
                        let inside = ratio >= lo && ratio <= hi;
                        let code = round_half_even(ratio.clamp(lo, hi));
                        *gp = if inside { g * cf } else { 0.0 };
                        acc_step += g * (code - if inside { ratio } else { 0.0 });
                        acc_code += g * code;
                    }
                    part_step[kk] = acc_step * cf;
                    part_coef[kk] = acc_code * s;
                }
            });
        let mut grad_step = vec![0f32; k];
        let mut grad_coef = vec![0f32; k];
        for part in partial.chunks(2 * k) {
            for kk in 0..k {
                grad_step[kk] += part[kk];
                grad_coef[kk] += part[k + kk];
            }
        }
        (
            flex_tensor(grad_p, vec![batch, k, h, w]),
            flex_tensor(grad_step, vec![k]),
            flex_tensor(grad_coef, vec![k]),
        )
    }
}

#[derive(Debug)]
struct AdcAccumulateBackward;

type AdcState = (NodeId, NodeId, NodeId, NodeId, NodeId, usize);

impl<B: Backend + AdcOps> Backward<B, 3> for AdcAccumulateBackward {
    type State = AdcState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_p, node_step, node_coef] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (p, step, coef, low, high, out_channels) = ops.state;
        let mut get = |id| checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(id);
        let (p, step, coef, low, high) = (get(p), get(step), get(coef), get(low), get(high));
        let (gp, gs, gc) = B::adc_accumulate_backward(grad, p, step, coef, low, high, out_channels);
        for (node, g) in [(node_p, gp), (node_step, gs), (node_coef, gc)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// The autodiff backend's float tensor over `B`.
type AutodiffTensor<B, C> = FloatTensor<Autodiff<B, C>>;

impl<B: Backend + AdcOps, C: CheckpointStrategy> AdcOps for Autodiff<B, C> {
    fn adc_accumulate(
        psums: AutodiffTensor<B, C>,
        step: AutodiffTensor<B, C>,
        coef: AutodiffTensor<B, C>,
        low: AutodiffTensor<B, C>,
        high: AutodiffTensor<B, C>,
        out_channels: usize,
    ) -> AutodiffTensor<B, C> {
        let prep = AdcAccumulateBackward
            .prepare::<C>([psums.node(), step.node(), coef.node()])
            .compute_bound()
            .stateful();
        let run = |p: &AutodiffTensor<B, C>, s: &AutodiffTensor<B, C>, c: &AutodiffTensor<B, C>, l: &AutodiffTensor<B, C>, h: &AutodiffTensor<B, C>| {
            B::adc_accumulate(
                p.primitive().clone(),
                s.primitive().clone(),
                c.primitive().clone(),
                l.primitive().clone(),
                h.primitive().clone(),
                out_channels,
            )
        };
        match prep {
            OpsKind::Tracked(mut prep) => {
                let state = (
                    prep.checkpoint(&psums),
                    prep.checkpoint(&step),
                    prep.checkpoint(&coef),
                    prep.checkpoint(&low),
                    prep.checkpoint(&high),
                    out_channels,
                );
                let out = run(&psums, &step, &coef, &low, &high);
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(run(&psums, &step, &coef, &low, &high)),
        }
    }

    fn adc_accumulate_backward(
        grad: AutodiffTensor<B, C>,
        psums: AutodiffTensor<B, C>,
        step: AutodiffTensor<B, C>,
        coef: AutodiffTensor<B, C>,
        low: AutodiffTensor<B, C>,
        high: AutodiffTensor<B, C>,
        out_channels: usize,
    ) -> (AutodiffTensor<B, C>, AutodiffTensor<B, C>, AutodiffTensor<B, C>) {
        // Second-order gradients through the ADC are not needed: the result is a constant.
        let (gp, gs, gc) = B::adc_accumulate_backward(
            grad.into_primitive(),
            psums.into_primitive(),
            step.into_primitive(),
            coef.into_primitive(),
            low.into_primitive(),
            high.into_primitive(),
            out_channels,
        );
        (AutodiffTensor::<B, C>::new(gp), AutodiffTensor::<B, C>::new(gs), AutodiffTensor::<B, C>::new(gc))
    }
}

/// Whether the fused pass can run on this device (Flex, with or without autodiff).
fn fused_available(t: &Tensor<4>) -> bool {
    matches!(t.device().inner().as_dispatch(), DispatchDevice::Flex(_))
}

/// ADC quantization, dequantization and accumulation (see the module docs): the fused pass
/// where the backend has one, [`adc_accumulate_reference`] elsewhere.
pub fn adc_accumulate(
    psums: Tensor<4>,
    step: Tensor<1>,
    coef: Tensor<1>,
    low: Tensor<1>,
    high: Tensor<1>,
    out_channels: usize,
) -> Tensor<4> {
    if !fused_available(&psums) {
        return adc_accumulate_reference(psums, step, coef, low, high, out_channels);
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as AdcOps>::adc_accumulate(
        psums.into_dispatch(),
        step.into_dispatch(),
        coef.into_dispatch(),
        low.into_dispatch(),
        high.into_dispatch(),
        out_channels,
    ))
}

/// The same computation as a chain of generic tensor ops (any backend, autodiff for free).
pub fn adc_accumulate_reference(
    psums: Tensor<4>,
    step: Tensor<1>,
    coef: Tensor<1>,
    low: Tensor<1>,
    high: Tensor<1>,
    out_channels: usize,
) -> Tensor<4> {
    let [batch, k, h, w] = psums.dims();
    let per_channel = |t: Tensor<1>| t.reshape([1, k, 1, 1]);
    let step = per_channel(step);
    let ratio = psums.div(step.clone());
    // clamp against per-channel bounds, keeping LSQ's inclusive "inside" for the gradient
    let (low, high) = (per_channel(low), per_channel(high));
    let below = ratio.clone().lower(low.clone()).float();
    let above = ratio.clone().greater(high.clone()).float();
    let inside = below.clone().add(above.clone()).neg().add_scalar(1.0);
    let clamped = ratio.mul(inside).add(below.mul(low)).add(above.mul(high));
    let dequantized = round_ste(clamped).mul(step).mul(per_channel(coef));
    dequantized
        .reshape([batch, k / out_channels, out_channels, h, w])
        .sum_dim(1)
        .reshape([batch, out_channels, h, w])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn setup(device: &Device, seed: u64) -> (Tensor<4>, Tensor<1>, Tensor<1>, Tensor<1>, Tensor<1>) {
        device.seed(seed);
        let (k, c) = (12, 3);
        let psums = Tensor::<4>::random([2, k, 3, 4], Distribution::Uniform(-30.0, 60.0), device)
            .round();
        let step = Tensor::<1>::random([k], Distribution::Uniform(0.8, 6.0), device);
        let coef = Tensor::<1>::random([k], Distribution::Uniform(-2.0, 2.0), device);
        // slice 0 signed 3-bit, others unsigned 3-bit (like twos, S = 2 ... repeated)
        let low: Vec<f32> = (0..k).map(|i| if (i / c) % 2 == 0 { -4.0 } else { 0.0 }).collect();
        let high: Vec<f32> = (0..k).map(|i| if (i / c) % 2 == 0 { 3.0 } else { 7.0 }).collect();
        (
            psums,
            step,
            coef,
            Tensor::from_floats(low.as_slice(), device),
            Tensor::from_floats(high.as_slice(), device),
        )
    }

    fn assert_close(a: Tensor<1>, b: Tensor<1>, tol: f32, what: &str) {
        let a = a.into_data().try_to_vec::<f32>().unwrap();
        let b = b.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= tol * scale, "{what}[{i}]: fused {x} vs reference {y}");
        }
    }

    #[test]
    fn fused_forward_and_backward_match_the_reference() {
        let device = Device::flex().autodiff();
        for seed in 0..4 {
            let (p, s, c, lo, hi) = setup(&device, seed);
            let mut grads_all = Vec::new();
            let mut outs = Vec::new();
            for fused in [true, false] {
                let p = p.clone().detach().require_grad();
                let s = s.clone().detach().require_grad();
                let c = c.clone().detach().require_grad();
                let f = if fused { adc_accumulate } else { adc_accumulate_reference };
                let y = f(p.clone(), s.clone(), c.clone(), lo.clone(), hi.clone(), 3);
                device.seed(seed + 100); // the same loss weights for both passes
                let weight = Tensor::<4>::random(y.dims(), Distribution::Default, &device);
                let grads = y.clone().mul(weight).sum().backward();
                outs.push(y.flatten::<1>(0, 3));
                grads_all.push([
                    p.grad(&grads).unwrap().flatten::<1>(0, 3),
                    s.grad(&grads).unwrap(),
                    c.grad(&grads).unwrap(),
                ]);
            }
            assert_close(outs[0].clone(), outs[1].clone(), 1e-6, "output");
            let [gp, gs, gc] = grads_all.remove(0);
            let [rp, rs, rc] = grads_all.remove(0);
            assert_close(gp, rp, 1e-6, "d/dpsums");
            assert_close(gs, rs, 1e-5, "d/dstep");
            assert_close(gc, rc, 1e-5, "d/dcoef");
        }
    }

    #[test]
    fn magic_rounding_is_half_to_even() {
        for x in [-4.5f32, -3.5, -2.5, -0.5, 0.5, 1.5, 2.5, 7.49, 65535.5, -32768.5] {
            assert_eq!(round_half_even(x), x.round_ties_even(), "{x}");
        }
    }
}
