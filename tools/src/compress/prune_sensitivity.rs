//! Pruning sensitivity (Han et al. 2015, figure 6): prune one tensor alone to each density of a
//! ladder, measure accuracy without retraining, put the tensor back. The curves show which
//! layers tolerate pruning; [`SensitivityReport::densities_for_drop`] turns them into per-layer
//! densities for an accuracy budget.

use super::prune::mask_by_density;
use crate::data::Dataset;
use crate::onnx::GraphExecutor;
use crate::progress::progress_bar;
use crate::train::evaluate;
use anyhow::{Context, Result, bail};
use candle_core::Tensor;
use serde::Serialize;
use std::collections::BTreeMap;

/// The default ladder of densities (fraction of weights kept), from dense to 1%.
pub const DEFAULT_LADDER: &[f64] = &[
    1.0, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02, 0.01,
];

/// Accuracy with one tensor pruned to one density.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SensitivityPoint {
    /// Fraction of the tensor's weights kept.
    pub density: f64,
    /// Accuracy (0–1) of the whole model with only this tensor pruned.
    pub accuracy: f64,
}

/// One tensor's curve.
#[derive(Debug, Clone, Serialize)]
pub struct SensitivityCurve {
    /// Initializer name.
    pub tensor: String,
    /// Number of weights in the tensor.
    pub elements: usize,
    /// One point per density of the ladder, in ladder order.
    pub points: Vec<SensitivityPoint>,
}

/// The curves of every prunable tensor and the unpruned accuracy they start from.
#[derive(Debug, Clone, Serialize)]
pub struct SensitivityReport {
    /// Accuracy of the model as given.
    pub baseline: f64,
    /// Images the accuracies were measured on.
    pub images: usize,
    /// One curve per tensor.
    pub curves: Vec<SensitivityCurve>,
}

impl SensitivityReport {
    /// Per tensor, the lowest density of the ladder whose one-shot accuracy loss is at most
    /// `max_drop` (a fraction: 0.01 is one percentage point), scanning from dense towards sparse
    /// and stopping at the first density that loses more, so a noisy curve never jumps past a
    /// failure. A tensor that cannot be pruned at all within the budget gets 1.0.
    pub fn densities_for_drop(&self, max_drop: f64) -> BTreeMap<String, f64> {
        let floor = self.baseline - max_drop;
        self.curves
            .iter()
            .map(|c| {
                let mut pts = c.points.clone();
                pts.sort_by(|a, b| b.density.total_cmp(&a.density));
                let mut chosen = 1.0;
                for p in pts {
                    if p.accuracy + 1e-12 < floor {
                        break;
                    }
                    chosen = p.density;
                }
                (c.tensor.clone(), chosen)
            })
            .collect()
    }
}

/// Checks a ladder of densities: each in (0, 1].
pub fn check_ladder(ladder: &[f64]) -> Result<()> {
    if ladder.is_empty() {
        bail!("the density ladder is empty: give densities in (0, 1], e.g. 0.5,0.2,0.1");
    }
    for &d in ladder {
        if !(d > 0.0 && d <= 1.0) {
            bail!("density {d} of the ladder is outside (0, 1]");
        }
    }
    Ok(())
}

/// Measures the sensitivity of each tensor in `tensors` on `data` (evaluation mode). The model is
/// left as it was.
pub fn sensitivity(
    exec: &GraphExecutor,
    tensors: &[String],
    ladder: &[f64],
    data: &Dataset,
    progress: bool,
) -> Result<SensitivityReport> {
    check_ladder(ladder)?;
    if tensors.is_empty() {
        bail!("{}: no prunable tensor to measure", exec.source());
    }
    let baseline = evaluate(exec, data, 1000, false)?.accuracy;
    let bar = progress_bar(progress, tensors.len() * ladder.len(), "sensitivity");
    let mut curves = Vec::new();
    for name in tensors {
        let p = exec
            .param(name)
            .with_context(|| format!("'{name}' is not a trainable tensor of the model"))?;
        let original = p.var.as_tensor().copy()?;
        let values: Vec<f32> = original.flatten_all()?.to_vec1()?;
        let mut points = Vec::new();
        let result = (|| -> Result<()> {
            for &d in ladder {
                let mask = mask_by_density(&values, d)?;
                let pruned: Vec<f32> = values
                    .iter()
                    .zip(&mask)
                    .map(|(&v, &k)| if k { v } else { 0.0 })
                    .collect();
                p.var
                    .set(&Tensor::from_vec(pruned, p.var.dims(), exec.device())?)?;
                let accuracy = evaluate(exec, data, 1000, false)?.accuracy;
                points.push(SensitivityPoint {
                    density: d,
                    accuracy,
                });
                bar.inc(1);
            }
            Ok(())
        })();
        // Put the tensor back whatever happened.
        p.var.set(&original)?;
        result.with_context(|| format!("sensitivity of '{name}'"))?;
        curves.push(SensitivityCurve {
            tensor: name.clone(),
            elements: values.len(),
            points,
        });
    }
    bar.finish_and_clear();
    Ok(SensitivityReport {
        baseline,
        images: data.len(),
        curves,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(points: &[(f64, f64)]) -> SensitivityReport {
        SensitivityReport {
            baseline: 0.90,
            images: 100,
            curves: vec![SensitivityCurve {
                tensor: "w".into(),
                elements: 10,
                points: points
                    .iter()
                    .map(|&(density, accuracy)| SensitivityPoint { density, accuracy })
                    .collect(),
            }],
        }
    }

    #[test]
    fn picks_the_sparsest_density_within_the_budget_and_stops_at_the_first_failure() {
        let r = report(&[
            (1.0, 0.90),
            (0.5, 0.897),
            (0.2, 0.893),
            (0.1, 0.85),
            (0.05, 0.895),
        ]);
        // 0.05 is within the budget again, but 0.1 failed first: noise is not trusted.
        assert_eq!(r.densities_for_drop(0.01)["w"], 0.2);
        assert_eq!(r.densities_for_drop(0.005)["w"], 0.5);
        assert_eq!(r.densities_for_drop(0.1)["w"], 0.05);
        // Nothing within budget: keep the tensor dense.
        let r = report(&[(0.5, 0.5)]);
        assert_eq!(r.densities_for_drop(0.01)["w"], 1.0);
    }

    #[test]
    fn ladders_outside_zero_one_are_refused() {
        assert!(check_ladder(&[]).is_err());
        assert!(check_ladder(&[0.5, 0.0]).is_err());
        assert!(check_ladder(&[1.5]).is_err());
        assert!(check_ladder(&[1.0, 0.1]).is_ok());
    }
}
