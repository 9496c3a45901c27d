//! ONNX operators evaluated with candle tensor ops (all differentiable through candle's autograd).

use super::batchnorm::{BatchNormOp, channel_statistics};
use super::conv::{ConvGeometry, conv2d};
use super::pool::{PoolGeometry, max_pool2d};
use super::proto::{attr_float, attr_int, attr_ints, attr_string};
use anyhow::{Context, Result, bail, ensure};
use candle_core::{D, DType, Device, Tensor};
use nnzip_core::onnx::proto::NodeProto;

/// Every operator the interpreter evaluates: the phone runtime's list
/// (`nnzip_core::SUPPORTED_OPERATORS`) but [`RUNTIME_ONLY`].
pub const SUPPORTED_OPS: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Sum",
    "Mul",
    "Sub",
    "Div",
    "Relu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "BatchNormalization",
    "Flatten",
    "Reshape",
    "Transpose",
    "Concat",
    "Dropout",
    "Softmax",
    "LRN",
    "LogSoftmax",
    "Identity",
    "Constant",
    "Pad",
    "Squeeze",
    "Unsqueeze",
];

/// The operators the phone runtime runs and training does not, each with why.
pub const RUNTIME_ONLY: &[(&str, &str)] = &[
    (
        "Cast",
        "computes shapes at run time (exported `x.view(x.size(0), -1)`); training needs shapes as constants",
    ),
    ("Gather", "same: shape arithmetic"),
    ("Shape", "same: shape arithmetic"),
    (
        "ReduceMean",
        "not implemented for training yet; no model nnzip trains uses it",
    ),
];

/// Normalises a possibly negative axis against `rank`.
pub fn axis(axis: i64, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    ensure!(
        (0..rank as i64).contains(&a),
        "axis {axis} out of range for rank {rank}"
    );
    Ok(a as usize)
}

/// Spatial pads from `pads`/`auto_pad`: `([begin_h, begin_w], [end_h, end_w])`.
fn spatial_pads(
    node: &NodeProto,
    input_hw: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
    dil: [usize; 2],
) -> Result<[usize; 4]> {
    let auto_pad = attr_string(node, "auto_pad", "NOTSET");
    match auto_pad.as_str() {
        "NOTSET" => {
            let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
            ensure!(
                pads.len() == 4 && pads.iter().all(|&p| p >= 0),
                "pads {pads:?} must be 4 non-negative values"
            );
            Ok([
                pads[0] as usize,
                pads[1] as usize,
                pads[2] as usize,
                pads[3] as usize,
            ])
        }
        "VALID" => Ok([0; 4]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut begin = [0; 2];
            let mut end = [0; 2];
            for i in 0..2 {
                let out = input_hw[i].div_ceil(strides[i]);
                let span = (kernel[i] - 1) * dil[i] + 1;
                let total = ((out - 1) * strides[i] + span).saturating_sub(input_hw[i]);
                let small = total / 2;
                (begin[i], end[i]) = if auto_pad == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
            }
            Ok([begin[0], begin[1], end[0], end[1]])
        }
        other => bail!("auto_pad={other} is not supported"),
    }
}

fn pair(node: &NodeProto, name: &str) -> Result<[usize; 2]> {
    match attr_ints(node, name) {
        None => Ok([1, 1]),
        Some(v) if v.len() == 2 && v.iter().all(|&x| x > 0) => Ok([v[0] as usize, v[1] as usize]),
        Some(v) => bail!("{name}={v:?}: only 2-D (image) operators are supported"),
    }
}

/// ONNX `Conv` (2-D).
pub fn conv(node: &NodeProto, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    ensure!(
        x.rank() == 4,
        "Conv input has shape {:?}; only 2-D convolutions (N×C×H×W) are supported",
        x.dims()
    );
    let (_, _, kh, kw) = w.dims4()?;
    let strides = pair(node, "strides")?;
    let dilations = pair(node, "dilations")?;
    let (_, _, h, wd) = x.dims4()?;
    let pads = spatial_pads(node, [h, wd], [kh, kw], strides, dilations)?;
    let geometry = ConvGeometry {
        pads,
        strides,
        dilations,
        groups: attr_int(node, "group", 1).max(1) as usize,
    };
    Ok(conv2d(x, w, bias, geometry)?)
}

