//! The tensor decoder alone, without the checksum in the way: first byte picks the encoding
//! (all five, including the range-coded one), the next two the element count, the rest is the
//! payload.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nnzip_core::format::Encoding;
use nnzip_core::format::decode::decode_payload;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let Some(enc) = Encoding::from_byte(data[0] % 5) else { return };
    let n = u16::from_le_bytes([data[1], data[2]]) as usize;
    let mut out = vec![0f32; n];
    let _ = decode_payload("fuzz", enc, &data[3..], &mut out);
});
