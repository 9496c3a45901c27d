//! The sums of a sparse weight matrix with dense data, walking each row's kept weights.
//!
//! - [`dot`]: one data vector (a fully connected layer's input): each output is the dot product
//!   of a row's kept weights with the data values at their columns, a gather.
//! - [`axpy`]: one data plane of `P` values per column (a 1×1 convolution's input, `P` pixels):
//!   each kept weight adds its column's plane, scaled, to its row's plane.
//!
//! Each has a plain-Rust path (written out in four lanes: the phone build, `opt-level = "z"`,
//! does not vectorise loops), an AVX2+FMA path (gathers, 8 lanes) and a NEON path. Sums run in
//! several lanes and are then added together, so they round differently from the dense matrix
//! product's order: `docs/PERFORMANCE.md` and the tests state the bound.

use super::layout::{SparseRows, Values};

/// The values of entries, one at a time or eight at a time, per storage of the values. A trait
/// with `#[inline(always)]` methods rather than closures: the vector paths' target features
/// reach inlined methods, not closures.
trait Weights {
    fn one(&self, j: usize) -> f32;
    /// Entries `j..j + 8` (which must exist).
    #[cfg(target_arch = "x86_64")]
    unsafe fn eight(&self, j: usize) -> std::arch::x86_64::__m256;
}

struct Nibbles<'a>(&'a [f32], &'a [u8]);
struct Bytes<'a>(&'a [f32], &'a [u8]);
struct Plain<'a>(&'a [f32]);

impl Weights for Nibbles<'_> {
    #[inline(always)]
    fn one(&self, j: usize) -> f32 {
        self.0[usize::from((self.1[j / 2] >> ((j & 1) * 4)) & 15)]
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn eight(&self, j: usize) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY (caller): entries j..j+8 exist; the packed indices are followed by 8 padding
        // bytes, so 8 bytes from byte j/2 are there; the codebook has 16 entries.
        unsafe {
            let word = std::ptr::read_unaligned(self.1.as_ptr().add(j / 2) as *const u64);
            let nibbles = (word >> ((j & 1) * 4)) as u32 as i32;
            let shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
            let idx = _mm256_and_si256(
                _mm256_srlv_epi32(_mm256_set1_epi32(nibbles), shifts),
                _mm256_set1_epi32(15),
            );
            let lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(self.0.as_ptr()), idx);
            let hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(self.0.as_ptr().add(8)), idx);
            // Bit 3 of the index, moved to the sign bit, picks the upper half.
            _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx)))
        }
    }
}

impl Weights for Bytes<'_> {
    #[inline(always)]
    fn one(&self, j: usize) -> f32 {
        self.0[usize::from(self.1[j])]
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn eight(&self, j: usize) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY (caller): entries j..j+8 exist; every u8 indexes the 256-entry codebook.
        unsafe {
            let idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(self.1.as_ptr().add(j) as *const _));
            _mm256_i32gather_ps::<4>(self.0.as_ptr(), idx)
        }
    }
}

impl Weights for Plain<'_> {
    #[inline(always)]
    fn one(&self, j: usize) -> f32 {
        self.0[j]
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn eight(&self, j: usize) -> std::arch::x86_64::__m256 {
        // SAFETY (caller): entries j..j+8 exist.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(self.0.as_ptr().add(j)) }
    }
}

/// Which implementation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Plain Rust, four lanes.
    Portable,
    /// x86_64 AVX2 + FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// aarch64 NEON.
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Path {
    /// The fastest path this CPU runs.
    pub fn best() -> Path {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Path::Avx2Fma;
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            return Path::Neon;
        }
        Path::Portable
    }

    /// A name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Path::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Path::Avx2Fma => "avx2+fma",
            #[cfg(target_arch = "aarch64")]
            Path::Neon => "neon",
        }
    }
}

/// `out[r] = Σ_j w_j · x[column_j]` over the kept weights of each row `r`.
///
/// Panics unless `x.len() == s.columns` and `out.len() == s.rows`; the columns were checked
/// against `s.columns` when `s` was built.
pub fn dot(s: &SparseRows, path: Path, x: &[f32], out: &mut [f32]) {
    assert!(x.len() == s.columns && out.len() == s.rows);
    match &s.values {
        Values::Nibbles { codebook, packed } => {
            dot_with(s, path, &Nibbles(codebook, packed), x, out)
        }
        Values::Bytes { codebook, indices } => dot_with(s, path, &Bytes(codebook, indices), x, out),
        Values::Plain(v) => dot_with(s, path, &Plain(v), x, out),
    }
}

#[inline(always)]
fn dot_with<W: Weights>(s: &SparseRows, path: Path, w: &W, x: &[f32], out: &mut [f32]) {
    match path {
        Path::Portable => dot_portable(s, w, x, out),
        // SAFETY: this CPU has AVX2 and FMA (`Path::best`); the sizes were checked by `dot`.
        #[cfg(target_arch = "x86_64")]
        Path::Avx2Fma => unsafe { dot_avx2(s, w, x, out) },
        // SAFETY: this CPU has NEON; the sizes were checked by `dot`.
        #[cfg(target_arch = "aarch64")]
        Path::Neon => unsafe { dot_neon(s, w, x, out) },
    }
}

