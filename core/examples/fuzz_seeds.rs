//! Writes the fuzzers' seed corpus: small valid `.nnz` files using every encoding, one of them
//! a runnable two-layer model. `cargo run -p nnzip-core --example fuzz_seeds -- fuzz/corpus`

#[path = "../../fuzz/src/header.rs"]
mod header;
#[path = "../tests/common/image_model.rs"]
mod image_model;
// Only `join` is used here; `classify` is the fuzzed function.
#[allow(dead_code)]
#[path = "../../fuzz/src/phone_path.rs"]
mod phone_path;

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

/// The runnable two-layer model; `range_coded` stores `w1` as `shared-sparse-ac` (a v2 file).
fn tiny_model(
    range_coded: bool,
    row_scaled: bool,
) -> Result<NnzWriter, Box<dyn std::error::Error>> {
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
    let codebook: Vec<f32> = (0..8).map(|i| i as f32 * 0.1).collect();
    w.push(TensorRecord {
        // Version 4: one binary16 scale per row, a dead row (0) included.
        row_scales: row_scaled.then(|| vec![1.0, 0.5, 2.0, 0.0, 0.25, 4.0]),
        name: "w1".into(),
        shape: vec![6, 8],
        data: if range_coded {
            TensorData::SharedSparseAc {
                codebook,
                indices: idx1,
                index_bits: 3,
            }
        } else {
            TensorData::SharedSparse {
                codebook,
                indices: idx1,
                index_bits: 3,
                gap_bits: 2,
            }
        },
    })?;
    w.push(TensorRecord {
        row_scales: None,
        name: "b1".into(),
        shape: vec![6],
        data: TensorData::RawF16(vec![0.1, -0.1, 0.2, 0.0, 0.3, -0.2]),
    })?;
    w.push(TensorRecord {
        row_scales: None,
        name: "w2".into(),
        shape: vec![3, 6],
        data: TensorData::SharedDense {
            codebook: vec![-0.5, 0.25, 0.75],
            indices: (0..18).map(|i| (i % 3) as u16).collect(),
            index_bits: 2,
        },
    })?;
    w.push(TensorRecord {
        row_scales: None,
        name: "b2".into(),
        shape: vec![3],
        data: TensorData::RawF32(vec![0.0, 0.5, -0.5]),
    })?;
    Ok(w)
}

/// A 5-bit sparse tensor with a skewed index distribution (codes up to 10+ bits long, gaps that
/// overflow a 3-bit width and need fillers): exercises the decoders' slow paths.
fn skewed_sparse(range_coded: bool) -> TensorRecord {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let indices: Vec<u16> = (0..600)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if !s.is_multiple_of(5) {
                0
            } else {
                (1 + (s >> 32).trailing_zeros().min(30)) as u16
            }
        })
        .collect();
    let codebook: Vec<f32> = (0..32).map(|i| i as f32 * 0.03).collect();
    TensorRecord {
        row_scales: None,
        name: "skewed".into(),
        shape: vec![20, 30],
        data: if range_coded {
            TensorData::SharedSparseAc {
                codebook,
                indices,
                index_bits: 5,
            }
        } else {
            TensorData::SharedSparse {
                codebook,
                indices,
                index_bits: 5,
                gap_bits: 3,
            }
        },
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let mut payloads = Vec::new();
    for (version, range_coded, row_scaled) in [
        ("v1", false, false),
        ("v3", true, false),
        ("v4", true, true),
    ] {
        let w = tiny_model(range_coded, row_scaled)?;
        let model = w.to_bytes()?;
        // Check that it is runnable before it becomes a seed.
        nnzip_core::Model::from_bytes(&model)?;
        // The whole-file targets read a mode byte first (0: header made consistent with the body).
        let mut seed = vec![0u8];
        seed.extend_from_slice(&model);
        for target in ["nnz_reader", "model_from_bytes"] {
            std::fs::create_dir_all(dir.join(target))?;
            std::fs::write(
                dir.join(target)
                    .join(format!("seed-tiny-model-{version}.nnz")),
                &seed,
            )?;
        }
        if !row_scaled {
            // The payload target decodes values without row scales.
            payloads.extend(w.tensors.iter().cloned());
            payloads.push(skewed_sparse(range_coded));
        }
    }
    // Tensor payload seeds: encoding byte, element count, payload.
    std::fs::create_dir_all(dir.join("tensor_payload"))?;
    for (i, t) in payloads.iter().enumerate() {
        let (payload, _) = nnzip_core::format::encode::encode_tensor(t)?;
        let mut seed = vec![t.data.encoding() as u8];
        seed.extend_from_slice(&(t.data.len() as u16).to_le_bytes());
        seed.extend_from_slice(&payload);
        std::fs::write(
            dir.join("tensor_payload").join(format!(
                "seed-{i}-{}-{}.bin",
                t.name,
                t.data.encoding().name()
            )),
            seed,
        )?;
    }
    write_phone_path_seeds(&dir.join("phone_path"))?;
    println!("wrote seeds under {}", dir.display());
    Ok(())
}

/// Seeds of the `phone_path` target: the image model with a PNG and with a JPEG photo, each
/// classified before it becomes a seed.
fn write_phone_path_seeds(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let mut file = vec![0u8]; // mode byte: header made consistent with the body
    file.extend(image_model::image_model_nnz(image_model::recipe()));
    for (name, format) in [
        ("png", image::ImageFormat::Png),
        ("jpeg", image::ImageFormat::Jpeg),
    ] {
        let photo = image_model::solid_image([40, 200, 90], 12, format);
        let seed = phone_path::join(&file, &photo);
        phone_path::classify(&seed).ok_or("the seed does not split")??;
        std::fs::write(dir.join(format!("seed-image-model-{name}.bin")), seed)?;
    }
    Ok(())
}
