//! The version-1 wire layout (DESIGN.md §3, `docs/PROTOCOL.md`).
//!
//! Two families of types describe the same bytes:
//!
//! * **Plain mirrors** ([`HeaderFields`], [`GlobalHeader`], [`ChannelEntry`], [`Slot`],
//!   [`MessageMeta`], [`PeerRecord`]) hold ordinary integers. They are `Immutable` and are
//!   what the parser reads out of an untrusted `&[u8]` (always by copy, so the input need not
//!   be aligned), and what a snapshot of the live segment is copied into before validation.
//! * **Live views** ([`AtomicHeaderFields`], [`AtomicChannelEntry`], [`AtomicSlot`],
//!   [`AtomicMessageMeta`], [`AtomicPeerRecord`]) are made only of atomics, because another
//!   process may write any of their bytes at any time. They are reached through
//!   [`crate::Region`], never built from a `&[u8]`.
//!
//! Every offset and size below is a compile-time assertion.

use crate::sync::{AtomicU16, AtomicU32, AtomicU64};
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The segment magic, `0x444D58505F4D454D` (the ASCII of "DMXP_MEM" read as a big-endian
/// number; stored little-endian, so the bytes at offset 0 are `4D 45 4D 5F 50 58 4D 44`).
pub const MAGIC: u64 = 0x444D_5850_5F4D_454D;
/// The layout version this crate reads and writes.
pub const VERSION: u32 = 1;
/// Entries in the channel table.
pub const MAX_CHANNELS: usize = 256;
/// Offset of the channel table from the segment start.
pub const CHANNEL_TABLE_OFFSET: usize = 128;
/// Size of one channel entry.
pub const CHANNEL_ENTRY_SIZE: usize = 384;
/// Size of the global header including the channel table; the first band may start here.
pub const HEADER_SIZE: usize = CHANNEL_TABLE_OFFSET + MAX_CHANNELS * CHANNEL_ENTRY_SIZE;
/// Stride of the slots in a band.
pub const SLOT_SIZE: usize = 1088;
/// Alignment a band (and so every slot) must have.
pub const SLOT_ALIGN: usize = 64;
/// Offset of the payload inside a slot.
pub const PAYLOAD_OFFSET: usize = 64;
/// Largest payload a slot holds (`MSG_INLINE`).
pub const MSG_INLINE: usize = 960;
/// The payload area in 64-bit words; payload copies move whole words.
pub const PAYLOAD_WORDS: usize = MSG_INLINE / 8;
/// Smallest capacity: with one slot, "published at position p" (sequence p + 1) and "free for
/// position p + 1" would be the same sequence value, so a sender would overwrite an unread
/// message.
pub const MIN_CAPACITY: u64 = 2;
/// Largest capacity this implementation creates or accepts: 2³² slots.
pub const MAX_CAPACITY: u64 = 1 << 32;
/// Alignment of the segment base.
pub const SEGMENT_ALIGN: usize = 128;
/// Records in the peer table of a segment whose header's `peer_records` is 0, and the fewest
/// a segment may ask for (PROTOCOL.md §11.1): a client that predates the field sees the first
/// 256 records of any table, never more than there are.
pub const PEER_RECORDS: usize = 256;
/// Most records a peer table may have: 256 channels × 64 handles (a 1 MiB table).
pub const MAX_PEER_RECORDS: usize = 16_384;
/// Size (and alignment) of one peer record.
pub const PEER_RECORD_SIZE: usize = 64;
/// Bytes of a default peer table (256 records), carved from the band area like a band.
pub const PEER_TABLE_SIZE: usize = PEER_RECORDS * PEER_RECORD_SIZE;

/// Records of a peer table whose header says `peer_records` (PROTOCOL.md §2.2): 0 means
/// [`PEER_RECORDS`]; `None` for a value no creator may write (below 256 or above
/// [`MAX_PEER_RECORDS`]).
///
/// ```
/// use dmxp_nostd::layout::{peer_records_of, PEER_RECORDS};
/// assert_eq!(peer_records_of(0), Some(PEER_RECORDS));
/// assert_eq!(peer_records_of(1024), Some(1024));
/// assert_eq!(peer_records_of(100), None);
/// assert_eq!(peer_records_of(20_000), None);
/// ```
#[must_use]
pub const fn peer_records_of(field: u32) -> Option<usize> {
    match field as usize {
        0 => Some(PEER_RECORDS),
        n if n >= PEER_RECORDS && n <= MAX_PEER_RECORDS => Some(n),
        _ => None,
    }
}

/// Offset of channel entry `id` from the segment start.
#[must_use]
pub const fn channel_entry_offset(id: usize) -> usize {
    CHANNEL_TABLE_OFFSET + id * CHANNEL_ENTRY_SIZE
}

/// Bytes a band of `capacity` slots occupies, or `None` if that overflows.
#[must_use]
pub const fn band_len(capacity: u64) -> Option<u64> {
    capacity.checked_mul(SLOT_SIZE as u64)
}

/// Values of [`ChannelEntry::state`], the word that serialises channel creation.
pub mod channel_state {
    /// Never created: `capacity` is 0.
    pub const EMPTY: u32 = 0;
    /// A creator won the claim and is initialising the entry and its band.
    pub const CREATING: u32 = 1;
    /// Fully created; `capacity` is (or is about to be) non-zero.
    pub const READY: u32 = 2;
}

/// Bits of [`MessageMeta::flags`].
pub mod message_flags {
    /// The slot carries no message (a loan dropped without commit). Consumers free it and go on.
    pub const SKIP: u16 = 0x0001;
    /// Tombstone written in place of a message whose producer died mid-send.
    pub const LOST: u16 = 0x0002;
    /// The slot starts a message longer than one slot: a run (PROTOCOL.md §12.2).
    pub const RUN: u16 = 0x0004;
    /// The slot continues a run.
    pub const RUN_CONT: u16 = 0x0008;
    /// The payload is a 16-byte reference to a blob-pool block (PROTOCOL.md §13.4); only on
    /// channels with [`super::channel_flags::BLOBS`].
    pub const BLOB: u16 = 0x0010;
    /// Bits the protocol owns; a sender may not set them through the ordinary send path.
    pub const PROTOCOL_MASK: u16 = 0x00FF;
    /// Bits left to applications.
    pub const APPLICATION_MASK: u16 = 0xFF00;
}

/// Bits of [`ChannelEntry::flags`] (PROTOCOL.md §12.1).
pub mod channel_flags {
    /// The channel may carry messages longer than one slot, up to its `max_message_size`.
    pub const RUNS: u32 = 0x1;
    /// The channel may carry references to blocks of the segment's blob pool (PROTOCOL.md
    /// §13.1); the segment must have a pool.
    pub const BLOBS: u32 = 0x2;
    /// Every bit a version-1 client knows.
    pub const KNOWN: u32 = RUNS | BLOBS;
}

/// Bits of [`PeerRecord::intent_flags`] (PROTOCOL.md §12.5).
pub mod intent_flags {
    /// The intent is one run of exactly `intent_count` positions.
    pub const RUN: u32 = 0x1;
}

/// Values of [`PeerRecord::role`].
pub mod peer_role {
    /// The record belongs to a producer handle; its intents name `tail` positions.
    pub const PRODUCER: u16 = 1;
    /// The record belongs to a consumer handle; its intents name `head` positions.
    pub const CONSUMER: u16 = 2;
}

/// Values of [`PeerRecord::waiting`] (PROTOCOL.md §11.9).
pub mod peer_waiting {
    /// The owner is not counted in any wait count.
    pub const NONE: u32 = 0;
    /// The owner is counted in its channel's `not_empty_waiters` (a blocked receive).
    pub const NOT_EMPTY: u32 = 1;
    /// The owner is counted in its channel's `not_full_waiters` (a blocked send).
    pub const NOT_FULL: u32 = 2;
}

/// Values of [`MessageMeta::sender_runtime`] and [`PeerRecord::runtime`]: which client
/// implementation wrote the message or owns the record (PROTOCOL.md §8). Unknown codes are
/// displayed as unknown, never rejected.
pub mod runtime {
    /// Not recorded (a client that does not fill the field, or a repair's tombstone).
    pub const UNKNOWN: u16 = 0;
    /// The Rust crates (`dmxp`, `dmxp-nostd`).
    pub const RUST: u16 = 1;
    /// The C binding (and C++).
    pub const C: u16 = 2;
    /// The Python binding.
    pub const PYTHON: u16 = 3;
    /// The Go client.
    pub const GO: u16 = 4;
}

// ---------------------------------------------------------------------------------------------
// Plain mirrors
// ---------------------------------------------------------------------------------------------

/// The first 128 bytes of the segment (PROTOCOL.md §2.2).
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(128))]
pub struct HeaderFields {
    /// Offset 0: [`MAGIC`] once the segment is formatted; 0 while it is being created. Stored
    /// last (release) by the creator, loaded first (acquire) by attachers.
    pub magic: u64,
    /// Offset 8: the layout version, [`VERSION`].
    pub version: u32,
    /// Offset 12: entries in the channel table, [`MAX_CHANNELS`] (256).
    pub max_channels: u32,
    /// Offset 16: channels created so far. Informational: to find the channels, scan all
    /// 256 entries.
    pub channel_count: u32,
    /// Offset 20: zero in version 1.
    pub reserved: u32,
    /// Extension (offset 24): the segment size the creator formatted; 0 = not recorded
    /// (older clients: validate against the bytes mapped).
    pub segment_size: u64,
    /// Extension (offset 32): byte offset where the next band will be carved; starts at
    /// [`HEADER_SIZE`]; 0 = no band allocator (older clients).
    pub band_cursor: u64,
    /// Extension (offset 40): pid of the process that formatted the segment.
    pub creator_pid: u32,
    /// Extension (offset 44): zero in version 1.
    pub header_flags: u32,
    /// Extension (offset 48): offset of the peer table (PROTOCOL.md §11); 0 = none yet.
    pub peer_table_offset: u64,
    /// Extension (offset 56): records in the peer table; 0 = [`PEER_RECORDS`] (§11.1).
    pub peer_records: u32,
    /// Extension (offsets 60..64): zero in version 1.
    pub reserved_60: u32,
    /// Extension (offset 64): offset of the blob pool (PROTOCOL.md §13); 0 = no pool.
    /// Written by the creator before `magic`, never changed.
    pub blob_pool_offset: u64,
    /// Extension (offsets 72..128): zero in version 1.
    pub extension: [u8; 56],
}

