//! The phone path as one function of one byte string: a `.nnz` file and a photo in, the top 5
//! out, as the app does it (batch fixed to 1). Shared by the `phone_path` fuzz target and the
//! regression test that replays `fuzz/regressions/phone_path/*` in CI
//! (`core/tests/phone_path.rs`, which includes this file and `header.rs`).

use super::header::with_consistent_header;
use nnzip_core::format::DecodeLimits;
use nnzip_core::{LoadOptions, Model, Prediction, Result};

/// Splits an input into its `.nnz` file and its image: `u32` (little-endian) length `L`, then
/// `L` bytes for the file (a mode byte first, as [`with_consistent_header`] reads it), then the
/// image. `None` when the length runs past the end.
pub fn split(data: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let len = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let file = data.get(4..4usize.checked_add(len)?)?;
    Some((with_consistent_header(file), &data[4 + len..]))
}

/// Joins a file (mode byte included) and an image into one input of [`split`]'s layout.
pub fn join(file_with_mode: &[u8], image: &[u8]) -> Vec<u8> {
    let mut data = (file_with_mode.len() as u32).to_le_bytes().to_vec();
    data.extend_from_slice(file_with_mode);
    data.extend_from_slice(image);
    data
}

/// Loads the file and classifies the image: `None` when the input cannot be split. Tighter
/// element limits than a phone's keep each run fast; every check is the same.
pub fn classify(data: &[u8]) -> Option<Result<Vec<Prediction>>> {
    let (file, image) = split(data)?;
    let options = LoadOptions {
        limits: DecodeLimits {
            max_tensor_elements: 1 << 20,
            max_total_elements: 1 << 20,
            max_graph_bytes: 1 << 20,
            ..DecodeLimits::default()
        },
        batch: Some(1),
        kernels: None,
    };
    Some(Model::from_bytes_with(&file, &options).and_then(|model| model.classify(image, 5)))
}
