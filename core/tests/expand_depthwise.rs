//! nnzip's fused expansion and depthwise convolution (`nnzip_core::kernels::expand_depthwise`,
//! put in place of nnzip's pointwise and depthwise operators by `use_nnzip_kernels`) against
//! the two operators unfused (the same kernels: equal outputs) and against a plain f64
//! reference (within the rounding bound of both sums), on random inputs, in the vector form
//! of this CPU (AVX-512 or AVX2+FMA on x86_64; NEON on aarch64, run under qemu by
//! `scripts/test-arm64.sh`) and the plain-Rust four-lane form: every expansion → depthwise
//! pair of EfficientNet-Lite0 and of `nnzip init mobile-tiny`, and odd sizes (planes that are no multiple of a vector or of a
//! band, channels that are no multiple of a tile, strides 1 and 2, windows 3 and 5, pads on
//! one side or both, batch 2, no clamp on the expansion). Each case checks that its plan
//! holds the fused operator (but for 7×7 planes on x86_64, whose pointwise kernel has no band
//! form).

mod common;

use common::values;
use nnzip_core::kernels::{
    DepthwiseKernel, ExpandDepthwiseFusion, KernelChoice, PointwiseKernel, use_nnzip_kernels,
};
use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_core::ops::math;
use tract_core::ops::nn::DataFormat;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::tract_core;

#[derive(Debug, Clone, Copy)]
struct Case {
    /// Images; 1 without a batch axis.
    n: usize,
    batch_axis: bool,
    /// Input and expanded channels.
    k: usize,
    c: usize,
    h: usize,
    w: usize,
    /// The depthwise window (square), stride and pads (top, left, bottom, right).
    window: usize,
    stride: usize,
    pads: [usize; 4],
    /// ReLU6 after the expansion (the depthwise convolution always has one).
    expand_relu6: bool,
}

impl Case {
    fn out_hw(&self) -> (usize, usize) {
        let out = |i: usize, a: usize, b: usize| (i + a + b - self.window) / self.stride + 1;
        (
            out(self.h, self.pads[0], self.pads[2]),
            out(self.w, self.pads[1], self.pads[3]),
        )
    }
}

struct Data {
    x: Vec<f32>,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

impl Data {
    fn new(case: &Case, seed: u64) -> Data {
        // Inputs in [-4, 4): expanded values on both sides of ReLU6's bounds.
        let x = values(case.n * case.k * case.h * case.w, seed);
        Data {
            x: x.into_iter().map(|v| 4.0 * v).collect(),
            w1: values(case.c * case.k, seed + 1),
            b1: values(case.c, seed + 2),
            w2: values(case.c * case.window * case.window, seed + 3),
            b2: values(case.c, seed + 4),
        }
    }
}

fn relu6(model: &mut TypedModel, name: &str, y: OutletId, rank: usize) -> OutletId {
    let bound = |v: f32| Tensor::from_shape(&vec![1; rank], &[v]).unwrap();
    let zero = model.add_const(format!("{name}.zero"), bound(0.0)).unwrap();
    let six = model.add_const(format!("{name}.six"), bound(6.0)).unwrap();
    let y = model
        .wire_node(format!("{name}.max"), math::max(), &[y, zero])
        .unwrap()[0];
    model
        .wire_node(format!("{name}.min"), math::min(), &[y, six])
        .unwrap()[0]
}

/// The optimised plan of the pair, with `choice`, and the names of its operators.
fn plan(case: &Case, data: &Data, choice: &KernelChoice) -> (Arc<TypedSimplePlan>, Vec<String>) {
    let fmt = if case.batch_axis {
        DataFormat::NCHW
    } else {
        DataFormat::CHW
    };
    let mut shape = vec![case.k, case.h, case.w];
    if case.batch_axis {
        shape.insert(0, case.n);
    }
    let rank = shape.len();
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact(&shape)).unwrap();
    let spec = |kernel: usize, stride: usize, pads: [usize; 4], ci: usize| PoolSpec {
        data_format: fmt,
        kernel_shape: tvec!(kernel, kernel),
        padding: PaddingSpec::Explicit(tvec!(pads[0], pads[1]), tvec!(pads[2], pads[3])),
        dilations: None,
        strides: Some(tvec!(stride, stride)),
        input_channels: ci,
        output_channels: case.c,
    };
    let w1 = Tensor::from_shape(&[case.c, case.k, 1, 1], &data.w1).unwrap();
    let w1 = model.add_const("w1", w1).unwrap();
    let b1 = model.add_const("b1", Tensor::from_shape(&[case.c], &data.b1).unwrap());
    let expand = Conv {
        pool_spec: spec(1, 1, [0; 4], case.k),
        kernel_fmt: KernelFormat::OIHW,
        group: 1,
        q_params: None,
    };
    let mut y = model
        .wire_node("expand", expand, &[x, w1, b1.unwrap()])
        .unwrap()[0];
    if case.expand_relu6 {
        y = relu6(&mut model, "expand", y, rank);
    }
    let w = case.window;
    let w2 = Tensor::from_shape(&[case.c, 1, w, w], &data.w2).unwrap();
    let w2 = model.add_const("w2", w2).unwrap();
    let b2 = model.add_const("b2", Tensor::from_shape(&[case.c], &data.b2).unwrap());
    let dw = Conv {
        pool_spec: spec(w, case.stride, case.pads, case.c),
        kernel_fmt: KernelFormat::OIHW,
        group: case.c,
        q_params: None,
    };
    let y = model.wire_node("dw", dw, &[y, w2, b2.unwrap()]).unwrap()[0];
    let y = relu6(&mut model, "dw", y, rank);
    model.select_output_outlets(&[y]).unwrap();
    let mut model = model.into_decluttered().unwrap();
    use_nnzip_kernels(&mut model, choice).unwrap();
    model.optimize().unwrap();
    let names = model
        .nodes
        .iter()
        .map(|n| format!("{} {}", n.op().name(), n.op().info().unwrap().join(" ")))
        .collect();
    (model.into_runnable().unwrap(), names)
}

