//! The analysis: the header, every channel entry in use, and every validation problem found in
//! a copy of the segment's header bytes; then the peer table and the stuck positions.
//!
//! The checks are the core's (`dmxp_nostd::validate`): `validate_header`, `validate_entry` and
//! `check_overlaps`. The core stops at the first problem, which is what a client attaching to
//! a segment needs; a person looking at a broken segment wants them all. So after each problem
//! the field at fault is replaced, in the local copy only, by a value that passes, and the
//! check runs again; each entry is checked on its own, and bands are compared pair by pair.
//!
//! The peer table (PROTOCOL.md §11) lies outside the header copy: [`analyze`] checks where
//! `peer_table_offset` points, and [`add_peers`] reads the records themselves.
//!
//! The types are the JSON model of `dmxp inspect --json` (docs/CLI.md): they serialize to it
//! key for key and in the same order, and deserialize from it.

use std::fmt;

use serde::{Deserialize, Serialize};

use dmxp_nostd::error::{Corruption, Error as CoreError};
use dmxp_nostd::layout::{
    band_len, channel_entry_offset, channel_flags, channel_state, message_flags, peer_records_of,
    peer_waiting, runtime, ChannelEntry, HeaderFields, PeerRecord, Slot, CHANNEL_ENTRY_SIZE, MAGIC,
    MAX_CHANNELS, MIN_CAPACITY, MSG_INLINE, PEER_RECORDS, PEER_RECORD_SIZE, SLOT_SIZE, VERSION,
};
use dmxp_nostd::validate::{
    check_overlaps, check_peer_table_bands, validate_entry, validate_header, ChannelGeometry,
};
use dmxp_nostd::PeerRole;
use zerocopy::FromBytes;

use crate::object::Object;

/// The whole report, as `inspect --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The object the report is of.
    pub source: SourceJson,
    /// Size of the object in bytes.
    pub size: u64,
    /// `None` when the object is shorter than the 128-byte header fields.
    pub header: Option<HeaderJson>,
    /// The length bands are validated against (`segment_size`, or `size` when that is 0).
    pub segment_len: u64,
    /// `false` when the object is not a DMXP segment at all: shorter than the 128-byte header
    /// fields, or its first 8 bytes are neither the DMXP magic nor 0 (a segment being
    /// created). Then `problems` holds that one problem, and nothing else was checked.
    pub is_dmxp_segment: bool,
    /// Every channel entry in use, in id order.
    pub channels: Vec<ChannelJson>,
    /// `true` when no problem was found.
    pub valid: bool,
    /// Every validation problem found, header first, then each entry, then the bands.
    pub problems: Vec<Problem>,
    /// `none` (no table yet), `ok`, `invalid` (a problem names `peer_table_offset`),
    /// `skipped` (another header problem: the records are not trusted), or `unreadable` (see
    /// `peer_table_error`). Before [`add_peers`]: `unread` instead of `ok`.
    pub peer_table: String,
    /// Why the table could not be read, when `peer_table` is `unreadable`.
    pub peer_table_error: Option<String>,
    /// The taken records of the peer table, in table order.
    pub peers: Vec<PeerJson>,
    /// Positions that hold their channel up right now (PROTOCOL.md §11.6, §11.8), filled by
    /// [`add_stuck`].
    pub stuck: Vec<StuckJson>,
    /// The blob pool (PROTOCOL.md §13), filled by [`add_blob_pool`]; `null` when the segment
    /// has none.
    #[serde(default)]
    pub blob_pool: Option<BlobPoolJson>,
}

/// A position that stops a channel from flowing: claimed and not yet published (receives
/// wait at `head`) or claimed by a consumer and not yet freed (sends find the ring full).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StuckJson {
    /// The channel held up.
    pub channel: u32,
    /// `receive` (a producer holds the position at `head`) or `send` (a consumer holds the
    /// slot a lap behind `tail`).
    pub side: String,
    /// The position held.
    pub position: u64,
    /// The records whose intents cover the position: who holds it, alive or not.
    pub holders: Vec<HolderJson>,
    /// How long peers have seen it stuck (from the entry's note, PROTOCOL.md §11.8); `null`
    /// when no waiting peer has noted it (it may be a moment's claim in flight).
    pub for_ms: Option<u64>,
}

/// A record holding a stuck position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HolderJson {
    /// The record's owner.
    pub pid: u32,
    /// Index of the record in the peer table.
    pub index: usize,
    /// Whether the owner is alive (see [`PeerJson::alive`]).
    pub alive: bool,
}

/// One taken peer record (PROTOCOL.md §11.2), judged alive or dead.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerJson {
    /// Index of the record in the table (0..256).
    pub index: usize,
    /// The owner's pid.
    pub pid: u32,
    /// The owner's runtime code (`dmxp_nostd::layout::runtime`).
    pub runtime: u16,
    /// As `recv`'s `sender_runtime_name` (see [`runtime_name`]).
    pub runtime_name: String,
    /// `producer`, `consumer`, or `unknown(N)`.
    pub role: String,
    /// The channel the owner's handle is on.
    pub channel: u32,
    /// The owner's process start time (0 = unknown).
    pub start_time: u64,
    /// `dmxp::process_alive(pid, start_time)`: a pid reused by a newer process counts as dead.
    pub alive: bool,
    /// The positions the owner is claiming; `null` when `intent_count` is 0.
    pub intent: Option<IntentJson>,
    /// What the owner is blocked waiting for (PROTOCOL.md §11.9): `message`, `free_slot`,
    /// `invalid(N)`; `null` when it is not waiting.
    pub waiting: Option<String>,
}

