//! Fingerprints of what label-free measurements depend on — the model's bytes, the views'
//! values, the layers — so that the caches kept between runs ([`super::curve_cache`],
//! [`super::statistics_cache`]) are only read back for the same inputs.

use super::photos::Views;
use anyhow::Result;
use nnzip_core::onnx::proto::ModelProto;
use prost::Message;

/// 64-bit FNV-1a, fed piece by piece: a fingerprint of what a cache entry depends on (not a
/// defence against crafted collisions; the cache is the user's own folder).
pub(super) struct Fingerprint(pub(super) u64);

impl Fingerprint {
    pub(super) fn new() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }

    pub(super) fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Adds a length first, so that `ab`+`c` and `a`+`bc` differ.
    pub(super) fn add_framed(&mut self, bytes: &[u8]) {
        self.add(&(bytes.len() as u64).to_le_bytes());
        self.add(bytes);
    }
}

/// What measurements of the layers `names` of `model` on `views` depend on, as a string: the
/// fingerprints of the model's bytes, of the views (values, shapes, photo of each) and of the
/// layer names, and the view count.
pub fn inputs_key(model: &ModelProto, views: &Views, names: &[String]) -> Result<String> {
    let mut m = Fingerprint::new();
    m.add(&model.encode_to_vec());
    let mut v = Fingerprint::new();
    for (x, photo) in views.inputs.iter().zip(&views.photo) {
        let values = x.to_plain_array_view::<f32>()?;
        for &d in values.shape() {
            v.add(&(d as u64).to_le_bytes());
        }
        v.add(&(*photo as u64).to_le_bytes());
        for &f in values.iter() {
            v.add(&f.to_bits().to_le_bytes());
        }
    }
    let mut n = Fingerprint::new();
    for name in names {
        n.add_framed(name.as_bytes());
    }
    Ok(format!(
        "model {:016x}, {} views {:016x}, layers {:016x}",
        m.0,
        views.len(),
        v.0,
        n.0
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_with_the_views_and_the_layers() {
        use nnzip_core::Tensor;
        let view = |v: f32| Tensor::from_shape(&[1, 2], &[v, 1.0]).unwrap();
        let views = |v: f32, photo| Views {
            inputs: vec![view(v)],
            photo: vec![photo],
        };
        let model = ModelProto::default();
        let names = ["a".to_string()];
        let key = |v: &Views, n: &[String]| inputs_key(&model, v, n).unwrap();
        let base = key(&views(0.5, 0), &names);
        assert_eq!(base, key(&views(0.5, 0), &names));
        assert_ne!(base, key(&views(0.25, 0), &names));
        assert_ne!(base, key(&views(0.5, 1), &names));
        assert_ne!(base, key(&views(0.5, 0), &["b".to_string()]));
    }
}
