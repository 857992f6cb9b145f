//! `dmxp._dmxp`: the Python extension over the Rust `dmxp` facade and `dmxp-nostd` core.
//!
//! The Python package `dmxp` (in `python/dmxp`) re-exports what is here and adds the pure
//! Python parts (exceptions, the test pattern, `python -m dmxp inspect`, whose report and
//! text `inspect.rs` gets from the `dmxp-inspect` crate).

use dmxp::core::layout::{self, MSG_INLINE};
use dmxp::core::parse_segment as core_parse_segment;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

mod blob;
mod buffers;
mod consumer;
mod errors;
mod event;
mod inspect;
mod open;
mod peer;
mod producer;

/// The dict returned by `Producer.info()` and `Consumer.info()`.
pub(crate) fn channel_info<'py>(
    py: Python<'py>,
    channel: &open::FutexChannel<'_>,
) -> PyResult<Bound<'py, PyDict>> {
    let info = channel.info();
    let (receivers, senders) = channel.waiters();
    let dict = PyDict::new(py);
    dict.set_item("id", info.id)?;
    dict.set_item("capacity", info.capacity)?;
    dict.set_item("max_message_size", channel.max_message_size())?;
    dict.set_item("band_offset", info.band_offset)?;
    dict.set_item("head", info.head)?;
    dict.set_item("tail", info.tail)?;
    dict.set_item("depth", info.depth)?;
    dict.set_item("receivers_waiting", receivers)?;
    dict.set_item("senders_waiting", senders)?;
    Ok(dict)
}

/// The dict returned by `Producer.recover()` and `Consumer.recover()`.
pub(crate) fn repair_report<'py>(
    py: Python<'py>,
    report: &dmxp::RepairReport,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("tombstoned", report.tombstoned)?;
    dict.set_item("freed", report.freed)?;
    dict.set_item("records_freed", report.records_freed)?;
    dict.set_item("records_deferred", report.records_deferred)?;
    dict.set_item("waits_given_back", report.waits_given_back)?;
    Ok(dict)
}

/// The records of a segment's peer table (PROTOCOL.md §11): one dict per taken record, in
/// table order, with its index, pid, runtime, role ("producer", "consumer", or the number
/// found), start_time, channel_id, intent_count, intent_position, intent_flags (1 while the
/// intent is one run of a message longer than one slot, PROTOCOL.md §12.5), pid_ns, what it is blocked
/// waiting for (`waiting`: "message", "free_slot" or None; PROTOCOL.md §11.9), and whether its
/// process is alive now (`alive`, judged as crash recovery does). Empty when no handle has registered
/// yet. Raises NotFoundError when there is no such segment, CorruptError when its
/// peer_table_offset is invalid, UntrustedError when the segment is not one to attach to
/// (`trust_owner` and `mode` as for `Consumer`).
#[pyfunction]
#[pyo3(signature = (segment = "/dmxp_alloc".to_owned(), *, trust_owner = None, mode = dmxp::DEFAULT_MODE as i64))]
fn peers<'py>(
    py: Python<'py>,
    segment: String,
    trust_owner: Option<&Bound<'py, PyAny>>,
    mode: i64,
) -> PyResult<Bound<'py, PyList>> {
    let trust = open::Trust::from_args(py, trust_owner, mode)?;
    let found = py
        .detach(|| {
            trust
                .apply(dmxp::ChannelBuilder::new())
                .with_segment_name(segment)
                .attach_allocator()
                .and_then(|allocator| allocator.peers())
        })
        .map_err(|e| errors::from_facade(py, &e))?;
    let list = PyList::empty(py);
    for peer in found {
        let r = &peer.record;
        let dict = PyDict::new(py);
        dict.set_item("index", peer.index)?;
        dict.set_item("pid", r.pid)?;
        dict.set_item("runtime", r.runtime)?;
        match peer.role() {
            Some(dmxp::PeerRole::Producer) => dict.set_item("role", "producer")?,
            Some(dmxp::PeerRole::Consumer) => dict.set_item("role", "consumer")?,
            None => dict.set_item("role", r.role)?,
        }
        dict.set_item("start_time", r.start_time)?;
        dict.set_item("channel_id", r.channel_id)?;
        dict.set_item("intent_count", r.intent_count)?;
        dict.set_item("intent_position", r.intent_position)?;
        dict.set_item("intent_flags", r.intent_flags)?;
        dict.set_item("pid_ns", r.pid_ns)?;
        let waiting = match r.waiting {
            dmxp::core::layout::peer_waiting::NOT_EMPTY => Some("message"),
            dmxp::core::layout::peer_waiting::NOT_FULL => Some("free_slot"),
            _ => None,
        };
        dict.set_item("waiting", waiting)?;
        dict.set_item("alive", dmxp::peer_alive(r))?;
        list.append(dict)?;
    }
    Ok(list)
}

