use log::{debug, trace, warn};
use std::collections::HashMap;

use tract_hir::internal::*;
use tract_hir::prelude::tract_itertools::Itertools;

use crate::onnx::pb::type_proto::Value;
use crate::onnx::pb::{self, TensorProto, TypeProto};
use crate::onnx::tensor::{load_tensor, translate_inference_fact};

/// For every input slot of the node (without end: slots past the declared inputs are `None`), the
/// index among its present inputs, or `None` where the optional input is omitted. Callers take
/// slots with `.next().flatten()` (tract-onnx writes `.next().unwrap()`; the iterator never ends,
/// but the decoder keeps no panic sites).
pub fn optional_inputs(pb: &pb::NodeProto) -> impl Iterator<Item = Option<usize>> + '_ {
    let mut real_input = 0;
    (0..).map(move |i| {
        if pb.input.get(i).filter(|s| !s.is_empty()).is_some() {
            real_input += 1;
            Some(real_input - 1)
        } else {
            None
        }
    })
}

#[derive(Clone)]
pub struct ParsingContext<'a> {
    pub onnx_operator_set_version: i64,
    pub framework: &'a Onnx,
    pub parent_graphs: Vec<&'a pb::GraphProto>,
    pub template: InferenceModel,
}

#[derive(Clone, Debug)]
pub struct ParseResult {
    pub model: InferenceModel,
    pub unresolved_inputs: Vec<String>,
    pub outlets_by_name: HashMap<String, OutletId>,
}

/// Adds an initializer as a constant, as tract's `add_const` does but without its search for an
/// equal constant among every node added before: that search is quadratic in the number of
/// initializers, and a `.nnz` file's weights are initializers (measured: 20,000 one-element
/// tensors took 3.3 s to parse, 5,000 took 0.19 s; a file may hold 100,000). Equal weights stay
/// separate constants. (nnzip's change, see the module docs.)
fn add_initializer(model: &mut InferenceModel, name: &str, t: Tensor) -> TractResult<OutletId> {
    let v = t.into_arc_tensor();
    let fact = TypedFact::try_from(v.clone())?;
    model
        .add_node(
            name,
            tract_hir::ops::konst::Const::new(v)?,
            tvec!(fact.into()),
        )
        .map(|id| id.into())
}

