//! `nnzip compress MODEL.onnx -o MODEL.nnz`: the settings (a preset, the flags over it) handed to
//! [`crate::compress::compress_file`] (labelled, one-shot or label-free), and its report printed
//! as a table or as JSON.

use crate::compress::compress_file;
use crate::compress::settings_flags::SettingsFlags;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `nnzip compress`. Every setting can also come from `--config FILE.toml` (the
/// same names, e.g. `bits-fc = 4`, per-tensor densities in a `[densities]` table); a flag given on
/// the command line wins over the file, and the file over the defaults shown here.
#[derive(Debug, Args)]
pub struct CompressArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Output `.nnz` file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Replace the output even when it is the input model itself.
    #[arg(long)]
    pub force: bool,
    /// `--config`, `--density` and every field of `CompressSettings`.
    #[command(flatten)]
    pub settings: SettingsFlags,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `nnzip compress`.
pub fn run(args: &CompressArgs) -> Result<()> {
    let s = args.settings.settings()?;
    let report = compress_file(&args.model, &args.output, args.force, &s, !args.json)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render(&args.output));
    }
    Ok(())
}
