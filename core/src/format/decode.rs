//! The `.nnz` decoder. Every byte is hostile: each length is checked against the bytes that are
//! really there and against [`DecodeLimits`] before anything is allocated, every table is
//! validated, every loop is bounded by the input. Byte layout: `docs/FORMAT.md`.

use super::bits::BitReader;
use super::huffman::{HuffmanDecoder, HuffmanTable};
use super::range::{AC_GAP_BITS, AC_MAX_ENTRIES_PER_BYTE, EntryModel, RangeDecoder};
use super::{DecodeLimits, Encoding, FORMAT_VERSION, GRAPH_STORED, GRAPH_ZLIB, MAGIC, MAX_RANK};
use crate::error::{NnzError, Result};
use crate::metadata::Metadata;

/// Bytes of the fixed header.
pub const HEADER_BYTES: usize = 24;

/// A cursor over the file that turns every short read into a `Truncated` error with the offset.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of `data[0]` in the file, for error messages.
    base: u64,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8], base: u64) -> Self {
        Cursor { data, pos: 0, base }
    }
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() as u64 {
            return Err(NnzError::Truncated {
                at: self.base + self.data.len() as u64,
                what: what.to_string(),
                needed: n - self.remaining() as u64,
            });
        }
        let n = n as usize;
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N as u64, what)?);
        Ok(a)
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }
}

/// The fixed header of a `.nnz` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u16,
    /// Flags (0 in version 1).
    pub flags: u16,
    /// CRC-32 (IEEE) of the body.
    pub checksum: u32,
    /// Bytes after the header.
    pub body_len: u64,
}

/// Reads and checks the header: magic, version, length, checksum.
pub fn read_header(bytes: &[u8]) -> Result<Header> {
    let header = read_header_unverified(bytes)?;
    verify_checksum(bytes, &header)?;
    Ok(header)
}

/// Checks that the body of `bytes` has `header`'s CRC-32: a flipped bit anywhere after the
/// header is detected here.
pub fn verify_checksum(bytes: &[u8], header: &Header) -> Result<()> {
    let actual = crc32fast::hash(bytes.get(HEADER_BYTES..).unwrap_or_default());
    if actual != header.checksum {
        return Err(NnzError::ChecksumMismatch {
            expected: header.checksum,
            actual,
        });
    }
    Ok(())
}

