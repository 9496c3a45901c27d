//! Turning a photo into a model input: decode (JPEG/PNG), resize, centre-crop, normalise, lay out.

use crate::error::{NnzError, Result};
use crate::metadata::{ColorOrder, Interpolation, Layout, Preprocessing, Resize};
use image::imageops::FilterType;
use image::{DynamicImage, ImageReader, Limits, RgbaImage};
use std::io::Cursor;
use tract_core::prelude::Tensor;

/// Largest width or height accepted from an image file: larger ones are refused before decoding.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Most bytes the image decoder may allocate.
pub const MAX_IMAGE_ALLOC: u64 = 512 << 20;

/// Decodes a JPEG or PNG held in memory, refusing huge dimensions before allocating.
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| NnzError::Image(format!("cannot read the image: {e}")))?;
    if reader.format().is_none() {
        return Err(NnzError::Image(
            "not a JPEG or PNG image (unrecognised first bytes)".into(),
        ));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_ALLOC);
    reader.limits(limits);
    reader
        .decode()
        .map_err(|e| NnzError::Image(format!("cannot decode the image: {e}")))
}

/// Wraps raw RGBA8 pixels (row-major, 4 bytes a pixel) as an image.
pub fn rgba_image(width: u32, height: u32, rgba: &[u8]) -> Result<DynamicImage> {
    let expected = u64::from(width) * u64::from(height) * 4;
    if width == 0 || height == 0 || width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(NnzError::Image(format!(
            "pixel size {width}×{height} is empty or over {MAX_IMAGE_SIDE} a side"
        )));
    }
    if rgba.len() as u64 != expected {
        return Err(NnzError::Image(format!(
            "wrong pixel count: {width}×{height} RGBA needs {expected} bytes, got {}",
            rgba.len()
        )));
    }
    RgbaImage::from_raw(width, height, rgba.to_vec())
        .map(DynamicImage::ImageRgba8)
        .ok_or_else(|| NnzError::Image("pixel buffer does not match its size".into()))
}

fn filter(i: Interpolation) -> FilterType {
    match i {
        Interpolation::Nearest => FilterType::Nearest,
        Interpolation::Bilinear => FilterType::Triangle,
        Interpolation::Bicubic => FilterType::CatmullRom,
    }
}

/// Channel count the recipe produces.
pub fn channels(p: &Preprocessing) -> usize {
    match p.color {
        ColorOrder::Gray => 1,
        ColorOrder::Rgb | ColorOrder::Bgr => 3,
    }
}

/// The `(width, height)` of the tensor the recipe produces from an image of `(w, h)`.
pub fn output_size(p: &Preprocessing, w: u32, h: u32) -> (u32, u32) {
    let resized = resized_size(p.resize, w, h);
    p.crop.unwrap_or(resized)
}

fn resized_size(r: Resize, w: u32, h: u32) -> (u32, u32) {
    match r {
        Resize::None => (w, h),
        Resize::Exact { width, height } => (width, height),
        Resize::ShortSide { size } => {
            // Round like torchvision: the short side gets exactly `size`.
            if w <= h {
                (
                    size,
                    ((u64::from(h) * u64::from(size) + u64::from(w) / 2) / u64::from(w).max(1))
                        as u32,
                )
            } else {
                (
                    ((u64::from(w) * u64::from(size) + u64::from(h) / 2) / u64::from(h).max(1))
                        as u32,
                    size,
                )
            }
        }
    }
}

fn per_channel(v: &[f32], c: usize, what: &str) -> Result<Vec<f32>> {
    match v.len() {
        1 => Ok(vec![v[0]; c]),
        n if n == c => Ok(v.to_vec()),
        n => Err(NnzError::Image(format!(
            "preprocessing has {n} {what} values for {c} channels"
        ))),
    }
}

