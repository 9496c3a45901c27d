//! Channel-first planes run on the channel-last kernel, a block of channels at a time.
//!
//! Along a plane's rows a vector holds adjacent points: a 7- or 14-point row fills a vector
//! and a part of another, and every plane pays for its padded copy, its strided phases and its
//! ragged last vector. Across channels every lane holds work. So the planes of a block of
//! channels ([`ChannelBlocks::channels`]) are transposed to channel-innermost in a scratch buffer, run through
//! [`channel_runs`] (which skips the taps outside the image, no padding), and the
//! block's outputs transposed back into their planes. The transposes move each input and output
//! value twice, against 9 to 25 multiply-adds per output value.

use super::channel_runs::{self, ChannelsLastLayout, RowsFn, Weights};
use super::geometry::{PaddedLayout, PlaneShape};
use super::plane;
use super::transpose::transpose;
use std::cell::RefCell;

/// Channels run together: four vectors of eight, so that the channel-last kernel's edge points
/// keep four independent sums (with two, a 5x5 window's chain of multiply-adds waits on each
/// one's latency).
const BLOCK: usize = 32;

/// The widest vectors the blocks run on: AVX2's eight lanes also where the CPU has AVX-512.
/// Two vectors of sixteen per block took 1.05-1.12 times AVX2's time on EfficientNet-Lite0's
/// 7x7 layers, blocks of 64 channels were no faster (docs/PERFORMANCE.md).
const BLOCK_LANES: usize = 8;

/// The most values a block's input and output images may hold. Measured on Zen 4
/// (`depthwise_layouts`, docs/PERFORMANCE.md): blocks won on EfficientNet-Lite0's planes up to
/// 28x28 at stride 2 (31,360 values) and lost from 28x28 at stride 1 (50,176) up, where the
/// longer rows fill the padded-plane kernel's vectors and the images outgrow the faster caches.
const MAX_BLOCK_VALUES: usize = 1 << 15;

/// The weights of every channel, as the channel-first operator holds them.
pub(super) struct AllChannels<'a> {
    /// `channels` runs of `taps` values, in kernel order.
    pub kernel: &'a [f32],
    /// One value per channel.
    pub bias: &'a [f32],
    pub channels: usize,
    pub clamp: Option<(f32, f32)>,
}

/// The channel-last layout of one block of channels, built once with the operator, and the
/// kernel running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ChannelBlocks {
    layout: ChannelsLastLayout,
}

thread_local! {
    /// Each thread's scratch: a block's input image, output image and weights. Grown, never
    /// shrunk, so a plan run again reuses it.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl ChannelBlocks {
    /// The blocks for planes of `shape`, or `None` where a block's images would be too large
    /// ([`MAX_BLOCK_VALUES`]), the channel-last kernel does not take the shape, the CPU is not
    /// an x86_64 one with AVX2+FMA (the portable kernel is no faster than the padded planes, and
    /// on aarch64, whose plans hold channel-last depthwise convolutions from 16 channels, the
    /// transposes are element by element and the trade is not measured), or the padded planes
    /// run on AVX-512 tiles: in EfficientNet-Lite0 the tiles took 0.5-0.9 of the blocks' time
    /// on every layer the blocks took before (docs/PERFORMANCE.md), the blocks' two transposes
    /// costing more than the tiles' idle lanes.
    pub(super) fn new(shape: PlaneShape) -> Option<ChannelBlocks> {
        let plane_values =
            (shape.h.checked_mul(shape.w)?).checked_add(shape.oh.checked_mul(shape.ow)?)?;
        let on_tiles =
            PaddedLayout::new(shape).is_some_and(|l| plane::best_for_this_cpu(&l).0 == "AVX-512");
        if !cfg!(target_arch = "x86_64")
            || channel_runs::best_for_this_cpu(BLOCK_LANES).0 == "portable"
            || plane_values.checked_mul(BLOCK)? > MAX_BLOCK_VALUES
            || on_tiles
        {
            return None;
        }
        Some(ChannelBlocks {
            layout: ChannelsLastLayout::new(shape, BLOCK)?,
        })
    }

    /// Channels in a block.
    pub(super) fn channels(&self) -> usize {
        self.layout.channels
    }

    /// The name of the instruction set the blocks run on.
    pub(super) fn kernel_name(&self) -> &'static str {
        channel_runs::best_for_this_cpu(BLOCK_LANES).0
    }

    /// The planes `first..` (as many as `out` holds whole output planes, channel `p %
    /// channels` for plane `p`) of `input` (every input plane), in blocks of
    /// [`channels`](Self::channels) planes
    /// and a last one of fewer. Returns how many planes it computed: all but a last run of
    /// fewer than a vector's channels, left for the caller.
    pub(super) fn run(
        &self,
        weights: &AllChannels,
        input: &[f32],
        out: &mut [f32],
        first: usize,
    ) -> usize {
        let s = &self.layout.shape;
        let (in_plane, out_plane) = (s.h * s.w, s.oh * s.ow);
        let taps = self.layout.taps();
        let planes = out.len() / out_plane;
        let block = self.channels();
        let run: RowsFn = channel_runs::best_for_this_cpu(BLOCK_LANES).1;
        SCRATCH.with_borrow_mut(|scratch| {
            let need = block * (in_plane + out_plane + taps + 1);
            if scratch.len() < need {
                scratch.resize(need, 0.0);
            }
            let (image, rest) = scratch.split_at_mut(block * in_plane);
            let (hwc_out, rest) = rest.split_at_mut(block * out_plane);
            let (block_taps, block_bias) = rest.split_at_mut(block * taps);
            let mut done = 0;
            while done < planes {
                let n = block.min(planes - done);
                let partial;
                let layout = if n == block {
                    &self.layout
                } else {
                    match ChannelsLastLayout::new(*s, n) {
                        Some(l) => {
                            partial = l;
                            &partial
                        }
                        None => break,
                    }
                };
                let p0 = first + done;
                gather_weights(weights, p0, n, taps, block_taps, block_bias);
                let src = &input[p0 * in_plane..][..n * in_plane];
                transpose(src, in_plane, n, in_plane, image, n);
                let block = Weights {
                    taps: &block_taps[..n * taps],
                    bias: &block_bias[..n],
                    clamp: weights.clamp,
                };
                let (image, hwc_out) = (&image[..n * in_plane], &mut hwc_out[..n * out_plane]);
                // SAFETY: the weights, image and output hold what `layout` (of `n` channels)
                // says; `run` is an implementation this CPU runs, its vectors no wider than `n`
                // (a layout has at least `BLOCK_LANES` channels).
                unsafe { run(layout, &block, image, hwc_out, 0) };
                let dst = &mut out[done * out_plane..][..n * out_plane];
                transpose(hwc_out, n, out_plane, n, dst, out_plane);
                done += n;
            }
            done
        })
    }
}

/// The taps of planes `p0..p0 + n` tap-major (each tap's weights for the `n` channels in a
/// row), and their biases.
fn gather_weights(
    weights: &AllChannels,
    p0: usize,
    n: usize,
    taps: usize,
    block_taps: &mut [f32],
    block_bias: &mut [f32],
) {
    for j in 0..n {
        let c = (p0 + j) % weights.channels;
        for (t, &v) in weights.kernel[c * taps..][..taps].iter().enumerate() {
            block_taps[t * n + j] = v;
        }
        block_bias[j] = weights.bias[c];
    }
}
