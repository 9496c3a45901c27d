//! `nnzip sensitivity` on the reference LeNet-300: one curve per prunable tensor, pruning only
//! ever costs accuracy at the sparse end, the model is left untouched, and the plot is a PNG.

use nnzip_tools::compress::prune_sensitivity::sensitivity;
use nnzip_tools::data::{Split, fashion_mnist_dir, load_fashion_mnist};
use nnzip_tools::onnx::GraphExecutor;
use nnzip_tools::train::evaluate;
use std::path::PathBuf;

fn lenet300() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/lenet300.onnx")
}

#[test]
fn curves_start_at_the_baseline_fall_when_sparse_and_leave_the_model_as_it_was() {
    let data = load_fashion_mnist(&fashion_mnist_dir(), Split::Train)
        .expect("Fashion-MNIST: scripts/test.sh installs dataset-fashion-mnist")
        .truncate(1000);
    let exec = GraphExecutor::open(&lenet300()).unwrap();
    let names: Vec<String> = ["fc1.weight", "fc2.weight"].map(String::from).to_vec();
    let r = sensitivity(&exec, &names, &[1.0, 0.3, 0.01], &data, false).unwrap();
    assert_eq!(r.images, 1000);
    assert_eq!(r.curves.len(), 2);
    for c in &r.curves {
        assert_eq!(c.points.len(), 3);
        // Density 1 is the unpruned model.
        assert_eq!(c.points[0].accuracy, r.baseline, "{}", c.tensor);
        // Keeping 1% of a layer must cost a lot; keeping 30% little.
        assert!(
            c.points[2].accuracy < r.baseline - 0.05,
            "{}: {:?}",
            c.tensor,
            c.points
        );
        assert!(
            c.points[1].accuracy > r.baseline - 0.05,
            "{}: {:?}",
            c.tensor,
            c.points
        );
    }
    assert_eq!(r.curves[0].elements, 300 * 784);
    // The model is restored: the same accuracy as before.
    let after = evaluate(&exec, &data, 500, false).unwrap().accuracy;
    assert_eq!(after, r.baseline);
    // Densities for a budget come from the curves.
    let d = r.densities_for_drop(0.02);
    assert!(d["fc1.weight"] <= 0.3 && d["fc1.weight"] > 0.01, "{d:?}");
}

#[test]
fn the_command_prints_json_and_writes_a_png() {
    let dir = std::env::temp_dir().join(format!("nnzip-sens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("sens.png");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nnzip"))
        .args([
            "sensitivity",
            lenet300().to_str().unwrap(),
            "--limit",
            "500",
        ])
        .args([
            "--densities",
            "1,0.2,0.05",
            "--max-drop",
            "2",
            "--json",
            "--plot",
        ])
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let curves = v["report"]["curves"].as_array().unwrap();
    assert_eq!(curves.len(), 3, "fc1, fc2, fc3 weights");
    assert_eq!(v["suggested_densities"].as_object().unwrap().len(), 3);
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"));
    // A density outside (0, 1] is refused before any work.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nnzip"))
        .args([
            "sensitivity",
            lenet300().to_str().unwrap(),
            "--densities",
            "0.5,1.5",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1.5"));
    std::fs::remove_dir_all(&dir).ok();
}

/// The library entry of `nnzip sensitivity`, settings in and a run out: the ladder asked for, one
/// curve per prunable tensor, and a suggestion that the table and the JSON both carry.
#[test]
fn measure_file_returns_the_curves_and_a_suggestion_its_renderings_agree_on() {
    use clap::Parser;
    use nnzip_tools::compress::prune_sensitivity_run::{SensitivitySettings, measure_file};
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        settings: SensitivitySettings,
    }
    let flags = Flags::parse_from([
        "sensitivity",
        "--limit",
        "500",
        "--densities",
        "1,0.2,0.05",
        "--max-drop",
        "2",
    ]);
    let run = measure_file(&lenet300(), &flags.settings, false).unwrap();
    assert_eq!(run.ladder, vec![1.0, 0.2, 0.05]);
    assert_eq!(run.report.images, 500);
    assert_eq!(run.report.curves.len(), 3, "fc1, fc2, fc3 weights");
    assert_eq!(run.suggested, run.report.densities_for_drop(0.02));
    let text = run.render();
    for c in &run.report.curves {
        assert!(text.contains(&c.tensor), "{text}");
    }
    for (name, d) in &run.suggested {
        assert!(text.contains(&format!("--density {name}={d}")), "{text}");
    }
    let v: serde_json::Value = serde_json::from_str(&run.to_json()).unwrap();
    assert_eq!(v["max_drop_pp"], 2.0);
    assert_eq!(
        v["suggested_densities"].as_object().unwrap().len(),
        run.suggested.len()
    );
    // A layer size no tensor reaches leaves nothing to measure: an error naming the model.
    let none = Flags::parse_from(["sensitivity", "--limit", "10", "--min-elements", "1000000"]);
    let err = measure_file(&lenet300(), &none.settings, false).unwrap_err();
    assert!(err.to_string().contains("no prunable tensor"), "{err}");
}
