//! Validation of segment bytes, through both entry points: `parse_segment` (a `&[u8]` that may
//! be anything) and the live path (`Segment::attach` + `open_channel` / `validate_all`).
//!
//! Each test builds a valid segment with the core API, drops every view of it, changes bytes at
//! the offsets DESIGN.md §3 and docs/PROTOCOL.md give (written here as literal numbers, so these
//! tests also pin the layout), and expects the exact typed error.

#![cfg(not(loom))]

mod common;

use common::{formatted, segment_len, SegmentBuf};
use dmxp_nostd::{parse_segment, Corruption, Error, Opened, Region, Segment, SendMeta};

/// HEADER_SIZE: 128 bytes of fields + 256 entries × 384 bytes.
const HEADER: u64 = 98_432;
/// The fixture: header + channel 0 (4 slots) + channel 1 (2 slots), 1,088 bytes per slot.
const LEN: u64 = 98_432 + 6 * 1_088;
/// Entry `id` lies at 128 + id × 384.
const ENTRY0: usize = 128;
const ENTRY1: usize = 128 + 384;
/// Bands are carved in creation order from the end of the header.
const BAND0: u64 = 98_432;
const BAND1: u64 = 98_432 + 4 * 1_088;
const PID: u32 = 4_321;

// Header field offsets.
const MAGIC_AT: usize = 0;
const VERSION_AT: usize = 8;
const MAX_CHANNELS_AT: usize = 12;
const CHANNEL_COUNT_AT: usize = 16;
const SEGMENT_SIZE_AT: usize = 24;
const BAND_CURSOR_AT: usize = 32;
// Entry field offsets (relative to the entry).
const CHANNEL_ID: usize = 0;
const CAPACITY: usize = 8;
const BAND_OFFSET: usize = 16;
const STATE: usize = 24;

/// A valid segment: channel 0 with capacity 4, channel 1 with capacity 2, filling it exactly.
fn fixture() -> SegmentBuf {
    assert_eq!(segment_len(&[4, 2]) as u64, LEN);
    formatted(&[4, 2], PID)
}

fn parse_err(bytes: &[u8]) -> Error {
    match parse_segment(bytes) {
        Ok(info) => panic!("parse_segment accepted invalid bytes: {info:?}"),
        Err(error) => error,
    }
}

fn attach_err(region: Region<'_>) -> Error {
    match Segment::attach(region) {
        Ok(_) => panic!("attach accepted an invalid segment"),
        Err(error) => error,
    }
}

fn open_err(buf: &mut SegmentBuf, id: u32) -> Error {
    let segment = Segment::attach(buf.region()).expect("the header itself is valid");
    match segment.open_channel(id) {
        Ok(_) => panic!("open_channel({id}) accepted an invalid entry"),
        Err(error) => error,
    }
}

fn validate_all_err(buf: &mut SegmentBuf) -> Error {
    let segment = Segment::attach(buf.region()).expect("the header itself is valid");
    segment
        .validate_all()
        .expect_err("validate_all accepted an invalid entry")
}

/// A header field is bad: both entry points refuse the whole segment with `expected`.
fn assert_header_corruption(buf: &mut SegmentBuf, expected: Corruption, field: &str) {
    assert_eq!(expected.field(), field);
    assert_eq!(expected.channel(), None);
    assert_eq!(parse_err(buf.bytes()), Error::Corrupt(expected));
    assert_eq!(attach_err(buf.region()), Error::Corrupt(expected));
}

/// Entry `id` is bad: parsing, opening it and validating all entries report `expected`, while
/// the other (healthy) channel of the fixture still opens on the live path.
fn assert_entry_corruption(buf: &mut SegmentBuf, id: u32, expected: Corruption, field: &str) {
    assert_eq!(expected.field(), field);
    assert_eq!(expected.channel(), Some(id));
    assert_eq!(parse_err(buf.bytes()), Error::Corrupt(expected));
    assert_eq!(open_err(buf, id), Error::Corrupt(expected));
    assert_eq!(validate_all_err(buf), Error::Corrupt(expected));
    let healthy = 1 - id;
    let segment = Segment::attach(buf.region()).unwrap();
    let channel = segment.open_channel(healthy).unwrap();
    channel
        .try_send(b"still works", &SendMeta::default())
        .unwrap();
    let mut out = [0u8; 16];
    assert_eq!(channel.try_recv(&mut out).unwrap().len, 11);
}

