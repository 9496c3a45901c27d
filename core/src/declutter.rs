//! tract's declutter as the loader runs it: every pass of tract's own `Optimizer::declutter`,
//! except its axis-change pass where no operator of the graph asks for a layout change.
//!
//! tract's `ChangeAxes` pass does two things. It moves data layouts where an operator suggests
//! it (`TypedOp::suggested_axis_changes`: on CPUs with tract's channel-last depthwise kernel,
//! aarch64 among them, a depthwise `Conv` asks for its channels last), and it tries to remove
//! every axis of size 1 from the graph and to absorb every reshape, one at a time, each try walking the graph and
//! deep-copying the constant weights it reaches. On the models nnzip loads the second part
//! costs most of the load (EfficientNet-Lite0, batch 1: 217 patches, about three quarters of
//! the declutter time) and changes nothing that runs faster: without it the optimised plan has
//! the same operators (nnzip's kernels take the same convolutions) plus a few axis removals
//! tract leaves as cheap reshapes, and gives the same logits bit for bit (measured with
//! `core/examples/load_passes.rs`, docs/PERFORMANCE.md "Load-to-ready by pass"). So the pass
//! runs only where an operator suggests a layout, which keeps tract's layout choice (and the
//! plan) as it was wherever one is made.

use tract_core::internal::*;
use tract_core::optim::{Optimizer, TypedPass};

/// How tract names its axis-change pass (its `Debug`), the one pass left out.
const AXIS_CHANGE_PASS: &str = "ChangeAxes";

/// Whether `pass` is tract's axis-change pass.
fn is_axis_change_pass(pass: &dyn TypedPass) -> bool {
    format!("{pass:?}") == AXIS_CHANGE_PASS
}

/// Whether an operator of `model` asks tract to move a layout. tract's axis operations
/// (`AxisOp`: reshapes, axis removals and insertions) always suggest absorbing themselves into
/// their neighbours: that is the unit-axis work this module leaves out, not a layout choice.
pub fn suggests_layout_change(model: &TypedModel) -> TractResult<bool> {
    for node in model.nodes() {
        if !node.op_is::<AxisOp>() && !node.op.suggested_axis_changes()?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The declutter passes the loader runs on `model`: tract's own, without its axis-change pass
/// unless an operator of `model` suggests a layout change.
pub fn declutter_for_load(model: &TypedModel) -> TractResult<Optimizer> {
    let mut optimizer = Optimizer::declutter();
    if !suggests_layout_change(model)? {
        optimizer
            .passes
            .retain(|pass| !is_axis_change_pass(pass.as_ref()));
    }
    Ok(optimizer)
}

/// Declutters `model` as the loader does ([`declutter_for_load`]).
pub fn declutter(model: &mut TypedModel) -> TractResult<()> {
    declutter_for_load(model)?.optimize(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tract still names its axis-change pass as this module expects: were it renamed, the
    /// loader would silently run it again.
    #[test]
    fn tracts_declutter_has_the_axis_change_pass() {
        let passes = Optimizer::declutter().passes;
        assert_eq!(
            passes
                .iter()
                .filter(|p| is_axis_change_pass(p.as_ref()))
                .count(),
            1
        );
        let without = declutter_for_load(&TypedModel::default()).unwrap().passes;
        assert_eq!(without.len(), passes.len() - 1);
        assert!(!without.iter().any(|p| is_axis_change_pass(p.as_ref())));
    }
}
