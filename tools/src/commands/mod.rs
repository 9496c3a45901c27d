//! The subcommands of `nnzip`, each a function over parsed arguments; `main.rs` only dispatches.

pub mod agree;
pub mod bench;
pub mod classify;
pub mod compress;
pub mod decompress;
pub mod eval;
pub mod init;
pub mod inspect;
pub mod pack;
pub mod run;
pub mod sensitivity;
pub mod train;
