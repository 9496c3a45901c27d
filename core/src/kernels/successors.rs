//! Reading what follows a node in a decluttered model, for operators that take the elementwise
//! steps after them (a bias `Add`, a ReLU or ReLU6 clamp) into their own output loop: the
//! pointwise convolution and the sparse product read them the same way.

use super::constant;
use tract_core::internal::*;

/// The only consumer of `outlet` when it is a two-input node with one f32 output of the same
/// shape (an elementwise binary operator applied to it), and that node's other input; `None` when
/// `outlet` is also a model output.
pub(super) fn single_binary_consumer(
    model: &TypedModel,
    outlet: OutletId,
) -> TractResult<Option<(&TypedNode, OutletId)>> {
    if model.outputs.contains(&outlet) {
        return Ok(None);
    }
    let Some(next) = model.single_succ(outlet.node)? else {
        return Ok(None);
    };
    if next.inputs.len() != 2 || next.outputs.len() != 1 {
        return Ok(None);
    }
    let (shape, fact) = (&model.outlet_fact(outlet)?.shape, &next.outputs[0].fact);
    if fact.datum_type != f32::datum_type() || fact.shape != *shape {
        return Ok(None);
    }
    let other = if next.inputs[0] == outlet {
        next.inputs[1]
    } else {
        next.inputs[0]
    };
    Ok(Some((next, other)))
}

/// The f32 constant `outlet` as one value per index of axis `axis` (of length `len`) of a
/// tensor of rank `rank` it is broadcast against (aligned on the right, every other axis of size
/// 1), or a single value repeated; `None` when it is not a constant of that form.
pub(super) fn constant_along_axis(
    model: &TypedModel,
    outlet: OutletId,
    rank: usize,
    axis: usize,
    len: usize,
) -> TractResult<Option<Vec<f32>>> {
    let Some(values) = constant(model, outlet)? else {
        return Ok(None);
    };
    if values.datum_type() != f32::datum_type() || values.rank() > rank {
        return Ok(None);
    }
    let offset = rank - values.rank();
    let along_axis = values
        .shape()
        .iter()
        .enumerate()
        .all(|(a, &d)| d == 1 || (a + offset == axis && d == len));
    if !along_axis {
        return Ok(None);
    }
    let plain = values.try_as_plain_ram()?;
    let plain = plain.as_slice::<f32>()?;
    Ok(match plain.len() {
        1 => Some(vec![plain[0]; len]),
        n if n == len => Some(plain.to_vec()),
        _ => None,
    })
}

/// The f32 constant `outlet` when it holds one value.
pub(super) fn scalar(model: &TypedModel, outlet: OutletId) -> TractResult<Option<f32>> {
    let Some(value) = constant(model, outlet)? else {
        return Ok(None);
    };
    if value.datum_type() != f32::datum_type() || value.len() != 1 {
        return Ok(None);
    }
    Ok(Some(value.cast_to_scalar::<f32>()?))
}