// ------------------------------------------------------------------ a valid segment

#[test]
fn valid_segment_fields_sit_at_the_documented_offsets() {
    let mut buf = fixture();
    {
        let segment = Segment::attach(buf.region()).unwrap();
        let channel = segment.open_channel(0).unwrap();
        for i in 0..3u8 {
            channel.try_send(&[i; 5], &SendMeta::default()).unwrap();
        }
        channel.try_recv(&mut [0u8; 960]).unwrap();
    }
    // Header.
    assert_eq!(buf.read_u64(MAGIC_AT), 0x444D_5850_5F4D_454D);
    assert_eq!(
        &buf.bytes()[0..8],
        b"MEM_PXMD",
        "\"DMXP_MEM\" as a little-endian u64"
    );
    assert_eq!(buf.read_u32(VERSION_AT), 1);
    assert_eq!(buf.read_u32(MAX_CHANNELS_AT), 256);
    assert_eq!(buf.read_u32(CHANNEL_COUNT_AT), 2);
    assert_eq!(buf.read_u32(20), 0);
    assert_eq!(buf.read_u64(SEGMENT_SIZE_AT), LEN);
    assert_eq!(buf.read_u64(BAND_CURSOR_AT), LEN);
    assert_eq!(buf.read_u32(40), PID);
    assert_eq!(buf.read_u32(44), 0);
    // Entries.
    assert_eq!(buf.read_u32(ENTRY0 + CHANNEL_ID), 0);
    assert_eq!(buf.read_u64(ENTRY0 + CAPACITY), 4);
    assert_eq!(buf.read_u64(ENTRY0 + BAND_OFFSET), BAND0);
    assert_eq!(buf.read_u32(ENTRY0 + STATE), 2, "READY");
    assert_eq!(buf.read_u32(ENTRY0 + 28), PID);
    assert_eq!(buf.read_u64(ENTRY0 + 128), 3, "tail");
    assert_eq!(buf.read_u64(ENTRY0 + 256), 1, "head");
    assert_eq!(buf.read_u32(ENTRY1 + CHANNEL_ID), 1);
    assert_eq!(buf.read_u64(ENTRY1 + CAPACITY), 2);
    assert_eq!(buf.read_u64(ENTRY1 + BAND_OFFSET), BAND1);
    assert_eq!(buf.read_u32(ENTRY1 + STATE), 2);
    // Slots of channel 0: slot 0 freed for position 4, slots 1 and 2 published, slot 3 free.
    let slot = |i: u64| (BAND0 + i * 1_088) as usize;
    assert_eq!(buf.read_u64(slot(0)), 4);
    assert_eq!(buf.read_u64(slot(1)), 2);
    assert_eq!(buf.read_u64(slot(2)), 3);
    assert_eq!(buf.read_u64(slot(3)), 3);
    assert_eq!(buf.read_u64(slot(1) + 8), 1, "message_id");
    assert_eq!(buf.read_u32(slot(1) + 40), 5, "payload_len");
    assert_eq!(&buf.bytes()[slot(1) + 64..slot(1) + 69], &[1u8; 5]);

    let info = parse_segment(buf.bytes()).unwrap();
    assert_eq!(info.segment_len, LEN);
    assert_eq!(info.header.channel_count, 2);
    assert_eq!(info.header.creator_pid, PID);
    let summary: Vec<_> = info
        .channels
        .iter()
        .map(|c| (c.id, c.capacity, c.band_offset, c.head, c.tail, c.depth))
        .collect();
    assert_eq!(summary, [(0, 4, BAND0, 1, 3, 2), (1, 2, BAND1, 0, 0, 0)]);

    // Bytes past the recorded segment_size are ignored.
    let mut longer = buf.bytes().to_vec();
    longer.extend_from_slice(&[0xAA; 64]);
    let info = parse_segment(&longer).unwrap();
    assert_eq!(info.segment_len, LEN);
    assert_eq!(info.channels.len(), 2);
}

