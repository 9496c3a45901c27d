//! The `.nnz` encoder (used by the tools; phones only decode). Byte layout: `docs/FORMAT.md`.

use super::bits::BitWriter;
use super::huffman::{HuffmanEncoder, HuffmanTable, MAX_CODE_LEN, write_table};
use super::{Encoding, FORMAT_VERSION, GRAPH_ZLIB, MAGIC, MAX_RANK};
use crate::error::{NnzError, Result};
use crate::metadata::{Metadata, TensorStats};
use std::io::Write;
use std::path::Path;

/// The values of one tensor, in the encoding they are to be stored with.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Stored as f32.
    RawF32(Vec<f32>),
    /// Stored as f16 (values are rounded to the nearest f16).
    RawF16(Vec<f32>),
    /// Codebook + one index per element (`indices.len()` = element count).
    SharedDense {
        /// Shared values; at most `2^index_bits` entries.
        codebook: Vec<f32>,
        /// One codebook index per element, row-major.
        indices: Vec<u16>,
        /// Index width in bits (1–16).
        index_bits: u8,
    },
    /// Codebook with entry 0 = 0.0 + one index per element where index 0 means "pruned";
    /// stored as relative-index CSR with fixed-width gaps.
    SharedSparse {
        /// Shared values; `codebook[0]` must be `0.0`; at most `2^index_bits` entries.
        codebook: Vec<f32>,
        /// One codebook index per element (0 = zero weight), row-major.
        indices: Vec<u16>,
        /// Index width in bits (1–16).
        index_bits: u8,
        /// Gap width in bits (1–16).
        gap_bits: u8,
    },
    /// Like [`TensorData::SharedSparse`] (codebook entry 0 = 0.0, index 0 = pruned), but the
    /// non-zero entries are range-coded with adaptive contexts instead of Huffman tables.
    SharedSparseAc {
        /// Shared values; `codebook[0]` must be `0.0`; at most `2^index_bits` entries.
        codebook: Vec<f32>,
        /// One codebook index per element (0 = zero weight), row-major.
        indices: Vec<u16>,
        /// Index width in bits (1–16).
        index_bits: u8,
    },
}

impl TensorData {
    /// The encoding this data is stored with.
    pub fn encoding(&self) -> Encoding {
        match self {
            TensorData::RawF32(_) => Encoding::RawF32,
            TensorData::RawF16(_) => Encoding::RawF16,
            TensorData::SharedDense { .. } => Encoding::SharedDense,
            TensorData::SharedSparse { .. } => Encoding::SharedSparse,
            TensorData::SharedSparseAc { .. } => Encoding::SharedSparseAc,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::RawF32(v) | TensorData::RawF16(v) => v.len(),
            TensorData::SharedDense { indices, .. }
            | TensorData::SharedSparse { indices, .. }
            | TensorData::SharedSparseAc { indices, .. } => indices.len(),
        }
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A named tensor to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRecord {
    /// ONNX initializer name.
    pub name: String,
    /// Shape (row-major).
    pub shape: Vec<u64>,
    /// Values and encoding.
    pub data: TensorData,
    /// For shared encodings only: one scale per row (index of the first dimension), each
    /// multiplying the codebook values of its row at decode time (format version 4). Scales are
    /// stored as binary16: each must be an f16 value ([`super::round_row_scale`]), finite, ≥ 0.
    pub row_scales: Option<Vec<f32>>,
}

impl TensorRecord {
    /// Bytes the row scales add to the record's payload: `u32 rows` and a binary16 per row
    /// (0 without row scales).
    pub fn row_scale_bytes(&self) -> u64 {
        self.row_scales
            .as_ref()
            .map_or(0, |s| 4 + 2 * s.len() as u64)
    }
}

/// Builds a `.nnz` file.
#[derive(Debug, Clone, Default)]
pub struct NnzWriter {
    /// Metadata; `stats.tensors` is recomputed on write.
    pub metadata: Metadata,
    /// Serialized ONNX `ModelProto` without the tensors stored below.
    pub graph: Vec<u8>,
    /// Tensors, in file order.
    pub tensors: Vec<TensorRecord>,
}

impl NnzWriter {
    /// A writer with this metadata and graph, and no tensors yet.
    pub fn new(metadata: Metadata, graph: Vec<u8>) -> Self {
        NnzWriter {
            metadata,
            graph,
            tensors: Vec::new(),
        }
    }

    /// Adds a tensor after checking that it is consistent.
    pub fn push(&mut self, tensor: TensorRecord) -> Result<()> {
        validate(&tensor)?;
        if self.tensors.iter().any(|t| t.name == tensor.name) {
            return Err(NnzError::InvalidInput(format!(
                "tensor '{}' added twice",
                tensor.name
            )));
        }
        self.tensors.push(tensor);
        Ok(())
    }

    /// Encodes the whole file. The same input always gives the same bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut records = Vec::with_capacity(self.tensors.len());
        let mut stats = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            validate(t)?;
            let (record, st) = encode_record(t)?;
            records.push(record);
            stats.push(st);
        }
        let mut metadata = self.metadata.clone();
        metadata.stats.tensors = stats;
        let json = serde_json::to_vec(&metadata)
            .map_err(|e| NnzError::InvalidInput(format!("metadata: {e}")))?;

        // Version 1 unless a tensor needs more: older decoders read what they can.
        let mut version = super::required_version(self.tensors.iter().map(|t| t.data.encoding()));
        if self.tensors.iter().any(|t| t.row_scales.is_some()) {
            version = version.max(super::ROW_SCALES_VERSION);
        }
        debug_assert!(version <= FORMAT_VERSION);
        let mut body = Vec::new();
        if version >= super::DEFLATED_METADATA_VERSION {
            put_deflated(&mut body, &json);
        } else {
            put_u32(&mut body, len_u32(json.len(), "metadata")?);
            body.extend_from_slice(&json);
        }
        put_deflated(&mut body, &self.graph);
        put_u32(&mut body, len_u32(records.len(), "tensor count")?);
        for r in &records {
            body.extend_from_slice(r);
        }

        let mut file = Vec::with_capacity(24 + body.len());
        file.extend_from_slice(&MAGIC);
        file.extend_from_slice(&version.to_le_bytes());
        file.extend_from_slice(&0u16.to_le_bytes());
        file.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        put_u64(&mut file, body.len() as u64);
        file.extend_from_slice(&body);
        check_load_budget(&self.tensors, file.len() as u64)?;
        Ok(file)
    }

