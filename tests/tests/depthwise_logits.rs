//! The decoded model's logits with the padded-plane depthwise kernel (vendor/tract-core,
//! `ops/cnn/conv/depth_wise_padded.rs`) against those of tract's original zone walk (the knob
//! `TRACT_DEPTHWISE_ZONES`, read while the plan is optimised): on `nnzip init mobile-tiny`
//! (EfficientNet-Lite0's structure in small: a stride-2 stem and depthwise convolutions padded
//! at the end only, 3x3 and 5x5, ReLU6, residuals) and on EfficientNet-Lite0 itself.
//! Only the summation order differs, so the logits agree to rounding and rank the same classes.

use nnzip_core::{LoadOptions, Model, Tensor};
use nnzip_e2e::{random_input, shared, tensor_values};
use nnzip_tools::onnx::build::{Architecture, build};
use nnzip_tools::onnx::proto::write_model;
use nnzip_tools::pack::{PackOptions, pack_onnx};
use tract_onnx::tract_hir::tract_core::knobs::KnobScope;

fn load(nnz: &[u8], zone_walk: bool, batch: Option<usize>) -> Model {
    let knob = if zone_walk { "true" } else { "false" };
    KnobScope::new([("TRACT_DEPTHWISE_ZONES", knob)])
        .unwrap()
        .enter(|| {
            Model::from_bytes_with(
                nnz,
                &LoadOptions {
                    batch,
                    ..LoadOptions::default()
                },
            )
        })
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
    let before = load(nnz, true, None);
    let after = load(nnz, false, None);
    let after_batch1 = load(nnz, false, Some(1));
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
fn mobile_tiny_same_logits_as_the_zone_walk() {
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

#[test]
fn efficientnet_lite0_same_logits_as_the_zone_walk() {
    let onnx = std::fs::read(shared("models/efficientnet_lite0.onnx")).unwrap();
    let nnz = pack_onnx(&onnx, &PackOptions::default())
        .unwrap()
        .to_bytes()
        .unwrap();
    let inputs = [random_input(&[1, 3, 224, 224], 11)];
    assert_same_logits(&nnz, &inputs, 1000, 1e-4);
}
