//! All (slice, row tile, column) partial sums of a layer in one pass (docs/SPEC.md section 1, "Fast
//! path vs. definition").
//!
//! The definition is a grouped convolution: the activation codes padded to G*n_c channels viewed
//! as G groups, against the digit planes stacked as [G * polarities * S * C_out, n_c, k, k].
//! Here the planes come as [G, P, R] (P = polarities * S * C_out planes of R = n_c*k*k word lines
//! per row tile) and the partial sums leave channel-major, [K, B, H', W'] with K = G * P ordered
//! (row tile, polarity, slice, column): each row tile is then ONE matrix product
//! [P, R_g] x [R_g, B*H'*W'] over the im2col of its channels, forward and backward, which is what
//! the Flex implementation does. The codes come unpadded, [B, C_in, H, W]: the word lines of the
//! last row tile beyond C_in hold zero codes, so its product runs over its R_g <= R real word
//! lines only (a 16-channel layer in arrays of 14 channels computes 16, not 28, channels' worth).
//! Other backends run the grouped convolution over the padded codes
//! ([`grouped_psums_reference`]).

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, backend_extension};
use burn::tensor::Tensor;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

use crate::slicing::BitSlicing;
use flex_kernels::host::fused_available;
use flex_kernels::im2col::ConvGeometry;

mod autodiff;
mod dims;
mod flex;
#[cfg(target_arch = "x86_64")]
mod int8;
mod path;
mod sparse;
mod through_adc;

pub use path::{PSUM_PATH_ENV, PsumPath, cpu_features, with_psum_path};
pub use through_adc::{PsumsThroughAdcOps, psums_through_adc, psums_through_adc_reference};

/// What a pass over weight codes needs besides its tensors: the convolution, and the slicing
/// that cuts the codes into digit planes ([`BitSlicing::digit_planes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightCodePass {
    /// Kernel, stride and padding.
    pub geo: ConvGeometry,
    /// B_w, b_c and the encoding of the codes.
    pub slicing: BitSlicing,
}

/// The partial-sum pass as a backend extension (Flex, and autodiff over it).
#[backend_extension(Flex, Autodiff)]
pub trait PsumOps: Backend {
    /// Activation codes [B, C_in, H, W] (C_in <= G*n_c; the missing channels are zero codes)
    /// and digit planes [G, P, R = n_c*k*k] to partial sums [G*P, B, H', W'].
    fn cim_psums(codes: FloatTensor<Self>, planes: FloatTensor<Self>, geo: ConvGeometry) -> FloatTensor<Self>;

