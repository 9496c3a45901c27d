//! `nnzip train`: train an ONNX classifier and write it back with the new weights.

use super::data_args::DataArgs;
use crate::data::{self, Split};
use crate::onnx::GraphExecutor;
use crate::train::{
    self, Optimizer, OptimizerConfig, OptimizerKind, Schedule, ScheduleKind, TrainConfig,
};
use anyhow::{Result, ensure};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `nnzip train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// ONNX classifier to train.
    pub model: PathBuf,
    /// Data options.
    #[command(flatten)]
    pub data: DataArgs,
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
    /// Where to write the trained model.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `nnzip train`.
pub fn run(args: &TrainArgs) -> Result<()> {
    ensure!(
        args.epochs > 0 && args.batch > 0,
        "--epochs and --batch must be positive"
    );
    ensure!(args.lr > 0.0, "--lr must be positive");
    let exec = GraphExecutor::open(&args.model)?;
    let channels = exec.input_channels();
    let all = args.data.load(Split::Train, channels)?;
    let (train_set, val_set) = match args.val_split {
        Some(f) if f > 0.0 => {
            let (t, v) = all.split_validation(f, args.seed)?;
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
        epochs: args.epochs,
        batch: args.batch,
        schedule: Schedule {
            kind: args.schedule,
            lr: args.lr,
            step_epochs: args.step_epochs,
            gamma: args.gamma,
        },
        seed: args.seed,
        progress: !args.json,
        distill: None,
    };
    let mut optimizer = Optimizer::new(OptimizerConfig {
        kind: args.optimizer,
        momentum: args.momentum,
        nesterov: args.nesterov,
        weight_decay: args.weight_decay,
        ..OptimizerConfig::default()
    });
    let start = Instant::now();
    let history = train::train(&exec, &train_set, val_set.as_ref(), &config, &mut optimizer)?;
    let train_seconds = start.elapsed().as_secs_f64();
    exec.save(&args.output)?;
    let test = if data::has_test_split(&args.data.data) {
        let test_set = args.data.load(Split::Test, channels)?;
        Some(train::evaluate(&exec, &test_set, 1000, !args.json)?.summary())
    } else {
        None
    };
    if args.json {
        let out = json!({
            "model": args.model,
            "output": args.output,
            "train_samples": train_set.len(),
            "validation_samples": val_set.as_ref().map(|v| v.len()),
            "seconds": train_seconds,
            "epochs": history,
            "test": test,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:>5}  {:>10}  {:>9}  {:>9}  {:>9}  {:>8}  {:>8}  {:>8}",
        "epoch", "lr", "loss", "train acc", "val acc", "val loss", "seconds", "img/s"
    );
    for e in &history {
        let (va, vl) = match &e.validation {
            Some(v) => (
                format!("{:.2}%", 100.0 * v.accuracy),
                format!("{:.4}", v.loss),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:>5}  {:>10.6}  {:>9.4}  {:>8.2}%  {:>9}  {:>8}  {:>8.1}  {:>8.0}",
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
    if let Some(t) = test {
        println!(
            "test: accuracy {:.2}% ({} images), loss {:.4}",
            100.0 * t.accuracy,
            t.samples,
            t.loss
        );
    }
    println!(
        "trained {} images × {} epochs in {:.1}s; wrote {}",
        train_set.len(),
        args.epochs,
        train_seconds,
        args.output.display()
    );
    Ok(())
}
