//! ONNX models for training: loading (prost over `nnzip_core::onnx::proto`), an interpreter that evaluates
//! the graph with candle (weights as trainable variables), and writing trained weights back.

pub mod batchnorm;
pub mod build;
pub mod conv;
pub mod exec;
pub mod fold;
pub mod ops;
pub mod pool;
pub mod proto;

pub use exec::{GraphExecutor, Mode, Param, ParamKind};

/// The elements a contiguous layout covers in `data`, for the CPU kernels of nnzip's candle custom
/// ops; `what` names the operand in the error (e.g. "Conv: first operand").
pub(crate) fn contiguous<'a, T>(
    data: &'a [T],
    layout: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}
