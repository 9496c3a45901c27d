//! Telling from a translated graph whether its output is logits or already probabilities, so
//! that a graph ending in Softmax is not softmaxed a second time. Nothing is stored in the file:
//! the graph says it, in any `.nnz` ever written.

use crate::classify::OutputKind;
use tract_core::internal::*;
use tract_core::ops::nn::{Softmax, SoftmaxKind};

/// The kind of the model's first output: probabilities when the node producing it is a Softmax
/// (LogSoftmax: log-probabilities) over each sample's whole output, possibly followed by
/// reshapes (Reshape, Flatten, Squeeze, Unsqueeze; Identity and inference-mode Dropout wire no
/// node); logits otherwise.
pub(crate) fn output_kind(model: &TypedModel) -> OutputKind {
    let Some(&first) = model.output_outlets().ok().and_then(|o| o.first()) else {
        return OutputKind::Logits;
    };
    let mut outlet = first;
    // Each step moves to an earlier node: a graph is acyclic, so this ends.
    loop {
        let node = model.node(outlet.node);
        if node.op_as::<AxisOp>().is_some()
            && let Some(&input) = node.inputs.first()
        {
            outlet = input;
            continue;
        }
        let Some(softmax) = node.op_as::<Softmax>() else {
            return OutputKind::Logits;
        };
        let Some(fact) = node.inputs.first().and_then(|i| model.outlet_fact(*i).ok()) else {
            return OutputKind::Logits;
        };
        if !normalises_each_sample(&fact.shape, &softmax.axes) {
            return OutputKind::Logits;
        }
        return match softmax.kind {
            SoftmaxKind::Softmax => OutputKind::Probabilities,
            SoftmaxKind::LogSoftmax => OutputKind::LogProbabilities,
        };
    }
}

/// Whether a softmax over `axes` of a tensor of `shape` normalises each sample's values
/// together: every axis left out is the batch axis (the first, of a tensor of rank 2 or more)
/// or of size 1, and the batch axis is normalised only when it is 1.
fn normalises_each_sample(shape: &ShapeFact, axes: &[usize]) -> bool {
    let rank = shape.rank();
    let is_one = |d: &TDim| d.to_i64().is_ok_and(|v| v == 1);
    shape.iter().enumerate().all(|(axis, dim)| {
        let batch = axis == 0 && rank >= 2;
        match (axes.contains(&axis), batch) {
            (true, true) => is_one(dim),
            (true, false) => true,
            (false, true) => true,
            (false, false) => is_one(dim),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(dims: &[i64]) -> ShapeFact {
        ShapeFact::from_dims(dims.iter().map(|&d| TDim::Val(d)))
    }

    #[test]
    fn a_softmax_over_the_classes_of_each_sample_gives_probabilities() {
        assert!(normalises_each_sample(&shape(&[1, 1000]), &[1]));
        assert!(normalises_each_sample(&shape(&[8, 1000]), &[1]));
        assert!(normalises_each_sample(&shape(&[1000]), &[0]));
        assert!(normalises_each_sample(&shape(&[1, 1000, 1, 1]), &[1]));
        assert!(normalises_each_sample(&shape(&[1, 1000]), &[0, 1]));
    }

    #[test]
    fn a_softmax_over_part_of_a_sample_or_across_the_batch_does_not() {
        assert!(!normalises_each_sample(&shape(&[1, 10, 100]), &[2]));
        assert!(!normalises_each_sample(&shape(&[8, 1000]), &[0]));
        assert!(!normalises_each_sample(&shape(&[8, 1000]), &[0, 1]));
        let symbols = SymbolScope::default();
        let n = symbols.sym("N");
        let batched = ShapeFact::from_dims([TDim::Sym(n), TDim::Val(1000)]);
        assert!(normalises_each_sample(&batched, &[1]));
        assert!(!normalises_each_sample(&batched, &[0, 1]));
    }
}
