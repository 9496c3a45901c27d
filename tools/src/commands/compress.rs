//! `nnzip compress MODEL.onnx -o MODEL.nnz`: prune, share weights, Huffman-code (one shot).

use crate::compress::keep_best::{Checkpoint, keep_better, refuse_chance_level};
use crate::compress::kmeans::KmeansInit;
use crate::compress::pipeline::{
    Coder, CompressConfig, LayerReport, PruneRule, compress_weights_with,
};
use crate::compress::retrain::{BudgetStep, prunable_tensors, prune_to_budget};
use crate::compress::retrain::{
    PruneSchedule, RetrainConfig, fine_tune_layers, prune_and_retrain, share_layers,
    target_densities,
};
use crate::compress::sensitivity::{DEFAULT_LADDER, sensitivity};
use crate::compress::share::SharedLayer;
use crate::compress::validation::DecisionSplit;
use crate::data::{self, ImageTransform, Split};
use crate::eval::evaluate;
use crate::fsutil;
use crate::onnx::GraphExecutor;
use crate::onnx::fold::fold_batch_norms;
use crate::pack::{PackOptions, pack_onnx, preset, read_labels, take_raw_weights};
use crate::table::{Table, human_bytes};
use crate::train::{Distillation, OptimizerKind};
use anyhow::{Context, Result, bail};
use clap::Args;
use prost::Message;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Arguments of `nnzip compress`. Every setting can also come from `--config FILE.toml` (the
/// same names, e.g. `bits-fc = 4`, per-tensor densities in a `[densities]` table); a flag given on
/// the command line wins over the file, and the file over the defaults shown here.
#[derive(Debug, Args)]
pub struct CompressArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Output `.nnz` file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Replace the output even when it is the input model itself.
    #[arg(long)]
    pub force: bool,
    /// Settings from a TOML file (see tools/presets/ for examples); unknown keys are errors.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Keep this fraction of each layer (`0.1`), or of one layer (`fc1.weight=0.08`); repeatable.
    #[arg(long)]
    pub density: Vec<String>,
    /// Prune with the paper's rule: |w| < quality × std(layer) is dropped (all layers).
    #[arg(long)]
    pub quality: Option<f64>,
    /// The paper's per-layer densities for `lenet300` or `lenet5`.
    #[arg(long)]
    pub paper_densities: Option<String>,
    /// Index bits of convolution weights [default: 8].
    #[arg(long)]
    pub bits_conv: Option<u8>,
    /// Index bits of fully connected weights [default: 5].
    #[arg(long)]
    pub bits_fc: Option<u8>,
    /// Width of the relative indices (gaps) of sparse layers: bits (1–16), or `auto` for the
    /// smallest payload per tensor [default: auto].
    #[arg(long)]
    pub gap_bits: Option<String>,
    /// k-means initialisation: linear, density, random, kmeans++ or optimal [default: linear].
    #[arg(long)]
    pub init: Option<String>,
    /// Seed of shuffling and random initialisations [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Labelled data (`fashion-mnist`, an IDX folder or an ImageFolder root): retrain on its
    /// training split and measure on its test split. Without it, compression is one shot.
    #[arg(long)]
    pub data: Option<String>,
    /// Image preprocessing preset for the metadata [default: none].
    #[arg(long)]
    pub preprocess: Option<String>,
    /// Class labels file for the metadata.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Pruning rounds (with --data: each prunes further, then retrains) [default: 3].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Epochs of masked retraining after each pruning round (0: prune in one shot) [default: 2].
    #[arg(long)]
    pub retrain_epochs: Option<usize>,
    /// Learning rate of retraining [default: 0.005, a tenth of training's usual 0.05].
    #[arg(long)]
    pub retrain_lr: Option<f64>,
    /// How densities fall over the rounds: iterative (the paper's) or gradual (AGP, cubic)
    /// [default: iterative].
    #[arg(long, value_enum)]
    pub schedule: Option<PruneSchedule>,
    /// Epochs of centroid fine-tuning after weight sharing (0: none) [default: 2].
    #[arg(long)]
    pub fine_tune_epochs: Option<usize>,
    /// Learning rate of centroid fine-tuning [default: 0.0005 with sgd; label-free runs
    /// (--calibration): 0.0001 with adam].
    #[arg(long)]
    pub fine_tune_lr: Option<f64>,
    /// Update rule of centroid fine-tuning: sgd (the paper's: a centroid moves by the rate × the
    /// summed gradient of its cluster) or adam (every centroid moves by about the rate, whatever
    /// its cluster's size; no weight decay) [default: sgd; label-free runs: adam, because with
    /// sgd clusters of 10^5 weights take huge steps: EfficientNet-Lite0 diverged at 3e-4].
    #[arg(long, value_enum)]
    pub fine_tune_optimizer: Option<OptimizerKind>,
    /// Mini-batch size of retraining [default: 128].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Retrain on only the first N training images (quick runs).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Retrain by distillation: this weight (0–1) of the loss pulls the compressed model's outputs
    /// towards the dense model's (softened by --temperature); the rest is cross-entropy with the
    /// labels. 0 turns it off; 1 ignores the labels [default: 0].
    #[arg(long)]
    pub distill: Option<f64>,
    /// Softening temperature of distillation [default: 4].
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Store the tensors that stay raw (biases, BatchNorm parameters) as f16 instead of f32.
    #[arg(long)]
    pub raw_f16: bool,
    /// Keep BatchNormalization layers as they are; by default, after pruning and retraining (or
    /// first, without --data), each one that follows a convolution is folded into its weights
    /// and bias before weight sharing (one vector per layer stored instead of four; the runtime
    /// folds them anyway).
    #[arg(long)]
    pub keep_batch_norm: bool,
    /// Entropy coders: auto (Huffman, or adaptive range coding where it is at least 10% smaller:
    /// it decodes about ten times slower), smallest (whichever is smaller per tensor) or huffman
    /// (version-1 files; range coding needs a version-3 reader) [default: auto].
    #[arg(long, value_enum)]
    pub coder: Option<Coder>,
    /// Choose the per-layer densities automatically: prune as far as this accuracy loss allows
    /// (percentage points, on --budget-split; needs --data; replaces --density / --quality /
    /// --paper-densities).
    #[arg(long)]
    pub max_accuracy_drop: Option<f64>,
    /// Where --max-accuracy-drop is measured: validation (a fixed fifth of the test split, held
    /// apart from every reported figure) or holdout (1/12 of the training split, kept out of
    /// retraining; only meaningful if the model never trained on it) [default: validation].
    #[arg(long, value_enum)]
    pub budget_split: Option<BudgetSplit>,
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
    #[arg(long)]
    pub views: Option<usize>,
    /// With --calibration and GPTQ: views per calibration photo whose layer inputs are measured
    /// for error-compensated rounding (the first --views of them are the calibration views)
    /// [default: --views]. Measured on EfficientNet-Lite0 with 60 photos, 32 instead of 8: no
    /// better on new photos (more views of the same photos are not more photos).
    #[arg(long)]
    pub statistics_views: Option<usize>,
    /// With --calibration and GPTQ: round the last N compensated layers again, in graph order,
    /// each against the dense model's outputs from the inputs the compressed model gives it
    /// (asymmetric calibration): a layer absorbs the error the layers before it left
    /// [default: 0]. It fits the calibration photos closely: on EfficientNet-Lite0 with 60
    /// photos, the last 12 layers cut the calibration KL 6× and raised it on new photos
    /// (0.034 → 0.037); worth trying with many more photos.
    #[arg(long)]
    pub asymmetric_layers: Option<usize>,
    /// With --calibration: the smallest top-1 agreement with the dense model on the calibration
    /// views, in percent [default: 99.5].
    #[arg(long)]
    pub min_agreement: Option<f64>,
    /// With --calibration: read the per-layer sensitivity from this JSON file if it exists (it
    /// must match the model's tensors and the ladder), else measure it and write it there; lets
    /// allocation and fine-tuning be re-run without measuring again.
    #[arg(long)]
    pub sensitivity_cache: Option<PathBuf>,
    /// With --calibration: make the file this many times smaller than the ONNX file, with the
    /// best agreement that size allows (instead of the smallest file that reaches
    /// --min-agreement).
    #[arg(long)]
    pub target_ratio: Option<f64>,
    /// With --calibration: how layers are shared: uniform (a grid, entropy-coded; smaller at the
    /// same error) or kmeans (the paper's, exact 1-D) [default: uniform].
    #[arg(long, value_enum)]
    pub quantizer: Option<QuantizerKind>,
    /// With --calibration and --quantizer kmeans: bit widths tried per layer, most first
    /// [default: 8,6,5,4,3].
    #[arg(long, value_delimiter = ',')]
    pub bits_ladder: Option<Vec<u8>>,
    /// With --calibration and --quantizer uniform: grid steps tried per layer, in standard
    /// deviations of the layer, finest first, after 8-bit k-means (which keeps layers whose
    /// channels differ in scale) [default: 0.04,0.08,0.15,0.3,0.6].
    #[arg(long, value_delimiter = ',')]
    pub grid_steps: Option<Vec<f64>>,
    /// With --calibration: divide each output channel (row) of a layer by its largest magnitude
    /// before sharing and store one binary16 scale per channel (format version 4). BatchNorm
    /// folded into convolutions leaves channels whose ranges differ by orders of magnitude, which
    /// one codebook per layer serves badly [default: true].
    #[arg(long)]
    pub row_scales: Option<bool>,
    /// With --calibration and --quantizer uniform: round convolutions and fully connected
    /// layers with error compensation (GPTQ): each weight's rounding error is spread over the
    /// inputs not yet rounded, weighted by how those inputs vary together on the calibration
    /// photos, so that the layer's outputs move least [default: true].
    #[arg(long)]
    pub gptq: Option<bool>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `nnzip compress`'s settings after defaults, the config file and the command line are merged.
/// Deserialised from the config file, whose keys are these names in kebab-case.
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
    /// How layers are shared in label-free compression.
    pub quantizer: QuantizerKind,
    /// Grid steps tried per layer (uniform quantizer), in standard deviations.
    pub grid_steps: Vec<f64>,
    /// Label-free compression normalises each row (output channel) before sharing and stores
    /// the scales.
    pub row_scales: bool,
    /// Label-free compression rounds with error compensation (GPTQ) where it can.
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

impl GapBits {
    fn parse(s: &str) -> Result<Self> {
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
            quantizer: QuantizerKind::Uniform,
            grid_steps: vec![0.04, 0.08, 0.15, 0.3, 0.6],
            row_scales: true,
            gptq: true,
        }
    }
}

