//! A `.nnz` file turned into a runnable model: verify, decode every tensor straight into the
//! buffer tract will own, put it into the graph as a constant, optimise, run.

use crate::classify::{Prediction, top_k};
use crate::error::{NnzError, Result};
use crate::format::{DecodeLimits, NnzReader};
use crate::graph::parse_model_proto;
use crate::metadata::Metadata;
use crate::preprocess;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use tract_hir::internal::InferenceFact;
use tract_hir::ops::konst::Const;
use tract_hir::prelude::*;

/// A decoded, optimised, runnable model. `Send + Sync`: one instance serves many threads, each
/// call runs with its own state.
#[derive(Debug)]
pub struct Model {
    metadata: Metadata,
    file_bytes: u64,
    plan: Arc<TypedSimplePlan>,
}

impl Model {
    /// Verifies and decodes a `.nnz` file held in memory and builds an optimised plan.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        Self::from_bytes_with_limits(bytes, DecodeLimits::default())
    }

    /// As [`Model::from_bytes`], with explicit memory guards.
    pub fn from_bytes_with_limits(bytes: &[u8], limits: DecodeLimits) -> Result<Model> {
        let reader = NnzReader::parse_with_limits(bytes, limits)?;
        let model = build_inference_model(&reader)?;
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| NnzError::model(format!("tract cannot optimise this graph: {e:#}")))?;
        Ok(Model {
            metadata: reader.metadata().clone(),
            file_bytes: bytes.len() as u64,
            plan,
        })
    }

    /// Reads and loads a `.nnz` file.
    pub fn open(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| NnzError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// The file's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Size of the `.nnz` file in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Runs the model on one input tensor and returns its first output.
    pub fn run(&self, input: Tensor) -> Result<Tensor> {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.plan.run(tvec!(input.into_tvalue()))
        }));
        let mut outputs = run
            .map_err(|_| {
                NnzError::model(
                    "inference failed (internal panic in tract): wrong input shape for this model?",
                )
            })?
            .map_err(|e| NnzError::model(format!("inference failed: {e:#}")))?;
        if outputs.is_empty() {
            return Err(NnzError::model("the model produced no output"));
        }
        Ok(outputs.remove(0).into_tensor())
    }

    /// Decodes a JPEG or PNG, preprocesses it as the file says, runs, and returns the top `k`
    /// classes, most probable first.
    pub fn classify(&self, image_bytes: &[u8], top_k: usize) -> Result<Vec<Prediction>> {
        let img = preprocess::decode_image(image_bytes)?;
        self.classify_image(&img, top_k)
    }

    /// Classifies raw RGBA8 pixels (`width × height × 4` bytes), e.g. a camera frame or an
    /// Android `Bitmap`.
    pub fn classify_rgba(
        &self,
        width: u32,
        height: u32,
        rgba: &[u8],
        top_k: usize,
    ) -> Result<Vec<Prediction>> {
        let img = preprocess::rgba_image(width, height, rgba)?;
        self.classify_image(&img, top_k)
    }

    /// Classifies a decoded image.
    pub fn classify_image(&self, img: &image::DynamicImage, k: usize) -> Result<Vec<Prediction>> {
        let pre = self.metadata.preprocessing.as_ref().ok_or_else(|| {
            NnzError::Image("this model file has no image preprocessing in its metadata; repack it with `nnzip pack --preprocess …`".into())
        })?;
        let input = preprocess::image_to_tensor(img, pre)?;
        let expected = &self.metadata.input.shape;
        if expected.len() == input.rank()
            && expected
                .iter()
                .zip(input.shape())
                .any(|(&e, &got)| e > 0 && e as usize != got)
        {
            return Err(NnzError::Image(format!(
                "preprocessing gives shape {:?}, the model takes {:?}: the file's metadata is inconsistent",
                input.shape(),
                expected
            )));
        }
        let logits = self.run(input)?;
        let logits = logits
            .cast_to::<f32>()
            .map_err(|e| NnzError::model(e.to_string()))?;
        let view = logits.try_as_plain_ram().map_err(NnzError::model)?;
        let logits = view.as_slice::<f32>().map_err(NnzError::model)?;
        Ok(top_k(logits, k, &self.metadata.labels))
    }
}

