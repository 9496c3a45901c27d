//! ImageFolder data sets: `root/<class>/*.jpg|png`, classes in sorted directory order, images
//! decoded in parallel and turned into normalised tensors.

use super::Dataset;
use anyhow::{Context, Result, bail, ensure};
use image::imageops::FilterType;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// How decoded images become model input: optional resize of the short side, optional centre
/// crop, then `(pixel · scale − mean[c]) / std[c]` per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTransform {
    /// Channels of the model input: 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// Resize so the shorter side has this length (bilinear).
    pub resize: Option<u32>,
    /// Centre crop to a square of this size.
    pub crop: Option<u32>,
    /// Factor applied to the 0–255 pixel value.
    pub scale: f32,
    /// Per-channel mean (one value applies to all channels).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation (one value applies to all channels).
    pub std: Vec<f32>,
}

impl Default for ImageTransform {
    fn default() -> Self {
        ImageTransform {
            channels: 3,
            resize: None,
            crop: None,
            scale: 1.0 / 255.0,
            mean: vec![0.0],
            std: vec![1.0],
        }
    }
}

impl ImageTransform {
    /// Decodes and transforms one image file into `C×H×W` floats and its `(width, height)`.
    pub fn apply(&self, path: &Path) -> Result<(Vec<f32>, (u32, u32))> {
        let mut img =
            image::open(path).with_context(|| format!("cannot decode image {}", path.display()))?;
        if let Some(short) = self.resize {
            let (w, h) = (img.width(), img.height());
            let (nw, nh) = if w <= h {
                (short, ((h as u64 * short as u64) / w.max(1) as u64) as u32)
            } else {
                (((w as u64 * short as u64) / h.max(1) as u64) as u32, short)
            };
            img = img.resize_exact(nw, nh, FilterType::Triangle);
        }
        if let Some(c) = self.crop {
            ensure!(
                img.width() >= c && img.height() >= c,
                "{} is {}×{} after resizing, smaller than the crop {c}: pass a larger --resize",
                path.display(),
                img.width(),
                img.height()
            );
            img = img.crop_imm((img.width() - c) / 2, (img.height() - c) / 2, c, c);
        }
        let (w, h) = (img.width(), img.height());
        let channel_value = |v: &Vec<f32>, c: usize| if v.len() == 1 { v[0] } else { v[c] };
        let pixels: Vec<u8> = match self.channels {
            1 => img.to_luma8().into_raw(),
            3 => img.to_rgb8().into_raw(),
            c => bail!("models with {c} input channels are not supported for images (1 or 3 are)"),
        };
        let n = (w * h) as usize;
        let mut out = vec![0f32; self.channels * n];
        for c in 0..self.channels {
            let (mean, std) = (channel_value(&self.mean, c), channel_value(&self.std, c));
            for i in 0..n {
                out[c * n + i] = (pixels[i * self.channels + c] as f32 * self.scale - mean) / std;
            }
        }
        Ok((out, (w, h)))
    }
}

/// Whether a file name ends in .jpg, .jpeg or .png (any case): the formats the core decodes.
pub(crate) fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

/// Loads `root/<class>/*.jpg|png`, decoding on all cores. All images must end up the same size.
pub fn load(root: &Path, transform: &ImageTransform) -> Result<Dataset> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("cannot read the ImageFolder root {}", root.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    ensure!(
        !classes.is_empty(),
        "{}: no class directories: an ImageFolder data set is root/<class>/*.jpg|png",
        root.display()
    );
    let mut files: Vec<(PathBuf, u32)> = Vec::new();
    for (label, dir) in classes.iter().enumerate() {
        let mut images: Vec<PathBuf> = std::fs::read_dir(dir)?
            .flatten()
            .map(|e| e.path())
            // Regular files only (links to them followed): reading a FIFO named x.jpg blocks.
            .filter(|p| is_image(p) && p.is_file())
            .collect();
        images.sort();
        files.extend(images.into_iter().map(|p| (p, label as u32)));
    }
    ensure!(
        !files.is_empty(),
        "{}: no .jpg or .png images under the class directories",
        root.display()
    );
    let decoded: Vec<(Vec<f32>, (u32, u32))> = files
        .par_iter()
        .map(|(path, _)| transform.apply(path))
        .collect::<Result<_>>()?;
    let size = decoded[0].1;
    if let Some((i, (_, other))) = decoded.iter().enumerate().find(|(_, (_, s))| *s != size) {
        bail!(
            "{} is {}×{} but {} is {}×{}: images of mixed sizes; pass --resize and --crop so all images get one size",
            files[i].0.display(),
            other.0,
            other.1,
            files[0].0.display(),
            size.0,
            size.1
        );
    }
    let mut images = Vec::with_capacity(decoded.len() * decoded[0].0.len());
    for (pixels, _) in decoded {
        images.extend(pixels);
    }
    Ok(Dataset {
        source: root.display().to_string(),
        images,
        labels: files.iter().map(|(_, l)| *l).collect(),
        sample_shape: [transform.channels, size.1 as usize, size.0 as usize],
        class_names: classes
            .iter()
            .map(|c| {
                c.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
    })
}
