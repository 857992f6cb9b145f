//! The child processes: producers, consumers, and the two ends of a ping-pong, for every
//! system that crosses a process boundary (DMXP, Unix socket, pipe, the floor). The
//! in-process `ArrayQueue` runs live in the private module `inproc`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering::{Acquire, Release};
use std::time::{Duration, Instant};

use dmxp::{monotonic_ns, Consumer, ErrorKind, Producer, SharedMemoryAllocator};
use rustix::net::{RecvFlags, SendFlags};
use rustix::thread::futex;

use crate::bare_ring::{first_word, BareRing};
use crate::control::{Backoff, Control};
use crate::spec::{ChildResult, ChildSpec, Mode, Percentiles, Role, System, BATCH};

/// The benchmark's result type: any error, reported as a message (a child's error ends its
/// process, a parent's ends the run).
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How long a child waits for the parent's go before giving up.
const GO_LIMIT: Duration = Duration::from_secs(60);
/// Round trips run before latency samples are kept.
pub(crate) const WARMUP: u64 = 200;
/// Latency samples kept at most (the run stops when it has them).
pub(crate) const MAX_SAMPLES: usize = 2_000_000;
/// Payload length that tells a DMXP pong to stop (real payloads are at least 8 bytes).
pub(crate) const STOP_LEN: usize = 1;

/// Runs the child described by `spec_json` and writes its result file.
pub fn run(spec_json: &str) -> Res<()> {
    let spec: ChildSpec = serde_json::from_str(spec_json)?;
    let result = if spec.role == Role::InProcess {
        crate::inproc::run(&spec)?
    } else {
        crate::control::pin(spec.cpu);
        let allocator = crate::control::attach(&spec.segment)?;
        let region = allocator.memory().region();
        let control = Control::new(region).ok_or("segment too small for the control block")?;
        let (wake, wait) = (dmxp::futex_wake_calls(), dmxp::futex_wait_calls());
        let mut result = match spec.role {
            _ if spec.large => crate::large::child(&spec, &control, &allocator)?,
            _ if spec.tokio => crate::async_latency::child(&spec, &control, &allocator)?,
            Role::Producer => producer(&spec, &control, &allocator)?,
            Role::Consumer => consumer(&spec, &control, &allocator)?,
            Role::Ping => ping(&spec, &control, &allocator)?,
            Role::Pong => pong(&spec, &control, &allocator)?,
            Role::Memcpy => return Err("memcpy runs belong to the large-message benchmark".into()),
            Role::InProcess => unreachable!("handled above"),
        };
        result.futex_wake = dmxp::futex_wake_calls() - wake;
        result.futex_wait = dmxp::futex_wait_calls() - wait;
        result
    };
    std::fs::write(&spec.out, serde_json::to_vec(&result)?)?;
    Ok(())
}

pub(crate) fn start(control: &Control<'_>) -> Res<u64> {
    control.announce_ready();
    if !control.wait_go(GO_LIMIT) {
        return Err("no go from the parent".into());
    }
    Ok(monotonic_ns())
}

/// A full ring (or a lost race under contention) is retried; anything else is an error.
pub(crate) fn retryable(e: &dmxp::Error) -> bool {
    matches!(e.kind(), ErrorKind::Full | ErrorKind::Busy)
}

/// Writes the message counter into the first bytes of a payload, as a real sender would
/// write a header.
pub(crate) fn stamp(payload: &mut [u8], n: u64) {
    let bytes = n.to_le_bytes();
    let len = payload.len().min(8);
    payload[..len].copy_from_slice(&bytes[..len]);
}

/// stdin (or stdout) as an owned descriptor, for the pipe and socket ends the parent passed.
pub(crate) fn stdio_fd(stdout: bool) -> Res<OwnedFd> {
    let fd = if stdout {
        std::io::stdout().as_fd().try_clone_to_owned()?
    } else {
        std::io::stdin().as_fd().try_clone_to_owned()?
    };
    Ok(fd)
}

// ------------------------------------------------------------------------------ throughput