/// One entry of the channel table (PROTOCOL.md §2.3); entry `id` lies at
/// [`channel_entry_offset`]`(id)`.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(128))]
pub struct ChannelEntry {
    /// Offset 0: equals the entry's index once the channel is created.
    pub channel_id: u32,
    /// Offset 4: channel options ([`channel_flags`]); 0 for a channel of single-slot messages.
    pub flags: u32,
    /// Offset 8: slots in the ring (a power of two, [`MIN_CAPACITY`] to [`MAX_CAPACITY`]);
    /// **0 = the channel does not exist**. Stored last (release) by the creator.
    pub capacity: u64,
    /// Offset 16: offset of slot 0 from the segment start; a multiple of [`SLOT_ALIGN`].
    pub band_offset: u64,
    /// Extension (offset 24): [`channel_state`].
    pub state: u32,
    /// Extension (offset 28): pid of the creator.
    pub creator_pid: u32,
    /// Extension (offset 32): futex word consumers sleep on; bumped when a message is published.
    pub not_empty_seq: u32,
    /// Extension (offset 36): consumers currently asleep (or about to sleep) on `not_empty_seq`.
    pub not_empty_waiters: u32,
    /// Extension (offset 40): futex word producers sleep on; bumped when a slot is freed.
    pub not_full_seq: u32,
    /// Extension (offset 44): producers currently asleep (or about to sleep) on `not_full_seq`.
    pub not_full_waiters: u32,
    /// Extension (offset 48): the position receives last found stuck (claimed, not
    /// published) for at least `STUCK_GRACE`; informational (PROTOCOL.md §11.8).
    pub stuck_receive_position: u64,
    /// Extension (offset 56): when a receiver first saw it stuck, `CLOCK_MONOTONIC`
    /// nanoseconds; 0 = nothing recorded.
    pub stuck_receive_since_ns: u64,
    /// Extension (offset 64): the position sends last found stuck (claimed by a consumer,
    /// not freed), as `stuck_receive_position`.
    pub stuck_send_position: u64,
    /// Extension (offset 72): when a sender first saw it stuck; 0 = nothing recorded.
    pub stuck_send_since_ns: u64,
    /// Extension (offset 80): with [`channel_flags::RUNS`], the largest message in bytes
    /// (PROTOCOL.md §12.1); 0 otherwise.
    pub max_message_size: u32,
    /// Extension (offsets 84..128): zero in version 1.
    pub extension: [u8; 44],
    /// Offset 128: the producer cursor, the next position to send. Producers move it only by
    /// CAS (PROTOCOL.md §1.2).
    pub tail: u64,
    /// Offsets 136..256: zero; keeps `tail` alone on its 128 bytes (no false sharing with
    /// `head`).
    pub tail_pad: [u8; 120],
    /// Offset 256: the consumer cursor, the next position to receive. Consumers move it only
    /// by CAS.
    pub head: u64,
    /// Offsets 264..384: zero; keeps `head` alone on its 128 bytes.
    pub head_pad: [u8; 120],
}

