//! Finding pointwise convolutions in a decluttered graph.
//!
//! tract's declutter turns a 1×1 convolution (stride 1, group 1, no padding) into an `EinSum`
//! of the input with its `[output, input]` weight matrix (`IHW,OI->OHW`, `NIHW,OI->NOHW`, …),
//! followed by an `Add` of the bias, and ReLU or ReLU6 into `Max` and `Min` with a constant. The
//! rewrite takes such an `EinSum`, the bias `Add` and the clamp after it into one
//! [`PointwiseConv`].

use super::{Clamp, MIN_PIXELS, OutputAxis, PointwiseConv, PointwiseLayout};
use crate::kernels::successors::{constant_along_axis, scalar, single_binary_consumer};
use crate::kernels::{PointwiseKernel, constant};
use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math::{Add, Max, Min};

/// The patch replacing `node`, an `EinSum`, and the bias and clamp following it, with a
/// [`PointwiseConv`]; `None` where it is not a pointwise convolution the kernel takes: f32, a
/// constant `[output, input]` weight matrix, channel-first data with concrete channels and
/// planes of at least [`MIN_PIXELS`] values (the batch may be symbolic).
pub(in crate::kernels) fn replacement(
    model: &TypedModel,
    node: &TypedNode,
    einsum: &EinSum,
    kernel_choice: PointwiseKernel,
) -> TractResult<Option<TypedModelPatch>> {
    if kernel_choice == PointwiseKernel::Tract {
        return Ok(None);
    }
    let Some((layout, weights)) = pointwise_layout(model, node, einsum)? else {
        return Ok(None);
    };
    let rows = weights.shape()[0];
    let o_axis = layout
        .output
        .iter()
        .position(|a| *a == OutputAxis::Channels)
        .context("no output channels")?;
    let mut fused = vec![];
    let mut last = node;
    let bias = match following_bias(model, node, o_axis, rows)? {
        Some((bias, add)) => {
            fused.push(add.id);
            last = add;
            bias
        }
        None => vec![0.0; rows],
    };
    let (clamp, clamp_nodes) = following_clamp(model, last)?;
    fused.extend(clamp_nodes);
    let weights = weights.try_as_plain_ram()?;
    let op = PointwiseConv::new(
        layout,
        weights.as_slice::<f32>()?,
        &bias,
        clamp,
        kernel_choice == PointwiseKernel::Portable,
    )?;
    let patch =
        crate::kernels::replace_absorbing(model, node, "nnzip pointwise convolution", op, &fused)?;
    Ok(Some(patch))
}

