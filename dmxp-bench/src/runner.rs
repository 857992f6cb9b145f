//! The parent: sets up each run (segment, channels, pipes, sockets), re-executes this binary
//! as the child processes, starts them together, stops them, and collects their reports.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Args;
use dmxp::ChannelBuilder;
use indicatif::{ProgressBar, ProgressStyle};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::pipe::PipeFlags;

use crate::child::Res;
use crate::control::{Control, SEGMENT_SIZE};
use crate::spec::{ChildResult, ChildSpec, Mode, Percentiles, Role, Shape, System, CHILD_ARG};

/// How one run is driven.
#[derive(Clone, Debug)]
pub struct RunLength {
    /// Seconds per run when `messages` is `None`.
    pub seconds: f64,
    /// Messages per producer (throughput) or round trips (latency), instead of a duration.
    pub messages: Option<u64>,
    /// Slots per ring (and elements per `ArrayQueue`).
    pub capacity: u64,
}

/// The options that set how long each run is (`--quick`, `--seconds`, `--messages`), flattened
/// into those of `dmxp-bench`, `dmxp-bench large` and `dmxp-bench async`; each command sets
/// the help to its own defaults and units (`mut_arg`).
#[derive(Args, Clone, Debug)]
pub struct LengthArgs {
    /// Short runs.
    #[arg(long)]
    pub quick: bool,
    /// Seconds per run.
    #[arg(long, conflicts_with = "messages")]
    pub seconds: Option<f64>,
    /// A fixed number of messages per run instead of a duration.
    #[arg(long)]
    pub messages: Option<u64>,
}

impl LengthArgs {
    /// The length of every run: `--messages` if given, else `--seconds`, else `seconds` (or
    /// `quick_seconds` with `--quick`), with rings of `capacity` slots. A timed run must last
    /// a positive, finite time.
    pub fn run_length(&self, seconds: f64, quick_seconds: f64, capacity: u64) -> Res<RunLength> {
        let length = RunLength {
            seconds: self
                .seconds
                .unwrap_or(if self.quick { quick_seconds } else { seconds }),
            messages: self.messages,
            capacity,
        };
        if self.messages.is_none() && !(length.seconds > 0.0 && length.seconds.is_finite()) {
            return Err("--seconds must be positive".into());
        }
        Ok(length)
    }
}

/// `--reps` of `dmxp-bench large` and `dmxp-bench async`: as given, else 5 (3 with
/// `--quick`); at least 1.
pub(crate) fn repetitions(reps: Option<usize>, quick: bool) -> Res<usize> {
    let reps = reps.unwrap_or(if quick { 3 } else { 5 });
    if reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    Ok(reps)
}

