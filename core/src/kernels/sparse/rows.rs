//! The sums of a sparse weight matrix with dense data, walking each row's kept weights.
//!
//! - [`dot`]: one data vector (a fully connected layer's input): each output is the dot product
//!   of a row's kept weights with the data values at their columns, a gather.
//! - [`axpy`]: one data plane of `P` values per column (a 1×1 convolution's input, `P` pixels):
//!   each kept weight adds its column's plane, scaled, to its row's plane.
//!
//! Each has a plain-Rust path (written out in four lanes: the phone build, `opt-level = "z"`,
//! does not vectorise loops), an AVX2+FMA path and a NEON path. Sums run in several lanes and
//! are then added together, so they round differently from the dense matrix product's order:
//! `docs/PERFORMANCE.md` and the tests state the bound.

use super::layout::{Entries, SparseRows};

/// The columns and values of entries, one at a time or eight at a time, per storage of the
/// entries. A trait with `#[inline(always)]` methods rather than closures: the vector paths'
/// target features reach inlined methods, not closures.
trait Kept {
    /// Column and value of entry `j`.
    fn one(&self, j: usize) -> (usize, f32);
    /// Columns and values of entries `j..j + 8`, which must lie within the entries and their
    /// padding.
    #[cfg(target_arch = "x86_64")]
    unsafe fn eight(&self, j: usize) -> (std::arch::x86_64::__m256i, std::arch::x86_64::__m256);
}

struct Packed<'a>(&'a [f32], &'a [u16]);
struct Bytes<'a>(&'a [f32], &'a [u16], &'a [u8]);
struct Plain<'a>(&'a [u16], &'a [f32]);

impl Kept for Packed<'_> {
    #[inline(always)]
    fn one(&self, j: usize) -> (usize, f32) {
        let w = self.1[j];
        (usize::from(w & 0xfff), self.0[usize::from(w >> 12)])
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn eight(&self, j: usize) -> (std::arch::x86_64::__m256i, std::arch::x86_64::__m256) {
        use std::arch::x86_64::*;
        // SAFETY (caller): words j..j+8 exist (the padding covers the last row); the codebook
        // has 16 entries and every 4-bit index is below 16.
        unsafe {
            let words = _mm256_cvtepu16_epi32(_mm_loadu_si128(self.1.as_ptr().add(j) as *const _));
            let columns = _mm256_and_si256(words, _mm256_set1_epi32(0xfff));
            let idx = _mm256_srli_epi32::<12>(words);
            let lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(self.0.as_ptr()), idx);
            let hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(self.0.as_ptr().add(8)), idx);
            // Bit 3 of the index, moved to the sign bit, picks the upper half.
            let w = _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx)));
            (columns, w)
        }
    }
}

impl Kept for Bytes<'_> {
    #[inline(always)]
    fn one(&self, j: usize) -> (usize, f32) {
        (usize::from(self.1[j]), self.0[usize::from(self.2[j])])
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn eight(&self, j: usize) -> (std::arch::x86_64::__m256i, std::arch::x86_64::__m256) {
        use std::arch::x86_64::*;
        // SAFETY (caller): entries j..j+8 exist; every u8 indexes the 256-entry codebook.
        unsafe {
            let columns =
                _mm256_cvtepu16_epi32(_mm_loadu_si128(self.1.as_ptr().add(j) as *const _));
            let idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(self.2.as_ptr().add(j) as *const _));
            (columns, _mm256_i32gather_ps::<4>(self.0.as_ptr(), idx))
        }
    }
}

