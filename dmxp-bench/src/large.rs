//! The large-message benchmark (`dmxp-bench large`, issue #10): messages longer than one slot,
//! which DMXP sends as runs of consecutive slots (PROTOCOL.md §12), side by side in one run
//! with what a user would otherwise move them with, and with the copy bandwidth of one core.
//!
//! For every message size (4 KiB, 64 KiB and 256 KiB by default), with every repetition of
//! every configuration interleaved:
//! * **dmxp**: a channel made with `with_max_message_size(size)`; producers `send` the whole
//!   message, consumers `receive_into` one reused buffer of `max_message_size()` bytes;
//!   1->1, and 2->2 on one channel;
//! * **uds-stream**: a Unix `SOCK_STREAM` socket pair; each message is an 8-byte length prefix
//!   and the payload, written with one blocking `write_all` of a reused frame and read back
//!   with two blocking `read_exact`s into a reused buffer;
//! * **pipe**: an anonymous pipe with fixed-size messages, blocking `write_all` / `read_exact`;
//! * **memcpy**: one process copying a buffer of the size into another, over and over (glibc's
//!   `memcpy`, through `copy_from_slice`): the single-core copy bandwidth. Both buffers start
//!   on a cache line and 2 KiB apart modulo 4 KiB: glibc copies these sizes with `rep movsb`,
//!   which on some CPUs (the AMD EPYC VM of docs/BENCHMARKS.md) runs 20-30x slower between
//!   buffers of different alignment, such as two `Vec`s from `malloc`, and such a figure
//!   would say nothing about the machine's copy bandwidth.
//!
//! A byte stream has no message boundaries, so several writers on one socket or pipe would
//! interleave the bytes of messages longer than `PIPE_BUF`: the 2->2 arms of the socket and the
//! pipe are two independent 1->1 connections (what their users do), while DMXP's 2->2 is two
//! producers and two consumers on one channel.
//!
//! Every message carries three check words (its producer and sequence number at the start,
//! the middle and the end); consumers verify them, the length, and that each producer's
//! sequence numbers increase, and the parent checks that the counts and the sums of the
//! sequence numbers sent and received agree. Children are the processes of the rest of the
//! crate ([`crate::runner`]), pinned the same way: producers on one core, consumers (and the
//! memcpy) on the other.

use std::fs::File;
use std::hint::black_box;
use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::path::PathBuf;

use clap::Args;
use dmxp::{monotonic_ns, SharedMemoryAllocator};
use serde::Serialize;

use crate::child::{retryable, start, stdio_fd, Res};
use crate::control::{Backoff, Control, CONTROL_OFFSET};
use crate::report::{align, median, run_length_text, targets_table, write_json, Machine, Target};
use crate::runner::{self, Launch, LengthArgs, Placement, RunLength};
use crate::spec::{ChildResult, ChildSpec, Role, Shape, System};

/// Default slots of the DMXP ring: 4096 slots of 960 payload bytes (about 4 MiB of ring, 15
/// messages of 256 KiB).
pub const LARGE_CAPACITY: u64 = 4096;
/// Largest ring that fits the run's segment below the control block.
pub const LARGE_MAX_CAPACITY: u64 = 8192;

