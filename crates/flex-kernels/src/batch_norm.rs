//! Batch normalization in training mode, optionally followed by ReLU (or ReLU then a clamp to
//! [0, 1]), as one pass forward and one backward on Flex.
//!
//! burn's generic batch norm reads the batch statistics through a [B, C] -> [C, B] transpose of
//! the activation (twice forward, twice backward), and ReLU adds a pass and an autodiff node of
//! its own (a clamp to [0, 1] two more). Here the statistics are summed plane by plane in place
//! ([B, C, H, W] is already C planes per image), the output and its rectifier are one pass, and the
//! backward recomputes the normalized values and the rectifier's mask from the input instead of
//! keeping them. Every per-channel
//! sum runs over its planes in image order: bit-identical whatever the thread count. Other
//! backends take burn's `batch_norm_train`, `relu` and `clamp` ([`batch_norm_reference`]).

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::autodiff::{AutodiffTensor, backward_with, tracked};
use crate::host::{f32_slice, flex_tensor, fused_available, written_by};

/// What follows the normalization in the same pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rectify {
    /// Nothing: the affine output.
    Off,
    /// ReLU: the gradient passes where the output is above 0 (as burn's `relu` passes it).
    Relu,
    /// ReLU, then a clamp to [0, 1]: the same values and gradients as burn's `relu` followed by
    /// `clamp(0, 1)` (the gradient passes where 0 < y <= 1: burn's clamp blocks only values above
    /// the bound).
    UnitClamp,
}

impl Rectify {
    /// The rectified value of the normalized `y`.
    #[inline(always)]
    fn apply(self, y: f32) -> f32 {
        match self {
            Rectify::Off => y,
            Rectify::Relu => y.max(0.0),
            // not `clamp`: a NaN goes to 0 here, as through the ReLU arm
            #[allow(clippy::manual_clamp)]
            Rectify::UnitClamp => y.max(0.0).min(1.0),
        }
    }

    /// The output gradient `g` where the normalized `y` passed the rectifier, else 0.
    #[inline(always)]
    fn passed(self, g: f32, y: f32) -> f32 {
        let passes = match self {
            Rectify::Off => true,
            Rectify::Relu => y > 0.0,
            Rectify::UnitClamp => y > 0.0 && y <= 1.0,
        };
        if passes { g } else { 0.0 }
    }
}

/// Batch norm (training mode) with an optional ReLU, as a backend extension (Flex, and autodiff
/// over it).
#[backend_extension(Flex, Autodiff)]
pub trait BatchNormOps: Backend {
    /// The batch mean and biased variance of each channel of x [B, C, ...]: [2, C]. A constant
    /// under autodiff: the gradient through the statistics is part of the normalization's.
    fn batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// gamma * (x - mean) / sqrt(var + epsilon) + beta per channel, then `rectify`;
    /// `stats` are [`Self::batch_stats`] of x.
    fn batch_norm_act(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
        rectify: Rectify,
    ) -> FloatTensor<Self>;

    /// Gradients of [`Self::batch_norm_act`] with respect to x (through the statistics too),
    /// gamma and beta.
    fn batch_norm_act_backward(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
        rectify: Rectify,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// Sizes of x [B, C, ...]: images, channels, values per plane.
#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    channels: usize,
    plane: usize,
}

impl Dims {
    fn new(x: &FlexTensor) -> Self {
        let s = x.layout().shape();
        assert!(s.len() >= 2, "batch norm: input {s:?} is not [B, C, ...]");
        Self { batch: s[0], channels: s[1], plane: s[2..].iter().product() }
    }

    /// The planes of channel `c`, in image order.
    fn planes_of<'a>(&self, x: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> {
        (0..self.batch).map(move |b| &x[(b * self.channels + c) * self.plane..][..self.plane])
    }

    /// Values per channel.
    fn count(&self) -> f64 {
        (self.batch * self.plane) as f64
    }
}

/// Per channel: (mean, biased variance), two passes in f64.
fn stats(x: &[f32], d: Dims) -> Vec<(f32, f32)> {
    (0..d.channels)
        .into_par_iter()
        .map(|c| {
            let sum: f64 = d.planes_of(x, c).map(|p| p.iter().map(|&v| v as f64).sum::<f64>()).sum();
            let mean = sum / d.count();
            let sq: f64 = d.planes_of(x, c).map(|p| p.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>()).sum();
            (mean as f32, (sq / d.count()) as f32)
        })
        .collect()
}

