//! Making a mutated file's header agree with its body, so mutations reach the decoder.

use nnzip_core::format::MAGIC;
use nnzip_core::format::decode::HEADER_BYTES;

/// Where the header's CRC-32 and body length stand: after the magic, the version (u16) and the
/// flags (u16); `docs/FORMAT.md`.
const CRC_AT: usize = MAGIC.len() + 4;
const BODY_LEN_AT: usize = CRC_AT + 4;

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
        file[CRC_AT..BODY_LEN_AT].copy_from_slice(&crc.to_le_bytes());
        file[BODY_LEN_AT..HEADER_BYTES].copy_from_slice(&body_len.to_le_bytes());
    }
    file
}
