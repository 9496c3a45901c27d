//! nnzip's stem convolution (`StemConvKernel::Tiled`, or `Portable` with
//! `NNZIP_STEM_CONV=portable`) against the path before it (`Direct`: tract's direct spatial
//! convolution from 64-point rows, im2col below) and tract's own choice (`Tract`) on the first
//! convolutions of the shared models and shapes around them, NCHW with a batch of one, with the
//! ReLU6 where the model has one: per shape, the median and the best over rounds alternating
//! the three of the mean of `RUNS` runs, in µs.
//!
//! `cargo run --release -p nnzip-core --example stem_shapes -- [ROUNDS] [RUNS]`
//! (`taskset -c 0` to pin it; `STEM_SHAPES_CLOCK=cpu` for the thread's CPU time instead of wall
//! time)

use nnzip_core::kernels::{KernelChoice, StemConvKernel, use_nnzip_kernels};
use std::time::Instant;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_onnx::tract_hir::tract_core::ops::math;
use tract_onnx::tract_hir::tract_core::ops::nn::DataFormat;

/// One first convolution: its name, input and output channels, input side, kernel side,
/// stride, pads (top, left, bottom, right), ReLU6 after.
struct Shape {
    name: &'static str,
    cin: usize,
    cout: usize,
    hw: usize,
    k: usize,
    stride: usize,
    pads: [usize; 4],
    relu6: bool,
}

const SHAPES: [Shape; 7] = [
    Shape {
        name: "EfficientNet-Lite0",
        cin: 3,
        cout: 32,
        hw: 224,
        k: 3,
        stride: 2,
        pads: [0, 0, 1, 1],
        relu6: true,
    },
    Shape {
        name: "RGBA 4->32 s2",
        cin: 4,
        cout: 32,
        hw: 224,
        k: 3,
        stride: 2,
        pads: [0, 0, 1, 1],
        relu6: true,
    },
    Shape {
        name: "3->16 s1 112",
        cin: 3,
        cout: 16,
        hw: 112,
        k: 3,
        stride: 1,
        pads: [1; 4],
        relu6: true,
    },
    Shape {
        name: "3->16 s2 112",
        cin: 3,
        cout: 16,
        hw: 112,
        k: 3,
        stride: 2,
        pads: [0, 0, 1, 1],
        relu6: true,
    },
    Shape {
        name: "ResNet 3->64 7x7",
        cin: 3,
        cout: 64,
        hw: 224,
        k: 7,
        stride: 2,
        pads: [3; 4],
        relu6: false,
    },
    Shape {
        name: "mobile-tiny",
        cin: 1,
        cout: 16,
        hw: 28,
        k: 3,
        stride: 2,
        pads: [0, 0, 1, 1],
        relu6: true,
    },
    Shape {
        name: "LeNet-5 conv1",
        cin: 1,
        cout: 20,
        hw: 28,
        k: 5,
        stride: 1,
        pads: [0; 4],
        relu6: false,
    },
];

/// The optimised plan of `s` on `kernel`.
fn plan(s: &Shape, kernel: StemConvKernel) -> TractResult<Arc<TypedSimplePlan>> {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([1, s.cin, s.hw, s.hw]))?;
    let w: Vec<f32> = (0..s.cout * s.cin * s.k * s.k)
        .map(|i| ((i % 17) as f32 - 8.0) * 0.01)
        .collect();
    let w = model.add_const("w", Tensor::from_shape(&[s.cout, s.cin, s.k, s.k], &w)?)?;
    let b = model.add_const("b", Tensor::from_shape(&[s.cout], &vec![0.1f32; s.cout])?)?;
    let p = s.pads;
    let pool_spec = PoolSpec {
        data_format: DataFormat::NCHW,
        kernel_shape: tvec!(s.k, s.k),
        padding: PaddingSpec::Explicit(tvec!(p[0], p[1]), tvec!(p[2], p[3])),
        dilations: None,
        strides: Some(tvec!(s.stride, s.stride)),
        input_channels: s.cin,
        output_channels: s.cout,
    };
    let conv = Conv {
        pool_spec,
        kernel_fmt: KernelFormat::OIHW,
        group: 1,
        q_params: None,
    };
    let mut y = model.wire_node("stem", conv, &[x, w, b])?;
    if s.relu6 {
        let bound = |v: f32| Tensor::from_shape(&[1, 1, 1, 1], &[v]);
        let zero = model.add_const("zero", bound(0.0)?)?;
        let six = model.add_const("six", bound(6.0)?)?;
        y = model.wire_node("max", math::max(), &[y[0], zero])?;
        y = model.wire_node("min", math::min(), &[y[0], six])?;
    }
    model.select_output_outlets(&y)?;
    let mut model = model.into_decluttered()?;
    let choice = KernelChoice {
        stem_conv: kernel,
        ..KernelChoice::default()
    };
    use_nnzip_kernels(&mut model, &choice)?;
    model.optimize()?;
    model.into_runnable()
}

