//! The retraining stages of Deep Compression, on the candle training engine:
//! pruning in rounds with masked retraining (pruned weights stay exactly zero), then weight
//! sharing with centroid fine-tuning (each weight's gradient is added to its centroid's; the
//! assignment stays fixed).

use super::latent_rounding::LatentRounding;
use super::pipeline::{CompressConfig, PruneRule};
use super::prune::{apply_mask, mask_by_density, mask_by_quality};
use super::share::{SharedLayer, cluster_gradient_sums, fit_centroids, share_weights};
use crate::data::Dataset;
use crate::onnx::GraphExecutor;
use crate::train::{
    Distillation, GradientHook, Optimizer, OptimizerConfig, OptimizerKind, Schedule, ScheduleKind,
    TrainConfig, train,
};
use anyhow::{Context, Result, bail};
use candle_core::Tensor;
use std::collections::BTreeMap;

/// How the density of a layer falls from 1 to its target over the pruning rounds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PruneSchedule {
    /// Han et al.'s iterative pruning: the kept fraction shrinks geometrically, `d_r = d^(r/R)`.
    Iterative,
    /// Gradual (polynomial, Zhu & Gupta's AGP): `d_r = d + (1 − d)(1 − r/R)³`.
    Gradual,
}

impl PruneSchedule {
    /// Density after round `r` of `rounds` for a layer whose final density is `target`.
    pub fn density(self, target: f64, r: usize, rounds: usize) -> f64 {
        let t = r as f64 / rounds.max(1) as f64;
        match self {
            PruneSchedule::Iterative => target.powf(t),
            PruneSchedule::Gradual => target + (1.0 - target) * (1.0 - t).powi(3),
        }
    }
}

/// What fine-tuning after weight sharing trains.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FineTuneScope {
    /// The paper's: every centroid moves by its cluster's summed gradient; the assignment stays.
    Centroids,
    /// Every weight, the sharing kept: latent values rounded to the fixed codebook in the
    /// forward pass, so weights move between clusters ([`super::latent_rounding`]).
    Weights,
}

/// Settings of the retraining stages.
#[derive(Debug, Clone)]
pub struct RetrainConfig {
    /// Pruning rounds (each prunes further, then retrains).
    pub rounds: usize,
    /// Training epochs after each pruning round.
    pub epochs_per_round: usize,
    /// Learning rate of the pruning retraining.
    pub lr: f64,
    /// Epochs of centroid fine-tuning after weight sharing.
    pub fine_tune_epochs: usize,
    /// Learning rate of centroid fine-tuning.
    pub fine_tune_lr: f64,
    /// Update rule of centroid fine-tuning: the paper's SGD (a centroid moves by the learning
    /// rate × the sum of its weights' gradients, so large clusters take large steps), or Adam,
    /// which steps every centroid by about the learning rate whatever its cluster's size
    /// (without weight decay: shared values are not pulled towards zero).
    pub fine_tune_optimizer: OptimizerKind,
    /// What fine-tuning trains: the centroids, or every weight with the codebooks kept.
    pub fine_tune_scope: FineTuneScope,
    /// Mini-batch size.
    pub batch: usize,
    /// How densities fall over the rounds.
    pub schedule: PruneSchedule,
    /// Seed of shuffling.
    pub seed: u64,
    /// Progress bars on stderr.
    pub progress: bool,
    /// Retrain towards the dense model's outputs (its logits on the training data) as well as
    /// the labels.
    pub distill: Option<Distillation>,
}

impl Default for RetrainConfig {
    fn default() -> Self {
        RetrainConfig {
            rounds: 3,
            epochs_per_round: 2,
            lr: 0.005,
            fine_tune_epochs: 2,
            fine_tune_lr: 0.0005,
            fine_tune_optimizer: OptimizerKind::Sgd,
            fine_tune_scope: FineTuneScope::Centroids,
            batch: 128,
            schedule: PruneSchedule::Iterative,
            seed: 0,
            progress: true,
            distill: None,
        }
    }
}

fn values(exec: &GraphExecutor, name: &str) -> Result<Vec<f32>> {
    let p = exec
        .param(name)
        .with_context(|| format!("'{name}' is not a trainable tensor of the model"))?;
    Ok(p.var.as_tensor().flatten_all()?.to_vec1::<f32>()?)
}

