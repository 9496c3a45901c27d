//! The one settings type of `nnzip compress`, both modes (labelled and label-free), read from a
//! preset's TOML file and overridden by flags; checked once, before any work starts.

use super::kmeans::KmeansInit;
use super::pipeline::{Coder, CompressConfig, PruneRule};
use super::retrain::{PruneSchedule, RetrainConfig};
use crate::train::OptimizerKind;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The settings of `nnzip compress`, of both modes: defaults, then a preset's TOML file, then the
/// flags given on the command line. The file's keys are these names in kebab-case.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CompressSettings {
    /// Fraction kept of every prunable tensor not in `densities`.
    pub density: Option<f64>,
    /// Fraction kept per tensor, by initializer name.
    pub densities: BTreeMap<String, f64>,
    /// The paper's threshold rule `quality × std` for every tensor not in `densities`.
    pub quality: Option<f64>,
    /// The paper's densities for `lenet300` or `lenet5`.
    pub paper_densities: Option<String>,
    /// Index bits of convolution weights.
    pub bits_conv: u8,
    /// Index bits of fully connected weights.
    pub bits_fc: u8,
    /// Gap width in bits, or `auto`.
    pub gap_bits: GapBits,
    /// k-means initialisation.
    pub init: String,
    /// Seed.
    pub seed: u64,
    /// Labelled data for retraining and measuring.
    pub data: Option<String>,
    /// Preprocessing preset for the metadata.
    pub preprocess: String,
    /// Labels file for the metadata.
    pub labels: Option<PathBuf>,
    /// Pruning rounds.
    pub rounds: usize,
    /// Retraining epochs per round.
    pub retrain_epochs: usize,
    /// Retraining learning rate.
    pub retrain_lr: f64,
    /// Density schedule over the rounds.
    pub schedule: PruneSchedule,
    /// Centroid fine-tuning epochs.
    pub fine_tune_epochs: usize,
    /// Centroid fine-tuning learning rate; unset: see [`CompressSettings::fine_tune_rule`].
    pub fine_tune_lr: Option<f64>,
    /// Centroid fine-tuning update rule; unset: see [`CompressSettings::fine_tune_rule`].
    pub fine_tune_optimizer: Option<OptimizerKind>,
    /// Mini-batch size.
    pub batch: usize,
    /// Retrain on the first N training images only.
    pub train_limit: Option<usize>,
    /// Weight of distillation in the retraining loss.
    pub distill: f64,
    /// Distillation temperature.
    pub temperature: f64,
    /// Raw tensors as f16.
    pub raw_f16: bool,
    /// Fold BatchNormalization into the convolutions before weight sharing.
    pub fold_batch_norm: bool,
    /// Entropy coders to choose from.
    pub coder: Coder,
    /// Accuracy budget in percentage points: densities are chosen to fit it.
    pub max_accuracy_drop: Option<f64>,
    /// Where the budget is measured.
    pub budget_split: BudgetSplit,
    /// Unlabelled photos to compress against the dense model.
    pub calibration: Option<PathBuf>,
    /// Unlabelled photos to report agreement on.
    pub holdout: Option<PathBuf>,
    /// Views per photo.
    pub views: usize,
    /// Views per calibration photo for GPTQ's input statistics (none: `views`).
    pub statistics_views: Option<usize>,
    /// Compensated layers nearest the output rounded again against the dense outputs.
    pub asymmetric_layers: usize,
    /// Smallest top-1 agreement on the calibration views, percent.
    pub min_agreement: f64,
    /// Bit widths tried per layer.
    pub bits_ladder: Vec<u8>,
    /// Size goal: times smaller than the ONNX file.
    pub target_ratio: Option<f64>,
    /// Where the label-free sensitivity is kept between runs.
    pub sensitivity_cache: Option<PathBuf>,
    /// Folder where the GPTQ input statistics are kept between runs.
    pub statistics_cache: Option<PathBuf>,
    /// How layers are shared in label-free compression.
    pub quantizer: QuantizerKind,
    /// Grid steps tried per layer (uniform quantizer), in standard deviations.
    pub grid_steps: Vec<f64>,
    /// Label-free compression normalises each row (output channel) before sharing and stores
    /// the scales.
    pub row_scales: bool,
    /// Label-free compression rounds with error compensation (GPTQ) where it can.
    pub gptq: bool,
    /// Where the labelled pipeline writes weight histograms (PNG), if anywhere.
    pub plots: Option<PathBuf>,
}

/// The quantizer of label-free compression.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum QuantizerKind {
    /// A uniform grid per layer, entropy-coded.
    Uniform,
    /// Exact 1-D k-means per layer (the paper's weight sharing).
    Kmeans,
}