/// Command-line options of `dmxp-bench large`.
#[derive(Args, Clone, Debug)]
#[command(
    mut_arg("quick", |a| a.help("Short runs: 0.1 s per run and 3 repetitions (the whole benchmark in about 10 s)")),
    mut_arg("seconds", |a| a.help("Seconds per run (default 1, or 0.1 with --quick)")),
    mut_arg("messages", |a| a.help("A fixed number of messages per producer (and copies for memcpy) instead of a duration"))
)]
pub struct LargeArgs {
    /// How long each run is (`--quick`, `--seconds`, `--messages`).
    #[command(flatten)]
    pub length: LengthArgs,
    /// Repetitions of every configuration; the report shows medians (default 5, 3 with
    /// --quick).
    #[arg(long)]
    pub reps: Option<usize>,
    /// Slots of the DMXP ring (a power of two, 2..=8192); every size must fit in
    /// capacity x 960 bytes.
    #[arg(long, default_value_t = LARGE_CAPACITY)]
    pub capacity: u64,
    /// Message sizes, in bytes (each more than 960).
    #[arg(long, value_delimiter = ',', default_value = "4096,65536,262144")]
    pub sizes: Vec<usize>,
    /// Only these systems (dmxp, uds-stream, pipe, memcpy), e.g. for profiling one of them.
    #[arg(long, value_delimiter = ',', value_parser = parse_carrier)]
    pub systems: Option<Vec<Carrier>>,
    /// Only these shapes (one-to-one, two-to-two); memcpy runs with either.
    #[arg(long, value_delimiter = ',', value_parser = parse_shape)]
    pub shapes: Option<Vec<Shape>>,
    /// Write the full report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

fn parse_carrier(name: &str) -> Result<Carrier, String> {
    Carrier::ALL
        .into_iter()
        .find(|c| c.name() == name)
        .ok_or_else(|| format!("unknown system {name:?} (one of dmxp, uds-stream, pipe, memcpy)"))
}

fn parse_shape(name: &str) -> Result<Shape, String> {
    [Shape::OneToOne, Shape::TwoToTwo]
        .into_iter()
        .find(|s| s.id() == name)
        .ok_or_else(|| format!("unknown shape {name:?} (one-to-one or two-to-two)"))
}

/// What moves the bytes in a large-message run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Carrier {
    /// A DMXP channel made for messages of the size (runs of slots).
    Dmxp,
    /// Unix stream sockets, one per producer-consumer pair, with a length prefix.
    UdsStream,
    /// Anonymous pipes, one per producer-consumer pair, with fixed-size messages.
    Pipe,
    /// One core copying a buffer of the size with glibc's `memcpy` (no second process).
    Memcpy,
}

impl Carrier {
    /// In the order runs and tables use.
    pub const ALL: [Carrier; 4] = [
        Carrier::Dmxp,
        Carrier::UdsStream,
        Carrier::Pipe,
        Carrier::Memcpy,
    ];

    /// The name in tables and JSON.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Carrier::Dmxp => "dmxp",
            Carrier::UdsStream => "uds-stream",
            Carrier::Pipe => "pipe",
            Carrier::Memcpy => "memcpy",
        }
    }

    /// True for the single-core copy (memcpy), which has no second process.
    #[must_use]
    pub fn is_copy(self) -> bool {
        self == Carrier::Memcpy
    }

    /// The [`System`] its children are told (memcpy children ignore it).
    fn system(self) -> System {
        match self {
            Carrier::Dmxp | Carrier::Memcpy => System::DmxpSingle,
            Carrier::UdsStream => System::Uds,
            Carrier::Pipe => System::Pipe,
        }
    }
}

/// One configuration to measure.
#[derive(Clone, Copy, Debug)]
struct Job {
    carrier: Carrier,
    shape: Shape,
    size: usize,
}

impl Job {
    fn label(self) -> String {
        format!(
            "{} {} {}",
            self.carrier.name(),
            shape_name(self.carrier, self.shape),
            size_name(self.size)
        )
    }
}

/// `4 KiB`, `256 KiB`, or `1500 B`.
#[must_use]
pub fn size_name(size: usize) -> String {
    if size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn shape_name(carrier: Carrier, shape: Shape) -> &'static str {
    match (carrier, shape) {
        (Carrier::Memcpy, _) => "1 core",
        (Carrier::Dmxp, Shape::TwoToTwo) => "2->2",
        (_, Shape::TwoToTwo) => "2x 1->1",
        _ => "1->1",
    }
}

fn plan(args: &LargeArgs) -> Vec<Job> {
    let carrier_wanted = |c| args.systems.as_ref().is_none_or(|list| list.contains(&c));
    let shape_wanted = |s| args.shapes.as_ref().is_none_or(|list| list.contains(&s));
    let mut jobs = Vec::new();
    for &size in &args.sizes {
        for shape in [Shape::OneToOne, Shape::TwoToTwo] {
            for carrier in [Carrier::Dmxp, Carrier::UdsStream, Carrier::Pipe] {
                if carrier_wanted(carrier) && shape_wanted(shape) {
                    jobs.push(Job {
                        carrier,
                        shape,
                        size,
                    });
                }
            }
        }
        if carrier_wanted(Carrier::Memcpy) {
            jobs.push(Job {
                carrier: Carrier::Memcpy,
                shape: Shape::OneToOne,
                size,
            });
        }
    }
    jobs
}

