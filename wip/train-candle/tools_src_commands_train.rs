//! `nnzip init` and `nnzip train`.

use crate::data::{Split, load_idx_split, resolve_idx_dir};
use crate::fsutil;
use crate::table::Table;
use crate::train::graph::TrainGraph;
use crate::train::init::init_model;
use crate::train::{Optimizer, Schedule, TrainConfig, train};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::collections::HashMap;
use std::path::PathBuf;

/// Arguments of `nnzip init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// `lenet300` or `lenet5`.
    pub arch: String,
    /// Output ONNX file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Seed of the random initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `nnzip init`.
pub fn run_init(args: &InitArgs) -> Result<()> {
    let onnx = init_model(&args.arch, args.seed)?;
    fsutil::write_atomic(&args.output, &onnx)?;
    eprintln!(
        "wrote {} ({} bytes, randomly initialised {})",
        args.output.display(),
        onnx.len(),
        args.arch
    );
    Ok(())
}

/// Arguments of `nnzip train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The ONNX model to train.
    pub model: PathBuf,
    /// Output ONNX file with the trained weights.
    #[arg(short, long)]
    pub output: PathBuf,
    /// `fashion-mnist` (Debian's package) or a folder of MNIST-style IDX files.
    #[arg(long, default_value = "fashion-mnist")]
    pub data: String,
    /// Passes over the training data.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// Mini-batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// `sgd` or `adam`.
    #[arg(long, default_value = "sgd")]
    pub optimizer: String,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Nesterov momentum (SGD).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub nesterov: bool,
    /// L2 weight decay.
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// `cosine`, `step` or `constant`.
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    /// Shuffling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Train on the first N images only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Hold out this fraction of the training images for validation.
    #[arg(long, default_value_t = 0.0)]
    pub val_split: f64,
    /// Print the epochs and the final measurements as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Builds the training configuration from the flags, refusing bad values up front.
pub fn train_config(a: &TrainArgs) -> Result<TrainConfig> {
    let optimizer = match a.optimizer.as_str() {
        "sgd" => Optimizer::Sgd {
            momentum: a.momentum,
            nesterov: a.nesterov,
        },
        "adam" => Optimizer::Adam,
        o => bail!("unknown optimizer '{o}': use sgd or adam"),
    };
    let schedule = match a.schedule.as_str() {
        "cosine" => Schedule::Cosine,
        "step" => Schedule::Step,
        "constant" => Schedule::Constant,
        s => bail!("unknown schedule '{s}': use cosine, step or constant"),
    };
    if !(a.lr > 0.0 && a.lr.is_finite()) || a.batch == 0 || a.epochs == 0 {
        bail!("--lr must be > 0 and --batch, --epochs at least 1");
    }
    if !(0.0..1.0).contains(&a.val_split) {
        bail!("--val-split must be in [0, 1)");
    }
    Ok(TrainConfig {
        epochs: a.epochs,
        lr: a.lr,
        batch: a.batch,
        optimizer,
        weight_decay: a.weight_decay,
        schedule,
        seed: a.seed,
        progress: !a.json,
    })
}

/// Runs `nnzip train`.
pub fn run_train(a: &TrainArgs) -> Result<()> {
    let cfg = train_config(a)?;
    let onnx = fsutil::read(&a.model)?;
    let mut g = TrainGraph::from_onnx(&onnx)
        .with_context(|| format!("cannot train {}", a.model.display()))?;
    let dir = resolve_idx_dir(&a.data)?;
    let mut set = load_idx_split(&dir, Split::Train)?;
    if let Some(n) = a.limit {
        set.truncate(n);
    }
    let val = if a.val_split > 0.0 {
        let n_val = (set.len() as f64 * a.val_split) as usize;
        let (train_n, px) = (set.len() - n_val, set.rows * set.cols);
        let v = crate::data::ImageSet {
            pixels: set.pixels[train_n * px..].to_vec(),
            labels: set.labels[train_n..].to_vec(),
            rows: set.rows,
            cols: set.cols,
        };
        set.truncate(train_n);
        Some(v)
    } else {
        None
    };
    let test = load_idx_split(&dir, Split::Test)?;
    let history = train(&mut g, &set, &cfg, &HashMap::new(), None)?;
    let out = g.to_onnx()?;
    fsutil::write_atomic(&a.output, &out)?;
    // Measured through the core runtime on the written file: what ships is what is measured.
    let model = crate::commands::eval::load_model(&a.output)?;
    let test_r = crate::eval::evaluate(&model, &test, 500, false)?;
    let val_r = val
        .as_ref()
        .map(|v| crate::eval::evaluate(&model, v, 500, false))
        .transpose()?;
    if a.json {
        let v = serde_json::json!({"epochs": history, "test_accuracy": test_r.accuracy, "test_loss": test_r.loss,
            "val_accuracy": val_r.as_ref().map(|r| r.accuracy), "output": a.output.display().to_string()});
        println!("{v}");
        return Ok(());
    }
    let mut t = Table::new(&["epoch", "loss", "train acc", "images/s", "seconds"]);
    for e in &history {
        t.row(vec![
            e.epoch.to_string(),
            format!("{:.4}", e.loss),
            format!("{:.2}%", e.accuracy * 100.0),
            format!("{:.0}", e.images_per_sec),
            format!("{:.1}", e.seconds),
        ]);
    }
    print!("{}", t.render());
    if let Some(r) = val_r {
        println!(
            "validation accuracy {:.2}% ({} images)",
            r.accuracy * 100.0,
            r.samples
        );
    }
    println!(
        "test accuracy {:.2}% (loss {:.4}, {} images) → {}",
        test_r.accuracy * 100.0,
        test_r.loss,
        test_r.samples,
        a.output.display()
    );
    Ok(())
}
