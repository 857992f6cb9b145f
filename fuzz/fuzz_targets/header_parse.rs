//! Arbitrary bytes through `dmxp_nostd::parse_segment`: `Ok` with sound geometry, or a typed
//! error that the bytes explain. Never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dmxp_fuzz::header_parse(data);
});
