//! Label-free compression: the dense model is the teacher, and every decision (bits per layer,
//! how far to go) is measured by how well the compressed model agrees with it on unlabelled
//! photos — top-1 agreement, the teacher's top-1 inside the student's top-5, and the KL
//! divergence of the softmax outputs.
//!
//! The photos are stretched with augmentation (random crops of varying scale and aspect, mirror
//! images): a wallpaper of 2560×1600 pixels holds many different 224-pixel views. Candidate
//! models run in the core runtime (tract), exactly as the phone will run the file.

use super::gptq::{LayerHessian, LayerStats};
use super::kmeans::KmeansInit;
use super::pipeline::{CompressConfig, choose_encoding, shared_candidates};
use super::share::{SharedLayer, row_normalise, share_weights};
use anyhow::{Context, Result, bail};
use image::DynamicImage;
use nnzip_core::format::{NnzWriter, TensorData, TensorRecord};
use nnzip_core::graph::Weight;
use nnzip_core::metadata::Resize;
use nnzip_core::{Model, Preprocessing, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A photo that was left out, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why it was not used.
    pub reason: String,
}

/// The usable photos of a folder (searched recursively), and the files that were skipped.
#[derive(Debug)]
pub struct PhotoFolder {
    /// The folder.
    pub root: PathBuf,
    /// Decoded photos (downscaled to twice the preprocessing's resize, which keeps crops sharp
    /// and memory small), with their paths, in file-name order.
    pub photos: Vec<(PathBuf, DynamicImage)>,
    /// Files that are not JPEG/PNG, do not decode, or are smaller than the model's crop.
    pub skipped: Vec<Skipped>,
}

/// Collects the regular files under `dir` into `out`. Symbolic links to files are followed;
/// links to folders are not (a link back to a parent would loop forever), and FIFOs, sockets
/// and devices (a FIFO blocks the reader forever) are skipped and listed.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>, skipped: &mut Vec<Skipped>) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "cannot read the folder {} (give a readable folder of JPEG/PNG photos)",
            dir.display()
        )
    })?;
    for e in entries {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = e.path();
        let kind = e
            .file_type()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        let skip = |reason: &str| Skipped {
            path: path.clone(),
            reason: reason.into(),
        };
        if kind.is_dir() {
            files_under(&path, out, skipped)?;
        } else if kind.is_symlink() {
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => out.push(path),
                Ok(m) if m.is_dir() => skipped.push(skip("a link to a folder (not followed)")),
                Ok(_) => skipped.push(skip("a link to something that is not a regular file")),
                Err(_) => skipped.push(skip("a broken link")),
            }
        } else if kind.is_file() {
            out.push(path);
        } else {
            skipped.push(skip("not a regular file (a FIFO, socket or device)"));
        }
    }
    Ok(())
}

/// The smallest side a photo needs for `pre`: its crop (or its resize when it does not crop).
fn min_side(pre: &Preprocessing) -> u32 {
    match (pre.crop, pre.resize) {
        (Some((w, h)), _) => w.min(h),
        (None, Resize::ShortSide { size }) => size,
        (None, Resize::Exact { width, height }) => width.min(height),
        (None, Resize::None) => 1,
    }
}

/// Loads every JPEG/PNG under `dir`. Files that are not images, do not decode, or whose short
/// side is below the model's crop are skipped and listed (a small photo would have to be blown
/// up, which teaches the model nothing about real inputs). No usable photo at all is an error.
pub fn load_photos(dir: &Path, pre: &Preprocessing) -> Result<PhotoFolder> {
    if !dir.is_dir() {
        bail!(
            "{} is not a folder: give a folder of JPEG/PNG photos (any photos, no labels; `bash scripts/photos.sh` fetches some)",
            dir.display()
        );
    }
    let mut files = Vec::new();
    let mut not_files = Vec::new();
    files_under(dir, &mut files, &mut not_files)?;
    files.sort();
    let need = min_side(pre);
    let keep_side = match pre.resize {
        Resize::ShortSide { size } => 2 * size,
        Resize::Exact { width, height } => 2 * width.max(height),
        Resize::None => u32::MAX,
    };
    let loaded: Vec<std::result::Result<(PathBuf, DynamicImage), Skipped>> = files
        .par_iter()
        .map(|path| {
            let skip = |reason: String| Skipped {
                path: path.clone(),
                reason,
            };
            if !crate::data::image_folder::is_image(path) {
                return Err(skip("not a .jpg/.jpeg/.png file".into()));
            }
            let bytes = std::fs::read(path).map_err(|e| skip(format!("cannot read: {e}")))?;
            let img = nnzip_core::preprocess::decode_image(&bytes)
                .map_err(|e| skip(format!("cannot decode: {e}")))?;
            let (w, h) = (img.width(), img.height());
            if w.min(h) < need {
                return Err(skip(format!(
                    "{w}×{h} is smaller than the model's {need}-pixel crop"
                )));
            }
            let short = w.min(h);
            let img = if short > keep_side {
                let scale = keep_side as f64 / short as f64;
                let (nw, nh) = (
                    ((w as f64 * scale).round() as u32).max(1),
                    ((h as f64 * scale).round() as u32).max(1),
                );
                DynamicImage::ImageRgb8(image::imageops::resize(
                    &img.to_rgb8(),
                    nw,
                    nh,
                    image::imageops::FilterType::Triangle,
                ))
            } else {
                DynamicImage::ImageRgb8(img.to_rgb8())
            };
            Ok((path.clone(), img))
        })
        .collect();
    let mut photos = Vec::new();
    let mut skipped = not_files;
    for r in loaded {
        match r {
            Ok(p) => photos.push(p),
            Err(s) => skipped.push(s),
        }
    }
    if photos.is_empty() {
        bail!(
            "{}: no usable photo ({} files, {} skipped{}): give a folder of JPEG/PNG photos at least {need} pixels on their short side",
            dir.display(),
            files.len(),
            skipped.len(),
            skipped
                .first()
                .map(|s| format!(", e.g. {}: {}", s.path.display(), s.reason))
                .unwrap_or_default()
        );
    }
    Ok(PhotoFolder {
        root: dir.to_path_buf(),
        photos,
        skipped,
    })
}

/// Model inputs cut from photos.
#[derive(Debug, Clone)]
pub struct Views {
    /// One preprocessed input tensor (batch 1) per view.
    pub inputs: Vec<Tensor>,
    /// The photo each view comes from.
    pub photo: Vec<usize>,
}

impl Views {
    /// Number of views.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// The views with these indices.
    pub fn subset(&self, idx: &[usize]) -> Views {
        Views {
            inputs: idx.iter().map(|&i| self.inputs[i].clone()).collect(),
            photo: idx.iter().map(|&i| self.photo[i]).collect(),
        }
    }
}

/// Mixed into the seed of the holdout photos' views (`nnzip compress --holdout`, `nnzip
/// agree`), so that they are not cut like the calibration views of the same seed.
pub const HOLDOUT_SEED_SALT: u64 = 0x5eed;

