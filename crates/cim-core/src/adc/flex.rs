//! The ADC pass on Flex: one pass forward (quantize, dequantize, accumulate per image) and one
//! backward (per channel, or per image inside the partial-sum backward), with every channel's
//! sums split over fixed lanes so that they vectorize and stay bit-identical on every CPU.

use std::mem::MaybeUninit;

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::{AdcChannelTensors, AdcOps};
use flex_kernels::host::{f32_slice, flex_tensor, prefetch, round_half_even, written_by, zeros};
use flex_kernels::with_best_simd;

impl AdcChannelTensors<Flex> {
    /// The five tensors' values on the host, in [`Self::into_array`]'s order.
    pub(crate) fn host(&self) -> [std::borrow::Cow<'_, [f32]>; 5] {
        [&self.step, &self.offset, &self.coef, &self.low, &self.high].map(f32_slice)
    }
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
    fn adc_accumulate(psums: FlexTensor, adc: AdcChannelTensors<Flex>, out_channels: usize) -> FlexTensor {
        let dims = psums.layout().shape().to_vec();
        let [_, batch, h, w] = [dims[0], dims[1], dims[2], dims[3]];
        let hw = h * w;
        let p = f32_slice(&psums);
        let [step, offset, coef, low, high] = adc.host();
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
        adc: AdcChannelTensors<Flex>,
        out_channels: usize,
    ) -> (FlexTensor, FlexTensor, FlexTensor, FlexTensor) {
        let dims = psums.layout().shape().to_vec();
        let [k, batch, h, w] = [dims[0], dims[1], dims[2], dims[3]];
        let hw = h * w;
        let (gy, p) = (f32_slice(&grad), f32_slice(&psums));
        let [step, offset, coef, low, high] = adc.host();
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
