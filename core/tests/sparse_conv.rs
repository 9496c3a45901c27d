//! Pruned, shared k×k convolutions run from their kept weights (`nnzip_core::kernels::sparse_conv`)
//! against an f64 reference: several shapes, kernel sizes, paddings, strides and dilations,
//! densities, codebooks (4-bit, 8-bit range-coded, unshared raw weights, row-scaled), with and
//! without a following ReLU, at batch 1 and batch 3, on the vector kernel of this CPU (AVX2+FMA
//! on x86_64, NEON on aarch64 under qemu by `scripts/test-arm64.sh`), on the plain-Rust one and
//! on tract's dense path. Each case checks that its plan took the path asked for. The weight
//! bytes of a model whose weights are known.
//!
//! The bound: a sum of `K` products rounds, in any order, to within `K · ε · Σ|w_k x_k|` of its
//! exact value (ε = 2^-23 here, twice the unit roundoff); every path is checked against it.

mod common;

use common::{assert_close, values};
use nnzip_core::format::{NnzWriter, TensorData, TensorRecord, round_row_scale};
use nnzip_core::kernels::{KernelChoice, SparseKernel};
use nnzip_core::metadata::{InputSpec, Metadata};
use nnzip_core::onnx::proto as pb;
use nnzip_core::{LoadOptions, Model, Tensor};
use prost::Message;

#[derive(Debug, Clone, Copy)]
struct Case {
    /// Output channels, input channels.
    n: usize,
    c: usize,
    /// Input plane (height, width).
    hw: [usize; 2],
    /// Kernel (height, width).
    kernel: [usize; 2],
    /// Padding (top, left, bottom, right), strides, dilations.
    pads: [usize; 4],
    strides: [usize; 2],
    dilations: [usize; 2],
    /// Percent of weights kept.
    density: u32,
    /// Codebook size (0: raw f32 weights, every kept weight its own value).
    shared: usize,
    range_coded: bool,
    scaled: bool,
    relu: bool,
    seed: u64,
}

impl Case {
    fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    fn weights(&self) -> usize {
        self.n * self.c * self.taps()
    }

    fn out_hw(&self) -> [usize; 2] {
        std::array::from_fn(|a| {
            let span = self.dilations[a] * (self.kernel[a] - 1) + 1;
            (self.hw[a] + self.pads[a] + self.pads[a + 2] - span) / self.strides[a] + 1
        })
    }

    /// The kernel as `[n, c, kh, kw]` values, and the record storing it.
    fn kernel_record(&self) -> (Vec<f32>, TensorRecord) {
        let count = self.weights();
        let keep = values(count, self.seed);
        let magnitude = values(count, self.seed + 1);
        let codebook: Vec<f32> = if self.shared > 0 {
            std::iter::once(0.0)
                .chain((1..self.shared).map(|i| (i as f32 - self.shared as f32 / 2.0 - 0.5) / 8.0))
                .collect()
        } else {
            Vec::new()
        };
        let scales: Vec<f32> = (0..self.n)
            .map(|i| round_row_scale(0.3 + (i % 7) as f32 * 0.37))
            .collect();
        let per_output = count / self.n;
        let mut indices = vec![0u16; count];
        let mut dense = vec![0f32; count];
        for i in 0..count {
            if (keep[i] + 1.0) * 50.0 < self.density as f32 {
                if self.shared > 0 {
                    let idx = 1 + ((magnitude[i] + 1.0) / 2.0 * (self.shared - 1) as f32) as usize;
                    let idx = idx.min(self.shared - 1);
                    indices[i] = idx as u16;
                    let scale = if self.scaled {
                        scales[i / per_output]
                    } else {
                        1.0
                    };
                    dense[i] = codebook[idx] * scale;
                } else {
                    dense[i] = magnitude[i] + 1.5 * magnitude[i].signum();
                }
            }
        }
        let index_bits = (usize::BITS - (self.shared.max(2) - 1).leading_zeros()) as u8;
        let data = match (self.shared, self.range_coded) {
            (0, _) => TensorData::RawF32(dense.clone()),
            (_, true) => TensorData::SharedSparseAc {
                codebook,
                indices,
                index_bits,
            },
            (_, false) => TensorData::SharedSparse {
                codebook,
                indices,
                index_bits,
                gap_bits: 4,
            },
        };
        let [kh, kw] = self.kernel;
        let record = TensorRecord {
            name: "w".into(),
            shape: [self.n, self.c, kh, kw].map(|d| d as u64).to_vec(),
            data,
            row_scales: (self.scaled && self.shared > 0).then_some(scales),
        };
        (dense, record)
    }

