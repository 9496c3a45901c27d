//! A tiny image classifier as a `.nnz` file, for the phone-path tests and fuzz seeds:
//! `logits = Gemm(Flatten(GlobalAveragePool(x)), w, b)`, `x` an 8×8 RGB image in NCHW.

use nnzip_core::format::{NnzWriter, TensorData, TensorRecord};
use nnzip_core::metadata::{
    ColorOrder, InputSpec, Interpolation, Layout, Metadata, Preprocessing, Resize,
};
use prost::Message;
use tract_onnx::pb;

/// Side of the model's square input.
pub const SIDE: i64 = 8;

fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

fn graph() -> Vec<u8> {
    let mut gemm = node("Gemm", &["flat", "w", "b"], "logits");
    gemm.attribute.push(pb::AttributeProto {
        name: "transB".into(),
        i: 1,
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        ..Default::default()
    });
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: "image".into(),
            node: vec![
                node("GlobalAveragePool", &["x"], "pooled"),
                node("Flatten", &["pooled"], "flat"),
                gemm,
            ],
            input: vec![value_info("x", &[1, 3, SIDE, SIDE])],
            output: vec![value_info("logits", &[1, 3])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The recipe of the model: any image resized to 8×8, RGB, `pixel / 255`.
pub fn recipe() -> Preprocessing {
    Preprocessing {
        resize: Resize::Exact {
            width: SIDE as u32,
            height: SIDE as u32,
        },
        crop: None,
        interpolation: Interpolation::Bilinear,
        color: ColorOrder::Rgb,
        layout: Layout::Nchw,
        pixel_scale: 1.0 / 255.0,
        mean: vec![0.0],
        std: vec![1.0],
        invert: false,
    }
}

/// The model as a file, with `recipe` as its preprocessing: class `k` scores channel `k`.
pub fn image_model_nnz(recipe: Preprocessing) -> Vec<u8> {
    let metadata = Metadata {
        model_name: "image".into(),
        input: InputSpec {
            name: "x".into(),
            shape: vec![1, 3, SIDE, SIDE],
        },
        preprocessing: Some(recipe),
        labels: vec!["red".into(), "green".into(), "blue".into()],
        ..Default::default()
    };
    let mut w = NnzWriter::new(metadata, graph());
    w.push(TensorRecord {
        row_scales: None,
        name: "w".into(),
        shape: vec![3, 3],
        data: TensorData::SharedDense {
            codebook: vec![0.0, 10.0],
            indices: vec![1, 0, 0, 0, 1, 0, 0, 0, 1],
            index_bits: 1,
        },
    })
    .expect("a valid tensor");
    w.push(TensorRecord {
        row_scales: None,
        name: "b".into(),
        shape: vec![3],
        data: TensorData::RawF32(vec![0.0; 3]),
    })
    .expect("a valid tensor");
    w.to_bytes().expect("a valid file")
}

/// A `side × side` image of one colour, encoded as PNG or JPEG.
pub fn solid_image(rgb: [u8; 3], side: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(side, side, image::Rgb(rgb));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encodable");
    out.into_inner()
}
