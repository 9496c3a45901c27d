//! Hostile and broken files: every one is a typed error, never a panic, never a huge allocation.

use nnzip_core::NnzError;
use nnzip_core::format::decode::{HEADER_BYTES, decode_payload};
use nnzip_core::format::{Encoding, NnzReader, NnzWriter, TensorData, TensorRecord};
use nnzip_core::metadata::Metadata;
use rand::{Rng, SeedableRng};

fn sample_file() -> Vec<u8> {
    let mut w = NnzWriter::new(
        Metadata {
            model_name: "tiny".into(),
            labels: vec!["a".into(), "b".into()],
            ..Default::default()
        },
        b"graph bytes".to_vec(),
    );
    let idx: Vec<u16> = (0..200)
        .map(|i| if i % 5 == 0 { 1 + (i % 3) as u16 } else { 0 })
        .collect();
    w.push(TensorRecord {
        row_scales: None,
        name: "w1".into(),
        shape: vec![10, 20],
        data: TensorData::SharedSparse {
            codebook: vec![0.0, 0.5, -0.5, 1.0],
            indices: idx,
            index_bits: 2,
            gap_bits: 2,
        },
    })
    .unwrap();
    w.push(TensorRecord {
        row_scales: None,
        name: "w2".into(),
        shape: vec![30],
        data: TensorData::SharedDense {
            codebook: vec![0.1, 0.2, 0.3],
            indices: (0..30).map(|i| (i % 3) as u16).collect(),
            index_bits: 2,
        },
    })
    .unwrap();
    w.push(TensorRecord {
        row_scales: None,
        name: "b".into(),
        shape: vec![4],
        data: TensorData::RawF32(vec![1.0, 2.0, 3.0, 4.0]),
    })
    .unwrap();
    w.push(TensorRecord {
        row_scales: None,
        name: "h".into(),
        shape: vec![3],
        data: TensorData::RawF16(vec![1.0, 2.0, 3.0]),
    })
    .unwrap();
    w.to_bytes().unwrap()
}

fn decode_all(bytes: &[u8]) -> Result<(), NnzError> {
    let r = NnzReader::parse(bytes)?;
    for t in r.tensors() {
        t.decode()?;
    }
    Ok(())
}

fn fix_checksum(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[HEADER_BYTES..]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn the_sample_decodes() {
    decode_all(&sample_file()).unwrap();
}

#[test]
fn every_truncation_is_an_error() {
    let file = sample_file();
    for cut in 0..file.len() {
        let err = decode_all(&file[..cut]).expect_err("a truncated file must not decode");
        if cut >= HEADER_BYTES {
            assert!(
                matches!(err, NnzError::Truncated { .. }),
                "cut at {cut}: {err}"
            );
            assert!(
                err.to_string()
                    .starts_with(&format!("truncated at byte {cut}")),
                "{err}"
            );
        }
    }
}

#[test]
fn every_bit_flip_is_detected() {
    let file = sample_file();
    for byte in 0..file.len() {
        for bit in 0..8 {
            let mut f = file.clone();
            f[byte] ^= 1 << bit;
            assert!(
                decode_all(&f).is_err(),
                "flip of bit {bit} of byte {byte} went unnoticed"
            );
        }
    }
}

#[test]
fn corrupted_bodies_with_valid_checksums_never_panic() {
    // A malicious file can carry a correct checksum: the structure checks must hold on their own.
    let file = sample_file();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut decoded_ok = 0;
    for _ in 0..20_000 {
        let mut f = file.clone();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(HEADER_BYTES..f.len());
            f[i] = rng.random();
        }
        fix_checksum(&mut f);
        if decode_all(&f).is_ok() {
            decoded_ok += 1; // e.g. a changed weight value: valid, just different
        }
    }
    println!("{decoded_ok} of 20000 mutated files still decoded (value changes)");
}

#[test]
fn huge_declared_tensor_is_refused_before_allocating() {
    // A tensor that declares 10^12 elements with 40 kB of data.
    let mut w = NnzWriter::default();
    w.push(TensorRecord {
        row_scales: None,
        name: "fc1.weight".into(),
        shape: vec![10_000],
        data: TensorData::RawF32(vec![0.5; 10_000]),
    })
    .unwrap();
    let mut f = w.to_bytes().unwrap();
    // The record (not the metadata, which also names the tensor): its last occurrence.
    let dims_at = f.windows(10).rposition(|x| x == b"fc1.weight").unwrap() + 10 + 2;
    f[dims_at..dims_at + 8].copy_from_slice(&1_000_000_000_000u64.to_le_bytes());
    fix_checksum(&mut f);
    let err = NnzReader::parse(&f).unwrap_err().to_string();
    assert!(
        err.contains("fc1.weight") && err.contains("1000000000000"),
        "{err}"
    );
    // Under the element limit but over what the bytes justify.
    f[dims_at..dims_at + 8].copy_from_slice(&20_000u64.to_le_bytes());
    fix_checksum(&mut f);
    let err = NnzReader::parse(&f).unwrap_err().to_string();
    assert!(err.contains("tensor 'fc1.weight': declares 20000 elements, raw-f32 needs 80000 bytes, the file has 40000"), "{err}");
}

