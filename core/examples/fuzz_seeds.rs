//! Writes the fuzzers' seed corpus: small valid `.nnz` files using every encoding, one of them
//! a runnable two-layer model. `cargo run -p nnzip-core --example fuzz_seeds -- fuzz/corpus`

use nnzip_core::format::{NnzWriter, TensorData, TensorRecord};
use nnzip_core::metadata::{InputSpec, Metadata};
use prost::Message;
use tract_onnx::pb;

fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `logits = relu(x · W1ᵀ + b1) · W2ᵀ + b2` with x [1, 8], W1 [6, 8], W2 [3, 6].
fn tiny_graph() -> Vec<u8> {
    let gemm = |a: &str, w: &str, b: &str, out: &str| pb::NodeProto {
        op_type: "Gemm".into(),
        input: vec![a.into(), w.into(), b.into()],
        output: vec![out.into()],
        attribute: vec![pb::AttributeProto {
            name: "transB".into(),
            i: 1,
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            ..Default::default()
        }],
        ..Default::default()
    };
    let relu = pb::NodeProto {
        op_type: "Relu".into(),
        input: vec!["h".into()],
        output: vec!["hr".into()],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: "tiny".into(),
            node: vec![
                gemm("x", "w1", "b1", "h"),
                relu,
                gemm("hr", "w2", "b2", "logits"),
            ],
            input: vec![value_info("x", &[1, 8])],
            output: vec![value_info("logits", &[1, 3])],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let meta = Metadata {
        model_name: "tiny".into(),
        input: InputSpec {
            name: "x".into(),
            shape: vec![1, 8],
        },
        labels: vec!["a".into(), "b".into(), "c".into()],
        ..Default::default()
    };
    let mut w = NnzWriter::new(meta, tiny_graph());
    let idx1: Vec<u16> = (0..48)
        .map(|i| if i % 3 == 0 { 1 + (i % 7) as u16 } else { 0 })
        .collect();
    w.push(TensorRecord {
        name: "w1".into(),
        shape: vec![6, 8],
        data: TensorData::SharedSparse {
            codebook: (0..8).map(|i| i as f32 * 0.1).collect(),
            indices: idx1,
            index_bits: 3,
            gap_bits: 2,
        },
    })?;
    w.push(TensorRecord {
        name: "b1".into(),
        shape: vec![6],
        data: TensorData::RawF16(vec![0.1, -0.1, 0.2, 0.0, 0.3, -0.2]),
    })?;
    w.push(TensorRecord {
        name: "w2".into(),
        shape: vec![3, 6],
        data: TensorData::SharedDense {
            codebook: vec![-0.5, 0.25, 0.75],
            indices: (0..18).map(|i| (i % 3) as u16).collect(),
            index_bits: 2,
        },
    })?;
    w.push(TensorRecord {
        name: "b2".into(),
        shape: vec![3],
        data: TensorData::RawF32(vec![0.0, 0.5, -0.5]),
    })?;
    let model = w.to_bytes()?;
    // Check that it is runnable before it becomes a seed.
    nnzip_core::Model::from_bytes(&model)?;
    for target in ["nnz_reader", "model_from_bytes"] {
        std::fs::create_dir_all(dir.join(target))?;
        std::fs::write(dir.join(target).join("seed-tiny-model.nnz"), &model)?;
    }
    // Tensor payload seeds: encoding byte, element count, payload.
    std::fs::create_dir_all(dir.join("tensor_payload"))?;
    for (i, t) in w.tensors.iter().enumerate() {
        let (payload, _) = nnzip_core::format::encode::encode_tensor(t)?;
        let mut seed = vec![t.data.encoding() as u8];
        seed.extend_from_slice(&(t.data.len() as u16).to_le_bytes());
        seed.extend_from_slice(&payload);
        std::fs::write(
            dir.join("tensor_payload")
                .join(format!("seed-{i}-{}.bin", t.name)),
            seed,
        )?;
    }
    println!("wrote seeds under {}", dir.display());
    Ok(())
}