/// Parses the graph with tract and replaces every weight that the graph leaves unresolved by a
/// constant decoded from the file, writing straight into the tensor tract will keep.
fn build_inference_model(reader: &NnzReader<'_>) -> Result<InferenceModel> {
    let proto = parse_model_proto(reader.graph())?;
    let parsed = crate::onnx::onnx()
        .parse(&proto)
        .map_err(|e| NnzError::model(format!("tract cannot read the graph: {e:#}")))?;
    let mut model = parsed.model;
    let unresolved: HashSet<&str> = parsed
        .unresolved_inputs
        .iter()
        .map(|s| s.as_str())
        .collect();
    let mut filled = HashSet::new();
    for view in reader.tensors() {
        if !unresolved.contains(view.name.as_str()) {
            return Err(NnzError::malformed(format!(
                "tensor '{}' is not used by the graph (or is defined twice)",
                view.name
            )));
        }
        let shape: Vec<usize> = view.shape.iter().map(|&d| d as usize).collect();
        let mut tensor = Tensor::zero::<f32>(&shape).map_err(NnzError::model)?;
        {
            let mut plain = tensor.try_as_plain_ram_mut().map_err(NnzError::model)?;
            let out = plain.as_slice_mut::<f32>().map_err(NnzError::model)?;
            view.decode_into(out)?;
        }
        let outlet = *parsed
            .outlets_by_name
            .get(view.name.as_str())
            .ok_or_else(|| {
                NnzError::malformed(format!("tensor '{}' has no place in the graph", view.name))
            })?;
        let node = model.node_mut(outlet.node);
        node.op = Box::new(Const::new(tensor.into_arc_tensor()).map_err(NnzError::model)?);
        let fact = InferenceFact::dt_shape(f32::datum_type(), &shape);
        model
            .set_outlet_fact(outlet, fact)
            .map_err(NnzError::model)?;
        filled.insert(view.name.as_str());
    }
    let missing: Vec<&str> = unresolved.difference(&filled).copied().collect();
    if !missing.is_empty() {
        return Err(NnzError::malformed(format!(
            "the graph needs tensors the file does not hold: {missing:?}"
        )));
    }
    // The weights were sources; only the declared graph inputs stay inputs.
    let inputs: Vec<OutletId> = model
        .input_outlets()
        .map_err(NnzError::model)?
        .iter()
        .copied()
        .filter(|o| !filled.contains(model.node(o.node).name.as_str()))
        .collect();
    model.set_input_outlets(&inputs).map_err(NnzError::model)?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::NnzWriter;
    use crate::metadata::InputSpec;
    use crate::onnx::pb;
    use prost::Message;

    /// A one-node graph `y = op(x)` on a `[1, 4]` float input, packed without weights.
    fn one_node_nnz(op_type: &str) -> Vec<u8> {
        let tensor_type = |name: &str| pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: pb::tensor_proto::DataType::Float as i32,
                    shape: Some(pb::TensorShapeProto {
                        dim: [1, 4]
                            .iter()
                            .map(|&d| pb::tensor_shape_proto::Dimension {
                                value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let proto = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(pb::GraphProto {
                name: "one-node".into(),
                node: vec![pb::NodeProto {
                    name: "the-node".into(),
                    op_type: op_type.into(),
                    input: vec!["x".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                }],
                input: vec![tensor_type("x")],
                output: vec![tensor_type("y")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let metadata = Metadata {
            model_name: "one-node".into(),
            input: InputSpec {
                name: "x".into(),
                shape: vec![1, 4],
            },
            ..Default::default()
        };
        NnzWriter::new(metadata, proto.encode_to_vec())
            .to_bytes()
            .unwrap()
    }

    #[test]
    fn a_supported_operator_runs() {
        let model = Model::from_bytes(&one_node_nnz("Relu")).unwrap();
        let x = Tensor::from_shape(&[1, 4], &[-1f32, 0.5, -2., 3.]).unwrap();
        let y = model.run(x).unwrap();
        assert_eq!(
            y.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
            &[0., 0.5, 0., 3.]
        );
    }

    #[test]
    fn an_unsupported_operator_is_named() {
        let err = Model::from_bytes(&one_node_nnz("Erf"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "ONNX operator Erf (node 'the-node') is not supported by this build of nnzip"
            ),
            "{err}"
        );
        assert!(err.contains("Conv") && err.contains("Softmax"), "{err}");
    }
}
