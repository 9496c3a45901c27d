//! Pointwise (1×1, stride 1, group 1) convolutions of channel-first f32 data, read in place.
//!
//! A pointwise convolution is a matrix product per image: `out[co, p] = bias[co] +
//! Σ_ci W[co, ci] · x[ci, p]`, with `x` the image's input channels as rows of pixels. tract
//! lowers it to its packed matrix product, which first copies (packs) the whole input into its
//! kernel's panel layout, and in EfficientNet-Lite0 its 33 pointwise convolutions are most of
//! the inference time. Here the input planes are read where they are: a tile of four or eight
//! output channels × a run of pixels loads, per input channel, its run of that channel's plane
//! (one contiguous read) and the tile's weights, laid out once at rewrite time so that they
//! follow each other ([`tile`]). On small planes (7×7) x86_64 turns the tile around
//! (`by_pixel`): output channels in the lanes, each pixel's input value broadcast, the same
//! panels laid out for a taller tile. The bias, and a clamp following the convolution (ReLU, ReLU6:
//! tract's `Max` and `Min` with a constant), are applied to the accumulators: the output is written
//! once. [`rewrite`] finds these convolutions in the decluttered graph, where tract holds them
//! as an `EinSum` and an `Add`.
//!
//! Each output is the bias, then one multiply-add per input channel in channel order (fused on
//! the vector paths); tract sums in its own order, so results agree with its to rounding.

pub(super) mod before_declutter;
#[cfg(target_arch = "x86_64")]
mod by_pixel;
mod panels;
mod rewrite;
mod tile;

pub(in crate::kernels) use panels::Panels;
pub(super) use rewrite::{following_clamp, replacement};
use tile::Kernel;
pub use tile::MIN_PIXELS;
pub(in crate::kernels) use tile::{Band, BandFn};
use tract_core::internal::*;
use tract_core::tract_linalg::multithread::par_chunks_mut;

/// Bounds every output is clamped to, compared bit for bit (an operator must be `Eq`).
#[derive(Debug, Clone, Copy)]
pub struct Clamp {
    /// Lower bound (`-inf` for none).
    pub low: f32,
    /// Upper bound (`inf` for none).
    pub high: f32,
}

impl PartialEq for Clamp {
    fn eq(&self, other: &Clamp) -> bool {
        self.low.to_bits() == other.low.to_bits() && self.high.to_bits() == other.high.to_bits()
    }
}

impl Eq for Clamp {}

/// Where each axis of the output comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputAxis {
    /// The output channels.
    Channels,
    /// The input's axis at this position.
    Input(usize),
    /// An axis of size 1 the input does not have.
    One,
}

/// How a pointwise convolution's tensors are laid out, as tract's decluttered graph holds them
/// (it drops a batch axis of size 1, for one): the input is any number of batch axes, the
/// input channels at `channel_axis`, then axes holding `pixels` values in all; the output the
/// same batch and pixel axes around the output channels, with axes of size 1 anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PointwiseLayout {
    /// The input channels' axis.
    pub channel_axis: usize,
    /// Values per input plane (the product of the input's axes after the channels).
    pub pixels: usize,
    /// The output's axes.
    pub output: TVec<OutputAxis>,
}

/// The operator: a pointwise convolution with its weights laid out for the tiles when the model
/// was rewritten, and the clamp of the operators it took the place of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointwiseConv {
    /// Input channels.
    k: usize,
    /// Output channels.
    rows: usize,
    layout: PointwiseLayout,
    /// Output channels per tile of the kernel the weights were laid out for.
    tile_rows: usize,
    /// See [`panels::Panels::weights`].
    weights: Arc<Tensor>,
    /// See [`panels::Panels::bias`].
    bias: Arc<Tensor>,
    clamp: Option<Clamp>,
    /// Runs the plain-Rust four-lane kernel even where a vector one exists.
    portable: bool,
}

