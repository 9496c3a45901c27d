//! The loader's declutter (`nnzip_core::declutter`: constant reshapes folded in place, then
//! tract's passes, its axis-change pass left out unless an operator asks for a layout change)
//! against tract's own `declutter()`, the path loads took before: on every shared model and on
//! `nnzip init mobile-tiny`, packed losslessly and planned for batch 1 as the phone does, the
//! same kernels put in place after either, the logits agree within 1e-6 of the largest
//! (measured on x86_64: identical, bit for bit). The pointwise convolutions the loader takes
//! before its declutter give the plan and the logits of the long way (declutter, then the
//! rewrite), bit for bit.

use nnzip_core::declutter::{declutter_for_load, layout_change_needed, suggests_layout_change};
use nnzip_core::format::NnzReader;
use nnzip_core::graph::parse_model_proto;
use nnzip_core::kernels::{
    DepthwiseKernel, KernelChoice, use_nnzip_kernels, use_pointwise_kernel_before_declutter,
};
use nnzip_core::onnx::typed_model_from_onnx;
use nnzip_core::{LoadOptions, Model, Tensor};
use nnzip_e2e::{random_input, shared, tensor_values};
use nnzip_tools::onnx::build::{Architecture, build};
use nnzip_tools::onnx::proto::write_model;
use nnzip_tools::packing::{PackOptions, pack_onnx};
use tract_onnx::prelude::*;

/// The file's graph in tract's typed form, every weight in place, for batch 1.
fn translated(nnz: &[u8]) -> TypedModel {
    let reader = NnzReader::parse(nnz).unwrap();
    let proto = parse_model_proto(reader.graph()).unwrap();
    let weights = reader
        .tensors()
        .iter()
        .map(|view| {
            let shape: Vec<usize> = view.shape.iter().map(|&d| d as usize).collect();
            let tensor = Tensor::from_shape(&shape, &view.decode().unwrap()).unwrap();
            (view.name.clone(), tensor)
        })
        .collect();
    typed_model_from_onnx(&proto, weights, Some(1)).unwrap()
}

/// The plan loads made before: tract's whole declutter, nnzip's kernels, tract's optimise.
fn plan_after_tracts_declutter(nnz: &[u8]) -> Arc<TypedSimplePlan> {
    let mut model = translated(nnz);
    model.declutter().unwrap();
    use_nnzip_kernels(&mut model, &KernelChoice::default()).unwrap();
    model.optimize().unwrap();
    model.into_runnable().unwrap()
}

