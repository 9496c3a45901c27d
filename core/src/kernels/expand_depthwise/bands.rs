//! How the fused operator cuts a plane into bands of output rows, and the input rows (of the
//! intermediate, the expansion's output) each band reads.

use crate::kernels::depthwise::PlaneShape;
use crate::kernels::depthwise::geometry::PaddedLayout;

/// The intermediate values of a group of channels for one band: the expansion writes them, the
/// depthwise kernel reads them back right after, from the L2 cache (a phone core's holds 256 KB
/// or more). Not sized for L1: short bands cost more than they save, as each band's depthwise
/// pass loads its padded rows once per few output rows, and each band and group pays its calls
/// and its copy of the kept rows (docs/PERFORMANCE.md, "The expansion fused into the depthwise
/// convolution after it").
const BAND_BYTES: usize = 128 * 1024;

/// One band: output rows of the depthwise convolution and the intermediate rows they read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Band {
    /// Output rows of every plane computed by the band.
    pub out_rows: std::ops::Range<usize>,
    /// Rows of the intermediate planes under the band's windows (inside the plane).
    pub in_rows: std::ops::Range<usize>,
    /// The depthwise convolution of the band alone: its input rows, padded above where the
    /// band starts in the padding, below where it ends there.
    pub layout: PaddedLayout,
}

/// Padded input rows under `rows` output rows of `shape`.
fn span(shape: &PlaneShape, rows: usize) -> Option<usize> {
    (rows.checked_sub(1)?)
        .checked_mul(shape.strides[0])?
        .checked_add((shape.kernel[0] - 1).checked_mul(shape.dilations[0])?)?
        .checked_add(1)
}

/// Output rows per band for groups of `group` channels: as many as keep a group's intermediate
/// rows within [`BAND_BYTES`], at least one.
pub(super) fn rows_per_band(shape: &PlaneShape, group: usize) -> usize {
    let row_bytes = group * shape.w * size_of::<f32>();
    (1..=shape.oh.max(1))
        .take_while(|&r| span(shape, r).is_some_and(|s| s * row_bytes <= BAND_BYTES))
        .last()
        .unwrap_or(1)
}

/// The bands of `rows` output rows each (the last one shorter) covering the output of
/// `shape`; `None` where a band's layout is refused ([`PaddedLayout::new`]) or a size overflows.
pub(super) fn bands(shape: &PlaneShape, rows: usize) -> Option<Vec<Band>> {
    let [sh, _] = shape.strides;
    let pt = shape.pad_top_left[0];
    let mut bands = vec![];
    for o0 in (0..shape.oh).step_by(rows.max(1)) {
        let o1 = (o0 + rows).min(shape.oh);
        // Padded rows first..first + span; input row i is padded row i + pt.
        let first = o0.checked_mul(sh)?;
        let end = first.checked_add(span(shape, o1 - o0)?)?;
        let in_start = first.saturating_sub(pt).min(shape.h);
        let in_end = end.saturating_sub(pt).min(shape.h).max(in_start);
        let band_shape = PlaneShape {
            h: in_end - in_start,
            oh: o1 - o0,
            pad_top_left: [pt.saturating_sub(first), shape.pad_top_left[1]],
            ..*shape
        };
        bands.push(Band {
            out_rows: o0..o1,
            in_rows: in_start..in_end,
            layout: PaddedLayout::new(band_shape)?,
        });
    }
    Some(bands)
}

/// Rows of the band before `next` (ending at `end`) that `next` reads again: the overlap of
/// the windows, `k - s` rows at stride `s` and dilation 1.
pub(super) fn kept(end: usize, next: &Band) -> usize {
    end.saturating_sub(next.in_rows.start)
        .min(next.in_rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(h: usize, k: usize, s: usize, pad: usize, oh: usize) -> PlaneShape {
        PlaneShape {
            h,
            w: h,
            oh,
            ow: oh,
            kernel: [k, k],
            strides: [s, s],
            dilations: [1, 1],
            pad_top_left: [pad, pad],
        }
    }

    /// Each band reads the input rows its windows cover, inside the plane, and the bands
    /// cover the output rows once: EfficientNet-Lite0's block 1 (112 → 56, 3×3 at stride 2,
    /// padded below and right only).
    #[test]
    fn bands_cover_the_output_and_read_their_windows() {
        let s = shape(112, 3, 2, 0, 56);
        let bands = super::bands(&s, 4).unwrap();
        assert_eq!(bands.len(), 14);
        assert_eq!(bands[0].in_rows, 0..9);
        assert_eq!(bands[1].in_rows, 8..17);
        assert_eq!(kept(bands[0].in_rows.end, &bands[1]), 1);
        // The last band's windows end in the padding below: row 112 is not read.
        assert_eq!(bands[13].in_rows, 104..112);
        assert_eq!(bands[13].layout.shape.h, 8);
        let s = shape(56, 5, 1, 2, 56);
        let bands = super::bands(&s, 8).unwrap();
        assert_eq!(bands[0].in_rows, 0..10);
        assert_eq!(bands[0].layout.shape.pad_top_left, [2, 2]);
        assert_eq!(bands[1].in_rows, 6..18);
        assert_eq!(bands[1].layout.shape.pad_top_left, [0, 2]);
        assert_eq!(kept(bands[0].in_rows.end, &bands[1]), 4);
        let covered: usize = bands.iter().map(|b| b.out_rows.len()).sum();
        assert_eq!(covered, 56);
    }

    #[test]
    fn a_band_keeps_a_group_within_the_budget() {
        // 8 channels of 112 values: 3.5 KB a row, 36 rows in 128 KB → 17 output rows at
        // stride 2 (35 rows), the 18th would take 37.
        assert_eq!(rows_per_band(&shape(112, 3, 2, 0, 56), 8), 17);
        // The whole plane where it fits.
        assert_eq!(rows_per_band(&shape(56, 3, 1, 1, 56), 8), 56);
        assert_eq!(rows_per_band(&shape(1 << 20, 3, 1, 1, 1 << 20), 64), 1);
    }
}
