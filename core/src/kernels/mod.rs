//! nnzip's own convolution kernels, put into a tract model in place of tract's lowering.
//!
//! [`use_nnzip_kernels`] rewrites a decluttered [`TypedModel`] before tract optimises it: each
//! convolution it recognises stops being a `Conv` (which tract's optimiser would lower itself) and
//! becomes the operator chosen here. tract stays as published; these are ordinary operators
//! implementing its public op traits, as tract's own `onnx-opl` crate does for ONNX operators
//! outside tract-core.
//!
//! - [`depthwise`]: depthwise 2-D convolutions of f32, channel-first through a zero-padded copy
//!   of each input plane (on x86_64 the small planes by blocks of channels moved innermost),
//!   channel-last by runs of channels read in place (AVX2+FMA / NEON / plain Rust), with a
//!   following ReLU or ReLU6 applied before the store, instead of tract's zone walk.
//! - [`pointwise`]: 1×1 convolutions (stride 1, group 1) of channel-first f32 read in place,
//!   in tiles of eight (AVX-512) or four (AVX2+FMA / NEON / plain Rust) output channels × a run
//!   of pixels (on small x86_64 planes, output channels in the lanes × a few pixels), with a following ReLU or ReLU6 applied before the store, instead of tract's
//!   packed matrix product.
//! - [`stem`]: an image model's first convolution (up to four input channels, k×k, any stride
//!   and padding, channel-first), from a padded band of input rows by tiles of output channels ×
//!   runs of points, with a following ReLU or ReLU6 applied before the store, instead of im2col
//!   and a matrix product or tract's direct spatial convolution and a separate clamp.
//! - [`sparse`]: fully connected layers and 1×1 convolutions whose constant weights are mostly
//!   zeros (pruned), run from their kept weights only, where a rule from measured densities
//!   says it is faster than tract's dense product; consecutive ones on vectors (a multilayer
//!   perceptron's layers with their ReLUs) fused into one operator ([`sparse::chain`]).
//! - [`sparse_conv`]: k×k convolutions (group 1, channel-first) with a pruned constant kernel,
//!   run from their kept weights only, each adding its shifted input plane, where a rule from
//!   measured densities says it is faster than tract's dense convolution.
//!
//! - [`expand_depthwise`]: a pointwise convolution followed by a depthwise convolution on large
//!   planes, as one operator computing the intermediate a band of rows at a time, never whole.
//!
//! Each choice can be sent back to tract's own path, for checks on a device: [`KernelChoice`]
//! in [`crate::LoadOptions`], or the environment variables `NNZIP_DEPTHWISE`,
//! `NNZIP_POINTWISE`, `NNZIP_STEM_CONV`, `NNZIP_SPARSE`, `NNZIP_SPARSE_CHAINS` and
//! `NNZIP_EXPAND_DEPTHWISE`
//! ([`KernelChoice::from_env`]).

mod cpu;
pub mod depthwise;
pub mod expand_depthwise;
mod lanes;
pub mod pointwise;
pub mod sparse;
pub mod sparse_conv;
pub mod stem;
mod successors;

use tract_core::internal::*;
use tract_core::ops::cnn::Conv;
use tract_core::ops::einsum::EinSum;

/// Which kernel runs depthwise convolutions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DepthwiseKernel {
    /// nnzip's kernels, vectorised for this CPU where they can be: on channel-first data,
    /// blocks of channels on the channel-last kernel where this CPU has a vector one, the
    /// padded-plane kernel elsewhere.
    #[default]
    Padded,
    /// The padded-plane kernel on every channel-first plane (the kernel before blocks of
    /// channels, kept to measure against).
    Planes,
    /// The padded-plane kernel in plain Rust, four lanes (NEON's layout) even where a vector
    /// kernel exists: lets an x86_64 machine run the arithmetic phones run.
    Portable,
    /// tract's own lowering (its zone walk).
    Tract,
}

/// Which kernel runs pointwise (1×1) convolutions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PointwiseKernel {
    /// nnzip's tiles over the unpacked input, vectorised for this CPU where they can be.
    #[default]
    Tiled,
    /// The tiles in plain Rust, four lanes (NEON's layout) even where a vector kernel exists.
    Portable,
    /// tract's own lowering (a packed matrix product).
    Tract,
}

