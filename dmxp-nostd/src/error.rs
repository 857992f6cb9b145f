//! Errors of the core. Every variant carries the values that explain it, and none of them is
//! produced by a panic: the core reports what it read, it never trusts it.

use core::fmt;

/// What is wrong with bytes read from a segment. Each variant names the field and the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// `magic` (offset 0) is neither 0 nor [`crate::layout::MAGIC`] (or is 0 in a segment
    /// that already holds channels or a peer table: a formatted segment whose magic was
    /// overwritten).
    BadMagic {
        /// The value read.
        found: u64,
    },
    /// `version` (offset 8) is not 1.
    UnsupportedVersion {
        /// The value read.
        found: u32,
    },
    /// `max_channels` (offset 12) is not 256.
    WrongMaxChannels {
        /// The value read.
        found: u32,
    },
    /// `channel_count` (offset 16) is larger than `max_channels`.
    ChannelCountTooLarge {
        /// The value read.
        found: u32,
    },
    /// `segment_size` (offset 24) is larger than the memory mapped, or smaller than the header.
    SegmentSizeMismatch {
        /// The size the header records.
        recorded: u64,
        /// The bytes actually available (mapped, or given to the parser).
        actual: u64,
    },
    /// `band_cursor` (offset 32) lies before the end of the header, past the segment, or is not
    /// a multiple of 64.
    BandCursorOutOfRange {
        /// The value read.
        found: u64,
        /// The segment length it was checked against.
        segment_len: u64,
    },
    /// An entry's `channel_id` does not equal its index.
    ChannelIdMismatch {
        /// The entry's index.
        channel: u32,
        /// The `channel_id` it holds.
        found: u32,
    },
    /// An entry's `state` word holds an unknown value.
    UnknownChannelState {
        /// The entry's index.
        channel: u32,
        /// The `state` value read.
        found: u32,
    },
    /// The entry is marked created (`state` READY) but its `capacity` is 0.
    CapacityZero {
        /// The entry's index.
        channel: u32,
    },
    /// `capacity` is not a power of two.
    CapacityNotPowerOfTwo {
        /// The entry's index.
        channel: u32,
        /// The value read.
        capacity: u64,
    },
    /// `capacity` is 1, below [`crate::layout::MIN_CAPACITY`]: the ring protocol needs two slots.
    CapacityTooSmall {
        /// The entry's index.
        channel: u32,
        /// The value read.
        capacity: u64,
    },
    /// `capacity` exceeds [`crate::layout::MAX_CAPACITY`].
    CapacityTooLarge {
        /// The entry's index.
        channel: u32,
        /// The value read.
        capacity: u64,
    },
    /// `band_offset` is not a multiple of 64.
    BandMisaligned {
        /// The entry's index.
        channel: u32,
        /// The value read.
        band_offset: u64,
    },
    /// The band starts inside the global header.
    BandOverlapsHeader {
        /// The entry's index.
        channel: u32,
        /// The value read.
        band_offset: u64,
    },
    /// The band runs past the end of the segment.
    BandOutsideSegment {
        /// The entry's index.
        channel: u32,
        /// Where the band starts.
        band_offset: u64,
        /// The band's length, `capacity × 1088` (`u64::MAX` if that overflows).
        band_len: u64,
        /// The segment length it was checked against.
        segment_len: u64,
    },
    /// Two channels' bands share bytes.
    BandsOverlap {
        /// The higher of the two channel ids.
        channel: u32,
        /// The lower one.
        other: u32,
    },
    /// The entry's `flags` set a bit no version-1 client knows (PROTOCOL.md §12.1).
    UnknownChannelFlags {
        /// The entry's index.
        channel: u32,
        /// The flags read.
        found: u32,
    },
    /// `max_message_size` is not 0 on a channel without runs, or on a channel with runs not
    /// above 960 and at most `capacity × 960` (PROTOCOL.md §12.1).
    MaxMessageSizeOutOfRange {
        /// The entry's index.
        channel: u32,
        /// The value read.
        found: u32,
        /// The channel's capacity.
        capacity: u64,
    },
    /// `peer_records` (offset 56) is neither 0 nor between 256 and
    /// [`crate::layout::MAX_PEER_RECORDS`].
    PeerRecordsOutOfRange {
        /// The value read.
        found: u32,
    },
    /// `peer_table_offset` (offset 48) is not a multiple of 64, lies inside the header, or the
    /// table it names (`peer_records` × 64 bytes) runs past the segment.
    PeerTableOutOfRange {
        /// The value read.
        found: u64,
        /// The segment length it was checked against.
        segment_len: u64,
    },
    /// The peer table at `peer_table_offset` shares bytes with `channel`'s band.
    PeerTableOverlapsBand {
        /// Where the peer table starts.
        peer_table_offset: u64,
        /// The channel whose band it overlaps.
        channel: u32,
    },
    /// `blob_pool_offset` (offset 64) is not a multiple of 64, lies inside the header, or
    /// leaves no room for the pool descriptor (PROTOCOL.md §13.2, check #1).
    BlobPoolOutOfRange {
        /// The value read.
        found: u64,
        /// The segment length it was checked against.
        segment_len: u64,
    },
    /// The pool descriptor's `pool_magic` is not `"DMXPBLOB"` (check #2).
    BlobPoolBadMagic {
        /// The value read.
        found: u64,
    },
    /// `class_count` is not 1 to 8, or `pool_len` does not hold the descriptors or runs past
    /// the segment (check #3).
    BlobPoolBadGeometry {
        /// The `class_count` read.
        class_count: u32,
        /// The `pool_len` read.
        pool_len: u64,
    },
    /// Size class `class` has a bad block size or count, sizes not increasing, or headers or
    /// data outside the pool or overlapping another class's (checks #4 and #5).
    BlobClassBad {
        /// The class index.
        class: u32,
    },
    /// `channel` is marked `BLOBS` in a segment that has no blob pool (PROTOCOL.md §13.1).
    BlobsWithoutPool {
        /// The channel.
        channel: u32,
    },
}

