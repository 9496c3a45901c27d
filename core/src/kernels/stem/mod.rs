//! An image model's first convolution: few input channels (grey, RGB, RGBA), a k×k kernel, any
//! stride and padding, channel-first f32, with its bias and a following ReLU or ReLU6 taken in.
//!
//! tract runs such a convolution either as im2col and a matrix product (whose reduction, 27
//! inputs per point for an RGB 3x3, is too short for the product to pay for gathering every
//! input column) or, from 128-point rows, on its direct spatial convolution (four output
//! channels at a time, the clamp left to a separate pass over the whole output). nnzip's
//! operator ([`StemConv`]) computes the output directly: each band of output rows has its input
//! rows padded (and de-interleaved at stride 2) into a small buffer ([`band`]), then tiles of
//! several output channels × a run of adjacent points of one row are summed from it in
//! registers, every input of a point a multiply-add of one vector load by broadcast weights,
//! clamped and stored once ([`tile`]).
//!
//! Convolutions it does not take stay on the earlier rule ([`direct_spatial`]): tract's direct
//! spatial convolution for narrow rows of 64 points and more, tract's own choice below.

mod band;
pub mod direct_spatial;
mod tile;

pub use direct_spatial::{MAX_NARROW_K, MIN_NARROW_ROW, is_narrow_stem};

use super::depthwise::PlaneShape;
use super::pointwise::{Clamp, following_clamp};
use super::{StemConvKernel, constant};
use band::BandLayout;
use tile::{Kernel, Weights};
use tract_core::internal::*;
use tract_core::ops::cnn::Conv;
use tract_core::tract_linalg::multithread::par_chunks_mut;

/// The most input channels a convolution has for the operator to take it.
pub const MAX_INPUT_CHANNELS: usize = 4;

/// The operator: a convolution with few input channels, its weights laid out for the tiles when
/// the model was rewritten, and the clamp of the operators it took the place of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StemConv {
    layout: BandLayout,
    /// Output channels.
    cout: usize,
    /// Whether the data has a batch axis (NCHW) or not (CHW).
    batch_axis: bool,
    /// Output channels per tile of the kernel the weights were laid out for.
    tile_rows: usize,
    /// See [`Weights::panels`].
    panels: Arc<Tensor>,
    /// See [`Weights::bias`].
    bias: Arc<Tensor>,
    clamp: Option<Clamp>,
    /// Runs the plain-Rust four-lane kernel even where a vector one exists.
    portable: bool,
}

fn kernel(portable: bool) -> Kernel {
    if portable {
        tile::PORTABLE
    } else {
        tile::best_for_this_cpu()
    }
}

impl StemConv {
    /// Bytes of weights it holds: the panels and the padded bias.
    pub fn bytes(&self) -> usize {
        crate::kernels::tensor_bytes(&[&self.panels, &self.bias])
    }

    /// The operator for `cin` input channels of `shape`, with `kernel` holding `cout` runs of
    /// `cin · kh · kw` weights (input channel, kernel row, kernel column) and `bias` one value
    /// per output channel; `None` where the plane is not one the kernel takes (see
    /// [`BandLayout::new`]).
    pub fn new(
        shape: PlaneShape,
        cin: usize,
        batch_axis: bool,
        kernel_weights: &[f32],
        bias: &[f32],
        clamp: Option<Clamp>,
        portable: bool,
    ) -> TractResult<Option<StemConv>> {
        let Some(layout) = BandLayout::new(shape, cin) else {
            return Ok(None);
        };
        let cout = bias.len();
        ensure!(
            cout > 0 && kernel_weights.len() == cout * layout.taps(),
            "stem convolution weights: {} for {cout} output channels of {} inputs",
            kernel_weights.len(),
            layout.taps()
        );
        let tile_rows = kernel(portable).rows;
        let (panels, padded_bias) = tile::lay_out(kernel_weights, bias, layout.taps(), tile_rows);
        Ok(Some(StemConv {
            layout,
            cout,
            batch_axis,
            tile_rows,
            panels: Tensor::from_shape(&[panels.len()], &panels)?.into_arc_tensor(),
            bias: Tensor::from_shape(&[padded_bias.len()], &padded_bias)?.into_arc_tensor(),
            clamp,
            portable,
        }))
    }

