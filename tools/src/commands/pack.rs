//! `nnzip pack MODEL.onnx -o FILE.nnz`: lossless packing.

use crate::fsutil;
use crate::packing::{PackOptions, pack_onnx, preset, read_labels};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `nnzip pack`.
#[derive(Debug, Args)]
pub struct PackArgs {
    /// The ONNX model to pack.
    pub model: PathBuf,
    /// Output `.nnz` file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Image preprocessing preset: efficientnet-lite, imagenet, mnist or none.
    #[arg(long, default_value = "none")]
    pub preprocess: String,
    /// Class labels file, one name per line in output order.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Model name for the metadata (default: the file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Store weights as float16 (half the size, tiny rounding error).
    #[arg(long)]
    pub f16: bool,
    /// Replace the output even when it is the input model itself.
    #[arg(long)]
    pub force: bool,
}

/// Runs `nnzip pack`.
pub fn run(args: &PackArgs) -> Result<()> {
    fsutil::check_output(&args.output, &[&args.model], args.force)?;
    let onnx = fsutil::read(&args.model)?;
    let labels = match &args.labels {
        Some(p) => read_labels(p)?,
        None => Vec::new(),
    };
    let name = args.name.clone().or_else(|| {
        args.model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
    });
    let opts = PackOptions {
        model_name: name,
        preprocessing: preset(&args.preprocess)?,
        labels,
        f16: args.f16,
    };
    let writer =
        pack_onnx(&onnx, &opts).with_context(|| format!("cannot pack {}", args.model.display()))?;
    let bytes = writer.to_bytes()?;
    fsutil::write_atomic(&args.output, &bytes)?;
    eprintln!(
        "packed {} ({} bytes) into {} ({} bytes, {} tensors)",
        args.model.display(),
        onnx.len(),
        args.output.display(),
        bytes.len(),
        writer.tensors.len()
    );
    Ok(())
}