pub(crate) fn set_values(exec: &GraphExecutor, name: &str, v: Vec<f32>) -> Result<()> {
    let p = exec
        .param(name)
        .with_context(|| format!("'{name}' is not a trainable tensor of the model"))?;
    let t = Tensor::from_vec(v, p.var.dims(), exec.device())?;
    p.var.set(&t)?;
    Ok(())
}

/// The model's tensors that are pruned and shared under `cfg` (convolution and fully connected
/// weights, [`super::pipeline::is_prunable_shape`]), in initializer order.
pub fn prunable_tensors(exec: &GraphExecutor, cfg: &CompressConfig) -> Vec<String> {
    exec.trainable()
        .filter(|p| super::pipeline::is_prunable_shape(p.var.rank(), p.var.elem_count(), cfg))
        .map(|p| p.name.clone())
        .collect()
}

/// Final density per prunable tensor, from `cfg`'s rules applied to the current (dense) weights:
/// a quality rule becomes the density its threshold `q × std` gives.
pub fn target_densities(
    exec: &GraphExecutor,
    prunable: &[String],
    cfg: &CompressConfig,
) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for name in prunable {
        let rule = cfg.per_layer.get(name).copied().unwrap_or(cfg.default_rule);
        let d = match rule {
            PruneRule::None => 1.0,
            PruneRule::Density(d) => d,
            PruneRule::Quality(q) => {
                let mask = mask_by_quality(&values(exec, name)?, q)?;
                mask.iter().filter(|&&k| k).count() as f64 / mask.len().max(1) as f64
            }
        };
        out.insert(name.clone(), d);
    }
    Ok(out)
}

fn mask_tensor(exec: &GraphExecutor, name: &str, mask: &[bool]) -> Result<Tensor> {
    let p = exec.param(name).context("mask for an unknown tensor")?;
    let m: Vec<f32> = mask.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
    Ok(Tensor::from_vec(m, p.var.dims(), exec.device())?)
}

fn train_config(rc: &RetrainConfig, epochs: usize, lr: f64, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch: rc.batch,
        schedule: Schedule {
            kind: ScheduleKind::Cosine,
            lr,
            step_epochs: 1,
            gamma: 1.0,
        },
        seed,
        progress: rc.progress,
        distill: rc.distill.clone(),
    }
}

/// Prunes `name` to `density` by magnitude (pruned weights become exactly zero) and registers the
/// mask with `opt`, so retraining keeps them zero. Returns the mask (true = kept).
fn prune_layer(
    exec: &GraphExecutor,
    name: &str,
    density: f64,
    opt: &mut Optimizer,
) -> Result<Vec<bool>> {
    let mut w = values(exec, name)?;
    let mask = mask_by_density(&w, density)?;
    apply_mask(&mut w, &mask);
    set_values(exec, name, w)?;
    let p = exec.param(name).context("pruned tensor")?.clone();
    opt.set_mask(&p, mask_tensor(exec, name, &mask)?)?;
    Ok(mask)
}

/// Prunes every tensor in `targets` to its density in `rc.rounds` rounds, retraining on `data`
/// after each with the masks fixed (no retraining without data). `after_round(r)` is called after
/// each round (for measurements). Returns the final masks (true = kept).
pub fn prune_and_retrain(
    exec: &GraphExecutor,
    targets: &BTreeMap<String, f64>,
    data: Option<&Dataset>,
    rc: &RetrainConfig,
    mut after_round: impl FnMut(usize) -> Result<()>,
) -> Result<BTreeMap<String, Vec<bool>>> {
    let rounds = if data.is_some() { rc.rounds.max(1) } else { 1 };
    let mut masks = BTreeMap::new();
    for r in 1..=rounds {
        let mut opt = Optimizer::new(OptimizerConfig::default());
        for (name, &target) in targets {
            let d = rc.schedule.density(target, r, rounds);
            masks.insert(name.clone(), prune_layer(exec, name, d, &mut opt)?);
        }
        if let Some(data) = data
            && rc.epochs_per_round > 0
        {
            let cfg = train_config(rc, rc.epochs_per_round, rc.lr, rc.seed + r as u64);
            train(exec, data, None, &cfg, &mut opt)
                .with_context(|| format!("retraining after pruning round {r}"))?;
        }
        after_round(r)?;
    }
    Ok(masks)
}

