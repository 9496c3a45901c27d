//! Core benchmarks, side by side in one run:
//! - Huffman decode throughput of a `shared-dense` tensor (symbols/s, one thread), and the range
//!   decoder's on a `shared-sparse-ac` tensor (entries/s);
//! - load-to-ready: `.nnz` → runnable plan vs dense ONNX → runnable plan with tract, in a loop
//!   (criterion, and alternating medians) and as the first load of a fresh process (the phone's
//!   case: one load per app start), for the reference models packed losslessly (`raw`) and for
//!   the app's compressed model (`out/efficientnet_lite0.nnz`, from
//!   `scripts/compress-efficientnet.sh`; skipped when absent) against its own weights as a dense
//!   ONNX;
//! - batch-1 inference latency of the decoded model (loaded for batch 1, as the bindings do) vs
//!   tract on the ONNX given a batch-1 input fact.
//!
//! `cargo bench -p nnzip-core` (reference models from `../shared/models/` beside the project).
//! A ratio table is printed at the end.

use criterion::{Criterion, Throughput};
use nnzip_core::Model;
use nnzip_core::format::NnzReader;
use nnzip_core::format::decode::decode_payload;
use nnzip_core::format::encode::encode_tensor;
use nnzip_core::format::{NnzWriter, TensorData, TensorRecord};
use nnzip_core::graph::{Weight, merge_onnx, split_onnx};
use nnzip_core::metadata::Metadata;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared")
        .join(rel)
}

/// A skewed 5-bit symbol stream like a layer's codebook indices (a rounded Gaussian).
fn skewed_indices(n: usize) -> Vec<u16> {
    let mut s = 0x1234_5678_9abc_def1u64;
    (0..n)
        .map(|_| {
            let mut acc = 0i64;
            for _ in 0..4 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                acc += (s >> 60) as i64;
            }
            (acc.clamp(0, 31)) as u16
        })
        .collect()
}

fn pack(onnx: &[u8]) -> Vec<u8> {
    let split = split_onnx(onnx).expect("split");
    let metadata = Metadata {
        input: split.input.clone(),
        ..Default::default()
    };
    let mut w = NnzWriter::new(metadata, split.graph);
    for wt in split.weights {
        w.push(TensorRecord {
            row_scales: None,
            name: wt.name,
            shape: wt.shape,
            data: TensorData::RawF32(wt.values),
        })
        .expect("push");
    }
    w.to_bytes().expect("encode")
}

/// The dense ONNX of a `.nnz` file's model: its graph with every tensor decoded back in.
fn dense_onnx(nnz: &[u8]) -> Vec<u8> {
    let reader = NnzReader::parse(nnz).expect("a valid .nnz");
    let weights: Vec<Weight> = reader
        .tensors()
        .iter()
        .map(|t| Weight {
            name: t.name.clone(),
            shape: t.shape.clone(),
            values: t.decode().expect("decodes"),
        })
        .collect();
    merge_onnx(reader.graph(), weights).expect("merge")
}

fn tract_load(onnx: &[u8]) -> Arc<TypedSimplePlan> {
    tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(onnx))
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap()
}

fn time(f: &mut impl FnMut()) -> Duration {
    let s = Instant::now();
    f();
    s.elapsed()
}

fn middle(mut t: Vec<Duration>) -> Duration {
    t.sort();
    t[t.len() / 2]
}

fn median(mut f: impl FnMut(), iters: usize) -> Duration {
    middle((0..iters).map(|_| time(&mut f)).collect())
}

/// Medians of `iters` runs of `a` and of `b`, run alternately.
fn paired_medians(mut a: impl FnMut(), mut b: impl FnMut(), iters: usize) -> (Duration, Duration) {
    let (ta, tb) = (0..iters).map(|_| (time(&mut a), time(&mut b))).unzip();
    (middle(ta), middle(tb))
}

/// `a vs b = a/b×`, the times in milliseconds with `decimals` places.
fn versus(a: Duration, b: Duration, decimals: usize) -> String {
    format!(
        "{:.d$} ms vs {:.d$} ms = {:.2}×",
        a.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3,
        a.as_secs_f64() / b.as_secs_f64(),
        d = decimals
    )
}

/// The environment variable that makes this binary a child of [`fresh_process_load`].
const CHILD_ENV: &str = "NNZIP_BENCH_LOAD_ONCE";

