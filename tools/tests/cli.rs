//! The `nnzip` binary end to end: pack → inspect → classify → decompress, and its errors.

mod common;

use common::nnzip;
use std::path::PathBuf;
use std::process::Command;

fn shared(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared")
        .join(rel);
    assert!(
        p.exists(),
        "{} missing: the tests need ../shared beside the project",
        p.display()
    );
    p.display().to_string()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nnzip-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn pack_inspect_classify_decompress() {
    let nnz = tmp("effnet.nnz");
    let nnz_s = nnz.display().to_string();
    let (ok, _, err) = nnzip(&[
        "pack",
        &shared("models/efficientnet_lite0.onnx"),
        "-o",
        &nnz_s,
        "--preprocess",
        "efficientnet-lite",
        "--labels",
        &shared("models/imagenet_labels.txt"),
    ]);
    assert!(ok, "pack failed: {err}");

    let (ok, out, err) = nnzip(&["inspect", &nnz_s]);
    assert!(ok, "inspect failed: {err}");
    assert!(out.contains("format version  1"), "{out}");
    assert!(out.contains("labels          1000"), "{out}");
    assert!(out.contains("raw-f32"), "{out}");

    let (ok, out, err) = nnzip(&[
        "classify",
        &nnz_s,
        &shared("images/coffee.jpg"),
        "--top-k",
        "3",
        "--json",
    ]);
    assert!(ok, "classify failed: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["top"][0]["label"], "espresso", "{out}");
    assert_eq!(v["top"].as_array().unwrap().len(), 3);

    let (ok, out, err) = nnzip(&["bench", &nnz_s, "--runs", "3", "--loads", "1", "--json"]);
    assert!(ok, "bench failed: {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(
        v["input_shape"],
        serde_json::json!([1, 3, 224, 224]),
        "{out}"
    );
    assert!(v["latency_ms"].as_f64().unwrap() > 0.0, "{out}");
    assert!(v["load_ms"].as_f64().unwrap() > 0.0, "{out}");

    let onnx = tmp("effnet.onnx");
    let (ok, _, err) = nnzip(&["decompress", &nnz_s, "-o", &onnx.display().to_string()]);
    assert!(ok, "decompress failed: {err}");
    let size = std::fs::metadata(&onnx).unwrap().len();
    assert!(size > 18_000_000, "dense ONNX is {size} bytes");
}

#[test]
fn bad_inputs_are_clear_errors_and_leave_no_output() {
    let out = tmp("never.nnz");
    let (ok, _, err) = nnzip(&[
        "pack",
        "/nonexistent/model.onnx",
        "-o",
        &out.display().to_string(),
    ]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/model.onnx"), "{err}");
    assert!(!out.exists());

    let garbage = tmp("garbage.onnx");
    std::fs::write(
        &garbage,
        b"\x08\x07garbage that is not protobuf\xff\xff\xff",
    )
    .unwrap();
    let (ok, _, err) = nnzip(&[
        "pack",
        &garbage.display().to_string(),
        "-o",
        &out.display().to_string(),
    ]);
    assert!(!ok);
    assert!(err.contains("ONNX"), "{err}");
    assert!(!out.exists(), "a failed pack must not leave an output file");

    let (ok, _, err) = nnzip(&["inspect", &garbage.display().to_string()]);
    assert!(!ok);
    assert!(err.contains("not a .nnz file"), "{err}");

    let (ok, _, err) = nnzip(&[
        "pack",
        &shared("models/lenet5.onnx"),
        "-o",
        &out.display().to_string(),
        "--preprocess",
        "vgg",
    ]);
    assert!(!ok);
    assert!(err.contains("unknown preprocessing preset 'vgg'"), "{err}");
}

#[test]
fn ctrl_c_during_compress_leaves_no_file() {
    // Interrupt a retraining compression before it finishes: the output, written whole through a
    // temporary file and a rename at the very end, must not exist, nor any temporary file.
    let dir = tmp("ctrl-c");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("interrupted.nnz");
    let mut command = Command::new(env!("CARGO_BIN_EXE_nnzip"));
    // A shell without job control starts background jobs with SIGINT ignored, and children
    // inherit that: give nnzip the disposition a terminal's Ctrl-C meets.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: `signal` is async-signal-safe, as `pre_exec` requires.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
    }
    let mut child = command
        .args([
            "compress",
            &shared("models/lenet300.onnx"),
            "--data",
            "fashion-mnist",
            "--density",
            "0.1",
            "--rounds",
            "3",
            "--retrain-epochs",
            "5",
            "-o",
            out.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start nnzip");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "compress ended within 3 s: nothing was interrupted"
    );
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "an interrupted run must not report success"
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "an interrupted compress left {left:?}");
}

#[test]
fn one_shot_compress_folds_batch_norm_unless_kept() {
    // Without data there is no retraining: BatchNormalization is folded before sharing all the
    // same (one bias per convolution stored instead of four vectors), unless asked to keep it.
    let dir = tmp("fold");
    std::fs::create_dir_all(&dir).unwrap();
    let path = |f: &str| dir.join(f).display().to_string();
    common::nnzip_ok(&["init", "mobile-tiny", "-o", &path("m.onnx")]);
    let run = |extra: &[&str], out: &str| -> serde_json::Value {
        let model = path("m.onnx");
        let out = path(out);
        let mut args = vec!["compress", &model[..], "--density", "0.5", "--json"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-o", &out]);
        serde_json::from_str(&common::nnzip_ok(&args)).unwrap()
    };
    let bn_layers = |v: &serde_json::Value| {
        v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["name"].as_str().unwrap().contains(".bn."))
            .count()
    };
    let folded = run(&[], "folded.nnz");
    let kept = run(&["--keep-batch-norm"], "kept.nnz");
    assert_eq!(bn_layers(&folded), 0, "{folded}");
    assert_eq!(bn_layers(&kept), 4 * 14, "{kept}");
    assert!(
        folded["layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "head.bias"),
        "{folded}"
    );
    assert!(folded["file_bytes"].as_u64() < kept["file_bytes"].as_u64());
    for f in ["folded.nnz", "kept.nnz"] {
        let model = nnzip_core::Model::open(path(f)).unwrap();
        let out = model
            .run(nnzip_core::Tensor::zero::<f32>(&[1, 1, 28, 28]).unwrap())
            .unwrap();
        assert_eq!(out.shape(), &[1, 10]);
    }
    std::fs::remove_dir_all(&dir).ok();
}
