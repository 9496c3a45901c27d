//! `nnzip run MODEL --input NAME=FILE …`: run any model on tensors from files and write every
//! output as an ONNX tensor file.

use crate::model_io::{NamedModel, output_file_name, read_tensor_file, write_tensor_file};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `nnzip run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The model: a `.nnz` file or an ONNX model (packed losslessly in memory).
    pub model: PathBuf,
    /// An input as NAME=FILE: an ONNX TensorProto (.pb) or a NumPy .npy file. One per input.
    #[arg(long = "input", value_name = "NAME=FILE")]
    pub inputs: Vec<String>,
    /// Folder for the outputs, one `<output name>.pb` TensorProto each (created if missing).
    #[arg(long, default_value = ".")]
    pub output_dir: PathBuf,
}

/// Runs `nnzip run`.
pub fn run(args: &RunArgs) -> Result<()> {
    let bytes = crate::fsutil::read(&args.model)?;
    let model = NamedModel::from_bytes(&bytes)
        .with_context(|| format!("cannot load {}", args.model.display()))?;
    let mut given = Vec::new();
    for spec in &args.inputs {
        let Some((name, file)) = spec.split_once('=') else {
            bail!("--input '{spec}' is not NAME=FILE");
        };
        given.push((name.to_string(), read_tensor_file(file.as_ref())?));
    }
    let outputs = model.run(given)?;
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("cannot create {}", args.output_dir.display()))?;
    for (name, tensor) in &outputs {
        let path = args.output_dir.join(output_file_name(name));
        write_tensor_file(&path, name, tensor)?;
        println!(
            "{name}: {:?} {:?} -> {}",
            tensor.datum_type(),
            tensor.shape(),
            path.display()
        );
    }
    Ok(())
}
