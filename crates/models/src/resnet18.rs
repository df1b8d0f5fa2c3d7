//! ResNet-18 for ImageNet (He et al. 2016): 7x7 stride-2 stem with max pooling, four stages of
//! two basic blocks (64, 128, 256, 512 channels; conv-BN-ReLU, conv-BN, add, ReLU), 1x1
//! projection shortcuts with BN where the shape changes, global average pooling, linear.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use cim_core::CimConfigError;

use crate::Arch;
use crate::conv::{Conv3x3, ConvKind, apply_float, float_conv};
use crate::norm::{Rectify, batch_norm};

/// A 1x1 projection with its batch norm.
#[derive(Module, Debug)]
pub struct Downsample {
    conv: Conv2d,
    bn: BatchNorm,
}

/// One basic block.
#[derive(Module, Debug)]
pub struct BasicBlock {
    conv1: Conv3x3,
    bn1: BatchNorm,
    conv2: Conv3x3,
    bn2: BatchNorm,
    downsample: Option<Downsample>,
    stride: usize,
}

impl BasicBlock {
    /// The block whose first conv is the model's 3x3 conv number `first_conv`.
    fn new(
        kind: &ConvKind,
        first_conv: usize,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        device: &Device,
    ) -> Result<Self, CimConfigError> {
        let downsample = (stride != 1 || in_channels != out_channels).then(|| Downsample {
            conv: float_conv(in_channels, out_channels, 1, stride, 0, device),
            bn: BatchNormConfig::new(out_channels).init(device),
        });
        Ok(Self {
            conv1: Conv3x3::new(kind, first_conv, in_channels, out_channels, stride, device)?,
            bn1: BatchNormConfig::new(out_channels).init(device),
            conv2: Conv3x3::new(kind, first_conv + 1, out_channels, out_channels, 1, device)?,
            bn2: BatchNormConfig::new(out_channels).init(device),
            downsample,
            stride,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let skip = match &self.downsample {
            Some(d) => batch_norm(&d.bn, apply_float(&d.conv, x.clone()), Rectify::Off),
            None => x.clone(),
        };
        // bn1's output feeds conv2 alone: conv2's input clamp (clamp form) joins bn1's pass
        let act = self.conv2.input_rectify();
        let out = batch_norm(&self.bn1, self.conv1.forward(x), act);
        let out = batch_norm(&self.bn2, self.conv2.forward_rectified(out, act), Rectify::Off);
        relu(out.add(skip))
    }
}

/// ResNet-18.
#[derive(Module, Debug)]
pub struct ResNet18 {
    stem: Conv2d,
    stem_bn: BatchNorm,
    pool: MaxPool2d,
    blocks: Vec<BasicBlock>,
    avg: AdaptiveAvgPool2d,
    fc: Linear,
}

impl ResNet18 {
    /// Builds the network.
    pub fn new(in_channels: usize, classes: usize, kind: &ConvKind, device: &Device) -> Result<Self, CimConfigError> {
        let blocks = Arch::Resnet18
            .blocks()
            .into_iter()
            .enumerate()
            .map(|(i, b)| BasicBlock::new(kind, 2 * i, b.in_channels, b.out_channels, b.stride, device))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            stem: float_conv(in_channels, 64, 7, 2, 3, device),
            stem_bn: BatchNormConfig::new(64).init(device),
            pool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            blocks,
            avg: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(512, classes).init(device),
        })
    }

    /// Logits of a batch.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(batch_norm(&self.stem_bn, apply_float(&self.stem, x), Rectify::Relu));
        let mut x = x;
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.fc.forward(self.avg.forward(x).flatten(1, 3))
    }

    pub(crate) fn convs(&self) -> Vec<&Conv3x3> {
        self.blocks.iter().flat_map(|b| [&b.conv1, &b.conv2]).collect()
    }

    pub(crate) fn convs_mut(&mut self) -> Vec<&mut Conv3x3> {
        self.blocks.iter_mut().flat_map(|b| [&mut b.conv1, &mut b.conv2]).collect()
    }
}
