//! The arithmetic: one image's output planes, band by band, tile by tile from the padded band.
//!
//! A tile is `4 · Q` output channels (`Q` weight quads) × a run of `nv` vectors of adjacent
//! points of one output row. Its accumulators start at the bias; each input of a point (input
//! channel, kernel row, kernel column) then adds its run (`nv` vector loads from the band at
//! that input's offset) times the weights of the tile's output channels (`Q`
//! [`Lanes::Quad`] reads from the panel, laid out at rewrite time so that one input's step
//! reads them contiguously). The clamp is applied before the store: the output is written once.
//!
//! A row is cut into strips of the widest run; the last strip is as many vectors as it needs,
//! its last vector stored under a mask (or through a copy) where the row ends inside it. Its
//! loads are whole vectors: the band's rows are followed by the next phase or row, and its last
//! by [`super::band::SLACK`] values, so they stay inside the buffer, and the lanes past the row
//! are not stored.

use super::band::{BandLayout, Deinterleave};
use crate::kernels::cpu::{self, Isa};
use crate::kernels::lanes::{Lanes, Portable};

/// The most output channels a tile holds: the size of its table of output rows.
const MAX_ROWS: usize = 8;

/// The widest run any implementation computes, in f32: the size of the buffer that takes the
/// rows of a tile beyond the last output channel.
const MAX_TILE_POINTS: usize = 128;

/// The weights of one convolution, laid out for a kernel's tiles.
pub(super) struct Weights<'a> {
    pub layout: &'a BandLayout,
    /// Output channels.
    pub cout: usize,
    /// Output channels per tile.
    pub tile_rows: usize,
    /// For each group of `tile_rows` output channels, for each input of a point in the kernel's
    /// order, the weights of the group's channels (zeros past the last channel).
    pub panels: &'a [f32],
    /// One value per output channel, zeros past the last one up to a whole group.
    pub bias: &'a [f32],
    pub clamp: Option<(f32, f32)>,
}

/// Output channels `first_row..` of one image, as many as `out` holds (`out.len() / (oh · ow)`),
/// from `image`, its `cin` planes of `h · w` values, with `scratch` as the band's buffer.
///
/// # Safety
/// `weights` is laid out for this implementation's tiles ([`Kernel::rows`]), `image` holds
/// `cin · h · w` values, `out` whole planes ending at or before plane `cout`, `scratch`
/// [`BandLayout::scratch_len`] values; the CPU has the instructions of the implementation.
pub(super) type PlanesFn = unsafe fn(&Weights, &[f32], &mut [f32], usize, &mut [f32]);

/// One implementation of the tiles.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kernel {
    /// Its name (the op's `info` shows it, so a run on a phone or under qemu can tell which
    /// kernel its plan holds).
    pub name: &'static str,
    /// Output channels per tile, the panels' width.
    pub rows: usize,
    pub run: PlanesFn,
}

/// Plain Rust, four lanes, tiles of 4 × 16 (a four-lane vector machine's shape).
pub(super) const PORTABLE: Kernel = Kernel {
    name: Isa::Portable.name(),
    rows: 4,
    run: planes_portable,
};

/// The implementation this CPU runs best.
pub(super) fn best_for_this_cpu() -> Kernel {
    for_this_cpu().pop().unwrap_or(PORTABLE)
}

/// Every implementation this CPU runs, the portable one first and the best last.
pub(super) fn for_this_cpu() -> Vec<Kernel> {
    cpu::available().into_iter().map(kernel_of).collect()
}

fn kernel_of(isa: Isa) -> Kernel {
    let kernel = |rows, run: PlanesFn| Kernel {
        name: isa.name(),
        rows,
        run,
    };
    match isa {
        Isa::Portable => PORTABLE,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => kernel(4, planes_avx2_fma),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => kernel(8, planes_avx512),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => kernel(8, planes_neon),
    }
}

