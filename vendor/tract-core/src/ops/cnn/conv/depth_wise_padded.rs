//! Depthwise 2-D convolution of channel-first f32 data (NCHW or CHW) through a padded copy of
//! each input plane.
//!
//! The zone walk of [`super::DepthWise`] splits every plane into a valid zone and border zones
//! and runs each border zone on a generic path that re-checks which taps fall inside the image;
//! at 7x7 with a 5x5 kernel and a pad of 2, almost every output is in a border zone. Strided
//! zones (`stride 2`, a quarter of EfficientNet-Lite0's depthwise work) stay scalar there too.
//! Here each plane is first copied into a zero-padded scratch buffer, so that every output point
//! takes the same branch-free loop: the bias, then one fused multiply-add per tap, on a vector of
//! adjacent output points of one row. The copy costs one move per input element, against
//! 9 to 25 multiply-adds per output element.
//!
//! For a horizontal stride `s`, every padded row is stored as `s` phases, phase `p` holding the
//! padded columns `p, p + s, p + 2s, …`: the input of output column `x` at horizontal tap `kx`
//! is then column `x + (kx·d) / s` of phase `(kx·d) % s` (`d` the dilation), so strided
//! convolutions read contiguous vectors as well.
//!
//! Outputs are computed `JOBS` vectors at a time (a vector being up to `LANES` adjacent points of
//! one output row, the job list running over rows and then vectors): eight independent
//! accumulators keep the multiply-add units busy even where a row is a single vector (7x7).
//! The vector code is written with `std::arch` (AVX2+FMA on x86_64 when the CPU has them, NEON on
//! aarch64), not left to the autovectoriser: the phone build (`opt-level = "z"`) does not
//! vectorise loops. Elsewhere a plain-Rust four-lane version computes the same thing.
//!
//! The sums are those of the zone walk (the bias first, then the taps in kernel order), with
//! fused multiply-adds on the vector paths, so results agree with it to rounding.

use crate::internal::*;
use crate::ops::cnn::Patch;
use crate::ops::nn::DataShape;

crate::declare_knob!(
    scopable TRACT_DEPTHWISE_PORTABLE,
    bool,
    false,
    "Run the padded-plane depthwise kernel in plain Rust (four lanes) even where a vector kernel exists (tests)."
);

/// Output vectors computed together, each with its own accumulator.
const JOBS: usize = 8;

/// The widest vector any implementation uses; rows of the scratch buffer are padded so that a
/// whole vector can be loaded at every output column a row holds.
const MAX_LANES: usize = 8;

/// Scratch buffers larger than this (in f32) are not worth it: the zone walk takes those planes.
const MAX_SCRATCH: usize = 1 << 24;

/// The geometry of one depthwise convolution on channel-first f32 planes, for the padded path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PaddedPlan {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    pad_top: usize,
    pad_left: usize,
    stride_h: usize,
    stride_w: usize,
    /// Padded rows the scratch holds.
    rows: usize,
    /// Columns of one phase of a scratch row.
    phase_len: usize,
    /// One scratch row: `stride_w` phases.
    pitch: usize,
    /// For each tap, in kernel order, its offset in the scratch buffer from the first padded
    /// row and column an output point reads.
    tap_offsets: Vec<usize>,
    n_stride_i: usize,
    c_stride_i: usize,
    n_stride_o: usize,
    c_stride_o: usize,
    /// Runs the plain-Rust four-lane kernel even where a vector one exists (knob
    /// `TRACT_DEPTHWISE_PORTABLE`): lets x86_64 tests cover the code NEON machines run in the
    /// same four-lane layout.
    portable: bool,
}