impl Corruption {
    /// The channel whose entry is bad, or `None` for a header field.
    #[must_use]
    pub fn channel(&self) -> Option<u32> {
        use Corruption::*;
        match *self {
            BadMagic { .. }
            | UnsupportedVersion { .. }
            | WrongMaxChannels { .. }
            | ChannelCountTooLarge { .. }
            | SegmentSizeMismatch { .. }
            | BandCursorOutOfRange { .. }
            | PeerRecordsOutOfRange { .. }
            | PeerTableOutOfRange { .. }
            | PeerTableOverlapsBand { .. }
            | BlobPoolOutOfRange { .. }
            | BlobPoolBadMagic { .. }
            | BlobPoolBadGeometry { .. }
            | BlobClassBad { .. } => None,
            ChannelIdMismatch { channel, .. }
            | UnknownChannelState { channel, .. }
            | CapacityZero { channel }
            | CapacityNotPowerOfTwo { channel, .. }
            | CapacityTooSmall { channel, .. }
            | CapacityTooLarge { channel, .. }
            | BandMisaligned { channel, .. }
            | BandOverlapsHeader { channel, .. }
            | BandOutsideSegment { channel, .. }
            | BandsOverlap { channel, .. }
            | UnknownChannelFlags { channel, .. }
            | MaxMessageSizeOutOfRange { channel, .. }
            | BlobsWithoutPool { channel } => Some(channel),
        }
    }

