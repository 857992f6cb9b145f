//! The results: medians over repetitions, ratios, the targets, the table and JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::placement::{Class, Probes, RunClass, ThresholdSource};
use crate::spec::{Mode, Percentiles, Shape, System};

/// The machine the run happened on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// CPUs this process may use (`available_parallelism`).
    pub nproc: usize,
    /// The `model name` of `/proc/cpuinfo`, or `unknown`.
    pub cpu_model: String,
    /// `/proc/loadavg` (the 1, 5 and 15 minute averages) at the start of the run.
    pub load_average_start: String,
    /// `/proc/loadavg` at the end of the run.
    pub load_average_end: String,
    /// The CPU producers (and pings) were pinned to; `None`: not pinned (fewer than two CPUs).
    pub producer_cpu: Option<usize>,
    /// The CPU consumers (and pongs) were pinned to.
    pub consumer_cpu: Option<usize>,
}

impl Machine {
    /// This machine now, for a run that started at load average `load_average_start` and
    /// pinned as `placement` says.
    #[must_use]
    pub fn at_end(load_average_start: String, placement: &crate::runner::Placement) -> Self {
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: Machine::cpu_model(),
            load_average_start,
            load_average_end: Machine::load_average(),
            producer_cpu: placement.producer_cpu,
            consumer_cpu: placement.consumer_cpu,
        }
    }

    /// The first line of a report: the machine, what was pinned where (`producers` names what
    /// ran on the producer CPU, `consumers` what ran on the other) and the load averages.
    #[must_use]
    pub fn describe(&self, producers: &str, consumers: &str) -> String {
        format!(
            "machine: {} CPUs, {}; pinned {producers} to {:?}, {consumers} to {:?}; load average {} (start) / {} (end)",
            self.nproc,
            self.cpu_model,
            self.producer_cpu,
            self.consumer_cpu,
            self.load_average_start,
            self.load_average_end
        )
    }

    /// The three load averages of `/proc/loadavg`, or an empty string.
    #[must_use]
    pub fn load_average() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }

    /// The first `model name` of `/proc/cpuinfo`, or `unknown`.
    #[must_use]
    pub fn cpu_model() -> String {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

/// A ratio between two rows of the same placement.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Ratio {
    /// The ratio: the median over the repetition rounds in which both rows' runs were kept in
    /// this placement of the per-round ratios; when no round has both, the ratio of the two
    /// rows' medians in this placement (from different rounds).
    pub value: f64,
    /// Rounds in which both runs were kept in this placement (0: the ratio is of medians).
    pub same_round_pairs: usize,
}

/// The ratio of `row` to `reference`, both the (round, value) pairs kept in one placement:
/// the median of the per-round ratios where both have a run of the same round, else the ratio
/// of their medians; `None` if either is empty or the reference's values are not positive.
#[must_use]
pub fn ratio_of(row: &[(usize, f64)], reference: &[(usize, f64)]) -> Option<Ratio> {
    if row.is_empty() || reference.is_empty() {
        return None;
    }
    let pairs: Vec<f64> = row
        .iter()
        .filter_map(|(round, v)| {
            reference
                .iter()
                .find(|(r, _)| r == round)
                .filter(|(_, w)| *w > 0.0)
                .map(|(_, w)| v / w)
        })
        .collect();
    if !pairs.is_empty() {
        return Some(Ratio {
            value: median(&pairs),
            same_round_pairs: pairs.len(),
        });
    }
    let (a, b) = (
        median(&row.iter().map(|p| p.1).collect::<Vec<_>>()),
        median(&reference.iter().map(|p| p.1).collect::<Vec<_>>()),
    );
    (b > 0.0).then(|| Ratio {
        value: a / b,
        same_round_pairs: 0,
    })
}

/// One run of a row: its repetition round, the probes around it and its class.
#[derive(Clone, Debug, Serialize)]
pub struct RunPlacement {
    /// The repetition round (0-based) the run belongs to.
    pub round: usize,
    /// The cache-line probe immediately before the run (p50 one-way, ns).
    pub probe_before_ns: Option<f64>,
    /// The probe immediately after it.
    pub probe_after_ns: Option<f64>,
    /// `near`, `far`, `unprobed`, or `discarded` (the probes differ in class).
    pub placement: String,
}

/// The runs of one row with their rounds and probes, split by placement.
#[derive(Clone, Debug, Default)]
pub struct Runs {
    /// Every run, in round order.
    pub placements: Vec<RunPlacement>,
    /// The class of each run.
    pub classes: Vec<RunClass>,
}

impl Runs {
    /// The runs of `probes` (one per round, in round order) classed against `threshold_ns`.
    #[must_use]
    pub fn new(probes: &[Probes], threshold_ns: f64) -> Self {
        let classes: Vec<RunClass> = probes.iter().map(|p| p.class(threshold_ns)).collect();
        let placements = probes
            .iter()
            .zip(&classes)
            .enumerate()
            .map(|(round, (p, c))| RunPlacement {
                round,
                probe_before_ns: p.before_ns,
                probe_after_ns: p.after_ns,
                placement: match c {
                    RunClass::Kept(class) => class.name().to_owned(),
                    RunClass::Discarded => "discarded".to_owned(),
                },
            })
            .collect();
        Self {
            placements,
            classes,
        }
    }

    /// `count` runs, none probed (all kept as `unprobed`).
    #[must_use]
    pub fn unprobed(count: usize) -> Self {
        Self::new(&vec![Probes::default(); count], 0.0)
    }

    /// The rounds kept in `class`.
    #[must_use]
    pub fn rounds(&self, class: Class) -> Vec<usize> {
        self.classes
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == RunClass::Kept(class))
            .map(|(round, _)| round)
            .collect()
    }

    /// Runs whose probes differ in class.
    #[must_use]
    pub fn discarded(&self) -> usize {
        self.classes
            .iter()
            .filter(|c| **c == RunClass::Discarded)
            .count()
    }
}