/// The affine map of each channel: y = x * scale + shift, with scale = gamma / sqrt(var + eps).
fn affine(gamma: &[f32], beta: &[f32], stats: &[f32], epsilon: f64) -> Vec<(f32, f32, f32)> {
    let channels = gamma.len();
    (0..channels)
        .map(|c| {
            let (mean, var) = (stats[c], stats[channels + c]);
            let inv_std = (1.0 / (var as f64 + epsilon).sqrt()) as f32;
            let scale = gamma[c] * inv_std;
            (scale, beta[c] - mean * scale, inv_std)
        })
        .collect()
}

fn forward(x: &[f32], gamma: &[f32], beta: &[f32], stats: &[f32], epsilon: f64, rectify: Rectify, d: Dims) -> Vec<f32> {
    let maps = affine(gamma, beta, stats, epsilon);
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(d.plane).zip(x.par_chunks(d.plane)).enumerate().for_each(|(p, (o, xs))| {
            let (scale, shift, _) = maps[p % d.channels];
            let o = o.iter_mut().zip(xs);
            // one loop per rectifier, so that each vectorizes without a branch inside
            match rectify {
                Rectify::Off => o.for_each(|(o, &v)| _ = o.write(v * scale + shift)),
                Rectify::Relu => o.for_each(|(o, &v)| _ = o.write(Rectify::Relu.apply(v * scale + shift))),
                Rectify::UnitClamp => o.for_each(|(o, &v)| _ = o.write(Rectify::UnitClamp.apply(v * scale + shift))),
            }
        })
    };
    // SAFETY: the planes cover the output, and each plane's loop writes every value of it.
    unsafe { written_by(x.len(), fill) }
}

/// The backward given the forward's per-channel `maps` ([`affine`]) and batch `stats`.
fn backward(
    grad: &[f32],
    x: &[f32],
    maps: &[(f32, f32, f32)],
    stats: &[f32],
    rectify: Rectify,
    d: Dims,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    // per channel: sum of g (dL/dbeta) and of g * x_hat (dL/dgamma), g the gradient past the ReLU
    let sums: Vec<(f64, f64)> = (0..d.channels)
        .into_par_iter()
        .map(|c| {
            let (scale, shift, inv_std) = maps[c];
            let mean = stats[c];
            let planes = d.planes_of(x, c).zip(d.planes_of(grad, c));
            planes.fold((0f64, 0f64), |(sg, sgx), (xs, gs)| {
                let (a, b) = xs.iter().zip(gs).fold((0f32, 0f32), |(a, b), (&v, &g)| {
                    let g = rectify.passed(g, v * scale + shift);
                    (a + g, b + g * (v - mean) * inv_std)
                });
                (sg + a as f64, sgx + b as f64)
            })
        })
        .collect();
    let n = d.count();
    let fill = |grad_x: &mut [MaybeUninit<f32>]| {
        grad_x.par_chunks_mut(d.plane).enumerate().for_each(|(p, gx)| {
            let c = p % d.channels;
            let (scale, shift, inv_std) = maps[c];
            let (mean, mean_g, mean_gx) = (stats[c], (sums[c].0 / n) as f32, (sums[c].1 / n) as f32);
            let (xs, gs) = (&x[p * d.plane..][..d.plane], &grad[p * d.plane..][..d.plane]);
            for ((o, &v), &g) in gx.iter_mut().zip(xs).zip(gs) {
                let g = rectify.passed(g, v * scale + shift);
                o.write(scale * (g - mean_g - (v - mean) * inv_std * mean_gx));
            }
        })
    };
    // SAFETY: the planes cover the gradient, and each plane's loop writes every value of it.
    let grad_x = unsafe { written_by(x.len(), fill) };
    let grad_gamma = sums.iter().map(|s| s.1 as f32).collect();
    let grad_beta = sums.iter().map(|s| s.0 as f32).collect();
    (grad_x, grad_gamma, grad_beta)
}

impl BatchNormOps for Flex {
    fn batch_stats(x: FlexTensor) -> FlexTensor {
        let d = Dims::new(&x);
        let s = stats(&f32_slice(&x), d);
        let values = s.iter().map(|v| v.0).chain(s.iter().map(|v| v.1)).collect();
        flex_tensor(values, vec![2, d.channels])
    }

