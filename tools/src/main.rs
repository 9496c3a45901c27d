//! `nnzip`: compress neural networks for phones.

use clap::{Parser, Subcommand};
use nnzip_tools::commands::{
    bench, classify, compress, decompress, eval, init, inspect, pack, sensitivity, train,
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
    /// Write LeNet-300-100 or LeNet-5, randomly initialised, as ONNX.
    Init(init::InitArgs),
    /// Prune each tensor alone to a ladder of densities: accuracy table, PNG plot, suggested densities.
    Sensitivity(sensitivity::SensitivityArgs),
    /// Train an ONNX classifier on labelled data and write it back as ONNX.
    Train(train::TrainArgs),
    /// Time loading and batch-1 inference of a model in the core runtime.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
