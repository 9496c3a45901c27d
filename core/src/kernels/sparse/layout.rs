//! The compact form of a pruned weight matrix: for each output row, its kept (non-zero) weights
//! as a column and a value. With weight sharing the value is a codebook index: a layer of at
//! most 16 values (the LeNet presets' 4-bit layers) and 4,096 columns holds each kept weight in
//! one `u16` word, the column in its low 12 bits and the index in its high 4; up to 256 values
//! take a `u16` column and a `u8` index; more values a `u16` column and an f32.
//!
//! Rows, not the file's flat relative-index order: a row's kept weights are what one output
//! sums, so each output is one walk over a contiguous run of entries, with no position
//! arithmetic at run time. Built straight from the decoder's entries
//! ([`SparseRows::from_entries`]: positions and codebook indices as the file stores them) or,
//! for weights that reach the graph dense, from the dense matrix ([`SparseRows::from_dense`]).

use crate::format::SparseEntries;

/// Most columns a row's `u16` columns can name.
pub const MAX_COLUMNS: usize = 1 << 16;

/// Most columns the 12 bits of a packed word name.
pub const PACKED_COLUMNS: usize = 1 << 12;
/// Most distinct values the 4 bits of a packed word index.
pub const NIBBLE_CODEBOOK: usize = 16;
/// Most distinct values held with 8-bit indices.
pub const BYTE_CODEBOOK: usize = 256;
/// Entries after the last row's, so that a kernel may read 16 entries from any entry (the ones
/// past a row's end are masked out).
pub const ENTRY_PADDING: usize = 16;

/// The kept weights, in row order. Codebooks are padded with zeros to their full size (16 or
/// 256): every index the width can spell is valid, so the kernels need no bounds check.
#[derive(Debug, Clone, PartialEq)]
pub enum Entries {
    /// One word per kept weight: column in bits 0–11, codebook index in bits 12–15.
    Packed {
        /// The distinct values, then zeros (16).
        codebook: Vec<f32>,
        /// The words, then [`ENTRY_PADDING`] zero words.
        words: Vec<u16>,
    },
    /// A `u16` column and a `u8` codebook index per kept weight.
    Bytes {
        /// The distinct values, then zeros (256).
        codebook: Vec<f32>,
        /// The columns, then [`ENTRY_PADDING`] zeros.
        columns: Vec<u16>,
        /// The indices, then [`ENTRY_PADDING`] zeros.
        indices: Vec<u8>,
    },
    /// A `u16` column and an f32 value per kept weight.
    Plain {
        /// The columns, then [`ENTRY_PADDING`] zeros.
        columns: Vec<u16>,
        /// The values, then [`ENTRY_PADDING`] zeros.
        values: Vec<f32>,
    },
}

impl Entries {
    /// The column and value of entry `j` (which must exist).
    #[inline(always)]
    pub fn at(&self, j: usize) -> (usize, f32) {
        match self {
            Entries::Packed { codebook, words } => {
                let w = words[j];
                (usize::from(w & 0xfff), codebook[usize::from(w >> 12)])
            }
            Entries::Bytes {
                codebook,
                columns,
                indices,
            } => (usize::from(columns[j]), codebook[usize::from(indices[j])]),
            Entries::Plain { columns, values } => (usize::from(columns[j]), values[j]),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Entries::Packed { codebook, words } => 4 * codebook.len() + 2 * words.len(),
            Entries::Bytes {
                codebook,
                columns,
                indices,
            } => 4 * codebook.len() + 2 * columns.len() + indices.len(),
            Entries::Plain { columns, values } => 2 * columns.len() + 4 * values.len(),
        }
    }
}

