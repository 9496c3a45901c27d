//! One channel's plane on AVX-512, by tiles of output rows.
//!
//! The padded plane kernel ([`plane`](super::plane)) loads one input vector per tap and output
//! vector, and rebuilds the place of each of its jobs with a division. Here the plane is padded
//! as there (the rows' last values moved under a mask), then computed by one of three tiles:
//!
//! - rows of two vectors or more: a tile holds `R` output rows of `V` vectors (up to 16 sums),
//!   walks the padded input rows it covers, loads the `V` vectors of each tap column once and
//!   adds them into each of its rows that the row falls in, with that row's tap weight (at
//!   stride 1 a 5x5 window's input row is loaded once for up to five output rows); rows of the
//!   padding are skipped;
//! - rows of one vector (9 to 16 points): a narrow tile of 7, 8 or 14 rows runs every tap over
//!   every row, padding rows included, with no branch, one load and multiply-add per row and
//!   tap (on 14x14 outputs the wide tile's per-row checks cost more than its sums);
//! - rows of at most 8 points: the narrow tile on vectors of 8 lanes, whose loads split
//!   across cache lines half as often.
//!
//! The last vector of a row is stored under a mask: a vector is more than a 7- or 14-point row,
//! so the lanes past the row are computed but not written.
//!
//! Each output is the bias, then the taps of the rows inside the input in kernel order (rows,
//! then columns): the padded plane kernel's order (the wide tiles leave out its zero rows).

use super::geometry::{MAX_LANES, PaddedLayout, fill_phases};

/// Lanes of a vector.
#[cfg(target_arch = "x86_64")]
const LANES: usize = 16;

/// Whether the tiles take planes of `layout`: vertical dilation 1 (an input row then holds one
/// tap row for each output row it falls in), and windows 3 or 5 columns wide (each tile is
/// compiled for its width, so that an input row's columns stay in registers).
pub(super) fn takes(layout: &PaddedLayout) -> bool {
    layout.shape.dilations[0] == 1 && matches!(layout.shape.kernel[1], 3 | 5)
}

/// One plane, as [`PlaneFn`](super::plane::PlaneFn), on AVX-512.
///
/// # Safety
/// As [`PlaneFn`](super::plane::PlaneFn); [`takes`] holds for `layout`, and the CPU has
/// AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn plane_avx512(
    layout: &PaddedLayout,
    src: &[f32],
    scratch: &mut [f32],
    taps: &[f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
    out: &mut [f32],
) {
    unsafe { fill(layout, scratch, src) };
    let shape = &layout.shape;
    debug_assert!(takes(layout));
    debug_assert!(scratch.len() >= layout.scratch_len() && taps.len() == layout.taps());
    debug_assert!(out.len() == shape.oh * shape.ow);
    let plane = Plane {
        layout,
        scratch: &*scratch,
        taps,
        bias,
        clamp,
        out: out.as_mut_ptr(),
    };
    let vectors = shape.ow.div_ceil(LANES);
    // SAFETY: as this function's contract.
    if vectors == 1 && unsafe { plane.narrow() } {
        return;
    }
    // Wider tiles where the row has the vectors: fewer weights per multiply-add. A 5-column
    // window's tiles are at most two vectors wide: 16 sums and 10 input vectors fill the 32
    // registers.
    let widest = if shape.kernel[1] == 3 { 4 } else { 2 };
    let mut v0 = 0;
    while v0 < vectors {
        let v = (vectors - v0).min(widest);
        // SAFETY: vectors `v0..v0 + v` are in the row; the rest as this function's contract.
        unsafe {
            match (shape.kernel[1], v) {
                (3, 4) => plane.columns::<4>(v0, tile_4x4::<3>),
                (3, 3) => plane.columns::<5>(v0, tile_3x5::<3>),
                (3, 2) => plane.columns::<8>(v0, tile_2x8::<3>),
                (3, _) => plane.columns::<16>(v0, tile_1x16::<3>),
                (_, 2) => plane.columns::<8>(v0, tile_2x8::<5>),
                _ => plane.columns::<16>(v0, tile_1x16::<5>),
            }
        }
        v0 += v;
    }
}

