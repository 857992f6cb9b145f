//! Throughput and round-trip latency across the Zenoh bridge on loopback, measured in one run
//! next to plain Zenoh pub/sub between two processes and to the same-host DMXP path.
//!
//! ```text
//! scripts/bench-bridge.sh                 # release build, then this with its defaults
//! target/release/examples/bridge_bench --sizes 32,960 --repeat 3
//! ```
//!
//! Three paths, each between this process and a child process it spawns (itself, in another
//! role):
//!
//! - **zenoh**: a Zenoh publisher and subscriber, peer to peer over `tcp/127.0.0.1`, set up as
//!   Zenoh's own `z_pub_thr`/`z_sub_thr` and `z_ping`/`z_pong` examples set them up (blocking
//!   congestion control; a callback subscriber for throughput; express publishers and a FIFO
//!   subscriber for round trips);
//! - **bridge**: a DMXP producer on segment A → an export bridge → the same Zenoh link → an
//!   import bridge → a DMXP consumer on segment B; round trips come back through a second
//!   pair of routes (B → A). The bridges run with `--express` for round trips only, as the
//!   plain Zenoh publishers do;
//! - **dmxp**: a DMXP producer and consumer on one host, no bridge.
//!
//! Throughput is counted where the messages arrive: `--repeat` chunks of one continuous
//! stream (after a warm-up chunk), each timed from the last arrival of the chunk before to its
//! own last arrival; the median chunk is reported.
//! Latency is the round trip of one message at a time (ping, echo, pong), after 1,000 warm-up
//! rounds; p50 and p99 over `--round-trips` rounds. Every consumer blocks the way its users'
//! code would (DMXP's futex waits, Zenoh's channel and callback); nothing spins.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use dmxp_bridge::config::{BridgeConfig, ZenohConfig};
use zenoh::bytes::ZBytes;
use zenoh::handlers::FifoChannel;
use zenoh::qos::CongestionControl;
use zenoh::Wait;

/// Round trips before the measured ones.
const WARM_UP: usize = 1_000;
/// Slots per ring: room for 59 messages of 64 KiB (69 slots each) in flight.
const CAPACITY: u64 = 4096;
/// Each segment holds two channels of CAPACITY slots.
const SEGMENT_SIZE: usize = 16 << 20;
/// Longest message any bench channel carries.
const MAX_MESSAGE: usize = 64 << 10;
/// How long anything may take before the bench gives up (a hang guard, not a measurement).
const HANG_GUARD: Duration = Duration::from_secs(120);

#[derive(Parser)]
#[command(about = "Throughput and latency: Zenoh, the DMXP bridge over Zenoh, and DMXP")]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Message sizes in bytes (at most 65536).
    #[arg(long, value_delimiter = ',', default_value = "32,960,65536")]
    sizes: Vec<usize>,
    /// Messages per throughput chunk: at most this many, and at most 256 MiB worth.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Throughput chunks per path and size; the median is reported.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Measured round trips per path and size.
    #[arg(long, default_value_t = 10_000)]
    round_trips: usize,
    /// Whole runs of every size and path, one after another so that a slow spell of the
    /// machine touches all paths alike; each figure is the median over the runs.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The dmxp-bridge binary [default: the one built beside this example].
    #[arg(long)]
    bridge: Option<PathBuf>,
}

/// What a sink expects: `chunks` × `count` messages of `size` bytes.
#[derive(clap::Args)]
struct SinkStream {
    #[arg(long)]
    size: usize,
    #[arg(long)]
    count: u64,
    #[arg(long)]
    chunks: u64,
}

