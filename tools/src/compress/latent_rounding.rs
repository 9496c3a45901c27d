//! Fine-tuning every shared weight with the sharing kept: each weight keeps a float "latent"
//! value that training moves, and the model always runs with that value rounded to the nearest
//! entry of the layer's codebook (times its row's scale). The gradient reaches the latent value
//! as if the rounding were not there (the straight-through estimator), so a weight changes its
//! cluster once its latent value has moved past the midpoint to a neighbouring entry.
//!
//! Centroid fine-tuning ([`super::retrain::fine_tune_layers`]) moves whole clusters with the
//! assignment fixed; this moves single weights between clusters with the codebook fixed, so the
//! file keeps its codebooks and index widths and only the indices (and their entropy) change.

use super::share::SharedLayer;
use crate::train::GradientHook;
use anyhow::{Result, bail};
use candle_core::Tensor;
use std::sync::{Arc, Mutex};

/// The training state of one layer: latent values, what the model runs with, and the indices.
#[derive(Debug)]
struct Latent {
    latent: Vec<f32>,
    rounded: Vec<f32>,
    indices: Vec<u16>,
}

/// A [`GradientHook`] that trains the latent values of one shared layer (see the module).
#[derive(Debug)]
pub struct LatentRounding {
    /// The codebook's entries a weight may take, ascending, with their index. For sparse layers
    /// entry 0 (the pruned zero) is left out: the pruning stays as it was.
    entries: Vec<(f32, u16)>,
    /// Per weight, its row's scale (all 1 without row scales).
    scales: Vec<f32>,
    /// For sparse layers: weights at index 0 are pruned and stay so.
    sparse: bool,
    state: Mutex<Latent>,
}

impl LatentRounding {
    /// The hook for `layer`, its latent values starting at the weights it stands for (so that
    /// training starts from the shared model exactly, error compensation included).
    pub fn for_layer(layer: &SharedLayer) -> Result<Self> {
        let mut entries: Vec<(f32, u16)> = layer
            .codebook
            .iter()
            .enumerate()
            .filter(|&(j, c)| !(layer.sparse && j == 0) && c.is_finite())
            .map(|(j, &c)| (c, j as u16))
            .collect();
        if entries.is_empty() {
            bail!("a shared layer without a codebook entry to round to");
        }
        entries.sort_by(|a, b| a.0.total_cmp(&b.0));
        let values = layer.values();
        Ok(LatentRounding {
            entries,
            scales: layer.weight_scales(),
            sparse: layer.sparse,
            state: Mutex::new(Latent {
                latent: values.clone(),
                rounded: values,
                indices: layer.indices.clone(),
            }),
        })
    }

    /// The codebook entry nearest to `x` (in codebook units): its value and index.
    fn nearest(&self, x: f32) -> (f32, u16) {
        let e = &self.entries;
        let above = e.partition_point(|&(c, _)| c < x);
        if above == 0 {
            return e[0];
        }
        if above == e.len() {
            return e[e.len() - 1];
        }
        let (lo, hi) = (e[above - 1], e[above]);
        if x - lo.0 <= hi.0 - x { lo } else { hi }
    }

    /// Moves the latent values by `update` (the optimizer's new value minus the one the model
    /// ran with) and rounds them again; returns what the model runs with next.
    fn step(&self, next: &[f32]) -> Result<Vec<f32>> {
        let mut st = self.state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        if next.len() != st.latent.len() {
            bail!(
                "{} values for a layer of {} weights",
                next.len(),
                st.latent.len()
            );
        }
        let Latent {
            latent,
            rounded,
            indices,
        } = &mut *st;
        for i in 0..next.len() {
            let s = self.scales[i];
            if (self.sparse && indices[i] == 0) || s == 0.0 {
                continue;
            }
            latent[i] += next[i] - rounded[i];
            let (c, j) = self.nearest(latent[i] / s);
            indices[i] = j;
            rounded[i] = s * c;
        }
        Ok(rounded.clone())
    }

    /// The indices the training ended with.
    pub fn indices(&self) -> Result<Vec<u16>> {
        let st = self.state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        Ok(st.indices.clone())
    }
}

impl GradientHook for LatentRounding {
    fn replace_gradient(&self, _name: &str, _param: &Tensor, grad: &Tensor) -> Result<Tensor> {
        // Straight through: the gradient at the rounded weight is the latent value's.
        Ok(grad.clone())
    }

