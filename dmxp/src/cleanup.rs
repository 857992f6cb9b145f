//! Finding segments nobody uses any more, and removing them (`dmxp clean --stale`).
//!
//! A segment is **stale** when no process registered in its peer table (PROTOCOL.md §11) is
//! alive and the process that created it (`creator_pid` in the header) is not running either.
//! [`scan_shm`] and [`scan_dir`] list the DMXP segments of `/dev/shm` or of a directory of file
//! segments with that verdict; [`remove_if_stale`] examines a segment again and removes it only
//! if it is still stale.
//!
//! Segments are read with ordinary `read` calls (never mapped), so read permission is enough
//! to examine one, a segment truncated meanwhile cannot raise `SIGBUS` here, and nothing is
//! ever written to it.
//!
//! What registration cannot tell:
//! * A process that has the segment mapped without a producer or consumer (a bare
//!   [`crate::SharedMemoryAllocator`]), or a client that does not register (older than §11),
//!   is invisible: such a segment may be judged stale while in use.
//! * Liveness is judged in this process's pid namespace (`kill(pid, 0)`, `/proc`).
//! * A process may attach between the last check and the removal; the removal only takes the
//!   name away (processes that have the segment mapped keep it), but a later opener then gets
//!   a new segment.
//!
//! A segment whose header or peer table does not validate gets [`Verdict::Unknown`] and is
//! never removed by [`remove_if_stale`].

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use dmxp_nostd::layout::{
    channel_entry_offset, channel_state, peer_records_of, ChannelEntry, HeaderFields, PeerRecord,
    CHANNEL_ENTRY_SIZE, HEADER_SIZE, MAGIC, MAX_CHANNELS, PEER_RECORDS, PEER_RECORD_SIZE,
};
use dmxp_nostd::validate::{check_peer_table_bands, validate_entry, validate_header};
use dmxp_nostd::{Error as CoreError, PeerInfo};

use crate::error::{Error, ErrorKind, Result};
use crate::recovery::process_alive;

/// The directory of POSIX shm objects on Linux.
pub const SHM_DIR: &str = "/dev/shm";

/// How a segment is named.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    /// A POSIX shm object, named `/name` (the file `/dev/shm/name`).
    Shm,
    /// A segment in a file, named by its path.
    File,
}

/// A peer-table record and whether its owner is alive ([`process_alive`] with the record's
/// start time, so a reused pid counts as dead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The record as read (its index in the table and its fields).
    pub info: PeerInfo,
    /// Whether its owner is alive (a reused pid counts as dead).
    pub alive: bool,
}

/// Whether a segment is in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No live registered peer, and the creator is not running.
    Stale,
    /// A registered peer is alive, or the creator still runs.
    InUse {
        /// Registered peers whose process is alive.
        live_peers: usize,
        /// Whether the header's `creator_pid` runs.
        creator_alive: bool,
    },
    /// The registrations cannot be read: the header or the peer table does not validate, or
    /// the object could not be read in full. Treated as in use.
    Unknown {
        /// The kind of the error that stopped the examination.
        kind: ErrorKind,
        /// Its message, naming the segment and the field or call at fault.
        reason: String,
    },
}

/// One DMXP segment as examined at one instant.
#[derive(Clone, Debug)]
pub struct SegmentStatus {
    /// Whether it is a shm object or a file segment.
    pub kind: SegmentKind,
    /// `/name` for a shm object, the path for a file segment.
    pub name: String,
    /// The file examined (`/dev/shm/name` for a shm object).
    pub path: PathBuf,
    /// Size of the object in bytes.
    pub size: u64,
    /// `creator_pid` from the header (0 = not recorded).
    pub creator_pid: u32,
    /// Whether a process with `creator_pid` runs (false for pid 0). The header holds no start
    /// time for the creator, so a reused pid counts as running: the safe side.
    pub creator_alive: bool,
    /// The taken records of the peer table, in table order (empty when there is no table or
    /// it cannot be read).
    pub peers: Vec<PeerStatus>,
    /// Messages queued and not yet received, over every ready channel (`tail - head`,
    /// clamped to the capacity), as the header showed them.
    pub queued: u64,
    /// Whether it is stale, in use, or could not be judged.
    pub verdict: Verdict,
}

impl SegmentStatus {
    /// True when the verdict is [`Verdict::Stale`].
    #[must_use]
    pub fn is_stale(&self) -> bool {
        self.verdict == Verdict::Stale
    }

    /// Registered peers whose process is alive.
    #[must_use]
    pub fn live_peers(&self) -> usize {
        self.peers.iter().filter(|p| p.alive).count()
    }

    /// Registered peers whose process has died (records a repair pass has not freed yet).
    #[must_use]
    pub fn dead_peers(&self) -> usize {
        self.peers.len() - self.live_peers()
    }
}