/// Which kernel runs an image model's first convolution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StemConvKernel {
    /// nnzip's tiles over padded bands of input rows, vectorised for this CPU where they can
    /// be; tract's direct spatial convolution by nnzip's rule for narrow rows where they do not
    /// take the convolution.
    #[default]
    Tiled,
    /// The tiles in plain Rust, four lanes (NEON's layout) even where a vector kernel exists.
    Portable,
    /// tract's direct spatial convolution, chosen by nnzip's rule for narrow rows (the path
    /// before nnzip's own tiles).
    Direct,
    /// tract's own choice (im2col and a matrix product for rows under 128 points).
    Tract,
}

/// Which path runs matrix products and k×k convolutions with a constant, pruned weight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SparseKernel {
    /// The sparse kernel where the rule ([`sparse::prefers_sparse`]) says it is faster, tract's
    /// dense product elsewhere.
    #[default]
    Auto,
    /// Every such product on the sparse kernel, whatever its density.
    Sparse,
    /// As `Sparse`, on the plain-Rust kernel even where a vector one exists (the arithmetic
    /// of a CPU without one).
    Portable,
    /// Every product on tract's dense path.
    Dense,
}

/// Whether consecutive sparse fully connected layers run as one operator
/// ([`sparse::chain`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SparseChains {
    /// Fused: one plan step for the chain.
    #[default]
    Fused,
    /// Each layer its own operator (to time layers one by one, or the fusion's gain).
    Separate,
}

/// Whether an expansion (a pointwise convolution) and the depthwise convolution reading its
/// output run as one operator ([`expand_depthwise`]), where its rule says it is faster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExpandDepthwiseFusion {
    /// Fused where the rule says so.
    #[default]
    Fused,
    /// Every such pair fused, whatever the rule (to test the fused operator on any shape, or
    /// time it where the rule leaves the pair apart).
    Always,
    /// Each its own operator (to time them one by one, or the fusion's gain).
    Separate,
}

/// The kernels [`use_nnzip_kernels`] puts in place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelChoice {
    /// Depthwise convolutions.
    pub depthwise: DepthwiseKernel,
    /// Narrow first-layer convolutions.
    pub stem_conv: StemConvKernel,
    /// Pointwise convolutions.
    pub pointwise: PointwiseKernel,
    /// Products and k×k convolutions with pruned constant weights.
    pub sparse: SparseKernel,
    /// Chains of sparse fully connected layers.
    pub sparse_chains: SparseChains,
    /// Expansions followed by depthwise convolutions.
    pub expand_depthwise: ExpandDepthwiseFusion,
}

/// An environment variable holding a value this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value} is not understood; use one of: {expected}")]
pub struct UnknownKernel {
    /// The variable.
    pub variable: &'static str,
    /// Its value.
    pub value: String,
    /// The values it takes.
    pub expected: &'static str,
}

