//! `python -m dmxp inspect`'s report: the header, every channel entry in use, the peer table,
//! the stuck positions and every validation problem, as the Rust `dmxp inspect --json` prints
//! them (docs/CLI.md), key for key and in the same order.
//!
//! This is a port of the CLI's `dmxp-cli/src/report.rs` (`analyze`, `add_peers`,
//! `add_stuck`): the checks are the core's own (`dmxp_nostd::validate`), and every problem is
//! listed, not just the first — after each problem the field at fault is replaced, in the
//! local copy only, by a value that passes, and the check runs again; each entry is checked
//! on its own; bands are compared pair by pair. `tests/test_inspect_agreement.py` runs both
//! tools on the same segments and fails when they drift apart.
//!
//! The object is read with ordinary reads (never mapped, never written): its size, a copy of
//! its first `HEADER_SIZE` bytes, then the peer table and the sequence words of the slots at
//! `head` and a lap behind `tail`. Each field is as it was at some instant during the reads.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use dmxp::core::error::{Corruption, Error as CoreError};
use dmxp::core::layout::{
    band_len, channel_entry_offset, channel_state, peer_records_of, peer_waiting, runtime,
    ChannelEntry, HeaderFields, PeerRecord, CHANNEL_ENTRY_SIZE, HEADER_SIZE, MAGIC, MAX_CHANNELS,
    MIN_CAPACITY, PEER_RECORDS, PEER_RECORD_SIZE, SLOT_SIZE, VERSION,
};
use dmxp::core::validate::{
    check_overlaps, check_peer_table_bands, validate_entry, validate_header, ChannelGeometry,
};
use dmxp::PeerRole;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use zerocopy::FromBytes;

/// What the report is read from: a file (an shm object is one under /dev/shm) or bytes.
trait Object {
    fn size(&self) -> io::Result<u64>;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The first `HEADER_SIZE` bytes (fewer if the object is shorter).
    fn header_bytes(&self) -> io::Result<Vec<u8>>;
}

