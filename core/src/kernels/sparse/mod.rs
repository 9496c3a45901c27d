//! Matrix products with a pruned constant weight, run from the kept weights only.
//!
//! A fully connected layer (`Gemm`, `MatMul`) or a 1×1 convolution reaches this rewrite as a
//! two-input `EinSum` of the data with a constant matrix (tract's declutter turns 1×1
//! convolutions into one). Where the rule ([`prefers_sparse`]) says so, the `EinSum` becomes a
//! [`SparseMatMul`] holding the matrix in its compact form ([`layout::SparseRows`]: a column and
//! a codebook index per kept weight, in one `u16` for 4-bit codebooks) and the dense constant
//! leaves the graph, so its memory is freed once the model is optimised. The compact form is
//! built from the decoder's entries ([`crate::format::SparseEntries`]: positions and codebook
//! indices as the file stores them) when the constant is the expansion of one of them, and
//! from the dense constant otherwise (a raw tensor, a model read from ONNX). A run of such
//! products on vectors, each the only consumer of the one before, then becomes one
//! [`chain::SparseChain`].

pub mod chain;
#[cfg(test)]
mod column_walk;
pub mod epilogue;
pub mod layout;
mod rows;

use super::{SparseKernel, constant};
use crate::format::SparseEntries;
use epilogue::Epilogue;
use layout::SparseRows;
use rows::Path;
use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;

/// The operator: `y = W x` along consecutive axes of the data, `W` held as [`SparseRows`].
#[derive(Debug, Clone)]
pub struct SparseMatMul {
    weights: Arc<SparseRows>,
    /// The first data axis summed over; with the `summed - 1` axes after it they hold `W`'s
    /// columns (a flattened image, when tract folded a `Flatten` into the product), and the
    /// output has one axis of `W`'s rows in their place.
    axis: usize,
    summed: usize,
    /// Where each output axis comes from.
    output: TVec<OutAxis>,
    /// The bias and ReLU that followed the product in the graph.
    epilogue: Epilogue,
    path: Path,
}

/// An axis of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutAxis {
    /// `W`'s rows.
    Rows,
    /// The data axis of this position, passed through.
    Data(usize),
    /// An axis of 1 (tract's `Gemm` keeps the matrix's row axis of a batch-1 vector).
    One,
}

impl PartialEq for SparseMatMul {
    fn eq(&self, other: &Self) -> bool {
        (self.axis, self.summed, self.path) == (other.axis, other.summed, other.path)
            && self.output == other.output
            && self.epilogue == other.epilogue
            && self.weights == other.weights
    }
}

// The weights hold no NaN (they are the non-zero values of a constant that was checked finite
// by the decoder, or by the caller of `new`), so equality is an equivalence.
impl Eq for SparseMatMul {}

impl SparseMatMul {
    /// The operator summing axes `axis..axis + summed` of its input against `weights`'
    /// columns into the output axes `output` describes, on the vector kernel of this CPU, or
    /// on the plain-Rust one where `portable` says so. Axes of 1 may lie anywhere; the others
    /// must keep their order, `W`'s rows in place of the summed axes.
    pub fn new(
        weights: SparseRows,
        axis: usize,
        summed: usize,
        output: TVec<OutAxis>,
        portable: bool,
    ) -> SparseMatMul {
        SparseMatMul {
            weights: Arc::new(weights),
            axis,
            summed: summed.max(1),
            output,
            epilogue: Epilogue::default(),
            path: if portable {
                Path::Portable
            } else {
                Path::best()
            },
        }
    }

    /// The operator followed by `epilogue` (a bias per row of `W`, a ReLU).
    pub fn with_epilogue(self, epilogue: Epilogue) -> SparseMatMul {
        SparseMatMul { epilogue, ..self }
    }