/// `per_photo` views of every photo: the first is the photo as the model's preprocessing sees
/// it (the whole photo, centre crop); the others are random crops (8–100% of the area, aspect
/// 3:4 to 4:3), half of them mirrored, then the same preprocessing. Seeded: the same seed gives
/// the same views.
pub fn make_views(
    folder: &PhotoFolder,
    per_photo: usize,
    pre: &Preprocessing,
    seed: u64,
) -> Result<Views> {
    let per_photo = per_photo.max(1);
    let need = min_side(pre);
    let jobs: Vec<(usize, usize)> = (0..folder.photos.len())
        .flat_map(|p| (0..per_photo).map(move |v| (p, v)))
        .collect();
    let inputs: Vec<Tensor> = jobs
        .par_iter()
        .map(|&(p, v)| {
            let img = &folder.photos[p].1;
            let view = if v == 0 {
                img.clone()
            } else {
                let mut rng = StdRng::seed_from_u64(
                    seed ^ (p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (v as u64) << 40,
                );
                random_crop(img, need, &mut rng)
            };
            nnzip_core::preprocess::image_to_tensor(&view, pre)
                .with_context(|| format!("preprocessing {}", folder.photos[p].0.display()))
        })
        .collect::<Result<_>>()?;
    Ok(Views {
        inputs,
        photo: jobs.iter().map(|&(p, _)| p).collect(),
    })
}

/// A random crop of at least `need` pixels a side (when the photo allows), mirrored half the time.
fn random_crop(img: &DynamicImage, need: u32, rng: &mut StdRng) -> DynamicImage {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let area = w
        * h
        * rng
            .random_range(0.08f64..=1.0)
            .max((need as f64).powi(2) / (w * h));
    let aspect = (rng.random_range((0.75f64).ln()..=(4.0f64 / 3.0).ln())).exp();
    let cw = ((area * aspect).sqrt().clamp(need as f64, w)) as u32;
    let ch = ((area / aspect).sqrt().clamp(need as f64, h)) as u32;
    let (cw, ch) = (cw.min(img.width()), ch.min(img.height()));
    let x = rng.random_range(0..=img.width() - cw);
    let y = rng.random_range(0..=img.height() - ch);
    let crop = img.crop_imm(x, y, cw, ch);
    if rng.random_bool(0.5) {
        crop.fliph()
    } else {
        crop
    }
}

/// The logits of every view (rows of `classes` values), computed on all cores. A graph that ends
/// in a Softmax gives probabilities: they are turned back into logits
/// ([`nnzip_core::OutputKind::logits`]), so the agreement metrics, which softmax what they
/// compare, see the model's own probabilities and not their softmax.
pub fn logits(model: &Model, views: &Views) -> Result<Vec<Vec<f32>>> {
    let kind = model.output_kind();
    views
        .inputs
        .par_iter()
        .map(|x| {
            let out = model.run(x.clone())?;
            let values: Vec<f32> = out
                .cast_to::<f32>()?
                .to_plain_array_view::<f32>()?
                .iter()
                .copied()
                .collect();
            Ok(kind.logits(&values))
        })
        .collect()
}

/// How well a student's outputs agree with the teacher's, view by view.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Agreement {
    /// Views compared.
    pub views: usize,
    /// Fraction whose top-1 class is the teacher's.
    pub top1: f64,
    /// Fraction where the teacher's top-1 class is among the student's top 5.
    pub top5: f64,
    /// Mean KL divergence KL(teacher ‖ student) of the softmax outputs, in nats.
    pub kl: f64,
    /// Views on which the teacher is confident (top-1 probability ≥ 0.5).
    pub confident_views: usize,
    /// Top-1 agreement on those views (1 when there is none).
    pub confident_top1: f64,
}

/// Teacher probability above which a view counts as confident in [`Agreement`].
pub const CONFIDENT: f64 = 0.5;

/// In f64, unlike the core's `classify::softmax`: a KL divergence of 1e-4 sums a thousand small
/// differences of probabilities.
fn softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = x.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Index of the largest value (the first of equals): a view's top-1 class.
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Compares student logits with the teacher's (same views, same order).
pub fn agreement(teacher: &[Vec<f32>], student: &[Vec<f32>]) -> Agreement {
    let n = teacher.len().min(student.len());
    if n == 0 {
        return Agreement::default();
    }
    let (mut top1, mut top5, mut kl) = (0usize, 0usize, 0f64);
    let (mut confident, mut confident_top1) = (0usize, 0usize);
    for (t, s) in teacher.iter().zip(student) {
        let ti = argmax(t);
        let same = argmax(s) == ti;
        if same {
            top1 += 1;
        }
        let above = s.iter().filter(|&&v| v > s[ti]).count();
        if above < 5 {
            top5 += 1;
        }
        let (pt, ps) = (softmax(t), softmax(s));
        if pt[ti] >= CONFIDENT {
            confident += 1;
            confident_top1 += usize::from(same);
        }
        kl += pt
            .iter()
            .zip(&ps)
            .filter(|(p, _)| **p > 0.0)
            .map(|(p, q)| p * (p / q.max(1e-30)).ln())
            .sum::<f64>();
    }
    Agreement {
        views: n,
        top1: top1 as f64 / n as f64,
        top5: top5 as f64 / n as f64,
        kl: kl / n as f64,
        confident_views: confident,
        confident_top1: if confident == 0 {
            1.0
        } else {
            confident_top1 as f64 / confident as f64
        },
    }
}

/// Upper bounds of the bands of [`MarginBands`]: the teacher's top-1 probability minus its
/// top-2 probability, below 1, 5 and 20 points, and the rest.
pub const MARGIN_BANDS: [f64; 4] = [0.01, 0.05, 0.2, 1.0];

/// Top-1 agreement by how close the teacher's view is to a tie: its top-1 probability minus its
/// second (the margin). On a view with a margin of a tenth of a point, the rounding error of
/// binary16 weights already moves the logits enough to swap the two classes; a compressed
/// model's disagreements there say little, those at wide margins say a lot.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MarginBands {
    /// One band per entry of [`MARGIN_BANDS`], narrowest margins first.
    pub bands: Vec<MarginBand>,
}

/// One band of [`MarginBands`].
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MarginBand {
    /// Smallest teacher margin in the band (probability, inclusive).
    pub from: f64,
    /// Largest (exclusive; 1 is inclusive).
    pub to: f64,
    /// Views whose teacher margin falls in the band.
    pub views: usize,
    /// Of those, views whose top-1 class is the teacher's.
    pub agree: usize,
    /// Of those, views where the teacher's class is among the student's first five.
    pub top5: usize,
}

impl MarginBand {
    /// Fraction of the band's views that agree (1 for an empty band).
    pub fn top1(&self) -> f64 {
        if self.views == 0 {
            1.0
        } else {
            self.agree as f64 / self.views as f64
        }
    }
}

/// The teacher's top-1 probability minus its top-2 probability on one view.
pub fn teacher_margin(teacher: &[f32]) -> f64 {
    let p = softmax(teacher);
    let (mut first, mut second) = (0f64, 0f64);
    for &v in &p {
        if v > first {
            second = first;
            first = v;
        } else if v > second {
            second = v;
        }
    }
    first - second
}

