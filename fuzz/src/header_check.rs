//! What `parse_segment` must do with any bytes at all: return `Ok` or a typed error, and be
//! right about it.
//!
//! The checks re-read every field they rely on straight from the input at the offsets the wire
//! layout fixes (DESIGN.md §3), independently of the parser's own structs, so a parser that
//! reads the wrong offset or accepts a band it should refuse fails here.
//!
//! This file is compiled twice: as a module of the fuzz package (for the `header_parse` target
//! and its corpus replay) and, through `#[path]`, by `dmxp-nostd/tests/fuzz_corpus.rs`, which
//! replays the committed corpus on stable without depending on the fuzz package. It may use
//! only `std` and `dmxp_nostd`.

use dmxp_nostd::layout::{
    CHANNEL_ENTRY_SIZE, CHANNEL_TABLE_OFFSET, HEADER_SIZE, MAGIC, MAX_CAPACITY, MAX_CHANNELS,
    MIN_CAPACITY, SLOT_ALIGN, SLOT_SIZE,
};
use dmxp_nostd::{parse_segment, ChannelInfo, Corruption, Error, SegmentInfo};

/// How the parser judged an input (for replay statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseOutcome {
    /// A valid segment holding this many created channels.
    Valid { channels: usize },
    /// A typed rejection.
    Rejected,
}

/// Parses `bytes` and panics if the result breaks an invariant. Never panics otherwise.
pub fn check_parse(bytes: &[u8]) -> ParseOutcome {
    match parse_segment(bytes) {
        Ok(info) => {
            check_accepted(bytes, &info);
            ParseOutcome::Valid {
                channels: info.channels.len(),
            }
        }
        Err(error) => {
            check_rejected(bytes, &error);
            ParseOutcome::Rejected
        }
    }
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut le = [0u8; 4];
    le.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(le)
}

/// Bytes of the peer table the header's `peer_records` (offset 56) names, if it is a valid
/// count: 0 stands for 256 records, else 256 to 16,384 records of 64 bytes.
fn peer_table_bytes(bytes: &[u8]) -> Option<u64> {
    match read_u32(bytes, 56) {
        0 => Some(256 * 64),
        n @ 256..=16_384 => Some(u64::from(n) * 64),
        _ => None,
    }
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut le = [0u8; 8];
    le.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(le)
}

/// The raw fields of entry `id`, read at the normative offsets.
struct RawEntry {
    channel_id: u32,
    flags: u32,
    max_message_size: u32,
    capacity: u64,
    band_offset: u64,
    state: u32,
    tail: u64,
    head: u64,
}

fn raw_entry(bytes: &[u8], id: u32) -> RawEntry {
    let base = CHANNEL_TABLE_OFFSET + id as usize * CHANNEL_ENTRY_SIZE;
    RawEntry {
        channel_id: read_u32(bytes, base),
        flags: read_u32(bytes, base + 4),
        max_message_size: read_u32(bytes, base + 80),
        capacity: read_u64(bytes, base + 8),
        band_offset: read_u64(bytes, base + 16),
        state: read_u32(bytes, base + 24),
        tail: read_u64(bytes, base + 128),
        head: read_u64(bytes, base + 256),
    }
}

/// `[start, end)` of a band, or `None` if the end overflows.
fn band_range(band_offset: u64, capacity: u64) -> Option<(u64, u64)> {
    let len = capacity.checked_mul(SLOT_SIZE as u64)?;
    Some((band_offset, band_offset.checked_add(len)?))
}

