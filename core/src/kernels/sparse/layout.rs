//! The compact form of a pruned weight matrix: for each output row, its kept (non-zero) weights
//! as a column and a value. With weight sharing the value is a codebook index: a layer of at
//! most 16 values (the LeNet presets' 4-bit layers) and 4,096 columns holds each kept weight in
//! one `u16` word, the column in its low 12 bits and the index in its high 4; up to 256 values
//! take a `u16` column and a `u8` index; more values a `u16` column and an f32.
//!
//! Rows, not the file's flat relative-index order: a row's kept weights are what one output
//! sums, so each output is one walk over its entries, with no position arithmetic at run time.
//! Rows are stored in slices of [`SLICE`] side by side (sliced ELLPACK): a slice's first entry
//! of each of its rows, then their second, and so on, so that a vector kernel sums [`SLICE`]
//! rows at once, one per lane, with one load of entries per step and no sum across lanes at the
//! end. Rows are sorted by their kept count first, so within a slice the rows that have ended
//! by a step are its first lanes; a step stores only the entries of the rows still running
//! (no empty places: padded to the longest row, LeNet-300-100's layers took 14% more places
//! than kept weights), and a kernel reads it as a whole step that starts before it, masking
//! the ended lanes. Built straight from the decoder's entries ([`SparseRows::from_entries`]:
//! positions and codebook indices as the file stores them) or, for weights that reach the graph
//! dense, from the dense matrix ([`SparseRows::from_dense`]).

use crate::format::SparseEntries;

/// Most columns: a row's kept count is held in a `u16`.
pub const MAX_COLUMNS: usize = u16::MAX as usize;
/// Most rows: the stored order of the rows is held in `u16`s.
pub const MAX_ROWS: usize = 1 << 16;
/// Rows summed side by side: the lanes of an AVX2 vector of f32, two NEON vectors.
pub const SLICE: usize = 8;

/// Most columns the 12 bits of a packed word name.
pub const PACKED_COLUMNS: usize = 1 << 12;
/// Most distinct values the 4 bits of a packed word index.
pub const NIBBLE_CODEBOOK: usize = 16;
/// Most distinct values held with 8-bit indices.
pub const BYTE_CODEBOOK: usize = 256;

