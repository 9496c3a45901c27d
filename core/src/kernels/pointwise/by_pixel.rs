//! The arithmetic for small planes: output channels in the lanes, pixels broadcast.
//!
//! [`super::tile`] puts a run of pixels in each vector, which suits large planes; a plane of
//! 7×7 = 49 values fills 49 of 64 lanes (four 16-lane vectors), and each tile re-reads the
//! weights for few pixels. Here a tile is `M` vectors of output channels (`M · LANES` of them)
//! × `P` pixels: its accumulators start at the bias; each input channel then adds, for each of
//! the `P` pixels, that pixel's value (one broadcast from the input plane, read in place) times
//! the input channel's weights for the tile's output channels (`M` vector loads from the
//! panel, which [`super::panels::lay_out`] makes for tiles of `M · LANES` rows: the same panel,
//! only wider). No lane is wasted on a plane of any size: the last tile of a plane starts `P`
//! pixels before its end, recomputing a few pixels rather than masking.
//!
//! The accumulators hold an output pixel's channels; the output is channel-first, so a finished
//! tile goes through a small buffer and is written row by row (`P` adjacent values per output
//! channel), once per `k` steps of the tile.

use super::panels::Panels;
use crate::kernels::lanes::Lanes;

/// The most values a tile holds: the size of its transpose buffer.
const MAX_TILE: usize = 512;

/// The implementations' body: for each group of `M · LANES` output channels holding a row of
/// `out`, the plane in tiles of `P` pixels. The group's panel (at most `k · M · LANES` weights)
/// is read again by each of its tiles, from a near cache; the input, small where this kernel
/// is chosen, by every group.
///
/// # Safety
/// As [`super::tile::RowsFn`], with `pixels >= P` and `panels` laid out for `M · LANES` rows.
#[inline(always)]
pub(super) unsafe fn rows<L: Lanes, const M: usize, const P: usize>(
    panels: &Panels,
    x: &[f32],
    pixels: usize,
    out: &mut [f32],
    first_row: usize,
) {
    let tile_rows = M * L::LANES;
    debug_assert!(tile_rows * P <= MAX_TILE && pixels >= P);
    debug_assert!(panels.tile_rows == tile_rows && x.len() == panels.k * pixels);
    debug_assert!(out.len().is_multiple_of(pixels));
    let end_row = first_row + out.len() / pixels;
    debug_assert!(end_row <= panels.rows);
    let mut buffer = [0f32; MAX_TILE];
    for group in first_row / tile_rows..end_row.div_ceil(tile_rows) {
        let row0 = group * tile_rows;
        let weights = &panels.weights[row0 * panels.k..][..tile_rows * panels.k];
        let bias = &panels.bias[row0..][..tile_rows];
        let rows = row0.max(first_row)..(row0 + tile_rows).min(end_row);
        for start in (0..pixels).step_by(P) {
            let p = start.min(pixels - P);
            // SAFETY: `p + P <= pixels`, the panel and bias are the group's, the buffer holds
            // `P` rows of `tile_rows`.
            unsafe {
                tile::<L, M, P>(
                    panels.k,
                    weights.as_ptr(),
                    x.as_ptr().add(p),
                    pixels,
                    bias.as_ptr(),
                    panels.clamp,
                    buffer.as_mut_ptr(),
                )
            };
            for row in rows.clone() {
                let dst = &mut out[(row - first_row) * pixels + p..][..P];
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = buffer[j * tile_rows + row - row0];
                }
            }
        }
    }
}

/// One tile: `P` pixels from `x` (of the first plane; planes `x_stride` apart) × the `M · LANES`
/// output channels of the panel `w`, written to `buffer` pixel by pixel (`M · LANES` values
/// each).
///
/// # Safety
/// `w` holds `k · M · LANES` weights, `bias` `M · LANES` values, `x` `k` planes of at least `P`
/// values from it, `buffer` `P · M · LANES` values; the CPU has `L`'s instructions.
#[inline(always)]
unsafe fn tile<L: Lanes, const M: usize, const P: usize>(
    k: usize,
    mut w: *const f32,
    mut x: *const f32,
    x_stride: usize,
    bias: *const f32,
    clamp: Option<(f32, f32)>,
    buffer: *mut f32,
) {
    unsafe {
        let b: [L::V; M] = std::array::from_fn(|m| L::load(bias.add(m * L::LANES)));
        let mut acc = [b; P];
        for _ in 0..k {
            let ws: [L::V; M] = std::array::from_fn(|m| L::load(w.add(m * L::LANES)));
            for (j, a) in acc.iter_mut().enumerate() {
                let v = L::splat(*x.add(j));
                for m in 0..M {
                    a[m] = L::mul_add(a[m], ws[m], v);
                }
            }
            w = w.add(M * L::LANES);
            x = x.add(x_stride);
        }
        if let Some((low, high)) = clamp {
            let (low, high) = (L::splat(low), L::splat(high));
            for a in acc.iter_mut().flatten() {
                *a = L::clamp(*a, low, high);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            for (m, v) in a.iter().enumerate() {
                L::store(buffer.add((j * M + m) * L::LANES), *v);
            }
        }
    }
}