    /// The images in `input_shape`, checked against the channels and plane this op was built
    /// for.
    fn images(&self, input_shape: &[usize]) -> TractResult<usize> {
        let shape = &self.layout.shape;
        let plane_axes = [self.layout.cin, shape.h, shape.w];
        let (n, chw) = if self.batch_axis {
            ensure!(
                input_shape.len() == 4,
                "stem convolution input of rank {}",
                input_shape.len()
            );
            (input_shape[0], &input_shape[1..])
        } else {
            (1, input_shape)
        };
        ensure!(
            chw == plane_axes,
            "stem convolution built for {plane_axes:?} inputs, got input {input_shape:?}"
        );
        Ok(n)
    }

    fn output_shape<D: Clone + From<usize>>(&self, n: Option<D>) -> TVec<D> {
        let shape = &self.layout.shape;
        let mut out: TVec<D> = n.into_iter().collect();
        out.extend([self.cout, shape.oh, shape.ow].map(D::from));
        out
    }

    fn eval_f32(&self, input: &Tensor) -> TractResult<Tensor> {
        let n = self.images(input.shape())?;
        let shape = &self.layout.shape;
        let out_shape = self.output_shape(self.batch_axis.then_some(n));
        // SAFETY: f32 has no invalid bit patterns, and every output is written below.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        if n == 0 {
            return Ok(output);
        }
        let input = input.try_as_plain_ram()?;
        let input = input.as_slice::<f32>()?;
        let image_len = self.layout.cin * shape.h * shape.w;
        ensure!(input.len() == n * image_len);
        let kernel = kernel(self.portable);
        ensure!(
            kernel.rows == self.tile_rows,
            "stem weights laid out for tiles of {} rows, the {} kernel takes {}",
            self.tile_rows,
            kernel.name,
            kernel.rows
        );
        let panels = self.panels.try_as_plain_ram()?;
        let bias = self.bias.try_as_plain_ram()?;
        let weights = Weights {
            layout: &self.layout,
            cout: self.cout,
            tile_rows: self.tile_rows,
            panels: panels.as_slice::<f32>()?,
            bias: bias.as_slice::<f32>()?,
            clamp: self.clamp.map(|c| (c.low, c.high)),
        };
        let plane = shape.oh * shape.ow;
        let mut output_ram = output.try_as_plain_ram_mut()?;
        let images = output_ram.as_slice_mut::<f32>()?;
        for (x, out) in input
            .chunks_exact(image_len)
            .zip(images.chunks_exact_mut(self.cout * plane))
        {
            let work = self.cout * plane * self.layout.taps();
            par_chunks_mut(out, plane, work, |first_plane, planes| {
                let mut scratch = vec![0f32; self.layout.scratch_len()];
                // SAFETY: the weights were laid out by `new` for this kernel's tiles, `x` is
                // one image's input and `planes` whole planes of its output (checked above),
                // `scratch` of the layout's length; `run` is an implementation this CPU runs.
                unsafe { (kernel.run)(&weights, x, planes, first_plane, &mut scratch) };
                Ok(())
            })?;
        }
        Ok(output)
    }
}

impl Op for StemConv {
    fn name(&self) -> StaticName {
        "NnzipStemConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let kernel = if self.portable {
            "portable kernel".to_string()
        } else {
            format!("vector kernel ({})", kernel(false).name)
        };
        let clamp = match self.clamp {
            Some(c) => format!(", clamped to [{}, {}]", c.low, c.high),
            None => String::new(),
        };
        Ok(vec![
            format!(
                "{} -> {} channels, {:?}{clamp}",
                self.layout.cin, self.cout, self.layout.shape
            ),
            format!("bands of {} rows, {kernel}", self.layout.band),
        ])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for StemConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.datum_type() == f32::datum_type(),
            "the stem convolution takes f32, got {:?}",
            input.datum_type()
        );
        Ok(tvec!(self.eval_f32(&input)?.into_tvalue()))
    }
}

impl TypedOp for StemConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        let n = self.batch_axis.then(|| inputs[0].shape[0].clone());
        Ok(tvec!(f32::fact(self.output_shape::<TDim>(n))))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let n = if self.batch_axis {
            inputs[0].shape[0].clone()
        } else {
            1.into()
        };
        let shape = &self.layout.shape;
        let per_image = self.cout * shape.oh * shape.ow * self.layout.taps();
        Ok(tvec!((Cost::FMA(f32::datum_type()), n * per_image)))
    }

    as_op!();
}