/// Mean time of `runs` runs, in µs: wall time, or with `cpu` the time this thread ran on a
/// CPU (on a machine shared with other work, a preempted run's wall time is mostly the wait).
fn time(p: &Arc<TypedSimplePlan>, x: &TValue, runs: usize, cpu: bool) -> f64 {
    let (t, c) = (Instant::now(), thread_cpu_seconds());
    for _ in 0..runs {
        p.run(tvec!(x.clone())).unwrap();
    }
    let seconds = if cpu {
        thread_cpu_seconds() - c
    } else {
        t.elapsed().as_secs_f64()
    };
    seconds / runs as f64 * 1e6
}

#[repr(C)]
struct Timespec {
    seconds: i64,
    nanoseconds: i64,
}

unsafe extern "C" {
    fn clock_gettime(clock: i32, time: *mut Timespec) -> i32;
}

/// CPU time of the calling thread (Linux's `CLOCK_THREAD_CPUTIME_ID`, from the C library std
/// links), in seconds.
fn thread_cpu_seconds() -> f64 {
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec {
        seconds: 0,
        nanoseconds: 0,
    };
    // SAFETY: `t` is a valid timespec to write.
    let status = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(status, 0, "clock_gettime");
    t.seconds as f64 + t.nanoseconds as f64 * 1e-9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn main() -> TractResult<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(Ok(9), |s| s.parse())?;
    let runs: usize = args.next().map_or(Ok(20), |s| s.parse())?;
    let cpu = std::env::var("STEM_SHAPES_CLOCK").is_ok_and(|c| c == "cpu");
    let ours = match KernelChoice::from_env()?.stem_conv {
        StemConvKernel::Portable => StemConvKernel::Portable,
        _ => StemConvKernel::Tiled,
    };
    let sides = [ours, StemConvKernel::Direct, StemConvKernel::Tract];
    let clock = if cpu { "thread CPU" } else { "wall" };
    println!(
        "{rounds} alternating rounds of {runs} runs, median (best) µs of {clock} time; ratios of \
         medians"
    );
    println!(
        "{:<20} {:>16} {:>16} {:>16} {:>8} {:>8}",
        format!("{ours:?}"),
        "nnzip",
        "direct",
        "tract",
        "/direct",
        "/tract"
    );
    for s in &SHAPES {
        let plans = sides
            .iter()
            .map(|&k| plan(s, k))
            .collect::<TractResult<Vec<_>>>()?;
        let n = s.cin * s.hw * s.hw;
        let x: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
        // Shared, not copied at each run.
        let x =
            TValue::from_const(Tensor::from_shape(&[1, s.cin, s.hw, s.hw], &x)?.into_arc_tensor());
        let mut times = vec![vec![]; plans.len()];
        for _ in 0..rounds {
            for (p, t) in plans.iter().zip(&mut times) {
                t.push(time(p, &x, runs, cpu));
            }
        }
        let cell = |t: &Vec<f64>| format!("{:.1} ({:.1})", median(t.clone()), best(t));
        let m: Vec<f64> = times.iter().map(|t| median(t.clone())).collect();
        println!(
            "{:<20} {:>16} {:>16} {:>16} {:>8.2} {:>8.2}",
            s.name,
            cell(&times[0]),
            cell(&times[1]),
            cell(&times[2]),
            m[0] / m[1],
            m[0] / m[2]
        );
    }
    Ok(())
}
