//! The arithmetic: output rows of one image, computed tile by tile straight from the
//! channel-first input.
//!
//! A tile is `4 · Q` output channels (`Q` weight quads) × a run of `nv` vectors of adjacent
//! pixels. Its accumulators start at the bias; each input channel then adds its run of pixels
//! (`nv` vector loads from that channel's plane) times the weights of the tile's output channels
//! (`Q` [`Lanes::Quad`] reads from the panel, where the weights were laid out at rewrite time so
//! that an input channel's step reads them contiguously). The input is read in place: one plane
//! per input channel, `pixels` apart, nothing copied.
//!
//! The plane is cut into strips of the widest run, the output channels into groups of a tile's
//! rows; the loop outside is over the larger of the two (see [`rows`]), so that the smaller one,
//! read again by each of its turns, stays in a near cache. The last strip is as many vectors as
//! it needs, its last vector partial where the plane ends inside it (masked loads and stores:
//! nothing outside the plane is touched).

#[cfg(target_arch = "x86_64")]
use super::by_pixel;
use super::panels::{LINE, Panels, read_ahead};
use crate::kernels::cpu::{self, Isa};
use crate::kernels::lanes::{Lanes, Portable};

/// The fewest values per plane the tiles take. Smaller planes (a fully connected layer is a
/// plane of one value) stay on tract's matrix-vector products.
pub const MIN_PIXELS: usize = 8;

/// The largest plane the kernels with output channels in the lanes ([`super::by_pixel`]) are
/// chosen for, where they exist. On a 7×7 plane the tiles' strips leave a quarter of their
/// lanes idle and re-read every panel for 49 pixels; from 14×14 on the tiles are the faster
/// (per shape: `pointwise_shapes`, docs/PERFORMANCE.md). They take at least two of their tiles
/// of output channels: below that the zero rows padding the last tile are a large part of the
/// work (a 7×7 layer of 24 or 40 channels, as in mobile-tiny, would compute 48).
#[cfg(target_arch = "x86_64")]
const SMALL_PLANE: usize = 100;

/// The fewest input channels the kernels with output channels in the lanes are chosen for:
/// writing a finished tile through its transpose buffer costs about `LANES / k` of its
/// multiply-adds, a large part where `k` is small (mobile-tiny's 40-channel head).
#[cfg(target_arch = "x86_64")]
const BY_PIXEL_FEWEST_INPUTS: usize = 64;

/// The most output channels a tile holds: the size of its table of output rows.
const MAX_ROWS: usize = 8;

/// The widest tile any implementation computes, in f32: the size of the buffer that takes the
/// rows of a tile beyond the last output channel.
const MAX_TILE_PIXELS: usize = 64;

/// Rows `first_row..` of one image's output, as many as `out` holds (`out.len() / pixels`),
/// from `x`, the image's `k` planes of `pixels` values.
///
/// # Safety
/// `panels` is laid out for this implementation's tiles ([`super::panels::lay_out`] with its
/// [`Kernel::rows`]), `pixels >= MIN_PIXELS`, `x` holds `k · pixels` values, `out` whole rows
/// ending at or before row `rows`, and the CPU has the instructions of the implementation.
pub(super) type RowsFn = unsafe fn(&Panels, &[f32], usize, &mut [f32], usize);

/// A run of pixels of some output rows, read from planes and written to rows that are further
/// apart than the run: what a fused operator computing a band of a plane at a time asks for
/// ([`crate::kernels::expand_depthwise`]).
pub(in crate::kernels) struct Band<'a> {
    /// The run's first pixel in the first input plane; the planes are `x_plane` apart.
    pub x: &'a [f32],
    pub x_plane: usize,
    /// Pixels in the run.
    pub pixels: usize,
    /// Where the run of output row `rows.start` goes; the rows are `out_row` apart.
    pub out: *mut f32,
    pub out_row: usize,
    /// The output rows (channels) computed.
    pub rows: std::ops::Range<usize>,
}

/// Computes a [`Band`].
///
/// # Safety
/// `panels` is laid out for this implementation's tiles, `pixels >= 1`, `x` holds `(k - 1) ·
/// x_plane + pixels` values, `out` `(rows.len() - 1) · out_row + pixels` writable values that
/// no other reference reads or writes, `rows.end <= panels.rows`, and the CPU has the
/// instructions of the implementation.
pub(in crate::kernels) type BandFn = unsafe fn(&Panels, &Band);