/// What one large-message run measured.
#[derive(Clone, Copy, Debug)]
pub struct LargeSample {
    /// Messages received (copies made) per second.
    pub msgs_per_sec: f64,
    /// Payload bytes received (copied) per second.
    pub bytes_per_sec: f64,
    /// DMXP futex wake calls summed over the run's children.
    pub futex_wake: u64,
    /// DMXP futex wait calls summed over the run's children.
    pub futex_wait: u64,
}

/// Measures one run of `carrier` in `shape` with messages of `size` bytes.
pub fn measure(
    carrier: Carrier,
    shape: Shape,
    size: usize,
    length: &RunLength,
    placement: &Placement,
) -> Res<LargeSample> {
    let segment = match carrier {
        Carrier::Dmxp => runner::new_large_segment(length.capacity, size)?,
        _ => runner::new_segment(0, length.capacity)?,
    };
    let dir = runner::results_dir()?;
    let (pc, cc) = (placement.producer_cpu, placement.consumer_cpu);
    let per = if carrier.is_copy() {
        1
    } else {
        shape.per_channel()
    };
    let mut k = 0;
    let mut child = |role, index, producers, cpu| {
        k += 1;
        let mut spec = runner::spec(
            role,
            carrier.system(),
            Some(shape),
            None,
            size,
            &segment,
            0,
            index,
            producers,
            length,
            cpu,
            None,
            runner::out_path(&dir, k),
        );
        spec.large = true;
        spec
    };
    let mut launches = Vec::new();
    match carrier {
        Carrier::Memcpy => launches.push(Launch {
            spec: child(Role::Memcpy, 0, 1, cc),
            stdin: None,
            stdout: None,
        }),
        Carrier::Dmxp => {
            for index in 0..per {
                launches.push(Launch {
                    spec: child(Role::Producer, index, per, pc),
                    stdin: None,
                    stdout: None,
                });
            }
            for index in 0..per {
                launches.push(Launch {
                    spec: child(Role::Consumer, index, per, cc),
                    stdin: None,
                    stdout: None,
                });
            }
        }
        Carrier::UdsStream | Carrier::Pipe => {
            // One connection per pair: producer `index` talks to consumer `index` only.
            for index in 0..per {
                let (write_end, read_end) = if carrier == Carrier::Pipe {
                    let (read, write) = runner::pipe()?;
                    (write, read)
                } else {
                    runner::stream_socketpair()?
                };
                let (stdin, stdout) = if carrier == Carrier::Pipe {
                    (None, Some(write_end))
                } else {
                    (Some(write_end), None)
                };
                launches.push(Launch {
                    spec: child(Role::Producer, index, 1, pc),
                    stdin,
                    stdout,
                });
                launches.push(Launch {
                    spec: child(Role::Consumer, index, 1, cc),
                    stdin: Some(read_end),
                    stdout: None,
                });
            }
        }
    }
    let roles: Vec<Role> = launches.iter().map(|l| l.spec.role).collect();
    let results = runner::execute(&segment, launches, length)?;
    let of = |role: Role| {
        roles
            .iter()
            .zip(&results)
            .filter(move |(r, _)| **r == role)
            .map(|(_, result)| result)
    };
    let label = format!("{} {}", carrier.name(), shape_name(carrier, shape));
    let moved = if carrier.is_copy() {
        results.iter().map(|r| r.messages).sum::<u64>()
    } else {
        let sent: u64 = of(Role::Producer).map(|r| r.messages).sum();
        let received: u64 = of(Role::Consumer).map(|r| r.messages).sum();
        if sent != received {
            return Err(format!("{label}: {sent} messages sent but {received} received").into());
        }
        let sum = |role| of(role).fold(0u64, |acc, r| acc.wrapping_add(r.checksum));
        if sum(Role::Producer) != sum(Role::Consumer) {
            return Err(format!(
                "{label}: the sequence numbers received do not add up to those sent"
            )
            .into());
        }
        received
    };
    if let Some(quota) = length.messages {
        let expected = quota * per as u64;
        if moved != expected {
            return Err(format!("{label}: expected {expected} messages, got {moved}").into());
        }
    }
    let start = results.iter().map(|r| r.start_ns).min().unwrap_or(0);
    let end = roles
        .iter()
        .zip(&results)
        .filter(|(role, _)| **role != Role::Producer)
        .map(|(_, r)| r.end_ns)
        .max()
        .unwrap_or(start);
    let elapsed = end.saturating_sub(start).max(1) as f64 / 1e9;
    let msgs_per_sec = moved as f64 / elapsed;
    Ok(LargeSample {
        msgs_per_sec,
        bytes_per_sec: msgs_per_sec * size as f64,
        futex_wake: results.iter().map(|r| r.futex_wake).sum(),
        futex_wait: results.iter().map(|r| r.futex_wait).sum(),
    })
}

