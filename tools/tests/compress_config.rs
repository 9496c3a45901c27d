//! `nnzip compress --config FILE.toml`: keys are the long flags, the command line wins, unknown
//! keys and bad values fail before any work with the file named; a data set whose classes do not
//! fit the model is refused before retraining starts.

use std::path::PathBuf;
use std::process::Command;

fn lenet300() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/models/lenet300.onnx")
        .display()
        .to_string()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nnzip-config-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn compress(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nnzip"))
        .arg("compress")
        .arg(lenet300())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn layer<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap()
}

#[test]
fn config_keys_apply_and_flags_win() {
    let cfg = tmp("good.toml");
    std::fs::write(
        &cfg,
        "bits-fc = 3\nraw-f16 = true\ngap-bits = 6\n[densities]\n\"fc1.weight\" = 0.1\n\"fc2.weight\" = 0.2\n",
    )
    .unwrap();
    let out = tmp("good.nnz");
    let plots = tmp("plots");
    let (ok, stdout, stderr) = compress(&[
        "--config",
        cfg.to_str().unwrap(),
        "--plots",
        plots.to_str().unwrap(),
        "--json",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let fc1 = layer(&v, "fc1.weight");
    assert_eq!(fc1["bits"], 3);
    assert!(
        (fc1["density"].as_f64().unwrap() - 0.1).abs() < 1e-3,
        "{fc1}"
    );
    assert!((layer(&v, "fc2.weight")["density"].as_f64().unwrap() - 0.2).abs() < 1e-3);
    assert_eq!(layer(&v, "fc1.bias")["encoding"], "raw-f16");
    if fc1["encoding"] == "shared-sparse" {
        assert_eq!(fc1["gap_bits"], 6);
    }
    // Three histograms (dense, pruned, with centroids) per shared tensor, all PNG.
    let mut pngs: Vec<String> = std::fs::read_dir(&plots)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pngs.sort();
    assert_eq!(pngs.len(), 9, "{pngs:?}");
    assert!(
        pngs.contains(&"fc1_weight-3-shared.png".to_string()),
        "{pngs:?}"
    );
    for p in &pngs {
        assert!(
            std::fs::read(plots.join(p))
                .unwrap()
                .starts_with(b"\x89PNG"),
            "{p}"
        );
    }
    // Range coding is on by default: the file is version 3 when a tensor uses it. With
    // `coder = "huffman"` every tensor is Huffman-coded and the file is version 1.
    let auto = std::fs::read(&out).unwrap();
    let uses_ac = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["encoding"] == "shared-sparse-ac");
    assert_eq!(
        u16::from_le_bytes([auto[8], auto[9]]),
        if uses_ac { 3 } else { 1 }
    );
    let huff_cfg = tmp("huffman.toml");
    std::fs::write(&huff_cfg, "coder = \"huffman\"\ndensity = 0.05\n").unwrap();
    let huff_out = tmp("huffman.nnz");
    let (ok, stdout, stderr) = compress(&[
        "--config",
        huff_cfg.to_str().unwrap(),
        "--json",
        "-o",
        huff_out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let hv: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        hv["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["encoding"] != "shared-sparse-ac")
    );
    let huff = std::fs::read(&huff_out).unwrap();
    assert_eq!(u16::from_le_bytes([huff[8], huff[9]]), 1);
    // The command line wins over the file.
    let (ok, stdout, stderr) = compress(&[
        "--config",
        cfg.to_str().unwrap(),
        "--bits-fc",
        "4",
        "--density",
        "fc1.weight=0.05",
        "--json",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let fc1 = layer(&v, "fc1.weight");
    assert_eq!(fc1["bits"], 4);
    assert!(
        (fc1["density"].as_f64().unwrap() - 0.05).abs() < 1e-3,
        "{fc1}"
    );
}

#[test]
fn bad_configs_fail_before_any_work_naming_the_file_and_key() {
    let out = tmp("never.nnz");
    for (name, text, expect) in [
        ("unknown.toml", "bits-fcc = 4\n", "bits-fcc"),
        ("type.toml", "bits-fc = \"four\"\n", "bits-fc"),
        ("bits.toml", "bits-fc = 17\n", "between 1 and 16"),
        ("density.toml", "density = 0.0\n", "(0, 1]"),
        (
            "layer.toml",
            "[densities]\n\"fc9.weight\" = 0.5\n",
            "fc9.weight",
        ),
        ("distill.toml", "distill = 2.0\n", "distill"),
        ("gap.toml", "gap-bits = \"sometimes\"\n", "gap-bits"),
    ] {
        let cfg = tmp(name);
        std::fs::write(&cfg, text).unwrap();
        let (ok, _, stderr) = compress(&[
            "--config",
            cfg.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(!ok, "{name} was accepted");
        assert!(stderr.contains(expect), "{name}: {stderr}");
        assert!(!out.exists(), "{name} left an output file");
    }
    let (ok, _, stderr) = compress(&[
        "--config",
        "/no/such/file.toml",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("/no/such/file.toml"), "{stderr}");
}

#[test]
fn data_with_more_classes_than_the_model_is_refused_before_retraining() {
    // An ImageFolder of 12 classes of 28×28 images for a 10-class model.
    let root = tmp("twelve");
    for c in 0..12 {
        let dir = root.join(format!("class{c:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        let img =
            image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * y + c) % 255) as u8]));
        img.save(dir.join("a.png")).unwrap();
    }
    let out = tmp("twelve.nnz");
    let (ok, _, stderr) = compress(&[
        "--data",
        root.to_str().unwrap(),
        "--density",
        "0.1",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!ok, "12 classes were accepted by a 10-class model");
    assert!(
        stderr.contains("classes") || stderr.contains("labels"),
        "{stderr}"
    );
    assert!(!out.exists());
}
