//! One channel's plane: padded into the scratch buffer, then every output computed by one
//! branch-free loop of multiply-adds.
//!
//! Outputs are computed [`JOBS`] vectors at a time (a vector being up to `LANES` adjacent points
//! of one output row; the jobs run over rows, then vectors): eight independent accumulators keep
//! the multiply-add units busy even where a row is a single vector (7x7). Each output is the
//! bias, then one multiply-add per tap in kernel order.

use super::geometry::{MAX_LANES, PaddedLayout, fill_phases};
use super::simd::{Lanes, Portable};

/// Output vectors computed together, each with its own accumulator.
const JOBS: usize = 8;

/// One plane: `src` the input plane, `scratch` the buffer it is padded into (zero wherever it
/// does not hold input), `taps` its channel's kernel, `out` the output plane, every output
/// clamped to `clamp`'s bounds where there are some.
///
/// # Safety
/// `scratch` holds `layout.scratch_len()` values, `taps` `layout.taps()`, `src` `h · w` and `out`
/// `oh · ow`; the CPU has the instructions of the implementation.
pub(in crate::kernels) type PlaneFn =
    unsafe fn(&PaddedLayout, &[f32], &mut [f32], &[f32], f32, Option<(f32, f32)>, &mut [f32]);

/// The vector implementation this CPU runs best on planes of `layout`, and its name (the op's
/// `info` shows it, so a run on a phone or under qemu can tell which kernel its plan holds):
/// on AVX-512 the tiles of rows ([`tiles`](super::tiles)) where they take the plane.
pub(super) fn best_for_this_cpu(layout: &PaddedLayout) -> (&'static str, PlaneFn) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::kernels::cpu::{self, Isa};
        match cpu::available().into_iter().next_back() {
            Some(Isa::Avx512) if super::tiles::takes(layout) => {
                (Isa::Avx512.name(), super::tiles::plane_avx512)
            }
            Some(Isa::Avx512 | Isa::Avx2Fma) => (Isa::Avx2Fma.name(), plane_avx2_fma),
            _ => (Isa::Portable.name(), plane_portable),
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        let _ = layout;
        ("NEON", plane_neon)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = layout;
        ("portable", plane_portable)
    }
}

