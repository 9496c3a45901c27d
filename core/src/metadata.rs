//! What a `.nnz` file says about its model besides the weights: the input, how to turn a photo
//! into that input, the class labels and what compression did to each tensor.
//!
//! Stored in the file as one UTF-8 JSON object (see `docs/FORMAT.md`); unknown keys are ignored so
//! newer writers stay readable.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything in a `.nnz` file that is not the graph or the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Metadata {
    /// Human-readable model name (e.g. `efficientnet_lite0`).
    pub model_name: String,
    /// The model's (single) image input.
    pub input: InputSpec,
    /// How to turn an image into the input tensor; `None` when the model does not take images.
    #[serde(default)]
    pub preprocessing: Option<Preprocessing>,
    /// Class names, in the order of the model's output vector (may be empty).
    #[serde(default)]
    pub labels: Vec<String>,
    /// What compression did, tensor by tensor. Filled in by the encoder.
    #[serde(default)]
    pub stats: CompressionStats,
    /// Which program wrote the file (e.g. `nnzip 0.1.0`).
    #[serde(default)]
    pub producer: String,
    /// Free-form facts (measured accuracy, data set, …): shown by `nnzip inspect`.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

/// The model input that images are fed to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct InputSpec {
    /// ONNX input name.
    pub name: String,
    /// Shape; `-1` marks a dynamic dimension (normally the batch).
    pub shape: Vec<i64>,
}

/// How an image is resized before cropping.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resize {
    /// Use the image as it is.
    None,
    /// Resize to exactly this size (aspect ratio not kept).
    Exact {
        /// Target width in pixels.
        width: u32,
        /// Target height in pixels.
        height: u32,
    },
    /// Resize so that the shorter side has this length, keeping the aspect ratio.
    ShortSide {
        /// Length of the shorter side after resizing.
        size: u32,
    },
}

/// Resampling filter used when resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear (triangle filter).
    Bilinear,
    /// Bicubic (Catmull-Rom).
    Bicubic,
}

/// Channel order (and count) of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorOrder {
    /// Three channels, red first.
    Rgb,
    /// Three channels, blue first.
    Bgr,
    /// One luminance channel.
    Gray,
}

/// Memory layout of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `[N, C, H, W]` (PyTorch, ONNX default).
    Nchw,
    /// `[N, H, W, C]` (TensorFlow).
    Nhwc,
}

/// The recipe that turns decoded image pixels into the model's input tensor:
/// resize, centre crop, then `value = (pixel × pixel_scale − mean[c]) / std[c]` per channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// Resize step.
    pub resize: Resize,
    /// Centre crop `(width, height)` after resizing; `None` for no crop.
    #[serde(default)]
    pub crop: Option<(u32, u32)>,
    /// Resampling filter.
    pub interpolation: Interpolation,
    /// Channel order of the tensor.
    pub color: ColorOrder,
    /// Tensor layout.
    pub layout: Layout,
    /// Factor applied to the 0–255 pixel value first (e.g. `1/255`).
    pub pixel_scale: f32,
    /// Per-channel mean subtracted after scaling (one value per channel, or one for all).
    pub mean: Vec<f32>,
    /// Per-channel divisor applied last (one value per channel, or one for all).
    pub std: Vec<f32>,
    /// Invert the image (`255 − pixel`) first: for data sets with light objects on black (MNIST).
    #[serde(default)]
    pub invert: bool,
}

impl Preprocessing {
    /// EfficientNet-Lite (and TF-style) ImageNet recipe: short side 256 bicubic, centre crop 224,
    /// RGB, NCHW, `(pixel − 127) / 128`.
    pub fn efficientnet_lite() -> Self {
        Preprocessing {
            resize: Resize::ShortSide { size: 256 },
            crop: Some((224, 224)),
            interpolation: Interpolation::Bicubic,
            color: ColorOrder::Rgb,
            layout: Layout::Nchw,
            pixel_scale: 1.0,
            mean: vec![127.0],
            std: vec![128.0],
            invert: false,
        }
    }

    /// Torchvision ImageNet recipe: short side 256 bilinear, centre crop 224, RGB, NCHW,
    /// `(pixel/255 − mean) / std` with the usual ImageNet statistics.
    pub fn torchvision_imagenet() -> Self {
        Preprocessing {
            resize: Resize::ShortSide { size: 256 },
            crop: Some((224, 224)),
            interpolation: Interpolation::Bilinear,
            color: ColorOrder::Rgb,
            layout: Layout::Nchw,
            pixel_scale: 1.0 / 255.0,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            invert: false,
        }
    }

    /// MNIST / Fashion-MNIST recipe: 28×28 gray, `pixel / 255`.
    pub fn mnist() -> Self {
        Preprocessing {
            resize: Resize::Exact {
                width: 28,
                height: 28,
            },
            crop: None,
            interpolation: Interpolation::Bilinear,
            color: ColorOrder::Gray,
            layout: Layout::Nchw,
            pixel_scale: 1.0 / 255.0,
            mean: vec![0.0],
            std: vec![1.0],
            invert: false,
        }
    }
}

/// What compression did to the model, for reports and the app's model card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CompressionStats {
    /// Size of the ONNX file the model came from, in bytes (0 if unknown).
    #[serde(default)]
    pub source_onnx_bytes: u64,
    /// One entry per stored tensor, in file order.
    #[serde(default)]
    pub tensors: Vec<TensorStats>,
}

impl CompressionStats {
    /// Bytes the stored tensors take as dense float32.
    pub fn dense_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.original_bytes).sum()
    }
    /// Bytes the stored tensors take in the file (payloads only).
    pub fn compressed_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.compressed_bytes).sum()
    }
}

/// Per-tensor compression facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TensorStats {
    /// Tensor (ONNX initializer) name.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<u64>,
    /// Encoding name: `raw-f32`, `raw-f16`, `shared-dense` or `shared-sparse`.
    pub encoding: String,
    /// Bytes as dense float32.
    pub original_bytes: u64,
    /// Bytes of the tensor's record in the file.
    pub compressed_bytes: u64,
    /// Bits per value (32/16 for raw) or codebook index bits.
    pub bits: u8,
    /// Gap width in bits for `shared-sparse`, else 0.
    #[serde(default)]
    pub gap_bits: u8,
    /// Fraction of non-zero weights.
    pub density: f64,
    /// Number of codebook entries (0 for raw).
    #[serde(default)]
    pub codebook_size: u32,
    /// Filler zeros inserted for long gaps (`shared-sparse` only).
    #[serde(default)]
    pub fillers: u64,
    /// Row scales stored with the tensor (one per index of its first dimension; 0 = none).
    #[serde(default)]
    pub row_scales: u64,
}
