//! A `.nnz` file turned into a runnable model (stub API; implementation in progress).

use crate::classify::Prediction;
use crate::error::{NnzError, Result};
use crate::metadata::Metadata;
use std::path::Path;
use tract_onnx::prelude::Tensor;

/// A decoded, optimised, runnable model. `Send + Sync`: one instance serves many threads.
#[derive(Debug)]
pub struct Model {
    metadata: Metadata,
    file_bytes: u64,
}

impl Model {
    /// Verifies and decodes a `.nnz` file held in memory and builds an optimised plan.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        let _ = bytes;
        Err(NnzError::model("not implemented yet"))
    }
    /// Reads and loads a `.nnz` file.
    pub fn open(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| NnzError::Io { path: path.display().to_string(), source })?;
        Self::from_bytes(&bytes)
    }
    /// The file's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    /// Size of the `.nnz` file in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }
    /// Runs the model on one input tensor and returns its first output.
    pub fn run(&self, input: Tensor) -> Result<Tensor> {
        let _ = input;
        Err(NnzError::model("not implemented yet"))
    }
    /// Decodes a JPEG or PNG, preprocesses it as the file says, runs, and returns the top `k` classes.
    pub fn classify(&self, image_bytes: &[u8], top_k: usize) -> Result<Vec<Prediction>> {
        let _ = (image_bytes, top_k);
        Err(NnzError::model("not implemented yet"))
    }
    /// Classifies raw RGBA8 pixels (`width × height × 4` bytes), e.g. a camera frame or Android `Bitmap`.
    pub fn classify_rgba(&self, width: u32, height: u32, rgba: &[u8], top_k: usize) -> Result<Vec<Prediction>> {
        let _ = (width, height, rgba, top_k);
        Err(NnzError::model("not implemented yet"))
    }
}
