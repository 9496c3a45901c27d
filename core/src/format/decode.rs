//! The `.nnz` decoder. STUB: the format helper replaces this.

use super::{DecodeLimits, Encoding};
use crate::error::{NnzError, Result};
use crate::metadata::Metadata;

/// A verified, indexed `.nnz` file: header checked, checksum verified, metadata parsed, graph
/// inflated, tensor records located. Tensor payloads are decoded on demand, straight into the
/// caller's buffer.
#[derive(Debug)]
pub struct NnzReader<'a> {
    version: u16,
    metadata: Metadata,
    graph: Vec<u8>,
    tensors: Vec<TensorView<'a>>,
}

impl<'a> NnzReader<'a> {
    /// Parses with [`DecodeLimits::default`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        Self::parse_with_limits(bytes, DecodeLimits::default())
    }
    /// Parses, refusing anything over `limits`.
    pub fn parse_with_limits(bytes: &'a [u8], limits: DecodeLimits) -> Result<Self> {
        let _ = (bytes, limits);
        Err(NnzError::malformed("decoder not implemented yet"))
    }
    /// Format version of the file.
    pub fn version(&self) -> u16 {
        self.version
    }
    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    /// The serialized ONNX graph (inflated).
    pub fn graph(&self) -> &[u8] {
        &self.graph
    }
    /// The tensor records, in file order.
    pub fn tensors(&self) -> &[TensorView<'a>] {
        &self.tensors
    }
}

/// One tensor record of a parsed file; its payload is decoded on demand.
#[derive(Debug, Clone)]
pub struct TensorView<'a> {
    /// Tensor name.
    pub name: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Encoding.
    pub encoding: Encoding,
    /// Byte offset of the record in the file.
    pub offset: u64,
    /// Total bytes of the record (header + payload).
    pub record_bytes: u64,
    payload: &'a [u8],
}

impl TensorView<'_> {
    /// Number of elements (product of the shape; checked against the limits at parse time).
    pub fn element_count(&self) -> usize {
        self.shape.iter().product::<u64>() as usize
    }
    /// Decodes into `out`, which must have exactly `element_count()` elements.
    pub fn decode_into(&self, out: &mut [f32]) -> Result<()> {
        decode_payload(&self.name, self.encoding, self.payload, out)
    }
    /// Decodes into a new vector.
    pub fn decode(&self) -> Result<Vec<f32>> {
        let mut v = vec![0.0; self.element_count()];
        self.decode_into(&mut v)?;
        Ok(v)
    }
}

/// Decodes one tensor payload of the given encoding into `out` (whose length is the element
/// count). Exposed on its own for fuzzing.
pub fn decode_payload(
    name: &str,
    encoding: Encoding,
    payload: &[u8],
    out: &mut [f32],
) -> Result<()> {
    let _ = (encoding, payload, out);
    Err(NnzError::bad_tensor(name, "decoder not implemented yet"))
}
