//! File helpers: outputs are written whole or not at all.

use anyhow::{Context, Result};
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so an
/// error or an interruption never leaves a half-written output (the core's writer does it).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(nnzip_core::format::encode::write_atomic(path, bytes)?)
}

/// Reads a whole file, with the path in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
