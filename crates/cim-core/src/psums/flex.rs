//! The partial-sum pass on Flex: im2col and one matrix product per row tile forward (in integers
//! where the CPU has AVX-512 VNNI or AVX2, [`super::int8`]), and a backward that runs image by
//! image so that each image's im2col and its gradient stay in the cache.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::dims::Dims;
use super::int8;
use super::sparse::{StridedRows, WordLineEntries};
use super::{PsumOps, WeightCodePass};
use crate::adc::{AdcImageBackward, CHANNEL_SUMS};
use crate::settings::Encoding;
use crate::slicing::BitSlicing;
use flex_kernels::host::{f32_slice, flex_tensor, zeros};
use flex_kernels::im2col::{ConvGeometry, Write, matmul};

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
pub(super) const IMAGES_PER_CHUNK: usize = 8;

/// Where a partial-sum backward takes dL/dpsums from.
#[derive(Clone, Copy)]
pub(super) enum PsumGrad<'a> {
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
pub(super) fn backward_by_images(
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
                            entries.transposed_product(
                                g,
                                rows_g,
                                grad_cols_g,
                                hw,
                                StridedRows { values: grad_g, stride: grad_rs },
                                block,
                            );
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
    (grad_codes, sum_in_order(&partials, partial_len + adc_len))
}

/// The element-wise sum of `len`-long `parts`, added in their order (the same bits on every run,
/// whatever the threads did).
fn sum_in_order(parts: &[Vec<f32>], len: usize) -> Vec<f32> {
    let mut total = vec![0f32; len];
    for part in parts {
        total.iter_mut().zip(part).for_each(|(t, p)| *t += p);
    }
    total
}

/// The forward partial sums [G*P, B*H'*W']: in integers where the CPU and the values allow
/// ([`int8`], bit-identical), else by im2col and one f32 product per row tile.
pub(super) fn psums_forward(codes: &[f32], planes: &[f32], d: Dims) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if let Some(out) = int8::forward(codes, planes, d) {
        return out;
    }
    let mut out = zeros(d.groups * d.planes * d.columns());
    psums_f32(codes, planes, d, &mut out);
    out
}

/// The forward partial sums by im2col and one f32 matrix product per row tile.
pub(super) fn psums_f32(codes: &[f32], planes: &[f32], d: Dims, out: &mut [f32]) {
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
    fn cim_psums_of_weight_codes(codes: FlexTensor, weight_codes: FlexTensor, pass: WeightCodePass) -> FlexTensor {
        let sl = pass.slicing;
        let d = weight_code_dims(&codes, &weight_codes, &sl, pass.geo);
        let planes = digit_planes_host(&f32_slice(&weight_codes), &sl, shape3(&weight_codes));
        let out = psums_forward(&f32_slice(&codes), &planes, d);
        flex_tensor(out, vec![d.groups * d.planes, d.batch, d.ho, d.wo])
    }

    fn cim_psums_of_weight_codes_backward(
        grad: FlexTensor,
        codes: FlexTensor,
        weight_codes: FlexTensor,
        pass: WeightCodePass,
    ) -> (FlexTensor, FlexTensor) {
        let sl = pass.slicing;
        let d = weight_code_dims(&codes, &weight_codes, &sl, pass.geo);
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

    fn cim_psums(codes: FlexTensor, planes: FlexTensor, geo: ConvGeometry) -> FlexTensor {
        let d = Dims::new(&codes, shape3(&planes), geo);
        let out = psums_forward(&f32_slice(&codes), &f32_slice(&planes), d);
        flex_tensor(out, vec![d.groups * d.planes, d.batch, d.ho, d.wo])
    }

    fn cim_psums_backward(
        grad: FlexTensor,
        codes: FlexTensor,
        planes: FlexTensor,
        geo: ConvGeometry,
    ) -> (FlexTensor, FlexTensor) {
        let d = Dims::new(&codes, shape3(&planes), geo);
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
pub(super) fn weight_code_dims(
    codes: &FlexTensor,
    weight_codes: &FlexTensor,
    sl: &BitSlicing,
    geo: ConvGeometry,
) -> Dims {
    let [groups, columns, rows] = shape3(weight_codes);
    Dims::new(codes, [groups, sl.polarities() * sl.slices() * columns, rows], geo)
}

pub(super) fn shape3(t: &FlexTensor) -> [usize; 3] {
    let s = t.layout().shape();
    [s[0], s[1], s[2]]
}

/// Host digit planes of weight codes [G, C, R]: [G, P, R] with P = (polarity, slice, column),
/// the values of [`BitSlicing::digit_planes`].
pub(super) fn digit_planes_host(q: &[f32], sl: &BitSlicing, [groups, columns, rows]: [usize; 3]) -> Vec<f32> {
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
pub(super) fn psums_of_weight_codes_backward(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The integer product equals the f32 product bit for bit on every integer path this CPU
    /// runs, and declines what it cannot do exactly (fractional planes, codes beyond a byte).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn integer_products_equal_the_f32_products() {
        use super::super::{PsumPath, with_psum_path};
        for path in [PsumPath::Vnni512, PsumPath::Avx2] {
            if !path.supported() {
                eprintln!("this CPU cannot run the {} path: not tested here", path.name());
                continue;
            }
            with_psum_path(path, || integer_products_on_the_current_path(path)).unwrap();
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn integer_products_on_the_current_path(path: super::super::PsumPath) {
        use rand::{RngExt, SeedableRng};
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
            let int = int8::forward(&codes, &plane_values, d);
            // AVX2 adds byte products in pairs in 16 bits: wide digits and codes are declined
            let pairs_fit = 2 * code_max * digits.clone().map(i32::abs).max().unwrap() <= i16::MAX as i32;
            if path == super::super::PsumPath::Avx2 && !pairs_fit {
                assert_eq!(int, None, "{}: k {k} n_c {n_c}", path.name());
                continue;
            }
            assert_eq!(int, Some(exact), "{}: k {k} stride {stride} n_c {n_c} planes {planes}", path.name());
            let mut fractional = plane_values.clone();
            fractional[1] = 0.5;
            assert!(int8::forward(&codes, &fractional, d).is_none());
            let mut large = codes.clone();
            large[0] = 256.0;
            assert!(int8::forward(&large, &plane_values, d).is_none());
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