/// Reads and checks the header's magic, version, flags and length, but not the checksum (for
/// callers that verify it with [`verify_checksum`] alongside other work).
pub fn read_header_unverified(bytes: &[u8]) -> Result<Header> {
    let head = &bytes[..bytes.len().min(MAGIC.len())];
    if head != &MAGIC[..head.len()] {
        return Err(NnzError::NotNnz);
    }
    let mut c = Cursor::new(bytes, 0);
    c.bytes(MAGIC.len() as u64, "the magic")?;
    let version = c.u16("the format version")?;
    if version == 0 || version > FORMAT_VERSION {
        return Err(NnzError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let flags = c.u16("the header flags")?;
    let checksum = c.u32("the header checksum")?;
    let body_len = c.u64("the body length")?;
    if flags != 0 {
        return Err(NnzError::malformed(format!(
            "unknown header flags {flags:#06x}"
        )));
    }
    let actual_body = (bytes.len() - HEADER_BYTES) as u64;
    if actual_body < body_len {
        return Err(NnzError::Truncated {
            at: bytes.len() as u64,
            what: format!("the body ({body_len} bytes declared)"),
            needed: body_len - actual_body,
        });
    }
    if actual_body > body_len {
        return Err(NnzError::malformed(format!(
            "{} trailing bytes after the declared body",
            actual_body - body_len
        )));
    }
    Ok(Header {
        version,
        flags,
        checksum,
        body_len,
    })
}

/// Reads a block stored as `codec, inflated_len, stored_len, bytes` (the graph; the metadata
/// from version 3) and returns it inflated, refusing more than `limit` bytes before inflating.
fn read_deflated(c: &mut Cursor<'_>, what: &str, limit: u64) -> Result<Vec<u8>> {
    let codec = c.u8(&format!("the {what} codec"))?;
    let inflated_len = c.u64(&format!("the {what} length"))?;
    let stored_len = c.u64(&format!("the stored {what} length"))?;
    if inflated_len > limit {
        return Err(NnzError::LimitExceeded(format!(
            "{what} of {inflated_len} bytes (limit {limit})"
        )));
    }
    let stored = c.bytes(stored_len, &format!("the {what}"))?;
    match codec {
        GRAPH_STORED if stored_len == inflated_len => Ok(stored.to_vec()),
        GRAPH_STORED => Err(NnzError::malformed(format!(
            "stored {what} length differs from its declared length"
        ))),
        GRAPH_ZLIB => {
            let g = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(
                stored,
                inflated_len as usize,
            )
            .map_err(|e| NnzError::malformed(format!("{what} does not inflate: {:?}", e.status)))?;
            if g.len() as u64 != inflated_len {
                return Err(NnzError::malformed(format!(
                    "{what} inflates to {} bytes, {inflated_len} declared",
                    g.len()
                )));
            }
            Ok(g)
        }
        other => Err(NnzError::malformed(format!("unknown {what} codec {other}"))),
    }
}

/// A verified, indexed `.nnz` file: header checked, checksum verified, metadata parsed, graph
/// inflated, tensor records located and sized. Tensor payloads are decoded on demand, straight
/// into the caller's buffer.
#[derive(Debug)]
pub struct NnzReader<'a> {
    header: Header,
    metadata: Metadata,
    graph: Vec<u8>,
    tensors: Vec<TensorView<'a>>,
}

impl<'a> NnzReader<'a> {
    /// Parses with [`DecodeLimits::default`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        Self::parse_with_limits(bytes, DecodeLimits::default())
    }

    /// Parses, refusing anything over `limits`.
    pub fn parse_with_limits(bytes: &'a [u8], limits: DecodeLimits) -> Result<Self> {
        let header = read_header(bytes)?;
        Self::index(bytes, header, limits)
    }

    /// As [`NnzReader::parse_with_limits`], without the checksum: only for callers that run
    /// [`verify_checksum`] themselves (on another thread, say) and discard everything read
    /// here when it fails. The rest of the file is checked as always: nothing here relies on the
    /// checksum for safety.
    pub fn parse_unverified(bytes: &'a [u8], limits: DecodeLimits) -> Result<Self> {
        let header = read_header_unverified(bytes)?;
        Self::index(bytes, header, limits)
    }

    fn index(bytes: &'a [u8], header: Header, limits: DecodeLimits) -> Result<Self> {
        let mut c = Cursor::new(&bytes[HEADER_BYTES..], HEADER_BYTES as u64);

        let metadata_json;
        let json: &[u8] = if header.version >= super::DEFLATED_METADATA_VERSION {
            metadata_json = read_deflated(&mut c, "metadata", limits.max_metadata_bytes)?;
            &metadata_json
        } else {
            let meta_len = c.u32("the metadata length")?;
            if u64::from(meta_len) > limits.max_metadata_bytes {
                return Err(NnzError::LimitExceeded(format!(
                    "metadata of {meta_len} bytes (limit {})",
                    limits.max_metadata_bytes
                )));
            }
            c.bytes(u64::from(meta_len), "the metadata")?
        };
        let metadata: Metadata = serde_json::from_slice(json)
            .map_err(|e| NnzError::malformed(format!("metadata: {e}")))?;
        let graph = read_deflated(&mut c, "graph", limits.max_graph_bytes)?;

        let count = u64::from(c.u32("the tensor count")?);
        // A record is at least 12 bytes: name length, encoding, rank, payload length.
        if count > limits.max_tensors || count > c.remaining() as u64 / 12 {
            return Err(NnzError::LimitExceeded(format!(
                "{count} tensors declared in {} bytes (limit {})",
                c.remaining(),
                limits.max_tensors
            )));
        }
        let mut tensors: Vec<TensorView<'a>> = Vec::with_capacity(count as usize);
        let mut total: u64 = 0;
        let budget = limits.element_budget(bytes.len() as u64);
        for _ in 0..count {
            let offset = c.offset();
            let name_len = c.u16("a tensor name length")?;
            let name = std::str::from_utf8(c.bytes(u64::from(name_len), "a tensor name")?)
                .map_err(|_| {
                    NnzError::malformed(format!("tensor name at byte {offset} is not UTF-8"))
                })?
                .to_string();
            let enc_byte = c.u8("a tensor encoding")?;
            let row_scaled = enc_byte & super::ROW_SCALED != 0;
            let base = enc_byte & !super::ROW_SCALED;
            let encoding = Encoding::from_byte(base).ok_or_else(|| {
                NnzError::bad_tensor(&name, format!("unknown encoding {enc_byte}"))
            })?;
            if row_scaled && header.version < super::ROW_SCALES_VERSION {
                return Err(NnzError::bad_tensor(
                    &name,
                    format!(
                        "row scales need format version {}, the file says {}",
                        super::ROW_SCALES_VERSION,
                        header.version
                    ),
                ));
            }
            if row_scaled && matches!(encoding, Encoding::RawF32 | Encoding::RawF16) {
                return Err(NnzError::bad_tensor(
                    &name,
                    format!("row scales on a {} tensor", encoding.name()),
                ));
            }
            if encoding.since_version() > header.version {
                return Err(NnzError::bad_tensor(
                    &name,
                    format!(
                        "encoding {} needs format version {}, the file says {}",
                        encoding.name(),
                        encoding.since_version(),
                        header.version
                    ),
                ));
            }
            let rank = c.u8("a tensor rank")? as usize;
            if rank > MAX_RANK {
                return Err(NnzError::bad_tensor(
                    &name,
                    format!("rank {rank} over {MAX_RANK}"),
                ));
            }
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                shape.push(c.u64("a tensor dimension")?);
            }
            let n = shape
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| NnzError::bad_tensor(&name, format!("shape {shape:?} overflows")))?;
            if n > limits.max_tensor_elements {
                return Err(NnzError::LimitExceeded(format!(
                    "tensor '{name}' declares {n} elements (limit {})",
                    limits.max_tensor_elements
                )));
            }
            // An empty tensor's element count says nothing of its dimensions: `[10^10, 0]` holds
            // no element, yet kernels and tract size tables and packed panels by each dimension
            // (the phone-path fuzzer found both). No dimension may be longer than a tensor may be.
            if let Some(&d) = shape.iter().find(|&&d| d > limits.max_tensor_elements) {
                return Err(NnzError::LimitExceeded(format!(
                    "tensor '{name}' has a dimension of {d} in shape {shape:?}, longer than a \
                     tensor may be (limit {} elements)",
                    limits.max_tensor_elements
                )));
            }
            total = total.saturating_add(n);
            if total > budget {
                return Err(NnzError::LimitExceeded(format!(
                    "the tensors declare {total} elements in all, more than a {}-byte file may \
                     decode to (limit {budget}: {} per byte, at least {}, at most {})",
                    bytes.len(),
                    limits.max_elements_per_file_byte,
                    limits.min_element_budget,
                    limits.max_total_elements
                )));
            }
            let payload_len = c.u64("a tensor payload length")?;
            let payload = c.bytes(payload_len, &format!("tensor '{name}'"))?;
            // Row scales are read (and checked) once, here; the view keeps them.
            let (row_scales, values) = if row_scaled {
                let (scales, values) = split_row_scales(&name, &shape, payload)?;
                (Some(scales), values)
            } else {
                (None, payload)
            };
            check_size(&name, encoding, n, values)?;
            if tensors.iter().any(|t| t.name == name) {
                return Err(NnzError::bad_tensor(&name, "defined twice"));
            }
            tensors.push(TensorView {
                name,
                shape,
                encoding,
                row_scales,
                offset,
                record_bytes: c.offset() - offset,
                payload,
            });
        }
        if c.remaining() != 0 {
            return Err(NnzError::malformed(format!(
                "{} unexplained bytes after the last tensor",
                c.remaining()
            )));
        }
        Ok(NnzReader {
            header,
            metadata,
            graph,
            tensors,
        })
    }

    /// The header.
    pub fn header(&self) -> Header {
        self.header
    }
    /// Format version of the file.
    pub fn version(&self) -> u16 {
        self.header.version
    }
    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    /// The serialized ONNX graph (inflated).
    pub fn graph(&self) -> &[u8] {
        &self.graph
    }
    /// The tensor records, in file order.
    pub fn tensors(&self) -> &[TensorView<'a>] {
        &self.tensors
    }
}

