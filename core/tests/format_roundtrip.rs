//! Encode → decode round trips of every encoding over random shapes, densities, bit widths and
//! value distributions (proptest).

use nnzip_core::format::{
    Encoding, NnzReader, NnzWriter, TensorData, TensorRecord, round_row_scale,
};
use nnzip_core::metadata::Metadata;
use proptest::prelude::*;

fn expected(rec: &TensorRecord) -> Vec<f32> {
    let values = values_of(&rec.data);
    match &rec.row_scales {
        Some(scales) => {
            let row = values.len() / scales.len().max(1);
            values
                .iter()
                .enumerate()
                .map(|(i, v)| v * scales[i / row])
                .collect()
        }
        None => values,
    }
}

fn values_of(data: &TensorData) -> Vec<f32> {
    match data {
        TensorData::RawF32(v) => v.clone(),
        TensorData::RawF16(v) => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
        TensorData::SharedDense {
            codebook, indices, ..
        }
        | TensorData::SharedSparse {
            codebook, indices, ..
        }
        | TensorData::SharedSparseAc {
            codebook, indices, ..
        } => indices.iter().map(|&i| codebook[i as usize]).collect(),
    }
}

fn round_trip(records: Vec<TensorRecord>) {
    let mut w = NnzWriter::new(
        Metadata {
            model_name: "prop".into(),
            ..Default::default()
        },
        vec![1, 2, 3],
    );
    for r in &records {
        w.push(r.clone()).unwrap();
    }
    let bytes = w.to_bytes().unwrap();
    assert_eq!(bytes, w.to_bytes().unwrap(), "encoding is deterministic");
    let reader = NnzReader::parse(&bytes).unwrap();
    assert_eq!(reader.graph(), &[1, 2, 3]);
    assert_eq!(reader.tensors().len(), records.len());
    for (view, rec) in reader.tensors().iter().zip(&records) {
        assert_eq!(view.name, rec.name);
        assert_eq!(view.shape, rec.shape);
        let got = view.decode().unwrap();
        let want = expected(rec);
        assert_eq!(got.len(), want.len());
        for (g, e) in got.iter().zip(&want) {
            assert_eq!(g.to_bits(), e.to_bits(), "{}: {g} vs {e}", rec.name);
        }
        // Into a buffer that held something else (the runtime does not zero its buffers):
        // every element is overwritten.
        let mut dirty = vec![f32::NAN; want.len()];
        view.decode_into(&mut dirty).unwrap();
        for (g, e) in dirty.iter().zip(&want) {
            assert_eq!(g.to_bits(), e.to_bits(), "{}: {g} vs {e}", rec.name);
        }
        check_entries(view, &want);
    }
    let stats = &reader.metadata().stats.tensors;
    assert_eq!(stats.len(), records.len());
    for (s, v) in stats.iter().zip(reader.tensors()) {
        assert_eq!(s.compressed_bytes, v.record_bytes);
    }
}

/// A sparse tensor's kept weights, as the decoder hands them to the sparse kernel: exactly the
/// non-zero elements of the dense decoding, in increasing position order, and they expand to
/// that decoding bit for bit; other encodings have none.
fn check_entries(view: &nnzip_core::format::TensorView<'_>, want: &[f32]) {
    let Some(kept) = view.decode_entries().unwrap() else {
        assert!(matches!(
            view.encoding,
            Encoding::RawF32 | Encoding::RawF16 | Encoding::SharedDense
        ));
        return;
    };
    assert_eq!(kept.positions.len(), kept.indices.len());
    assert!(kept.positions.windows(2).all(|p| p[0] < p[1]));
    let non_zero: Vec<usize> = (0..want.len()).filter(|&i| want[i] != 0.0).collect();
    let positions: Vec<usize> = kept.positions.iter().map(|&p| p as usize).collect();
    assert_eq!(positions, non_zero, "{}", view.name);
    let mut dirty = vec![f32::NAN; want.len()];
    kept.expand_into(&mut dirty).unwrap();
    for (g, e) in dirty.iter().zip(want) {
        assert_eq!(g.to_bits(), e.to_bits(), "{}: {g} vs {e}", view.name);
    }
}

fn shape_strategy() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(0u64..12, 0..4)
}

/// Values from one of several distributions: uniform, Gaussian-ish, with zeros, extreme.
fn values(n: usize) -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        prop::collection::vec(-1.0f32..1.0, n),
        prop::collection::vec((-3.0f32..3.0).prop_map(|x| x * x * x * 0.01), n),
        prop::collection::vec(prop_oneof![Just(0.0f32), -1e30f32..1e30], n),
        prop::collection::vec(
            prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL | prop::num::f32::ZERO,
            n
        ),
    ]
}