    fn batch_norm_act(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stats: FlexTensor,
        epsilon: f64,
        rectify: Rectify,
    ) -> FlexTensor {
        let d = Dims::new(&x);
        let (g, b, s) = (f32_slice(&gamma), f32_slice(&beta), f32_slice(&stats));
        let out = forward(&f32_slice(&x), &g, &b, &s, epsilon, rectify, d);
        flex_tensor(out, x.layout().shape().to_vec())
    }

    fn batch_norm_act_backward(
        grad: FlexTensor,
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stats: FlexTensor,
        epsilon: f64,
        rectify: Rectify,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let d = Dims::new(&x);
        let (g, b, s) = (f32_slice(&gamma), f32_slice(&beta), f32_slice(&stats));
        let maps = affine(&g, &b, &s, epsilon);
        let (gx, gg, gb) = backward(&f32_slice(&grad), &f32_slice(&x), &maps, &s, rectify, d);
        (
            flex_tensor(gx, x.layout().shape().to_vec()),
            flex_tensor(gg, vec![d.channels]),
            flex_tensor(gb, vec![d.channels]),
        )
    }
}

#[derive(Debug)]
struct BatchNormBackward;

impl<B: Backend + BatchNormOps> Backward<B, 4> for BatchNormBackward {
    type State = ([NodeId; 4], (f64, Rectify));

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        // the statistics are a constant: no gradient of their own (see `batch_stats`)
        backward_with::<B, _, 4, 3>(ops, grads, checkpointer, |grad, [x, gamma, beta, stats], (epsilon, rectify)| {
            let (gx, gg, gb) = B::batch_norm_act_backward(grad, x, gamma, beta, stats, epsilon, rectify);
            [gx, gg, gb]
        });
    }
}

impl<B: Backend + BatchNormOps, C: CheckpointStrategy> BatchNormOps for Autodiff<B, C> {
    fn batch_stats(x: AutodiffTensor<B, C>) -> AutodiffTensor<B, C> {
        AutodiffTensor::<B, C>::new(B::batch_stats(x.into_primitive()))
    }

    fn batch_norm_act(
        x: AutodiffTensor<B, C>,
        gamma: AutodiffTensor<B, C>,
        beta: AutodiffTensor<B, C>,
        stats: AutodiffTensor<B, C>,
        epsilon: f64,
        rectify: Rectify,
    ) -> AutodiffTensor<B, C> {
        tracked::<B, C, _, _, 4>(BatchNormBackward, [x, gamma, beta, stats], (epsilon, rectify), |[x, g, b, s]| {
            B::batch_norm_act(x, g, b, s, epsilon, rectify)
        })
    }

    fn batch_norm_act_backward(
        grad: AutodiffTensor<B, C>,
        x: AutodiffTensor<B, C>,
        gamma: AutodiffTensor<B, C>,
        beta: AutodiffTensor<B, C>,
        stats: AutodiffTensor<B, C>,
        epsilon: f64,
        rectify: Rectify,
    ) -> (AutodiffTensor<B, C>, AutodiffTensor<B, C>, AutodiffTensor<B, C>) {
        // Second-order gradients are not needed: the result is a constant.
        let (gx, gg, gb) = B::batch_norm_act_backward(
            grad.into_primitive(),
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            stats.into_primitive(),
            epsilon,
            rectify,
        );
        (AutodiffTensor::<B, C>::new(gx), AutodiffTensor::<B, C>::new(gg), AutodiffTensor::<B, C>::new(gb))
    }
}

/// Training-mode batch norm of x [B, C, H, W] and its batch statistics.
pub struct BatchNormOutput {
    /// The normalized (and, if asked, rectified) x.
    pub output: Tensor<4>,
    /// The batch mean per channel (detached).
    pub mean: Tensor<1>,
    /// The biased batch variance per channel (detached).
    pub variance: Tensor<1>,
}

