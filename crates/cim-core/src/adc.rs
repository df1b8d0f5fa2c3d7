//! ADC quantization, dequantization and accumulation of a layer's partial sums
//! (DESIGN.md section 3, "ADC (partial-sum) quantization" and "Dequantization and accumulation").
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

use std::mem::MaybeUninit;

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

use crate::kernels::{
    AutodiffTensor, backward_with, f32_slice, flex_tensor, fused_available, prefetch, round_half_even, tracked,
    with_best_simd, written_by, zeros,
};
use crate::lsq::round_ste;

/// The fused ADC pass as a backend extension (Flex, and autodiff over it).
#[backend_extension(Flex, Autodiff)]
pub trait AdcOps: Backend {
    /// Forward: quantize every partial sum with its channel's ADC, dequantize and accumulate
    /// into `out_channels` outputs.
    fn adc_accumulate(
        psums: FloatTensor<Self>,
        step: FloatTensor<Self>,
        offset: FloatTensor<Self>,
        coef: FloatTensor<Self>,
        low: FloatTensor<Self>,
        high: FloatTensor<Self>,
        out_channels: usize,
    ) -> FloatTensor<Self>;

    /// Backward: gradients with respect to the partial sums (straight through inside the ADC
    /// range), the steps (LSQ's: code - (p - z)/step inside, the clamped code outside; before
    /// LSQ's gradient scale), the offsets (0 inside, 1 outside: LSQ+) and the coefficients.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn adc_accumulate_backward(
        grad: FloatTensor<Self>,
        psums: FloatTensor<Self>,
        step: FloatTensor<Self>,
        offset: FloatTensor<Self>,
        coef: FloatTensor<Self>,
        low: FloatTensor<Self>,
        high: FloatTensor<Self>,
        out_channels: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

struct Channels<'a> {
    step: &'a [f32],
    offset: &'a [f32],
    coef: &'a [f32],
    low: &'a [f32],
    high: &'a [f32],
}

/// Lanes of the explicit accumulators: sums are split over a fixed number of lanes (not over
/// whatever the vector width happens to be) so that they vectorize and stay bit-identical on
/// every CPU.
const LANES: usize = 8;

/// How many rows ahead the passes that walk one image's rows of the partial sums ask for them.
const PREFETCH_ROWS: usize = 2;

/// One image of the forward pass: `out_b` [C_out, HW] += the dequantized ADC codes of image `b`
/// of every channel of `p` [K, B, HW].
#[inline(always)]
fn forward_image(out_b: &mut [f32], p: &[f32], b: usize, batch: usize, ch: &Channels, out_channels: usize, hw: usize) {
    let k = ch.step.len();
    for kk in 0..k {
        // an image's rows lie B*HW apart: too far for the hardware prefetcher
        if kk + PREFETCH_ROWS < k {
            prefetch(&p[((kk + PREFETCH_ROWS) * batch + b) * hw..][..hw]);
        }
        let row = &p[(kk * batch + b) * hw..][..hw];
        let (s, z) = (ch.step[kk], ch.offset[kk]);
        let (lo, hi) = (ch.low[kk], ch.high[kk]);
        let (scale, shift) = (ch.coef[kk] * s, ch.coef[kk] * z);
        let o = &mut out_b[(kk % out_channels) * hw..][..hw];
        for (o, &v) in o.iter_mut().zip(row) {
            *o += scale * round_half_even(((v - z) / s).clamp(lo, hi)) + shift;
        }
    }
}

/// Values of a channel's running backward sums: (step, code, clipped, grad), LANES each.
pub(crate) const CHANNEL_SUMS: usize = 4 * LANES;

