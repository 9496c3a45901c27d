//! `--statistics-cache` folders: the input moments GPTQ compensates with
//! ([`super::gptq_statistics`]), kept between runs. Measuring them runs every statistics view
//! through the dense model (minutes for EfficientNet-Lite0), and they depend only on the model,
//! the views and the layers — not on the size goal — so runs at other ratios read them back.
//!
//! One file per set of statistics, named by the fingerprint of what they depend on: the model's
//! bytes, every view's values (photos, preprocessing, crops and seed all end up there) and the
//! layers' names. A run on other photos or another model looks for another file; the key is
//! also stored whole in the file and compared, so a file renamed by hand is refused.
//!
//! Format (little-endian): `NNZGPTQ1`, the key (u32 length, UTF-8), the layer count (u32), then
//! per layer its name (u32 length, UTF-8), groups, inputs, samples and rows (u64 each) and the
//! `groups × inputs × inputs` sums (f64): bit for bit what was measured, so a run reading them
//! writes the same file as the run that measured them.

use super::fingerprint::{Fingerprint, inputs_key};
use super::gptq_statistics::{InputMoments, LayerMoments, input_moments};
use super::photos::Views;
use crate::fsutil;
use anyhow::{Context, Result, bail};
use nnzip_core::onnx::proto::ModelProto;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"NNZGPTQ1";
/// Longest key or layer name read back (a file's lengths are not trusted).
const MAX_NAME_BYTES: usize = 1 << 16;

/// The file of `key`'s statistics in the cache folder `dir`.
pub fn entry_path(dir: &Path, key: &str) -> PathBuf {
    let mut f = Fingerprint::new();
    f.add(key.as_bytes());
    dir.join(format!("gptq-{:016x}.bin", f.0))
}

/// The input moments of `names` over `views`: read from the folder `cache` when it holds them,
/// else measured (and written there when a folder is given). Also returns whether they were read.
pub fn cached_input_moments(
    cache: Option<&Path>,
    model: &ModelProto,
    views: &Views,
    names: &[String],
    progress: bool,
) -> Result<(LayerMoments, bool)> {
    let Some(dir) = cache else {
        return Ok((input_moments(model, views, names, progress)?, false));
    };
    let key = inputs_key(model, views, names)?;
    let path = entry_path(dir, &key);
    if path.exists() {
        let moments = decode(&fsutil::read(&path)?, &key).with_context(|| {
            format!(
                "{} is not a statistics cache entry of this run: delete it to measure again",
                path.display()
            )
        })?;
        return Ok((moments, true));
    }
    let moments = input_moments(model, views, names, progress)?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot make the statistics cache folder {}", dir.display()))?;
    fsutil::write_atomic(&path, &encode(&key, &moments))?;
    Ok((moments, false))
}

fn put_name(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u32).to_le_bytes());
    out.extend(s.as_bytes());
}

/// The bytes of a cache entry.
pub fn encode(key: &str, moments: &LayerMoments) -> Vec<u8> {
    let sums: usize = moments.values().map(|m| m.sums.len()).sum();
    let mut out = Vec::with_capacity(64 + 8 * sums);
    out.extend(MAGIC);
    put_name(&mut out, key);
    out.extend((moments.len() as u32).to_le_bytes());
    for (name, m) in moments {
        put_name(&mut out, name);
        for n in [m.groups, m.inputs, m.samples, m.rows] {
            out.extend((n as u64).to_le_bytes());
        }
        for s in &m.sums {
            out.extend(s.to_le_bytes());
        }
    }
    out
}

/// Reads a file's bytes in order, refusing to run past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.0.len() {
            bail!("truncated: {n} bytes wanted, {} left", self.0.len());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<usize> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?) as usize)
    }

    fn u64(&mut self) -> Result<usize> {
        usize::try_from(u64::from_le_bytes(self.take(8)?.try_into()?))
            .context("a count too large for this machine")
    }

    fn name(&mut self) -> Result<String> {
        let n = self.u32()?;
        if n > MAX_NAME_BYTES {
            bail!("a name of {n} bytes");
        }
        Ok(String::from_utf8(self.take(n)?.to_vec())?)
    }
}

/// The moments of a cache entry written by [`encode`] for `key`; an error for any other file.
pub fn decode(bytes: &[u8], key: &str) -> Result<LayerMoments> {
    let mut r = Reader(bytes);
    if r.take(MAGIC.len()).ok() != Some(MAGIC.as_slice()) {
        bail!("not a statistics cache entry of this version of nnzip");
    }
    let stored = r.name()?;
    if stored != key {
        bail!("measured for {stored}, this run needs {key}");
    }
    let layers = r.u32()?;
    let mut moments = LayerMoments::new();
    for _ in 0..layers {
        let name = r.name()?;
        let [groups, inputs, samples, rows] = [r.u64()?, r.u64()?, r.u64()?, r.u64()?];
        let count = groups
            .checked_mul(inputs)
            .and_then(|g| g.checked_mul(inputs))
            .filter(|&c| c.checked_mul(8).is_some_and(|b| b <= r.0.len()))
            .with_context(|| {
                format!("'{name}': {groups} groups of {inputs} inputs do not fit in the file")
            })?;
        let sums = r
            .take(8 * count)?
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        let m = InputMoments {
            groups,
            inputs,
            samples,
            rows,
            sums,
        };
        if moments.insert(name.clone(), m).is_some() {
            bail!("'{name}' twice");
        }
    }
    if !r.0.is_empty() {
        bail!("{} bytes after the last layer", r.0.len());
    }
    Ok(moments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments() -> LayerMoments {
        LayerMoments::from([
            (
                "conv".to_string(),
                InputMoments {
                    groups: 2,
                    inputs: 2,
                    samples: 7,
                    rows: 4,
                    sums: vec![1.0, 0.5, 0.5, 2.0, 3.0, -0.25, -0.25, 1e-300],
                },
            ),
            (
                "fc".to_string(),
                InputMoments {
                    groups: 1,
                    inputs: 1,
                    samples: 3,
                    rows: 10,
                    sums: vec![f64::MIN_POSITIVE],
                },
            ),
        ])
    }

    #[test]
    fn an_entry_reads_back_bit_for_bit_under_its_key_only() {
        let bytes = encode("model 1, 2 views", &moments());
        assert_eq!(decode(&bytes, "model 1, 2 views").unwrap(), moments());
        let other = decode(&bytes, "model 2, 2 views").unwrap_err();
        assert!(
            format!("{other:#}").contains("measured for model 1"),
            "{other:#}"
        );
    }

    #[test]
    fn a_damaged_entry_is_an_error_not_a_panic() {
        let bytes = encode("k", &moments());
        // Every truncation, and a few corrupted bytes at every position of the header.
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n], "k").is_err(), "truncated to {n}");
        }
        for i in 0..40.min(bytes.len()) {
            for v in [0u8, 0x7f, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                if b != bytes {
                    let _ = decode(&b, "k");
                }
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, "k").is_err());
        // Sizes that overflow or exceed the file are refused before anything is allocated.
        let mut huge = Vec::from(MAGIC.as_slice());
        put_name(&mut huge, "k");
        huge.extend(1u32.to_le_bytes());
        put_name(&mut huge, "w");
        for n in [u64::MAX / 2, u64::MAX / 2, 1, 1] {
            huge.extend(n.to_le_bytes());
        }
        let e = decode(&huge, "k").unwrap_err();
        assert!(format!("{e:#}").contains("do not fit"), "{e:#}");
    }
}