#[inline(always)]
fn dot_portable<W: Weights>(s: &SparseRows, w: &W, x: &[f32], out: &mut [f32]) {
    let cols = &s.column_of;
    for (r, o) in out.iter_mut().enumerate() {
        let range = s.row(r);
        let mut acc = [0f32; 4];
        let mut j = range.start;
        while j + 4 <= range.end {
            acc[0] += w.one(j) * x[usize::from(cols[j])];
            acc[1] += w.one(j + 1) * x[usize::from(cols[j + 1])];
            acc[2] += w.one(j + 2) * x[usize::from(cols[j + 2])];
            acc[3] += w.one(j + 3) * x[usize::from(cols[j + 3])];
            j += 4;
        }
        for j in j..range.end {
            acc[0] += w.one(j) * x[usize::from(cols[j])];
        }
        *o = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2<W: Weights>(s: &SparseRows, w: &W, x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let cols = &s.column_of;
    for (r, o) in out.iter_mut().enumerate() {
        let range = s.row(r);
        let mut j = range.start;
        // SAFETY: j..j+8 lies within the row's entries; every column is < x.len().
        let mut sum = unsafe {
            let mut acc = _mm256_setzero_ps();
            while j + 8 <= range.end {
                let c = _mm256_cvtepu16_epi32(_mm_loadu_si128(cols.as_ptr().add(j) as *const _));
                let xs = _mm256_i32gather_ps::<4>(x.as_ptr(), c);
                acc = _mm256_fmadd_ps(w.eight(j), xs, acc);
                j += 8;
            }
            let half = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
            let half = _mm_add_ps(half, _mm_movehl_ps(half, half));
            _mm_cvtss_f32(_mm_add_ss(half, _mm_shuffle_ps::<1>(half, half)))
        };
        for j in j..range.end {
            sum = w.one(j).mul_add(x[usize::from(cols[j])], sum);
        }
        *o = sum;
    }
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn dot_neon<W: Weights>(s: &SparseRows, w: &W, x: &[f32], out: &mut [f32]) {
    use std::arch::aarch64::*;
    let cols = &s.column_of;
    for (r, o) in out.iter_mut().enumerate() {
        let range = s.row(r);
        let mut j = range.start;
        // NEON has no gather: the four data values and weights are loaded one by one into
        // lanes, the multiply-adds run four at a time.
        // SAFETY: the arrays are 4 f32 each.
        let mut sum = unsafe {
            let mut acc = vdupq_n_f32(0.0);
            while j + 4 <= range.end {
                let xs = [0, 1, 2, 3].map(|i| x[usize::from(cols[j + i])]);
                let ws = [0, 1, 2, 3].map(|i| w.one(j + i));
                acc = vfmaq_f32(acc, vld1q_f32(ws.as_ptr()), vld1q_f32(xs.as_ptr()));
                j += 4;
            }
            vaddvq_f32(acc)
        };
        for j in j..range.end {
            sum = w.one(j).mul_add(x[usize::from(cols[j])], sum);
        }
        *o = sum;
    }
}

/// `out[r·P..][..P] = Σ_j w_j · x[column_j·P..][..P]` over the kept weights of each row `r`:
/// `x` holds `s.columns` planes of `P` values, `out` `s.rows` planes.
///
/// Panics unless `x.len() == s.columns · P` and `out.len() == s.rows · P`.
pub fn axpy(s: &SparseRows, path: Path, plane: usize, x: &[f32], out: &mut [f32]) {
    assert!(x.len() == s.columns * plane && out.len() == s.rows * plane);
    if plane == 0 {
        return;
    }
    let cols = &s.column_of;
    for (r, o) in out.chunks_exact_mut(plane).enumerate() {
        o.fill(0.0);
        for j in s.row(r) {
            let src = &x[usize::from(cols[j]) * plane..][..plane];
            let wj = s.values.at(j);
            match path {
                Path::Portable => axpy_portable(wj, src, o),
                // SAFETY: this CPU has AVX2 and FMA; `src` and `o` have the same length.
                #[cfg(target_arch = "x86_64")]
                Path::Avx2Fma => unsafe { axpy_avx2(wj, src, o) },
                // SAFETY: this CPU has NEON; `src` and `o` have the same length.
                #[cfg(target_arch = "aarch64")]
                Path::Neon => unsafe { axpy_neon(wj, src, o) },
            }
        }
    }
}

fn axpy_portable(w: f32, src: &[f32], out: &mut [f32]) {
    let mut o4 = out.chunks_exact_mut(4);
    let mut s4 = src.chunks_exact(4);
    for (o, s) in (&mut o4).zip(&mut s4) {
        o[0] += w * s[0];
        o[1] += w * s[1];
        o[2] += w * s[2];
        o[3] += w * s[3];
    }
    for (o, s) in o4.into_remainder().iter_mut().zip(s4.remainder()) {
        *o += w * s;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(w: f32, src: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = out.len().min(src.len());
    let mut i = 0;
    // SAFETY: i + 8 ≤ n for every vector access.
    unsafe {
        let wv = _mm256_set1_ps(w);
        while i + 8 <= n {
            let o = out.as_mut_ptr().add(i);
            _mm256_storeu_ps(
                o,
                _mm256_fmadd_ps(wv, _mm256_loadu_ps(src.as_ptr().add(i)), _mm256_loadu_ps(o)),
            );
            i += 8;
        }
    }
    for i in i..n {
        out[i] = w.mul_add(src[i], out[i]);
    }
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn axpy_neon(w: f32, src: &[f32], out: &mut [f32]) {
    use std::arch::aarch64::*;
    let n = out.len().min(src.len());
    let mut i = 0;
    // SAFETY: i + 4 ≤ n for every vector access.
    unsafe {
        while i + 4 <= n {
            let o = out.as_mut_ptr().add(i);
            vst1q_f32(
                o,
                vfmaq_n_f32(vld1q_f32(o), vld1q_f32(src.as_ptr().add(i)), w),
            );
            i += 4;
        }
    }
    for i in i..n {
        out[i] = w.mul_add(src[i], out[i]);
    }
}
