//! Compression with labelled data: prune (to given densities, or as far as an accuracy budget
//! allows), retrain, fold BatchNorm, share weights, fine-tune the centroids, encode, and measure
//! the decoded file in the core runtime. Without data, the same stages run in one shot.

use super::keep_best::{Checkpoint, keep_better, refuse_chance_level};
use super::pipeline::{CompressConfig, compress_weights_with};
use super::prune_sensitivity::{DEFAULT_LADDER, sensitivity};
use super::report::{CompressReport, ImagesUsed, LabelledReport, ModeReport, write_histograms};
use super::retrain::{
    BudgetStep, Masks, RetrainConfig, fine_tune_layers, prunable_tensors, prune_and_retrain,
    prune_to_budget, share_layers, target_densities,
};
use super::settings::{BudgetSplit, CompressSettings};
use super::share::SharedLayer;
use super::validation::DecisionSplit;
use super::{Compressed, Source};
use crate::accuracy::evaluate;
use crate::data::{self, Dataset, ImageTransform, Split};
use crate::onnx::GraphExecutor;
use crate::onnx::fold::fold_batch_norms;
use crate::packing::{pack_onnx, take_raw_weights};
use crate::train::Distillation;
use anyhow::{Context, Result, bail};
use prost::Message;
use std::collections::BTreeMap;
use std::path::Path;

/// Share of the training images held out to measure the accuracy budget.
const VALIDATION_FRACTION: f64 = 1.0 / 12.0;
/// Share of the accuracy budget that pruning may spend; weight sharing gets the rest.
const PRUNING_SHARE_OF_BUDGET: f64 = 0.8;

/// What the stages before encoding leave: the model to encode and what they measured.
#[derive(Default)]
struct Trained {
    /// The ONNX model whose weights are encoded (none: the source as it is).
    onnx: Option<Vec<u8>>,
    /// Layers shared (and fine-tuned) on the training engine, encoded as they are.
    shared: BTreeMap<String, SharedLayer>,
    /// Weights before pruning and after pruning + retraining, for the histograms.
    dense_values: BTreeMap<String, Vec<f32>>,
    pruned_values: BTreeMap<String, Vec<f32>>,
    /// Validation and reported images (with `--data`).
    sets: Option<DecisionSplit>,
    report: LabelledReport,
}

/// Compresses `src` with `s` (labelled data in `s.data`, or none: one shot). `progress`: progress
/// and stage lines on stderr.
pub fn compress_labelled(src: &Source, s: &CompressSettings, progress: bool) -> Result<Compressed> {
    let cfg = s.encoding()?;
    // With data, the retraining stages run on the training engine; the weights they leave
    // (pruned, shared, fine-tuned) are what gets encoded.
    let retrain = s.data.is_some() && (s.retrain_epochs > 0 || s.fine_tune_epochs > 0);
    let mut trained = if retrain {
        retrain_stages(src, s, &cfg, progress)?
    } else {
        one_shot(src, s)?
    };
    let source_onnx = trained.onnx.as_deref().unwrap_or(src.onnx);
    let mut writer = pack_onnx(source_onnx, src.pack)
        .with_context(|| format!("cannot read {}", src.path.display()))?;
    let weights = take_raw_weights(&mut writer);
    let (records, layers) = compress_weights_with(&weights, &cfg, &trained.shared)?;
    if let Some(dir) = &s.plots {
        write_histograms(
            dir,
            &weights,
            &records,
            &trained.dense_values,
            &trained.pruned_values,
        )?;
    }
    for r in records {
        writer.push(r)?;
    }
    let mut file = writer.to_bytes()?;
    if let Some(sets) = &trained.sets {
        // The accuracy before and after on the reported images, into the metadata too.
        let decoded = nnzip_core::Model::from_bytes(&file)?;
        let set = &sets.reported;
        let dense = nnzip_core::Model::from_bytes(&pack_onnx(src.onnx, src.pack)?.to_bytes()?)?;
        let before = evaluate(&dense, set, 500, progress)?;
        let after = evaluate(&decoded, set, 500, progress)?;
        if after.accuracy.is_nan() {
            bail!("evaluation failed");
        }
        writer
            .metadata
            .extra
            .insert("accuracy".into(), format!("{:.4}", after.accuracy));
        // The stage table is measured on the validation images, the decoded file's row too.
        let on_validation = evaluate(&decoded, &sets.validation, 500, false)?;
        trained
            .report
            .stages
            .push(("decoded .nnz (core runtime)".into(), on_validation.accuracy));
        refuse_chance_level(before.accuracy, after.accuracy, set)?;
        trained.report.accuracy = Some((before.accuracy, after.accuracy));
        trained.report.images = Some(ImagesUsed {
            validation: sets.validation.len(),
            reported: sets.reported.len(),
            description: sets.describe(),
        });
        file = writer.to_bytes()?;
    }
    trained.report.max_accuracy_drop = s.max_accuracy_drop;
    trained.report.budget_split = Some(s.budget_split);
    let report = CompressReport {
        dense_weight_bytes: layers.iter().map(|r| r.dense_bytes).sum(),
        layers,
        file_bytes: file.len(),
        onnx_bytes: src.onnx.len(),
        mode: ModeReport::Labelled(trained.report),
    };
    Ok(Compressed { file, report })
}