impl PaddedPlan {
    /// The plan of a depthwise convolution, or `None` where it is not one this path runs:
    /// channel-last data, other than two spatial axes, non-contiguous planes, or a scratch
    /// buffer over [`MAX_SCRATCH`].
    pub(super) fn new(
        patch: &Patch,
        input_shape: &DataShape,
        output_shape: &DataShape,
    ) -> Option<PaddedPlan> {
        if input_shape.fmt.c_is_last() || output_shape.fmt.c_is_last() {
            return None;
        }
        let spec = &patch.spec;
        if spec.kernel_shape.len() != 2
            || input_shape.hw_dims().len() != 2
            || patch.output_shape.len() != 2
            || spec.strides.len() != 2
            || spec.dilations.len() != 2
            || patch.pad_before.len() != 2
        {
            return None;
        }
        let (h, w) = (input_shape.hw_dims()[0], input_shape.hw_dims()[1]);
        let (oh, ow) = (patch.output_shape[0], patch.output_shape[1]);
        let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
        let (sh, sw) = (spec.strides[0], spec.strides[1]);
        let (dh, dw) = (spec.dilations[0], spec.dilations[1]);
        let c = *input_shape.c();
        if output_shape.hw_dims() != [oh, ow]
            || *output_shape.c() != c
            || input_shape.hw_strides() != [w, 1]
            || output_shape.hw_strides() != [ow, 1]
            || kh == 0
            || kw == 0
            || sh == 0
            || sw == 0
            || dh == 0
            || dw == 0
        {
            return None;
        }
        let n = *input_shape.n().unwrap_or(&1);
        if output_shape.n().unwrap_or(&1) != &n {
            return None;
        }
        let c_stride_i = *input_shape.c_stride();
        let c_stride_o = *output_shape.c_stride();
        let n_stride_i = *input_shape.n_stride().unwrap_or(&(c * c_stride_i));
        let n_stride_o = *output_shape.n_stride().unwrap_or(&(c * c_stride_o));
        if c_stride_o != oh * ow || n_stride_o != c * c_stride_o || c_stride_i < h * w {
            return None;
        }
        // Padded rows and columns an output reads: (o - 1)·stride + (k - 1)·dilation + 1.
        let span = |o: usize, s: usize, k: usize, d: usize| -> Option<usize> {
            o.checked_sub(1)?.checked_mul(s)?.checked_add((k - 1).checked_mul(d)?)?.checked_add(1)
        };
        let rows = if oh == 0 { 0 } else { span(oh, sh, kh, dh)? };
        if ow > 0 {
            span(ow, sw, kw, dw)?;
        }
        let max_shift = (kw - 1).checked_mul(dw)? / sw;
        let phase_len = ow.checked_next_multiple_of(MAX_LANES)?.checked_add(max_shift)?;
        let pitch = phase_len.checked_mul(sw)?;
        if rows.checked_mul(pitch)? > MAX_SCRATCH {
            return None;
        }
        // Below rows · pitch wherever an output exists; checked for the planes without one.
        let mut tap_offsets = Vec::with_capacity(kh.checked_mul(kw)?);
        for ky in 0..kh {
            for kx in 0..kw {
                let x = kx.checked_mul(dw)?;
                let row = ky.checked_mul(dh)?.checked_mul(pitch)?;
                tap_offsets
                    .push(row.checked_add((x % sw).checked_mul(phase_len)?)?.checked_add(x / sw)?);
            }
        }
        Some(PaddedPlan {
            n,
            c,
            h,
            w,
            oh,
            ow,
            pad_top: patch.pad_before[0],
            pad_left: patch.pad_before[1],
            stride_h: sh,
            stride_w: sw,
            rows,
            phase_len,
            pitch,
            tap_offsets,
            n_stride_i,
            c_stride_i,
            n_stride_o,
            c_stride_o,
            portable: TRACT_DEPTHWISE_PORTABLE.get(),
        })
    }

