//! The sums of a sparse weight matrix with dense data, walking each row's kept weights.
//!
//! - [`dot`]: one data vector (a fully connected layer's input): each output is the dot product
//!   of a row's kept weights with the data values at their columns, a gather; the rows of a
//!   slice ([`SLICE`]) are summed side by side, one per lane.
//! - [`axpy`]: one data plane of `P` values per column (a 1×1 convolution's input, `P` pixels):
//!   each kept weight adds its column's plane, scaled, to its row's plane.
//!
//! Each has a plain-Rust path (a slice's lanes, or four lanes of a plane, written out: the
//! phone build, `opt-level = "z"`, does not vectorise loops), an AVX2+FMA path and a NEON
//! path. Sums run in another order than the dense matrix product's (and in two halves, even
//! and odd steps, on AVX2), so they round differently: `docs/PERFORMANCE.md` and the tests
//! state the bound.

use super::layout::{Entries, SLICE, SparseRows};

/// The columns and values of entries, one at a time or eight at a time, per storage of the
/// entries. A trait with `#[inline(always)]` methods rather than closures: the vector paths'
/// target features reach inlined methods, not closures.
trait Kept {
    /// Column and value of entry `j`.
    fn one(&self, j: usize) -> (usize, f32);
    /// Columns and values of entries `j..j + 8`, which must lie within the entries.
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
        // SAFETY (caller): words j..j+8 exist; the codebook has 16 entries and every 4-bit
        // index is below 16.
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
    /// x86_64 AVX2 + FMA. Also where the CPU has AVX-512: slices of 16 rows in 16-lane
    /// gathers were no faster than slices of 8 on AMD Zen 4, and leave more empty places
    /// (`docs/PERFORMANCE.md`).
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

/// `out[r] = s_r · Σ_j w_j · x[column_j]` over the kept weights of each row `r` (`s_r` the
/// row's scale, 1 without).
///
/// Panics unless `x.len() == s.columns` and `out.len() == s.rows`; the columns were checked
/// against `s.columns` when `s` was built.
pub fn dot(s: &SparseRows, path: Path, x: &[f32], out: &mut [f32]) {
    assert!(x.len() == s.columns && out.len() == s.rows);
    match &s.entries {
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
        Path::Avx2Fma => unsafe { dot_avx2(s, k, x, out) },
        // SAFETY: this CPU has NEON; the sizes were checked by `dot`.
        #[cfg(target_arch = "aarch64")]
        Path::Neon => unsafe { dot_neon(s, k, x, out) },
    }
}

/// Writes a slice's sums (one per lane) to the outputs of its rows.
#[inline(always)]
fn store_slice(s: &SparseRows, slice: usize, sums: &[f32; SLICE], out: &mut [f32]) {
    for (l, &sum) in sums.iter().enumerate() {
        if let Some(o) = s.output_of_lane(slice, l) {
            out[o] = sum;
        }
    }
}

/// The first lane of a slice whose row has an entry at step `t`: the rows of a slice are
/// stored from the shortest (lanes without a row first), so the lanes past their row's end
/// come first; step `t` stores the entries of the lanes from this one on.
#[inline(always)]
fn first_live(lengths: &[u16; SLICE], mut lane: usize, t: usize) -> usize {
    while lane < SLICE && usize::from(lengths[lane]) <= t {
        lane += 1;
    }
    lane
}

#[inline(always)]
fn dot_portable<K: Kept>(s: &SparseRows, k: &K, x: &[f32], out: &mut [f32]) {
    for slice in 0..s.slices() {
        let (mut cursor, steps, _) = s.slice(slice);
        let lengths = s.lengths(slice);
        let mut sums = [0f32; SLICE];
        let mut live = 0;
        for t in 0..steps {
            live = first_live(lengths, live, t);
            for (l, sum) in sums.iter_mut().enumerate().skip(live) {
                let (c, w) = k.one(cursor + l - live);
                *sum += w * x[c];
            }
            cursor += SLICE - live;
        }
        store_slice(s, slice, &sums, out);
    }
}

/// A slice of eight rows at a time, one per lane, a step of eight entries (one per row) at a
/// time: while every row runs, a step is eight consecutive entries and a plain gather; past
/// the shortest row's end, the step's entries are read from before it, as many places as
/// lanes have ended, and those lanes are masked out of the gather and the weights. Two sums
/// per lane, even and odd steps, so that consecutive gathers do not wait on each other's
/// multiply-add.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2<K: Kept>(s: &SparseRows, k: &K, x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    // SAFETY: a full step reads the 8 entries from its cursor, all within the slice; a partial
    // step reads 8 from `cursor - ended`, which is ≥ 0 (the entries begin with 8 empty places)
    // and ends at its own last entry; every gathered lane that the mask keeps is a kept
    // weight, whose column is < x.len(); `lengths` are 8 u16 of the slice; `sums` holds the 8
    // results.
    unsafe {
        // A macro, not a closure: closures do not take the function's target features.
        macro_rules! full {
            ($j:expr, $acc:expr) => {{
                let (columns, w) = k.eight($j);
                let xs = _mm256_i32gather_ps::<4>(x.as_ptr(), columns);
                _mm256_fmadd_ps(w, xs, $acc)
            }};
        }
        let mut sums = [0f32; SLICE];
        for slice in 0..s.slices() {
            let (start, steps, all) = s.slice(slice);
            let lengths = s.lengths(slice);
            let (mut even, mut odd) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut t = 0;
            while t + 2 <= all {
                even = full!(start + SLICE * t, even);
                odd = full!(start + SLICE * (t + 1), odd);
                t += 2;
            }
            if t < all {
                even = full!(start + SLICE * t, even);
                t += 1;
            }
            let lanes = _mm256_cvtepu16_epi32(_mm_loadu_si128(lengths.as_ptr() as *const _));
            let mut cursor = start + SLICE * all;
            let mut ended = 0;
            while t < steps {
                ended = first_live(lengths, ended, t);
                let live =
                    _mm256_castsi256_ps(_mm256_cmpgt_epi32(lanes, _mm256_set1_epi32(t as i32)));
                let (columns, w) = k.eight(cursor - ended);
                let xs =
                    _mm256_mask_i32gather_ps::<4>(_mm256_setzero_ps(), x.as_ptr(), columns, live);
                even = _mm256_fmadd_ps(_mm256_and_ps(w, live), xs, even);
                cursor += SLICE - ended;
                t += 1;
            }
            _mm256_storeu_ps(sums.as_mut_ptr(), _mm256_add_ps(even, odd));
            store_slice(s, slice, &sums, out);
        }
    }
}

