//! The IDX file format of MNIST and Fashion-MNIST (gzipped or not): a magic with the element type
//! and rank, big-endian dimensions, then the data.

use super::ImageSet;
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::{Path, PathBuf};

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone)]
pub struct IdxArray {
    /// Where it was read from (for errors).
    pub path: PathBuf,
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Data, row-major.
    pub data: Vec<u8>,
}

/// Largest IDX payload accepted (1 GiB): a corrupt header must not make us allocate more.
const MAX_IDX_BYTES: u64 = 1 << 30;

/// Reads an IDX file of `u8` elements, gunzipping when it starts with the gzip magic.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(MAX_IDX_BYTES + 1024)
            .read_to_end(&mut out)
            .with_context(|| format!("{}: corrupt gzip data", path.display()))?;
        out
    } else {
        raw
    };
    parse_idx(path, &bytes)
}

/// Parses IDX bytes.
pub fn parse_idx(path: &Path, b: &[u8]) -> Result<IdxArray> {
    let p = path.display();
    if b.len() < 4 || b[0] != 0 || b[1] != 0 {
        bail!("{p}: not an IDX file (bad magic; expected 00 00 08 NN)");
    }
    if b[2] != 0x08 {
        bail!(
            "{p}: IDX element type {:#04x} is not unsigned bytes (0x08)",
            b[2]
        );
    }
    let rank = b[3] as usize;
    if rank == 0 || rank > 4 || b.len() < 4 + 4 * rank {
        bail!("{p}: IDX header declares rank {rank} but is too short or the rank is unsupported");
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            u32::from_be_bytes([b[4 + 4 * i], b[5 + 4 * i], b[6 + 4 * i], b[7 + 4 * i]]) as usize
        })
        .collect();
    let n = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        .filter(|&n| n <= MAX_IDX_BYTES);
    let Some(n) = n else {
        bail!("{p}: IDX dimensions {dims:?} are implausibly large")
    };
    let data = &b[4 + 4 * rank..];
    if data.len() as u64 != n {
        bail!(
            "{p}: IDX header declares {dims:?} = {n} bytes of data, the file has {}",
            data.len()
        );
    }
    Ok(IdxArray {
        path: path.to_path_buf(),
        dims,
        data: data.to_vec(),
    })
}

/// Pairs an images array (`[n, rows, cols]`) with a labels array (`[n]`).
pub fn image_set(images: IdxArray, labels: IdxArray) -> Result<ImageSet> {
    if images.dims.len() != 3 {
        bail!(
            "{}: images must have 3 dimensions [count, rows, cols], found {:?}",
            images.path.display(),
            images.dims
        );
    }
    if labels.dims.len() != 1 {
        bail!(
            "{}: labels must have 1 dimension, found {:?}",
            labels.path.display(),
            labels.dims
        );
    }
    if images.dims[0] != labels.dims[0] {
        bail!(
            "{} has {} images but {} has {} labels: the files do not belong together",
            images.path.display(),
            images.dims[0],
            labels.path.display(),
            labels.dims[0]
        );
    }
    Ok(ImageSet {
        rows: images.dims[1],
        cols: images.dims[2],
        pixels: images.data,
        labels: labels.data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn parses_and_checks() {
        let p = Path::new("x.idx");
        let a = parse_idx(p, &idx(&[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8])).unwrap();
        assert_eq!(a.dims, vec![2, 2, 2]);
        let err = parse_idx(p, &[1, 2, 3, 4]).unwrap_err().to_string();
        assert!(err.contains("x.idx: not an IDX file"), "{err}");
        let err = parse_idx(p, &idx(&[2, 2, 2], &[1, 2, 3]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("declares [2, 2, 2] = 8 bytes of data, the file has 3"),
            "{err}"
        );
        let labels = parse_idx(Path::new("l.idx"), &idx(&[3], &[0, 1, 2])).unwrap();
        let err = image_set(a, labels).unwrap_err().to_string();
        assert!(err.contains("has 2 images but l.idx has 3 labels"), "{err}");
    }
}
