//! Helpers shared by the end-to-end tests: where the shared reference models and photos are,
//! and a reference run of an ONNX file in plain tract.

use std::path::PathBuf;
use tract_onnx::prelude::*;

/// The project's root folder.
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `../shared/` beside the project root: reference models and photos (never committed).
pub fn shared(rel: &str) -> PathBuf {
    let p = project_root().join("..").join("shared").join(rel);
    assert!(
        p.exists(),
        "{} is missing: the tests need the shared reference files beside the project",
        p.display()
    );
    p
}

/// Runs an ONNX model (bytes) in tract on one input and returns the first output as f32 values.
pub fn tract_reference(onnx: &[u8], input: &Tensor) -> Vec<f32> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(onnx))
        .expect("tract reads the ONNX")
        .with_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), input.shape()))
        .expect("input fact")
        .into_optimized()
        .expect("optimise")
        .into_runnable()
        .expect("runnable");
    let out = model.run(tvec!(input.clone().into_tvalue())).expect("run");
    tensor_values(&out[0].clone().into_tensor())
}

/// A deterministic pseudo-random input tensor in [-1, 1) (xorshift; no dependency).
pub fn random_input(shape: &[usize], seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::from_shape(shape, &v).expect("shape")
}

/// Largest absolute difference of two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "outputs differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// All values of an f32 (or castable) tensor, row-major.
pub fn tensor_values(t: &Tensor) -> Vec<f32> {
    t.cast_to::<f32>()
        .expect("f32")
        .to_plain_array_view::<f32>()
        .expect("plain")
        .iter()
        .copied()
        .collect()
}
