//! Models built from the CIM layer (DESIGN.md section 3, "Layers off the arrays"): the first
//! conv, the 1x1 shortcut convs, batch norms and the final linear layer stay in floating point;
//! the 3x3 convs of the residual blocks run on the arrays (or in floating point for the FP
//! baseline).

mod conv;
mod resnet18;
mod resnet20;

use std::sync::Mutex;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use cim_core::{CimConfigError, CimConv2d, LayerCounts};
use serde::{Deserialize, Serialize};

pub use conv::{CimSettings, Conv3x3, ConvKind};
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

    /// The layers that run on CIM arrays, in forward order.
    pub fn cim_layers(&self) -> Vec<&CimConv2d> {
        self.convs().into_iter().filter_map(Conv3x3::cim).collect()
    }

    /// The layers that run on CIM arrays, mutably.
    pub fn cim_layers_mut(&mut self) -> Vec<&mut CimConv2d> {
        self.convs_mut().into_iter().filter_map(Conv3x3::cim_mut).collect()
    }

    /// Hardware counts summed over the CIM layers; ADC conversions and dequantization multiplies
    /// are per image (each layer's per-pixel count times its output pixels for `input_size`).
    pub fn hardware_counts(&self, input_size: usize) -> ModelCounts {
        let mut total = ModelCounts::default();
        for (layer, out_pixels) in self.cim_layers().into_iter().zip(self.cim_output_pixels(input_size)) {
            let c = layer.counts();
            total.layers += 1;
            total.per_layer_sum = total.per_layer_sum + c;
            total.adc_conversions_per_image += c.adc_conversions_per_pixel * out_pixels;
            total.dequant_multiplies_per_image += c.dequant_multiplies_per_pixel * out_pixels;
            total.window_adds_per_image += c.window_adds_per_pixel * out_pixels;
        }
        total
    }

    /// Output pixels of every CIM layer for a square input of `input_size`.
    fn cim_output_pixels(&self, input_size: usize) -> Vec<usize> {
        match self {
            Model::Resnet20(m) => m.cim_output_pixels(input_size),
            Model::Resnet18(m) => m.cim_output_pixels(input_size),
        }
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
