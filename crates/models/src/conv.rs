//! The 3x3 convolution of a residual block: on CIM arrays or in floating point.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use cim_core::{AdcInit, AdcWindow, CimConfigError, CimConv2d, CimConvConfig, Encoding, Granularity, OwnQuantizers};

use crate::{Arch, ModelCounts};

/// Array and quantizer settings shared by every CIM layer of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct CimSettings {
    /// N.
    pub array_size: usize,
    /// B_w.
    pub weight_bits: u32,
    /// b_c.
    pub cell_bits: u32,
    /// A.
    pub act_bits: u32,
    /// P; `None` is an ideal ADC.
    pub psum_bits: Option<u32>,
    /// Weight encoding.
    pub encoding: Encoding,
    /// Weight-step granularity.
    pub weight_granularity: Granularity,
    /// ADC-step granularity.
    pub psum_granularity: Granularity,
    /// The ADC's reference window.
    pub adc_window: AdcWindow,
    /// How ADC windows are calibrated.
    pub adc_init: AdcInit,
    /// A method's own quantizers in place of the built-in ones (with its own ADC, `psum_bits`
    /// is `None`).
    pub own: OwnQuantizers,
}

impl CimSettings {
    /// The configuration of one k x k layer.
    pub fn layer(
        &self,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> CimConvConfig {
        CimConvConfig::new(in_channels, out_channels, kernel)
            .with_stride(stride)
            .with_padding(padding)
            .with_array_size(self.array_size)
            .with_weight_bits(self.weight_bits)
            .with_cell_bits(self.cell_bits)
            .with_act_bits(self.act_bits)
            .with_psum_bits(self.psum_bits)
            .with_encoding(self.encoding)
            .with_weight_granularity(self.weight_granularity)
            .with_psum_granularity(self.psum_granularity)
            .with_adc_window(self.adc_window)
            .with_adc_init(self.adc_init)
    }

    /// A CIM layer of `layer`'s shape with these settings.
    pub fn init(&self, layer: CimConvConfig, device: &Device) -> Result<CimConv2d, CimConfigError> {
        layer.init_with(self.own, device)
    }

    /// Hardware counts of `arch`'s CIM layers for square inputs of `input_size`, from the tiling
    /// arithmetic alone (no model is built): ADC conversions and dequantization multiplies are
    /// per image (each layer's per-pixel count times its output pixels).
    pub fn model_counts(&self, arch: Arch, input_size: usize) -> Result<ModelCounts, CimConfigError> {
        let mut total = ModelCounts::default();
        for conv in arch.block_convs(input_size) {
            let layer = self.layer(conv.in_channels, conv.out_channels, 3, conv.stride, 1);
            let c = layer.counts(self.own)?;
            total.layers += 1;
            total.per_layer_sum = total.per_layer_sum + c;
            total.adc_conversions_per_image += c.adc_conversions_per_pixel * conv.out_pixels;
            total.dequant_multiplies_per_image += c.dequant_multiplies_per_pixel * conv.out_pixels;
            total.window_adds_per_image += c.window_adds_per_pixel * conv.out_pixels;
        }
        Ok(total)
    }
}

/// What the block convs are made of.
#[derive(Debug, Clone, PartialEq)]
pub enum ConvKind {
    /// Plain floating-point convs.
    Float,
    /// CIM layers with these settings.
    Cim(CimSettings),
}

/// A 3x3 conv of a residual block (padding 1, no bias).
#[derive(Module, Debug)]
pub enum Conv3x3 {
    /// Floating point.
    Float(Conv2d),
    /// On CIM arrays.
    Cim(CimConv2d),
}

impl Conv3x3 {
    /// A 3x3 conv of `kind`.
    pub fn new(
        kind: &ConvKind,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        device: &Device,
    ) -> Result<Self, CimConfigError> {
        Ok(match kind {
            ConvKind::Float => Conv3x3::Float(float_conv(in_channels, out_channels, 3, stride, 1, device)),
            ConvKind::Cim(s) => Conv3x3::Cim(s.init(s.layer(in_channels, out_channels, 3, stride, 1), device)?),
        })
    }

    /// Applies the conv.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Conv3x3::Float(c) => apply_float(c, x),
            Conv3x3::Cim(c) => c.forward(x),
        }
    }

    /// The float weights [C_out, C_in, 3, 3] (of a CIM layer: the latent weights it quantizes).
    pub fn weight(&self) -> Tensor<4> {
        match self {
            Conv3x3::Float(c) => c.weight.val(),
            Conv3x3::Cim(c) => c.weight.val(),
        }
    }

    /// The same conv with `weight` in place of its weights (shape checked); a CIM layer
    /// re-initializes its weight steps from them.
    pub fn with_weight(self, weight: Tensor<4>) -> Result<Self, String> {
        Ok(match self {
            Conv3x3::Float(mut c) => {
                let expected = c.weight.val().dims();
                if weight.dims() != expected {
                    return Err(format!("weight shape {:?} does not match the conv's {expected:?}", weight.dims()));
                }
                c.weight = burn::module::Param::from_tensor(weight.detach());
                Conv3x3::Float(c)
            }
            Conv3x3::Cim(c) => Conv3x3::Cim(c.with_weight(weight)?),
        })
    }

    /// The CIM layer, if this conv is one.
    pub fn cim(&self) -> Option<&CimConv2d> {
        match self {
            Conv3x3::Cim(c) => Some(c),
            Conv3x3::Float(_) => None,
        }
    }

    /// The CIM layer, mutably.
    pub fn cim_mut(&mut self) -> Option<&mut CimConv2d> {
        match self {
            Conv3x3::Cim(c) => Some(c),
            Conv3x3::Float(_) => None,
        }
    }
}

/// A floating-point conv without bias, Kaiming-normal (fan-in, gain sqrt 2) like the CIM layers.
pub fn float_conv(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new([in_channels, out_channels], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(padding, padding, padding, padding))
        .with_bias(false)
        .with_initializer(Initializer::KaimingNormal { gain: std::f64::consts::SQRT_2, fan_out_only: false })
        .init(device)
}

/// Applies a floating-point conv through [`flex_kernels::float_conv::conv2d`] (one pass per image on
/// Flex, no layout changes): the convs [`float_conv`] builds (square kernel and stride, equal
/// padding on every side, no bias, dilation 1, one group). Any other conv takes burn's forward.
pub fn apply_float(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [kh, kw] = conv.kernel_size;
    let [sh, sw] = conv.stride;
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) if t == l && l == b && b == r => Some(t),
        PaddingConfig2d::Valid => Some(0),
        _ => None,
    };
    match padding {
        Some(p) if kh == kw && sh == sw && conv.bias.is_none() && conv.dilation == [1, 1] && conv.groups == 1 => {
            flex_kernels::float_conv::conv2d(x, conv.weight.val(), sh, p)
        }
        _ => conv.forward(x),
    }
}
