//! A band of output rows' input, padded: where each value lives in the scratch buffer, the
//! offset of every kernel tap in it, and the copy of the input rows into it.
//!
//! A band is `band` consecutive output rows. Their input rows, for every input channel, are
//! copied into the scratch buffer with their zero padding, so that each output point's inputs
//! sit at fixed offsets from one base and every tile takes the same branch-free loop. For a
//! horizontal stride `s` each padded row is stored as `s` phases, phase `p` holding the padded
//! columns `p, p + s, p + 2s, …` (de-interleaved once per row): the input of output column `x` at
//! horizontal tap `kx` is then column `x + (kx·d) / s` of phase `(kx·d) % s` (`d` the dilation),
//! so strided convolutions read contiguous vectors too.
//!
//! Bands rather than whole planes: a band of a 224-wide RGB image is a few tens of kilobytes,
//! re-read by every tile of the band from the nearest cache, where the padded image would be
//! 600 KB.

use super::super::depthwise::PlaneShape;
use super::super::lanes::Lanes;

/// Values past the last phase of the buffer, read by the full vectors of a row's last strip
/// (their lanes past the row are not stored): the widest vector.
pub(super) const SLACK: usize = 16;

/// The scratch buffer is sized for about this many f32 (32 KB, within a core's first-level
/// cache) where a band of a single output row does not need more.
const SCRATCH_TARGET: usize = 8 * 1024;

/// Scratch buffers larger than this (in f32) are refused: such convolutions stay on tract's
/// path.
const MAX_SCRATCH: usize = 1 << 24;

/// Where the inputs of one band of output rows live in the scratch buffer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct BandLayout {
    pub(super) shape: PlaneShape,
    /// Input channels.
    pub(super) cin: usize,
    /// Output rows per band.
    pub(super) band: usize,
    /// Padded rows a band holds, per input channel.
    pub(super) rows: usize,
    /// Columns of one phase of a padded row.
    pub(super) phase_len: usize,
    /// One padded row: `stride_w` phases.
    pub(super) pitch: usize,
    /// For each input of an output point, in the kernel's order (input channels, rows, columns),
    /// its offset in the scratch buffer from the point's base.
    pub(super) tap_offsets: Vec<usize>,
}

impl BandLayout {
    /// The layout for `cin` input channels of `shape`, or `None` where a size is zero, an offset
    /// overflows, or the buffer would exceed [`MAX_SCRATCH`] values.
    pub(super) fn new(shape: PlaneShape, cin: usize) -> Option<BandLayout> {
        let [kh, kw] = shape.kernel;
        let [sh, sw] = shape.strides;
        let [dh, dw] = shape.dilations;
        if [cin, kh, kw, sh, sw, dh, dw, shape.oh, shape.ow].contains(&0) {
            return None;
        }
        // Padded rows `n` output rows read: (n - 1)·stride + (k - 1)·dilation + 1.
        let rows_for = |n: usize| -> Option<usize> {
            (n - 1)
                .checked_mul(sh)?
                .checked_add((kh - 1).checked_mul(dh)?)?
                .checked_add(1)
        };
        let max_shift = (kw - 1).checked_mul(dw)? / sw;
        let phase_len = shape.ow.checked_add(max_shift)?;
        let pitch = phase_len.checked_mul(sw)?;
        let per_row = cin.checked_mul(pitch)?;
        let one_row = rows_for(1)?.checked_mul(per_row)?;
        if one_row > MAX_SCRATCH {
            return None;
        }
        // More output rows while the buffer stays within the target: each adds `sh` rows.
        let extra = SCRATCH_TARGET.saturating_sub(one_row) / sh.checked_mul(per_row)?;
        let band = (1 + extra).min(shape.oh);
        let rows = rows_for(band)?;
        let mut tap_offsets = Vec::with_capacity(cin.checked_mul(kh)?.checked_mul(kw)?);
        for c in 0..cin {
            for ky in 0..kh {
                for kx in 0..kw {
                    let x = kx.checked_mul(dw)?;
                    let channel = c.checked_mul(rows)?.checked_mul(pitch)?;
                    let row = ky.checked_mul(dh)?.checked_mul(pitch)?;
                    let phase = (x % sw) * phase_len;
                    tap_offsets.push(channel.checked_add(row)?.checked_add(phase)? + x / sw);
                }
            }
        }
        Some(BandLayout {
            shape,
            cin,
            band,
            rows,
            phase_len,
            pitch,
            tap_offsets,
        })
    }

    /// Values in one scratch buffer, the slack included.
    pub(super) fn scratch_len(&self) -> usize {
        self.cin * self.rows * self.pitch + SLACK
    }

    /// Inputs per output point.
    pub(super) fn taps(&self) -> usize {
        self.tap_offsets.len()
    }

    /// The offset of output point (`oy`, `ox`)'s base in the buffer of the band starting at
    /// output row `first`.
    pub(super) fn base(&self, first: usize, oy: usize, ox: usize) -> usize {
        (oy - first) * self.shape.strides[0] * self.pitch + ox
    }