fn run(plan: &Arc<TypedSimplePlan>, case: &Case, data: &Data) -> Vec<f32> {
    let mut shape = vec![case.k, case.h, case.w];
    if case.batch_axis {
        shape.insert(0, case.n);
    }
    let x = Tensor::from_shape(&shape, &data.x).unwrap();
    let y = plan.run(tvec!(x.into_tvalue())).unwrap();
    y[0].to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// The pair by its definition, in f64: each output, and a bound on the magnitude of its
/// terms through both sums: the depthwise bias plus each tap's weight times its intermediate
/// value's own sum of magnitudes (the expansion's bias and terms). The clamps change no bound
/// (they move no two values further apart).
fn reference(case: &Case, data: &Data) -> (Vec<f64>, Vec<f64>) {
    let (h, w, k, c) = (case.h, case.w, case.k, case.c);
    let mut out = vec![];
    let mut mag = vec![];
    let (oh, ow) = case.out_hw();
    for b in 0..case.n {
        let mut mid = vec![0f64; c * h * w];
        let mut mid_mag = vec![0f64; c * h * w];
        for co in 0..c {
            for p in 0..h * w {
                let mut acc = data.b1[co] as f64;
                let mut m = acc.abs();
                for ci in 0..k {
                    let t = data.w1[co * k + ci] as f64 * data.x[(b * k + ci) * h * w + p] as f64;
                    acc += t;
                    m += t.abs();
                }
                if case.expand_relu6 {
                    acc = acc.clamp(0.0, 6.0);
                }
                mid[co * h * w + p] = acc;
                mid_mag[co * h * w + p] = m;
            }
        }
        let win = case.window;
        for co in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = data.b2[co] as f64;
                    let mut m = acc.abs();
                    for ky in 0..win {
                        for kx in 0..win {
                            let iy = (oy * case.stride + ky) as isize - case.pads[0] as isize;
                            let ix = (ox * case.stride + kx) as isize - case.pads[1] as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let at = co * h * w + iy as usize * w + ix as usize;
                            let tap = data.w2[(co * win + ky) * win + kx] as f64;
                            acc += tap * mid[at];
                            m += tap.abs() * mid_mag[at];
                        }
                    }
                    out.push(acc.clamp(0.0, 6.0));
                    mag.push(m);
                }
            }
        }
    }
    (out, mag)
}

fn choice(fusion: ExpandDepthwiseFusion, portable: bool) -> KernelChoice {
    KernelChoice {
        expand_depthwise: fusion,
        pointwise: if portable {
            PointwiseKernel::Portable
        } else {
            PointwiseKernel::Tiled
        },
        depthwise: if portable {
            DepthwiseKernel::Portable
        } else {
            DepthwiseKernel::Planes
        },
        ..KernelChoice::default()
    }
}

