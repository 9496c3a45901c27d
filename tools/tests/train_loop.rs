//! Training on real data, fast enough for CI: a few thousand Fashion-MNIST images, one or two
//! epochs. Needs Debian's `dataset-fashion-mnist` (scripts/test.sh installs it).

use candle_core::Tensor;
use nnzip_tools::compress::retrain::{ClusterGradient, centroid_optimizer};
use nnzip_tools::data::{Dataset, Split, fashion_mnist_dir, load_fashion_mnist};
use nnzip_tools::onnx::build::{Architecture, build};
use nnzip_tools::onnx::{GraphExecutor, Mode};
use nnzip_tools::train::{
    Distillation, Optimizer, OptimizerConfig, OptimizerKind, Schedule, ScheduleKind, TrainConfig,
    evaluate, train,
};
use std::path::PathBuf;

fn data(split: Split, n: usize) -> Dataset {
    load_fashion_mnist(&fashion_mnist_dir(), split)
        .expect("Fashion-MNIST: scripts/test.sh installs dataset-fashion-mnist")
        .truncate(n)
}

fn config(epochs: usize, lr: f64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch: 64,
        schedule: Schedule {
            kind: ScheduleKind::Constant,
            lr,
            step_epochs: 1,
            gamma: 1.0,
        },
        seed: 1,
        progress: false,
        distill: None,
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn shared_model(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/models")
        .join(name)
}

#[test]
fn lenet300_learns_from_2000_images() {
    let train_set = data(Split::Train, 2000);
    let test_set = data(Split::Test, 1000);
    let exec = GraphExecutor::new(build(Architecture::Lenet300, 1), "lenet300").unwrap();
    let before = evaluate(&exec, &test_set, 500, false).unwrap();
    let mut opt = Optimizer::new(OptimizerConfig::default());
    let history = train(&exec, &train_set, None, &config(2, 0.05), &mut opt).unwrap();
    let after = evaluate(&exec, &test_set, 500, false).unwrap();
    assert!(
        history[1].train_loss < history[0].train_loss,
        "loss went up: {history:?}"
    );
    assert!(
        after.loss < before.loss,
        "test loss {} → {}",
        before.loss,
        after.loss
    );
    assert!(
        after.accuracy > 0.65 && after.accuracy > before.accuracy + 0.4,
        "accuracy {} → {}",
        before.accuracy,
        after.accuracy
    );
}

#[test]
fn lenet5_learns_from_2000_images() {
    let train_set = data(Split::Train, 2000);
    let test_set = data(Split::Test, 1000);
    let exec = GraphExecutor::new(build(Architecture::Lenet5, 2), "lenet5").unwrap();
    let mut opt = Optimizer::new(OptimizerConfig::default());
    train(&exec, &train_set, None, &config(1, 0.05), &mut opt).unwrap();
    let after = evaluate(&exec, &test_set, 500, false).unwrap();
    assert!(after.accuracy > 0.6, "accuracy {}", after.accuracy);
}

#[test]
fn masked_weights_stay_exactly_zero() {
    let train_set = data(Split::Train, 1000);
    let exec = GraphExecutor::new(build(Architecture::Lenet300, 3), "lenet300").unwrap();
    let p = exec.param("fc1.weight").expect("fc1.weight").clone();
    let n = p.var.elem_count();
    let keep: Vec<f32> = (0..n)
        .map(|i| if i % 10 == 0 { 1.0 } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(keep.clone(), p.var.dims(), exec.device()).unwrap();
    let mut opt = Optimizer::new(OptimizerConfig::default());
    opt.set_mask(&p, mask).unwrap();
    let start = values(p.var.as_tensor());
    train(&exec, &train_set, None, &config(1, 0.05), &mut opt).unwrap();
    let after = values(p.var.as_tensor());
    for (i, (v, k)) in after.iter().zip(&keep).enumerate() {
        if *k == 0.0 {
            assert_eq!(v.to_bits(), 0, "pruned weight {i} moved to {v}");
        }
    }
    let moved = after
        .iter()
        .zip(&start)
        .zip(&keep)
        .filter(|((a, b), k)| **k == 1.0 && a != b)
        .count();
    assert!(moved > n / 20, "only {moved} kept weights were trained");
}

#[test]
fn a_gradient_hook_keeps_shared_weights_shared() {
    // The paper's SGD, and Adam without weight decay (label-free fine-tuning's choice): with
    // either, all members of a cluster move together; with Adam a centroid moves by about the
    // learning rate per step however many weights share it (here 7,500 per cluster).
    for kind in [OptimizerKind::Sgd, OptimizerKind::Adam] {
        let rule = format!("{kind:?}");
        let train_set = data(Split::Train, 512);
        let exec = GraphExecutor::new(build(Architecture::Lenet300, 4), "lenet300").unwrap();
        let p = exec.param("fc2.weight").expect("fc2.weight").clone();
        let n = p.var.elem_count();
        // Four clusters by index; every member starts at its centroid.
        let centroids = [-0.05f32, -0.01, 0.02, 0.06];
        let assignment: Vec<u32> = (0..n as u32).map(|i| i % 4).collect();
        let w: Vec<f32> = assignment.iter().map(|&c| centroids[c as usize]).collect();
        p.var
            .set(&Tensor::from_vec(w, p.var.dims(), exec.device()).unwrap())
            .unwrap();
        let mut opt = Optimizer::new(centroid_optimizer(kind));
        let indices: Vec<u16> = assignment.iter().map(|&c| c as u16).collect();
        opt.set_gradient_hook(&p.name, Box::new(ClusterGradient::new(indices, 4, false)));
        let lr = 0.001;
        train(&exec, &train_set, None, &config(1, lr), &mut opt).unwrap();
        let after = values(p.var.as_tensor());
        for c in 0..4 {
            let members: Vec<f32> = after
                .iter()
                .zip(&assignment)
                .filter(|(_, a)| **a == c)
                .map(|(v, _)| *v)
                .collect();
            assert!(
                members.iter().all(|v| *v == members[0]),
                "{rule}: cluster {c} split: {:?}",
                &members[..8]
            );
            let moved = (members[0] - centroids[c as usize]).abs() as f64;
            assert!(moved > 0.0, "{rule}: centroid {c} was not fine-tuned");
            if kind == OptimizerKind::Adam {
                // 8 steps of 64 images; an Adam step is at most lr·(1−β₁)/√(1−β₂) ≈ 3.2·lr.
                assert!(
                    moved <= 8.0 * 3.2 * lr,
                    "{rule}: centroid {c} moved {moved}"
                );
            }
        }
    }
}

#[test]
fn row_scaled_clusters_stay_tied_under_sgd_and_adam() {
    // Weight i = scale(row) · centroid(cluster): the hook passes each weight its row's share of
    // the centroid's gradient and, after each update, projects the weights back (Adam's
    // per-weight normalisation would otherwise untie them).
    use nnzip_tools::compress::share::SharedLayer;
    for kind in [OptimizerKind::Sgd, OptimizerKind::Adam] {
        let rule = format!("{kind:?}");
        let train_set = data(Split::Train, 256);
        let exec = GraphExecutor::new(build(Architecture::Lenet300, 4), "lenet300").unwrap();
        let p = exec.param("fc2.weight").expect("fc2.weight").clone();
        let (rows, n) = (p.var.dims()[0], p.var.elem_count());
        let mut layer = SharedLayer {
            codebook: vec![-0.05, -0.01, 0.02, 0.06],
            indices: (0..n).map(|i| (i * 7 % 4) as u16).collect(),
            bits: 2,
            sparse: false,
            row_scales: Some((0..rows).map(|r| [0.25f32, 0.5, 1.0, 2.0][r % 4]).collect()),
        };
        p.var
            .set(&Tensor::from_vec(layer.values(), p.var.dims(), exec.device()).unwrap())
            .unwrap();
        let mut opt = Optimizer::new(centroid_optimizer(kind));
        opt.set_gradient_hook(&p.name, Box::new(ClusterGradient::for_layer(&layer)));
        train(&exec, &train_set, None, &config(1, 0.001), &mut opt).unwrap();
        let after = values(p.var.as_tensor());
        let before = layer.codebook.clone();
        layer.fit_codebook(&after);
        let tied = layer.values();
        for (i, (a, t)) in after.iter().zip(&tied).enumerate() {
            assert!(
                (a - t).abs() <= 1e-6 * t.abs().max(1e-3),
                "{rule}: weight {i} is {a}, its row scale × centroid {t}"
            );
        }
        for (c, (b, a)) in before.iter().zip(&layer.codebook).enumerate() {
            assert!(a != b, "{rule}: centroid {c} was not fine-tuned");
        }
    }
}

#[test]
fn written_onnx_runs_in_the_core_with_the_same_outputs() {
    let train_set = data(Split::Train, 300);
    let exec = GraphExecutor::new(build(Architecture::Lenet5, 5), "lenet5").unwrap();
    let mut opt = Optimizer::new(OptimizerConfig::default());
    train(&exec, &train_set, None, &config(1, 0.05), &mut opt).unwrap();
    let dir = std::env::temp_dir().join(format!("nnzip-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("trained.onnx");
    exec.save(&path).unwrap();
    let model = nnzip_tools::model_file::load_model(&path).unwrap();
    let batch = train_set.subset(&(0..8).collect::<Vec<_>>());
    let x = Tensor::from_vec(batch.images.clone(), (8, 1, 28, 28), exec.device()).unwrap();
    let want = values(&exec.logits(&x, Mode::Eval).unwrap());
    let got = model
        .run(nnzip_core::Tensor::from_shape(&[8, 1, 28, 28], &batch.images).unwrap())
        .unwrap();
    let got: Vec<f32> = got
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect();
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-4, "core {a} vs candle {b}");
    }
    // And the core's evaluation agrees with the training graph's.
    let test_set = data(Split::Test, 500);
    let core = nnzip_tools::accuracy::evaluate(&model, &test_set, 250, false).unwrap();
    let candle = evaluate(&exec, &test_set, 250, false).unwrap();
    assert_eq!(core.confusion, candle.confusion);
    assert!(
        (core.loss - candle.loss).abs() < 1e-4,
        "{} vs {}",
        core.loss,
        candle.loss
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn pytorch_exports_evaluate_as_reported_and_fine_tuning_keeps_them() {
    let test_set = data(Split::Test, 10_000);
    for (name, reported) in [("lenet300.onnx", 0.8899), ("lenet5.onnx", 0.9180)] {
        let exec = GraphExecutor::open(&shared_model(name)).unwrap();
        let acc = evaluate(&exec, &test_set, 1000, false).unwrap().accuracy;
        assert!(
            (acc - reported).abs() < 1e-4 + 1e-9,
            "candle evaluates {name} at {acc}, the README at {reported}"
        );
    }
    // Fine-tune lenet300 briefly at a low rate: it keeps its accuracy.
    let exec = GraphExecutor::open(&shared_model("lenet300.onnx")).unwrap();
    let train_set = data(Split::Train, 6000);
    let mut opt = Optimizer::new(OptimizerConfig::default());
    train(&exec, &train_set, None, &config(1, 0.001), &mut opt).unwrap();
    let acc = evaluate(&exec, &test_set, 1000, false).unwrap().accuracy;
    assert!(acc >= 0.8899 - 0.003, "fine-tuning lost accuracy: {acc}");
}

#[test]
fn labels_outside_the_model_are_refused_with_the_fix() {
    let mut set = data(Split::Train, 64);
    set.labels[3] = 12;
    let exec = GraphExecutor::new(build(Architecture::Lenet300, 1), "lenet300").unwrap();
    let mut opt = Optimizer::new(OptimizerConfig::default());
    let err = train(&exec, &set, None, &config(1, 0.05), &mut opt)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("label 12") && err.contains("10 classes"),
        "{err}"
    );
}

#[test]
fn distillation_alone_learns_the_teacher_without_labels() {
    // The labels are all replaced by class 0: cross-entropy to them would teach nothing useful,
    // so what the student learns comes from the teacher's outputs alone.
    let mut train_set = data(Split::Train, 2000);
    let test_set = data(Split::Test, 1000);
    let teacher = GraphExecutor::open(&shared_model("lenet300.onnx")).unwrap();
    let distill = Distillation::from_teacher(&teacher, &train_set, 2.0, 1.0).unwrap();
    assert_eq!(distill.classes, 10);
    assert_eq!(distill.teacher_logits.len(), 2000 * 10);
    train_set.labels.iter_mut().for_each(|l| *l = 0);
    let student = GraphExecutor::new(build(Architecture::Lenet300, 1), "student").unwrap();
    let mut cfg = config(2, 0.05);
    cfg.distill = Some(distill);
    let mut opt = Optimizer::new(OptimizerConfig::default());
    train(&student, &train_set, None, &cfg, &mut opt).unwrap();
    let acc = evaluate(&student, &test_set, 500, false).unwrap().accuracy;
    assert!(acc > 0.65, "the student reached only {acc}");
    // Out-of-range settings are refused.
    assert!(Distillation::from_teacher(&teacher, &train_set, 0.0, 0.5).is_err());
    assert!(Distillation::from_teacher(&teacher, &train_set, 2.0, 1.5).is_err());
}

/// `model` with a `Softmax` over the classes appended to its output (as many exported
/// classifiers end), the graph's output renamed to the probabilities.
fn ending_in_softmax(
    mut model: nnzip_core::onnx::proto::ModelProto,
) -> nnzip_core::onnx::proto::ModelProto {
    let graph = model.graph.as_mut().unwrap();
    let logits = graph.output[0].name.clone();
    graph.node.push(nnzip_core::onnx::proto::NodeProto {
        name: "probabilities".into(),
        op_type: "Softmax".into(),
        input: vec![logits],
        output: vec!["probabilities".into()],
        ..Default::default()
    });
    graph.output[0].name = "probabilities".into();
    model
}

#[test]
fn a_graph_ending_in_softmax_trains_as_its_logits_do() {
    let train_set = data(Split::Train, 512);
    let test_set = data(Split::Test, 256);
    let plain = GraphExecutor::new(build(Architecture::Lenet300, 3), "plain").unwrap();
    let softmaxed = GraphExecutor::new(
        ending_in_softmax(build(Architecture::Lenet300, 3)),
        "softmaxed",
    )
    .unwrap();
    let x = test_set
        .batch_tensors(&[0, 1, 2], plain.device())
        .unwrap()
        .0;
    assert_eq!(
        values(&plain.logits(&x, Mode::Eval).unwrap()),
        values(&softmaxed.logits(&x, Mode::Eval).unwrap()),
        "the Softmax's input is the logits"
    );
    let mut histories = Vec::new();
    for exec in [&plain, &softmaxed] {
        let mut opt = Optimizer::new(OptimizerConfig::default());
        histories.push(train(exec, &train_set, None, &config(1, 0.05), &mut opt).unwrap());
    }
    assert_eq!(histories[0][0].train_loss, histories[1][0].train_loss);
    for (a, b) in plain.params().iter().zip(softmaxed.params()) {
        assert_eq!(
            values(a.var.as_tensor()),
            values(b.var.as_tensor()),
            "{}",
            a.name
        );
    }
    let (a, b) = (
        evaluate(&plain, &test_set, 256, false).unwrap(),
        evaluate(&softmaxed, &test_set, 256, false).unwrap(),
    );
    assert_eq!((a.loss, a.accuracy), (b.loss, b.accuracy));
    // The saved model keeps its Softmax: its output is still probabilities.
    let saved = softmaxed.to_model_proto().unwrap();
    assert_eq!(saved.graph.unwrap().node.last().unwrap().op_type, "Softmax");
}

/// The library entry of `nnzip train`, settings in (parsed from the command's own flags, so with
/// its defaults) and a run out: the model written trains and loads again, and the table and the
/// JSON report the epochs and the test split the run measured.
#[test]
fn train_file_writes_the_model_and_reports_its_epochs_and_test() {
    use clap::Parser;
    use nnzip_tools::train::training_run::{TrainSettings, train_file};
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        settings: TrainSettings,
    }
    let flags = Flags::parse_from([
        "train",
        "--limit",
        "600",
        "--epochs",
        "2",
        "--val-split",
        "0.25",
    ]);
    let dir = std::env::temp_dir().join(format!("nnzip-train-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = dir.join("trained.onnx");
    let run = train_file(
        &shared_model("lenet300.onnx"),
        &output,
        &flags.settings,
        false,
    )
    .unwrap();
    assert_eq!(
        (run.train_samples, run.validation_samples),
        (450, Some(150))
    );
    assert_eq!(run.epochs.len(), 2);
    assert!(run.epochs.iter().all(|e| e.validation.is_some()));
    let test = run.test.as_ref().expect("Fashion-MNIST has a test split");
    // --limit applies to every split read; the trained model is far above chance (10%).
    assert_eq!(test.samples, 600);
    assert!(test.accuracy > 0.5, "{test:?}");
    GraphExecutor::open(&output).expect("the written model reads back");
    let text = run.render();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("    ")).count(),
        2,
        "{text}"
    );
    assert!(
        text.contains(&format!("test: accuracy {:.2}%", 100.0 * test.accuracy)),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_str(&run.to_json().unwrap()).unwrap();
    assert_eq!(v["epochs"].as_array().unwrap().len(), 2);
    assert_eq!(v["test"]["samples"], 600);
    // Settings that cannot train are refused before any work.
    let zero = Flags::parse_from(["train", "--epochs", "0"]);
    let err = train_file(
        &shared_model("lenet300.onnx"),
        &dir.join("no.onnx"),
        &zero.settings,
        false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("--epochs"), "{err}");
    assert!(!dir.join("no.onnx").exists());
    std::fs::remove_dir_all(&dir).ok();
}
