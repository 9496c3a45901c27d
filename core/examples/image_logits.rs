//! The logits a `.nnz` image classifier gives on photos, as JSON, and their comparison with
//! another machine's: how `scripts/test-arm64.sh` checks that `classify` on arm64 (under qemu)
//! agrees with x86_64.
//!
//!   image_logits MODEL.nnz IMAGE...                     # prints {"arch", "images": [...]}
//!   image_logits MODEL.nnz IMAGE... --against HOST.json # and compares with HOST.json
//!
//! Compared per image: the top-5 classes (same classes, same order) and every logit within
//! `REL_TOLERANCE` of the image's largest logit magnitude. The preprocessed input is hashed
//! as well, so a difference in JPEG decoding is told apart from one in inference.

use nnzip_core::{Model, Tensor, preprocess};
use serde_json::{Value, json};
use std::path::Path;
use std::process::ExitCode;

/// Largest accepted |logit difference| over the largest |logit| of the image. The two machines
/// run the same graph with other kernels (matrix products, depthwise and direct convolutions:
/// AVX2+FMA on x86_64, NEON on aarch64), so sums are rounded in another order; on one machine,
/// tract's zone walk against the padded-plane kernel (another order of the same sums) is held to
/// the same 1e-4 on EfficientNet-Lite0 (tests/tests/kernels_logits.rs). The bound stays well
/// below what could reorder the top 5: on the shared photos the closest of the six largest
/// logits are 1.9e-3 of the largest apart (astronaut.jpg; 1.5e-2 to 5.8e-2 on the others), and
/// two logits moving 1e-4 each close at most 2e-4 of it. Measured arm64 (qemu, Cortex-A76)
/// against x86_64 (AVX2+FMA) on the shared photos: at most 6.1e-7 of the largest logit (4.3e-6
/// absolute), preprocessed inputs bit-identical, so the bound leaves over 100x headroom for other
/// CPUs' kernels. Every comparison prints the difference.
const REL_TOLERANCE: f32 = 1e-4;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("image_logits: {e}");
            ExitCode::from(2)
        }
    }
}

/// Prints this machine's logits; with `--against`, returns whether they match the file's.
fn run() -> Result<bool, String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let against = match args.iter().position(|a| a == "--against") {
        Some(i) if i + 1 < args.len() => Some(args.drain(i..i + 2).nth(1).unwrap_or_default()),
        Some(_) => return Err("--against needs a JSON file".into()),
        None => None,
    };
    let [model_path, images @ ..] = args.as_slice() else {
        return Err("usage: image_logits MODEL.nnz IMAGE... [--against HOST.json]".into());
    };
    let model = Model::open(model_path).map_err(|e| format!("{model_path}: {e}"))?;
    let results = images
        .iter()
        .map(|path| image_logits(&model, path))
        .collect::<Result<Vec<_>, _>>()?;
    let ours = json!({ "arch": std::env::consts::ARCH, "images": results });
    println!("{ours}");
    let Some(file) = against else { return Ok(true) };
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
    let theirs: Value = serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    compare(&ours, &theirs)
}

/// One image's name, the hash of its preprocessed input and its logits.
fn image_logits(model: &Model, path: &str) -> Result<Value, String> {
    let pre = model
        .metadata()
        .preprocessing
        .as_ref()
        .ok_or("the model has no preprocessing in its metadata (pack it with --preprocess)")?;
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let img = preprocess::decode_image(&bytes).map_err(|e| format!("{path}: {e}"))?;
    let input = preprocess::image_to_tensor(&img, pre).map_err(|e| format!("{path}: {e}"))?;
    let input_hash = fnv1a(&values(&input)?);
    let logits = values(&model.run(input).map_err(|e| format!("{path}: {e}"))?)?;
    let name = Path::new(path).file_name().map(|n| n.to_string_lossy());
    Ok(json!({ "image": name, "input_hash": format!("{input_hash:016x}"), "logits": logits }))
}

/// A tensor's values as f32, row-major.
fn values(t: &Tensor) -> Result<Vec<f32>, String> {
    let t = t.cast_to::<f32>().map_err(|e| format!("tensor: {e}"))?;
    let view = t
        .to_plain_array_view::<f32>()
        .map_err(|e| format!("tensor: {e}"))?;
    Ok(view.iter().copied().collect())
}

/// FNV-1a over the values' bits: equal inputs, bit for bit.
fn fnv1a(values: &[f32]) -> u64 {
    values
        .iter()
        .flat_map(|v| v.to_bits().to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        })
}

/// Reports each image's agreement on stderr; true when every image agrees.
fn compare(ours: &Value, theirs: &Value) -> Result<bool, String> {
    let list = |v: &Value| v["images"].as_array().cloned().unwrap_or_default();
    let (ours_list, theirs_list) = (list(ours), list(theirs));
    if ours_list.len() != theirs_list.len() || ours_list.is_empty() {
        return Err("the two runs are over different images".into());
    }
    let mut all_agree = true;
    let mut worst = 0f32;
    for (a, b) in ours_list.iter().zip(&theirs_list) {
        let name = a["image"].as_str().unwrap_or("?");
        if a["image"] != b["image"] {
            return Err(format!("image {name} against {}", b["image"]));
        }
        let (la, lb) = (floats(&a["logits"]), floats(&b["logits"]));
        if la.len() != lb.len() || la.is_empty() {
            return Err(format!("{name}: {} logits against {}", la.len(), lb.len()));
        }
        let diff = la
            .iter()
            .zip(&lb)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let scale = lb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let rel = diff / scale.max(f32::MIN_POSITIVE);
        worst = worst.max(rel);
        let same_top5 = top5(&la) == top5(&lb);
        let same_input = a["input_hash"] == b["input_hash"];
        let ok = same_top5 && rel <= REL_TOLERANCE;
        all_agree &= ok;
        eprintln!(
            "{name}: top-5 {:?} {} | max |logit diff| {diff:.3e}, largest |logit| {scale:.3}, ratio {rel:.2e} (tolerance {REL_TOLERANCE:.0e}) | preprocessed input {} | {}",
            top5(&la),
            if same_top5 { "same" } else { "DIFFERENT" },
            if same_input {
                "bit-identical"
            } else {
                "DIFFERENT (JPEG decoding)"
            },
            if ok { "agree" } else { "DISAGREE" },
        );
    }
    eprintln!(
        "{} ({}) against {}: worst logit difference {worst:.2e} of the largest logit, {}",
        ours["arch"].as_str().unwrap_or("?"),
        ours_list.len(),
        theirs["arch"].as_str().unwrap_or("?"),
        if all_agree { "all agree" } else { "DISAGREE" }
    );
    Ok(all_agree)
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_f64)
                .map(|x| x as f32)
                .collect()
        })
        .unwrap_or_default()
}

fn top5(logits: &[f32]) -> Vec<usize> {
    let mut ix: Vec<usize> = (0..logits.len()).collect();
    ix.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    ix.truncate(5);
    ix
}
