//! Threaded stress of one channel: several producers and consumers, many laps of a small ring.
//!
//! Every payload carries its producer and sequence number, a length and filler derived from
//! them, and a checksum of the rest. Consumers verify each message, and at the end the test
//! checks that every (producer, sequence) arrived exactly once, that each consumer saw each
//! producer's messages in increasing order, and that the `message_id`s are distinct positions.
//!
//! `DMXP_STRESS_MESSAGES` overrides the message count of the main test (default 1,000,000;
//! the mixed test uses a fifth of it). Under Miri the single-ops test shrinks to 2 × 2 threads
//! and 200 messages on a 4-slot ring, and the mixed test is skipped.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::SegmentBuf;
use dmxp_nostd::layout::{runtime, MSG_INLINE};
use dmxp_nostd::{Channel, MessageMeta, RecvError, Segment, SendError, SendMeta};

const PID: u32 = 777;
const CHANNEL_ID: u32 = 9;
/// Small, so the ring wraps tens of thousands of times.
const CAPACITY: u64 = if cfg!(miri) { 4 } else { 64 };
/// Bytes before the filler: producer (u32), sequence (u64).
const HEADER_BYTES: usize = 12;
/// The checksum closes every payload.
const CHECKSUM_BYTES: usize = 8;
/// A run that makes no progress for this long is reported as stalled instead of hanging CI.
const STALL_LIMIT: Duration = Duration::from_secs(120);

struct Plan {
    producers: usize,
    consumers: usize,
    per_producer: u64,
}

impl Plan {
    fn new(default_total: u64) -> Self {
        if cfg!(miri) {
            return Self {
                producers: 2,
                consumers: 2,
                per_producer: 100,
            };
        }
        let total = std::env::var("DMXP_STRESS_MESSAGES")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(default_total, |main| main * default_total / MAIN_TOTAL);
        Self {
            producers: 4,
            consumers: 4,
            per_producer: (total / 4).max(1),
        }
    }

    fn total(&self) -> u64 {
        self.producers as u64 * self.per_producer
    }
}

const MAIN_TOTAL: u64 = 1_000_000;

// ------------------------------------------------------------------------------ payloads

/// Length of message `seq` of `producer`: mostly short, every 1000th the full 960 bytes.
fn payload_len(producer: u32, seq: u64) -> usize {
    if seq % 1000 == 999 {
        MSG_INLINE
    } else {
        HEADER_BYTES + CHECKSUM_BYTES + ((seq * 7 + u64::from(producer) * 13) % 81) as usize
    }
}