    /// Gradients of [`Self::cim_psums`] with respect to the codes and the planes.
    fn cim_psums_backward(
        grad: FloatTensor<Self>,
        codes: FloatTensor<Self>,
        planes: FloatTensor<Self>,
        geo: ConvGeometry,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The same partial sums from integer weight codes [G, C_out, R], their digit planes cut
    /// inside by `pass.slicing`.
    fn cim_psums_of_weight_codes(
        codes: FloatTensor<Self>,
        weight_codes: FloatTensor<Self>,
        pass: WeightCodePass,
    ) -> FloatTensor<Self>;

    /// Gradients of [`Self::cim_psums_of_weight_codes`] with respect to the codes and the weight
    /// codes (through the digit straight-through estimator).
    fn cim_psums_of_weight_codes_backward(
        grad: FloatTensor<Self>,
        codes: FloatTensor<Self>,
        weight_codes: FloatTensor<Self>,
        pass: WeightCodePass,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// Partial sums [G*P, B, H', W'] of activation codes [B, G*n_c, H, W] and digit planes [G, P, R]:
/// the im2col + matrix-product pass on Flex, [`grouped_psums_reference`] elsewhere.
pub fn grouped_psums(codes: Tensor<4>, planes: Tensor<3>, geo: ConvGeometry) -> Tensor<4> {
    if !fused_available(&codes.device()) {
        return grouped_psums_reference(codes, planes, geo);
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as PsumOps>::cim_psums(
        codes.into_dispatch(),
        planes.into_dispatch(),
        geo,
    ))
}

/// Partial sums [G*P, B, H', W'] of activation codes [B, C_in, H, W] and integer weight codes
/// [G, C_out, R], whose digit planes `slicing` cuts ([`BitSlicing::digit_planes`], with its
/// gradient): one pass on Flex, whose backward needs one product per polarity for dL/dq instead
/// of one per slice; the digit planes and [`grouped_psums_reference`] elsewhere.
pub fn grouped_psums_of_weight_codes(
    codes: Tensor<4>,
    weight_codes: Tensor<3>,
    slicing: &BitSlicing,
    geo: ConvGeometry,
) -> Tensor<4> {
    if !fused_available(&codes.device()) {
        return grouped_psums_of_weight_codes_reference(codes, weight_codes, slicing, geo);
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as PsumOps>::cim_psums_of_weight_codes(
        codes.into_dispatch(),
        weight_codes.into_dispatch(),
        WeightCodePass { geo, slicing: *slicing },
    ))
}

/// The same from generic ops: [`BitSlicing::digit_planes`], then the grouped convolution.
pub fn grouped_psums_of_weight_codes_reference(
    codes: Tensor<4>,
    weight_codes: Tensor<3>,
    slicing: &BitSlicing,
    geo: ConvGeometry,
) -> Tensor<4> {
    let [groups, columns, rows] = weight_codes.dims();
    let planes = slicing.digit_planes(weight_codes);
    let p = slicing.polarities() * slicing.slices() * columns;
    grouped_psums_reference(codes, planes.reshape([groups, p, rows]), geo)
}

/// The same partial sums from burn's grouped convolution over the codes padded to G*n_c
/// channels with zeros (any backend).
pub fn grouped_psums_reference(codes: Tensor<4>, planes: Tensor<3>, geo: ConvGeometry) -> Tensor<4> {
    let [groups, p, rows] = planes.dims();
    let k = geo.kernel;
    let n_c = rows / (k * k);
    let [b, c, h, w] = codes.dims();
    let codes = match groups * n_c - c {
        0 => codes,
        missing => Tensor::cat(vec![codes.clone(), Tensor::zeros([b, missing, h, w], &codes.device())], 1),
    };
    let weights = planes.reshape([groups * p, n_c, k, k]);
    let options = ConvOptions::new([geo.stride; 2], [geo.padding; 2], [1, 1], groups);
    conv2d(codes, weights, None, options).swap_dims(0, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Encoding;
    use burn::tensor::Device;

    fn flat(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// The weight-code pass against digit planes + grouped convolution (generic ops): exact
    /// partial sums, and the gradients of codes and weight codes to float tolerance, for both
    /// encodings, with and without padding word lines.
    #[test]
    fn weight_code_pass_matches_digit_planes_and_the_grouped_convolution() {
        let device = Device::flex().autodiff();
        // (k, stride, padding, groups, n_c, columns, h, missing channels, B_w, b_c, encoding)
        for (seed, (k, stride, padding, groups, n_c, columns, h, missing, wb, cb, encoding)) in [
            (3, 1, 1, 2, 3, 5, 6, 2, 4, 2, Encoding::Differential),
            (3, 1, 1, 2, 3, 5, 6, 2, 4, 2, Encoding::Twos),
            (3, 2, 1, 3, 2, 4, 7, 0, 4, 1, Encoding::Twos),
            (1, 1, 0, 2, 4, 3, 5, 1, 6, 3, Encoding::Differential),
            (3, 2, 0, 1, 4, 2, 6, 0, 8, 4, Encoding::Differential),
        ]
        .into_iter()
        .enumerate()
        {
            let geo = ConvGeometry { kernel: k, stride, padding };
            let slicing = BitSlicing::new(wb, cb, encoding).unwrap();
            let range = slicing.weight_range();
            // batches beyond one chunk of the backward, and not a multiple of it
            let batch = [2, 11, 3, 17, 9][seed];
            let codes =
                crate::test_tensor([batch, groups * n_c - missing, h, h + 1], 0.0..15.0, seed as u64, &device).round();
            let q =
                crate::test_tensor([groups, columns, n_c * k * k], range.low..range.high, seed as u64 + 50, &device)
                    .round();
            let mut results = Vec::new();
            for fused in [true, false] {
                let c = codes.clone().detach().require_grad();
                let qq = q.clone().detach().require_grad();
                let f = if fused { grouped_psums_of_weight_codes } else { grouped_psums_of_weight_codes_reference };
                let y = f(c.clone(), qq.clone(), &slicing, geo);
                let r = crate::test_tensor(y.dims(), -1.0..1.0, 99, &device);
                let grads = y.clone().mul(r).sum().backward();
                results.push((
                    flat(y),
                    flat(c.grad(&grads).unwrap()),
                    qq.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap(),
                ));
            }
            let (a, b) = (&results[0], &results[1]);
            assert_eq!(a.0, b.0, "case {seed}: integer partial sums must be exact");
            for (name, x, y) in [("d/dcodes", &a.1, &b.1), ("d/dq", &a.2, &b.2)] {
                let scale = y.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                for (i, (u, v)) in x.iter().zip(y.iter()).enumerate() {
                    assert!((u - v).abs() <= 1e-5 * scale, "case {seed} {name}[{i}]: {u} vs {v}");
                }
            }
        }
    }

    #[test]
    fn matches_the_grouped_convolution_forward_and_backward() {
        let device = Device::flex().autodiff();
        // the last tuple entry: input channels missing from the last row tile (padding rows)
        for (seed, (k, stride, padding, groups, n_c, p, h, missing)) in [
            (3, 1, 1, 3, 2, 5, 6, 0),
            (3, 2, 1, 2, 1, 4, 7, 0),
            (1, 2, 0, 4, 3, 3, 5, 0),
            (3, 2, 0, 1, 4, 2, 6, 0),
            (3, 1, 1, 2, 3, 4, 6, 2),
            (3, 2, 1, 3, 4, 3, 7, 1),
            (1, 1, 0, 2, 5, 2, 4, 3),
        ]
        .into_iter()
        .enumerate()
        {
            let geo = ConvGeometry { kernel: k, stride, padding };
            let channels = groups * n_c - missing;
            let batch = [2, 11, 17][seed % 3];
            let codes = crate::test_tensor([batch, channels, h, h + 1], 0.0..7.0, seed as u64, &device).round();
            let planes = crate::test_tensor([groups, p, n_c * k * k], -2.0..4.0, seed as u64 + 50, &device).round();
            let mut results = Vec::new();
            for fused in [true, false] {
                let c = codes.clone().detach().require_grad();
                let pl = planes.clone().detach().require_grad();
                let f = if fused { grouped_psums } else { grouped_psums_reference };
                let y = f(c.clone(), pl.clone(), geo);
                let r = crate::test_tensor(y.dims(), 0.0..1.0, 99, &device);
                let grads = y.clone().mul(r).sum().backward();
                results.push((
                    flat(y),
                    flat(c.grad(&grads).unwrap()),
                    pl.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap(),
                ));
            }
            let (a, b) = (&results[0], &results[1]);
            assert_eq!(a.0, b.0, "integer partial sums must be exact");
            for (name, x, y) in [("d/dcodes", &a.1, &b.1), ("d/dplanes", &a.2, &b.2)] {
                let scale = y.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                for (i, (u, v)) in x.iter().zip(y.iter()).enumerate() {
                    assert!((u - v).abs() <= 1e-5 * scale, "{name}[{i}]: {u} vs {v}");
                }
            }
        }
    }
}