    /// The name of the kernel it runs (`portable`, `avx2+fma`, `neon`).
    pub fn kernel_name(&self) -> &'static str {
        self.path.name()
    }

    /// The compact weights.
    pub fn weights(&self) -> &SparseRows {
        &self.weights
    }

    /// Bytes of weights it holds: the compact form and the bias it took from the graph.
    pub fn bytes(&self) -> usize {
        self.weights.bytes() + self.epilogue.bias.as_ref().map_or(0, |b| 4 * b.len())
    }

    /// Checks that `shape` has the values this product sums along its summed axes, and
    /// returns the values per column after them (the plane: 1 for a fully connected layer).
    fn check_input(&self, shape: &[usize]) -> TractResult<usize> {
        let end = self.axis + self.summed;
        ensure!(
            shape.len() >= end
                && shape[self.axis..end].iter().product::<usize>() == self.weights.columns,
            "sparse matrix product built for {} values along axes {}..{end}, got input {shape:?}",
            self.weights.columns,
            self.axis
        );
        Ok(shape[end..].iter().product())
    }

    /// `y = W x` then the epilogue, for one vector `x` of `W`'s columns.
    #[inline]
    fn vector(&self, x: &[f32], y: &mut [f32]) {
        rows::dot(&self.weights, self.path, x, y);
        self.epilogue.apply(y, 1);
    }

    fn eval_f32(&self, input: &Tensor) -> TractResult<Tensor> {
        let shape = input.shape();
        let plane = self.check_input(shape)?;
        let out_shape = self.output_shape(shape);
        // SAFETY: f32 has no invalid bit patterns, and every output is written below: `dot`
        // writes each row, `axpy` fills each row's plane before adding to it.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        let input = input.try_as_plain_ram()?;
        let x = input.as_slice::<f32>()?;
        let (k, n) = (self.weights.columns * plane, self.weights.rows * plane);
        if k == 0 || n == 0 {
            return Ok(output);
        }
        {
            let mut plain = output.try_as_plain_ram_mut()?;
            let y = plain.as_slice_mut::<f32>()?;
            for (x, y) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
                if plane == 1 {
                    self.vector(x, y);
                } else {
                    rows::axpy(&self.weights, self.path, plane, x, y);
                    self.epilogue.apply(y, plane);
                }
            }
        }
        Ok(output)
    }
}

impl SparseMatMul {
    /// The output's shape for an input of shape `input`.
    fn output_shape<D: Clone + From<usize>>(&self, input: &[D]) -> TVec<D> {
        self.output
            .iter()
            .map(|a| match a {
                OutAxis::Rows => self.weights.rows.into(),
                OutAxis::Data(d) => input.get(*d).cloned().unwrap_or_else(|| 1.into()),
                OutAxis::One => 1.into(),
            })
            .collect()
    }
}

