//! The tools against hostile or careless use (issue 21): outputs checked before the work, no
//! silent overwrite of the input, no temporary file left by an interruption, photo walks that
//! skip links to folders and FIFOs, files the loader refuses reported as refused.

mod common;

use common::nnzip;
use nnzip_core::format::{NnzReader, NnzWriter, TensorData, TensorRecord};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn shared(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared")
        .join(rel);
    assert!(p.exists(), "{} missing", p.display());
    p.display().to_string()
}

/// A fresh folder for one test.
fn folder(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nnzip-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// LeNet-5 packed with the MNIST recipe into `dir`.
fn packed_lenet5(dir: &Path) -> PathBuf {
    let nnz = dir.join("lenet5.nnz");
    let (ok, _, err) = nnzip(&[
        "pack",
        &shared("models/lenet5.onnx"),
        "-o",
        &s(&nnz),
        "--preprocess",
        "mnist",
    ]);
    assert!(ok, "{err}");
    nnz
}

#[test]
fn the_input_is_not_replaced_without_force() {
    let dir = folder("overwrite");
    let model = dir.join("lenet300.onnx");
    std::fs::copy(shared("models/lenet300.onnx"), &model).unwrap();
    let before = std::fs::read(&model).unwrap();
    for command in ["compress", "pack"] {
        let (ok, _, err) = nnzip(&[command, &s(&model), "-o", &s(&model)]);
        assert!(!ok, "{command} replaced its input");
        assert!(
            err.contains("is also the input") && err.contains("--force"),
            "{err}"
        );
        assert_eq!(std::fs::read(&model).unwrap(), before);
    }
    let (ok, _, err) = nnzip(&["pack", &s(&model), "-o", &s(&model), "--force"]);
    assert!(ok, "{err}");
    assert!(std::fs::read(&model).unwrap().starts_with(b"\x89NNZ"));
}

#[test]
fn an_unwritable_output_is_refused_before_the_work_and_named() {
    let dir = folder("unwritable");
    let out = dir.join("missing-folder").join("out.nnz");
    let started = Instant::now();
    let (ok, _, err) = nnzip(&[
        "compress",
        &shared("models/lenet300.onnx"),
        "--data",
        "fashion-mnist",
        "--retrain-epochs",
        "5",
        "-o",
        &s(&out),
    ]);
    assert!(!ok);
    assert!(err.contains(&format!("cannot write {}", s(&out))), "{err}");
    assert!(
        !err.contains(".tmp-"),
        "the error names the temporary file: {err}"
    );
    // Refused before loading data or training (which take minutes).
    assert!(started.elapsed() < Duration::from_secs(20));
    let (ok, _, err) = nnzip(&["pack", &shared("models/lenet5.onnx"), "-o", &s(&dir)]);
    assert!(!ok);
    assert!(err.contains("is a folder"), "{err}");
}

#[test]
fn train_limit_zero_is_a_clear_error() {
    let dir = folder("train-limit");
    let (ok, _, err) = nnzip(&[
        "compress",
        &shared("models/lenet300.onnx"),
        "--data",
        "fashion-mnist",
        "--train-limit",
        "0",
        "-o",
        &s(&dir.join("out.nnz")),
    ]);
    assert!(!ok);
    assert!(
        err.contains("train-limit 0 leaves no training image"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// `inspect` reads eight bytes of a device before refusing it, and a file whose graph needs a
/// tensor it does not hold is reported as refused (exit non-zero) after its table, and
/// `decompress` writes nothing from it.
#[test]
fn inspect_and_decompress_refuse_what_the_loader_refuses() {
    let started = Instant::now();
    let (ok, _, err) = nnzip(&["inspect", "/dev/zero"]);
    assert!(!ok);
    assert!(err.contains("not a .nnz file"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let dir = folder("refused");
    let nnz = packed_lenet5(&dir);
    let bytes = std::fs::read(&nnz).unwrap();
    let reader = NnzReader::parse(&bytes).unwrap();
    let mut w = NnzWriter::new(reader.metadata().clone(), reader.graph().to_vec());
    let (dropped, kept) = reader.tensors().split_last().unwrap();
    for t in kept {
        w.push(TensorRecord {
            row_scales: None,
            name: t.name.clone(),
            shape: t.shape.clone(),
            data: TensorData::RawF32(t.decode().unwrap()),
        })
        .unwrap();
    }
    let missing = dir.join("missing-tensor.nnz");
    std::fs::write(&missing, w.to_bytes().unwrap()).unwrap();

    let (ok, out, err) = nnzip(&["inspect", &s(&missing)]);
    assert!(!ok, "inspect accepted a file the loader refuses");
    assert!(
        out.contains("format version"),
        "the report is still shown: {out}"
    );
    assert!(
        err.contains("refuses") && err.contains(&dropped.name),
        "{err}"
    );

    let onnx = dir.join("out.onnx");
    let (ok, _, err) = nnzip(&["decompress", &s(&missing), "-o", &s(&onnx)]);
    assert!(!ok);
    assert!(err.contains("does not load"), "{err}");
    assert!(!onnx.exists());
    let (ok, _, err) = nnzip(&["decompress", &s(&nnz), "-o", &s(&onnx)]);
    assert!(ok, "{err}");
}

/// Photos: a link back to the folder (a loop) and a FIFO named like a photo are skipped and
/// listed; the run ends.
#[test]
fn agree_skips_links_to_folders_and_fifos() {
    let dir = folder("photos");
    let photos = dir.join("photos");
    std::fs::create_dir_all(photos.join("sub")).unwrap();
    std::fs::copy(shared("images/coffee.jpg"), photos.join("sub/coffee.jpg")).unwrap();
    std::os::unix::fs::symlink(&photos, photos.join("sub/loop")).unwrap();
    let fifo = photos.join("stuck.jpg");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let nnz = packed_lenet5(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_nnzip"))
        .args([
            "agree",
            &s(&nnz),
            "--teacher",
            &shared("models/lenet5.onnx"),
            "--photos",
            &s(&photos),
            "--views",
            "1",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("agree hangs on a FIFO or a link loop");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["photos"], 1, "{stdout}");
    let skipped = v["skipped"].to_string();
    assert!(skipped.contains("not a regular file"), "{skipped}");
    assert!(skipped.contains("not followed"), "{skipped}");
}

/// SIGINT or SIGTERM at any moment of a decompression leaves the output whole or absent, and
/// never the temporary file.
#[test]
fn an_interrupted_decompress_leaves_no_temporary_file() {
    let dir = folder("interrupt");
    let nnz = dir.join("effnet.nnz");
    let (ok, _, err) = nnzip(&[
        "pack",
        &shared("models/efficientnet_lite0.onnx"),
        "-o",
        &s(&nnz),
    ]);
    assert!(ok, "{err}");
    for (i, delay_ms) in [50u64, 200, 400, 600, 800, 1000].into_iter().enumerate() {
        let out = dir.join(format!("out-{i}.onnx"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_nnzip"))
            .args(["decompress", &s(&nnz), "-o", &s(&out)])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let signal = if i % 2 == 0 { "-INT" } else { "-TERM" };
        let _ = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        child.wait().unwrap();
        let temps: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(
            temps.is_empty(),
            "{signal} after {delay_ms} ms left {temps:?}"
        );
        if out.exists() {
            assert!(std::fs::metadata(&out).unwrap().len() > 18_000_000);
        }
    }
}
