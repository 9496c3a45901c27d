//! ONNX → `.nnz` (lossless pack) → running model, on the real PyTorch exports in `../shared/models/`.

use nnzip_core::Model;
use nnzip_core::metadata::Preprocessing;
use nnzip_e2e::{max_abs_diff, random_input, shared, tensor_values, tract_reference};
use nnzip_tools::model_file::decompress_bytes;
use nnzip_tools::packing::{PackOptions, pack_onnx, read_labels};

fn pack(onnx: &[u8], opts: &PackOptions) -> Vec<u8> {
    pack_onnx(onnx, opts)
        .expect("pack")
        .to_bytes()
        .expect("encode")
}

fn assert_same_outputs(file: &str, input_shape: &[usize]) {
    let onnx = std::fs::read(shared(file)).unwrap();
    let nnz = pack(&onnx, &PackOptions::default());
    let model = Model::from_bytes(&nnz).expect("load the .nnz");
    for seed in 0..3 {
        let input = random_input(input_shape, seed);
        let want = tract_reference(&onnx, &input);
        let got = model.run(input.clone()).unwrap();
        let diff = max_abs_diff(&tensor_values(&got), &want);
        assert!(diff <= 1e-5, "{file}: max abs difference {diff} > 1e-5");
        // The decompressed dense ONNX runs the same too.
        let dense = decompress_bytes(&nnz).unwrap();
        let again = tract_reference(&dense, &input);
        assert!(
            max_abs_diff(&again, &want) <= 1e-5,
            "{file}: decompressed ONNX differs"
        );
    }
}

#[test]
fn lenet300_packed_matches_tract_on_onnx() {
    assert_same_outputs("models/lenet300.onnx", &[4, 1, 28, 28]);
}

#[test]
fn lenet5_packed_matches_tract_on_onnx() {
    assert_same_outputs("models/lenet5.onnx", &[2, 1, 28, 28]);
}

#[test]
fn efficientnet_packed_matches_and_classifies_photos() {
    let onnx = std::fs::read(shared("models/efficientnet_lite0.onnx")).unwrap();
    let opts = PackOptions {
        model_name: Some("efficientnet_lite0".into()),
        preprocessing: Some(Preprocessing::efficientnet_lite()),
        labels: read_labels(&shared("models/imagenet_labels.txt")).unwrap(),
        f16: false,
    };
    let nnz = pack(&onnx, &opts);
    let model = Model::from_bytes(&nnz).expect("load the .nnz");
    assert_eq!(model.metadata().labels.len(), 1000);

    let input = random_input(&[1, 3, 224, 224], 7);
    let want = tract_reference(&onnx, &input);
    let got = model.run(input).unwrap();
    // The pack is lossless; what differs is nnzip's kernels summing in another order than
    // tract's (over 50 layers): within 1e-5 of the largest logit (kernels_logits allows 1e-4).
    let diff = max_abs_diff(&tensor_values(&got), &want);
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    assert!(
        diff <= 1e-5 * scale,
        "efficientnet: max abs difference {diff} > 1e-5 of the largest logit {scale}"
    );

    let coffee = model
        .classify(&std::fs::read(shared("images/coffee.jpg")).unwrap(), 5)
        .unwrap();
    assert_eq!(coffee[0].index, 967, "coffee.jpg: {coffee:?}");
    assert_eq!(coffee[0].label, "espresso");
    assert!(coffee[0].probability > 0.8, "{coffee:?}");

    let cat = model
        .classify(&std::fs::read(shared("images/chelsea.jpg")).unwrap(), 3)
        .unwrap();
    // ImageNet's domestic cats are classes 281–285 (tabby, tiger cat, Persian, Siamese, Egyptian).
    assert!((281..=285).contains(&cat[0].index), "chelsea.jpg: {cat:?}");
    assert!(
        cat[0].label.contains("cat") || cat[0].label.contains("tabby"),
        "{cat:?}"
    );

    // Bad images are errors, not panics.
    assert!(model.classify(b"definitely not a jpeg", 5).is_err());
    assert!(model.classify_rgba(2, 2, &[0; 3], 5).is_err());
}

#[test]
fn truncated_and_corrupted_files_are_errors() {
    let onnx = std::fs::read(shared("models/lenet300.onnx")).unwrap();
    let nnz = pack(&onnx, &PackOptions::default());
    for cut in [0, 7, 8, 23, 24, 100, nnz.len() / 2, nnz.len() - 1] {
        let err = Model::from_bytes(&nnz[..cut]).expect_err("truncated file must not load");
        let msg = err.to_string();
        assert!(!msg.is_empty());
    }
    let mut flipped = nnz.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    let err = Model::from_bytes(&flipped).expect_err("flipped bit must be detected");
    assert!(err.to_string().contains("checksum"), "{err}");
}