/// The whole global header: fields followed by the channel table ([`HEADER_SIZE`] bytes).
///
/// Its `Debug` shows the fields and only the entries of created channels (non-zero
/// `capacity`), not all 256.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(128))]
pub struct GlobalHeader {
    /// Offsets 0..128: the header fields.
    pub fields: HeaderFields,
    /// Offsets 128..98,432: the channel table, entry `id` at `128 + id × 384`.
    pub channels: [ChannelEntry; MAX_CHANNELS],
}

impl core::fmt::Debug for GlobalHeader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        struct Created<'a>(&'a [ChannelEntry]);
        impl core::fmt::Debug for Created<'_> {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_map()
                    .entries(
                        self.0
                            .iter()
                            .enumerate()
                            .filter(|(_, entry)| entry.capacity != 0),
                    )
                    .finish()
            }
        }
        f.debug_struct("GlobalHeader")
            .field("fields", &self.fields)
            .field("channels", &Created(&self.channels))
            .finish()
    }
}

/// Metadata stored with each message (PROTOCOL.md §2.5, §8), at slot offset 8. Offsets below
/// are within the meta.
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C, align(8))]
pub struct MessageMeta {
    /// Offset 0: the position the message was sent at: unique and increasing per channel.
    pub message_id: u64,
    /// Offset 8: CLOCK_MONOTONIC nanoseconds at send, or 0 when the sender has no clock.
    pub timestamp_ns: u64,
    /// Offset 16: the channel the message was sent on.
    pub channel_id: u32,
    /// Offset 20: application-defined.
    pub message_type: u32,
    /// Offset 24: the sender's process id; 0 = unknown (and in markers). A LOST tombstone
    /// names the dead producer here.
    pub sender_pid: u32,
    /// Offset 28: one of [`runtime`].
    pub sender_runtime: u16,
    /// Offset 30: [`message_flags`].
    pub flags: u16,
    /// Offset 32: payload bytes in the slot, at most [`MSG_INLINE`] (960); a larger value is
    /// corruption and the message is dropped.
    pub payload_len: u32,
    /// Offset 36: zero in version 1.
    pub reserved: u32,
}

/// One record of the peer table (PROTOCOL.md §11.2): a producer or consumer handle, its
/// process, and the positions it is about to own (its intent).
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(C, align(64))]
pub struct PeerRecord {
    /// Owner's process id; 0 = free record.
    pub pid: u32,
    /// Owner's `sender_runtime` code ([`runtime`]).
    pub runtime: u16,
    /// [`peer_role`].
    pub role: u16,
    /// Owner's process start time (Linux: field 22 of `/proc/<pid>/stat`); 0 = unknown.
    pub start_time: u64,
    /// The channel this record's intents refer to.
    pub channel_id: u32,
    /// Positions the owner may own; 0 = no intent.
    pub intent_count: u32,
    /// First position of the intent.
    pub intent_position: u64,
    /// Inode of the owner's pid namespace (PROTOCOL.md §11.5); 0 = unknown.
    pub pid_ns: u64,
    /// The wait count of `channel_id` the owner is counted in ([`peer_waiting`]).
    pub waiting: u32,
    /// The kind of intent ([`intent_flags`]): whether it is one run (PROTOCOL.md §12.5).
    pub intent_flags: u32,
    /// Offsets 48..64: zero in version 1.
    pub reserved: [u8; 16],
}

/// One ring slot (PROTOCOL.md §2.4): slot `i` of a channel lies at
/// `band_offset + i × SLOT_SIZE`.
///
/// Its `Debug` shows `sequence` and `meta` (which gives the payload's length), never the
/// payload bytes.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(64))]
pub struct Slot {
    /// Offset 0: whose turn it is (PROTOCOL.md §6): `p` = free for the producer of position
    /// `p`; `p + 1` = holds the message of position `p`.
    pub sequence: u64,
    /// Offsets 8..48: the message's metadata.
    pub meta: MessageMeta,
    /// Offset 48: in a slot of a run, the positions of the run (PROTOCOL.md §12.2);
    /// meaningful only with [`message_flags::RUN`] or [`message_flags::RUN_CONT`].
    pub run_slots: u32,
    /// Offset 52: in a slot of a run, its place in the run (0 for the first).
    pub run_index: u32,
    /// Offsets 56..64: zero.
    pub padding: [u8; 8],
    /// Offsets 64..1024: the payload; its first `meta.payload_len` bytes are the message.
    pub payload: [u8; MSG_INLINE],
    /// Offsets 1024..1088: zero.
    pub reserved: [u8; 64],
}

impl core::fmt::Debug for Slot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Slot")
            .field("sequence", &self.sequence)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

