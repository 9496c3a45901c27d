//! The compact form of a pruned weight matrix: for each output row, the columns of its kept
//! (non-zero) weights as `u16` and their values: codebook indices when the matrix has few
//! distinct non-zero values (weight sharing), four bits each up to 16 values (the LeNet presets'
//! 4-bit layers), eight up to 256, f32 otherwise.
//!
//! Rows, not the file's flat relative-index order: a row's kept weights are what one output
//! sums, so each output is one walk over a contiguous run of columns and values, with no
//! position arithmetic at run time.

/// Most columns a row's `u16` indices can name.
pub const MAX_COLUMNS: usize = 1 << 16;

/// Most distinct values held with 4-bit indices.
pub const NIBBLE_CODEBOOK: usize = 16;
/// Most distinct values held with 8-bit indices.
pub const BYTE_CODEBOOK: usize = 256;
/// Bytes after the packed 4-bit indices, so that a kernel may read 8 bytes from the byte of any
/// entry.
pub const NIBBLE_PADDING: usize = 8;

/// The values of the kept weights. Codebooks are padded with zeros to their full size (16 or
/// 256): every index the width can spell is valid, so the kernels need no bounds check.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Two 4-bit indices a byte (entry `j` in byte `j / 2`, low nibble first), then
    /// [`NIBBLE_PADDING`] zero bytes; a codebook of 16.
    Nibbles {
        /// The distinct values, then zeros (16).
        codebook: Vec<f32>,
        /// The indices, packed.
        packed: Vec<u8>,
    },
    /// One `u8` per kept weight; a codebook of 256.
    Bytes {
        /// The distinct values, then zeros (256).
        codebook: Vec<f32>,
        /// One index per kept weight.
        indices: Vec<u8>,
    },
    /// One f32 per kept weight.
    Plain(Vec<f32>),
}

impl Values {
    /// The value of entry `j` (which must exist).
    #[inline(always)]
    pub fn at(&self, j: usize) -> f32 {
        match self {
            Values::Nibbles { codebook, packed } => {
                codebook[usize::from((packed[j / 2] >> ((j & 1) * 4)) & 15)]
            }
            Values::Bytes { codebook, indices } => codebook[usize::from(indices[j])],
            Values::Plain(v) => v[j],
        }
    }
}

/// A `rows × columns` matrix with only its non-zero weights stored, row by row. Built only by
/// [`SparseRows::from_dense`], which guarantees what the vector kernels rely on: offsets
/// increasing up to the entry count, every column `< columns`, codebooks of full size and the
/// packed indices' padding.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseRows {
    /// Outputs.
    pub(super) rows: usize,
    /// Inputs summed by each output.
    pub(super) columns: usize,
    /// `rows + 1` offsets into `columns_of` and the values: row `r` holds entries
    /// `starts[r]..starts[r + 1]`.
    pub(super) starts: Vec<u32>,
    /// The column of each kept weight, increasing within a row; every one `< columns`.
    pub(super) column_of: Vec<u16>,
    /// The kept weights' values, in the order of `column_of`.
    pub(super) values: Values,
}

impl SparseRows {
    /// The compact form of `dense`, a row-major `rows × columns` matrix when `transposed` is
    /// false, `columns × rows` when it is true (a weight stored input-major, as ONNX `MatMul`
    /// takes it). `None` when a row is wider than [`MAX_COLUMNS`], the entries exceed `u32`, or
    /// the sizes disagree.
    pub fn from_dense(
        dense: &[f32],
        rows: usize,
        columns: usize,
        transposed: bool,
    ) -> Option<SparseRows> {
        if columns > MAX_COLUMNS || rows.checked_mul(columns)? != dense.len() {
            return None;
        }
        let at = |r: usize, c: usize| {
            if transposed {
                dense[c * rows + r]
            } else {
                dense[r * columns + c]
            }
        };
        let kept = dense.iter().filter(|v| **v != 0.0).count();
        u32::try_from(kept).ok()?;
        let mut starts = Vec::with_capacity(rows + 1);
        let mut column_of = Vec::with_capacity(kept);
        let mut plain = Vec::with_capacity(kept);
        starts.push(0);
        for r in 0..rows {
            for c in 0..columns {
                let v = at(r, c);
                if v != 0.0 {
                    // `c < columns ≤ 2^16`.
                    column_of.push(c as u16);
                    plain.push(v);
                }
            }
            starts.push(column_of.len() as u32);
        }
        Some(SparseRows {
            rows,
            columns,
            starts,
            column_of,
            values: share(plain),
        })
    }

    /// Outputs (rows of the matrix).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Inputs each output sums (columns of the matrix).
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// The kept weights' values.
    pub fn values(&self) -> &Values {
        &self.values
    }

