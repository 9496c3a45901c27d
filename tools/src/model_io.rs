//! Running a model on named tensors read from files, as `nnzip run` does: the model's inputs and
//! outputs by name (from its ONNX graph), tensor files in and out (ONNX `TensorProto` `.pb`, as
//! ONNX's backend tests store them, or NumPy `.npy`), and checks that name what does not fit.

use anyhow::{Context, Result, bail};
use nnzip_core::onnx::proto::{GraphProto, tensor_shape_proto, type_proto};
use nnzip_core::{Model, Tensor};
use prost::Message;
use std::collections::HashSet;
use std::path::Path;

/// A graph input as the ONNX graph declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputPort {
    /// The input's name.
    pub name: String,
    /// ONNX element type code (`TensorProto.DataType`).
    pub elem_type: i32,
    /// Declared sizes; `None` for a named or unknown dimension.
    pub dims: Vec<Option<i64>>,
}

/// What a model takes and gives, in the order the runtime runs them.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPorts {
    /// The graph's inputs that are not weights.
    pub inputs: Vec<InputPort>,
    /// The graph's output names.
    pub outputs: Vec<String>,
}

/// A model ready to run by name: ONNX bytes are packed losslessly in memory first.
pub struct NamedModel {
    /// The loaded model.
    pub model: Model,
    /// Its inputs and outputs.
    pub ports: ModelPorts,
}

impl NamedModel {
    /// Loads `.nnz` or ONNX bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<NamedModel> {
        let nnz = if bytes.starts_with(&nnzip_core::format::MAGIC) {
            bytes.to_vec()
        } else {
            crate::packing::pack_onnx(bytes, &Default::default())
                .context("not a .nnz file, and not loadable as ONNX")?
                .to_bytes()?
        };
        let model = Model::from_bytes(&nnz)?;
        let reader = nnzip_core::format::NnzReader::parse(&nnz)?;
        let proto = nnzip_core::graph::parse_model_proto(reader.graph())?;
        let graph = proto.graph.context("the model has no graph")?;
        Ok(NamedModel {
            model,
            ports: model_ports(&graph)?,
        })
    }

    /// Runs the model on `given` inputs, each named once, and returns every output with its
    /// name, in the graph's output order.
    pub fn run(&self, given: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>> {
        let inputs = order_inputs(&self.ports, given)?;
        let outputs = self.model.run_all(inputs)?;
        if outputs.len() != self.ports.outputs.len() {
            bail!(
                "the model gave {} outputs, its graph declares {}",
                outputs.len(),
                self.ports.outputs.len()
            );
        }
        Ok(self.ports.outputs.iter().cloned().zip(outputs).collect())
    }
}

/// The graph's inputs (less its initializers) and outputs.
pub fn model_ports(graph: &GraphProto) -> Result<ModelPorts> {
    let weights: HashSet<&str> = graph.initializer.iter().map(|i| i.name.as_str()).collect();
    let inputs = graph
        .input
        .iter()
        .filter(|i| !weights.contains(i.name.as_str()))
        .map(|i| {
            let Some(type_proto::Value::TensorType(t)) =
                i.r#type.as_ref().and_then(|t| t.value.as_ref())
            else {
                bail!("graph input '{}' is not a tensor", i.name);
            };
            let dims = t.shape.as_ref().map_or_else(Vec::new, |s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(tensor_shape_proto::dimension::Value::DimValue(v)) => Some(v),
                        _ => None,
                    })
                    .collect()
            });
            Ok(InputPort {
                name: i.name.clone(),
                elem_type: t.elem_type,
                dims,
            })
        })
        .collect::<Result<_>>()?;
    let outputs = graph.output.iter().map(|o| o.name.clone()).collect();
    Ok(ModelPorts { inputs, outputs })
}

/// Puts the named inputs in the model's order, checking names, element types and shapes.
pub fn order_inputs(ports: &ModelPorts, given: Vec<(String, Tensor)>) -> Result<Vec<Tensor>> {
    let names = || {
        ports
            .inputs
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut slots: Vec<Option<Tensor>> = vec![None; ports.inputs.len()];
    for (name, tensor) in given {
        let Some(k) = ports.inputs.iter().position(|p| p.name == name) else {
            bail!(
                "the model has no input '{name}'; its inputs are: {}",
                names()
            );
        };
        if slots[k].is_some() {
            bail!("input '{name}' is given twice");
        }
        check_input(&ports.inputs[k], &tensor)?;
        slots[k] = Some(tensor);
    }
    let missing: Vec<&str> = ports
        .inputs
        .iter()
        .zip(&slots)
        .filter(|(_, s)| s.is_none())
        .map(|(p, _)| p.name.as_str())
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing input(s) {}: give each as --input NAME=FILE",
            missing.join(", ")
        );
    }
    Ok(slots.into_iter().flatten().collect())
}

fn check_input(port: &InputPort, tensor: &Tensor) -> Result<()> {
    let wanted = nnzip_core::onnx::datum_type(port.elem_type)
        .with_context(|| format!("input '{}'", port.name))?;
    if tensor.datum_type() != wanted {
        bail!(
            "input '{}' takes {wanted:?} elements, the file holds {:?}",
            port.name,
            tensor.datum_type()
        );
    }
    let fits = port.dims.len() == tensor.rank()
        && port
            .dims
            .iter()
            .zip(tensor.shape())
            .all(|(d, &got)| d.is_none_or(|d| d == got as i64));
    if !fits {
        let declared: Vec<String> = port
            .dims
            .iter()
            .map(|d| d.map_or_else(|| "?".to_string(), |d| d.to_string()))
            .collect();
        bail!(
            "input '{}' has shape [{}], the file holds {:?}",
            port.name,
            declared.join(", "),
            tensor.shape()
        );
    }
    Ok(())
}

/// Reads a tensor file: ONNX `TensorProto` (`.pb`, any other extension too) or NumPy `.npy`.
pub fn read_tensor_file(path: &Path) -> Result<Tensor> {
    let bytes = crate::fsutil::read(path)?;
    let what = || format!("cannot read a tensor from {}", path.display());
    if bytes.starts_with(crate::npy::MAGIC) {
        return crate::npy::read(&bytes).with_context(what);
    }
    let proto = nnzip_core::onnx::proto::TensorProto::decode(bytes.as_slice())
        .context("not an ONNX TensorProto (.pb) nor a NumPy .npy file")
        .with_context(what)?;
    nnzip_core::onnx::tensor_from_proto(&proto).with_context(what)
}

/// Writes `tensor` as an ONNX `TensorProto` file named `name` inside.
pub fn write_tensor_file(path: &Path, name: &str, tensor: &Tensor) -> Result<()> {
    let proto = nnzip_core::onnx::tensor_to_proto(name, tensor)?;
    crate::fsutil::write_atomic(path, &proto.encode_to_vec())
}

/// A file name for an output: its name with path separators and other awkward characters
/// replaced, and `.pb`.
pub fn output_file_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.');
    format!("{}.pb", if safe.is_empty() { "output" } else { safe })
}
