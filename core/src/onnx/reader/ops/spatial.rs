//! Operators over the spatial axes of NCHW tensors: Conv, MaxPool, AveragePool and
//! GlobalAveragePool, with ONNX's padding rules (explicit and possibly asymmetric `pads`,
//! `auto_pad`, `ceil_mode` for pools).

use super::{broadcast, one};
use crate::error::Result;
use crate::onnx::reader::Graph;
use crate::onnx::reader::node::Node;
use tract_core::internal::*;
use tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec, PoolSpec, SumPool};
use tract_core::ops::nn::{DataFormat, Reduce, Reducer};

/// The input's rank, which must be 3 or more (N, C, one spatial axis at least).
fn spatial_rank(graph: &Graph, node: &Node) -> Result<usize> {
    let rank = node.rank(graph, 0)?;
    if rank < 3 {
        return Err(node.error(format!(
            "the input must be N×C×spatial (rank 3 or more), got rank {rank}"
        )));
    }
    Ok(rank - 2)
}

/// A per-spatial-axis attribute of positive values (`strides`, `dilations`, `kernel_shape`).
fn per_axis(node: &Node, name: &str, axes: usize) -> Result<Option<TVec<usize>>> {
    let Some(values) = node.sizes(name)? else {
        return Ok(None);
    };
    if values.len() != axes || values.contains(&0) {
        return Err(node.error(format!(
            "attribute '{name}' must hold {axes} positive values (one per spatial axis), got {values:?}"
        )));
    }
    Ok(Some(values))
}

/// The padding: `pads` when given (begins then ends), else `auto_pad`. Pools take ONNX's pool
/// rule, where `ceil_mode` rounds the output size up.
fn padding(node: &Node, axes: usize, pool: bool) -> Result<PaddingSpec> {
    let ceil_mode = pool && node.flag("ceil_mode", false)?;
    let explicit = |begin: TVec<usize>, end: TVec<usize>| {
        if pool {
            PaddingSpec::ExplicitOnnxPool(begin, end, ceil_mode)
        } else {
            PaddingSpec::Explicit(begin, end)
        }
    };
    if let Some(pads) = node.sizes("pads")? {
        if pads.len() != 2 * axes {
            return Err(node.error(format!(
                "attribute 'pads' must hold {} values (begin and end of each spatial axis), got {pads:?}",
                2 * axes
            )));
        }
        return Ok(explicit(pads[..axes].into(), pads[axes..].into()));
    }
    let unpadded = if node
        .proto
        .attribute
        .iter()
        .any(|a| a.name == "kernel_shape")
    {
        explicit(tvec!(0; axes), tvec!(0; axes))
    } else {
        PaddingSpec::Valid
    };
    match node.string("auto_pad")?.as_deref() {
        None | Some("NOTSET") => Ok(unpadded),
        Some("VALID") => Ok(PaddingSpec::Valid),
        Some("SAME_UPPER") => Ok(PaddingSpec::SameUpper),
        Some("SAME_LOWER") => Ok(PaddingSpec::SameLower),
        Some(other) => Err(node.error(format!(
            "auto_pad '{other}' is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER"
        ))),
    }
}

/// The pool geometry shared by the pooling operators; `channels` in and out.
fn pool_spec(
    node: &Node,
    axes: usize,
    kernel: TVec<usize>,
    channels: (usize, usize),
    pool: bool,
) -> Result<PoolSpec> {
    Ok(PoolSpec {
        data_format: DataFormat::NCHW,
        kernel_shape: kernel,
        padding: padding(node, axes, pool)?,
        dilations: per_axis(node, "dilations", axes)?,
        strides: per_axis(node, "strides", axes)?,
        input_channels: channels.0,
        output_channels: channels.1,
    })
}

/// The input's channel count, which must be known.
fn channels(graph: &Graph, node: &Node) -> Result<usize> {
    let fact = node.fact(graph, 0)?;
    fact.shape[1].to_usize().map_err(|_| {
        node.error(format!(
            "the channel count {} must be a number",
            fact.shape[1]
        ))
    })
}

