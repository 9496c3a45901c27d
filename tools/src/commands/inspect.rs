//! `nnzip inspect FILE.nnz`: header, metadata and a per-tensor table.

use crate::table::{Table, human_bytes};
use anyhow::{Context, Result};
use clap::Args;
use nnzip_core::format::NnzReader;
use std::path::PathBuf;

/// Arguments of `nnzip inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The `.nnz` file.
    pub file: PathBuf,
    /// Print the metadata as JSON instead of the report.
    #[arg(long)]
    pub json: bool,
}

/// The human-readable report of a `.nnz` file.
pub fn report(bytes: &[u8]) -> Result<String> {
    let r = NnzReader::parse(bytes)?;
    let m = r.metadata();
    let file = bytes.len() as u64;
    let mut s = String::new();
    s += &format!("format version  {}\n", r.version());
    s += &format!("file size       {} ({file} bytes)\n", human_bytes(file));
    s += &format!("model           {}\n", m.model_name);
    s += &format!("producer        {}\n", m.producer);
    s += &format!("input           {} {:?}\n", m.input.name, m.input.shape);
    match &m.preprocessing {
        Some(p) => s += &format!("preprocessing   {}\n", serde_json::to_string(p)?),
        None => s += "preprocessing   none\n",
    }
    let shown: Vec<&str> = m.labels.iter().take(5).map(String::as_str).collect();
    s += &format!(
        "labels          {} ({}{})\n",
        m.labels.len(),
        shown.join(", "),
        if m.labels.len() > 5 { ", …" } else { "" }
    );
    for (k, v) in &m.extra {
        s += &format!("{k:<15} {v}\n");
    }
    s += &format!("graph           {} bytes (inflated)\n", r.graph().len());
    let dense = m.stats.dense_bytes();
    let stored: u64 = r.tensors().iter().map(|t| t.record_bytes).sum();
    s += &format!(
        "weights         {} dense f32 → {} stored ({:.2}×)\n",
        human_bytes(dense),
        human_bytes(stored),
        dense as f64 / stored.max(1) as f64
    );
    if m.stats.source_onnx_bytes > 0 {
        s += &format!(
            "vs ONNX file    {} → {} ({:.2}×)\n",
            human_bytes(m.stats.source_onnx_bytes),
            human_bytes(file),
            m.stats.source_onnx_bytes as f64 / file as f64
        );
    }
    s += "\n";
    let mut t = Table::new(&[
        "tensor", "shape", "encoding", "bits", "gap", "k", "density", "dense B", "stored B",
        "ratio", "% file",
    ]);
    for (i, v) in r.tensors().iter().enumerate() {
        let st = m.stats.tensors.get(i).filter(|st| st.name == v.name);
        let dense = v.element_count() as u64 * 4;
        t.row(vec![
            v.name.clone(),
            format!("{:?}", v.shape),
            // Row-scaled tensors (format version 4): one scale per output channel.
            format!(
                "{}{}",
                v.encoding.name(),
                if v.row_scales.is_some() { " ×row" } else { "" }
            ),
            st.map(|s| s.bits.to_string()).unwrap_or_default(),
            st.filter(|s| s.gap_bits > 0)
                .map(|s| s.gap_bits.to_string())
                .unwrap_or_default(),
            st.filter(|s| s.codebook_size > 0)
                .map(|s| s.codebook_size.to_string())
                .unwrap_or_default(),
            st.map(|s| format!("{:.1}%", s.density * 100.0))
                .unwrap_or_default(),
            dense.to_string(),
            v.record_bytes.to_string(),
            format!("{:.1}×", dense as f64 / v.record_bytes.max(1) as f64),
            format!("{:.1}%", v.record_bytes as f64 * 100.0 / file as f64),
        ]);
    }
    s += &t.render();
    Ok(s)
}

/// Whether the phone's loader takes the file: every tensor decoded and the graph built and
/// optimised, as `Model::from_bytes` does. The report shows what a refused file holds; this
/// says it is refused.
pub fn load_check(bytes: &[u8]) -> Result<()> {
    nnzip_core::Model::from_bytes(bytes)
        .map(|_| ())
        .context("the decoder refuses this file")
}

/// Runs `nnzip inspect`: the magic is checked before more than the header is read, and a file
/// the loader refuses is reported, after what could be read of it, with a non-zero exit.
pub fn run(args: &InspectArgs) -> Result<()> {
    let bytes = crate::fsutil::read_nnz(&args.file)?;
    if args.json {
        let r = NnzReader::parse(&bytes)?;
        println!("{}", serde_json::to_string_pretty(r.metadata())?);
    } else {
        print!("{}", report(&bytes)?);
    }
    load_check(&bytes).with_context(|| format!("{}", args.file.display()))
}
