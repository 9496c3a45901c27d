//! nnzip's depthwise convolution (`nnzip_core::kernels::depthwise`, put in place of tract's
//! `Conv` by `use_nnzip_kernels`) against a plain reference, and against tract's own lowering
//! (its zone walk, `DepthwiseKernel::Tract`), on random inputs, in its vector form (AVX2+FMA on
//! x86_64; NEON on aarch64, run under qemu by `scripts/test-arm64.sh`; each case checks which
//! one its plan selected) and its plain-Rust four-lane form (`DepthwiseKernel::Portable`, NEON's
//! layout), the two forms also against each other:
//! EfficientNet-Lite0's shapes (3x3 and 5x5, strides 1 and 2, its asymmetric pads, planes from
//! 112x112 down to 1x1), channel counts that are no multiple of a vector, batch 1 and 2, and
//! random geometries. Both layouts: channel-first (the default, which runs the smaller planes by
//! blocks of channels on the channel-last kernel, and the padded-plane kernel alone) and
//! channel-last (NHWC/HWC, the layout tract gives depthwise convolutions on aarch64; built directly here, so
//! these cases run on x86_64 too), each with and without a ReLU6 taken into the op. Sums are
//! reordered (fused multiply-adds, other order), so outputs are compared against a tolerance
//! relative to the magnitude of their terms.

mod common;

use common::values;
use nnzip_core::kernels::{DepthwiseKernel, KernelChoice, use_nnzip_kernels};
use proptest::prelude::*;
use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_core::ops::math;
use tract_core::ops::nn::DataFormat;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::tract_core;

#[derive(Debug, Clone)]
struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    /// top, left, bottom, right (ONNX order: begins then ends).
    pads: [usize; 4],
    /// NCHW (NHWC) with a batch axis, or CHW (HWC) without one.
    batch_axis: bool,
    /// Channels innermost: NHWC or HWC.
    channels_last: bool,
    /// ReLU6 (`Max` 0 then `Min` 6) after the convolution.
    relu6: bool,
}

impl Case {
    fn output_hw(&self) -> Option<(usize, usize)> {
        let out = |i: usize, pb: usize, pa: usize, k: usize, s: usize, d: usize| {
            let field = (k - 1) * d + 1;
            (i + pb + pa).checked_sub(field).map(|x| x / s + 1)
        };
        Some((
            out(
                self.h,
                self.pads[0],
                self.pads[2],
                self.k.0,
                self.stride.0,
                self.dilation.0,
            )?,
            out(
                self.w,
                self.pads[1],
                self.pads[3],
                self.k.1,
                self.stride.1,
                self.dilation.1,
            )?,
        ))
    }
}

struct Data {
    x: Vec<f32>,
    kernel: Vec<f32>,
    bias: Vec<f32>,
}

impl Data {
    fn new(case: &Case, seed: u64) -> Data {
        // Inputs in [-8, 8) where ReLU6 follows: outputs on both sides of both bounds.
        let scale = if case.relu6 { 8.0 } else { 1.0 };
        let x = values(case.n * case.c * case.h * case.w, seed);
        Data {
            x: x.into_iter().map(|v| v * scale).collect(),
            kernel: values(case.c * case.k.0 * case.k.1, seed + 1),
            bias: values(case.c, seed + 2),
        }
    }
}

