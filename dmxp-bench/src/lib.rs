//! # dmxp-bench
//!
//! Cross-process benchmarks of DMXP side by side with the alternatives a user would otherwise
//! pick: a Unix domain socket (`SOCK_SEQPACKET`), a pipe, crossbeam's `ArrayQueue` between two
//! threads of one process, iceoryx2 (through an external peer program, when given), the
//! layout floor (`bare-ring`: a minimal Vyukov ring over slots of DMXP's layout, [`bare_ring`])
//! and the cache-line floor (two processes handing one `AtomicU64` back and forth in shared
//! memory).
//!
//! Every run is bracketed by two probes of the cache-line hand-over between the two pinned
//! CPUs ([`placement`]); runs are kept per placement (near or far cores), a run whose
//! placement changed while it ran is discarded, and medians and ratios are per placement.
//!
//! One run measures, with every repetition of every configuration interleaved so that a noisy
//! machine hurts all systems alike:
//! * throughput for 1->1, 2->2 on one channel, and 4 channels x 1->1, at 32, 256 and 960 B;
//! * one-way latency (round trip / 2) in ping-pong at p50, p99 and p99.9, spinning and blocking.
//!
//! `dmxp-bench large` ([`large`]) measures messages longer than one slot (4 KiB to 256 KiB,
//! sent as runs of slots) against a Unix stream socket, a pipe and one core's memcpy.
//! `dmxp-bench async` ([`async_latency`]) measures ping-pong round trips when both ends wait
//! from a tokio event loop, against the blocking futex path, a tokio Unix stream socket, and
//! the Python package's asyncio waits.
//!
//! Each producer and consumer is its own process (this binary re-executed with a hidden
//! argument), pinned so producers and consumers sit on different cores when there are two or
//! more. The DMXP children count their futex calls and report them: a non-blocking run must
//! make none.
//!
//! The binary `dmxp-bench` and the CLI's `dmxp bench` both call [`main_with`]; a program that
//! embeds the runner must call [`child_main_if_requested`] first thing in `main`.
#![warn(missing_docs, missing_debug_implementations)]

use std::path::PathBuf;

use clap::Args;

pub mod async_latency;
pub mod bare_ring;
pub mod chart;
pub mod child;
pub mod control;
pub mod iceoryx2;
mod inproc;
pub mod instructions;
pub mod large;
pub mod placement;
mod python_asyncio;
pub mod report;
pub mod runner;
pub mod spec;

use placement::{Probes, PROBE_ROUND_TRIPS};
use report::{
    median_of, LatencyRow, Machine, PlacementSummary, Report, Runs, Skipped, ThroughputRow,
};
use runner::{LengthArgs, Placement};
use spec::{Mode, Shape, System};

pub use child::Res;

/// Command-line options of `dmxp-bench` and `dmxp bench`.
#[derive(Args, Clone, Debug)]
#[command(
    mut_arg("quick", |a| a.help("Short runs for CI: 0.1 s per run (the whole benchmark in well under a minute)")),
    mut_arg("seconds", |a| a.help("Seconds per run (default 1, or 0.1 with --quick)")),
    mut_arg("messages", |a| a.help("A fixed number of messages per producer (and round trips per latency run) instead of a duration; runs also check that every message sent was received"))
)]
pub struct BenchArgs {
    /// How long each run is (`--quick`, `--seconds`, `--messages`).
    #[command(flatten)]
    pub length: LengthArgs,
    /// Repetitions of every configuration; the report shows medians.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Slots per DMXP ring and elements per ArrayQueue (a power of two, 2..=1024).
    #[arg(long, default_value_t = control::CAPACITY)]
    pub capacity: u64,
    /// Payload sizes for throughput, in bytes.
    #[arg(long, value_delimiter = ',', default_value = "32,256,960")]
    pub payloads: Vec<usize>,
    /// Payload sizes for latency, in bytes.
    #[arg(long, value_delimiter = ',', default_value = "32")]
    pub latency_payloads: Vec<usize>,
    /// Systems to run (dmxp, dmxp-batch, dmxp-loan, dmxp-inplace, uds, pipe, arrayqueue, floor,
    /// bare-ring, iceoryx2).
    #[arg(long, value_delimiter = ',', value_parser = parse_system)]
    pub systems: Option<Vec<System>>,
    /// Throughput shapes to run (one-to-one, two-to-two, four-channels).
    #[arg(long, value_delimiter = ',', value_parser = parse_shape)]
    pub shapes: Option<Vec<Shape>>,
    /// Skip the throughput runs.
    #[arg(long)]
    pub no_throughput: bool,
    /// Skip the latency runs.
    #[arg(long)]
    pub no_latency: bool,
    /// Write the full report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw the chart (SVG) here.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// The near/far threshold of the placement probes (p50 one-way ns); by default chosen
    /// from the probes (midway between their two clusters, or 125 ns when they form one).
    #[arg(long, value_name = "NS")]
    pub placement_threshold: Option<f64>,
    /// Round trips of each placement probe (0: no probes, every run kept as unprobed).
    #[arg(long, default_value_t = PROBE_ROUND_TRIPS, value_name = "N")]
    pub probe_round_trips: u64,
    /// Instruction counts (the JSON of scripts/instructions.sh) to show beside the
    /// throughput rows they apply to (an instr/msg column).
    #[arg(long, value_name = "PATH")]
    pub instructions: Option<PathBuf>,
    /// The iceoryx2 peer program (dmxp-bench/peers/iceoryx2); without it the iceoryx2 system
    /// is skipped with a note.
    #[arg(long, value_name = "PATH")]
    pub iceoryx2_peer: Option<PathBuf>,
}

