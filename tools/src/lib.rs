//! # nnzip-tools
//!
//! The library behind the `nnzip` command: everything that turns an ONNX model into a `.nnz`
//! file (packing, training, compression) and everything that reports on one. The binary in
//! `main.rs` is a thin shell over these modules.
//!
//! Pipeline order: [`data`] reads labelled images; [`onnx`] interprets an ONNX classifier with
//! candle (weights as trainable variables) and writes it back; [`train`] runs the optimiser loop
//! with gradient masks and hooks; [`compress`] holds both compression pipelines (labelled and
//! label-free), their settings and their report; [`packing`] writes `.nnz` files; [`accuracy`]
//! measures any model through the core runtime that ships on phones, [`photo_agreement`] a
//! compressed model against its dense original on photos. [`commands`] parse the flags of each
//! subcommand, make one library call and print its result.

#![deny(missing_docs)]
// Numeric kernels index several arrays by one loop variable; iterator chains would hide that.
#![allow(clippy::needless_range_loop)]

pub mod accuracy;
pub mod commands;
pub mod compress;
pub mod conformance;
pub mod data;
pub mod fsutil;
pub mod latency;
pub mod model_file;
pub mod model_io;
pub mod npy;
pub mod onnx;
pub mod packing;
pub mod photo_agreement;
pub mod plot;
pub mod progress;
pub mod table;
pub mod train;
