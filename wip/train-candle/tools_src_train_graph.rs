//! An ONNX graph evaluated with candle, so that training runs on candle's autodiff: every float
//! initializer that is a weight, bias or BatchNorm scale/shift is a trainable `Var` (by ONNX
//! name); BatchNorm running statistics and integer tensors are constants.

use anyhow::{Context, Result, anyhow, bail};
use candle_core::{DType, Device, Tensor, Var};
use nnzip_core::graph::initializer_values;
use std::collections::{BTreeMap, HashMap, HashSet};
use tract_onnx::pb::{self, tensor_proto::DataType};

/// Ops the training engine evaluates.
pub const SUPPORTED_OPS: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Mul",
    "Sub",
    "Div",
    "Relu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "BatchNormalization",
    "Flatten",
    "Reshape",
    "Transpose",
    "Concat",
    "Dropout",
    "Softmax",
    "Identity",
    "Constant",
    "Pad",
    "Squeeze",
    "Unsqueeze",
];

/// A value flowing through the graph: float tensors (differentiable) or small integer vectors
/// (shapes, axes, pads).
#[derive(Debug, Clone)]
pub enum Value {
    /// A float tensor.
    Float(Tensor),
    /// Integers (a 1-D or scalar int64 tensor).
    Ints(Vec<i64>),
}

impl Value {
    fn float(&self, what: &str) -> Result<&Tensor> {
        match self {
            Value::Float(t) => Ok(t),
            Value::Ints(_) => bail!("{what}: expected a float tensor, got integers"),
        }
    }
    fn ints(&self, what: &str) -> Result<Vec<i64>> {
        match self {
            Value::Ints(v) => Ok(v.clone()),
            Value::Float(t) => Ok(t
                .flatten_all()?
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?
                .into_iter()
                .map(|x| x as i64)
                .collect()),
        }
        .with_context(|| format!("{what}: expected integers"))
    }
}

/// An ONNX model ready to be trained with candle.
pub struct TrainGraph {
    /// The parsed model (initializers included, as loaded).
    pub proto: pb::ModelProto,
    /// Trainable tensors by ONNX name, in graph order.
    pub params: Vec<(String, Var)>,
    /// Non-trainable float constants (BatchNorm running statistics).
    pub buffers: BTreeMap<String, Tensor>,
    ints: HashMap<String, Vec<i64>>,
    input_name: String,
    output_name: String,
    device: Device,
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}
fn attr_i(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}
fn attr_f(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}
fn attr_ints(node: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn node_label(n: &pb::NodeProto) -> String {
    if n.name.is_empty() {
        format!("{} → {}", n.op_type, n.output.join(","))
    } else {
        format!("{} ({})", n.name, n.op_type)
    }
}

fn int_values(t: &pb::TensorProto) -> Result<Vec<i64>> {
    if !t.int64_data.is_empty() {
        return Ok(t.int64_data.clone());
    }
    if !t.int32_data.is_empty() {
        return Ok(t.int32_data.iter().map(|&x| x as i64).collect());
    }
    match DataType::try_from(t.data_type) {
        Ok(DataType::Int64) => Ok(t
            .raw_data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect()),
        Ok(DataType::Int32) => Ok(t
            .raw_data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64)
            .collect()),
        _ => bail!(
            "tensor '{}' has unsupported element type {}",
            t.name,
            t.data_type
        ),
    }
}

impl TrainGraph {
    /// Loads ONNX bytes; refuses up front a graph with ops the engine does not support.
    pub fn from_onnx(onnx: &[u8]) -> Result<Self> {
        let proto = nnzip_core::graph::parse_model_proto(onnx)?;
        Self::from_proto(proto)
    }

