//! Tests across real processes. Children are this test binary re-executed to run one of the
//! `child_*` helpers (ignored, and a no-op when run without their environment).
#![cfg(feature = "shm")]

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{env, expect_success, spawn_child, ShmName, Spec};
#[cfg(feature = "memfd")]
use dmxp::ChannelBuilder;
use dmxp::{pattern, ErrorKind};

/// `message_type` of the end-of-stream marker the parent sends to stop consumers.
const STOP: u32 = 0xD0_57;
const LONG: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- children

/// Sends `DMXP_T_COUNT` pattern messages on `DMXP_T_CHANNEL`, indices `(producer << 32) | i`.
/// With `DMXP_T_GATE`, pauses half-way until a message arrives on that channel.
#[test]
#[ignore = "child process helper"]
fn child_producer() {
    let Some(spec) = common::child_env("DMXP_T_SPEC") else {
        return;
    };
    let spec = Spec::decode(&spec);
    let channel: u32 = env("DMXP_T_CHANNEL");
    let producer_index: u64 = env("DMXP_T_PRODUCER");
    let count: u64 = env("DMXP_T_COUNT");
    let gate: Option<u32> = std::env::var("DMXP_T_GATE")
        .ok()
        .map(|g| g.parse().unwrap());
    let producer = spec
        .builder()
        .with_channel_id(channel)
        .build_producer()
        .unwrap();
    for i in 0..count {
        if Some(i) == gate.map(|_| count / 2) {
            let gate = spec
                .builder()
                .with_channel_id(gate.unwrap())
                .build_consumer()
                .unwrap();
            gate.receive_timeout(LONG).unwrap().expect("gate opened");
        }
        let index = (producer_index << 32) | i;
        let payload = pattern::encode(channel, index, pattern::default_len(i));
        producer.send_timeout(&payload, LONG).unwrap();
    }
}

/// Receives pattern messages on `DMXP_T_CHANNEL` until a STOP marker, checks each, and writes
/// the indices (u64 LE) to `DMXP_T_OUT`.
#[test]
#[ignore = "child process helper"]
fn child_consumer() {
    let Some(spec) = common::child_env("DMXP_T_SPEC") else {
        return;
    };
    let spec = Spec::decode(&spec);
    let channel: u32 = env("DMXP_T_CHANNEL");
    let out: String = env("DMXP_T_OUT");
    let consumer = spec
        .builder()
        .with_channel_id(channel)
        .build_consumer()
        .unwrap();
    let mut indices = Vec::new();
    loop {
        let message = consumer
            .receive_timeout(LONG)
            .unwrap()
            .expect("no message within the timeout");
        if message.meta.message_type == STOP {
            break;
        }
        let (ch, index) = pattern::decode(&message.payload).expect("payload intact");
        assert_eq!(
            ch,
            u64::from(channel),
            "message routed to the wrong channel"
        );
        assert_eq!(message.meta.channel_id, channel);
        assert_eq!(message.meta.sender_runtime, dmxp::runtime::RUST);
        indices.push(index);
    }
    let stats = consumer.stats();
    assert_eq!((stats.lost, stats.corrupt), (0, 0), "{stats:?}");
    let mut file = std::fs::File::create(out).unwrap();
    for index in indices {
        file.write_all(&index.to_le_bytes()).unwrap();
    }
}

/// Creates the segment and channel 0 at `DMXP_T_START` (CLOCK_MONOTONIC ns), racing a twin,
/// and sends one message naming itself.
#[test]
#[ignore = "child process helper"]
fn child_racer() {
    let Some(spec) = common::child_env("DMXP_T_SPEC") else {
        return;
    };
    let spec = Spec::decode(&spec);
    let start: u64 = env("DMXP_T_START");
    while dmxp::monotonic_ns() < start {
        std::hint::spin_loop();
    }
    let producer = spec
        .builder()
        .with_capacity(64)
        .build_producer()
        .unwrap_or_else(|e| panic!("racer {} failed: {e}", std::process::id()));
    producer.send(std::process::id().to_le_bytes()).unwrap();
}

/// Consumes channel `DMXP_T_CHANNEL` forever (until killed).
#[test]
#[ignore = "child process helper"]
fn child_endless_consumer() {
    let Some(spec) = common::child_env("DMXP_T_SPEC") else {
        return;
    };
    let consumer = Spec::decode(&spec)
        .builder()
        .with_channel_id(env("DMXP_T_CHANNEL"))
        .build_consumer()
        .unwrap();
    loop {
        let _ = consumer.receive_blocking().unwrap();
    }
}

