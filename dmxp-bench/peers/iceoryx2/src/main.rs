//! `iceoryx2-peer`: the iceoryx2 peer of the DMXP benchmark.
//!
//! Two commands, each run as two processes of this same binary (re-executed through
//! `std::env::current_exe()` with a hidden role argument), one pinned to CPU 0 and one to
//! CPU 1, both busy-polling:
//!
//! * `throughput --payload N --seconds S`: a publisher streams N-byte messages to a subscriber
//!   for S seconds after both are connected; the subscriber's count and time are printed.
//! * `latency --payload N --round-trips R [--zero-copy]`: ping and pong on two services;
//!   one-way latency percentiles (round trip / 2) after 200 warm-up round trips. Each side
//!   copies the whole message into its loaned sample, unless `--zero-copy`: then each writes
//!   only the first and last 8 bytes of the loaned sample, and reads only those of the one it
//!   receives (the zero-copy use of large payloads, up to 4 MiB).
//!
//! The settings chosen for iceoryx2 (and why) are documented on the constants below and in
//! README.md.

use std::error::Error;
use std::io::Read;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use iceoryx2::port::update_connections::UpdateConnections;
use iceoryx2::prelude::*;

type Res<T> = Result<T, Box<dyn Error>>;

/// iceoryx2's default inter-process service type (shared memory, not thread-safe ports:
/// each process here has one thread, so the thread-safe variant would only add locking).
type Svc = ipc::Service;

/// Smallest and largest payload accepted (8 bytes hold one sequence number).
const MIN_PAYLOAD: usize = 8;
const MAX_PAYLOAD: usize = 4 << 20;

/// Throughput: the subscriber's queue depth. A deep queue lets the publisher run ahead
/// of the subscriber instead of meeting a full queue (where iceoryx2's
/// `RetryUntilDelivered` back-off yields the CPU) after every message. 1024 is also
/// dmxp-bench's default ring capacity.
const THROUGHPUT_BUFFER: usize = 1024;
/// Throughput: samples the publisher may hold loaned at once. It loans, writes and sends
/// one at a time; two keeps a spare so a loan never waits for a returned sample.
const THROUGHPUT_LOANS: usize = 2;
/// Throughput: the subscriber drops each sample before taking the next; two borrowed
/// samples is iceoryx2's default and more than enough.
const THROUGHPUT_BORROWED: usize = 2;

/// Latency: settings of iceoryx2's own publish-subscribe latency benchmark
/// (`benchmarks/publish-subscribe` in its repository): no history, a queue of one,
/// safe overflow on. A ping-pong has at most one message in flight per direction.
const LATENCY_BUFFER: usize = 1;
const LATENCY_LOANS: usize = 2;

/// Warm-up round trips dropped before the latency samples are kept.
const WARMUP: u64 = 200;
/// How long a side waits for its peer to connect, or for the next message, before failing.
const CONNECT_LIMIT: Duration = Duration::from_secs(20);
const STALL_LIMIT: Duration = Duration::from_secs(10);
/// Empty polls between two looks at the clock while spinning (keeps `Instant::now` off the
/// hot path).
const POLLS_PER_CLOCK: u64 = 1 << 16;
/// Messages between two looks at the clock in the throughput subscriber.
const MSGS_PER_CLOCK: u64 = 1 << 10;

fn main() -> ExitCode {
    // iceoryx2 warns on every start that it found no config file and uses its defaults
    // (which is what we want); show errors only unless IOX2_LOG_LEVEL says otherwise.
    set_log_level_from_env_or(LogLevel::Warn);
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iceoryx2-peer: error: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage:\n  iceoryx2-peer throughput --payload N --seconds S \
                     [--full-queue wait|spin] [--buffer DEPTH]\n  \
                     iceoryx2-peer latency --payload N --round-trips R [--zero-copy]";

fn run(args: &[String]) -> Res<()> {
    let Some(command) = args.first() else {
        return Err(USAGE.into());
    };
    let opts = Opts::parse(&args[1..])?;
    match command.as_str() {
        "throughput" => parent(Mode::Throughput, &opts),
        "latency" => parent(Mode::Latency, &opts),
        "__publisher" => publisher(&opts),
        "__subscriber" => subscriber(&opts),
        "__ping" => ping(&opts),
        "__pong" => pong(&opts),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}").into()),
    }
}