/// Checks, before anything is allocated, that a payload can hold `n` elements: the bytes the
/// file really has must justify the buffer a caller will allocate.
fn check_size(name: &str, encoding: Encoding, n: u64, payload: &[u8]) -> Result<()> {
    let too_big = |why: String| {
        Err(NnzError::bad_tensor(
            name,
            format!("declares {n} elements, {why}"),
        ))
    };
    let len = payload.len() as u64;
    match encoding {
        Encoding::RawF32 if len != n * 4 => {
            too_big(format!("raw-f32 needs {} bytes, the file has {len}", n * 4))
        }
        Encoding::RawF16 if len != n * 2 => {
            too_big(format!("raw-f16 needs {} bytes, the file has {len}", n * 2))
        }
        Encoding::RawF32 | Encoding::RawF16 => Ok(()),
        // Every element costs at least one bit.
        Encoding::SharedDense if n > len.saturating_mul(8) => {
            too_big(format!("its {len} bytes hold at most {} codes", len * 8))
        }
        Encoding::SharedDense => Ok(()),
        Encoding::SharedSparse => {
            let mut c = Cursor::new(payload, 0);
            c.u8("index bits")?;
            let gap_bits = c.u8("gap bits")?;
            if !(1..=16).contains(&gap_bits) {
                return Err(NnzError::bad_tensor(
                    name,
                    format!("gap bits {gap_bits} outside 1–16"),
                ));
            }
            let k = c.u32("codebook size")?;
            c.bytes(u64::from(k).saturating_mul(4), "the codebook")?;
            let m = c.u64("entry count")?;
            // Each entry costs at least one bit in each of its two streams.
            if m > len.saturating_mul(8) {
                return Err(NnzError::bad_tensor(
                    name,
                    format!("declares {m} entries in {len} bytes"),
                ));
            }
            // Each entry advances at most 2^gap_bits positions and the trailing zero run is
            // shorter than 2^gap_bits.
            let reach = (m + 1).saturating_mul(1 << gap_bits);
            if n > reach {
                too_big(format!("its {m} entries reach at most {reach}"))
            } else {
                Ok(())
            }
        }
        Encoding::SharedSparseAc => {
            let (m, stream_len) = ac_header(&mut Cursor::new(payload, 0))?;
            let most = (stream_len + 1).saturating_mul(AC_MAX_ENTRIES_PER_BYTE);
            if m > most || m > n {
                return Err(NnzError::bad_tensor(
                    name,
                    format!("declares {m} entries for {n} elements in a {stream_len}-byte stream"),
                ));
            }
            let reach = (m + 1).saturating_mul(1 << AC_GAP_BITS);
            if n > reach {
                too_big(format!("its {m} entries reach at most {reach}"))
            } else {
                Ok(())
            }
        }
    }
}

