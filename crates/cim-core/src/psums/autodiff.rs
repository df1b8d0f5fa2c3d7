//! The partial-sum pass under burn's autodiff: the forward records its inputs, the backward calls
//! the inner backend's backward pass.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::{Autodiff, Backend};

use super::{PsumOps, WeightCodePass};
use flex_kernels::autodiff::{AutodiffTensor, backward_with, tracked};
use flex_kernels::im2col::ConvGeometry;

#[derive(Debug)]
struct PsumsBackward;

/// Which partial-sum call a backward belongs to: over digit planes, or over weight codes.
#[derive(Debug, Clone, Copy)]
enum PsumCall {
    Planes(ConvGeometry),
    WeightCodes(WeightCodePass),
}

impl<B: Backend + PsumOps> Backward<B, 2> for PsumsBackward {
    type State = ([NodeId; 2], PsumCall);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        backward_with::<B, _, 2, 2>(ops, grads, checkpointer, |grad, [codes, weights], call| {
            let (gc, gw) = match call {
                PsumCall::Planes(geo) => B::cim_psums_backward(grad, codes, weights, geo),
                PsumCall::WeightCodes(pass) => B::cim_psums_of_weight_codes_backward(grad, codes, weights, pass),
            };
            [gc, gw]
        });
    }
}

impl<B: Backend + PsumOps, C: CheckpointStrategy> PsumOps for Autodiff<B, C> {
    fn cim_psums(codes: AutodiffTensor<B, C>, planes: AutodiffTensor<B, C>, geo: ConvGeometry) -> AutodiffTensor<B, C> {
        tracked::<B, C, _, _, 2>(PsumsBackward, [codes, planes], PsumCall::Planes(geo), |[c, p]| {
            B::cim_psums(c, p, geo)
        })
    }

    fn cim_psums_backward(
        grad: AutodiffTensor<B, C>,
        codes: AutodiffTensor<B, C>,
        planes: AutodiffTensor<B, C>,
        geo: ConvGeometry,
    ) -> (AutodiffTensor<B, C>, AutodiffTensor<B, C>) {
        // Second-order gradients are not needed: the result is a constant.
        let (gc, gp) =
            B::cim_psums_backward(grad.into_primitive(), codes.into_primitive(), planes.into_primitive(), geo);
        (AutodiffTensor::<B, C>::new(gc), AutodiffTensor::<B, C>::new(gp))
    }

    fn cim_psums_of_weight_codes(
        codes: AutodiffTensor<B, C>,
        weight_codes: AutodiffTensor<B, C>,
        pass: WeightCodePass,
    ) -> AutodiffTensor<B, C> {
        tracked::<B, C, _, _, 2>(PsumsBackward, [codes, weight_codes], PsumCall::WeightCodes(pass), |[c, q]| {
            B::cim_psums_of_weight_codes(c, q, pass)
        })
    }

    fn cim_psums_of_weight_codes_backward(
        grad: AutodiffTensor<B, C>,
        codes: AutodiffTensor<B, C>,
        weight_codes: AutodiffTensor<B, C>,
        pass: WeightCodePass,
    ) -> (AutodiffTensor<B, C>, AutodiffTensor<B, C>) {
        // Second-order gradients are not needed: the result is a constant.
        let (gc, gq) = B::cim_psums_of_weight_codes_backward(
            grad.into_primitive(),
            codes.into_primitive(),
            weight_codes.into_primitive(),
            pass,
        );
        (AutodiffTensor::<B, C>::new(gc), AutodiffTensor::<B, C>::new(gq))
    }
}
