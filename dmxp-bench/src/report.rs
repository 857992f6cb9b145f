//! The results: medians over repetitions, ratios, the targets, the table and JSON.

use std::fmt::Write as _;

use serde::Serialize;

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

/// Throughput of one (shape, payload, system), over all repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputRow {
    /// Producers, consumers and channels of the run.
    pub shape: Shape,
    /// Payload bytes per message (8 for the floor, which moves one word).
    pub payload: usize,
    /// What moved the messages.
    pub system: System,
    /// Median messages per second.
    pub msgs_per_sec: f64,
    /// Every repetition, messages per second.
    pub runs: Vec<f64>,
    /// Median payload bandwidth, MiB/s.
    pub mib_per_sec: f64,
    /// Median over `ArrayQueue`'s median in the same shape and payload.
    pub vs_arrayqueue: Option<f64>,
    /// Median over the floor's hand-overs per second.
    pub vs_floor: Option<f64>,
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
    /// Medians over repetitions of each percentile, in ns.
    pub p50_ns: f64,
    /// Median over repetitions of the p99, in ns.
    pub p99_ns: f64,
    /// Median over repetitions of the p99.9, in ns.
    pub p999_ns: f64,
    /// Every repetition's percentiles.
    pub runs: Vec<Percentiles>,
    /// p50 over the floor's p50 in the same mode.
    pub p50_vs_floor: Option<f64>,
    /// Futex wake calls summed over both processes (largest repetition).
    pub futex_wake: u64,
    /// Futex wait calls, counted as `futex_wake`.
    pub futex_wait: u64,
}

/// One of the targets.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is compared (`32 B 1->1, dmxp vs ArrayQueue`).
    pub name: String,
    /// The bound to meet (`>= 1.0x`, `<= 2.0x`, `== 0`).
    pub goal: String,
    /// The measured ratio (or count); `None` when the run did not measure it.
    pub measured: Option<f64>,
    /// Whether `measured` meets `goal`; `None` when not measured.
    pub met: Option<bool>,
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

    /// Fills the ratios from the medians.
    pub fn compute_ratios(&mut self) {
        let floor = self
            .throughput
            .iter()
            .find(|r| r.system == System::Floor)
            .map(|r| r.msgs_per_sec);
        let rows = self.throughput.clone();
        for row in &mut self.throughput {
            let reference = rows.iter().find(|r| {
                r.shape == row.shape && r.payload == row.payload && r.system == System::ArrayQueue
            });
            row.vs_arrayqueue = reference
                .filter(|r| r.msgs_per_sec > 0.0 && row.system != System::Floor)
                .map(|r| row.msgs_per_sec / r.msgs_per_sec);
            row.vs_floor = floor.filter(|f| *f > 0.0).map(|f| row.msgs_per_sec / f);
        }
        let lat = self.latency.clone();
        for row in &mut self.latency {
            let floor = lat
                .iter()
                .find(|r| r.mode == row.mode && r.system == System::Floor)
                .map(|r| r.p50_ns);
            row.p50_vs_floor = floor.filter(|f| *f > 0.0).map(|f| row.p50_ns / f);
        }
    }

    /// Evaluates the targets against the medians.
    pub fn compute_targets(&mut self) {
        let ratio = |shape, payload, system| {
            self.throughput_of(shape, payload, system)
                .and_then(|r| r.vs_arrayqueue)
        };
        let mut targets = Vec::new();
        let mut at_least = |name: &str, goal: f64, measured: Option<f64>| {
            targets.push(Target {
                name: name.to_owned(),
                goal: format!(">= {goal:.1}x"),
                measured,
                met: measured.map(|m| m >= goal),
            })
        };
        at_least(
            "32 B 1->1, dmxp vs ArrayQueue",
            1.0,
            ratio(Shape::OneToOne, 32, System::DmxpSingle),
        );
        at_least(
            "32 B 1->1, dmxp-batch vs ArrayQueue",
            2.0,
            ratio(Shape::OneToOne, 32, System::DmxpBatch),
        );
        at_least(
            "960 B 1->1, dmxp vs ArrayQueue",
            1.0,
            ratio(Shape::OneToOne, 960, System::DmxpSingle),
        );
        at_least(
            "32 B 2->2 one channel, dmxp vs ArrayQueue",
            1.0,
            ratio(Shape::TwoToTwo, 32, System::DmxpSingle),
        );
        let p50 = self
            .latency
            .iter()
            .find(|r| r.mode == Mode::Spin && r.system == System::DmxpSingle)
            .and_then(|r| r.p50_vs_floor);
        targets.push(Target {
            name: "one-way latency p50 (spin), dmxp vs floor".to_owned(),
            goal: "<= 2.0x".to_owned(),
            measured: p50,
            met: p50.map(|m| m <= 2.0),
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
        });
        self.targets = targets;
    }

    /// The human table.
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
            "runs: {length} each, median of {} repetitions, rings of {} slots\n",
            self.repetitions, self.capacity
        );
        let _ = writeln!(out, "THROUGHPUT (messages/s, median)");
        let header = [
            "shape",
            "payload",
            "system",
            "Mmsg/s",
            "MiB/s",
            "x ArrayQueue",
            "x floor",
            "futex",
        ];
        let mut rows = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
        for r in &self.throughput {
            rows.push(vec![
                r.shape.name().to_owned(),
                if r.system == System::Floor {
                    "8".to_owned()
                } else {
                    r.payload.to_string()
                },
                r.system.name().to_owned(),
                format!("{:.2}", r.msgs_per_sec / 1e6),
                format!("{:.0}", r.mib_per_sec),
                r.vs_arrayqueue.map_or("-".into(), |v| format!("{v:.2}")),
                r.vs_floor.map_or("-".into(), |v| format!("{v:.2}")),
                if r.system.is_dmxp() {
                    (r.futex_wake + r.futex_wait).to_string()
                } else {
                    "-".into()
                },
            ]);
        }
        out.push_str(&align(&rows));
        let _ = writeln!(
            out,
            "\nONE-WAY LATENCY (round trip / 2, ns, median of each percentile)"
        );
        let header = [
            "mode",
            "system",
            "payload",
            "p50",
            "p99",
            "p99.9",
            "p50 x floor",
            "futex",
        ];
        let mut rows = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
        for r in &self.latency {
            rows.push(vec![
                r.mode.name().to_owned(),
                r.system.name().to_owned(),
                if r.system == System::Floor {
                    "8".to_owned()
                } else {
                    r.payload.to_string()
                },
                format!("{:.0}", r.p50_ns),
                format!("{:.0}", r.p99_ns),
                format!("{:.0}", r.p999_ns),
                r.p50_vs_floor.map_or("-".into(), |v| format!("{v:.2}")),
                if r.system.is_dmxp() {
                    (r.futex_wake + r.futex_wait).to_string()
                } else {
                    "-".into()
                },
            ]);
        }
        out.push_str(&align(&rows));
        let _ = writeln!(out, "\nTARGETS");
        out.push_str(&targets_table(&self.targets));
        out
    }
}