/// ONNX `Gemm`: `alpha·A'·B' + beta·C`.
pub fn gemm(node: &NodeProto, a: &Tensor, b: &Tensor, c: Option<&Tensor>) -> Result<Tensor> {
    let a = if attr_int(node, "transA", 0) != 0 {
        a.t()?
    } else {
        a.clone()
    };
    let b = if attr_int(node, "transB", 0) != 0 {
        b.t()?
    } else {
        b.clone()
    };
    let mut y = a.matmul(&b)?;
    let alpha = attr_float(node, "alpha", 1.0) as f64;
    if alpha != 1.0 {
        y = y.affine(alpha, 0.0)?;
    }
    if let Some(c) = c {
        let beta = attr_float(node, "beta", 1.0) as f64;
        let c = if beta != 1.0 {
            c.affine(beta, 0.0)?
        } else {
            c.clone()
        };
        y = y.broadcast_add(&c)?;
    }
    Ok(y)
}

/// ONNX `MatMul` (numpy semantics, including 1-D operands).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (a1, b1) = (a.rank() == 1, b.rank() == 1);
    let a = if a1 { a.unsqueeze(0)? } else { a.clone() };
    let b = if b1 { b.unsqueeze(1)? } else { b.clone() };
    let mut y = if a.rank() == 2 && b.rank() == 2 {
        a.matmul(&b)?
    } else {
        a.broadcast_matmul(&b)?
    };
    if b1 {
        y = y.squeeze(D::Minus1)?;
    }
    if a1 {
        y = y.squeeze(if b1 { y.rank() - 1 } else { y.rank() - 2 })?;
    }
    Ok(y)
}

/// `1 / (1 + e^-x)`.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok((x.neg()?.exp()? + 1.0)?.recip()?)
}

/// ONNX `HardSigmoid`: `clamp(alpha·x + beta, 0, 1)`.
pub fn hard_sigmoid(x: &Tensor, alpha: f64, beta: f64) -> Result<Tensor> {
    Ok(x.affine(alpha, beta)?.clamp(0.0, 1.0)?)
}

/// Pads one axis with a constant value (negative amounts crop).
fn pad_axis_constant(x: &Tensor, dim: usize, begin: i64, end: i64, value: f64) -> Result<Tensor> {
    let mut x = x.clone();
    if begin < 0 {
        x = x.narrow(dim, (-begin) as usize, x.dim(dim)? - (-begin) as usize)?;
    }
    if end < 0 {
        x = x.narrow(dim, 0, x.dim(dim)? - (-end) as usize)?;
    }
    let (begin, end) = (begin.max(0) as usize, end.max(0) as usize);
    if begin == 0 && end == 0 {
        return Ok(x);
    }
    if value == 0.0 {
        return Ok(x.pad_with_zeros(dim, begin, end)?);
    }
    let mut parts = Vec::with_capacity(3);
    let mut shape = x.dims().to_vec();
    if begin > 0 {
        shape[dim] = begin;
        parts.push(Tensor::full(value, shape.as_slice(), x.device())?.to_dtype(x.dtype())?);
    }
    parts.push(x.clone());
    if end > 0 {
        shape[dim] = end;
        parts.push(Tensor::full(value, shape.as_slice(), x.device())?.to_dtype(x.dtype())?);
    }
    Ok(Tensor::cat(&parts, dim)?)
}

/// Gathers positions along an axis (for edge/reflect padding and strided windows).
fn gather_axis(x: &Tensor, dim: usize, positions: &[usize]) -> Result<Tensor> {
    let idx: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
    let idx = Tensor::from_vec(idx, positions.len(), x.device())?;
    Ok(x.index_select(&idx, dim)?)
}

