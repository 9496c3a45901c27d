//! `nnzip eval MODEL.onnx|MODEL.nnz --data …`: accuracy on labelled data, through the core runtime.

use crate::accuracy::evaluate;
use crate::data::{DataOptions, Split};
use crate::model_file::{input_channels, load_model};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `nnzip eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// An ONNX model or a `.nnz` file.
    pub model: PathBuf,
    /// Data options.
    #[command(flatten)]
    pub data: DataOptions,
    /// Evaluate on the training split instead of the test split.
    #[arg(long)]
    pub train_split: bool,
    /// Batch size.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// One JSON object on stdout (`accuracy` as a fraction, `loss`, `samples`, per class, confusion).
    #[arg(long)]
    pub json: bool,
}

/// Runs `nnzip eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    let model = load_model(&args.model)?;
    let split = if args.train_split {
        Split::Train
    } else {
        Split::Test
    };
    let data = args.data.load(split, input_channels(&model))?;
    let r = evaluate(&model, &data, args.batch, !args.json)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!("{} on {}", args.model.display(), data.source);
    print!("{}", r.render());
    Ok(())
}