/// One implementation of the tiles.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kernel {
    /// Its name (the op's `info` shows it, so a run on a phone or under qemu can tell which
    /// kernel its plan holds).
    pub name: &'static str,
    /// Output channels per tile, the panels' width.
    pub rows: usize,
    /// The largest plane (values per input channel) it is chosen for.
    pub largest_plane: usize,
    /// The fewest output channels it is chosen for.
    pub fewest_rows: usize,
    /// The fewest input channels it is chosen for.
    pub fewest_inputs: usize,
    pub run: RowsFn,
    /// The same tiles over a [`Band`], where the implementation has them.
    pub band: Option<BandFn>,
}

/// Plain Rust, four lanes, tiles of 4 × 16 (NEON's shape).
pub(super) const PORTABLE: Kernel = Kernel {
    name: Isa::Portable.name(),
    rows: 4,
    largest_plane: usize::MAX,
    fewest_rows: 1,
    fewest_inputs: 1,
    run: rows_portable,
    band: Some(band_portable),
};

/// The implementation this CPU runs best for `k` input and `rows` output channels of planes
/// of `pixels` values.
pub(super) fn best_for_this_cpu(pixels: usize, k: usize, rows: usize) -> Kernel {
    *for_this_cpu()
        .iter()
        .rfind(|kernel| {
            pixels <= kernel.largest_plane
                && rows >= kernel.fewest_rows
                && k >= kernel.fewest_inputs
        })
        .unwrap_or(&PORTABLE)
}

/// Every implementation this CPU runs, the portable one first and the best last (for the
/// planes each is chosen for).
pub(super) fn for_this_cpu() -> Vec<Kernel> {
    cpu::available().into_iter().flat_map(kernels_of).collect()
}

/// The implementations for `isa`, the tiles first.
fn kernels_of(isa: Isa) -> Vec<Kernel> {
    let tiles = |rows, run: RowsFn, band: BandFn| Kernel {
        name: isa.name(),
        rows,
        largest_plane: usize::MAX,
        fewest_rows: 1,
        fewest_inputs: 1,
        run,
        band: Some(band),
    };
    match isa {
        Isa::Portable => vec![PORTABLE],
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => vec![
            tiles(4, rows_avx2_fma, band_avx2_fma),
            Kernel {
                name: "AVX2+FMA by pixel",
                rows: 16,
                largest_plane: SMALL_PLANE,
                fewest_rows: 2 * 16,
                fewest_inputs: BY_PIXEL_FEWEST_INPUTS,
                run: by_pixel_avx2_fma,
                band: None,
            },
        ],
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => vec![
            tiles(8, rows_avx512, band_avx512),
            Kernel {
                name: "AVX-512 by pixel",
                rows: 48,
                largest_plane: SMALL_PLANE,
                fewest_rows: 2 * 48,
                fewest_inputs: BY_PIXEL_FEWEST_INPUTS,
                run: by_pixel_avx512,
                band: None,
            },
        ],
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => vec![tiles(4, rows_neon, band_neon)],
    }
}

unsafe fn rows_portable(panels: &Panels, x: &[f32], pixels: usize, out: &mut [f32], first: usize) {
    unsafe { rows::<Portable, 1, 4>(panels, &whole_planes(x, pixels, out, first)) }
}

unsafe fn band_portable(panels: &Panels, band: &Band) {
    unsafe { rows::<Portable, 1, 4>(panels, band) }
}

/// Rows `first..` of one image's output, as many as `out` holds, as a [`Band`]: whole planes.
#[inline(always)]
fn whole_planes<'a>(x: &'a [f32], pixels: usize, out: &mut [f32], first: usize) -> Band<'a> {
    debug_assert!(out.len().is_multiple_of(pixels));
    Band {
        x,
        x_plane: pixels,
        pixels,
        out: out.as_mut_ptr(),
        out_row: pixels,
        rows: first..first + out.len() / pixels,
    }
}

