//! The few vector operations the depthwise kernel needs, for each instruction set it runs on.
//!
//! Written with `std::arch` rather than left to the autovectoriser: the phone build
//! (`opt-level = "z"`) does not vectorise loops.

/// A vector of `LANES` f32.
pub(in crate::kernels) trait Lanes {
    type V: Copy;
    const LANES: usize;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `acc + a · b`.
    unsafe fn mul_add(acc: Self::V, a: Self::V, b: Self::V) -> Self::V;
    /// The even and the odd elements of the `2 · LANES` values from `p`.
    unsafe fn load_deinterleaved(p: *const f32) -> (Self::V, Self::V);
    /// `min(max(v, low), high)`.
    unsafe fn clamp(v: Self::V, low: Self::V, high: Self::V) -> Self::V;
}

/// Plain Rust, four lanes (NEON's width), a separate multiply and add.
pub(in crate::kernels) struct Portable;

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
        // Spelled out: at opt-level "z" a loop here would stay a loop.
        [
            acc[0] + a[0] * b[0],
            acc[1] + a[1] * b[1],
            acc[2] + a[2] * b[2],
            acc[3] + a[3] * b[3],
        ]
    }
    #[inline(always)]
    unsafe fn load_deinterleaved(p: *const f32) -> (Self::V, Self::V) {
        let v = unsafe { std::ptr::read_unaligned(p as *const [f32; 8]) };
        ([v[0], v[2], v[4], v[6]], [v[1], v[3], v[5], v[7]])
    }
    #[inline(always)]
    unsafe fn clamp(v: Self::V, low: Self::V, high: Self::V) -> Self::V {
        let c = |x: f32, lo: f32, hi: f32| x.max(lo).min(hi);
        [
            c(v[0], low[0], high[0]),
            c(v[1], low[1], high[1]),
            c(v[2], low[2], high[2]),
            c(v[3], low[3], high[3]),
        ]
    }
}

/// x86_64 with AVX2 and FMA, eight lanes.
#[cfg(target_arch = "x86_64")]
pub(in crate::kernels) struct Avx2Fma;

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
    #[inline(always)]
    unsafe fn clamp(v: Self::V, low: Self::V, high: Self::V) -> Self::V {
        use std::arch::x86_64::{_mm256_max_ps, _mm256_min_ps};
        // max/min return their second operand where either is NaN: `v` goes second, so a NaN
        // passes through as it does through tract's Max and Min.
        unsafe { _mm256_min_ps(high, _mm256_max_ps(low, v)) }
    }
}

/// x86_64 with AVX-512F, sixteen lanes.
#[cfg(target_arch = "x86_64")]
pub(in crate::kernels) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx512 {
    type V = std::arch::x86_64::__m512;
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        unsafe { std::arch::x86_64::_mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn mul_add(acc: Self::V, a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_fmadd_ps(a, b, acc) }
    }
    #[inline(always)]
    unsafe fn load_deinterleaved(p: *const f32) -> (Self::V, Self::V) {
        use std::arch::x86_64::*;
        unsafe {
            let (a, b) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
            // Indices 0..16 pick from `a`, 16..32 from `b`.
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            (
                _mm512_permutex2var_ps(a, even, b),
                _mm512_permutex2var_ps(a, odd, b),
            )
        }
    }
    #[inline(always)]
    unsafe fn clamp(v: Self::V, low: Self::V, high: Self::V) -> Self::V {
        use std::arch::x86_64::{_mm512_max_ps, _mm512_min_ps};
        // As AVX2's: `v` second, so a NaN passes through.
        unsafe { _mm512_min_ps(high, _mm512_max_ps(low, v)) }
    }
}

/// aarch64 NEON, four lanes with fused multiply-adds.
#[cfg(target_arch = "aarch64")]
pub(in crate::kernels) struct Neon;

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
    #[inline(always)]
    unsafe fn clamp(v: Self::V, low: Self::V, high: Self::V) -> Self::V {
        use std::arch::aarch64::{vmaxq_f32, vminq_f32};
        unsafe { vminq_f32(vmaxq_f32(v, low), high) }
    }
}

// Rows of the scratch buffer are padded for the widest vector (see `geometry`).
const _: () = assert!(Portable::LANES <= super::geometry::MAX_LANES);
#[cfg(target_arch = "x86_64")]
const _: () = assert!(Avx2Fma::LANES <= super::geometry::MAX_LANES);
#[cfg(target_arch = "x86_64")]
const _: () = assert!(Avx512::LANES <= super::geometry::MAX_LANES);
#[cfg(target_arch = "aarch64")]
const _: () = assert!(Neon::LANES <= super::geometry::MAX_LANES);
