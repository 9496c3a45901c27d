//! Normalising operators: BatchNormalization (inference), Softmax and ReduceMean.

use super::{broadcast, one};
use crate::error::Result;
use crate::onnx::reader::Graph;
use crate::onnx::reader::node::Node;
use tract_core::internal::*;
use tract_core::ops::math;
use tract_core::ops::nn::{Reduce, Reducer, Softmax, SoftmaxKind};

/// The values of a constant input as `c` floats.
fn channel_values(graph: &Graph, node: &Node, slot: usize, c: usize) -> Result<Vec<f32>> {
    let t = node.constant_input(graph, slot)?.ok_or_else(|| {
        node.error(format!(
            "input {slot} (scale, bias, mean or variance) is missing"
        ))
    })?;
    let t = t.cast_to::<f32>().map_err(|e| node.tract(e))?;
    let plain = t.try_as_plain_ram().map_err(|e| node.tract(e))?;
    let values = plain.as_slice::<f32>().map_err(|e| node.tract(e))?;
    if values.len() != c {
        return Err(node.error(format!(
            "input {slot} has {} values for {c} channels",
            values.len()
        )));
    }
    Ok(values.to_vec())
}

/// Inference-mode batch normalisation folded into `slope * x + intercept` per channel, with
/// `slope = scale / sqrt(var + epsilon)` and `intercept = bias - mean * scale / sqrt(var + epsilon)`.
pub(super) fn batch_normalization(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    if node.proto.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(node.error(
            "its running-statistics outputs are used (training mode); export the model with model.eval()",
        ));
    }
    if node.int_or("training_mode", 0)? != 0 {
        return Err(node.error("training_mode is set; export the model with model.eval()"));
    }
    if node.int_or("spatial", 1)? != 1 {
        return Err(node.error(
            "spatial = 0 (per-activation statistics, before operator set 9) is not supported",
        ));
    }
    let epsilon = node.float_or("epsilon", 1e-5)?;
    let fact = node.fact(graph, 0)?;
    if fact.rank() < 2 {
        return Err(node.error(format!(
            "the input must have a channel axis, got rank {}",
            fact.rank()
        )));
    }
    let statistics_known = (1..=4).all(|slot| {
        node.optional_input(slot)
            .and_then(|o| graph.model.outlet_fact(o).ok())
            .is_some_and(|f| f.konst.is_some())
    });
    if !statistics_known {
        return batch_normalization_wired(graph, node, &fact, epsilon);
    }
    let c = fact.shape[1]
        .to_usize()
        .map_err(|_| node.error("the channel count must be a number"))?;
    let [scale, bias, mean, var] = [1, 2, 3, 4].map(|slot| channel_values(graph, node, slot, c));
    let (scale, bias, mean, var) = (scale?, bias?, mean?, var?);
    let mut slope = Vec::with_capacity(c);
    let mut intercept = Vec::with_capacity(c);
    for i in 0..c {
        let denominator = (var[i] + epsilon).sqrt();
        slope.push(scale[i] / denominator);
        intercept.push(bias[i] - (mean[i] * scale[i]) / denominator);
    }
    let mut shape = vec![1; fact.rank()];
    shape[1] = c;
    let as_input_type = |values: Vec<f32>| -> Result<Tensor> {
        Tensor::from_shape(&shape, &values)
            .and_then(|t| t.cast_to_dt(fact.datum_type).map(|t| t.into_owned()))
            .map_err(|e| node.tract(e))
    };
    let slope = graph.constant(format!("{}.slope", node.name), as_input_type(slope)?)?;
    let intercept = graph.constant(format!("{}.inter", node.name), as_input_type(intercept)?)?;
    let x = node.input(0)?;
    let scaled = graph.wire1(node, "mul", math::mul(), &[slope, x])?;
    one(graph.wire1(node, "", math::add(), &[intercept, scaled])?)
}

/// BatchNormalization whose scale, bias, mean or variance the graph computes (they cannot be
/// folded at load): `(x - mean) / sqrt(var + epsilon) * scale + bias`, each `[C]` input seen as
/// `[1, C, 1, …]` to broadcast over the input.
fn batch_normalization_wired(
    graph: &mut Graph,
    node: &Node,
    fact: &TypedFact,
    epsilon: f32,
) -> Result<TVec<OutletId>> {
    let rank = fact.rank();
    let per_channel = |graph: &mut Graph, slot: usize| -> Result<OutletId> {
        let shape = node.fact(graph, slot)?.shape;
        if shape.rank() != 1 || shape[0] != fact.shape[1] {
            return Err(node.error(format!(
                "input {slot} (scale, bias, mean or variance) must be [{}], got {shape:?}",
                fact.shape[1]
            )));
        }
        let mut wire = node.input(slot)?;
        wire = graph.wire1(node, &format!("in{slot}.batch"), AxisOp::Add(0), &[wire])?;
        for axis in 2..rank {
            wire = graph.wire1(
                node,
                &format!("in{slot}.{axis}"),
                AxisOp::Add(axis),
                &[wire],
            )?;
        }
        Ok(wire)
    };
    let scale = per_channel(graph, 1)?;
    let bias = per_channel(graph, 2)?;
    let mean = per_channel(graph, 3)?;
    let var = per_channel(graph, 4)?;
    let eps = graph.scalar(node, "epsilon", epsilon, fact.datum_type, rank)?;
    let x = node.input(0)?;
    let centred = graph.wire1(node, "centred", math::sub(), &[x, mean])?;
    let var_eps = graph.wire1(node, "var_eps", math::add(), &[var, eps])?;
    let std = graph.wire1(node, "std", math::sqrt(), &[var_eps])?;
    let normed = graph.wire1(node, "normed", math::div(), &[centred, std])?;
    let scaled = graph.wire1(node, "scaled", math::mul(), &[normed, scale])?;
    one(graph.wire1(node, "", math::add(), &[scaled, bias])?)
}

