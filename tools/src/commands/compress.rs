//! `nnzip compress MODEL.onnx -o MODEL.nnz`: prune, share weights, Huffman-code (one shot).

use crate::compress::kmeans::KmeansInit;
use crate::compress::pipeline::{CompressConfig, PruneRule, compress_weights};
use crate::data::{self, ImageTransform, Split};
use crate::eval::evaluate;
use crate::fsutil;
use crate::pack::{PackOptions, pack_onnx, preset, read_labels};
use crate::table::{Table, human_bytes};
use anyhow::{Context, Result, bail};
use clap::Args;
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
    /// Width of the relative indices (gaps) of sparse layers.
    #[arg(long, default_value_t = 5)]
    pub gap_bits: u8,
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
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn config(args: &CompressArgs) -> Result<CompressConfig> {
    let mut cfg = CompressConfig {
        bits_conv: args.bits_conv,
        bits_fc: args.bits_fc,
        gap_bits: args.gap_bits,
        init: args.init.parse::<KmeansInit>()?,
        seed: args.seed,
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
    let test_set = match &args.data {
        Some(d) => Some(data::load(d, Split::Test, &ImageTransform::default())?),
        None => None,
    };
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
    let mut writer =
        pack_onnx(&onnx, &opts).with_context(|| format!("cannot read {}", args.model.display()))?;
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
    let (records, reports) = compress_weights(&weights, &cfg)?;
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
        });
        println!("{v}");
        return Ok(());
    }
    let mut t = Table::new(&[
        "tensor", "shape", "kept", "bits", "encoding", "dense B", "stored B", "ratio",
    ]);
    for r in &reports {
        t.row(vec![
            r.name.clone(),
            format!("{:?}", r.shape),
            format!("{:.1}%", r.density * 100.0),
            if r.bits > 0 {
                r.bits.to_string()
            } else {
                "32".into()
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