fn producer(
    spec: &ChildSpec,
    control: &Control<'_>,
    alloc: &SharedMemoryAllocator,
) -> Res<ChildResult> {
    let quota = spec.messages.unwrap_or(u64::MAX);
    let mut payloads = vec![vec![0x5Au8; spec.payload]; BATCH];
    let mut sent = 0u64;
    let mut calls = 0u64;
    let mut checksum = 0u64;
    let mut backoff = Backoff::default();
    let begin;
    match spec.system {
        System::DmxpSingle | System::DmxpBatch | System::DmxpLoan | System::DmxpInPlace => {
            let producer = alloc.producer(spec.channel)?;
            begin = start(control)?;
            while sent < quota && !control.stopped() {
                let outcome = match spec.system {
                    System::DmxpSingle | System::DmxpInPlace => {
                        stamp(&mut payloads[0], sent);
                        producer.send(&payloads[0]).map(|_| 1)
                    }
                    System::DmxpBatch => {
                        let n = (quota - sent).min(BATCH as u64) as usize;
                        for (k, payload) in payloads[..n].iter_mut().enumerate() {
                            stamp(payload, sent + k as u64);
                        }
                        producer.send_batch(&payloads[..n])
                    }
                    _ => producer.loan().and_then(|mut loan| {
                        stamp(&mut payloads[0], sent);
                        // A payload is at most MSG_INLINE bytes (checked by `run`): it fits.
                        let _ = loan.write_at(0, &payloads[0]);
                        loan.commit(spec.payload).map(|_| 1)
                    }),
                };
                match outcome {
                    Ok(n) => {
                        sent += n as u64;
                        calls += 1;
                        backoff.reset();
                    }
                    Err(e) if retryable(&e) => backoff.snooze(),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        System::Uds => {
            let socket = stdio_fd(false)?;
            begin = start(control)?;
            while sent < quota && !control.stopped() {
                stamp(&mut payloads[0], sent);
                rustix::net::send(&socket, &payloads[0], SendFlags::empty())?;
                sent += 1;
            }
        }
        System::Pipe => {
            let mut pipe = File::from(stdio_fd(true)?);
            begin = start(control)?;
            while sent < quota && !control.stopped() {
                stamp(&mut payloads[0], sent);
                pipe.write_all(&payloads[0])?;
                sent += 1;
            }
        }
        System::BareRing => {
            let ring = bare_ring(alloc, spec, 0)?;
            begin = start(control)?;
            while sent < quota && !control.stopped() {
                stamp(&mut payloads[0], sent);
                if ring.try_send(&payloads[0]) {
                    checksum = checksum.wrapping_add(sent);
                    sent += 1;
                    backoff.reset();
                } else {
                    backoff.snooze();
                }
            }
        }
        System::Floor => return floor_spin(spec, control, true),
        System::ArrayQueue => return Err("ArrayQueue runs in one process".into()),
        System::Iceoryx2 => return Err(PEER_ONLY.into()),
    }
    let end = monotonic_ns();
    control.producer_done(spec.channel, sent);
    Ok(ChildResult {
        messages: sent,
        start_ns: begin,
        end_ns: end,
        calls,
        checksum,
        ..ChildResult::default()
    })
}

fn consumer(
    spec: &ChildSpec,
    control: &Control<'_>,
    alloc: &SharedMemoryAllocator,
) -> Res<ChildResult> {
    let mut buf = vec![0u8; dmxp::MSG_INLINE];
    let mut got = 0u64;
    let mut calls = 0u64;
    let mut sink = 0u64;
    let mut checksum = 0u64;
    let mut backoff = Backoff::default();
    let begin;
    match spec.system {
        System::DmxpSingle | System::DmxpBatch | System::DmxpLoan | System::DmxpInPlace => {
            let consumer = alloc.consumer(spec.channel)?;
            begin = start(control)?;
            loop {
                let n = match spec.system {
                    System::DmxpSingle => consumer.receive_into(&mut buf)?.map_or(0, |_| 1),
                    System::DmxpBatch => consumer.receive_batch_with(BATCH, |_, payload| {
                        sink ^= u64::from(payload[0]);
                    })? as u64,
                    System::DmxpInPlace => match consumer.receive_in_place()? {
                        Some(message) => {
                            sink ^= message.payload().words().fold(0, |sum, word| sum ^ word);
                            1
                        }
                        None => 0,
                    },
                    _ => match consumer.receive_in_place()? {
                        Some(message) => {
                            sink ^= message.payload().word(0).unwrap_or(0);
                            1
                        }
                        None => 0,
                    },
                };
                if n > 0 {
                    got += n;
                    calls += 1;
                    backoff.reset();
                } else if control.consumer_drained(spec.channel, spec.index, spec.producers, got) {
                    break;
                } else {
                    backoff.snooze();
                }
            }
        }
        System::Uds => {
            let socket = stdio_fd(false)?;
            begin = start(control)?;
            loop {
                let (n, _) =
                    rustix::net::recv(&socket, &mut buf[..spec.payload], RecvFlags::empty())?;
                if n == 0 {
                    break;
                }
                sink ^= u64::from(buf[0]);
                got += 1;
            }
        }
        System::Pipe => {
            let mut pipe = File::from(stdio_fd(false)?);
            begin = start(control)?;
            let mut bytes = 0u64;
            loop {
                let n = pipe.read(&mut buf[..spec.payload])?;
                if n == 0 {
                    break;
                }
                sink ^= u64::from(buf[0]);
                bytes += n as u64;
            }
            got = bytes / spec.payload as u64;
        }
        System::BareRing => {
            let ring = bare_ring(alloc, spec, 0)?;
            begin = start(control)?;
            loop {
                if let Some(len) = ring.try_recv(&mut buf) {
                    checksum = checksum.wrapping_add(first_word(&buf[..len]));
                    got += 1;
                    backoff.reset();
                } else if control.consumer_drained(spec.channel, spec.index, spec.producers, got) {
                    break;
                } else {
                    backoff.snooze();
                }
            }
        }
        System::Floor => return floor_spin(spec, control, false),
        System::ArrayQueue => return Err("ArrayQueue runs in one process".into()),
        System::Iceoryx2 => return Err(PEER_ONLY.into()),
    }
    std::hint::black_box(sink);
    Ok(ChildResult {
        messages: got,
        start_ns: begin,
        end_ns: monotonic_ns(),
        calls,
        checksum,
        ..ChildResult::default()
    })
}

/// What a child of the iceoryx2 system says: those runs are the peer program's.
const PEER_ONLY: &str = "iceoryx2 runs in its own peer program (--iceoryx2-peer)";

/// Bare ring `index` of the run's segment (the parent made it empty before the start).
fn bare_ring<'a>(
    alloc: &'a SharedMemoryAllocator,
    spec: &ChildSpec,
    index: usize,
) -> Res<BareRing<'a>> {
    crate::control::bare_ring(alloc.memory().region(), index, spec.capacity)
        .ok_or_else(|| "the segment has no room for the bare ring".into())
}

/// Sends one bare-ring message, spinning (then yielding) while the ring is full.
fn bare_send(ring: &BareRing<'_>, payload: &[u8]) {
    let mut backoff = Backoff::default();
    while !ring.try_send(payload) {
        backoff.snooze();
    }
}

/// Receives one bare-ring message into `buf`, spinning (then yielding) while the ring is
/// empty; returns its length.
fn bare_recv(ring: &BareRing<'_>, buf: &mut [u8]) -> usize {
    let mut backoff = Backoff::default();
    loop {
        if let Some(len) = ring.try_recv(buf) {
            return len;
        }
        backoff.snooze();
    }
}

// ------------------------------------------------------------------------------ the floor

/// The cache-line floor: one `AtomicU64` handed back and forth. The first side writes odd
/// values (`2i + 1`) and waits for the even answer; the other side answers. Each hand-over is
/// one message for throughput, and one round trip is two hand-overs for latency.
fn floor_spin(spec: &ChildSpec, control: &Control<'_>, first: bool) -> Res<ChildResult> {
    let word = control.floor_word();
    let quota = spec.messages.unwrap_or(u64::MAX);
    let mut recorder = Recorder::new(spec.messages);
    let begin = start(control)?;
    let mut backoff = Backoff::default();
    let mut round = 0u64;
    if first {
        while round < quota && !control.stopped() && !recorder.full() {
            word.store(2 * round + 1, Release);
            while word.load(Acquire) != 2 * round + 2 {
                backoff.snooze();
            }
            backoff.reset();
            recorder.tick();
            round += 1;
        }
        word.store(u64::MAX, Release);
    } else {
        loop {
            let value = word.load(Acquire);
            if value == u64::MAX {
                break;
            }
            if value == 2 * round + 1 {
                word.store(2 * round + 2, Release);
                round += 1;
                backoff.reset();
            } else {
                backoff.snooze();
            }
        }
    }
    Ok(ChildResult {
        // Each round is two hand-overs, one counted on each side.
        messages: round,
        start_ns: begin,
        end_ns: monotonic_ns(),
        latency: first.then(|| recorder.percentiles()),
        ..ChildResult::default()
    })
}

/// The floor in blocking mode: the same hand-over on a 32-bit word, sleeping in FUTEX_WAIT and
/// waking with FUTEX_WAKE on every hand-over (what any futex ping-pong must pay at least).
fn floor_futex(spec: &ChildSpec, control: &Control<'_>, first: bool) -> Res<ChildResult> {
    let word = control.floor_futex();
    let quota = spec.messages.unwrap_or(u64::MAX);
    let mut recorder = Recorder::new(spec.messages);
    let begin = start(control)?;
    let wait_for = |want: u32| loop {
        let value = word.load(Acquire);
        if value == want || value == u32::MAX {
            return value;
        }
        let _ = futex::wait(word, futex::Flags::empty(), value, None);
    };
    let hand = |value: u32| {
        word.store(value, Release);
        let _ = futex::wake(word, futex::Flags::empty(), 1);
    };
    let mut round = 0u32;
    if first {
        while u64::from(round) < quota && !control.stopped() && !recorder.full() {
            hand(2 * round + 1);
            wait_for(2 * round + 2);
            recorder.tick();
            round += 1;
        }
        hand(u32::MAX);
    } else {
        while wait_for(2 * round + 1) != u32::MAX {
            hand(2 * round + 2);
            round += 1;
        }
    }
    Ok(ChildResult {
        messages: u64::from(round),
        start_ns: begin,
        end_ns: monotonic_ns(),
        latency: first.then(|| recorder.percentiles()),
        ..ChildResult::default()
    })
}

// ------------------------------------------------------------------------------ latency

/// Times round trips: one clock read per round, the first 200 rounds (warm-up) dropped.
#[derive(Debug)]
pub struct Recorder {
    last: Instant,
    rounds: u64,
    samples: Vec<u64>,
}

impl Recorder {
    /// A recorder for `rounds` round trips (`None`: a timed run), with room reserved for
    /// that many samples up to the 2,000,000 it keeps at most.
    #[must_use]
    pub fn new(rounds: Option<u64>) -> Self {
        let cap = rounds.map_or(MAX_SAMPLES, |r| (r as usize).min(MAX_SAMPLES));
        Self {
            last: Instant::now(),
            rounds: 0,
            samples: Vec::with_capacity(cap),
        }
    }

    /// One round trip ended now.
    #[inline]
    pub fn tick(&mut self) {
        let now = Instant::now();
        if self.rounds >= WARMUP {
            self.samples.push((now - self.last).as_nanos() as u64);
        }
        self.rounds += 1;
        self.last = now;
    }

    /// Starts timing the first round from now.
    pub fn restart(&mut self) {
        self.last = Instant::now();
    }

    /// True once it holds the most samples it keeps (2,000,000): the run stops there.
    #[must_use]
    pub fn full(&self) -> bool {
        self.samples.len() >= MAX_SAMPLES
    }

    /// The one-way percentiles of the samples kept ([`percentiles_of`]).
    #[must_use]
    pub fn percentiles(mut self) -> Percentiles {
        percentiles_of(&mut self.samples)
    }
}

/// The ping's side of a timed ping-pong: the round trips made so far, their times, and when
/// the run started.
pub(crate) struct RoundTrips<'c, 'm> {
    control: &'c Control<'m>,
    quota: u64,
    recorder: Recorder,
    rounds: u64,
    begin: u64,
}

impl<'c, 'm> RoundTrips<'c, 'm> {
    /// Reserves room for the samples, waits for the parent's go ([`start`]) and starts timing.
    pub(crate) fn start(spec: &ChildSpec, control: &'c Control<'m>) -> Res<Self> {
        let mut recorder = Recorder::new(spec.messages);
        let begin = start(control)?;
        recorder.restart();
        Ok(Self {
            control,
            quota: spec.messages.unwrap_or(u64::MAX),
            recorder,
            rounds: 0,
            begin,
        })
    }

    /// True while the run goes on (round trips left, no stop, room for samples); then
    /// stamps `payload` with the number of the round trip about to be made.
    pub(crate) fn next(&mut self, payload: &mut [u8]) -> bool {
        if self.rounds >= self.quota || self.control.stopped() || self.recorder.full() {
            return false;
        }
        stamp(payload, self.rounds);
        true
    }

    /// The round trip begun by [`Self::next`] ended now.
    pub(crate) fn tick(&mut self) {
        self.recorder.tick();
        self.rounds += 1;
    }

    /// Round trips made so far.
    pub(crate) fn rounds(&self) -> u64 {
        self.rounds
    }

    /// What the ping reports: its round trips, from the start to now, and their latency.
    pub(crate) fn result(self) -> ChildResult {
        ChildResult {
            messages: self.rounds,
            start_ns: self.begin,
            end_ns: monotonic_ns(),
            latency: Some(self.recorder.percentiles()),
            ..ChildResult::default()
        }
    }
}

/// What a pong reports: the `rounds` it answered, from `begin` to now.
pub(crate) fn pong_result(rounds: u64, begin: u64) -> ChildResult {
    ChildResult {
        messages: rounds,
        start_ns: begin,
        end_ns: monotonic_ns(),
        ..ChildResult::default()
    }
}

/// One-way percentiles (round trip / 2) of round-trip samples in ns.
pub fn percentiles_of(samples: &mut [u64]) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let index = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[index] as f64 / 2.0
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        samples: samples.len() as u64,
    }
}

