//! Validation of untrusted segment bytes.
//!
//! The same checks serve two callers: [`parse_segment`], which reads a `&[u8]` (a file, a
//! fuzzer's input, a copy of a live segment), and [`crate::Segment`], which validates plain
//! snapshots of the live header and entries before it trusts them. Nothing here panics on any
//! input; every rejection is a [`Corruption`] naming the field and the value.

use crate::error::{Corruption, Error};
use crate::layout::{
    band_len, channel_entry_offset, channel_flags, channel_state, peer_records_of, ChannelEntry,
    HeaderFields, CHANNEL_ENTRY_SIZE, HEADER_SIZE, MAGIC, MAX_CAPACITY, MAX_CHANNELS, MIN_CAPACITY,
    MSG_INLINE, PEER_RECORDS, PEER_RECORD_SIZE, SLOT_ALIGN, VERSION,
};
use zerocopy::FromBytes;

/// Where a created channel's band lies. Copied into the process at attach and never re-read
/// from the segment for indexing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelGeometry {
    /// The channel id (its entry's index).
    pub id: u32,
    /// Slots in the ring: a power of two, 2 to 2³².
    pub capacity: u64,
    /// Offset of slot 0 from the segment start: a multiple of 64, past the header, with the
    /// whole band inside the segment.
    pub band_offset: u64,
    /// The largest message the channel takes when it carries runs (PROTOCOL.md §12.1):
    /// above 960 and at most `capacity × 960`; 0 for a channel of single-slot messages.
    pub max_message_size: u32,
    /// Whether the channel may carry references to blob-pool blocks (entry flag
    /// [`channel_flags::BLOBS`], PROTOCOL.md §13.1).
    pub carries_blobs: bool,
}

impl ChannelGeometry {
    /// Whether the channel may carry runs (messages longer than one slot).
    #[must_use]
    pub fn carries_runs(&self) -> bool {
        self.max_message_size != 0
    }

    /// The largest message a producer may send: `max_message_size`, or 960 without runs.
    #[must_use]
    pub fn message_limit(&self) -> usize {
        if self.carries_runs() {
            self.max_message_size as usize
        } else {
            crate::layout::MSG_INLINE
        }
    }

    /// One past the last byte of the band.
    #[must_use]
    pub fn band_end(&self) -> u64 {
        // Validation proved this does not overflow.
        self.band_offset + self.capacity * crate::layout::SLOT_SIZE as u64
    }
}

/// A created channel as seen at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The channel id.
    pub id: u32,
    /// Slots in the ring.
    pub capacity: u64,
    /// Offset of slot 0 from the segment start.
    pub band_offset: u64,
    /// The consumer cursor: the next position to receive.
    pub head: u64,
    /// The producer cursor: the next position to send.
    pub tail: u64,
    /// Messages queued: `tail - head`, clamped to `0..=capacity`.
    pub depth: u64,
}

impl ChannelInfo {
    pub(crate) fn new(geometry: ChannelGeometry, head: u64, tail: u64) -> Self {
        Self {
            id: geometry.id,
            capacity: geometry.capacity,
            band_offset: geometry.band_offset,
            head,
            tail,
            depth: tail.saturating_sub(head).min(geometry.capacity),
        }
    }
}

/// The result of parsing a whole segment.
#[derive(Clone, Debug)]
pub struct SegmentInfo {
    /// The header fields as read.
    pub header: HeaderFields,
    /// The length validation used: `segment_size` when recorded, else the bytes given.
    pub segment_len: u64,
    /// Every created channel, in id order.
    pub channels: heapless::Vec<ChannelInfo, MAX_CHANNELS>,
    /// The blob pool (PROTOCOL.md §13), when the header names one.
    pub blob_pool: Option<crate::blob::PoolGeometry>,
}

