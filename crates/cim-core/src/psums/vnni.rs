//! The forward partial sums in integers, on CPUs with AVX-512 VNNI.
//!
//! Activation codes are integers in [0, 2^A - 1] and digits are integers of at most b_c bits, so
//! every partial sum is an exact integer dot product. `vpdpbusd` multiplies 4 unsigned bytes by 4
//! signed bytes and adds them to a 32-bit lane: 64 multiply-adds per instruction, four times the
//! f32 FMA rate, and no im2col matrix at all - the codes are read in place as 4-channel words of
//! a channels-last byte copy. The i32 sums are converted to f32 once, so the result equals the
//! f32 product bit for bit whenever every sum stays below 2^24 in magnitude (then both are exact).
//! [`forward`] checks that bound and the integrality of its inputs and declines otherwise (cell
//! gains make the planes fractional), leaving the f32 product to the caller.
//!
//! [`forward_through_adc`] runs the ADC pass ([`crate::adc`]) on each register block while its
//! sums are still in registers, and keeps the partial sums for the backward as i16 (exact while
//! every sum is below 2^15): the 4-byte partial sums of a CIM step (about 1 GB for ResNet-20 at
//! batch 128) are then neither written as f32 nor read back by a separate ADC pass.

use std::arch::x86_64::*;

use rayon::prelude::*;

use super::flex::Dims;
use flex_kernels::host::written_by;

/// Output pixels per zmm register (i32 lanes).
const LANES: usize = 16;
/// Pixel registers per register block: 3 x 16 pixels.
const PANELS: usize = 3;
/// Output planes per register block (with 3 pixel registers: 24 accumulators of the 32 zmm).
const PLANES: usize = 8;
/// Output pixels per register block.
const PIXELS: usize = PANELS * LANES;
/// Register blocks of pixels per parallel task.
const BLOCKS_PER_TASK: usize = 4;

/// Whether this CPU has the instructions.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// The partial sums [G*P, B*H'*W'] of `codes` [B, C, H, W] and `planes` [G, P, R], or None
/// when the inputs are not small integers or a sum could reach 2^24, or the CPU lacks AVX-512
/// VNNI.
pub(super) fn forward(codes: &[f32], planes: &[f32], d: Dims) -> Option<Vec<f32>> {
    let (input, weights) = packed(codes, planes, d, 1 << 24)?;
    let len = d.groups * d.planes * d.columns();
    // SAFETY: the CPU has AVX-512 F, BW and VNNI (checked by `packed`); `run` writes every one
    // of the G*P*B*H'*W' outputs (each plane of each row tile at every pixel) and reads only
    // inside the buffers whose shapes `d` describes.
    Some(unsafe { written_by(len, |out| run(&input, &weights, d, Sink::Floats(Shared(out.as_mut_ptr().cast())))) })
}

/// The ADC pass of [`crate::adc`] as the epilogue of the partial sums: per channel k = g*P + plane
/// its window and code range, and coef * step, coef * offset, as the pass computes them.
pub(crate) struct AdcEpilogue {
    step: Vec<f32>,
    offset: Vec<f32>,
    low: Vec<f32>,
    high: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
    out_channels: usize,
}

impl AdcEpilogue {
    /// From the channels' (step, offset, coef, low, high), each [K], accumulating into
    /// `out_channels` outputs.
    pub(crate) fn new([step, offset, coef, low, high]: [&[f32]; 5], out_channels: usize) -> Self {
        Self {
            scale: coef.iter().zip(step).map(|(c, s)| c * s).collect(),
            shift: coef.iter().zip(offset).map(|(c, z)| c * z).collect(),
            step: step.to_vec(),
            offset: offset.to_vec(),
            low: low.to_vec(),
            high: high.to_vec(),
            out_channels,
        }
    }
}

/// The ADC pass over the partial sums of `codes` and `planes`, accumulated into y [B, C_out,
/// H'*W'], bit-identical to [`crate::adc`]'s forward over [`forward`]'s values, and the partial
/// sums themselves as i16 [G*P, B*H'*W'] (for the backward); None where [`forward`] declines or
/// a sum could reach 2^15.
pub(super) fn forward_through_adc(
    codes: &[f32],
    planes: &[f32],
    d: Dims,
    adc: &AdcEpilogue,
) -> Option<(Vec<f32>, Vec<i16>)> {
    let (input, weights) = packed(codes, planes, d, 1 << 15)?;
    assert_eq!(adc.step.len(), d.groups * d.planes, "one ADC channel per partial sum channel");
    let n = d.columns();
    let mut psums = None;
    // SAFETY: as in `forward`; the ADC sink also writes every one of the B*C_out*H'*W' outputs
    // (each task all channels of its pixels).
    let y = unsafe {
        written_by(n * adc.out_channels, |y| {
            psums = Some(written_by(d.groups * d.planes * n, |p| {
                let sink =
                    Sink::ThroughAdc { psums: Shared(p.as_mut_ptr().cast()), y: Shared(y.as_mut_ptr().cast()), adc };
                run(&input, &weights, d, sink)
            }));
        })
    };
    Some((y, psums.expect("filled above")))
}

