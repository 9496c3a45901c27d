//! What a fully connected layer does after its product, taken into the sparse operator: the
//! bias `Add` (one value per output row) and a ReLU (`Max` with 0) that tract's declutter leaves
//! as nodes of their own after the `EinSum`. On the dense path tract fuses them into its matrix
//! product; left as nodes beside the sparse one, each costs a pass over the output and a plan
//! step, a fixed cost that weighs on a product that runs in microseconds.

use crate::kernels::successors::{constant_along_axis, scalar, single_binary_consumer};
use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::math::{Add, Max};

/// The bias and the ReLU applied to each output row's values, in that order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Epilogue {
    /// One value per output row, or `None`.
    pub bias: Option<Vec<f32>>,
    /// Whether negative values become 0 after the bias.
    pub relu: bool,
}

impl Epilogue {
    /// Applies to `out`, `rows` planes of `plane` values.
    pub fn apply(&self, out: &mut [f32], plane: usize) {
        if plane == 1 {
            return self.apply_to_vector(out);
        }
        if plane == 0 {
            return;
        }
        for (r, values) in out.chunks_exact_mut(plane).enumerate() {
            if let Some(b) = self.bias.as_ref().and_then(|b| b.get(r)) {
                values.iter_mut().for_each(|v| *v += b);
            }
            if self.relu {
                values.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
    }

    /// Applies to `out`, one value per row: a loop per case without a branch per value, which
    /// the compiler vectorises (a fully connected layer's epilogue runs on every output).
    fn apply_to_vector(&self, out: &mut [f32]) {
        match (&self.bias, self.relu) {
            (Some(bias), true) => out
                .iter_mut()
                .zip(bias)
                .for_each(|(v, b)| *v = (*v + b).max(0.0)),
            (Some(bias), false) => out.iter_mut().zip(bias).for_each(|(v, b)| *v += b),
            (None, true) => out.iter_mut().for_each(|v| *v = v.max(0.0)),
            (None, false) => {}
        }
        if let Some(bias) = &self.bias
            && bias.len() < out.len()
            && self.relu
        {
            // Rows without a bias value (none in a graph the rewrite accepts) still take the
            // ReLU, as `apply` gives them.
            out[bias.len()..].iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }

    /// Whether there is anything to apply.
    pub fn is_empty(&self) -> bool {
        self.bias.is_none() && !self.relu
    }
}

/// The epilogue following `node` (whose output has `W`'s `rows` at axis `rows_axis`) and the
/// nodes it takes: an `Add` of a constant holding one value per row (or one for all), then a
/// `Max` with the constant 0, each the only consumer of the node before and not a model output.
pub(super) fn following(
    model: &TypedModel,
    node: &TypedNode,
    rows_axis: usize,
    rows: usize,
) -> TractResult<(Epilogue, Vec<usize>)> {
    let mut epilogue = Epilogue::default();
    let mut taken = Vec::new();
    let mut last = OutletId::new(node.id, 0);
    let rank = node.outputs[0].fact.rank();
    if let Some((add, other)) = only_binary_consumer::<Add>(model, last)?
        && let Some(bias) = constant_along_axis(model, other, rank, rows_axis, rows)?
    {
        epilogue.bias = Some(bias);
        taken.push(add.id);
        last = OutletId::new(add.id, 0);
    }
    if let Some((max, other)) = only_binary_consumer::<Max>(model, last)?
        && scalar(model, other)? == Some(0.0)
    {
        epilogue.relu = true;
        taken.push(max.id);
    }
    Ok((epilogue, taken))
}

/// The only consumer of `outlet` where it is the binary operator `Op` with an f32 output of the
/// same shape, and its other input.
fn only_binary_consumer<Op: tract_core::ops::binary::BinMiniOp>(
    model: &TypedModel,
    outlet: OutletId,
) -> TractResult<Option<(&TypedNode, OutletId)>> {
    Ok(single_binary_consumer(model, outlet)?
        .filter(|(next, _)| next.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<Op>())))
}
