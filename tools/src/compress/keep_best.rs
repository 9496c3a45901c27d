//! The pipeline keeps the best model it measured: a stage meant to recover accuracy that loses
//! it instead is undone and reported, and a result no better than guessing is an error.

use crate::compress::share::SharedLayer;
use crate::data::Dataset;
use crate::onnx::exec::GraphExecutor;
use anyhow::{Result, bail};
use candle_core::Tensor;
use std::collections::BTreeMap;

/// The model's parameters and shared layers at one point of the pipeline, to return to.
pub struct Checkpoint {
    params: Vec<Tensor>,
    layers: BTreeMap<String, SharedLayer>,
}

impl Checkpoint {
    /// Copies every parameter of `exec` and the codebooks of `layers`.
    pub fn take(exec: &GraphExecutor, layers: &BTreeMap<String, SharedLayer>) -> Result<Self> {
        let params = exec
            .params()
            .iter()
            .map(|p| p.var.as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Checkpoint {
            params,
            layers: layers.clone(),
        })
    }

    /// Puts the model and the layers back as they were when the checkpoint was taken.
    pub fn restore(
        self,
        exec: &GraphExecutor,
        layers: &mut BTreeMap<String, SharedLayer>,
    ) -> Result<()> {
        for (p, saved) in exec.params().iter().zip(&self.params) {
            p.var.set(saved)?;
        }
        *layers = self.layers;
        Ok(())
    }
}

/// After the stage measured last in `stages` (name, accuracy), undoes it with `before` when its
/// accuracy is below the previous stage's (or not a number), records the undoing as a stage,
/// and returns what the report should say; `None` when the stage is kept.
pub fn keep_better(
    exec: &GraphExecutor,
    layers: &mut BTreeMap<String, SharedLayer>,
    before: Checkpoint,
    stages: &mut Vec<(String, f64)>,
) -> Result<Option<String>> {
    let [.., (_, previous), (stage, now)] = stages.as_slice() else {
        return Ok(None);
    };
    let (previous, now) = (*previous, *now);
    if now >= previous {
        return Ok(None);
    }
    let note = format!(
        "{stage} lowered accuracy from {:.2}% to {:.2}%: rolled back, the model before it is kept",
        previous * 100.0,
        now * 100.0
    );
    let undone = format!("{stage} rolled back");
    before.restore(exec, layers)?;
    stages.push((undone, previous));
    Ok(Some(note))
}

/// Accuracy within this factor of guessing (1 / classes) counts as chance level.
const CHANCE_MARGIN: f64 = 1.5;

/// Whether `score` (accuracy, or top-1 agreement with the dense model) is no better than
/// guessing among `classes`; never for fewer than two classes.
pub fn at_chance(score: f64, classes: usize) -> bool {
    // A score that is not a number (a failed evaluation) is not above chance either.
    let above_chance = score > CHANCE_MARGIN / classes as f64;
    classes >= 2 && !above_chance
}

/// Refuses a compressed model whose top-1 agreement with its dense original is at chance
/// level: it has lost what the dense model knew.
pub fn refuse_chance_agreement(top1: f64, classes: usize) -> Result<()> {
    if at_chance(top1, classes) {
        bail!(
            "the compressed model is at chance level: it agrees with the dense model on {:.2}% of \
             the views ({classes} classes, guessing gives {:.2}%); nothing written. Ask for a \
             lower --target-ratio or a higher --min-agreement",
            top1 * 100.0,
            100.0 / classes as f64
        );
    }
    Ok(())
}

/// Refuses a compressed model whose accuracy on `set` is at chance level when the dense model
/// was clearly above it: such a file classifies nothing, and writing it with success would hide
/// that. A dense model at chance itself (untrained) is not judged.
pub fn refuse_chance_level(dense: f64, compressed: f64, set: &Dataset) -> Result<()> {
    let classes = set.labels.iter().max().map_or(0, |&m| m as usize + 1);
    if classes < 2 {
        return Ok(());
    }
    let chance = 1.0 / classes as f64;
    if at_chance(compressed, classes) && !at_chance(dense, classes) {
        bail!(
            "the compressed model is at chance level: {:.2}% on {} ({classes} classes, guessing \
             gives {:.2}%; the dense model has {:.2}%); nothing written. Prune less (--density), \
             use more bits, or retrain on more images (--train-limit)",
            compressed * 100.0,
            set.source,
            chance * 100.0,
            dense * 100.0
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(classes: u32) -> Dataset {
        Dataset {
            source: "test".into(),
            images: vec![0.0; 2 * classes as usize],
            labels: (0..classes).chain(0..classes).collect(),
            sample_shape: [1, 1, 1],
            class_names: Vec::new(),
        }
    }

    #[test]
    fn chance_level_is_an_error_only_below_a_dense_model_above_it() {
        let ten = set(10);
        let err = refuse_chance_level(0.8857, 0.1003, &ten).unwrap_err();
        assert!(err.to_string().contains("chance level: 10.03%"), "{err}");
        assert!(refuse_chance_level(0.8857, f64::NAN, &ten).is_err());
        assert!(refuse_chance_level(0.8857, 0.80, &ten).is_ok());
        // An untrained dense model: nothing to lose.
        assert!(refuse_chance_level(0.11, 0.10, &ten).is_ok());
    }

    #[test]
    fn chance_agreement_is_an_error() {
        assert!(refuse_chance_agreement(0.001, 1000).is_err());
        assert!(refuse_chance_agreement(0.82, 1000).is_ok());
        // No labels, no class count: not judged.
        assert!(refuse_chance_agreement(0.0, 0).is_ok());
    }
}