    /// The name of the field at fault, as the layout tables spell it.
    #[must_use]
    pub fn field(&self) -> &'static str {
        use Corruption::*;
        match self {
            BadMagic { .. } => "magic",
            UnsupportedVersion { .. } => "version",
            WrongMaxChannels { .. } => "max_channels",
            ChannelCountTooLarge { .. } => "channel_count",
            SegmentSizeMismatch { .. } => "segment_size",
            BandCursorOutOfRange { .. } => "band_cursor",
            ChannelIdMismatch { .. } => "channel_id",
            UnknownChannelState { .. } => "state",
            CapacityZero { .. }
            | CapacityNotPowerOfTwo { .. }
            | CapacityTooSmall { .. }
            | CapacityTooLarge { .. } => "capacity",
            BandMisaligned { .. }
            | BandOverlapsHeader { .. }
            | BandOutsideSegment { .. }
            | BandsOverlap { .. } => "band_offset",
            UnknownChannelFlags { .. } => "flags",
            MaxMessageSizeOutOfRange { .. } => "max_message_size",
            PeerRecordsOutOfRange { .. } => "peer_records",
            PeerTableOutOfRange { .. } | PeerTableOverlapsBand { .. } => "peer_table_offset",
            BlobPoolOutOfRange { .. } => "blob_pool_offset",
            BlobPoolBadMagic { .. } => "pool_magic",
            BlobPoolBadGeometry { .. } => "pool_len",
            BlobClassBad { .. } => "block_size",
            BlobsWithoutPool { .. } => "flags",
        }
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Corruption::*;
        if let Some(ch) = self.channel() {
            write!(f, "channel {ch}: ")?;
        }
        match *self {
            // Only reported for 0 when the segment holds channels or a peer table (§3.3).
            BadMagic { found: 0 } => f.write_str(
                "bad magic 0 in a segment that holds channels or a peer table: a formatted \
                 segment whose magic was overwritten, not one being created",
            ),
            BadMagic { found } => {
                write!(f, "bad magic {found:#018x} (expected 0x444d58505f4d454d)")
            }
            UnsupportedVersion { found } => write!(f, "unsupported version {found} (expected 1)"),
            WrongMaxChannels { found } => write!(f, "max_channels is {found} (expected 256)"),
            ChannelCountTooLarge { found } => write!(f, "channel_count {found} exceeds 256"),
            SegmentSizeMismatch { recorded, actual } => write!(
                f,
                "segment_size {recorded} does not fit: {actual} bytes mapped, at least {} needed",
                crate::layout::HEADER_SIZE
            ),
            BandCursorOutOfRange { found, segment_len } => write!(
                f,
                "band_cursor {found} outside the band area of a {segment_len}-byte segment"
            ),
            ChannelIdMismatch { found, .. } => write!(f, "channel_id field holds {found}"),
            UnknownChannelState { found, .. } => write!(f, "unknown state word {found}"),
            CapacityZero { .. } => write!(f, "created but capacity is 0"),
            CapacityNotPowerOfTwo { capacity, .. } => {
                write!(f, "capacity {capacity} is not a power of two")
            }
            CapacityTooSmall { capacity, .. } => write!(
                f,
                "capacity {capacity} is below the minimum {}",
                crate::layout::MIN_CAPACITY
            ),
            CapacityTooLarge { capacity, .. } => write!(
                f,
                "capacity {capacity} exceeds the limit {}",
                crate::layout::MAX_CAPACITY
            ),
            BandMisaligned { band_offset, .. } => {
                write!(f, "band_offset {band_offset} is not a multiple of 64")
            }
            BandOverlapsHeader { band_offset, .. } => {
                write!(f, "band_offset {band_offset} lies inside the global header")
            }
            BandOutsideSegment {
                band_offset,
                band_len,
                segment_len,
                ..
            } => write!(
                f,
                "band at {band_offset} of {band_len} bytes runs past the {segment_len}-byte segment"
            ),
            BandsOverlap { other, .. } => write!(f, "band overlaps channel {other}'s band"),
            UnknownChannelFlags { found, .. } => {
                write!(f, "flags {found:#x} set bits this client does not know")
            }
            MaxMessageSizeOutOfRange {
                found, capacity, ..
            } => write!(
                f,
                "max_message_size {found} is out of range for a channel of {capacity} slots"
            ),
            PeerRecordsOutOfRange { found } => write!(
                f,
                "peer_records {found} is neither 0 nor between {} and {}",
                crate::layout::PEER_RECORDS,
                crate::layout::MAX_PEER_RECORDS
            ),
            PeerTableOutOfRange { found, segment_len } => write!(
                f,
                "peer_table_offset {found} does not name a 64-aligned table of peer_records \
                 records inside the band area of a {segment_len}-byte segment"
            ),
            PeerTableOverlapsBand {
                peer_table_offset,
                channel,
            } => write!(
                f,
                "peer table at {peer_table_offset} overlaps channel {channel}'s band"
            ),
            BlobPoolOutOfRange { found, segment_len } => write!(
                f,
                "blob_pool_offset {found} does not name a 64-aligned pool descriptor inside \
                 the band area of a {segment_len}-byte segment"
            ),
            BlobPoolBadMagic { found } => write!(
                f,
                "blob pool magic {found:#018x} (expected 0x424f4c4250584d44, \"DMXPBLOB\")"
            ),
            BlobPoolBadGeometry {
                class_count,
                pool_len,
            } => write!(
                f,
                "blob pool of {class_count} classes and {pool_len} bytes is impossible (1 to 8 \
                 classes, descriptors and blocks inside the segment)"
            ),
            BlobClassBad { class } => write!(
                f,
                "blob pool class {class} has a bad block size or count, or blocks outside the \
                 pool or overlapping another class"
            ),
            BlobsWithoutPool { .. } => {
                write!(f, "flags say BLOBS but the segment has no blob pool")
            }
        }
    }
}