/// A `rows × columns` matrix with only its non-zero weights stored, row by row. Built only by
/// [`SparseRows::from_dense`] and [`SparseRows::from_entries`], which guarantee what the
/// vector kernels rely on: offsets increasing up to the entry count, every column
/// `< columns`, codebooks of full size, [`ENTRY_PADDING`] entries after the last.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseRows {
    /// Outputs.
    pub(super) rows: usize,
    /// Inputs summed by each output.
    pub(super) columns: usize,
    /// `rows + 1` offsets into the entries: stored row `i` holds entries
    /// `starts[i]..starts[i + 1]`.
    pub(super) starts: Vec<u32>,
    /// The output row of each stored row, or empty where they are the same. Rows are stored
    /// from the fewest kept weights to the most: the kernels' loops over a row's entries then
    /// run the same number of times row after row, which the CPU's branch predictor follows
    /// (in random order, a row of 16 to 24 kept weights mispredicts its loop's end about once a
    /// row, as costly as its gathers).
    pub(super) order: Vec<u16>,
    /// The kept weights, columns increasing within a row.
    pub(super) entries: Entries,
    /// A factor per row multiplying its sum (the file's row scales, where its rows are the
    /// matrix's rows), or `None`.
    pub(super) row_scales: Option<Vec<f32>>,
}

/// Whether a `rows × columns` matrix can take the compact form: rows numbered in `u32`, columns
/// within [`MAX_COLUMNS`], and neither empty. An empty matrix has nothing to keep, and its row
/// count is not bounded by its (zero) elements: a hostile file's `[10^10, 0]` weight would
/// otherwise size the row tables.
fn fits(rows: usize, columns: usize) -> bool {
    rows > 0 && columns > 0 && columns <= MAX_COLUMNS && u32::try_from(rows).is_ok()
}

/// Where one kept weight sits and what it holds, while a [`SparseRows`] is assembled.
#[derive(Clone, Copy)]
struct Kept {
    row: u32,
    column: u16,
    /// A codebook index, or the value's bits when there is no codebook.
    value: u32,
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
        if !fits(rows, columns) || rows.checked_mul(columns)? != dense.len() {
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
        let mut list = Vec::with_capacity(kept);
        for r in 0..rows {
            for c in 0..columns {
                let v = at(r, c);
                if v != 0.0 {
                    // `r < rows ≤ u32::MAX` and `c < columns ≤ 2^16` (`fits`).
                    list.push(Kept {
                        row: r as u32,
                        column: c as u16,
                        value: v.to_bits(),
                    });
                }
            }
        }
        let codebook = share(&mut list);
        Some(assemble(rows, columns, &list, codebook, None))
    }

    /// The compact form of the matrix the decoder read as `entries` (a tensor of `rows ×
    /// columns` elements stored row-major, or input-major when `transposed`, as in
    /// [`SparseRows::from_dense`]), keeping its codebook indices. `None` when a row is wider
    /// than [`MAX_COLUMNS`] or the sizes disagree.
    pub fn from_entries(
        entries: &SparseEntries,
        rows: usize,
        columns: usize,
        transposed: bool,
    ) -> Option<SparseRows> {
        if !fits(rows, columns) || rows.checked_mul(columns)? != entries.element_count() {
            return None;
        }
        // The file's row scales multiply the matrix's rows when its first dimension is theirs
        // (`Gemm` with `transB`, a 1×1 kernel): the kernel then scales each row's sum. Stored
        // input-major, they scale columns: the values are then kept as the products.
        let per_row = entries
            .row_scales
            .as_ref()
            .filter(|s| !transposed && s.len() == rows);
        let shared = entries.row_scales.is_none() || per_row.is_some();
        let mut list: Vec<Kept> = entries
            .positions
            .iter()
            .zip(&entries.indices)
            .enumerate()
            .map(|(j, (&p, &i))| {
                let p = p as usize;
                let (r, c) = if transposed {
                    (p % rows, p / rows)
                } else {
                    (p / columns, p % columns)
                };
                // `r < rows ≤ u32::MAX` (checked), `c < columns ≤ 2^16`.
                Kept {
                    row: r as u32,
                    column: c as u16,
                    value: if shared {
                        u32::from(i)
                    } else {
                        entries.value(j).to_bits()
                    },
                }
            })
            .collect();
        if transposed {
            // Positions run column by column: a stable sort by row keeps columns increasing.
            list.sort_by_key(|k| k.row);
        }
        let codebook = if shared {
            Some(entries.codebook.clone())
        } else {
            None
        };
        Some(assemble(rows, columns, &list, codebook, per_row.cloned()))
    }

