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
//! `core/examples/load_passes.rs`, docs/PERFORMANCE.md "Load-to-ready by pass"). So the loader
//! runs the pass only where an operator suggests a layout that nnzip's kernels do not make moot
//! ([`layout_change_needed`]: a depthwise convolution nnzip's kernel runs channel-first does not
//! need its channels moved), which keeps tract's layout choice wherever tract's own kernels run.

use tract_core::internal::*;
use tract_core::ops::dummy::Dummy;
use tract_core::ops::konst::Const;
use tract_core::optim::{Optimizer, OptimizerSession, TypedPass};

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
    asks_for_layout_change(model, |_| Ok(false))
}

/// Whether a node of `model` asks tract to move a layout (see [`suggests_layout_change`]),
/// leaving out the nodes `moot` says need no move.
fn asks_for_layout_change(
    model: &TypedModel,
    moot: impl Fn(&TypedNode) -> TractResult<bool>,
) -> TractResult<bool> {
    for node in model.nodes() {
        if !node.op_is::<AxisOp>() && !node.op.suggested_axis_changes()?.is_empty() && !moot(node)?
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether the loader runs tract's axis-change pass on `model` with nnzip's kernels chosen by
/// `kernels`: where an operator asks for a layout change that nnzip's kernels do not make moot.
/// tract asks for channel-last depthwise convolutions on the CPUs where it has such a kernel
/// (aarch64); where nnzip's depthwise kernel takes the convolution as it is (channel-first),
/// moving it would only keep nnzip's channel-first pointwise kernels and the fused
/// expansion+depthwise operator off the graph, so the phone would run tract's matrix products
/// instead of the kernels x86_64 runs.
pub fn layout_change_needed(
    model: &TypedModel,
    kernels: &crate::kernels::KernelChoice,
) -> TractResult<bool> {
    asks_for_layout_change(model, |node| {
        crate::kernels::nnzip_runs_depthwise(model, node, kernels)
    })
}

/// The declutter passes the loader runs on `model`: [`FoldConstReshapes`], then tract's own,
/// without its axis-change pass unless an operator of `model` suggests a layout change.
pub fn declutter_for_load(model: &TypedModel) -> TractResult<Optimizer> {
    passes_for_load(suggests_layout_change(model)?)
}

/// The declutter passes the loader runs on `model` with nnzip's kernels chosen by `kernels`:
/// [`FoldConstReshapes`], then tract's own, without its axis-change pass unless
/// [`layout_change_needed`].
pub fn declutter_for_load_with(
    model: &TypedModel,
    kernels: &crate::kernels::KernelChoice,
) -> TractResult<Optimizer> {
    passes_for_load(layout_change_needed(model, kernels)?)
}

fn passes_for_load(axis_changes: bool) -> TractResult<Optimizer> {
    let mut optimizer = Optimizer::declutter();
    if !axis_changes {
        optimizer
            .passes
            .retain(|pass| !is_axis_change_pass(pass.as_ref()));
    }
    optimizer.add_pass(0, Box::new(FoldConstReshapes));
    Ok(optimizer)
}

/// Folds an axis insertion, removal or reshape (`AxisOp` other than `Move`) whose input is a
/// constant read by it alone into that constant, in place, without copying the weights.
///
/// tract's per-operator declutter puts such ops on weights (a 1×1 `Conv` becomes an `EinSum`
/// of its kernel with the unit axes removed, for one). tract's `PropConst` would fold them in
/// the next round by evaluating the op on the constant, and as the constant's tensor is shared
/// (the `Const` op and its output's fact each hold it) that evaluation deep-copies every such
/// weight; in tract's whole declutter its `ChangeAxes` absorbs them first, copying them the
/// same way. Here the tensor is taken out of its only holders and reshaped where it is: a
/// reshape of a plain tensor changes its shape, not its bytes.
#[derive(Clone, Debug, Default)]
pub struct FoldConstReshapes;

impl TypedPass for FoldConstReshapes {
    fn reset(&mut self) -> TractResult<()> {
        Ok(())
    }

    fn next(
        &mut self,
        _session: &mut OptimizerSession,
        _model: &TypedModel,
    ) -> TractResult<Option<TypedModelPatch>> {
        Ok(None)
    }

    fn run_direct(&mut self, model: &mut TypedModel) -> TractResult<bool> {
        let mut changed = false;
        for id in model.eval_order()? {
            changed |= fold_into_constant(model, id)?;
        }
        Ok(changed)
    }
}

/// Folds node `id` into its constant input where [`FoldConstReshapes`] applies; says whether
/// it did. The folded node is left unconnected (tract's next compaction drops it), its readers
/// read the constant.
fn fold_into_constant(model: &mut TypedModel, id: usize) -> TractResult<bool> {
    let node = &model.nodes[id];
    let Some(axis_op) = node.op_as::<AxisOp>() else {
        return Ok(false);
    };
    let [source] = node.inputs[..] else {
        return Ok(false);
    };
    let source_node = &model.nodes[source.node];
    let Some(konst) = source_node.op_as::<Const>() else {
        return Ok(false);
    };
    if matches!(axis_op.canonical().as_ref(), AxisOp::Move(..))
        || konst.exotic_fact().is_some()
        || !konst.val().has_plain_ram_storage()
        || source_node.outputs[source.slot].successors.len() != 1
        || model.outputs.contains(&OutletId::new(id, 0))
    {
        return Ok(false);
    }
    let axis_op = axis_op.clone();
    let tensor = konst.val().clone();
    // Drop the op's and the fact's references, so that the tensor can be taken, not copied.
    let holder = &mut model.nodes[source.node];
    holder.op = Box::new(Dummy);
    holder.outputs[source.slot].fact.konst = None;
    let (tensor, folded) = match Arc::try_unwrap(tensor) {
        Ok(mut tensor) => {
            // On an op the tensor does not fit, nothing is folded: tract's passes meet it as
            // they would have and report it.
            let shape: TVec<usize> = tensor.shape().into();
            let folded = axis_op.change_tensor(&mut tensor, false).is_ok();
            if !folded {
                tensor.set_shape(&shape)?;
            }
            (Arc::new(tensor), folded)
        }
        Err(shared) => (shared, false),
    };
    let konst = Const::new(tensor)?;
    holder.outputs[source.slot].fact = konst.output_facts(&[])?.remove(0);
    holder.op = Box::new(konst);
    if !folded {
        return Ok(false);
    }
    let readers = std::mem::take(&mut model.nodes[id].outputs[0].successors);
    for reader in &readers {
        model.nodes[reader.node].inputs[reader.slot] = source;
    }
    model.nodes[source.node].outputs[source.slot].successors = readers;
    model.nodes[id].inputs.clear();
    Ok(true)
}

/// Declutters `model` as the loader does with `kernels` ([`declutter_for_load_with`]).
pub fn declutter(
    model: &mut TypedModel,
    kernels: &crate::kernels::KernelChoice,
) -> TractResult<()> {
    declutter_for_load_with(model, kernels)?.optimize(model)
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
        // tract's passes less the axis-change one, and the reshape folding.
        let without = declutter_for_load(&TypedModel::default()).unwrap().passes;
        assert_eq!(without.len(), passes.len());
        assert!(!without.iter().any(|p| is_axis_change_pass(p.as_ref())));
    }

    /// A 1×1 kernel `[8, 4, 1, 1]` read through an axis removal, then multiplied with the input
    /// (tract folds constants under 16 values as they are wired: this one is above).
    fn kernel_through_an_axis_removal(shared: bool) -> (TypedModel, *const u8) {
        let mut model = TypedModel::default();
        let input = model.add_source("x", f32::fact([8, 4, 1])).unwrap();
        let kernel = Tensor::from_shape(
            &[8, 4, 1, 1],
            &(0..32).map(|v| v as f32).collect::<Vec<_>>(),
        )
        .unwrap();
        let address = kernel.as_bytes().as_ptr();
        let konst = model.add_const("kernel", kernel).unwrap();
        let squeezed = model.wire_node("squeeze", AxisOp::Rm(3), &[konst]).unwrap()[0];
        let product = model
            .wire_node("mul", tract_core::ops::math::mul(), &[input, squeezed])
            .unwrap()[0];
        let mut outputs = vec![product];
        if shared {
            // A second reader of the constant: it cannot be reshaped where it is.
            let sum = model
                .wire_node("add", tract_core::ops::math::add(), &[konst, konst])
                .unwrap()[0];
            outputs.push(sum);
        }
        model.select_output_outlets(&outputs).unwrap();
        (model, address)
    }

    #[test]
    fn a_reshaped_constant_is_folded_without_copying_its_weights() {
        let (mut model, address) = kernel_through_an_axis_removal(false);
        assert!(FoldConstReshapes.run_direct(&mut model).unwrap());
        model.compact().unwrap();
        assert!(!model.nodes.iter().any(|n| n.op_is::<AxisOp>()));
        let konst = model
            .nodes
            .iter()
            .find_map(|n| n.op_as::<Const>())
            .unwrap()
            .val()
            .clone();
        assert_eq!(konst.shape(), &[8, 4, 1]);
        assert_eq!(
            konst.as_bytes().as_ptr(),
            address,
            "the weights were copied"
        );
        let x = Tensor::from_shape(&[8, 4, 1], &[1f32; 32]).unwrap();
        let y = model.into_runnable().unwrap().run(tvec!(x.into())).unwrap();
        assert_eq!(
            y[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
            (0..32).map(|v| v as f32).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_constant_with_other_readers_is_left_to_tract() {
        let (mut model, _) = kernel_through_an_axis_removal(true);
        assert!(!FoldConstReshapes.run_direct(&mut model).unwrap());
        assert!(model.nodes.iter().any(|n| n.op_is::<AxisOp>()));
        declutter(&mut model, &crate::kernels::KernelChoice::default()).unwrap();
        let x = Tensor::from_shape(&[8, 4, 1], &[2f32; 32]).unwrap();
        let y = model.into_runnable().unwrap().run(tvec!(x.into())).unwrap();
        assert_eq!(
            y[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
            (0..32).map(|v| 2.0 * v as f32).collect::<Vec<_>>()
        );
    }
}