/// The codes and planes packed for [`run`], when the CPU has AVX-512 VNNI, both are small
/// integers and no sum can reach `bound` in magnitude.
fn packed(codes: &[f32], planes: &[f32], d: Dims, bound: u64) -> Option<(ChannelsLast, PackedPlanes)> {
    if !available() {
        return None;
    }
    let input = ChannelsLast::new(codes, d)?;
    let weights = PackedPlanes::new(planes, d, input.quad_channels)?;
    let k2 = d.geo.kernel * d.geo.kernel;
    let largest_sum = u64::from(input.max) * u64::from(weights.max_abs) * (d.channels.min(d.rows / k2) * k2) as u64;
    (largest_sum < bound).then_some((input, weights))
}

/// The codes as bytes, channels last and each row tile's channels padded to a multiple of 4:
/// [B, H, W, G, quad_channels]; a 4-channel word is then one 32-bit load.
struct ChannelsLast {
    bytes: Vec<u8>,
    quad_channels: usize,
    max: u8,
}

impl ChannelsLast {
    fn new(codes: &[f32], d: Dims) -> Option<Self> {
        let n_c = d.rows / (d.geo.kernel * d.geo.kernel);
        let quad_channels = n_c.div_ceil(4) * 4;
        let pixel = d.groups * quad_channels;
        let image = d.h * d.w * pixel;
        let mut bytes = vec![0u8; d.batch * image];
        let maxima: Vec<Option<u8>> = bytes
            .par_chunks_mut(image)
            .enumerate()
            .map(|(b, dst)| {
                let mut max = 0u8;
                for c in 0..d.channels {
                    let offset = (c / n_c) * quad_channels + c % n_c;
                    let src = &codes[(b * d.channels + c) * d.h * d.w..][..d.h * d.w];
                    for (i, &v) in src.iter().enumerate() {
                        // integers in [0, 255] only (NaN fails too)
                        if !(0.0..=255.0).contains(&v) || f32::from(v as u8) != v {
                            return None;
                        }
                        let v = v as u8;
                        max = max.max(v);
                        dst[i * pixel + offset] = v;
                    }
                }
                Some(max)
            })
            .collect();
        let max = maxima.into_iter().try_fold(0u8, |m, x| x.map(|x| m.max(x)))?;
        Some(Self { bytes, quad_channels, max })
    }
}

/// The digit planes as 4-byte words of signed digits (4 channels of one tap), per (row tile,
/// block of 8 planes, tap (kh, kw), 4-channel word): the 8 words one step of the register block
/// broadcasts. Missing planes and channels are zero.
struct PackedPlanes {
    words: Vec<i32>,
    /// Words of one (row tile, plane block).
    block: usize,
    plane_blocks: usize,
    max_abs: u8,
}

impl PackedPlanes {
    fn new(planes: &[f32], d: Dims, quad_channels: usize) -> Option<Self> {
        let k2 = d.geo.kernel * d.geo.kernel;
        let n_c = d.rows / k2;
        let quads = quad_channels / 4;
        let plane_blocks = d.planes.div_ceil(PLANES);
        let block = k2 * quads * PLANES;
        let mut bytes = vec![0i8; d.groups * plane_blocks * block * 4];
        let mut max_abs = 0u8;
        for g in 0..d.groups {
            for m in 0..d.planes {
                let row = &planes[(g * d.planes + m) * d.rows..][..d.rows];
                let dst = &mut bytes[(g * plane_blocks + m / PLANES) * block * 4..][..block * 4];
                for c in 0..n_c {
                    for tap in 0..k2 {
                        let v = row[c * k2 + tap];
                        if !(-128.0..=127.0).contains(&v) || f32::from(v as i8) != v {
                            return None;
                        }
                        max_abs = max_abs.max(v.abs() as u8);
                        dst[((tap * quads + c / 4) * PLANES + m % PLANES) * 4 + c % 4] = v as i8;
                    }
                }
            }
        }
        let words = bytes
            .chunks_exact(4)
            .map(|w| i32::from_le_bytes([w[0] as u8, w[1] as u8, w[2] as u8, w[3] as u8]))
            .collect();
        Some(Self { words, block, plane_blocks, max_abs })
    }
}

/// A raw output pointer shared by the tasks, which write disjoint pixels.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: every task writes a disjoint set of output pixels.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