/// What [`remove_if_stale`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "only `Removal::Removed` means the segment is gone"]
pub enum Removal {
    /// The name (shm) or file was removed.
    Removed,
    /// Not removed: the segment examined again is not stale (this verdict says why).
    Kept(Verdict),
    /// Not removed: stale, but it still holds `queued` undelivered messages (a producer sent
    /// them and exited before any consumer came). Removing it anyway is an explicit choice
    /// (`remove_if_stale(status, true)`, `dmxp clean --stale --remove --force`).
    KeptQueued {
        /// Messages queued and not yet received.
        queued: u64,
    },
}

/// Lists the DMXP segments in `/dev/shm`, in name order.
pub fn scan_shm() -> Result<Vec<SegmentStatus>> {
    scan_dir(Path::new(SHM_DIR), SegmentKind::Shm)
}

/// Lists the DMXP segments in `dir` (regular files starting with the DMXP magic; symbolic
/// links and other files are skipped, as are files this process cannot read and names with
/// control characters), in name order.
/// `kind` says how to name them: [`SegmentKind::Shm`] for `/dev/shm`.
///
/// Errors: [`ErrorKind::NotFound`] if `dir` does not exist; [`ErrorKind::Io`] if it cannot be
/// listed.
pub fn scan_dir(dir: &Path, kind: SegmentKind) -> Result<Vec<SegmentStatus>> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(e, "listing", dir))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        // A name with a control character is no segment any DMXP client makes (they refuse
        // such names), and printed it would forge lines of the listing.
        if dmxp_os::check_path(&path).is_err() {
            continue;
        }
        let name = match kind {
            SegmentKind::Shm => format!("/{}", entry.file_name().to_string_lossy()),
            SegmentKind::File => path.display().to_string(),
        };
        // Vanished or unreadable meanwhile: not provably a DMXP segment, so not listed.
        if let Ok(Some(examined)) = examine_path(&path, kind, name) {
            found.push(examined.status);
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Examines the shm object `name` (a leading `/` is optional).
///
/// Errors: [`ErrorKind::NotFound`] if it does not exist; [`ErrorKind::InvalidInput`] for a
/// name with an inner `/` or a control character; [`ErrorKind::Corrupt`] (`magic`) if it does not start with the DMXP
/// magic (or is still being created); [`ErrorKind::Io`] if it cannot be read.
pub fn examine_shm(name: &str) -> Result<SegmentStatus> {
    let bare = name.trim_start_matches('/');
    if dmxp_os::check_shm_name(&format!("/{bare}")).is_err() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{name:?} is not a shm segment name (one component, like /dmxp_alloc)"),
        ));
    }
    let path = Path::new(SHM_DIR).join(bare);
    examine_required(&path, SegmentKind::Shm, format!("/{bare}")).map(|e| e.status)
}

/// Examines the file segment at `path`. Errors as [`examine_shm`].
pub fn examine_file(path: &Path) -> Result<SegmentStatus> {
    examine_required(path, SegmentKind::File, path.display().to_string()).map(|e| e.status)
}

/// Examines the segment `status` describes again and removes it if it is still stale (and is
/// still the same file: one replaced meanwhile is left alone) and holds no undelivered
/// message, or `force` is set. Processes that have it mapped keep it; the name is gone for
/// new openers.
///
/// Errors: [`ErrorKind::NotFound`] if it no longer exists; [`ErrorKind::Io`] if it cannot be
/// read or removed (for example `PermissionDenied` on the directory).
pub fn remove_if_stale(status: &SegmentStatus, force: bool) -> Result<Removal> {
    let examined = examine_required(&status.path, status.kind, status.name.clone())?;
    if !examined.status.is_stale() {
        return Ok(Removal::Kept(examined.status.verdict));
    }
    if examined.status.queued > 0 && !force {
        return Ok(Removal::KeptQueued {
            queued: examined.status.queued,
        });
    }
    let now = std::fs::symlink_metadata(&status.path)
        .map_err(|e| io_error(e, "examining", &status.path))?;
    if (now.dev(), now.ino()) != examined.identity {
        return Ok(Removal::Kept(Verdict::Unknown {
            kind: ErrorKind::Busy,
            reason: format!("{} was replaced while being examined", status.name),
        }));
    }
    std::fs::remove_file(&status.path).map_err(|e| io_error(e, "removing", &status.path))?;
    Ok(Removal::Removed)
}

struct Examined {
    status: SegmentStatus,
    /// Device and inode of the file read, to check that a removal hits the same one.
    identity: (u64, u64),
}