    /// The implementation `eval` runs ("NEON", "AVX2+FMA" or "portable"): shown in the op's
    /// info, so tests check which kernel a machine really takes, not only that it passed.
    pub(super) fn kernel_name(&self) -> &'static str {
        if self.portable { "portable" } else { kernel_here().1 }
    }

    /// Runs the convolution: `input` holds the `[N,] C, H, W` data, `kernel` `C` runs of
    /// `kh·kw` taps, `bias` `C` values; returns the `[N,] C, OH, OW` output tensor.
    pub(super) fn eval(
        &self,
        output_shape: &[usize],
        input: &Tensor,
        kernel: &Tensor,
        bias: &Tensor,
    ) -> TractResult<Tensor> {
        let taps = self.tap_offsets.len();
        let planes = self.n * self.c;
        let plane = self.oh * self.ow;
        ensure!(input.datum_type() == f32::datum_type());
        ensure!(kernel.datum_type() == f32::datum_type() && kernel.len() == self.c * taps);
        ensure!(bias.datum_type() == f32::datum_type() && bias.len() == self.c);
        ensure!(
            self.n == 0
                || self.c == 0
                || input.len()
                    >= (self.n - 1) * self.n_stride_i
                        + (self.c - 1) * self.c_stride_i
                        + self.h * self.w
        );
        let mut output = unsafe { Tensor::uninitialized::<f32>(output_shape)? };
        ensure!(output.len() == planes * plane);
        if planes == 0 || plane == 0 {
            return Ok(output);
        }
        let (input, kernel, bias) =
            (input.try_as_plain_ram()?, kernel.try_as_plain_ram()?, bias.try_as_plain_ram()?);
        let (input, kernel, bias) =
            (input.as_slice::<f32>()?, kernel.as_slice::<f32>()?, bias.as_slice::<f32>()?);
        let run = if self.portable { plane_portable } else { kernel_here().0 };
        let mut view = output.try_as_plain_ram_mut()?;
        tract_linalg::multithread::par_chunks_mut(
            view.as_slice_mut::<f32>()?,
            plane,
            planes * plane * taps,
            |first, chunk| {
                let mut scratch = vec![0f32; self.rows * self.pitch];
                for (ix, out) in chunk.chunks_exact_mut(plane).enumerate() {
                    let p = first + ix;
                    let (ni, ci) = (p / self.c, p % self.c);
                    let src =
                        &input[ni * self.n_stride_i + ci * self.c_stride_i..][..self.h * self.w];
                    // SAFETY: `scratch` holds `rows · pitch` values and every tap offset plus
                    // every job's base stays below it (see `PaddedPlan::new`); `src` is one
                    // input plane and `out` one output plane.
                    unsafe {
                        run(self, src, &mut scratch, &kernel[ci * taps..][..taps], bias[ci], out);
                    }
                }
                Ok(())
            },
        )?;
        drop(view);
        Ok(output)
    }
}

/// One plane through the vector kernel: `src` the input plane, `scratch` the buffer it is padded
/// into, `taps` its channel's kernel.
type PlaneFn = unsafe fn(&PaddedPlan, &[f32], &mut [f32], &[f32], f32, &mut [f32]);

/// The best implementation this CPU runs, and its name.
fn kernel_here() -> (PlaneFn, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return (plane_avx2_fma, "AVX2+FMA");
        }
        (plane_portable, "portable")
    }
    #[cfg(target_arch = "aarch64")]
    {
        (plane_neon, "NEON")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        (plane_portable, "portable")
    }
}

/// A vector of `LANES` f32, and the four operations the kernel needs.
trait Lanes {
    type V: Copy;
    const LANES: usize;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `acc + a · b`.
    unsafe fn mul_add(acc: Self::V, a: Self::V, b: Self::V) -> Self::V;
    /// The even and the odd elements of the `2 · LANES` values from `p`.
    unsafe fn load_deinterleaved(p: *const f32) -> (Self::V, Self::V);
}

/// Plain Rust, four lanes, separate multiply and add (as the zone walk).
struct Portable;