impl Kept for Plain<'_> {
    #[inline(always)]
    fn one(&self, j: usize) -> (usize, f32) {
        (usize::from(self.0[j]), self.1[j])
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn eight(&self, j: usize) -> (std::arch::x86_64::__m256i, std::arch::x86_64::__m256) {
        use std::arch::x86_64::*;
        // SAFETY (caller): entries j..j+8 exist.
        unsafe {
            let columns =
                _mm256_cvtepu16_epi32(_mm_loadu_si128(self.0.as_ptr().add(j) as *const _));
            (columns, _mm256_loadu_ps(self.1.as_ptr().add(j)))
        }
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
    /// x86_64 AVX-512 (16-lane gathers) for packed entries, AVX2 + FMA for the others.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// aarch64 NEON.
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Path {
    /// The fastest path this CPU runs.
    pub fn best() -> Path {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            if is_x86_feature_detected!("avx512f") {
                return Path::Avx512;
            }
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
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => "avx512",
            #[cfg(target_arch = "aarch64")]
            Path::Neon => "neon",
        }
    }
}

/// `out[r] = s_r · Σ_j w_j · x[column_j]` over the kept weights of each row `r` (`s_r` the
/// row's scale, 1 without).
///
/// Panics unless `x.len() == s.columns` and `out.len() == s.rows`; the columns were checked
/// against `s.columns` when `s` was built.
pub fn dot(s: &SparseRows, path: Path, x: &[f32], out: &mut [f32]) {
    assert!(x.len() == s.columns && out.len() == s.rows);
    match &s.entries {
        // SAFETY: this CPU has AVX-512F (`Path::best`); the sizes were checked above.
        #[cfg(target_arch = "x86_64")]
        Entries::Packed { codebook, words } if path == Path::Avx512 => unsafe {
            dot_avx512_packed(s, codebook, words, x, out)
        },
        Entries::Packed { codebook, words } => dot_with(s, path, &Packed(codebook, words), x, out),
        Entries::Bytes {
            codebook,
            columns,
            indices,
        } => dot_with(s, path, &Bytes(codebook, columns, indices), x, out),
        Entries::Plain { columns, values } => dot_with(s, path, &Plain(columns, values), x, out),
    }
    if let Some(scales) = &s.row_scales {
        out.iter_mut().zip(scales).for_each(|(o, k)| *o *= k);
    }
}

#[inline(always)]
fn dot_with<K: Kept>(s: &SparseRows, path: Path, k: &K, x: &[f32], out: &mut [f32]) {
    match path {
        Path::Portable => dot_portable(s, k, x, out),
        // SAFETY: this CPU has AVX2 and FMA (`Path::best`); the sizes were checked by `dot`.
        #[cfg(target_arch = "x86_64")]
        Path::Avx2Fma | Path::Avx512 => unsafe { dot_avx2(s, k, x, out) },
        // SAFETY: this CPU has NEON; the sizes were checked by `dot`.
        #[cfg(target_arch = "aarch64")]
        Path::Neon => unsafe { dot_neon(s, k, x, out) },
    }
}

#[inline(always)]
fn dot_portable<K: Kept>(s: &SparseRows, k: &K, x: &[f32], out: &mut [f32]) {
    let term = |j: usize| {
        let (c, w) = k.one(j);
        w * x[c]
    };
    for i in 0..s.rows {
        let range = s.row(i);
        let mut acc = [0f32; 4];
        let mut j = range.start;
        while j + 4 <= range.end {
            acc[0] += term(j);
            acc[1] += term(j + 1);
            acc[2] += term(j + 2);
            acc[3] += term(j + 3);
            j += 4;
        }
        for j in j..range.end {
            acc[0] += term(j);
        }
        out[s.output_of(i)] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
}

/// Eight (stored) rows at a time, each row's entries eight at a time: the data values are gathered with
/// a mask that drops the lanes past the row's end (their entries belong to the next row or to
/// the padding), so a row needs no scalar tail; the eight rows' vector sums are then reduced
/// together and stored as one vector.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2<K: Kept>(s: &SparseRows, k: &K, x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    // SAFETY: every read of entries starts at an entry of a row and reads 8, which the padding
    // after the last row covers; every gathered lane that the mask keeps lies within its row,
    // whose columns are < x.len(); `sums` holds the 8 results.
    unsafe {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mut sums = [0f32; 8];
        for first in (0..s.rows).step_by(8) {
            let block = (s.rows - first).min(8);
            let mut acc = [_mm256_setzero_ps(); 8];
            for (i, a) in acc.iter_mut().enumerate().take(block) {
                let range = s.row(first + i);
                let mut j = range.start;
                while j < range.end {
                    let left = _mm256_set1_epi32((range.end - j).min(8) as i32);
                    let mask = _mm256_cmpgt_epi32(left, lanes);
                    let (columns, w) = k.eight(j);
                    let xs = _mm256_mask_i32gather_ps::<4>(
                        _mm256_setzero_ps(),
                        x.as_ptr(),
                        columns,
                        _mm256_castsi256_ps(mask),
                    );
                    *a = _mm256_fmadd_ps(w, xs, *a);
                    j += 8;
                }
            }
            // [a0..a7] → the 8 rows' totals, one per lane.
            let t0 = _mm256_hadd_ps(acc[0], acc[1]);
            let t1 = _mm256_hadd_ps(acc[2], acc[3]);
            let t2 = _mm256_hadd_ps(acc[4], acc[5]);
            let t3 = _mm256_hadd_ps(acc[6], acc[7]);
            let u0 = _mm256_hadd_ps(t0, t1);
            let u1 = _mm256_hadd_ps(t2, t3);
            let total = _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(u0, u1),
                _mm256_permute2f128_ps::<0x31>(u0, u1),
            );
            _mm256_storeu_ps(sums.as_mut_ptr(), total);
            for (i, &sum) in sums.iter().enumerate().take(block) {
                out[s.output_of(first + i)] = sum;
            }
        }
    }
}

