//! The subcommands of `nnzip`, each a function over parsed arguments; `main.rs` only dispatches.

pub mod classify;
pub mod compress;
pub mod decompress;
pub mod eval;
pub mod inspect;
pub mod pack;