/// Replaces every weight's gradient by the sum of the gradients of its cluster, so that all the
/// weights sharing a centroid move together: the centroid's update is the summed gradient.
///
/// With row scales (weight `i` = `s_i · c[cluster(i)]`), the centroid's gradient is
/// `Σ s_i g_i` over its cluster and weight `i` gets `s_i` times it, the chain rule through the
/// scale. SGD then keeps every weight on `s_i · c`; Adam's per-weight normalisation does not, so
/// after each update the hook projects the weights back (each centroid the least-squares fit of
/// its weights, `Σ s w / Σ s²`).
#[derive(Debug, Clone)]
pub struct ClusterGradient {
    indices: Vec<u16>,
    clusters: usize,
    /// Cluster 0 is the pruned zero: it never moves.
    sparse: bool,
    /// Per weight, the scale of its row (none: all 1).
    scales: Option<Vec<f32>>,
}

impl ClusterGradient {
    /// The hook for a layer whose weight `i` belongs to cluster `indices[i]` of `clusters`; with
    /// `sparse`, cluster 0 is the pruned zero.
    pub fn new(indices: Vec<u16>, clusters: usize, sparse: bool) -> Self {
        ClusterGradient {
            indices,
            clusters,
            sparse,
            scales: None,
        }
    }

    /// The hook for a shared layer, row scales included.
    pub fn for_layer(layer: &SharedLayer) -> Self {
        ClusterGradient {
            scales: layer.row_scales.as_ref().map(|_| layer.weight_scales()),
            ..Self::new(layer.indices.clone(), layer.codebook.len(), layer.sparse)
        }
    }

    fn check_len(&self, name: &str, what: &str, len: usize) -> Result<()> {
        if len != self.indices.len() {
            bail!(
                "{what} of '{name}' has {len} values, the codebook assignment {}",
                self.indices.len()
            );
        }
        Ok(())
    }
}

impl GradientHook for ClusterGradient {
    fn replace_gradient(&self, name: &str, _param: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let mut g: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        self.check_len(name, "gradient", g.len())?;
        if let Some(s) = &self.scales {
            g.iter_mut().zip(s).for_each(|(g, s)| *g *= s);
        }
        let sums = cluster_gradient_sums(&self.indices, &g, self.clusters, self.sparse);
        let out: Vec<f32> = match &self.scales {
            Some(s) => self
                .indices
                .iter()
                .zip(s)
                .map(|(&c, s)| s * sums[c as usize])
                .collect(),
            None => self.indices.iter().map(|&c| sums[c as usize]).collect(),
        };
        Ok(Tensor::from_vec(out, grad.dims(), grad.device())?)
    }

    fn project(&self, name: &str, value: &Tensor) -> Result<Option<Tensor>> {
        let Some(scales) = &self.scales else {
            // Without scales every weight of a cluster gets the same update: they stay tied.
            return Ok(None);
        };
        let w: Vec<f32> = value.flatten_all()?.to_vec1()?;
        self.check_len(name, "tensor", w.len())?;
        // Per cluster, the least-squares centroid of its weights: `Σ s·w / Σ s²`.
        let mut codebook = vec![0f32; self.clusters];
        fit_centroids(&mut codebook, &self.indices, &w, scales, self.sparse);
        let out: Vec<f32> = self
            .indices
            .iter()
            .zip(scales)
            .map(|(&c, s)| s * codebook[c as usize])
            .collect();
        Ok(Some(Tensor::from_vec(out, value.dims(), value.device())?))
    }
}

/// Shares the weights of every tensor in `masks` (k-means per layer, `cfg`'s bits and
/// initialisation; sparse layers keep index 0 for zero) and writes the shared values into the
/// model. Returns the codebooks and assignments.
pub fn share_layers(
    exec: &GraphExecutor,
    masks: &BTreeMap<String, Vec<bool>>,
    cfg: &CompressConfig,
) -> Result<BTreeMap<String, SharedLayer>> {
    let mut layers = BTreeMap::new();
    for (name, mask) in masks {
        let p = exec.param(name).context("shared tensor")?;
        let bits = if p.var.rank() == 4 {
            cfg.bits_conv
        } else {
            cfg.bits_fc
        };
        let sparse = mask.iter().any(|&k| !k);
        let layer = share_weights(&values(exec, name)?, bits, sparse, cfg.init, cfg.seed)
            .with_context(|| format!("weight sharing of '{name}'"))?;
        set_values(exec, name, layer.values())?;
        layers.insert(name.clone(), layer);
    }
    Ok(layers)
}