/// As [`dot_avx2`] for packed entries, sixteen at a time: the codebook of 16 fits one
/// register (`vpermps` looks the 16 indices up at once) and each gather fetches 16 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dot_avx512_packed(
    s: &SparseRows,
    codebook: &[f32],
    words: &[u16],
    x: &[f32],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    debug_assert!(codebook.len() == 16 && words.len() >= s.entries() + 16);
    // SAFETY: the codebook has 16 entries; every read of words starts at an entry of a row and
    // reads 16, which the padding after the last row covers; every gathered lane the mask
    // keeps lies within its row, whose columns are < x.len().
    unsafe {
        let book = _mm512_loadu_ps(codebook.as_ptr());
        for i in 0..s.rows {
            let range = s.row(i);
            let mut acc = _mm512_setzero_ps();
            let mut j = range.start;
            while j < range.end {
                let left = (range.end - j).min(16) as u32;
                let mask: __mmask16 = ((1u32 << left) - 1) as u16;
                let w16 = _mm256_loadu_si256(words.as_ptr().add(j) as *const __m256i);
                let w = _mm512_cvtepu16_epi32(w16);
                let columns = _mm512_and_si512(w, _mm512_set1_epi32(0xfff));
                let idx = _mm512_srli_epi32::<12>(w);
                let weights = _mm512_permutexvar_ps(idx, book);
                let xs =
                    _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, columns, x.as_ptr());
                acc = _mm512_fmadd_ps(weights, xs, acc);
                j += 16;
            }
            out[s.output_of(i)] = _mm512_reduce_add_ps(acc);
        }
    }
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn dot_neon<K: Kept>(s: &SparseRows, k: &K, x: &[f32], out: &mut [f32]) {
    use std::arch::aarch64::*;
    for i in 0..s.rows {
        let range = s.row(i);
        let mut j = range.start;
        // NEON has no gather: the four data values and weights are loaded one by one into
        // lanes, the multiply-adds run four at a time.
        // SAFETY: the arrays are 4 f32 each.
        let mut sum = unsafe {
            let mut acc = vdupq_n_f32(0.0);
            while j + 4 <= range.end {
                let kept = [0, 1, 2, 3].map(|i| k.one(j + i));
                let xs = kept.map(|(c, _)| x[c]);
                let ws = kept.map(|(_, w)| w);
                acc = vfmaq_f32(acc, vld1q_f32(ws.as_ptr()), vld1q_f32(xs.as_ptr()));
                j += 4;
            }
            vaddvq_f32(acc)
        };
        for j in j..range.end {
            let (c, w) = k.one(j);
            sum = w.mul_add(x[c], sum);
        }
        out[s.output_of(i)] = sum;
    }
}