/// The optimised plan of one depthwise Conv with `kernel` chosen, and the info of the nodes
/// running it: nnzip's operator, or tract's `DepthWiseConv` for `DepthwiseKernel::Tract`.
fn plan(case: &Case, data: &Data, kernel: DepthwiseKernel) -> (Arc<TypedSimplePlan>, Vec<String>) {
    let fmt = match (case.batch_axis, case.channels_last) {
        (true, false) => DataFormat::NCHW,
        (false, false) => DataFormat::CHW,
        (true, true) => DataFormat::NHWC,
        (false, true) => DataFormat::HWC,
    };
    let x_shape: TVec<usize> = input_shape(case).into();
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact(&x_shape)).unwrap();
    let k = Tensor::from_shape(&[case.c, 1, case.k.0, case.k.1], &data.kernel).unwrap();
    let k = model.add_const("k", k).unwrap();
    let b = model
        .add_const("b", Tensor::from_shape(&[case.c], &data.bias).unwrap())
        .unwrap();
    let p = case.pads;
    let pool_spec = PoolSpec {
        data_format: fmt,
        kernel_shape: tvec!(case.k.0, case.k.1),
        padding: PaddingSpec::Explicit(tvec!(p[0], p[1]), tvec!(p[2], p[3])),
        dilations: Some(tvec!(case.dilation.0, case.dilation.1)),
        strides: Some(tvec!(case.stride.0, case.stride.1)),
        input_channels: case.c,
        output_channels: case.c,
    };
    let conv = Conv {
        pool_spec,
        kernel_fmt: KernelFormat::OIHW,
        group: case.c,
        q_params: None,
    };
    let mut y = model.wire_node("dw", conv, &[x, k, b]).unwrap();
    if case.relu6 {
        let bound = |v: f32| Tensor::from_shape(&vec![1; x_shape.len()], &[v]).unwrap();
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
        depthwise: kernel,
        ..KernelChoice::default()
    };
    use_nnzip_kernels(&mut model, &choice).unwrap();
    model.optimize().unwrap();
    let ours = if case.channels_last {
        "NnzipChannelsLastDepthwise"
    } else {
        "NnzipPaddedDepthwise"
    };
    let runs_it = |name: &str| match kernel {
        DepthwiseKernel::Tract => name == "DepthWiseConv",
        _ => name == ours,
    };
    let infos = model
        .nodes
        .iter()
        .filter(|n| runs_it(&n.op().name()))
        .map(|n| n.op().info().unwrap().join(" "))
        .collect();
    // Channel-last runs of fewer channels than the widest vector (8) stay on tract's path.
    assert!(
        kernel == DepthwiseKernel::Tract
            || (case.channels_last && case.c < 8)
            || model.nodes.iter().all(|n| n.op().name() != "DepthWiseConv"),
        "{case:?}: tract's DepthWiseConv left beside nnzip's"
    );
    (model.into_runnable().unwrap(), infos)
}

/// The input's shape in the case's layout.
fn input_shape(case: &Case) -> Vec<usize> {
    let mut shape = if case.channels_last {
        vec![case.h, case.w, case.c]
    } else {
        vec![case.c, case.h, case.w]
    };
    if case.batch_axis {
        shape.insert(0, case.n);
    }
    shape
}

/// Runs the plan on the case's input (held channel-first in `data`, moved to the case's layout)
/// and gives its output channel-first.
fn run(plan: &Arc<TypedSimplePlan>, case: &Case, data: &Data) -> Vec<f32> {
    let nchw = [case.n, case.c, case.h, case.w];
    let x = Tensor::from_shape(&nchw, &data.x).unwrap();
    let x = if case.channels_last {
        x.permute_axes(&[0, 2, 3, 1]).unwrap()
    } else {
        x
    };
    let x = x.into_shape(&input_shape(case)).unwrap();
    let y = plan.run(tvec!(x.into_tvalue())).unwrap();
    let mut y = y[0].clone().into_tensor();
    if !case.batch_axis {
        y.insert_axis(0).unwrap();
    }
    if case.channels_last {
        y = y.permute_axes(&[0, 3, 1, 2]).unwrap();
    }
    y.to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// The convolution by its definition, in f64: each output and the sum of the magnitudes of its
/// terms (bias included), which bounds the rounding error of any order of summation.
fn reference(case: &Case, data: &Data) -> (Vec<f64>, Vec<f64>) {
    let (oh, ow) = case.output_hw().unwrap();
    let (kh, kw) = case.k;
    let mut out = vec![];
    let mut mag = vec![];
    for b in 0..case.n {
        for c in 0..case.c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = data.bias[c] as f64;
                    let mut m = acc.abs();
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * case.stride.0 + ky * case.dilation.0) as isize
                                - case.pads[0] as isize;
                            let ix = (ox * case.stride.1 + kx * case.dilation.1) as isize
                                - case.pads[1] as isize;
                            if iy < 0 || ix < 0 || iy >= case.h as isize || ix >= case.w as isize {
                                continue;
                            }
                            let x = data.x
                                [((b * case.c + c) * case.h + iy as usize) * case.w + ix as usize]
                                as f64;
                            let k = data.kernel[(c * kh + ky) * kw + kx] as f64;
                            acc += x * k;
                            m += (x * k).abs();
                        }
                    }
                    if case.relu6 {
                        acc = acc.clamp(0.0, 6.0);
                    }
                    out.push(acc);
                    mag.push(m);
                }
            }
        }
    }
    (out, mag)
}