unsafe fn planes_portable(w: &Weights, x: &[f32], out: &mut [f32], first: usize, s: &mut [f32]) {
    unsafe { planes::<Portable, 1, 4>(w, x, out, first, s) }
}

/// Tiles of 4 × 24: twelve accumulators, three loads and a broadcast at a time, the sixteen
/// vector registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn planes_avx2_fma(w: &Weights, x: &[f32], out: &mut [f32], first: usize, s: &mut [f32]) {
    unsafe { planes::<crate::kernels::lanes::Avx2Fma, 1, 3>(w, x, out, first, s) }
}

/// Tiles of 8 × 48: 24 accumulators, three loads and eight broadcasts (folded into the
/// multiply-adds) per input, 27 of the 32 vector registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn planes_avx512(w: &Weights, x: &[f32], out: &mut [f32], first: usize, s: &mut [f32]) {
    unsafe { planes::<crate::kernels::lanes::Avx512, 2, 3>(w, x, out, first, s) }
}

/// Tiles of 8 × 12: 24 accumulators, three loads and two weight loads per input (each
/// multiply-add takes its weight by lane), 29 of the 32 vector registers.
#[cfg(target_arch = "aarch64")]
unsafe fn planes_neon(w: &Weights, x: &[f32], out: &mut [f32], first: usize, s: &mut [f32]) {
    unsafe { planes::<crate::kernels::lanes::Neon, 2, 3>(w, x, out, first, s) }
}