/// ONNX `Pad` with the pads `[b_0, …, b_{r-1}, e_0, …, e_{r-1}]`.
pub fn pad(x: &Tensor, pads: &[i64], mode: &str, value: f64) -> Result<Tensor> {
    let rank = x.rank();
    ensure!(
        pads.len() == 2 * rank,
        "Pad: {} pads for a rank-{rank} input",
        pads.len()
    );
    let mut y = x.clone();
    for dim in 0..rank {
        let (b, e) = (pads[dim], pads[dim + rank]);
        if b == 0 && e == 0 {
            continue;
        }
        y = match mode {
            "constant" => pad_axis_constant(&y, dim, b, e, value)?,
            "edge" | "reflect" => {
                ensure!(b >= 0 && e >= 0, "Pad: negative pads only in constant mode");
                let n = y.dim(dim)? as i64;
                ensure!(
                    mode == "edge" || n > b.max(e),
                    "Pad: reflect pads must be smaller than the axis ({n})"
                );
                let positions: Vec<usize> = (-b..n + e)
                    .map(|i| {
                        if mode == "edge" {
                            i.clamp(0, n - 1) as usize
                        } else if i < 0 {
                            (-i) as usize
                        } else if i >= n {
                            (2 * (n - 1) - i) as usize
                        } else {
                            i as usize
                        }
                    })
                    .collect();
                gather_axis(&y, dim, &positions)?
            }
            other => bail!("Pad mode '{other}' is not supported (constant, edge, reflect are)"),
        };
    }
    Ok(y)
}

/// Pooling parameters shared by MaxPool and AveragePool.
struct Pooling {
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    /// `[top, left, bottom, right]`, including the extra bottom/right padding of `ceil_mode`.
    pads: [usize; 4],
    /// Padding declared by the model (without the `ceil_mode` extra).
    declared: [usize; 4],
    out: [usize; 2],
}

fn pooling(node: &NodeProto, x: &Tensor) -> Result<Pooling> {
    ensure!(
        x.rank() == 4,
        "pooling input has shape {:?}; only 2-D pooling (N×C×H×W) is supported",
        x.dims()
    );
    let kernel = match attr_ints(node, "kernel_shape") {
        Some(k) if k.len() == 2 && k.iter().all(|&v| v > 0) => [k[0] as usize, k[1] as usize],
        other => bail!("kernel_shape={other:?}: expected two positive values"),
    };
    // Pooling strides default to 1 per the spec.
    let strides = pair(node, "strides")?;
    let dilations = pair(node, "dilations")?;
    let (_, _, h, w) = x.dims4()?;
    let declared = spatial_pads(node, [h, w], kernel, strides, dilations)?;
    let ceil = attr_int(node, "ceil_mode", 0) != 0;
    let mut pads = declared;
    let mut out = [0; 2];
    for i in 0..2 {
        let len = [h, w][i] + declared[i] + declared[i + 2];
        let span = (kernel[i] - 1) * dilations[i] + 1;
        ensure!(
            len >= span,
            "pooling window {span} larger than padded input {len}"
        );
        let mut o = if ceil {
            (len - span).div_ceil(strides[i]) + 1
        } else {
            (len - span) / strides[i] + 1
        };
        // A window must start inside the input or the left padding.
        if ceil && (o - 1) * strides[i] >= [h, w][i] + declared[i] {
            o -= 1;
        }
        out[i] = o;
        let needed = (o - 1) * strides[i] + span;
        if needed > len {
            pads[i + 2] += needed - len;
        }
    }
    Ok(Pooling {
        kernel,
        strides,
        dilations,
        pads,
        declared,
        out,
    })
}

/// The `kh·kw` strided views of the padded input, each `N×C×OH×OW`.
fn windows(xp: &Tensor, p: &Pooling) -> Result<Vec<Tensor>> {
    let mut views = Vec::with_capacity(p.kernel[0] * p.kernel[1]);
    for ki in 0..p.kernel[0] {
        let rows: Vec<usize> = (0..p.out[0])
            .map(|o| o * p.strides[0] + ki * p.dilations[0])
            .collect();
        let xr = gather_axis(xp, 2, &rows)?;
        for kj in 0..p.kernel[1] {
            let cols: Vec<usize> = (0..p.out[1])
                .map(|o| o * p.strides[1] + kj * p.dilations[1])
                .collect();
            views.push(gather_axis(&xr, 3, &cols)?);
        }
    }
    Ok(views)
}

/// Whether pooling tiles the input exactly (kernel = stride, no padding, no dilation).
fn tiles(p: &Pooling, h: usize, w: usize) -> bool {
    p.kernel == p.strides
        && p.dilations == [1, 1]
        && p.pads == [0; 4]
        && h.is_multiple_of(p.kernel[0])
        && w.is_multiple_of(p.kernel[1])
}

fn pad_spatial(x: &Tensor, pads: [usize; 4], value: f64) -> Result<Tensor> {
    let x = pad_axis_constant(x, 2, pads[0] as i64, pads[2] as i64, value)?;
    pad_axis_constant(&x, 3, pads[1] as i64, pads[3] as i64, value)
}