impl ParsingContext<'_> {
    pub fn load_tensor(&self, proto: &TensorProto) -> TractResult<Tensor> {
        load_tensor(proto)
    }

    /// Parses `graph`; `weights` are initializers decoded elsewhere (a `.nnz` file's tensors),
    /// added exactly as the graph's own initializers are (nnzip's change, see the module docs).
    pub fn parse_graph(
        &self,
        graph: &pb::GraphProto,
        weights: Vec<(String, Tensor)>,
    ) -> TractResult<ParseResult> {
        let mut ctx = self.clone();
        ctx.parent_graphs.push(graph);
        let mut model = self.template.clone();
        let mut unresolved_inputs = vec![];
        let mut closures_to_wire = vec![];
        trace!("trying to initialize initializers hashmap...");
        let (weight_names, weight_values): (Vec<String>, Vec<Tensor>) = weights.into_iter().unzip();
        #[allow(unused_assignments)]
        let mut initializers: HashMap<&str, Tensor> = graph
            .initializer
            .iter()
            .map(|name| {
                let t = self.load_tensor(name)?;
                Ok((&*name.name, t))
            })
            .collect::<TractResult<_>>()?;
        // Decoded weights become constants in the same order and the same way as initializers
        // (before the operators, sorted by name), so tract builds and optimises the graph it
        // builds from the original ONNX file, node for node.
        for (name, value) in weight_names.iter().zip(weight_values) {
            if initializers.insert(name.as_str(), value).is_some() {
                bail!("tensor '{name}' is both in the graph and among the decoded weights");
            }
        }
        for (k, v) in initializers.iter().sorted_by_key(|kv| kv.0) {
            trace!("Initializer: {k} {v:?}");
        }
        let mut outlets_by_name = HashMap::<String, OutletId>::new();
        for input in graph.input.iter() {
            if let Some(init) = initializers.remove(&*input.name) {
                trace!("Input: {} initialized by {:?}", input.name, init);
                let id = add_initializer(&mut model, &input.name, init)?;
                outlets_by_name.insert(input.name.to_owned(), id);
            } else {
                let fact = input
                    .r#type
                    .as_ref()
                    .with_context(|| format!("graph input `{}` has no type", input.name))?
                    .value
                    .as_ref()
                    .with_context(|| format!("graph input `{}` has no type value", input.name))?;
                #[allow(irrefutable_let_patterns)]
                let fact: InferenceFact = if let pb::type_proto::Value::TensorType(fact) = fact {
                    translate_inference_fact(&ctx, fact, true)
                        .with_context(|| format!("translating to fact: {fact:?}"))?
                } else {
                    bail!("Can not parse tensor type");
                };
                trace!("Input: {} is a source ({:?})", input.name, fact);
                let id = model.add_source(&*input.name, fact)?;
                outlets_by_name.insert(input.name.to_owned(), id);
            }
        }
        for output in graph.output.iter() {
            trace!("Model output: {output:?}");
        }
        for (name, t) in initializers.into_iter().sorted_by_key(|kv| kv.0) {
            let id = add_initializer(&mut model, name, t)?;
            outlets_by_name.insert(name.to_string(), id);
        }
        let consts = model.nodes().len();
        for pbnode in graph.node.iter() {
            let name = if !pbnode.name.is_empty() {
                pbnode.name.to_string()
            } else if pbnode.output.len() > 0 && !pbnode.output[0].is_empty() {
                pbnode.output[0].to_owned()
            } else {
                format!("{}-{}", model.nodes().len(), pbnode.op_type)
            };
            trace!("Creating node {name}");
            let facts = pbnode
                .output
                .iter()
                .filter(|s| !s.is_empty())
                .map(|_| InferenceFact::default())
                .collect();
            trace!("  outputs {:?}", pbnode.output);
            let (op, closures) = match self.framework.op_register.0.get(&pbnode.op_type) {
                Some(builder) => (builder)(&ctx, pbnode).with_context(|| {
                    format!("Building node {} ({})", pbnode.name, pbnode.op_type)
                })?,
                // tract-onnx wires an `UnimplementedOp` here, which fails later and obscurely:
                // the phone runtime registers only the operators nnzip's models use, so say so.
                None => bail!(
                    "ONNX operator {} (node '{}') is not supported by this build of nnzip: \
                     its phone runtime registers only {}",
                    pbnode.op_type,
                    name,
                    self.framework.supported_ops().join(", ")
                ),
            };
            let id = model.add_node(name, op, facts)?;
            for (ix, output) in pbnode.output.iter().filter(|s| !s.is_empty()).enumerate() {
                outlets_by_name.insert(output.to_owned(), OutletId::new(id, ix));
                model.set_outlet_label(OutletId::new(id, ix), output.to_owned())?;
            }
            for closure in closures {
                trace!("Node {} closes on {}", model.nodes()[id], closure);
                closures_to_wire.push((id, closure))
            }
        }
        for (id, pbnode) in graph.node.iter().enumerate() {
            for (ix, input) in pbnode.input.iter().filter(|s| !s.is_empty()).enumerate() {
                if !outlets_by_name.contains_key(input) {
                    let id = model.add_source(input.clone(), InferenceFact::default())?;
                    unresolved_inputs.push(input.to_string());
                    outlets_by_name.insert(input.to_string(), id);
                }
                let outlet = outlets_by_name[input];
                model.add_edge(outlet, InletId::new(id + consts, ix))?;
            }
        }
        for (id, closure) in closures_to_wire {
            if !outlets_by_name.contains_key(&*closure) {
                let id = model.add_source(closure.clone(), InferenceFact::default())?;
                unresolved_inputs.push(closure.to_string());
                outlets_by_name.insert(closure.to_string(), id);
            }
            let outlet = outlets_by_name[&*closure];
            let ix = model.nodes()[id].inputs.len();
            model.add_edge(outlet, InletId::new(id, ix))?;
        }
        let mut outputs = vec![];
        for output in graph.output.iter() {
            let mut fact = InferenceFact::default();
            if self.framework.use_output_shapes
                && let Some(f) = output.r#type.as_ref().and_then(|t| t.value.as_ref())
            {
                let pb::type_proto::Value::TensorType(f) = f;
                fact = translate_inference_fact(&ctx, f, false)?
            };
            if self.framework.ignore_output_types {
                fact = fact.without_datum_type();
            }
            let outlet = outlets_by_name[&*output.name];
            outputs.push(outlet);
            model.set_outlet_label(outlet, output.name.clone())?;
            model.set_outlet_fact(outlet, fact)?;
        }
        model.select_output_outlets(&outputs)?;
        if !self.framework.ignore_value_info {
            for info in &graph.value_info {
                if let Some(TypeProto {
                    value: Some(Value::TensorType(t)),
                    ..
                }) = &info.r#type
                    && let Some(outlet) = outlets_by_name.get(&info.name)
                {
                    let mut pbfact = translate_inference_fact(&ctx, t, false)?;
                    // be conservative, these are likely to be TDim
                    if pbfact.datum_type() == Some(i64::datum_type()) {
                        pbfact = pbfact.without_datum_type();
                    }
                    model.set_outlet_fact(*outlet, pbfact)?;
                }
            }
        }
        let result = ParseResult {
            model,
            unresolved_inputs,
            outlets_by_name,
        };
        Ok(result)
    }
}

