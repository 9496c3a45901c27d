//! Weight sharing's clustering: 1-D k-means over one layer's weights.
//!
//! One dimension makes k-means easy: after one sort, every cluster is a contiguous run of the
//! sorted values, so Lloyd's step is `k` binary searches plus prefix-sum lookups (no pass over the
//! weights), and the *optimal* clustering is a dynamic programme over the sorted values.

use anyhow::{Result, bail};

/// How the centroids are initialised (Han et al. compare the first three; linear wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmeansInit {
    /// Evenly spaced between the smallest and the largest weight (the paper's default).
    Linear,
    /// Evenly spaced in the weights' CDF (quantiles).
    Density,
    /// `k` distinct weights drawn at random (seeded).
    Random,
    /// k-means++ seeding (seeded).
    PlusPlus,
    /// Not an initialisation: the exact optimum by dynamic programming (no Lloyd iterations).
    Optimal,
}

impl std::str::FromStr for KmeansInit {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "linear" => KmeansInit::Linear,
            "density" => KmeansInit::Density,
            "random" => KmeansInit::Random,
            "kmeans++" | "plusplus" => KmeansInit::PlusPlus,
            "optimal" => KmeansInit::Optimal,
            other => bail!(
                "unknown k-means initialisation '{other}': use linear, density, random, kmeans++ or optimal"
            ),
        })
    }
}

/// The result of clustering: sorted centroids.
#[derive(Debug, Clone, PartialEq)]
pub struct Clustering {
    /// Centroids in increasing order (no duplicates unless the data has fewer distinct values).
    pub centroids: Vec<f32>,
    /// Sum of squared distances of the weights to their centroids.
    pub sse: f64,
    /// Lloyd iterations run (0 for `Optimal`).
    pub iterations: usize,
}

/// Sorted values with prefix sums: the segment cost of any run is O(1).
struct Sorted {
    v: Vec<f64>,
    s1: Vec<f64>,
    s2: Vec<f64>,
}

impl Sorted {
    fn new(values: &[f32]) -> Self {
        let mut v: Vec<f64> = values.iter().map(|&x| x as f64).collect();
        v.sort_by(f64::total_cmp);
        let mut s1 = Vec::with_capacity(v.len() + 1);
        let mut s2 = Vec::with_capacity(v.len() + 1);
        let (mut a, mut b) = (0.0, 0.0);
        s1.push(0.0);
        s2.push(0.0);
        for &x in &v {
            a += x;
            b += x * x;
            s1.push(a);
            s2.push(b);
        }
        Sorted { v, s1, s2 }
    }
    /// Mean and SSE of `v[i..j]`.
    fn segment(&self, i: usize, j: usize) -> (f64, f64) {
        let n = (j - i) as f64;
        if n == 0.0 {
            return (0.0, 0.0);
        }
        let s = self.s1[j] - self.s1[i];
        let q = self.s2[j] - self.s2[i];
        (s / n, (q - s * s / n).max(0.0))
    }
}

/// Clusters `values` into at most `k` centroids. Deterministic for a given `seed`.
pub fn kmeans_1d(
    values: &[f32],
    k: usize,
    init: KmeansInit,
    seed: u64,
    max_iter: usize,
) -> Result<Clustering> {
    if k == 0 {
        bail!("k-means needs at least one cluster");
    }
    if values.is_empty() {
        return Ok(Clustering {
            centroids: Vec::new(),
            sse: 0.0,
            iterations: 0,
        });
    }
    if values.iter().any(|v| !v.is_finite()) {
        bail!("k-means: the weights contain NaN or infinity");
    }
    let data = Sorted::new(values);
    let n = data.v.len();
    let distinct = 1 + data.v.windows(2).filter(|w| w[0] != w[1]).count();
    let k = k.min(distinct);
    let (lo, hi) = (data.v[0], data.v[n - 1]);
    let mut c: Vec<f64> = match init {
        KmeansInit::Linear => (0..k)
            .map(|i| {
                if k == 1 {
                    (lo + hi) / 2.0
                } else {
                    lo + (hi - lo) * i as f64 / (k - 1) as f64
                }
            })
            .collect(),
        KmeansInit::Density => (0..k)
            .map(|i| data.v[((2 * i + 1) * n / (2 * k)).min(n - 1)])
            .collect(),
        KmeansInit::Random => {
            let mut rng = SplitMix(seed);
            (0..k).map(|_| data.v[rng.below(n)]).collect()
        }
        KmeansInit::PlusPlus => plus_plus(&data.v, k, seed),
        KmeansInit::Optimal => return Ok(optimal(&data, k)),
    };
    c.sort_by(f64::total_cmp);
    let mut iterations = 0;
    let mut bounds = vec![0usize; k + 1];
    for it in 0..max_iter.max(1) {
        iterations = it + 1;
        assign_bounds(&data.v, &c, &mut bounds);
        let mut moved = 0.0f64;
        for j in 0..k {
            let (a, b) = (bounds[j], bounds[j + 1]);
            if b > a {
                let (m, _) = data.segment(a, b);
                moved = moved.max((m - c[j]).abs());
                c[j] = m;
            }
        }
        // Empty clusters keep their place; sorting keeps the bounds valid.
        c.sort_by(f64::total_cmp);
        if moved <= 1e-9 * (hi - lo).abs().max(1e-30) {
            break;
        }
    }
    assign_bounds(&data.v, &c, &mut bounds);
    let sse = (0..k)
        .map(|j| seg_sse_about(&data, bounds[j], bounds[j + 1], c[j]))
        .sum();
    Ok(Clustering {
        centroids: c.into_iter().map(|x| x as f32).collect(),
        sse,
        iterations,
    })
}