#[test]
fn parse_accepts_unaligned_input() {
    let buf = fixture();
    let aligned = parse_segment(buf.bytes()).unwrap();
    let len = buf.len();
    let mut storage = vec![0u8; len + 8];
    let base = storage.as_ptr() as usize;
    for misalignment in 1..8 {
        let shift = (misalignment + 8 - base % 8) % 8;
        storage[shift..shift + len].copy_from_slice(buf.bytes());
        let input = &storage[shift..shift + len];
        assert_eq!(input.as_ptr() as usize % 8, misalignment);
        let info = parse_segment(input).unwrap();
        assert_eq!(info.header, aligned.header);
        assert_eq!(info.channels, aligned.channels);
    }
}

// ------------------------------------------------------------------ header fields

#[test]
fn bad_magic() {
    let mut buf = fixture();
    buf.write_u64(MAGIC_AT, 0x1122_3344_5566_7788);
    let expected = Corruption::BadMagic {
        found: 0x1122_3344_5566_7788,
    };
    assert_header_corruption(&mut buf, expected, "magic");
}

#[test]
fn magic_zero_is_not_ready() {
    let mut buf = fixture();
    buf.write_u64(MAGIC_AT, 0);
    assert_eq!(parse_err(buf.bytes()), Error::NotReady);
    assert_eq!(attach_err(buf.region()), Error::NotReady);
}

#[test]
fn unsupported_version() {
    let mut buf = fixture();
    buf.write_u32(VERSION_AT, 2);
    assert_header_corruption(
        &mut buf,
        Corruption::UnsupportedVersion { found: 2 },
        "version",
    );
}

#[test]
fn wrong_max_channels() {
    let mut buf = fixture();
    buf.write_u32(MAX_CHANNELS_AT, 255);
    assert_header_corruption(
        &mut buf,
        Corruption::WrongMaxChannels { found: 255 },
        "max_channels",
    );
}

#[test]
fn channel_count_above_256() {
    let mut buf = fixture();
    buf.write_u32(CHANNEL_COUNT_AT, 256);
    assert!(parse_segment(buf.bytes()).is_ok(), "256 is the limit");
    buf.write_u32(CHANNEL_COUNT_AT, 257);
    assert_header_corruption(
        &mut buf,
        Corruption::ChannelCountTooLarge { found: 257 },
        "channel_count",
    );
}

#[test]
fn segment_size_larger_than_the_memory() {
    let mut buf = fixture();
    buf.write_u64(SEGMENT_SIZE_AT, LEN + 1_088);
    let expected = Corruption::SegmentSizeMismatch {
        recorded: LEN + 1_088,
        actual: LEN,
    };
    assert_header_corruption(&mut buf, expected, "segment_size");
}

#[test]
fn segment_size_smaller_than_the_header() {
    let mut buf = fixture();
    buf.write_u64(SEGMENT_SIZE_AT, 4_096);
    let expected = Corruption::SegmentSizeMismatch {
        recorded: 4_096,
        actual: LEN,
    };
    assert_header_corruption(&mut buf, expected, "segment_size");
}

#[test]
fn truncated_segment_is_a_size_mismatch() {
    let mut buf = fixture();
    for cut in [1, 1_088, LEN - HEADER] {
        let short = (LEN - cut) as usize;
        let expected = Error::Corrupt(Corruption::SegmentSizeMismatch {
            recorded: LEN,
            actual: LEN - cut,
        });
        assert_eq!(parse_err(&buf.bytes()[..short]), expected);
        let region = Region::new(&mut buf.bytes_mut()[..short]).unwrap();
        assert_eq!(attach_err(region), expected);
    }
}

#[test]
fn segment_size_zero_means_validate_against_what_is_mapped() {
    let mut buf = fixture();
    buf.write_u64(SEGMENT_SIZE_AT, 0);
    let info = parse_segment(buf.bytes()).unwrap();
    assert_eq!(info.segment_len, LEN);
    assert_eq!(info.channels.len(), 2);
    let segment = Segment::attach(buf.region()).unwrap();
    assert_eq!(segment.len(), LEN);
}