/// Indices with a given density of non-zero (sparse) and codebook size.
fn indices(n: usize, k: usize, density: f64, sparse: bool) -> impl Strategy<Value = Vec<u16>> {
    prop::collection::vec((0.0f64..1.0, 0usize..k), n).prop_map(move |v| {
        v.into_iter()
            .map(|(u, i)| {
                if sparse {
                    if u < density && k > 1 {
                        1 + (i % (k - 1)) as u16
                    } else {
                        0
                    }
                } else {
                    // Skewed: low indices far more common, as after k-means.
                    ((i as f64 * u * u) as usize).min(k - 1) as u16
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn raw_tensors_round_trip(shape in shape_strategy(), f16 in any::<bool>(), seed in any::<u64>()) {
        let n = shape.iter().product::<u64>() as usize;
        let v: Vec<f32> = (0..n).map(|i| ((i as u64 ^ seed) % 1000) as f32 * 0.37 - 100.0).collect();
        let data = if f16 { TensorData::RawF16(v) } else { TensorData::RawF32(v) };
        round_trip(vec![TensorRecord { row_scales: None, name: "t".into(), shape, data }]);
    }

    #[test]
    fn shared_dense_round_trips(
        scaled in any::<bool>(),
        (shape, bits, codebook, idx) in (shape_strategy(), 1u8..=16).prop_flat_map(|(shape, bits)| {
            let n = shape.iter().product::<u64>() as usize;
            let k = (1usize << bits).min(300);
            (Just(shape), Just(bits), values(k), indices(n, k, 1.0, false))
        })
    ) {
        let codebook: Vec<f32> = codebook.into_iter().map(|x| if x.is_finite() { x } else { 0.0 }).collect();
        // Row scales (format version 4) on tensors of rank ≥ 1: binary16 values, zero included.
        let row_scales = (scaled && !shape.is_empty()).then(|| {
            (0..shape[0]).map(|r| round_row_scale((r * 7919 % 1000) as f32 * 0.013)).collect()
        });
        round_trip(vec![TensorRecord { row_scales, name: "dense".into(), shape, data: TensorData::SharedDense { codebook, indices: idx, index_bits: bits } }]);
    }

    #[test]
    fn shared_sparse_round_trips(
        (n, bits, gap_bits, density, codebook, idx) in (1usize..3000, 1u8..=16, 1u8..=16, 0.0f64..1.0).prop_flat_map(|(n, bits, gap_bits, density)| {
            let k = (1usize << bits).min(300);
            (Just(n), Just(bits), Just(gap_bits), Just(density), values(k), indices(n, k, density * density, true))
        })
    ) {
        let mut codebook: Vec<f32> = codebook.into_iter().map(|x| if x.is_finite() { x } else { 1.0 }).collect();
        codebook[0] = 0.0;
        let _ = density;
        round_trip(vec![
            TensorRecord { row_scales: None, name: "sparse".into(), shape: vec![n as u64], data: TensorData::SharedSparse { codebook: codebook.clone(), indices: idx.clone(), index_bits: bits, gap_bits } },
            TensorRecord { row_scales: None, name: "sparse-ac".into(), shape: vec![n as u64], data: TensorData::SharedSparseAc { codebook: codebook.clone(), indices: idx.clone(), index_bits: bits } },
            TensorRecord { row_scales: None, name: "bias".into(), shape: vec![2, 2], data: TensorData::RawF32(vec![1.0, -2.0, 3.5, 0.0]) },
        ]);
    }
}

#[test]
fn all_zero_and_empty_sparse_tensors() {
    for n in [0usize, 1, 7, 8, 9, 1000] {
        for gap_bits in [1u8, 3, 16] {
            let data = TensorData::SharedSparse {
                codebook: vec![0.0, 0.5],
                indices: vec![0; n],
                index_bits: 1,
                gap_bits,
            };
            round_trip(vec![TensorRecord {
                row_scales: None,
                name: "z".into(),
                shape: vec![n as u64],
                data,
            }]);
        }
        round_trip(vec![TensorRecord {
            row_scales: None,
            name: "z-ac".into(),
            shape: vec![n as u64],
            data: TensorData::SharedSparseAc {
                codebook: vec![0.0, 0.5],
                indices: vec![0; n],
                index_bits: 1,
            },
        }]);
    }
    let mut last_only = vec![0u16; 100];
    last_only[99] = 1;
    round_trip(vec![TensorRecord {
        row_scales: None,
        name: "last".into(),
        shape: vec![100],
        data: TensorData::SharedSparse {
            codebook: vec![0.0, -0.25],
            indices: last_only,
            index_bits: 1,
            gap_bits: 2,
        },
    }]);
}

#[test]
fn encoder_refuses_inconsistent_tensors() {
    let mut w = NnzWriter::default();
    let bad = |data: TensorData, shape: Vec<u64>| TensorRecord {
        row_scales: None,
        name: "w".into(),
        shape,
        data,
    };
    let cases = [
        (
            bad(TensorData::RawF32(vec![1.0; 3]), vec![2, 2]),
            "has 4 elements",
        ),
        (
            bad(
                TensorData::SharedDense {
                    codebook: vec![0.0; 5],
                    indices: vec![0; 4],
                    index_bits: 2,
                },
                vec![4],
            ),
            "codebook has 5 entries",
        ),
        (
            bad(
                TensorData::SharedDense {
                    codebook: vec![0.0; 2],
                    indices: vec![2; 4],
                    index_bits: 2,
                },
                vec![4],
            ),
            "index 2 outside",
        ),
        (
            bad(
                TensorData::SharedDense {
                    codebook: vec![0.0; 2],
                    indices: vec![0; 4],
                    index_bits: 17,
                },
                vec![4],
            ),
            "index bits must be 1–16",
        ),
        (
            bad(
                TensorData::SharedSparse {
                    codebook: vec![1.0, 2.0],
                    indices: vec![0; 4],
                    index_bits: 2,
                    gap_bits: 3,
                },
                vec![4],
            ),
            "codebook[0]",
        ),
        (
            bad(
                TensorData::SharedSparse {
                    codebook: vec![0.0, 2.0],
                    indices: vec![0; 4],
                    index_bits: 2,
                    gap_bits: 0,
                },
                vec![4],
            ),
            "gap bits must be 1–16",
        ),
        (
            bad(
                TensorData::SharedDense {
                    codebook: vec![f32::NAN],
                    indices: vec![0; 4],
                    index_bits: 2,
                },
                vec![4],
            ),
            "non-finite",
        ),
    ];
    for (rec, msg) in cases {
        let err = w.push(rec).unwrap_err().to_string();
        assert!(err.contains(msg), "{err} should contain {msg}");
    }
}

#[test]
fn files_without_range_coding_stay_version_1_and_version_1_files_cannot_use_it() {
    let write = |data: TensorData| {
        let mut w = NnzWriter::new(Metadata::default(), vec![]);
        w.push(TensorRecord {
            row_scales: None,
            name: "t".into(),
            shape: vec![6],
            data,
        })
        .unwrap();
        w.to_bytes().unwrap()
    };
    let huffman = write(TensorData::SharedSparse {
        codebook: vec![0.0, 1.0],
        indices: vec![0, 1, 0, 0, 1, 1],
        index_bits: 1,
        gap_bits: 2,
    });
    assert_eq!(u16::from_le_bytes([huffman[8], huffman[9]]), 1);
    let ac = write(TensorData::SharedSparseAc {
        codebook: vec![0.0, 1.0],
        indices: vec![0, 1, 0, 0, 1, 1],
        index_bits: 1,
    });
    assert_eq!(u16::from_le_bytes([ac[8], ac[9]]), 3);
    let decoded = |f: &[u8]| NnzReader::parse(f).unwrap().tensors()[0].decode().unwrap();
    assert_eq!(decoded(&ac), vec![0.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
    // The layout of version 2 (written by earlier builds: the metadata as plain JSON) still
    // decodes, to the same metadata and values.
    let v2 = as_version_2(&ac);
    assert_eq!(u16::from_le_bytes([v2[8], v2[9]]), 2);
    assert!(v2.len() > ac.len(), "deflated metadata should be smaller");
    assert_eq!(decoded(&v2), decoded(&ac));
    assert_eq!(
        NnzReader::parse(&v2).unwrap().metadata(),
        NnzReader::parse(&ac).unwrap().metadata()
    );
    // The same bytes labelled version 1 (checksum still valid: it covers the body only) are refused.
    let mut v1 = v2.clone();
    v1[8] = 1;
    let err = NnzReader::parse(&v1).unwrap_err().to_string();
    assert!(err.contains("needs format version 2"), "{err}");
}

/// A version-3 file rewritten in version 2's layout: metadata as `u32 len, JSON`.
fn as_version_2(v3: &[u8]) -> Vec<u8> {
    let body = &v3[24..];
    assert_eq!(body[0], 1, "zlib metadata");
    let stored = u64::from_le_bytes(body[9..17].try_into().unwrap()) as usize;
    let json = miniz_oxide::inflate::decompress_to_vec_zlib(&body[17..17 + stored]).unwrap();
    let mut new_body = (json.len() as u32).to_le_bytes().to_vec();
    new_body.extend_from_slice(&json);
    new_body.extend_from_slice(&body[17 + stored..]);
    let mut f = v3[..24].to_vec();
    f[8..10].copy_from_slice(&2u16.to_le_bytes());
    f[12..16].copy_from_slice(&crc32fast::hash(&new_body).to_le_bytes());
    f[16..24].copy_from_slice(&(new_body.len() as u64).to_le_bytes());
    f.extend_from_slice(&new_body);
    f
}
