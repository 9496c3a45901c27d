//! Vectors of f32 and the operations the kernels need on them, one implementation per
//! instruction set of [`super::cpu::Isa`]: a kernel written once over [`Lanes`] is compiled
//! for each.
//!
//! Besides the plain lane-wise operations, a product by four weights at once: a tile of the
//! pointwise convolution multiplies one vector of pixels of one input channel by the weights
//! of its output channels, four at a time. Four weights are read at once as a [`Lanes::Quad`]: on NEON one
//! vector register, each multiply-add taking its lane (`fmla` by element); on x86 four
//! broadcasts, as x86 has no multiply by lane (AVX-512 folds each into its multiply-add).
//!
//! The last vector of a row or plane may be partial ([`Lanes::Tail`]): AVX-512 and AVX2 load and store
//! it under a mask (the lanes beyond the plane are neither read nor written), the four-lane
//! forms through a small copy.
//!
//! Written with `std::arch` rather than left to the autovectoriser: the phone build
//! (`opt-level = "z"`) does not vectorise loops.

/// A vector of `LANES` f32, and four weights to multiply vectors by.
pub(super) trait Lanes {
    type V: Copy;
    type Quad: Copy;
    /// Which lanes of a partial vector are inside the plane.
    type Tail: Copy;
    const LANES: usize;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// The first `n` lanes, `0 < n < LANES`.
    unsafe fn tail(n: usize) -> Self::Tail;
    /// The lanes of `t` from `p`, zero elsewhere; reads nothing outside them.
    unsafe fn load_tail(p: *const f32, t: Self::Tail) -> Self::V;
    /// The lanes of `t` to `p`; writes nothing outside them.
    unsafe fn store_tail(p: *mut f32, v: Self::V, t: Self::Tail);
    /// The four weights from `p`.
    unsafe fn load_quad(p: *const f32) -> Self::Quad;
    /// `acc + x · w[R]`.
    unsafe fn mul_add_lane<const R: i32>(acc: Self::V, x: Self::V, w: Self::Quad) -> Self::V;
    /// `acc + a · b`.
    // Only the kernels with output channels in the lanes use it, which exist on x86_64 alone.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    unsafe fn mul_add(acc: Self::V, a: Self::V, b: Self::V) -> Self::V;
    /// `min(max(v, low), high)`.
    unsafe fn clamp(v: Self::V, low: Self::V, high: Self::V) -> Self::V;
}

/// A partial four-lane vector through a zeroed copy: `n` values from `p`.
///
/// # Safety
/// `p` is readable for `n <= 4` values.
#[inline(always)]
unsafe fn read_part(p: *const f32, n: usize) -> [f32; 4] {
    let mut v = [0f32; 4];
    // SAFETY: as the function's contract.
    unsafe { std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), n.min(4)) };
    v
}

/// Plain Rust, four lanes (NEON's width), a separate multiply and add.
pub(super) struct Portable;

impl Lanes for Portable {
    type V = [f32; 4];
    type Quad = [f32; 4];
    type Tail = usize;
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
    unsafe fn tail(n: usize) -> Self::Tail {
        n
    }
    #[inline(always)]
    unsafe fn load_tail(p: *const f32, n: usize) -> Self::V {
        unsafe { read_part(p, n) }
    }
    #[inline(always)]
    unsafe fn store_tail(p: *mut f32, v: Self::V, n: usize) {
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p, n.min(4)) }
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
    unsafe fn mul_add(acc: Self::V, a: Self::V, b: Self::V) -> Self::V {
        [
            acc[0] + a[0] * b[0],
            acc[1] + a[1] * b[1],
            acc[2] + a[2] * b[2],
            acc[3] + a[3] * b[3],
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
    type Tail = std::arch::x86_64::__m256i;
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
    unsafe fn tail(n: usize) -> Self::Tail {
        use std::arch::x86_64::*;
        // Lane i is kept where i < n: its mask element has the sign bit set.
        unsafe {
            _mm256_cmpgt_epi32(
                _mm256_set1_epi32(n as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            )
        }
    }
    #[inline(always)]
    unsafe fn load_tail(p: *const f32, t: Self::Tail) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_maskload_ps(p, t) }
    }
    #[inline(always)]
    unsafe fn store_tail(p: *mut f32, v: Self::V, t: Self::Tail) {
        unsafe { std::arch::x86_64::_mm256_maskstore_ps(p, t, v) }
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
    unsafe fn mul_add(acc: Self::V, a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_fmadd_ps(a, b, acc) }
    }
    #[inline(always)]
    unsafe fn clamp(v: Self::V, low: Self::V, high: Self::V) -> Self::V {
        use std::arch::x86_64::{_mm256_max_ps, _mm256_min_ps};
        // max/min return their second operand where either is NaN: `v` goes second, so a NaN
        // passes through as it does through tract's Max and Min.
        unsafe { _mm256_min_ps(high, _mm256_max_ps(low, v)) }
    }
}