/// Copies one input plane into the padded scratch buffer, as [`plane::fill`](super::plane::fill)
/// does, with the rows' last values moved under a mask computed once for the plane: a row of 7,
/// 14 or 28 values is one or two vector moves instead of a call to `memcpy` or a value at a
/// time.
///
/// # Safety
/// The CPU has AVX-512F; `scratch` holds `layout.scratch_len()` values and `src` a plane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn fill(layout: &PaddedLayout, scratch: &mut [f32], src: &[f32]) {
    let shape = &layout.shape;
    let (h, w) = (shape.h, shape.w);
    let [pt, pl] = shape.pad_top_left;
    let (s, len) = (shape.strides[1], layout.phase_len);
    assert!(scratch.len() >= layout.scratch_len() && src.len() >= h * w);
    let rows = pt..layout.rows.min(pt + h);
    let row = |r: usize| (r - pt) * w;
    match s {
        1 => {
            // Padded column j is input column j - pl.
            let (n, at) = (w.min(len.saturating_sub(pl)), pl.min(len));
            let tail = lanes(n % LANES);
            for r in rows {
                // SAFETY: `n` values from the row's start are in both rows.
                unsafe {
                    copy(
                        src.as_ptr().add(row(r)),
                        scratch.as_mut_ptr().add(r * layout.pitch + at),
                        n,
                        tail,
                    )
                };
            }
        }
        2 => {
            let phases = TwoPhases::new(w, pl, len);
            for r in rows {
                // SAFETY: the input row holds `w` values, the scratch row two phases of `len`.
                unsafe {
                    phases.fill(
                        src.as_ptr().add(row(r)),
                        scratch.as_mut_ptr().add(r * layout.pitch),
                    )
                };
            }
        }
        _ => {
            for r in rows {
                let dst = &mut scratch[r * layout.pitch..][..layout.pitch];
                fill_phases(&src[row(r)..][..w], dst, pl, s, len);
            }
        }
    }
}

/// The first `n` lanes (all from sixteen).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn lanes(n: usize) -> u16 {
    if n >= LANES {
        u16::MAX
    } else {
        (1u16 << n) - 1
    }
}

/// `n` values from `src` to `dst`, whole vectors, then the last `n % 16` under `tail`.
///
/// # Safety
/// Both hold `n` values; `tail` is `lanes(n % 16)`; the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn copy(src: *const f32, dst: *mut f32, n: usize, tail: u16) {
    use std::arch::x86_64::*;
    let mut i = 0;
    unsafe {
        while i + LANES <= n {
            _mm512_storeu_ps(dst.add(i), _mm512_loadu_ps(src.add(i)));
            i += LANES;
        }
        if i < n {
            let v = _mm512_maskz_loadu_ps(tail, src.add(i));
            _mm512_mask_storeu_ps(dst.add(i), tail, v);
        }
    }
}

/// Where a row's input columns go at stride 2, the same for every row of a plane: input column
/// 2m is padded column 2m + pl, the odd one the next; with an even pl they are column m + pl/2
/// of phases 0 and 1, with an odd one column m + pl/2 of phase 1 and m + pl/2 + 1 of phase 0.
/// Sixteen of each at a time from 32 input values: `whole` such steps, then at most one under
/// masks.
#[cfg(target_arch = "x86_64")]
struct TwoPhases {
    /// Where the even and the odd input columns start in a scratch row.
    even_at: usize,
    odd_at: usize,
    /// Steps of 16 even and 16 odd values wholly inside the row and its phases.
    whole: usize,
    /// The last step's masks: its input values (first 16, next 16), its even and odd ones.
    tail: Option<[u16; 4]>,
}

