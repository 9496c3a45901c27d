//! Runnable students: the teacher's graph and metadata with some weights replaced, and the
//! binary16 twin every agreement figure is compared with.

use anyhow::Result;
use nnzip_core::Model;
use nnzip_core::format::{NnzWriter, TensorData, TensorRecord};
use nnzip_core::graph::Weight;
use std::collections::BTreeMap;

/// Every weight of `weights` rounded to binary16 and back: the mildest rounding a stored model
/// can have (2× smaller than f32), as a reference for agreement figures. Views on which even
/// this model disagrees with the teacher are ties closer than any compression can keep.
pub fn binary16_weights(weights: &[Weight]) -> BTreeMap<String, Vec<f32>> {
    weights
        .iter()
        .map(|w| {
            let v = w
                .values
                .iter()
                .map(|&x| half::f16::from_f32(x).to_f32())
                .collect();
            (w.name.clone(), v)
        })
        .collect()
}

/// Builds runnable models from the teacher's graph and weights with some weights replaced.
#[derive(Debug, Clone)]
pub struct StudentBuilder {
    writer: NnzWriter,
    weights: Vec<Weight>,
}

impl StudentBuilder {
    /// From a packed (lossless) teacher.
    pub fn new(mut packed: NnzWriter) -> Self {
        let weights = crate::packing::take_raw_weights(&mut packed);
        StudentBuilder {
            writer: packed,
            weights,
        }
    }

    /// The teacher's weights.
    pub fn weights(&self) -> &[Weight] {
        &self.weights
    }

    /// The teacher's metadata, graph and no tensors: the writer to fill with the final tensors.
    pub fn empty_writer(&self) -> NnzWriter {
        self.writer.clone()
    }

    /// The teacher with the weights in `replace` (by name) swapped in, as a core model.
    pub fn model(&self, replace: &BTreeMap<String, Vec<f32>>) -> Result<Model> {
        let mut w = self.writer.clone();
        for t in &self.weights {
            let values = replace.get(&t.name).unwrap_or(&t.values).clone();
            w.push(TensorRecord {
                row_scales: None,
                name: t.name.clone(),
                shape: t.shape.clone(),
                data: TensorData::RawF32(values),
            })?;
        }
        Ok(Model::from_bytes(&w.to_bytes()?)?)
    }
}
