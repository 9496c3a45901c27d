//! The measurements behind the sparse-or-dense rule (`nnzip_core::kernels::sparse`): one pruned
//! layer, weights shared on a 16-value codebook, timed at batch 1 on nnzip's sparse kernel and
//! on tract's dense product, alternating, same process, for several shapes and densities.
//! Fully connected layers (`Gemm`, LeNet's and EfficientNet-Lite0's classifier shapes), 1×1
//! convolutions (EfficientNet-Lite0's expansion and projection shapes) and k×k convolutions
//! (LeNet-5's, `nnzip_core::kernels::sparse_conv`).
//!
//! `cargo run --release -p nnzip-core --example sparse_rule [RUNS] [LAYER NAME PART]`, or with
//! `.nnz` files after RUNS: each whole model on the default path against every layer dense
//! (and with `separate` among them, against its sparse layers unfused too).

use nnzip_core::format::{NnzWriter, TensorData, TensorRecord};
use nnzip_core::kernels::{KernelChoice, SparseChains, SparseKernel};
use nnzip_core::metadata::{InputSpec, Metadata};
use nnzip_core::onnx::proto as pb;
use nnzip_core::{LoadOptions, Model, Tensor};
use prost::Message;
use std::time::{Duration, Instant};

/// A `Gemm` (plane = 1) or `Conv` (`taps` square, padded by `pad` on each side) on a
/// `plane`-pixel square of `k` channels, `n` outputs, `density` of the weights kept.
fn layer(n: usize, k: usize, plane: usize, (taps, pad): (usize, usize), density: f64) -> Vec<u8> {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let weights = n * k * taps * taps;
    let indices: Vec<u16> = (0..weights)
        .map(|_| {
            let r = next();
            if (r >> 11) as f64 / (1u64 << 53) as f64 <= density {
                1 + (r % 15) as u16
            } else {
                0
            }
        })
        .collect();
    // Entry 0 is the pruned weights' zero, as the encoder requires of a sparse tensor.
    let codebook: Vec<f32> = std::iter::once(0.0)
        .chain((1..16).map(|i| (i as f32 - 7.5) / 16.0))
        .collect();
    let side = (plane as f64).sqrt() as i64;
    let (op, input, shape, attribute) = if plane == 1 {
        let transb = pb::AttributeProto {
            name: "transB".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: 1,
            ..Default::default()
        };
        (
            "Gemm",
            vec![1, k as i64],
            vec![n as u64, k as u64],
            vec![transb],
        )
    } else {
        let shape = vec![n as u64, k as u64, taps as u64, taps as u64];
        let pads = pb::AttributeProto {
            name: "pads".into(),
            r#type: pb::attribute_proto::AttributeType::Ints as i32,
            ints: vec![pad as i64; 4],
            ..Default::default()
        };
        ("Conv", vec![1, k as i64, side, side], shape, vec![pads])
    };
    let mut output = input.clone();
    output[1] = n as i64;
    if plane > 1 {
        let out_side = side + 2 * pad as i64 - taps as i64 + 1;
        output[2] = out_side;
        output[3] = out_side;
    }
    let proto = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: "layer".into(),
            node: vec![pb::NodeProto {
                name: "layer".into(),
                op_type: op.into(),
                input: vec!["x".into(), "w".into()],
                output: vec!["y".into()],
                attribute,
                ..Default::default()
            }],
            input: vec![pb::ValueInfoProto::float("x", &input)],
            output: vec![pb::ValueInfoProto::float("y", &output)],
            ..Default::default()
        }),
        ..Default::default()
    };
    let metadata = Metadata {
        model_name: "layer".into(),
        input: InputSpec {
            name: "x".into(),
            shape: input,
        },
        ..Default::default()
    };
    let mut w = NnzWriter::new(metadata, proto.encode_to_vec());
    w.push(TensorRecord {
        name: "w".into(),
        shape,
        data: TensorData::SharedSparseAc {
            codebook,
            indices,
            index_bits: 4,
        },
        row_scales: None,
    })
    .expect("a valid record");
    w.to_bytes().expect("a file within the budget")
}

fn load(bytes: &[u8], sparse: SparseKernel) -> Model {
    let options = LoadOptions {
        kernels: Some(KernelChoice {
            sparse,
            ..KernelChoice::default()
        }),
        ..LoadOptions::default()
    };
    Model::from_bytes_with(bytes, &options).expect("the layer loads")
}

fn median(mut t: Vec<Duration>) -> f64 {
    t.sort();
    t[t.len() / 2].as_secs_f64() * 1e6
}

/// The median µs of `runs` runs of each model on `x`, one after the other in turn (after 5
/// untimed rounds), so that a busy machine slows them alike.
fn alternate<const N: usize>(models: &[Model; N], x: &Tensor, runs: usize) -> [f64; N] {
    let mut times: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::new());
    for i in 0..runs + 5 {
        for (m, t) in models.iter().zip(times.iter_mut()) {
            let start = Instant::now();
            m.run(x.clone()).expect("runs");
            if i >= 5 {
                t.push(start.elapsed());
            }
        }
    }
    times.map(median)
}

