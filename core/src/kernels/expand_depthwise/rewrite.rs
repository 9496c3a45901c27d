//! Finding an expansion followed by a depthwise convolution among nnzip's operators.

use super::ExpandDepthwise;
use crate::kernels::depthwise::PaddedDepthwise;
use crate::kernels::pointwise::PointwiseConv;
use tract_core::internal::*;

/// Whether the fused operator is faster than the two on their own for a depthwise convolution
/// of `channels` planes of `h`×`w`: where the intermediate outgrows the L2 cache, so that the
/// two operators pass it through memory.
pub(in crate::kernels) fn fusion_wins(channels: usize, h: usize, w: usize) -> bool {
    channels * h * w * size_of::<f32>() >= FUSED_FROM_BYTES
}

/// The smallest intermediate (the expansion's output, per image) fused: EfficientNet-Lite0's
/// blocks 1 to 3 (4.8 and 1.8 MB), not the blocks after (750 KB and less), which were slower
/// fused (docs/PERFORMANCE.md): there the intermediate stays in the cache between the two
/// operators, and the unfused depthwise convolution of small planes runs by blocks of
/// channels, which the fused one does not.
const FUSED_FROM_BYTES: usize = 1 << 20;

/// Replaces each [`PointwiseConv`] whose output only a [`PaddedDepthwise`] reads, with that
/// depthwise convolution, by one [`ExpandDepthwise`], where [`fusion_wins`] (everywhere if
/// `always`).
pub(in crate::kernels) fn fuse(model: &mut TypedModel, always: bool) -> TractResult<()> {
    // Patches add nodes and leave the replaced ones disconnected, so the ids still to visit
    // stay valid; each node is re-read after the patches before it.
    for id in model.eval_order()? {
        let node = &model.nodes[id];
        let Some(depthwise) = node.op_as::<PaddedDepthwise>() else {
            continue;
        };
        let before = node.inputs[0];
        let producer = &model.nodes[before.node];
        let Some(expand) = producer.op_as::<PointwiseConv>() else {
            continue;
        };
        let single = model.single_succ(before.node)?.is_some_and(|s| s.id == id);
        let shape = depthwise.shape();
        if !single
            || model.outputs.contains(&before)
            || !(always || fusion_wins(depthwise.channels(), shape.h, shape.w))
        {
            continue;
        }
        let Some(op) = ExpandDepthwise::new(expand.clone(), depthwise.clone()) else {
            continue;
        };
        let mut patch = TypedModelPatch::new("nnzip expansion and depthwise convolution");
        let input = patch.tap_model(model, producer.inputs[0])?;
        let wire = patch.wire_node(&node.name, op, &[input])?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), wire)?;
        patch.obliterate(id)?;
        patch.obliterate(producer.id)?;
        patch.apply(model)?;
    }
    Ok(())
}
