//! Asymmetric re-rounding: layers rounded again against the dense model's outputs from the
//! inputs the compressed layers before them give.

use super::gptq_statistics::{HESSIAN_BATCH, candle_batches, compensable_layers, row_inputs};
use super::photos::Views;
use super::quantizer::Quantizer;
use crate::compress::gptq::{LayerHessian, LayerStats};
use crate::compress::retrain::set_values;
use crate::compress::share::SharedLayer;
use crate::onnx::GraphExecutor;
use crate::progress::progress_bar;
use anyhow::{Context, Result, bail};
use nnzip_core::graph::Weight;
use nnzip_core::onnx::proto::ModelProto;
use std::collections::BTreeMap;

/// Per group of a layer's rows: `C = Σ x·x̃ᵀ` (dense inputs against the compressed model's) and
/// `H̃ = Σ x̃·x̃ᵀ`, over `samples` vectors of `k` inputs.
struct CrossMoments {
    groups: usize,
    k: usize,
    samples: usize,
    cross: Vec<f64>,
    h: Vec<f64>,
}

/// Asymmetric re-rounding ([`crate::compress::gptq::asymmetric_target`]): each layer of `order` (in graph
/// order), shared by `quantizers[name]`, is rounded again so that, with the layers before it
/// rounded as in `shared`, it reproduces the dense model's outputs on `views`: its weights
/// become the least-squares fit of the dense outputs from the inputs the compressed model gives
/// it, then GPTQ rounds them under those inputs' statistics. Layers of `order` shared otherwise
/// than by a compensated grid are left as they are. Updates `shared`; returns the layers
/// rounded again.
pub fn asymmetric_reround(
    model: &ModelProto,
    views: &Views,
    shared: &mut BTreeMap<String, SharedLayer>,
    order: &[String],
    quantizers: &BTreeMap<String, Quantizer>,
    weights: &[Weight],
    progress: bool,
) -> Result<Vec<String>> {
    let geometry = compensable_layers(model, order);
    let dense = GraphExecutor::new(model.clone(), "teacher")?;
    let student = GraphExecutor::new(model.clone(), "student")?;
    for (name, layer) in shared.iter() {
        set_values(&student, name, layer.values())?;
    }
    let todo: Vec<&String> = order
        .iter()
        .filter(|n| {
            geometry.contains_key(*n)
                && shared.contains_key(*n)
                && matches!(
                    quantizers.get(*n),
                    Some(Quantizer::Uniform {
                        compensated: true,
                        ..
                    })
                )
        })
        .collect();
    let bar = progress_bar(progress, todo.len() * views.len(), "asymmetric rounding");
    let mut done = Vec::new();
    for name in todo {
        let wanted = std::collections::BTreeSet::from([name.clone()]);
        let mut sums: Option<CrossMoments> = None;
        for input in candle_batches(views, HESSIAN_BATCH) {
            let input = input?;
            let n = input.dim(0)?;
            let x = dense
                .layer_inputs(&input, &wanted)?
                .remove(name)
                .with_context(|| format!("'{name}' is not computed by the model"))?;
            let xt = student
                .layer_inputs(&input, &wanted)?
                .remove(name)
                .with_context(|| format!("'{name}' is not computed by the model"))?;
            let a = row_inputs(name, &x, geometry[name])?;
            let at = row_inputs(name, &xt, geometry[name])?;
            let (groups, k, m) = at.dims3()?;
            let h: Vec<f32> = at.matmul(&at.t()?)?.flatten_all()?.to_vec1()?;
            let c: Vec<f32> = a.matmul(&at.t()?)?.flatten_all()?.to_vec1()?;
            let e = sums.get_or_insert_with(|| CrossMoments {
                groups,
                k,
                samples: 0,
                cross: vec![0f64; groups * k * k],
                h: vec![0f64; groups * k * k],
            });
            e.samples += m;
            e.cross
                .iter_mut()
                .zip(c)
                .for_each(|(a, b)| *a += f64::from(b));
            e.h.iter_mut().zip(h).for_each(|(a, b)| *a += f64::from(b));
            bar.inc(n as u64);
        }
        let Some(CrossMoments {
            groups,
            k,
            samples,
            cross,
            h,
        }) = sums
        else {
            continue;
        };
        let w = weights
            .iter()
            .find(|w| &w.name == name)
            .with_context(|| format!("no weight named '{name}'"))?;
        let rows = w.shape.first().copied().unwrap_or(0) as usize;
        if groups == 0 || !rows.is_multiple_of(groups) || w.values.len() != rows * k {
            bail!("'{name}': {rows} rows of {k} inputs in {groups} groups");
        }
        let per_group = rows / groups * k;
        let mut target = Vec::with_capacity(w.values.len());
        let mut factors = Vec::with_capacity(groups);
        for g in 0..groups {
            let (cg, hg) = (
                &cross[g * k * k..(g + 1) * k * k],
                &h[g * k * k..(g + 1) * k * k],
            );
            target.extend(crate::compress::gptq::asymmetric_target(
                &w.values[g * per_group..(g + 1) * per_group],
                cg,
                hg,
                k,
                samples,
            )?);
            factors.push(LayerHessian::new(hg, k, samples)?);
        }
        let stats = LayerStats {
            groups: factors,
            rows_per_group: rows / groups,
        };
        let refit = Weight {
            name: name.clone(),
            shape: w.shape.clone(),
            values: target,
        };
        let layer = quantizers[name]
            .share(&refit, Some(&stats))
            .with_context(|| format!("asymmetric rounding of '{name}'"))?;
        set_values(&student, name, layer.values())?;
        shared.insert(name.clone(), layer);
        done.push(name.clone());
    }
    bar.finish_and_clear();
    Ok(done)
}
