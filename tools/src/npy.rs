//! Reading NumPy `.npy` files (format versions 1 to 3, C order, little-endian numbers and bools),
//! so that `nnzip run` takes what `numpy.save` writes.

use anyhow::{Context, Result, bail};
use nnzip_core::Tensor;

/// The first bytes of every `.npy` file.
pub const MAGIC: &[u8] = b"\x93NUMPY";

/// Largest header accepted: NumPy pads its headers to 64 bytes, a few hundred at most.
const MAX_HEADER_BYTES: usize = 1 << 16;

/// Reads a `.npy` file's bytes into a tensor.
pub fn read(bytes: &[u8]) -> Result<Tensor> {
    let rest = bytes.strip_prefix(MAGIC).context("not a .npy file")?;
    let (major, rest) = rest.split_first().context("truncated .npy header")?;
    let rest = rest.get(1..).context("truncated .npy header")?;
    let (len, rest) = match major {
        1 => {
            let b = rest.get(..2).context("truncated .npy header")?;
            (u16::from_le_bytes([b[0], b[1]]) as usize, &rest[2..])
        }
        2 | 3 => {
            let b = rest.get(..4).context("truncated .npy header")?;
            (
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
                &rest[4..],
            )
        }
        v => bail!(".npy format version {v} is not one nnzip reads (1 to 3)"),
    };
    if len > MAX_HEADER_BYTES {
        bail!(".npy header of {len} bytes is implausibly large");
    }
    let header = rest.get(..len).context("truncated .npy header")?;
    let header = std::str::from_utf8(header).context(".npy header is not text")?;
    let data = &rest[len..];
    let descr = quoted_value(header, "descr").context(".npy header has no 'descr'")?;
    if field(header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
        bail!("the array is stored in Fortran order; save it with numpy.ascontiguousarray first");
    }
    let shape = shape(header)?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .context(".npy shape overflows")?;
    tensor(descr, &shape, count, data)
}

/// The text after `'key':` in the header dictionary.
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = &header[at + key.len() + 2..];
    Some(rest.trim_start().strip_prefix(':')?.trim_start())
}

fn quoted_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let rest = field(header, key)?.strip_prefix('\'')?;
    Some(&rest[..rest.find('\'')?])
}

fn shape(header: &str) -> Result<Vec<usize>> {
    let rest = field(header, "shape")
        .and_then(|r| r.strip_prefix('('))
        .context(".npy header has no 'shape' tuple")?;
    let inside = &rest[..rest.find(')').context(".npy shape is not closed")?];
    inside
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .with_context(|| format!(".npy shape entry '{s}' is not a size"))
        })
        .collect()
}

/// The values of `data` as the tensor `descr` says, checking their byte count.
fn tensor(descr: &str, shape: &[usize], count: usize, data: &[u8]) -> Result<Tensor> {
    let width = match descr {
        "|i1" | "|u1" | "|b1" => 1,
        "<i2" | "<u2" => 2,
        "<f4" | "<i4" | "<u4" => 4,
        "<f8" | "<i8" | "<u8" => 8,
        other => bail!(
            ".npy element type '{other}' is not supported (little-endian floats, integers, bools)"
        ),
    };
    let needed = count.checked_mul(width).context(".npy shape overflows")?;
    if data.len() != needed {
        bail!(
            ".npy data has {} bytes, shape {shape:?} needs {needed}",
            data.len()
        );
    }
    // One arm per element type: `Tensor::from_shape` is generic over tract's element trait.
    macro_rules! typed {
        ($t:ty) => {{
            let v: Vec<$t> = data
                .chunks_exact(width)
                .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect();
            Tensor::from_shape(shape, &v)
        }};
    }
    match descr {
        "<f4" => typed!(f32),
        "<f8" => typed!(f64),
        "<i8" => typed!(i64),
        "<i4" => typed!(i32),
        "<i2" => typed!(i16),
        "|i1" => typed!(i8),
        "|u1" => typed!(u8),
        "<u2" => typed!(u16),
        "<u4" => typed!(u32),
        "<u8" => typed!(u64),
        _ => {
            if data.iter().any(|&b| b > 1) {
                bail!(".npy bool array holds a byte other than 0 or 1");
            }
            let v: Vec<bool> = data.iter().map(|&b| b == 1).collect();
            Tensor::from_shape(shape, &v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while !(MAGIC.len() + 4 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn reads_floats_ints_and_bools() {
        let data: Vec<u8> = [1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = read(&npy("<f4", "(2, 3)", &data)).unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(
            t.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap(),
            &[1.5, -2.0, 3.25, 0.0, 7.0, 8.0]
        );
        let t = read(&npy(
            "<i8",
            "(2,)",
            &[
                5, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255,
            ],
        ))
        .unwrap();
        assert_eq!(
            t.try_as_plain_ram().unwrap().as_slice::<i64>().unwrap(),
            &[5, -1]
        );
        let t = read(&npy("|b1", "()", &[1])).unwrap();
        assert_eq!(t.rank(), 0);
        assert_eq!(
            t.try_as_plain_ram().unwrap().as_slice::<bool>().unwrap(),
            &[true]
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let err = |b: Vec<u8>| format!("{:#}", read(&b).unwrap_err());
        assert!(err(npy("<f4", "(2,)", &[0; 4])).contains("needs 8"));
        assert!(err(npy(">f4", "(1,)", &[0; 4])).contains("'>f4' is not supported"));
        assert!(err(npy("<f4", "(1, x)", &[0; 4])).contains("'x' is not a size"));
        let mut fortran = npy("<f4", "(1,)", &[0; 4]);
        let at = fortran.windows(5).position(|w| w == b"False").unwrap();
        fortran[at..at + 5].copy_from_slice(b"True ");
        assert!(err(fortran).contains("Fortran"));
    }
}