// ------------------------------------------------------------------------------ options

/// What the throughput publisher does when the subscriber's queue is full.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum FullQueue {
    /// iceoryx2's `BackpressureStrategy::RetryUntilDelivered` (its default, and the
    /// default here): only when the queue is full, `send` waits inside iceoryx2, whose
    /// adaptive wait calls `sched_yield` between its checks (and sleeps after 10,000
    /// yields). In interleaved runs it was faster than `Spin` (README.md).
    #[default]
    Wait,
    /// `BackpressureStrategy::DiscardData`, and the publisher loans, writes and sends the
    /// same sequence number again until a subscriber took it: a pure spin, no syscall.
    Spin,
}

impl FullQueue {
    fn name(self) -> &'static str {
        match self {
            FullQueue::Wait => "wait",
            FullQueue::Spin => "spin",
        }
    }
}

impl std::str::FromStr for FullQueue {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wait" => Ok(FullQueue::Wait),
            "spin" => Ok(FullQueue::Spin),
            other => Err(format!("--full-queue must be wait or spin, got {other:?}")),
        }
    }
}

#[derive(Debug, Default)]
struct Opts {
    payload: Option<usize>,
    seconds: Option<f64>,
    round_trips: Option<u64>,
    /// Throughput only: what the publisher does when the subscriber's queue is full.
    full_queue: FullQueue,
    /// Throughput only: the subscriber's queue depth (default [`THROUGHPUT_BUFFER`]).
    buffer: Option<usize>,
    /// Prefix of the service names (hidden; set by the parent for its children).
    service: Option<String>,
    /// The iceoryx2 domain of this invocation: the parent's pid (hidden, as `service`).
    domain: Option<u32>,
    /// Latency only: write and read just the first and last 8 bytes of each sample.
    zero_copy: bool,
}

impl Opts {
    fn parse(args: &[String]) -> Res<Self> {
        let mut opts = Opts::default();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .ok_or_else(|| format!("{flag} needs a value"))
                    .cloned()
            };
            match flag.as_str() {
                "--payload" => opts.payload = Some(value()?.parse()?),
                "--seconds" => opts.seconds = Some(value()?.parse()?),
                "--round-trips" => opts.round_trips = Some(value()?.parse()?),
                "--service" => opts.service = Some(value()?),
                "--domain" => opts.domain = Some(value()?.parse()?),
                "--full-queue" => opts.full_queue = value()?.parse()?,
                "--buffer" => opts.buffer = Some(value()?.parse()?),
                "--zero-copy" => opts.zero_copy = true,
                other => return Err(format!("unknown option {other:?}\n{USAGE}").into()),
            }
        }
        Ok(opts)
    }

    fn payload(&self) -> Res<usize> {
        let n = self.payload.ok_or("--payload N is required")?;
        if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&n) {
            return Err(
                format!("--payload must be in {MIN_PAYLOAD}..={MAX_PAYLOAD}, got {n}").into(),
            );
        }
        Ok(n)
    }

    fn seconds(&self) -> Res<Duration> {
        let s = self.seconds.ok_or("--seconds S is required")?;
        if !(s.is_finite() && s > 0.0) {
            return Err(format!("--seconds must be positive, got {s}").into());
        }
        Ok(Duration::from_secs_f64(s))
    }

    fn round_trips(&self) -> Res<u64> {
        match self.round_trips.ok_or("--round-trips R is required")? {
            0 => Err("--round-trips must be at least 1".into()),
            r => Ok(r),
        }
    }

    fn buffer(&self) -> Res<usize> {
        match self.buffer.unwrap_or(THROUGHPUT_BUFFER) {
            0 => Err("--buffer must be at least 1".into()),
            b => Ok(b),
        }
    }

    fn domain(&self) -> Res<u32> {
        self.domain
            .ok_or_else(|| "--domain is set by the parent process".into())
    }

    fn service(&self) -> Res<&str> {
        self.service
            .as_deref()
            .ok_or_else(|| "--service is set by the parent process".into())
    }
}

