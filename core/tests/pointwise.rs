//! nnzip's pointwise convolution (`nnzip_core::kernels::pointwise`, put in place of tract's
//! decluttered 1×1 `Conv` — an `EinSum` and a bias `Add` — and the ReLU / ReLU6 after it by
//! `use_nnzip_kernels`) against a plain f64 reference and against tract's own path (its packed
//! matrix product, `PointwiseKernel::Tract`), on random inputs, in its vector form (AVX-512 or AVX2+FMA on
//! x86_64; NEON on aarch64, run under qemu by `scripts/test-arm64.sh`; each case checks which
//! one its plan selected) and its plain-Rust four-lane form (`PointwiseKernel::Portable`):
//! every pointwise layer shape of EfficientNet-Lite0 and of `nnzip init mobile-tiny`, output
//! channels that are no multiple of a tile's four, planes that are no multiple of a tile's run,
//! batch 2 and no batch axis, with and without the clamp. Sums are reordered (fused
//! multiply-adds, other order), so outputs are compared against a tolerance relative to the
//! magnitude of their terms.

mod common;

use common::values;
use nnzip_core::kernels::pointwise::MIN_PIXELS;
use nnzip_core::kernels::{KernelChoice, PointwiseKernel, use_nnzip_kernels};
use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_core::ops::math;
use tract_core::ops::nn::DataFormat;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::tract_core;

#[derive(Debug, Clone, Copy)]
struct Case {
    n: usize,
    k: usize,
    co: usize,
    h: usize,
    w: usize,
    /// ReLU6 (`Max` 0 then `Min` 6) after the convolution.
    relu6: bool,
    /// NCHW with a batch axis, or CHW without one.
    batch_axis: bool,
}

struct Data {
    x: Vec<f32>,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl Data {
    fn new(case: &Case, seed: u64) -> Data {
        // Inputs in [0, 4), weights and bias in [-1, 1): ReLU6 clamps a part of the outputs at
        // each bound.
        let x = values(case.n * case.k * case.h * case.w, seed)
            .into_iter()
            .map(|v| 2.0 * (v + 1.0))
            .collect();
        Data {
            x,
            weights: values(case.co * case.k, seed + 1),
            bias: values(case.co, seed + 2),
        }
    }
}

fn input_shape(case: &Case) -> TVec<usize> {
    if case.batch_axis {
        tvec!(case.n, case.k, case.h, case.w)
    } else {
        tvec!(case.k, case.h, case.w)
    }
}

/// The optimised plan of one 1×1 Conv (and ReLU6) with `kernel` chosen, and the info of its
/// nnzip pointwise operators.
fn plan(case: &Case, data: &Data, kernel: PointwiseKernel) -> (Arc<TypedSimplePlan>, Vec<String>) {
    let fmt = if case.batch_axis {
        DataFormat::NCHW
    } else {
        DataFormat::CHW
    };
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact(input_shape(case))).unwrap();
    let k = Tensor::from_shape(&[case.co, case.k, 1, 1], &data.weights).unwrap();
    let k = model.add_const("k", k).unwrap();
    let b = model
        .add_const("b", Tensor::from_shape(&[case.co], &data.bias).unwrap())
        .unwrap();
    let pool_spec = PoolSpec {
        data_format: fmt,
        kernel_shape: tvec!(1, 1),
        padding: PaddingSpec::Valid,
        dilations: None,
        strides: None,
        input_channels: case.k,
        output_channels: case.co,
    };
    let conv = Conv {
        pool_spec,
        kernel_fmt: KernelFormat::OIHW,
        group: 1,
        q_params: None,
    };
    let mut y = model.wire_node("pw", conv, &[x, k, b]).unwrap();
    if case.relu6 {
        let rank = input_shape(case).len();
        let bound = |v: f32| Tensor::from_shape(&vec![1; rank], &[v]).unwrap();
        let zero = model.add_const("zero", bound(0.0)).unwrap();
        let six = model.add_const("six", bound(6.0)).unwrap();
        y = model
            .wire_node("relu6.max", math::max(), &[y[0], zero])
            .unwrap();
        y = model
            .wire_node("relu6.min", math::min(), &[y[0], six])
            .unwrap();
    }
    model.select_output_outlets(&y).unwrap();
    let mut model = model.into_decluttered().unwrap();
    let choice = KernelChoice {
        pointwise: kernel,
        ..KernelChoice::default()
    };
    use_nnzip_kernels(&mut model, &choice).unwrap();
    model.optimize().unwrap();
    let infos: Vec<String> = model
        .nodes
        .iter()
        .filter(|n| n.op().name() == "NnzipPointwiseConv")
        .map(|n| n.op().info().unwrap().join(" "))
        .collect();
    if !infos.is_empty() {
        let left: Vec<String> = model
            .nodes
            .iter()
            .map(|n| n.op().name().to_string())
            .filter(|name| !matches!(name.as_str(), "Source" | "NnzipPointwiseConv"))
            .collect();
        assert!(
            left.is_empty(),
            "{case:?}: left beside nnzip's op: {left:?}"
        );
    }
    (model.into_runnable().unwrap(), infos)
}

