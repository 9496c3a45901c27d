//! Bit-level I/O for the Huffman streams: codes are written most-significant bit first into
//! bytes that are filled from their most significant bit; the last byte is padded with zeros.

/// Appends codes to a byte vector, MSB first.
#[derive(Debug, Default, Clone)]
pub struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    nbits: u32,
}

impl BitWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the low `len` bits of `code` (`len` ≤ 32), most significant first.
    #[inline]
    pub fn write(&mut self, code: u32, len: u32) {
        debug_assert!(len <= 32);
        if len == 0 {
            return;
        }
        self.acc = (self.acc << len) | (u64::from(code) & ((1u64 << len) - 1));
        self.nbits += len;
        while self.nbits >= 8 {
            self.nbits -= 8;
            self.bytes.push((self.acc >> self.nbits) as u8);
        }
    }

    /// Number of bits written so far.
    pub fn bit_len(&self) -> u64 {
        self.bytes.len() as u64 * 8 + u64::from(self.nbits)
    }

    /// Pads the last byte with zero bits and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        if self.nbits > 0 {
            self.bytes.push((self.acc << (8 - self.nbits)) as u8);
        }
        self.bytes
    }
}

/// Reads bits MSB first from a byte slice. Reading past the end yields zero bits, and
/// [`BitReader::overrun`] tells whether that happened, so a decoder can check once per symbol
/// without branching on every refill.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Valid bits, left-aligned.
    buf: u64,
    /// Number of valid bits in `buf`.
    count: u32,
    /// Bits consumed beyond the end of the data.
    consumed: u64,
}

impl<'a> BitReader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        let mut r = BitReader {
            data,
            pos: 0,
            buf: 0,
            count: 0,
            consumed: 0,
        };
        r.refill();
        r
    }

    /// Tops the buffer up to at least 57 bits (or to the end of the data).
    #[inline]
    pub fn refill(&mut self) {
        if self.pos + 8 <= self.data.len() {
            // Fast path: one unaligned 8-byte load.
            let mut word = [0u8; 8];
            word.copy_from_slice(&self.data[self.pos..self.pos + 8]);
            let w = u64::from_be_bytes(word);
            // `count` ≤ 63 here. Bits of `w` past the whole bytes taken are real data bits that
            // the next refill ORs into the same place again, so leaving them is harmless.
            self.buf |= w >> self.count;
            let take = (63 - self.count) / 8;
            self.pos += take as usize;
            self.count += take * 8;
        } else {
            while self.count <= 56 && self.pos < self.data.len() {
                self.buf |= u64::from(self.data[self.pos]) << (56 - self.count);
                self.pos += 1;
                self.count += 8;
            }
        }
    }

    /// The next `n` bits (1 ≤ n ≤ 32) without consuming them; zeros past the end.
    #[inline]
    pub fn peek(&self, n: u32) -> u32 {
        (self.buf >> (64 - n)) as u32
    }

    /// Consumes `n` bits (n ≤ 32).
    #[inline]
    pub fn consume(&mut self, n: u32) {
        if n > self.count {
            self.consumed += u64::from(n - self.count);
            self.buf = 0;
            self.count = 0;
        } else {
            self.buf <<= n;
            self.count -= n;
        }
    }

    /// Whether more bits were consumed than the data holds.
    pub fn overrun(&self) -> bool {
        self.consumed > 0
    }

    /// Bits consumed so far.
    pub fn bits_read(&self) -> u64 {
        self.pos as u64 * 8 - u64::from(self.count) + self.consumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_codes_of_every_width() {
        let mut w = BitWriter::new();
        let codes: Vec<(u32, u32)> = (0..2000u32)
            .map(|i| {
                (
                    i.wrapping_mul(2654435761u32) >> (32 - (1 + i % 24)),
                    1 + i % 24,
                )
            })
            .collect();
        for &(c, l) in &codes {
            w.write(c, l);
        }
        let total = w.bit_len();
        let bytes = w.finish();
        assert_eq!(bytes.len() as u64, total.div_ceil(8));
        let mut r = BitReader::new(&bytes);
        for &(c, l) in &codes {
            r.refill();
            assert_eq!(r.peek(l), c, "len {l}");
            r.consume(l);
        }
        assert!(!r.overrun());
        assert_eq!(r.bits_read(), total);
        r.refill();
        r.consume(16);
        assert!(r.overrun());
    }
}
