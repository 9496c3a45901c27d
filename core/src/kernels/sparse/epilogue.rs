//! What a fully connected layer does after its product, taken into the sparse operator: the
//! bias `Add` (one value per output row) and a ReLU (`Max` with 0) that tract's declutter leaves
//! as nodes of their own after the `EinSum`. On the dense path tract fuses them into its matrix
//! product; left as nodes beside the sparse one, each costs a pass over the output and a plan
//! step, a fixed cost that weighs on a product that runs in microseconds.

use crate::kernels::constant;
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
    if let Some((add, other)) = only_binary_consumer::<Add>(model, last)?
        && let Some(bias) = per_row(model, other, node, rows_axis, rows)?
    {
        epilogue.bias = Some(bias);
        taken.push(add.id);
        last = OutletId::new(add.id, 0);
    }
    if let Some((max, other)) = only_binary_consumer::<Max>(model, last)?
        && let Some(zero) = constant(model, other)?
        && zero.datum_type() == f32::datum_type()
        && zero.len() == 1
        && zero.cast_to_scalar::<f32>()? == 0.0
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
    if model.outputs.contains(&outlet) {
        return Ok(None);
    }
    let Some(next) = model.single_succ(outlet.node)? else {
        return Ok(None);
    };
    let is_op = next.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<Op>());
    if !is_op || next.inputs.len() != 2 || next.outputs.len() != 1 {
        return Ok(None);
    }
    let fact = &next.outputs[0].fact;
    if fact.datum_type != f32::datum_type() || fact.shape != model.outlet_fact(outlet)?.shape {
        return Ok(None);
    }
    let other = next.inputs[if next.inputs[0] == outlet { 1 } else { 0 }];
    Ok(Some((next, other)))
}

/// The value per row of the constant `outlet`, added to `node`'s output: every axis of 1 but
/// that of the rows (aligned on the right), or a single value.
fn per_row(
    model: &TypedModel,
    outlet: OutletId,
    node: &TypedNode,
    rows_axis: usize,
    rows: usize,
) -> TractResult<Option<Vec<f32>>> {
    let Some(bias) = constant(model, outlet)? else {
        return Ok(None);
    };
    let rank = node.outputs[0].fact.rank();
    if bias.datum_type() != f32::datum_type() || bias.rank() > rank {
        return Ok(None);
    }
    let offset = rank - bias.rank();
    let fits = bias
        .shape()
        .iter()
        .enumerate()
        .all(|(a, &d)| d == 1 || (a + offset == rows_axis && d == rows));
    if !fits {
        return Ok(None);
    }
    let values = bias.try_as_plain_ram()?;
    let values = values.as_slice::<f32>()?;
    Ok(match values.len() {
        1 => Some(vec![values[0]; rows]),
        n if n == rows => Some(values.to_vec()),
        _ => None,
    })
}
