//! The one-shot pipeline (prune + share + Huffman, no retraining yet) on the real LeNet-300-100:
//! the structure holds exactly, and the decoded model is measured in the core runtime.

use nnzip_core::Model;
use nnzip_core::format::NnzReader;
use nnzip_tools::accuracy::evaluate;
use nnzip_tools::compress::pipeline::{CompressConfig, PruneRule, compress_weights};
use nnzip_tools::data::{Split, fashion_mnist_dir, load_fashion_mnist};
use nnzip_tools::packing::pack_onnx;
use std::path::PathBuf;

fn lenet300() -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/lenet300.onnx"),
    )
    .expect("../shared/models/lenet300.onnx")
}

#[test]
fn paper_densities_hold_exactly_and_decode_to_the_shared_values() {
    let onnx = lenet300();
    let mut writer = pack_onnx(&onnx, &Default::default()).unwrap();
    let weights: Vec<_> = writer
        .tensors
        .drain(..)
        .map(|t| match t.data {
            nnzip_core::format::TensorData::RawF32(values) => nnzip_core::graph::Weight {
                name: t.name,
                shape: t.shape,
                values,
            },
            _ => unreachable!("pack stores raw f32"),
        })
        .collect();
    let cfg = CompressConfig {
        per_layer: CompressConfig::paper_densities("lenet300").unwrap(),
        bits_fc: 6,
        ..Default::default()
    };
    let (records, reports) = compress_weights(&weights, &cfg).unwrap();
    for r in records.iter().cloned() {
        writer.push(r).unwrap();
    }
    let bytes = writer.to_bytes().unwrap();
    let reader = NnzReader::parse(&bytes).unwrap();
    for (rec, view) in records.iter().zip(reader.tensors()) {
        let decoded = view.decode().unwrap();
        match &rec.data {
            nnzip_core::format::TensorData::SharedSparse {
                codebook,
                indices,
                index_bits,
                ..
            }
            | nnzip_core::format::TensorData::SharedSparseAc {
                codebook,
                indices,
                index_bits,
            }
            | nnzip_core::format::TensorData::SharedDense {
                codebook,
                indices,
                index_bits,
            } => {
                assert!(
                    codebook.len() <= 1 << index_bits,
                    "{}: codebook of {}",
                    rec.name,
                    codebook.len()
                );
                for (d, &i) in decoded.iter().zip(indices) {
                    assert_eq!(d.to_bits(), codebook[i as usize].to_bits(), "{}", rec.name);
                }
                let PruneRule::Density(want) = cfg.per_layer[&rec.name] else {
                    unreachable!()
                };
                let kept =
                    decoded.iter().filter(|&&x| x != 0.0).count() as f64 / decoded.len() as f64;
                assert!(
                    (kept - want).abs() < 0.005,
                    "{}: kept {kept}, asked {want}",
                    rec.name
                );
            }
            nnzip_core::format::TensorData::RawF32(v) => assert_eq!(&decoded, v),
            nnzip_core::format::TensorData::RawF16(_) => unreachable!(),
        }
        let st = reports.iter().find(|r| r.name == rec.name).unwrap();
        assert!(st.stored_bytes <= st.dense_bytes);
    }
    let ratio = onnx.len() as f64 / bytes.len() as f64;
    assert!(ratio > 25.0, "ratio {ratio}");

    let set = load_fashion_mnist(&fashion_mnist_dir(), Split::Test)
        .expect("Fashion-MNIST missing: scripts/test.sh installs dataset-fashion-mnist")
        .truncate(2000);
    let acc = evaluate(&Model::from_bytes(&bytes).unwrap(), &set, 500, false)
        .unwrap()
        .accuracy;
    // Without retraining the paper's densities cost accuracy, but far from chance (10%).
    assert!(acc > 0.5, "accuracy {acc}");
}

#[test]
fn bad_settings_fail_before_any_work() {
    let w = vec![nnzip_core::graph::Weight {
        name: "fc.weight".into(),
        shape: vec![64, 64],
        values: vec![0.5; 4096],
    }];
    let cases: Vec<(CompressConfig, &str)> = vec![
        (
            CompressConfig {
                bits_fc: 0,
                ..Default::default()
            },
            "--bits-fc must be between 1 and 16",
        ),
        (
            CompressConfig {
                gap_bits: 17,
                ..Default::default()
            },
            "--gap-bits must be between 1 and 16",
        ),
        (
            CompressConfig {
                default_rule: PruneRule::Density(1.5),
                ..Default::default()
            },
            "must be in (0, 1]",
        ),
        (
            CompressConfig {
                per_layer: [("nope".to_string(), PruneRule::Density(0.5))].into(),
                ..Default::default()
            },
            "no weight named 'nope'",
        ),
    ];
    for (cfg, msg) in cases {
        let err = compress_weights(&w, &cfg).unwrap_err().to_string();
        assert!(err.contains(msg), "{err} should contain {msg}");
    }
    let tiny = vec![nnzip_core::graph::Weight {
        name: "b".into(),
        shape: vec![10],
        values: vec![0.5; 10],
    }];
    let err = compress_weights(&tiny, &CompressConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no prunable tensor"), "{err}");
}
