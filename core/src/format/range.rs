//! Adaptive binary range coding (the LZMA coder: 32-bit range, 11-bit probabilities adapting by
//! 1/32 per bit) and the binarisation of shared-sparse entries for the `shared-sparse-ac`
//! encoding, in the spirit of CABAC / DeepCABAC: every gap and index becomes a few binary
//! decisions, each coded with a probability learnt from the decisions of its context so far. No
//! code tables are stored, and the model adapts to the statistics of each tensor as it goes.

use crate::error::{NnzError, Result};

const PROB_BITS: u32 = 11;
const PROB_ONE: u16 = 1 << PROB_BITS;
const ADAPT_SHIFT: u32 = 5;
const TOP: u32 = 1 << 24;

/// Largest gap `shared-sparse-ac` codes in one entry: longer runs of zeros take filler entries
/// (index 0), as in `shared-sparse`. Bounds what a payload can declare: `n ≤ (m + 1) · 2^12`.
pub const AC_GAP_BITS: u32 = 12;
/// Probability contexts are bounded, so each binary decision costs at least
/// `−log2(2017/2048) > 1/64` bit and an entry (≥ 2 decisions) at least 1/32 bit: a stream of
/// `len` bytes holds at most `256 · len + 256` entries (+ the coder's 5 flush bytes of slack).
pub const AC_MAX_ENTRIES_PER_BYTE: u64 = 256;

/// One adaptive binary probability (of a 0), in units of 1/2048.
#[derive(Debug, Clone, Copy)]
struct Prob(u16);

impl Prob {
    const HALF: Prob = Prob(PROB_ONE / 2);
    fn update(&mut self, bit: u32) {
        if bit == 0 {
            self.0 += (PROB_ONE - self.0) >> ADAPT_SHIFT;
        } else {
            self.0 -= self.0 >> ADAPT_SHIFT;
        }
    }
}

/// The encoder side of the range coder.
pub struct RangeEncoder {
    low: u64,
    range: u32,
    cache: u8,
    cache_size: u64,
    out: Vec<u8>,
}

impl Default for RangeEncoder {
    fn default() -> Self {
        RangeEncoder {
            low: 0,
            range: u32::MAX,
            cache: 0,
            cache_size: 1,
            out: Vec::new(),
        }
    }
}

impl RangeEncoder {
    fn shift_low(&mut self) {
        if (self.low as u32) < 0xFF00_0000 || (self.low >> 32) != 0 {
            let carry = (self.low >> 32) as u8;
            let mut temp = self.cache;
            loop {
                self.out.push(temp.wrapping_add(carry));
                temp = 0xFF;
                self.cache_size -= 1;
                if self.cache_size == 0 {
                    break;
                }
            }
            self.cache = (self.low >> 24) as u8;
        }
        self.cache_size += 1;
        self.low = (self.low & 0x00FF_FFFF) << 8;
    }

    fn bit(&mut self, p: &mut Prob, bit: u32) {
        let bound = (self.range >> PROB_BITS) * u32::from(p.0);
        if bit == 0 {
            self.range = bound;
        } else {
            self.low += u64::from(bound);
            self.range -= bound;
        }
        p.update(bit);
        while self.range < TOP {
            self.range <<= 8;
            self.shift_low();
        }
    }

    /// Flushes and returns the stream.
    pub fn finish(mut self) -> Vec<u8> {
        for _ in 0..5 {
            self.shift_low();
        }
        self.out
    }
}

/// The decoder side. Reading past the end yields zero bytes, counted: more than the encoder's
/// flush could explain is an error, so a truncated stream never decodes silently.
pub struct RangeDecoder<'a> {
    data: &'a [u8],
    pos: usize,
    range: u32,
    code: u32,
    overrun: usize,
}

impl<'a> RangeDecoder<'a> {
    /// Starts decoding `data`; its first byte must be 0 (the encoder's first output).
    pub fn new(data: &'a [u8]) -> Result<Self> {
        if data.len() < 5 || data[0] != 0 {
            return Err(NnzError::malformed("range-coded stream: bad start"));
        }
        let code = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
        Ok(RangeDecoder {
            data,
            pos: 5,
            range: u32::MAX,
            code,
            overrun: 0,
        })
    }

