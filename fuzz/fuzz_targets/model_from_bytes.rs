//! The whole phone path: verify, decode, rebuild the graph with tract, optimise.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nnzip_core::Model;
use nnzip_core::format::DecodeLimits;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits { max_tensor_elements: 1 << 20, max_total_elements: 1 << 20, max_graph_bytes: 1 << 20, ..DecodeLimits::default() };
    let _ = Model::from_bytes_with_limits(data, limits);
});