/// [`examine_path`], with "not a DMXP segment" as an error.
fn examine_required(path: &Path, kind: SegmentKind, name: String) -> Result<Examined> {
    examine_path(path, kind, name.clone())?.ok_or_else(|| {
        Error::new(
            ErrorKind::Corrupt {
                field: "magic",
                channel: None,
            },
            format!("{name} does not hold a DMXP segment (no DMXP magic, or still being created)"),
        )
    })
}

/// Reads the segment at `path`: `Ok(None)` when it is not a regular file starting with the
/// DMXP magic.
fn examine_path(path: &Path, kind: SegmentKind, name: String) -> Result<Option<Examined>> {
    let file = File::open(path).map_err(|e| io_error(e, "opening", path))?;
    let meta = file
        .metadata()
        .map_err(|e| io_error(e, "examining", path))?;
    if !meta.is_file() {
        return Ok(None);
    }
    let size = meta.len();
    let mut bytes = Vec::with_capacity(HEADER_SIZE);
    (&file)
        .take(HEADER_SIZE as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(e, "reading", path))?;
    let Some(header) = header_fields(&bytes) else {
        return Ok(None);
    };
    if header.magic != MAGIC {
        return Ok(None);
    }
    let creator_alive = header.creator_pid != 0 && process_alive(header.creator_pid, 0);
    let (peers, verdict) = match read_peers(&file, &header, size, &bytes, &name) {
        Ok(peers) => {
            let live_peers = peers.iter().filter(|p| p.alive).count();
            let verdict = if live_peers == 0 && !creator_alive {
                Verdict::Stale
            } else {
                Verdict::InUse {
                    live_peers,
                    creator_alive,
                }
            };
            (peers, verdict)
        }
        Err(e) => (
            Vec::new(),
            Verdict::Unknown {
                kind: e.kind(),
                reason: e.to_string(),
            },
        ),
    };
    Ok(Some(Examined {
        status: SegmentStatus {
            kind,
            name,
            path: path.to_path_buf(),
            size,
            creator_pid: header.creator_pid,
            creator_alive,
            peers,
            queued: queued_messages(&bytes),
            verdict,
        },
        identity: (meta.dev(), meta.ino()),
    }))
}

/// Messages queued on the ready channels of the header copy `bytes` (a scribbled cursor
/// counts at most one ring's worth).
fn queued_messages(bytes: &[u8]) -> u64 {
    (0..MAX_CHANNELS)
        .map(channel_entry_offset)
        .filter(|&entry| entry + CHANNEL_ENTRY_SIZE <= bytes.len())
        .filter(|&entry| u32_at(bytes, entry + 24) == channel_state::READY)
        .map(|entry| {
            let capacity = u64_at(bytes, entry + 8);
            let depth = u64_at(bytes, entry + 128).wrapping_sub(u64_at(bytes, entry + 256));
            if (depth as i64) < 0 {
                0
            } else {
                depth.min(capacity)
            }
        })
        .fold(0u64, u64::saturating_add)
}

/// The peer records of a segment whose header copy is `bytes`, each judged alive or dead.
/// The header and the table's place are validated as the core does when it attaches (table in
/// range, overlapping no valid band); corrupt channel entries are ignored, as there.
fn read_peers(
    file: &File,
    header: &HeaderFields,
    size: u64,
    bytes: &[u8],
    name: &str,
) -> Result<Vec<PeerStatus>> {
    let core = |e: CoreError| Error::from_core(e, name);
    let segment_len = validate_header(header, size).map_err(core)?;
    let offset = header.peer_table_offset;
    if offset == 0 {
        return Ok(Vec::new());
    }
    if bytes.len() < HEADER_SIZE {
        // The object shrank after its size was read.
        return Err(Error::new(
            ErrorKind::Truncated {
                expected: HEADER_SIZE as u64,
                found: bytes.len() as u64,
            },
            format!(
                "{name}: only {} bytes of the header could be read",
                bytes.len()
            ),
        ));
    }
    let bands: Vec<_> = (0..MAX_CHANNELS)
        .filter_map(|id| {
            let entry = channel_entry(bytes, id)?;
            validate_entry(id as u32, &entry, segment_len)
                .ok()
                .flatten()
        })
        .collect();
    // Validated with the header above.
    let records = peer_records_of(header.peer_records).unwrap_or(PEER_RECORDS);
    check_peer_table_bands(offset, records, &bands).map_err(|c| core(c.into()))?;
    let mut table = vec![0u8; records * PEER_RECORD_SIZE];
    file.read_exact_at(&mut table, offset).map_err(|e| {
        Error::io(
            e,
            format!("{name}: reading the peer table at offset {offset}"),
        )
    })?;
    Ok(table
        .chunks_exact(PEER_RECORD_SIZE)
        .enumerate()
        .filter_map(|(index, raw)| {
            let record = peer_record(raw);
            (record.pid != 0).then(|| PeerStatus {
                info: PeerInfo { index, record },
                alive: crate::recovery::peer_alive(&record),
            })
        })
        .collect())
}

