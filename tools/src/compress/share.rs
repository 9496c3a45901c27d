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
}

impl SharedLayer {
    /// The weights the layer now stands for.
    pub fn values(&self) -> Vec<f32> {
        self.indices
            .iter()
            .map(|&i| self.codebook[i as usize])
            .collect()
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
        })
    } else {
        let c = kmeans_1d(w, k, init, seed, 100)?;
        let indices = assign(w, &c.centroids);
        Ok(SharedLayer {
            codebook: c.centroids,
            indices,
            bits,
            sparse,
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
        };
        fine_tune_centroids(&mut l, &[0.5, 0.25, -1.0, 9.0], 0.1);
        assert_eq!(l.codebook, vec![0.0, 1.0 - 0.075, 2.1]);
        assert!(share_weights(&[1.0], 0, false, KmeansInit::Linear, 0).is_err());
    }
}
