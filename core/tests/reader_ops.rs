//! Operator semantics ONNX's conformance tests showed the reader missing: each builds a small
//! graph, translates it with the reader and runs it in tract.

use nnzip_core::onnx::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto,
};
use nnzip_core::onnx::typed_model_from_onnx;
use tract_core::prelude::*;

/// A one-node graph of `op` at `opset`, its inputs all graph inputs of these shapes.
fn one_node(op: &str, opset: i64, inputs: &[(&str, &[i64])], out: &[i64]) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            node: vec![NodeProto {
                name: format!("the_{op}"),
                input: inputs.iter().map(|(n, _)| n.to_string()).collect(),
                output: vec!["y".into()],
                op_type: op.into(),
                ..Default::default()
            }],
            input: inputs
                .iter()
                .map(|(n, d)| ValueInfoProto::float(n, d))
                .collect(),
            output: vec![ValueInfoProto::float("y", out)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn run(model: &ModelProto, inputs: Vec<Tensor>) -> Tensor {
    let typed = typed_model_from_onnx(model, vec![], None).unwrap();
    let plan = typed.into_runnable().unwrap();
    let inputs = inputs.into_iter().map(|t| t.into_tvalue()).collect();
    plan.run(inputs).unwrap().remove(0).into_tensor()
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.try_as_plain_ram()
        .unwrap()
        .as_slice::<f32>()
        .unwrap()
        .to_vec()
}

#[test]
fn clip_takes_bounds_computed_by_the_graph() {
    let model = one_node("Clip", 13, &[("x", &[4]), ("lo", &[]), ("hi", &[])], &[4]);
    let x = tensor1(&[-2.0f32, 0.5, 3.0, -0.5]);
    let y = run(&model, vec![x.clone(), tensor0(-1.0f32), tensor0(1.0f32)]);
    assert_eq!(floats(&y), [-1.0, 0.5, 1.0, -0.5]);
    // ONNX: with min above max, every value is max.
    let y = run(&model, vec![x, tensor0(2.0f32), tensor0(1.0f32)]);
    assert_eq!(floats(&y), [1.0; 4]);
}

#[test]
fn clip_refuses_a_bound_that_is_not_a_scalar() {
    let model = one_node("Clip", 13, &[("x", &[4]), ("lo", &[4])], &[4]);
    let err = typed_model_from_onnx(&model, vec![], None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the_Clip") && err.contains("input 1 must be a scalar"),
        "{err}"
    );
}

#[test]
fn inference_dropout_ignores_a_ratio_computed_by_the_graph() {
    let model = one_node("Dropout", 13, &[("x", &[3]), ("ratio", &[])], &[3]);
    let x = tensor1(&[1.0f32, -2.0, 3.0]);
    let y = run(&model, vec![x.clone(), tensor0(0.7f32)]);
    assert_eq!(y, x);
}

#[test]
fn matmul_of_two_vectors_is_their_dot_product() {
    let model = one_node("MatMul", 13, &[("a", &[3]), ("b", &[3])], &[]);
    let y = run(
        &model,
        vec![tensor1(&[1.0f32, 2.0, 3.0]), tensor1(&[4.0f32, -5.0, 6.0])],
    );
    assert_eq!(y.rank(), 0);
    assert_eq!(floats(&y), [12.0]);
}

#[test]
fn batch_normalization_takes_statistics_computed_by_the_graph() {
    let c = &[2i64][..];
    let model = one_node(
        "BatchNormalization",
        15,
        &[
            ("x", &[1, 2, 1, 2]),
            ("scale", c),
            ("bias", c),
            ("mean", c),
            ("var", c),
        ],
        &[1, 2, 1, 2],
    );
    let x = Tensor::from_shape(&[1, 2, 1, 2], &[1.0f32, 3.0, -2.0, 4.0]).unwrap();
    let (scale, bias, mean, var) = ([2.0f32, 0.5], [1.0f32, -1.0], [1.0f32, 2.0], [4.0f32, 1.0]);
    let y = run(
        &model,
        vec![
            x,
            tensor1(&scale),
            tensor1(&bias),
            tensor1(&mean),
            tensor1(&var),
        ],
    );
    // (x - mean) / sqrt(var + 1e-5) * scale + bias, per channel.
    let expected: Vec<f32> = [(1.0f32, 0), (3.0, 0), (-2.0, 1), (4.0, 1)]
        .iter()
        .map(|&(v, k)| (v - mean[k]) / (var[k] + 1e-5).sqrt() * scale[k] + bias[k])
        .collect();
    let got = floats(&y);
    assert!(
        got.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-6),
        "{got:?} vs {expected:?}"
    );
}

#[test]
fn inference_dropout_gives_an_all_true_mask() {
    let mut model = one_node("Dropout", 13, &[("x", &[2, 2])], &[2, 2]);
    let graph = model.graph.as_mut().unwrap();
    graph.node[0].output.push("mask".into());
    graph.output.push(ValueInfoProto::float("mask", &[2, 2]));
    let typed = typed_model_from_onnx(&model, vec![], None).unwrap();
    let plan = typed.into_runnable().unwrap();
    let x = Tensor::from_shape(&[2, 2], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let out = plan.run(tvec!(x.clone().into_tvalue())).unwrap();
    assert_eq!(*out[0], x);
    assert_eq!(
        out[1].clone().into_tensor(),
        Tensor::from_shape(&[2, 2], &[true; 4]).unwrap()
    );
}