/// Splits a row-scaled payload into its scales (`u32 rows` = the first dimension, then one
/// binary16 per row, each finite and ≥ 0) and the encoded values that follow.
fn split_row_scales<'a>(
    name: &str,
    shape: &[u64],
    payload: &'a [u8],
) -> Result<(Vec<f32>, &'a [u8])> {
    let mut c = Cursor::new(payload, 0);
    let tensor_err = |e: NnzError| NnzError::bad_tensor(name, e.to_string());
    let rows = c.u32("the row-scale count").map_err(tensor_err)?;
    if shape.first() != Some(&u64::from(rows)) {
        return Err(NnzError::bad_tensor(
            name,
            format!("{rows} row scales for shape {shape:?}"),
        ));
    }
    let raw = c
        .bytes(u64::from(rows) * 2, "the row scales")
        .map_err(tensor_err)?;
    let scales: Vec<f32> = raw
        .chunks_exact(2)
        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect();
    if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
        return Err(NnzError::bad_tensor(
            name,
            format!("row scale {s} is not finite and non-negative"),
        ));
    }
    Ok((scales, &payload[c.pos..]))
}

/// The entry count and stream length of a `shared-sparse-ac` payload (codebook skipped).
fn ac_header(c: &mut Cursor<'_>) -> Result<(u64, u64)> {
    c.u8("index bits")?;
    let k = c.u32("codebook size")?;
    c.bytes(u64::from(k).saturating_mul(4), "the codebook")?;
    let m = c.u64("entry count")?;
    let len = c.u64("a stream length")?;
    Ok((m, len))
}

/// One tensor record of a parsed file; its payload is decoded on demand.
#[derive(Debug, Clone)]
pub struct TensorView<'a> {
    /// Tensor name.
    pub name: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Encoding of the values.
    pub encoding: Encoding,
    /// The row scales that lead the payload (format version 4), as read and checked at parse
    /// time; `None` for a tensor without them.
    pub row_scales: Option<Vec<f32>>,
    /// Byte offset of the record in the file.
    pub offset: u64,
    /// Total bytes of the record (header + payload).
    pub record_bytes: u64,
    pub(crate) payload: &'a [u8],
}

impl TensorView<'_> {
    /// Number of elements (the product of the shape, checked against the limits at parse time).
    pub fn element_count(&self) -> usize {
        self.shape.iter().product::<u64>() as usize
    }
    /// The payload bytes (the row scales first, for a row-scaled tensor).
    pub fn payload(&self) -> &[u8] {
        self.payload
    }
    /// Decodes into `out`, which must have exactly `element_count()` elements.
    pub fn decode_into(&self, out: &mut [f32]) -> Result<()> {
        if out.len() != self.element_count() {
            return Err(NnzError::bad_tensor(
                &self.name,
                format!(
                    "output buffer has {} elements, tensor has {}",
                    out.len(),
                    self.element_count()
                ),
            ));
        }
        let Some(scales) = &self.row_scales else {
            return decode_payload(&self.name, self.encoding, self.payload, out);
        };
        // The encoded values follow `u32 rows` and a binary16 per row (checked at parse time).
        let values = self.payload.get(4 + 2 * scales.len()..).ok_or_else(|| {
            NnzError::bad_tensor(&self.name, "payload shorter than its row scales")
        })?;
        decode_payload_scaled(&self.name, self.encoding, values, Some(scales), out)
    }
    /// Decodes into a new vector.
    pub fn decode(&self) -> Result<Vec<f32>> {
        let mut v = vec![0.0; self.element_count()];
        self.decode_into(&mut v)?;
        Ok(v)
    }
}