/// Checks the header fields against the bytes actually available and returns the segment
/// length to validate bands against.
pub fn validate_header(header: &HeaderFields, available: u64) -> Result<u64, Error> {
    match header.magic {
        0 => return Err(Error::NotReady),
        MAGIC => {}
        found => return Err(Corruption::BadMagic { found }.into()),
    }
    if header.version != VERSION {
        return Err(Corruption::UnsupportedVersion {
            found: header.version,
        }
        .into());
    }
    if header.max_channels as usize != MAX_CHANNELS {
        return Err(Corruption::WrongMaxChannels {
            found: header.max_channels,
        }
        .into());
    }
    if header.channel_count as usize > MAX_CHANNELS {
        return Err(Corruption::ChannelCountTooLarge {
            found: header.channel_count,
        }
        .into());
    }
    if available < HEADER_SIZE as u64 {
        return Err(Error::RegionTooSmall {
            len: available,
            needed: HEADER_SIZE as u64,
        });
    }
    // A segment made by a client that does not record its size is validated against what is
    // mapped; otherwise the recorded size must be mapped in full.
    let segment_len = match header.segment_size {
        0 => available,
        recorded if recorded > available || recorded < HEADER_SIZE as u64 => {
            return Err(Corruption::SegmentSizeMismatch {
                recorded,
                actual: available,
            }
            .into())
        }
        recorded => recorded,
    };
    let cursor = header.band_cursor;
    if cursor != 0
        && (cursor < HEADER_SIZE as u64
            || cursor > segment_len
            || !cursor.is_multiple_of(SLOT_ALIGN as u64))
    {
        return Err(Corruption::BandCursorOutOfRange {
            found: cursor,
            segment_len,
        }
        .into());
    }
    let records =
        peer_records_of(header.peer_records).ok_or(Corruption::PeerRecordsOutOfRange {
            found: header.peer_records,
        })?;
    check_peer_table_range(header.peer_table_offset, records, segment_len)?;
    Ok(segment_len)
}

/// Bytes of a peer table of `records` records.
#[must_use]
pub const fn peer_table_len(records: usize) -> u64 {
    (records * PEER_RECORD_SIZE) as u64
}

/// Checks a `peer_table_offset` (PROTOCOL.md §11.1): 0 (no table), or a 64-aligned offset
/// past the header whose whole table of `records` records lies inside the segment.
pub fn check_peer_table_range(
    offset: u64,
    records: usize,
    segment_len: u64,
) -> Result<(), Corruption> {
    let fits = offset
        .checked_add(peer_table_len(records))
        .is_some_and(|end| end <= segment_len);
    if offset != 0
        && (!offset.is_multiple_of(SLOT_ALIGN as u64) || offset < HEADER_SIZE as u64 || !fits)
    {
        return Err(Corruption::PeerTableOutOfRange {
            found: offset,
            segment_len,
        });
    }
    Ok(())
}

/// Checks that the peer table of `records` records at `offset` (already range-checked,
/// non-zero) shares no byte with any of `bands`.
pub fn check_peer_table_bands(
    offset: u64,
    records: usize,
    bands: &[ChannelGeometry],
) -> Result<(), Corruption> {
    let end = offset.saturating_add(peer_table_len(records));
    match bands
        .iter()
        .find(|band| band.band_offset < end && offset < band.band_end())
    {
        Some(band) => Err(Corruption::PeerTableOverlapsBand {
            peer_table_offset: offset,
            channel: band.id,
        }),
        None => Ok(()),
    }
}

/// Checks one entry. `Ok(None)` means the channel has not been created (capacity 0).
pub fn validate_entry(
    id: u32,
    entry: &ChannelEntry,
    segment_len: u64,
) -> Result<Option<ChannelGeometry>, Corruption> {
    let channel = id;
    let state = entry.state;
    if !matches!(
        state,
        channel_state::EMPTY | channel_state::CREATING | channel_state::READY
    ) {
        return Err(Corruption::UnknownChannelState {
            channel,
            found: state,
        });
    }
    let capacity = entry.capacity;
    if capacity == 0 {
        // Creators store capacity before READY, so READY with capacity 0 is never transient.
        return if state == channel_state::READY {
            Err(Corruption::CapacityZero { channel })
        } else {
            Ok(None)
        };
    }
    if entry.channel_id != id {
        return Err(Corruption::ChannelIdMismatch {
            channel,
            found: entry.channel_id,
        });
    }
    if !capacity.is_power_of_two() {
        return Err(Corruption::CapacityNotPowerOfTwo { channel, capacity });
    }
    if capacity < MIN_CAPACITY {
        return Err(Corruption::CapacityTooSmall { channel, capacity });
    }
    if capacity > MAX_CAPACITY {
        return Err(Corruption::CapacityTooLarge { channel, capacity });
    }
    let band_offset = entry.band_offset;
    if !band_offset.is_multiple_of(SLOT_ALIGN as u64) {
        return Err(Corruption::BandMisaligned {
            channel,
            band_offset,
        });
    }
    if band_offset < HEADER_SIZE as u64 {
        return Err(Corruption::BandOverlapsHeader {
            channel,
            band_offset,
        });
    }
    let outside = |band_len| Corruption::BandOutsideSegment {
        channel,
        band_offset,
        band_len,
        segment_len,
    };
    // capacity <= 2^32 so the product fits in u64.
    let len = band_len(capacity).ok_or(outside(u64::MAX))?;
    match band_offset.checked_add(len) {
        Some(end) if end <= segment_len => {}
        _ => return Err(outside(len)),
    }
    if entry.flags & !channel_flags::KNOWN != 0 {
        return Err(Corruption::UnknownChannelFlags {
            channel,
            found: entry.flags,
        });
    }
    let max_message_size = entry.max_message_size;
    let in_range = if entry.flags & channel_flags::RUNS != 0 {
        max_message_size_fits(u64::from(max_message_size), capacity)
    } else {
        max_message_size == 0
    };
    if !in_range {
        return Err(Corruption::MaxMessageSizeOutOfRange {
            channel,
            found: max_message_size,
            capacity,
        });
    }
    Ok(Some(ChannelGeometry {
        id,
        capacity,
        band_offset,
        max_message_size,
        carries_blobs: entry.flags & channel_flags::BLOBS != 0,
    }))
}

