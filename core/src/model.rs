//! A `.nnz` file turned into a runnable model: verify, decode every tensor straight into the
//! buffer tract will own, put it into the graph as a constant, optimise, run.

use crate::classify::{OutputKind, Prediction, top_k_of};
use crate::error::{NnzError, Result};
use crate::format::decode::{read_header_unverified, verify_checksum};
use crate::format::{DecodeLimits, NnzReader, SparseEntries};
use crate::graph::parse_model_proto;
use crate::kernels::{KernelChoice, use_nnzip_kernels_with, use_pointwise_kernel_before_declutter};
use crate::metadata::Metadata;
use crate::preprocess;
use crate::run_states::RunStates;
use std::path::Path;
use std::sync::Arc;
use tract_core::prelude::*;

/// How [`Model::from_bytes_with`] prepares a model.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Memory guards for decoding.
    pub limits: DecodeLimits,
    /// Fixes a dynamic batch dimension of the input (the first one, `-1` in the metadata) to
    /// this size, so that tract plans for concrete shapes: e.g. `Some(1)` where only single
    /// images are classified, as on a phone (faster than a plan for a dynamic batch:
    /// docs/PERFORMANCE.md). [`Model::run`] then accepts only inputs of that batch size. `None`
    /// (the default) keeps the batch dynamic.
    pub batch: Option<usize>,
    /// Which convolution kernels run: nnzip's own or tract's (see [`crate::kernels`]). `None`
    /// (the default) takes nnzip's, except where the environment variables `NNZIP_DEPTHWISE`
    /// or `NNZIP_STEM_CONV` say otherwise ([`KernelChoice::from_env`]).
    pub kernels: Option<KernelChoice>,
    /// Most threads decoding the weights: `None` (the default) one per CPU this process may
    /// run on, at most four; `Some(1)` the calling thread only (as does `Some(0)`). Files with
    /// little to decode are decoded on the calling thread whatever this says: starting threads
    /// would cost more than it saves.
    pub decode_threads: Option<usize>,
}

/// A decoded, optimised, runnable model. `Send + Sync`: one instance serves many threads, each
/// call runs with its own state.
#[derive(Debug)]
pub struct Model {
    metadata: Metadata,
    file_bytes: u64,
    /// The optimised plan and the run states kept between runs.
    runs: RunStates,
    /// The batch size the plan was fixed to at load, if it was.
    fixed_batch: Option<usize>,
    /// What the first output's values are, read from the graph at load.
    output_kind: OutputKind,
}

