//! Training and evaluation data: IDX (MNIST-style, e.g. Fashion-MNIST) and ImageFolder
//! directories, held in memory as normalised float images; seeded shuffling, mini-batches and a
//! held-out validation split.

pub mod idx;
pub mod image_folder;
pub mod options;

use anyhow::{Context, Result, bail, ensure};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};

pub use image_folder::ImageTransform;
pub use options::DataOptions;

/// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Environment variable that overrides [`FASHION_MNIST_DIR`].
pub const FASHION_MNIST_ENV: &str = "NNZIP_FASHION_MNIST_DIR";

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Which part of a data set to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training images.
    Train,
    /// The test images.
    Test,
}

/// Images held in memory as normalised floats (`N × C × H × W`) with their labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Where the data came from (for messages).
    pub source: String,
    /// Row-major pixel data, `len() × C × H × W`.
    pub images: Vec<f32>,
    /// Class index of each image.
    pub labels: Vec<u32>,
    /// `[C, H, W]` of one image.
    pub sample_shape: [usize; 3],
    /// Class names, in label order (may be empty when unknown).
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Floats per image.
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// Number of classes: the class names, or one more than the largest label.
    pub fn num_classes(&self) -> usize {
        let from_labels = self.labels.iter().max().map_or(0, |&m| m as usize + 1);
        self.class_names.len().max(from_labels)
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let n = self.sample_len();
        let mut images = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            images.extend_from_slice(&self.images[i * n..(i + 1) * n]);
        }
        Dataset {
            source: self.source.clone(),
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            sample_shape: self.sample_shape,
            class_names: self.class_names.clone(),
        }
    }

    /// The first `limit` images.
    pub fn truncate(mut self, limit: usize) -> Dataset {
        let limit = limit.min(self.len());
        self.images.truncate(limit * self.sample_len());
        self.labels.truncate(limit);
        self
    }

    /// Splits off a validation set of `fraction` of the images, chosen with `seed`:
    /// returns `(train, validation)`.
    pub fn split_validation(&self, fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        ensure!(
            (0.0..1.0).contains(&fraction),
            "--val-split must be in [0, 1), got {fraction}"
        );
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x5eed_0fa1));
        let val = ((self.len() as f64) * fraction).round() as usize;
        let (val_idx, train_idx) = order.split_at(val);
        Ok((self.subset(train_idx), self.subset(val_idx)))
    }

    /// Mini-batches of indices: shuffled with `rng` when given, in order otherwise; the last may be short.
    pub fn batches(&self, batch: usize, rng: Option<&mut StdRng>) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        if let Some(rng) = rng {
            order.shuffle(rng);
        }
        order.chunks(batch.max(1)).map(|c| c.to_vec()).collect()
    }

    /// The images (`B×C×H×W` f32) and labels (`B` u32) at `indices`.
    pub fn batch_tensors(&self, indices: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let n = self.sample_len();
        let mut x = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            x.extend_from_slice(&self.images[i * n..(i + 1) * n]);
        }
        let [c, h, w] = self.sample_shape;
        let x = Tensor::from_vec(x, (indices.len(), c, h, w), device)?;
        let y = Tensor::from_vec(
            indices
                .iter()
                .map(|&i| self.labels[i])
                .collect::<Vec<u32>>(),
            indices.len(),
            device,
        )?;
        Ok((x, y))
    }

    /// Fails, naming the data and the fix, when a label is not below `classes`.
    pub fn check_labels(&self, classes: usize, model: &str) -> Result<()> {
        if let Some((i, &label)) = self
            .labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize >= classes)
        {
            bail!(
                "{}: image {i} has label {label}, but the model {model} outputs only {classes} classes (labels 0..{}): train a model with at least {} outputs or fix the labels",
                self.source,
                classes.saturating_sub(1),
                label + 1
            );
        }
        Ok(())
    }
}

/// The directory Fashion-MNIST is read from.
pub fn fashion_mnist_dir() -> PathBuf {
    std::env::var_os(FASHION_MNIST_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR))
}