fn assert_same_logits_as_tracts_declutter(name: &str, nnz: &[u8], input_shape: &[usize]) {
    let model = Model::from_bytes_with(
        nnz,
        &LoadOptions {
            batch: Some(1),
            kernels: Some(KernelChoice::default()),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let reference = plan_after_tracts_declutter(nnz);
    for seed in 0..2 {
        let input = random_input(input_shape, seed);
        let got = tensor_values(&model.run(input.clone()).unwrap());
        let want = tensor_values(&reference.run(tvec!(input.into())).unwrap()[0]);
        assert_eq!(got.len(), want.len(), "{name}");
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let diff = nnzip_e2e::max_abs_diff(&got, &want);
        // On aarch64 the loader keeps the depthwise data channel-first for nnzip's kernels, where
        // tract's declutter moves it channel-last onto tract's matrix products: other kernels,
        // other orders of sums (measured under qemu: 1.5e-6 of the largest logit).
        let bound = if cfg!(target_arch = "aarch64") {
            1e-5
        } else {
            1e-6
        };
        assert!(
            diff <= bound * scale,
            "{name}: logits differ by {diff} (largest {scale})"
        );
    }
}

fn packed(onnx: &[u8]) -> Vec<u8> {
    pack_onnx(onnx, &PackOptions::default())
        .unwrap()
        .to_bytes()
        .unwrap()
}

#[test]
fn shared_models_same_logits_as_tracts_declutter() {
    for (model, shape) in [
        ("models/lenet300.onnx", &[1, 1, 28, 28][..]),
        ("models/lenet5.onnx", &[1, 1, 28, 28]),
        ("models/efficientnet_lite0.onnx", &[1, 3, 224, 224]),
    ] {
        let nnz = packed(&std::fs::read(shared(model)).unwrap());
        assert_same_logits_as_tracts_declutter(model, &nnz, shape);
    }
}

#[test]
fn mobile_tiny_same_logits_as_tracts_declutter() {
    let tmp = std::env::temp_dir().join(format!("nnzip-declutter-{}.onnx", std::process::id()));
    write_model(&build(Architecture::MobileTiny, 3), &tmp).unwrap();
    let onnx = std::fs::read(&tmp).unwrap();
    let _ = std::fs::remove_file(&tmp);
    assert_same_logits_as_tracts_declutter("mobile-tiny", &packed(&onnx), &[1, 1, 28, 28]);
}

/// Where tract's axis-change pass runs: on EfficientNet-Lite0 only where tract asks for its
/// depthwise convolutions' channels last (aarch64: tract has a channel-last depthwise kernel
/// there), never on the LeNets (no depthwise convolution; their reshapes do not count).
#[test]
fn the_axis_change_pass_runs_only_where_a_layout_is_asked_for() {
    let passes = |model: &str| {
        let nnz = packed(&std::fs::read(shared(model)).unwrap());
        let typed = translated(&nnz);
        let names: Vec<String> = declutter_for_load(&typed)
            .unwrap()
            .passes
            .iter()
            .map(|p| format!("{p:?}"))
            .collect();
        // The loader's own pass first, then tract's.
        assert_eq!(names[0], "FoldConstReshapes", "{model}");
        (
            suggests_layout_change(&typed).unwrap(),
            names.iter().any(|n| n == "ChangeAxes"),
        )
    };
    for lenet in ["models/lenet300.onnx", "models/lenet5.onnx"] {
        assert_eq!(passes(lenet), (false, false), "{lenet}");
    }
    let (asks, runs) = passes("models/efficientnet_lite0.onnx");
    assert_eq!(runs, asks);
    // tract-linalg 0.23 has a channel-last depthwise kernel on these two only.
    let channel_last_depthwise = cfg!(any(target_arch = "aarch64", target_arch = "wasm32"));
    assert_eq!(asks, channel_last_depthwise);
    // The loader moves no layout where nnzip's depthwise kernel takes those convolutions as
    // they are, and leaves tract's choice where tract's depthwise kernel is chosen.
    let effnet = translated(&packed(
        &std::fs::read(shared("models/efficientnet_lite0.onnx")).unwrap(),
    ));
    assert!(!layout_change_needed(&effnet, &KernelChoice::default()).unwrap());
    let tracts = KernelChoice {
        depthwise: DepthwiseKernel::Tract,
        ..KernelChoice::default()
    };
    assert_eq!(
        layout_change_needed(&effnet, &tracts).unwrap(),
        channel_last_depthwise
    );
}

/// The plan the loader makes of EfficientNet-Lite0 is the same on every CPU: its 32 pointwise
/// convolutions on nnzip's kernel, blocks 1 to 3 fused with the depthwise convolutions after
/// them, the other 13 depthwise convolutions channel-first on nnzip's kernel, and one matrix
/// product (the classifier). On aarch64 tract would otherwise move the depthwise data channel-last
/// and keep 30 pointwise convolutions on its own matrix products.
#[test]
fn the_loaders_plan_of_efficientnet_lite0_runs_nnzips_kernels_on_every_cpu() {
    let nnz = packed(&std::fs::read(shared("models/efficientnet_lite0.onnx")).unwrap());
    let model = Model::from_bytes_with(
        &nnz,
        &LoadOptions {
            batch: Some(1),
            kernels: Some(KernelChoice::default()),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for node in model.plan().model().nodes() {
        *counts.entry(node.op.name().to_string()).or_default() += 1;
    }
    let count = |name: &str| counts.get(name).copied().unwrap_or(0);
    assert_eq!(count("NnzipExpandDepthwise"), 3, "{counts:?}");
    assert_eq!(count("NnzipPointwiseConv"), 32 - 3, "{counts:?}");
    assert_eq!(count("NnzipPaddedDepthwise"), 16 - 3, "{counts:?}");
    assert_eq!(count("NnzipChannelsLastDepthwise"), 0, "{counts:?}");
    assert_eq!(count("OptMatMul"), 1, "{counts:?}");
}

/// The loader's plan with its pointwise convolutions taken `before` its declutter or after it
/// (with the other kernels), for batch 1.
fn loader_plan(nnz: &[u8], before: bool) -> TypedModel {
    let mut model = translated(nnz);
    let choice = KernelChoice::default();
    if before {
        use_pointwise_kernel_before_declutter(&mut model, &choice).unwrap();
    }
    declutter_for_load(&model)
        .unwrap()
        .optimize(&mut model)
        .unwrap();
    use_nnzip_kernels(&mut model, &choice).unwrap();
    model.optimize().unwrap();
    model
}

/// The operators of a plan by name, counted.
fn operators(model: &TypedModel) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for node in model.nodes() {
        *counts.entry(node.op.name().to_string()).or_default() += 1;
    }
    counts
}

/// Where the axis-change pass stays out (x86_64), the pointwise convolutions taken before the
/// declutter leave the same operators as taking them after it, and the same logits bit for bit,
/// on EfficientNet-Lite0 (32 of them) and mobile-tiny.
#[test]
fn pointwise_convolutions_before_the_declutter_give_the_same_plan() {
    let tmp = std::env::temp_dir().join(format!("nnzip-pointwise-{}.onnx", std::process::id()));
    write_model(&build(Architecture::MobileTiny, 3), &tmp).unwrap();
    let tiny = std::fs::read(&tmp).unwrap();
    let _ = std::fs::remove_file(&tmp);
    let effnet = std::fs::read(shared("models/efficientnet_lite0.onnx")).unwrap();
    for (name, onnx, shape) in [
        ("efficientnet_lite0", effnet, &[1, 3, 224, 224][..]),
        ("mobile-tiny", tiny, &[1, 1, 28, 28]),
    ] {
        let nnz = packed(&onnx);
        if suggests_layout_change(&translated(&nnz)).unwrap() {
            continue; // the loader takes them after the axis-change pass there
        }
        let (early, late) = (loader_plan(&nnz, true), loader_plan(&nnz, false));
        assert_eq!(operators(&early), operators(&late), "{name}");
        assert!(
            operators(&early)
                .get("NnzipPointwiseConv")
                .copied()
                .unwrap_or(0)
                > 0,
            "{name}: {:?}",
            operators(&early)
        );
        let (early, late) = (
            early.into_runnable().unwrap(),
            late.into_runnable().unwrap(),
        );
        for seed in 0..2 {
            let input = random_input(shape, seed);
            let got = tensor_values(&early.run(tvec!(input.clone().into())).unwrap()[0]);
            let want = tensor_values(&late.run(tvec!(input.into())).unwrap()[0]);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{name}");
        }
    }
}