const_assert_eq!(HEADER_SIZE, 98_432);
const_assert_eq!(core::mem::size_of::<HeaderFields>(), 128);
const_assert_eq!(core::mem::size_of::<GlobalHeader>(), HEADER_SIZE);
const_assert_eq!(core::mem::align_of::<GlobalHeader>(), 128);
const_assert_eq!(core::mem::offset_of!(HeaderFields, magic), 0);
const_assert_eq!(core::mem::offset_of!(HeaderFields, version), 8);
const_assert_eq!(core::mem::offset_of!(HeaderFields, max_channels), 12);
const_assert_eq!(core::mem::offset_of!(HeaderFields, channel_count), 16);
const_assert_eq!(core::mem::offset_of!(HeaderFields, reserved), 20);
const_assert_eq!(core::mem::offset_of!(HeaderFields, segment_size), 24);
const_assert_eq!(core::mem::offset_of!(HeaderFields, band_cursor), 32);
const_assert_eq!(core::mem::offset_of!(HeaderFields, creator_pid), 40);
const_assert_eq!(core::mem::offset_of!(HeaderFields, header_flags), 44);
const_assert_eq!(core::mem::offset_of!(HeaderFields, peer_table_offset), 48);
const_assert_eq!(core::mem::offset_of!(HeaderFields, peer_records), 56);
const_assert_eq!(core::mem::offset_of!(HeaderFields, reserved_60), 60);
const_assert_eq!(core::mem::offset_of!(HeaderFields, blob_pool_offset), 64);
const_assert_eq!(core::mem::offset_of!(HeaderFields, extension), 72);
const_assert_eq!(
    core::mem::offset_of!(GlobalHeader, channels),
    CHANNEL_TABLE_OFFSET
);

const_assert_eq!(core::mem::size_of::<ChannelEntry>(), CHANNEL_ENTRY_SIZE);
const_assert_eq!(core::mem::align_of::<ChannelEntry>(), 128);
const_assert_eq!(core::mem::offset_of!(ChannelEntry, channel_id), 0);
const_assert_eq!(core::mem::offset_of!(ChannelEntry, flags), 4);
const_assert_eq!(core::mem::offset_of!(ChannelEntry, capacity), 8);
const_assert_eq!(core::mem::offset_of!(ChannelEntry, band_offset), 16);
const_assert_eq!(core::mem::offset_of!(ChannelEntry, state), 24);
const_assert_eq!(core::mem::offset_of!(ChannelEntry, creator_pid), 28);
const_assert_eq!(core::mem::offset_of!(ChannelEntry, not_empty_seq), 32);
const_assert_eq!(core::mem::offset_of!(ChannelEntry, not_empty_waiters), 36);
const_assert_eq!(core::mem::offset_of!(ChannelEntry, not_full_seq), 40);
const_assert_eq!(core::mem::offset_of!(ChannelEntry, not_full_waiters), 44);
const_assert_eq!(
    core::mem::offset_of!(ChannelEntry, stuck_receive_position),
    48
);
const_assert_eq!(
    core::mem::offset_of!(ChannelEntry, stuck_receive_since_ns),
    56
);
const_assert_eq!(core::mem::offset_of!(ChannelEntry, stuck_send_position), 64);
const_assert_eq!(core::mem::offset_of!(ChannelEntry, stuck_send_since_ns), 72);
const_assert_eq!(core::mem::offset_of!(ChannelEntry, max_message_size), 80);
const_assert_eq!(core::mem::offset_of!(ChannelEntry, extension), 84);
const_assert_eq!(core::mem::offset_of!(ChannelEntry, tail), 128);
const_assert_eq!(core::mem::offset_of!(ChannelEntry, head), 256);

const_assert_eq!(core::mem::size_of::<MessageMeta>(), 40);
const_assert_eq!(core::mem::align_of::<MessageMeta>(), 8);
const_assert_eq!(core::mem::offset_of!(MessageMeta, message_id), 0);
const_assert_eq!(core::mem::offset_of!(MessageMeta, timestamp_ns), 8);
const_assert_eq!(core::mem::offset_of!(MessageMeta, channel_id), 16);
const_assert_eq!(core::mem::offset_of!(MessageMeta, message_type), 20);
const_assert_eq!(core::mem::offset_of!(MessageMeta, sender_pid), 24);
const_assert_eq!(core::mem::offset_of!(MessageMeta, sender_runtime), 28);
const_assert_eq!(core::mem::offset_of!(MessageMeta, flags), 30);
const_assert_eq!(core::mem::offset_of!(MessageMeta, payload_len), 32);
const_assert_eq!(core::mem::offset_of!(MessageMeta, reserved), 36);

const_assert_eq!(core::mem::size_of::<PeerRecord>(), PEER_RECORD_SIZE);
const_assert_eq!(core::mem::align_of::<PeerRecord>(), PEER_RECORD_SIZE);
const_assert_eq!(core::mem::offset_of!(PeerRecord, pid), 0);
const_assert_eq!(core::mem::offset_of!(PeerRecord, runtime), 4);
const_assert_eq!(core::mem::offset_of!(PeerRecord, role), 6);
const_assert_eq!(core::mem::offset_of!(PeerRecord, start_time), 8);
const_assert_eq!(core::mem::offset_of!(PeerRecord, channel_id), 16);
const_assert_eq!(core::mem::offset_of!(PeerRecord, intent_count), 20);
const_assert_eq!(core::mem::offset_of!(PeerRecord, intent_position), 24);
const_assert_eq!(core::mem::offset_of!(PeerRecord, pid_ns), 32);
const_assert_eq!(core::mem::offset_of!(PeerRecord, waiting), 40);
const_assert_eq!(core::mem::offset_of!(PeerRecord, intent_flags), 44);
const_assert_eq!(core::mem::offset_of!(PeerRecord, reserved), 48);
const_assert_eq!(PEER_TABLE_SIZE, 16_384);
const_assert_eq!(PEER_TABLE_SIZE % SLOT_ALIGN, 0);

const_assert_eq!(core::mem::size_of::<Slot>(), SLOT_SIZE);
const_assert_eq!(core::mem::align_of::<Slot>(), SLOT_ALIGN);
const_assert_eq!(core::mem::offset_of!(Slot, sequence), 0);
const_assert_eq!(core::mem::offset_of!(Slot, meta), 8);
const_assert_eq!(core::mem::offset_of!(Slot, run_slots), 48);
const_assert_eq!(core::mem::offset_of!(Slot, run_index), 52);
const_assert_eq!(core::mem::offset_of!(Slot, padding), 56);
const_assert_eq!(core::mem::offset_of!(Slot, payload), PAYLOAD_OFFSET);
const_assert_eq!(core::mem::offset_of!(Slot, reserved), 1024);