/// Without retraining: BatchNorm folded before sharing as well (so the codebooks are those of
/// the stored weights), and the test split only for the accuracy before and after.
fn one_shot(src: &Source, s: &CompressSettings) -> Result<Trained> {
    let mut trained = Trained::default();
    if let Some(d) = &s.data {
        // Decisions are taken on a part of the test split held apart; reported figures come
        // from the rest.
        let test = data::load(d, Split::Test, &ImageTransform::default())?;
        trained.sets = Some(DecisionSplit::of_test(&test)?);
    }
    if s.fold_batch_norm {
        let mut proto = nnzip_core::onnx::proto::ModelProto::decode(src.onnx)
            .with_context(|| format!("{} is not a valid ONNX file", src.path.display()))?;
        if !fold_batch_norms(&mut proto)?.is_empty() {
            trained.onnx = Some(proto.encode_to_vec());
        }
    }
    Ok(trained)
}

/// The retraining settings of `s`; with distillation, the dense model (before any pruning) on
/// `train_set` is the teacher.
fn retrain_config(
    s: &CompressSettings,
    exec: &GraphExecutor,
    train_set: &Dataset,
    progress: bool,
) -> Result<RetrainConfig> {
    let (fine_tune_optimizer, fine_tune_lr) = s.fine_tune_rule();
    let mut rc = RetrainConfig {
        rounds: s.rounds,
        epochs_per_round: s.retrain_epochs,
        lr: s.retrain_lr,
        fine_tune_epochs: s.fine_tune_epochs,
        fine_tune_lr,
        fine_tune_optimizer,
        fine_tune_scope: s.fine_tune_scope,
        batch: s.batch,
        schedule: s.schedule,
        seed: s.seed,
        progress,
        distill: None,
    };
    if s.distill > 0.0 {
        rc.distill = Some(
            Distillation::from_teacher(exec, train_set, s.temperature, s.distill)
                .context("the dense model's outputs for distillation")?,
        );
    }
    Ok(rc)
}

/// The tensors `cfg` prunes, refusing a model with none and rules naming other tensors.
fn checked_prunable(
    exec: &GraphExecutor,
    cfg: &CompressConfig,
    model: &Path,
) -> Result<Vec<String>> {
    let prunable = prunable_tensors(exec, cfg);
    if prunable.is_empty() {
        bail!(
            "{}: the model has no prunable tensor (convolution or fully connected weights with ≥ {} elements): nothing to compress",
            model.display(),
            cfg.min_shared_elements
        );
    }
    for name in cfg.per_layer.keys() {
        if !prunable.contains(name) {
            bail!(
                "'{name}' is not a prunable weight of the model; prunable: {}",
                prunable.join(", ")
            );
        }
    }
    Ok(prunable)
}

