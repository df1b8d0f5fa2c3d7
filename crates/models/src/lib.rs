//! Models built from the CIM layer (docs/SPEC.md section 1, "Layers off the arrays"): the first
//! conv, the 1x1 shortcut convs, batch norms and the final linear layer stay in floating point;
//! the 3x3 convs of the residual blocks run on the arrays (or in floating point for the FP
//! baseline).

mod conv;
mod norm;
mod psum_bits;
mod resnet18;
mod resnet20;

use std::sync::Mutex;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use cim_core::{CimConfigError, CimConv2d, LayerCounts};
use serde::{Deserialize, Serialize};

pub use conv::{Activation, CimSettings, Conv3x3, ConvKind, LayerCountsPerImage};
pub use psum_bits::PsumBits;
pub use resnet18::ResNet18;
pub use resnet20::ResNet20;

/// The architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// Pre-activation ResNet-20 for 32x32 inputs (16/32/64 channels, 3 x 3 blocks).
    Resnet20,
    /// ResNet-18 for ImageNet (7x7 stem, 64..512 channels, 4 x 2 blocks).
    Resnet18,
}

impl Arch {
    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Resnet20 => "resnet20",
            Arch::Resnet18 => "resnet18",
        }
    }
}

/// The shape of one residual block: its first 3x3 conv maps `in_channels` to `out_channels`
/// with `stride`, its second keeps `out_channels` at stride 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockShape {
    /// Channels entering the block.
    pub in_channels: usize,
    /// Channels of both convs' outputs.
    pub out_channels: usize,
    /// Stride of the first conv (2 where a stage begins, after the first).
    pub stride: usize,
}

/// One 3x3 conv of a residual block (the convs that run on CIM arrays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockConv {
    /// C_in.
    pub in_channels: usize,
    /// C_out.
    pub out_channels: usize,
    /// Stride.
    pub stride: usize,
    /// Output pixels for the input size asked.
    pub out_pixels: usize,
}

impl Arch {
    /// The residual blocks, in forward order: the one description both the model and the
    /// hardware counts are built from.
    pub fn blocks(self) -> Vec<BlockShape> {
        let (stem_channels, widths, per_stage): (usize, &[usize], usize) = match self {
            Arch::Resnet20 => (16, &[16, 32, 64], 3),
            Arch::Resnet18 => (64, &[64, 128, 256, 512], 2),
        };
        let mut channels = stem_channels;
        let mut blocks = Vec::new();
        for (stage, &width) in widths.iter().enumerate() {
            for b in 0..per_stage {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                blocks.push(BlockShape { in_channels: channels, out_channels: width, stride });
                channels = width;
            }
        }
        blocks
    }

    /// Every 3x3 block conv, in forward order, with its output pixels for a square input of
    /// `input_size` (after the stem: ResNet-18's 7x7/2 conv and 3x3/2 max pool).
    pub fn block_convs(self, input_size: usize) -> Vec<BlockConv> {
        let mut size = match self {
            Arch::Resnet20 => input_size,
            Arch::Resnet18 => ((input_size + 6 - 7) / 2 + 1 + 2 - 3) / 2 + 1,
        };
        let mut convs = Vec::new();
        for b in self.blocks() {
            size = (size + 2 - 3) / b.stride + 1;
            let out_pixels = size * size;
            convs.push(BlockConv {
                in_channels: b.in_channels,
                out_channels: b.out_channels,
                stride: b.stride,
                out_pixels,
            });
            convs.push(BlockConv { in_channels: b.out_channels, out_channels: b.out_channels, stride: 1, out_pixels });
        }
        convs
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "resnet20" => Ok(Arch::Resnet20),
            "resnet18" => Ok(Arch::Resnet18),
            _ => Err(format!("unknown model `{s}`: expected `resnet20` or `resnet18`")),
        }
    }
}

