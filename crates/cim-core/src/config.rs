//! The settings of one CIM convolution layer and their validation.

use burn::config::Config;

use crate::own::OwnQuantizers;
use crate::settings::{AdcInit, AdcWindow, CimConfigError, Encoding, Granularity, MAX_BITS, MAX_EXACT_PSUM};
use crate::slicing::BitSlicing;
use crate::tiling::{LayerCounts, Tiling};

/// Configuration of a [CIM convolution](crate::CimConv2d) (docs/SPEC.md section 1).
#[derive(Config, Debug, PartialEq)]
pub struct CimConvConfig {
    /// C_in.
    pub in_channels: usize,
    /// C_out.
    pub out_channels: usize,
    /// k (square kernels).
    pub kernel_size: usize,
    /// Convolution stride.
    #[config(default = 1)]
    pub stride: usize,
    /// Zero padding on every side.
    #[config(default = 0)]
    pub padding: usize,
    /// N: rows and columns of one memory array.
    #[config(default = 128)]
    pub array_size: usize,
    /// B_w.
    #[config(default = 4)]
    pub weight_bits: u32,
    /// b_c: bits stored per memory cell.
    #[config(default = 2)]
    pub cell_bits: u32,
    /// A: activation bits entering the arrays.
    #[config(default = 4)]
    pub act_bits: u32,
    /// P: ADC resolution; `None` is an ideal ADC (no partial-sum quantization).
    pub psum_bits: Option<u32>,
    /// How signed weights are stored.
    #[config(default = "Encoding::Twos")]
    pub encoding: Encoding,
    /// Who shares a weight step.
    #[config(default = "Granularity::Column")]
    pub weight_granularity: Granularity,
    /// Who shares a partial-sum step.
    #[config(default = "Granularity::Column")]
    pub psum_granularity: Granularity,
    /// The ADC's reference window: zero-anchored or learned offset.
    #[config(default = "AdcWindow::Learned")]
    pub adc_window: AdcWindow,
    /// How the ADC steps (and offsets) are calibrated from data.
    #[config(default = "AdcInit::Mse")]
    pub adc_init: AdcInit,
}

