//! BatchNormalization as one candle `CustomOp3` (forward and backward written out), because
//! composing it from candle ops is slow on the CPU: the per-channel statistics and the gradients
//! of the per-channel scale and shift are sums over the batch and spatial axes (0, 2, 3), and
//! candle reduces over non-trailing axes element by element with index arithmetic; on a network
//! with many BatchNormalization layers that path took most of the training time
//! (docs/PERFORMANCE.md).
//!
//! The op normalises with given per-channel statistics. In training mode they are the batch's
//! own, and the backward pass includes their dependence on the input (the usual batch-norm
//! gradient); in evaluation mode they are the running statistics, constants.

use super::contiguous;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, WithDType};

/// Per-channel statistics of a contiguous `N × C × S` tensor (S = product of the spatial
/// dimensions): mean and biased variance, accumulated in f64.
pub fn channel_statistics(x: &Tensor) -> Result<(Vec<f64>, Vec<f64>)> {
    let (n, c, s) = split_dims(x.dims())?;
    let x = x.contiguous()?.flatten_all()?;
    let values: Vec<f64> = x.to_dtype(candle_core::DType::F64)?.to_vec1()?;
    let count = (n * s) as f64;
    let mut mean = vec![0f64; c];
    let mut var = vec![0f64; c];
    for (ch, (m, v)) in mean.iter_mut().zip(var.iter_mut()).enumerate() {
        let plane = |b: usize| &values[(b * c + ch) * s..(b * c + ch + 1) * s];
        let sum: f64 = (0..n).map(|b| plane(b).iter().sum::<f64>()).sum();
        *m = sum / count;
        let sq: f64 = (0..n)
            .map(|b| plane(b).iter().map(|&x| (x - *m) * (x - *m)).sum::<f64>())
            .sum();
        *v = sq / count;
    }
    Ok((mean, var))
}

fn split_dims(dims: &[usize]) -> Result<(usize, usize, usize)> {
    if dims.len() < 2 {
        candle_core::bail!("BatchNormalization input has shape {dims:?}");
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

/// `y = scale · (x − mean) / sqrt(var + eps) + bias`, per channel (axis 1).
pub struct BatchNormOp {
    /// Per-channel mean used to normalise.
    pub mean: Vec<f64>,
    /// Per-channel `1 / sqrt(var + eps)`.
    pub inv_std: Vec<f64>,
    /// Whether `mean` and `inv_std` are the batch's own statistics (training mode), so that the
    /// input gradient flows through them too.
    pub batch_statistics: bool,
}

impl BatchNormOp {
    /// From per-channel mean and variance.
    pub fn new(mean: Vec<f64>, var: &[f64], eps: f64, batch_statistics: bool) -> Self {
        BatchNormOp {
            mean,
            inv_std: var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect(),
            batch_statistics,
        }
    }

    fn check(&self, c: usize, scale: &Layout, bias: &Layout) -> Result<()> {
        if self.mean.len() != c
            || self.inv_std.len() != c
            || scale.shape().elem_count() != c
            || bias.shape().elem_count() != c
        {
            candle_core::bail!(
                "BatchNormalization: {c} channels, statistics/scale/bias of {}/{}/{}",
                self.mean.len(),
                scale.shape().elem_count(),
                bias.shape().elem_count()
            );
        }
        Ok(())
    }
}

fn forward<T: WithDType>(
    op: &BatchNormOp,
    x: &[T],
    scale: &[T],
    bias: &[T],
    c: usize,
    s: usize,
) -> Vec<T> {
    let mut y = Vec::with_capacity(x.len());
    for (i, plane) in x.chunks_exact(s).enumerate() {
        let ch = i % c;
        let a = scale[ch].to_f64() * op.inv_std[ch];
        let b = bias[ch].to_f64() - op.mean[ch] * a;
        y.extend(plane.iter().map(|&v| T::from_f64(v.to_f64() * a + b)));
    }
    y
}

impl CustomOp3 for BatchNormOp {
    fn name(&self) -> &'static str {
        "nnzip-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, s) = split_dims(l1.dims())?;
        self.check(c, l2, l3)?;
        const WHAT: &str = "BatchNormalization: operands";
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(g), CpuStorage::F32(b)) => {
                CpuStorage::F32(forward(
                    self,
                    contiguous(x, l1, WHAT)?,
                    contiguous(g, l2, WHAT)?,
                    contiguous(b, l3, WHAT)?,
                    c,
                    s,
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(g), CpuStorage::F64(b)) => {
                CpuStorage::F64(forward(
                    self,
                    contiguous(x, l1, WHAT)?,
                    contiguous(g, l2, WHAT)?,
                    contiguous(b, l3, WHAT)?,
                    c,
                    s,
                ))
            }
            _ => candle_core::bail!("BatchNormalization: f32 or f64 operands of one type"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        _bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, s) = split_dims(x.dims())?;
        let dtype = x.dtype();
        let xs: Vec<f64> = x
            .flatten_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_vec1()?;
        let dys: Vec<f64> = dy
            .flatten_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_vec1()?;
        let gamma: Vec<f64> = scale
            .flatten_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_vec1()?;
        // Per channel: Σ dy and Σ dy · x̂ (the shift's and the scale's gradients).
        let (mut dbias, mut dscale) = (vec![0f64; c], vec![0f64; c]);
        for (i, (xp, dp)) in xs.chunks_exact(s).zip(dys.chunks_exact(s)).enumerate() {
            let ch = i % c;
            let (m, is) = (self.mean[ch], self.inv_std[ch]);
            for (&xv, &g) in xp.iter().zip(dp) {
                dbias[ch] += g;
                dscale[ch] += g * (xv - m) * is;
            }
        }
        // dx = γ/σ · (dy − mean(dy) − x̂ · mean(dy · x̂)) with batch statistics (their dependence
        // on x included), γ/σ · dy with fixed ones.
        let count = (n * s) as f64;
        let mut dx = Vec::with_capacity(xs.len());
        for (i, (xp, dp)) in xs.chunks_exact(s).zip(dys.chunks_exact(s)).enumerate() {
            let ch = i % c;
            let (m, is) = (self.mean[ch], self.inv_std[ch]);
            let k = gamma[ch] * is;
            if self.batch_statistics {
                let (mb, ms) = (dbias[ch] / count, dscale[ch] / count);
                dx.extend(
                    xp.iter()
                        .zip(dp)
                        .map(|(&xv, &g)| k * (g - mb - (xv - m) * is * ms)),
                );
            } else {
                dx.extend(dp.iter().map(|&g| k * g));
            }
        }
        let device = x.device();
        let dx = Tensor::from_vec(dx, x.dims(), device)?.to_dtype(dtype)?;
        let dscale = Tensor::from_vec(dscale, scale.dims(), device)?.to_dtype(dtype)?;
        let dbias = Tensor::from_vec(dbias, scale.dims(), device)?.to_dtype(dtype)?;
        Ok((Some(dx), Some(dscale), Some(dbias)))
    }
}
