//! From a dense ONNX model to `.nnz` tensors: per layer, prune, share weights, and choose the
//! smaller of the shared encodings. (Retraining between the stages comes with the training
//! engine; this is the one-shot path.)

use super::kmeans::KmeansInit;
use super::prune::{apply_mask, density, mask_by_density, mask_by_quality};
use super::share::{SharedLayer, share_weights};
use anyhow::{Result, bail};
use nnzip_core::format::encode::encode_tensor;
use nnzip_core::format::{Encoding, TensorData, TensorRecord};
use nnzip_core::graph::Weight;
use std::collections::BTreeMap;

/// How much of a layer to keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PruneRule {
    /// Keep everything.
    None,
    /// Keep this fraction of the largest-magnitude weights.
    Density(f64),
    /// Han et al.'s threshold `quality × std(layer)`.
    Quality(f64),
}

/// Settings of the one-shot pipeline.
#[derive(Debug, Clone)]
pub struct CompressConfig {
    /// Rule for layers not named in `per_layer`.
    pub default_rule: PruneRule,
    /// Per-layer rules, by initializer name.
    pub per_layer: BTreeMap<String, PruneRule>,
    /// Index bits of convolution weights (rank 4).
    pub bits_conv: u8,
    /// Index bits of fully connected weights (rank 2).
    pub bits_fc: u8,
    /// Gap bits of sparse layers; 0 picks, per tensor, the width that gives the smallest payload.
    pub gap_bits: u8,
    /// k-means initialisation.
    pub init: KmeansInit,
    /// Seed for seeded initialisations.
    pub seed: u64,
    /// Weights with fewer elements stay raw (codebooks do not pay off on tiny tensors).
    pub min_shared_elements: usize,
    /// Store the raw tensors (biases, BatchNorm parameters, small weights) as f16 instead of f32.
    pub raw_f16: bool,
    /// Entropy coders to choose from, per tensor, by size.
    pub coder: Coder,
}

/// Which entropy coders a shared tensor may use.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Coder {
    /// The paper's Huffman coding (format version 1), or adaptive range coding (version 2 on)
    /// where it is at least 10% smaller (`RANGE_CODING_MIN_SAVING`): it decodes about ten times
    /// slower, which a phone pays at every start.
    #[default]
    Auto,
    /// Whichever of Huffman and range coding is smaller per tensor, however little it saves.
    Smallest,
    /// Huffman only: files any version-1 decoder reads.
    Huffman,
}

impl Coder {
    /// The name `--coder` takes (clap's, so the two cannot drift apart).
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_string())
    }
}

/// The fraction of a tensor's best Huffman payload that range coding must save for
/// [`Coder::Auto`] to take it. Range decoding is about ten times slower than Huffman decoding
/// and a phone pays it at every start; on a dense model's layers it saves little (on
/// EfficientNet-Lite0 it turned a load faster than tract's on the dense ONNX into a slower one
/// for 1.25% of the bytes of the layers where it won: docs/PERFORMANCE.md). On sparse layers,
/// where the gaps carry most of the bytes, it saves more.
pub const RANGE_CODING_MIN_SAVING: f64 = 0.10;

/// The encodings a shared layer can be stored with under `cfg` (the sparse Huffman layout at
/// each gap width allowed, the dense Huffman layout, and range coding unless `cfg` says
/// Huffman only), for [`choose_encoding`].
pub fn shared_candidates(layer: &SharedLayer, cfg: &CompressConfig) -> Vec<TensorData> {
    let mut dense = layer.clone();
    dense.sparse = false;
    let mut c: Vec<TensorData> = gap_widths(cfg).map(|g| layer.to_tensor_data(g)).collect();
    c.push(dense.to_tensor_data(0));
    if cfg.coder != Coder::Huffman {
        c.extend(layer.to_ac_tensor_data());
    }
    c
}

