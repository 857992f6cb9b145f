//! Blobs across processes (PROTOCOL.md §13): two producer processes and two consumer
//! processes move blobs of up to 4 MiB with checksums, exactly once; and a producer or a
//! consumer killed with SIGKILL at every step of loan, commit, receive and release leaves
//! nothing behind: once the dead are recovered, every block is free again, none was freed
//! twice, and the channel flows.
//!
//! The peers are this test binary re-executed to run an ignored helper (`child_*`).
#![cfg(all(feature = "test-hooks", feature = "shm"))]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use common::{env, expect_success, spawn_child, ShmName, Spec};
use dmxp::test_hooks::{self, Step};
use dmxp::{pattern, BlobPoolSpec, ChannelBuilder, Consumer, ErrorKind, Producer};

/// Hang guard for anything that waits on another process.
const LONG: Duration = Duration::from_secs(60);
/// Blobs per producer in the 2 × 2 run.
const PER_PRODUCER: u64 = 40;
/// The sentinel that tells a consumer to stop.
const STOP: &[u8] = b"stop";

/// The lengths blobs cycle through: a tiny one, a page, just past a class, 1 MiB, 4 MiB.
fn blob_len(index: u64) -> usize {
    [24, 4096, 65_537, 1 << 20, 4 << 20][(index % 5) as usize]
}

/// 16 blocks of 64 KiB, 4 of 1 MiB, 6 of 4 MiB (29 MiB), in a 40 MiB segment.
fn builder(spec: &Spec) -> ChannelBuilder {
    spec.builder()
        .with_segment_size(40 << 20)
        .with_channel_id(0)
        .with_capacity(16)
        .with_blob_classes(
            BlobPoolSpec::new()
                .with_class(64 << 10, 16)
                .with_class(1 << 20, 4)
                .with_class(4 << 20, 6),
        )
}

const BLOCKS: u32 = 26;

fn free_blocks(stats: &[dmxp::ClassStats]) -> u32 {
    stats.iter().map(|c| c.free).sum()
}

fn send_blob(producer: &Producer, channel: u64, index: u64) {
    let payload = pattern::encode(channel as u32, index, blob_len(index));
    let mut loan = producer
        .loan_blob_timeout(payload.len(), LONG)
        .unwrap_or_else(|e| panic!("loan for blob {index}: {e}"));
    assert!(loan.write_at(0, &payload));
    loan.commit().unwrap();
}

// ------------------------------------------------------------------ 2 producers × 2 consumers

/// Sends `PER_PRODUCER` blobs tagged with `DMXP_T_TAG` (the pattern's channel field).
#[test]
#[ignore = "child process helper"]
fn child_blob_producer() {
    let Some(spec) = common::child_env("DMXP_T_SPEC") else {
        return;
    };
    let tag: u64 = env("DMXP_T_TAG");
    let producer = builder(&Spec::decode(&spec)).build_producer().unwrap();
    assert!(producer.is_registered());
    for index in 0..PER_PRODUCER {
        send_blob(&producer, tag, index);
    }
}

/// Receives blobs in place until the stop sentinel; prints `got <tag> <index>` for each.
#[test]
#[ignore = "child process helper"]
fn child_blob_consumer() {
    let Some(spec) = common::child_env("DMXP_T_SPEC") else {
        return;
    };
    let consumer = builder(&Spec::decode(&spec)).build_consumer().unwrap();
    assert!(consumer.is_registered());
    let mut out = std::io::stdout().lock();
    loop {
        let message = consumer
            .receive_blob_timeout(LONG)
            .unwrap()
            .expect("a message within the hang guard");
        if !message.is_in_place() {
            assert_eq!(message.to_vec(), STOP);
            break;
        }
        let bytes = message.to_vec();
        let (tag, index) = pattern::decode(&bytes).expect("checksum");
        assert_eq!(bytes.len(), blob_len(index), "length of blob {tag}/{index}");
        message.release().unwrap();
        writeln!(out, "got {tag} {index}").unwrap();
    }
    assert_eq!(consumer.stats().corrupt, 0);
    assert_eq!(consumer.stats().lost, 0);
}

