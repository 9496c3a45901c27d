//! `nnzip compress MODEL.onnx --calibration PHOTOS/ -o MODEL.nnz`: compression without labels.
//!
//! The dense model is the teacher. Each weight tensor is shared alone at each width of the bits
//! ladder (exact 1-D k-means) and measured against the teacher on views of the calibration
//! photos; then bits are allocated across tensors (smallest bytes + λ·KL per tensor) and λ is
//! searched for the smallest file whose top-1 agreement on all calibration views stays at or
//! above `--min-agreement`. Photos in `--holdout` are never used for a decision: agreement on
//! them is reported after each stage.

use super::compress::{CompressArgs, CompressSettings, QuantizerKind, layer_table};
use crate::compress::label_free::agreement::{
    Agreement, CONFIDENT, MarginBands, agreement, logits, margin_bands,
};
use crate::compress::label_free::allocation::{SharedCache, allocate, predicted_bytes};
use crate::compress::label_free::bit_curves::{BitsCurve, measure_bit_curves};
use crate::compress::label_free::distillation::{DistillFineTune, fine_tune_by_distillation};
use crate::compress::label_free::gptq_statistics::{
    Hessians, compensable_in_graph_order, layer_hessians,
};
use crate::compress::label_free::photos::{
    HOLDOUT_SEED_SALT, PhotoFolder, Views, load_photos, make_views,
};
use crate::compress::label_free::quantizer::Quantizer;
use crate::compress::label_free::reround::asymmetric_reround;
use crate::compress::label_free::student::{StudentBuilder, binary16_weights};
use crate::compress::pipeline::{Coder, CompressConfig, compress_weights_with, is_prunable};
use crate::compress::share::SharedLayer;
use crate::eval::progress_bar;
use crate::fsutil;
use crate::pack::{PackOptions, pack_onnx};
use crate::table::{Table, human_bytes};
use anyhow::{Context, Result, bail};
use prost::Message;
use std::collections::BTreeMap;

/// A layer whose KL divergence alone exceeds this is not tried with fewer bits.
const STOP_KL: f64 = 0.1;
/// Views per photo used to measure each layer's sensitivity (the first is the whole photo)...
const SENSITIVITY_VIEWS_PER_PHOTO: usize = 1;
/// ...and when only every other photo is measured (see `held_out` in [`run`]): as many views.
const HELD_OUT_SENSITIVITY_VIEWS_PER_PHOTO: usize = 2;
/// Largest mini-batch of fine-tuning on photos (activations of 224-pixel images add up fast).
const MAX_FINE_TUNE_BATCH: usize = 16;

/// Version of what a ladder step measures, kept in `--sensitivity-cache` files: bumped whenever
/// sharing changes what a step produces for the same ladder, so that a cache measured by another
/// build is refused instead of steering the allocation with stale numbers. 2: row scales and
/// error-compensated rounding (GPTQ) of every convolution. 3: bytes are those of the encoding
/// chosen (range coding only where it saves 10%), no longer always the range coder's. 4: with
/// compensation, measured on every other photo, compensated with the others' statistics.
const SENSITIVITY_MEASUREMENT: u32 = 4;

/// A `--sensitivity-cache` file.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SensitivityCache {
    /// [`SENSITIVITY_MEASUREMENT`] of the build that measured it.
    measurement: u32,
    /// The entropy coders the bytes were measured with (`--coder`).
    coder: Coder,
    /// The gap width the bytes were measured with (`--gap-bits`, 0: the best of 2–10).
    gap_bits: u8,
    /// Views per photo measured (`--views`; absent in caches of earlier builds, which were
    /// taken as measured with this run's).
    #[serde(default)]
    views: Option<usize>,
    /// Views per photo of the GPTQ statistics (`--statistics-views`, absent: as `views`).
    #[serde(default)]
    statistics_views: Option<usize>,
    /// Per shared tensor, agreement along the ladder.
    curves: Vec<BitsCurve>,
}

/// Photos and their views, with the teacher's logits.
struct PhotoSet {
    folder: PhotoFolder,
    views: Views,
    teacher: Vec<Vec<f32>>,
}