/// Top-1 agreement of `student` with `teacher` (same views, same order) by the teacher's margin.
pub fn margin_bands(teacher: &[Vec<f32>], student: &[Vec<f32>]) -> MarginBands {
    let mut from = 0.0;
    let mut bands: Vec<MarginBand> = MARGIN_BANDS
        .iter()
        .map(|&to| {
            let b = MarginBand {
                from,
                to,
                ..MarginBand::default()
            };
            from = to;
            b
        })
        .collect();
    for (t, s) in teacher.iter().zip(student) {
        let m = teacher_margin(t);
        let i = MARGIN_BANDS
            .iter()
            .position(|&to| m < to)
            .unwrap_or(MARGIN_BANDS.len() - 1);
        let ti = argmax(t);
        bands[i].views += 1;
        bands[i].agree += usize::from(argmax(s) == ti);
        bands[i].top5 += usize::from(s.iter().filter(|&&v| v > s[ti]).count() < 5);
    }
    MarginBands { bands }
}

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
        let weights = crate::pack::take_raw_weights(&mut packed);
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

/// How a layer's weights become a codebook and indices.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quantizer {
    /// The paper's k-means (here the exact 1-D optimum) with `2^bits − 1` shared values.
    Kmeans {
        /// Index bits.
        bits: u8,
        /// Rows normalised by their largest magnitude first, one scale per row stored
        /// ([`crate::compress::share::row_normalise`]).
        #[serde(default)]
        row_scaled: bool,
    },
    /// A uniform grid of step `step × std(layer)`, each value the mean of its weights; the bin
    /// around zero is the zero of the sparse encodings (so small weights are pruned by it).
    /// Entropy-coded, it beats k-means at the same size: k-means spreads its centroids so that
    /// every index is about equally likely, which leaves the entropy coder nothing to gain.
    Uniform {
        /// Grid step in standard deviations of the layer.
        step: f64,
        /// Rows normalised by their largest magnitude first (the grid is then in standard
        /// deviations of the normalised layer).
        #[serde(default)]
        row_scaled: bool,
        /// Rounding errors compensated with the layer's input statistics (GPTQ,
        /// [`crate::compress::gptq`]) where they were measured; plain rounding elsewhere.
        #[serde(default)]
        compensated: bool,
    },
}

impl Quantizer {
    /// Short name for tables: `8b` or `0.10σ`, with `/row` when rows are scaled.
    pub fn label(&self) -> String {
        match *self {
            Quantizer::Kmeans { bits, row_scaled } => {
                format!("{bits}b{}", if row_scaled { "/row" } else { "" })
            }
            Quantizer::Uniform {
                step,
                row_scaled,
                compensated,
            } => format!(
                "{step:.2}σ{}{}",
                if row_scaled { "/row" } else { "" },
                if compensated { "+c" } else { "" }
            ),
        }
    }

    /// Shares one layer's weights (index 0 is always the zero). `hessian`: the layer's input
    /// statistics, used by compensated uniform grids (ignored otherwise, or when absent).
    pub fn share(&self, w: &Weight, hessian: Option<&LayerStats>) -> Result<SharedLayer> {
        let rows = w.shape.first().copied().unwrap_or(1) as usize;
        // Row scales and the row-normalised weights, when asked for and possible.
        let by_row = |on: bool| {
            row_normalise(&w.values, rows).filter(|_| on && w.shape.len() >= 2 && rows > 1)
        };
        match *self {
            Quantizer::Kmeans { bits, row_scaled } => match by_row(row_scaled) {
                Some((scales, normalised)) => {
                    share_weights(&normalised, bits, true, KmeansInit::Optimal, 0).map(|mut l| {
                        l.row_scales = Some(scales);
                        l
                    })
                }
                None => share_weights(&w.values, bits, true, KmeansInit::Optimal, 0),
            },
            Quantizer::Uniform {
                step,
                row_scaled,
                compensated,
            } => {
                let (scales, normalised) = match by_row(row_scaled) {
                    Some((s, n)) => (Some(s), n),
                    None => (None, w.values.clone()),
                };
                let hessian = hessian
                    .filter(|h| compensated && h.cols() > 0 && h.weights() == w.values.len());
                let delta = grid_delta(&normalised, step)?;
                let layer = match hessian.filter(|_| delta > 0.0) {
                    None => share_uniform(&normalised, step),
                    Some(h) => {
                        let scale = |r: usize| scales.as_ref().map_or(1.0, |s| f64::from(s[r]));
                        let rounded = h.round(&w.values, |r, v| {
                            let unit = scale(r) * delta;
                            if unit > 0.0 {
                                (v / unit).round() * unit
                            } else {
                                0.0
                            }
                        })?;
                        // Back to the normalised grid (the same scales), then shared on it.
                        let cols = h.cols();
                        let on_grid: Vec<f32> = rounded
                            .iter()
                            .enumerate()
                            .map(|(i, &v)| {
                                let s = scale(i / cols) as f32;
                                if s > 0.0 { v / s } else { 0.0 }
                            })
                            .collect();
                        share_grid(&on_grid, delta)
                    }
                };
                layer.map(|mut l| {
                    l.row_scales = scales;
                    l
                })
            }
        }
        .with_context(|| format!("weight sharing of '{}'", w.name))
    }
}

/// The grid step of [`Quantizer::Uniform`]: `step` standard deviations of `w` (0 for a
/// constant layer).
fn grid_delta(w: &[f32], step: f64) -> Result<f64> {
    if !(step.is_finite() && step > 0.0) {
        bail!("grid step must be > 0, got {step}");
    }
    let n = w.len().max(1) as f64;
    let mean = w.iter().map(|&x| x as f64).sum::<f64>() / n;
    let std = (w.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    Ok(step * std)
}

/// Uniform-grid sharing (see [`Quantizer::Uniform`]): weight `x` goes to bin `round(x / Δ)`
/// with `Δ = step · std`; bin 0 is index 0 (the exact zero); the other bins that occur get the
/// next indices in increasing order and the mean of their weights as shared value.
pub fn share_uniform(w: &[f32], step: f64) -> Result<SharedLayer> {
    share_grid(w, grid_delta(w, step)?)
}

/// Sharing on the uniform grid of step `delta` (see [`share_uniform`]); a zero step (a constant
/// layer) shares by k-means with one bit.
pub fn share_grid(w: &[f32], delta: f64) -> Result<SharedLayer> {
    if delta == 0.0 {
        return share_weights(w, 1, true, KmeansInit::Linear, 0);
    }
    if !(delta.is_finite() && delta > 0.0) {
        bail!("grid step must be finite and > 0, got {delta}");
    }
    let bins: Vec<i64> = w
        .iter()
        .map(|&x| (x as f64 / delta).round() as i64)
        .collect();
    let mut used: Vec<i64> = bins.iter().copied().filter(|&b| b != 0).collect();
    used.sort_unstable();
    used.dedup();
    if used.len() + 1 > 1 << 16 {
        bail!(
            "a grid step of {delta} gives {} levels: more than 16-bit indices hold",
            used.len() + 1
        );
    }
    let index_of = |b: i64| -> u16 {
        if b == 0 {
            0
        } else {
            (used.binary_search(&b).expect("bin listed") + 1) as u16
        }
    };
    let indices: Vec<u16> = bins.iter().map(|&b| index_of(b)).collect();
    let mut sums = vec![0f64; used.len() + 1];
    let mut counts = vec![0u64; used.len() + 1];
    for (&i, &x) in indices.iter().zip(w) {
        sums[i as usize] += x as f64;
        counts[i as usize] += 1;
    }
    let mut codebook: Vec<f32> = sums
        .iter()
        .zip(&counts)
        .map(|(&s, &c)| if c > 0 { (s / c as f64) as f32 } else { 0.0 })
        .collect();
    codebook[0] = 0.0;
    let bits = (usize::BITS - used.len().leading_zeros()).max(1) as u8;
    Ok(SharedLayer {
        codebook,
        indices,
        bits,
        sparse: true,
        row_scales: None,
    })
}

/// One point of a layer's sensitivity.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct BitsPoint {
    /// How the layer was shared.
    pub quantizer: Quantizer,
    /// Index bits that took.
    pub bits: u8,
    /// Bytes of the layer's payload with the range coder.
    pub bytes: u64,
    /// Agreement with the teacher with only this layer shared.
    pub agreement: Agreement,
}