/// One row (one image) of channel `kk` of the backward pass: writes d/dp of every value of `row`
/// (f32, or the exact i16 partial sums of [`crate::psums::psums_through_adc`]) into `gp` and adds
/// the row's terms to the channel's running `sums` [CHANNEL_SUMS].
#[inline(always)]
fn backward_row<T: Copy>(
    gp: &mut [MaybeUninit<f32>],
    row: &[T],
    g_row: &[f32],
    kk: usize,
    ch: &Channels,
    sums: &mut [f32],
) where
    f32: From<T>,
{
    let (s, z) = (ch.step[kk], ch.offset[kk]);
    let (lo, hi, cf) = (ch.low[kk], ch.high[kk], ch.coef[kk]);
    let lanes = |i: usize| -> [f32; LANES] { sums[i * LANES..][..LANES].try_into().expect("LANES sums") };
    let (mut acc_step, mut acc_code, mut acc_clipped, mut acc_grad) = (lanes(0), lanes(1), lanes(2), lanes(3));
    let mut lane = |i: usize, gp: &mut MaybeUninit<f32>, v: T, g: f32| {
        let ratio = (f32::from(v) - z) / s;
        let inside = ratio >= lo && ratio <= hi;
        let code = round_half_even(ratio.clamp(lo, hi));
        gp.write(if inside { g * cf } else { 0.0 });
        acc_step[i] += g * (code - if inside { ratio } else { 0.0 });
        acc_code[i] += g * code;
        acc_clipped[i] += if inside { 0.0 } else { g };
        acc_grad[i] += g;
    };
    let mut gp_chunks = gp.chunks_exact_mut(LANES);
    let mut v_chunks = row.chunks_exact(LANES);
    let mut g_chunks = g_row.chunks_exact(LANES);
    for ((gp8, v8), g8) in (&mut gp_chunks).zip(&mut v_chunks).zip(&mut g_chunks) {
        for i in 0..LANES {
            lane(i, &mut gp8[i], v8[i], g8[i]);
        }
    }
    let rest = gp_chunks.into_remainder().iter_mut().zip(v_chunks.remainder()).zip(g_chunks.remainder());
    for (i, ((gp, &v), &g)) in rest.enumerate() {
        lane(i, gp, v, g);
    }
    for (i, acc) in [acc_step, acc_code, acc_clipped, acc_grad].into_iter().enumerate() {
        sums[i * LANES..][..LANES].copy_from_slice(&acc);
    }
}

/// (d/dstep, d/doffset, d/dcoef) of channel `kk` from its running backward sums.
fn channel_gradients(kk: usize, ch: &Channels, sums: &[f32]) -> (f32, f32, f32) {
    let sum = |i: usize| sums[i * LANES..][..LANES].iter().sum::<f32>();
    let (s, z, cf) = (ch.step[kk], ch.offset[kk], ch.coef[kk]);
    (sum(0) * cf, sum(2) * cf, sum(1) * s + sum(3) * z)
}

/// One channel `kk` of the backward pass over all images: writes d/dp into every entry of `gp_k`
/// [B, HW] and returns (d/dstep, d/doffset, d/dcoef) of the channel.
#[inline(always)]
fn backward_channel(
    gp_k: &mut [MaybeUninit<f32>],
    p_k: &[f32],
    gy: &[f32],
    kk: usize,
    ch: &Channels,
    out_channels: usize,
    hw: usize,
) -> (f32, f32, f32) {
    let mut sums = [0f32; CHANNEL_SUMS];
    for (b, (row, gp)) in p_k.chunks_exact(hw).zip(gp_k.chunks_exact_mut(hw)).enumerate() {
        let g_row = &gy[(b * out_channels + kk % out_channels) * hw..][..hw];
        backward_row(gp, row, g_row, kk, ch, &mut sums);
    }
    channel_gradients(kk, ch, &sums)
}

/// Partial sums [K, B, HW] as the backward reads them.
#[derive(Clone, Copy)]
pub(crate) enum PsumValues<'a> {
    F32(&'a [f32]),
    /// Exact integer sums, as [`crate::psums::psums_through_adc`] keeps them where they fit.
    I16(&'a [i16]),
}

/// The ADC pass's backward one image at a time, for a consumer of d/dpsums that works image by
/// image ([`crate::psums`]'s backward): the [K, B, HW] gradient never exists as a whole.
pub(crate) struct AdcImageBackward<'a> {
    /// dL/dy [B, C_out, HW].
    gy: &'a [f32],
    /// The partial sums [K, B, HW].
    p: PsumValues<'a>,
    ch: Channels<'a>,
    out_channels: usize,
    batch: usize,
    hw: usize,
}

impl<'a> AdcImageBackward<'a> {
    /// The backward of [`AdcOps::adc_accumulate`] over `psums` [K, B, HW] (channels as in the
    /// module docs), given dL/dy [B, C_out, HW].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        gy: &'a [f32],
        p: PsumValues<'a>,
        [step, offset, coef, low, high]: [&'a [f32]; 5],
        out_channels: usize,
        batch: usize,
        hw: usize,
    ) -> Self {
        Self { gy, p, ch: Channels { step, offset, coef, low, high }, out_channels, batch, hw }
    }

    /// Channels K.
    pub(crate) fn channels(&self) -> usize {
        self.ch.step.len()
    }

    /// d/dp of image `b` in channels `first..first + count` into `gp` [count, HW], their terms
    /// added to `sums` [K * CHANNEL_SUMS] (every channel's running sums).
    pub(crate) fn image_rows(&self, first: usize, count: usize, b: usize, gp: &mut [f32], sums: &mut [f32]) {
        let hw = self.hw;
        // SAFETY: MaybeUninit<f32> has f32's layout, and only initialised values are written.
        let gp = unsafe { &mut *(&mut gp[..count * hw] as *mut [f32] as *mut [MaybeUninit<f32>]) };
        let this = self;
        with_best_simd!((this: &AdcImageBackward, first: usize, b: usize, gp: &mut [MaybeUninit<f32>], sums: &mut [f32]) -> () {
            match this.p {
                PsumValues::F32(p) => this.rows_of(p, first, b, gp, sums),
                PsumValues::I16(p) => this.rows_of(p, first, b, gp, sums),
            }
        });
    }