#[test]
fn two_producers_and_two_consumers_move_4_mib_blobs_exactly_once() {
    let name = ShmName::new("blobs_2x2");
    let spec = Spec::Shm(name.0.clone());
    let parent = builder(&spec).build_producer().unwrap();
    let envs = |tag: u64| {
        vec![
            ("DMXP_T_SPEC", spec.encode()),
            ("DMXP_T_TAG", tag.to_string()),
        ]
    };
    let consumers: Vec<Child> = (0..2)
        .map(|i| spawn_child("child_blob_consumer", &envs(i)))
        .collect();
    let producers: Vec<Child> = (1..=2)
        .map(|tag| spawn_child("child_blob_producer", &envs(tag)))
        .collect();
    for producer in producers {
        expect_success(producer, "blob producer");
    }
    for _ in 0..2 {
        parent.send_timeout(STOP, LONG).unwrap();
    }
    let mut seen = BTreeSet::new();
    for consumer in consumers {
        let output = expect_success(consumer, "blob consumer");
        for line in output.lines().filter_map(|l| l.strip_prefix("got ")) {
            let mut words = line.split_whitespace();
            let tag: u64 = words.next().unwrap().parse().unwrap();
            let index: u64 = words.next().unwrap().parse().unwrap();
            assert!(seen.insert((tag, index)), "blob {tag}/{index} twice");
        }
    }
    let expected: BTreeSet<_> = (1..=2)
        .flat_map(|tag| (0..PER_PRODUCER).map(move |index| (tag, index)))
        .collect();
    assert_eq!(seen, expected, "every blob exactly once");
    assert_eq!(free_blocks(&parent.blob_stats()), BLOCKS);
}

// ------------------------------------------------------------------ crash injection

static ARMED: AtomicU64 = AtomicU64::new(0);
static TARGET: OnceLock<Step> = OnceLock::new();

fn pause(what: &str) -> ! {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "paused {what}");
    let _ = out.flush();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn pause_at_target(step: Step, _position: u64) {
    if ARMED.load(Ordering::Relaxed) == 1 && TARGET.get() == Some(&step) {
        pause(step.name());
    }
}

/// Loans, commits, receives or releases one blob and stops at `DMXP_CRASH_AT`: a hook step
/// of the commit or the receive, or `loaned` (after the loan, before the commit) or `held`
/// (after the receive, before the release).
#[test]
#[ignore = "child process helper"]
fn child_blob_crash() {
    let Some(spec) = common::child_env("DMXP_T_SPEC") else {
        return;
    };
    let at: String = env("DMXP_CRASH_AT");
    let builder = builder(&Spec::decode(&spec));
    let step = Step::from_name(&at);
    if let Some(step) = step {
        TARGET.set(step).unwrap();
        test_hooks::set_hook(Some(pause_at_target));
    }
    if at == "loaned" || step.is_some_and(Step::is_send) {
        let producer = builder.build_producer().unwrap();
        assert!(producer.is_registered());
        let payload = pattern::encode(0, 7, 1 << 20);
        let mut loan = producer.loan_blob(payload.len()).unwrap();
        assert!(loan.write_at(0, &payload));
        if at == "loaned" {
            pause("loaned");
        }
        ARMED.store(1, Ordering::Relaxed);
        loan.commit().unwrap();
    } else {
        let consumer = builder.build_consumer().unwrap();
        assert!(consumer.is_registered());
        ARMED.store(1, Ordering::Relaxed);
        let message = consumer
            .receive_blob_timeout(LONG)
            .unwrap()
            .expect("a blob");
        ARMED.store(0, Ordering::Relaxed);
        if at == "held" {
            pause("held");
        }
        message.release().unwrap();
    }
    panic!("never reached {at}");
}

fn until_paused(child: &mut Child, what: &str) {
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child stdout");
        if let Some(name) = line.strip_prefix("paused ") {
            assert_eq!(name, what);
            return;
        }
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    panic!("child exited without pausing at {what}:\n{stderr}");
}

