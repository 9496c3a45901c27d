//! The training interpreter op by op: each op's forward pass against tract on the same
//! single-node ONNX model, and its gradients (w.r.t. the input and every trainable initializer)
//! against central finite differences, computed in f64.

#![allow(clippy::needless_range_loop)]

use candle_core::{DType, Tensor, Var};
use nnzip_core::onnx::proto::{AttributeProto, ModelProto};
use nnzip_tools::onnx::build::single_node_model;
use nnzip_tools::onnx::proto::{float_attr, float_tensor, int_attr, int_tensor, ints_attr, node};
use nnzip_tools::onnx::{GraphExecutor, Mode};
use prost::Message;
use tract_onnx::prelude::*;

/// xorshift: deterministic values in [-1, 1) without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// One node: input `x` is the graph input, `params` are float initializers (names starting with
/// `pos_` get positive values), `ints` integer initializers.
struct Case {
    op: &'static str,
    x: Vec<usize>,
    params: Vec<(&'static str, Vec<usize>)>,
    /// Fixed values for some params (otherwise random).
    fixed: Vec<(&'static str, Vec<f32>)>,
    ints: Vec<(&'static str, Vec<i64>)>,
    attrs: Vec<AttributeProto>,
    /// Node inputs in order ("" for an omitted optional input); the first is `x`.
    inputs: Vec<&'static str>,
    /// Check gradients too (ops whose output is piecewise constant in x skip it).
    grad: bool,
    /// The mode gradients are checked in (BatchNormalization differs between the two).
    grad_mode: Mode,
}

impl Case {
    fn new(op: &'static str, x: &[usize]) -> Self {
        Case {
            op,
            x: x.to_vec(),
            params: vec![],
            fixed: vec![],
            ints: vec![],
            attrs: vec![],
            inputs: vec!["x"],
            grad: true,
            grad_mode: Mode::Eval,
        }
    }
    /// BatchNormalization's inputs after `x`: scale, bias, mean, variance (positive), `c` each.
    fn batch_norm_params(self, c: usize) -> Self {
        self.param("s", &[c])
            .param("b", &[c])
            .param("m", &[c])
            .param("pos_v", &[c])
    }
    fn gradients_in(mut self, mode: Mode) -> Self {
        self.grad_mode = mode;
        self
    }
    fn param(mut self, name: &'static str, dims: &[usize]) -> Self {
        self.params.push((name, dims.to_vec()));
        self.inputs.push(name);
        self
    }
    fn fixed(mut self, name: &'static str, v: &[f32]) -> Self {
        self.fixed.push((name, v.to_vec()));
        self.param(name, &[])
    }
    fn ints(mut self, name: &'static str, v: &[i64]) -> Self {
        self.ints.push((name, v.to_vec()));
        self.inputs.push(name);
        self
    }
    fn attr(mut self, a: AttributeProto) -> Self {
        self.attrs.push(a);
        self
    }
}

fn values(rng: &mut Rng, name: &str, dims: &[usize]) -> Vec<f32> {
    (0..dims.iter().product::<usize>())
        .map(|_| {
            let v = rng.next();
            if name.starts_with("pos_") {
                v.abs() + 0.5
            } else {
                v
            }
        })
        .collect()
}

fn build(c: &Case, params: &[Vec<f32>]) -> ModelProto {
    let mut inits: Vec<_> = c
        .params
        .iter()
        .zip(params)
        .map(|((n, d), v)| float_tensor(n, d, v))
        .collect();
    inits.extend(c.ints.iter().map(|(n, v)| int_tensor(n, &[v.len()], v)));
    let n = node(c.op, "node", &c.inputs, &["y"], c.attrs.clone());
    single_node_model(n, &c.x, inits)
}

fn tract_out(model: &ModelProto, x: &[f32], dims: &[usize]) -> Vec<f32> {
    let bytes = model.encode_to_vec();
    let plan = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(bytes))
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = tract_onnx::prelude::Tensor::from_shape(dims, x).unwrap();
    let out = plan.run(tvec!(input.into())).unwrap();
    out[0]
        .cast_to::<f32>()
        .unwrap()
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

fn check(c: Case) {
    let mut rng = Rng(0x1234_5678);
    let x = values(&mut rng, "x", &c.x);
    let params: Vec<Vec<f32>> = c
        .params
        .iter()
        .map(|(n, d)| match c.fixed.iter().find(|(f, _)| f == n) {
            Some((_, v)) => v.clone(),
            None => values(&mut rng, n, d),
        })
        .collect();
    let model = build(&c, &params);

    // Forward, f32, against tract.
    let exec = GraphExecutor::new(model.clone(), c.op).unwrap();
    let xt = Tensor::from_vec(x.clone(), c.x.as_slice(), exec.device()).unwrap();
    let got: Vec<f32> = exec
        .forward(&xt, Mode::Eval)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want = tract_out(&model, &x, &c.x);
    assert_eq!(got.len(), want.len(), "{}: output size", c.op);
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "{}: element {i}: candle {a} vs tract {b}",
            c.op
        );
    }
    if !c.grad {
        return;
    }

    // Gradients, f64: loss = Σ y·r for a fixed random r.
    let exec = GraphExecutor::with_dtype(model, c.op, DType::F64).unwrap();
    let dev = exec.device().clone();
    let xv = Var::from_tensor(&xt.to_dtype(DType::F64).unwrap()).unwrap();
    let y = exec.forward(xv.as_tensor(), c.grad_mode).unwrap();
    let r: Vec<f64> = (0..y.elem_count()).map(|_| rng.next() as f64).collect();
    let rt = Tensor::from_vec(r, y.dims(), &dev).unwrap();
    let loss = |x: &Tensor| -> f64 {
        let y = exec.forward(x, c.grad_mode).unwrap();
        (y * &rt)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let grads = (exec.forward(xv.as_tensor(), c.grad_mode).unwrap() * &rt)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let eps = 1e-4;
    let close = |what: String, a: f64, n: f64| {
        assert!(
            (a - n).abs() <= 1e-3 * (1.0 + n.abs()),
            "{} ∂/∂{what}: autodiff {a} vs finite difference {n}",
            c.op
        );
    };
    // w.r.t. the input
    let gx: Vec<f64> = grads
        .get(xv.as_tensor())
        .expect("gradient for x")
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let xs: Vec<f64> = xv.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    for i in (0..xs.len()).step_by((xs.len() / 16).max(1)) {
        let at = |d: f64| {
            let mut v = xs.clone();
            v[i] += d;
            loss(&Tensor::from_vec(v, c.x.as_slice(), &dev).unwrap())
        };
        close(format!("x[{i}]"), gx[i], (at(eps) - at(-eps)) / (2.0 * eps));
    }
    // w.r.t. every trainable initializer
    for p in exec.trainable() {
        let g: Vec<f64> = grads
            .get(p.var.as_tensor())
            .expect("gradient for a parameter")
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let orig = p.var.as_tensor().copy().unwrap();
        let flat: Vec<f64> = orig.flatten_all().unwrap().to_vec1().unwrap();
        for i in (0..flat.len()).step_by((flat.len() / 12).max(1)) {
            let at = |d: f64| {
                let mut v = flat.clone();
                v[i] += d;
                p.var
                    .set(&Tensor::from_vec(v, orig.dims(), &dev).unwrap())
                    .unwrap();
                loss(xv.as_tensor())
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            p.var.set(&orig).unwrap();
            close(format!("{}[{i}]", p.name), g[i], numeric);
        }
    }
}

#[test]
fn conv_variants() {
    check(
        Case::new("Conv", &[2, 3, 7, 6])
            .param("w", &[4, 3, 3, 3])
            .param("b", &[4])
            .attr(ints_attr("pads", &[1, 1, 1, 1])),
    );
    // depthwise, strided, asymmetric pads
    check(
        Case::new("Conv", &[1, 4, 9, 9])
            .param("w", &[4, 1, 3, 3])
            .attr(int_attr("group", 4))
            .attr(ints_attr("strides", &[2, 2]))
            .attr(ints_attr("pads", &[0, 0, 1, 1])),
    );
    // grouped
    check(
        Case::new("Conv", &[2, 4, 6, 6])
            .param("w", &[6, 2, 3, 3])
            .attr(int_attr("group", 2)),
    );
    check(
        Case::new("Conv", &[1, 2, 9, 9])
            .param("w", &[2, 2, 3, 3])
            .attr(ints_attr("dilations", &[2, 2])),
    );
    // A mini-batch that the kernels stack into blocks of several samples per gemm (the last
    // block shorter), with the bias added and its gradient summed inside the op.
    check(
        Case::new("Conv", &[7, 2, 6, 5])
            .param("w", &[3, 2, 3, 2])
            .param("b", &[3]),
    );
    check(
        Case::new("Conv", &[5, 4, 5, 5])
            .param("w", &[6, 2, 3, 3])
            .param("b", &[6])
            .attr(int_attr("group", 2))
            .attr(ints_attr("pads", &[1, 0, 0, 1])),
    );
}

#[test]
fn dense_ops() {
    check(
        Case::new("Gemm", &[3, 5])
            .param("b", &[4, 5])
            .param("c", &[4])
            .attr(int_attr("transB", 1))
            .attr(float_attr("alpha", 0.5))
            .attr(float_attr("beta", 2.0)),
    );
    check(
        Case::new("Gemm", &[5, 3])
            .param("b", &[5, 4])
            .attr(int_attr("transA", 1)),
    );
    check(Case::new("MatMul", &[2, 3, 5]).param("b", &[5, 4]));
}

#[test]
fn elementwise_ops() {
    for op in ["Add", "Sub", "Mul"] {
        check(Case::new(op, &[2, 3, 4]).param("b", &[3, 1]));
    }
    check(Case::new("Div", &[2, 3]).param("pos_d", &[3]));
    for op in [
        "Relu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Identity",
        "Dropout",
    ] {
        check(Case::new(op, &[2, 3, 5]));
    }
    check(
        Case::new("Clip", &[4, 5])
            .fixed("lo", &[-0.3])
            .fixed("hi", &[0.4]),
    );
    check(Case::new("Softmax", &[3, 7]).attr(int_attr("axis", -1)));
    check(Case::new("LogSoftmax", &[3, 7]).attr(int_attr("axis", -1)));
    check(
        Case::new("Sum", &[2, 3, 4])
            .param("b", &[3, 1])
            .param("c", &[4]),
    );
    check(Case::new("Sum", &[2, 3]));
}

#[test]
fn local_response_normalisation() {
    // AlexNet's setting, GoogLeNet's, and a window wider than the channels.
    for (size, alpha, beta, bias) in [
        (5, 1e-4, 0.75, 1.0),
        (3, 0.5, 0.75, 2.0),
        (9, 2.0, 0.5, 1.0),
    ] {
        check(
            Case::new("LRN", &[2, 5, 3, 4])
                .attr(int_attr("size", size))
                .attr(float_attr("alpha", alpha))
                .attr(float_attr("beta", beta))
                .attr(float_attr("bias", bias)),
        );
    }
}

#[test]
fn pooling_ops() {
    check(
        Case::new("MaxPool", &[2, 3, 8, 8])
            .attr(ints_attr("kernel_shape", &[2, 2]))
            .attr(ints_attr("strides", &[2, 2])),
    );
    check(
        Case::new("MaxPool", &[1, 2, 7, 7])
            .attr(ints_attr("kernel_shape", &[3, 3]))
            .attr(ints_attr("strides", &[2, 2]))
            .attr(ints_attr("pads", &[1, 1, 1, 1])),
    );
    // 2×2 windows over an odd size: the last row and column belong to no window.
    check(
        Case::new("MaxPool", &[3, 2, 7, 5])
            .attr(ints_attr("kernel_shape", &[2, 2]))
            .attr(ints_attr("strides", &[2, 2])),
    );
    // ceil_mode: the last windows hang over the bottom/right edge (general path).
    check(
        Case::new("MaxPool", &[2, 2, 7, 7])
            .attr(ints_attr("kernel_shape", &[2, 2]))
            .attr(ints_attr("strides", &[2, 2]))
            .attr(int_attr("ceil_mode", 1)),
    );
    check(
        Case::new("AveragePool", &[1, 2, 6, 6])
            .attr(ints_attr("kernel_shape", &[3, 3]))
            .attr(ints_attr("strides", &[1, 1])),
    );
    check(
        Case::new("AveragePool", &[1, 2, 7, 7])
            .attr(ints_attr("kernel_shape", &[3, 3]))
            .attr(ints_attr("strides", &[2, 2]))
            .attr(ints_attr("pads", &[1, 1, 1, 1]))
            .attr(int_attr("count_include_pad", 0)),
    );
    check(Case::new("GlobalAveragePool", &[2, 3, 4, 5]));
}

#[test]
fn max_pool_gradient_goes_to_one_maximum_per_window() {
    // Ties (e.g. zeros after a ReLU): each window passes its gradient to one input, its first
    // maximum, as PyTorch does, not to every tied input (which candle's `max` would do).
    let cases: [(&[usize], Vec<AttributeProto>, Vec<f32>); 2] = [
        (
            &[1, 1, 4, 4],
            vec![
                ints_attr("kernel_shape", &[2, 2]),
                ints_attr("strides", &[2, 2]),
            ],
            vec![
                1., 0., 1., 0., //
                0., 0., 0., 0., //
                1., 0., 1., 0., //
                0., 0., 0., 0.,
            ],
        ),
        (
            &[1, 1, 3, 3],
            vec![
                ints_attr("kernel_shape", &[3, 3]),
                ints_attr("strides", &[2, 2]),
                ints_attr("pads", &[1, 1, 1, 1]),
            ],
            // Outputs 2×2 from windows starting at -1 and 1: each one's first in-bounds tap
            // wins (padding never does).
            vec![
                1., 1., 0., //
                1., 1., 0., //
                0., 0., 0.,
            ],
        ),
    ];
    for (dims, attrs, want) in cases {
        let n = node("MaxPool", "pool", &["x"], &["y"], attrs);
        let exec = GraphExecutor::new(single_node_model(n, dims, vec![]), "pool").unwrap();
        let x = Var::from_tensor(&Tensor::zeros(dims, DType::F32, exec.device()).unwrap()).unwrap();
        let y = exec.forward(x.as_tensor(), Mode::Eval).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g: Vec<f32> = grads
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(g, want, "{dims:?}");
    }
}

#[test]
fn batchnorm_evaluation_mode() {
    check(Case::new("BatchNormalization", &[2, 3, 4, 4]).batch_norm_params(3));
}

/// Training mode: the batch statistics depend on the input, and the gradient must include that
/// dependence (nnzip's BatchNormalization op writes the backward pass out; see `batchnorm.rs`).
#[test]
fn batchnorm_training_mode_gradients() {
    check(
        Case::new("BatchNormalization", &[3, 2, 3, 3])
            .batch_norm_params(2)
            .gradients_in(Mode::Train),
    );
    // Rank 2 (after a Gemm): statistics over the batch axis only.
    check(
        Case::new("BatchNormalization", &[5, 3])
            .batch_norm_params(3)
            .gradients_in(Mode::Train),
    );
}

#[test]
fn shape_ops() {
    check(Case::new("Flatten", &[2, 3, 4]).attr(int_attr("axis", 1)));
    check(Case::new("Reshape", &[2, 3, 4]).ints("shape", &[0, -1, 2]));
    check(Case::new("Transpose", &[2, 3, 4]).attr(ints_attr("perm", &[2, 0, 1])));
    check(
        Case::new("Concat", &[2, 3])
            .param("b", &[2, 2])
            .attr(int_attr("axis", 1)),
    );
    check(Case::new("Pad", &[1, 2, 3, 3]).ints("pads", &[0, 0, 1, 0, 0, 0, 0, 2]));
    check(Case::new("Unsqueeze", &[2, 3]).ints("axes", &[0, 3]));
    check(Case::new("Squeeze", &[2, 1, 3, 1]).ints("axes", &[1]));
}

#[test]
fn batchnorm_training_mode_uses_batch_statistics_and_updates_running_ones() {
    let c = Case::new("BatchNormalization", &[4, 2, 3, 3])
        .batch_norm_params(2)
        .attr(float_attr("momentum", 0.9));
    let mut rng = Rng(7);
    let x = values(&mut rng, "x", &c.x);
    let params = vec![
        vec![1.0, 2.0],
        vec![0.0, 0.5],
        vec![0.0, 0.0],
        vec![1.0, 1.0],
    ];
    let exec = GraphExecutor::new(build(&c, &params), "bn").unwrap();
    let xt = Tensor::from_vec(x.clone(), c.x.as_slice(), exec.device()).unwrap();
    let y = exec.forward(&xt, Mode::Train).unwrap();
    // Per channel: y = s·(x − mean_batch)/sqrt(var_batch + eps) + b, so mean(y) = b, std(y) ≈ s.
    let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
    for ch in 0..2 {
        let vals: Vec<f32> = (0..4)
            .flat_map(|n| (0..9).map(move |k| (n * 2 + ch) * 9 + k))
            .map(|i| y[i])
            .collect();
        let mean = vals.iter().sum::<f32>() / vals.len() as f32;
        let std = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / vals.len() as f32).sqrt();
        assert!(
            (mean - params[1][ch]).abs() < 1e-4,
            "channel {ch}: mean {mean}"
        );
        assert!(
            (std - params[0][ch]).abs() < 1e-2,
            "channel {ch}: std {std}"
        );
    }
    // Running mean moved from 0 towards the batch mean by (1 − momentum).
    let m: Vec<f32> = exec.param("m").unwrap().var.as_tensor().to_vec1().unwrap();
    for ch in 0..2 {
        let vals: Vec<f32> = (0..4)
            .flat_map(|n| (0..9).map(move |k| (n * 2 + ch) * 9 + k))
            .map(|i| x[i])
            .collect();
        let batch_mean = vals.iter().sum::<f32>() / vals.len() as f32;
        assert!(
            (m[ch] - 0.1 * batch_mean).abs() < 1e-5,
            "running mean {} vs {}",
            m[ch],
            0.1 * batch_mean
        );
    }
}

#[test]
fn unsupported_ops_are_refused_up_front_with_op_and_node_names() {
    let c = Case::new("LSTM", &[1, 2]);
    let err = GraphExecutor::new(build(&c, &[]), "m.onnx")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("LSTM") && err.contains("'node'") && err.contains("Conv"),
        "{err}"
    );
}

#[test]
fn batch_one_exports_reshape_mini_batches_along_the_batch_axis() {
    // Exported at batch 1 (EfficientNet-Lite0 in ../shared/models ends in Reshape [1, -1]): a
    // mini-batch of 3 must come out as [3, 4], not [1, 12].
    let n = node("Reshape", "reshape", &["x", "shape"], &["y"], vec![]);
    let model = single_node_model(n, &[1, 4, 1, 1], vec![int_tensor("shape", &[2], &[1, -1])]);
    let exec = GraphExecutor::new(model, "batch-1 export").unwrap();
    let x = Tensor::arange(0f32, 12.0, exec.device())
        .unwrap()
        .reshape((3, 4, 1, 1))
        .unwrap();
    let y = exec.forward(&x, Mode::Eval).unwrap();
    assert_eq!(y.dims(), &[3, 4]);
    let one = exec
        .forward(&x.narrow(0, 1, 1).unwrap(), Mode::Eval)
        .unwrap();
    assert_eq!(one.dims(), &[1, 4]);
    assert_eq!(
        one.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![4.0, 5.0, 6.0, 7.0]
    );
}
