//! How one layer's weights become a codebook and indices in label-free compression: exact 1-D
//! k-means at a bit width, or a uniform grid in standard deviations of the layer (rows scaled,
//! rounding errors compensated where the layer's input statistics are known).

use crate::compress::gptq::LayerStats;
use crate::compress::kmeans::KmeansInit;
use crate::compress::share::{SharedLayer, row_normalise, share_weights};
use anyhow::{Context, Result, bail};
use nnzip_core::graph::Weight;

/// How a layer's weights become a codebook and indices.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quantizer {
    /// The paper's k-means (here the exact 1-D optimum) with `2^bits − 1` shared values.
    Kmeans {
        /// Index bits.
        bits: u8,
        /// Rows normalised by their largest magnitude first, one scale per row stored
        /// ([`crate::compress::share::row_normalise`]).
        #[serde(default)]
        row_scaled: bool,
    },
    /// A uniform grid of step `step × std(layer)`, each value the mean of its weights; the bin
    /// around zero is the zero of the sparse encodings (so small weights are pruned by it).
    /// Entropy-coded, it beats k-means at the same size: k-means spreads its centroids so that
    /// every index is about equally likely, which leaves the entropy coder nothing to gain.
    Uniform {
        /// Grid step in standard deviations of the layer.
        step: f64,
        /// Rows normalised by their largest magnitude first (the grid is then in standard
        /// deviations of the normalised layer).
        #[serde(default)]
        row_scaled: bool,
        /// Rounding errors compensated with the layer's input statistics (GPTQ,
        /// [`crate::compress::gptq`]) where they were measured; plain rounding elsewhere.
        #[serde(default)]
        compensated: bool,
    },
}

impl Quantizer {
    /// Short name for tables: `8b` or `0.10σ`, with `/row` when rows are scaled.
    pub fn label(&self) -> String {
        match *self {
            Quantizer::Kmeans { bits, row_scaled } => {
                format!("{bits}b{}", if row_scaled { "/row" } else { "" })
            }
            Quantizer::Uniform {
                step,
                row_scaled,
                compensated,
            } => format!(
                "{step:.2}σ{}{}",
                if row_scaled { "/row" } else { "" },
                if compensated { "+c" } else { "" }
            ),
        }
    }

    /// Shares one layer's weights (index 0 is always the zero). `hessian`: the layer's input
    /// statistics, used by compensated uniform grids (ignored otherwise, or when absent).
    pub fn share(&self, w: &Weight, hessian: Option<&LayerStats>) -> Result<SharedLayer> {
        let rows = w.shape.first().copied().unwrap_or(1) as usize;
        // Row scales and the row-normalised weights, when asked for and possible.
        let by_row = |on: bool| {
            row_normalise(&w.values, rows).filter(|_| on && w.shape.len() >= 2 && rows > 1)
        };
        match *self {
            Quantizer::Kmeans { bits, row_scaled } => match by_row(row_scaled) {
                Some((scales, normalised)) => {
                    share_weights(&normalised, bits, true, KmeansInit::Optimal, 0).map(|mut l| {
                        l.row_scales = Some(scales);
                        l
                    })
                }
                None => share_weights(&w.values, bits, true, KmeansInit::Optimal, 0),
            },
            Quantizer::Uniform {
                step,
                row_scaled,
                compensated,
            } => {
                let (scales, normalised) = match by_row(row_scaled) {
                    Some((s, n)) => (Some(s), n),
                    None => (None, w.values.clone()),
                };
                let hessian = hessian
                    .filter(|h| compensated && h.cols() > 0 && h.weights() == w.values.len());
                let delta = grid_delta(&normalised, step)?;
                let layer = match hessian.filter(|_| delta > 0.0) {
                    None => share_uniform(&normalised, step),
                    Some(h) => {
                        let scale = |r: usize| scales.as_ref().map_or(1.0, |s| f64::from(s[r]));
                        let rounded = h.round(&w.values, |r, v| {
                            let unit = scale(r) * delta;
                            if unit > 0.0 {
                                (v / unit).round() * unit
                            } else {
                                0.0
                            }
                        })?;
                        // Back to the normalised grid (the same scales), then shared on it.
                        let cols = h.cols();
                        let on_grid: Vec<f32> = rounded
                            .iter()
                            .enumerate()
                            .map(|(i, &v)| {
                                let s = scale(i / cols) as f32;
                                if s > 0.0 { v / s } else { 0.0 }
                            })
                            .collect();
                        share_grid(&on_grid, delta)
                    }
                };
                layer.map(|mut l| {
                    l.row_scales = scales;
                    l
                })
            }
        }
        .with_context(|| format!("weight sharing of '{}'", w.name))
    }
}

