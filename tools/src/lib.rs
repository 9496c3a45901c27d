//! # nnzip-tools
//!
//! The library behind the `nnzip` command: everything that turns an ONNX model into a `.nnz`
//! file (packing, training, compression) and everything that reports on one. The binary in
//! `main.rs` is a thin shell over these modules.

#![deny(missing_docs)]

pub mod commands;
pub mod compress;
pub mod data;
pub mod eval;
pub mod fsutil;
pub mod pack;
pub mod table;
