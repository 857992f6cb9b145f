//! Replays the committed corpora and saved regressions of every fuzz target on stable, through
//! the same library functions the fuzz targets call:
//!
//! `cargo test --manifest-path fuzz/Cargo.toml`
//!
//! Each replay fails if its corpus directory is missing or empty, and checks that the corpus
//! still reaches what it was chosen for (valid and refused segments, attach failures, received
//! and corrupt messages, full and empty rings), so it cannot pass by replaying nothing.

use dmxp_fuzz::header_check::ParseOutcome;
use dmxp_fuzz::{blob_pool, header_parse, ring_model, segment_ops};
use std::fs;
use std::path::{Path, PathBuf};

/// The inputs of `target`: every file in `corpus/<target>/` (which must exist and hold at least
/// one) and in `regressions/<target>/` (which may be absent). Hidden files are skipped.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = files(&root.join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "corpus/{target} is empty: regenerate it with `cargo run --example make_seeds`"
    );
    let regressions = root.join("regressions").join(target);
    let mut all = corpus;
    if regressions.is_dir() {
        all.extend(files(&regressions));
    }
    all
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let entries = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path());
    let mut found: Vec<(PathBuf, Vec<u8>)> = entries
        .filter(|path| path.is_file())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            !name.starts_with('.') && name != "README.md"
        })
        .map(|path| {
            let bytes = fs::read(&path).expect("read input");
            (path, bytes)
        })
        .collect();
    found.sort();
    found
}

#[test]
fn replay_header_parse() {
    let mut valid_with_channels = 0;
    let mut rejected = 0;
    for (path, bytes) in inputs("header_parse") {
        match header_parse(&bytes) {
            ParseOutcome::Valid { channels } if channels > 0 => valid_with_channels += 1,
            ParseOutcome::Valid { .. } => {}
            ParseOutcome::Rejected => rejected += 1,
        }
        println!("{}: ok", path.display());
    }
    assert!(
        valid_with_channels > 0,
        "no valid segment with channels in the corpus"
    );
    assert!(rejected > 0, "no refused segment in the corpus");
}

#[test]
fn replay_blob_pool() {
    let mut total = blob_pool::Stats::default();
    for (path, bytes) in inputs("blob_pool") {
        let stats = blob_pool::run(&bytes);
        println!("{}: {stats:?}", path.display());
        total.loans += stats.loans;
        total.exhausted += stats.exhausted;
        total.delivered += stats.delivered;
        total.corrupt += stats.corrupt;
        total.attach_refused += stats.attach_refused;
    }
    assert!(
        total.loans > 0 && total.delivered > 0,
        "no blob delivered: {total:?}"
    );
    assert!(total.corrupt > 0, "no bad reference met: {total:?}");
    assert!(total.exhausted > 0, "the pool never ran out: {total:?}");
    assert!(
        total.attach_refused > 0,
        "no scribbled descriptor refused: {total:?}"
    );
}

#[test]
fn replay_segment_ops() {
    let mut total = segment_ops::Stats::default();
    for (path, bytes) in inputs("segment_ops") {
        let stats = segment_ops::run(&bytes);
        println!("{}: {stats:?}", path.display());
        total.add(&stats);
    }
    println!("total: {total:?}");
    assert!(total.scribbles > 0 && total.ops > 0);
    assert!(total.attached > 0, "no session attached");
    assert!(
        total.rejected > 0,
        "no session met a segment the validator refuses"
    );
    assert!(total.messages_received > 0, "no message received");
    assert!(
        total.bad_messages + total.busy > 0,
        "no corrupt slot reached"
    );
    // Runs (PROTOCOL.md §12): sent, received whole, refused for a short buffer, and each
    // kind of bad run header met at the head.
    assert!(total.runs_sent > 0, "no run sent");
    assert!(total.runs_received > 0, "no run received");
    assert!(total.runs_refused > 0, "no run refused for a short buffer");
    assert!(
        total.runs_past_limit > 0,
        "no run longer than the ring or the limit"
    );
    assert!(
        total.runs_mismatched > 0,
        "no run whose length disagrees with its slots"
    );
    assert!(total.orphans > 0, "no continuation without its start");
}

#[test]
fn replay_ring_model() {
    let mut total = ring_model::Stats::default();
    for (path, bytes) in inputs("ring_model") {
        let stats = ring_model::run(&bytes);
        println!("{}: {stats:?}", path.display());
        total.ops += stats.ops;
        total.sent += stats.sent;
        total.received += stats.received;
        total.full += stats.full;
        total.empty += stats.empty;
        total.skipped_markers += stats.skipped_markers;
    }
    println!("total: {total:?}");
    assert!(total.sent > 0 && total.received > 0);
    assert!(total.full > 0, "no op met a full ring");
    assert!(total.empty > 0, "no op met an empty ring");
    assert!(total.skipped_markers > 0, "no skip marker was passed over");
}

/// A small xorshift generator, so the sweep below is the same on every run.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

/// Beyond the corpus: a fixed sweep of pseudo-random inputs through the structure-aware
/// targets, so the invariants get exercised on stable even where cargo-fuzz is not installed.
#[test]
fn pseudo_random_sweep() {
    let mut received = 0;
    for seed in 0..150u64 {
        let data = pseudo_random(seed, 64 + (seed as usize * 37) % 1500);
        received += ring_model::run(&data).received;
        received += segment_ops::run(&data).messages_received;
    }
    assert!(received > 0);
}

/// Mutations of the valid header seed: every single-field rewrite at the offsets the
/// validator reads must still give `Ok` or a typed error consistent with the bytes.
#[test]
fn header_field_sweep() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let valid = fs::read(root.join("corpus/header_parse/valid-two-channels"))
        .expect("the valid seed is committed");
    let entry = |id: usize, field: usize| 128 + id * 384 + field;
    let offsets = [
        0,
        8,
        12,
        16,
        24,
        32,
        entry(0, 0),
        entry(0, 8),
        entry(0, 16),
        entry(0, 24),
        entry(1, 8),
        entry(1, 16),
        entry(1, 128),
        entry(1, 256),
        entry(255, 8),
    ];
    let values: [u64; 10] = [
        0,
        1,
        3,
        2,
        64,
        1 << 40,
        u64::MAX,
        98_432,
        valid.len() as u64,
        valid.len() as u64 - 1088,
    ];
    let mut rejected = 0;
    for offset in offsets {
        for value in values {
            let mut bytes = valid.clone();
            bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
            if header_parse(&bytes) == ParseOutcome::Rejected {
                rejected += 1;
            }
            // Truncated after the change, too.
            header_parse(&bytes[..bytes.len() - 1000]);
        }
    }
    assert!(
        rejected > offsets.len(),
        "too few rewrites were refused: {rejected}"
    );
}