type OpBuilder =
    fn(&ParsingContext, node: &pb::NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

#[derive(Clone, Default)]
pub struct OnnxOpRegister(pub HashMap<String, OpBuilder>);

impl OnnxOpRegister {
    pub fn insert(&mut self, s: &'static str, builder: OpBuilder) {
        self.0.insert(s.into(), builder);
    }
}

impl Onnx {
    /// The registered operator names, sorted.
    pub fn supported_ops(&self) -> Vec<&str> {
        let mut ops: Vec<&str> = self.op_register.0.keys().map(|s| s.as_str()).collect();
        ops.sort_unstable();
        ops
    }
}

#[derive(Clone)]
pub struct Onnx {
    pub op_register: OnnxOpRegister,
    pub use_output_shapes: bool,
    pub ignore_output_types: bool,
    pub ignore_value_info: bool,
}

impl Default for Onnx {
    fn default() -> Self {
        Onnx {
            op_register: Default::default(),
            use_output_shapes: Default::default(),
            ignore_output_types: Default::default(),
            ignore_value_info: false,
        }
    }
}

impl Onnx {
    /// Parses `proto` with `weights` as extra initializers (see [`ParsingContext::parse_graph`]).
    pub fn parse(
        &self,
        proto: &pb::ModelProto,
        weights: Vec<(String, Tensor)>,
    ) -> TractResult<ParseResult> {
        let template = InferenceModel::default();
        let onnx_operator_set_version = proto
            .opset_import
            .iter()
            .find(|import| import.domain.is_empty() || import.domain == "ai.onnx")
            .map(|op| op.version)
            .unwrap_or(0);
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| anyhow!("model proto does not contain a graph"))?;
        debug!("ONNX operator set version: {onnx_operator_set_version:?}");
        if onnx_operator_set_version != 0 && !(9..19).contains(&onnx_operator_set_version) {
            warn!(
                "ONNX operator for your model is {onnx_operator_set_version}, tract is only tested against \
                  operator set 9 to 18 (included). Your model may still work so this is not a hard fail."
            );
        }
        let ctx = ParsingContext {
            framework: self,
            parent_graphs: vec![],
            onnx_operator_set_version,
            template,
        };
        trace!("created ParsingContext");
        let mut result = ctx.parse_graph(graph, weights)?;
        if !proto.producer_name.is_empty() {
            result.model.properties.insert(
                "onnx.producer_name".into(),
                rctensor0(proto.producer_name.clone()),
            );
        }
        if !proto.producer_version.is_empty() {
            result.model.properties.insert(
                "onnx.producer_version".into(),
                rctensor0(proto.producer_version.clone()),
            );
        }
        if !proto.domain.is_empty() {
            result
                .model
                .properties
                .insert("onnx.domain".into(), rctensor0(proto.domain.clone()));
        }
        if proto.model_version != 0 {
            result
                .model
                .properties
                .insert("onnx.model_version".into(), rctensor0(proto.model_version));
        }
        if proto.ir_version != 0 {
            result
                .model
                .properties
                .insert("onnx.ir_version".into(), rctensor0(proto.ir_version));
        }
        if !proto.doc_string.is_empty() {
            result.model.properties.insert(
                "onnx.doc_string".into(),
                rctensor0(proto.doc_string.clone()),
            );
        }
        for entry in &proto.metadata_props {
            result.model.properties.insert(
                format!("onnx.metadata_props.{}", entry.key),
                rctensor0(entry.value.clone()),
            );
        }
        Ok(result)
    }
}