/// The far end of the ping-pong: echoes `DMXP_T_ROUNDS` messages from channel 0 to channel 1.
#[test]
#[ignore = "child process helper"]
fn child_echo() {
    let Some(spec) = common::child_env("DMXP_T_SPEC") else {
        return;
    };
    let spec = Spec::decode(&spec);
    let rounds: u64 = env("DMXP_T_ROUNDS");
    let ping = spec.builder().with_channel_id(0).build_consumer().unwrap();
    let pong = spec.builder().with_channel_id(1).build_producer().unwrap();
    for round in 0..rounds {
        // Block (futex) with a generous timeout, so a lost wake-up fails the test instead of
        // hanging it.
        let message = ping
            .receive_timeout(LONG)
            .unwrap()
            .unwrap_or_else(|| panic!("echo: no ping {round} within {LONG:?} (lost wake-up?)"));
        assert_eq!(message.payload, round.to_le_bytes());
        pong.send_timeout(&message.payload, LONG).unwrap();
    }
}

// ---------------------------------------------------------------- exactly once

const CHANNELS: u32 = 4;
const PRODUCERS: u64 = 2;
const CONSUMERS: usize = 2;
const PER_PRODUCER: u64 = 10_000;

fn spawn_consumer(spec: &Spec, channel: u32, out: &std::path::Path) -> Child {
    spawn_child(
        "child_consumer",
        &[
            ("DMXP_T_SPEC", spec.encode()),
            ("DMXP_T_CHANNEL", channel.to_string()),
            ("DMXP_T_OUT", out.display().to_string()),
        ],
    )
}

fn spawn_producer(
    spec: &Spec,
    channel: u32,
    producer: u64,
    count: u64,
    gate: Option<u32>,
) -> Child {
    let mut envs = vec![
        ("DMXP_T_SPEC", spec.encode()),
        ("DMXP_T_CHANNEL", channel.to_string()),
        ("DMXP_T_PRODUCER", producer.to_string()),
        ("DMXP_T_COUNT", count.to_string()),
    ];
    if let Some(gate) = gate {
        envs.push(("DMXP_T_GATE", gate.to_string()));
    }
    spawn_child("child_producer", &envs)
}

