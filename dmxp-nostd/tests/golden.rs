//! The golden segment: `tests/golden/segment_v1.bin`, described field by field in
//! `tests/golden/segment_v1.md`, which clients in other languages decode too.
//!
//! Regenerate the file after an intended layout change with
//! `DMXP_REGENERATE_GOLDEN=1 cargo test -p dmxp-nostd --test golden`, then run the tests again
//! without the variable (the file is compiled in) and update the `.md`.

#![cfg(not(loom))]

mod common;

use common::SegmentBuf;
use dmxp_nostd::layout::runtime;
use dmxp_nostd::{parse_segment, MessageMeta, RecvError, Segment, SendError, SendMeta};

const GOLDEN: &[u8] = include_bytes!("golden/segment_v1.bin");
const GOLDEN_MD: &str = include_str!("golden/segment_v1.md");
const GOLDEN_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/segment_v1.bin");

const PID: u32 = 4_242;
/// Header (98,432) + channel 0 (4 slots) + channel 1 (2 slots), 1,088 bytes per slot.
const LEN: usize = 98_432 + 6 * 1_088;
const BAND0: u64 = 98_432;
const BAND1: u64 = 98_432 + 4 * 1_088;

/// A message of the golden segment, in send order.
struct Message {
    channel: u32,
    message_id: u64,
    message_type: u32,
    flags: u16,
    timestamp_ns: u64,
    payload: &'static [u8],
}

const MESSAGES: [Message; 5] = [
    // Consumed before the bytes are taken: its slot is freed but keeps its contents.
    Message {
        channel: 0,
        message_id: 0,
        message_type: 1,
        flags: 0,
        timestamp_ns: 1_000_000_000,
        payload: b"first message",
    },
    Message {
        channel: 0,
        message_id: 1,
        message_type: 2,
        flags: 0x0100,
        timestamp_ns: 1_000_000_001,
        payload: b"DMXP golden segment v1",
    },
    Message {
        channel: 0,
        message_id: 2,
        message_type: 3,
        flags: 0,
        timestamp_ns: 1_000_000_002,
        payload: b"The quick brown fox jumps over the lazy dog; 0123456789 ok.",
    },
    Message {
        channel: 1,
        message_id: 0,
        message_type: 7,
        flags: 0x0100,
        timestamp_ns: 1_000_000_003,
        payload: b"",
    },
    Message {
        channel: 1,
        message_id: 1,
        message_type: 8,
        flags: 0x0300,
        timestamp_ns: 1_000_000_004,
        payload: b"ninebytes",
    },
];

impl Message {
    fn send_meta(&self) -> SendMeta {
        SendMeta {
            message_type: self.message_type,
            flags: self.flags,
            timestamp_ns: self.timestamp_ns,
            sender_pid: PID,
            sender_runtime: runtime::RUST,
        }
    }

    fn meta(&self) -> MessageMeta {
        MessageMeta {
            message_id: self.message_id,
            timestamp_ns: self.timestamp_ns,
            channel_id: self.channel,
            message_type: self.message_type,
            sender_pid: PID,
            sender_runtime: runtime::RUST,
            flags: self.flags,
            payload_len: self.payload.len() as u32,
            reserved: 0,
        }
    }
}

/// Builds the golden segment with the core API.
fn build() -> SegmentBuf {
    let mut buf = SegmentBuf::new(LEN);
    let segment = Segment::format(buf.region(), PID).unwrap();
    let channels = [
        segment.create_channel(0, 4, PID).unwrap(),
        segment.create_channel(1, 2, PID).unwrap(),
    ];
    for message in &MESSAGES {
        let id = channels[message.channel as usize]
            .try_send(message.payload, &message.send_meta())
            .unwrap();
        assert_eq!(id, message.message_id);
    }
    let mut out = [0u8; 960];
    let received = channels[0].try_recv(&mut out).unwrap();
    assert_eq!(received.meta, MESSAGES[0].meta());
    buf
}

/// Where `offset` lies in the layout, for failure messages.
fn describe(offset: usize) -> String {
    match offset {
        0..=127 => format!("header field area, byte {offset}"),
        128..=98_431 => {
            let relative = offset - 128;
            format!("channel entry {}, byte {}", relative / 384, relative % 384)
        }
        _ => {
            let relative = offset - 98_432;
            format!(
                "band area, slot {} (counting from the first band), byte {}",
                relative / 1_088,
                relative % 1_088
            )
        }
    }
}

fn assert_same_bytes(built: &[u8], golden: &[u8]) {
    if let Some(offset) = built.iter().zip(golden).position(|(a, b)| a != b) {
        let end = (offset + 16).min(built.len()).min(golden.len());
        panic!(
            "golden segment differs first at offset {offset} ({}):\n  built  {:02x?}\n  golden {:02x?}\n\
             (after an intended layout change: DMXP_REGENERATE_GOLDEN=1 cargo test -p dmxp-nostd --test golden)",
            describe(offset),
            &built[offset..end],
            &golden[offset..end],
        );
    }
    assert_eq!(built.len(), golden.len(), "golden segment length differs");
}

