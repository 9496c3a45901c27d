//! nnzip's depthwise kernels in both layouts, and tract's on channel-last data, on every depthwise
//! layer shape of EfficientNet-Lite0 (one image, no batch axis, as tract's declutter leaves them):
//! on channel-first data (CHW, x86_64's layout) the padded-plane kernel (`planes`) and the
//! default (`chw`: blocks of channels on the channel-last kernel where this CPU has a vector
//! one), the channel-last kernel on HWC (aarch64's layout) and tract's own depthwise convolution
//! on HWC (what an arm64 phone ran before nnzip's kernel took that layout). Each time is the
//! median over 9 rounds of the mean of 20 runs, in ms, the four kernels of a layer taking turns
//! round after round; the input is made once per layer (no copy of it timed). On Linux the time
//! is the thread's time on the CPU, which a busy machine's other work does not inflate as much
//! as the wall time.
//!
//! `cargo run --release -p nnzip-core --example depthwise_layouts [LAYER [COLUMN]]` (`taskset -c 0` to pin
//! it; LAYER, 0 to 11, runs one layer shape alone, and COLUMN one kernel of it)

use nnzip_core::kernels::{DepthwiseKernel, KernelChoice, use_nnzip_kernels};
use std::time::Instant;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_onnx::tract_hir::tract_core::ops::nn::DataFormat;

/// The optimised plan of one depthwise convolution of `c` channels of `hw`×`hw` planes.
fn plan(
    c: usize,
    hw: usize,
    k: usize,
    s: usize,
    pads: [usize; 4],
    last: bool,
    kernel: DepthwiseKernel,
) -> Arc<TypedSimplePlan> {
    let mut model = TypedModel::default();
    let shape: TVec<usize> = if last {
        tvec!(hw, hw, c)
    } else {
        tvec!(c, hw, hw)
    };
    let x = model.add_source("x", f32::fact(&shape)).unwrap();
    let kv: Vec<f32> = (0..c * k * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let kt = model
        .add_const("k", Tensor::from_shape(&[c, 1, k, k], &kv).unwrap())
        .unwrap();
    let b = model
        .add_const("b", Tensor::from_shape(&[c], &vec![0.1f32; c]).unwrap())
        .unwrap();
    let pool_spec = PoolSpec {
        data_format: if last {
            DataFormat::HWC
        } else {
            DataFormat::CHW
        },
        kernel_shape: tvec!(k, k),
        padding: PaddingSpec::Explicit(tvec!(pads[0], pads[1]), tvec!(pads[2], pads[3])),
        dilations: None,
        strides: Some(tvec!(s, s)),
        input_channels: c,
        output_channels: c,
    };
    let conv = Conv {
        pool_spec,
        kernel_fmt: KernelFormat::OIHW,
        group: c,
        q_params: None,
    };
    let y = model.wire_node("dw", conv, &[x, kt, b]).unwrap();
    model.select_output_outlets(&y).unwrap();
    let mut model = model.into_decluttered().unwrap();
    use_nnzip_kernels(
        &mut model,
        &KernelChoice {
            depthwise: kernel,
            ..KernelChoice::default()
        },
    )
    .unwrap();
    model.optimize().unwrap();
    model.into_runnable().unwrap()
}

/// The input of one run: built once, handed to every run by reference (a `TValue` is an `Arc`),
/// so that a run times the convolution, not a copy of its input.
fn input(shape: &[usize]) -> TValue {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| (i % 13) as f32).collect();
    Tensor::from_shape(shape, &values).unwrap().into_tvalue()
}

/// Nanoseconds this thread has run on a CPU (`CLOCK_THREAD_CPUTIME_ID`), where the system gives
/// it: on a machine shared with other work, the time the thread waited for the core is left out.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu_ns() -> Option<u64> {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, t: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `t` is a timespec the call writes.
    let ok = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0;
    ok.then(|| t.sec as u64 * 1_000_000_000 + t.nsec as u64)
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu_ns() -> Option<u64> {
    None
}

/// Mean time of one run over `RUNS` runs, in ms: time on the CPU where the system reports it,
/// wall time elsewhere.
fn time(p: &Arc<TypedSimplePlan>, x: &TValue) -> f64 {
    const RUNS: usize = 20;
    let (t, cpu) = (Instant::now(), thread_cpu_ns());
    for _ in 0..RUNS {
        p.run(tvec!(x.clone())).unwrap();
    }
    let ns = match (cpu, thread_cpu_ns()) {
        (Some(a), Some(b)) => (b - a) as f64,
        _ => t.elapsed().as_secs_f64() * 1e9,
    };
    ns / RUNS as f64 * 1e-6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Rounds per cell: the kernels of a layer take turns, round after round, so that a change in
/// the machine's load falls on all of them.
const ROUNDS: usize = 9;

fn main() {
    // An optional layer index (0..12) runs that layer alone, e.g. under `perf record`.
    let only: Option<usize> = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("layer index"));
    // And an optional column (planes, chw, hwc, tract-hwc) times that kernel alone.
    let column = std::env::args().nth(2);
    let mut sums = [0f64; 4];
    for (layer, (c, hw, k, s, pads)) in [
        (32, 112, 3, 1, [1, 1, 1, 1]),
        (96, 112, 3, 2, [0, 0, 1, 1]),
        (144, 56, 3, 1, [1, 1, 1, 1]),
        (144, 56, 5, 2, [1, 1, 2, 2]),
        (240, 28, 5, 1, [2, 2, 2, 2]),
        (240, 28, 3, 2, [0, 0, 1, 1]),
        (480, 14, 3, 1, [1, 1, 1, 1]),
        (480, 14, 5, 1, [2, 2, 2, 2]),
        (672, 14, 5, 1, [2, 2, 2, 2]),
        (672, 14, 5, 2, [1, 1, 2, 2]),
        (1152, 7, 5, 1, [2, 2, 2, 2]),
        (1152, 7, 3, 1, [1, 1, 1, 1]),
    ]
    .into_iter()
    .enumerate()
    {
        if only.is_some_and(|o| o != layer) {
            continue;
        }
        let (chw, hwc) = (input(&[c, hw, hw]), input(&[hw, hw, c]));
        let cells = [
            (
                plan(c, hw, k, s, pads, false, DepthwiseKernel::Planes),
                &chw,
            ),
            (
                plan(c, hw, k, s, pads, false, DepthwiseKernel::Padded),
                &chw,
            ),
            (plan(c, hw, k, s, pads, true, DepthwiseKernel::Padded), &hwc),
            (plan(c, hw, k, s, pads, true, DepthwiseKernel::Tract), &hwc),
        ];
        let names = ["planes", "chw", "hwc", "tract-hwc"];
        let mut rounds: [Vec<f64>; 4] = Default::default();
        for _ in 0..ROUNDS {
            for (((p, x), times), name) in cells.iter().zip(&mut rounds).zip(names) {
                let timed = column.as_deref().is_none_or(|c| c == name);
                times.push(if timed { time(p, x) } else { 0.0 });
            }
        }
        let [planes, chw, hwc, tract_hwc] = rounds.map(median);
        for (sum, t) in sums.iter_mut().zip([planes, chw, hwc, tract_hwc]) {
            *sum += t;
        }
        println!(
            "{c:>5} {hw:>4} k{k} s{s}  planes {planes:.3}  chw {chw:.3}  hwc {hwc:.3}  tract-hwc {tract_hwc:.3}"
        );
    }
    let [planes, chw, hwc, tract_hwc] = sums;
    println!("sum  planes {planes:.3}  chw {chw:.3}  hwc {hwc:.3}  tract-hwc {tract_hwc:.3}");
}