/// Errors of the segment and channel-table operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The region's base is not aligned to 128 bytes (or is null).
    RegionMisaligned {
        /// The base address (0 for a null pointer).
        addr: usize,
        /// The alignment required, [`crate::layout::SEGMENT_ALIGN`].
        align: usize,
    },
    /// The region is too small for what was asked.
    RegionTooSmall {
        /// The region's length in bytes.
        len: u64,
        /// The bytes needed.
        needed: u64,
    },
    /// `magic` is still 0: the segment is being formatted (or its creator died doing so).
    NotReady,
    /// Refused to format a region whose `magic` is already set: it may be live.
    AlreadyFormatted,
    /// Bytes read from the segment are invalid.
    Corrupt(Corruption),
    /// A channel id at or above 256.
    InvalidChannelId {
        /// The id given.
        id: u32,
    },
    /// A requested capacity that is below [`crate::layout::MIN_CAPACITY`], not a power of
    /// two, or above [`crate::layout::MAX_CAPACITY`].
    InvalidCapacity {
        /// The capacity asked for.
        capacity: u64,
    },
    /// A requested message size limit above [`crate::layout::MSG_INLINE`] that the ring
    /// cannot hold: more than `capacity × 960` bytes, or 2³² or more (PROTOCOL.md §12.1).
    InvalidMaxMessageSize {
        /// The limit asked for.
        max_message_size: u64,
        /// The capacity of the channel it was asked for.
        capacity: u64,
    },
    /// The channel carries runs (messages longer than one slot, PROTOCOL.md §12.1) and the
    /// caller asked for single-slot channels only ([`crate::Channel::require_single_slot`]).
    RunsNotSupported {
        /// The channel refused.
        id: u32,
    },
    /// A peer registration with process id 0, which marks a free record.
    InvalidPid,
    /// No channel with this id has been created.
    ChannelNotFound {
        /// The channel asked for.
        id: u32,
    },
    /// Another process is creating this channel right now; retry shortly.
    ChannelBeingCreated {
        /// The channel being created.
        id: u32,
    },
    /// `create_channel` found the channel already created (with this capacity).
    ChannelExists {
        /// The channel.
        id: u32,
        /// The capacity it was created with (which may differ from the one asked for).
        capacity: u64,
    },
    /// The segment has no room left for a band of this size.
    OutOfSpace {
        /// The bytes the band (or peer table) needs.
        needed: u64,
        /// The bytes left between the band cursor and the end of the segment.
        available: u64,
    },
    /// Too much contention (or a peer corrupting the table) to finish in bounded time.
    Busy,
    /// Every record of the peer table is taken: the handle cannot register for crash
    /// recovery (it may still be used, unprotected).
    PeerTableFull,
    /// A segment asked to hold a peer table of `requested` records: neither 0 (the default)
    /// nor between 256 and [`crate::layout::MAX_PEER_RECORDS`].
    InvalidPeerRecords {
        /// The record count asked for.
        requested: u32,
    },
    /// A blob pool specification that no segment may hold ([`crate::BlobPoolSpec::check`]).
    InvalidBlobPool,
    /// A blob-pool operation failed.
    Blob(BlobError),
}

