//! Where the two pinned CPUs are, as the cache sees it.
//!
//! On a VM the two vCPUs may sit on nearby cores (a cache line changes hands in ~60 ns one
//! way) or far apart (~190 ns), and the hypervisor moves them every few seconds. Every run is
//! bracketed by two probes of the cache-line floor ([`probe`]: a short ping-pong of one
//! `AtomicU64` between two threads pinned to the run's two CPUs, p50 one-way). Each probe is
//! classed near or far against a threshold ([`threshold`]: the `--placement-threshold` flag,
//! else chosen from all probes of the report); a run whose two probes fall in different
//! classes is discarded (the placement changed while it ran), the others are kept under the
//! class of their probes, and every median and ratio is taken within one class.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::child::percentiles_of;
use crate::control::{self, Backoff};
use crate::runner::Placement;

/// Round trips of one probe (after the recorder's 200 warm-up ones).
pub const PROBE_ROUND_TRIPS: u64 = 20_000;
/// The threshold used when the probes do not split into two clusters and no flag sets one:
/// midway between the ~60 ns and ~190 ns one-way hand-overs seen on the benchmark's VM.
pub const DEFAULT_THRESHOLD_NS: f64 = 125.0;
/// Two clusters of probes count as two placements only if the upper one's median is at least
/// this many times the lower one's (a near/far pair on the benchmark's VM is ~3x apart).
pub const MIN_CLUSTER_RATIO: f64 = 1.6;
/// Two clusters must also be apart: the lowest probe of the upper one at least this many times
/// the highest of the lower one (no split inside one spread-out cluster).
pub const MIN_GAP_RATIO: f64 = 1.25;
/// The fewest probes a cluster may have: a single odd probe is not a placement.
pub const MIN_CLUSTER: usize = 2;
/// A probe gives up after this long (a loaded machine), keeping the samples it has.
const PROBE_LIMIT: Duration = Duration::from_secs(2);

/// A placement class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// The probe's one-way hand-over is below the threshold.
    Near,
    /// At or above the threshold.
    Far,
    /// Not probed (fewer than two CPUs, or a run outside the benchmark's control).
    Unprobed,
}

impl Class {
    /// The name in tables and JSON.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Class::Near => "near",
            Class::Far => "far",
            Class::Unprobed => "unprobed",
        }
    }
}

/// The placement of one run, once every probe of the report is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunClass {
    /// Both probes in this class: the run is kept under it.
    Kept(Class),
    /// The probes before and after differ in class: the run is not used.
    Discarded,
}

/// The two probes around one run (p50 one-way, ns); `None` where no probe could run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Probes {
    /// Immediately before the run.
    pub before_ns: Option<f64>,
    /// Immediately after it.
    pub after_ns: Option<f64>,
}

impl Probes {
    /// The run's class against `threshold_ns`.
    #[must_use]
    pub fn class(&self, threshold_ns: f64) -> RunClass {
        match (self.before_ns, self.after_ns) {
            (Some(b), Some(a)) => {
                let (b, a) = (classify(b, threshold_ns), classify(a, threshold_ns));
                if b == a {
                    RunClass::Kept(b)
                } else {
                    RunClass::Discarded
                }
            }
            _ => RunClass::Kept(Class::Unprobed),
        }
    }
}

/// Near below `threshold_ns`, far at or above it.
#[must_use]
pub fn classify(one_way_ns: f64, threshold_ns: f64) -> Class {
    if one_way_ns < threshold_ns {
        Class::Near
    } else {
        Class::Far
    }
}

/// Where a threshold came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdSource {
    /// `--placement-threshold`.
    Flag,
    /// Midway between the medians of the two clusters the probes split into.
    Data,
    /// The probes form one cluster (or there are none): [`DEFAULT_THRESHOLD_NS`].
    Default,
}