    fn next_byte(&mut self) -> u8 {
        match self.data.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => {
                self.overrun += 1;
                0
            }
        }
    }

    /// Decodes one binary decision. Reading past the end is only counted here (the bytes read
    /// are zeros); callers check [`RangeDecoder::check_not_overrun`] once per entry, which bounds
    /// the decisions decoded from invented bytes to one entry's.
    #[inline(always)]
    fn bit(&mut self, p: &mut Prob) -> u32 {
        // Without branches on the decoded bit: a well-coded bit is close to unpredictable, and
        // the selects decode faster than branches (docs/PERFORMANCE.md; an entry takes ~10
        // decisions, and the chain of dependent multiplies is the rest of its time).
        let prob = u32::from(p.0);
        let bound = (self.range >> PROB_BITS) * prob;
        let bit = u32::from(self.code >= bound);
        let ones = bit.wrapping_neg(); // all ones for a 1, all zeros for a 0
        self.code -= bound & ones;
        // `bound < range`, as `prob < 2048`: the subtraction cannot wrap.
        self.range = (bound & !ones) | ((self.range - bound) & ones);
        let towards_zero = prob + ((u32::from(PROB_ONE) - prob) >> ADAPT_SHIFT);
        let towards_one = prob - (prob >> ADAPT_SHIFT);
        p.0 = ((towards_zero & !ones) | (towards_one & ones)) as u16;
        // Probabilities stay within [31, 2017]/2048, so one decision leaves a range of at least
        // 2^24 · 31/2048 > 2^16: one byte always restores it to ≥ 2^24 (`TOP`).
        if self.range < TOP {
            self.range <<= 8;
            self.code = (self.code << 8) | u32::from(self.next_byte());
        }
        bit
    }

    /// Errors once more bytes were read past the end than the encoder's flush explains.
    #[inline]
    fn check_not_overrun(&self) -> Result<()> {
        if self.overrun > 4 {
            return Err(NnzError::malformed("range-coded stream ends early"));
        }
        Ok(())
    }

    /// Whether the whole stream was used (trailing garbage would not be).
    pub fn consumed_all(&self) -> bool {
        self.pos == self.data.len()
    }
}

/// The adaptive model of one tensor's entries: gaps as an Exp-Golomb-style prefix (unary bit
/// length, one context per position) and suffix (one context per bit length and bit position),
/// indices as a binary tree (one context per node).
pub struct EntryModel {
    unary: [Prob; AC_GAP_BITS as usize + 1],
    suffix: Vec<Prob>,
    tree: Vec<Prob>,
    index_bits: u32,
}

impl EntryModel {
    /// A fresh model for `index_bits`-bit indices (1–16).
    pub fn new(index_bits: u8) -> Self {
        let g = AC_GAP_BITS as usize + 1;
        EntryModel {
            unary: [Prob::HALF; AC_GAP_BITS as usize + 1],
            suffix: vec![Prob::HALF; g * g],
            tree: vec![Prob::HALF; 1usize << index_bits.clamp(1, 16)],
            index_bits: u32::from(index_bits.clamp(1, 16)),
        }
    }

    /// Codes one entry: `gap < 2^AC_GAP_BITS` zeros, then the weight of codebook index `index`.
    pub fn encode(&mut self, enc: &mut RangeEncoder, gap: u32, index: u16) {
        debug_assert!(gap < 1 << AC_GAP_BITS);
        let v = gap + 1;
        let e = 31 - v.leading_zeros(); // bit length − 1, ≤ AC_GAP_BITS
        for i in 0..e {
            enc.bit(&mut self.unary[i as usize], 1);
        }
        if e < AC_GAP_BITS {
            enc.bit(&mut self.unary[e as usize], 0);
        }
        let row = e as usize * (AC_GAP_BITS as usize + 1);
        for j in (0..e).rev() {
            enc.bit(&mut self.suffix[row + j as usize], (v >> j) & 1);
        }
        let mut node = 1usize;
        for j in (0..self.index_bits).rev() {
            let b = (u32::from(index) >> j) & 1;
            enc.bit(&mut self.tree[node], b);
            node = node * 2 + b as usize;
        }
    }

    /// Decodes one entry: `(gap, index)`. Every loop is bounded by the model's sizes.
    pub fn decode(&mut self, dec: &mut RangeDecoder<'_>) -> Result<(u32, u16)> {
        let mut e = 0;
        while e < AC_GAP_BITS && dec.bit(&mut self.unary[e as usize]) == 1 {
            e += 1;
        }
        let row = e as usize * (AC_GAP_BITS as usize + 1);
        let suffix = &mut self.suffix[row..row + e as usize];
        let mut v = 1u32;
        for p in suffix.iter_mut().rev() {
            v = (v << 1) | dec.bit(p);
        }
        // `tree` has 2^index_bits nodes, and `node` < 2^index_bits until the last step.
        let mut node = 1usize;
        for _ in 0..self.index_bits {
            let b = dec.bit(&mut self.tree[node]);
            node = node * 2 + b as usize;
        }
        dec.check_not_overrun()?;
        let index = (node - (1usize << self.index_bits)) as u16;
        Ok((v - 1, index))
    }
}

