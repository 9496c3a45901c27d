//! nnzip's stem convolution (`nnzip_core::kernels::stem::StemConv`), which the rewrite puts in
//! place of group-1 channel-first convolutions of up to four input channels with the ReLU6
//! after them, against a plain f64 reference on random inputs: the first convolution of every
//! shared model (EfficientNet-Lite0's 3→32 3x3 stride 2 padded at the end, mobile-tiny's 1→16,
//! LeNet-5's 1→20 5x5) and shapes around them (stride 1 and 3, padding on either side or none,
//! RGBA, dilation, batches of two, no batch axis, output channels no multiple of a tile), on the
//! kernel this CPU runs and on the portable one. Five input channels stay on the earlier path.

mod common;

use common::values;
use nnzip_core::kernels::{KernelChoice, StemConvKernel, use_nnzip_kernels};
use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_core::ops::math;
use tract_core::ops::nn::DataFormat;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::tract_core;

#[derive(Debug, Clone, Copy)]
struct Case {
    /// Images, `None` for data without a batch axis (CHW).
    n: Option<usize>,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    /// top, left, bottom, right.
    pads: [usize; 4],
    relu6: bool,
}

impl Case {
    fn output_hw(&self) -> (usize, usize) {
        let span = (self.k - 1) * self.dilation + 1;
        let out = |i: usize, pb: usize, pa: usize| (i + pb + pa - span) / self.stride + 1;
        (
            out(self.h, self.pads[0], self.pads[2]),
            out(self.w, self.pads[1], self.pads[3]),
        )
    }

    fn input_shape(&self) -> TVec<usize> {
        let mut shape: TVec<usize> = self.n.into_iter().collect();
        shape.extend([self.cin, self.h, self.w]);
        shape
    }

    fn images(&self) -> usize {
        self.n.unwrap_or(1)
    }
}

struct Data {
    x: Vec<f32>,
    kernel: Vec<f32>,
    bias: Vec<f32>,
}

/// The optimised plan of one Conv (and ReLU6) on `kernel`, and the names of its operators.
fn plan(case: &Case, data: &Data, kernel: StemConvKernel) -> (Arc<TypedSimplePlan>, Vec<String>) {
    let mut model = TypedModel::default();
    let x = model
        .add_source("x", f32::fact(case.input_shape()))
        .unwrap();
    let k = Tensor::from_shape(&[case.cout, case.cin, case.k, case.k], &data.kernel).unwrap();
    let k = model.add_const("k", k).unwrap();
    let b = Tensor::from_shape(&[case.cout], &data.bias).unwrap();
    let b = model.add_const("b", b).unwrap();
    let p = case.pads;
    let conv = Conv {
        pool_spec: PoolSpec {
            data_format: if case.n.is_some() {
                DataFormat::NCHW
            } else {
                DataFormat::CHW
            },
            kernel_shape: tvec!(case.k, case.k),
            padding: PaddingSpec::Explicit(tvec!(p[0], p[1]), tvec!(p[2], p[3])),
            dilations: Some(tvec!(case.dilation, case.dilation)),
            strides: Some(tvec!(case.stride, case.stride)),
            input_channels: case.cin,
            output_channels: case.cout,
        },
        kernel_fmt: KernelFormat::OIHW,
        group: 1,
        q_params: None,
    };
    let mut y = model.wire_node("conv", conv, &[x, k, b]).unwrap();
    if case.relu6 {
        let rank = case.input_shape().len();
        let bound = |v: f32| Tensor::from_shape(&vec![1; rank], &[v]).unwrap();
        let zero = model.add_const("zero", bound(0.0)).unwrap();
        let six = model.add_const("six", bound(6.0)).unwrap();
        y = model.wire_node("max", math::max(), &[y[0], zero]).unwrap();
        y = model.wire_node("min", math::min(), &[y[0], six]).unwrap();
    }
    model.select_output_outlets(&y).unwrap();
    let mut model = model.into_decluttered().unwrap();
    let choice = KernelChoice {
        stem_conv: kernel,
        ..KernelChoice::default()
    };
    use_nnzip_kernels(&mut model, &choice).unwrap();
    model.optimize().unwrap();
    let ops = model
        .nodes
        .iter()
        .map(|n| n.op().name().to_string())
        .collect();
    (model.into_runnable().unwrap(), ops)
}

fn run(plan: &Arc<TypedSimplePlan>, case: &Case, data: &Data) -> Vec<f32> {
    let x = Tensor::from_shape(&case.input_shape(), &data.x).unwrap();
    let y = plan.run(tvec!(x.into_tvalue())).unwrap();
    y[0].to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// The convolution (and ReLU6) by its definition, in f64: each output and the sum of the
/// magnitudes of its terms (bias included), which bounds the rounding error of any order of
/// summation.
fn reference(case: &Case, data: &Data) -> (Vec<f64>, Vec<f64>) {
    let (oh, ow) = case.output_hw();
    let (mut out, mut mag) = (vec![], vec![]);
    let image = case.cin * case.h * case.w;
    for x in data.x.chunks_exact(image) {
        for o in 0..case.cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (sum, m) = point(case, data, x, (o, oy, ox));
                    out.push(if case.relu6 { sum.clamp(0.0, 6.0) } else { sum });
                    mag.push(m);
                }
            }
        }
    }
    (out, mag)
}

