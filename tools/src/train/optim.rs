//! Optimizers (SGD with momentum/Nesterov, Adam; L2 weight decay), learning-rate schedules,
//! per-tensor gradient masks and gradient hooks.

use crate::onnx::Param;
use anyhow::{Context, Result, ensure};
use candle_core::Tensor;
use candle_core::backprop::GradStore;
use std::collections::HashMap;

/// Which update rule to use.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Stochastic gradient descent, optionally with (Nesterov) momentum.
    Sgd,
    /// Adam (Kingma & Ba), with L2 weight decay added to the gradient as PyTorch's `Adam` does.
    Adam,
}

/// Optimizer settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerConfig {
    /// Update rule.
    pub kind: OptimizerKind,
    /// SGD momentum (0 for none).
    pub momentum: f64,
    /// Nesterov momentum for SGD.
    pub nesterov: bool,
    /// L2 penalty added to every trainable tensor's gradient.
    pub weight_decay: f64,
    /// Adam's β₁.
    pub beta1: f64,
    /// Adam's β₂.
    pub beta2: f64,
    /// Adam's ε.
    pub eps: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Sgd,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// How the learning rate changes over training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleKind {
    /// The base rate throughout.
    Constant,
    /// Cosine annealing from the base rate to 0 over all steps.
    Cosine,
    /// The base rate multiplied by `gamma` every `step_epochs` epochs.
    Step,
}

/// A learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Shape of the schedule.
    pub kind: ScheduleKind,
    /// Base learning rate.
    pub lr: f64,
    /// For [`ScheduleKind::Step`]: epochs between decays.
    pub step_epochs: usize,
    /// For [`ScheduleKind::Step`]: decay factor.
    pub gamma: f64,
}

impl Schedule {
    /// The learning rate at optimizer step `step` (0-based) of `total` steps, `per_epoch` steps an epoch.
    pub fn lr_at(&self, step: usize, total: usize, per_epoch: usize) -> f64 {
        match self.kind {
            ScheduleKind::Constant => self.lr,
            ScheduleKind::Cosine => {
                let t = step as f64 / total.max(1) as f64;
                self.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
            ScheduleKind::Step => {
                let epoch = step / per_epoch.max(1);
                self.lr * self.gamma.powi((epoch / self.step_epochs.max(1)) as i32)
            }
        }
    }
}

/// Replaces a tensor's gradient before the update, e.g. weight sharing's per-cluster sums.
pub trait GradientHook: Send + Sync {
    /// The gradient to use for `param` (named `name`) instead of `grad`.
    fn replace_gradient(&self, name: &str, param: &Tensor, grad: &Tensor) -> Result<Tensor>;

    /// The value to keep instead of `value`, the parameter after an update (and its mask): a
    /// projection back onto the values the hook allows. `None` (the default) keeps `value`.
    fn project(&self, _name: &str, _value: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// Per-tensor optimizer state.
#[derive(Default)]
struct State {
    /// SGD momentum buffer, or Adam's first moment.
    first: Option<Tensor>,
    /// Adam's second moment.
    second: Option<Tensor>,
}

/// Applies updates to trainable variables from their gradients.
pub struct Optimizer {
    config: OptimizerConfig,
    state: HashMap<String, State>,
    masks: HashMap<String, Tensor>,
    hooks: HashMap<String, Box<dyn GradientHook>>,
    steps: usize,
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("config", &self.config)
            .field("masks", &self.masks.keys().collect::<Vec<_>>())
            .field("hooks", &self.hooks.keys().collect::<Vec<_>>())
            .field("steps", &self.steps)
            .finish()
    }
}

impl Optimizer {
    /// A fresh optimizer.
    pub fn new(config: OptimizerConfig) -> Self {
        Optimizer {
            config,
            state: HashMap::new(),
            masks: HashMap::new(),
            hooks: HashMap::new(),
            steps: 0,
        }
    }

