//! Hand-written passes under burn's autodiff: a pass registers its inputs as checkpoints and its
//! backward as an op, the same way for every fused kernel of the workspace.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend};

/// A float tensor of the autodiff backend over `B`.
pub type AutodiffTensor<B, C> = FloatTensor<Autodiff<B, C>>;

/// Runs an N-input pass under autodiff: `run` computes the values from the inner tensors; when
/// tracked, every input is checkpointed, with `extra`, as the state of `op`'s backward.
pub fn tracked<B, C, Op, S, const N: usize>(
    op: Op,
    inputs: [AutodiffTensor<B, C>; N],
    extra: S,
    run: impl FnOnce([FloatTensor<B>; N]) -> FloatTensor<B>,
) -> AutodiffTensor<B, C>
where
    B: Backend,
    C: CheckpointStrategy,
    Op: Backward<B, N, State = ([NodeId; N], S)>,
    S: Clone + Send + std::fmt::Debug + 'static,
{
    tracked_keeping::<B, C, Op, S, (), N>(op, inputs, |values| (run(values), ()), |()| extra).0
}

/// [`tracked`] for a pass that also returns what its backward needs besides its inputs (`kept`,
/// handed back to the caller too): the state is `extra(kept)`.
pub fn tracked_keeping<B, C, Op, S, K, const N: usize>(
    op: Op,
    inputs: [AutodiffTensor<B, C>; N],
    run: impl FnOnce([FloatTensor<B>; N]) -> (FloatTensor<B>, K),
    extra: impl FnOnce(K) -> S,
) -> (AutodiffTensor<B, C>, K)
where
    B: Backend,
    C: CheckpointStrategy,
    Op: Backward<B, N, State = ([NodeId; N], S)>,
    S: Clone + Send + std::fmt::Debug + 'static,
    K: Clone,
{
    let values = |inputs: &[AutodiffTensor<B, C>; N]| run(inputs.each_ref().map(|t| t.primitive().clone()));
    match op.prepare::<C>(inputs.each_ref().map(|t| t.node())).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let ids = inputs.each_ref().map(|t| prep.checkpoint(t));
            let (out, kept) = values(&inputs);
            (prep.finish((ids, extra(kept.clone())), out), kept)
        }
        OpsKind::UnTracked(prep) => {
            let (out, kept) = values(&inputs);
            (prep.finish(out), kept)
        }
    }
}

/// The body of a [`tracked`] pass's backward: consumes the output's gradient, retrieves the N
/// checkpointed inputs, lets `gradients` compute the first M inputs' gradients, and registers
/// each with its parent where the parent is tracked.
pub fn backward_with<B: Backend, S, const N: usize, const M: usize>(
    ops: Ops<([NodeId; N], S), N>,
    grads: &mut Gradients,
    checkpointer: &mut Checkpointer,
    gradients: impl FnOnce(FloatTensor<B>, [FloatTensor<B>; N], S) -> [FloatTensor<B>; M],
) {
    let grad = grads.consume::<B>(&ops.node);
    let (ids, extra) = ops.state;
    let inputs = ids.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
    for (parent, g) in ops.parents.into_iter().zip(gradients(grad, inputs, extra)) {
        if let Some(node) = parent {
            grads.register::<B>(node.id, g);
        }
    }
}