/// Encodes each candidate and keeps the one `coder` prefers: the smallest, except that
/// [`Coder::Auto`] takes a range-coded payload only where it is at least
/// [`RANGE_CODING_MIN_SAVING`] smaller than the smallest Huffman one. Returns the record and its
/// bytes (payload and row scales).
pub fn choose_encoding(
    name: &str,
    shape: &[u64],
    row_scales: Option<Vec<f32>>,
    candidates: Vec<TensorData>,
    coder: Coder,
) -> Result<(TensorRecord, u64)> {
    let mut huffman: Option<(TensorRecord, u64)> = None;
    let mut range: Option<(TensorRecord, u64)> = None;
    for data in candidates {
        let is_range = data.encoding() == Encoding::SharedSparseAc;
        if is_range && coder == Coder::Huffman {
            continue;
        }
        let rec = TensorRecord {
            row_scales: row_scales.clone(),
            name: name.to_string(),
            shape: shape.to_vec(),
            data,
        };
        let size = encode_tensor(&rec)?.0.len() as u64 + rec.row_scale_bytes();
        let best = if is_range { &mut range } else { &mut huffman };
        if best.as_ref().is_none_or(|(_, s)| size < *s) {
            *best = Some((rec, size));
        }
    }
    let chosen = match (huffman, range) {
        (Some(h), Some(r)) => {
            let needed = match coder {
                Coder::Auto => RANGE_CODING_MIN_SAVING,
                Coder::Smallest | Coder::Huffman => 0.0,
            };
            if (r.1 as f64) < h.1 as f64 * (1.0 - needed) {
                r
            } else {
                h
            }
        }
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => bail!("no encoding for {name}"),
    };
    Ok(chosen)
}

impl Default for CompressConfig {
    fn default() -> Self {
        CompressConfig {
            default_rule: PruneRule::None,
            per_layer: BTreeMap::new(),
            bits_conv: 8,
            bits_fc: 5,
            gap_bits: 0,
            init: KmeansInit::Linear,
            seed: 0,
            min_shared_elements: 256,
            raw_f16: false,
            coder: Coder::Auto,
        }
    }
}

impl CompressConfig {
    /// The paper's per-layer densities for LeNet-300-100 and LeNet-5 (Han et al. 2016, Table 2),
    /// by the layer names of the PyTorch exports.
    pub fn paper_densities(model: &str) -> Result<BTreeMap<String, PruneRule>> {
        let d: &[(&str, f64)] = match model {
            "lenet300" => &[
                ("fc1.weight", 0.08),
                ("fc2.weight", 0.09),
                ("fc3.weight", 0.26),
            ],
            "lenet5" => &[
                ("conv1.weight", 0.66),
                ("conv2.weight", 0.12),
                ("fc1.weight", 0.08),
                ("fc2.weight", 0.19),
            ],
            other => bail!("no paper densities for '{other}': use lenet300 or lenet5"),
        };
        Ok(d.iter()
            .map(|&(n, x)| (n.to_string(), PruneRule::Density(x)))
            .collect())
    }

