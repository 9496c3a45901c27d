//! The graph interpreter: walks an ONNX graph's nodes in order and evaluates each with candle.

use super::ops::{self, BatchNormState, SUPPORTED_OPS};
use super::proto::{self, attr_float, attr_int, attr_ints, attr_string, attribute};
use anyhow::{Context, Result, bail, ensure};
use candle_core::{DType, Device, Tensor, Var};
use nnzip_core::onnx::proto::{
    GraphProto, ModelProto, NodeProto, TensorProto, tensor_proto::DataType,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Whether the graph runs for training (batch statistics, dropout) or evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Training: BatchNormalization uses and updates batch statistics; Dropout drops.
    Train,
    /// Evaluation: BatchNormalization uses running statistics; Dropout is the identity.
    Eval,
}

/// What an initializer held as a [`Var`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Trained by the optimizer: a weight, a bias, a BatchNormalization scale or shift.
    Trainable,
    /// A BatchNormalization running mean or variance: updated by the forward pass in training mode.
    RunningStat,
}

/// One initializer held as a candle variable.
#[derive(Debug, Clone)]
pub struct Param {
    /// ONNX initializer name.
    pub name: String,
    /// Current value.
    pub var: Var,
    /// Trainable or running statistic.
    pub kind: ParamKind,
}

/// A value flowing through the graph.
#[derive(Debug, Clone)]
enum Value {
    Float(Tensor),
    /// Integer data (shapes, axes, pads) with its dims.
    Int(Vec<i64>, Vec<usize>),
}

/// An ONNX classifier loaded for training and evaluation with candle.
pub struct GraphExecutor {
    model: ModelProto,
    source: String,
    params: Vec<Param>,
    param_index: HashMap<String, usize>,
    constants: HashMap<String, Value>,
    input_name: String,
    output_name: String,
    opset: i64,
    dtype: DType,
    device: Device,
    /// The input declares a fixed batch of 1 (a common export): its Reshapes to `[1, …]` then
    /// mean "keep the batch", so that the model trains on mini-batches.
    batch_one_export: bool,
    /// The index of the `Softmax` node the graph's output comes from through reshapes only, if
    /// any: [`GraphExecutor::logits`] passes its input through, so that losses see logits.
    final_softmax: Option<usize>,
}

impl std::fmt::Debug for GraphExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphExecutor")
            .field("source", &self.source)
            .field("input", &self.input_name)
            .field("output", &self.output_name)
            .field("params", &self.params.len())
            .finish()
    }
}

/// Lists the graph's nodes whose operator the interpreter does not support, as an error naming
/// each op and its nodes.
pub fn check_supported(model: &ModelProto, source: &str) -> Result<()> {
    let graph = model
        .graph
        .as_ref()
        .with_context(|| format!("{source}: the ONNX file has no graph"))?;
    let mut unsupported: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        let custom_domain = !(n.domain.is_empty() || n.domain == "ai.onnx");
        if custom_domain || !SUPPORTED_OPS.contains(&n.op_type.as_str()) {
            let op = if custom_domain {
                format!("{}:{}", n.domain, n.op_type)
            } else {
                n.op_type.clone()
            };
            let name = if n.name.is_empty() {
                format!("#{i}")
            } else {
                format!("'{}'", n.name)
            };
            unsupported.entry(op).or_default().push(name);
        }
    }
    if unsupported.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unsupported
        .iter()
        .map(|(op, nodes)| {
            format!(
                "{op} (node{} {})",
                if nodes.len() > 1 { "s" } else { "" },
                nodes.join(", ")
            )
        })
        .collect();
    bail!(
        "{source}: unsupported ONNX operator{}: {}.\nnnzip train/eval support: {}.\nExport the model without these operators (e.g. replace them with supported equivalents) or open an issue for them.",
        if list.len() > 1 { "s" } else { "" },
        list.join("; "),
        SUPPORTED_OPS.join(", ")
    )
}

