//! Unlabelled photos and the model inputs cut from them: a folder searched recursively (what
//! is skipped and why), and seeded views of every photo (the photo itself, random crops, mirror
//! images).

use anyhow::{Context, Result, bail};
use image::DynamicImage;
use nnzip_core::metadata::Resize;
use nnzip_core::{Preprocessing, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
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

#[cfg(test)]
mod tests {
    use super::*;

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
