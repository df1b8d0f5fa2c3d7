//! Mapping a conv weight onto N x N arrays (docs/SPEC.md section 1, "Mapping" and "Tiling").
//!
//! The weight W[C_out, C_in, k, k] is a matrix of C_in*k*k word lines (ordered channel, kh, kw) by
//! C_out bit lines. Row tiles hold whole input channels; column tiles hold at most N output
//! channels. Each bit slice (and polarity) sits on its own arrays.

use std::ops::Range;

use serde::Serialize;

use crate::settings::{AdcWindow, CimConfigError, Granularity};
use crate::slicing::BitSlicing;

/// How one conv layer is cut into arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tiling {
    /// C_in.
    pub in_channels: usize,
    /// C_out.
    pub out_channels: usize,
    /// k.
    pub kernel_size: usize,
    /// N.
    pub array_size: usize,
    /// n_c = min(C_in, floor(N / k^2)): whole input channels per array.
    pub channels_per_array: usize,
    /// G = ceil(C_in / n_c).
    pub row_tiles: usize,
    /// T = ceil(C_out / N).
    pub col_tiles: usize,
}

impl Tiling {
    /// Tiles a layer; N < k^2 is an error (an array must hold one whole channel).
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        array_size: usize,
    ) -> Result<Self, CimConfigError> {
        let rows = kernel_size * kernel_size;
        if array_size < rows {
            return Err(CimConfigError::ArrayTooSmall { array_size, rows });
        }
        if in_channels == 0 || out_channels == 0 {
            return Err(CimConfigError::Zero { what: if in_channels == 0 { "in_channels" } else { "out_channels" } });
        }
        let channels_per_array = in_channels.min(array_size / rows);
        Ok(Self {
            in_channels,
            out_channels,
            kernel_size,
            array_size,
            channels_per_array,
            row_tiles: in_channels.div_ceil(channels_per_array),
            col_tiles: out_channels.div_ceil(array_size),
        })
    }

    /// Input channels held by row tile `g`: [g*n_c, min((g+1)*n_c, C_in)).
    pub fn row_tile_channels(&self, g: usize) -> Range<usize> {
        let start = g * self.channels_per_array;
        start..(start + self.channels_per_array).min(self.in_channels)
    }

    /// Word lines used in row tile `g` (its channels times k^2).
    pub fn row_tile_rows(&self, g: usize) -> usize {
        self.row_tile_channels(g).len() * self.kernel_size * self.kernel_size
    }

    /// Word lines of the widest row tile: n_c * k^2 (the per-group depth of the fast path).
    pub fn rows_per_tile(&self) -> usize {
        self.channels_per_array * self.kernel_size * self.kernel_size
    }

    /// Output channels held by column tile `t`.
    pub fn col_tile_columns(&self, t: usize) -> Range<usize> {
        let start = t * self.array_size;
        start..(start + self.array_size).min(self.out_channels)
    }

    /// The column tile of output channel `c`.
    pub fn col_tile_of(&self, c: usize) -> usize {
        c / self.array_size
    }

    /// Input channels after padding to whole row tiles: G * n_c.
    pub fn padded_in_channels(&self) -> usize {
        self.row_tiles * self.channels_per_array
    }

    /// Number of steps a granularity defines over the (row tile, column) grid.
    pub fn scale_groups(&self, granularity: Granularity) -> usize {
        match granularity {
            Granularity::Layer => 1,
            Granularity::Array => self.row_tiles * self.col_tiles,
            Granularity::Column => self.row_tiles * self.out_channels,
        }
    }

    /// The step that column `c` of row tile `g` uses, in row-major order of [`Self::scale_shape`].
    pub fn scale_group(&self, granularity: Granularity, g: usize, c: usize) -> usize {
        match granularity {
            Granularity::Layer => 0,
            Granularity::Array => g * self.col_tiles + self.col_tile_of(c),
            Granularity::Column => g * self.out_channels + c,
        }
    }

    /// Shape of one slice's steps: layer [1], array [G, T], column [G, C_out].
    pub fn scale_shape(&self, granularity: Granularity) -> Vec<usize> {
        match granularity {
            Granularity::Layer => vec![1],
            Granularity::Array => vec![self.row_tiles, self.col_tiles],
            Granularity::Column => vec![self.row_tiles, self.out_channels],
        }
    }

    /// For every step of `granularity`: how many (row tile, column) pairs share it, and how many
    /// word lines they hold in total.
    pub fn scale_group_members(&self, granularity: Granularity) -> Vec<GroupMembers> {
        let mut members = vec![GroupMembers::default(); self.scale_groups(granularity)];
        for g in 0..self.row_tiles {
            for c in 0..self.out_channels {
                let m = &mut members[self.scale_group(granularity, g, c)];
                m.columns += 1;
                m.weights += self.row_tile_rows(g);
            }
        }
        members
    }

    /// Hardware counts of this layer for a given bit slicing, weight granularity and ADC
    /// (granularity and window; `None` for an ideal ADC).
    pub fn counts(
        &self,
        slicing: &BitSlicing,
        weight_granularity: Granularity,
        adc: Option<(Granularity, AdcWindow)>,
    ) -> LayerCounts {
        let planes = slicing.polarities() * slicing.slices();
        let columns_in_use = self.row_tiles * self.out_channels;
        let groups_of = |g: Granularity| match g {
            Granularity::Layer => 1,
            Granularity::Array => self.row_tiles * self.col_tiles,
            Granularity::Column => columns_in_use,
        };
        // Per output value: one multiply for every distinct step product that reaches it (codes
        // that share both steps are added as integers first).
        let per_output = |g: Granularity| if g == Granularity::Layer { 1 } else { self.row_tiles };
        let (dequant_multipliers, dequant_multiplies_per_pixel, psum_scales) = match adc.map(|(g, _)| g) {
            // exact codes of all slices and polarities can be shift-added and subtracted before
            // the one multiplication by s_w / (2^A - 1)
            None => (groups_of(weight_granularity), per_output(weight_granularity) * self.out_channels, 0),
            Some(p) => {
                // a multiplier wherever s_w * s_p can change: the union of both keys
                let key = match (weight_granularity, p) {
                    (Granularity::Layer, Granularity::Layer) => Granularity::Layer,
                    (Granularity::Column, _) | (_, Granularity::Column) => Granularity::Column,
                    _ => Granularity::Array,
                };
                (planes * groups_of(key), planes * per_output(key) * self.out_channels, planes * self.scale_groups(p))
            }
        };
        // a learned window adds its constant s_w * z (per multiplier) with one digital add
        let learned = adc.is_some_and(|(_, w)| w.is_learned());
        LayerCounts {
            window_constants: if learned { dequant_multipliers } else { 0 },
            window_adds_per_pixel: if learned { dequant_multiplies_per_pixel } else { 0 },
            arrays: planes * self.row_tiles * self.col_tiles,
            adc_conversions_per_pixel: planes * columns_in_use,
            dequant_multipliers,
            dequant_multiplies_per_pixel,
            weight_scales: self.scale_groups(weight_granularity),
            psum_scales,
        }
    }
}