/// The images on which `--max-accuracy-drop` is measured.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BudgetSplit {
    /// A fixed fifth of the test split, held apart from the images the accuracy is reported
    /// on (`compress::validation`). The choice when the model was trained on every training
    /// image. `test`, its earlier name, is still read.
    #[value(alias = "test")]
    #[serde(alias = "test")]
    Validation,
    /// 1/12 of the training split, held out of retraining: unbiased, but only if the model
    /// never trained on those images.
    Holdout,
}

/// A gap width: `auto` (in a config file, the string) or a number of bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum GapBits {
    /// A fixed width.
    Bits(u8),
    /// `"auto"`: the smallest payload per tensor.
    Auto(AutoWord),
}

/// The word `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoWord {
    /// `auto`.
    Auto,
}

impl GapBits {
    /// `auto` or a number of bits, as `--gap-bits` takes it.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(GapBits::Auto(AutoWord::Auto)),
            b => match b.parse::<u8>() {
                Ok(v) => Ok(GapBits::Bits(v)),
                _ => bail!("--gap-bits {b}: expected a width from 1 to 16, or auto"),
            },
        }
    }
}

impl Default for CompressSettings {
    fn default() -> Self {
        CompressSettings {
            density: None,
            densities: BTreeMap::new(),
            quality: None,
            paper_densities: None,
            bits_conv: 8,
            bits_fc: 5,
            gap_bits: GapBits::Auto(AutoWord::Auto),
            init: "linear".into(),
            seed: 0,
            data: None,
            preprocess: "none".into(),
            labels: None,
            rounds: 3,
            retrain_epochs: 2,
            retrain_lr: 0.005,
            schedule: PruneSchedule::Iterative,
            fine_tune_epochs: 2,
            fine_tune_lr: None,
            fine_tune_optimizer: None,
            batch: 128,
            train_limit: None,
            distill: 0.0,
            temperature: 4.0,
            raw_f16: false,
            fold_batch_norm: true,
            coder: Coder::Auto,
            max_accuracy_drop: None,
            budget_split: BudgetSplit::Validation,
            calibration: None,
            holdout: None,
            views: 8,
            statistics_views: None,
            asymmetric_layers: 0,
            min_agreement: 99.5,
            bits_ladder: vec![8, 6, 5, 4, 3],
            target_ratio: None,
            sensitivity_cache: None,
            statistics_cache: None,
            quantizer: QuantizerKind::Uniform,
            // 0.9 and 1.3: the coarse end, for files of 12× and more (EfficientNet-Lite0's smallest
            // file stopped at ~10.5× with 0.6).
            grid_steps: vec![0.04, 0.08, 0.15, 0.3, 0.6, 0.9, 1.3],
            row_scales: true,
            gptq: true,
            plots: None,
        }
    }
}

impl CompressSettings {
    /// Centroid fine-tuning's update rule and learning rate: as set, else the retraining
    /// defaults (the paper's SGD at 5e-4) with labelled data, and Adam at 1e-4 without labels
    /// (`--calibration`: the models brought without labels are large, and SGD moves a centroid
    /// by the sum of its cluster's gradients, which diverges on layers of 10^5 weights; Adam moves
    /// every centroid by about the rate; docs/PERFORMANCE.md has the runs).
    pub fn fine_tune_rule(&self) -> (OptimizerKind, f64) {
        let (rule, lr) = if self.calibration.is_some() {
            (OptimizerKind::Adam, 1e-4)
        } else {
            let d = RetrainConfig::default();
            (d.fine_tune_optimizer, d.fine_tune_lr)
        };
        (
            self.fine_tune_optimizer.unwrap_or(rule),
            self.fine_tune_lr.unwrap_or(lr),
        )
    }

