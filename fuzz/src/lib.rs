//! Fuzz harnesses for `dmxp-nostd`.
//!
//! Each fuzz target in `fuzz_targets/` is one line calling a `run` function here, so the code
//! that interprets an input is ordinary library code: `cargo test` in this package replays the
//! committed corpora (`corpus/<target>/`) and any saved crashers (`regressions/<target>/`) on
//! stable, running exactly what the fuzzer ran.
//!
//! * [`header_check`]: `parse_segment` of arbitrary bytes, with its invariants.
//! * [`segment_ops`]: a valid segment corrupted by fuzzer-chosen writes, then driven.
//! * [`ring_model`]: ring operations on valid channels checked against a model.
//! * [`blob_pool`]: loans, sends and receives of blobs among words scribbled on the pool and
//!   the references.

pub mod blob_pool;
pub mod header_check;
pub mod ring_model;
pub mod segment_ops;
pub mod support;

/// The `header_parse` target: arbitrary bytes through `parse_segment`.
pub fn header_parse(data: &[u8]) -> header_check::ParseOutcome {
    header_check::check_parse(data)
}