fn run(plan: &Arc<TypedSimplePlan>, case: &Case, data: &Data) -> Vec<f32> {
    let x = Tensor::from_shape(&input_shape(case), &data.x).unwrap();
    let y = plan.run(tvec!(x.into_tvalue())).unwrap();
    y[0].to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// The convolution (and clamp) by its definition, in f64: each output and the sum of the
/// magnitudes of its terms.
fn reference(case: &Case, data: &Data) -> (Vec<f64>, Vec<f64>) {
    let pixels = case.h * case.w;
    let (mut out, mut mag) = (vec![], vec![]);
    for b in 0..case.n {
        let x = &data.x[b * case.k * pixels..][..case.k * pixels];
        for co in 0..case.co {
            for p in 0..pixels {
                let mut acc = data.bias[co] as f64;
                let mut m = acc.abs();
                for ci in 0..case.k {
                    let t = data.weights[co * case.k + ci] as f64 * x[ci * pixels + p] as f64;
                    acc += t;
                    m += t.abs();
                }
                if case.relu6 {
                    acc = acc.clamp(0.0, 6.0);
                }
                out.push(acc);
                mag.push(m);
            }
        }
    }
    (out, mag)
}

/// The instruction set of the kernel the op must select on this machine (on x86_64 the tiles
/// or, on small planes, the kernel with output channels in the lanes: its name goes on with
/// " by pixel").
fn vector_kernel() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        return "NEON";
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        if std::is_x86_feature_detected!("avx512f") {
            return "AVX-512";
        }
        return "AVX2+FMA";
    }
    "portable"
}

/// nnzip's op runs the case (checked on the plan) and matches the reference in both its forms,
/// and tract's path to the same tolerance; planes under `MIN_PIXELS` stay on tract's path, and
/// so may a single input or output channel.
fn check(case: &Case, seed: u64) {
    let data = Data::new(case, seed);
    let (want, mag) = reference(case, &data);
    let terms = case.k + 1;
    let (tiled, infos) = plan(case, &data, PointwiseKernel::Tiled);
    let got = run(&tiled, case, &data);
    common::assert_close(&format!("tiled {case:?}"), terms, &got, &want, &mag);
    if case.h * case.w < MIN_PIXELS {
        assert!(
            infos.is_empty(),
            "{case:?}: planes under {MIN_PIXELS} taken"
        );
        return;
    }
    if (case.co == 1 || case.k == 1) && infos.is_empty() {
        // tract's declutter drops a channel axis of size 1 from the EinSum (a weighted sum of
        // planes, or a plane scaled per output channel), which is then not the rewrite's
        // pattern and stays on tract's path.
        return;
    }
    let vector = format!("vector kernel ({}", vector_kernel());
    assert!(
        infos.len() == 1 && infos[0].contains(&vector),
        "{case:?}: expected one op with {vector}, got {infos:?}"
    );
    assert_eq!(
        infos[0].contains("clamped to [0, 6]"),
        case.relu6,
        "{infos:?}"
    );
    let (portable, infos) = plan(case, &data, PointwiseKernel::Portable);
    assert!(
        infos.len() == 1 && infos[0].contains("portable kernel"),
        "{infos:?}"
    );
    let four_lanes = run(&portable, case, &data);
    common::assert_close(
        &format!("portable {case:?}"),
        terms,
        &four_lanes,
        &want,
        &mag,
    );
    let (packed, infos) = plan(case, &data, PointwiseKernel::Tract);
    assert!(infos.is_empty(), "{case:?}: tract's path has nnzip's op");
    let tract = run(&packed, case, &data);
    let tract64: Vec<f64> = tract.iter().map(|&v| v as f64).collect();
    let twice: Vec<f64> = mag.iter().map(|m| 2.0 * m).collect();
    common::assert_close(
        &format!("tiled vs tract {case:?}"),
        terms,
        &got,
        &tract64,
        &twice,
    );
}

