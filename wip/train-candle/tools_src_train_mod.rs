//! Training ONNX classifiers on candle's autodiff: the loop, the optimisers, the schedules, and
//! what the compression stages need from it — gradient masks (pruned weights stay exactly zero)
//! and a hook that replaces a tensor's gradient (weight sharing sums gradients per cluster).

pub mod graph;
pub mod init;

use crate::data::ImageSet;
use anyhow::{Result, bail};
use candle_core::{D, Tensor};
use graph::TrainGraph;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;

/// Optimiser.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// SGD with momentum (Nesterov optional), PyTorch's formulation.
    Sgd {
        /// Momentum factor.
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// Adam (β1 0.9, β2 0.999, ε 1e-8), L2 weight decay added to the gradient.
    Adam,
}

/// Learning-rate schedule over the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Constant.
    Constant,
    /// Cosine annealing to zero, per step.
    Cosine,
    /// ×0.1 at 50% and 75% of the epochs.
    Step,
}

/// Training settings.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Passes over the data.
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Mini-batch size.
    pub batch: usize,
    /// Optimiser.
    pub optimizer: Optimizer,
    /// L2 weight decay (applied to every trainable tensor, as PyTorch's SGD does).
    pub weight_decay: f64,
    /// Schedule.
    pub schedule: Schedule,
    /// Shuffling seed.
    pub seed: u64,
    /// Show progress bars.
    pub progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            lr: 0.05,
            batch: 128,
            optimizer: Optimizer::Sgd {
                momentum: 0.9,
                nesterov: true,
            },
            weight_decay: 5e-4,
            schedule: Schedule::Cosine,
            seed: 0,
            progress: true,
        }
    }
}

/// Replaces the gradient of a named tensor (e.g. weight sharing's per-cluster sum).
pub trait GradHook {
    /// Returns the gradient to use for `name`.
    fn adjust(&mut self, name: &str, grad: Tensor) -> Result<Tensor>;
}

/// What a training run did, epoch by epoch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochStats {
    /// Epoch number (1-based).
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy over the epoch.
    pub accuracy: f64,
    /// Images per second.
    pub images_per_sec: f64,
    /// Seconds.
    pub seconds: f64,
}

/// Mean cross-entropy of logits `[B, C]` against labels, and the number of correct top-1.
pub fn cross_entropy(logits: &Tensor, labels: &[u8]) -> Result<(Tensor, usize)> {
    let (b, c) = logits.dims2()?;
    if labels.iter().any(|&l| l as usize >= c) {
        bail!("a label is outside the model's {c} outputs: the data set does not match the model");
    }
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let logp = shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)?;
    let mut onehot = vec![0f32; b * c];
    for (i, &l) in labels.iter().enumerate() {
        onehot[i * c + l as usize] = 1.0;
    }
    let onehot = Tensor::from_vec(onehot, (b, c), logits.device())?;
    let loss = (logp * onehot)?
        .sum_all()?
        .neg()?
        .affine(1.0 / b as f64, 0.0)?;
    let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let correct = pred
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == u32::from(**l))
        .count();
    Ok((loss, correct))
}

/// A seeded permutation (xorshift + Fisher–Yates): same seed, same order, on every machine.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

fn lr_at(cfg: &TrainConfig, step: usize, total: usize, epoch: usize) -> f64 {
    match cfg.schedule {
        Schedule::Constant => cfg.lr,
        Schedule::Cosine => {
            cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total.max(1) as f64).cos())
        }
        Schedule::Step => {
            let f = epoch as f64 / cfg.epochs.max(1) as f64;
            cfg.lr
                * if f >= 0.75 {
                    0.01
                } else if f >= 0.5 {
                    0.1
                } else {
                    1.0
                }
        }
    }
}