fn parse_system(name: &str) -> Result<System, String> {
    System::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = System::ALL.iter().map(|s| s.name()).collect();
        format!("unknown system {name:?} (one of {})", names.join(", "))
    })
}

fn parse_shape(name: &str) -> Result<Shape, String> {
    Shape::ALL
        .into_iter()
        .find(|s| s.id() == name)
        .ok_or_else(|| {
            format!("unknown shape {name:?} (one of one-to-one, two-to-two, four-channels)")
        })
}

/// If this process is a benchmark child (re-executed by the runner), runs it and exits.
/// Call it first thing in `main` of any binary that calls [`main_with`].
pub fn child_main_if_requested() {
    let mut args = std::env::args();
    if args.nth(1).as_deref() != Some(spec::CHILD_ARG) {
        return;
    }
    let code = match args.next() {
        Some(json) => match child::run(&json) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("dmxp-bench child: {e}");
                1
            }
        },
        None => {
            eprintln!("dmxp-bench child: missing specification");
            2
        }
    };
    std::process::exit(code);
}

/// One configuration to measure.
#[derive(Clone, Copy, Debug)]
enum Job {
    Throughput(System, Shape, usize),
    Latency(System, Mode, usize),
}

impl Job {
    fn label(self) -> String {
        match self {
            Job::Throughput(system, shape, payload) => {
                format!("{system} {} {payload} B", shape.name())
            }
            Job::Latency(system, mode, payload) => {
                format!("{system} ping-pong {} {payload} B", mode.name())
            }
        }
    }
}

fn plan(args: &BenchArgs) -> Vec<Job> {
    let wanted = |s: System| {
        args.systems.as_ref().is_none_or(|list| list.contains(&s))
            && (s != System::Iceoryx2 || args.iceoryx2_peer.is_some())
    };
    let mut jobs = Vec::new();
    if !args.no_throughput {
        for shape in Shape::ALL {
            if args
                .shapes
                .as_ref()
                .is_some_and(|list| !list.contains(&shape))
            {
                continue;
            }
            for &payload in &args.payloads {
                for system in System::ALL {
                    if system != System::Floor && wanted(system) && shape.supports(system) {
                        jobs.push(Job::Throughput(system, shape, payload));
                    }
                }
            }
        }
        let one_to_one = args
            .shapes
            .as_ref()
            .is_none_or(|list| list.contains(&Shape::OneToOne));
        if wanted(System::Floor) && one_to_one {
            jobs.push(Job::Throughput(System::Floor, Shape::OneToOne, 8));
        }
    }
    if !args.no_latency {
        for &payload in &args.latency_payloads {
            for (system, mode) in spec::latency_systems() {
                if wanted(system)
                    && (system != System::Floor || payload == args.latency_payloads[0])
                {
                    jobs.push(Job::Latency(
                        system,
                        mode,
                        if system == System::Floor { 8 } else { payload },
                    ));
                }
            }
        }
    }
    jobs
}