    /// Builds from a parsed model.
    pub fn from_proto(proto: pb::ModelProto) -> Result<Self> {
        let device = Device::Cpu;
        let g = proto
            .graph
            .as_ref()
            .ok_or_else(|| anyhow!("the ONNX model has no graph"))?;
        let unsupported: Vec<String> = g
            .node
            .iter()
            .filter(|n| !SUPPORTED_OPS.contains(&n.op_type.as_str()))
            .map(node_label)
            .collect();
        if !unsupported.is_empty() {
            bail!(
                "the model uses ops the training engine does not support: {}. Supported: {}",
                unsupported.join(", "),
                SUPPORTED_OPS.join(", ")
            );
        }
        let bn_stats: HashSet<&str> = g
            .node
            .iter()
            .filter(|n| n.op_type == "BatchNormalization")
            .flat_map(|n| n.input.iter().skip(3).take(2))
            .map(String::as_str)
            .collect();
        let mut params = Vec::new();
        let mut buffers = BTreeMap::new();
        let mut ints = HashMap::new();
        for init in &g.initializer {
            let shape: Vec<usize> = init.dims.iter().map(|&d| d as usize).collect();
            if init.data_type == DataType::Float as i32 {
                let v = initializer_values(init)?;
                let t = Tensor::from_vec(v, shape, &device)?;
                if bn_stats.contains(init.name.as_str()) {
                    buffers.insert(init.name.clone(), t);
                } else {
                    params.push((init.name.clone(), Var::from_tensor(&t)?));
                }
            } else {
                ints.insert(init.name.clone(), int_values(init)?);
            }
        }
        let inits: HashSet<&str> = g.initializer.iter().map(|i| i.name.as_str()).collect();
        let input_name = g
            .input
            .iter()
            .find(|i| !inits.contains(i.name.as_str()))
            .map(|i| i.name.clone())
            .ok_or_else(|| anyhow!("the graph has no input"))?;
        let output_name = g
            .output
            .first()
            .map(|o| o.name.clone())
            .ok_or_else(|| anyhow!("the graph has no output"))?;
        Ok(TrainGraph {
            proto,
            params,
            buffers,
            ints,
            input_name,
            output_name,
            device,
        })
    }

    /// The device tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A trainable tensor by name.
    pub fn param(&self, name: &str) -> Option<&Var> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Runs the graph. In training mode BatchNormalization uses batch statistics and updates the
    /// running ones.
    pub fn forward(&mut self, input: &Tensor, train: bool) -> Result<Tensor> {
        let mut env: HashMap<String, Value> = HashMap::new();
        env.insert(self.input_name.clone(), Value::Float(input.clone()));
        for (n, v) in &self.params {
            env.insert(n.clone(), Value::Float(v.as_tensor().clone()));
        }
        for (n, t) in &self.buffers {
            env.insert(n.clone(), Value::Float(t.clone()));
        }
        for (n, v) in &self.ints {
            env.insert(n.clone(), Value::Ints(v.clone()));
        }
        let nodes = self
            .proto
            .graph
            .as_ref()
            .map(|g| g.node.clone())
            .unwrap_or_default();
        let mut updates = Vec::new();
        for node in &nodes {
            let inputs: Vec<Option<Value>> = node
                .input
                .iter()
                .map(|name| {
                    if name.is_empty() {
                        Ok(None)
                    } else {
                        env.get(name).cloned().map(Some).ok_or_else(|| {
                            anyhow!("{}: input '{name}' is not defined", node_label(node))
                        })
                    }
                })
                .collect::<Result<_>>()?;
            let out = eval_node(node, &inputs, train, &mut updates)
                .with_context(|| format!("evaluating {}", node_label(node)))?;
            if let Some(name) = node.output.first() {
                env.insert(name.clone(), out);
            }
        }
        for (name, t) in updates {
            self.buffers.insert(name, t);
        }
        env.remove(&self.output_name)
            .ok_or_else(|| anyhow!("the graph output '{}' was not computed", self.output_name))?
            .float("graph output")
            .cloned()
    }

    /// The model with the current weights (and running statistics) as its initializers.
    pub fn to_onnx(&self) -> Result<Vec<u8>> {
        use prost::Message;
        let mut proto = self.proto.clone();
        let g = proto.graph.as_mut().ok_or_else(|| anyhow!("no graph"))?;
        for init in &mut g.initializer {
            let t = match self.param(&init.name) {
                Some(v) => v.as_tensor().clone(),
                None => match self.buffers.get(&init.name) {
                    Some(t) => t.clone(),
                    None => continue,
                },
            };
            let values = t.flatten_all()?.to_vec1::<f32>()?;
            init.float_data.clear();
            init.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        }
        Ok(proto.encode_to_vec())
    }
}

