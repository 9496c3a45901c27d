//! Depthwise 2-D convolution of channel-first f32 data (NCHW or CHW) through a padded copy of
//! each input plane.
//!
//! tract lowers a depthwise convolution to its zone walk: every plane split into a valid zone
//! and border zones, each border zone on a generic path that re-checks which taps fall inside
//! the image. At 7x7 with a 5x5 kernel and a pad of 2 almost every output is in a border zone,
//! and strided zones (stride 2, a quarter of EfficientNet-Lite0's depthwise work) run scalar.
//! Here each plane is first copied into a zero-padded scratch buffer ([`geometry`]), so that
//! every output point takes the same branch-free loop ([`plane`]): the copy costs one move per
//! input value, against 9 to 25 multiply-adds per output value.
//!
//! The sums are the zone walk's (the bias first, then the taps in kernel order), with fused
//! multiply-adds on the vector paths, so results agree with tract's to rounding.

mod geometry;
mod plane;
mod simd;

pub use geometry::PlaneShape;

use super::{DepthwiseKernel, constant};
use geometry::PaddedLayout;
use tract_hir::internal::*;
use tract_hir::tract_core::ops::cnn::Conv;
use tract_hir::tract_core::tract_linalg::multithread::par_chunks_mut;

/// The operator: a depthwise convolution with its kernel and bias held as constants, laid out
/// for the kernel when the model was rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedDepthwise {
    layout: PaddedLayout,
    /// Channels (input and output).
    channels: usize,
    /// Whether the data has a batch axis (NCHW) or not (CHW).
    batch_axis: bool,
    /// `channels` runs of the kernel's taps, in kernel order.
    kernel: Arc<Tensor>,
    /// One value per channel.
    bias: Arc<Tensor>,
    /// Runs the plain-Rust four-lane kernel even where a vector one exists.
    portable: bool,
}

impl PaddedDepthwise {
    /// The operator for `channels` planes of `shape`, with `kernel` holding `channels` runs of
    /// `kh · kw` taps and `bias` one value per channel; `None` where the plane is not one the
    /// kernel takes (see [`PaddedLayout::new`]).
    pub fn new(
        shape: PlaneShape,
        channels: usize,
        batch_axis: bool,
        kernel: &[f32],
        bias: &[f32],
        portable: bool,
    ) -> TractResult<Option<PaddedDepthwise>> {
        let Some(layout) = PaddedLayout::new(shape) else {
            return Ok(None);
        };
        ensure!(
            kernel.len() == channels * layout.taps() && bias.len() == channels,
            "depthwise weights: {} taps and {} biases for {channels} channels of {} taps",
            kernel.len(),
            bias.len(),
            layout.taps()
        );
        Ok(Some(PaddedDepthwise {
            layout,
            channels,
            batch_axis,
            kernel: Tensor::from_shape(&[kernel.len()], kernel)?.into_arc_tensor(),
            bias: Tensor::from_shape(&[channels], bias)?.into_arc_tensor(),
            portable,
        }))
    }

    /// The images in `input_shape`, checked against the channels and plane this op was built
    /// for.
    fn images(&self, input_shape: &[usize]) -> TractResult<usize> {
        let shape = &self.layout.shape;
        let plane_axes = [self.channels, shape.h, shape.w];
        let (n, chw) = if self.batch_axis {
            ensure!(
                input_shape.len() == 4,
                "depthwise input of rank {}",
                input_shape.len()
            );
            (input_shape[0], &input_shape[1..])
        } else {
            (1, input_shape)
        };
        ensure!(
            chw == plane_axes,
            "depthwise convolution built for {plane_axes:?} planes, got input {input_shape:?}"
        );
        Ok(n)
    }

    fn output_shape<D: Clone + From<usize>>(&self, n: Option<D>) -> TVec<D> {
        let shape = &self.layout.shape;
        let mut out: TVec<D> = n.into_iter().collect();
        out.extend([self.channels, shape.oh, shape.ow].map(D::from));
        out
    }

    fn eval_f32(&self, input: &Tensor) -> TractResult<Tensor> {
        let n = self.images(input.shape())?;
        let shape = &self.layout.shape;
        let (in_plane, out_plane) = (shape.h * shape.w, shape.oh * shape.ow);
        let planes = n * self.channels;
        let taps = self.layout.taps();
        let out_shape = self.output_shape(self.batch_axis.then_some(n));
        // SAFETY: f32 has no invalid bit patterns, and every output is written below.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        if planes == 0 || out_plane == 0 {
            return Ok(output);
        }
        let input = input.try_as_plain_ram()?;
        let input = input.as_slice::<f32>()?;
        ensure!(input.len() == planes * in_plane);
        let kernel = self.kernel.try_as_plain_ram()?;
        let kernel = kernel.as_slice::<f32>()?;
        let bias = self.bias.try_as_plain_ram()?;
        let bias = bias.as_slice::<f32>()?;
        let run = if self.portable {
            plane::plane_portable
        } else {
            plane::best_for_this_cpu().1
        };
        par_chunks_mut(
            output.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
            out_plane,
            planes * out_plane * taps,
            |first, chunk| {
                let mut scratch = vec![0f32; self.layout.scratch_len()];
                for (ix, out) in chunk.chunks_exact_mut(out_plane).enumerate() {
                    let c = (first + ix) % self.channels;
                    let src = &input[(first + ix) * in_plane..][..in_plane];
                    let taps = &kernel[c * taps..][..taps];
                    // SAFETY: the scratch, taps, input and output planes have the sizes of
                    // `self.layout` (checked above and in `PaddedDepthwise::new`), and `run` is
                    // an implementation this CPU runs.
                    unsafe { run(&self.layout, src, &mut scratch, taps, bias[c], out) };
                }
                Ok(())
            },
        )?;
        Ok(output)
    }
}

