//! Structure-aware ring operation sequences on two valid channels, checked against a model.
//! See `src/ring_model.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dmxp_fuzz::ring_model::run(data);
});
