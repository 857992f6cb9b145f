//! Which position holds a channel up (PROTOCOL.md §11.6, §11.8) and the stuck notes peers leave
//! in the entry for tools: found from the cursors and the sequences, noted once per position.

mod common;

use common::formatted;
use dmxp_nostd::{PeerRole, Segment, SendMeta};

#[test]
fn a_claimed_unpublished_head_is_the_stuck_receive_position() {
    let mut buf = formatted(&[4], 1);
    let segment = Segment::attach(buf.region()).unwrap();
    let channel = segment.open_channel(0).unwrap();
    // Empty: nothing is held (tail == head).
    assert_eq!(channel.stuck_receive_position(), None);
    assert_eq!(channel.stuck_position(PeerRole::Producer), None);

    // Published and waiting: nothing is held either.
    channel.try_send(b"one", &SendMeta::default()).unwrap();
    assert_eq!(channel.stuck_receive_position(), None);
    let mut out = [0u8; 960];
    channel.try_recv(&mut out).unwrap();

    // A producer claims position 1 (a loan) and has not published it.
    let loan = channel.try_loan().unwrap();
    assert_eq!(loan.position(), 1);
    assert_eq!(channel.stuck_receive_position(), Some(1));
    assert_eq!(channel.stuck_position(PeerRole::Producer), Some(1));
    assert_eq!(channel.stuck_position(PeerRole::Consumer), None);
    drop(loan);
    assert_eq!(channel.stuck_receive_position(), None);
}

#[test]
fn a_claimed_unfreed_slot_a_lap_behind_tail_is_the_stuck_send_position() {
    let mut buf = formatted(&[2], 1);
    let segment = Segment::attach(buf.region()).unwrap();
    let channel = segment.open_channel(0).unwrap();
    channel.try_send(b"a", &SendMeta::default()).unwrap();
    channel.try_send(b"b", &SendMeta::default()).unwrap();
    // Full, but every message still waits for a consumer: nothing is held.
    assert_eq!(channel.stuck_send_position(), None);

    // A consumer holds position 0 in place: the ring is full and slot 0 cannot be reused.
    let guard = channel.try_recv_in_place().unwrap();
    assert_eq!(guard.meta().message_id, 0);
    assert_eq!(channel.stuck_send_position(), Some(0));
    assert_eq!(channel.stuck_position(PeerRole::Consumer), Some(0));
    assert_eq!(channel.stuck_position(PeerRole::Producer), None);
    drop(guard);
    assert_eq!(channel.stuck_send_position(), None);
}

#[test]
fn a_stuck_note_is_kept_for_its_position_and_replaced_for_another() {
    let mut buf = formatted(&[4], 1);
    let segment = Segment::attach(buf.region()).unwrap();
    let channel = segment.open_channel(0).unwrap();
    assert_eq!(channel.stuck_note(PeerRole::Producer), None);
    assert_eq!(channel.stuck_note(PeerRole::Consumer), None);

    channel.note_stuck(PeerRole::Producer, 0, 500);
    // Position 0 with a since of 500: kept although the position is 0.
    assert_eq!(channel.stuck_note(PeerRole::Producer), Some((0, 500)));
    channel.note_stuck(PeerRole::Producer, 0, 900);
    assert_eq!(channel.stuck_note(PeerRole::Producer), Some((0, 500)));
    channel.note_stuck(PeerRole::Producer, 5, 1_200);
    assert_eq!(channel.stuck_note(PeerRole::Producer), Some((5, 1_200)));
    channel.note_stuck(PeerRole::Producer, 5, 1_500);
    assert_eq!(channel.stuck_note(PeerRole::Producer), Some((5, 1_200)));

    // The two sides are noted apart.
    assert_eq!(channel.stuck_note(PeerRole::Consumer), None);
    channel.note_stuck(PeerRole::Consumer, 5, 2_000);
    assert_eq!(channel.stuck_note(PeerRole::Consumer), Some((5, 2_000)));
    assert_eq!(channel.stuck_note(PeerRole::Producer), Some((5, 1_200)));
}

#[test]
fn a_channel_debug_names_its_geometry_and_registrations() {
    let mut buf = formatted(&[4], 1);
    let segment = Segment::attach(buf.region()).unwrap();
    let channel = segment.open_channel(0).unwrap();
    let shown = format!("{channel:?}");
    assert!(shown.starts_with("Channel"), "{shown}");
    assert!(shown.contains("capacity: 4"), "{shown}");
    assert!(shown.contains("send_registered: false"), "{shown}");
}
