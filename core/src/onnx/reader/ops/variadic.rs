//! Operators over any number of inputs: Sum (ResNet's and ShuffleNet's residual additions in
//! Caffe2 exports).

use super::{broadcast, one};
use crate::error::Result;
use crate::onnx::reader::Graph;
use crate::onnx::reader::node::Node;
use tract_core::internal::*;
use tract_core::ops::math;

/// The element-wise sum of every input, with numpy broadcasting (operator set 8 on; earlier
/// sets require equal shapes, which broadcasting accepts as well).
pub(super) fn sum(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let count = node.inputs.len();
    if count == 0 {
        return Err(node.error("it has no input; Sum needs at least one"));
    }
    let mut acc = node.input(0)?;
    for slot in 1..count {
        let next = node.input(slot)?;
        acc = broadcast(graph, node, &format!("add{slot}"), math::add(), acc, next)?;
    }
    one(acc)
}