impl KernelChoice {
    /// The defaults, overridden by `NNZIP_DEPTHWISE=padded|planes|portable|tract`,
    /// `NNZIP_POINTWISE=tiled|portable|tract`, `NNZIP_STEM_CONV=tiled|portable|direct|tract` and
    /// `NNZIP_SPARSE=auto|sparse|portable|dense`, `NNZIP_SPARSE_CHAINS=fused|separate` and
    /// `NNZIP_EXPAND_DEPTHWISE=fused|always|separate` where they are set.
    pub fn from_env() -> Result<KernelChoice, UnknownKernel> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`KernelChoice::from_env`], reading the variables through `lookup`.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<KernelChoice, UnknownKernel> {
        let mut choice = KernelChoice::default();
        if let Some(value) = lookup("NNZIP_DEPTHWISE") {
            choice.depthwise = match value.trim() {
                "padded" => DepthwiseKernel::Padded,
                "planes" => DepthwiseKernel::Planes,
                "portable" => DepthwiseKernel::Portable,
                "tract" => DepthwiseKernel::Tract,
                _ => {
                    return Err(UnknownKernel {
                        variable: "NNZIP_DEPTHWISE",
                        value,
                        expected: "padded, planes, portable, tract",
                    });
                }
            };
        }
        if let Some(value) = lookup("NNZIP_POINTWISE") {
            choice.pointwise = match value.trim() {
                "tiled" => PointwiseKernel::Tiled,
                "portable" => PointwiseKernel::Portable,
                "tract" => PointwiseKernel::Tract,
                _ => {
                    return Err(UnknownKernel {
                        variable: "NNZIP_POINTWISE",
                        value,
                        expected: "tiled, portable, tract",
                    });
                }
            };
        }
        if let Some(value) = lookup("NNZIP_STEM_CONV") {
            choice.stem_conv = match value.trim() {
                "tiled" => StemConvKernel::Tiled,
                "portable" => StemConvKernel::Portable,
                "direct" => StemConvKernel::Direct,
                "tract" => StemConvKernel::Tract,
                _ => {
                    return Err(UnknownKernel {
                        variable: "NNZIP_STEM_CONV",
                        value,
                        expected: "tiled, portable, direct, tract",
                    });
                }
            };
        }
        if let Some(value) = lookup("NNZIP_SPARSE") {
            choice.sparse = match value.trim() {
                "auto" => SparseKernel::Auto,
                "sparse" => SparseKernel::Sparse,
                "portable" => SparseKernel::Portable,
                "dense" => SparseKernel::Dense,
                _ => {
                    return Err(UnknownKernel {
                        variable: "NNZIP_SPARSE",
                        value,
                        expected: "auto, sparse, portable, dense",
                    });
                }
            };
        }
        if let Some(value) = lookup("NNZIP_SPARSE_CHAINS") {
            choice.sparse_chains = match value.trim() {
                "fused" => SparseChains::Fused,
                "separate" => SparseChains::Separate,
                _ => {
                    return Err(UnknownKernel {
                        variable: "NNZIP_SPARSE_CHAINS",
                        value,
                        expected: "fused, separate",
                    });
                }
            };
        }
        if let Some(value) = lookup("NNZIP_EXPAND_DEPTHWISE") {
            choice.expand_depthwise = match value.trim() {
                "fused" => ExpandDepthwiseFusion::Fused,
                "always" => ExpandDepthwiseFusion::Always,
                "separate" => ExpandDepthwiseFusion::Separate,
                _ => {
                    return Err(UnknownKernel {
                        variable: "NNZIP_EXPAND_DEPTHWISE",
                        value,
                        expected: "fused, always, separate",
                    });
                }
            };
        }
        Ok(choice)
    }
}

/// Replaces every convolution and matrix product of `model` that one of nnzip's kernels takes (see the module
/// documentation) with that kernel's operator. Call it on a decluttered model, before
/// `optimize()`: decluttering has folded batch normalisations and biases into the `Conv` nodes
/// (and turned pointwise ones into an `EinSum` and a bias `Add`) by then, and optimisation
/// would lower what is left to tract's own kernels.
pub fn use_nnzip_kernels(model: &mut TypedModel, choice: &KernelChoice) -> TractResult<()> {
    use_nnzip_kernels_with(model, choice, &[])
}

/// As [`use_nnzip_kernels`], the sparse kernel taking its compact weights from `decoded` (the
/// kept weights the decoder read of the file's sparse tensors) where a constant is one of them.
pub fn use_nnzip_kernels_with(
    model: &mut TypedModel,
    choice: &KernelChoice,
    decoded: &[crate::format::SparseEntries],
) -> TractResult<()> {
    // Patches add nodes and leave the replaced ones disconnected, so the ids of the nodes still
    // to visit stay valid; each node is re-read after the patches before it.
    for id in model.eval_order()? {
        let node = &model.nodes[id];
        // A pruned product goes to the sparse kernel when its rule takes it (it refuses dense
        // weights), before the pointwise kernel, which would compute every zero.
        let patch = if let Some(einsum) = node.op_as::<EinSum>() {
            match sparse::replacement(model, node, einsum, choice.sparse, decoded)? {
                Some(patch) => Some(patch),
                None => pointwise::replacement(model, node, einsum, choice.pointwise)?,
            }
        } else if let Some(conv) = node.op_as::<Conv>() {
            if let Some(patch) = depthwise::replacement(model, node, conv, choice.depthwise)? {
                Some(patch)
            } else if let Some(patch) =
                sparse_conv::replacement(model, node, conv, choice.sparse, decoded)?
            {
                Some(patch)
            } else {
                stem::replacement(model, node, conv, choice.stem_conv)?
            }
        } else {
            None
        };
        if let Some(patch) = patch {
            patch.apply(model)?;
        }
    }
    if choice.sparse_chains == SparseChains::Fused {
        sparse::chain::fuse_chains(model)?;
    }
    match choice.expand_depthwise {
        ExpandDepthwiseFusion::Fused => expand_depthwise::rewrite::fuse(model, false)?,
        ExpandDepthwiseFusion::Always => expand_depthwise::rewrite::fuse(model, true)?,
        ExpandDepthwiseFusion::Separate => {}
    }
    model.compact()
}