impl From<Corruption> for Error {
    fn from(c: Corruption) -> Self {
        Error::Corrupt(c)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::RegionMisaligned { addr, align } => {
                write!(f, "region base {addr:#x} is not aligned to {align} bytes")
            }
            Error::RegionTooSmall { len, needed } => {
                write!(f, "region of {len} bytes is too small: {needed} needed")
            }
            Error::NotReady => write!(f, "segment is still being created (magic not yet set)"),
            Error::AlreadyFormatted => write!(f, "region already holds a segment; not formatting"),
            Error::Corrupt(c) => write!(f, "corrupt segment: {c}"),
            Error::InvalidChannelId { id } => {
                write!(f, "channel id {id} out of range (0..256)")
            }
            Error::InvalidMaxMessageSize {
                max_message_size,
                capacity,
            } => write!(
                f,
                "a {capacity}-slot channel cannot take messages of {max_message_size} bytes \
                 (at most {} bytes, capacity × 960)",
                capacity.saturating_mul(crate::layout::MSG_INLINE as u64)
            ),
            Error::InvalidCapacity { capacity } => write!(
                f,
                "capacity {capacity} must be a power of two between {} and {}",
                crate::layout::MIN_CAPACITY,
                crate::layout::MAX_CAPACITY
            ),
            Error::RunsNotSupported { id } => write!(
                f,
                "channel {id} carries messages longer than one slot (runs), and this client \
                 takes single-slot messages only"
            ),
            Error::InvalidPid => write!(f, "process id 0 cannot own a peer record"),
            Error::ChannelNotFound { id } => write!(f, "channel {id} does not exist"),
            Error::ChannelBeingCreated { id } => {
                write!(f, "channel {id} is being created by another process")
            }
            Error::ChannelExists { id, capacity } => {
                write!(f, "channel {id} already exists with capacity {capacity}")
            }
            Error::OutOfSpace { needed, available } => write!(
                f,
                "segment out of space: band needs {needed} bytes, {available} left"
            ),
            Error::Busy => write!(f, "gave up after too many contended retries"),
            Error::InvalidPeerRecords { requested } => write!(
                f,
                "peer table of {requested} records requested: use 0 (the default, {}) or {} to {}",
                crate::layout::PEER_RECORDS,
                crate::layout::PEER_RECORDS,
                crate::layout::MAX_PEER_RECORDS
            ),
            Error::InvalidBlobPool => write!(f, "{}", BlobError::InvalidSpec),
            Error::Blob(e) => write!(f, "{e}"),
            Error::PeerTableFull => write!(
                f,
                "peer table full: every record is taken (a segment made with more peer_records \
                 holds more handles)"
            ),
        }
    }
}

impl core::error::Error for Error {}
impl core::error::Error for Corruption {}

