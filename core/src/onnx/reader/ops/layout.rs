//! Operators that move, reshape or select data, the constants that drive them, and Cast.

use super::{one, same_rank};
use crate::error::Result;
use crate::onnx::reader::Graph;
use crate::onnx::reader::node::Node;
use crate::onnx::reader::tensor::{datum_type, tensor_from_proto};
use tract_core::internal::*;
use tract_core::ops::array::{Gather, Pad, PadMode, TypedConcat};
use tract_core::ops::change_axes::perm_to_ops;

/// A constant input's values as integers (shape-like inputs: int64, or symbolic sizes).
fn int_input(graph: &Graph, node: &Node, slot: usize) -> Result<Option<Vec<TDim>>> {
    let Some(t) = node.constant_input(graph, slot)? else {
        return Ok(None);
    };
    let t = t.cast_to::<TDim>().map_err(|e| node.tract(e))?;
    let plain = t.try_as_plain_ram().map_err(|e| node.tract(e))?;
    Ok(Some(
        plain
            .as_slice::<TDim>()
            .map_err(|e| node.tract(e))?
            .to_vec(),
    ))
}

/// Axes from the attribute (before `input_from_opset`) or the constant input `slot` after.
fn axes_list(
    graph: &Graph,
    node: &Node,
    slot: usize,
    input_from_opset: i64,
) -> Result<Option<Vec<i64>>> {
    if node.opset < input_from_opset {
        return node.ints("axes");
    }
    let Some(values) = int_input(graph, node, slot)? else {
        return Ok(None);
    };
    values
        .iter()
        .map(|v| {
            v.to_i64()
                .map_err(|_| node.error(format!("axis {v} must be a number")))
        })
        .collect::<Result<Vec<i64>>>()
        .map(Some)
}

pub(super) fn constant(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let value = if let Some(t) = node.tensor("value")? {
        tensor_from_proto(t)?
    } else if node.proto.attribute.iter().any(|a| a.name == "value_float") {
        tensor0(node.float_or("value_float", 0.0)?)
    } else if let Some(i) = node.int("value_int")? {
        tensor0(i)
    } else if let Some(ints) = node.ints("value_ints")? {
        tensor1(&ints)
    } else if let Some(a) = node
        .proto
        .attribute
        .iter()
        .find(|a| a.name == "value_floats")
    {
        tensor1(&a.floats)
    } else {
        return Err(
            node.error("it holds no value nnzip reads (value, value_float(s) or value_int(s))")
        );
    };
    one(graph.constant(node.name.clone(), value)?)
}

/// Reshape: `0` copies the input's size on that axis (unless `allowzero`), one `-1` takes
/// what is left.
pub(super) fn reshape(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let fact = node.fact(graph, 0)?;
    let wanted =
        int_input(graph, node, 1)?.ok_or_else(|| node.error("input 1 (the shape) is missing"))?;
    let allow_zero = node.flag("allowzero", false)?;
    let mut shape: TVec<TDim> = tvec!();
    let mut infer = None;
    for (axis, dim) in wanted.iter().enumerate() {
        match dim.to_i64() {
            Ok(-1) if infer.is_none() => {
                infer = Some(axis);
                shape.push(1.to_dim());
            }
            Ok(0) if !allow_zero => shape.push(fact.shape.get(axis).cloned().ok_or_else(|| {
                node.error(format!(
                    "shape {wanted:?} copies axis {axis}, which the input lacks"
                ))
            })?),
            Ok(d) if d < 0 => {
                return Err(node.error(format!("shape {wanted:?} has a negative size (or two -1)")));
            }
            _ => shape.push(dim.clone()),
        }
    }
    let volume: TDim = fact.shape.iter().product();
    if let Some(axis) = infer {
        let known: TDim = shape.iter().product();
        let (quotient, rest) = volume.maybe_div(&known).map_err(|e| node.tract(e))?;
        if rest != 1 {
            return Err(node.error(format!(
                "shape {wanted:?}: {volume} elements do not divide by {known}"
            )));
        }
        shape[axis] = quotient;
    }
    let target: TDim = shape.iter().product();
    if let (Ok(a), Ok(b)) = (volume.to_i64(), target.to_i64())
        && a != b
    {
        return Err(node.error(format!(
            "shape {wanted:?} holds {b} elements, the input {:?} holds {a}",
            fact.shape
        )));
    }
    let x = node.input(0)?;
    let op = AxisOp::Reshape(0, fact.shape.to_tvec(), shape);
    one(graph.wire1(node, "", op, &[x])?)
}

