//! ADC quantization, dequantization and accumulation of a layer's partial sums
//! (docs/SPEC.md section 1, "ADC (partial-sum) quantization" and "Dequantization and accumulation").
//!
//! The partial sums arrive channel-major, as one tensor `p` [K, B, H, W] whose K = G *
//! polarities * S * C_out channels are ordered (row tile, polarity, slice, column), column
//! fastest (the layout [`crate::psums`] produces). Every channel k has
//! its ADC window (step `step[k]`, offset `offset[k]`), code range [`low[k]`, `high[k]`] and
//! dequantization coefficient `coef[k]` = sign * 2^(b_c*(S-1-s)) * s_w[g, c] / (2^A - 1), so that
//!
//! `y[b, c] = sum over k with k mod C_out = c of coef[k] * p_q[k, b]`, with
//! `p_q = offset[k] + step[k] * clamp(round((p[k, b] - offset[k]) / step[k]), low[k], high[k])`.
//!
//! The partial-sum tensor is G*S (x2) times larger than the layer output, so a chain of generic
//! tensor ops over it dominates the layer's cost. On the Flex backend this module runs the whole
//! chain as one pass forward and one pass backward ([`AdcOps`]); elsewhere it falls back to
//! [`adc_accumulate_reference`], which is also the oracle the fused pass is tested against.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, ExtensionType, backend_extension};
use burn::tensor::Tensor;

use crate::lsq::round_ste;
use flex_kernels::host::fused_available;

mod autodiff;
mod flex;

pub(crate) use flex::{AdcImageBackward, CHANNEL_SUMS, PsumValues};

/// The fused ADC pass as a backend extension (Flex, and autodiff over it).
#[backend_extension(Flex, Autodiff)]
pub trait AdcOps: Backend {
    /// Forward: quantize every partial sum with its channel's ADC, dequantize and accumulate
    /// into `out_channels` outputs.
    fn adc_accumulate(
        psums: FloatTensor<Self>,
        #[extension_type] adc: AdcChannelTensors<Self>,
        out_channels: usize,
    ) -> FloatTensor<Self>;

