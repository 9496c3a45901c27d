//! Measuring a classifier on labelled data: accuracy, per-class accuracy, confusion matrix, loss.
//!
//! [`evaluate`] runs the core runtime (what ships on phones, so what is measured is what users
//! get); the training loop feeds its candle logits through the same [`Tally`], so both report
//! the same numbers the same way.

use crate::data::Dataset;
use crate::progress::progress_bar;
use crate::table::Table;
use anyhow::{Result, bail};
use nnzip_core::{Model, Tensor};
use serde::Serialize;

/// Accuracy and loss on a data set.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EvalSummary {
    /// Fraction of images whose top-1 class is the label.
    pub accuracy: f64,
    /// Mean cross-entropy of the softmax against the labels.
    pub loss: f64,
    /// Number of images.
    pub samples: usize,
}

/// What an evaluation measured.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Fraction of images whose top-1 class is the label.
    pub accuracy: f64,
    /// Mean cross-entropy of the softmax against the labels.
    pub loss: f64,
    /// Number of images.
    pub samples: usize,
    /// Class names in label order (empty when the data set has none).
    pub class_names: Vec<String>,
    /// Per class: fraction of its images classified correctly (`None` when it has no images).
    pub per_class_accuracy: Vec<Option<f64>>,
    /// `confusion[label][predicted]` image counts.
    pub confusion: Vec<Vec<u64>>,
}

impl EvalReport {
    /// The headline numbers.
    pub fn summary(&self) -> EvalSummary {
        EvalSummary {
            accuracy: self.accuracy,
            loss: self.loss,
            samples: self.samples,
        }
    }

    /// The report as text: headline, per-class table, confusion matrix.
    pub fn render(&self) -> String {
        let mut out = format!(
            "accuracy {:.2}% on {} images, loss {:.4}\n\n",
            100.0 * self.accuracy,
            self.samples,
            self.loss
        );
        let name = |c: usize| {
            self.class_names
                .get(c)
                .map(|n| format!("{c} {n}"))
                .unwrap_or_else(|| c.to_string())
        };
        let cols: Vec<String> = (0..self.confusion.len()).map(|k| format!("→{k}")).collect();
        let mut header = vec!["class", "images", "accuracy"];
        header.extend(cols.iter().map(String::as_str));
        let mut t = Table::new(&header);
        for (c, row) in self.confusion.iter().enumerate() {
            let total: u64 = row.iter().sum();
            let acc = self.per_class_accuracy[c]
                .map(|a| format!("{:.1}%", 100.0 * a))
                .unwrap_or_else(|| "-".into());
            let mut cells = vec![name(c), total.to_string(), acc];
            cells.extend(row.iter().map(u64::to_string));
            t.row(cells);
        }
        out.push_str("per class (→k: predicted as class k)\n");
        out.push_str(&t.render());
        out
    }
}

/// Accumulates predictions batch by batch into an [`EvalReport`].
#[derive(Debug, Clone)]
pub struct Tally {
    confusion: Vec<Vec<u64>>,
    loss_sum: f64,
    samples: usize,
}

impl Tally {
    /// An empty tally for a model with `classes` outputs.
    pub fn new(classes: usize) -> Self {
        Tally {
            confusion: vec![vec![0; classes]; classes],
            loss_sum: 0.0,
            samples: 0,
        }
    }

    /// Number of classes the model outputs.
    pub fn classes(&self) -> usize {
        self.confusion.len()
    }

    /// Adds a batch: `logits` row-major `[labels.len(), classes]`.
    pub fn add(&mut self, logits: &[f32], labels: &[u32]) -> Result<()> {
        let c = self.classes();
        if c == 0 || logits.len() != labels.len() * c {
            bail!(
                "the model returned {} values for {} images and {c} classes: expected [batch, classes] logits, so this is not a classifier nnzip can evaluate",
                logits.len(),
                labels.len()
            );
        }
        for (row, &label) in logits.chunks_exact(c).zip(labels) {
            let label = label as usize;
            if label >= c {
                bail!(
                    "label {label} is outside the model's {c} outputs (0..{}): the data set does not match the model",
                    c - 1
                );
            }
            // Top-1 with ties going to the lower class, as argmax does; loss by log-sum-exp in f64.
            let pred = (0..c)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
                .unwrap_or(0);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&v| (v as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            self.loss_sum += lse - row[label] as f64;
            self.confusion[label][pred] += 1;
            self.samples += 1;
        }
        Ok(())
    }

    /// The report, with `class_names` for display.
    pub fn finish(self, class_names: &[String]) -> EvalReport {
        let correct: u64 = (0..self.classes()).map(|k| self.confusion[k][k]).sum();
        let per_class_accuracy = self
            .confusion
            .iter()
            .enumerate()
            .map(|(k, row)| {
                let total: u64 = row.iter().sum();
                (total > 0).then(|| row[k] as f64 / total as f64)
            })
            .collect();
        let n = self.samples.max(1) as f64;
        EvalReport {
            accuracy: correct as f64 / n,
            loss: self.loss_sum / n,
            samples: self.samples,
            class_names: class_names.to_vec(),
            per_class_accuracy,
            confusion: self.confusion,
        }
    }
}

/// Runs `model` (the core runtime) over `data` in batches of `batch` and measures it.
pub fn evaluate(model: &Model, data: &Dataset, batch: usize, progress: bool) -> Result<EvalReport> {
    if data.is_empty() {
        bail!("{}: no images to evaluate", data.source);
    }
    let batch = batch.max(1);
    let bar = progress_bar(progress, data.len(), "eval");
    let [ch, h, w] = data.sample_shape;
    let per = data.sample_len();
    let mut tally: Option<Tally> = None;
    for start in (0..data.len()).step_by(batch) {
        let end = (start + batch).min(data.len());
        let n = end - start;
        let input = Tensor::from_shape(&[n, ch, h, w], &data.images[start * per..end * per])?;
        let out = model.run(input)?;
        if out.rank() != 2 || out.shape()[0] != n {
            bail!(
                "the model's output has shape {:?} for a batch of {n}: expected [batch, classes] logits, so this is not a classifier nnzip can evaluate",
                out.shape()
            );
        }
        let t = tally.get_or_insert_with(|| Tally::new(out.shape()[1]));
        let logits: Vec<f32> = out
            .cast_to::<f32>()?
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect();
        t.add(&logits, &data.labels[start..end])?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let tally = tally.unwrap_or_else(|| Tally::new(0));
    Ok(tally.finish(&data.class_names))
}