impl Model {
    /// Verifies and decodes a `.nnz` file held in memory and builds an optimised plan.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        Self::from_bytes_with_limits(bytes, DecodeLimits::default())
    }

    /// As [`Model::from_bytes`], with explicit memory guards.
    pub fn from_bytes_with_limits(bytes: &[u8], limits: DecodeLimits) -> Result<Model> {
        Self::from_bytes_with(
            bytes,
            &LoadOptions {
                limits,
                ..LoadOptions::default()
            },
        )
    }

    /// As [`Model::from_bytes`], with explicit [`LoadOptions`].
    pub fn from_bytes_with(bytes: &[u8], options: &LoadOptions) -> Result<Model> {
        let Loaded {
            metadata,
            model,
            fixed_batch,
            kept,
        } = read_graph_and_weights(bytes, options)?;
        if let Some(recipe) = &metadata.preprocessing {
            preprocess::check_recipe(recipe, &metadata.input.shape)?;
        }
        let kernels = match options.kernels {
            Some(kernels) => kernels,
            None => KernelChoice::from_env().map_err(|e| NnzError::InvalidInput(e.to_string()))?,
        };
        let output_kind = crate::output_kind::output_kind(&model);
        let plan = guard_panics("optimise", || optimise(model, &kernels, &kept))?;
        Ok(Model {
            metadata,
            file_bytes: bytes.len() as u64,
            runs: RunStates::new(plan),
            fixed_batch,
            output_kind,
        })
    }

    /// Reads and loads a `.nnz` file.
    pub fn open(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| NnzError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// The file's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Whether [`Model::run`]'s output is logits, probabilities or log-probabilities (from the
    /// graph: a final Softmax or LogSoftmax over each sample); [`Model::classify`] turns each
    /// into probabilities accordingly.
    pub fn output_kind(&self) -> OutputKind {
        self.output_kind
    }

    /// Size of the `.nnz` file in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// The optimised tract plan this model runs: for profiling and inspection (which operator
    /// runs each node, their facts). Running it directly skips the input checks of [`Model::run`].
    pub fn plan(&self) -> &Arc<TypedSimplePlan> {
        self.runs.plan()
    }

    /// Bytes of the weights the plan holds in memory: its constants, the matrices tract packed
    /// into its matrix products, and the weights nnzip's operators hold inside themselves
    /// ([`crate::kernels::held_weight_bytes`]: sparse products and convolutions in their compact
    /// form, pointwise and depthwise kernels in their laid-out form, with their biases).
    pub fn weight_bytes(&self) -> u64 {
        self.runs
            .plan()
            .model()
            .nodes()
            .iter()
            .map(|node| weight_bytes_of(node) as u64)
            .sum()
    }

    /// The kernel of each matrix product running on nnzip's sparse kernel
    /// ([`crate::kernels::sparse`]): `avx2+fma`, `neon` or `portable`, in plan order (the
    /// layers of a fused chain each in their place).
    pub fn sparse_kernels(&self) -> Vec<&'static str> {
        use crate::kernels::sparse::SparseMatMul;
        use crate::kernels::sparse::chain::SparseChain;
        self.runs
            .plan()
            .model()
            .nodes()
            .iter()
            .flat_map(
                |n| match (n.op_as::<SparseMatMul>(), n.op_as::<SparseChain>()) {
                    (Some(op), _) => vec![op.kernel_name()],
                    (None, Some(chain)) => chain
                        .layers()
                        .iter()
                        .map(SparseMatMul::kernel_name)
                        .collect(),
                    (None, None) => Vec::new(),
                },
            )
            .collect()
    }

    /// How many sparse products run fused in chains ([`crate::kernels::sparse::chain`]), one
    /// count per chain, in plan order.
    pub fn sparse_chains(&self) -> Vec<usize> {
        use crate::kernels::sparse::chain::SparseChain;
        self.runs
            .plan()
            .model()
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<SparseChain>())
            .map(|c| c.layers().len())
            .collect()
    }

    /// The kernel of each k×k convolution running on nnzip's sparse convolution
    /// ([`crate::kernels::sparse_conv`]): `avx2+fma`, `neon` or `portable`, in plan order.
    pub fn sparse_conv_kernels(&self) -> Vec<&'static str> {
        use crate::kernels::sparse_conv::SparseConv;
        self.runs
            .plan()
            .model()
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<SparseConv>())
            .map(SparseConv::kernel_name)
            .collect()
    }

    /// Runs the model on one input tensor and returns its first output.
    pub fn run(&self, input: Tensor) -> Result<Tensor> {
        let outputs = self.run_tvalues(tvec![input.into_tvalue()])?;
        outputs
            .into_iter()
            .next()
            .map(TValue::into_tensor)
            .ok_or_else(|| NnzError::model("the model produced no output"))
    }

    /// Runs the model on all its inputs, in the graph's input order (the ONNX graph's inputs
    /// that are not weights), and returns every output in the graph's output order.
    pub fn run_all(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let inputs = inputs.into_iter().map(Tensor::into_tvalue).collect();
        let outputs = self.run_tvalues(inputs)?;
        Ok(outputs.into_iter().map(TValue::into_tensor).collect())
    }

    /// Checks the inputs against the plan and runs it with a kept run state
    /// ([`RunStates`]); a panic in tract becomes an error.
    fn run_tvalues(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>> {
        if let Some(batch) = self.fixed_batch
            && let Some(input) = inputs.first()
            && input.shape().first() != Some(&batch)
        {
            return Err(NnzError::model(format!(
                "this model was loaded for batch {batch} (LoadOptions::batch), the input has shape {:?}; load it without a fixed batch to run other batch sizes",
                input.shape()
            )));
        }
        let expected = self
            .runs
            .plan()
            .model()
            .input_outlets()
            .map_or(0, |o| o.len());
        if inputs.len() != expected {
            return Err(NnzError::model(format!(
                "the model takes {expected} inputs, {} were given",
                inputs.len()
            )));
        }
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.runs.run(inputs)));
        run.map_err(|_| {
            NnzError::model(
                "inference failed (internal panic in tract): wrong input shape for this model?",
            )
        })?
        .map_err(|e| NnzError::model(format!("inference failed: {e:#}")))
    }

    /// Decodes a JPEG or PNG, preprocesses it as the file says, runs, and returns the top `k`
    /// classes, most probable first, with the probabilities the model means (see
    /// [`Model::output_kind`]).
    pub fn classify(&self, image_bytes: &[u8], top_k: usize) -> Result<Vec<Prediction>> {
        if let Some(recipe) = &self.metadata.preprocessing {
            let (w, h) = preprocess::image_dimensions(image_bytes)?;
            preprocess::check_image_fits(recipe, w, h, &self.metadata.input.shape)?;
        }
        let img = preprocess::decode_image(image_bytes)?;
        self.classify_image(&img, top_k)
    }

    /// Classifies raw RGBA8 pixels (`width × height × 4` bytes), e.g. a camera frame or an
    /// Android `Bitmap`.
    pub fn classify_rgba(
        &self,
        width: u32,
        height: u32,
        rgba: &[u8],
        top_k: usize,
    ) -> Result<Vec<Prediction>> {
        let img = preprocess::rgba_image(width, height, rgba)?;
        self.classify_image(&img, top_k)
    }

    /// Classifies a decoded image.
    pub fn classify_image(&self, img: &image::DynamicImage, k: usize) -> Result<Vec<Prediction>> {
        let pre = self.metadata.preprocessing.as_ref().ok_or_else(|| {
            NnzError::Image("this model file has no image preprocessing in its metadata; repack it with `nnzip pack --preprocess …`".into())
        })?;
        let input = preprocess::image_to_tensor(img, pre)?;
        let expected = &self.metadata.input.shape;
        if expected.len() == input.rank()
            && expected
                .iter()
                .zip(input.shape())
                .any(|(&e, &got)| e > 0 && e as usize != got)
        {
            return Err(NnzError::Image(format!(
                "preprocessing gives shape {:?}, the model takes {:?}: the file's metadata is inconsistent",
                input.shape(),
                expected
            )));
        }
        let output = self.run(input)?;
        let output = output
            .cast_to::<f32>()
            .map_err(|e| NnzError::model(e.to_string()))?;
        let view = output.try_as_plain_ram().map_err(NnzError::model)?;
        let values = view.as_slice::<f32>().map_err(NnzError::model)?;
        Ok(top_k_of(self.output_kind, values, k, &self.metadata.labels))
    }
}