/// Where the register blocks go.
#[derive(Clone, Copy)]
enum Sink<'a> {
    /// The partial sums as f32 [G*P, B*H'*W'].
    Floats(Shared<f32>),
    /// The partial sums as i16 [G*P, B*H'*W'], and the ADC pass over them into y [B, C_out, H'*W'].
    ThroughAdc { psums: Shared<i16>, y: Shared<f32>, adc: &'a AdcEpilogue },
}

/// Output pixels per parallel task.
const TASK_PIXELS: usize = PIXELS * BLOCKS_PER_TASK;

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn run(input: &ChannelsLast, weights: &PackedPlanes, d: Dims, sink: Sink) {
    let n = d.columns();
    let k = d.geo.kernel;
    let steps = k * k * input.quad_channels / 4;
    let pixel = d.groups * input.quad_channels;
    // the per-task buffers live once per worker thread, not once per task: the word offsets, the
    // packed codes and, with the ADC, the task's outputs [C_out, TASK_PIXELS]
    let buffers = || (Vec::<Option<usize>>::new(), Vec::<i32>::new(), Vec::<f32>::new());
    (0..n.div_ceil(TASK_PIXELS)).into_par_iter().for_each_init(buffers, |(offsets, packed, outputs), task| {
        let first = task * TASK_PIXELS;
        let blocks = (n - first).div_ceil(PIXELS).min(BLOCKS_PER_TASK);
        if let Sink::ThroughAdc { adc, .. } = sink {
            outputs.clear();
            outputs.resize(adc.out_channels * TASK_PIXELS, 0.0);
        }
        // byte offset of every (block, tap, pixel) 4-channel word run of row tile 0; None in the
        // zero padding and past the last pixel
        offsets.clear();
        offsets.resize(blocks * k * k * PIXELS, None);
        for block in 0..blocks {
            for j in 0..PIXELS {
                let p = first + block * PIXELS + j;
                if p >= n {
                    break;
                }
                let (b, oy, ox) = (p / (d.ho * d.wo), p / d.wo % d.ho, p % d.wo);
                for kh in 0..k {
                    let Some(y) = (oy * d.geo.stride + kh).checked_sub(d.geo.padding).filter(|&y| y < d.h) else {
                        continue;
                    };
                    for kw in 0..k {
                        if let Some(x) = (ox * d.geo.stride + kw).checked_sub(d.geo.padding).filter(|&x| x < d.w) {
                            offsets[((block * k + kh) * k + kw) * PIXELS + j] = Some(((b * d.h + y) * d.w + x) * pixel);
                        }
                    }
                }
            }
        }
        // the codes of one row tile, per (block, tap, word, pixel): a register per 16 pixels
        packed.resize(blocks * steps * PIXELS, 0); // every entry is written below, per row tile
        let quads = input.quad_channels / 4;
        for g in 0..d.groups {
            for (i, o) in offsets.iter().enumerate() {
                let (block_tap, j) = (i / PIXELS, i % PIXELS);
                let dst = &mut packed[block_tap * quads * PIXELS + j..];
                match o {
                    Some(o) => {
                        let src = &input.bytes[o + g * input.quad_channels..][..input.quad_channels];
                        for (q, word) in src.chunks_exact(4).enumerate() {
                            dst[q * PIXELS] = i32::from_le_bytes(word.try_into().expect("4 bytes"));
                        }
                    }
                    None => (0..quads).for_each(|q| dst[q * PIXELS] = 0),
                }
            }
            for mb in 0..weights.plane_blocks {
                let a = &weights.words[(g * weights.plane_blocks + mb) * weights.block..][..weights.block];
                let planes = (d.planes - mb * PLANES).min(PLANES);
                for block in 0..blocks {
                    let p0 = first + block * PIXELS;
                    let b = &packed[block * steps * PIXELS..][..steps * PIXELS];
                    let acc = register_block(a, b, steps);
                    let place = Place { channel: g * d.planes + mb * PLANES, planes, pixel: p0, local: block * PIXELS };
                    // SAFETY: the rows g*P + mb*8 + m (m < planes) hold n values; pixels
                    // p0.. p0 + min(48, n - p0) belong to this task alone.
                    unsafe { store(&acc, sink, place, n, (n - p0).min(PIXELS), outputs) };
                }
            }
        }
        if let Sink::ThroughAdc { y, adc, .. } = sink {
            // SAFETY: y [B, C_out, H'W'] at this task's pixels, which no other task writes
            unsafe { scatter_outputs(outputs, y, first, (n - first).min(TASK_PIXELS), adc.out_channels, d.ho * d.wo) };
        }
    });
}

