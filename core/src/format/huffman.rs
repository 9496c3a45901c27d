//! Canonical Huffman codes, as Deep Compression uses them for codebook indices and gaps.
//!
//! Only the code lengths are stored; codes are assigned canonically (shorter codes first, then
//! by symbol). Lengths are limited to [`MAX_CODE_LEN`] bits so that a decoder needs one
//! small table lookup per symbol and a bounded slow path.

use super::bits::{BitReader, BitWriter};
use crate::error::{NnzError, Result};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Longest code length the format allows.
pub const MAX_CODE_LEN: u8 = 24;
/// Bits resolved by the decoder's primary lookup table.
const PRIMARY_BITS: u8 = 11;

/// A canonical Huffman code over the alphabet `0..lengths.len()`: length 0 = symbol unused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HuffmanTable {
    lengths: Vec<u8>,
}

impl HuffmanTable {
    /// Builds an optimal code for these symbol frequencies, limited to `max_len` bits
    /// (1 ≤ `max_len` ≤ [`MAX_CODE_LEN`]). One used symbol gets a 1-bit code; deterministic.
    pub fn from_frequencies(freqs: &[u64], max_len: u8) -> Result<HuffmanTable> {
        let max_len = max_len.clamp(1, MAX_CODE_LEN);
        let used = freqs.iter().filter(|&&f| f > 0).count();
        if used > 1 && (used as u64) > (1u64 << max_len) {
            return Err(NnzError::InvalidInput(format!(
                "{used} symbols cannot have codes of at most {max_len} bits"
            )));
        }
        let mut f = freqs.to_vec();
        loop {
            let lengths = huffman_lengths(&f);
            if lengths.iter().all(|&l| l <= max_len) {
                return Ok(HuffmanTable { lengths });
            }
            // Flatten the distribution and try again: converges because all-equal frequencies
            // give lengths ≤ ceil(log2(used)) ≤ max_len.
            for x in f.iter_mut().filter(|x| **x > 0) {
                *x = (*x).div_ceil(2);
            }
        }
    }

    /// A table from stored code lengths; rejects lengths over [`MAX_CODE_LEN`] and
    /// over-subscribed codes (Kraft sum > 1). Incomplete codes are allowed.
    pub fn from_lengths(lengths: &[u8]) -> Result<HuffmanTable> {
        let mut kraft: u64 = 0;
        for &l in lengths {
            if l > MAX_CODE_LEN {
                return Err(NnzError::malformed(format!(
                    "Huffman code length {l} exceeds {MAX_CODE_LEN}"
                )));
            }
            if l > 0 {
                kraft += 1u64 << (MAX_CODE_LEN - l);
            }
        }
        if kraft > 1u64 << MAX_CODE_LEN {
            return Err(NnzError::malformed("Huffman table over-subscribed"));
        }
        Ok(HuffmanTable {
            lengths: lengths.to_vec(),
        })
    }

    /// Code length of every symbol (0 = unused).
    pub fn lengths(&self) -> &[u8] {
        &self.lengths
    }

    /// Canonical `(code, length)` of every symbol.
    pub fn codes(&self) -> Vec<(u32, u8)> {
        let mut count = [0u32; MAX_CODE_LEN as usize + 1];
        for &l in &self.lengths {
            count[l as usize] += 1;
        }
        count[0] = 0;
        let mut next = [0u32; MAX_CODE_LEN as usize + 2];
        let mut code = 0u32;
        for len in 1..=MAX_CODE_LEN as usize {
            code = (code + count[len - 1]) << 1;
            next[len] = code;
        }
        self.lengths
            .iter()
            .map(|&l| {
                if l == 0 {
                    (0, 0)
                } else {
                    let c = next[l as usize];
                    next[l as usize] += 1;
                    (c, l)
                }
            })
            .collect()
    }

