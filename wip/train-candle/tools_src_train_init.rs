//! The two classic architectures of the Deep Compression paper, written as ONNX with fresh
//! weights, so nothing outside the project is needed to start (`nnzip init`).

use anyhow::{Result, bail};
use prost::Message;
use tract_onnx::pb::{self, tensor_proto::DataType};

fn value_info(name: &str, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(d.map_or_else(|| Value::DimParam("N".into()), Value::DimValue)),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        ints: v.to_vec(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        i: v,
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        ..Default::default()
    }
}

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

struct Rng(u64);
impl Rng {
    fn uniform(&mut self, bound: f32) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * bound
    }
}

/// PyTorch's default initialisation: U(±1/√fan_in) for weights and biases.
fn param(rng: &mut Rng, name: &str, dims: &[i64], fan_in: i64) -> pb::TensorProto {
    let n: i64 = dims.iter().product();
    let bound = 1.0 / (fan_in as f32).sqrt();
    let raw: Vec<u8> = (0..n)
        .flat_map(|_| rng.uniform(bound).to_le_bytes())
        .collect();
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        raw_data: raw,
        ..Default::default()
    }
}

/// Architectures `nnzip init` knows.
pub const ARCHITECTURES: &[&str] = &["lenet300", "lenet5"];

/// A freshly initialised LeNet as ONNX bytes: input `input` `[N,1,28,28]`, output `logits` `[N,10]`.
pub fn init_model(arch: &str, seed: u64) -> Result<Vec<u8>> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let gemm = |x: &str, l: &str, out: &str| {
        node(
            "Gemm",
            &[x, &format!("{l}.weight"), &format!("{l}.bias")],
            out,
            vec![int("transB", 1)],
        )
    };
    let (nodes, inits) = match arch {
        "lenet300" => {
            let nodes = vec![
                node("Flatten", &["input"], "flat", vec![int("axis", 1)]),
                gemm("flat", "fc1", "h1"),
                node("Relu", &["h1"], "r1", vec![]),
                gemm("r1", "fc2", "h2"),
                node("Relu", &["h2"], "r2", vec![]),
                gemm("r2", "fc3", "logits"),
            ];
            let inits = vec![
                param(&mut rng, "fc1.weight", &[300, 784], 784),
                param(&mut rng, "fc1.bias", &[300], 784),
                param(&mut rng, "fc2.weight", &[100, 300], 300),
                param(&mut rng, "fc2.bias", &[100], 300),
                param(&mut rng, "fc3.weight", &[10, 100], 100),
                param(&mut rng, "fc3.bias", &[10], 100),
            ];
            (nodes, inits)
        }
        "lenet5" => {
            let conv = |x: &str, l: &str, out: &str| {
                node(
                    "Conv",
                    &[x, &format!("{l}.weight"), &format!("{l}.bias")],
                    out,
                    vec![ints("kernel_shape", &[5, 5])],
                )
            };
            let pool = |x: &str, out: &str| {
                node(
                    "MaxPool",
                    &[x],
                    out,
                    vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
                )
            };
            let nodes = vec![
                conv("input", "conv1", "c1"),
                pool("c1", "p1"),
                conv("p1", "conv2", "c2"),
                pool("c2", "p2"),
                node("Flatten", &["p2"], "flat", vec![int("axis", 1)]),
                gemm("flat", "fc1", "h1"),
                node("Relu", &["h1"], "r1", vec![]),
                gemm("r1", "fc2", "logits"),
            ];
            let inits = vec![
                param(&mut rng, "conv1.weight", &[20, 1, 5, 5], 25),
                param(&mut rng, "conv1.bias", &[20], 25),
                param(&mut rng, "conv2.weight", &[50, 20, 5, 5], 500),
                param(&mut rng, "conv2.bias", &[50], 500),
                param(&mut rng, "fc1.weight", &[500, 800], 800),
                param(&mut rng, "fc1.bias", &[500], 800),
                param(&mut rng, "fc2.weight", &[10, 500], 500),
                param(&mut rng, "fc2.bias", &[10], 500),
            ];
            (nodes, inits)
        }
        other => bail!(
            "unknown architecture '{other}': use one of {}",
            ARCHITECTURES.join(", ")
        ),
    };
    let model = pb::ModelProto {
        ir_version: 8,
        producer_name: "nnzip".into(),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: arch.into(),
            node: nodes,
            initializer: inits,
            input: vec![value_info("input", &[None, Some(1), Some(28), Some(28)])],
            output: vec![value_info("logits", &[None, Some(10)])],
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}
