//! The whole phone path: a `.nnz` file and a photo (JPEG/PNG) in one input, loaded and
//! classified as the app does (`nnzip_fuzz::phone_path` for the layout).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nnzip_fuzz::phone_path::classify(data);
});
