//! `nnzip sensitivity MODEL.onnx --data …`: prune each tensor alone to a ladder of densities
//! ([`crate::compress::prune_sensitivity_run::measure_file`]), and print the accuracy table and
//! the suggested densities, or JSON.

use crate::compress::prune_sensitivity_run::{SensitivitySettings, measure_file};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `nnzip sensitivity`.
#[derive(Debug, Args)]
pub struct SensitivityArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// The data, the ladder, the budget and the plot.
    #[command(flatten)]
    pub settings: SensitivitySettings,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `nnzip sensitivity`.
pub fn run(args: &SensitivityArgs) -> Result<()> {
    let run = measure_file(&args.model, &args.settings, !args.json)?;
    if args.json {
        println!("{}", run.to_json());
    } else {
        print!("{}", run.render());
    }
    Ok(())
}