/// ONNX `MaxPool` (2-D), as a custom op whose gradient goes to each window's (first) maximum.
pub fn max_pool(node: &NodeProto, x: &Tensor) -> Result<Tensor> {
    ensure!(
        attr_int(node, "storage_order", 0) == 0,
        "MaxPool storage_order=1 is not supported"
    );
    let p = pooling(node, x)?;
    Ok(max_pool2d(
        x,
        PoolGeometry {
            kernel: p.kernel,
            strides: p.strides,
            dilations: p.dilations,
            pads: [p.pads[0], p.pads[1]],
            out: p.out,
        },
    )?)
}

/// ONNX `AveragePool` (2-D), honouring `count_include_pad` and `ceil_mode`.
pub fn average_pool(node: &NodeProto, x: &Tensor) -> Result<Tensor> {
    let p = pooling(node, x)?;
    let (n, c, h, w) = x.dims4()?;
    if tiles(&p, h, w) {
        let [kh, kw] = p.kernel;
        return Ok(x
            .reshape((n, c, h / kh, kh, w / kw, kw))?
            .mean(5)?
            .mean(3)?);
    }
    let include_pad = attr_int(node, "count_include_pad", 0) != 0;
    let xp = pad_spatial(x, p.pads, 0.0)?;
    let views = windows(&xp, &p)?;
    let sum = Tensor::stack(&views, 4)?.sum(4)?;
    // How many window taps fall on counted positions, per output pixel.
    let (lo, hi) = if include_pad {
        (
            [0, 0],
            [
                h + p.declared[0] + p.declared[2],
                w + p.declared[1] + p.declared[3],
            ],
        )
    } else {
        ([p.pads[0], p.pads[1]], [p.pads[0] + h, p.pads[1] + w])
    };
    let mut counts = Vec::with_capacity(p.out[0] * p.out[1]);
    for oy in 0..p.out[0] {
        for ox in 0..p.out[1] {
            let mut k = 0usize;
            for ki in 0..p.kernel[0] {
                let y = oy * p.strides[0] + ki * p.dilations[0];
                for kj in 0..p.kernel[1] {
                    let xx = ox * p.strides[1] + kj * p.dilations[1];
                    k += usize::from((lo[0]..hi[0]).contains(&y) && (lo[1]..hi[1]).contains(&xx));
                }
            }
            counts.push(k.max(1) as f64);
        }
    }
    let counts =
        Tensor::from_vec(counts, (1, 1, p.out[0], p.out[1]), x.device())?.to_dtype(x.dtype())?;
    Ok(sum.broadcast_div(&counts)?)
}

/// ONNX `GlobalAveragePool`: mean over all spatial axes, kept as size-1 axes.
pub fn global_average_pool(x: &Tensor) -> Result<Tensor> {
    ensure!(
        x.rank() >= 3,
        "GlobalAveragePool input has shape {:?}",
        x.dims()
    );
    let (n, c) = (x.dim(0)?, x.dim(1)?);
    let mut shape = vec![n, c];
    shape.resize(x.rank(), 1);
    Ok(x.flatten_from(2)?.mean_keepdim(2)?.reshape(shape)?)
}

/// Running statistics of a BatchNormalization layer, updated in training mode.
pub struct BatchNormState<'a> {
    /// Running mean (`C`).
    pub mean: &'a candle_core::Var,
    /// Running variance (`C`).
    pub var: &'a candle_core::Var,
}