impl Lanes for Portable {
    type V = [f32; 4];
    const LANES: usize = 4;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        [x; 4]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        unsafe { std::ptr::read_unaligned(p as *const [f32; 4]) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        unsafe { std::ptr::write_unaligned(p as *mut [f32; 4], v) }
    }
    #[inline(always)]
    unsafe fn mul_add(acc: Self::V, a: Self::V, b: Self::V) -> Self::V {
        [acc[0] + a[0] * b[0], acc[1] + a[1] * b[1], acc[2] + a[2] * b[2], acc[3] + a[3] * b[3]]
    }
    #[inline(always)]
    unsafe fn load_deinterleaved(p: *const f32) -> (Self::V, Self::V) {
        let v = unsafe { std::ptr::read_unaligned(p as *const [f32; 8]) };
        ([v[0], v[2], v[4], v[6]], [v[1], v[3], v[5], v[7]])
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx2Fma;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx2Fma {
    type V = std::arch::x86_64::__m256;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        unsafe { std::arch::x86_64::_mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn mul_add(acc: Self::V, a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_fmadd_ps(a, b, acc) }
    }
    #[inline(always)]
    unsafe fn load_deinterleaved(p: *const f32) -> (Self::V, Self::V) {
        use std::arch::x86_64::*;
        unsafe {
            let (a, b) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
            // Per 128-bit half: a0 a2 b0 b2 | a4 a6 b4 b6, then the 64-bit quarters reordered.
            // (No closure for the reordering: a closure would not carry this path's AVX2.)
            let even = _mm256_castps_pd(_mm256_shuffle_ps::<0b10_00_10_00>(a, b));
            let odd = _mm256_castps_pd(_mm256_shuffle_ps::<0b11_01_11_01>(a, b));
            (
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(even)),
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(odd)),
            )
        }
    }
}

#[cfg(target_arch = "aarch64")]
struct Neon;