fn io_error(e: io::Error, doing: &str, path: &Path) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::new(
            ErrorKind::NotFound,
            format!("{} does not exist", path.display()),
        )
    } else {
        Error::io(e, format!("{doing} {}", path.display()))
    }
}

// Little-endian fields by offset (PROTOCOL.md §2); out-of-range reads give 0, never a panic.
fn u16_at(bytes: &[u8], at: usize) -> u16 {
    bytes
        .get(at..at + 2)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u16::from_le_bytes)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// The header fields (§2.2), or `None` if `bytes` is shorter than them.
fn header_fields(bytes: &[u8]) -> Option<HeaderFields> {
    if bytes.len() < 128 {
        return None;
    }
    Some(HeaderFields {
        magic: u64_at(bytes, 0),
        version: u32_at(bytes, 8),
        max_channels: u32_at(bytes, 12),
        channel_count: u32_at(bytes, 16),
        reserved: u32_at(bytes, 20),
        segment_size: u64_at(bytes, 24),
        band_cursor: u64_at(bytes, 32),
        creator_pid: u32_at(bytes, 40),
        header_flags: u32_at(bytes, 44),
        peer_table_offset: u64_at(bytes, 48),
        peer_records: u32_at(bytes, 56),
        reserved_60: 0,
        blob_pool_offset: u64_at(bytes, 64),
        extension: [0; 56],
    })
}

/// The fields of entry `id` that validation reads (§2.3); the rest are left zero.
fn channel_entry(bytes: &[u8], id: usize) -> Option<ChannelEntry> {
    let at = channel_entry_offset(id);
    bytes.get(at..at + 84)?;
    Some(ChannelEntry {
        channel_id: u32_at(bytes, at),
        flags: u32_at(bytes, at + 4),
        capacity: u64_at(bytes, at + 8),
        band_offset: u64_at(bytes, at + 16),
        state: u32_at(bytes, at + 24),
        creator_pid: u32_at(bytes, at + 28),
        not_empty_seq: 0,
        not_empty_waiters: 0,
        not_full_seq: 0,
        not_full_waiters: 0,
        stuck_receive_position: 0,
        stuck_receive_since_ns: 0,
        stuck_send_position: 0,
        stuck_send_since_ns: 0,
        max_message_size: u32_at(bytes, at + 80),
        extension: [0; 44],
        tail: 0,
        tail_pad: [0; 120],
        head: 0,
        head_pad: [0; 120],
    })
}

/// One 64-byte peer record (§11.2).
fn peer_record(raw: &[u8]) -> PeerRecord {
    PeerRecord {
        pid: u32_at(raw, 0),
        runtime: u16_at(raw, 4),
        role: u16_at(raw, 6),
        start_time: u64_at(raw, 8),
        channel_id: u32_at(raw, 16),
        intent_count: u32_at(raw, 20),
        intent_position: u64_at(raw, 24),
        pid_ns: u64_at(raw, 32),
        waiting: u32_at(raw, 40),
        intent_flags: u32_at(raw, 44),
        reserved: [0; 16],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_little_endian_at_their_offsets() {
        let mut bytes = vec![0u8; HEADER_SIZE];
        bytes[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        bytes[40..44].copy_from_slice(&77u32.to_le_bytes());
        bytes[48..56].copy_from_slice(&(1u64 << 20).to_le_bytes());
        let at = channel_entry_offset(3);
        bytes[at + 8..at + 16].copy_from_slice(&8u64.to_le_bytes());
        bytes[at + 24..at + 28].copy_from_slice(&2u32.to_le_bytes());
        let header = header_fields(&bytes).unwrap();
        assert_eq!(
            (header.magic, header.creator_pid, header.peer_table_offset),
            (MAGIC, 77, 1 << 20)
        );
        let entry = channel_entry(&bytes, 3).unwrap();
        assert_eq!((entry.capacity, entry.state), (8, 2));
        assert!(header_fields(&bytes[..127]).is_none());
        assert!(channel_entry(&bytes[..200], 3).is_none());

        let mut raw = [0u8; 64];
        raw[0..4].copy_from_slice(&9u32.to_le_bytes());
        raw[6..8].copy_from_slice(&2u16.to_le_bytes());
        raw[24..32].copy_from_slice(&5u64.to_le_bytes());
        let record = peer_record(&raw);
        assert_eq!((record.pid, record.role, record.intent_position), (9, 2, 5));
        // A short record reads as zeros past its end rather than panicking.
        assert_eq!(peer_record(&raw[..6]).role, 0);
    }

    #[test]
    fn shm_names_with_inner_slashes_are_refused() {
        for name in ["", "/", "/a/b", "../x"] {
            let err = examine_shm(name).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{name:?}");
        }
    }
}
