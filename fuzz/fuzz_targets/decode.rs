//! Coverage-guided fuzzing of the FPM decoder (`cargo +nightly fuzz run decode`,
//! seeded with `proto/golden/*.msgpack`). The first byte splits the input into a
//! 3-frame message so that framing and sequence checks are fuzzed too.
#![no_main]

use fpm_exporter::wire::{decode_message, decode_payload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode_payload(data) {
        assert!(m.wall_time.0.is_finite() && m.wall_time.0 >= 0.0);
    }
    if let Some((&split, rest)) = data.split_first() {
        let at = (split as usize).min(rest.len());
        let (seq, payload) = rest.split_at(at);
        let frames: [&[u8]; 3] = [b"", seq, payload];
        let _ = decode_message(&frames);
    }
});