/// The bytes of weights `node` holds: a constant's values (packed or plain), the packed constant
/// operands of tract's optimised matrix product, the weights inside nnzip's operators.
fn weight_bytes_of(node: &TypedNode) -> usize {
    use tract_core::internal::DimLike;
    use tract_core::ops::konst::Const;
    use tract_core::ops::matmul::optimized::{MatMulOperand, OptMatMul, ProtoFusedSpec};
    use tract_core::tract_linalg::mmm::{MMMInputValue, PackedMatrixStorage};
    let packed = |v: &dyn MMMInputValue| v.exotic_fact().mem_size().to_usize().unwrap_or(0);
    if let Some(held) = crate::kernels::held_weight_bytes(node.op.as_ref()) {
        held
    } else if let Some(konst) = node.op_as::<Const>() {
        let t = konst.val();
        match t.storage_as::<PackedMatrixStorage>() {
            Some(p) => p.values().iter().map(|v| packed(&**v)).sum(),
            None if t.has_plain_ram_storage() => t.len() * t.datum_type().size_of(),
            None => 0,
        }
    } else if let Some(mm) = node.op_as::<OptMatMul>() {
        mm.micro_ops
            .iter()
            .map(|op| match op {
                ProtoFusedSpec::AddMatMul { a, b, .. } => [a, b]
                    .iter()
                    .map(|o| match o {
                        MatMulOperand::Const(v) => packed(&**v),
                        MatMulOperand::Input(_) => 0,
                    })
                    .sum(),
                _ => 0,
            })
            .sum()
    } else {
        0
    }
}

/// Files at least this large have their checksum computed on a thread of its own while the graph
/// is parsed and the tensors decoded. Below it, starting a thread costs more than the checksum it
/// overlaps (CRC-32 runs at gigabytes per second): in a fresh process, the phone's case, a small
/// file loads faster without the thread (docs/PERFORMANCE.md).
const PARALLEL_CHECKSUM_MIN_BYTES: usize = 4 << 20;

/// What [`read_graph_and_weights`] reads of a file.
struct Loaded {
    metadata: Metadata,
    model: TypedModel,
    /// The batch size the graph's input was fixed to, if it was.
    fixed_batch: Option<usize>,
    /// The kept weights of the file's sparse tensors, for the sparse kernel.
    kept: Vec<SparseEntries>,
}

/// Verifies the file and turns it into tract's model with every weight in place, and says the
/// batch size it fixed. The checksum is verified before anything read is returned, and a
/// mismatch is the error reported whatever else went wrong (a flipped bit explains the rest);
/// on large files it runs beside the parsing and decoding, which check every byte themselves
/// and never rely on it.
fn read_graph_and_weights(bytes: &[u8], options: &LoadOptions) -> Result<Loaded> {
    let parse = |bytes| -> Result<Loaded> {
        let reader = NnzReader::parse_unverified(bytes, options.limits)?;
        let fixed_batch = match options.batch {
            Some(batch) => batch_to_fix(&reader.metadata().input.shape, batch)?,
            None => None,
        };
        let threads = decode_threads(options.decode_threads);
        let (model, kept) = guard_panics("read the graph", || {
            build_typed_model(&reader, fixed_batch, threads)
        })?;
        Ok(Loaded {
            metadata: reader.metadata().clone(),
            model,
            fixed_batch,
            kept,
        })
    };
    let header = read_header_unverified(bytes)?;
    let parallel = bytes.len() >= PARALLEL_CHECKSUM_MIN_BYTES
        && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    if !parallel {
        verify_checksum(bytes, &header)?;
        return parse(bytes);
    }
    std::thread::scope(|scope| {
        let checksum = scope.spawn(|| verify_checksum(bytes, &header));
        let parsed = parse(bytes);
        checksum
            .join()
            .map_err(|_| NnzError::model("the checksum thread failed"))??;
        parsed
    })
}

/// Runs a load step, turning a panic inside tract into an error: the reader validates what it
/// knows tract would choke on, and this is the net for what it does not.
fn guard_panics<T>(step: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(NnzError::model(format!(
            "tract failed (internal panic) trying to {step}: the graph is malformed or uses an operator in a way nnzip does not check"
        )))
    })
}

/// Decodes every weight straight into the tensor tract will keep and translates the graph with
/// them as its initializers; returns the graph and the kept weights of the sparse tensors.
fn build_typed_model(
    reader: &NnzReader<'_>,
    batch: Option<usize>,
    threads: usize,
) -> Result<(TypedModel, Vec<SparseEntries>)> {
    let proto = parse_model_proto(reader.graph())?;
    let (tensors, kept) = decode_tensors(reader.tensors(), threads)?;
    let weights = reader
        .tensors()
        .iter()
        .map(|view| view.name.clone())
        .zip(tensors)
        .collect();
    crate::onnx::check_all_used(&proto, reader.tensors().iter().map(|v| v.name.as_str()))?;
    Ok((
        crate::onnx::typed_model_from_onnx(&proto, weights, batch)?,
        kept,
    ))
}

