//! Blob-pool operations among fuzzer-chosen words written on the pool and on the references.
//! See `src/blob_pool.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dmxp_fuzz::blob_pool::run(data);
});