/// Runs the benchmark the arguments describe and returns the report (printing nothing).
pub fn run(args: &BenchArgs) -> Res<Report> {
    for &payload in args.payloads.iter().chain(&args.latency_payloads) {
        if !(8..=dmxp::MSG_INLINE).contains(&payload) {
            return Err(format!("payload {payload} B is outside 8..=960").into());
        }
    }
    if !args.capacity.is_power_of_two() || !(2..=control::MAX_CAPACITY).contains(&args.capacity) {
        return Err(format!(
            "--capacity {} is not a power of two in 2..=1024",
            args.capacity
        )
        .into());
    }
    if args.reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    if let Some(t) = args.placement_threshold {
        if !(t > 0.0 && t.is_finite()) {
            return Err("--placement-threshold must be a positive number of ns".into());
        }
    }
    let counts = match &args.instructions {
        Some(path) => instructions::load(path)?,
        None => Vec::new(),
    };
    let length = args.length.run_length(1.0, 0.1, args.capacity)?;
    let placement = Placement::detect();
    let load_start = Machine::load_average();
    let jobs = plan(args);
    let mut skipped = Vec::new();
    if args.iceoryx2_peer.is_none()
        && args
            .systems
            .as_ref()
            .is_none_or(|list| list.contains(&System::Iceoryx2))
    {
        skipped.push(Skipped {
            system: System::Iceoryx2,
            reason: "no --iceoryx2-peer PATH given (the peer program of dmxp-bench/peers/iceoryx2)"
                .to_owned(),
        });
    }
    let mut throughput: Vec<Vec<runner::ThroughputSample>> = vec![Vec::new(); jobs.len()];
    let mut latency: Vec<Vec<runner::LatencySample>> = vec![Vec::new(); jobs.len()];
    let mut probes: Vec<Vec<Probes>> = vec![Vec::new(); jobs.len()];
    let probe = || placement::probe(&placement, args.probe_round_trips);
    runner::interleave(
        &jobs,
        args.reps,
        args.no_progress,
        |job| job.label(),
        |k, job| {
            let before_ns = probe();
            match *job {
                Job::Throughput(System::Iceoryx2, _, payload) => {
                    let peer = args.iceoryx2_peer.as_deref().ok_or("no iceoryx2 peer")?;
                    throughput[k].push(iceoryx2::throughput(peer, payload, &length)?);
                }
                Job::Latency(System::Iceoryx2, _, payload) => {
                    let peer = args.iceoryx2_peer.as_deref().ok_or("no iceoryx2 peer")?;
                    latency[k].push(iceoryx2::latency(peer, payload, &length)?);
                }
                Job::Throughput(system, shape, payload) => throughput[k].push(runner::throughput(
                    system, shape, payload, &length, &placement,
                )?),
                Job::Latency(system, mode, payload) => {
                    latency[k].push(runner::latency(system, mode, payload, &length, &placement)?);
                }
            }
            probes[k].push(Probes {
                before_ns,
                after_ns: probe(),
            });
            Ok(())
        },
    )?;
    let all_probes: Vec<Probes> = probes.iter().flatten().copied().collect();
    let values: Vec<f64> = all_probes
        .iter()
        .flat_map(|p| [p.before_ns, p.after_ns])
        .flatten()
        .collect();
    let threshold = placement::threshold(&values, args.placement_threshold);
    let summary = PlacementSummary::new(&all_probes, threshold, args.probe_round_trips);
    let primary = summary.primary_or_near();
    let mut report = Report {
        machine: Machine::at_end(load_start, &placement),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        seconds_per_run: length.messages.is_none().then_some(length.seconds),
        messages_per_run: length.messages,
        repetitions: args.reps,
        capacity: args.capacity,
        throughput: Vec::new(),
        latency: Vec::new(),
        targets: Vec::new(),
        placement: summary,
        skipped,
        instructions: args.instructions.as_ref().map(|p| p.display().to_string()),
    };
    for (k, job) in jobs.iter().enumerate() {
        let runs = Runs::new(&probes[k], threshold.0);
        match *job {
            Job::Throughput(system, shape, payload) => {
                let samples = &throughput[k];
                let rates: Vec<f64> = samples.iter().map(|s| s.msgs_per_sec).collect();
                let mut row = ThroughputRow::new(shape, payload, system, rates, &runs, primary);
                row.futex_wake = samples.iter().map(|s| s.futex_wake).max().unwrap_or(0);
                row.futex_wait = samples.iter().map(|s| s.futex_wait).max().unwrap_or(0);
                row.per_send_call = median_of(samples.iter().map(|s| s.per_send_call));
                row.per_receive_call = median_of(samples.iter().map(|s| s.per_receive_call));
                row.instructions_per_msg = instructions::lookup(&counts, system, payload);
                report.throughput.push(row);
            }
            Job::Latency(system, mode, payload) => {
                let samples = &latency[k];
                let percentiles: Vec<spec::Percentiles> =
                    samples.iter().map(|s| s.percentiles).collect();
                let mut row = LatencyRow::new(mode, system, payload, percentiles, &runs, primary);
                row.futex_wake = samples.iter().map(|s| s.futex_wake).max().unwrap_or(0);
                row.futex_wait = samples.iter().map(|s| s.futex_wait).max().unwrap_or(0);
                report.latency.push(row);
            }
        }
    }
    report.compute_ratios();
    report.compute_targets();
    Ok(report)
}

/// Runs the benchmark, prints the table, and writes the JSON and the chart if asked.
pub fn main_with(args: &BenchArgs) -> Res<Report> {
    let report = run(args)?;
    print!("{}", report.render());
    report::write_json(&report, args.json.as_deref())?;
    if let Some(path) = &args.chart {
        chart::draw(&report, path)?;
        println!("chart written to {}", path.display());
    }
    Ok(report)
}