/// Tiles of 4 × 24: twelve accumulators, three pixel loads and a broadcast at a time, the
/// sixteen vector registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2_fma(panels: &Panels, x: &[f32], pixels: usize, out: &mut [f32], first: usize) {
    unsafe {
        rows::<crate::kernels::lanes::Avx2Fma, 1, 3>(panels, &whole_planes(x, pixels, out, first))
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn band_avx2_fma(panels: &Panels, band: &Band) {
    unsafe { rows::<crate::kernels::lanes::Avx2Fma, 1, 3>(panels, band) }
}

/// Tiles of 8 × 32: sixteen accumulators, two pixel loads and eight broadcasts per input
/// channel, 26 of the 32 vector registers; an input channel's step is 16 multiply-adds for 10
/// loads, where 4 × 16 on AVX2 was 8 for 6.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rows_avx512(panels: &Panels, x: &[f32], pixels: usize, out: &mut [f32], first: usize) {
    unsafe {
        rows::<crate::kernels::lanes::Avx512, 2, 2>(panels, &whole_planes(x, pixels, out, first))
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn band_avx512(panels: &Panels, band: &Band) {
    unsafe { rows::<crate::kernels::lanes::Avx512, 2, 2>(panels, band) }
}

/// Output channels in the lanes ([`by_pixel`]), 16 × 6: twelve accumulators, two weight loads
/// and a broadcast at a time, fifteen of the sixteen vector registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn by_pixel_avx2_fma(
    panels: &Panels,
    x: &[f32],
    pixels: usize,
    out: &mut [f32],
    first: usize,
) {
    unsafe { by_pixel::rows::<crate::kernels::lanes::Avx2Fma, 2, 6>(panels, x, pixels, out, first) }
}

/// Output channels in the lanes ([`by_pixel`]), 48 × 7: 21 accumulators and three weight
/// loads per input channel, each pixel's broadcast folded into its multiply-adds; seven pixels
/// divide the 49 of a 7×7 plane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn by_pixel_avx512(
    panels: &Panels,
    x: &[f32],
    pixels: usize,
    out: &mut [f32],
    first: usize,
) {
    unsafe { by_pixel::rows::<crate::kernels::lanes::Avx512, 3, 7>(panels, x, pixels, out, first) }
}

/// Tiles of 4 × 16: sixteen accumulators, four pixel loads and one weight load per input
/// channel, in 21 of the 32 vector registers.
#[cfg(target_arch = "aarch64")]
unsafe fn rows_neon(panels: &Panels, x: &[f32], pixels: usize, out: &mut [f32], first: usize) {
    unsafe {
        rows::<crate::kernels::lanes::Neon, 1, 4>(panels, &whole_planes(x, pixels, out, first))
    }
}

#[cfg(target_arch = "aarch64")]
unsafe fn band_neon(panels: &Panels, band: &Band) {
    unsafe { rows::<crate::kernels::lanes::Neon, 1, 4>(panels, band) }
}

/// One tile's operands, for one block of input channels.
struct Tile<T> {
    /// Input channels in the block.
    steps: usize,
    /// The block's first input channel's weights in the group's panel.
    w: *const f32,
    /// From one input channel's weights to the next: the tile's output channels.
    w_stride: usize,
    /// The run's first pixel in the block's first input plane.
    x: *const f32,
    /// From one input plane to the next.
    x_stride: usize,
    /// The group's biases.
    bias: *const f32,
    /// Where each row's run goes.
    out: [*mut f32; MAX_ROWS],
    /// The accumulators start from the runs in `out` (the sums of the blocks before), not
    /// from the bias.
    resume: bool,
    /// Applied after the block (the last one).
    clamp: Option<(f32, f32)>,
    /// The weights the next tile reads, `ahead_lines` cache lines of them, asked for one a step
    /// ([`read_ahead`]).
    ahead: *const f32,
    ahead_lines: usize,
    /// The lanes of the run's last vector inside the plane, where it is partial.
    tail: T,
}

/// The `nv` vectors of a run from `x` (the last one partial if `TAIL`).
macro_rules! load_run {
    ($L:ident, $tail:ident, $nv:literal, $x:expr, $t:expr, [$($v:literal),+]) => {
        [$(
            if $tail && $v + 1 == $nv {
                $L::load_tail($x.add($v * $L::LANES), $t)
            } else {
                $L::load($x.add($v * $L::LANES))
            }
        ),+]
    };
}

