//! Zero-copy blobs (PROTOCOL.md §13) against the copying path, a Unix socket, the cache-line
//! floor and (with `--iceoryx2-peer PATH`) iceoryx2's zero-copy publish-subscribe, measured
//! side by side in one run between two processes pinned to CPUs 0 and 1, both spinning:
//!
//! * **latency** (one-way = round trip / 2, p50 and p99 over `--round-trips` after 200 warm-up
//!   ones) of a message of 32 B, 64 KiB, 1 MiB and 4 MiB:
//!   * `dmxp-blob`: a loaned block whose producer writes the first and last 8-byte words and
//!     whose consumer reads just those, in place, then releases it; the reply is a blob too;
//!   * `dmxp-copy`: `send` of the whole message (runs of slots) and `receive_into` a buffer;
//!   * `iceoryx2-zc`: iceoryx2's `loan_slice_uninit` with the same two words written and read
//!     (`iceoryx2-peer latency --zero-copy`);
//!   * `floor`: one 8-byte word bounced between the two cores through shared memory.
//! * **throughput** of 1 MiB messages in GB/s, every byte written by the producer and read by
//!   the consumer: `dmxp-blob` (written into the block, summed in place), `dmxp-copy` (written
//!   into a buffer, sent, received into a buffer, summed), `uds` (the same over a Unix stream
//!   socket pair, `write_all` / `read_exact`).
//!
//! `cargo run --release -p dmxp-bench --example blob_bench -- [--round-trips N] [--repeat R]
//! [--iceoryx2-peer PATH]` (`scripts/bench-blobs.sh` builds the iceoryx2 peer and runs this).
//! Prints one JSON line per figure of every run, then a table of the medians over the runs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use dmxp::{BlobPoolSpec, ChannelBuilder, Consumer, Producer};
use dmxp_bench::control::pin;

const SIZES: [usize; 4] = [32, 64 << 10, 1 << 20, 4 << 20];
const WARMUP: u64 = 200;
/// Messages of a throughput run: 2 GiB of 1 MiB messages.
const THROUGHPUT_MESSAGES: u64 = 2048;
const MIB: usize = 1 << 20;

#[derive(Parser, Debug)]
struct Args {
    /// Round trips per latency figure (after 200 warm-up ones).
    #[arg(long, default_value_t = 20_000)]
    round_trips: u64,
    /// Repetitions of the whole set (the table shows medians).
    #[arg(long, default_value_t = 3)]
    repeat: u32,
    /// The iceoryx2 peer program (`dmxp-bench/peers/iceoryx2`); without it the iceoryx2
    /// rows are skipped.
    #[arg(long)]
    iceoryx2_peer: Option<PathBuf>,
    /// Child role (internal).
    #[arg(long, hide = true)]
    child: Option<String>,
    #[arg(long, hide = true)]
    segment: Option<String>,
    #[arg(long, hide = true)]
    size: Option<usize>,
}

fn builder(segment: &str, channel: u32) -> ChannelBuilder {
    ChannelBuilder::new()
        .with_segment_name(segment)
        .with_segment_size(128 << 20)
        .with_channel_id(channel)
        .with_capacity(8192)
        .with_max_message_size(4 << 20)
        .with_timeout(Duration::from_secs(20))
        .with_blob_classes(
            BlobPoolSpec::new()
                .with_class(4096, 8)
                .with_class(64 << 10, 8)
                .with_class(1 << 20, 8)
                .with_class(4 << 20, 6),
        )
}

/// Channels: 0 ping and 1 pong of blobs (and copies: a blob channel takes both).
fn ends(segment: &str, ping_side: bool) -> (Producer, Consumer) {
    let (out, back) = if ping_side { (0, 1) } else { (1, 0) };
    let producer = builder(segment, out).build_producer().expect("producer");
    let consumer = builder(segment, back).build_consumer().expect("consumer");
    (producer, consumer)
}

fn send_blob(producer: &Producer, len: usize, seq: u64) {
    let mut loan = loop {
        match producer.loan_blob(len) {
            Ok(loan) => break loan,
            Err(_) => std::hint::spin_loop(),
        }
    };
    let words = len.div_ceil(8);
    let bytes = loan.bytes();
    assert!(bytes.set_word(0, seq) && bytes.set_word(words - 1, seq));
    loan.commit().expect("commit");
}

fn receive_blob(consumer: &Consumer, seq: u64) {
    loop {
        if let Some(message) = consumer.receive_blob().expect("receive") {
            let bytes = message.bytes().expect("a blob");
            let last = message.len().div_ceil(8) - 1;
            assert_eq!((bytes.word(0), bytes.word(last)), (Some(seq), Some(seq)));
            message.release().expect("release");
            return;
        }
        std::hint::spin_loop();
    }
}

