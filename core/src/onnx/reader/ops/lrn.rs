//! LRN, local response normalisation across channels (AlexNet, ZFNet, GoogLeNet), built from
//! tract-core's element-wise ops, a zero pad and slices: no operator of its own to maintain.
//!
//! `y[n, c, …] = x[n, c, …] / (bias + alpha / size · Σ x[n, i, …]²)^beta`, the sum over the
//! channels `i` from `c − ⌊(size−1)/2⌋` to `c + ⌈(size−1)/2⌉` that exist.

use super::one;
use crate::error::Result;
use crate::onnx::reader::Graph;
use crate::onnx::reader::node::Node;
use tract_core::internal::*;
use tract_core::ops::array::{Pad, PadMode, Slice};
use tract_core::ops::math;

/// The channels a window reaches below and above its centre, clipped to what a tensor of
/// `channels` channels holds: a wider window adds only zeros, and clipping keeps the number of
/// slices wired below twice the channel count whatever `size` the file claims.
fn window(size: usize, channels: usize) -> (usize, usize) {
    let below = (size - 1) / 2;
    let above = size - 1 - below;
    let reach = channels.saturating_sub(1);
    (below.min(reach), above.min(reach))
}

pub(super) fn lrn(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let size = node
        .int("size")?
        .ok_or_else(|| node.error("attribute 'size' is required"))?;
    let size = usize::try_from(size)
        .ok()
        .filter(|&s| s >= 1)
        .ok_or_else(|| node.error(format!("size must be at least 1, got {size}")))?;
    let alpha = node.float_or("alpha", 1e-4)?;
    let beta = node.float_or("beta", 0.75)?;
    let bias = node.float_or("bias", 1.0)?;
    let fact = node.fact(graph, 0)?;
    let rank = fact.rank();
    if rank < 3 {
        return Err(node.error(format!(
            "the input must be [N, C, D1, …] (rank 3 or more), got rank {rank}"
        )));
    }
    let channels = fact.shape[1]
        .to_usize()
        .map_err(|_| node.error("the channel count must be a number"))?;
    let dt = fact.datum_type;
    let x = node.input(0)?;
    let squares = graph.wire1(node, "square", math::square(), &[x])?;
    let sums = channel_window_sum(graph, node, squares, window(size, channels), channels)?;
    let c = graph.scalar(node, "alpha", alpha / size as f32, dt, rank)?;
    let scaled = graph.wire1(node, "scaled", math::mul(), &[sums, c])?;
    let c = graph.scalar(node, "bias", bias, dt, rank)?;
    let shifted = graph.wire1(node, "shifted", math::add(), &[scaled, c])?;
    let c = graph.scalar(node, "beta", beta, dt, rank)?;
    let divisor = graph.wire1(node, "divisor", math::pow(), &[shifted, c])?;
    one(graph.wire1(node, "", math::div(), &[x, divisor])?)
}

/// `Σ` over the window of each channel: the values zero-padded along the channel axis, then one
/// channel-count slice per window position, added up.
fn channel_window_sum(
    graph: &mut Graph,
    node: &Node,
    values: OutletId,
    (below, above): (usize, usize),
    channels: usize,
) -> Result<OutletId> {
    let rank = node.rank(graph, 0)?;
    let zero = tensor0(0f32)
        .cast_to_dt(node.fact(graph, 0)?.datum_type)
        .map_err(|e| node.tract(e))?
        .into_owned();
    let mut pads = vec![(0, 0); rank];
    pads[1] = (below, above);
    let padded = graph.wire1(
        node,
        "padded",
        Pad {
            pads,
            mode: PadMode::Constant(zero.into_arc_tensor()),
        },
        &[values],
    )?;
    let mut sum: Option<OutletId> = None;
    for start in 0..=below + above {
        let slice = Slice::new(1, start, start + channels);
        let part = graph.wire1(node, &format!("window{start}"), slice, &[padded])?;
        sum = Some(match sum {
            None => part,
            Some(acc) => graph.wire1(node, &format!("sum{start}"), math::add(), &[acc, part])?,
        });
    }
    sum.ok_or_else(|| node.error("the window is empty"))
}

#[cfg(test)]
mod tests {
    use super::window;

    #[test]
    fn the_window_follows_the_onnx_rounding_and_stays_within_the_channels() {
        assert_eq!(window(5, 96), (2, 2));
        assert_eq!(window(4, 96), (1, 2));
        assert_eq!(window(1, 96), (0, 0));
        assert_eq!(window(1_000_001, 3), (2, 2));
        assert_eq!(window(7, 1), (0, 0));
    }
}
