//! The async-wait benchmark (`dmxp-bench async`, issue #12): round trips of a message and its
//! answer between two processes whose ends wait from a tokio event loop (PROTOCOL.md §7.4),
//! side by side in one run with the blocking futex path and with what a tokio user would
//! otherwise write, a Unix stream socket.
//!
//! Arms, 32-byte messages by default, every repetition of every arm interleaved:
//! * **dmxp-async**: ping and pong each on a current-thread tokio runtime. The ping
//!   `send_async`s a message and awaits `receive_async` for the answer; the pong awaits
//!   `receive_async` and `send_async`s the answer. The rings (1024 slots) never fill, so a
//!   `send_async` completes at once; every wait for a message is an `io_uring` futex wait on
//!   the channel's `not_empty` word whose ring fd tokio polls.
//! * **dmxp-blocking**: the same ping-pong with `send` and `receive_blocking` (a thread asleep
//!   in `futex(2)`): the blocking row of the main benchmark ([`crate::runner::latency`]).
//! * **uds-tokio**: a Unix `SOCK_STREAM` socket pair, each end a `tokio::net::UnixStream` on a
//!   current-thread runtime; `write_all` of the 32 bytes, `read_exact` of the 32-byte answer
//!   into a reused buffer.
//! * **asyncio**: the dmxp-async ping-pong (the same channels, capacity and payload) between two
//!   Python processes, each on its own asyncio event loop, `await producer.send_async(...)` and
//!   `await consumer.receive_async()` of the `dmxp` package (an `io_uring` futex wait whose fd
//!   the loop watches with `add_reader`); see `python_asyncio.rs`. It runs under the
//!   interpreter given with `--python` (default `python3`); when that cannot `import dmxp`, the
//!   arm is skipped, loudly (stderr and the report), and the other arms run.
//!
//! The ping is pinned to one CPU and the pong to another (as in the rest of the crate), and
//! times every round trip (one clock read per round trip, the first 200 dropped). Rows show,
//! over the repetitions, the median of each run's p50, p99 and p99.9 of the **round trip**
//! (not halved, unlike the main benchmark's one-way latency table).

use std::path::{Path, PathBuf};

use clap::Args;
use dmxp::SharedMemoryAllocator;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::child::{pong_result, start, stdio_fd, Res, RoundTrips, STOP_LEN, WARMUP};
use crate::control::Control;
use crate::report::{align, median, run_length_text, write_json, Machine};
use crate::runner::{self, Launch, LengthArgs, Placement, RunLength};
use crate::spec::{ChildResult, ChildSpec, Mode, Percentiles, Role, System};

/// Command-line options of `dmxp-bench async`.
#[derive(Args, Clone, Debug)]
#[command(
    mut_arg("quick", |a| a.help("Short runs: 0.2 s per run and 3 repetitions")),
    mut_arg("seconds", |a| a.help("Seconds per run (default 2, or 0.2 with --quick)")),
    mut_arg("messages", |a| a.help("A fixed number of round trips per run instead of a duration"))
)]
pub struct AsyncArgs {
    /// How long each run is (`--quick`, `--seconds`, `--messages`).
    #[command(flatten)]
    pub length: LengthArgs,
    /// Repetitions of every arm; the report shows medians (default 5, 3 with --quick).
    #[arg(long)]
    pub reps: Option<usize>,
    /// Bytes per message (and per answer), 8..=960.
    #[arg(long, default_value_t = 32)]
    pub payload: usize,
    /// Only these arms (dmxp-async, dmxp-blocking, uds-tokio, asyncio).
    #[arg(long, value_delimiter = ',', value_parser = parse_arm)]
    pub arms: Option<Vec<Arm>>,
    /// The Python interpreter of the asyncio arm: one that can `import dmxp` (the arm is
    /// skipped, with a message, when it cannot), e.g. bindings/python/.venv/bin/python.
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
    /// Write the full report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

fn parse_arm(name: &str) -> Result<Arm, String> {
    Arm::ALL
        .into_iter()
        .find(|a| a.name() == name)
        .ok_or_else(|| {
            format!("unknown arm {name:?} (one of dmxp-async, dmxp-blocking, uds-tokio, asyncio)")
        })
}

/// How the two ends of a ping-pong move messages and wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Arm {
    /// DMXP, `send_async` / `receive_async` on a current-thread tokio runtime (an `io_uring`
    /// futex wait polled by tokio).
    DmxpAsync,
    /// DMXP, `send` / `receive_blocking` (a futex wait in a sleeping thread).
    DmxpBlocking,
    /// A Unix stream socket pair as `tokio::net::UnixStream`s on current-thread runtimes.
    UdsTokio,
    /// DMXP from Python: `await send_async` / `await receive_async` on an asyncio event loop
    /// in each of two Python processes.
    Asyncio,
}

