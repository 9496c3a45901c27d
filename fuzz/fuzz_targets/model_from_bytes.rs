//! The whole phone path: verify, decode, rebuild the graph with tract, optimise. The first input
//! byte chooses whether the header's length and checksum are made consistent with the body first.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nnzip_core::Model;
use nnzip_core::format::DecodeLimits;

fuzz_target!(|data: &[u8]| {
    let file = nnzip_fuzz::with_consistent_header(data);
    let limits = DecodeLimits { max_tensor_elements: 1 << 20, max_total_elements: 1 << 20, max_graph_bytes: 1 << 20, ..DecodeLimits::default() };
    let _ = Model::from_bytes_with_limits(&file, limits);
});