/// Stores an accumulator row's `nv` vectors at `out` (the last one partial if `TAIL`).
macro_rules! store_run {
    ($L:ident, $tail:ident, $nv:literal, $out:expr, $a:ident, $t:expr, [$($v:literal),+]) => {
        $(
            if $tail && $v + 1 == $nv {
                $L::store_tail($out.add($v * $L::LANES), $a[$v], $t)
            } else {
                $L::store($out.add($v * $L::LANES), $a[$v])
            }
        )+
    };
}

/// Defines a tile of `4 · Q` rows × `nv` vectors, `Q` the length of `quads`; `rows` names each
/// row's accumulators with its quad and lane. Every accumulator is its own spelled-out variable
/// (arrays indexed by literals): at opt-level "z" LLVM would not unroll a loop over them, and
/// they would live in memory.
macro_rules! tile {
    ($name:ident, $nv:literal, $vs:tt, quads [$($qi:literal),+],
     rows [$(($a:ident, $q:literal, $lane:literal, $r:literal)),+]) => {
        /// # Safety
        /// `t` points at `steps` steps of panel, `steps` planes holding the run, the group's
        /// biases and runs to write (and read, if `resume`); the CPU has `L`'s instructions.
        #[inline(always)]
        unsafe fn $name<L: Lanes, const TAIL: bool>(t: &Tile<L::Tail>) {
            unsafe {
                $(
                    let mut $a = if t.resume {
                        load_run!(L, TAIL, $nv, t.out[$r].cast_const(), t.tail, $vs)
                    } else {
                        [L::splat(*t.bias.add($r)); $nv]
                    };
                )+
                let (mut x, mut w) = (t.x, t.w);
                let (mut ahead, mut ahead_lines) = (t.ahead, t.ahead_lines);
                for _ in 0..t.steps {
                    if ahead_lines > 0 {
                        read_ahead(ahead);
                        ahead = ahead.wrapping_add(LINE);
                        ahead_lines -= 1;
                    }
                    let q = [$( L::load_quad(w.add(4 * $qi)) ),+];
                    let xs = load_run!(L, TAIL, $nv, x, t.tail, $vs);
                    $( mul_add_run!(L, $a, xs, q[$q], $lane, $vs); )+
                    x = x.add(t.x_stride);
                    w = w.add(t.w_stride);
                }
                if let Some((low, high)) = t.clamp {
                    let (low, high) = (L::splat(low), L::splat(high));
                    $( clamp_run!(L, $a, low, high, $vs); )+
                }
                $( store_run!(L, TAIL, $nv, t.out[$r], $a, t.tail, $vs); )+
            }
        }
    };
}

macro_rules! mul_add_run {
    ($L:ident, $a:ident, $xs:ident, $q:expr, $lane:literal, [$($v:literal),+]) => {
        $( $a[$v] = $L::mul_add_lane::<$lane>($a[$v], $xs[$v], $q); )+
    };
}

macro_rules! clamp_run {
    ($L:ident, $a:ident, $low:ident, $high:ident, [$($v:literal),+]) => {
        $( $a[$v] = $L::clamp($a[$v], $low, $high); )+
    };
}

macro_rules! tiles_of_four_rows {
    ($($name:ident, $nv:literal, $vs:tt;)+) => {$(
        tile!($name, $nv, $vs, quads [0],
              rows [(a0, 0, 0, 0), (a1, 0, 1, 1), (a2, 0, 2, 2), (a3, 0, 3, 3)]);
    )+};
}

macro_rules! tiles_of_eight_rows {
    ($($name:ident, $nv:literal, $vs:tt;)+) => {$(
        tile!($name, $nv, $vs, quads [0, 1],
              rows [(a0, 0, 0, 0), (a1, 0, 1, 1), (a2, 0, 2, 2), (a3, 0, 3, 3),
                    (a4, 1, 0, 4), (a5, 1, 1, 5), (a6, 1, 2, 6), (a7, 1, 3, 7)]);
    )+};
}

