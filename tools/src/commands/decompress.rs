//! `nnzip decompress FILE.nnz -o OUT.onnx`: a dense ONNX file other runtimes load.

use crate::fsutil;
use anyhow::{Context, Result};
use clap::Args;
use nnzip_core::format::NnzReader;
use nnzip_core::graph::{Weight, merge_onnx};
use std::path::{Path, PathBuf};

/// Arguments of `nnzip decompress`.
#[derive(Debug, Args)]
pub struct DecompressArgs {
    /// The `.nnz` file.
    pub file: PathBuf,
    /// Output ONNX file.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Decodes every tensor of a `.nnz` file and returns the dense ONNX model bytes.
pub fn decompress_bytes(nnz: &[u8]) -> Result<Vec<u8>> {
    let reader = NnzReader::parse(nnz)?;
    let weights = reader
        .tensors()
        .iter()
        .map(|t| {
            Ok(Weight {
                name: t.name.clone(),
                shape: t.shape.clone(),
                values: t.decode()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(merge_onnx(reader.graph(), weights)?)
}

/// Decompresses a file on disk. The file is first loaded as a phone would load it (every
/// tensor decoded, the graph built with them): an ONNX file is written only from a model that
/// loads, never from one with a missing tensor or a graph the runtime refuses.
pub fn decompress_file(input: &Path, output: &Path) -> Result<usize> {
    fsutil::check_output(output, &[input], false)?;
    let nnz = fsutil::read_nnz(input)?;
    let cannot = || format!("cannot decompress {}", input.display());
    nnzip_core::Model::from_bytes(&nnz)
        .context("the file does not load")
        .with_context(cannot)?;
    let onnx = decompress_bytes(&nnz).with_context(cannot)?;
    fsutil::write_atomic(output, &onnx)?;
    Ok(onnx.len())
}

/// Runs `nnzip decompress`.
pub fn run(args: &DecompressArgs) -> Result<()> {
    let n = decompress_file(&args.file, &args.output)?;
    eprintln!("wrote {} ({n} bytes)", args.output.display());
    Ok(())
}
