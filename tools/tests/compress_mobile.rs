//! The whole labelled pipeline on a network nnzip builds and trains itself with the operators of
//! phone models (`nnzip init mobile-tiny`: depthwise convolutions with asymmetric pads,
//! BatchNormalization, ReLU6 as Clip, residual Add, GlobalAveragePool, Gemm), CI-sized: train on
//! a slice, prune + retrain, share + fine-tune, encode, decode in the core. Asserts the structure
//! (every stage ran, the decoded file classifies as the trained graph did, depthwise and
//! pointwise weights pruned and shared, BatchNormalization folded exactly) and that it learned.

mod common;

use common::nnzip_ok;

#[test]
fn mobile_style_network_through_prune_retrain_share_encode_decode() {
    let tmp = std::env::temp_dir().join(format!("nnzip-mobile-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let path = |f: &str| tmp.join(f).display().to_string();
    nnzip_ok(&["init", "mobile-tiny", "-o", &path("init.onnx")]);
    let train: serde_json::Value = serde_json::from_str(&nnzip_ok(&[
        "train",
        &path("init.onnx"),
        "--data",
        "fashion-mnist",
        "--limit",
        "4000",
        "--epochs",
        "2",
        "--lr",
        "0.1",
        "--batch",
        "64",
        "--seed",
        "0",
        "-o",
        &path("trained.onnx"),
        "--json",
    ]))
    .unwrap();
    let trained = train["test"]["accuracy"].as_f64().unwrap();
    assert!(trained > 0.4, "mobile-tiny did not learn: {train}");

    let report: serde_json::Value = serde_json::from_str(&nnzip_ok(&[
        "compress",
        &path("trained.onnx"),
        "--data",
        "fashion-mnist",
        "--train-limit",
        "4000",
        "--density",
        "0.5",
        "--rounds",
        "1",
        "--retrain-epochs",
        "1",
        "--fine-tune-epochs",
        "1",
        "--bits-conv",
        "5",
        "-o",
        &path("mobile.nnz"),
        "--json",
    ]))
    .unwrap();
    let stages: Vec<(&str, f64)> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap(),
                s["accuracy"].as_f64().unwrap(),
            )
        })
        .collect();
    let names: Vec<&str> = stages.iter().map(|s| s.0).collect();
    assert_eq!(names.first(), Some(&"dense"), "{names:?}");
    assert!(
        names.iter().any(|s| s.starts_with("pruning round")),
        "{names:?}"
    );
    assert!(names.contains(&"weight sharing"), "{names:?}");
    assert_eq!(
        names.last(),
        Some(&"decoded .nnz (core runtime)"),
        "{names:?}"
    );
    // The core (tract) runs the decoded file as the training graph (candle) ran the model it
    // encodes: the same weights, so the same predictions up to float rounding in two engines.
    let n = stages.len();
    assert!(
        (stages[n - 1].1 - stages[n - 2].1).abs() <= 0.002,
        "{stages:?}"
    );
    assert!(stages[n - 1].1 > 0.35, "{stages:?}");
    // Stages (decisions) on a fixed fifth of the test split, the reported accuracy on the rest.
    assert_eq!(report["validation_images"], 2000, "{report}");
    assert_eq!(report["reported_images"], 8000, "{report}");
    assert!(
        report["images"]
            .as_str()
            .unwrap()
            .contains("the other 8000 test images"),
        "{report}"
    );

    let layers = report["layers"].as_array().unwrap();
    let layer = |name: &str| {
        layers
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {layers:?}"))
    };
    for name in [
        "block2.depthwise.weight",
        "block3.depthwise.weight",
        "block3.project.weight",
        "head.weight",
    ] {
        let l = layer(name);
        let kept = l["density"].as_f64().unwrap();
        assert!((kept - 0.5).abs() < 0.05, "{name}: {l}");
        assert!(l["encoding"].as_str().unwrap().starts_with("shared"), "{l}");
        assert!(l["bits"].as_u64().unwrap() <= 5, "{l}");
    }
    // BatchNormalization was folded into the convolutions after retraining: a bias per
    // convolution instead of four statistics, and no change in what the model computes.
    assert!(
        !layers
            .iter()
            .any(|l| l["name"].as_str().unwrap().contains(".bn.")),
        "{layers:?}"
    );
    assert_eq!(layer("block3.depthwise.bias")["encoding"], "raw-f32");
    let fold = names
        .iter()
        .position(|s| *s == "14 BatchNormalization folded")
        .unwrap_or_else(|| panic!("no folding stage in {names:?}"));
    assert!(names[fold - 1].starts_with("pruning round"), "{names:?}");
    assert!(
        (stages[fold].1 - stages[fold - 1].1).abs() <= 0.002,
        "{stages:?}"
    );
    std::fs::remove_dir_all(&tmp).ok();
}