/// `out[r·P..][..P] = s_r · Σ_j w_j · x[column_j·P..][..P]` over the kept weights of each row
/// `r`: `x` holds `s.columns` planes of `P` values, `out` `s.rows` planes.
///
/// Panics unless `x.len() == s.columns · P` and `out.len() == s.rows · P`.
pub fn axpy(s: &SparseRows, path: Path, plane: usize, x: &[f32], out: &mut [f32]) {
    assert!(x.len() == s.columns * plane && out.len() == s.rows * plane);
    if plane == 0 {
        return;
    }
    for i in 0..s.rows {
        let r = s.output_of(i);
        let o = &mut out[r * plane..][..plane];
        o.fill(0.0);
        for j in s.row(i) {
            let (c, wj) = s.entries.at(j);
            let src = &x[c * plane..][..plane];
            match path {
                Path::Portable => axpy_portable(wj, src, o),
                // SAFETY: this CPU has AVX2 and FMA; `src` and `o` have the same length.
                #[cfg(target_arch = "x86_64")]
                Path::Avx2Fma | Path::Avx512 => unsafe { axpy_avx2(wj, src, o) },
                // SAFETY: this CPU has NEON; `src` and `o` have the same length.
                #[cfg(target_arch = "aarch64")]
                Path::Neon => unsafe { axpy_neon(wj, src, o) },
            }
        }
        if let Some(scales) = &s.row_scales {
            o.iter_mut().for_each(|v| *v *= scales[r]);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path this CPU runs, the portable one first.
    fn paths() -> Vec<Path> {
        let mut paths = vec![Path::Portable];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            paths.push(Path::Avx2Fma);
            if is_x86_feature_detected!("avx512f") {
                paths.push(Path::Avx512);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            paths.push(Path::Neon);
        }
        paths
    }

    /// A kept weight's value from a random number.
    type ValueOf = fn(u64) -> f32;

    /// Each path (the AVX2 one included where AVX-512 would be chosen) gives every output of
    /// packed, byte-indexed and plain rows of all lengths within the rounding bound of the f64
    /// sum, on one vector and on planes.
    #[test]
    fn every_path_sums_every_entry_form() {
        let (rows, columns) = (37, 300);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Row r keeps about r·8 of 300 weights: from none to every one.
        let keep: Vec<bool> = (0..rows * columns)
            .map(|i| next() % 300 < (i / columns * 8) as u64)
            .collect();
        let forms: [(&str, ValueOf); 3] = [
            ("packed", |r| (r % 15) as f32 / 4.0 - 1.75),
            ("bytes", |r| (r % 200) as f32 / 64.0 - 1.5),
            ("plain", |r| (r % 100_000) as f32 / 40_000.0 - 1.25),
        ];
        for (name, value) in forms {
            let dense: Vec<f32> = keep
                .iter()
                .map(|&k| if k { value(next()) } else { 0.0 })
                .collect();
            let s = SparseRows::from_dense(&dense, rows, columns, false).unwrap();
            let form = match s.entries {
                Entries::Packed { .. } => "packed",
                Entries::Bytes { .. } => "bytes",
                Entries::Plain { .. } => "plain",
            };
            assert_eq!(form, name);
            let plane = 5;
            let x: Vec<f32> = (0..columns * plane)
                .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            for path in paths() {
                let mut y = vec![f32::NAN; rows];
                dot(&s, path, &x[..columns], &mut y);
                let mut planes = vec![f32::NAN; rows * plane];
                axpy(&s, path, plane, &x, &mut planes);
                for r in 0..rows {
                    for p in 0..plane {
                        let (mut sum, mut size) = (0f64, 0f64);
                        for c in 0..columns {
                            let xc = if p == 0 { x[c] } else { x[c * plane + p] };
                            let t = f64::from(dense[r * columns + c]) * f64::from(xc);
                            sum += t;
                            size += t.abs();
                        }
                        let got = if p == 0 { y[r] } else { planes[r * plane + p] };
                        let bound = columns as f64 * f64::from(f32::EPSILON) * size + 1e-30;
                        assert!(
                            (f64::from(got) - sum).abs() <= bound,
                            "{name} {path:?} row {r} pixel {p}: {got} vs {sum}"
                        );
                    }
                }
            }
        }
    }
}
