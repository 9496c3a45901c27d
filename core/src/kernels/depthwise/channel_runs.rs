//! The channel-last kernel: every output point is a run of channels, each a sum over the taps
//! of the input points under the kernel window, read where they are (no padded copy).
//!
//! With the channels innermost, one vector holds adjacent channels of one point, and each tap's
//! weights for them are one vector too (laid out tap-major when the op was built). Taps outside
//! the input are skipped by narrowing the loops over the window: its rows once per output row,
//! its columns per point, and only at the left and right edges, where a point's window leaves
//! the input. Points whose window is whole along the row ([`ChannelsLastLayout::inner`]) are
//! computed up to eight at a time, one vector of channels each, sharing every weight load: eight
//! independent accumulators keep the multiply-add units busy. An edge point takes four vectors
//! of its channels at a time instead. A last run of channels shorter than a vector is computed
//! by a vector ending at the last channel, which writes again, with the same values, channels
//! the vector before it wrote.
//!
//! Each output is the bias, then one multiply-add per tap inside the input, in kernel order
//! (rows, then columns): the zone walk's order, so results agree with tract's to rounding.

use super::geometry::PlaneShape;
use super::simd::{Lanes, Portable};

/// Output points computed together along a row, each with its own accumulator.
const POINTS: usize = 8;

/// Channel vectors of one edge point computed together.
const EDGE_VECTORS: usize = 4;

/// The fewest channels the kernel takes: a vector of AVX2's eight lanes (AVX-512's sixteen run
/// from sixteen channels, [`best_for_this_cpu`]).
const MIN_CHANNELS: usize = 8;

/// The sizes of a channel-last depthwise convolution and where each of its taps reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ChannelsLastLayout {
    pub(super) shape: PlaneShape,
    pub(super) channels: usize,
    /// For each tap (rows, then columns), its distance in the image from the first value of
    /// the window's corner point: `(ky·dh·w + kx·dw)·channels`.
    pub(super) tap_offsets: Vec<usize>,
    /// The output columns `inner.0..inner.1`, whose window lies inside the input along the row.
    pub(super) inner: (usize, usize),
}

impl ChannelsLastLayout {
    /// The layout of `shape` over `channels` channels, or `None` where a size is zero, there
    /// are fewer channels than the widest vector, or an offset would overflow.
    pub(super) fn new(shape: PlaneShape, channels: usize) -> Option<ChannelsLastLayout> {
        let [kh, kw] = shape.kernel;
        let [sh, sw] = shape.strides;
        let [dh, dw] = shape.dilations;
        if [kh, kw, sh, sw, dh, dw].contains(&0) || channels < MIN_CHANNELS {
            return None;
        }
        // Every index the kernel forms fits an isize: a window corner's (at most a padding
        // above or left of the image, at most the output's reach below or right of it) plus a
        // tap's offset and a channel.
        let [pt, pl] = shape.pad_top_left;
        let image = shape.h.checked_mul(shape.w)?.checked_mul(channels)?;
        let row = shape.w.checked_mul(channels)?;
        let mut tap_offsets = Vec::with_capacity(kh.checked_mul(kw)?);
        for ky in 0..kh {
            for kx in 0..kw {
                let down = ky.checked_mul(dh)?.checked_mul(row)?;
                let across = kx.checked_mul(dw)?.checked_mul(channels)?;
                tap_offsets.push(down.checked_add(across)?);
            }
        }
        let largest = tap_offsets.iter().max().copied().unwrap_or(0);
        let rows_reach = shape
            .oh
            .checked_mul(sh)?
            .checked_add(pt)?
            .checked_add(shape.h)?;
        let cols_reach = shape
            .ow
            .checked_mul(sw)?
            .checked_add(pl)?
            .checked_add(shape.w)?;
        let corners = rows_reach.checked_mul(cols_reach)?.checked_mul(channels)?;
        isize::try_from(corners.checked_add(largest)?.checked_add(image)?).ok()?;
        let whole =
            |ox: usize| taps_inside(ox, sw, shape.pad_top_left[1], kw, dw, shape.w) == (0, kw);
        let inner = match (0..shape.ow).position(whole) {
            Some(first) => (
                first,
                first + (first..shape.ow).take_while(|&x| whole(x)).count(),
            ),
            None => (0, 0),
        };
        Some(ChannelsLastLayout {
            shape,
            channels,
            tap_offsets,
            inner,
        })
    }

    /// Kernel taps per channel.
    pub(super) fn taps(&self) -> usize {
        self.tap_offsets.len()
    }
}

