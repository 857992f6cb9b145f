//! Writes the committed seed corpora under `fuzz/corpus/<target>/`.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`
//!
//! * `header_parse`: real segments made by `dmxp-nostd` itself (formatted, with channels,
//!   messages, a skip marker and advanced cursors), plus truncated and altered copies that
//!   must be refused, or accepted, for a known reason.
//! * `segment_ops`, `ring_model`: structure-aware inputs, chosen deterministically from
//!   pseudo-random candidates by how many different operations they run and what they reach
//!   (messages received, full rings, corrupt messages...).
//!
//! * `blob_pool`: pseudo-random inputs chosen for what they reach (blobs delivered, bad
//!   references, an exhausted pool, a refused re-attach).
//!
//! The output is the same on every run; rerun it after changing an input format.

use dmxp_fuzz::header_check::{check_parse, ParseOutcome};
use dmxp_fuzz::{blob_pool, ring_model, segment_ops};
use dmxp_nostd::layout::{HEADER_SIZE, MSG_INLINE, SLOT_SIZE};
use dmxp_nostd::{AlignedBlock, Region, Segment, SendMeta};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use zerocopy::IntoBytes;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    header_parse_seeds(&root.join("header_parse"));
    segment_ops_seeds(&root.join("segment_ops"));
    ring_model_seeds(&root.join("ring_model"));
    blob_pool_seeds(&root.join("blob_pool"));
}

/// `blob_pool`: inputs that deliver blobs, meet bad references, exhaust the pool, and make a
/// re-attach refuse a scribbled descriptor.
fn blob_pool_seeds(dir: &Path) {
    let delivered = |input: &[u8]| {
        let stats = blob_pool::run(input);
        (stats.delivered > 0).then_some(stats.delivered as usize + stats.loans as usize)
    };
    write(dir, "delivered", &best(11, 300, 400, delivered));
    let corrupt = |input: &[u8]| {
        let stats = blob_pool::run(input);
        (stats.corrupt > 0).then_some(stats.corrupt as usize)
    };
    write(dir, "corrupt-references", &best(12, 600, 1500, corrupt));
    let exhausted = |input: &[u8]| {
        let stats = blob_pool::run(input);
        (stats.exhausted > 0).then_some(stats.exhausted as usize)
    };
    write(dir, "exhausted", &best(13, 400, 800, exhausted));
    let refused = |input: &[u8]| {
        let stats = blob_pool::run(input);
        (stats.attach_refused > 0).then_some(stats.attach_refused as usize)
    };
    write(dir, "refused-attach", &best(14, 600, 1500, refused));
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("create corpus dir");
    fs::write(dir.join(name), bytes).expect("write seed");
    println!("{}/{name}: {} bytes", dir.display(), bytes.len());
}

/// A segment with channel 0 (4 slots) and channel 1 (2 slots): messages queued, some
/// consumed, a skip marker, cursors past zero.
fn two_channel_segment() -> Vec<u8> {
    let size = HEADER_SIZE + 6 * SLOT_SIZE;
    let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(size)];
    {
        let region = Region::new(&mut memory.as_mut_bytes()[..size]).expect("aligned");
        let segment = Segment::format(region, 1000).expect("format");
        let zero = segment.create_channel(0, 4, 1000).expect("channel 0");
        let one = segment.create_channel(1, 2, 1000).expect("channel 1");
        let meta = SendMeta {
            message_type: 7,
            flags: 0x0100,
            timestamp_ns: 123_456_789,
            sender_pid: 1000,
            sender_runtime: dmxp_nostd::layout::runtime::RUST,
        };
        let mut buf = [0u8; MSG_INLINE];
        for n in 0..6u8 {
            zero.try_send(&vec![n; 100 * n as usize], &meta)
                .expect("room");
            zero.try_recv(&mut buf).expect("just sent");
        }
        zero.try_send(b"queued", &meta).expect("room");
        drop(zero.try_loan().expect("room")); // a skip marker
        one.try_send(&[0xAB; MSG_INLINE], &meta).expect("room");
    }
    memory.as_bytes()[..size].to_vec()
}

fn put_u64(bytes: &mut [u8], offset: usize, value: u64) {
    bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

fn header_parse_seeds(dir: &Path) {
    let valid = two_channel_segment();
    let entry = |id: usize| 128 + id * 384;
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    seeds.push(("valid-two-channels", valid.clone()));

    let mut empty = valid[..HEADER_SIZE].to_vec();
    empty[128..].fill(0); // no channels at all
    put_u64(&mut empty, 24, HEADER_SIZE as u64);
    put_u64(&mut empty, 32, HEADER_SIZE as u64);
    empty[16..20].fill(0);
    seeds.push(("valid-no-channels", empty));

    let mut unrecorded = valid.clone();
    put_u64(&mut unrecorded, 24, 0); // segment_size not recorded
    put_u64(&mut unrecorded, 32, 0); // nor the band cursor
    seeds.push(("valid-size-unrecorded", unrecorded));

    seeds.push((
        "truncated-mid-band",
        valid[..HEADER_SIZE + SLOT_SIZE + 100].to_vec(),
    ));
    seeds.push(("truncated-header-fields", valid[..128].to_vec()));

    let mut overlap = valid.clone();
    put_u64(
        &mut overlap,
        entry(1) + 16,
        HEADER_SIZE as u64 + SLOT_SIZE as u64,
    );
    seeds.push(("bands-overlap", overlap));

    for (name, bytes) in &seeds {
        let outcome = check_parse(bytes);
        let expect_valid = name.starts_with("valid");
        assert_eq!(
            matches!(outcome, ParseOutcome::Valid { .. }),
            expect_valid,
            "{name}: {outcome:?}"
        );
        write(dir, name, bytes);
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }
}

/// The variant names in a `Debug` rendering: "Send", "Entry", "Special"...
fn kinds(debug: &str) -> BTreeSet<String> {
    debug
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
        .map(str::to_string)
        .collect()
}

/// Picks, among `candidates` pseudo-random inputs of `len` bytes, the one with the best score.
fn best(
    seed: u64,
    len: usize,
    candidates: usize,
    score: impl Fn(&[u8]) -> Option<usize>,
) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut best: Option<(usize, Vec<u8>)> = None;
    for _ in 0..candidates {
        let input = rng.bytes(len);
        if let Some(s) = score(&input) {
            if best.as_ref().is_none_or(|(b, _)| s > *b) {
                best = Some((s, input));
            }
        }
    }
    best.expect("some candidate qualifies").1
}

