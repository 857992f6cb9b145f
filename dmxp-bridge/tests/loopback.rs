//! Two bridge processes on 127.0.0.1 with explicit endpoints and scouting off, between file
//! segments in a temporary directory: what docs/MULTI_HOST.md promises, end to end.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use dmxp::core::layout::message_flags::APPLICATION_MASK;
use dmxp_bridge::envelope::{host_id, Envelope, ENCODING};
use zenoh::bytes::Encoding;
use zenoh::qos::CongestionControl;
use zenoh::Wait;

/// Application flags of message `seq`: the bridge must carry them.
fn flags_of(seq: u32) -> u16 {
    if seq.is_multiple_of(3) {
        0x0100
    } else {
        0x0A00
    }
}

/// One consumer's receipts: (producer, seq, sender pid), in the order received.
type Receipts = Vec<(u32, u32, u32)>;

/// Receives on `channel` until `total` (shared by the competing consumers) reaches `until`,
/// checking every payload and that each producer's sequence only rises.
fn consume(channel: dmxp::ChannelBuilder, total: &AtomicU64, until: u64, max: usize) -> Receipts {
    let consumer = channel.build_consumer().unwrap();
    let mut last: HashMap<u32, u32> = HashMap::new();
    let mut receipts = Vec::new();
    let mut progress = Instant::now();
    while total.load(Ordering::Acquire) < until {
        let Some(message) = consumer.receive_timeout(Duration::from_millis(50)).unwrap() else {
            assert!(
                progress.elapsed() < HANG_GUARD,
                "stalled at {} of {until} messages",
                total.load(Ordering::Acquire)
            );
            continue;
        };
        progress = Instant::now();
        let (producer, seq) = untag(message.meta.message_type);
        assert_eq!(
            message.payload,
            payload(producer, seq, max),
            "payload of {producer}/{seq}"
        );
        assert_eq!(message.meta.flags & APPLICATION_MASK, flags_of(seq));
        if let Some(previous) = last.insert(producer, seq) {
            assert!(
                seq > previous,
                "producer {producer}: {seq} after {previous}"
            );
        }
        receipts.push((producer, seq, message.meta.sender_pid));
        total.fetch_add(1, Ordering::AcqRel);
    }
    receipts
}

/// Sends `count` messages tagged with `producer` on `producer_handle`.
fn produce(producer_handle: &dmxp::Producer, producer: u32, count: u32, max: usize) {
    for seq in 0..count {
        send_waiting(
            producer_handle,
            &payload(producer, seq, max),
            tag(producer, seq),
            flags_of(seq),
        );
    }
}

/// Every (producer, seq) with `seq < per_producer` exactly once.
fn assert_exactly_once(receipts: &[(u32, u32, u32)], producers: u32, per_producer: u32) {
    let mut seen = vec![vec![false; per_producer as usize]; producers as usize];
    for &(producer, seq, _) in receipts {
        let slot = &mut seen[producer as usize][seq as usize];
        assert!(!*slot, "{producer}/{seq} delivered twice");
        *slot = true;
    }
    assert_eq!(
        receipts.len() as u64,
        u64::from(producers) * u64::from(per_producer)
    );
}

fn bytes_of(producers: u32, per_producer: u32, max: usize) -> u64 {
    (0..producers)
        .flat_map(|p| (0..per_producer).map(move |s| payload(p, s, max).len() as u64))
        .sum()
}

#[test]
fn a_hundred_thousand_messages_cross_exactly_once_and_in_order_per_producer() {
    const PRODUCERS: u32 = 2;
    const PER_PRODUCER: u32 = 50_000;
    const MAX: usize = 960;
    let total_messages = u64::from(PRODUCERS * PER_PRODUCER);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (segment(dir.path(), "a"), segment(dir.path(), "b"));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|_| builder(&a, 0).with_capacity(1024).build_producer().unwrap())
        .collect();
    let endpoint = free_endpoint();
    let exporter = Bridge::start(&[
        "--host",
        "hosta",
        "--listen",
        &endpoint,
        "--export",
        &format!("{}=test/a/0", spec(&a, 0)),
    ]);
    let importer = Bridge::start(&[
        "--host",
        "hostb",
        "--connect",
        &endpoint,
        "--import",
        &format!("test/a/0={}", spec(&b, 0)),
        "--create-segment-size",
        "4194304",
        "--full-timeout-ms",
        "600000",
    ]);

    let total = AtomicU64::new(0);
    let receipts: Vec<_> = std::thread::scope(|scope| {
        for (index, producer) in producers.into_iter().enumerate() {
            scope.spawn(move || produce(&producer, index as u32, PER_PRODUCER, MAX));
        }
        let consumers: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| consume(builder(&b, 0), &total, total_messages, MAX)))
            .collect();
        consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    assert_exactly_once(&receipts, PRODUCERS, PER_PRODUCER);
    assert!(receipts.iter().all(|&(_, _, pid)| pid == importer.pid()));

    let imported = importer.stop();
    let exported = exporter.stop();
    let bytes = bytes_of(PRODUCERS, PER_PRODUCER, MAX);
    assert_eq!(counter(&exported, "export", "published"), total_messages);
    assert_eq!(counter(&exported, "export", "bytes"), bytes);
    assert_eq!(counter(&exported, "export", "publish_errors"), 0);
    // Several messages per sample whenever the ring held a backlog; every sample arrived.
    let samples = counter(&exported, "export", "samples");
    assert!((1..=total_messages).contains(&samples), "{exported}");
    for (name, expected) in [
        ("samples", samples),
        ("received", total_messages),
        ("delivered", total_messages),
        ("bytes", bytes),
    ] {
        assert_eq!(
            counter(&imported, "import", name),
            expected,
            "{name} in {imported}"
        );
    }
    for name in ["malformed", "looped", "dropped_full", "rejected", "gaps"] {
        assert_eq!(
            counter(&imported, "import", name),
            0,
            "{name} in {imported}"
        );
    }
}

