//! Folding inference-mode BatchNormalization into the convolution before it.
//!
//! `BN(conv(x, W) + b) = conv(x, s·W) + s·(b − μ) + β` with `s = γ / √(σ² + ε)` per output
//! channel: the four per-channel vectors of a BatchNormalization become one bias, and the graph
//! loses a node. nnzip folds after pruning and retraining (which train through the batch
//! statistics) and before weight sharing, so the codebooks are those of the weights the file
//! stores; pruned weights stay exactly zero (they are only scaled).

use super::proto::{dims, float_tensor, float_values};
use anyhow::{Context, Result};
use nnzip_core::onnx::proto::ModelProto;
use std::collections::HashMap;

/// One folded BatchNormalization.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedBatchNorm {
    /// The BatchNormalization node (its name, or its output when unnamed).
    pub batch_norm: String,
    /// The convolution weight it was folded into.
    pub conv_weight: String,
}

/// Folds every BatchNormalization whose input is a convolution's output used by nothing else,
/// with the convolution's weight (and bias, if any) and the four statistics all initializers.
/// Others (after a non-convolution, statistics computed in the graph, training mode) are left
/// as they are. The statistics' initializers go when nothing else uses them. Returns what was
/// folded, in graph order.
pub fn fold_batch_norms(model: &mut ModelProto) -> Result<Vec<FoldedBatchNorm>> {
    let Some(graph) = model.graph.as_mut() else {
        return Ok(Vec::new());
    };
    let mut folded = Vec::new();
    loop {
        // Uses of every value: node inputs and graph outputs.
        let mut uses: HashMap<String, usize> = HashMap::new();
        for n in &graph.node {
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                *uses.entry(i.clone()).or_default() += 1;
            }
        }
        for o in &graph.output {
            *uses.entry(o.name.clone()).or_default() += 1;
        }
        let init_index: HashMap<String, usize> = graph
            .initializer
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let producer: HashMap<String, usize> = graph
            .node
            .iter()
            .enumerate()
            .flat_map(|(i, n)| n.output.iter().map(move |o| (o.clone(), i)))
            .collect();
        let used_once = |name: &str| uses.get(name).copied().unwrap_or(0) == 1;
        let is_init = |name: &str| init_index.contains_key(name);
        // The first foldable pair: (BN node, conv node).
        let candidate = graph.node.iter().enumerate().find_map(|(bi, bn)| {
            if bn.op_type != "BatchNormalization"
                || bn.input.len() != 5
                || super::proto::attr_int(bn, "training_mode", 0) != 0
                || bn
                    .output
                    .iter()
                    .skip(1)
                    .any(|o| !o.is_empty() && uses.contains_key(o))
                || !bn.input[1..].iter().all(|i| is_init(i))
            {
                return None;
            }
            let ci = *producer.get(bn.input[0].as_str())?;
            let conv = &graph.node[ci];
            let foldable = conv.op_type == "Conv"
                && used_once(&bn.input[0])
                && conv.input.len() >= 2
                && is_init(&conv.input[1])
                && used_once(&conv.input[1])
                && (conv.input.len() < 3
                    || conv.input[2].is_empty()
                    || (is_init(&conv.input[2]) && used_once(&conv.input[2])));
            foldable.then_some((bi, ci))
        });
        let Some((bi, ci)) = candidate else { break };
        let bn = graph.node[bi].clone();
        let conv = graph.node[ci].clone();
        let bn_name = if bn.name.is_empty() {
            bn.output[0].clone()
        } else {
            bn.name.clone()
        };
        let get = |name: &str| -> Result<Vec<f32>> {
            float_values(&graph.initializer[init_index[name]])
                .with_context(|| format!("folding {bn_name}: '{name}'"))
        };
        let weight_proto = &graph.initializer[init_index[conv.input[1].as_str()]];
        let weight_dims = dims(weight_proto);
        let mut weight = get(&conv.input[1])?;
        let [gamma, beta, mean, var] = [1, 2, 3, 4].map(|k| get(&bn.input[k]));
        let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
        let channels = weight_dims.first().copied().unwrap_or(0);
        let has_bias = conv.input.len() >= 3 && !conv.input[2].is_empty();
        let bias = if has_bias {
            get(&conv.input[2])?
        } else {
            vec![0.0; channels]
        };
        if channels == 0
            || [&gamma, &beta, &mean, &var, &bias]
                .iter()
                .any(|v| v.len() != channels)
        {
            // Shapes that do not line up are left for the runtime to report.
            break;
        }
        let eps = super::proto::attr_float(&bn, "epsilon", 1e-5);
        let per_channel = weight.len() / channels;
        let mut new_bias = Vec::with_capacity(channels);
        for c in 0..channels {
            let s = gamma[c] / (var[c] + eps).sqrt();
            for w in &mut weight[c * per_channel..(c + 1) * per_channel] {
                *w *= s;
            }
            new_bias.push((bias[c] - mean[c]) * s + beta[c]);
        }
        let weight_name = conv.input[1].clone();
        let bias_name = if has_bias {
            conv.input[2].clone()
        } else {
            // A new initializer next to the weight's name (`stem.weight` → `stem.bias`), unique.
            let stem = weight_name.strip_suffix(".weight").unwrap_or(&weight_name);
            let mut name = format!("{stem}.bias");
            while init_index.contains_key(name.as_str()) || producer.contains_key(name.as_str()) {
                name.push('_');
            }
            name
        };
        let weight_at = init_index[weight_name.as_str()];
        let stats: Vec<String> = bn.input[1..]
            .iter()
            .filter(|i| used_once(i))
            .cloned()
            .collect();
        graph.initializer[weight_at] = float_tensor(&weight_name, &weight_dims, &weight);
        if has_bias {
            let at = init_index[bias_name.as_str()];
            graph.initializer[at] = float_tensor(&bias_name, &[channels], &new_bias);
        } else {
            graph
                .initializer
                .push(float_tensor(&bias_name, &[channels], &new_bias));
        }
        // The convolution now produces what the BatchNormalization did.
        let conv_node = &mut graph.node[ci];
        conv_node.input.truncate(2);
        conv_node.input.push(bias_name);
        let old_output = std::mem::replace(&mut conv_node.output[0], bn.output[0].clone());
        graph.node.remove(bi);
        graph.initializer.retain(|t| !stats.contains(&t.name));
        graph.input.retain(|i| !stats.contains(&i.name));
        graph.value_info.retain(|v| v.name != old_output);
        folded.push(FoldedBatchNorm {
            batch_norm: bn_name,
            conv_weight: weight_name,
        });
    }
    Ok(folded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::build::{Architecture, build};
    use crate::onnx::{GraphExecutor, Mode};
    use candle_core::{Device, Tensor};

    /// The mobile-style network (14 BatchNormalization layers after convolutions without bias,
    /// residual Adds, Clip) computes the same outputs folded as unfolded, with random statistics
    /// so that the folding has something to do.
    #[test]
    fn folding_keeps_the_outputs_and_removes_every_batch_norm() {
        let mut model = build(Architecture::MobileTiny, 3);
        // Give the statistics values that matter (a fresh BN is the identity).
        let mut k = 0u32;
        let mut next = || {
            k = k.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (k >> 8) as f32 / (1u32 << 24) as f32
        };
        for t in &mut model.graph.as_mut().unwrap().initializer {
            if t.name.contains(".bn.") {
                let d = dims(t);
                let v: Vec<f32> = (0..d.iter().product::<usize>())
                    .map(|_| {
                        if t.name.ends_with("running_var") || t.name.ends_with("weight") {
                            0.5 + next()
                        } else {
                            next() - 0.5
                        }
                    })
                    .collect();
                *t = float_tensor(&t.name.clone(), &d, &v);
            }
        }
        let before = GraphExecutor::new(model.clone(), "unfolded").unwrap();
        let folded = fold_batch_norms(&mut model).unwrap();
        assert_eq!(folded.len(), 14, "{folded:?}");
        let graph = model.graph.as_ref().unwrap();
        assert!(graph.node.iter().all(|n| n.op_type != "BatchNormalization"));
        assert!(graph.initializer.iter().all(|t| !t.name.contains(".bn.")));
        let after = GraphExecutor::new(model.clone(), "folded").unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 1, 28, 28), &Device::Cpu).unwrap();
        let a = before.forward(&x, Mode::Eval).unwrap();
        let b = after.forward(&x, Mode::Eval).unwrap();
        let diff = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-4, "max difference {diff}");
        // Nothing left to fold.
        assert!(fold_batch_norms(&mut model).unwrap().is_empty());
    }

    /// A BatchNormalization whose input is also used elsewhere cannot be folded.
    #[test]
    fn a_shared_convolution_output_is_left_alone() {
        let mut model = build(Architecture::MobileTiny, 3);
        let graph = model.graph.as_mut().unwrap();
        let bn = graph
            .node
            .iter()
            .find(|n| n.op_type == "BatchNormalization")
            .unwrap()
            .clone();
        let out = graph.output[0].name.clone();
        // A second use of the first convolution's output: an extra graph output.
        graph
            .output
            .push(crate::onnx::proto::float_value_info(&bn.input[0], &[None]));
        let folded = fold_batch_norms(&mut model).unwrap();
        assert_eq!(folded.len(), 13);
        let graph = model.graph.as_ref().unwrap();
        assert_eq!(graph.output[0].name, out);
        assert_eq!(
            graph
                .node
                .iter()
                .filter(|n| n.op_type == "BatchNormalization")
                .count(),
            1
        );
    }
}