// ---------------------------------------------------------------------------------------------
// Live views: every byte is inside an atomic.
// ---------------------------------------------------------------------------------------------

/// Bytes the protocol does not use, held as 64-bit atomic words (one atomic per byte would
/// make every reference to an entry far costlier to check under Miri).
#[cfg(not(loom))]
pub type Reserved<const WORDS: usize> = [AtomicU64; WORDS];
/// Under loom the reserved bytes are never touched; plain bytes keep the model small.
#[cfg(loom)]
pub type Reserved<const WORDS: usize> = [u64; WORDS];

/// `Debug` for a live view: the named fields (each a relaxed load), not the reserved bytes.
macro_rules! debug_live_fields {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl core::fmt::Debug for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        }
    };
}

/// Live view of [`HeaderFields`]; each field's meaning is documented there. Every field the
/// creator writes is stored before `magic` (release) and read after it (acquire).
///
/// Its `Debug` shows the named fields (relaxed loads), not the zero bytes.
#[cfg_attr(not(loom), derive(FromBytes, KnownLayout))]
#[repr(C, align(128))]
pub struct AtomicHeaderFields {
    /// Offset 0: [`HeaderFields::magic`]; stored last with release, loaded first with acquire.
    pub magic: AtomicU64,
    /// Offset 8: [`HeaderFields::version`].
    pub version: AtomicU32,
    /// Offset 12: [`HeaderFields::max_channels`].
    pub max_channels: AtomicU32,
    /// Offset 16: [`HeaderFields::channel_count`]; `fetch_add(1)` by each channel creator.
    pub channel_count: AtomicU32,
    /// Offset 20: [`HeaderFields::reserved`], zero.
    pub reserved: AtomicU32,
    /// Offset 24: [`HeaderFields::segment_size`].
    pub segment_size: AtomicU64,
    /// Offset 32: [`HeaderFields::band_cursor`]; advanced by CAS when a band is carved.
    pub band_cursor: AtomicU64,
    /// Offset 40: [`HeaderFields::creator_pid`]; stored first, so an attacher that finds
    /// `magic` 0 can tell who is formatting (PROTOCOL.md §3.3).
    pub creator_pid: AtomicU32,
    /// Offset 44: [`HeaderFields::header_flags`], zero in version 1.
    pub header_flags: AtomicU32,
    /// Offset 48: [`HeaderFields::peer_table_offset`]; installed once by CAS from 0
    /// (PROTOCOL.md §11.1).
    pub peer_table_offset: AtomicU64,
    /// Offset 56: [`HeaderFields::peer_records`]; read once per attachment.
    pub peer_records: AtomicU32,
    /// Offsets 60..64, zero.
    pub reserved_60: AtomicU32,
    /// Offset 64: [`HeaderFields::blob_pool_offset`]; read once per attachment.
    pub blob_pool_offset: AtomicU64,
    /// Offsets 72..128, zero.
    pub extension: Reserved<7>,
}

debug_live_fields!(AtomicHeaderFields {
    magic,
    version,
    max_channels,
    channel_count,
    segment_size,
    band_cursor,
    creator_pid,
    header_flags,
    peer_table_offset,
    peer_records,
    blob_pool_offset,
});

/// Live view of [`ChannelEntry`]; each field's meaning is documented there. The creator
/// stores every other field before `capacity` (release); readers load `capacity` (acquire)
/// first.
///
/// Its `Debug` shows the named fields (relaxed loads), not the zero bytes.
#[cfg_attr(not(loom), derive(FromBytes, KnownLayout))]
#[repr(C, align(128))]
pub struct AtomicChannelEntry {
    /// Offset 0: [`ChannelEntry::channel_id`].
    pub channel_id: AtomicU32,
    /// Offset 4: [`ChannelEntry::flags`] ([`channel_flags`]).
    pub flags: AtomicU32,
    /// Offset 8: [`ChannelEntry::capacity`]; 0 = no channel. Stored last with release.
    pub capacity: AtomicU64,
    /// Offset 16: [`ChannelEntry::band_offset`].
    pub band_offset: AtomicU64,
    /// Offset 24: [`ChannelEntry::state`] ([`channel_state`]); CAS EMPTY → CREATING claims
    /// the entry, a release store of READY ends the creation.
    pub state: AtomicU32,
    /// Offset 28: [`ChannelEntry::creator_pid`].
    pub creator_pid: AtomicU32,
    /// Offset 32: the futex word receivers sleep on; bumped (release) by a sender after it
    /// publishes, when `not_empty_waiters` is non-zero (PROTOCOL.md §7).
    pub not_empty_seq: AtomicU32,
    /// Offset 36: receivers registered as waiting on `not_empty_seq` (seq-cst add/sub).
    pub not_empty_waiters: AtomicU32,
    /// Offset 40: the futex word senders sleep on; bumped by a receiver after it frees a
    /// slot, when `not_full_waiters` is non-zero.
    pub not_full_seq: AtomicU32,
    /// Offset 44: senders registered as waiting on `not_full_seq`.
    pub not_full_waiters: AtomicU32,
    /// Offset 48: [`ChannelEntry::stuck_receive_position`] (informational, PROTOCOL.md §11.8).
    pub stuck_receive_position: AtomicU64,
    /// Offset 56: [`ChannelEntry::stuck_receive_since_ns`]; 0 = nothing noted.
    pub stuck_receive_since_ns: AtomicU64,
    /// Offset 64: [`ChannelEntry::stuck_send_position`] (informational).
    pub stuck_send_position: AtomicU64,
    /// Offset 72: [`ChannelEntry::stuck_send_since_ns`]; 0 = nothing noted.
    pub stuck_send_since_ns: AtomicU64,
    /// Offset 80: [`ChannelEntry::max_message_size`].
    pub max_message_size: AtomicU32,
    /// Offsets 84..88, zero.
    pub extension_word: AtomicU32,
    /// Offsets 88..128, zero.
    pub extension: Reserved<5>,
    /// Offset 128: the producer cursor (next position to send). Producers move it only by
    /// CAS (release on success); plain stores are for its creator (0, before the channel is
    /// published) and for an operator's [`Channel::reset`](crate::Channel::reset) of an idle
    /// channel.
    pub tail: AtomicU64,
    /// Offsets 136..256, zero: keeps `tail` alone on its 128 bytes.
    pub tail_pad: Reserved<15>,
    /// Offset 256: the consumer cursor (next position to receive). Consumers move it only by
    /// CAS, as producers move `tail`.
    pub head: AtomicU64,
    /// Offsets 264..384, zero: keeps `head` alone on its 128 bytes.
    pub head_pad: Reserved<15>,
}

