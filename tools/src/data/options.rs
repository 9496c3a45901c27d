//! Which labelled data a run reads and how its images are preprocessed: flags of `train`, `eval`
//! and `sensitivity`, and a field of the library's settings that read data.

use super::{Dataset, ImageTransform, Split};
use anyhow::Result;

/// Data options.
#[derive(Debug, Clone, clap::Args)]
pub struct DataOptions {
    /// Data set: `fashion-mnist`, a directory of IDX files, or an ImageFolder root (root/<class>/*.jpg|png).
    #[arg(long, default_value = "fashion-mnist")]
    pub data: String,
    /// Use only the first N images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// ImageFolder: resize the short side to this many pixels.
    #[arg(long)]
    pub resize: Option<u32>,
    /// ImageFolder: centre-crop to a square of this size.
    #[arg(long)]
    pub crop: Option<u32>,
    /// ImageFolder: factor applied to 0–255 pixel values.
    #[arg(long, default_value_t = 1.0 / 255.0)]
    pub pixel_scale: f32,
    /// ImageFolder: per-channel mean subtracted after scaling (comma-separated, or one value).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub mean: Vec<f32>,
    /// ImageFolder: per-channel standard deviation divided by last (comma-separated, or one value).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub std: Vec<f32>,
}

impl DataOptions {
    /// Loads `split`, preprocessing ImageFolder images to `channels` channels (1 or 3).
    pub fn load(&self, split: Split, channels: usize) -> Result<Dataset> {
        let transform = ImageTransform {
            channels,
            resize: self.resize,
            crop: self.crop,
            scale: self.pixel_scale,
            mean: self.mean.clone(),
            std: self.std.clone(),
        };
        let data = super::load(&self.data, split, &transform)?;
        Ok(match self.limit {
            Some(n) => data.truncate(n),
            None => data,
        })
    }
}
