//! Where the load-to-ready time of a `.nnz` file goes, pass by pass, as `Model::from_bytes`
//! runs them: verifying the file (CRC-32, metadata, graph inflate), parsing the graph's ONNX
//! protobuf, decoding the weights, translating ONNX into tract's typed model, tract's
//! declutter, nnzip's kernel rewrite, tract's optimise (codegen) and building the plan. Each
//! pass is timed in a fresh chain; the median of RUNS chains is printed, beside the median of
//! `Model::from_bytes` itself. The weights are decoded here on one thread; the loader decodes
//! large files on up to four (`total` shows the difference).
//!
//! `cargo run --release -p nnzip-core --example load_passes -- FILE.nnz [RUNS] [BATCH]`
//! (BATCH fixes the input's batch as `LoadOptions::batch` does; default: dynamic)

use nnzip_core::format::NnzReader;
use nnzip_core::graph::parse_model_proto;
use nnzip_core::kernels::{KernelChoice, use_nnzip_kernels};
use nnzip_core::onnx::typed_model_from_onnx;
use nnzip_core::{LoadOptions, Model};
use std::time::Instant;
use tract_onnx::prelude::*;

const PASSES: [&str; 8] = [
    "verify",
    "parse graph",
    "decode",
    "translate",
    "declutter",
    "nnzip rewrite",
    "optimise",
    "plan",
];

/// One load, pass by pass: the seconds each took.
fn one_chain(bytes: &[u8], batch: Option<usize>) -> TractResult<[f64; 8]> {
    let mut times = [0f64; 8];
    let mut t = Instant::now();
    let mut lap = |i: usize, times: &mut [f64; 8]| {
        times[i] = t.elapsed().as_secs_f64();
        t = Instant::now();
    };
    let reader = NnzReader::parse(bytes)?;
    lap(0, &mut times);
    let proto = parse_model_proto(reader.graph())?;
    lap(1, &mut times);
    let mut weights = vec![];
    for view in reader.tensors() {
        let shape: Vec<usize> = view.shape.iter().map(|&d| d as usize).collect();
        weights.push((
            view.name.clone(),
            Tensor::from_shape(&shape, &view.decode()?)?,
        ));
    }
    lap(2, &mut times);
    let mut model = typed_model_from_onnx(&proto, weights, batch)?;
    lap(3, &mut times);
    model.declutter()?;
    lap(4, &mut times);
    use_nnzip_kernels(&mut model, &KernelChoice::from_env()?)?;
    lap(5, &mut times);
    model.optimize()?;
    lap(6, &mut times);
    let plan = model.into_runnable()?;
    lap(7, &mut times);
    drop(plan);
    Ok(times)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> TractResult<()> {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: load_passes FILE.nnz [RUNS] [BATCH]");
        std::process::exit(2);
    };
    let runs: usize = args.next().map_or(Ok(15), |s| s.parse())?;
    let batch: Option<usize> = args.next().map(|s| s.parse()).transpose()?;
    let bytes = std::fs::read(&path)?;
    let chains = (0..runs)
        .map(|_| one_chain(&bytes, batch))
        .collect::<TractResult<Vec<_>>>()?;
    let options = LoadOptions {
        batch,
        ..LoadOptions::default()
    };
    let totals: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            Model::from_bytes_with(&bytes, &options).map(|_| t.elapsed().as_secs_f64())
        })
        .collect::<Result<_, _>>()?;
    println!("{path}: median of {runs} loads, batch {batch:?}");
    println!("{:<16} {:>9} {:>6}", "pass", "ms", "%");
    let medians: Vec<f64> = (0..PASSES.len())
        .map(|i| median(chains.iter().map(|c| c[i]).collect()))
        .collect();
    let sum: f64 = medians.iter().sum();
    for (name, m) in PASSES.iter().zip(&medians) {
        println!("{name:<16} {:>9.2} {:>5.1}%", m * 1e3, 100.0 * m / sum);
    }
    println!("{:<16} {:>9.2}", "sum of passes", sum * 1e3);
    println!("{:<16} {:>9.2}", "Model::from_bytes", median(totals) * 1e3);
    Ok(())
}
