//! A pointwise convolution (its bias and clamp) followed by a depthwise convolution (its bias
//! and clamp), as one operator that never writes the whole intermediate.
//!
//! In a MobileNet-style block the expansion (1×1, a few channels to many) writes its output,
//! and the depthwise convolution after it reads it back: on EfficientNet-Lite0's block 1 that is
//! 96 planes of 112×112, 4.8 MB, more than a phone's L2 cache, written to memory and read back
//! by two memory-bound operators. Here the output is computed a band of output rows at a time
//! ([`bands`]): for each band, by groups of a few channels, the expansion computes the
//! intermediate rows the band's windows cover into a small buffer (the pointwise kernel's
//! tiles over a band, [`crate::kernels::pointwise::Band`]), and the depthwise kernel runs on
//! that buffer as on a plane of the band's rows (its padded-plane kernels, on a layout of the
//! band); only the depthwise output is written. The rows the next band reads again (the
//! windows' overlap) are kept per channel, not computed again.
//!
//! Each output is computed as the two operators compute it (the same kernels, the same order
//! of sums), so results equal the unfused pair's bit for bit where both run the same
//! implementations.
//!
//! [`rewrite::fuse`] puts it in place of nnzip's two operators where the intermediate has no
//! other reader and the rule ([`rewrite::fusion_wins`]) says it is faster.

mod bands;
pub(super) mod rewrite;

use super::depthwise::PaddedDepthwise;
use super::pointwise::{Band as PointwiseBand, BandFn, Panels, PointwiseConv};
use bands::Band;
use tract_core::internal::*;
use tract_core::tract_linalg::multithread::par_chunks_mut;

/// Channels per group, in the pointwise kernel's tiles of output channels: one tile's keeps a
/// group's band of the intermediate smallest for a band height, and two were no faster
/// (docs/PERFORMANCE.md).
const TILES_PER_GROUP: usize = 1;

/// The operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandDepthwise {
    expand: PointwiseConv,
    depthwise: PaddedDepthwise,
    /// Channels computed together in a band.
    group: usize,
    bands: Vec<Band>,
    /// The most intermediate rows a band reads, and the most the next one reads again.
    band_rows: usize,
    kept_rows: usize,
}

impl ExpandDepthwise {
    /// The two operators as one, or `None` where they do not fit together: the expansion's
    /// output is the depthwise convolution's input (channels and plane), its kernel has a band
    /// form, and the depthwise plane cuts into bands.
    pub fn new(expand: PointwiseConv, depthwise: PaddedDepthwise) -> Option<ExpandDepthwise> {
        let shape = *depthwise.shape();
        if expand.outputs() != depthwise.channels()
            || expand.pixels() != shape.h * shape.w
            || expand.band_fn().is_none()
            || shape.oh == 0
        {
            return None;
        }
        let group = expand.tile_rows() * TILES_PER_GROUP;
        let rows = bands::rows_per_band(&shape, group);
        let bands = bands::bands(&shape, rows)?;
        let band_rows = bands.iter().map(|b| b.in_rows.len()).max()?;
        let kept_rows = bands
            .windows(2)
            .map(|b| bands::kept(b[0].in_rows.end, &b[1]))
            .max()
            .unwrap_or(0);
        Some(ExpandDepthwise {
            expand,
            depthwise,
            group,
            bands,
            band_rows,
            kept_rows,
        })
    }

    /// Bytes of weights it holds: both operators'.
    pub fn bytes(&self) -> usize {
        self.expand.bytes() + self.depthwise.bytes()
    }

    fn output_shape<D: DimLike>(&self, input_shape: &[D]) -> TractResult<TVec<D>> {
        let mid = self.expand.output_shape(input_shape)?;
        let n = (mid.len() == 4).then(|| mid[0].clone());
        Ok(self.depthwise.output_shape(n))
    }

    fn eval_f32(&self, input: &Tensor) -> TractResult<Tensor> {
        let n = self.expand.images(input.shape())?;
        let mid = self.expand.output_shape(input.shape())?;
        ensure!(
            self.depthwise.images(&mid)? == n,
            "fused expansion and depthwise convolution: {n} images in, intermediate {mid:?}"
        );
        let out_shape = self.output_shape(input.shape())?;
        // SAFETY: f32 has no invalid bit patterns, and every output is written below.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        let shape = *self.depthwise.shape();
        let out_plane = shape.oh * shape.ow;
        let (k, channels) = (self.expand.inputs(), self.depthwise.channels());
        if n == 0 || out_plane == 0 {
            return Ok(output);
        }
        let input = input.try_as_plain_ram()?;
        let input = input.as_slice::<f32>()?;
        ensure!(input.len() == n * k * shape.h * shape.w);
        let band_fn = self
            .expand
            .band_fn()
            .context("no band form of the pointwise kernel")?;
        let cost =
            channels * (k * shape.h * shape.w + out_plane * shape.kernel[0] * shape.kernel[1]);
        let mut output_ram = output.try_as_plain_ram_mut()?;
        let images = output_ram.as_slice_mut::<f32>()?;
        self.expand.with_panels(|panels| {
            self.depthwise.with_planes(|planes| {
                for (x, out) in input
                    .chunks_exact(k * shape.h * shape.w)
                    .zip(images.chunks_exact_mut(channels * out_plane))
                {
                    let image = Image {
                        panels,
                        band_fn,
                        planes,
                        x,
                    };
                    par_chunks_mut(out, out_plane, cost, |first, chunk| {
                        self.channels(&image, first, chunk);
                        Ok(())
                    })?;
                }
                Ok::<_, TractError>(())
            })?
        })??;
        Ok(output)
    }