/// Which placement the top-level figures of a row come from: the report's `primary` one if
/// the row kept a run there, else the class where it kept the most, else `None` (every run
/// discarded: the top level then is the median of all runs, placement `mixed`).
fn headline(runs: &Runs, primary: Class) -> Option<Class> {
    if !runs.rounds(primary).is_empty() {
        return Some(primary);
    }
    CLASSES
        .into_iter()
        .map(|c| (c, runs.rounds(c).len()))
        .filter(|(_, n)| *n > 0)
        .max_by_key(|(_, n)| *n)
        .map(|(c, _)| c)
}

/// Every class, in the order tables use.
pub const CLASSES: [Class; 3] = [Class::Near, Class::Far, Class::Unprobed];

/// One throughput row's figures within one placement.
#[derive(Clone, Debug, Serialize)]
pub struct PlacedThroughput {
    /// The placement.
    pub placement: Class,
    /// Runs kept in it.
    pub runs_kept: usize,
    /// The rounds of those runs.
    pub rounds: Vec<usize>,
    /// Their messages per second.
    pub runs: Vec<f64>,
    /// Median messages per second of those runs.
    pub msgs_per_sec: f64,
    /// Median payload bandwidth, MiB/s.
    pub mib_per_sec: f64,
    /// Over ArrayQueue in the same shape, payload and placement.
    pub vs_arrayqueue: Option<Ratio>,
    /// Over the bare ring in the same shape, payload and placement.
    pub vs_bare_ring: Option<Ratio>,
    /// Over the floor's hand-overs per second in the same placement.
    pub vs_floor: Option<Ratio>,
}

/// Throughput of one (shape, payload, system), over all repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputRow {
    /// Producers, consumers and channels of the run.
    pub shape: Shape,
    /// Payload bytes per message (8 for the floor, which moves one word).
    pub payload: usize,
    /// What moved the messages.
    pub system: System,
    /// Median messages per second of the runs kept in `placement` (of all runs when that is
    /// `mixed`).
    pub msgs_per_sec: f64,
    /// Every repetition, messages per second (whatever its placement; see `run_placements`).
    pub runs: Vec<f64>,
    /// Median payload bandwidth, MiB/s, as `msgs_per_sec`.
    pub mib_per_sec: f64,
    /// Over ArrayQueue in the same shape, payload and placement (`by_placement`'s ratio of
    /// `placement`).
    pub vs_arrayqueue: Option<f64>,
    /// Over the floor's hand-overs per second, in the same placement.
    pub vs_floor: Option<f64>,
    /// Over the bare ring in the same shape, payload and placement.
    pub vs_bare_ring: Option<f64>,
    /// Futex wake calls summed over the run's processes (largest repetition).
    pub futex_wake: u64,
    /// Futex wait calls, counted as `futex_wake`.
    pub futex_wait: u64,
    /// DMXP: median over repetitions of messages per successful send call, and per receive
    /// call that got at least one message (how full batches are).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_send_call: Option<f64>,
    /// DMXP: median over repetitions of messages per receive call that got at least one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_receive_call: Option<f64>,
    /// The placement the top-level figures are of: the report's primary placement if this row
    /// kept a run there, else the one where it kept most; `mixed` if it kept none.
    pub placement: String,
    /// Runs discarded because the placement changed during them.
    pub discarded: usize,
    /// Each run's round, probes and class (in the order of `runs`).
    pub run_placements: Vec<RunPlacement>,
    /// The figures per placement.
    pub by_placement: Vec<PlacedThroughput>,
    /// Instructions per message of this system's hot path at this payload, one thread, from
    /// `--instructions` (callgrind; not measured by this run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions_per_msg: Option<f64>,
}

impl ThroughputRow {
    /// The row of `rates` (one per round), with the runs' placements `runs`.
    #[must_use]
    pub fn new(
        shape: Shape,
        payload: usize,
        system: System,
        rates: Vec<f64>,
        runs: &Runs,
        primary: Class,
    ) -> Self {
        let bytes = if system == System::Floor { 8 } else { payload };
        let mib = |rate: f64| rate * bytes as f64 / (1 << 20) as f64;
        let by_placement: Vec<PlacedThroughput> = CLASSES
            .into_iter()
            .filter_map(|class| {
                let rounds = runs.rounds(class);
                if rounds.is_empty() {
                    return None;
                }
                let kept: Vec<f64> = rounds.iter().map(|&r| rates[r]).collect();
                let rate = median(&kept);
                Some(PlacedThroughput {
                    placement: class,
                    runs_kept: kept.len(),
                    rounds,
                    runs: kept,
                    msgs_per_sec: rate,
                    mib_per_sec: mib(rate),
                    vs_arrayqueue: None,
                    vs_bare_ring: None,
                    vs_floor: None,
                })
            })
            .collect();
        let top = headline(runs, primary);
        let rate = top
            .and_then(|c| by_placement.iter().find(|p| p.placement == c))
            .map_or_else(|| median(&rates), |p| p.msgs_per_sec);
        ThroughputRow {
            shape,
            payload,
            system,
            msgs_per_sec: rate,
            runs: rates,
            mib_per_sec: mib(rate),
            vs_arrayqueue: None,
            vs_floor: None,
            vs_bare_ring: None,
            futex_wake: 0,
            futex_wait: 0,
            per_send_call: None,
            per_receive_call: None,
            placement: top.map_or("mixed", Class::name).to_owned(),
            discarded: runs.discarded(),
            run_placements: runs.placements.clone(),
            by_placement,
            instructions_per_msg: None,
        }
    }

    /// The figures of `class`, if a run was kept there.
    #[must_use]
    pub fn placed(&self, class: Class) -> Option<&PlacedThroughput> {
        self.by_placement.iter().find(|p| p.placement == class)
    }