/// Applies the recipe to an image and returns a `[1, C, H, W]` (or `[1, H, W, C]`) f32 tensor.
pub fn image_to_tensor(img: &DynamicImage, p: &Preprocessing) -> Result<Tensor> {
    let (rw, rh) = resized_size(p.resize, img.width(), img.height());
    if rw == 0 || rh == 0 || rw > MAX_IMAGE_SIDE || rh > MAX_IMAGE_SIDE {
        return Err(NnzError::Image(format!(
            "preprocessing resizes the image to {rw}×{rh}: out of range"
        )));
    }
    let resized = if (rw, rh) == (img.width(), img.height()) {
        img.to_rgb8()
    } else {
        image::imageops::resize(&img.to_rgb8(), rw, rh, filter(p.interpolation))
    };
    let (cw, ch) = p.crop.unwrap_or((rw, rh));
    if cw == 0 || ch == 0 || cw > rw || ch > rh {
        return Err(NnzError::Image(format!(
            "the image is {rw}×{rh} after resizing, smaller than the {cw}×{ch} crop"
        )));
    }
    let (x0, y0) = ((rw - cw) / 2, (rh - ch) / 2);
    let c = channels(p);
    let mean = per_channel(&p.mean, c, "mean")?;
    let std = per_channel(&p.std, c, "std")?;
    if std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
        return Err(NnzError::Image(
            "preprocessing std must be finite and non-zero".into(),
        ));
    }
    let (w, h) = (cw as usize, ch as usize);
    let mut out = vec![0f32; c * w * h];
    for y in 0..h {
        for x in 0..w {
            let px = resized.get_pixel(x0 + x as u32, y0 + y as u32).0;
            let px = if p.invert {
                [255 - px[0], 255 - px[1], 255 - px[2]]
            } else {
                px
            };
            let vals: [f32; 3] = match p.color {
                ColorOrder::Rgb => [px[0] as f32, px[1] as f32, px[2] as f32],
                ColorOrder::Bgr => [px[2] as f32, px[1] as f32, px[0] as f32],
                // ITU-R BT.601 luma, as PIL's convert("L").
                ColorOrder::Gray => [
                    (px[0] as f32 * 299.0 + px[1] as f32 * 587.0 + px[2] as f32 * 114.0) / 1000.0,
                    0.0,
                    0.0,
                ],
            };
            for k in 0..c {
                let v = (vals[k] * p.pixel_scale - mean[k]) / std[k];
                let ix = match p.layout {
                    Layout::Nchw => k * w * h + y * w + x,
                    Layout::Nhwc => (y * w + x) * c + k,
                };
                out[ix] = v;
            }
        }
    }
    let shape = match p.layout {
        Layout::Nchw => [1, c, h, w],
        Layout::Nhwc => [1, h, w, c],
    };
    Tensor::from_shape(&shape, &out).map_err(|e| NnzError::Image(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_side_resize_keeps_aspect() {
        assert_eq!(
            resized_size(Resize::ShortSide { size: 256 }, 512, 1024),
            (256, 512)
        );
        assert_eq!(
            resized_size(Resize::ShortSide { size: 256 }, 451, 300),
            (385, 256)
        );
    }

    #[test]
    fn normalises_and_lays_out() {
        let img =
            DynamicImage::ImageRgba8(RgbaImage::from_pixel(4, 2, image::Rgba([255, 0, 127, 255])));
        let mut p = Preprocessing::efficientnet_lite();
        p.resize = Resize::None;
        p.crop = None;
        let t = image_to_tensor(&img, &p).unwrap();
        assert_eq!(t.shape(), &[1, 3, 2, 4]);
        let v: Vec<f32> = t
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        assert!((v[0] - 1.0).abs() < 1e-6); // (255-127)/128
        assert!((v[8] + 127.0 / 128.0).abs() < 1e-6);
        assert!(v[16].abs() < 1e-6);
        p.layout = Layout::Nhwc;
        p.color = ColorOrder::Bgr;
        let t = image_to_tensor(&img, &p).unwrap();
        assert_eq!(t.shape(), &[1, 2, 4, 3]);
        assert!(
            t.to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .next()
                .unwrap()
                .abs()
                < 1e-6
        );
    }

    #[test]
    fn rejects_bad_images() {
        assert!(matches!(
            decode_image(b"not an image"),
            Err(NnzError::Image(_))
        ));
        assert!(
            rgba_image(2, 2, &[0; 15])
                .unwrap_err()
                .to_string()
                .contains("wrong pixel count")
        );
        let img = DynamicImage::ImageRgba8(RgbaImage::new(10, 10));
        let mut p = Preprocessing::efficientnet_lite();
        p.resize = Resize::None;
        assert!(
            image_to_tensor(&img, &p)
                .unwrap_err()
                .to_string()
                .contains("smaller than")
        );
    }
}
