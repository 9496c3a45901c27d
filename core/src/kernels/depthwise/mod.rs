//! Depthwise 2-D convolution of f32 data: channel-first (NCHW or CHW) through a padded copy of
//! each input plane, or for the smaller planes by blocks of channels moved innermost
//! ([`channel_blocks`]); channel-last (NHWC or HWC) by runs of channels ([`channel_runs`]).
//!
//! tract lowers a depthwise convolution to its zone walk: every plane split into a valid zone
//! and border zones, each border zone on a generic path that re-checks which taps fall inside
//! the image. At 7x7 with a 5x5 kernel and a pad of 2 almost every output is in a border zone,
//! and strided zones (stride 2, a quarter of EfficientNet-Lite0's depthwise work) run scalar.
//! Here each plane is first copied into a zero-padded scratch buffer ([`geometry`]), so that
//! every output point takes the same branch-free loop ([`plane`]): the copy costs one move per
//! input value, against 9 to 25 multiply-adds per output value.
//!
//! On channel-last data (tract's declutter moves the channels of depthwise convolutions of 16
//! channels or more innermost on hosts with a channel-inner depthwise kernel: aarch64) a vector
//! holds adjacent channels of one point instead, and the taps outside the input are skipped by
//! narrowing the loops, with no copy.
//!
//! A ReLU or ReLU6 following the convolution (tract's `Max` and `Min` with a constant) is
//! applied before the store, as the pointwise kernel does: the output is written once.
//!
//! The sums are the zone walk's (the bias first, then the taps in kernel order), with fused
//! multiply-adds on the vector paths, so results agree with tract's to rounding.

mod channel_blocks;
mod channel_runs;
mod channels_last;
pub(in crate::kernels) mod geometry;
pub(in crate::kernels) mod plane;
pub(in crate::kernels) mod simd;
#[cfg(target_arch = "x86_64")]
mod tiles;
mod transpose;

pub use channels_last::ChannelsLastDepthwise;
pub use geometry::PlaneShape;

use super::pointwise::{Clamp, following_clamp};
use super::{DepthwiseKernel, constant};
use channel_blocks::{AllChannels, ChannelBlocks};
use geometry::PaddedLayout;
use tract_core::internal::*;
use tract_core::ops::cnn::Conv;
use tract_core::tract_linalg::multithread::par_chunks_mut;

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
    /// Bounds every output is clamped to (a ReLU or ReLU6 taken in).
    clamp: Option<Clamp>,
    /// Runs the plain-Rust four-lane kernel even where a vector one exists.
    portable: bool,
    /// Where the planes run by blocks of channels on the channel-last kernel rather than one
    /// by one along their rows.
    blocks: Option<ChannelBlocks>,
}