/// Outputs against the f64 sums, within the rounding bound of a kernel's taps and the bias.
fn assert_close(what: &str, case: &Case, got: &[f32], want: &[f64], mag: &[f64]) {
    let terms = case.k.0 * case.k.1 + 1;
    common::assert_close(&format!("{what} {case:?}"), terms, got, want, mag);
}

/// The vector kernel an op's `info` must name on this machine: NEON on every aarch64 CPU
/// (phones, and `scripts/test-arm64.sh` under qemu); on x86_64 AVX-512 where the CPU has it and
/// the kernel takes the case (the channel-last kernel from 16 channels, the padded planes'
/// tiles of rows at vertical dilation 1 on windows 3 or 5 columns wide, as the op's plane
/// shape in `info` has them after tract's normalisation; blocks of channels run AVX2), else
/// AVX2+FMA where the CPU has it.
fn vector_kernel(case: &Case, info: &str) -> &'static str {
    if cfg!(target_arch = "aarch64") {
        return "NEON";
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        let wide = if case.channels_last {
            case.c >= 16
        } else {
            let [_, kw] = plane_shape_pair(info, "kernel");
            let [dh, _] = plane_shape_pair(info, "dilations");
            !info.contains("blocks") && dh == 1 && matches!(kw, 3 | 5)
        };
        if wide && std::is_x86_feature_detected!("avx512f") {
            return "AVX-512";
        }
        return "AVX2+FMA";
    }
    let _ = (case, info);
    "portable"
}

/// The pair `name: [a, b]` of the plane shape an op's `info` shows.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn plane_shape_pair(info: &str, name: &str) -> [usize; 2] {
    let start = info.find(&format!("{name}: [")).expect(name) + name.len() + 3;
    let end = start + info[start..].find(']').expect(name);
    let pair: Vec<usize> = info[start..end]
        .split(", ")
        .map(|v| v.parse().expect(name))
        .collect();
    [pair[0], pair[1]]
}

/// nnzip's kernel runs the case (checked on the plan) and matches the reference in both its
/// forms; the two forms match each other, and tract's zone walk, to the same tolerance.
fn check(case: &Case, seed: u64) {
    let data = Data::new(case, seed);
    let (want, mag) = reference(case, &data);
    let (padded, infos) = plan(case, &data, DepthwiseKernel::Padded);
    let got = run(&padded, case, &data);
    assert_close("padded planes vs reference", case, &got, &want, &mag);
    if infos.is_empty() {
        // One channel is an ordinary convolution (tract's rule, which nnzip keeps), one tap a
        // multiplication once decluttered: neither is a depthwise convolution. Channel-last
        // runs of fewer channels than the widest vector (8) stay on tract's path.
        assert!(
            case.c == 1 || case.k.0 * case.k.1 == 1 || (case.channels_last && case.c < 8),
            "{case:?}: nnzip's depthwise kernel not in place"
        );
        return;
    }
    for info in &infos {
        let vector = format!("vector kernel ({})", vector_kernel(case, info));
        assert!(
            info.contains(&vector),
            "{case:?}: expected {vector}, got {info}"
        );
    }
    assert!(
        infos
            .iter()
            .all(|i| i.contains("clamped to [0, 6]") == case.relu6),
        "{case:?}: the clamp taken in or not: {infos:?}"
    );
    if !case.channels_last {
        // The default may run the planes by blocks of channels: the padded planes alone too.
        let (planes, infos) = plan(case, &data, DepthwiseKernel::Planes);
        for info in &infos {
            let vector = format!("vector kernel ({})", vector_kernel(case, info));
            assert!(
                info.contains(&vector) && !info.contains("blocks"),
                "{case:?}: expected the padded planes on {vector}, got {info}"
            );
        }
        let got = run(&planes, case, &data);
        assert_close("padded planes only vs reference", case, &got, &want, &mag);
    }
    let (portable, infos) = plan(case, &data, DepthwiseKernel::Portable);
    assert!(
        !infos.is_empty() && infos.iter().all(|i| i.contains("portable kernel")),
        "{infos:?}"
    );
    let four_lanes = run(&portable, case, &data);
    assert_close(
        "portable padded planes vs reference",
        case,
        &four_lanes,
        &want,
        &mag,
    );
    // Two f32 results, each within the bound of the exact sum.
    let twice: Vec<f64> = mag.iter().map(|m| 2.0 * m).collect();
    let four_lanes64: Vec<f64> = four_lanes.iter().map(|&v| v as f64).collect();
    assert_close("vector vs portable", case, &got, &four_lanes64, &twice);
    let (zones, infos) = plan(case, &data, DepthwiseKernel::Tract);
    assert!(
        !infos.is_empty(),
        "{case:?}: tract's path has no DepthWiseConv"
    );
    let walk = run(&zones, case, &data);
    let walk64: Vec<f64> = walk.iter().map(|&v| v as f64).collect();
    assert_close("padded planes vs zone walk", case, &got, &walk64, &twice);
}