impl Arm {
    /// In the order runs and tables use.
    pub const ALL: [Arm; 4] = [
        Arm::DmxpAsync,
        Arm::DmxpBlocking,
        Arm::UdsTokio,
        Arm::Asyncio,
    ];

    /// The name in tables, on the command line and in JSON.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Arm::DmxpAsync => "dmxp-async",
            Arm::DmxpBlocking => "dmxp-blocking",
            Arm::UdsTokio => "uds-tokio",
            Arm::Asyncio => "asyncio",
        }
    }
}

/// What one run of an arm measured.
#[derive(Clone, Copy, Debug)]
pub struct AsyncSample {
    /// Round-trip percentiles, ns (not halved).
    pub round_trip: Percentiles,
    /// DMXP futex wake calls summed over both processes.
    pub futex_wake: u64,
    /// DMXP futex wait calls (a thread asleep in `futex(2)`) summed over both processes;
    /// `None` where they are not counted (the Python module has no such counter).
    pub futex_wait: Option<u64>,
    /// `io_uring` futex waits submitted, summed over both processes.
    pub io_uring_waits: u64,
    /// Those of them completed by a wake, summed over both processes.
    pub io_uring_wakeups: u64,
}

/// Round-trip percentiles from the one-way ones a ping reports (round trip / 2).
pub(crate) fn doubled(one_way: Percentiles) -> Percentiles {
    Percentiles {
        p50: 2.0 * one_way.p50,
        p99: 2.0 * one_way.p99,
        p999: 2.0 * one_way.p999,
        samples: one_way.samples,
    }
}