/// Trains in place. `masks` (1 keep / 0 pruned, by tensor name) are applied to the gradients and
/// again to the weights after every step, so pruned weights stay exactly zero.
pub fn train(
    g: &mut TrainGraph,
    data: &ImageSet,
    cfg: &TrainConfig,
    masks: &HashMap<String, Tensor>,
    mut hook: Option<&mut dyn GradHook>,
) -> Result<Vec<EpochStats>> {
    if data.is_empty() {
        bail!("no training images");
    }
    for name in masks.keys() {
        if g.param(name).is_none() {
            bail!("mask for '{name}', which is not a trainable tensor of the model");
        }
    }
    let steps_per_epoch = data.len().div_ceil(cfg.batch.max(1));
    let total = steps_per_epoch * cfg.epochs;
    let mut state: HashMap<String, (Tensor, Option<Tensor>)> = HashMap::new();
    let mut step = 0usize;
    let mut history = Vec::new();
    for (name, v) in &g.params {
        if let Some(m) = masks.get(name) {
            v.set(&(v.as_tensor() * m)?)?;
        }
    }
    for epoch in 0..cfg.epochs {
        let order = shuffled(data.len(), cfg.seed.wrapping_add(epoch as u64));
        let bar = if cfg.progress {
            ProgressBar::new(data.len() as u64)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} {bar:30} {pos}/{len} {per_sec} loss {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
        let start = std::time::Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        for chunk in order.chunks(cfg.batch.max(1)) {
            let px = data.rows * data.cols;
            let mut x = Vec::with_capacity(chunk.len() * px);
            let mut y = Vec::with_capacity(chunk.len());
            for &i in chunk {
                x.extend(
                    data.pixels[i * px..(i + 1) * px]
                        .iter()
                        .map(|&p| p as f32 / 255.0),
                );
                y.push(data.labels[i]);
            }
            let x = Tensor::from_vec(x, (chunk.len(), 1, data.rows, data.cols), g.device())?;
            let logits = g.forward(&x, true)?;
            let (loss, ok) = cross_entropy(&logits, &y)?;
            let grads = loss.backward()?;
            let lr = lr_at(cfg, step, total, epoch);
            let t = (step + 1) as i32;
            for (name, var) in &g.params {
                let Some(grad) = grads.get(var.as_tensor()) else {
                    continue;
                };
                let mut grad = grad.clone();
                if let Some(h) = hook.as_deref_mut() {
                    grad = h.adjust(name, grad)?;
                }
                if cfg.weight_decay > 0.0 {
                    grad = (grad + (var.as_tensor() * cfg.weight_decay)?)?;
                }
                if let Some(m) = masks.get(name) {
                    grad = (grad * m)?;
                }
                let update = match cfg.optimizer {
                    Optimizer::Sgd { momentum, nesterov } => {
                        if momentum == 0.0 {
                            grad
                        } else {
                            let buf = match state.remove(name) {
                                Some((b, _)) => ((b * momentum)? + &grad)?,
                                None => grad.clone(),
                            };
                            let upd = if nesterov {
                                (&grad + (&buf * momentum)?)?
                            } else {
                                buf.clone()
                            };
                            state.insert(name.clone(), (buf, None));
                            upd
                        }
                    }
                    Optimizer::Adam => {
                        let (m, v) = match state.remove(name) {
                            Some((m, Some(v))) => (
                                ((m * 0.9)? + (&grad * 0.1)?)?,
                                ((v * 0.999)? + (grad.sqr()? * 0.001)?)?,
                            ),
                            _ => ((&grad * 0.1)?, (grad.sqr()? * 0.001)?),
                        };
                        let mh = (&m / (1.0 - 0.9f64.powi(t)))?;
                        let vh = (&v / (1.0 - 0.999f64.powi(t)))?;
                        let upd = (mh / (vh.sqrt()? + 1e-8)?)?;
                        state.insert(name.clone(), (m, Some(v)));
                        upd
                    }
                };
                let mut w = (var.as_tensor() - (update * lr)?)?;
                if let Some(m) = masks.get(name) {
                    w = (w * m)?;
                }
                var.set(&w)?;
            }
            let l = loss.to_scalar::<f32>()? as f64;
            if !l.is_finite() {
                bail!(
                    "the loss became {l} at epoch {} step {step}: lower --lr",
                    epoch + 1
                );
            }
            loss_sum += l * chunk.len() as f64;
            correct += ok;
            seen += chunk.len();
            step += 1;
            bar.inc(chunk.len() as u64);
            bar.set_message(format!("{:.4}", loss_sum / seen as f64));
        }
        bar.finish_and_clear();
        let secs = start.elapsed().as_secs_f64();
        history.push(EpochStats {
            epoch: epoch + 1,
            loss: loss_sum / seen as f64,
            accuracy: correct as f64 / seen as f64,
            images_per_sec: seen as f64 / secs,
            seconds: secs,
        });
    }
    Ok(history)
}