fn segment_ops_seeds(dir: &Path) {
    let score = |want_scribbles: bool| {
        move |input: &[u8]| {
            let (_, steps) = segment_ops::decode_input(input);
            let stats = segment_ops::run(input);
            let scribbled = stats.scribbles > 0;
            if scribbled != want_scribbles || stats.messages_received == 0 {
                return None;
            }
            let variety = kinds(&format!("{steps:?}")).len();
            Some(variety * 4 + stats.messages_received.min(20) + stats.rejected.min(3) * 5)
        }
    };
    write(dir, "ops-only", &best(1, 400, 4000, score(false)));
    write(dir, "ops-and-scribbles", &best(2, 900, 300, score(true)));
    write(dir, "many-sessions", &best(3, 2000, 200, score(true)));
    let corrupt = |input: &[u8]| {
        let stats = segment_ops::run(input);
        (stats.bad_messages > 0 || stats.busy > 0).then_some(stats.bad_messages + stats.busy)
    };
    write(dir, "corrupt-messages", &best(4, 1200, 2000, corrupt));

    // Runs (PROTOCOL.md §12): a setup of two 4-slot channels carrying runs (channel 0 up to
    // the whole ring, 3,840 bytes; channel 1 up to 1,183), three messages sent into each
    // (runs among them), one received from channel 0, and a run that wraps past its last slot.
    let run_setup = [1u8, 1, 0, 3, 3, 1, 0, 0, 4, 6, 1];
    let with_setup = |seed: u64, len: usize| {
        let mut rng = Rng(seed);
        move || {
            let mut input = run_setup.to_vec();
            input.extend(rng.bytes(len));
            input
        }
    };
    let delivered = |stats: &segment_ops::Stats| {
        [stats.runs_sent, stats.runs_received, stats.runs_refused]
            .iter()
            .filter(|&&n| n > 0)
            .count()
            * 10
            + (stats.runs_received + stats.runs_sent).min(20)
    };
    let bad_headers = |stats: &segment_ops::Stats| {
        [
            stats.runs_past_limit,
            stats.runs_mismatched,
            stats.runs_cut,
            stats.orphans,
        ]
        .iter()
        .filter(|&&n| n > 0)
        .count()
            * 10
            + stats.runs_received.min(5)
    };
    let pick = |make: &mut dyn FnMut() -> Vec<u8>,
                candidates: usize,
                score: &dyn Fn(&segment_ops::Stats) -> usize| {
        (0..candidates)
            .map(|_| make())
            .map(|input| (score(&segment_ops::run(&input)), input))
            .max_by_key(|(s, _)| *s)
            .expect("candidates")
            .1
    };
    write(
        dir,
        "runs-sent-and-received",
        &pick(&mut with_setup(5, 600), 1500, &delivered),
    );
    for (name, seed, reach) in [
        ("runs-past-limit", 6, 0),
        ("runs-mismatched", 7, 1),
        ("runs-orphans", 8, 3),
    ] {
        let score = move |stats: &segment_ops::Stats| {
            let counts = [
                stats.runs_past_limit,
                stats.runs_mismatched,
                stats.runs_cut,
                stats.orphans,
            ];
            usize::from(counts[reach] > 0) * 100 + bad_headers(stats)
        };
        let input = pick(&mut with_setup(seed, 1500), 3000, &score);
        write(dir, name, &input);
    }
}

fn ring_model_seeds(dir: &Path) {
    let score = |input: &[u8]| {
        let (_, ops) = ring_model::decode_input(input);
        let stats = ring_model::run(input);
        let reached = [
            stats.full,
            stats.empty,
            stats.skipped_markers,
            stats.received,
        ]
        .iter()
        .filter(|&&n| n > 0)
        .count();
        Some(kinds(&format!("{ops:?}")).len() * 4 + reached * 10 + stats.received.min(40))
    };
    for (name, seed, len) in [("short", 11, 200), ("medium", 12, 1000), ("long", 13, 3000)] {
        write(dir, name, &best(seed, len, 200, score));
    }
    // The smallest rings tried, where most operations meet a full or an empty ring.
    let mut input = vec![0u8, 0];
    input.extend(Rng(14).bytes(1200));
    let (setup, _) = ring_model::decode_input(&input);
    let smallest = 1 << ring_model::MIN_CAPACITY_LOG2;
    assert_eq!(setup.capacities(), [smallest; 2]);
    let stats = ring_model::run(&input);
    assert!(stats.full > 0 && stats.empty > 0, "{stats:?}");
    write(dir, "smallest-rings", &input);
}