/// x86_64 with AVX-512F, sixteen lanes and masked loads and stores.
#[cfg(target_arch = "x86_64")]
pub(super) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx512 {
    type V = std::arch::x86_64::__m512;
    type Quad = [std::arch::x86_64::__m512; 4];
    type Tail = std::arch::x86_64::__mmask16;
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
    unsafe fn tail(n: usize) -> Self::Tail {
        ((1u32 << n) - 1) as u16
    }
    #[inline(always)]
    unsafe fn load_tail(p: *const f32, t: Self::Tail) -> Self::V {
        // Masked-off lanes are not read (no fault past the plane).
        unsafe { std::arch::x86_64::_mm512_maskz_loadu_ps(t, p) }
    }
    #[inline(always)]
    unsafe fn store_tail(p: *mut f32, v: Self::V, t: Self::Tail) {
        unsafe { std::arch::x86_64::_mm512_mask_storeu_ps(p, t, v) }
    }
    #[inline(always)]
    unsafe fn load_quad(p: *const f32) -> Self::Quad {
        use std::arch::x86_64::_mm512_set1_ps;
        unsafe {
            [
                _mm512_set1_ps(*p),
                _mm512_set1_ps(*p.add(1)),
                _mm512_set1_ps(*p.add(2)),
                _mm512_set1_ps(*p.add(3)),
            ]
        }
    }
    #[inline(always)]
    unsafe fn mul_add_lane<const R: i32>(acc: Self::V, x: Self::V, w: Self::Quad) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_fmadd_ps(x, w[R as usize], acc) }
    }
    #[inline(always)]
    unsafe fn mul_add(acc: Self::V, a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_fmadd_ps(a, b, acc) }
    }
    #[inline(always)]
    unsafe fn clamp(v: Self::V, low: Self::V, high: Self::V) -> Self::V {
        use std::arch::x86_64::{_mm512_max_ps, _mm512_min_ps};
        // As AVX2's: `v` second, so a NaN passes through.
        unsafe { _mm512_min_ps(high, _mm512_max_ps(low, v)) }
    }
}

/// aarch64 NEON, four lanes, fused multiply-adds by element.
#[cfg(target_arch = "aarch64")]
pub(super) struct Neon;

#[cfg(target_arch = "aarch64")]
impl Lanes for Neon {
    type V = std::arch::aarch64::float32x4_t;
    type Quad = std::arch::aarch64::float32x4_t;
    type Tail = usize;
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
    unsafe fn tail(n: usize) -> Self::Tail {
        n
    }
    #[inline(always)]
    unsafe fn load_tail(p: *const f32, n: usize) -> Self::V {
        unsafe { std::arch::aarch64::vld1q_f32(read_part(p, n).as_ptr()) }
    }
    #[inline(always)]
    unsafe fn store_tail(p: *mut f32, v: Self::V, n: usize) {
        let mut part = [0f32; 4];
        unsafe {
            std::arch::aarch64::vst1q_f32(part.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(part.as_ptr(), p, n.min(4));
        }
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
    unsafe fn mul_add(acc: Self::V, a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::aarch64::vfmaq_f32(acc, a, b) }
    }
    #[inline(always)]
    unsafe fn clamp(v: Self::V, low: Self::V, high: Self::V) -> Self::V {
        use std::arch::aarch64::{vmaxq_f32, vminq_f32};
        unsafe { vminq_f32(vmaxq_f32(v, low), high) }
    }
}