    fn kept(&self, class: Class) -> Vec<(usize, f64)> {
        self.placed(class)
            .map(|p| {
                p.rounds
                    .iter()
                    .copied()
                    .zip(p.runs.iter().copied())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn top_class(&self) -> Option<Class> {
        CLASSES.into_iter().find(|c| c.name() == self.placement)
    }
}

/// One latency row's figures within one placement.
#[derive(Clone, Debug, Serialize)]
pub struct PlacedLatency {
    /// The placement.
    pub placement: Class,
    /// Runs kept in it.
    pub runs_kept: usize,
    /// The rounds of those runs.
    pub rounds: Vec<usize>,
    /// Median p50 of those runs, in ns.
    pub p50_ns: f64,
    /// Median p99, in ns.
    pub p99_ns: f64,
    /// Median p99.9, in ns.
    pub p999_ns: f64,
    /// p50 over the floor's p50, same mode and placement.
    pub p50_vs_floor: Option<Ratio>,
    /// p50 over the bare ring's p50 (spin), same payload and placement.
    pub p50_vs_bare_ring: Option<Ratio>,
}

/// One-way latency of one (mode, system, payload), over all repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyRow {
    /// How the two ends waited.
    pub mode: Mode,
    /// What carried the ping and the pong.
    pub system: System,
    /// Payload bytes per message (8 for the floor).
    pub payload: usize,
    /// Medians over the runs kept in `placement` (all runs when `mixed`) of each
    /// percentile, in ns.
    pub p50_ns: f64,
    /// Median of the p99, in ns.
    pub p99_ns: f64,
    /// Median of the p99.9, in ns.
    pub p999_ns: f64,
    /// Every repetition's percentiles.
    pub runs: Vec<Percentiles>,
    /// p50 over the floor's p50 in the same mode and placement.
    pub p50_vs_floor: Option<f64>,
    /// p50 over the bare ring's p50 (spin) in the same placement.
    pub p50_vs_bare_ring: Option<f64>,
    /// Futex wake calls summed over both processes (largest repetition).
    pub futex_wake: u64,
    /// Futex wait calls, counted as `futex_wake`.
    pub futex_wait: u64,
    /// The placement the top-level figures are of (as for throughput rows).
    pub placement: String,
    /// Runs discarded because the placement changed during them.
    pub discarded: usize,
    /// Each run's round, probes and class (in the order of `runs`).
    pub run_placements: Vec<RunPlacement>,
    /// The figures per placement.
    pub by_placement: Vec<PlacedLatency>,
}

impl LatencyRow {
    /// The row of `percentiles` (one per round), with the runs' placements `runs`.
    #[must_use]
    pub fn new(
        mode: Mode,
        system: System,
        payload: usize,
        percentiles: Vec<Percentiles>,
        runs: &Runs,
        primary: Class,
    ) -> Self {
        let pick = |set: &[&Percentiles], f: fn(&Percentiles) -> f64| {
            median(&set.iter().map(|p| f(p)).collect::<Vec<_>>())
        };
        let by_placement: Vec<PlacedLatency> = CLASSES
            .into_iter()
            .filter_map(|class| {
                let rounds = runs.rounds(class);
                if rounds.is_empty() {
                    return None;
                }
                let kept: Vec<&Percentiles> = rounds.iter().map(|&r| &percentiles[r]).collect();
                Some(PlacedLatency {
                    placement: class,
                    runs_kept: kept.len(),
                    rounds,
                    p50_ns: pick(&kept, |p| p.p50),
                    p99_ns: pick(&kept, |p| p.p99),
                    p999_ns: pick(&kept, |p| p.p999),
                    p50_vs_floor: None,
                    p50_vs_bare_ring: None,
                })
            })
            .collect();
        let top = headline(runs, primary);
        let all: Vec<&Percentiles> = percentiles.iter().collect();
        let (p50, p99, p999) =
            match top.and_then(|c| by_placement.iter().find(|p| p.placement == c)) {
                Some(p) => (p.p50_ns, p.p99_ns, p.p999_ns),
                None => (
                    pick(&all, |p| p.p50),
                    pick(&all, |p| p.p99),
                    pick(&all, |p| p.p999),
                ),
            };
        LatencyRow {
            mode,
            system,
            payload,
            p50_ns: p50,
            p99_ns: p99,
            p999_ns: p999,
            runs: percentiles,
            p50_vs_floor: None,
            p50_vs_bare_ring: None,
            futex_wake: 0,
            futex_wait: 0,
            placement: top.map_or("mixed", Class::name).to_owned(),
            discarded: runs.discarded(),
            run_placements: runs.placements.clone(),
            by_placement,
        }
    }

    /// The figures of `class`, if a run was kept there.
    #[must_use]
    pub fn placed(&self, class: Class) -> Option<&PlacedLatency> {
        self.by_placement.iter().find(|p| p.placement == class)
    }

    fn kept_p50(&self, class: Class) -> Vec<(usize, f64)> {
        self.placed(class)
            .map(|p| p.rounds.iter().map(|&r| (r, self.runs[r].p50)).collect())
            .unwrap_or_default()
    }

    fn top_class(&self) -> Option<Class> {
        CLASSES.into_iter().find(|c| c.name() == self.placement)
    }
}

/// One of the targets.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is compared (`32 B 1->1, dmxp vs ArrayQueue`).
    pub name: String,
    /// The bound to meet (`>= 1.0x`, `<= 2.0x`, `== 0`).
    pub goal: String,
    /// The measured ratio (or count); `None` when the run did not measure it. Ratios are of
    /// the rows' top-level placement.
    pub measured: Option<f64>,
    /// Whether `measured` meets `goal`; `None` when not measured.
    pub met: Option<bool>,
    /// The ratio among near runs only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub near: Option<f64>,
    /// The ratio among far runs only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub far: Option<f64>,
}

/// How the runs were placed: the probes, the threshold and what was kept.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PlacementSummary {
    /// Round trips per probe.
    pub probe_round_trips: u64,
    /// The near/far threshold (p50 one-way, ns).
    pub threshold_ns: f64,
    /// `flag`, `data` or `default` ([`crate::placement::threshold`]).
    pub threshold_from: Option<ThresholdSource>,
    /// Probes taken (two per run), and how many of them were near and far.
    pub probes: usize,
    /// Probes below the threshold.
    pub near_probes: usize,
    /// Probes at or above it.
    pub far_probes: usize,
    /// Median of the near probes, ns.
    pub near_probe_median_ns: Option<f64>,
    /// Median of the far probes, ns.
    pub far_probe_median_ns: Option<f64>,
    /// Runs kept near, far and unprobed, and runs discarded, over the whole report.
    pub runs_near: usize,
    /// Runs kept far.
    pub runs_far: usize,
    /// Runs kept without probes (fewer than two CPUs).
    pub runs_unprobed: usize,
    /// Runs discarded (their probes differ in class).
    pub runs_discarded: usize,
    /// The placement with the most runs kept: the rows' top-level figures are of it.
    pub primary: Option<Class>,
}

