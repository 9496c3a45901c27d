//! The label-free pipeline, `nnzip compress MODEL.onnx --calibration PHOTOS/`, over the stages in
//! [`super::label_free`].
//!
//! The dense model is the teacher. Each weight tensor is shared alone at each step of the
//! quantizer ladder and measured against the teacher on views of the calibration photos
//! ([`super::label_free::bit_curves`]); then bits are allocated across tensors (smallest bytes + λ·KL per
//! tensor) and λ is searched for the smallest file whose top-1 agreement on all calibration views
//! stays at or above `--min-agreement` (or the best agreement a size goal allows). Photos in
//! `--holdout` are never used for a decision: agreement on them is reported after each stage.

use super::label_free::agreement::{Agreement, MarginBands, agreement, logits, margin_bands};
use super::label_free::allocation::{allocate, predicted_bytes};
use super::label_free::bit_curves::{BitsCurve, SharedCache, measure_bit_curves};
use super::label_free::curve_cache::CurveCache;
use super::label_free::distillation::{DistillFineTune, fine_tune_by_distillation};
use super::label_free::fingerprint::inputs_key;
use super::label_free::gptq_statistics::{Hessians, compensable_in_graph_order, factor_moments};
use super::label_free::photos::{HOLDOUT_SEED_SALT, PhotoFolder, Views, load_photos, make_views};
use super::label_free::quantizer::Quantizer;
use super::label_free::reround::asymmetric_reround;
use super::label_free::statistics_cache::cached_input_moments;
use super::label_free::student::{StudentBuilder, binary16_weights};
use crate::compress::pipeline::{CompressConfig, LayerReport, compress_weights_with, is_prunable};
use crate::compress::report::{CompressReport, LabelFreeReport, ModeReport};
use crate::compress::retrain::FineTuneScope;
use crate::compress::settings::{CompressSettings, QuantizerKind};
use crate::compress::share::SharedLayer;
use crate::compress::{Compressed, Source};
use crate::packing::pack_onnx;
use crate::progress::progress_bar;
use crate::table::human_bytes;
use anyhow::{Context, Result, bail};
use nnzip_core::Preprocessing;
use nnzip_core::onnx::proto::ModelProto;
use prost::Message;
use std::collections::BTreeMap;

/// A layer whose KL divergence alone exceeds this is not tried with fewer bits.
const STOP_KL: f64 = 0.1;
/// Views per photo used to measure each layer's sensitivity (the first is the whole photo)...
const SENSITIVITY_VIEWS_PER_PHOTO: usize = 1;
/// ...and when only every other photo is measured (see [`Calibration::held_out`]): as many views.
const HELD_OUT_SENSITIVITY_VIEWS_PER_PHOTO: usize = 2;
/// Largest mini-batch of fine-tuning on photos (activations of 224-pixel images add up fast).
const MAX_FINE_TUNE_BATCH: usize = 16;

/// Photos and their views, with the teacher's logits.
struct PhotoSet {
    folder: PhotoFolder,
    views: Views,
    teacher: Vec<Vec<f32>>,
}

