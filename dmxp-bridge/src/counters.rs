//! The bridge's counters: one set per route, updated with relaxed atomics by the route's
//! thread and read by the thread that prints them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// What one export route has done.
#[derive(Debug, Default)]
pub struct ExportCounters {
    /// Messages published to Zenoh.
    pub published: AtomicU64,
    /// Zenoh samples they went in (one or more envelopes each).
    pub samples: AtomicU64,
    /// Payload bytes published.
    pub bytes: AtomicU64,
    /// Messages not published because this process sent them (an import of the same bridge):
    /// the loop filter.
    pub skipped_own: AtomicU64,
    /// Puts Zenoh refused (the message is lost).
    pub publish_errors: AtomicU64,
    /// Receive errors from the local channel (a corrupt slot is skipped and counted there).
    pub receive_errors: AtomicU64,
}

/// What one import route has done.
#[derive(Debug, Default)]
pub struct ImportCounters {
    /// Samples received from Zenoh.
    pub samples: AtomicU64,
    /// Envelopes read from them: messages received.
    pub received: AtomicU64,
    /// Messages sent into the local channel.
    pub delivered: AtomicU64,
    /// Payload bytes delivered.
    pub bytes: AtomicU64,
    /// Samples that are not DMXP envelopes (wrong encoding, truncated or corrupt header), or
    /// whose bytes stop being envelopes part of the way (the envelopes before are delivered).
    pub malformed: AtomicU64,
    /// Envelopes exported by this host: dropped by the loop filter.
    pub looped: AtomicU64,
    /// Messages dropped because the ring stayed full for the whole bounded wait.
    pub dropped_full: AtomicU64,
    /// Messages the local channel refused (too large for it, for example).
    pub rejected: AtomicU64,
    /// Messages missing between consecutive envelopes of one export stream.
    pub gaps: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// A point-in-time copy of one route's counters, as printed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "direction", rename_all = "snake_case")]
pub enum RouteSnapshot {
    /// An export route.
    Export {
        /// The local channel, `SEGMENT:CHANNEL`.
        channel: String,
        /// The key expression.
        key: String,
        /// See [`ExportCounters::published`].
        published: u64,
        /// See [`ExportCounters::samples`].
        samples: u64,
        /// See [`ExportCounters::bytes`].
        bytes: u64,
        /// See [`ExportCounters::skipped_own`].
        skipped_own: u64,
        /// See [`ExportCounters::publish_errors`].
        publish_errors: u64,
        /// See [`ExportCounters::receive_errors`].
        receive_errors: u64,
    },
    /// An import route.
    Import {
        /// The key expression.
        key: String,
        /// The local channel, `SEGMENT:CHANNEL`.
        channel: String,
        /// See [`ImportCounters::samples`].
        samples: u64,
        /// See [`ImportCounters::received`].
        received: u64,
        /// See [`ImportCounters::delivered`].
        delivered: u64,
        /// See [`ImportCounters::bytes`].
        bytes: u64,
        /// See [`ImportCounters::malformed`].
        malformed: u64,
        /// See [`ImportCounters::looped`].
        looped: u64,
        /// See [`ImportCounters::dropped_full`].
        dropped_full: u64,
        /// See [`ImportCounters::rejected`].
        rejected: u64,
        /// See [`ImportCounters::gaps`].
        gaps: u64,
    },
}

impl ExportCounters {
    /// A snapshot labelled with the route.
    pub fn snapshot(&self, channel: &str, key: &str) -> RouteSnapshot {
        RouteSnapshot::Export {
            channel: channel.to_owned(),
            key: key.to_owned(),
            published: get(&self.published),
            samples: get(&self.samples),
            bytes: get(&self.bytes),
            skipped_own: get(&self.skipped_own),
            publish_errors: get(&self.publish_errors),
            receive_errors: get(&self.receive_errors),
        }
    }
}

impl ImportCounters {
    /// A snapshot labelled with the route.
    pub fn snapshot(&self, key: &str, channel: &str) -> RouteSnapshot {
        RouteSnapshot::Import {
            key: key.to_owned(),
            channel: channel.to_owned(),
            samples: get(&self.samples),
            received: get(&self.received),
            delivered: get(&self.delivered),
            bytes: get(&self.bytes),
            malformed: get(&self.malformed),
            looped: get(&self.looped),
            dropped_full: get(&self.dropped_full),
            rejected: get(&self.rejected),
            gaps: get(&self.gaps),
        }
    }
}

/// One line of the bridge's output: `{"event": "stats" | "final", ...}`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `ready` once every route is up, `stats` periodically, `final` at exit.
    pub event: &'static str,
    /// This host's name.
    pub host: String,
    /// Zenoh peers connected now.
    pub peers: usize,
    /// Times the set of connected peers went from empty to non-empty after the first.
    pub reconnects: u64,
    /// One entry per route, exports first.
    pub routes: Vec<RouteSnapshot>,
}
