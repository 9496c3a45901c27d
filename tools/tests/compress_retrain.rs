//! The retraining stages on a CI-sized slice: pruned weights stay zero through retraining, shared
//! weights stay on their codebook through centroid fine-tuning, and the encoded model decodes in
//! the core to exactly the weights the training engine ended with.

use nnzip_tools::compress::pipeline::{CompressConfig, PruneRule};
use nnzip_tools::compress::retrain::{
    PruneSchedule, RetrainConfig, prune_and_retrain, share_and_fine_tune, target_densities,
};
use nnzip_tools::data::{Split, fashion_mnist_dir, load_fashion_mnist};
use nnzip_tools::onnx::GraphExecutor;
use nnzip_tools::train::evaluate;
use std::path::PathBuf;

fn values(exec: &GraphExecutor, name: &str) -> Vec<f32> {
    exec.param(name)
        .unwrap()
        .var
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn prune_retrain_share_fine_tune_on_lenet300() {
    let data = load_fashion_mnist(&fashion_mnist_dir(), Split::Train)
        .expect("Fashion-MNIST: scripts/test.sh installs dataset-fashion-mnist")
        .truncate(3000);
    let test = load_fashion_mnist(&fashion_mnist_dir(), Split::Test)
        .unwrap()
        .truncate(1000);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/lenet300.onnx");
    let exec = GraphExecutor::open(&path).unwrap();
    let dense = evaluate(&exec, &test, 500, false).unwrap().accuracy;

    let cfg = CompressConfig {
        per_layer: CompressConfig::paper_densities("lenet300").unwrap(),
        ..Default::default()
    };
    let names: Vec<String> = ["fc1.weight", "fc2.weight", "fc3.weight"]
        .map(String::from)
        .to_vec();
    let targets = target_densities(&exec, &names, &cfg).unwrap();
    assert_eq!(targets["fc1.weight"], 0.08);
    let rc = RetrainConfig {
        rounds: 2,
        epochs_per_round: 1,
        fine_tune_epochs: 1,
        schedule: PruneSchedule::Iterative,
        progress: false,
        ..Default::default()
    };
    let mut after_rounds = Vec::new();
    let masks = prune_and_retrain(&exec, &targets, Some(&data), &rc, |r| {
        let w = values(&exec, "fc1.weight");
        let kept = w.iter().filter(|v| **v != 0.0).count() as f64 / w.len() as f64;
        after_rounds.push((r, kept));
        Ok(())
    })
    .unwrap();
    // Round 1 of 2 keeps √0.08 ≈ 28%, round 2 keeps 8%.
    assert!(
        (after_rounds[0].1 - 0.08f64.sqrt()).abs() < 0.01,
        "{after_rounds:?}"
    );
    assert!((after_rounds[1].1 - 0.08).abs() < 0.002, "{after_rounds:?}");
    for (name, mask) in &masks {
        for (v, k) in values(&exec, name).iter().zip(mask) {
            assert!(*k || v.to_bits() == 0, "{name}: a pruned weight is {v}");
        }
    }
    let pruned = evaluate(&exec, &test, 500, false).unwrap().accuracy;
    assert!(
        pruned > dense - 0.05,
        "retraining did not recover: {dense} → {pruned}"
    );

    let layers = share_and_fine_tune(&exec, &masks, &cfg, Some(&data), &rc).unwrap();
    for (name, layer) in &layers {
        assert!(layer.codebook.len() <= 32 && layer.codebook[0] == 0.0);
        // The model holds exactly the shared values, pruned weights at index 0.
        let w = values(&exec, name);
        assert_eq!(w, layer.values(), "{name} left its codebook");
        for (i, k) in layer.indices.iter().zip(&masks[name]) {
            assert_eq!(*i == 0, !k, "{name}: pruned weights and index 0 differ");
        }
    }
    let shared = evaluate(&exec, &test, 500, false).unwrap().accuracy;
    assert!(shared > dense - 0.06, "{dense} → {shared}");

    // Quality rule: the density the threshold q·std gives.
    let q = CompressConfig {
        default_rule: PruneRule::Quality(1.0),
        ..Default::default()
    };
    let fresh = GraphExecutor::open(&path).unwrap();
    let d = target_densities(&fresh, &names, &q).unwrap();
    assert!(d["fc1.weight"] > 0.2 && d["fc1.weight"] < 0.5, "{d:?}");
}

#[test]
fn the_same_seed_gives_a_byte_identical_file() {
    let dir = std::env::temp_dir().join(format!("nnzip-det-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/lenet300.onnx");
    let run = |out: &str| {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_nnzip"))
            .args([
                "compress",
                model.to_str().unwrap(),
                "--data",
                "fashion-mnist",
            ])
            .args([
                "--paper-densities",
                "lenet300",
                "--train-limit",
                "1000",
                "--rounds",
                "2",
            ])
            .args([
                "--retrain-epochs",
                "1",
                "--fine-tune-epochs",
                "1",
                "--json",
                "-o",
            ])
            .arg(dir.join(out))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read(dir.join(out)).unwrap()
    };
    let (a, b) = (run("a.nnz"), run("b.nnz"));
    assert!(a.len() > 1000);
    assert!(a == b, "two runs with seed 0 wrote different files");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn pruning_to_a_budget_keeps_levels_within_it_and_undoes_the_first_over_it() {
    use nnzip_tools::compress::prune_sensitivity::sensitivity;
    use nnzip_tools::compress::retrain::prune_to_budget;
    let data = load_fashion_mnist(&fashion_mnist_dir(), Split::Train)
        .unwrap()
        .truncate(2000);
    let val = load_fashion_mnist(&fashion_mnist_dir(), Split::Test)
        .unwrap()
        .truncate(1000);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/lenet300.onnx");
    let exec = GraphExecutor::open(&path).unwrap();
    let names: Vec<String> = ["fc1.weight", "fc2.weight", "fc3.weight"]
        .map(String::from)
        .to_vec();
    let report = sensitivity(
        &exec,
        &names,
        &[1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01],
        &val,
        false,
    )
    .unwrap();
    let baseline = report.baseline;
    let rc = RetrainConfig {
        epochs_per_round: 1,
        lr: 0.01,
        progress: false,
        ..Default::default()
    };
    let max_drop = 0.01;
    let (masks, steps) =
        prune_to_budget(&exec, &report, baseline, max_drop, &data, &val, &rc, |_| {
            Ok(())
        })
        .unwrap();
    assert!(!steps.is_empty());
    // Kept levels only ever prune further and are within the budget; levels over it are undone,
    // and after the first, only the refinements between the two are tried.
    use nnzip_tools::compress::retrain::BUDGET_REFINEMENTS;
    let kept: Vec<_> = steps.iter().filter(|s| s.accepted).collect();
    for w in kept.windows(2) {
        for (n, d) in &w[1].densities {
            assert!(*d <= w[0].densities[n], "{steps:?}");
        }
    }
    for s in &steps {
        assert_eq!(
            s.accepted,
            s.validation_accuracy >= baseline - max_drop,
            "{s:?}"
        );
    }
    if let Some(first_over) = steps.iter().position(|s| !s.accepted) {
        assert!(
            steps.len() - first_over - 1 <= BUDGET_REFINEMENTS,
            "{steps:?}"
        );
    }
    // The model is the last kept level's: its masks hold and it scores what that level scored.
    let last_kept = steps.iter().rev().find(|s| s.accepted);
    for (name, mask) in &masks {
        let w = values(&exec, name);
        assert!(w.iter().zip(mask).all(|(v, &k)| k || *v == 0.0), "{name}");
        let kept = mask.iter().filter(|&&k| k).count() as f64 / mask.len() as f64;
        let want = last_kept.map_or(1.0, |s| s.densities[name]);
        assert!(
            (kept - want).abs() < 1e-3,
            "{name}: kept {kept}, level said {want}"
        );
    }
    let now = evaluate(&exec, &val, 500, false).unwrap().accuracy;
    let want = last_kept.map_or(baseline, |s| s.validation_accuracy);
    assert_eq!(now, want, "the level over budget was not undone");
}