#[test]
fn band_cursor_inside_the_header() {
    let mut buf = fixture();
    buf.write_u64(BAND_CURSOR_AT, 4_096);
    let expected = Corruption::BandCursorOutOfRange {
        found: 4_096,
        segment_len: LEN,
    };
    assert_header_corruption(&mut buf, expected, "band_cursor");
}

#[test]
fn band_cursor_past_the_end() {
    let mut buf = fixture();
    for found in [LEN + 64, u64::MAX] {
        buf.write_u64(BAND_CURSOR_AT, found);
        let expected = Corruption::BandCursorOutOfRange {
            found,
            segment_len: LEN,
        };
        assert_header_corruption(&mut buf, expected, "band_cursor");
    }
}

#[test]
fn band_cursor_misaligned() {
    let mut buf = fixture();
    for found in [HEADER + 1, HEADER + 1_088 + 8] {
        buf.write_u64(BAND_CURSOR_AT, found);
        let expected = Corruption::BandCursorOutOfRange {
            found,
            segment_len: LEN,
        };
        assert_header_corruption(&mut buf, expected, "band_cursor");
    }
}

// ------------------------------------------------------------------ channel entries

#[test]
fn channel_id_mismatch() {
    let mut buf = fixture();
    buf.write_u32(ENTRY1 + CHANNEL_ID, 7);
    let expected = Corruption::ChannelIdMismatch {
        channel: 1,
        found: 7,
    };
    assert_entry_corruption(&mut buf, 1, expected, "channel_id");
}

#[test]
fn unknown_channel_state() {
    let mut buf = fixture();
    buf.write_u32(ENTRY0 + STATE, 3);
    let expected = Corruption::UnknownChannelState {
        channel: 0,
        found: 3,
    };
    assert_entry_corruption(&mut buf, 0, expected, "state");
}

#[test]
fn unknown_state_of_an_unused_entry() {
    let mut buf = fixture();
    let entry9 = 128 + 9 * 384;
    buf.write_u32(entry9 + STATE, 0xFFFF_FFFF);
    let expected = Error::Corrupt(Corruption::UnknownChannelState {
        channel: 9,
        found: 0xFFFF_FFFF,
    });
    assert_eq!(parse_err(buf.bytes()), expected);
    assert_eq!(open_err(&mut buf, 9), expected);
}

#[test]
fn ready_with_capacity_zero() {
    let mut buf = fixture();
    buf.write_u64(ENTRY1 + CAPACITY, 0);
    assert_entry_corruption(
        &mut buf,
        1,
        Corruption::CapacityZero { channel: 1 },
        "capacity",
    );
}

#[test]
fn creating_with_capacity_zero_is_being_created() {
    let mut buf = fixture();
    buf.write_u64(ENTRY1 + CAPACITY, 0);
    buf.write_u32(ENTRY1 + STATE, 1);
    let info = parse_segment(buf.bytes()).unwrap();
    assert_eq!(info.channels.iter().map(|c| c.id).collect::<Vec<_>>(), [0]);
    assert_eq!(open_err(&mut buf, 1), Error::ChannelBeingCreated { id: 1 });
}

#[test]
fn capacity_not_a_power_of_two() {
    let mut buf = fixture();
    buf.write_u64(ENTRY0 + CAPACITY, 3);
    let expected = Corruption::CapacityNotPowerOfTwo {
        channel: 0,
        capacity: 3,
    };
    assert_entry_corruption(&mut buf, 0, expected, "capacity");
}

#[test]
fn capacity_one_is_too_small() {
    let mut buf = fixture();
    buf.write_u64(ENTRY1 + CAPACITY, 1);
    let expected = Corruption::CapacityTooSmall {
        channel: 1,
        capacity: 1,
    };
    assert_entry_corruption(&mut buf, 1, expected, "capacity");
}

#[test]
fn capacity_above_2_pow_32() {
    let mut buf = fixture();
    for capacity in [1u64 << 33, 1 << 40, 1 << 63] {
        buf.write_u64(ENTRY0 + CAPACITY, capacity);
        let expected = Corruption::CapacityTooLarge {
            channel: 0,
            capacity,
        };
        assert_entry_corruption(&mut buf, 0, expected, "capacity");
    }
}

