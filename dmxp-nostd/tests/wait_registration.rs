//! The wait registration shared by blocking and event-loop waits (PROTOCOL.md §7.2, §7.4,
//! §11.9): what it counts, what it names in the peer record, what it observes, and that it is
//! undone exactly once.

mod common;

use common::{formatted, SegmentBuf};
use dmxp_nostd::layout::{
    AtomicChannelEntry, AtomicPeerRecord, CHANNEL_TABLE_OFFSET, MAX_CHANNELS,
};
use dmxp_nostd::peer::{free_dead_records, register_in, PeerRole};
use dmxp_nostd::{Liveness, Segment, SendMeta};

/// `count` zeroed peer records in ordinary memory.
fn records(buf: &mut SegmentBuf, count: usize) -> &[AtomicPeerRecord] {
    buf.region()
        .view_slice::<AtomicPeerRecord>(0, count)
        .expect("room for the records")
}

struct NobodyAlive;

impl Liveness for NobodyAlive {
    fn is_alive(&self, _pid: u32, _start_time: u64) -> bool {
        false
    }
}

#[test]
fn a_registration_counts_while_it_lives_and_names_its_count_in_the_record() {
    let mut buf = formatted(&[4], 1);
    let segment = Segment::attach(buf.region()).unwrap();
    let channel = segment.open_channel(0).unwrap();
    let mut record_buf = SegmentBuf::new(256);
    let records = records(&mut record_buf, 2);
    let rx = register_in(records, 0, PeerRole::Consumer, 7, 70, 0, 1).unwrap();
    let tx = register_in(records, 0, PeerRole::Producer, 8, 80, 0, 1).unwrap();
    let consumer = channel.clone().with_peer(&rx);
    let producer = channel.clone().with_peer(&tx);

    let waiting = consumer.register_for_message();
    assert!(!waiting.is_ready(), "empty ring");
    assert_eq!(channel.waiters(), (1, 0));
    assert_eq!(
        records[0].waiting.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    drop(waiting);
    assert_eq!(channel.waiters(), (0, 0));
    assert_eq!(
        records[0].waiting.load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    for _ in 0..4 {
        producer.try_send(b"x", &SendMeta::default()).unwrap();
    }
    let waiting = producer.register_for_free_slots(1);
    assert!(!waiting.is_ready(), "full ring");
    assert_eq!(channel.waiters(), (0, 1));
    assert_eq!(
        records[1].waiting.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    drop(waiting);
    assert_eq!(channel.waiters(), (0, 0));
    assert!(consumer.register_for_message().is_ready(), "four messages");
    assert_eq!(channel.waiters(), (0, 0));
}

#[test]
fn a_wake_after_the_registration_moves_the_word_past_the_observed_value() {
    let mut buf = formatted(&[4], 1);
    let segment = Segment::attach(buf.region()).unwrap();
    let channel = segment.open_channel(0).unwrap();
    let waiting = channel.register_for_message();
    assert_eq!(
        waiting.observed(),
        waiting.word().load(std::sync::atomic::Ordering::SeqCst)
    );
    // The sender sees the waiter and bumps the word: a futex wait with `observed` (blocking
    // or io_uring) then returns at once instead of sleeping through the wake.
    channel.try_send(b"x", &SendMeta::default()).unwrap();
    assert_ne!(
        waiting.observed(),
        waiting.word().load(std::sync::atomic::Ordering::SeqCst)
    );
    drop(waiting);

    // With nobody registered, sends and receives leave the word alone (no wake at all).
    let word = channel.register_for_message().observed();
    let mut buf = [0u8; 8];
    channel.try_recv(&mut buf).unwrap();
    channel.try_send(b"y", &SendMeta::default()).unwrap();
    channel.try_recv(&mut buf).unwrap();
    let waiting = channel.register_for_message();
    assert_eq!(waiting.observed(), word, "no bump while nobody waits");
}

#[test]
fn a_wait_for_a_run_is_ready_only_when_all_its_slots_are_free() {
    let mut buf = formatted(&[4], 1);
    let segment = Segment::attach(buf.region()).unwrap();
    let channel = segment.open_channel(0).unwrap();
    channel.try_send(b"a", &SendMeta::default()).unwrap();
    channel.try_send(b"b", &SendMeta::default()).unwrap();
    assert!(channel.register_for_free_slots(2).is_ready());
    assert!(!channel.register_for_free_slots(3).is_ready());
    let mut out = [0u8; 8];
    channel.try_recv(&mut out).unwrap();
    assert!(channel.register_for_free_slots(3).is_ready());
    assert_eq!(channel.waiters(), (0, 0));
}

/// A waiter misjudged dead while registered: the sweep that frees its record gives the count
/// back, and the waiter's own drop then leaves the count alone (undone once, not twice).
#[test]
fn a_registration_given_back_by_a_freer_is_not_undone_again() {
    let mut buf = formatted(&[4], 1);
    let region = buf.region();
    let entries = region
        .view_slice::<AtomicChannelEntry>(CHANNEL_TABLE_OFFSET, MAX_CHANNELS)
        .unwrap();
    let segment = Segment::attach(region).unwrap();
    let channel = segment.open_channel(0).unwrap();
    let mut record_buf = SegmentBuf::new(256);
    let records = records(&mut record_buf, 1);
    let rx = register_in(records, 0, PeerRole::Consumer, 7, 70, 0, 1).unwrap();
    let consumer = channel.clone().with_peer(&rx);
    let waiting = consumer.register_for_message();
    assert_eq!(channel.waiters(), (1, 0));
    let report = free_dead_records(entries, records, &NobodyAlive, 9);
    assert_eq!(report.records_freed, 1);
    assert_eq!(channel.waiters(), (0, 0), "given back by the freer");
    drop(waiting);
    assert_eq!(channel.waiters(), (0, 0), "not below zero: undone once");
    std::mem::forget(rx);
}
