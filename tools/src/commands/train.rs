//! `nnzip train`: train an ONNX classifier and write it back with the new weights
//! ([`crate::train::training_run::train_file`]), then print the epochs as a table or JSON.

use crate::train::training_run::{TrainSettings, train_file};
use anyhow::Result;
use std::path::PathBuf;

/// Arguments of `nnzip train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// ONNX classifier to train.
    pub model: PathBuf,
    /// The data, the optimiser and its schedule.
    #[command(flatten)]
    pub settings: TrainSettings,
    /// Where to write the trained model.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `nnzip train`.
pub fn run(args: &TrainArgs) -> Result<()> {
    let run = train_file(&args.model, &args.output, &args.settings, !args.json)?;
    if args.json {
        println!("{}", run.to_json()?);
    } else {
        print!("{}", run.render());
    }
    Ok(())
}
