//! Where batch-1 inference time goes, per kind of operator and per node: tract's optimised plan
//! of an ONNX model (the plan the core builds from its `.nnz` is node for node the same), each
//! node timed around its evaluation, summed over the runs. One thread (tract's default).
//! The convolutions run on nnzip's kernels as the core puts them in place
//! (`nnzip_core::kernels`), unless the environment sends them back to tract's own path:
//! `NNZIP_DEPTHWISE=padded|portable|tract`, `NNZIP_POINTWISE=tiled|portable|tract`,
//! `NNZIP_STEM_CONV=tiled|portable|direct|tract`; an expansion and the depthwise convolution
//! after it run as one operator (named after the depthwise node) unless
//! `NNZIP_EXPAND_DEPTHWISE=separate`.
//!
//! A `.nnz` file is profiled as the core loads it (its own ONNX reader, batch-norm folding and
//! declutter), an ONNX model through tract-onnx's reader and declutter.
//!
//! `cargo run --release -p nnzip-core --example op_profile -- MODEL.onnx|FILE.nnz [RUNS] [TOP] [SHAPE]`
//! (SHAPE defaults to 1,3,224,224; `taskset -c 0` to pin it)

use nnzip_core::kernels::{KernelChoice, use_nnzip_kernels};
use nnzip_core::{LoadOptions, Model};
use std::collections::HashMap;
use std::time::Instant;
use tract_onnx::prelude::*;

const USAGE: &str =
    "usage: op_profile MODEL.onnx|FILE.nnz [RUNS] [TOP] [SHAPE, default 1,3,224,224]
environment: NNZIP_DEPTHWISE=padded|portable|tract (default padded)
             NNZIP_POINTWISE=tiled|portable|tract (default tiled)
             NNZIP_STEM_CONV=tiled|portable|direct|tract (default tiled)
             NNZIP_EXPAND_DEPTHWISE=fused|always|separate (default fused)";

/// tract's optimised plan of the ONNX model at `path` for input `shape`, with nnzip's kernels.
fn onnx_plan(path: &str, shape: &[usize]) -> TractResult<Arc<TypedSimplePlan>> {
    let mut model = tract_onnx::onnx().model_for_path(path)?;
    model.set_input_fact(0, f32::fact(shape).into())?;
    let kernels = KernelChoice::from_env()?;
    let mut model = model.into_typed()?.into_decluttered()?;
    use_nnzip_kernels(&mut model, &kernels)?;
    model.optimize()?;
    println!("{kernels:?}");
    model.into_runnable()
}

fn main() -> TractResult<()> {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let runs: usize = args.next().map_or(Ok(100), |s| s.parse())?;
    let top: usize = args.next().map_or(Ok(25), |s| s.parse())?;
    let shape: Vec<usize> = args
        .next()
        .unwrap_or_else(|| "1,3,224,224".into())
        .split(',')
        .map(|d| d.parse())
        .collect::<Result<_, _>>()?;
    let plan = if path.ends_with(".nnz") {
        // The plan the core loads, batch 1 (its own reader, folds and declutter).
        let options = LoadOptions {
            batch: Some(shape[0]),
            ..LoadOptions::default()
        };
        let model = Model::from_bytes_with(&std::fs::read(&path)?, &options)?;
        println!("{:?}", KernelChoice::from_env()?);
        model.plan().clone()
    } else {
        onnx_plan(&path, &shape)?
    };
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n as u64)
        .map(|i| ((i.wrapping_mul(2_654_435_761) % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let input = Tensor::from_shape(&shape, &values)?;
    let mut state = tract_onnx::tract_hir::tract_core::plan::SimpleState::new(&plan)?;
    let mut per_node: HashMap<usize, f64> = HashMap::new();
    let mut total = 0f64;
    for run in 0..runs + 3 {
        let t = Instant::now();
        let mut times: Vec<(usize, f64)> = vec![];
        state.run_plan_with_eval(
            tvec!(input.clone().into_tvalue()),
            |ctx, s, node, inputs| {
                let t = Instant::now();
                let r = tract_onnx::tract_hir::tract_core::plan::eval(ctx, s, node, inputs);
                times.push((node.id, t.elapsed().as_secs_f64()));
                r
            },
        )?;
        if run >= 3 {
            total += t.elapsed().as_secs_f64();
            for (id, dt) in times {
                *per_node.entry(id).or_default() += dt;
            }
        }
    }
    let ms = |s: f64| s * 1e3 / runs as f64;
    let model = plan.model();
    let mut per_kind: HashMap<String, (f64, usize)> = HashMap::new();
    for (&id, &t) in &per_node {
        let e = per_kind
            .entry(model.node(id).op().name().to_string())
            .or_default();
        e.0 += t;
        e.1 += 1;
    }
    let mut kinds: Vec<_> = per_kind.into_iter().collect();
    kinds.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    println!(
        "{path}: {:.2} ms per run (mean of {runs}), nodes {:.2} ms",
        ms(total),
        ms(per_node.values().sum())
    );
    println!("{:<28} {:>6} {:>9} {:>6}", "op", "nodes", "ms/run", "%");
    for (k, (t, c)) in &kinds {
        println!("{k:<28} {c:>6} {:>9.3} {:>5.1}%", ms(*t), 100.0 * t / total);
    }
    let mut nodes: Vec<_> = per_node.into_iter().collect();
    nodes.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("\ntop {top} nodes");
    for (id, t) in nodes.into_iter().take(top) {
        let node = model.node(id);
        let facts = model.node_input_facts(id)?;
        let info = node.op().info()?.join(" ");
        println!(
            "{:>9.3} µs  {:<16} {:<40} in {:?}  {}",
            1e3 * ms(t),
            node.op().name(),
            node.name,
            facts.first().map(|f| format!("{:?}", f.shape)),
            info.chars().take(400).collect::<String>()
        );
    }
    Ok(())
}
