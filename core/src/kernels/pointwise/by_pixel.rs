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
//! group's tiles go through a buffer and are written row by row (the plane of one output
//! channel gathered from the buffer a vector at a time).

use super::panels::{LINE, Panels, read_ahead};
use crate::kernels::lanes::{Avx2Fma, Avx512, Lanes};

/// Input channels per block: a block's weights for one group (`BLOCK · M · LANES` values, 12 KB
/// for 48 output channels) and its rows of the input (`BLOCK · pixels`, 12.5 KB on 7×7) stay in
/// the L1 cache while the group's tiles of pixels read them in turn.
const BLOCK: usize = 64;

/// The implementations' body: for each group of `M · LANES` output channels holding a row of
/// `out`, the input channels in blocks of [`BLOCK`], each block taken by every tile of `P` pixels
/// of the plane in turn, their accumulators kept between blocks in a buffer of the group's
/// output (`pixels · M · LANES` values, pixel by pixel) and written to `out` after the last,
/// a row at a time ([`Gather`]).
///
/// Blocks rather than whole tiles: a group's panel (`k · M · LANES` weights, 221 KB for 1152
/// input and 48 output channels) does not fit the L1 cache, and inside a network it was last
/// read an inference ago, from beyond the L2. Taken whole by one tile after the other, the
/// first tile of each group would wait for the panel to come from L3 and the others read it
/// from L2; taken by blocks, each block comes in once, at the pace of the arithmetic, and every
/// tile reads it from L1.
///
/// # Safety
/// As [`super::tile::RowsFn`], with `pixels >= P` and `panels` laid out for `M · LANES` rows.
#[inline(always)]
pub(super) unsafe fn rows<L: Gather, const M: usize, const P: usize>(
    panels: &Panels,
    x: &[f32],
    pixels: usize,
    out: &mut [f32],
    first_row: usize,
) {
    let tile_rows = M * L::LANES;
    let k = panels.k;
    debug_assert!(pixels >= P && panels.tile_rows == tile_rows && x.len() == k * pixels);
    debug_assert!(out.len().is_multiple_of(pixels));
    let end_row = first_row + out.len() / pixels;
    debug_assert!(end_row <= panels.rows);
    let tile_len = P * tile_rows;
    let tiles = pixels.div_ceil(P);
    let mut sums = vec![0f32; tiles * tile_len];
    let index = sum_places::<P>(pixels, tile_rows, L::LANES);
    let groups = first_row / tile_rows..end_row.div_ceil(tile_rows);
    // The group's panels follow each other: the weights after a block are the next block's.
    let panels_end = groups.end * tile_rows * k;
    for group in groups {
        let row0 = group * tile_rows;
        let weights = &panels.weights[row0 * k..][..tile_rows * k];
        let bias = &panels.bias[row0..][..tile_rows];
        for k0 in (0..k).step_by(BLOCK) {
            let steps = BLOCK.min(k - k0);
            let last = k0 + steps == k;
            // The next block's weights, read ahead by the tiles a share each.
            let next = (row0 * k + (k0 + steps) * tile_rows).min(panels_end);
            let next = &panels.weights[next..panels_end.min(next + BLOCK * tile_rows)];
            let share = next.len().div_ceil(LINE).div_ceil(tiles);
            for (t, sum) in sums.chunks_exact_mut(tile_len).enumerate() {
                let ahead = (t * share * LINE).min(next.len());
                let ahead_lines = (next.len() - ahead).div_ceil(LINE).min(share);
                // The last tile ends at the plane's end, recomputing pixels of the one before.
                let p = (t * P).min(pixels - P);
                let block = Block {
                    steps,
                    w: weights[k0 * tile_rows..].as_ptr(),
                    x: x[k0 * pixels + p..].as_ptr(),
                    x_stride: pixels,
                    start: if k0 == 0 { bias.as_ptr() } else { sum.as_ptr() },
                    start_stride: if k0 == 0 { 0 } else { tile_rows },
                    clamp: if last { panels.clamp } else { None },
                    ahead: next[ahead..].as_ptr(),
                    ahead_lines,
                };
                // SAFETY: the block's `steps` input channels are inside the panel and the
                // input, `p + P <= pixels`, `sum` holds `P · M · LANES` values.
                unsafe { tile::<L, M, P>(&block, sum.as_mut_ptr()) };
            }
        }
        for row in row0.max(first_row)..(row0 + tile_rows).min(end_row) {
            let dst = &mut out[(row - first_row) * pixels..][..pixels];
            // SAFETY: `index` holds `pixels` places in `sums`, at most `sums.len() - tile_rows`.
            unsafe { L::gather(sums[row - row0..].as_ptr(), &index, dst) };
        }
    }
}

/// Where each pixel of the plane is in a group's sums (`sums[index[p] + c]` is the group's
/// output channel `c` at pixel `p`), for tiles of `P` pixels and `tile_rows` output channels:
/// `pixels` places, then zeros to a whole vector of `LANES`.
fn sum_places<const P: usize>(pixels: usize, tile_rows: usize, lanes: usize) -> Vec<i32> {
    let last = pixels.div_ceil(P) - 1;
    let mut places: Vec<i32> = (0..pixels)
        .map(|p| {
            let t = (p / P).min(last);
            let j = p - (t * P).min(pixels - P);
            // At most `MAX_PLANE · 48`, far from `i32::MAX`.
            ((t * P + j) * tile_rows) as i32
        })
        .collect();
    places.resize(pixels.next_multiple_of(lanes), 0);
    places
}

