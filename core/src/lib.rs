//! # nnzip-core
//!
//! The part of nnzip that ships on phones: the `.nnz` compressed-model format (encoder and
//! decoder), loading a `.nnz` into a runnable [tract](https://github.com/sonos/tract) plan, image
//! preprocessing and top-k classification. No training code, no CLI code.
//!
//! ```no_run
//! let model = nnzip_core::Model::open("efficientnet_lite0.nnz")?;
//! let jpeg = std::fs::read("coffee.jpg").unwrap();
//! for p in model.classify(&jpeg, 5)? {
//!     println!("{:>6.2}%  {}", p.probability * 100.0, p.label);
//! }
//! # Ok::<(), nnzip_core::NnzError>(())
//! ```

#![deny(missing_docs)]

pub mod classify;
#[cfg(feature = "runtime")]
pub mod declutter;
pub mod error;
#[cfg(feature = "runtime")]
pub mod fold_channel_affine;
pub mod format;
pub mod graph;
#[cfg(feature = "runtime")]
pub mod image_check;
#[cfg(feature = "runtime")]
pub mod kernels;
pub mod metadata;
#[cfg(feature = "runtime")]
pub mod model;
pub mod onnx;
#[cfg(feature = "runtime")]
mod output_kind;
#[cfg(feature = "runtime")]
pub mod preprocess;
#[cfg(feature = "runtime")]
mod run_states;

pub use classify::{OutputKind, Prediction};
pub use error::{NnzError, Result};
pub use metadata::{Metadata, Preprocessing};
#[cfg(feature = "runtime")]
pub use model::{LoadOptions, Model};
pub use onnx::SUPPORTED_OPERATORS;

/// tract's tensor type, the input and output of [`Model::run`].
#[cfg(feature = "runtime")]
pub use tract_core::prelude::Tensor;