/// Which initializers (by input slot of which ops) become [`Var`]s.
fn param_kinds(model: &ModelProto) -> HashMap<String, ParamKind> {
    let graph = model.graph.as_ref().expect("checked");
    let float_inits: HashSet<&str> = graph
        .initializer
        .iter()
        .filter(|t| matches!(proto::data_type(t), DataType::Float | DataType::Double))
        .map(|t| t.name.as_str())
        .collect();
    let producer: HashMap<&str, &str> = graph
        .node
        .iter()
        .flat_map(|n| {
            n.output
                .iter()
                .map(move |o| (o.as_str(), n.op_type.as_str()))
        })
        .collect();
    let mut kinds = HashMap::new();
    let mut mark = |name: &str, kind: ParamKind| {
        if float_inits.contains(name) {
            kinds.entry(name.to_string()).or_insert(kind);
        }
    };
    for n in &graph.node {
        let inputs: Vec<&str> = n.input.iter().map(String::as_str).collect();
        match n.op_type.as_str() {
            "Conv" => inputs
                .iter()
                .skip(1)
                .for_each(|i| mark(i, ParamKind::Trainable)),
            "Gemm" | "MatMul" => inputs.iter().for_each(|i| mark(i, ParamKind::Trainable)),
            "BatchNormalization" => {
                inputs
                    .iter()
                    .skip(1)
                    .take(2)
                    .for_each(|i| mark(i, ParamKind::Trainable));
                inputs
                    .iter()
                    .skip(3)
                    .take(2)
                    .for_each(|i| mark(i, ParamKind::RunningStat));
            }
            // The bias of a MatMul + Add linear layer.
            "Add" if inputs.iter().any(|i| producer.get(i) == Some(&"MatMul")) => {
                inputs.iter().for_each(|i| mark(i, ParamKind::Trainable))
            }
            _ => {}
        }
    }
    kinds
}

fn initializer_value(t: &TensorProto, dtype: DType, device: &Device) -> Result<Value> {
    match proto::data_type(t) {
        DataType::Float | DataType::Double => Ok(Value::Float(ops::constant(
            proto::float_values(t)?,
            &proto::dims(t),
            dtype,
            device,
        )?)),
        _ => Ok(Value::Int(proto::int_values(t)?, proto::dims(t))),
    }
}

impl GraphExecutor {
    /// Loads an ONNX classifier from a file (f32, CPU).
    pub fn open(path: &Path) -> Result<Self> {
        let model = proto::read_model(path)?;
        Self::new(model, &path.display().to_string())
    }

    /// Prepares a decoded model (f32, CPU); `source` names it in error messages.
    pub fn new(model: ModelProto, source: &str) -> Result<Self> {
        Self::with_dtype(model, source, DType::F32)
    }

    /// Prepares a decoded model computing in `dtype` (F32, or F64 for gradient checks).
    pub fn with_dtype(model: ModelProto, source: &str, dtype: DType) -> Result<Self> {
        check_supported(&model, source)?;
        let device = Device::Cpu;
        let graph = model.graph.as_ref().expect("checked");
        let init_names: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<&str> = graph
            .input
            .iter()
            .map(|i| i.name.as_str())
            .filter(|n| !init_names.contains(n))
            .collect();
        ensure!(
            inputs.len() == 1,
            "{source}: the graph has {} data inputs ({}); nnzip train/eval need exactly one image input",
            inputs.len(),
            inputs.join(", ")
        );
        ensure!(
            !graph.output.is_empty(),
            "{source}: the graph has no output"
        );
        let kinds = param_kinds(&model);
        let mut params = Vec::new();
        let mut constants = HashMap::new();
        for t in &graph.initializer {
            let value = initializer_value(t, dtype, &device)
                .with_context(|| format!("{source}: initializer '{}'", t.name))?;
            match (kinds.get(&t.name), value) {
                (Some(&kind), Value::Float(tensor)) => params.push(Param {
                    name: t.name.clone(),
                    var: Var::from_tensor(&tensor)?,
                    kind,
                }),
                (_, value) => {
                    constants.insert(t.name.clone(), value);
                }
            }
        }
        let param_index = params
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        let opset = proto::opset_version(&model);
        let mut executor = GraphExecutor {
            input_name: inputs[0].to_string(),
            output_name: graph.output[0].name.clone(),
            model,
            source: source.to_string(),
            params,
            param_index,
            constants,
            opset,
            dtype,
            device,
            batch_one_export: false,
            final_softmax: None,
        };
        executor.final_softmax = final_softmax(
            executor.model.graph.as_ref().expect("checked"),
            &executor.output_name,
        );
        executor.batch_one_export = executor
            .input_shape()
            .is_some_and(|s| s.first() == Some(&Some(1)));
        executor.check_output_declaration()?;
        // Constant nodes are evaluated once.
        let graph = executor.model.graph.as_ref().expect("checked");
        let mut constants = Vec::new();
        for n in graph.node.iter().filter(|n| n.op_type == "Constant") {
            let value =
                constant_node(n, dtype, &executor.device).with_context(|| executor.at(n))?;
            constants.push((n.output[0].clone(), value));
        }
        executor.constants.extend(constants);
        Ok(executor)
    }