/// The taps `k0..k1` (along one axis) of the window of output index `o` that fall inside an
/// input of `n` values: tap `t` reads input `o·s + t·d − pad`.
fn taps_inside(o: usize, s: usize, pad: usize, k: usize, d: usize, n: usize) -> (usize, usize) {
    let start = o * s;
    let k0 = pad.saturating_sub(start).div_ceil(d);
    // t·d + start < n + pad.
    let k1 = (n + pad).saturating_sub(start).div_ceil(d).min(k);
    (k0.min(k1), k1)
}

/// The weights of one convolution as the kernel reads them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Weights<'a> {
    /// `taps · channels` values: for each tap, its weight for every channel.
    pub taps: &'a [f32],
    /// One value per channel.
    pub bias: &'a [f32],
    /// Bounds every output is clamped to, if any.
    pub clamp: Option<(f32, f32)>,
}

/// Output rows `first_row..` of one image, as many as `out` holds, from `image`, its `h · w`
/// points of `channels` values.
///
/// # Safety
/// `weights` holds `layout.taps() · channels` taps and `channels` biases, `image` `h · w ·
/// channels` values, `out` whole output rows (`ow · channels` values each) ending at or before
/// row `oh`; the CPU has the instructions of the implementation.
pub(super) type RowsFn = unsafe fn(&ChannelsLastLayout, &Weights, &[f32], &mut [f32], usize);

/// The vector implementation this CPU runs best with vectors of at most `max_lanes` lanes, and
/// its name: a vector must not be wider than the channels (AVX-512's sixteen lanes run from
/// sixteen channels).
pub(super) fn best_for_this_cpu(max_lanes: usize) -> (&'static str, RowsFn) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::kernels::cpu::{self, Isa};
        let widest = cpu::available().into_iter().next_back();
        match widest {
            Some(Isa::Avx512) if max_lanes >= 16 => (Isa::Avx512.name(), rows_avx512),
            Some(Isa::Avx512 | Isa::Avx2Fma) => (Isa::Avx2Fma.name(), rows_avx2_fma),
            _ => (Isa::Portable.name(), rows_portable),
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        let _ = max_lanes;
        ("NEON", rows_neon)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = max_lanes;
        ("portable", rows_portable)
    }
}