    #[inline(always)]
    fn rows_of<T: Copy>(&self, p: &[T], first: usize, b: usize, gp: &mut [MaybeUninit<f32>], sums: &mut [f32])
    where
        f32: From<T>,
    {
        let (hw, batch) = (self.hw, self.batch);
        let count = gp.len() / hw;
        for (i, gp_row) in gp.chunks_exact_mut(hw).enumerate() {
            let kk = first + i;
            // the rows of one image lie B*HW apart: too far for the hardware prefetcher
            if i + PREFETCH_ROWS < count {
                prefetch(&p[((kk + PREFETCH_ROWS) * batch + b) * hw..][..hw]);
            }
            let row = &p[(kk * batch + b) * hw..][..hw];
            let g_row = &self.gy[(b * self.out_channels + kk % self.out_channels) * hw..][..hw];
            backward_row(gp_row, row, g_row, kk, &self.ch, &mut sums[kk * CHANNEL_SUMS..][..CHANNEL_SUMS]);
        }
    }

    /// (d/dstep, d/doffset, d/dcoef), each [K], from every channel's summed running sums.
    pub(crate) fn gradients(&self, sums: &[f32]) -> [Vec<f32>; 3] {
        let per_channel: Vec<_> =
            (0..self.channels()).map(|kk| channel_gradients(kk, &self.ch, &sums[kk * CHANNEL_SUMS..])).collect();
        [
            per_channel.iter().map(|g| g.0).collect(),
            per_channel.iter().map(|g| g.1).collect(),
            per_channel.iter().map(|g| g.2).collect(),
        ]
    }
}

#[allow(clippy::too_many_arguments)]
fn forward_image_dispatch(
    out_b: &mut [f32],
    p: &[f32],
    b: usize,
    batch: usize,
    ch: &Channels,
    out_channels: usize,
    hw: usize,
) {
    with_best_simd!((out_b: &mut [f32], p: &[f32], b: usize, batch: usize, ch: &Channels, out_channels: usize, hw: usize) -> () {
        forward_image(out_b, p, b, batch, ch, out_channels, hw)
    });
}

#[allow(clippy::too_many_arguments)]
fn backward_channel_dispatch(
    gp_k: &mut [MaybeUninit<f32>],
    p_k: &[f32],
    gy: &[f32],
    kk: usize,
    ch: &Channels,
    out_channels: usize,
    hw: usize,
) -> (f32, f32, f32) {
    with_best_simd!((gp_k: &mut [MaybeUninit<f32>], p_k: &[f32], gy: &[f32], kk: usize, ch: &Channels, out_channels: usize, hw: usize) -> (f32, f32, f32) {
        backward_channel(gp_k, p_k, gy, kk, ch, out_channels, hw)
    });
}

impl AdcOps for Flex {
    fn adc_accumulate(
        psums: FlexTensor,
        step: FlexTensor,
        offset: FlexTensor,
        coef: FlexTensor,
        low: FlexTensor,
        high: FlexTensor,
        out_channels: usize,
    ) -> FlexTensor {
        let dims = psums.layout().shape().to_vec();
        let [_, batch, h, w] = [dims[0], dims[1], dims[2], dims[3]];
        let hw = h * w;
        let p = f32_slice(&psums);
        let (step, offset, coef) = (f32_slice(&step), f32_slice(&offset), f32_slice(&coef));
        let (low, high) = (f32_slice(&low), f32_slice(&high));
        let ch = Channels { step: &step, offset: &offset, coef: &coef, low: &low, high: &high };
        let mut out = zeros(batch * out_channels * hw);
        out.par_chunks_mut(out_channels * hw)
            .enumerate()
            .for_each(|(b, out_b)| forward_image_dispatch(out_b, &p, b, batch, &ch, out_channels, hw));
        flex_tensor(out, vec![batch, out_channels, h, w])
    }