impl PhotoSet {
    fn load(
        dir: &std::path::Path,
        views: usize,
        pre: &Preprocessing,
        seed: u64,
        teacher: &nnzip_core::Model,
    ) -> Result<PhotoSet> {
        let folder = load_photos(dir, pre)?;
        let views = make_views(&folder, views, pre, seed)?;
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

/// Everything a run measures the students with: the teacher, its binary16 twin, the photos.
struct Calibration {
    pre: Preprocessing,
    teacher: nnzip_core::Model,
    binary16: nnzip_core::Model,
    cal: PhotoSet,
    hold: Option<PhotoSet>,
    /// Rounding is error-compensated (GPTQ) where it can be.
    compensate: bool,
    /// With compensation, each layer's curve is measured on every other photo, compensated
    /// with the other photos' statistics. Measured on the photos it fitted, a compensated layer
    /// looks several times cheaper than it is on new photos (EfficientNet-Lite0's classifier at
    /// its coarsest step), and the allocation starved it. The file's layers are then compensated
    /// with every photo's statistics.
    held_out: bool,
}

impl Calibration {
    /// Agreement on the calibration views, and on the holdout views when there are some.
    fn measure(&self, model: &nnzip_core::Model) -> Result<(Agreement, Option<Agreement>)> {
        Ok((
            self.cal.measure(model)?,
            self.hold.as_ref().map(|h| h.measure(model)).transpose()?,
        ))
    }
}

/// The ladder step of each shared tensor.
type Allocation = BTreeMap<String, usize>;

fn values_of(layers: &BTreeMap<String, SharedLayer>) -> BTreeMap<String, Vec<f32>> {
    layers
        .iter()
        .map(|(n, l)| (n.clone(), l.values()))
        .collect()
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// Compresses `src` against its own dense model on the photos of `s.calibration`.
pub fn compress_label_free(
    src: &Source,
    s: &CompressSettings,
    progress: bool,
) -> Result<Compressed> {
    let cfg = s.encoding()?;
    let say = |msg: String| {
        if progress {
            eprintln!("{msg}");
        }
    };
    let model = ModelProto::decode(src.onnx)
        .with_context(|| format!("{} is not a valid ONNX file", src.path.display()))?;
    let builder = StudentBuilder::new(
        pack_onnx(src.onnx, src.pack)
            .with_context(|| format!("cannot read {}", src.path.display()))?,
    );
    let c = calibration(s, src, &builder, &say)?;

    // 1. Sensitivity: each layer alone at each step of the ladder.
    let layers: Vec<String> = builder
        .weights()
        .iter()
        .filter(|w| is_prunable(w, &cfg))
        .map(|w| w.name.clone())
        .collect();
    if layers.is_empty() {
        bail!("the model has no convolution or fully connected weights to share");
    }
    // What each layer's inputs look like, for error-compensated rounding (GPTQ): measured on
    // every calibration view through the dense model, or on more views of the same photos
    // (`--statistics-views`; the first `--views` of each photo are the calibration views).
    let statistics_views = s.statistics_views.unwrap_or(s.views);
    let stat_views = if c.compensate && statistics_views != s.views {
        make_views(&c.cal.folder, statistics_views, &c.pre, s.seed)?
    } else {
        c.cal.views.clone()
    };
    let hessians = if c.compensate {
        let started = std::time::Instant::now();
        let h = input_statistics(s, &model, &stat_views, &layers, progress)?;
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
    let sub = curve_views(&c, s.views);
    let (curves, cache) = layer_curves(
        s,
        &cfg,
        &model,
        &c,
        &builder,
        &sub,
        &layers,
        (&stat_views, &hessians),
        progress,
    )?;

    // 2. Bit allocation.
    let shares = Shares {
        builder: &builder,
        cache: &cache,
        curves: &curves,
        hessians: &hessians,
    };
    let (bits, tried) = choose_allocation(s, src.onnx.len(), &shares, &c, &layers, &say)?;
    let mut shared = shares.layers(&bits)?;
    let mut stages: Vec<(String, Agreement, Option<Agreement>)> = Vec::new();
    let (sharing, sharing_hold) = c.measure(&builder.model(&values_of(&shared))?)?;
    stages.push((
        "weight sharing (allocated bits)".into(),
        sharing,
        sharing_hold,
    ));
    let mut sharing = sharing;
    let mut asymmetric: Vec<String> = Vec::new();
    if c.compensate && s.asymmetric_layers > 0 {
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
            progress,
        )?;
        let (a, h) = c.measure(&builder.model(&values_of(&shared))?)?;
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
        let what = match s.fine_tune_scope {
            FineTuneScope::Centroids => "centroid fine-tuning",
            FineTuneScope::Weights => "weight fine-tuning, codebooks kept",
        };
        let tuned = fine_tune(s, src, &model, &c, &shared, progress, &say)?;
        fine_tune_views = tuned.views;
        if tuned.agreement.0.kl < sharing.kl {
            stages.push((
                format!("{what} (distillation)"),
                tuned.agreement.0,
                tuned.agreement.1,
            ));
            shared = tuned.layers;
            builder = tuned.builder;
        } else {
            say(format!(
                "{what} did not help (calibration KL {:.4} → {:.4}): kept the shared model as it was; try a smaller --fine-tune-lr",
                sharing.kl, tuned.agreement.0.kl
            ));
            stages.push((
                format!("{what} (not kept)"),
                tuned.agreement.0,
                tuned.agreement.1,
            ));
        }
    }

    // 4. Encode and measure the decoded file in the core runtime.
    let encoded = encode_and_measure(&builder, &cfg, &shared, &c, s.target_ratio, src.onnx.len())?;
    let file = encoded.file;
    stages.push((
        "decoded .nnz (core runtime)".into(),
        encoded.decoded.0,
        encoded.decoded.1,
    ));
    let skipped = c
        .cal
        .folder
        .skipped
        .iter()
        .chain(c.hold.iter().flat_map(|h| &h.folder.skipped))
        .cloned()
        .collect();
    let report = CompressReport {
        dense_weight_bytes: encoded.layers.iter().map(|r| r.dense_bytes).sum(),
        layers: encoded.layers,
        file_bytes: file.len(),
        onnx_bytes: src.onnx.len(),
        mode: ModeReport::LabelFree(Box::new(LabelFreeReport {
            curves,
            chosen: bits,
            allocations_tried: tried,
            stages,
            reference: encoded.reference,
            bands: encoded.bands,
            reference_bands: encoded.reference_bands,
            skipped,
            fine_tune_views,
            gptq_layers: hessians.keys().cloned().collect(),
            sensitivity_views: sub.len(),
            statistics_views: stat_views.len(),
            asymmetric_layers: asymmetric,
        })),
    };
    Ok(Compressed { file, report })
}

/// Each layer's curve along the ladder: read from `--sensitivity-cache` when it holds this
/// run's, else measured on `sub` (and written there). `statistics`: the GPTQ statistics' views
/// and the statistics of every calibration photo. The shared layers measured come along when
/// they can be kept as they are.
#[allow(clippy::too_many_arguments)]
fn layer_curves(
    s: &CompressSettings,
    cfg: &CompressConfig,
    model: &ModelProto,
    c: &Calibration,
    builder: &StudentBuilder,
    sub: &CurveViews,
    layers: &[String],
    statistics: (&Views, &Hessians),
    progress: bool,
) -> Result<(Vec<BitsCurve>, SharedCache)> {
    let (stat_views, hessians) = statistics;
    let ladder = ladder(s);
    let statistics_views = s.statistics_views.unwrap_or(s.views);
    // The statistics' views hold the curves' views and every other calibration view.
    let inputs = inputs_key(model, stat_views, layers)?;
    let cache_key = CurveCache::key(cfg, s.views, statistics_views, inputs);
    let say = |msg: String| {
        if progress {
            eprintln!("{msg}");
        }
    };
    let cached = match &s.sensitivity_cache {
        Some(p) if p.exists() => {
            let curves = CurveCache::read(p, &cache_key, layers, &ladder)?;
            say(format!("sensitivity read from {}", p.display()));
            Some(curves)
        }
        _ => None,
    };
    Ok(match cached {
        Some(curves) => (curves, SharedCache::new()),
        None => {
            let fitted_hessians;
            let sensitivity_hessians = if c.held_out {
                let fitted: Vec<usize> = (0..stat_views.len())
                    .filter(|&i| stat_views.photo[i] % 2 == 0)
                    .collect();
                fitted_hessians =
                    input_statistics(s, model, &stat_views.subset(&fitted), layers, progress)?;
                &fitted_hessians
            } else {
                hessians
            };
            let (curves, cache) = measure_curves(
                builder,
                cfg,
                sub,
                layers,
                &ladder,
                sensitivity_hessians,
                progress,
            )?;
            if let Some(p) = &s.sensitivity_cache {
                CurveCache::write(p, &cache_key, &ladder, &curves)?;
            }
            // Layers compensated with half of the statistics were measured, not kept: the
            // file's layers are compensated with every calibration photo's.
            if c.held_out {
                (curves, SharedCache::new())
            } else {
                (curves, cache)
            }
        }
    })
}

/// GPTQ's statistics of `layers` over `views`: read from `--statistics-cache` when it holds
/// them, else measured (and kept there).
fn input_statistics(
    s: &CompressSettings,
    model: &ModelProto,
    views: &Views,
    layers: &[String],
    progress: bool,
) -> Result<Hessians> {
    let cache = s.statistics_cache.as_deref();
    let (moments, read) = cached_input_moments(cache, model, views, layers, progress)?;
    if read && progress {
        eprintln!(
            "input statistics of {} views read from {}",
            views.len(),
            cache.map_or(String::new(), |p| p.display().to_string())
        );
    }
    factor_moments(&moments)
}

/// The `.nnz` file of `shared` and what it measures, decoded in the core runtime.
struct Encoded {
    file: Vec<u8>,
    layers: Vec<LayerReport>,
    /// Agreement on the calibration views and on the holdout views.
    decoded: (Agreement, Option<Agreement>),
    /// The binary16 twin's agreement on the same views.
    reference: (Agreement, Option<Agreement>),
    bands: MarginBands,
    reference_bands: MarginBands,
}

/// Encodes the teacher with `shared` written in, measures the decoded file against the teacher,
/// writes its agreement into the metadata, and warns when it misses a size goal.
fn encode_and_measure(
    builder: &StudentBuilder,
    cfg: &CompressConfig,
    shared: &BTreeMap<String, SharedLayer>,
    c: &Calibration,
    target_ratio: Option<f64>,
    onnx_bytes: usize,
) -> Result<Encoded> {
    let (records, reports) = compress_weights_with(builder.weights(), cfg, shared)?;
    let mut writer = builder.empty_writer();
    for r in records {
        writer.push(r)?;
    }
    let decoded = nnzip_core::Model::from_bytes(&writer.to_bytes()?)?;
    let (final_cal, final_hold) = c.measure(&decoded)?;
    // Where the views are so close to a tie that rounding of any kind swaps the classes.
    let reference = c.measure(&c.binary16)?;
    let margin_set = c.hold.as_ref().unwrap_or(&c.cal);
    let (bands, reference_bands) = (margin_set.bands(&decoded)?, margin_set.bands(&c.binary16)?);
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
    let file = writer.to_bytes()?;
    if let Some(ratio) = target_ratio {
        let goal = (onnx_bytes as f64 / ratio) as u64;
        if file.len() as u64 > goal {
            eprintln!(
                "warning: the file is {} bytes, {} over the {ratio}× goal (the size model missed); try a slightly higher --target-ratio",
                file.len(),
                file.len() as u64 - goal
            );
        }
    }
    Ok(Encoded {
        file,
        layers: reports,
        decoded: (final_cal, final_hold),
        reference,
        bands,
        reference_bands,
    })
}

/// The teacher, its binary16 twin, and the calibration and holdout photos with its logits.
fn calibration(
    s: &CompressSettings,
    src: &Source,
    builder: &StudentBuilder,
    say: &dyn Fn(String),
) -> Result<Calibration> {
    let cal_dir = s.calibration.as_ref().context("no calibration folder")?;
    let pre = src.pack.preprocessing.clone().context(
        "label-free compression feeds photos to the model: give its preprocessing with --preprocess (e.g. efficientnet-lite, imagenet)",
    )?;
    let teacher = builder.model(&BTreeMap::new())?;
    // The reference for every agreement figure: the teacher with its weights rounded to
    // binary16, the mildest rounding a stored model can have.
    let binary16 = builder.model(&binary16_weights(builder.weights()))?;
    let cal = PhotoSet::load(cal_dir, s.views, &pre, s.seed, &teacher)?;
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
            let h = PhotoSet::load(d, s.views, &pre, s.seed ^ HOLDOUT_SEED_SALT, &teacher)?;
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
    let compensate = s.gptq && s.quantizer == QuantizerKind::Uniform;
    let held_out = compensate && cal.folder.photos.len() >= 2;
    Ok(Calibration {
        pre,
        teacher,
        binary16,
        cal,
        hold,
        compensate,
        held_out,
    })
}

/// The calibration views each layer's curve is measured on, with the teacher's logits.
struct CurveViews {
    views: Views,
    teacher: Vec<Vec<f32>>,
}

impl CurveViews {
    fn len(&self) -> usize {
        self.views.len()
    }
}

/// The first view (or two, with held-out photos) of each photo measured; with held-out photos
/// only the odd ones.
fn curve_views(c: &Calibration, views_per_photo: usize) -> CurveViews {
    let sub: Vec<usize> = (0..c.cal.views.len())
        .filter(|&i| {
            let view = i % views_per_photo;
            if c.held_out {
                c.cal.views.photo[i] % 2 == 1 && view < HELD_OUT_SENSITIVITY_VIEWS_PER_PHOTO
            } else {
                view < SENSITIVITY_VIEWS_PER_PHOTO
            }
        })
        .collect();
    CurveViews {
        views: c.cal.views.subset(&sub),
        teacher: sub.iter().map(|&i| c.cal.teacher[i].clone()).collect(),
    }
}

/// The quantizers each layer is tried with, finest first.
fn ladder(s: &CompressSettings) -> Vec<Quantizer> {
    match s.quantizer {
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
    }
}

/// Every layer's curve along `ladder`, with a progress bar (one line per measurement in logs).
#[allow(clippy::too_many_arguments)]
fn measure_curves(
    builder: &StudentBuilder,
    cfg: &CompressConfig,
    sub: &CurveViews,
    layers: &[String],
    ladder: &[Quantizer],
    hessians: &Hessians,
    progress: bool,
) -> Result<(Vec<BitsCurve>, SharedCache)> {
    let bar = progress_bar(progress, layers.len(), "sensitivity");
    let mut last = String::new();
    let measured = measure_bit_curves(
        builder,
        cfg,
        &sub.teacher,
        &sub.views,
        layers,
        ladder,
        hessians,
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
            if progress && bar.is_hidden() {
                eprintln!("  {msg}");
            }
            bar.set_message(msg);
        },
    )?;
    bar.finish_and_clear();
    Ok(measured)
}

/// Where the shared layers of an allocation come from.
struct Shares<'a> {
    builder: &'a StudentBuilder,
    cache: &'a SharedCache,
    curves: &'a [BitsCurve],
    hessians: &'a Hessians,
}

impl Shares<'_> {
    /// The shared layers of an allocation: from the cache, or shared again (curves read from a
    /// `--sensitivity-cache` file come without layers).
    fn layers(&self, levels: &BTreeMap<String, usize>) -> Result<BTreeMap<String, SharedLayer>> {
        levels
            .iter()
            .map(|(name, &i)| {
                if let Some(layer) = self.cache.get(&(name.clone(), i)) {
                    return Ok((name.clone(), layer.clone()));
                }
                let q = self
                    .curves
                    .iter()
                    .find(|c| &c.name == name)
                    .and_then(|c| c.points.get(i))
                    .with_context(|| format!("'{name}' was not measured at ladder step {i}"))?
                    .quantizer;
                let w = self
                    .builder
                    .weights()
                    .iter()
                    .find(|w| &w.name == name)
                    .with_context(|| format!("no weight named '{name}'"))?;
                Ok((name.clone(), q.share(w, self.hessians.get(name))?))
            })
            .collect()
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

/// The allocation kept: the smallest predicted file whose agreement on every calibration view
/// reaches the goal, or with a size goal the biggest that fits. Allocations for growing λ use
/// more bytes; the search bisects over them. Returns it with the allocations measured.
fn choose_allocation(
    s: &CompressSettings,
    onnx_bytes: usize,
    shares: &Shares,
    c: &Calibration,
    layers: &[String],
    say: &dyn Fn(String),
) -> Result<(Allocation, Vec<(u64, Agreement)>)> {
    let curves = shares.curves;
    let mut candidates: Vec<(u64, BTreeMap<String, usize>)> = Vec::new();
    for i in 0..=80 {
        let lambda = 10f64.powf(2.0 + i as f64 * 0.1);
        let bits = allocate(curves, lambda);
        let bytes = predicted_bytes(curves, &bits);
        if candidates.last().is_none_or(|(_, b)| *b != bits) {
            candidates.push((bytes, bits));
        }
    }
    candidates.sort_by_key(|(b, _)| *b);
    candidates.dedup_by(|a, b| a.1 == b.1);
    let goal = s.min_agreement / 100.0;
    let mut tried: Vec<(u64, Agreement)> = Vec::new();
    let mut measure_allocation = |i: usize| -> Result<Agreement> {
        let layers = shares.layers(&candidates[i].1)?;
        let a = c.cal.measure(&shares.builder.model(&values_of(&layers))?)?;
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
        let goal_bytes = (onnx_bytes as f64 / ratio) as u64;
        let overhead = overhead_bytes(shares.builder, layers)?;
        let budget = goal_bytes.saturating_sub(overhead);
        let fit = candidates.iter().rposition(|(b, _)| *b <= budget);
        let Some(i) = fit else {
            bail!(
                "{ratio}× means a file of {} at most, and even the fewest bits of the ladder need {} (+ {} of graph, biases and metadata): {} or lower --target-ratio",
                human_bytes(goal_bytes),
                human_bytes(candidates[0].0),
                human_bytes(overhead),
                match s.quantizer {
                    QuantizerKind::Uniform => "add coarser steps to --grid-steps",
                    QuantizerKind::Kmeans => "add fewer bits to --bits-ladder",
                }
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
    Ok((candidates.swap_remove(chosen).1, tried))
}

/// What fine-tuning by distillation produced, and its agreement.
struct FineTuned {
    layers: BTreeMap<String, SharedLayer>,
    builder: StudentBuilder,
    agreement: (Agreement, Option<Agreement>),
    views: usize,
}

/// Fine-tunes `shared` (its centroids or every weight, `s.fine_tune_scope`) towards the teacher
/// on fresh views of the calibration photos.
fn fine_tune(
    s: &CompressSettings,
    src: &Source,
    model: &ModelProto,
    c: &Calibration,
    shared: &BTreeMap<String, SharedLayer>,
    progress: bool,
    say: &dyn Fn(String),
) -> Result<FineTuned> {
    let mut layers = shared.clone();
    // Every epoch sees fresh random views of the calibration photos, labelled by the teacher,
    // instead of the same views again: with few photos, fixed views are learnt by heart. The
    // epochs' views are concatenated into one pass, so the learning-rate schedule and the
    // optimizer's state run across all of them.
    let (views, teacher) = fresh_views(c, s.fine_tune_epochs, s.views, s.seed)?;
    say(format!(
        "fine-tuning by distillation: {} epochs × {} fresh views = {} views",
        s.fine_tune_epochs,
        c.cal.views.len(),
        views.len()
    ));
    let (optimizer, lr) = s.fine_tune_rule();
    let ft = DistillFineTune {
        epochs: 1,
        lr,
        optimizer,
        scope: s.fine_tune_scope,
        batch: s.batch.min(MAX_FINE_TUNE_BATCH),
        temperature: s.temperature,
        seed: s.seed,
        progress,
    };
    let tuned_onnx = fine_tune_by_distillation(model, &mut layers, &views, &teacher, &ft)?;
    if s.fine_tune_scope == FineTuneScope::Weights {
        let (moved, total) = moved_weights(shared, &layers);
        say(format!(
            "weight fine-tuning: {moved} of {total} shared weights ({:.2}%) moved to another codebook entry",
            100.0 * moved as f64 / total.max(1) as f64
        ));
    }
    let builder = StudentBuilder::new(pack_onnx(&tuned_onnx, src.pack)?);
    let agreement = c.measure(&builder.model(&values_of(&layers))?)?;
    Ok(FineTuned {
        layers,
        builder,
        agreement,
        views: views.len(),
    })
}

/// How many weights of `before`'s layers have another index in `after`, of how many.
fn moved_weights(
    before: &BTreeMap<String, SharedLayer>,
    after: &BTreeMap<String, SharedLayer>,
) -> (usize, usize) {
    before
        .iter()
        .filter_map(|(name, b)| Some((b, after.get(name)?)))
        .fold((0, 0), |(moved, total), (b, a)| {
            let m = b
                .indices
                .iter()
                .zip(&a.indices)
                .filter(|(x, y)| x != y)
                .count();
            (moved + m, total + b.indices.len())
        })
}

/// The calibration views followed by `epochs − 1` further sets of random views of the same
/// photos (other seeds), with the teacher's logits for each.
fn fresh_views(
    c: &Calibration,
    epochs: usize,
    per_photo: usize,
    seed: u64,
) -> Result<(Views, Vec<Vec<f32>>)> {
    let mut views = c.cal.views.clone();
    let mut logits_all = c.cal.teacher.clone();
    for epoch in 1..epochs.max(1) {
        let more = make_views(
            &c.cal.folder,
            per_photo,
            &c.pre,
            seed.wrapping_add(0x5851_F42D_u64.wrapping_mul(epoch as u64)),
        )?;
        logits_all.extend(logits(&c.teacher, &more)?);
        views.inputs.extend(more.inputs);
        views.photo.extend(more.photo);
    }
    Ok((views, logits_all))
}