/// How one layer reacts to coarser sharing.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BitsCurve {
    /// Initializer name.
    pub name: String,
    /// Number of weights.
    pub elements: usize,
    /// One point per ladder step tried, finest first.
    pub points: Vec<BitsPoint>,
}

/// Bytes the layer will take in the file (payload and row scales) with the encoding `cfg` would
/// store it with ([`choose_encoding`]), so that the allocation plans with the sizes written.
pub fn coded_bytes(w: &Weight, layer: &SharedLayer, cfg: &CompressConfig) -> Result<u64> {
    let candidates = shared_candidates(layer, cfg);
    let (_, bytes) = choose_encoding(
        &w.name,
        &w.shape,
        layer.row_scales.clone(),
        candidates,
        cfg.coder,
    )?;
    Ok(bytes)
}

/// For each layer in `layers`, along `ladder` (finest first): share it alone, measure agreement
/// with the teacher on `views`, and stop once the KL divergence exceeds `stop_kl` (coarser steps
/// would only be worse). Compensated grids use the layer's statistics in `hessians` where
/// there are some; bytes are those of the encoding `cfg` chooses. `on_step` is called after
/// every measurement.
#[allow(clippy::too_many_arguments)]
pub fn bits_sensitivity(
    builder: &StudentBuilder,
    cfg: &CompressConfig,
    teacher: &[Vec<f32>],
    views: &Views,
    layers: &[String],
    ladder: &[Quantizer],
    hessians: &Hessians,
    stop_kl: f64,
    mut on_step: impl FnMut(&str, &BitsPoint),
) -> Result<(Vec<BitsCurve>, SharedCache)> {
    let mut curves = Vec::new();
    let mut cache = SharedCache::new();
    for name in layers {
        let w = builder
            .weights
            .iter()
            .find(|w| &w.name == name)
            .with_context(|| format!("no weight named '{name}'"))?;
        let mut points = Vec::new();
        for (level, q) in ladder.iter().enumerate() {
            let layer = q.share(w, hessians.get(name))?;
            let bytes = coded_bytes(w, &layer, cfg)?;
            let replace = BTreeMap::from([(name.clone(), layer.values())]);
            let student = logits(&builder.model(&replace)?, views)?;
            let point = BitsPoint {
                quantizer: *q,
                bits: layer.bits,
                bytes,
                agreement: agreement(teacher, &student),
            };
            on_step(name, &point);
            points.push(point);
            cache.insert((name.clone(), level), layer);
            if point.agreement.kl > stop_kl {
                break;
            }
        }
        curves.push(BitsCurve {
            name: name.clone(),
            elements: w.values.len(),
            points,
        });
    }
    Ok((curves, cache))
}

/// Input statistics of the layers whose rounding can be compensated (GPTQ), by weight name.
pub type Hessians = BTreeMap<String, LayerStats>;

/// Views run through the model at once while measuring layer inputs.
const HESSIAN_BATCH: usize = 4;

/// What one row of a compensable layer's weight sees: the input patches of a convolution, or
/// the input vector of `Gemm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerInputs {
    /// `Gemm` with `transA = 0`, `transB = 1`: row `o` of the weight meets the input vector.
    Matrix,
    /// `Conv` (no dilation, explicit pads): row `o` meets the `(C/group)·kh·kw` patch of its
    /// group's input channels at every output position.
    Patches {
        /// Kernel height and width.
        kernel: [usize; 2],
        /// Strides (height, width).
        strides: [usize; 2],
        /// Pads: top, left, bottom, right.
        pads: [usize; 4],
        /// Groups (the input channels for a depthwise convolution).
        group: usize,
    },
}

/// Most inputs per row for GPTQ: its statistics take `8·inputs²` bytes per group and its
/// factorisation `inputs³` operations (at 2,304 = 256 channels × 3×3: 42 MB and ~12 G, seconds).
/// Phone models stay far below (EfficientNet-Lite0: 1,280); wider layers are rounded plainly.
pub const MAX_COMPENSATED_INPUTS: usize = 2304;

/// The weights of `names` whose rounding GPTQ can compensate, with what their rows see:
/// convolutions without dilation or `auto_pad` (pointwise, depthwise, grouped, dense) and `Gemm`
/// with `transB = 1` and `transA = 0`, with at most [`MAX_COMPENSATED_INPUTS`] inputs per row.
pub fn compensable_layers(
    model: &nnzip_core::onnx::proto::ModelProto,
    names: &[String],
) -> BTreeMap<String, LayerInputs> {
    let mut out = BTreeMap::new();
    let Some(graph) = model.graph.as_ref() else {
        return out;
    };
    let shapes: BTreeMap<&str, &[i64]> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t.dims.as_slice()))
        .collect();
    let ints = |n: &nnzip_core::onnx::proto::NodeProto, key: &str| -> Option<Vec<i64>> {
        n.attribute
            .iter()
            .find(|a| a.name == key)
            .map(|a| a.ints.clone())
    };
    let int = |n: &nnzip_core::onnx::proto::NodeProto, key: &str, default: i64| -> i64 {
        n.attribute
            .iter()
            .find(|a| a.name == key)
            .map_or(default, |a| a.i)
    };
    let positive = |v: i64| usize::try_from(v).ok().filter(|&v| v > 0);
    for n in &graph.node {
        let Some(w) = n.input.get(1).filter(|w| names.contains(*w)) else {
            continue;
        };
        let inputs = match n.op_type.as_str() {
            "Conv" => (|| {
                let d = shapes.get(w.as_str()).filter(|d| d.len() == 4)?;
                let undilated = ints(n, "dilations").is_none_or(|x| x.iter().all(|&d| d == 1));
                let explicit = n
                    .attribute
                    .iter()
                    .all(|a| a.name != "auto_pad" || a.s.is_empty() || a.s == b"NOTSET");
                if !(undilated && explicit) {
                    return None;
                }
                let strides = ints(n, "strides").unwrap_or_else(|| vec![1, 1]);
                let pads = ints(n, "pads").unwrap_or_else(|| vec![0; 4]);
                if strides.len() != 2 || pads.len() != 4 || pads.iter().any(|&p| p < 0) {
                    return None;
                }
                Some(LayerInputs::Patches {
                    kernel: [positive(d[2])?, positive(d[3])?],
                    strides: [positive(strides[0])?, positive(strides[1])?],
                    pads: [pads[0], pads[1], pads[2], pads[3]].map(|p| p as usize),
                    group: positive(int(n, "group", 1))?,
                })
            })(),
            "Gemm" if int(n, "transA", 0) == 0 && int(n, "transB", 0) == 1 => {
                Some(LayerInputs::Matrix)
            }
            _ => None,
        };
        // Inputs per row: the weight's elements over its first dimension.
        let cols: i64 = shapes
            .get(w.as_str())
            .map_or(0, |d| d.iter().skip(1).product());
        if let Some(inputs) = inputs.filter(|_| (1..=MAX_COMPENSATED_INPUTS as i64).contains(&cols))
        {
            out.entry(w.clone()).or_insert(inputs);
        }
    }
    out
}