/// Whether nnzip's depthwise kernel takes `node` under `choice` as the graph stands (a
/// channel-first depthwise `Conv` before the declutter): tract's request to move such a
/// convolution's channels last is then moot, as nnzip's kernel runs it where it is.
pub fn nnzip_runs_depthwise(
    model: &TypedModel,
    node: &TypedNode,
    choice: &KernelChoice,
) -> TractResult<bool> {
    match node.op_as::<Conv>() {
        Some(conv) => depthwise::takes(model, node, conv, choice.depthwise),
        None => Ok(false),
    }
}

/// Puts nnzip's pointwise kernel in place of the 1×1 convolutions of `model` as the ONNX reader
/// wired it, before tract's declutter, where `choice` runs that kernel and nothing else could
/// take them on the long way ([`pointwise::before_declutter`]): tract's declutter then has no
/// `Conv` of theirs to turn into an `EinSum` and reshapes, and [`use_nnzip_kernels_with`] after
/// it nothing to fold back. Call it before a declutter without tract's axis-change pass (the
/// loader's where no operator asks for a layout change, [`crate::declutter`]): that pass moves
/// layouts through the operators it knows, which nnzip's are not.
pub fn use_pointwise_kernel_before_declutter(
    model: &mut TypedModel,
    choice: &KernelChoice,
) -> TractResult<()> {
    let mut replaced = false;
    for id in model.eval_order()? {
        let node = &model.nodes[id];
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        if let Some(patch) = pointwise::before_declutter::replacement(model, node, conv, choice)? {
            patch.apply(model)?;
            replaced = true;
        }
    }
    if replaced {
        // The replaced nodes and their kernels' constants go now rather than at the declutter's
        // first compaction.
        model.compact()?;
    }
    Ok(())
}

/// Bytes of weights `op` holds inside itself where it is one of nnzip's operators (its kernel in
/// the layout it runs from, its bias), `None` for any other operator.
pub fn held_weight_bytes(op: &dyn TypedOp) -> Option<usize> {
    let op = op.as_op();
    if let Some(op) = op.downcast_ref::<sparse::SparseMatMul>() {
        Some(op.bytes())
    } else if let Some(op) = op.downcast_ref::<sparse::chain::SparseChain>() {
        Some(op.bytes())
    } else if let Some(op) = op.downcast_ref::<sparse_conv::SparseConv>() {
        Some(op.bytes())
    } else if let Some(op) = op.downcast_ref::<pointwise::PointwiseConv>() {
        Some(op.bytes())
    } else if let Some(op) = op.downcast_ref::<depthwise::PaddedDepthwise>() {
        Some(op.bytes())
    } else if let Some(op) = op.downcast_ref::<expand_depthwise::ExpandDepthwise>() {
        Some(op.bytes())
    } else if let Some(op) = op.downcast_ref::<stem::StemConv>() {
        Some(op.bytes())
    } else {
        op.downcast_ref::<depthwise::ChannelsLastDepthwise>()
            .map(depthwise::ChannelsLastDepthwise::bytes)
    }
}

/// Bytes of the values of `tensors`.
fn tensor_bytes(tensors: &[&Tensor]) -> usize {
    tensors
        .iter()
        .map(|t| t.len() * t.datum_type().size_of())
        .sum()
}

/// A patch putting `op` in place of `node` and of the nodes after it that `op` takes in
/// (`absorbed`, in graph order: a bias `Add`, a clamp's `Max` and `Min`): `op` reads `node`'s
/// first input, and the consumers of the last of them read `op`'s output.
fn replace_absorbing(
    model: &TypedModel,
    node: &TypedNode,
    patch_name: &str,
    op: impl Into<Box<dyn TypedOp>>,
    absorbed: &[usize],
) -> TractResult<TypedModelPatch> {
    let last = absorbed.last().copied().unwrap_or(node.id);
    let mut patch = TypedModelPatch::new(patch_name);
    let input = patch.tap_model(model, node.inputs[0])?;
    let wire = patch.wire_node(&node.name, op, &[input])?[0];
    patch.shunt_outside(model, OutletId::new(last, 0), wire)?;
    patch.obliterate(node.id)?;
    for &id in absorbed {
        patch.obliterate(id)?;
    }
    Ok(patch)
}

