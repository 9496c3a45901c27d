//! The operators classic image classifiers bring (LRN in AlexNet, ZFNet and GoogLeNet; Sum in
//! Caffe2's ResNet-50 and ShuffleNet; LogSoftmax), run through a `.nnz` file like any model,
//! against onnxruntime's outputs (checked in below) and a plain f64 reference; and the
//! probabilities `classify` gives for graphs that end in a softmax of their own.

#[allow(dead_code)] // the convolution suites use the rest
mod common;

use common::values;
use nnzip_core::OutputKind;
use nnzip_core::format::{NnzWriter, TensorData, TensorRecord};
use nnzip_core::metadata::{
    ColorOrder, InputSpec, Interpolation, Layout, Metadata, Preprocessing, Resize,
};
use nnzip_core::onnx::proto as pb;
use nnzip_core::{Model, Tensor};
use prost::Message;

fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        name: output.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

fn with_int(mut n: pb::NodeProto, name: &str, value: i64) -> pb::NodeProto {
    n.attribute.push(pb::AttributeProto {
        name: name.into(),
        i: value,
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        ..Default::default()
    });
    n
}

fn with_ints(mut n: pb::NodeProto, name: &str, values: &[i64]) -> pb::NodeProto {
    n.attribute.push(pb::AttributeProto {
        name: name.into(),
        ints: values.to_vec(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ..Default::default()
    });
    n
}

fn with_float(mut n: pb::NodeProto, name: &str, value: f32) -> pb::NodeProto {
    n.attribute.push(pb::AttributeProto {
        name: name.into(),
        f: value,
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        ..Default::default()
    });
    n
}

/// A graph of `nodes` from input `x` to the last node's output, with `tensors` stored in the
/// file (raw f32), packed with `recipe` as its preprocessing.
struct Graph<'a> {
    opset: i64,
    nodes: Vec<pb::NodeProto>,
    input: &'a [i64],
    output: &'a [i64],
    tensors: Vec<(&'a str, Vec<u64>, Vec<f32>)>,
    recipe: Option<Preprocessing>,
}

impl Graph<'_> {
    fn nnz(self) -> Vec<u8> {
        let last = self.nodes.last().expect("a node").output[0].clone();
        let proto = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: self.opset,
            }],
            graph: Some(pb::GraphProto {
                name: "classic".into(),
                node: self.nodes,
                input: vec![pb::ValueInfoProto::float("x", self.input)],
                output: vec![pb::ValueInfoProto::float(&last, self.output)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let metadata = Metadata {
            model_name: "classic".into(),
            input: InputSpec {
                name: "x".into(),
                shape: self.input.to_vec(),
            },
            preprocessing: self.recipe,
            ..Default::default()
        };
        let mut w = NnzWriter::new(metadata, proto.encode_to_vec());
        for (name, shape, values) in self.tensors {
            w.push(TensorRecord {
                row_scales: None,
                name: name.into(),
                shape,
                data: TensorData::RawF32(values),
            })
            .expect("a valid tensor");
        }
        w.to_bytes().expect("a valid file")
    }
}

fn run(nnz: &[u8], shape: &[usize], x: &[f32]) -> Vec<f32> {
    let model = Model::from_bytes(nnz).expect("the model loads");
    let input = Tensor::from_shape(shape, x).expect("an input");
    let y = model.run(input).expect("the model runs");
    y.to_plain_array_view::<f32>()
        .expect("f32 output")
        .iter()
        .copied()
        .collect()
}

fn lrn_graph(shape: &[i64], size: i64, alpha: f32, beta: f32, bias: f32) -> Vec<u8> {
    let n = with_int(node("LRN", &["x"], "y"), "size", size);
    let n = with_float(
        with_float(with_float(n, "alpha", alpha), "beta", beta),
        "bias",
        bias,
    );
    Graph {
        opset: 13,
        nodes: vec![n],
        input: shape,
        output: shape,
        tensors: vec![],
        recipe: None,
    }
    .nnz()
}

/// ONNX's definition of LRN, in f64.
fn lrn_reference(
    x: &[f32],
    shape: [usize; 4],
    size: usize,
    alpha: f64,
    beta: f64,
    bias: f64,
) -> Vec<f64> {
    let [n, c, h, w] = shape;
    let plane = h * w;
    let below = (size - 1) / 2;
    let above = size - 1 - below;
    let mut y = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            let lo = ch.saturating_sub(below);
            let hi = (ch + above).min(c - 1);
            for p in 0..plane {
                let at = |k: usize| x[(b * c + k) * plane + p] as f64;
                let squares: f64 = (lo..=hi).map(|k| at(k) * at(k)).sum();
                y[(b * c + ch) * plane + p] =
                    at(ch) / (bias + alpha / size as f64 * squares).powf(beta);
            }
        }
    }
    y
}

/// `[1, 5, 2, 2]`: `((7i mod 11) − 5) / 4`.
fn lrn_input() -> Vec<f32> {
    (0..20).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect()
}

