//! # nnzip-tools
//!
//! The library behind the `nnzip` command: everything that turns an ONNX model into a `.nnz`
//! file (packing, training, compression) and everything that reports on one. The binary in
//! `main.rs` is a thin shell over these modules.
//!
//! Pipeline order: [`data`] reads labelled images; [`onnx`] interprets an ONNX classifier with
//! candle (weights as trainable variables) and writes it back; [`train`] runs the optimiser loop
//! with gradient masks and hooks; [`compress`] prunes and shares weights; [`pack`] writes `.nnz`
//! files; [`eval`] measures any model through the core runtime that ships on phones.

#![deny(missing_docs)]
// Numeric kernels index several arrays by one loop variable; iterator chains would hide that.
#![allow(clippy::needless_range_loop)]

pub mod commands;
pub mod compress;
pub mod conformance;
pub mod data;
pub mod eval;
pub mod fsutil;
pub mod npy;
pub mod onnx;
pub mod pack;
pub mod plot;
pub mod run;
pub mod table;
pub mod train;