    /// Backward: gradients with respect to the partial sums (straight through inside the ADC
    /// range), the steps (LSQ's: code - (p - z)/step inside, the clamped code outside; before
    /// LSQ's gradient scale), the offsets (0 inside, 1 outside: LSQ+) and the coefficients.
    #[allow(clippy::type_complexity)]
    fn adc_accumulate_backward(
        grad: FloatTensor<Self>,
        psums: FloatTensor<Self>,
        #[extension_type] adc: AdcChannelTensors<Self>,
        out_channels: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The per-channel constants of the ADC pass ([`AdcChannels`]) as a backend's primitives, each
/// [K]: what the extension traits take.
#[derive(ExtensionType, Debug, Clone)]
pub struct AdcChannelTensors<B: Backend> {
    /// s_p of every channel's ADC.
    pub step: FloatTensor<B>,
    /// z of every channel's ADC.
    pub offset: FloatTensor<B>,
    /// The dequantization coefficient.
    pub coef: FloatTensor<B>,
    /// Pn.
    pub low: FloatTensor<B>,
    /// Pp.
    pub high: FloatTensor<B>,
}

impl<B: Backend> AdcChannelTensors<B> {
    /// The five tensors in a fixed order (step, offset, coef, low, high).
    pub fn into_array(self) -> [FloatTensor<B>; 5] {
        [self.step, self.offset, self.coef, self.low, self.high]
    }

    /// The tensors back from [`Self::into_array`]'s order.
    pub fn from_array([step, offset, coef, low, high]: [FloatTensor<B>; 5]) -> Self {
        Self { step, offset, coef, low, high }
    }
}

/// The per-channel constants of the ADC pass, each [K] (see the module docs).
#[derive(Debug, Clone)]
pub struct AdcChannels {
    /// s_p of every channel's ADC (with LSQ's gradient scale).
    pub step: Tensor<1>,
    /// z of every channel's ADC.
    pub offset: Tensor<1>,
    /// sign * 2^(b_c*(S-1-s)) * s_w / (2^A - 1).
    pub coef: Tensor<1>,
    /// Pn.
    pub low: Tensor<1>,
    /// Pp.
    pub high: Tensor<1>,
}

impl AdcChannels {
    /// The tensors as the extension traits take them.
    pub(crate) fn into_dispatch(self) -> AdcChannelTensors<burn::backend::Dispatch> {
        AdcChannelTensors::from_array(
            [self.step, self.offset, self.coef, self.low, self.high].map(Tensor::into_dispatch),
        )
    }
}

/// ADC quantization, dequantization and accumulation (see the module docs): the fused pass
/// where the backend has one, [`adc_accumulate_reference`] elsewhere.
pub fn adc_accumulate(psums: Tensor<4>, ch: AdcChannels, out_channels: usize) -> Tensor<4> {
    if !fused_available(&psums.device()) {
        return adc_accumulate_reference(psums, ch, out_channels);
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as AdcOps>::adc_accumulate(
        psums.into_dispatch(),
        ch.into_dispatch(),
        out_channels,
    ))
}

/// The same computation as a chain of generic tensor ops (any backend, autodiff for free).
pub fn adc_accumulate_reference(psums: Tensor<4>, ch: AdcChannels, out_channels: usize) -> Tensor<4> {
    let AdcChannels { step, offset, coef, low, high } = ch;
    let k = psums.dims()[0];
    let per_channel = |t: Tensor<1>| t.reshape([k, 1, 1, 1]);
    let (step, offset) = (per_channel(step), per_channel(offset));
    let ratio = psums.sub(offset.clone()).div(step.clone());
    // clamp against per-channel bounds, keeping LSQ's inclusive "inside" for the gradient
    let (low, high) = (per_channel(low), per_channel(high));
    let below = ratio.clone().lower(low.clone()).float();
    let above = ratio.clone().greater(high.clone()).float();
    let inside = below.clone().add(above.clone()).neg().add_scalar(1.0);
    let clamped = ratio.mul(inside).add(below.mul(low)).add(above.mul(high));
    accumulate_reference(round_ste(clamped).mul(step).add(offset), coef, out_channels)
}

/// Dequantization and accumulation of quantized partial sums `p_q` [K, B, H, W] (the ADC
/// already applied): `y[b, c] = sum over k with k mod C_out = c of coef[k] * p_q[k, b]`, as
/// generic tensor ops. The path of a plug-in ADC ([`crate::own`]) and the tail of
/// [`adc_accumulate_reference`].
pub fn accumulate_reference(quantized: Tensor<4>, coef: Tensor<1>, out_channels: usize) -> Tensor<4> {
    let [k, batch, h, w] = quantized.dims();
    quantized
        .mul(coef.reshape([k, 1, 1, 1]))
        .reshape([k / out_channels, out_channels, batch, h, w])
        .sum_dim(0)
        .reshape([out_channels, batch, h, w])
        .swap_dims(0, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{assert_close, test_flat};
    use burn::tensor::Device;

    fn setup(device: &Device, seed: u64) -> (Tensor<4>, AdcChannels) {
        let (k, c) = (12, 3);
        let psums = crate::test_tensor([k, 2, 3, 4], -30.0..60.0, seed, device).round();
        let step = crate::test_tensor([k], 0.8..6.0, seed + 1, device);
        // windows shifted both ways, so that some values clip low and some high
        let offset = crate::test_tensor([k], -20.0..30.0, seed + 3, device);
        let coef = crate::test_tensor([k], -2.0..2.0, seed + 2, device);
        // slice 0 signed 3-bit, others unsigned 3-bit (like twos, S = 2 ... repeated)
        let low: Vec<f32> = (0..k).map(|i| if (i / c) % 2 == 0 { -4.0 } else { 0.0 }).collect();
        let high: Vec<f32> = (0..k).map(|i| if (i / c) % 2 == 0 { 3.0 } else { 7.0 }).collect();
        let (low, high) = (Tensor::from_floats(low.as_slice(), device), Tensor::from_floats(high.as_slice(), device));
        (psums, AdcChannels { step, offset, coef, low, high })
    }

    #[test]
    fn fused_forward_and_backward_match_the_reference() {
        let device = Device::flex().autodiff();
        for seed in 0..4 {
            let (psums, case) = setup(&device, seed);
            let mut grads_all = Vec::new();
            let mut outs = Vec::new();
            for fused in [true, false] {
                let track = |t: &Tensor<1>| t.clone().detach().require_grad();
                let p = psums.clone().detach().require_grad();
                let (s, z, c) = (track(&case.step), track(&case.offset), track(&case.coef));
                let f = if fused { adc_accumulate } else { adc_accumulate_reference };
                let ch = AdcChannels { step: s.clone(), offset: z.clone(), coef: c.clone(), ..case.clone() };
                let y = f(p.clone(), ch, 3);
                let weight = crate::test_tensor(y.dims(), 0.0..1.0, seed + 100, &device);
                let grads = y.clone().mul(weight).sum().backward();
                outs.push(y.flatten::<1>(0, 3));
                grads_all.push([
                    p.grad(&grads).unwrap().flatten::<1>(0, 3),
                    s.grad(&grads).unwrap(),
                    z.grad(&grads).unwrap(),
                    c.grad(&grads).unwrap(),
                ]);
            }
            let close =
                |a: Tensor<1>, b: Tensor<1>, tol, what| assert_close(what, &test_flat(a), &test_flat(b), tol, 1e-3);
            close(outs[0].clone(), outs[1].clone(), 1e-6, "output");
            let [gp, gs, gz, gc] = grads_all.remove(0);
            let [rp, rs, rz, rc] = grads_all.remove(0);
            close(gp, rp, 1e-6, "d/dpsums");
            close(gs, rs, 1e-5, "d/dstep");
            close(gz.clone(), rz, 1e-5, "d/doffset");
            close(gc, rc, 1e-5, "d/dcoef");
            // the offsets were drawn so that some values clip: their gradient is not all zero
            assert!(gz.abs().sum().into_scalar::<f32>() > 0.0);
        }
    }
}