    /// Outputs (rows of the matrix).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Inputs each output sums (columns of the matrix).
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// The kept weights.
    pub fn entries_form(&self) -> &Entries {
        &self.entries
    }

    /// Kept weights.
    pub fn entries(&self) -> usize {
        self.starts.last().map_or(0, |&s| s as usize)
    }

    /// Bytes this form holds in memory (offsets, entries with their padding, codebook, row
    /// scales).
    pub fn bytes(&self) -> usize {
        4 * self.starts.len()
            + 2 * self.order.len()
            + self.entries.bytes()
            + self.row_scales.as_ref().map_or(0, |s| 4 * s.len())
    }

    /// The entry range of stored row `i`.
    pub fn row(&self, i: usize) -> std::ops::Range<usize> {
        self.starts[i] as usize..self.starts[i + 1] as usize
    }

    /// The output row of stored row `i`.
    #[inline(always)]
    pub fn output_of(&self, i: usize) -> usize {
        self.order.get(i).map_or(i, |&o| usize::from(o))
    }

    /// The dense `rows × columns` matrix, row-major (row scales applied): what the kernels
    /// compute with, for checks.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut dense = vec![0.0; self.rows * self.columns];
        for i in 0..self.rows {
            let r = self.output_of(i);
            let scale = self.row_scales.as_ref().map_or(1.0, |s| s[r]);
            for j in self.row(i) {
                let (c, v) = self.entries.at(j);
                dense[r * self.columns + c] = v * scale;
            }
        }
        dense
    }
}

/// The form holding `list` (in row order, columns increasing within a row): `codebook` says
/// that each `value` is an index into it, `None` that it is an f32's bits.
fn assemble(
    rows: usize,
    columns: usize,
    list: &[Kept],
    codebook: Option<Vec<f32>>,
    row_scales: Option<Vec<f32>>,
) -> SparseRows {
    // Where each output row's entries lie in `list`, then the rows by their entry counts.
    let mut by_row = vec![0usize; rows + 1];
    for k in list {
        by_row[k.row as usize + 1] += 1;
    }
    for r in 0..rows {
        by_row[r + 1] += by_row[r];
    }
    let count = |r: usize| by_row[r + 1] - by_row[r];
    let mut rank: Vec<usize> = (0..rows).collect();
    if rows <= MAX_COLUMNS {
        rank.sort_by_key(|&r| count(r));
    }
    let sorted: Vec<Kept> = rank
        .iter()
        .flat_map(|&r| list[by_row[r]..by_row[r + 1]].iter().copied())
        .collect();
    let list = &sorted[..];
    let mut starts = Vec::with_capacity(rows + 1);
    starts.push(0u32);
    for &r in &rank {
        // The entries are fewer than `u32::MAX` (the builders check).
        starts.push(starts[starts.len() - 1] + count(r) as u32);
    }
    let identity = rank.iter().enumerate().all(|(i, &r)| i == r);
    let order = if identity {
        Vec::new()
    } else {
        // `r < rows ≤ 2^16`.
        rank.iter().map(|&r| r as u16).collect()
    };
    let padded = list.len() + ENTRY_PADDING;
    let entries = match codebook {
        Some(mut codebook) if codebook.len() <= NIBBLE_CODEBOOK && columns <= PACKED_COLUMNS => {
            codebook.resize(NIBBLE_CODEBOOK, 0.0);
            let mut words = Vec::with_capacity(padded);
            words.extend(list.iter().map(|k| k.column | ((k.value as u16) << 12)));
            words.resize(padded, 0);
            Entries::Packed { codebook, words }
        }
        Some(mut codebook) if codebook.len() <= BYTE_CODEBOOK => {
            codebook.resize(BYTE_CODEBOOK, 0.0);
            let mut columns = Vec::with_capacity(padded);
            columns.extend(list.iter().map(|k| k.column));
            columns.resize(padded, 0);
            let mut indices = Vec::with_capacity(padded);
            indices.extend(list.iter().map(|k| k.value as u8));
            indices.resize(padded, 0);
            Entries::Bytes {
                codebook,
                columns,
                indices,
            }
        }
        codebook => {
            let value = |k: &Kept| match &codebook {
                Some(cb) => cb.get(k.value as usize).copied().unwrap_or(0.0),
                None => f32::from_bits(k.value),
            };
            let mut columns = Vec::with_capacity(padded);
            columns.extend(list.iter().map(|k| k.column));
            columns.resize(padded, 0);
            let mut values = Vec::with_capacity(padded);
            values.extend(list.iter().map(value));
            values.resize(padded, 0.0);
            Entries::Plain { columns, values }
        }
    };
    SparseRows {
        rows,
        columns,
        starts,
        order,
        entries,
        row_scales,
    }
}

