//! Messages longer than one slot (PROTOCOL.md §12): round trips at the edges of a slot and of
//! the limit, order with single-slot messages, refusals that leave the ring untouched, runs a
//! peer corrupted, batches and in-place receives around runs, the entry checks, a producer
//! that dies mid-run, threads racing, and a model of the channel as a queue.

#![cfg(not(loom))]

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use common::SegmentBuf;
use dmxp_nostd::layout::{
    channel_entry_offset, message_flags, runtime, HEADER_SIZE, MSG_INLINE, PEER_TABLE_SIZE,
    SLOT_SIZE,
};
use dmxp_nostd::{
    Channel, ChannelOptions, Corruption, Error, Liveness, PeerRole, RecvError, Segment, SendError,
    SendMeta,
};
use proptest::prelude::*;

const PID: u32 = 7;
/// Channel 0's band starts right after the header.
const BAND: usize = HEADER_SIZE;

/// A segment with channel 0 of `capacity` slots taking messages up to `limit` bytes, and room
/// for a peer table after the band.
fn setup(capacity: u64, limit: usize) -> SegmentBuf {
    let mut buf = SegmentBuf::new(HEADER_SIZE + capacity as usize * SLOT_SIZE + PEER_TABLE_SIZE);
    {
        let segment = Segment::format(buf.region(), PID).unwrap();
        let options = ChannelOptions::default().with_max_message_size(limit);
        segment
            .open_or_create_channel_with(0, capacity, PID, options)
            .unwrap();
    }
    buf
}

fn open(buf: &mut SegmentBuf) -> Channel<'_> {
    Segment::attach(buf.region())
        .unwrap()
        .open_channel(0)
        .unwrap()
}

/// A payload of `len` bytes that says which message it is: byte `k` is `(seed + k × 31) mod 251`.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| ((seed as usize + k * 31) % 251) as u8)
        .collect()
}

fn recv(channel: &Channel<'_>) -> Result<Vec<u8>, RecvError> {
    let mut buf = vec![0u8; channel.max_message_size()];
    let received = channel.try_recv(&mut buf)?;
    buf.truncate(received.len);
    Ok(buf)
}

/// Byte offset of field `offset` of position `p`'s slot (channel 0 of `capacity` slots).
fn slot_field(capacity: u64, p: u64, offset: usize) -> usize {
    BAND + (p % capacity) as usize * SLOT_SIZE + offset
}

const SLOT_FLAGS: usize = 38;
const SLOT_MESSAGE_ID: usize = 8;
const SLOT_PAYLOAD_LEN: usize = 40;
const SLOT_RUN_SLOTS: usize = 48;
const SLOT_RUN_INDEX: usize = 52;

#[test]
fn runs_round_trip_at_the_edges_over_many_laps() {
    let limit = 8 * MSG_INLINE;
    let mut buf = setup(16, limit);
    let channel = open(&mut buf);
    assert_eq!(channel.max_message_size(), limit);
    assert!(channel.geometry().carries_runs());
    let sizes = [961, 1_920, 1_921, 2_881, 5_000, limit, 1, 960, 0];
    // Under Miri, enough rounds to wrap the ring twice.
    let rounds = if cfg!(miri) { 2 } else { 40 };
    for round in 0..rounds {
        for (i, &len) in sizes.iter().enumerate() {
            let seed = round * 100 + i as u64;
            let sent = payload(seed, len);
            let id = channel.try_send(&sent, &SendMeta::default()).unwrap();
            let mut out = vec![0u8; limit];
            let received = channel.try_recv(&mut out).unwrap();
            assert_eq!(received.len, len, "round {round} size {len}");
            assert_eq!(&out[..len], &sent[..], "round {round} size {len}");
            assert_eq!(received.meta.message_id, id);
            assert_eq!(received.meta.payload_len as usize, len);
            let run = len > MSG_INLINE;
            assert_eq!(received.meta.flags & message_flags::RUN != 0, run);
        }
    }
    // Every round moves more than a lap of 16 slots.
    assert!(channel.tail() > rounds * 16);
    assert_eq!(recv(&channel), Err(RecvError::Empty));
}

#[test]
fn runs_and_single_slot_messages_keep_their_order_and_metadata() {
    let mut buf = setup(64, 20_000);
    let channel = open(&mut buf);
    let meta = SendMeta {
        message_type: 42,
        flags: 0x0300,
        timestamp_ns: 123,
        sender_pid: 55,
        sender_runtime: runtime::RUST,
    };
    let sizes = [10, 3_000, 960, 961, 20_000, 5];
    let ids: Vec<u64> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| channel.try_send(&payload(i as u64, len), &meta).unwrap())
        .collect();
    // Positions: each message takes ceil(len / 960) slots (at least one).
    let mut expected = 0;
    for (i, &len) in sizes.iter().enumerate() {
        assert_eq!(ids[i], expected);
        expected += len.div_ceil(MSG_INLINE).max(1) as u64;
    }
    assert_eq!(channel.tail(), expected);
    for (i, &len) in sizes.iter().enumerate() {
        let mut out = vec![0u8; 20_000];
        let received = channel.try_recv(&mut out).unwrap();
        assert_eq!(&out[..received.len], &payload(i as u64, len)[..]);
        assert_eq!(received.meta.message_id, ids[i]);
        assert_eq!(received.meta.message_type, 42);
        assert_eq!(received.meta.sender_pid, 55);
        assert_eq!(received.meta.timestamp_ns, 123);
        assert_eq!(received.meta.flags & 0xFF00, 0x0300);
    }
    assert_eq!(channel.head(), expected);
}