/// Measures one run of `arm` with messages of `payload` bytes; `python` is the interpreter of
/// the asyncio arm.
pub fn measure(
    arm: Arm,
    payload: usize,
    length: &RunLength,
    placement: &Placement,
    python: &Path,
) -> Res<AsyncSample> {
    let system = match arm {
        Arm::Asyncio => {
            return crate::python_asyncio::measure(python, payload, length, placement);
        }
        Arm::DmxpBlocking => {
            let sample = runner::latency(
                System::DmxpSingle,
                Mode::Blocking,
                payload,
                length,
                placement,
            )?;
            return Ok(AsyncSample {
                round_trip: doubled(sample.percentiles),
                futex_wake: sample.futex_wake,
                futex_wait: Some(sample.futex_wait),
                io_uring_waits: 0,
                io_uring_wakeups: 0,
            });
        }
        Arm::DmxpAsync => System::DmxpSingle,
        Arm::UdsTokio => System::Uds,
    };
    let segment = runner::new_segment(if system.is_dmxp() { 2 } else { 0 }, length.capacity)?;
    let dir = runner::results_dir()?;
    let child = |role, cpu, k| {
        let mut spec = runner::spec(
            role,
            system,
            None,
            None,
            payload,
            &segment,
            0,
            0,
            1,
            length,
            cpu,
            None,
            runner::out_path(&dir, k),
        );
        spec.tokio = true;
        spec
    };
    let (ping_end, pong_end) = if system == System::Uds {
        let (a, b) = runner::stream_socketpair()?;
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    let launches = vec![
        Launch {
            spec: child(Role::Ping, placement.producer_cpu, 1),
            stdin: ping_end,
            stdout: None,
        },
        Launch {
            spec: child(Role::Pong, placement.consumer_cpu, 2),
            stdin: pong_end,
            stdout: None,
        },
    ];
    let results = runner::execute(&segment, launches, length)?;
    let one_way = results
        .first()
        .and_then(|r| r.latency)
        .ok_or("the ping reported no latency")?;
    if one_way.samples == 0 {
        return Err(format!("{}: no latency samples (run too short?)", arm.name()).into());
    }
    let pings = results[0].messages;
    let pongs = results.get(1).map_or(0, |r| r.messages);
    if pings != pongs {
        return Err(format!(
            "{}: {pings} round trips timed but {pongs} answered",
            arm.name()
        )
        .into());
    }
    if length.messages.is_some_and(|n| n != pings) {
        return Err(format!(
            "{}: {pings} round trips, not {:?}",
            arm.name(),
            length.messages
        )
        .into());
    }
    let sum = |f: fn(&ChildResult) -> u64| results.iter().map(f).sum();
    Ok(AsyncSample {
        round_trip: doubled(one_way),
        futex_wake: sum(|r| r.futex_wake),
        futex_wait: Some(sum(|r| r.futex_wait)),
        io_uring_waits: sum(|r| r.io_uring_waits),
        io_uring_wakeups: sum(|r| r.io_uring_wakeups),
    })
}

// ------------------------------------------------------------------------------ children

/// Runs a ping or pong of the async benchmark (`spec.tokio`) on a current-thread runtime.
pub(crate) fn child(
    spec: &ChildSpec,
    control: &Control<'_>,
    alloc: &SharedMemoryAllocator,
) -> Res<ChildResult> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (waits, wakeups) = (dmxp::io_uring_futex_waits(), dmxp::io_uring_futex_wakeups());
    let mut result = runtime.block_on(async {
        match (spec.role, spec.system) {
            (Role::Ping, System::DmxpSingle) => dmxp_ping(spec, control, alloc).await,
            (Role::Pong, System::DmxpSingle) => dmxp_pong(spec, control, alloc).await,
            (Role::Ping, System::Uds) => uds_ping(spec, control).await,
            (Role::Pong, System::Uds) => uds_pong(spec, control).await,
            (role, system) => Err(format!("no {role:?} of {system} in the async benchmark").into()),
        }
    })?;
    result.io_uring_waits = dmxp::io_uring_futex_waits() - waits;
    result.io_uring_wakeups = dmxp::io_uring_futex_wakeups() - wakeups;
    Ok(result)
}

async fn dmxp_ping(
    spec: &ChildSpec,
    control: &Control<'_>,
    alloc: &SharedMemoryAllocator,
) -> Res<ChildResult> {
    let mut producer = alloc.producer(spec.channel)?;
    let mut consumer = alloc.consumer(spec.channel + 1)?;
    let mut payload = vec![0x5Au8; spec.payload];
    let mut trips = RoundTrips::start(spec, control)?;
    while trips.next(&mut payload) {
        producer.send_async(&payload).await?;
        let answer = consumer.receive_async().await?;
        if answer.len() != spec.payload {
            return Err(format!("an answer of {} bytes", answer.len()).into());
        }
        trips.tick();
    }
    producer.send_async(&payload[..STOP_LEN]).await?;
    if consumer.async_wakeup() != Some(dmxp::AsyncWakeup::IoUring) && trips.rounds() > 0 {
        eprintln!(
            "dmxp-bench async: the ping's waits used {:?}, not io_uring",
            consumer.async_wakeup()
        );
    }
    Ok(trips.result())
}

