//! What error-compensated rounding (GPTQ, [`crate::compress::gptq`]) needs to know of a layer:
//! which layers it can compensate and what their rows see, and the second moments of those
//! inputs over views run through the dense model.

use super::photos::Views;
use crate::compress::gptq::{LayerHessian, LayerStats};
use crate::onnx::GraphExecutor;
use crate::onnx::proto::{attr_int, attr_ints, attr_string};
use crate::progress::progress_bar;
use anyhow::{Context, Result, bail};
use nnzip_core::onnx::proto::ModelProto;
use std::collections::BTreeMap;

/// Input statistics of the layers whose rounding can be compensated (GPTQ), by weight name.
pub type Hessians = BTreeMap<String, LayerStats>;

/// Views run through the model at once while measuring layer inputs.
pub(super) const HESSIAN_BATCH: usize = 4;

/// What one row of a compensable layer's weight sees: the input patches of a convolution, or
/// the input vector of `Gemm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerInputs {
    /// `Gemm` with `transA = 0`, `transB = 1`: row `o` of the weight meets the input vector.
    Matrix,
    /// `Conv` (no dilation, explicit pads): row `o` meets the `(C/group)·kh·kw` patch of its
    /// group's input channels at every output position.
    Patches {
        /// Kernel height and width.
        kernel: [usize; 2],
        /// Strides (height, width).
        strides: [usize; 2],
        /// Pads: top, left, bottom, right.
        pads: [usize; 4],
        /// Groups (the input channels for a depthwise convolution).
        group: usize,
    },
}

/// Most inputs per row for GPTQ: its statistics take `8·inputs²` bytes per group and its
/// factorisation `inputs³` operations (at 2,304 = 256 channels × 3×3: 42 MB and ~12 G, seconds).
/// Phone models stay far below (EfficientNet-Lite0: 1,280); wider layers are rounded plainly.
pub const MAX_COMPENSATED_INPUTS: usize = 2304;

/// The weights of `names` whose rounding GPTQ can compensate, with what their rows see:
/// convolutions without dilation or `auto_pad` (pointwise, depthwise, grouped, dense) and `Gemm`
/// with `transB = 1` and `transA = 0`, with at most [`MAX_COMPENSATED_INPUTS`] inputs per row.
pub fn compensable_layers(model: &ModelProto, names: &[String]) -> BTreeMap<String, LayerInputs> {
    let mut out = BTreeMap::new();
    let Some(graph) = model.graph.as_ref() else {
        return out;
    };
    let shapes: BTreeMap<&str, &[i64]> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t.dims.as_slice()))
        .collect();
    let positive = |v: i64| usize::try_from(v).ok().filter(|&v| v > 0);
    for n in &graph.node {
        let Some(w) = n.input.get(1).filter(|w| names.contains(*w)) else {
            continue;
        };
        let inputs = match n.op_type.as_str() {
            "Conv" => (|| {
                let d = shapes.get(w.as_str()).filter(|d| d.len() == 4)?;
                let undilated = attr_ints(n, "dilations").is_none_or(|x| x.iter().all(|&d| d == 1));
                let auto_pad = attr_string(n, "auto_pad", "NOTSET");
                let explicit = auto_pad.is_empty() || auto_pad == "NOTSET";
                if !(undilated && explicit) {
                    return None;
                }
                let strides = attr_ints(n, "strides").unwrap_or_else(|| vec![1, 1]);
                let pads = attr_ints(n, "pads").unwrap_or_else(|| vec![0; 4]);
                if strides.len() != 2 || pads.len() != 4 || pads.iter().any(|&p| p < 0) {
                    return None;
                }
                Some(LayerInputs::Patches {
                    kernel: [positive(d[2])?, positive(d[3])?],
                    strides: [positive(strides[0])?, positive(strides[1])?],
                    pads: [pads[0], pads[1], pads[2], pads[3]].map(|p| p as usize),
                    group: positive(attr_int(n, "group", 1))?,
                })
            })(),
            "Gemm" if attr_int(n, "transA", 0) == 0 && attr_int(n, "transB", 0) == 1 => {
                Some(LayerInputs::Matrix)
            }
            _ => None,
        };
        // Inputs per row: the weight's elements over its first dimension.
        let cols: i64 = shapes
            .get(w.as_str())
            .map_or(0, |d| d.iter().skip(1).product());
        if let Some(inputs) = inputs.filter(|_| (1..=MAX_COMPENSATED_INPUTS as i64).contains(&cols))
        {
            out.entry(w.clone()).or_insert(inputs);
        }
    }
    out
}