tiles_of_four_rows! {
    four_by_1, 1, [0];
    four_by_2, 2, [0, 1];
    four_by_3, 3, [0, 1, 2];
    four_by_4, 4, [0, 1, 2, 3];
}

tiles_of_eight_rows! {
    eight_by_1, 1, [0];
    eight_by_2, 2, [0, 1];
}

/// Runs the tile of `4 · QUADS` rows × `nv` vectors, the last one partial if `tail`.
///
/// # Safety
/// As the tiles; `nv` is at most 4 (2 for eight rows).
#[inline(always)]
unsafe fn run_tile<L: Lanes, const QUADS: usize>(nv: usize, tail: bool, t: &Tile<L::Tail>) {
    unsafe {
        match (QUADS, nv, tail) {
            (1, 1, false) => four_by_1::<L, false>(t),
            (1, 1, true) => four_by_1::<L, true>(t),
            (1, 2, false) => four_by_2::<L, false>(t),
            (1, 2, true) => four_by_2::<L, true>(t),
            (1, 3, false) => four_by_3::<L, false>(t),
            (1, 3, true) => four_by_3::<L, true>(t),
            (1, 4, false) => four_by_4::<L, false>(t),
            (1, 4, true) => four_by_4::<L, true>(t),
            (2, 1, false) => eight_by_1::<L, false>(t),
            (2, 1, true) => eight_by_1::<L, true>(t),
            (2, 2, false) => eight_by_2::<L, false>(t),
            (2, 2, true) => eight_by_2::<L, true>(t),
            _ => unreachable!("no tile of {QUADS} quads × {nv} vectors"),
        }
    }
}

/// The largest plane on which the tiles read ahead the weights of the next tile: there a
/// weight serves few pixels, and a tile's panel, cold, takes about as long to come from memory
/// as the tile's arithmetic. On larger planes each tile runs long enough for the hardware's
/// own prefetch, and reading ahead cost 4–6 % on the 28×28 layers (hot caches).
const READ_AHEAD_PLANE: usize = 256;

/// Input channels per block: a strip's runs of a block's input planes (`BLOCK · WIDEST ·
/// LANES` values, 16 KB for AVX-512's strips of 32 pixels) stay in the L1 cache while every
/// group's tile reads them in turn.
const BLOCK: usize = 128;

/// The most input channels taken in one block: up to twice [`BLOCK`] the runs of all planes
/// still fit L1 (32 KB on AVX-512), and a tile resuming from the sums of a block before cost
/// 4–7 % on the 28×28 layers of 144 and 240 input channels (hot caches).
const WHOLE_UP_TO: usize = 2 * BLOCK;

/// Input channels per block for `k` of them.
fn block_for(k: usize) -> usize {
    if k <= WHOLE_UP_TO { k } else { BLOCK }
}

/// The implementations' body: the run of a [`Band`] (a whole plane, for [`RowsFn`]) in strips of
/// `WIDEST` vectors, each strip computed for every group of `4 · QUADS` output channels holding
/// a row of `band.rows`, by blocks of input
/// channels ([`block_for`]): each block of a strip is taken by every group in turn, the tiles resuming
/// from the sums the blocks before left in `out`. Rows of a group outside `out` are computed
/// into a scratch buffer and dropped.
///
/// Strips outside and blocks of input channels: a tile's step reads a run from a different
/// plane (`pixels` apart) and the weights of its group (contiguous in its panel). The runs are
/// what must stay in L1: read again by every group, from L2 they come a few lines at a time
/// from strided addresses, while the panels, read once per strip, stream in order. A strip's
/// runs of all `k` planes outgrow L1 (86 KB for a 672-channel layer on AVX-512's strips);
/// those of a block do not.
///
/// # Safety
/// As [`BandFn`].
#[inline(always)]
unsafe fn rows<L: Lanes, const QUADS: usize, const WIDEST: usize>(panels: &Panels, band: &Band) {
    let tile_rows = 4 * QUADS;
    let pixels = band.pixels;
    debug_assert!(WIDEST * L::LANES <= MAX_TILE_PIXELS && tile_rows <= MAX_ROWS);
    debug_assert!(panels.tile_rows == tile_rows && pixels >= 1);
    debug_assert!(band.x.len() >= (panels.k - 1) * band.x_plane + pixels);
    debug_assert!(band.rows.end <= panels.rows && !band.rows.is_empty());
    let mut sink = [0f32; MAX_TILE_PIXELS];
    let groups = band.rows.start / tile_rows..band.rows.end.div_ceil(tile_rows);
    let mut at = Place {
        panels,
        x: band.x.as_ptr(),
        x_plane: band.x_plane,
        pixels,
        out: band.out,
        out_row: band.out_row,
        sink: sink.as_mut_ptr(),
        rows: band.rows.clone(),
        groups: groups.clone(),
        read_ahead: pixels <= READ_AHEAD_PLANE,
        block: block_for(panels.k),
    };
    for p in (0..pixels).step_by(WIDEST * L::LANES) {
        for k0 in (0..panels.k).step_by(at.block) {
            for group in groups.clone() {
                // SAFETY: `p` is a strip of the run, `group` one holding a row of `out`,
                // `k0` an input channel.
                unsafe { tile_at::<L, QUADS, WIDEST>(&mut at, group, p, k0) };
            }
        }
    }
}