/// The entries of a shared-sparse tensor for `shared-sparse-ac`: `(gap, index)` per non-zero
/// weight, fillers (index 0) when more than `2^AC_GAP_BITS − 1` zeros separate two of them. The
/// trailing zeros are implied by the element count.
pub fn ac_entries(indices: &[u16]) -> Vec<(u32, u16)> {
    let max_gap = (1u32 << AC_GAP_BITS) - 1;
    let mut entries = Vec::new();
    let mut run = 0u32;
    for &i in indices {
        if i == 0 {
            if run == max_gap {
                entries.push((max_gap, 0));
                run = 0;
            } else {
                run += 1;
            }
        } else {
            entries.push((run, i));
            run = 0;
        }
    }
    entries
}

/// Range-codes the entries of `indices` (index 0 = zero weight).
pub fn encode_entries(indices: &[u16], index_bits: u8) -> (u64, Vec<u8>) {
    let entries = ac_entries(indices);
    let mut model = EntryModel::new(index_bits);
    let mut enc = RangeEncoder::default();
    for &(g, i) in &entries {
        model.encode(&mut enc, g, i);
    }
    (entries.len() as u64, enc.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(indices: &[u16], bits: u8) -> usize {
        let (m, stream) = encode_entries(indices, bits);
        let mut model = EntryModel::new(bits);
        let mut dec = RangeDecoder::new(&stream).unwrap();
        let mut out = vec![0u16; indices.len()];
        let mut pos = 0usize;
        for _ in 0..m {
            let (g, i) = model.decode(&mut dec).unwrap();
            pos += g as usize;
            if i != 0 {
                out[pos] = i;
            }
            pos += 1;
        }
        assert_eq!(out, indices);
        stream.len()
    }

    #[test]
    fn entries_round_trip_including_long_runs_and_edges() {
        round_trip(&[], 4);
        round_trip(&[0; 10], 4);
        round_trip(&[3], 2);
        round_trip(&[0, 0, 1], 1);
        let mut v = vec![0u16; 20_000];
        v[0] = 5;
        v[4095] = 1; // gap of exactly 4094
        v[8191] = 2; // gap of 4095
        v[12289] = 15; // gap over the limit: a filler
        v[19_999] = 9;
        round_trip(&v, 4);
        // Every index of a 16-bit codebook.
        let all: Vec<u16> = (0..=u16::MAX).collect();
        round_trip(&all, 16);
    }

    #[test]
    fn skewed_data_codes_below_its_zero_order_entropy_bound_of_raw_bits() {
        // 2% density, indices concentrated on a few values: far below 4 + 12 bits per weight.
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let v: Vec<u16> = (0..100_000)
            .map(|_| {
                if next() % 50 == 0 {
                    [1u16, 2, 2, 3, 3, 3, 3, 4][(next() % 8) as usize]
                } else {
                    0
                }
            })
            .collect();
        let bytes = round_trip(&v, 4);
        let nz = v.iter().filter(|&&x| x != 0).count();
        let bits_per_nz = bytes as f64 * 8.0 / nz as f64;
        // Geometric gaps with p = 0.02 carry ~7.1 bits, these indices ~1.9 bits.
        assert!(bits_per_nz < 9.6, "{bits_per_nz} bits per non-zero");
    }

    #[test]
    fn hostile_streams_error_or_decode_boundedly() {
        assert!(RangeDecoder::new(&[]).is_err());
        assert!(RangeDecoder::new(&[1, 0, 0, 0, 0]).is_err());
        // A truncated stream is an error, not an endless supply of zeros.
        let (m, stream) = encode_entries(&[1, 0, 2, 0, 0, 3, 1, 1, 0, 2], 2);
        let cut = &stream[..5];
        let mut model = EntryModel::new(2);
        let mut dec = RangeDecoder::new(cut).unwrap();
        let mut failed = false;
        for _ in 0..m * 1000 {
            if model.decode(&mut dec).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
        // Garbage decodes to something or fails, never panics.
        for seed in 0..200u32 {
            let mut g: Vec<u8> = (0..64)
                .map(|i| ((i as u32).wrapping_mul(2654435761u32) ^ seed) as u8)
                .collect();
            g[0] = 0;
            let mut model = EntryModel::new(5);
            if let Ok(mut dec) = RangeDecoder::new(&g) {
                for _ in 0..200 {
                    if model.decode(&mut dec).is_err() {
                        break;
                    }
                }
            }
        }
    }
}
