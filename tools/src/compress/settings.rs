//! The one settings type of `nnzip compress`, both modes (labelled and label-free), read from a
//! preset's TOML file and overridden by flags; checked once, before any work starts.

use super::kmeans::KmeansInit;
use super::pipeline::{Coder, CompressConfig, PruneRule};
use super::retrain::{FineTuneScope, PruneSchedule, RetrainConfig};
use crate::train::OptimizerKind;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The settings of `nnzip compress`, of both modes: defaults, then a preset's TOML file, then the
/// flags given on the command line ([`super::settings_flags::SettingsFlags`]). Each field is both:
/// the TOML key is its name in kebab-case and the flag the same with `--` (one exception, said on
/// the field: `--keep-batch-norm` clears `fold-batch-norm`). The defaults of the flags' help are
/// [`Default`]'s, which clap's defaults read.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, clap::Args)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
#[group(skip)]
pub struct CompressSettings {
    /// Fraction kept of every prunable tensor not in `densities` (flag: `--density 0.1`).
    #[arg(skip)]
    pub density: Option<f64>,
    /// Fraction kept per tensor, by initializer name (flag: `--density fc1.weight=0.08`).
    #[arg(skip)]
    pub densities: BTreeMap<String, f64>,
    /// Prune with the paper's rule: |w| < quality × std(layer) is dropped (all layers).
    #[arg(long)]
    pub quality: Option<f64>,
    /// The paper's per-layer densities for `lenet300` or `lenet5`.
    #[arg(long)]
    pub paper_densities: Option<String>,
    /// Index bits of convolution weights [default: 8].
    #[arg(long, default_value_t = Self::default().bits_conv, hide_default_value = true)]
    pub bits_conv: u8,
    /// Index bits of fully connected weights [default: 5].
    #[arg(long, default_value_t = Self::default().bits_fc, hide_default_value = true)]
    pub bits_fc: u8,
    /// Width of the relative indices (gaps) of sparse layers: bits (1–16), or `auto` for the
    /// smallest payload per tensor [default: auto].
    #[arg(long, default_value_t = Self::default().gap_bits, hide_default_value = true)]
    pub gap_bits: GapBits,
    /// k-means initialisation: linear, density, random, kmeans++ or optimal [default: linear].
    #[arg(long, default_value_t = Self::default().init, hide_default_value = true)]
    pub init: String,
    /// Seed of shuffling and random initialisations [default: 0].
    #[arg(long, default_value_t = Self::default().seed, hide_default_value = true)]
    pub seed: u64,
    /// Labelled data (`fashion-mnist`, an IDX folder or an ImageFolder root): retrain on its
    /// training split and measure on its test split. Without it, compression is one shot.
    #[arg(long)]
    pub data: Option<String>,
    /// Image preprocessing preset for the metadata [default: none].
    #[arg(long, default_value_t = Self::default().preprocess, hide_default_value = true)]
    pub preprocess: String,
    /// Class labels file for the metadata.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Pruning rounds (with --data: each prunes further, then retrains) [default: 3].
    #[arg(long, default_value_t = Self::default().rounds, hide_default_value = true)]
    pub rounds: usize,
    /// Epochs of masked retraining after each pruning round (0: prune in one shot) [default: 2].
    #[arg(long, default_value_t = Self::default().retrain_epochs, hide_default_value = true)]
    pub retrain_epochs: usize,
    /// Learning rate of retraining [default: 0.005, a tenth of training's usual 0.05].
    #[arg(long, default_value_t = Self::default().retrain_lr, hide_default_value = true)]
    pub retrain_lr: f64,
    /// How densities fall over the rounds: iterative (the paper's) or gradual (AGP, cubic)
    /// [default: iterative].
    #[arg(long, value_enum, default_value_t = Self::default().schedule, hide_default_value = true)]
    pub schedule: PruneSchedule,
    /// Epochs of centroid fine-tuning after weight sharing (0: none) [default: 2].
    #[arg(long, default_value_t = Self::default().fine_tune_epochs, hide_default_value = true)]
    pub fine_tune_epochs: usize,
    /// Learning rate of centroid fine-tuning [default: 0.0005 with sgd; label-free runs
    /// (--calibration): 0.0001 with adam].
    // Unset, `CompressSettings::fine_tune_rule` chooses it.
    #[arg(long)]
    pub fine_tune_lr: Option<f64>,
    /// Update rule of centroid fine-tuning: sgd (the paper's: a centroid moves by the rate × the
    /// summed gradient of its cluster) or adam (every centroid moves by about the rate, whatever
    /// its cluster's size; no weight decay) [default: sgd; label-free runs: adam, because with
    /// sgd clusters of 10^5 weights take steps large enough to diverge].
    #[arg(long, value_enum)]
    pub fine_tune_optimizer: Option<OptimizerKind>,
    /// What fine-tuning trains: centroids (the paper's: each cluster moves as one, the
    /// assignment fixed) or weights (every weight, rounded to its layer's fixed codebook in the
    /// forward pass, so it can change cluster; the codebooks and index widths stay) [default:
    /// centroids].
    #[arg(long, value_enum, default_value_t = Self::default().fine_tune_scope, hide_default_value = true)]
    pub fine_tune_scope: FineTuneScope,
    /// Mini-batch size of retraining [default: 128].
    #[arg(long, default_value_t = Self::default().batch, hide_default_value = true)]
    pub batch: usize,
    /// Retrain on only the first N training images (quick runs).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Retrain by distillation: this weight (0–1) of the loss pulls the compressed model's outputs
    /// towards the dense model's (softened by --temperature); the rest is cross-entropy with the
    /// labels. 0 turns it off; 1 ignores the labels [default: 0].
    #[arg(long, default_value_t = Self::default().distill, hide_default_value = true)]
    pub distill: f64,
    /// Softening temperature of distillation [default: 4].
    #[arg(long, default_value_t = Self::default().temperature, hide_default_value = true)]
    pub temperature: f64,
    /// Store the tensors that stay raw (biases, BatchNorm parameters) as f16 instead of f32.
    #[arg(long)]
    pub raw_f16: bool,
    /// Keep BatchNormalization layers as they are; by default, after pruning and retraining (or
    /// first, without --data), each one that follows a convolution is folded into its weights
    /// and bias before weight sharing (one vector per layer stored instead of four; the runtime
    /// folds them anyway).
    // The TOML key says the opposite: `fold-batch-norm = false` is `--keep-batch-norm`. (Doc
    // comments here are the flags' help, which stays as it was.)
    #[arg(long = "keep-batch-norm", action = clap::ArgAction::SetFalse)]
    pub fold_batch_norm: bool,
    /// Entropy coders: auto (Huffman, or adaptive range coding where it is at least 10% smaller:
    /// it decodes about ten times slower), smallest (whichever is smaller per tensor) or huffman
    /// (version-1 files; range coding needs a version-3 reader) [default: auto].
    #[arg(long, value_enum, default_value_t = Self::default().coder, hide_default_value = true)]
    pub coder: Coder,
    /// Choose the per-layer densities automatically: prune as far as this accuracy loss allows
    /// (percentage points, on --budget-split; needs --data; replaces --density / --quality /
    /// --paper-densities).
    #[arg(long)]
    pub max_accuracy_drop: Option<f64>,
    /// Where --max-accuracy-drop is measured: validation (a fixed fifth of the test split, held
    /// apart from every reported figure) or holdout (1/12 of the training split, kept out of
    /// retraining; only meaningful if the model never trained on it) [default: validation].
    #[arg(long, value_enum, default_value_t = Self::default().budget_split, hide_default_value = true)]
    pub budget_split: BudgetSplit,
    /// Write PNG histograms of each compressed tensor here: its weights before pruning, after
    /// pruning (and retraining), and those again with the shared centroids marked.
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// Compress without labels: a folder of photos (any photos, searched recursively) on which
    /// the dense model is the teacher; bits per layer are chosen by agreement with it.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// With --calibration: photos never used for a decision, on which agreement is reported.
    #[arg(long)]
    pub holdout: Option<PathBuf>,
    /// With --calibration: views per photo (the photo itself plus random crops and mirror
    /// images) [default: 8].
    #[arg(long, default_value_t = Self::default().views, hide_default_value = true)]
    pub views: usize,
    /// With --calibration and GPTQ: views per calibration photo whose layer inputs are measured
    /// for error-compensated rounding (the first --views of them are the calibration views)
    /// [default: --views]. More views of the same photos are not more photos: expect little
    /// gain on new photos (docs/PERFORMANCE.md).
    #[arg(long)]
    pub statistics_views: Option<usize>,
    /// With --calibration and GPTQ: round the last N compensated layers again, in graph order,
    /// each against the dense model's outputs from the inputs the compressed model gives it
    /// (asymmetric calibration): a layer absorbs the error the layers before it left
    /// [default: 0]. It fits the calibration photos closely, so with few photos it can help
    /// them and hurt new ones (docs/PERFORMANCE.md); worth trying with many more photos.
    #[arg(long, default_value_t = Self::default().asymmetric_layers, hide_default_value = true)]
    pub asymmetric_layers: usize,
    /// With --calibration: the smallest top-1 agreement with the dense model on the calibration
    /// views, in percent [default: 99.5].
    #[arg(long, default_value_t = Self::default().min_agreement, hide_default_value = true)]
    pub min_agreement: f64,
    /// With --calibration: read the per-layer sensitivity from this JSON file if it exists (it
    /// must match the model's tensors and the ladder), else measure it and write it there; lets
    /// allocation and fine-tuning be re-run without measuring again.
    #[arg(long)]
    pub sensitivity_cache: Option<PathBuf>,
    /// With --calibration and GPTQ: a folder where the input statistics of error-compensated
    /// rounding are kept, one file per model, views and layers (read back when they match, so
    /// runs at other --target-ratio skip measuring them again; tens of MB for a phone model).
    #[arg(long)]
    pub statistics_cache: Option<PathBuf>,
    /// With --calibration: make the file this many times smaller than the ONNX file, with the
    /// best agreement that size allows (instead of the smallest file that reaches
    /// --min-agreement).
    #[arg(long)]
    pub target_ratio: Option<f64>,
    /// With --calibration: how layers are shared: uniform (a grid, entropy-coded; smaller at the
    /// same error) or kmeans (the paper's, exact 1-D) [default: uniform].
    #[arg(long, value_enum, default_value_t = Self::default().quantizer, hide_default_value = true)]
    pub quantizer: QuantizerKind,
    /// With --calibration and --quantizer kmeans: bit widths tried per layer, most first
    /// [default: 8,6,5,4,3].
    #[arg(long, value_delimiter = ',', default_values_t = Self::default().bits_ladder, hide_default_value = true)]
    pub bits_ladder: Vec<u8>,
    /// With --calibration and --quantizer uniform: grid steps tried per layer, in standard
    /// deviations of the layer, finest first, after 8-bit k-means (which keeps layers whose
    /// channels differ in scale) [default: 0.04,0.08,0.15,0.3,0.6,0.9,1.3].
    #[arg(long, value_delimiter = ',', default_values_t = Self::default().grid_steps, hide_default_value = true)]
    pub grid_steps: Vec<f64>,
    /// With --calibration: divide each output channel (row) of a layer by its largest magnitude
    /// before sharing and store one binary16 scale per channel (format version 4). BatchNorm
    /// folded into convolutions leaves channels whose ranges differ by orders of magnitude, which
    /// one codebook per layer serves badly [default: true].
    #[arg(long, action = clap::ArgAction::Set, default_value_t = Self::default().row_scales, hide_default_value = true)]
    pub row_scales: bool,
    /// With --calibration and --quantizer uniform: round convolutions and fully connected
    /// layers with error compensation (GPTQ): each weight's rounding error is spread over the
    /// inputs not yet rounded, weighted by how those inputs vary together on the calibration
    /// photos, so that the layer's outputs move least [default: true].
    #[arg(long, action = clap::ArgAction::Set, default_value_t = Self::default().gptq, hide_default_value = true)]
    pub gptq: bool,
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

impl std::str::FromStr for GapBits {
    type Err = String;

    /// `auto` or a number of bits, as `--gap-bits` takes it (the range is checked with the rest,
    /// in [`CompressSettings::encoding`]).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(GapBits::Auto(AutoWord::Auto)),
            b => b
                .parse::<u8>()
                .map(GapBits::Bits)
                .map_err(|_| "expected a width from 1 to 16, or auto".to_string()),
        }
    }
}

impl std::fmt::Display for GapBits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GapBits::Bits(b) => write!(f, "{b}"),
            GapBits::Auto(_) => f.write_str("auto"),
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
            fine_tune_scope: FineTuneScope::Centroids,
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