fn read_indices(path: &std::path::Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Checks that the consumers' outputs hold every expected index exactly once.
fn check_exactly_once(outputs: &[&std::path::Path], producers: u64, per_producer: u64) {
    let mut seen = HashSet::new();
    let mut total = 0;
    for out in outputs {
        for index in read_indices(out) {
            total += 1;
            assert!(seen.insert(index), "index {index:#x} received twice");
        }
    }
    for p in 0..producers {
        for i in 0..per_producer {
            assert!(
                seen.contains(&((p << 32) | i)),
                "producer {p} message {i} missing"
            );
        }
    }
    assert_eq!(total, producers * per_producer);
}

fn send_stop(producer: &dmxp::Producer) {
    producer.send_with_timeout([0u8; 8], STOP, 0, LONG).unwrap();
}

/// N producers × M consumers per channel, over 4 channels, every one its own process.
fn exactly_once(spec: &Spec) {
    // The parent makes the channels (small rings, so they wrap many times) and sends STOPs.
    let stoppers: Vec<_> = (0..CHANNELS)
        .map(|ch| {
            spec.builder()
                .with_channel_id(ch)
                .with_capacity(256)
                .build_producer()
                .unwrap()
        })
        .collect();
    let mut consumers = Vec::new();
    let mut outputs = Vec::new();
    for ch in 0..CHANNELS {
        for _ in 0..CONSUMERS {
            let out = common::TempPath(common::unique_path("out"));
            consumers.push(spawn_consumer(spec, ch, &out.0));
            outputs.push((ch, out));
        }
    }
    let producers: Vec<_> = (0..CHANNELS)
        .flat_map(|ch| (0..PRODUCERS).map(move |p| (ch, p)))
        .map(|(ch, p)| spawn_producer(spec, ch, p, PER_PRODUCER, None))
        .collect();
    for producer in producers {
        expect_success(producer, "producer");
    }
    // Every data message precedes the STOPs in each ring; one STOP per consumer.
    for stopper in &stoppers {
        for _ in 0..CONSUMERS {
            send_stop(stopper);
        }
    }
    for consumer in consumers {
        expect_success(consumer, "consumer");
    }
    for ch in 0..CHANNELS {
        let outs: Vec<_> = outputs
            .iter()
            .filter(|(c, _)| *c == ch)
            .map(|(_, o)| o.0.as_path())
            .collect();
        check_exactly_once(&outs, PRODUCERS, PER_PRODUCER);
    }
}

#[test]
fn exactly_once_across_processes_shm() {
    let name = ShmName::new("eo");
    exactly_once(&Spec::Shm(name.0.clone()));
}

#[cfg(feature = "file")]
#[test]
fn exactly_once_across_processes_file() {
    let path = common::TempPath(common::unique_path("eo.seg"));
    exactly_once(&Spec::File(path.0.clone()));
}

#[cfg(feature = "memfd")]
#[test]
fn exactly_once_across_processes_memfd() {
    use dmxp::memfd::{MemfdSegment, SegmentServer};
    use std::sync::Arc;
    let segment = Arc::new(MemfdSegment::create("dmxp-test", 2 << 20).unwrap());
    let socket = common::TempPath(common::unique_path("eo.sock"));
    let server = SegmentServer::bind(&socket.0, Arc::clone(&segment))
        .unwrap()
        .spawn();
    exactly_once(&Spec::MemfdSocket(socket.0.clone()));
    server.stop().unwrap();
}

// ---------------------------------------------------------------- creation races

const RACE_TRIALS: usize = 200;

#[test]
fn racing_creators_get_one_segment_and_one_channel() {
    for trial in 0..RACE_TRIALS {
        let name = ShmName::new("race");
        let spec = Spec::Shm(name.0.clone());
        let start = dmxp::monotonic_ns() + 20_000_000;
        let racers: Vec<_> = (0..2)
            .map(|_| {
                spawn_child(
                    "child_racer",
                    &[
                        ("DMXP_T_SPEC", spec.encode()),
                        ("DMXP_T_START", start.to_string()),
                    ],
                )
            })
            .collect();
        let pids: HashSet<u32> = racers.iter().map(|c| c.id()).collect();
        for racer in racers {
            expect_success(racer, &format!("racer in trial {trial}"));
        }
        let allocator = spec.builder().attach_allocator().unwrap();
        let creator = allocator.creator_pid().unwrap();
        assert!(
            pids.contains(&creator),
            "trial {trial}: creator {creator} not a racer"
        );
        assert_eq!(allocator.channel_count().unwrap(), 1, "trial {trial}");
        let channels = allocator.channels();
        assert_eq!(channels.len(), 1, "trial {trial}");
        assert_eq!(
            (channels[0].id, channels[0].capacity, channels[0].depth),
            (0, 64, 2)
        );
        // Both racers' messages are in the one channel: they used one segment.
        let consumer = allocator.consumer(0).unwrap();
        let mut senders = HashSet::new();
        while let Some(message) = consumer.receive_with_meta().unwrap() {
            let pid = u32::from_le_bytes(message.payload[..4].try_into().unwrap());
            assert_eq!(pid, message.meta.sender_pid);
            senders.insert(pid);
        }
        assert_eq!(senders, pids, "trial {trial}");
    }
}

// ---------------------------------------------------------------- a killed consumer

#[test]
fn killed_consumer_leaves_other_channels_working() {
    let name = ShmName::new("kill");
    let spec = Spec::Shm(name.0.clone());
    let victim_channel = spec
        .builder()
        .with_channel_id(0)
        .with_capacity(64)
        .build_producer()
        .unwrap();
    let stopper = spec
        .builder()
        .with_channel_id(1)
        .with_capacity(64)
        .build_producer()
        .unwrap();
    let gate = spec
        .builder()
        .with_channel_id(2)
        .with_capacity(2)
        .build_producer()
        .unwrap();

    let mut victim = spawn_child(
        "child_endless_consumer",
        &[
            ("DMXP_T_SPEC", spec.encode()),
            ("DMXP_T_CHANNEL", "0".into()),
        ],
    );
    let out = common::TempPath(common::unique_path("kill.out"));
    let consumer = spawn_consumer(&spec, 1, &out.0);
    let producer = spawn_producer(&spec, 1, 0, 2 * PER_PRODUCER, Some(2));

    // Feed the victim until it has visibly consumed, then kill it mid-stream.
    let deadline = Instant::now() + LONG;
    let mut sent = 0u64;
    while victim_channel.info().head < 500 {
        assert!(Instant::now() < deadline, "victim never consumed");
        if victim_channel.send(sent.to_le_bytes()).is_ok() {
            sent += 1;
        }
    }
    // Channel 1 is flowing (its producer sent half and waits at the gate)...
    while stopper.info().head < PER_PRODUCER / 2 {
        assert!(Instant::now() < deadline, "channel 1 never flowed");
        std::thread::sleep(Duration::from_millis(1));
    }
    victim.kill().unwrap(); // SIGKILL
    let status = victim.wait().unwrap();
    assert!(!status.success());

    // ...and keeps flowing after the kill.
    gate.send("go").unwrap();
    expect_success(producer, "channel 1 producer");
    send_stop(&stopper);
    expect_success(consumer, "channel 1 consumer");
    check_exactly_once(&[out.0.as_path()], 1, 2 * PER_PRODUCER);
}

// ---------------------------------------------------------------- blocking ping-pong

const ROUNDS: u64 = 1_000_000;

#[test]
fn blocking_ping_pong_across_processes_completes() {
    let name = ShmName::new("pingpong");
    let spec = Spec::Shm(name.0.clone());
    let ping = spec
        .builder()
        .with_channel_id(0)
        .with_capacity(2)
        .build_producer()
        .unwrap();
    spec.builder()
        .with_channel_id(1)
        .with_capacity(2)
        .build_producer()
        .unwrap();
    let pong = spec.builder().with_channel_id(1).build_consumer().unwrap();
    let echo = spawn_child(
        "child_echo",
        &[
            ("DMXP_T_SPEC", spec.encode()),
            ("DMXP_T_ROUNDS", ROUNDS.to_string()),
        ],
    );
    let started = Instant::now();
    for round in 0..ROUNDS {
        ping.send_timeout(round.to_le_bytes(), LONG).unwrap();
        let message = pong
            .receive_timeout(LONG)
            .unwrap()
            .unwrap_or_else(|| panic!("no pong {round} within {LONG:?} (lost wake-up?)"));
        assert_eq!(message.payload, round.to_le_bytes());
    }
    let elapsed = started.elapsed();
    expect_success(echo, "echo child");
    eprintln!(
        "ping-pong: {ROUNDS} blocking round trips between two processes in {elapsed:.2?} \
         ({:.2} us per round trip), {} futex waits and {} wakes in this process",
        elapsed.as_secs_f64() * 1e6 / ROUNDS as f64,
        dmxp::futex_wait_calls(),
        dmxp::futex_wake_calls()
    );
}

// ---------------------------------------------------------------- memfd and file

#[cfg(feature = "memfd")]
#[test]
fn memfd_segment_passed_to_a_child_which_sends_back() {
    use dmxp::memfd::{MemfdSegment, SegmentServer};
    use std::sync::Arc;
    let segment = Arc::new(MemfdSegment::create("dmxp-pass", 1 << 20).unwrap());
    let builder = ChannelBuilder::new().with_memory(Arc::clone(&segment));
    builder.clone().with_capacity(128).build_producer().unwrap();
    let consumer = builder.build_consumer().unwrap();
    let socket = common::TempPath(common::unique_path("pass.sock"));
    let server = SegmentServer::bind(&socket.0, Arc::clone(&segment))
        .unwrap()
        .spawn();
    let child = spawn_producer(&Spec::MemfdSocket(socket.0.clone()), 0, 0, 1000, None);
    let child_pid = child.id();
    for i in 0..1000u64 {
        let message = consumer
            .receive_timeout(LONG)
            .unwrap()
            .expect("message from the child");
        assert_eq!(pattern::decode(&message.payload), Ok((0, i)));
        assert_eq!(message.meta.sender_pid, child_pid);
        assert_eq!(message.meta.message_id, i);
    }
    expect_success(child, "memfd child");
    assert!(server.served() >= 1);
    server.stop().unwrap();
}

#[cfg(feature = "file")]
#[test]
fn file_segment_keeps_queued_messages_after_every_process_exits() {
    let path = common::TempPath(common::unique_path("persist.seg"));
    let spec = Spec::File(path.0.clone());
    // The child creates the file and the channel, queues 100 messages and exits.
    expect_success(spawn_producer(&spec, 3, 0, 100, None), "file writer");
    // Nobody has the file mapped now; reopen it.
    let consumer = spec.builder().with_channel_id(3).build_consumer().unwrap();
    for i in 0..100u64 {
        let message = consumer
            .receive_with_meta()
            .unwrap()
            .expect("queued message");
        assert_eq!(pattern::decode(&message.payload), Ok((3, i)));
    }
    assert_eq!(consumer.receive().unwrap(), None);
}

#[test]
fn consumer_of_a_missing_segment_fails_with_not_found() {
    let name = common::unique_name("absent");
    let err = Spec::Shm(name.clone())
        .builder()
        .build_consumer()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains(&name), "{err}");
}