/// Batch norm in training mode, then `rectify`: the one-pass op on Flex, [`batch_norm_reference`]
/// elsewhere.
pub fn batch_norm_train(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    rectify: Rectify,
) -> BatchNormOutput {
    if !fused_available(&x.device()) {
        return batch_norm_reference(x, gamma, beta, epsilon, rectify);
    }
    type D = burn::backend::Dispatch;
    let stats = Tensor::<2>::from_dispatch(<D as BatchNormOps>::batch_stats(x.clone().into_dispatch()));
    let output = Tensor::from_dispatch(<D as BatchNormOps>::batch_norm_act(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        stats.clone().into_dispatch(),
        epsilon,
        rectify,
    ));
    // one range per dimension: row i of the [2, C] statistics
    #[allow(clippy::single_range_in_vec_init)]
    let [mean, variance] = [0, 1].map(|i| stats.clone().slice([i..i + 1]).reshape([-1]).detach());
    BatchNormOutput { output, mean, variance }
}

/// The same by burn's `batch_norm_train`, `relu` and `clamp`.
pub fn batch_norm_reference(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    rectify: Rectify,
) -> BatchNormOutput {
    let r = burn::tensor::module::batch_norm_train(x, gamma, beta, epsilon);
    BatchNormOutput { output: rectify_reference(r.output, rectify), mean: r.mean, variance: r.variance }
}

/// `rectify` by burn's own ops: `relu`, then `clamp(0, 1)` for [`Rectify::UnitClamp`].
pub fn rectify_reference(y: Tensor<4>, rectify: Rectify) -> Tensor<4> {
    match rectify {
        Rectify::Off => y,
        Rectify::Relu => relu(y),
        Rectify::UnitClamp => relu(y).clamp(0.0, 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, test_flat, test_tensor, test_values};
    use burn::tensor::Device;

    /// Output, statistics and the gradients of x, gamma and beta against burn's batch norm (and
    /// relu and clamp), with each rectifier, for a shifted, scaled input.
    #[test]
    fn matches_burn_batch_norm_and_relu() {
        let device = Device::flex().autodiff();
        let cases = [
            (4, 3, 5, 5, Rectify::Relu),
            (7, 5, 4, 3, Rectify::Off),
            (1, 2, 6, 6, Rectify::Relu),
            (5, 4, 6, 5, Rectify::UnitClamp),
        ];
        for (seed, (b, c, h, w, act)) in cases.into_iter().enumerate() {
            let seed = seed as u64;
            let x = (test_tensor([b, c, h, w], -1.0..1.0, 40 + seed, &device) * 3.0 + 0.5).detach().require_grad();
            let gamma = test_tensor([c], 0.5..1.5, 50 + seed, &device).require_grad();
            let beta = test_tensor([c], -0.5..0.5, 60 + seed, &device).require_grad();
            let probe = test_tensor([b, c, h, w], -1.0..1.0, 70 + seed, &device);
            let run = |f: fn(Tensor<4>, Tensor<1>, Tensor<1>, f64, Rectify) -> BatchNormOutput| {
                let r = f(x.clone(), gamma.clone(), beta.clone(), 1e-5, act);
                let grads = (r.output.clone() * probe.clone()).sum().backward();
                let g = |t: &Tensor<1>| test_flat(t.grad(&grads).unwrap());
                [
                    test_flat(r.output),
                    test_flat(r.mean),
                    test_flat(r.variance),
                    test_flat(x.grad(&grads).unwrap()),
                    g(&gamma),
                    g(&beta),
                ]
            };
            let (fast, reference) = (run(batch_norm_train), run(batch_norm_reference));
            for (i, what) in ["output", "mean", "variance", "dL/dx", "dL/dgamma", "dL/dbeta"].iter().enumerate() {
                assert_close(&format!("case {seed} {what}"), &fast[i], &reference[i], 2e-5, 1.0);
            }
        }
    }

    /// Same inputs, same bits, whatever the rayon pool's size.
    #[test]
    fn does_not_depend_on_the_thread_count() {
        let d = Dims { batch: 9, channels: 3, plane: 20 };
        let values = |len, seed| test_values(len, -1.0..1.0, seed);
        let (x, grad) = (values(9 * 3 * 20, 1), values(9 * 3 * 20, 2));
        let (gamma, beta) = (values(3, 3), values(3, 4));
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let s = stats(&x, d);
                let s: Vec<f32> = s.iter().map(|v| v.0).chain(s.iter().map(|v| v.1)).collect();
                let maps = affine(&gamma, &beta, &s, 1e-5);
                let act = Rectify::UnitClamp;
                (forward(&x, &gamma, &beta, &s, 1e-5, act, d), backward(&grad, &x, &maps, &s, act, d))
            })
        };
        assert_eq!(run(1), run(3));
    }
}