/// The optimizer settings of centroid fine-tuning with `kind`: the paper's SGD as in training,
/// or Adam without weight decay (shared values are not pulled towards zero).
pub fn centroid_optimizer(kind: OptimizerKind) -> OptimizerConfig {
    match kind {
        OptimizerKind::Sgd => OptimizerConfig::default(),
        OptimizerKind::Adam => OptimizerConfig {
            kind: OptimizerKind::Adam,
            weight_decay: 0.0,
            ..OptimizerConfig::default()
        },
    }
}

/// Fine-tunes `layers` (already written into the model by [`share_layers`]) on `data` for
/// `rc.fine_tune_epochs`, pruned weights held at zero by `masks`: the centroids with the
/// assignment fixed, or every weight with the codebooks fixed (`rc.fine_tune_scope`). Reads the
/// new codebooks or indices back. Without data or epochs, nothing changes.
pub fn fine_tune_layers(
    exec: &GraphExecutor,
    layers: &mut BTreeMap<String, SharedLayer>,
    masks: &BTreeMap<String, Vec<bool>>,
    data: Option<&Dataset>,
    rc: &RetrainConfig,
) -> Result<()> {
    let Some(data) = data.filter(|_| rc.fine_tune_epochs > 0) else {
        return Ok(());
    };
    let mut opt = Optimizer::new(centroid_optimizer(rc.fine_tune_optimizer));
    let mut latent = BTreeMap::new();
    for (name, layer) in layers.iter() {
        if layer.sparse {
            let p = exec.param(name).context("shared tensor")?.clone();
            let mask = masks.get(name).context("a shared layer without its mask")?;
            opt.set_mask(&p, mask_tensor(exec, name, mask)?)?;
        }
        match rc.fine_tune_scope {
            FineTuneScope::Centroids => {
                opt.set_gradient_hook(name, Box::new(ClusterGradient::for_layer(layer)));
            }
            FineTuneScope::Weights => {
                let hook = std::sync::Arc::new(LatentRounding::for_layer(layer)?);
                latent.insert(name.clone(), hook.clone());
                opt.set_gradient_hook(name, Box::new(hook));
            }
        }
    }
    // Only the shared tensors and the small raw ones (biases) train.
    let cfg = train_config(rc, rc.fine_tune_epochs, rc.fine_tune_lr, rc.seed + 1000);
    train(exec, data, None, &cfg, &mut opt).context("fine-tuning after weight sharing")?;
    for (name, layer) in layers.iter_mut() {
        match latent.get(name) {
            // Every weight sits on its codebook entry: the indices are the new assignment.
            Some(hook) => layer.indices = hook.indices()?,
            // The members of a cluster are tied (each its row's scale times the centroid), so
            // the least-squares fit is the centroid itself.
            None => layer.fit_codebook(&values(exec, name)?),
        }
        // The model holds exactly what the file will.
        set_values(exec, name, layer.values())?;
    }
    Ok(())
}

/// [`share_layers`] then [`fine_tune_layers`].
pub fn share_and_fine_tune(
    exec: &GraphExecutor,
    masks: &BTreeMap<String, Vec<bool>>,
    cfg: &CompressConfig,
    data: Option<&Dataset>,
    rc: &RetrainConfig,
) -> Result<BTreeMap<String, SharedLayer>> {
    let mut layers = share_layers(exec, masks, cfg)?;
    fine_tune_layers(exec, &mut layers, masks, data, rc)?;
    Ok(layers)
}

/// One level of [`prune_to_budget`]: the densities tried and what they kept on validation data.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BudgetStep {
    /// One-shot loss (percentage points) each tensor was allowed on the sensitivity curves.
    pub tolerance_pp: f64,
    /// Densities of this level.
    pub densities: BTreeMap<String, f64>,
    /// Validation accuracy after pruning to them and retraining.
    pub validation_accuracy: f64,
    /// Whether the level stayed within the budget (and was kept).
    pub accepted: bool,
}

