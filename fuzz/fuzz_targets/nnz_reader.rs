//! Whole-file decoder: parse, then decode every tensor.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nnzip_core::format::{DecodeLimits, NnzReader};

fuzz_target!(|data: &[u8]| {
    // Tighter limits keep each run fast; the checks are the same.
    let limits = DecodeLimits { max_tensor_elements: 1 << 22, max_total_elements: 1 << 22, ..DecodeLimits::default() };
    if let Ok(r) = NnzReader::parse_with_limits(data, limits) {
        for t in r.tensors() {
            let _ = t.decode();
        }
    }
});