#[test]
fn golden_segment_is_reproduced_byte_for_byte() {
    let built = build();
    if std::env::var_os("DMXP_REGENERATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN_PATH, built.bytes()).unwrap();
        eprintln!("wrote {GOLDEN_PATH} ({} bytes)", built.len());
        return;
    }
    assert_same_bytes(built.bytes(), GOLDEN);
}

#[test]
fn golden_file_parses() {
    let info = parse_segment(GOLDEN).unwrap();
    assert_eq!(info.segment_len, LEN as u64);
    assert_eq!(info.header.version, 1);
    assert_eq!(info.header.channel_count, 2);
    assert_eq!(info.header.segment_size, LEN as u64);
    assert_eq!(info.header.band_cursor, LEN as u64);
    assert_eq!(info.header.creator_pid, PID);
    let channels: Vec<_> = info
        .channels
        .iter()
        .map(|c| (c.id, c.capacity, c.band_offset, c.head, c.tail, c.depth))
        .collect();
    assert_eq!(channels, [(0, 4, BAND0, 1, 3, 2), (1, 2, BAND1, 0, 2, 2)]);
}

#[test]
fn golden_file_attaches_and_delivers_the_queued_messages() {
    let mut buf = SegmentBuf::from_bytes(GOLDEN);
    let segment = Segment::attach(buf.region()).unwrap();
    assert_eq!(segment.creator_pid(), PID);
    assert_eq!(segment.free_space(), 0);
    segment.validate_all().unwrap();
    let listed: Vec<_> = segment.channels().iter().map(|c| (c.id, c.depth)).collect();
    assert_eq!(listed, [(0, 2), (1, 2)]);

    let mut out = [0u8; 960];
    for (id, capacity) in [(0u32, 4u64), (1, 2)] {
        let channel = segment.open_channel(id).unwrap();
        assert_eq!(channel.capacity(), capacity);
        // Channel 0 holds 2 of 4 (slot 3 is free); channel 1 holds 2 of 2.
        assert_eq!(channel.has_free_slot(), id == 0);
        if id == 1 {
            assert_eq!(
                channel.try_send(b"no room", &SendMeta::default()).err(),
                Some(SendError::Full)
            );
        }
        for message in MESSAGES.iter().skip(1).filter(|m| m.channel == id) {
            let received = channel.try_recv(&mut out).unwrap();
            assert_eq!(received.meta, message.meta());
            assert_eq!(&out[..received.len], message.payload);
        }
        assert_eq!(channel.try_recv(&mut out).err(), Some(RecvError::Empty));
        // Every slot's sequence is consistent: the ring takes exactly `capacity` more messages.
        for _ in 0..capacity {
            channel.try_send(b"more", &SendMeta::default()).unwrap();
        }
        assert_eq!(
            channel.try_send(b"more", &SendMeta::default()).err(),
            Some(SendError::Full)
        );
    }
}

/// A value in the `.md` tables: an integer (decimal or `0x` hex, stored little-endian in
/// `size` bytes) or a quoted ASCII string of exactly `size` bytes.
fn documented_bytes(value: &str, size: usize) -> Vec<u8> {
    if let Some(text) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        assert_eq!(text.len(), size, "string {value} has size {size}");
        return text.as_bytes().to_vec();
    }
    let number = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse::<u64>(),
    }
    .unwrap_or_else(|_| panic!("unreadable value {value:?}"));
    assert!(matches!(size, 1 | 2 | 4 | 8), "integer of size {size}");
    let bytes = number.to_le_bytes();
    assert!(
        bytes[size..].iter().all(|&b| b == 0),
        "{value} does not fit in {size} bytes"
    );
    bytes[..size].to_vec()
}

/// Pure text and byte comparisons, with nothing for Miri to check: skipped under Miri, where
/// scanning the whole file is slow.
#[test]
#[cfg_attr(miri, ignore)]
fn golden_md_describes_every_nonzero_byte() {
    assert!(GOLDEN_MD.contains(&format!("{LEN} bytes")));
    let mut covered = vec![false; GOLDEN.len()];
    let mut rows = 0;
    for line in GOLDEN_MD.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| offset | size | field | value |` rows; headers and separators do not parse.
        let [_, offset, size, field, value, _] = cells[..] else {
            continue;
        };
        let Ok(offset) = offset.parse::<usize>() else {
            continue;
        };
        let size: usize = size.parse().unwrap();
        let expected = documented_bytes(value, size);
        assert_eq!(
            &GOLDEN[offset..offset + size],
            expected.as_slice(),
            "{field} at {offset} ({})",
            describe(offset)
        );
        covered[offset..offset + size].fill(true);
        rows += 1;
    }
    assert!(rows > 50, "only {rows} rows documented");
    let undocumented: Vec<usize> = (0..GOLDEN.len())
        .filter(|&i| GOLDEN[i] != 0 && !covered[i])
        .collect();
    assert!(
        undocumented.is_empty(),
        "non-zero bytes not in the .md: first at {} ({})",
        undocumented[0],
        describe(undocumented[0])
    );
}
