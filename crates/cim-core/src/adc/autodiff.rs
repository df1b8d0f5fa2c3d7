//! The ADC pass under burn's autodiff: the forward records its inputs, the backward calls the
//! inner backend's backward pass (the bounds `low` and `high` are constants).

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::{Autodiff, Backend};

use super::{AdcChannelTensors, AdcOps};
use flex_kernels::autodiff::{AutodiffTensor, backward_with, tracked};

#[derive(Debug)]
struct AdcAccumulateBackward;

impl<B: Backend + AdcOps> Backward<B, 6> for AdcAccumulateBackward {
    /// (psums, step, offset, coef, low, high), and C_out; low and high are constants.
    type State = ([NodeId; 6], usize);

    fn backward(self, ops: Ops<Self::State, 6>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        backward_with::<B, _, 6, 4>(
            ops,
            grads,
            checkpointer,
            |grad, [p, step, offset, coef, low, high], out_channels| {
                let adc = AdcChannelTensors { step, offset, coef, low, high };
                let (gp, gs, gz, gc) = B::adc_accumulate_backward(grad, p, adc, out_channels);
                [gp, gs, gz, gc]
            },
        );
    }
}

impl<B: Backend + AdcOps, C: CheckpointStrategy> AdcOps for Autodiff<B, C> {
    fn adc_accumulate(
        psums: AutodiffTensor<B, C>,
        adc: AdcChannelTensors<Self>,
        out_channels: usize,
    ) -> AutodiffTensor<B, C> {
        let AdcChannelTensors { step, offset, coef, low, high } = adc;
        let inputs = [psums, step, offset, coef, low, high];
        tracked::<B, C, _, _, 6>(AdcAccumulateBackward, inputs, out_channels, |[p, step, offset, coef, low, high]| {
            B::adc_accumulate(p, AdcChannelTensors { step, offset, coef, low, high }, out_channels)
        })
    }

    fn adc_accumulate_backward(
        grad: AutodiffTensor<B, C>,
        psums: AutodiffTensor<B, C>,
        adc: AdcChannelTensors<Self>,
        out_channels: usize,
    ) -> (AutodiffTensor<B, C>, AutodiffTensor<B, C>, AutodiffTensor<B, C>, AutodiffTensor<B, C>) {
        // Second-order gradients through the ADC are not needed: the result is a constant.
        let inner = AdcChannelTensors::from_array(adc.into_array().map(|t| t.into_primitive()));
        let (gp, gs, gz, gc) =
            B::adc_accumulate_backward(grad.into_primitive(), psums.into_primitive(), inner, out_channels);
        let wrap = AutodiffTensor::<B, C>::new;
        (wrap(gp), wrap(gs), wrap(gz), wrap(gc))
    }
}
