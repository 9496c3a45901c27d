//! nnzip's depthwise kernels in both layouts, and tract's on channel-last data, on every depthwise
//! layer shape of EfficientNet-Lite0 (one image, no batch axis, as tract's declutter leaves them):
//! on channel-first data (CHW, x86_64's layout) the padded-plane kernel (`planes`) and the
//! default (`chw`: blocks of channels on the channel-last kernel where this CPU has a vector
//! one), the channel-last kernel on HWC (aarch64's layout) and tract's own depthwise convolution
//! on HWC (what an arm64 phone ran before nnzip's kernel took that layout). Each time is the
//! best of 7 rounds of 5 runs, in ms.
//!
//! `cargo run --release -p nnzip-core --example depthwise_layouts` (`taskset -c 0` to pin it)

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

/// Best time of one run, in ms.
fn time(p: &Arc<TypedSimplePlan>, shape: &[usize]) -> f64 {
    let n: usize = shape.iter().product();
    let x =
        Tensor::from_shape(shape, &(0..n).map(|i| (i % 13) as f32).collect::<Vec<_>>()).unwrap();
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..5 {
            p.run(tvec!(x.clone().into_tvalue())).unwrap();
        }
        best = best.min(t.elapsed().as_secs_f64() / 5.0 * 1e3);
    }
    best
}

fn main() {
    let mut sums = [0f64; 4];
    for (c, hw, k, s, pads) in [
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
    ] {
        let planes = time(
            &plan(c, hw, k, s, pads, false, DepthwiseKernel::Planes),
            &[c, hw, hw],
        );
        let chw = time(
            &plan(c, hw, k, s, pads, false, DepthwiseKernel::Padded),
            &[c, hw, hw],
        );
        let hwc = time(
            &plan(c, hw, k, s, pads, true, DepthwiseKernel::Padded),
            &[hw, hw, c],
        );
        let tract_hwc = time(
            &plan(c, hw, k, s, pads, true, DepthwiseKernel::Tract),
            &[hw, hw, c],
        );
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
