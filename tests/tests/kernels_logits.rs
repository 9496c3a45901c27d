//! The decoded model's logits with nnzip's convolution kernels (`nnzip_core::kernels`: the
//! padded-plane depthwise kernel, the tiled pointwise kernel, the stem kernel) against those of
//! tract's own path (`KernelChoice` with all set to `Tract`): on `nnzip init mobile-tiny`
//! (EfficientNet-Lite0's structure in small: a stride-2 stem and depthwise convolutions padded
//! at the end only, 3x3 and 5x5, pointwise expansions and projections, ReLU6, residuals), on
//! EfficientNet-Lite0 itself, where the rewrite is also checked to have put nnzip's operators in
//! place of every depthwise and pointwise convolution and of the stem with its ReLU6, and on the
//! shared LeNets (LeNet-5's first convolution on the stem kernel, the rest tract's). Only the
//! summation order differs, so the logits agree to rounding and rank the same classes.

use nnzip_core::kernels::{
    DepthwiseKernel, ExpandDepthwiseFusion, KernelChoice, PointwiseKernel, SparseChains,
    SparseKernel, StemConvKernel, use_nnzip_kernels,
};
use nnzip_core::{LoadOptions, Model, Tensor};
use nnzip_e2e::{random_input, shared, tensor_values};
use nnzip_tools::onnx::build::{Architecture, build};
use nnzip_tools::onnx::proto::write_model;
use nnzip_tools::packing::{PackOptions, pack_onnx};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::tract_core::ops::cnn::Conv;

const TRACT: KernelChoice = KernelChoice {
    depthwise: DepthwiseKernel::Tract,
    stem_conv: StemConvKernel::Tract,
    pointwise: PointwiseKernel::Tract,
    sparse: SparseKernel::Dense,
    sparse_chains: SparseChains::Separate,
    expand_depthwise: ExpandDepthwiseFusion::Separate,
};

fn load(nnz: &[u8], kernels: KernelChoice, batch: Option<usize>) -> Model {
    Model::from_bytes_with(
        nnz,
        &LoadOptions {
            batch,
            kernels: Some(kernels),
            ..LoadOptions::default()
        },
    )
    .expect("load")
}

fn top5(logits: &[f32]) -> Vec<usize> {
    let mut ix: Vec<usize> = (0..logits.len()).collect();
    ix.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    ix.truncate(5);
    ix
}

/// Same logits within `rel` of the largest logit, same top 5 on each image.
fn assert_same_logits(nnz: &[u8], inputs: &[Tensor], classes: usize, rel: f32) {
    let before = load(nnz, TRACT, None);
    let after = load(nnz, KernelChoice::default(), None);
    let after_batch1 = load(nnz, KernelChoice::default(), Some(1));
    for input in inputs {
        let want = tensor_values(&before.run(input.clone()).unwrap());
        let got = tensor_values(&after.run(input.clone()).unwrap());
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let diff = nnzip_e2e::max_abs_diff(&got, &want);
        assert!(
            diff <= rel * scale,
            "logits differ by {diff} (largest {scale})"
        );
        for (w, g) in want.chunks(classes).zip(got.chunks(classes)) {
            assert_eq!(top5(w), top5(g));
        }
        if input.shape()[0] == 1 {
            let got1 = tensor_values(&after_batch1.run(input.clone()).unwrap());
            assert!(nnzip_e2e::max_abs_diff(&got1, &want) <= rel * scale);
        }
    }
}

#[test]
fn mobile_tiny_same_logits_as_tracts_path() {
    let tmp = std::env::temp_dir().join(format!("nnzip-dw-{}.onnx", std::process::id()));
    write_model(&build(Architecture::MobileTiny, 3), &tmp).unwrap();
    let onnx = std::fs::read(&tmp).unwrap();
    let _ = std::fs::remove_file(&tmp);
    let nnz = pack_onnx(&onnx, &PackOptions::default())
        .unwrap()
        .to_bytes()
        .unwrap();
    let inputs: Vec<Tensor> = (0..3)
        .map(|seed| random_input(&[if seed == 0 { 1 } else { 2 }, 1, 28, 28], seed))
        .collect();
    assert_same_logits(&nnz, &inputs, 10, 1e-5);
}