#[test]
fn messages_of_many_slots_cross_whole() {
    const COUNT: u32 = 300;
    const MAX: usize = 256 << 10;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (segment(dir.path(), "a"), segment(dir.path(), "b"));
    let large = |path: &Path| {
        builder(path, 0)
            .with_segment_size(16 << 20)
            .with_capacity(1024)
            .with_max_message_size(MAX)
    };
    let producer = large(&a).build_producer().unwrap();
    let endpoint = free_endpoint();
    // Published express (unbatched): the latency setting must carry whole runs too.
    let exporter = Bridge::start(&[
        "--listen",
        &endpoint,
        "--host",
        "hosta",
        "--export",
        &spec(&a, 0),
        "--express",
    ]);
    let importer = Bridge::start(&[
        "--connect",
        &endpoint,
        "--host",
        "hostb",
        "--import",
        &format!("dmxp/hosta/a/0={}", spec(&b, 0)),
        "--create-segment-size",
        "16777216",
        "--create-capacity",
        "1024",
        "--create-max-message-size",
        "262144",
        "--full-timeout-ms",
        "600000",
    ]);
    assert_eq!(large(&b).build_consumer().unwrap().max_message_size(), MAX);

    let total = AtomicU64::new(0);
    let receipts = std::thread::scope(|scope| {
        scope.spawn(move || produce(&producer, 0, COUNT, MAX));
        consume(large(&b), &total, u64::from(COUNT), MAX)
    });
    assert_exactly_once(&receipts, 1, COUNT);
    let imported = importer.stop();
    let exported = exporter.stop();
    assert_eq!(
        counter(&exported, "export", "bytes"),
        bytes_of(1, COUNT, MAX)
    );
    assert_eq!(counter(&imported, "import", "delivered"), u64::from(COUNT));
    assert_eq!(counter(&imported, "import", "rejected"), 0);
}