impl CompressSettings {
    /// Centroid fine-tuning's update rule and learning rate: as set, else the retraining
    /// defaults (the paper's SGD at 5e-4) with labelled data, and Adam at 1e-4 without labels
    /// (`--calibration`: the models brought without labels are large, and SGD moves a centroid
    /// by the sum of its cluster's gradients — EfficientNet-Lite0 diverged at 3e-4; Adam at
    /// 1e-4, 4 epochs, measured 72.4% top-1 / 97.8% top-5 holdout agreement at 8.15×).
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

    /// Defaults, then `args.config`, then the flags given on the command line.
    pub fn resolve(args: &CompressArgs) -> Result<Self> {
        let mut s = match &args.config {
            Some(p) => Self::from_file(p)?,
            None => Self::default(),
        };
        macro_rules! take {
            ($($field:ident),*) => {$(
                if let Some(v) = &args.$field {
                    s.$field = v.clone().into();
                }
            )*};
        }
        take!(
            quality,
            bits_conv,
            bits_fc,
            init,
            seed,
            preprocess,
            rounds,
            retrain_epochs
        );
        take!(
            views,
            asymmetric_layers,
            min_agreement,
            bits_ladder,
            quantizer,
            grid_steps,
            row_scales,
            gptq
        );
        // Settings that are optional themselves: the flag, when given, replaces the file's.
        macro_rules! take_some {
            ($($field:ident),*) => {$(
                if args.$field.is_some() {
                    s.$field = args.$field.clone();
                }
            )*};
        }
        take_some!(
            calibration,
            holdout,
            target_ratio,
            sensitivity_cache,
            paper_densities,
            statistics_views
        );
        take_some!(data, labels, train_limit, max_accuracy_drop);
        take_some!(fine_tune_lr, fine_tune_optimizer);
        take!(
            retrain_lr,
            schedule,
            fine_tune_epochs,
            batch,
            distill,
            temperature,
            coder
        );
        if let Some(g) = &args.gap_bits {
            s.gap_bits = GapBits::parse(g)?;
        }
        if args.raw_f16 {
            s.raw_f16 = true;
        }
        if args.keep_batch_norm {
            s.fold_batch_norm = false;
        }
        if let Some(b) = args.budget_split {
            s.budget_split = b;
        }
        for d in &args.density {
            let parse = |v: &str| {
                v.trim()
                    .parse::<f64>()
                    .with_context(|| format!("--density {d}: '{v}' is not a number"))
            };
            match d.split_once('=') {
                Some((name, v)) => {
                    s.densities.insert(name.trim().to_string(), parse(v)?);
                }
                None => s.density = Some(parse(d)?),
            }
        }
        if !(s.distill.is_finite() && (0.0..=1.0).contains(&s.distill)) {
            bail!("distill must be a weight in [0, 1], got {}", s.distill);
        }
        if !(s.temperature.is_finite() && s.temperature > 0.0) {
            bail!("temperature must be > 0, got {}", s.temperature);
        }
        for (what, lr) in [
            ("retrain-lr", s.retrain_lr),
            ("fine-tune-lr", s.fine_tune_rule().1),
        ] {
            if !(lr.is_finite() && lr >= 0.0) {
                bail!("{what} must be a learning rate ≥ 0, got {lr}");
            }
        }
        if s.batch == 0 {
            bail!("batch must be at least 1");
        }
        if s.calibration.is_some() && s.data.is_some() {
            bail!("give either --data (labelled) or --calibration (unlabelled photos), not both");
        }
        if s.holdout.is_some() && s.calibration.is_none() {
            bail!("holdout photos only make sense with --calibration");
        }
        if !(s.min_agreement.is_finite() && (0.0..=100.0).contains(&s.min_agreement)) {
            bail!(
                "min-agreement must be a percentage from 0 to 100, got {}",
                s.min_agreement
            );
        }
        if let Some(r) = s.target_ratio {
            if !(r.is_finite() && r >= 1.0) {
                bail!("target-ratio must be a number ≥ 1, got {r}");
            }
            if s.calibration.is_none() {
                bail!("target-ratio works with --calibration");
            }
        }
        if s.views == 0 || s.statistics_views == Some(0) {
            bail!("views must be at least 1");
        }
        if s.grid_steps.is_empty()
            || s.grid_steps
                .iter()
                .any(|g| !(g.is_finite() && *g > 0.001 && *g <= 10.0))
        {
            bail!(
                "grid-steps must list steps from 0.001 to 10 standard deviations, got {:?}",
                s.grid_steps
            );
        }
        if s.bits_ladder.is_empty() || s.bits_ladder.iter().any(|b| !(2..=12).contains(b)) {
            bail!(
                "bits-ladder must list bit widths from 2 to 12, got {:?}",
                s.bits_ladder
            );
        }
        if s.train_limit == Some(0) {
            bail!(
                "train-limit 0 leaves no training image: give at least 1, or leave it out to train on all"
            );
        }
        if let Some(b) = s.max_accuracy_drop {
            if !(b.is_finite() && b >= 0.0) {
                bail!("max-accuracy-drop must be a number of percentage points ≥ 0, got {b}");
            }
            if s.density.is_some()
                || !s.densities.is_empty()
                || s.quality.is_some()
                || s.paper_densities.is_some()
            {
                bail!(
                    "max-accuracy-drop chooses the densities itself: drop density / densities / quality / paper-densities, or drop max-accuracy-drop"
                );
            }
            if s.data.is_none() || s.retrain_epochs == 0 {
                bail!(
                    "max-accuracy-drop needs labelled data and retraining: add --data (e.g. fashion-mnist) and --retrain-epochs ≥ 1"
                );
            }
        }
        Ok(s)
    }
}

