//! Packing an ONNX model into a `.nnz` file losslessly: every float weight stored raw.
//!
//! This is the trivial policy that makes the ONNX → `.nnz` → running model round trip exist
//! before compression; the compression pipeline uses the same writer with other encodings.

use anyhow::{Context, Result, bail};
use nnzip_core::format::{NnzWriter, TensorData, TensorRecord};
use nnzip_core::graph::{Weight, split_onnx};
use nnzip_core::metadata::{Metadata, Preprocessing};

/// How `pack` stores weights and what it writes into the metadata.
#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// Model name for the metadata (defaults to the graph's name).
    pub model_name: Option<String>,
    /// Image preprocessing recipe.
    pub preprocessing: Option<Preprocessing>,
    /// Class labels, in output order.
    pub labels: Vec<String>,
    /// Store weights as f16 instead of f32.
    pub f16: bool,
}

/// Named preprocessing presets accepted by `--preprocess`.
pub const PRESETS: &[&str] = &["efficientnet-lite", "imagenet", "mnist", "none"];

/// Looks up a preprocessing preset by name.
pub fn preset(name: &str) -> Result<Option<Preprocessing>> {
    Ok(match name {
        "efficientnet-lite" => Some(Preprocessing::efficientnet_lite()),
        "imagenet" => Some(Preprocessing::torchvision_imagenet()),
        "mnist" | "fashion-mnist" => Some(Preprocessing::mnist()),
        "none" => None,
        other => bail!(
            "unknown preprocessing preset '{other}': use one of {}",
            PRESETS.join(", ")
        ),
    })
}

/// Reads a labels file: one class name per line, blank lines at the end ignored.
pub fn read_labels(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read labels file {}", path.display()))?;
    let mut labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while labels.last().is_some_and(|l| l.is_empty()) {
        labels.pop();
    }
    Ok(labels)
}

/// Splits an ONNX model into graph and weights and builds a writer that stores every float
/// weight raw (lossless).
pub fn pack_onnx(onnx: &[u8], opts: &PackOptions) -> Result<NnzWriter> {
    let split = split_onnx(onnx)?;
    // Refuse here, not on the phone, a graph the runtime would not load.
    let graph = nnzip_core::graph::parse_model_proto(&split.graph)?;
    nnzip_core::onnx::check_model(&graph, &split.weights)
        .context("the phone runtime would refuse this model")?;
    let metadata = Metadata {
        model_name: opts
            .model_name
            .clone()
            .unwrap_or_else(|| split.graph_name.clone()),
        input: split.input.clone(),
        preprocessing: opts.preprocessing.clone(),
        labels: opts.labels.clone(),
        producer: format!("nnzip {}", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    };
    let mut writer = NnzWriter::new(metadata, split.graph);
    writer.metadata.stats.source_onnx_bytes = onnx.len() as u64;
    for w in split.weights {
        let data = if opts.f16 {
            TensorData::RawF16(w.values)
        } else {
            TensorData::RawF32(w.values)
        };
        writer.push(TensorRecord {
            row_scales: None,
            name: w.name,
            shape: w.shape,
            data,
        })?;
    }
    Ok(writer)
}

/// Takes the raw f32 tensors out of a packed writer (everything [`pack_onnx`] stores without
/// `f16`), as weights to compress; the writer keeps its metadata and graph, ready for the
/// compressed tensors.
pub fn take_raw_weights(writer: &mut NnzWriter) -> Vec<Weight> {
    writer
        .tensors
        .drain(..)
        .filter_map(|t| match t.data {
            TensorData::RawF32(values) => Some(Weight {
                name: t.name,
                shape: t.shape,
                values,
            }),
            _ => None,
        })
        .collect()
}
