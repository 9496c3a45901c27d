//! What `nnzip compress` reports, in either mode, as one value: rendered as the table on stdout,
//! as the JSON object of `--json`, and (labelled runs with `--plots`) as weight histograms.

use super::label_free::agreement::{Agreement, CONFIDENT, MarginBands};
use super::label_free::bit_curves::BitsCurve;
use super::label_free::photos::Skipped;
use super::pipeline::LayerReport;
use super::retrain::BudgetStep;
use super::settings::BudgetSplit;
use crate::table::{Table, human_bytes};
use anyhow::{Context, Result};
use nnzip_core::format::{TensorData, TensorRecord};
use nnzip_core::graph::Weight;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// What one run of either pipeline produced and measured.
#[derive(Debug, Clone)]
pub struct CompressReport {
    /// Per tensor: what was stored and how.
    pub layers: Vec<LayerReport>,
    /// Bytes of the `.nnz` file, everything included.
    pub file_bytes: usize,
    /// Bytes of the weights as dense f32.
    pub dense_weight_bytes: u64,
    /// Bytes of the ONNX file compressed.
    pub onnx_bytes: usize,
    /// What the mode measured.
    pub mode: ModeReport,
}

/// The figures particular to each pipeline.
#[derive(Debug, Clone)]
pub enum ModeReport {
    /// Compression with labelled data (or one shot, without any).
    Labelled(LabelledReport),
    /// Compression against the dense model on unlabelled photos.
    LabelFree(Box<LabelFreeReport>),
}

/// Which images the labelled pipeline's figures come from.
#[derive(Debug, Clone)]
pub struct ImagesUsed {
    /// Images decisions and the stage table are measured on.
    pub validation: usize,
    /// Images the accuracy before and after is measured on.
    pub reported: usize,
    /// The two in a sentence.
    pub description: String,
}

/// What the labelled pipeline measured.
#[derive(Debug, Clone, Default)]
pub struct LabelledReport {
    /// Validation accuracy after each stage.
    pub stages: Vec<(String, f64)>,
    /// Accuracy before and after on the reported images (with `--data`).
    pub accuracy: Option<(f64, f64)>,
    /// The accuracy budget, percentage points.
    pub max_accuracy_drop: Option<f64>,
    /// Where the budget was measured.
    pub budget_split: Option<BudgetSplit>,
    /// The pruning levels tried within the budget.
    pub budget_steps: Vec<BudgetStep>,
    /// Stages undone because they made the model worse.
    pub rolled_back: Vec<String>,
    /// Which images the figures come from (with `--data`).
    pub images: Option<ImagesUsed>,
}

/// What the label-free pipeline measured.
#[derive(Debug, Clone)]
pub struct LabelFreeReport {
    /// Per shared tensor: agreement along the quantizer ladder.
    pub curves: Vec<BitsCurve>,
    /// The ladder step chosen per tensor.
    pub chosen: BTreeMap<String, usize>,
    /// Predicted payload bytes and calibration agreement of each allocation measured.
    pub allocations_tried: Vec<(u64, Agreement)>,
    /// Agreement after each stage: on the calibration views, and on the holdout views.
    pub stages: Vec<(String, Agreement, Option<Agreement>)>,
    /// The dense model with binary16 weights, on the same views.
    pub reference: (Agreement, Option<Agreement>),
    /// Top-1 agreement of the decoded file by the teacher's margin.
    pub bands: MarginBands,
    /// The same for the binary16 reference.
    pub reference_bands: MarginBands,
    /// Files skipped in the photo folders.
    pub skipped: Vec<Skipped>,
    /// Views fine-tuning trained on.
    pub fine_tune_views: usize,
    /// Layers rounded with error compensation.
    pub gptq_layers: Vec<String>,
    /// Views each layer's curve was measured on.
    pub sensitivity_views: usize,
    /// Views the GPTQ statistics were measured on.
    pub statistics_views: usize,
    /// Layers rounded again asymmetrically.
    pub asymmetric_layers: Vec<String>,
}

impl LabelFreeReport {
    /// The decoded file's agreement: on the calibration views, and on the holdout views.
    fn decoded(&self) -> (Agreement, Option<Agreement>) {
        self.stages
            .last()
            .map(|(_, c, h)| (*c, *h))
            .unwrap_or_default()
    }

    /// Whether the figures include photos never used for a decision.
    fn has_holdout(&self) -> bool {
        self.reference.1.is_some()
    }
}

impl CompressReport {
    fn ratio_vs_dense(&self) -> f64 {
        self.dense_weight_bytes as f64 / self.file_bytes as f64
    }

