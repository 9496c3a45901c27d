//! Folds a per-channel multiplication or addition by a constant that follows a convolution into
//! the convolution's weights and bias, at load, before tract's declutter.
//!
//! An inference batch normalisation is such an affine map (the ONNX reader turns it into a `Mul`
//! by its slope and an `Add` of its intercept, `onnx::reader::ops::normalization`). Exporters
//! usually fold it into the convolution before they write the model, but not all do (a model
//! exported without constant folding, or built as `nnzip init mobile-tiny` builds one). tract's
//! declutter folds one only into a group-1 `Conv` it still sees as such, so a depthwise
//! convolution, or a 1×1 one nnzip's pointwise kernel takes before the declutter
//! (`kernels::use_pointwise_kernel_before_declutter`), would keep a separate pass over its
//! output for every such operator at every run. Folding here serves every kind of convolution
//! alike and computes the new weights once, in place, instead of wiring the products for tract's
//! constant propagation to evaluate.
//!
//! A fold is exact up to one float rounding per weight (`w·s` instead of `(w ∗ x)·s`), as any
//! exporter's or runtime's batch-norm folding is.

use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::cnn::{Conv, KernelFormat};
use tract_core::ops::dummy::Dummy;
use tract_core::ops::konst::Const;
use tract_core::ops::math::{Add, Mul};

/// Folds every per-channel `Mul` or `Add` by a constant that is the only reader of a float
/// convolution's output into that convolution, repeatedly (a batch norm's `Mul` then its `Add`).
/// Says how many it folded. Folded nodes are left unconnected; tract's next compaction drops them.
pub fn fold_channel_affine(model: &mut TypedModel) -> TractResult<usize> {
    let mut folded = 0;
    for id in model.eval_order()? {
        if model.nodes[id].op_as::<Conv>().is_none() {
            continue;
        }
        while fold_successor(model, id)? {
            folded += 1;
        }
    }
    Ok(folded)
}

/// A per-channel arithmetic a convolution can take in.
enum Affine {
    Scale,
    Shift,
}

/// What a fold needs: the arithmetic node, its constant's values (one per output channel), the
/// convolution's kernel and bias constants.
struct Fold {
    arithmetic: usize,
    affine: Affine,
    values: Vec<f32>,
    kernel: OutletId,
    bias: OutletId,
}

/// Folds the reader of convolution `conv`'s output into it where [`foldable`] says so.
fn fold_successor(model: &mut TypedModel, conv: usize) -> TractResult<bool> {
    let Some(fold) = foldable(model, conv)? else {
        return Ok(false);
    };
    let channels = fold.values.len();
    if let Affine::Scale = fold.affine {
        let per_channel = take_constant(model, fold.kernel)?.len() / channels;
        update_constant(model, fold.kernel, |kernel| {
            for (o, row) in kernel.chunks_exact_mut(per_channel).enumerate() {
                row.iter_mut().for_each(|w| *w *= fold.values[o]);
            }
        })?;
    }
    let bias = bias_per_channel(model, fold.bias, channels)?;
    let bias: Vec<f32> = match fold.affine {
        Affine::Scale => bias.iter().zip(&fold.values).map(|(b, s)| b * s).collect(),
        Affine::Shift => bias.iter().zip(&fold.values).map(|(b, a)| b + a).collect(),
    };
    set_constant(model, fold.bias, tensor1(&bias))?;
    bypass(model, conv, fold.arithmetic)?;
    Ok(true)
}

