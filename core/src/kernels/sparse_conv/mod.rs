//! k×k convolutions with a pruned constant kernel, run from the kept weights only.
//!
//! A `Conv` of group 1 over channel-first f32 data (NCHW or CHW, two spatial axes) whose kernel
//! is mostly zeros becomes a [`SparseConv`] where the rule ([`prefers_sparse_conv`]) says so:
//! the kernel is held in its compact form ([`taps::KeptTaps`]: one word per kept weight) and
//! the dense constant leaves the graph, so neither it nor tract's packed copy of it stays in
//! memory. The compact form is built from the decoder's entries
//! ([`crate::format::SparseEntries`]) when the kernel is the expansion of one of them, from the
//! dense constant otherwise. Each output channel's plane is the sum of its kept weights, each a
//! weight times its input plane shifted by its tap ([`kernel`]); every input plane is first
//! copied into a zero-padded buffer, the depthwise kernel's layout, so that padding, strides
//! and dilations cost no branch. The bias and a following ReLU or ReLU6 are applied before the
//! store.
//!
//! 1×1 convolutions do not come here: tract's declutter makes them matrix products, which the
//! sparse matrix product ([`super::sparse`]) takes.

mod kernel;
pub mod taps;

use super::depthwise::PlaneShape;
use super::depthwise::geometry::PaddedLayout;
use super::pointwise::{Clamp, following_clamp};
use super::{SparseKernel, constant};
use crate::format::SparseEntries;
use kernel::{Image, Path};
use taps::KeptTaps;
use tract_core::internal::*;
use tract_core::ops::cnn::{Conv, KernelFormat};

/// Densest convolution kernel the sparse path takes by default: a margin below the break-even
/// density that `core/examples/sparse_rule.rs conv` measures (the sweep and its command are in
/// `docs/PERFORMANCE.md`). A kept weight takes a word, as a dense one does, so at this density
/// the kernel also holds at most half the dense bytes.
pub const CONV_DENSITY_LIMIT: f64 = 0.5;

/// Whether the sparse path runs a convolution with `kept` of its `weights` kernel weights
/// faster than tract's dense one.
pub fn prefers_sparse_conv(kept: usize, weights: usize) -> bool {
    kept <= most_kept_conv(weights)
}

/// The most kept weights at which [`prefers_sparse_conv`] takes a kernel of `weights` weights.
pub fn most_kept_conv(weights: usize) -> usize {
    // `kept as f64 <= limit · weights` for a whole `kept`.
    (CONV_DENSITY_LIMIT * weights as f64).floor() as usize
}

/// The operator: a group-1 convolution of channel-first f32 planes with a kernel held as
/// [`KeptTaps`], then its bias and clamp.
#[derive(Debug, Clone)]
pub struct SparseConv {
    layout: PaddedLayout,
    taps: Arc<KeptTaps>,
    /// One value per output channel.
    bias: Vec<f32>,
    clamp: Option<Clamp>,
    /// Whether the data has a batch axis (NCHW) or not (CHW).
    batch_axis: bool,
    path: Path,
}

impl PartialEq for SparseConv {
    fn eq(&self, other: &Self) -> bool {
        let bits = |b: &[f32]| b.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        (&self.layout, self.clamp, self.batch_axis, self.path)
            == (&other.layout, other.clamp, other.batch_axis, other.path)
            && bits(&self.bias) == bits(&other.bias)
            && self.taps == other.taps
    }
}

// The codebook and scales hold no NaN (the rewrite takes finite kernels only, the decoder's
// values are finite), so equality is an equivalence.
impl Eq for SparseConv {}

impl SparseConv {
    /// The name of the kernel it runs (`portable`, `avx2+fma`, `neon`).
    pub fn kernel_name(&self) -> &'static str {
        self.path.name()
    }

    /// The compact kernel.
    pub fn taps(&self) -> &KeptTaps {
        &self.taps
    }

    /// Bytes of weights it holds: the compact kernel and the bias.
    pub fn bytes(&self) -> usize {
        self.taps.bytes() + 4 * self.bias.len()
    }

    /// The output's shape for `images` images (`None`: no batch axis).
    fn output_shape<D: Clone + From<usize>>(&self, images: Option<D>) -> TVec<D> {
        let shape = &self.layout.shape;
        let mut out: TVec<D> = images.into_iter().collect();
        out.extend([self.taps.outputs(), shape.oh, shape.ow].map(D::from));
        out
    }

    fn eval_f32(&self, input: &Tensor) -> TractResult<Tensor> {
        let shape = &self.layout.shape;
        let planes = [self.taps.inputs(), shape.h, shape.w];
        let dims = input.shape();
        let images = if self.batch_axis {
            ensure!(
                dims.len() == 4 && dims[1..] == planes,
                "sparse convolution built for {planes:?} planes, got input {dims:?}"
            );
            dims[0]
        } else {
            ensure!(
                dims == planes,
                "sparse convolution built for {planes:?} planes, got input {dims:?}"
            );
            1
        };
        let out_shape = self.output_shape(self.batch_axis.then_some(images));
        let mut output = Tensor::zero::<f32>(&out_shape)?;
        let in_image: usize = planes.iter().product();
        let out_image = self.taps.outputs() * shape.oh * shape.ow;
        if images == 0 || in_image == 0 || out_image == 0 {
            return Ok(output);
        }
        let input = input.try_as_plain_ram()?;
        let input = input.as_slice::<f32>()?;
        let mut scratch = vec![0f32; self.taps.inputs() * self.layout.scratch_len()];
        {
            let mut plain = output.try_as_plain_ram_mut()?;
            let out = plain.as_slice_mut::<f32>()?;
            for (src, out) in input
                .chunks_exact(in_image)
                .zip(out.chunks_exact_mut(out_image))
            {
                let image = Image {
                    layout: &self.layout,
                    taps: &self.taps,
                    bias: &self.bias,
                    clamp: self.clamp.map(|c| (c.low, c.high)),
                    src,
                    scratch: &mut scratch,
                    out,
                };
                kernel::run(self.path, image)?;
            }
        }
        Ok(output)
    }
}

