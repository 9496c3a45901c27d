//! Checks on a whole graph that no single operator's translation sees.

use crate::error::{NnzError, Result};
use crate::onnx::proto::GraphProto;
use std::collections::HashSet;

/// Refuses a graph with no nodes, no outputs, or an output that nothing produces.
pub fn check_graph(graph: &GraphProto) -> Result<()> {
    if graph.node.is_empty() {
        return Err(NnzError::model(
            "the ONNX graph has no nodes: there is nothing to run",
        ));
    }
    if graph.output.is_empty() {
        return Err(NnzError::model("the ONNX graph declares no output"));
    }
    let produced: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter())
        .chain(graph.input.iter().map(|i| &i.name))
        .chain(graph.initializer.iter().map(|i| &i.name))
        .map(String::as_str)
        .collect();
    for output in &graph.output {
        if !produced.contains(output.name.as_str()) {
            return Err(NnzError::model(format!(
                "graph output '{}' is produced by no node",
                output.name
            )));
        }
    }
    Ok(())
}