debug_live_fields!(AtomicChannelEntry {
    channel_id,
    flags,
    capacity,
    band_offset,
    state,
    creator_pid,
    not_empty_seq,
    not_empty_waiters,
    not_full_seq,
    not_full_waiters,
    stuck_receive_position,
    stuck_receive_since_ns,
    stuck_send_position,
    stuck_send_since_ns,
    max_message_size,
    tail,
    head,
});

/// Live view of [`MessageMeta`]; each field's meaning is documented there (offsets within
/// the meta, which starts at slot offset 8). Accessed only by the process holding the slot's
/// claim, with relaxed loads and stores between the `sequence` acquire and release.
///
/// Its `Debug` shows the named fields (relaxed loads).
#[cfg_attr(not(loom), derive(FromBytes, KnownLayout))]
#[repr(C, align(8))]
pub struct AtomicMessageMeta {
    /// Offset 0: [`MessageMeta::message_id`].
    pub message_id: AtomicU64,
    /// Offset 8: [`MessageMeta::timestamp_ns`].
    pub timestamp_ns: AtomicU64,
    /// Offset 16: [`MessageMeta::channel_id`].
    pub channel_id: AtomicU32,
    /// Offset 20: [`MessageMeta::message_type`].
    pub message_type: AtomicU32,
    /// Offset 24: [`MessageMeta::sender_pid`].
    pub sender_pid: AtomicU32,
    /// Offset 28: [`MessageMeta::sender_runtime`].
    pub sender_runtime: AtomicU16,
    /// Offset 30: [`MessageMeta::flags`].
    pub flags: AtomicU16,
    /// Offset 32: [`MessageMeta::payload_len`]; untrusted, checked against 960 on receipt.
    pub payload_len: AtomicU32,
    /// Offset 36: zero.
    pub reserved: AtomicU32,
}

debug_live_fields!(AtomicMessageMeta {
    message_id,
    timestamp_ns,
    channel_id,
    message_type,
    sender_pid,
    sender_runtime,
    flags,
    payload_len,
});

/// Live view of [`PeerRecord`]; each field's meaning is documented there (PROTOCOL.md
/// §11.2, §11.3 for the order in which they are written).
///
/// Its `Debug` shows the named fields (relaxed loads), not the zero bytes.
#[cfg_attr(not(loom), derive(FromBytes, KnownLayout))]
#[repr(C, align(64))]
pub struct AtomicPeerRecord {
    /// Offset 0: [`PeerRecord::pid`]; taken by CAS from 0 (acquire), given back by setting it
    /// to 0 with release, after the other fields.
    pub pid: AtomicU32,
    /// Offset 4: [`PeerRecord::runtime`].
    pub runtime: AtomicU16,
    /// Offset 6: [`PeerRecord::role`] ([`peer_role`]).
    pub role: AtomicU16,
    /// Offset 8: [`PeerRecord::start_time`]; stored last when registering, zeroed before
    /// `pid` when leaving.
    pub start_time: AtomicU64,
    /// Offset 16: [`PeerRecord::channel_id`].
    pub channel_id: AtomicU32,
    /// Offset 20: [`PeerRecord::intent_count`]; stored with release after
    /// `intent_position` (PROTOCOL.md §11.4).
    pub intent_count: AtomicU32,
    /// Offset 24: [`PeerRecord::intent_position`].
    pub intent_position: AtomicU64,
    /// Offset 32: [`PeerRecord::pid_ns`].
    pub pid_ns: AtomicU64,
    /// Offset 40: [`PeerRecord::waiting`] ([`peer_waiting`]).
    pub waiting: AtomicU32,
    /// Offset 44: [`PeerRecord::intent_flags`] ([`intent_flags`]).
    pub intent_flags: AtomicU32,
    /// Offsets 48..64, zero.
    pub reserved: Reserved<2>,
}

debug_live_fields!(AtomicPeerRecord {
    pid,
    runtime,
    role,
    start_time,
    channel_id,
    intent_count,
    intent_position,
    pid_ns,
    waiting,
    intent_flags,
});

/// Live view of [`Slot`]. The payload is held as 64-bit words so that copies are word-sized
/// relaxed atomic accesses.
///
/// Its `Debug` shows `sequence` and `meta`, never the payload words.
#[cfg_attr(not(loom), derive(FromBytes, KnownLayout))]
#[repr(C, align(64))]
pub struct AtomicSlot {
    /// Offset 0: [`Slot::sequence`]; stored with release (publish, free), loaded with
    /// acquire before a claim.
    pub sequence: AtomicU64,
    /// Offsets 8..48: the message's metadata.
    pub meta: AtomicMessageMeta,
    /// Offset 48: [`Slot::run_slots`].
    pub run_slots: AtomicU32,
    /// Offset 52: [`Slot::run_index`].
    pub run_index: AtomicU32,
    /// Offsets 56..64, zero.
    pub padding: Reserved<1>,
    /// Offsets 64..1024: the payload as [`PAYLOAD_WORDS`] little-endian 64-bit words, copied
    /// with relaxed atomic loads and stores.
    pub payload: [AtomicU64; PAYLOAD_WORDS],
    /// Offsets 1024..1088, zero.
    pub reserved: Reserved<8>,
}

debug_live_fields!(AtomicSlot { sequence, meta });

#[cfg(not(loom))]
mod live_layout_assertions {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    const_assert_eq!(size_of::<AtomicHeaderFields>(), size_of::<HeaderFields>());
    const_assert_eq!(offset_of!(AtomicHeaderFields, segment_size), 24);
    const_assert_eq!(offset_of!(AtomicHeaderFields, band_cursor), 32);
    const_assert_eq!(offset_of!(AtomicHeaderFields, creator_pid), 40);
    const_assert_eq!(offset_of!(AtomicHeaderFields, peer_table_offset), 48);
    const_assert_eq!(offset_of!(AtomicHeaderFields, peer_records), 56);
    const_assert_eq!(offset_of!(AtomicHeaderFields, reserved_60), 60);
    const_assert_eq!(offset_of!(AtomicHeaderFields, blob_pool_offset), 64);
    const_assert_eq!(offset_of!(AtomicHeaderFields, extension), 72);

