//! Labelled data sets: where they are, how they are read, how they become model inputs.

pub mod idx;

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// Where Debian's `dataset-fashion-mnist` puts the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's ten class names, in label order.
pub const FASHION_MNIST_LABELS: [&str; 10] = [
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

/// Which split of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training images.
    Train,
    /// The test images.
    Test,
}

/// Grayscale images with labels, as MNIST-style data sets store them.
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// Pixels, `count × rows × cols`, row-major, 0–255.
    pub pixels: Vec<u8>,
    /// One label per image.
    pub labels: Vec<u8>,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Keeps the first `n` images.
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.labels.truncate(n);
        self.pixels.truncate(n * self.rows * self.cols);
    }
    /// Images `range` as a `[n, 1, rows, cols]` f32 batch of `pixel / 255`.
    pub fn batch(&self, range: std::ops::Range<usize>) -> (Vec<f32>, Vec<usize>) {
        let px = self.rows * self.cols;
        let x = self.pixels[range.start * px..range.end * px]
            .iter()
            .map(|&p| p as f32 / 255.0)
            .collect();
        (x, vec![range.len(), 1, self.rows, self.cols])
    }
}

/// Resolves `--data`: the name `fashion-mnist` (Debian's package) or a folder of IDX files.
pub fn resolve_idx_dir(data: &str) -> Result<PathBuf> {
    if data == "fashion-mnist" {
        let dir = PathBuf::from(FASHION_MNIST_DIR);
        if !dir.is_dir() {
            bail!(
                "Fashion-MNIST is not installed ({FASHION_MNIST_DIR} is missing): install it with `apt-get install -y dataset-fashion-mnist`, or pass --data DIR with the IDX files"
            );
        }
        return Ok(dir);
    }
    let dir = PathBuf::from(data);
    if !dir.is_dir() {
        bail!(
            "data folder {} does not exist: pass `--data fashion-mnist` or a folder with MNIST-style IDX files",
            dir.display()
        );
    }
    Ok(dir)
}

/// Loads a split of an MNIST-style data set from a folder (`train-images-idx3-ubyte[.gz]`,
/// `train-labels-idx1-ubyte[.gz]`, `t10k-…`).
pub fn load_idx_split(dir: &Path, split: Split) -> Result<ImageSet> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let find = |kind: &str| -> Result<PathBuf> {
        for name in [format!("{prefix}-{kind}.gz"), format!("{prefix}-{kind}")] {
            let p = dir.join(&name);
            if p.is_file() {
                return Ok(p);
            }
        }
        bail!(
            "{} has no {prefix}-{kind}[.gz]: is this an MNIST-style data folder?",
            dir.display()
        )
    };
    let images = idx::read_idx(&find("images-idx3-ubyte")?)?;
    let labels = idx::read_idx(&find("labels-idx1-ubyte")?)?;
    idx::image_set(images, labels)
}
