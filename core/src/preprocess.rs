//! Turning a photo into a model input: decode (JPEG/PNG), resize, centre-crop, normalise, lay out.

use crate::error::{NnzError, Result};
use crate::image_check;
use crate::metadata::{ColorOrder, Interpolation, Layout, Preprocessing, Resize};
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbaImage};
use std::io::Cursor;
use tract_core::prelude::Tensor;

/// Largest width or height accepted from an image file: larger ones are refused before decoding.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Most bytes the image decoder may allocate.
pub const MAX_IMAGE_ALLOC: u64 = 512 << 20;

/// Most pixels of the image a recipe resizes to, before the crop (4096 × 4096: 48 MiB of RGB).
pub const MAX_RESIZED_PIXELS: u64 = 1 << 24;
/// Most elements of the input tensor built from an image (16 Mi f32: 64 MiB).
pub const MAX_INPUT_ELEMENTS: u64 = 1 << 24;

/// Decodes a JPEG or PNG held in memory. Before decoding, the dimensions and pixel type its
/// header declares are checked against [`MAX_IMAGE_ALLOC`] for the decoding and the conversion
/// to RGB together, and a JPEG must run to its end-of-image marker with coded data enough for
/// its size (a truncated one would decode with grey blocks and no error).
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| NnzError::Image(format!("cannot read the image: {e}")))?;
    let Some(format) = reader.format() else {
        return Err(NnzError::Image(
            "not a JPEG or PNG image (unrecognised first bytes)".into(),
        ));
    };
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_ALLOC);
    reader.limits(limits);
    let cannot = |e: image::ImageError| NnzError::Image(format!("cannot decode the image: {e}"));
    let decoder = reader.into_decoder().map_err(cannot)?;
    let (width, height) = decoder.dimensions();
    let bytes_per_pixel = decoder.color_type().bytes_per_pixel();
    image_check::check_decode_cost(width, height, bytes_per_pixel, MAX_IMAGE_ALLOC)?;
    if format == ImageFormat::Jpeg {
        image_check::check_jpeg(bytes)?;
    }
    DynamicImage::from_decoder(decoder).map_err(cannot)
}

/// The `(width, height)` of the image in `bytes` as its header declares it, without decoding.
pub fn image_dimensions(bytes: &[u8]) -> Result<(u32, u32)> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| NnzError::Image(format!("cannot read the image: {e}")))?;
    let jpeg = reader.format() == Some(ImageFormat::Jpeg);
    reader.into_dimensions().map_err(|e| {
        // A JPEG cut inside its header: say it is truncated rather than what the parser missed.
        match image_check::check_jpeg(bytes) {
            Err(truncated) if jpeg => truncated,
            _ => NnzError::Image(format!("cannot read the image's header: {e}")),
        }
    })
}