#[test]
fn refusals_leave_the_ring_as_it_was() {
    let mut buf = setup(8, 4_000);
    let channel = open(&mut buf);
    // Over the limit: nothing claimed.
    assert_eq!(
        channel.try_send(&[1u8; 4_001], &SendMeta::default()),
        Err(SendError::TooLarge {
            len: 4_001,
            limit: 4_000
        })
    );
    assert_eq!(channel.tail(), 0);
    // Protocol flags are refused for runs as for single slots.
    let bad = SendMeta {
        flags: message_flags::RUN,
        ..SendMeta::default()
    };
    assert_eq!(
        channel.try_send(&[1u8; 2_000], &bad),
        Err(SendError::ReservedFlags {
            flags: message_flags::RUN
        })
    );
    // Batches carry single-slot messages only.
    assert!(matches!(
        channel.try_send_batch(&[vec![0u8; 10], vec![0u8; 961]], &SendMeta::default()),
        Err(SendError::TooLarge {
            len: 961,
            limit: 960
        })
    ));
    assert_eq!(channel.tail(), 0);
    // A buffer too small for the run consumes nothing.
    channel
        .try_send(&payload(1, 3_500), &SendMeta::default())
        .unwrap();
    let mut small = [0u8; 3_499];
    assert_eq!(
        channel.try_recv(&mut small),
        Err(RecvError::BufferTooSmall {
            needed: 3_500,
            available: 3_499
        })
    );
    assert_eq!(channel.head(), 0);
    assert_eq!(recv(&channel).unwrap(), payload(1, 3_500));
}

#[test]
fn a_run_waits_for_enough_free_slots_and_then_fits() {
    let mut buf = setup(8, 7_680);
    let channel = open(&mut buf);
    for i in 0..5 {
        channel.try_send(&[i], &SendMeta::default()).unwrap();
    }
    // Three free slots: a four-slot run does not fit, and claims nothing.
    let run = payload(9, 3 * MSG_INLINE + 1);
    assert_eq!(
        channel.try_send(&run, &SendMeta::default()),
        Err(SendError::Full)
    );
    assert_eq!(channel.tail(), 5);
    assert_eq!(recv(&channel).unwrap(), [0]);
    channel.try_send(&run, &SendMeta::default()).unwrap();
    assert_eq!(
        channel.try_send(&[9], &SendMeta::default()),
        Err(SendError::Full)
    );
    for i in 1..5 {
        assert_eq!(recv(&channel).unwrap(), [i]);
    }
    assert_eq!(recv(&channel).unwrap(), run);
    // The largest message takes the whole ring.
    let whole = payload(3, 7_680);
    channel.try_send(&whole, &SendMeta::default()).unwrap();
    assert_eq!(recv(&channel).unwrap(), whole);
}

#[test]
fn in_place_receive_reads_a_run_part_by_part() {
    let mut buf = setup(8, 6_000);
    let channel = open(&mut buf);
    let sent = payload(4, 2_500);
    channel.try_send(&sent, &SendMeta::default()).unwrap();
    channel.try_send(b"after", &SendMeta::default()).unwrap();
    {
        let guard = channel.try_recv_in_place().unwrap();
        assert_eq!(guard.len(), 2_500);
        let parts: Vec<Vec<u8>> = guard
            .parts()
            .map(|part| {
                let mut bytes = vec![0u8; part.len()];
                part.copy_to(&mut bytes);
                bytes
            })
            .collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.concat(), sent);
        let mut whole = vec![0u8; 2_500];
        assert_eq!(guard.copy_to(&mut whole), 2_500);
        assert_eq!(whole, sent);
        // While held, the run's slots stay claimed.
        assert_eq!(channel.head(), 3);
        guard.release().unwrap();
    }
    let guard = channel.try_recv_in_place().unwrap();
    assert_eq!(guard.parts().len(), 1);
    let mut bytes = [0u8; 5];
    guard.copy_to(&mut bytes);
    assert_eq!(&bytes, b"after");
    drop(guard);
    // Every slot was freed: a run of the whole ring fits again.
    channel
        .try_send(&payload(5, 6_000), &SendMeta::default())
        .unwrap();
}

#[test]
fn a_batch_stops_before_a_run_and_a_run_at_the_head_is_left_for_a_receive() {
    let mut buf = setup(16, 5_000);
    let channel = open(&mut buf);
    channel.try_send(b"one", &SendMeta::default()).unwrap();
    channel.try_send(b"two", &SendMeta::default()).unwrap();
    channel
        .try_send(&payload(1, 4_000), &SendMeta::default())
        .unwrap();
    channel.try_send(b"three", &SendMeta::default()).unwrap();
    let mut got = Vec::new();
    let batch = channel
        .try_recv_batch(10, |_, bytes| got.push(bytes.to_vec()))
        .unwrap();
    assert_eq!(batch.delivered, 2);
    assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(
        channel
            .try_recv_batch(10, |_, _| panic!("a batch delivered a run"))
            .err(),
        Some(RecvError::BufferTooSmall {
            needed: 4_000,
            available: MSG_INLINE
        })
    );
    assert_eq!(recv(&channel).unwrap(), payload(1, 4_000));
    assert_eq!(recv(&channel).unwrap(), b"three");
}

