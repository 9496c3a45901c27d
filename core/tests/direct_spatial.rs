//! The first layer of image models (few input channels, 3x3) on tract's direct spatial
//! convolution, which nnzip's rewrite (`nnzip_core::kernels::stem::direct_spatial`) puts in place
//! with `StemConvKernel::Direct` (and by default where nnzip's own stem operator does not take
//! the convolution) for rows of 64 points and more when each output has at most 36 inputs
//! (tract itself takes it from 128-point rows), against a plain f64 reference and against
//! tract's own choice, im2col with a matrix product (`StemConvKernel::Tract`), on random inputs: EfficientNet-Lite0's stem (3→32, stride
//! 2, pads 0/1), stride 1, four input channels, output channels that are no multiple of four,
//! rectangular planes. Wider reductions must stay on im2col (where the direct path measured
//! slower).

mod common;

use common::values;
use nnzip_core::kernels::{KernelChoice, StemConvKernel, use_nnzip_kernels};
use tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_core::ops::nn::DataFormat;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::tract_core;

#[derive(Debug, Clone, Copy)]
struct Case {
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    /// top, left, bottom, right.
    pads: [usize; 4],
}

impl Case {
    fn output_hw(&self) -> (usize, usize) {
        let out = |i: usize, pb: usize, pa: usize| (i + pb + pa - self.k) / self.stride + 1;
        (
            out(self.h, self.pads[0], self.pads[2]),
            out(self.w, self.pads[1], self.pads[3]),
        )
    }
}

struct Data {
    x: Vec<f32>,
    kernel: Vec<f32>,
    bias: Vec<f32>,
}

/// The optimised plan of one group-1 NCHW Conv, with the direct path for narrow rows or
/// without, and the names of its operators.
fn plan(case: &Case, data: &Data, direct: bool) -> (Arc<TypedSimplePlan>, Vec<String>) {
    let mut model = TypedModel::default();
    let x = model
        .add_source("x", f32::fact([1, case.cin, case.h, case.w]))
        .unwrap();
    let k = Tensor::from_shape(&[case.cout, case.cin, case.k, case.k], &data.kernel).unwrap();
    let k = model.add_const("k", k).unwrap();
    let b = Tensor::from_shape(&[case.cout], &data.bias).unwrap();
    let b = model.add_const("b", b).unwrap();
    let p = case.pads;
    let conv = Conv {
        pool_spec: PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec!(case.k, case.k),
            padding: PaddingSpec::Explicit(tvec!(p[0], p[1]), tvec!(p[2], p[3])),
            dilations: None,
            strides: Some(tvec!(case.stride, case.stride)),
            input_channels: case.cin,
            output_channels: case.cout,
        },
        kernel_fmt: KernelFormat::OIHW,
        group: 1,
        q_params: None,
    };
    let y = model.wire_node("conv", conv, &[x, k, b]).unwrap();
    model.select_output_outlets(&y).unwrap();
    let mut model = model.into_decluttered().unwrap();
    let choice = KernelChoice {
        stem_conv: if direct {
            StemConvKernel::Direct
        } else {
            StemConvKernel::Tract
        },
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
    let x = Tensor::from_shape(&[1, case.cin, case.h, case.w], &data.x).unwrap();
    let y = plan.run(tvec!(x.into_tvalue())).unwrap();
    y[0].to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// The convolution by its definition, in f64: each output and the sum of the magnitudes of its
/// terms (bias included), which bounds the rounding error of any order of summation.
fn reference(case: &Case, data: &Data) -> (Vec<f64>, Vec<f64>) {
    let (oh, ow) = case.output_hw();
    let (mut out, mut mag) = (vec![], vec![]);
    for o in 0..case.cout {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = data.bias[o] as f64;
                let mut m = acc.abs();
                for c in 0..case.cin {
                    for ky in 0..case.k {
                        for kx in 0..case.k {
                            let iy = (oy * case.stride + ky) as isize - case.pads[0] as isize;
                            let ix = (ox * case.stride + kx) as isize - case.pads[1] as isize;
                            if iy < 0 || ix < 0 || iy >= case.h as isize || ix >= case.w as isize {
                                continue;
                            }
                            let x = data.x[(c * case.h + iy as usize) * case.w + ix as usize];
                            let k = data.kernel[((o * case.cin + c) * case.k + ky) * case.k + kx];
                            let t = x as f64 * k as f64;
                            acc += t;
                            m += t.abs();
                        }
                    }
                }
                out.push(acc);
                mag.push(m);
            }
        }
    }
    (out, mag)
}

/// Outputs against the f64 sums, within the rounding bound of a point's inputs and the bias.
fn assert_close(what: &str, case: &Case, got: &[f32], want: &[f64], mag: &[f64]) {
    let terms = case.cin * case.k * case.k + 1;
    common::assert_close(&format!("{what} {case:?}"), terms, got, want, mag);
}

/// Runs the case both ways; returns whether nnzip's choice took the direct spatial path.
fn check(case: Case, seed: u64) -> bool {
    let data = Data {
        x: values(case.cin * case.h * case.w, seed),
        kernel: values(case.cout * case.cin * case.k * case.k, seed + 1),
        bias: values(case.cout, seed + 2),
    };
    let (want, mag) = reference(&case, &data);
    let (default, ops) = plan(&case, &data, true);
    let got = run(&default, &case, &data);
    assert_close("default plan vs reference", &case, &got, &want, &mag);
    let (im2col, im2col_ops) = plan(&case, &data, false);
    assert!(
        !im2col_ops.iter().any(|o| o == "DirectSpatialConv"),
        "{case:?}: tract's choice took the direct path: {im2col_ops:?}"
    );
    let other = run(&im2col, &case, &data);
    assert_close("im2col vs reference", &case, &other, &want, &mag);
    ops.iter().any(|o| o == "DirectSpatialConv")
}

fn case(cin: usize, cout: usize, hw: (usize, usize), k: usize, stride: usize) -> Case {
    let pads = if stride == 2 {
        [0, 0, 1, 1] // TensorFlow's "same" at stride 2, as EfficientNet-Lite0's stem
    } else {
        [k / 2; 4]
    };
    Case {
        cin,
        cout,
        h: hw.0,
        w: hw.1,
        k,
        stride,
        pads,
    }
}

#[test]
fn image_model_stems_take_the_direct_path() {
    for c in [
        case(3, 32, (224, 224), 3, 2), // EfficientNet-Lite0, MobileNetV2
        case(3, 30, (224, 224), 3, 2), // output channels no multiple of four
        case(4, 16, (130, 150), 3, 2), // RGBA, rectangular, 65x75 output
        case(3, 8, (112, 112), 3, 1),
        case(3, 8, (64, 70), 3, 1),
    ] {
        assert!(check(c, 7), "{c:?}: expected DirectSpatialConv");
    }
}

#[test]
fn short_rows_and_wide_reductions_stay_on_im2col() {
    for c in [
        case(3, 16, (112, 112), 3, 2), // 56-point rows: as fast either way
        case(16, 8, (56, 56), 3, 1),   // k = 144: slower direct (docs/PERFORMANCE.md)
        case(3, 16, (96, 96), 7, 2),   // k = 147 (ResNet's 7x7 stem)
    ] {
        assert!(!check(c, 11), "{c:?}: expected im2col");
    }
}