fn read_codebook(c: &mut Cursor<'_>, name: &str, bits: u8) -> Result<Vec<f32>> {
    if !(1..=16).contains(&bits) {
        return Err(NnzError::bad_tensor(
            name,
            format!("index bits {bits} outside 1–16"),
        ));
    }
    let k = c.u32("codebook size")?;
    if k == 0 || u64::from(k) > 1u64 << bits {
        return Err(NnzError::bad_tensor(
            name,
            format!("codebook of {k} entries with {bits}-bit indices"),
        ));
    }
    let raw = c.bytes(u64::from(k) * 4, "the codebook")?;
    let cb: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if cb.iter().any(|v| !v.is_finite()) {
        return Err(NnzError::bad_tensor(
            name,
            "codebook has a non-finite value",
        ));
    }
    Ok(cb)
}

fn read_table(c: &mut Cursor<'_>, name: &str, alphabet: u64, what: &str) -> Result<HuffmanTable> {
    let m = u64::from(c.u32("a Huffman table size")?);
    if m > alphabet {
        return Err(NnzError::bad_tensor(
            name,
            format!("{what} Huffman table has {m} lengths for {alphabet} symbols"),
        ));
    }
    let lengths = c.bytes(m, "a Huffman table")?;
    HuffmanTable::from_lengths(lengths)
        .map_err(|e| NnzError::bad_tensor(name, format!("{what}: {e}")))
}

fn read_stream<'a>(c: &mut Cursor<'a>) -> Result<&'a [u8]> {
    let len = c.u64("a stream length")?;
    c.bytes(len, "a Huffman stream")
}

/// Huffman symbols decoded per batch: the scratch buffers stay in the L1/L2 cache.
const SYMBOL_CHUNK: usize = 4096;

/// Copies little-endian f32 bytes into `out` (`b.len() == 4 · out.len()`). On little-endian
/// targets (every phone) that is one memory copy at memory speed, where an element-wise loop
/// spends instructions on every weight (docs/PERFORMANCE.md has what it cost LeNet-5's load).
fn copy_le_f32(b: &[u8], out: &mut [f32]) {
    debug_assert_eq!(b.len(), out.len() * 4);
    if cfg!(target_endian = "little") {
        // SAFETY: the same `size_of_val(out)` writable bytes that `out` borrows mutably (f32 has
        // no padding, u8 needs no alignment), for this call only; every bit pattern is a valid
        // f32, and every byte is written.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                out.as_mut_ptr().cast::<u8>(),
                std::mem::size_of_val(out),
            )
        };
        bytes.copy_from_slice(b);
    } else {
        for (o, ch) in out.iter_mut().zip(b.chunks_exact(4)) {
            *o = f32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]);
        }
    }
}

/// Decodes one tensor payload of the given encoding into `out` (whose length is the element
/// count). On success every element of `out` has been written (sparse encodings zero-fill
/// first), whatever it held before: the runtime decodes into buffers it did not zero. Exposed on
/// its own for fuzzing and benchmarks.
pub fn decode_payload(
    name: &str,
    encoding: Encoding,
    payload: &[u8],
    out: &mut [f32],
) -> Result<()> {
    decode_payload_scaled(name, encoding, payload, None, out)
}

/// Multiplies each row of `values` (rows of `row_len` values, the first being row `first_row`)
/// by its scale.
fn scale_rows(values: &mut [f32], first_row: usize, row_len: usize, scales: &[f32]) {
    for (row, &s) in values.chunks_mut(row_len).zip(&scales[first_row..]) {
        row.iter_mut().for_each(|v| *v *= s);
    }
}

