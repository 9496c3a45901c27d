//! The paper's layout, hand-built: random weights pruned to 8%, 5-bit indices, 5-bit gaps. It
//! round-trips exactly and its size is the formula of docs/FORMAT.md §3, computed here from the
//! symbol counts and the code lengths.

use nnzip_core::format::encode::{encode_tensor, sparse_entries};
use nnzip_core::format::huffman::{HuffmanTable, MAX_CODE_LEN};
use nnzip_core::format::{NnzReader, NnzWriter, TensorData, TensorRecord};
use rand::{Rng, SeedableRng};

#[test]
fn pruned_8_percent_5_bit_tensor_matches_the_size_formula() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let (rows, cols) = (300usize, 784usize);
    let n = rows * cols;
    // Gaussian weights (Box–Muller), keep the 8% largest magnitudes.
    let w: Vec<f32> = (0..n)
        .map(|_| {
            let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos() * 0.05) as f32
        })
        .collect();
    let mut mags: Vec<f32> = w.iter().map(|x| x.abs()).collect();
    mags.sort_by(|a, b| b.total_cmp(a));
    let threshold = mags[(n as f64 * 0.08) as usize];
    // Codebook: 0.0 plus 31 values spread over the surviving range.
    let max = mags[0];
    let codebook: Vec<f32> = std::iter::once(0.0)
        .chain((0..31).map(|i| -max + 2.0 * max * i as f32 / 30.0))
        .collect();
    let indices: Vec<u16> = w
        .iter()
        .map(|&x| {
            if x.abs() <= threshold {
                0
            } else {
                (1..32)
                    .min_by(|&a, &b| (codebook[a] - x).abs().total_cmp(&(codebook[b] - x).abs()))
                    .unwrap_or(1) as u16
            }
        })
        .collect();
    let density = indices.iter().filter(|&&i| i != 0).count() as f64 / n as f64;
    assert!((density - 0.08).abs() < 0.001, "density {density}");

    let rec = TensorRecord {
        row_scales: None,
        name: "fc1.weight".into(),
        shape: vec![rows as u64, cols as u64],
        data: TensorData::SharedSparse {
            codebook: codebook.clone(),
            indices: indices.clone(),
            index_bits: 5,
            gap_bits: 5,
        },
    };

    // Round trip, exactly.
    let mut writer = NnzWriter::default();
    writer.push(rec.clone()).unwrap();
    let bytes = writer.to_bytes().unwrap();
    let reader = NnzReader::parse(&bytes).unwrap();
    let decoded = reader.tensors()[0].decode().unwrap();
    for (i, (&d, &ix)) in decoded.iter().zip(&indices).enumerate() {
        assert_eq!(d.to_bits(), codebook[ix as usize].to_bits(), "element {i}");
    }

    // The formula, from the entries (fillers included) and Huffman code lengths.
    let entries = sparse_entries(&indices, 5);
    let m = entries.len() as u64;
    let mut ci = vec![0u64; 32];
    let mut cg = vec![0u64; 32];
    for &(g, x) in &entries {
        cg[g as usize] += 1;
        ci[x as usize] += 1;
    }
    let ti = HuffmanTable::from_frequencies(&ci, MAX_CODE_LEN).unwrap();
    let tg = HuffmanTable::from_frequencies(&cg, MAX_CODE_LEN).unwrap();
    let stored_len = |t: &HuffmanTable| {
        t.lengths()
            .iter()
            .rposition(|&l| l > 0)
            .map_or(0, |i| i + 1) as u64
    };
    let k = 32u64;
    let payload = 1
        + 1
        + 4
        + 4 * k
        + 8
        + (4 + stored_len(&ti))
        + (4 + stored_len(&tg))
        + 8
        + ti.coded_bits(&ci).div_ceil(8)
        + 8
        + tg.coded_bits(&cg).div_ceil(8);
    let record = 12 + "fc1.weight".len() as u64 + 8 * 2 + payload;
    let (p, stats) = encode_tensor(&rec).unwrap();
    assert_eq!(p.len() as u64, payload);
    assert_eq!(reader.tensors()[0].record_bytes, record);
    // Fillers are exactly the entries with index 0; every other entry is a kept weight.
    assert_eq!(stats.fillers, ci[0]);
    assert_eq!(
        m,
        indices.iter().filter(|&&i| i != 0).count() as u64 + stats.fillers
    );

    // What the paper's layout buys: bits per surviving weight, all included.
    let nnz = indices.iter().filter(|&&i| i != 0).count() as f64;
    let bits_per_weight = record as f64 * 8.0 / nnz;
    println!(
        "fc1 300×784 at {:.1}%: {record} bytes ({:.2} bits per kept weight; {:.1}× smaller than dense f32), {} fillers",
        density * 100.0,
        bits_per_weight,
        (n * 4) as f64 / record as f64,
        stats.fillers
    );
    assert!(
        bits_per_weight < 5.0 + 5.0 + 1.0,
        "Huffman coding should beat fixed 5+5 bits"
    );
}