/// Who shares one step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupMembers {
    /// (row tile, column) pairs.
    pub columns: usize,
    /// Weights (word lines summed over those columns).
    pub weights: usize,
}

/// What one CIM layer costs in hardware (per polarity and slice included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LayerCounts {
    /// N x N arrays: polarities x S x G x T.
    pub arrays: usize,
    /// ADC conversions per output pixel (one per used bit line): polarities x S x G x C_out.
    pub adc_conversions_per_pixel: usize,
    /// Distinct dequantization constants s_w * s_p / (2^A - 1).
    pub dequant_multipliers: usize,
    /// Multiplications by such constants per output pixel (all output channels).
    pub dequant_multiplies_per_pixel: usize,
    /// Weight steps (s_w).
    pub weight_scales: usize,
    /// Partial-sum steps (s_p), all slices and polarities.
    pub psum_scales: usize,
    /// Distinct window constants s_w * z / (2^A - 1) (learned windows only).
    pub window_constants: usize,
    /// Digital adds of those constants per output pixel (all output channels).
    pub window_adds_per_pixel: usize,
}

impl std::ops::Add for LayerCounts {
    type Output = LayerCounts;
    fn add(self, o: LayerCounts) -> LayerCounts {
        LayerCounts {
            arrays: self.arrays + o.arrays,
            adc_conversions_per_pixel: self.adc_conversions_per_pixel + o.adc_conversions_per_pixel,
            dequant_multipliers: self.dequant_multipliers + o.dequant_multipliers,
            dequant_multiplies_per_pixel: self.dequant_multiplies_per_pixel + o.dequant_multiplies_per_pixel,
            weight_scales: self.weight_scales + o.weight_scales,
            psum_scales: self.psum_scales + o.psum_scales,
            window_constants: self.window_constants + o.window_constants,
            window_adds_per_pixel: self.window_adds_per_pixel + o.window_adds_per_pixel,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Encoding;

    #[test]
    fn resnet20_stage3_on_128_arrays() {
        let t = Tiling::new(64, 64, 3, 128).unwrap();
        assert_eq!(t.channels_per_array, 14);
        assert_eq!(t.row_tiles, 5);
        assert_eq!(t.col_tiles, 1);
        assert_eq!(t.row_tile_channels(4), 56..64);
        assert_eq!(t.row_tile_rows(4), 72);
        assert_eq!(t.padded_in_channels(), 70);
    }

    #[test]
    fn column_tiles_past_n() {
        let t = Tiling::new(3, 10, 1, 4).unwrap();
        assert_eq!(t.channels_per_array, 3);
        assert_eq!(t.row_tiles, 1);
        assert_eq!(t.col_tiles, 3);
        assert_eq!(t.col_tile_columns(2), 8..10);
        assert_eq!(t.scale_group(Granularity::Array, 0, 9), 2);
        assert_eq!(t.scale_shape(Granularity::Array), vec![1, 3]);
    }

    #[test]
    fn k_squared_larger_than_n_is_an_error() {
        assert_eq!(Tiling::new(4, 4, 3, 8).unwrap_err(), CimConfigError::ArrayTooSmall { array_size: 8, rows: 9 });
    }

    #[test]
    fn group_members_cover_every_weight_once() {
        let t = Tiling::new(7, 5, 3, 18).unwrap(); // n_c = 2, G = 4 (last tile 1 channel), T = 1
        for gran in Granularity::ALL {
            let m = t.scale_group_members(gran);
            assert_eq!(m.len(), t.scale_groups(gran));
            assert_eq!(m.iter().map(|m| m.weights).sum::<usize>(), 7 * 9 * 5);
            assert_eq!(m.iter().map(|m| m.columns).sum::<usize>(), 4 * 5);
        }
        let col = t.scale_group_members(Granularity::Column);
        assert_eq!(col[t.scale_group(Granularity::Column, 3, 0)].weights, 9);
    }

    #[test]
    fn counts_for_each_granularity_pair() {
        let t = Tiling::new(64, 64, 3, 128).unwrap();
        let s = BitSlicing::new(4, 2, Encoding::Twos).unwrap();
        let cc = t.counts(&s, Granularity::Column, Some((Granularity::Column, AdcWindow::Zero)));
        assert_eq!(cc.arrays, 2 * 5);
        assert_eq!(cc.adc_conversions_per_pixel, 2 * 5 * 64);
        assert_eq!(cc.dequant_multipliers, 2 * 5 * 64);
        assert_eq!(cc.weight_scales, 5 * 64);
        assert_eq!(cc.psum_scales, 2 * 5 * 64);
        // The paper's point: column-wise weights add no multiplier over layer-wise weights with
        // column-wise partial sums.
        let lc = t.counts(&s, Granularity::Layer, Some((Granularity::Column, AdcWindow::Zero)));
        assert_eq!(lc.dequant_multipliers, cc.dequant_multipliers);
        assert_eq!(lc.dequant_multiplies_per_pixel, cc.dequant_multiplies_per_pixel);
        let ll = t.counts(&s, Granularity::Layer, Some((Granularity::Layer, AdcWindow::Zero)));
        assert_eq!(ll.dequant_multipliers, 2);
        assert_eq!(ll.dequant_multiplies_per_pixel, 2 * 64);
        assert_eq!(ll.psum_scales, 2);
        let aa = t.counts(&s, Granularity::Array, Some((Granularity::Array, AdcWindow::Zero)));
        assert_eq!(aa.dequant_multipliers, 2 * 5);
        let d = BitSlicing::new(4, 2, Encoding::Differential).unwrap();
        assert_eq!(t.counts(&d, Granularity::Column, Some((Granularity::Column, AdcWindow::Zero))).arrays, 2 * 2 * 5);
        // ideal ADC: one multiplier per weight step, slices shift-added first, no ADC steps
        let ideal = t.counts(&s, Granularity::Column, None);
        assert_eq!(
            (ideal.dequant_multipliers, ideal.dequant_multiplies_per_pixel, ideal.psum_scales),
            (5 * 64, 5 * 64, 0)
        );
        assert_eq!(t.counts(&s, Granularity::Layer, None).dequant_multiplies_per_pixel, 64);
        assert_eq!((ideal.window_constants, cc.window_constants, cc.window_adds_per_pixel), (0, 0, 0));
        // a learned window: one constant and one add per multiplier
        let learned = t.counts(&s, Granularity::Column, Some((Granularity::Column, AdcWindow::Learned)));
        assert_eq!(learned.window_constants, cc.dequant_multipliers);
        assert_eq!(learned.window_adds_per_pixel, cc.dequant_multiplies_per_pixel);
        let ll = t.counts(&s, Granularity::Layer, Some((Granularity::Layer, AdcWindow::Learned)));
        assert_eq!((ll.window_constants, ll.window_adds_per_pixel), (2, 2 * 64));
    }
}
