//! Error-compensated rounding of a layer onto a uniform grid (GPTQ: Frantar et al., "GPTQ:
//! Accurate Post-Training Quantization for Generative Pre-trained Transformers", ICLR 2023, after
//! "Optimal Brain Compression", NeurIPS 2022).
//!
//! Rounding each weight to its nearest grid value minimises the error of the weights; what the
//! network feels is the error of the layer's outputs, `‖(W − Q)·X‖²` over the inputs `X` it
//! sees. With `H = X·Xᵀ` (the inputs' second moments, measured on calibration photos), the
//! weights of one row are rounded one input at a time, and the rounding error of each is spread
//! over the inputs not yet rounded in the way that cancels it best (the inverse Hessian's
//! Cholesky factor). Every row still lands on the same grid, so sharing and entropy coding work
//! as before; only which grid value each weight takes changes.

use anyhow::{Result, bail};

/// A layer's input second moments `H = Σ x·xᵀ` over the inputs it saw, for its weight matrix
/// of `rows × cols` (`cols` inputs), with the upper Cholesky factor of `H⁻¹` GPTQ needs.
#[derive(Debug, Clone)]
pub struct LayerHessian {
    /// Inputs per row of the weight matrix.
    pub cols: usize,
    /// Upper-triangular factor `U` with `H⁻¹ = Uᵀ·U` (row-major, `cols × cols`), columns in
    /// `order`.
    factor: Vec<f64>,
    /// Inputs by decreasing `H` diagonal (GPTQ's "act order": the inputs that matter most are
    /// rounded first, while the most inputs are left to absorb their error).
    order: Vec<usize>,
    /// Inputs never active on the calibration photos (their weights are free: set to zero).
    dead: Vec<bool>,
}

/// Relative damping added to `H`'s diagonal (a fraction of its mean), as GPTQ does: keeps the
/// factorisation stable when inputs are correlated.
pub const DAMPING: f64 = 0.01;

/// Damping per input per sample: with `s` input vectors for `c` inputs, the damping is at least
/// `DAMPING_PER_INPUT · c / s`. A layer that saw fewer vectors than it has inputs (EfficientNet's
/// classifier: 480 views for 1,280 inputs) has directions the photos never excite, into which
/// undamped GPTQ pushes its rounding errors: it fits the calibration views and loses on new
/// photos, which damping recovers (docs/PERFORMANCE.md). Convolutions see one vector per output position
/// (thousands per photo) and keep the 1% damping.
pub const DAMPING_PER_INPUT: f64 = 0.25;

impl LayerHessian {
    /// From `H` (row-major `cols × cols`, symmetric positive semi-definite), the sum of
    /// `samples` outer products.
    pub fn new(h: &[f64], cols: usize, samples: usize) -> Result<Self> {
        if h.len() != cols * cols {
            bail!("Hessian of {} values for {cols} inputs", h.len());
        }
        let dead: Vec<bool> = (0..cols).map(|i| h[i * cols + i] <= 0.0).collect();
        let mut order: Vec<usize> = (0..cols).collect();
        order.sort_by(|&a, &b| h[b * cols + b].total_cmp(&h[a * cols + a]));
        let mut damping = damping(h, cols, samples);
        for _ in 0..6 {
            let mut p = vec![0f64; cols * cols];
            for (a, &i) in order.iter().enumerate() {
                for (b, &j) in order.iter().enumerate() {
                    p[a * cols + b] = if dead[i] || dead[j] {
                        if a == b { 1.0 } else { 0.0 }
                    } else {
                        h[i * cols + j]
                    };
                }
                if !dead[i] {
                    p[a * cols + a] += damping;
                }
            }
            if let Some(factor) = inverse_upper_factor(&p, cols) {
                return Ok(LayerHessian {
                    cols,
                    factor,
                    order,
                    dead,
                });
            }
            damping *= 10.0;
        }
        bail!("the input second moments of a layer are not positive definite, even damped")
    }