impl PlacementSummary {
    /// The summary of every probe pair of a report, against `threshold`.
    #[must_use]
    pub fn new(
        pairs: &[Probes],
        threshold: (f64, ThresholdSource),
        probe_round_trips: u64,
    ) -> Self {
        let values: Vec<f64> = pairs
            .iter()
            .flat_map(|p| [p.before_ns, p.after_ns])
            .flatten()
            .collect();
        let (near, far): (Vec<f64>, Vec<f64>) = values.iter().partition(|v| **v < threshold.0);
        let classes: Vec<RunClass> = pairs.iter().map(|p| p.class(threshold.0)).collect();
        let count = |c: RunClass| classes.iter().filter(|x| **x == c).count();
        let mut summary = PlacementSummary {
            probe_round_trips,
            threshold_ns: threshold.0,
            threshold_from: (!values.is_empty()).then_some(threshold.1),
            probes: values.len(),
            near_probes: near.len(),
            far_probes: far.len(),
            near_probe_median_ns: (!near.is_empty()).then(|| median(&near)),
            far_probe_median_ns: (!far.is_empty()).then(|| median(&far)),
            runs_near: count(RunClass::Kept(Class::Near)),
            runs_far: count(RunClass::Kept(Class::Far)),
            runs_unprobed: count(RunClass::Kept(Class::Unprobed)),
            runs_discarded: count(RunClass::Discarded),
            primary: None,
        };
        summary.primary = [
            (Class::Near, summary.runs_near),
            (Class::Far, summary.runs_far),
            (Class::Unprobed, summary.runs_unprobed),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        // The first of the largest: near wins a tie.
        .fold(None, |best: Option<(Class, usize)>, (c, n)| match best {
            Some((_, m)) if m >= n => best,
            _ => Some((c, n)),
        })
        .map(|(c, _)| c);
        summary
    }

    /// The placement rows take their top-level figures from (near when nothing was kept).
    #[must_use]
    pub fn primary_or_near(&self) -> Class {
        self.primary.unwrap_or(Class::Near)
    }

    /// Runs kept in `class`.
    #[must_use]
    pub fn kept(&self, class: Class) -> usize {
        match class {
            Class::Near => self.runs_near,
            Class::Far => self.runs_far,
            Class::Unprobed => self.runs_unprobed,
        }
    }

    /// The line of the report that says how the runs were placed.
    #[must_use]
    pub fn describe(&self) -> String {
        if self.probes == 0 {
            return format!(
                "placement: not probed (fewer than two CPUs, or --probe-round-trips 0): {} runs, all in one group",
                self.runs_unprobed
            );
        }
        let from = match self.threshold_from {
            Some(ThresholdSource::Flag) => "set by --placement-threshold",
            Some(ThresholdSource::Data) => "midway between the two clusters of probes",
            _ => "the default: the probes form one cluster",
        };
        let med = |m: Option<f64>| m.map_or("-".to_owned(), |v| format!("{v:.0} ns"));
        format!(
            "placement: cache-line probe ({} round trips, p50 one-way) before and after every run; \
             threshold {:.0} ns ({from}); probes: {} near (median {}), {} far (median {}); \
             runs kept: {} near, {} far; {} discarded (placement changed during the run)",
            self.probe_round_trips,
            self.threshold_ns,
            self.near_probes,
            med(self.near_probe_median_ns),
            self.far_probes,
            med(self.far_probe_median_ns),
            self.runs_near,
            self.runs_far,
            self.runs_discarded
        )
    }
}

/// A system the report does not cover, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    /// The system.
    pub system: System,
    /// Why it did not run.
    pub reason: String,
}

/// Everything one `dmxp bench` run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// The command line, as given.
    pub command: String,
    /// Seconds per run of a timed run; `None` when runs had a fixed message count.
    pub seconds_per_run: Option<f64>,
    /// Messages per producer (round trips per latency run), if fixed.
    pub messages_per_run: Option<u64>,
    /// Repetitions of every configuration (rows show medians over them).
    pub repetitions: usize,
    /// Slots per ring (elements per ArrayQueue).
    pub capacity: u64,
    /// One row per (shape, payload, system), in the order they ran.
    pub throughput: Vec<ThroughputRow>,
    /// One row per (mode, system, payload).
    pub latency: Vec<LatencyRow>,
    /// The targets, evaluated ([`Self::compute_targets`]).
    pub targets: Vec<Target>,
    /// How the runs were placed (near or far CPUs) and what was kept.
    pub placement: PlacementSummary,
    /// Systems asked for that did not run, and why.
    pub skipped: Vec<Skipped>,
    /// The instruction counts shown beside the throughput rows (`--instructions`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
}

/// How long each run was, for a report's `runs:` line: `{n} {counted}` for runs of a fixed
/// count `n`, `{s} s` for timed ones.
pub(crate) fn run_length_text(
    messages_per_run: Option<u64>,
    seconds_per_run: Option<f64>,
    counted: &str,
) -> String {
    match (messages_per_run, seconds_per_run) {
        (Some(n), _) => format!("{n} {counted}"),
        (None, Some(s)) => format!("{s} s"),
        _ => String::new(),
    }
}

/// Writes `report` as pretty JSON to `path`, if there is one, and says so on stdout.
pub(crate) fn write_json(
    report: &impl Serialize,
    path: Option<&std::path::Path>,
) -> crate::Res<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_string_pretty(report)? + "\n")?;
        println!("\nJSON written to {}", path.display());
    }
    Ok(())
}

