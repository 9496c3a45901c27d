//! STUB: the format helper writes this.

/// Canonical Huffman code (stub).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HuffmanTable;