    /// Bits needed to code a stream with these symbol counts.
    pub fn coded_bits(&self, counts: &[u64]) -> u64 {
        self.lengths
            .iter()
            .zip(counts)
            .map(|(&l, &c)| u64::from(l) * c)
            .sum()
    }
}

/// Unlimited Huffman code lengths (ties broken by symbol index, so the result is deterministic).
fn huffman_lengths(freqs: &[u64]) -> Vec<u8> {
    let mut lengths = vec![0u8; freqs.len()];
    let used: Vec<usize> = (0..freqs.len()).filter(|&i| freqs[i] > 0).collect();
    match used.len() {
        0 => return lengths,
        1 => {
            lengths[used[0]] = 1;
            return lengths;
        }
        _ => {}
    }
    // Nodes: leaves 0..n, internal nodes after; parent links give each leaf's depth.
    let mut parent: Vec<usize> = vec![usize::MAX; used.len()];
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = used
        .iter()
        .enumerate()
        .map(|(node, &s)| Reverse((freqs[s], node)))
        .collect();
    while heap.len() > 1 {
        let (Some(Reverse((fa, a))), Some(Reverse((fb, b)))) = (heap.pop(), heap.pop()) else {
            break;
        };
        let id = parent.len();
        parent.push(usize::MAX);
        parent[a] = id;
        parent[b] = id;
        heap.push(Reverse((fa.saturating_add(fb), id)));
    }
    // Parents always have larger ids, so depths can be filled from the root down.
    let mut depth = vec![0u32; parent.len()];
    for node in (0..parent.len()).rev() {
        if parent[node] != usize::MAX {
            depth[node] = depth[parent[node]] + 1;
        }
    }
    for (leaf, &s) in used.iter().enumerate() {
        lengths[s] = depth[leaf].min(255) as u8;
    }
    lengths
}

/// Writes symbols with a table's canonical codes.
#[derive(Debug, Clone)]
pub struct HuffmanEncoder {
    codes: Vec<(u32, u8)>,
}

impl HuffmanEncoder {
    /// An encoder for this table.
    pub fn new(table: &HuffmanTable) -> Self {
        HuffmanEncoder {
            codes: table.codes(),
        }
    }

    /// Writes one symbol; errors if the symbol has no code.
    #[inline]
    pub fn encode(&self, w: &mut BitWriter, symbol: u16) -> Result<()> {
        match self.codes.get(symbol as usize) {
            Some(&(code, len)) if len > 0 => {
                w.write(code, u32::from(len));
                Ok(())
            }
            _ => Err(NnzError::InvalidInput(format!(
                "symbol {symbol} has no Huffman code"
            ))),
        }
    }
}

/// Table-driven canonical Huffman decoder: one lookup of [`PRIMARY_BITS`] bits per symbol,
/// a canonical walk for the rare longer codes.
#[derive(Debug, Clone)]
pub struct HuffmanDecoder {
    /// `(symbol, length)`; length 0 = no code of ≤ `primary_bits` bits starts here.
    primary: Vec<(u16, u8)>,
    primary_bits: u8,
    max_len: u8,
    /// Canonical slow path: per length, the first code, its index in `sorted`, and the count.
    first_code: [u32; MAX_CODE_LEN as usize + 1],
    first_index: [u32; MAX_CODE_LEN as usize + 1],
    count: [u32; MAX_CODE_LEN as usize + 1],
    sorted: Vec<u16>,
    /// [`HuffmanDecoder::decode_mapped`]'s multi-symbol table, built on its first long call.
    multi: std::cell::OnceCell<Vec<MultiEntry>>,
}