    /// Kept weights.
    pub fn entries(&self) -> usize {
        self.column_of.len()
    }

    /// Bytes this form holds in memory (offsets, columns, values and codebook).
    pub fn bytes(&self) -> usize {
        let values = match &self.values {
            Values::Nibbles { codebook, packed } => 4 * codebook.len() + packed.len(),
            Values::Bytes { codebook, indices } => 4 * codebook.len() + indices.len(),
            Values::Plain(v) => 4 * v.len(),
        };
        4 * self.starts.len() + 2 * self.column_of.len() + values
    }

    /// The entry range of row `r`.
    pub fn row(&self, r: usize) -> std::ops::Range<usize> {
        self.starts[r] as usize..self.starts[r + 1] as usize
    }
}

/// `values` as codebook indices when they take at most 256 distinct values (compared by bits:
/// the dense path multiplies by exactly these numbers), else as they are.
fn share(values: Vec<f32>) -> Values {
    let mut codebook: Vec<f32> = Vec::new();
    let mut lookup: std::collections::HashMap<u32, u8> = std::collections::HashMap::new();
    let mut indices = Vec::with_capacity(values.len());
    for &v in &values {
        let index = match lookup.get(&v.to_bits()) {
            Some(&i) => i,
            None if codebook.len() < BYTE_CODEBOOK => {
                let i = codebook.len() as u8;
                codebook.push(v);
                lookup.insert(v.to_bits(), i);
                i
            }
            None => return Values::Plain(values),
        };
        indices.push(index);
    }
    if codebook.len() <= NIBBLE_CODEBOOK {
        codebook.resize(NIBBLE_CODEBOOK, 0.0);
        let mut packed: Vec<u8> = indices
            .chunks(2)
            .map(|pair| pair[0] | pair.get(1).map_or(0, |hi| hi << 4))
            .collect();
        packed.resize(packed.len() + NIBBLE_PADDING, 0);
        return Values::Nibbles { codebook, packed };
    }
    codebook.resize(BYTE_CODEBOOK, 0.0);
    Values::Bytes { codebook, indices }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_hold_the_non_zero_weights_in_order() {
        // 2 × 3: [[0, 1.5, 0], [2, 0, 1.5]]
        let dense = [0.0, 1.5, 0.0, 2.0, 0.0, 1.5];
        let s = SparseRows::from_dense(&dense, 2, 3, false).unwrap();
        assert_eq!(s.starts, [0, 1, 3]);
        assert_eq!(s.column_of, [1, 0, 2]);
        let Values::Nibbles { codebook, packed } = &s.values else {
            panic!("two distinct values make a 4-bit codebook")
        };
        assert_eq!(packed[..2], [0x10, 0x00]);
        assert_eq!(packed.len(), 2 + NIBBLE_PADDING);
        assert_eq!(&codebook[..2], &[1.5, 2.0]);
        assert_eq!(codebook.len(), 16);
        assert_eq!(
            (0..3).map(|j| s.values.at(j)).collect::<Vec<_>>(),
            [1.5, 2.0, 1.5]
        );
        // The same matrix stored input-major (3 × 2).
        let t = [0.0, 2.0, 1.5, 0.0, 0.0, 1.5];
        assert_eq!(SparseRows::from_dense(&t, 2, 3, true).unwrap(), s);
        assert_eq!(s.bytes(), 4 * 3 + 2 * 3 + 4 * 16 + 2 + NIBBLE_PADDING);
    }

    #[test]
    fn up_to_256_values_take_a_byte_each() {
        let dense: Vec<f32> = (0..100).map(|i| (i % 40) as f32 - 20.0).collect();
        let s = SparseRows::from_dense(&dense, 4, 25, false).unwrap();
        assert!(matches!(s.values, Values::Bytes { .. }));
        let kept: Vec<f32> = dense.iter().copied().filter(|v| *v != 0.0).collect();
        assert_eq!(
            (0..s.entries()).map(|j| s.values.at(j)).collect::<Vec<_>>(),
            kept
        );
    }

    #[test]
    fn many_distinct_values_stay_plain_and_wide_rows_are_refused() {
        let dense: Vec<f32> = (1..=300).map(|i| i as f32).collect();
        let s = SparseRows::from_dense(&dense, 1, 300, false).unwrap();
        assert_eq!(s.values, Values::Plain(dense.clone()));
        assert!(SparseRows::from_dense(&dense, 2, 300, false).is_none());
        assert!(
            SparseRows::from_dense(&vec![0.0; MAX_COLUMNS + 1], 1, MAX_COLUMNS + 1, false)
                .is_none()
        );
    }
}