/// The constant value of `outlet`, if it has one.
fn constant(model: &TypedModel, outlet: OutletId) -> TractResult<Option<Arc<Tensor>>> {
    Ok(model.outlet_fact(outlet)?.konst.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        let pairs = pairs.to_vec();
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn environment_picks_each_kernel() {
        assert_eq!(
            KernelChoice::from_lookup(lookup(&[])).unwrap(),
            KernelChoice::default()
        );
        let choice = KernelChoice::from_lookup(lookup(&[
            ("NNZIP_DEPTHWISE", "tract"),
            ("NNZIP_STEM_CONV", "tract"),
            ("NNZIP_POINTWISE", "tract"),
        ]))
        .unwrap();
        assert_eq!(choice.depthwise, DepthwiseKernel::Tract);
        assert_eq!(choice.stem_conv, StemConvKernel::Tract);
        assert_eq!(choice.pointwise, PointwiseKernel::Tract);
        let portable =
            KernelChoice::from_lookup(lookup(&[("NNZIP_DEPTHWISE", "portable")])).unwrap();
        assert_eq!(portable.depthwise, DepthwiseKernel::Portable);
        assert_eq!(portable.stem_conv, StemConvKernel::Tiled);
        assert_eq!(portable.pointwise, PointwiseKernel::Tiled);
        let pointwise =
            KernelChoice::from_lookup(lookup(&[("NNZIP_POINTWISE", "portable")])).unwrap();
        assert_eq!(pointwise.pointwise, PointwiseKernel::Portable);
        assert_eq!(pointwise.depthwise, DepthwiseKernel::Padded);
        assert_eq!(portable.sparse, SparseKernel::Auto);
        for (value, kernel) in [
            ("dense", SparseKernel::Dense),
            ("sparse", SparseKernel::Sparse),
            ("portable", SparseKernel::Portable),
            ("auto", SparseKernel::Auto),
        ] {
            let choice = KernelChoice::from_lookup(lookup(&[("NNZIP_SPARSE", value)])).unwrap();
            assert_eq!(choice.sparse, kernel);
        }
        let err = KernelChoice::from_lookup(lookup(&[("NNZIP_SPARSE", "yes")])).unwrap_err();
        assert!(
            err.to_string().contains("auto, sparse, portable, dense"),
            "{err}"
        );
        assert_eq!(portable.sparse_chains, SparseChains::Fused);
        for (value, chains) in [
            ("fused", SparseChains::Fused),
            ("separate", SparseChains::Separate),
        ] {
            let choice =
                KernelChoice::from_lookup(lookup(&[("NNZIP_SPARSE_CHAINS", value)])).unwrap();
            assert_eq!(choice.sparse_chains, chains);
        }
        let err = KernelChoice::from_lookup(lookup(&[("NNZIP_SPARSE_CHAINS", "one")])).unwrap_err();
        assert!(err.to_string().contains("fused, separate"), "{err}");
        assert_eq!(portable.expand_depthwise, ExpandDepthwiseFusion::Fused);
        let separate =
            KernelChoice::from_lookup(lookup(&[("NNZIP_EXPAND_DEPTHWISE", "separate")])).unwrap();
        assert_eq!(separate.expand_depthwise, ExpandDepthwiseFusion::Separate);
        let err =
            KernelChoice::from_lookup(lookup(&[("NNZIP_EXPAND_DEPTHWISE", "on")])).unwrap_err();
        assert!(err.to_string().contains("fused, always, separate"), "{err}");
    }

    #[test]
    fn unknown_values_are_named() {
        let err = KernelChoice::from_lookup(lookup(&[("NNZIP_STEM_CONV", "fast")])).unwrap_err();
        assert_eq!(err.variable, "NNZIP_STEM_CONV");
        assert!(
            err.to_string().contains("tiled, portable, direct, tract"),
            "{err}"
        );
    }
}