    fn project(&self, _name: &str, value: &Tensor) -> Result<Option<Tensor>> {
        let next: Vec<f32> = value.flatten_all()?.to_vec1()?;
        let rounded = self.step(&next)?;
        Ok(Some(Tensor::from_vec(
            rounded,
            value.dims(),
            value.device(),
        )?))
    }
}

/// The optimizer owns the hook while the fine-tuning reads the indices back from it.
impl GradientHook for Arc<LatentRounding> {
    fn replace_gradient(&self, name: &str, param: &Tensor, grad: &Tensor) -> Result<Tensor> {
        self.as_ref().replace_gradient(name, param, grad)
    }

    fn project(&self, name: &str, value: &Tensor) -> Result<Option<Tensor>> {
        self.as_ref().project(name, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn layer(
        codebook: Vec<f32>,
        indices: Vec<u16>,
        sparse: bool,
        rows: Option<Vec<f32>>,
    ) -> SharedLayer {
        SharedLayer {
            codebook,
            indices,
            bits: 2,
            sparse,
            row_scales: rows,
        }
    }

    fn project(h: &LatentRounding, v: &[f32]) -> Vec<f32> {
        let t = Tensor::from_vec(v.to_vec(), v.len(), &Device::Cpu).unwrap();
        h.project("w", &t).unwrap().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn small_updates_accumulate_until_a_weight_crosses_the_midpoint() {
        let l = layer(vec![-1.0, 0.0, 1.0], vec![1, 1], false, None);
        let h = LatentRounding::for_layer(&l).unwrap();
        // Each step moves weight 0 by +0.2 from what the model ran with (0.0).
        assert_eq!(project(&h, &[0.2, 0.0]), vec![0.0, 0.0]);
        assert_eq!(project(&h, &[0.2, 0.0]), vec![0.0, 0.0]);
        // Latent 0.6 > 0.5: now on entry 1.0.
        assert_eq!(project(&h, &[0.2, 0.0]), vec![1.0, 0.0]);
        assert_eq!(h.indices().unwrap(), vec![2, 1]);
        // Beyond the last entry it stays there (latent 1.5); back below 0.5 it returns.
        assert_eq!(project(&h, &[1.9, 0.0]), vec![1.0, 0.0]);
        assert_eq!(project(&h, &[0.4, 0.0]), vec![1.0, 0.0]);
        assert_eq!(project(&h, &[0.4, 0.0]), vec![0.0, 0.0]);
        assert_eq!(h.indices().unwrap(), vec![1, 1]);
    }

    #[test]
    fn pruned_weights_stay_pruned_and_kept_ones_never_take_the_zero() {
        let l = layer(vec![0.0, -0.5, 0.5], vec![0, 2, 1], true, None);
        let h = LatentRounding::for_layer(&l).unwrap();
        let out = project(&h, &[0.3, -2.0, 0.02]);
        // The pruned weight ignores its update; the kept ones round among ±0.5 only (0.02 is
        // nearer the zero entry, which is reserved for pruned weights).
        assert_eq!(out, vec![0.0, -0.5, 0.5]);
        assert_eq!(h.indices().unwrap(), vec![0, 1, 2]);
    }

    #[test]
    fn row_scales_round_in_codebook_units() {
        // Row 0 scale 2, row 1 scale 0.5: weights are 2·c and 0.5·c.
        let l = layer(
            vec![-1.0, 1.0],
            vec![0, 1, 0, 1],
            false,
            Some(vec![2.0, 0.5]),
        );
        let h = LatentRounding::for_layer(&l).unwrap();
        assert_eq!(
            project(&h, &[-2.0, 2.0, -0.5, 0.5]),
            vec![-2.0, 2.0, -0.5, 0.5]
        );
        // Weight 0 moves +2.1 (latent 0.1 → codebook 0.05: nearer +1) and weight 2 moves +0.4
        // (latent −0.1 → −0.2 in codebook units: stays at −1).
        let out = project(&h, &[0.1, 2.0, -0.1, 0.5]);
        assert_eq!(out, vec![2.0, 2.0, -0.5, 0.5]);
        assert_eq!(h.indices().unwrap(), vec![1, 1, 0, 1]);
    }
}