fn case(n: usize, c: usize, hw: usize, k: usize, s: usize, pads: [usize; 4]) -> Case {
    Case {
        n,
        c,
        h: hw,
        w: hw,
        k: (k, k),
        stride: (s, s),
        dilation: (1, 1),
        pads,
        batch_axis: true,
        channels_last: false,
        relu6: false,
    }
}

/// Every depthwise layer of EfficientNet-Lite0 (channels cut to keep the test quick, one of
/// them odd), plus its kernel sizes at every plane size down to 1x1.
#[test]
fn efficientnet_lite0_layers() {
    for (c, hw, k, s, pads) in [
        (32, 112, 3, 1, [1, 1, 1, 1]),
        (19, 112, 3, 2, [0, 0, 1, 1]),
        (9, 56, 3, 1, [1, 1, 1, 1]),
        (9, 56, 5, 2, [1, 1, 2, 2]),
        (15, 28, 5, 1, [2, 2, 2, 2]),
        (15, 28, 3, 2, [0, 0, 1, 1]),
        (30, 14, 3, 1, [1, 1, 1, 1]),
        (30, 14, 5, 1, [2, 2, 2, 2]),
        (42, 14, 5, 2, [1, 1, 2, 2]),
        (72, 7, 5, 1, [2, 2, 2, 2]),
        (72, 7, 3, 1, [1, 1, 1, 1]),
    ] {
        check(&case(1, c, hw, k, s, pads), c as u64);
    }
}

#[test]
fn kernels_strides_pads_and_sizes() {
    let mut seed = 100;
    for k in [3, 5] {
        for s in [1, 2] {
            let p = k / 2;
            for pads in [
                [p, p, p, p],
                [p - 1, p - 1, p, p],
                [0, 0, 0, 0],
                [p, 0, 0, p],
            ] {
                for hw in [1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 33] {
                    for (n, c) in [(1, 1), (1, 2), (2, 3), (1, 5), (2, 17)] {
                        let case = case(n, c, hw, k, s, pads);
                        if case.output_hw().is_none() {
                            continue;
                        }
                        seed += 1;
                        check(&case, seed);
                    }
                }
            }
        }
    }
}

#[test]
fn batch_two_at_112_and_rectangular_planes() {
    check(&case(2, 7, 112, 3, 1, [1, 1, 1, 1]), 1);
    check(&case(2, 5, 112, 5, 2, [1, 1, 2, 2]), 2);
    let mut rect = case(2, 11, 9, 5, 1, [2, 2, 2, 2]);
    rect.w = 23;
    check(&rect, 3);
    rect.h = 1;
    rect.k = (1, 5);
    rect.pads = [0, 2, 0, 2];
    check(&rect, 4);
    let mut chw = case(1, 13, 15, 3, 2, [0, 0, 1, 1]);
    chw.batch_axis = false;
    check(&chw, 5);
}

/// The depthwise layers of the shared models (channels, plane, kernel, stride, pads):
/// EfficientNet-Lite0's twelve shapes with its channel counts, then mobile-tiny's four.
const SHARED_MODEL_LAYERS: [(usize, usize, usize, usize, [usize; 4]); 16] = [
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
    (48, 14, 3, 1, [1, 1, 1, 1]),
    (48, 14, 3, 2, [0, 0, 1, 1]),
    (72, 7, 5, 1, [2, 2, 2, 2]),
    (72, 7, 3, 1, [1, 1, 1, 1]),
];