fn send_copy(producer: &Producer, buf: &mut [u8], seq: u64) {
    let n = buf.len();
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[n - 8..].copy_from_slice(&seq.to_le_bytes());
    while producer.send(&*buf).is_err() {
        std::hint::spin_loop();
    }
}

fn receive_copy(consumer: &Consumer, buf: &mut [u8], seq: u64) {
    loop {
        if let Some((_, n)) = consumer.receive_into(buf).expect("receive") {
            assert_eq!(n, buf.len());
            assert_eq!(&buf[..8], &seq.to_le_bytes());
            return;
        }
        std::hint::spin_loop();
    }
}

/// The floor's two words: channel 9's first slot payload, two cache lines apart.
fn floor_words(segment: &str) -> (dmxp::SharedMemoryAllocator, u64) {
    let allocator = builder(segment, 9)
        .with_capacity(2)
        .with_max_message_size(0)
        .attach_allocator()
        .expect("allocator");
    let channel = allocator
        .channels()
        .into_iter()
        .find(|c| c.id == 9)
        .expect("channel 9 made by the parent");
    (allocator, channel.band_offset + 64)
}

fn word(allocator: &dmxp::SharedMemoryAllocator, offset: u64) -> &AtomicU64 {
    allocator
        .memory()
        .region()
        .view::<AtomicU64>(offset as usize)
        .expect("inside the segment")
}

fn child(args: &Args) {
    pin(Some(1));
    let segment = args.segment.as_deref().expect("--segment");
    let size = args.size.unwrap_or(32);
    match args.child.as_deref() {
        Some("blob") => {
            let (tx, rx) = ends(segment, false);
            for seq in 0..WARMUP + args.round_trips {
                receive_blob(&rx, seq);
                send_blob(&tx, size, seq);
            }
        }
        Some("copy") => {
            let (tx, rx) = ends(segment, false);
            let mut buf = vec![0u8; size];
            for seq in 0..WARMUP + args.round_trips {
                receive_copy(&rx, &mut buf, seq);
                send_copy(&tx, &mut buf, seq);
            }
        }
        Some("floor") => {
            let (allocator, at) = floor_words(segment);
            let (ping, pong) = (word(&allocator, at), word(&allocator, at + 128));
            for seq in 1..=WARMUP + args.round_trips {
                while ping.load(Ordering::Acquire) != seq {
                    std::hint::spin_loop();
                }
                pong.store(seq, Ordering::Release);
            }
        }
        Some("blob-sink") => {
            let rx = builder(segment, 2).build_consumer().expect("consumer");
            let done = builder(segment, 3).build_producer().expect("producer");
            let mut sum = 0u64;
            for _ in 0..THROUGHPUT_MESSAGES {
                let message = loop {
                    if let Some(m) = rx.receive_blob().expect("receive") {
                        break m;
                    }
                    std::hint::spin_loop();
                };
                let bytes = message.bytes().expect("a blob");
                sum = bytes.words().fold(sum, u64::wrapping_add);
                message.release().expect("release");
            }
            done.send(sum.to_le_bytes()).expect("done");
        }
        Some("copy-sink") => {
            let rx = builder(segment, 4).build_consumer().expect("consumer");
            let done = builder(segment, 3).build_producer().expect("producer");
            let mut buf = vec![0u8; MIB];
            let mut sum = 0u64;
            for _ in 0..THROUGHPUT_MESSAGES {
                loop {
                    if rx.receive_into(&mut buf).expect("receive").is_some() {
                        break;
                    }
                    std::hint::spin_loop();
                }
                sum = sum.wrapping_add(sum_words(&buf));
            }
            done.send(sum.to_le_bytes()).expect("done");
        }
        other => panic!("unknown child role {other:?}"),
    }
}