impl HuffmanDecoder {
    /// Builds the decoder; the table must have at least one used symbol and at most 65,536.
    pub fn new(table: &HuffmanTable) -> Result<Self> {
        if table.lengths.len() > 1 << 16 {
            return Err(NnzError::malformed(
                "Huffman alphabet larger than 65536 symbols",
            ));
        }
        let max_len = table.lengths.iter().copied().max().unwrap_or(0);
        if max_len == 0 {
            return Err(NnzError::malformed(
                "Huffman table has no symbols but symbols are coded",
            ));
        }
        let primary_bits = max_len.min(PRIMARY_BITS);
        let mut primary = vec![(0u16, 0u8); 1 << primary_bits];
        let codes = table.codes();
        let mut count = [0u32; MAX_CODE_LEN as usize + 1];
        for &l in &table.lengths {
            count[l as usize] += 1;
        }
        count[0] = 0;
        let mut sorted: Vec<u16> = (0..table.lengths.len() as u32)
            .filter(|&s| table.lengths[s as usize] > 0)
            .map(|s| s as u16)
            .collect();
        sorted.sort_by_key(|&s| (table.lengths[s as usize], s));
        let mut first_code = [0u32; MAX_CODE_LEN as usize + 1];
        let mut first_index = [0u32; MAX_CODE_LEN as usize + 1];
        let (mut code, mut index) = (0u32, 0u32);
        for len in 1..=MAX_CODE_LEN as usize {
            code = (code + count[len - 1]) << 1;
            first_code[len] = code;
            first_index[len] = index;
            index += count[len];
        }
        for (sym, &(code, len)) in codes.iter().enumerate() {
            if len > 0 && len <= primary_bits {
                let shift = primary_bits - len;
                let start = (code << shift) as usize;
                for e in &mut primary[start..start + (1 << shift)] {
                    *e = (sym as u16, len);
                }
            }
        }
        Ok(HuffmanDecoder {
            primary,
            primary_bits,
            max_len,
            first_code,
            first_index,
            count,
            sorted,
            multi: std::cell::OnceCell::new(),
        })
    }

    /// Decodes one symbol. Errors on a code the table does not assign or on reading past the
    /// end of the stream.
    #[inline]
    pub fn decode(&self, r: &mut BitReader<'_>) -> Result<u16> {
        r.refill();
        let (sym, len) = self.primary[r.peek(u32::from(self.primary_bits)) as usize];
        let sym = if len > 0 {
            r.consume(u32::from(len));
            sym
        } else {
            self.decode_slow(r)?
        };
        if r.overrun() {
            return Err(NnzError::malformed(
                "Huffman stream ends before its last symbol",
            ));
        }
        Ok(sym)
    }

    #[cold]
    fn decode_slow(&self, r: &mut BitReader<'_>) -> Result<u16> {
        let bits = r.peek(u32::from(self.max_len));
        for len in self.primary_bits + 1..=self.max_len {
            let code = bits >> (self.max_len - len);
            let l = len as usize;
            let offset = code.wrapping_sub(self.first_code[l]);
            if code >= self.first_code[l] && offset < self.count[l] {
                r.consume(u32::from(len));
                let ix = (self.first_index[l] + offset) as usize;
                return self
                    .sorted
                    .get(ix)
                    .copied()
                    .ok_or_else(|| NnzError::malformed("Huffman code out of range"));
            }
        }
        Err(NnzError::malformed(
            "invalid Huffman code in stream (code not in table)",
        ))
    }
}

/// Bits looked up at once by [`HuffmanDecoder::decode_mapped`]'s table.
const MULTI_BITS: u32 = 12;
/// Whole codes one entry of that table holds at most.
const MULTI_SYMBOLS: usize = 3;
/// Lookups between two refills: after a refill at least 57 bits are buffered (or the whole rest
/// of the stream), which covers four lookups of [`MULTI_BITS`].
const LOOKUPS_PER_REFILL: usize = 4;
/// Streams shorter than this are decoded one symbol at a time: building the table
/// (2^[`MULTI_BITS`] entries, three primary lookups each) costs about as much as it saves on a
/// few thousand symbols.
const MULTI_MIN_SYMBOLS: usize = 4096;