/// Plain Rust, four lanes.
pub(super) unsafe fn plane_portable(
    layout: &PaddedLayout,
    src: &[f32],
    scratch: &mut [f32],
    taps: &[f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
    out: &mut [f32],
) {
    unsafe { plane::<Portable>(layout, src, scratch, taps, bias, clamp, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_avx2_fma(
    layout: &PaddedLayout,
    src: &[f32],
    scratch: &mut [f32],
    taps: &[f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
    out: &mut [f32],
) {
    unsafe { plane::<super::simd::Avx2Fma>(layout, src, scratch, taps, bias, clamp, out) }
}

#[cfg(target_arch = "aarch64")]
unsafe fn plane_neon(
    layout: &PaddedLayout,
    src: &[f32],
    scratch: &mut [f32],
    taps: &[f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
    out: &mut [f32],
) {
    unsafe { plane::<super::simd::Neon>(layout, src, scratch, taps, bias, clamp, out) }
}

/// Pads the plane, then computes its outputs `JOBS` vectors at a time. The last group repeats
/// the plane's last vector where it runs short, so every group takes the same code; its copies
/// store the same value again.
///
/// # Safety
/// As [`PlaneFn`].
#[inline(always)]
unsafe fn plane<L: Lanes>(
    layout: &PaddedLayout,
    src: &[f32],
    scratch: &mut [f32],
    taps: &[f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
    out: &mut [f32],
) {
    fill::<L>(layout, scratch, src);
    let scratch: &[f32] = scratch;
    let shape = &layout.shape;
    debug_assert!(scratch.len() >= layout.scratch_len());
    debug_assert!(out.len() == shape.oh * shape.ow);
    debug_assert!(taps.len() == layout.taps());
    let vectors = shape.ow.div_ceil(L::LANES);
    let jobs = shape.oh * vectors;
    let row_step = shape.strides[0] * layout.pitch;
    // (input base in the scratch, output offset, lanes) of job `q`: row q / vectors, vector
    // q % vectors.
    let job = |q: usize| -> (usize, usize, usize) {
        let (oy, v) = (q / vectors, q % vectors);
        let x = v * L::LANES;
        (
            oy * row_step + x,
            oy * shape.ow + x,
            L::LANES.min(shape.ow - x),
        )
    };
    let base = scratch.as_ptr();
    let dst = out.as_mut_ptr();
    unsafe {
        let biasv = L::splat(bias);
        let mut q = 0;
        while q < jobs {
            let group: [(usize, usize, usize); JOBS] =
                std::array::from_fn(|j| job((q + j).min(jobs - 1)));
            let p: [*const f32; JOBS] = std::array::from_fn(|j| base.add(group[j].0));
            let mut acc = [biasv; JOBS];
            for (&off, &k) in layout.tap_offsets.iter().zip(taps) {
                let k = L::splat(k);
                // Spelled out: at opt-level "z" LLVM would not unroll a loop over the jobs, and
                // the accumulators would live in memory.
                acc[0] = L::mul_add(acc[0], L::load(p[0].add(off)), k);
                acc[1] = L::mul_add(acc[1], L::load(p[1].add(off)), k);
                acc[2] = L::mul_add(acc[2], L::load(p[2].add(off)), k);
                acc[3] = L::mul_add(acc[3], L::load(p[3].add(off)), k);
                acc[4] = L::mul_add(acc[4], L::load(p[4].add(off)), k);
                acc[5] = L::mul_add(acc[5], L::load(p[5].add(off)), k);
                acc[6] = L::mul_add(acc[6], L::load(p[6].add(off)), k);
                acc[7] = L::mul_add(acc[7], L::load(p[7].add(off)), k);
            }
            for (j, &(_, o, lanes)) in group.iter().enumerate() {
                if let Some((low, high)) = clamp {
                    acc[j] = L::clamp(acc[j], L::splat(low), L::splat(high));
                }
                if lanes == L::LANES {
                    L::store(dst.add(o), acc[j]);
                } else {
                    let mut tail = [0f32; MAX_LANES];
                    L::store(tail.as_mut_ptr(), acc[j]);
                    std::ptr::copy_nonoverlapping(tail.as_ptr(), dst.add(o), lanes);
                }
            }
            q += JOBS;
        }
    }
}

/// Copies one input plane into the padded scratch buffer. Only the positions that hold input
/// are written: they are the same for every plane, so the zeros of the padding, written once
/// when the buffer was made, stay. Vector copies for strides 1 and 2 (de-interleaved into the
/// two phases), element by element otherwise.
#[inline(always)]
pub(in crate::kernels) fn fill<L: Lanes>(layout: &PaddedLayout, scratch: &mut [f32], src: &[f32]) {
    let shape = &layout.shape;
    let (h, w) = (shape.h, shape.w);
    let [pt, pl] = shape.pad_top_left;
    let (s, len) = (shape.strides[1], layout.phase_len);
    for r in pt..layout.rows.min(pt + h) {
        let src = &src[(r - pt) * w..][..w];
        let dst = &mut scratch[r * layout.pitch..][..layout.pitch];
        match s {
            1 => {
                // Padded column j is input column j - pl.
                let n = w.min(len.saturating_sub(pl));
                copy::<L>(&src[..n], &mut dst[pl.min(len)..][..n]);
            }
            2 => fill_two_phases::<L>(src, dst, pl, len),
            _ => fill_phases(src, dst, pl, s, len),
        }
    }
}

/// One row at stride 2. Input column 2m (even) is padded column 2m + pl, input column 2m + 1
/// (odd) the next: with an even pl they are column m + pl/2 of phases 0 and 1, with an odd one
/// column m + pl/2 of phase 1 and m + pl/2 + 1 of phase 0.
#[inline(always)]
fn fill_two_phases<L: Lanes>(src: &[f32], dst: &mut [f32], pl: usize, len: usize) {
    let w = src.len();
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
        // SAFETY: `2 · LANES` values from column 2m are in the row (2(m + LANES) <= w), `LANES`
        // values from `even_at + m` and `odd_at + m` are in their phases (m + LANES <= evens,
        // odds).
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

/// `dst.copy_from_slice(src)`, by vectors: a call to `memmove` per row cost more than the copy
/// on short rows.
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