#[test]
fn a_killed_import_bridge_loses_at_most_what_was_in_flight_and_duplicates_nothing() {
    const COUNT: u32 = 20_000;
    const MAX: usize = 960;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (segment(dir.path(), "a"), segment(dir.path(), "b"));
    let producer = builder(&a, 0).with_capacity(256).build_producer().unwrap();
    let endpoint = free_endpoint();
    let exporter = Bridge::start(&[
        "--listen",
        &endpoint,
        "--host",
        "hosta",
        "--export",
        &spec(&a, 0),
    ]);
    let import_args = [
        "--connect",
        &endpoint,
        "--host",
        "hostb",
        "--import",
        &format!("dmxp/hosta/**={}", spec(&b, 0)),
        "--create-segment-size",
        "4194304",
        "--full-timeout-ms",
        "600000",
    ];
    let first = Bridge::start(&import_args);
    let first_pid = first.pid();

    let total = AtomicU64::new(0);
    let (receipts, second_pid, second_final, exporter) = std::thread::scope(|scope| {
        scope.spawn(move || produce(&producer, 0, COUNT, MAX));
        // One consumer across both bridges' lives; it stops once the last message is in.
        let consumer = scope.spawn(|| {
            let consumer = builder(&b, 0).build_consumer().unwrap();
            let mut receipts: Receipts = Vec::new();
            let mut progress = Instant::now();
            while receipts.last().is_none_or(|&(_, seq, _)| seq + 1 < COUNT) {
                let Some(message) = consumer.receive_timeout(Duration::from_millis(50)).unwrap()
                else {
                    assert!(
                        progress.elapsed() < HANG_GUARD,
                        "stalled after {receipts:?}"
                    );
                    continue;
                };
                progress = Instant::now();
                let (producer, seq) = untag(message.meta.message_type);
                assert_eq!(message.payload, payload(producer, seq, MAX));
                if let Some(&(_, previous, _)) = receipts.last() {
                    assert!(
                        seq > previous,
                        "{seq} after {previous}: duplicated or reordered"
                    );
                }
                receipts.push((producer, seq, message.meta.sender_pid));
                total.store(receipts.len() as u64, Ordering::Release);
            }
            receipts
        });
        let started = Instant::now();
        while total.load(Ordering::Acquire) < u64::from(COUNT / 10) {
            assert!(
                started.elapsed() < HANG_GUARD,
                "the first bridge delivered nothing"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        first.kill();
        let mut exporter = exporter;
        let second = Bridge::start(&import_args);
        let second_pid = second.pid();
        exporter.wait_for_stats("every message published", |report| {
            counter(report, "export", "published") == u64::from(COUNT)
        });
        let receipts = consumer.join().unwrap();
        (receipts, second_pid, second.stop(), exporter)
    });
    let exported = exporter.stop();

    let by_first = receipts.iter().filter(|r| r.2 == first_pid).count() as u64;
    let by_second = receipts.iter().filter(|r| r.2 == second_pid).count() as u64;
    assert_eq!(
        by_first + by_second,
        receipts.len() as u64,
        "a message from neither bridge"
    );
    assert_eq!(by_second, counter(&second_final, "import", "delivered"));
    assert_eq!(
        counter(&second_final, "import", "gaps"),
        0,
        "{second_final}"
    );
    assert_eq!(counter(&exported, "export", "published"), u64::from(COUNT));
    // After the restart the stream is whole: the second bridge's messages run without a gap
    // to the last one.
    let after: Vec<u32> = receipts
        .iter()
        .filter(|r| r.2 == second_pid)
        .map(|r| r.1)
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.windows(2).all(|w| w[1] == w[0] + 1),
        "a gap after the restart"
    );
    let lost = u64::from(COUNT) - receipts.len() as u64;
    eprintln!(
        "kill and restart: {} delivered by the first bridge, {by_second} by the second, {lost} \
         lost in flight (at most once)",
        by_first
    );
}

#[test]
fn samples_that_are_not_envelopes_are_counted_and_never_reach_the_channel() {
    let dir = tempfile::tempdir().unwrap();
    let b = segment(dir.path(), "b");
    let endpoint = free_endpoint();
    let mut importer = Bridge::start(&[
        "--listen",
        &endpoint,
        "--host",
        "hostb",
        "--import",
        &format!("test/in={}", spec(&b, 0)),
        "--create-segment-size",
        "4194304",
    ]);
    let consumer = builder(&b, 0).build_consumer().unwrap();

    let mut settings = dmxp_bridge::config::BridgeConfig::default();
    settings.zenoh.connect.push(endpoint);
    let session = zenoh::open(settings.zenoh_config().unwrap())
        .wait()
        .unwrap();
    let publisher = session
        .declare_publisher("test/in")
        .congestion_control(CongestionControl::Block)
        .wait()
        .unwrap();
    let started = Instant::now();
    while !publisher.matching_status().wait().unwrap().matching() {
        assert!(
            started.elapsed() < HANG_GUARD,
            "the bridge's subscriber never showed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let envelope = |origin: &str, payload: &'static [u8]| {
        let mut wire = Vec::new();
        Envelope {
            origin_host: host_id(origin),
            message_type: 77,
            flags: 0x0200,
            payload,
            ..Envelope::default_for_tests()
        }
        .encode_into(&mut wire);
        wire
    };
    let good = envelope("elsewhere", b"the one that counts");
    let mut bad_magic = good.clone();
    bad_magic[0] ^= 0xFF;
    let mut short_payload = good.clone();
    short_payload.pop();
    // Two envelopes in one sample, then bytes that are not one: both are delivered, and the
    // sample counts as malformed once.
    let mut two_then_junk = envelope("elsewhere", b"first of two");
    two_then_junk.extend(envelope("elsewhere", b"second of two"));
    two_then_junk.extend_from_slice(b"junk");
    let ours = Encoding::from(ENCODING);
    let samples: Vec<(Vec<u8>, Encoding)> = vec![
        (good.clone(), Encoding::TEXT_PLAIN), // malformed: wrong encoding
        (good.clone(), Encoding::default()),  // malformed: no encoding
        (good[..40].to_vec(), ours.clone()),  // malformed: truncated header
        (bad_magic, ours.clone()),            // malformed: not our magic
        (short_payload, ours.clone()),        // malformed: payload shorter than said
        (Vec::new(), ours.clone()),           // malformed: empty
        (envelope("hostb", b"loop"), ours.clone()), // looped: exported by this host
        (
            {
                let mut wire = Vec::new();
                Envelope {
                    payload: &[7; 2000],
                    ..Envelope::default_for_tests()
                }
                .encode_into(&mut wire);
                wire
            },
            ours.clone(),
        ), // rejected: larger than the channel's messages
        (two_then_junk, ours.clone()),        // two delivered, then malformed
        (good, ours),                         // delivered
    ];
    let sent = samples.len() as u64;
    for (bytes, encoding) in samples {
        publisher.put(bytes).encoding(encoding).wait().unwrap();
    }
    importer.wait_for_stats("every sample handled", |report| {
        counter(report, "import", "samples") == sent
    });
    for expected in [&b"first of two"[..], b"second of two"] {
        let message = consumer
            .receive_timeout(HANG_GUARD)
            .unwrap()
            .expect("the envelopes before the junk");
        assert_eq!(message.payload, expected);
    }
    let message = consumer
        .receive_timeout(HANG_GUARD)
        .unwrap()
        .expect("the good sample");
    assert_eq!(message.payload, b"the one that counts");
    assert_eq!(
        (
            message.meta.message_type,
            message.meta.flags & APPLICATION_MASK
        ),
        (77, 0x0200)
    );
    assert!(
        consumer.receive().unwrap().is_none(),
        "something else reached the channel"
    );

    let report = importer.stop();
    for (name, expected) in [
        ("samples", sent),
        ("malformed", 7),
        ("received", 5),
        ("looped", 1),
        ("rejected", 1),
        ("delivered", 3),
    ] {
        assert_eq!(
            counter(&report, "import", name),
            expected,
            "{name} in {report}"
        );
    }
}

#[test]
fn two_bridges_carry_both_ways_and_a_wildcard_import_does_not_hear_its_own_export() {
    const COUNT: u32 = 500;
    const MAX: usize = 960;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (segment(dir.path(), "a"), segment(dir.path(), "b"));
    let from_a = builder(&a, 0).build_producer().unwrap();
    let from_b = builder(&b, 0).build_producer().unwrap();
    let endpoint = free_endpoint();
    // Each bridge subscribes to everything under dmxp/, its own export key included.
    let first = Bridge::start(&[
        "--listen",
        &endpoint,
        "--host",
        "hosta",
        "--export",
        &spec(&a, 0),
        "--import",
        &format!("dmxp/**={}", spec(&a, 1)),
    ]);
    let second = Bridge::start(&[
        "--connect",
        &endpoint,
        "--host",
        "hostb",
        "--export",
        &spec(&b, 0),
        "--import",
        &format!("dmxp/**={}", spec(&b, 1)),
    ]);
    let (into_a, into_b) = (AtomicU64::new(0), AtomicU64::new(0));
    let (at_a, at_b) = std::thread::scope(|scope| {
        scope.spawn(move || produce(&from_a, 0, COUNT, MAX));
        scope.spawn(move || produce(&from_b, 1, COUNT, MAX));
        let at_a = scope.spawn(|| consume(builder(&a, 1), &into_a, u64::from(COUNT), MAX));
        let at_b = scope.spawn(|| consume(builder(&b, 1), &into_b, u64::from(COUNT), MAX));
        (at_a.join().unwrap(), at_b.join().unwrap())
    });
    assert!(
        at_a.iter().all(|r| r.0 == 1),
        "channel a/1 got a's own messages back"
    );
    assert!(
        at_b.iter().all(|r| r.0 == 0),
        "channel b/1 got b's own messages back"
    );
    let (first, second) = (first.stop(), second.stop());
    for report in [&first, &second] {
        assert_eq!(counter(report, "export", "published"), u64::from(COUNT));
        assert_eq!(
            counter(report, "import", "received"),
            u64::from(COUNT),
            "{report}"
        );
        assert_eq!(counter(report, "import", "delivered"), u64::from(COUNT));
        assert_eq!(counter(report, "import", "looped"), 0);
    }
    // Nothing more arrived after the counts were reached.
    for (path, channel) in [(&a, 1), (&b, 1)] {
        assert!(builder(path, channel)
            .build_consumer()
            .unwrap()
            .receive()
            .unwrap()
            .is_none());
    }
}

#[test]
fn a_bad_route_fails_before_ready_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = segment(dir.path(), "missing");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dmxp-bridge"))
        .args(["--export", &spec(&missing, 0), "--stats-interval-ms", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        output.stdout.is_empty(),
        "printed a report: {:?}",
        output.stdout
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("export of") && stderr.contains("missing"),
        "{stderr}"
    );
    assert!(
        !missing.exists(),
        "an export created the segment it should only attach to"
    );
}