/// What a child process does. Each prints `ready` once it is set up.
#[derive(Subcommand)]
enum Role {
    /// Receives `chunks` × `count` Zenoh samples of `size` bytes on `key` and prints one
    /// `chunk NANOSECONDS` line per chunk.
    ZenohSink {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        key: String,
        #[command(flatten)]
        stream: SinkStream,
    },
    /// Publishes every sample received on `ping` back on `pong`, until killed.
    ZenohEcho {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        ping: String,
        #[arg(long)]
        pong: String,
    },
    /// Like zenoh-sink, on channel `channel` of the DMXP segment `segment`.
    DmxpSink {
        #[arg(long)]
        segment: String,
        #[arg(long)]
        channel: u32,
        #[command(flatten)]
        stream: SinkStream,
    },
    /// Sends every message of channel `from` back on channel `to`, until killed.
    DmxpEcho {
        #[arg(long)]
        segment: String,
        #[arg(long)]
        from: u32,
        #[arg(long)]
        to: u32,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.role {
        None => orchestrate(&cli.run),
        Some(role) => {
            let result = play(role);
            if let Err(e) = &result {
                eprintln!("bridge_bench child: {e:#}");
            }
            result
        }
    }
}

// ---- the measuring process ----------------------------------------------------------------

/// One measured cell of the table.
#[derive(Default, Clone, Copy)]
struct Figures {
    msgs_per_s: f64,
    rtt_p50_us: f64,
    rtt_p99_us: f64,
}

fn orchestrate(args: &RunArgs) -> Result<()> {
    if let Some(&size) = args.sizes.iter().find(|&&s| s == 0 || s > MAX_MESSAGE) {
        bail!("size {size}: expected 1 to {MAX_MESSAGE} bytes");
    }
    if args.repeat == 0 || args.messages == 0 || args.round_trips == 0 || args.runs == 0 {
        bail!("--repeat, --messages, --round-trips and --runs must be at least 1");
    }
    let bridge_bin = match &args.bridge {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(|examples| examples.parent())
            .context("locating the target directory")?
            .join("dmxp-bridge"),
    };
    if !bridge_bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p dmxp-bridge --bins)",
            bridge_bin.display()
        );
    }
    let segments = Segments::create()?;
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        eprintln!("run {run} of {}", args.runs);
        runs.push(one_run(args, &bridge_bin, &segments)?);
    }
    let rows = (0..args.sizes.len())
        .map(|i| {
            let cell = |path: fn(&Row) -> Figures| {
                let of = |field: fn(&Figures) -> f64| {
                    median(runs.iter().map(|run| field(&path(&run[i]))).collect())
                };
                Figures {
                    msgs_per_s: of(|f| f.msgs_per_s),
                    rtt_p50_us: of(|f| f.rtt_p50_us),
                    rtt_p99_us: of(|f| f.rtt_p99_us),
                }
            };
            Row {
                size: args.sizes[i],
                zenoh: cell(|row| row.zenoh),
                bridge: cell(|row| row.bridge),
                dmxp: cell(|row| row.dmxp),
            }
        })
        .collect::<Vec<_>>();
    print_table(&rows, args);
    Ok(())
}

/// Every size, every path, once.
fn one_run(args: &RunArgs, bridge_bin: &std::path::Path, segments: &Segments) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &size in &args.sizes {
        let count = args.messages.min((256 << 20) / size).max(1) as u64;
        let payload = pattern(size);
        eprintln!(
            "size {size} B: {count} messages per chunk, {} chunks",
            args.repeat
        );
        let zenoh = Figures {
            msgs_per_s: zenoh_throughput(&payload, count, args.repeat as u64)?,
            ..zenoh_latency(&payload, args.round_trips)?
        };
        let bridge = Figures {
            msgs_per_s: bridged(bridge_bin, segments, false, |_| {
                dmxp_throughput(
                    &segments.a,
                    &segments.b,
                    &payload,
                    count,
                    args.repeat as u64,
                )
            })?,
            ..bridged(bridge_bin, segments, true, |_| {
                dmxp_latency(&segments.a, &segments.b, &payload, args.round_trips)
            })?
        };
        let dmxp = Figures {
            msgs_per_s: dmxp_throughput(
                &segments.c,
                &segments.c,
                &payload,
                count,
                args.repeat as u64,
            )?,
            ..dmxp_latency(&segments.c, &segments.c, &payload, args.round_trips)?
        };
        rows.push(Row {
            size,
            zenoh,
            bridge,
            dmxp,
        });
    }
    Ok(rows)
}

/// The figures of one size.
#[derive(Clone, Copy)]
struct Row {
    size: usize,
    zenoh: Figures,
    bridge: Figures,
    dmxp: Figures,
}

