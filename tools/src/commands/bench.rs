//! `nnzip bench MODEL.nnz|MODEL.onnx`: load-to-ready time and batch-1 latency in the core
//! runtime, as medians, in a table (or JSON). `tools/benches/latency_vs_ort.sh` puts these next
//! to onnxruntime's on the dense ONNX, same machine, same run.

use super::eval::load_model_bytes_with;
use crate::table::Table;
use anyhow::{Result, bail};
use clap::Args;
use nnzip_core::Tensor;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Arguments of `nnzip bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A `.nnz` file (or an ONNX model, packed losslessly in memory first).
    pub model: PathBuf,
    /// Timed inferences (after 3 warm-up runs).
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Timed loads.
    #[arg(long, default_value_t = 5)]
    pub loads: usize,
    /// One JSON object on stdout: `load_ms`, `latency_ms` (medians), `runs`.
    #[arg(long)]
    pub json: bool,
}

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

/// Runs `nnzip bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.runs == 0 || args.loads == 0 {
        bail!("--runs and --loads must be at least 1");
    }
    let bytes = crate::fsutil::read(&args.model)?;
    let mut loads = Vec::new();
    let mut model = None;
    // As the phone library loads it: planned for single images.
    let batch1 = nnzip_core::LoadOptions {
        batch: Some(1),
        ..Default::default()
    };
    for _ in 0..args.loads {
        let t = Instant::now();
        let m = load_model_bytes_with(&bytes, &batch1)?;
        loads.push(t.elapsed());
        model = Some(m);
    }
    let Some(model) = model else {
        bail!("no load");
    };
    let shape: Vec<usize> = model
        .metadata()
        .input
        .shape
        .iter()
        .map(|&d| if d > 0 { d as usize } else { 1 })
        .collect();
    // A fixed pseudo-random input: all-zero inputs can take shortcuts real images do not.
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|i| ((i.wrapping_mul(2_654_435_761) % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let input = Tensor::from_shape(&shape, &values)?;
    for _ in 0..3 {
        model.run(input.clone())?;
    }
    let mut runs = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let x = input.clone();
        let t = Instant::now();
        model.run(x)?;
        runs.push(t.elapsed());
    }
    let (load_ms, latency_ms) = (median(loads), median(runs));
    if args.json {
        println!(
            "{}",
            serde_json::json!({"model": args.model, "file_bytes": bytes.len(), "input_shape": shape, "load_ms": load_ms, "latency_ms": latency_ms, "runs": args.runs, "loads": args.loads})
        );
        return Ok(());
    }
    let mut t = Table::new(&[
        "model",
        "file bytes",
        "load-to-ready (median)",
        "batch-1 latency (median)",
    ]);
    t.row(vec![
        args.model.display().to_string(),
        bytes.len().to_string(),
        format!("{load_ms:.1} ms"),
        format!("{latency_ms:.2} ms"),
    ]);
    print!("{}", t.render());
    Ok(())
}