/// The median of `values` (the mean of the middle two for an even count).
#[must_use]
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// The median of the values present, or `None` when there are none.
#[must_use]
pub fn median_of(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let present: Vec<f64> = values.flatten().collect();
    (!present.is_empty()).then(|| median(&present))
}

impl Report {
    /// The throughput row of (`shape`, `payload`, `system`), if it ran.
    #[must_use]
    pub fn throughput_of(
        &self,
        shape: Shape,
        payload: usize,
        system: System,
    ) -> Option<&ThroughputRow> {
        self.throughput
            .iter()
            .find(|r| r.shape == shape && r.payload == payload && r.system == system)
    }

    /// The latency row of (`mode`, `system`, `payload`), if it ran.
    #[must_use]
    pub fn latency_of(&self, mode: Mode, system: System, payload: usize) -> Option<&LatencyRow> {
        self.latency
            .iter()
            .find(|r| r.mode == mode && r.system == system && r.payload == payload)
    }

    /// Fills the ratios, each between runs of one placement (per round where both rows have
    /// a run kept in it, [`ratio_of`]); a row's top-level ratios are those of its top-level
    /// placement.
    pub fn compute_ratios(&mut self) {
        let rows = self.throughput.clone();
        let floor = rows.iter().find(|r| r.system == System::Floor);
        for row in &mut self.throughput {
            let same = |system: System| {
                rows.iter().find(|r| {
                    r.shape == row.shape && r.payload == row.payload && r.system == system
                })
            };
            let aq = same(System::ArrayQueue).filter(|_| row.system != System::Floor);
            let bare = same(System::BareRing).filter(|_| row.system != System::Floor);
            let top = row.top_class();
            for class in CLASSES {
                let kept = row.kept(class);
                let ratio = |reference: Option<&ThroughputRow>| {
                    reference.and_then(|r| ratio_of(&kept, &r.kept(class)))
                };
                let (vs_aq, vs_bare, vs_floor) = (ratio(aq), ratio(bare), ratio(floor));
                if let Some(placed) = row.by_placement.iter_mut().find(|p| p.placement == class) {
                    placed.vs_arrayqueue = vs_aq;
                    placed.vs_bare_ring = vs_bare;
                    placed.vs_floor = vs_floor;
                }
                if top == Some(class) {
                    row.vs_arrayqueue = vs_aq.map(|r| r.value);
                    row.vs_bare_ring = vs_bare.map(|r| r.value);
                    row.vs_floor = vs_floor.map(|r| r.value);
                }
            }
        }
        let lat = self.latency.clone();
        for row in &mut self.latency {
            let floor = lat
                .iter()
                .find(|r| r.mode == row.mode && r.system == System::Floor);
            let bare = lat
                .iter()
                .find(|r| {
                    r.mode == Mode::Spin && r.system == System::BareRing && r.payload == row.payload
                })
                .filter(|_| row.mode == Mode::Spin && row.system != System::Floor);
            let top = row.top_class();
            for class in CLASSES {
                let kept = row.kept_p50(class);
                let ratio = |reference: Option<&LatencyRow>| {
                    reference.and_then(|r| ratio_of(&kept, &r.kept_p50(class)))
                };
                let (vs_floor, vs_bare) = (ratio(floor), ratio(bare));
                if let Some(placed) = row.by_placement.iter_mut().find(|p| p.placement == class) {
                    placed.p50_vs_floor = vs_floor;
                    placed.p50_vs_bare_ring = vs_bare;
                }
                if top == Some(class) {
                    row.p50_vs_floor = vs_floor.map(|r| r.value);
                    row.p50_vs_bare_ring = vs_bare.map(|r| r.value);
                }
            }
        }
    }

