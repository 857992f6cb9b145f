//! A valid segment, corrupted by fuzzer-chosen writes, then attached and driven by a
//! fuzzer-chosen sequence of sends and receives. See `src/segment_ops.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dmxp_fuzz::segment_ops::run(data);
});
