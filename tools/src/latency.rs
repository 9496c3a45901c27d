//! Load-to-ready time, batch-1 latency and the weights' bytes in memory in the core runtime, as
//! medians, on two paths in the same run: the default one (pruned layers on nnzip's sparse
//! kernel where its rule takes them, `nnzip_core::kernels::sparse`) and every layer dense. Runs
//! alternate between the two so that a busy machine slows both alike.

use crate::model_file::nnz_bytes;
use anyhow::{Result, bail};
use nnzip_core::kernels::{KernelChoice, SparseKernel};
use nnzip_core::{LoadOptions, Model, Tensor};
use std::time::{Duration, Instant};

/// What one path measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PathTimes {
    /// How the path loads the model.
    pub name: &'static str,
    /// Median load-to-ready time, milliseconds.
    pub load_ms: f64,
    /// Median batch-1 latency, milliseconds.
    pub latency_ms: f64,
    /// Every timed load, milliseconds, in order (for medians over several processes).
    pub load_samples_ms: Vec<f64>,
    /// Every timed run, milliseconds, in order.
    pub latency_samples_ms: Vec<f64>,
    /// The weights' bytes in memory.
    pub weight_bytes: u64,
    /// Layers on a sparse kernel: matrix products and k×k convolutions.
    pub sparse_layers: usize,
}

/// Both paths, measured on one input.
#[derive(Debug, Clone)]
pub struct LatencyReport {
    /// The input shape the model ran on (dynamic dimensions as 1).
    pub input_shape: Vec<usize>,
    /// The default path (sparse where the rule says).
    pub default: PathTimes,
    /// Every layer dense.
    pub dense: PathTimes,
}

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

fn milliseconds(times: &[Duration]) -> Vec<f64> {
    times.iter().map(|t| t.as_secs_f64() * 1e3).collect()
}

/// One way of loading the model, and what was measured of it.
struct LoadPath {
    name: &'static str,
    options: LoadOptions,
    model: Option<Model>,
    loads: Vec<Duration>,
    runs: Vec<Duration>,
}

impl LoadPath {
    fn new(name: &'static str, sparse: SparseKernel) -> Result<LoadPath> {
        // As the phone library loads it: planned for single images.
        let mut kernels = KernelChoice::from_env()?;
        if sparse == SparseKernel::Dense {
            kernels.sparse = sparse;
        }
        Ok(LoadPath {
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
        let m = Model::from_bytes_with(bytes, &self.options)?;
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
    fn summary(&self) -> PathTimes {
        let (weight_bytes, sparse_layers) = self.model.as_ref().map_or((0, 0), |m| {
            let sparse = m.sparse_kernels().len() + m.sparse_conv_kernels().len();
            (m.weight_bytes(), sparse)
        });
        PathTimes {
            name: self.name,
            load_ms: median(self.loads.clone()),
            latency_ms: median(self.runs.clone()),
            load_samples_ms: milliseconds(&self.loads),
            latency_samples_ms: milliseconds(&self.runs),
            weight_bytes,
            sparse_layers,
        }
    }
}

/// Loads `bytes` (a `.nnz` file, or ONNX packed losslessly in memory) `loads` times and runs it
/// `runs` times (after 3 warm-up runs) on each path, alternating. ONNX is packed once, before
/// the first timed load: load-to-ready is the time from a `.nnz` file's bytes to a runnable
/// model, as on the phone, not the packing.
pub fn measure_latency(bytes: &[u8], loads: usize, runs: usize) -> Result<LatencyReport> {
    if runs == 0 || loads == 0 {
        bail!("--runs and --loads must be at least 1");
    }
    let bytes = &*nnz_bytes(bytes)?;
    let mut paths = [
        LoadPath::new("default (sparse where the rule says)", SparseKernel::Auto)?,
        LoadPath::new("dense", SparseKernel::Dense)?,
    ];
    for _ in 0..loads {
        for p in paths.iter_mut() {
            p.load(bytes)?;
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
    for i in 0..3 + runs {
        for p in paths.iter_mut() {
            p.run(&input, i >= 3)?;
        }
    }
    let [default, dense] = paths.map(|p| p.summary());
    Ok(LatencyReport {
        input_shape: shape,
        default,
        dense,
    })
}