fn check(case: &Case, seed: u64) {
    let data = Data::new(case, seed);
    let (want, mag) = reference(case, &data);
    for portable in [false, true] {
        let (fused, names) = plan(
            case,
            &data,
            &choice(ExpandDepthwiseFusion::Always, portable),
        );
        // The pointwise kernels with output channels in the lanes (x86_64, small planes) have
        // no band form: there the pair stays apart.
        let by_pixel = names.iter().any(|n| n.contains("by pixel"));
        assert!(
            by_pixel || names.iter().any(|n| n.starts_with("NnzipExpandDepthwise")),
            "{case:?}: no fused operator in {names:?}"
        );
        if portable {
            assert!(
                names.iter().all(|n| !n.starts_with("NnzipExpandDepthwise")
                    || n.matches("portable kernel").count() == 2),
                "{case:?}: {names:?}"
            );
        }
        let got = run(&fused, case, &data);
        // The bias and the terms of both sums, the expansion's counted once per tap.
        let terms = case.k + 1 + case.window * case.window + 1;
        common::assert_close(
            &format!("{case:?} portable {portable}"),
            terms,
            &got,
            &want,
            &mag,
        );
        let (separate, names) = plan(
            case,
            &data,
            &choice(ExpandDepthwiseFusion::Separate, portable),
        );
        assert!(names.iter().all(|n| !n.starts_with("NnzipExpandDepthwise")));
        let unfused = run(&separate, case, &data);
        assert_eq!(got.len(), unfused.len());
        for (i, (a, b)) in got.iter().zip(&unfused).enumerate() {
            assert!(
                a == b,
                "{case:?} portable {portable}: output {i} fused {a}, unfused {b}"
            );
        }
    }
}

fn case(k: usize, c: usize, hw: usize, window: usize, stride: usize, pads: [usize; 4]) -> Case {
    Case {
        n: 1,
        batch_axis: false,
        k,
        c,
        h: hw,
        w: hw,
        window,
        stride,
        pads,
        expand_relu6: true,
    }
}

/// EfficientNet-Lite0's expansion → depthwise pairs (blocks 1 to 15; block 0 has no
/// expansion): input and expanded channels, plane side, window, stride, padded as its ONNX
/// file pads them (on both sides at stride 1, below and right at stride 2).
#[test]
fn efficientnet_lite0_pairs() {
    let pairs = [
        (16, 96, 112, 3, 2),
        (24, 144, 56, 3, 1),
        (24, 144, 56, 5, 2),
        (40, 240, 28, 5, 1),
        (40, 240, 28, 3, 2),
        (80, 480, 14, 3, 1),
        (80, 480, 14, 5, 1),
        (112, 672, 14, 5, 1),
        (112, 672, 14, 5, 2),
        (192, 1152, 7, 5, 1),
        (192, 1152, 7, 3, 1),
    ];
    for (i, &(k, c, hw, window, stride)) in pairs.iter().enumerate() {
        let pads = if stride == 1 {
            [window / 2; 4]
        } else {
            let total = window - 2 + hw % 2;
            [total / 2, total / 2, total - total / 2, total - total / 2]
        };
        check(&case(k, c, hw, window, stride, pads), 10 * i as u64 + 1);
    }
}

/// `nnzip init mobile-tiny`'s expansion → depthwise pairs (28×28 input, stem to 14×14):
/// blocks 1 to 4, padded as its ONNX file pads them (TensorFlow's "SAME": the odd pixel at the
/// end at stride 2). Too small for the rule to fuse them (it keeps them apart by default).
#[test]
fn mobile_tiny_pairs() {
    let pairs = [
        case(16, 48, 14, 3, 1, [1; 4]),
        case(16, 48, 14, 3, 2, [0, 0, 1, 1]),
        case(24, 72, 7, 5, 1, [2; 4]),
        case(24, 72, 7, 3, 1, [1; 4]),
    ];
    for (i, case) in pairs.iter().enumerate() {
        check(case, 200 + i as u64);
    }
}

/// Sizes around the vectors, tiles and bands.
#[test]
fn odd_sizes_strides_windows_and_pads() {
    let cases = [
        case(3, 9, 23, 3, 1, [1; 4]),
        case(5, 13, 37, 3, 2, [0, 0, 1, 1]),
        case(7, 12, 31, 5, 2, [2; 4]),
        case(4, 20, 17, 5, 1, [2, 1, 2, 3]),
        case(16, 8, 9, 3, 2, [1; 4]),
        // Planes of several bands (their windows' rows kept from one band to the next).
        case(4, 8, 200, 5, 1, [2; 4]),
        case(3, 12, 150, 3, 1, [1, 1, 0, 2]),
        case(5, 9, 301, 5, 2, [2; 4]),
        Case {
            h: 45,
            w: 19,
            ..case(6, 10, 0, 3, 1, [0, 1, 2, 1])
        },
        Case {
            expand_relu6: false,
            ..case(8, 17, 29, 5, 1, [2; 4])
        },
        Case {
            n: 2,
            batch_axis: true,
            ..case(16, 24, 40, 3, 2, [0, 0, 1, 1])
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        check(case, 100 + i as u64);
    }
}