/// The threshold for `probes` (every probe value of a report): `flag` if given; else, when the
/// probes split into two clusters of at least [`MIN_CLUSTER`] probes whose medians are at
/// least [`MIN_CLUSTER_RATIO`] apart, with a gap of at least [`MIN_GAP_RATIO`] between them,
/// midway between those medians; else the default. Of such
/// splits of the sorted values, the one that leaves the least spread within its two sides
/// (the sum of absolute deviations of the logarithms from each side's median: a robust form
/// of Otsu's method, which a few loaded, slow probes do not pull away from the near/far gap).
#[must_use]
pub fn threshold(probes: &[f64], flag: Option<f64>) -> (f64, ThresholdSource) {
    if let Some(t) = flag {
        return (t, ThresholdSource::Flag);
    }
    let mut sorted: Vec<f64> = probes
        .iter()
        .copied()
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    sorted.sort_by(f64::total_cmp);
    if sorted.len() < 2 {
        return (DEFAULT_THRESHOLD_NS, ThresholdSource::Default);
    }
    let logs: Vec<f64> = sorted.iter().map(|v| v.ln()).collect();
    let spread = |part: &[f64]| {
        let mid = crate::report::median(part);
        part.iter().map(|x| (x - mid).abs()).sum::<f64>()
    };
    let medians = |k: usize| {
        (
            crate::report::median(&sorted[..k]),
            crate::report::median(&sorted[k..]),
        )
    };
    let cost = |k: usize| spread(&logs[..k]) + spread(&logs[k..]);
    let best = (MIN_CLUSTER..=logs.len().saturating_sub(MIN_CLUSTER))
        .filter(|&k| {
            let (low, high) = medians(k);
            high >= MIN_CLUSTER_RATIO * low && sorted[k] >= MIN_GAP_RATIO * sorted[k - 1]
        })
        .min_by(|&a, &b| cost(a).total_cmp(&cost(b)));
    match best {
        Some(k) => {
            let (low, high) = medians(k);
            ((low + high) / 2.0, ThresholdSource::Data)
        }
        None => (DEFAULT_THRESHOLD_NS, ThresholdSource::Default),
    }
}

