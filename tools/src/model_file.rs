//! Model files on their way into and out of the core runtime: an ONNX or `.nnz` file loaded as
//! a phone would load it (ONNX packed losslessly in memory first), and a `.nnz` file decoded
//! back into a dense ONNX model other runtimes load.

use crate::fsutil;
use anyhow::{Context, Result};
use nnzip_core::format::NnzReader;
use nnzip_core::graph::{Weight, merge_onnx};
use std::path::Path;

/// Loads an ONNX (packed losslessly in memory) or `.nnz` model into the core runtime.
pub fn load_model(path: &Path) -> Result<nnzip_core::Model> {
    let bytes = fsutil::read(path)?;
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
    Ok(nnzip_core::Model::from_bytes_with(
        &nnz_bytes(bytes)?,
        options,
    )?)
}

/// `bytes` as a `.nnz` file: a `.nnz` file as it is, ONNX packed losslessly in memory.
pub fn nnz_bytes(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>> {
    if bytes.starts_with(&nnzip_core::format::MAGIC) {
        return Ok(bytes.into());
    }
    let nnz = crate::packing::pack_onnx(bytes, &Default::default())
        .context("not a .nnz file, and not readable as ONNX")?
        .to_bytes()?;
    Ok(nnz.into())
}

/// Channels of the model's image input `[N, C, H, W]` (3 when it does not say).
pub fn input_channels(model: &nnzip_core::Model) -> usize {
    let shape = &model.metadata().input.shape;
    match shape.get(1) {
        Some(&c) if shape.len() == 4 && c > 0 => c as usize,
        _ => 3,
    }
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
