//! Edges of the ring that ordinary traffic does not reach: where a reset starts again when a
//! scribbled `head` is ahead of `tail`, a batch that claims exactly what it sends, a marker
//! whose recorded length would not fit the caller's buffer, and what a LOST tombstone says.

mod common;

use common::formatted;
use dmxp_nostd::layout::{channel_entry_offset, message_flags, AtomicSlot, HEADER_SIZE, SLOT_SIZE};
use dmxp_nostd::{Liveness, PeerRole, RecvError, Segment, SendMeta};
use std::sync::atomic::Ordering::Relaxed;

/// Offset of `head` in a channel entry.
const HEAD: usize = 256;

#[test]
fn a_reset_starts_a_lap_past_whichever_cursor_is_further() {
    // tail ahead (the honest case): 3 sent, 1 received.
    let mut buf = formatted(&[4], 1);
    {
        let segment = Segment::attach(buf.region()).unwrap();
        let channel = segment.open_channel(0).unwrap();
        for i in 0..3u8 {
            channel.try_send(&[i], &SendMeta::default()).unwrap();
        }
        let mut out = [0u8; 960];
        channel.try_recv(&mut out).unwrap();
        assert_eq!(channel.reset(), 2);
        assert_eq!((channel.head(), channel.tail()), (3 + 4, 3 + 4));
    }
    // head scribbled ahead of tail: the new start is past head.
    let entry = channel_entry_offset(0);
    buf.write_u64(entry + HEAD, 7 + 10);
    let segment = Segment::attach(buf.region()).unwrap();
    let channel = segment.open_channel(0).unwrap();
    assert_eq!(channel.reset(), 0);
    assert_eq!((channel.head(), channel.tail()), (17 + 4, 17 + 4));
    channel.try_send(b"after", &SendMeta::default()).unwrap();
    let mut out = [0u8; 960];
    assert_eq!(channel.try_recv(&mut out).unwrap().meta.message_id, 21);
}

#[test]
fn a_batch_claims_exactly_the_positions_it_sends() {
    let mut buf = formatted(&[8], 1);
    let segment = Segment::attach(buf.region()).unwrap();
    let channel = segment.open_channel(0).unwrap();
    let sent = channel
        .try_send_batch(&[b"a".as_slice(), b"b", b"c"], &SendMeta::default())
        .unwrap();
    assert_eq!(sent, 3);
    assert_eq!(
        channel.tail(),
        3,
        "a batch of 3 on a ring with 8 free slots"
    );
    let mut out = [0u8; 960];
    for expected in [b"a", b"b", b"c"] {
        let got = channel.try_recv(&mut out).unwrap();
        assert_eq!(&out[..got.len], expected);
    }
    assert!(matches!(channel.try_recv(&mut out), Err(RecvError::Empty)));
}

/// A process that is never alive: every record's owner is dead.
struct NobodyAlive;

impl Liveness for NobodyAlive {
    fn is_alive(&self, _pid: u32, _start_time: u64) -> bool {
        false
    }
}

#[test]
fn a_lost_tombstone_names_its_position_channel_and_sender_and_fits_any_buffer() {
    // Two channels, and room for the peer table after their bands.
    let mut bytes = formatted(&[4, 4], 1).bytes().to_vec();
    bytes.resize(bytes.len() + 16_384, 0);
    let mut buf = common::SegmentBuf::from_bytes(&bytes);
    buf.write_u64(24, bytes.len() as u64);
    let segment = Segment::attach(buf.region()).unwrap();
    // Channel 1: two messages go through, then a producer of pid 77 claims position 2 and dies.
    let repairer = segment.open_channel(1).unwrap();
    let mut out = [0u8; 960];
    for _ in 0..2 {
        repairer.try_send(b"x", &SendMeta::default()).unwrap();
        repairer.try_recv(&mut out).unwrap();
    }
    let dead = segment
        .register(
            1,
            PeerRole::Producer,
            77,
            0,
            dmxp_nostd::layout::runtime::GO,
        )
        .unwrap();
    let channel = segment.open_channel(1).unwrap().with_peer(&dead);
    std::mem::forget(channel.try_loan().unwrap());
    std::mem::forget(dead);
    let report = segment.repair(&repairer, &NobodyAlive, 300, 3).unwrap();
    assert_eq!(report.tombstoned, 1);

    // The tombstone's metadata, read where the layout puts slot 2 of channel 1.
    let band1 = HEADER_SIZE + 4 * SLOT_SIZE;
    let slot = segment
        .region()
        .view::<AtomicSlot>(band1 + 2 * SLOT_SIZE)
        .unwrap();
    let meta = &slot.meta;
    assert_eq!(meta.message_id.load(Relaxed), 2);
    assert_eq!(meta.channel_id.load(Relaxed), 1);
    assert_eq!(meta.sender_pid.load(Relaxed), 77);
    assert_eq!(meta.flags.load(Relaxed), message_flags::LOST);

    // A marker carries no payload, whatever length it claims: a 1-byte buffer is not too small.
    slot.meta.payload_len.store(900, Relaxed);
    let mut tiny = [0u8; 1];
    assert!(matches!(
        repairer.try_recv(&mut tiny),
        Err(RecvError::Lost { message_id: 2 })
    ));
}

#[test]
fn a_reset_discards_nothing_when_tail_is_more_than_a_ring_ahead() {
    // Two messages queued, then tail scribbled 100 positions past head on a ring of 4: the
    // span is not a lap, so nothing in the ring can be told apart as queued.
    let mut buf = formatted(&[4], 1);
    {
        let segment = Segment::attach(buf.region()).unwrap();
        let channel = segment.open_channel(0).unwrap();
        channel.try_send(b"a", &SendMeta::default()).unwrap();
        channel.try_send(b"b", &SendMeta::default()).unwrap();
    }
    buf.write_u64(channel_entry_offset(0) + 128, 100);
    let segment = Segment::attach(buf.region()).unwrap();
    let channel = segment.open_channel(0).unwrap();
    assert_eq!(channel.reset(), 0);
    assert_eq!((channel.head(), channel.tail()), (104, 104));
}
