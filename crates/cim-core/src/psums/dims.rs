//! The sizes of one partial-sum call, read off its tensors: what every kernel of this module
//! (the f32 path, the word-line-sparse path, the integer paths) takes. A leaf of `psums`.

use burn::backend::flex::FlexTensor;
use flex_kernels::im2col::{ConvGeometry, PlaneShape};

/// Sizes of one call, read off the tensors.
#[derive(Clone, Copy)]
pub(super) struct Dims {
    pub(super) batch: usize,
    pub(super) channels: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) groups: usize,
    pub(super) planes: usize,
    pub(super) rows: usize,
    pub(super) ho: usize,
    pub(super) wo: usize,
    pub(super) geo: ConvGeometry,
}

impl Dims {
    /// Sizes of codes [B, C, H, W] against `groups` row tiles of `planes` planes of `rows`
    /// word lines.
    pub(super) fn new(codes: &FlexTensor, [groups, planes, rows]: [usize; 3], geo: ConvGeometry) -> Self {
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
    pub(super) fn plane(&self) -> PlaneShape {
        PlaneShape::new(self.h, self.w, self.geo)
    }

    /// Output pixels of all images: the columns of the im2col matrix.
    pub(super) fn columns(&self) -> usize {
        self.batch * self.ho * self.wo
    }

    /// The word lines of row tile `g` that carry a real input channel (the rest are padding).
    pub(super) fn real_rows(&self, g: usize) -> usize {
        let k2 = self.geo.kernel * self.geo.kernel;
        let n_c = self.rows / k2;
        self.channels.saturating_sub(g * n_c).min(n_c) * k2
    }
}