    /// Evaluates the targets against the ratios (top-level placement; near and far
    /// beside).
    pub fn compute_targets(&mut self) {
        type Pick = fn(&PlacedThroughput) -> Option<Ratio>;
        let throughput =
            |shape, payload, system, top: fn(&ThroughputRow) -> Option<f64>, placed: Pick| {
                let row = self.throughput_of(shape, payload, system);
                let by = |class| {
                    row.and_then(|r| r.placed(class))
                        .and_then(placed)
                        .map(|r| r.value)
                };
                (row.and_then(top), by(Class::Near), by(Class::Far))
            };
        let vs_aq = |shape, payload, system| {
            throughput(
                shape,
                payload,
                system,
                |r| r.vs_arrayqueue,
                |p| p.vs_arrayqueue,
            )
        };
        // Zero-copy against its copying counterpart, per round within one placement.
        let vs_copy = |payload, system| {
            let row = self.throughput_of(Shape::OneToOne, payload, system);
            let copy = self.throughput_of(Shape::OneToOne, payload, System::DmxpSingle);
            let by = |class| {
                row.zip(copy)
                    .and_then(|(r, c)| ratio_of(&r.kept(class), &c.kept(class)))
                    .map(|r| r.value)
            };
            let top = row.and_then(ThroughputRow::top_class).and_then(by);
            (top, by(Class::Near), by(Class::Far))
        };
        let mut targets = Vec::new();
        let mut at_least =
            |name: &str,
             goal: f64,
             (measured, near, far): (Option<f64>, Option<f64>, Option<f64>)| {
                targets.push(Target {
                    name: name.to_owned(),
                    goal: format!(">= {goal:.2}x").replace(".00x", ".0x"),
                    measured,
                    met: measured.map(|m| m >= goal),
                    near,
                    far,
                })
            };
        at_least(
            "32 B 1->1, dmxp vs ArrayQueue",
            1.0,
            vs_aq(Shape::OneToOne, 32, System::DmxpSingle),
        );
        at_least(
            "32 B 1->1, dmxp-batch vs ArrayQueue",
            1.5,
            vs_aq(Shape::OneToOne, 32, System::DmxpBatch),
        );
        at_least(
            "960 B 1->1, dmxp vs ArrayQueue",
            1.0,
            vs_aq(Shape::OneToOne, 960, System::DmxpSingle),
        );
        at_least(
            "32 B 2->2 one channel, dmxp vs ArrayQueue",
            1.0,
            vs_aq(Shape::TwoToTwo, 32, System::DmxpSingle),
        );
        at_least(
            "32 B 1->1, dmxp vs bare-ring (the layout floor)",
            0.85,
            throughput(
                Shape::OneToOne,
                32,
                System::DmxpSingle,
                |r| r.vs_bare_ring,
                |p| p.vs_bare_ring,
            ),
        );
        for payload in [32, 256, 960] {
            at_least(
                &format!("{payload} B 1->1, dmxp-loan vs dmxp (loan >= send)"),
                1.0,
                vs_copy(payload, System::DmxpLoan),
            );
            at_least(
                &format!("{payload} B 1->1, dmxp-inplace vs dmxp (in-place >= copy)"),
                1.0,
                vs_copy(payload, System::DmxpInPlace),
            );
        }
        let spin = self
            .latency
            .iter()
            .find(|r| r.mode == Mode::Spin && r.system == System::DmxpSingle);
        let p50 = spin.and_then(|r| r.p50_vs_floor);
        let by = |class| {
            spin.and_then(|r| r.placed(class))
                .and_then(|p| p.p50_vs_floor)
                .map(|r| r.value)
        };
        targets.push(Target {
            name: "one-way latency p50 (spin), dmxp vs floor".to_owned(),
            goal: "<= 1.5x".to_owned(),
            measured: p50,
            met: p50.map(|m| m <= 1.5),
            near: by(Class::Near),
            far: by(Class::Far),
        });
        let futex: Option<f64> = {
            let rows: Vec<&ThroughputRow> = self
                .throughput
                .iter()
                .filter(|r| r.system.is_dmxp())
                .collect();
            let spin: Vec<&LatencyRow> = self
                .latency
                .iter()
                .filter(|r| r.system.is_dmxp() && r.mode == Mode::Spin)
                .collect();
            (!rows.is_empty() || !spin.is_empty()).then(|| {
                rows.iter()
                    .map(|r| r.futex_wake + r.futex_wait)
                    .sum::<u64>() as f64
                    + spin
                        .iter()
                        .map(|r| r.futex_wake + r.futex_wait)
                        .sum::<u64>() as f64
            })
        };
        targets.push(Target {
            name: "futex calls in non-blocking dmxp runs".to_owned(),
            goal: "== 0".to_owned(),
            measured: futex,
            met: futex.map(|f| f == 0.0),
            near: None,
            far: None,
        });
        self.targets = targets;
    }

    /// The placements that have kept runs, in table order (unprobed only when nothing was
    /// probed; with no runs at all, near, so that the tables still have headers).
    fn classes_shown(&self) -> Vec<Class> {
        let shown: Vec<Class> = CLASSES
            .into_iter()
            .filter(|c| {
                self.throughput.iter().any(|r| r.placed(*c).is_some())
                    || self.latency.iter().any(|r| r.placed(*c).is_some())
            })
            .collect();
        if shown.is_empty() {
            vec![self.placement.primary_or_near()]
        } else {
            shown
        }
    }

    /// The human tables: per placement, throughput and latency of the runs kept there.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.machine.describe("producers", "consumers"));
        let length = run_length_text(
            self.messages_per_run,
            self.seconds_per_run,
            "messages per producer",
        );
        let _ = writeln!(
            out,
            "runs: {length} each, {} repetitions, rings of {} slots",
            self.repetitions, self.capacity
        );
        let _ = writeln!(out, "{}", self.placement.describe());
        for skipped in &self.skipped {
            let _ = writeln!(out, "{}: SKIPPED ({})", skipped.system, skipped.reason);
        }
        if let Some(path) = &self.instructions {
            let _ = writeln!(
                out,
                "instr/msg: callgrind instructions per send + receive, one thread, from {path}"
            );
        }
        let with_instr = self.instructions.is_some();
        let ratio = |r: Option<Ratio>| {
            r.map_or("-".into(), |r| {
                format!(
                    "{:.2}{}",
                    r.value,
                    if r.same_round_pairs == 0 { "*" } else { "" }
                )
            })
        };
        let classes = self.classes_shown();
        for &class in &classes {
            let title = placement_title(class, &self.placement);
            let has_throughput = self.throughput.iter().any(|r| r.placed(class).is_some());
            let has_latency = self.latency.iter().any(|r| r.placed(class).is_some());
            if has_throughput || !has_latency {
                let _ = writeln!(
                    out,
                    "\nTHROUGHPUT, {title} (messages/s, median of the runs kept)"
                );
                let mut header = vec![
                    "shape",
                    "payload",
                    "system",
                    "Mmsg/s",
                    "MiB/s",
                    "kept",
                    "x ArrayQueue",
                    "x bare-ring",
                    "x floor",
                ];
                if with_instr {
                    header.push("instr/msg");
                }
                header.push("futex");
                let mut rows = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
                for r in &self.throughput {
                    let Some(p) = r.placed(class) else { continue };
                    let mut line = vec![
                        r.shape.name().to_owned(),
                        if r.system == System::Floor {
                            "8".to_owned()
                        } else {
                            r.payload.to_string()
                        },
                        r.system.name().to_owned(),
                        format!("{:.2}", p.msgs_per_sec / 1e6),
                        format!("{:.0}", p.mib_per_sec),
                        format!("{}/{}", p.runs_kept, r.runs.len()),
                        ratio(p.vs_arrayqueue),
                        ratio(p.vs_bare_ring),
                        ratio(p.vs_floor),
                    ];
                    if with_instr {
                        line.push(
                            r.instructions_per_msg
                                .map_or("-".into(), |v| format!("{v:.0}")),
                        );
                    }
                    line.push(if r.system.is_dmxp() {
                        (r.futex_wake + r.futex_wait).to_string()
                    } else {
                        "-".into()
                    });
                    rows.push(line);
                }
                out.push_str(&align(&rows));
            }
            if has_latency || !has_throughput {
                let _ = writeln!(
                out,
                "\nONE-WAY LATENCY, {title} (round trip / 2, ns, median of each percentile over the runs kept)"
            );
                let header = [
                    "mode",
                    "system",
                    "payload",
                    "p50",
                    "p99",
                    "p99.9",
                    "kept",
                    "p50 x floor",
                    "p50 x bare-ring",
                    "futex",
                ];
                let mut rows = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
                for r in &self.latency {
                    let Some(p) = r.placed(class) else { continue };
                    rows.push(vec![
                        r.mode.name().to_owned(),
                        r.system.name().to_owned(),
                        if r.system == System::Floor {
                            "8".to_owned()
                        } else {
                            r.payload.to_string()
                        },
                        format!("{:.0}", p.p50_ns),
                        format!("{:.0}", p.p99_ns),
                        format!("{:.0}", p.p999_ns),
                        format!("{}/{}", p.runs_kept, r.runs.len()),
                        ratio(p.p50_vs_floor),
                        ratio(p.p50_vs_bare_ring),
                        if r.system.is_dmxp() {
                            (r.futex_wake + r.futex_wait).to_string()
                        } else {
                            "-".into()
                        },
                    ]);
                }
                out.push_str(&align(&rows));
            }
        }
        let lost: Vec<String> = self
            .throughput
            .iter()
            .filter(|r| r.by_placement.is_empty())
            .map(|r| format!("{} {} {} B", r.system, r.shape.name(), r.payload))
            .chain(
                self.latency
                    .iter()
                    .filter(|r| r.by_placement.is_empty())
                    .map(|r| format!("{} {} {} B", r.system, r.mode.name(), r.payload)),
            )
            .collect();
        if !lost.is_empty() {
            let _ = writeln!(
                out,
                "\nevery run discarded (placement changed during each): {}",
                lost.join(", ")
            );
        }
        let _ = writeln!(
            out,
            "\nkept: runs of the row kept in this placement / runs of the row. Ratios are between \
             runs of one placement: the median of per-round ratios, or (*) of the placement's \
             medians when no round has both runs there."
        );
        let _ = writeln!(out, "\nTARGETS");
        out.push_str(&targets_table(&self.targets));
        out
    }
}

