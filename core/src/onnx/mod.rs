//! ONNX in nnzip: the protobuf messages (shared with the tools, available without the runtime)
//! and, with the runtime, the reader that translates a graph into tract.

pub mod proto;
#[cfg(feature = "runtime")]
mod reader;

#[cfg(feature = "runtime")]
pub use reader::typed_model_from_onnx;

/// Reads an ONNX `TensorProto` (an initializer, or a tensor file as ONNX's backend tests store
/// their inputs and outputs) into a tensor, checking that its data matches its dims.
#[cfg(feature = "runtime")]
pub fn tensor_from_proto(t: &proto::TensorProto) -> crate::Result<tract_core::prelude::Tensor> {
    reader::tensor_from_proto(t)
}

/// tract's element type for an ONNX element type code (`TensorProto.DataType`), for the types
/// nnzip reads; an error names any other.
#[cfg(feature = "runtime")]
pub fn datum_type(code: i32) -> crate::Result<tract_core::prelude::DatumType> {
    reader::datum_type(code)
}

/// Writes a tensor as an ONNX `TensorProto` named `name` (values in `raw_data`), the format
/// ONNX's backend tests and `onnx.numpy_helper` read.
#[cfg(feature = "runtime")]
pub fn tensor_to_proto(
    name: &str,
    t: &tract_core::prelude::Tensor,
) -> crate::Result<proto::TensorProto> {
    reader::tensor_to_proto(name, t)
}

/// The ONNX operators (default domain) the phone runtime runs, sorted. The tools' training
/// interpreter accepts the same list (a test in nnzip-tools holds them together).
pub const SUPPORTED_OPERATORS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "Div",
    "Dropout",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LRN",
    "LogSoftmax",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pad",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Softmax",
    "Squeeze",
    "Sub",
    "Sum",
    "Transpose",
    "Unsqueeze",
];

/// Checks that the runtime can load this model: every operator supported and well-formed,
/// every value produced, shapes consistent. `weights` are initializers held outside the graph
/// (a `.nnz` file's tensors); the graph's own initializers are read too. The tools call it on
/// the graphs they write, so that a model the phone would refuse is refused before packing.
#[cfg(feature = "runtime")]
pub fn check_model(
    proto: &proto::ModelProto,
    weights: &[crate::graph::Weight],
) -> crate::Result<()> {
    let tensors = weights
        .iter()
        .map(|w| {
            let shape: Vec<usize> = w.shape.iter().map(|&d| d as usize).collect();
            tract_core::prelude::Tensor::from_shape(&shape, &w.values)
                .map(|t| (w.name.clone(), t))
                .map_err(|e| crate::NnzError::model(format!("weight '{}': {e}", w.name)))
        })
        .collect::<crate::Result<Vec<_>>>()?;
    check_all_used(proto, weights.iter().map(|w| w.name.as_str()))?;
    typed_model_from_onnx(proto, tensors, None).map(|_| ())
}

/// Refuses a file tensor the graph never reads (a sign of a graph and weights that do not
/// belong together). Read from the ONNX graph: tract folds small constants as it builds.
#[cfg(feature = "runtime")]
pub(crate) fn check_all_used<'a>(
    proto: &proto::ModelProto,
    names: impl IntoIterator<Item = &'a str>,
) -> crate::Result<()> {
    let read: std::collections::HashSet<&str> = proto
        .graph
        .iter()
        .flat_map(|g| {
            g.node
                .iter()
                .flat_map(|n| n.input.iter())
                .chain(g.output.iter().map(|o| &o.name))
        })
        .map(String::as_str)
        .collect();
    for name in names {
        if !read.contains(name) {
            return Err(crate::NnzError::malformed(format!(
                "tensor '{name}' is not used by the graph"
            )));
        }
    }
    Ok(())
}

#[cfg(all(test, feature = "runtime"))]
mod tests {
    /// The reader's table and the published list name the same operators.
    #[test]
    fn the_operator_list_is_the_reader_table() {
        let table: Vec<&str> = super::reader::ops::TRANSLATIONS
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(table, super::SUPPORTED_OPERATORS);
        assert!(
            table.windows(2).all(|w| w[0] < w[1]),
            "sorted, for the binary search"
        );
    }
}