/// What [`tile_at`] needs to place a tile: the operands of [`rows`].
struct Place<'a> {
    panels: &'a Panels<'a>,
    /// The run's first pixel in the first input plane.
    x: *const f32,
    /// From one input plane to the next.
    x_plane: usize,
    /// Pixels in the run.
    pixels: usize,
    /// The run of row `rows.start` of the output.
    out: *mut f32,
    /// From one output row's run to the next.
    out_row: usize,
    /// Takes a tile's rows outside `rows`; holds any tile's run.
    sink: *mut f32,
    /// The output rows to write.
    rows: std::ops::Range<usize>,
    /// The groups holding them.
    groups: std::ops::Range<usize>,
    /// Whether each tile reads ahead the weights of the next ([`READ_AHEAD_PLANE`]).
    read_ahead: bool,
    /// Input channels per block ([`block_for`]).
    block: usize,
}

impl Place<'_> {
    /// The weights of the tile after the one of `group` and the block from `k0`, in the order
    /// of [`rows`] (the next group, else the first group's next block, else the first block of
    /// the next strip), and how many cache lines they span.
    fn next_weights(&self, group: usize, k0: usize) -> (*const f32, usize) {
        let (k, tile_rows) = (self.panels.k, self.panels.tile_rows);
        let (group, k0) = if group + 1 < self.groups.end {
            (group + 1, k0)
        } else if k0 + self.block < k {
            (self.groups.start, k0 + self.block)
        } else {
            (self.groups.start, 0)
        };
        let len = self.block.min(k - k0) * tile_rows;
        let at = &self.panels.weights[(group * k + k0) * tile_rows..][..len];
        (at.as_ptr(), len.div_ceil(LINE))
    }
}

/// Runs the tile of group `group` (output channels `group · 4 · QUADS..`) on the strip from pixel
/// `p` for the block of input channels from `k0`: up to `WIDEST` vectors, the last one partial
/// where the plane ends inside it. A function, not a closure: a closure would not carry the
/// caller's target features.
///
/// # Safety
/// As [`RowsFn`] for the operands of `at`; `p < pixels`, `k0 < k` and the group holds a row of
/// `at.rows`; the blocks of input channels before `k0` ran on the same strip and group.
#[inline(always)]
unsafe fn tile_at<L: Lanes, const QUADS: usize, const WIDEST: usize>(
    at: &mut Place,
    group: usize,
    p: usize,
    k0: usize,
) {
    let tile_rows = 4 * QUADS;
    let n = (WIDEST * L::LANES).min(at.pixels - p);
    let partial = n % L::LANES;
    let row0 = group * tile_rows;
    let mut out = [at.sink; MAX_ROWS];
    for (r, dst) in out[..tile_rows].iter_mut().enumerate() {
        if at.rows.contains(&(row0 + r)) {
            // SAFETY: a row of `out`, and `p + n <= pixels`.
            *dst = unsafe { at.out.add((row0 + r - at.rows.start) * at.out_row + p) };
        }
    }
    let k = at.panels.k;
    let steps = at.block.min(k - k0);
    let (ahead, ahead_lines) = if at.read_ahead {
        at.next_weights(group, k0)
    } else {
        (std::ptr::null(), 0)
    };
    let tile = Tile {
        ahead,
        ahead_lines,
        steps,
        w: at.panels.weights[(row0 * k + k0 * tile_rows)..].as_ptr(),
        w_stride: tile_rows,
        // SAFETY: `p + n <= pixels`, so the run is inside every plane; `k0 < k`.
        x: unsafe { at.x.add(k0 * at.x_plane + p) },
        x_stride: at.x_plane,
        bias: at.panels.bias[row0..].as_ptr(),
        out,
        resume: k0 > 0,
        clamp: if k0 + steps == k {
            at.panels.clamp
        } else {
            None
        },
        // SAFETY: `0 < partial < LANES` where it is used; 1 stands for a whole vector.
        tail: unsafe { L::tail(if partial == 0 { 1 } else { partial }) },
    };
    unsafe { run_tile::<L, QUADS>(n.div_ceil(L::LANES), partial != 0, &tile) };
}