#[cfg(target_arch = "x86_64")]
impl TwoPhases {
    fn new(w: usize, pl: usize, len: usize) -> TwoPhases {
        let a = pl / 2;
        let ((even_phase, even_j), (odd_phase, odd_j)) = if pl.is_multiple_of(2) {
            ((0, a), (1, a))
        } else {
            ((1, a), (0, a + 1))
        };
        let evens = w.div_ceil(2).min(len.saturating_sub(even_j));
        let odds = (w / 2).min(len.saturating_sub(odd_j));
        let whole = (w / (2 * LANES)).min(evens / LANES).min(odds / LANES);
        let m = whole * LANES;
        // Past the whole steps fewer than 16 even or odd values are left (or 32 input values).
        let tail = (m < evens.max(odds)).then(|| {
            let left = w - 2 * m;
            [
                lanes(left),
                lanes(left.saturating_sub(LANES)),
                lanes(evens - m),
                lanes(odds.saturating_sub(m)),
            ]
        });
        TwoPhases {
            even_at: even_phase * len + even_j,
            odd_at: odd_phase * len + odd_j,
            whole,
            tail,
        }
    }

    /// One row from `src` into its scratch row at `dst`.
    ///
    /// # Safety
    /// `src` holds the row's `w` values, `dst` two phases of `len` (as built); the CPU has
    /// AVX-512F.
    #[inline(always)]
    unsafe fn fill(&self, src: *const f32, dst: *mut f32) {
        use std::arch::x86_64::*;
        unsafe {
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            let (e_dst, o_dst) = (dst.add(self.even_at), dst.add(self.odd_at));
            for k in 0..self.whole {
                let m = k * LANES;
                let (lo, hi) = (
                    _mm512_loadu_ps(src.add(2 * m)),
                    _mm512_loadu_ps(src.add(2 * m + LANES)),
                );
                _mm512_storeu_ps(e_dst.add(m), _mm512_permutex2var_ps(lo, even, hi));
                _mm512_storeu_ps(o_dst.add(m), _mm512_permutex2var_ps(lo, odd, hi));
            }
            if let Some([lo_mask, hi_mask, e_mask, o_mask]) = self.tail {
                let m = self.whole * LANES;
                let lo = _mm512_maskz_loadu_ps(lo_mask, src.add(2 * m));
                let hi = _mm512_maskz_loadu_ps(hi_mask, src.add(2 * m + LANES));
                _mm512_mask_storeu_ps(e_dst.add(m), e_mask, _mm512_permutex2var_ps(lo, even, hi));
                _mm512_mask_storeu_ps(o_dst.add(m), o_mask, _mm512_permutex2var_ps(lo, odd, hi));
            }
        }
    }
}

/// One plane's data as the tiles read it.
#[cfg(target_arch = "x86_64")]
struct Plane<'a> {
    layout: &'a PaddedLayout,
    scratch: &'a [f32],
    taps: &'a [f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
    out: *mut f32,
}

