//! nnzip's pointwise kernel against tract's path (its packed matrix product) on every pointwise
//! layer shape of EfficientNet-Lite0, channel-first without a batch axis as tract's declutter
//! leaves them on x86_64, the expansions with their ReLU6: per shape, the best over rounds
//! alternating the two of the mean of `RUNS` runs, in ms (the best rather than the median: on a
//! machine shared with other builds a round of a few milliseconds is either preempted or not,
//! and the median of a shape's rounds was often a preempted one), the multiply-adds per second,
//! and the sum over the model (each shape times the layers that have it).
//!
//! `cargo run --release -p nnzip-core --example pointwise_shapes -- [ROUNDS] [RUNS] [cold] [SIDES]`
//! (`taskset -c 0` to pin it; `NNZIP_POINTWISE=portable` times the plain-Rust kernel instead).
//! `cold` times each run after pushing the weights out of the core's caches (and reading the
//! input back in), as inside a network, where a layer's weights were last read a whole
//! inference ago and its input was just written: a layer that runs from the L2 cache when
//! repeated alone can be bound by reading its weights from L3 there. SIDES (`7,14`) keeps the
//! layers of those plane sides.

use nnzip_core::kernels::{KernelChoice, PointwiseKernel, use_nnzip_kernels};
use std::time::Instant;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_onnx::tract_hir::tract_core::ops::math;
use tract_onnx::tract_hir::tract_core::ops::nn::DataFormat;

/// EfficientNet-Lite0's pointwise layers: input and output channels, plane side, ReLU6 after,
/// how many layers have the shape.
const LAYERS: [(usize, usize, usize, bool, usize); 19] = [
    (32, 16, 112, false, 1),
    (16, 96, 112, true, 1),
    (96, 24, 56, false, 1),
    (24, 144, 56, true, 2),
    (144, 24, 56, false, 1),
    (144, 40, 28, false, 1),
    (40, 240, 28, true, 2),
    (240, 40, 28, false, 1),
    (240, 80, 14, false, 1),
    (80, 480, 14, true, 3),
    (480, 80, 14, false, 2),
    (480, 112, 14, false, 1),
    (112, 672, 14, true, 3),
    (672, 112, 14, false, 2),
    (672, 192, 7, false, 1),
    (192, 1152, 7, true, 4),
    (1152, 192, 7, false, 3),
    (1152, 320, 7, false, 1),
    (320, 1280, 7, true, 1),
];

/// The optimised plan of one 1×1 convolution (and ReLU6) of `k` → `co` channels of `hw`×`hw`.
fn plan(
    k: usize,
    co: usize,
    hw: usize,
    relu6: bool,
    kernel: PointwiseKernel,
) -> Arc<TypedSimplePlan> {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([k, hw, hw])).unwrap();
    let w: Vec<f32> = (0..co * k)
        .map(|i| ((i % 17) as f32 - 8.0) * 0.01)
        .collect();
    let w = model
        .add_const("w", Tensor::from_shape(&[co, k, 1, 1], &w).unwrap())
        .unwrap();
    let b = model
        .add_const("b", Tensor::from_shape(&[co], &vec![0.1f32; co]).unwrap())
        .unwrap();
    let pool_spec = PoolSpec {
        data_format: DataFormat::CHW,
        kernel_shape: tvec!(1, 1),
        padding: PaddingSpec::Valid,
        dilations: None,
        strides: None,
        input_channels: k,
        output_channels: co,
    };
    let conv = Conv {
        pool_spec,
        kernel_fmt: KernelFormat::OIHW,
        group: 1,
        q_params: None,
    };
    let mut y = model.wire_node("pw", conv, &[x, w, b]).unwrap();
    if relu6 {
        let bound = |v: f32| Tensor::from_shape(&[1, 1, 1], &[v]).unwrap();
        let zero = model.add_const("zero", bound(0.0)).unwrap();
        let six = model.add_const("six", bound(6.0)).unwrap();
        y = model.wire_node("max", math::max(), &[y[0], zero]).unwrap();
        y = model.wire_node("min", math::min(), &[y[0], six]).unwrap();
    }
    model.select_output_outlets(&y).unwrap();
    let mut model = model.into_decluttered().unwrap();
    let choice = KernelChoice {
        pointwise: kernel,
        ..KernelChoice::default()
    };
    use_nnzip_kernels(&mut model, &choice).unwrap();
    model.optimize().unwrap();
    model.into_runnable().unwrap()
}