// ------------------------------------------------------------------------------ children

/// Key of the middle check word.
const MID_KEY: u64 = 0x9E37_79B9_7F4A_7C15;
/// The sequence number is the low 56 bits of a message's tag; the top byte is producer + 1.
const SEQ_MASK: u64 = (1 << 56) - 1;
/// Producers whose sequences a consumer tracks.
const MAX_PRODUCERS: usize = 8;

fn tag(producer: usize, n: u64) -> u64 {
    ((producer as u64 + 1) << 56) | (n & SEQ_MASK)
}

/// Byte offsets of the three check words of a message of `len` (at least 24) bytes.
fn check_offsets(len: usize) -> [usize; 3] {
    [0, (len / 2) & !7, len - 8]
}

fn word_at(buf: &[u8], at: usize) -> u64 {
    let mut le = [0u8; 8];
    le.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(le)
}

/// Writes the check words of message `tag` into `payload`, as a sender writes a header.
fn stamp(payload: &mut [u8], tag: u64) {
    let [first, mid, last] = check_offsets(payload.len());
    payload[first..first + 8].copy_from_slice(&tag.to_le_bytes());
    payload[mid..mid + 8].copy_from_slice(&(tag ^ MID_KEY).to_le_bytes());
    payload[last..last + 8].copy_from_slice(&(!tag).to_le_bytes());
}

