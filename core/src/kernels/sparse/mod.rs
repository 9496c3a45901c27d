//! Matrix products with a pruned constant weight, run from the kept weights only.
//!
//! A fully connected layer (`Gemm`, `MatMul`) or a 1×1 convolution reaches this rewrite as a
//! two-input `EinSum` of the data with a constant matrix (tract's declutter turns 1×1
//! convolutions into one). Where the rule ([`prefers_sparse`]) says so, the `EinSum` becomes a
//! [`SparseMatMul`] holding the matrix in its compact form ([`layout::SparseRows`]: `u16`
//! columns and 4- or 8-bit codebook indices per kept weight) and the dense constant leaves the
//! graph, so its memory is freed once the model is optimised.

pub mod layout;
mod rows;

use super::{SparseKernel, constant};
use layout::SparseRows;
use rows::Path;
use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;

/// The operator: `y = W x` along one axis of the data, `W` held as [`SparseRows`].
#[derive(Debug, Clone)]
pub struct SparseMatMul {
    weights: Arc<SparseRows>,
    /// The data axis that is summed over (`W`'s columns); the output has `W`'s rows there.
    axis: usize,
    path: Path,
}

impl PartialEq for SparseMatMul {
    fn eq(&self, other: &Self) -> bool {
        self.axis == other.axis && self.path == other.path && self.weights == other.weights
    }
}

// The weights hold no NaN (they are the non-zero values of a constant that was checked finite
// by the decoder, or by the caller of `new`), so equality is an equivalence.
impl Eq for SparseMatMul {}

impl SparseMatMul {
    /// The operator summing `axis` of its input against `weights`' columns, on the vector
    /// kernel of this CPU, or on the plain-Rust one where `portable` says so.
    pub fn new(weights: SparseRows, axis: usize, portable: bool) -> SparseMatMul {
        SparseMatMul {
            weights: Arc::new(weights),
            axis,
            path: if portable {
                Path::Portable
            } else {
                Path::best()
            },
        }
    }

    /// The name of the kernel it runs (`portable`, `avx2+fma`, `neon`).
    pub fn kernel_name(&self) -> &'static str {
        self.path.name()
    }

    /// The compact weights.
    pub fn weights(&self) -> &SparseRows {
        &self.weights
    }

    fn eval_f32(&self, input: &Tensor) -> TractResult<Tensor> {
        let shape = input.shape();
        ensure!(
            shape.len() > self.axis && shape[self.axis] == self.weights.columns,
            "sparse matrix product built for {} values along axis {}, got input {shape:?}",
            self.weights.columns,
            self.axis
        );
        let outer: usize = shape[..self.axis].iter().product();
        let plane: usize = shape[self.axis + 1..].iter().product();
        let mut out_shape: TVec<usize> = shape.into();
        out_shape[self.axis] = self.weights.rows;
        let mut output = Tensor::zero::<f32>(&out_shape)?;
        let input = input.try_as_plain_ram()?;
        let x = input.as_slice::<f32>()?;
        let (k, n) = (self.weights.columns * plane, self.weights.rows * plane);
        if k == 0 || n == 0 {
            return Ok(output);
        }
        {
            let mut plain = output.try_as_plain_ram_mut()?;
            let y = plain.as_slice_mut::<f32>()?;
            for (x, y) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)).take(outer) {
                if plane == 1 {
                    rows::dot(&self.weights, self.path, x, y);
                } else {
                    rows::axpy(&self.weights, self.path, plane, x, y);
                }
            }
        }
        Ok(output)
    }
}

impl Op for SparseMatMul {
    fn name(&self) -> StaticName {
        "NnzipSparseMatMul".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let w = &self.weights;
        Ok(vec![format!(
            "{}×{} with {} kept weights ({:.1}%), {} bytes, {} kernel",
            w.rows,
            w.columns,
            w.entries(),
            100.0 * density(w),
            w.bytes(),
            self.path.name()
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for SparseMatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.datum_type() == f32::datum_type(),
            "the sparse matrix product takes f32, got {:?}",
            input.datum_type()
        );
        Ok(tvec!(self.eval_f32(&input)?.into_tvalue()))
    }
}

impl TypedOp for SparseMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        ensure!(inputs[0].rank() > self.axis);
        let mut shape = inputs[0].shape.to_tvec();
        shape[self.axis] = self.weights.rows.into();
        Ok(tvec!(f32::fact(shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let others: TDim = inputs[0]
            .shape
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.axis)
            .map(|(_, d)| d.clone())
            .product();
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            others * self.weights.entries()
        )))
    }

    as_op!();
}

