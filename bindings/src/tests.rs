//! Facade tests: error mapping, loading real packed models, info, classification, threads.

use super::*;
use std::path::PathBuf;
use std::sync::OnceLock;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

/// LeNet-300-100 packed losslessly (small: fast to build for every test run).
fn lenet_nnz() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let onnx = std::fs::read(shared().join("models/lenet300.onnx")).expect("lenet300.onnx");
        let opts = nnzip_tools::packing::PackOptions {
            model_name: Some("lenet300".into()),
            preprocessing: Some(nnzip_core::Preprocessing::mnist()),
            labels: (0..10).map(|i| format!("digit {i}")).collect(),
            f16: false,
        };
        nnzip_tools::packing::pack_onnx(&onnx, &opts)
            .expect("pack")
            .to_bytes()
            .expect("bytes")
    })
}

/// LeNet-5 (trained on Fashion-MNIST, 91.8% test accuracy) packed losslessly with the class names.
fn lenet5() -> Arc<Classifier> {
    let onnx = std::fs::read(shared().join("models/lenet5.onnx")).expect("lenet5.onnx");
    let opts = nnzip_tools::packing::PackOptions {
        model_name: Some("lenet5".into()),
        preprocessing: Some(nnzip_core::Preprocessing::mnist()),
        labels: nnzip_tools::data::FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        f16: false,
    };
    let bytes = nnzip_tools::packing::pack_onnx(&onnx, &opts)
        .expect("pack")
        .to_bytes()
        .expect("bytes");
    Classifier::from_bytes(bytes).expect("load")
}

/// EfficientNet-Lite0 packed losslessly with the ImageNet labels.
fn efficientnet() -> &'static Arc<Classifier> {
    static C: OnceLock<Arc<Classifier>> = OnceLock::new();
    C.get_or_init(|| {
        let onnx =
            std::fs::read(shared().join("models/efficientnet_lite0.onnx")).expect("onnx file");
        let opts = nnzip_tools::packing::PackOptions {
            model_name: Some("efficientnet_lite0".into()),
            preprocessing: Some(nnzip_core::Preprocessing::efficientnet_lite()),
            labels: nnzip_tools::packing::read_labels(&shared().join("models/imagenet_labels.txt"))
                .expect("labels"),
            f16: false,
        };
        let bytes = nnzip_tools::packing::pack_onnx(&onnx, &opts)
            .expect("pack")
            .to_bytes()
            .expect("bytes");
        Classifier::from_bytes(bytes).expect("load")
    })
}

/// A core error and the check its binding variant must pass.
type MappingCase = (NnzError, fn(&NnzipError) -> bool);

#[test]
fn every_core_error_maps_to_a_named_variant_and_keeps_its_message() {
    let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
    let cases: Vec<MappingCase> = vec![
        (NnzError::NotNnz, |e| matches!(e, NnzipError::BadFile(_))),
        (
            NnzError::UnsupportedVersion {
                found: 9,
                supported: 1,
            },
            |e| matches!(e, NnzipError::UnsupportedVersion(_)),
        ),
        (
            NnzError::Truncated {
                at: 10,
                what: "header".into(),
                needed: 4,
            },
            |e| matches!(e, NnzipError::BadFile(_)),
        ),
        (
            NnzError::ChecksumMismatch {
                expected: 1,
                actual: 2,
            },
            |e| matches!(e, NnzipError::BadFile(_)),
        ),
        (NnzError::Malformed("x".into()), |e| {
            matches!(e, NnzipError::BadFile(_))
        }),
        (
            NnzError::BadTensor {
                name: "w".into(),
                reason: "r".into(),
            },
            |e| matches!(e, NnzipError::BadFile(_)),
        ),
        (NnzError::LimitExceeded("big".into()), |e| {
            matches!(e, NnzipError::BadFile(_))
        }),
        (NnzError::InvalidInput("bad".into()), |e| {
            matches!(e, NnzipError::Internal(_))
        }),
        (NnzError::Model("tract".into()), |e| {
            matches!(e, NnzipError::Internal(_))
        }),
        (
            NnzError::Image("cannot decode the image: eof".into()),
            |e| matches!(e, NnzipError::BadImage(_)),
        ),
        (
            NnzError::WrongPixelCount("wrong pixel count: 2×2 RGBA needs 16 bytes, got 3".into()),
            |e| matches!(e, NnzipError::WrongPixelCount(_)),
        ),
        (
            NnzError::Io {
                path: "/nope.nnz".into(),
                source: io(),
            },
            |e| matches!(e, NnzipError::Io(_)),
        ),
    ];
    for (core, check) in cases {
        let message = core.to_string();
        let mapped = NnzipError::from(core);
        assert!(check(&mapped), "{message} mapped to {mapped:?}");
        assert_eq!(mapped.to_string(), message, "message kept");
    }
}

#[test]
fn garbage_truncated_and_missing_files_are_errors() {
    let garbage = Classifier::from_bytes(b"definitely not a model".to_vec()).unwrap_err();
    assert!(matches!(garbage, NnzipError::BadFile(_)), "{garbage:?}");
    assert!(garbage.to_string().contains("nnzip pack"), "{garbage}");

    let bytes = lenet_nnz();
    for cut in [0, 7, 16, bytes.len() / 2, bytes.len() - 1] {
        let e = Classifier::from_bytes(bytes[..cut].to_vec()).unwrap_err();
        assert!(matches!(e, NnzipError::BadFile(_)), "cut at {cut}: {e:?}");
    }

    let e = Classifier::from_path("/definitely/not/here.nnz".into()).unwrap_err();
    assert!(matches!(e, NnzipError::Io(_)), "{e:?}");
    assert!(e.to_string().contains("/definitely/not/here.nnz"), "{e}");
}