    /// The one-layer model, its kernel and its bias.
    fn nnz(&self) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
        let (kernel, record) = self.kernel_record();
        let bias = values(self.n, self.seed + 2);
        let ints = |name: &str, v: &[usize]| pb::AttributeProto {
            name: name.into(),
            r#type: pb::attribute_proto::AttributeType::Ints as i32,
            ints: v.iter().map(|&d| d as i64).collect(),
            ..Default::default()
        };
        let input_dims = vec![-1, self.c as i64, self.hw[0] as i64, self.hw[1] as i64];
        let [oh, ow] = self.out_hw();
        let out_dims = vec![-1, self.n as i64, oh as i64, ow as i64];
        let conv = pb::NodeProto {
            name: "conv".into(),
            op_type: "Conv".into(),
            input: vec!["x".into(), "w".into(), "b".into()],
            output: vec![if self.relu { "sum" } else { "y" }.into()],
            attribute: vec![
                ints("kernel_shape", &self.kernel),
                ints("pads", &self.pads),
                ints("strides", &self.strides),
                ints("dilations", &self.dilations),
            ],
            ..Default::default()
        };
        let relu = self.relu.then(|| pb::NodeProto {
            name: "relu".into(),
            op_type: "Relu".into(),
            input: vec!["sum".into()],
            output: vec!["y".into()],
            ..Default::default()
        });
        let proto = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(pb::GraphProto {
                name: "layer".into(),
                node: std::iter::once(conv).chain(relu).collect(),
                input: vec![pb::ValueInfoProto::float("x", &input_dims)],
                output: vec![pb::ValueInfoProto::float("y", &out_dims)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let metadata = Metadata {
            model_name: "layer".into(),
            input: InputSpec {
                name: "x".into(),
                shape: input_dims,
            },
            ..Default::default()
        };
        let mut w = NnzWriter::new(metadata, proto.encode_to_vec());
        w.push(record).unwrap();
        w.push(TensorRecord {
            name: "b".into(),
            shape: vec![self.n as u64],
            data: TensorData::RawF32(bias.clone()),
            row_scales: None,
        })
        .unwrap();
        (w.to_bytes().unwrap(), kernel, bias)
    }

    /// The exact outputs of `batch` images `x` and the magnitudes of their terms.
    fn reference(&self, w: &[f32], bias: &[f32], x: &[f32], batch: usize) -> [Vec<f64>; 2] {
        let [h, wd] = self.hw;
        let [oh, ow] = self.out_hw();
        let [kh, kw] = self.kernel;
        let (mut want, mut mag) = (vec![], vec![]);
        for b in 0..batch {
            for o in 0..self.n {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (mut sum, mut abs) = (bias[o] as f64, bias[o].abs() as f64);
                        for c in 0..self.c {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let y = (oy * self.strides[0] + ky * self.dilations[0])
                                        .checked_sub(self.pads[0]);
                                    let xx = (ox * self.strides[1] + kx * self.dilations[1])
                                        .checked_sub(self.pads[1]);
                                    let (Some(y), Some(xx)) = (y, xx) else {
                                        continue;
                                    };
                                    if y >= h || xx >= wd {
                                        continue;
                                    }
                                    let weight = w[((o * self.c + c) * kh + ky) * kw + kx];
                                    let t = weight as f64
                                        * x[((b * self.c + c) * h + y) * wd + xx] as f64;
                                    sum += t;
                                    abs += t.abs();
                                }
                            }
                        }
                        want.push(if self.relu { sum.max(0.0) } else { sum });
                        mag.push(abs);
                    }
                }
            }
        }
        [want, mag]
    }

    /// Loads with `kernel`, runs a batch of `batch`, checks the plan took the path asked for
    /// and every output against the f64 reference.
    fn check(&self, kernel: SparseKernel, batch: usize) {
        let (bytes, w, bias) = self.nnz();
        let model = load(&bytes, kernel);
        let kernels = model.sparse_conv_kernels();
        // A word's index names at most 256 values: unshared kernels of more stay dense.
        let mut distinct: Vec<u32> = w
            .iter()
            .filter(|v| **v != 0.0)
            .map(|v| v.to_bits())
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        let holds = self.shared > 0 || distinct.len() <= 256;
        match kernel {
            SparseKernel::Dense => assert!(kernels.is_empty(), "{self:?}"),
            _ if !holds => assert!(kernels.is_empty(), "{self:?}"),
            SparseKernel::Portable => assert_eq!(kernels, ["portable"], "{self:?}"),
            SparseKernel::Sparse => assert_eq!(kernels, [vector_kernel()], "{self:?}"),
            SparseKernel::Auto => {}
        }
        let x = values(batch * self.c * self.hw[0] * self.hw[1], self.seed + 3);
        let dims = [batch, self.c, self.hw[0], self.hw[1]];
        let y = model.run(Tensor::from_shape(&dims, &x).unwrap()).unwrap();
        assert_eq!(
            y.shape(),
            [batch, self.n, self.out_hw()[0], self.out_hw()[1]]
        );
        let y = y.try_as_plain_ram().unwrap();
        let [want, mag] = self.reference(&w, &bias, &x, batch);
        assert_close(
            &format!("{self:?} {kernel:?} batch {batch}"),
            self.c * self.taps() + 2,
            y.as_slice::<f32>().unwrap(),
            &want,
            &mag,
        );
    }
}

