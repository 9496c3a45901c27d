//! nnzip's ONNX reader: an ONNX `ModelProto` translated into tract-core's `TypedModel`, one
//! operator at a time through the table in [`ops`]. Facts (element types, shapes) come from the
//! graph input's declared type and tract-core's own shape rules for each operator, so no
//! separate shape inference runs: what cannot be typed is refused, naming the node.

mod graph_checks;
mod node;
pub(crate) mod ops;
mod tensor;

pub(crate) use tensor::{datum_type, tensor_from_proto, tensor_to_proto};

use crate::error::{NnzError, Result};
use crate::onnx::proto::{GraphProto, ModelProto, ValueInfoProto, tensor_shape_proto, type_proto};
use node::Node;
use std::collections::{HashMap, HashSet};
use tract_core::internal::*;
use tract_core::ops::konst::Const;

pub use graph_checks::check_graph;

/// The model under construction and the ONNX value names resolved so far.
pub(crate) struct Graph {
    pub model: TypedModel,
    values: HashMap<String, OutletId>,
    names: HashSet<String>,
}

impl Graph {
    /// A node name not used yet: tract refuses duplicates, ONNX does not forbid them.
    fn unique_name(&mut self, wanted: String) -> String {
        let mut name = wanted.clone();
        let mut k = 1;
        while self.names.contains(&name) {
            name = format!("{wanted}#{k}");
            k += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// Wires `op` as a part of `node` (named `node.suffix`, or the node's own name for an empty
    /// suffix). tract folds it into a constant when its inputs are small constants.
    pub fn wire(
        &mut self,
        node: &Node,
        suffix: &str,
        op: impl Into<Box<dyn TypedOp>>,
        inputs: &[OutletId],
    ) -> Result<TVec<OutletId>> {
        let wanted = if suffix.is_empty() {
            node.name.clone()
        } else {
            format!("{}.{suffix}", node.name)
        };
        let name = self.unique_name(wanted);
        self.model
            .wire_node(name, op, inputs)
            .map_err(|e| node.tract(e))
    }

    /// As [`Graph::wire`] for an op with one output.
    pub fn wire1(
        &mut self,
        node: &Node,
        suffix: &str,
        op: impl Into<Box<dyn TypedOp>>,
        inputs: &[OutletId],
    ) -> Result<OutletId> {
        let wires = self.wire(node, suffix, op, inputs)?;
        wires
            .first()
            .copied()
            .ok_or_else(|| node.error("tract wired no output"))
    }

    /// Adds a constant. Unlike tract's `add_const`, it does not search the model for an equal
    /// constant first: that search is quadratic in the number of initializers, and a file may
    /// hold tens of thousands of small tensors.
    pub fn constant(&mut self, name: String, value: Tensor) -> Result<OutletId> {
        let name = self.unique_name(name);
        let value = value.into_arc_tensor();
        let fact = TypedFact::try_from(value.clone()).map_err(NnzError::model)?;
        let op = Const::new(value).map_err(NnzError::model)?;
        let id = self
            .model
            .add_node(name, op, tvec!(fact))
            .map_err(NnzError::model)?;
        Ok(OutletId::new(id, 0))
    }

    /// A constant scalar of `dt` with `rank` unit dimensions, to combine element-wise with a
    /// tensor of that rank.
    pub fn scalar(
        &mut self,
        node: &Node,
        suffix: &str,
        value: f32,
        dt: DatumType,
        rank: usize,
    ) -> Result<OutletId> {
        let t = tensor0(value)
            .cast_to_dt(dt)
            .map(|t| t.into_owned())
            .and_then(|t| t.broadcast_into_rank(rank))
            .map_err(|e| node.tract(e))?;
        self.constant(format!("{}.{suffix}", node.name), t)
    }
}

/// Translates an ONNX model into tract, with `weights` (the tensors a `.nnz` file holds) as
/// extra initializers. `batch`, when given, replaces a symbolic first dimension of the input.
pub fn typed_model_from_onnx(
    proto: &ModelProto,
    weights: Vec<(String, Tensor)>,
    batch: Option<usize>,
) -> Result<TypedModel> {
    let graph_proto = proto
        .graph
        .as_ref()
        .ok_or_else(|| NnzError::model("the ONNX model has no graph"))?;
    check_graph(graph_proto)?;
    let opset = default_opset(proto)?;
    let mut graph = Graph {
        model: TypedModel::default(),
        values: HashMap::new(),
        names: HashSet::new(),
    };
    add_values(&mut graph, graph_proto, weights, batch)?;
    for node_proto in &graph_proto.node {
        let node = Node {
            proto: node_proto,
            name: node_name(node_proto, graph.model.nodes().len()),
            inputs: node_proto
                .input
                .iter()
                .map(|name| resolve(&graph, node_proto, name))
                .collect::<Result<_>>()?,
            opset,
        };
        let translate = ops::translation(&node)?;
        let outputs = translate(&mut graph, &node)?;
        for (name, outlet) in node_proto.output.iter().zip(outputs) {
            if !name.is_empty() {
                graph.values.insert(name.clone(), outlet);
                let _ = graph.model.set_outlet_label(outlet, name.clone());
            }
        }
    }
    let outputs = graph_proto
        .output
        .iter()
        .map(|o| {
            graph.values.get(&o.name).copied().ok_or_else(|| {
                NnzError::model(format!(
                    "graph output '{}' is produced by no node, input or initializer",
                    o.name
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    graph
        .model
        .select_output_outlets(&outputs)
        .map_err(NnzError::model)?;
    Ok(graph.model)
}

/// The default-domain operator set the model imports (1 when it declares none, as ONNX says).
fn default_opset(proto: &ModelProto) -> Result<i64> {
    let version = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(1, |o| o.version);
    if !(1..=30).contains(&version) {
        return Err(NnzError::model(format!(
            "the model imports ONNX operator set {version}, which does not exist"
        )));
    }
    Ok(version)
}

/// A node's name for tract and for errors: its own, else its first output's, else its position.
fn node_name(node: &crate::onnx::proto::NodeProto, position: usize) -> String {
    if !node.name.is_empty() {
        node.name.clone()
    } else if let Some(out) = node.output.first().filter(|o| !o.is_empty()) {
        out.clone()
    } else {
        format!("{}-{position}", node.op_type)
    }
}

fn resolve(
    graph: &Graph,
    node: &crate::onnx::proto::NodeProto,
    name: &str,
) -> Result<Option<OutletId>> {
    if name.is_empty() {
        return Ok(None);
    }
    graph.values.get(name).copied().map(Some).ok_or_else(|| {
        NnzError::model(format!(
            "ONNX node '{}' ({}) reads '{name}', which no earlier node, graph input or tensor of the file provides",
            node.name, node.op_type
        ))
    })
}

/// Adds the graph's inputs as sources and every initializer (the graph's and the file's) as a
/// constant: inputs first in graph order, then the initializers sorted by name, so that the
/// model is built in the same order whatever order the file stores its tensors in.
fn add_values(
    graph: &mut Graph,
    proto: &GraphProto,
    weights: Vec<(String, Tensor)>,
    batch: Option<usize>,
) -> Result<()> {
    let mut initializers: HashMap<String, Tensor> = HashMap::new();
    for init in &proto.initializer {
        initializers.insert(init.name.clone(), tensor::tensor_from_proto(init)?);
    }
    for (name, value) in weights {
        if initializers.insert(name.clone(), value).is_some() {
            return Err(NnzError::malformed(format!(
                "tensor '{name}' is both in the graph and among the decoded weights"
            )));
        }
    }
    for input in &proto.input {
        if let Some(value) = initializers.remove(&input.name) {
            let outlet = graph.constant(input.name.clone(), value)?;
            graph.values.insert(input.name.clone(), outlet);
            continue;
        }
        let fact = input_fact(graph, input, batch)?;
        let name = graph.unique_name(input.name.clone());
        let outlet = graph
            .model
            .add_source(name, fact)
            .map_err(NnzError::model)?;
        graph.values.insert(input.name.clone(), outlet);
    }
    let mut rest: Vec<(String, Tensor)> = initializers.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in rest {
        let outlet = graph.constant(name.clone(), value)?;
        graph.values.insert(name, outlet);
    }
    Ok(())
}

/// A graph input's type: its element type and its shape, where a named or unknown dimension is
/// a symbol of that name (the first one replaced by `batch` when given).
fn input_fact(graph: &Graph, input: &ValueInfoProto, batch: Option<usize>) -> Result<TypedFact> {
    let bad = |what: &str| NnzError::model(format!("graph input '{}' {what}", input.name));
    let Some(type_proto::Value::TensorType(t)) =
        input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(bad("has no tensor type"));
    };
    let dt = tensor::datum_type(t.elem_type)?;
    let dims = t.shape.as_ref().ok_or_else(|| bad("has no shape"))?;
    let mut shape: TVec<TDim> = tvec!();
    for (axis, dim) in dims.dim.iter().enumerate() {
        let d = match &dim.value {
            Some(tensor_shape_proto::dimension::Value::DimValue(v)) if *v > 0 => TDim::Val(*v),
            Some(tensor_shape_proto::dimension::Value::DimValue(v)) => {
                return Err(bad(&format!(
                    "has dimension {axis} = {v}; sizes must be positive"
                )));
            }
            _ if axis == 0 && batch.is_some() => TDim::Val(batch.unwrap_or(1) as i64),
            Some(tensor_shape_proto::dimension::Value::DimParam(p)) if is_symbol(p) => {
                graph.model.symbols.sym(p).into()
            }
            _ => graph
                .model
                .symbols
                .sym(&format!(
                    "{}_{axis}",
                    input
                        .name
                        .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                ))
                .into(),
        };
        shape.push(d);
    }
    Ok(dt.fact(shape))
}

/// A `dim_param` usable as a tract symbol name.
fn is_symbol(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