    /// Encodes and writes atomically: never a half-written file.
    pub fn write_file(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }
}

/// Refuses a file that the default decoder would refuse for decoding to more elements than its
/// size justifies ([`super::DecodeLimits::element_budget`]): a file that cannot be loaded is not written.
fn check_load_budget(tensors: &[TensorRecord], file_bytes: u64) -> Result<()> {
    let total: u64 = tensors
        .iter()
        .map(|t| t.shape.iter().product::<u64>())
        .fold(0, u64::saturating_add);
    let budget = super::DecodeLimits::default().element_budget(file_bytes);
    if total > budget {
        return Err(NnzError::InvalidInput(format!(
            "the tensors hold {total} elements in a {file_bytes}-byte file: decoders refuse more \
             than {budget} (docs/FORMAT.md, section 4); prune less or store the sparsest tensors \
             denser"
        )));
    }
    Ok(())
}

/// Appends `data` zlib-deflated: codec, inflated length, stored length, bytes (the graph's
/// layout, and the metadata's from version 3).
fn put_deflated(body: &mut Vec<u8>, data: &[u8]) {
    let deflated = miniz_oxide::deflate::compress_to_vec_zlib(data, 9);
    body.push(GRAPH_ZLIB);
    put_u64(body, data.len() as u64);
    put_u64(body, deflated.len() as u64);
    body.extend_from_slice(&deflated);
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so an error
/// or an interruption never leaves a partial file behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| NnzError::Io { path: p, source }
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn len_u32(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| NnzError::InvalidInput(format!("{what} too large ({n})")))
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn validate(t: &TensorRecord) -> Result<()> {
    let bad = |m: String| NnzError::InvalidInput(format!("tensor '{}': {m}", t.name));
    if t.name.len() > u16::MAX as usize {
        return Err(bad("name longer than 65535 bytes".into()));
    }
    if t.shape.len() > MAX_RANK {
        return Err(bad(format!("rank {} over {}", t.shape.len(), MAX_RANK)));
    }
    let n = t
        .shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad("shape overflows".into()))?;
    if n != t.data.len() as u64 {
        return Err(bad(format!(
            "shape {:?} has {n} elements, data has {}",
            t.shape,
            t.data.len()
        )));
    }
    let check_codebook = |codebook: &[f32], indices: &[u16], bits: u8| -> Result<()> {
        if !(1..=16).contains(&bits) {
            return Err(bad(format!("index bits must be 1–16, got {bits}")));
        }
        if codebook.is_empty() || codebook.len() > 1 << bits {
            return Err(bad(format!(
                "codebook has {} entries, {bits}-bit indices allow 1–{}",
                codebook.len(),
                1u32 << bits
            )));
        }
        if codebook.iter().any(|v| !v.is_finite()) {
            return Err(bad("codebook has a non-finite value".into()));
        }
        if let Some(i) = indices.iter().find(|&&i| i as usize >= codebook.len()) {
            return Err(bad(format!(
                "index {i} outside the codebook of {}",
                codebook.len()
            )));
        }
        Ok(())
    };
    if let Some(scales) = &t.row_scales {
        if matches!(t.data, TensorData::RawF32(_) | TensorData::RawF16(_)) {
            return Err(bad("row scales apply to shared encodings only".into()));
        }
        if t.shape.first() != Some(&(scales.len() as u64)) {
            return Err(bad(format!(
                "{} row scales for shape {:?} (one per index of the first dimension)",
                scales.len(),
                t.shape
            )));
        }
        if let Some(s) = scales
            .iter()
            .find(|&&s| !(s.is_finite() && s >= 0.0 && super::round_row_scale(s) == s))
        {
            return Err(bad(format!(
                "row scale {s} is not a finite, non-negative binary16 value (round_row_scale)"
            )));
        }
    }
    match &t.data {
        TensorData::RawF32(_) | TensorData::RawF16(_) => Ok(()),
        TensorData::SharedDense {
            codebook,
            indices,
            index_bits,
        } => check_codebook(codebook, indices, *index_bits),
        TensorData::SharedSparse {
            codebook,
            indices,
            index_bits,
            gap_bits,
        } => {
            check_codebook(codebook, indices, *index_bits)?;
            if !(1..=16).contains(gap_bits) {
                return Err(bad(format!("gap bits must be 1–16, got {gap_bits}")));
            }
            if codebook[0].to_bits() != 0 {
                return Err(bad(
                    "codebook[0] of a shared-sparse tensor must be 0.0".into()
                ));
            }
            Ok(())
        }
        TensorData::SharedSparseAc {
            codebook,
            indices,
            index_bits,
        } => {
            check_codebook(codebook, indices, *index_bits)?;
            if codebook[0].to_bits() != 0 {
                return Err(bad(
                    "codebook[0] of a shared-sparse-ac tensor must be 0.0".into()
                ));
            }
            Ok(())
        }
    }
}