#[test]
fn capacity_2_pow_32_is_checked_against_the_segment() {
    let mut buf = fixture();
    buf.write_u64(ENTRY0 + CAPACITY, 1 << 32);
    let expected = Corruption::BandOutsideSegment {
        channel: 0,
        band_offset: BAND0,
        band_len: (1 << 32) * 1_088,
        segment_len: LEN,
    };
    assert_entry_corruption(&mut buf, 0, expected, "band_offset");
}

#[test]
fn band_misaligned() {
    let mut buf = fixture();
    for band_offset in [BAND1 + 8, BAND1 + 1, u64::MAX] {
        buf.write_u64(ENTRY1 + BAND_OFFSET, band_offset);
        let expected = Corruption::BandMisaligned {
            channel: 1,
            band_offset,
        };
        assert_entry_corruption(&mut buf, 1, expected, "band_offset");
    }
}

#[test]
fn band_inside_the_header() {
    let mut buf = fixture();
    for band_offset in [0, 128, HEADER - 64] {
        buf.write_u64(ENTRY0 + BAND_OFFSET, band_offset);
        let expected = Corruption::BandOverlapsHeader {
            channel: 0,
            band_offset,
        };
        assert_entry_corruption(&mut buf, 0, expected, "band_offset");
    }
}

#[test]
fn band_past_the_end() {
    let mut buf = fixture();
    // One slot too far, just past the end, and values whose end overflows a u64.
    for band_offset in [BAND1 + 64, LEN, u64::MAX - 63, u64::MAX - 2_047] {
        buf.write_u64(ENTRY1 + BAND_OFFSET, band_offset);
        let expected = Corruption::BandOutsideSegment {
            channel: 1,
            band_offset,
            band_len: 2 * 1_088,
            segment_len: LEN,
        };
        assert_entry_corruption(&mut buf, 1, expected, "band_offset");
    }
}

#[test]
fn bands_overlapping() {
    let mut buf = fixture();
    // Channel 1's band moved into the second half of channel 0's band.
    buf.write_u64(ENTRY1 + BAND_OFFSET, BAND0 + 2 * 1_088);
    let one_over_zero = Error::Corrupt(Corruption::BandsOverlap {
        channel: 1,
        other: 0,
    });
    assert_eq!(parse_err(buf.bytes()), one_over_zero);
    assert_eq!(validate_all_err(&mut buf), one_over_zero);
    assert_eq!(open_err(&mut buf, 1), one_over_zero);
    assert_eq!(
        open_err(&mut buf, 0),
        Error::Corrupt(Corruption::BandsOverlap {
            channel: 0,
            other: 1
        })
    );
    if let Error::Corrupt(corruption) = one_over_zero {
        assert_eq!(corruption.field(), "band_offset");
    }

    // Both channels on exactly the same band.
    buf.write_u64(ENTRY0 + CAPACITY, 2);
    buf.write_u64(ENTRY1 + BAND_OFFSET, BAND0);
    assert_eq!(parse_err(buf.bytes()), one_over_zero);
    assert_eq!(open_err(&mut buf, 1), one_over_zero);
}

// ------------------------------------------------------------------ too small, misaligned

#[test]
fn too_small_inputs() {
    let buf = fixture();
    for len in [0usize, 1, 127, 128, 4_096, 98_431] {
        assert_eq!(
            parse_err(&buf.bytes()[..len]),
            Error::RegionTooSmall {
                len: len as u64,
                needed: HEADER,
            },
            "{len} bytes"
        );
    }
}

#[test]
fn too_small_regions() {
    let mut buf = fixture();
    for len in [0usize, 127, 128, 98_431] {
        let expected = Error::RegionTooSmall {
            len: len as u64,
            needed: HEADER,
        };
        let region = Region::new(&mut buf.bytes_mut()[..len]).unwrap();
        assert_eq!(attach_err(region), expected, "attach of {len} bytes");
    }
    let mut blank = SegmentBuf::new(127);
    match Segment::format(blank.region(), PID) {
        Ok(_) => panic!("formatted 127 bytes"),
        Err(error) => assert_eq!(
            error,
            Error::RegionTooSmall {
                len: 127,
                needed: HEADER
            }
        ),
    }
}