#[test]
fn an_empty_tensor_with_a_huge_dimension_is_refused() {
    // `[10^10, 0]` holds no element, so no element count refuses it; kernels and tract size
    // their tables by each dimension (the phone-path fuzzer's two finds).
    let mut w = NnzWriter::default();
    w.push(TensorRecord {
        row_scales: None,
        name: "fc1.weight".into(),
        shape: vec![3, 0],
        data: TensorData::RawF32(vec![]),
    })
    .unwrap();
    let mut f = w.to_bytes().unwrap();
    let dims_at = f.windows(10).rposition(|x| x == b"fc1.weight").unwrap() + 10 + 2;
    assert_eq!(
        f[dims_at..dims_at + 8],
        3u64.to_le_bytes(),
        "the first dimension's place"
    );
    f[dims_at..dims_at + 8].copy_from_slice(&10_000_000_000u64.to_le_bytes());
    fix_checksum(&mut f);
    let err = NnzReader::parse(&f).unwrap_err().to_string();
    assert!(
        err.contains("fc1.weight") && err.contains("dimension of 10000000000"),
        "{err}"
    );
}

#[test]
fn versions_magic_and_flags() {
    let mut f = sample_file();
    f[8] = 5;
    assert_eq!(
        decode_all(&f).unwrap_err().to_string(),
        "unsupported format version 5, this build reads versions 1 to 4: update nnzip"
    );
    let err = decode_all(b"PK\x03\x04 a zip file").unwrap_err();
    assert!(matches!(err, NnzError::NotNnz), "{err}");
    let err = decode_all(&[]).unwrap_err();
    assert!(matches!(err, NnzError::Truncated { .. }), "{err}");
    let mut f = sample_file();
    f[10] = 1;
    assert!(decode_all(&f).unwrap_err().to_string().contains("flags"));
    let mut f = sample_file();
    f.push(0);
    assert!(decode_all(&f).unwrap_err().to_string().contains("trailing"));
    let mut f = sample_file();
    let last = f.len() - 1;
    f[last] ^= 4;
    assert!(
        decode_all(&f)
            .unwrap_err()
            .to_string()
            .starts_with("checksum mismatch")
    );
}

#[test]
fn bad_huffman_tables_and_streams() {
    // shared-dense payload by hand: 2-bit indices, k = 3, over-subscribed lengths [1, 1, 1].
    let mut p = vec![2u8];
    p.extend_from_slice(&3u32.to_le_bytes());
    for v in [0.1f32, 0.2, 0.3] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    let head = p.clone();
    p.extend_from_slice(&3u32.to_le_bytes());
    p.extend_from_slice(&[1, 1, 1]);
    p.extend_from_slice(&1u64.to_le_bytes());
    p.push(0);
    let mut out = vec![0f32; 4];
    let err = decode_payload("w", Encoding::SharedDense, &p, &mut out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Huffman table over-subscribed"), "{err}");
    // Valid table [1, 2, 2] but a stream too short for the 4 codes declared.
    let mut p = head.clone();
    p.extend_from_slice(&3u32.to_le_bytes());
    p.extend_from_slice(&[1, 2, 2]);
    p.extend_from_slice(&1u64.to_le_bytes());
    p.push(0b1111_1111);
    let mut out = vec![0f32; 5];
    let err = decode_payload("w", Encoding::SharedDense, &p, &mut out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ends before"), "{err}");
}

#[test]
fn random_payloads_never_panic() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for _ in 0..20_000 {
        let len = rng.random_range(0..64);
        let p: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let enc = Encoding::from_byte(rng.random_range(0..4)).unwrap();
        let mut out = vec![0f32; rng.random_range(0..40)];
        let _ = decode_payload("fuzz", enc, &p, &mut out);
    }
}

/// A file with one range-coded (`shared-sparse-ac`) tensor.
fn ac_file() -> Vec<u8> {
    let mut w = NnzWriter::new(Metadata::default(), b"g".to_vec());
    let idx: Vec<u16> = (0..5000)
        .map(|i| if i % 37 == 0 { 1 + (i % 7) as u16 } else { 0 })
        .collect();
    w.push(TensorRecord {
        row_scales: None,
        name: "ac".into(),
        shape: vec![50, 100],
        data: TensorData::SharedSparseAc {
            codebook: vec![0.0, 0.1, -0.1, 0.2, -0.2, 0.3, -0.3, 0.4],
            indices: idx,
            index_bits: 3,
        },
    })
    .unwrap();
    w.to_bytes().unwrap()
}

#[test]
fn range_coded_tensors_survive_every_corruption_without_panicking() {
    let file = ac_file();
    decode_all(&file).unwrap();
    // Every truncation is an error.
    for cut in 0..file.len() {
        assert!(decode_all(&file[..cut]).is_err(), "cut at {cut} decoded");
    }
    // Flipped bits anywhere in the body (checksum fixed so the decoder sees them): an error or a
    // tensor of the declared size, never a panic, never a hang.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..3000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut f = file.clone();
        let at = HEADER_BYTES + (state as usize % (f.len() - HEADER_BYTES));
        f[at] ^= 1 << ((state >> 32) % 8);
        fix_checksum(&mut f);
        if let Ok(r) = NnzReader::parse(&f) {
            for t in r.tensors() {
                if let Ok(v) = t.decode() {
                    assert_eq!(v.len(), t.element_count());
                }
            }
        }
    }
    // An entry count the stream cannot hold is refused before decoding.
    let mut f = file.clone();
    let m_at = f.windows(2).rposition(|x| x == b"ac").unwrap() + 2 + 1 + 1 + 16 + 8 + 1 + 4 + 32;
    f[m_at..m_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    fix_checksum(&mut f);
    let err = decode_all(&f).unwrap_err().to_string();
    assert!(err.contains("entries"), "{err}");
}
