//! A measurement, not a kernel: EIE's order (Han et al.), walking the kept weights column by
//! column and skipping the columns whose input is zero, against the row kernel ([`dot`]) that
//! the sparse operator runs. A ReLU's output and a Fashion-MNIST image (half its pixels 0) are
//! mostly or half zeros, so the column walk does a fraction of the work; but each of its kept
//! weights is a scalar read-modify-write of an output, where the row kernel sums eight rows
//! per gather. The figures and the conclusion are in `docs/PERFORMANCE.md`.

use super::layout::{Entries, SparseRows};
use super::rows::{Path, dot};
use std::time::Instant;

/// Timing only (`cargo test --release -p nnzip-core column_walk -- --ignored --nocapture`):
/// the row kernel on this CPU's path and in plain Rust against a column walk that skips zero inputs, on
/// LeNet-300-100's three layers at the preset's densities (4-bit codebook), inputs 0, 50 and
/// 80% zero; alternating, medians of 2,000 rounds of 10 calls. Both give the same sums.
#[test]
#[ignore]
fn column_walk_against_rows() {
    for (rows, columns, density) in [(300usize, 784usize, 3u64), (100, 300, 6), (10, 100, 25)] {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let dense: Vec<f32> = (0..rows * columns)
            .map(|_| {
                let r = next();
                if r % 100 < density {
                    ((r >> 20) % 15) as f32 / 8.0 - 0.9
                } else {
                    0.0
                }
            })
            .collect();
        let s = SparseRows::from_dense(&dense, rows, columns, false).unwrap();
        let Entries::Packed { codebook, .. } = &s.entries else {
            panic!()
        };
        // Column-major words: row in 12 bits, codebook index in 4.
        let mut starts = vec![0u32];
        let mut words = Vec::new();
        for c in 0..columns {
            for r in 0..rows {
                let v = dense[r * columns + c];
                if v != 0.0 {
                    let i = codebook.iter().position(|&b| b == v).unwrap();
                    words.push(r as u16 | (i as u16) << 12);
                }
            }
            starts.push(words.len() as u32);
        }
        for zero_percent in [0u64, 50, 80] {
            let x: Vec<f32> = (0..columns)
                .map(|_| {
                    let r = next();
                    if r % 100 < zero_percent {
                        0.0
                    } else {
                        (r >> 40) as f32 / (1u64 << 24) as f32
                    }
                })
                .collect();
            let mut y = vec![0f32; rows];
            let mut z = vec![0f32; rows];
            // The row kernel on this CPU's vector path and in plain Rust (scalar loads, as
            // NEON's, which has no gather), then the column walk.
            let mut times = [Vec::new(), Vec::new(), Vec::new()];
            for _ in 0..2000 {
                for (i, t) in times.iter_mut().enumerate() {
                    let start = Instant::now();
                    for _ in 0..10 {
                        let x = std::hint::black_box(&x);
                        match i {
                            0 => dot(&s, Path::best(), x, &mut y),
                            1 => dot(&s, Path::Portable, x, &mut y),
                            _ => column_walk(&starts, &words, codebook, x, &mut z),
                        }
                    }
                    t.push(start.elapsed());
                }
            }
            for (a, b) in y.iter().zip(&z) {
                assert!((a - b).abs() <= 1e-3 * a.abs().max(1.0), "{a} {b}");
            }
            let [vector, portable, walk] = times.map(|mut t| {
                t.sort();
                t[1000].as_secs_f64() * 1e5
            });
            println!(
                "{rows}×{columns} at {density}%, inputs {zero_percent}% zero: rows {vector:.3} µs ({} kernel), rows in plain Rust {portable:.3} µs, columns {walk:.3} µs",
                Path::best().name()
            );
        }
    }
}

/// `y = W x` over the columns whose input is not zero: each kept weight (a row in 12 bits, a
/// codebook index in 4) adds its codebook value times the input to its row.
fn column_walk(starts: &[u32], words: &[u16], codebook: &[f32], x: &[f32], y: &mut [f32]) {
    y.fill(0.0);
    for (c, &xc) in x.iter().enumerate() {
        if xc == 0.0 {
            continue;
        }
        let scaled: [f32; 16] = std::array::from_fn(|i| codebook[i] * xc);
        for &w in &words[starts[c] as usize..starts[c + 1] as usize] {
            y[usize::from(w & 0xfff)] += scaled[usize::from(w >> 12)];
        }
    }
}