fn config(s: &CompressSettings) -> Result<CompressConfig> {
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

/// Share of the training images held out to measure the accuracy budget.
const VALIDATION_FRACTION: f64 = 1.0 / 12.0;
/// Share of the accuracy budget that pruning may spend; weight sharing gets the rest.
const PRUNING_SHARE_OF_BUDGET: f64 = 0.8;

/// Runs `nnzip compress`.
pub fn run(args: &CompressArgs) -> Result<()> {
    let settings = CompressSettings::resolve(args)?;
    let s = &settings;
    let cfg = config(s)?;
    // Before hours of training: the output must be writable, and not the model itself.
    fsutil::check_output(&args.output, &[&args.model], args.force)?;
    let onnx = fsutil::read(&args.model)?;
    let labels = match &s.labels {
        Some(p) => read_labels(p)?,
        None => Vec::new(),
    };
    let opts = PackOptions {
        model_name: args
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned()),
        preprocessing: preset(&s.preprocess)?,
        labels,
        f16: false,
    };
    if s.calibration.is_some() {
        return super::compress_calibrated::run(args, s, &cfg, &onnx, &opts);
    }
    // With data, the retraining stages run on the training engine; the weights they leave
    // (pruned, shared, fine-tuned) are what gets encoded.
    let retrain = s.data.is_some() && (s.retrain_epochs > 0 || s.fine_tune_epochs > 0);
    // The retraining path loads the test split itself (with the model's channels); the one-shot
    // path only needs it for the accuracy before and after.
    // Decisions are taken on a part of the test split held apart; reported figures come
    // from the rest.
    let mut test_sets = match &s.data {
        Some(d) if !retrain => Some(DecisionSplit::of_test(&data::load(
            d,
            Split::Test,
            &ImageTransform::default(),
        )?)?),
        _ => None,
    };
    let mut stages: Vec<(String, f64)> = Vec::new();
    // Weights before pruning and after pruning + retraining, for the histograms.
    let mut dense_values: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut pruned_values: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut shared: BTreeMap<String, SharedLayer> = BTreeMap::new();
    let mut budget_steps: Vec<BudgetStep> = Vec::new();
    // Stages undone because they made the model worse, as the report says them.
    let mut rolled_back: Vec<String> = Vec::new();
    let trained_onnx;
    let source_onnx: &[u8] = if retrain {
        let (mut exec, mut train_set, test) = retrain_inputs(args, s)?;
        let sets = DecisionSplit::of_test(&test)?;
        drop(test);
        let (fine_tune_optimizer, fine_tune_lr) = s.fine_tune_rule();
        let rc = RetrainConfig {
            rounds: s.rounds,
            epochs_per_round: s.retrain_epochs,
            lr: s.retrain_lr,
            fine_tune_epochs: s.fine_tune_epochs,
            fine_tune_lr,
            fine_tune_optimizer,
            batch: s.batch,
            schedule: s.schedule,
            seed: s.seed,
            progress: !args.json,
            distill: None,
        };
        let mut rc = rc;
        if s.distill > 0.0 {
            // The dense model, before any pruning, is the teacher.
            rc.distill = Some(
                Distillation::from_teacher(&exec, &train_set, s.temperature, s.distill)
                    .context("the dense model's outputs for distillation")?,
            );
        }
        let measure =
            |exec: &GraphExecutor, what: String, stages: &mut Vec<(String, f64)>| -> Result<()> {
                let acc = crate::train::evaluate(exec, &sets.validation, 1000, false)?.accuracy;
                if !args.json {
                    eprintln!("{what}: accuracy {:.2}%", acc * 100.0);
                }
                stages.push((what, acc));
                Ok(())
            };
        let prunable = prunable_tensors(&exec, &cfg);
        if prunable.is_empty() {
            bail!(
                "{}: the model has no prunable tensor (convolution or fully connected weights with ≥ {} elements): nothing to compress",
                args.model.display(),
                cfg.min_shared_elements
            );
        }
        for name in cfg.per_layer.keys() {
            if !prunable.contains(name) {
                bail!(
                    "'{name}' is not a prunable weight of the model; prunable: {}",
                    prunable.join(", ")
                );
            }
        }
        measure(&exec, "dense".into(), &mut stages)?;
        for name in &prunable {
            dense_values.insert(name.clone(), param_values(&exec, name)?);
        }
        let mut round_acc = Vec::new();
        let masks = if let Some(budget_pp) = s.max_accuracy_drop {
            // Densities are chosen to fit the budget on the validation part of the test split
            // (the reference models were trained on every training image, so no training image
            // is unseen), or on a split held out of the training data.
            let holdout;
            let val: &data::Dataset = match s.budget_split {
                BudgetSplit::Validation => &sets.validation,
                BudgetSplit::Holdout => {
                    let (train_part, held) =
                        train_set.split_validation(VALIDATION_FRACTION, s.seed)?;
                    train_set = train_part;
                    holdout = held;
                    &holdout
                }
            };
            // The sensitivity report's baseline is the unpruned model's accuracy on `val`.
            let report = sensitivity(&exec, &prunable, DEFAULT_LADDER, val, !args.json)?;
            let baseline = report.baseline;
            let (masks, steps) = prune_to_budget(
                &exec,
                &report,
                baseline,
                budget_pp / 100.0 * PRUNING_SHARE_OF_BUDGET,
                &train_set,
                val,
                &rc,
                |step| {
                    if !args.json {
                        eprintln!(
                            "budget level {} pp: {} → validation {:.2}% ({})",
                            step.tolerance_pp,
                            step.densities
                                .iter()
                                .map(|(n, d)| format!("{n} {:.1}%", d * 100.0))
                                .collect::<Vec<_>>()
                                .join(", "),
                            step.validation_accuracy * 100.0,
                            if step.accepted {
                                "kept"
                            } else {
                                "over budget, undone"
                            }
                        );
                    }
                    Ok(())
                },
            )?;
            budget_steps = steps;
            measure(
                &exec,
                "pruning within the budget + retraining".into(),
                &mut round_acc,
            )?;
            masks
        } else {
            let targets = target_densities(&exec, &prunable, &cfg)?;
            prune_and_retrain(&exec, &targets, Some(&train_set), &rc, |r| {
                measure(
                    &exec,
                    format!("pruning round {r}/{} + retraining", rc.rounds),
                    &mut round_acc,
                )
            })?
        };
        stages.extend(round_acc);
        if s.fold_batch_norm {
            let mut proto = exec.to_model_proto()?;
            let folded = fold_batch_norms(&mut proto)?;
            if !folded.is_empty() {
                exec = GraphExecutor::with_dtype(proto, exec.source(), exec.dtype())
                    .context("the model with its BatchNormalization folded")?;
                measure(
                    &exec,
                    format!("{} BatchNormalization folded", folded.len()),
                    &mut stages,
                )?;
            }
        }
        for name in &prunable {
            pruned_values.insert(name.clone(), param_values(&exec, name)?);
        }
        // Measure sharing alone, then with fine-tuned centroids.
        let mut layers = share_layers(&exec, &masks, &cfg)?;
        measure(&exec, "weight sharing".into(), &mut stages)?;
        if rc.fine_tune_epochs > 0 {
            // The pipeline keeps the best model it measured: fine-tuning that loses accuracy is
            // undone (it can diverge, e.g. from a learning rate too high for few images).
            let before = Checkpoint::take(&exec, &layers)?;
            fine_tune_layers(&exec, &mut layers, &masks, Some(&train_set), &rc)?;
            measure(&exec, "centroid fine-tuning".into(), &mut stages)?;
            if let Some(note) = keep_better(&exec, &mut layers, before, &mut stages)? {
                if !args.json {
                    eprintln!("{note}");
                }
                rolled_back.push(note);
            }
        }
        shared = layers;
        test_sets = Some(sets);
        trained_onnx = exec.to_model_proto()?.encode_to_vec();
        &trained_onnx
    } else if s.fold_batch_norm {
        // One shot: fold before sharing as well, so the codebooks are those of stored weights.
        let mut proto = nnzip_core::onnx::proto::ModelProto::decode(onnx.as_slice())
            .with_context(|| format!("{} is not a valid ONNX file", args.model.display()))?;
        if fold_batch_norms(&mut proto)?.is_empty() {
            &onnx
        } else {
            trained_onnx = proto.encode_to_vec();
            &trained_onnx
        }
    } else {
        &onnx
    };
    let mut writer = pack_onnx(source_onnx, &opts)
        .with_context(|| format!("cannot read {}", args.model.display()))?;
    let weights = take_raw_weights(&mut writer);
    let (records, reports) = compress_weights_with(&weights, &cfg, &shared)?;
    if let Some(dir) = &args.plots {
        write_histograms(dir, &weights, &records, &dense_values, &pruned_values)?;
    }
    for r in records {
        writer.push(r)?;
    }
    let bytes = writer.to_bytes()?;
    let dense: u64 = reports.iter().map(|r| r.dense_bytes).sum();

    let mut accuracy = None;
    if let Some(sets) = &test_sets {
        let set = &sets.reported;
        let decoded = nnzip_core::Model::from_bytes(&bytes)?;
        let before = evaluate(
            &nnzip_core::Model::from_bytes(&pack_onnx(&onnx, &opts)?.to_bytes()?)?,
            set,
            500,
            !args.json,
        )?;
        let after = evaluate(&decoded, set, 500, !args.json)?;
        if after.accuracy.is_nan() {
            bail!("evaluation failed");
        }
        writer
            .metadata
            .extra
            .insert("accuracy".into(), format!("{:.4}", after.accuracy));
        // The stage table is measured on the validation images, the decoded file's row too.
        let on_validation = evaluate(&decoded, &sets.validation, 500, false)?;
        stages.push(("decoded .nnz (core runtime)".into(), on_validation.accuracy));
        refuse_chance_level(before.accuracy, after.accuracy, set)?;
        accuracy = Some((before.accuracy, after.accuracy));
    }
    let bytes = if accuracy.is_some() {
        writer.to_bytes()?
    } else {
        bytes
    };
    fsutil::write_atomic(&args.output, &bytes)?;

    if args.json {
        let v = serde_json::json!({
            "layers": reports,
            "file_bytes": bytes.len(),
            "dense_weight_bytes": dense,
            "ratio_vs_dense_weights": dense as f64 / bytes.len() as f64,
            "onnx_bytes": onnx.len(),
            "accuracy_before": accuracy.map(|a| a.0),
            "accuracy_after": accuracy.map(|a| a.1),
            "max_accuracy_drop_pp": s.max_accuracy_drop,
            "budget_levels": budget_steps,
            "rolled_back": rolled_back,
            "validation_images": test_sets.as_ref().map(|t| t.validation.len()),
            "reported_images": test_sets.as_ref().map(|t| t.reported.len()),
            "images": test_sets.as_ref().map(DecisionSplit::describe),
            "stages": stages.iter().map(|(s, a)| serde_json::json!({"stage": s, "accuracy": a})).collect::<Vec<_>>(),
        });
        println!("{v}");
        return Ok(());
    }
    print!("{}", layer_table(&reports).render());
    println!(
        "\n{}: {} → {} ({:.1}× vs dense f32 weights, {:.1}× vs the ONNX file, everything included)",
        args.output.display(),
        human_bytes(dense),
        human_bytes(bytes.len() as u64),
        dense as f64 / bytes.len() as f64,
        onnx.len() as f64 / bytes.len() as f64
    );
    if stages.len() > 1 {
        let mut t = Table::new(&["stage", "validation accuracy"]);
        for (stage, acc) in &stages {
            t.row(vec![stage.clone(), format!("{:.2}%", acc * 100.0)]);
        }
        println!();
        print!("{}", t.render());
    }
    for note in &rolled_back {
        println!("{note}");
    }
    if let Some(sets) = &test_sets {
        println!("images: {}", sets.describe());
    }
    if let Some((b, a)) = accuracy {
        println!(
            "accuracy {:.2}% → {:.2}% ({:+.2} pp)",
            b * 100.0,
            a * 100.0,
            (a - b) * 100.0
        );
    }
    if let (Some(budget), Some((b, a))) = (s.max_accuracy_drop, accuracy) {
        let kept = budget_steps.iter().filter(|st| st.accepted).count();
        let drop = (b - a) * 100.0;
        println!(
            "budget {budget} pp: {kept} of {} pruning levels kept (measured on the {} images); on the reported test images the loss is {drop:.2} pp{}",
            budget_steps.len(),
            match s.budget_split {
                BudgetSplit::Validation => "validation",
                BudgetSplit::Holdout => "held-out training",
            },
            if drop <= budget {
                ", within the budget"
            } else {
                ", OVER the budget (weight sharing, or a held-out split that did not predict the test set): try a smaller --max-accuracy-drop"
            }
        );
    }
    Ok(())
}