// ------------------------------------------------------------------------------ parent

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Throughput,
    Latency,
}

/// Kills a child this process started (by its own handle, i.e. its pid) when dropped
/// without having been waited for.
struct Guard(Option<Child>);

impl Guard {
    fn wait(&mut self, limit: Duration) -> Res<std::process::ExitStatus> {
        let child = self.0.as_mut().ok_or("child already reaped")?;
        let begin = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                self.0 = None;
                return Ok(status);
            }
            if begin.elapsed() > limit {
                return Err(format!("child {} did not exit in {limit:?}", child.id()).into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Guard {
    /// Kills and reaps the child if it is still there.
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(role: &str, opts: &Opts, service: &str, stdout: Stdio) -> Res<Guard> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg(role)
        .arg("--payload")
        .arg(opts.payload()?.to_string())
        .arg("--service")
        .arg(service)
        .arg("--domain")
        .arg(std::process::id().to_string());
    if let Some(s) = opts.seconds {
        cmd.arg("--seconds").arg(s.to_string());
    }
    cmd.arg("--full-queue").arg(opts.full_queue.name());
    cmd.arg("--buffer").arg(opts.buffer()?.to_string());
    if let Some(r) = opts.round_trips {
        cmd.arg("--round-trips").arg(r.to_string());
    }
    if opts.zero_copy {
        cmd.arg("--zero-copy");
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the {role} process: {e}"))?;
    Ok(Guard(Some(child)))
}

/// Starts the two processes, forwards the reporting one's JSON line, and fails if either
/// side failed. On failure the surviving child is killed. Either way, once both are gone,
/// every resource of this invocation's iceoryx2 domain is removed.
fn parent(mode: Mode, opts: &Opts) -> Res<()> {
    // Validate before starting anything.
    opts.payload()?;
    let (reporter_role, other_role, run_time) = match mode {
        Mode::Throughput => ("__subscriber", "__publisher", opts.seconds()?),
        Mode::Latency => {
            let r = opts.round_trips()?;
            // Generous: 1 ms per round trip plus start-up.
            (
                "__ping",
                "__pong",
                Duration::from_millis(r.saturating_add(WARMUP)),
            )
        }
    };
    let service = format!("dmxp-bench/iceoryx2-peer/{}", std::process::id());
    let mut reporter = spawn(reporter_role, opts, &service, Stdio::piped())?;
    let mut other = spawn(other_role, opts, &service, Stdio::null())?;

    let mut out = String::new();
    if let Some(stdout) = reporter.0.as_mut().and_then(|c| c.stdout.as_mut()) {
        stdout.read_to_string(&mut out)?;
    }
    let limit = run_time + CONNECT_LIMIT + STALL_LIMIT;
    let reporter_status = reporter.wait(limit);
    let other_status = if matches!(&reporter_status, Ok(s) if s.success()) {
        other.wait(STALL_LIMIT + Duration::from_secs(5))
    } else {
        other.kill();
        Err("stopped after its peer failed".into())
    };
    let result = match (reporter_status, other_status) {
        (Ok(r), Ok(o)) if r.success() && o.success() => Ok(()),
        (Ok(r), _) if !r.success() => Err(format!("{reporter_role} process failed ({r})")),
        (Err(e), _) => Err(format!("{reporter_role} process: {e}")),
        (_, Ok(o)) => Err(format!("{other_role} process failed ({o})")),
        (_, Err(e)) => Err(format!("{other_role} process: {e}")),
    };
    // Make sure both children are gone (a timed-out one is killed here): then nobody
    // uses this invocation's domain any more.
    reporter.kill();
    other.kill();
    let cleaned = remove_domain(std::process::id());
    if let Err(e) = result {
        return Err(e.into());
    }
    cleaned?;
    let line = out.trim();
    if line.is_empty() || line.contains('\n') {
        return Err(format!("expected one JSON line from {reporter_role}, got {line:?}").into());
    }
    println!("{line}");
    Ok(())
}

/// Where the domain of invocation `id` keeps its files, and the prefix of all its names
/// (files there and POSIX shared memory segments in /dev/shm).
fn domain_paths(id: u32) -> (String, String) {
    (
        format!("/tmp/iceoryx2-peer-{id}/"),
        format!("iox2peer{id}_"),
    )
}

/// An iceoryx2 configuration of its own for each invocation (a "domain": its own root
/// path and name prefix). Concurrent runs cannot see each other, and the parent can
/// remove everything the run created, including iceoryx2's persistent per-domain node
/// counter segment, which a node does not remove when it goes. Everything else is
/// iceoryx2's default configuration.
fn domain_config(id: u32) -> Res<Config> {
    let (root, prefix) = domain_paths(id);
    let mut config = Config::default();
    config.global.set_root_path(&Path::new(root.as_bytes())?);
    config.global.prefix = FileName::new(prefix.as_bytes())?;
    Ok(config)
}

/// Removes every resource of domain `id`: its shared memory segments and its directory.
/// Only called once both children are gone.
fn remove_domain(id: u32) -> Res<()> {
    let (root, prefix) = domain_paths(id);
    let mut failed = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/dev/shm") {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    failed.push(format!("{}: {e}", entry.path().display()));
                }
            }
        }
    }
    match std::fs::remove_dir_all(&root) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => failed.push(format!("{root}: {e}")),
        _ => {}
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("cannot clean up: {}", failed.join("; ")).into())
    }
}