fn f<'a>(inputs: &'a [Option<Value>], i: usize, what: &str) -> Result<&'a Tensor> {
    inputs
        .get(i)
        .and_then(|v| v.as_ref())
        .ok_or_else(|| anyhow!("missing input {i} ({what})"))?
        .float(what)
}

fn opt_ints(inputs: &[Option<Value>], i: usize, what: &str) -> Result<Option<Vec<i64>>> {
    inputs
        .get(i)
        .and_then(|v| v.as_ref())
        .map(|v| v.ints(what))
        .transpose()
}

fn axis(a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let ax = if a < 0 { a + r } else { a };
    if !(0..r).contains(&ax) {
        bail!("axis {a} out of range for rank {rank}");
    }
    Ok(ax as usize)
}

/// Max or average pooling over 2-D windows.
fn pool(
    x: &Tensor,
    k: (usize, usize),
    s: (usize, usize),
    pads: [usize; 4],
    max: bool,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if pads == [0; 4] && k == s && h % k.0 == 0 && w % k.1 == 0 {
        // Non-overlapping windows: reshape and reduce (exact gradients, no index tensors).
        let r = x.reshape((n, c, h / k.0, k.0, w / k.1, k.1))?;
        return Ok(if max {
            r.max(5)?.max(3)?
        } else {
            r.mean(5)?.mean(3)?
        });
    }
    let fill = if max { -3.0e38 } else { 0.0 };
    let mut xp = x.clone();
    for (dim, (a, b)) in [(2usize, (pads[0], pads[2])), (3, (pads[1], pads[3]))] {
        if a + b > 0 {
            let mut shape = xp.dims().to_vec();
            let mut parts = Vec::new();
            if a > 0 {
                shape[dim] = a;
                parts.push(Tensor::full(fill as f32, shape.clone(), x.device())?);
            }
            parts.push(xp.clone());
            if b > 0 {
                shape[dim] = b;
                parts.push(Tensor::full(fill as f32, shape.clone(), x.device())?);
            }
            xp = Tensor::cat(&parts, dim)?;
        }
    }
    let (hp, wp) = (xp.dim(2)?, xp.dim(3)?);
    if hp < k.0 || wp < k.1 {
        bail!("pooling window {k:?} larger than the padded input {hp}×{wp}");
    }
    let (oh, ow) = ((hp - k.0) / s.0 + 1, (wp - k.1) / s.1 + 1);
    let mut acc: Option<Tensor> = None;
    for i in 0..k.0 {
        let rows = Tensor::from_vec(
            (0..oh).map(|t| (i + s.0 * t) as u32).collect::<Vec<_>>(),
            oh,
            x.device(),
        )?;
        let xr = xp.index_select(&rows, 2)?;
        for j in 0..k.1 {
            let cols = Tensor::from_vec(
                (0..ow).map(|t| (j + s.1 * t) as u32).collect::<Vec<_>>(),
                ow,
                x.device(),
            )?;
            let v = xr.index_select(&cols, 3)?;
            acc = Some(match acc {
                None => v,
                Some(a) => {
                    if max {
                        a.maximum(&v)?
                    } else {
                        (a + v)?
                    }
                }
            });
        }
    }
    let acc = acc.ok_or_else(|| anyhow!("empty pooling window"))?;
    Ok(if max {
        acc
    } else {
        (acc / (k.0 * k.1) as f64)?
    })
}

fn pads4(node: &pb::NodeProto) -> Result<[usize; 4]> {
    let p = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
    if p.len() != 4 || p.iter().any(|&x| x < 0) {
        bail!("pads {p:?}: only 2-D pads [top, left, bottom, right] ≥ 0 are supported");
    }
    if attr(node, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET") {
        bail!("auto_pad is not supported; export the model with explicit pads");
    }
    Ok([p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize])
}

