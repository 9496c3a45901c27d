//! Pruned, shared weights run from their compact form (`nnzip_core::kernels::sparse`) against
//! tract's dense product and an f64 reference: `Gemm` (with and without `transB`), `MatMul`
//! and 1×1 `Conv` layers of many shapes and densities, stored as shared-sparse and
//! shared-sparse-ac tensors with 4-bit and 8-bit codebooks (and unshared values), at batch 1
//! and batch 3, on the vector kernel of this CPU (AVX2+FMA on x86_64, NEON on aarch64 under
//! qemu by `scripts/test-arm64.sh`) and on the plain-Rust one. Each case checks that its plan
//! took the path asked for.
//!
//! The bound: a sum of `K` products rounds, in any order, to within `K · ε · Σ|w_k x_k|` of its
//! exact value (ε = 2^-23 here, twice the unit roundoff); both paths are checked against it.

mod common;

use common::{assert_close, values};
use nnzip_core::format::{NnzWriter, TensorData, TensorRecord, round_row_scale};
use nnzip_core::kernels::{KernelChoice, SparseKernel};
use nnzip_core::metadata::{InputSpec, Metadata};
use nnzip_core::onnx::proto as pb;
use nnzip_core::{LoadOptions, Model, Tensor};
use prost::Message;

/// How the weight reaches the graph.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layer {
    /// `Gemm(x, W, b)` with `W` of shape `[n, k]` and `transB = 1` (PyTorch's export).
    GemmTransB,
    /// `MatMul(x, W)` with `W` of shape `[k, n]`.
    MatMul,
    /// `Conv(x, W, b)` with a `[n, k, 1, 1]` kernel on `[batch, k, 3, 5]` data.
    Conv1x1,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    layer: Layer,
    n: usize,
    k: usize,
    /// Percent of weights kept.
    density: u32,
    /// Codebook size (0: every kept weight its own value).
    shared: usize,
    range_coded: bool,
    /// Whether the file stores row scales (one per index of the stored first dimension: the
    /// output rows of `Gemm` and `Conv`, the inputs of `MatMul`).
    scaled: bool,
    /// Whether a `Relu` follows (the sparse operator takes it in, with the bias).
    relu: bool,
    seed: u64,
}

const PLANE: [usize; 2] = [3, 5];

impl Case {
    /// The weight as `[n, k]` row-major values (output row `r`, input column `c`), and the
    /// record that stores it.
    fn weight(&self) -> (Vec<f32>, TensorRecord) {
        let (n, k) = (self.n, self.k);
        let keep = values(n * k, self.seed);
        let magnitude = values(n * k, self.seed + 1);
        let codebook: Vec<f32> = if self.shared > 0 {
            std::iter::once(0.0)
                .chain((1..self.shared).map(|i| (i as f32 - self.shared as f32 / 2.0 - 0.5) / 8.0))
                .collect()
        } else {
            Vec::new()
        };
        let mut indices = vec![0u16; n * k];
        let mut dense = vec![0f32; n * k];
        let first_dim = if self.layer == Layer::MatMul { k } else { n };
        let scales: Vec<f32> = (0..first_dim)
            .map(|i| round_row_scale(0.3 + (i % 7) as f32 * 0.37))
            .collect();
        let scale = |i: usize| {
            let stored_row = if self.layer == Layer::MatMul {
                i % k
            } else {
                i / k
            };
            if self.scaled { scales[stored_row] } else { 1.0 }
        };
        for i in 0..n * k {
            if (keep[i] + 1.0) * 50.0 < self.density as f32 {
                if self.shared > 0 {
                    let idx = 1 + ((magnitude[i] + 1.0) / 2.0 * (self.shared - 1) as f32) as usize;
                    let idx = idx.min(self.shared - 1);
                    indices[i] = idx as u16;
                    dense[i] = codebook[idx] * scale(i);
                } else {
                    dense[i] = magnitude[i] + 1.5 * magnitude[i].signum();
                }
            }
        }
        // Stored as the graph reads it: [n, k] for Gemm with transB and Conv, [k, n] for MatMul.
        let (stored_indices, stored_dense): (Vec<u16>, Vec<f32>) = if self.layer == Layer::MatMul {
            let t = |r: usize| (r % k) * n + r / k;
            let mut si = vec![0u16; n * k];
            let mut sd = vec![0f32; n * k];
            for r in 0..n * k {
                si[t(r)] = indices[r];
                sd[t(r)] = dense[r];
            }
            (si, sd)
        } else {
            (indices, dense.clone())
        };
        let shape: Vec<u64> = match self.layer {
            Layer::GemmTransB => vec![n as u64, k as u64],
            Layer::MatMul => vec![k as u64, n as u64],
            Layer::Conv1x1 => vec![n as u64, k as u64, 1, 1],
        };
        let index_bits = (usize::BITS - (self.shared.max(2) - 1).leading_zeros()) as u8;
        let data = match (self.shared, self.range_coded) {
            (0, _) => TensorData::RawF32(stored_dense),
            (_, true) => TensorData::SharedSparseAc {
                codebook,
                indices: stored_indices,
                index_bits,
            },
            (_, false) => TensorData::SharedSparse {
                codebook,
                indices: stored_indices,
                index_bits,
                gap_bits: 4,
            },
        };
        let record = TensorRecord {
            name: "w".into(),
            shape,
            data,
            row_scales: (self.scaled && self.shared > 0).then_some(scales),
        };
        (dense, record)
    }