    /// The output planes of channels `first..` (as many as `out` holds) of one image.
    fn channels(&self, image: &Image, first: usize, out: &mut [f32]) {
        let shape = image.planes.layout.shape;
        let (w, out_plane) = (shape.w, shape.oh * shape.ow);
        let count = out.len() / out_plane;
        let slot = self.band_rows * w;
        let kept_slot = self.kept_rows * w;
        let mut band = vec![0f32; self.group * slot];
        let mut kept = vec![0f32; count * kept_slot];
        let scratch_len = self.bands.iter().map(|b| b.layout.scratch_len()).max();
        let mut scratch = vec![0f32; scratch_len.unwrap_or(0)];
        for (i, b) in self.bands.iter().enumerate() {
            // The scratch holds zeros wherever the band's layout holds no input: written again
            // where the layout changes (at the first and last bands).
            if i > 0 && self.bands[i - 1].layout != b.layout {
                scratch.fill(0.0);
            }
            let from_before = match i {
                0 => 0,
                _ => bands::kept(self.bands[i - 1].in_rows.end, b),
            };
            let for_next = self
                .bands
                .get(i + 1)
                .map_or(0, |next| bands::kept(b.in_rows.end, next));
            let new_rows = b.in_rows.start + from_before..b.in_rows.end;
            for g0 in (0..count).step_by(self.group) {
                let g1 = (g0 + self.group).min(count);
                for c in g0..g1 {
                    let rows = &mut band[(c - g0) * slot..][..from_before * w];
                    rows.copy_from_slice(&kept[c * kept_slot..][..from_before * w]);
                }
                if !new_rows.is_empty() {
                    let pointwise = PointwiseBand {
                        x: &image.x[new_rows.start * w..],
                        x_plane: shape.h * w,
                        pixels: new_rows.len() * w,
                        out: band[from_before * w..].as_mut_ptr(),
                        out_row: slot,
                        rows: first + g0..first + g1,
                    };
                    // SAFETY: the panels are the op's, laid out for the kernel whose band form
                    // `band_fn` is (checked by `band_fn`); the run of new rows is inside every
                    // input plane and inside each channel's slot of `band` (`from_before +
                    // new_rows.len() <= band_rows`), whose `g1 - g0` slots the rows fill.
                    unsafe { (image.band_fn)(image.panels, &pointwise) };
                }
                for c in g0..g1 {
                    let src = &band[(c - g0) * slot..][..b.in_rows.len() * w];
                    let dst = &mut out[c * out_plane + b.out_rows.start * shape.ow..]
                        [..b.out_rows.len() * shape.ow];
                    let channel = first + c;
                    let taps = image.planes.layout.taps();
                    let taps = &image.planes.kernel[channel * taps..][..taps];
                    let bias = image.planes.bias[channel];
                    // SAFETY: the scratch holds the largest band layout's values, `src` the
                    // band's input rows, `dst` its output rows; `run` is the depthwise op's
                    // kernel, which takes any layout of its window, stride and dilation.
                    unsafe {
                        (image.planes.run)(
                            &b.layout,
                            src,
                            &mut scratch,
                            taps,
                            bias,
                            image.planes.clamp,
                            dst,
                        )
                    };
                    let tail = (b.in_rows.len() - for_next) * w;
                    kept[c * kept_slot..][..for_next * w]
                        .copy_from_slice(&band[(c - g0) * slot + tail..][..for_next * w]);
                }
            }
        }
    }
}

/// One image's operands.
struct Image<'a> {
    panels: &'a Panels<'a>,
    band_fn: BandFn,
    planes: &'a super::depthwise::Planes<'a>,
    /// The image's input planes.
    x: &'a [f32],
}

impl Op for ExpandDepthwise {
    fn name(&self) -> StaticName {
        "NnzipExpandDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = self.expand.info()?;
        info.extend(self.depthwise.info()?);
        info.push(format!(
            "by bands of {} output rows, {} channels at a time",
            self.bands[0].out_rows.len(),
            self.group
        ));
        Ok(info)
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for ExpandDepthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.datum_type() == f32::datum_type(),
            "the fused expansion and depthwise convolution take f32, got {:?}",
            input.datum_type()
        );
        Ok(tvec!(self.eval_f32(&input)?.into_tvalue()))
    }
}

impl TypedOp for ExpandDepthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mid = self.expand.output_facts(inputs)?;
        self.depthwise.output_facts(&[&mid[0]])
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let mid = self.expand.output_facts(inputs)?;
        let expand = self.expand.cost(inputs)?;
        let depthwise = self.depthwise.cost(&[&mid[0]])?;
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            expand[0].1.clone() + depthwise[0].1.clone()
        )))
    }

    as_op!();
}