    /// Copies the input rows of the band starting at output row `first` from `image` (`cin`
    /// planes of `h · w`) into `scratch`, zeros where they are padding. Every value a tile may
    /// store from is written. Inlined into each kernel, so that its vector copies are compiled
    /// with the kernel's instruction set.
    #[inline(always)]
    pub(super) fn fill<L: Deinterleave>(&self, scratch: &mut [f32], image: &[f32], first: usize) {
        let shape = &self.shape;
        let (h, w) = (shape.h, shape.w);
        let top = first * shape.strides[0];
        let channel = self.rows * self.pitch;
        for (c, dst) in scratch.chunks_exact_mut(channel).take(self.cin).enumerate() {
            let plane = &image[c * h * w..][..h * w];
            for (r, dst) in dst.chunks_exact_mut(self.pitch).enumerate() {
                // Padded row `top + r` is input row `top + r - pad_top` where that is one.
                match (top + r).checked_sub(shape.pad_top_left[0]) {
                    Some(y) if y < h => self.fill_row::<L>(&plane[y * w..][..w], dst),
                    _ => dst.fill(0.0),
                }
            }
        }
    }

    /// One padded row: zeros outside the input, then the input de-interleaved into its phases.
    #[inline(always)]
    fn fill_row<L: Deinterleave>(&self, src: &[f32], dst: &mut [f32]) {
        let (s, len) = (self.shape.strides[1], self.phase_len);
        let pl = self.shape.pad_top_left[1];
        for (p, phase) in dst.chunks_exact_mut(len).enumerate() {
            let (j0, j1) = valid_columns(src.len(), pl, s, p, len);
            phase[..j0].fill(0.0);
            phase[j1..].fill(0.0);
            if s > 2 && j1 > j0 {
                // Column j of phase p is padded column j·s + p, input column j·s + p - pl.
                let x0 = j0 * s + p - pl;
                for (d, x) in phase[j0..j1].iter_mut().zip(src[x0..].iter().step_by(s)) {
                    *d = *x;
                }
            }
        }
        match s {
            1 => {
                // Padded column j is input column j - pl.
                let (j0, j1) = valid_columns(src.len(), pl, 1, 0, len);
                copy::<L>(&src[j0.saturating_sub(pl)..], &mut dst[j0..j1]);
            }
            2 => self.fill_two_phases::<L>(src, dst),
            _ => {}
        }
    }

    /// One row at stride 2: input column 2m (even) is padded column 2m + pl, input column 2m + 1
    /// (odd) the next: with an even pl they are column m + pl/2 of phases 0 and 1, with an odd
    /// one column m + pl/2 of phase 1 and m + pl/2 + 1 of phase 0.
    #[inline(always)]
    fn fill_two_phases<L: Deinterleave>(&self, src: &[f32], dst: &mut [f32]) {
        let (len, pl, w) = (self.phase_len, self.shape.pad_top_left[1], src.len());
        let a = pl / 2;
        let ((even_phase, even_j), (odd_phase, odd_j)) = if pl.is_multiple_of(2) {
            ((0, a), (1, a))
        } else {
            ((1, a), (0, a + 1))
        };
        let evens = w.div_ceil(2).min(len.saturating_sub(even_j));
        let odds = (w / 2).min(len.saturating_sub(odd_j));
        let (even_at, odd_at) = (even_phase * len + even_j, odd_phase * len + odd_j);
        let both = evens.min(odds);
        let mut m = 0;
        while m + L::LANES <= both && 2 * (m + L::LANES) <= w {
            // SAFETY: `2 · LANES` values from column 2m are in the row (2(m + LANES) <= w),
            // `LANES` values from `even_at + m` and `odd_at + m` are in their phases
            // (m + LANES <= evens, odds).
            unsafe {
                let (e, o) = L::load_deinterleaved(src.as_ptr().add(2 * m));
                L::store(dst.as_mut_ptr().add(even_at + m), e);
                L::store(dst.as_mut_ptr().add(odd_at + m), o);
            }
            m += L::LANES;
        }
        for i in m..evens {
            dst[even_at + i] = src[2 * i];
        }
        for i in m..odds {
            dst[odd_at + i] = src[2 * i + 1];
        }
    }
}

/// The columns `j0..j1` of phase `p` (of `len` columns, stride `s`) that hold input: padded
/// column `j·s + p` is input column `j·s + p - pl`, inside a row of `w` values.
#[inline(always)]
fn valid_columns(w: usize, pl: usize, s: usize, p: usize, len: usize) -> (usize, usize) {
    let j0 = if pl > p { (pl - p).div_ceil(s) } else { 0 };
    let j1 = if w + pl > p {
        (w + pl - p).div_ceil(s)
    } else {
        0
    };
    (j0.min(len), j1.min(len).max(j0.min(len)))
}