    fn at(&self, n: &NodeProto) -> String {
        format!("{}: node '{}' ({})", self.source, n.name, n.op_type)
    }

    /// Refuses models whose declared output is not a class vector `[N, classes]`.
    fn check_output_declaration(&self) -> Result<()> {
        let graph = self.model.graph.as_ref().expect("checked");
        if let Some(shape) = proto::value_info_shape(&graph.output[0]) {
            ensure!(
                shape.len() == 2,
                "{}: output '{}' has rank {} (shape {:?}); nnzip train/eval need a classifier whose output is a class vector [N, classes] (logits). Add a Flatten or Reshape to [N, classes] at the end of the model",
                self.source,
                self.output_name,
                shape.len(),
                shape
            );
        }
        Ok(())
    }

    /// Number of classes declared by the output shape, if known.
    pub fn declared_classes(&self) -> Option<usize> {
        let graph = self.model.graph.as_ref().expect("checked");
        proto::value_info_shape(&graph.output[0]).and_then(|s| s.get(1).copied().flatten())
    }

    /// Declared input shape (`None` for symbolic dims), if the model declares one.
    pub fn input_shape(&self) -> Option<Vec<Option<usize>>> {
        let graph = self.model.graph.as_ref().expect("checked");
        graph
            .input
            .iter()
            .find(|i| i.name == self.input_name)
            .and_then(proto::value_info_shape)
    }

    /// Channels of an image input `[N, C, H, W]` (3 when the model does not say).
    pub fn input_channels(&self) -> usize {
        self.input_shape()
            .and_then(|s| s.get(1).copied().flatten())
            .unwrap_or(3)
    }

    /// Name of the graph's data input.
    pub fn input_name(&self) -> &str {
        &self.input_name
    }

    /// Name of the graph's (first) output.
    pub fn output_name(&self) -> &str {
        &self.output_name
    }

    /// Where the model came from (for messages).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The element type the graph computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device the graph computes on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// All initializers held as variables.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The trainable variables, in initializer order.
    pub fn trainable(&self) -> impl Iterator<Item = &Param> {
        self.params
            .iter()
            .filter(|p| p.kind == ParamKind::Trainable)
    }

