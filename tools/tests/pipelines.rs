//! Both compression pipelines called as library functions, settings in and report out, without
//! the binary: labelled (one shot, and with a few hundred training images), and label-free on
//! LeNet-5 with photos as calibration data. The CLI tests (`compress_*.rs`) cover the flags.

use nnzip_tools::compress::report::{CompressReport, ModeReport};
use nnzip_tools::compress::settings::CompressSettings;
use nnzip_tools::compress::{Compressed, Source, compress, pack_options};
use std::path::{Path, PathBuf};

fn shared(rel: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared")
        .join(rel);
    assert!(p.exists(), "{} missing", p.display());
    p
}

/// The result of compressing `model` with `s`.
fn try_run(model: &Path, s: &CompressSettings) -> anyhow::Result<Compressed> {
    let onnx = std::fs::read(model).unwrap();
    let pack = pack_options(model, s).unwrap();
    let src = Source {
        path: model,
        onnx: &onnx,
        pack: &pack,
    };
    compress(&src, s, false)
}

fn run(model: &Path, s: &CompressSettings) -> Compressed {
    try_run(model, s).unwrap()
}

/// The error of compressing `model` with `s`, with its causes.
fn run_err(model: &Path, s: &CompressSettings) -> String {
    match try_run(model, s) {
        Ok(_) => panic!("compress succeeded"),
        Err(e) => format!("{e:#}"),
    }
}

/// What every report says, whatever the mode: it describes the file returned, and its JSON
/// and text carry the same figures.
fn check_common(c: &Compressed, onnx_bytes: usize) {
    let r: &CompressReport = &c.report;
    assert_eq!(r.file_bytes, c.file.len());
    assert_eq!(r.onnx_bytes, onnx_bytes);
    assert_eq!(
        r.dense_weight_bytes,
        r.layers.iter().map(|l| l.dense_bytes).sum::<u64>()
    );
    assert!(r.layers.iter().any(|l| l.bits > 0), "nothing was shared");
    nnzip_core::Model::from_bytes(&c.file).expect("the file loads in the core runtime");
    let json = r.to_json();
    assert_eq!(json["file_bytes"], c.file.len());
    assert_eq!(json["layers"].as_array().unwrap().len(), r.layers.len());
    let text = r.render(Path::new("out.nnz"));
    assert!(text.starts_with("tensor "), "{text}");
    assert!(text.contains("out.nnz: "), "{text}");
}

#[test]
fn labelled_one_shot_reports_the_layers_it_stored() {
    let model = shared("models/lenet5.onnx");
    let s = CompressSettings {
        paper_densities: Some("lenet5".into()),
        ..Default::default()
    };
    let c = run(&model, &s);
    check_common(&c, std::fs::metadata(&model).unwrap().len() as usize);
    let ModeReport::Labelled(r) = &c.report.mode else {
        panic!("a labelled report expected");
    };
    // No data: nothing measured, nothing to say about images.
    assert!(r.accuracy.is_none() && r.images.is_none() && r.stages.is_empty());
    let sparse = c.report.layers.iter().filter(|l| l.density < 0.5).count();
    assert!(sparse >= 2, "the paper's densities prune every layer");
    assert!(c.report.file_bytes * 15 < c.report.dense_weight_bytes as usize);
}

#[test]
fn labelled_with_data_measures_each_stage_and_names_its_images() {
    let model = shared("models/lenet300.onnx");
    let s = CompressSettings {
        data: Some("fashion-mnist".into()),
        density: Some(0.2),
        rounds: 1,
        retrain_epochs: 1,
        fine_tune_epochs: 1,
        train_limit: Some(300),
        ..Default::default()
    };
    let c = run(&model, &s);
    check_common(&c, std::fs::metadata(&model).unwrap().len() as usize);
    let ModeReport::Labelled(r) = &c.report.mode else {
        panic!("a labelled report expected");
    };
    let stages: Vec<&str> = r.stages.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(stages.first(), Some(&"dense"));
    assert_eq!(stages.last(), Some(&"decoded .nnz (core runtime)"));
    assert!(stages.contains(&"weight sharing"), "{stages:?}");
    let images = r
        .images
        .as_ref()
        .expect("which images the figures come from");
    assert_eq!(images.validation + images.reported, 10_000);
    let (before, after) = r.accuracy.expect("accuracy before and after");
    assert!(before > 0.85 && after > 0.3, "{before} → {after}");
    let json = c.report.to_json();
    assert_eq!(json["reported_images"], images.reported);
    assert_eq!(json["accuracy_after"], after);
}

