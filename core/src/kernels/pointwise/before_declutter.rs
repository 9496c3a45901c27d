//! Pointwise convolutions taken from tract's `Conv` as the ONNX reader wires it, before tract's
//! declutter runs.
//!
//! tract's declutter turns each 1×1 convolution into an `EinSum`, reshapes its kernel through
//! three or four axis operators and wires its bias as an `Add`: one patch for the `Conv` and
//! about four more for those axis operators, each patch walking the graph (EfficientNet-Lite0,
//! batch 1: 32 `Conv` and 129 reshape patches, most of the loader's declutter time, measured
//! with `core/examples/load_passes.rs`). [`super::rewrite`] then folds all of it back into one
//! [`PointwiseConv`]. Taking the `Conv` directly, with its kernel and bias as they are, skips
//! that round trip; the operator built is the same (same weights, bias and clamp, so the same
//! results bit for bit). Convolutions this module leaves alone go the long way as before.

use super::{Clamp, MIN_PIXELS, OutputAxis, PointwiseConv, PointwiseLayout};
use crate::kernels::{KernelChoice, PointwiseKernel, SparseKernel, constant, sparse};
use tract_core::internal::*;
use tract_core::ops::cnn::{Conv, KernelFormat};

/// The patch replacing `node`, a `Conv`, and the clamp following it with a [`PointwiseConv`];
/// `None` where the convolution is not pointwise (1×1, stride and dilation 1, no padding, one
/// group) over channel-first f32 data with concrete channels and planes of at least
/// [`MIN_PIXELS`], with a constant OIHW kernel and a constant bias, and also where the long way
/// could end differently: the sparse kernel may take it (`choice` or the rule). An arithmetic
/// operator after the convolution (an unfused batch normalisation) stays as it is, as on the
/// long way: tract's `Conv` declutter turns a 1×1 convolution into an `EinSum` before it looks
/// at the arithmetic that follows (mobile-tiny: the same plan either way).
pub(in crate::kernels) fn replacement(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
    choice: &KernelChoice,
) -> TractResult<Option<TypedModelPatch>> {
    if choice.pointwise == PointwiseKernel::Tract
        || matches!(choice.sparse, SparseKernel::Sparse | SparseKernel::Portable)
    {
        return Ok(None);
    }
    let Some(parts) = PointwiseParts::read(model, node, conv)? else {
        return Ok(None);
    };
    let weights = parts.kernel.try_as_plain_ram()?;
    let weights = weights.as_slice::<f32>()?;
    if choice.sparse == SparseKernel::Auto {
        let most = sparse::most_kept(parts.rows, parts.layout_k, parts.layout.pixels);
        if sparse::finite_nonzero_count_at_most(weights, most).is_some() {
            return Ok(None);
        }
    }
    let (clamp, clamp_nodes): (Option<Clamp>, Vec<usize>) = super::following_clamp(model, node)?;
    let op = PointwiseConv::new(
        parts.layout,
        weights,
        &parts.bias,
        clamp,
        choice.pointwise == PointwiseKernel::Portable,
    )?;
    let name = "nnzip pointwise convolution (before declutter)";
    let patch = crate::kernels::replace_absorbing(model, node, name, op, &clamp_nodes)?;
    Ok(Some(patch))
}

/// A pointwise convolution read from tract's `Conv`.
struct PointwiseParts {
    layout: PointwiseLayout,
    /// Input channels.
    layout_k: usize,
    /// Output channels.
    rows: usize,
    /// `[rows, k, 1, …]`, row-major: the `[rows, k]` matrix.
    kernel: Arc<Tensor>,
    /// One value per output channel.
    bias: Vec<f32>,
}

impl PointwiseParts {
    fn read(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Self>> {
        let spec = &conv.pool_spec;
        if conv.q_params.is_some()
            || conv.group != 1
            || conv.kernel_fmt != KernelFormat::OIHW
            || spec.data_format.c_is_last()
            || node.inputs.len() != 3
            || node.outputs.len() != 1
            || spec.kernel_shape.iter().any(|&k| k != 1)
            || spec.strides().iter().any(|&s| s != 1)
            || spec.dilations().iter().any(|&d| d != 1)
        {
            return Ok(None);
        }
        let input = model.outlet_fact(node.inputs[0])?;
        let output = &node.outputs[0].fact;
        let channel_axis = spec.data_format.has_n() as usize;
        if input.datum_type != f32::datum_type()
            || output.datum_type != f32::datum_type()
            || input.rank() != channel_axis + 1 + spec.kernel_shape.len()
            || output.rank() != input.rank()
        {
            return Ok(None);
        }
        let planes = &input.shape[channel_axis + 1..];
        if spec
            .computed_padding(planes)
            .iter()
            .any(|p| p.pad_before != TDim::from(0) || p.pad_after != TDim::from(0))
        {
            return Ok(None);
        }
        let (k, rows) = (spec.input_channels, spec.output_channels);
        let Some(pixels) = planes
            .iter()
            .map(|d| d.to_usize().ok())
            .product::<Option<usize>>()
        else {
            return Ok(None);
        };
        // The output is the input with its channels replaced.
        let same_axes = (0..input.rank()).all(|a| {
            if a == channel_axis {
                input.shape[a] == k.to_dim() && output.shape[a] == rows.to_dim()
            } else {
                input.shape[a] == output.shape[a]
            }
        });
        if !same_axes || pixels < MIN_PIXELS {
            return Ok(None);
        }
        let (Some(kernel), Some(bias)) = (
            constant(model, node.inputs[1])?,
            constant(model, node.inputs[2])?,
        ) else {
            return Ok(None);
        };
        if kernel.datum_type() != f32::datum_type()
            || bias.datum_type() != f32::datum_type()
            || kernel.shape().first() != Some(&rows)
            || kernel.shape().get(1) != Some(&k)
            || kernel.len() != rows * k
        {
            return Ok(None);
        }
        let bias_values = bias.try_as_plain_ram()?;
        let bias_values = bias_values.as_slice::<f32>()?;
        let bias = match bias_values.len() {
            1 => vec![bias_values[0]; rows],
            n if n == rows => bias_values.to_vec(),
            _ => return Ok(None),
        };
        let layout = PointwiseLayout {
            channel_axis,
            pixels,
            output: (0..input.rank())
                .map(|a| {
                    if a == channel_axis {
                        OutputAxis::Channels
                    } else {
                        OutputAxis::Input(a)
                    }
                })
                .collect(),
        };
        Ok(Some(PointwiseParts {
            layout,
            layout_k: k,
            rows,
            kernel,
            bias,
        }))
    }
}