/// One entry of the multi-symbol table: the whole codes the next [`MULTI_BITS`] bits start with,
/// up to [`MULTI_SYMBOLS`] of them.
#[derive(Debug, Clone, Copy, Default)]
struct MultiEntry {
    /// The decoded symbols; those past `count` are 0.
    symbols: [u16; MULTI_SYMBOLS],
    /// Symbols decoded (0 = the first code is longer than the primary table: take the slow
    /// path).
    count: u8,
    /// Bits they take together.
    bits: u8,
}

impl HuffmanDecoder {
    /// Decodes `out.len()` symbols into `out`: the same result and errors as calling
    /// [`HuffmanDecoder::decode`] once per symbol.
    pub fn decode_symbols(&self, r: &mut BitReader<'_>, out: &mut [u16]) -> Result<()> {
        self.decode_mapped(r, out, |s| s)
    }

    /// Decodes `out.len()` symbols and writes `map(symbol)` of each into `out` (a codebook
    /// lookup, say, so that the values go straight to their buffer). The same result and errors
    /// as calling [`HuffmanDecoder::decode`] once per symbol, several times faster on long
    /// streams: one lookup resolves up to three short codes, the buffer is refilled once per
    /// four lookups, and reading past the end is checked once at the end (the reader counts it,
    /// see [`BitReader`]). `map` must accept every symbol of the table's alphabet and 0: a
    /// lookup of fewer codes than the table's most fills the slots after them with `map(0)`,
    /// which the next symbols overwrite.
    pub fn decode_mapped<T: Copy>(
        &self,
        r: &mut BitReader<'_>,
        out: &mut [T],
        map: impl Fn(u16) -> T,
    ) -> Result<()> {
        let n = out.len();
        let mut i = 0;
        if n >= MULTI_MIN_SYMBOLS {
            let table = self.multi.get_or_init(|| self.multi_table());
            // Each lookup writes MULTI_SYMBOLS slots: stop while a whole round of them fits.
            while i + MULTI_SYMBOLS * LOOKUPS_PER_REFILL <= n {
                r.refill();
                for _ in 0..LOOKUPS_PER_REFILL {
                    let e = table[r.peek(MULTI_BITS) as usize];
                    if e.count == 0 {
                        out[i] = map(self.decode(r)?);
                        i += 1;
                        break; // `decode` may have used most of the buffer: refill.
                    }
                    let slots = &mut out[i..i + MULTI_SYMBOLS];
                    for (slot, &symbol) in slots.iter_mut().zip(&e.symbols) {
                        *slot = map(symbol);
                    }
                    r.consume(u32::from(e.bits));
                    i += usize::from(e.count);
                }
            }
        }
        for slot in &mut out[i..] {
            *slot = map(self.decode(r)?);
        }
        if r.overrun() {
            return Err(NnzError::malformed(
                "Huffman stream ends before its last symbol",
            ));
        }
        Ok(())
    }

    /// For every [`MULTI_BITS`]-bit window: the whole codes it starts with, up to
    /// [`MULTI_SYMBOLS`], each found in the primary table (codes longer than it end the entry;
    /// a window starting with one gets no symbol).
    fn multi_table(&self) -> Vec<MultiEntry> {
        let mask = (1u32 << MULTI_BITS) - 1;
        // The code a window starts with, its low bits read as zeros where the primary table
        // resolves fewer bits than the window holds (or more: its bits are then the window's
        // top ones).
        let first = |window: u32| -> (u16, u8) {
            let pb = u32::from(self.primary_bits);
            let key = if pb <= MULTI_BITS {
                window >> (MULTI_BITS - pb)
            } else {
                window << (pb - MULTI_BITS)
            };
            self.primary[key as usize]
        };
        (0..1u32 << MULTI_BITS)
            .map(|window| {
                let mut entry = MultiEntry::default();
                let (mut rest, mut used) = (window, 0u32);
                while usize::from(entry.count) < MULTI_SYMBOLS {
                    let (symbol, len) = first(rest);
                    // A code that reaches past the window's bits is read from zeros: not whole.
                    if len == 0 || used + u32::from(len) > MULTI_BITS {
                        break;
                    }
                    entry.symbols[usize::from(entry.count)] = symbol;
                    entry.count += 1;
                    used += u32::from(len);
                    rest = (rest << len) & mask;
                }
                entry.bits = used as u8;
                entry
            })
            .collect()
    }
}