fn check_accepted(bytes: &[u8], info: &SegmentInfo) {
    let available = bytes.len() as u64;
    assert!(
        available >= HEADER_SIZE as u64,
        "accepted a truncated header"
    );
    assert_eq!(read_u64(bytes, 0), MAGIC, "accepted a bad magic");
    assert_eq!(read_u32(bytes, 8), 1, "accepted an unknown version");
    assert_eq!(read_u32(bytes, 12) as usize, MAX_CHANNELS);
    assert!(read_u32(bytes, 16) as usize <= MAX_CHANNELS);
    assert_eq!(info.header.magic, MAGIC);
    assert_eq!(info.header.segment_size, read_u64(bytes, 24));
    assert_eq!(info.header.band_cursor, read_u64(bytes, 32));

    let segment_len = info.segment_len;
    match read_u64(bytes, 24) {
        0 => assert_eq!(segment_len, available),
        recorded => assert_eq!(segment_len, recorded),
    }
    assert!(
        (HEADER_SIZE as u64..=available).contains(&segment_len),
        "segment_len {segment_len} outside {HEADER_SIZE}..={available}"
    );
    let cursor = read_u64(bytes, 32);
    assert!(
        cursor == 0
            || ((HEADER_SIZE as u64..=segment_len).contains(&cursor)
                && cursor.is_multiple_of(SLOT_ALIGN as u64)),
        "accepted band_cursor {cursor}"
    );

    // peer_records (offset 56): 0 or 256..=16,384.
    let table_bytes = peer_table_bytes(bytes).expect("accepted a bad peer_records");
    assert_eq!(info.header.peer_records, read_u32(bytes, 56));

    // peer_table_offset (offset 48): 0, or a 64-aligned table after the header, inside the
    // segment, sharing no byte with any listed band.
    let table = read_u64(bytes, 48);
    assert_eq!(info.header.peer_table_offset, table);
    if table != 0 {
        assert!(
            table.is_multiple_of(SLOT_ALIGN as u64)
                && table >= HEADER_SIZE as u64
                && table
                    .checked_add(table_bytes)
                    .is_some_and(|end| end <= segment_len),
            "accepted peer_table_offset {table}"
        );
        for channel in &info.channels {
            let (start, end) = band_range(channel.band_offset, channel.capacity).expect("valid");
            assert!(
                end <= table || table + table_bytes <= start,
                "accepted a peer table overlapping channel {}'s band",
                channel.id
            );
        }
    }

    let mut listed = [false; MAX_CHANNELS];
    let mut previous: Option<u32> = None;
    for channel in &info.channels {
        assert!((channel.id as usize) < MAX_CHANNELS);
        if let Some(previous) = previous {
            assert!(previous < channel.id, "channels not in id order");
        }
        previous = Some(channel.id);
        listed[channel.id as usize] = true;
        check_channel(bytes, segment_len, channel);
    }
    for a in 0..info.channels.len() {
        for b in a + 1..info.channels.len() {
            let (x, y) = (&info.channels[a], &info.channels[b]);
            let (xs, xe) = band_range(x.band_offset, x.capacity).expect("checked above");
            let (ys, ye) = band_range(y.band_offset, y.capacity).expect("checked above");
            assert!(
                xe <= ys || ye <= xs,
                "bands of channels {} and {} overlap",
                x.id,
                y.id
            );
        }
    }
    // Whatever was left out of the list must really not be a created channel.
    for id in 0..MAX_CHANNELS as u32 {
        if !listed[id as usize] {
            let raw = raw_entry(bytes, id);
            assert_eq!(
                raw.capacity, 0,
                "channel {id} has a capacity but was not listed"
            );
            assert!(raw.state <= 1, "channel {id} is READY but was not listed");
        }
    }
}

fn check_channel(bytes: &[u8], segment_len: u64, channel: &ChannelInfo) {
    let id = channel.id;
    let raw = raw_entry(bytes, id);
    assert_eq!(channel.capacity, raw.capacity);
    assert_eq!(channel.band_offset, raw.band_offset);
    assert_eq!(channel.head, raw.head);
    assert_eq!(channel.tail, raw.tail);
    assert_eq!(
        raw.channel_id, id,
        "channel {id}: channel_id field disagrees"
    );
    assert!(raw.state <= 2, "channel {id}: unknown state accepted");
    let capacity = channel.capacity;
    assert!(capacity.is_power_of_two());
    assert!(
        (MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity),
        "capacity {capacity} accepted"
    );
    assert_eq!(
        channel.band_offset % SLOT_ALIGN as u64,
        0,
        "channel {id}: misaligned band"
    );
    assert!(
        channel.band_offset >= HEADER_SIZE as u64,
        "channel {id}: band inside the header"
    );
    let (_, end) = band_range(channel.band_offset, capacity)
        .unwrap_or_else(|| panic!("channel {id}: band end overflows"));
    assert!(
        end <= segment_len,
        "channel {id}: band ends at {end} past {segment_len}"
    );
    assert!(
        channel.depth <= capacity,
        "channel {id}: depth above capacity"
    );
    assert!(raw.flags & !1 == 0, "channel {id}: unknown flags accepted");
    assert_eq!(
        raw.flags & 1 != 0,
        raw.max_message_size != 0,
        "channel {id}: RUNS and max_message_size disagree"
    );
    if raw.flags & 1 != 0 {
        let limit = u64::from(raw.max_message_size);
        assert!(
            limit > 960 && limit <= capacity * 960,
            "channel {id}: max_message_size {limit} accepted for {capacity} slots"
        );
    }
    assert_eq!(
        channel.depth,
        raw.tail.saturating_sub(raw.head).min(capacity)
    );
}