/// In a child process: loads the file named by [`CHILD_ENV`] (`nnz:PATH` or `onnx:PATH`) once,
/// prints the nanoseconds it took, and exits.
fn load_once_if_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (kind, path) = spec.split_once(':').expect("KIND:PATH");
    let bytes = std::fs::read(path).expect("model file");
    let t = Instant::now();
    match kind {
        "nnz" => drop(black_box(Model::from_bytes(&bytes).unwrap())),
        _ => drop(black_box(tract_load(&bytes))),
    }
    println!("{}", t.elapsed().as_nanos());
    std::process::exit(0);
}

/// Load-to-ready as a phone sees it: the first load in a fresh process (its allocator, caches
/// and page tables cold), measured in a child process per load, `.nnz` and ONNX alternately.
/// A loop of loads in one process also measures how the allocator reuses the previous load's
/// memory, which differs between the two paths by luck of sizes (glibc returns freed memory to
/// the kernel when the heap's top crosses a threshold set by earlier frees).
fn fresh_process_load(
    nnz: &std::path::Path,
    onnx: &std::path::Path,
    pairs: usize,
) -> (Duration, Duration) {
    let exe = std::env::current_exe().expect("bench binary");
    let once = |kind: &str, path: &std::path::Path| -> Duration {
        let out = std::process::Command::new(&exe)
            .env(CHILD_ENV, format!("{kind}:{}", path.display()))
            .output()
            .expect("child load");
        let text = String::from_utf8_lossy(&out.stdout);
        Duration::from_nanos(text.trim().parse().expect("child prints nanoseconds"))
    };
    let (ta, tb) = (0..pairs)
        .map(|_| (once("nnz", nnz), once("onnx", onnx)))
        .unzip();
    (middle(ta), middle(tb))
}

/// Encodes `data` as a 1-D tensor, benchmarks decoding it (criterion group `group`) and returns
/// the median rate in coded entries per second: every element for dense encodings, the kept
/// (non-zero) ones for sparse ones.
fn decode_throughput(c: &mut Criterion, group: &str, what: &str, data: TensorData) -> f64 {
    let encoding = data.encoding();
    let n = data.len();
    let entries = match &data {
        TensorData::SharedSparse { indices, .. } | TensorData::SharedSparseAc { indices, .. } => {
            indices.iter().filter(|&&s| s != 0).count()
        }
        _ => n,
    };
    let rec = TensorRecord {
        row_scales: None,
        name: "w".into(),
        shape: vec![n as u64],
        data,
    };
    let (payload, _) = encode_tensor(&rec).expect("encode");
    let mut out = vec![0f32; n];
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(entries as u64));
    g.bench_function(format!("decode {what}"), |b| {
        b.iter(|| decode_payload("w", encoding, black_box(&payload), &mut out).unwrap())
    });
    g.finish();
    let t = median(
        || decode_payload("w", encoding, &payload, &mut out).unwrap(),
        21,
    );
    entries as f64 / t.as_secs_f64()
}