/// The shared LeNets: LeNet-5's first convolution (1→20 5x5) runs on the stem kernel, its
/// second (20→50 5x5) and the fully connected layers are tract's: the same logits to rounding
/// (1e-5 of the largest), the same top 5. LeNet-300-100 has nothing nnzip's kernels take:
/// tract's logits exactly.
#[test]
fn lenets_same_logits_as_tracts_path() {
    for (model, shape, seed) in [
        ("models/lenet5.onnx", [2, 1, 28, 28], 5),
        ("models/lenet300.onnx", [2, 1, 28, 28], 6),
    ] {
        let onnx = std::fs::read(shared(model)).unwrap();
        let nnz = pack_onnx(&onnx, &PackOptions::default())
            .unwrap()
            .to_bytes()
            .unwrap();
        let input = random_input(&shape, seed);
        let before = load(&nnz, TRACT, None);
        let after = load(&nnz, KernelChoice::default(), None);
        let want = tensor_values(&before.run(input.clone()).unwrap());
        let got = tensor_values(&after.run(input).unwrap());
        if model.contains("lenet5") {
            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
            let diff = nnzip_e2e::max_abs_diff(&got, &want);
            assert!(diff <= 1e-5 * scale, "{model}: logits differ by {diff}");
            for (w, g) in want.chunks(10).zip(got.chunks(10)) {
                assert_eq!(top5(w), top5(g), "{model}");
            }
        } else {
            assert_eq!(got, want, "{model}");
        }
    }
}

#[test]
fn efficientnet_lite0_same_logits_as_tracts_path() {
    let onnx = std::fs::read(shared("models/efficientnet_lite0.onnx")).unwrap();
    let nnz = pack_onnx(&onnx, &PackOptions::default())
        .unwrap()
        .to_bytes()
        .unwrap();
    let inputs = [random_input(&[1, 3, 224, 224], 11)];
    assert_same_logits(&nnz, &inputs, 1000, 1e-4);
}

