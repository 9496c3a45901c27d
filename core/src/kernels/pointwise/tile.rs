//! The arithmetic: output rows of one image, computed tile by tile straight from the
//! channel-first input.
//!
//! A tile is [`ROWS`] output channels × a run of `nv` vectors of adjacent pixels. Its
//! accumulators start at the bias; each input channel then adds its run of pixels (`nv` vector
//! loads from that channel's plane) times the four weights of those output channels (one
//! [`Lanes::Quad`] read from the panel, where the weights were laid out at rewrite time). The
//! input is read in place: one plane per input channel, `pixels` apart, nothing copied.
//!
//! Pixels run in tiles of the widest run, then tiles of half and a quarter of it for what is
//! left; a remainder shorter than a vector is computed by a one-vector tile ending at the last
//! pixel, which writes again, with the same value, outputs an earlier tile wrote. Planes hold at least
//! [`MIN_PIXELS`], a vector of every implementation.

use super::simd::{Lanes, Portable};

/// Output channels per tile: the four lanes of a weight quad.
pub(super) const ROWS: usize = 4;

/// The fewest values per plane the tiles take: a vector of every implementation. Smaller planes
/// (a fully connected layer is a plane of one value) stay on tract's matrix-vector products.
pub const MIN_PIXELS: usize = 8;

/// The widest tile any implementation computes, in f32: the size of the buffer that takes the
/// rows of a tile beyond the last output channel.
const MAX_TILE_PIXELS: usize = 32;

/// The weights of a pointwise convolution laid out for the tiles.
#[derive(Debug, Clone, Copy)]
pub(super) struct Panels<'a> {
    /// Input channels.
    pub k: usize,
    /// Output channels.
    pub rows: usize,
    /// One panel per group of [`ROWS`] output channels: for each input channel, the weights of
    /// the group's four output channels (zero beyond the last one).
    pub weights: &'a [f32],
    /// [`ROWS`] values per group, zero beyond the last output channel.
    pub bias: &'a [f32],
    /// Bounds every output is clamped to, if any.
    pub clamp: Option<(f32, f32)>,
}

/// Rows `first_row..` of one image's output, as many as `out` holds (`out.len() / pixels`),
/// from `x`, the image's `k` planes of `pixels` values.
///
/// # Safety
/// `panels` is consistent (`weights` holds `⌈rows / ROWS⌉ · k · ROWS` values, `bias`
/// `⌈rows / ROWS⌉ · ROWS`), `pixels >= MIN_PIXELS`, `x` holds `k · pixels` values, `out` whole rows ending at or before
/// row `rows`, and the CPU has the instructions of the implementation.
pub(super) type RowsFn = unsafe fn(&Panels, &[f32], usize, &mut [f32], usize);

/// The implementation this CPU runs best, and its name (the op's `info` shows it, so a run on a
/// phone or under qemu can tell which kernel its plan holds).
pub(super) fn best_for_this_cpu() -> (&'static str, RowsFn) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return ("AVX2+FMA", rows_avx2_fma);
        }
        ("portable", rows_portable)
    }
    #[cfg(target_arch = "aarch64")]
    {
        ("NEON", rows_neon)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        ("portable", rows_portable)
    }
}

/// Plain Rust, four lanes, tiles of 4 × 16 (NEON's shape).
pub(super) unsafe fn rows_portable(
    panels: &Panels,
    x: &[f32],
    pixels: usize,
    out: &mut [f32],
    first_row: usize,
) {
    unsafe { rows::<Portable>(panels, x, pixels, out, first_row, 4) }
}

/// Tiles of 4 × 16: eight accumulators, two pixel loads and four broadcasts per input channel,
/// fourteen of the sixteen vector registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2_fma(
    panels: &Panels,
    x: &[f32],
    pixels: usize,
    out: &mut [f32],
    first_row: usize,
) {
    unsafe { rows::<super::simd::Avx2Fma>(panels, x, pixels, out, first_row, 2) }
}

/// Tiles of 4 × 16: sixteen accumulators, four pixel loads and one weight load per input
/// channel, in 21 of the 32 vector registers.
#[cfg(target_arch = "aarch64")]
unsafe fn rows_neon(panels: &Panels, x: &[f32], pixels: usize, out: &mut [f32], first_row: usize) {
    unsafe { rows::<super::simd::Neon>(panels, x, pixels, out, first_row, 4) }
}

/// One tile's operands.
struct Tile {
    k: usize,
    /// The group's panel.
    w: *const f32,
    /// The run's first pixel in the first input plane.
    x: *const f32,
    /// The first input plane.
    x0: *const f32,
    /// From one input plane to the next.
    x_stride: usize,
    /// The group's four biases.
    bias: *const f32,
    /// Where each of the four rows' run goes.
    out: [*mut f32; ROWS],
    clamp: Option<(f32, f32)>,
}