/// `near placement (probes median 63 ns one-way; 40 runs kept)`.
fn placement_title(class: Class, summary: &PlacementSummary) -> String {
    let median = match class {
        Class::Near => summary.near_probe_median_ns,
        Class::Far => summary.far_probe_median_ns,
        Class::Unprobed => None,
    };
    match median {
        Some(m) => format!(
            "{} placement (probes: median {m:.0} ns one-way; {} runs kept)",
            class.name().to_uppercase(),
            summary.kept(class)
        ),
        None => format!(
            "{} ({} runs kept)",
            class.name().to_uppercase(),
            summary.kept(class)
        ),
    }
}

/// The targets as a text table: goal, measured ratio, and whether it was met.
pub(crate) fn targets_table(targets: &[Target]) -> String {
    let by_placement = targets.iter().any(|t| t.near.is_some() || t.far.is_some());
    let mut header = vec!["target", "goal", "measured", "met"];
    if by_placement {
        header.extend(["near", "far"]);
    }
    let mut rows = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    let num = |m: Option<f64>| m.map_or("-".into(), |m| format!("{m:.2}"));
    for t in targets {
        let mut row = vec![
            t.name.clone(),
            t.goal.clone(),
            num(t.measured),
            match t.met {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "not measured".into(),
            },
        ];
        if by_placement {
            row.extend([num(t.near), num(t.far)]);
        }
        rows.push(row);
    }
    align(&rows)
}

