//! The 3x3 convolution of a residual block: on CIM arrays or in floating point.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use cim_core::{
    AdcInit, AdcWindow, CimConfigError, CimConv2d, CimConvConfig, Encoding, Granularity, LayerCounts, OwnQuantizers,
};

use serde::{Deserialize, Serialize};

use crate::norm::Rectify;
use crate::{Arch, BlockConv, ModelCounts, PsumBits};

/// Array and quantizer settings of the CIM layers of a model: shared by every layer but the ADC
/// bits, which may differ per layer.
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
    /// P of every layer, or of each; `None` is an ideal ADC.
    pub psum_bits: Option<PsumBits>,
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
    /// The configuration of CIM layer `index` (forward order), a k x k conv of this shape.
    pub fn layer(
        &self,
        index: usize,
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
            .with_psum_bits(self.psum_bits.as_ref().map(|p| p.of_layer(index)))
            .with_encoding(self.encoding)
            .with_weight_granularity(self.weight_granularity)
            .with_psum_granularity(self.psum_granularity)
            .with_adc_window(self.adc_window)
            .with_adc_init(self.adc_init)
    }

    /// Every CIM layer of `arch` for square inputs of `input_size`: its block conv and its
    /// configuration, in forward order.
    pub fn layers(&self, arch: Arch, input_size: usize) -> Vec<(BlockConv, CimConvConfig)> {
        arch.block_convs(input_size)
            .into_iter()
            .enumerate()
            .map(|(i, conv)| (conv, self.layer(i, conv.in_channels, conv.out_channels, 3, conv.stride, 1)))
            .collect()
    }

    /// Checks the settings for every CIM layer of `arch` (a per-layer P list of the wrong
    /// length, a P a layer cannot have) before any layer is built.
    pub fn validate(&self, arch: Arch) -> Result<(), String> {
        if let Some(p) = &self.psum_bits {
            p.check_layers(arch.block_convs(32).len(), arch.name())?;
        }
        let per_layer = matches!(self.psum_bits, Some(PsumBits::PerLayer(_)));
        for (i, (_, layer)) in self.layers(arch, 32).iter().enumerate() {
            layer
                .counts(self.own)
                .map_err(|e| if per_layer { format!("CIM layer {i}: {e}") } else { e.to_string() })?;
        }
        Ok(())
    }

    /// A CIM layer of `layer`'s shape with these settings.
    pub fn init(&self, layer: CimConvConfig, device: &Device) -> Result<CimConv2d, CimConfigError> {
        layer.init_with(self.own, device)
    }

    /// Hardware counts of each of `arch`'s CIM layers for square inputs of `input_size`, from
    /// the tiling arithmetic alone (no model is built), in forward order.
    pub fn layer_counts(&self, arch: Arch, input_size: usize) -> Result<Vec<LayerCountsPerImage>, CimConfigError> {
        self.layers(arch, input_size)
            .into_iter()
            .map(|(conv, layer)| {
                let counts = layer.counts(self.own)?;
                Ok(LayerCountsPerImage {
                    conv,
                    psum_bits: layer.psum_bits,
                    adc_conversions: counts.adc_conversions_per_pixel * conv.out_pixels,
                    dequant_multiplies: counts.dequant_multiplies_per_pixel * conv.out_pixels,
                    window_adds: counts.window_adds_per_pixel * conv.out_pixels,
                    counts,
                })
            })
            .collect()
    }

    /// Hardware counts of `arch`'s CIM layers summed over the layers ([`Self::layer_counts`]):
    /// ADC conversions and dequantization multiplies are per image.
    pub fn model_counts(&self, arch: Arch, input_size: usize) -> Result<ModelCounts, CimConfigError> {
        Ok(ModelCounts::of_layers(&self.layer_counts(arch, input_size)?))
    }
}

/// Hardware counts of one CIM layer of a model: per output pixel ([`LayerCounts`]) and per
/// classified image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerCountsPerImage {
    /// The block conv.
    pub conv: BlockConv,
    /// Its ADC bits (`None`: an ideal ADC or an ADC of the method's own).
    pub psum_bits: Option<u32>,
    /// Its counts per output pixel and its arrays and scales.
    pub counts: LayerCounts,
    /// ADC conversions per image.
    pub adc_conversions: usize,
    /// Dequantization multiplies per image.
    pub dequant_multiplies: usize,
    /// Adds of learned-window constants per image.
    pub window_adds: usize,
}

/// What the block convs are made of.
#[derive(Debug, Clone, PartialEq)]
pub enum ConvKind {
    /// Floating-point convs whose input is the ReLU output (`Activation::Relu`), or that
    /// output clamped to [0, 1] as a CIM layer clamps it (`Activation::Clamp`).
    Float(Activation),
    /// CIM layers with these settings (their input is always clamped to [0, 1]).
    Cim(CimSettings),
}

