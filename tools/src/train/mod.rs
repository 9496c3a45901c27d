//! Training and evaluating ONNX classifiers: cross-entropy, mini-batch loop with a learning-rate
//! schedule, and the accuracy / confusion-matrix report.

pub mod optim;
pub mod training_run;

pub use optim::{GradientHook, Optimizer, OptimizerConfig, OptimizerKind, Schedule, ScheduleKind};

use crate::accuracy::{EvalReport, EvalSummary, Tally};
use crate::data::Dataset;
use crate::onnx::{GraphExecutor, Mode};
use crate::progress::progress_bar;
use anyhow::{Context, Result, bail};
use candle_core::{D, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use std::time::Instant;

/// Training settings.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Images per mini-batch.
    pub batch: usize,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Seed for shuffling (and dropout).
    pub seed: u64,
    /// Show indicatif progress bars on stderr.
    pub progress: bool,
    /// Learn from a teacher's outputs as well as (or instead of) the labels.
    pub distill: Option<Distillation>,
}

/// Knowledge distillation (Hinton et al. 2015): the loss adds the cross-entropy between the
/// teacher's and the student's softened outputs, `softmax(logits / T)`, scaled by `T²` so that its
/// gradients keep their size whatever the temperature. Used to retrain a pruned or shared model
/// towards the dense one it came from; with `alpha = 1` the labels are not used at all.
#[derive(Debug, Clone)]
pub struct Distillation {
    /// The teacher's logits for every training sample, `[samples, classes]` row-major, in the
    /// order of the data set.
    pub teacher_logits: std::sync::Arc<Vec<f32>>,
    /// Classes per row of `teacher_logits`.
    pub classes: usize,
    /// Softening temperature `T` (> 0).
    pub temperature: f64,
    /// Weight of the distillation term in [0, 1]; the label cross-entropy gets `1 − alpha`.
    pub alpha: f64,
}

impl Distillation {
    /// Runs `teacher` (evaluation mode) over `data` once and keeps its logits.
    pub fn from_teacher(
        teacher: &GraphExecutor,
        data: &Dataset,
        temperature: f64,
        alpha: f64,
    ) -> Result<Self> {
        if !(temperature.is_finite() && temperature > 0.0) {
            bail!("distillation temperature must be > 0, got {temperature}");
        }
        if !(0.0..=1.0).contains(&alpha) {
            bail!("distillation weight must be in [0, 1], got {alpha}");
        }
        let mut logits = Vec::new();
        let mut classes = 0;
        for idx in data.batches(512, None) {
            let (x, _) = data.batch_tensors(&idx, teacher.device())?;
            let out = teacher.logits(&x, Mode::Eval)?;
            classes = check_logits(teacher, &out, idx.len(), 1)?;
            logits.extend(
                out.to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            );
        }
        Ok(Distillation {
            teacher_logits: std::sync::Arc::new(logits),
            classes,
            temperature,
            alpha,
        })
    }

    /// The loss of a batch: `(1 − α)·CE(labels) + α·T²·CE(softmax(teacher/T), softmax(student/T))`.
    fn loss(&self, logits: &Tensor, labels: &Tensor, indices: &[usize]) -> Result<Tensor> {
        let (b, classes) = logits.dims2()?;
        if classes != self.classes
            || self.teacher_logits.len()
                < (indices.iter().max().copied().unwrap_or(0) + 1) * classes
        {
            bail!(
                "the teacher's outputs ({} classes, {} samples) do not match the student's ({classes} classes) or the data",
                self.classes,
                self.teacher_logits.len() / self.classes.max(1)
            );
        }
        let mut t = Vec::with_capacity(b * classes);
        for &i in indices {
            t.extend_from_slice(&self.teacher_logits[i * classes..(i + 1) * classes]);
        }
        let temp = self.temperature;
        let teacher =
            Tensor::from_vec(t, (b, classes), logits.device())?.to_dtype(logits.dtype())?;
        let soft_targets = candle_nn::ops::softmax_last_dim(&(teacher / temp)?)?;
        let log_student = candle_nn::ops::log_softmax(&(logits / temp)?, D::Minus1)?;
        let kd = ((soft_targets * log_student)?.sum_all()?.neg()? * (temp * temp / b as f64))?;
        if self.alpha >= 1.0 {
            return Ok(kd);
        }
        let ce = candle_nn::loss::cross_entropy(logits, labels).context("cross-entropy")?;
        Ok(((ce * (1.0 - self.alpha))? + (kd * self.alpha)?)?)
    }
}

/// What one epoch did.
#[derive(Debug, Clone, Serialize)]
pub struct EpochStats {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Fraction of training images classified correctly during the epoch (in training mode).
    pub train_accuracy: f64,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Wall-clock seconds of the epoch's training steps.
    pub seconds: f64,
    /// Training throughput.
    pub images_per_second: f64,
    /// Validation result, when a validation set is given.
    pub validation: Option<EvalSummary>,
}

/// Checks that `logits` is a class vector `[batch, classes]` with at least `classes` entries.
fn check_logits(
    exec: &GraphExecutor,
    logits: &Tensor,
    batch: usize,
    classes: usize,
) -> Result<usize> {
    let dims = logits.dims();
    if dims.len() != 2 || dims[0] != batch {
        bail!(
            "{}: output '{}' has shape {:?} for a batch of {batch}; nnzip train/eval need a classifier whose output is a class vector [N, classes] (logits). Add a Flatten or Reshape to [N, classes] at the end of the model",
            exec.source(),
            exec.output_name(),
            dims
        );
    }
    if dims[1] < classes {
        bail!(
            "{}: the model outputs {} classes but the data has labels up to {}: train a model with at least {classes} outputs or fix the labels",
            exec.source(),
            dims[1],
            classes - 1
        );
    }
    Ok(dims[1])
}

