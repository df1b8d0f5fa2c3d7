//! Convolution as matrix products on host slices, shared by the floating-point convolution
//! ([`crate::float_conv`]) and the CIM partial-sum pass (`cim_core::psums`): the geometry, one im2col row and its
//! adjoint (col2im), and the matrix product.

use std::ops::Range;

/// Square-kernel convolution geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// k.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding.
    pub padding: usize,
}

impl ConvGeometry {
    /// Output size along one axis of input `size`.
    pub fn out_size(&self, size: usize) -> usize {
        (size + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// The output positions `o` whose input coordinate `o * stride + offset - padding` lies in
    /// [0, size): a contiguous range, so the loops below need no per-pixel bounds checks.
    pub fn valid_outputs(&self, out_size: usize, size: usize, offset: usize) -> Range<usize> {
        let (s, p) = (self.stride as isize, self.padding as isize);
        let shift = offset as isize - p; // input = o * s + shift
        let lo = if shift >= 0 { 0 } else { (-shift + s - 1) / s };
        let hi = ((size as isize - 1 - shift).div_euclid(s) + 1).clamp(0, out_size as isize);
        (lo.min(hi) as usize)..(hi as usize)
    }
}

/// One input plane [H, W] against its output plane [H', W'].
#[derive(Debug, Clone, Copy)]
pub struct PlaneShape {
    /// Input height H.
    pub h: usize,
    /// Input width W.
    pub w: usize,
    /// Output height H'.
    pub ho: usize,
    /// Output width W'.
    pub wo: usize,
    /// Kernel, stride and padding.
    pub geo: ConvGeometry,
}

impl PlaneShape {
    /// An input plane of `h` x `w` pixels under `geo`.
    pub fn new(h: usize, w: usize, geo: ConvGeometry) -> Self {
        Self { h, w, ho: geo.out_size(h), wo: geo.out_size(w), geo }
    }

    /// Output pixels of one plane.
    pub fn out_pixels(&self) -> usize {
        self.ho * self.wo
    }

    /// One im2col row: the values of `plane` [H, W] that kernel tap (kh, kw) meets at every output
    /// pixel, into `out` [H' * W'] (zeros where it meets the padding); every entry is written.
    pub fn im2col_row(&self, plane: &[f32], kh: usize, kw: usize, out: &mut [f32]) {
        let (stride, pad) = (self.geo.stride, self.geo.padding);
        let rows = self.geo.valid_outputs(self.ho, self.h, kh);
        let xs = self.geo.valid_outputs(self.wo, self.w, kw);
        for (oy, o_row) in out[..self.out_pixels()].chunks_exact_mut(self.wo).enumerate() {
            if !rows.contains(&oy) {
                o_row.fill(0.0);
                continue;
            }
            let src = &plane[(oy * stride + kh - pad) * self.w..][..self.w];
            o_row[..xs.start].fill(0.0);
            o_row[xs.end..].fill(0.0);
            let x0 = xs.start * stride + kw - pad;
            if stride == 1 {
                o_row[xs.clone()].copy_from_slice(&src[x0..x0 + xs.len()]);
            } else {
                for (i, o) in o_row[xs.clone()].iter_mut().enumerate() {
                    *o = src[x0 + i * stride];
                }
            }
        }
    }

    /// The adjoint of [`Self::im2col_row`]: adds every entry of `src` [H' * W'] onto the pixel of
    /// `plane` [H, W] it was read from.
    pub fn col2im_row(&self, src: &[f32], kh: usize, kw: usize, plane: &mut [f32]) {
        let (stride, pad) = (self.geo.stride, self.geo.padding);
        let xs = self.geo.valid_outputs(self.wo, self.w, kw);
        let x0 = xs.start * stride + kw - pad;
        for oy in self.geo.valid_outputs(self.ho, self.h, kh) {
            let dst = &mut plane[(oy * stride + kh - pad) * self.w..][..self.w];
            let s_row = &src[oy * self.wo..][xs.clone()];
            if stride == 1 {
                for (o, v) in dst[x0..x0 + xs.len()].iter_mut().zip(s_row) {
                    *o += v;
                }
            } else {
                for (i, v) in s_row.iter().enumerate() {
                    dst[x0 + i * stride] += v;
                }
            }
        }
    }

    /// im2col of one image [C, H, W] into `cols` [C * k * k, H' * W'] (rows (channel, kh, kw)).
    pub fn im2col_image(&self, image: &[f32], channels: usize, cols: &mut [f32]) {
        let (k, n) = (self.geo.kernel, self.out_pixels());
        for (row, out) in cols[..channels * k * k * n].chunks_exact_mut(n).enumerate() {
            let (c, kh, kw) = (row / (k * k), row / k % k, row % k);
            self.im2col_row(&image[c * self.h * self.w..][..self.h * self.w], kh, kw, out);
        }
    }

    /// col2im of one image: adds `cols` [C * k * k, H' * W'] onto `image` [C, H, W].
    pub fn col2im_image(&self, cols: &[f32], channels: usize, image: &mut [f32]) {
        let (k, n) = (self.geo.kernel, self.out_pixels());
        for (row, src) in cols[..channels * k * k * n].chunks_exact(n).enumerate() {
            let (c, kh, kw) = (row / (k * k), row / k % k, row % k);
            self.col2im_row(src, kh, kw, &mut image[c * self.h * self.w..][..self.h * self.w]);
        }
    }
}

/// Whether a product overwrites its destination or adds to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// The destination takes the product.
    Over,
    /// The product is added to the destination.
    Add,
}

/// dst[m, n] (=|+=) lhs[m, k] * rhs[k, n], each operand given by (slice, row stride, column stride);
/// dst is row-major with row stride `dst_rs` (>= n). `threads` splits the product over rayon;
/// the sums run in the same order either way.
pub fn matmul(
    m: usize,
    n: usize,
    k: usize,
    (dst, dst_rs, write): (&mut [f32], usize, Write),
    lhs: (&[f32], isize, isize),
    rhs: (&[f32], isize, isize),
    threads: bool,
) {
    // SAFETY: a slice of initialized f32 is a valid destination whether it is read or not.
    unsafe { product(m, n, k, (dst.as_mut_ptr(), dst.len(), dst_rs, write), lhs, rhs, threads) }
}

/// [`matmul`] with [`Write::Over`] into memory not yet written: every one of the m rows of n
/// values at row stride `dst_rs` is written (and nothing between them), so an output made only
/// of such products needs no zeroing first.
pub fn matmul_into(
    m: usize,
    n: usize,
    k: usize,
    (dst, dst_rs): (&mut [std::mem::MaybeUninit<f32>], usize),
    lhs: (&[f32], isize, isize),
    rhs: (&[f32], isize, isize),
    threads: bool,
) {
    // SAFETY: with Write::Over the product never reads its destination (gemm's read_dst = false).
    unsafe { product(m, n, k, (dst.as_mut_ptr().cast(), dst.len(), dst_rs, Write::Over), lhs, rhs, threads) }
}

/// # Safety
/// `dst` points to `dst_len` f32 slots, initialized unless `write` is [`Write::Over`].
unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    (dst, dst_len, dst_rs, write): (*mut f32, usize, usize, Write),
    (lhs, lhs_rs, lhs_cs): (&[f32], isize, isize),
    (rhs, rhs_rs, rhs_cs): (&[f32], isize, isize),
    threads: bool,
) {
    assert!(dst_rs >= n && dst_len >= (m.max(1) - 1) * dst_rs + n);
    let reach = |rs: isize, cs: isize, r: usize, c: usize| {
        (r.max(1) - 1) * rs.unsigned_abs() + (c.max(1) - 1) * cs.unsigned_abs() + 1
    };
    assert!(lhs.len() >= reach(lhs_rs, lhs_cs, m, k) && rhs.len() >= reach(rhs_rs, rhs_cs, k, n));
    let parallelism = if threads { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    let (read_dst, alpha) = match write {
        Write::Over => (false, 0.0),
        Write::Add => (true, 1.0),
    };
    // SAFETY: every index the (non-negative) strides reach lies inside the slices, checked above;
    // gemm reads dst only with read_dst, where the caller vouches that it is initialized.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            read_dst,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            alpha,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_output_ranges() {
        let geo = |stride, padding| ConvGeometry { kernel: 3, stride, padding };
        assert_eq!(geo(1, 1).valid_outputs(8, 8, 0), 1..8);
        assert_eq!(geo(1, 1).valid_outputs(8, 8, 1), 0..8);
        assert_eq!(geo(1, 1).valid_outputs(8, 8, 2), 0..7);
        assert_eq!(geo(2, 1).valid_outputs(4, 8, 0), 1..4);
        assert_eq!(geo(2, 1).valid_outputs(4, 8, 2), 0..4);
        assert_eq!(geo(2, 0).valid_outputs(3, 7, 2), 0..3);
        assert!(geo(1, 1).valid_outputs(1, 1, 0).is_empty());
    }

    /// col2im is the adjoint of im2col: <im2col(x), y> = <x, col2im(y)> for every geometry.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        for (k, stride, padding, h, w) in [(3, 1, 1, 5, 6), (3, 2, 1, 7, 6), (1, 2, 0, 5, 5), (3, 2, 0, 7, 7)] {
            let s = PlaneShape::new(h, w, ConvGeometry { kernel: k, stride, padding });
            let x: Vec<f32> = (0..h * w).map(|i| (i % 7) as f32 - 3.0).collect();
            let y: Vec<f32> = (0..s.out_pixels()).map(|i| (i % 5) as f32 - 2.0).collect();
            for (kh, kw) in (0..k).flat_map(|a| (0..k).map(move |b| (a, b))) {
                let mut col = vec![f32::NAN; s.out_pixels()];
                s.im2col_row(&x, kh, kw, &mut col);
                let mut back = vec![0f32; h * w];
                s.col2im_row(&y, kh, kw, &mut back);
                let lhs: f32 = col.iter().zip(&y).map(|(a, b)| a * b).sum();
                let rhs: f32 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
                assert_eq!(lhs, rhs, "k {k} stride {stride} pad {padding} tap ({kh}, {kw})");
            }
        }
    }
}