/// The kernel an op with `k` input and `rows` output channels of planes of `pixels` values
/// runs: the portable one, or the best this CPU has.
fn kernel(portable: bool, pixels: usize, k: usize, rows: usize) -> Kernel {
    if portable {
        tile::PORTABLE
    } else {
        tile::best_for_this_cpu(pixels, k, rows)
    }
}

impl PointwiseConv {
    /// Bytes of weights it holds: the weights laid out for the tiles and the padded bias.
    pub fn bytes(&self) -> usize {
        crate::kernels::tensor_bytes(&[&self.weights, &self.bias])
    }

    /// The operator for `k` input and `rows` output channels laid out as `layout`, with
    /// `weights` row-major `[rows, k]` and `bias` one value per output channel.
    pub fn new(
        layout: PointwiseLayout,
        weights: &[f32],
        bias: &[f32],
        clamp: Option<Clamp>,
        portable: bool,
    ) -> TractResult<PointwiseConv> {
        let rows = bias.len();
        ensure!(
            rows > 0 && !weights.is_empty() && weights.len().is_multiple_of(rows),
            "pointwise weights: {} values for {rows} output channels",
            weights.len(),
        );
        ensure!(
            layout.pixels >= MIN_PIXELS,
            "pointwise planes of {} values, fewer than {MIN_PIXELS}",
            layout.pixels
        );
        let k = weights.len() / rows;
        let tile_rows = kernel(portable, layout.pixels, k, rows).rows;
        // SAFETY: f32 has no invalid bit patterns, and `lay_out_into` writes every value.
        // Laid out in place rather than copied in: this runs over every pointwise weight at
        // each load.
        let mut panels =
            unsafe { Tensor::uninitialized::<f32>(&[panels::panels_len(rows, k, tile_rows)])? };
        panels::lay_out_into(
            weights,
            k,
            tile_rows,
            panels.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        );
        let padded_bias = panels::padded_bias(bias, tile_rows);
        Ok(PointwiseConv {
            k,
            rows,
            layout,
            tile_rows,
            weights: panels.into_arc_tensor(),
            bias: Tensor::from_shape(&[padded_bias.len()], &padded_bias)?.into_arc_tensor(),
            clamp,
            portable,
        })
    }

    /// Input channels.
    pub(in crate::kernels) fn inputs(&self) -> usize {
        self.k
    }

    /// Output channels.
    pub(in crate::kernels) fn outputs(&self) -> usize {
        self.rows
    }

    /// Output channels per tile of the kernel the weights were laid out for.
    pub(in crate::kernels) fn tile_rows(&self) -> usize {
        self.tile_rows
    }

    /// Values per plane.
    pub(in crate::kernels) fn pixels(&self) -> usize {
        self.layout.pixels
    }

    /// The band form of the kernel this op runs ([`Band`]), where it has one, for an operator
    /// computing the op a band of its planes at a time.
    pub(in crate::kernels) fn band_fn(&self) -> Option<BandFn> {
        let kernel = kernel(self.portable, self.layout.pixels, self.k, self.rows);
        kernel.band.filter(|_| kernel.rows == self.tile_rows)
    }

    /// Calls `f` with this op's weights as the kernels read them.
    pub(in crate::kernels) fn with_panels<R>(
        &self,
        f: impl FnOnce(&Panels) -> R,
    ) -> TractResult<R> {
        let weights = self.weights.try_as_plain_ram()?;
        let bias = self.bias.try_as_plain_ram()?;
        let panels = Panels {
            k: self.k,
            rows: self.rows,
            tile_rows: self.tile_rows,
            weights: weights.as_slice::<f32>()?,
            bias: bias.as_slice::<f32>()?,
            clamp: self.clamp.map(|c| (c.low, c.high)),
        };
        Ok(f(&panels))
    }

