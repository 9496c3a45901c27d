//! Matrix transposes of f32 between the channel-first and channel-last layouts of a block of
//! channels ([`channel_blocks`](super::channel_blocks)): eight-by-eight tiles in AVX registers
//! where the CPU has them, element by element at the edges and elsewhere.

/// Writes the transpose of the `rows × cols` matrix at `src` (row `r` at `src[r · src_pitch..]`)
/// to `dst` (column `r` of it at `dst[r..]`, row `c` at `dst[c · dst_pitch..]`).
///
/// # Panics
/// Where a slice is too short for the matrix it is said to hold.
pub(super) fn transpose(
    src: &[f32],
    src_pitch: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_pitch: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(src.len() >= (rows - 1) * src_pitch + cols && cols <= src_pitch);
    assert!(dst.len() >= (cols - 1) * dst_pitch + rows && rows <= dst_pitch);
    // Only an x86_64 build has vector tiles to count.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let (mut tiled_rows, mut tiled_cols) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx") {
        (tiled_rows, tiled_cols) = (rows - rows % 8, cols - cols % 8);
        // SAFETY: the tiles cover rows and columns inside the matrix, whose extent in both
        // slices was checked above; the CPU has AVX.
        unsafe { tiles_avx(src, src_pitch, tiled_rows, tiled_cols, dst, dst_pitch) };
    }
    // What the tiles left: the columns right of them on their rows, then the rows below them.
    for r in 0..tiled_rows {
        for c in tiled_cols..cols {
            dst[c * dst_pitch + r] = src[r * src_pitch + c];
        }
    }
    for r in tiled_rows..rows {
        for c in 0..cols {
            dst[c * dst_pitch + r] = src[r * src_pitch + c];
        }
    }
}

/// The eight-by-eight tiles of the first `rows × cols` values (both multiples of eight).
///
/// # Safety
/// The matrix is inside both slices (as [`transpose`] checks); the CPU has AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn tiles_avx(
    src: &[f32],
    src_pitch: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_pitch: usize,
) {
    use std::arch::x86_64::*;
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    for r in (0..rows).step_by(8) {
        for c in (0..cols).step_by(8) {
            unsafe {
                // No closure for the loads: a closure would not carry this function's AVX.
                let mut lines = [_mm256_setzero_ps(); 8];
                for (i, v) in lines.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(s.add((r + i) * src_pitch + c));
                }
                let [r0, r1, r2, r3, r4, r5, r6, r7] = lines;
                // Pairs of rows interleaved, then pairs of pairs, then the 128-bit halves.
                let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
                let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
                let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
                let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let out = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (i, v) in out.into_iter().enumerate() {
                    _mm256_storeu_ps(d.add((c + i) * dst_pitch + r), v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_at_its_mirror_place() {
        // Tiles and both kinds of edge, pitches wider than the rows.
        for (rows, cols) in [(8, 8), (16, 49), (13, 196), (5, 3), (24, 17)] {
            let (sp, dp) = (cols + 3, rows + 1);
            let src: Vec<f32> = (0..rows * sp).map(|i| i as f32).collect();
            let mut dst = vec![-1f32; cols * dp];
            transpose(&src, sp, rows, cols, &mut dst, dp);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(dst[c * dp + r], src[r * sp + c], "{rows}x{cols} at {r},{c}");
                }
            }
            // The pitch's extra values are left alone.
            assert!(
                dst.chunks(dp)
                    .all(|row| row[rows..].iter().all(|&v| v == -1.0))
            );
        }
    }
}