impl PaddedDepthwise {
    /// Bytes of weights it holds: the kernel and the bias.
    pub fn bytes(&self) -> usize {
        crate::kernels::tensor_bytes(&[&self.kernel, &self.bias])
    }

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
            clamp: None,
            portable,
            blocks: None,
        }))
    }

    /// Calls `f` with this op's planes as the plane kernels take them, for an operator running
    /// them a band of rows at a time (the blocks of channels, for small planes, are left out).
    pub(in crate::kernels) fn with_planes<R>(
        &self,
        f: impl FnOnce(&Planes) -> R,
    ) -> TractResult<R> {
        let kernel = self.kernel.try_as_plain_ram()?;
        let bias = self.bias.try_as_plain_ram()?;
        let planes = Planes {
            layout: &self.layout,
            kernel: kernel.as_slice::<f32>()?,
            bias: bias.as_slice::<f32>()?,
            clamp: self.clamp.map(|c| (c.low, c.high)),
            run: if self.portable {
                plane::plane_portable
            } else {
                plane::best_for_this_cpu(&self.layout).1
            },
        };
        Ok(f(&planes))
    }

    /// The plane's geometry.
    pub(in crate::kernels) fn shape(&self) -> &PlaneShape {
        &self.layout.shape
    }

    /// Channels.
    pub(in crate::kernels) fn channels(&self) -> usize {
        self.channels
    }

    /// The images in `input_shape`, checked against the channels and plane this op was built
    /// for.
    pub(in crate::kernels) fn images(&self, input_shape: &[usize]) -> TractResult<usize> {
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

    pub(in crate::kernels) fn output_shape<D: Clone + From<usize>>(&self, n: Option<D>) -> TVec<D> {
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
            plane::best_for_this_cpu(&self.layout).1
        };
        let clamp = self.clamp.map(|c| (c.low, c.high));
        let weights = AllChannels {
            kernel,
            bias,
            channels: self.channels,
            clamp,
        };
        // Whole blocks per thread where the planes divide into them.
        let planes_per_chunk = match &self.blocks {
            Some(blocks) if planes.is_multiple_of(blocks.channels()) => blocks.channels(),
            _ => 1,
        };
        par_chunks_mut(
            output.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
            planes_per_chunk * out_plane,
            planes * out_plane * taps,
            |first, chunk| {
                let first = first * planes_per_chunk;
                let done = match &self.blocks {
                    Some(blocks) => blocks.run(&weights, input, chunk, first),
                    None => 0,
                };
                if done * out_plane == chunk.len() {
                    return Ok(());
                }
                let mut scratch = vec![0f32; self.layout.scratch_len()];
                let rest = chunk[done * out_plane..].chunks_exact_mut(out_plane);
                for (p, out) in (first + done..).zip(rest) {
                    let c = p % self.channels;
                    let src = &input[p * in_plane..][..in_plane];
                    let taps = &kernel[c * taps..][..taps];
                    // SAFETY: the scratch, taps, input and output planes have the sizes of
                    // `self.layout` (checked above and in `PaddedDepthwise::new`), and `run` is
                    // an implementation this CPU runs.
                    unsafe { run(&self.layout, src, &mut scratch, taps, bias[c], clamp, out) };
                }
                Ok(())
            },
        )?;
        Ok(output)
    }
}

/// A [`PaddedDepthwise`]'s planes as the plane kernels take them.
pub(in crate::kernels) struct Planes<'a> {
    pub layout: &'a PaddedLayout,
    /// `channels` runs of the kernel's taps.
    pub kernel: &'a [f32],
    /// One value per channel.
    pub bias: &'a [f32],
    pub clamp: Option<(f32, f32)>,
    /// The plane kernel the op runs (on any layout of the same window, stride and dilation).
    pub run: plane::PlaneFn,
}

/// How an op's `info` names its clamp: `, clamped to [low, high]`, or nothing.
fn clamped(clamp: Option<Clamp>) -> String {
    match clamp {
        Some(c) => format!(", clamped to [{}, {}]", c.low, c.high),
        None => String::new(),
    }
}