#[cfg(test)]
mod tests {
    use super::super::panels::lay_out;
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Every implementation this CPU runs (the AVX2 one too where AVX-512 is chosen) computes
    /// rows `first..end` of every output within the rounding bound of the f64 sum: planes
    /// around each width's strips and vectors (partial last vectors of every length), output
    /// channels around multiples of a tile, input channels filling one block, two and a part
    /// of a third (the kernels take them by blocks, resuming from their sums), row ranges
    /// starting and ending inside a tile (as the multithreaded split cuts them), with and
    /// without a clamp.
    #[test]
    fn every_kernel_matches_the_f64_sum() {
        let mut seed = 1;
        for kernel in for_this_cpu() {
            for &(k, rows) in &[
                (1, 1),
                (3, 5),
                (8, 8),
                (13, 12),
                (24, 17),
                (40, 9),
                (128, 3),
                (300, 50),
            ] {
                for pixels in [8, 9, 15, 16, 17, 23, 31, 32, 33, 47, 49, 64, 65, 100] {
                    seed += 1;
                    let x = values(k * pixels, seed);
                    let weights = values(rows * k, seed + 1);
                    let bias = values(rows, seed + 2);
                    let clamp = (seed % 2 == 0).then_some((-0.5f32, 0.75f32));
                    let (w, b) = lay_out(&weights, &bias, k, kernel.rows);
                    let panels = Panels {
                        k,
                        rows,
                        tile_rows: kernel.rows,
                        weights: &w,
                        bias: &b,
                        clamp,
                    };
                    let (first, end) = if rows > 2 { (1, rows - 1) } else { (0, rows) };
                    // A value the kernel must overwrite, and guards around the rows.
                    let mut out = vec![f32::NAN; (end - first + 2) * pixels];
                    out[..pixels].fill(7.0);
                    out[(end - first + 1) * pixels..].fill(7.0);
                    let inner = &mut out[pixels..(end - first + 1) * pixels];
                    // SAFETY: laid out for this kernel, which this CPU runs; sizes as above.
                    unsafe { (kernel.run)(&panels, &x, pixels, inner, first) };
                    assert!(out[..pixels].iter().all(|&v| v == 7.0), "{}", kernel.name);
                    assert!(out[(end - first + 1) * pixels..].iter().all(|&v| v == 7.0));
                    for row in first..end {
                        for p in 0..pixels {
                            let mut sum = bias[row] as f64;
                            let mut magnitude = sum.abs();
                            for ci in 0..k {
                                let t = weights[row * k + ci] as f64 * x[ci * pixels + p] as f64;
                                sum += t;
                                magnitude += t.abs();
                            }
                            if let Some((low, high)) = clamp {
                                sum = sum.clamp(low as f64, high as f64);
                            }
                            let got = out[(row - first + 1) * pixels + p] as f64;
                            let tolerance = (k + 1) as f64 * f32::EPSILON as f64 * magnitude;
                            assert!(
                                (got - sum).abs() <= tolerance,
                                "{}: k {k}, rows {rows}, pixels {pixels}: row {row} pixel {p} \
                                 is {got}, expected {sum}",
                                kernel.name
                            );
                        }
                    }
                }
            }
        }
    }
}
