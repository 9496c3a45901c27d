//! The one error type of the core: every way a file, an image or a call can be wrong.

use thiserror::Error;

/// Everything that can go wrong while reading, writing or running a `.nnz` model.
///
/// Each variant says what is wrong and, where there is one, what to do about it. The decoder
/// returns these for hostile input; it never panics.
#[derive(Debug, Error)]
pub enum NnzError {
    /// The bytes do not start with the `.nnz` magic.
    #[error(
        "not a .nnz file: the first bytes are not the .nnz magic (is this an ONNX file? pack it with `nnzip pack`)"
    )]
    NotNnz,
    /// The file was written by a newer (or unknown) format version.
    #[error(
        "unsupported format version {found}, this build reads versions 1 to {supported}: update nnzip"
    )]
    UnsupportedVersion {
        /// Version found in the header.
        found: u16,
        /// Highest version this build reads.
        supported: u16,
    },
    /// The file ends before a structure it declares.
    #[error(
        "truncated at byte {at}: {what} needs {needed} more bytes (the file is incomplete; copy it again)"
    )]
    Truncated {
        /// Offset at which the missing bytes start.
        at: u64,
        /// What was being read.
        what: String,
        /// How many bytes were missing.
        needed: u64,
    },
    /// The checksum over the body does not match the header.
    #[error(
        "checksum mismatch: header says {expected:#010x}, body hashes to {actual:#010x} (the file is corrupted)"
    )]
    ChecksumMismatch {
        /// CRC-32 stored in the header.
        expected: u32,
        /// CRC-32 of the bytes read.
        actual: u32,
    },
    /// A structurally invalid file: a field out of range, an inconsistent size, a bad table.
    #[error("malformed .nnz: {0}")]
    Malformed(String),
    /// A tensor inside the file is invalid.
    #[error("tensor '{name}': {reason}")]
    BadTensor {
        /// Tensor name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A decoding limit (memory guard) would be exceeded.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The arguments given to the encoder are inconsistent (a programming or tool error).
    #[error("cannot encode: {0}")]
    InvalidInput(String),
    /// The ONNX graph could not be read, or tract cannot run it.
    #[error("model: {0}")]
    Model(String),
    /// The image could not be decoded or does not fit the model.
    #[error("image: {0}")]
    Image(String),
    /// Raw pixels were handed over in a buffer that is not `width × height × 4` bytes of RGBA,
    /// or with a width or height that is zero or over the largest side accepted. A variant of its
    /// own because a caller (the bindings) reports it apart from an undecodable image: it is the
    /// app's mistake, not the photo's.
    #[error("image: {0}")]
    WrongPixelCount(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for the core.
pub type Result<T, E = NnzError> = std::result::Result<T, E>;

impl NnzError {
    pub(crate) fn malformed(msg: impl Into<String>) -> Self {
        NnzError::Malformed(msg.into())
    }
    pub(crate) fn bad_tensor(name: &str, reason: impl Into<String>) -> Self {
        NnzError::BadTensor {
            name: name.to_string(),
            reason: reason.into(),
        }
    }
    // Not runtime-only: `graph` (in the bare codec too) reports malformed graphs with it.
    pub(crate) fn model(msg: impl std::fmt::Display) -> Self {
        NnzError::Model(msg.to_string())
    }
}