/// The `[groups, K, positions]` patches a convolution's rows meet (`K = (C/groups)·kh·kw`, in the
/// weight's `[c, ky, kx]` order), from its input `[N, C, H, W]`.
fn conv_patches(
    x: &candle_core::Tensor,
    kernel: [usize; 2],
    strides: [usize; 2],
    pads: [usize; 4],
    group: usize,
) -> Result<candle_core::Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let [kh, kw] = kernel;
    let [sh, sw] = strides;
    let (hp, wp) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
    if hp < kh || wp < kw || c % group != 0 {
        bail!("a {kh}×{kw} kernel on a {h}×{w} input of {c} channels in {group} groups");
    }
    let (ho, wo) = ((hp - kh) / sh + 1, (wp - kw) / sw + 1);
    // Pad, plus room for the last stride step, so that each tap is a reshape away.
    let x = x
        .pad_with_zeros(2, pads[0], pads[2] + sh)?
        .pad_with_zeros(3, pads[1], pads[3] + sw)?;
    let mut taps = Vec::with_capacity(kh * kw);
    for ky in 0..kh {
        for kx in 0..kw {
            let t = x
                .narrow(2, ky, ho * sh)?
                .reshape((n, c, ho, sh, ()))?
                .narrow(3, 0, 1)?
                .squeeze(3)?
                .narrow(3, kx, wo * sw)?
                .reshape((n, c, ho, wo, sw))?
                .narrow(4, 0, 1)?
                .squeeze(4)?;
            taps.push(t);
        }
    }
    // [N, C, T, Ho, Wo] → [groups, (C/groups)·T, N·Ho·Wo].
    let p = candle_core::Tensor::stack(&taps, 2)?;
    let k = c / group * kh * kw;
    Ok(p.reshape((n, group, k, ho * wo))?
        .permute((1, 2, 0, 3))?
        .reshape((group, k, n * ho * wo))?
        .contiguous()?)
}

/// `[groups, K, vectors]`: what each group's rows of the layer `name` see in `x`, the tensor
/// its node receives (each group's input vectors as columns).
pub(super) fn row_inputs(
    name: &str,
    x: &candle_core::Tensor,
    geometry: LayerInputs,
) -> Result<candle_core::Tensor> {
    let x = x.to_dtype(candle_core::DType::F32)?;
    match (geometry, x.rank()) {
        (LayerInputs::Matrix, 2) => Ok(x.t()?.unsqueeze(0)?.contiguous()?),
        (
            LayerInputs::Patches {
                kernel,
                strides,
                pads,
                group,
            },
            4,
        ) => conv_patches(&x, kernel, strides, pads, group),
        (_, r) => bail!("'{name}' gets a rank-{r} input"),
    }
}

/// Views as candle batches of at most `batch` inputs.
pub(super) fn candle_batches(
    views: &Views,
    batch: usize,
) -> impl Iterator<Item = Result<candle_core::Tensor>> + '_ {
    views.inputs.chunks(batch.max(1)).map(|chunk| {
        let tensors: Vec<candle_core::Tensor> = chunk
            .iter()
            .map(|x| {
                let v = x.to_plain_array_view::<f32>()?;
                let shape: Vec<usize> = v.shape().to_vec();
                Ok(
                    candle_core::Tensor::from_iter(v.iter().copied(), &candle_core::Device::Cpu)?
                        .reshape(shape)?,
                )
            })
            .collect::<Result<_>>()?;
        Ok(candle_core::Tensor::cat(&tensors, 0)?)
    })
}

/// `Σ x·xᵀ` of what one compensable layer's rows see, per group of rows, over `samples`
/// input vectors: what GPTQ's factorisation is made from, and what a statistics cache keeps
/// ([`super::statistics_cache`]).
#[derive(Debug, Clone, PartialEq)]
pub struct InputMoments {
    /// Groups of rows that see the same inputs.
    pub groups: usize,
    /// Inputs per row.
    pub inputs: usize,
    /// Input vectors summed, per group.
    pub samples: usize,
    /// Rows (output channels) of the weight.
    pub rows: usize,
    /// Per group, the `inputs × inputs` sum, row-major.
    pub sums: Vec<f64>,
}