#[cfg(target_arch = "x86_64")]
impl Plane<'_> {
    /// A plane whose rows are one vector, by [`narrow_tile`]s of 14, 7 or 8 rows (the last one
    /// moved up to end at the last row, where they do not divide the rows); `false` where the
    /// plane has fewer than 7 rows, left to the other tiles.
    ///
    /// # Safety
    /// As [`plane_avx512`]; a row is one vector.
    #[inline(always)]
    unsafe fn narrow(&self) -> bool {
        let (oh, ow) = (self.layout.shape.oh, self.layout.shape.ow);
        let s = &self.layout.shape;
        let whole: Option<WholeFn> = match (oh, ow > LANES / 2, s.strides, s.kernel) {
            _ if s.dilations != [1, 1] => None,
            (14, true, [1, 1], [3, 3]) => Some(rows14_k3_s1),
            (14, true, [1, 1], [5, 5]) => Some(rows14_k5_s1),
            (14, true, [2, 2], [3, 3]) => Some(rows14_k3_s2),
            (7, false, [1, 1], [3, 3]) => Some(rows7_k3_s1),
            _ => None,
        };
        if let Some(tile) = whole {
            // SAFETY: the plane is as `tile` was compiled for (rows, width, stride, window).
            return unsafe { tile(self) };
        }
        let half = ow <= LANES / 2;
        let (rows, tile): (usize, NarrowFn) = match oh {
            _ if half && oh.is_multiple_of(7) => (7, half_7),
            8.. if half => (8, half_8),
            _ if oh.is_multiple_of(14) => (14, narrow_14),
            _ if oh.is_multiple_of(7) => (7, narrow_7),
            8.. => (8, narrow_8),
            _ => return false,
        };
        let mut oy = 0;
        while oy < oh {
            // SAFETY: rows `oy..oy + rows` are in the plane (rows <= oh).
            unsafe { tile(self, oy.min(oh - rows)) };
            oy += rows;
        }
        true
    }

    /// The output vectors from `v0` (as many as `tile` computes) of every row, `R` rows at a
    /// time by `tile`.
    ///
    /// # Safety
    /// As [`plane_avx512`]; `tile` computes `R` rows of vectors that are in a row from `v0`, for
    /// the plane's window width.
    #[inline(always)]
    unsafe fn columns<const R: usize>(&self, v0: usize, tile: TileFn) {
        let oh = self.layout.shape.oh;
        let mut oy = 0;
        while oy < oh {
            let rows = (oh - oy).min(R);
            // SAFETY: as this function's contract, rows `oy..oy + rows` are in the plane.
            unsafe { tile(self, oy, rows, v0) };
            oy += rows;
        }
    }

    /// The tile's sums, clamped where the op has bounds, to output rows `oy..oy + rows` from
    /// column `x0`; the lanes past the row's end are not written.
    ///
    /// # Safety
    /// As [`Plane::tile`].
    #[inline(always)]
    unsafe fn store<const V: usize, const R: usize>(
        &self,
        acc: &[[std::arch::x86_64::__m512; V]; R],
        oy: usize,
        rows: usize,
        x0: usize,
    ) {
        use std::arch::x86_64::*;
        let ow = self.layout.shape.ow;
        unsafe {
            let bounds = self
                .clamp
                .map(|(low, high)| (_mm512_set1_ps(low), _mm512_set1_ps(high)));
            for (r, acc) in acc.iter().enumerate().take(rows) {
                let dst = self.out.add((oy + r) * ow);
                for (v, &a) in acc.iter().enumerate() {
                    // As the other kernels' clamp: `a` second, so a NaN passes through.
                    let a = match bounds {
                        Some((low, high)) => _mm512_min_ps(high, _mm512_max_ps(low, a)),
                        None => a,
                    };
                    let x = x0 + v * LANES;
                    let lanes = (ow - x).min(LANES);
                    let mask = ((1u32 << lanes) - 1) as u16;
                    _mm512_mask_storeu_ps(dst.add(x), mask, a);
                }
            }
        }
    }
}

/// Computes output rows `oy..oy + rows` (at most the tile's), vectors `v0..` (the tile's
/// width) of a plane.
#[cfg(target_arch = "x86_64")]
type TileFn = unsafe fn(&Plane, usize, usize, usize);