/// The `(gap, index)` entries of a shared-sparse tensor, with fillers, per FORMAT.md.
pub fn sparse_entries(indices: &[u16], gap_bits: u8) -> Vec<(u16, u16)> {
    let max_gap = (1u64 << gap_bits) - 1;
    let mut entries = Vec::new();
    let mut last: i64 = -1;
    for (p, &idx) in indices.iter().enumerate() {
        if idx == 0 {
            continue;
        }
        let p = p as i64;
        while (p - last - 1) as u64 > max_gap {
            entries.push((max_gap as u16, 0));
            last += max_gap as i64 + 1;
        }
        entries.push(((p - last - 1) as u16, idx));
        last = p;
    }
    // The trailing run of zeros must be shorter than 2^b, so a decoder can bound the tensor
    // size by the entry count before allocating.
    let n = indices.len() as i64;
    while (n - 1 - last) as u64 > max_gap {
        entries.push((max_gap as u16, 0));
        last += max_gap as i64 + 1;
    }
    entries
}

fn huffman_for(
    symbols: impl Iterator<Item = u16>,
    alphabet: usize,
) -> Result<(HuffmanTable, Vec<u64>)> {
    let mut counts = vec![0u64; alphabet];
    for s in symbols {
        counts[s as usize] += 1;
    }
    Ok((
        HuffmanTable::from_frequencies(&counts, MAX_CODE_LEN)?,
        counts,
    ))
}

fn stream(symbols: impl Iterator<Item = u16>, table: &HuffmanTable) -> Result<Vec<u8>> {
    let enc = HuffmanEncoder::new(table);
    let mut w = BitWriter::new();
    for s in symbols {
        enc.encode(&mut w, s)?;
    }
    Ok(w.finish())
}

/// Writes `u32 k` then the `k` codebook values as f32.
fn put_codebook(p: &mut Vec<u8>, codebook: &[f32]) {
    put_u32(p, codebook.len() as u32);
    for c in codebook {
        p.extend_from_slice(&c.to_le_bytes());
    }
}

