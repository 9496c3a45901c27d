//! `nnzip compress MODEL.onnx -o MODEL.nnz`: prune, share weights, Huffman-code (one shot).

use crate::compress::kmeans::KmeansInit;
use crate::compress::pipeline::{
    CompressConfig, PruneRule, compress_weights_with, is_prunable_shape,
};
use crate::compress::retrain::{
    PruneSchedule, RetrainConfig, fine_tune_layers, prune_and_retrain, share_layers,
    target_densities,
};
use crate::compress::share::SharedLayer;
use crate::data::{self, ImageTransform, Split};
use crate::eval::evaluate;
use crate::fsutil;
use crate::onnx::GraphExecutor;
use crate::pack::{PackOptions, pack_onnx, preset, read_labels};
use crate::table::{Table, human_bytes};
use crate::train::Distillation;
use anyhow::{Context, Result, bail};
use clap::Args;
use prost::Message;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Arguments of `nnzip compress`.
#[derive(Debug, Args)]
pub struct CompressArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Output `.nnz` file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Keep this fraction of each layer (`0.1`), or of one layer (`fc1.weight=0.08`); repeatable.
    #[arg(long)]
    pub density: Vec<String>,
    /// Prune with the paper's rule: |w| < quality × std(layer) is dropped (all layers).
    #[arg(long)]
    pub quality: Option<f64>,
    /// The paper's per-layer densities for `lenet300` or `lenet5`.
    #[arg(long)]
    pub paper_densities: Option<String>,
    /// Index bits of convolution weights.
    #[arg(long, default_value_t = 8)]
    pub bits_conv: u8,
    /// Index bits of fully connected weights.
    #[arg(long, default_value_t = 5)]
    pub bits_fc: u8,
    /// Width of the relative indices (gaps) of sparse layers: bits (1–16), or `auto` for the
    /// smallest payload per tensor.
    #[arg(long, default_value = "auto")]
    pub gap_bits: String,
    /// k-means initialisation: linear, density, random, kmeans++ or optimal.
    #[arg(long, default_value = "linear")]
    pub init: String,
    /// Seed for random initialisations.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Measure accuracy before and after on this data (`fashion-mnist` or an IDX folder).
    #[arg(long)]
    pub data: Option<String>,
    /// Image preprocessing preset for the metadata.
    #[arg(long, default_value = "none")]
    pub preprocess: String,
    /// Class labels file for the metadata.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Pruning rounds (with --data: each prunes further, then retrains).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Epochs of masked retraining after each pruning round (0: prune in one shot, no retraining).
    #[arg(long, default_value_t = 2)]
    pub retrain_epochs: usize,
    /// Learning rate of retraining (a tenth of training's usual 0.05).
    #[arg(long, default_value_t = 0.005)]
    pub retrain_lr: f64,
    /// How densities fall over the rounds: iterative (the paper's) or gradual (AGP, cubic).
    #[arg(long, value_enum, default_value = "iterative")]
    pub schedule: PruneSchedule,
    /// Epochs of centroid fine-tuning after weight sharing (0: none).
    #[arg(long, default_value_t = 2)]
    pub fine_tune_epochs: usize,
    /// Learning rate of centroid fine-tuning (the update of a centroid is this × the sum of its weights' gradients).
    #[arg(long, default_value_t = 0.0005)]
    pub fine_tune_lr: f64,
    /// Mini-batch size of retraining.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Retrain on only the first N training images (quick runs).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Retrain by distillation: this weight (0–1) of the loss pulls the compressed model's outputs
    /// towards the dense model's (softened by --temperature); the rest is cross-entropy with the
    /// labels. 0 turns it off; 1 ignores the labels.
    #[arg(long, default_value_t = 0.0)]
    pub distill: f64,
    /// Softening temperature of distillation.
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f64,
    /// Store the tensors that stay raw (biases, BatchNorm parameters) as f16 instead of f32.
    #[arg(long)]
    pub raw_f16: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn config(args: &CompressArgs) -> Result<CompressConfig> {
    let mut cfg = CompressConfig {
        bits_conv: args.bits_conv,
        bits_fc: args.bits_fc,
        gap_bits: match args.gap_bits.as_str() {
            "auto" => 0,
            b => match b.parse::<u8>() {
                Ok(v) if (1..=16).contains(&v) => v,
                _ => bail!("--gap-bits {b}: expected a width from 1 to 16, or auto"),
            },
        },
        init: args.init.parse::<KmeansInit>()?,
        seed: args.seed,
        raw_f16: args.raw_f16,
        ..Default::default()
    };
    if let Some(q) = args.quality {
        cfg.default_rule = PruneRule::Quality(q);
    }
    if let Some(m) = &args.paper_densities {
        cfg.per_layer = CompressConfig::paper_densities(m)?;
    }
    for d in &args.density {
        let parse = |s: &str| {
            s.trim()
                .parse::<f64>()
                .with_context(|| format!("--density {d}: '{s}' is not a number"))
        };
        match d.split_once('=') {
            Some((name, v)) => {
                cfg.per_layer
                    .insert(name.trim().to_string(), PruneRule::Density(parse(v)?));
            }
            None => cfg.default_rule = PruneRule::Density(parse(d)?),
        }
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Runs `nnzip compress`.
pub fn run(args: &CompressArgs) -> Result<()> {
    let cfg = config(args)?;
    let onnx = fsutil::read(&args.model)?;
    let labels = match &args.labels {
        Some(p) => read_labels(p)?,
        None => Vec::new(),
    };
    let opts = PackOptions {
        model_name: args
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned()),
        preprocessing: preset(&args.preprocess)?,
        labels,
        f16: false,
    };
    // With data, the retraining stages run on the training engine; the weights they leave
    // (pruned, shared, fine-tuned) are what gets encoded.
    let retrain = args.data.is_some() && (args.retrain_epochs > 0 || args.fine_tune_epochs > 0);
    // The retraining path loads the test split itself (with the model's channels); the one-shot
    // path only needs it for the accuracy before and after.
    let mut test_set = match &args.data {
        Some(d) if !retrain => Some(data::load(d, Split::Test, &ImageTransform::default())?),
        _ => None,
    };
    let mut stages: Vec<(String, f64)> = Vec::new();
    let mut shared: BTreeMap<String, SharedLayer> = BTreeMap::new();
    let trained_onnx;
    let source_onnx: &[u8] = if retrain {
        let (exec, train_set, test) = retrain_inputs(args)?;
        let rc = RetrainConfig {
            rounds: args.rounds,
            epochs_per_round: args.retrain_epochs,
            lr: args.retrain_lr,
            fine_tune_epochs: args.fine_tune_epochs,
            fine_tune_lr: args.fine_tune_lr,
            batch: args.batch,
            schedule: args.schedule,
            seed: args.seed,
            progress: !args.json,
            distill: None,
        };
        let mut rc = rc;
        if args.distill > 0.0 {
            // The dense model, before any pruning, is the teacher.
            rc.distill = Some(
                Distillation::from_teacher(&exec, &train_set, args.temperature, args.distill)
                    .context("the dense model's outputs for distillation")?,
            );
        }
        let measure =
            |exec: &GraphExecutor, what: String, stages: &mut Vec<(String, f64)>| -> Result<()> {
                let acc = crate::train::evaluate(exec, &test, 1000, false)?.accuracy;
                if !args.json {
                    eprintln!("{what}: accuracy {:.2}%", acc * 100.0);
                }
                stages.push((what, acc));
                Ok(())
            };
        measure(&exec, "dense".into(), &mut stages)?;
        let prunable: Vec<String> = exec
            .trainable()
            .filter(|p| is_prunable_shape(p.var.rank(), p.var.elem_count(), &cfg))
            .map(|p| p.name.clone())
            .collect();
        for name in cfg.per_layer.keys() {
            if !prunable.contains(name) {
                bail!(
                    "'{name}' is not a prunable weight of the model; prunable: {}",
                    prunable.join(", ")
                );
            }
        }
        let targets = target_densities(&exec, &prunable, &cfg)?;
        let mut round_acc = Vec::new();
        let masks = prune_and_retrain(&exec, &targets, Some(&train_set), &rc, |r| {
            measure(
                &exec,
                format!("pruning round {r}/{} + retraining", rc.rounds),
                &mut round_acc,
            )
        })?;
        stages.extend(round_acc);
        // Measure sharing alone, then with fine-tuned centroids.
        let mut layers = share_layers(&exec, &masks, &cfg)?;
        measure(&exec, "weight sharing".into(), &mut stages)?;
        fine_tune_layers(&exec, &mut layers, &masks, Some(&train_set), &rc)?;
        if rc.fine_tune_epochs > 0 {
            measure(&exec, "centroid fine-tuning".into(), &mut stages)?;
        }
        shared = layers;
        test_set = Some(test);
        trained_onnx = exec.to_model_proto()?.encode_to_vec();
        &trained_onnx
    } else {
        &onnx
    };
    let mut writer = pack_onnx(source_onnx, &opts)
        .with_context(|| format!("cannot read {}", args.model.display()))?;
    let weights: Vec<nnzip_core::graph::Weight> = writer
        .tensors
        .drain(..)
        .filter_map(|t| match t.data {
            nnzip_core::format::TensorData::RawF32(values) => Some(nnzip_core::graph::Weight {
                name: t.name,
                shape: t.shape,
                values,
            }),
            _ => None,
        })
        .collect();
    let (records, reports) = compress_weights_with(&weights, &cfg, &shared)?;
    for r in records {
        writer.push(r)?;
    }
    let bytes = writer.to_bytes()?;
    let dense: u64 = reports.iter().map(|r| r.dense_bytes).sum();

    let mut accuracy = None;
    if let Some(set) = &test_set {
        let before = evaluate(
            &nnzip_core::Model::from_bytes(&pack_onnx(&onnx, &opts)?.to_bytes()?)?,
            set,
            500,
            !args.json,
        )?;
        let after = evaluate(
            &nnzip_core::Model::from_bytes(&bytes)?,
            set,
            500,
            !args.json,
        )?;
        if after.accuracy.is_nan() {
            bail!("evaluation failed");
        }
        writer
            .metadata
            .extra
            .insert("accuracy".into(), format!("{:.4}", after.accuracy));
        stages.push(("decoded .nnz (core runtime)".into(), after.accuracy));
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
            "stages": stages.iter().map(|(s, a)| serde_json::json!({"stage": s, "accuracy": a})).collect::<Vec<_>>(),
        });
        println!("{v}");
        return Ok(());
    }
    let mut t = Table::new(&[
        "tensor", "shape", "kept", "bits", "gap bits", "encoding", "dense B", "stored B", "ratio",
    ]);
    for r in &reports {
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
    print!("{}", t.render());
    println!(
        "\n{}: {} → {} ({:.1}× vs dense f32 weights, {:.1}× vs the ONNX file, everything included)",
        args.output.display(),
        human_bytes(dense),
        human_bytes(bytes.len() as u64),
        dense as f64 / bytes.len() as f64,
        onnx.len() as f64 / bytes.len() as f64
    );
    if stages.len() > 1 {
        let mut t = Table::new(&["stage", "accuracy"]);
        for (stage, acc) in &stages {
            t.row(vec![stage.clone(), format!("{:.2}%", acc * 100.0)]);
        }
        println!();
        print!("{}", t.render());
    }
    if let Some((b, a)) = accuracy {
        println!(
            "accuracy {:.2}% → {:.2}% ({:+.2} pp)",
            b * 100.0,
            a * 100.0,
            (a - b) * 100.0
        );
    }
    Ok(())
}

/// The model on the training engine and the data to retrain and measure it with.
fn retrain_inputs(args: &CompressArgs) -> Result<(GraphExecutor, data::Dataset, data::Dataset)> {
    let exec = GraphExecutor::open(&args.model)?;
    let spec = args.data.as_deref().unwrap_or("fashion-mnist");
    let transform = ImageTransform {
        channels: exec.input_channels(),
        ..Default::default()
    };
    let mut train_set = data::load(spec, Split::Train, &transform)?;
    if let Some(n) = args.train_limit {
        train_set = train_set.truncate(n);
    }
    let test = data::load(spec, Split::Test, &transform)?;
    Ok((exec, train_set, test))
}