    fn adc_accumulate_backward(
        grad: FlexTensor,
        psums: FlexTensor,
        step: FlexTensor,
        offset: FlexTensor,
        coef: FlexTensor,
        low: FlexTensor,
        high: FlexTensor,
        out_channels: usize,
    ) -> (FlexTensor, FlexTensor, FlexTensor, FlexTensor) {
        let dims = psums.layout().shape().to_vec();
        let [k, batch, h, w] = [dims[0], dims[1], dims[2], dims[3]];
        let hw = h * w;
        let (gy, p) = (f32_slice(&grad), f32_slice(&psums));
        let (step, offset, coef) = (f32_slice(&step), f32_slice(&offset), f32_slice(&coef));
        let (low, high) = (f32_slice(&low), f32_slice(&high));
        let ch = Channels { step: &step, offset: &offset, coef: &coef, low: &low, high: &high };
        let mut per_channel: Vec<(f32, f32, f32)> = Vec::new();
        // SAFETY: backward_channel writes every entry of its channel's rows, and the channels
        // cover all k * batch * hw values.
        let grad_p = unsafe {
            written_by(k * batch * hw, |grad_p| {
                // one channel per task, images summed in order within it: no dependence on
                // scheduling
                per_channel = grad_p
                    .par_chunks_mut(batch * hw)
                    .zip(p.par_chunks(batch * hw))
                    .enumerate()
                    .map(|(kk, (gp_k, p_k))| backward_channel_dispatch(gp_k, p_k, &gy, kk, &ch, out_channels, hw))
                    .collect();
            })
        };
        let column = |f: fn(&(f32, f32, f32)) -> f32| flex_tensor(per_channel.iter().map(f).collect(), vec![k]);
        (flex_tensor(grad_p, vec![k, batch, h, w]), column(|g| g.0), column(|g| g.1), column(|g| g.2))
    }
}

#[derive(Debug)]
struct AdcAccumulateBackward;

impl<B: Backend + AdcOps> Backward<B, 6> for AdcAccumulateBackward {
    /// (psums, step, offset, coef, low, high), and C_out; low and high are constants.
    type State = ([NodeId; 6], usize);

    fn backward(self, ops: Ops<Self::State, 6>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        backward_with::<B, _, 6, 4>(
            ops,
            grads,
            checkpointer,
            |grad, [p, step, offset, coef, low, high], out_channels| {
                let (gp, gs, gz, gc) = B::adc_accumulate_backward(grad, p, step, offset, coef, low, high, out_channels);
                [gp, gs, gz, gc]
            },
        );
    }
}

impl<B: Backend + AdcOps, C: CheckpointStrategy> AdcOps for Autodiff<B, C> {
    fn adc_accumulate(
        psums: AutodiffTensor<B, C>,
        step: AutodiffTensor<B, C>,
        offset: AutodiffTensor<B, C>,
        coef: AutodiffTensor<B, C>,
        low: AutodiffTensor<B, C>,
        high: AutodiffTensor<B, C>,
        out_channels: usize,
    ) -> AutodiffTensor<B, C> {
        let inputs = [psums, step, offset, coef, low, high];
        tracked::<B, C, _, _, 6>(AdcAccumulateBackward, inputs, out_channels, |[p, s, z, c, l, h]| {
            B::adc_accumulate(p, s, z, c, l, h, out_channels)
        })
    }

    fn adc_accumulate_backward(
        grad: AutodiffTensor<B, C>,
        psums: AutodiffTensor<B, C>,
        step: AutodiffTensor<B, C>,
        offset: AutodiffTensor<B, C>,
        coef: AutodiffTensor<B, C>,
        low: AutodiffTensor<B, C>,
        high: AutodiffTensor<B, C>,
        out_channels: usize,
    ) -> (AutodiffTensor<B, C>, AutodiffTensor<B, C>, AutodiffTensor<B, C>, AutodiffTensor<B, C>) {
        // Second-order gradients through the ADC are not needed: the result is a constant.
        let (gp, gs, gz, gc) = B::adc_accumulate_backward(
            grad.into_primitive(),
            psums.into_primitive(),
            step.into_primitive(),
            offset.into_primitive(),
            coef.into_primitive(),
            low.into_primitive(),
            high.into_primitive(),
            out_channels,
        );
        let wrap = AutodiffTensor::<B, C>::new;
        (wrap(gp), wrap(gs), wrap(gz), wrap(gc))
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

/// ADC quantization, dequantization and accumulation (see the module docs): the fused pass
/// where the backend has one, [`adc_accumulate_reference`] elsewhere.
pub fn adc_accumulate(psums: Tensor<4>, ch: AdcChannels, out_channels: usize) -> Tensor<4> {
    if !fused_available(&psums.device()) {
        return adc_accumulate_reference(psums, ch, out_channels);
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as AdcOps>::adc_accumulate(
        psums.into_dispatch(),
        ch.step.into_dispatch(),
        ch.offset.into_dispatch(),
        ch.coef.into_dispatch(),
        ch.low.into_dispatch(),
        ch.high.into_dispatch(),
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
                |a: Tensor<1>, b: Tensor<1>, tol, what| assert_close(&test_flat(a), &test_flat(b), tol, 1e-3, what);
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