/// SSE of `v[a..b]` about the point `c`.
fn seg_sse_about(d: &Sorted, a: usize, b: usize, c: f64) -> f64 {
    let n = (b - a) as f64;
    let s = d.s1[b] - d.s1[a];
    let q = d.s2[b] - d.s2[a];
    (q - 2.0 * c * s + n * c * c).max(0.0)
}

/// `bounds[j]..bounds[j+1]` are the sorted values nearest to centroid `j` (centroids sorted).
fn assign_bounds(v: &[f64], c: &[f64], bounds: &mut [usize]) {
    let k = c.len();
    bounds[0] = 0;
    bounds[k] = v.len();
    for j in 1..k {
        let mid = (c[j - 1] + c[j]) / 2.0;
        bounds[j] = v.partition_point(|&x| x < mid).max(bounds[j - 1]);
    }
}

fn plus_plus(v: &[f64], k: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix(seed);
    let mut c = vec![v[rng.below(v.len())]];
    let mut d2: Vec<f64> = v.iter().map(|x| (x - c[0]).powi(2)).collect();
    while c.len() < k {
        let total: f64 = d2.iter().sum();
        if total <= 0.0 {
            break;
        }
        let mut r = rng.unit() * total;
        let mut pick = v.len() - 1;
        for (i, d) in d2.iter().enumerate() {
            r -= d;
            if r <= 0.0 {
                pick = i;
                break;
            }
        }
        let x = v[pick];
        c.push(x);
        for (d, y) in d2.iter_mut().zip(v) {
            *d = d.min((y - x).powi(2));
        }
    }
    c
}

/// Most points the exact dynamic programme runs on; larger layers are first reduced to this
/// many equal-count runs of the sorted values (each run's values stay together, so the result
/// is optimal up to that granularity).
pub const OPTIMAL_MAX_POINTS: usize = 1 << 16;

/// Exact 1-D k-means (Wang & Song's Ckmeans.1d.dp idea) with divide-and-conquer row
/// optimisation: O(k·n·log n) over at most [`OPTIMAL_MAX_POINTS`] weighted points.
fn optimal(data: &Sorted, k: usize) -> Clustering {
    let n = data.v.len();
    // Weighted points: runs of the sorted values (exact when n is small).
    let runs = n.min(OPTIMAL_MAX_POINTS);
    let edges: Vec<usize> = (0..=runs).map(|i| i * n / runs).collect();
    let m = runs;
    let cost = |a: usize, b: usize| data.segment(edges[a], edges[b]).1;
    let inf = f64::INFINITY;
    // prev[i]: best cost of the first i points with (layer) clusters.
    let mut prev: Vec<f64> = (0..=m).map(|i| cost(0, i)).collect();
    let mut cut: Vec<Vec<usize>> = vec![vec![0; m + 1]; k];
    for layer in 1..k {
        let mut cur = vec![inf; m + 1];
        let mut arg = vec![0usize; m + 1];
        // Row minima are monotone in i: divide and conquer.
        let mut stack = vec![(1usize, m, 0usize, m)];
        while let Some((lo, hi, olo, ohi)) = stack.pop() {
            if lo > hi {
                continue;
            }
            let mid = (lo + hi) / 2;
            let (mut best, mut bj) = (inf, olo);
            for j in olo..=ohi.min(mid) {
                let v = prev[j] + cost(j, mid);
                if v < best {
                    best = v;
                    bj = j;
                }
            }
            cur[mid] = best;
            arg[mid] = bj;
            if mid > lo {
                stack.push((lo, mid - 1, olo, bj));
            }
            stack.push((mid + 1, hi, bj, ohi));
        }
        cur[0] = 0.0;
        cut[layer] = arg;
        prev = cur;
    }
    // Walk back the cuts.
    let mut centroids = Vec::with_capacity(k);
    let mut end = m;
    for layer in (0..k).rev() {
        let start = if layer == 0 { 0 } else { cut[layer][end] };
        if end > start {
            centroids.push(data.segment(edges[start], edges[end]).0 as f32);
        }
        end = start;
    }
    centroids.reverse();
    Clustering {
        centroids,
        sse: prev[m],
        iterations: 0,
    }
}