/// Wraps raw RGBA8 pixels (row-major, 4 bytes a pixel) as an image.
pub fn rgba_image(width: u32, height: u32, rgba: &[u8]) -> Result<DynamicImage> {
    let expected = u64::from(width) * u64::from(height) * 4;
    if width == 0 || height == 0 || width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(NnzError::WrongPixelCount(format!(
            "pixel size {width}×{height} is empty or over {MAX_IMAGE_SIDE} a side"
        )));
    }
    image_check::check_decode_cost(width, height, 4, MAX_IMAGE_ALLOC)?;
    if rgba.len() as u64 != expected {
        return Err(NnzError::WrongPixelCount(format!(
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

/// Checks a file's recipe against its model's declared input shape (`-1`: dynamic) before any
/// image is seen: sizes within [`MAX_IMAGE_SIDE`], [`MAX_RESIZED_PIXELS`] and
/// [`MAX_INPUT_ELEMENTS`], per-channel values that fit the channel count, finite non-zero std,
/// and, where the recipe fixes the output size (a crop or an exact resize), the shape the model
/// declares.
pub fn check_recipe(p: &Preprocessing, declared: &[i64]) -> Result<()> {
    match p.resize {
        Resize::None => {}
        Resize::Exact { width, height } => check_resized(width, height)?,
        Resize::ShortSide { size } => {
            if size == 0 || size > MAX_IMAGE_SIDE {
                return Err(NnzError::Image(format!(
                    "preprocessing resizes the short side to {size}: out of range 1–{MAX_IMAGE_SIDE}"
                )));
            }
        }
    }
    normalisation(p)?;
    let fixed = match (p.crop, p.resize) {
        (Some(crop), _) => Some(crop),
        (None, Resize::Exact { width, height }) => Some((width, height)),
        _ => None,
    };
    match fixed {
        Some((w, h)) => check_input(p, w, h, declared),
        None => Ok(()),
    }
}

/// Checks, from an image's dimensions alone (before decoding it), that the recipe can turn it
/// into the model's input within the limits: resized size, crop, input shape.
pub fn check_image_fits(
    p: &Preprocessing,
    width: u32,
    height: u32,
    declared: &[i64],
) -> Result<()> {
    let (rw, rh) = resized_size(p.resize, width, height);
    check_resized(rw, rh)?;
    // The resize filters the columns first into a float buffer of the source width.
    let column_pass = u64::from(width) * u64::from(rh) * 3 * 4;
    if (rw, rh) != (width, height) && column_pass > MAX_IMAGE_ALLOC {
        return Err(NnzError::Image(format!(
            "resizing the {width}×{height} image to {rw}×{rh} would take {} MiB, over {} MiB",
            column_pass >> 20,
            MAX_IMAGE_ALLOC >> 20
        )));
    }
    let (cw, ch) = p.crop.unwrap_or((rw, rh));
    if cw == 0 || ch == 0 || cw > rw || ch > rh {
        return Err(NnzError::Image(format!(
            "the image is {rw}×{rh} after resizing, smaller than the {cw}×{ch} crop"
        )));
    }
    check_input(p, cw, ch, declared)
}

fn check_resized(w: u32, h: u32) -> Result<()> {
    if w == 0
        || h == 0
        || w > MAX_IMAGE_SIDE
        || h > MAX_IMAGE_SIDE
        || u64::from(w) * u64::from(h) > MAX_RESIZED_PIXELS
    {
        return Err(NnzError::Image(format!(
            "preprocessing resizes the image to {w}×{h}: out of range (at most \
             {MAX_RESIZED_PIXELS} pixels, {MAX_IMAGE_SIDE} a side)"
        )));
    }
    Ok(())
}

/// Checks that a `w × h` output of the recipe is an input the model declares (`-1`: any size).
fn check_input(p: &Preprocessing, w: u32, h: u32, declared: &[i64]) -> Result<()> {
    let c = channels(p);
    let (w, h) = (w as usize, h as usize);
    let elements = (c * w * h) as u64;
    if elements == 0 || elements > MAX_INPUT_ELEMENTS {
        return Err(NnzError::Image(format!(
            "preprocessing makes a {c}×{h}×{w} input: empty or over {MAX_INPUT_ELEMENTS} elements"
        )));
    }
    let made = match p.layout {
        Layout::Nchw => [1, c, h, w],
        Layout::Nhwc => [1, h, w, c],
    };
    let fits = if declared.is_empty() {
        // No declared shape (an old file, or a caller that compares the result itself).
        true
    } else if declared.len() == made.len() {
        // The batch (first) dimension is whatever the caller runs.
        declared[1..]
            .iter()
            .zip(&made[1..])
            .all(|(&d, &m)| d <= 0 || d as usize == m)
    } else {
        // A model that flattens its input itself: only the element count can be compared.
        let rest = declared.get(1..).unwrap_or_default();
        rest.iter().any(|&d| d <= 0) || rest.iter().map(|&d| d as u64).product::<u64>() == elements
    };
    if !fits {
        return Err(NnzError::Image(format!(
            "preprocessing gives shape {made:?}, the model takes {declared:?}: the file's metadata \
             is inconsistent"
        )));
    }
    Ok(())
}

/// The per-channel mean and std of the recipe, checked.
fn normalisation(p: &Preprocessing) -> Result<(Vec<f32>, Vec<f32>)> {
    let c = channels(p);
    let mean = per_channel(&p.mean, c, "mean")?;
    let std = per_channel(&p.std, c, "std")?;
    if std.iter().any(|s| *s == 0.0 || !s.is_finite())
        || mean.iter().any(|m| !m.is_finite())
        || !p.pixel_scale.is_finite()
    {
        return Err(NnzError::Image(
            "preprocessing mean, std and pixel scale must be finite, std non-zero".into(),
        ));
    }
    Ok((mean, std))
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
    // No declared shape here: the caller compares the result with its model's.
    check_image_fits(p, img.width(), img.height(), &[])?;
    let (rw, rh) = resized_size(p.resize, img.width(), img.height());
    let resized = if (rw, rh) == (img.width(), img.height()) {
        img.to_rgb8()
    } else {
        image::imageops::resize(&img.to_rgb8(), rw, rh, filter(p.interpolation))
    };
    let (cw, ch) = p.crop.unwrap_or((rw, rh));
    let (x0, y0) = ((rw - cw) / 2, (rh - ch) / 2);
    let c = channels(p);
    let (mean, std) = normalisation(p)?;
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
        let short = rgba_image(2, 2, &[0; 15]).unwrap_err();
        assert!(matches!(short, NnzError::WrongPixelCount(_)), "{short}");
        assert!(short.to_string().contains("wrong pixel count"), "{short}");
        let empty = rgba_image(0, 2, &[]).unwrap_err();
        assert!(matches!(empty, NnzError::WrongPixelCount(_)), "{empty}");
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
