//! Where each value of one padded plane lives: the scratch buffer's layout and the offset of
//! every kernel tap in it.

use tract_core::ops::cnn::PoolSpec;

/// The widest vector any implementation uses; rows of the scratch buffer are padded so that a
/// whole vector can be loaded at every output column a row holds.
pub(in crate::kernels) const MAX_LANES: usize = 16;

/// Scratch buffers larger than this (in f32) are not worth it: such planes stay on tract's path.
const MAX_SCRATCH: usize = 1 << 24;

/// The sizes of one depthwise convolution, per plane (any number of images and channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlaneShape {
    /// Input plane height.
    pub h: usize,
    /// Input plane width.
    pub w: usize,
    /// Output plane height.
    pub oh: usize,
    /// Output plane width.
    pub ow: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub strides: [usize; 2],
    /// Vertical and horizontal dilation.
    pub dilations: [usize; 2],
    /// Zero rows above and columns left of the input (those below and right follow from the
    /// output size).
    pub pad_top_left: [usize; 2],
}

impl PlaneShape {
    /// The planes of a two-dimensional convolution `spec` over input planes of `hw`.
    pub fn of_convolution(spec: &PoolSpec, hw: [usize; 2]) -> PlaneShape {
        let padding = spec.computed_padding(&hw);
        let (strides, dilations) = (spec.strides(), spec.dilations());
        PlaneShape {
            h: hw[0],
            w: hw[1],
            oh: padding[0].convoluted,
            ow: padding[1].convoluted,
            kernel: [spec.kernel_shape[0], spec.kernel_shape[1]],
            strides: [strides[0], strides[1]],
            dilations: [dilations[0], dilations[1]],
            pad_top_left: [padding[0].pad_before, padding[1].pad_before],
        }
    }
}

/// The layout of one padded plane in the scratch buffer.
///
/// For a horizontal stride `s`, every padded row is stored as `s` phases, phase `p` holding the
/// padded columns `p, p + s, p + 2s, …`: the input of output column `x` at horizontal tap `kx`
/// is then column `x + (kx·d) / s` of phase `(kx·d) % s` (`d` the dilation), so strided
/// convolutions read contiguous vectors too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(in crate::kernels) struct PaddedLayout {
    pub(in crate::kernels) shape: PlaneShape,
    /// Padded rows the scratch holds.
    pub(in crate::kernels) rows: usize,
    /// Columns of one phase of a scratch row.
    pub(in crate::kernels) phase_len: usize,
    /// One scratch row: `stride_w` phases.
    pub(in crate::kernels) pitch: usize,
    /// For each tap, in kernel order (rows, then columns), its offset in the scratch buffer from
    /// the first padded row and column an output point reads.
    pub(in crate::kernels) tap_offsets: Vec<usize>,
}

impl PaddedLayout {
    /// The layout for `shape`, or `None` where a size is zero, an offset overflows, or the
    /// scratch buffer would exceed [`MAX_SCRATCH`] values.
    pub(in crate::kernels) fn new(shape: PlaneShape) -> Option<PaddedLayout> {
        let [kh, kw] = shape.kernel;
        let [sh, sw] = shape.strides;
        let [dh, dw] = shape.dilations;
        if [kh, kw, sh, sw, dh, dw].contains(&0) {
            return None;
        }
        // Padded rows and columns an output reads: (o - 1)·stride + (k - 1)·dilation + 1.
        let span = |o: usize, s: usize, k: usize, d: usize| -> Option<usize> {
            o.checked_sub(1)?
                .checked_mul(s)?
                .checked_add((k - 1).checked_mul(d)?)?
                .checked_add(1)
        };
        let rows = if shape.oh == 0 {
            0
        } else {
            span(shape.oh, sh, kh, dh)?
        };
        if shape.ow > 0 {
            span(shape.ow, sw, kw, dw)?;
        }
        let max_shift = (kw - 1).checked_mul(dw)? / sw;
        let phase_len = shape
            .ow
            .checked_next_multiple_of(MAX_LANES)?
            .checked_add(max_shift)?;
        let pitch = phase_len.checked_mul(sw)?;
        if rows.checked_mul(pitch)? > MAX_SCRATCH {
            return None;
        }
        let mut tap_offsets = Vec::with_capacity(kh.checked_mul(kw)?);
        for ky in 0..kh {
            for kx in 0..kw {
                let x = kx.checked_mul(dw)?;
                let row = ky.checked_mul(dh)?.checked_mul(pitch)?;
                let phase = (x % sw).checked_mul(phase_len)?;
                tap_offsets.push(row.checked_add(phase)?.checked_add(x / sw)?);
            }
        }
        Some(PaddedLayout {
            shape,
            rows,
            phase_len,
            pitch,
            tap_offsets,
        })
    }

    /// Values in one scratch buffer.
    pub(in crate::kernels) fn scratch_len(&self) -> usize {
        self.rows * self.pitch
    }

    /// Kernel taps per channel.
    pub(in crate::kernels) fn taps(&self) -> usize {
        self.tap_offsets.len()
    }
}

/// One row at any stride `s`, element by element: column j of phase p holds padded column
/// j·s + p, input column j·s + p - pl.
pub(super) fn fill_phases(src: &[f32], dst: &mut [f32], pl: usize, s: usize, len: usize) {
    let w = src.len();
    for (p, dst) in dst.chunks_exact_mut(len).enumerate() {
        let j0 = if pl > p { (pl - p).div_ceil(s) } else { 0 };
        let j1 = if w + pl > p {
            (w + pl - p).div_ceil(s)
        } else {
            0
        }
        .min(len);
        if j1 > j0 {
            let x0 = j0 * s + p - pl;
            for (d, x) in dst[j0..j1].iter_mut().zip(src[x0..].iter().step_by(s)) {
                *d = *x;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(k: usize, s: usize, d: usize, hw: usize, out: usize, pad: usize) -> PlaneShape {
        PlaneShape {
            h: hw,
            w: hw,
            oh: out,
            ow: out,
            kernel: [k, k],
            strides: [s, s],
            dilations: [d, d],
            pad_top_left: [pad, pad],
        }
    }

    #[test]
    fn strided_taps_land_in_their_phase() {
        // 3x3, stride 2, 112 -> 56: phase 0 holds even padded columns, phase 1 odd ones.
        let layout = PaddedLayout::new(shape(3, 2, 1, 112, 56, 0)).unwrap();
        // 56 columns rounded up to the widest vector (64) and the one column tap 2 shifts by.
        assert_eq!(layout.phase_len, 64 + 1);
        assert_eq!(layout.pitch, 2 * 65);
        assert_eq!(layout.rows, 2 * 55 + 3);
        assert_eq!(&layout.tap_offsets[..3], &[0, 65, 1]);
        assert_eq!(layout.tap_offsets[3], layout.pitch);
    }

    #[test]
    fn zero_sizes_and_huge_planes_are_refused() {
        assert!(PaddedLayout::new(shape(0, 1, 1, 8, 8, 0)).is_none());
        assert!(PaddedLayout::new(shape(3, 0, 1, 8, 8, 0)).is_none());
        assert!(PaddedLayout::new(shape(3, 1, 1, 1 << 13, 1 << 13, 1)).is_none());
        assert!(PaddedLayout::new(shape(3, 1, usize::MAX, 8, 8, 1)).is_none());
    }
}