/// Why a send did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Every slot holds an unconsumed message.
    Full,
    /// The payload does not fit in a slot.
    TooLarge {
        /// The payload's length in bytes.
        len: usize,
        /// The channel's largest message: [`crate::layout::MSG_INLINE`] (960) on a channel
        /// without runs (and for batch sends), else its `max_message_size`.
        limit: usize,
    },
    /// The flags set bits the protocol reserves (`0x00FF`).
    ReservedFlags {
        /// The flags given.
        flags: u16,
    },
    /// Contention (or a corrupt peer) kept the claim from succeeding in bounded time.
    Busy,
    /// A blocking send's wait strategy gave up.
    TimedOut,
    /// The claim on position `message_id` was revoked before it was published: a peer judged
    /// this sender dead or stopped and tombstoned the position (PROTOCOL.md §11.7). The
    /// message may still have been delivered (once) if the sender was stopped just before
    /// publishing; it must not be assumed sent.
    Revoked {
        /// The position (and `message_id`) whose claim was revoked.
        message_id: u64,
    },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SendError::Full => write!(f, "channel full"),
            SendError::TooLarge { len, limit } => {
                write!(f, "message of {len} bytes exceeds the {limit}-byte limit")
            }
            SendError::ReservedFlags { flags } => {
                write!(f, "flags {flags:#06x} set protocol-reserved bits (0x00ff)")
            }
            SendError::Busy => write!(f, "gave up after too many contended retries"),
            SendError::TimedOut => write!(f, "timed out waiting for a free slot"),
            SendError::Revoked { message_id } => write!(
                f,
                "the claim on position {message_id} was revoked by a repair before it was \
                 published (this sender was judged dead or stopped)"
            ),
        }
    }
}

/// Why a receive returned no message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvError {
    /// Nothing is queued: no message at the head, and none behind it that a completed send
    /// left.
    Empty,
    /// The position at the head is claimed by a producer that has not published it yet, while
    /// a later position holds a message (PROTOCOL.md §6.2): not empty. Wait for `position`
    /// (briefly, then on the `not_empty` word) under the stuck-peer rules: a dead claimer is
    /// repaired after the grace period, a stopped one after the unblock timeout.
    Pending {
        /// The claimed, unpublished position at the head.
        position: u64,
    },
    /// The caller's buffer is smaller than the next message; nothing was consumed.
    BufferTooSmall {
        /// The message's length in bytes.
        needed: usize,
        /// The buffer's length.
        available: usize,
    },
    /// The message at `message_id` had an impossible `payload_len`; it was consumed and dropped.
    Corrupt {
        /// The position consumed.
        message_id: u64,
        /// The `payload_len` read: above 960, or above the channel's limit, or a run's length
        /// that its slots contradict (PROTOCOL.md §12.4).
        payload_len: u32,
    },
    /// A tombstone left for a message whose producer died; it was consumed.
    Lost {
        /// The position of the lost message.
        message_id: u64,
    },
    /// Contention (or a corrupt peer) kept the claim from succeeding in bounded time.
    Busy,
    /// A blocking receive's wait strategy gave up.
    TimedOut,
    /// The next message, at `message_id`, is a blob of `len` bytes (PROTOCOL.md §13), which
    /// this kind of receive does not take (a batch, an in-place slot receive): nothing was
    /// consumed. Receive it with `try_recv_blob`, or a copying receive with a buffer of
    /// `len` bytes.
    IsBlob {
        /// The position of the blob message.
        message_id: u64,
        /// The blob's length.
        len: usize,
    },
    /// The next message, at `message_id`, is not a blob: a blob receive consumed nothing.
    /// Receive it with an ordinary receive.
    NotABlob {
        /// The position of the message.
        message_id: u64,
    },
    /// An in-place blob receive needs a consumer registered in the peer table, on a channel
    /// that carries blobs.
    NotRegistered,
    /// The claim on position `message_id` was revoked before the slot was freed: a peer judged
    /// this receiver dead or stopped and freed the slot under it (PROTOCOL.md §11.7). What was
    /// read may belong to the next message in the slot, so nothing is delivered.
    Revoked {
        /// The position whose claim was revoked.
        message_id: u64,
    },
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RecvError::Empty => write!(f, "channel empty"),
            RecvError::Pending { position } => write!(
                f,
                "position {position} is claimed but not yet published, with messages queued \
                 behind it"
            ),
            RecvError::BufferTooSmall { needed, available } => write!(
                f,
                "buffer of {available} bytes too small for a {needed}-byte message"
            ),
            RecvError::Corrupt {
                message_id,
                payload_len,
            } => write!(
                f,
                "message {message_id} dropped: payload_len {payload_len} is impossible \
                 (over the limit, or a run whose slots disagree with it)"
            ),
            RecvError::Lost { message_id } => {
                write!(f, "message {message_id} lost: its producer died mid-send")
            }
            RecvError::Revoked { message_id } => write!(
                f,
                "the claim on message {message_id} was revoked by a repair before it was \
                 freed (this receiver was judged dead or stopped); nothing delivered"
            ),
            RecvError::Busy => write!(f, "gave up after too many contended retries"),
            RecvError::TimedOut => write!(f, "timed out waiting for a message"),
            RecvError::IsBlob { message_id, len } => write!(
                f,
                "message {message_id} is a blob of {len} bytes: receive it as a blob (nothing \
                 consumed)"
            ),
            RecvError::NotABlob { message_id } => write!(
                f,
                "message {message_id} is not a blob: receive it as a message (nothing consumed)"
            ),
            RecvError::NotRegistered => write!(
                f,
                "in-place blob receives need a registered consumer on a channel that carries blobs"
            ),
        }
    }
}