fn check_rejected(bytes: &[u8], error: &Error) {
    let available = bytes.len() as u64;
    // Every error must describe itself without panicking.
    assert!(!error.to_string().is_empty());
    match *error {
        Error::RegionTooSmall { len, needed } => {
            assert_eq!(len, available);
            assert_eq!(needed, HEADER_SIZE as u64);
            assert!(available < needed);
        }
        Error::NotReady => {
            assert!(available >= 8);
            assert_eq!(read_u64(bytes, 0), 0, "NotReady with magic set");
        }
        Error::Corrupt(corruption) => check_corruption(bytes, &corruption),
        other => panic!("parse_segment returned an error it has no cause for: {other:?}"),
    }
}

fn check_corruption(bytes: &[u8], corruption: &Corruption) {
    assert!(!corruption.field().is_empty());
    assert!(!corruption.to_string().is_empty());
    let available = bytes.len() as u64;
    if corruption.channel().is_some() {
        // Entry errors are only reached once the whole table is present.
        assert!(available >= HEADER_SIZE as u64);
    }
    use Corruption::*;
    match *corruption {
        BlobPoolOutOfRange { found, segment_len } => {
            assert_eq!(found, read_u64(bytes, 64));
            assert!(
                found % 64 != 0
                    || found < HEADER_SIZE as u64
                    || found + dmxp_nostd::blob::POOL_DESCRIPTOR_AREA as u64 > segment_len
            );
        }
        BlobPoolBadMagic { found } => {
            let at = read_u64(bytes, 64) as usize;
            assert_eq!(found, read_u64(bytes, at));
            assert_ne!(found, dmxp_nostd::blob::POOL_MAGIC);
        }
        BlobPoolBadGeometry {
            class_count,
            pool_len,
        } => {
            let at = read_u64(bytes, 64) as usize;
            assert_eq!(class_count, read_u32(bytes, at + 8));
            assert_eq!(pool_len, read_u64(bytes, at + 16));
        }
        BlobClassBad { class } => {
            let at = read_u64(bytes, 64) as usize;
            assert!((class as usize) < read_u32(bytes, at + 8) as usize);
        }
        BlobsWithoutPool { channel } => {
            assert_eq!(read_u64(bytes, 64), 0);
            assert_ne!(raw_entry(bytes, channel).flags & 2, 0);
        }
        BadMagic { found } => {
            assert_eq!(found, read_u64(bytes, 0));
            assert!(found != 0 && found != MAGIC);
        }
        UnsupportedVersion { found } => {
            assert_eq!(found, read_u32(bytes, 8));
            assert_ne!(found, 1);
        }
        WrongMaxChannels { found } => {
            assert_eq!(found, read_u32(bytes, 12));
            assert_ne!(found as usize, MAX_CHANNELS);
        }
        ChannelCountTooLarge { found } => {
            assert_eq!(found, read_u32(bytes, 16));
            assert!(found as usize > MAX_CHANNELS);
        }
        SegmentSizeMismatch { recorded, actual } => {
            assert_eq!(recorded, read_u64(bytes, 24));
            assert_eq!(actual, available);
            assert!(recorded > actual || recorded < HEADER_SIZE as u64);
        }
        BandCursorOutOfRange { found, segment_len } => {
            assert_eq!(found, read_u64(bytes, 32));
            assert!(
                found < HEADER_SIZE as u64 || found > segment_len || found % SLOT_ALIGN as u64 != 0
            );
        }
        ChannelIdMismatch { channel, found } => {
            assert_eq!(found, raw_entry(bytes, channel).channel_id);
            assert_ne!(found, channel);
        }
        UnknownChannelState { channel, found } => {
            assert_eq!(found, raw_entry(bytes, channel).state);
            assert!(found > 2);
        }
        CapacityZero { channel } => {
            let raw = raw_entry(bytes, channel);
            assert_eq!(raw.capacity, 0);
            assert_eq!(
                raw.state, 2,
                "capacity 0 is only an error for a READY entry"
            );
        }
        CapacityNotPowerOfTwo { channel, capacity } => {
            assert_eq!(capacity, raw_entry(bytes, channel).capacity);
            assert!(!capacity.is_power_of_two());
        }
        CapacityTooSmall { channel, capacity } => {
            assert_eq!(capacity, raw_entry(bytes, channel).capacity);
            assert!(capacity != 0 && capacity < MIN_CAPACITY);
        }
        CapacityTooLarge { channel, capacity } => {
            assert_eq!(capacity, raw_entry(bytes, channel).capacity);
            assert!(capacity > MAX_CAPACITY);
        }
        BandMisaligned {
            channel,
            band_offset,
        } => {
            assert_eq!(band_offset, raw_entry(bytes, channel).band_offset);
            assert_ne!(band_offset % SLOT_ALIGN as u64, 0);
        }
        BandOverlapsHeader {
            channel,
            band_offset,
        } => {
            assert_eq!(band_offset, raw_entry(bytes, channel).band_offset);
            assert!(band_offset < HEADER_SIZE as u64);
        }
        BandOutsideSegment {
            channel,
            band_offset,
            segment_len,
            ..
        } => {
            let raw = raw_entry(bytes, channel);
            assert_eq!(band_offset, raw.band_offset);
            assert!(segment_len <= available);
            let inside = band_range(raw.band_offset, raw.capacity)
                .is_some_and(|(_, end)| end <= segment_len);
            assert!(!inside, "channel {channel}: band reported outside but fits");
        }
        UnknownChannelFlags { channel, found } => {
            assert_eq!(found, raw_entry(bytes, channel).flags);
            assert_ne!(found & !1, 0);
        }
        MaxMessageSizeOutOfRange {
            channel,
            found,
            capacity,
        } => {
            let raw = raw_entry(bytes, channel);
            assert_eq!(found, raw.max_message_size);
            assert_eq!(capacity, raw.capacity);
            let fits = u64::from(found) > 960 && u64::from(found) <= capacity * 960;
            assert!(
                if raw.flags & 1 != 0 {
                    !fits
                } else {
                    found != 0
                },
                "max_message_size {found} reported out of range but is valid"
            );
        }
        PeerRecordsOutOfRange { found } => {
            assert_eq!(found, read_u32(bytes, 56));
            assert!(
                peer_table_bytes(bytes).is_none(),
                "peer_records {found} is valid"
            );
        }
        PeerTableOutOfRange { found, segment_len } => {
            assert_eq!(found, read_u64(bytes, 48));
            assert!(segment_len <= available);
            let table_bytes = peer_table_bytes(bytes).expect("peer_records checked first");
            let fits = found
                .checked_add(table_bytes)
                .is_some_and(|end| end <= segment_len);
            assert!(
                found != 0
                    && (found % SLOT_ALIGN as u64 != 0 || found < HEADER_SIZE as u64 || !fits),
                "peer_table_offset {found} reported out of range but fits"
            );
        }
        PeerTableOverlapsBand {
            peer_table_offset,
            channel,
        } => {
            assert_eq!(peer_table_offset, read_u64(bytes, 48));
            assert!(available >= HEADER_SIZE as u64);
            let raw = raw_entry(bytes, channel);
            let (start, end) = band_range(raw.band_offset, raw.capacity).expect("validated");
            let table_bytes = peer_table_bytes(bytes).expect("peer_records checked first");
            let table_end = peer_table_offset + table_bytes;
            assert!(
                start < table_end && peer_table_offset < end,
                "peer table reported overlapping channel {channel}'s band but is clear of it"
            );
        }
        BandsOverlap { channel, other } => {
            assert_ne!(channel, other);
            let a = raw_entry(bytes, channel);
            let b = raw_entry(bytes, other);
            let (a_start, a_end) = band_range(a.band_offset, a.capacity).expect("validated");
            let (b_start, b_end) = band_range(b.band_offset, b.capacity).expect("validated");
            assert!(
                a_start < b_end && b_start < a_end,
                "channels {channel} and {other} reported overlapping but are disjoint"
            );
        }
    }
}
