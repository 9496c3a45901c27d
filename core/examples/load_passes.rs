//! Where the load-to-ready time of a `.nnz` file goes, pass by pass, as `Model::from_bytes`
//! runs them: verifying the file (CRC-32, metadata, graph inflate), parsing the graph's ONNX
//! protobuf, decoding the weights, translating ONNX into tract's typed model, nnzip's
//! pointwise convolutions taken before the declutter (the loader's chains only), tract's
//! declutter, nnzip's kernel rewrite, tract's optimise (codegen) and building the plan. Each
//! pass is timed in a fresh chain; the median of RUNS chains is printed, beside the median of
//! `Model::from_bytes` itself. The weights are decoded here on one thread; the loader decodes
//! large files on up to four where it may use more than one core.
//!
//! Two declutters are timed, their chains alternated (each in turn first) so that a busy
//! machine slows both alike: the loader's (`nnzip_core::declutter`: tract's passes less its
//! axis-change pass unless an operator asks for a layout change) and tract's own `declutter()`
//! (every pass, as loads ran before). Below the table, each declutter is broken down by tract's
//! passes: the time each spent looking for patches, applying them, and how many it applied,
//! over all rounds of one load (medians over the loads); what is left is tract's compaction
//! between passes. Then each pass's patches by the operator of the node they started from
//! (the last word of tract's patch context), with what they cost, search and apply together.
//!
//! `cargo run --release -p nnzip-core --example load_passes -- FILE.nnz [RUNS] [BATCH]`
//! (BATCH fixes the input's batch as `LoadOptions::batch` does; default: dynamic)

use nnzip_core::declutter::{declutter_for_load, suggests_layout_change};
use nnzip_core::format::NnzReader;
use nnzip_core::graph::parse_model_proto;
use nnzip_core::kernels::{KernelChoice, use_nnzip_kernels, use_pointwise_kernel_before_declutter};
use nnzip_core::onnx::typed_model_from_onnx;
use nnzip_core::{LoadOptions, Model};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tract_core::internal::TypedModelPatch;
use tract_core::optim::{Optimizer, OptimizerSession, TypedPass};
use tract_onnx::prelude::*;

const PASSES: [&str; 9] = [
    "verify",
    "parse graph",
    "decode",
    "translate",
    "pointwise early",
    "declutter",
    "nnzip rewrite",
    "optimise",
    "plan",
];

/// Which declutter a chain runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declutter {
    /// The loader's (`nnzip_core::declutter`).
    Loader,
    /// tract's own, every pass.
    Tract,
}

/// One load, pass by pass: the seconds each took, and the costs of the declutter's passes.
type Chain = ([f64; 9], Vec<PassCost>);

