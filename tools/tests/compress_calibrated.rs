//! Label-free compression end to end through the `nnzip` binary, on LeNet-5 (small enough for
//! CI) with photos as unlabelled calibration data: the structure of the report, the size goal,
//! agreement measured on photos kept apart, and bad folders refused without output.

mod common;

use common::nnzip;
use std::path::{Path, PathBuf};

fn shared(rel: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared")
        .join(rel);
    assert!(p.exists(), "{} missing", p.display());
    p
}

/// `nnzip compress MODEL -o OUTPUT --preprocess mnist --calibration`: the calibration folder and
/// the other settings follow.
fn compress_args<'a>(model: &'a str, output: &'a str) -> [&'a str; 7] {
    [
        "compress",
        model,
        "-o",
        output,
        "--preprocess",
        "mnist",
        "--calibration",
    ]
}

fn folder(dir: &Path, photos: &[&str]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    for p in photos {
        std::fs::copy(shared(&format!("images/{p}")), dir.join(p)).unwrap();
    }
    dir.display().to_string()
}

#[test]
fn lenet5_without_labels_meets_its_size_goal_and_reports_agreement() {
    let tmp = std::env::temp_dir().join(format!("nnzip-calib-{}", std::process::id()));
    let cal = folder(
        &tmp.join("cal"),
        &["astronaut.jpg", "rocket.jpg", "coffee.jpg"],
    );
    std::fs::write(tmp.join("cal/readme.txt"), "not a photo").unwrap();
    let hold = folder(&tmp.join("hold"), &["chelsea.jpg"]);
    let out = tmp.join("lenet5.nnz");
    let cache_s = tmp.join("sensitivity.json").display().to_string();
    let out_s = out.display().to_string();
    let model = shared("models/lenet5.onnx").display().to_string();
    let base = compress_args(&model, &out_s);

    // Bad folders: clear errors, no file.
    let (ok, _, err) = nnzip(&[&base[..], &["/nonexistent/photos"]].concat());
    assert!(!ok && err.contains("is not a folder"), "{err}");
    let empty = tmp.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (ok, _, err) = nnzip(&[&base[..], &[empty.to_str().unwrap()]].concat());
    assert!(!ok && err.contains("no usable photo"), "{err}");
    let (ok, _, err) = nnzip(&[&base[..], &[cal.as_str(), "--holdout", cal.as_str()]].concat());
    assert!(!ok && err.contains("keep the two folders apart"), "{err}");
    assert!(!out.exists(), "a failed run left {}", out.display());

    let settings = [
        cal.as_str(),
        "--holdout",
        hold.as_str(),
        "--views",
        "6",
        "--target-ratio",
        "8",
        "--fine-tune-epochs",
        "2",
        "--sensitivity-cache",
        cache_s.as_str(),
        "--json",
    ];
    let (ok, stdout, err) = nnzip(&[&base[..], &settings].concat());
    assert!(ok, "compress failed: {err}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let file = v["file_bytes"].as_u64().unwrap();
    let onnx = v["onnx_bytes"].as_u64().unwrap();
    assert!(onnx as f64 / file as f64 >= 8.0, "{onnx} / {file} < 8×");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), file);
    // Every shared tensor was measured along the ladder, finest (8-bit k-means) first.
    let curves = v["sensitivity"].as_array().unwrap();
    assert_eq!(curves.len(), 4, "conv1, conv2, fc1, fc2");
    for c in curves {
        assert_eq!(c["points"][0]["quantizer"]["kmeans"]["bits"], 8, "{c}");
    }
    // Stages: sharing, fine-tuning (kept or not), decoded file; views counted.
    let stages = v["stages"].as_array().unwrap();
    assert!(stages.len() >= 2, "{stages:?}");
    let last = stages.last().unwrap();
    assert_eq!(last["stage"], "decoded .nnz (core runtime)");
    assert_eq!(last["calibration"]["views"], 18, "3 photos × 6 views");
    assert_eq!(last["holdout"]["views"], 6);
    // Row scales (format version 4) and error-compensated rounding (GPTQ) of every layer.
    let file_bytes = std::fs::read(&out).unwrap();
    assert_eq!(u16::from_le_bytes([file_bytes[8], file_bytes[9]]), 4);
    let gptq: Vec<&str> = v["gptq_layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(
        gptq,
        ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"],
        "{gptq:?}"
    );
    // Sensitivity measured on the photos compensation did not fit: every other one (of the
    // three, the second), two views each.
    assert_eq!(v["sensitivity_views"], 2, "{}", v["sensitivity_views"]);
    // Fine-tuning saw new random views in its second epoch.
    assert_eq!(v["fine_tune_views"], 2 * 18, "2 epochs × 18 views");
    for key in ["top1", "top5"] {
        let a = last["holdout"][key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a), "{key} {a}");
    }
    let skipped = v["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a .jpg")
    );

    // Again from the sensitivity written by the first run: nothing measured twice, and the same
    // seed gives the same file, byte for byte.
    let cached: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cache_s).unwrap()).unwrap();
    assert_eq!(cached["curves"], v["sensitivity"]);
    assert!(cached["measurement"].as_u64().is_some(), "{cached}");
    let first = std::fs::read(&out).unwrap();
    let again = tmp.join("again.nnz");
    let again_s = again.display().to_string();
    let (ok, _, err) = nnzip(&[&compress_args(&model, &again_s)[..], &settings].concat());
    assert!(ok, "compress from the cache failed: {err}");
    assert!(
        std::fs::read(&again).unwrap() == first,
        "same settings, different file"
    );
    // A cache written by an older build (a bare list of curves, or another measurement) is
    // refused with the fix, not used.
    let stale = tmp.join("stale.json");
    std::fs::write(&stale, serde_json::to_vec(&cached["curves"]).unwrap()).unwrap();
    let stale_s = stale.display().to_string();
    let stale_settings: Vec<&str> = settings
        .iter()
        .map(|&a| if a == cache_s { stale_s.as_str() } else { a })
        .collect();
    let (ok, _, err) = nnzip(&[&compress_args(&model, &again_s)[..], &stale_settings].concat());
    assert!(!ok && err.contains("delete it to measure again"), "{err}");
    // So is one measured with other entropy coders: its bytes are not the ones this run writes.
    let (ok, _, err) = nnzip(
        &[
            &compress_args(&model, &again_s)[..],
            &settings[..],
            &["--coder", "smallest"][..],
        ]
        .concat(),
    );
    assert!(
        !ok && err.contains("was measured with --coder auto") && err.contains("--coder smallest"),
        "{err}"
    );
    // And one whose GPTQ statistics came from another number of views per photo.
    let more_stats = [&settings[..], &["--statistics-views", "12"][..]].concat();
    let (ok, _, err) = nnzip(&[&compress_args(&model, &again_s)[..], &more_stats].concat());
    assert!(
        !ok && err.contains("--statistics-views 6 (this run: 6 and 12)"),
        "{err}"
    );
    // Statistics from more views than are measured: the calibration views are the first six
    // of each photo's twelve.
    assert_eq!(v["statistics_views"], 18, "3 photos × 6 views");
    let fresh = tmp.join("fresh-cache.json").display().to_string();
    let more_stats: Vec<&str> = more_stats
        .iter()
        .map(|&a| if a == cache_s { fresh.as_str() } else { a })
        .collect();
    let (ok, stdout, err) = nnzip(&[&compress_args(&model, &again_s)[..], &more_stats].concat());
    assert!(ok, "compress with --statistics-views failed: {err}");
    let w: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(w["statistics_views"], 36, "3 photos × 12 views");
    assert_eq!(w["stages"][0]["calibration"]["views"], 18);
    assert_eq!(
        w["asymmetric_layers"].as_array().unwrap().len(),
        0,
        "off by default"
    );
    // Asymmetric rounding of the last layers: the compensated grids among them, in graph
    // order, rounded again and measured as a stage of their own; the size goal still holds.
    let asym = [&more_stats[..], &["--asymmetric-layers", "3"][..]].concat();
    let (ok, stdout, err) = nnzip(&[&compress_args(&model, &again_s)[..], &asym].concat());
    assert!(ok, "compress with --asymmetric-layers failed: {err}");
    let w: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let names: Vec<&str> = w["asymmetric_layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let order = ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"];
    assert!(!names.is_empty(), "{w}");
    let mut previous = 0;
    for n in &names {
        let i = order.iter().position(|o| o == n).expect("a shared layer");
        assert!(
            i >= 1 && i >= previous,
            "{names:?}: the last three, in graph order"
        );
        previous = i;
    }
    let stage = &w["stages"][1];
    assert_eq!(
        stage["stage"],
        format!("asymmetric rounding (last {} layers)", names.len())
    );
    assert!(stage["holdout"]["kl"].as_f64().unwrap().is_finite());
    let file = w["file_bytes"].as_u64().unwrap();
    assert!(onnx as f64 / file as f64 >= 8.0, "{onnx} / {file} < 8×");

    // `nnzip agree` measures the file against the dense model on photos: on the holdout photos
    // with the same views, the figures of the report's last stage, to the last digit.
    let (ok, out_a, err) = nnzip(&[
        "agree",
        &out_s,
        "--teacher",
        &model,
        "--photos",
        &hold,
        "--views",
        "6",
        "--json",
    ]);
    assert!(ok, "agree failed: {err}");
    let a: serde_json::Value = serde_json::from_str(out_a.trim()).expect("one JSON object");
    for key in [
        "views",
        "top1",
        "top5",
        "kl",
        "confident_views",
        "confident_top1",
    ] {
        assert_eq!(a["agreement"][key], last["holdout"][key], "{key}: {a}");
    }
    assert_eq!(a["photos"], 1);
    // Agreement by the dense model's margin: the bands hold every view and every agreeing one.
    let sum = |bands: &serde_json::Value, key: &str| -> u64 {
        bands["bands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[key].as_u64().unwrap())
            .sum()
    };
    let (views, top1) = (
        a["agreement"]["views"].as_u64().unwrap(),
        a["agreement"]["top1"].as_f64().unwrap(),
    );
    assert_eq!(sum(&a["by_teacher_margin"], "views"), views, "{a}");
    assert_eq!(
        sum(&a["by_teacher_margin"], "agree"),
        (top1 * views as f64).round() as u64,
        "{a}"
    );
    let top5 = a["agreement"]["top5"].as_f64().unwrap();
    assert_eq!(
        sum(&a["by_teacher_margin"], "top5"),
        (top5 * views as f64).round() as u64,
        "{a}"
    );
    // The binary16 reference is the dense model barely moved: KL far below the file's.
    let reference = &a["binary16_reference"]["agreement"];
    assert_eq!(reference["views"], views);
    let ref_kl = reference["kl"].as_f64().unwrap();
    assert!(
        ref_kl < 1e-3 && ref_kl < a["agreement"]["kl"].as_f64().unwrap(),
        "{a}"
    );
    // The report measured the same reference on the same holdout views.
    assert_eq!(v["binary16_reference"]["holdout"], *reference, "{v}");
    assert_eq!(v["by_teacher_margin"]["views"], "holdout");
    assert_eq!(v["by_teacher_margin"]["model"], a["by_teacher_margin"]);
    // The dense model against itself: full agreement, no divergence.
    let packed = tmp.join("dense.nnz");
    let packed_s = packed.display().to_string();
    let (ok, _, err) = nnzip(&["pack", &model, "-o", &packed_s, "--preprocess", "mnist"]);
    assert!(ok, "pack failed: {err}");
    let (ok, out_a, err) = nnzip(&[
        "agree",
        &packed_s,
        "--teacher",
        &model,
        "--photos",
        &cal,
        "--json",
    ]);
    assert!(ok, "agree failed: {err}");
    let a: serde_json::Value = serde_json::from_str(out_a.trim()).unwrap();
    assert_eq!(a["agreement"]["top1"], 1.0, "{a}");
    assert!(a["agreement"]["kl"].as_f64().unwrap() < 1e-9, "{a}");
    assert_eq!(a["skipped"].as_array().unwrap().len(), 1, "readme.txt: {a}");
    // A teacher that is not the model's original is refused before any photo is run.
    let other = shared("models/efficientnet_lite0.onnx")
        .display()
        .to_string();
    let (ok, _, err) = nnzip(&["agree", &out_s, "--teacher", &other, "--photos", &hold]);
    assert!(!ok && err.contains("the original of"), "{err}");
    // A model without preprocessing in its file cannot be fed photos: said, with the fix.
    let bare = tmp.join("bare.nnz");
    let bare_s = bare.display().to_string();
    assert!(nnzip(&["pack", &model, "-o", &bare_s]).0);
    let (ok, _, err) = nnzip(&["agree", &bare_s, "--teacher", &model, "--photos", &cal]);
    assert!(
        !ok && err.contains("has no image preprocessing") && err.contains("--preprocess"),
        "{err}"
    );

    // The file classifies in the core runtime, with its preprocessing.
    let (ok, out_c, err) = nnzip(&[
        "classify",
        &out_s,
        shared("images/coffee.jpg").to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "classify failed: {err}");
    assert!(out_c.contains("probability"), "{out_c}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