/// Defines a tile of `$v` vectors by the rows `$r`, for windows `KW` columns wide: each of the
/// tile's rows spelled out, so that every sum is a register (a loop over them, unrolled or not,
/// kept them in memory). Each padded input row's `KW · $v` vectors are loaded once, then added
/// into every row of the tile whose window holds it.
macro_rules! tile {
    ($name:ident, $v:literal, [$($r:literal),+]) => {
        /// # Safety
        /// As [`Plane::columns`]: rows `oy..oy + rows` and vectors `v0..v0 + $v` are in the
        /// plane, whose window is `KW` columns wide.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn $name<const KW: usize>(plane: &Plane, oy: usize, rows: usize, v0: usize) {
            use std::arch::x86_64::*;
            const R: usize = [$($r),+].len();
            let layout = plane.layout;
            let s = &layout.shape;
            let kh = s.kernel[0];
            debug_assert!(s.kernel[1] == KW);
            let sh = s.strides[0];
            let pt = s.pad_top_left[0];
            let x0 = v0 * LANES;
            unsafe {
                let b = _mm512_set1_ps(plane.bias);
                let mut acc = [[b; $v]; R];
                // Padded rows `first..first + span` are under the tile's windows; those
                // holding input are `pt..pt + h`.
                let first = oy * sh;
                let span = (rows - 1) * sh + kh;
                let (lo, hi) = (pt.max(first), (pt + s.h).min(first + span));
                let base = plane.scratch.as_ptr().add(x0);
                let offsets = &layout.tap_offsets[..KW];
                for p in lo..hi {
                    let i = p - first;
                    let row = base.add(p * layout.pitch);
                    // Column kx of the window at its place in the padded row (its phase and
                    // shift).
                    let mut x = [[_mm512_setzero_ps(); $v]; KW];
                    for (x, &off) in x.iter_mut().zip(offsets) {
                        for (v, x) in x.iter_mut().enumerate() {
                            *x = _mm512_loadu_ps(row.add(off + v * LANES));
                        }
                    }
                    $(
                        // Output row r reads padded row first + r·sh at tap row ky.
                        let ky = i.wrapping_sub($r * sh);
                        if $r < rows && ky < kh {
                            let w = plane.taps.as_ptr().add(ky * KW);
                            for (kx, x) in x.iter().enumerate() {
                                let w = _mm512_set1_ps(*w.add(kx));
                                for (a, &x) in acc[$r].iter_mut().zip(x) {
                                    *a = _mm512_fmadd_ps(x, w, *a);
                                }
                            }
                        }
                    )+
                }
                plane.store::<$v, R>(&acc, oy, rows, x0);
            }
        }
    };
}

/// Computes a whole plane of the rows, window and stride it was compiled for.
#[cfg(target_arch = "x86_64")]
type WholeFn = unsafe fn(&Plane) -> bool;

/// Computes output rows `oy..` (as many as the tile's) of a plane whose rows are one vector.
#[cfg(target_arch = "x86_64")]
type NarrowFn = unsafe fn(&Plane, usize);

/// Defines a tile of the rows `$r`, one vector each, for planes of narrow rows (7 or 14 points):
/// for each tap in kernel order, its weight times the tap's input vector of each row, padding
/// rows included (zeros), so that the tile takes no branch: one multiply-add with its load per
/// row and tap.
macro_rules! narrow_tile {
    ($name:ident, [$($r:literal),+]) => {
        /// # Safety
        /// As [`Plane::narrow`]: rows `oy..oy + R` are in the plane.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn $name(plane: &Plane, oy: usize) {
            use std::arch::x86_64::*;
            const R: usize = [$($r),+].len();
            let layout = plane.layout;
            // From one output row's first padded row to the next's.
            let step = layout.shape.strides[0] * layout.pitch;
            unsafe {
                let mut acc = [[_mm512_set1_ps(plane.bias)]; R];
                let base = plane.scratch.as_ptr().add(oy * step);
                for (&off, &w) in layout.tap_offsets.iter().zip(plane.taps) {
                    let at = base.add(off);
                    let w = _mm512_set1_ps(w);
                    $( acc[$r][0] = _mm512_fmadd_ps(_mm512_loadu_ps(at.add($r * step)), w, acc[$r][0]); )+
                }
                plane.store::<1, R>(&acc, oy, R, 0);
            }
        }
    };
}