    /// The variable holding initializer `name`, if it is one.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.param_index.get(name).map(|&i| &self.params[i])
    }

    fn float(&self, env: &HashMap<String, Value>, name: &str) -> Result<Tensor> {
        if let Some(&i) = self.param_index.get(name) {
            return Ok(self.params[i].var.as_tensor().clone());
        }
        match env.get(name).or_else(|| self.constants.get(name)) {
            Some(Value::Float(t)) => Ok(t.clone()),
            Some(Value::Int(v, dims)) => ops::constant(
                v.iter().map(|&x| x as f32).collect(),
                dims,
                self.dtype,
                &self.device,
            ),
            None => bail!(
                "value '{name}' is not computed before it is used (graph not in topological order?)"
            ),
        }
    }

    fn optional_float(
        &self,
        env: &HashMap<String, Value>,
        n: &NodeProto,
        slot: usize,
    ) -> Result<Option<Tensor>> {
        match n.input.get(slot) {
            Some(name) if !name.is_empty() => Ok(Some(self.float(env, name)?)),
            _ => Ok(None),
        }
    }

    /// Integer data of a constant input (shape, axes, pads), if the slot is filled.
    fn ints(
        &self,
        env: &HashMap<String, Value>,
        n: &NodeProto,
        slot: usize,
    ) -> Result<Option<Vec<i64>>> {
        let Some(name) = n.input.get(slot).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        match env.get(name).or_else(|| self.constants.get(name)) {
            Some(Value::Int(v, _)) => Ok(Some(v.clone())),
            Some(Value::Float(_)) => {
                bail!("input '{name}' must be an integer constant, found a float tensor")
            }
            None => bail!(
                "input '{name}' must be a constant (initializer or Constant node); computed shapes are not supported"
            ),
        }
    }

    /// A scalar float from a constant input slot (Clip bounds, Pad value, Dropout ratio).
    fn scalar(
        &self,
        env: &HashMap<String, Value>,
        n: &NodeProto,
        slot: usize,
    ) -> Result<Option<f64>> {
        match self.optional_float(env, n, slot)? {
            Some(t) => Ok(Some(
                t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?[0],
            )),
            None => Ok(None),
        }
    }

    /// Runs the graph on `input` (`N×…`, the model's input layout) and returns its class scores
    /// as logits: the first output, except that a graph ending in `Softmax` over each sample's
    /// classes (then only reshapes) gives that Softmax's input, reshaped as the output. Many
    /// exported classifiers end in Softmax; cross-entropy and distillation take logits, and a
    /// second softmax over probabilities would flatten every loss and gradient. The saved model
    /// keeps its Softmax. (LogSoftmax outputs are logits already: softmax(log softmax(x)) is
    /// softmax(x).)
    pub fn logits(&self, input: &Tensor, mode: Mode) -> Result<Tensor> {
        self.output(input, mode, true)
    }

    /// Runs the graph on `input` and returns its first output as the graph defines it (a final
    /// Softmax applied): what another runtime computes from the same graph.
    pub fn forward(&self, input: &Tensor, mode: Mode) -> Result<Tensor> {
        self.output(input, mode, false)
    }

    fn output(&self, input: &Tensor, mode: Mode, pass_final_softmax: bool) -> Result<Tensor> {
        match self
            .evaluate(input, mode, pass_final_softmax, |_, _| Ok(()))?
            .remove(&self.output_name)
        {
            Some(Value::Float(t)) => Ok(t),
            _ => bail!(
                "{}: output '{}' was not computed as a float tensor",
                self.source,
                self.output_name
            ),
        }
    }

    /// Runs the graph on `input` in inference mode and returns, for every `Conv` or `Gemm` node
    /// whose weight (input 1) is named in `weights`, the tensor that node received (its input 0),
    /// by weight name. Used to measure what each layer sees (the inputs' second moments).
    pub fn layer_inputs(
        &self,
        input: &Tensor,
        weights: &std::collections::BTreeSet<String>,
    ) -> Result<HashMap<String, Tensor>> {
        let mut seen = HashMap::new();
        self.evaluate(input, Mode::Eval, false, |n, env| {
            if matches!(n.op_type.as_str(), "Conv" | "Gemm")
                && let Some(w) = n.input.get(1).filter(|w| weights.contains(*w))
            {
                let x = self.float(env, n.input.first().context("missing input 0")?)?;
                seen.insert(w.clone(), x);
            }
            Ok(())
        })?;
        Ok(seen)
    }

    /// Evaluates every node in order on `input`, calling `before` with each node and the values
    /// computed so far before evaluating it; returns all values by name. With `pass_final_softmax`,
    /// the final Softmax passes its input on (see [`GraphExecutor::logits`]).
    fn evaluate(
        &self,
        input: &Tensor,
        mode: Mode,
        pass_final_softmax: bool,
        mut before: impl FnMut(&NodeProto, &HashMap<String, Value>) -> Result<()>,
    ) -> Result<HashMap<String, Value>> {
        let mut env: HashMap<String, Value> = HashMap::new();
        env.insert(
            self.input_name.clone(),
            Value::Float(input.to_dtype(self.dtype)?),
        );
        let graph = self.model.graph.as_ref().expect("checked");
        for (i, n) in graph.node.iter().enumerate() {
            if n.op_type == "Constant" {
                continue;
            }
            before(n, &env)?;
            let y = match self.final_softmax {
                Some(f) if f == i && pass_final_softmax => {
                    self.softmax_input_if_per_sample(&env, n)?
                }
                _ => None,
            };
            let y = match y {
                Some(y) => y,
                None => self.eval_node(&env, n, mode).with_context(|| self.at(n))?,
            };
            env.insert(n.output[0].clone(), y);
        }
        Ok(env)
    }

    /// The final Softmax's input when that Softmax normalises each sample's values together (so
    /// its input is the sample's logits); `None` when it normalises something else and must run.
    fn softmax_input_if_per_sample(
        &self,
        env: &HashMap<String, Value>,
        n: &NodeProto,
    ) -> Result<Option<Value>> {
        let x = self.float(env, n.input.first().context("Softmax without input")?)?;
        let dims = x.dims();
        let normalised: Vec<usize> = if self.opset >= 13 {
            vec![ops::axis(attr_int(n, "axis", -1), dims.len())?]
        } else {
            (ops::axis(attr_int(n, "axis", 1), dims.len())?..dims.len()).collect()
        };
        Ok(normalises_each_sample(dims, &normalised).then_some(Value::Float(x)))
    }

    fn eval_node(&self, env: &HashMap<String, Value>, n: &NodeProto, mode: Mode) -> Result<Value> {
        let x = || self.float(env, n.input.first().context("missing input 0")?);
        let input = |i: usize| {
            self.float(
                env,
                n.input
                    .get(i)
                    .with_context(|| format!("missing input {i}"))?,
            )
        };
        let y = match n.op_type.as_str() {
            "Conv" => ops::conv(
                n,
                &x()?,
                &input(1)?,
                self.optional_float(env, n, 2)?.as_ref(),
            )?,
            "Gemm" => ops::gemm(
                n,
                &x()?,
                &input(1)?,
                self.optional_float(env, n, 2)?.as_ref(),
            )?,
            "MatMul" => ops::matmul(&x()?, &input(1)?)?,
            "Add" => x()?.broadcast_add(&input(1)?)?,
            "Sub" => x()?.broadcast_sub(&input(1)?)?,
            "Mul" => x()?.broadcast_mul(&input(1)?)?,
            "Div" => x()?.broadcast_div(&input(1)?)?,
            "Relu" => x()?.relu()?,
            "Sigmoid" => ops::sigmoid(&x()?)?,
            "HardSigmoid" => ops::hard_sigmoid(
                &x()?,
                attr_float(n, "alpha", 0.2) as f64,
                attr_float(n, "beta", 0.5) as f64,
            )?,
            "HardSwish" => {
                let x = x()?;
                (&x * ops::hard_sigmoid(&x, 1.0 / 6.0, 0.5)?)?
            }
            "Clip" => {
                let (lo, hi) = if self.opset >= 11 {
                    (self.scalar(env, n, 1)?, self.scalar(env, n, 2)?)
                } else {
                    (
                        attribute(n, "min").map(|a| a.f as f64),
                        attribute(n, "max").map(|a| a.f as f64),
                    )
                };
                let mut y = x()?;
                if let Some(lo) = lo {
                    y = y.maximum(lo)?;
                }
                if let Some(hi) = hi {
                    y = y.minimum(hi)?;
                }
                y
            }
            "MaxPool" => {
                ensure!(
                    n.output.iter().skip(1).all(|o| o.is_empty()),
                    "MaxPool's Indices output is not supported"
                );
                ops::max_pool(n, &x()?)?
            }
            "AveragePool" => ops::average_pool(n, &x()?)?,
            "GlobalAveragePool" => ops::global_average_pool(&x()?)?,
            "BatchNormalization" => {
                let stat = |i: usize| -> Result<&Var> {
                    let name = n.input.get(i).context("missing running statistic")?;
                    self.param(name).map(|p| &p.var).with_context(|| {
                        format!("running statistic '{name}' must be an initializer")
                    })
                };
                let state = BatchNormState {
                    mean: stat(3)?,
                    var: stat(4)?,
                };
                let training = mode == Mode::Train;
                ops::batch_norm(n, &x()?, &input(1)?, &input(2)?, state, training)?
            }
            "Flatten" => ops::flatten(n, &x()?)?,
            "Reshape" => {
                let x = x()?;
                let mut shape = self
                    .ints(env, n, 1)?
                    .context("Reshape needs a shape input")?;
                // Exported at batch 1, run on a mini-batch: the leading 1 is the batch axis.
                if self.batch_one_export
                    && attr_int(n, "allowzero", 0) == 0
                    && shape.first() == Some(&1)
                    && x.dims().first().is_some_and(|&b| b > 1)
                {
                    shape[0] = 0;
                }
                let dims = ops::reshape_dims(x.dims(), &shape, attr_int(n, "allowzero", 0) != 0)?;
                x.reshape(dims)?
            }
            "Transpose" => {
                let x = x()?;
                let perm: Vec<usize> = match attr_ints(n, "perm") {
                    Some(p) => p
                        .iter()
                        .map(|&a| ops::axis(a, x.rank()))
                        .collect::<Result<_>>()?,
                    None => (0..x.rank()).rev().collect(),
                };
                x.permute(perm)?
            }
            "Concat" => {
                let parts: Vec<Tensor> = n
                    .input
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(|s| self.float(env, s))
                    .collect::<Result<_>>()?;
                ensure!(!parts.is_empty(), "Concat without inputs");
                let a = ops::axis(attr_int(n, "axis", 0), parts[0].rank())?;
                Tensor::cat(&parts, a)?
            }
            "Dropout" => {
                let x = x()?;
                let ratio = if self.opset >= 12 {
                    self.scalar(env, n, 1)?.unwrap_or(0.5)
                } else {
                    attr_float(n, "ratio", 0.5) as f64
                };
                if mode == Mode::Train {
                    ops::dropout_train(&x, ratio)?
                } else {
                    x
                }
            }
            "Softmax" => ops::softmax(n, &x()?, self.opset)?,
            "LogSoftmax" => ops::log_softmax(n, &x()?, self.opset)?,
            "LRN" => ops::lrn(n, &x()?)?,
            "Sum" => ops::sum(&(0..n.input.len()).map(input).collect::<Result<Vec<_>>>()?)?,
            "Identity" => {
                let name = n.input.first().context("missing input 0")?;
                if let Some(v) = env.get(name).or_else(|| self.constants.get(name)) {
                    return Ok(v.clone());
                }
                x()?
            }
            "Pad" => {
                let x = x()?;
                let (pads, value) = if self.opset >= 11 {
                    let pads = self.ints(env, n, 1)?.context("Pad needs a pads input")?;
                    (pads, self.scalar(env, n, 2)?.unwrap_or(0.0))
                } else {
                    (
                        attr_ints(n, "pads").context("Pad needs a pads attribute")?,
                        attr_float(n, "value", 0.0) as f64,
                    )
                };
                let pads = match self.ints(env, n, 3)? {
                    // Opset 18: pads for the listed axes only.
                    Some(axes) => {
                        let mut full = vec![0; 2 * x.rank()];
                        for (j, &a) in axes.iter().enumerate() {
                            let a = ops::axis(a, x.rank())?;
                            full[a] = pads[j];
                            full[a + x.rank()] = pads[j + axes.len()];
                        }
                        full
                    }
                    None => pads,
                };
                ops::pad(&x, &pads, &attr_string(n, "mode", "constant"), value)?
            }
            "Squeeze" => {
                let x = x()?;
                let axes = if self.opset >= 13 {
                    self.ints(env, n, 1)?
                } else {
                    attr_ints(n, "axes")
                };
                let mut axes: Vec<usize> = match axes {
                    Some(a) => a
                        .iter()
                        .map(|&a| ops::axis(a, x.rank()))
                        .collect::<Result<_>>()?,
                    None => (0..x.rank()).filter(|&d| x.dims()[d] == 1).collect(),
                };
                axes.sort_unstable();
                let mut y = x;
                for &a in axes.iter().rev() {
                    ensure!(
                        y.dims()[a] == 1,
                        "Squeeze axis {a} has size {}",
                        y.dims()[a]
                    );
                    y = y.squeeze(a)?;
                }
                y
            }
            "Unsqueeze" => {
                let x = x()?;
                let axes = if self.opset >= 13 {
                    self.ints(env, n, 1)?
                } else {
                    attr_ints(n, "axes")
                };
                let axes = axes.context("Unsqueeze needs axes")?;
                let rank = x.rank() + axes.len();
                let mut axes: Vec<usize> = axes
                    .iter()
                    .map(|&a| ops::axis(a, rank))
                    .collect::<Result<_>>()?;
                axes.sort_unstable();
                let mut y = x;
                for a in axes {
                    y = y.unsqueeze(a)?;
                }
                y
            }
            other => bail!("operator {other} is not supported"),
        };
        Ok(Value::Float(y))
    }

    /// The model with every variable's current value written back into its initializer (same
    /// graph, same names; data as float32).
    pub fn to_model_proto(&self) -> Result<ModelProto> {
        let mut model = self.model.clone();
        let graph = model.graph.as_mut().expect("checked");
        for t in &mut graph.initializer {
            if let Some(p) = self.param(&t.name) {
                let values = p
                    .var
                    .as_tensor()
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let dims: Vec<usize> = proto::dims(t);
                let mut fresh = proto::float_tensor(&t.name, &dims, &values);
                fresh.doc_string = std::mem::take(&mut t.doc_string);
                *t = fresh;
            }
        }
        Ok(model)
    }

    /// Writes the model with its current weights to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        proto::write_model(&self.to_model_proto()?, path)
    }

    /// Path-like name of the model, if it came from a file.
    pub fn source_path(&self) -> PathBuf {
        PathBuf::from(&self.source)
    }
}