/// Flatten: a matrix `[prod(dims before axis), prod(dims from axis)]`; `axis` in `-r..=r`.
pub(super) fn flatten(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let fact = node.fact(graph, 0)?;
    let rank = fact.rank();
    let axis = node.int_or("axis", 1)?;
    let axis = if axis == rank as i64 {
        rank
    } else {
        node.axis("axis", axis, rank)?
    };
    let dims = fact.shape.to_tvec();
    let rows: TDim = dims[..axis].iter().product();
    let cols: TDim = dims[axis..].iter().product();
    let x = node.input(0)?;
    let op = AxisOp::Reshape(0, dims, tvec!(rows, cols));
    one(graph.wire1(node, "", op, &[x])?)
}

pub(super) fn transpose(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let rank = node.rank(graph, 0)?;
    let perm: Vec<usize> = match node.ints("perm")? {
        None => (0..rank).rev().collect(),
        Some(p) => p
            .iter()
            .map(|&a| node.axis("perm entry", a, rank))
            .collect::<Result<_>>()?,
    };
    let mut seen = perm.clone();
    seen.sort_unstable();
    if seen != (0..rank).collect::<Vec<_>>() {
        return Err(node.error(format!("perm {perm:?} is not a permutation of 0..{rank}")));
    }
    let mut wire = node.input(0)?;
    for (i, op) in perm_to_ops(&perm).into_iter().enumerate() {
        wire = graph.wire1(node, &format!("move{i}"), op, &[wire])?;
    }
    one(wire)
}

/// Squeeze: removes the listed unit axes (attribute before operator set 13, input from 13),
/// or every unit axis.
pub(super) fn squeeze(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let fact = node.fact(graph, 0)?;
    let rank = fact.rank();
    let mut axes: Vec<usize> = match axes_list(graph, node, 1, 13)? {
        Some(list) => list
            .iter()
            .map(|&a| node.axis("axis", a, rank))
            .collect::<Result<_>>()?,
        None => (0..rank).filter(|&a| fact.shape[a].is_one()).collect(),
    };
    axes.sort_unstable();
    axes.dedup();
    if let Some(&a) = axes.iter().find(|&&a| !fact.shape[a].is_one()) {
        return Err(node.error(format!("axis {a} has size {}, not 1", fact.shape[a])));
    }
    let mut wire = node.input(0)?;
    for &axis in axes.iter().rev() {
        wire = graph.wire1(node, &format!("rm{axis}"), AxisOp::Rm(axis), &[wire])?;
    }
    one(wire)
}

/// Unsqueeze: inserts unit axes at the listed positions of the output.
pub(super) fn unsqueeze(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let rank = node.rank(graph, 0)?;
    let list = axes_list(graph, node, 1, 13)?.ok_or_else(|| node.error("the axes are missing"))?;
    let out_rank = rank + list.len();
    let mut axes: Vec<usize> = list
        .iter()
        .map(|&a| node.axis("axis", a, out_rank))
        .collect::<Result<_>>()?;
    axes.sort_unstable();
    if axes.windows(2).any(|w| w[0] == w[1]) {
        return Err(node.error(format!("axes {list:?} repeat an axis")));
    }
    let mut wire = node.input(0)?;
    for &axis in &axes {
        wire = graph.wire1(node, &format!("add{axis}"), AxisOp::Add(axis), &[wire])?;
    }
    one(wire)
}

pub(super) fn concat(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let inputs: Vec<OutletId> = (0..node.inputs.len())
        .map(|i| node.input(i))
        .collect::<Result<_>>()?;
    if inputs.is_empty() {
        return Err(node.error("it has no inputs"));
    }
    let rank = node.rank(graph, 0)?;
    let axis = node
        .int("axis")?
        .ok_or_else(|| node.error("attribute 'axis' is required"))?;
    let axis = node.axis("axis", axis, rank)?;
    let inputs = same_rank(graph, node, &inputs)?;
    one(graph.wire1(node, "", TypedConcat { axis }, &inputs)?)
}