/// A classifier whose 3x3 convolutions may run on CIM arrays.
#[derive(Module, Debug)]
pub enum Model {
    /// ResNet-20.
    Resnet20(ResNet20),
    /// ResNet-18.
    Resnet18(ResNet18),
}

/// Serializes model construction: burn draws initial weights from the device's global RNG, so
/// seeding it and drawing every initial value must not interleave with another thread doing
/// the same.
static INIT: Mutex<()> = Mutex::new(());

/// Touches every parameter so that burn's lazily initialized ones are drawn now.
struct Materialize;

impl ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

impl Model {
    /// Builds a model for inputs of `in_channels` and `classes` outputs, its initial weights a
    /// function of `seed` alone.
    pub fn new(
        arch: Arch,
        in_channels: usize,
        classes: usize,
        kind: &ConvKind,
        seed: u64,
        device: &Device,
    ) -> Result<Self, CimConfigError> {
        let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
        device.seed(seed);
        let model = match arch {
            Arch::Resnet20 => Model::Resnet20(ResNet20::new(in_channels, classes, kind, device)?),
            Arch::Resnet18 => Model::Resnet18(ResNet18::new(in_channels, classes, kind, device)?),
        };
        model.visit(&mut Materialize);
        Ok(model)
    }

    /// Logits [B, classes] of images [B, C, H, W].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Model::Resnet20(m) => m.forward(x),
            Model::Resnet18(m) => m.forward(x),
        }
    }

    /// Every 3x3 conv, in forward order.
    pub fn convs(&self) -> Vec<&Conv3x3> {
        match self {
            Model::Resnet20(m) => m.convs(),
            Model::Resnet18(m) => m.convs(),
        }
    }

    /// Every 3x3 conv, mutably, in forward order.
    pub fn convs_mut(&mut self) -> Vec<&mut Conv3x3> {
        match self {
            Model::Resnet20(m) => m.convs_mut(),
            Model::Resnet18(m) => m.convs_mut(),
        }
    }

    /// This model started from the weights of `pretrained` (a model of the same architecture,
    /// input channels and classes, floating point or CIM): every parameter and running statistic
    /// of the layers off the arrays is `pretrained`'s, and each 3x3 conv is this model's own
    /// (floating point or on arrays, with its quantizer settings) holding `pretrained`'s weights,
    /// its weight steps initialized from them. ADC windows are left for calibration.
    pub fn starting_from(self, pretrained: &Model) -> Result<Model, String> {
        let same_arch = matches!(
            (&self, pretrained),
            (Model::Resnet20(_), Model::Resnet20(_)) | (Model::Resnet18(_), Model::Resnet18(_))
        );
        if !same_arch {
            return Err("the pretrained model is of another architecture".into());
        }
        let own = self.convs().into_iter().cloned().collect::<Vec<_>>();
        let mut out = pretrained.clone();
        for (i, (slot, conv)) in out.convs_mut().into_iter().zip(own).enumerate() {
            let weight = slot.weight();
            *slot = conv.with_weight(weight).map_err(|e| format!("3x3 conv {i}: {e}"))?;
        }
        Ok(out)
    }

    /// The layers that run on CIM arrays, in forward order.
    pub fn cim_layers(&self) -> Vec<&CimConv2d> {
        self.convs().into_iter().filter_map(Conv3x3::cim).collect()
    }

    /// The layers that run on CIM arrays, mutably.
    pub fn cim_layers_mut(&mut self) -> Vec<&mut CimConv2d> {
        self.convs_mut().into_iter().filter_map(Conv3x3::cim_mut).collect()
    }
}

/// Hardware counts of a whole model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ModelCounts {
    /// CIM layers.
    pub layers: usize,
    /// Sums of the per-layer counts (arrays, scale factors, distinct multipliers, and the
    /// per-pixel counts summed over layers).
    pub per_layer_sum: LayerCounts,
    /// ADC conversions to classify one image.
    pub adc_conversions_per_image: usize,
    /// Dequantization multiplies to classify one image.
    pub dequant_multiplies_per_image: usize,
    /// Digital adds of learned-window constants to classify one image.
    pub window_adds_per_image: usize,
}

