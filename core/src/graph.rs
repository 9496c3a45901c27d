//! ONNX graph surgery: split a model into its graph and its float weights (to pack), and put
//! decoded weights back into a graph (to decompress into a plain ONNX file).
//!
//! Only float32 initializers are taken out: they are the weights worth compressing. Integer
//! initializers (shapes for `Reshape`, axes, …) are tiny and stay in the graph.

use crate::error::{NnzError, Result};
use crate::metadata::InputSpec;
use crate::onnx::proto as pb;
use pb::tensor_proto::DataType;
use prost::Message;

/// A float32 ONNX initializer, taken out of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Weight {
    /// Initializer name.
    pub name: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

/// An ONNX model split into a weightless graph and its weights.
#[derive(Debug, Clone)]
pub struct SplitModel {
    /// The `ModelProto` without the float initializers, serialized.
    pub graph: Vec<u8>,
    /// The float initializers, in graph order.
    pub weights: Vec<Weight>,
    /// The first graph input that is not an initializer.
    pub input: InputSpec,
    /// Name of the first graph output.
    pub output_name: String,
    /// Name of the graph (or the producer's), for the metadata.
    pub graph_name: String,
}

/// Parses ONNX bytes into a `ModelProto`, with an error that says what to check.
pub fn parse_model_proto(onnx: &[u8]) -> Result<pb::ModelProto> {
    pb::ModelProto::decode(onnx).map_err(|e| {
        NnzError::model(format!(
            "not a valid ONNX protobuf ({e}); is this an ONNX file?"
        ))
    })
}

/// Reads a floating-point tensor's values (float32, or float64 narrowed to f32) from
/// `raw_data` or the typed field, after checking that their number matches the dims. The one
/// reader of float initializers for the core and the tools.
pub fn initializer_values(t: &pb::TensorProto) -> Result<Vec<f32>> {
    let n = element_count(&t.dims).ok_or_else(|| {
        NnzError::model(format!(
            "initializer '{}' has a negative or overflowing shape {:?}",
            t.name, t.dims
        ))
    })?;
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
        || !t.external_data.is_empty()
    {
        return Err(NnzError::model(format!(
            "initializer '{}' stores its data in an external file; re-export the model with the weights inside the .onnx",
            t.name
        )));
    }
    let data_type = DataType::try_from(t.data_type).unwrap_or(DataType::Undefined);
    let (width, typed_len) = match data_type {
        DataType::Float => (4, t.float_data.len()),
        DataType::Double => (8, t.double_data.len()),
        other => {
            return Err(NnzError::model(format!(
                "initializer '{}' has element type {other:?}, expected FLOAT",
                t.name
            )));
        }
    };
    let (found, what) = if t.raw_data.is_empty() {
        (typed_len as u64, "values")
    } else {
        (t.raw_data.len() as u64, "raw_data bytes")
    };
    let needed = if t.raw_data.is_empty() {
        n
    } else {
        n.saturating_mul(width)
    };
    if found != needed {
        return Err(NnzError::model(format!(
            "initializer '{}': {found} {what}, shape {:?} needs {needed}",
            t.name, t.dims
        )));
    }
    let values = match (data_type, t.raw_data.is_empty()) {
        (DataType::Float, false) => t
            .raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        (DataType::Float, true) => t.float_data.clone(),
        (_, false) => t
            .raw_data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        (_, true) => t.double_data.iter().map(|&v| v as f32).collect(),
    };
    Ok(values)
}

fn element_count(dims: &[i64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| {
        u64::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// Splits an ONNX model into its weightless graph and its float32 initializers.
pub fn split_onnx(onnx: &[u8]) -> Result<SplitModel> {
    let mut proto = parse_model_proto(onnx)?;
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| NnzError::model("the ONNX model has no graph"))?;
    let mut weights = Vec::new();
    let mut kept = Vec::new();
    for init in std::mem::take(&mut graph.initializer) {
        if init.data_type == DataType::Float as i32 {
            let values = initializer_values(&init)?;
            weights.push(Weight {
                name: init.name.clone(),
                shape: init.dims.iter().map(|&d| d as u64).collect(),
                values,
            });
        } else {
            kept.push(init);
        }
    }
    graph.initializer = kept;
    // Old exporters also list initializers as graph inputs; the weights are not inputs any more.
    let is_weight = |name: &str| weights.iter().any(|w| w.name == name);
    graph.input.retain(|i| !is_weight(&i.name));
    let initializer_names: Vec<&str> = graph.initializer.iter().map(|i| i.name.as_str()).collect();
    let input = graph
        .input
        .iter()
        .find(|i| !initializer_names.contains(&i.name.as_str()))
        .ok_or_else(|| NnzError::model("the ONNX graph has no input"))?;
    let input = InputSpec {
        name: input.name.clone(),
        shape: value_info_shape(input),
    };
    let output_name = graph
        .output
        .first()
        .map(|o| o.name.clone())
        .ok_or_else(|| NnzError::model("the ONNX graph has no output"))?;
    let graph_name = graph.name.clone();
    Ok(SplitModel {
        graph: proto.encode_to_vec(),
        weights,
        input,
        output_name,
        graph_name,
    })
}

/// Shape of a graph input, `-1` for symbolic or unknown dimensions.
fn value_info_shape(info: &pb::ValueInfoProto) -> Vec<i64> {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as TypeValue;
    let Some(TypeValue::TensorType(t)) = info.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Vec::new();
    };
    let Some(shape) = &t.shape else {
        return Vec::new();
    };
    shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(Value::DimValue(v)) if v > 0 => v,
            _ => -1,
        })
        .collect()
}

/// Puts weights back into a weightless graph as float32 initializers (raw data) and returns the
/// serialized ONNX model.
pub fn merge_onnx(graph: &[u8], weights: impl IntoIterator<Item = Weight>) -> Result<Vec<u8>> {
    let mut proto = parse_model_proto(graph)?;
    let g = proto
        .graph
        .as_mut()
        .ok_or_else(|| NnzError::model("the ONNX model has no graph"))?;
    for w in weights {
        let mut raw = Vec::with_capacity(w.values.len() * 4);
        for v in &w.values {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        g.initializer.push(pb::TensorProto {
            name: w.name,
            dims: w.shape.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: raw,
            ..Default::default()
        });
    }
    Ok(proto.encode_to_vec())
}