    /// The report as one JSON object (`--json`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "layers": self.layers,
            "file_bytes": self.file_bytes,
            "dense_weight_bytes": self.dense_weight_bytes,
            "ratio_vs_dense_weights": self.ratio_vs_dense(),
            "onnx_bytes": self.onnx_bytes,
        });
        let more = match &self.mode {
            ModeReport::Labelled(r) => labelled_json(r),
            ModeReport::LabelFree(r) => label_free_json(r),
        };
        if let (Some(v), serde_json::Value::Object(more)) = (v.as_object_mut(), more) {
            v.extend(more);
        }
        v
    }

    /// The report as text, `output` being the file written.
    pub fn render(&self, output: &Path) -> String {
        let mut out = layer_table(&self.layers).render();
        if let ModeReport::LabelFree(r) = &self.mode {
            out.push('\n');
            out.push_str(&bits_table(&r.curves, &r.chosen).render());
        }
        let _ = writeln!(
            out,
            "\n{}: {} → {} ({:.1}× vs dense f32 weights, {:.1}× vs the ONNX file, everything included)",
            output.display(),
            human_bytes(self.dense_weight_bytes),
            human_bytes(self.file_bytes as u64),
            self.ratio_vs_dense(),
            self.onnx_bytes as f64 / self.file_bytes as f64
        );
        match &self.mode {
            ModeReport::Labelled(r) => render_labelled(r, &mut out),
            ModeReport::LabelFree(r) => render_label_free(r, &mut out),
        }
        out
    }
}

fn labelled_json(r: &LabelledReport) -> serde_json::Value {
    serde_json::json!({
        "accuracy_before": r.accuracy.map(|a| a.0),
        "accuracy_after": r.accuracy.map(|a| a.1),
        "max_accuracy_drop_pp": r.max_accuracy_drop,
        "budget_levels": r.budget_steps,
        "rolled_back": r.rolled_back,
        "validation_images": r.images.as_ref().map(|i| i.validation),
        "reported_images": r.images.as_ref().map(|i| i.reported),
        "images": r.images.as_ref().map(|i| &i.description),
        "stages": r.stages.iter().map(|(s, a)| serde_json::json!({"stage": s, "accuracy": a})).collect::<Vec<_>>(),
    })
}

fn label_free_json(r: &LabelFreeReport) -> serde_json::Value {
    serde_json::json!({
        "sensitivity": r.curves,
        "allocations_tried": r.allocations_tried.iter().map(|(b, a)| serde_json::json!({"predicted_bytes": b, "calibration": a})).collect::<Vec<_>>(),
        "stages": r.stages.iter().map(|(st, c, h)| serde_json::json!({"stage": st, "calibration": c, "holdout": h})).collect::<Vec<_>>(),
        "skipped": r.skipped,
        "fine_tune_views": r.fine_tune_views,
        "gptq_layers": r.gptq_layers,
        "sensitivity_views": r.sensitivity_views,
        "statistics_views": r.statistics_views,
        "asymmetric_layers": r.asymmetric_layers,
        "binary16_reference": {"calibration": r.reference.0, "holdout": r.reference.1},
        "by_teacher_margin": {
            "views": if r.has_holdout() { "holdout" } else { "calibration" },
            "model": r.bands,
            "binary16_reference": r.reference_bands,
        },
    })
}