/// The machine's load average (1, 5, 15 minutes), as `/proc/loadavg` gives it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// A whole model at batch 1, as the phone library loads it: the default path (the rule, chains
/// of sparse layers fused) and every layer dense, alternating, and with `separate` also the
/// default path with each sparse layer its own operator (a third model in turn: it shares the
/// caches with the other two); medians, weight bytes in memory, the file's bytes.
fn whole_model(path: &str, runs: usize, separate: bool) {
    let bytes = std::fs::read(path).expect("the model file reads");
    let load = |sparse, sparse_chains| {
        let options = LoadOptions {
            batch: Some(1),
            kernels: Some(KernelChoice {
                sparse,
                sparse_chains,
                ..KernelChoice::default()
            }),
            ..LoadOptions::default()
        };
        Model::from_bytes_with(&bytes, &options).expect("the model loads")
    };
    let default = load(SparseKernel::Auto, SparseChains::Fused);
    let dense = load(SparseKernel::Dense, SparseChains::Fused);
    let shape: Vec<usize> = default
        .metadata()
        .input
        .shape
        .iter()
        .map(|&d| d.max(1) as usize)
        .collect();
    let n: usize = shape.iter().product();
    let x: Vec<f32> = (0..n)
        .map(|i| ((i.wrapping_mul(2_654_435_761) % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let x = Tensor::from_shape(&shape, &x).expect("input");
    let chains = default.sparse_chains();
    let (sb, db) = (default.weight_bytes(), dense.weight_bytes());
    let (layers, convolutions) = (
        default.sparse_kernels().len(),
        default.sparse_conv_kernels().len(),
    );
    let (times, separate) = if separate {
        let models = [
            default,
            dense,
            load(SparseKernel::Auto, SparseChains::Separate),
        ];
        let [s, d, p] = alternate(&models, &x, runs);
        ([s, d], format!(" / {p:.2}"))
    } else {
        (alternate(&[default, dense], &x, runs), String::new())
    };
    let [sparse, dense] = times;
    println!(
        "| {path} | {} | {layers} products ({chains:?} fused), {convolutions} convolutions | {sb} / {db} ({:.2}× the file) | {sparse:.2} / {dense:.2}{separate} µs | {:.2} |",
        bytes.len(),
        sb as f64 / bytes.len() as f64,
        dense / sparse,
    );
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map_or(200, |s| s.parse().expect("RUNS is a number"));
    let files: Vec<String> = std::env::args()
        .skip(2)
        .filter(|a| a.ends_with(".nnz"))
        .collect();
    // `separate` among the arguments also times the sparse layers of chains one by one.
    let separate = std::env::args().any(|a| a == "separate");
    if !files.is_empty() {
        println!("load average at the start: {}", load_average());
        println!(
            "| model | file bytes | sparse layers | weight bytes, default / dense | batch-1 latency, default / dense{} | dense / default |",
            if separate { " / chains separate" } else { "" }
        );
        println!("|---|---|---|---|---|---|");
        for f in &files {
            whole_model(f, runs, separate);
        }
        println!("load average at the end: {}", load_average());
        return;
    }
    let only: Option<String> = std::env::args().nth(2);
    // `NNZIP_SPARSE=portable` times the plain-Rust kernel instead of this CPU's vector one.
    let sparse_kernel = match std::env::var("NNZIP_SPARSE").as_deref() {
        Ok("portable") => SparseKernel::Portable,
        _ => SparseKernel::Sparse,
    };
    println!("load average at the start: {}", load_average());
    println!("| layer | n × k × taps × pixels | density | sparse µs | dense µs | dense / sparse |");
    println!("|---|---|---|---|---|---|");
    // The shared models' layers: LeNet-300-100's and LeNet-5's fully connected ones (the
    // presets' densities are among those swept: 3, 6, 25% and 2, 15%), EfficientNet-Lite0's
    // classifier and three of its 1×1 convolutions (expansion and projection, 28×28 to 7×7).
    // LeNet-5's two 5×5 convolutions (its presets keep 50% and 8% of them, the paper 66% and
    // 12%) and a padded 3×3 one of a small image model.
    let shapes = [
        ("fc LeNet-300 fc1", 300, 784, 1, (1, 0)),
        ("fc LeNet-300 fc2", 100, 300, 1, (1, 0)),
        ("fc LeNet-300 fc3", 10, 100, 1, (1, 0)),
        ("fc LeNet-5 fc1", 500, 800, 1, (1, 0)),
        ("fc LeNet-5 fc2", 10, 500, 1, (1, 0)),
        ("fc EfficientNet classifier", 1000, 1280, 1, (1, 0)),
        ("1x1 conv 28×28", 240, 40, 784, (1, 0)),
        ("1x1 conv 14×14", 480, 80, 196, (1, 0)),
        ("1x1 conv 7×7", 1152, 192, 49, (1, 0)),
        ("5x5 conv LeNet-5 conv1 28×28", 20, 1, 784, (5, 0)),
        ("5x5 conv LeNet-5 conv2 12×12", 50, 20, 144, (5, 0)),
        ("3x3 conv 14×14 pad 1", 32, 32, 196, (3, 1)),
    ];
    let densities = [0.02, 0.03, 0.06, 0.1, 0.15, 0.25, 0.35, 0.5, 0.7, 1.0];
    for (name, n, k, plane, kernel) in shapes {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        for density in densities {
            let bytes = layer(n, k, plane, kernel, density);
            let models = [
                load(&bytes, sparse_kernel),
                load(&bytes, SparseKernel::Dense),
            ];
            let shape = models[0].metadata().input.shape.clone();
            let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            let len = shape.iter().product::<usize>();
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let x = Tensor::from_shape(&shape, &x).expect("input");
            let [sparse, dense] = alternate(&models, &x, runs);
            println!(
                "| {name} | {n} × {k} × {} × {plane} | {:.0}% | {sparse:.2} | {dense:.2} | {:.2} |",
                kernel.0 * kernel.0,
                density * 100.0,
                dense / sparse
            );
        }
    }
    println!("load average at the end: {}", load_average());
}