impl Op for PaddedDepthwise {
    fn name(&self) -> StaticName {
        "NnzipPaddedDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let kernel = if self.portable {
            "portable kernel".to_string()
        } else {
            format!("vector kernel ({})", plane::best_for_this_cpu().0)
        };
        Ok(vec![format!("{:?}", self.layout.shape), kernel])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for PaddedDepthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.datum_type() == f32::datum_type(),
            "the padded depthwise convolution takes f32, got {:?}",
            input.datum_type()
        );
        Ok(tvec!(self.eval_f32(&input)?.into_tvalue()))
    }
}

impl TypedOp for PaddedDepthwise {
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
        let per_image = self.channels * shape.oh * shape.ow * self.layout.taps();
        Ok(tvec!((Cost::FMA(f32::datum_type()), n * per_image)))
    }

    as_op!();
}

/// The patch replacing `node`, a `Conv`, with a [`PaddedDepthwise`], or `None` where it is not a
/// depthwise convolution the kernel takes: f32, channel-first, two spatial axes, group = input
/// channels = output channels > 1 (tract's own condition for a depthwise convolution), constant
/// kernel and bias, concrete channels and plane.
pub(super) fn replacement(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
    kernel_choice: DepthwiseKernel,
) -> TractResult<Option<TypedModelPatch>> {
    if kernel_choice == DepthwiseKernel::Tract {
        return Ok(None);
    }
    let Some(op) = padded_depthwise(model, node, conv, kernel_choice)? else {
        return Ok(None);
    };
    TypedModelPatch::replace_single_op(model, node, &node.inputs[..1], op).map(Some)
}

fn padded_depthwise(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
    kernel_choice: DepthwiseKernel,
) -> TractResult<Option<PaddedDepthwise>> {
    let spec = &conv.pool_spec;
    let channels = conv.group;
    if conv.q_params.is_some()
        || spec.data_format.c_is_last()
        || spec.rank() != 2
        || channels < 2
        || spec.input_channels != channels
        || spec.output_channels != channels
        || node.inputs.len() != 3
    {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let batch_axis = spec.data_format.has_n();
    if input.datum_type != f32::datum_type() || input.rank() != 3 + batch_axis as usize {
        return Ok(None);
    }
    let chw = &input.shape[batch_axis as usize..];
    let Some(chw) = chw
        .iter()
        .map(|d| d.to_usize().ok())
        .collect::<Option<TVec<usize>>>()
    else {
        return Ok(None);
    };
    if chw[0] != channels {
        return Ok(None);
    }
    let (Some(kernel), Some(bias)) = (
        constant(model, node.inputs[1])?,
        constant(model, node.inputs[2])?,
    ) else {
        return Ok(None);
    };
    if kernel.datum_type() != f32::datum_type() || bias.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    let padding = spec.computed_padding(&chw[1..]);
    let (strides, dilations) = (spec.strides(), spec.dilations());
    let shape = PlaneShape {
        h: chw[1],
        w: chw[2],
        oh: padding[0].convoluted,
        ow: padding[1].convoluted,
        kernel: [spec.kernel_shape[0], spec.kernel_shape[1]],
        strides: [strides[0], strides[1]],
        dilations: [dilations[0], dilations[1]],
        pad_top_left: [padding[0].pad_before, padding[1].pad_before],
    };
    // [group, output channels per group, input channels per group × taps] = [C, 1, taps].
    let kernel = conv.kernel_fmt.kernel_as_group_o_ihw(&kernel, channels)?;
    let kernel = kernel.try_as_plain_ram()?;
    let bias_values = bias.try_as_plain_ram()?;
    let bias_values = bias_values.as_slice::<f32>()?;
    let bias: Vec<f32> = match bias_values.len() {
        1 => vec![bias_values[0]; channels],
        n if n == channels => bias_values.to_vec(),
        _ => return Ok(None),
    };
    PaddedDepthwise::new(
        shape,
        channels,
        batch_axis,
        kernel.as_slice::<f32>()?,
        &bias,
        kernel_choice == DepthwiseKernel::Portable,
    )
}
