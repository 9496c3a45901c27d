//! Measuring a model on labelled data: accuracy, per-class accuracy, confusion matrix, loss.
//! Runs through the core runtime, so what is measured is what ships.

use crate::data::ImageSet;
use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use nnzip_core::{Model, Tensor};
use serde::Serialize;

/// What an evaluation measured.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Fraction of images whose top-1 class is the label.
    pub accuracy: f64,
    /// Mean cross-entropy of the softmax against the labels.
    pub loss: f64,
    /// Number of images.
    pub samples: usize,
    /// Accuracy per class (NaN-free: classes without images get 0).
    pub per_class_accuracy: Vec<f64>,
    /// `confusion[label][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
}

/// Runs `model` over `set` in batches and measures it.
pub fn evaluate(model: &Model, set: &ImageSet, batch: usize, progress: bool) -> Result<EvalReport> {
    let batch = batch.max(1);
    let bar = if progress {
        ProgressBar::new(set.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("eval {bar:40} {pos}/{len} images {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut classes = 0usize;
    let mut confusion: Vec<Vec<u64>> = Vec::new();
    let (mut correct, mut loss) = (0u64, 0f64);
    let mut start = 0;
    while start < set.len() {
        let end = (start + batch).min(set.len());
        let (x, shape) = set.batch(start..end);
        let input = Tensor::from_shape(&shape, &x)?;
        let out = model.run(input)?;
        let logits: Vec<f32> = out
            .cast_to::<f32>()?
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect();
        let n = end - start;
        if logits.len() % n != 0 || out.rank() != 2 || out.shape()[0] != n {
            bail!(
                "the model's output has shape {:?}: expected [batch, classes] logits, so this is not a classifier nnzip can evaluate",
                out.shape()
            );
        }
        let c = logits.len() / n;
        if classes == 0 {
            classes = c;
            confusion = vec![vec![0; c]; c];
        }
        for (i, row) in logits.chunks_exact(c).enumerate() {
            let label = set.labels[start + i] as usize;
            if label >= c {
                bail!(
                    "label {label} of image {} is outside the model's {c} outputs: the data set does not match the model",
                    start + i
                );
            }
            let probs = nnzip_core::classify::softmax(row);
            let pred = (0..c)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
                .unwrap_or(0);
            confusion[label][pred] += 1;
            correct += u64::from(pred == label);
            loss -= f64::from(probs[label].max(1e-12)).ln();
        }
        bar.inc(n as u64);
        start = end;
    }
    bar.finish_and_clear();
    let samples = set.len();
    let per_class_accuracy = confusion
        .iter()
        .enumerate()
        .map(|(k, row)| {
            let total: u64 = row.iter().sum();
            if total == 0 {
                0.0
            } else {
                row[k] as f64 / total as f64
            }
        })
        .collect();
    Ok(EvalReport {
        accuracy: correct as f64 / samples.max(1) as f64,
        loss: loss / samples.max(1) as f64,
        samples,
        per_class_accuracy,
        confusion,
    })
}