/// The two DMXP channels of a ping-pong: ping sends on `channel`, pong on `channel + 1`.
fn dmxp_pair(
    spec: &ChildSpec,
    alloc: &SharedMemoryAllocator,
    ping: bool,
) -> Res<(Producer, Consumer)> {
    let (out, back) = if ping {
        (spec.channel, spec.channel + 1)
    } else {
        (spec.channel + 1, spec.channel)
    };
    Ok((alloc.producer(out)?, alloc.consumer(back)?))
}

/// Sends one DMXP message of `payload` (by copy or through a loan), retrying while full.
fn dmxp_send(producer: &Producer, payload: &[u8], loan: bool) -> Res<()> {
    let mut backoff = Backoff::default();
    loop {
        let outcome = if loan {
            producer.loan().and_then(|mut slot| {
                // A payload is at most MSG_INLINE bytes (checked by `run`): it fits.
                let _ = slot.write_at(0, payload);
                slot.commit(payload.len())
            })
        } else {
            producer.send(payload)
        };
        match outcome {
            Ok(_) => return Ok(()),
            Err(e) if retryable(&e) => backoff.snooze(),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one DMXP message; returns its length. Spins (then yields), or sleeps on the
/// futex in blocking mode.
fn dmxp_recv(consumer: &Consumer, buf: &mut [u8], loan: bool, mode: Mode) -> Res<usize> {
    if mode == Mode::Blocking {
        return Ok(consumer.receive_blocking()?.payload.len());
    }
    let mut backoff = Backoff::default();
    loop {
        if loan {
            if let Some(message) = consumer.receive_in_place()? {
                std::hint::black_box(message.payload().word(0));
                return Ok(message.meta().payload_len as usize);
            }
        } else if let Some((_, len)) = consumer.receive_into(buf)? {
            return Ok(len);
        }
        backoff.snooze();
    }
}

fn ping(
    spec: &ChildSpec,
    control: &Control<'_>,
    alloc: &SharedMemoryAllocator,
) -> Res<ChildResult> {
    let mode = spec.mode.unwrap_or(Mode::Spin);
    let mut payload = vec![0x5Au8; spec.payload];
    let mut buf = vec![0u8; dmxp::MSG_INLINE];
    let trips = match spec.system {
        System::DmxpSingle | System::DmxpLoan => {
            let loan = spec.system == System::DmxpLoan;
            let (producer, consumer) = dmxp_pair(spec, alloc, true)?;
            let mut trips = RoundTrips::start(spec, control)?;
            while trips.next(&mut payload) {
                dmxp_send(&producer, &payload, loan)?;
                dmxp_recv(&consumer, &mut buf, loan, mode)?;
                trips.tick();
            }
            dmxp_send(&producer, &payload[..STOP_LEN], loan)?;
            trips
        }
        System::Uds => {
            let socket = stdio_fd(false)?;
            let mut trips = RoundTrips::start(spec, control)?;
            while trips.next(&mut payload) {
                rustix::net::send(&socket, &payload, SendFlags::empty())?;
                let (n, _) =
                    rustix::net::recv(&socket, &mut buf[..spec.payload], RecvFlags::empty())?;
                if n == 0 {
                    return Err("pong closed the socket".into());
                }
                trips.tick();
            }
            trips
        }
        System::Pipe => {
            let mut out = File::from(stdio_fd(true)?);
            let mut back = File::from(stdio_fd(false)?);
            let mut trips = RoundTrips::start(spec, control)?;
            while trips.next(&mut payload) {
                out.write_all(&payload)?;
                back.read_exact(&mut buf[..spec.payload])?;
                trips.tick();
            }
            trips
        }
        System::BareRing => {
            let (out, back) = (bare_ring(alloc, spec, 0)?, bare_ring(alloc, spec, 1)?);
            let mut trips = RoundTrips::start(spec, control)?;
            while trips.next(&mut payload) {
                bare_send(&out, &payload);
                bare_recv(&back, &mut buf);
                trips.tick();
            }
            bare_send(&out, &payload[..STOP_LEN]);
            trips
        }
        System::Floor => {
            return match mode {
                Mode::Spin => floor_spin(spec, control, true),
                Mode::Blocking => floor_futex(spec, control, true),
            }
        }
        System::Iceoryx2 => return Err(PEER_ONLY.into()),
        System::DmxpBatch | System::DmxpInPlace | System::ArrayQueue => {
            return Err(format!("no cross-process ping-pong for {}", spec.system).into())
        }
    };
    Ok(trips.result())
}

fn pong(
    spec: &ChildSpec,
    control: &Control<'_>,
    alloc: &SharedMemoryAllocator,
) -> Res<ChildResult> {
    let mode = spec.mode.unwrap_or(Mode::Spin);
    let mut buf = vec![0u8; dmxp::MSG_INLINE];
    let mut rounds = 0u64;
    let begin;
    match spec.system {
        System::DmxpSingle | System::DmxpLoan => {
            let loan = spec.system == System::DmxpLoan;
            let (producer, consumer) = dmxp_pair(spec, alloc, false)?;
            let reply = vec![0xA5u8; spec.payload];
            begin = start(control)?;
            while dmxp_recv(&consumer, &mut buf, loan, mode)? != STOP_LEN {
                dmxp_send(&producer, &reply, loan)?;
                rounds += 1;
            }
        }
        System::Uds => {
            let socket = stdio_fd(false)?;
            begin = start(control)?;
            loop {
                let (n, _) =
                    rustix::net::recv(&socket, &mut buf[..spec.payload], RecvFlags::empty())?;
                if n == 0 {
                    break;
                }
                rustix::net::send(&socket, &buf[..n], SendFlags::empty())?;
                rounds += 1;
            }
        }
        System::Pipe => {
            let mut out = File::from(stdio_fd(true)?);
            let mut back = File::from(stdio_fd(false)?);
            begin = start(control)?;
            loop {
                match back.read_exact(&mut buf[..spec.payload]) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e.into()),
                }
                out.write_all(&buf[..spec.payload])?;
                rounds += 1;
            }
        }
        System::BareRing => {
            let (back, out) = (bare_ring(alloc, spec, 0)?, bare_ring(alloc, spec, 1)?);
            let reply = vec![0xA5u8; spec.payload];
            begin = start(control)?;
            while bare_recv(&back, &mut buf) != STOP_LEN {
                bare_send(&out, &reply);
                rounds += 1;
            }
        }
        System::Floor => {
            return match mode {
                Mode::Spin => floor_spin(spec, control, false),
                Mode::Blocking => floor_futex(spec, control, false),
            }
        }
        System::Iceoryx2 => return Err(PEER_ONLY.into()),
        System::DmxpBatch | System::DmxpInPlace | System::ArrayQueue => {
            return Err(format!("no cross-process ping-pong for {}", spec.system).into())
        }
    }
    Ok(pong_result(rounds, begin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_one_way_and_ordered() {
        let mut samples: Vec<u64> = (1..=1000).rev().map(|n| n * 2).collect();
        let p = percentiles_of(&mut samples);
        assert_eq!(p.samples, 1000);
        // Sorted round trips 2, 4, ..., 2000; index round(999 q); halved.
        assert_eq!(p.p50, 501.0);
        assert_eq!(p.p99, 990.0);
        assert_eq!(p.p999, 999.0);
        assert_eq!(percentiles_of(&mut []), Percentiles::default());
    }

    #[test]
    fn stamp_writes_the_counter_little_endian() {
        let mut payload = [0xFFu8; 12];
        stamp(&mut payload, 0x0102_0304_0506_0708);
        assert_eq!(payload, [8, 7, 6, 5, 4, 3, 2, 1, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
}
