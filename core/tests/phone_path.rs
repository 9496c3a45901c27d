//! The phone path from the bytes of a file and a photo to the top 5, with hostile inputs:
//! preprocessing that would allocate gigabytes, images whose headers promise more memory than
//! allowed, truncated JPEGs; and the fuzzer's regression inputs replayed (crash-free property).

#[path = "../../fuzz/src/header.rs"]
mod header;
#[path = "common/image_model.rs"]
mod image_model;
#[path = "../../fuzz/src/phone_path.rs"]
mod phone_path;

use image::ImageFormat;
use image_model::{image_model_nnz, recipe, solid_image};
use nnzip_core::metadata::Resize;
use nnzip_core::{Model, NnzError};

fn image_err(r: Result<impl std::fmt::Debug, NnzError>) -> String {
    match r {
        Err(NnzError::Image(m)) => m,
        other => panic!("expected an image error, got {other:?}"),
    }
}

#[test]
fn a_photo_is_classified_from_png_and_jpeg() {
    let model = Model::from_bytes(&image_model_nnz(recipe())).unwrap();
    for format in [ImageFormat::Png, ImageFormat::Jpeg] {
        let top = model
            .classify(&solid_image([20, 230, 10], 16, format), 5)
            .unwrap();
        assert_eq!(top[0].label, "green", "{format:?}");
        assert_eq!(top.len(), 3);
    }
}

/// Metadata that resizes to 16384×16384 would allocate 3 GB of RGB before the model refused the
/// input: the file is refused at load instead, as is a recipe that does not make the declared
/// input.
#[test]
fn a_recipe_is_checked_against_the_model_at_load() {
    let mut huge = recipe();
    huge.resize = Resize::Exact {
        width: 16384,
        height: 16384,
    };
    let err = image_err(Model::from_bytes(&image_model_nnz(huge)));
    assert!(
        err.contains("16384×16384") && err.contains("out of range"),
        "{err}"
    );

    let mut cropped = recipe();
    cropped.resize = Resize::ShortSide { size: 256 };
    cropped.crop = Some((224, 224));
    let err = image_err(Model::from_bytes(&image_model_nnz(cropped)));
    assert!(err.contains("the model takes [1, 3, 8, 8]"), "{err}");

    let mut bad_std = recipe();
    bad_std.std = vec![0.0];
    assert!(image_err(Model::from_bytes(&image_model_nnz(bad_std))).contains("std"));
}

/// A PNG chunk: length, type, data, CRC-32 of type and data.
fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    c.extend_from_slice(&crc.finalize().to_be_bytes());
    c
}

/// A PNG whose header declares a 1-bit gray `side × side` image, with almost no pixel data.
fn huge_png_header(side: u32) -> Vec<u8> {
    let mut ihdr = side.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[1, 0, 0, 0, 0]); // 1 bit, gray, deflate, no filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// A valid JPEG whose frame header is patched to say `width × height`.
fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut jpeg = solid_image([200, 10, 10], 16, ImageFormat::Jpeg);
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline frame header");
    // Marker, length (2), precision (1), then height and width.
    jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    jpeg
}

/// Images are measured from their headers, RGB conversion included, before decoding.
#[test]
fn images_are_refused_from_their_headers() {
    let model = Model::from_bytes(&image_model_nnz(recipe())).unwrap();
    let err = image_err(model.classify(&huge_png_header(16384), 5));
    assert!(err.contains("16384×16384") && err.contains("MiB"), "{err}");
    let err = image_err(model.classify(&jpeg_claiming(16384, 10000), 5));
    assert!(err.contains("16384×10000") && err.contains("MiB"), "{err}");
    // Within the budget, a lying header is a decoding error, not a garbage classification.
    assert!(model.classify(&jpeg_claiming(2000, 2000), 5).is_err());
}

#[test]
fn a_truncated_jpeg_is_refused_and_says_so() {
    let model = Model::from_bytes(&image_model_nnz(recipe())).unwrap();
    let jpeg = solid_image([10, 10, 200], 64, ImageFormat::Jpeg);
    assert_eq!(model.classify(&jpeg, 1).unwrap()[0].label, "blue");
    for cut in [jpeg.len() / 2, jpeg.len() - 2, jpeg.len() - 1] {
        let err = image_err(model.classify(&jpeg[..cut], 1));
        assert!(err.contains("truncated"), "cut at {cut}: {err}");
    }
    let png = solid_image([10, 10, 200], 64, ImageFormat::Png);
    assert!(model.classify(&png[..png.len() / 2], 1).is_err());
}

