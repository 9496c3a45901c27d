//! One ONNX node as the translation functions see it: its name, its resolved inputs, its
//! attributes read with ONNX's defaults, and errors that name the node.

use super::Graph;
use crate::error::{NnzError, Result};
use crate::onnx::proto::attribute_proto::AttributeType;
use crate::onnx::proto::{AttributeProto, NodeProto, TensorProto};
use tract_core::internal::*;

/// A node being translated.
pub(crate) struct Node<'a> {
    pub proto: &'a NodeProto,
    /// The node's name, or its first output's when it has none.
    pub name: String,
    /// One entry per declared input; `None` for an omitted optional input (empty name).
    pub inputs: Vec<Option<OutletId>>,
    /// The default-domain operator set the model imports.
    pub opset: i64,
}

impl<'a> Node<'a> {
    /// An error about this node.
    pub fn error(&self, what: impl std::fmt::Display) -> NnzError {
        NnzError::model(format!(
            "ONNX node '{}' ({}): {what}",
            self.name, self.proto.op_type
        ))
    }

    /// Input `slot`, which must be present.
    pub fn input(&self, slot: usize) -> Result<OutletId> {
        self.optional_input(slot)
            .ok_or_else(|| self.error(format!("input {slot} is missing")))
    }

    /// Input `slot` if the node has it.
    pub fn optional_input(&self, slot: usize) -> Option<OutletId> {
        self.inputs.get(slot).copied().flatten()
    }

    /// The value of input `slot` when it is known at load time (an initializer, a constant or
    /// something computed from them); `None` when the input is absent.
    pub fn constant_input(&self, graph: &Graph, slot: usize) -> Result<Option<Arc<Tensor>>> {
        let Some(outlet) = self.optional_input(slot) else {
            return Ok(None);
        };
        let fact = graph.model.outlet_fact(outlet).map_err(|e| self.error(e))?;
        match &fact.konst {
            Some(value) => Ok(Some(value.clone())),
            None => Err(self.error(format!(
                "input {slot} must be a constant (an initializer), not computed from the graph's input"
            ))),
        }
    }

    /// The fact (type and shape) of input `slot`.
    pub fn fact(&self, graph: &Graph, slot: usize) -> Result<TypedFact> {
        let outlet = self.input(slot)?;
        graph
            .model
            .outlet_fact(outlet)
            .cloned()
            .map_err(|e| self.error(e))
    }

    /// Input `slot`'s rank.
    pub fn rank(&self, graph: &Graph, slot: usize) -> Result<usize> {
        Ok(self.fact(graph, slot)?.rank())
    }

    fn attribute(&self, name: &str, kind: AttributeType) -> Result<Option<&'a AttributeProto>> {
        let Some(attr) = self.proto.attribute.iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        // Old exporters leave `type` unset; the value field then says what it is.
        if attr.r#type != AttributeType::Undefined as i32 && attr.r#type != kind as i32 {
            return Err(self.error(format!(
                "attribute '{name}' has type {}, expected {kind:?}",
                AttributeType::try_from(attr.r#type)
                    .map_or_else(|_| attr.r#type.to_string(), |t| format!("{t:?}"))
            )));
        }
        Ok(Some(attr))
    }

    /// An integer attribute.
    pub fn int(&self, name: &str) -> Result<Option<i64>> {
        Ok(self.attribute(name, AttributeType::Int)?.map(|a| a.i))
    }

    /// An integer attribute with its default.
    pub fn int_or(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    /// A 0/1 attribute with its default.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool> {
        match self.int(name)? {
            None => Ok(default),
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(other) => {
                Err(self.error(format!("attribute '{name}' must be 0 or 1, got {other}")))
            }
        }
    }

    /// A float attribute with its default.
    pub fn float_or(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self
            .attribute(name, AttributeType::Float)?
            .map_or(default, |a| a.f))
    }

    /// A list-of-integers attribute.
    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self
            .attribute(name, AttributeType::Ints)?
            .map(|a| a.ints.clone()))
    }

    /// A list of non-negative integers (sizes, strides, pads).
    pub fn sizes(&self, name: &str) -> Result<Option<TVec<usize>>> {
        let Some(values) = self.ints(name)? else {
            return Ok(None);
        };
        values
            .iter()
            .map(|&v| {
                usize::try_from(v).map_err(|_| {
                    self.error(format!(
                        "attribute '{name}' has a negative value {v}: {values:?}"
                    ))
                })
            })
            .collect::<Result<TVec<usize>>>()
            .map(Some)
    }

    /// A string attribute.
    pub fn string(&self, name: &str) -> Result<Option<String>> {
        self.attribute(name, AttributeType::String)?
            .map(|a| {
                String::from_utf8(a.s.clone())
                    .map_err(|_| self.error(format!("attribute '{name}' is not UTF-8")))
            })
            .transpose()
    }

    /// A tensor attribute.
    pub fn tensor(&self, name: &str) -> Result<Option<&'a TensorProto>> {
        match self.attribute(name, AttributeType::Tensor)? {
            None => Ok(None),
            Some(a) => {
                a.t.as_ref()
                    .map(Some)
                    .ok_or_else(|| self.error(format!("attribute '{name}' holds no tensor")))
            }
        }
    }

    /// An axis in `-rank..rank`, made non-negative.
    pub fn axis(&self, what: &str, axis: i64, rank: usize) -> Result<usize> {
        let r = rank as i64;
        if axis < -r || axis >= r {
            return Err(self.error(format!(
                "{what} {axis} is out of range for an input of rank {rank} (allowed {}..={})",
                -r,
                r - 1
            )));
        }
        Ok(if axis < 0 { axis + r } else { axis } as usize)
    }

    /// Wraps a tract error raised while wiring this node.
    pub fn tract(&self, e: impl std::fmt::Display) -> NnzError {
        self.error(format!("tract cannot build it: {e:#}"))
    }
}