    /// Rounds every row of `w` (`rows × cols`, row-major) onto `grid(row, value)` with GPTQ's
    /// error compensation; returns the rounded weights. `grid` must be idempotent (a grid
    /// value rounds to itself).
    pub fn round(&self, w: &[f32], grid: impl Fn(usize, f64) -> f64) -> Result<Vec<f32>> {
        let n = self.cols;
        if n == 0 || !w.len().is_multiple_of(n) {
            bail!("{} weights are not rows of {n} inputs", w.len());
        }
        let mut out = vec![0f32; w.len()];
        let mut row = vec![0f64; n];
        for (r, (src, dst)) in w.chunks_exact(n).zip(out.chunks_exact_mut(n)).enumerate() {
            for (a, &i) in self.order.iter().enumerate() {
                row[a] = if self.dead[i] { 0.0 } else { f64::from(src[i]) };
            }
            for a in 0..n {
                let q = grid(r, row[a]);
                let err = (row[a] - q) / self.factor[a * n + a];
                row[a] = q;
                let u = &self.factor[a * n..(a + 1) * n];
                for b in a + 1..n {
                    row[b] -= err * u[b];
                }
            }
            for (a, &i) in self.order.iter().enumerate() {
                dst[i] = row[a] as f32;
            }
        }
        Ok(out)
    }
}

/// GPTQ statistics of one layer: rows (output channels) in groups that see the same inputs —
/// one group for a pointwise convolution, a dense convolution or `Gemm`; one per channel for a
/// depthwise convolution, whose channels each see their own input channel's patches.
#[derive(Debug, Clone)]
pub struct LayerStats {
    /// One factorisation per group, in row order.
    pub groups: Vec<LayerHessian>,
    /// Consecutive rows per group.
    pub rows_per_group: usize,
}

impl LayerStats {
    /// Inputs per row.
    pub fn cols(&self) -> usize {
        self.groups.first().map_or(0, |g| g.cols)
    }

    /// Weights of the layer these statistics are for.
    pub fn weights(&self) -> usize {
        self.groups.len() * self.rows_per_group * self.cols()
    }

    /// [`LayerHessian::round`] for every group; `grid` gets the row's index in the layer.
    pub fn round(&self, w: &[f32], grid: impl Fn(usize, f64) -> f64) -> Result<Vec<f32>> {
        if w.len() != self.weights() || self.groups.iter().any(|g| g.cols != self.cols()) {
            bail!(
                "{} weights for statistics of {} groups × {} rows × {} inputs",
                w.len(),
                self.groups.len(),
                self.rows_per_group,
                self.cols()
            );
        }
        let chunk = (self.rows_per_group * self.cols()).max(1);
        let mut out = Vec::with_capacity(w.len());
        for (gi, (h, rows)) in self.groups.iter().zip(w.chunks(chunk)).enumerate() {
            let first = gi * self.rows_per_group;
            out.extend(h.round(rows, |r, v| grid(first + r, v))?);
        }
        Ok(out)
    }
}

/// The damping GPTQ adds to the diagonal of `H` (the sum of `samples` outer products of
/// `cols` inputs): [`DAMPING`], or more when there are few samples per input
/// ([`DAMPING_PER_INPUT`]), relative to `H`'s mean diagonal.
fn damping(h: &[f64], cols: usize, samples: usize) -> f64 {
    let mean_diag = (0..cols).map(|i| h[i * cols + i]).sum::<f64>() / cols.max(1) as f64;
    let relative = DAMPING.max(DAMPING_PER_INPUT * cols as f64 / samples.max(1) as f64);
    relative * mean_diag.max(1e-12)
}

