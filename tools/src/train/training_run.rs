//! Training a model file (`nnzip train`): the settings, the entry that trains and writes the
//! model ([`train_file`]), and the result rendered as a table or as JSON.

use super::{
    EpochStats, Optimizer, OptimizerConfig, OptimizerKind, Schedule, ScheduleKind, TrainConfig,
    evaluate, train,
};
use crate::accuracy::EvalSummary;
use crate::data::{self, DataOptions, Split};
use crate::onnx::GraphExecutor;
use anyhow::{Result, ensure};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The settings of a training run; each field is also the flag of the same name.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainSettings {
    /// Data options.
    #[command(flatten)]
    pub data: DataOptions,
    /// Passes over the training data.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// Images per mini-batch.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Update rule.
    #[arg(long, value_enum, default_value = "sgd")]
    pub optimizer: OptimizerKind,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Use Nesterov momentum (SGD).
    #[arg(long)]
    pub nesterov: bool,
    /// L2 weight decay.
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: ScheduleKind,
    /// Step schedule: epochs between decays.
    #[arg(long, default_value_t = 3)]
    pub step_epochs: usize,
    /// Step schedule: decay factor.
    #[arg(long, default_value_t = 0.1)]
    pub gamma: f64,
    /// Seed for shuffling and the validation split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Hold out this fraction of the training images for validation after each epoch.
    #[arg(long)]
    pub val_split: Option<f64>,
}

/// What a training run did: the epochs' statistics, and the test split's measurement when the
/// data has one.
#[derive(Debug, Clone)]
pub struct TrainingRun {
    /// The model trained.
    pub model: PathBuf,
    /// Where the trained model was written.
    pub output: PathBuf,
    /// Images trained on.
    pub train_samples: usize,
    /// Images held out for validation, if any.
    pub validation_samples: Option<usize>,
    /// Training time, seconds (the epochs, not the loading or the test).
    pub seconds: f64,
    /// One entry per epoch.
    pub epochs: Vec<EpochStats>,
    /// The trained model on the test split.
    pub test: Option<EvalSummary>,
}

/// Trains `model` on the data `s` names, writes it to `output`, and measures it on the test split
/// when there is one.
pub fn train_file(
    model: &Path,
    output: &Path,
    s: &TrainSettings,
    progress: bool,
) -> Result<TrainingRun> {
    ensure!(
        s.epochs > 0 && s.batch > 0,
        "--epochs and --batch must be positive"
    );
    ensure!(s.lr > 0.0, "--lr must be positive");
    let exec = GraphExecutor::open(model)?;
    let channels = exec.input_channels();
    let all = s.data.load(Split::Train, channels)?;
    let (train_set, val_set) = match s.val_split {
        Some(f) if f > 0.0 => {
            let (t, v) = all.split_validation(f, s.seed)?;
            (t, Some(v))
        }
        _ => (all, None),
    };
    ensure!(
        !train_set.is_empty(),
        "{}: no training images",
        train_set.source
    );
    let config = TrainConfig {
        epochs: s.epochs,
        batch: s.batch,
        schedule: Schedule {
            kind: s.schedule,
            lr: s.lr,
            step_epochs: s.step_epochs,
            gamma: s.gamma,
        },
        seed: s.seed,
        progress,
        distill: None,
    };
    let mut optimizer = Optimizer::new(OptimizerConfig {
        kind: s.optimizer,
        momentum: s.momentum,
        nesterov: s.nesterov,
        weight_decay: s.weight_decay,
        ..OptimizerConfig::default()
    });
    let start = Instant::now();
    let epochs = train(&exec, &train_set, val_set.as_ref(), &config, &mut optimizer)?;
    let seconds = start.elapsed().as_secs_f64();
    exec.save(output)?;
    let test = if data::has_test_split(&s.data.data) {
        let test_set = s.data.load(Split::Test, channels)?;
        Some(evaluate(&exec, &test_set, 1000, progress)?.summary())
    } else {
        None
    };
    Ok(TrainingRun {
        model: model.to_path_buf(),
        output: output.to_path_buf(),
        train_samples: train_set.len(),
        validation_samples: val_set.as_ref().map(|v| v.len()),
        seconds,
        epochs,
        test,
    })
}

impl TrainingRun {
    /// One JSON object (pretty-printed): the files, the sample counts, the time, every epoch and
    /// the test measurement.
    pub fn to_json(&self) -> Result<String> {
        let out = json!({
            "model": self.model,
            "output": self.output,
            "train_samples": self.train_samples,
            "validation_samples": self.validation_samples,
            "seconds": self.seconds,
            "epochs": self.epochs,
            "test": self.test,
        });
        Ok(serde_json::to_string_pretty(&out)?)
    }

    /// One row per epoch, then the test accuracy and a closing line.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{:>5}  {:>10}  {:>9}  {:>9}  {:>9}  {:>8}  {:>8}  {:>8}\n",
            "epoch", "lr", "loss", "train acc", "val acc", "val loss", "seconds", "img/s"
        );
        for e in &self.epochs {
            let (va, vl) = match &e.validation {
                Some(v) => (
                    format!("{:.2}%", 100.0 * v.accuracy),
                    format!("{:.4}", v.loss),
                ),
                None => ("-".into(), "-".into()),
            };
            out += &format!(
                "{:>5}  {:>10.6}  {:>9.4}  {:>8.2}%  {:>9}  {:>8}  {:>8.1}  {:>8.0}\n",
                e.epoch,
                e.lr,
                e.train_loss,
                100.0 * e.train_accuracy,
                va,
                vl,
                e.seconds,
                e.images_per_second
            );
        }
        if let Some(t) = &self.test {
            out += &format!(
                "test: accuracy {:.2}% ({} images), loss {:.4}\n",
                100.0 * t.accuracy,
                t.samples,
                t.loss
            );
        }
        out += &format!(
            "trained {} images × {} epochs in {:.1}s; wrote {}\n",
            self.train_samples,
            self.epochs.len(),
            self.seconds,
            self.output.display()
        );
        out
    }
}