/// Input moments by weight name.
pub type LayerMoments = BTreeMap<String, InputMoments>;

/// Measures `H = Σ x·xᵀ` of what the rows of every layer of `names` that
/// [`compensable_layers`] accepts see, over `views` run through the dense model (`onnx`);
/// [`factor_moments`] factors them for GPTQ.
pub fn input_moments(
    model: &ModelProto,
    views: &Views,
    names: &[String],
    progress: bool,
) -> Result<LayerMoments> {
    let geometry = compensable_layers(model, names);
    if geometry.is_empty() || views.is_empty() {
        return Ok(LayerMoments::new());
    }
    // Output channels of each weight, to split its rows into groups.
    let rows: BTreeMap<String, usize> = model
        .graph
        .as_ref()
        .map(|g| {
            g.initializer
                .iter()
                .filter(|t| geometry.contains_key(&t.name))
                .filter_map(|t| Some((t.name.clone(), *t.dims.first()? as usize)))
                .collect()
        })
        .unwrap_or_default();
    let layers: std::collections::BTreeSet<String> = geometry.keys().cloned().collect();
    let exec = GraphExecutor::new(model.clone(), "teacher")?;
    let mut moments = LayerMoments::new();
    let bar = progress_bar(progress, views.len(), "layer inputs");
    for input in candle_batches(views, HESSIAN_BATCH) {
        let input = input?;
        let n = input.dim(0)?;
        for (name, x) in exec.layer_inputs(&input, &layers)? {
            let a = row_inputs(&name, &x, geometry[&name])?;
            let (groups, k, m) = a.dims3()?;
            let h: Vec<f32> = a.matmul(&a.t()?)?.flatten_all()?.to_vec1()?;
            let out_rows = rows.get(&name).copied().unwrap_or(0);
            let entry = moments.entry(name).or_insert_with(|| InputMoments {
                groups,
                inputs: k,
                samples: 0,
                rows: out_rows,
                sums: vec![0f64; groups * k * k],
            });
            entry.samples += m;
            entry
                .sums
                .iter_mut()
                .zip(h)
                .for_each(|(a, b)| *a += f64::from(b));
        }
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(moments)
}

/// GPTQ's factorisation of every layer's moments.
pub fn factor_moments(moments: &LayerMoments) -> Result<Hessians> {
    moments
        .iter()
        .map(|(name, m)| {
            let k = m.inputs;
            if k == 0
                || m.groups == 0
                || m.rows % m.groups != 0
                || Some(m.sums.len()) != m.groups.checked_mul(k).and_then(|g| g.checked_mul(k))
            {
                bail!(
                    "'{name}': {} output channels in {} groups of {k} inputs ({} sums)",
                    m.rows,
                    m.groups,
                    m.sums.len()
                );
            }
            let factors = m
                .sums
                .chunks(k * k)
                .map(|h| LayerHessian::new(h, k, m.samples))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("GPTQ statistics of '{name}'"))?;
            Ok((
                name.clone(),
                LayerStats {
                    groups: factors,
                    rows_per_group: m.rows / m.groups,
                },
            ))
        })
        .collect()
}