/// The `[groups, K, positions]` patches a convolution's rows meet (`K = (C/groups)·kh·kw`, in the
/// weight's `[c, ky, kx]` order), from its input `[N, C, H, W]`.
fn conv_patches(
    x: &candle_core::Tensor,
    kernel: [usize; 2],
    strides: [usize; 2],
    pads: [usize; 4],
    group: usize,
) -> Result<candle_core::Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let [kh, kw] = kernel;
    let [sh, sw] = strides;
    let (hp, wp) = (h + pads[0] + pads[2], w + pads[1] + pads[3]);
    if hp < kh || wp < kw || c % group != 0 {
        bail!("a {kh}×{kw} kernel on a {h}×{w} input of {c} channels in {group} groups");
    }
    let (ho, wo) = ((hp - kh) / sh + 1, (wp - kw) / sw + 1);
    // Pad, plus room for the last stride step, so that each tap is a reshape away.
    let x = x
        .pad_with_zeros(2, pads[0], pads[2] + sh)?
        .pad_with_zeros(3, pads[1], pads[3] + sw)?;
    let mut taps = Vec::with_capacity(kh * kw);
    for ky in 0..kh {
        for kx in 0..kw {
            let t = x
                .narrow(2, ky, ho * sh)?
                .reshape((n, c, ho, sh, ()))?
                .narrow(3, 0, 1)?
                .squeeze(3)?
                .narrow(3, kx, wo * sw)?
                .reshape((n, c, ho, wo, sw))?
                .narrow(4, 0, 1)?
                .squeeze(4)?;
            taps.push(t);
        }
    }
    // [N, C, T, Ho, Wo] → [groups, (C/groups)·T, N·Ho·Wo].
    let p = candle_core::Tensor::stack(&taps, 2)?;
    let k = c / group * kh * kw;
    Ok(p.reshape((n, group, k, ho * wo))?
        .permute((1, 2, 0, 3))?
        .reshape((group, k, n * ho * wo))?
        .contiguous()?)
}

/// `[groups, K, vectors]`: what each group's rows of the layer `name` see in `x`, the tensor
/// its node receives (each group's input vectors as columns).
fn row_inputs(
    name: &str,
    x: &candle_core::Tensor,
    geometry: LayerInputs,
) -> Result<candle_core::Tensor> {
    let x = x.to_dtype(candle_core::DType::F32)?;
    match (geometry, x.rank()) {
        (LayerInputs::Matrix, 2) => Ok(x.t()?.unsqueeze(0)?.contiguous()?),
        (
            LayerInputs::Patches {
                kernel,
                strides,
                pads,
                group,
            },
            4,
        ) => conv_patches(&x, kernel, strides, pads, group),
        (_, r) => bail!("'{name}' gets a rank-{r} input"),
    }
}

/// Views as candle batches of at most `batch` inputs.
fn candle_batches(
    views: &Views,
    batch: usize,
) -> impl Iterator<Item = Result<candle_core::Tensor>> + '_ {
    views.inputs.chunks(batch.max(1)).map(|chunk| {
        let tensors: Vec<candle_core::Tensor> = chunk
            .iter()
            .map(|x| {
                let v = x.to_plain_array_view::<f32>()?;
                let shape: Vec<usize> = v.shape().to_vec();
                Ok(
                    candle_core::Tensor::from_iter(v.iter().copied(), &candle_core::Device::Cpu)?
                        .reshape(shape)?,
                )
            })
            .collect::<Result<_>>()?;
        Ok(candle_core::Tensor::cat(&tensors, 0)?)
    })
}

/// Measures `H = Σ x·xᵀ` of what the rows of every layer of `names` that
/// [`compensable_layers`] accepts see, over `views` run through the dense model (`onnx`), and
/// factors it for GPTQ.
pub fn layer_hessians(
    onnx: &[u8],
    views: &Views,
    names: &[String],
    progress: bool,
) -> Result<Hessians> {
    use crate::onnx::GraphExecutor;
    use prost::Message;
    let proto =
        nnzip_core::onnx::proto::ModelProto::decode(onnx).context("cannot read the ONNX model")?;
    let geometry = compensable_layers(&proto, names);
    if geometry.is_empty() || views.is_empty() {
        return Ok(Hessians::new());
    }
    // Output channels of each weight, to split its rows into groups.
    let rows: BTreeMap<String, usize> = proto
        .graph
        .as_ref()
        .map(|g| {
            g.initializer
                .iter()
                .filter(|t| geometry.contains_key(&t.name))
                .filter_map(|t| Some((t.name.clone(), *t.dims.first()? as usize)))
                .collect()
        })
        .unwrap_or_default();
    let layers: std::collections::BTreeSet<String> = geometry.keys().cloned().collect();
    let exec = GraphExecutor::new(proto, "teacher")?;
    // Per layer: groups, inputs per row, vectors seen (per group), Σ x·xᵀ per group.
    let mut sums: BTreeMap<String, (usize, usize, usize, Vec<f64>)> = BTreeMap::new();
    let bar = crate::eval::progress_bar(progress, views.len(), "layer inputs");
    for input in candle_batches(views, HESSIAN_BATCH) {
        let input = input?;
        let n = input.dim(0)?;
        for (name, x) in exec.layer_inputs(&input, &layers)? {
            let a = row_inputs(&name, &x, geometry[&name])?;
            let (groups, k, m) = a.dims3()?;
            let h: Vec<f32> = a.matmul(&a.t()?)?.flatten_all()?.to_vec1()?;
            let entry = sums
                .entry(name)
                .or_insert_with(|| (groups, k, 0, vec![0f64; groups * k * k]));
            entry.2 += m;
            entry
                .3
                .iter_mut()
                .zip(h)
                .for_each(|(a, b)| *a += f64::from(b));
        }
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    sums.into_iter()
        .map(|(name, (groups, k, samples, h))| {
            let out_rows = rows.get(&name).copied().unwrap_or(0);
            if groups == 0 || out_rows % groups != 0 {
                bail!("'{name}': {out_rows} output channels in {groups} groups");
            }
            let factors = h
                .chunks(k * k)
                .map(|h| LayerHessian::new(h, k, samples))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("GPTQ statistics of '{name}'"))?;
            Ok((
                name,
                LayerStats {
                    groups: factors,
                    rows_per_group: out_rows / groups,
                },
            ))
        })
        .collect()
}