    const_assert_eq!(size_of::<AtomicPeerRecord>(), PEER_RECORD_SIZE);
    const_assert_eq!(align_of::<AtomicPeerRecord>(), PEER_RECORD_SIZE);
    const_assert_eq!(offset_of!(AtomicPeerRecord, pid), 0);
    const_assert_eq!(offset_of!(AtomicPeerRecord, runtime), 4);
    const_assert_eq!(offset_of!(AtomicPeerRecord, role), 6);
    const_assert_eq!(offset_of!(AtomicPeerRecord, start_time), 8);
    const_assert_eq!(offset_of!(AtomicPeerRecord, channel_id), 16);
    const_assert_eq!(offset_of!(AtomicPeerRecord, intent_count), 20);
    const_assert_eq!(offset_of!(AtomicPeerRecord, intent_position), 24);
    const_assert_eq!(offset_of!(AtomicPeerRecord, pid_ns), 32);
    const_assert_eq!(offset_of!(AtomicPeerRecord, waiting), 40);
    const_assert_eq!(offset_of!(AtomicPeerRecord, intent_flags), 44);
    const_assert_eq!(offset_of!(AtomicPeerRecord, reserved), 48);

    const_assert_eq!(size_of::<AtomicChannelEntry>(), CHANNEL_ENTRY_SIZE);
    const_assert_eq!(align_of::<AtomicChannelEntry>(), 128);
    const_assert_eq!(offset_of!(AtomicChannelEntry, capacity), 8);
    const_assert_eq!(offset_of!(AtomicChannelEntry, band_offset), 16);
    const_assert_eq!(offset_of!(AtomicChannelEntry, state), 24);
    const_assert_eq!(offset_of!(AtomicChannelEntry, not_empty_seq), 32);
    const_assert_eq!(offset_of!(AtomicChannelEntry, not_empty_waiters), 36);
    const_assert_eq!(offset_of!(AtomicChannelEntry, not_full_seq), 40);
    const_assert_eq!(offset_of!(AtomicChannelEntry, not_full_waiters), 44);
    const_assert_eq!(offset_of!(AtomicChannelEntry, stuck_receive_position), 48);
    const_assert_eq!(offset_of!(AtomicChannelEntry, stuck_send_since_ns), 72);
    const_assert_eq!(offset_of!(AtomicChannelEntry, max_message_size), 80);
    const_assert_eq!(offset_of!(AtomicChannelEntry, extension), 88);
    const_assert_eq!(offset_of!(AtomicChannelEntry, tail), 128);
    const_assert_eq!(offset_of!(AtomicChannelEntry, head), 256);

    const_assert_eq!(size_of::<AtomicMessageMeta>(), 40);
    const_assert_eq!(offset_of!(AtomicMessageMeta, sender_runtime), 28);
    const_assert_eq!(offset_of!(AtomicMessageMeta, flags), 30);
    const_assert_eq!(offset_of!(AtomicMessageMeta, payload_len), 32);

    const_assert_eq!(size_of::<AtomicSlot>(), SLOT_SIZE);
    const_assert_eq!(align_of::<AtomicSlot>(), SLOT_ALIGN);
    const_assert_eq!(offset_of!(AtomicSlot, meta), 8);
    const_assert_eq!(offset_of!(AtomicSlot, run_slots), 48);
    const_assert_eq!(offset_of!(AtomicSlot, run_index), 52);
    const_assert_eq!(offset_of!(AtomicSlot, payload), PAYLOAD_OFFSET);
    const_assert_eq!(offset_of!(AtomicSlot, reserved), 1024);
}

impl AtomicHeaderFields {
    /// Copies the live fields into a plain mirror (relaxed loads; `magic` is read by the caller
    /// with acquire first).
    #[must_use]
    pub fn snapshot(&self) -> HeaderFields {
        use crate::sync::Ordering::Relaxed;
        HeaderFields {
            magic: self.magic.load(Relaxed),
            version: self.version.load(Relaxed),
            max_channels: self.max_channels.load(Relaxed),
            channel_count: self.channel_count.load(Relaxed),
            reserved: 0,
            segment_size: self.segment_size.load(Relaxed),
            band_cursor: self.band_cursor.load(Relaxed),
            creator_pid: self.creator_pid.load(Relaxed),
            header_flags: self.header_flags.load(Relaxed),
            peer_table_offset: self.peer_table_offset.load(Relaxed),
            peer_records: self.peer_records.load(Relaxed),
            reserved_60: 0,
            blob_pool_offset: self.blob_pool_offset.load(Relaxed),
            extension: [0; 56],
        }
    }
}

impl AtomicChannelEntry {
    /// Copies the fields validation looks at into a plain mirror (cursors and padding are not
    /// copied). `capacity` should have been read with acquire by the caller.
    #[must_use]
    pub fn snapshot(&self) -> ChannelEntry {
        use crate::sync::Ordering::Relaxed;
        ChannelEntry {
            channel_id: self.channel_id.load(Relaxed),
            flags: self.flags.load(Relaxed),
            capacity: self.capacity.load(Relaxed),
            band_offset: self.band_offset.load(Relaxed),
            state: self.state.load(Relaxed),
            creator_pid: self.creator_pid.load(Relaxed),
            not_empty_seq: self.not_empty_seq.load(Relaxed),
            not_empty_waiters: self.not_empty_waiters.load(Relaxed),
            not_full_seq: self.not_full_seq.load(Relaxed),
            not_full_waiters: self.not_full_waiters.load(Relaxed),
            stuck_receive_position: self.stuck_receive_position.load(Relaxed),
            stuck_receive_since_ns: self.stuck_receive_since_ns.load(Relaxed),
            stuck_send_position: self.stuck_send_position.load(Relaxed),
            stuck_send_since_ns: self.stuck_send_since_ns.load(Relaxed),
            max_message_size: self.max_message_size.load(Relaxed),
            extension: [0; 44],
            tail: self.tail.load(Relaxed),
            tail_pad: [0; 120],
            head: self.head.load(Relaxed),
            head_pad: [0; 120],
        }
    }
}