/// Index of the nearest centroid for each value (`centroids` sorted increasingly).
pub fn assign(values: &[f32], centroids: &[f32]) -> Vec<u16> {
    let mids: Vec<f32> = centroids.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
    values
        .iter()
        .map(|&x| mids.partition_point(|&m| m < x) as u16)
        .collect()
}

/// SplitMix64: small, seedable, good enough for initialisation.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        let mut r = SplitMix(seed);
        (0..n)
            .map(|_| {
                let (u, v) = (r.unit().max(1e-12), r.unit());
                ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos() * 0.05) as f32
            })
            .collect()
    }

    fn brute_sse(values: &[f32], c: &[f32]) -> f64 {
        let idx = assign(values, c);
        values
            .iter()
            .zip(idx)
            .map(|(&x, i)| ((x - c[i as usize]) as f64).powi(2))
            .sum()
    }

    #[test]
    fn separated_clusters_are_found_by_every_method() {
        let mut v = Vec::new();
        for (c, n) in [(-1.0f32, 50), (0.5, 70), (3.0, 30)] {
            for i in 0..n {
                v.push(c + (i as f32 - n as f32 / 2.0) * 1e-3);
            }
        }
        for init in [
            KmeansInit::Linear,
            KmeansInit::Density,
            KmeansInit::PlusPlus,
            KmeansInit::Optimal,
        ] {
            let r = kmeans_1d(&v, 3, init, 1, 100).unwrap();
            assert_eq!(r.centroids.len(), 3, "{init:?}");
            for (got, want) in r.centroids.iter().zip([-1.0, 0.5, 3.0]) {
                assert!((got - want).abs() < 1e-2, "{init:?}: {:?}", r.centroids);
            }
        }
    }

    #[test]
    fn optimal_is_never_worse_than_lloyd_and_matches_brute_force_on_tiny_data() {
        let v = gaussian(5000, 3);
        let opt = kmeans_1d(&v, 16, KmeansInit::Optimal, 0, 0).unwrap();
        for init in [
            KmeansInit::Linear,
            KmeansInit::Density,
            KmeansInit::Random,
            KmeansInit::PlusPlus,
        ] {
            let l = kmeans_1d(&v, 16, init, 7, 300).unwrap();
            assert!(
                opt.sse <= l.sse * (1.0 + 1e-9),
                "{init:?}: optimal {} > lloyd {}",
                opt.sse,
                l.sse
            );
            assert!((brute_sse(&v, &l.centroids) - l.sse).abs() <= 1e-6 * l.sse.max(1e-12));
        }
        // Exhaustive check: 8 points into 3 clusters.
        let tiny = [0.0f32, 0.1, 0.15, 0.9, 1.0, 1.05, 3.0, 3.3];
        let opt = kmeans_1d(&tiny, 3, KmeansInit::Optimal, 0, 0).unwrap();
        let mut best = f64::INFINITY;
        for a in 1..tiny.len() {
            for b in a + 1..tiny.len() {
                let seg = |s: &[f32]| {
                    let m = s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64;
                    s.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>()
                };
                best = best.min(seg(&tiny[..a]) + seg(&tiny[a..b]) + seg(&tiny[b..]));
            }
        }
        assert!((opt.sse - best).abs() < 1e-9, "{} vs {best}", opt.sse);
    }

    #[test]
    fn k_larger_than_distinct_values_and_bad_input() {
        let r = kmeans_1d(&[1.0, 1.0, 2.0], 8, KmeansInit::Linear, 0, 10).unwrap();
        assert_eq!(r.centroids, vec![1.0, 2.0]);
        assert!(kmeans_1d(&[f32::NAN], 2, KmeansInit::Linear, 0, 10).is_err());
        assert!(kmeans_1d(&[1.0], 0, KmeansInit::Linear, 0, 10).is_err());
        assert_eq!(
            assign(&[-5.0, 0.0, 0.6, 9.0], &[0.0, 1.0]),
            vec![0, 0, 1, 1]
        );
    }
}