/// Asymmetric calibration (Li et al., "GPTAQ", ICML 2025): the weights `W'` that reproduce a
/// layer's outputs in the dense model from the inputs it gets in the compressed one, where the
/// layers before it are already rounded: `min ‖W·X − W'·X̃‖²` over the calibration inputs, with
/// `X` what the layer sees in the dense model and `X̃` in the compressed one. Ridge-damped
/// towards `W` as GPTQ damps `H`: `W' = (W·C + λ·W)·(H̃ + λ·I)⁻¹` with `C = Σ x·x̃ᵀ` and
/// `H̃ = Σ x̃·x̃ᵀ`. Rounding `W'` with GPTQ under `H̃` then minimises the same objective on the
/// grid (`‖W·X − Q·X̃‖² = ‖(W' − Q)·X̃‖²` + a constant): each layer absorbs the error that the
/// rounding of the layers before it left in its inputs, instead of passing it on.
///
/// `w`: rows of `cols` weights; `cross`: `C` (row-major `cols × cols`, `C[i][j] = Σ x_i·x̃_j`);
/// `h`: `H̃`; both sums of `samples` vectors.
pub fn asymmetric_target(
    w: &[f32],
    cross: &[f64],
    h: &[f64],
    cols: usize,
    samples: usize,
) -> Result<Vec<f32>> {
    if cols == 0
        || !w.len().is_multiple_of(cols)
        || cross.len() != cols * cols
        || h.len() != cols * cols
    {
        bail!(
            "asymmetric target: {} weights, statistics of {} and {} values for {cols} inputs",
            w.len(),
            cross.len(),
            h.len()
        );
    }
    let mut lambda = damping(h, cols, samples);
    let mut l = None;
    for _ in 0..6 {
        let mut p = h.to_vec();
        for i in 0..cols {
            p[i * cols + i] += lambda;
        }
        l = cholesky(&p, cols);
        if l.is_some() {
            break;
        }
        lambda *= 10.0;
    }
    let Some(l) = l else {
        bail!("the input second moments of a layer are not positive definite, even damped")
    };
    let mut out = Vec::with_capacity(w.len());
    let mut rhs = vec![0f64; cols];
    for row in w.chunks_exact(cols) {
        // (H̃ + λI)·w' = Cᵀ·w + λ·w, solved with the Cholesky factor (forward, then back).
        for (j, r) in rhs.iter_mut().enumerate() {
            *r = lambda * f64::from(row[j]);
        }
        for (i, &wi) in row.iter().enumerate() {
            let wi = f64::from(wi);
            if wi != 0.0 {
                let c = &cross[i * cols..(i + 1) * cols];
                rhs.iter_mut().zip(c).for_each(|(r, c)| *r += wi * c);
            }
        }
        for i in 0..cols {
            let s: f64 = (0..i).map(|k| l[i * cols + k] * rhs[k]).sum();
            rhs[i] = (rhs[i] - s) / l[i * cols + i];
        }
        for i in (0..cols).rev() {
            let s: f64 = (i + 1..cols).map(|k| l[k * cols + i] * rhs[k]).sum();
            rhs[i] = (rhs[i] - s) / l[i * cols + i];
        }
        out.extend(rhs.iter().map(|&v| v as f32));
    }
    Ok(out)
}

/// The upper factor `U` of `P⁻¹ = Uᵀ·U` for a symmetric positive definite `P` (row-major
/// `n × n`), or `None` when `P` is not positive definite.
fn inverse_upper_factor(p: &[f64], n: usize) -> Option<Vec<f64>> {
    let l = cholesky(p, n)?;
    // P⁻¹ = L⁻ᵀ·L⁻¹: invert the triangular L, then form the product.
    let mut li = vec![0f64; n * n];
    for i in 0..n {
        li[i * n + i] = 1.0 / l[i * n + i];
        for j in 0..i {
            let mut s = 0.0;
            for k in j..i {
                s += l[i * n + k] * li[k * n + j];
            }
            li[i * n + j] = -s / l[i * n + i];
        }
    }
    let mut inv = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            // (L⁻ᵀ L⁻¹)[i][j] = Σ_k L⁻¹[k][i] · L⁻¹[k][j], k ≥ max(i, j) = i.
            let mut s = 0.0;
            for k in i..n {
                s += li[k * n + i] * li[k * n + j];
            }
            inv[i * n + j] = s;
            inv[j * n + i] = s;
        }
    }
    // P⁻¹ = L'·L'ᵀ; U = L'ᵀ.
    let lp = cholesky(&inv, n)?;
    let mut u = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            u[j * n + i] = lp[i * n + j];
        }
    }
    Some(u)
}