/// The input of a floating-point 3x3 block conv (docs/SPEC.md section 1, "Layers off the
/// arrays"). A CIM layer turns its input into A-bit codes of clamp(x, 0, 1), so a network whose
/// float convs see the unbounded ReLU output loses every activation above 1 when it moves onto
/// the arrays; `Clamp` trains the float network in the CIM network's own form (every quantizer
/// off, the clamp kept, no rounding).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Activation {
    /// The ReLU output as it is (a plain pre-activation ResNet).
    #[default]
    Relu,
    /// The ReLU output clamped to [0, 1] (the CIM layers' input range).
    Clamp,
}

impl Activation {
    /// Every value.
    pub const ALL: [Activation; 2] = [Activation::Relu, Activation::Clamp];

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Clamp => "clamp",
        }
    }
}

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Activation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Activation::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("activation = {s:?}: expected \"relu\" or \"clamp\""))
    }
}

/// Read from a name, so that a bad value in a file is refused naming the key and the values.
impl TryFrom<String> for Activation {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// A 3x3 conv of a residual block (padding 1, no bias).
// a model holds a few dozen of these, built once: the CIM variant's size is not worth a box
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Conv3x3 {
    /// Floating point, on the ReLU output.
    Float(Conv2d),
    /// Floating point, on the ReLU output clamped to [0, 1] ([`Activation::Clamp`]).
    FloatClamped(Conv2d),
    /// On CIM arrays.
    Cim(CimConv2d),
}

impl Conv3x3 {
    /// A 3x3 conv of `kind`, the model's 3x3 conv number `index` (forward order).
    pub fn new(
        kind: &ConvKind,
        index: usize,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        device: &Device,
    ) -> Result<Self, CimConfigError> {
        Ok(match kind {
            ConvKind::Float(activation) => {
                let conv = float_conv(in_channels, out_channels, 3, stride, 1, device);
                match activation {
                    Activation::Relu => Conv3x3::Float(conv),
                    Activation::Clamp => Conv3x3::FloatClamped(conv),
                }
            }
            ConvKind::Cim(s) => Conv3x3::Cim(s.init(s.layer(index, in_channels, out_channels, 3, stride, 1), device)?),
        })
    }

    /// Applies the conv.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Conv3x3::Float(c) => apply_float(c, x),
            Conv3x3::FloatClamped(c) => apply_float(c, x.clamp(0.0, 1.0)),
            Conv3x3::Cim(c) => c.forward(x),
        }
    }

    /// The rectifier a batch norm feeding this conv alone may apply in its own pass for it: the
    /// clamp to [0, 1] of the clamp form ([`Conv3x3::FloatClamped`]), else ReLU.
    pub fn input_rectify(&self) -> Rectify {
        match self {
            Conv3x3::FloatClamped(_) => Rectify::UnitClamp,
            Conv3x3::Float(_) | Conv3x3::Cim(_) => Rectify::Relu,
        }
    }

    /// Applies the conv to `x` that has been through `rectified`: a clamp already done is not done
    /// again (the same values, one pass and one autodiff node fewer).
    pub fn forward_rectified(&self, x: Tensor<4>, rectified: Rectify) -> Tensor<4> {
        match (self, rectified) {
            (Conv3x3::FloatClamped(c), Rectify::UnitClamp) => apply_float(c, x),
            _ => self.forward(x),
        }
    }

    /// The float weights [C_out, C_in, 3, 3] (of a CIM layer: the latent weights it quantizes).
    pub fn weight(&self) -> Tensor<4> {
        match self {
            Conv3x3::Float(c) | Conv3x3::FloatClamped(c) => c.weight.val(),
            Conv3x3::Cim(c) => c.weight.val(),
        }
    }

    /// The same conv with `weight` in place of its weights (shape checked); a CIM layer
    /// re-initializes its weight steps from them.
    pub fn with_weight(self, weight: Tensor<4>) -> Result<Self, CimConfigError> {
        let with = |mut c: Conv2d| {
            let expected = c.weight.val().dims();
            if weight.dims() != expected {
                return Err(CimConfigError::ShapeMismatch {
                    what: "weight",
                    got: weight.dims().to_vec(),
                    expected: expected.to_vec(),
                });
            }
            c.weight = burn::module::Param::from_tensor(weight.clone().detach());
            Ok(c)
        };
        Ok(match self {
            Conv3x3::Float(c) => Conv3x3::Float(with(c)?),
            Conv3x3::FloatClamped(c) => Conv3x3::FloatClamped(with(c)?),
            Conv3x3::Cim(c) => Conv3x3::Cim(c.with_weight(weight)?),
        })
    }

    /// The CIM layer, if this conv is one.
    pub fn cim(&self) -> Option<&CimConv2d> {
        match self {
            Conv3x3::Cim(c) => Some(c),
            Conv3x3::Float(_) | Conv3x3::FloatClamped(_) => None,
        }
    }

    /// The CIM layer, mutably.
    pub fn cim_mut(&mut self) -> Option<&mut CimConv2d> {
        match self {
            Conv3x3::Cim(c) => Some(c),
            Conv3x3::Float(_) | Conv3x3::FloatClamped(_) => None,
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
