//! The compression pipeline's stages, as library functions: pruning, weight sharing, and
//! turning the result into `.nnz` tensors.

pub mod gptq;
pub mod keep_best;
pub mod kmeans;
pub mod label_free;
pub mod pipeline;
pub mod prune;
pub mod retrain;
pub mod sensitivity;
pub mod share;
pub mod validation;