/// One load, pass by pass, with `declutter`.
fn one_chain(bytes: &[u8], batch: Option<usize>, declutter: Declutter) -> TractResult<Chain> {
    let mut times = [0f64; 9];
    let mut t = Instant::now();
    let mut lap = |i: usize, times: &mut [f64; 9]| {
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
    let choice = KernelChoice::from_env()?;
    // As the loader: the pointwise convolutions before its declutter where that runs without
    // tract's axis-change pass; tract's whole declutter as loads ran before.
    if declutter == Declutter::Loader && !suggests_layout_change(&model)? {
        use_pointwise_kernel_before_declutter(&mut model, &choice)?;
    }
    lap(4, &mut times);
    let optimizer = match declutter {
        Declutter::Loader => declutter_for_load(&model)?,
        Declutter::Tract => Optimizer::declutter(),
    };
    timed(optimizer).optimize(&mut model)?;
    lap(5, &mut times);
    use_nnzip_kernels(&mut model, &choice)?;
    lap(6, &mut times);
    model.optimize()?;
    lap(7, &mut times);
    let plan = model.into_runnable()?;
    lap(8, &mut times);
    drop(plan);
    let costs = DECLUTTER_COSTS.with(|c| c.lock().expect("costs lock").clone());
    Ok((times, costs))
}

/// What one of tract's declutter passes cost in one load.
#[derive(Debug, Clone, Default)]
struct PassCost {
    name: String,
    searching: Duration,
    applying: Duration,
    patches: usize,
    /// Patches and the time they took (search and apply), by the operator of the node they
    /// started from (the last word of tract's patch context).
    by_op: std::collections::BTreeMap<String, (usize, Duration)>,
}

/// One of tract's declutter passes, timed: `next` is the search for a patch; the time from a
/// patch returned to the next call is the session applying it.
#[derive(Debug, Clone)]
struct TimedPass {
    inner: Box<dyn TypedPass>,
    index: usize,
    costs: Arc<Mutex<Vec<PassCost>>>,
    returned_patch_at: Option<Instant>,
    /// The operator the patch being applied started from, and its search time.
    applying_op: Option<(String, Duration)>,
}

impl TimedPass {
    fn charge(&self, f: impl FnOnce(&mut PassCost)) {
        f(&mut self.costs.lock().expect("costs lock")[self.index]);
    }
}

impl TypedPass for TimedPass {
    fn reset(&mut self) -> TractResult<()> {
        self.returned_patch_at = None;
        self.inner.reset()
    }

    fn next(
        &mut self,
        session: &mut OptimizerSession,
        model: &TypedModel,
    ) -> TractResult<Option<TypedModelPatch>> {
        if let Some(at) = self.returned_patch_at.take() {
            let applied = at.elapsed();
            let op = self.applying_op.take();
            self.charge(|c| {
                c.applying += applied;
                if let Some((op, searched)) = op {
                    let entry = c.by_op.entry(op).or_default();
                    entry.0 += 1;
                    entry.1 += searched + applied;
                }
            });
        }
        let t = Instant::now();
        let patch = self.inner.next(session, model)?;
        let searched = t.elapsed();
        self.charge(|c| {
            c.searching += searched;
            c.patches += patch.is_some() as usize;
        });
        if let Some(p) = &patch {
            let op = p
                .context
                .last()
                .and_then(|c| c.split_whitespace().last())
                .unwrap_or("?")
                .to_string();
            self.applying_op = Some((op, searched));
            self.returned_patch_at = Some(Instant::now());
        }
        Ok(patch)
    }

    fn run_direct(&mut self, model: &mut TypedModel) -> TractResult<bool> {
        let t = Instant::now();
        let changed = self.inner.run_direct(model)?;
        let elapsed = t.elapsed();
        self.charge(|c| c.applying += elapsed);
        Ok(changed)
    }
}

thread_local! {
    /// The costs of the declutter passes of the load running on this thread.
    static DECLUTTER_COSTS: Arc<Mutex<Vec<PassCost>>> = Arc::default();
}

/// `declutter` with each pass timed into [`DECLUTTER_COSTS`] (reset here).
fn timed(declutter: Optimizer) -> Optimizer {
    let costs = DECLUTTER_COSTS.with(Arc::clone);
    *costs.lock().expect("costs lock") = declutter
        .passes
        .iter()
        .map(|p| PassCost {
            name: format!("{p:?}"),
            ..PassCost::default()
        })
        .collect();
    Optimizer {
        passes: declutter
            .passes
            .into_iter()
            .enumerate()
            .map(|(index, inner)| {
                Box::new(TimedPass {
                    inner,
                    index,
                    costs: costs.clone(),
                    returned_patch_at: None,
                    applying_op: None,
                }) as Box<dyn TypedPass>
            })
            .collect(),
        steps: declutter.steps,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The declutter's passes, medians over the loads, beside the median declutter.
fn print_declutter_passes(title: &str, chains: &[Chain]) {
    println!("\n{title}: declutter by tract's pass (medians over the loads)");
    println!(
        "{:<24} {:>9} {:>9} {:>8}",
        "pass", "search ms", "apply ms", "patches"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut sum = 0.0;
    for (i, cost) in chains[0].1.iter().enumerate() {
        let search = median(chains.iter().map(|(_, c)| ms(c[i].searching)).collect());
        let apply = median(chains.iter().map(|(_, c)| ms(c[i].applying)).collect());
        sum += search + apply;
        let name: String = cost.name.chars().take(24).collect();
        println!("{name:<24} {search:>9.2} {apply:>9.2} {:>8}", cost.patches);
    }
    let declutter = median(chains.iter().map(|(t, _)| t[5] * 1e3).collect());
    println!("{:<24} {:>9.2}", "between passes", declutter - sum);
    // The patches of the first load by the operator they started from (every load patches
    // the same nodes); times are the medians over the loads.
    println!("{title}: patches by the operator they started from (pass: op, patches, ms)");
    for (i, cost) in chains[0].1.iter().enumerate() {
        for (op, (count, _)) in &cost.by_op {
            let ms = median(
                chains
                    .iter()
                    .map(|(_, c)| {
                        c[i].by_op
                            .get(op)
                            .map_or(0.0, |(_, d)| d.as_secs_f64() * 1e3)
                    })
                    .collect(),
            );
            let name: String = cost.name.chars().take(24).collect();
            println!("  {name:<24} {op:<28} {count:>5} {ms:>8.2}");
        }
    }
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
    if std::backtrace::Backtrace::capture().status() == std::backtrace::BacktraceStatus::Captured {
        eprintln!(
            "warning: RUST_BACKTRACE / RUST_LIB_BACKTRACE make every error tract creates while \
             decluttering capture a backtrace: the declutter times slower than in the app"
        );
    }
    let options = LoadOptions {
        batch,
        ..LoadOptions::default()
    };
    let (mut loader, mut tract, mut totals) = (vec![], vec![], vec![]);
    for i in 0..runs {
        // Which goes first alternates too, so that neither always runs on memory the other freed.
        if i % 2 == 0 {
            loader.push(one_chain(&bytes, batch, Declutter::Loader)?);
        }
        tract.push(one_chain(&bytes, batch, Declutter::Tract)?);
        if i % 2 == 1 {
            loader.push(one_chain(&bytes, batch, Declutter::Loader)?);
        }
        let t = Instant::now();
        Model::from_bytes_with(&bytes, &options)?;
        totals.push(t.elapsed().as_secs_f64());
    }
    println!("{path}: median of {runs} loads, batch {batch:?}, alternated");
    println!(
        "{:<18} {:>13} {:>6} {:>13}",
        "pass", "loader ms", "%", "tract's ms"
    );
    let medians = |chains: &[Chain]| -> Vec<f64> {
        (0..PASSES.len())
            .map(|i| median(chains.iter().map(|(c, _)| c[i]).collect()))
            .collect()
    };
    let (ours, theirs) = (medians(&loader), medians(&tract));
    let sum: f64 = ours.iter().sum();
    for (i, name) in PASSES.iter().enumerate() {
        println!(
            "{name:<18} {:>13.2} {:>5.1}% {:>13.2}",
            ours[i] * 1e3,
            100.0 * ours[i] / sum,
            theirs[i] * 1e3
        );
    }
    println!(
        "{:<18} {:>13.2} {:>6} {:>13.2}",
        "sum of passes",
        sum * 1e3,
        "",
        theirs.iter().sum::<f64>() * 1e3
    );
    println!("{:<18} {:>13.2}", "Model::from_bytes", median(totals) * 1e3);
    print_declutter_passes("loader", &loader);
    print_declutter_passes("tract's declutter()", &tract);
    Ok(())
}