/// The kept weights, in slices (see the module documentation), after [`SLICE`] empty places
/// (column 0, index or value 0) that a first step's masked lanes may read. Codebooks are padded with zeros to their full size (16 or 256): every
/// index the width can spell is valid, so the kernels need no bounds check.
#[derive(Debug, Clone, PartialEq)]
pub enum Entries {
    /// One word per kept weight: column in bits 0–11, codebook index in bits 12–15.
    Packed {
        /// The distinct values, then zeros (16).
        codebook: Vec<f32>,
        /// The words.
        words: Vec<u16>,
    },
    /// A `u16` column and a `u8` codebook index per kept weight.
    Bytes {
        /// The distinct values, then zeros (256).
        codebook: Vec<f32>,
        /// The columns.
        columns: Vec<u16>,
        /// The indices.
        indices: Vec<u8>,
    },
    /// A `u16` column and an f32 value per kept weight.
    Plain {
        /// The columns.
        columns: Vec<u16>,
        /// The values.
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

/// A `rows × columns` matrix with only its non-zero weights stored, row by row in slices. Built
/// only by [`SparseRows::from_dense`] and [`SparseRows::from_entries`], which guarantee what
/// the vector kernels rely on: `SLICE` lengths per slice, increasing within it; [`SLICE`]
/// places before the first slice; each slice's entries `Σ_l lengths[l]` from its offset, step
/// after step; every column `< columns`; codebooks of full size.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseRows {
    /// Outputs.
    pub(super) rows: usize,
    /// Inputs summed by each output.
    pub(super) columns: usize,
    /// The kept count of each lane, slice by slice: [`SparseRows::pad`] zeros, then each stored
    /// row's.
    pub(super) lengths: Vec<[u16; SLICE]>,
    /// Lanes before the first stored row (the first slice's, short of a whole slice).
    pad: usize,
    /// `slices + 1` offsets into the entries: slice `s` holds entries `slice_starts[s]..
    /// slice_starts[s + 1]`, step after step, a step the entries of its lanes still running
    /// (see [`SparseRows::row`]).
    pub(super) slice_starts: Vec<u32>,
    /// The output row of each stored row, or empty where they are the same. Rows are stored
    /// from the fewest kept weights to the most: a slice's rows are then nearly as long as each
    /// other (few empty places), and the kernels' loops run the same number of times slice
    /// after slice, which the CPU's branch predictor follows.
    pub(super) order: Vec<u16>,
    /// The kept weights, columns increasing within a row.
    pub(super) entries: Entries,
    /// A factor per row multiplying its sum (the file's row scales, where its rows are the
    /// matrix's rows), or `None`.
    pub(super) row_scales: Option<Vec<f32>>,
    /// Kept weights (the empty places not counted).
    kept: usize,
}

/// Whether a `rows × columns` matrix can take the compact form: rows within [`MAX_ROWS`],
/// columns within [`MAX_COLUMNS`], and neither empty. An empty matrix has nothing to keep, and
/// its row count is not bounded by its (zero) elements: a hostile file's `[10^10, 0]` weight
/// would otherwise size the row tables.
fn fits(rows: usize, columns: usize) -> bool {
    rows > 0 && columns > 0 && columns <= MAX_COLUMNS && rows <= MAX_ROWS
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
    /// takes it). `None` when a row is wider than [`MAX_COLUMNS`], the rows more than
    /// [`MAX_ROWS`], the entries exceed `u32`, or the sizes disagree.
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
                    // `r < rows ≤ 2^16` and `c < columns < 2^16` (`fits`).
                    list.push(Kept {
                        row: r as u32,
                        column: c as u16,
                        value: v.to_bits(),
                    });
                }
            }
        }
        let codebook = share(&mut list);
        assemble(rows, columns, &list, codebook, None)
    }

    /// The compact form of the matrix the decoder read as `entries` (a tensor of `rows ×
    /// columns` elements stored row-major, or input-major when `transposed`, as in
    /// [`SparseRows::from_dense`]), keeping its codebook indices. `None` where
    /// [`SparseRows::from_dense`] refuses the matrix.
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
                // `r < rows ≤ 2^16` and `c < columns < 2^16` (`fits`).
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
        assemble(rows, columns, &list, codebook, per_row.cloned())
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
        self.kept
    }

    /// Bytes this form holds in memory (lengths, slice offsets, order, entries with the empty
    /// places before them, codebook, row scales).
    pub fn bytes(&self) -> usize {
        2 * SLICE * self.lengths.len()
            + 4 * self.slice_starts.len()
            + 2 * self.order.len()
            + self.entries.bytes()
            + self.row_scales.as_ref().map_or(0, |s| 4 * s.len())
    }

    /// Slices of stored rows.
    pub fn slices(&self) -> usize {
        self.slice_starts.len() - 1
    }

    /// The first entry of slice `s`, its steps (its longest row's kept count, in its last
    /// lane) and the steps in which every lane runs (its shortest row's, in its first lane).
    #[inline(always)]
    pub fn slice(&self, s: usize) -> (usize, usize, usize) {
        let lengths = self.lengths(s);
        (
            self.slice_starts[s] as usize,
            usize::from(lengths[SLICE - 1]),
            usize::from(lengths[0]),
        )
    }

    /// The kept counts of slice `s`'s rows, lane by lane (0 for lanes without a row).
    #[inline(always)]
    pub fn lengths(&self, s: usize) -> &[u16; SLICE] {
        &self.lengths[s]
    }

    /// The entries of stored row `i`, in column order.
    pub fn row(&self, i: usize) -> impl Iterator<Item = usize> {
        let (s, l) = ((i + self.pad) / SLICE, (i + self.pad) % SLICE);
        let (start, _, _) = self.slice(s);
        let lengths = *self.lengths(s);
        // Step `t` holds the lanes from `ended(t)` on, from `cursor`.
        let ended = move |t: usize| lengths.iter().filter(|&&n| usize::from(n) <= t).count();
        (0..usize::from(lengths[l])).scan(start, move |cursor, t| {
            let first = ended(t);
            let at = *cursor + l - first;
            *cursor += SLICE - first;
            Some(at)
        })
    }

    /// The output row that lane `l` of slice `s` sums, or `None` for a lane without a row.
    #[inline(always)]
    pub fn output_of_lane(&self, s: usize, l: usize) -> Option<usize> {
        (s * SLICE + l)
            .checked_sub(self.pad)
            .map(|i| self.output_of(i))
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
/// that each `value` is an index into it, `None` that it is an f32's bits. `None` when the
/// entries with their empty places exceed `u32`.
fn assemble(
    rows: usize,
    columns: usize,
    list: &[Kept],
    codebook: Option<Vec<f32>>,
    row_scales: Option<Vec<f32>>,
) -> Option<SparseRows> {
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
    rank.sort_by_key(|&r| count(r));
    let slices = rows.div_ceil(SLICE);
    // The lanes without a row come first, beside the shortest rows: at the end they would
    // take as many empty places as the longest row has kept weights.
    let pad = slices * SLICE - rows;
    let lanes: Vec<Option<usize>> = std::iter::repeat_n(None, pad)
        .chain(rank.iter().map(|&r| Some(r)))
        .collect();
    // A row keeps at most `columns ≤ u16::MAX` weights (`fits`).
    let (lane_slices, _) = lanes.as_chunks::<SLICE>();
    let lengths: Vec<[u16; SLICE]> = lane_slices
        .iter()
        .map(|slice| slice.map(|r| r.map_or(0, count) as u16))
        .collect();
    // Each place: the kept weight it holds, or none (the first `SLICE`); each step holds the
    // entries of the lanes still running.
    let mut places: Vec<Option<&Kept>> = Vec::with_capacity(SLICE + list.len());
    places.resize(SLICE, None);
    let mut slice_starts = Vec::with_capacity(slices + 1);
    for lanes in lane_slices {
        slice_starts.push(u32::try_from(places.len()).ok()?);
        let width = lanes.iter().map(|r| r.map_or(0, count)).max().unwrap_or(0);
        for t in 0..width {
            places.extend(
                lanes
                    .iter()
                    .flatten()
                    .filter(|&&r| t < count(r))
                    .map(|&r| Some(&list[by_row[r] + t])),
            );
        }
    }
    slice_starts.push(u32::try_from(places.len()).ok()?);
    let identity = rank.iter().enumerate().all(|(i, &r)| i == r);
    let order = if identity {
        Vec::new()
    } else {
        // `r < rows ≤ 2^16` (`fits`).
        rank.iter().map(|&r| r as u16).collect()
    };
    let column = |p: &Option<&Kept>| p.map_or(0, |k| k.column);
    let entries = match codebook {
        Some(mut codebook) if codebook.len() <= NIBBLE_CODEBOOK && columns <= PACKED_COLUMNS => {
            codebook.resize(NIBBLE_CODEBOOK, 0.0);
            let words = places
                .iter()
                .map(|p| p.map_or(0, |k| k.column | ((k.value as u16) << 12)))
                .collect();
            Entries::Packed { codebook, words }
        }
        Some(mut codebook) if codebook.len() <= BYTE_CODEBOOK => {
            codebook.resize(BYTE_CODEBOOK, 0.0);
            Entries::Bytes {
                codebook,
                columns: places.iter().map(column).collect(),
                indices: places
                    .iter()
                    .map(|p| p.map_or(0, |k| k.value as u8))
                    .collect(),
            }
        }
        codebook => {
            let value = |k: &Kept| match &codebook {
                Some(cb) => cb.get(k.value as usize).copied().unwrap_or(0.0),
                None => f32::from_bits(k.value),
            };
            Entries::Plain {
                columns: places.iter().map(column).collect(),
                values: places.iter().map(|p| p.map_or(0.0, value)).collect(),
            }
        }
    };
    Some(SparseRows {
        rows,
        columns,
        lengths,
        pad,
        slice_starts,
        order,
        entries,
        row_scales,
        kept: list.len(),
    })
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
        assert_eq!(s.lengths, [[0, 0, 0, 0, 0, 1, 2, 3]]);
        // After the empty places, one slice of 3 steps (the five lanes without a row first):
        // the first entry of each row, the second of the two longer ones, the third of the
        // longest.
        assert_eq!(s.slice_starts, [SLICE as u32, SLICE as u32 + 6]);
        assert_eq!(s.slice(0), (SLICE, 3, 0));
        let Entries::Packed { codebook, words } = &s.entries else {
            panic!("six values in 4 columns make packed words")
        };
        let word =
            |c: u16, v: f32| c | (codebook.iter().position(|&b| b == v).unwrap() as u16) << 12;
        let want = [
            &[0; SLICE][..],
            &[word(2, 4.0), word(0, 5.0), word(0, 1.0)],
            &[word(3, 6.0), word(1, 2.0)],
            &[word(3, 3.0)],
        ]
        .concat();
        assert_eq!(words, &want);
        let row = |i| s.row(i).collect::<Vec<_>>();
        let first = SLICE;
        assert_eq!(row(0), [first]);
        assert_eq!(row(1), [first + 1, first + 3]);
        assert_eq!(row(2), [first + 2, first + 4, first + 5]);
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
        assert!(s.order.is_empty(), "already from the shortest row");
        assert_eq!(s.lengths[0][SLICE - 2..], [1, 2]);
        let Entries::Packed { codebook, words } = &s.entries else {
            panic!("two distinct values in 3 columns make packed words")
        };
        // Rows in the last two lanes. Step 0: column 1 index 0 (row 0), column 0 index 1 (row
        // 1); step 1: column 2 index 0 (row 1).
        assert_eq!(words[SLICE..], [0x0001, 0x1000, 0x0002]);
        assert_eq!(&codebook[..2], &[1.5, 2.0]);
        assert_eq!(codebook.len(), 16);
        assert_eq!(values(&s), [1.5, 2.0, 1.5]);
        // The same matrix stored input-major (3 × 2).
        let t = [0.0, 2.0, 1.5, 0.0, 0.0, 1.5];
        assert_eq!(SparseRows::from_dense(&t, 2, 3, true).unwrap(), s);
        assert_eq!(s.bytes(), 2 * SLICE + 4 * 2 + 4 * 16 + 2 * (SLICE + 3));
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
        let first = s.row(0).next().expect("the row keeps a weight");
        assert_eq!(s.entries.at(first), (PACKED_COLUMNS, 1.0));
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
        assert_eq!(s.lengths[0][SLICE - 2..], [1, 2]);
        assert_eq!(values(&s), [0.5, -1.0, 0.5]);
        let Entries::Packed { words, .. } = &s.entries else {
            panic!("a 3-value codebook packs")
        };
        assert_eq!(words[SLICE..], [0x1001, 0x2000, 0x1002]);
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
