//! The floating-point convolution of the layers outside the arrays (the stem, the 1x1 shortcuts,
//! every conv of a floating-point model): [B, C, H, W] against weights [C_out, C, k, k], no bias,
//! no groups.
//!
//! On Flex it runs one image per task: the image's im2col [C*k*k, H'*W'] stays in the cache
//! between its copy and its product, and the output is written channel-major in place
//! ([C_out, H'*W'] = weights x im2col), so no layout change surrounds the product. The backward
//! recomputes the im2col (keeping it would cost the size of the output times k*k per layer),
//! takes dL/dx through col2im of weights^T x dL/dy, and sums dL/dweights over fixed chunks of
//! images in a fixed order: bit-identical whatever the thread count. Other backends take burn's
//! `conv2d` ([`conv2d_reference`]).

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::Tensor;
use burn::tensor::ops::ConvOptions;
use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::autodiff::{AutodiffTensor, backward_with, tracked};
use crate::host::{f32_slice, flex_tensor, fused_available, written_by, zeros};
use crate::im2col::{ConvGeometry, PlaneShape, Write, matmul, matmul_into};

/// Images per partial weight gradient: the chunks, not the threads, fix the summation order.
const IMAGES_PER_CHUNK: usize = 8;

/// The floating-point convolution as a backend extension (Flex, and autodiff over it).
#[backend_extension(Flex, Autodiff)]
pub trait FloatConvOps: Backend {
    /// Input [B, C, H, W] and weights [C_out, C, k, k] to output [B, C_out, H', W'].
    fn float_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self>;

    /// Gradients of [`Self::float_conv2d`] with respect to the input and the weights.
    fn float_conv2d_backward(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// Sizes of one call, read off the tensors.
#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    channels: usize,
    out_channels: usize,
    plane: PlaneShape,
}

impl Dims {
    fn new(x: &FlexTensor, weight: &FlexTensor, stride: usize, padding: usize) -> Self {
        let (a, w) = (x.layout().shape(), weight.layout().shape());
        assert!(
            a.len() == 4 && w.len() == 4 && w[1] == a[1] && w[2] == w[3],
            "float_conv2d: input {a:?} and weights {w:?} are not [B, C, H, W] and [C_out, C, k, k]"
        );
        let geo = ConvGeometry { kernel: w[2], stride, padding };
        Self { batch: a[0], channels: a[1], out_channels: w[0], plane: PlaneShape::new(a[2], a[3], geo) }
    }

    /// im2col rows: C * k * k.
    fn rows(&self) -> usize {
        self.channels * self.plane.geo.kernel * self.plane.geo.kernel
    }

    fn image_len(&self) -> usize {
        self.channels * self.plane.h * self.plane.w
    }

    fn out_len(&self) -> usize {
        self.out_channels * self.plane.out_pixels()
    }

    /// Whether the im2col of an image is the image itself (1x1, stride 1, no padding).
    fn im2col_is_identity(&self) -> bool {
        let g = self.plane.geo;
        g.kernel == 1 && g.stride == 1 && g.padding == 0
    }
}

/// The im2col of `image`: itself where that is the identity, else written into `cols`.
fn columns_of<'a>(image: &'a [f32], d: Dims, cols: &'a mut Vec<f32>) -> &'a [f32] {
    if d.im2col_is_identity() {
        return image;
    }
    cols.resize(d.rows() * d.plane.out_pixels(), 0.0);
    d.plane.im2col_image(image, d.channels, cols);
    cols
}

fn forward(x: &[f32], weight: &[f32], d: Dims) -> Vec<f32> {
    let n = d.plane.out_pixels();
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(d.out_len()).enumerate().for_each_init(Vec::new, |cols, (b, out_b)| {
            let cols = columns_of(&x[b * d.image_len()..][..d.image_len()], d, cols);
            // out_b [C_out, n] = weights [C_out, rows] x cols [rows, n], every value written
            let (rows, oc) = (d.rows(), d.out_channels);
            matmul_into(oc, n, rows, (out_b, n), (weight, rows as isize, 1), (cols, n as isize, 1), false);
        })
    };
    // SAFETY: the images' products cover the output: C_out rows of n values each, per image.
    unsafe { written_by(d.batch * d.out_len(), fill) }
}

