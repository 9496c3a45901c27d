//! Reading, writing and building ONNX protobuf messages (`nnzip_core::onnx::proto`, decoded with prost).

use anyhow::{Context, Result, bail};
use nnzip_core::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto,
    type_proto,
};
use prost::Message;
use std::path::Path;

/// ONNX opset that models written by nnzip declare.
pub const OPSET: i64 = 13;

/// Reads and decodes an ONNX file.
pub fn read_model(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read ONNX model {}: check the path", path.display()))?;
    ModelProto::decode(bytes.as_slice()).with_context(|| {
        format!(
            "{} is not a valid ONNX file (protobuf decoding failed); export the model again",
            path.display()
        )
    })
}

/// Encodes and writes an ONNX file.
pub fn write_model(model: &ModelProto, path: &Path) -> Result<()> {
    std::fs::write(path, model.encode_to_vec())
        .with_context(|| format!("cannot write ONNX model to {}", path.display()))
}

/// The default-domain opset version a model declares (1 when it declares none).
pub fn opset_version(model: &ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(1)
}

/// Element type of a tensor proto, `Undefined` for unknown codes.
pub fn data_type(t: &TensorProto) -> DataType {
    DataType::try_from(t.data_type).unwrap_or(DataType::Undefined)
}

/// Dimensions of a tensor proto as `usize`.
pub fn dims(t: &TensorProto) -> Vec<usize> {
    t.dims.iter().map(|&d| d.max(0) as usize).collect()
}

/// The values of a floating-point tensor proto (float32 or float64), as `f32`: the core's reader.
pub fn float_values(t: &TensorProto) -> Result<Vec<f32>> {
    Ok(nnzip_core::graph::initializer_values(t)?)
}

/// The values of an integer tensor proto (int64, int32, uint8, int8 or bool), as `i64`.
pub fn int_values(t: &TensorProto) -> Result<Vec<i64>> {
    let raw = &t.raw_data;
    let values: Vec<i64> = match data_type(t) {
        DataType::Int64 if !raw.is_empty() => raw
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        DataType::Int64 => t.int64_data.clone(),
        DataType::Int32 if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
            .collect(),
        DataType::Int32 | DataType::Int8 | DataType::Uint8 | DataType::Bool if raw.is_empty() => {
            t.int32_data.iter().map(|&v| v as i64).collect()
        }
        DataType::Int8 => raw.iter().map(|&b| b as i8 as i64).collect(),
        DataType::Uint8 | DataType::Bool => raw.iter().map(|&b| b as i64).collect(),
        other => bail!(
            "tensor '{}' has element type {other:?}, expected an integer type",
            t.name
        ),
    };
    Ok(values)
}

/// A float32 tensor proto with the data stored as little-endian raw bytes.
pub fn float_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    assert_eq!(
        dims.iter().product::<usize>(),
        values.len(),
        "tensor '{name}': shape and data disagree"
    );
    TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An int64 tensor proto with the data stored as little-endian raw bytes.
pub fn int_tensor(name: &str, dims: &[usize], values: &[i64]) -> TensorProto {
    assert_eq!(
        dims.iter().product::<usize>(),
        values.len(),
        "tensor '{name}': shape and data disagree"
    );
    TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Int64 as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// Finds a node's attribute by name.
pub fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// An integer attribute, or `default`.
pub fn attr_int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attribute(node, name).map(|a| a.i).unwrap_or(default)
}

/// A float attribute, or `default`.
pub fn attr_float(node: &NodeProto, name: &str, default: f32) -> f32 {
    attribute(node, name).map(|a| a.f).unwrap_or(default)
}

/// An integer-list attribute, if present.
pub fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attribute(node, name).map(|a| a.ints.clone())
}

/// A string attribute, or `default`.
pub fn attr_string(node: &NodeProto, name: &str, default: &str) -> String {
    attribute(node, name)
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
        .unwrap_or_else(|| default.to_string())
}

/// An integer attribute.
pub fn int_attr(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

/// A float attribute.
pub fn float_attr(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: value,
        ..Default::default()
    }
}

/// An integer-list attribute.
pub fn ints_attr(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// A string attribute.
pub fn string_attr(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A tensor attribute (for `Constant`).
pub fn tensor_attr(name: &str, value: TensorProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Tensor as i32,
        t: Some(value),
        ..Default::default()
    }
}

/// A node with the given op type, inputs, outputs and attributes.
pub fn node(
    op_type: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: op_type.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attributes,
        ..Default::default()
    }
}

/// A float32 value-info; `None` dimensions are symbolic (named `N`).
pub fn float_value_info(name: &str, shape: &[Option<usize>]) -> ValueInfoProto {
    let dims: Vec<i64> = shape.iter().map(|d| d.map_or(-1, |v| v as i64)).collect();
    ValueInfoProto::float(name, &dims)
}

/// Declared shape of a value-info (`None` for symbolic or missing dimensions), if it has one.
pub fn value_info_shape(info: &ValueInfoProto) -> Option<Vec<Option<usize>>> {
    let Some(TypeProto {
        value: Some(type_proto::Value::TensorType(t)),
        ..
    }) = &info.r#type
    else {
        return None;
    };
    let shape = t.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => {
                    Some(v as usize)
                }
                _ => None,
            })
            .collect(),
    )
}

/// A model around a graph, declaring the default-domain opset [`OPSET`].
pub fn model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: 7,
        producer_name: "nnzip".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        graph: Some(graph),
        ..Default::default()
    }
}