/// A message's body: a byte pattern the check words are written over.
fn body(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// What a consumer checks of every message, and counts.
#[derive(Debug)]
struct Checker {
    len: usize,
    last: [Option<u64>; MAX_PRODUCERS],
    count: u64,
    checksum: u64,
}

impl Checker {
    fn new(len: usize) -> Self {
        Self {
            len,
            last: [None; MAX_PRODUCERS],
            count: 0,
            checksum: 0,
        }
    }

    fn check(&mut self, message: &[u8]) -> Res<()> {
        if message.len() != self.len {
            return Err(format!(
                "message {} is {} bytes, not {}",
                self.count,
                message.len(),
                self.len
            )
            .into());
        }
        let [first, mid, last] = check_offsets(message.len());
        let tag = word_at(message, first);
        if word_at(message, mid) != tag ^ MID_KEY || word_at(message, last) != !tag {
            return Err(format!("message {} ({tag:#x}) is garbled", self.count).into());
        }
        let producer = (tag >> 56) as usize;
        let n = tag & SEQ_MASK;
        let Some(seen) = producer.checked_sub(1).and_then(|p| self.last.get_mut(p)) else {
            return Err(format!("message {} names no producer ({tag:#x})", self.count).into());
        };
        if seen.is_some_and(|prev| n <= prev) {
            return Err(format!(
                "producer {}: message {n} after {}",
                producer - 1,
                seen.unwrap_or(0)
            )
            .into());
        }
        *seen = Some(n);
        self.count += 1;
        self.checksum = self.checksum.wrapping_add(n);
        Ok(())
    }
}

/// Runs a child of the large-message benchmark (`spec.large`).
pub(crate) fn child(
    spec: &ChildSpec,
    control: &Control<'_>,
    alloc: &SharedMemoryAllocator,
) -> Res<ChildResult> {
    if spec.payload < 24 {
        return Err(format!("messages of {} bytes are too short to check", spec.payload).into());
    }
    match spec.role {
        Role::Producer => producer(spec, control, alloc),
        Role::Consumer => consumer(spec, control, alloc),
        Role::Memcpy => memcpy(spec, control),
        other => Err(format!("no {other:?} in the large-message benchmark").into()),
    }
}

fn producer(
    spec: &ChildSpec,
    control: &Control<'_>,
    alloc: &SharedMemoryAllocator,
) -> Res<ChildResult> {
    let quota = spec.messages.unwrap_or(u64::MAX);
    let mut sent = 0u64;
    let mut checksum = 0u64;
    let begin;
    match spec.system {
        System::DmxpSingle => {
            let producer = alloc.producer(spec.channel)?;
            if producer.max_message_size() < spec.payload {
                return Err(format!(
                    "the channel takes {} bytes, not {}",
                    producer.max_message_size(),
                    spec.payload
                )
                .into());
            }
            let mut payload = body(spec.payload);
            let mut backoff = Backoff::default();
            stamp(&mut payload, tag(spec.index, 0));
            begin = start(control)?;
            while sent < quota && !control.stopped() {
                match producer.send(&payload) {
                    Ok(_) => {
                        checksum = checksum.wrapping_add(sent);
                        sent += 1;
                        stamp(&mut payload, tag(spec.index, sent));
                        backoff.reset();
                    }
                    Err(e) if retryable(&e) => backoff.snooze(),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        System::Uds | System::Pipe => {
            let pipe = spec.system == System::Pipe;
            let mut out = File::from(stdio_fd(pipe)?);
            // The socket's frame is the length prefix and the payload, written with one call;
            // the pipe's is the payload alone (fixed size).
            let prefix = if pipe { 0 } else { 8 };
            let mut frame = vec![0u8; prefix];
            frame[..prefix].copy_from_slice(&(spec.payload as u64).to_le_bytes()[..prefix]);
            frame.extend_from_slice(&body(spec.payload));
            begin = start(control)?;
            while sent < quota && !control.stopped() {
                stamp(&mut frame[prefix..], tag(spec.index, sent));
                out.write_all(&frame)?;
                checksum = checksum.wrapping_add(sent);
                sent += 1;
            }
        }
        other => return Err(format!("no large-message producer for {other}").into()),
    }
    let end = monotonic_ns();
    control.producer_done(spec.channel, sent);
    Ok(ChildResult {
        messages: sent,
        start_ns: begin,
        end_ns: end,
        calls: sent,
        checksum,
        ..ChildResult::default()
    })
}

fn consumer(
    spec: &ChildSpec,
    control: &Control<'_>,
    alloc: &SharedMemoryAllocator,
) -> Res<ChildResult> {
    let mut checker = Checker::new(spec.payload);
    let begin;
    match spec.system {
        System::DmxpSingle => {
            let consumer = alloc.consumer(spec.channel)?;
            // One buffer for the whole run: `max_message_size` always suffices.
            let mut buf = vec![0u8; consumer.max_message_size()];
            let mut backoff = Backoff::default();
            begin = start(control)?;
            loop {
                match consumer.receive_into(&mut buf)? {
                    Some((_, len)) => {
                        checker.check(&buf[..len])?;
                        backoff.reset();
                    }
                    None => {
                        if control.consumer_drained(
                            spec.channel,
                            spec.index,
                            spec.producers,
                            checker.count,
                        ) {
                            break;
                        }
                        backoff.snooze();
                    }
                }
            }
        }
        System::Uds | System::Pipe => {
            let pipe = spec.system == System::Pipe;
            let mut input = File::from(stdio_fd(false)?);
            let mut buf = vec![0u8; spec.payload];
            let mut header = [0u8; 8];
            begin = start(control)?;
            loop {
                let first = if pipe { &mut buf[..] } else { &mut header[..] };
                match input.read_exact(first) {
                    Ok(()) => {}
                    // End of stream between messages: every producer is done.
                    Err(e) if e.kind() == IoErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e.into()),
                }
                let len = if pipe {
                    spec.payload
                } else {
                    let len = u64::from_le_bytes(header) as usize;
                    if len > buf.len() {
                        return Err(format!("a length prefix of {len} bytes").into());
                    }
                    input.read_exact(&mut buf[..len])?;
                    len
                };
                checker.check(&buf[..len])?;
            }
        }
        other => return Err(format!("no large-message consumer for {other}").into()),
    }
    Ok(ChildResult {
        messages: checker.count,
        start_ns: begin,
        end_ns: monotonic_ns(),
        calls: checker.count,
        checksum: checker.checksum,
        ..ChildResult::default()
    })
}

/// One core's copy bandwidth at the message size: copies a buffer into another with glibc's
/// `memcpy` until stopped (or `messages` times). Both buffers are cut from one allocation, the
/// source at a page boundary and the destination on a cache line 2 KiB past a page boundary
/// (see the module docs for why the alignment matters).
fn memcpy(spec: &ChildSpec, control: &Control<'_>) -> Res<ChildResult> {
    const PAGE: usize = 4096;
    let quota = spec.messages.unwrap_or(u64::MAX);
    let size = spec.payload;
    let gap = size.next_multiple_of(PAGE) + PAGE / 2;
    let mut whole = vec![0u8; PAGE + gap + size];
    let skip = (PAGE - whole.as_ptr() as usize % PAGE) % PAGE;
    let (src, dst) = whole[skip..].split_at_mut(gap);
    let src = &mut src[..size];
    src.copy_from_slice(&body(size));
    let dst = &mut dst[..size];
    let mut copies = 0u64;
    let begin = start(control)?;
    while copies < quota && !control.stopped() {
        // Opaque to the optimiser: every copy happens, none is hoisted out of the loop.
        dst.copy_from_slice(black_box(&*src));
        black_box(&mut *dst);
        copies += 1;
    }
    let end = monotonic_ns();
    if copies > 0 && dst != src {
        return Err("the copy differs from its source".into());
    }
    Ok(ChildResult {
        messages: copies,
        start_ns: begin,
        end_ns: end,
        ..ChildResult::default()
    })
}

// ------------------------------------------------------------------------------ the report

/// One (size, carrier, shape), over all repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct LargeRow {
    /// Bytes per message (per copy for memcpy).
    pub size: usize,
    /// What moved the bytes.
    pub carrier: Carrier,
    /// 1->1, or 2->2 (two 1->1 connections for the socket and the pipe); memcpy: one core.
    pub shape: Shape,
    /// Median messages (copies) per second.
    pub msgs_per_sec: f64,
    /// Median payload bandwidth, MB/s (10^6 bytes).
    pub mb_per_sec: f64,
    /// Every repetition, messages per second.
    pub runs: Vec<f64>,
    /// Median bandwidth over memcpy's (one core) at the same size.
    pub vs_memcpy: Option<f64>,
    /// Median over the stream socket's in the same shape and size.
    pub vs_uds: Option<f64>,
    /// Median over the pipe's in the same shape and size.
    pub vs_pipe: Option<f64>,
    /// DMXP futex wake calls summed over the run's processes (largest repetition).
    pub futex_wake: u64,
    /// DMXP futex wait calls, counted as `futex_wake`.
    pub futex_wait: u64,
}

/// Everything one `dmxp-bench large` run measured.
#[derive(Clone, Debug, Serialize)]
pub struct LargeReport {
    /// Where it ran.
    pub machine: Machine,
    /// The command line, as given.
    pub command: String,
    /// Seconds per run of a timed run; `None` when runs had a fixed message count.
    pub seconds_per_run: Option<f64>,
    /// Messages per producer (copies per memcpy run), if fixed.
    pub messages_per_run: Option<u64>,
    /// Repetitions of every configuration (rows show medians over them).
    pub repetitions: usize,
    /// Slots of the DMXP ring.
    pub capacity: u64,
    /// One row per (size, shape, carrier), in the order they ran.
    pub rows: Vec<LargeRow>,
    /// The targets at 64 KiB, evaluated.
    pub targets: Vec<Target>,
}

impl LargeReport {
    /// The row of (`size`, `carrier`, `shape`), if it ran (memcpy rows have shape 1->1).
    #[must_use]
    pub fn row(&self, size: usize, carrier: Carrier, shape: Shape) -> Option<&LargeRow> {
        self.rows
            .iter()
            .find(|r| r.size == size && r.carrier == carrier && r.shape == shape)
    }

    /// Fills the ratios from the medians.
    pub fn compute_ratios(&mut self) {
        let rows = self.rows.clone();
        let rate = |size, carrier, shape| {
            rows.iter()
                .find(|r: &&LargeRow| r.size == size && r.carrier == carrier && r.shape == shape)
                .map(|r| r.msgs_per_sec)
                .filter(|v| *v > 0.0)
        };
        for row in &mut self.rows {
            if row.carrier.is_copy() {
                continue;
            }
            let over = |reference: Option<f64>| reference.map(|v| row.msgs_per_sec / v);
            row.vs_memcpy = over(rate(row.size, Carrier::Memcpy, Shape::OneToOne));
            if row.carrier != Carrier::UdsStream {
                row.vs_uds = over(rate(row.size, Carrier::UdsStream, row.shape));
            }
            if row.carrier != Carrier::Pipe {
                row.vs_pipe = over(rate(row.size, Carrier::Pipe, row.shape));
            }
        }
    }

    /// Evaluates the targets: at 64 KiB 1->1, DMXP moves at least half of one core's
    /// memcpy bandwidth and at least 3x the stream socket's; no futex calls in the DMXP runs.
    pub fn compute_targets(&mut self) {
        let dmxp = self.row(64 << 10, Carrier::Dmxp, Shape::OneToOne);
        let mut targets = Vec::new();
        for (name, goal, measured) in [
            (
                "64 KiB 1->1, dmxp vs memcpy (bandwidth)",
                0.5,
                dmxp.and_then(|r| r.vs_memcpy),
            ),
            (
                "64 KiB 1->1, dmxp vs uds-stream",
                3.0,
                dmxp.and_then(|r| r.vs_uds),
            ),
        ] {
            targets.push(Target {
                name: name.to_owned(),
                goal: format!(">= {goal:.1}x"),
                measured,
                met: measured.map(|m| m >= goal),
                near: None,
                far: None,
            });
        }
        let futex: Vec<f64> = self
            .rows
            .iter()
            .filter(|r| r.carrier == Carrier::Dmxp)
            .map(|r| (r.futex_wake + r.futex_wait) as f64)
            .collect();
        let futex = (!futex.is_empty()).then(|| futex.iter().sum::<f64>());
        targets.push(Target {
            name: "futex calls in dmxp runs (spinning)".to_owned(),
            goal: "== 0".to_owned(),
            measured: futex,
            met: futex.map(|f| f == 0.0),
            near: None,
            far: None,
        });
        self.targets = targets;
    }

    /// The human tables: every row, then the ratios per size, then the targets.
    #[must_use]
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}",
            self.machine.describe("producers", "consumers and memcpy")
        );
        let length = run_length_text(
            self.messages_per_run,
            self.seconds_per_run,
            "messages per producer",
        );
        let _ = writeln!(
            out,
            "runs: {length} each, median of {} repetitions, DMXP ring of {} slots\n",
            self.repetitions, self.capacity
        );
        let _ = writeln!(
            out,
            "LARGE MESSAGES (median; MB = 10^6 bytes; uds-stream and pipe 2->2 are two 1->1 connections)"
        );
        let mut rows = vec![[
            "size", "shape", "system", "msgs/s", "MB/s", "GB/s", "x memcpy", "x uds", "x pipe",
            "futex",
        ]
        .map(str::to_owned)
        .to_vec()];
        let ratio = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
        for r in &self.rows {
            rows.push(vec![
                size_name(r.size),
                shape_name(r.carrier, r.shape).to_owned(),
                r.carrier.name().to_owned(),
                format!("{:.0}", r.msgs_per_sec),
                format!("{:.0}", r.mb_per_sec),
                format!("{:.2}", r.mb_per_sec / 1e3),
                ratio(r.vs_memcpy),
                ratio(r.vs_uds),
                ratio(r.vs_pipe),
                if r.carrier == Carrier::Dmxp {
                    (r.futex_wake + r.futex_wait).to_string()
                } else {
                    "-".into()
                },
            ]);
        }
        out.push_str(&align(&rows));
        let _ = writeln!(
            out,
            "\nRATIOS (dmxp over one core's memcpy bandwidth, over uds-stream)"
        );
        let mut rows = vec![[
            "size",
            "1->1 x memcpy",
            "1->1 x uds",
            "2->2 x memcpy",
            "2->2 x uds",
        ]
        .map(str::to_owned)
        .to_vec()];
        let mut sizes: Vec<usize> = self.rows.iter().map(|r| r.size).collect();
        sizes.dedup();
        for size in sizes {
            let of = |shape| self.row(size, Carrier::Dmxp, shape);
            rows.push(vec![
                size_name(size),
                ratio(of(Shape::OneToOne).and_then(|r| r.vs_memcpy)),
                ratio(of(Shape::OneToOne).and_then(|r| r.vs_uds)),
                ratio(of(Shape::TwoToTwo).and_then(|r| r.vs_memcpy)),
                ratio(of(Shape::TwoToTwo).and_then(|r| r.vs_uds)),
            ]);
        }
        out.push_str(&align(&rows));
        let _ = writeln!(out, "\nTARGETS");
        out.push_str(&targets_table(&self.targets));
        out
    }
}

