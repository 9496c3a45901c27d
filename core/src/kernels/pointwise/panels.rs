//! The weights of a pointwise convolution as the kernels read them: per group of a tile's
//! output channels, a panel holding each input channel's weights for the group side by side.
//! The tiles over pixels ([`super::tile`]) and those over output channels ([`super::by_pixel`])
//! read the same layout, laid out for their own number of rows.

/// The weights of a pointwise convolution laid out for the tiles.
#[derive(Debug, Clone, Copy)]
pub(in crate::kernels) struct Panels<'a> {
    /// Input channels.
    pub k: usize,
    /// Output channels.
    pub rows: usize,
    /// Output channels per tile (and per panel): the implementation's [`super::tile::Kernel::rows`].
    pub tile_rows: usize,
    /// One panel per group of `tile_rows` output channels: for each input channel, the weights
    /// of the group's output channels (zero beyond the last one). See [`lay_out_into`].
    pub weights: &'a [f32],
    /// `tile_rows` values per group, zero beyond the last output channel.
    pub bias: &'a [f32],
    /// Bounds every output is clamped to, if any.
    pub clamp: Option<(f32, f32)>,
}

/// Weights per 64-byte cache line: the step of [`read_ahead`].
pub(super) const LINE: usize = 16;

/// Asks for the cache line holding `p` to come into the L2 cache: how a tile reads the weights
/// the next one takes while it computes. Inside a network a layer's weights were last read an
/// inference ago and come from memory; read by the tiles only as they need them, they come a few
/// lines at a time, each tile waiting on its first reads of every page. Never faults, whatever
/// `p` is, and changes no result.
#[inline(always)]
pub(super) fn read_ahead(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally and does not fault; SSE is part of x86_64.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p.cast())
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above (`prfm` to L2, kept).
    unsafe {
        std::arch::asm!("prfm pldl2keep, [{0}]", in(reg) p, options(nostack, preserves_flags, readonly))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}

/// Values [`lay_out_into`] writes for `rows` output channels of `k` inputs in tiles of
/// `tile_rows`.
pub(super) fn panels_len(rows: usize, k: usize, tile_rows: usize) -> usize {
    rows.div_ceil(tile_rows) * k * tile_rows
}

/// Input channels moved per block by [`lay_out_into`]: a 64-byte cache line of each row's
/// weights, so that a block's writes (`BLOCK × tile_rows` values) stay in the L1 cache while
/// the block's rows are read.
const BLOCK: usize = 16;

/// Writes `weights` (row-major `[rows, k]`) into `panels` in the layout of [`Panels`] for tiles
/// of `tile_rows` output channels, every value of `panels` (zeros for the rows after the last
/// one), so that `panels` may start uninitialised. `panels` holds [`panels_len`] values.
///
/// It runs at every load, over every pointwise weight (most of EfficientNet-Lite0's): the
/// transposition goes by blocks of input channels, so that it reads each row a cache line at a
/// time and writes into a block still in the cache, rather than striding over a whole panel
/// for every row.
pub(super) fn lay_out_into(weights: &[f32], k: usize, tile_rows: usize, panels: &mut [f32]) {
    let rows = weights.len() / k;
    assert!(
        k > 0 && tile_rows > 0 && weights.len() == rows * k,
        "pointwise weights: {} values for {k} input channels",
        weights.len()
    );
    assert_eq!(panels.len(), panels_len(rows, k, tile_rows), "panel size");
    for (group, panel) in panels.chunks_exact_mut(k * tile_rows).enumerate() {
        let first = group * tile_rows;
        let live = (rows - first).min(tile_rows);
        for c0 in (0..k).step_by(BLOCK) {
            let width = BLOCK.min(k - c0);
            let block = &mut panel[c0 * tile_rows..(c0 + width) * tile_rows];
            for r in 0..tile_rows {
                let columns = block.chunks_exact_mut(tile_rows);
                if r < live {
                    let source = &weights[(first + r) * k + c0..][..width];
                    for (column, &v) in columns.zip(source) {
                        column[r] = v;
                    }
                } else {
                    for column in columns {
                        column[r] = 0.0;
                    }
                }
            }
        }
    }
}

/// `bias` (one value per output channel) padded with zeros to whole tiles of `tile_rows`.
pub(super) fn padded_bias(bias: &[f32], tile_rows: usize) -> Vec<f32> {
    let mut padded = bias.to_vec();
    padded.resize(bias.len().div_ceil(tile_rows) * tile_rows, 0.0);
    padded
}

/// `weights` and `bias` laid out for tiles of `tile_rows` output channels (tests).
#[cfg(test)]
pub(super) fn lay_out(
    weights: &[f32],
    bias: &[f32],
    k: usize,
    tile_rows: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut panels = vec![0f32; panels_len(bias.len(), k, tile_rows)];
    lay_out_into(weights, k, tile_rows, &mut panels);
    (panels, padded_bias(bias, tile_rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value of every panel is the weight of its output and input channel, or zero past
    /// the last output channel, for shapes around the block and tile sizes; nothing of the
    /// buffer is left as it was.
    #[test]
    fn panels_hold_each_weight_at_its_place_and_zeros_after_the_last_row() {
        for tile_rows in [1, 4, 8, 16, 48] {
            for (rows, k) in [(1, 1), (3, 5), (8, 16), (9, 17), (49, 33), (50, 130)] {
                let weights: Vec<f32> = (0..rows * k).map(|i| i as f32 + 1.0).collect();
                let mut panels = vec![f32::NAN; panels_len(rows, k, tile_rows)];
                lay_out_into(&weights, k, tile_rows, &mut panels);
                for (i, &got) in panels.iter().enumerate() {
                    let (group, within) = (i / (k * tile_rows), i % (k * tile_rows));
                    let (ci, r) = (within / tile_rows, within % tile_rows);
                    let row = group * tile_rows + r;
                    let expected = if row < rows {
                        weights[row * k + ci]
                    } else {
                        0.0
                    };
                    assert_eq!(
                        got.to_bits(),
                        expected.to_bits(),
                        "tile_rows {tile_rows}, rows {rows}, k {k}: value {i}"
                    );
                }
                let bias: Vec<f32> = (0..rows).map(|i| i as f32).collect();
                let padded = padded_bias(&bias, tile_rows);
                assert_eq!(padded.len(), rows.div_ceil(tile_rows) * tile_rows);
                assert_eq!(&padded[..rows], &bias[..]);
                assert!(padded[rows..].iter().all(|&v| v == 0.0));
            }
        }
    }
}