/// Measures every job `reps` times, repetition r of every job before repetition r + 1 of any
/// (so that a noisy machine hurts all alike), behind a progress bar unless `no_progress`.
/// `measure(k, job)` runs job `k` once (and keeps what it measured); its error is prefixed
/// with the job's `label`. Once all ran, removes the directory of the children's results.
pub(crate) fn interleave<J>(
    jobs: &[J],
    reps: usize,
    no_progress: bool,
    label: impl Fn(&J) -> String,
    mut measure: impl FnMut(usize, &J) -> Res<()>,
) -> Res<()> {
    let bar = if no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((jobs.len() * reps) as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    for _ in 0..reps {
        for (k, job) in jobs.iter().enumerate() {
            bar.set_message(label(job));
            measure(k, job).map_err(|e| format!("{}: {e}", label(job)))?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    remove_results_dir();
    Ok(())
}

/// Where the children run.
#[derive(Clone, Debug)]
pub struct Placement {
    /// Producers (and pings) here...
    pub producer_cpu: Option<usize>,
    /// ...consumers (and pongs) here.
    pub consumer_cpu: Option<usize>,
}

impl Placement {
    /// Two different cores when the process may use two or more, else no pinning.
    #[must_use]
    pub fn detect() -> Self {
        let cpus = crate::control::allowed_cpus();
        if cpus.len() >= 2 {
            Self {
                producer_cpu: Some(cpus[0]),
                consumer_cpu: Some(cpus[1]),
            }
        } else {
            Self {
                producer_cpu: None,
                consumer_cpu: None,
            }
        }
    }
}

/// What one throughput run measured.
#[derive(Clone, Debug)]
pub struct ThroughputSample {
    /// Messages received per second, from the first child's start to the last consumer's end
    /// (the floor counts two hand-overs per round trip).
    pub msgs_per_sec: f64,
    /// Messages received (hand-overs for the floor).
    pub messages: u64,
    /// Futex wake calls summed over the run's children.
    pub futex_wake: u64,
    /// Futex wait calls summed over the run's children.
    pub futex_wait: u64,
    /// DMXP: messages per successful send call (producers) and per receive call that got
    /// something (consumers); 1.0 for single sends, up to the batch size for batches.
    pub per_send_call: Option<f64>,
    /// DMXP: messages per receive call that got at least one.
    pub per_receive_call: Option<f64>,
}

/// What one latency run measured.
#[derive(Clone, Debug)]
pub struct LatencySample {
    /// The ping's one-way percentiles.
    pub percentiles: Percentiles,
    /// Futex wake calls summed over both children.
    pub futex_wake: u64,
    /// Futex wait calls summed over both children.
    pub futex_wait: u64,
}

/// A run's shm segment, unlinked when dropped.
pub(crate) struct RunSegment {
    pub(crate) name: String,
    pub(crate) allocator: dmxp::SharedMemoryAllocator,
}

impl Drop for RunSegment {
    fn drop(&mut self) {
        let _ = dmxp::unlink_segment(&self.name);
    }
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) fn new_segment(dmxp_channels: u32, capacity: u64) -> Res<RunSegment> {
    let name = format!(
        "/dmxp-bench-{}-{}",
        std::process::id(),
        RUN_COUNTER.fetch_add(1, Relaxed)
    );
    let allocator = ChannelBuilder::new()
        .with_segment_name(&name)
        .with_segment_size(SEGMENT_SIZE)
        .build_allocator()?;
    let segment = RunSegment { name, allocator };
    for id in 0..dmxp_channels {
        segment.allocator.producer_or_create(id, capacity)?;
    }
    Ok(segment)
}

/// A run's segment with one channel (id 0) of `capacity` slots made for messages of up to
/// `max_message_size` bytes (runs of slots, PROTOCOL.md §12), for the large-message benchmark.
pub(crate) fn new_large_segment(capacity: u64, max_message_size: usize) -> Res<RunSegment> {
    let segment = new_segment(0, capacity)?;
    // Created through the builder, as an application would; the handle is dropped at once and
    // the children attach to the channel by id.
    ChannelBuilder::new()
        .with_segment_name(&segment.name)
        .with_channel_id(0)
        .with_capacity(capacity)
        .with_max_message_size(max_message_size)
        .build_producer()?;
    Ok(segment)
}

/// One child to start: what it does, and the pipe or socket ends it gets as stdin/stdout.
pub(crate) struct Launch {
    pub(crate) spec: ChildSpec,
    pub(crate) stdin: Option<OwnedFd>,
    pub(crate) stdout: Option<OwnedFd>,
}

/// Starts the children, waits until all are ready, gives the go, stops them after the run's
/// duration, and returns their results in launch order.
pub(crate) fn execute(
    segment: &RunSegment,
    launches: Vec<Launch>,
    length: &RunLength,
) -> Res<Vec<ChildResult>> {
    let exe = std::env::current_exe()?;
    results_dir()?;
    let mut children: Vec<(Child, PathBuf)> = Vec::new();
    let count = launches.len();
    let spawned = (|| -> Res<()> {
        for launch in launches {
            let fd_in = launch.stdin.map_or_else(Stdio::null, Stdio::from);
            let fd_out = launch.stdout.map_or_else(Stdio::null, Stdio::from);
            let out = launch.spec.out.clone();
            let child = Command::new(&exe)
                .arg(CHILD_ARG)
                .arg(serde_json::to_string(&launch.spec)?)
                .stdin(fd_in)
                .stdout(fd_out)
                .stderr(Stdio::inherit())
                .spawn()?;
            // The Command (and with it our copy of the fds) is gone here, so a reader sees
            // end-of-file once its writers exit.
            children.push((child, out));
        }
        Ok(())
    })();
    let outcome = spawned.and_then(|()| drive(segment, &mut children, count, length));
    if outcome.is_err() {
        for (child, _) in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    outcome?;
    let mut results = Vec::new();
    for (_, out) in &children {
        let text = std::fs::read(out)?;
        results.push(serde_json::from_slice(&text)?);
        let _ = std::fs::remove_file(out);
    }
    Ok(results)
}

fn drive(
    segment: &RunSegment,
    children: &mut [(Child, PathBuf)],
    count: usize,
    length: &RunLength,
) -> Res<()> {
    let region = segment.allocator.memory().region();
    let control = Control::new(region).ok_or("segment too small for the control block")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while control.ready_count() < count as u64 {
        for (child, _) in children.iter_mut() {
            if let Some(status) = child.try_wait()? {
                return Err(format!("a benchmark child exited before starting: {status}").into());
            }
        }
        if Instant::now() > deadline {
            return Err("benchmark children did not get ready within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    control.set_go();
    if length.messages.is_none() {
        std::thread::sleep(Duration::from_secs_f64(length.seconds));
        control.set_stop();
    }
    let limit = Duration::from_secs_f64(length.seconds) + Duration::from_secs(120);
    let deadline = Instant::now() + limit;
    for (child, _) in children.iter_mut() {
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    return Err(format!("a benchmark child failed: {status}").into());
                }
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("a benchmark child did not finish within {limit:?}").into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

fn results_dir_path() -> PathBuf {
    std::env::temp_dir().join(format!("dmxp-bench-{}", std::process::id()))
}

pub(crate) fn results_dir() -> Res<PathBuf> {
    let dir = results_dir_path();
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Removes this process's (by now empty) directory of child result files.
pub fn remove_results_dir() {
    let _ = std::fs::remove_dir(results_dir_path());
}

pub(crate) fn out_path(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("child-{}-{k}.json", RUN_COUNTER.load(Relaxed)))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn spec(
    role: Role,
    system: System,
    shape: Option<Shape>,
    mode: Option<Mode>,
    payload: usize,
    segment: &RunSegment,
    channel: u32,
    index: usize,
    producers: usize,
    length: &RunLength,
    cpu: Option<usize>,
    cpu2: Option<usize>,
    out: PathBuf,
) -> ChildSpec {
    ChildSpec {
        role,
        system,
        shape,
        mode,
        payload,
        segment: segment.name.clone(),
        channel,
        index,
        producers,
        messages: length.messages,
        capacity: length.capacity,
        cpu,
        cpu2,
        out,
        large: false,
        tokio: false,
    }
}

fn socketpair() -> Res<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// A connected pair of Unix stream sockets (`SOCK_STREAM`: a byte stream, no boundaries).
pub(crate) fn stream_socketpair() -> Res<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

pub(crate) fn pipe() -> Res<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?)
}

/// Makes the first `count` bare rings of the run's segment empty, before any child starts.
fn init_bare_rings(segment: &RunSegment, count: usize, capacity: u64) -> Res<()> {
    for index in 0..count {
        crate::control::bare_ring(segment.allocator.memory().region(), index, capacity)
            .ok_or("the segment has no room for the bare ring")?
            .init();
    }
    Ok(())
}

/// Measures one throughput run.
pub fn throughput(
    system: System,
    shape: Shape,
    payload: usize,
    length: &RunLength,
    placement: &Placement,
) -> Res<ThroughputSample> {
    let channels = shape.channels();
    let per = shape.per_channel();
    let segment = new_segment(
        if system.is_dmxp() { channels as u32 } else { 0 },
        length.capacity,
    )?;
    if system == System::BareRing {
        init_bare_rings(&segment, 1, length.capacity)?;
    }
    let dir = results_dir()?;
    let (pc, cc) = (placement.producer_cpu, placement.consumer_cpu);
    let mut launches = Vec::new();
    let mut k = 0;
    let mut next_out = || {
        k += 1;
        out_path(&dir, k)
    };
    let child = |role, channel: u32, index, cpu, out| {
        spec(
            role,
            system,
            Some(shape),
            None,
            payload,
            &segment,
            channel,
            index,
            per,
            length,
            cpu,
            None,
            out,
        )
    };
    match system {
        System::ArrayQueue => {
            let mut s = child(Role::InProcess, 0, 0, pc, next_out());
            s.cpu2 = cc;
            launches.push(Launch {
                spec: s,
                stdin: None,
                stdout: None,
            });
        }
        _ => {
            for channel in 0..channels as u32 {
                let (producer_end, consumer_end, producer_is_stdout) = match system {
                    System::Uds => {
                        let (a, b) = socketpair()?;
                        (Some(a), Some(b), false)
                    }
                    System::Pipe => {
                        let (read, write) = pipe()?;
                        (Some(write), Some(read), true)
                    }
                    _ => (None, None, false),
                };
                for index in 0..per {
                    let end = match &producer_end {
                        Some(fd) => Some(fd.try_clone()?),
                        None => None,
                    };
                    let (stdin, stdout) = if producer_is_stdout {
                        (None, end)
                    } else {
                        (end, None)
                    };
                    launches.push(Launch {
                        spec: child(Role::Producer, channel, index, pc, next_out()),
                        stdin,
                        stdout,
                    });
                }
                for index in 0..per {
                    let stdin = match &consumer_end {
                        Some(fd) => Some(fd.try_clone()?),
                        None => None,
                    };
                    launches.push(Launch {
                        spec: child(Role::Consumer, channel, index, cc, next_out()),
                        stdin,
                        stdout: None,
                    });
                }
            }
        }
    }
    let roles: Vec<Role> = launches.iter().map(|l| l.spec.role).collect();
    let results = execute(&segment, launches, length)?;
    let received: u64 = roles
        .iter()
        .zip(&results)
        .filter(|(role, _)| matches!(role, Role::Consumer | Role::InProcess))
        .map(|(_, r)| r.messages)
        .sum();
    let sent: u64 = roles
        .iter()
        .zip(&results)
        .filter(|(role, _)| **role == Role::Producer)
        .map(|(_, r)| r.messages)
        .sum();
    if system != System::ArrayQueue && sent != received {
        return Err(format!(
            "{system} {}: {sent} messages sent but {received} received",
            shape.name()
        )
        .into());
    }
    if system == System::BareRing {
        let sum = |want: Role| {
            roles
                .iter()
                .zip(&results)
                .filter(|(role, _)| **role == want)
                .fold(0u64, |acc, (_, r)| acc.wrapping_add(r.checksum))
        };
        if sum(Role::Producer) != sum(Role::Consumer) {
            return Err(format!(
                "{system} {}: checksum of the messages received differs from that of those sent",
                shape.name()
            )
            .into());
        }
    }
    if let Some(per_producer) = length.messages {
        let expected = per_producer * (channels * per) as u64;
        if system != System::Floor && received != expected {
            return Err(format!(
                "{system} {}: expected {expected} messages, got {received}",
                shape.name()
            )
            .into());
        }
    }
    // The floor counts round trips on each side; every round trip is two hand-overs.
    let moved = if system == System::Floor {
        2 * received
    } else {
        received
    };
    let start = results.iter().map(|r| r.start_ns).min().unwrap_or(0);
    let end = roles
        .iter()
        .zip(&results)
        .filter(|(role, _)| **role != Role::Producer || system == System::Floor)
        .map(|(_, r)| r.end_ns)
        .max()
        .unwrap_or(start);
    let elapsed = end.saturating_sub(start).max(1) as f64 / 1e9;
    let per_call = |role: Role, messages: u64| {
        let calls: u64 = roles
            .iter()
            .zip(&results)
            .filter(|(r, _)| **r == role)
            .map(|(_, r)| r.calls)
            .sum();
        (system.is_dmxp() && calls > 0).then(|| messages as f64 / calls as f64)
    };
    Ok(ThroughputSample {
        msgs_per_sec: moved as f64 / elapsed,
        messages: moved,
        futex_wake: results.iter().map(|r| r.futex_wake).sum(),
        futex_wait: results.iter().map(|r| r.futex_wait).sum(),
        per_send_call: per_call(Role::Producer, sent),
        per_receive_call: per_call(Role::Consumer, received),
    })
}

/// Measures one latency run (ping-pong).
pub fn latency(
    system: System,
    mode: Mode,
    payload: usize,
    length: &RunLength,
    placement: &Placement,
) -> Res<LatencySample> {
    let segment = new_segment(if system.is_dmxp() { 2 } else { 0 }, length.capacity)?;
    if system == System::BareRing {
        init_bare_rings(&segment, 2, length.capacity)?;
    }
    let dir = results_dir()?;
    let (pc, cc) = (placement.producer_cpu, placement.consumer_cpu);
    let child = |role, cpu, k| {
        spec(
            role,
            system,
            None,
            Some(mode),
            payload,
            &segment,
            0,
            0,
            1,
            length,
            cpu,
            None,
            out_path(&dir, k),
        )
    };
    let launches = match system {
        System::ArrayQueue => {
            let mut s = child(Role::InProcess, pc, 1);
            s.cpu2 = cc;
            vec![Launch {
                spec: s,
                stdin: None,
                stdout: None,
            }]
        }
        System::Uds => {
            let (a, b) = socketpair()?;
            vec![
                Launch {
                    spec: child(Role::Ping, pc, 1),
                    stdin: Some(a),
                    stdout: None,
                },
                Launch {
                    spec: child(Role::Pong, cc, 2),
                    stdin: Some(b),
                    stdout: None,
                },
            ]
        }
        System::Pipe => {
            let (there_read, there_write) = pipe()?;
            let (back_read, back_write) = pipe()?;
            vec![
                Launch {
                    spec: child(Role::Ping, pc, 1),
                    stdin: Some(back_read),
                    stdout: Some(there_write),
                },
                Launch {
                    spec: child(Role::Pong, cc, 2),
                    stdin: Some(there_read),
                    stdout: Some(back_write),
                },
            ]
        }
        _ => vec![
            Launch {
                spec: child(Role::Ping, pc, 1),
                stdin: None,
                stdout: None,
            },
            Launch {
                spec: child(Role::Pong, cc, 2),
                stdin: None,
                stdout: None,
            },
        ],
    };
    let results = execute(&segment, launches, length)?;
    let percentiles = results
        .first()
        .and_then(|r| r.latency)
        .ok_or("the ping reported no latency")?;
    if percentiles.samples == 0 {
        return Err(format!(
            "{system} {}: no latency samples (run too short?)",
            mode.name()
        )
        .into());
    }
    Ok(LatencySample {
        percentiles,
        futex_wake: results.iter().map(|r| r.futex_wake).sum(),
        futex_wait: results.iter().map(|r| r.futex_wait).sum(),
    })
}
