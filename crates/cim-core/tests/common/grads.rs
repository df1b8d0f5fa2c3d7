//! Gradients of the layer, and the hand-derived reference they must equal: a plain convolution
//! of the activation codes with the dequantized weights.
#![allow(dead_code)]

use burn::tensor::Tensor;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use cim_core::CimConv2d;
use cim_core::activation::activation_codes;
use cim_core::lsq::scale_grad;

use super::{Dense, test_device};

pub struct Grads {
    pub y: Vec<f64>,
    pub x: Vec<f64>,
    pub w: Vec<f64>,
    pub s_w: Vec<f64>,
}

/// Forward + backward of `sum(y * r)` through the layer.
pub fn layer_grads(layer: &CimConv2d, x: &Dense, r: &Dense) -> Grads {
    let d = test_device().autodiff();
    let x_t: Tensor<4> = x.tensor::<4>(&d).require_grad();
    let y = layer.forward(x_t.clone());
    let grads = y.clone().mul(r.tensor::<4>(&d)).sum().backward();
    Grads {
        y: Dense::from_tensor(y).data,
        x: Dense::from_tensor(x_t.grad(&grads).unwrap()).data,
        w: Dense::from_tensor(layer.weight.val().grad(&grads).unwrap()).data,
        s_w: Dense::from_tensor(layer.weight_scale.val().grad(&grads).unwrap()).data,
    }
}

/// The hand-derived reference: a plain convolution of a_int / (2^A - 1) with weights s_w * q,
/// q = LSQ's codes (round and clamp straight through, LSQ's step gradient and its scale) or the
/// layer's own weight quantizer's.
pub fn plain_conv_grads(layer: &CimConv2d, x: &Dense, r: &Dense) -> Grads {
    let d = test_device().autodiff();
    let cfg = layer.config().clone();
    let t = *layer.tiling();
    let x_t: Tensor<4> = x.tensor::<4>(&d).require_grad();
    let w = layer.weight.val().detach().require_grad();
    let s = layer.weight_scale.val().detach().require_grad();
    // expand the steps to every weight, with LSQ's gradient scale per group
    let quantizer = layer.weight_quantizer();
    let granularity = quantizer.granularity();
    let members = t.scale_group_members(granularity);
    let range = layer.slicing().weight_range();
    let g: Vec<f32> = members.iter().map(|m| quantizer.grad_scale(m.weights, range)).collect();
    let s_scaled = scale_grad(s.clone(), Tensor::from_floats(g.as_slice(), &d));
    let k2 = cfg.kernel_size * cfg.kernel_size;
    let mut index = Vec::new();
    for c in 0..cfg.out_channels {
        for ch in 0..cfg.in_channels {
            for _ in 0..k2 {
                index.push(t.scale_group(granularity, ch / t.channels_per_array, c) as i64);
            }
        }
    }
    let n = index.len();
    let idx = Tensor::<1, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(index, [n]), &d);
    let s_full = s_scaled.select(0, idx).reshape(w.dims());
    let shape = w.dims();
    let ratio = w.clone().div(s_full.clone()).reshape([1, 1, shape.iter().product::<usize>()]);
    let codes = quantizer.code_tensor(ratio, range).reshape(shape);
    let w_hat = codes.mul(s_full);
    let a = activation_codes(x_t.clone(), cfg.act_bits).div_scalar(cfg.act_levels());
    let opts = ConvOptions::new([cfg.stride; 2], [cfg.padding; 2], [1, 1], 1);
    let y = conv2d(a, w_hat, None, opts);
    let grads = y.clone().mul(r.tensor::<4>(&d)).sum().backward();
    Grads {
        y: Dense::from_tensor(y).data,
        x: Dense::from_tensor(x_t.grad(&grads).unwrap()).data,
        w: Dense::from_tensor(w.grad(&grads).unwrap()).data,
        s_w: Dense::from_tensor(s.grad(&grads).unwrap()).data,
    }
}