impl Op for SparseMatMul {
    fn name(&self) -> StaticName {
        "NnzipSparseMatMul".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let w = &self.weights;
        Ok(vec![format!(
            "{}×{} with {} kept weights ({:.1}%), {} bytes, {} kernel{}{}",
            w.rows,
            w.columns,
            w.entries(),
            100.0 * density(w),
            w.bytes(),
            self.path.name(),
            if self.epilogue.bias.is_some() {
                ", bias"
            } else {
                ""
            },
            if self.epilogue.relu { ", ReLU" } else { "" },
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
        ensure!(
            inputs[0].rank() >= self.axis + self.summed
                && self.output.iter().all(|a| match a {
                    OutAxis::Data(d) => *d < inputs[0].rank(),
                    _ => true,
                })
        );
        Ok(tvec!(f32::fact(
            self.output_shape(&inputs[0].shape.to_tvec())
        )))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let others: TDim = inputs[0]
            .shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !(self.axis..self.axis + self.summed).contains(i))
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

/// Whether the sparse path runs a `rows × columns` product with `kept` non-zero weights faster
/// than the dense one, from its density, its size and the values each weight meets per run
/// (`plane`: 1 for a fully connected layer at batch 1, the pixels of a 1×1 convolution).
///
/// Three kinds of layer break even at different densities, so each has its own limit: a fully
/// connected layer the size of LeNet's or EfficientNet-Lite0's classifier (each kept weight
/// costs a gathered load, a dense weight a streamed one); a small layer (up to
/// [`SMALL_LAYER`] weights), faster sparse at higher densities because the dense product's
/// fixed cost weighs more than its work; a 1×1 convolution (one kept weight scales a whole
/// plane, dense ones run on the tiled kernel). Each limit keeps a margin below the break-even
/// density that `core/examples/sparse_rule.rs` measures (the sweep, its command and the
/// break-even points are in `docs/PERFORMANCE.md`).
pub fn prefers_sparse(kept: usize, rows: usize, columns: usize, plane: usize) -> bool {
    kept <= most_kept(rows, columns, plane)
}

/// The most kept weights at which [`prefers_sparse`] takes a `rows × columns` product meeting
/// `plane` values per weight and run.
pub fn most_kept(rows: usize, columns: usize, plane: usize) -> usize {
    let weights = rows.saturating_mul(columns);
    let limit = if plane > 1 {
        PLANE_DENSITY_LIMIT
    } else if weights <= SMALL_LAYER {
        SMALL_GEMV_DENSITY_LIMIT
    } else {
        GEMV_DENSITY_LIMIT
    };
    // `kept as f64 <= limit · weights` for a whole `kept`.
    (limit * weights as f64).floor() as usize
}

/// Densest fully connected layer the sparse path takes by default (batch 1).
pub const GEMV_DENSITY_LIMIT: f64 = 0.10;
/// Most weights of a fully connected layer that [`SMALL_GEMV_DENSITY_LIMIT`] applies to.
pub const SMALL_LAYER: usize = 8192;
/// Densest small fully connected layer the sparse path takes by default.
pub const SMALL_GEMV_DENSITY_LIMIT: f64 = 0.30;
/// Densest 1×1 convolution the sparse path takes by default. The dense side is nnzip's own
/// pointwise kernels, whose by-pixel path makes the small planes (7×7) cheap: those break even
/// lowest, near 8%, against about 15% at 14×14 and 28×28, so one limit below the lowest.
pub const PLANE_DENSITY_LIMIT: f64 = 0.06;

/// The patch replacing `node`, an `EinSum`, with a [`SparseMatMul`], or `None` where it is not a
/// product of f32 data with a constant f32 matrix along one data axis (the output being the
/// data with that axis replaced by the matrix's other one), or where `choice` keeps it dense.
pub(super) fn replacement(
    model: &TypedModel,
    node: &TypedNode,
    op: &EinSum,
    choice: SparseKernel,
    decoded: &[SparseEntries],
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
    if weights.rank() < 2
        || weights.datum_type() != f32::datum_type()
        || data.datum_type != f32::datum_type()
    {
        return Ok(None);
    }
    let output_rank = model.outlet_fact(node.id.into())?.rank();
    let Some(Product {
        axis,
        summed,
        transposed,
        output,
    }) = product_axes(
        op,
        weight_slot,
        &data.shape.to_tvec(),
        weights.shape(),
        output_rank,
    )
    else {
        return Ok(None);
    };
    let rows = weights.shape()[if transposed { weights.rank() - 1 } else { 0 }];
    let columns = weights.len() / rows.max(1);
    let dense = weights.try_as_plain_ram()?;
    let dense = dense.as_slice::<f32>()?;
    let plane = data.shape[axis + summed..]
        .iter()
        .map(|d| d.to_usize().ok())
        .product::<Option<usize>>()
        .unwrap_or(usize::MAX);
    // Decided before the compact form is built, and by default ([`prefers_sparse`]) as soon as
    // the count passes the rule's limit: a dense layer costs part of one scan, not a build.
    let most = match choice {
        SparseKernel::Auto => most_kept(rows, columns, plane),
        _ => usize::MAX,
    };
    let Some(kept) = finite_nonzero_count_at_most(dense, most) else {
        return Ok(None);
    };
    let decoded = decoded.iter().find(|e| expands_to(e, dense, kept));
    let built = match decoded {
        Some(entries) => SparseRows::from_entries(entries, rows, columns, transposed),
        None => SparseRows::from_dense(dense, rows, columns, transposed),
    };
    let Some(sparse) = built else {
        return Ok(None);
    };
    let op = SparseMatMul::new(
        sparse,
        axis,
        summed,
        output,
        choice == SparseKernel::Portable,
    );
    let rows_axis = op
        .output
        .iter()
        .position(|a| *a == OutAxis::Rows)
        .context("the product has no axis of rows")?;
    let (epilogue, taken) = epilogue::following(model, node, rows_axis, op.weights.rows)?;
    let last = taken.last().copied().unwrap_or(node.id);
    let op = op.with_epilogue(epilogue);
    let mut patch = TypedModelPatch::new("nnzip sparse matrix product");
    let input = patch.tap_model(model, node.inputs[data_slot])?;
    let wire = patch.wire_node(&node.name, op, &[input])?[0];
    patch.shunt_outside(model, OutletId::new(last, 0), wire)?;
    patch.obliterate(node.id)?;
    for id in taken {
        patch.obliterate(id)?;
    }
    Ok(Some(patch))
}

/// Whether `dense`, holding `nonzero` non-zero values, is exactly the tensor `entries` expand
/// to: as many elements and non-zero values, each entry's value at its position. Compared by
/// content, not by identity: tract's declutter may reshape a constant (a 1×1 kernel loses its
/// unit axes) into a new tensor.
pub(in crate::kernels) fn expands_to(
    entries: &SparseEntries,
    dense: &[f32],
    nonzero: usize,
) -> bool {
    entries.element_count() == dense.len()
        && nonzero == entries.positions.len()
        && entries.positions.iter().enumerate().all(|(j, &p)| {
            dense
                .get(p as usize)
                .is_some_and(|v| v.to_bits() == entries.value(j).to_bits())
        })
}

/// How many of `dense`'s values are not zero, or `None` if one is not finite (such a layer
/// stays on the dense path).
#[cfg(test)]
pub(in crate::kernels) fn finite_nonzero_count(dense: &[f32]) -> Option<usize> {
    finite_nonzero_count_at_most(dense, usize::MAX)
}

/// Values [`finite_nonzero_count_at_most`] counts between two looks at its running count.
const COUNT_STRETCH: usize = 1024;

/// How many of `dense`'s values are not zero, where every value is finite and at most `most` are
/// not zero; `None` otherwise (such a layer stays on the dense path). One pass for both, in
/// blocks of 16 without a branch per value so that it vectorises, and it stops once more than
/// `most` values are counted: the rule's count runs over the weights of every product at load,
/// and a dense layer passes the rule's limit after a fraction of its weights.
pub(in crate::kernels) fn finite_nonzero_count_at_most(
    dense: &[f32],
    most: usize,
) -> Option<usize> {
    let mut nonzero = 0usize;
    for stretch in dense.chunks(COUNT_STRETCH) {
        let (blocks, tail) = stretch.as_chunks::<16>();
        let mut finite = true;
        for block in blocks {
            nonzero += block.iter().map(|v| u32::from(*v != 0.0)).sum::<u32>() as usize;
            finite &= block.iter().fold(true, |all, v| all & v.is_finite());
        }
        nonzero += tail.iter().filter(|v| **v != 0.0).count();
        finite &= tail.iter().all(|v| v.is_finite());
        if !finite || nonzero > most {
            return None;
        }
    }
    Some(nonzero)
}

/// Where an `EinSum` sums its data against a constant: the data axes summed.
struct Product {
    /// The first data axis of the summed run.
    axis: usize,
    /// How many consecutive data axes the run spans (axes of 1 among them included).
    summed: usize,
    /// Whether the constant holds its summed axes first and its output axis last (`MatMul`'s
    /// `[k, n]`) rather than output axis first (`Gemm` with `transB`, a 1×1 kernel).
    transposed: bool,
    output: TVec<OutAxis>,
}

/// For an `EinSum` of a constant (input `weight_slot`) with data of shape `data`: the run of
/// data axes it sums, when the constant's axes are one output axis and then (or after) the
/// summed ones in the data's order; axes of 1 that only the data has (summed away) or only the
/// output has are allowed anywhere; every other data axis passes to the output in order, the
/// constant's output axis in place of the summed run.
fn product_axes(
    op: &EinSum,
    weight_slot: usize,
    data: &[TDim],
    weight: &[usize],
    output_rank: usize,
) -> Option<Product> {
    let data_slot = 1 - weight_slot;
    if op.axes.input_count() != 2 || op.axes.output_count() != 1 || weight.len() < 2 {
        return None;
    }
    let is_one = |d: usize| data.get(d).is_some_and(|x| x.is_one());
    let mut sums: Vec<(usize, usize)> = Vec::new();
    let mut produced = None;
    let mut output = tvec![OutAxis::One; output_rank];
    let mut passing: Vec<(usize, usize)> = Vec::new();
    for axis in op.axes.iter_all_axes() {
        let (w, d, o) = (
            &axis.inputs[weight_slot][..],
            &axis.inputs[data_slot][..],
            &axis.outputs[0][..],
        );
        match (w, d, o) {
            (&[w], &[d], &[]) => sums.push((w, d)),
            (&[w], &[], &[o]) => produced = Some((w, o)),
            (&[], &[d], &[o]) => passing.push((d, o)),
            (&[], &[d], &[]) if is_one(d) => {}
            (&[], &[], &[_]) => {}
            _ => return None,
        }
    }
    let (w_out, o_rows) = produced?;
    *output.get_mut(o_rows)? = OutAxis::Rows;
    sums.sort_by_key(|&(_, d)| d);
    let (w_first, first) = *sums.first()?;
    let last = sums.last()?.1;
    let summed = weight.len() - 1;
    // In the constant: consecutive, in the data's order; in the data: in a run where only
    // axes of 1 come between them.
    let in_order = sums.iter().enumerate().all(|(i, &(w, _))| w == w_first + i);
    let transposed = match w_out {
        0 if w_first == 1 => false,
        w if w == summed && w_first == 0 => true,
        _ => return None,
    };
    for &(d, o) in &passing {
        if (first..=last).contains(&d) {
            return None;
        }
        *output.get_mut(o)? = OutAxis::Data(d);
    }
    // The data axes before the run come out before the rows, in order, those after it after.
    let order: Vec<usize> = output
        .iter()
        .filter_map(|a| match a {
            OutAxis::Rows => Some(first),
            OutAxis::Data(d) => Some(*d),
            OutAxis::One => None,
        })
        .collect();
    let sorted = order.windows(2).all(|w| w[0] < w[1]);
    (sums.len() == summed && in_order && sorted).then_some(Product {
        axis: first,
        summed: last + 1 - first,
        transposed,
        output,
    })
}

#[cfg(test)]
mod tests {
    use super::{finite_nonzero_count, finite_nonzero_count_at_most, most_kept, prefers_sparse};

    /// The count of blocks and tail alike, and any non-finite value anywhere refuses.
    #[test]
    fn finite_nonzero_count_counts_blocks_and_tail_and_refuses_non_finite() {
        for len in [0usize, 5, 16, 37] {
            let dense: Vec<f32> = (0..len)
                .map(|i| if i % 3 == 0 { 0.0 } else { i as f32 - 7.0 })
                .collect();
            let expected = dense.iter().filter(|v| **v != 0.0).count();
            assert_eq!(finite_nonzero_count(&dense), Some(expected), "{len}");
            for at in [0, len / 2, len.saturating_sub(1)]
                .into_iter()
                .filter(|&a| a < len)
            {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut d = dense.clone();
                    d[at] = bad;
                    assert_eq!(finite_nonzero_count(&d), None, "{len} {at}");
                }
            }
        }
        assert_eq!(finite_nonzero_count(&[-0.0; 20]), Some(0));
    }

    /// The bounded count gives the whole count up to its bound and refuses beyond it, wherever
    /// in the tensor the bound is passed (inside a stretch, at its end, in the tail).
    #[test]
    fn the_bounded_count_stops_past_its_bound_only() {
        for len in [0usize, 15, 16, 1000, 1024, 1025, 3000] {
            let dense: Vec<f32> = (0..len)
                .map(|i| if i % 4 == 0 { 1.5 } else { 0.0 })
                .collect();
            let count = dense.iter().filter(|v| **v != 0.0).count();
            assert_eq!(finite_nonzero_count_at_most(&dense, count), Some(count));
            assert_eq!(
                finite_nonzero_count_at_most(&dense, usize::MAX),
                Some(count)
            );
            if count > 0 {
                assert_eq!(
                    finite_nonzero_count_at_most(&dense, count - 1),
                    None,
                    "{len}"
                );
                assert_eq!(finite_nonzero_count_at_most(&dense, 0), None, "{len}");
            }
        }
        // The rule's bound is its limit: a layer at it is taken, one weight more is not.
        for (rows, columns, plane) in [(100, 1280, 1), (10, 50, 1), (96, 32, 12544)] {
            let most = most_kept(rows, columns, plane);
            assert!(prefers_sparse(most, rows, columns, plane));
            assert!(!prefers_sparse(most + 1, rows, columns, plane));
        }
    }
}