// ------------------------------------------------------------------------------ children

/// Pins the calling process to one CPU.
fn pin(cpu: usize) -> Res<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)
        .map_err(|e| format!("cannot pin to CPU {cpu}: {e}").into())
}

fn node(role: &str, opts: &Opts) -> Res<Node<Svc>> {
    let name = NodeName::new(&format!("{role}-{}", std::process::id()))?;
    Ok(NodeBuilder::new()
        .name(&name)
        .config(&domain_config(opts.domain()?)?)
        .create::<Svc>()?)
}

type PubSub = iceoryx2::service::port_factory::publish_subscribe::PortFactory<Svc, [u8], ()>;

/// The throughput service: one publisher, one subscriber, no history, a deep queue and
/// back-pressure instead of overwriting (safe overflow off), so no message is lost and
/// the checksum can demand consecutive sequence numbers.
fn throughput_service(node: &Node<Svc>, name: &str, buffer: usize) -> Res<PubSub> {
    Ok(node
        .service_builder(&ServiceName::new(&format!("{name}/data"))?)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(buffer)
        .subscriber_max_borrowed_samples(THROUGHPUT_BORROWED)
        .enable_safe_overflow(false)
        .open_or_create()?)
}

/// One direction of the ping-pong, set up as iceoryx2's own latency benchmark does.
fn latency_service(node: &Node<Svc>, name: &str, direction: &str) -> Res<PubSub> {
    Ok(node
        .service_builder(&ServiceName::new(&format!("{name}/{direction}"))?)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(LATENCY_BUFFER)
        .enable_safe_overflow(true)
        .open_or_create()?)
}

/// Spins (no sleep) until `ready` holds; fails after [`CONNECT_LIMIT`].
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) -> Res<()> {
    let begin = Instant::now();
    let mut polls = 0u64;
    while !ready() {
        polls += 1;
        if polls.is_multiple_of(1024) && begin.elapsed() > CONNECT_LIMIT {
            return Err(format!("no {what} within {CONNECT_LIMIT:?}").into());
        }
        std::hint::spin_loop();
    }
    Ok(())
}

