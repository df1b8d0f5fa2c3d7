//! All (slice, row tile, column) partial sums of a layer in one pass (DESIGN.md section 3, "Fast
//! path vs. definition").
//!
//! The definition is a grouped convolution: the activation codes padded to G*n_c channels viewed
//! as G groups, against the digit planes stacked as [G * polarities * S * C_out, n_c, k, k].
//! Here the planes come as [G, P, R] (P = polarities * S * C_out planes of R = n_c*k*k word lines
//! per row tile) and the partial sums leave channel-major, [K, B, H', W'] with K = G * P ordered
//! (row tile, polarity, slice, column): each row tile is then ONE matrix product
//! [P, R_g] x [R_g, B*H'*W'] over the im2col of its channels, forward and backward, which is what
//! the Flex implementation does. The codes come unpadded, [B, C_in, H, W]: the word lines of the
//! last row tile beyond C_in hold zero codes, so its product runs over its R_g <= R real word
//! lines only (a 16-channel layer in arrays of 14 channels computes 16, not 28, channels' worth).
//! Other backends run the grouped convolution over the padded codes
//! ([`grouped_psums_reference`]).

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::Tensor;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use rayon::prelude::*;

use crate::adc::{AdcImageBackward, CHANNEL_SUMS};
use crate::config::Encoding;
use crate::im2col::{ConvGeometry, PlaneShape, Write, matmul};
use crate::kernels::{
    AutodiffTensor, backward_with, f32_slice, flex_tensor, fused_available, tracked, with_best_simd, zeros,
};
use crate::slicing::BitSlicing;

mod through_adc;
#[cfg(target_arch = "x86_64")]
mod vnni;

pub use through_adc::{PsumsThroughAdcOps, psums_through_adc, psums_through_adc_reference};