    /// The settings.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Keeps `param` zero wherever `mask` is 0: applies the mask to the weights now, and from now on
    /// to the gradient before each update and to the weights after it. `mask` holds 0s and 1s and has
    /// the parameter's shape.
    pub fn set_mask(&mut self, param: &Param, mask: Tensor) -> Result<()> {
        let value = param.var.as_tensor();
        ensure!(
            mask.dims() == value.dims(),
            "mask for '{}' has shape {:?}, the tensor has {:?}",
            param.name,
            mask.dims(),
            value.dims()
        );
        let mask = mask.to_dtype(value.dtype())?;
        param.var.set(&apply_mask(value, &mask)?)?;
        self.masks.insert(param.name.clone(), mask);
        Ok(())
    }

    /// Removes the mask of `name`, if any.
    pub fn clear_mask(&mut self, name: &str) {
        self.masks.remove(name);
    }

    /// Routes the gradient of tensor `name` through `hook` before masking and the update.
    pub fn set_gradient_hook(&mut self, name: &str, hook: Box<dyn GradientHook>) {
        self.hooks.insert(name.to_string(), hook);
    }

    /// Number of updates applied so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// One update of every parameter in `params` that has a gradient in `grads`, with learning rate `lr`.
    pub fn step<'a>(
        &mut self,
        params: impl IntoIterator<Item = &'a Param>,
        grads: &GradStore,
        lr: f64,
    ) -> Result<()> {
        self.steps += 1;
        let c = self.config.clone();
        for p in params {
            let Some(grad) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            // Detached: the update must not record a graph through the variable, or the
            // momentum buffers would chain every step's graph and memory would grow without bound.
            let w = &p.var.as_tensor().detach();
            let grad = &grad.detach();
            let mut g = match self.hooks.get(&p.name) {
                Some(hook) => hook
                    .replace_gradient(&p.name, w, grad)
                    .with_context(|| format!("gradient hook of '{}'", p.name))?,
                None => grad.clone(),
            };
            let mask = self.masks.get(&p.name);
            if let Some(m) = mask {
                g = (g * m)?;
            }
            if c.weight_decay != 0.0 {
                g = (g + (w * c.weight_decay)?)?;
            }
            let state = self.state.entry(p.name.clone()).or_default();
            let update = match c.kind {
                OptimizerKind::Sgd if c.momentum != 0.0 => {
                    let buf = match state.first.take() {
                        Some(b) => ((b * c.momentum)? + &g)?,
                        None => g.clone(),
                    };
                    let u = if c.nesterov {
                        (&g + (&buf * c.momentum)?)?
                    } else {
                        buf.clone()
                    };
                    state.first = Some(buf);
                    u
                }
                OptimizerKind::Sgd => g,
                OptimizerKind::Adam => {
                    let m = match state.first.take() {
                        Some(m) => ((m * c.beta1)? + (&g * (1.0 - c.beta1))?)?,
                        None => (&g * (1.0 - c.beta1))?,
                    };
                    let v = match state.second.take() {
                        Some(v) => ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?,
                        None => (g.sqr()? * (1.0 - c.beta2))?,
                    };
                    let t = self.steps as i32;
                    let m_hat = (&m / (1.0 - c.beta1.powi(t)))?;
                    let v_hat = (&v / (1.0 - c.beta2.powi(t)))?;
                    state.first = Some(m);
                    state.second = Some(v);
                    (m_hat / (v_hat.sqrt()? + c.eps)?)?
                }
            };
            let mut next = (w - (update * lr)?)?;
            if let Some(m) = mask {
                next = apply_mask(&next, m)?;
            }
            if let Some(hook) = self.hooks.get(&p.name)
                && let Some(projected) = hook
                    .project(&p.name, &next)
                    .with_context(|| format!("projection of '{}'", p.name))?
            {
                next = projected;
            }
            p.var.set(&next)?;
        }
        Ok(())
    }
}

/// `value` where `mask` is 1 and +0.0 where it is 0 (a product would leave −0.0 behind
/// negative weights).
fn apply_mask(value: &Tensor, mask: &Tensor) -> Result<Tensor> {
    Ok(mask.ne(0.0)?.where_cond(value, &value.zeros_like()?)?)
}