#[test]
fn label_free_allocates_bits_against_the_teacher_and_reports_agreement() {
    let model = shared("models/lenet5.onnx");
    let s = CompressSettings {
        calibration: Some(shared("images")),
        preprocess: "mnist".into(),
        views: 2,
        fine_tune_epochs: 0,
        target_ratio: Some(8.0),
        ..Default::default()
    };
    let onnx_bytes = std::fs::metadata(&model).unwrap().len() as usize;
    let c = run(&model, &s);
    check_common(&c, onnx_bytes);
    let ModeReport::LabelFree(r) = &c.report.mode else {
        panic!("a label-free report expected");
    };
    // Every shared tensor was measured along the ladder and given a step of it.
    assert!(!r.curves.is_empty());
    for curve in &r.curves {
        let step = r.chosen[&curve.name];
        assert!(step < curve.points.len(), "{}", curve.name);
    }
    assert_eq!(
        r.allocations_tried.len(),
        1,
        "a size goal measures one allocation"
    );
    let (stage, cal, hold) = r.stages.last().unwrap();
    assert_eq!(stage, "decoded .nnz (core runtime)");
    assert!(hold.is_none(), "no holdout folder given");
    assert_eq!(cal.views, 4 * 2, "four photos, two views each");
    // The size goal is met, give or take the size model's margin.
    assert!(
        c.file.len() <= onnx_bytes / 8 + 4096,
        "{} bytes",
        c.file.len()
    );
    let json = c.report.to_json();
    assert_eq!(
        json["sensitivity"].as_array().unwrap().len(),
        r.curves.len()
    );
    assert!(
        c.report
            .render(Path::new("x.nnz"))
            .contains("binary16 reference")
    );
}

#[test]
fn settings_are_checked_before_any_work() {
    let model = shared("models/lenet5.onnx");
    let s = CompressSettings {
        distill: 2.0,
        ..Default::default()
    };
    let err = run_err(&model, &s);
    assert!(err.contains("distill must be a weight in [0, 1]"), "{err}");
}

fn label_free_lenet5(ratio: f64) -> CompressSettings {
    CompressSettings {
        calibration: Some(shared("images")),
        preprocess: "mnist".into(),
        views: 2,
        fine_tune_epochs: 0,
        target_ratio: Some(ratio),
        ..Default::default()
    }
}

/// A fresh folder under the system's temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("nnzip-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn gptq_statistics_read_from_the_cache_give_the_same_file() {
    let model = shared("models/lenet5.onnx");
    let dir = TempDir::new("statistics-cache");
    let plain = run(&model, &label_free_lenet5(8.0));
    let cached = CompressSettings {
        statistics_cache: Some(dir.0.clone()),
        ..label_free_lenet5(8.0)
    };
    let first = run(&model, &cached);
    // One entry for the statistics of every calibration photo, one for those of the photos the
    // curves are not measured on.
    let entries: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let second = run(&model, &cached);
    assert!(
        first.file == plain.file,
        "measuring into the cache changed the file"
    );
    assert!(
        second.file == plain.file,
        "statistics read back changed the file"
    );
    // Another size goal reads the same statistics: no new entry.
    run(
        &model,
        &CompressSettings {
            statistics_cache: Some(dir.0.clone()),
            ..label_free_lenet5(12.0)
        },
    );
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 2);
    // A damaged entry is an error naming the file, not a panic or a silent re-measure.
    for e in std::fs::read_dir(&dir.0).unwrap() {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    }
    let err = run_err(&model, &cached);
    assert!(err.contains("delete it to measure again"), "{err}");
}

#[test]
fn the_coarse_end_of_the_default_ladder_reaches_12x() {
    let model = shared("models/lenet5.onnx");
    let onnx_bytes = std::fs::metadata(&model).unwrap().len() as usize;
    // Without the grid steps coarser than 0.6σ, LeNet-5's smallest file is ~10.8×: refused.
    let finer = CompressSettings {
        grid_steps: vec![0.04, 0.08, 0.15, 0.3, 0.6],
        ..label_free_lenet5(12.0)
    };
    let err = run_err(&model, &finer);
    assert!(
        err.contains("even the fewest bits of the ladder need")
            && err.contains("add coarser steps to --grid-steps"),
        "{err}"
    );
    // The default ladder meets it, and some layer takes a step beyond 0.6σ to do so.
    let c = run(&model, &label_free_lenet5(12.0));
    assert!(
        c.file.len() <= onnx_bytes / 12 + 4096,
        "{} bytes",
        c.file.len()
    );
    let ModeReport::LabelFree(r) = &c.report.mode else {
        panic!("a label-free report expected");
    };
    // Ladder steps: 8-bit k-means, then 0.04, 0.08, 0.15, 0.3, 0.6σ (index 5), 0.9, 1.3σ.
    let coarse = r
        .curves
        .iter()
        .filter(|curve| r.chosen[&curve.name] > 5)
        .count();
    assert!(coarse > 0, "no layer coarser than 0.6σ: {:?}", r.chosen);
}
