//! What the convolution suites (`depthwise.rs`, `direct_spatial.rs`) share: their random inputs
//! and the rounding bound they compare tract's f32 outputs with.

/// Deterministic values in [-1, 1) (xorshift).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// f32 sums of `terms` terms are within `terms · ε · Σ|terms|` of the exact sum, whatever their
/// order: `got[i]` against `want[i]`, with `mag[i]` the sum of the magnitudes of its terms.
pub fn assert_close(what: &str, terms: usize, got: &[f32], want: &[f64], mag: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: output length");
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let tol = terms as f64 * f32::EPSILON as f64 * m + 1e-30;
        assert!(
            (g as f64 - w).abs() <= tol,
            "{what}: output {i} is {g}, expected {w} (tolerance {tol:e})"
        );
    }
}