/// Where a register block lies: its first channel (plane of all row tiles), how many of its 8
/// planes are real, its first pixel, and that pixel's place among the task's pixels.
#[derive(Clone, Copy)]
struct Place {
    channel: usize,
    planes: usize,
    pixel: usize,
    local: usize,
}

/// Hands one register block's first `pixels` pixels to the sink: with the ADC, each channel's
/// dequantized code `coef*step*clamp(round((p - offset)/step), low, high) + coef*offset` (the
/// formula of [`crate::adc`], operation for operation, so the sums are bit-identical) is added to
/// the task's `outputs` [C_out, TASK_PIXELS] in channel order, as the ADC pass adds them.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn store(
    acc: &[[__m512i; PANELS]; PLANES],
    sink: Sink,
    at: Place,
    n: usize,
    pixels: usize,
    outputs: &mut [f32],
) {
    // 1.5 * 2^23: round half to even as flex_kernels::host::round_half_even does
    let magic = _mm512_set1_ps(12_582_912.0);
    for (m, acc_m) in acc.iter().enumerate().take(at.planes) {
        let channel = at.channel + m;
        for (r, acc_mr) in acc_m.iter().enumerate() {
            let valid = pixels.saturating_sub(r * LANES).min(LANES);
            if valid == 0 {
                break;
            }
            let mask: __mmask16 = if valid == LANES { !0 } else { (1u16 << valid) - 1 };
            let (at_pixel, sums) = (channel * n + at.pixel + r * LANES, _mm512_cvtepi32_ps(*acc_mr));
            match sink {
                // SAFETY (both arms): row `channel` of the caller's block, pixels r*16 ..
                // r*16 + valid (masked), and the task's outputs of those pixels
                Sink::Floats(out) => unsafe { _mm512_mask_storeu_ps(out.0.add(at_pixel), mask, sums) },
                Sink::ThroughAdc { psums, adc, .. } => unsafe {
                    _mm512_mask_cvtsepi32_storeu_epi16(psums.0.add(at_pixel).cast(), mask, *acc_mr);
                    let ratio = _mm512_div_ps(
                        _mm512_sub_ps(sums, _mm512_set1_ps(adc.offset[channel])),
                        _mm512_set1_ps(adc.step[channel]),
                    );
                    let clamped = _mm512_min_ps(
                        _mm512_max_ps(ratio, _mm512_set1_ps(adc.low[channel])),
                        _mm512_set1_ps(adc.high[channel]),
                    );
                    let code = _mm512_sub_ps(_mm512_add_ps(clamped, magic), magic);
                    let value = _mm512_add_ps(
                        _mm512_mul_ps(_mm512_set1_ps(adc.scale[channel]), code),
                        _mm512_set1_ps(adc.shift[channel]),
                    );
                    let o = outputs[(channel % adc.out_channels) * TASK_PIXELS + at.local + r * LANES..].as_mut_ptr();
                    _mm512_mask_storeu_ps(o, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, o), value));
                },
            }
        }
    }
}

/// Writes a task's `outputs` [C_out, TASK_PIXELS] (its `count` pixels from `first`) into y
/// [B, C_out, HW]: a pixel's image and position come from its index.
unsafe fn scatter_outputs(outputs: &[f32], y: Shared<f32>, first: usize, count: usize, out_channels: usize, hw: usize) {
    let mut j = 0;
    while j < count {
        let (b, at) = ((first + j) / hw, (first + j) % hw);
        let run = (count - j).min(hw - at);
        for c in 0..out_channels {
            let src = &outputs[c * TASK_PIXELS + j..][..run];
            // SAFETY: pixels at..at + run of image b lie inside y and belong to the caller's task.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), y.0.add((b * out_channels + c) * hw + at), run) };
        }
        j += run;
    }
}

/// One register block: 8 planes x 48 pixels summed over every (tap, 4-channel word).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
fn register_block(a: &[i32], b: &[i32], steps: usize) -> [[__m512i; PANELS]; PLANES] {
    let mut acc = [[_mm512_setzero_si512(); PANELS]; PLANES];
    for step in 0..steps {
        let mut codes = [_mm512_setzero_si512(); PANELS];
        for (r, c) in codes.iter_mut().enumerate() {
            // SAFETY: b holds steps * 48 words.
            *c = unsafe { _mm512_loadu_si512(b[(step * PANELS + r) * LANES..].as_ptr() as *const _) };
        }
        for (m, acc_m) in acc.iter_mut().enumerate() {
            let digits = _mm512_set1_epi32(a[step * PLANES + m]);
            for r in 0..PANELS {
                acc_m[r] = _mm512_dpbusd_epi32(acc_m[r], codes[r], digits);
            }
        }
    }
    acc
}