pub(super) fn softmax(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    softmax_of_kind(graph, node, SoftmaxKind::Softmax)
}

pub(super) fn log_softmax(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    softmax_of_kind(graph, node, SoftmaxKind::LogSoftmax)
}

/// Softmax or LogSoftmax. From operator set 13 it normalises along `axis` (default -1); before,
/// it normalises the input seen as a matrix `[prod(dims before axis), prod(dims from axis)]`
/// (default axis 1): the trailing axes are merged, normalised together and split again.
fn softmax_of_kind(graph: &mut Graph, node: &Node, kind: SoftmaxKind) -> Result<TVec<OutletId>> {
    let fact = node.fact(graph, 0)?;
    let rank = fact.rank();
    let x = node.input(0)?;
    let default_axis = if node.opset < 13 { 1 } else { -1 };
    let axis = node.axis("axis", node.int_or("axis", default_axis)?, rank)?;
    let op = |axis| Softmax {
        axes: tvec!(axis),
        kind,
        ..Softmax::default()
    };
    if node.opset >= 13 || axis + 1 == rank {
        return one(graph.wire1(node, "", op(axis), &[x])?);
    }
    let trailing: TVec<TDim> = fact.shape[axis..].into();
    let merged: TDim = trailing.iter().product();
    let reshape = AxisOp::Reshape(axis, trailing.clone(), tvec!(merged.clone()));
    let wire = graph.wire1(node, "merged", reshape, &[x])?;
    let wire = graph.wire1(node, "softmax", op(axis), &[wire])?;
    let split = AxisOp::Reshape(axis, tvec!(merged), trailing);
    one(graph.wire1(node, "", split, &[wire])?)
}

/// The axes a reduction runs over: the attribute before operator set 18, the optional second
/// input from 18; none means all (or none with `noop_with_empty_axes`).
fn reduced_axes(graph: &Graph, node: &Node, rank: usize) -> Result<Vec<usize>> {
    let listed: Option<Vec<i64>> = if node.opset < 18 {
        node.ints("axes")?
    } else {
        match node.constant_input(graph, 1)? {
            None => None,
            Some(t) => {
                let t = t.cast_to::<i64>().map_err(|e| node.tract(e))?;
                let plain = t.try_as_plain_ram().map_err(|e| node.tract(e))?;
                Some(plain.as_slice::<i64>().map_err(|e| node.tract(e))?.to_vec())
            }
        }
    };
    let mut axes = match listed {
        Some(list) if !list.is_empty() => list
            .iter()
            .map(|&a| node.axis("axis", a, rank))
            .collect::<Result<Vec<usize>>>()?,
        _ if node.opset >= 18 && node.flag("noop_with_empty_axes", false)? => vec![],
        _ => (0..rank).collect(),
    };
    axes.sort_unstable();
    axes.dedup();
    Ok(axes)
}

/// The mean over the reduced axes: their sum divided by their element count.
pub(super) fn reduce_mean(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let fact = node.fact(graph, 0)?;
    let axes = reduced_axes(graph, node, fact.rank())?;
    let x = node.input(0)?;
    if axes.is_empty() {
        return one(x);
    }
    let count: TDim = axes.iter().map(|&a| fact.shape[a].clone()).product();
    let count = count
        .to_usize()
        .map_err(|_| node.error(format!("the reduced size {count} must be a number")))?;
    let sum = graph.wire1(
        node,
        "sum",
        Reduce::new(axes.iter().copied().collect(), Reducer::Sum),
        &[x],
    )?;
    let n = graph.scalar(node, "size", count as f32, fact.datum_type, fact.rank())?;
    let mut wire = broadcast(graph, node, "norm", math::div(), sum, n)?;
    if !node.flag("keepdims", true)? {
        for &axis in axes.iter().rev() {
            wire = graph.wire1(node, &format!("rm{axis}"), AxisOp::Rm(axis), &[wire])?;
        }
    }
    one(wire)
}