impl AtomicPeerRecord {
    /// Copies the record into a plain mirror (relaxed loads; the fields may be torn across a
    /// concurrent update, which is fine for display).
    #[must_use]
    pub fn snapshot(&self) -> PeerRecord {
        use crate::sync::Ordering::Relaxed;
        PeerRecord {
            pid: self.pid.load(Relaxed),
            runtime: self.runtime.load(Relaxed),
            role: self.role.load(Relaxed),
            start_time: self.start_time.load(Relaxed),
            channel_id: self.channel_id.load(Relaxed),
            intent_count: self.intent_count.load(Relaxed),
            intent_position: self.intent_position.load(Relaxed),
            pid_ns: self.pid_ns.load(Relaxed),
            waiting: self.waiting.load(Relaxed),
            intent_flags: self.intent_flags.load(Relaxed),
            reserved: [0; 16],
        }
    }
}

impl AtomicMessageMeta {
    /// Always inlined: out of line, the meta went through a copy on the stack both ways.
    #[inline(always)]
    pub(crate) fn load(&self) -> MessageMeta {
        use crate::sync::Ordering::Relaxed;
        MessageMeta {
            message_id: self.message_id.load(Relaxed),
            timestamp_ns: self.timestamp_ns.load(Relaxed),
            channel_id: self.channel_id.load(Relaxed),
            message_type: self.message_type.load(Relaxed),
            sender_pid: self.sender_pid.load(Relaxed),
            sender_runtime: self.sender_runtime.load(Relaxed),
            flags: self.flags.load(Relaxed),
            payload_len: self.payload_len.load(Relaxed),
            reserved: 0,
        }
    }

    #[inline(always)]
    pub(crate) fn store(&self, meta: &MessageMeta) {
        use crate::sync::Ordering::Relaxed;
        self.message_id.store(meta.message_id, Relaxed);
        self.timestamp_ns.store(meta.timestamp_ns, Relaxed);
        self.channel_id.store(meta.channel_id, Relaxed);
        self.message_type.store(meta.message_type, Relaxed);
        self.sender_pid.store(meta.sender_pid, Relaxed);
        self.sender_runtime.store(meta.sender_runtime, Relaxed);
        self.flags.store(meta.flags, Relaxed);
        self.payload_len.store(meta.payload_len, Relaxed);
        self.reserved.store(0, Relaxed);
    }
}

#[cfg(loom)]
mod loom_constructors {
    use super::*;

    fn reserved<const WORDS: usize>() -> Reserved<WORDS> {
        [0; WORDS]
    }

    impl AtomicHeaderFields {
        /// An all-zero value, for loom models (which cannot view a byte buffer).
        #[must_use]
        pub fn new_zeroed() -> Self {
            Self {
                magic: AtomicU64::new(0),
                version: AtomicU32::new(0),
                max_channels: AtomicU32::new(0),
                channel_count: AtomicU32::new(0),
                reserved: AtomicU32::new(0),
                segment_size: AtomicU64::new(0),
                band_cursor: AtomicU64::new(0),
                creator_pid: AtomicU32::new(0),
                header_flags: AtomicU32::new(0),
                peer_table_offset: AtomicU64::new(0),
                peer_records: AtomicU32::new(0),
                reserved_60: AtomicU32::new(0),
                blob_pool_offset: AtomicU64::new(0),
                extension: reserved(),
            }
        }
    }

    impl AtomicChannelEntry {
        /// An all-zero value, for loom models (which cannot view a byte buffer).
        #[must_use]
        pub fn new_zeroed() -> Self {
            Self {
                channel_id: AtomicU32::new(0),
                flags: AtomicU32::new(0),
                capacity: AtomicU64::new(0),
                band_offset: AtomicU64::new(0),
                state: AtomicU32::new(0),
                creator_pid: AtomicU32::new(0),
                not_empty_seq: AtomicU32::new(0),
                not_empty_waiters: AtomicU32::new(0),
                not_full_seq: AtomicU32::new(0),
                not_full_waiters: AtomicU32::new(0),
                stuck_receive_position: AtomicU64::new(0),
                stuck_receive_since_ns: AtomicU64::new(0),
                stuck_send_position: AtomicU64::new(0),
                stuck_send_since_ns: AtomicU64::new(0),
                max_message_size: AtomicU32::new(0),
                extension_word: AtomicU32::new(0),
                extension: reserved(),
                tail: AtomicU64::new(0),
                tail_pad: reserved(),
                head: AtomicU64::new(0),
                head_pad: reserved(),
            }
        }
    }

    impl AtomicPeerRecord {
        /// An all-zero value, for loom models (which cannot view a byte buffer).
        #[must_use]
        pub fn new_zeroed() -> Self {
            Self {
                pid: AtomicU32::new(0),
                runtime: AtomicU16::new(0),
                role: AtomicU16::new(0),
                start_time: AtomicU64::new(0),
                channel_id: AtomicU32::new(0),
                intent_count: AtomicU32::new(0),
                intent_position: AtomicU64::new(0),
                pid_ns: AtomicU64::new(0),
                waiting: AtomicU32::new(0),
                intent_flags: AtomicU32::new(0),
                reserved: reserved(),
            }
        }
    }

    impl AtomicSlot {
        /// An all-zero value, for loom models (which cannot view a byte buffer).
        #[must_use]
        pub fn new_zeroed() -> Self {
            Self {
                sequence: AtomicU64::new(0),
                meta: AtomicMessageMeta {
                    message_id: AtomicU64::new(0),
                    timestamp_ns: AtomicU64::new(0),
                    channel_id: AtomicU32::new(0),
                    message_type: AtomicU32::new(0),
                    sender_pid: AtomicU32::new(0),
                    sender_runtime: AtomicU16::new(0),
                    flags: AtomicU16::new(0),
                    payload_len: AtomicU32::new(0),
                    reserved: AtomicU32::new(0),
                },
                run_slots: AtomicU32::new(0),
                run_index: AtomicU32::new(0),
                padding: reserved(),
                payload: core::array::from_fn(|_| AtomicU64::new(0)),
                reserved: reserved(),
            }
        }
    }
}
