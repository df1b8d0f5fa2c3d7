//! Pre-activation ResNet-20 for 32x32 inputs (He et al. 2016, "Identity Mappings"): a 3x3 stem,
//! three stages of three basic blocks with 16, 32 and 64 channels, BN-ReLU before every conv,
//! 1x1 projection shortcuts where the shape changes, then BN-ReLU, global average pooling and a
//! linear classifier.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use cim_core::CimConfigError;

use crate::Arch;
use crate::conv::{Conv3x3, ConvKind, apply_float, float_conv};
use crate::norm::{Rectify, batch_norm};

/// One pre-activation basic block.
#[derive(Module, Debug)]
pub struct PreActBlock {
    bn1: BatchNorm,
    conv1: Conv3x3,
    bn2: BatchNorm,
    conv2: Conv3x3,
    shortcut: Option<Conv2d>,
    stride: usize,
}

impl PreActBlock {
    /// The block whose first conv is the model's 3x3 conv number `first_conv`.
    fn new(
        kind: &ConvKind,
        first_conv: usize,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        device: &Device,
    ) -> Result<Self, CimConfigError> {
        let shortcut = (stride != 1 || in_channels != out_channels)
            .then(|| float_conv(in_channels, out_channels, 1, stride, 0, device));
        Ok(Self {
            bn1: BatchNormConfig::new(in_channels).init(device),
            conv1: Conv3x3::new(kind, first_conv, in_channels, out_channels, stride, device)?,
            bn2: BatchNormConfig::new(out_channels).init(device),
            conv2: Conv3x3::new(kind, first_conv + 1, out_channels, out_channels, 1, device)?,
            shortcut,
            stride,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // a batch norm whose output feeds one conv alone does that conv's input clamp (clamp
        // form) in its own pass; a projection shortcut reads bn1's output unclamped
        let act1 = if self.shortcut.is_none() { self.conv1.input_rectify() } else { Rectify::Relu };
        let pre = batch_norm(&self.bn1, x.clone(), act1);
        let skip = match &self.shortcut {
            Some(conv) => apply_float(conv, pre.clone()),
            None => x,
        };
        let out = self.conv1.forward_rectified(pre, act1);
        let act2 = self.conv2.input_rectify();
        let out = self.conv2.forward_rectified(batch_norm(&self.bn2, out, act2), act2);
        out.add(skip)
    }
}

/// Pre-activation ResNet-20.
#[derive(Module, Debug)]
pub struct ResNet20 {
    stem: Conv2d,
    blocks: Vec<PreActBlock>,
    bn: BatchNorm,
    pool: AdaptiveAvgPool2d,
    fc: Linear,
}

impl ResNet20 {
    /// Builds the network.
    pub fn new(in_channels: usize, classes: usize, kind: &ConvKind, device: &Device) -> Result<Self, CimConfigError> {
        let blocks = Arch::Resnet20
            .blocks()
            .into_iter()
            .enumerate()
            .map(|(i, b)| PreActBlock::new(kind, 2 * i, b.in_channels, b.out_channels, b.stride, device))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            stem: float_conv(in_channels, 16, 3, 1, 1, device),
            blocks,
            bn: BatchNormConfig::new(64).init(device),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(64, classes).init(device),
        })
    }

    /// Logits of a batch.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = apply_float(&self.stem, x);
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = self.pool.forward(batch_norm(&self.bn, x, Rectify::Relu));
        self.fc.forward(x.flatten(1, 3))
    }

    pub(crate) fn convs(&self) -> Vec<&Conv3x3> {
        self.blocks.iter().flat_map(|b| [&b.conv1, &b.conv2]).collect()
    }

    pub(crate) fn convs_mut(&mut self) -> Vec<&mut Conv3x3> {
        self.blocks.iter_mut().flat_map(|b| [&mut b.conv1, &mut b.conv2]).collect()
    }
}
