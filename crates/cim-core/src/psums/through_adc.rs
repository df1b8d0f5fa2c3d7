//! The partial sums of weight codes and the ADC pass over them ([`crate::adc`]) as one autodiff
//! op, so that the backward works out dL/dpsums image by image inside the partial-sum backward:
//! that gradient is as large as the partial sums themselves (about 1 GB per ResNet-20 step at
//! batch 128) and, as the ADC pass's own output, was written in full and read back by the
//! partial-sum backward. The values are exactly [`adc_accumulate`] over
//! [`grouped_psums_of_weight_codes`]: what runs off Flex, and what the tests compare against.
//!
//! Forward, where the integer kernel runs ([`super::int8::forward_through_adc`]), the ADC pass is
//! applied to each block of partial sums while it is in registers, and the partial sums are kept
//! for the backward as exact i16; elsewhere the partial sums are computed in f32 and the ADC pass
//! runs over them. The gradients reach the activation codes, the weight codes and the ADC's
//! steps, offsets and coefficients.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::{DType, Tensor, TensorData};

use super::flex::{
    PsumGrad, digit_planes_host, psums_forward, psums_of_weight_codes_backward, shape3, weight_code_dims,
};
use super::{WeightCodePass, grouped_psums_of_weight_codes};
use crate::adc::{AdcChannelTensors, AdcChannels, AdcImageBackward, AdcOps, PsumValues, adc_accumulate};
use crate::slicing::BitSlicing;
use flex_kernels::autodiff::{AutodiffTensor, backward_with, tracked_keeping};
use flex_kernels::host::{f32_slice, flex_tensor, fused_available};
use flex_kernels::im2col::ConvGeometry;