async fn dmxp_pong(
    spec: &ChildSpec,
    control: &Control<'_>,
    alloc: &SharedMemoryAllocator,
) -> Res<ChildResult> {
    let mut producer = alloc.producer(spec.channel + 1)?;
    let mut consumer = alloc.consumer(spec.channel)?;
    let answer = vec![0xA5u8; spec.payload];
    let mut rounds = 0u64;
    let begin = start(control)?;
    loop {
        let message = consumer.receive_async().await?;
        if message.len() == STOP_LEN {
            break;
        }
        producer.send_async(&answer).await?;
        rounds += 1;
    }
    Ok(pong_result(rounds, begin))
}

/// The socket end the parent passed as stdin, as a tokio stream.
fn tokio_stream() -> Res<tokio::net::UnixStream> {
    let socket = std::os::unix::net::UnixStream::from(stdio_fd(false)?);
    socket.set_nonblocking(true)?;
    Ok(tokio::net::UnixStream::from_std(socket)?)
}

async fn uds_ping(spec: &ChildSpec, control: &Control<'_>) -> Res<ChildResult> {
    let mut stream = tokio_stream()?;
    let mut payload = vec![0x5Au8; spec.payload];
    let mut buf = vec![0u8; spec.payload];
    let mut trips = RoundTrips::start(spec, control)?;
    while trips.next(&mut payload) {
        stream.write_all(&payload).await?;
        stream.read_exact(&mut buf).await?;
        trips.tick();
    }
    // The pong sees the end of the stream once this process exits (stdin holds the socket
    // open until then).
    stream.shutdown().await?;
    Ok(trips.result())
}

async fn uds_pong(spec: &ChildSpec, control: &Control<'_>) -> Res<ChildResult> {
    let mut stream = tokio_stream()?;
    let mut buf = vec![0u8; spec.payload];
    let mut rounds = 0u64;
    let begin = start(control)?;
    loop {
        match stream.read_exact(&mut buf).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        stream.write_all(&buf).await?;
        rounds += 1;
    }
    Ok(pong_result(rounds, begin))
}

// ------------------------------------------------------------------------------ the report

/// One arm, over all repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct AsyncRow {
    /// What carried the ping and the answer, and how the ends waited.
    pub arm: Arm,
    /// Bytes per message.
    pub payload: usize,
    /// Median over repetitions of each run's round-trip p50, ns.
    pub p50_ns: f64,
    /// Median over repetitions of each run's round-trip p99, ns.
    pub p99_ns: f64,
    /// Median over repetitions of each run's round-trip p99.9, ns.
    pub p999_ns: f64,
    /// Every repetition's round-trip percentiles (and samples).
    pub runs: Vec<Percentiles>,
    /// p50 over dmxp-blocking's p50 (median over median).
    pub p50_vs_blocking: Option<f64>,
    /// p50 over uds-tokio's p50.
    pub p50_vs_uds: Option<f64>,
    /// DMXP futex wake calls summed over both processes, per round trip (median).
    pub futex_wake_per_round_trip: f64,
    /// DMXP futex wait calls per round trip (median); `None` where not counted (asyncio).
    pub futex_wait_per_round_trip: Option<f64>,
    /// `io_uring` futex waits per round trip (median).
    pub io_uring_waits_per_round_trip: f64,
    /// `io_uring` futex waits completed by a wake, per round trip (median).
    pub io_uring_wakeups_per_round_trip: f64,
}