/// Turns the values' bits in `list` into indices of the codebook it returns when they take at
/// most 256 distinct values (compared by bits: the dense path multiplies by exactly these
/// numbers); leaves them and returns `None` otherwise.
fn share(list: &mut [Kept]) -> Option<Vec<f32>> {
    let mut codebook: Vec<f32> = Vec::new();
    let mut lookup: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    for k in list.iter() {
        if let std::collections::hash_map::Entry::Vacant(slot) = lookup.entry(k.value) {
            if codebook.len() == BYTE_CODEBOOK {
                return None;
            }
            slot.insert(codebook.len() as u32);
            codebook.push(f32::from_bits(k.value));
        }
    }
    for k in list.iter_mut() {
        k.value = lookup.get(&k.value).copied().unwrap_or(0);
    }
    Some(codebook)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_matrix_is_refused_before_its_rows_size_anything() {
        // The phone-path fuzzer's find: a weight of shape [10^10, 0] holds no element, so the
        // element count agreed with it while the row tables took 80 GB.
        assert!(SparseRows::from_dense(&[], 10_000_000_000, 0, false).is_none());
        assert!(SparseRows::from_dense(&[], 0, 16, false).is_none());
        assert!(SparseRows::from_dense(&[1.0, 0.0], 1, 2, false).is_some());
    }

    /// The non-zero values, row-major.
    fn values(s: &SparseRows) -> Vec<f32> {
        s.to_dense().into_iter().filter(|v| *v != 0.0).collect()
    }

    #[test]
    fn rows_are_stored_from_the_fewest_kept_weights() {
        // 3 × 4 with 3, 1 and 2 kept weights.
        let dense = [1.0, 2.0, 0.0, 3.0, 0.0, 0.0, 4.0, 0.0, 5.0, 0.0, 0.0, 6.0];
        let s = SparseRows::from_dense(&dense, 3, 4, false).unwrap();
        assert_eq!(s.order, [1, 2, 0]);
        assert_eq!(s.starts, [0, 1, 3, 6]);
        assert_eq!(s.to_dense(), dense);
        assert_eq!(
            (0..3).map(|i| s.output_of(i)).collect::<Vec<_>>(),
            [1, 2, 0]
        );
    }

    #[test]
    fn rows_hold_the_non_zero_weights_in_order() {
        // 2 × 3: [[0, 1.5, 0], [2, 0, 1.5]]
        let dense = [0.0, 1.5, 0.0, 2.0, 0.0, 1.5];
        let s = SparseRows::from_dense(&dense, 2, 3, false).unwrap();
        assert_eq!(s.starts, [0, 1, 3]);
        let Entries::Packed { codebook, words } = &s.entries else {
            panic!("two distinct values in 3 columns make packed words")
        };
        // Column 1 index 0, column 0 index 1, column 2 index 0.
        assert_eq!(words[..3], [0x0001, 0x1000, 0x0002]);
        assert_eq!(words.len(), 3 + ENTRY_PADDING);
        assert_eq!(&codebook[..2], &[1.5, 2.0]);
        assert_eq!(codebook.len(), 16);
        assert_eq!(values(&s), [1.5, 2.0, 1.5]);
        // The same matrix stored input-major (3 × 2).
        let t = [0.0, 2.0, 1.5, 0.0, 0.0, 1.5];
        assert_eq!(SparseRows::from_dense(&t, 2, 3, true).unwrap(), s);
        assert_eq!(s.bytes(), 4 * 3 + 4 * 16 + 2 * (3 + ENTRY_PADDING));
    }

    #[test]
    fn wide_rows_and_up_to_256_values_take_a_column_and_a_byte() {
        let dense: Vec<f32> = (0..100).map(|i| (i % 40) as f32 - 20.0).collect();
        let s = SparseRows::from_dense(&dense, 4, 25, false).unwrap();
        assert!(matches!(s.entries, Entries::Bytes { .. }));
        let kept: Vec<f32> = dense.iter().copied().filter(|v| *v != 0.0).collect();
        assert_eq!(values(&s), kept);
        // Two values, but a row wider than 12 bits of column.
        let mut wide = vec![0.0; PACKED_COLUMNS + 1];
        wide[PACKED_COLUMNS] = 1.0;
        let s = SparseRows::from_dense(&wide, 1, PACKED_COLUMNS + 1, false).unwrap();
        assert!(matches!(s.entries, Entries::Bytes { .. }));
        assert_eq!(s.entries.at(0), (PACKED_COLUMNS, 1.0));
    }

    #[test]
    fn many_distinct_values_stay_plain_and_wide_rows_are_refused() {
        let dense: Vec<f32> = (1..=300).map(|i| i as f32).collect();
        let s = SparseRows::from_dense(&dense, 1, 300, false).unwrap();
        assert!(matches!(s.entries, Entries::Plain { .. }));
        assert_eq!(values(&s), dense);
        assert!(SparseRows::from_dense(&dense, 2, 300, false).is_none());
        assert!(
            SparseRows::from_dense(&vec![0.0; MAX_COLUMNS + 1], 1, MAX_COLUMNS + 1, false)
                .is_none()
        );
    }

    /// The decoder's entries give the form the dense matrix gives, codebook as stored: row
    /// scales of the rows stay factors of the rows, those of an input-major matrix become
    /// values.
    #[test]
    fn decoded_entries_make_the_same_rows() {
        // 2 × 3 row-major: [[0, 0.5, 0], [-1, 0, 0.5]], codebook [0, 0.5, -1].
        let entries = SparseEntries {
            shape: vec![2, 3],
            codebook: vec![0.0, 0.5, -1.0],
            row_scales: None,
            positions: vec![1, 3, 5],
            indices: vec![1, 2, 1],
        };
        let s = SparseRows::from_entries(&entries, 2, 3, false).unwrap();
        assert_eq!(s.starts, [0, 1, 3]);
        assert_eq!(values(&s), [0.5, -1.0, 0.5]);
        let Entries::Packed { words, .. } = &s.entries else {
            panic!("a 3-value codebook packs")
        };
        assert_eq!(words[..3], [0x1001, 0x2000, 0x1002]);
        // The same matrix stored input-major (3 × 2): positions (c, r) → c·2 + r.
        let t = SparseEntries {
            shape: vec![3, 2],
            positions: vec![1, 2, 5],
            indices: vec![2, 1, 1],
            ..entries.clone()
        };
        assert_eq!(SparseRows::from_entries(&t, 2, 3, true).unwrap(), s);
        // Row scales [2, 4]: factors of the rows, or the products stored input-major.
        let scaled = SparseEntries {
            row_scales: Some(vec![2.0, 4.0]),
            ..entries
        };
        let s = SparseRows::from_entries(&scaled, 2, 3, false).unwrap();
        assert_eq!(s.row_scales.as_deref(), Some(&[2.0, 4.0][..]));
        assert_eq!(values(&s), [1.0, -4.0, 2.0]);
        let t = SparseEntries {
            row_scales: Some(vec![2.0, 4.0, 8.0]),
            ..t
        };
        let s = SparseRows::from_entries(&t, 2, 3, true).unwrap();
        assert!(matches!(s.entries, Entries::Plain { .. }));
        // (r0, c1) = 0.5·4, (r1, c0) = -1·2, (r1, c2) = 0.5·8.
        assert_eq!(values(&s), [2.0, -2.0, 4.0]);
    }
}