fn print_table(rows: &[Row], args: &RunArgs) {
    println!(
        "medians of {} runs; throughput: median of {} chunks; round trips: {} after {WARM_UP} \
         warm-up, one at a time",
        args.runs, args.repeat, args.round_trips
    );
    println!(
        "| size | path | msgs/s | MB/s | RTT p50 µs | RTT p99 µs | vs zenoh: throughput, p50, p99 |"
    );
    println!("|---:|---|---:|---:|---:|---:|---|");
    for row in rows {
        let (size, zenoh) = (row.size, row.zenoh);
        for (name, f) in [("zenoh", zenoh), ("bridge", row.bridge), ("dmxp", row.dmxp)] {
            let versus = if name == "zenoh" {
                String::new()
            } else {
                format!(
                    "{:.0}%, {:+.0}%, {:+.0}%",
                    100.0 * f.msgs_per_s / zenoh.msgs_per_s,
                    100.0 * (f.rtt_p50_us / zenoh.rtt_p50_us - 1.0),
                    100.0 * (f.rtt_p99_us / zenoh.rtt_p99_us - 1.0)
                )
            };
            println!(
                "| {size} | {name} | {:.0} | {:.1} | {:.1} | {:.1} | {versus} |",
                f.msgs_per_s,
                f.msgs_per_s * size as f64 / 1e6,
                f.rtt_p50_us,
                f.rtt_p99_us
            );
        }
    }
}

/// The three segments of a run, removed again on drop.
struct Segments {
    /// The bridge's source side: channel 0 carries pings (and the throughput stream) out,
    /// channel 1 brings pongs back.
    a: String,
    /// The bridge's far side: channel 0 receives, channel 1 sends back.
    b: String,
    /// The same-host path: channel 0 out, channel 1 back.
    c: String,
}

impl Segments {
    fn create() -> Result<Self> {
        let pid = std::process::id();
        let segments = Segments {
            a: format!("/dmxp_bench_bridge_{pid}_a"),
            b: format!("/dmxp_bench_bridge_{pid}_b"),
            c: format!("/dmxp_bench_bridge_{pid}_c"),
        };
        for name in [&segments.a, &segments.b, &segments.c] {
            for channel in [0, 1] {
                builder(name, channel).build_producer()?;
            }
        }
        Ok(segments)
    }
}

impl Drop for Segments {
    fn drop(&mut self) {
        for name in [&self.a, &self.b, &self.c] {
            let _ = std::fs::remove_file(format!("/dev/shm{name}"));
        }
    }
}

fn builder(segment: &str, channel: u32) -> dmxp::ChannelBuilder {
    dmxp::ChannelBuilder::new()
        .with_segment_name(segment)
        .with_segment_size(SEGMENT_SIZE)
        .with_capacity(CAPACITY)
        .with_max_message_size(MAX_MESSAGE)
        .with_channel_id(channel)
}

/// `size` bytes that are not all alike.
fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 + 7) as u8).collect()
}

/// A loopback endpoint on a port that was free a moment ago.
fn free_endpoint() -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(format!("tcp/127.0.0.1:{}", listener.local_addr()?.port()))
}

/// A Zenoh peer that listens on or connects to `endpoint` only.
fn zenoh_session(listen: Option<&str>, connect: Option<&str>) -> Result<zenoh::Session> {
    let config = BridgeConfig {
        zenoh: ZenohConfig {
            listen: listen.into_iter().map(str::to_owned).collect(),
            connect: connect.into_iter().map(str::to_owned).collect(),
            ..ZenohConfig::default()
        },
        ..BridgeConfig::default()
    }
    .zenoh_config()?;
    zenoh::open(config)
        .wait()
        .map_err(|e| anyhow!("zenoh: {e}"))
}

/// A child process of this executable in another role, whose stdout lines are read.
struct Peer {
    child: Child,
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl Peer {
    fn spawn(program: &std::path::Path, args: &[&str]) -> Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawning {}", program.display()))?;
        let lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        Ok(Peer { child, lines })
    }

    fn role(args: &[&str]) -> Result<Self> {
        Self::spawn(&std::env::current_exe()?, args)
    }