fn backward(grad: &[f32], x: &[f32], weight: &[f32], d: Dims) -> (Vec<f32>, Vec<f32>) {
    let (n, rows, oc) = (d.plane.out_pixels(), d.rows(), d.out_channels);
    let mut grad_x = zeros(d.batch * d.image_len());
    let partials: Vec<Vec<f32>> = grad_x
        .par_chunks_mut(IMAGES_PER_CHUNK * d.image_len())
        .enumerate()
        .map_init(
            || (Vec::new(), vec![0f32; rows * n]),
            |(cols, grad_cols), (chunk, grad_x_chunk)| {
                let mut grad_w = vec![0f32; oc * rows];
                for (i, grad_x_b) in grad_x_chunk.chunks_exact_mut(d.image_len()).enumerate() {
                    let b = chunk * IMAGES_PER_CHUNK + i;
                    let grad_b = &grad[b * d.out_len()..][..d.out_len()];
                    let image = &x[b * d.image_len()..][..d.image_len()];
                    // dL/dweights += dL/dy_b [C_out, n] x cols^T [n, rows]
                    let cols = columns_of(image, d, cols);
                    let write = if i == 0 { Write::Over } else { Write::Add };
                    let (ni, ri) = (n as isize, rows as isize);
                    matmul(oc, rows, n, (&mut grad_w, rows, write), (grad_b, ni, 1), (cols, 1, ni), false);
                    // dL/dcols = weights^T [rows, C_out] x dL/dy_b [C_out, n], added back by col2im
                    if d.im2col_is_identity() {
                        matmul(rows, n, oc, (grad_x_b, n, Write::Over), (weight, 1, ri), (grad_b, ni, 1), false);
                    } else {
                        matmul(rows, n, oc, (grad_cols, n, Write::Over), (weight, 1, ri), (grad_b, ni, 1), false);
                        d.plane.col2im_image(grad_cols, d.channels, grad_x_b);
                    }
                }
                grad_w
            },
        )
        .collect();
    let mut grad_w = vec![0f32; oc * rows];
    for part in &partials {
        grad_w.iter_mut().zip(part).for_each(|(g, p)| *g += p);
    }
    (grad_x, grad_w)
}

impl FloatConvOps for Flex {
    fn float_conv2d(x: FlexTensor, weight: FlexTensor, stride: usize, padding: usize) -> FlexTensor {
        let d = Dims::new(&x, &weight, stride, padding);
        let out = forward(&f32_slice(&x), &f32_slice(&weight), d);
        flex_tensor(out, vec![d.batch, d.out_channels, d.plane.ho, d.plane.wo])
    }

    fn float_conv2d_backward(
        grad: FlexTensor,
        x: FlexTensor,
        weight: FlexTensor,
        stride: usize,
        padding: usize,
    ) -> (FlexTensor, FlexTensor) {
        let d = Dims::new(&x, &weight, stride, padding);
        let weight_shape = weight.layout().shape().to_vec();
        let (grad_x, grad_w) = backward(&f32_slice(&grad), &f32_slice(&x), &f32_slice(&weight), d);
        (flex_tensor(grad_x, x.layout().shape().to_vec()), flex_tensor(grad_w, weight_shape))
    }
}

#[derive(Debug)]
struct FloatConvBackward;

impl<B: Backend + FloatConvOps> Backward<B, 2> for FloatConvBackward {
    type State = ([NodeId; 2], (usize, usize));

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        backward_with::<B, _, 2, 2>(ops, grads, checkpointer, |grad, [x, weight], (stride, padding)| {
            let (gx, gw) = B::float_conv2d_backward(grad, x, weight, stride, padding);
            [gx, gw]
        });
    }
}

impl<B: Backend + FloatConvOps, C: CheckpointStrategy> FloatConvOps for Autodiff<B, C> {
    fn float_conv2d(
        x: AutodiffTensor<B, C>,
        weight: AutodiffTensor<B, C>,
        stride: usize,
        padding: usize,
    ) -> AutodiffTensor<B, C> {
        tracked::<B, C, _, _, 2>(FloatConvBackward, [x, weight], (stride, padding), |[x, w]| {
            B::float_conv2d(x, w, stride, padding)
        })
    }