/// Folds per-channel scales and shifts (unfused batch norms) into the convolutions before them
/// ([`crate::fold_channel_affine`]), declutters (tract's passes as [`crate::declutter`] chooses
/// them; the pointwise convolutions put on nnzip's kernel before it where it can), puts the
/// other convolutions on nnzip's kernels where `kernels` says so (a rewrite that needs the
/// decluttered graph; the sparse kernel takes the decoder's `kept` weights), then optimises for
/// this machine and plans.
fn optimise(
    mut model: TypedModel,
    kernels: &KernelChoice,
    kept: &[SparseEntries],
) -> Result<Arc<TypedSimplePlan>> {
    let tract = |e: TractError| NnzError::model(format!("tract cannot optimise this graph: {e:#}"));
    let kernels_error =
        |e: TractError| NnzError::model(format!("cannot put nnzip's kernels in place: {e:#}"));
    crate::fold_channel_affine::fold_channel_affine(&mut model).map_err(tract)?;
    // Where the declutter leaves tract's axis-change pass out, the pointwise convolutions are
    // taken before it (a shorter declutter); where it runs the pass, after it, as the pass
    // moves layouts only through tract's own operators.
    if !crate::declutter::layout_change_needed(&model, kernels).map_err(tract)? {
        use_pointwise_kernel_before_declutter(&mut model, kernels).map_err(kernels_error)?;
    }
    crate::declutter::declutter(&mut model, kernels).map_err(tract)?;
    use_nnzip_kernels_with(&mut model, kernels, kept).map_err(kernels_error)?;
    model.optimize().map_err(tract)?;
    model.into_runnable().map_err(tract)
}

/// The batch size to fix the graph's input to: `batch` when the file declares the batch dynamic
/// (`-1` first) and every other dimension known; otherwise none, and the graph stays as it is.
fn batch_to_fix(declared: &[i64], batch: usize) -> Result<Option<usize>> {
    if batch == 0 {
        return Err(NnzError::InvalidInput(
            "a batch size of 0 cannot be planned".into(),
        ));
    }
    let Some((&first, rest)) = declared.split_first() else {
        return Ok(None);
    };
    if first != -1 || rest.iter().any(|&d| d <= 0) {
        return Ok(None);
    }
    Ok(Some(batch))
}

/// Files with less decoding work than this (in [`decode_work`] units, about one entropy-coded
/// weight each) decode on the calling thread: starting threads would cost more than it saves.
const PARALLEL_DECODE_MIN_ELEMENTS: usize = 1 << 18;

/// Raw tensors decode at memory speed, entropy-coded ones several times slower (the rates are in
/// docs/PERFORMANCE.md): a raw element counts for this fraction of a coded one when deciding on
/// threads.
const RAW_ELEMENTS_PER_WORK_UNIT: usize = 8;

/// Estimated decoding work of a tensor, in units of one entropy-coded weight.
fn decode_work(view: &crate::format::TensorView<'_>) -> usize {
    use crate::format::Encoding;
    match view.encoding {
        Encoding::RawF32 | Encoding::RawF16 => view.element_count() / RAW_ELEMENTS_PER_WORK_UNIT,
        _ => view.element_count(),
    }
}

/// At most this many decoding threads by default (phones have 4–8 cores; the decoder is
/// memory-light).
const MAX_DECODE_THREADS: usize = 4;

/// The most threads to decode on, as [`LoadOptions::decode_threads`] says (at least 1).
fn decode_threads(option: Option<usize>) -> usize {
    let threads = option.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_DECODE_THREADS)
    });
    threads.max(1)
}