#[test]
fn misaligned_region() {
    let mut buf = fixture();
    for shift in [1usize, 8, 64] {
        let bytes = &mut buf.bytes_mut()[shift..];
        let addr = bytes.as_ptr() as usize;
        assert_eq!(
            Region::new(bytes).err(),
            Some(Error::RegionMisaligned { addr, align: 128 })
        );
    }
}

// ------------------------------------------------------------------ the channel table

#[test]
fn create_channel_argument_errors() {
    let mut buf = SegmentBuf::for_capacities(&[4]);
    let segment = Segment::format(buf.region(), PID).unwrap();
    for capacity in [0u64, 1, 3, 6, 1 << 33] {
        assert_eq!(
            segment.create_channel(0, capacity, PID).err(),
            Some(Error::InvalidCapacity { capacity })
        );
    }
    for id in [256u32, 1_000, u32::MAX] {
        assert_eq!(
            segment.create_channel(id, 2, PID).err(),
            Some(Error::InvalidChannelId { id })
        );
        assert_eq!(
            segment.open_channel(id).err(),
            Some(Error::InvalidChannelId { id })
        );
    }
    assert_eq!(segment.channel_count(), 0);
    assert_eq!(segment.free_space(), 4 * 1_088, "no band was carved");
}

#[test]
fn out_of_space_leaves_the_id_reusable() {
    let mut buf = SegmentBuf::for_capacities(&[2]);
    let segment = Segment::format(buf.region(), PID).unwrap();
    assert_eq!(
        segment.create_channel(4, 4, PID).err(),
        Some(Error::OutOfSpace {
            needed: 4 * 1_088,
            available: 2 * 1_088
        })
    );
    assert_eq!(segment.channel_count(), 0);
    assert_eq!(
        segment.open_channel(4).err(),
        Some(Error::ChannelNotFound { id: 4 })
    );

    let channel = segment.create_channel(4, 2, PID).unwrap();
    assert_eq!(channel.capacity(), 2);
    assert_eq!(channel.geometry().band_offset, HEADER);
    assert_eq!(segment.channel_count(), 1);
    assert_eq!(segment.free_space(), 0);
    assert_eq!(
        segment.create_channel(5, 2, PID).err(),
        Some(Error::OutOfSpace {
            needed: 2 * 1_088,
            available: 0
        })
    );
    assert_eq!(buf.read_u32(128 + 5 * 384 + STATE), 0, "claim released");
    assert_eq!(buf.read_u32(128 + 4 * 384 + STATE), 2);
}

#[test]
fn channel_exists_and_open_or_create() {
    let mut buf = SegmentBuf::for_capacities(&[2]);
    let segment = Segment::format(buf.region(), PID).unwrap();
    segment.create_channel(3, 2, PID).unwrap();
    assert_eq!(
        segment.create_channel(3, 4, PID).err(),
        Some(Error::ChannelExists { id: 3, capacity: 2 })
    );
    let (channel, opened) = segment.open_or_create_channel(3, 8, PID).unwrap();
    assert_eq!(opened, Opened::Existing);
    assert_eq!(channel.capacity(), 2);
    assert_eq!(segment.channel_count(), 1);
}

#[test]
fn open_missing_channel() {
    let mut buf = fixture();
    let segment = Segment::attach(buf.region()).unwrap();
    for id in [2u32, 5, 255] {
        assert_eq!(
            segment.open_channel(id).err(),
            Some(Error::ChannelNotFound { id })
        );
    }
}

#[test]
fn channel_count_after_several_creations() {
    let mut buf = SegmentBuf::for_capacities(&[2, 4, 8]);
    {
        let segment = Segment::format(buf.region(), PID).unwrap();
        for (id, capacity) in [(7u32, 2u64), (0, 4), (255, 8)] {
            segment.create_channel(id, capacity, PID).unwrap();
        }
        assert_eq!(segment.channel_count(), 3);
        let listed: Vec<_> = segment
            .channels()
            .iter()
            .map(|c| (c.id, c.capacity, c.band_offset))
            .collect();
        // Listed in id order; bands carved in creation order.
        assert_eq!(
            listed,
            [
                (0, 4, HEADER + 2 * 1_088),
                (7, 2, HEADER),
                (255, 8, HEADER + 6 * 1_088)
            ]
        );
    }
    assert_eq!(buf.read_u32(CHANNEL_COUNT_AT), 3);
    let info = parse_segment(buf.bytes()).unwrap();
    assert_eq!(info.header.channel_count, 3);
    assert_eq!(
        info.channels.iter().map(|c| c.id).collect::<Vec<_>>(),
        [0, 7, 255]
    );
}