    fn float_conv2d_backward(
        grad: AutodiffTensor<B, C>,
        x: AutodiffTensor<B, C>,
        weight: AutodiffTensor<B, C>,
        stride: usize,
        padding: usize,
    ) -> (AutodiffTensor<B, C>, AutodiffTensor<B, C>) {
        // Second-order gradients are not needed: the result is a constant.
        let (gx, gw) = B::float_conv2d_backward(
            grad.into_primitive(),
            x.into_primitive(),
            weight.into_primitive(),
            stride,
            padding,
        );
        (AutodiffTensor::<B, C>::new(gx), AutodiffTensor::<B, C>::new(gw))
    }
}

/// The convolution of `x` [B, C, H, W] with `weight` [C_out, C, k, k] (square kernel, no bias):
/// the per-image pass on Flex, [`conv2d_reference`] elsewhere.
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, stride: usize, padding: usize) -> Tensor<4> {
    if !fused_available(&x.device()) {
        return conv2d_reference(x, weight, stride, padding);
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as FloatConvOps>::float_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        stride,
        padding,
    ))
}

/// The same convolution by burn's `conv2d`.
pub fn conv2d_reference(x: Tensor<4>, weight: Tensor<4>, stride: usize, padding: usize) -> Tensor<4> {
    let options = ConvOptions::new([stride, stride], [padding, padding], [1, 1], 1);
    burn::tensor::module::conv2d(x, weight, None, options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, test_flat, test_tensor, test_values};
    use burn::tensor::Device;

    /// Forward, dL/dx and dL/dweights against burn's conv2d, for the geometries of the models
    /// (3x3 stride 1 and 2, 1x1 stride 2, 1x1 stride 1) and odd sizes, over batches that are not
    /// a multiple of the chunk.
    #[test]
    fn matches_burn_conv2d_forward_and_backward() {
        let device = Device::flex().autodiff();
        // (batch, C, C_out, H, W, k, stride, padding)
        for (seed, (b, c, oc, h, w, k, s, p)) in [
            (2, 3, 4, 6, 6, 3, 1, 1),
            (11, 5, 7, 7, 5, 3, 2, 1),
            (9, 4, 6, 8, 8, 1, 2, 0),
            (17, 6, 3, 5, 4, 1, 1, 0),
            (3, 2, 5, 7, 7, 3, 2, 0),
        ]
        .into_iter()
        .enumerate()
        {
            let seed = seed as u64;
            let x = test_tensor([b, c, h, w], -1.0..1.0, 10 + seed, &device).require_grad();
            let weight = test_tensor([oc, c, k, k], -1.0..1.0, 20 + seed, &device).require_grad();
            let ho = (h + 2 * p - k) / s + 1;
            let wo = (w + 2 * p - k) / s + 1;
            let probe = test_tensor([b, oc, ho, wo], -1.0..1.0, 30 + seed, &device);
            let run = |f: fn(Tensor<4>, Tensor<4>, usize, usize) -> Tensor<4>| {
                let (x, weight) = (x.clone(), weight.clone());
                let out = f(x.clone(), weight.clone(), s, p);
                let grads = (out.clone() * probe.clone()).sum().backward();
                (test_flat(out), test_flat(x.grad(&grads).unwrap()), test_flat(weight.grad(&grads).unwrap()))
            };
            let (fast, reference) = (run(conv2d), run(conv2d_reference));
            let case = format!("case {seed}");
            assert_close(&format!("{case} output"), &fast.0, &reference.0, 1e-5, 1.0);
            assert_close(&format!("{case} dL/dx"), &fast.1, &reference.1, 1e-5, 1.0);
            assert_close(&format!("{case} dL/dweights"), &fast.2, &reference.2, 1e-5, 1.0);
        }
    }

    /// Same inputs, same bits, whatever the rayon pool's size.
    #[test]
    fn the_backward_does_not_depend_on_the_thread_count() {
        let geo = ConvGeometry { kernel: 3, stride: 1, padding: 1 };
        let d = Dims { batch: 19, channels: 4, out_channels: 5, plane: PlaneShape::new(6, 6, geo) };
        let values = |len, seed| test_values(len, -1.0..1.0, seed);
        let x = values(d.batch * d.image_len(), 1);
        let weight = values(d.out_channels * d.rows(), 2);
        let grad = values(d.batch * d.out_len(), 3);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| backward(&grad, &x, &weight, d))
        };
        assert_eq!(run(1), run(3));
    }
}
