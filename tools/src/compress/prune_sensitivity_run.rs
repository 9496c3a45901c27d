//! A pruning-sensitivity run of a model file (`nnzip sensitivity`): its settings, the entry that
//! measures ([`measure_file`]), and the result rendered as a table, as JSON and as a plot.

use super::pipeline::CompressConfig;
use super::prune_sensitivity::{DEFAULT_LADDER, SensitivityReport, check_ladder, sensitivity};
use super::retrain::prunable_tensors;
use crate::data::{DataOptions, Split};
use crate::onnx::GraphExecutor;
use crate::plot::{Series, line_chart};
use crate::table::Table;
use anyhow::{Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Images measured on when `--limit` is not given (each tensor and density is one pass over
/// them, so the whole training split would multiply the run's time by six).
const DEFAULT_IMAGES: usize = 10_000;

/// The settings of a sensitivity run; each field is also the flag of the same name.
#[derive(Debug, Clone, clap::Args)]
pub struct SensitivitySettings {
    /// Data options (`--limit` defaults to 10,000 images here).
    #[command(flatten)]
    pub data: DataOptions,
    /// Measure on the test split. The default, the training split, keeps the test set for the
    /// final measurement: densities picked on the test set would be tuned to it.
    #[arg(long)]
    pub test_split: bool,
    /// Densities to try (fraction kept), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub densities: Vec<f64>,
    /// Only tensors with at least this many weights (convolution and fully connected weights).
    #[arg(long, default_value_t = 256)]
    pub min_elements: usize,
    /// Write the curves as a PNG plot here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Suggest, per tensor, the lowest density losing at most this many percentage points (one
    /// shot, before retraining).
    #[arg(long, default_value_t = 1.0)]
    pub max_drop: f64,
}

/// What a sensitivity run measured and suggests.
#[derive(Debug, Clone)]
pub struct SensitivityRun {
    /// The model file.
    pub model: PathBuf,
    /// Where the images came from.
    pub data_source: String,
    /// The densities tried, in order.
    pub ladder: Vec<f64>,
    /// The curves.
    pub report: SensitivityReport,
    /// The budget of the suggestion, percentage points.
    pub max_drop_pp: f64,
    /// Per tensor, the lowest density within the budget.
    pub suggested: BTreeMap<String, f64>,
    /// Where the plot was written, if anywhere.
    pub plot: Option<PathBuf>,
}

/// Prunes each prunable tensor of `model` alone to each density of the ladder and measures the
/// accuracy on the data `s` names; writes the plot `s.plot` asks for.
pub fn measure_file(
    model: &Path,
    s: &SensitivitySettings,
    progress: bool,
) -> Result<SensitivityRun> {
    let ladder: Vec<f64> = if s.densities.is_empty() {
        DEFAULT_LADDER.to_vec()
    } else {
        s.densities.clone()
    };
    check_ladder(&ladder)?;
    if !(s.max_drop.is_finite() && s.max_drop >= 0.0) {
        bail!(
            "--max-drop must be a number of percentage points ≥ 0, got {}",
            s.max_drop
        );
    }
    let exec = GraphExecutor::open(model)?;
    let split = if s.test_split {
        Split::Test
    } else {
        Split::Train
    };
    let mut data_options = s.data.clone();
    data_options.limit = Some(data_options.limit.unwrap_or(DEFAULT_IMAGES));
    let data = data_options.load(split, exec.input_channels())?;
    crate::train::check_compatible(&exec, &data)?;
    let cfg = CompressConfig {
        min_shared_elements: s.min_elements,
        ..Default::default()
    };
    let tensors = prunable_tensors(&exec, &cfg);
    if tensors.is_empty() {
        bail!(
            "{}: no prunable tensor (convolution or fully connected weights with ≥ {} elements)",
            model.display(),
            s.min_elements
        );
    }
    let report = sensitivity(&exec, &tensors, &ladder, &data, progress)?;
    let run = SensitivityRun {
        model: model.to_path_buf(),
        data_source: data.source.clone(),
        suggested: report.densities_for_drop(s.max_drop / 100.0),
        ladder,
        report,
        max_drop_pp: s.max_drop,
        plot: s.plot.clone(),
    };
    if let Some(path) = &run.plot {
        run.write_plot(path)?;
    }
    Ok(run)
}

impl SensitivityRun {
    /// One JSON object: the model, the data, the curves, the budget and the suggestion.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "model": self.model,
            "data": self.data_source,
            "report": self.report,
            "max_drop_pp": self.max_drop_pp,
            "suggested_densities": self.suggested,
        })
        .to_string()
    }

    /// The accuracy table, one row per tensor and a column per density, then the suggested
    /// densities as flags of `nnzip compress`.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{}: accuracy {:.2}% on {} images of {}; each tensor pruned alone, no retraining\n\n",
            self.model.display(),
            self.report.baseline * 100.0,
            self.report.images,
            self.data_source
        );
        let mut header = vec!["tensor".to_string(), "weights".to_string()];
        header.extend(self.ladder.iter().map(|d| format!("{:.0}%", d * 100.0)));
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let mut t = Table::new(&header);
        for c in &self.report.curves {
            let mut row = vec![c.tensor.clone(), c.elements.to_string()];
            row.extend(
                c.points
                    .iter()
                    .map(|p| format!("{:.2}", p.accuracy * 100.0)),
            );
            t.row(row);
        }
        out += &t.render();
        out += &format!(
            "\nLowest density per tensor losing ≤ {} pp on its own (prune + retrain usually goes further):\n",
            self.max_drop_pp
        );
        let flags: Vec<String> = self
            .suggested
            .iter()
            .map(|(n, d)| format!("--density {n}={d}"))
            .collect();
        out += &format!("  {}\n", flags.join(" "));
        if let Some(path) = &self.plot {
            out += &format!("plot: {}\n", path.display());
        }
        out
    }

    /// The curves as a PNG line chart: accuracy against the percentage of weights kept.
    fn write_plot(&self, path: &Path) -> Result<()> {
        let series: Vec<Series> = self
            .report
            .curves
            .iter()
            .map(|c| Series {
                name: format!("{} ({} weights)", c.tensor, c.elements),
                points: c
                    .points
                    .iter()
                    .map(|p| (p.density * 100.0, p.accuracy * 100.0))
                    .collect(),
            })
            .collect();
        let title = format!(
            "Pruning sensitivity of {} (each tensor alone, no retraining)",
            self.model
                .file_name()
                .map(|s| s.to_string_lossy())
                .unwrap_or_default()
        );
        line_chart(
            path,
            &title,
            "weights kept (%)",
            "accuracy (%)",
            &series,
            true,
        )
    }
}