/// What one receive of [`recv`] gave.
type Received = Result<Vec<u8>, RecvError>;

/// Rewrites some bytes of a segment.
type Scribble = Box<dyn Fn(&mut SegmentBuf)>;

/// Sends a four-slot run at position 0 of a fresh 16-slot channel (and a marker message after
/// it), lets `scribble` rewrite the segment's bytes, and returns what two receives report.
fn receive_after_scribbling(scribble: impl FnOnce(&mut SegmentBuf)) -> (Received, Vec<Received>) {
    let mut buf = setup(16, 8_000);
    {
        let channel = open(&mut buf);
        channel
            .try_send(&payload(2, 3_000), &SendMeta::default())
            .unwrap();
        channel.try_send(b"next", &SendMeta::default()).unwrap();
    }
    scribble(&mut buf);
    let channel = open(&mut buf);
    let first = recv(&channel);
    let rest = (0..3).map(|_| recv(&channel)).collect();
    (first, rest)
}

#[test]
fn a_corrupt_run_is_counted_once_and_the_channel_flows_on() {
    let cases: [(&str, Scribble); 6] = [
        (
            "run_slots past the ring",
            Box::new(|b| b.write_u32(slot_field(16, 0, SLOT_RUN_SLOTS), 1_000)),
        ),
        (
            "run_slots disagree with the length",
            Box::new(|b| b.write_u32(slot_field(16, 0, SLOT_RUN_SLOTS), 3)),
        ),
        (
            "length over the limit",
            Box::new(|b| b.write_u32(slot_field(16, 0, SLOT_PAYLOAD_LEN), 9_000)),
        ),
        (
            "a continuation of another message",
            Box::new(|b| b.write_u64(slot_field(16, 2, SLOT_MESSAGE_ID), 77)),
        ),
        (
            "a continuation out of place",
            Box::new(|b| b.write_u32(slot_field(16, 1, SLOT_RUN_INDEX), 2)),
        ),
        (
            "a continuation with another length",
            Box::new(|b| b.write_u32(slot_field(16, 3, SLOT_PAYLOAD_LEN), 2_999)),
        ),
    ];
    for (name, scribble) in cases {
        let (first, rest) = receive_after_scribbling(scribble);
        assert_eq!(
            first,
            Err(RecvError::Corrupt {
                message_id: 0,
                payload_len: match name {
                    "length over the limit" => 9_000,
                    _ => 3_000,
                }
            }),
            "{name}"
        );
        // The message after it arrives (orphaned continuations are passed over), then empty.
        assert_eq!(rest[0], Ok(b"next".to_vec()), "{name}");
        assert_eq!(rest[1], Err(RecvError::Empty), "{name}");
    }
}

#[test]
fn a_continuation_without_its_start_is_passed_over() {
    let (first, rest) = receive_after_scribbling(|b| {
        // Position 0 becomes a plain single-slot message of 3 bytes: the run's start is gone.
        b.write_u16(slot_field(16, 0, SLOT_FLAGS), 0);
        b.write_u32(slot_field(16, 0, SLOT_PAYLOAD_LEN), 3);
    });
    assert_eq!(first.unwrap(), payload(2, 3));
    assert_eq!(rest[0], Ok(b"next".to_vec()));
    assert_eq!(rest[1], Err(RecvError::Empty));
}

#[test]
fn continuations_published_before_their_start_are_pending_not_empty() {
    let mut buf = setup(16, 8_000);
    {
        let channel = open(&mut buf);
        channel
            .try_send(&payload(2, 3_000), &SendMeta::default())
            .unwrap();
    }
    // Roll the first slot back to "claimed, not published": what a receiver sees while the
    // producer is still writing it.
    buf.write_u64(slot_field(16, 0, 0), 0);
    let channel = open(&mut buf);
    assert_eq!(recv(&channel), Err(RecvError::Pending { position: 0 }));
    assert_eq!(channel.head(), 0);
}

#[test]
fn the_entry_checks_refuse_unknown_flags_and_impossible_limits() {
    let entry = channel_entry_offset(0);
    let cases: [(&str, u32, u32, Corruption); 5] = [
        (
            "unknown flag",
            0x5,
            4_000,
            Corruption::UnknownChannelFlags {
                channel: 0,
                found: 0x5,
            },
        ),
        (
            "limit of one slot",
            0x1,
            960,
            Corruption::MaxMessageSizeOutOfRange {
                channel: 0,
                found: 960,
                capacity: 8,
            },
        ),
        (
            "limit past the ring",
            0x1,
            8 * 960 + 1,
            Corruption::MaxMessageSizeOutOfRange {
                channel: 0,
                found: 8 * 960 + 1,
                capacity: 8,
            },
        ),
        (
            "a limit without RUNS",
            0x0,
            4_000,
            Corruption::MaxMessageSizeOutOfRange {
                channel: 0,
                found: 4_000,
                capacity: 8,
            },
        ),
        (
            "RUNS without a limit",
            0x1,
            0,
            Corruption::MaxMessageSizeOutOfRange {
                channel: 0,
                found: 0,
                capacity: 8,
            },
        ),
    ];
    for (name, flags, limit, expected) in cases {
        let mut buf = setup(8, 4_000);
        buf.write_u32(entry + 4, flags);
        buf.write_u32(entry + 80, limit);
        let segment = Segment::attach(buf.region()).unwrap();
        assert_eq!(
            segment.open_channel(0).err(),
            Some(Error::Corrupt(expected)),
            "{name}"
        );
    }
    // What creation refuses up front.
    let mut buf = SegmentBuf::new(HEADER_SIZE + 8 * SLOT_SIZE);
    let segment = Segment::format(buf.region(), PID).unwrap();
    let options = ChannelOptions::default().with_max_message_size(8 * 960 + 1);
    assert_eq!(
        segment
            .open_or_create_channel_with(0, 8, PID, options)
            .err(),
        Some(Error::InvalidMaxMessageSize {
            max_message_size: 8 * 960 + 1,
            capacity: 8
        })
    );
    // 960 or less is a channel of single-slot messages, as before runs.
    let options = ChannelOptions::default().with_max_message_size(960);
    let (channel, _) = segment
        .open_or_create_channel_with(0, 8, PID, options)
        .unwrap();
    assert!(!channel.geometry().carries_runs());
    assert_eq!(
        channel.try_send(&[0u8; 961], &SendMeta::default()),
        Err(SendError::TooLarge {
            len: 961,
            limit: 960
        })
    );
}

