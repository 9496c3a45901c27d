//! The ONNX reader of the phone runtime: the part of [tract-onnx] 0.23.9 that nnzip needs,
//! copied (MIT OR Apache-2.0, as nnzip) so that tract-onnx is not linked into the library.
//!
//! Why: `tract_onnx::onnx()` registers every ONNX operator tract knows, and tract-onnx depends
//! on tract-nnef, which registers (through `inventory`, a static constructor no linker drops) a
//! model transform that builds the whole NNEF operator registry, hence every tract-core operator
//! and rustfft. Measured on the stripped `mobile` build of libnnzip (x86_64): 11.97 MB with
//! tract-onnx, 10.37 MB with tract-onnx registering only these operators (a trial), 6.60 MB with
//! this reader, tract-onnx and tract-nnef not linked at all (see `scripts/lib-size.sh`).
//!
//! What changed from tract-onnx: only 31 operators are registered (`ops`: the ones the tools'
//! training interpreter supports, which covers the reference models); an operator outside them
//! is refused at parse time with an error that names it; tensors with external data are refused
//! (a `.nnz` graph never has any); a `dim_param` is a plain symbol or an integer (tract-onnx also
//! parses expressions), anything else is left to shape inference; no NNEF, no sub-graphs; the
//! parser takes the weights decoded from a `.nnz` file as extra initializers, and adds
//! initializers without searching for an equal one already in the graph (quadratic).
//!
//! [tract-onnx]: https://github.com/sonos/tract/tree/main/onnx

#![allow(clippy::all, missing_docs)]

mod model;
mod ops;
#[allow(missing_docs)]
pub mod pb;
mod pb_helpers;
mod tensor;

pub(crate) use model::{Onnx, OnnxOpRegister};

/// An ONNX reader that knows the operators nnzip's models use.
pub(crate) fn onnx() -> Onnx {
    let mut ops = OnnxOpRegister::default();
    ops::register_all_ops(&mut ops);
    Onnx {
        op_register: ops,
        ..Onnx::default()
    }
}