/// Lower Cholesky factor of a symmetric positive definite matrix, or `None`.
fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            let (ri, rj) = (&l[i * n..i * n + j], &l[j * n..j * n + j]);
            s -= ri.iter().zip(rj).map(|(x, y)| x * y).sum::<f64>();
            if i == j {
                if !(s > 0.0 && s.is_finite()) {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Helpers shared by the tests of GPTQ and of the sharing that uses it.
#[cfg(test)]
pub(crate) mod test_support {
    /// A xorshift generator of values in [−0.5, 0.5).
    pub(crate) fn uniform(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        }
    }

    /// `Σ x·xᵀ` over the inputs (row-major `cols × cols`).
    pub(crate) fn second_moments(xs: &[Vec<f64>], cols: usize) -> Vec<f64> {
        let mut h = vec![0f64; cols * cols];
        for x in xs {
            for i in 0..cols {
                for j in 0..cols {
                    h[i * cols + j] += x[i] * x[j];
                }
            }
        }
        h
    }

    /// Output error `Σ_x ‖(W − Q)·x‖²` over the inputs (`w`, `q`: rows of `cols`).
    pub(crate) fn output_error(w: &[f32], q: &[f32], xs: &[Vec<f64>], cols: usize) -> f64 {
        let mut e = 0.0;
        for x in xs {
            for (wr, qr) in w.chunks_exact(cols).zip(q.chunks_exact(cols)) {
                let d: f64 = wr
                    .iter()
                    .zip(qr)
                    .zip(x)
                    .map(|((a, b), x)| (f64::from(*a) - f64::from(*b)) * x)
                    .sum();
                e += d * d;
            }
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{output_error, second_moments, uniform};
    use super::*;

    #[test]
    fn compensation_beats_rounding_to_nearest_on_correlated_inputs() {
        let (rows, cols) = (8, 24);
        let mut rand = uniform(0x9e37_79b9_7f4a_7c15);
        // Inputs with correlated channels (a few latent factors) and one dead channel.
        let xs: Vec<Vec<f64>> = (0..400)
            .map(|_| {
                let f = [rand(), rand(), rand()];
                (0..cols)
                    .map(|c| {
                        if c == 5 {
                            0.0
                        } else {
                            f[c % 3] * (1.0 + c as f64 / 10.0) + 0.1 * rand()
                        }
                    })
                    .collect()
            })
            .collect();
        let h = second_moments(&xs, cols);
        let w: Vec<f32> = (0..rows * cols).map(|_| rand() as f32).collect();
        let step = 0.25;
        let grid = |_: usize, v: f64| (v / step).round() * step;
        let nearest: Vec<f32> = w.iter().map(|&v| grid(0, f64::from(v)) as f32).collect();
        let hess = LayerHessian::new(&h, cols, xs.len()).unwrap();
        let q = hess.round(&w, grid).unwrap();
        // Every value is on the grid, the dead input's weights are zero.
        for &v in &q {
            assert_eq!(grid(0, f64::from(v)) as f32, v);
        }
        for r in 0..rows {
            assert_eq!(q[r * cols + 5], 0.0);
        }
        let (e_rtn, e_gptq) = (
            output_error(&w, &nearest, &xs, cols),
            output_error(&w, &q, &xs, cols),
        );
        assert!(
            e_gptq < 0.5 * e_rtn,
            "GPTQ output error {e_gptq} vs rounding {e_rtn}"
        );
        // Weights already on the grid come back unchanged (but for the dead input's).
        let exact = hess.round(&nearest, grid).unwrap();
        for (i, (a, b)) in exact.iter().zip(&nearest).enumerate() {
            assert!(a == b || i % cols == 5, "weight {i}: {a} vs {b}");
        }
        assert!(LayerHessian::new(&h[1..], cols, xs.len()).is_err());
    }

    #[test]
    fn asymmetric_target_absorbs_the_error_of_the_inputs() {
        let (rows, cols) = (6, 16);
        let mut rand = uniform(0x1234_5678_9abc_def1);
        let w: Vec<f32> = (0..rows * cols).map(|_| rand() as f32).collect();
        // Dense inputs, and the compressed model's: the same plus an error that mixes channels
        // (what rounded layers before this one leave), plus noise.
        let xs: Vec<Vec<f64>> = (0..800)
            .map(|_| (0..cols).map(|_| rand()).collect())
            .collect();
        let xt: Vec<Vec<f64>> = xs
            .iter()
            .map(|x| {
                (0..cols)
                    .map(|c| 0.9 * x[c] + 0.2 * x[(c + 1) % cols] + 0.01 * rand())
                    .collect()
            })
            .collect();
        let moments = |a: &[Vec<f64>], b: &[Vec<f64>]| {
            let mut m = vec![0f64; cols * cols];
            for (x, y) in a.iter().zip(b) {
                for i in 0..cols {
                    for j in 0..cols {
                        m[i * cols + j] += x[i] * y[j];
                    }
                }
            }
            m
        };
        let (cross, h) = (moments(&xs, &xt), second_moments(&xt, cols));
        let target = asymmetric_target(&w, &cross, &h, cols, xs.len()).unwrap();
        // Output error against the dense outputs W·x, from the compressed inputs.
        let err = |q: &[f32]| -> f64 {
            let mut e = 0.0;
            for (x, y) in xs.iter().zip(&xt) {
                for (wr, qr) in w.chunks_exact(cols).zip(q.chunks_exact(cols)) {
                    let d: f64 = (0..cols)
                        .map(|c| f64::from(wr[c]) * x[c] - f64::from(qr[c]) * y[c])
                        .sum();
                    e += d * d;
                }
            }
            e
        };
        assert!(
            err(&target) < 0.05 * err(&w),
            "{} vs {}",
            err(&target),
            err(&w)
        );
        // Inputs unchanged: the target is the weights themselves (but for the damping).
        let same = asymmetric_target(&w, &h, &h, cols, xs.len()).unwrap();
        for (a, b) in same.iter().zip(&w) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        assert!(asymmetric_target(&w, &cross[1..], &h, cols, 800).is_err());
    }
}