    /// A sink role (`role` and its own arguments) told to time `chunks` + 1 chunks of `count`
    /// messages of `size` bytes, once it is ready.
    fn sink(role: &[&str], size: usize, count: u64, chunks: u64) -> Result<Self> {
        let numbers = [
            size.to_string(),
            count.to_string(),
            (chunks + 1).to_string(),
        ];
        let mut args = role.to_vec();
        args.extend([
            "--size",
            &numbers[0],
            "--count",
            &numbers[1],
            "--chunks",
            &numbers[2],
        ]);
        let mut sink = Self::role(&args)?;
        sink.expect("ready")?;
        Ok(sink)
    }

    /// The next line that starts with `prefix` (a bridge also prints stats lines).
    fn expect(&mut self, prefix: &str) -> Result<String> {
        for line in self.lines.by_ref() {
            let line = line?;
            if line.starts_with(prefix) {
                return Ok(line);
            }
        }
        bail!("the child exited before printing `{prefix}`")
    }

    /// The `chunk NANOSECONDS` lines of a sink told to time `chunks` + 1 chunks, as messages
    /// per second, without the first (the warm-up, timed from its first arrival).
    fn chunk_rates(&mut self, count: u64, chunks: u64) -> Result<Vec<f64>> {
        let mut rates = (0..=chunks)
            .map(|_| {
                let line = self.expect("chunk ")?;
                let ns: f64 = line["chunk ".len()..].trim().parse()?;
                Ok(count as f64 / (ns / 1e9))
            })
            .collect::<Result<Vec<_>>>()?;
        rates.remove(0);
        Ok(rates)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // SIGTERM lets a bridge print its final line and exit; the roles are simply killed.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// p50 and p99 of round-trip times, in microseconds.
fn percentiles(mut rtts: Vec<Duration>) -> Figures {
    rtts.sort();
    let at = |q: f64| rtts[((rtts.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    Figures {
        msgs_per_s: 0.0,
        rtt_p50_us: at(0.50),
        rtt_p99_us: at(0.99),
    }
}

fn zenoh_throughput(payload: &[u8], count: u64, chunks: u64) -> Result<f64> {
    let endpoint = free_endpoint()?;
    let key = "bench/zenoh/thr";
    let mut sink = Peer::sink(
        &["zenoh-sink", "--listen", &endpoint, "--key", key],
        payload.len(),
        count,
        chunks,
    )?;
    let session = zenoh_session(None, Some(&endpoint))?;
    let publisher = session
        .declare_publisher(key)
        .congestion_control(CongestionControl::Block)
        .wait()
        .map_err(|e| anyhow!("zenoh: {e}"))?;
    wait_for_match(&publisher)?;
    let bytes = ZBytes::from(payload.to_vec());
    for _ in 0..count * (chunks + 1) {
        publisher
            .put(bytes.clone())
            .wait()
            .map_err(|e| anyhow!("zenoh put: {e}"))?;
    }
    Ok(median(sink.chunk_rates(count, chunks)?))
}

fn wait_for_match(publisher: &zenoh::pubsub::Publisher<'_>) -> Result<()> {
    let deadline = Instant::now() + HANG_GUARD;
    while !publisher
        .matching_status()
        .wait()
        .map_err(|e| anyhow!("zenoh: {e}"))?
        .matching()
    {
        if Instant::now() > deadline {
            bail!("no subscriber matched within {HANG_GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn zenoh_latency(payload: &[u8], rounds: usize) -> Result<Figures> {
    let endpoint = free_endpoint()?;
    let (ping, pong) = ("bench/zenoh/ping", "bench/zenoh/pong");
    let mut echo = Peer::role(&[
        "zenoh-echo",
        "--listen",
        &endpoint,
        "--ping",
        ping,
        "--pong",
        pong,
    ])?;
    echo.expect("ready")?;
    let session = zenoh_session(None, Some(&endpoint))?;
    let subscriber = session
        .declare_subscriber(pong)
        .with(FifoChannel::new(16))
        .wait()
        .map_err(|e| anyhow!("zenoh: {e}"))?;
    let publisher = session
        .declare_publisher(ping)
        .congestion_control(CongestionControl::Block)
        .express(true)
        .wait()
        .map_err(|e| anyhow!("zenoh: {e}"))?;
    wait_for_match(&publisher)?;
    let bytes = ZBytes::from(payload.to_vec());
    time_round_trips(rounds, payload.len(), || {
        publisher
            .put(bytes.clone())
            .wait()
            .map_err(|e| anyhow!("zenoh put: {e}"))?;
        let sample = subscriber
            .recv_timeout(HANG_GUARD)
            .map_err(|e| anyhow!("zenoh: {e}"))?
            .context("no pong within the hang guard")?;
        Ok(sample.payload().len())
    })
}

/// Times `WARM_UP + rounds` calls of `round_trip` (which sends one message and returns the
/// length of its echo) and returns the percentiles of the last `rounds`.
fn time_round_trips(
    rounds: usize,
    len: usize,
    mut round_trip: impl FnMut() -> Result<usize>,
) -> Result<Figures> {
    let mut rtts = Vec::with_capacity(rounds);
    for round in 0..WARM_UP + rounds {
        let start = Instant::now();
        let echoed = round_trip()?;
        let elapsed = start.elapsed();
        if echoed != len {
            bail!("an echo of {echoed} bytes, {len} sent");
        }
        if round >= WARM_UP {
            rtts.push(elapsed);
        }
    }
    Ok(percentiles(rtts))
}

/// Runs `measure` while two bridges connect segment A and segment B: A:0 → B:0 and
/// B:1 → A:1, each bridge publishing with `--express` if `express`.
fn bridged<T>(
    bridge_bin: &std::path::Path,
    segments: &Segments,
    express: bool,
    measure: impl FnOnce(&Segments) -> Result<T>,
) -> Result<T> {
    let endpoint = free_endpoint()?;
    let export_a = format!("{}:0=bench/bridge/out", segments.a);
    let import_a = format!("bench/bridge/back={}:1", segments.a);
    let import_b = format!("bench/bridge/out={}:0", segments.b);
    let export_b = format!("{}:1=bench/bridge/back", segments.b);
    let mut common = vec!["--stats-interval-ms", "0", "--full-timeout-ms", "600000"];
    if express {
        common.push("--express");
    }
    let side = |host: &str, link: [&str; 2], routes: [&str; 4]| -> Result<Peer> {
        let mut args = vec!["--host", host, link[0], link[1]];
        args.extend(routes);
        args.extend(&common);
        let mut bridge = Peer::spawn(bridge_bin, &args)?;
        bridge.expect("{\"event\":\"ready\"")?;
        Ok(bridge)
    };
    let routes_a = ["--export", &export_a, "--import", &import_a];
    let _side_a = side("bench-a", ["--listen", &endpoint], routes_a)?;
    let routes_b = ["--import", &import_b, "--export", &export_b];
    let _side_b = side("bench-b", ["--connect", &endpoint], routes_b)?;
    measure(segments)
}

/// Messages per second from channel 0 of `from` to a sink on channel 0 of `to` (the same
/// segment for the same-host path; the bridge's far side otherwise).
fn dmxp_throughput(from: &str, to: &str, payload: &[u8], count: u64, chunks: u64) -> Result<f64> {
    let producer = builder(from, 0).build_producer()?;
    let mut sink = Peer::sink(
        &["dmxp-sink", "--segment", to, "--channel", "0"],
        payload.len(),
        count,
        chunks,
    )?;
    for _ in 0..count * (chunks + 1) {
        producer.send_blocking(payload)?;
    }
    Ok(median(sink.chunk_rates(count, chunks)?))
}

/// Round trips out on channel 0 of `from` and back on channel 1 of `from`, echoed by a
/// process on `to` (channel 0 to channel 1).
fn dmxp_latency(from: &str, to: &str, payload: &[u8], rounds: usize) -> Result<Figures> {
    let producer = builder(from, 0).build_producer()?;
    let consumer = builder(from, 1).build_consumer()?;
    let mut echo = Peer::role(&["dmxp-echo", "--segment", to, "--from", "0", "--to", "1"])?;
    echo.expect("ready")?;
    time_round_trips(rounds, payload.len(), || {
        producer.send_blocking(payload)?;
        let back = consumer
            .receive_timeout(HANG_GUARD)?
            .context("no pong within the hang guard")?;
        Ok(back.payload.len())
    })
}

// ---- the child roles ----------------------------------------------------------------------

fn play(role: Role) -> Result<()> {
    let mut out = std::io::stdout();
    match role {
        Role::ZenohSink {
            listen,
            key,
            stream,
        } => {
            let session = zenoh_session(Some(&listen), None)?;
            let clock = Arc::new(ChunkClock::new(&stream));
            let (done_tx, done) = mpsc::channel();
            let done_tx = Mutex::new(done_tx);
            let in_callback = Arc::clone(&clock);
            let _subscriber = session
                .declare_subscriber(&key)
                .callback(move |sample| {
                    if let Some(result) = in_callback.arrived(sample.payload().len()) {
                        let _ = done_tx.lock().unwrap().send(result);
                    }
                })
                .wait()
                .map_err(|e| anyhow!("zenoh: {e}"))?;
            writeln!(out, "ready")?;
            let chunk_ns = done.recv()??;
            print_chunks(&mut out, &chunk_ns)
        }
        Role::ZenohEcho { listen, ping, pong } => {
            let session = zenoh_session(Some(&listen), None)?;
            let publisher = session
                .declare_publisher(pong)
                .congestion_control(CongestionControl::Block)
                .express(true)
                .wait()
                .map_err(|e| anyhow!("zenoh: {e}"))?;
            let _subscriber = session
                .declare_subscriber(ping)
                .callback(move |sample| {
                    let _ = publisher.put(sample.payload().clone()).wait();
                })
                .wait()
                .map_err(|e| anyhow!("zenoh: {e}"))?;
            writeln!(out, "ready")?;
            loop {
                std::thread::park();
            }
        }
        Role::DmxpSink {
            segment,
            channel,
            stream,
        } => {
            let consumer = builder(&segment, channel).build_consumer()?;
            let clock = ChunkClock::new(&stream);
            writeln!(out, "ready")?;
            loop {
                let message = consumer
                    .receive_timeout(HANG_GUARD)?
                    .context("nothing arrived within the hang guard")?;
                if let Some(result) = clock.arrived(message.payload.len()) {
                    return print_chunks(&mut out, &result?);
                }
            }
        }
        Role::DmxpEcho { segment, from, to } => {
            let consumer = builder(&segment, from).build_consumer()?;
            let producer = builder(&segment, to).build_producer()?;
            writeln!(out, "ready")?;
            loop {
                if let Some(message) = consumer.receive_timeout(HANG_GUARD)? {
                    producer.send_blocking(&message.payload)?;
                }
            }
        }
    }
}

fn print_chunks(out: &mut impl Write, chunk_ns: &[u64]) -> Result<()> {
    for ns in chunk_ns {
        writeln!(out, "chunk {ns}")?;
    }
    out.flush()?;
    Ok(())
}

/// Times `chunks` runs of `count` arrivals: chunk k runs from the arrival that ended chunk
/// k − 1 (the first arrival, for chunk 0) to its own last arrival.
struct ChunkClock {
    size: usize,
    count: u64,
    chunks: u64,
    arrived: AtomicU64,
    marks: Mutex<Vec<Instant>>,
}

impl ChunkClock {
    fn new(stream: &SinkStream) -> Self {
        ChunkClock {
            size: stream.size,
            count: stream.count,
            chunks: stream.chunks,
            arrived: AtomicU64::new(0),
            marks: Mutex::new(Vec::with_capacity(stream.chunks as usize + 1)),
        }
    }

    /// Records the arrival of a message of `len` bytes; returns the chunks' nanoseconds
    /// after the last one, or an error at the first message of the wrong size.
    fn arrived(&self, len: usize) -> Option<Result<Vec<u64>>> {
        if len != self.size {
            return Some(Err(anyhow!(
                "a message of {len} bytes, {} expected",
                self.size
            )));
        }
        let n = self.arrived.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 || n.is_multiple_of(self.count) {
            self.marks.lock().unwrap().push(Instant::now());
        }
        if n != self.count * self.chunks {
            return None;
        }
        let marks = self.marks.lock().unwrap();
        Some(Ok(marks
            .windows(2)
            .map(|pair| (pair[1] - pair[0]).as_nanos() as u64)
            .collect()))
    }
}