fn pair(node: &pb::NodeProto, name: &str, default: usize) -> Result<(usize, usize)> {
    match attr_ints(node, name) {
        None => Ok((default, default)),
        Some(v) if v.len() == 2 && v.iter().all(|&x| x > 0) => Ok((v[0] as usize, v[1] as usize)),
        Some(v) => bail!("{name} {v:?}: expected two positive values"),
    }
}

fn hard_sigmoid(x: &Tensor, alpha: f64, beta: f64) -> Result<Tensor> {
    Ok(x.affine(alpha, beta)?.clamp(0f32, 1f32)?)
}

#[allow(clippy::too_many_lines)]
fn eval_node(
    node: &pb::NodeProto,
    inputs: &[Option<Value>],
    train: bool,
    updates: &mut Vec<(String, Tensor)>,
) -> Result<Value> {
    let x = || f(inputs, 0, "X");
    let t = match node.op_type.as_str() {
        "Identity" | "Dropout" => {
            return Ok(inputs
                .first()
                .cloned()
                .flatten()
                .ok_or_else(|| anyhow!("missing input"))?);
        }
        "Constant" => {
            let a = attr(node, "value")
                .and_then(|a| a.t.as_ref())
                .ok_or_else(|| anyhow!("Constant without a tensor value"))?;
            if a.data_type == DataType::Float as i32 {
                let shape: Vec<usize> = a.dims.iter().map(|&d| d as usize).collect();
                return Ok(Value::Float(Tensor::from_vec(
                    initializer_values(a)?,
                    shape,
                    &Device::Cpu,
                )?));
            }
            return Ok(Value::Ints(int_values(a)?));
        }
        "Relu" => x()?.relu()?,
        "Sigmoid" => (x()?.neg()?.exp()? + 1.0)?.recip()?,
        "HardSigmoid" => hard_sigmoid(
            x()?,
            attr_f(node, "alpha", 0.2) as f64,
            attr_f(node, "beta", 0.5) as f64,
        )?,
        "HardSwish" => (x()? * hard_sigmoid(x()?, 1.0 / 6.0, 0.5)?)?,
        "Clip" => {
            let lo = match inputs.get(1).and_then(|v| v.as_ref()) {
                Some(v) => v
                    .float("min")?
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .first()
                    .copied()
                    .unwrap_or(f32::MIN),
                None => attr(node, "min").map_or(f32::MIN, |a| a.f),
            };
            let hi = match inputs.get(2).and_then(|v| v.as_ref()) {
                Some(v) => v
                    .float("max")?
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .first()
                    .copied()
                    .unwrap_or(f32::MAX),
                None => attr(node, "max").map_or(f32::MAX, |a| a.f),
            };
            x()?.clamp(lo, hi)?
        }
        "Add" => f(inputs, 0, "A")?.broadcast_add(f(inputs, 1, "B")?)?,
        "Sub" => f(inputs, 0, "A")?.broadcast_sub(f(inputs, 1, "B")?)?,
        "Mul" => f(inputs, 0, "A")?.broadcast_mul(f(inputs, 1, "B")?)?,
        "Div" => f(inputs, 0, "A")?.broadcast_div(f(inputs, 1, "B")?)?,
        "MatMul" => f(inputs, 0, "A")?.broadcast_matmul(f(inputs, 1, "B")?)?,
        "Gemm" => {
            let mut a = f(inputs, 0, "A")?.clone();
            let mut b = f(inputs, 1, "B")?.clone();
            if attr_i(node, "transA", 0) != 0 {
                a = a.t()?;
            }
            if attr_i(node, "transB", 0) != 0 {
                b = b.t()?;
            }
            let mut y = a.matmul(&b.contiguous()?)?;
            let alpha = attr_f(node, "alpha", 1.0) as f64;
            if alpha != 1.0 {
                y = y.affine(alpha, 0.0)?;
            }
            if let Some(c) = inputs.get(2).and_then(|v| v.as_ref()) {
                let beta = attr_f(node, "beta", 1.0) as f64;
                let c = c.float("C")?;
                y = y.broadcast_add(&if beta != 1.0 {
                    c.affine(beta, 0.0)?
                } else {
                    c.clone()
                })?;
            }
            y
        }
        "Conv" => {
            let w = f(inputs, 1, "W")?;
            if w.rank() != 4 {
                bail!(
                    "only 2-D convolutions are supported (weight rank {})",
                    w.rank()
                );
            }
            let [pt, pl, pb, pr] = pads4(node)?;
            let (sh, sw) = pair(node, "strides", 1)?;
            let (dh, dw) = pair(node, "dilations", 1)?;
            if sh != sw || dh != dw {
                bail!("different strides or dilations per axis are not supported");
            }
            let groups = attr_i(node, "group", 1).max(1) as usize;
            let mut xin = x()?.clone();
            let pad = if pt == pb && pl == pr && pt == pl {
                pt
            } else {
                // Asymmetric pads (TF-style "same"): pad explicitly, then convolve unpadded.
                xin = xin.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
                0
            };
            let mut y = xin.conv2d(w, pad, sh, dh, groups)?;
            if let Some(b) = inputs.get(2).and_then(|v| v.as_ref()) {
                let b = b.float("B")?;
                y = y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?;
            }
            y
        }
        "MaxPool" | "AveragePool" => {
            let k = pair(node, "kernel_shape", 1)?;
            let s = pair(node, "strides", 1)?;
            if attr_i(node, "ceil_mode", 0) != 0 {
                bail!("ceil_mode pooling is not supported");
            }
            let pads = pads4(node)?;
            if node.op_type == "AveragePool"
                && pads != [0; 4]
                && attr_i(node, "count_include_pad", 0) == 0
            {
                bail!("padded AveragePool without count_include_pad is not supported");
            }
            pool(x()?, k, s, pads, node.op_type == "MaxPool")?
        }
        "GlobalAveragePool" => x()?.mean_keepdim(3)?.mean_keepdim(2)?,
        "BatchNormalization" => {
            let (scale, bias) = (f(inputs, 1, "scale")?, f(inputs, 2, "B")?);
            let (rm, rv) = (f(inputs, 3, "mean")?, f(inputs, 4, "var")?);
            let eps = attr_f(node, "epsilon", 1e-5) as f64;
            let momentum = attr_f(node, "momentum", 0.9) as f64;
            let xx = x()?;
            let c = xx.dim(1)?;
            let bshape: Vec<usize> = (0..xx.rank()).map(|d| if d == 1 { c } else { 1 }).collect();
            let (mean, var) = if train {
                let dims: Vec<usize> = (0..xx.rank()).filter(|&d| d != 1).collect();
                let mean = xx.mean_keepdim(dims.clone())?;
                let var = xx.broadcast_sub(&mean)?.sqr()?.mean_keepdim(dims)?;
                let count: usize = xx
                    .dims()
                    .iter()
                    .enumerate()
                    .filter(|(d, _)| *d != 1)
                    .map(|(_, &s)| s)
                    .product();
                let unbiased =
                    (var.detach().flatten_all()? * (count as f64 / (count.max(2) - 1) as f64))?;
                updates.push((
                    node.input[3].clone(),
                    ((rm * momentum)? + (mean.detach().flatten_all()? * (1.0 - momentum))?)?,
                ));
                updates.push((
                    node.input[4].clone(),
                    ((rv * momentum)? + (unbiased * (1.0 - momentum))?)?,
                ));
                (mean, var)
            } else {
                (rm.reshape(bshape.clone())?, rv.reshape(bshape.clone())?)
            };
            let norm = xx
                .broadcast_sub(&mean)?
                .broadcast_div(&(var + eps)?.sqrt()?)?;
            norm.broadcast_mul(&scale.reshape(bshape.clone())?)?
                .broadcast_add(&bias.reshape(bshape)?)?
        }
        "Flatten" => {
            let xx = x()?;
            let a = axis(attr_i(node, "axis", 1), xx.rank() + 1)?;
            let outer: usize = xx.dims()[..a].iter().product();
            xx.reshape((outer, xx.elem_count() / outer.max(1)))?
        }
        "Reshape" => {
            let xx = x()?;
            let spec =
                opt_ints(inputs, 1, "shape")?.ok_or_else(|| anyhow!("Reshape without a shape"))?;
            let mut shape: Vec<usize> = Vec::new();
            let mut infer = None;
            for (i, &d) in spec.iter().enumerate() {
                match d {
                    0 => shape.push(
                        *xx.dims()
                            .get(i)
                            .ok_or_else(|| anyhow!("Reshape 0 at {i} beyond the input rank"))?,
                    ),
                    -1 => {
                        infer = Some(i);
                        shape.push(1);
                    }
                    d if d > 0 => shape.push(d as usize),
                    d => bail!("Reshape dimension {d}"),
                }
            }
            if let Some(i) = infer {
                let known: usize = shape.iter().product();
                shape[i] = xx.elem_count() / known.max(1);
            }
            xx.reshape(shape)?
        }
        "Transpose" => {
            let xx = x()?;
            let perm: Vec<usize> = match attr_ints(node, "perm") {
                Some(p) => p
                    .iter()
                    .map(|&a| axis(a, xx.rank()))
                    .collect::<Result<_>>()?,
                None => (0..xx.rank()).rev().collect(),
            };
            xx.permute(perm)?.contiguous()?
        }
        "Concat" => {
            let parts: Vec<Tensor> = (0..inputs.len())
                .map(|i| f(inputs, i, "input").cloned())
                .collect::<Result<_>>()?;
            let rank = parts.first().map_or(1, |p| p.rank());
            Tensor::cat(&parts, axis(attr_i(node, "axis", 0), rank)?)?
        }
        "Softmax" => {
            let xx = x()?;
            let a = axis(attr_i(node, "axis", -1), xx.rank())?;
            let e = xx.broadcast_sub(&xx.max_keepdim(a)?.detach())?.exp()?;
            e.broadcast_div(&e.sum_keepdim(a)?)?
        }
        "Pad" => {
            let xx = x()?;
            let pads = opt_ints(inputs, 1, "pads")?
                .or_else(|| attr_ints(node, "pads"))
                .ok_or_else(|| anyhow!("Pad without pads"))?;
            let mode = attr(node, "mode").map(|a| a.s.clone()).unwrap_or_default();
            if !(mode.is_empty() || mode == b"constant") {
                bail!("only constant padding is supported");
            }
            let r = xx.rank();
            if pads.len() != 2 * r || pads.iter().any(|&p| p < 0) {
                bail!("pads {pads:?} for rank {r}");
            }
            let mut y = xx.clone();
            for d in 0..r {
                if pads[d] > 0 || pads[d + r] > 0 {
                    y = y.pad_with_zeros(d, pads[d] as usize, pads[d + r] as usize)?;
                }
            }
            y
        }
        "Squeeze" | "Unsqueeze" => {
            let xx = x()?;
            let axes = opt_ints(inputs, 1, "axes")?.or_else(|| attr_ints(node, "axes"));
            let mut shape = xx.dims().to_vec();
            if node.op_type == "Squeeze" {
                let r = shape.len();
                let drop: Vec<usize> = match axes {
                    Some(a) => a.iter().map(|&a| axis(a, r)).collect::<Result<_>>()?,
                    None => (0..r).filter(|&d| shape[d] == 1).collect(),
                };
                shape = shape
                    .iter()
                    .enumerate()
                    .filter(|(d, _)| !drop.contains(d))
                    .map(|(_, &s)| s)
                    .collect();
            } else {
                let axes = axes.ok_or_else(|| anyhow!("Unsqueeze without axes"))?;
                let r = shape.len() + axes.len();
                let mut ax: Vec<usize> = axes.iter().map(|&a| axis(a, r)).collect::<Result<_>>()?;
                ax.sort();
                for a in ax {
                    shape.insert(a, 1);
                }
            }
            xx.reshape(shape)?
        }
        other => bail!("op {other} is not supported"),
    };
    Ok(Value::Float(t))
}