/// As [`decode_payload`], each row of the result (one index of the first dimension:
/// `out.len() / scales.len()` values, `scales.len()` dividing the element count) multiplied by
/// its scale where `scales` are given. A shared-dense tensor is scaled as it is decoded, a
/// chunk of rows at a time while they are in the cache.
fn decode_payload_scaled(
    name: &str,
    encoding: Encoding,
    payload: &[u8],
    scales: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    let n = out.len();
    // Values per row, and whole rows per decoded chunk (at least one).
    let row_len = scales.map_or(n, |s| n / s.len().max(1)).max(1);
    let chunk = SYMBOL_CHUNK.div_ceil(row_len) * row_len;
    let tensor_err = |e: NnzError| match e {
        NnzError::BadTensor { .. } => e,
        other => NnzError::bad_tensor(name, other.to_string()),
    };
    let mut c = Cursor::new(payload, 0);
    match encoding {
        Encoding::RawF32 => {
            let b = c
                .bytes(n as u64 * 4, "raw-f32 values")
                .map_err(tensor_err)?;
            copy_le_f32(b, out);
        }
        Encoding::RawF16 => {
            let b = c
                .bytes(n as u64 * 2, "raw-f16 values")
                .map_err(tensor_err)?;
            for (o, ch) in out.iter_mut().zip(b.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([ch[0], ch[1]]).to_f32();
            }
        }
        Encoding::SharedDense => {
            let bits = c.u8("index bits").map_err(tensor_err)?;
            let cb = read_codebook(&mut c, name, bits)?;
            let table = read_table(&mut c, name, cb.len() as u64, "index").map_err(tensor_err)?;
            let s = read_stream(&mut c).map_err(tensor_err)?;
            if n as u64 > s.len() as u64 * 8 {
                return Err(NnzError::bad_tensor(
                    name,
                    format!("{n} codes cannot fit in {} bytes", s.len()),
                ));
            }
            if n > 0 {
                let dec = HuffmanDecoder::new(&table).map_err(tensor_err)?;
                let mut r = BitReader::new(s);
                // Symbols are < table size ≤ codebook size: the index is always in range.
                let value = |sym: u16| cb.get(usize::from(sym)).copied().unwrap_or(0.0);
                for (i, values) in out.chunks_mut(chunk).enumerate() {
                    dec.decode_mapped(&mut r, values, value)
                        .map_err(tensor_err)?;
                    if let Some(scales) = scales {
                        scale_rows(values, i * chunk / row_len, row_len, scales);
                    }
                }
            }
        }
        Encoding::SharedSparse | Encoding::SharedSparseAc => {
            out.fill(0.0);
            walk_sparse(&mut c, name, encoding, n, |position, value, _| {
                if let Some(o) = out.get_mut(position) {
                    *o = value;
                }
            })?;
            if let Some(scales) = scales {
                scale_rows(out, 0, row_len, scales);
            }
        }
    }
    if matches!(encoding, Encoding::RawF32 | Encoding::RawF16)
        && let Some(scales) = scales
    {
        // The parser refuses row scales on a raw tensor; scaled all the same if one got here.
        scale_rows(out, 0, row_len, scales);
    }
    if c.remaining() != 0 {
        return Err(NnzError::bad_tensor(
            name,
            format!(
                "{} unexplained bytes at the end of the payload",
                c.remaining()
            ),
        ));
    }
    Ok(())
}

/// A sparse encoding's codebook, whose entry 0 must be 0.0 (the value of the positions no
/// entry names, and of filler entries).
fn read_sparse_codebook(
    c: &mut Cursor<'_>,
    name: &str,
    bits: u8,
    encoding: Encoding,
) -> Result<Vec<f32>> {
    let cb = read_codebook(c, name, bits)?;
    if cb[0].to_bits() != 0 {
        return Err(NnzError::bad_tensor(
            name,
            format!("codebook[0] of a {} tensor is not 0.0", encoding.name()),
        ));
    }
    Ok(cb)
}