/// The cache-line floor between the two CPUs of `placement` now: the p50 one-way time (round
/// trip / 2, one clock read per round trip) of `round_trips` hand-overs of one `AtomicU64`
/// (after 200 warm-up ones) between two threads of this process pinned to those CPUs,
/// spinning then yielding as the floor does. A probe stops after 2 s (a loaded machine) with
/// the round trips it made. `None` when there is nothing to probe (no two CPUs) or
/// `round_trips` is 0.
#[must_use]
pub fn probe(placement: &Placement, round_trips: u64) -> Option<f64> {
    let (Some(a), Some(b)) = (placement.producer_cpu, placement.consumer_cpu) else {
        return None;
    };
    if round_trips == 0 {
        return None;
    }
    #[repr(align(128))]
    struct Line(AtomicU64);
    let word = Line(AtomicU64::new(0));
    let ready = AtomicU64::new(0);
    let quit = AtomicBool::new(false);
    let total = crate::child::WARMUP + round_trips;
    let mut times = std::thread::scope(|scope| {
        let answer = scope.spawn(|| {
            control::pin(Some(b));
            ready.fetch_add(1, Ordering::SeqCst);
            let mut backoff = Backoff::default();
            let mut round = 0u64;
            loop {
                let value = word.0.load(Ordering::Acquire);
                if value == 2 * round + 1 {
                    word.0.store(2 * round + 2, Ordering::Release);
                    round += 1;
                    backoff.reset();
                } else if quit.load(Ordering::Relaxed) {
                    break;
                } else {
                    backoff.snooze();
                }
            }
        });
        let ask = scope.spawn(|| {
            control::pin(Some(a));
            ready.fetch_add(1, Ordering::SeqCst);
            let mut backoff = Backoff::default();
            while ready.load(Ordering::SeqCst) < 2 {
                backoff.snooze();
            }
            let deadline = Instant::now() + PROBE_LIMIT;
            let mut times: Vec<u64> = Vec::with_capacity(total as usize);
            let mut last = Instant::now();
            'rounds: for round in 0..total {
                word.0.store(2 * round + 1, Ordering::Release);
                backoff.reset();
                let mut polls = 0u32;
                while word.0.load(Ordering::Acquire) != 2 * round + 2 {
                    backoff.snooze();
                    polls = polls.wrapping_add(1);
                    // The clock only now and then, so that it does not slow the spin.
                    if polls.is_multiple_of(1024) && Instant::now() > deadline {
                        break 'rounds;
                    }
                }
                let now = Instant::now();
                times.push((now - last).as_nanos() as u64);
                last = now;
            }
            quit.store(true, Ordering::Relaxed);
            times
        });
        let times = ask.join();
        quit.store(true, Ordering::Relaxed);
        let _ = answer.join();
        times.ok()
    })?;
    // The warm-up round trips are dropped, unless a slow probe (the deadline) has no others.
    let warmup = crate::child::WARMUP as usize;
    let kept = if times.len() > warmup {
        &mut times[warmup..]
    } else {
        &mut times[..]
    };
    (!kept.is_empty()).then(|| percentiles_of(kept).p50)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_clusters_split_midway_and_one_cluster_falls_back() {
        let probes = [61.0, 63.0, 60.0, 190.0, 195.0, 188.0, 62.0];
        let (t, source) = threshold(&probes, None);
        assert_eq!(source, ThresholdSource::Data);
        assert!((t - (61.5 + 190.0) / 2.0).abs() < 1e-9, "{t}");
        // A single far outlier does not move the split between near and far.
        let probes = [60.0, 61.0, 62.0, 190.0, 191.0, 192.0, 1000.0, 1000.0];
        let (t, _) = threshold(&probes, None);
        assert!(62.0 < t && t < 190.0, "{t}");
        // One odd probe is not a cluster; a spread-out far cluster is one.
        let mut probes = vec![85.0];
        probes.extend((0..40).map(|k| 205.0 + k as f64));
        assert_eq!(threshold(&probes, None).1, ThresholdSource::Default);
        // A lone near probe and the lowest far one are not a cluster either.
        probes.push(190.0);
        assert_eq!(threshold(&probes, None).1, ThresholdSource::Default);
        probes.push(80.0);
        let (t, source) = threshold(&probes, None);
        assert_eq!(source, ThresholdSource::Data);
        assert!(85.0 < t && t < 205.0, "{t}");
        let (t, source) = threshold(&[60.0, 64.0, 70.0, 66.0], None);
        assert_eq!(
            (t, source),
            (DEFAULT_THRESHOLD_NS, ThresholdSource::Default)
        );
        assert_eq!(threshold(&[], None).1, ThresholdSource::Default);
        assert_eq!(
            threshold(&probes, Some(99.0)),
            (99.0, ThresholdSource::Flag)
        );
    }

    #[test]
    fn runs_are_kept_or_discarded_by_their_two_probes() {
        let p = |b, a| Probes {
            before_ns: Some(b),
            after_ns: Some(a),
        };
        assert_eq!(p(60.0, 70.0).class(125.0), RunClass::Kept(Class::Near));
        assert_eq!(p(190.0, 125.0).class(125.0), RunClass::Kept(Class::Far));
        assert_eq!(p(60.0, 190.0).class(125.0), RunClass::Discarded);
        assert_eq!(
            Probes::default().class(125.0),
            RunClass::Kept(Class::Unprobed)
        );
    }

    #[test]
    fn a_probe_measures_something_when_two_cpus_exist() {
        let placement = Placement::detect();
        match probe(&placement, 2_000) {
            Some(ns) => assert!(ns > 0.0 && ns.is_finite()),
            None => assert!(placement.producer_cpu.is_none(), "{placement:?}"),
        }
        assert_eq!(probe(&placement, 0), None);
    }
}