/// Kept weights over all weights.
fn density(w: &SparseRows) -> f64 {
    w.entries() as f64 / (w.rows * w.columns).max(1) as f64
}

/// Whether the sparse path runs a layer faster than tract's dense one, from its density and
/// the values each weight meets per run (`plane`: 1 for a fully connected layer at batch 1,
/// the pixels of a 1×1 convolution). See `docs/PERFORMANCE.md` for the measurements.
pub fn prefers_sparse(w: &SparseRows, plane: usize) -> bool {
    let limit = if plane <= 1 {
        GEMV_DENSITY_LIMIT
    } else {
        PLANE_DENSITY_LIMIT
    };
    density(w) <= limit && w.bytes() < 4 * w.rows * w.columns
}

/// Densest fully connected layer the sparse path takes by default (batch 1).
pub const GEMV_DENSITY_LIMIT: f64 = 0.25;
/// Densest 1×1 convolution the sparse path takes by default.
pub const PLANE_DENSITY_LIMIT: f64 = 0.10;

/// The patch replacing `node`, an `EinSum`, with a [`SparseMatMul`], or `None` where it is not a
/// product of f32 data with a constant f32 matrix along one data axis (the output being the
/// data with that axis replaced by the matrix's other one), or where `choice` keeps it dense.
pub(super) fn replacement(
    model: &TypedModel,
    node: &TypedNode,
    op: &EinSum,
    choice: SparseKernel,
) -> TractResult<Option<TypedModelPatch>> {
    if choice == SparseKernel::Dense
        || op.q_params.is_some()
        || op.operating_dt != f32::datum_type()
        || node.inputs.len() != 2
    {
        return Ok(None);
    }
    let konsts = [
        constant(model, node.inputs[0])?,
        constant(model, node.inputs[1])?,
    ];
    let (weight_slot, weights) = match konsts {
        [Some(w), None] => (0, w),
        [None, Some(w)] => (1, w),
        _ => return Ok(None),
    };
    let data_slot = 1 - weight_slot;
    let data = model.outlet_fact(node.inputs[data_slot])?;
    if weights.rank() != 2
        || weights.datum_type() != f32::datum_type()
        || data.datum_type != f32::datum_type()
    {
        return Ok(None);
    }
    let Some((axis, transposed)) = product_axes(op, weight_slot, data.rank()) else {
        return Ok(None);
    };
    let (rows, columns) = if transposed {
        (weights.shape()[1], weights.shape()[0])
    } else {
        (weights.shape()[0], weights.shape()[1])
    };
    let dense = weights.try_as_plain_ram()?;
    let dense = dense.as_slice::<f32>()?;
    if dense.iter().any(|v| !v.is_finite()) {
        return Ok(None);
    }
    let Some(sparse) = SparseRows::from_dense(dense, rows, columns, transposed) else {
        return Ok(None);
    };
    let plane = data.shape[axis + 1..]
        .iter()
        .map(|d| d.to_usize().ok())
        .product::<Option<usize>>()
        .unwrap_or(usize::MAX);
    if choice == SparseKernel::Auto && !prefers_sparse(&sparse, plane) {
        return Ok(None);
    }
    let op = SparseMatMul::new(sparse, axis, choice == SparseKernel::Portable);
    TypedModelPatch::replace_single_op(model, node, &node.inputs[data_slot..=data_slot], op)
        .map(Some)
}

/// For an `EinSum` of a constant matrix (input `weight_slot`) with data of rank `data_rank`:
/// the data axis summed over and whether the matrix is stored summed-axis first, when the
/// output is the data with that axis replaced by the matrix's other axis (every other axis
/// passing through in place).
fn product_axes(op: &EinSum, weight_slot: usize, data_rank: usize) -> Option<(usize, bool)> {
    let data_slot = 1 - weight_slot;
    if op.axes.input_count() != 2
        || op.axes.output_count() != 1
        || op.axes.rank(InOut::Out(0)) != data_rank
    {
        return None;
    }
    let (mut summed, mut produced) = (None, None);
    for axis in op.axes.iter_all_axes() {
        let (w, d, o) = (
            &axis.inputs[weight_slot][..],
            &axis.inputs[data_slot][..],
            &axis.outputs[0][..],
        );
        match (w, d, o) {
            (&[w], &[d], &[]) => summed = Some((w, d)),
            (&[w], &[], &[o]) => produced = Some((w, o)),
            (&[], &[d], &[o]) if d == o => {}
            _ => return None,
        }
    }
    let ((w_summed, d_axis), (_, o_axis)) = (summed?, produced?);
    (d_axis == o_axis).then_some((d_axis, w_summed == 0))
}