impl ModelCounts {
    /// The counts of a model with these CIM layers ([`CimSettings::layer_counts`]).
    pub fn of_layers(layers: &[LayerCountsPerImage]) -> Self {
        let mut total = ModelCounts::default();
        for layer in layers {
            total.layers += 1;
            total.per_layer_sum = total.per_layer_sum + layer.counts;
            total.adc_conversions_per_image += layer.adc_conversions;
            total.dequant_multiplies_per_image += layer.dequant_multiplies;
            total.window_adds_per_image += layer.window_adds;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cim_core::{AdcInit, AdcWindow, Encoding, Granularity};

    fn settings(psum_bits: Option<u32>) -> CimSettings {
        CimSettings {
            array_size: 128,
            weight_bits: 4,
            cell_bits: 2,
            act_bits: 4,
            psum_bits: psum_bits.map(PsumBits::All),
            encoding: Encoding::Differential,
            weight_granularity: Granularity::Layer,
            psum_granularity: Granularity::Column,
            adc_window: AdcWindow::Learned,
            adc_init: AdcInit::Mse,
            own: cim_core::OwnQuantizers::BUILT_IN,
        }
    }

    /// The counts from the block description alone equal those of the layers of a built model.
    #[test]
    fn counts_from_the_arithmetic_match_a_built_model() {
        let device = Device::flex();
        for arch in [Arch::Resnet20, Arch::Resnet18] {
            for bits in [Some(3), None] {
                let s = settings(bits);
                let model = Model::new(arch, 3, 10, &ConvKind::Cim(s.clone()), 0, &device).unwrap();
                let layers = model.cim_layers();
                let convs = arch.block_convs(64);
                assert_eq!(layers.len(), convs.len());
                let mut sum = LayerCounts::default();
                for (layer, conv) in layers.iter().zip(&convs) {
                    let c = layer.config();
                    assert_eq!(
                        (c.in_channels, c.out_channels, c.stride),
                        (conv.in_channels, conv.out_channels, conv.stride)
                    );
                    sum = sum + layer.counts();
                }
                let counts = s.model_counts(arch, 64).unwrap();
                assert_eq!((counts.layers, counts.per_layer_sum), (layers.len(), sum), "{arch:?} {bits:?}");
            }
        }
        // ResNet-20 on 32 x 32: three stages of 32, 16 and 8 pixels a side
        let pixels: Vec<usize> = Arch::Resnet20.block_convs(32).iter().map(|c| c.out_pixels).collect();
        assert_eq!(pixels, [[1024; 6], [256; 6], [64; 6]].concat());
        // ResNet-18 on 224 x 224: 56 after the stem and pool, then 28, 14, 7
        let pixels: Vec<usize> = Arch::Resnet18.block_convs(224).iter().map(|c| c.out_pixels).collect();
        assert_eq!(pixels, [[3136; 4], [784; 4], [196; 4], [49; 4]].concat());
    }

    /// A per-layer P reaches each layer of a built model and each layer's counts; a list of the
    /// wrong length is refused before anything is built.
    #[test]
    fn adc_bits_per_layer() {
        let device = Device::flex();
        let bits: Vec<u32> = (0..18).map(|i| 2 + (i % 3)).collect();
        let s = CimSettings { psum_bits: Some(PsumBits::PerLayer(bits.clone())), ..settings(None) };
        s.validate(Arch::Resnet20).unwrap();
        let model = Model::new(Arch::Resnet20, 3, 10, &ConvKind::Cim(s.clone()), 0, &device).unwrap();
        let built: Vec<Option<u32>> = model.cim_layers().iter().map(|l| l.config().psum_bits).collect();
        assert_eq!(built, bits.iter().map(|&b| Some(b)).collect::<Vec<_>>());
        let counted: Vec<Option<u32>> =
            s.layer_counts(Arch::Resnet20, 32).unwrap().iter().map(|l| l.psum_bits).collect();
        assert_eq!(counted, built);
        let short = CimSettings { psum_bits: Some(PsumBits::PerLayer(vec![3; 5])), ..settings(None) };
        let e = short.validate(Arch::Resnet20).unwrap_err();
        assert!(e.contains("a list of 5 values") && e.contains("18 CIM layers"), "{e}");
        let zero =
            CimSettings { psum_bits: Some(PsumBits::PerLayer([vec![3; 17], vec![0]].concat())), ..settings(None) };
        let e = zero.validate(Arch::Resnet20).unwrap_err();
        assert!(e.contains("CIM layer 17") && e.contains("psum_bits = 0"), "{e}");
        // ResNet-18 has 16
        let e = CimSettings { psum_bits: Some(PsumBits::PerLayer(bits)), ..settings(None) }
            .validate(Arch::Resnet18)
            .unwrap_err();
        assert!(e.contains("resnet18 has 16 CIM layers"), "{e}");
    }

    /// A float conv in the clamp form is the plain float conv of the clamped input: the same
    /// weights, and a different output where the input leaves [0, 1].
    #[test]
    fn a_clamped_float_conv_sees_the_cim_layers_input_range() {
        let device = Device::flex();
        let build = |activation| {
            Model::new(Arch::Resnet20, 3, 10, &ConvKind::Float(activation), 0, &device).unwrap().convs()[0].clone()
        };
        let (relu, clamp) = (build(Activation::Relu), build(Activation::Clamp));
        assert!(matches!(clamp, Conv3x3::FloatClamped(_)) && matches!(relu, Conv3x3::Float(_)));
        let x = Tensor::<4>::random([2, 16, 8, 8], burn::tensor::Distribution::Uniform(-1.0, 3.0), &device);
        let values = |t: Tensor<4>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        assert_eq!(values(clamp.forward(x.clone())), values(relu.forward(x.clone().clamp(0.0, 1.0))));
        assert_ne!(values(clamp.forward(x.clone())), values(relu.forward(x)));
    }

    /// The clamp done in the batch norm's pass ([`norm::Rectify::UnitClamp`], then
    /// `forward_rectified`) gives the same bits as ReLU there and the conv's own clamp: the
    /// output and the gradients of the input and of the batch norm's scale.
    #[test]
    fn the_clamp_fused_into_the_batch_norm_changes_no_bit() {
        use burn::nn::BatchNormConfig;
        use norm::{Rectify, batch_norm};
        let device = Device::flex().autodiff();
        let conv = Model::new(Arch::Resnet20, 3, 10, &ConvKind::Float(Activation::Clamp), 0, &device).unwrap().convs()
            [0]
        .clone();
        let bn = BatchNormConfig::new(16).init(&device);
        let x = Tensor::<4>::random([4, 16, 8, 8], burn::tensor::Distribution::Uniform(-2.0, 3.0), &device);
        let values = |t: Tensor<4>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let run = |fused: bool| {
            let x = x.clone().detach().require_grad();
            let act = if fused { Rectify::UnitClamp } else { Rectify::Relu };
            let y = conv.forward_rectified(batch_norm(&bn, x.clone(), act), act);
            let grads = (y.clone() * y.clone()).sum().backward();
            let gamma = bn.gamma.val().grad(&grads).unwrap().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            (values(y.inner()), values(x.grad(&grads).unwrap()), gamma)
        };
        let (fused, separate) = (run(true), run(false));
        assert_eq!(fused, separate);
        // the clamp mattered (normalized values above 1), and forward_rectified skips only the
        // clamp it is told was done
        let unclamped = conv.forward_rectified(batch_norm(&bn, x.clone(), Rectify::Relu), Rectify::UnitClamp);
        assert_ne!(values(unclamped.inner()), fused.0);
    }
}
