//! Weight sharing: turn a (pruned) layer into a codebook and one index per weight, ready for the
//! `shared-dense` or `shared-sparse` encodings.

use super::kmeans::{KmeansInit, assign, kmeans_1d};
use anyhow::{Result, bail};
use nnzip_core::format::TensorData;

/// A layer after weight sharing.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedLayer {
    /// Codebook; for sparse layers entry 0 is `0.0` and means "pruned".
    pub codebook: Vec<f32>,
    /// One codebook index per weight.
    pub indices: Vec<u16>,
    /// Index width in bits.
    pub bits: u8,
    /// Whether index 0 is reserved for pruned weights.
    pub sparse: bool,
    /// One scale per row (index of the first dimension) multiplying that row's codebook values
    /// (binary16 values, as the file stores them); `None`: the codebook values are the weights.
    pub row_scales: Option<Vec<f32>>,
}

impl SharedLayer {
    /// The scale of every weight: its row's, or 1 without row scales.
    pub fn weight_scales(&self) -> Vec<f32> {
        match &self.row_scales {
            Some(scales) => {
                let row = self.indices.len() / scales.len().max(1);
                scales
                    .iter()
                    .flat_map(|&s| std::iter::repeat_n(s, row))
                    .collect()
            }
            None => vec![1.0; self.indices.len()],
        }
    }

    /// The weights the layer now stands for.
    pub fn values(&self) -> Vec<f32> {
        let scales = self.weight_scales();
        self.indices
            .iter()
            .zip(scales)
            .map(|(&i, s)| self.codebook[i as usize] * s)
            .collect()
    }

    /// Sets each codebook value to the least-squares fit of the weights `w` assigned to it
    /// (`Σ s·w / Σ s²` with `s` the weights' row scales: the plain mean without them). Used to
    /// read fine-tuned centroids back from a model. Zero of sparse layers and unused entries
    /// stay as they are.
    pub fn fit_codebook(&mut self, w: &[f32]) {
        let scales = self.weight_scales();
        fit_centroids(&mut self.codebook, &self.indices, w, &scales, self.sparse);
    }

    /// The tensor payload for the `.nnz` writer.
    pub fn to_tensor_data(&self, gap_bits: u8) -> TensorData {
        if self.sparse {
            TensorData::SharedSparse {
                codebook: self.codebook.clone(),
                indices: self.indices.clone(),
                index_bits: self.bits,
                gap_bits,
            }
        } else {
            TensorData::SharedDense {
                codebook: self.codebook.clone(),
                indices: self.indices.clone(),
                index_bits: self.bits,
            }
        }
    }

    /// The range-coded payload (`shared-sparse-ac`, format version 2), for sparse layers only.
    pub fn to_ac_tensor_data(&self) -> Option<TensorData> {
        self.sparse.then(|| TensorData::SharedSparseAc {
            codebook: self.codebook.clone(),
            indices: self.indices.clone(),
            index_bits: self.bits,
        })
    }
}

/// Sets `codebook[j]` to the least-squares fit `Σ s·w / Σ s²` of the weights `w` that
/// `indices` assigns to cluster `j`, `scales` being each weight's scale (all 1: the mean). With
/// `sparse`, entry 0 (the pruned zero) stays; so do entries no weight is assigned to.
pub fn fit_centroids(
    codebook: &mut [f32],
    indices: &[u16],
    w: &[f32],
    scales: &[f32],
    sparse: bool,
) {
    let k = codebook.len();
    let (mut num, mut den) = (vec![0f64; k], vec![0f64; k]);
    for ((&i, &x), &s) in indices.iter().zip(w).zip(scales) {
        num[i as usize] += f64::from(s) * f64::from(x);
        den[i as usize] += f64::from(s) * f64::from(s);
    }
    for (j, c) in codebook.iter_mut().enumerate() {
        if den[j] > 0.0 && !(sparse && j == 0) {
            *c = (num[j] / den[j]) as f32;
        }
    }
}

