//! `nnzip decompress FILE.nnz -o OUT.onnx`: a dense ONNX file other runtimes load.

use crate::model_file::decompress_file;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `nnzip decompress`.
#[derive(Debug, Args)]
pub struct DecompressArgs {
    /// The `.nnz` file.
    pub file: PathBuf,
    /// Output ONNX file.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Runs `nnzip decompress`.
pub fn run(args: &DecompressArgs) -> Result<()> {
    let n = decompress_file(&args.file, &args.output)?;
    eprintln!("wrote {} ({n} bytes)", args.output.display());
    Ok(())
}