#[cfg(target_arch = "aarch64")]
impl Lanes for Neon {
    type V = std::arch::aarch64::float32x4_t;
    const LANES: usize = 4;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        unsafe { std::arch::aarch64::vdupq_n_f32(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        unsafe { std::arch::aarch64::vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        unsafe { std::arch::aarch64::vst1q_f32(p, v) }
    }
    #[inline(always)]
    unsafe fn mul_add(acc: Self::V, a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::aarch64::vfmaq_f32(acc, a, b) }
    }
    #[inline(always)]
    unsafe fn load_deinterleaved(p: *const f32) -> (Self::V, Self::V) {
        let v = unsafe { std::arch::aarch64::vld2q_f32(p) };
        (v.0, v.1)
    }
}

unsafe fn plane_portable(
    plan: &PaddedPlan,
    src: &[f32],
    scratch: &mut [f32],
    taps: &[f32],
    bias: f32,
    out: &mut [f32],
) {
    unsafe { plane::<Portable>(plan, src, scratch, taps, bias, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_avx2_fma(
    plan: &PaddedPlan,
    src: &[f32],
    scratch: &mut [f32],
    taps: &[f32],
    bias: f32,
    out: &mut [f32],
) {
    unsafe { plane::<Avx2Fma>(plan, src, scratch, taps, bias, out) }
}

#[cfg(target_arch = "aarch64")]
unsafe fn plane_neon(
    plan: &PaddedPlan,
    src: &[f32],
    scratch: &mut [f32],
    taps: &[f32],
    bias: f32,
    out: &mut [f32],
) {
    unsafe { plane::<Neon>(plan, src, scratch, taps, bias, out) }
}

/// Copies one input plane into the padded scratch buffer, then computes every output of the
/// plane, `JOBS` vectors at a time. The last group repeats the plane's last
/// vector where it runs short, so every group takes the same code; its copies are stored again
/// with the same value.
///
/// # Safety
/// `scratch` is the plane padded as `plan` says (`rows · pitch` values), `taps` holds the
/// channel's `kh · kw` taps, `out` the `oh · ow` outputs.
#[inline(always)]
unsafe fn plane<L: Lanes>(
    plan: &PaddedPlan,
    src: &[f32],
    scratch: &mut [f32],
    taps: &[f32],
    bias: f32,
    out: &mut [f32],
) {
    fill::<L>(plan, scratch, src);
    let scratch: &[f32] = scratch;
    debug_assert!(scratch.len() >= plan.rows * plan.pitch);
    debug_assert!(out.len() == plan.oh * plan.ow);
    debug_assert!(taps.len() == plan.tap_offsets.len());
    let vectors = plan.ow.div_ceil(L::LANES);
    let jobs = plan.oh * vectors;
    let row_step = plan.stride_h * plan.pitch;
    // (input base in the scratch, output offset, lanes) of job `q`: row q / vectors, vector
    // q % vectors.
    let job = |q: usize| -> (usize, usize, usize) {
        let (oy, v) = (q / vectors, q % vectors);
        let x = v * L::LANES;
        (oy * row_step + x, oy * plan.ow + x, L::LANES.min(plan.ow - x))
    };
    let src = scratch.as_ptr();
    let dst = out.as_mut_ptr();
    let offsets = &plan.tap_offsets;
    unsafe {
        let biasv = L::splat(bias);
        let mut q = 0;
        while q < jobs {
            let mut group = [(0usize, 0usize, 0usize); JOBS];
            for (j, g) in group.iter_mut().enumerate() {
                *g = job((q + j).min(jobs - 1));
            }
            let p: [*const f32; JOBS] = std::array::from_fn(|j| src.add(group[j].0));
            let mut acc = [biasv; JOBS];
            for (&off, &k) in offsets.iter().zip(taps) {
                let k = L::splat(k);
                // Written out: at opt-level "z" LLVM would not unroll a loop over the jobs, and
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
fn fill<L: Lanes>(plan: &PaddedPlan, scratch: &mut [f32], src: &[f32]) {
    let (h, w) = (plan.h, plan.w);
    let (pt, pl, s, len) = (plan.pad_top, plan.pad_left, plan.stride_w, plan.phase_len);
    for r in pt..plan.rows.min(pt + h) {
        let src = &src[(r - pt) * w..][..w];
        let dst = &mut scratch[r * plan.pitch..][..plan.pitch];
        if s == 1 {
            // Padded column j is input column j - pl.
            let n = w.min(len.saturating_sub(pl));
            copy::<L>(&src[..n], &mut dst[pl.min(len)..][..n]);
        } else if s == 2 {
            // Input column 2m (even) is padded column 2m + pl, input column 2m + 1 (odd) the
            // next: with an even pl they are column m + pl/2 of phases 0 and 1, with an odd one
            // column m + pl/2 of phase 1 and m + pl/2 + 1 of phase 0.
            let a = pl / 2;
            let ((even_phase, even_j), (odd_phase, odd_j)) =
                if pl % 2 == 0 { ((0, a), (1, a)) } else { ((1, a), (0, a + 1)) };
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
        } else {
            for (p, dst) in dst.chunks_exact_mut(len).enumerate() {
                // Columns j of phase p hold padded column j·s + p, input column j·s + p - pl.
                let j0 = if pl > p { (pl - p).div_ceil(s) } else { 0 };
                let j1 = if w + pl > p { (w + pl - p).div_ceil(s) } else { 0 }.min(len);
                if j1 > j0 {
                    let x0 = j0 * s + p - pl;
                    for (d, x) in dst[j0..j1].iter_mut().zip(src[x0..].iter().step_by(s)) {
                        *d = *x;
                    }
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_fit_the_scratch_rows() {
        assert!(Portable::LANES <= MAX_LANES);
        #[cfg(target_arch = "x86_64")]
        assert!(Avx2Fma::LANES <= MAX_LANES);
        #[cfg(target_arch = "aarch64")]
        assert!(Neon::LANES <= MAX_LANES);
    }
}
