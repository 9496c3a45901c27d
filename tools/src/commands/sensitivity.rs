//! `nnzip sensitivity MODEL.onnx --data …`: prune each tensor alone to a ladder of densities,
//! print the accuracy table, plot the curves, and suggest per-layer densities for a budget.

use super::data_args::DataArgs;
use crate::compress::pipeline::CompressConfig;
use crate::compress::prune_sensitivity::{DEFAULT_LADDER, check_ladder, sensitivity};
use crate::compress::retrain::prunable_tensors;
use crate::data::Split;
use crate::onnx::GraphExecutor;
use crate::plot::{Series, line_chart};
use crate::table::Table;
use anyhow::{Result, bail};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `nnzip sensitivity`.
#[derive(Debug, Args)]
pub struct SensitivityArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Data options (`--limit` defaults to 10,000 images here).
    #[command(flatten)]
    pub data: DataArgs,
    /// Measure on the test split. The default, the training split, keeps the test set for the
    /// final measurement: densities picked on the test set would be tuned to it.
    #[arg(long)]
    pub test_split: bool,
    /// Densities to try (fraction kept), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub densities: Vec<f64>,
    /// Only tensors with at least this many weights (convolution and fully connected weights).
    #[arg(long, default_value_t = 256)]
    pub min_elements: usize,
    /// Write the curves as a PNG plot here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Suggest, per tensor, the lowest density losing at most this many percentage points (one
    /// shot, before retraining).
    #[arg(long, default_value_t = 1.0)]
    pub max_drop: f64,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `nnzip sensitivity`.
pub fn run(args: &SensitivityArgs) -> Result<()> {
    let ladder: Vec<f64> = if args.densities.is_empty() {
        DEFAULT_LADDER.to_vec()
    } else {
        args.densities.clone()
    };
    check_ladder(&ladder)?;
    if !(args.max_drop.is_finite() && args.max_drop >= 0.0) {
        bail!(
            "--max-drop must be a number of percentage points ≥ 0, got {}",
            args.max_drop
        );
    }
    let exec = GraphExecutor::open(&args.model)?;
    let split = if args.test_split {
        Split::Test
    } else {
        Split::Train
    };
    let mut data_args = args.data.clone();
    data_args.limit = Some(data_args.limit.unwrap_or(10_000));
    let data = data_args.load(split, exec.input_channels())?;
    crate::train::check_compatible(&exec, &data)?;
    let cfg = CompressConfig {
        min_shared_elements: args.min_elements,
        ..Default::default()
    };
    let tensors = prunable_tensors(&exec, &cfg);
    if tensors.is_empty() {
        bail!(
            "{}: no prunable tensor (convolution or fully connected weights with ≥ {} elements)",
            args.model.display(),
            args.min_elements
        );
    }
    let report = sensitivity(&exec, &tensors, &ladder, &data, !args.json)?;
    let suggested = report.densities_for_drop(args.max_drop / 100.0);
    if let Some(path) = &args.plot {
        let series: Vec<Series> = report
            .curves
            .iter()
            .map(|c| Series {
                name: format!("{} ({} weights)", c.tensor, c.elements),
                points: c
                    .points
                    .iter()
                    .map(|p| (p.density * 100.0, p.accuracy * 100.0))
                    .collect(),
            })
            .collect();
        let title = format!(
            "Pruning sensitivity of {} (each tensor alone, no retraining)",
            args.model
                .file_name()
                .map(|s| s.to_string_lossy())
                .unwrap_or_default()
        );
        line_chart(
            path,
            &title,
            "weights kept (%)",
            "accuracy (%)",
            &series,
            true,
        )?;
    }
    if args.json {
        let v = serde_json::json!({
            "model": args.model,
            "data": data.source,
            "report": report,
            "max_drop_pp": args.max_drop,
            "suggested_densities": suggested,
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "{}: accuracy {:.2}% on {} images of {}; each tensor pruned alone, no retraining\n",
        args.model.display(),
        report.baseline * 100.0,
        report.images,
        data.source
    );
    let mut header = vec!["tensor".to_string(), "weights".to_string()];
    header.extend(ladder.iter().map(|d| format!("{:.0}%", d * 100.0)));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = Table::new(&header);
    for c in &report.curves {
        let mut row = vec![c.tensor.clone(), c.elements.to_string()];
        row.extend(
            c.points
                .iter()
                .map(|p| format!("{:.2}", p.accuracy * 100.0)),
        );
        t.row(row);
    }
    print!("{}", t.render());
    println!(
        "\nLowest density per tensor losing ≤ {} pp on its own (prune + retrain usually goes further):",
        args.max_drop
    );
    let flags: Vec<String> = suggested
        .iter()
        .map(|(n, d)| format!("--density {n}={d}"))
        .collect();
    println!("  {}", flags.join(" "));
    if let Some(path) = &args.plot {
        println!("plot: {}", path.display());
    }
    Ok(())
}
