//! The compression pipelines, as library functions: one entry per mode ([`labelled_pipeline`]
//! with labelled data or none, [`label_free_pipeline`] against the dense model on unlabelled
//! photos, its stages in [`label_free`]), both
//! taking [`settings::CompressSettings`] and returning a [`report::CompressReport`], and the
//! stages they run: pruning, weight sharing, and turning the result into `.nnz` tensors.

pub mod gptq;
pub mod keep_best;
pub mod kmeans;
pub mod label_free;
pub mod label_free_pipeline;
pub mod labelled_pipeline;
pub mod latent_rounding;
pub mod pipeline;
pub mod prune;
pub mod prune_sensitivity;
pub mod prune_sensitivity_run;
pub mod report;
pub mod retrain;
pub mod settings;
pub mod settings_flags;
pub mod share;
pub mod validation;

use crate::fsutil;
use crate::packing::{PackOptions, preset, read_labels};
use anyhow::Result;
use report::CompressReport;
use settings::CompressSettings;
use std::path::Path;

/// A model to compress: where it was read from, its ONNX bytes, and what the file's metadata
/// says of it.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The ONNX file (named in messages).
    pub path: &'a Path,
    /// Its bytes.
    pub onnx: &'a [u8],
    /// Name, preprocessing and labels for the metadata.
    pub pack: &'a PackOptions,
}

/// A compressed model: the `.nnz` file's bytes and what the pipeline measured.
#[derive(Debug, Clone)]
pub struct Compressed {
    /// The `.nnz` file.
    pub file: Vec<u8>,
    /// What the run measured.
    pub report: CompressReport,
}

/// The metadata `s` gives a model read from `model`: its file name, preprocessing and labels.
pub fn pack_options(model: &Path, s: &CompressSettings) -> Result<PackOptions> {
    let labels = match &s.labels {
        Some(p) => read_labels(p)?,
        None => Vec::new(),
    };
    Ok(PackOptions {
        model_name: model.file_stem().map(|s| s.to_string_lossy().into_owned()),
        preprocessing: preset(&s.preprocess)?,
        labels,
        f16: false,
    })
}

/// Compresses `src` in the mode `s` asks for: label-free with calibration photos, labelled
/// otherwise.
pub fn compress(src: &Source, s: &CompressSettings, progress: bool) -> Result<Compressed> {
    s.validate()?;
    if s.calibration.is_some() {
        label_free_pipeline::compress_label_free(src, s, progress)
    } else {
        labelled_pipeline::compress_labelled(src, s, progress)
    }
}

/// Compresses the ONNX file `model` into `output` (refused before any work when `output` is not
/// writable or is the model itself, unless `force`), and returns the report.
pub fn compress_file(
    model: &Path,
    output: &Path,
    force: bool,
    s: &CompressSettings,
    progress: bool,
) -> Result<CompressReport> {
    s.validate()?;
    s.encoding()?;
    // Before hours of training: the output must be writable, and not the model itself.
    fsutil::check_output(output, &[model], force)?;
    let onnx = fsutil::read(model)?;
    let pack = pack_options(model, s)?;
    let src = Source {
        path: model,
        onnx: &onnx,
        pack: &pack,
    };
    let compressed = compress(&src, s, progress)?;
    fsutil::write_atomic(output, &compressed.file)?;
    Ok(compressed.report)
}