/// The partial-sum pass as a backend extension (Flex, and autodiff over it).
#[backend_extension(Flex, Autodiff)]
pub trait PsumOps: Backend {
    /// Activation codes [B, C_in, H, W] (C_in <= G*n_c; the missing channels are zero codes)
    /// and digit planes [G, P, R = n_c*k*k] to partial sums [G*P, B, H', W'].
    fn cim_psums(
        codes: FloatTensor<Self>,
        planes: FloatTensor<Self>,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self>;

    /// Gradients of [`Self::cim_psums`] with respect to the codes and the planes.
    fn cim_psums_backward(
        grad: FloatTensor<Self>,
        codes: FloatTensor<Self>,
        planes: FloatTensor<Self>,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The same partial sums from integer weight codes [G, C_out, R], their digit planes cut
    /// inside ([`BitSlicing::digit_planes`] of B_w = `weight_bits`, b_c = `cell_bits`).
    #[allow(clippy::too_many_arguments)]
    fn cim_psums_of_weight_codes(
        codes: FloatTensor<Self>,
        weight_codes: FloatTensor<Self>,
        kernel: usize,
        stride: usize,
        padding: usize,
        weight_bits: u32,
        cell_bits: u32,
        differential: bool,
    ) -> FloatTensor<Self>;

    /// Gradients of [`Self::cim_psums_of_weight_codes`] with respect to the codes and the weight
    /// codes (through the digit straight-through estimator).
    #[allow(clippy::too_many_arguments)]
    fn cim_psums_of_weight_codes_backward(
        grad: FloatTensor<Self>,
        codes: FloatTensor<Self>,
        weight_codes: FloatTensor<Self>,
        kernel: usize,
        stride: usize,
        padding: usize,
        weight_bits: u32,
        cell_bits: u32,
        differential: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// The slicing a weight-code call names, rebuilt from its primitive arguments.
fn slicing_of(weight_bits: u32, cell_bits: u32, differential: bool) -> BitSlicing {
    let encoding = if differential { Encoding::Differential } else { Encoding::Twos };
    BitSlicing::new(weight_bits, cell_bits, encoding).expect("the layer validated its slicing")
}

/// Sizes of one call, read off the tensors.
#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    channels: usize,
    h: usize,
    w: usize,
    groups: usize,
    planes: usize,
    rows: usize,
    ho: usize,
    wo: usize,
    geo: ConvGeometry,
}

impl Dims {
    /// Sizes of codes [B, C, H, W] against `groups` row tiles of `planes` planes of `rows`
    /// word lines.
    fn new(codes: &FlexTensor, [groups, planes, rows]: [usize; 3], geo: ConvGeometry) -> Self {
        let a = codes.layout().shape().to_vec();
        Self {
            batch: a[0],
            channels: a[1],
            h: a[2],
            w: a[3],
            groups,
            planes,
            rows,
            ho: geo.out_size(a[2]),
            wo: geo.out_size(a[3]),
            geo,
        }
    }

    /// One input plane against its output plane.
    fn plane(&self) -> PlaneShape {
        PlaneShape::new(self.h, self.w, self.geo)
    }

    /// Output pixels of all images: the columns of the im2col matrix.
    fn columns(&self) -> usize {
        self.batch * self.ho * self.wo
    }

    /// The word lines of row tile `g` that carry a real input channel (the rest are padding).
    fn real_rows(&self, g: usize) -> usize {
        let k2 = self.geo.kernel * self.geo.kernel;
        let n_c = self.rows / k2;
        self.channels.saturating_sub(g * n_c).min(n_c) * k2
    }
}

thread_local! {
    /// The im2col matrix is as large as the partial sums and lives only during one call: keeping
    /// its buffer spares the kernel from handing out (and zeroing) fresh pages at every call.
    static COLUMNS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's reusable im2col buffer of `len` values (contents unspecified).
fn with_columns<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    COLUMNS.with(|cell| {
        let mut buf = cell.take();
        buf.resize(len, 0.0);
        let out = f(&mut buf[..len]);
        cell.replace(buf);
        out
    })
}

/// im2col of all images into `cols` [channels * k * k, B * H' * W'], rows ordered
/// (channel, kh, kw); every entry is written.
fn im2col(a: &[f32], d: Dims, cols: &mut [f32]) {
    let k = d.geo.kernel;
    let plane = d.plane();
    let hw_out = plane.out_pixels();
    cols.par_chunks_mut(d.columns()).enumerate().for_each(|(row, out)| {
        let (c, kh, kw) = (row / (k * k), row / k % k, row % k);
        for b in 0..d.batch {
            let img = &a[(b * d.channels + c) * d.h * d.w..][..d.h * d.w];
            plane.im2col_row(img, kh, kw, &mut out[b * hw_out..][..hw_out]);
        }
    });
}

/// Images per task of a backward pass: the chunks, not the threads, fix the order in which the
/// weights' gradient is summed.
const IMAGES_PER_CHUNK: usize = 8;

/// The nonzero entries of the planes [G, P, R] by word line: (plane, value) in plane order.
///
/// Digit planes are mostly zero: a differential code has digits on one polarity only, and with
/// the bell-shaped weight distribution the high slices' digits are mostly 0 (about 20% of a
/// W4 c2 differential layer's entries are nonzero). Summed over each word line's nonzero
/// digits, the backward's dL/dcols = planes^T x dL/dpsums then costs a fraction of the dense
/// product's multiply-adds.
struct WordLineEntries {
    /// Where each (row tile, word line)'s entries start, G*R + 1 values.
    starts: Vec<usize>,
    planes: Vec<u32>,
    values: Vec<f32>,
    /// Word lines per row tile (R).
    rows: usize,
    /// Planes per row tile (P).
    planes_per_tile: usize,
}

/// The share of nonzero plane entries below which [`WordLineEntries`] replaces the dense
/// product; above it the dense product's register reuse wins. Measured per row tile and image
/// (2 cores, AVX2): 3.2x faster than the dense product at 13% nonzero, 1.4x at 45%; on the
/// ResNet-20 train step (`train_step` bench) both encodings are faster with it (differential
/// 13-21% nonzero, `twos` 32-52%).
const SPARSE_BELOW: f64 = 0.55;

/// Output pixels summed in registers at a time by [`WordLineEntries::transposed_product`].
const PIXEL_BLOCK: usize = 64;

impl WordLineEntries {
    fn new(planes: &[f32], d: Dims) -> Self {
        let mut starts = Vec::with_capacity(d.groups * d.rows + 1);
        let (mut indices, mut values) = (Vec::new(), Vec::new());
        for g in 0..d.groups {
            for r in 0..d.rows {
                starts.push(indices.len());
                for k in 0..d.planes {
                    let v = planes[(g * d.planes + k) * d.rows + r];
                    if v != 0.0 {
                        indices.push(k as u32);
                        values.push(v);
                    }
                }
            }
        }
        starts.push(indices.len());
        Self { starts, planes: indices, values, rows: d.rows, planes_per_tile: d.planes }
    }

    /// Whether the sums over the nonzero entries beat the dense product for these planes.
    fn pays(&self, d: Dims) -> bool {
        (self.values.len() as f64) < SPARSE_BELOW * (d.groups * d.planes * d.rows) as f64
    }

    /// out [rows, HW] = planes[g]^T [rows, P] x grad [P, HW] (row stride `grad_rs`) over the
    /// nonzero entries; every entry of `out` is written. Each word line's sums run in plane
    /// order, as the entries are stored. `block` is scratch.
    #[allow(clippy::too_many_arguments)]
    fn transposed_product(
        &self,
        g: usize,
        rows: usize,
        out: &mut [f32],
        hw: usize,
        grad: &[f32],
        grad_rs: usize,
        block: &mut Vec<f32>,
    ) {
        block.resize(self.planes_per_tile * PIXEL_BLOCK, 0.0);
        let this = self;
        with_best_simd!((this: &WordLineEntries, g: usize, rows: usize, out: &mut [f32], hw: usize, grad: &[f32], grad_rs: usize, block: &mut [f32]) -> () {
            // pixel blocks outermost, each block of every plane's gradient first copied side by
            // side: the planes' rows lie a power of two apart (H'W' floats), so read in place
            // they would all fall into the same few cache sets
            for x0 in (0..hw).step_by(PIXEL_BLOCK) {
                let n = (hw - x0).min(PIXEL_BLOCK);
                for (k, dst) in block.chunks_exact_mut(PIXEL_BLOCK).enumerate() {
                    dst[..n].copy_from_slice(&grad[k * grad_rs + x0..][..n]);
                }
                for r in 0..rows {
                    let entries = this.starts[g * this.rows + r]..this.starts[g * this.rows + r + 1];
                    let (planes, values) = (&this.planes[entries.clone()], &this.values[entries]);
                    let mut acc = [0f32; PIXEL_BLOCK];
                    for (&k, &v) in planes.iter().zip(values) {
                        let src: &[f32; PIXEL_BLOCK] =
                            block[k as usize * PIXEL_BLOCK..][..PIXEL_BLOCK].try_into().expect("a whole block");
                        for i in 0..PIXEL_BLOCK {
                            acc[i] += v * src[i];
                        }
                    }
                    out[r * hw + x0..][..n].copy_from_slice(&acc[..n]);
                }
            }
        });
    }
}

/// Where a partial-sum backward takes dL/dpsums from.
#[derive(Clone, Copy)]
enum PsumGrad<'a> {
    /// The whole gradient [G*P, B*H'*W'], given.
    Given(&'a [f32]),
    /// Worked out image by image from the gradient of the ADC pass the partial sums went
    /// through; the ADC channels' running sums ride in the chunks' partials.
    ThroughAdc(&'a AdcImageBackward<'a>),
}

/// The backward of a partial-sum pass, image by image so that each image's im2col and its
/// gradient stay in the cache (the whole batch's are as large as the partial sums): for every
/// image, per row tile g, `weight_grad(g, (grad_g, grad_rs), cols_g, scratch, partial)` adds the
/// weights' side to this chunk's `partial` (of `partial_len` values), with grad_g the image's
/// gradient rows [P, H'W'] (row stride grad_rs) and cols_g its im2col rows [R_g, H'W']; then
/// dL/dcols_g = planes[g]^T x grad_g, added back onto the image by col2im. Returns dL/dcodes
/// [B, C, H, W] and the chunks' partials summed in chunk order: `partial_len` values, then with
/// [`PsumGrad::ThroughAdc`] the ADC channels' sums (K * [`CHANNEL_SUMS`]).
fn backward_by_images(
    source: PsumGrad,
    codes: &[f32],
    planes: &[f32],
    d: Dims,
    partial_len: usize,
    weight_grad: impl Fn(usize, (&[f32], usize), &[f32], &mut Vec<f32>, &mut [f32]) + Sync,
) -> (Vec<f32>, Vec<f32>) {
    let plane = d.plane();
    let (hw, n, image_len) = (plane.out_pixels(), d.columns(), d.channels * d.h * d.w);
    let im2col_rows = d.channels * d.geo.kernel * d.geo.kernel;
    let adc_len = match source {
        PsumGrad::Given(_) => 0,
        PsumGrad::ThroughAdc(adc) => adc.channels() * CHANNEL_SUMS,
    };
    let entries = WordLineEntries::new(planes, d);
    let sparse = entries.pays(d);
    let mut grad_codes = zeros(d.batch * image_len);
    let partials: Vec<Vec<f32>> = grad_codes
        .par_chunks_mut(IMAGES_PER_CHUNK * image_len)
        .enumerate()
        .map_init(
            || {
                let grad_rows = match source {
                    PsumGrad::Given(_) => Vec::new(),
                    PsumGrad::ThroughAdc(_) => vec![0f32; d.planes * hw],
                };
                (vec![0f32; im2col_rows * hw], vec![0f32; im2col_rows * hw], grad_rows, Vec::new(), Vec::new())
            },
            |(cols, grad_cols, grad_rows, scratch, block), (chunk, grad_chunk)| {
                let mut partial = vec![0f32; partial_len + adc_len];
                let (weights_part, adc_sums) = partial.split_at_mut(partial_len);
                for (i, grad_image) in grad_chunk.chunks_exact_mut(image_len).enumerate() {
                    let b = chunk * IMAGES_PER_CHUNK + i;
                    plane.im2col_image(&codes[b * image_len..][..image_len], d.channels, cols);
                    for g in 0..d.groups {
                        let rows_g = d.real_rows(g);
                        let (grad_g, grad_rs) = match source {
                            PsumGrad::Given(grad) => (&grad[g * d.planes * n + b * hw..], n),
                            PsumGrad::ThroughAdc(adc) => {
                                adc.image_rows(g * d.planes, d.planes, b, grad_rows, adc_sums);
                                (&grad_rows[..], hw)
                            }
                        };
                        let cols_g = &cols[g * d.rows * hw..][..rows_g * hw];
                        weight_grad(g, (grad_g, grad_rs), cols_g, scratch, weights_part);
                        // d/dcols_g = planes[g]^T [R_g, P] x grad_g [P, H'W']
                        let grad_cols_g = &mut grad_cols[g * d.rows * hw..][..rows_g * hw];
                        if sparse {
                            entries.transposed_product(g, rows_g, grad_cols_g, hw, grad_g, grad_rs, block);
                        } else {
                            matmul(
                                rows_g,
                                hw,
                                d.planes,
                                (grad_cols_g, hw, Write::Over),
                                (&planes[g * d.planes * d.rows..], 1, d.rows as isize),
                                (grad_g, grad_rs as isize, 1),
                                false,
                            );
                        }
                    }
                    plane.col2im_image(grad_cols, d.channels, grad_image);
                }
                partial
            },
        )
        .collect();
    let mut total = vec![0f32; partial_len + adc_len];
    for part in &partials {
        total.iter_mut().zip(part).for_each(|(t, p)| *t += p);
    }
    (grad_codes, total)
}

/// The forward partial sums [G*P, B*H'*W']: in integers where the CPU and the values allow
/// ([`vnni`], bit-identical), else by im2col and one f32 product per row tile.
fn psums_forward(codes: &[f32], planes: &[f32], d: Dims) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if let Some(out) = vnni::forward(codes, planes, d) {
        return out;
    }
    let mut out = zeros(d.groups * d.planes * d.columns());
    psums_f32(codes, planes, d, &mut out);
    out
}

/// The forward partial sums by im2col and one f32 matrix product per row tile.
fn psums_f32(codes: &[f32], planes: &[f32], d: Dims, out: &mut [f32]) {
    let n = d.columns();
    let k2 = d.geo.kernel * d.geo.kernel;
    with_columns(d.channels * k2 * n, |cols| {
        im2col(codes, d, cols);
        for g in 0..d.groups {
            matmul(
                d.planes,
                n,
                d.real_rows(g),
                (&mut out[g * d.planes * n..][..d.planes * n], n, Write::Over),
                (&planes[g * d.planes * d.rows..], d.rows as isize, 1),
                (&cols[g * d.rows * n..], n as isize, 1),
                true,
            );
        }
    });
}

impl PsumOps for Flex {
    fn cim_psums_of_weight_codes(
        codes: FlexTensor,
        weight_codes: FlexTensor,
        kernel: usize,
        stride: usize,
        padding: usize,
        weight_bits: u32,
        cell_bits: u32,
        differential: bool,
    ) -> FlexTensor {
        let sl = slicing_of(weight_bits, cell_bits, differential);
        let d = weight_code_dims(&codes, &weight_codes, &sl, ConvGeometry { kernel, stride, padding });
        let planes = digit_planes_host(&f32_slice(&weight_codes), &sl, shape3(&weight_codes));
        let out = psums_forward(&f32_slice(&codes), &planes, d);
        flex_tensor(out, vec![d.groups * d.planes, d.batch, d.ho, d.wo])
    }

    fn cim_psums_of_weight_codes_backward(
        grad: FlexTensor,
        codes: FlexTensor,
        weight_codes: FlexTensor,
        kernel: usize,
        stride: usize,
        padding: usize,
        weight_bits: u32,
        cell_bits: u32,
        differential: bool,
    ) -> (FlexTensor, FlexTensor) {
        let sl = slicing_of(weight_bits, cell_bits, differential);
        let d = weight_code_dims(&codes, &weight_codes, &sl, ConvGeometry { kernel, stride, padding });
        let (grad_codes, grad_q, _) = psums_of_weight_codes_backward(
            PsumGrad::Given(&f32_slice(&grad)),
            &codes,
            &f32_slice(&weight_codes),
            &sl,
            d,
        );
        (
            flex_tensor(grad_codes, vec![d.batch, d.channels, d.h, d.w]),
            flex_tensor(grad_q, shape3(&weight_codes).to_vec()),
        )
    }

    fn cim_psums(codes: FlexTensor, planes: FlexTensor, kernel: usize, stride: usize, padding: usize) -> FlexTensor {
        let d = Dims::new(&codes, shape3(&planes), ConvGeometry { kernel, stride, padding });
        let out = psums_forward(&f32_slice(&codes), &f32_slice(&planes), d);
        flex_tensor(out, vec![d.groups * d.planes, d.batch, d.ho, d.wo])
    }

    fn cim_psums_backward(
        grad: FlexTensor,
        codes: FlexTensor,
        planes: FlexTensor,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> (FlexTensor, FlexTensor) {
        let d = Dims::new(&codes, shape3(&planes), ConvGeometry { kernel, stride, padding });
        let (grad, planes) = (f32_slice(&grad), f32_slice(&planes));
        let hw = d.plane().out_pixels();
        // the padding word lines see zero codes: their planes' gradient stays zero
        let (grad_codes, grad_planes) = backward_by_images(
            PsumGrad::Given(&grad),
            &f32_slice(&codes),
            &planes,
            d,
            d.groups * d.planes * d.rows,
            |g, (grad_g, grad_rs), cols_g, _, partial| {
                // d/dplanes[g] += grad_g [P, H'W'] x cols_g^T [H'W', R_g]
                let rows_g = cols_g.len() / hw;
                matmul(
                    d.planes,
                    rows_g,
                    hw,
                    (&mut partial[g * d.planes * d.rows..][..d.planes * d.rows], d.rows, Write::Add),
                    (grad_g, grad_rs as isize, 1),
                    (cols_g, 1, hw as isize),
                    false,
                );
            },
        );
        (
            flex_tensor(grad_codes, vec![d.batch, d.channels, d.h, d.w]),
            flex_tensor(grad_planes, vec![d.groups, d.planes, d.rows]),
        )
    }
}

/// Sizes of a weight-code call: the planes are (polarity, slice, column) of each weight code row.
fn weight_code_dims(codes: &FlexTensor, weight_codes: &FlexTensor, sl: &BitSlicing, geo: ConvGeometry) -> Dims {
    let [groups, columns, rows] = shape3(weight_codes);
    Dims::new(codes, [groups, sl.polarities() * sl.slices() * columns, rows], geo)
}

fn shape3(t: &FlexTensor) -> [usize; 3] {
    let s = t.layout().shape();
    [s[0], s[1], s[2]]
}

/// Host digit planes of weight codes [G, C, R]: [G, P, R] with P = (polarity, slice, column),
/// the values of [`BitSlicing::digit_planes`].
fn digit_planes_host(q: &[f32], sl: &BitSlicing, [groups, columns, rows]: [usize; 3]) -> Vec<f32> {
    let range = sl.weight_range();
    let low = range.low as i64;
    // every code's digits, looked up: the codes span at most 2^(B_w+1) values
    let table: Vec<Vec<f32>> = (low..=range.high as i64)
        .map(|code| sl.digits(code).into_iter().flatten().map(|d| d as f32).collect())
        .collect();
    let digits = sl.polarities() * sl.slices();
    let mut planes = vec![0f32; groups * digits * columns * rows];
    for g in 0..groups {
        for c in 0..columns {
            for r in 0..rows {
                let code = q[(g * columns + c) * rows + r];
                // the WeightQuantizer contract: integer codes within the encoding's range
                assert!(
                    code == code.trunc() && (range.low..=range.high).contains(&code),
                    "weight code {code} is not an integer in [{}, {}] (a weight quantizer's codes must be)",
                    range.low,
                    range.high
                );
                let entry = &table[(code as i64 - low) as usize];
                for (i, &digit) in entry.iter().enumerate() {
                    planes[((g * digits + i) * columns + c) * rows + r] = digit;
                }
            }
        }
    }
    planes
}

/// [`PsumOps::cim_psums_of_weight_codes_backward`] on host slices: dL/dcodes, dL/dq and, with
/// [`PsumGrad::ThroughAdc`], the ADC channels' summed running sums (else empty).
fn psums_of_weight_codes_backward(
    source: PsumGrad,
    codes: &FlexTensor,
    q: &[f32],
    sl: &BitSlicing,
    d: Dims,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [groups, columns, rows] = [d.groups, d.planes / (sl.polarities() * sl.slices()), d.rows];
    let planes = digit_planes_host(q, sl, [groups, columns, rows]);
    let hw = d.plane().out_pixels();
    let (pol_n, s_n) = (sl.polarities(), sl.slices());
    let per_tile = pol_n * columns * rows;
    // per (polarity, column): the slices' partial-sum gradients weighted by their digit STE, so
    // that one product per polarity gives dL/dq instead of one per slice
    let fold_and_multiply =
        |g: usize, (grad_g, grad_rs): (&[f32], usize), cols_g: &[f32], folded: &mut Vec<f32>, partial: &mut [f32]| {
            folded.resize(pol_n * columns * hw, 0.0);
            for (pc, dst) in folded.chunks_exact_mut(hw).enumerate() {
                let (pol, c) = (pc / columns, pc % columns);
                for s in 0..s_n {
                    let ste = sl.digit_ste(s);
                    let src = &grad_g[((pol * s_n + s) * columns + c) * grad_rs..][..hw];
                    if s == 0 {
                        dst.iter_mut().zip(src).for_each(|(o, &v)| *o = ste * v);
                    } else {
                        dst.iter_mut().zip(src).for_each(|(o, &v)| *o += ste * v);
                    }
                }
            }
            // per polarity and column: += folded [pol*C, H'W'] x cols_g^T [H'W', R_g]
            let rows_g = cols_g.len() / hw;
            matmul(
                pol_n * columns,
                rows_g,
                hw,
                (&mut partial[g * per_tile..][..per_tile], rows, Write::Add),
                (folded, hw as isize, 1),
                (cols_g, 1, hw as isize),
                false,
            );
        };
    let (grad_codes, mut sums) =
        backward_by_images(source, &f32_slice(codes), &planes, d, groups * per_tile, fold_and_multiply);
    let adc_sums = sums.split_off(groups * per_tile);
    let per_polarity = sums;
    // dL/dq routed to the polarity holding the code (differential: w+ for q >= 0, minus w- for
    // q < 0), as the digit STE routes it
    let mut grad_q = vec![0f32; groups * columns * rows];
    for g in 0..groups {
        let tile = &per_polarity[g * per_tile..][..per_tile];
        for c in 0..columns {
            for r in 0..d.real_rows(g) {
                let at = (g * columns + c) * rows + r;
                grad_q[at] = match sl.encoding {
                    Encoding::Twos => tile[c * rows + r],
                    Encoding::Differential if q[at] >= 0.0 => tile[c * rows + r],
                    Encoding::Differential => -tile[(columns + c) * rows + r],
                };
            }
        }
    }
    (grad_codes, grad_q, adc_sums)
}

#[derive(Debug)]
struct PsumsBackward;

/// The weights' side of a partial-sum call: digit planes, or weight codes with their slicing
/// (B_w, b_c, differential).
type WeightSide = Option<(u32, u32, bool)>;

impl<B: Backend + PsumOps> Backward<B, 2> for PsumsBackward {
    type State = ([NodeId; 2], (ConvGeometry, WeightSide));

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        backward_with::<B, _, 2, 2>(ops, grads, checkpointer, |grad, [codes, weights], (geo, slicing)| {
            let (k, s, p) = (geo.kernel, geo.stride, geo.padding);
            let (gc, gw) = match slicing {
                None => B::cim_psums_backward(grad, codes, weights, k, s, p),
                Some((wb, cb, diff)) => {
                    B::cim_psums_of_weight_codes_backward(grad, codes, weights, k, s, p, wb, cb, diff)
                }
            };
            [gc, gw]
        });
    }
}

impl<B: Backend + PsumOps, C: CheckpointStrategy> PsumOps for Autodiff<B, C> {
    fn cim_psums(
        codes: AutodiffTensor<B, C>,
        planes: AutodiffTensor<B, C>,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> AutodiffTensor<B, C> {
        let geo = ConvGeometry { kernel, stride, padding };
        tracked::<B, C, _, _, 2>(PsumsBackward, [codes, planes], (geo, None), |[c, p]| {
            B::cim_psums(c, p, kernel, stride, padding)
        })
    }

    fn cim_psums_of_weight_codes(
        codes: AutodiffTensor<B, C>,
        weight_codes: AutodiffTensor<B, C>,
        kernel: usize,
        stride: usize,
        padding: usize,
        weight_bits: u32,
        cell_bits: u32,
        differential: bool,
    ) -> AutodiffTensor<B, C> {
        let geo = ConvGeometry { kernel, stride, padding };
        let slicing = Some((weight_bits, cell_bits, differential));
        tracked::<B, C, _, _, 2>(PsumsBackward, [codes, weight_codes], (geo, slicing), |[c, q]| {
            B::cim_psums_of_weight_codes(c, q, kernel, stride, padding, weight_bits, cell_bits, differential)
        })
    }

    fn cim_psums_of_weight_codes_backward(
        grad: AutodiffTensor<B, C>,
        codes: AutodiffTensor<B, C>,
        weight_codes: AutodiffTensor<B, C>,
        kernel: usize,
        stride: usize,
        padding: usize,
        weight_bits: u32,
        cell_bits: u32,
        differential: bool,
    ) -> (AutodiffTensor<B, C>, AutodiffTensor<B, C>) {
        // Second-order gradients are not needed: the result is a constant.
        let (gc, gq) = B::cim_psums_of_weight_codes_backward(
            grad.into_primitive(),
            codes.into_primitive(),
            weight_codes.into_primitive(),
            kernel,
            stride,
            padding,
            weight_bits,
            cell_bits,
            differential,
        );
        (AutodiffTensor::<B, C>::new(gc), AutodiffTensor::<B, C>::new(gq))
    }

    fn cim_psums_backward(
        grad: AutodiffTensor<B, C>,
        codes: AutodiffTensor<B, C>,
        planes: AutodiffTensor<B, C>,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> (AutodiffTensor<B, C>, AutodiffTensor<B, C>) {
        // Second-order gradients are not needed: the result is a constant.
        let (gc, gp) = B::cim_psums_backward(
            grad.into_primitive(),
            codes.into_primitive(),
            planes.into_primitive(),
            kernel,
            stride,
            padding,
        );
        (AutodiffTensor::<B, C>::new(gc), AutodiffTensor::<B, C>::new(gp))
    }
}

/// Partial sums [G*P, B, H', W'] of activation codes [B, G*n_c, H, W] and digit planes [G, P, R]:
/// the im2col + matrix-product pass on Flex, [`grouped_psums_reference`] elsewhere.
pub fn grouped_psums(codes: Tensor<4>, planes: Tensor<3>, geo: ConvGeometry) -> Tensor<4> {
    if !fused_available(&codes.device()) {
        return grouped_psums_reference(codes, planes, geo);
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as PsumOps>::cim_psums(
        codes.into_dispatch(),
        planes.into_dispatch(),
        geo.kernel,
        geo.stride,
        geo.padding,
    ))
}

/// Partial sums [G*P, B, H', W'] of activation codes [B, C_in, H, W] and integer weight codes
/// [G, C_out, R], whose digit planes `slicing` cuts ([`BitSlicing::digit_planes`], with its
/// gradient): one pass on Flex, whose backward needs one product per polarity for dL/dq instead
/// of one per slice; the digit planes and [`grouped_psums_reference`] elsewhere.
pub fn grouped_psums_of_weight_codes(
    codes: Tensor<4>,
    weight_codes: Tensor<3>,
    slicing: &BitSlicing,
    geo: ConvGeometry,
) -> Tensor<4> {
    if !fused_available(&codes.device()) {
        return grouped_psums_of_weight_codes_reference(codes, weight_codes, slicing, geo);
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as PsumOps>::cim_psums_of_weight_codes(
        codes.into_dispatch(),
        weight_codes.into_dispatch(),
        geo.kernel,
        geo.stride,
        geo.padding,
        slicing.weight_bits,
        slicing.cell_bits,
        slicing.encoding == Encoding::Differential,
    ))
}

/// The same from generic ops: [`BitSlicing::digit_planes`], then the grouped convolution.
pub fn grouped_psums_of_weight_codes_reference(
    codes: Tensor<4>,
    weight_codes: Tensor<3>,
    slicing: &BitSlicing,
    geo: ConvGeometry,
) -> Tensor<4> {
    let [groups, columns, rows] = weight_codes.dims();
    let planes = slicing.digit_planes(weight_codes);
    let p = slicing.polarities() * slicing.slices() * columns;
    grouped_psums_reference(codes, planes.reshape([groups, p, rows]), geo)
}

/// The same partial sums from burn's grouped convolution over the codes padded to G*n_c
/// channels with zeros (any backend).
pub fn grouped_psums_reference(codes: Tensor<4>, planes: Tensor<3>, geo: ConvGeometry) -> Tensor<4> {
    let [groups, p, rows] = planes.dims();
    let k = geo.kernel;
    let n_c = rows / (k * k);
    let [b, c, h, w] = codes.dims();
    let codes = match groups * n_c - c {
        0 => codes,
        missing => Tensor::cat(vec![codes.clone(), Tensor::zeros([b, missing, h, w], &codes.device())], 1),
    };
    let weights = planes.reshape([groups * p, n_c, k, k]);
    let options = ConvOptions::new([geo.stride; 2], [geo.padding; 2], [1, 1], groups);
    conv2d(codes, weights, None, options).swap_dims(0, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn flat(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// The weight-code pass against digit planes + grouped convolution (generic ops): exact
    /// partial sums, and the gradients of codes and weight codes to float tolerance, for both
    /// encodings, with and without padding word lines.
    #[test]
    fn weight_code_pass_matches_digit_planes_and_the_grouped_convolution() {
        let device = Device::flex().autodiff();
        // (k, stride, padding, groups, n_c, columns, h, missing channels, B_w, b_c, encoding)
        for (seed, (k, stride, padding, groups, n_c, columns, h, missing, wb, cb, encoding)) in [
            (3, 1, 1, 2, 3, 5, 6, 2, 4, 2, Encoding::Differential),
            (3, 1, 1, 2, 3, 5, 6, 2, 4, 2, Encoding::Twos),
            (3, 2, 1, 3, 2, 4, 7, 0, 4, 1, Encoding::Twos),
            (1, 1, 0, 2, 4, 3, 5, 1, 6, 3, Encoding::Differential),
            (3, 2, 0, 1, 4, 2, 6, 0, 8, 4, Encoding::Differential),
        ]
        .into_iter()
        .enumerate()
        {
            let geo = ConvGeometry { kernel: k, stride, padding };
            let slicing = BitSlicing::new(wb, cb, encoding).unwrap();
            let range = slicing.weight_range();
            // batches beyond one chunk of the backward, and not a multiple of it
            let batch = [2, 11, 3, 17, 9][seed];
            let codes =
                crate::test_tensor([batch, groups * n_c - missing, h, h + 1], 0.0..15.0, seed as u64, &device).round();
            let q =
                crate::test_tensor([groups, columns, n_c * k * k], range.low..range.high, seed as u64 + 50, &device)
                    .round();
            let mut results = Vec::new();
            for fused in [true, false] {
                let c = codes.clone().detach().require_grad();
                let qq = q.clone().detach().require_grad();
                let f = if fused { grouped_psums_of_weight_codes } else { grouped_psums_of_weight_codes_reference };
                let y = f(c.clone(), qq.clone(), &slicing, geo);
                let r = crate::test_tensor(y.dims(), -1.0..1.0, 99, &device);
                let grads = y.clone().mul(r).sum().backward();
                results.push((
                    flat(y),
                    flat(c.grad(&grads).unwrap()),
                    qq.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap(),
                ));
            }
            let (a, b) = (&results[0], &results[1]);
            assert_eq!(a.0, b.0, "case {seed}: integer partial sums must be exact");
            for (name, x, y) in [("d/dcodes", &a.1, &b.1), ("d/dq", &a.2, &b.2)] {
                let scale = y.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                for (i, (u, v)) in x.iter().zip(y.iter()).enumerate() {
                    assert!((u - v).abs() <= 1e-5 * scale, "case {seed} {name}[{i}]: {u} vs {v}");
                }
            }
        }
    }

    /// The integer product equals the f32 product bit for bit, and declines what it cannot do
    /// The sums over each word line's nonzero plane entries against the dense product, for
    /// planes of integers and of fractions (cell gains), pixel counts that are and are not whole
    /// blocks, gradient rows further apart than H'W', and fewer real word lines than R; and the
    /// choice between the two by the share of nonzero entries.
    #[test]
    fn sparse_transposed_product_matches_the_dense_product() {
        // (groups, planes, rows, real rows, hw, row stride, share of nonzero entries, fractional)
        for (seed, (groups, planes, rows, real_rows, hw, grad_rs, share, fractional)) in [
            (2, 16, 18, 18, 130, 130, 0.2, false),
            (1, 24, 27, 20, 64, 64, 0.7, true),
            (3, 8, 9, 9, 49, 200, 0.9, false),
            (1, 40, 36, 36, 1, 7, 0.3, true),
        ]
        .into_iter()
        .enumerate()
        {
            let seed = seed as u64 * 10;
            let pick = crate::test_values(groups * planes * rows, 0.0..1.0, seed);
            let value = crate::test_values(groups * planes * rows, -3.0..3.0, seed + 1);
            let plane_values: Vec<f32> = pick
                .iter()
                .zip(&value)
                .map(|(&u, &v)| match (u < share, fractional) {
                    (false, _) => 0.0,
                    (true, false) => v.round().max(1.0),
                    (true, true) => v,
                })
                .collect();
            let geo = ConvGeometry { kernel: 3, stride: 1, padding: 1 };
            let d = Dims { batch: 1, channels: 1, h: 1, w: 1, groups, planes, rows, ho: 1, wo: 1, geo };
            let entries = WordLineEntries::new(&plane_values, d);
            assert_eq!(entries.pays(d), share < 0.5, "case {seed}: the sparse sums chosen by the share");
            let grad = crate::test_values(planes * grad_rs, -1.0..1.0, seed + 2);
            for g in 0..groups {
                let mut sparse = vec![f32::NAN; real_rows * hw];
                entries.transposed_product(g, real_rows, &mut sparse, hw, &grad, grad_rs, &mut Vec::new());
                let mut dense = vec![0f32; real_rows * hw];
                matmul(
                    real_rows,
                    hw,
                    planes,
                    (&mut dense, hw, Write::Over),
                    (&plane_values[g * planes * rows..], 1, rows as isize),
                    (&grad, grad_rs as isize, 1),
                    false,
                );
                crate::assert_close(&sparse, &dense, 1e-5, 1e-5, &format!("case {seed} tile {g}"));
            }
        }
    }

    /// exactly (fractional planes, codes beyond a byte).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn integer_products_equal_the_f32_products() {
        use rand::{RngExt, SeedableRng};
        if !vnni::available() {
            eprintln!("no AVX-512 VNNI on this CPU: the integer path is not used here");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // (k, stride, padding, groups, n_c, planes, h, w, missing channels, batch, code max, digit range)
        for (k, stride, padding, groups, n_c, planes, h, w, missing, batch, code_max, digits) in [
            (3, 1, 1, 2, 14, 64, 9, 7, 12, 3, 15, -2..=3),
            (3, 2, 1, 3, 14, 130, 8, 8, 0, 2, 15, 0..=3),
            (1, 2, 0, 2, 128, 32, 7, 5, 28, 2, 255, -128..=127),
            (3, 1, 0, 1, 5, 17, 6, 6, 1, 1, 255, -8..=7),
            (5, 1, 2, 2, 3, 40, 5, 6, 0, 2, 3, 0..=15),
        ] {
            let geo = ConvGeometry { kernel: k, stride, padding };
            let channels = groups * n_c - missing;
            let codes: Vec<f32> =
                (0..batch * channels * h * w).map(|_| rng.random_range(0..=code_max) as f32).collect();
            let plane_values: Vec<f32> =
                (0..groups * planes * n_c * k * k).map(|_| rng.random_range(digits.clone()) as f32).collect();
            let d = Dims {
                batch,
                channels,
                h,
                w,
                groups,
                planes,
                rows: n_c * k * k,
                ho: geo.out_size(h),
                wo: geo.out_size(w),
                geo,
            };
            let mut exact = vec![f32::NAN; groups * planes * d.columns()];
            psums_f32(&codes, &plane_values, d, &mut exact);
            let int = vnni::forward(&codes, &plane_values, d);
            assert_eq!(int, Some(exact), "k {k} stride {stride} n_c {n_c} planes {planes}");
            let mut fractional = plane_values.clone();
            fractional[1] = 0.5;
            assert!(vnni::forward(&codes, &fractional, d).is_none());
            let mut large = codes.clone();
            large[0] = 256.0;
            assert!(vnni::forward(&large, &plane_values, d).is_none());
        }
    }

    #[test]
    fn matches_the_grouped_convolution_forward_and_backward() {
        let device = Device::flex().autodiff();
        // the last tuple entry: input channels missing from the last row tile (padding rows)
        for (seed, (k, stride, padding, groups, n_c, p, h, missing)) in [
            (3, 1, 1, 3, 2, 5, 6, 0),
            (3, 2, 1, 2, 1, 4, 7, 0),
            (1, 2, 0, 4, 3, 3, 5, 0),
            (3, 2, 0, 1, 4, 2, 6, 0),
            (3, 1, 1, 2, 3, 4, 6, 2),
            (3, 2, 1, 3, 4, 3, 7, 1),
            (1, 1, 0, 2, 5, 2, 4, 3),
        ]
        .into_iter()
        .enumerate()
        {
            let geo = ConvGeometry { kernel: k, stride, padding };
            let channels = groups * n_c - missing;
            let batch = [2, 11, 17][seed % 3];
            let codes = crate::test_tensor([batch, channels, h, h + 1], 0.0..7.0, seed as u64, &device).round();
            let planes = crate::test_tensor([groups, p, n_c * k * k], -2.0..4.0, seed as u64 + 50, &device).round();
            let mut results = Vec::new();
            for fused in [true, false] {
                let c = codes.clone().detach().require_grad();
                let pl = planes.clone().detach().require_grad();
                let f = if fused { grouped_psums } else { grouped_psums_reference };
                let y = f(c.clone(), pl.clone(), geo);
                let r = crate::test_tensor(y.dims(), 0.0..1.0, 99, &device);
                let grads = y.clone().mul(r).sum().backward();
                results.push((
                    flat(y),
                    flat(c.grad(&grads).unwrap()),
                    pl.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap(),
                ));
            }
            let (a, b) = (&results[0], &results[1]);
            assert_eq!(a.0, b.0, "integer partial sums must be exact");
            for (name, x, y) in [("d/dcodes", &a.1, &b.1), ("d/dplanes", &a.2, &b.2)] {
                let scale = y.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                for (i, (u, v)) in x.iter().zip(y.iter()).enumerate() {
                    assert!((u - v).abs() <= 1e-5 * scale, "{name}[{i}]: {u} vs {v}");
                }
            }
        }
    }

    /// The backward sums the weights' gradient over chunks of images in chunk order: the same
    /// bits whatever the rayon pool's size.
    #[test]
    fn the_backward_does_not_depend_on_the_thread_count() {
        let sl = BitSlicing::new(4, 2, Encoding::Differential).unwrap();
        let (batch, channels, h, groups, columns, n_c) = (19, 5, 6, 2, 3, 3);
        let codes =
            flex_tensor(crate::test_values(batch * channels * h * h, 0.0..15.0, 1), vec![batch, channels, h, h]);
        let q: Vec<f32> =
            crate::test_values(groups * columns * n_c * 9, -7.0..7.0, 2).iter().map(|v| v.round()).collect();
        let geo = ConvGeometry { kernel: 3, stride: 1, padding: 1 };
        let d = weight_code_dims(&codes, &flex_tensor(q.clone(), vec![groups, columns, n_c * 9]), &sl, geo);
        let grad = crate::test_values(d.groups * d.planes * d.columns(), -1.0..1.0, 3);
        // the same through an ADC pass (its channels' sums are summed by chunks too)
        let (k, hw) = (d.groups * d.planes, d.ho * d.wo);
        let gy = crate::test_values(batch * columns * hw, -1.0..1.0, 4);
        let p: Vec<f32> = crate::test_values(k * batch * hw, -10.0..40.0, 5).iter().map(|v| v.round()).collect();
        let (step, offset, coef) = (
            crate::test_values(k, 0.8..6.0, 6),
            crate::test_values(k, -5.0..5.0, 7),
            crate::test_values(k, -2.0..2.0, 8),
        );
        let (low, high) = (vec![0f32; k], vec![7f32; k]);
        let adc = AdcImageBackward::new(
            &gy,
            crate::adc::PsumValues::F32(&p),
            [&step, &offset, &coef, &low, &high],
            columns,
            batch,
            hw,
        );
        for source in [PsumGrad::Given(&grad), PsumGrad::ThroughAdc(&adc)] {
            let run = |threads| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| psums_of_weight_codes_backward(source, &codes, &q, &sl, d))
            };
            assert_eq!(run(1), run(3));
        }
    }
}