fn case(n: usize, k: usize, co: usize, hw: usize, relu6: bool) -> Case {
    Case {
        n,
        k,
        co,
        h: hw,
        w: hw,
        relu6,
        batch_axis: true,
    }
}

/// Every pointwise layer shape of EfficientNet-Lite0 (input and output channels, plane; its
/// two 112×112 layers at 56×56, which tiles the same way in a quarter of the time), expansions
/// with ReLU6 and projections without.
#[test]
fn efficientnet_lite0_layers() {
    for (i, &(k, co, hw, relu6)) in [
        (32, 16, 56, false),
        (16, 96, 56, true),
        (96, 24, 56, false),
        (24, 144, 56, true),
        (144, 24, 56, false),
        (144, 40, 28, false),
        (40, 240, 28, true),
        (240, 40, 28, false),
        (240, 80, 14, false),
        (80, 480, 14, true),
        (480, 80, 14, false),
        (480, 112, 14, false),
        (112, 672, 14, true),
        (672, 112, 14, false),
        (672, 192, 7, false),
        (192, 1152, 7, true),
        (1152, 192, 7, false),
        (1152, 320, 7, false),
        (320, 1280, 7, true),
    ]
    .iter()
    .enumerate()
    {
        check(&case(1, k, co, hw, relu6), i as u64);
    }
}

/// Every pointwise layer shape of `nnzip init mobile-tiny`, at batch 1 and 2.
#[test]
fn mobile_tiny_layers() {
    for (i, &(k, co, hw, relu6)) in [
        (16, 48, 14, true),
        (48, 16, 14, false),
        (48, 24, 7, false),
        (24, 72, 7, true),
        (72, 24, 7, false),
        (72, 40, 7, false),
        (40, 128, 7, true),
    ]
    .iter()
    .enumerate()
    {
        for n in [1, 2] {
            check(&case(n, k, co, hw, relu6), 100 + i as u64);
        }
    }
}

/// Output channels around multiples of four, planes around multiples of a run (8, 16 and the
/// one-vector remainder), one input channel, rectangular planes, no batch axis, planes too
/// small for the op.
#[test]
fn odd_channels_and_planes() {
    let mut seed = 200;
    for co in [1, 3, 4, 5, 7, 9] {
        for (h, w) in [
            (1, 8),
            (3, 3),
            (1, 9),
            (3, 5),
            (4, 4),
            (1, 17),
            (3, 8),
            (5, 5),
            (1, 33),
        ] {
            for k in [1, 3, 8] {
                seed += 1;
                let relu6 = seed % 2 == 0;
                check(
                    &Case {
                        n: 1 + (seed % 3) as usize,
                        k,
                        co,
                        h,
                        w,
                        relu6,
                        batch_axis: true,
                    },
                    seed,
                );
            }
        }
    }
    for relu6 in [false, true] {
        let mut chw = case(1, 13, 11, 9, relu6);
        chw.batch_axis = false;
        check(&chw, 300);
        check(&case(3, 5, 6, 2, relu6), 301);
    }
}
