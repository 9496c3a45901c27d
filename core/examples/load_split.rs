//! Where the load-to-ready time of `.nnz` files goes: verifying (CRC-32 + metadata + graph
//! inflate), decoding the tensors (one thread, in file order), and the rest of
//! `Model::from_bytes` (rebuilding the graph, tract's optimisation). Fastest of 9 runs each.
//!
//! `cargo run --release -p nnzip-core --example load_split -- FILE.nnz…`
//! (`nnzip pack MODEL.onnx -o FILE.nnz` makes a lossless file to compare with.)

use nnzip_core::Model;
use nnzip_core::format::NnzReader;
use std::time::Instant;

fn best_ms(mut f: impl FnMut(), runs: usize) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::MAX, f64::min)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>14}",
        "file", "verify ms", "decode ms", "total ms", "graph+opt ms"
    );
    for path in std::env::args().skip(1) {
        let bytes = std::fs::read(&path)?;
        let verify = best_ms(|| drop(NnzReader::parse(&bytes)), 9);
        let reader = NnzReader::parse(&bytes)?;
        let decode = best_ms(
            || {
                for t in reader.tensors() {
                    std::hint::black_box(t.decode().ok());
                }
            },
            9,
        );
        let total = best_ms(|| drop(Model::from_bytes(&bytes)), 9);
        println!(
            "{path:<40} {verify:>10.2} {decode:>10.2} {total:>10.2} {:>14.2}",
            total - verify - decode
        );
    }
    Ok(())
}