impl Op for SparseConv {
    fn name(&self) -> StaticName {
        "NnzipSparseConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let t = &self.taps;
        Ok(vec![format!(
            "{:?}, {} → {} channels, {} kept weights ({:.1}%), {} bytes, {} kernel{}",
            self.layout.shape,
            t.inputs(),
            t.outputs(),
            t.kept(),
            100.0 * t.density(),
            self.bytes(),
            self.path.name(),
            match self.clamp {
                Some(c) => format!(", clamped to [{}, {}]", c.low, c.high),
                None => String::new(),
            }
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for SparseConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.datum_type() == f32::datum_type(),
            "the sparse convolution takes f32, got {:?}",
            input.datum_type()
        );
        Ok(tvec!(self.eval_f32(&input)?.into_tvalue()))
    }
}

impl TypedOp for SparseConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        ensure!(inputs[0].rank() == 3 + self.batch_axis as usize);
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
        let per_image = self.taps.kept() * shape.oh * shape.ow;
        Ok(tvec!((Cost::FMA(f32::datum_type()), n * per_image)))
    }

    as_op!();
}

/// A convolution the sparse kernel can take, read from tract's `Conv`.
struct ConvParts {
    shape: PlaneShape,
    /// `[outputs, inputs, kh, kw]`.
    kernel_shape: [usize; 4],
    batch_axis: bool,
    kernel: Arc<Tensor>,
    /// One value per output channel.
    bias: Vec<f32>,
}

impl ConvParts {
    /// `conv` where it is group 1, f32, two spatial axes, channel-first, with an OIHW constant
    /// kernel, a constant bias and concrete planes.
    fn read(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Self>> {
        let spec = &conv.pool_spec;
        if conv.q_params.is_some()
            || conv.group != 1
            || conv.kernel_fmt != KernelFormat::OIHW
            || spec.rank() != 2
            || spec.data_format.c_is_last()
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
        let outputs = spec.output_channels;
        let [kh, kw] = [spec.kernel_shape[0], spec.kernel_shape[1]];
        let kernel_shape = [outputs, dims[0], kh, kw];
        if kernel.datum_type() != f32::datum_type()
            || bias.datum_type() != f32::datum_type()
            || kernel.shape() != kernel_shape
            || spec.input_channels != dims[0]
        {
            return Ok(None);
        }
        let bias_values = bias.try_as_plain_ram()?;
        let bias_values = bias_values.as_slice::<f32>()?;
        let bias: Vec<f32> = match bias_values.len() {
            1 => vec![bias_values[0]; outputs],
            n if n == outputs => bias_values.to_vec(),
            _ => return Ok(None),
        };
        Ok(Some(ConvParts {
            shape: PlaneShape::of_convolution(spec, [dims[1], dims[2]]),
            kernel_shape,
            batch_axis,
            kernel,
            bias,
        }))
    }
}

/// The patch replacing `node`, a `Conv`, with a [`SparseConv`] (and the clamp following it with
/// the op's own), or `None` where [`ConvParts::read`] refuses it, the kernel is not finite,
/// `choice` keeps it dense, or (by default) the rule prefers the dense path.
pub(super) fn replacement(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
    choice: SparseKernel,
    decoded: &[SparseEntries],
) -> TractResult<Option<TypedModelPatch>> {
    if choice == SparseKernel::Dense {
        return Ok(None);
    }
    let Some(parts) = ConvParts::read(model, node, conv)? else {
        return Ok(None);
    };
    let Some(layout) = PaddedLayout::new(parts.shape) else {
        return Ok(None);
    };
    let dense = parts.kernel.try_as_plain_ram()?;
    let dense = dense.as_slice::<f32>()?;
    // By default the count stops once the rule's limit is passed: a dense kernel costs part
    // of one scan.
    let most = match choice {
        SparseKernel::Auto => most_kept_conv(dense.len()),
        _ => usize::MAX,
    };
    let Some(kept) = super::sparse::finite_nonzero_count_at_most(dense, most) else {
        return Ok(None);
    };
    if parts.bias.iter().any(|v| !v.is_finite()) {
        return Ok(None);
    }
    let decoded = decoded
        .iter()
        .find(|e| super::sparse::expands_to(e, dense, kept));
    let built = match decoded {
        Some(entries) => KeptTaps::from_entries(entries, parts.kernel_shape, &layout),
        None => KeptTaps::from_dense(dense, parts.kernel_shape, &layout),
    };
    let Some(taps) = built else {
        return Ok(None);
    };
    let (clamp, clamp_nodes) = following_clamp(model, node)?;
    let op = SparseConv {
        layout,
        taps: Arc::new(taps),
        bias: parts.bias,
        clamp,
        batch_axis: parts.batch_axis,
        path: if choice == SparseKernel::Portable {
            Path::Portable
        } else {
            Path::best()
        },
    };
    let patch =
        super::replace_absorbing(model, node, "nnzip sparse convolution", op, &clamp_nodes)?;
    Ok(Some(patch))
}