/// `dst.copy_from_slice(&src[..dst.len()])`, by vectors: a call to `memmove` per row cost more
/// than the copy on short rows.
#[inline(always)]
fn copy<L: Lanes>(src: &[f32], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + L::LANES <= n {
        // SAFETY: `LANES` values from `i` are in both slices.
        unsafe { L::store(dst.as_mut_ptr().add(i), L::load(src.as_ptr().add(i))) };
        i += L::LANES;
    }
    dst[i..n].copy_from_slice(&src[i..n]);
}

/// Vectors that can also be loaded de-interleaved (the stride-2 copy).
pub(super) trait Deinterleave: Lanes {
    /// The even and the odd elements of the `2 · LANES` values from `p`.
    unsafe fn load_deinterleaved(p: *const f32) -> (Self::V, Self::V);
}

impl Deinterleave for super::super::lanes::Portable {
    #[inline(always)]
    unsafe fn load_deinterleaved(p: *const f32) -> (Self::V, Self::V) {
        let v = unsafe { std::ptr::read_unaligned(p as *const [f32; 8]) };
        ([v[0], v[2], v[4], v[6]], [v[1], v[3], v[5], v[7]])
    }
}

#[cfg(target_arch = "x86_64")]
impl Deinterleave for super::super::lanes::Avx2Fma {
    #[inline(always)]
    unsafe fn load_deinterleaved(p: *const f32) -> (Self::V, Self::V) {
        use std::arch::x86_64::*;
        unsafe {
            let (a, b) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
            // Per 128-bit half: a0 a2 b0 b2 | a4 a6 b4 b6, then the 64-bit quarters reordered.
            let even = _mm256_castps_pd(_mm256_shuffle_ps::<0b10_00_10_00>(a, b));
            let odd = _mm256_castps_pd(_mm256_shuffle_ps::<0b11_01_11_01>(a, b));
            (
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(even)),
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(odd)),
            )
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Deinterleave for super::super::lanes::Avx512 {
    #[inline(always)]
    unsafe fn load_deinterleaved(p: *const f32) -> (Self::V, Self::V) {
        use std::arch::x86_64::*;
        unsafe {
            let (a, b) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
            // Index i < 16 picks a[i], 16 + i picks b[i].
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            (
                _mm512_permutex2var_ps(a, even, b),
                _mm512_permutex2var_ps(a, odd, b),
            )
        }
    }
}

#[cfg(target_arch = "aarch64")]
impl Deinterleave for super::super::lanes::Neon {
    #[inline(always)]
    unsafe fn load_deinterleaved(p: *const f32) -> (Self::V, Self::V) {
        let v = unsafe { std::arch::aarch64::vld2q_f32(p) };
        (v.0, v.1)
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::lanes::Portable;
    use super::*;

    fn shape(k: usize, s: usize, hw: usize, out: usize, pad: usize) -> PlaneShape {
        PlaneShape {
            h: hw,
            w: hw,
            oh: out,
            ow: out,
            kernel: [k, k],
            strides: [s, s],
            dilations: [1, 1],
            pad_top_left: [pad, pad],
        }
    }

    /// Every value of a filled band is the padded input at its phase and column.
    #[test]
    fn filled_band_is_the_padded_input() {
        for (k, s, hw, out, pad) in [
            (3, 2, 13, 7, 1),
            (3, 2, 12, 6, 0),
            (3, 1, 9, 9, 1),
            (5, 3, 11, 4, 2),
        ] {
            let layout = BandLayout::new(shape(k, s, hw, out, pad), 2).unwrap();
            let image: Vec<f32> = (0..2 * hw * hw).map(|i| i as f32 + 1.0).collect();
            for first in (0..out).step_by(layout.band) {
                let mut scratch = vec![f32::NAN; layout.scratch_len()];
                layout.fill::<Portable>(&mut scratch, &image, first);
                for c in 0..2 {
                    for r in 0..layout.rows {
                        for p in 0..s {
                            for j in 0..layout.phase_len {
                                let y = (first * s + r) as isize - pad as isize;
                                let x = (j * s + p) as isize - pad as isize;
                                let inside =
                                    (0..hw as isize).contains(&y) && (0..hw as isize).contains(&x);
                                let want = if inside {
                                    image[(c * hw + y as usize) * hw + x as usize]
                                } else {
                                    0.0
                                };
                                let at =
                                    (c * layout.rows + r) * layout.pitch + p * layout.phase_len + j;
                                assert_eq!(
                                    scratch[at], want,
                                    "k {k} s {s} c {c} r {r} p {p} j {j}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn zero_sizes_and_huge_rows_are_refused() {
        assert!(BandLayout::new(shape(0, 1, 8, 8, 0), 3).is_none());
        assert!(BandLayout::new(shape(3, 0, 8, 8, 0), 3).is_none());
        assert!(BandLayout::new(shape(3, 1, 8, 8, 1), 0).is_none());
        assert!(BandLayout::new(shape(3, 1, 1 << 22, 1 << 22, 1), 4).is_none());
    }
}