fn load(bytes: &[u8], sparse: SparseKernel) -> Model {
    let options = LoadOptions {
        kernels: Some(KernelChoice {
            sparse,
            ..KernelChoice::default()
        }),
        ..LoadOptions::default()
    };
    Model::from_bytes_with(bytes, &options).unwrap()
}

/// The kernel this CPU's plan should select.
fn vector_kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        return "avx2+fma";
    }
    #[cfg(target_arch = "aarch64")]
    return "neon";
    #[allow(unreachable_code)]
    "portable"
}

/// LeNet-5's layers, padded and odd shapes, strides 2 and 3, dilation 2, a 1×k kernel.
fn geometries() -> Vec<Case> {
    let base = Case {
        n: 50,
        c: 20,
        hw: [12, 12],
        kernel: [5, 5],
        pads: [0; 4],
        strides: [1, 1],
        dilations: [1, 1],
        density: 8,
        shared: 32,
        range_coded: false,
        scaled: false,
        relu: false,
        seed: 1,
    };
    vec![
        base,
        Case {
            n: 20,
            c: 1,
            hw: [28, 28],
            density: 50,
            ..base
        },
        Case {
            n: 7,
            c: 3,
            hw: [9, 13],
            kernel: [3, 3],
            pads: [1, 1, 1, 1],
            ..base
        },
        Case {
            n: 9,
            c: 4,
            hw: [15, 17],
            kernel: [3, 3],
            pads: [1, 0, 1, 1],
            strides: [2, 2],
            ..base
        },
        Case {
            n: 5,
            c: 2,
            hw: [20, 23],
            kernel: [3, 3],
            pads: [2, 2, 0, 1],
            strides: [3, 3],
            ..base
        },
        Case {
            n: 4,
            c: 3,
            hw: [11, 11],
            kernel: [3, 3],
            pads: [2, 2, 2, 2],
            dilations: [2, 2],
            ..base
        },
        Case {
            n: 6,
            c: 2,
            hw: [5, 31],
            kernel: [1, 7],
            pads: [0, 3, 0, 3],
            ..base
        },
    ]
}

#[test]
fn sparse_convolutions_agree_with_the_f64_reference() {
    let mut seed = 10;
    for geometry in geometries() {
        for density in [0, 8, 50, 100] {
            for (shared, range_coded, scaled) in [
                (16, false, false),
                (200, true, false),
                (0, false, false),
                (32, false, true),
            ] {
                seed += 3;
                let case = Case {
                    density,
                    shared,
                    range_coded,
                    scaled,
                    relu: scaled,
                    seed,
                    ..geometry
                };
                for kernel in [
                    SparseKernel::Sparse,
                    SparseKernel::Portable,
                    SparseKernel::Dense,
                ] {
                    case.check(kernel, 1);
                }
                case.check(SparseKernel::Sparse, 3);
            }
        }
    }
}

/// The default rule takes LeNet-5's second layer at 8% and leaves it at 80%, and the compact
/// form's bytes are what it holds: a word per kept weight, a start per output channel and one
/// more, the codebook, the bias.
#[test]
fn the_rule_takes_sparse_convolutions_only_and_counts_their_bytes() {
    let case = |density| Case {
        density,
        ..geometries()[0]
    };
    let sparse = load(&case(8).nnz().0, SparseKernel::Auto);
    assert_eq!(sparse.sparse_conv_kernels().len(), 1);
    let kept = case(8)
        .kernel_record()
        .0
        .iter()
        .filter(|v| **v != 0.0)
        .count();
    let (n, shared) = (case(8).n, case(8).shared);
    assert_eq!(
        sparse.weight_bytes() as usize,
        4 * (kept + n + 1 + shared) + 4 * n
    );
    let dense = load(&case(8).nnz().0, SparseKernel::Dense);
    assert!(dense.weight_bytes() as usize >= 4 * case(8).weights());
    assert!(
        load(&case(80).nnz().0, SparseKernel::Auto)
            .sparse_conv_kernels()
            .is_empty()
    );
    case(8).check(SparseKernel::Auto, 1);
}

/// A kernel of more distinct values than a word's index holds (raw weights, 100% kept) stays on
/// tract's path, even when the sparse path is forced, and still computes.
#[test]
fn kernels_the_compact_form_cannot_hold_stay_dense() {
    let case = Case {
        n: 16,
        c: 8,
        kernel: [3, 3],
        density: 100,
        shared: 0,
        ..geometries()[0]
    };
    assert!(
        load(&case.nnz().0, SparseKernel::Sparse)
            .sparse_conv_kernels()
            .is_empty()
    );
    case.check(SparseKernel::Sparse, 2);
}