/// The positions a peer is claiming: `position..position + count` (wrapping).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct IntentJson {
    /// The first position claimed.
    pub position: u64,
    /// How many positions from it.
    pub count: u32,
}

/// Registered handles of one channel.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerCounts {
    /// Live producers.
    pub producers: usize,
    /// Live consumers.
    pub consumers: usize,
    /// Records whose owner has died (not repaired or freed yet).
    pub dead: usize,
}

/// Where the segment lives, as the JSON output names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceJson {
    /// `shm` (a POSIX shm object) or `file`.
    pub kind: String,
    /// The shm name (with its leading `/`) or the file path.
    pub name: String,
}

impl SourceJson {
    /// `shm object NAME` or `file PATH`: the object, before anything says it is a segment.
    pub fn object(&self) -> String {
        match self.kind.as_str() {
            "shm" => format!("shm object {}", self.name),
            _ => format!("file {}", self.name),
        }
    }
}

/// `shm segment NAME` or `file segment PATH`.
impl fmt::Display for SourceJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind.as_str() {
            "shm" => write!(f, "shm segment {}", self.name),
            _ => write!(f, "file segment {}", self.name),
        }
    }
}

/// The header fields as read (before any check).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeaderJson {
    /// Hex string: u64 values above 2^53 do not survive every JSON reader.
    pub magic: String,
    /// Layout version.
    pub version: u32,
    /// Channel entries in the header (256 in a valid segment).
    pub max_channels: u32,
    /// Channels created.
    pub channel_count: u32,
    /// Size recorded by the creator; 0 = the object's size.
    pub segment_size: u64,
    /// Where the next band goes.
    pub band_cursor: u64,
    /// The pid that formatted the segment.
    pub creator_pid: u32,
    /// Header flags.
    pub header_flags: u32,
    /// Offset of the peer table; 0 = none yet.
    pub peer_table_offset: u64,
    /// Records in the peer table as stored; 0 = the default 256.
    pub peer_records: u32,
}

impl HeaderJson {
    /// Bytes of the peer table the header names (a valid `peer_records`, else the default).
    fn peer_table_len(&self) -> usize {
        peer_records_of(self.peer_records).unwrap_or(PEER_RECORDS) * PEER_RECORD_SIZE
    }
}

/// One channel entry in use (created, being created, or holding bad values).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelJson {
    /// The channel id (the entry's index).
    pub id: u32,
    /// `ok`, `creating` or `corrupt`.
    pub status: String,
    /// `empty`, `creating`, `ready`, or `unknown(N)`.
    pub state: String,
    /// Slots in the ring.
    pub capacity: u64,
    /// Offset of the ring's band in the segment.
    pub band_offset: u64,
    /// `capacity × 1088`, `null` when that overflows.
    pub band_len: Option<u64>,
    /// The consumers' cursor: the next position to receive.
    pub head: u64,
    /// The producers' cursor: the next position to send.
    pub tail: u64,
    /// `tail − head` (wrapping, clamped to `0..=capacity`); `null` unless status is `ok`.
    pub depth: Option<u64>,
    /// Consumers blocked waiting for a message.
    pub not_empty_waiters: u32,
    /// Producers blocked waiting for a free slot.
    pub not_full_waiters: u32,
    /// The entry's notes of a stuck position (PROTOCOL.md §11.8): position and
    /// `CLOCK_MONOTONIC` ns since when, for receives and for sends; 0 = none noted. Not in
    /// the JSON (zeros when deserialized).
    #[serde(skip)]
    pub stuck_notes: [(u64, u64); 2],
    /// The pid that created the channel.
    pub creator_pid: u32,
    /// The entry's `channel_id` field (equals `id` in a valid entry).
    pub channel_id_field: u32,
    /// The entry's flags (`0x1`: the channel carries messages longer than one slot).
    pub flags: u32,
    /// The largest message the channel takes, in bytes: the entry's `max_message_size` for a
    /// channel with runs (PROTOCOL.md §12.1), else 960.
    #[serde(default = "one_slot")]
    pub max_message_size: u64,
    /// Registered handles of this channel; `null` when the peer table cannot be read.
    pub peers: Option<PeerCounts>,
    /// Messages longer than one slot (runs, PROTOCOL.md §12) queued in the ring now: the
    /// published first slots of runs between `head` and `tail` (see [`add_runs`]). `null`
    /// for a channel without runs, one not `ok`, or a ring that could not be read.
    #[serde(default)]
    pub queued_runs: Option<u64>,
}

