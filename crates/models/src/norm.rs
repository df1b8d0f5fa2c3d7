//! Batch norm (and the ReLU, or ReLU and clamp, after it) of the residual blocks.

use burn::nn::BatchNorm;
use burn::tensor::Tensor;
pub use flex_kernels::batch_norm::Rectify;
use flex_kernels::batch_norm::rectify_reference;

/// `bn` applied to `x`, then `rectify`. In training (an autodiff device and a trainable
/// layer, burn's own rule) through [`flex_kernels::batch_norm::batch_norm_train`], one pass each way
/// on Flex, with the running statistics updated as burn's `BatchNorm` updates them; otherwise
/// burn's forward.
pub fn batch_norm(bn: &BatchNorm, x: Tensor<4>, rectify: Rectify) -> Tensor<4> {
    if !(x.device().is_autodiff() && bn.training.is_enabled()) {
        return rectify_reference(bn.forward(x), rectify);
    }
    let device = x.device();
    let r = flex_kernels::batch_norm::batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon, rectify);
    let update = |running: Tensor<1>, batch: Tensor<1>| {
        running.to_device(&device).mul_scalar(1.0 - bn.momentum).add(batch.mul_scalar(bn.momentum)).detach()
    };
    bn.running_mean.update(update(bn.running_mean.value_sync(), r.mean));
    bn.running_var.update(update(bn.running_var.value_sync(), r.variance));
    r.output
}
