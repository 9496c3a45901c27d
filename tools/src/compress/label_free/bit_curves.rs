//! Each layer's curve along the quantizer ladder: shared alone at every step, its bytes as the
//! file will store them, and its agreement with the teacher.

use super::agreement::{Agreement, agreement, logits};
use super::gptq_statistics::Hessians;
use super::photos::Views;
use super::quantizer::Quantizer;
use super::student::StudentBuilder;
use crate::compress::pipeline::{CompressConfig, choose_encoding, shared_candidates};
use crate::compress::share::SharedLayer;
use anyhow::{Context, Result};
use nnzip_core::graph::Weight;
use std::collections::BTreeMap;

/// Shared layers by (name, ladder position), as measured by
/// [`measure_bit_curves`]: the
/// allocation reuses them instead of sharing again.
pub type SharedCache = BTreeMap<(String, usize), SharedLayer>;

/// One point of a layer's sensitivity.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct BitsPoint {
    /// How the layer was shared.
    pub quantizer: Quantizer,
    /// Index bits that took.
    pub bits: u8,
    /// Bytes of the layer's payload with the range coder.
    pub bytes: u64,
    /// Agreement with the teacher with only this layer shared.
    pub agreement: Agreement,
}

/// How one layer reacts to coarser sharing.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BitsCurve {
    /// Initializer name.
    pub name: String,
    /// Number of weights.
    pub elements: usize,
    /// One point per ladder step tried, finest first.
    pub points: Vec<BitsPoint>,
}

/// Bytes the layer will take in the file (payload and row scales) with the encoding `cfg` would
/// store it with ([`choose_encoding`]), so that the allocation plans with the sizes written.
pub fn coded_bytes(w: &Weight, layer: &SharedLayer, cfg: &CompressConfig) -> Result<u64> {
    let candidates = shared_candidates(layer, cfg);
    let (_, bytes) = choose_encoding(
        &w.name,
        &w.shape,
        layer.row_scales.clone(),
        candidates,
        cfg.coder,
    )?;
    Ok(bytes)
}

/// For each layer in `layers`, along `ladder` (finest first): share it alone, measure agreement
/// with the teacher on `views`, and stop once the KL divergence exceeds `stop_kl` (coarser steps
/// would only be worse). Compensated grids use the layer's statistics in `hessians` where
/// there are some; bytes are those of the encoding `cfg` chooses. `on_step` is called after
/// every measurement.
#[allow(clippy::too_many_arguments)]
pub fn measure_bit_curves(
    builder: &StudentBuilder,
    cfg: &CompressConfig,
    teacher: &[Vec<f32>],
    views: &Views,
    layers: &[String],
    ladder: &[Quantizer],
    hessians: &Hessians,
    stop_kl: f64,
    mut on_step: impl FnMut(&str, &BitsPoint),
) -> Result<(Vec<BitsCurve>, SharedCache)> {
    let mut curves = Vec::new();
    let mut cache = SharedCache::new();
    for name in layers {
        let w = builder
            .weights()
            .iter()
            .find(|w| &w.name == name)
            .with_context(|| format!("no weight named '{name}'"))?;
        let mut points = Vec::new();
        for (level, q) in ladder.iter().enumerate() {
            let layer = q.share(w, hessians.get(name))?;
            let bytes = coded_bytes(w, &layer, cfg)?;
            let replace = BTreeMap::from([(name.clone(), layer.values())]);
            let student = logits(&builder.model(&replace)?, views)?;
            let point = BitsPoint {
                quantizer: *q,
                bits: layer.bits,
                bytes,
                agreement: agreement(teacher, &student),
            };
            on_step(name, &point);
            points.push(point);
            cache.insert((name.clone(), level), layer);
            if point.agreement.kl > stop_kl {
                break;
            }
        }
        curves.push(BitsCurve {
            name: name.clone(),
            elements: w.values.len(),
            points,
        });
    }
    Ok((curves, cache))
}
