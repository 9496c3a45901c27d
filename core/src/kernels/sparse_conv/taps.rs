//! The compact form of a pruned, shared convolution kernel: for each output channel, its kept
//! weights as one word each, the offset of the input value the weight meets at an output
//! point's first padded position (its input channel's plane in the padded planes, then its tap
//! in [`PaddedLayout`]) and its codebook index.
//!
//! The offset is resolved once, at rewrite time, so the kernel adds each kept weight's plane
//! with one load per output vector and no index arithmetic. Kept weights are stored in the
//! kernel's order (input channel, then tap) within each output channel: the planes an output
//! channel reads are walked forwards.

use crate::format::SparseEntries;
use crate::kernels::depthwise::geometry::PaddedLayout;
use std::collections::HashMap;

/// Bits of a word holding the offset.
const OFFSET_BITS: u32 = 24;
/// Most padded values the offsets reach (all input channels' planes).
pub const MAX_PADDED: usize = 1 << OFFSET_BITS;
/// Most distinct values: the index is a word's top 8 bits.
pub const MAX_CODEBOOK: usize = 1 << (32 - OFFSET_BITS);

/// A convolution kernel `[outputs, inputs, kh, kw]` with only its non-zero weights stored.
/// Built only by [`KeptTaps::from_entries`] and [`KeptTaps::from_dense`], which guarantee what
/// the kernel relies on: `outputs + 1` increasing starts ending at the word count, every index
/// within the codebook, every offset within `inputs` padded planes of the layout it was built
/// for.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptTaps {
    outputs: usize,
    inputs: usize,
    /// Weights per output channel (kept or not): input channels × taps.
    per_output: usize,
    /// Output channel `o` holds words `starts[o]..starts[o + 1]`.
    starts: Vec<u32>,
    /// Offset in bits 0–23, codebook index in bits 24–31.
    words: Vec<u32>,
    /// The distinct values (at most [`MAX_CODEBOOK`]).
    codebook: Vec<f32>,
    /// A factor per output channel multiplying its sum (the file's row scales), or `None`.
    scales: Option<Vec<f32>>,
}

/// One kept weight while the form is built: its position in the kernel and codebook index.
type Kept = (usize, usize);

impl KeptTaps {
    /// The compact form of the decoder's `entries` for a kernel of `shape` (`[outputs, inputs,
    /// kh, kw]`, the entries' own element order) over planes laid out as `layout`; `None` where
    /// they do not fit it (see [`KeptTaps::build`]).
    pub(in crate::kernels) fn from_entries(
        entries: &SparseEntries,
        shape: [usize; 4],
        layout: &PaddedLayout,
    ) -> Option<KeptTaps> {
        if entries.element_count() != shape.iter().product::<usize>()
            || entries
                .shape
                .first()
                .is_some_and(|&o| o as usize != shape[0])
        {
            return None;
        }
        let kept = entries
            .positions
            .iter()
            .zip(&entries.indices)
            .map(|(&p, &i)| (p as usize, usize::from(i)));
        Self::build(
            kept,
            entries.codebook.clone(),
            entries.row_scales.clone(),
            shape,
            layout,
        )
    }

    /// The compact form of `dense`, a kernel of `shape` in row-major order, its distinct non-zero
    /// values as the codebook; `None` where it has more than [`MAX_CODEBOOK`] of them or does
    /// not fit the layout.
    pub(in crate::kernels) fn from_dense(
        dense: &[f32],
        shape: [usize; 4],
        layout: &PaddedLayout,
    ) -> Option<KeptTaps> {
        if dense.len() != shape.iter().product::<usize>() {
            return None;
        }
        let mut codebook = Vec::new();
        let mut index_of: HashMap<u32, usize> = HashMap::new();
        let mut kept = Vec::new();
        for (p, &v) in dense.iter().enumerate().filter(|(_, v)| **v != 0.0) {
            let next = codebook.len();
            let i = *index_of.entry(v.to_bits()).or_insert(next);
            if i == next {
                if next == MAX_CODEBOOK {
                    return None;
                }
                codebook.push(v);
            }
            kept.push((p, i));
        }
        Self::build(kept.into_iter(), codebook, None, shape, layout)
    }

    /// The form of the kept weights `kept` (positions strictly increasing, in row-major order of
    /// `shape`), or `None` where a position or index is out of range, the codebook exceeds
    /// [`MAX_CODEBOOK`], the scales are not one per output channel, the layout's taps are not
    /// the kernel's, or the padded planes exceed [`MAX_PADDED`] values.
    fn build(
        kept: impl Iterator<Item = Kept>,
        codebook: Vec<f32>,
        scales: Option<Vec<f32>>,
        shape: [usize; 4],
        layout: &PaddedLayout,
    ) -> Option<KeptTaps> {
        let [outputs, inputs, kh, kw] = shape;
        let taps = kh.checked_mul(kw)?;
        let per_output = inputs.checked_mul(taps)?;
        let plane = layout.scratch_len();
        if outputs == 0
            || per_output == 0
            || layout.taps() != taps
            || codebook.len() > MAX_CODEBOOK
            || inputs.checked_mul(plane)? > MAX_PADDED
            || scales.as_ref().is_some_and(|s| s.len() != outputs)
        {
            return None;
        }
        let mut starts = Vec::with_capacity(outputs + 1);
        starts.push(0u32);
        let mut words = Vec::new();
        let mut last = None;
        for (p, index) in kept {
            if last.is_some_and(|l| p <= l) || index >= codebook.len() {
                return None;
            }
            last = Some(p);
            let (o, within) = (p / per_output, p % per_output);
            if o >= outputs {
                return None;
            }
            while starts.len() <= o {
                starts.push(u32::try_from(words.len()).ok()?);
            }
            let offset = (within / taps) * plane + layout.tap_offsets[within % taps];
            words.push(offset as u32 | (index as u32) << OFFSET_BITS);
        }
        while starts.len() <= outputs {
            starts.push(u32::try_from(words.len()).ok()?);
        }
        Some(KeptTaps {
            outputs,
            inputs,
            per_output,
            starts,
            words,
            codebook,
            scales,
        })
    }

    /// Output channels.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Input channels.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Kept weights.
    pub fn kept(&self) -> usize {
        self.words.len()
    }

    /// Kept weights over all weights.
    pub fn density(&self) -> f64 {
        self.kept() as f64 / (self.outputs * self.per_output).max(1) as f64
    }

    /// Bytes held: the words, starts, codebook and scales.
    pub fn bytes(&self) -> usize {
        4 * (self.words.len()
            + self.starts.len()
            + self.codebook.len()
            + self.scales.as_ref().map_or(0, Vec::len))
    }

    /// Output channel `o`'s words and the factor of its sum.
    #[inline(always)]
    pub fn output(&self, o: usize) -> (&[u32], f32) {
        let (a, b) = (self.starts[o] as usize, self.starts[o + 1] as usize);
        let scale = self.scales.as_ref().map_or(1.0, |s| s[o]);
        (&self.words[a..b], scale)
    }

    /// The codebook (every word's index is within it).
    pub fn codebook(&self) -> &[f32] {
        &self.codebook
    }
}

/// A word's offset and codebook index.
#[inline(always)]
pub fn split(word: u32) -> (usize, usize) {
    (
        (word & (MAX_PADDED as u32 - 1)) as usize,
        (word >> OFFSET_BITS) as usize,
    )
}