/// The fold of `conv`'s only reader when it is a `Mul` or `Add` of its output by a constant of
/// shape `[1, C, 1, …]` (C the output channels, the output's rank), the convolution is a float
/// one with an `OIHW`-ordered constant kernel and a constant bias (a scalar or `[C]`), each read
/// by it alone.
fn foldable(model: &TypedModel, conv_id: usize) -> TractResult<Option<Fold>> {
    let node = &model.nodes[conv_id];
    let Some(conv) = node.op_as::<Conv>() else {
        return Ok(None);
    };
    let output = OutletId::new(conv_id, 0);
    let [reader] = node.outputs[0].successors[..] else {
        return Ok(None);
    };
    let [_, kernel, bias] = node.inputs[..] else {
        return Ok(None);
    };
    let fact = model.outlet_fact(output)?;
    if conv.q_params.is_some()
        || conv.kernel_fmt != KernelFormat::OIHW
        || fact.datum_type != f32::datum_type()
        || !is_private_f32_constant(model, kernel)
        || !is_private_f32_constant(model, bias)
    {
        return Ok(None);
    }
    let arithmetic = &model.nodes[reader.node];
    let Some(bin) = arithmetic.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    let affine = if bin.0.is::<Mul>() {
        Affine::Scale
    } else if bin.0.is::<Add>() {
        Affine::Shift
    } else {
        return Ok(None);
    };
    let operand = arithmetic.inputs[1 - reader.slot];
    let Some(values) = model.outlet_fact(operand)?.konst.clone() else {
        return Ok(None);
    };
    let channels = conv.output_channels();
    let mut per_channel_shape = tvec![1; fact.rank()];
    if fact.rank() < 2 {
        return Ok(None);
    }
    per_channel_shape[1] = channels;
    if values.datum_type() != f32::datum_type() || values.shape() != &*per_channel_shape {
        return Ok(None);
    }
    let kernel_len = model.outlet_fact(kernel)?.shape.volume().to_usize()?;
    if kernel_len % channels != 0 || model.outlet_fact(kernel)?.shape[0] != channels.to_dim() {
        return Ok(None);
    }
    Ok(Some(Fold {
        arithmetic: reader.node,
        affine,
        values: values.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
        kernel,
        bias,
    }))
}

/// Whether `outlet` is a plain f32 constant only one node reads.
fn is_private_f32_constant(model: &TypedModel, outlet: OutletId) -> bool {
    let node = &model.nodes[outlet.node];
    node.op_as::<Const>().is_some_and(|k| {
        k.exotic_fact().is_none()
            && k.val().datum_type() == f32::datum_type()
            && k.val().has_plain_ram_storage()
    }) && node.outputs[outlet.slot].successors.len() == 1
}

/// The values of constant `outlet` (for their count).
fn take_constant(model: &TypedModel, outlet: OutletId) -> TractResult<Arc<Tensor>> {
    let konst = model.nodes[outlet.node]
        .op_as::<Const>()
        .context("a constant")?;
    Ok(konst.val().clone())
}

/// The convolution's bias as one value per output channel (a scalar bias is broadcast).
fn bias_per_channel(model: &TypedModel, bias: OutletId, channels: usize) -> TractResult<Vec<f32>> {
    let tensor = take_constant(model, bias)?;
    let values = tensor.try_as_plain_ram()?.as_slice::<f32>()?;
    match values.len() {
        1 => Ok(vec![values[0]; channels]),
        n if n == channels => Ok(values.to_vec()),
        n => bail!("a bias of {n} values for {channels} channels"),
    }
}

/// Changes constant `outlet`'s values in place with `change`, copying them only if another
/// holder than the constant and its fact shares them.
fn update_constant(
    model: &mut TypedModel,
    outlet: OutletId,
    change: impl FnOnce(&mut [f32]),
) -> TractResult<()> {
    let tensor = take_constant(model, outlet)?;
    // Drop the op's and the fact's references, so that the tensor can be taken, not copied.
    let holder = &mut model.nodes[outlet.node];
    holder.op = Box::new(Dummy);
    holder.outputs[outlet.slot].fact.konst = None;
    let mut tensor = Arc::try_unwrap(tensor).unwrap_or_else(|shared| (*shared).clone());
    change(tensor.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?);
    set_constant(model, outlet, tensor)
}

/// Makes constant `outlet` hold `tensor`.
fn set_constant(model: &mut TypedModel, outlet: OutletId, tensor: Tensor) -> TractResult<()> {
    let konst = Const::new(tensor.into_arc_tensor())?;
    let holder = &mut model.nodes[outlet.node];
    holder.outputs[outlet.slot].fact = konst.output_facts(&[])?.remove(0);
    holder.op = Box::new(konst);
    Ok(())
}

