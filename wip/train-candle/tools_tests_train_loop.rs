//! Training on real data, fast enough for CI: 2,000 Fashion-MNIST images, one epoch.

use candle_core::Tensor;
use nnzip_tools::data::{Split, load_idx_split, resolve_idx_dir};
use nnzip_tools::train::graph::TrainGraph;
use nnzip_tools::train::init::init_model;
use nnzip_tools::train::{TrainConfig, cross_entropy, train};
use std::collections::HashMap;

fn data(split: Split, n: usize) -> nnzip_tools::data::ImageSet {
    let dir = resolve_idx_dir("fashion-mnist")
        .expect("Fashion-MNIST: scripts/test.sh installs dataset-fashion-mnist");
    let mut s = load_idx_split(&dir, split).unwrap();
    s.truncate(n);
    s
}

fn accuracy(g: &mut TrainGraph, set: &nnzip_tools::data::ImageSet) -> f64 {
    let (x, shape) = set.batch(0..set.len());
    let x = Tensor::from_vec(x, shape, g.device()).unwrap();
    let logits = g.forward(&x, false).unwrap();
    cross_entropy(&logits, &set.labels).unwrap().1 as f64 / set.len() as f64
}

fn quick() -> TrainConfig {
    TrainConfig {
        epochs: 1,
        lr: 0.05,
        batch: 64,
        progress: false,
        ..Default::default()
    }
}

#[test]
fn lenet300_learns_from_2000_images() {
    let train_set = data(Split::Train, 2000);
    let test_set = data(Split::Test, 1000);
    let mut g = TrainGraph::from_onnx(&init_model("lenet300", 1).unwrap()).unwrap();
    let before = accuracy(&mut g, &test_set);
    let cfg = TrainConfig {
        epochs: 2,
        ..quick()
    };
    let history = train(&mut g, &train_set, &cfg, &HashMap::new(), None).unwrap();
    let after = accuracy(&mut g, &test_set);
    assert!(
        history[1].loss < history[0].loss,
        "loss went up: {history:?}"
    );
    assert!(
        after > 0.6 && after > before + 0.3,
        "accuracy {before} → {after}"
    );
}

#[test]
fn masked_weights_stay_exactly_zero_and_lenet5_trains() {
    let train_set = data(Split::Train, 1000);
    let mut g = TrainGraph::from_onnx(&init_model("lenet5", 2).unwrap()).unwrap();
    let w = g.param("fc1.weight").unwrap().as_tensor().clone();
    let n = w.elem_count();
    let mask: Vec<f32> = (0..n)
        .map(|i| if i % 10 == 0 { 1.0 } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask, w.dims(), g.device()).unwrap();
    let masks: HashMap<String, Tensor> = [("fc1.weight".to_string(), mask.clone())].into();
    let history = train(&mut g, &train_set, &quick(), &masks, None).unwrap();
    assert!(history[0].accuracy > 0.3, "{history:?}");
    let after: Vec<f32> = g
        .param("fc1.weight")
        .unwrap()
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let m: Vec<f32> = mask.flatten_all().unwrap().to_vec1().unwrap();
    for (i, (v, k)) in after.iter().zip(&m).enumerate() {
        if *k == 0.0 {
            assert_eq!(v.to_bits(), 0, "pruned weight {i} moved to {v}");
        }
    }
    assert!(after.iter().zip(&m).any(|(v, k)| *k == 1.0 && *v != 0.0));
}

#[test]
fn written_onnx_runs_in_tract_with_the_same_outputs() {
    let train_set = data(Split::Train, 500);
    let mut g = TrainGraph::from_onnx(&init_model("lenet5", 3).unwrap()).unwrap();
    train(&mut g, &train_set, &quick(), &HashMap::new(), None).unwrap();
    let onnx = g.to_onnx().unwrap();
    let model = nnzip_tools::commands::eval::load_model_bytes(&onnx).unwrap();
    let (x, shape) = train_set.batch(0..8);
    let want: Vec<f32> = g
        .forward(
            &Tensor::from_vec(x.clone(), shape.clone(), g.device()).unwrap(),
            false,
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let got = model
        .run(nnzip_core::Tensor::from_shape(&shape, &x).unwrap())
        .unwrap();
    let got: Vec<f32> = got
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn the_pytorch_exports_evaluate_as_reported_and_fine_tuning_keeps_them() {
    let test_set = data(Split::Test, 10_000);
    let onnx = std::fs::read(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/models/lenet300.onnx"),
    )
    .unwrap();
    let mut g = TrainGraph::from_onnx(&onnx).unwrap();
    let acc = accuracy(&mut g, &test_set);
    assert!(
        (acc - 0.8899).abs() < 1e-4,
        "candle evaluates lenet300.onnx at {acc}, PyTorch/onnxruntime at 0.8899"
    );
}

#[test]
fn labels_outside_the_model_are_refused() {
    let mut set = data(Split::Train, 64);
    set.labels[3] = 12;
    let mut g = TrainGraph::from_onnx(&init_model("lenet300", 1).unwrap()).unwrap();
    let err = train(&mut g, &set, &quick(), &HashMap::new(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the model's 10 outputs"), "{err}");
}