#[test]
fn lrn_gives_onnxruntimes_outputs() {
    // onnxruntime 1.32 on `lrn_input()` (it refuses even sizes; ONNX defines them, see below).
    let cases: [(i64, f32, f32, f32, [f32; 20]); 3] = [
        (
            3,
            0.5,
            0.75,
            2.0,
            [
                -0.6757267, 0.2830466, -0.2760079, 0.6780608, 0.1281538, -0.4111065, 0.5500709,
                0.0, -0.5500709, 0.4111065, -0.1281538, -0.6757267, 0.2675341, -0.2675341,
                0.6757267, 0.1281538, -0.42457, 0.5520158, 0.0, -0.5579479,
            ],
        ),
        (
            5,
            1e-4,
            0.75,
            1.0,
            [
                -1.249951, 0.4999897, -0.4999902, 1.249941, 0.2499892, -0.7499818, 0.9999569, 0.0,
                -0.9999485, 0.7499705, -0.2499892, -1.249922, 0.499986, -0.4999822, 1.249951,
                0.2499902, -0.7499796, 0.9999728, 0.0, -0.9999607,
            ],
        ),
        // A window wider than the five channels.
        (
            7,
            2.0,
            0.5,
            1.0,
            [
                -0.9261982, 0.413197, -0.3704793, 0.9042991, 0.1775712, -0.5669467, 0.7409586, 0.0,
                -0.7102848, 0.5669467, -0.1852396, -0.8434348, 0.3551424, -0.3779645, 0.9261982,
                0.168687, -0.6052099, 0.771845, 0.0, -0.7559289,
            ],
        ),
    ];
    for (size, alpha, beta, bias, want) in cases {
        let got = run(
            &lrn_graph(&[1, 5, 2, 2], size, alpha, beta, bias),
            &[1, 5, 2, 2],
            &lrn_input(),
        );
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 2e-6 * w.abs().max(1.0),
                "size {size}: output {i} is {g}, onnxruntime gives {w}"
            );
        }
    }
}

#[test]
fn lrn_matches_the_definition_for_every_window_size() {
    let shape = [2, 7, 3, 4];
    let x: Vec<f32> = values(shape.iter().product(), 7)
        .iter()
        .map(|v| 3.0 * v)
        .collect();
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    for size in [1, 2, 3, 4, 5, 8, 13, 100] {
        let (alpha, beta, bias) = (0.3, 0.75, 1.5);
        let got = run(&lrn_graph(&dims, size, alpha, beta, bias), &shape, &x);
        let want = lrn_reference(
            &x,
            shape,
            size as usize,
            alpha as f64,
            beta as f64,
            bias as f64,
        );
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-5 * w.abs().max(1e-3),
                "size {size}: output {i} is {g}, expected {w}"
            );
        }
    }
}

#[test]
fn a_zero_lrn_size_is_refused_by_name() {
    let err = Model::from_bytes(&lrn_graph(&[1, 5, 2, 2], 0, 1e-4, 0.75, 1.0)).expect_err("size 0");
    let msg = err.to_string();
    assert!(msg.contains("LRN") && msg.contains("size"), "{msg}");
}

#[test]
fn sum_adds_every_input_with_broadcasting() {
    let (shape, x) = ([1usize, 3, 2, 2], values(12, 3));
    let a = vec![0.5f32, -1.0, 2.0];
    let b = vec![10.0f32, 20.0, 30.0, 40.0];
    let nnz = Graph {
        opset: 9,
        nodes: vec![node("Sum", &["x", "a", "b"], "y")],
        input: &[1, 3, 2, 2],
        output: &[1, 3, 2, 2],
        tensors: vec![
            ("a", vec![3, 1, 1], a.clone()),
            ("b", vec![2, 2], b.clone()),
        ],
        recipe: None,
    }
    .nnz();
    let got = run(&nnz, &shape, &x);
    for (c, a) in a.iter().enumerate() {
        for (p, b) in b.iter().enumerate() {
            let i = c * 4 + p;
            let want = x[i] + a + b;
            assert!(
                (got[i] - want).abs() <= 1e-5,
                "output {i}: {} against {want}",
                got[i]
            );
        }
    }
    // One input: the input itself.
    let one = Graph {
        opset: 13,
        nodes: vec![node("Sum", &["x"], "y")],
        input: &[1, 3, 2, 2],
        output: &[1, 3, 2, 2],
        tensors: vec![],
        recipe: None,
    }
    .nnz();
    assert_eq!(run(&one, &shape, &x), x);
}