/// The fused pass as a backend extension (Flex, and autodiff over it).
#[backend_extension(Flex, Autodiff)]
pub trait PsumsThroughAdcOps: Backend {
    /// [`AdcOps::adc_accumulate`] of the partial sums [K, B, H', W'] of activation codes
    /// [B, C_in, H, W] and weight codes [G, C_out, R] (as
    /// [`super::PsumOps::cim_psums_of_weight_codes`] gives them), and those partial sums as the
    /// backward takes them (f32, or i16 where that is exact).
    fn psums_through_adc(
        codes: FloatTensor<Self>,
        weight_codes: FloatTensor<Self>,
        #[extension_type] adc: AdcChannelTensors<Self>,
        pass: WeightCodePass,
        out_channels: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Gradients with respect to the codes, the weight codes, the steps, the offsets and the
    /// coefficients, given the partial sums the forward kept.
    #[allow(clippy::type_complexity)]
    fn psums_through_adc_backward(
        grad: FloatTensor<Self>,
        codes: FloatTensor<Self>,
        weight_codes: FloatTensor<Self>,
        psums: FloatTensor<Self>,
        #[extension_type] adc: AdcChannelTensors<Self>,
        pass: WeightCodePass,
        out_channels: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl PsumsThroughAdcOps for Flex {
    fn psums_through_adc(
        codes: FlexTensor,
        weight_codes: FlexTensor,
        adc: AdcChannelTensors<Flex>,
        pass: WeightCodePass,
        out_channels: usize,
    ) -> (FlexTensor, FlexTensor) {
        let sl = pass.slicing;
        let d = weight_code_dims(&codes, &weight_codes, &sl, pass.geo);
        let planes = digit_planes_host(&f32_slice(&weight_codes), &sl, shape3(&weight_codes));
        let a = f32_slice(&codes);
        let psum_shape = vec![d.groups * d.planes, d.batch, d.ho, d.wo];
        #[cfg(target_arch = "x86_64")]
        {
            let channels = adc.host();
            let epilogue = super::int8::AdcEpilogue::new(channels.each_ref().map(|c| &c[..]), out_channels);
            if let Some((y, psums)) = super::int8::forward_through_adc(&a, &planes, d, &epilogue) {
                let y = flex_tensor(y, vec![d.batch, out_channels, d.ho, d.wo]);
                return (y, FlexTensor::from_data(TensorData::new(psums, psum_shape)));
            }
        }
        let psums = flex_tensor(psums_forward(&a, &planes, d), psum_shape);
        (Flex::adc_accumulate(psums.clone(), adc, out_channels), psums)
    }

    fn psums_through_adc_backward(
        grad: FlexTensor,
        codes: FlexTensor,
        weight_codes: FlexTensor,
        psums: FlexTensor,
        adc: AdcChannelTensors<Flex>,
        pass: WeightCodePass,
        out_channels: usize,
    ) -> (FlexTensor, FlexTensor, FlexTensor, FlexTensor, FlexTensor) {
        let sl = pass.slicing;
        let d = weight_code_dims(&codes, &weight_codes, &sl, pass.geo);
        let gy = f32_slice(&grad);
        let floats;
        let p = match psums.as_slice::<i16>() {
            Some(p) if psums.dtype() == DType::I16 && psums.is_contiguous() => PsumValues::I16(p),
            _ => {
                floats = f32_slice(&psums);
                PsumValues::F32(&floats)
            }
        };
        let channels = adc.host();
        let adc =
            AdcImageBackward::new(&gy, p, channels.each_ref().map(|c| &c[..]), out_channels, d.batch, d.ho * d.wo);
        let (grad_codes, grad_q, sums) =
            psums_of_weight_codes_backward(PsumGrad::ThroughAdc(&adc), &codes, &f32_slice(&weight_codes), &sl, d);
        let k = adc.channels();
        let [gs, gz, gc] = adc.gradients(&sums).map(|g| flex_tensor(g, vec![k]));
        (
            flex_tensor(grad_codes, vec![d.batch, d.channels, d.h, d.w]),
            flex_tensor(grad_q, shape3(&weight_codes).to_vec()),
            gs,
            gz,
            gc,
        )
    }
}

#[derive(Debug)]
struct PsumsThroughAdcBackward;

impl<B: Backend + PsumsThroughAdcOps> Backward<B, 7> for PsumsThroughAdcBackward {
    /// (codes, weight codes, step, offset, coef, low, high): the last two constants; and the
    /// call's pass, C_out and the partial sums the forward kept.
    type State = ([NodeId; 7], (WeightCodePass, usize, FloatTensor<B>));

    fn backward(self, ops: Ops<Self::State, 7>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        backward_with::<B, _, 7, 5>(ops, grads, checkpointer, |grad, [a, q, step, offset, coef, low, high], state| {
            let (pass, out_channels, p) = state;
            let adc = AdcChannelTensors { step, offset, coef, low, high };
            let (ga, gq, gs, gz, gc) = B::psums_through_adc_backward(grad, a, q, p, adc, pass, out_channels);
            [ga, gq, gs, gz, gc]
        });
    }
}

impl<B: Backend + PsumsThroughAdcOps, C: CheckpointStrategy> PsumsThroughAdcOps for Autodiff<B, C> {
    fn psums_through_adc(
        codes: AutodiffTensor<B, C>,
        weight_codes: AutodiffTensor<B, C>,
        adc: AdcChannelTensors<Self>,
        pass: WeightCodePass,
        out_channels: usize,
    ) -> (AutodiffTensor<B, C>, AutodiffTensor<B, C>) {
        let AdcChannelTensors { step, offset, coef, low, high } = adc;
        let inputs = [codes, weight_codes, step, offset, coef, low, high];
        let run = |[a, q, step, offset, coef, low, high]: [FloatTensor<B>; 7]| {
            B::psums_through_adc(a, q, AdcChannelTensors { step, offset, coef, low, high }, pass, out_channels)
        };
        let (y, psums) =
            tracked_keeping::<B, C, _, _, _, 7>(PsumsThroughAdcBackward, inputs, run, |p| (pass, out_channels, p));
        (y, AutodiffTensor::<B, C>::new(psums))
    }

    fn psums_through_adc_backward(
        grad: AutodiffTensor<B, C>,
        codes: AutodiffTensor<B, C>,
        weight_codes: AutodiffTensor<B, C>,
        psums: AutodiffTensor<B, C>,
        adc: AdcChannelTensors<Self>,
        pass: WeightCodePass,
        out_channels: usize,
    ) -> (AutodiffTensor<B, C>, AutodiffTensor<B, C>, AutodiffTensor<B, C>, AutodiffTensor<B, C>, AutodiffTensor<B, C>)
    {
        // Second-order gradients are not needed: the result is a constant.
        let (ga, gq, gs, gz, gc) = B::psums_through_adc_backward(
            grad.into_primitive(),
            codes.into_primitive(),
            weight_codes.into_primitive(),
            psums.into_primitive(),
            AdcChannelTensors::from_array(adc.into_array().map(|t| t.into_primitive())),
            pass,
            out_channels,
        );
        let wrap = AutodiffTensor::<B, C>::new;
        (wrap(ga), wrap(gq), wrap(gs), wrap(gz), wrap(gc))
    }
}

/// `adc_accumulate(grouped_psums_of_weight_codes(codes, weight_codes), ch)`: one op on Flex whose
/// backward never materialises dL/dpsums; the two ops elsewhere.
pub fn psums_through_adc(
    codes: Tensor<4>,
    weight_codes: Tensor<3>,
    slicing: &BitSlicing,
    geo: ConvGeometry,
    ch: AdcChannels,
    out_channels: usize,
) -> Tensor<4> {
    if !fused_available(&codes.device()) {
        return psums_through_adc_reference(codes, weight_codes, slicing, geo, ch, out_channels);
    }
    let (y, _kept_for_the_backward) = <burn::backend::Dispatch as PsumsThroughAdcOps>::psums_through_adc(
        codes.into_dispatch(),
        weight_codes.into_dispatch(),
        ch.into_dispatch(),
        WeightCodePass { geo, slicing: *slicing },
        out_channels,
    );
    Tensor::from_dispatch(y)
}

/// The same as two ops: the partial sums (tracked), then the ADC pass.
pub fn psums_through_adc_reference(
    codes: Tensor<4>,
    weight_codes: Tensor<3>,
    slicing: &BitSlicing,
    geo: ConvGeometry,
    ch: AdcChannels,
    out_channels: usize,
) -> Tensor<4> {
    adc_accumulate(grouped_psums_of_weight_codes(codes, weight_codes, slicing, geo), ch, out_channels)
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;
    use crate::settings::Encoding;
    use crate::{assert_close, test_flat};

    /// The one op against the partial-sum pass followed by the ADC pass: the same output bit for
    /// bit, and the gradients of the codes, weight codes, steps, offsets and coefficients to
    /// float tolerance, for both encodings, padding word lines, strides, batches over several
    /// chunks of images and register blocks across images; the last case's sums exceed i16 (the
    /// op then keeps f32 partial sums).
    #[test]
    fn matches_the_partial_sums_then_the_adc() {
        let device = Device::flex().autodiff();
        // (k, stride, padding, groups, n_c, columns, h, missing channels, batch, B_w, b_c,
        // encoding, largest code)
        for (seed, (k, stride, padding, groups, n_c, columns, h, missing, batch, wb, cb, encoding, top)) in [
            (3, 1, 1, 2, 3, 5, 6, 2, 11, 4, 2, Encoding::Differential, 15.0),
            (3, 1, 1, 2, 3, 5, 6, 2, 9, 4, 2, Encoding::Twos, 15.0),
            (3, 2, 1, 3, 2, 4, 7, 0, 3, 4, 1, Encoding::Twos, 15.0),
            (1, 1, 0, 2, 4, 3, 5, 1, 17, 6, 3, Encoding::Differential, 15.0),
            (3, 1, 1, 1, 17, 9, 5, 0, 4, 4, 2, Encoding::Differential, 15.0),
            (3, 1, 1, 2, 3, 5, 6, 1, 5, 6, 3, Encoding::Twos, 255.0),
        ]
        .into_iter()
        .enumerate()
        {
            let seed = seed as u64 * 10;
            let sl = BitSlicing::new(wb, cb, encoding).unwrap();
            let geo = ConvGeometry { kernel: k, stride, padding };
            let channels = groups * n_c - missing;
            let codes = crate::test_tensor([batch, channels, h, h], 0.0..top, seed, &device).round();
            let range = sl.weight_range();
            let rows = n_c * k * k;
            let q = crate::test_tensor([groups, columns, rows], range.low..range.high, seed + 1, &device).round();
            let kk = groups * sl.polarities() * sl.slices() * columns;
            let per_slice = |f: &dyn Fn(usize) -> f32| -> Vec<f32> {
                (0..kk).map(|i| f(i / columns % (sl.polarities() * sl.slices()) % sl.slices())).collect()
            };
            let low = per_slice(&|s| sl.adc_range(s, 3).low);
            let high = per_slice(&|s| sl.adc_range(s, 3).high);
            let step = crate::test_tensor([kk], 1.0..12.0, seed + 2, &device);
            // offsets both ways, so that values clip low and high
            let offset = crate::test_tensor([kk], -20.0..30.0, seed + 3, &device);
            let coef = crate::test_tensor([kk], -2.0..2.0, seed + 4, &device);
            let mut results = Vec::new();
            for fused in [true, false] {
                let track = |t: &Tensor<1>| t.clone().detach().require_grad();
                let (a, w) = (codes.clone().detach().require_grad(), q.clone().detach().require_grad());
                let (s, z, c) = (track(&step), track(&offset), track(&coef));
                let ch = AdcChannels {
                    step: s.clone(),
                    offset: z.clone(),
                    coef: c.clone(),
                    low: Tensor::from_floats(low.as_slice(), &device),
                    high: Tensor::from_floats(high.as_slice(), &device),
                };
                let y = if fused {
                    psums_through_adc(a.clone(), w.clone(), &sl, geo, ch, columns)
                } else {
                    psums_through_adc_reference(a.clone(), w.clone(), &sl, geo, ch, columns)
                };
                let weight = crate::test_tensor(y.dims(), 0.0..1.0, seed + 5, &device);
                let grads = y.clone().mul(weight).sum().backward();
                results.push([
                    test_flat(y),
                    test_flat(a.grad(&grads).unwrap()),
                    test_flat(w.grad(&grads).unwrap()),
                    test_flat(s.grad(&grads).unwrap()),
                    test_flat(z.grad(&grads).unwrap()),
                    test_flat(c.grad(&grads).unwrap()),
                ]);
            }
            let reference = results.pop().unwrap();
            let fused = results.pop().unwrap();
            assert_eq!(fused[0], reference[0], "case {seed}: the forward is the ADC pass itself");
            for (i, what) in ["d/dcodes", "d/dq", "d/dstep", "d/doffset", "d/dcoef"].iter().enumerate() {
                assert_close(&format!("case {seed} {what}"), &fused[i + 1], &reference[i + 1], 1e-5, 1e-3);
            }
            assert!(reference[4].iter().any(|&g| g != 0.0), "case {seed}: some values clip");
        }
    }
}