    /// The images in `input_shape`, checked against the channels and planes this op was built
    /// for.
    pub(in crate::kernels) fn images(&self, input_shape: &[usize]) -> TractResult<usize> {
        let axis = self.layout.channel_axis;
        ensure!(
            input_shape.get(axis) == Some(&self.k)
                && input_shape[axis + 1..].iter().product::<usize>() == self.layout.pixels,
            "pointwise convolution built for {} channels of {} values at axis {axis}, got input \
             {input_shape:?}",
            self.k,
            self.layout.pixels
        );
        Ok(input_shape[..axis].iter().product())
    }

    pub(in crate::kernels) fn output_shape<D: DimLike>(
        &self,
        input_shape: &[D],
    ) -> TractResult<TVec<D>> {
        self.layout
            .output
            .iter()
            .map(|axis| match axis {
                OutputAxis::Channels => Ok(D::from(self.rows)),
                OutputAxis::One => Ok(D::from(1)),
                OutputAxis::Input(i) => input_shape
                    .get(*i)
                    .cloned()
                    .context("pointwise input of too low a rank"),
            })
            .collect()
    }

    fn eval_f32(&self, input: &Tensor) -> TractResult<Tensor> {
        let n = self.images(input.shape())?;
        let pixels = self.layout.pixels;
        let out_shape = self.output_shape(input.shape())?;
        // SAFETY: f32 has no invalid bit patterns, and every output is written below.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        if n == 0 || pixels == 0 {
            return Ok(output);
        }
        let input = input.try_as_plain_ram()?;
        let input = input.as_slice::<f32>()?;
        ensure!(input.len() == n * self.k * pixels);
        let kernel = kernel(self.portable, pixels, self.k, self.rows);
        ensure!(
            kernel.rows == self.tile_rows,
            "pointwise weights laid out for tiles of {} rows, the {} kernel takes {}",
            self.tile_rows,
            kernel.name,
            kernel.rows
        );
        let mut output_ram = output.try_as_plain_ram_mut()?;
        let images = output_ram.as_slice_mut::<f32>()?;
        self.with_panels(|panels| -> TractResult<()> {
            for (x, out) in input
                .chunks_exact(self.k * pixels)
                .zip(images.chunks_exact_mut(self.rows * pixels))
            {
                par_chunks_mut(
                    out,
                    pixels,
                    self.rows * self.k * pixels,
                    |first_row, rows| {
                        // SAFETY: `panels` was laid out by `new` for these channels, `x` is one
                        // image's input and `rows` whole rows of its output (checked above); `run`
                        // is an implementation this CPU runs.
                        unsafe { (kernel.run)(panels, x, pixels, rows, first_row) };
                        Ok(())
                    },
                )?;
            }
            Ok(())
        })??;
        Ok(output)
    }
}

impl Op for PointwiseConv {
    fn name(&self) -> StaticName {
        "NnzipPointwiseConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let kernel = if self.portable {
            "portable kernel".to_string()
        } else {
            format!(
                "vector kernel ({})",
                kernel(false, self.layout.pixels, self.k, self.rows).name
            )
        };
        let clamp = match self.clamp {
            Some(c) => format!(", clamped to [{}, {}]", c.low, c.high),
            None => String::new(),
        };
        Ok(vec![format!(
            "{} -> {} channels of {} values{clamp}, {kernel}",
            self.k, self.rows, self.layout.pixels
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for PointwiseConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.datum_type() == f32::datum_type(),
            "the pointwise convolution takes f32, got {:?}",
            input.datum_type()
        );
        Ok(tvec!(self.eval_f32(&input)?.into_tvalue()))
    }
}

impl TypedOp for PointwiseConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::fact(self.output_shape(&inputs[0].shape)?)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let n: TDim = inputs[0].shape[..self.layout.channel_axis].iter().product();
        let per_image = self.rows * self.k * self.layout.pixels;
        Ok(tvec!((Cost::FMA(f32::datum_type()), n * per_image)))
    }

    as_op!();
}
