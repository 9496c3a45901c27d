//! IDX files (the MNIST format), gzipped or not.

use anyhow::{Context, Result, bail, ensure};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// An unsigned-byte IDX array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first (the first is the sample count).
    pub dims: Vec<usize>,
    /// Row-major data.
    pub data: Vec<u8>,
}

/// Reads a file, decompressing it when it starts with the gzip magic.
fn read_maybe_gzipped(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path)
        .with_context(|| format!("cannot read {}: check the path", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .with_context(|| {
                format!(
                    "{} is a corrupt gzip file: download or install the data set again",
                    path.display()
                )
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses IDX bytes; `path` names the file in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    let shown = path.display();
    ensure!(
        bytes.len() >= 4,
        "{shown}: {} bytes is too short for an IDX file (4-byte magic expected)",
        bytes.len()
    );
    let magic = &bytes[..4];
    if magic[0] != 0 || magic[1] != 0 || magic[3] == 0 || magic[3] > 4 {
        bail!(
            "{shown}: bad IDX magic {:02x} {:02x} {:02x} {:02x} (expected 00 00 08 0N): not an IDX file; pass the MNIST-style *-idx?-ubyte[.gz] files",
            magic[0],
            magic[1],
            magic[2],
            magic[3]
        );
    }
    if magic[2] != 0x08 {
        bail!(
            "{shown}: IDX element type 0x{:02x} is not supported; only unsigned bytes (0x08) are",
            magic[2]
        );
    }
    let ndims = magic[3] as usize;
    let header = 4 + 4 * ndims;
    ensure!(
        bytes.len() >= header,
        "{shown}: truncated IDX header: install or download the file again"
    );
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let expected = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let Some(expected) = expected else {
        bail!(
            "{shown}: the header declares dims {dims:?}, more data than any file can hold: the file is corrupt"
        );
    };
    let actual = bytes.len() - header;
    if actual != expected {
        bail!(
            "{shown}: the header declares dims {dims:?} ({expected} bytes of data) but the file holds {actual}: the file is truncated or corrupt; install or download it again"
        );
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Reads an IDX file (gzipped or not), validating magic, dims and length.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    parse_idx(&read_maybe_gzipped(path)?, path)
}

/// Images (`N×H×W` or `N×C×H×W`) and labels (`N`) from a pair of IDX files, checked against each other.
pub fn read_idx_pair(images_path: &Path, labels_path: &Path) -> Result<(IdxArray, IdxArray)> {
    let images = read_idx(images_path)?;
    let labels = read_idx(labels_path)?;
    ensure!(
        images.dims.len() == 3 || images.dims.len() == 4,
        "{}: images must be N×H×W or N×C×H×W, the file has dims {:?}",
        images_path.display(),
        images.dims
    );
    ensure!(
        labels.dims.len() == 1,
        "{}: labels must be one-dimensional, the file has dims {:?}",
        labels_path.display(),
        labels.dims
    );
    if images.dims[0] != labels.dims[0] {
        bail!(
            "{} holds {} images but {} holds {} labels: the counts must match; use the images and labels of the same split",
            images_path.display(),
            images.dims[0],
            labels_path.display(),
            labels.dims[0]
        );
    }
    Ok((images, labels))
}