/// The one-shot tolerances tried by [`prune_to_budget`], in percentage points: each level lets
/// every tensor lose this much on its own sensitivity curve.
pub const BUDGET_LEVELS_PP: &[f64] = &[0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// Pruning masks by tensor name (true = kept).
pub type Masks = BTreeMap<String, Vec<bool>>;

/// How many times [`prune_to_budget`] halves (geometrically) the step between the last level
/// within the budget and the first over it.
pub const BUDGET_REFINEMENTS: usize = 2;

/// Prunes as far as an accuracy budget allows: per-layer densities come from the sensitivity
/// curves at growing tolerances ([`BUDGET_LEVELS_PP`]); each level prunes further and retrains
/// (masks fixed), and is kept while the validation accuracy stays at least
/// `baseline − max_drop` (fractions). A level over budget is undone (weights and masks
/// restored); then densities halfway (geometric mean, per tensor) between the last level kept and
/// the one over budget are tried, [`BUDGET_REFINEMENTS`] times. Returns the masks of the last kept
/// level (all true when none was) and every level tried.
#[allow(clippy::too_many_arguments)]
pub fn prune_to_budget(
    exec: &GraphExecutor,
    report: &super::prune_sensitivity::SensitivityReport,
    baseline: f64,
    max_drop: f64,
    data: &Dataset,
    validation: &Dataset,
    rc: &RetrainConfig,
    mut after_step: impl FnMut(&BudgetStep) -> Result<()>,
) -> Result<(Masks, Vec<BudgetStep>)> {
    if !(max_drop.is_finite() && max_drop >= 0.0) {
        bail!("the accuracy budget must be ≥ 0, got {max_drop}");
    }
    let mut masks: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    for c in &report.curves {
        masks.insert(c.tensor.clone(), vec![true; c.elements]);
    }
    let mut current: BTreeMap<String, f64> = masks.keys().map(|n| (n.clone(), 1.0)).collect();
    let mut steps: Vec<BudgetStep> = Vec::new();
    // Prunes to `next`, retrains, measures; undoes it all when over budget.
    let mut try_level = |next: &BTreeMap<String, f64>,
                         tolerance: f64,
                         seed: u64|
     -> Result<Option<BTreeMap<String, Vec<bool>>>> {
        let snapshot: Vec<Tensor> = exec
            .params()
            .iter()
            .map(|p| p.var.as_tensor().copy())
            .collect::<candle_core::Result<_>>()?;
        let mut opt = Optimizer::new(OptimizerConfig::default());
        let mut level_masks = BTreeMap::new();
        for (name, &d) in next {
            level_masks.insert(name.clone(), prune_layer(exec, name, d, &mut opt)?);
        }
        if rc.epochs_per_round > 0 {
            let cfg = train_config(rc, rc.epochs_per_round, rc.lr, rc.seed + seed);
            train(exec, data, None, &cfg, &mut opt)
                .with_context(|| format!("retraining at budget level {tolerance} pp"))?;
        }
        let accuracy = crate::train::evaluate(exec, validation, 1000, false)?.accuracy;
        let accepted = accuracy + 1e-12 >= baseline - max_drop;
        let step = BudgetStep {
            tolerance_pp: tolerance,
            densities: next.clone(),
            validation_accuracy: accuracy,
            accepted,
        };
        after_step(&step)?;
        steps.push(step);
        if accepted {
            Ok(Some(level_masks))
        } else {
            for (p, t) in exec.params().iter().zip(&snapshot) {
                p.var.set(t)?;
            }
            Ok(None)
        }
    };
    let mut over: Option<(BTreeMap<String, f64>, f64)> = None;
    let mut current_tolerance = 0.0;
    for (level, &tolerance) in BUDGET_LEVELS_PP.iter().enumerate() {
        let mut next = report.densities_for_drop(tolerance / 100.0);
        // Densities only ever fall: a level never gives back what an earlier one pruned.
        for (name, d) in next.iter_mut() {
            *d = d.min(current[name]);
        }
        if next == current {
            continue;
        }
        match try_level(&next, tolerance, level as u64 + 1)? {
            Some(m) => {
                masks = m;
                current = next;
                current_tolerance = tolerance;
            }
            None => {
                over = Some((next, tolerance));
                break;
            }
        }
    }
    // Refine between the last level kept and the first over budget.
    for r in 0..BUDGET_REFINEMENTS {
        let Some((over_d, over_t)) = over.clone() else {
            break;
        };
        let mid: BTreeMap<String, f64> = current
            .iter()
            .map(|(n, &d)| (n.clone(), (d * over_d[n]).sqrt()))
            .collect();
        // Not worth a retraining when no tensor would lose even 1% of its weights.
        if mid.iter().all(|(n, d)| *d > current[n] * 0.99) {
            break;
        }
        let mid_t = (current_tolerance * over_t).sqrt();
        match try_level(&mid, mid_t, 100 + r as u64)? {
            Some(m) => {
                masks = m;
                current = mid;
                current_tolerance = mid_t;
            }
            None => over = Some((mid, mid_t)),
        }
    }
    Ok((masks, steps))
}