/// Reads a shared-sparse or shared-sparse-ac payload from `c` (after its encoding byte) and
/// calls `visit(position, value, index)` for each stored entry in increasing position order,
/// filler entries (index 0, value 0.0) included, after checking that the position lies within
/// the tensor's `n` elements and the index within the codebook. Returns the codebook.
fn walk_sparse(
    c: &mut Cursor<'_>,
    name: &str,
    encoding: Encoding,
    n: usize,
    mut visit: impl FnMut(usize, f32, u16),
) -> Result<Vec<f32>> {
    let tensor_err = |e: NnzError| match e {
        NnzError::BadTensor { .. } => e,
        other => NnzError::bad_tensor(name, other.to_string()),
    };
    let beyond = |position: u64| {
        NnzError::bad_tensor(
            name,
            format!("entry position {position} beyond the {n} elements"),
        )
    };
    let bits = c.u8("index bits").map_err(tensor_err)?;
    if encoding == Encoding::SharedSparse {
        let gap_bits = c.u8("gap bits").map_err(tensor_err)?;
        if !(1..=16).contains(&gap_bits) {
            return Err(NnzError::bad_tensor(
                name,
                format!("gap bits {gap_bits} outside 1–16"),
            ));
        }
        let cb = read_sparse_codebook(c, name, bits, encoding)?;
        let m = c.u64("entry count").map_err(tensor_err)?;
        let itable = read_table(c, name, cb.len() as u64, "index").map_err(tensor_err)?;
        let gtable = read_table(c, name, 1 << gap_bits, "gap").map_err(tensor_err)?;
        let is = read_stream(c).map_err(tensor_err)?;
        let gs = read_stream(c).map_err(tensor_err)?;
        if m > is.len() as u64 * 8 || m > gs.len() as u64 * 8 {
            return Err(NnzError::bad_tensor(
                name,
                format!("{m} entries cannot fit in the streams"),
            ));
        }
        if m == 0 {
            return Ok(cb);
        }
        let idec = HuffmanDecoder::new(&itable).map_err(tensor_err)?;
        let gdec = HuffmanDecoder::new(&gtable).map_err(tensor_err)?;
        let (mut ir, mut gr) = (BitReader::new(is), BitReader::new(gs));
        let chunk = (m as usize).min(SYMBOL_CHUNK);
        let (mut gaps, mut idxs) = (vec![0u16; chunk], vec![0u16; chunk]);
        let mut pos: u64 = 0; // position + 1 of the last entry
        let mut left = m as usize;
        while left > 0 {
            let k = left.min(SYMBOL_CHUNK);
            left -= k;
            let (gaps, idxs) = (&mut gaps[..k], &mut idxs[..k]);
            gdec.decode_symbols(&mut gr, gaps).map_err(tensor_err)?;
            idec.decode_symbols(&mut ir, idxs).map_err(tensor_err)?;
            for (&gap, &idx) in gaps.iter().zip(idxs.iter()) {
                pos += u64::from(gap) + 1;
                if pos > n as u64 {
                    return Err(beyond(pos - 1));
                }
                // Symbols are < table size ≤ codebook size: the index is always in range.
                let value = cb.get(usize::from(idx)).copied().unwrap_or(0.0);
                visit((pos - 1) as usize, value, idx);
            }
        }
        return Ok(cb);
    }
    let cb = read_sparse_codebook(c, name, bits, encoding)?;
    let m = c.u64("entry count").map_err(tensor_err)?;
    let len = c.u64("a stream length").map_err(tensor_err)?;
    let stream = c.bytes(len, "a range-coded stream").map_err(tensor_err)?;
    if m > (len + 1).saturating_mul(AC_MAX_ENTRIES_PER_BYTE) || m > n as u64 {
        return Err(NnzError::bad_tensor(
            name,
            format!("{m} entries cannot fit in {len} bytes and {n} elements"),
        ));
    }
    if m == 0 {
        return Ok(cb);
    }
    let mut model = EntryModel::new(bits);
    let mut dec = RangeDecoder::new(stream).map_err(tensor_err)?;
    let mut pos: u64 = 0; // next position
    for _ in 0..m {
        let (gap, idx) = model.decode(&mut dec).map_err(tensor_err)?;
        pos += u64::from(gap);
        if pos >= n as u64 {
            return Err(beyond(pos));
        }
        let value = *cb.get(usize::from(idx)).ok_or_else(|| {
            NnzError::bad_tensor(
                name,
                format!("index {idx} outside the codebook of {}", cb.len()),
            )
        })?;
        visit(pos as usize, value, idx);
        pos += 1;
    }
    Ok(cb)
}

/// The kept (non-zero) weights of a shared-sparse or shared-sparse-ac tensor as the decoder
/// reads them, without the zeros: a position in the row-major order of [`SparseEntries::shape`]
/// and a codebook index for each, in increasing position order, the codebook, and the row
/// scales. What a kernel that runs from the kept weights takes
/// ([`crate::kernels::sparse`]), holding a few bytes per kept weight where the dense tensor
/// holds four per element.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseEntries {
    /// The tensor's shape.
    pub shape: Vec<u64>,
    /// The codebook as stored (entry 0 is 0.0).
    pub codebook: Vec<f32>,
    /// One scale per index of the first dimension, multiplying that row's values (format
    /// version 4), or `None`.
    pub row_scales: Option<Vec<f32>>,
    /// The positions of the kept weights, strictly increasing, each below the element count.
    pub positions: Vec<u32>,
    /// The codebook index of each kept weight (never 0, always within the codebook).
    pub indices: Vec<u16>,
}

impl SparseEntries {
    /// Elements of the tensor (kept or not).
    pub fn element_count(&self) -> usize {
        self.shape.iter().product::<u64>() as usize
    }

    /// Elements per index of the first dimension (a row-scaled row).
    fn row_len(&self) -> usize {
        let rows = self.shape.first().copied().unwrap_or(1).max(1) as usize;
        self.element_count() / rows
    }

    /// The value of kept weight `j`, as the dense decoding gives it (row scale applied).
    pub fn value(&self, j: usize) -> f32 {
        let v = self.codebook[usize::from(self.indices[j])];
        match &self.row_scales {
            Some(scales) => v * scales[self.positions[j] as usize / self.row_len().max(1)],
            None => v,
        }
    }

