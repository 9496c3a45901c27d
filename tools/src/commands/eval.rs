//! `nnzip eval MODEL.onnx|MODEL.nnz --data …`: accuracy on labelled data, through the core runtime.

use super::data_args::DataArgs;
use crate::data::Split;
use crate::eval::evaluate;
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// Arguments of `nnzip eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// An ONNX model or a `.nnz` file.
    pub model: PathBuf,
    /// Data options.
    #[command(flatten)]
    pub data: DataArgs,
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

/// Loads an ONNX (packed losslessly in memory) or `.nnz` model into the core runtime.
pub fn load_model(path: &Path) -> Result<nnzip_core::Model> {
    let bytes = crate::fsutil::read(path)?;
    load_model_bytes(&bytes).with_context(|| format!("cannot load {}", path.display()))
}

/// Loads ONNX or `.nnz` bytes into the core runtime (ONNX is packed losslessly in memory first).
pub fn load_model_bytes(bytes: &[u8]) -> Result<nnzip_core::Model> {
    load_model_bytes_with(bytes, &nnzip_core::LoadOptions::default())
}

/// As [`load_model_bytes`], with the core's load options (e.g. a batch size fixed at load).
pub fn load_model_bytes_with(
    bytes: &[u8],
    options: &nnzip_core::LoadOptions,
) -> Result<nnzip_core::Model> {
    if bytes.starts_with(&nnzip_core::format::MAGIC) {
        return Ok(nnzip_core::Model::from_bytes_with(bytes, options)?);
    }
    let nnz = crate::pack::pack_onnx(bytes, &Default::default())
        .context("not a .nnz file, and not readable as ONNX")?
        .to_bytes()?;
    Ok(nnzip_core::Model::from_bytes_with(&nnz, options)?)
}

/// Channels of the model's image input `[N, C, H, W]` (3 when it does not say).
pub fn input_channels(model: &nnzip_core::Model) -> usize {
    let shape = &model.metadata().input.shape;
    match shape.get(1) {
        Some(&c) if shape.len() == 4 && c > 0 => c as usize,
        _ => 3,
    }
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