impl PhotoSet {
    fn load(
        dir: &std::path::Path,
        s: &CompressSettings,
        pre: &nnzip_core::Preprocessing,
        seed: u64,
        teacher: &nnzip_core::Model,
    ) -> Result<PhotoSet> {
        let folder = load_photos(dir, pre)?;
        let views = make_views(&folder, s.views, pre, seed)?;
        let teacher = logits(teacher, &views)?;
        Ok(PhotoSet {
            folder,
            views,
            teacher,
        })
    }

    fn measure(&self, model: &nnzip_core::Model) -> Result<Agreement> {
        Ok(agreement(&self.teacher, &logits(model, &self.views)?))
    }

    /// Top-1 agreement by the teacher's margin on these views.
    fn bands(&self, model: &nnzip_core::Model) -> Result<MarginBands> {
        Ok(margin_bands(&self.teacher, &logits(model, &self.views)?))
    }
}

/// Bytes of everything but the shared tensors' payloads: graph, metadata, raw tensors, and a
/// margin for what each shared tensor adds besides its payload.
fn overhead_bytes(builder: &StudentBuilder, shared: &[String]) -> Result<u64> {
    let mut w = builder.empty_writer();
    for t in builder
        .weights()
        .iter()
        .filter(|t| !shared.contains(&t.name))
    {
        w.push(nnzip_core::format::TensorRecord {
            row_scales: None,
            name: t.name.clone(),
            shape: t.shape.clone(),
            data: nnzip_core::format::TensorData::RawF32(t.values.clone()),
        })?;
    }
    // Each shared tensor adds a record header and an entry in the metadata's statistics (both
    // name it), and the report adds agreement figures to the metadata.
    let headers: u64 = shared.iter().map(|n| 2 * n.len() as u64 + 160).sum();
    Ok(w.to_bytes()?.len() as u64 + headers + 512)
}

/// The shared layers of an allocation: from the cache, or shared again (curves read from a
/// `--sensitivity-cache` file come without layers).
fn allocation_layers(
    levels: &BTreeMap<String, usize>,
    cache: &SharedCache,
    curves: &[BitsCurve],
    builder: &StudentBuilder,
    hessians: &Hessians,
) -> Result<BTreeMap<String, SharedLayer>> {
    levels
        .iter()
        .map(|(name, &i)| {
            if let Some(layer) = cache.get(&(name.clone(), i)) {
                return Ok((name.clone(), layer.clone()));
            }
            let q = curves
                .iter()
                .find(|c| &c.name == name)
                .and_then(|c| c.points.get(i))
                .with_context(|| format!("'{name}' was not measured at ladder step {i}"))?
                .quantizer;
            let w = builder
                .weights()
                .iter()
                .find(|w| &w.name == name)
                .with_context(|| format!("no weight named '{name}'"))?;
            Ok((name.clone(), q.share(w, hessians.get(name))?))
        })
        .collect()
}

/// The calibration views followed by `epochs − 1` further sets of random views of the same
/// photos (other seeds), with the teacher's logits for each.
fn fresh_views(
    cal: &PhotoSet,
    epochs: usize,
    per_photo: usize,
    pre: &nnzip_core::Preprocessing,
    seed: u64,
    teacher: &nnzip_core::Model,
) -> Result<(Views, Vec<Vec<f32>>)> {
    let mut views = cal.views.clone();
    let mut logits_all = cal.teacher.clone();
    for epoch in 1..epochs.max(1) {
        let more = make_views(
            &cal.folder,
            per_photo,
            pre,
            seed.wrapping_add(0x5851_F42D_u64.wrapping_mul(epoch as u64)),
        )?;
        logits_all.extend(logits(teacher, &more)?);
        views.inputs.extend(more.inputs);
        views.photo.extend(more.photo);
    }
    Ok((views, logits_all))
}

