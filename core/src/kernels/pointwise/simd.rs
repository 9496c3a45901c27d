//! The vector operations the pointwise tile needs, per instruction set.
//!
//! A tile multiplies one vector of pixels of one input channel by the weights of four output
//! channels. The four weights are read once per input channel as a [`Lanes::Quad`]: on NEON one
//! vector register, each multiply-add taking its lane (`fmla` by element); on AVX2 four
//! broadcasts, as x86 has no multiply by lane.
//!
//! Written with `std::arch` rather than left to the autovectoriser: the phone build
//! (`opt-level = "z"`) does not vectorise loops.

/// A vector of `LANES` f32, and four weights to multiply vectors by.
pub(super) trait Lanes {
    type V: Copy;
    type Quad: Copy;
    const LANES: usize;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// The four weights from `p`.
    unsafe fn load_quad(p: *const f32) -> Self::Quad;
    /// `acc + x · w[R]`.
    unsafe fn mul_add_lane<const R: i32>(acc: Self::V, x: Self::V, w: Self::Quad) -> Self::V;
    /// `min(max(v, low), high)`.
    unsafe fn clamp(v: Self::V, low: Self::V, high: Self::V) -> Self::V;
}

/// Plain Rust, four lanes (NEON's width), a separate multiply and add.
pub(super) struct Portable;

impl Lanes for Portable {
    type V = [f32; 4];
    type Quad = [f32; 4];
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
    unsafe fn load_quad(p: *const f32) -> Self::Quad {
        unsafe { std::ptr::read_unaligned(p as *const [f32; 4]) }
    }
    #[inline(always)]
    unsafe fn mul_add_lane<const R: i32>(acc: Self::V, x: Self::V, w: Self::Quad) -> Self::V {
        let w = w[R as usize];
        // Spelled out: at opt-level "z" a loop here would stay a loop.
        [
            acc[0] + x[0] * w,
            acc[1] + x[1] * w,
            acc[2] + x[2] * w,
            acc[3] + x[3] * w,
        ]
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
pub(super) struct Avx2Fma;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx2Fma {
    type V = std::arch::x86_64::__m256;
    type Quad = [std::arch::x86_64::__m256; 4];
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
    unsafe fn load_quad(p: *const f32) -> Self::Quad {
        use std::arch::x86_64::_mm256_broadcast_ss;
        unsafe {
            [
                _mm256_broadcast_ss(&*p),
                _mm256_broadcast_ss(&*p.add(1)),
                _mm256_broadcast_ss(&*p.add(2)),
                _mm256_broadcast_ss(&*p.add(3)),
            ]
        }
    }
    #[inline(always)]
    unsafe fn mul_add_lane<const R: i32>(acc: Self::V, x: Self::V, w: Self::Quad) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_fmadd_ps(x, w[R as usize], acc) }
    }
    #[inline(always)]
    unsafe fn clamp(v: Self::V, low: Self::V, high: Self::V) -> Self::V {
        use std::arch::x86_64::{_mm256_max_ps, _mm256_min_ps};
        // max/min return their second operand where either is NaN: `v` goes second, so a NaN
        // passes through as it does through tract's Max and Min.
        unsafe { _mm256_min_ps(high, _mm256_max_ps(low, v)) }
    }
}

/// aarch64 NEON, four lanes, fused multiply-adds by element.
#[cfg(target_arch = "aarch64")]
pub(super) struct Neon;

#[cfg(target_arch = "aarch64")]
impl Lanes for Neon {
    type V = std::arch::aarch64::float32x4_t;
    type Quad = std::arch::aarch64::float32x4_t;
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
    unsafe fn load_quad(p: *const f32) -> Self::Quad {
        unsafe { std::arch::aarch64::vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn mul_add_lane<const R: i32>(acc: Self::V, x: Self::V, w: Self::Quad) -> Self::V {
        unsafe { std::arch::aarch64::vfmaq_laneq_f32::<R>(acc, x, w) }
    }
    #[inline(always)]
    unsafe fn clamp(v: Self::V, low: Self::V, high: Self::V) -> Self::V {
        use std::arch::aarch64::{vmaxq_f32, vminq_f32};
        unsafe { vminq_f32(vmaxq_f32(v, low), high) }
    }
}