/// Writes `seq` into the first and the last 8 bytes of `buf` (little-endian). Below 16
/// bytes the two would overlap, so only the first 8 carry it (at 8 bytes they are the same).
fn stamp(buf: &mut [u8], seq: u64) {
    let bytes = seq.to_le_bytes();
    let n = buf.len();
    buf[..8].copy_from_slice(&bytes);
    if n >= 16 {
        buf[n - 8..].copy_from_slice(&bytes);
    }
}

/// Loans a sample of `payload` bytes and writes only `seq` into its first and last 8 bytes
/// (what [`stamp`] writes), then sends it: a zero-copy message whose producer touches two
/// words. The peer reads only those words ([`read_stamp`]).
fn send_stamped(
    publisher: &iceoryx2::port::publisher::Publisher<Svc, [u8], ()>,
    payload: usize,
    seq: u64,
) -> Res<()> {
    let mut sample = publisher.loan_slice_uninit(payload)?;
    let bytes = seq.to_le_bytes();
    let words = sample.payload_mut();
    for (i, b) in bytes.iter().enumerate() {
        words[i].write(*b);
        words[payload - 8 + i].write(*b);
    }
    // SAFETY: the sample's bytes lie in iceoryx2's shared-memory data segment, memory mapped
    // from the operating system (zero-filled when created, or holding an earlier sample's
    // bytes), so every byte is an initialised `u8`; `MaybeUninit` only records that iceoryx2
    // has not written them. The receiver reads the two words written above.
    let sample = unsafe { sample.assume_init() };
    sample.send()?;
    Ok(())
}

/// The sequence number that [`stamp`] wrote into `buf`, if its copies agree.
fn read_stamp(buf: &[u8]) -> Option<u64> {
    let n = buf.len();
    let head = u64::from_le_bytes(buf.get(..8)?.try_into().ok()?);
    if n < 16 {
        return Some(head);
    }
    let tail = u64::from_le_bytes(buf[n - 8..].try_into().ok()?);
    (head == tail).then_some(head)
}

/// Counts empty polls and fails once nothing arrived for [`STALL_LIMIT`].
struct Stall {
    polls: u64,
    since: Instant,
}

impl Stall {
    fn new() -> Self {
        Self {
            polls: 0,
            since: Instant::now(),
        }
    }

    /// Something arrived.
    #[inline]
    fn progress(&mut self) {
        self.polls = 0;
    }

    /// An empty poll.
    #[inline]
    fn idle(&mut self, what: &str) -> Res<()> {
        self.polls += 1;
        if self.polls % POLLS_PER_CLOCK == 1 {
            if self.polls == 1 {
                self.since = Instant::now();
            } else if self.since.elapsed() > STALL_LIMIT {
                return Err(format!("nothing received for {STALL_LIMIT:?} ({what})").into());
            }
        }
        std::hint::spin_loop();
        Ok(())
    }
}

fn publisher(opts: &Opts) -> Res<()> {
    pin(0)?;
    let payload = opts.payload()?;
    let run_time = opts.seconds()?;
    let node = node("publisher", opts)?;
    let service = throughput_service(&node, opts.service()?, opts.buffer()?)?;
    let publisher = service
        .publisher_builder()
        .initial_max_slice_len(payload)
        .max_loaned_samples(THROUGHPUT_LOANS)
        .backpressure_strategy(match opts.full_queue {
            FullQueue::Wait => BackpressureStrategy::RetryUntilDelivered,
            FullQueue::Spin => BackpressureStrategy::DiscardData,
        })
        .create()?;
    wait_until("subscriber", || {
        service.dynamic_config().number_of_subscribers() >= 1
    })?;
    publisher.update_connections()?;

    let mut message = vec![0x5Au8; payload];
    // Stop on our own if the subscriber never says goodbye (it disconnects when done).
    let hard_stop = run_time + CONNECT_LIMIT + STALL_LIMIT;
    let begin = Instant::now();
    let mut seq = 0u64;
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        if attempts.is_multiple_of(POLLS_PER_CLOCK) && begin.elapsed() > hard_stop {
            return Err("the subscriber did not finish in time".into());
        }
        stamp(&mut message, seq);
        let sample = publisher.loan_slice_uninit(payload)?;
        let sample = sample.write_from_slice(&message);
        if sample.send()? == 0 {
            if service.dynamic_config().number_of_subscribers() == 0 {
                // The subscriber has disconnected: the run is over.
                break;
            }
            // Not delivered: the queue is full (`--full-queue spin`), or, at start-up only, the
            // subscriber is registered but has not attached to the connection yet and the
            // queue filled meanwhile. Send the same sequence number again.
            std::hint::spin_loop();
            continue;
        }
        seq += 1;
    }
    Ok(())
}