/// The weights of `names` that GPTQ can compensate, in the order the graph computes them.
pub fn compensable_in_graph_order(onnx: &[u8], names: &[String]) -> Result<Vec<String>> {
    use prost::Message;
    let proto =
        nnzip_core::onnx::proto::ModelProto::decode(onnx).context("cannot read the ONNX model")?;
    let geometry = compensable_layers(&proto, names);
    let mut order = Vec::new();
    for n in proto.graph.iter().flat_map(|g| &g.node) {
        if let Some(w) = n.input.get(1).filter(|w| geometry.contains_key(*w))
            && !order.contains(w)
        {
            order.push(w.clone());
        }
    }
    Ok(order)
}

/// Per group of a layer's rows: `C = Σ x·x̃ᵀ` (dense inputs against the compressed model's) and
/// `H̃ = Σ x̃·x̃ᵀ`, over `samples` vectors of `k` inputs.
struct CrossMoments {
    groups: usize,
    k: usize,
    samples: usize,
    cross: Vec<f64>,
    h: Vec<f64>,
}

/// Asymmetric re-rounding ([`super::gptq::asymmetric_target`]): each layer of `order` (in graph
/// order), shared by `quantizers[name]`, is rounded again so that, with the layers before it
/// rounded as in `shared`, it reproduces the dense model's outputs on `views`: its weights
/// become the least-squares fit of the dense outputs from the inputs the compressed model gives
/// it, then GPTQ rounds them under those inputs' statistics. Layers of `order` shared otherwise
/// than by a compensated grid are left as they are. Updates `shared`; returns the layers
/// rounded again.
pub fn asymmetric_reround(
    onnx: &[u8],
    views: &Views,
    shared: &mut BTreeMap<String, SharedLayer>,
    order: &[String],
    quantizers: &BTreeMap<String, Quantizer>,
    weights: &[Weight],
    progress: bool,
) -> Result<Vec<String>> {
    use crate::compress::retrain::set_values;
    use crate::onnx::GraphExecutor;
    use prost::Message;
    let proto =
        nnzip_core::onnx::proto::ModelProto::decode(onnx).context("cannot read the ONNX model")?;
    let geometry = compensable_layers(&proto, order);
    let dense = GraphExecutor::new(proto.clone(), "teacher")?;
    let student = GraphExecutor::new(proto, "student")?;
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
    let bar = crate::eval::progress_bar(progress, todo.len() * views.len(), "asymmetric rounding");
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
            target.extend(super::gptq::asymmetric_target(
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

/// Shared layers by (name, ladder position), as measured by [`bits_sensitivity`]: the
/// allocation reuses them instead of sharing again.
pub type SharedCache = BTreeMap<(String, usize), SharedLayer>;

/// Per layer, the ladder position that minimises `bytes + λ · KL` (λ in bytes per nat of mean
/// KL divergence: how many bytes a unit of disagreement is worth). The KL of layers shared
/// together is taken to add up, which holds for small perturbations.
pub fn allocate(curves: &[BitsCurve], lambda: f64) -> BTreeMap<String, usize> {
    curves
        .iter()
        .filter_map(|c| {
            c.points
                .iter()
                .enumerate()
                .min_by(|(_, a), (_, b)| {
                    let ca = a.bytes as f64 + lambda * a.agreement.kl;
                    let cb = b.bytes as f64 + lambda * b.agreement.kl;
                    ca.total_cmp(&cb)
                })
                .map(|(i, _)| (c.name.clone(), i))
        })
        .collect()
}

/// The predicted payload bytes of an allocation (from the curves).
pub fn predicted_bytes(curves: &[BitsCurve], levels: &BTreeMap<String, usize>) -> u64 {
    curves
        .iter()
        .filter_map(|c| c.points.get(*levels.get(&c.name)?).map(|p| p.bytes))
        .sum()
}

/// Settings of [`fine_tune_by_distillation`].
#[derive(Debug, Clone)]
pub struct DistillFineTune {
    /// Passes over the views.
    pub epochs: usize,
    /// Learning rate (cosine schedule).
    pub lr: f64,
    /// Update rule.
    pub optimizer: crate::train::OptimizerKind,
    /// Views per mini-batch.
    pub batch: usize,
    /// Softening temperature of the teacher's and the student's outputs.
    pub temperature: f64,
    /// Seed of shuffling.
    pub seed: u64,
    /// Progress bars on stderr.
    pub progress: bool,
}

/// The paper's centroid fine-tuning without labels: the model with `shared` written in trains on
/// `views` towards the teacher's logits (distillation with weight 1: no label is used), every
/// cluster moving by the sum of its weights' gradients, the raw tensors (biases) free. Updates
/// the codebooks in `shared` and returns the model (all weights) as ONNX bytes.
pub fn fine_tune_by_distillation(
    onnx: &[u8],
    shared: &mut BTreeMap<String, SharedLayer>,
    views: &Views,
    teacher: &[Vec<f32>],
    ft: &DistillFineTune,
) -> Result<Vec<u8>> {
    use crate::compress::retrain::{RetrainConfig, fine_tune_layers, set_values};
    use crate::data::Dataset;
    use crate::onnx::GraphExecutor;
    use crate::train::Distillation;
    use prost::Message;
    let Some(first) = views.inputs.first() else {
        bail!("no views to fine-tune on");
    };
    let dims = first.shape().to_vec();
    if dims.len() != 4 || dims[0] != 1 {
        bail!("fine-tuning needs image inputs [1, C, H, W], got {dims:?}");
    }
    let proto =
        nnzip_core::onnx::proto::ModelProto::decode(onnx).context("cannot read the ONNX model")?;
    let exec = GraphExecutor::new(proto, "teacher")?;
    for (name, layer) in shared.iter() {
        set_values(&exec, name, layer.values())?;
    }
    let masks: BTreeMap<String, Vec<bool>> = shared
        .iter()
        .map(|(n, l)| {
            let kept = l.indices.iter().map(|&i| !(l.sparse && i == 0)).collect();
            (n.clone(), kept)
        })
        .collect();
    let mut images = Vec::with_capacity(views.len() * first.len());
    for x in &views.inputs {
        images.extend(x.to_plain_array_view::<f32>()?.iter().copied());
    }
    let classes = teacher.first().map_or(0, |t| t.len());
    let data = Dataset {
        source: "calibration views".into(),
        images,
        labels: teacher.iter().map(|t| argmax(t) as u32).collect(),
        sample_shape: [dims[1], dims[2], dims[3]],
        class_names: Vec::new(),
    };
    let rc = RetrainConfig {
        fine_tune_epochs: ft.epochs,
        fine_tune_lr: ft.lr,
        fine_tune_optimizer: ft.optimizer,
        batch: ft.batch,
        seed: ft.seed,
        progress: ft.progress,
        distill: Some(Distillation {
            teacher_logits: std::sync::Arc::new(teacher.concat()),
            classes,
            temperature: ft.temperature,
            alpha: 1.0,
        }),
        ..Default::default()
    };
    fine_tune_layers(&exec, shared, &masks, Some(&data), &rc)?;
    Ok(exec.to_model_proto()?.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compensable_layers_are_the_convolutions_and_gemm_with_their_geometry() {
        use crate::onnx::build::{Architecture, build};
        let m = build(Architecture::MobileTiny, 0);
        let graph = m.graph.as_ref().unwrap();
        let names: Vec<String> = graph
            .initializer
            .iter()
            .filter(|t| t.dims.len() >= 2)
            .map(|t| t.name.clone())
            .collect();
        let got = compensable_layers(&m, &names);
        let (mut depthwise, mut gemm, mut convs) = (0, 0, 0);
        for n in &graph.node {
            let Some(w) = n.input.get(1).filter(|w| names.contains(*w)) else {
                continue;
            };
            let dims = &graph
                .initializer
                .iter()
                .find(|t| &t.name == w)
                .unwrap()
                .dims;
            match (n.op_type.as_str(), got.get(w)) {
                ("Conv", Some(LayerInputs::Patches { kernel, group, .. })) => {
                    assert_eq!(kernel.map(|k| k as i64), [dims[2], dims[3]], "{w}");
                    let g = n
                        .attribute
                        .iter()
                        .find(|a| a.name == "group")
                        .map_or(1, |a| a.i);
                    assert_eq!(*group as i64, g, "{w}");
                    depthwise += usize::from(g > 1 && dims[1] == 1);
                    convs += 1;
                }
                ("Gemm", Some(LayerInputs::Matrix)) => gemm += 1,
                (op, g) => panic!("{op} '{w}': {g:?}"),
            }
        }
        assert!(
            convs >= 8 && depthwise >= 4 && gemm == 1,
            "{convs} {depthwise} {gemm}"
        );
    }

    #[test]
    fn layers_too_wide_or_dilated_are_rounded_plainly() {
        use crate::onnx::build::single_node_model;
        use crate::onnx::proto::{float_tensor, ints_attr, node};
        let conv = |c: usize, attrs| {
            let w = float_tensor("w", &[2, c, 3, 3], &vec![0.1; 2 * c * 9]);
            let n = node("Conv", "conv", &["x", "w"], &["y"], attrs);
            compensable_layers(&single_node_model(n, &[1, c, 8, 8], vec![w]), &["w".into()])
        };
        // 256 channels × 3×3 = 2,304 inputs per row: compensated; one channel more is not.
        assert!(conv(MAX_COMPENSATED_INPUTS / 9, vec![]).contains_key("w"));
        assert!(conv(MAX_COMPENSATED_INPUTS / 9 + 1, vec![]).is_empty());
        assert!(conv(4, vec![ints_attr("dilations", &[2, 2])]).is_empty());
    }

    #[test]
    fn conv_patches_are_what_each_output_position_sees() {
        // Asymmetric pads, stride 2, two groups: every patch value against direct indexing.
        let (n, c, h, w) = (2, 4, 7, 6);
        let values: Vec<f32> = (0..n * c * h * w).map(|i| i as f32).collect();
        let x =
            candle_core::Tensor::from_vec(values.clone(), (n, c, h, w), &candle_core::Device::Cpu)
                .unwrap();
        let (kernel, strides, pads, group) = ([3, 2], [2, 2], [1, 0, 2, 1], 2);
        let p = conv_patches(&x, kernel, strides, pads, group).unwrap();
        let (ho, wo) = ((h + 3 - 3) / 2 + 1, (w + 1 - 2) / 2 + 1);
        assert_eq!(p.dims(), &[group, (c / group) * 6, n * ho * wo]);
        let p: Vec<f32> = p.flatten_all().unwrap().to_vec1().unwrap();
        let cg = c / group;
        for g in 0..group {
            for cl in 0..cg {
                for ky in 0..3 {
                    for kx in 0..2 {
                        let k = (cl * 3 + ky) * 2 + kx;
                        for b in 0..n {
                            for oy in 0..ho {
                                for ox in 0..wo {
                                    let (y, xx) = ((oy * 2 + ky) as i64 - 1, (ox * 2 + kx) as i64);
                                    let want = if (0..h as i64).contains(&y)
                                        && (0..w as i64).contains(&xx)
                                    {
                                        values[((b * c + g * cg + cl) * h + y as usize) * w
                                            + xx as usize]
                                    } else {
                                        0.0
                                    };
                                    let m = (b * ho + oy) * wo + ox;
                                    let got = p[(g * cg * 6 + k) * n * ho * wo + m];
                                    assert_eq!(
                                        got, want,
                                        "g{g} c{cl} k({ky},{kx}) b{b} ({oy},{ox})"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn compensated_grid_sharing_stays_on_the_row_grids_and_cuts_the_output_error() {
        use crate::compress::gptq::test_support::{output_error, second_moments, uniform};
        let (rows, cols) = (12, 32);
        let mut rand = uniform(0x2545_f491_4f6c_dd1d);
        // Rows of very different ranges (as BatchNorm folding leaves them), correlated inputs.
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| (rand() * 10f64.powi((i / cols) as i32 % 3 - 1)) as f32)
            .collect();
        let w = Weight {
            name: "w".into(),
            shape: vec![rows as u64, cols as u64, 1, 1],
            values,
        };
        let xs: Vec<Vec<f64>> = (0..500)
            .map(|_| {
                let f = [rand(), rand()];
                (0..cols).map(|c| f[c % 2] + 0.05 * rand()).collect()
            })
            .collect();
        let h = second_moments(&xs, cols);
        let hessian = LayerStats {
            groups: vec![LayerHessian::new(&h, cols, xs.len()).unwrap()],
            rows_per_group: rows,
        };
        let grid = |compensated| Quantizer::Uniform {
            step: 0.5,
            row_scaled: true,
            compensated,
        };
        let plain = grid(false).share(&w, Some(&hessian)).unwrap();
        let comp = grid(true).share(&w, Some(&hessian)).unwrap();
        // Same row scales; every shared value a multiple of the grid step (in row units).
        assert_eq!(plain.row_scales, comp.row_scales);
        let scales = comp.row_scales.clone().unwrap();
        assert_eq!(scales.len(), rows);
        let normalised: Vec<f32> = w
            .values
            .iter()
            .enumerate()
            .map(|(i, &v)| v / scales[i / cols])
            .collect();
        let delta = grid_delta(&normalised, 0.5).unwrap();
        for &c in &comp.codebook {
            let k = f64::from(c) / delta;
            assert!((k - k.round()).abs() < 1e-3, "centroid {c} is {k} steps");
        }
        let (e_plain, e_comp) = (
            output_error(&w.values, &plain.values(), &xs, cols),
            output_error(&w.values, &comp.values(), &xs, cols),
        );
        assert!(
            e_comp < 0.5 * e_plain,
            "compensated {e_comp} vs plain {e_plain}"
        );
        // Without statistics, compensation falls back to plain rounding.
        assert_eq!(grid(true).share(&w, None).unwrap(), plain);
    }

    #[test]
    fn uniform_grid_keeps_zero_at_index_zero_and_beats_kmeans_when_entropy_coded() {
        // Laplace-distributed weights (heavy-tailed, like trained layers), unit variance.
        let mut x = 12345u64;
        let w: Vec<f32> = (0..20_000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                let v = -(2.0 * (u - 0.5).abs()).ln() / 2f64.sqrt();
                (if u < 0.5 { -v } else { v }) as f32
            })
            .collect();
        let grid = share_uniform(&w, 0.15).unwrap();
        assert_eq!(grid.codebook[0], 0.0);
        assert!(grid.sparse);
        for (&i, &x) in grid.indices.iter().zip(&w) {
            if i == 0 {
                assert!(x.abs() <= 0.08, "{x} is not in the zero bin");
            } else {
                assert!(
                    (grid.codebook[i as usize] - x).abs() <= 0.16,
                    "{x} is not in its bin"
                );
            }
        }
        let weight = Weight {
            name: "w".into(),
            shape: vec![w.len() as u64],
            values: w.clone(),
        };
        let mse = |l: &SharedLayer| {
            l.values()
                .iter()
                .zip(&w)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
        };
        let km = Quantizer::Kmeans {
            bits: 5,
            row_scaled: false,
        }
        .share(&weight, None)
        .unwrap();
        let cfg = CompressConfig::default();
        let km_bytes = coded_bytes(&weight, &km, &cfg).unwrap();
        // The finest grid that is no bigger than 5-bit k-means has clearly less error.
        let same_size = (10..40)
            .map(|i| share_uniform(&w, i as f64 * 0.01).unwrap())
            .find(|g| coded_bytes(&weight, g, &cfg).unwrap() <= km_bytes)
            .unwrap();
        assert!(
            mse(&same_size) < 0.8 * mse(&km),
            "{} vs {}",
            mse(&same_size),
            mse(&km)
        );
        assert!(share_uniform(&w, 0.0).is_err());
    }

    fn curve(name: &str, pts: &[(u8, u64, f64)]) -> BitsCurve {
        BitsCurve {
            name: name.into(),
            elements: 100,
            points: pts
                .iter()
                .map(|&(bits, bytes, kl)| BitsPoint {
                    quantizer: Quantizer::Kmeans {
                        bits,
                        row_scaled: false,
                    },
                    bits,
                    bytes,
                    agreement: Agreement {
                        views: 1,
                        top1: 1.0,
                        top5: 1.0,
                        kl,
                        ..Default::default()
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn agreement_counts_top1_top5_and_kl() {
        let teacher = vec![vec![3.0, 1.0, 0.0], vec![0.0, 2.0, 1.0]];
        let same = agreement(&teacher, &teacher);
        assert_eq!((same.top1, same.top5), (1.0, 1.0));
        assert!(same.kl.abs() < 1e-12);
        let student = vec![vec![1.0, 3.0, 0.0], vec![0.0, 2.0, 1.0]];
        let a = agreement(&teacher, &student);
        assert_eq!(a.top1, 0.5);
        assert_eq!(a.top5, 1.0, "3 classes: always within the top 5");
        // Both teacher views are confident (top-1 probabilities 0.84 and 0.67); one agrees.
        assert_eq!((a.confident_views, a.confident_top1), (2, 0.5));
        let unsure = agreement(&[vec![0.1, 0.0, 0.0]], &[vec![0.0, 0.1, 0.0]]);
        assert_eq!((unsure.confident_views, unsure.confident_top1), (0, 1.0));
        assert!(a.kl > 0.1);
    }

    #[test]
    fn margin_bands_sort_views_by_how_close_the_teacher_is_to_a_tie() {
        // Margins (top-1 − top-2 probability): a near tie, ~3 points, ~46 points, a sure view.
        let teacher = vec![
            vec![1.0, 0.999, -5.0],
            vec![1.0, 0.9, -5.0],
            vec![2.0, 1.0, -5.0],
            vec![9.0, 0.0, 0.0],
        ];
        let m: Vec<f64> = teacher.iter().map(|t| teacher_margin(t)).collect();
        assert!(m[0] < 0.01 && (0.01..0.05).contains(&m[1]), "{m:?}");
        assert!((0.2..1.0).contains(&m[2]) && m[3] > 0.99, "{m:?}");
        // The student swaps the near tie and the third view's classes.
        let mut student = teacher.clone();
        student[0].swap(0, 1);
        student[2].swap(0, 1);
        let b = margin_bands(&teacher, &student);
        let got: Vec<(usize, usize, usize)> =
            b.bands.iter().map(|b| (b.views, b.agree, b.top5)).collect();
        assert_eq!(
            got,
            [(1, 0, 1), (1, 1, 1), (0, 0, 0), (2, 1, 2)],
            "3 classes: all top-5"
        );
        assert_eq!((b.bands[0].from, b.bands[3].to), (0.0, 1.0));
        assert_eq!(b.bands[2].top1(), 1.0, "an empty band");
        // Binary16 rounding moves weights by at most 2^-11 of their size.
        let w = Weight {
            name: "w".into(),
            shape: vec![3],
            values: vec![0.1, -3.3, 1e-3],
        };
        let r = &binary16_weights(std::slice::from_ref(&w))["w"];
        for (a, b) in r.iter().zip(&w.values) {
            assert!((a - b).abs() <= b.abs() / 2048.0, "{a} vs {b}");
        }
    }

    #[test]
    fn allocation_trades_bytes_for_kl() {
        let curves = vec![
            curve("a", &[(8, 800, 0.0), (4, 400, 0.001), (2, 200, 0.5)]),
            curve("b", &[(8, 800, 0.0), (4, 400, 0.2), (2, 200, 1.0)]),
        ];
        // Bytes only: the fewest bits everywhere.
        let cheap = allocate(&curves, 0.0);
        assert_eq!((cheap["a"], cheap["b"]), (2, 2), "positions of 2 bits");
        // KL expensive: the robust layer goes to 4 bits, the sensitive one stays at 8.
        let careful = allocate(&curves, 10_000.0);
        assert_eq!((careful["a"], careful["b"]), (1, 0), "4 bits and 8 bits");
        assert_eq!(predicted_bytes(&curves, &careful), 1200);
    }

    #[test]
    fn photo_folder_errors_and_skips() {
        let pre = Preprocessing::efficientnet_lite();
        let missing = load_photos(Path::new("/nonexistent/photos"), &pre).unwrap_err();
        assert!(format!("{missing:#}").contains("is not a folder"));
        let dir = std::env::temp_dir().join(format!("nnzip-photos-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
        std::fs::write(dir.join("broken.jpg"), b"\xff\xd8 not really").unwrap();
        image::RgbImage::new(100, 80)
            .save(dir.join("small.png"))
            .unwrap();
        let empty = load_photos(&dir, &pre).unwrap_err();
        let msg = format!("{empty:#}");
        assert!(
            msg.contains("no usable photo") && msg.contains("3 skipped"),
            "{msg}"
        );
        image::RgbImage::from_fn(300, 240, |x, y| image::Rgb([x as u8, y as u8, 7]))
            .save(dir.join("ok.png"))
            .unwrap();
        let folder = load_photos(&dir, &pre).unwrap();
        assert_eq!(folder.photos.len(), 1);
        assert_eq!(folder.skipped.len(), 3);
        let views = make_views(&folder, 3, &pre, 1).unwrap();
        assert_eq!(views.len(), 3);
        assert_eq!(views.inputs[0].shape(), &[1, 3, 224, 224]);
        let again = make_views(&folder, 3, &pre, 1).unwrap();
        assert_eq!(views.inputs[2], again.inputs[2], "seeded views repeat");
        assert_ne!(views.inputs[1], views.inputs[2]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