/// The patch replacing `node`, a `Conv`, with a [`StemConv`] taking the clamp after it where
/// the convolution is one it takes (see [`StemConvolution::read`]), else with tract's direct
/// spatial convolution where [`is_narrow_stem`] says so (and `kernel_choice` allows either).
pub(super) fn replacement(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
    kernel_choice: StemConvKernel,
) -> TractResult<Option<TypedModelPatch>> {
    let portable = match kernel_choice {
        StemConvKernel::Tract => return Ok(None),
        StemConvKernel::Direct => return direct_spatial::replacement(model, node, conv),
        StemConvKernel::Tiled => false,
        StemConvKernel::Portable => true,
    };
    let Some(stem) = StemConvolution::read(model, node, conv)? else {
        return direct_spatial::replacement(model, node, conv);
    };
    let (clamp, clamp_nodes) = following_clamp(model, node)?;
    let Some(op) = StemConv::new(
        stem.shape,
        stem.cin,
        stem.batch_axis,
        &stem.kernel,
        &stem.bias,
        clamp,
        portable,
    )?
    else {
        return direct_spatial::replacement(model, node, conv);
    };
    let patch = super::replace_absorbing(model, node, "nnzip stem convolution", op, &clamp_nodes)?;
    Ok(Some(patch))
}

/// A convolution the operator takes, as tract's `Conv` holds it.
struct StemConvolution {
    shape: PlaneShape,
    cin: usize,
    /// Whether the data has a batch axis (NCHW) or not (CHW).
    batch_axis: bool,
    /// `cout` runs of `cin · kh · kw` weights.
    kernel: Vec<f32>,
    /// One value per output channel.
    bias: Vec<f32>,
}

impl StemConvolution {
    /// `conv` where the operator takes it: f32, group 1, channel-first over two spatial axes,
    /// at most [`MAX_INPUT_CHANNELS`] input channels, a concrete input shape, constant kernel
    /// and bias.
    fn read(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Self>> {
        let spec = &conv.pool_spec;
        let cin = spec.input_channels;
        if conv.q_params.is_some()
            || conv.group != 1
            || spec.rank() != 2
            || spec.data_format.c_is_last()
            || cin == 0
            || cin > MAX_INPUT_CHANNELS
            || node.inputs.len() != 3
        {
            return Ok(None);
        }
        let input = model.outlet_fact(node.inputs[0])?;
        let batch_axis = spec.data_format.has_n();
        if input.datum_type != f32::datum_type() || input.rank() != 3 + batch_axis as usize {
            return Ok(None);
        }
        let Some(dims) = input.shape[batch_axis as usize..]
            .iter()
            .map(|d| d.to_usize().ok())
            .collect::<Option<TVec<usize>>>()
        else {
            return Ok(None);
        };
        let (Some(kernel), Some(bias)) = (
            constant(model, node.inputs[1])?,
            constant(model, node.inputs[2])?,
        ) else {
            return Ok(None);
        };
        if dims[0] != cin
            || kernel.datum_type() != f32::datum_type()
            || bias.datum_type() != f32::datum_type()
        {
            return Ok(None);
        }
        let cout = spec.output_channels;
        // [group, output channels, input channels × taps] = [1, cout, cin · kh · kw].
        let kernel = conv.kernel_fmt.kernel_as_group_o_ihw(&kernel, 1)?;
        let kernel = kernel.try_as_plain_ram()?;
        let bias_values = bias.try_as_plain_ram()?;
        let bias_values = bias_values.as_slice::<f32>()?;
        let bias: Vec<f32> = match bias_values.len() {
            1 => vec![bias_values[0]; cout],
            n if n == cout => bias_values.to_vec(),
            _ => return Ok(None),
        };
        Ok(Some(StemConvolution {
            shape: PlaneShape::of_convolution(spec, [dims[1], dims[2]]),
            cin,
            batch_axis,
            kernel: kernel.as_slice::<f32>()?.to_vec(),
            bias,
        }))
    }
}
