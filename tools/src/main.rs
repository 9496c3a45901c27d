//! `nnzip`: compress neural networks for phones.

use clap::{Parser, Subcommand};
use nnzip_tools::commands::{
    agree, bench, classify, compress, decompress, eval, init, inspect, pack, run, sensitivity,
    train,
};
use std::process::ExitCode;

/// Deep Compression for phones: pack, inspect and run compressed `.nnz` models.
#[derive(Debug, Parser)]
#[command(name = "nnzip", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pack an ONNX model into a .nnz file, losslessly (all weights raw).
    Pack(pack::PackArgs),
    /// Show a .nnz file's header, metadata and per-tensor table.
    Inspect(inspect::InspectArgs),
    /// Classify images with a .nnz model.
    Classify(classify::ClassifyArgs),
    /// Write a dense ONNX file from a .nnz file.
    Decompress(decompress::DecompressArgs),
    /// Compress an ONNX model: prune, retrain, share weights, fine-tune, Huffman-code.
    Compress(Box<compress::CompressArgs>),
    /// Measure a model (ONNX or .nnz) on labelled data.
    Eval(eval::EvalArgs),
    /// Write LeNet-300-100, LeNet-5 or a small mobile-style network, randomly initialised, as ONNX.
    Init(init::InitArgs),
    /// Prune each tensor alone to a ladder of densities: accuracy table, PNG plot, suggested densities.
    Sensitivity(sensitivity::SensitivityArgs),
    /// Train an ONNX classifier on labelled data and write it back as ONNX.
    Train(train::TrainArgs),
    /// Time loading and batch-1 inference of a model in the core runtime.
    Bench(bench::BenchArgs),
    /// How often a compressed model agrees with its dense original on unlabelled photos.
    Agree(agree::AgreeArgs),
    /// Run a model on input tensors from files (ONNX .pb or NumPy .npy) and write its outputs.
    Run(run::RunArgs),
}

/// Training allocates and frees tensors of megabytes at every op. glibc serves those with
/// `mmap` and returns them to the kernel on `free`, so every new tensor page-faults its pages in
/// and has them zeroed again: a large share of the training time goes to the kernel
/// (docs/PERFORMANCE.md). Peak memory is unchanged; freed memory stays in the process
/// for reuse instead of going back to the kernel at once.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings; called before any other thread exists.
    unsafe {
        // glibc's largest threshold (32 MiB on 64-bit); larger buffers still use mmap.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

fn main() -> ExitCode {
    // candle 0.11 runs element-wise ops on its own spin-waiting thread pool (RAYON_NUM_THREADS − 1
    // workers plus the caller), next to rayon's pool that runs matmuls and nnzip's conv/pool
    // kernels: twice as many busy threads as cores, and the spinning waiter steals the core its
    // worker needs whenever the machine is shared (docs/PERFORMANCE.md). One candle thread keeps element-wise ops on the calling thread, so
    // no more than RAYON_NUM_THREADS threads compute at once. An explicit setting wins.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    keep_freed_memory();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Pack(a) => pack::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Classify(a) => classify::run(a),
        Command::Decompress(a) => decompress::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Compress(a) => compress::run(a),
        Command::Init(a) => init::run(a),
        Command::Train(a) => train::run(a),
        Command::Sensitivity(a) => sensitivity::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Agree(a) => agree::run(a),
        Command::Run(a) => run::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