/// Decodes every tensor of the file into a tract tensor of its shape, each straight into its
/// final buffer, and returns, beside them, the kept weights of its sparse tensors as the
/// decoder read them (for [`crate::kernels::sparse`], which runs from them; a sparse tensor is
/// entropy-decoded once, into its entries, and expanded from them). Tensors are independent,
/// so a large file is decoded on up to `threads` threads, largest tensors first (the entropy
/// decoders are serial within a tensor). The error reported is that of the first failing tensor
/// in file order, whatever the threads' timing.
fn decode_tensors(
    views: &[crate::format::TensorView<'_>],
    threads: usize,
) -> Result<(Vec<Tensor>, Vec<SparseEntries>)> {
    let mut tensors = views
        .iter()
        .map(|v| {
            let shape: Vec<usize> = v.shape.iter().map(|&d| d as usize).collect();
            // SAFETY: f32 has no invalid bit patterns, and every element is written by
            // `decode_into` or `expand_into` before the tensor is used (every encoding writes
            // all `n` elements, sparse ones zero-fill first); a tensor whose decoding fails is
            // dropped unread. Not zeroing matters: a zeroed (calloc'd) buffer comes as fresh
            // pages that the kernel clears and faults in again as the decoder writes them
            // (perf: a fifth of a LeNet-5 load in a loop); a plain allocation reuses the heap.
            unsafe { Tensor::uninitialized::<f32>(&shape) }.map_err(NnzError::model)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut entries: Vec<Option<SparseEntries>> = vec![None; views.len()];
    let decode_one =
        |i: usize, tensor: &mut Tensor, entries: &mut Option<SparseEntries>| -> Result<()> {
            let mut plain = tensor.try_as_plain_ram_mut().map_err(NnzError::model)?;
            let out = plain.as_slice_mut::<f32>().map_err(NnzError::model)?;
            match views[i].decode_entries()? {
                Some(kept) => {
                    kept.expand_into(out)?;
                    *entries = Some(kept);
                    Ok(())
                }
                None => views[i].decode_into(out),
            }
        };
    let total: usize = views.iter().map(decode_work).sum();
    let threads = threads.min(views.len());
    if total < PARALLEL_DECODE_MIN_ELEMENTS || threads < 2 {
        for (i, (tensor, kept)) in tensors.iter_mut().zip(entries.iter_mut()).enumerate() {
            decode_one(i, tensor, kept)?;
        }
        return Ok((tensors, entries.into_iter().flatten().collect()));
    }
    let mut work: Vec<_> = tensors
        .iter_mut()
        .zip(entries.iter_mut())
        .enumerate()
        .map(|(i, (t, e))| (i, t, e))
        .collect();
    work.sort_by_key(|(i, _, _)| std::cmp::Reverse(decode_work(&views[*i])));
    let queue = std::sync::Mutex::new(work.into_iter());
    let first_error: std::sync::Mutex<Option<(usize, NnzError)>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    // A poisoned lock means another decoder panicked; that panic propagates.
                    let next = match queue.lock() {
                        Ok(mut q) => q.next(),
                        Err(_) => None,
                    };
                    let Some((i, tensor, kept)) = next else { break };
                    if let Err(e) = decode_one(i, tensor, kept)
                        && let Ok(mut first) = first_error.lock()
                        && first.as_ref().is_none_or(|(j, _)| i < *j)
                    {
                        *first = Some((i, e));
                    }
                }
            });
        }
    });
    match first_error.into_inner() {
        Ok(Some((_, e))) => Err(e),
        Ok(None) => Ok((tensors, entries.into_iter().flatten().collect())),
        Err(_) => Err(NnzError::model("a tensor decoder failed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::NnzWriter;
    use crate::metadata::InputSpec;
    use crate::onnx::proto as pb;
    use prost::Message;

    /// A one-node graph `y = op(x)` on a `[1, 4]` float input, packed without weights.
    fn one_node_nnz(op_type: &str) -> Vec<u8> {
        one_node_nnz_shaped(op_type, &[1, 4])
    }

    /// As [`one_node_nnz`] with an input of this shape (`-1`: a dynamic dimension "N").
    fn one_node_nnz_shaped(op_type: &str, dims: &[i64]) -> Vec<u8> {
        one_node_nnz_with(op_type, dims, &[], Vec::new(), Vec::new())
    }

    /// A one-node graph `y = op(x, extra_inputs…)` with `initializers` left in the graph and
    /// `tensors` stored in the file.
    fn one_node_nnz_with(
        op_type: &str,
        dims: &[i64],
        extra_inputs: &[&str],
        initializers: Vec<pb::TensorProto>,
        tensors: Vec<crate::format::TensorRecord>,
    ) -> Vec<u8> {
        one_node_nnz_edited(op_type, dims, extra_inputs, tensors, |graph| {
            graph.initializer = initializers
        })
    }

    /// As [`one_node_nnz_with`], the graph changed by `edit` before it is packed.
    fn one_node_nnz_edited(
        op_type: &str,
        dims: &[i64],
        extra_inputs: &[&str],
        tensors: Vec<crate::format::TensorRecord>,
        edit: impl FnOnce(&mut pb::GraphProto),
    ) -> Vec<u8> {
        let tensor_type = |name: &str| pb::ValueInfoProto::float(name, dims);
        let proto = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(pb::GraphProto {
                name: "one-node".into(),
                node: vec![pb::NodeProto {
                    name: "the-node".into(),
                    op_type: op_type.into(),
                    input: std::iter::once("x")
                        .chain(extra_inputs.iter().copied())
                        .map(String::from)
                        .collect(),
                    output: vec!["y".into()],
                    ..Default::default()
                }],
                input: vec![tensor_type("x")],
                output: vec![tensor_type("y")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let metadata = Metadata {
            model_name: "one-node".into(),
            input: InputSpec {
                name: "x".into(),
                shape: dims.to_vec(),
            },
            ..Default::default()
        };
        let mut proto = proto;
        if let Some(graph) = proto.graph.as_mut() {
            edit(graph);
        }
        let mut w = NnzWriter::new(metadata, proto.encode_to_vec());
        for t in tensors {
            w.push(t).unwrap();
        }
        w.to_bytes().unwrap()
    }

    fn raw(name: &str, values: &[f32]) -> crate::format::TensorRecord {
        crate::format::TensorRecord {
            row_scales: None,
            name: name.into(),
            shape: vec![1, values.len() as u64],
            data: crate::format::TensorData::RawF32(values.to_vec()),
        }
    }

    /// The file's tensors become the graph's initializers: used, they run; one too many, one
    /// missing or one that the graph also holds is a clear error.
    #[test]
    fn file_tensors_fill_the_graph_and_mismatches_are_named() {
        let b = [1f32, 2., 3., 4.];
        let ok = one_node_nnz_with("Add", &[1, 4], &["b"], vec![], vec![raw("b", &b)]);
        let y = Model::from_bytes(&ok)
            .unwrap()
            .run(Tensor::from_shape(&[1, 4], &[10f32, 20., 30., 40.]).unwrap())
            .unwrap();
        assert_eq!(
            y.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
            &[11., 22., 33., 44.]
        );

        let extra = one_node_nnz_with(
            "Add",
            &[1, 4],
            &["b"],
            vec![],
            vec![raw("b", &b), raw("stray", &[5., 6., 7., 8.])],
        );
        let err = Model::from_bytes(&extra).unwrap_err().to_string();
        assert!(
            err.contains("tensor 'stray' is not used by the graph"),
            "{err}"
        );

        let missing = one_node_nnz_with("Add", &[1, 4], &["b"], vec![], vec![]);
        let err = Model::from_bytes(&missing).unwrap_err().to_string();
        assert!(
            err.contains("node 'the-node' (Add) reads 'b', which no earlier node"),
            "{err}"
        );

        let in_graph = pb::TensorProto {
            name: "b".into(),
            dims: vec![1, 4],
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: b.to_vec(),
            ..Default::default()
        };
        let twice = one_node_nnz_with("Add", &[1, 4], &["b"], vec![in_graph], vec![raw("b", &b)]);
        let err = Model::from_bytes(&twice).unwrap_err().to_string();
        assert!(
            err.contains("tensor 'b' is both in the graph and among the decoded weights"),
            "{err}"
        );
    }

    fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            r#type: pb::attribute_proto::AttributeType::Ints as i32,
            ints: values.to_vec(),
            ..Default::default()
        }
    }

    fn int(name: &str, value: i64) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: value,
            ..Default::default()
        }
    }

    /// The load error of a one-node graph on a `[1, 1, 4, 4]` input with these attributes
    /// (and, for Conv, a `[1, 1, 2, 2]` weight held by the file).
    fn spatial_error(op_type: &str, attributes: Vec<pb::AttributeProto>) -> String {
        let weight = crate::format::TensorRecord {
            row_scales: None,
            name: "w".into(),
            shape: vec![1, 1, 2, 2],
            data: crate::format::TensorData::RawF32(vec![1.0; 4]),
        };
        let (inputs, tensors) = if op_type == "Conv" {
            (&["w"][..], vec![weight])
        } else {
            (&[][..], vec![])
        };
        let bytes = one_node_nnz_edited(op_type, &[1, 1, 4, 4], inputs, tensors, |g| {
            g.node[0].attribute = attributes
        });
        Model::from_bytes(&bytes).unwrap_err().to_string()
    }

    /// Graphs that made tract panic at load (issue 21) are refused with the node's name.
    #[test]
    fn zero_strides_and_kernels_are_refused_by_node() {
        for op in ["Conv", "MaxPool", "AveragePool"] {
            let kernel = ints("kernel_shape", &[2, 2]);
            let err = spatial_error(op, vec![kernel.clone(), ints("strides", &[0, 1])]);
            assert!(
                err.contains(&format!("node 'the-node' ({op})")) && err.contains("'strides'"),
                "{op}: {err}"
            );
            let err = spatial_error(op, vec![ints("kernel_shape", &[0, 2])]);
            assert!(
                err.contains("'kernel_shape'") && err.contains("positive"),
                "{op}: {err}"
            );
            let err = spatial_error(op, vec![kernel, ints("dilations", &[1, 0])]);
            assert!(err.contains("'dilations'"), "{op}: {err}");
        }
        // The same geometry with valid attributes loads and runs.
        let ok = one_node_nnz_edited("MaxPool", &[1, 1, 4, 4], &[], vec![], |g| {
            g.node[0].attribute = vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])]
        });
        let y = Model::from_bytes(&ok)
            .unwrap()
            .run(
                Tensor::from_shape(
                    &[1, 1, 4, 4],
                    &(0..16).map(|i| i as f32).collect::<Vec<_>>(),
                )
                .unwrap(),
            )
            .unwrap();
        assert_eq!(
            y.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
            &[5., 7., 13., 15.]
        );
    }

    #[test]
    fn an_axis_out_of_range_is_refused() {
        let bytes = one_node_nnz_edited("Flatten", &[1, 4], &[], vec![], |g| {
            g.node[0].attribute = vec![int("axis", 100)]
        });
        let err = Model::from_bytes(&bytes).unwrap_err().to_string();
        assert!(
            err.contains("node 'the-node' (Flatten)") && err.contains("axis 100 is out of range"),
            "{err}"
        );
    }

    #[test]
    fn an_output_nothing_produces_and_an_empty_graph_are_refused() {
        let bytes = one_node_nnz_edited("Relu", &[1, 4], &[], vec![], |g| {
            g.output[0].name = "nowhere".into()
        });
        let err = Model::from_bytes(&bytes).unwrap_err().to_string();
        assert!(
            err.contains("graph output 'nowhere' is produced by no node"),
            "{err}"
        );

        let bytes = one_node_nnz_edited("Relu", &[1, 4], &[], vec![], |g| g.node.clear());
        let err = Model::from_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains("the ONNX graph has no nodes"), "{err}");
    }

    #[test]
    fn impossible_dims_and_mismatched_data_are_refused() {
        let bytes = one_node_nnz_edited("Relu", &[1, 4], &[], vec![], |g| {
            let Some(pb::type_proto::Value::TensorType(t)) =
                g.input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
            else {
                unreachable!()
            };
            t.shape.as_mut().unwrap().dim[1].value =
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(0));
        });
        let err = Model::from_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains("graph input 'x' has dimension 1 = 0"), "{err}");

        let short = pb::TensorProto {
            name: "b".into(),
            dims: vec![1, 4],
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: vec![1., 2., 3.],
            ..Default::default()
        };
        let bytes = one_node_nnz_with("Add", &[1, 4], &["b"], vec![short.clone()], vec![]);
        let err = Model::from_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains("'b': 3 values, shape [1, 4] needs 4"), "{err}");

        let negative = pb::TensorProto {
            dims: vec![-1, 4],
            ..short
        };
        let bytes = one_node_nnz_with("Add", &[1, 4], &["b"], vec![negative], vec![]);
        let err = Model::from_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains("'b': negative dimension"), "{err}");
    }

    #[test]
    fn an_operator_of_another_domain_is_refused_by_name() {
        let bytes = one_node_nnz_edited("Relu", &[1, 4], &[], vec![], |g| {
            g.node[0].domain = "com.evil".into()
        });
        let err = Model::from_bytes(&bytes).unwrap_err().to_string();
        assert!(
            err.contains(
                "ONNX operator Relu of domain 'com.evil' (node 'the-node') is not supported"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_supported_operator_runs() {
        let model = Model::from_bytes(&one_node_nnz("Relu")).unwrap();
        let x = Tensor::from_shape(&[1, 4], &[-1f32, 0.5, -2., 3.]).unwrap();
        let y = model.run(x).unwrap();
        assert_eq!(
            y.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
            &[0., 0.5, 0., 3.]
        );
    }

    #[test]
    fn an_unsupported_operator_is_named() {
        let err = Model::from_bytes(&one_node_nnz("Erf"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "ONNX operator Erf (node 'the-node') is not supported by this build of nnzip"
            ),
            "{err}"
        );
        assert!(err.contains("Conv") && err.contains("Softmax"), "{err}");
    }

    /// Large files decode on several threads: the same values as one thread, and the error of
    /// the first bad tensor in file order whatever the threads' timing.
    #[test]
    fn parallel_decoding_matches_and_reports_the_first_bad_tensor() {
        use crate::format::{NnzReader, TensorData, TensorRecord};
        let n = PARALLEL_DECODE_MIN_ELEMENTS / 2;
        let mut w = NnzWriter::new(Metadata::default(), Vec::new());
        for k in 0..4u16 {
            w.push(TensorRecord {
                row_scales: None,
                name: format!("t{k}"),
                shape: vec![n as u64],
                data: TensorData::SharedDense {
                    codebook: vec![0.5, -1.0, 2.0, f32::from(k)],
                    indices: (0..n)
                        .map(|i| ((i * 7 + usize::from(k)) % 4) as u16)
                        .collect(),
                    index_bits: 2,
                },
            })
            .unwrap();
        }
        let bytes = w.to_bytes().unwrap();
        let reader = NnzReader::parse(&bytes).unwrap();
        let views = reader.tensors().to_vec();
        for threads in [1, 2, 3, 8] {
            let (tensors, _) = decode_tensors(&views, threads).unwrap();
            for (view, tensor) in views.iter().zip(&tensors) {
                let got = tensor.try_as_plain_ram().unwrap();
                assert_eq!(got.as_slice::<f32>().unwrap(), &view.decode().unwrap()[..]);
            }
            // Tensors 1 and 3 lose the end of their payloads: tensor 1 is the one named.
            for _ in 0..5 {
                let mut bad = views.clone();
                for k in [3, 1] {
                    bad[k].payload = &bad[k].payload[..bad[k].payload.len() / 2];
                }
                let err = decode_tensors(&bad, threads).unwrap_err().to_string();
                assert!(err.contains("'t1'"), "{threads} threads: {err}");
            }
        }
        assert_eq!(decode_threads(Some(0)), 1);
        assert_eq!(decode_threads(Some(6)), 6);
        assert!((1..=MAX_DECODE_THREADS).contains(&decode_threads(None)));
    }

    /// `y = x + w` with `w` a raw tensor of `n` weights held by the file.
    fn add_weight_nnz(n: usize) -> Vec<u8> {
        use crate::format::{TensorData, TensorRecord};
        let one_node = one_node_nnz_shaped("Add", &[1, n as i64]);
        let reader = NnzReader::parse(&one_node).unwrap();
        let mut proto = pb::ModelProto::decode(reader.graph()).unwrap();
        let graph = proto.graph.as_mut().unwrap();
        graph.node[0].input.push("w".into());
        let mut w = NnzWriter::new(reader.metadata().clone(), proto.encode_to_vec());
        w.push(TensorRecord {
            row_scales: None,
            name: "w".into(),
            shape: vec![1, n as u64],
            data: TensorData::RawF32((0..n).map(|i| i as f32).collect()),
        })
        .unwrap();
        w.to_bytes().unwrap()
    }

    /// Files over a megabyte have their checksum verified beside the parsing: a valid one loads
    /// and runs, a flipped bit anywhere is a checksum mismatch, and that is the error reported
    /// even when the flip also breaks what is parsed.
    #[test]
    fn large_files_verify_their_checksum_alongside_parsing() {
        let n = PARALLEL_CHECKSUM_MIN_BYTES / 4 + 16;
        let bytes = add_weight_nnz(n);
        assert!(bytes.len() >= PARALLEL_CHECKSUM_MIN_BYTES);
        let model = Model::from_bytes(&bytes).unwrap();
        let y = model.run(Tensor::zero::<f32>(&[1, n]).unwrap()).unwrap();
        let y = y.try_as_plain_ram().unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap()[..3], [0., 1., 2.]);
        // Header, metadata length and JSON, graph codec and two lengths, then the deflated
        // graph: a flip there breaks the graph as well as the checksum.
        let meta_len = u32::from_le_bytes(bytes[24..28].try_into().unwrap()) as usize;
        let graph_at = 28 + meta_len + 17 + 2;
        for at in [30, graph_at, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            let err = Model::from_bytes(&bad).unwrap_err();
            assert!(
                matches!(err, NnzError::ChecksumMismatch { .. }),
                "flip at {at}: {err}"
            );
        }
    }

    /// A dynamic batch fixed at load: batch-1 inputs give the same outputs as the dynamic plan,
    /// other batch sizes are an error (not a panic); a dynamic plan takes any batch.
    #[test]
    fn a_fixed_batch_plans_for_that_batch_only() {
        let bytes = one_node_nnz_shaped("Relu", &[-1, 4]);
        let dynamic = Model::from_bytes(&bytes).unwrap();
        let fixed = Model::from_bytes_with(
            &bytes,
            &LoadOptions {
                batch: Some(1),
                ..LoadOptions::default()
            },
        )
        .unwrap();
        let one = Tensor::from_shape(&[1, 4], &[-1f32, 0.5, -2., 3.]).unwrap();
        let two = Tensor::from_shape(&[2, 4], &[1f32, -1., 2., -2., 3., -3., 4., -4.]).unwrap();
        let plain = |t: Tensor| {
            t.try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
                .to_vec()
        };
        assert_eq!(plain(fixed.run(one.clone()).unwrap()), [0., 0.5, 0., 3.]);
        assert_eq!(plain(dynamic.run(one).unwrap()), [0., 0.5, 0., 3.]);
        assert_eq!(plain(dynamic.run(two.clone()).unwrap()).len(), 8);
        let err = fixed.run(two).unwrap_err().to_string();
        assert!(err.contains("loaded for batch 1"), "{err}");
        let zero = LoadOptions {
            batch: Some(0),
            ..LoadOptions::default()
        };
        assert!(Model::from_bytes_with(&bytes, &zero).is_err());
    }

    /// `Model` is shared across threads (the bindings hold one per app): `Send + Sync`.
    #[test]
    fn a_model_is_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<Model>();
    }

    /// Runs overlapping on several threads each take their own kept state and get their own
    /// input's output; afterwards at most one state per thread is kept, and at least one.
    #[test]
    fn concurrent_runs_each_get_their_own_output() {
        let n = 64;
        let model = Model::from_bytes(&add_weight_nnz(n)).unwrap();
        let threads = 4;
        let start = std::sync::Barrier::new(threads);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let (model, start) = (&model, &start);
                scope.spawn(move || {
                    start.wait();
                    for round in 0..200 {
                        let offset = (t * 1000 + round) as f32;
                        let x = Tensor::from_shape(&[1, n], &vec![offset; n]).unwrap();
                        let y = model.run(x).unwrap();
                        let y = y.try_as_plain_ram().unwrap();
                        let y = y.as_slice::<f32>().unwrap();
                        assert!(y.iter().enumerate().all(|(i, &v)| v == offset + i as f32));
                    }
                });
            }
        });
        let kept = model.runs.idle_count();
        assert!((1..=threads).contains(&kept), "{kept} states kept");
    }

    /// A kept state serves the next run whatever the batch of the one before, and a failed run
    /// (an input of the wrong width) leaves the model running as before.
    #[test]
    fn a_kept_state_serves_other_batches_and_survives_a_failed_run() {
        let model = Model::from_bytes(&one_node_nnz_shaped("Relu", &[-1, 4])).unwrap();
        let batch = |b: usize| {
            let x: Vec<f32> = (0..b * 4).map(|i| i as f32 - 3.0).collect();
            let y = model.run(Tensor::from_shape(&[b, 4], &x).unwrap()).unwrap();
            let y = y
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
                .to_vec();
            assert_eq!(y, x.iter().map(|v| v.max(0.0)).collect::<Vec<_>>());
        };
        batch(3);
        batch(1);
        assert!(model.run(Tensor::zero::<f32>(&[1, 5]).unwrap()).is_err());
        batch(2);
        assert_eq!(model.runs.idle_count(), 1);
    }
}
