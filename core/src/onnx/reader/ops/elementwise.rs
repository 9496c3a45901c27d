//! Element-wise operators: arithmetic, activations, and the ones that pass their input through.

use super::{broadcast, one};
use crate::error::Result;
use crate::onnx::reader::Graph;
use crate::onnx::reader::node::Node;
use tract_core::internal::*;
use tract_core::ops::math;

fn binary(graph: &mut Graph, node: &Node, op: Box<dyn TypedOp>) -> Result<TVec<OutletId>> {
    let (a, b) = (node.input(0)?, node.input(1)?);
    one(broadcast(graph, node, "", op, a, b)?)
}

pub(super) fn add(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    binary(graph, node, Box::new(math::add()))
}

pub(super) fn sub(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    binary(graph, node, Box::new(math::sub()))
}

pub(super) fn mul(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    binary(graph, node, Box::new(math::mul()))
}

pub(super) fn div(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    binary(graph, node, Box::new(math::div()))
}

/// `x` clamped below by `low` and above by `high`, each when given.
fn clamp(
    graph: &mut Graph,
    node: &Node,
    low: Option<f32>,
    high: Option<f32>,
) -> Result<TVec<OutletId>> {
    let fact = node.fact(graph, 0)?;
    let mut wire = node.input(0)?;
    if let Some(low) = low {
        let c = graph.scalar(node, "low.cst", low, fact.datum_type, fact.rank())?;
        wire = graph.wire1(node, "low", math::max(), &[wire, c])?;
    }
    if let Some(high) = high {
        let c = graph.scalar(node, "high.cst", high, fact.datum_type, fact.rank())?;
        wire = graph.wire1(node, "high", math::min(), &[wire, c])?;
    }
    one(wire)
}

pub(super) fn relu(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    clamp(graph, node, Some(0.0), None)
}

/// Clip: bounds are attributes before operator set 11, optional scalar inputs from 11 (constant
/// or computed: they are wired as element-wise max and min).
pub(super) fn clip(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    if node.opset < 11 {
        let attr = |name| -> Result<Option<f32>> {
            node.proto
                .attribute
                .iter()
                .any(|a| a.name == name)
                .then(|| node.float_or(name, 0.0))
                .transpose()
        };
        return clamp(graph, node, attr("min")?, attr("max")?);
    }
    let mut wire = node.input(0)?;
    for (slot, suffix) in [(1, "low"), (2, "high")] {
        let Some(bound) = node.optional_input(slot) else {
            continue;
        };
        let rank = node.rank(graph, slot)?;
        if rank != 0 {
            return Err(node.error(format!("input {slot} must be a scalar, got rank {rank}")));
        }
        wire = if slot == 1 {
            broadcast(graph, node, suffix, math::max(), wire, bound)?
        } else {
            broadcast(graph, node, suffix, math::min(), wire, bound)?
        };
    }
    one(wire)
}

pub(super) fn sigmoid(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let x = node.input(0)?;
    one(graph.wire1(node, "", tract_core::ops::nn::sigmoid(), &[x])?)
}

pub(super) fn hard_swish(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let x = node.input(0)?;
    one(graph.wire1(node, "", tract_core::ops::nn::hard_swish(), &[x])?)
}

/// `max(0, min(1, alpha * x + beta))`.
pub(super) fn hard_sigmoid(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let alpha = node.float_or("alpha", 0.2)?;
    let beta = node.float_or("beta", 0.5)?;
    let fact = node.fact(graph, 0)?;
    let (dt, rank) = (fact.datum_type, fact.rank());
    let mut wire = node.input(0)?;
    let c = graph.scalar(node, "alpha", alpha, dt, rank)?;
    wire = graph.wire1(node, "mul_alpha", math::mul(), &[c, wire])?;
    let c = graph.scalar(node, "beta", beta, dt, rank)?;
    wire = graph.wire1(node, "add_beta", math::add(), &[c, wire])?;
    let c = graph.scalar(node, "one", 1.0, dt, rank)?;
    wire = graph.wire1(node, "sat_one", math::min(), &[c, wire])?;
    let c = graph.scalar(node, "zero", 0.0, dt, rank)?;
    one(graph.wire1(node, "sat_zero", math::max(), &[c, wire])?)
}

pub(super) fn identity(_graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    one(node.input(0)?)
}

/// Dropout in inference: the input unchanged, and its mask (when named) all true; old exporters
/// (Caffe2's AlexNet, SqueezeNet, VGG) name it without reading it. Training mode with a non-zero
/// ratio would drop at random, which a classifier never wants: refused.
pub(super) fn dropout(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let mut outputs = dropout_output(graph, node)?;
    if node.proto.output.get(1).is_some_and(|o| !o.is_empty()) {
        let shape = node.fact(graph, 0)?.shape;
        let shape = shape.as_concrete().ok_or_else(|| {
            node.error(format!(
                "its mask output is used and the input's shape {shape:?} is not known at load"
            ))
        })?;
        let count = shape.iter().product::<usize>();
        let mask = Tensor::from_shape(shape, &vec![true; count]).map_err(|e| node.tract(e))?;
        outputs.push(graph.constant(format!("{}.mask", node.name), mask)?);
    }
    Ok(outputs)
}

/// Dropout's first output: the input, once its mode and ratio are checked.
fn dropout_output(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    // Before operator set 12 Dropout has no training-mode input: models are exported for
    // inference with it as a pass-through. In inference the ratio is not read, so it may come
    // from anywhere.
    let training = if node.opset < 12 {
        false
    } else {
        match node.constant_input(graph, 2)? {
            None => false,
            Some(t) => t
                .cast_to_scalar::<bool>()
                .map_err(|_| node.error("training_mode must be a boolean scalar"))?,
        }
    };
    if !training {
        return one(node.input(0)?);
    }
    let ratio = match node.constant_input(graph, 1)? {
        Some(t) => t
            .cast_to_scalar::<f32>()
            .map_err(|_| node.error("ratio must be a scalar"))?,
        None => 0.5,
    };
    if ratio != 0.0 {
        return Err(node
            .error("it runs in training mode; export the model in inference mode (model.eval())"));
    }
    one(node.input(0)?)
}