/// Defines a tile of a whole plane of the rows `$rows` (one vector each, stride 1, a `$k`x`$k`
/// window without dilation), its schedule fixed when compiled: each padded row `$p` is loaded
/// once per tap column and added into each output row whose window holds it (the row pairs
/// are constants, so the compiler keeps only those), padding rows included. The narrow tiles
/// load once per row and tap, `$k` times as often.
macro_rules! whole_plane_tile {
    ($name:ident, $k:literal, $s:literal, $rows:tt, [$($p:literal),+]) => {
        /// # Safety
        /// As [`Plane::narrow`]; the plane is as the tile was compiled for.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn $name(plane: &Plane) -> bool {
            use std::arch::x86_64::*;
            let layout = plane.layout;
            const R: usize = whole_plane_tile!(@count $rows);
            debug_assert!(layout.shape.oh == R && layout.shape.kernel == [$k, $k]);
            debug_assert!(layout.shape.strides[0] == $s);
            let pitch = layout.pitch;
            let offsets = &layout.tap_offsets[..$k];
            let w = plane.taps.as_ptr();
            unsafe {
                let mut acc = [[_mm512_set1_ps(plane.bias)]; R];
                let base = plane.scratch.as_ptr();
                $( whole_plane_tile!(@row $k, $s, $p, $rows, acc, base, pitch, offsets, w); )+
                plane.store::<1, R>(&acc, 0, R, 0);
            }
            true
        }
    };
    (@count [$($r:literal),+]) => { [$($r),+].len() };
    (@row $k:literal, $s:literal, $p:literal, [$($r:literal),+], $acc:ident, $base:ident, $pitch:ident, $offsets:ident, $w:ident) => {{
        let row = $base.add($p * $pitch);
        let mut x = [_mm512_setzero_ps(); $k];
        for (x, &off) in x.iter_mut().zip($offsets) {
            *x = _mm512_loadu_ps(row.add(off));
        }
        $(
            // Output row r reads padded row p at tap row p - r·s.
            if $p >= $r * $s && $p - $r * $s < $k {
                let ky: usize = $p - $r * $s;
                for (kx, &x) in x.iter().enumerate() {
                    let wv = _mm512_set1_ps(*$w.add(ky * $k + kx));
                    $acc[$r][0] = _mm512_fmadd_ps(x, wv, $acc[$r][0]);
                }
            }
        )+
    }};
}

/// As `whole_plane_tile`, on vectors of 8 lanes for rows of at most 8 points (as `half_tile`).
macro_rules! whole_plane_half {
    ($name:ident, $k:literal, $s:literal, $rows:tt, [$($p:literal),+]) => {
        /// # Safety
        /// As [`Plane::narrow`]; the plane is as the tile was compiled for.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn $name(plane: &Plane) -> bool {
            use std::arch::x86_64::*;
            let layout = plane.layout;
            const R: usize = whole_plane_tile!(@count $rows);
            debug_assert!(layout.shape.oh == R && layout.shape.kernel == [$k, $k]);
            debug_assert!(layout.shape.strides[0] == $s && layout.shape.ow <= 8);
            let (pitch, ow) = (layout.pitch, layout.shape.ow);
            let offsets = &layout.tap_offsets[..$k];
            let w = plane.taps.as_ptr();
            unsafe {
                let mut acc = [_mm256_set1_ps(plane.bias); R];
                let base = plane.scratch.as_ptr();
                $( whole_plane_half!(@row $k, $s, $p, $rows, acc, base, pitch, offsets, w); )+
                // Lane i is stored where i < ow: its mask element has the sign bit set.
                let mask = _mm256_cmpgt_epi32(
                    _mm256_set1_epi32(ow as i32),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                );
                for (r, &a) in acc.iter().enumerate() {
                    // As the other kernels' clamp: `a` second, so a NaN passes through.
                    let a = match plane.clamp {
                        Some((low, high)) => _mm256_min_ps(
                            _mm256_set1_ps(high),
                            _mm256_max_ps(_mm256_set1_ps(low), a),
                        ),
                        None => a,
                    };
                    _mm256_maskstore_ps(plane.out.add(r * ow), mask, a);
                }
            }
            true
        }
    };
    (@row $k:literal, $s:literal, $p:literal, [$($r:literal),+], $acc:ident, $base:ident, $pitch:ident, $offsets:ident, $w:ident) => {{
        let row = $base.add($p * $pitch);
        let mut x = [_mm256_setzero_ps(); $k];
        for (x, &off) in x.iter_mut().zip($offsets) {
            *x = _mm256_loadu_ps(row.add(off));
        }
        $(
            // Output row r reads padded row p at tap row p - r·s.
            if $p >= $r * $s && $p - $r * $s < $k {
                let ky: usize = $p - $r * $s;
                for (kx, &x) in x.iter().enumerate() {
                    let wv = _mm256_set1_ps(*$w.add(ky * $k + kx));
                    $acc[$r] = _mm256_fmadd_ps(x, wv, $acc[$r]);
                }
            }
        )+
    }};
}