/// Left-aligned text columns, two spaces apart.
pub(crate) fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    fn row(shape: Shape, payload: usize, system: System, rate: f64, futex: u64) -> ThroughputRow {
        let mut r = ThroughputRow::new(
            shape,
            payload,
            system,
            vec![rate],
            &Runs::unprobed(1),
            Class::Unprobed,
        );
        r.futex_wake = futex;
        r
    }

    fn report(throughput: Vec<ThroughputRow>, latency: Vec<LatencyRow>) -> Report {
        Report {
            machine: Machine {
                nproc: 2,
                cpu_model: "test".into(),
                load_average_start: String::new(),
                load_average_end: String::new(),
                producer_cpu: Some(0),
                consumer_cpu: Some(1),
            },
            command: String::new(),
            seconds_per_run: Some(1.0),
            messages_per_run: None,
            repetitions: 3,
            capacity: 1024,
            throughput,
            latency,
            targets: Vec::new(),
            placement: PlacementSummary::default(),
            skipped: Vec::new(),
            instructions: None,
        }
    }

    fn lat(mode: Mode, system: System, p50: f64) -> LatencyRow {
        let p = Percentiles {
            p50,
            p99: p50,
            p999: p50,
            samples: 1,
        };
        LatencyRow::new(
            mode,
            system,
            32,
            vec![p],
            &Runs::unprobed(1),
            Class::Unprobed,
        )
    }

    #[test]
    fn ratios_and_targets_follow_the_medians() {
        let mut r = report(
            vec![
                row(Shape::OneToOne, 32, System::ArrayQueue, 10e6, 0),
                row(Shape::OneToOne, 32, System::DmxpSingle, 12e6, 0),
                row(Shape::OneToOne, 32, System::DmxpBatch, 15e6, 0),
                row(Shape::OneToOne, 32, System::BareRing, 16e6, 0),
                row(Shape::OneToOne, 32, System::DmxpLoan, 13e6, 0),
                row(Shape::OneToOne, 32, System::DmxpInPlace, 11e6, 0),
                row(Shape::OneToOne, 8, System::Floor, 5e6, 0),
                row(Shape::TwoToTwo, 32, System::ArrayQueue, 4e6, 0),
                row(Shape::TwoToTwo, 32, System::DmxpSingle, 2e6, 3),
            ],
            vec![
                lat(Mode::Spin, System::Floor, 100.0),
                lat(Mode::Spin, System::DmxpSingle, 150.0),
                lat(Mode::Spin, System::BareRing, 120.0),
            ],
        );
        r.compute_ratios();
        r.compute_targets();
        let single = r
            .throughput_of(Shape::OneToOne, 32, System::DmxpSingle)
            .unwrap();
        assert_eq!(single.vs_arrayqueue, Some(1.2));
        assert_eq!(single.vs_floor, Some(12e6 / 5e6));
        assert_eq!(single.vs_bare_ring, Some(0.75));
        assert_eq!(
            single.placed(Class::Unprobed).unwrap().vs_bare_ring,
            Some(Ratio {
                value: 0.75,
                same_round_pairs: 1
            })
        );
        assert_eq!(
            r.throughput_of(Shape::OneToOne, 8, System::Floor)
                .unwrap()
                .vs_arrayqueue,
            None
        );
        let spin = r.latency_of(Mode::Spin, System::DmxpSingle, 32).unwrap();
        assert_eq!(spin.p50_vs_floor, Some(1.5));
        assert_eq!(spin.p50_vs_bare_ring, Some(1.25));
        let met: Vec<Option<bool>> = r.targets.iter().map(|t| t.met).collect();
        // 1->1 met, batch 1.5x met, 960 B not measured, 2->2 0.5x, 0.75x < 0.85x of the bare
        // ring, 32 B loan 13/12 met and in-place 11/12 not (256 and 960 B not measured),
        // latency 1.5x met, futex 3.
        assert_eq!(
            met,
            vec![
                Some(true),
                Some(true),
                None,
                Some(false),
                Some(false),
                Some(true),
                Some(false),
                None,
                None,
                None,
                None,
                Some(true),
                Some(false)
            ]
        );
        let table = r.render();
        assert!(table.contains("x ArrayQueue") && table.contains("x bare-ring"));
        assert!(table.contains("NO"));
        assert!(table.contains("not measured"));
    }

    /// Rounds: 0 near, 1 far, 2 discarded for dmxp; 0 near, 1 far, 2 near for the bare ring.
    #[test]
    fn ratios_stay_within_one_placement_and_round() {
        let probes = |classes: &[&str]| -> Vec<Probes> {
            classes
                .iter()
                .map(|c| {
                    let (b, a) = match *c {
                        "near" => (60.0, 62.0),
                        "far" => (190.0, 185.0),
                        _ => (60.0, 190.0),
                    };
                    Probes {
                        before_ns: Some(b),
                        after_ns: Some(a),
                    }
                })
                .collect()
        };
        let dmxp_runs = Runs::new(&probes(&["near", "far", "moved"]), 125.0);
        let bare_runs = Runs::new(&probes(&["near", "far", "near"]), 125.0);
        let mut all = probes(&["near", "far", "moved"]);
        all.extend(probes(&["near", "far", "near"]));
        let summary = PlacementSummary::new(&all, (125.0, ThresholdSource::Data), 20_000);
        assert_eq!(
            (
                summary.runs_near,
                summary.runs_far,
                summary.runs_discarded,
                summary.primary
            ),
            (3, 2, 1, Some(Class::Near))
        );
        let primary = summary.primary_or_near();
        let dmxp = ThroughputRow::new(
            Shape::OneToOne,
            32,
            System::DmxpSingle,
            vec![9e6, 3e6, 100e6],
            &dmxp_runs,
            primary,
        );
        let bare = ThroughputRow::new(
            Shape::OneToOne,
            32,
            System::BareRing,
            vec![10e6, 5e6, 12e6],
            &bare_runs,
            primary,
        );
        assert_eq!(dmxp.discarded, 1);
        assert_eq!(dmxp.placement, "near");
        assert_eq!(dmxp.msgs_per_sec, 9e6);
        assert_eq!(bare.msgs_per_sec, 11e6);
        let mut r = report(vec![dmxp, bare], Vec::new());
        r.placement = summary;
        r.compute_ratios();
        r.compute_targets();
        let dmxp = r
            .throughput_of(Shape::OneToOne, 32, System::DmxpSingle)
            .unwrap();
        // Near: round 0 only (9 / 10); far: round 1 (3 / 5); the discarded 100 M is in neither.
        assert_eq!(dmxp.vs_bare_ring, Some(0.9));
        assert_eq!(
            dmxp.placed(Class::Near).unwrap().vs_bare_ring,
            Some(Ratio {
                value: 0.9,
                same_round_pairs: 1
            })
        );
        assert_eq!(
            dmxp.placed(Class::Far).unwrap().vs_bare_ring,
            Some(Ratio {
                value: 0.6,
                same_round_pairs: 1
            })
        );
        let target = r
            .targets
            .iter()
            .find(|t| t.name.contains("bare-ring"))
            .unwrap();
        assert_eq!(
            (target.measured, target.near, target.far, target.met),
            (Some(0.9), Some(0.9), Some(0.6), Some(true))
        );
        let table = r.render();
        assert!(table.contains("NEAR placement") && table.contains("FAR placement"));
        assert!(table.contains("1 discarded"), "{table}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["throughput"][0]["run_placements"][2]["placement"],
            "discarded"
        );
        assert_eq!(
            json["throughput"][0]["run_placements"][0]["probe_before_ns"],
            60.0
        );
        assert_eq!(json["placement"]["threshold_from"], "data");
    }

    #[test]
    fn a_ratio_without_a_shared_round_is_of_the_medians() {
        assert_eq!(
            ratio_of(&[(0, 8.0), (2, 12.0)], &[(1, 5.0)]),
            Some(Ratio {
                value: 2.0,
                same_round_pairs: 0
            })
        );
        assert_eq!(ratio_of(&[], &[(1, 5.0)]), None);
    }

    #[test]
    fn columns_line_up() {
        let text = align(&[
            vec!["a".into(), "bbb".into(), "c".into()],
            vec!["dddd".into(), "e".into(), "f".into()],
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "a     bbb  c");
        assert_eq!(lines[1], "dddd  e    f");
    }
}