    /// Reads a TOML config file; unknown keys and wrong types are errors naming the file.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {}the keys are the long flags of `nnzip compress` without `--` (e.g. bits-fc = 4), per-tensor densities in a [densities] table",
                path.display(),
                e
            )
        })
    }

    /// Refuses settings that contradict each other or are out of range, naming the setting.
    pub fn validate(&self) -> Result<()> {
        if !(self.distill.is_finite() && (0.0..=1.0).contains(&self.distill)) {
            bail!("distill must be a weight in [0, 1], got {}", self.distill);
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            bail!("temperature must be > 0, got {}", self.temperature);
        }
        for (what, lr) in [
            ("retrain-lr", self.retrain_lr),
            ("fine-tune-lr", self.fine_tune_rule().1),
        ] {
            if !(lr.is_finite() && lr >= 0.0) {
                bail!("{what} must be a learning rate ≥ 0, got {lr}");
            }
        }
        if self.batch == 0 {
            bail!("batch must be at least 1");
        }
        if self.calibration.is_some() && self.data.is_some() {
            bail!("give either --data (labelled) or --calibration (unlabelled photos), not both");
        }
        if self.holdout.is_some() && self.calibration.is_none() {
            bail!("holdout photos only make sense with --calibration");
        }
        if !(self.min_agreement.is_finite() && (0.0..=100.0).contains(&self.min_agreement)) {
            bail!(
                "min-agreement must be a percentage from 0 to 100, got {}",
                self.min_agreement
            );
        }
        if let Some(r) = self.target_ratio {
            if !(r.is_finite() && r >= 1.0) {
                bail!("target-ratio must be a number ≥ 1, got {r}");
            }
            if self.calibration.is_none() {
                bail!("target-ratio works with --calibration");
            }
        }
        if self.views == 0 || self.statistics_views == Some(0) {
            bail!("views must be at least 1");
        }
        if self.grid_steps.is_empty()
            || self
                .grid_steps
                .iter()
                .any(|g| !(g.is_finite() && *g > 0.001 && *g <= 10.0))
        {
            bail!(
                "grid-steps must list steps from 0.001 to 10 standard deviations, got {:?}",
                self.grid_steps
            );
        }
        if self.bits_ladder.is_empty() || self.bits_ladder.iter().any(|b| !(2..=12).contains(b)) {
            bail!(
                "bits-ladder must list bit widths from 2 to 12, got {:?}",
                self.bits_ladder
            );
        }
        if self.train_limit == Some(0) {
            bail!(
                "train-limit 0 leaves no training image: give at least 1, or leave it out to train on all"
            );
        }
        if let Some(b) = self.max_accuracy_drop {
            if !(b.is_finite() && b >= 0.0) {
                bail!("max-accuracy-drop must be a number of percentage points ≥ 0, got {b}");
            }
            if self.density.is_some()
                || !self.densities.is_empty()
                || self.quality.is_some()
                || self.paper_densities.is_some()
            {
                bail!(
                    "max-accuracy-drop chooses the densities itself: drop density / densities / quality / paper-densities, or drop max-accuracy-drop"
                );
            }
            if self.data.is_none() || self.retrain_epochs == 0 {
                bail!(
                    "max-accuracy-drop needs labelled data and retraining: add --data (e.g. fashion-mnist) and --retrain-epochs ≥ 1"
                );
            }
        }
        Ok(())
    }

    /// The encoding stage's configuration: pruning rules, bit widths, gap width, coders.
    pub fn encoding(&self) -> Result<CompressConfig> {
        let s = self;
        let mut cfg = CompressConfig {
            bits_conv: s.bits_conv,
            bits_fc: s.bits_fc,
            gap_bits: match s.gap_bits {
                GapBits::Auto(_) => 0,
                GapBits::Bits(v) if (1..=16).contains(&v) => v,
                GapBits::Bits(v) => bail!("gap-bits {v}: expected a width from 1 to 16, or auto"),
            },
            init: s.init.parse::<KmeansInit>()?,
            seed: s.seed,
            raw_f16: s.raw_f16,
            coder: s.coder,
            ..Default::default()
        };
        if let Some(q) = s.quality {
            cfg.default_rule = PruneRule::Quality(q);
        }
        if let Some(d) = s.density {
            cfg.default_rule = PruneRule::Density(d);
        }
        if let Some(m) = &s.paper_densities {
            cfg.per_layer = CompressConfig::paper_densities(m)?;
        }
        for (name, &d) in &s.densities {
            cfg.per_layer.insert(name.clone(), PruneRule::Density(d));
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fine_tuning_defaults_to_sgd_with_labels_and_adam_without() {
        let mut s = CompressSettings::default();
        assert_eq!(s.fine_tune_rule(), (OptimizerKind::Sgd, 5e-4));
        s.calibration = Some("photos".into());
        assert_eq!(s.fine_tune_rule(), (OptimizerKind::Adam, 1e-4));
        // Either half can be set on its own.
        s.fine_tune_lr = Some(2e-4);
        assert_eq!(s.fine_tune_rule(), (OptimizerKind::Adam, 2e-4));
        s.fine_tune_optimizer = Some(OptimizerKind::Sgd);
        assert_eq!(s.fine_tune_rule(), (OptimizerKind::Sgd, 2e-4));
        let from_toml: CompressSettings = toml::from_str("fine-tune-optimizer = \"adam\"").unwrap();
        assert_eq!(from_toml.fine_tune_rule(), (OptimizerKind::Adam, 5e-4));
    }

    /// Every preset shipped in tools/presets/ reads (no unknown key, right types) and gives a
    /// valid configuration.
    #[test]
    fn every_preset_reads_and_validates() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("presets");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let s = CompressSettings::from_file(&path)
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                s.encoding()
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 4, "presets found: {n}");
        let p = CompressSettings::from_file(&dir.join("lenet5-100x.toml")).unwrap();
        assert_eq!(p.schedule, PruneSchedule::Gradual);
    }
}