// EfficientNet-Lite0's planes of 14 and 7 output rows: its 14x14 layers and 28x28 3x3 one at
// stride 2 on 16 lanes, its 7x7 3x3 one on 8. Its 7x7 5x5 planes (stride 1 or 2) were no faster
// so than on the narrow tiles (depthwise_layouts: 0.98 and 1.1 of their time): with 25 weights
// the sums cannot keep their weights in registers, and one broadcast per multiply-add is as
// many loads as the narrow tiles' one input load.
whole_plane_tile!(
    rows14_k3_s1,
    3,
    1,
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
);
whole_plane_tile!(
    rows14_k5_s1,
    5,
    1,
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]
);
whole_plane_tile!(
    rows14_k3_s2,
    3,
    2,
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
    [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
        25, 26, 27, 28
    ]
);
whole_plane_half!(
    rows7_k3_s1,
    3,
    1,
    [0, 1, 2, 3, 4, 5, 6],
    [0, 1, 2, 3, 4, 5, 6, 7, 8]
);

/// Defines a narrow tile of the rows `$r` for rows of at most 8 points, as `narrow_tile` on
/// vectors of 8 lanes: the same multiply-adds as on 16 (one per row and tap), with loads of
/// 32 bytes, which split across cache lines half as often as loads of 64.
macro_rules! half_tile {
    ($name:ident, [$($r:literal),+]) => {
        /// # Safety
        /// As [`Plane::narrow`]: rows `oy..oy + R` are in the plane, of at most 8 points.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn $name(plane: &Plane, oy: usize) {
            use std::arch::x86_64::*;
            const R: usize = [$($r),+].len();
            let layout = plane.layout;
            let ow = layout.shape.ow;
            let step = layout.shape.strides[0] * layout.pitch;
            unsafe {
                let mut acc = [_mm256_set1_ps(plane.bias); R];
                let base = plane.scratch.as_ptr().add(oy * step);
                for (&off, &w) in layout.tap_offsets.iter().zip(plane.taps) {
                    let at = base.add(off);
                    let w = _mm256_set1_ps(w);
                    $( acc[$r] = _mm256_fmadd_ps(_mm256_loadu_ps(at.add($r * step)), w, acc[$r]); )+
                }
                // Lane i is stored where i < ow: its mask element has the sign bit set.
                let mask = _mm256_cmpgt_epi32(
                    _mm256_set1_epi32(ow as i32),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                );
                for (r, &a) in acc.iter().enumerate() {
                    // As the other kernels' clamp: `a` second, so a NaN passes through.
                    let a = match plane.clamp {
                        Some((low, high)) => _mm256_min_ps(
                            _mm256_set1_ps(high),
                            _mm256_max_ps(_mm256_set1_ps(low), a),
                        ),
                        None => a,
                    };
                    _mm256_maskstore_ps(plane.out.add((oy + r) * ow), mask, a);
                }
            }
        }
    };
}

half_tile!(half_8, [0, 1, 2, 3, 4, 5, 6, 7]);
half_tile!(half_7, [0, 1, 2, 3, 4, 5, 6]);

narrow_tile!(narrow_14, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
narrow_tile!(narrow_8, [0, 1, 2, 3, 4, 5, 6, 7]);
narrow_tile!(narrow_7, [0, 1, 2, 3, 4, 5, 6]);

tile!(tile_4x4, 4, [0, 1, 2, 3]);
tile!(tile_3x5, 3, [0, 1, 2, 3, 4]);
tile!(tile_2x8, 2, [0, 1, 2, 3, 4, 5, 6, 7]);
tile!(
    tile_1x16,
    1,
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
);

// The scratch rows hold a whole vector from every output column a row has.
#[cfg(target_arch = "x86_64")]
const _: () = assert!(LANES <= MAX_LANES);
