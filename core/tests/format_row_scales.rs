//! Row-scaled shared tensors (format version 4): exact round trips for every shared encoding,
//! the record size, the version written, and hostile variants that must fail cleanly.

use nnzip_core::NnzError;
use nnzip_core::format::decode::HEADER_BYTES;
use nnzip_core::format::{
    NnzReader, NnzWriter, ROW_SCALED, TensorData, TensorRecord, round_row_scale,
};
use nnzip_core::metadata::Metadata;

const ROWS: usize = 6;
const COLS: usize = 35;

fn scales() -> Vec<f32> {
    // Orders of magnitude apart, as BatchNorm folding leaves them; one dead row.
    [2.5, 0.01, 0.3, 0.0, 7.0, 1e-4]
        .iter()
        .map(|&s| round_row_scale(s))
        .collect()
}

fn indices(k: u16) -> Vec<u16> {
    (0..ROWS * COLS)
        .map(|i| {
            if i % 4 == 1 {
                0
            } else {
                (i * 7 % k as usize) as u16
            }
        })
        .collect()
}

fn records() -> Vec<TensorRecord> {
    let codebook = vec![0.0, -1.0, -0.25, 0.5, 1.0];
    let shape = vec![ROWS as u64, COLS as u64];
    let data = [
        TensorData::SharedDense {
            codebook: codebook.clone(),
            indices: indices(5),
            index_bits: 3,
        },
        TensorData::SharedSparse {
            codebook: codebook.clone(),
            indices: indices(5),
            index_bits: 3,
            gap_bits: 2,
        },
        TensorData::SharedSparseAc {
            codebook: codebook.clone(),
            indices: indices(5),
            index_bits: 3,
        },
    ];
    data.into_iter()
        .enumerate()
        .map(|(i, data)| TensorRecord {
            name: format!("t{i}"),
            shape: shape.clone(),
            data,
            row_scales: Some(scales()),
        })
        .collect()
}

fn file(records: Vec<TensorRecord>) -> Vec<u8> {
    let mut w = NnzWriter::new(Metadata::default(), b"graph".to_vec());
    for r in records {
        w.push(r).unwrap();
    }
    w.to_bytes().unwrap()
}

fn fix_checksum(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[HEADER_BYTES..]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
}

fn decode_all(bytes: &[u8]) -> Result<Vec<Vec<f32>>, NnzError> {
    let r = NnzReader::parse(bytes)?;
    r.tensors().iter().map(|t| t.decode()).collect()
}

#[test]
fn every_shared_encoding_round_trips_with_row_scales() {
    let recs = records();
    let bytes = file(recs.clone());
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 4, "version 4");
    let reader = NnzReader::parse(&bytes).unwrap();
    let codebook = [0.0f32, -1.0, -0.25, 0.5, 1.0];
    let s = scales();
    for (t, rec) in reader.tensors().iter().zip(&recs) {
        assert_eq!(t.row_scales.as_ref(), Some(&s), "{}", t.name);
        let got = t.decode().unwrap();
        let want: Vec<f32> = indices(5)
            .iter()
            .enumerate()
            .map(|(i, &x)| codebook[x as usize] * s[i / COLS])
            .collect();
        assert_eq!(got, want, "{}", rec.name);
        // The sparse kernel's entries: the non-zero elements, row scales kept beside them.
        if let Some(kept) = t.decode_entries().unwrap() {
            assert_eq!(kept.row_scales.as_ref(), Some(&s));
            let mut expanded = vec![f32::NAN; got.len()];
            kept.expand_into(&mut expanded).unwrap();
            assert_eq!(expanded, want, "{}", rec.name);
            let non_zero = want.iter().filter(|v| **v != 0.0).count();
            assert_eq!(kept.positions.len(), non_zero, "{}", rec.name);
        }
        // The record is the unscaled one plus `u32 rows` and a binary16 per row.
        let plain = TensorRecord {
            row_scales: None,
            ..rec.clone()
        };
        let plain_bytes = file(vec![plain]);
        let plain_reader = NnzReader::parse(&plain_bytes).unwrap();
        assert_eq!(
            t.record_bytes,
            plain_reader.tensors()[0].record_bytes + 4 + 2 * ROWS as u64
        );
        let stats = &reader.metadata().stats.tensors;
        let st = stats.iter().find(|st| st.name == rec.name).unwrap();
        assert_eq!(st.row_scales, ROWS as u64);
        assert_eq!(st.compressed_bytes, t.record_bytes);
    }
    // Without row scales the same tensors stay readable by older decoders.
    let plain: Vec<TensorRecord> = recs
        .into_iter()
        .map(|r| TensorRecord {
            row_scales: None,
            ..r
        })
        .collect();
    let v = file(plain);
    assert_eq!(u16::from_le_bytes([v[8], v[9]]), 3);
}