/// Pruning + retraining, BatchNorm folding, weight sharing and centroid fine-tuning on the
/// training engine, each stage measured on the validation images.
fn retrain_stages(
    src: &Source,
    s: &CompressSettings,
    cfg: &CompressConfig,
    progress: bool,
) -> Result<Trained> {
    let (mut exec, mut train_set, test) = retrain_inputs(src.path, s)?;
    let sets = DecisionSplit::of_test(&test)?;
    drop(test);
    let rc = retrain_config(s, &exec, &train_set, progress)?;
    let mut report = LabelledReport::default();
    let measure =
        |exec: &GraphExecutor, what: String, stages: &mut Vec<(String, f64)>| -> Result<()> {
            let acc = crate::train::evaluate(exec, &sets.validation, 1000, false)?.accuracy;
            if progress {
                eprintln!("{what}: accuracy {:.2}%", acc * 100.0);
            }
            stages.push((what, acc));
            Ok(())
        };
    let prunable = checked_prunable(&exec, cfg, src.path)?;
    measure(&exec, "dense".into(), &mut report.stages)?;
    let mut dense_values = BTreeMap::new();
    for name in &prunable {
        dense_values.insert(name.clone(), param_values(&exec, name)?);
    }
    let mut round_acc = Vec::new();
    let masks = if let Some(budget_pp) = s.max_accuracy_drop {
        // Densities are chosen to fit the budget on the validation part of the test split
        // (the reference models were trained on every training image, so no training image
        // is unseen), or on a split held out of the training data.
        let holdout;
        let val: &Dataset = match s.budget_split {
            BudgetSplit::Validation => &sets.validation,
            BudgetSplit::Holdout => {
                let (train_part, held) = train_set.split_validation(VALIDATION_FRACTION, s.seed)?;
                train_set = train_part;
                holdout = held;
                &holdout
            }
        };
        let (masks, steps) =
            masks_within_budget(&exec, &prunable, budget_pp, &train_set, val, &rc, progress)?;
        report.budget_steps = steps;
        measure(
            &exec,
            "pruning within the budget + retraining".into(),
            &mut round_acc,
        )?;
        masks
    } else {
        let targets = target_densities(&exec, &prunable, cfg)?;
        prune_and_retrain(&exec, &targets, Some(&train_set), &rc, |r| {
            measure(
                &exec,
                format!("pruning round {r}/{} + retraining", rc.rounds),
                &mut round_acc,
            )
        })?
    };
    report.stages.extend(round_acc);
    if s.fold_batch_norm {
        let mut proto = exec.to_model_proto()?;
        let folded = fold_batch_norms(&mut proto)?;
        if !folded.is_empty() {
            exec = GraphExecutor::with_dtype(proto, exec.source(), exec.dtype())
                .context("the model with its BatchNormalization folded")?;
            measure(
                &exec,
                format!("{} BatchNormalization folded", folded.len()),
                &mut report.stages,
            )?;
        }
    }
    let mut pruned_values = BTreeMap::new();
    for name in &prunable {
        pruned_values.insert(name.clone(), param_values(&exec, name)?);
    }
    // Measure sharing alone, then with fine-tuned centroids.
    let mut layers = share_layers(&exec, &masks, cfg)?;
    measure(&exec, "weight sharing".into(), &mut report.stages)?;
    if rc.fine_tune_epochs > 0 {
        // The pipeline keeps the best model it measured: fine-tuning that loses accuracy is
        // undone (it can diverge, e.g. from a learning rate too high for few images).
        let before = Checkpoint::take(&exec, &layers)?;
        fine_tune_layers(&exec, &mut layers, &masks, Some(&train_set), &rc)?;
        measure(&exec, "centroid fine-tuning".into(), &mut report.stages)?;
        if let Some(note) = keep_better(&exec, &mut layers, before, &mut report.stages)? {
            if progress {
                eprintln!("{note}");
            }
            report.rolled_back.push(note);
        }
    }
    Ok(Trained {
        onnx: Some(exec.to_model_proto()?.encode_to_vec()),
        shared: layers,
        dense_values,
        pruned_values,
        sets: Some(sets),
        report,
    })
}

/// Prunes as far as `budget_pp` percentage points (the pruning share of it) allow on `val`,
/// retraining at each level; returns the masks kept and the levels tried.
fn masks_within_budget(
    exec: &GraphExecutor,
    prunable: &[String],
    budget_pp: f64,
    train_set: &Dataset,
    val: &Dataset,
    rc: &RetrainConfig,
    progress: bool,
) -> Result<(Masks, Vec<BudgetStep>)> {
    // The sensitivity report's baseline is the unpruned model's accuracy on `val`.
    let report = sensitivity(exec, prunable, DEFAULT_LADDER, val, progress)?;
    let baseline = report.baseline;
    prune_to_budget(
        exec,
        &report,
        baseline,
        budget_pp / 100.0 * PRUNING_SHARE_OF_BUDGET,
        train_set,
        val,
        rc,
        |step| {
            if progress {
                eprintln!(
                    "budget level {} pp: {} → validation {:.2}% ({})",
                    step.tolerance_pp,
                    step.densities
                        .iter()
                        .map(|(n, d)| format!("{n} {:.1}%", d * 100.0))
                        .collect::<Vec<_>>()
                        .join(", "),
                    step.validation_accuracy * 100.0,
                    if step.accepted {
                        "kept"
                    } else {
                        "over budget, undone"
                    }
                );
            }
            Ok(())
        },
    )
}
/// The model on the training engine and the data to retrain and measure it with.
fn retrain_inputs(
    model: &Path,
    s: &CompressSettings,
) -> Result<(GraphExecutor, data::Dataset, data::Dataset)> {
    let exec = GraphExecutor::open(model)?;
    let spec = s.data.as_deref().unwrap_or("fashion-mnist");
    let transform = ImageTransform {
        channels: exec.input_channels(),
        ..Default::default()
    };
    let mut train_set = data::load(spec, Split::Train, &transform)?;
    if let Some(n) = s.train_limit {
        train_set = train_set.truncate(n);
    }
    let test = data::load(spec, Split::Test, &transform)?;
    // Shapes and classes are checked before any work starts.
    crate::train::check_compatible(&exec, &train_set)?;
    crate::train::check_compatible(&exec, &test)?;
    Ok((exec, train_set, test))
}

fn param_values(exec: &GraphExecutor, name: &str) -> Result<Vec<f32>> {
    let p = exec.param(name).context("a prunable tensor")?;
    Ok(p.var.as_tensor().flatten_all()?.to_vec1::<f32>()?)
}