impl core::error::Error for SendError {}
impl core::error::Error for RecvError {}

/// Why a blob-pool operation failed (PROTOCOL.md §13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobError {
    /// The segment has no blob pool.
    NoPool,
    /// The channel was not created with the `BLOBS` flag.
    NotABlobChannel {
        /// The channel.
        channel: u32,
    },
    /// Loans and in-place receives of blocks need a handle registered in the peer table
    /// (the block's owner is its record).
    NotRegistered,
    /// A pool specification with no classes, more than 8, or a class out of range.
    InvalidSpec,
    /// No block is that large; nothing was tried.
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// The pool's largest block.
        largest: u64,
    },
    /// Every block that could hold `len` bytes is in use.
    PoolExhausted {
        /// Bytes asked for.
        len: usize,
    },
    /// A blocking loan's deadline passed with the pool still exhausted.
    TimedOut,
    /// The block was reclaimed from this owner (judged dead): a loan can no longer be sent, or
    /// a received block's bytes may have been overwritten while they were read (§13.6).
    Revoked,
}

impl fmt::Display for BlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BlobError::NoPool => write!(f, "the segment has no blob pool"),
            BlobError::NotABlobChannel { channel } => {
                write!(f, "channel {channel} was not created to carry blobs")
            }
            BlobError::NotRegistered => write!(
                f,
                "blob loans and receives need a handle registered in the peer table"
            ),
            BlobError::InvalidSpec => write!(
                f,
                "a blob pool needs 1 to 8 classes of increasing block sizes (multiples of 64, \
                 64 B to 2 GiB) with 1 to 2^24 blocks each"
            ),
            BlobError::TooLarge { len, largest } => write!(
                f,
                "a blob of {len} bytes exceeds the pool's largest block ({largest} bytes)"
            ),
            BlobError::PoolExhausted { len } => {
                write!(
                    f,
                    "blob pool exhausted: no free block of {len} bytes or more"
                )
            }
            BlobError::TimedOut => write!(f, "timed out waiting for a free blob block"),
            BlobError::Revoked => write!(
                f,
                "the block was reclaimed from this handle (judged dead); its bytes cannot be \
                 trusted and it was not sent"
            ),
        }
    }
}

impl core::error::Error for BlobError {}