#[test]
fn the_encoder_refuses_bad_row_scales() {
    let base = records().remove(0);
    let cases: Vec<(Option<Vec<f32>>, TensorData, &str)> = vec![
        (Some(vec![1.0; ROWS - 1]), base.data.clone(), "5 row scales"),
        (
            Some(vec![0.1; ROWS]),
            base.data.clone(),
            "not a finite, non-negative binary16",
        ),
        (
            Some(vec![-1.0; ROWS]),
            base.data.clone(),
            "not a finite, non-negative binary16",
        ),
        (
            Some(vec![f32::INFINITY; ROWS]),
            base.data.clone(),
            "not a finite",
        ),
        (
            Some(vec![1.0; ROWS]),
            TensorData::RawF32(vec![0.0; ROWS * COLS]),
            "shared encodings only",
        ),
    ];
    for (row_scales, data, want) in cases {
        let mut w = NnzWriter::new(Metadata::default(), vec![]);
        let err = w
            .push(TensorRecord {
                row_scales,
                data,
                ..base.clone()
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err} (wanted '{want}')");
    }
}

/// Byte offset of the first record's encoding byte and of its payload.
fn first_record(bytes: &[u8]) -> (usize, usize) {
    let r = NnzReader::parse(bytes).unwrap();
    let t = &r.tensors()[0];
    let at = t.offset as usize + 2 + t.name.len();
    let payload = at + 2 + 8 * t.shape.len() + 8;
    (at, payload)
}

#[test]
fn hostile_row_scales_are_typed_errors() {
    let good = file(records());
    let (enc_at, payload_at) = first_record(&good);

    // The flag in a version-3 file.
    let mut f = good.clone();
    f[8] = 3;
    fix_checksum(&mut f);
    let err = decode_all(&f).unwrap_err().to_string();
    assert!(err.contains("row scales need format version 4"), "{err}");

    // The flag on a raw tensor.
    let mut f = good.clone();
    f[enc_at] = ROW_SCALED;
    fix_checksum(&mut f);
    let err = decode_all(&f).unwrap_err().to_string();
    assert!(err.contains("row scales on a raw-f32 tensor"), "{err}");

    // A row count other than the first dimension.
    let mut f = good.clone();
    f[payload_at..payload_at + 4].copy_from_slice(&(ROWS as u32 + 1).to_le_bytes());
    fix_checksum(&mut f);
    let err = decode_all(&f).unwrap_err().to_string();
    assert!(err.contains("7 row scales for shape [6, 35]"), "{err}");

    // A NaN, an infinite and a negative scale.
    for bits in [0x7e00u16, 0x7c00, 0xbc00] {
        let mut f = good.clone();
        f[payload_at + 4..payload_at + 6].copy_from_slice(&bits.to_le_bytes());
        fix_checksum(&mut f);
        let err = decode_all(&f).unwrap_err().to_string();
        assert!(err.contains("is not finite and non-negative"), "{err}");
    }

    // An unknown encoding under the flag.
    let mut f = good.clone();
    f[enc_at] = ROW_SCALED | 9;
    fix_checksum(&mut f);
    let err = decode_all(&f).unwrap_err().to_string();
    assert!(err.contains("unknown encoding 137"), "{err}");
}

#[test]
fn every_truncation_and_corruption_of_a_scaled_file_fails_cleanly() {
    let good = file(records());
    for len in 0..good.len() {
        assert!(decode_all(&good[..len]).is_err(), "truncated at {len}");
    }
    // Every byte of the body set to a few values, with the checksum fixed: errors or values,
    // never a panic.
    for at in HEADER_BYTES..good.len() {
        for v in [0u8, 0x7f, 0x80, 0xff] {
            let mut f = good.clone();
            f[at] = v;
            fix_checksum(&mut f);
            let _ = decode_all(&f);
        }
    }
}