/// Makes the readers of `arithmetic`'s output read convolution `conv`'s instead (a model output
/// too, with its label), and leaves `arithmetic` unconnected.
fn bypass(model: &mut TypedModel, conv: usize, arithmetic: usize) -> TractResult<()> {
    let readers = std::mem::take(&mut model.nodes[arithmetic].outputs[0].successors);
    let conv_output = OutletId::new(conv, 0);
    let arithmetic_output = OutletId::new(arithmetic, 0);
    if let Some(position) = model.outputs.iter().position(|&o| o == arithmetic_output) {
        model.outputs[position] = conv_output;
        if let Some(label) = model.outlet_label(arithmetic_output).map(String::from) {
            model.set_outlet_label(conv_output, label)?;
        }
    }
    for reader in &readers {
        model.nodes[reader.node].inputs[reader.slot] = conv_output;
    }
    model.nodes[conv].outputs[0].successors = readers;
    let inputs = std::mem::take(&mut model.nodes[arithmetic].inputs);
    for input in inputs {
        let successors = &mut model.nodes[input.node].outputs[input.slot].successors;
        successors.retain(|s| s.node != arithmetic);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_core::ops::cnn::{PaddingSpec, PoolSpec};
    use tract_core::ops::math::{add, mul};
    use tract_core::ops::nn::DataFormat;

    /// Values that are not all alike, from `seed`.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        (0..n as u64)
            .map(|i| ((i * 2_654_435_761 + seed * 40_503) % 997) as f32 / 498.5 - 1.0)
            .collect()
    }

    /// `x [1, 8, 6, 6]` → 3×3 convolution (`group` 1 or 8, to 8 channels, bias `bias_len`
    /// values) → `Mul` by a per-channel slope → `Add` of a per-channel intercept, as the reader
    /// wires an inference batch norm; `extra_reader` also reads the convolution's output.
    fn conv_then_batch_norm(group: usize, bias_len: usize, extra_reader: bool) -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 8, 6, 6])).unwrap();
        let kernel_shape = [8, 8 / group, 3, 3];
        let kernel = Tensor::from_shape(&kernel_shape, &values(8 * 8 / group * 9, 1)).unwrap();
        let kernel = model.add_const("kernel", kernel).unwrap();
        let bias = if bias_len == 1 {
            tensor0(0.25f32)
        } else {
            tensor1(&values(8, 2))
        };
        let bias = model.add_const("bias", bias).unwrap();
        let conv = Conv {
            pool_spec: PoolSpec::new(
                DataFormat::NCHW,
                tvec![3, 3],
                PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
                None,
                None,
                8,
                8,
            ),
            kernel_fmt: KernelFormat::OIHW,
            group,
            q_params: None,
        };
        let y = model.wire_node("conv", conv, &[x, kernel, bias]).unwrap()[0];
        let per_channel = |seed| Tensor::from_shape(&[1, 8, 1, 1], &values(8, seed)).unwrap();
        let slope = model.add_const("slope", per_channel(3)).unwrap();
        let intercept = model.add_const("intercept", per_channel(4)).unwrap();
        let scaled = model.wire_node("bn.mul", mul(), &[slope, y]).unwrap()[0];
        let shifted = model
            .wire_node("bn.add", add(), &[scaled, intercept])
            .unwrap()[0];
        let mut outputs = vec![shifted];
        if extra_reader {
            outputs.push(model.wire_node("other", add(), &[y, y]).unwrap()[0]);
        }
        model.select_output_outlets(&outputs).unwrap();
        model
    }

    fn run(model: TypedModel) -> Vec<Vec<f32>> {
        let input = Tensor::from_shape(&[1, 8, 6, 6], &values(288, 5)).unwrap();
        let plan = model.into_runnable().unwrap();
        let outputs = plan.run(tvec![input.into_tvalue()]).unwrap();
        outputs
            .iter()
            .map(|t| {
                t.try_as_plain_ram()
                    .unwrap()
                    .as_slice::<f32>()
                    .unwrap()
                    .to_vec()
            })
            .collect()
    }

    fn arithmetic_nodes(model: &TypedModel) -> usize {
        let order = model.eval_order().unwrap();
        order
            .iter()
            .filter(|&&id| model.nodes[id].op_is::<TypedBinOp>())
            .count()
    }

    /// The folded model computes what the unfolded one does, within a few float roundings per
    /// output (each output sums 72 or 9 products of values below 1 in magnitude).
    fn assert_folds_to_same_outputs(group: usize, bias_len: usize) {
        let reference = run(conv_then_batch_norm(group, bias_len, false));
        let mut model = conv_then_batch_norm(group, bias_len, false);
        assert_eq!(fold_channel_affine(&mut model).unwrap(), 2);
        assert_eq!(arithmetic_nodes(&model), 0, "the Mul and the Add are gone");
        let folded = run(model);
        for (a, b) in reference[0].iter().zip(&folded[0]) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn folds_a_batch_norm_into_a_full_convolution() {
        assert_folds_to_same_outputs(1, 8);
    }

    #[test]
    fn folds_a_batch_norm_into_a_depthwise_convolution_with_a_scalar_bias() {
        assert_folds_to_same_outputs(8, 1);
    }

    #[test]
    fn leaves_a_convolution_another_node_reads() {
        let mut model = conv_then_batch_norm(1, 8, true);
        assert_eq!(fold_channel_affine(&mut model).unwrap(), 0);
        assert_eq!(arithmetic_nodes(&model), 3);
    }
}