/// Receives until the stop sentinel; returns the blobs' indices (checked) and how many
/// messages were counted lost.
fn drain(consumer: &Consumer) -> (Vec<u64>, u64) {
    let mut indices = Vec::new();
    loop {
        let message = consumer
            .receive_blob_timeout(LONG)
            .unwrap()
            .expect("the sentinel within the hang guard");
        if !message.is_in_place() {
            assert_eq!(message.to_vec(), STOP);
            return (indices, consumer.stats().lost);
        }
        let (_, index) = pattern::decode(&message.to_vec()).expect("checksum");
        indices.push(index);
        message.release().unwrap();
    }
}

fn crash_case(at: &str) {
    let name = ShmName::new("blobs_crash");
    let spec = Spec::Shm(name.0.clone());
    let producer = builder(&spec).build_producer().unwrap();
    let consumer = builder(&spec).build_consumer().unwrap();
    let producer_dies = at == "loaned" || Step::from_name(at).is_some_and(Step::is_send);
    if !producer_dies {
        send_blob(&producer, 0, 7);
    }
    let mut child = spawn_child(
        "child_blob_crash",
        &[
            ("DMXP_T_SPEC", spec.encode()),
            ("DMXP_CRASH_AT", at.to_owned()),
        ],
    );
    until_paused(&mut child, at);
    child.kill().expect("SIGKILL the paused peer");
    assert!(!child.wait().unwrap().success());

    // The channel flows: a later blob and the sentinel arrive, after whatever the dead peer
    // left (its blob, or a loss).
    let repaired =
        producer.recover().unwrap().records_freed + consumer.recover().unwrap().records_freed;
    assert!(repaired <= 1, "{at}: one dead record at most");
    send_blob(&producer, 0, 8);
    producer.send_timeout(STOP, LONG).unwrap();
    let (indices, lost) = drain(&consumer);
    assert_eq!(
        indices.last(),
        Some(&8),
        "{at}: the later blob arrives last"
    );
    let dead_blob = indices.len() as u64 - 1 + lost;
    assert!(
        dead_blob <= 1 && !indices[..indices.len() - 1].contains(&8),
        "{at}: at most once: {indices:?}, {lost} lost"
    );
    // Nothing was freed twice or leaked once the dead are recovered.
    producer.reclaim_blobs();
    let stats = producer.blob_stats();
    assert_eq!(
        free_blocks(&stats),
        BLOCKS,
        "{at}: every block free again: {stats:?}"
    );
    assert!(stats.iter().all(|c| c.invalid == 0));
}

#[test]
fn a_producer_killed_at_any_step_of_a_loan_or_commit_leaves_no_block_behind() {
    crash_case("loaned");
    for step in Step::ALL.into_iter().filter(|s| s.is_send()) {
        crash_case(step.name());
    }
}

#[test]
fn a_consumer_killed_at_any_step_of_a_receive_or_release_leaves_no_block_behind() {
    for step in Step::ALL.into_iter().filter(|s| !s.is_send()) {
        crash_case(step.name());
    }
    crash_case("held");
}

#[test]
fn a_blob_channel_reports_exhaustion_and_refuses_blobs_larger_than_its_blocks() {
    let name = ShmName::new("blobs_exhausted");
    let spec = Spec::Shm(name.0.clone());
    let producer = builder(&spec).build_producer().unwrap();
    let too_big = producer.loan_blob((4 << 20) + 1).unwrap_err();
    assert!(
        matches!(too_big.kind(), ErrorKind::TooLarge { .. }),
        "{too_big}"
    );
    let held: Vec<_> = (0..6)
        .map(|_| producer.loan_blob(4 << 20).unwrap())
        .collect();
    let exhausted = producer.loan_blob(4 << 20).unwrap_err();
    assert_eq!(exhausted.kind(), ErrorKind::PoolExhausted { len: 4 << 20 });
    let timed_out = producer
        .loan_blob_timeout(4 << 20, Duration::from_millis(20))
        .unwrap_err();
    assert_eq!(timed_out.kind(), ErrorKind::Timeout);
    drop(held);
    producer.loan_blob(4 << 20).unwrap();
    // A channel without a pool.
    let plain = ShmName::new("blobs_plain");
    let plain = ChannelBuilder::new()
        .with_segment_name(plain.0.clone())
        .with_segment_size(2 << 20)
        .build_producer()
        .unwrap();
    assert_eq!(
        plain.loan_blob(10).unwrap_err().kind(),
        ErrorKind::NoBlobPool
    );
}
