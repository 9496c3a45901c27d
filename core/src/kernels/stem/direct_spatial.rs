//! An image model's first convolution on tract's direct spatial convolution, where nnzip's own
//! operator does not take it (or `StemConvKernel::Direct` asks for this path).
//!
//! tract runs a group-1 f32 NCHW convolution as a filter along W (its `DirectSpatialConv`, four
//! output channels at a time) only for output rows of at least 128 points; shorter rows go to
//! im2col and a matrix product. For a convolution with few inputs per output point (input
//! channels × kernel taps ≤ [`MAX_NARROW_K`]: an RGB model's first layer, 3×3×3 = 27) the
//! matrix product has a short reduction and a single output-channel panel, so gathering every
//! input column dominates it, and the direct convolution wins from 64-point rows (EfficientNet's
//! and MobileNet's 3→32 stem, RGBA inputs, stride 1). Wider reductions (3→64 7x7, k = 147;
//! 16→32 3x3, k = 144) are slower on the direct convolution and stay on im2col. A 56-point row
//! (3→32 3x3 stride 2 from 112x112) ran as fast either way, hence [`MIN_NARROW_ROW`]. The
//! times are in docs/PERFORMANCE.md.
//!
//! The operator is tract's own, built through its public API as tract's optimiser builds it;
//! only the rule choosing it is nnzip's.

use tract_core::internal::*;
use tract_core::ops::cnn::conv::DirectSpatialConv;
use tract_core::ops::cnn::pools::ConcretePoolGeometry;
use tract_core::ops::cnn::{Conv, wire_reshape_bias_for_bin};
use tract_core::ops::nn::DataFormat;
use tract_core::tract_linalg::routines;

/// The most inputs per output point (input channels × kernel taps) of a narrow convolution.
pub const MAX_NARROW_K: usize = 36;

/// The shortest output row a narrow convolution takes the direct path for.
pub const MIN_NARROW_ROW: usize = 64;

/// Whether `conv` on `input` is a narrow convolution the direct path takes here: group-1 f32
/// NCHW over two spatial axes, at least two taps, at most [`MAX_NARROW_K`] inputs per output
/// point, a concrete shape with input and output rows of at least [`MIN_NARROW_ROW`] points,
/// and tract's direct kernels for this CPU (`conv_w4`, and `depthwise_w` for output channels
/// beyond a multiple of four).
pub fn is_narrow_stem(conv: &Conv, input: &TypedFact) -> bool {
    let spec = &conv.pool_spec;
    let taps: usize = spec.kernel_shape.iter().product();
    if conv.q_params.is_some()
        || input.datum_type != f32::datum_type()
        || spec.data_format != DataFormat::NCHW
        || conv.group != 1
        || spec.rank() != 2
        || taps < 2
        || spec.input_channels.saturating_mul(taps) > MAX_NARROW_K
    {
        return false;
    }
    if routines::conv_w4_f32().is_none()
        || (!spec.output_channels.is_multiple_of(4) && routines::depthwise_w_f32().is_none())
    {
        return false;
    }
    let Some(shape) = input.shape.as_concrete() else {
        return false;
    };
    let rows_long_enough = |dims: &[usize]| dims.last().is_some_and(|&w| w >= MIN_NARROW_ROW);
    if !rows_long_enough(&shape[2..]) {
        return false;
    }
    spec.output_shape(shape)
        .is_ok_and(|output| rows_long_enough(output.hw_dims()))
}

/// The patch replacing `node`, a `Conv`, with tract's direct spatial convolution where
/// [`is_narrow_stem`] says so.
pub(in crate::kernels) fn replacement(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
) -> TractResult<Option<TypedModelPatch>> {
    if node.inputs.len() != 3 {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    if !is_narrow_stem(conv, input) {
        return Ok(None);
    }
    let x_shape: TVec<usize> = input.shape.as_concrete().context("concrete shape")?.into();
    let mut patch = TypedModelPatch::new("nnzip narrow stem");
    let taps = patch.taps(model, &node.inputs)?;
    let ConcretePoolGeometry {
        input_shape,
        patch: geometry,
        output_shape,
    } = conv
        .pool_spec
        .compute_geo(&input.shape)?
        .to_concrete(&x_shape)?
        .into_owned();
    let kernel = conv.wire_kernel_as_g_o_ihw(&mut patch, &node.name, taps[1])?;
    let bias = wire_reshape_bias_for_bin(
        &mut patch,
        &node.name,
        taps[2],
        x_shape.len(),
        1,
        conv.pool_spec.output_channels,
    )?;
    let op = DirectSpatialConv::new(geometry, input_shape, output_shape);
    let wire = patch.wire_node(&node.name, op, &[taps[0], kernel[0], bias[0]])?[0];
    patch.shunt_outside(model, OutletId::new(node.id, 0), wire)?;
    patch.obliterate(node.id)?;
    Ok(Some(patch))
}