fn render_labelled(r: &LabelledReport, out: &mut String) {
    if r.stages.len() > 1 {
        let mut t = Table::new(&["stage", "validation accuracy"]);
        for (stage, acc) in &r.stages {
            t.row(vec![stage.clone(), format!("{:.2}%", acc * 100.0)]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    for note in &r.rolled_back {
        let _ = writeln!(out, "{note}");
    }
    if let Some(images) = &r.images {
        let _ = writeln!(out, "images: {}", images.description);
    }
    if let Some((b, a)) = r.accuracy {
        let _ = writeln!(
            out,
            "accuracy {:.2}% → {:.2}% ({:+.2} pp)",
            b * 100.0,
            a * 100.0,
            (a - b) * 100.0
        );
    }
    if let (Some(budget), Some((b, a))) = (r.max_accuracy_drop, r.accuracy) {
        let kept = r.budget_steps.iter().filter(|st| st.accepted).count();
        let drop = (b - a) * 100.0;
        let _ = writeln!(
            out,
            "budget {budget} pp: {kept} of {} pruning levels kept (measured on the {} images); on the reported test images the loss is {drop:.2} pp{}",
            r.budget_steps.len(),
            match r.budget_split {
                Some(BudgetSplit::Holdout) => "held-out training",
                _ => "validation",
            },
            if drop <= budget {
                ", within the budget"
            } else {
                ", OVER the budget (weight sharing, or a held-out split that did not predict the test set): try a smaller --max-accuracy-drop"
            }
        );
    }
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn render_label_free(r: &LabelFreeReport, out: &mut String) {
    let mut t = Table::new(&[
        "stage",
        "cal top-1",
        "cal top-5",
        "cal KL",
        "cal confident top-1",
        "holdout top-1",
        "holdout top-5",
        "holdout KL",
        "holdout confident top-1",
    ]);
    let confident = |a: &Agreement| format!("{} of {}", pct(a.confident_top1), a.confident_views);
    let reference = (
        "reference: dense, weights in binary16 (2×)".to_string(),
        r.reference.0,
        r.reference.1,
    );
    for (st, c, h) in r.stages.iter().chain([&reference]) {
        let (h1, h5, hk, hc) = match h {
            Some(h) => (
                pct(h.top1),
                pct(h.top5),
                format!("{:.4}", h.kl),
                confident(h),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        t.row(vec![
            st.clone(),
            pct(c.top1),
            pct(c.top5),
            format!("{:.4}", c.kl),
            confident(c),
            h1,
            h5,
            hk,
            hc,
        ]);
    }
    let (final_cal, final_hold) = r.decoded();
    out.push('\n');
    out.push_str(&t.render());
    let _ = writeln!(
        out,
        "agreement with the dense model: top-1 = the same class; top-5 = the dense model's class among the compressed model's first five; confident = views where the dense model gives its class ≥ {:.0}%; {} calibration views{}",
        CONFIDENT * 100.0,
        final_cal.views,
        final_hold
            .map(|h| format!(
                ", {} holdout views (photos never used for a decision)",
                h.views
            ))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "\ntop-1 agreement of the decoded file by the dense model's margin, on the {} views:",
        if r.has_holdout() {
            "holdout"
        } else {
            "calibration"
        }
    );
    out.push_str(&margin_table(&r.bands, &r.reference_bands).render());
    out.push_str(&reference_note(&r.reference.1.unwrap_or(r.reference.0)));
    if !r.skipped.is_empty() {
        let _ = writeln!(out, "skipped {} files:", r.skipped.len());
        for sk in r.skipped.iter().take(10) {
            let _ = writeln!(out, "  {}: {}", sk.path.display(), sk.reason);
        }
        if r.skipped.len() > 10 {
            let _ = writeln!(out, "  … and {} more", r.skipped.len() - 10);
        }
    }
}

/// The per-tensor table of the report: shape, kept fraction, bits, encoding, bytes.
pub fn layer_table(reports: &[LayerReport]) -> Table {
    let mut t = Table::new(&[
        "tensor", "shape", "kept", "bits", "gap bits", "encoding", "dense B", "stored B", "ratio",
    ]);
    for r in reports {
        t.row(vec![
            r.name.clone(),
            format!("{:?}", r.shape),
            format!("{:.1}%", r.density * 100.0),
            if r.bits > 0 {
                r.bits.to_string()
            } else if r.encoding == "raw-f16" {
                "16".into()
            } else {
                "32".into()
            },
            if r.gap_bits > 0 {
                r.gap_bits.to_string()
            } else {
                "-".into()
            },
            r.encoding.clone(),
            r.dense_bytes.to_string(),
            r.stored_bytes.to_string(),
            format!(
                "{:.1}×",
                r.dense_bytes as f64 / r.stored_bytes.max(1) as f64
            ),
        ]);
    }
    t
}

/// Per layer: KL divergence alone at each ladder step tried, and the step chosen.
fn bits_table(curves: &[BitsCurve], chosen: &BTreeMap<String, usize>) -> Table {
    let steps = curves.iter().map(|c| c.points.len()).max().unwrap_or(0);
    let labels: Vec<String> = (0..steps)
        .map(|i| {
            curves
                .iter()
                .find_map(|c| c.points.get(i))
                .map(|p| format!("KL@{}", p.quantizer.label()))
                .unwrap_or_default()
        })
        .collect();
    let mut head: Vec<&str> = vec!["tensor", "weights"];
    head.extend(labels.iter().map(|s| s.as_str()));
    head.extend(["chosen", "bits", "bytes"]);
    let mut t = Table::new(&head);
    for c in curves {
        let mut row = vec![c.name.clone(), c.elements.to_string()];
        for i in 0..steps {
            row.push(
                c.points
                    .get(i)
                    .map(|p| format!("{:.4}", p.agreement.kl))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        let pick = chosen.get(&c.name).and_then(|&i| c.points.get(i));
        row.push(pick.map(|p| p.quantizer.label()).unwrap_or_default());
        row.push(pick.map(|p| p.bits.to_string()).unwrap_or_default());
        row.push(pick.map(|p| p.bytes.to_string()).unwrap_or_default());
        t.row(row);
    }
    t
}

/// Top-1 agreement by the teacher's margin, next to the binary16 reference's.
pub fn margin_table(bands: &MarginBands, reference: &MarginBands) -> Table {
    let mut t = Table::new(&[
        "dense margin (top-1 − top-2)",
        "views",
        "top-1",
        "top-5",
        "binary16 reference top-1",
    ]);
    for (b, f) in bands.bands.iter().zip(&reference.bands) {
        t.row(vec![
            format!("{:.0}–{:.0} points", b.from * 100.0, b.to * 100.0),
            b.views.to_string(),
            format!("{:.2}% ({} of {})", b.top1() * 100.0, b.agree, b.views),
            format!("{} of {}", b.top5, b.views),
            format!("{:.2}% ({} of {})", f.top1() * 100.0, f.agree, f.views),
        ]);
    }
    t
}

/// What the binary16 reference is, with its figures.
pub fn reference_note(floor: &Agreement) -> String {
    format!(
        "binary16 reference: the dense model with every weight rounded to binary16 (the mildest \
         rounding a stored model can have, 2× smaller) agrees on {:.2}% of these views (top-5 \
         {:.2}%, KL {:.6}); views it gets wrong are closer to a tie than any compression keeps\n",
        floor.top1 * 100.0,
        floor.top5 * 100.0,
        floor.kl
    )
}

/// Three PNG histograms per shared tensor: dense weights, the weights kept by pruning (after
/// retraining, when there was any), and those with the final centroids marked.
pub fn write_histograms(
    dir: &Path,
    weights: &[Weight],
    records: &[TensorRecord],
    dense_values: &BTreeMap<String, Vec<f32>>,
    pruned_values: &BTreeMap<String, Vec<f32>>,
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the plot directory {}", dir.display()))?;
    for rec in records {
        let (codebook, indices, sparse) = match &rec.data {
            TensorData::SharedSparse {
                codebook, indices, ..
            }
            | TensorData::SharedSparseAc {
                codebook, indices, ..
            } => (codebook, indices, true),
            TensorData::SharedDense {
                codebook, indices, ..
            } => (codebook, indices, false),
            TensorData::RawF32(_) | TensorData::RawF16(_) => continue,
        };
        let stored: Vec<f32> = indices
            .iter()
            .map(|&i| codebook.get(i as usize).copied().unwrap_or(0.0))
            .collect();
        // Without retraining, the dense weights are the model's and pruning kept those the
        // encoded tensor keeps.
        let dense = match dense_values.get(&rec.name) {
            Some(v) => v.clone(),
            None => weights
                .iter()
                .find(|w| w.name == rec.name)
                .map(|w| w.values.clone())
                .unwrap_or_default(),
        };
        let kept: Vec<f32> = match pruned_values.get(&rec.name) {
            Some(v) => v.iter().copied().filter(|&x| x != 0.0).collect(),
            None => dense
                .iter()
                .zip(&stored)
                .filter(|(_, s)| **s != 0.0)
                .map(|(&d, _)| d)
                .collect(),
        };
        let centroids: Vec<f32> = codebook
            .iter()
            .enumerate()
            .filter(|&(i, _)| !(sparse && i == 0))
            .map(|(_, &c)| c)
            .collect();
        let file: String = rec
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let density = kept.len() as f64 / dense.len().max(1) as f64;
        crate::plot::histogram(
            &dir.join(format!("{file}-1-dense.png")),
            &format!("{}: {} weights before pruning", rec.name, dense.len()),
            &dense,
            120,
            &[],
        )?;
        crate::plot::histogram(
            &dir.join(format!("{file}-2-pruned.png")),
            &format!(
                "{}: {} weights kept ({:.1}%)",
                rec.name,
                kept.len(),
                density * 100.0
            ),
            &kept,
            120,
            &[],
        )?;
        crate::plot::histogram(
            &dir.join(format!("{file}-3-shared.png")),
            &format!(
                "{}: kept weights and the {} shared values",
                rec.name,
                centroids.len()
            ),
            &kept,
            120,
            &centroids,
        )?;
    }
    Ok(())
}