/// Output `o` at (`oy`, `ox`) of image `x` and the sum of its terms' magnitudes.
fn point(case: &Case, data: &Data, x: &[f32], (o, oy, ox): (usize, usize, usize)) -> (f64, f64) {
    let mut acc = data.bias[o] as f64;
    let mut m = acc.abs();
    let at = |out: usize, tap: usize, pad: usize| {
        (out * case.stride + tap * case.dilation) as isize - pad as isize
    };
    for c in 0..case.cin {
        for ky in 0..case.k {
            for kx in 0..case.k {
                let (iy, ix) = (at(oy, ky, case.pads[0]), at(ox, kx, case.pads[1]));
                if iy < 0 || ix < 0 || iy >= case.h as isize || ix >= case.w as isize {
                    continue;
                }
                let v = x[(c * case.h + iy as usize) * case.w + ix as usize];
                let k = data.kernel[((o * case.cin + c) * case.k + ky) * case.k + kx];
                let t = v as f64 * k as f64;
                acc += t;
                m += t.abs();
            }
        }
    }
    (acc, m)
}

/// Runs `case` on `kernel` against the reference; returns the plan's operators.
fn check(case: Case, kernel: StemConvKernel, seed: u64) -> Vec<String> {
    let data = Data {
        x: values(case.images() * case.cin * case.h * case.w, seed),
        // Inputs and weights in [-1, 1) and a bias in [0, 4): some outputs past 6 and below 0.
        kernel: values(case.cout * case.cin * case.k * case.k, seed + 1),
        bias: values(case.cout, seed + 2)
            .iter()
            .map(|b| 2.0 * b + 2.0)
            .collect(),
    };
    let (want, mag) = reference(&case, &data);
    let (plan, ops) = plan(&case, &data, kernel);
    let got = run(&plan, &case, &data);
    let terms = case.cin * case.k * case.k + 1;
    common::assert_close(&format!("{kernel:?} {case:?}"), terms, &got, &want, &mag);
    ops
}

fn case(cin: usize, cout: usize, hw: (usize, usize), k: usize, stride: usize) -> Case {
    Case {
        n: Some(1),
        cin,
        cout,
        h: hw.0,
        w: hw.1,
        k,
        stride,
        dilation: 1,
        pads: [k / 2; 4],
        relu6: true,
    }
}

/// The first convolutions of the shared models, and shapes around them.
fn stems() -> Vec<Case> {
    // TensorFlow's "same" at stride 2: padded at the end only.
    let end_padded = [0, 0, 1, 1];
    vec![
        Case {
            pads: end_padded,
            ..case(3, 32, (224, 224), 3, 2) // EfficientNet-Lite0
        },
        Case {
            pads: end_padded,
            ..case(1, 16, (28, 28), 3, 2) // mobile-tiny
        },
        Case {
            pads: [0; 4],
            relu6: false,
            ..case(1, 20, (28, 28), 5, 1) // LeNet-5's conv1
        },
        Case {
            n: Some(2),
            pads: end_padded,
            ..case(4, 30, (130, 150), 3, 2) // RGBA, rectangular, a batch of two
        },
        case(3, 8, (112, 112), 3, 1),
        Case {
            n: None,
            pads: [1, 0, 0, 1],
            ..case(3, 13, (64, 70), 3, 2) // no batch axis, padded on two sides
        },
        Case {
            pads: [3, 3, 3, 3],
            relu6: false,
            ..case(3, 64, (57, 61), 7, 2) // ResNet's 7x7
        },
        case(2, 12, (31, 45), 5, 3),
        Case {
            dilation: 2,
            ..case(3, 9, (40, 41), 3, 1)
        },
    ]
}

#[test]
fn stems_on_the_stem_kernel_match_the_reference() {
    for (i, c) in stems().into_iter().enumerate() {
        for kernel in [StemConvKernel::Tiled, StemConvKernel::Portable] {
            let ops = check(c, kernel, 7 + i as u64);
            assert!(
                ops.iter().any(|o| o == "NnzipStemConv"),
                "{c:?}: expected nnzip's stem convolution: {ops:?}"
            );
            assert!(
                !ops.iter().any(|o| o.contains("Max") || o.contains("Min")),
                "{c:?}: the ReLU6 is left: {ops:?}"
            );
        }
    }
}

/// Five input channels and more stay on the earlier path (here im2col: 45 inputs per point
/// are more than tract's direct spatial convolution takes by nnzip's rule).
#[test]
fn wider_inputs_stay_on_the_earlier_path() {
    let c = case(5, 8, (40, 40), 3, 1);
    let ops = check(c, StemConvKernel::Tiled, 3);
    assert!(!ops.iter().any(|o| o == "NnzipStemConv"), "{ops:?}");
}