impl Object for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
    fn header_bytes(&self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(HEADER_SIZE);
        let reader: &File = self;
        reader.take(HEADER_SIZE as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

impl Object for &[u8] {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn header_bytes(&self) -> io::Result<Vec<u8>> {
        Ok(self[..self.len().min(HEADER_SIZE)].to_vec())
    }
}

struct Report {
    kind: String,
    name: String,
    size: u64,
    header: Option<HeaderJson>,
    segment_len: u64,
    channels: Vec<ChannelJson>,
    is_dmxp_segment: bool,
    problems: Vec<Problem>,
    peer_table: &'static str,
    peer_table_error: Option<String>,
    peers: Vec<PeerJson>,
    stuck: Vec<StuckJson>,
}

struct HeaderJson {
    magic: u64,
    version: u32,
    max_channels: u32,
    channel_count: u32,
    segment_size: u64,
    band_cursor: u64,
    creator_pid: u32,
    header_flags: u32,
    peer_table_offset: u64,
    peer_records: u32,
}

impl HeaderJson {
    fn peer_table_len(&self) -> usize {
        peer_records_of(self.peer_records).unwrap_or(PEER_RECORDS) * PEER_RECORD_SIZE
    }
}

#[derive(Clone, Copy, Default)]
struct PeerCounts {
    producers: usize,
    consumers: usize,
    dead: usize,
}

struct ChannelJson {
    id: u32,
    status: &'static str,
    state: String,
    capacity: u64,
    band_offset: u64,
    band_len: Option<u64>,
    head: u64,
    tail: u64,
    depth: Option<u64>,
    not_empty_waiters: u32,
    not_full_waiters: u32,
    /// (position, since ns) noted for receives and for sends.
    stuck_notes: [(u64, u64); 2],
    creator_pid: u32,
    channel_id_field: u32,
    flags: u32,
    peers: Option<PeerCounts>,
}

struct Problem {
    field: &'static str,
    channel: Option<u32>,
    message: String,
}

impl From<Corruption> for Problem {
    fn from(c: Corruption) -> Self {
        Problem {
            field: c.field(),
            channel: c.channel(),
            message: c.to_string(),
        }
    }
}

struct PeerJson {
    index: usize,
    pid: u32,
    runtime: u16,
    runtime_name: String,
    role: String,
    channel: u32,
    start_time: u64,
    alive: bool,
    intent: Option<(u64, u32)>,
    waiting: Option<String>,
}

struct StuckJson {
    channel: u32,
    side: &'static str,
    position: u64,
    /// (pid, index, alive)
    holders: Vec<(u32, usize, bool)>,
    for_ms: Option<u64>,
}

fn state_name(state: u32) -> String {
    match state {
        channel_state::EMPTY => "empty".into(),
        channel_state::CREATING => "creating".into(),
        channel_state::READY => "ready".into(),
        other => format!("unknown({other})"),
    }
}

/// As `dmxp recv`'s `sender_runtime_name`.
fn runtime_name(code: u16) -> String {
    match code {
        runtime::UNKNOWN => "unknown".into(),
        runtime::RUST => "rust".into(),
        runtime::C => "c".into(),
        runtime::PYTHON => "python".into(),
        runtime::GO => "go".into(),
        other => format!("unknown({other})"),
    }
}

/// Replaces the header field `c` names by a value that passes; `false` if there is none.
fn patch_header(header: &mut HeaderFields, c: Corruption) -> bool {
    use Corruption::*;
    match c {
        BadMagic { .. } => header.magic = MAGIC,
        UnsupportedVersion { .. } => header.version = VERSION,
        WrongMaxChannels { .. } => header.max_channels = MAX_CHANNELS as u32,
        ChannelCountTooLarge { .. } => header.channel_count = 0,
        SegmentSizeMismatch { .. } => header.segment_size = 0,
        BandCursorOutOfRange { .. } => header.band_cursor = 0,
        PeerRecordsOutOfRange { .. } => {
            header.peer_records = 0;
            header.peer_table_offset = 0;
        }
        PeerTableOutOfRange { .. } | PeerTableOverlapsBand { .. } => header.peer_table_offset = 0,
        _ => return false,
    }
    true
}

/// Replaces the entry field `c` names by a value that lets the remaining checks run; `false`
/// when the checks after it depend on the bad value (the band checks).
fn patch_entry(entry: &mut ChannelEntry, id: u32, c: Corruption) -> bool {
    match c {
        Corruption::UnknownChannelState { .. } => {
            entry.state = if entry.capacity == 0 {
                channel_state::EMPTY
            } else {
                channel_state::READY
            };
        }
        Corruption::ChannelIdMismatch { .. } => entry.channel_id = id,
        Corruption::CapacityNotPowerOfTwo { .. }
        | Corruption::CapacityTooSmall { .. }
        | Corruption::CapacityTooLarge { .. } => entry.capacity = MIN_CAPACITY,
        _ => return false,
    }
    true
}

fn impossible_cursors(head: u64, tail: u64, capacity: u64) -> Option<String> {
    let distance = tail.wrapping_sub(head);
    if (distance as i64) < 0 {
        Some(format!(
            "impossible cursors: head {head} is past tail {tail} (by {})",
            head.wrapping_sub(tail)
        ))
    } else if distance > capacity {
        Some(format!(
            "impossible cursors: tail {tail} is {distance} positions past head {head}, more \
             than the capacity {capacity}"
        ))
    } else {
        None
    }
}

fn depth(head: u64, tail: u64, capacity: u64) -> u64 {
    let diff = tail.wrapping_sub(head) as i64;
    if diff <= 0 {
        0
    } else {
        (diff as u64).min(capacity)
    }
}

/// Analyses `bytes`, a copy of the first bytes (up to `HEADER_SIZE`) of an object of `size`
/// bytes (`report.rs`'s `analyze`).
fn analyze(kind: String, name: String, size: u64, bytes: &[u8]) -> Report {
    let mut problems = Vec::new();
    let mut channels = Vec::new();
    let report = |header: Option<HeaderJson>,
                  segment_len,
                  channels: Vec<ChannelJson>,
                  problems: Vec<Problem>,
                  is_dmxp_segment: bool| {
        let peer_table = match &header {
            _ if !is_dmxp_segment => "skipped",
            Some(HeaderJson {
                peer_table_offset: 0,
                ..
            }) => "none",
            _ if problems
                .iter()
                .any(|p| matches!(p.field, "peer_table_offset" | "peer_records")) =>
            {
                "invalid"
            }
            Some(_) if !problems.iter().any(|p| p.channel.is_none()) => "unread",
            _ => "skipped",
        };
        let mut channels = channels;
        let counts = (peer_table == "none").then(PeerCounts::default);
        for c in &mut channels {
            c.peers = counts;
        }
        Report {
            kind: kind.clone(),
            name: name.clone(),
            size,
            header,
            segment_len,
            channels,
            is_dmxp_segment,
            problems,
            peer_table,
            peer_table_error: None,
            peers: Vec::new(),
            stuck: Vec::new(),
        }
    };

    let Ok((header, _)) = HeaderFields::read_from_prefix(bytes) else {
        problems.push(Problem {
            field: "size",
            channel: None,
            message: format!("object of {size} bytes is too short for the 128-byte header fields"),
        });
        return report(None, size, channels, problems, false);
    };
    let header_json = HeaderJson {
        magic: header.magic,
        version: header.version,
        max_channels: header.max_channels,
        channel_count: header.channel_count,
        segment_size: header.segment_size,
        band_cursor: header.band_cursor,
        creator_pid: header.creator_pid,
        header_flags: header.header_flags,
        peer_table_offset: header.peer_table_offset,
        peer_records: header.peer_records,
    };

    // Not a DMXP segment at all: its other bytes mean nothing.
    if header.magic != MAGIC && header.magic != 0 {
        problems.push(
            Corruption::BadMagic {
                found: header.magic,
            }
            .into(),
        );
        return report(Some(header_json), size, channels, problems, false);
    }

    // Header: every field the core's check rejects, one after the other.
    let mut patched = header;
    let mut segment_len = size;
    let mut header_checked = false;
    for _ in 0..10 {
        match validate_header(&patched, size) {
            Ok(len) => {
                segment_len = len;
                header_checked = true;
                break;
            }
            Err(CoreError::NotReady) => {
                problems.push(Problem {
                    field: "magic",
                    channel: None,
                    message: "magic is 0: the segment is still being created, or its creator \
                              died formatting it"
                        .into(),
                });
                return report(Some(header_json), size, channels, problems, true);
            }
            Err(CoreError::Corrupt(c)) => {
                problems.push(c.into());
                if !patch_header(&mut patched, c) {
                    break;
                }
            }
            Err(CoreError::RegionTooSmall { len, needed }) => {
                problems.push(Problem {
                    field: "size",
                    channel: None,
                    message: format!(
                        "object of {len} bytes is smaller than the {needed}-byte header"
                    ),
                });
                break;
            }
            Err(other) => {
                problems.push(Problem {
                    field: "header",
                    channel: None,
                    message: other.to_string(),
                });
                break;
            }
        }
    }

    // Entries: each on its own; every problem of each.
    let mut valid_bands: Vec<ChannelGeometry> = Vec::new();
    for id in 0..MAX_CHANNELS {
        let offset = channel_entry_offset(id);
        let Some(raw) = bytes.get(offset..offset + CHANNEL_ENTRY_SIZE) else {
            break; // a short object, reported above
        };
        let Ok(entry) = ChannelEntry::read_from_bytes(raw) else {
            break;
        };
        let id = id as u32;
        let mut patched = entry;
        let mut entry_problems = Vec::new();
        let mut geometry = None;
        for _ in 0..8 {
            match validate_entry(id, &patched, segment_len) {
                Ok(found) => {
                    geometry = found;
                    break;
                }
                Err(c) => {
                    entry_problems.push(Problem::from(c));
                    if !patch_entry(&mut patched, id, c) {
                        break;
                    }
                }
            }
        }
        let in_use = entry.capacity != 0 || entry.state != channel_state::EMPTY;
        if !in_use && entry_problems.is_empty() {
            continue;
        }
        if entry_problems.is_empty() && geometry.is_some() {
            if let Some(message) = impossible_cursors(entry.head, entry.tail, entry.capacity) {
                entry_problems.push(Problem {
                    field: "tail",
                    channel: Some(id),
                    message: format!("channel {id}: {message} (dmxp reset --channel {id})"),
                });
            }
        }
        let status = if !entry_problems.is_empty() {
            "corrupt"
        } else if geometry.is_none() {
            "creating"
        } else {
            "ok"
        };
        if let (Some(g), true) = (geometry, entry_problems.is_empty()) {
            valid_bands.push(g);
        }
        channels.push(ChannelJson {
            id,
            status,
            state: state_name(entry.state),
            capacity: entry.capacity,
            band_offset: entry.band_offset,
            band_len: band_len(entry.capacity),
            head: entry.head,
            tail: entry.tail,
            depth: (status == "ok").then(|| depth(entry.head, entry.tail, entry.capacity)),
            not_empty_waiters: entry.not_empty_waiters,
            not_full_waiters: entry.not_full_waiters,
            stuck_notes: [
                (entry.stuck_receive_position, entry.stuck_receive_since_ns),
                (entry.stuck_send_position, entry.stuck_send_since_ns),
            ],
            creator_pid: entry.creator_pid,
            channel_id_field: entry.channel_id,
            flags: entry.flags,
            peers: None,
        });
        problems.extend(entry_problems);
    }

    // Bands: every overlapping pair of otherwise valid channels.
    for (i, a) in valid_bands.iter().enumerate() {
        for b in &valid_bands[i + 1..] {
            if let Err(c) = check_overlaps(&mut [*a, *b]) {
                if let Some(row) = channels.iter_mut().find(|r| Some(r.id) == c.channel()) {
                    row.status = "corrupt";
                    row.depth = None;
                }
                problems.push(c.into());
            }
        }
    }

    // The peer table: on no valid band (its range was checked with the header).
    if header_checked && patched.peer_table_offset != 0 {
        let records = peer_records_of(patched.peer_records).unwrap_or(PEER_RECORDS);
        if let Err(c) = check_peer_table_bands(patched.peer_table_offset, records, &valid_bands) {
            problems.push(c.into());
        }
    }

    report(Some(header_json), segment_len, channels, problems, true)
}

/// Reads and judges the peer table when `analyze` found its place valid (`add_peers`).
fn add_peers(report: &mut Report, object: &dyn Object) {
    if report.peer_table != "unread" {
        return;
    }
    let Some(header) = &report.header else {
        return;
    };
    let (offset, len) = (header.peer_table_offset, header.peer_table_len());
    let mut table = vec![0u8; len];
    match object.read_exact_at(&mut table, offset) {
        Ok(()) => fill_peers(report, &table),
        Err(e) => {
            report.peer_table = "unreadable";
            report.peer_table_error = Some(format!("reading {len} bytes at offset {offset}: {e}"));
        }
    }
}

fn fill_peers(report: &mut Report, table: &[u8]) {
    let mut counts = vec![PeerCounts::default(); report.channels.len()];
    report.peers.clear();
    for (index, raw) in table.chunks_exact(PEER_RECORD_SIZE).enumerate() {
        let Ok(record) = PeerRecord::read_from_bytes(raw) else {
            continue;
        };
        if record.pid == 0 {
            continue;
        }
        let is_alive = dmxp::peer_alive(&record);
        let role = PeerRole::from_code(record.role);
        if let Some(i) = report
            .channels
            .iter()
            .position(|c| c.id == record.channel_id)
        {
            match (is_alive, role) {
                (false, _) => counts[i].dead += 1,
                (true, Some(PeerRole::Producer)) => counts[i].producers += 1,
                (true, Some(PeerRole::Consumer)) => counts[i].consumers += 1,
                (true, None) => {}
            }
        }
        report.peers.push(PeerJson {
            index,
            pid: record.pid,
            runtime: record.runtime,
            runtime_name: runtime_name(record.runtime),
            role: match role {
                Some(PeerRole::Producer) => "producer".into(),
                Some(PeerRole::Consumer) => "consumer".into(),
                None => format!("unknown({})", record.role),
            },
            channel: record.channel_id,
            start_time: record.start_time,
            alive: is_alive,
            intent: (record.intent_count != 0)
                .then_some((record.intent_position, record.intent_count)),
            waiting: match record.waiting {
                peer_waiting::NONE => None,
                peer_waiting::NOT_EMPTY => Some("message".into()),
                peer_waiting::NOT_FULL => Some("free_slot".into()),
                other => Some(format!("invalid({other})")),
            },
        });
    }
    for (c, n) in report.channels.iter_mut().zip(counts) {
        c.peers = Some(n);
    }
    report.peer_table = "ok";
}

/// The positions that hold each valid channel up, and their holders (`add_stuck`).
fn add_stuck(report: &mut Report, object: &dyn Object, now_ns: u64) {
    let read_sequence = |band_offset: u64, capacity: u64, position: u64| {
        let slot = band_offset + (position & (capacity - 1)) * SLOT_SIZE as u64;
        let mut word = [0u8; 8];
        object.read_exact_at(&mut word, slot).ok()?;
        Some(u64::from_le_bytes(word))
    };
    let mut stuck = Vec::new();
    for c in report.channels.iter().filter(|c| c.status == "ok") {
        let (head, tail, capacity) = (c.head, c.tail, c.capacity);
        let mut found = Vec::new();
        if (tail.wrapping_sub(head) as i64) > 0
            && read_sequence(c.band_offset, capacity, head) == Some(head)
        {
            found.push(("receive", "producer", head, c.stuck_notes[0]));
        }
        let previous = tail.wrapping_sub(capacity);
        if (head.wrapping_sub(previous) as i64) > 0
            && read_sequence(c.band_offset, capacity, tail) == Some(previous.wrapping_add(1))
        {
            found.push(("send", "consumer", previous, c.stuck_notes[1]));
        }
        for (side, role_name, position, (noted, since)) in found {
            let holders = report
                .peers
                .iter()
                .filter(|p| p.channel == c.id && p.role == role_name)
                .filter(|p| {
                    p.intent.is_some_and(|(first, count)| {
                        position.wrapping_sub(first) < u64::from(count)
                    })
                })
                .map(|p| (p.pid, p.index, p.alive))
                .collect();
            stuck.push(StuckJson {
                channel: c.id,
                side,
                position,
                holders,
                for_ms: (since != 0 && noted == position)
                    .then(|| now_ns.saturating_sub(since) / 1_000_000),
            });
        }
    }
    report.stuck = stuck;
}

fn snapshot(kind: String, name: String, object: &dyn Object) -> io::Result<Report> {
    let size = object.size()?;
    let bytes = object.header_bytes()?;
    let mut report = analyze(kind, name, size, &bytes);
    add_peers(&mut report, object);
    add_stuck(&mut report, object, dmxp::monotonic_ns());
    Ok(report)
}

fn to_dict<'py>(py: Python<'py>, r: &Report) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    let source = PyDict::new(py);
    source.set_item("kind", &r.kind)?;
    source.set_item("name", &r.name)?;
    out.set_item("source", source)?;
    out.set_item("size", r.size)?;
    match &r.header {
        None => out.set_item("header", py.None())?,
        Some(h) => {
            let d = PyDict::new(py);
            d.set_item("magic", format!("{:#018x}", h.magic))?;
            d.set_item("version", h.version)?;
            d.set_item("max_channels", h.max_channels)?;
            d.set_item("channel_count", h.channel_count)?;
            d.set_item("segment_size", h.segment_size)?;
            d.set_item("band_cursor", h.band_cursor)?;
            d.set_item("creator_pid", h.creator_pid)?;
            d.set_item("header_flags", h.header_flags)?;
            d.set_item("peer_table_offset", h.peer_table_offset)?;
            d.set_item("peer_records", h.peer_records)?;
            out.set_item("header", d)?;
        }
    }
    out.set_item("segment_len", r.segment_len)?;
    out.set_item("is_dmxp_segment", r.is_dmxp_segment)?;
    let channels = PyList::empty(py);
    for c in &r.channels {
        let d = PyDict::new(py);
        d.set_item("id", c.id)?;
        d.set_item("status", c.status)?;
        d.set_item("state", &c.state)?;
        d.set_item("capacity", c.capacity)?;
        d.set_item("band_offset", c.band_offset)?;
        d.set_item("band_len", c.band_len)?;
        d.set_item("head", c.head)?;
        d.set_item("tail", c.tail)?;
        d.set_item("depth", c.depth)?;
        d.set_item("not_empty_waiters", c.not_empty_waiters)?;
        d.set_item("not_full_waiters", c.not_full_waiters)?;
        d.set_item("creator_pid", c.creator_pid)?;
        d.set_item("channel_id_field", c.channel_id_field)?;
        d.set_item("flags", c.flags)?;
        match c.peers {
            None => d.set_item("peers", py.None())?,
            Some(n) => {
                let p = PyDict::new(py);
                p.set_item("producers", n.producers)?;
                p.set_item("consumers", n.consumers)?;
                p.set_item("dead", n.dead)?;
                d.set_item("peers", p)?;
            }
        }
        channels.append(d)?;
    }
    out.set_item("channels", channels)?;
    out.set_item("valid", r.problems.is_empty())?;
    let problems = PyList::empty(py);
    for p in &r.problems {
        let d = PyDict::new(py);
        d.set_item("field", p.field)?;
        d.set_item("channel", p.channel)?;
        d.set_item("message", &p.message)?;
        problems.append(d)?;
    }
    out.set_item("problems", problems)?;
    out.set_item("peer_table", r.peer_table)?;
    out.set_item("peer_table_error", r.peer_table_error.as_deref())?;
    let peers = PyList::empty(py);
    for p in &r.peers {
        let d = PyDict::new(py);
        d.set_item("index", p.index)?;
        d.set_item("pid", p.pid)?;
        d.set_item("runtime", p.runtime)?;
        d.set_item("runtime_name", &p.runtime_name)?;
        d.set_item("role", &p.role)?;
        d.set_item("channel", p.channel)?;
        d.set_item("start_time", p.start_time)?;
        d.set_item("alive", p.alive)?;
        match p.intent {
            None => d.set_item("intent", py.None())?,
            Some((position, count)) => {
                let i = PyDict::new(py);
                i.set_item("position", position)?;
                i.set_item("count", count)?;
                d.set_item("intent", i)?;
            }
        }
        d.set_item("waiting", p.waiting.as_deref())?;
        peers.append(d)?;
    }
    out.set_item("peers", peers)?;
    let stuck = PyList::empty(py);
    for s in &r.stuck {
        let d = PyDict::new(py);
        d.set_item("channel", s.channel)?;
        d.set_item("side", s.side)?;
        d.set_item("position", s.position)?;
        let holders = PyList::empty(py);
        for &(pid, index, alive) in &s.holders {
            let h = PyDict::new(py);
            h.set_item("pid", pid)?;
            h.set_item("index", index)?;
            h.set_item("alive", alive)?;
            holders.append(h)?;
        }
        d.set_item("holders", holders)?;
        d.set_item("for_ms", s.for_ms)?;
        stuck.append(d)?;
    }
    out.set_item("stuck", stuck)?;
    Ok(out)
}

/// The `dmxp inspect --json` report of the object at `path` (a file, or an shm object's file
/// under /dev/shm), read without mapping or writing it; `kind` and `name` fill `source`.
/// Raises OSError (FileNotFoundError, PermissionError, ...) when it cannot be opened or read.
#[pyfunction]
#[pyo3(signature = (path, kind, name))]
pub(crate) fn inspect_path<'py>(
    py: Python<'py>,
    path: &str,
    kind: &str,
    name: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let (path, kind, name) = (path.to_owned(), kind.to_owned(), name.to_owned());
    let report = py.detach(|| File::open(&path).and_then(|f| snapshot(kind, name, &f)))?;
    to_dict(py, &report)
}

/// The same report of a copy of a segment's bytes (`size` is their length; the peer table and
/// the slots are read from them too). `kind` and `name` fill `source`.
#[pyfunction]
#[pyo3(signature = (data, kind = "file", name = "segment"))]
pub(crate) fn inspect_bytes<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    kind: &str,
    name: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let report = crate::buffers::with_bytes(data, |bytes| {
        snapshot(kind.to_owned(), name.to_owned(), &bytes)
    })??;
    to_dict(py, &report)
}
