//! The `.nnz` container: one file with the metadata, the ONNX graph without its large
//! initializers, and every weight tensor in one of four encodings. Byte layout: `docs/FORMAT.md`.
//!
//! The encoder ([`encode`]) is used by the tools; phones only run the decoder ([`decode`]), which
//! treats every byte as hostile: every length is checked against the bytes that are actually there
//! and against [`DecodeLimits`] before anything is allocated.

pub mod bits;
pub mod decode;
pub mod encode;
pub mod huffman;
pub mod range;

pub use decode::{NnzReader, SparseEntries, TensorView};
pub use encode::{NnzWriter, TensorData, TensorRecord};
pub use huffman::HuffmanTable;

/// The eight bytes every `.nnz` file starts with (PNG-style: non-ASCII first byte, CR LF, ^Z, LF
/// catch text-mode transfers).
pub const MAGIC: [u8; 8] = *b"\x89NNZ\r\n\x1a\n";

/// The highest format version this build reads and writes. Version 2 added the
/// `shared-sparse-ac` encoding; version 3 stores the metadata deflated, as the graph; version 4
/// adds row scales to shared tensors ([`ROW_SCALED`]). A file that uses neither range coding nor
/// row scales is written as version 1, so older decoders still read it; one with range coding is
/// written as version 3, one with row scales as version 4. Older files decode unchanged.
pub const FORMAT_VERSION: u16 = 4;

/// The first format version with row-scaled tensors.
pub const ROW_SCALES_VERSION: u16 = 4;

/// Bit of a record's encoding byte that says the payload starts with one scale per row
/// (per index of the first dimension: an output channel of a convolution or of `Gemm` with
/// `transB`), by which the decoded shared values of that row are multiplied. Folding
/// BatchNorm into a convolution leaves channels whose ranges differ by orders of magnitude;
/// one codebook per tensor then spends its values on the wide channels and flattens the narrow
/// ones, while one codebook over row-normalised weights serves them all (format version 4).
pub const ROW_SCALED: u8 = 0x80;

/// The row scale the format can store nearest to `x` (scales are binary16): encoders normalise
/// rows by this value so that decoding multiplies by exactly the scale they used.
pub fn round_row_scale(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// The format version a file needs: 3 if any tensor is `shared-sparse-ac` (range coding came in
/// version 2; such a file takes version 3's deflated metadata as well), else 1.
pub fn required_version(encodings: impl IntoIterator<Item = Encoding>) -> u16 {
    match encodings.into_iter().map(Encoding::since_version).max() {
        Some(v) if v > 1 => v.max(DEFLATED_METADATA_VERSION),
        _ => 1,
    }
}

/// The first format version whose metadata is deflated (`codec, inflated_len, stored_len,
/// bytes`, as the graph) instead of `len, JSON`.
pub const DEFLATED_METADATA_VERSION: u16 = 3;

/// The first format version with the `shared-sparse-ac` encoding.
pub const RANGE_CODING_VERSION: u16 = 2;

/// Graph codec byte: stored as is.
pub const GRAPH_STORED: u8 = 0;
/// Graph codec byte: zlib (RFC 1950).
pub const GRAPH_ZLIB: u8 = 1;

/// Highest tensor rank a file may declare (the encoder refuses more, the decoder rejects it).
pub const MAX_RANK: usize = 8;

/// How a tensor's values are stored (the `encoding` byte of a tensor record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Encoding {
    /// Little-endian IEEE-754 binary32, one per element.
    RawF32 = 0,
    /// Little-endian IEEE-754 binary16, one per element (decoded to f32).
    RawF16 = 1,
    /// Codebook + one Huffman-coded codebook index per element.
    SharedDense = 2,
    /// Codebook (entry 0 is 0.0) + Huffman-coded indices of the stored entries + Huffman-coded
    /// relative positions (gaps) of fixed width, with filler zeros for long gaps.
    SharedSparse = 3,
    /// Codebook (entry 0 is 0.0) + the non-zero weights' gaps and indices, range-coded with
    /// adaptive binary contexts (no code tables; format version 2).
    SharedSparseAc = 4,
}

impl Encoding {
    /// The first format version that has this encoding.
    pub fn since_version(self) -> u16 {
        match self {
            Encoding::SharedSparseAc => RANGE_CODING_VERSION,
            _ => 1,
        }
    }

    /// Name used in reports and metadata (`raw-f32`, `raw-f16`, `shared-dense`, `shared-sparse`,
    /// `shared-sparse-ac`).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::RawF32 => "raw-f32",
            Encoding::RawF16 => "raw-f16",
            Encoding::SharedDense => "shared-dense",
            Encoding::SharedSparse => "shared-sparse",
            Encoding::SharedSparseAc => "shared-sparse-ac",
        }
    }

    /// Parses the encoding byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Encoding::RawF32,
            1 => Encoding::RawF16,
            2 => Encoding::SharedDense,
            3 => Encoding::SharedSparse,
            4 => Encoding::SharedSparseAc,
            _ => return None,
        })
    }
}

/// Guards against hostile files: the decoder refuses, before allocating, anything larger.
///
/// Independently of these, every count is also checked against the bytes that carry it
/// (e.g. a Huffman stream of `B` bytes holds at most `8·B` symbols).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most elements in one tensor.
    pub max_tensor_elements: u64,
    /// Most elements over all tensors of a file.
    pub max_total_elements: u64,
    /// Largest inflated ONNX graph, in bytes.
    pub max_graph_bytes: u64,
    /// Largest metadata JSON, in bytes.
    pub max_metadata_bytes: u64,
    /// Most tensors in one file.
    pub max_tensors: u64,
    /// Most decoded elements per byte of the file, over all its tensors: the entropy-coded
    /// encodings can describe long zero runs in a few bits (a sparse tensor's filler entries, a
    /// one-symbol Huffman table), so without this a small file could make a decoder allocate
    /// gigabytes. See [`DecodeLimits::element_budget`].
    pub max_elements_per_file_byte: u64,
    /// Decoded elements any file may have whatever its size (small files of very sparse
    /// models).
    pub min_element_budget: u64,
}

impl DecodeLimits {
    /// Most elements the tensors of a `file_bytes`-byte file may decode to in all:
    /// `min(max_total_elements, max(min_element_budget, max_elements_per_file_byte · file_bytes))`.
    /// Checked before anything is decoded, as each tensor record is read.
    pub fn element_budget(&self, file_bytes: u64) -> u64 {
        self.max_elements_per_file_byte
            .saturating_mul(file_bytes)
            .max(self.min_element_budget)
            .min(self.max_total_elements)
    }
}

impl Default for DecodeLimits {
    /// 256 Mi elements (1 GiB of f32) in all, 64 MiB of graph, 16 MiB of metadata, 100k tensors;
    /// at most 256 elements (1 KiB of f32) per byte of the file, 16 Mi elements (64 MiB) for
    /// any file. 256 per byte is a model pruned to about 0.4% density: the paper's densities are
    /// 8–35% (6–25 elements per byte once shared and coded), and the encoder refuses to write a
    /// file this budget would refuse ([`crate::format::NnzWriter::to_bytes`]).
    fn default() -> Self {
        DecodeLimits {
            max_tensor_elements: 1 << 28,
            max_total_elements: 1 << 28,
            max_graph_bytes: 64 << 20,
            max_metadata_bytes: 16 << 20,
            max_tensors: 100_000,
            max_elements_per_file_byte: 256,
            min_element_budget: 1 << 24,
        }
    }
}
