//! `nnzip agree MODEL.nnz --teacher DENSE.onnx --photos DIR`: how often a compressed model agrees
//! with its dense original on unlabelled photos — top-1 agreement, the dense class in the top 5,
//! KL divergence of the softmax outputs — for developers who check a compressed model on photos
//! of their own, without labels, after `nnzip compress`.

use crate::photo_agreement::agree_on_photos;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `nnzip agree`.
#[derive(Debug, Args)]
pub struct AgreeArgs {
    /// The compressed model (`.nnz`, with its preprocessing in the metadata).
    pub model: PathBuf,
    /// The dense original: its ONNX file (or a `.nnz`).
    #[arg(long)]
    pub teacher: PathBuf,
    /// A folder of JPEG/PNG photos, searched recursively; other files are skipped and listed.
    #[arg(long)]
    pub photos: PathBuf,
    /// Views per photo: the whole photo, then random crops and mirror images. With the same
    /// `--views` and `--seed`, the views `nnzip compress --holdout` measures.
    #[arg(long, default_value_t = 8)]
    pub views: usize,
    /// Seed of the random views.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// One JSON object on stdout: the agreement figures, photos, views and skipped files.
    #[arg(long)]
    pub json: bool,
}

/// Runs `nnzip agree`.
pub fn run(args: &AgreeArgs) -> Result<()> {
    let r = agree_on_photos(
        &args.model,
        &args.teacher,
        &args.photos,
        args.views,
        args.seed,
    )?;
    if args.json {
        let mut v = serde_json::to_value(&r)?;
        v["model"] = serde_json::to_value(&args.model)?;
        v["teacher"] = serde_json::to_value(&args.teacher)?;
        println!("{v}");
        return Ok(());
    }
    print!("{}", r.render());
    if !r.skipped.is_empty() {
        eprintln!("skipped {} files:", r.skipped.len());
        for s in &r.skipped {
            eprintln!("  {}: {}", s.path.display(), s.reason);
        }
    }
    Ok(())
}