/// Defines a tile of `ROWS` × `nv` vectors. Every accumulator is its own spelled-out variable
/// (arrays indexed by literals): at opt-level "z" LLVM would not unroll a loop over them, and
/// they would live in memory.
macro_rules! tile {
    ($name:ident, $nv:literal, [$($v:literal),+]) => {
        /// # Safety
        /// `t` points at `k` quads, `k` planes holding the run, four biases and four writable
        /// runs; the CPU has `L`'s instructions.
        #[inline(always)]
        unsafe fn $name<L: Lanes>(t: &Tile) {
            unsafe {
                let mut a0 = [L::splat(*t.bias); $nv];
                let mut a1 = [L::splat(*t.bias.add(1)); $nv];
                let mut a2 = [L::splat(*t.bias.add(2)); $nv];
                let mut a3 = [L::splat(*t.bias.add(3)); $nv];
                let (mut x, mut w) = (t.x, t.w);
                for _ in 0..t.k {
                    let q = L::load_quad(w);
                    $(
                        let xv = L::load(x.add($v * L::LANES));
                        a0[$v] = L::mul_add_lane::<0>(a0[$v], xv, q);
                        a1[$v] = L::mul_add_lane::<1>(a1[$v], xv, q);
                        a2[$v] = L::mul_add_lane::<2>(a2[$v], xv, q);
                        a3[$v] = L::mul_add_lane::<3>(a3[$v], xv, q);
                    )+
                    x = x.add(t.x_stride);
                    w = w.add(ROWS);
                }
                if let Some((low, high)) = t.clamp {
                    let (low, high) = (L::splat(low), L::splat(high));
                    $(
                        a0[$v] = L::clamp(a0[$v], low, high);
                        a1[$v] = L::clamp(a1[$v], low, high);
                        a2[$v] = L::clamp(a2[$v], low, high);
                        a3[$v] = L::clamp(a3[$v], low, high);
                    )+
                }
                $(
                    L::store(t.out[0].add($v * L::LANES), a0[$v]);
                    L::store(t.out[1].add($v * L::LANES), a1[$v]);
                    L::store(t.out[2].add($v * L::LANES), a2[$v]);
                    L::store(t.out[3].add($v * L::LANES), a3[$v]);
                )+
            }
        }
    };
}

tile!(tile1, 1, [0]);
tile!(tile2, 2, [0, 1]);
tile!(tile4, 4, [0, 1, 2, 3]);

/// Runs a tile of `nv` vectors: 1, 2 or 4.
///
/// # Safety
/// As the tiles.
#[inline(always)]
unsafe fn run_tile<L: Lanes>(nv: usize, t: &Tile) {
    unsafe {
        match nv {
            1 => tile1::<L>(t),
            2 => tile2::<L>(t),
            _ => tile4::<L>(t),
        }
    }
}

/// The implementations' body: every group of [`ROWS`] output channels holding a row of `out`,
/// then every run of pixels, in tiles of up to `widest` vectors (1, 2 or 4). Rows of a group
/// outside `out` are computed into a scratch buffer and dropped.
///
/// # Safety
/// As [`RowsFn`]; `widest · L::LANES <= MAX_TILE_PIXELS`.
#[inline(always)]
unsafe fn rows<L: Lanes>(
    panels: &Panels,
    x: &[f32],
    pixels: usize,
    out: &mut [f32],
    first_row: usize,
    widest: usize,
) {
    debug_assert!(widest * L::LANES <= MAX_TILE_PIXELS && L::LANES <= MIN_PIXELS);
    debug_assert!(pixels >= MIN_PIXELS);
    debug_assert!(x.len() == panels.k * pixels && out.len().is_multiple_of(pixels));
    let end_row = first_row + out.len() / pixels;
    debug_assert!(end_row <= panels.rows);
    let mut sink = [0f32; MAX_TILE_PIXELS];
    let sink = sink.as_mut_ptr();
    let out_base = out.as_mut_ptr();
    for group in first_row / ROWS..end_row.div_ceil(ROWS) {
        let row0 = group * ROWS;
        // The start of each row's output in `out`, or `None` outside it.
        let starts: [Option<usize>; ROWS] = std::array::from_fn(|r| {
            let row = row0 + r;
            (first_row..end_row)
                .contains(&row)
                .then(|| (row - first_row) * pixels)
        });
        let mut tile = Tile {
            k: panels.k,
            w: panels.weights[group * panels.k * ROWS..].as_ptr(),
            x: x.as_ptr(),
            x0: x.as_ptr(),
            x_stride: pixels,
            bias: panels.bias[row0..].as_ptr(),
            out: [sink; ROWS],
            clamp: panels.clamp,
        };
        let mut p = 0;
        let run = widest * L::LANES;
        // SAFETY (each `tile_at`): `p + nv · LANES <= pixels`, so the run is inside every plane
        // and every output row; rows outside `out` go to the sink, which holds any tile's run.
        while pixels - p >= run {
            unsafe { tile_at::<L>(&mut tile, &starts, out_base, sink, p, widest) };
            p += run;
        }
        let mut nv = widest / 2;
        while nv >= 1 {
            if pixels - p >= nv * L::LANES {
                unsafe { tile_at::<L>(&mut tile, &starts, out_base, sink, p, nv) };
                p += nv * L::LANES;
            }
            nv /= 2;
        }
        if p < pixels {
            // Fewer than a vector left: the last vector of the plane, again in part.
            unsafe { tile_at::<L>(&mut tile, &starts, out_base, sink, pixels - L::LANES, 1) };
        }
    }
}

/// Points `tile` at pixel `p` (its rows at their output, or the sink) and runs `nv` vectors of
/// it. A function, not a closure: a closure would not carry the caller's target features.
///
/// # Safety
/// `p + nv · L::LANES` is within the planes and rows; as the tiles.
#[inline(always)]
unsafe fn tile_at<L: Lanes>(
    tile: &mut Tile,
    starts: &[Option<usize>; ROWS],
    out_base: *mut f32,
    sink: *mut f32,
    p: usize,
    nv: usize,
) {
    unsafe {
        tile.x = tile.x0.add(p);
        for (dst, start) in tile.out.iter_mut().zip(starts) {
            *dst = match start {
                Some(s) => out_base.add(s + p),
                None => sink,
            };
        }
        run_tile::<L>(nv, tile);
    }
}