#[test]
fn format_refuses_a_formatted_region() {
    let mut buf = fixture();
    {
        let segment = Segment::attach(buf.region()).unwrap();
        let channel = segment.open_channel(1).unwrap();
        channel.try_send(b"keep me", &SendMeta::default()).unwrap();
    }
    let before = buf.bytes().to_vec();
    assert_eq!(
        Segment::format(buf.region(), 1).err(),
        Some(Error::AlreadyFormatted)
    );
    assert!(buf.bytes() == before.as_slice(), "format wrote nothing");
    let segment = Segment::attach(buf.region()).unwrap();
    let mut out = [0u8; 960];
    let received = segment.open_channel(1).unwrap().try_recv(&mut out).unwrap();
    assert_eq!(&out[..received.len], b"keep me");
}

/// Offset of `peer_table_offset` in the header.
const PEER_TABLE_AT: usize = 48;
/// A default peer table: 256 records of 64 bytes.
const TABLE: u64 = 16_384;

/// Channel 0 of 4 slots at `band`, and room for two peer tables: the header, then 2 × 16 KiB
/// and the band in some order, `peer_table_offset` set to `table`.
fn with_table(band: u64, table: u64) -> SegmentBuf {
    let len = HEADER + 4 * 1_088 + 2 * TABLE;
    // A copy of the formatted fixture, grown (formatting anew is slow under Miri).
    let mut bytes = formatted(&[4], PID).bytes().to_vec();
    bytes.resize(len as usize, 0);
    let mut buf = SegmentBuf::from_bytes(&bytes);
    buf.write_u64(SEGMENT_SIZE_AT, len);
    buf.write_u64(ENTRY0 + BAND_OFFSET, band);
    buf.write_u64(PEER_TABLE_AT, table);
    buf
}

#[test]
fn a_peer_table_right_after_a_band_or_right_before_it_is_valid() {
    let band_end = BAND0 + 4 * 1_088;
    let after = with_table(BAND0, band_end);
    let info = parse_segment(after.bytes()).unwrap();
    assert_eq!(info.header.peer_table_offset, band_end);

    // At the first byte past the header, with the band moved to start where it ends.
    let before = with_table(HEADER + TABLE, HEADER);
    let info = parse_segment(before.bytes()).unwrap();
    assert_eq!(info.channels[0].band_offset, HEADER + TABLE);
}

#[test]
fn a_peer_table_sharing_one_record_with_a_band_is_refused() {
    let band_end = BAND0 + 4 * 1_088;
    // Its first record on the band's last 64 bytes.
    let overlapping_end = with_table(BAND0, band_end - 64);
    let expected = Error::Corrupt(Corruption::PeerTableOverlapsBand {
        peer_table_offset: band_end - 64,
        channel: 0,
    });
    assert_eq!(parse_err(overlapping_end.bytes()), expected);

    // Its last record on the band's first 64 bytes.
    let overlapping_start = with_table(HEADER + TABLE - 64, HEADER);
    assert_eq!(
        parse_err(overlapping_start.bytes()),
        Error::Corrupt(Corruption::PeerTableOverlapsBand {
            peer_table_offset: HEADER,
            channel: 0,
        })
    );
}

#[test]
fn a_peer_table_inside_the_header_or_misaligned_is_out_of_range() {
    let band_end = BAND0 + 4 * 1_088;
    for bad in [HEADER - 64, band_end + 8] {
        let mut buf = with_table(BAND0, bad);
        let expected = Corruption::PeerTableOutOfRange {
            found: bad,
            segment_len: buf.len() as u64,
        };
        assert_eq!(parse_err(buf.bytes()), Error::Corrupt(expected));
        assert_eq!(attach_err(buf.region()), Error::Corrupt(expected));
    }
}