/// Writes a table: `u32` count of stored lengths (trailing zeros trimmed), then one byte each.
pub fn write_table(out: &mut Vec<u8>, table: &HuffmanTable) {
    let m = table
        .lengths
        .iter()
        .rposition(|&l| l > 0)
        .map_or(0, |i| i + 1);
    out.extend_from_slice(&(m as u32).to_le_bytes());
    out.extend_from_slice(&table.lengths[..m]);
}

/// Bytes [`write_table`] produces.
pub fn table_bytes(table: &HuffmanTable) -> u64 {
    4 + table
        .lengths
        .iter()
        .rposition(|&l| l > 0)
        .map_or(0, |i| i + 1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kraft(lengths: &[u8]) -> f64 {
        lengths
            .iter()
            .filter(|&&l| l > 0)
            .map(|&l| 0.5f64.powi(l as i32))
            .sum()
    }

    fn round_trip(freqs: &[u64], max_len: u8) {
        let t = HuffmanTable::from_frequencies(freqs, max_len).unwrap();
        assert!(kraft(t.lengths()) <= 1.0 + 1e-12);
        assert!(t.lengths().iter().all(|&l| l <= max_len));
        let symbols: Vec<u16> = freqs
            .iter()
            .enumerate()
            .flat_map(|(s, &f)| std::iter::repeat_n(s as u16, f.min(50) as usize))
            .collect();
        let enc = HuffmanEncoder::new(&t);
        let mut w = BitWriter::new();
        for &s in &symbols {
            enc.encode(&mut w, s).unwrap();
        }
        let bytes = w.finish();
        let dec = HuffmanDecoder::new(&t).unwrap();
        let mut r = BitReader::new(&bytes);
        for &s in &symbols {
            assert_eq!(dec.decode(&mut r).unwrap(), s);
        }
    }

    #[test]
    fn codes_are_prefix_free_and_round_trip() {
        round_trip(&[5, 9, 12, 13, 16, 45], 24);
        round_trip(&[1, 0, 0, 7], 24);
        round_trip(&[0, 3, 0], 24);
        round_trip(
            &(0..300)
                .map(|i| (i * 7919 % 1000) as u64)
                .collect::<Vec<_>>(),
            24,
        );
        let t = HuffmanTable::from_frequencies(&[5, 9, 12, 13, 16, 45], 24).unwrap();
        let codes = t.codes();
        for (i, &(a, la)) in codes.iter().enumerate() {
            for &(b, lb) in &codes[i + 1..] {
                let (short, ls, long, ll) = if la <= lb {
                    (a, la, b, lb)
                } else {
                    (b, lb, a, la)
                };
                assert_ne!(long >> (ll - ls), short, "prefix");
            }
        }
    }

    #[test]
    fn length_limit_holds_for_fibonacci_frequencies() {
        let mut fib = vec![1u64, 1];
        while fib.len() < 60 {
            let n = fib[fib.len() - 1] + fib[fib.len() - 2];
            fib.push(n);
        }
        assert!(huffman_lengths(&fib).iter().any(|&l| l > 24));
        round_trip(&fib, 24);
        round_trip(&fib[..30], 12);
    }

    #[test]
    fn single_symbol_and_bad_tables() {
        let t = HuffmanTable::from_frequencies(&[0, 0, 42], 24).unwrap();
        assert_eq!(t.lengths(), &[0, 0, 1]);
        let err = HuffmanTable::from_lengths(&[1, 1, 1]).unwrap_err();
        assert!(err.to_string().contains("over-subscribed"), "{err}");
        assert!(HuffmanTable::from_lengths(&[25]).is_err());
        // An incomplete code: the unassigned code "1" is an error, not a panic.
        let t = HuffmanTable::from_lengths(&[1]).unwrap();
        let dec = HuffmanDecoder::new(&t).unwrap();
        let mut r = BitReader::new(&[0x80]);
        assert!(dec.decode(&mut r).is_err());
        assert!(HuffmanDecoder::new(&HuffmanTable::from_lengths(&[0, 0]).unwrap()).is_err());
    }

    /// Per-symbol decoding, the reference for the batched decoder.
    fn one_by_one(dec: &HuffmanDecoder, bytes: &[u8], n: usize) -> Result<Vec<u16>> {
        let mut r = BitReader::new(bytes);
        (0..n).map(|_| dec.decode(&mut r)).collect()
    }

    #[test]
    fn batched_decoding_equals_one_symbol_at_a_time() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        // Skewed alphabets from 1 to 300 symbols, code lengths limited from 4 to 24 bits (so
        // codes longer than the pair table's 12 bits and the slow path are both exercised).
        for (alphabet, max_len, n) in [
            (1usize, 24u8, 2000usize),
            (2, 24, 999),
            (5, 24, 4097),
            (32, 24, 5000),
            (32, 6, 3001),
            (32, 6, 9001),
            (300, 24, 7000),
            (300, 9, 2500),
            (300, 9, 6000),
            (300, 14, 4096),
        ] {
            let freqs: Vec<u64> = (0..alphabet)
                .map(|i| 1 + (1u64 << (20 - (i.min(19) as u32))) / (1 + i as u64))
                .collect();
            let t = HuffmanTable::from_frequencies(&freqs, max_len).unwrap();
            // Draw symbols roughly by frequency, with rare ones mixed in.
            let total: u64 = freqs.iter().sum();
            let symbols: Vec<u16> = (0..n)
                .map(|_| {
                    let mut x = next() % total;
                    freqs
                        .iter()
                        .position(|&f| {
                            if x < f {
                                true
                            } else {
                                x -= f;
                                false
                            }
                        })
                        .unwrap() as u16
                })
                .collect();
            let enc = HuffmanEncoder::new(&t);
            let mut w = BitWriter::new();
            for &sym in &symbols {
                enc.encode(&mut w, sym).unwrap();
            }
            let bytes = w.finish();
            let dec = HuffmanDecoder::new(&t).unwrap();
            let mut got = vec![0u16; n];
            dec.decode_symbols(&mut BitReader::new(&bytes), &mut got)
                .unwrap();
            assert_eq!(got, symbols, "alphabet {alphabet}, max_len {max_len}");
            // Truncated streams and corrupted bytes: the same outcome as one symbol at a time.
            for cut in [0, 1, bytes.len() / 2, bytes.len().saturating_sub(1)] {
                let short = &bytes[..cut];
                let mut got = vec![0u16; n];
                let batched = dec.decode_symbols(&mut BitReader::new(short), &mut got);
                let reference = one_by_one(&dec, short, n);
                assert_eq!(batched.is_ok(), reference.is_ok(), "cut {cut}");
                if let Ok(reference) = reference {
                    assert_eq!(got, reference);
                }
            }
            let mut bad = bytes.clone();
            for k in 0..bad.len().min(64) {
                let at = (next() as usize) % bad.len();
                bad[at] ^= 1 << (k % 8);
            }
            let mut got = vec![0u16; n];
            let batched = dec.decode_symbols(&mut BitReader::new(&bad), &mut got);
            let reference = one_by_one(&dec, &bad, n);
            assert_eq!(batched.is_ok(), reference.is_ok());
            if let Ok(reference) = reference {
                assert_eq!(got, reference);
            }
        }
    }
}