/// ONNX `BatchNormalization`. Training mode normalises with the batch statistics and updates the
/// running ones (`running = momentum·running + (1−momentum)·batch`, unbiased batch variance, as
/// PyTorch does); evaluation mode uses the running statistics.
pub fn batch_norm(
    node: &NodeProto,
    x: &Tensor,
    scale: &Tensor,
    bias: &Tensor,
    state: BatchNormState<'_>,
    training: bool,
) -> Result<Tensor> {
    ensure!(
        x.rank() >= 2,
        "BatchNormalization input has shape {:?}",
        x.dims()
    );
    let eps = attr_float(node, "epsilon", 1e-5) as f64;
    let momentum = attr_float(node, "momentum", 0.9) as f64;
    let x = x.contiguous()?;
    let channels = x.dim(1)?;
    let op = if training {
        let count = x.elem_count() / channels;
        ensure!(
            count > 1,
            "BatchNormalization in training mode needs more than one value per channel"
        );
        let (mean, var) = channel_statistics(&x)?;
        let device = x.device();
        let dtype = state.mean.as_tensor().dtype();
        let batch = |v: Vec<f64>| Tensor::from_vec(v, channels, device)?.to_dtype(dtype);
        let unbiased: Vec<f64> = var
            .iter()
            .map(|v| v * count as f64 / (count as f64 - 1.0))
            .collect();
        let new_mean =
            ((state.mean.as_tensor() * momentum)? + (batch(mean.clone())? * (1.0 - momentum))?)?;
        let new_var =
            ((state.var.as_tensor() * momentum)? + (batch(unbiased)? * (1.0 - momentum))?)?;
        state.mean.set(&new_mean)?;
        state.var.set(&new_var)?;
        BatchNormOp::new(mean, &var, eps, true)
    } else {
        let stat = |v: &candle_core::Var| -> Result<Vec<f64>> {
            Ok(v.as_tensor()
                .flatten_all()?
                .to_dtype(DType::F64)?
                .to_vec1()?)
        };
        BatchNormOp::new(stat(state.mean)?, &stat(state.var)?, eps, false)
    };
    let scale = scale.flatten_all()?.contiguous()?;
    let bias = bias.flatten_all()?.contiguous()?;
    Ok(x.apply_op3(&scale, &bias, op)?)
}

/// ONNX `Flatten`: 2-D `[prod(dims[..axis]), prod(dims[axis..])]`.
pub fn flatten(node: &NodeProto, x: &Tensor) -> Result<Tensor> {
    let a = attr_int(node, "axis", 1);
    let a = if a < 0 { a + x.rank() as i64 } else { a };
    ensure!(
        (0..=x.rank() as i64).contains(&a),
        "Flatten axis out of range"
    );
    let outer: usize = x.dims()[..a as usize].iter().product();
    Ok(x.reshape((outer, ()))?)
}

/// ONNX `Reshape` target dims (`0` copies the input dim unless `allowzero`, `-1` is inferred).
pub fn reshape_dims(input: &[usize], shape: &[i64], allow_zero: bool) -> Result<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut dims = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &s) in shape.iter().enumerate() {
        match s {
            -1 => {
                ensure!(infer.is_none(), "Reshape: more than one -1 in {shape:?}");
                infer = Some(i);
                dims.push(1);
            }
            0 if !allow_zero => dims.push(
                *input
                    .get(i)
                    .context("Reshape: 0 refers to a missing input dim")?,
            ),
            s if s >= 0 => dims.push(s as usize),
            s => bail!("Reshape: invalid dim {s}"),
        }
    }
    if let Some(i) = infer {
        let known: usize = dims.iter().product();
        ensure!(
            known > 0 && total.is_multiple_of(known),
            "Reshape: cannot infer -1 of {shape:?} for input {input:?}"
        );
        dims[i] = total / known;
    }
    ensure!(
        dims.iter().product::<usize>() == total,
        "Reshape: {input:?} cannot become {shape:?}"
    );
    Ok(dims)
}

/// ONNX `Softmax`; opsets before 13 coerce to 2-D at `axis` (default 1), later ones use one axis (default −1).
pub fn softmax(node: &NodeProto, x: &Tensor, opset: i64) -> Result<Tensor> {
    along_softmax_axis(node, x, opset, |t, a| {
        let m = t.max_keepdim(a)?.detach();
        let e = t.broadcast_sub(&m)?.exp()?;
        Ok(e.broadcast_div(&e.sum_keepdim(a)?)?)
    })
}

/// ONNX `LogSoftmax` (the same axes as `Softmax`): `x − max − ln Σ exp(x − max)`.
pub fn log_softmax(node: &NodeProto, x: &Tensor, opset: i64) -> Result<Tensor> {
    along_softmax_axis(node, x, opset, |t, a| {
        let m = t.max_keepdim(a)?.detach();
        let shifted = t.broadcast_sub(&m)?;
        let log_sum = shifted.exp()?.sum_keepdim(a)?.log()?;
        Ok(shifted.broadcast_sub(&log_sum)?)
    })
}

