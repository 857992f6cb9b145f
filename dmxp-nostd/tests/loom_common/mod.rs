//! What the loom models share (tests/loom.rs, tests/loom_async.rs): the probe that marks
//! interleaving points, the memory of a modelled segment, and the runner.
#![allow(dead_code)] // each model file uses part of it

use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};
use std::time::Instant;

use dmxp_nostd::atomic::{AtomicU32, Ordering};
use dmxp_nostd::layout::{AtomicChannelEntry, AtomicHeaderFields, AtomicSlot};
use dmxp_nostd::Segment;

loom::lazy_static! {
    /// The probe word behind [`interleave`] (one per execution).
    static ref PROBE: AtomicU32 = AtomicU32::new(0);
}

/// Marks the start of a test-level operation as a point where loom must try every thread.
pub fn interleave() {
    PROBE.fetch_add(1, Ordering::Relaxed);
}

/// The memory of one modelled segment.
pub struct Memory {
    pub fields: AtomicHeaderFields,
    pub entries: Vec<AtomicChannelEntry>,
    pub slots: Vec<AtomicSlot>,
}

impl Memory {
    pub fn new(entries: usize, slots: usize) -> Self {
        Self {
            fields: AtomicHeaderFields::new_zeroed(),
            entries: (0..entries)
                .map(|_| AtomicChannelEntry::new_zeroed())
                .collect(),
            slots: (0..slots).map(|_| AtomicSlot::new_zeroed()).collect(),
        }
    }

    /// Formats the memory as an empty segment.
    pub fn segment(&'static self) -> Segment<'static> {
        Segment::model(&self.fields, &self.entries, &self.slots)
    }
}

/// The preemption bound of a model whose exploration at its full bound takes minutes:
/// `quick` in CI (`scripts/loom.sh`), `full` when DMXP_LOOM_DEEP=1 (`scripts/soak-loom.sh`).
///
/// The quick bound still tries every order in which the threads reach their operations and
/// every weak-memory outcome loom knows; the full one also preempts inside more of them
/// (measured: one_producer_two_consumers 169,094 executions in 28 s at 2, 1,894,591 in 471 s
/// at 3).
pub fn deep_bound(quick: usize, full: usize) -> usize {
    match std::env::var("DMXP_LOOM_DEEP").as_deref() {
        Ok("1") => full,
        _ => quick,
    }
}

/// Runs `model` under loom with at most `preemptions` preemptions per execution (unless
/// LOOM_MAX_PREEMPTIONS is set, which overrides it) and prints how many executions loom explored.
pub fn check(name: &str, preemptions: usize, model: fn()) {
    let executions = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = executions.clone();
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    // Formatting a channel stores every word of every slot: far more branch points than the
    // default of 1,000 allows, though they are all in one thread.
    builder.max_branches = 20_000;
    let bound = builder.preemption_bound;
    let start = Instant::now();
    builder.check(move || {
        counter.fetch_add(1, StdOrdering::Relaxed);
        // Creates the probe before any thread is spawned.
        interleave();
        model();
    });
    println!(
        "loom model {name}: {} executions, preemption bound {bound:?}, {:.2?}",
        executions.load(StdOrdering::Relaxed),
        start.elapsed()
    );
}
