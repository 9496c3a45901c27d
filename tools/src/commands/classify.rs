//! `nnzip classify FILE.nnz IMAGE…`: try a model from the shell.

use anyhow::{Context, Result};
use clap::Args;
use nnzip_core::Model;
use std::path::PathBuf;

/// Arguments of `nnzip classify`.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// The `.nnz` model.
    pub model: PathBuf,
    /// JPEG or PNG images.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// One JSON object per image on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `nnzip classify`.
pub fn run(args: &ClassifyArgs) -> Result<()> {
    let model = Model::open(&args.model)
        .with_context(|| format!("cannot load {}", args.model.display()))?;
    for path in &args.images {
        let bytes = crate::fsutil::read(path)?;
        let start = std::time::Instant::now();
        let top = model
            .classify(&bytes, args.top_k)
            .with_context(|| format!("cannot classify {}", path.display()))?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if args.json {
            let preds: Vec<_> = top
                .iter()
                .map(|p| serde_json::json!({"index": p.index, "label": p.label, "probability": p.probability}))
                .collect();
            println!(
                "{}",
                serde_json::json!({"image": path.display().to_string(), "millis": ms, "top": preds})
            );
        } else {
            println!("{}  ({ms:.1} ms)", path.display());
            for p in &top {
                let bar = "█".repeat((p.probability * 30.0).round() as usize);
                println!(
                    "  {:>6.2}%  {:<30}  {:>4}  {}",
                    p.probability * 100.0,
                    bar,
                    p.index,
                    p.label
                );
            }
        }
    }
    Ok(())
}
