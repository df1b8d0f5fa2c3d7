//! The forward partial sums in integers, on x86-64 CPUs: AVX-512 VNNI ([`vnni`]) or AVX2
//! ([`avx2`]), chosen at run time ([`PsumPath`]).
//!
//! Activation codes are integers in [0, 2^A - 1] and digits are integers of at most b_c bits, so
//! every partial sum is an exact integer dot product, computed 4 channels at a time from bytes:
//! the codes are read in place as 4-channel words of a channels-last byte copy (no im2col
//! matrix), the digits as 4-channel words of signed bytes. The i32 sums are converted to f32 once,
//! so the result equals the f32 product bit for bit whenever every sum stays below 2^24 in
//! magnitude (then both are exact). [`forward`] checks that bound and the integrality of its
//! inputs and declines otherwise (cell gains make the planes fractional), leaving the f32 product
//! to the caller. Both paths compute the same integers, so they agree bit for bit with each other
//! and with the f32 product.
//!
//! [`forward_through_adc`] runs the ADC pass ([`crate::adc`]) on each register block while its
//! sums are still in registers, and keeps the partial sums for the backward as i16 (exact while
//! every sum is below 2^15): the 4-byte partial sums of a CIM step (about 1 GB for ResNet-20 at
//! batch 128) are then neither written as f32 nor read back by a separate ADC pass.
//!
//! This file holds what both paths share: the packed layouts, the tasks over output pixels and
//! where the register blocks go; each path's file holds its register block and its store.

use rayon::prelude::*;

use super::dims::Dims;
use super::path::PsumPath;
use flex_kernels::host::written_by;

mod avx2;
mod vnni;

/// The partial sums [G*P, B*H'*W'] of `codes` [B, C, H, W] and `planes` [G, P, R] on the current
/// integer path, or None when the path is the generic one, or the inputs are not small integers,
/// or a sum could reach 2^24.
pub(in crate::psums) fn forward(codes: &[f32], planes: &[f32], d: Dims) -> Option<Vec<f32>> {
    let path = PsumPath::current();
    let (input, weights) = packed(codes, planes, d, 1 << 24, path)?;
    let len = d.groups * d.planes * d.columns();
    // SAFETY: `packed` chose a path this CPU runs; the path writes every one of the G*P*B*H'*W'
    // outputs (each plane of each row tile at every pixel) and reads only inside the buffers
    // whose shapes `d` describes.
    Some(unsafe {
        written_by(len, |out| run(path, &input, &weights, d, Sink::Floats(Shared(out.as_mut_ptr().cast()))))
    })
}

/// The ADC pass over the partial sums of `codes` and `planes`, accumulated into y [B, C_out,
/// H'*W'], bit-identical to [`crate::adc`]'s forward over [`forward`]'s values, and the partial
/// sums themselves as i16 [G*P, B*H'*W'] (for the backward); None where [`forward`] declines or
/// a sum could reach 2^15.
pub(in crate::psums) fn forward_through_adc(
    codes: &[f32],
    planes: &[f32],
    d: Dims,
    adc: &AdcEpilogue,
) -> Option<(Vec<f32>, Vec<i16>)> {
    let path = PsumPath::current();
    let (input, weights) = packed(codes, planes, d, 1 << 15, path)?;
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
                run(path, &input, &weights, d, sink)
            }));
        })
    };
    Some((y, psums.expect("filled above")))
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

/// The shape of a path's register block: `panels` registers of `lanes` pixels (i32 lanes) times
/// `planes` output planes.
#[derive(Clone, Copy)]
struct BlockShape {
    lanes: usize,
    panels: usize,
    planes: usize,
}

/// The register block of an integer path.
fn block_shape(path: PsumPath) -> BlockShape {
    match path {
        PsumPath::Vnni512 => vnni::BLOCK,
        PsumPath::Avx2 => avx2::BLOCK,
        PsumPath::Generic => unreachable!("the generic path has no register block"),
    }
}

impl BlockShape {
    /// Output pixels per register block.
    fn pixels(self) -> usize {
        self.lanes * self.panels
    }

    /// Output pixels per parallel task.
    fn task_pixels(self) -> usize {
        self.pixels() * BLOCKS_PER_TASK
    }
}

/// Register blocks of pixels per parallel task.
const BLOCKS_PER_TASK: usize = 4;