/// Per row of a tensor with `rows` rows (`w.len()` a multiple), the scale that maps the row's
/// largest magnitude to 1 (rounded to binary16, as stored), and the weights divided by it.
/// Returns `None` when a scale does not fit binary16 (a magnitude over 65504): such a tensor is
/// shared without row scales. Rows of zeros (or below binary16's smallest value) get scale 0
/// and normalised weights 0.
pub fn row_normalise(w: &[f32], rows: usize) -> Option<(Vec<f32>, Vec<f32>)> {
    if rows == 0 || !w.len().is_multiple_of(rows) {
        return None;
    }
    let row = w.len() / rows;
    let mut scales = Vec::with_capacity(rows);
    let mut normalised = Vec::with_capacity(w.len());
    for chunk in w.chunks(row.max(1)).take(rows) {
        let max = chunk.iter().fold(0f32, |m, x| m.max(x.abs()));
        let s = nnzip_core::format::round_row_scale(max);
        if !s.is_finite() {
            return None;
        }
        scales.push(s);
        normalised.extend(chunk.iter().map(|&x| if s > 0.0 { x / s } else { 0.0 }));
    }
    Some((scales, normalised))
}

/// Clusters a layer's weights into `2^bits` shared values. With `sparse`, exact zeros stay zero
/// (index 0 = 0.0) and the non-zero weights share the other `2^bits − 1` entries.
pub fn share_weights(
    w: &[f32],
    bits: u8,
    sparse: bool,
    init: KmeansInit,
    seed: u64,
) -> Result<SharedLayer> {
    if !(1..=16).contains(&bits) {
        bail!("bits must be between 1 and 16, got {bits}");
    }
    let k = 1usize << bits;
    if sparse {
        let survivors: Vec<f32> = w.iter().copied().filter(|&x| x != 0.0).collect();
        let c = kmeans_1d(&survivors, k - 1, init, seed, 100)?;
        let mut codebook = vec![0.0f32];
        codebook.extend(&c.centroids);
        let inner = assign(w, &c.centroids);
        let indices = w
            .iter()
            .zip(inner)
            .map(|(&x, i)| if x == 0.0 { 0 } else { i + 1 })
            .collect();
        Ok(SharedLayer {
            codebook,
            indices,
            bits,
            sparse,
            row_scales: None,
        })
    } else {
        let c = kmeans_1d(w, k, init, seed, 100)?;
        let indices = assign(w, &c.centroids);
        Ok(SharedLayer {
            codebook: c.centroids,
            indices,
            bits,
            sparse,
            row_scales: None,
        })
    }
}

/// Centroid fine-tuning (the paper's step 3b): each centroid moves by the sum of the gradients of
/// the weights that share it, times the learning rate; the assignment stays fixed and, in sparse
/// layers, the zero entry stays zero.
pub fn fine_tune_centroids(layer: &mut SharedLayer, grad: &[f32], lr: f32) {
    let sums = cluster_gradient_sums(&layer.indices, grad, layer.codebook.len(), layer.sparse);
    for (c, g) in layer.codebook.iter_mut().zip(sums) {
        *c -= lr * g;
    }
}

/// Per cluster, the sum of the gradients of the weights assigned to it (`indices[i]` is weight
/// `i`'s cluster). With `sparse`, cluster 0 is the pruned zero and its sum is 0: it never moves.
pub fn cluster_gradient_sums(
    indices: &[u16],
    grad: &[f32],
    clusters: usize,
    sparse: bool,
) -> Vec<f32> {
    let mut sums = vec![0f32; clusters];
    for (&i, &g) in indices.iter().zip(grad) {
        sums[i as usize] += g;
    }
    if sparse && clusters > 0 {
        sums[0] = 0.0;
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_sharing_keeps_zeros_and_bounds_the_codebook() {
        let w: Vec<f32> = (0..1000)
            .map(|i| {
                if i % 3 == 0 {
                    0.0
                } else {
                    ((i * 37 % 101) as f32 - 50.0) / 100.0
                }
            })
            .collect();
        let s = share_weights(&w, 3, true, KmeansInit::Linear, 0).unwrap();
        assert!(s.codebook.len() <= 8);
        assert_eq!(s.codebook[0], 0.0);
        for (x, &i) in w.iter().zip(&s.indices) {
            assert_eq!(*x == 0.0, i == 0);
        }
        let v = s.values();
        let err: f32 = w
            .iter()
            .zip(&v)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 0.1, "max error {err}");
    }

    #[test]
    fn centroid_fine_tuning_sums_gradients_per_cluster() {
        let mut l = SharedLayer {
            codebook: vec![0.0, 1.0, 2.0],
            indices: vec![1, 1, 2, 0],
            bits: 2,
            sparse: true,
            row_scales: None,
        };
        fine_tune_centroids(&mut l, &[0.5, 0.25, -1.0, 9.0], 0.1);
        assert_eq!(l.codebook, vec![0.0, 1.0 - 0.075, 2.1]);
        assert!(share_weights(&[1.0], 0, false, KmeansInit::Linear, 0).is_err());
    }
}
