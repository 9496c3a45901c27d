//! `nnzip compress MODEL.onnx -o MODEL.nnz`: the flags, merged over a preset's settings, handed
//! to [`crate::compress::compress_file`] (labelled, one-shot or label-free), and its report
//! printed as a table or as JSON.

use crate::compress::compress_file;
use crate::compress::pipeline::Coder;
use crate::compress::retrain::PruneSchedule;
use crate::compress::settings::{BudgetSplit, CompressSettings, GapBits, QuantizerKind};
use crate::train::OptimizerKind;
use anyhow::{Context, Result};
use clap::Args;
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
    /// sgd clusters of 10^5 weights take steps large enough to diverge].
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
    /// [default: --views]. More views of the same photos are not more photos: expect little
    /// gain on new photos (docs/PERFORMANCE.md).
    #[arg(long)]
    pub statistics_views: Option<usize>,
    /// With --calibration and GPTQ: round the last N compensated layers again, in graph order,
    /// each against the dense model's outputs from the inputs the compressed model gives it
    /// (asymmetric calibration): a layer absorbs the error the layers before it left
    /// [default: 0]. It fits the calibration photos closely, so with few photos it can help
    /// them and hurt new ones (docs/PERFORMANCE.md); worth trying with many more photos.
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
    #[arg(long, value_enum)]
    pub quantizer: Option<QuantizerKind>,
    /// With --calibration and --quantizer kmeans: bit widths tried per layer, most first
    /// [default: 8,6,5,4,3].
    #[arg(long, value_delimiter = ',')]
    pub bits_ladder: Option<Vec<u8>>,
    /// With --calibration and --quantizer uniform: grid steps tried per layer, in standard
    /// deviations of the layer, finest first, after 8-bit k-means (which keeps layers whose
    /// channels differ in scale) [default: 0.04,0.08,0.15,0.3,0.6,0.9,1.3].
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

/// The settings of this run: defaults, then `args.config`, then the flags given on the command
/// line.
fn settings(args: &CompressArgs) -> Result<CompressSettings> {
    let mut s = match &args.config {
        Some(p) => CompressSettings::from_file(p)?,
        None => CompressSettings::default(),
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
        statistics_cache,
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
    if let Some(p) = &args.plots {
        s.plots = Some(p.clone());
    }
    Ok(s)
}

/// Runs `nnzip compress`.
pub fn run(args: &CompressArgs) -> Result<()> {
    let s = settings(args)?;
    let report = compress_file(&args.model, &args.output, args.force, &s, !args.json)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render(&args.output));
    }
    Ok(())
}
