//! `nnzip eval MODEL.onnx|MODEL.nnz --data …`: accuracy on labelled data.

use crate::data::{FASHION_MNIST_LABELS, Split, load_idx_split, resolve_idx_dir};
use crate::eval::evaluate;
use crate::table::Table;
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// Arguments of `nnzip eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// An ONNX model or a `.nnz` file.
    pub model: PathBuf,
    /// `fashion-mnist` (Debian's package) or a folder of MNIST-style IDX files.
    #[arg(long, default_value = "fashion-mnist")]
    pub data: String,
    /// Evaluate on the training split instead of the test split.
    #[arg(long)]
    pub train_split: bool,
    /// Only the first N images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// One JSON object on stdout (`accuracy` as a fraction, `loss`, `samples`, …).
    #[arg(long)]
    pub json: bool,
}

/// Loads an ONNX (packed losslessly in memory) or `.nnz` model into the core runtime.
pub fn load_model(path: &Path) -> Result<nnzip_core::Model> {
    let bytes = crate::fsutil::read(path)?;
    let nnz = if bytes.starts_with(&nnzip_core::format::MAGIC) {
        bytes
    } else {
        crate::pack::pack_onnx(&bytes, &Default::default())
            .with_context(|| format!("cannot read {} as ONNX or .nnz", path.display()))?
            .to_bytes()?
    };
    nnzip_core::Model::from_bytes(&nnz).with_context(|| format!("cannot load {}", path.display()))
}

/// Runs `nnzip eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    let model = load_model(&args.model)?;
    let dir = resolve_idx_dir(&args.data)?;
    let mut set = load_idx_split(
        &dir,
        if args.train_split {
            Split::Train
        } else {
            Split::Test
        },
    )?;
    if let Some(n) = args.limit {
        set.truncate(n);
    }
    let r = evaluate(&model, &set, args.batch, !args.json)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{}: accuracy {:.2}% on {} images, loss {:.4}\n",
        args.model.display(),
        r.accuracy * 100.0,
        r.samples,
        r.loss
    );
    let names: Vec<String> = (0..r.per_class_accuracy.len())
        .map(|k| {
            if r.per_class_accuracy.len() == 10 && args.data == "fashion-mnist" {
                FASHION_MNIST_LABELS[k].to_string()
            } else {
                k.to_string()
            }
        })
        .collect();
    let mut header = vec!["class", "accuracy"];
    let cols: Vec<String> = (0..names.len()).map(|k| format!("→{k}")).collect();
    header.extend(cols.iter().map(String::as_str));
    let mut t = Table::new(&header);
    for (k, name) in names.iter().enumerate() {
        let mut row = vec![
            format!("{k} {name}"),
            format!("{:.1}%", r.per_class_accuracy[k] * 100.0),
        ];
        row.extend(r.confusion[k].iter().map(|c| c.to_string()));
        t.row(row);
    }
    print!("{}", t.render());
    Ok(())
}