/// Conv: weights `[M, C/group, k…]`, optional bias `[M]`.
pub(super) fn conv(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let axes = spatial_rank(graph, node)?;
    let kernel_fact = node.fact(graph, 1)?;
    let kernel = kernel_fact
        .shape
        .as_concrete()
        .map(|s| s.to_vec())
        .ok_or_else(|| node.error("the weights must have a known shape"))?;
    if kernel.len() != axes + 2 || kernel.contains(&0) {
        return Err(node.error(format!(
            "the weights must be [out channels, in channels / group, {axes} kernel sizes], all positive; got {kernel:?}"
        )));
    }
    if let Some(declared) = per_axis(node, "kernel_shape", axes)?
        && declared[..] != kernel[2..]
    {
        return Err(node.error(format!(
            "kernel_shape {declared:?} disagrees with the weights' shape {kernel:?}"
        )));
    }
    let group = usize::try_from(node.int_or("group", 1)?)
        .ok()
        .filter(|&g| g > 0 && kernel[0] % g == 0)
        .ok_or_else(|| node.error("group must be positive and divide the output channel count"))?;
    let (in_channels, out_channels) = (kernel[1] * group, kernel[0]);
    let input_channels = channels(graph, node)?;
    if input_channels != in_channels {
        return Err(node.error(format!(
            "the input has {input_channels} channels, the weights expect {in_channels} (group {group})"
        )));
    }
    let dt = node.fact(graph, 0)?.datum_type;
    let bias = match node.optional_input(2) {
        Some(bias) => {
            let shape = node.fact(graph, 2)?.shape;
            if shape.rank() != 1 || shape[0] != out_channels.to_dim() {
                return Err(node.error(format!("the bias must be [{out_channels}], got {shape:?}")));
            }
            bias
        }
        None => graph.constant(
            format!("{}.bias", node.name),
            Tensor::zero_scalar_dt(dt).map_err(|e| node.tract(e))?,
        )?,
    };
    let op = Conv {
        pool_spec: pool_spec(
            node,
            axes,
            kernel[2..].into(),
            (in_channels, out_channels),
            false,
        )?,
        kernel_fmt: KernelFormat::OIHW,
        group,
        q_params: None,
    };
    let inputs = [node.input(0)?, node.input(1)?, bias];
    one(graph.wire1(node, "", op, &inputs)?)
}

/// The `kernel_shape` a pool requires, and its channel count.
fn pool_geometry(graph: &Graph, node: &Node) -> Result<(usize, PoolSpec)> {
    let axes = spatial_rank(graph, node)?;
    let kernel = per_axis(node, "kernel_shape", axes)?
        .ok_or_else(|| node.error("attribute 'kernel_shape' is required"))?;
    let c = channels(graph, node)?;
    Ok((axes, pool_spec(node, axes, kernel, (c, c), true)?))
}

pub(super) fn max_pool(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    if node.proto.output.get(1).is_some_and(|o| !o.is_empty()) {
        return Err(
            node.error("its Indices output is not supported; export without return_indices")
        );
    }
    let (_, pool_spec) = pool_geometry(graph, node)?;
    let op = MaxPool {
        pool_spec,
        with_index_outputs: None,
    };
    let x = node.input(0)?;
    one(graph.wire1(node, "", op, &[x])?)
}

pub(super) fn average_pool(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let (_, pool_spec) = pool_geometry(graph, node)?;
    let op = SumPool {
        pool_spec,
        count_include_pad: node.flag("count_include_pad", false)?,
        normalize: true,
    };
    let x = node.input(0)?;
    one(graph.wire1(node, "", op, &[x])?)
}

/// The mean over every spatial axis, keeping them as unit axes: a sum divided by the count.
pub(super) fn global_average_pool(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let axes = spatial_rank(graph, node)?;
    let fact = node.fact(graph, 0)?;
    let count: TDim = fact.shape.iter().skip(2).product();
    let count = count
        .to_usize()
        .map_err(|_| node.error(format!("the spatial size {count} must be a number")))?;
    let x = node.input(0)?;
    let reduce = Reduce::new((2..2 + axes).collect(), Reducer::Sum);
    let sum = graph.wire1(node, "sum", reduce, &[x])?;
    let n = graph.scalar(node, "count", count as f32, fact.datum_type, fact.rank())?;
    one(broadcast(
        graph,
        node,
        "",
        tract_core::ops::math::div(),
        sum,
        n,
    )?)
}
