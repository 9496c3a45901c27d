//! The weights of a pointwise convolution as the kernels read them: per group of a tile's
//! output channels, a panel holding each input channel's weights for the group side by side.
//! The tiles over pixels ([`super::tile`]) and those over output channels ([`super::by_pixel`])
//! read the same layout, laid out for their own number of rows.

/// The weights of a pointwise convolution laid out for the tiles.
#[derive(Debug, Clone, Copy)]
pub(super) struct Panels<'a> {
    /// Input channels.
    pub k: usize,
    /// Output channels.
    pub rows: usize,
    /// Output channels per tile (and per panel): the implementation's [`super::tile::Kernel::rows`].
    pub tile_rows: usize,
    /// One panel per group of `tile_rows` output channels: for each input channel, the weights
    /// of the group's output channels (zero beyond the last one). See [`lay_out`].
    pub weights: &'a [f32],
    /// `tile_rows` values per group, zero beyond the last output channel.
    pub bias: &'a [f32],
    /// Bounds every output is clamped to, if any.
    pub clamp: Option<(f32, f32)>,
}

/// `weights` (row-major `[rows, k]`) and `bias` (one per row) in the layout of [`Panels`] for
/// tiles of `tile_rows` output channels: the panels, and the bias padded with zeros.
pub(super) fn lay_out(
    weights: &[f32],
    bias: &[f32],
    k: usize,
    tile_rows: usize,
) -> (Vec<f32>, Vec<f32>) {
    let groups = bias.len().div_ceil(tile_rows);
    let mut panels = vec![0f32; groups * k * tile_rows];
    for (row, w) in weights.chunks_exact(k).enumerate() {
        let (group, r) = (row / tile_rows, row % tile_rows);
        let panel = &mut panels[group * k * tile_rows..][..k * tile_rows];
        for (ci, &v) in w.iter().enumerate() {
            panel[ci * tile_rows + r] = v;
        }
    }
    let mut padded_bias = bias.to_vec();
    padded_bias.resize(groups * tile_rows, 0.0);
    (panels, padded_bias)
}