/// Validates a copy of a segment's bytes with the Rust core's `parse_segment` and describes
/// it: a dict with `header` (every header field), `segment_len` (the length bands were
/// checked against) and `channels` (id, capacity, band_offset, head, tail, depth of every
/// created channel, in id order). Raises CorruptError (naming the field and the channel),
/// BadMagicError, UnsupportedVersionError, or NotReadyError (magic still 0).
#[pyfunction]
#[pyo3(signature = (data, label = "segment"))]
fn parse_segment<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    label: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let parsed = buffers::with_bytes(data, core_parse_segment)?
        .map_err(|e| errors::from_core(py, e, label))?;
    let header = PyDict::new(py);
    let h = &parsed.header;
    header.set_item("magic", h.magic)?;
    header.set_item("version", h.version)?;
    header.set_item("max_channels", h.max_channels)?;
    header.set_item("channel_count", h.channel_count)?;
    header.set_item("reserved", h.reserved)?;
    header.set_item("segment_size", h.segment_size)?;
    header.set_item("band_cursor", h.band_cursor)?;
    header.set_item("creator_pid", h.creator_pid)?;
    header.set_item("header_flags", h.header_flags)?;
    header.set_item("peer_table_offset", h.peer_table_offset)?;
    header.set_item("peer_records", h.peer_records)?;
    let channels = PyList::empty(py);
    for c in &parsed.channels {
        let entry = PyDict::new(py);
        entry.set_item("id", c.id)?;
        entry.set_item("capacity", c.capacity)?;
        entry.set_item("band_offset", c.band_offset)?;
        entry.set_item("head", c.head)?;
        entry.set_item("tail", c.tail)?;
        entry.set_item("depth", c.depth)?;
        channels.append(entry)?;
    }
    let out = PyDict::new(py);
    out.set_item("header", header)?;
    out.set_item("segment_len", parsed.segment_len)?;
    out.set_item("channels", channels)?;
    Ok(out)
}

/// Removes a POSIX shm segment's name (processes that have it mapped keep using it).
/// Raises NotFoundError if there is no such segment.
#[pyfunction]
fn unlink_segment(py: Python<'_>, name: &str) -> PyResult<()> {
    dmxp::unlink_segment(name).map_err(|e| errors::from_facade(py, &e))
}

/// Futex wake system calls this process has made (a send or receive makes none while nobody
/// waits).
#[pyfunction]
fn futex_wake_calls() -> u64 {
    dmxp::futex_wake_calls()
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of `Message.timestamp_ns`.
#[pyfunction]
fn monotonic_ns() -> u64 {
    dmxp::monotonic_ns()
}

/// The Rust implementation of the test pattern (`dmxp::pattern::encode`), for cross-checks
/// of the Python one in `dmxp.pattern`.
#[pyfunction]
fn rust_pattern_encode(
    py: Python<'_>,
    channel: u32,
    index: u64,
    length: usize,
) -> Bound<'_, PyBytes> {
    PyBytes::new(py, &dmxp::pattern::encode(channel, index, length))
}