/// As [`dot_portable`], the eight lanes in two NEON vectors: NEON has no gather, the data
/// values and weights are loaded one by one into lanes (0 past a row's end), the multiply-adds
/// run four at a time.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn dot_neon<K: Kept>(s: &SparseRows, k: &K, x: &[f32], out: &mut [f32]) {
    use std::arch::aarch64::*;
    let mut sums = [0f32; SLICE];
    for slice in 0..s.slices() {
        let (mut cursor, steps, _) = s.slice(slice);
        let lengths = s.lengths(slice);
        // SAFETY: the arrays are 8 f32 each, read and written as two vectors of 4.
        unsafe {
            let (mut lo, mut hi) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
            let mut live = 0;
            for t in 0..steps {
                live = first_live(lengths, live, t);
                let (mut xs, mut ws) = ([0f32; SLICE], [0f32; SLICE]);
                for l in live..SLICE {
                    let (c, w) = k.one(cursor + l - live);
                    xs[l] = x[c];
                    ws[l] = w;
                }
                cursor += SLICE - live;
                lo = vfmaq_f32(lo, vld1q_f32(ws.as_ptr()), vld1q_f32(xs.as_ptr()));
                hi = vfmaq_f32(
                    hi,
                    vld1q_f32(ws.as_ptr().add(4)),
                    vld1q_f32(xs.as_ptr().add(4)),
                );
            }
            vst1q_f32(sums.as_mut_ptr(), lo);
            vst1q_f32(sums.as_mut_ptr().add(4), hi);
        }
        store_slice(s, slice, &sums, out);
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
                Path::Avx2Fma => unsafe { axpy_avx2(wj, src, o) },
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
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            paths.push(Path::Neon);
        }
        paths
    }

    /// A kept weight's value from a random number.
    type ValueOf = fn(u64) -> f32;

    /// Each path gives every output of packed, byte-indexed and plain rows of all lengths
    /// within the rounding bound of the f64 sum, on one vector and on planes.
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