fn subscriber(opts: &Opts) -> Res<()> {
    pin(1)?;
    let payload = opts.payload()?;
    let run_time = opts.seconds()?;
    let node = node("subscriber", opts)?;
    let service = throughput_service(&node, opts.service()?, opts.buffer()?)?;
    let subscriber = service
        .subscriber_builder()
        .buffer_size(opts.buffer()?)
        .create()?;
    wait_until("publisher", || {
        service.dynamic_config().number_of_publishers() >= 1
    })?;
    subscriber.update_connections()?;

    let mut stall = Stall::new();
    let mut checksum_ok = true;
    let check =
        |bytes: &[u8], expected: u64| bytes.len() == payload && read_stamp(bytes) == Some(expected);

    // The clock starts at the first message.
    let first = loop {
        if let Some(sample) = subscriber.receive()? {
            break sample;
        }
        stall.idle("waiting for the first message")?;
    };
    checksum_ok &= check(first.payload(), 0);
    drop(first);
    let t_first = Instant::now();
    let mut expected = 1u64;
    let t_last = loop {
        match subscriber.receive()? {
            Some(sample) => {
                checksum_ok &= check(sample.payload(), expected);
                drop(sample);
                expected += 1;
                stall.progress();
                if expected.is_multiple_of(MSGS_PER_CLOCK) {
                    let now = Instant::now();
                    if now - t_first >= run_time {
                        break now;
                    }
                }
            }
            None => stall.idle("during the run")?,
        }
    };
    // Disconnect before printing so the publisher stops at once.
    drop(subscriber);
    drop(service);
    drop(node);

    let messages = expected;
    let elapsed_ns = (t_last - t_first).as_nanos() as u64;
    let rate = messages as f64 * 1e9 / elapsed_ns as f64;
    println!(
        "{{\"system\":\"iceoryx2\",\"payload\":{payload},\"messages\":{messages},\
         \"elapsed_ns\":{elapsed_ns},\"msgs_per_sec\":{rate:.1},\"checksum_ok\":{checksum_ok}}}"
    );
    if !checksum_ok {
        return Err("checksum failed: sequence numbers were not consecutive".into());
    }
    Ok(())
}