fn sum_words(buf: &[u8]) -> u64 {
    buf.chunks_exact(8).fold(0u64, |s, w| {
        s.wrapping_add(u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
    })
}

fn spawn(role: &str, segment: &str, size: usize, round_trips: u64) -> std::process::Child {
    Command::new(std::env::current_exe().expect("exe"))
        .args(["--child", role, "--segment", segment])
        .args([
            "--size",
            &size.to_string(),
            "--round-trips",
            &round_trips.to_string(),
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn child")
}

/// p50 and p99 of one-way latency (round trip / 2) in µs.
fn percentiles(mut rtts: Vec<u64>) -> (f64, f64) {
    rtts.sort_unstable();
    let at = |q: f64| rtts[((rtts.len() - 1) as f64 * q).round() as usize] as f64 / 2000.0;
    (at(0.50), at(0.99))
}

fn latency(system: &str, segment: &str, size: usize, round_trips: u64) -> (f64, f64) {
    let mut rtts = Vec::with_capacity(round_trips as usize);
    match system {
        "dmxp-blob" | "dmxp-copy" => {
            let (tx, rx) = ends(segment, true);
            let role = if system == "dmxp-blob" {
                "blob"
            } else {
                "copy"
            };
            let mut child = spawn(role, segment, size, round_trips);
            let mut buf = vec![0u8; size];
            let mut last = Instant::now();
            for seq in 0..WARMUP + round_trips {
                if role == "blob" {
                    send_blob(&tx, size, seq);
                    receive_blob(&rx, seq);
                } else {
                    send_copy(&tx, &mut buf, seq);
                    receive_copy(&rx, &mut buf, seq);
                }
                let now = Instant::now();
                if seq >= WARMUP {
                    rtts.push((now - last).as_nanos() as u64);
                }
                last = now;
            }
            assert!(child.wait().expect("child").success());
        }
        "floor" => {
            let (allocator, at) = floor_words(segment);
            let (ping, pong) = (word(&allocator, at), word(&allocator, at + 128));
            ping.store(0, Ordering::Relaxed);
            pong.store(0, Ordering::Relaxed);
            let mut child = spawn("floor", segment, size, round_trips);
            let mut last = Instant::now();
            for seq in 1..=WARMUP + round_trips {
                ping.store(seq, Ordering::Release);
                while pong.load(Ordering::Acquire) != seq {
                    std::hint::spin_loop();
                }
                let now = Instant::now();
                if seq > WARMUP {
                    rtts.push((now - last).as_nanos() as u64);
                }
                last = now;
            }
            assert!(child.wait().expect("child").success());
        }
        other => panic!("unknown system {other}"),
    }
    percentiles(rtts)
}

#[derive(serde::Deserialize)]
struct PeerLatency {
    p50_ns: f64,
    p99_ns: f64,
}

fn iceoryx2_latency(peer: &PathBuf, size: usize, round_trips: u64) -> Option<(f64, f64)> {
    let out = Command::new(peer)
        .args(["latency", "--zero-copy", "--payload", &size.to_string()])
        .args(["--round-trips", &round_trips.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{'))?;
    let parsed: PeerLatency = serde_json::from_str(line).ok()?;
    Some((parsed.p50_ns / 1000.0, parsed.p99_ns / 1000.0))
}

/// GB/s (10⁹ bytes per second) of 1 MiB messages, every byte written and read.
fn throughput(system: &str, segment: &str) -> f64 {
    let bytes = THROUGHPUT_MESSAGES as f64 * MIB as f64;
    let started;
    match system {
        "dmxp-blob" => {
            let tx = builder(segment, 2).build_producer().expect("producer");
            let done = builder(segment, 3).build_consumer().expect("consumer");
            let mut child = spawn("blob-sink", segment, MIB, 0);
            started = Instant::now();
            let chunk = vec![0x5Au8; 64 << 10];
            for _ in 0..THROUGHPUT_MESSAGES {
                let mut loan = loop {
                    match tx.loan_blob(MIB) {
                        Ok(loan) => break loan,
                        Err(_) => std::hint::spin_loop(),
                    }
                };
                let written = loan
                    .bytes()
                    .write_chunks(std::iter::repeat_n(&chunk[..], MIB / chunk.len()));
                assert_eq!(written, MIB);
                loan.commit().expect("commit");
            }
            done.receive_timeout(Duration::from_secs(60))
                .expect("done")
                .expect("done");
            assert!(child.wait().expect("child").success());
        }
        "dmxp-copy" => {
            let tx = builder(segment, 4).build_producer().expect("producer");
            let done = builder(segment, 3).build_consumer().expect("consumer");
            let mut child = spawn("copy-sink", segment, MIB, 0);
            started = Instant::now();
            let mut buf = vec![0u8; MIB];
            for _ in 0..THROUGHPUT_MESSAGES {
                buf.fill(0x5A);
                tx.send_blocking(&buf).expect("send");
            }
            done.receive_timeout(Duration::from_secs(60))
                .expect("done")
                .expect("done");
            assert!(child.wait().expect("child").success());
        }
        "uds" => {
            let (mut a, mut b) = UnixStream::pair().expect("socket pair");
            let sink = std::thread::spawn(move || {
                pin(Some(1));
                let mut buf = vec![0u8; MIB];
                let mut sum = 0u64;
                for _ in 0..THROUGHPUT_MESSAGES {
                    b.read_exact(&mut buf).expect("read");
                    sum = sum.wrapping_add(sum_words(&buf));
                }
                b.write_all(&sum.to_le_bytes()).expect("done");
            });
            started = Instant::now();
            let mut buf = vec![0u8; MIB];
            for _ in 0..THROUGHPUT_MESSAGES {
                buf.fill(0x5A);
                a.write_all(&buf).expect("write");
            }
            let mut done = [0u8; 8];
            a.read_exact(&mut done).expect("done");
            sink.join().expect("sink");
        }
        other => panic!("unknown system {other}"),
    }
    bytes / started.elapsed().as_secs_f64() / 1e9
}

fn main() {
    let args = Args::parse();
    if args.child.is_some() {
        child(&args);
        return;
    }
    pin(Some(0));
    let segment = format!("/dmxp_blob_bench_{}", std::process::id());
    let _ = dmxp::unlink_segment(&segment);
    // Make the segment and every channel first (the floor's channel 9 included).
    for channel in [0, 1, 2, 3, 4] {
        builder(&segment, channel)
            .build_producer()
            .expect("channel");
    }
    builder(&segment, 9)
        .with_capacity(2)
        .with_max_message_size(0)
        .build_producer()
        .expect("channel 9");

    let mut systems = vec!["dmxp-blob", "dmxp-copy", "floor"];
    if args.iceoryx2_peer.is_some() {
        systems.insert(1, "iceoryx2-zc");
    }
    // Every figure of every repetition, run in turn so that a slow spell of the machine
    // lands on all systems alike; the table shows medians.
    let mut latencies: BTreeMap<(&str, usize), Vec<(f64, f64)>> = BTreeMap::new();
    let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for run in 1..=args.repeat {
        eprintln!("blob_bench: run {run} of {}", args.repeat);
        for size in SIZES {
            for system in &systems {
                if *system == "floor" && size != SIZES[0] {
                    continue;
                }
                let figures = if *system == "iceoryx2-zc" {
                    let peer = args.iceoryx2_peer.as_ref().expect("peer");
                    iceoryx2_latency(peer, size, args.round_trips)
                } else {
                    Some(latency(system, &segment, size, args.round_trips))
                };
                match figures {
                    Some((p50, p99)) => {
                        println!(
                            "{{\"kind\":\"latency\",\"run\":{run},\"system\":\"{system}\",\"size\":{size},\"p50_us\":{p50:.3},\"p99_us\":{p99:.3}}}"
                        );
                        latencies
                            .entry((system, size))
                            .or_default()
                            .push((p50, p99));
                    }
                    None => eprintln!("blob_bench: {system} at {size} B failed"),
                }
            }
        }
        for system in ["dmxp-blob", "dmxp-copy", "uds"] {
            let gbps = throughput(system, &segment);
            println!(
                "{{\"kind\":\"throughput\",\"run\":{run},\"system\":\"{system}\",\"size\":{MIB},\"gb_per_s\":{gbps:.3}}}"
            );
            rates.entry(system).or_default().push(gbps);
        }
        std::io::stdout().flush().ok();
    }

    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let p50 = |system: &str, size: usize| {
        latencies
            .get(&(system, size))
            .map(|v| median(v.iter().map(|f| f.0).collect()))
    };
    println!(
        "\none-way latency (round trip / 2) in µs, medians of {} runs of {} round trips",
        args.repeat, args.round_trips
    );
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "system", "size", "p50", "p99", "p50/32B", "p50/floor"
    );
    let floor = p50("floor", SIZES[0]);
    for size in SIZES {
        for system in &systems {
            let Some(runs) = latencies.get(&(*system, size)) else {
                continue;
            };
            let (a, b) = (
                median(runs.iter().map(|f| f.0).collect()),
                median(runs.iter().map(|f| f.1).collect()),
            );
            let small = p50(system, SIZES[0]).map_or("-".into(), |s| format!("{:.2}", a / s));
            let vs_floor = floor.map_or("-".into(), |f| format!("{:.2}", a / f));
            println!("{system:<12} {size:>9} {a:>9.2} {b:>9.2} {small:>10} {vs_floor:>9}");
        }
    }
    println!("\nthroughput of 1 MiB messages, every byte written and read, GB/s (medians)");
    for (system, runs) in rates {
        println!("{system:<12} {:>8.2}", median(runs));
    }
    let _ = dmxp::unlink_segment(&segment);
}