/// FNV-1a 64 of `data`, the checksum of the test pattern: `dmxp.pattern` uses it for speed
/// (a run of 256 KiB takes tens of milliseconds byte by byte in Python), and checks it against
/// its own Python loop in the tests.
#[pyfunction]
fn pattern_fnv1a(data: &Bound<'_, PyAny>) -> PyResult<u64> {
    buffers::with_bytes(data, |bytes| {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &b| {
            (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    })
}

/// The Rust `dmxp::pattern::large_len`: the length of message `index` of the examples'
/// `--large` run on a channel whose limit is `limit`.
#[pyfunction]
fn rust_pattern_large_len(index: u64, limit: usize) -> usize {
    dmxp::pattern::large_len(index, limit)
}

/// The Rust `dmxp::pattern::blob_len`: the length of message `index` of the examples'
/// `--blob` run.
#[pyfunction]
fn rust_pattern_blob_len(index: u64) -> usize {
    dmxp::pattern::blob_len(index)
}

/// The Rust `dmxp::pattern::decode`: `(channel, index)`; ValueError naming the problem.
#[pyfunction]
fn rust_pattern_decode(data: &Bound<'_, PyAny>) -> PyResult<(u64, u64)> {
    buffers::with_bytes(data, dmxp::pattern::decode)?
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
}

#[pymodule]
fn _dmxp(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<producer::Producer>()?;
    m.add_class::<consumer::Consumer>()?;
    m.add_class::<consumer::Message>()?;
    m.add_class::<blob::BlobLoan>()?;
    m.add_class::<blob::BlobMessage>()?;
    m.add_class::<blob::Mapping>()?;
    m.add_function(wrap_pyfunction!(parse_segment, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::inspect_path, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::inspect_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::inspect_text, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::inspect_verdict, m)?)?;
    m.add_function(wrap_pyfunction!(inspect::render_table, m)?)?;
    m.add_function(wrap_pyfunction!(unlink_segment, m)?)?;
    m.add_function(wrap_pyfunction!(peers, m)?)?;
    m.add_function(wrap_pyfunction!(futex_wake_calls, m)?)?;
    m.add_function(wrap_pyfunction!(event::io_uring_futex_waits, m)?)?;
    m.add_function(wrap_pyfunction!(event::io_uring_futex_wakeups, m)?)?;
    m.add_function(wrap_pyfunction!(monotonic_ns, m)?)?;
    m.add_function(wrap_pyfunction!(rust_pattern_encode, m)?)?;
    m.add_function(wrap_pyfunction!(rust_pattern_decode, m)?)?;
    m.add_function(wrap_pyfunction!(rust_pattern_large_len, m)?)?;
    m.add_function(wrap_pyfunction!(rust_pattern_blob_len, m)?)?;
    m.add_function(wrap_pyfunction!(pattern_fnv1a, m)?)?;
    m.add("MSG_INLINE", MSG_INLINE)?;
    m.add("MAX_CHANNELS", layout::MAX_CHANNELS)?;
    m.add("HEADER_SIZE", layout::HEADER_SIZE)?;
    m.add("SLOT_SIZE", layout::SLOT_SIZE)?;
    m.add("MAGIC", layout::MAGIC)?;
    m.add("VERSION", layout::VERSION)?;
    m.add("DEFAULT_SEGMENT", dmxp::DEFAULT_SEGMENT_NAME)?;
    m.add("DEFAULT_SEGMENT_SIZE", dmxp::DEFAULT_SEGMENT_SIZE)?;
    m.add("DEFAULT_CAPACITY", dmxp::DEFAULT_CAPACITY)?;
    m.add("RUNTIME_PYTHON", layout::runtime::PYTHON)?;
    m.add("PEER_RECORDS", layout::PEER_RECORDS)?;
    m.add("MAX_PEER_RECORDS", layout::MAX_PEER_RECORDS)?;
    m.add("REGISTRATIONS_PER_HANDLE", peer::REGISTRATIONS_PER_HANDLE)?;
    m.add("STUCK_GRACE", dmxp::STUCK_GRACE.as_secs_f64())?;
    m.add("INSPECT_CHANNEL_COLUMNS", dmxp_inspect::CHANNEL_COLUMNS)?;
    m.add("INSPECT_PEER_COLUMNS", dmxp_inspect::PEER_COLUMNS)?;
    m.add("INSPECT_PROBLEM_COLUMNS", dmxp_inspect::PROBLEM_COLUMNS)?;
    Ok(())
}