fn ping(opts: &Opts) -> Res<()> {
    pin(0)?;
    let payload = opts.payload()?;
    let rounds = opts.round_trips()?;
    let name = opts.service()?;
    let node = node("ping", opts)?;
    let out_service = latency_service(&node, name, "ping")?;
    let back_service = latency_service(&node, name, "pong")?;
    let publisher = out_service
        .publisher_builder()
        .initial_max_slice_len(payload)
        .max_loaned_samples(LATENCY_LOANS)
        .create()?;
    let subscriber = back_service
        .subscriber_builder()
        .buffer_size(LATENCY_BUFFER)
        .create()?;
    wait_until("pong", || {
        out_service.dynamic_config().number_of_subscribers() >= 1
            && back_service.dynamic_config().number_of_publishers() >= 1
    })?;
    publisher.update_connections()?;
    subscriber.update_connections()?;

    let total = WARMUP + rounds;
    let mut samples: Vec<u64> = Vec::with_capacity(rounds as usize);
    let mut message = vec![0x5Au8; payload];
    let mut stall = Stall::new();
    // As dmxp-bench does: each round trip is timed from the end of the previous one.
    let mut last = Instant::now();
    for seq in 0..total {
        if opts.zero_copy {
            send_stamped(&publisher, payload, seq)?;
        } else {
            stamp(&mut message, seq);
            publisher
                .loan_slice_uninit(payload)?
                .write_from_slice(&message)
                .send()?;
        }
        let reply = loop {
            if let Some(sample) = subscriber.receive()? {
                break sample;
            }
            stall.idle("waiting for pong")?;
        };
        stall.progress();
        let now = Instant::now();
        if reply.payload().len() != payload || read_stamp(reply.payload()) != Some(seq) {
            return Err(format!("pong's reply {seq} does not echo the sequence number").into());
        }
        drop(reply);
        if seq >= WARMUP {
            samples.push((now - last).as_nanos() as u64);
        }
        last = now;
    }
    drop(subscriber);
    drop(publisher);

    samples.sort_unstable();
    let at = |q: f64| -> f64 {
        let index = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[index] as f64 / 2.0
    };
    println!(
        "{{\"system\":\"iceoryx2\",\"payload\":{payload},\"p50_ns\":{:.1},\"p99_ns\":{:.1},\
         \"p999_ns\":{:.1},\"round_trips\":{rounds}}}",
        at(0.50),
        at(0.99),
        at(0.999)
    );
    Ok(())
}

fn pong(opts: &Opts) -> Res<()> {
    pin(1)?;
    let payload = opts.payload()?;
    let rounds = opts.round_trips()?;
    let name = opts.service()?;
    let node = node("pong", opts)?;
    let in_service = latency_service(&node, name, "ping")?;
    let out_service = latency_service(&node, name, "pong")?;
    let subscriber = in_service
        .subscriber_builder()
        .buffer_size(LATENCY_BUFFER)
        .create()?;
    let publisher = out_service
        .publisher_builder()
        .initial_max_slice_len(payload)
        .max_loaned_samples(LATENCY_LOANS)
        .create()?;
    wait_until("ping", || {
        out_service.dynamic_config().number_of_subscribers() >= 1
            && in_service.dynamic_config().number_of_publishers() >= 1
    })?;
    publisher.update_connections()?;
    subscriber.update_connections()?;

    let mut stall = Stall::new();
    for seq in 0..WARMUP + rounds {
        let request = loop {
            if let Some(sample) = subscriber.receive()? {
                break sample;
            }
            stall.idle("waiting for ping")?;
        };
        stall.progress();
        if request.payload().len() != payload || read_stamp(request.payload()) != Some(seq) {
            return Err(format!("ping's message {seq} has the wrong sequence number").into());
        }
        if opts.zero_copy {
            // Echo the sequence number in a freshly loaned sample, its two words only.
            drop(request);
            send_stamped(&publisher, payload, seq)?;
        } else {
            // Echo the message (a full copy into a freshly loaned sample).
            publisher
                .loan_slice_uninit(payload)?
                .write_from_slice(request.payload())
                .send()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_at_both_ends() {
        for len in [8usize, 9, 15, 16, 32, 960, 65536] {
            let mut buf = vec![0u8; len];
            stamp(&mut buf, 0x0102_0304_0506_0708);
            assert_eq!(read_stamp(&buf), Some(0x0102_0304_0506_0708));
        }
        let mut buf = vec![0u8; 32];
        stamp(&mut buf, 7);
        buf[31] ^= 1;
        assert_eq!(read_stamp(&buf), None);
    }

    #[test]
    fn options_parse_and_validate() {
        let args: Vec<String> = ["--payload", "32", "--seconds", "2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let opts = Opts::parse(&args).unwrap();
        assert_eq!(opts.payload().unwrap(), 32);
        assert_eq!(opts.seconds().unwrap(), Duration::from_secs(2));
        assert!(opts.round_trips().is_err());
        let bad: Vec<String> = ["--payload", "4"].iter().map(|s| s.to_string()).collect();
        assert!(Opts::parse(&bad).unwrap().payload().is_err());
    }
}