/// The layout and the weight matrix of `einsum` where it is a pointwise convolution (see
/// [`replacement`]).
fn pointwise_layout(
    model: &TypedModel,
    node: &TypedNode,
    einsum: &EinSum,
) -> TractResult<Option<(PointwiseLayout, Arc<Tensor>)>> {
    if einsum.q_params.is_some()
        || einsum.operating_dt != f32::datum_type()
        || node.inputs.len() != 2
        || node.outputs.len() != 1
    {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let output = &node.outputs[0].fact;
    let Some(weights) = constant(model, node.inputs[1])? else {
        return Ok(None);
    };
    if input.datum_type != f32::datum_type()
        || output.datum_type != f32::datum_type()
        || weights.datum_type() != f32::datum_type()
        || weights.rank() != 2
    {
        return Ok(None);
    }
    let axes = &einsum.axes;
    let (o, i) = (axes.axis((InOut::In(1), 0))?, axes.axis((InOut::In(1), 1))?);
    let (&[], &[o_pos], &[i_pos], &[]) =
        (&*o.inputs[0], &*o.outputs[0], &*i.inputs[0], &*i.outputs[0])
    else {
        return Ok(None);
    };
    let Ok(k) = input.shape[i_pos].to_usize() else {
        return Ok(None);
    };
    if k != weights.shape()[1] || output.shape[o_pos] != weights.shape()[0].to_dim() {
        return Ok(None);
    }
    let is_one = |d: &TDim| *d == TDim::from(1);
    // The axes of size other than 1 before and after the channels, input and output alike.
    let mut input_sides: [Vec<char>; 2] = [vec![], vec![]];
    let mut output_sides: [Vec<char>; 2] = [vec![], vec![]];
    let mut output_axes: TVec<OutputAxis> = tvec![OutputAxis::One; output.rank()];
    output_axes[o_pos] = OutputAxis::Channels;
    for axis in axes.iter_all_axes() {
        if axis.repr == o.repr || axis.repr == i.repr {
            continue;
        }
        let (ins, outs) = (&axis.inputs[0], &axis.outputs[0]);
        if ins.len() > 1 || outs.len() > 1 || !axis.inputs[1].is_empty() {
            return Ok(None);
        }
        if let Some(&p) = ins.first()
            && !is_one(&input.shape[p])
        {
            input_sides[(p > i_pos) as usize].push(axis.repr);
        }
        if let Some(&p) = outs.first() {
            if !is_one(&output.shape[p]) {
                output_sides[(p > o_pos) as usize].push(axis.repr);
            }
            output_axes[p] = match ins.first() {
                Some(&q) => OutputAxis::Input(q),
                None => OutputAxis::One,
            };
        }
    }
    // Sorted by position, as `iter_all_axes` need not be.
    let position = |io: InOut, c: char| axes.axis_positions(io, c).map(|p| p[0]);
    for side in &mut input_sides {
        side.sort_by_key(|&c| position(InOut::In(0), c).unwrap_or(usize::MAX));
    }
    for side in &mut output_sides {
        side.sort_by_key(|&c| position(InOut::Out(0), c).unwrap_or(usize::MAX));
    }
    if input_sides != output_sides {
        return Ok(None);
    }
    let Some(pixels) = input.shape[i_pos + 1..]
        .iter()
        .map(|d| d.to_usize().ok())
        .product::<Option<usize>>()
    else {
        return Ok(None);
    };
    if pixels < MIN_PIXELS {
        return Ok(None);
    }
    let layout = PointwiseLayout {
        channel_axis: i_pos,
        pixels,
        output: output_axes,
    };
    Ok(Some((layout, weights)))
}

/// The bias added to the output of `node` by the `Add` that is its only consumer, one value per
/// output channel (axis `o_axis` of `rows`), and that `Add`.
fn following_bias<'m>(
    model: &'m TypedModel,
    node: &TypedNode,
    o_axis: usize,
    rows: usize,
) -> TractResult<Option<(Vec<f32>, &'m TypedNode)>> {
    let outlet = OutletId::new(node.id, 0);
    let Some((add, other)) = single_binary_consumer(model, outlet)? else {
        return Ok(None);
    };
    if !add.op_as::<TypedBinOp>().is_some_and(|b| b.0.is::<Add>()) {
        return Ok(None);
    }
    let rank = node.outputs[0].fact.rank();
    let Some(bias) = constant_along_axis(model, other, rank, o_axis, rows)? else {
        return Ok(None);
    };
    Ok(Some((bias, add)))
}

/// The clamp applied to the output of `node` by the `Max` and `Min` operators with a constant
/// that follow it, each the only consumer of the one before (ReLU, ReLU6), with the ids of those
/// operators; at most one of each, and only while the bounds stay ordered. (The depthwise
/// kernels take the clamp after them the same way.)
pub(in crate::kernels) fn following_clamp(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<(Option<Clamp>, Vec<usize>)> {
    let (mut low, mut high) = (f32::NEG_INFINITY, f32::INFINITY);
    let mut fused = vec![];
    let mut current = node;
    while fused.len() < 2 {
        let Some((next, other)) = single_binary_consumer(model, OutletId::new(current.id, 0))?
        else {
            break;
        };
        let Some(bin) = next.op_as::<TypedBinOp>() else {
            break;
        };
        let Some(bound) = scalar(model, other)? else {
            break;
        };
        let (new_low, new_high) = if bin.0.is::<Max>() && low == f32::NEG_INFINITY {
            (bound, high)
        } else if bin.0.is::<Min>() && high == f32::INFINITY {
            (low, bound)
        } else {
            break;
        };
        // NaN bounds are not ordered either.
        if new_low.partial_cmp(&new_high).is_none_or(|o| o.is_gt()) {
            break;
        }
        (low, high) = (new_low, new_high);
        fused.push(next.id);
        current = next;
    }
    let clamp = (!fused.is_empty()).then_some(Clamp { low, high });
    Ok((clamp, fused))
}