/// Plain Rust, four lanes.
pub(super) unsafe fn rows_portable(
    layout: &ChannelsLastLayout,
    weights: &Weights,
    image: &[f32],
    out: &mut [f32],
    first_row: usize,
) {
    unsafe { rows::<Portable>(layout, weights, image, out, first_row) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2_fma(
    layout: &ChannelsLastLayout,
    weights: &Weights,
    image: &[f32],
    out: &mut [f32],
    first_row: usize,
) {
    unsafe { rows::<super::simd::Avx2Fma>(layout, weights, image, out, first_row) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rows_avx512(
    layout: &ChannelsLastLayout,
    weights: &Weights,
    image: &[f32],
    out: &mut [f32],
    first_row: usize,
) {
    unsafe { rows::<super::simd::Avx512>(layout, weights, image, out, first_row) }
}

#[cfg(target_arch = "aarch64")]
unsafe fn rows_neon(
    layout: &ChannelsLastLayout,
    weights: &Weights,
    image: &[f32],
    out: &mut [f32],
    first_row: usize,
) {
    unsafe { rows::<super::simd::Neon>(layout, weights, image, out, first_row) }
}

/// The part of a window inside the input, and where its taps read.
struct Window<'a> {
    tap_offsets: &'a [usize],
    kw: usize,
    /// Kernel rows `rows.0..rows.1` and columns `cols.0..cols.1` are inside the input.
    rows: (usize, usize),
    cols: (usize, usize),
    /// From one tap's weights to the next.
    channels: usize,
    clamp: Option<(f32, f32)>,
}

/// Defines a tile of the points `$j` (adjacent along a row, one vector of channels each):
/// `x[j]` is where point `j`'s window corner holds the vector's first channel (possibly outside
/// the image, where no tap of the window reads), `w` and `bias` the vector's first weight of
/// tap 0 and bias, `out` point 0's output, `step` from one point's output to the next's.
macro_rules! points_tile {
    ($name:ident, [$($j:literal),+]) => {
        /// # Safety
        /// Every tap of `win` reads inside the image from each `x[j]`, `w` holds the taps'
        /// vectors `channels` apart, `out` and `bias` a vector per point; the CPU has `L`'s
        /// instructions.
        #[inline(always)]
        unsafe fn $name<L: Lanes>(
            win: &Window,
            x: &[*const f32; POINTS],
            w: *const f32,
            bias: *const f32,
            out: *mut f32,
            step: usize,
        ) {
            unsafe {
                let b = L::load(bias);
                let mut a = [b; POINTS];
                for ky in win.rows.0..win.rows.1 {
                    for kx in win.cols.0..win.cols.1 {
                        let tap = ky * win.kw + kx;
                        let off = *win.tap_offsets.get_unchecked(tap);
                        let wv = L::load(w.add(tap * win.channels));
                        $( a[$j] = L::mul_add(a[$j], L::load(x[$j].wrapping_add(off)), wv); )+
                    }
                }
                if let Some((low, high)) = win.clamp {
                    let (low, high) = (L::splat(low), L::splat(high));
                    $( a[$j] = L::clamp(a[$j], low, high); )+
                }
                $( L::store(out.add($j * step), a[$j]); )+
            }
        }
    };
}

points_tile!(points8, [0, 1, 2, 3, 4, 5, 6, 7]);
points_tile!(points4, [0, 1, 2, 3]);
points_tile!(points2, [0, 1]);
points_tile!(points1, [0]);

/// Defines a tile of the channel vectors `$v` (adjacent) of one point: `x`, `w`, `bias` and
/// `out` at the first vector's first channel, as in `points_tile`.
macro_rules! channels_tile {
    ($name:ident, [$($v:literal),+]) => {
        /// # Safety
        /// As `points_tile`'s, for the vectors `$v` of one point.
        #[inline(always)]
        unsafe fn $name<L: Lanes>(
            win: &Window,
            x: *const f32,
            w: *const f32,
            bias: *const f32,
            out: *mut f32,
        ) {
            unsafe {
                let zero = L::splat(0.0);
                let mut a = [zero; EDGE_VECTORS];
                $( a[$v] = L::load(bias.add($v * L::LANES)); )+
                for ky in win.rows.0..win.rows.1 {
                    for kx in win.cols.0..win.cols.1 {
                        let tap = ky * win.kw + kx;
                        let xp = x.wrapping_add(*win.tap_offsets.get_unchecked(tap));
                        let wp = w.add(tap * win.channels);
                        $(
                            a[$v] = L::mul_add(
                                a[$v],
                                L::load(xp.add($v * L::LANES)),
                                L::load(wp.add($v * L::LANES)),
                            );
                        )+
                    }
                }
                if let Some((low, high)) = win.clamp {
                    let (low, high) = (L::splat(low), L::splat(high));
                    $( a[$v] = L::clamp(a[$v], low, high); )+
                }
                $( L::store(out.add($v * L::LANES), a[$v]); )+
            }
        }
    };
}

channels_tile!(channels4, [0, 1, 2, 3]);
channels_tile!(channels1, [0]);

/// The first channel of every vector the channels `from..channels` are computed in: whole
/// vectors, then one ending at the last channel where the run is no multiple of a vector
/// (`channels >= lanes`).
fn vector_starts(from: usize, channels: usize, lanes: usize) -> impl Iterator<Item = usize> {
    let whole = (channels - from) / lanes;
    let tail = (from + whole * lanes < channels).then_some(channels - lanes);
    (0..whole).map(move |v| from + v * lanes).chain(tail)
}

/// The implementations' body (see the module documentation).
///
/// # Safety
/// As [`RowsFn`].
#[inline(always)]
unsafe fn rows<L: Lanes>(
    layout: &ChannelsLastLayout,
    weights: &Weights,
    image: &[f32],
    out: &mut [f32],
    first_row: usize,
) {
    let s = &layout.shape;
    let c = layout.channels;
    let [kh, kw] = s.kernel;
    let [sh, sw] = s.strides;
    let [dh, dw] = s.dilations;
    let [pt, pl] = s.pad_top_left;
    debug_assert!(c >= L::LANES && image.len() == s.h * s.w * c);
    debug_assert!(weights.taps.len() == layout.taps() * c && weights.bias.len() == c);
    debug_assert!(out.len().is_multiple_of(s.ow * c) && first_row + out.len() / (s.ow * c) <= s.oh);
    let (w, bias) = (weights.taps.as_ptr(), weights.bias.as_ptr());
    let base = image.as_ptr();
    let mut win = Window {
        tap_offsets: &layout.tap_offsets,
        kw,
        rows: (0, 0),
        cols: (0, kw),
        channels: c,
        clamp: weights.clamp,
    };
    // The index of the first channel of the window corner of output point (oy, ox); negative
    // above and left of the image, where no tap inside the input reads.
    let corner = |oy: usize, ox: usize| -> isize {
        let y = (oy * sh) as isize - pt as isize;
        let x = (ox * sw) as isize - pl as isize;
        (y * s.w as isize + x) * c as isize
    };
    for (r, out_row) in out.chunks_exact_mut(s.ow * c).enumerate() {
        let oy = first_row + r;
        win.rows = taps_inside(oy, sh, pt, kh, dh, s.h);
        let out_row = out_row.as_mut_ptr();
        let mut ox = 0;
        while ox < s.ow {
            let at = corner(oy, ox);
            if (layout.inner.0..layout.inner.1).contains(&ox) {
                let left = layout.inner.1 - ox;
                let n = [8, 4, 2, 1].into_iter().find(|&n| n <= left).unwrap_or(1);
                win.cols = (0, kw);
                for v in vector_starts(0, c, L::LANES) {
                    let x: [*const f32; POINTS] = std::array::from_fn(|j| {
                        base.wrapping_offset(at + (j * sw * c + v) as isize)
                    });
                    // SAFETY: the window rows are those inside the image for this output row
                    // and the columns whole for these points (inner columns), so every tap
                    // reads inside the image; `v + LANES <= c`.
                    unsafe {
                        let (wv, bv, o) = (w.add(v), bias.add(v), out_row.add(ox * c + v));
                        match n {
                            8 => points8::<L>(&win, &x, wv, bv, o, c),
                            4 => points4::<L>(&win, &x, wv, bv, o, c),
                            2 => points2::<L>(&win, &x, wv, bv, o, c),
                            _ => points1::<L>(&win, &x, wv, bv, o, c),
                        }
                    }
                }
                ox += n;
            } else {
                win.cols = taps_inside(ox, sw, pl, kw, dw, s.w);
                let x = base.wrapping_offset(at);
                let o = unsafe { out_row.add(ox * c) };
                let mut v = 0;
                // SAFETY: the window is narrowed to the taps inside the image; every vector
                // ends at or before channel `c`.
                unsafe {
                    while v + EDGE_VECTORS * L::LANES <= c {
                        channels4::<L>(&win, x.wrapping_add(v), w.add(v), bias.add(v), o.add(v));
                        v += EDGE_VECTORS * L::LANES;
                    }
                    for v in vector_starts(v, c, L::LANES) {
                        channels1::<L>(&win, x.wrapping_add(v), w.add(v), bias.add(v), o.add(v));
                    }
                }
                ox += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_inside_narrow_at_the_edges() {
        // 3 taps, stride 1, pad 1, over 5 values: the first output's tap 0 reads index -1.
        assert_eq!(taps_inside(0, 1, 1, 3, 1, 5), (1, 3));
        assert_eq!(taps_inside(1, 1, 1, 3, 1, 5), (0, 3));
        assert_eq!(taps_inside(4, 1, 1, 3, 1, 5), (0, 2));
        // Pad 2, dilation 2: output 1's taps read -1, 1 and 3.
        assert_eq!(taps_inside(1, 1, 2, 3, 2, 4), (1, 3));
        // A window wholly in the padding reads nothing.
        assert_eq!(taps_inside(0, 1, 4, 3, 1, 2), (3, 3));
        assert_eq!(taps_inside(5, 1, 0, 3, 1, 4), (0, 0));
    }

    #[test]
    fn inner_columns_and_refusals() {
        let shape = PlaneShape {
            h: 7,
            w: 7,
            oh: 7,
            ow: 7,
            kernel: [5, 5],
            strides: [1, 1],
            dilations: [1, 1],
            pad_top_left: [2, 2],
        };
        let layout = ChannelsLastLayout::new(shape, 16).unwrap();
        assert_eq!(layout.inner, (2, 5));
        assert_eq!(layout.tap_offsets[..2], [0, 16]);
        assert_eq!(layout.tap_offsets[5], 7 * 16);
        assert!(ChannelsLastLayout::new(shape, 4).is_none());
        let huge = PlaneShape {
            h: 1 << 40,
            w: 1 << 40,
            ..shape
        };
        assert!(ChannelsLastLayout::new(huge, 16).is_none());
    }

    #[test]
    fn vector_starts_cover_every_channel_once_or_twice() {
        assert_eq!(vector_starts(0, 16, 8).collect::<Vec<_>>(), [0, 8]);
        assert_eq!(vector_starts(0, 19, 8).collect::<Vec<_>>(), [0, 8, 11]);
        assert_eq!(vector_starts(0, 4, 4).collect::<Vec<_>>(), [0]);
        // After the edge points' runs of four vectors: 35 = 32 + 3.
        assert_eq!(vector_starts(32, 35, 8).collect::<Vec<_>>(), [27]);
        assert_eq!(vector_starts(32, 32, 8).count(), 0);
    }
}
