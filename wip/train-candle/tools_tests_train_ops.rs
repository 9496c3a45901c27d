//! The training engine op by op: forward against tract on the same single-node model, and
//! gradients against central finite differences.

use candle_core::Tensor;
use nnzip_tools::train::graph::TrainGraph;
use prost::Message;
use tract_onnx::pb::{self, tensor_proto::DataType};
use tract_onnx::prelude::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn float_init(name: &str, dims: &[usize], v: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn int_init(name: &str, v: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: DataType::Int64 as i32,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

fn vi(name: &str) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ai(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        i: v,
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        ..Default::default()
    }
}
fn ais(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        ints: v.to_vec(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ..Default::default()
    }
}
fn af(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        f: v,
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        ..Default::default()
    }
}

/// One node whose float inputs are all trainable initializers (so each gets a gradient) and
/// whose integer inputs are constants. The graph input `unused` feeds nothing.
struct Case {
    op: &'static str,
    floats: Vec<(&'static str, Vec<usize>)>,
    ints: Vec<(&'static str, Vec<i64>)>,
    attrs: Vec<pb::AttributeProto>,
    /// Input names in node order ("" for an omitted optional input).
    inputs: Vec<&'static str>,
    /// Test gradients too (not for ops without useful gradients).
    grad: bool,
}

fn model(c: &Case, values: &[Vec<f32>]) -> Vec<u8> {
    let mut inits: Vec<pb::TensorProto> = c
        .floats
        .iter()
        .zip(values)
        .map(|((n, d), v)| float_init(n, d, v))
        .collect();
    inits.extend(c.ints.iter().map(|(n, v)| int_init(n, v)));
    let node = pb::NodeProto {
        op_type: c.op.into(),
        name: "node".into(),
        input: c.inputs.iter().map(|s| s.to_string()).collect(),
        output: vec!["y".into()],
        attribute: c.attrs.clone(),
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: "t".into(),
            node: vec![node],
            initializer: inits,
            input: vec![vi("unused")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn tract_out(onnx: &[u8]) -> Vec<f32> {
    let m = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(onnx))
        .unwrap()
        .with_input_fact(0, f32::fact([1]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let out = m
        .run(tvec!(Tensor::zero::<f32>(&[1]).unwrap().into_tvalue()))
        .unwrap();
    out[0]
        .cast_to::<f32>()
        .unwrap()
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

fn candle_out(onnx: &[u8]) -> (TrainGraph, candle_core::Tensor) {
    let mut g = TrainGraph::from_onnx(onnx).unwrap();
    let dummy = candle_core::Tensor::zeros(1, candle_core::DType::F32, g.device()).unwrap();
    let y = g.forward(&dummy, false).unwrap();
    (g, y)
}

fn check(c: Case) {
    let mut rng = Rng(0x1234_5678);
    // Inputs named `pos_*` (variances) get positive values.
    let values: Vec<Vec<f32>> = c
        .floats
        .iter()
        .map(|(n, d)| {
            (0..d.iter().product::<usize>())
                .map(|_| {
                    if n.starts_with("pos_") {
                        rng.next().abs() + 0.5
                    } else {
                        rng.next()
                    }
                })
                .collect()
        })
        .collect();
    let onnx = model(&c, &values);
    let want = tract_out(&onnx);
    let (g, y) = candle_out(&onnx);
    let got: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
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
    // loss = Σ y·r with fixed random r; compare ∂loss/∂input with central differences.
    let r: Vec<f32> = (0..got.len()).map(|_| rng.next()).collect();
    let rt = Tensor::from_vec(r.clone(), y.dims(), g.device()).unwrap();
    let loss = |y: &Tensor| (y * &rt).unwrap().sum_all().unwrap();
    let grads = loss(&y).backward().unwrap();
    let eps = 1e-2f32;
    for (k, (name, _)) in c.floats.iter().enumerate() {
        let var = g.param(name).unwrap();
        let analytic: Vec<f32> = grads
            .get(var.as_tensor())
            .map(|t| t.flatten_all().unwrap().to_vec1().unwrap())
            .unwrap_or_else(|| vec![0.0; values[k].len()]);
        for i in (0..values[k].len()).step_by((values[k].len() / 12).max(1)) {
            let mut eval = |delta: f32| {
                let mut v = values.clone();
                v[k][i] += delta;
                let (_, y) = candle_out(&model(&c, &v));
                loss(&y).to_scalar::<f32>().unwrap()
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
            let a = analytic[i];
            assert!(
                (a - numeric).abs() <= 2e-2 * (1.0 + numeric.abs()),
                "{} ∂/∂{name}[{i}]: autodiff {a} vs finite difference {numeric}",
                c.op
            );
        }
    }
}

fn f(name: &'static str, dims: &[usize]) -> (&'static str, Vec<usize>) {
    (name, dims.to_vec())
}

#[test]
fn conv_variants() {
    check(Case {
        op: "Conv",
        floats: vec![f("x", &[2, 3, 7, 6]), f("w", &[4, 3, 3, 3]), f("b", &[4])],
        ints: vec![],
        attrs: vec![ais("pads", &[1, 1, 1, 1])],
        inputs: vec!["x", "w", "b"],
        grad: true,
    });
    check(Case {
        op: "Conv",
        floats: vec![f("x", &[1, 4, 9, 9]), f("w", &[4, 1, 3, 3])],
        ints: vec![],
        attrs: vec![
            ai("group", 4),
            ais("strides", &[2, 2]),
            ais("pads", &[0, 0, 1, 1]),
        ],
        inputs: vec!["x", "w"],
        grad: true,
    });
    check(Case {
        op: "Conv",
        floats: vec![f("x", &[1, 2, 9, 9]), f("w", &[2, 2, 3, 3])],
        ints: vec![],
        attrs: vec![ais("dilations", &[2, 2])],
        inputs: vec!["x", "w"],
        grad: true,
    });
}

#[test]
fn dense_ops() {
    check(Case {
        op: "Gemm",
        floats: vec![f("a", &[3, 5]), f("b", &[4, 5]), f("c", &[4])],
        ints: vec![],
        attrs: vec![ai("transB", 1), af("alpha", 0.5), af("beta", 2.0)],
        inputs: vec!["a", "b", "c"],
        grad: true,
    });
    check(Case {
        op: "Gemm",
        floats: vec![f("a", &[5, 3]), f("b", &[5, 4])],
        ints: vec![],
        attrs: vec![ai("transA", 1)],
        inputs: vec!["a", "b"],
        grad: true,
    });
    check(Case {
        op: "MatMul",
        floats: vec![f("a", &[2, 3, 5]), f("b", &[5, 4])],
        ints: vec![],
        attrs: vec![],
        inputs: vec!["a", "b"],
        grad: true,
    });
}

#[test]
fn elementwise_ops() {
    for op in ["Add", "Sub", "Mul"] {
        check(Case {
            op,
            floats: vec![f("a", &[2, 3, 4]), f("b", &[3, 1])],
            ints: vec![],
            attrs: vec![],
            inputs: vec!["a", "b"],
            grad: true,
        });
    }
    check(Case {
        op: "Div",
        floats: vec![f("a", &[2, 3])],
        ints: vec![],
        attrs: vec![],
        inputs: vec!["a", "a"],
        grad: false,
    });
    for op in [
        "Relu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Identity",
        "Dropout",
    ] {
        check(Case {
            op,
            floats: vec![f("x", &[2, 3, 5])],
            ints: vec![],
            attrs: vec![],
            inputs: vec!["x"],
            grad: true,
        });
    }
    check(Case {
        op: "Clip",
        floats: vec![f("x", &[4, 5])],
        ints: vec![],
        attrs: vec![af("min", -0.3), af("max", 0.4)],
        inputs: vec!["x"],
        grad: true,
    });
    check(Case {
        op: "Softmax",
        floats: vec![f("x", &[3, 7])],
        ints: vec![],
        attrs: vec![ai("axis", -1)],
        inputs: vec!["x"],
        grad: true,
    });
}

#[test]
fn pooling_ops() {
    check(Case {
        op: "MaxPool",
        floats: vec![f("x", &[2, 3, 8, 8])],
        ints: vec![],
        attrs: vec![ais("kernel_shape", &[2, 2]), ais("strides", &[2, 2])],
        inputs: vec!["x"],
        grad: true,
    });
    check(Case {
        op: "MaxPool",
        floats: vec![f("x", &[1, 2, 7, 7])],
        ints: vec![],
        attrs: vec![
            ais("kernel_shape", &[3, 3]),
            ais("strides", &[2, 2]),
            ais("pads", &[1, 1, 1, 1]),
        ],
        inputs: vec!["x"],
        grad: true,
    });
    check(Case {
        op: "AveragePool",
        floats: vec![f("x", &[1, 2, 6, 6])],
        ints: vec![],
        attrs: vec![ais("kernel_shape", &[3, 3]), ais("strides", &[1, 1])],
        inputs: vec!["x"],
        grad: true,
    });
    check(Case {
        op: "GlobalAveragePool",
        floats: vec![f("x", &[2, 3, 4, 5])],
        ints: vec![],
        attrs: vec![],
        inputs: vec!["x"],
        grad: true,
    });
}

#[test]
fn batchnorm_eval() {
    check(Case {
        op: "BatchNormalization",
        floats: vec![
            f("x", &[2, 3, 4, 4]),
            f("s", &[3]),
            f("b", &[3]),
            f("m", &[3]),
            f("pos_v", &[3]),
        ],
        ints: vec![],
        attrs: vec![],
        inputs: vec!["x", "s", "b", "m", "pos_v"],
        grad: false,
    });
}

#[test]
fn shape_ops() {
    check(Case {
        op: "Flatten",
        floats: vec![f("x", &[2, 3, 4])],
        ints: vec![],
        attrs: vec![ai("axis", 1)],
        inputs: vec!["x"],
        grad: true,
    });
    check(Case {
        op: "Reshape",
        floats: vec![f("x", &[2, 3, 4])],
        ints: vec![("shape", vec![0, -1, 2])],
        attrs: vec![],
        inputs: vec!["x", "shape"],
        grad: true,
    });
    check(Case {
        op: "Transpose",
        floats: vec![f("x", &[2, 3, 4])],
        ints: vec![],
        attrs: vec![ais("perm", &[2, 0, 1])],
        inputs: vec!["x"],
        grad: true,
    });
    check(Case {
        op: "Concat",
        floats: vec![f("a", &[2, 3]), f("b", &[2, 2])],
        ints: vec![],
        attrs: vec![ai("axis", 1)],
        inputs: vec!["a", "b"],
        grad: true,
    });
    check(Case {
        op: "Pad",
        floats: vec![f("x", &[1, 2, 3, 3])],
        ints: vec![("pads", vec![0, 0, 1, 0, 0, 0, 0, 2])],
        attrs: vec![],
        inputs: vec!["x", "pads"],
        grad: true,
    });
    check(Case {
        op: "Unsqueeze",
        floats: vec![f("x", &[2, 3])],
        ints: vec![("axes", vec![0, 3])],
        attrs: vec![],
        inputs: vec!["x", "axes"],
        grad: true,
    });
    check(Case {
        op: "Squeeze",
        floats: vec![f("x", &[2, 1, 3, 1])],
        ints: vec![("axes", vec![1])],
        attrs: vec![],
        inputs: vec!["x", "axes"],
        grad: true,
    });
}

#[test]
fn unsupported_ops_are_refused_up_front_with_names() {
    let c = Case {
        op: "LSTM",
        floats: vec![f("x", &[1, 2])],
        ints: vec![],
        attrs: vec![],
        inputs: vec!["x"],
        grad: false,
    };
    let onnx = model(&c, &[vec![0.0, 1.0]]);
    let err = TrainGraph::from_onnx(&onnx)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("node (LSTM)") && err.contains("Supported: Conv"),
        "{err}"
    );
}