// ------------------------------------------------------------------------------ the driver

/// Runs the large-message benchmark the arguments describe and returns the report (printing
/// nothing).
pub fn run(args: &LargeArgs) -> Res<LargeReport> {
    let capacity = args.capacity;
    let band_end = dmxp::core::layout::HEADER_SIZE as u64
        + capacity.saturating_mul(dmxp::core::layout::SLOT_SIZE as u64);
    if !capacity.is_power_of_two()
        || !(2..=LARGE_MAX_CAPACITY).contains(&capacity)
        || band_end > CONTROL_OFFSET as u64
    {
        return Err(format!(
            "--capacity {capacity} is not a power of two in 2..={LARGE_MAX_CAPACITY}"
        )
        .into());
    }
    if args.sizes.is_empty() {
        return Err("--sizes names no size".into());
    }
    let limit = capacity as usize * dmxp::MSG_INLINE;
    for &size in &args.sizes {
        if size <= dmxp::MSG_INLINE || size > limit {
            return Err(format!(
                "message size {size} B is outside 961..={limit} (capacity {capacity} x 960)"
            )
            .into());
        }
    }
    let reps = runner::repetitions(args.reps, args.length.quick)?;
    let length = args.length.run_length(1.0, 0.1, capacity)?;
    if length.messages == Some(0) {
        return Err("--messages must be at least 1".into());
    }
    let placement = Placement::detect();
    let load_start = Machine::load_average();
    let jobs = plan(args);
    if jobs.is_empty() {
        return Err("--systems and --shapes leave nothing to run".into());
    }
    let mut samples: Vec<Vec<LargeSample>> = vec![Vec::new(); jobs.len()];
    runner::interleave(
        &jobs,
        reps,
        args.no_progress,
        |job| job.label(),
        |k, job| {
            samples[k].push(measure(
                job.carrier,
                job.shape,
                job.size,
                &length,
                &placement,
            )?);
            Ok(())
        },
    )?;
    let mut report = LargeReport {
        machine: Machine::at_end(load_start, &placement),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        seconds_per_run: length.messages.is_none().then_some(length.seconds),
        messages_per_run: length.messages,
        repetitions: reps,
        capacity,
        rows: Vec::new(),
        targets: Vec::new(),
    };
    for (job, samples) in jobs.iter().zip(&samples) {
        let runs: Vec<f64> = samples.iter().map(|s| s.msgs_per_sec).collect();
        let rate = median(&runs);
        report.rows.push(LargeRow {
            size: job.size,
            carrier: job.carrier,
            shape: job.shape,
            msgs_per_sec: rate,
            mb_per_sec: rate * job.size as f64 / 1e6,
            runs,
            vs_memcpy: None,
            vs_uds: None,
            vs_pipe: None,
            futex_wake: samples.iter().map(|s| s.futex_wake).max().unwrap_or(0),
            futex_wait: samples.iter().map(|s| s.futex_wait).max().unwrap_or(0),
        });
    }
    report.compute_ratios();
    report.compute_targets();
    Ok(report)
}