/// A reader that knows only §6 (as the seed's clients and clients older than runs do) sees
/// every slot of a run as a corrupt length, never as a message.
#[test]
fn a_reader_without_runs_never_delivers_a_fragment() {
    let mut buf = setup(16, 8_000);
    {
        let channel = open(&mut buf);
        channel
            .try_send(&payload(2, 5_000), &SendMeta::default())
            .unwrap();
    }
    for p in 0..6 {
        let len = buf.read_u32(slot_field(16, p, SLOT_PAYLOAD_LEN));
        assert!(len as usize > MSG_INLINE, "slot {p} reads as a message");
        let flags = buf.read_u16(slot_field(16, p, SLOT_FLAGS));
        let expected = if p == 0 {
            message_flags::RUN
        } else {
            message_flags::RUN_CONT
        };
        assert_eq!(flags & 0x00FF, expected);
        assert_eq!(buf.read_u32(slot_field(16, p, SLOT_RUN_SLOTS)), 6);
        assert_eq!(buf.read_u32(slot_field(16, p, SLOT_RUN_INDEX)), p as u32);
    }
}

// ---------------------------------------------------------------- crash recovery (§12.5)

struct Alive(&'static [u32]);

impl Liveness for Alive {
    fn is_alive(&self, pid: u32, _start_time: u64) -> bool {
        self.0.contains(&pid)
    }
}

const DEAD: u32 = 100;
const REPAIRER: u32 = 300;

#[cfg(feature = "test-hooks")]
mod dying {
    use super::*;
    use dmxp_nostd::hooks::Step;
    use std::cell::Cell;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    thread_local! {
        /// (step, how many more times to let it pass before "dying").
        static DIE_AT: Cell<(Option<Step>, u32)> = const { Cell::new((None, 0)) };
    }

    fn hook(step: Step, _position: u64) {
        DIE_AT.with(|die| {
            let (at, left) = die.get();
            if at == Some(step) {
                if left == 0 {
                    die.set((None, 0));
                    panic!("killed at {step:?}");
                }
                die.set((at, left - 1));
            }
        });
    }

    /// A registered producer sends a run of `slots` slots and dies at the `skip + 1`-th
    /// `step`; its record keeps the intent. Returns the segment buffer.
    fn producer_dies(step: Step, skip: u32) -> SegmentBuf {
        let mut buf = setup(16, 8 * MSG_INLINE);
        {
            let segment = Segment::attach(buf.region()).unwrap();
            let slot = segment
                .register(0, PeerRole::Producer, DEAD, 0, runtime::C)
                .unwrap();
            let producer = segment
                .open_channel(0)
                .unwrap()
                .with_peer(&slot)
                .with_test_hook(Some(hook));
            producer.try_send(b"before", &SendMeta::default()).unwrap();
            DIE_AT.with(|die| die.set((Some(step), skip)));
            let died = catch_unwind(AssertUnwindSafe(|| {
                producer.try_send(&payload(6, 4 * MSG_INLINE), &SendMeta::default())
            }));
            assert!(died.is_err(), "the hook did not fire at {step:?}");
            // Dead: its record is never given back.
            std::mem::forget(slot);
        }
        buf
    }

    #[test]
    fn a_producer_dying_anywhere_in_a_run_costs_one_lost_message() {
        // SendWritten/SendPublished fire once per slot: continuations 1, 2, 3, then the first.
        let deaths = [
            (Step::SendClaimed, 0, 0),
            (Step::SendWritten, 0, 0),
            (Step::SendPublished, 0, 1),
            (Step::SendPublished, 1, 2),
            (Step::SendPublished, 2, 3),
            (Step::SendWritten, 3, 3),
        ];
        for (step, skip, published_continuations) in deaths {
            let what = format!("{step:?} #{}", skip + 1);
            let mut buf = producer_dies(step, skip);
            let segment = Segment::attach(buf.region()).unwrap();
            let channel = segment.open_channel(0).unwrap();
            let report = segment
                .repair(&channel, &Alive(&[REPAIRER]), REPAIRER, 0)
                .unwrap();
            assert_eq!(report.tombstoned, 1, "{what}");
            assert_eq!(report.skipped, 3 - published_continuations, "{what}");
            assert_eq!(report.records_freed, 1, "{what}");
            let mut out = vec![0u8; channel.max_message_size()];
            assert_eq!(channel.try_recv(&mut out).unwrap().len, 6, "{what}");
            assert_eq!(
                channel.try_recv(&mut out).err(),
                Some(RecvError::Lost { message_id: 1 }),
                "{what}"
            );
            // The continuations are passed over; the channel flows for runs and singles.
            assert_eq!(
                channel.try_recv(&mut out).err(),
                Some(RecvError::Empty),
                "{what}"
            );
            assert_eq!(channel.head(), 5, "{what}");
            let again = payload(8, 7 * MSG_INLINE);
            channel.try_send(&again, &SendMeta::default()).unwrap();
            let received = channel.try_recv(&mut out).unwrap();
            assert_eq!(&out[..received.len], &again[..], "{what}");
        }
    }

    #[test]
    fn a_producer_dying_after_the_whole_run_is_published_loses_nothing() {
        let mut buf = producer_dies(Step::SendIntentCleared, 0);
        let segment = Segment::attach(buf.region()).unwrap();
        let channel = segment.open_channel(0).unwrap();
        let report = segment
            .repair(&channel, &Alive(&[REPAIRER]), REPAIRER, 0)
            .unwrap();
        assert_eq!((report.tombstoned, report.skipped), (0, 0));
        let mut out = vec![0u8; channel.max_message_size()];
        assert_eq!(channel.try_recv(&mut out).unwrap().len, 6);
        let received = channel.try_recv(&mut out).unwrap();
        assert_eq!(&out[..received.len], &payload(6, 4 * MSG_INLINE)[..]);
    }

    #[test]
    fn a_stopped_producer_holding_a_run_is_unblocked_as_one_message() {
        const STOPPED: u32 = 200;
        let mut buf = setup(16, 8 * MSG_INLINE);
        let segment = Segment::attach(buf.region()).unwrap();
        let slot = segment
            .register(0, PeerRole::Producer, STOPPED, 0, runtime::C)
            .unwrap();
        {
            let producer = segment
                .open_channel(0)
                .unwrap()
                .with_peer(&slot)
                .with_test_hook(Some(hook));
            // Stopped (for ever, as far as its peers can tell) after one continuation of five.
            DIE_AT.with(|die| die.set((Some(Step::SendPublished), 1)));
            let stopped = catch_unwind(AssertUnwindSafe(|| {
                producer.try_send(&payload(6, 5 * MSG_INLINE), &SendMeta::default())
            }));
            assert!(stopped.is_err());
        }
        let channel = segment.open_channel(0).unwrap();
        assert_eq!(channel.stuck_receive_position(), Some(0));
        // The producer is alive: a repair pass leaves it alone, the unblock does not.
        let report = segment
            .repair(&channel, &Alive(&[STOPPED, REPAIRER]), REPAIRER, 0)
            .unwrap();
        assert!(!report.repaired());
        assert!(segment.unblock(&channel, 0, PeerRole::Producer));
        let mut out = vec![0u8; channel.max_message_size()];
        assert_eq!(
            channel.try_recv(&mut out).err(),
            Some(RecvError::Lost { message_id: 0 })
        );
        // Every slot of the run is settled: nothing is stuck, nothing else is lost.
        assert_eq!(channel.try_recv(&mut out).err(), Some(RecvError::Empty));
        assert_eq!((channel.head(), channel.tail()), (5, 5));
        assert_eq!(channel.stuck_receive_position(), None);
        // When it resumes, its publishes fail: it learns the run was revoked.
        drop(slot);
    }

    #[test]
    fn a_consumer_dying_while_holding_a_run_has_every_slot_freed() {
        let mut buf = setup(8, 8 * MSG_INLINE);
        let segment = Segment::attach(buf.region()).unwrap();
        let channel = segment.open_channel(0).unwrap();
        channel
            .try_send(&payload(1, 5 * MSG_INLINE), &SendMeta::default())
            .unwrap();
        let slot = segment
            .register(0, PeerRole::Consumer, DEAD, 0, runtime::GO)
            .unwrap();
        let consumer = segment.open_channel(0).unwrap().with_peer(&slot);
        let guard = consumer.try_recv_in_place().unwrap();
        std::mem::forget(guard);
        std::mem::forget(slot);
        // Five slots held: a run of four does not fit until the repair frees them.
        let run = payload(2, 4 * MSG_INLINE);
        assert_eq!(
            channel.try_send(&run, &SendMeta::default()),
            Err(SendError::Full)
        );
        let report = segment
            .repair(&channel, &Alive(&[REPAIRER]), REPAIRER, 0)
            .unwrap();
        assert_eq!(report.freed, 5);
        channel.try_send(&run, &SendMeta::default()).unwrap();
        assert_eq!(recv(&channel).unwrap(), run);
    }
}

/// A run loan held by a producer judged dead is repaired as one lost message; if the producer
/// was only stopped, its late commit learns the loan was revoked and delivers nothing.
#[test]
fn a_run_loan_of_a_producer_judged_dead_is_one_lost_message_and_its_commit_is_revoked() {
    const STOPPED: u32 = 200;
    let mut buf = setup(16, 8 * MSG_INLINE);
    let segment = Segment::attach(buf.region()).unwrap();
    let slot = segment
        .register(0, PeerRole::Producer, STOPPED, 0, runtime::C)
        .unwrap();
    let producer = segment.open_channel(0).unwrap().with_peer(&slot);
    let mut loan = producer.try_loan_for(3 * MSG_INLINE).unwrap();
    assert!(loan.write_at(0, &payload(3, 3 * MSG_INLINE)));
    let channel = segment.open_channel(0).unwrap();
    let report = segment
        .repair(&channel, &Alive(&[REPAIRER]), REPAIRER, 0)
        .unwrap();
    assert_eq!((report.tombstoned, report.skipped), (1, 2));
    assert_eq!(
        loan.commit(3 * MSG_INLINE, &SendMeta::default()),
        Err(SendError::Revoked { message_id: 0 })
    );
    let mut out = vec![0u8; channel.max_message_size()];
    assert_eq!(
        channel.try_recv(&mut out).err(),
        Some(RecvError::Lost { message_id: 0 })
    );
    assert_eq!(channel.try_recv(&mut out).err(), Some(RecvError::Empty));
    // The ring flows on, for runs and loans alike.
    let mut loan = channel.try_loan_for(2 * MSG_INLINE).unwrap();
    assert!(loan.write_at(0, &payload(4, 2 * MSG_INLINE)));
    loan.commit(2 * MSG_INLINE, &SendMeta::default()).unwrap();
    assert_eq!(recv(&channel).unwrap(), payload(4, 2 * MSG_INLINE));
    drop(slot);
}

/// A run needs all its slots free at once, so the slot a dead consumer holds may lie past
/// `tail`; the stuck check looks there, and the repair lets the run through.
#[test]
fn a_run_blocked_past_tail_by_a_dead_consumer_is_seen_stuck_and_repaired() {
    let mut buf = setup(8, 8 * MSG_INLINE);
    let segment = Segment::attach(buf.region()).unwrap();
    let channel = segment.open_channel(0).unwrap();
    for i in 0..4u8 {
        channel.try_send(&[i], &SendMeta::default()).unwrap();
    }
    assert_eq!(recv(&channel).unwrap(), [0]);
    assert_eq!(recv(&channel).unwrap(), [1]);
    let slot = segment
        .register(0, PeerRole::Consumer, DEAD, 0, runtime::GO)
        .unwrap();
    {
        let dying = segment.open_channel(0).unwrap().with_peer(&slot);
        std::mem::forget(dying.try_recv_in_place().unwrap()); // holds position 2
    }
    std::mem::forget(slot);
    assert_eq!(recv(&channel).unwrap(), [3]);
    // Tail 4: positions 4..=9 are free, 10 (slot 2) is held. A run of 7 does not fit.
    let run = payload(1, 7 * MSG_INLINE);
    assert_eq!(
        channel.try_send(&run, &SendMeta::default()),
        Err(SendError::Full)
    );
    assert_eq!(channel.stuck_send_position(), Some(2));
    let report = segment
        .repair(&channel, &Alive(&[REPAIRER]), REPAIRER, 0)
        .unwrap();
    assert_eq!(report.freed, 1);
    assert_eq!(channel.stuck_send_position(), None);
    channel.try_send(&run, &SendMeta::default()).unwrap();
    assert_eq!(recv(&channel).unwrap(), run);
}

// ---------------------------------------------------------------- threads

/// Two producers and two consumers move runs and single slots of random sizes through a small
/// ring: every message arrives once, whole, and each producer's messages in its order.
#[test]
fn two_producers_and_two_consumers_move_runs_exactly_once() {
    let per_producer = if cfg!(miri) { 20 } else { 3_000 };
    stress(2, 2, per_producer, 32, 24 * MSG_INLINE);
}

/// The soak form (`scripts/soak-runs.sh`, release build): 4 producers and 4 consumers move
/// 10^5 messages of 1 B to 256 KiB (log-uniform) through a ring of 1,024 slots.
#[test]
#[ignore = "soak: minutes in a debug build; run by scripts/soak-runs.sh"]
fn four_producers_and_four_consumers_move_1e5_messages_exactly_once() {
    stress(4, 4, 25_000, 1_024, 256 << 10);
}

/// Message `index` of producer `p` in a stress run: its length (log-uniform from 1 to `limit`
/// bytes) and its payload follow from (p, index), and its `message_type` names both.
fn stress_message(p: u64, index: u64, limit: usize) -> (u32, Vec<u8>) {
    let x = (p * 1_000_003 + index).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    let unit = x as f64 / (1u64 << 53) as f64;
    let len = ((limit as f64).powf(unit) as usize).clamp(1, limit);
    ((p << 24 | index) as u32, payload(p * 7_919 + index, len))
}

/// `producers` threads send `per_producer` messages each and `consumers` threads receive them
/// from one channel of `capacity` slots taking messages up to `limit` bytes. Every message
/// arrives exactly once and intact, and within one consumer each producer's messages arrive in
/// the order sent.
fn stress(producers: u64, consumers: usize, per_producer: u64, capacity: u64, limit: usize) {
    let mut buf = setup(capacity, limit);
    let segment = Segment::attach(buf.region()).unwrap();
    let channel = segment.open_channel(0).unwrap();
    let done = AtomicBool::new(false);
    let received: Vec<Vec<(u64, u64)>> = thread::scope(|s| {
        let senders: Vec<_> = (0..producers)
            .map(|p| {
                let channel = channel.clone();
                s.spawn(move || {
                    for index in 0..per_producer {
                        let (tag, bytes) = stress_message(p, index, limit);
                        let meta = SendMeta {
                            message_type: tag,
                            ..SendMeta::default()
                        };
                        let since = Instant::now();
                        loop {
                            match channel.try_send(&bytes, &meta) {
                                Ok(_) => break,
                                Err(SendError::Full | SendError::Busy) => thread::yield_now(),
                                Err(other) => panic!("send: {other}"),
                            }
                            // Only consumers that stopped (a failed assertion) keep the ring
                            // full this long: fail rather than hang.
                            assert!(since.elapsed() < STALL, "no free slot for {STALL:?}");
                        }
                    }
                })
            })
            .collect();
        let receivers: Vec<_> = (0..consumers)
            .map(|_| {
                let channel = channel.clone();
                let done = &done;
                s.spawn(move || {
                    let mut got = Vec::new();
                    let mut out = vec![0u8; limit];
                    let mut idle_since = Instant::now();
                    loop {
                        match channel.try_recv(&mut out) {
                            Ok(r) => {
                                let tag = u64::from(r.meta.message_type);
                                let (p, index) = (tag >> 24, tag & 0xFF_FFFF);
                                let (_, expected) = stress_message(p, index, limit);
                                assert!(out[..r.len] == expected[..], "message {p}/{index}");
                                got.push((p, index));
                                idle_since = Instant::now();
                            }
                            Err(RecvError::Empty | RecvError::Pending { .. } | RecvError::Busy) => {
                                if done.load(Relaxed) && channel.head() == channel.tail() {
                                    return got;
                                }
                                // A producer that stopped mid-message leaves a claim nobody
                                // publishes: fail rather than hang.
                                assert!(idle_since.elapsed() < STALL, "nothing for {STALL:?}");
                                thread::yield_now();
                            }
                            Err(other) => panic!("receive: {other}"),
                        }
                    }
                })
            })
            .collect();
        // Join everyone before looking at any failure, so that none is left running.
        let sent: Vec<_> = senders.into_iter().map(|p| p.join()).collect();
        done.store(true, Relaxed);
        let received: Vec<_> = receivers.into_iter().map(|c| c.join()).collect();
        for result in sent {
            result.expect("a producer failed");
        }
        received
            .into_iter()
            .map(|r| r.expect("a consumer failed"))
            .collect()
    });
    let mut seen = HashMap::new();
    for got in &received {
        let mut last = vec![None::<u64>; producers as usize];
        for &(p, index) in got {
            assert!(seen.insert((p, index), ()).is_none(), "{p}/{index} twice");
            assert!(
                last[p as usize].is_none_or(|l| l < index),
                "{p}/{index} out of order"
            );
            last[p as usize] = Some(index);
        }
    }
    assert_eq!(seen.len() as u64, producers * per_producer);
}

/// How long a stress thread waits for the others before it reports them stuck.
const STALL: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- model

#[derive(Clone, Debug)]
enum Op {
    Send(usize),
    Batch(Vec<usize>),
    Receive,
    InPlace,
    ReceiveBatch(usize),
    /// A loan for the first length, committed with the second.
    Loan(usize, usize),
    /// A loan for this length, dropped without a commit.
    DroppedLoan(usize),
}

/// What the model's queue holds at a position run: a message (of one slot or a run), or a
/// skip marker left by a dropped loan or by a run loan's unused slots.
#[derive(Clone, Debug, PartialEq)]
enum Queued {
    Message(Vec<u8>),
    Skip,
}

impl Queued {
    fn slots(&self) -> u64 {
        match self {
            Queued::Message(m) => m.len().div_ceil(MSG_INLINE).max(1) as u64,
            Queued::Skip => 1,
        }
    }
}

/// Pops the next message of the model, passing over skip markers as receives do.
fn pop_message(model: &mut VecDeque<Queued>) -> Option<Vec<u8>> {
    loop {
        match model.pop_front()? {
            Queued::Message(m) => return Some(m),
            Queued::Skip => {}
        }
    }
}

fn op(limit: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..=limit).prop_map(Op::Send),
        1 => (0..=MSG_INLINE).prop_map(Op::Send),
        1 => proptest::collection::vec(0..=MSG_INLINE, 1..4).prop_map(Op::Batch),
        3 => Just(Op::Receive),
        1 => Just(Op::InPlace),
        1 => (1..5usize).prop_map(Op::ReceiveBatch),
        2 => (0..=limit, 0..=limit + MSG_INLINE).prop_map(|(a, b)| Op::Loan(a, b)),
        1 => (0..=limit).prop_map(Op::DroppedLoan),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 64 }))]

    /// The channel behaves as a bounded queue of byte strings whose "fullness" is counted in
    /// slots: what it accepts, refuses and delivers matches the model, over many laps.
    #[test]
    fn a_channel_with_runs_is_a_queue(
        capacity_log in 2u32..6,
        ops in proptest::collection::vec(op(4 * MSG_INLINE), 1..200),
    ) {
        let capacity = 1u64 << capacity_log;
        let limit = (4 * MSG_INLINE).min(capacity as usize * MSG_INLINE);
        let mut buf = setup(capacity, limit);
        let channel = open(&mut buf);
        let mut model: VecDeque<Queued> = VecDeque::new();
        let slots = |len: usize| len.div_ceil(MSG_INLINE).max(1) as u64;
        let used = |model: &VecDeque<Queued>| model.iter().map(Queued::slots).sum::<u64>();
        let mut seed = 0u64;
        for op in ops {
            match op {
                Op::Send(len) => {
                    seed += 1;
                    let bytes = payload(seed, len);
                    let result = channel.try_send(&bytes, &SendMeta::default());
                    if len > limit {
                        prop_assert_eq!(result, Err(SendError::TooLarge { len, limit }));
                    } else if used(&model) + slots(len) > capacity {
                        prop_assert_eq!(result, Err(SendError::Full));
                    } else {
                        prop_assert!(result.is_ok());
                        model.push_back(Queued::Message(bytes));
                    }
                }
                Op::Batch(lens) => {
                    let items: Vec<Vec<u8>> = lens.iter().map(|&l| { seed += 1; payload(seed, l) }).collect();
                    let free = capacity - used(&model);
                    match channel.try_send_batch(&items, &SendMeta::default()) {
                        Ok(sent) => {
                            prop_assert_eq!(sent as u64, free.min(items.len() as u64));
                            model.extend(items.into_iter().take(sent).map(Queued::Message));
                        }
                        Err(SendError::Full) => prop_assert_eq!(free, 0),
                        Err(other) => prop_assert!(false, "batch send: {}", other),
                    }
                }
                Op::Loan(reserve, len) => {
                    let loan = channel.try_loan_for(reserve);
                    if reserve > limit {
                        prop_assert_eq!(loan.err(), Some(SendError::TooLarge { len: reserve, limit }));
                        continue;
                    }
                    if used(&model) + slots(reserve) > capacity {
                        prop_assert_eq!(loan.err(), Some(SendError::Full));
                        continue;
                    }
                    let mut loan = loan.unwrap();
                    let room = loan.capacity();
                    prop_assert_eq!(room, (slots(reserve) as usize * MSG_INLINE).min(limit));
                    seed += 1;
                    let bytes = payload(seed, len.min(room));
                    // Garbage past the message must not reach the consumer.
                    prop_assert!(loan.write_at(0, &vec![0xEE; room]));
                    prop_assert!(!loan.write_at(room - 1, &[0, 0]));
                    prop_assert!(loan.write_at(0, &bytes));
                    let result = loan.commit(len, &SendMeta::default());
                    if len > room {
                        prop_assert_eq!(result, Err(SendError::TooLarge { len, limit: room }));
                        model.extend((0..slots(reserve)).map(|_| Queued::Skip));
                    } else {
                        prop_assert!(result.is_ok());
                        model.push_back(Queued::Message(bytes));
                        model.extend((slots(len)..slots(reserve)).map(|_| Queued::Skip));
                    }
                }
                Op::DroppedLoan(reserve) => match channel.try_loan_for(reserve) {
                    Ok(loan) => {
                        prop_assert!(used(&model) + slots(reserve) <= capacity);
                        drop(loan);
                        model.extend((0..slots(reserve)).map(|_| Queued::Skip));
                    }
                    Err(error) => {
                        let expected = if reserve > limit {
                            SendError::TooLarge { len: reserve, limit }
                        } else {
                            SendError::Full
                        };
                        prop_assert_eq!(error, expected);
                    }
                },
                Op::Receive => {
                    let result = recv(&channel);
                    match pop_message(&mut model) {
                        Some(expected) => prop_assert_eq!(result, Ok(expected)),
                        None => prop_assert_eq!(result, Err(RecvError::Empty)),
                    }
                }
                Op::InPlace => match (channel.try_recv_in_place(), pop_message(&mut model)) {
                    (Ok(guard), Some(expected)) => {
                        let mut bytes = vec![0u8; guard.len()];
                        guard.copy_to(&mut bytes);
                        prop_assert_eq!(bytes, expected);
                    }
                    (Err(RecvError::Empty), None) => {}
                    (other, expected) => prop_assert!(false, "in place: {:?} vs {:?}", other.map(|g| g.len()), expected.map(|e| e.len())),
                },
                Op::ReceiveBatch(max) => {
                    let mut got = Vec::new();
                    let result = channel.try_recv_batch(max, |_, bytes| got.push(bytes.to_vec()));
                    // A batch claims up to `max` positions and stops before a run.
                    let taken: Vec<&Queued> = model
                        .iter()
                        .take(max)
                        .take_while(|q| q.slots() == 1)
                        .collect();
                    let messages = taken.iter().filter(|q| matches!(q, Queued::Message(_))).count();
                    let positions = taken.len();
                    match result {
                        Ok(batch) => {
                            prop_assert!(positions > 0);
                            prop_assert_eq!(batch.delivered, messages);
                            let expected: Vec<Queued> = model.drain(..positions).collect();
                            let expected: Vec<Vec<u8>> = expected
                                .into_iter()
                                .filter_map(|q| match q { Queued::Message(m) => Some(m), Queued::Skip => None })
                                .collect();
                            prop_assert_eq!(got, expected);
                        }
                        Err(RecvError::Empty) => prop_assert!(model.is_empty()),
                        Err(RecvError::BufferTooSmall { needed, .. }) => {
                            prop_assert_eq!(positions, 0);
                            let front = match model.front() { Some(Queued::Message(m)) => Some(m.len()), _ => None };
                            prop_assert_eq!(Some(needed), front);
                        }
                        Err(other) => prop_assert!(false, "batch receive: {}", other),
                    }
                }
            }
        }
        while let Some(expected) = pop_message(&mut model) {
            prop_assert_eq!(recv(&channel), Ok(expected));
        }
        prop_assert_eq!(recv(&channel), Err(RecvError::Empty));
    }
}