/// One validation problem.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Problem {
    /// The layout's name of the field at fault (`magic`, `capacity`, `band_offset`, ...), or
    /// `size` when the object is too short.
    pub field: String,
    /// The channel whose entry is at fault; `null` for the header.
    pub channel: Option<u32>,
    /// What is wrong, in one sentence.
    pub message: String,
}

impl From<Corruption> for Problem {
    fn from(c: Corruption) -> Self {
        Problem {
            field: c.field().into(),
            channel: c.channel(),
            message: c.to_string(),
        }
    }
}

/// The name of a runtime code (`dmxp_nostd::layout::runtime`), as `dmxp recv`'s
/// `sender_runtime_name`: `rust`, `c`, `python`, `go`, `unknown`, or `unknown(N)`.
pub fn runtime_name(code: u16) -> String {
    match code {
        runtime::UNKNOWN => "unknown".into(),
        runtime::RUST => "rust".into(),
        runtime::C => "c".into(),
        runtime::PYTHON => "python".into(),
        runtime::GO => "go".into(),
        other => format!("unknown({other})"),
    }
}

fn state_name(state: u32) -> String {
    match state {
        channel_state::EMPTY => "empty".into(),
        channel_state::CREATING => "creating".into(),
        channel_state::READY => "ready".into(),
        other => format!("unknown({other})"),
    }
}

/// What `max_message_size` reads as in JSON written before it existed.
fn one_slot() -> u64 {
    MSG_INLINE as u64
}

/// Replaces the header field `c` names by a value that passes; `false` if there is none.
/// Every variant is listed so that a new one has to be placed here.
fn patch_header(header: &mut HeaderFields, c: Corruption) -> bool {
    use Corruption::*;
    match c {
        // (Not reached from `analyze`, which stops at a wrong magic: not a DMXP segment.)
        BadMagic { .. } => header.magic = MAGIC,
        UnsupportedVersion { .. } => header.version = VERSION,
        WrongMaxChannels { .. } => header.max_channels = MAX_CHANNELS as u32,
        ChannelCountTooLarge { .. } => header.channel_count = 0,
        SegmentSizeMismatch { .. } => header.segment_size = 0,
        BandCursorOutOfRange { .. } => header.band_cursor = 0,
        // With no valid size there is no table to read either.
        PeerRecordsOutOfRange { .. } => {
            header.peer_records = 0;
            header.peer_table_offset = 0;
        }
        // 0 means "no table": the checks after it still run, the records are not read.
        PeerTableOutOfRange { .. } | PeerTableOverlapsBand { .. } => header.peer_table_offset = 0,
        // 0 means "no pool": the report goes on without one.
        BlobPoolOutOfRange { .. }
        | BlobPoolBadMagic { .. }
        | BlobPoolBadGeometry { .. }
        | BlobClassBad { .. } => header.blob_pool_offset = 0,
        ChannelIdMismatch { .. }
        | BlobsWithoutPool { .. }
        | UnknownChannelState { .. }
        | CapacityZero { .. }
        | CapacityNotPowerOfTwo { .. }
        | CapacityTooSmall { .. }
        | CapacityTooLarge { .. }
        | BandMisaligned { .. }
        | BandOverlapsHeader { .. }
        | BandOutsideSegment { .. }
        | BandsOverlap { .. }
        | UnknownChannelFlags { .. }
        | MaxMessageSizeOutOfRange { .. } => return false,
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
        // The run fields are checked last: a single-slot channel passes.
        Corruption::UnknownChannelFlags { .. } | Corruption::MaxMessageSizeOutOfRange { .. } => {
            entry.flags = 0;
            entry.max_message_size = 0;
        }
        Corruption::CapacityNotPowerOfTwo { .. }
        | Corruption::CapacityTooSmall { .. }
        | Corruption::CapacityTooLarge { .. } => entry.capacity = MIN_CAPACITY,
        // The band checks come last, and header fields are not an entry's.
        _ => return false,
    }
    true
}