/// Whether a channel of `capacity` slots can carry runs of up to `max_message_size` bytes:
/// above one slot's 960, at most the whole ring, below 2³² (PROTOCOL.md §12.1).
#[must_use]
pub fn max_message_size_fits(max_message_size: u64, capacity: u64) -> bool {
    max_message_size > MSG_INLINE as u64
        && max_message_size <= capacity.saturating_mul(MSG_INLINE as u64)
        && max_message_size <= u64::from(u32::MAX)
}

/// Checks that no two bands share a byte. Sorts `bands` by offset.
pub fn check_overlaps(bands: &mut [ChannelGeometry]) -> Result<(), Corruption> {
    bands.sort_unstable_by_key(|g| g.band_offset);
    for pair in bands.windows(2) {
        if pair[0].band_end() > pair[1].band_offset {
            let (a, b) = (pair[0].id.max(pair[1].id), pair[0].id.min(pair[1].id));
            return Err(Corruption::BandsOverlap {
                channel: a,
                other: b,
            });
        }
    }
    Ok(())
}

/// Parses and validates a whole segment from untrusted bytes.
///
/// This is the function the `header_parse` fuzz target calls. It copies what it reads (the
/// input need not be aligned) and returns either a description of every created channel or the
/// first problem found.
pub fn parse_segment(bytes: &[u8]) -> Result<SegmentInfo, Error> {
    let available = bytes.len() as u64;
    let (header, _) = HeaderFields::read_from_prefix(bytes).map_err(|_| Error::RegionTooSmall {
        len: available,
        needed: HEADER_SIZE as u64,
    })?;
    let segment_len = validate_header(&header, available)?;
    // The pool is validated with the header, as `Segment::attach` does.
    let blob_pool = match header.blob_pool_offset {
        0 => None,
        offset => {
            crate::blob::check_pool_offset(offset, segment_len)?;
            // Inside `segment_len`, which is at most the bytes given.
            let descriptor = bytes
                .get(offset as usize..)
                .and_then(crate::blob::PoolDescriptor::from_bytes)
                .ok_or(Corruption::BlobPoolOutOfRange {
                    found: offset,
                    segment_len,
                })?;
            Some(crate::blob::validate_pool(
                &descriptor,
                offset,
                segment_len,
            )?)
        }
    };

    let mut bands: heapless::Vec<ChannelGeometry, MAX_CHANNELS> = heapless::Vec::new();
    let mut channels = heapless::Vec::new();
    for id in 0..MAX_CHANNELS {
        let offset = channel_entry_offset(id);
        let raw = bytes
            .get(offset..offset + CHANNEL_ENTRY_SIZE)
            .ok_or(Error::RegionTooSmall {
                len: available,
                needed: HEADER_SIZE as u64,
            })?;
        let entry = ChannelEntry::read_from_bytes(raw).map_err(|_| Error::RegionTooSmall {
            len: available,
            needed: HEADER_SIZE as u64,
        })?;
        if let Some(geometry) = validate_entry(id as u32, &entry, segment_len)? {
            if geometry.carries_blobs && blob_pool.is_none() {
                return Err(Corruption::BlobsWithoutPool { channel: id as u32 }.into());
            }
            // Both vectors hold at most MAX_CHANNELS items, one per id, so neither can be full.
            let _ = bands.push(geometry);
            let _ = channels.push(ChannelInfo::new(geometry, entry.head, entry.tail));
        }
    }
    check_overlaps(&mut bands)?;
    if header.peer_table_offset != 0 {
        // Validated by `validate_header` above.
        let records = peer_records_of(header.peer_records).unwrap_or(PEER_RECORDS);
        check_peer_table_bands(header.peer_table_offset, records, &bands)?;
    }
    Ok(SegmentInfo {
        header,
        segment_len,
        channels,
        blob_pool,
    })
}
