//! The `.nnz` encoder (used by the tools; phones never encode). STUB: the format helper replaces this.

use crate::error::{NnzError, Result};
use crate::metadata::{Metadata, TensorStats};

/// The values of one tensor, in the encoding they are to be stored with.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Stored as f32.
    RawF32(Vec<f32>),
    /// Stored as f16 (values are rounded to the nearest f16).
    RawF16(Vec<f32>),
    /// Codebook + one index per element (`indices.len()` = element count).
    SharedDense {
        /// Shared values; at most `2^index_bits` entries.
        codebook: Vec<f32>,
        /// One codebook index per element, row-major.
        indices: Vec<u16>,
        /// Index width in bits (1–16).
        index_bits: u8,
    },
    /// Codebook with entry 0 = 0.0 + one index per element where index 0 means "pruned";
    /// stored as relative-index CSR with fixed-width gaps.
    SharedSparse {
        /// Shared values; `codebook[0]` must be `0.0`; at most `2^index_bits` entries.
        codebook: Vec<f32>,
        /// One codebook index per element (0 = zero weight), row-major.
        indices: Vec<u16>,
        /// Index width in bits (1–16).
        index_bits: u8,
        /// Gap width in bits (1–16).
        gap_bits: u8,
    },
}

/// A named tensor to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRecord {
    /// ONNX initializer name.
    pub name: String,
    /// Shape (row-major).
    pub shape: Vec<u64>,
    /// Values and encoding.
    pub data: TensorData,
}

/// Builds a `.nnz` file.
#[derive(Debug, Clone, Default)]
pub struct NnzWriter {
    /// Metadata; `stats.tensors` is recomputed on write.
    pub metadata: Metadata,
    /// Serialized ONNX `ModelProto` without the tensors stored below.
    pub graph: Vec<u8>,
    /// Tensors, in file order.
    pub tensors: Vec<TensorRecord>,
}

impl NnzWriter {
    /// A writer with this metadata and graph, and no tensors yet.
    pub fn new(metadata: Metadata, graph: Vec<u8>) -> Self {
        NnzWriter {
            metadata,
            graph,
            tensors: Vec::new(),
        }
    }
    /// Adds a tensor after checking it is consistent.
    pub fn push(&mut self, tensor: TensorRecord) -> Result<()> {
        self.tensors.push(tensor);
        Ok(())
    }
    /// Encodes the whole file.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Err(NnzError::InvalidInput("encoder not implemented yet".into()))
    }
    /// Encodes and writes atomically (temporary file + rename): never a half-written file.
    pub fn write_file(&self, path: &std::path::Path) -> Result<()> {
        let _ = path;
        Err(NnzError::InvalidInput("encoder not implemented yet".into()))
    }
}

/// Encodes one tensor record's payload and reports its statistics.
pub fn encode_tensor(tensor: &TensorRecord) -> Result<(Vec<u8>, TensorStats)> {
    let _ = tensor;
    Err(NnzError::InvalidInput("encoder not implemented yet".into()))
}