/// The depthwise layers of the shared models as they are on aarch64, where tract's declutter
/// moves their channels innermost (no batch axis, ReLU6 taken in). The 112x112 planes keep a
/// part of their channels (a multiple of 8 plus an odd run) to stay quick under qemu.
#[test]
fn channels_last_shared_model_layers() {
    for (i, (c, hw, k, s, pads)) in SHARED_MODEL_LAYERS.into_iter().enumerate() {
        let c = if hw == 112 { c / 4 + 11 } else { c };
        let mut case = case(1, c, hw, k, s, pads);
        (case.batch_axis, case.channels_last, case.relu6) = (false, true, true);
        check(&case, 1000 + i as u64);
    }
}

/// The same layers channel-first, as x86_64 runs them (no batch axis, ReLU6 taken in), where
/// the default runs the smaller planes by blocks of channels; below 112x112 (the first test's
/// cases) with their full channel counts. Where the channels are no multiple of a block, a
/// batch of two as well: blocks then hold the last channels of one image and the first of the
/// next.
#[test]
fn channel_first_shared_model_layers() {
    for (i, (c, hw, k, s, pads)) in SHARED_MODEL_LAYERS.into_iter().enumerate() {
        if hw == 112 {
            continue;
        }
        let mut case = case(1, c, hw, k, s, pads);
        (case.batch_axis, case.relu6) = (false, true);
        check(&case, 4000 + i as u64);
        if c % 32 != 0 {
            let mut two = case.clone();
            (two.batch_axis, two.n, two.relu6) = (true, 2, false);
            check(&two, 5000 + i as u64);
        }
    }
    // A run of channels shorter than a vector after the blocks.
    check(&case(2, 44, 7, 3, 1, [1, 1, 1, 1]), 6000);
}

/// Channel-last runs around the vector widths (4 and 8 lanes, four vectors at a time at the
/// edges), with a batch axis and without, with and without the clamp; and the clamp taken into
/// the channel-first kernel.
#[test]
fn channels_last_runs_and_the_clamp() {
    let mut seed = 2000;
    for c in [7, 8, 9, 12, 15, 16, 17, 31, 32, 33, 35, 40] {
        for (k, s, pads) in [
            (3, 1, [1, 1, 1, 1]),
            (5, 2, [1, 1, 2, 2]),
            (3, 2, [0, 0, 1, 1]),
        ] {
            for hw in [1, 2, 5, 9, 12] {
                let mut case = case(2, c, hw, k, s, pads);
                (case.channels_last, case.relu6) = (true, seed % 2 == 0);
                case.batch_axis = seed % 3 != 0;
                case.n = if case.batch_axis { 2 } else { 1 };
                seed += 1;
                if case.output_hw().is_some() {
                    check(&case, seed);
                }
            }
        }
    }
    for relu6 in [false, true] {
        let mut c = case(2, 11, 9, 3, 1, [1, 1, 1, 1]);
        c.relu6 = relu6;
        check(&c, 3000);
        let mut rect = case(1, 19, 9, 5, 2, [1, 1, 2, 2]);
        (rect.w, rect.relu6, rect.channels_last) = (23, relu6, true);
        check(&rect, 3001);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any geometry: kernel 1..=7 per axis, strides 1..=3, dilations 1..=2, pads 0..=4, either
    /// layout, with and without the clamp.
    #[test]
    fn random_geometries(
        n in 1usize..=2, c in 1usize..=9, h in 1usize..=20, w in 1usize..=20,
        kh in 1usize..=7, kw in 1usize..=7, sh in 1usize..=3, sw in 1usize..=3,
        dh in 1usize..=2, dw in 1usize..=2,
        pads in proptest::array::uniform4(0usize..=4), batch_axis in any::<bool>(),
        channels_last in any::<bool>(), relu6 in any::<bool>(), seed in any::<u64>(),
    ) {
        // Channel-last runs from 8 channels (fewer stay on tract's path).
        let c = if channels_last { c + 7 } else { c };
        let case = Case {
            n: if batch_axis { n } else { 1 },
            c, h, w, k: (kh, kw), stride: (sh, sw), dilation: (dh, dw), pads, batch_axis,
            channels_last, relu6,
        };
        prop_assume!(case.output_hw().is_some_and(|(oh, ow)| oh > 0 && ow > 0));
        check(&case, seed);
    }
}
