//! The table from ONNX operator name to the function that wires it into tract, one module per
//! operator family.

mod elementwise;
mod layout;
mod linear;
mod lrn;
mod normalization;
mod spatial;
mod variadic;

use super::Graph;
use super::node::Node;
use crate::error::{NnzError, Result};
use tract_core::internal::*;

/// Wires one node and returns its outputs, in the node's output order.
pub(crate) type Translate = fn(&mut Graph, &Node) -> Result<TVec<OutletId>>;

/// Every operator the reader translates (default domain only), sorted by name; the names are
/// [`crate::onnx::SUPPORTED_OPERATORS`], which a test keeps equal.
pub(crate) const TRANSLATIONS: &[(&str, Translate)] = &[
    ("Add", elementwise::add),
    ("AveragePool", spatial::average_pool),
    ("BatchNormalization", normalization::batch_normalization),
    ("Cast", layout::cast),
    ("Clip", elementwise::clip),
    ("Concat", layout::concat),
    ("Constant", layout::constant),
    ("Conv", spatial::conv),
    ("Div", elementwise::div),
    ("Dropout", elementwise::dropout),
    ("Flatten", layout::flatten),
    ("Gather", layout::gather),
    ("Gemm", linear::gemm),
    ("GlobalAveragePool", spatial::global_average_pool),
    ("HardSigmoid", elementwise::hard_sigmoid),
    ("HardSwish", elementwise::hard_swish),
    ("Identity", elementwise::identity),
    ("LRN", lrn::lrn),
    ("LogSoftmax", normalization::log_softmax),
    ("MatMul", linear::matmul),
    ("MaxPool", spatial::max_pool),
    ("Mul", elementwise::mul),
    ("Pad", layout::pad),
    ("ReduceMean", normalization::reduce_mean),
    ("Relu", elementwise::relu),
    ("Reshape", layout::reshape),
    ("Shape", layout::shape),
    ("Sigmoid", elementwise::sigmoid),
    ("Softmax", normalization::softmax),
    ("Squeeze", layout::squeeze),
    ("Sub", elementwise::sub),
    ("Sum", variadic::sum),
    ("Transpose", layout::transpose),
    ("Unsqueeze", layout::unsqueeze),
];

/// The translation of `node`'s operator, or an error naming it and saying what to do.
pub(crate) fn translation(node: &Node) -> Result<Translate> {
    let op = &node.proto.op_type;
    let domain = node.proto.domain.as_str();
    if !(domain.is_empty() || domain == "ai.onnx") {
        return Err(NnzError::model(format!(
            "ONNX operator {op} of domain '{domain}' (node '{}') is not supported: nnzip runs only \
             the standard ONNX operators (empty or 'ai.onnx' domain); export the model without custom operators",
            node.name
        )));
    }
    TRANSLATIONS
        .binary_search_by(|(name, _)| name.cmp(&op.as_str()))
        .map(|i| TRANSLATIONS[i].1)
        .map_err(|_| {
            NnzError::model(format!(
                "ONNX operator {op} (node '{}') is not supported by this build of nnzip: \
                 its phone runtime supports only {}; export the model with these operators, \
                 or ask for {op} to be added",
                node.name,
                crate::onnx::SUPPORTED_OPERATORS.join(", ")
            ))
        })
}

/// The one output of a single-output translation.
pub(super) fn one(outlet: OutletId) -> Result<TVec<OutletId>> {
    Ok(tvec!(outlet))
}

/// Makes `wires` the same rank by adding leading unit axes (numpy broadcasting's first step).
pub(super) fn same_rank(
    graph: &mut Graph,
    node: &Node,
    wires: &[OutletId],
) -> Result<TVec<OutletId>> {
    let ranks = wires
        .iter()
        .map(|w| graph.model.outlet_fact(*w).map(|f| f.rank()))
        .collect::<TractResult<TVec<usize>>>()
        .map_err(|e| node.tract(e))?;
    let top = ranks.iter().copied().max().unwrap_or(0);
    let mut out = tvec!();
    for (i, (&wire, &rank)) in wires.iter().zip(&ranks).enumerate() {
        let mut wire = wire;
        for k in rank..top {
            wire = graph.wire1(node, &format!("rank{i}.{k}"), AxisOp::Add(0), &[wire])?;
        }
        out.push(wire);
    }
    Ok(out)
}

/// Wires an element-wise binary op with numpy broadcasting.
pub(super) fn broadcast(
    graph: &mut Graph,
    node: &Node,
    suffix: &str,
    op: impl Into<Box<dyn TypedOp>>,
    a: OutletId,
    b: OutletId,
) -> Result<OutletId> {
    let wires = same_rank(graph, node, &[a, b])?;
    graph.wire1(node, suffix, op, &wires)
}