/// The index of the `Softmax` node `output` comes from through nodes that only reshape or pass
/// values on (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout), if there is one.
fn final_softmax(graph: &GraphProto, output: &str) -> Option<usize> {
    let mut name = output;
    // In a well-formed graph each step reaches an earlier node; the bound ends the walk in a
    // malformed one whose nodes feed each other in a loop.
    for _ in 0..=graph.node.len() {
        let (index, node) = graph
            .node
            .iter()
            .enumerate()
            .find(|(_, n)| n.output.first().is_some_and(|o| o == name))?;
        match node.op_type.as_str() {
            "Softmax" => return Some(index),
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" | "Identity" | "Dropout" => {
                name = node.input.first()?;
            }
            _ => return None,
        }
    }
    None
}

/// Whether a softmax over `axes` of a tensor of `dims` normalises each sample's values together:
/// every other axis is the batch axis (the first) or of size 1, and the batch axis is normalised
/// only when it is 1.
fn normalises_each_sample(dims: &[usize], axes: &[usize]) -> bool {
    dims.iter()
        .enumerate()
        .all(|(axis, &dim)| match (axes.contains(&axis), axis == 0) {
            (true, true) => dim == 1,
            (false, false) => dim == 1,
            _ => true,
        })
}

fn constant_node(n: &NodeProto, dtype: DType, device: &Device) -> Result<Value> {
    if let Some(t) = attribute(n, "value").and_then(|a| a.t.as_ref()) {
        return initializer_value(t, dtype, device);
    }
    if let Some(a) = attribute(n, "value_float") {
        return Ok(Value::Float(ops::constant(vec![a.f], &[], dtype, device)?));
    }
    if let Some(a) = attribute(n, "value_floats") {
        return Ok(Value::Float(ops::constant(
            a.floats.clone(),
            &[a.floats.len()],
            dtype,
            device,
        )?));
    }
    if let Some(a) = attribute(n, "value_int") {
        return Ok(Value::Int(vec![a.i], vec![]));
    }
    if let Some(a) = attribute(n, "value_ints") {
        return Ok(Value::Int(a.ints.clone(), vec![a.ints.len()]));
    }
    bail!("Constant node without a supported value attribute (value, value_float(s), value_int(s))")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, input: &str, output: &str) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            input: vec![input.into()],
            output: vec![output.into()],
            ..Default::default()
        }
    }

    #[test]
    fn the_final_softmax_is_found_through_reshapes_only() {
        let graph = |nodes: Vec<NodeProto>| GraphProto {
            node: nodes,
            ..Default::default()
        };
        let through_flatten = graph(vec![
            node("Gemm", "x", "z"),
            node("Softmax", "z", "p"),
            node("Flatten", "p", "y"),
        ]);
        assert_eq!(final_softmax(&through_flatten, "y"), Some(1));
        let then_scaled = graph(vec![node("Softmax", "x", "p"), node("Relu", "p", "y")]);
        assert_eq!(final_softmax(&then_scaled, "y"), None);
        let log_softmax = graph(vec![node("LogSoftmax", "x", "y")]);
        assert_eq!(final_softmax(&log_softmax, "y"), None);
        let looped = graph(vec![node("Identity", "y", "y")]);
        assert_eq!(final_softmax(&looped, "y"), None);
    }

    #[test]
    fn only_a_softmax_over_each_samples_classes_is_passed_through() {
        assert!(normalises_each_sample(&[64, 10], &[1]));
        assert!(normalises_each_sample(&[64, 10, 1, 1], &[1, 2, 3]));
        assert!(normalises_each_sample(&[64, 10, 1, 1], &[1]));
        assert!(normalises_each_sample(&[1, 10], &[0, 1]));
        // Over a singleton axis (opset 13's default on `[N, C, 1, 1]`) or across the batch: the
        // Softmax means something else and runs.
        assert!(!normalises_each_sample(&[64, 10, 1, 1], &[3]));
        assert!(!normalises_each_sample(&[64, 10], &[0]));
        assert!(!normalises_each_sample(&[64, 4, 10], &[2]));
    }
}