fn checksum(bytes: &[u8]) -> u64 {
    // FNV-1a, 64-bit.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Writes message `seq` of `producer` into `out`; returns its length.
fn encode(producer: u32, seq: u64, out: &mut [u8; MSG_INLINE]) -> usize {
    let len = payload_len(producer, seq);
    out[..4].copy_from_slice(&producer.to_le_bytes());
    out[4..12].copy_from_slice(&seq.to_le_bytes());
    let body_end = len - CHECKSUM_BYTES;
    for (i, byte) in out[HEADER_BYTES..body_end].iter_mut().enumerate() {
        *byte = (seq as u8).wrapping_mul(31) ^ (i as u8) ^ (producer as u8).wrapping_mul(101);
    }
    let sum = checksum(&out[..body_end]);
    out[body_end..len].copy_from_slice(&sum.to_le_bytes());
    len
}

fn send_meta(producer: u32) -> SendMeta {
    SendMeta {
        message_type: producer,
        flags: 0x0100 << producer,
        timestamp_ns: 0,
        sender_pid: PID + producer,
        sender_runtime: runtime::RUST,
    }
}

// ------------------------------------------------------------------------------ shared state

struct Shared {
    plan: Plan,
    /// One counter per (producer, seq): how often it was received.
    seen: Vec<AtomicU8>,
    received: AtomicU64,
    /// Positions published as skip markers (dropped loans).
    skips: AtomicU64,
    /// Set on the first failure or a stall; every loop stops.
    abort: AtomicBool,
    errors: Mutex<Vec<String>>,
    started: Instant,
    last_progress_ms: AtomicU64,
}

impl Shared {
    fn new(plan: Plan) -> Self {
        let seen = (0..plan.total()).map(|_| AtomicU8::new(0)).collect();
        Self {
            plan,
            seen,
            received: AtomicU64::new(0),
            skips: AtomicU64::new(0),
            abort: AtomicBool::new(false),
            errors: Mutex::new(Vec::new()),
            started: Instant::now(),
            last_progress_ms: AtomicU64::new(0),
        }
    }

    fn fail(&self, message: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 20 {
            errors.push(message);
        }
        self.abort.store(true, Relaxed);
    }

    fn progress(&self) {
        self.last_progress_ms
            .store(self.started.elapsed().as_millis() as u64, Relaxed);
    }

    /// Waits a little after `Full`/`Empty`; false when the run must stop.
    fn back_off(&self, idle: &mut u32) -> bool {
        if self.abort.load(Relaxed) {
            return false;
        }
        *idle += 1;
        if *idle < 32 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        if (*idle).is_multiple_of(4096) {
            let now = self.started.elapsed().as_millis() as u64;
            let last = self.last_progress_ms.load(Relaxed);
            if now.saturating_sub(last) > STALL_LIMIT.as_millis() as u64 {
                self.fail(format!(
                    "no progress for {STALL_LIMIT:?}: received {} of {}",
                    self.received.load(Relaxed),
                    self.plan.total()
                ));
                return false;
            }
        }
        true
    }

    fn done(&self) -> bool {
        self.received.load(Relaxed) >= self.plan.total() || self.abort.load(Relaxed)
    }
}

/// What one consumer saw.
struct ConsumerLog {
    message_ids: Vec<u64>,
    /// Last sequence number seen from each producer.
    last_seq: Vec<Option<u64>>,
}

impl ConsumerLog {
    fn new(producers: usize) -> Self {
        Self {
            message_ids: Vec::new(),
            last_seq: vec![None; producers],
        }
    }

    /// Verifies one received message and records it.
    fn accept(&mut self, shared: &Shared, meta: &MessageMeta, payload: &[u8]) {
        if let Err(problem) = self.check(shared, meta, payload) {
            shared.fail(format!("message {}: {problem}", meta.message_id));
            return;
        }
        self.message_ids.push(meta.message_id);
        shared.received.fetch_add(1, Relaxed);
        shared.progress();
    }

    fn check(&mut self, shared: &Shared, meta: &MessageMeta, payload: &[u8]) -> Result<(), String> {
        if payload.len() < HEADER_BYTES + CHECKSUM_BYTES {
            return Err(format!("payload of {} bytes is too short", payload.len()));
        }
        let body_end = payload.len() - CHECKSUM_BYTES;
        let stored = u64::from_le_bytes(payload[body_end..].try_into().unwrap());
        if checksum(&payload[..body_end]) != stored {
            return Err("checksum mismatch".into());
        }
        let producer = u32::from_le_bytes(payload[..4].try_into().unwrap());
        let seq = u64::from_le_bytes(payload[4..12].try_into().unwrap());
        if producer as usize >= shared.plan.producers || seq >= shared.plan.per_producer {
            return Err(format!("unknown message ({producer}, {seq})"));
        }
        let mut expected = [0u8; MSG_INLINE];
        let len = encode(producer, seq, &mut expected);
        if payload != &expected[..len] {
            return Err(format!(
                "payload of ({producer}, {seq}) differs from what was sent"
            ));
        }
        let want = send_meta(producer);
        let got = (
            meta.channel_id,
            meta.message_type,
            meta.sender_pid,
            meta.sender_runtime,
            meta.flags,
            meta.payload_len as usize,
        );
        let wanted = (
            CHANNEL_ID,
            want.message_type,
            want.sender_pid,
            want.sender_runtime,
            want.flags,
            len,
        );
        if got != wanted {
            return Err(format!("meta {got:?}, expected {wanted:?}"));
        }
        let last = &mut self.last_seq[producer as usize];
        if last.is_some_and(|last| last >= seq) {
            return Err(format!(
                "producer {producer}: sequence {seq} after {last:?} (order broken)"
            ));
        }
        *last = Some(seq);
        let index = producer as u64 * shared.plan.per_producer + seq;
        let before = shared.seen[index as usize].fetch_add(1, Relaxed);
        if before != 0 {
            return Err(format!("({producer}, {seq}) received twice"));
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------ producers

/// Sends every message of `producer` with single `try_send`s.
fn produce_single(channel: &Channel<'_>, shared: &Shared, producer: u32) {
    let meta = send_meta(producer);
    let mut buf = [0u8; MSG_INLINE];
    let mut idle = 0;
    let mut seq = 0;
    while seq < shared.plan.per_producer {
        let len = encode(producer, seq, &mut buf);
        match channel.try_send(&buf[..len], &meta) {
            Ok(_) => {
                seq += 1;
                idle = 0;
            }
            Err(SendError::Full) => {
                if !shared.back_off(&mut idle) {
                    return;
                }
            }
            Err(error) => return shared.fail(format!("producer {producer}: {error:?}")),
        }
    }
}

/// Sends every message of `producer`, rotating through batches, single sends, committed
/// loans, and now and then a dropped loan (a skip marker consumers must pass over).
fn produce_mixed(channel: &Channel<'_>, shared: &Shared, producer: u32) {
    let meta = send_meta(producer);
    let mut bufs = vec![[0u8; MSG_INLINE]; 8];
    let mut idle = 0;
    let mut seq = 0;
    let mut step = 0u64;
    while seq < shared.plan.per_producer {
        step += 1;
        let left = shared.plan.per_producer - seq;
        let outcome = match step % 4 {
            0 | 1 => {
                let count = (1 + (step / 4 + u64::from(producer)) % 8).min(left) as usize;
                let mut lens = [0usize; 8];
                for (i, buf) in bufs.iter_mut().take(count).enumerate() {
                    lens[i] = encode(producer, seq + i as u64, buf);
                }
                let payloads: Vec<&[u8]> = bufs
                    .iter()
                    .zip(lens)
                    .take(count)
                    .map(|(buf, len)| &buf[..len])
                    .collect();
                channel.try_send_batch(&payloads, &meta).map(|n| n as u64)
            }
            2 => {
                let len = encode(producer, seq, &mut bufs[0]);
                channel.try_send(&bufs[0][..len], &meta).map(|_| 1)
            }
            _ => match channel.try_loan() {
                Ok(mut loan) if step % 64 == 3 => {
                    // Scribble, then drop without commit: a skip marker.
                    assert!(loan.payload().write_at(0, &[0xEE; 40]));
                    drop(loan);
                    shared.skips.fetch_add(1, Relaxed);
                    Ok(0)
                }
                Ok(mut loan) => {
                    let len = encode(producer, seq, &mut bufs[0]);
                    // Written in two uneven parts, as a serialiser might.
                    let split = len / 3;
                    let mut payload = loan.payload();
                    let written = payload.write_at(0, &bufs[0][..split])
                        && payload.write_at(split, &bufs[0][split..len]);
                    if !written {
                        return shared.fail(format!("producer {producer}: loan write refused"));
                    }
                    loan.commit(len, &meta).map(|_| 1)
                }
                Err(error) => Err(error),
            },
        };
        match outcome {
            Ok(sent) => {
                seq += sent;
                idle = 0;
            }
            Err(SendError::Full) => {
                if !shared.back_off(&mut idle) {
                    return;
                }
            }
            Err(error) => return shared.fail(format!("producer {producer}: {error:?}")),
        }
    }
}

// ------------------------------------------------------------------------------ consumers

fn consume_single(channel: &Channel<'_>, shared: &Shared) -> ConsumerLog {
    let mut log = ConsumerLog::new(shared.plan.producers);
    let mut buf = [0u8; MSG_INLINE];
    let mut idle = 0;
    while !shared.done() {
        match channel.try_recv(&mut buf) {
            Ok(received) => {
                log.accept(shared, &received.meta, &buf[..received.len]);
                idle = 0;
            }
            Err(RecvError::Empty | RecvError::Pending { .. }) => {
                if !shared.back_off(&mut idle) {
                    break;
                }
            }
            Err(error) => shared.fail(format!("consumer: {error:?}")),
        }
    }
    log
}

/// Rotates through batch receives, single receives and in-place receives.
fn consume_mixed(channel: &Channel<'_>, shared: &Shared, consumer: usize) -> ConsumerLog {
    let mut log = ConsumerLog::new(shared.plan.producers);
    let mut buf = [0u8; MSG_INLINE];
    let mut idle = 0;
    let mut step = consumer as u64;
    while !shared.done() {
        step += 1;
        let outcome = match step % 3 {
            0 => channel
                .try_recv_batch(1 + (step % 11) as usize, |meta, payload| {
                    log.accept(shared, meta, payload)
                })
                .map(|batch| {
                    if batch.dropped != 0 {
                        shared.fail(format!("batch dropped {} positions", batch.dropped));
                    }
                }),
            1 => channel.try_recv(&mut buf).map(|received| {
                log.accept(shared, &received.meta, &buf[..received.len]);
            }),
            _ => channel.try_recv_in_place().map(|guard| {
                let len = guard.payload().copy_to(&mut buf);
                let meta = *guard.meta();
                drop(guard);
                log.accept(shared, &meta, &buf[..len]);
            }),
        };
        match outcome {
            Ok(()) => idle = 0,
            Err(RecvError::Empty | RecvError::Pending { .. }) => {
                if !shared.back_off(&mut idle) {
                    break;
                }
            }
            Err(error) => shared.fail(format!("consumer {consumer}: {error:?}")),
        }
    }
    log
}

// ------------------------------------------------------------------------------ the runs

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Single,
    Mixed,
}

fn run(mode: Mode, default_total: u64) {
    let shared = Shared::new(Plan::new(default_total));
    let mut memory = SegmentBuf::for_capacities(&[CAPACITY]);
    let segment = Segment::format(memory.region(), PID).unwrap();
    let channel = segment.create_channel(CHANNEL_ID, CAPACITY, PID).unwrap();

    let logs: Vec<ConsumerLog> = std::thread::scope(|scope| {
        for producer in 0..shared.plan.producers as u32 {
            let (channel, shared) = (&channel, &shared);
            scope.spawn(move || match mode {
                Mode::Single => produce_single(channel, shared, producer),
                Mode::Mixed => produce_mixed(channel, shared, producer),
            });
        }
        let consumers: Vec<_> = (0..shared.plan.consumers)
            .map(|consumer| {
                let (channel, shared) = (&channel, &shared);
                scope.spawn(move || match mode {
                    Mode::Single => consume_single(channel, shared),
                    Mode::Mixed => consume_mixed(channel, shared, consumer),
                })
            })
            .collect();
        consumers
            .into_iter()
            .map(|handle| handle.join().expect("consumer panicked"))
            .collect()
    });

    let errors = shared.errors.lock().unwrap();
    assert!(errors.is_empty(), "failures: {errors:#?}");
    drop(errors);
    let total = shared.plan.total();
    assert_eq!(shared.received.load(Relaxed), total);

    // Exactly once: every (producer, seq) counted once, none missing.
    let missing = shared.seen.iter().filter(|s| s.load(Relaxed) == 0).count();
    assert_eq!(missing, 0, "{missing} messages never arrived");
    assert!(shared.seen.iter().all(|s| s.load(Relaxed) == 1));

    // Per-producer order was checked per consumer as each message arrived. Positions:
    let mut ids: Vec<u64> = logs
        .iter()
        .flat_map(|log| log.message_ids.iter().copied())
        .collect();
    for log in &logs {
        assert!(
            log.message_ids.windows(2).all(|w| w[0] < w[1]),
            "a consumer's message ids went backwards"
        );
    }
    ids.sort_unstable();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "a message id was delivered twice"
    );
    let positions = total + shared.skips.load(Relaxed);
    assert_eq!(channel.tail(), positions, "tail = messages + skip markers");
    assert_eq!(channel.head(), positions, "every position consumed");
    assert!(ids.iter().all(|&id| id < positions));
    if mode == Mode::Single {
        // No skip markers: the ids are exactly the positions 0..total.
        assert!(ids.iter().copied().eq(0..total));
    }
    assert_eq!(
        channel.try_recv(&mut [0u8; MSG_INLINE]),
        Err(RecvError::Empty)
    );
}

/// 4 producers × 4 consumers, single sends and receives, 10⁶ messages through 64 slots.
#[test]
fn four_by_four_single_ops() {
    run(Mode::Single, MAIN_TOTAL);
}

/// 4 × 4 mixing batches, loans (some dropped), single and in-place receives, 2 × 10⁵ messages.
/// Runs natively only: under Miri the single-ops test covers the threaded path, and each
/// segment format costs minutes there.
#[test]
#[cfg_attr(miri, ignore)]
fn four_by_four_mixed_ops() {
    run(Mode::Mixed, MAIN_TOTAL / 5);
}