impl CimConvConfig {
    /// Checks every setting and returns the layer's geometry. Called by `init` before any tensor
    /// is built, so an impossible setting never reaches the tensor code.
    pub fn validate(&self) -> Result<(Tiling, BitSlicing), CimConfigError> {
        for (what, value) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("kernel_size", self.kernel_size),
            ("stride", self.stride),
            ("array_size", self.array_size),
        ] {
            if value == 0 {
                return Err(CimConfigError::Zero { what });
            }
        }
        let mut bits =
            vec![("weight_bits", self.weight_bits), ("cell_bits", self.cell_bits), ("act_bits", self.act_bits)];
        if let Some(p) = self.psum_bits {
            bits.push(("psum_bits", p));
        }
        for (what, value) in bits {
            if value == 0 || value > MAX_BITS {
                return Err(CimConfigError::BitsOutOfRange { what, value });
            }
        }
        let slicing = BitSlicing::new(self.weight_bits, self.cell_bits, self.encoding)?;
        let tiling = Tiling::new(self.in_channels, self.out_channels, self.kernel_size, self.array_size)?;
        let (bound, rows, act_max, digit_max) = self.psum_bound_of(&tiling, &slicing);
        if bound >= MAX_EXACT_PSUM {
            return Err(CimConfigError::PsumOverflow { bound, rows, act_max, digit_max });
        }
        Ok((tiling, slicing))
    }

    /// The largest |partial sum| one column of one array can produce (docs/SPEC.md section 1,
    /// "Partial sums"): its rows, each the largest activation code times the largest digit.
    /// With it, the ADC resolution that converts every partial sum without loss.
    fn psum_bound_of(&self, tiling: &Tiling, slicing: &BitSlicing) -> (f64, usize, u32, u32) {
        let act_max = (1u32 << self.act_bits) - 1;
        let digit_max = slicing.max_digit_magnitude();
        let rows = tiling.channels_per_array * self.kernel_size * self.kernel_size;
        (rows as f64 * act_max as f64 * digit_max as f64, rows, act_max, digit_max)
    }

    /// The bits of an ADC that converts every partial sum of this layer without loss: what an
    /// ideal ADC stands for in hardware. Differential weights give non-negative partial sums;
    /// two's complement ones signed partial sums, one bit more.
    pub fn lossless_adc_bits(&self) -> Result<u32, CimConfigError> {
        let (tiling, slicing) = self.validate()?;
        let (bound, ..) = self.psum_bound_of(&tiling, &slicing);
        let magnitude_bits = (bound + 1.0).log2().ceil() as u32;
        Ok(match self.encoding {
            Encoding::Differential => magnitude_bits,
            Encoding::Twos => magnitude_bits + 1,
        })
    }

    /// Hardware counts of a layer with this configuration and a method's own quantizers in
    /// place of the built-in ones (docs/SPEC.md: arrays, ADC conversions, dequantization), from the
    /// tiling arithmetic alone.
    pub fn counts(&self, own: OwnQuantizers) -> Result<LayerCounts, CimConfigError> {
        let (tiling, slicing) = self.validate()?;
        let adc = match own.psum {
            Some(q) => Some((q.granularity(), q.window())),
            None => self.psum_bits.map(|_| (self.psum_granularity, self.adc_window)),
        };
        Ok(tiling.counts(&slicing, own.weights(self.weight_granularity).granularity(), adc))
    }

    /// 2^A - 1: the activation code that stands for 1.0.
    pub fn act_levels(&self) -> f32 {
        ((1u64 << self.act_bits) - 1) as f32
    }

    /// The layer's shape as tables show it: `C_in->C_out sS` (S the stride).
    pub fn shape_label(&self) -> String {
        format!("{}->{} s{}", self.in_channels, self.out_channels, self.stride)
    }

    /// Output spatial size for an input of `size` pixels.
    pub fn output_size(&self, size: usize) -> usize {
        (size + 2 * self.padding).saturating_sub(self.kernel_size) / self.stride + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> CimConvConfig {
        CimConvConfig::new(16, 16, 3).with_psum_bits(Some(3))
    }

    #[test]
    fn accepts_the_paper_setting() {
        let (tiling, slicing) = base().validate().unwrap();
        assert_eq!(tiling.channels_per_array, 14);
        assert_eq!(slicing.slices(), 2);
    }

    #[test]
    fn rejects_impossible_settings_with_named_errors() {
        let e = base().with_cell_bits(3).validate().unwrap_err();
        assert!(e.to_string().contains("cell_bits = 3 does not divide weight_bits = 4"), "{e}");
        let e = base().with_array_size(8).validate().unwrap_err();
        assert!(e.to_string().contains("array_size = 8"), "{e}");
        let e = base().with_weight_bits(0).validate().unwrap_err();
        assert!(e.to_string().contains("weight_bits = 0"), "{e}");
        let e = base().with_psum_bits(Some(0)).validate().unwrap_err();
        assert!(e.to_string().contains("psum_bits = 0"), "{e}");
        let e = CimConvConfig::new(0, 4, 3).validate().unwrap_err();
        assert!(e.to_string().contains("in_channels = 0"), "{e}");
        let e = base().with_stride(0).validate().unwrap_err();
        assert!(e.to_string().contains("stride = 0"), "{e}");
        let e = CimConvConfig::new(512, 16, 3)
            .with_array_size(4608)
            .with_act_bits(8)
            .with_weight_bits(8)
            .with_cell_bits(8)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("2^24"), "{e}");
    }

    #[test]
    fn names_round_trip() {
        for e in Encoding::ALL {
            assert_eq!(e.name().parse::<Encoding>().unwrap(), e);
        }
        for g in Granularity::ALL {
            assert_eq!(g.name().parse::<Granularity>().unwrap(), g);
        }
        for w in AdcWindow::ALL {
            assert_eq!(w.name().parse::<AdcWindow>().unwrap(), w);
        }
        for i in AdcInit::ALL {
            assert_eq!(i.name().parse::<AdcInit>().unwrap(), i);
        }
        let e = "offset".parse::<AdcWindow>().unwrap_err();
        assert!(e.contains("`offset`") && e.contains("`zero`, `learned`"), "{e}");
        assert!("rowwise".parse::<Granularity>().unwrap_err().contains("rowwise"));
    }

    /// A 16-channel 3x3 layer on 128-row arrays: 14 channels x 9 = 126 rows per array; A = 4
    /// and 2-bit cells give partial sums up to 126 x 15 x 3 = 5,670, 13 bits unsigned.
    #[test]
    fn lossless_adc_bits_by_hand() {
        let layer = CimConvConfig::new(16, 16, 3).with_array_size(128).with_act_bits(4).with_cell_bits(2);
        assert_eq!(layer.clone().with_encoding(Encoding::Differential).lossless_adc_bits().unwrap(), 13);
        assert_eq!(layer.with_encoding(Encoding::Twos).lossless_adc_bits().unwrap(), 14);
        // 1-bit cells and activations, one 3x3 channel: 9 rows, at most 9
        let tiny = CimConvConfig::new(1, 1, 3).with_act_bits(1).with_cell_bits(1).with_weight_bits(1);
        assert_eq!(tiny.with_encoding(Encoding::Differential).lossless_adc_bits().unwrap(), 4);
    }
}
