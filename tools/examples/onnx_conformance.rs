//! ONNX's backend tests against the core runtime: counts per folder, failures, refusals and the
//! operators most often missing (see `nnzip_tools::conformance`). Exits 1 when a test fails.
//!
//! ```sh
//! cargo run --example onnx_conformance -- [--each] DATA_DIR [FOLDER …]
//! ```
//!
//! `--each` prints every test's outcome first (pass, fail, unsupported with the operators it
//! lacks, refused with the reader's reason).
//!
//! `DATA_DIR` holds ONNX's `onnx/backend/test/data` folders (`tools/benches/onnx_conformance.sh`
//! makes it from the `onnx` wheel); the folders default to node, pytorch-converted,
//! pytorch-operator and simple.

use nnzip_tools::conformance::{counts, render, render_each, run_folders};
use std::path::PathBuf;
use std::process::ExitCode;

const FOLDERS: &[&str] = &["node", "pytorch-converted", "pytorch-operator", "simple"];

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    let each = args.next_if(|a| a == "--each").is_some();
    let Some(root) = args.next().map(PathBuf::from) else {
        eprintln!(
            "usage: onnx_conformance [--each] DATA_DIR [FOLDER …]   (folders: {})",
            FOLDERS.join(", ")
        );
        return ExitCode::from(2);
    };
    let mut folders: Vec<String> = args.collect();
    if folders.is_empty() {
        folders = FOLDERS.iter().map(|f| f.to_string()).collect();
    }
    let start = std::time::Instant::now();
    let results = match run_folders(&root, &folders) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if each {
        println!("{}", render_each(&results));
    }
    print!("{}", render(&results, 25));
    let failed: usize = counts(&results).values().map(|c| c.fail).sum();
    println!(
        "\n{} tests in {:.1} s; light/ (nine architectures with ConstantOfShape weights) is not run here",
        results.len(),
        start.elapsed().as_secs_f64()
    );
    if failed > 0 {
        eprintln!("{failed} ONNX conformance tests fail");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
