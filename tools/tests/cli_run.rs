//! `nnzip run`: a model on tensor files, outputs written as ONNX tensor files, and the errors
//! that name what does not fit.

mod common;

use common::{nnzip, nnzip_ok};
use nnzip_core::Tensor;
use nnzip_tools::model_io::{read_tensor_file, write_tensor_file};
use std::path::PathBuf;

fn lenet5() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/lenet5.onnx");
    assert!(
        p.exists(),
        "{} missing: the tests need ../shared",
        p.display()
    );
    p.display().to_string()
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("nnzip-cli-run-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A 1×1×28×28 image with a bright diagonal.
fn image() -> Tensor {
    let mut v = vec![0f32; 28 * 28];
    for i in 0..28 {
        v[i * 28 + i] = 1.0;
    }
    Tensor::from_shape(&[1, 1, 28, 28], &v).unwrap()
}

/// The same tensor as NumPy would save it (format 1.0, little-endian f32).
fn npy(t: &Tensor) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}",
        t.shape()
            .iter()
            .map(|d| format!("{d}, "))
            .collect::<String>()
    );
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    let plain = t.try_as_plain_ram().unwrap();
    for v in plain.as_slice::<f32>().unwrap() {
        out.extend(v.to_le_bytes());
    }
    out
}

#[test]
fn run_writes_each_output_as_the_core_computes_it() {
    let d = dir();
    let pb = d.join("image.pb");
    write_tensor_file(&pb, "input", &image()).unwrap();
    let npy_file = d.join("image.npy");
    std::fs::write(&npy_file, npy(&image())).unwrap();
    let expected = {
        let onnx = std::fs::read(lenet5()).unwrap();
        let nnz = nnzip_tools::packing::pack_onnx(&onnx, &Default::default())
            .unwrap()
            .to_bytes()
            .unwrap();
        nnzip_core::Model::from_bytes(&nnz)
            .unwrap()
            .run(image())
            .unwrap()
    };
    for (input, out) in [(&pb, d.join("from_pb")), (&npy_file, d.join("from_npy"))] {
        let stdout = nnzip_ok(&[
            "run",
            &lenet5(),
            "--input",
            &format!("input={}", input.display()),
            "--output-dir",
            &out.display().to_string(),
        ]);
        assert!(stdout.contains("logits"), "{stdout}");
        let got = read_tensor_file(&out.join("logits.pb")).unwrap();
        assert_eq!(got.shape(), &[1, 10]);
        assert_eq!(got, expected, "{}", input.display());
    }
}

#[test]
fn run_names_what_does_not_fit() {
    let d = dir();
    let out = d.join("never");
    let (model, out_s) = (lenet5(), out.display().to_string());
    let err_of = |args: &[&str]| {
        let mut all = vec!["run", &model, "--output-dir", &out_s];
        all.extend(args);
        let (ok, _, err) = nnzip(&all);
        assert!(!ok, "{args:?} should fail");
        err
    };
    let good = d.join("good.pb");
    write_tensor_file(&good, "input", &image()).unwrap();
    let small = d.join("small.pb");
    write_tensor_file(
        &small,
        "input",
        &Tensor::from_shape(&[1, 1, 8, 8], &[0f32; 64]).unwrap(),
    )
    .unwrap();
    let ints = d.join("ints.pb");
    write_tensor_file(&ints, "input", &Tensor::from_shape(&[1], &[3i64]).unwrap()).unwrap();

    let err = err_of(&["--input", &format!("image={}", good.display())]);
    assert!(
        err.contains("no input 'image'") && err.contains("input"),
        "{err}"
    );
    let err = err_of(&[]);
    assert!(err.contains("missing input(s) input"), "{err}");
    let err = err_of(&["--input", &format!("input={}", small.display())]);
    assert!(
        err.contains("has shape [?, 1, 28, 28]") && err.contains("[1, 1, 8, 8]"),
        "{err}"
    );
    let err = err_of(&["--input", &format!("input={}", ints.display())]);
    assert!(
        err.contains("takes F32 elements") && err.contains("I64"),
        "{err}"
    );
    let err = err_of(&["--input", "input"]);
    assert!(err.contains("not NAME=FILE"), "{err}");
    let err = err_of(&["--input", &format!("input={}", lenet5())]);
    assert!(err.contains("cannot read a tensor from"), "{err}");
    assert!(
        !out.exists(),
        "a failed run must not create the output folder"
    );
}
