//! ONNX models for training: loading (prost over `tract_onnx::pb`), an interpreter that evaluates
//! the graph with candle (weights as trainable variables), and writing trained weights back.

pub mod batchnorm;
pub mod build;
pub mod conv;
pub mod exec;
pub mod ops;
pub mod pool;
pub mod proto;

pub use exec::{GraphExecutor, Mode, Param, ParamKind};
