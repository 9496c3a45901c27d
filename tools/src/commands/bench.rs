//! `nnzip bench MODEL.nnz|MODEL.onnx`: [`crate::latency`]'s two paths (default and all-dense)
//! in a table (or JSON), with their ratios. `tools/benches/latency_vs_ort.sh`
//! puts the default path next to onnxruntime's on the dense ONNX, same machine, same run.

use crate::latency::measure_latency;
use crate::table::Table;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

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
    /// One JSON object on stdout: `load_ms`, `latency_ms` (medians), every sample
    /// (`load_samples_ms`, `latency_samples_ms`), `weight_bytes`, `sparse_layers` of the default
    /// path, the medians and weight bytes under `dense` for the all-dense path, `runs`.
    #[arg(long)]
    pub json: bool,
}

/// Runs `nnzip bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let bytes = crate::fsutil::read(&args.model)?;
    if std::backtrace::Backtrace::capture().status() == std::backtrace::BacktraceStatus::Captured {
        eprintln!(
            "warning: RUST_BACKTRACE / RUST_LIB_BACKTRACE make every error tract creates while \
             decluttering capture a backtrace: loads time slower than the app's"
        );
    }
    let r = measure_latency(&bytes, args.loads, args.runs)?;
    let file_bytes = bytes.len();
    let (d, dense) = (&r.default, &r.dense);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": args.model, "file_bytes": file_bytes, "input_shape": r.input_shape,
                "load_ms": d.load_ms, "latency_ms": d.latency_ms,
                "load_samples_ms": d.load_samples_ms, "latency_samples_ms": d.latency_samples_ms,
                "weight_bytes": d.weight_bytes, "sparse_layers": d.sparse_layers,
                "dense": {"load_ms": dense.load_ms, "latency_ms": dense.latency_ms, "weight_bytes": dense.weight_bytes},
                "runs": args.runs, "loads": args.loads,
            })
        );
        return Ok(());
    }
    let mut t = Table::new(&[
        "path",
        "sparse layers",
        "weight bytes in memory",
        "× file",
        "load-to-ready (median)",
        "batch-1 latency (median)",
    ]);
    for p in [d, dense] {
        t.row(vec![
            p.name.to_string(),
            p.sparse_layers.to_string(),
            p.weight_bytes.to_string(),
            format!("{:.2}", p.weight_bytes as f64 / file_bytes as f64),
            format!("{:.1} ms", p.load_ms),
            // A sparse LeNet runs in microseconds: three decimals of a millisecond would show
            // 0.010 ms, two significant digits.
            if p.latency_ms < 1.0 {
                format!("{:.2} µs", p.latency_ms * 1e3)
            } else {
                format!("{:.3} ms", p.latency_ms)
            },
        ]);
    }
    println!("{} ({file_bytes} bytes)", args.model.display());
    print!("{}", t.render());
    println!(
        "default / dense: latency {:.3}× ({:.2}× faster), weight bytes {:.4}×",
        d.latency_ms / dense.latency_ms,
        dense.latency_ms / d.latency_ms,
        d.weight_bytes as f64 / dense.weight_bytes.max(1) as f64
    );
    Ok(())
}