/// The weights of `names` that GPTQ can compensate, in the order the graph computes them.
pub fn compensable_in_graph_order(model: &ModelProto, names: &[String]) -> Vec<String> {
    let geometry = compensable_layers(model, names);
    let mut order = Vec::new();
    for n in model.graph.iter().flat_map(|g| &g.node) {
        if let Some(w) = n.input.get(1).filter(|w| geometry.contains_key(*w))
            && !order.contains(w)
        {
            order.push(w.clone());
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compensable_layers_are_the_convolutions_and_gemm_with_their_geometry() {
        use crate::onnx::build::{Architecture, build};
        let m = build(Architecture::MobileTiny, 0);
        let graph = m.graph.as_ref().unwrap();
        let names: Vec<String> = graph
            .initializer
            .iter()
            .filter(|t| t.dims.len() >= 2)
            .map(|t| t.name.clone())
            .collect();
        let got = compensable_layers(&m, &names);
        let (mut depthwise, mut gemm, mut convs) = (0, 0, 0);
        for n in &graph.node {
            let Some(w) = n.input.get(1).filter(|w| names.contains(*w)) else {
                continue;
            };
            let dims = &graph
                .initializer
                .iter()
                .find(|t| &t.name == w)
                .unwrap()
                .dims;
            match (n.op_type.as_str(), got.get(w)) {
                ("Conv", Some(LayerInputs::Patches { kernel, group, .. })) => {
                    assert_eq!(kernel.map(|k| k as i64), [dims[2], dims[3]], "{w}");
                    let g = n
                        .attribute
                        .iter()
                        .find(|a| a.name == "group")
                        .map_or(1, |a| a.i);
                    assert_eq!(*group as i64, g, "{w}");
                    depthwise += usize::from(g > 1 && dims[1] == 1);
                    convs += 1;
                }
                ("Gemm", Some(LayerInputs::Matrix)) => gemm += 1,
                (op, g) => panic!("{op} '{w}': {g:?}"),
            }
        }
        assert!(
            convs >= 8 && depthwise >= 4 && gemm == 1,
            "{convs} {depthwise} {gemm}"
        );
    }

    #[test]
    fn layers_too_wide_or_dilated_are_rounded_plainly() {
        use crate::onnx::build::single_node_model;
        use crate::onnx::proto::{float_tensor, ints_attr, node};
        let conv = |c: usize, attrs| {
            let w = float_tensor("w", &[2, c, 3, 3], &vec![0.1; 2 * c * 9]);
            let n = node("Conv", "conv", &["x", "w"], &["y"], attrs);
            compensable_layers(&single_node_model(n, &[1, c, 8, 8], vec![w]), &["w".into()])
        };
        // 256 channels × 3×3 = 2,304 inputs per row: compensated; one channel more is not.
        assert!(conv(MAX_COMPENSATED_INPUTS / 9, vec![]).contains_key("w"));
        assert!(conv(MAX_COMPENSATED_INPUTS / 9 + 1, vec![]).is_empty());
        assert!(conv(4, vec![ints_attr("dilations", &[2, 2])]).is_empty());
    }

    #[test]
    fn conv_patches_are_what_each_output_position_sees() {
        // Asymmetric pads, stride 2, two groups: every patch value against direct indexing.
        let (n, c, h, w) = (2, 4, 7, 6);
        let values: Vec<f32> = (0..n * c * h * w).map(|i| i as f32).collect();
        let x =
            candle_core::Tensor::from_vec(values.clone(), (n, c, h, w), &candle_core::Device::Cpu)
                .unwrap();
        let (kernel, strides, pads, group) = ([3, 2], [2, 2], [1, 0, 2, 1], 2);
        let p = conv_patches(&x, kernel, strides, pads, group).unwrap();
        let (ho, wo) = ((h + 3 - 3) / 2 + 1, (w + 1 - 2) / 2 + 1);
        assert_eq!(p.dims(), &[group, (c / group) * 6, n * ho * wo]);
        let p: Vec<f32> = p.flatten_all().unwrap().to_vec1().unwrap();
        let cg = c / group;
        for g in 0..group {
            for cl in 0..cg {
                for ky in 0..3 {
                    for kx in 0..2 {
                        let k = (cl * 3 + ky) * 2 + kx;
                        for b in 0..n {
                            for oy in 0..ho {
                                for ox in 0..wo {
                                    let (y, xx) = ((oy * 2 + ky) as i64 - 1, (ox * 2 + kx) as i64);
                                    let want = if (0..h as i64).contains(&y)
                                        && (0..w as i64).contains(&xx)
                                    {
                                        values[((b * c + g * cg + cl) * h + y as usize) * w
                                            + xx as usize]
                                    } else {
                                        0.0
                                    };
                                    let m = (b * ho + oy) * wo + ox;
                                    let got = p[(g * cg * 6 + k) * n * ho * wo + m];
                                    assert_eq!(
                                        got, want,
                                        "g{g} c{cl} k({ky},{kx}) b{b} ({oy},{ox})"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