/// More than a core's L2 cache (2 MB on the Xeon this was written on, 1 MB or less on phones).
const EVICT_BYTES: usize = 64 << 20;

/// Mean time of `runs` runs, in ms; with `evict`, the median of the runs, each timed alone
/// after writing `evict` over and reading the input.
fn time(p: &Arc<TypedSimplePlan>, x: &Tensor, runs: usize, evict: Option<&mut [u8]>) -> f64 {
    let Some(evict) = evict else {
        let t = Instant::now();
        for _ in 0..runs {
            p.run(tvec!(x.clone().into_tvalue())).unwrap();
        }
        return t.elapsed().as_secs_f64() / runs as f64 * 1e3;
    };
    let mut times: Vec<f64> = (0..runs)
        .map(|run| {
            evict
                .iter_mut()
                .step_by(64)
                .for_each(|b| *b = b.wrapping_add(run as u8));
            let input = x.clone();
            let plain = input.try_as_plain_ram().unwrap();
            std::hint::black_box(plain.as_slice::<f32>().unwrap().iter().sum::<f32>());
            let t = Instant::now();
            p.run(tvec!(input.into_tvalue())).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    // The median: a run of a few hundred microseconds is either preempted or not.
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn best(v: Vec<f64>) -> f64 {
    v.into_iter().fold(f64::INFINITY, f64::min)
}

fn main() -> TractResult<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(Ok(7), |s| s.parse())?;
    let runs: usize = args.next().map_or(Ok(5), |s| s.parse())?;
    let cold = args.next().is_some_and(|a| a == "cold");
    let sides: Vec<usize> = match args.next() {
        Some(list) => list
            .split(',')
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?,
        None => LAYERS.iter().map(|l| l.2).collect(),
    };
    let mut evict = vec![0u8; if cold { EVICT_BYTES } else { 0 }];
    let ours = KernelChoice::from_env()?.pointwise;
    let ours = if ours == PointwiseKernel::Tract {
        PointwiseKernel::Tiled
    } else {
        ours
    };
    println!(
        "nnzip kernel: {ours:?}; best of {rounds} alternating rounds of {runs} runs{}",
        if cold {
            ", weights out of the caches"
        } else {
            ""
        }
    );
    println!(
        "{:>5} {:>5} {:>4} {:>5} {:>9} {:>9} {:>6} {:>12} {:>12}",
        "k", "co", "hw", "relu6", "nnzip ms", "tract ms", "ratio", "nnzip GMAC/s", "tract GMAC/s"
    );
    let (mut sum_nnzip, mut sum_tract) = (0.0, 0.0);
    let mut layers = 0;
    for (k, co, hw, relu6, count) in LAYERS {
        if !sides.contains(&hw) {
            continue;
        }
        layers += count;
        let ours = plan(k, co, hw, relu6, ours);
        let tract = plan(k, co, hw, relu6, PointwiseKernel::Tract);
        let n = k * hw * hw;
        let x: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.1).collect();
        let x = Tensor::from_shape(&[k, hw, hw], &x)?;
        let (mut a, mut b) = (vec![], vec![]);
        for _ in 0..rounds {
            let mut evict = cold.then_some(&mut evict[..]);
            a.push(time(&ours, &x, runs, evict.as_deref_mut()));
            b.push(time(&tract, &x, runs, evict));
        }
        let (a, b) = (best(a), best(b));
        let macs = (k * co * hw * hw) as f64;
        println!(
            "{k:>5} {co:>5} {hw:>4} {relu6:>5} {a:>9.4} {b:>9.4} {:>6.2} {:>12.1} {:>12.1}",
            a / b,
            macs / a * 1e-6,
            macs / b * 1e-6
        );
        sum_nnzip += a * count as f64;
        sum_tract += b * count as f64;
    }
    println!(
        "model sum ({layers} layers): nnzip {sum_nnzip:.3} ms, tract {sum_tract:.3} ms, ratio {:.2}",
        sum_nnzip / sum_tract
    );
    Ok(())
}