/// The grid step of [`Quantizer::Uniform`]: `step` standard deviations of `w` (0 for a
/// constant layer).
fn grid_delta(w: &[f32], step: f64) -> Result<f64> {
    if !(step.is_finite() && step > 0.0) {
        bail!("grid step must be > 0, got {step}");
    }
    let n = w.len().max(1) as f64;
    let mean = w.iter().map(|&x| x as f64).sum::<f64>() / n;
    let std = (w.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    Ok(step * std)
}

/// Uniform-grid sharing (see [`Quantizer::Uniform`]): weight `x` goes to bin `round(x / Δ)`
/// with `Δ = step · std`; bin 0 is index 0 (the exact zero); the other bins that occur get the
/// next indices in increasing order and the mean of their weights as shared value.
pub fn share_uniform(w: &[f32], step: f64) -> Result<SharedLayer> {
    share_grid(w, grid_delta(w, step)?)
}

/// Sharing on the uniform grid of step `delta` (see [`share_uniform`]); a zero step (a constant
/// layer) shares by k-means with one bit.
pub fn share_grid(w: &[f32], delta: f64) -> Result<SharedLayer> {
    if delta == 0.0 {
        return share_weights(w, 1, true, KmeansInit::Linear, 0);
    }
    if !(delta.is_finite() && delta > 0.0) {
        bail!("grid step must be finite and > 0, got {delta}");
    }
    let bins: Vec<i64> = w
        .iter()
        .map(|&x| (x as f64 / delta).round() as i64)
        .collect();
    let mut used: Vec<i64> = bins.iter().copied().filter(|&b| b != 0).collect();
    used.sort_unstable();
    used.dedup();
    if used.len() + 1 > 1 << 16 {
        bail!(
            "a grid step of {delta} gives {} levels: more than 16-bit indices hold",
            used.len() + 1
        );
    }
    let index_of = |b: i64| -> u16 {
        if b == 0 {
            0
        } else {
            (used.binary_search(&b).expect("bin listed") + 1) as u16
        }
    };
    let indices: Vec<u16> = bins.iter().map(|&b| index_of(b)).collect();
    let mut sums = vec![0f64; used.len() + 1];
    let mut counts = vec![0u64; used.len() + 1];
    for (&i, &x) in indices.iter().zip(w) {
        sums[i as usize] += x as f64;
        counts[i as usize] += 1;
    }
    let mut codebook: Vec<f32> = sums
        .iter()
        .zip(&counts)
        .map(|(&s, &c)| if c > 0 { (s / c as f64) as f32 } else { 0.0 })
        .collect();
    codebook[0] = 0.0;
    let bits = (usize::BITS - used.len().leading_zeros()).max(1) as u8;
    Ok(SharedLayer {
        codebook,
        indices,
        bits,
        sparse: true,
        row_scales: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::gptq::LayerHessian;
    use crate::compress::label_free::bit_curves::coded_bytes;
    use crate::compress::pipeline::CompressConfig;

    #[test]
    fn compensated_grid_sharing_stays_on_the_row_grids_and_cuts_the_output_error() {
        use crate::compress::gptq::test_support::{output_error, second_moments, uniform};
        let (rows, cols) = (12, 32);
        let mut rand = uniform(0x2545_f491_4f6c_dd1d);
        // Rows of very different ranges (as BatchNorm folding leaves them), correlated inputs.
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| (rand() * 10f64.powi((i / cols) as i32 % 3 - 1)) as f32)
            .collect();
        let w = Weight {
            name: "w".into(),
            shape: vec![rows as u64, cols as u64, 1, 1],
            values,
        };
        let xs: Vec<Vec<f64>> = (0..500)
            .map(|_| {
                let f = [rand(), rand()];
                (0..cols).map(|c| f[c % 2] + 0.05 * rand()).collect()
            })
            .collect();
        let h = second_moments(&xs, cols);
        let hessian = LayerStats {
            groups: vec![LayerHessian::new(&h, cols, xs.len()).unwrap()],
            rows_per_group: rows,
        };
        let grid = |compensated| Quantizer::Uniform {
            step: 0.5,
            row_scaled: true,
            compensated,
        };
        let plain = grid(false).share(&w, Some(&hessian)).unwrap();
        let comp = grid(true).share(&w, Some(&hessian)).unwrap();
        // Same row scales; every shared value a multiple of the grid step (in row units).
        assert_eq!(plain.row_scales, comp.row_scales);
        let scales = comp.row_scales.clone().unwrap();
        assert_eq!(scales.len(), rows);
        let normalised: Vec<f32> = w
            .values
            .iter()
            .enumerate()
            .map(|(i, &v)| v / scales[i / cols])
            .collect();
        let delta = grid_delta(&normalised, 0.5).unwrap();
        for &c in &comp.codebook {
            let k = f64::from(c) / delta;
            assert!((k - k.round()).abs() < 1e-3, "centroid {c} is {k} steps");
        }
        let (e_plain, e_comp) = (
            output_error(&w.values, &plain.values(), &xs, cols),
            output_error(&w.values, &comp.values(), &xs, cols),
        );
        assert!(
            e_comp < 0.5 * e_plain,
            "compensated {e_comp} vs plain {e_plain}"
        );
        // Without statistics, compensation falls back to plain rounding.
        assert_eq!(grid(true).share(&w, None).unwrap(), plain);
    }

    #[test]
    fn uniform_grid_keeps_zero_at_index_zero_and_beats_kmeans_when_entropy_coded() {
        // Laplace-distributed weights (heavy-tailed, like trained layers), unit variance.
        let mut x = 12345u64;
        let w: Vec<f32> = (0..20_000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                let v = -(2.0 * (u - 0.5).abs()).ln() / 2f64.sqrt();
                (if u < 0.5 { -v } else { v }) as f32
            })
            .collect();
        let grid = share_uniform(&w, 0.15).unwrap();
        assert_eq!(grid.codebook[0], 0.0);
        assert!(grid.sparse);
        for (&i, &x) in grid.indices.iter().zip(&w) {
            if i == 0 {
                assert!(x.abs() <= 0.08, "{x} is not in the zero bin");
            } else {
                assert!(
                    (grid.codebook[i as usize] - x).abs() <= 0.16,
                    "{x} is not in its bin"
                );
            }
        }
        let weight = Weight {
            name: "w".into(),
            shape: vec![w.len() as u64],
            values: w.clone(),
        };
        let mse = |l: &SharedLayer| {
            l.values()
                .iter()
                .zip(&w)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
        };
        let km = Quantizer::Kmeans {
            bits: 5,
            row_scaled: false,
        }
        .share(&weight, None)
        .unwrap();
        let cfg = CompressConfig::default();
        let km_bytes = coded_bytes(&weight, &km, &cfg).unwrap();
        // The finest grid that is no bigger than 5-bit k-means has clearly less error.
        let same_size = (10..40)
            .map(|i| share_uniform(&w, i as f64 * 0.01).unwrap())
            .find(|g| coded_bytes(&weight, g, &cfg).unwrap() <= km_bytes)
            .unwrap();
        assert!(
            mse(&same_size) < 0.8 * mse(&km),
            "{} vs {}",
            mse(&same_size),
            mse(&km)
        );
        assert!(share_uniform(&w, 0.0).is_err());
    }
}
