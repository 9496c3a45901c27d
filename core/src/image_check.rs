//! What an image file may cost before it is decoded: its header's dimensions and pixel type
//! against the memory the decode and the RGB conversion would take, and a JPEG's completeness
//! (the JPEG decoder fills a truncated file's missing blocks with grey and reports no error).

use crate::error::{NnzError, Result};

/// Refuses a JPEG that cannot hold the image its header declares: one cut before its
/// end-of-image marker, or whose coded data is too short for its size. The JPEG decoder fills
/// what is missing with grey and reports no error, so such a file would be classified.
pub fn check_jpeg(bytes: &[u8]) -> Result<()> {
    let Some(layout) = jpeg_layout(bytes) else {
        return Err(NnzError::Image(
            "the JPEG is truncated: it ends before its end-of-image marker (an interrupted \
             download or copy?)"
                .into(),
        ));
    };
    // Every 8×8 block of the first component codes its DC value at least once, in at least one
    // bit (a Huffman code is never empty).
    let (w, h) = layout.size;
    let blocks = u64::from(w).div_ceil(8) * u64::from(h).div_ceil(8);
    if layout.scan_bytes.saturating_mul(8) < blocks {
        return Err(NnzError::Image(format!(
            "the JPEG is damaged: its header says {w}×{h} ({blocks} blocks), its coded data of {} \
             bytes cannot hold that many",
            layout.scan_bytes
        )));
    }
    Ok(())
}

/// What [`jpeg_layout`] finds in a complete JPEG stream.
struct JpegLayout {
    /// Width and height of the frame header (0 × 0 when there is none).
    size: (u16, u16),
    /// Bytes of entropy-coded data over all scans.
    scan_bytes: u64,
}

/// Walks the marker segments of a JPEG stream from its start-of-image marker, and the
/// entropy-coded data after every start-of-scan, to its end-of-image marker; `None` when the
/// bytes end before it (a file cut anywhere before the end of its last scan).
fn jpeg_layout(bytes: &[u8]) -> Option<JpegLayout> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut layout = JpegLayout {
        size: (0, 0),
        scan_bytes: 0,
    };
    let mut at = 2;
    loop {
        if bytes.get(at) != Some(&0xFF) {
            return None;
        }
        // Any number of 0xFF fill bytes may precede a marker code.
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let marker = *bytes.get(at)?;
        at += 1;
        match marker {
            0xD9 => return Some(layout),
            // Markers without a length: restart markers and TEM.
            0xD0..=0xD7 | 0x01 => continue,
            _ => {}
        }
        let len = bytes.get(at..at + 2)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len < 2 {
            return None;
        }
        let segment = bytes.get(at + 2..at + len)?;
        at += len;
        // Start of frame (0xC0–0xCF but DHT, JPG and DAC): precision, height, width.
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let s = segment.get(1..5)?;
            layout.size = (
                u16::from_be_bytes([s[2], s[3]]),
                u16::from_be_bytes([s[0], s[1]]),
            );
        }
        if marker == 0xDA {
            let next = end_of_scan(bytes, at)?;
            layout.scan_bytes += (next - at) as u64;
            at = next;
        }
    }
}

/// Offset of the marker that ends the entropy-coded data starting at `at`: a 0xFF followed by
/// neither a stuffed 0x00 nor a restart marker. `None` when the bytes end first.
fn end_of_scan(bytes: &[u8], mut at: usize) -> Option<usize> {
    while at + 1 < bytes.len() {
        if bytes[at] == 0xFF && bytes[at + 1] != 0x00 && !(0xD0..=0xD7).contains(&bytes[at + 1]) {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// Refuses an image whose decoding (`bytes_per_pixel` as the file stores pixels) and conversion
/// to 8-bit RGB (3 bytes a pixel) would together take more than `max_bytes`, from the dimensions
/// its header declares, before anything is decoded.
pub fn check_decode_cost(
    width: u32,
    height: u32,
    bytes_per_pixel: u8,
    max_bytes: u64,
) -> Result<()> {
    let pixels = u64::from(width) * u64::from(height);
    let cost = pixels * (u64::from(bytes_per_pixel) + 3);
    if cost > max_bytes {
        return Err(NnzError::Image(format!(
            "the image is {width}×{height}: decoding it and converting it to RGB would take {} MiB, \
             over the {} MiB allowed; scale it down first",
            cost >> 20,
            max_bytes >> 20
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, an APP0 segment, a scan whose data holds a stuffed 0xFF00 and a restart marker, EOI.
    fn tiny_jpeg_markers() -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x4A, 0x46];
        b.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, 0x01]);
        b.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56]);
        b.extend_from_slice(&[0xFF, 0xD9]);
        b
    }

    #[test]
    fn a_complete_stream_reaches_its_end_marker_and_every_cut_does_not() {
        let b = tiny_jpeg_markers();
        let layout = jpeg_layout(&b).expect("complete");
        // Seven bytes between the scan header and the end marker.
        assert_eq!(layout.scan_bytes, 7);
        for cut in 0..b.len() {
            assert!(jpeg_layout(&b[..cut]).is_none(), "cut at {cut}");
            let err = check_jpeg(&b[..cut]).unwrap_err().to_string();
            assert!(err.contains("truncated"), "{err}");
        }
        // Bytes after the end marker (camera trailers) are allowed.
        let mut trailer = b.clone();
        trailer.extend_from_slice(b"trailer");
        assert!(check_jpeg(&trailer).is_ok());
    }

    #[test]
    fn coded_data_too_short_for_the_declared_size_is_refused() {
        let frame = |w: u16, h: u16| {
            let mut b = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x08, 8];
            b.extend_from_slice(&h.to_be_bytes());
            b.extend_from_slice(&w.to_be_bytes());
            b.push(1);
            b.extend_from_slice(&tiny_jpeg_markers()[2..]);
            b
        };
        // 7 bytes hold 56 one-bit DC codes: 7×8 blocks of 8 pixels.
        assert!(check_jpeg(&frame(56, 64)).is_ok());
        let err = check_jpeg(&frame(2000, 2000)).unwrap_err().to_string();
        assert!(
            err.contains("2000×2000") && err.contains("damaged"),
            "{err}"
        );
    }

    #[test]
    fn decode_cost_counts_the_rgb_conversion() {
        // 1 byte a pixel decoded + 3 converted: 16384² takes 1 GiB.
        assert!(check_decode_cost(16384, 16384, 1, 512 << 20).is_err());
        assert!(check_decode_cost(4000, 3000, 3, 512 << 20).is_ok());
        let err = check_decode_cost(16384, 10000, 3, 512 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("16384×10000") && err.contains("MiB"), "{err}");
    }
}
