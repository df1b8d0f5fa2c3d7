//! The backward's dL/dcols = planes^T x dL/dpsums over each word line's nonzero digits, which
//! replaces the dense product where most plane entries are zero.

use super::dims::Dims;
use flex_kernels::with_best_simd;

/// Rows of a matrix in a slice: row r starts at `values[r * stride]`.
#[derive(Clone, Copy)]
pub(super) struct StridedRows<'a> {
    pub(super) values: &'a [f32],
    pub(super) stride: usize,
}

/// The nonzero entries of the planes [G, P, R] by word line: (plane, value) in plane order.
///
/// Digit planes are mostly zero: a differential code has digits on one polarity only, and with
/// the bell-shaped weight distribution the high slices' digits are mostly 0 (about 20% of a
/// W4 c2 differential layer's entries are nonzero). Summed over each word line's nonzero
/// digits, the backward's dL/dcols = planes^T x dL/dpsums then costs a fraction of the dense
/// product's multiply-adds.
pub(super) struct WordLineEntries {
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
    pub(super) fn new(planes: &[f32], d: Dims) -> Self {
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
    pub(super) fn pays(&self, d: Dims) -> bool {
        (self.values.len() as f64) < SPARSE_BELOW * (d.groups * d.planes * d.rows) as f64
    }

    /// out [rows, HW] = planes[g]^T [rows, P] x grad [P, HW] over the nonzero entries; every
    /// entry of `out` is written. Each word line's sums run in plane order, as the entries are
    /// stored. `block` is scratch.
    pub(super) fn transposed_product(
        &self,
        g: usize,
        rows: usize,
        out: &mut [f32],
        hw: usize,
        grad: StridedRows,
        block: &mut Vec<f32>,
    ) {
        block.resize(self.planes_per_tile * PIXEL_BLOCK, 0.0);
        let this = self;
        with_best_simd!((this: &WordLineEntries, g: usize, rows: usize, out: &mut [f32], hw: usize, grad: StridedRows, block: &mut [f32]) -> () {
            let StridedRows { values: grad, stride: grad_rs } = grad;
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

#[cfg(test)]
mod tests {
    use super::*;
    use flex_kernels::im2col::{ConvGeometry, Write, matmul};

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
                entries.transposed_product(
                    g,
                    real_rows,
                    &mut sparse,
                    hw,
                    StridedRows { values: &grad, stride: grad_rs },
                    &mut Vec::new(),
                );
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
                crate::assert_close(&format!("case {seed} tile {g}"), &sparse, &dense, 1e-5, 1e-5);
            }
        }
    }
}