/// Applies `softmax_axis` along the axis Softmax and LogSoftmax normalise in `opset`.
fn along_softmax_axis(
    node: &NodeProto,
    x: &Tensor,
    opset: i64,
    softmax_axis: impl Fn(&Tensor, usize) -> Result<Tensor>,
) -> Result<Tensor> {
    if opset >= 13 {
        softmax_axis(x, axis(attr_int(node, "axis", -1), x.rank())?)
    } else {
        let a = axis(attr_int(node, "axis", 1), x.rank())?;
        let outer: usize = x.dims()[..a].iter().product();
        let y = softmax_axis(&x.reshape((outer, ()))?, 1)?;
        Ok(y.reshape(x.dims())?)
    }
}

/// ONNX `Sum`: every input added, with numpy broadcasting.
pub fn sum(inputs: &[Tensor]) -> Result<Tensor> {
    let (first, rest) = inputs
        .split_first()
        .context("Sum needs at least one input")?;
    rest.iter()
        .try_fold(first.clone(), |acc, t| Ok(acc.broadcast_add(t)?))
}

/// ONNX `LRN` across channels: `x / (bias + alpha / size · Σ x²)^beta`, the sum over the channels
/// from `c − ⌊(size−1)/2⌋` to `c + ⌈(size−1)/2⌉` that exist (zero padding, then one slice per
/// window position).
pub fn lrn(node: &NodeProto, x: &Tensor) -> Result<Tensor> {
    let size = attr_int(node, "size", 0);
    ensure!(
        size >= 1,
        "LRN: attribute size must be at least 1, got {size}"
    );
    ensure!(
        x.rank() >= 3,
        "LRN: the input must be [N, C, D1, …], got {:?}",
        x.dims()
    );
    let alpha = attr_float(node, "alpha", 1e-4) as f64;
    let beta = attr_float(node, "beta", 0.75) as f64;
    let bias = attr_float(node, "bias", 1.0) as f64;
    let channels = x.dims()[1];
    let size = size as usize;
    // Channels further than the tensor holds add only zeros.
    let reach = channels.saturating_sub(1);
    let below = ((size - 1) / 2).min(reach);
    let above = (size - 1 - (size - 1) / 2).min(reach);
    let padded = x.sqr()?.pad_with_zeros(1, below, above)?;
    let mut sums = padded.narrow(1, 0, channels)?;
    for start in 1..=below + above {
        sums = (sums + padded.narrow(1, start, channels)?)?;
    }
    let divisor = sums.affine(alpha / size as f64, bias)?.powf(beta)?;
    Ok(x.broadcast_div(&divisor)?)
}

/// ONNX `Dropout` in training mode: zero each value with probability `ratio`, scale the rest by `1/(1−ratio)`.
pub fn dropout_train(x: &Tensor, ratio: f64) -> Result<Tensor> {
    if ratio <= 0.0 {
        return Ok(x.clone());
    }
    ensure!(ratio < 1.0, "Dropout ratio {ratio} must be below 1");
    let keep = Tensor::rand(0f32, 1f32, x.shape(), x.device())?
        .ge(ratio as f32)?
        .to_dtype(x.dtype())?;
    Ok((x * keep)?.affine(1.0 / (1.0 - ratio), 0.0)?)
}

/// A constant float tensor of `dtype` from `f32` values.
pub fn constant(values: Vec<f32>, dims: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(values, dims, device)?.to_dtype(dtype)?)
}

#[cfg(test)]
mod operator_list_tests {
    use super::{RUNTIME_ONLY, SUPPORTED_OPS};

    /// The interpreter evaluates only operators the runtime loads, and the runtime loads every
    /// other operator only for a reason listed in `RUNTIME_ONLY`.
    #[test]
    fn training_and_runtime_support_the_same_operators_but_the_listed_ones() {
        let runtime = nnzip_core::SUPPORTED_OPERATORS;
        for op in SUPPORTED_OPS {
            assert!(
                runtime.contains(op),
                "{op}: trained but not loaded by the runtime"
            );
        }
        let mut only_runtime: Vec<&str> = runtime
            .iter()
            .copied()
            .filter(|op| !SUPPORTED_OPS.contains(op))
            .collect();
        let mut listed: Vec<&str> = RUNTIME_ONLY.iter().map(|(op, _)| *op).collect();
        only_runtime.sort_unstable();
        listed.sort_unstable();
        assert_eq!(only_runtime, listed);
    }
}