pub(super) fn gather(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let rank = node.rank(graph, 0)?;
    let axis = node.axis("axis", node.int_or("axis", 0)?, rank)?;
    let inputs = [node.input(0)?, node.input(1)?];
    let op = Gather {
        axis,
        output_type: None,
    };
    one(graph.wire1(node, "", op, &inputs)?)
}

/// Shape: the input's shape (from `start` to `end`, operator set 15) as a constant, int64 when
/// every size is known, symbolic sizes otherwise.
pub(super) fn shape(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let fact = node.fact(graph, 0)?;
    let rank = fact.rank() as i64;
    let clamp = |v: i64| if v < 0 { (v + rank).max(0) } else { v.min(rank) } as usize;
    let start = clamp(node.int_or("start", 0)?);
    let end = clamp(node.int_or("end", rank)?).max(start);
    let dims = &fact.shape.to_tvec()[start..end];
    let value = match dims
        .iter()
        .map(|d| d.to_i64())
        .collect::<std::result::Result<Vec<i64>, _>>()
    {
        Ok(known) => tensor1(&known),
        Err(_) => tensor1(dims),
    };
    one(graph.constant(node.name.clone(), value)?)
}

pub(super) fn cast(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let to = node
        .int("to")?
        .ok_or_else(|| node.error("attribute 'to' is required"))?;
    let to = datum_type(i32::try_from(to).unwrap_or(-1)).map_err(|e| node.error(e))?;
    let from = node.fact(graph, 0)?.datum_type;
    let x = node.input(0)?;
    // Symbolic sizes stay symbolic through a cast to int64.
    if from == to || (from == TDim::datum_type() && to == i64::datum_type()) {
        return one(x);
    }
    one(graph.wire1(node, "", tract_core::ops::cast::cast(to), &[x])?)
}

/// Pad: `pads` and `value` are attributes before operator set 11, inputs from 11. Modes
/// constant, reflect and edge; negative pads (cropping) and the `axes` input are refused.
pub(super) fn pad(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let fact = node.fact(graph, 0)?;
    let rank = fact.rank();
    let (pads, value): (Vec<i64>, f32) = if node.opset < 11 {
        let pads = node
            .ints("pads")?
            .ok_or_else(|| node.error("attribute 'pads' is required"))?;
        (pads, node.float_or("value", 0.0)?)
    } else {
        if node.optional_input(3).is_some() {
            return Err(node.error("the 'axes' input is not supported; list pads for every axis"));
        }
        let pads = int_input(graph, node, 1)?
            .ok_or_else(|| node.error("input 1 (pads) is missing"))?
            .iter()
            .map(|p| p.to_i64().map_err(|_| node.error("pads must be numbers")))
            .collect::<Result<Vec<i64>>>()?;
        let value = match node.constant_input(graph, 2)? {
            None => 0.0,
            Some(t) => t
                .cast_to_scalar::<f32>()
                .map_err(|_| node.error("constant_value must be a scalar"))?,
        };
        (pads, value)
    };
    if pads.len() != 2 * rank || pads.iter().any(|&p| p < 0) {
        return Err(node.error(format!(
            "pads must hold {} non-negative values (begins then ends), got {pads:?}",
            2 * rank
        )));
    }
    let mode = match node.string("mode")?.as_deref() {
        None | Some("constant") => {
            let v = tensor0(value)
                .cast_to_dt(fact.datum_type)
                .map_err(|e| node.tract(e))?
                .into_owned();
            PadMode::Constant(v.into_arc_tensor())
        }
        Some("reflect") => PadMode::Reflect,
        Some("edge") => PadMode::Edge,
        Some(other) => {
            return Err(node.error(format!(
                "mode '{other}' is not supported (constant, reflect, edge)"
            )));
        }
    };
    let pads = (0..rank)
        .map(|a| (pads[a] as usize, pads[a + rank] as usize))
        .collect();
    let x = node.input(0)?;
    one(graph.wire1(node, "", Pad { pads, mode }, &[x])?)
}
