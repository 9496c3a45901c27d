//! Consecutive sparse fully connected layers run as one operator.
//!
//! A multilayer perceptron (LeNet-300-100: three products, each with its bias and ReLU) becomes
//! a chain of [`SparseMatMul`]s, each the only consumer of the one before. At batch 1 each of
//! them costs, beside its kernel, a step of tract's plan (its inputs moved in, its output
//! tensor allocated and handed on, the one before freed): about as much as the kernel of a
//! small layer. [`SparseChain`] runs the whole chain in one step, sample by sample, the vectors
//! between its layers kept in a scratch buffer of the thread (grown once, reused by every run).

use super::SparseMatMul;
use std::cell::RefCell;
use tract_core::internal::*;

/// The layers, in order: each one's output is the next one's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseChain {
    layers: Vec<SparseMatMul>,
}

thread_local! {
    /// Each thread's scratch: two vectors between layers. Grown, never shrunk, so a plan run
    /// again reuses it.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl SparseChain {
    /// The layers, in order.
    pub fn layers(&self) -> &[SparseMatMul] {
        &self.layers
    }

    /// Bytes of weights its layers hold.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(SparseMatMul::bytes).sum()
    }

    /// The output shape for an input of shape `input`, checking that every layer sums the
    /// whole of what it meets (one vector per sample, no plane after the summed axes).
    fn output_shape(&self, input: &[usize]) -> TractResult<TVec<usize>> {
        let mut shape: TVec<usize> = input.into();
        for layer in &self.layers {
            let plane = layer.check_input(&shape)?;
            ensure!(
                plane == 1,
                "a chain of sparse products takes vectors, got shape {shape:?}"
            );
            shape = layer.output_shape(&shape);
        }
        Ok(shape)
    }

    fn eval_f32(&self, input: &Tensor) -> TractResult<Tensor> {
        let out_shape = self.output_shape(input.shape())?;
        // SAFETY: f32 has no invalid bit patterns, and every output is written below (each
        // layer's kernel writes each of its rows).
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        let (first, last) = (&self.layers[0], &self.layers[self.layers.len() - 1]);
        let (k, n) = (first.weights.columns, last.weights.rows);
        let input = input.try_as_plain_ram()?;
        let x = input.as_slice::<f32>()?;
        let widest = self
            .layers
            .iter()
            .map(|l| l.weights.rows)
            .max()
            .unwrap_or(0);
        {
            let mut plain = output.try_as_plain_ram_mut()?;
            let y = plain.as_slice_mut::<f32>()?;
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                if scratch.len() < 2 * widest {
                    scratch.resize(2 * widest, 0.0);
                }
                let (a, b) = scratch.split_at_mut(widest);
                for (x, y) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
                    self.run_sample(x, y, a, b);
                }
            });
        }
        Ok(output)
    }

    /// One sample through every layer: `x` in, `y` out, the vectors between layers in `a` and
    /// `b` in turn.
    fn run_sample(&self, x: &[f32], y: &mut [f32], a: &mut [f32], b: &mut [f32]) {
        let mut from = Slot::Input;
        for (i, layer) in self.layers.iter().enumerate() {
            let (c, r) = (layer.weights.columns, layer.weights.rows);
            let last = i + 1 == self.layers.len();
            let (src, dst): (&[f32], &mut [f32]) = match (from, last) {
                (Slot::Input, true) => (x, &mut *y),
                (Slot::Input, false) => (x, &mut a[..r]),
                (Slot::A, true) => (&a[..c], &mut *y),
                (Slot::A, false) => (&a[..c], &mut b[..r]),
                (Slot::B, true) => (&b[..c], &mut *y),
                (Slot::B, false) => (&b[..c], &mut a[..r]),
            };
            layer.vector(src, dst);
            from = match from {
                Slot::Input | Slot::B => Slot::A,
                Slot::A => Slot::B,
            };
        }
    }
}

/// Where a layer's input is: the chain's input, or one of the two scratch vectors.
#[derive(Clone, Copy)]
enum Slot {
    Input,
    A,
    B,
}

impl Op for SparseChain {
    fn name(&self) -> StaticName {
        "NnzipSparseChain".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = Vec::new();
        for layer in &self.layers {
            info.extend(layer.info()?);
        }
        Ok(info)
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for SparseChain {
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

impl TypedOp for SparseChain {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut fact = inputs[0].clone();
        for layer in &self.layers {
            fact = layer.output_facts(&[&fact])?.remove(0);
        }
        Ok(tvec!(fact))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let mut fact = inputs[0].clone();
        let mut total = TDim::from(0);
        for layer in &self.layers {
            total += layer.cost(&[&fact])?.remove(0).1;
            fact = layer.output_facts(&[&fact])?.remove(0);
        }
        Ok(tvec!((Cost::FMA(f32::datum_type()), total)))
    }

    as_op!();
}

/// The layers of `node` when it is a sparse product or chain.
fn layers_of(node: &TypedNode) -> Option<Vec<SparseMatMul>> {
    if let Some(op) = node.op_as::<SparseMatMul>() {
        Some(vec![op.clone()])
    } else {
        node.op_as::<SparseChain>().map(|c| c.layers.clone())
    }
}

/// Whether the sparse product or chain `node` takes one vector per sample: its first layer
/// sums everything after its leading axes (no plane after them, as a 1×1 convolution has).
fn takes_vectors(model: &TypedModel, node: &TypedNode, first: &SparseMatMul) -> TractResult<bool> {
    let shape = &model.outlet_fact(node.inputs[0])?.shape;
    Ok(shape.len() >= first.axis + first.summed
        && shape[first.axis + first.summed..]
            .iter()
            .all(|d| d.is_one()))
}

/// Fuses every run of sparse products on vectors where each is the only consumer of the one
/// before (and that one not a model output) into a [`SparseChain`]. Each layer keeps its own
/// kernel and epilogue, so the outputs are those of the layers run one by one, bit for bit.
pub(in crate::kernels) fn fuse_chains(model: &mut TypedModel) -> TractResult<()> {
    // Patches add nodes and leave the replaced ones disconnected, so the ids still to visit
    // stay valid; each node is re-read after the patches before it.
    for id in model.eval_order()? {
        let node = &model.nodes[id];
        let Some(op) = node.op_as::<SparseMatMul>() else {
            continue;
        };
        let before = node.inputs[0];
        let producer = &model.nodes[before.node];
        let Some(mut layers) = layers_of(producer) else {
            continue;
        };
        let single = model.single_succ(before.node)?.is_some_and(|s| s.id == id);
        if !single
            || model.outputs.contains(&before)
            || !takes_vectors(model, producer, &layers[0])?
            || !takes_vectors(model, node, op)?
        {
            continue;
        }
        layers.push(op.clone());
        let mut patch = TypedModelPatch::new("nnzip sparse chain");
        let input = patch.tap_model(model, producer.inputs[0])?;
        let wire = patch.wire_node(&node.name, SparseChain { layers }, &[input])?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), wire)?;
        patch.obliterate(id)?;
        patch.obliterate(producer.id)?;
        patch.apply(model)?;
    }
    Ok(())
}