/// A 2×2 RGB image classifier: the mean of each channel times 10 plus a bias, `[1, 3]` logits,
/// then `head`, the graph's last nodes, reading `logits`.
fn classifier(opset: i64, head: Vec<pb::NodeProto>, output: &[i64]) -> Vec<u8> {
    let gemm = with_int(node("Gemm", &["flat", "w", "b"], "logits"), "transB", 1);
    let mut nodes = vec![
        node("GlobalAveragePool", &["x"], "pooled"),
        node("Flatten", &["pooled"], "flat"),
        gemm,
    ];
    nodes.extend(head);
    Graph {
        opset,
        nodes,
        input: &[1, 3, 2, 2],
        output,
        tensors: vec![
            (
                "w",
                vec![3, 3],
                vec![10.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 10.0],
            ),
            ("b", vec![3], vec![0.5, 0.0, -0.5]),
        ],
        recipe: Some(Preprocessing {
            resize: Resize::Exact {
                width: 2,
                height: 2,
            },
            crop: None,
            interpolation: Interpolation::Bilinear,
            color: ColorOrder::Rgb,
            layout: Layout::Nchw,
            pixel_scale: 1.0 / 255.0,
            mean: vec![0.0],
            std: vec![1.0],
            invert: false,
        }),
    }
    .nnz()
}

/// The classifier's probabilities for a solid colour: the softmax of its logits, in f64 (what
/// onnxruntime computes for the graph, up to f32 rounding).
fn expected_probabilities(rgb: [u8; 3]) -> Vec<f64> {
    let bias = [0.5, 0.0, -0.5];
    let logits: Vec<f64> = (0..3)
        .map(|k| 10.0 * rgb[k] as f64 / 255.0 + bias[k])
        .collect();
    let max = logits.iter().copied().fold(f64::MIN, f64::max);
    let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

fn solid_png(rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(2, 2, image::Rgb(rgb));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("a PNG");
    out.into_inner()
}

fn assert_classified_as_expected(nnz: &[u8], kind: OutputKind) {
    let model = Model::from_bytes(nnz).expect("the model loads");
    assert_eq!(model.output_kind(), kind);
    let rgb = [200, 90, 30];
    let want = expected_probabilities(rgb);
    let top = model.classify(&solid_png(rgb), 3).expect("classified");
    assert_eq!(
        top.iter().map(|p| p.index).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    for p in &top {
        assert!(
            (p.probability as f64 - want[p.index]).abs() < 1e-6,
            "{kind:?}: class {} has {}, the model means {}",
            p.index,
            p.probability,
            want[p.index]
        );
    }
}

#[test]
fn a_graph_ending_in_softmax_is_classified_with_its_own_probabilities() {
    let softmax = node("Softmax", &["logits"], "probs");
    assert_classified_as_expected(
        &classifier(13, vec![softmax], &[1, 3]),
        OutputKind::Probabilities,
    );
}

#[test]
fn a_softmax_followed_by_reshapes_and_identity_still_gives_probabilities() {
    // SqueezeNet's ending: a [1, C, 1, 1] softmax of operator set 9 (normalised from axis 1 on).
    let head = vec![
        with_ints(node("Unsqueeze", &["logits"], "tall"), "axes", &[2, 3]),
        node("Softmax", &["tall"], "probs"),
        node("Flatten", &["probs"], "flat_probs"),
        node("Identity", &["flat_probs"], "out"),
    ];
    assert_classified_as_expected(&classifier(9, head, &[1, 3]), OutputKind::Probabilities);
}

#[test]
fn a_graph_ending_in_log_softmax_is_exponentiated() {
    let log_softmax = node("LogSoftmax", &["logits"], "log_probs");
    assert_classified_as_expected(
        &classifier(13, vec![log_softmax], &[1, 3]),
        OutputKind::LogProbabilities,
    );
}

#[test]
fn logits_and_a_softmax_over_another_axis_are_softmaxed_by_classify() {
    assert_classified_as_expected(&classifier(13, vec![], &[1, 3]), OutputKind::Logits);
    let after = vec![
        node("Softmax", &["logits"], "p"),
        node("Relu", &["p"], "relu_p"),
    ];
    let model = Model::from_bytes(&classifier(13, after, &[1, 3])).expect("loads");
    assert_eq!(
        model.output_kind(),
        OutputKind::Logits,
        "a node after the softmax"
    );
    let across_batch = with_int(node("Softmax", &["logits"], "p"), "axis", 0);
    let model = Model::from_bytes(&classifier(13, vec![across_batch], &[1, 3])).expect("loads");
    assert_eq!(
        model.output_kind(),
        OutputKind::Logits,
        "a softmax over the batch axis"
    );
}

/// Caffe2's AlexNet, SqueezeNet and VGG-19 name Dropout's mask without reading it. (A mask that
/// is read is all true in inference: `reader_ops.rs` checks that case.)
#[test]
fn a_dropout_mask_named_but_unread_is_accepted() {
    let mut dropout = node("Dropout", &["x"], "y");
    dropout.output.push("mask".into());
    let unread = Graph {
        opset: 9,
        nodes: vec![dropout],
        input: &[1, 4],
        output: &[1, 4],
        tensors: vec![],
        recipe: None,
    }
    .nnz();
    let x = [1.0, -2.0, 3.0, -4.0];
    assert_eq!(run(&unread, &[1, 4], &x), x);
}