fn main() {
    load_once_if_child();
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    let mut summary: Vec<(String, String)> = Vec::new();

    // Huffman decode throughput: a 1M-weight tensor, one 5-bit codebook index per weight.
    let n = 1 << 20;
    let codebook: Vec<f32> = (0..32).map(|i| i as f32 * 0.01).collect();
    let dense = TensorData::SharedDense {
        codebook: codebook.clone(),
        indices: skewed_indices(n),
        index_bits: 5,
    };
    let rate = decode_throughput(&mut c, "huffman", "shared-dense 1M symbols, 5 bits", dense);
    summary.push((
        "Huffman decode (shared-dense, 5-bit)".into(),
        format!("{:.0} M symbols/s", rate / 1e6),
    ));

    // Range decoder (`shared-sparse-ac`, what compressed files mostly hold): a 1M-weight tensor
    // with a third of its weights kept, 5-bit indices.
    let sparse: Vec<u16> = skewed_indices(n)
        .into_iter()
        .enumerate()
        .map(|(i, s)| if i % 3 == 0 { s.max(1) } else { 0 })
        .collect();
    let ac = TensorData::SharedSparseAc {
        codebook,
        indices: sparse,
        index_bits: 5,
    };
    let rate = decode_throughput(
        &mut c,
        "range",
        "shared-sparse-ac 1M weights, 33% kept, 5 bits",
        ac,
    );
    summary.push((
        "Range decode (shared-sparse-ac, 5-bit, 33% kept)".into(),
        format!("{:.0} M entries/s", rate / 1e6),
    ));

    for (file, shape) in [
        ("lenet5", vec![1usize, 1, 28, 28]),
        ("efficientnet_lite0", vec![1, 3, 224, 224]),
    ] {
        let path = shared(&format!("models/{file}.onnx"));
        let Ok(onnx) = std::fs::read(&path) else {
            eprintln!("skipping {file}: {} not found", path.display());
            continue;
        };
        let nnz = pack(&onnx);
        let mut g = c.benchmark_group(format!("load/{file}"));
        g.bench_function("nnz → ready", |b| {
            b.iter(|| Model::from_bytes(black_box(&nnz)).unwrap())
        });
        g.bench_function("onnx → ready (tract)", |b| {
            b.iter(|| tract_load(black_box(&onnx)))
        });
        g.finish();
        // Alternating the two loads, so that a busy neighbour on the machine slows both alike.
        let (t_nnz, t_onnx) = paired_medians(
            || drop(Model::from_bytes(&nnz).unwrap()),
            || drop(tract_load(&onnx)),
            15,
        );
        summary.push((
            format!("{file}: load-to-ready .nnz vs ONNX, in a loop"),
            versus(t_nnz, t_onnx, 1),
        ));

        let nnz_path = std::env::temp_dir().join(format!("nnzip-bench-{file}.nnz"));
        std::fs::write(&nnz_path, &nnz).unwrap();
        let (t_nnz, t_onnx) = fresh_process_load(&nnz_path, &path, 25);
        let _ = std::fs::remove_file(&nnz_path);
        summary.push((
            format!("{file}: load-to-ready, fresh process"),
            versus(t_nnz, t_onnx, 1),
        ));

        // As on a phone (the bindings): a plan for batch 1.
        let batch1 = nnzip_core::LoadOptions {
            batch: Some(1),
            ..Default::default()
        };
        let model = Model::from_bytes_with(&nnz, &batch1).unwrap();
        let plan = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(&onnx))
            .unwrap()
            .with_input_fact(0, f32::fact(&shape).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let input = Tensor::zero::<f32>(&shape).unwrap();
        let mut g = c.benchmark_group(format!("infer/{file}"));
        g.bench_function("nnzip-core batch 1", |b| {
            b.iter(|| model.run(input.clone()).unwrap())
        });
        g.bench_function("tract on ONNX batch 1", |b| {
            b.iter(|| plan.run(tvec!(input.clone().into_tvalue())).unwrap())
        });
        g.finish();
        let (t_m, t_p) = paired_medians(
            || drop(model.run(input.clone()).unwrap()),
            || drop(plan.run(tvec!(input.clone().into_tvalue())).unwrap()),
            31,
        );
        summary.push((
            format!("{file}: batch-1 latency nnzip vs tract-on-ONNX"),
            versus(t_m, t_p, 3),
        ));
    }

    // The file a phone actually loads: the compressed model, against tract loading the same
    // weights as a dense ONNX (what shipping the model uncompressed would mean).
    let app = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../out/efficientnet_lite0.nnz");
    match std::fs::read(&app) {
        Ok(nnz) => {
            let dense = dense_onnx(&nnz);
            let dir = std::env::temp_dir();
            let (nnz_path, onnx_path) = (
                dir.join("nnzip-bench-app.nnz"),
                dir.join("nnzip-bench-app-dense.onnx"),
            );
            std::fs::write(&nnz_path, &nnz).unwrap();
            std::fs::write(&onnx_path, &dense).unwrap();
            let (t_nnz, t_onnx) = fresh_process_load(&nnz_path, &onnx_path, 31);
            let _ = std::fs::remove_file(&nnz_path);
            let _ = std::fs::remove_file(&onnx_path);
            summary.push((
                format!(
                    "app model ({:.2} MB .nnz): load, fresh process",
                    nnz.len() as f64 / 1e6
                ),
                versus(t_nnz, t_onnx, 1),
            ));
        }
        Err(_) => eprintln!(
            "skipping the app model: {} not found (bash scripts/compress-efficientnet.sh makes it)",
            app.display()
        ),
    }

    println!("\n{:<50} result", "benchmark (medians)");
    println!("{}", "-".repeat(90));
    for (k, v) in summary {
        println!("{k:<50} {v}");
    }
}