/// The fuzzer's input layout round-trips, and a valid input classifies through it.
#[test]
fn the_fuzz_layout_carries_a_file_and_a_photo() {
    let mut file = vec![0u8]; // mode 0: header made consistent (it already is)
    file.extend(image_model_nnz(recipe()));
    let png = solid_image([230, 10, 10], 8, ImageFormat::Png);
    let data = phone_path::join(&file, &png);
    let top = phone_path::classify(&data).unwrap().unwrap();
    assert_eq!(top[0].label, "red");
    assert!(phone_path::classify(&data[..3]).is_none());
}

/// Every file of `fuzz/regressions/phone_path/` (seeds and minimised findings) goes through the
/// fuzzed function without a panic: the crash-free property, checked in CI without a fuzzer.
#[test]
fn fuzz_regressions_replay_without_panicking() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/phone_path");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| phone_path::classify(&data).map(|r| r.is_ok()));
        assert!(outcome.is_ok(), "{} panics", path.display());
        replayed += 1;
    }
    assert!(replayed > 0, "no regression inputs in {}", dir.display());
}

/// Mutations of the valid phone-path inputs (the fuzz target's seeds) through the fuzzed
/// function, with no fuzzer: bytes flipped, overwritten, cut and repeated in the file and in
/// the photo, the file's header made consistent so the mutations reach the decoder and tract.
/// `NNZIP_PHONE_MUTATIONS` sets how many (default 300, a few seconds); a panic is a failure and
/// its input is written to `fuzz/regressions/phone_path/` for replay.
#[test]
fn mutated_inputs_never_panic() {
    use rand::{Rng, SeedableRng};
    let count: usize = std::env::var("NNZIP_PHONE_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut file = vec![0u8];
    file.extend(image_model_nnz(recipe()));
    let photos = [
        solid_image([30, 140, 220], 12, ImageFormat::Png),
        solid_image([30, 140, 220], 12, ImageFormat::Jpeg),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let (mut loaded, mut classified) = (0usize, 0usize);
    for i in 0..count {
        let (mut f, mut p) = (file.clone(), photos[i % 2].clone());
        for _ in 0..rng.random_range(1..4) {
            let target = if rng.random_bool(0.6) { &mut f } else { &mut p };
            mutate(target, &mut rng);
        }
        f[0] = 0; // keep the header consistent with the mutated body
        let data = phone_path::join(&f, &p);
        match std::panic::catch_unwind(|| phone_path::classify(&data)) {
            Ok(Some(Ok(_))) => classified += 1,
            Ok(Some(Err(NnzError::Image(_)))) => loaded += 1,
            Ok(_) => {}
            Err(_) => {
                let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../fuzz/regressions/phone_path");
                let path = dir.join(format!("mutation-{i}.bin"));
                std::fs::write(&path, &data).unwrap();
                panic!("mutation {i} panics; input written to {}", path.display());
            }
        }
    }
    eprintln!("{count} mutations: {classified} classified, {loaded} loaded with a refused photo");
    // The mutations must reach past the decoder, or this tests little.
    assert!(
        classified + loaded > count / 20,
        "{classified} + {loaded} of {count}"
    );
}

fn mutate(bytes: &mut Vec<u8>, rng: &mut impl rand::Rng) {
    if bytes.len() < 2 {
        bytes.push(rng.random());
        return;
    }
    let at = rng.random_range(0..bytes.len());
    match rng.random_range(0..5) {
        0 => bytes[at] ^= 1 << rng.random_range(0..8),
        1 => {
            bytes[at] = *[0u8, 0xFF, 0x7F, 0x80, 1]
                .get(rng.random_range(0..5))
                .unwrap_or(&0)
        }
        2 => bytes.truncate(at.max(1)),
        3 => {
            let end = (at + rng.random_range(1..16)).min(bytes.len());
            let chunk = bytes[at..end].to_vec();
            bytes.splice(at..at, chunk);
        }
        _ => {
            // A little-endian u32/u64 field pushed to an extreme.
            let end = (at + 4).min(bytes.len());
            bytes[at..end].fill(0xFF);
        }
    }
}