/// Reads values from places of a buffer into a vector: how a group's sums, pixel by pixel, go
/// to the channel-first output, a row (one output channel over the plane) at a time. A copy
/// value by value cost as much as a tenth of a 7×7 layer with few input channels.
pub(super) trait Gather: Lanes {
    /// `dst[i] = src[index[i]]` for each `i` of `dst`.
    ///
    /// # Safety
    /// `index` holds `dst.len()` places readable from `src`, then up to a whole vector's of any
    /// value; the CPU has `Self`'s instructions.
    unsafe fn gather(src: *const f32, index: &[i32], dst: &mut [f32]);
}

impl Gather for Avx512 {
    #[inline(always)]
    unsafe fn gather(src: *const f32, index: &[i32], dst: &mut [f32]) {
        use std::arch::x86_64::*;
        debug_assert!(index.len() >= dst.len().next_multiple_of(16));
        for (i, chunk) in dst.chunks_mut(16).enumerate() {
            // SAFETY: as the function's contract; the mask keeps the lanes past `dst`.
            unsafe {
                let places = _mm512_loadu_si512(index.as_ptr().add(16 * i).cast());
                let keep = ((1u32 << chunk.len()) - 1) as u16;
                let v = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), keep, places, src);
                _mm512_mask_storeu_ps(chunk.as_mut_ptr(), keep, v);
            }
        }
    }
}

impl Gather for Avx2Fma {
    #[inline(always)]
    unsafe fn gather(src: *const f32, index: &[i32], dst: &mut [f32]) {
        use std::arch::x86_64::*;
        debug_assert!(index.len() >= dst.len().next_multiple_of(8));
        for (i, chunk) in dst.chunks_mut(8).enumerate() {
            // SAFETY: as the function's contract; the mask keeps the lanes past `dst`.
            unsafe {
                let places = _mm256_loadu_si256(index.as_ptr().add(8 * i).cast());
                let keep = _mm256_cmpgt_epi32(
                    _mm256_set1_epi32(chunk.len() as i32),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                );
                let v = _mm256_mask_i32gather_ps::<4>(
                    _mm256_setzero_ps(),
                    src,
                    places,
                    _mm256_castsi256_ps(keep),
                );
                _mm256_maskstore_ps(chunk.as_mut_ptr(), keep, v);
            }
        }
    }
}

/// One tile's operands for one block of input channels.
struct Block {
    /// Input channels in the block.
    steps: usize,
    /// The block's first input channel's weights in the group's panel.
    w: *const f32,
    /// The tile's first pixel in the block's first input plane.
    x: *const f32,
    /// From one input plane to the next.
    x_stride: usize,
    /// What the accumulators start from: each pixel's `M · LANES` values, `start_stride`
    /// apart (0: the bias, the same for every pixel).
    start: *const f32,
    start_stride: usize,
    /// Applied after the block (its last).
    clamp: Option<(f32, f32)>,
    /// Weights a later block reads, `ahead_lines` cache lines of them, asked for one a step
    /// ([`read_ahead`]).
    ahead: *const f32,
    ahead_lines: usize,
}

/// One tile: `P` pixels × the `M · LANES` output channels of the panel, for the block's input
/// channels, written to `dst` pixel by pixel (`M · LANES` values each). `dst` may be the block's
/// `start`.
///
/// # Safety
/// `b.w` holds `b.steps · M · LANES` weights, `b.x` `b.steps` planes of at least `P` values
/// from it, `b.start` `P` pixels' values (or one pixel's, stride 0) and `dst` `P · M · LANES`
/// values; the CPU has `L`'s instructions.
#[inline(always)]
unsafe fn tile<L: Lanes, const M: usize, const P: usize>(b: &Block, dst: *mut f32) {
    unsafe {
        let mut acc: [[L::V; M]; P] = std::array::from_fn(|j| {
            std::array::from_fn(|m| L::load(b.start.add(j * b.start_stride + m * L::LANES)))
        });
        let (mut w, mut x) = (b.w, b.x);
        let (mut ahead, mut ahead_lines) = (b.ahead, b.ahead_lines);
        for _ in 0..b.steps {
            if ahead_lines > 0 {
                read_ahead(ahead);
                ahead = ahead.wrapping_add(LINE);
                ahead_lines -= 1;
            }
            let ws: [L::V; M] = std::array::from_fn(|m| L::load(w.add(m * L::LANES)));
            for (j, a) in acc.iter_mut().enumerate() {
                let v = L::splat(*x.add(j));
                for m in 0..M {
                    a[m] = L::mul_add(a[m], ws[m], v);
                }
            }
            w = w.add(M * L::LANES);
            x = x.add(b.x_stride);
        }
        // Clamped as stored: a loop over the accumulators in place of their own would have
        // LLVM keep them in memory, stored at every step of the loop above.
        let clamp = b.clamp.map(|(low, high)| (L::splat(low), L::splat(high)));
        for (j, a) in acc.iter().enumerate() {
            for (m, &v) in a.iter().enumerate() {
                let v = match clamp {
                    Some((low, high)) => L::clamp(v, low, high),
                    None => v,
                };
                L::store(dst.add((j * M + m) * L::LANES), v);
            }
        }
    }
}