/// The codes and planes packed for [`run`], when `path` is an integer path this CPU runs, both
/// are small integers and no sum can reach `bound` in magnitude (nor, on AVX2, a sum of two byte
/// products the 16-bit lanes of `vpmaddubsw`).
fn packed(codes: &[f32], planes: &[f32], d: Dims, bound: u64, path: PsumPath) -> Option<(ChannelsLast, PackedPlanes)> {
    if path == PsumPath::Generic || !path.supported() {
        return None;
    }
    let input = ChannelsLast::new(codes, d)?;
    let weights = PackedPlanes::new(planes, d, input.quad_channels, block_shape(path).planes)?;
    let k2 = d.geo.kernel * d.geo.kernel;
    let largest_sum = u64::from(input.max) * u64::from(weights.max_abs) * (d.channels.min(d.rows / k2) * k2) as u64;
    let pair = 2 * u64::from(input.max) * u64::from(weights.max_abs);
    let pairs_fit = path != PsumPath::Avx2 || pair <= i16::MAX as u64;
    (largest_sum < bound && pairs_fit).then_some((input, weights))
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
/// block of `planes_per_block` planes, tap (kh, kw), 4-channel word): the words one step of the
/// register block broadcasts. Missing planes and channels are zero.
struct PackedPlanes {
    words: Vec<i32>,
    /// Words of one (row tile, plane block).
    block: usize,
    plane_blocks: usize,
    max_abs: u8,
}

impl PackedPlanes {
    fn new(planes: &[f32], d: Dims, quad_channels: usize, planes_per_block: usize) -> Option<Self> {
        let k2 = d.geo.kernel * d.geo.kernel;
        let n_c = d.rows / k2;
        let quads = quad_channels / 4;
        let plane_blocks = d.planes.div_ceil(planes_per_block);
        let block = k2 * quads * planes_per_block;
        let mut bytes = vec![0i8; d.groups * plane_blocks * block * 4];
        let mut max_abs = 0u8;
        for g in 0..d.groups {
            for m in 0..d.planes {
                let row = &planes[(g * d.planes + m) * d.rows..][..d.rows];
                let dst = &mut bytes[(g * plane_blocks + m / planes_per_block) * block * 4..][..block * 4];
                for c in 0..n_c {
                    for tap in 0..k2 {
                        let v = row[c * k2 + tap];
                        if !(-128.0..=127.0).contains(&v) || f32::from(v as i8) != v {
                            return None;
                        }
                        max_abs = max_abs.max(v.abs() as u8);
                        dst[((tap * quads + c / 4) * planes_per_block + m % planes_per_block) * 4 + c % 4] = v as i8;
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

/// Where a register block lies: its first channel (plane of all row tiles), how many of its
/// planes are real, its first pixel, that pixel's place among the task's pixels, and how many of
/// its pixels are real.
#[derive(Clone, Copy)]
struct Place {
    channel: usize,
    planes: usize,
    pixel: usize,
    local: usize,
    pixels: usize,
}

/// One register block of a path: the planes' words `a`, the pixels' code words `b` over `steps`
/// (tap, 4-channel word) steps, handed to the sink at `place` (`n` pixels a channel, the task's
/// outputs [C_out, task pixels] for the ADC sink).
type BlockKernel =
    unsafe fn(a: &[i32], b: &[i32], steps: usize, sink: Sink, place: Place, n: usize, outputs: &mut [f32]);

/// The byte offset in the channels-last codes of every (block, tap, pixel) 4-channel word run of
/// row tile 0, for the `blocks` blocks of `pixels_per_block` output pixels from pixel `first`;
/// `None` in the zero padding and past the last pixel. `pixel` is the bytes of one input pixel.
fn word_offsets(
    offsets: &mut Vec<Option<usize>>,
    d: Dims,
    first: usize,
    blocks: usize,
    pixels_per_block: usize,
    pixel: usize,
) {
    let (n, k) = (d.columns(), d.geo.kernel);
    offsets.clear();
    offsets.resize(blocks * k * k * pixels_per_block, None);
    for block in 0..blocks {
        for j in 0..pixels_per_block {
            let p = first + block * pixels_per_block + j;
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
                        offsets[((block * k + kh) * k + kw) * pixels_per_block + j] =
                            Some(((b * d.h + y) * d.w + x) * pixel);
                    }
                }
            }
        }
    }
}

/// Packs the codes of row tile `g` at `offsets` ([`word_offsets`]) per (block, tap, word,
/// pixel) into `packed`: every entry of it is written (zeros in the padding).
fn pack_row_tile(
    packed: &mut [i32],
    offsets: &[Option<usize>],
    input: &ChannelsLast,
    g: usize,
    pixels_per_block: usize,
) {
    let quads = input.quad_channels / 4;
    for (i, o) in offsets.iter().enumerate() {
        let (block_tap, j) = (i / pixels_per_block, i % pixels_per_block);
        let dst = &mut packed[block_tap * quads * pixels_per_block + j..];
        match o {
            Some(o) => {
                let src = &input.bytes[o + g * input.quad_channels..][..input.quad_channels];
                for (q, word) in src.chunks_exact(4).enumerate() {
                    dst[q * pixels_per_block] = i32::from_le_bytes(word.try_into().expect("4 bytes"));
                }
            }
            None => (0..quads).for_each(|q| dst[q * pixels_per_block] = 0),
        }
    }
}

/// Every register block of the layer on `path`: parallel tasks over the output pixels, each
/// packing its pixels' code words once per row tile and running the path's block kernel on them.
///
/// # Safety
/// `path` must be an integer path this CPU runs; the sink's buffers must hold the outputs of
/// every pixel of `d`.
unsafe fn run(path: PsumPath, input: &ChannelsLast, weights: &PackedPlanes, d: Dims, sink: Sink) {
    let kernel: BlockKernel = match path {
        PsumPath::Vnni512 => vnni::block_kernel,
        PsumPath::Avx2 => avx2::block_kernel,
        PsumPath::Generic => unreachable!("the generic path packs nothing"),
    };
    let shape = block_shape(path);
    let (pixels_per_block, task_pixels) = (shape.pixels(), shape.task_pixels());
    let n = d.columns();
    let steps = d.geo.kernel * d.geo.kernel * input.quad_channels / 4;
    let pixel = d.groups * input.quad_channels;
    // the per-task buffers live once per worker thread, not once per task: the word offsets, the
    // packed codes and, with the ADC, the task's outputs [C_out, task pixels]
    let buffers = || (Vec::<Option<usize>>::new(), Vec::<i32>::new(), Vec::<f32>::new());
    (0..n.div_ceil(task_pixels)).into_par_iter().for_each_init(buffers, |(offsets, packed, outputs), task| {
        let first = task * task_pixels;
        let blocks = (n - first).div_ceil(pixels_per_block).min(BLOCKS_PER_TASK);
        if let Sink::ThroughAdc { adc, .. } = sink {
            outputs.clear();
            outputs.resize(adc.out_channels * task_pixels, 0.0);
        }
        word_offsets(offsets, d, first, blocks, pixels_per_block, pixel);
        // the codes of one row tile, per (block, tap, word, pixel): a register per `lanes` pixels
        packed.resize(blocks * steps * pixels_per_block, 0); // every entry is written below, per row tile
        for g in 0..d.groups {
            pack_row_tile(packed, offsets, input, g, pixels_per_block);
            for mb in 0..weights.plane_blocks {
                let a = &weights.words[(g * weights.plane_blocks + mb) * weights.block..][..weights.block];
                let planes = (d.planes - mb * shape.planes).min(shape.planes);
                for block in 0..blocks {
                    let p0 = first + block * pixels_per_block;
                    let b = &packed[block * steps * pixels_per_block..][..steps * pixels_per_block];
                    let place = Place {
                        channel: g * d.planes + mb * shape.planes,
                        planes,
                        pixel: p0,
                        local: block * pixels_per_block,
                        pixels: (n - p0).min(pixels_per_block),
                    };
                    // SAFETY: the caller's path runs here; the rows g*P + mb*planes + m (m <
                    // planes) hold n values, and this block's pixels belong to this task alone.
                    unsafe { kernel(a, b, steps, sink, place, n, outputs) };
                }
            }
        }
        if let Sink::ThroughAdc { y, adc, .. } = sink {
            // SAFETY: y [B, C_out, H'W'] at this task's pixels, which no other task writes
            unsafe {
                scatter_outputs(
                    outputs,
                    y,
                    first,
                    (n - first).min(task_pixels),
                    task_pixels,
                    adc.out_channels,
                    d.ho * d.wo,
                )
            };
        }
    });
}

/// Writes a task's `outputs` [C_out, stride] (its `count` pixels from `first`) into y
/// [B, C_out, HW]: a pixel's image and position come from its index.
///
/// # Safety
/// The pixels `first..first + count` of every channel must lie inside y and belong to the
/// caller's task.
unsafe fn scatter_outputs(
    outputs: &[f32],
    y: Shared<f32>,
    first: usize,
    count: usize,
    stride: usize,
    out_channels: usize,
    hw: usize,
) {
    let mut j = 0;
    while j < count {
        let (b, at) = ((first + j) / hw, (first + j) % hw);
        let run = (count - j).min(hw - at);
        for c in 0..out_channels {
            let src = &outputs[c * stride + j..][..run];
            // SAFETY: pixels at..at + run of image b lie inside y and belong to the caller's task.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), y.0.add((b * out_channels + c) * hw + at), run) };
        }
        j += run;
    }
}
