//! Shared by the fuzz targets.

/// Bytes of the `.nnz` header (magic, version, flags, CRC-32, body length): `docs/FORMAT.md`.
const HEADER_BYTES: usize = 24;

/// Makes a mutated file's header consistent with its body (body length and CRC-32), so that the
/// fuzzer explores the decoder behind the checksum instead of stopping at it on almost every
/// input. The checksum check itself is covered by `core/tests/format_hostile.rs` (every bit flip).
/// Inputs whose first byte is odd are left as they are, so the header checks are fuzzed too.
pub fn with_consistent_header(data: &[u8]) -> Vec<u8> {
    let Some((&mode, file)) = data.split_first() else {
        return Vec::new();
    };
    let mut file = file.to_vec();
    if mode % 2 == 0 && file.len() >= HEADER_BYTES {
        let body_len = (file.len() - HEADER_BYTES) as u64;
        let crc = crc32fast::hash(&file[HEADER_BYTES..]);
        file[12..16].copy_from_slice(&crc.to_le_bytes());
        file[16..24].copy_from_slice(&body_len.to_le_bytes());
    }
    file
}