/// The per-tensor table of the report: shape, kept fraction, bits, encoding, bytes.
pub(crate) fn layer_table(reports: &[LayerReport]) -> Table {
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

/// The model on the training engine and the data to retrain and measure it with.
fn retrain_inputs(
    args: &CompressArgs,
    s: &CompressSettings,
) -> Result<(GraphExecutor, data::Dataset, data::Dataset)> {
    let exec = GraphExecutor::open(&args.model)?;
    let spec = s.data.as_deref().unwrap_or("fashion-mnist");
    let transform = ImageTransform {
        channels: exec.input_channels(),
        ..Default::default()
    };
    let mut train_set = data::load(spec, Split::Train, &transform)?;
    if let Some(n) = s.train_limit {
        train_set = train_set.truncate(n);
    }
    let test = data::load(spec, Split::Test, &transform)?;
    // Shapes and classes are checked before any work starts.
    crate::train::check_compatible(&exec, &train_set)?;
    crate::train::check_compatible(&exec, &test)?;
    Ok((exec, train_set, test))
}

fn param_values(exec: &GraphExecutor, name: &str) -> Result<Vec<f32>> {
    let p = exec.param(name).context("a prunable tensor")?;
    Ok(p.var.as_tensor().flatten_all()?.to_vec1::<f32>()?)
}

/// Three PNG histograms per shared tensor: dense weights, the weights kept by pruning (after
/// retraining, when there was any), and those with the final centroids marked.
fn write_histograms(
    dir: &std::path::Path,
    weights: &[nnzip_core::graph::Weight],
    records: &[nnzip_core::format::TensorRecord],
    dense_values: &BTreeMap<String, Vec<f32>>,
    pruned_values: &BTreeMap<String, Vec<f32>>,
) -> Result<()> {
    use nnzip_core::format::TensorData;
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
                config(&s).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 4, "presets found: {n}");
        let p = CompressSettings::from_file(&dir.join("lenet5-100x.toml")).unwrap();
        assert_eq!(p.schedule, PruneSchedule::Gradual);
    }
}
