//! Centroid fine-tuning without labels: the shared model learns the teacher's outputs on views
//! of the photos.

use super::agreement::argmax;
use super::photos::Views;
use crate::compress::retrain::{RetrainConfig, fine_tune_layers, set_values};
use crate::compress::share::SharedLayer;
use crate::data::Dataset;
use crate::onnx::GraphExecutor;
use crate::train::Distillation;
use anyhow::{Result, bail};
use nnzip_core::onnx::proto::ModelProto;
use prost::Message;
use std::collections::BTreeMap;

/// Settings of [`fine_tune_by_distillation`].
#[derive(Debug, Clone)]
pub struct DistillFineTune {
    /// Passes over the views.
    pub epochs: usize,
    /// Learning rate (cosine schedule).
    pub lr: f64,
    /// Update rule.
    pub optimizer: crate::train::OptimizerKind,
    /// What trains: the centroids, or every weight with the codebooks kept.
    pub scope: crate::compress::retrain::FineTuneScope,
    /// Views per mini-batch.
    pub batch: usize,
    /// Softening temperature of the teacher's and the student's outputs.
    pub temperature: f64,
    /// Seed of shuffling.
    pub seed: u64,
    /// Progress bars on stderr.
    pub progress: bool,
}

/// Fine-tuning without labels: the model with `shared` written in trains on `views` towards the
/// teacher's logits (distillation with weight 1: no label is used), the raw tensors (biases)
/// free, and either every cluster moving by the sum of its weights' gradients (the paper's) or
/// every weight moving between the entries of its codebook (`ft.scope`). Updates the codebooks
/// or indices in `shared` and returns the model (all weights) as ONNX bytes.
pub fn fine_tune_by_distillation(
    model: &ModelProto,
    shared: &mut BTreeMap<String, SharedLayer>,
    views: &Views,
    teacher: &[Vec<f32>],
    ft: &DistillFineTune,
) -> Result<Vec<u8>> {
    let Some(first) = views.inputs.first() else {
        bail!("no views to fine-tune on");
    };
    let dims = first.shape().to_vec();
    if dims.len() != 4 || dims[0] != 1 {
        bail!("fine-tuning needs image inputs [1, C, H, W], got {dims:?}");
    }
    let exec = GraphExecutor::new(model.clone(), "teacher")?;
    for (name, layer) in shared.iter() {
        set_values(&exec, name, layer.values())?;
    }
    let masks: BTreeMap<String, Vec<bool>> = shared
        .iter()
        .map(|(n, l)| {
            let kept = l.indices.iter().map(|&i| !(l.sparse && i == 0)).collect();
            (n.clone(), kept)
        })
        .collect();
    let mut images = Vec::with_capacity(views.len() * first.len());
    for x in &views.inputs {
        images.extend(x.to_plain_array_view::<f32>()?.iter().copied());
    }
    let classes = teacher.first().map_or(0, |t| t.len());
    let data = Dataset {
        source: "calibration views".into(),
        images,
        labels: teacher.iter().map(|t| argmax(t) as u32).collect(),
        sample_shape: [dims[1], dims[2], dims[3]],
        class_names: Vec::new(),
    };
    let rc = RetrainConfig {
        fine_tune_epochs: ft.epochs,
        fine_tune_lr: ft.lr,
        fine_tune_optimizer: ft.optimizer,
        fine_tune_scope: ft.scope,
        batch: ft.batch,
        seed: ft.seed,
        progress: ft.progress,
        distill: Some(Distillation {
            teacher_logits: std::sync::Arc::new(teacher.concat()),
            classes,
            temperature: ft.temperature,
            alpha: 1.0,
        }),
        ..Default::default()
    };
    fine_tune_layers(&exec, shared, &masks, Some(&data), &rc)?;
    Ok(exec.to_model_proto()?.encode_to_vec())
}
