//! `nnzip bench MODEL.nnz|MODEL.onnx`: load-to-ready time, batch-1 latency and the weights'
//! bytes in memory in the core runtime, as medians, in a table (or JSON), on two paths in the
//! same run: the default one (pruned layers on nnzip's sparse kernel where its rule takes them,
//! `nnzip_core::kernels::sparse`) and every layer dense, with their ratios. Runs alternate
//! between the two so that a busy machine slows both alike. `tools/benches/latency_vs_ort.sh`
//! puts the default path next to onnxruntime's on the dense ONNX, same machine, same run.

use super::eval::load_model_bytes_with;
use crate::table::Table;
use anyhow::{Result, bail};
use clap::Args;
use nnzip_core::kernels::{KernelChoice, SparseKernel};
use nnzip_core::{LoadOptions, Model, Tensor};
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
    /// One JSON object on stdout: `load_ms`, `latency_ms` (medians), `weight_bytes`,
    /// `sparse_layers` of the default path, the same under `dense` for the all-dense path,
    /// `runs`.
    #[arg(long)]
    pub json: bool,
}

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

/// One way of loading the model, and what was measured of it.
struct Path {
    name: &'static str,
    options: LoadOptions,
    model: Option<Model>,
    loads: Vec<Duration>,
    runs: Vec<Duration>,
}

impl Path {
    fn new(name: &'static str, sparse: SparseKernel) -> Result<Path> {
        // As the phone library loads it: planned for single images.
        let mut kernels = KernelChoice::from_env()?;
        if sparse == SparseKernel::Dense {
            kernels.sparse = sparse;
        }
        Ok(Path {
            name,
            options: LoadOptions {
                batch: Some(1),
                kernels: Some(kernels),
                ..Default::default()
            },
            model: None,
            loads: Vec::new(),
            runs: Vec::new(),
        })
    }

    fn load(&mut self, bytes: &[u8]) -> Result<()> {
        let t = Instant::now();
        let m = load_model_bytes_with(bytes, &self.options)?;
        self.loads.push(t.elapsed());
        self.model = Some(m);
        Ok(())
    }

    fn run(&mut self, input: &Tensor, timed: bool) -> Result<()> {
        let Some(model) = &self.model else {
            bail!("no load");
        };
        let x = input.clone();
        let t = Instant::now();
        model.run(x)?;
        if timed {
            self.runs.push(t.elapsed());
        }
        Ok(())
    }

    /// Load and latency medians, weight bytes, sparse layers.
    fn summary(&self) -> (f64, f64, u64, usize) {
        let (bytes, layers) = self
            .model
            .as_ref()
            .map_or((0, 0), |m| (m.weight_bytes(), m.sparse_kernels().len()));
        (
            median(self.loads.clone()),
            median(self.runs.clone()),
            bytes,
            layers,
        )
    }
}

/// Runs `nnzip bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.runs == 0 || args.loads == 0 {
        bail!("--runs and --loads must be at least 1");
    }
    let bytes = crate::fsutil::read(&args.model)?;
    let mut paths = [
        Path::new("default (sparse where the rule says)", SparseKernel::Auto)?,
        Path::new("dense", SparseKernel::Dense)?,
    ];
    for _ in 0..args.loads {
        for p in paths.iter_mut() {
            p.load(&bytes)?;
        }
    }
    let Some(model) = &paths[0].model else {
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
    for i in 0..3 + args.runs {
        for p in paths.iter_mut() {
            p.run(&input, i >= 3)?;
        }
    }
    let [(load_ms, latency_ms, weight_bytes, sparse_layers), dense] =
        [paths[0].summary(), paths[1].summary()];
    let file_bytes = bytes.len();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": args.model, "file_bytes": file_bytes, "input_shape": shape,
                "load_ms": load_ms, "latency_ms": latency_ms,
                "weight_bytes": weight_bytes, "sparse_layers": sparse_layers,
                "dense": {"load_ms": dense.0, "latency_ms": dense.1, "weight_bytes": dense.2},
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
    for p in &paths {
        let (load, latency, weights, layers) = p.summary();
        t.row(vec![
            p.name.to_string(),
            layers.to_string(),
            weights.to_string(),
            format!("{:.2}", weights as f64 / file_bytes as f64),
            format!("{load:.1} ms"),
            // A sparse LeNet runs in microseconds: three decimals of a millisecond would show
            // 0.010 ms, two significant digits.
            if latency < 1.0 {
                format!("{:.2} µs", latency * 1e3)
            } else {
                format!("{latency:.3} ms")
            },
        ]);
    }
    println!("{} ({file_bytes} bytes)", args.model.display());
    print!("{}", t.render());
    println!(
        "default / dense: latency {:.3}× ({:.2}× faster), weight bytes {:.4}×",
        latency_ms / dense.1,
        dense.1 / latency_ms,
        weight_bytes as f64 / dense.2.max(1) as f64
    );
    Ok(())
}
