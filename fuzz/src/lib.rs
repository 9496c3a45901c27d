//! Shared by the fuzz targets.

mod header;
pub mod phone_path;

pub use header::with_consistent_header;