    fn input_dims(&self) -> Vec<i64> {
        match self.layer {
            Layer::Conv1x1 => vec![-1, self.k as i64, PLANE[0] as i64, PLANE[1] as i64],
            _ => vec![-1, self.k as i64],
        }
    }

    /// The one-layer model, its `[n, k]` weight and its bias.
    fn nnz(&self) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
        let (dense, record) = self.weight();
        let bias = values(self.n, self.seed + 2);
        let (op_type, inputs, attribute) = match self.layer {
            Layer::GemmTransB => (
                "Gemm",
                vec!["x", "w", "b"],
                vec![pb::AttributeProto {
                    name: "transB".into(),
                    r#type: pb::attribute_proto::AttributeType::Int as i32,
                    i: 1,
                    ..Default::default()
                }],
            ),
            Layer::MatMul => ("MatMul", vec!["x", "w"], vec![]),
            Layer::Conv1x1 => ("Conv", vec!["x", "w", "b"], vec![]),
        };
        let mut out_dims = self.input_dims();
        out_dims[1] = self.n as i64;
        let proto = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(pb::GraphProto {
                name: "layer".into(),
                node: std::iter::once(pb::NodeProto {
                    name: "layer".into(),
                    op_type: op_type.into(),
                    input: inputs.iter().map(|s| s.to_string()).collect(),
                    output: vec![if self.relu { "sum" } else { "y" }.into()],
                    attribute,
                    ..Default::default()
                })
                .chain(self.relu.then(|| pb::NodeProto {
                    name: "relu".into(),
                    op_type: "Relu".into(),
                    input: vec!["sum".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                }))
                .collect(),
                input: vec![pb::ValueInfoProto::float("x", &self.input_dims())],
                output: vec![pb::ValueInfoProto::float("y", &out_dims)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let metadata = Metadata {
            model_name: "layer".into(),
            input: InputSpec {
                name: "x".into(),
                shape: self.input_dims(),
            },
            ..Default::default()
        };
        let mut w = NnzWriter::new(metadata, proto.encode_to_vec());
        w.push(record).unwrap();
        let uses_bias = self.layer != Layer::MatMul;
        if uses_bias {
            w.push(TensorRecord {
                name: "b".into(),
                shape: vec![self.n as u64],
                data: TensorData::RawF32(bias.clone()),
                row_scales: None,
            })
            .unwrap();
        }
        let bias = if uses_bias { bias } else { vec![0.0; self.n] };
        (w.to_bytes().unwrap(), dense, bias)
    }

    /// Loads with `kernel`, runs a batch of `batch`, checks the plan took the path asked for
    /// and every output against the f64 reference.
    fn check(&self, kernel: SparseKernel, batch: usize) {
        let (bytes, w, bias) = self.nnz();
        let options = LoadOptions {
            kernels: Some(KernelChoice {
                sparse: kernel,
                ..KernelChoice::default()
            }),
            ..LoadOptions::default()
        };
        let model = Model::from_bytes_with(&bytes, &options).unwrap();
        let kernels = model.sparse_kernels();
        match kernel {
            SparseKernel::Dense => assert!(kernels.is_empty(), "{self:?}"),
            SparseKernel::Portable => assert_eq!(kernels, ["portable"], "{self:?}"),
            SparseKernel::Sparse => assert_eq!(kernels, [vector_kernel()], "{self:?}"),
            SparseKernel::Auto => {}
        }
        let plane: usize = if self.layer == Layer::Conv1x1 {
            PLANE.iter().product()
        } else {
            1
        };
        let (n, k) = (self.n, self.k);
        let mut dims: Vec<usize> = self.input_dims().iter().map(|&d| d as usize).collect();
        dims[0] = batch;
        let x = values(batch * k * plane, self.seed + 3);
        let y = model.run(Tensor::from_shape(&dims, &x).unwrap()).unwrap();
        let y = y.try_as_plain_ram().unwrap();
        let y = y.as_slice::<f32>().unwrap();
        let (mut want, mut mag) = (vec![], vec![]);
        for b in 0..batch {
            for r in 0..n {
                for p in 0..plane {
                    let (mut sum, mut abs) = (bias[r] as f64, bias[r].abs() as f64);
                    for c in 0..k {
                        let t = w[r * k + c] as f64 * x[(b * k + c) * plane + p] as f64;
                        sum += t;
                        abs += t.abs();
                    }
                    want.push(if self.relu { sum.max(0.0) } else { sum });
                    mag.push(abs);
                }
            }
        }
        assert_close(
            &format!("{self:?} {kernel:?} batch {batch}"),
            k + 1,
            y,
            &want,
            &mag,
        );
    }
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

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut seed = 1;
    for layer in [Layer::GemmTransB, Layer::MatMul, Layer::Conv1x1] {
        for (n, k) in [(1, 1), (10, 100), (37, 19), (300, 784), (8, 33)] {
            for density in [0, 3, 25, 100] {
                for (shared, range_coded) in [(16, false), (200, true), (0, false)] {
                    seed += 1;
                    // The large layer once per layer kind: enough for its row lengths.
                    if n == 300 && (density != 3 || shared != 16) {
                        continue;
                    }
                    cases.push(Case {
                        layer,
                        n,
                        k,
                        density,
                        shared,
                        range_coded,
                        scaled: false,
                        relu: false,
                        seed,
                    });
                    // Row-scaled files: the scales stay beside the codebook indices (rows of
                    // Gemm and Conv) or multiply the values (inputs of MatMul); a ReLU after.
                    if n == 37 && density == 25 && shared > 0 {
                        seed += 1;
                        cases.push(Case {
                            layer,
                            n,
                            k,
                            density,
                            shared,
                            range_coded,
                            scaled: true,
                            relu: true,
                            seed,
                        });
                    }
                }
            }
        }
    }
    cases
}

#[test]
fn sparse_and_dense_paths_agree_within_the_rounding_bound() {
    for case in cases() {
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

/// The default rule takes a sparse layer and leaves a dense one, and the compact form holds
/// fewer bytes than the dense weight.
#[test]
fn the_rule_takes_sparse_layers_only() {
    let case = |density| Case {
        layer: Layer::GemmTransB,
        n: 300,
        k: 784,
        density,
        shared: 16,
        range_coded: true,
        scaled: false,
        relu: false,
        seed: 7,
    };
    let load = |c: Case, kernel| {
        let options = LoadOptions {
            kernels: Some(KernelChoice {
                sparse: kernel,
                ..KernelChoice::default()
            }),
            ..LoadOptions::default()
        };
        Model::from_bytes_with(&c.nnz().0, &options).unwrap()
    };
    let sparse = load(case(3), SparseKernel::Auto);
    assert_eq!(sparse.sparse_kernels().len(), 1);
    let dense = load(case(3), SparseKernel::Dense);
    assert!(dense.sparse_kernels().is_empty());
    // 3% of 235,200 weights at 2 bytes each (a 12-bit column and a 4-bit index), 4 bytes of
    // offset and 2 of order per row, the 16-value codebook and the entries' padding, and the
    // bias's 300 f32,
    // against 4 bytes per weight (and tract's packing) on the dense path.
    let kept = 0.03 * 300.0 * 784.0;
    let most = (2.0 * kept * 1.05) as u64 + 4 * 301 + 2 * 300 + 4 * 16 + 2 * 16 + 4 * 300;
    assert!(
        sparse.weight_bytes() <= most,
        "{} bytes, {most} at most",
        sparse.weight_bytes()
    );
    assert!(
        sparse.weight_bytes() * 10 < dense.weight_bytes(),
        "{} vs {}",
        sparse.weight_bytes(),
        dense.weight_bytes()
    );
    assert!(dense.weight_bytes() >= 4 * 300 * 784);
    assert!(
        load(case(80), SparseKernel::Auto)
            .sparse_kernels()
            .is_empty()
    );
    case(3).check(SparseKernel::Auto, 1);
}

/// The rule leaves EfficientNet-Lite0 dense (its app model prunes none of its 1×1 convolutions
/// nor its classifier: weight sharing leaves at most a few weights at zero) and takes the
/// LeNet presets' layers (`lenet300-78x`: 3, 6, 25%; `lenet5-100x`: 2, 15%).
#[test]
fn the_rule_leaves_efficientnet_dense_and_takes_the_lenet_presets() {
    use nnzip_core::kernels::sparse::prefers_sparse;
    // (input channels, output channels, pixels) of every 1×1 convolution, then the classifier.
    let pointwise = [
        (32, 16, 112 * 112),
        (16, 96, 112 * 112),
        (96, 24, 56 * 56),
        (24, 144, 56 * 56),
        (144, 24, 56 * 56),
        (144, 40, 28 * 28),
        (40, 240, 28 * 28),
        (240, 40, 28 * 28),
        (240, 80, 14 * 14),
        (80, 480, 14 * 14),
        (480, 80, 14 * 14),
        (480, 112, 14 * 14),
        (112, 672, 14 * 14),
        (672, 112, 14 * 14),
        (672, 192, 7 * 7),
        (192, 1152, 7 * 7),
        (1152, 192, 7 * 7),
        (1152, 320, 7 * 7),
        (320, 1280, 7 * 7),
        (1280, 1000, 1),
    ];
    for (k, n, plane) in pointwise {
        for density in [1.0, 0.9, 0.5] {
            let kept = (density * (n * k) as f64) as usize;
            assert!(
                !prefers_sparse(kept, n, k, plane),
                "{n}×{k}×{plane} at {density}"
            );
        }
    }
    for (n, k, density) in [
        (300, 784, 0.03),
        (100, 300, 0.06),
        (10, 100, 0.25),
        (500, 800, 0.02),
        (10, 500, 0.15),
    ] {
        let kept = (density * (n * k) as f64) as usize;
        assert!(prefers_sparse(kept, n, k, 1), "{n}×{k} at {density}");
    }
}

/// A perceptron of pruned `Gemm` layers (`transB`), each with its bias, a ReLU after each but
/// the last: the sparse products of such a chain run fused in one operator
/// (`nnzip_core::kernels::sparse::chain`).
struct Perceptron {
    /// Inputs, then each layer's outputs.
    widths: Vec<usize>,
    /// Percent of weights kept, per layer.
    densities: Vec<u32>,
    shared: usize,
    range_coded: bool,
    /// Whether the first layer's output (after its ReLU) is also a model output.
    first_is_output: bool,
    seed: u64,
}

/// A layer's `[n, k]` weight and its bias.
type Dense = (Vec<f32>, Vec<f32>);

impl Perceptron {
    fn layers(&self) -> usize {
        self.widths.len() - 1
    }

    /// The model and each layer's weight and bias.
    fn nnz(&self) -> (Vec<u8>, Vec<Dense>) {
        let mut records = Vec::new();
        let mut dense = Vec::new();
        let mut nodes = Vec::new();
        let value = |i: usize| {
            if i == 0 {
                "x".to_string()
            } else {
                format!("x{i}")
            }
        };
        for i in 0..self.layers() {
            let case = Case {
                layer: Layer::GemmTransB,
                n: self.widths[i + 1],
                k: self.widths[i],
                density: self.densities[i],
                shared: self.shared,
                range_coded: self.range_coded,
                scaled: false,
                relu: false,
                seed: self.seed + 10 * i as u64,
            };
            let (w, mut record) = case.weight();
            record.name = format!("w{i}");
            records.push(record);
            let bias = values(case.n, case.seed + 2);
            records.push(TensorRecord {
                name: format!("b{i}"),
                shape: vec![case.n as u64],
                data: TensorData::RawF32(bias.clone()),
                row_scales: None,
            });
            dense.push((w, bias));
            let last = i + 1 == self.layers();
            let sum = if last {
                "y".to_string()
            } else {
                format!("s{i}")
            };
            nodes.push(pb::NodeProto {
                name: format!("fc{i}"),
                op_type: "Gemm".into(),
                input: vec![value(i), format!("w{i}"), format!("b{i}")],
                output: vec![sum.clone()],
                attribute: vec![pb::AttributeProto {
                    name: "transB".into(),
                    r#type: pb::attribute_proto::AttributeType::Int as i32,
                    i: 1,
                    ..Default::default()
                }],
                ..Default::default()
            });
            if !last {
                nodes.push(pb::NodeProto {
                    name: format!("relu{i}"),
                    op_type: "Relu".into(),
                    input: vec![sum],
                    output: vec![value(i + 1)],
                    ..Default::default()
                });
            }
        }
        let dims = |w: usize| vec![-1, w as i64];
        let mut outputs = vec![pb::ValueInfoProto::float(
            "y",
            &dims(self.widths[self.layers()]),
        )];
        if self.first_is_output {
            outputs.push(pb::ValueInfoProto::float("x1", &dims(self.widths[1])));
        }
        let proto = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(pb::GraphProto {
                name: "perceptron".into(),
                node: nodes,
                input: vec![pb::ValueInfoProto::float("x", &dims(self.widths[0]))],
                output: outputs,
                ..Default::default()
            }),
            ..Default::default()
        };
        let metadata = Metadata {
            model_name: "perceptron".into(),
            input: InputSpec {
                name: "x".into(),
                shape: dims(self.widths[0]),
            },
            ..Default::default()
        };
        let mut w = NnzWriter::new(metadata, proto.encode_to_vec());
        for record in records {
            w.push(record).unwrap();
        }
        (w.to_bytes().unwrap(), dense)
    }

    /// The exact outputs of every layer for the input `x` (one sample), and the bound on each
    /// computed output's distance from them. A layer of `K` inputs computes from inputs that are
    /// themselves within `e_c` of the exact ones: its sum rounds to within `(K + 1) · ε ·
    /// (|b| + Σ|w_c| (|x_c| + e_c))` of the sum of what it computed from, which is within
    /// `Σ|w_c| e_c` of the exact sum; a ReLU moves neither bound.
    fn reference(&self, dense: &[Dense], x: &[f32]) -> Vec<(Vec<f64>, Vec<f64>)> {
        let mut values: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let mut errors = vec![0f64; x.len()];
        let mut out = Vec::new();
        for (i, (w, b)) in dense.iter().enumerate() {
            let (n, k) = (self.widths[i + 1], self.widths[i]);
            let (mut next, mut bound) = (vec![0f64; n], vec![0f64; n]);
            for r in 0..n {
                let (mut sum, mut size, mut carried) =
                    (f64::from(b[r]), f64::from(b[r]).abs(), 0.0);
                for c in 0..k {
                    let wc = f64::from(w[r * k + c]);
                    sum += wc * values[c];
                    size += wc.abs() * (values[c].abs() + errors[c]);
                    carried += wc.abs() * errors[c];
                }
                let last = i + 1 == self.layers();
                next[r] = if last { sum } else { sum.max(0.0) };
                bound[r] = (k + 1) as f64 * f64::from(f32::EPSILON) * size + carried + 1e-30;
            }
            out.push((next.clone(), bound.clone()));
            values = next;
            errors = bound;
        }
        out
    }

    /// Loads with `kernel`, checks which layers run sparse and how they are fused, runs
    /// `inputs` as one batch, checks every output within the bound.
    fn check(&self, kernel: SparseKernel, inputs: &[Vec<f32>], chains: &[usize]) {
        let (bytes, dense) = self.nnz();
        let options = LoadOptions {
            kernels: Some(KernelChoice {
                sparse: kernel,
                ..KernelChoice::default()
            }),
            ..LoadOptions::default()
        };
        let model = Model::from_bytes_with(&bytes, &options).unwrap();
        let what = format!("{:?} at {:?}% {kernel:?}", self.widths, self.densities);
        let expected_kernels = match kernel {
            SparseKernel::Dense => vec![],
            SparseKernel::Portable => vec!["portable"; self.layers()],
            _ => vec![vector_kernel(); self.layers()],
        };
        assert_eq!(model.sparse_kernels(), expected_kernels, "{what}");
        assert_eq!(model.sparse_chains(), chains, "{what}");
        let batch = inputs.len();
        let k = self.widths[0];
        let x: Vec<f32> = inputs.concat();
        let outputs = model
            .run_all(vec![Tensor::from_shape(&[batch, k], &x).unwrap()])
            .unwrap();
        let want: Vec<_> = inputs.iter().map(|x| self.reference(&dense, x)).collect();
        // The last layer's output, and the first's where the graph exports it.
        let exported = [self.layers() - 1]
            .into_iter()
            .chain(self.first_is_output.then_some(0));
        for (output, layer) in outputs.iter().zip(exported) {
            let got = output.try_as_plain_ram().unwrap();
            let got = got.as_slice::<f32>().unwrap();
            let width = self.widths[layer + 1];
            assert_eq!(got.len(), batch * width, "{what}");
            for (s, sample) in want.iter().enumerate() {
                let (exact, bound) = &sample[layer];
                for r in 0..width {
                    let g = f64::from(got[s * width + r]);
                    assert!(
                        (g - exact[r]).abs() <= bound[r],
                        "{what} sample {s} layer {layer} output {r}: {g} vs {} (bound {:e})",
                        exact[r],
                        bound[r]
                    );
                }
            }
        }
    }
}

/// Inputs of `k` values: random, all zero, and mostly zero (as a ReLU's output or a dark
/// image's pixels).
fn chain_inputs(k: usize, seed: u64) -> Vec<Vec<f32>> {
    let random = values(k, seed);
    let mostly_zero = random
        .iter()
        .enumerate()
        .map(|(i, &v)| if i % 5 == 0 { v } else { 0.0 })
        .collect();
    vec![random, vec![0.0; k], mostly_zero]
}

/// LeNet-300-100's shape at the preset's densities and odd shapes at several densities, as a
/// fused chain (vector and portable kernels) and dense, batch 1 and 3, within the propagated
/// bound.
#[test]
fn fused_chains_agree_with_the_reference_within_the_propagated_bound() {
    let perceptrons = [
        (vec![784, 300, 100, 10], vec![3, 6, 25], 16, true),
        (vec![19, 37, 8, 1], vec![25, 100, 100], 200, true),
        (vec![33, 9, 17], vec![3, 50], 0, false),
        (vec![100, 300, 12, 40, 7], vec![10, 0, 25, 60], 16, false),
    ];
    for (seed, (widths, densities, shared, range_coded)) in perceptrons.into_iter().enumerate() {
        let p = Perceptron {
            widths,
            densities,
            shared,
            range_coded,
            first_is_output: false,
            seed: 100 + 7 * seed as u64,
        };
        let inputs = chain_inputs(p.widths[0], p.seed + 5);
        let whole = [p.layers()];
        for kernel in [SparseKernel::Sparse, SparseKernel::Portable] {
            for input in &inputs {
                p.check(kernel, std::slice::from_ref(input), &whole);
            }
            p.check(kernel, &inputs, &whole);
        }
        p.check(SparseKernel::Dense, &inputs, &[]);
    }
}

/// A layer whose output is also a model output ends no chain there: the products after it
/// fuse, it runs on its own, and both outputs are right.
#[test]
fn a_product_whose_output_is_exported_is_not_fused_into_the_next() {
    let p = Perceptron {
        widths: vec![50, 40, 30, 20],
        densities: vec![10, 10, 10],
        shared: 16,
        range_coded: true,
        first_is_output: true,
        seed: 41,
    };
    let inputs = chain_inputs(50, 42);
    p.check(SparseKernel::Sparse, &inputs, &[2]);
    p.check(SparseKernel::Sparse, &inputs[..1], &[2]);
}

/// The rule's choice breaks chains: a dense layer between sparse ones leaves those on each side
/// unfused, and the LeNet-300-100 preset's three layers fuse into one.
#[test]
fn the_rule_fuses_the_lenet300_preset_and_breaks_chains_at_dense_layers() {
    let lenet = Perceptron {
        widths: vec![784, 300, 100, 10],
        densities: vec![3, 6, 25],
        shared: 16,
        range_coded: true,
        first_is_output: false,
        seed: 3,
    };
    let inputs = chain_inputs(784, 4);
    lenet.check(SparseKernel::Auto, &inputs, &[3]);
    let broken = Perceptron {
        widths: vec![784, 300, 100, 10],
        densities: vec![3, 90, 25],
        shared: 16,
        range_coded: true,
        first_is_output: false,
        seed: 5,
    };
    let (bytes, _) = broken.nnz();
    let model = Model::from_bytes(&bytes).unwrap();
    assert_eq!(model.sparse_kernels().len(), 2);
    assert!(model.sparse_chains().is_empty());
}

/// Fused, a chain gives the very bits its layers give run one by one (each layer keeps its
/// kernel and epilogue), batch 1 and 3.
#[test]
fn a_fused_chain_gives_the_bits_of_its_layers_run_separately() {
    use nnzip_core::kernels::SparseChains;
    let p = Perceptron {
        widths: vec![784, 300, 100, 10],
        densities: vec![3, 6, 25],
        shared: 16,
        range_coded: true,
        first_is_output: false,
        seed: 77,
    };
    let (bytes, _) = p.nnz();
    let load = |sparse_chains| {
        let options = LoadOptions {
            kernels: Some(KernelChoice {
                sparse: SparseKernel::Sparse,
                sparse_chains,
                ..KernelChoice::default()
            }),
            ..LoadOptions::default()
        };
        Model::from_bytes_with(&bytes, &options).unwrap()
    };
    let (fused, separate) = (load(SparseChains::Fused), load(SparseChains::Separate));
    assert_eq!(fused.sparse_chains(), [3]);
    assert!(separate.sparse_chains().is_empty());
    assert_eq!(separate.sparse_kernels().len(), 3);
    assert_eq!(fused.weight_bytes(), separate.weight_bytes());
    let inputs = chain_inputs(784, 78);
    for batch in [&inputs[..1], &inputs[..]] {
        let x = Tensor::from_shape(&[batch.len(), 784], &batch.concat()).unwrap();
        let bits = |m: &Model| {
            let y = m.run(x.clone()).unwrap();
            let y = y.try_as_plain_ram().unwrap();
            y.as_slice::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&fused), bits(&separate));
    }
}