/// Encodes one tensor's values in its encoding (the payload after any row scales, which the
/// record adds) and its statistics.
pub fn encode_tensor(tensor: &TensorRecord) -> Result<(Vec<u8>, TensorStats)> {
    validate(tensor)?;
    let n = tensor.data.len();
    let mut p = Vec::new();
    let mut st = TensorStats {
        name: tensor.name.clone(),
        shape: tensor.shape.clone(),
        encoding: tensor.data.encoding().name().to_string(),
        original_bytes: n as u64 * 4,
        ..Default::default()
    };
    let nonzero = |c: &[f32], idx: &[u16]| idx.iter().filter(|&&i| c[i as usize] != 0.0).count();
    match &tensor.data {
        TensorData::RawF32(v) => {
            for x in v {
                p.extend_from_slice(&x.to_le_bytes());
            }
            st.bits = 32;
            st.density = v.iter().filter(|&&x| x != 0.0).count() as f64 / n.max(1) as f64;
        }
        TensorData::RawF16(v) => {
            for x in v {
                p.extend_from_slice(&half::f16::from_f32(*x).to_le_bytes());
            }
            st.bits = 16;
            st.density = v.iter().filter(|&&x| x != 0.0).count() as f64 / n.max(1) as f64;
        }
        TensorData::SharedDense {
            codebook,
            indices,
            index_bits,
        } => {
            p.push(*index_bits);
            put_codebook(&mut p, codebook);
            let (table, _) = huffman_for(indices.iter().copied(), codebook.len())?;
            write_table(&mut p, &table);
            let s = stream(indices.iter().copied(), &table)?;
            put_u64(&mut p, s.len() as u64);
            p.extend_from_slice(&s);
            st.bits = *index_bits;
            st.codebook_size = codebook.len() as u32;
            st.density = nonzero(codebook, indices) as f64 / n.max(1) as f64;
        }
        TensorData::SharedSparse {
            codebook,
            indices,
            index_bits,
            gap_bits,
        } => {
            let entries = sparse_entries(indices, *gap_bits);
            p.push(*index_bits);
            p.push(*gap_bits);
            put_codebook(&mut p, codebook);
            put_u64(&mut p, entries.len() as u64);
            let (itable, _) = huffman_for(entries.iter().map(|e| e.1), codebook.len())?;
            let (gtable, _) = huffman_for(entries.iter().map(|e| e.0), 1 << gap_bits)?;
            write_table(&mut p, &itable);
            write_table(&mut p, &gtable);
            let is = stream(entries.iter().map(|e| e.1), &itable)?;
            let gs = stream(entries.iter().map(|e| e.0), &gtable)?;
            put_u64(&mut p, is.len() as u64);
            p.extend_from_slice(&is);
            put_u64(&mut p, gs.len() as u64);
            p.extend_from_slice(&gs);
            st.bits = *index_bits;
            st.gap_bits = *gap_bits;
            st.codebook_size = codebook.len() as u32;
            st.density = nonzero(codebook, indices) as f64 / n.max(1) as f64;
            st.fillers = entries.iter().filter(|e| e.1 == 0).count() as u64;
        }
        TensorData::SharedSparseAc {
            codebook,
            indices,
            index_bits,
        } => {
            p.push(*index_bits);
            put_codebook(&mut p, codebook);
            let (m, stream) = super::range::encode_entries(indices, *index_bits);
            put_u64(&mut p, m);
            put_u64(&mut p, stream.len() as u64);
            p.extend_from_slice(&stream);
            st.bits = *index_bits;
            st.gap_bits = super::range::AC_GAP_BITS as u8;
            st.codebook_size = codebook.len() as u32;
            st.density = nonzero(codebook, indices) as f64 / n.max(1) as f64;
            st.fillers = m - indices.iter().filter(|&&i| i != 0).count() as u64;
        }
    }
    Ok((p, st))
}

/// Encodes a whole tensor record (header + payload).
fn encode_record(t: &TensorRecord) -> Result<(Vec<u8>, TensorStats)> {
    let (payload, mut st) = encode_tensor(t)?;
    let mut r = Vec::with_capacity(payload.len() + 64);
    r.extend_from_slice(&(t.name.len() as u16).to_le_bytes());
    r.extend_from_slice(t.name.as_bytes());
    let flag = if t.row_scales.is_some() {
        super::ROW_SCALED
    } else {
        0
    };
    r.push(t.data.encoding() as u8 | flag);
    r.push(t.shape.len() as u8);
    for &d in &t.shape {
        put_u64(&mut r, d);
    }
    // Row scales lead the payload: `u32 rows`, then one binary16 per row.
    put_u64(&mut r, t.row_scale_bytes() + payload.len() as u64);
    if let Some(scales) = &t.row_scales {
        put_u32(&mut r, len_u32(scales.len(), "row scales")?);
        for &s in scales {
            r.extend_from_slice(&half::f16::from_f32(s).to_le_bytes());
        }
        st.row_scales = scales.len() as u64;
    }
    r.extend_from_slice(&payload);
    st.compressed_bytes = r.len() as u64;
    Ok((r, st))
}