impl Op for PaddedDepthwise {
    fn name(&self) -> StaticName {
        "NnzipPaddedDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let kernel = if self.portable {
            "portable kernel".to_string()
        } else if let Some(blocks) = &self.blocks {
            format!(
                "vector kernel ({}), channel-last by blocks of {} channels",
                blocks.kernel_name(),
                blocks.channels()
            )
        } else {
            format!(
                "vector kernel ({})",
                plane::best_for_this_cpu(&self.layout).0
            )
        };
        Ok(vec![
            format!("{:?}{}", self.layout.shape, clamped(self.clamp)),
            kernel,
        ])
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

/// The patch replacing `node`, a `Conv`, with a [`PaddedDepthwise`] (channel-first data) or a
/// [`ChannelsLastDepthwise`] (channel-last), and the clamp following it (ReLU, ReLU6) with the
/// op's own; `None` where it is not a depthwise convolution the kernel takes: f32, two spatial
/// axes, group = input channels = output channels > 1 (tract's own condition for a depthwise
/// convolution), constant kernel and bias, concrete channels and plane.
pub(super) fn replacement(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
    kernel_choice: DepthwiseKernel,
) -> TractResult<Option<TypedModelPatch>> {
    if kernel_choice == DepthwiseKernel::Tract {
        return Ok(None);
    }
    let Some(conv) = DepthwiseConv::read(model, node, conv)? else {
        return Ok(None);
    };
    let (clamp, clamp_nodes) = following_clamp(model, node)?;
    let portable = kernel_choice == DepthwiseKernel::Portable;
    let op: Box<dyn TypedOp> = if conv.channels_last {
        let taps = conv.kernel.len() / conv.channels;
        // Tap-major: each tap's weights for every channel follow each other.
        let mut by_tap = vec![0f32; conv.kernel.len()];
        for (c, run) in conv.kernel.chunks_exact(taps).enumerate() {
            for (t, &v) in run.iter().enumerate() {
                by_tap[t * conv.channels + c] = v;
            }
        }
        let Some(op) = ChannelsLastDepthwise::new(
            conv.shape,
            conv.channels,
            conv.batch_axis,
            &by_tap,
            &conv.bias,
            clamp,
            portable,
        )?
        else {
            return Ok(None);
        };
        Box::new(op)
    } else {
        let Some(op) = PaddedDepthwise::new(
            conv.shape,
            conv.channels,
            conv.batch_axis,
            &conv.kernel,
            &conv.bias,
            portable,
        )?
        else {
            return Ok(None);
        };
        let blocks = match kernel_choice {
            DepthwiseKernel::Padded => ChannelBlocks::new(conv.shape),
            _ => None,
        };
        Box::new(PaddedDepthwise {
            clamp,
            blocks,
            ..op
        })
    };
    let patch =
        super::replace_absorbing(model, node, "nnzip depthwise convolution", op, &clamp_nodes)?;
    Ok(Some(patch))
}

/// Whether [`replacement`] takes `node`, a `Conv`, with `kernel_choice`: a depthwise convolution
/// nnzip's kernel runs in the layout it has now.
pub(super) fn takes(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
    kernel_choice: DepthwiseKernel,
) -> TractResult<bool> {
    if kernel_choice == DepthwiseKernel::Tract {
        return Ok(false);
    }
    let Some(conv) = DepthwiseConv::read(model, node, conv)? else {
        return Ok(false);
    };
    Ok(conv.channels_last
        || PaddedDepthwise::new(
            conv.shape,
            conv.channels,
            conv.batch_axis,
            &conv.kernel,
            &conv.bias,
            false,
        )?
        .is_some())
}

/// A depthwise convolution as tract's `Conv` holds it, in the terms of nnzip's kernels.
struct DepthwiseConv {
    shape: PlaneShape,
    channels: usize,
    /// Whether the data has a batch axis (NCHW, NHWC) or not (CHW, HWC).
    batch_axis: bool,
    /// Whether the channels are the innermost axis (NHWC, HWC).
    channels_last: bool,
    /// `channels` runs of the kernel's taps, in kernel order.
    kernel: Vec<f32>,
    /// One value per channel.
    bias: Vec<f32>,
}

impl DepthwiseConv {
    /// `conv` where it is one the kernels take (see [`replacement`]).
    fn read(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Self>> {
        let spec = &conv.pool_spec;
        let channels = conv.group;
        if conv.q_params.is_some()
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
        let channels_last = spec.data_format.c_is_last();
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
        // [C, H, W] or [H, W, C].
        let (c, hw) = if channels_last {
            (dims[2], [dims[0], dims[1]])
        } else {
            (dims[0], [dims[1], dims[2]])
        };
        if c != channels {
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
        let shape = PlaneShape::of_convolution(spec, hw);
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
        Ok(Some(DepthwiseConv {
            shape,
            channels,
            batch_axis,
            channels_last,
            kernel: kernel.as_slice::<f32>()?.to_vec(),
            bias,
        }))
    }
}