fn values_of(layers: &BTreeMap<String, SharedLayer>) -> BTreeMap<String, Vec<f32>> {
    layers
        .iter()
        .map(|(n, l)| (n.clone(), l.values()))
        .collect()
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// Runs the label-free path of `nnzip compress`.
pub fn run(
    args: &CompressArgs,
    s: &CompressSettings,
    cfg: &CompressConfig,
    onnx: &[u8],
    opts: &PackOptions,
) -> Result<()> {
    let cal_dir = s.calibration.as_ref().context("no calibration folder")?;
    let pre = opts.preprocessing.clone().context(
        "label-free compression feeds photos to the model: give its preprocessing with --preprocess (e.g. efficientnet-lite, imagenet)",
    )?;
    let show = !args.json;
    // The one decode of the model's graph: statistics, re-rounding and fine-tuning read it.
    let model = nnzip_core::onnx::proto::ModelProto::decode(onnx)
        .with_context(|| format!("{} is not a valid ONNX file", args.model.display()))?;
    let say = |msg: String| {
        if show {
            eprintln!("{msg}");
        }
    };
    let builder = StudentBuilder::new(
        pack_onnx(onnx, opts).with_context(|| format!("cannot read {}", args.model.display()))?,
    );
    let teacher = builder.model(&BTreeMap::new())?;
    // The reference for every agreement figure: the teacher with its weights rounded to
    // binary16, the mildest rounding a stored model can have.
    let binary16 = builder.model(&binary16_weights(builder.weights()))?;
    let cal = PhotoSet::load(cal_dir, s, &pre, s.seed, &teacher)?;
    say(format!(
        "calibration: {} photos ({} skipped) × {} views = {} views from {}",
        cal.folder.photos.len(),
        cal.folder.skipped.len(),
        s.views,
        cal.views.len(),
        cal_dir.display()
    ));
    let hold = match &s.holdout {
        Some(d) => {
            let h = PhotoSet::load(d, s, &pre, s.seed ^ HOLDOUT_SEED_SALT, &teacher)?;
            let overlap = h
                .folder
                .photos
                .iter()
                .filter(|(p, _)| cal.folder.photos.iter().any(|(q, _)| q == p))
                .count();
            if overlap > 0 {
                bail!(
                    "{overlap} holdout photos are also calibration photos: keep the two folders apart"
                );
            }
            say(format!(
                "holdout: {} photos ({} skipped) × {} views = {} views from {}",
                h.folder.photos.len(),
                h.folder.skipped.len(),
                s.views,
                h.views.len(),
                d.display()
            ));
            Some(h)
        }
        None => None,
    };

    // 1. Sensitivity: each layer alone at each width of the ladder.
    let layers: Vec<String> = builder
        .weights()
        .iter()
        .filter(|w| is_prunable(w, cfg))
        .map(|w| w.name.clone())
        .collect();
    if layers.is_empty() {
        bail!("the model has no convolution or fully connected weights to share");
    }
    // With error-compensated rounding, each layer's sensitivity is measured on photos whose
    // statistics the compensation did not fit: every other photo is measured, the others'
    // statistics compensate. Measured on the photos it fitted, a compensated layer looks
    // several times cheaper than it is on new photos (EfficientNet-Lite0's classifier at its
    // coarsest step: KL 0.0013 on the fitted photos, 0.0100 on the others), and the allocation
    // starved it. The file's layers are then compensated with every photo's statistics.
    let compensate = s.gptq && s.quantizer == QuantizerKind::Uniform;
    let held_out = compensate && cal.folder.photos.len() >= 2;
    let sub: Vec<usize> = (0..cal.views.len())
        .filter(|&i| {
            let view = i % s.views;
            if held_out {
                cal.views.photo[i] % 2 == 1 && view < HELD_OUT_SENSITIVITY_VIEWS_PER_PHOTO
            } else {
                view < SENSITIVITY_VIEWS_PER_PHOTO
            }
        })
        .collect();
    let sub_views = cal.views.subset(&sub);
    let sub_teacher: Vec<Vec<f32>> = sub.iter().map(|&i| cal.teacher[i].clone()).collect();
    let ladder: Vec<Quantizer> = match s.quantizer {
        // Grids are in units of the layer's spread: layers whose channels differ by orders of
        // magnitude (depthwise convolutions with BatchNorm folded in) lose their small channels
        // in the zero bin of any affordable grid. 8-bit k-means, which puts centroids where the
        // weights are, goes first for them; it is the finest step, and tiny layers can afford it.
        QuantizerKind::Uniform => std::iter::once(Quantizer::Kmeans {
            bits: 8,
            row_scaled: s.row_scales,
        })
        .chain(s.grid_steps.iter().map(|&step| Quantizer::Uniform {
            step,
            row_scaled: s.row_scales,
            compensated: s.gptq,
        }))
        .collect(),
        QuantizerKind::Kmeans => s
            .bits_ladder
            .iter()
            .map(|&bits| Quantizer::Kmeans {
                bits,
                row_scaled: s.row_scales,
            })
            .collect(),
    };
    // What each layer's inputs look like, for error-compensated rounding (GPTQ): measured on
    // every calibration view through the dense model, or on more views of the same photos
    // (`--statistics-views`; the first `--views` of each photo are the calibration views).
    let statistics_views = s.statistics_views.unwrap_or(s.views);
    let stat_views = if compensate && statistics_views != s.views {
        make_views(&cal.folder, statistics_views, &pre, s.seed)?
    } else {
        cal.views.clone()
    };
    let hessians = if compensate {
        let started = std::time::Instant::now();
        let h = layer_hessians(&model, &stat_views, &layers, show)?;
        say(format!(
            "error-compensated rounding (GPTQ) for {} of {} layers: input statistics of {} views in {:.0} s",
            h.len(),
            layers.len(),
            stat_views.len(),
            started.elapsed().as_secs_f64()
        ));
        h
    } else {
        Hessians::new()
    };
    let cached: Option<Vec<BitsCurve>> = match &s.sensitivity_cache {
        Some(p) if p.exists() => {
            let file: SensitivityCache = serde_json::from_slice(&fsutil::read(p)?)
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{} is not a sensitivity cache of this version of nnzip (measurement {SENSITIVITY_MEASUREMENT}): delete it to measure again",
                        p.display()
                    )
                })?;
            if file.measurement != SENSITIVITY_MEASUREMENT {
                bail!(
                    "{} was measured by another version of nnzip's sharing (measurement {}, this build {SENSITIVITY_MEASUREMENT}): delete it to measure again",
                    p.display(),
                    file.measurement
                );
            }
            let (views, stats) = (
                file.views.unwrap_or(s.views),
                file.statistics_views.or(file.views).unwrap_or(s.views),
            );
            if (views, stats) != (s.views, statistics_views) {
                bail!(
                    "{} was measured with --views {views} and --statistics-views {stats} (this run: {} and {statistics_views}): delete it to measure again, or compress with its settings",
                    p.display(),
                    s.views
                );
            }
            if (file.coder, file.gap_bits) != (cfg.coder, cfg.gap_bits) {
                bail!(
                    "{} was measured with --coder {} and gap width {} (this run: --coder {}, gap width {}; 0 = the best of 2–10): delete it to measure again, or compress with its settings",
                    p.display(),
                    file.coder.name(),
                    file.gap_bits,
                    cfg.coder.name(),
                    cfg.gap_bits
                );
            }
            let curves = file.curves;
            let names: Vec<&String> = curves.iter().map(|c| &c.name).collect();
            let same_ladder = curves
                .iter()
                .all(|c| c.points.iter().zip(&ladder).all(|(p, q)| p.quantizer == *q));
            if names != layers.iter().collect::<Vec<_>>() || !same_ladder {
                bail!(
                    "{} was measured on other tensors or another ladder: delete it to measure again",
                    p.display()
                );
            }
            say(format!("sensitivity read from {}", p.display()));
            Some(curves)
        }
        _ => None,
    };
    let (curves, cache) = match cached {
        Some(c) => (c, SharedCache::new()),
        None => {
            let fitted_hessians;
            let sensitivity_hessians = if held_out {
                let fitted: Vec<usize> = (0..stat_views.len())
                    .filter(|&i| stat_views.photo[i] % 2 == 0)
                    .collect();
                fitted_hessians =
                    layer_hessians(&model, &stat_views.subset(&fitted), &layers, show)?;
                &fitted_hessians
            } else {
                &hessians
            };
            let bar = progress_bar(show, layers.len(), "sensitivity");
            let mut last = String::new();
            let (curves, cache) = measure_bit_curves(
                &builder,
                cfg,
                &sub_teacher,
                &sub_views,
                &layers,
                &ladder,
                sensitivity_hessians,
                STOP_KL,
                |name, p| {
                    if name != last {
                        if !last.is_empty() {
                            bar.inc(1);
                        }
                        last = name.to_string();
                    }
                    let msg = format!(
                        "{name} @ {} ({} bits): {} B, KL {:.4}, top-1 {:.1}%",
                        p.quantizer.label(),
                        p.bits,
                        p.bytes,
                        p.agreement.kl,
                        p.agreement.top1 * 100.0
                    );
                    // Logs (no terminal) get one line per measurement instead of a bar.
                    if show && bar.is_hidden() {
                        eprintln!("  {msg}");
                    }
                    bar.set_message(msg);
                },
            )?;
            bar.finish_and_clear();
            if let Some(p) = &s.sensitivity_cache {
                let file = SensitivityCache {
                    measurement: SENSITIVITY_MEASUREMENT,
                    coder: cfg.coder,
                    gap_bits: cfg.gap_bits,
                    views: Some(s.views),
                    statistics_views: Some(statistics_views),
                    curves: curves.clone(),
                };
                fsutil::write_atomic(p, &serde_json::to_vec(&file)?)?;
            }
            // Layers compensated with half of the statistics were measured, not kept: the
            // file's layers are compensated with every calibration photo's.
            if held_out {
                (curves, SharedCache::new())
            } else {
                (curves, cache)
            }
        }
    };

    // 2. Bit allocation: the smallest predicted file whose agreement on every calibration view
    // reaches the goal. Allocations for growing λ use more bytes; bisect over them.
    let mut candidates: Vec<(u64, BTreeMap<String, usize>)> = Vec::new();
    for i in 0..=80 {
        let lambda = 10f64.powf(2.0 + i as f64 * 0.1);
        let bits = allocate(&curves, lambda);
        let bytes = predicted_bytes(&curves, &bits);
        if candidates.last().is_none_or(|(_, b)| *b != bits) {
            candidates.push((bytes, bits));
        }
    }
    candidates.sort_by_key(|(b, _)| *b);
    candidates.dedup_by(|a, b| a.1 == b.1);
    let goal = s.min_agreement / 100.0;
    let mut tried: Vec<(u64, Agreement)> = Vec::new();
    let mut measure_allocation = |i: usize| -> Result<Agreement> {
        let layers = allocation_layers(&candidates[i].1, &cache, &curves, &builder, &hessians)?;
        let a = cal.measure(&builder.model(&values_of(&layers))?)?;
        say(format!(
            "  allocation {i}: {} predicted, calibration top-1 {}, KL {:.4}",
            human_bytes(candidates[i].0),
            pct(a.top1),
            a.kl
        ));
        tried.push((candidates[i].0, a));
        Ok(a)
    };
    let chosen = if let Some(ratio) = s.target_ratio {
        // The biggest allocation whose file fits: payload budget = goal − everything else.
        let goal_bytes = (onnx.len() as f64 / ratio) as u64;
        let overhead = overhead_bytes(&builder, &layers)?;
        let budget = goal_bytes.saturating_sub(overhead);
        let fit = candidates.iter().rposition(|(b, _)| *b <= budget);
        let Some(i) = fit else {
            bail!(
                "{ratio}× means a file of {} at most, and even the fewest bits of the ladder need {} (+ {} of graph, biases and metadata): add fewer bits to --bits-ladder or lower --target-ratio",
                human_bytes(goal_bytes),
                human_bytes(candidates[0].0),
                human_bytes(overhead)
            );
        };
        say(format!(
            "size goal {ratio}×: {} for the file, {} for the shared tensors ({} go to the graph, raw tensors and metadata)",
            human_bytes(goal_bytes),
            human_bytes(budget),
            human_bytes(overhead)
        ));
        measure_allocation(i)?;
        i
    } else {
        let (mut lo, mut hi) = (0usize, candidates.len() - 1);
        let top = measure_allocation(hi)?;
        if top.top1 < goal {
            say(format!(
                "warning: even the most bits of the ladder reach only {} top-1 agreement on the calibration views (goal {}): add wider bits to --bits-ladder",
                pct(top.top1),
                pct(goal)
            ));
            hi
        } else {
            // Invariant: candidates[hi] meets the goal; everything below lo is known to fail.
            while lo < hi {
                let mid = (lo + hi) / 2;
                if measure_allocation(mid)?.top1 >= goal {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            hi
        }
    };
    let bits = candidates[chosen].1.clone();
    let mut shared = allocation_layers(&bits, &cache, &curves, &builder, &hessians)?;
    let mut stages: Vec<(String, Agreement, Option<Agreement>)> = Vec::new();
    let mut asymmetric: Vec<String> = Vec::new();
    // Agreement on the calibration views, and on the holdout views when there are some.
    let measure = |model: &nnzip_core::Model| -> Result<(Agreement, Option<Agreement>)> {
        Ok((
            cal.measure(model)?,
            hold.as_ref().map(|h| h.measure(model)).transpose()?,
        ))
    };
    let (sharing, sharing_hold) = measure(&builder.model(&values_of(&shared))?)?;
    stages.push((
        "weight sharing (allocated bits)".into(),
        sharing,
        sharing_hold,
    ));
    let mut sharing = sharing;
    if compensate && s.asymmetric_layers > 0 {
        let order = compensable_in_graph_order(&model, &layers);
        let last = &order[order.len().saturating_sub(s.asymmetric_layers)..];
        let quantizers: BTreeMap<String, Quantizer> = bits
            .iter()
            .filter_map(|(name, &i)| {
                let c = curves.iter().find(|c| &c.name == name)?;
                Some((name.clone(), c.points.get(i)?.quantizer))
            })
            .collect();
        let started = std::time::Instant::now();
        asymmetric = asymmetric_reround(
            &model,
            &stat_views,
            &mut shared,
            last,
            &quantizers,
            builder.weights(),
            show,
        )?;
        let (a, h) = measure(&builder.model(&values_of(&shared))?)?;
        say(format!(
            "asymmetric rounding of {} layers in {:.0} s: calibration KL {:.4} → {:.4}",
            asymmetric.len(),
            started.elapsed().as_secs_f64(),
            sharing.kl,
            a.kl
        ));
        stages.push((
            format!("asymmetric rounding (last {} layers)", asymmetric.len()),
            a,
            h,
        ));
        sharing = a;
    }

    // 3. Centroid fine-tuning by distillation on the calibration views (no labels); kept only if
    // it brings the model closer to the teacher on them.
    let mut builder = builder;
    let mut fine_tune_views = 0;
    if s.fine_tune_epochs > 0 {
        let mut tuned_layers = shared.clone();
        // Every epoch sees fresh random views of the calibration photos, labelled by the
        // teacher, instead of the same views again: with 60 photos, fixed views are learnt by
        // heart (distillation at T = 1 on fixed views: calibration agreement 67 → 83%, holdout
        // 59 → 70%). The epochs' views are concatenated into one pass, so the learning-rate
        // schedule and the optimizer's state run across all of them.
        let (train_views, train_teacher) =
            fresh_views(&cal, s.fine_tune_epochs, s.views, &pre, s.seed, &teacher)?;
        fine_tune_views = train_views.len();
        say(format!(
            "fine-tuning by distillation: {} epochs × {} fresh views = {} views",
            s.fine_tune_epochs,
            cal.views.len(),
            train_views.len()
        ));
        let (optimizer, lr) = s.fine_tune_rule();
        let ft = DistillFineTune {
            epochs: 1,
            lr,
            optimizer,
            batch: s.batch.min(MAX_FINE_TUNE_BATCH),
            temperature: s.temperature,
            seed: s.seed,
            progress: show,
        };
        let tuned_onnx = fine_tune_by_distillation(
            &model,
            &mut tuned_layers,
            &train_views,
            &train_teacher,
            &ft,
        )?;
        let tuned = StudentBuilder::new(pack_onnx(&tuned_onnx, opts)?);
        let (a, h) = measure(&tuned.model(&values_of(&tuned_layers))?)?;
        if a.kl < sharing.kl {
            stages.push(("centroid fine-tuning (distillation)".into(), a, h));
            shared = tuned_layers;
            builder = tuned;
        } else {
            say(format!(
                "centroid fine-tuning did not help (calibration KL {:.4} → {:.4}): kept the shared model as it was; try a smaller --fine-tune-lr",
                sharing.kl, a.kl
            ));
            stages.push(("centroid fine-tuning (not kept)".into(), a, h));
        }
    }

    // 4. Encode and measure the decoded file in the core runtime.
    let (records, reports) = compress_weights_with(builder.weights(), cfg, &shared)?;
    let mut writer = builder.empty_writer();
    for r in records {
        writer.push(r)?;
    }
    let bytes = writer.to_bytes()?;
    let decoded = nnzip_core::Model::from_bytes(&bytes)?;
    let (final_cal, final_hold) = measure(&decoded)?;
    stages.push(("decoded .nnz (core runtime)".into(), final_cal, final_hold));
    // Where the views are so close to a tie that rounding of any kind swaps the classes.
    let (ref_cal, ref_hold) = measure(&binary16)?;
    let margin_set = hold.as_ref().unwrap_or(&cal);
    let (bands, reference_bands) = (margin_set.bands(&decoded)?, margin_set.bands(&binary16)?);
    let agree = final_hold.unwrap_or(final_cal);
    crate::compress::keep_best::refuse_chance_agreement(
        agree.top1,
        decoded.metadata().labels.len(),
    )?;
    writer
        .metadata
        .extra
        .insert("agreement_top1".into(), format!("{:.4}", agree.top1));
    writer.metadata.extra.insert(
        "agreement_measured_on".into(),
        if final_hold.is_some() {
            "holdout photos".into()
        } else {
            "calibration photos".into()
        },
    );
    let bytes = writer.to_bytes()?;
    if let Some(ratio) = s.target_ratio {
        let goal = (onnx.len() as f64 / ratio) as u64;
        if bytes.len() as u64 > goal {
            eprintln!(
                "warning: the file is {} bytes, {} over the {ratio}× goal (the size model missed); try a slightly higher --target-ratio",
                bytes.len(),
                bytes.len() as u64 - goal
            );
        }
    }
    fsutil::write_atomic(&args.output, &bytes)?;

    let dense: u64 = reports.iter().map(|r| r.dense_bytes).sum();
    let skipped: Vec<_> = cal
        .folder
        .skipped
        .iter()
        .chain(hold.iter().flat_map(|h| &h.folder.skipped))
        .collect();
    if args.json {
        let v = serde_json::json!({
            "layers": reports,
            "file_bytes": bytes.len(),
            "dense_weight_bytes": dense,
            "ratio_vs_dense_weights": dense as f64 / bytes.len() as f64,
            "onnx_bytes": onnx.len(),
            "sensitivity": curves,
            "allocations_tried": tried.iter().map(|(b, a)| serde_json::json!({"predicted_bytes": b, "calibration": a})).collect::<Vec<_>>(),
            "stages": stages.iter().map(|(st, c, h)| serde_json::json!({"stage": st, "calibration": c, "holdout": h})).collect::<Vec<_>>(),
            "skipped": skipped,
            "fine_tune_views": fine_tune_views,
            "gptq_layers": hessians.keys().collect::<Vec<_>>(),
            "sensitivity_views": sub.len(),
            "statistics_views": stat_views.len(),
            "asymmetric_layers": asymmetric,
            "binary16_reference": {"calibration": ref_cal, "holdout": ref_hold},
            "by_teacher_margin": {
                "views": if hold.is_some() { "holdout" } else { "calibration" },
                "model": bands,
                "binary16_reference": reference_bands,
            },
        });
        println!("{v}");
        return Ok(());
    }
    print!("{}", layer_table(&reports).render());
    println!();
    print!("{}", sensitivity_table(&curves, &bits).render());
    println!(
        "\n{}: {} → {} ({:.1}× vs dense f32 weights, {:.1}× vs the ONNX file, everything included)",
        args.output.display(),
        human_bytes(dense),
        human_bytes(bytes.len() as u64),
        dense as f64 / bytes.len() as f64,
        onnx.len() as f64 / bytes.len() as f64
    );
    let mut t = Table::new(&[
        "stage",
        "cal top-1",
        "cal top-5",
        "cal KL",
        "cal confident top-1",
        "holdout top-1",
        "holdout top-5",
        "holdout KL",
        "holdout confident top-1",
    ]);
    let confident = |a: &Agreement| format!("{} of {}", pct(a.confident_top1), a.confident_views);
    let reference = (
        "reference: dense, weights in binary16 (2×)".to_string(),
        ref_cal,
        ref_hold,
    );
    for (st, c, h) in stages.iter().chain([&reference]) {
        let (h1, h5, hk, hc) = match h {
            Some(h) => (
                pct(h.top1),
                pct(h.top5),
                format!("{:.4}", h.kl),
                confident(h),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        t.row(vec![
            st.clone(),
            pct(c.top1),
            pct(c.top5),
            format!("{:.4}", c.kl),
            confident(c),
            h1,
            h5,
            hk,
            hc,
        ]);
    }
    println!();
    print!("{}", t.render());
    println!(
        "agreement with the dense model: top-1 = the same class; top-5 = the dense model's class among the compressed model's first five; confident = views where the dense model gives its class ≥ {:.0}%; {} calibration views{}",
        CONFIDENT * 100.0,
        final_cal.views,
        final_hold
            .map(|h| format!(
                ", {} holdout views (photos never used for a decision)",
                h.views
            ))
            .unwrap_or_default()
    );
    println!(
        "\ntop-1 agreement of the decoded file by the dense model's margin, on the {} views:",
        if hold.is_some() {
            "holdout"
        } else {
            "calibration"
        }
    );
    print!(
        "{}",
        super::agree::margin_table(&bands, &reference_bands).render()
    );
    print!(
        "{}",
        super::agree::reference_note(&ref_hold.unwrap_or(ref_cal))
    );
    if !skipped.is_empty() {
        println!("skipped {} files:", skipped.len());
        for sk in skipped.iter().take(10) {
            println!("  {}: {}", sk.path.display(), sk.reason);
        }
        if skipped.len() > 10 {
            println!("  … and {} more", skipped.len() - 10);
        }
    }
    Ok(())
}

/// Per layer: KL divergence alone at each ladder step tried, and the step chosen.
fn sensitivity_table(curves: &[BitsCurve], chosen: &BTreeMap<String, usize>) -> Table {
    let steps = curves.iter().map(|c| c.points.len()).max().unwrap_or(0);
    let labels: Vec<String> = (0..steps)
        .map(|i| {
            curves
                .iter()
                .find_map(|c| c.points.get(i))
                .map(|p| format!("KL@{}", p.quantizer.label()))
                .unwrap_or_default()
        })
        .collect();
    let mut head: Vec<&str> = vec!["tensor", "weights"];
    head.extend(labels.iter().map(|s| s.as_str()));
    head.extend(["chosen", "bits", "bytes"]);
    let mut t = Table::new(&head);
    for c in curves {
        let mut row = vec![c.name.clone(), c.elements.to_string()];
        for i in 0..steps {
            row.push(
                c.points
                    .get(i)
                    .map(|p| format!("{:.4}", p.agreement.kl))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        let pick = chosen.get(&c.name).and_then(|&i| c.points.get(i));
        row.push(pick.map(|p| p.quantizer.label()).unwrap_or_default());
        row.push(pick.map(|p| p.bits.to_string()).unwrap_or_default());
        row.push(pick.map(|p| p.bytes.to_string()).unwrap_or_default());
        t.row(row);
    }
    t
}