/// Checks the model against the data before a long run: input shape, class count.
pub fn check_compatible(exec: &GraphExecutor, data: &Dataset) -> Result<()> {
    if let Some(shape) = exec.input_shape()
        && shape.len() == 4
    {
        let want = [shape[1], shape[2], shape[3]];
        for (i, (w, have)) in want.iter().zip(data.sample_shape).enumerate() {
            if let Some(w) = w
                && *w != have
            {
                bail!(
                    "{}: images are {:?} (C×H×W) but the model {} expects {:?} (dimension {} differs): resize/crop the images or use a matching model",
                    data.source,
                    data.sample_shape,
                    exec.source(),
                    want,
                    i + 1
                );
            }
        }
    }
    if let Some(classes) = exec.declared_classes() {
        data.check_labels(classes, exec.source())?;
    }
    let probe = data.batch_tensors(&[0], exec.device())?.0;
    let logits = exec.logits(&probe, Mode::Eval)?;
    let classes = check_logits(exec, &logits, 1, 1)?;
    data.check_labels(classes, exec.source())
}

/// Trains `exec`'s variables on `data` with `optimizer`; evaluates on `validation` after each epoch.
pub fn train(
    exec: &GraphExecutor,
    data: &Dataset,
    validation: Option<&Dataset>,
    config: &TrainConfig,
    optimizer: &mut Optimizer,
) -> Result<Vec<EpochStats>> {
    check_compatible(exec, data)?;
    let mut rng = StdRng::seed_from_u64(config.seed);
    exec.device().set_seed(config.seed).ok();
    let per_epoch = data.len().div_ceil(config.batch.max(1));
    let total = per_epoch * config.epochs;
    let trainable: Vec<_> = exec.trainable().cloned().collect();
    let mut history = Vec::with_capacity(config.epochs);
    for epoch in 1..=config.epochs {
        let batches = data.batches(config.batch, Some(&mut rng));
        let bar = progress_bar(
            config.progress,
            batches.len(),
            &format!("epoch {epoch}/{}", config.epochs),
        );
        let start = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut lr = config.schedule.lr;
        for (i, idx) in batches.iter().enumerate() {
            let (x, y) = data.batch_tensors(idx, exec.device())?;
            let logits = exec.logits(&x, Mode::Train)?;
            let loss = match &config.distill {
                Some(d) => d.loss(&logits, &y, idx).context("distillation loss")?,
                None => candle_nn::loss::cross_entropy(&logits, &y).context("cross-entropy")?,
            };
            let grads = loss.backward()?;
            lr = config.schedule.lr_at(optimizer.steps(), total, per_epoch);
            optimizer.step(trainable.iter(), &grads, lr)?;
            let loss_value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            if !loss_value.is_finite() {
                bail!(
                    "training diverged at epoch {epoch}, batch {}: loss is {loss_value}; lower --lr",
                    i + 1
                );
            }
            loss_sum += loss_value * idx.len() as f64;
            correct += count_correct(&logits, &y)?;
            seen += idx.len();
            bar.inc(1);
            if i % 10 == 0 || i + 1 == batches.len() {
                let rate = seen as f64 / start.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "loss {:.4} acc {:.2}% {rate:.0} img/s",
                    loss_sum / seen as f64,
                    100.0 * correct as f64 / seen as f64
                ));
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let validation = match validation {
            Some(v) => Some(evaluate(exec, v, config.batch.max(256), false)?.summary()),
            None => None,
        };
        history.push(EpochStats {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            lr,
            seconds,
            images_per_second: seen as f64 / seconds.max(1e-9),
            validation,
        });
        if config.progress {
            let s = history.last().expect("pushed");
            let val = s
                .validation
                .as_ref()
                .map(|v| format!(", val loss {:.4} acc {:.2}%", v.loss, 100.0 * v.accuracy))
                .unwrap_or_default();
            eprintln!(
                "epoch {epoch}/{}: loss {:.4} acc {:.2}%{val}, lr {:.4}, {:.1}s ({:.0} img/s)",
                config.epochs,
                s.train_loss,
                100.0 * s.train_accuracy,
                s.lr,
                s.seconds,
                s.images_per_second
            );
        }
    }
    Ok(history)
}

fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let predicted = logits.argmax(D::Minus1)?;
    Ok(predicted
        .eq(labels)?
        .to_dtype(candle_core::DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()? as usize)
}

/// Evaluates `exec` on `data` in evaluation mode: accuracy, loss, per-class accuracy, confusion matrix.
pub fn evaluate(
    exec: &GraphExecutor,
    data: &Dataset,
    batch: usize,
    progress: bool,
) -> Result<EvalReport> {
    if data.is_empty() {
        bail!("{}: no images to evaluate", data.source);
    }
    let needed = data.num_classes();
    let bar = progress_bar(progress, data.len(), "eval");
    let mut tally: Option<Tally> = None;
    for idx in data.batches(batch, None) {
        let (x, _) = data.batch_tensors(&idx, exec.device())?;
        let logits = exec.logits(&x, Mode::Eval)?;
        if tally.is_none() {
            tally = Some(Tally::new(check_logits(exec, &logits, idx.len(), needed)?));
        }
        let flat = logits
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let labels: Vec<u32> = idx.iter().map(|&i| data.labels[i]).collect();
        if let Some(t) = tally.as_mut() {
            t.add(&flat, &labels)?;
        }
        bar.inc(idx.len() as u64);
    }
    bar.finish_and_clear();
    Ok(tally
        .unwrap_or_else(|| Tally::new(0))
        .finish(&data.class_names))
}