/// The targets as a text table: goal, measured ratio, and whether it was met.
pub(crate) fn targets_table(targets: &[Target]) -> String {
    let mut rows = vec![["target", "goal", "measured", "met"]
        .map(str::to_owned)
        .to_vec()];
    for t in targets {
        rows.push(vec![
            t.name.clone(),
            t.goal.clone(),
            t.measured.map_or("-".into(), |m| format!("{m:.2}")),
            match t.met {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "not measured".into(),
            },
        ]);
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
        ThroughputRow {
            shape,
            payload,
            system,
            msgs_per_sec: rate,
            runs: vec![rate],
            mib_per_sec: 0.0,
            vs_arrayqueue: None,
            vs_floor: None,
            futex_wake: futex,
            futex_wait: 0,
            per_send_call: None,
            per_receive_call: None,
        }
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
        }
    }

    fn lat(mode: Mode, system: System, p50: f64) -> LatencyRow {
        LatencyRow {
            mode,
            system,
            payload: 32,
            p50_ns: p50,
            p99_ns: p50,
            p999_ns: p50,
            runs: Vec::new(),
            p50_vs_floor: None,
            futex_wake: 0,
            futex_wait: 0,
        }
    }

    #[test]
    fn ratios_and_targets_follow_the_medians() {
        let mut r = report(
            vec![
                row(Shape::OneToOne, 32, System::ArrayQueue, 10e6, 0),
                row(Shape::OneToOne, 32, System::DmxpSingle, 12e6, 0),
                row(Shape::OneToOne, 32, System::DmxpBatch, 15e6, 0),
                row(Shape::OneToOne, 8, System::Floor, 5e6, 0),
                row(Shape::TwoToTwo, 32, System::ArrayQueue, 4e6, 0),
                row(Shape::TwoToTwo, 32, System::DmxpSingle, 2e6, 3),
            ],
            vec![
                lat(Mode::Spin, System::Floor, 100.0),
                lat(Mode::Spin, System::DmxpSingle, 150.0),
            ],
        );
        r.compute_ratios();
        r.compute_targets();
        let single = r
            .throughput_of(Shape::OneToOne, 32, System::DmxpSingle)
            .unwrap();
        assert_eq!(single.vs_arrayqueue, Some(1.2));
        assert_eq!(single.vs_floor, Some(12e6 / 5e6));
        assert_eq!(
            r.throughput_of(Shape::OneToOne, 8, System::Floor)
                .unwrap()
                .vs_arrayqueue,
            None
        );
        assert_eq!(
            r.latency_of(Mode::Spin, System::DmxpSingle, 32)
                .unwrap()
                .p50_vs_floor,
            Some(1.5)
        );
        let met: Vec<Option<bool>> = r.targets.iter().map(|t| t.met).collect();
        // 1->1 met, batch 1.5x < 2x, 960 B not measured, 2->2 0.5x, latency 1.5x met, futex 3.
        assert_eq!(
            met,
            vec![
                Some(true),
                Some(false),
                None,
                Some(false),
                Some(true),
                Some(false)
            ]
        );
        let table = r.render();
        assert!(table.contains("x ArrayQueue"));
        assert!(table.contains("NO"));
        assert!(table.contains("not measured"));
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