/// Runs the large-message benchmark, prints the tables, and writes the JSON if asked.
pub fn main_with(args: &LargeArgs) -> Res<LargeReport> {
    let report = run(args)?;
    print!("{}", report.render());
    write_json(&report, args.json.as_deref())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_messages_check_and_tampered_ones_do_not() {
        let mut checker = Checker::new(4096);
        let mut message = body(4096);
        for n in [0, 1, 5] {
            stamp(&mut message, tag(1, n));
            checker.check(&message).unwrap();
        }
        stamp(&mut message, tag(0, 7));
        checker.check(&message).unwrap();
        assert_eq!((checker.count, checker.checksum), (4, 13));
        // Out of order for producer 1.
        stamp(&mut message, tag(1, 5));
        assert!(checker.check(&message).is_err());
        // A garbled middle or end.
        stamp(&mut message, tag(1, 6));
        message[2048] ^= 1;
        assert!(checker.check(&message).is_err());
        stamp(&mut message, tag(1, 6));
        message[4095] ^= 1;
        assert!(checker.check(&message).is_err());
        // The wrong length.
        stamp(&mut message, tag(1, 6));
        assert!(checker.check(&message[..4000]).is_err());
        assert_eq!(checker.count, 4);
    }

    #[test]
    fn sizes_have_short_names() {
        assert_eq!(size_name(4096), "4 KiB");
        assert_eq!(size_name(256 << 10), "256 KiB");
        assert_eq!(size_name(1500), "1500 B");
    }
}
