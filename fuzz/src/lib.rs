//! Shared by the fuzz targets.

mod header;
// Loads and runs models: only with the `runtime` feature (the decoder targets build without it).
#[cfg(feature = "runtime")]
pub mod phone_path;

pub use header::with_consistent_header;