    /// Checks every setting before any work starts.
    pub fn validate(&self) -> Result<()> {
        if self.gap_bits > 16 {
            bail!(
                "--gap-bits must be between 1 and 16 (or auto), got {}",
                self.gap_bits
            );
        }
        for (what, b) in [("--bits-conv", self.bits_conv), ("--bits-fc", self.bits_fc)] {
            if !(1..=16).contains(&b) {
                bail!("{what} must be between 1 and 16, got {b}");
            }
        }
        for (name, rule) in
            std::iter::once((&"(default)".to_string(), &self.default_rule)).chain(&self.per_layer)
        {
            match *rule {
                PruneRule::Density(d) if !(d > 0.0 && d <= 1.0) => {
                    bail!("density of {name} must be in (0, 1], got {d}")
                }
                PruneRule::Quality(q) if !(q.is_finite() && q >= 0.0) => {
                    bail!("quality of {name} must be ≥ 0, got {q}")
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// What happened to one tensor.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerReport {
    /// Initializer name.
    pub name: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Fraction kept after pruning.
    pub density: f64,
    /// Index bits (0 when stored raw).
    pub bits: u8,
    /// Encoding chosen.
    pub encoding: String,
    /// Width of the relative indices (0 unless shared-sparse).
    pub gap_bits: u8,
    /// Bytes as dense f32.
    pub dense_bytes: u64,
    /// Bytes of the encoded payload.
    pub stored_bytes: u64,
}

/// The gap widths to try for sparse tensors: the configured one, or 2–10 bits when automatic.
fn gap_widths(cfg: &CompressConfig) -> impl Iterator<Item = u8> {
    if cfg.gap_bits == 0 {
        2..=10
    } else {
        cfg.gap_bits..=cfg.gap_bits
    }
}

/// Whether a weight is pruned and shared (convolution and fully connected weights) or kept raw.
pub fn is_prunable(w: &Weight, cfg: &CompressConfig) -> bool {
    is_prunable_shape(w.shape.len(), w.values.len(), cfg)
}

/// The same rule from a tensor's rank and element count.
pub fn is_prunable_shape(rank: usize, elements: usize, cfg: &CompressConfig) -> bool {
    (rank == 2 || rank == 4) && elements >= cfg.min_shared_elements
}

/// Compresses every weight: returns the tensors to write and a report per tensor.
pub fn compress_weights(
    weights: &[Weight],
    cfg: &CompressConfig,
) -> Result<(Vec<TensorRecord>, Vec<LayerReport>)> {
    compress_weights_with(weights, cfg, &BTreeMap::new())
}

/// Like [`compress_weights`], but the tensors in `shared` are already pruned and shared (by the
/// retraining stages): they are only encoded, with the smaller of the two shared encodings.
pub fn compress_weights_with(
    weights: &[Weight],
    cfg: &CompressConfig,
    shared: &BTreeMap<String, SharedLayer>,
) -> Result<(Vec<TensorRecord>, Vec<LayerReport>)> {
    cfg.validate()?;
    for name in cfg.per_layer.keys() {
        if !weights.iter().any(|w| &w.name == name) {
            let names: Vec<&str> = weights.iter().map(|w| w.name.as_str()).collect();
            bail!(
                "the model has no weight named '{name}'; its weights are: {}",
                names.join(", ")
            );
        }
    }
    if !weights.iter().any(|w| is_prunable(w, cfg)) {
        bail!(
            "the model has no prunable tensor (convolution or fully connected weights with ≥ {} elements)",
            cfg.min_shared_elements
        );
    }
    let mut records = Vec::new();
    let mut reports = Vec::new();
    for w in weights {
        let (record, report) = if is_prunable(w, cfg) {
            let rule = cfg
                .per_layer
                .get(&w.name)
                .copied()
                .unwrap_or(cfg.default_rule);
            let bits = match shared.get(&w.name) {
                Some(layer) => layer.bits,
                None if w.shape.len() == 4 => cfg.bits_conv,
                None => cfg.bits_fc,
            };
            let candidates: Vec<TensorData> = match shared.get(&w.name) {
                Some(layer) => {
                    if layer.indices.len() != w.values.len() {
                        bail!("shared layer '{}' does not match the weight's size", w.name);
                    }
                    shared_candidates(layer, cfg)
                }
                None => {
                    let mut values = w.values.clone();
                    let mask = match rule {
                        PruneRule::None => values.iter().map(|&x| x != 0.0).collect(),
                        PruneRule::Density(d) => mask_by_density(&values, d)?,
                        PruneRule::Quality(q) => mask_by_quality(&values, q)?,
                    };
                    apply_mask(&mut values, &mask);
                    let mut c = Vec::new();
                    let layer = share_weights(&values, bits, true, cfg.init, cfg.seed)?;
                    c.extend(gap_widths(cfg).map(|g| layer.to_tensor_data(g)));
                    if cfg.coder != Coder::Huffman {
                        c.extend(layer.to_ac_tensor_data());
                    }
                    let layer = share_weights(&values, bits, false, cfg.init, cfg.seed)?;
                    c.push(layer.to_tensor_data(0));
                    c
                }
            };
            let kept = match &candidates[0] {
                TensorData::SharedSparse {
                    indices, codebook, ..
                }
                | TensorData::SharedDense {
                    indices, codebook, ..
                }
                | TensorData::SharedSparseAc {
                    indices, codebook, ..
                } => {
                    let mask: Vec<bool> = indices
                        .iter()
                        .map(|&i| codebook.get(i as usize).is_some_and(|&c| c != 0.0))
                        .collect();
                    density(&mask)
                }
                _ => 1.0,
            };
            let (rec, size) = choose_encoding(
                &w.name,
                &w.shape,
                shared.get(&w.name).and_then(|l| l.row_scales.clone()),
                candidates,
                cfg.coder,
            )?;
            let report = LayerReport {
                name: w.name.clone(),
                shape: w.shape.clone(),
                density: kept,
                bits,
                encoding: rec.data.encoding().name().into(),
                gap_bits: match &rec.data {
                    TensorData::SharedSparse { gap_bits, .. } => *gap_bits,
                    _ => 0,
                },
                dense_bytes: w.values.len() as u64 * 4,
                stored_bytes: size,
            };
            (rec, report)
        } else {
            let data = if cfg.raw_f16 {
                TensorData::RawF16(w.values.clone())
            } else {
                TensorData::RawF32(w.values.clone())
            };
            let rec = TensorRecord {
                row_scales: None,
                name: w.name.clone(),
                shape: w.shape.clone(),
                data,
            };
            let size = encode_tensor(&rec)?.0.len() as u64;
            let report = LayerReport {
                name: w.name.clone(),
                shape: w.shape.clone(),
                density: 1.0,
                bits: 0,
                encoding: rec.data.encoding().name().into(),
                gap_bits: 0,
                dense_bytes: w.values.len() as u64 * 4,
                stored_bytes: size,
            };
            (rec, report)
        };
        records.push(record);
        reports.push(report);
    }
    Ok((records, reports))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sparse 5-bit layer of `n` weights, `density` of them non-zero, with skewed indices
    /// whose spread (and, below half density, the density) drifts from block to block, as
    /// between the channels of a real layer: range coding's adaptive contexts follow the drift,
    /// one Huffman table cannot.
    fn layer(n: usize, density: f64, seed: u64) -> SharedLayer {
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let indices = (0..n)
            .map(|i| {
                let block = (i / 2000) % 2;
                let spread = [2.0, 5.0][block];
                // Sparse layers: the density drifts too (some channels are pruned far more).
                let density = if density < 0.5 {
                    density * [0.2, 1.8][block]
                } else {
                    density
                };
                if next() >= density {
                    0
                } else {
                    // Geometric over 1..=31: small indices most likely.
                    (1 + (-(next().max(1e-12)).ln() * spread) as u16).min(31)
                }
            })
            .collect();
        SharedLayer {
            codebook: (0..32).map(|i| i as f32 * 0.01).collect(),
            indices,
            bits: 5,
            sparse: true,
            row_scales: None,
        }
    }

    /// (smallest Huffman bytes, range-coded bytes, encoding each coder chooses).
    fn sizes_and_choices(l: &SharedLayer) -> (u64, u64, Vec<Encoding>) {
        let cfg = CompressConfig::default();
        let shape = [l.indices.len() as u64];
        let all = shared_candidates(l, &cfg);
        let pick = |candidates: Vec<TensorData>, coder| {
            choose_encoding("w", &shape, None, candidates, coder).unwrap()
        };
        let huffman_only: Vec<TensorData> = all
            .iter()
            .filter(|d| d.encoding() != Encoding::SharedSparseAc)
            .cloned()
            .collect();
        let ac = vec![l.to_ac_tensor_data().unwrap()];
        let choices = [Coder::Auto, Coder::Smallest, Coder::Huffman]
            .map(|coder| pick(all.clone(), coder).0.data.encoding())
            .to_vec();
        (
            pick(huffman_only, Coder::Smallest).1,
            pick(ac, Coder::Smallest).1,
            choices,
        )
    }

    #[test]
    fn auto_takes_range_coding_only_where_it_saves_enough() {
        // Three quarters non-zero: range coding saves a little, Auto keeps Huffman.
        let (huffman, range, choices) = sizes_and_choices(&layer(50_000, 0.75, 1));
        assert!(
            range < huffman && (range as f64) > huffman as f64 * (1.0 - RANGE_CODING_MIN_SAVING),
            "precondition: range coding saves under the threshold ({range} vs {huffman} B)"
        );
        assert_ne!(choices[0], Encoding::SharedSparseAc, "auto: {choices:?}");
        assert_eq!(
            choices[1],
            Encoding::SharedSparseAc,
            "smallest: {choices:?}"
        );
        assert_ne!(choices[2], Encoding::SharedSparseAc, "huffman: {choices:?}");
        // 3% non-zero: the gaps carry most of the bytes, and range coding saves far more.
        let (huffman, range, choices) = sizes_and_choices(&layer(50_000, 0.03, 2));
        assert!(
            (range as f64) < huffman as f64 * (1.0 - RANGE_CODING_MIN_SAVING),
            "precondition: {range} vs {huffman} B"
        );
        assert_eq!(choices[0], Encoding::SharedSparseAc, "auto: {choices:?}");
        assert_eq!(
            choices[1],
            Encoding::SharedSparseAc,
            "smallest: {choices:?}"
        );
        assert_ne!(choices[2], Encoding::SharedSparseAc, "huffman: {choices:?}");
    }
}