/// The `(images, labels)` files of an IDX directory for `split`, trying `.gz` and plain names.
fn idx_files(dir: &Path, split: Split) -> Option<(PathBuf, PathBuf)> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let find = |stem: String| {
        [format!("{stem}.gz"), stem]
            .into_iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
    };
    Some((
        find(format!("{prefix}-images-idx3-ubyte"))?,
        find(format!("{prefix}-labels-idx1-ubyte"))?,
    ))
}

/// Loads an IDX images/labels pair as `pixel / 255` floats.
pub fn load_idx(images_path: &Path, labels_path: &Path) -> Result<Dataset> {
    let (images, labels) = idx::read_idx_pair(images_path, labels_path)?;
    let sample_shape = match images.dims[..] {
        [_, h, w] => [1, h, w],
        [_, c, h, w] => [c, h, w],
        _ => unreachable!("checked by read_idx_pair"),
    };
    Ok(Dataset {
        source: images_path.display().to_string(),
        images: images.data.iter().map(|&p| p as f32 / 255.0).collect(),
        labels: labels.data.iter().map(|&l| l as u32).collect(),
        sample_shape,
        class_names: Vec::new(),
    })
}

/// Loads Fashion-MNIST's `split` from `dir`, saying how to install it when the files are missing.
pub fn load_fashion_mnist(dir: &Path, split: Split) -> Result<Dataset> {
    let (images, labels) = idx_files(dir, split).with_context(|| {
        format!(
            "Fashion-MNIST not found in {}: install it: apt-get install -y dataset-fashion-mnist (or set {FASHION_MNIST_ENV} to a directory holding the IDX files)",
            dir.display()
        )
    })?;
    let mut data = load_idx(&images, &labels)?;
    data.class_names = FASHION_MNIST_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect();
    Ok(data)
}

/// Resolves `--data`: `fashion-mnist`, a directory of IDX files (`train-images-idx3-ubyte[.gz]`,
/// `t10k-…`), or an ImageFolder root (`root/<class>/*.jpg|png`, optionally with `train/` and
/// `test/` or `val/` subdirectories).
pub fn load(spec: &str, split: Split, transform: &ImageTransform) -> Result<Dataset> {
    if spec == "fashion-mnist" {
        return load_fashion_mnist(&fashion_mnist_dir(), split);
    }
    let path = Path::new(spec);
    if !path.exists() {
        bail!(
            "data path {spec} does not exist: pass `fashion-mnist`, a directory of IDX files, or an ImageFolder root (root/<class>/*.jpg|png)"
        );
    }
    ensure!(
        path.is_dir(),
        "--data {spec} is a file: pass the directory that holds the data set"
    );
    if let Some((images, labels)) = idx_files(path, split) {
        return load_idx(&images, &labels);
    }
    let has_idx = std::fs::read_dir(path)?
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("-ubyte"));
    if has_idx {
        bail!(
            "{spec} holds IDX files but not the {} pair (expected {}-images-idx3-ubyte[.gz] and {}-labels-idx1-ubyte[.gz])",
            if split == Split::Train {
                "training"
            } else {
                "test"
            },
            if split == Split::Train {
                "train"
            } else {
                "t10k"
            },
            if split == Split::Train {
                "train"
            } else {
                "t10k"
            }
        );
    }
    let root = match split {
        Split::Train => Some(path.join("train")).filter(|p| p.is_dir()),
        Split::Test => [path.join("test"), path.join("val")]
            .into_iter()
            .find(|p| p.is_dir()),
    }
    .unwrap_or_else(|| path.to_path_buf());
    image_folder::load(&root, transform)
}

/// Whether `spec` names a data set with a test split separate from its training images.
pub fn has_test_split(spec: &str) -> bool {
    if spec == "fashion-mnist" {
        return true;
    }
    let path = Path::new(spec);
    idx_files(path, Split::Test).is_some()
        || path.join("test").is_dir()
        || path.join("val").is_dir()
}