/// Everything one `dmxp-bench async` run measured.
#[derive(Clone, Debug, Serialize)]
pub struct AsyncReport {
    /// Where it ran.
    pub machine: Machine,
    /// The command line, as given.
    pub command: String,
    /// Seconds per run of a timed run; `None` when runs had a fixed count.
    pub seconds_per_run: Option<f64>,
    /// Round trips per run, if fixed.
    pub messages_per_run: Option<u64>,
    /// Repetitions of every arm (rows show medians over them).
    pub repetitions: usize,
    /// One row per arm, in the order they ran.
    pub rows: Vec<AsyncRow>,
    /// The interpreter of the asyncio arm, as it reported itself (version, where `dmxp` is),
    /// when that arm ran.
    pub python: Option<String>,
    /// Arms asked for but not run, and why.
    pub skipped: Vec<SkippedArm>,
}

/// An arm that was asked for but could not run (the asyncio arm without an interpreter that
/// can `import dmxp`).
#[derive(Clone, Debug, Serialize)]
pub struct SkippedArm {
    /// The arm.
    pub arm: Arm,
    /// Why it did not run.
    pub reason: String,
}

impl AsyncReport {
    /// The human table.
    #[must_use]
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.machine.describe("pings", "pongs"));
        let length = run_length_text(self.messages_per_run, self.seconds_per_run, "round trips");
        let _ = writeln!(
            out,
            "runs: {length} each, median of {} repetitions (interleaved)\n",
            self.repetitions
        );
        let _ = writeln!(
            out,
            "ROUND TRIP (us, median over repetitions of each run's percentile; per round trip: \
             futex wake / futex wait / io_uring waits / of them woken, both processes)"
        );
        let mut rows = vec![[
            "arm",
            "payload",
            "p50",
            "p99",
            "p99.9",
            "p50 x blocking",
            "p50 x uds-tokio",
            "p50 of each run",
            "samples/run",
            "wake/wait/uring/woken",
        ]
        .map(str::to_owned)
        .to_vec()];
        let us = |ns: f64| format!("{:.1}", ns / 1e3);
        let ratio = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
        for r in &self.rows {
            let each: Vec<String> = r.runs.iter().map(|p| us(p.p50)).collect();
            let samples: Vec<f64> = r.runs.iter().map(|p| p.samples as f64).collect();
            rows.push(vec![
                r.arm.name().to_owned(),
                format!("{} B", r.payload),
                us(r.p50_ns),
                us(r.p99_ns),
                us(r.p999_ns),
                ratio(r.p50_vs_blocking),
                ratio(r.p50_vs_uds),
                each.join(" "),
                format!("{:.0}", median(&samples)),
                if r.arm == Arm::UdsTokio {
                    "-".into()
                } else {
                    format!(
                        "{:.2}/{}/{:.2}/{:.2}",
                        r.futex_wake_per_round_trip,
                        r.futex_wait_per_round_trip
                            .map_or("-".into(), |w| format!("{w:.2}")),
                        r.io_uring_waits_per_round_trip,
                        r.io_uring_wakeups_per_round_trip
                    )
                },
            ]);
        }
        out.push_str(&align(&rows));
        if let Some(python) = &self.python {
            let _ = writeln!(out, "\nasyncio: {python}");
        }
        for skip in &self.skipped {
            let _ = writeln!(
                out,
                "\n{}: SKIPPED, not measured: {}",
                skip.arm.name(),
                skip.reason
            );
        }
        out
    }
}

// ------------------------------------------------------------------------------ the driver

