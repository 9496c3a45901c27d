//! `nnzip init`: write a classic architecture, randomly initialised, as ONNX.

use crate::onnx::build::{Architecture, build};
use crate::onnx::proto::write_model;
use anyhow::Result;
use std::path::PathBuf;

/// Arguments of `nnzip init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Architecture to build.
    #[arg(value_enum)]
    pub architecture: Architecture,
    /// Where to write the ONNX model.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Seed for the random initial weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `nnzip init`.
pub fn run(args: &InitArgs) -> Result<()> {
    let model = build(args.architecture, args.seed);
    write_model(&model, &args.output)?;
    let params: usize = model
        .graph
        .as_ref()
        .map(|g| {
            g.initializer
                .iter()
                .map(|t| t.dims.iter().product::<i64>() as usize)
                .sum()
        })
        .unwrap_or(0);
    eprintln!(
        "wrote {} ({:?}, {params} parameters, seed {})",
        args.output.display(),
        args.architecture,
        args.seed
    );
    Ok(())
}