/// The rewrite on EfficientNet-Lite0 for batch 1: each of its 16 depthwise convolutions becomes
/// nnzip's operator (channel-first or channel-last, whichever layout tract's declutter gave it),
/// taking the ReLU6 after it, and its stem nnzip's stem operator, taking its ReLU6 too. Its 32 pointwise
/// convolutions (decluttered into an `EinSum` each) become nnzip's operator where their data is
/// channel-first: all 32 on x86_64, where the only matrix product left once optimised is the
/// fully connected classifier's. On aarch64 tract's declutter moves the data between the 15
/// channel-last depthwise convolutions channel-last too, which makes 30 of the pointwise
/// convolutions plain matrix products with the pixels as rows: those stay on tract's packed
/// product (measured under qemu: `op_profile`), 2 are nnzip's. On x86_64 the expansions of
/// blocks 1 to 3 and the depthwise convolutions after them run as one fused operator each.
#[test]
fn efficientnet_lite0_runs_on_nnzips_kernels() {
    let mut model = tract_onnx::onnx()
        .model_for_path(shared("models/efficientnet_lite0.onnx"))
        .unwrap();
    model
        .set_input_fact(0, f32::fact([1, 3, 224, 224]).into())
        .unwrap();
    let mut model = model.into_typed().unwrap().into_decluttered().unwrap();
    let convs = |model: &TypedModel| -> (usize, usize) {
        let convs: Vec<&Conv> = model
            .nodes
            .iter()
            .filter_map(|n| n.op_as::<Conv>())
            .collect();
        let depthwise = convs.iter().filter(|c| c.group > 1).count();
        (depthwise, convs.len() - depthwise)
    };
    let count = |model: &TypedModel, name: &str| {
        model.nodes.iter().filter(|n| n.op().name() == name).count()
    };
    let (depthwise, others) = convs(&model);
    assert_eq!(depthwise, 16);
    let ours_depthwise = |model: &TypedModel| {
        count(model, "NnzipPaddedDepthwise") + count(model, "NnzipChannelsLastDepthwise")
    };
    let pointwise = if cfg!(target_arch = "aarch64") { 2 } else { 32 };
    // Blocks 1 to 3 (intermediates of 1 MB or more) run their expansion and depthwise
    // convolution as one operator where both are nnzip's and channel-first.
    let fused = if cfg!(target_arch = "aarch64") { 0 } else { 3 };
    use_nnzip_kernels(&mut model, &KernelChoice::default()).unwrap();
    assert_eq!(count(&model, "NnzipExpandDepthwise"), fused);
    assert_eq!(ours_depthwise(&model), depthwise - fused);
    assert_eq!(count(&model, "NnzipStemConv"), 1);
    assert_eq!(count(&model, "NnzipPointwiseConv"), pointwise - fused);
    assert_eq!(convs(&model), (0, others - 1));
    model.optimize().unwrap();
    assert_eq!(count(&model, "NnzipExpandDepthwise"), fused);
    assert_eq!(ours_depthwise(&model), depthwise - fused);
    assert_eq!(count(&model, "NnzipPointwiseConv"), pointwise - fused);
    assert_eq!(count(&model, "DepthWiseConv"), 0);
    // The ReLU6 after each depthwise convolution and after the stem is in its op.
    assert_eq!(count(&model, "OptBinChain(Max+Min)"), 0);
    assert_eq!(count(&model, "DirectSpatialConv"), 0);
    assert_eq!(count(&model, "OptMatMul"), 1 + 32 - pointwise);
}

/// LeNet-5 compressed in one shot at the paper's densities (conv2 keeps 12% of its 5×5
/// weights, shared on a codebook): the default rule runs conv2 on nnzip's sparse convolution,
/// and its logits match the all-dense path's within rounding (1e-5 of the largest), same top 5,
/// at batch 1 and 2.
#[test]
fn lenet5_pruned_sparse_convolution_same_logits_as_dense() {
    use nnzip_tools::compress::settings::CompressSettings;
    use nnzip_tools::compress::{Source, compress, pack_options};
    let model = shared("models/lenet5.onnx");
    let onnx = std::fs::read(&model).unwrap();
    let s = CompressSettings {
        paper_densities: Some("lenet5".into()),
        ..Default::default()
    };
    let pack = pack_options(&model, &s).unwrap();
    let src = Source {
        path: &model,
        onnx: &onnx,
        pack: &pack,
    };
    let nnz = compress(&src, &s, false).unwrap().file;
    let dense = KernelChoice {
        sparse: SparseKernel::Dense,
        ..KernelChoice::default()
    };
    let sparse = load(&nnz, KernelChoice::default(), None);
    assert_eq!(sparse.sparse_conv_kernels().len(), 1, "conv2 at 12%");
    assert!(load(&nnz, dense, None).sparse_conv_kernels().is_empty());
    for (batch, seed) in [(1, 21), (2, 22)] {
        let input = random_input(&[batch, 1, 28, 28], seed);
        let want = tensor_values(&load(&nnz, dense, None).run(input.clone()).unwrap());
        let got = tensor_values(&sparse.run(input).unwrap());
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let diff = nnzip_e2e::max_abs_diff(&got, &want);
        assert!(
            diff <= 1e-5 * scale,
            "logits differ by {diff} (largest {scale})"
        );
        for (w, g) in want.chunks(10).zip(got.chunks(10)) {
            assert_eq!(top5(w), top5(g));
        }
    }
}