/// One tile's operands.
struct Tile<T> {
    /// Inputs per output point.
    taps: usize,
    /// Their offsets from the run's base.
    offsets: *const usize,
    /// The run's base in the band.
    x: *const f32,
    /// The group's panel.
    w: *const f32,
    /// From one input's weights to the next: the tile's output channels.
    w_stride: usize,
    /// The group's biases.
    bias: *const f32,
    /// Where each row's run goes.
    out: [*mut f32; MAX_ROWS],
    clamp: Option<(f32, f32)>,
    /// The lanes of the run's last vector inside the row, where it is partial.
    tail: T,
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

/// The `nv` whole vectors of a run from `x`.
macro_rules! load_run {
    ($L:ident, $x:expr, [$($v:literal),+]) => {
        [$( $L::load($x.add($v * $L::LANES)) ),+]
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

/// Defines a tile of `4 · Q` rows × `nv` vectors, `Q` the length of `quads`; `rows` names each
/// row's accumulators with its quad and lane. Every accumulator is its own spelled-out variable
/// (arrays indexed by literals): at opt-level "z" LLVM would not unroll a loop over them, and
/// they would live in memory.
macro_rules! tile {
    ($name:ident, $nv:literal, $vs:tt, quads [$($qi:literal),+],
     rows [$(($a:ident, $q:literal, $lane:literal, $r:literal)),+]) => {
        /// # Safety
        /// `t` points at `taps` steps of panel and offsets, a band holding the run at every
        /// offset (whole vectors), the group's biases and writable runs; the CPU has `L`'s
        /// instructions.
        #[inline(always)]
        unsafe fn $name<L: Lanes, const TAIL: bool>(t: &Tile<L::Tail>) {
            unsafe {
                $( let mut $a = [L::splat(*t.bias.add($r)); $nv]; )+
                let mut w = t.w;
                for i in 0..t.taps {
                    let x = t.x.add(*t.offsets.add(i));
                    let q = [$( L::load_quad(w.add(4 * $qi)) ),+];
                    let xs = load_run!(L, x, $vs);
                    $( mul_add_run!(L, $a, xs, q[$q], $lane, $vs); )+
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
    eight_by_3, 3, [0, 1, 2];
}

/// Runs the tile of `4 · QUADS` rows × `nv` vectors, the last one partial if `tail`.
///
/// # Safety
/// As the tiles; `nv` is at most 4 (3 for eight rows).
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
            (2, 3, false) => eight_by_3::<L, false>(t),
            (2, 3, true) => eight_by_3::<L, true>(t),
            _ => unreachable!("no tile of {QUADS} quads × {nv} vectors"),
        }
    }
}

/// The implementations' body: band by band, the band's input padded into `scratch`, then each
/// of its output rows in strips of `WIDEST` vectors, each strip computed for every group of
/// `4 · QUADS` output channels holding a plane of `out`. Rows of a group outside `out` are
/// computed into a buffer and dropped.
///
/// # Safety
/// As [`PlanesFn`].
#[inline(always)]
unsafe fn planes<L: Deinterleave, const QUADS: usize, const WIDEST: usize>(
    weights: &Weights,
    image: &[f32],
    out: &mut [f32],
    first_row: usize,
    scratch: &mut [f32],
) {
    let layout = weights.layout;
    let shape = &layout.shape;
    let plane = shape.oh * shape.ow;
    let tile_rows = 4 * QUADS;
    debug_assert!(WIDEST * L::LANES <= MAX_TILE_POINTS && tile_rows <= MAX_ROWS);
    debug_assert!(weights.tile_rows == tile_rows && out.len().is_multiple_of(plane));
    debug_assert!(scratch.len() >= layout.scratch_len());
    debug_assert!(image.len() == layout.cin * shape.h * shape.w);
    let end_row = first_row + out.len() / plane;
    debug_assert!(end_row <= weights.cout);
    let mut sink = [0f32; MAX_TILE_POINTS];
    let mut at = Place {
        weights,
        out: out.as_mut_ptr(),
        sink: sink.as_mut_ptr(),
        rows: first_row..end_row,
        x: scratch.as_ptr(),
        first: 0,
    };
    let groups = first_row / tile_rows..end_row.div_ceil(tile_rows);
    for first in (0..shape.oh).step_by(layout.band) {
        layout.fill::<L>(scratch, image, first);
        at.x = scratch.as_ptr();
        at.first = first;
        for oy in first..(first + layout.band).min(shape.oh) {
            for ox in (0..shape.ow).step_by(WIDEST * L::LANES) {
                for group in groups.clone() {
                    // SAFETY: (oy, ox) is a point of the band, `group` one holding a plane of
                    // `out`.
                    unsafe { tile_at::<L, QUADS, WIDEST>(&at, group, oy, ox) };
                }
            }
        }
    }
}

/// What [`tile_at`] needs to place a tile: the operands of [`planes`].
struct Place<'a> {
    weights: &'a Weights<'a>,
    /// Plane `rows.start` of the output.
    out: *mut f32,
    /// Takes a tile's rows outside `rows`; holds any tile's run.
    sink: *mut f32,
    /// The output planes to write.
    rows: std::ops::Range<usize>,
    /// The band's buffer, filled.
    x: *const f32,
    /// The band's first output row.
    first: usize,
}

/// Runs the tile of group `group` (output channels `group · 4 · QUADS..`) on the strip of row
/// `oy` from column `ox`: up to `WIDEST` vectors, the last one partial where the row ends
/// inside it. A function, not a closure: a closure would not carry the caller's target features.
///
/// # Safety
/// As [`PlanesFn`] for the operands of `at`; `oy` is a row of the band `at.x` holds, `ox < ow`
/// and the group holds a plane of `at.rows`.
#[inline(always)]
unsafe fn tile_at<L: Lanes, const QUADS: usize, const WIDEST: usize>(
    at: &Place,
    group: usize,
    oy: usize,
    ox: usize,
) {
    let weights = at.weights;
    let layout = weights.layout;
    let (oh, ow) = (layout.shape.oh, layout.shape.ow);
    let tile_rows = 4 * QUADS;
    let n = (WIDEST * L::LANES).min(ow - ox);
    let partial = n % L::LANES;
    let row0 = group * tile_rows;
    let mut out = [at.sink; MAX_ROWS];
    for (r, dst) in out[..tile_rows].iter_mut().enumerate() {
        if at.rows.contains(&(row0 + r)) {
            // SAFETY: a plane of `out`, and `ox + n <= ow`.
            *dst = unsafe {
                at.out
                    .add((row0 + r - at.rows.start) * oh * ow + oy * ow + ox)
            };
        }
    }
    let taps = layout.taps();
    let tile = Tile {
        taps,
        offsets: layout.tap_offsets.as_ptr(),
        // SAFETY: the base of a point of the band.
        x: unsafe { at.x.add(layout.base(at.first, oy, ox)) },
        w: weights.panels[row0 * taps..].as_ptr(),
        w_stride: tile_rows,
        bias: weights.bias[row0..].as_ptr(),
        out,
        clamp: weights.clamp,
        // SAFETY: `0 < partial < LANES` where it is used; 1 stands for a whole vector.
        tail: unsafe { L::tail(if partial == 0 { 1 } else { partial }) },
    };
    unsafe { run_tile::<L, QUADS>(n.div_ceil(L::LANES), partial != 0, &tile) };
}

/// The panels of `kernel` (`cout` runs of `taps` weights, the convolution's own order) for tiles
/// of `tile_rows` output channels, and the bias padded to whole groups.
pub(super) fn lay_out(
    kernel: &[f32],
    bias: &[f32],
    taps: usize,
    tile_rows: usize,
) -> (Vec<f32>, Vec<f32>) {
    let cout = bias.len();
    let groups = cout.div_ceil(tile_rows);
    let mut panels = vec![0f32; groups * taps * tile_rows];
    for (o, run) in kernel.chunks_exact(taps).enumerate() {
        let (g, r) = (o / tile_rows, o % tile_rows);
        for (t, &v) in run.iter().enumerate() {
            panels[(g * taps + t) * tile_rows + r] = v;
        }
    }
    let mut padded = bias.to_vec();
    padded.resize(groups * tile_rows, 0.0);
    (panels, padded)
}

#[cfg(test)]
mod tests {
    use super::super::super::depthwise::PlaneShape;
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

    /// The convolution by its definition in f64, output `o` at (`oy`, `ox`), and the sum of its
    /// terms' magnitudes.
    fn reference(
        shape: &PlaneShape,
        cin: usize,
        (x, kernel, bias): (&[f32], &[f32], &[f32]),
        (o, oy, ox): (usize, usize, usize),
    ) -> (f64, f64) {
        let [kh, kw] = shape.kernel;
        let (mut sum, mut magnitude) = (bias[o] as f64, bias[o].abs() as f64);
        for c in 0..cin {
            for ky in 0..kh {
                for kx in 0..kw {
                    let y = (oy * shape.strides[0] + ky * shape.dilations[0]) as isize
                        - shape.pad_top_left[0] as isize;
                    let xx = (ox * shape.strides[1] + kx * shape.dilations[1]) as isize
                        - shape.pad_top_left[1] as isize;
                    if y < 0 || xx < 0 || y >= shape.h as isize || xx >= shape.w as isize {
                        continue;
                    }
                    let v = x[(c * shape.h + y as usize) * shape.w + xx as usize] as f64;
                    let t = v * kernel[((o * cin + c) * kh + ky) * kw + kx] as f64;
                    sum += t;
                    magnitude += t.abs();
                }
            }
        }
        (sum, magnitude)
    }

    /// Every implementation this CPU runs (the AVX2 one too where AVX-512 is chosen) computes
    /// planes `first..end` of every output within the rounding bound of the f64 sum: strides 1
    /// to 3, dilation 2, pads on either side, rows around each width's strips and vectors,
    /// output channels around multiples of a tile, plane ranges starting and ending inside a
    /// tile (as the multithreaded split cuts them), with and without a clamp.
    #[test]
    fn every_kernel_matches_the_f64_sum() {
        let (mut seed, mut bands) = (1, 0);
        // cin, cout, (h, w), k, stride, dilation, pad top/left.
        let cases = [
            (3, 32, (29, 37), 3, 2, 1, [0, 0]),
            (3, 13, (30, 71), 3, 2, 1, [1, 1]),
            (1, 20, (28, 28), 5, 1, 1, [0, 0]),
            (1, 16, (28, 28), 3, 2, 1, [0, 0]),
            (4, 9, (17, 40), 3, 1, 1, [1, 1]),
            (2, 6, (11, 19), 7, 2, 1, [3, 2]),
            (3, 5, (16, 33), 3, 3, 1, [1, 0]),
            (3, 8, (15, 25), 3, 1, 2, [2, 2]),
            // Several bands, the last one short.
            (3, 8, (40, 200), 3, 2, 1, [0, 0]),
            (1, 4, (50, 301), 3, 1, 1, [1, 1]),
        ];
        for kernel in for_this_cpu() {
            for &(cin, cout, (h, w), k, s, d, pad) in &cases {
                seed += 1;
                let span = (k - 1) * d + 1;
                // Pads as much after as before (or one more, or none: an odd padded width).
                let out = |n: usize, p: usize| (n + p + (p + seed as usize % 2) - span) / s + 1;
                let shape = PlaneShape {
                    h,
                    w,
                    oh: out(h, pad[0]),
                    ow: out(w, pad[1]),
                    kernel: [k, k],
                    strides: [s, s],
                    dilations: [d, d],
                    pad_top_left: pad,
                };
                let layout = BandLayout::new(shape, cin).unwrap();
                bands += shape.oh.div_ceil(layout.band);
                let x = values(cin * h * w, seed);
                let weights = values(cout * layout.taps(), seed + 1);
                let bias = values(cout, seed + 2);
                let clamp = (seed % 2 == 0).then_some((-0.5f32, 0.75f32));
                let (panels, padded) = lay_out(&weights, &bias, layout.taps(), kernel.rows);
                let w8 = Weights {
                    layout: &layout,
                    cout,
                    tile_rows: kernel.rows,
                    panels: &panels,
                    bias: &padded,
                    clamp,
                };
                let plane = shape.oh * shape.ow;
                let (first, end) = if cout > 2 { (1, cout - 1) } else { (0, cout) };
                // Values the kernel must overwrite, and guards around the planes.
                let mut out = vec![f32::NAN; (end - first + 2) * plane];
                out[..plane].fill(7.0);
                out[(end - first + 1) * plane..].fill(7.0);
                let inner = &mut out[plane..(end - first + 1) * plane];
                let mut scratch = vec![f32::NAN; layout.scratch_len()];
                // SAFETY: laid out for this kernel, which this CPU runs; sizes as above.
                unsafe { (kernel.run)(&w8, &x, inner, first, &mut scratch) };
                let what = format!("{} {cin}->{cout} {shape:?}", kernel.name);
                assert!(out[..plane].iter().all(|&v| v == 7.0), "{what}");
                assert!(out[(end - first + 1) * plane..].iter().all(|&v| v == 7.0));
                for o in first..end {
                    for oy in 0..shape.oh {
                        for ox in 0..shape.ow {
                            let data = (&x[..], &weights[..], &bias[..]);
                            let (mut want, m) = reference(&shape, cin, data, (o, oy, ox));
                            if let Some((low, high)) = clamp {
                                want = want.clamp(low as f64, high as f64);
                            }
                            let got = out[(o - first + 1) * plane + oy * shape.ow + ox] as f64;
                            let tolerance = (layout.taps() + 1) as f64 * f32::EPSILON as f64 * m;
                            assert!(
                                (got - want).abs() <= tolerance,
                                "{what}: output {o} at ({oy}, {ox}) is {got}, expected {want}"
                            );
                        }
                    }
                }
            }
        }
        assert!(bands > for_this_cpu().len() * 12, "{bands} bands");
    }
}
