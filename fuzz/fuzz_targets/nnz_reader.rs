//! Whole-file decoder: parse, then decode every tensor. The first input byte chooses whether the
//! header's length and checksum are made consistent with the (mutated) body first.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nnzip_core::format::{DecodeLimits, NnzReader};

fuzz_target!(|data: &[u8]| {
    let file = nnzip_fuzz::with_consistent_header(data);
    // Tighter limits keep each run fast; the checks are the same.
    let limits = DecodeLimits { max_tensor_elements: 1 << 22, max_total_elements: 1 << 22, ..DecodeLimits::default() };
    if let Ok(r) = NnzReader::parse_with_limits(&file, limits) {
        for t in r.tensors() {
            let _ = t.decode();
        }
    }
});