#[test]
fn lenet_info_and_pixels() {
    let c = Classifier::from_bytes(lenet_nnz().to_vec()).expect("load");
    let info = c.info();
    assert_eq!(info.name, "lenet300");
    assert_eq!((info.input_width, info.input_height), (28, 28));
    assert_eq!(info.labels.len(), 10);
    assert_eq!(info.file_bytes, lenet_nnz().len() as u64);
    // 266,610 float32 parameters, stored raw.
    assert_eq!(info.dense_bytes, 266_610 * 4);
    assert_eq!(info.tensors.len(), 6);
    assert!(info.tensors.iter().all(|t| t.encoding == "raw-f32"));
    assert!(info.compression_ratio > 0.9 && info.compression_ratio <= 1.0);

    let rgba = vec![255u8; 28 * 28 * 4];
    let top = c
        .classify_pixels(28, 28, rgba.clone(), 3)
        .expect("classify");
    assert_eq!(top.len(), 3);
    assert!(top[0].probability >= top[1].probability);
    assert!(top.iter().all(|p| p.label.starts_with("digit ")));

    let e = c
        .classify_pixels(28, 28, rgba[..100].to_vec(), 3)
        .unwrap_err();
    assert!(matches!(e, NnzipError::WrongPixelCount(_)), "{e:?}");
    assert!(e.to_string().contains("3136 bytes, got 100"), "{e}");
    let e = c.classify_pixels(0, 0, Vec::new(), 3).unwrap_err();
    assert!(matches!(e, NnzipError::WrongPixelCount(_)), "{e:?}");

    let e = c.classify(b"GIF89a not really".to_vec(), 3).unwrap_err();
    assert!(matches!(e, NnzipError::BadImage(_)), "{e:?}");
}

#[test]
fn efficientnet_classifies_coffee_as_espresso_and_describes_itself() {
    let c = efficientnet();
    let jpeg = std::fs::read(shared().join("images/coffee.jpg")).expect("coffee.jpg");
    let top = c.classify(jpeg, 5).expect("classify");
    assert_eq!(top.len(), 5);
    assert_eq!((top[0].index, top[0].label.as_str()), (967, "espresso"));
    assert!(top[0].probability > 0.9, "{top:?}");

    let info = c.info();
    assert_eq!(info.name, "efficientnet_lite0");
    assert_eq!((info.input_width, info.input_height), (224, 224));
    assert_eq!(info.labels.len(), 1000);
    // The stored weights as float32: the sum over the tensors, about 4.6 M parameters.
    assert_eq!(
        info.dense_bytes,
        info.tensors.iter().map(|t| t.dense_bytes).sum::<u64>()
    );
    assert!(
        (18_000_000..19_000_000).contains(&info.dense_bytes),
        "{}",
        info.dense_bytes
    );
    assert!(info.source_onnx_bytes > 0);
}

#[test]
fn lenet5_classifies_fashion_mnist_test_images_given_as_rgba() {
    let dir = nnzip_tools::data::fashion_mnist_dir();
    let images = nnzip_tools::data::idx::read_idx(&dir.join("t10k-images-idx3-ubyte.gz"))
        .expect("Fashion-MNIST test images (apt-get install dataset-fashion-mnist)");
    let labels = nnzip_tools::data::idx::read_idx(&dir.join("t10k-labels-idx1-ubyte.gz"))
        .expect("Fashion-MNIST test labels");
    let c = lenet5();
    let n = 100;
    let mut correct = 0;
    for (i, gray) in images.data.chunks_exact(28 * 28).take(n).enumerate() {
        // Grey pixels as an opaque RGBA frame, as an Android Bitmap would hand them over.
        let rgba: Vec<u8> = gray.iter().flat_map(|&g| [g, g, g, 255]).collect();
        let top = c.classify_pixels(28, 28, rgba, 1).expect("classify");
        if top[0].index == u32::from(labels.data[i]) {
            correct += 1;
        }
    }
    // The model scores 91.8% on the whole test set; 100 images leave room for sampling noise.
    assert!(correct >= 85, "{correct}/{n} correct");
    let first: Vec<u8> = images.data[..28 * 28]
        .iter()
        .flat_map(|&g| [g, g, g, 255])
        .collect();
    let top = c.classify_pixels(28, 28, first, 1).expect("classify");
    // Test image 0 is an ankle boot.
    assert_eq!(labels.data[0], 9);
    assert_eq!(top[0].label, "Ankle boot", "{top:?}");
}

#[test]
fn one_classifier_many_threads_same_answer() {
    let c = Classifier::from_bytes(lenet_nnz().to_vec()).expect("load");
    let mut rgba = vec![0u8; 28 * 28 * 4];
    for (i, b) in rgba.iter_mut().enumerate() {
        *b = (i * 7 % 256) as u8;
    }
    let expected = c
        .classify_pixels(28, 28, rgba.clone(), 5)
        .expect("classify");
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let c = Arc::clone(&c);
            let rgba = rgba.clone();
            std::thread::spawn(move || {
                (0..20)
                    .map(|_| {
                        c.classify_pixels(28, 28, rgba.clone(), 5)
                            .expect("classify")
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for got in h.join().expect("thread") {
            assert_eq!(got, expected);
        }
    }
}