/// Why `head` and `tail` cannot both be honest, if they cannot: the ring holds between 0 and
/// `capacity` messages, so `tail - head` (wrapping) lies in `0..=capacity`.
pub fn impossible_cursors(head: u64, tail: u64, capacity: u64) -> Option<String> {
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

/// `tail − head` as a wrapping signed difference, clamped to `0..=capacity`.
pub fn depth(head: u64, tail: u64, capacity: u64) -> u64 {
    let diff = tail.wrapping_sub(head) as i64;
    if diff <= 0 {
        0
    } else {
        (diff as u64).min(capacity)
    }
}

/// Analyses `bytes`, a copy of the first bytes (up to `HEADER_SIZE`) of an object of `size`
/// bytes.
pub fn analyze(source: SourceJson, size: u64, bytes: &[u8]) -> Report {
    let mut problems = Vec::new();
    let mut channels = Vec::new();
    let report = |header: Option<HeaderJson>,
                  segment_len,
                  channels,
                  problems: Vec<Problem>,
                  is_dmxp_segment: bool| {
        // The records are read only from a segment whose header validates and whose table
        // lies where it may (in range, on no band).
        let peer_table = match &header {
            _ if !is_dmxp_segment => "skipped",
            Some(HeaderJson {
                peer_table_offset: 0,
                ..
            }) => "none",
            _ if problems
                .iter()
                .any(|p| matches!(p.field.as_str(), "peer_table_offset" | "peer_records")) =>
            {
                "invalid"
            }
            Some(_) if !problems.iter().any(|p| p.channel.is_none()) => "unread",
            _ => "skipped",
        };
        let mut channels: Vec<ChannelJson> = channels;
        let counts = (peer_table == "none").then(PeerCounts::default);
        for c in &mut channels {
            c.peers = counts;
        }
        Report {
            source: source.clone(),
            size,
            header,
            segment_len,
            channels,
            is_dmxp_segment,
            valid: problems.is_empty(),
            problems,
            peer_table: peer_table.into(),
            peer_table_error: None,
            peers: Vec::new(),
            stuck: Vec::new(),
            blob_pool: None,
        }
    };

    let Ok((header, _)) = HeaderFields::read_from_prefix(bytes) else {
        problems.push(Problem {
            field: "size".into(),
            channel: None,
            message: format!("object of {size} bytes is too short for the 128-byte header fields"),
        });
        return report(None, size, channels, problems, false);
    };
    let header_json = HeaderJson {
        magic: format!("{:#018x}", header.magic),
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

    // Not a DMXP segment at all (a random file, another program's shm object): its other
    // bytes mean nothing, and checking them would list every one of 256 garbage entries.
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
    // Whether the (patched) header passed, `peer_table_offset`'s range included.
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
                    field: "magic".into(),
                    channel: None,
                    message: "magic is 0: the segment is still being created, or its creator \
                              died formatting it"
                        .into(),
                });
                // Nothing after magic means anything in an unformatted segment.
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
                    field: "size".into(),
                    channel: None,
                    message: format!(
                        "object of {len} bytes is smaller than the {needed}-byte header"
                    ),
                });
                break;
            }
            Err(other) => {
                problems.push(Problem {
                    field: "header".into(),
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
        // A channel whose cursors are more than a ring apart (or crossed) cannot flow again
        // on its own: every send or receive gives up. `dmxp reset` brings it back.
        if entry_problems.is_empty() && geometry.is_some() {
            if let Some(message) = impossible_cursors(entry.head, entry.tail, entry.capacity) {
                entry_problems.push(Problem {
                    field: "tail".into(),
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
            status: status.into(),
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
            max_message_size: if entry.flags & channel_flags::RUNS != 0 {
                u64::from(entry.max_message_size)
            } else {
                MSG_INLINE as u64
            },
            peers: None,
            queued_runs: None,
        });
        problems.extend(entry_problems);
    }

    // Bands: every overlapping pair of otherwise valid channels.
    for (i, a) in valid_bands.iter().enumerate() {
        for b in &valid_bands[i + 1..] {
            if let Err(c) = check_overlaps(&mut [*a, *b]) {
                if let Some(row) = channels.iter_mut().find(|r| Some(r.id) == c.channel()) {
                    row.status = "corrupt".into();
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

impl Report {
    /// Why the object is not a DMXP segment, when it is not (see `is_dmxp_segment`).
    pub fn not_a_segment(&self) -> Option<&str> {
        if self.is_dmxp_segment {
            return None;
        }
        Some(self.problems.first().map_or("", |p| p.message.as_str()))
    }

    /// The fields at fault, each once, in the order first found.
    pub fn fields_at_fault(&self) -> Vec<&str> {
        let mut fields: Vec<&str> = Vec::new();
        for p in &self.problems {
            if !fields.contains(&p.field.as_str()) {
                fields.push(&p.field);
            }
        }
        fields
    }
}

/// Reads the peer table of the segment `object` (when [`analyze`] found its place valid) and
/// fills `report`'s peers and per-channel counts, judging each owner with `alive(record)`
/// (`dmxp::peer_alive`: pid, start time and pid namespace). A failed read marks the table
/// `unreadable`; it is not a validation problem (the object may have been truncated
/// meanwhile).
pub fn add_peers<O: Object + ?Sized>(
    report: &mut Report,
    object: &O,
    alive: impl Fn(&PeerRecord) -> bool,
) {
    if report.peer_table != "unread" {
        return;
    }
    let Some(header) = &report.header else {
        return;
    };
    let (offset, len) = (header.peer_table_offset, header.peer_table_len());
    let mut table = vec![0u8; len];
    match object.read_exact_at(&mut table, offset) {
        Ok(()) => fill_peers(report, &table, alive),
        Err(e) => {
            report.peer_table = "unreadable".into();
            report.peer_table_error = Some(format!("reading {len} bytes at offset {offset}: {e}"));
        }
    }
}

/// Finds the positions that hold each valid channel up (see [`StuckJson`]), reading the
/// sequence words at `head` and a lap behind `tail` from `object`, and names their holders
/// from the peers [`add_peers`] read. `now_ns` is `CLOCK_MONOTONIC` now. A sequence that
/// cannot be read (the object shrank) just reports nothing for that channel.
pub fn add_stuck<O: Object + ?Sized>(report: &mut Report, object: &O, now_ns: u64) {
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
        // Claimed by a producer (tail is past head), not yet published.
        if (tail.wrapping_sub(head) as i64) > 0
            && read_sequence(c.band_offset, capacity, head) == Some(head)
        {
            found.push(("receive", PeerRole::Producer, head, c.stuck_notes[0]));
        }
        // A lap behind tail: claimed by a consumer (head is past it), not yet freed.
        let previous = tail.wrapping_sub(capacity);
        if (head.wrapping_sub(previous) as i64) > 0
            && read_sequence(c.band_offset, capacity, tail) == Some(previous.wrapping_add(1))
        {
            found.push(("send", PeerRole::Consumer, previous, c.stuck_notes[1]));
        }
        for (side, role, position, (noted, since)) in found {
            let role_name = if role == PeerRole::Producer {
                "producer"
            } else {
                "consumer"
            };
            let holders = report
                .peers
                .iter()
                .filter(|p| p.channel == c.id && p.role == role_name)
                .filter(|p| {
                    p.intent
                        .is_some_and(|i| position.wrapping_sub(i.position) < u64::from(i.count))
                })
                .map(|p| HolderJson {
                    pid: p.pid,
                    index: p.index,
                    alive: p.alive,
                })
                .collect();
            stuck.push(StuckJson {
                channel: c.id,
                side: side.into(),
                position,
                holders,
                for_ms: (since != 0 && noted == position)
                    .then(|| now_ns.saturating_sub(since) / 1_000_000),
            });
        }
    }
    report.stuck = stuck;
}

/// Counts the runs queued in each valid channel that carries them ([`ChannelJson::queued_runs`]):
/// reads the sequence and flags of every slot from `head` to `tail` from `object`, a chunk of
/// slots at a time, and counts the published slots flagged `RUN` (a run's first slot). A ring
/// that cannot be read (the object shrank) leaves the count `null`.
pub fn add_runs<O: Object + ?Sized>(report: &mut Report, object: &O) {
    const CHUNK_SLOTS: u64 = 256;
    let slot_size = SLOT_SIZE as u64;
    for c in report.channels.iter_mut() {
        if c.status != "ok" || c.flags & channel_flags::RUNS == 0 {
            continue;
        }
        let queued = depth(c.head, c.tail, c.capacity);
        let mut count = Some(0u64);
        let mut chunk = vec![0u8; (CHUNK_SLOTS * slot_size) as usize];
        let mut done = 0;
        while done < queued {
            let first = c.head.wrapping_add(done);
            let index = first & (c.capacity - 1);
            // A chunk stops at the end of the band; the next one starts at slot 0.
            let n = (queued - done).min(CHUNK_SLOTS).min(c.capacity - index);
            let bytes = &mut chunk[..(n * slot_size) as usize];
            if object
                .read_exact_at(bytes, c.band_offset + index * slot_size)
                .is_err()
            {
                count = None;
                break;
            }
            let starts = bytes
                .chunks_exact(SLOT_SIZE)
                .zip(0u64..)
                .filter(|(bytes, k)| {
                    Slot::read_from_bytes(bytes).is_ok_and(|slot| {
                        slot.sequence == first.wrapping_add(*k).wrapping_add(1)
                            && slot.meta.flags & (message_flags::RUN | message_flags::RUN_CONT)
                                == message_flags::RUN
                    })
                })
                .count() as u64;
            count = count.map(|c| c + starts);
            done += n;
        }
        c.queued_runs = count;
    }
}

/// Fills `report` from `table`, the peer table's bytes.
pub fn fill_peers(report: &mut Report, table: &[u8], alive: impl Fn(&PeerRecord) -> bool) {
    let mut counts = vec![PeerCounts::default(); report.channels.len()];
    report.peers.clear();
    for (index, raw) in table.chunks_exact(PEER_RECORD_SIZE).enumerate() {
        let Ok(record) = PeerRecord::read_from_bytes(raw) else {
            continue;
        };
        if record.pid == 0 {
            continue;
        }
        let is_alive = alive(&record);
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
            intent: (record.intent_count != 0).then_some(IntentJson {
                position: record.intent_position,
                count: record.intent_count,
            }),
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
    report.peer_table = "ok".into();
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmxp_nostd::layout::{HEADER_SIZE, PEER_TABLE_SIZE, SLOT_SIZE};
    use dmxp_nostd::{AlignedBlock, Region, Segment};
    use zerocopy::IntoBytes;

    fn source() -> SourceJson {
        SourceJson {
            kind: "file".into(),
            name: "test".into(),
        }
    }

    /// A formatted segment with channels 0 (4 slots) and 3 (8 slots); returns its header bytes
    /// and total size.
    fn segment_bytes() -> (Vec<u8>, u64) {
        let size = HEADER_SIZE + 16 * SLOT_SIZE;
        let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(size)];
        {
            let segment = Segment::format(Region::new(memory.as_mut_bytes()).unwrap(), 42).unwrap();
            segment.create_channel(0, 4, 7).unwrap();
            segment.create_channel(3, 8, 9).unwrap();
        }
        let bytes = memory.as_bytes();
        (bytes[..HEADER_SIZE].to_vec(), bytes.len() as u64)
    }

    fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    #[test]
    fn fresh_segment_is_valid_and_lists_its_channels() {
        let (bytes, size) = segment_bytes();
        let report = analyze(source(), size, &bytes);
        assert!(report.valid, "{:?}", report.problems);
        let ids: Vec<_> = report.channels.iter().map(|c| (c.id, c.capacity)).collect();
        assert_eq!(ids, [(0, 4), (3, 8)]);
        assert_eq!(report.channels[0].creator_pid, 7);
        assert_eq!(report.channels[0].band_offset, HEADER_SIZE as u64);
        assert_eq!(report.header.as_ref().unwrap().creator_pid, 42);
        assert_eq!(report.header.as_ref().unwrap().channel_count, 2);
    }

    #[test]
    fn every_header_problem_is_listed() {
        let (mut bytes, size) = segment_bytes();
        put_u32(&mut bytes, 8, 9);
        put_u32(&mut bytes, 12, 255);
        put_u64(&mut bytes, 32, 17); // band_cursor inside the header
        let report = analyze(source(), size, &bytes);
        let fields: Vec<_> = report.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["version", "max_channels", "band_cursor"]);
        assert!(!report.valid);
        assert!(report.is_dmxp_segment);
        assert_eq!(report.not_a_segment(), None);
    }

    #[test]
    fn a_wrong_magic_is_not_a_segment_and_nothing_else_is_checked() {
        // Garbage everywhere: every entry would be a problem if they were checked.
        let size = HEADER_SIZE as u64 * 4;
        let bytes: Vec<u8> = (0..HEADER_SIZE as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let report = analyze(source(), size, &bytes);
        assert!(!report.is_dmxp_segment);
        assert!(!report.valid);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert_eq!(report.problems[0].field, "magic");
        assert!(report.channels.is_empty());
        assert_eq!(report.peer_table, "skipped");
        let why = report.not_a_segment().unwrap();
        assert!(why.starts_with("bad magic 0x"), "{why}");
        assert!(why.contains("expected 0x444d58505f4d454d"), "{why}");
        assert!(
            report.header.is_some(),
            "the header as read is still reported"
        );
    }

    #[test]
    fn every_entry_is_checked_on_its_own() {
        let (mut bytes, size) = segment_bytes();
        let e0 = channel_entry_offset(0);
        let e3 = channel_entry_offset(3);
        put_u64(&mut bytes, e0 + 8, 3); // capacity 3
        put_u32(&mut bytes, e0, 5); // channel_id 5
        put_u64(&mut bytes, e3 + 16, size); // band starts at the end
        let report = analyze(source(), size, &bytes);
        let found: Vec<_> = report
            .problems
            .iter()
            .map(|p| (p.channel, p.field.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (Some(0), "channel_id"),
                (Some(0), "capacity"),
                (Some(3), "band_offset")
            ]
        );
        assert!(report.channels.iter().all(|c| c.status == "corrupt"));
    }

    #[test]
    fn overlapping_bands_are_reported_per_pair() {
        let (mut bytes, size) = segment_bytes();
        let e3 = channel_entry_offset(3);
        put_u64(&mut bytes, e3 + 16, HEADER_SIZE as u64); // channel 3 on top of channel 0
        let report = analyze(source(), size, &bytes);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert_eq!(report.problems[0].field, "band_offset");
        assert_eq!(report.problems[0].channel, Some(3));
        assert_eq!(report.channels[0].status, "ok");
        assert_eq!(report.channels[1].status, "corrupt");
    }

    #[test]
    fn short_and_unformatted_objects() {
        let report = analyze(source(), 10, &[0; 10]);
        assert_eq!(report.problems[0].field, "size");
        assert!(report.header.is_none());
        assert!(!report.is_dmxp_segment, "too short to be one");
        assert!(report.not_a_segment().unwrap().contains("10 bytes"));

        // Magic 0: a segment being created (or abandoned), still a DMXP segment.
        let report = analyze(source(), HEADER_SIZE as u64, &vec![0; HEADER_SIZE]);
        assert_eq!(report.problems.len(), 1);
        assert_eq!(report.problems[0].field, "magic");
        assert!(report.is_dmxp_segment);
    }

    /// [`segment_bytes`], recording a size with room for a peer table after the bands.
    fn with_room_for_a_table() -> (Vec<u8>, u64) {
        let (mut bytes, size) = segment_bytes();
        let size = size + PEER_TABLE_SIZE as u64;
        put_u64(&mut bytes, 24, size);
        (bytes, size)
    }

    #[test]
    fn a_misplaced_peer_table_is_a_header_problem_and_is_not_read() {
        let (mut bytes, size) = segment_bytes();
        put_u64(&mut bytes, 48, size); // the table would run past the end
        put_u32(&mut bytes, 8, 2); // and a bad version before it
        let report = analyze(source(), size, &bytes);
        let fields: Vec<_> = report.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["version", "peer_table_offset"]);
        assert_eq!(report.peer_table, "invalid");
        assert!(report.channels.iter().all(|c| c.peers.is_none()));

        // In range but on channel 0's band (which starts at the header's end).
        let (mut bytes, size) = segment_bytes();
        put_u64(&mut bytes, 48, HEADER_SIZE as u64);
        let report = analyze(source(), size, &bytes);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert_eq!(report.problems[0].field, "peer_table_offset");
        assert_eq!(report.problems[0].channel, None);
        assert!(report.problems[0]
            .message
            .contains("overlaps channel 0's band"));
        assert_eq!(report.peer_table, "invalid");

        // Another header problem: the table's place passes but its records are not trusted.
        let (mut bytes, size) = with_room_for_a_table();
        put_u64(&mut bytes, 48, (HEADER_SIZE + 12 * SLOT_SIZE) as u64);
        put_u64(&mut bytes, 0, 1);
        assert_eq!(analyze(source(), size, &bytes).peer_table, "skipped");
    }

    #[test]
    fn peers_are_listed_and_counted_per_channel() {
        let (mut bytes, size) = with_room_for_a_table();
        put_u64(&mut bytes, 48, (HEADER_SIZE + 12 * SLOT_SIZE) as u64);
        let mut report = analyze(source(), size, &bytes);
        assert_eq!(report.peer_table, "unread");

        let mut table = vec![0u8; PEER_TABLE_SIZE];
        // (index, pid, role, channel, intent count)
        for (index, pid, role, channel, count) in [
            (0, 10, 1u16, 0u32, 0u32),
            (3, 11, 2, 0, 1),
            (4, 12, 2, 3, 0),
            (9, 13, 1, 3, 0),
            (10, 14, 7, 3, 0),
        ] {
            let at = index * PEER_RECORD_SIZE;
            put_u32(&mut table, at, pid);
            table[at + 6..at + 8].copy_from_slice(&role.to_le_bytes());
            put_u64(&mut table, at + 8, 1000 + u64::from(pid));
            put_u32(&mut table, at + 16, channel);
            put_u32(&mut table, at + 20, count);
            put_u64(&mut table, at + 24, 5);
        }
        // pid 12 is dead; pid 13 "lives" only under another start time (reused pid).
        fill_peers(&mut report, &table, |r| {
            r.pid != 12 && !(r.pid == 13 && r.start_time == 1013)
        });
        assert_eq!(report.peer_table, "ok");
        let listed: Vec<_> = report
            .peers
            .iter()
            .map(|p| (p.index, p.pid, p.role.as_str(), p.channel, p.alive))
            .collect();
        assert_eq!(
            listed,
            [
                (0, 10, "producer", 0, true),
                (3, 11, "consumer", 0, true),
                (4, 12, "consumer", 3, false),
                (9, 13, "producer", 3, false),
                (10, 14, "unknown(7)", 3, true),
            ]
        );
        let intent = report.peers[1].intent.unwrap();
        assert_eq!((intent.position, intent.count), (5, 1));
        assert!(report.peers[0].intent.is_none());
        let counts = |id: u32| report.channels.iter().find(|c| c.id == id).unwrap().peers;
        let expect = |producers, consumers, dead| {
            Some(PeerCounts {
                producers,
                consumers,
                dead,
            })
        };
        assert_eq!(counts(0), expect(1, 1, 0));
        assert_eq!(counts(3), expect(0, 0, 2));
    }

    #[test]
    fn impossible_cursors_are_more_than_a_ring_apart_or_crossed() {
        assert_eq!(impossible_cursors(0, 8, 8), None);
        assert_eq!(impossible_cursors(u64::MAX, 2, 8), None, "wraps");
        assert!(impossible_cursors(0, 9, 8)
            .unwrap()
            .contains("more than the capacity 8"));
        assert!(impossible_cursors(0, 1 << 63, 8).is_some());
        assert!(impossible_cursors(5, 3, 8).unwrap().contains("past tail"));
    }

    #[test]
    fn depth_is_a_clamped_wrapping_difference() {
        assert_eq!(depth(0, 3, 8), 3);
        assert_eq!(depth(5, 3, 8), 0);
        assert_eq!(depth(0, 100, 8), 8);
        assert_eq!(depth(u64::MAX, 1, 8), 2);
    }
}

/// The blob pool (PROTOCOL.md §13), as [`add_blob_pool`] reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobPoolJson {
    /// Where the pool's descriptor is.
    pub offset: u64,
    /// Bytes of the pool (descriptor, headers and blocks).
    pub len: u64,
    /// `ok`, or why the pool could not be used (a corrupt descriptor, unreadable headers).
    pub status: String,
    /// Bytes of all blocks.
    pub block_bytes: u64,
    /// Bytes of the free blocks.
    pub free_bytes: u64,
    /// Each size class, smallest first.
    pub classes: Vec<BlobClassJson>,
    /// Blocks in use (`LOANED` or `HELD`) per owning peer record.
    pub owners: Vec<BlobOwnerJson>,
    /// Blocks whose owner will never free them: a record that is free, or dead, or out of
    /// range; `dmxp recover` gives them back.
    pub leaked: u32,
}

/// One size class of the pool.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct BlobClassJson {
    /// Bytes per block.
    pub block_size: u64,
    /// Blocks in the class.
    pub blocks: u32,
    /// Free blocks.
    pub free: u32,
    /// Blocks a producer is writing.
    pub loaned: u32,
    /// Blocks a message in a ring refers to.
    pub queued: u32,
    /// Blocks a consumer is reading.
    pub held: u32,
    /// Blocks whose state byte is none of those (a scribbled tag).
    pub invalid: u32,
}

/// The blocks one peer record owns.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct BlobOwnerJson {
    /// The owner's record index.
    pub record: usize,
    /// The pid the record holds (0: the record is free).
    pub pid: u32,
    /// Whether the record's owner is alive (false for a free record).
    pub alive: bool,
    /// Blocks it owns.
    pub blocks: u32,
    /// Bytes of those blocks.
    pub bytes: u64,
}

/// Reads the blob pool the header names, if any ([`Report::blob_pool`]): validates its
/// descriptor, reads every block header and counts blocks by class, state and owner, judging
/// owners with the records [`add_peers`] read. A pool that fails validation or cannot be read
/// is reported by its `status`.
pub fn add_blob_pool<O: Object + ?Sized>(report: &mut Report, object: &O) {
    use dmxp_nostd::blob::{
        block_state, check_pool_offset, validate_pool, PoolDescriptor, Tag, BLOCK_HEADER_SIZE,
        POOL_DESCRIPTOR_AREA,
    };
    let mut word = [0u8; 8];
    // Only a DMXP segment's header names a pool; other bytes at offset 64 mean nothing.
    if !report.is_dmxp_segment
        || report.header.is_none()
        || object.read_exact_at(&mut word, 64).is_err()
    {
        return;
    }
    let offset = u64::from_le_bytes(word);
    if offset == 0 {
        return;
    }
    let mut pool = BlobPoolJson {
        offset,
        len: 0,
        status: "ok".into(),
        block_bytes: 0,
        free_bytes: 0,
        classes: Vec::new(),
        owners: Vec::new(),
        leaked: 0,
    };
    let mut descriptor = vec![0u8; POOL_DESCRIPTOR_AREA];
    // A descriptor the object is too short to hold lies outside the segment.
    let unreadable = |_: std::io::Error| Corruption::BlobPoolOutOfRange {
        found: offset,
        segment_len: report.segment_len,
    };
    let geometry = check_pool_offset(offset, report.segment_len)
        .and_then(|()| {
            object
                .read_exact_at(&mut descriptor, offset)
                .map_err(unreadable)
        })
        .and_then(|()| {
            let raw = PoolDescriptor::from_bytes(&descriptor).unwrap_or_default();
            validate_pool(&raw, offset, report.segment_len)
        });
    let geometry = match geometry {
        Ok(geometry) => geometry,
        Err(corruption) => {
            // Clients refuse to attach to such a segment: a problem like any other field's.
            pool.status = corruption.to_string();
            report.problems.push(corruption.into());
            report.valid = false;
            report.blob_pool = Some(pool);
            return;
        }
    };
    pool.len = geometry.len;
    let record = |index: usize| report.peers.iter().find(|p| p.index == index);
    let mut owners: std::collections::BTreeMap<usize, BlobOwnerJson> = Default::default();
    for class in geometry.classes() {
        let mut headers = vec![0u8; class.block_count as usize * BLOCK_HEADER_SIZE];
        if let Err(e) = object.read_exact_at(&mut headers, class.headers_offset) {
            pool.status = format!("reading block headers: {e}");
            break;
        }
        let mut counts = BlobClassJson {
            block_size: class.block_size,
            blocks: class.block_count,
            free: 0,
            loaned: 0,
            queued: 0,
            held: 0,
            invalid: 0,
        };
        for header in headers.chunks_exact(BLOCK_HEADER_SIZE) {
            let mut tag = [0u8; 8];
            tag.copy_from_slice(&header[..8]);
            let tag = Tag::unpack(u64::from_le_bytes(tag));
            match tag.state {
                block_state::FREE => counts.free += 1,
                block_state::LOANED => counts.loaned += 1,
                block_state::QUEUED => counts.queued += 1,
                block_state::HELD => counts.held += 1,
                _ => counts.invalid += 1,
            }
            let owned = matches!(tag.state, block_state::LOANED | block_state::HELD);
            if owned && tag.owner != 0 {
                let index = tag.owner as usize - 1;
                let peer = record(index);
                let entry = owners.entry(index).or_insert(BlobOwnerJson {
                    record: index,
                    pid: peer.map_or(0, |p| p.pid),
                    alive: peer.is_some_and(|p| p.alive),
                    blocks: 0,
                    bytes: 0,
                });
                entry.blocks += 1;
                entry.bytes += class.block_size;
                if !entry.alive {
                    pool.leaked += 1;
                }
            }
        }
        pool.block_bytes += class.block_size * u64::from(class.block_count);
        pool.free_bytes += class.block_size * u64::from(counts.free);
        pool.classes.push(counts);
    }
    pool.owners = owners.into_values().collect();
    report.blob_pool = Some(pool);
}