/// Runs the async benchmark the arguments describe and returns the report (printing nothing).
pub fn run(args: &AsyncArgs) -> Res<AsyncReport> {
    if !(8..=dmxp::MSG_INLINE).contains(&args.payload) {
        return Err(format!("--payload {} B is outside 8..=960", args.payload).into());
    }
    let reps = runner::repetitions(args.reps, args.length.quick)?;
    let length = args.length.run_length(2.0, 0.2, crate::control::CAPACITY)?;
    if length.messages.is_some_and(|n| n <= 200) {
        return Err("--messages must be more than the 200 warm-up round trips".into());
    }
    let mut arms: Vec<Arm> = Arm::ALL
        .into_iter()
        .filter(|a| args.arms.as_ref().is_none_or(|list| list.contains(a)))
        .collect();
    let mut python = None;
    let mut skipped = Vec::new();
    if arms.contains(&Arm::Asyncio) {
        match crate::python_asyncio::probe(&args.python) {
            Ok(version) => python = Some(format!("{} ({version})", args.python.display())),
            Err(reason) => {
                let reason = format!(
                    "{reason}; pass --python with an interpreter that has the dmxp package \
                     (e.g. bindings/python/.venv/bin/python after scripts/test-python.sh)"
                );
                eprintln!(
                    "dmxp-bench async: WARNING: SKIPPING THE asyncio ARM (not measured): {reason}"
                );
                arms.retain(|&a| a != Arm::Asyncio);
                skipped.push(SkippedArm {
                    arm: Arm::Asyncio,
                    reason,
                });
            }
        }
    }
    if arms.is_empty() {
        return Err(if skipped.is_empty() {
            "--arms leaves nothing to run"
        } else {
            "--arms leaves nothing to run once the asyncio arm is skipped"
        }
        .into());
    }
    let placement = Placement::detect();
    let load_start = Machine::load_average();
    let mut samples: Vec<Vec<AsyncSample>> = vec![Vec::new(); arms.len()];
    runner::interleave(
        &arms,
        reps,
        args.no_progress,
        |arm| arm.name().to_owned(),
        |k, &arm| {
            samples[k].push(measure(
                arm,
                args.payload,
                &length,
                &placement,
                &args.python,
            )?);
            Ok(())
        },
    )?;
    let mut rows: Vec<AsyncRow> = arms
        .iter()
        .zip(&samples)
        .map(|(&arm, samples)| {
            let pick =
                |f: fn(&AsyncSample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
            // Counts cover the warm-up round trips too.
            let per_round_trip = |f: fn(&AsyncSample) -> u64| {
                median(
                    &samples
                        .iter()
                        .map(|s| f(s) as f64 / (s.round_trip.samples + WARMUP) as f64)
                        .collect::<Vec<_>>(),
                )
            };
            AsyncRow {
                arm,
                payload: args.payload,
                p50_ns: pick(|s| s.round_trip.p50),
                p99_ns: pick(|s| s.round_trip.p99),
                p999_ns: pick(|s| s.round_trip.p999),
                runs: samples.iter().map(|s| s.round_trip).collect(),
                p50_vs_blocking: None,
                p50_vs_uds: None,
                futex_wake_per_round_trip: per_round_trip(|s| s.futex_wake),
                futex_wait_per_round_trip: samples
                    .iter()
                    .all(|s| s.futex_wait.is_some())
                    .then(|| per_round_trip(|s| s.futex_wait.unwrap_or(0))),
                io_uring_waits_per_round_trip: per_round_trip(|s| s.io_uring_waits),
                io_uring_wakeups_per_round_trip: per_round_trip(|s| s.io_uring_wakeups),
            }
        })
        .collect();
    let p50 = |arm| rows.iter().find(|r| r.arm == arm).map(|r| r.p50_ns);
    let (blocking, uds) = (p50(Arm::DmxpBlocking), p50(Arm::UdsTokio));
    for row in &mut rows {
        row.p50_vs_blocking = blocking.map(|b| row.p50_ns / b);
        row.p50_vs_uds = uds.map(|u| row.p50_ns / u);
    }
    Ok(AsyncReport {
        machine: Machine::at_end(load_start, &placement),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        seconds_per_run: length.messages.is_none().then_some(length.seconds),
        messages_per_run: length.messages,
        repetitions: reps,
        rows,
        python,
        skipped,
    })
}

/// Runs the async benchmark, prints the table, and writes the JSON if asked.
pub fn main_with(args: &AsyncArgs) -> Res<AsyncReport> {
    let report = run(args)?;
    print!("{}", report.render());
    write_json(&report, args.json.as_deref())?;
    Ok(report)
}