    /// Writes the dense tensor into `out` (`element_count()` elements): the same values as
    /// [`TensorView::decode_into`].
    pub fn expand_into(&self, out: &mut [f32]) -> Result<()> {
        if out.len() != self.element_count() {
            return Err(NnzError::model(format!(
                "output buffer has {} elements, the tensor {}",
                out.len(),
                self.element_count()
            )));
        }
        out.fill(0.0);
        match &self.row_scales {
            None => {
                for (&p, &i) in self.positions.iter().zip(&self.indices) {
                    if let Some(o) = out.get_mut(p as usize) {
                        *o = self.codebook[usize::from(i)];
                    }
                }
            }
            Some(scales) => {
                let mut rows = RowOf::new(self.row_len());
                for (&p, &i) in self.positions.iter().zip(&self.indices) {
                    if let Some(o) = out.get_mut(p as usize) {
                        *o = self.codebook[usize::from(i)] * scales[rows.of(p as usize)];
                    }
                }
            }
        }
        Ok(())
    }
}

/// The row of a position, for positions met mostly in increasing order: a division only where
/// the row changes, as expanding or reading a tensor's entries meets every kept weight at load.
struct RowOf {
    row_len: usize,
    row: usize,
    /// The first position of `row`.
    start: usize,
}

impl RowOf {
    /// Rows of `row_len` positions (0 is taken as 1).
    fn new(row_len: usize) -> Self {
        RowOf {
            row_len: row_len.max(1),
            row: 0,
            start: 0,
        }
    }

    /// The row of `position`: `position / row_len`.
    fn of(&mut self, position: usize) -> usize {
        if position < self.start || position - self.start >= self.row_len {
            self.row = position / self.row_len;
            self.start = self.row * self.row_len;
        }
        self.row
    }
}

impl TensorView<'_> {
    /// The kept weights of a shared-sparse or shared-sparse-ac tensor, decoded once, without
    /// expanding them to the dense tensor: `None` for the other encodings and for tensors of
    /// more than `u32::MAX` elements. The entries the file stores only to bridge long gaps
    /// (index 0), and entries whose value is zero, are left out. Memory: 6 bytes per entry the
    /// file declares, which the parse checked against the element count and the stream's
    /// bytes.
    pub fn decode_entries(&self) -> Result<Option<SparseEntries>> {
        let n = self.element_count();
        if !matches!(
            self.encoding,
            Encoding::SharedSparse | Encoding::SharedSparseAc
        ) || u32::try_from(n).is_err()
        {
            return Ok(None);
        }
        let values = match &self.row_scales {
            // The encoded values follow `u32 rows` and a binary16 per row (checked at parse).
            Some(scales) => self.payload.get(4 + 2 * scales.len()..).ok_or_else(|| {
                NnzError::bad_tensor(&self.name, "payload shorter than its row scales")
            })?,
            None => self.payload,
        };
        let rows = self.shape.first().copied().unwrap_or(1).max(1) as usize;
        let mut row_of = RowOf::new(n / rows);
        let scales = self.row_scales.as_deref();
        let mut c = Cursor::new(values, 0);
        let (mut positions, mut indices) = (Vec::new(), Vec::new());
        let codebook = walk_sparse(&mut c, &self.name, self.encoding, n, |pos, value, idx| {
            let scale = scales.map_or(1.0, |s| s.get(row_of.of(pos)).copied().unwrap_or(0.0));
            if value * scale != 0.0 {
                // `pos < n ≤ u32::MAX`.
                positions.push(pos as u32);
                indices.push(idx);
            }
        })?;
        if c.remaining() != 0 {
            return Err(NnzError::bad_tensor(
                &self.name,
                format!(
                    "{} unexplained bytes at the end of the payload",
                    c.remaining()
                ),
            ));
        }
        positions.shrink_to_fit();
        indices.shrink_to_fit();
        Ok(Some(SparseEntries {
            shape: self.shape.clone(),
            codebook,
            row_scales: self.row_scales.clone(),
            positions,
            indices,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::RowOf;

    /// The row of every position, met in increasing order, backwards and at random, equals
    /// `position / row_len`, for rows of 1, 3 and 7 positions (and 0, taken as 1).
    #[test]
    fn row_of_a_position_in_any_order() {
        for row_len in [0usize, 1, 3, 7] {
            let mut rows = RowOf::new(row_len);
            let positions: Vec<usize> = (0..50)
                .chain((0..50).rev())
                .chain((0..50).map(|i| i * 37 % 61))
                .collect();
            for p in positions {
                assert_eq!(rows.of(p), p / row_len.max(1), "{row_len}, {p}");
            }
        }
    }
}
