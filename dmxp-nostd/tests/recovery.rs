//! Crash recovery in the core (PROTOCOL.md §11), with dead peers simulated deterministically:
//! a "dead" handle is one whose claim was left unfinished (a loan or an in-place receive
//! forgotten, its peer slot forgotten so it never leaves) and whose pid a fake [`Liveness`]
//! reports dead.

// Under Miri only three tests run (dead producer, dead consumer, concurrent repairers): each
// formats a whole segment, which takes minutes interpreted.
mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Barrier, Mutex, PoisonError};

use common::{segment_len, SegmentBuf};
use dmxp_nostd::layout::{
    message_flags, peer_waiting, runtime, AtomicPeerRecord, HEADER_SIZE, PEER_RECORDS,
    PEER_TABLE_SIZE, SLOT_SIZE,
};
use dmxp_nostd::{
    parse_segment, Channel, Corruption, Error, Liveness, PeerRole, RecvError, Segment, SendError,
    SendMeta, WaitOutcome, WaitStrategy,
};

/// Processes that are alive, with their start times.
struct Alive(HashSet<(u32, u64)>);

impl Alive {
    fn new(alive: &[(u32, u64)]) -> Self {
        Self(alive.iter().copied().collect())
    }
}

impl Liveness for Alive {
    fn is_alive(&self, pid: u32, start_time: u64) -> bool {
        self.0
            .iter()
            .any(|&(p, s)| p == pid && (start_time == 0 || s == start_time))
    }
}

const DEAD: (u32, u64) = (100, 1);
const OTHER_DEAD: (u32, u64) = (150, 15);
const LIVE: (u32, u64) = (200, 2);
const REPAIRER: (u32, u64) = (300, 3);
const REPAIRER_2: (u32, u64) = (400, 4);

fn alive() -> Alive {
    Alive::new(&[LIVE, REPAIRER, REPAIRER_2])
}

/// Two channels of 4 slots (created) and room for the peer table after them. Formatted once
/// per test binary and copied: formatting is slow under Miri.
fn buffer() -> SegmentBuf {
    static BUILT: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if built.is_empty() {
        let mut buf = SegmentBuf::new(segment_len(&[4, 4]) + PEER_TABLE_SIZE);
        format(&mut buf);
        *built = buf.bytes().to_vec();
    }
    SegmentBuf::from_bytes(&built)
}

/// Formats `buf` and creates channels 0 and 1 of 4 slots.
fn format(buf: &mut SegmentBuf) -> Segment<'_> {
    let segment = Segment::format(buf.region(), 1).unwrap();
    segment.create_channel(0, 4, 1).unwrap();
    segment.create_channel(1, 4, 1).unwrap();
    segment
}

/// The segment of a [`buffer`].
fn setup(buf: &mut SegmentBuf) -> Segment<'_> {
    Segment::attach(buf.region()).unwrap()
}

fn meta() -> SendMeta {
    SendMeta {
        sender_pid: LIVE.0,
        sender_runtime: runtime::RUST,
        ..SendMeta::default()
    }
}

fn recv(channel: &Channel<'_>) -> Result<Vec<u8>, RecvError> {
    let mut buf = [0u8; 960];
    channel.try_recv(&mut buf).map(|r| buf[..r.len].to_vec())
}

fn table<'a>(segment: &Segment<'a>) -> &'a [AtomicPeerRecord] {
    segment.peer_table().unwrap().expect("a peer table")
}

/// A producer of `who` on `channel` that claims a position with a loan and dies before
/// publishing it. Returns the position.
fn producer_dies_after_claim(segment: &Segment<'_>, channel: u32, who: (u32, u64)) -> u64 {
    producer_dies_on(segment, &segment.open_channel(channel).unwrap(), who)
}

/// [`producer_dies_after_claim`] through a copy of a `channel` the caller opened already (an
/// `open_channel` costs about a minute under Miri, so the tests that run there open once).
fn producer_dies_on<'a>(segment: &Segment<'a>, channel: &Channel<'a>, who: (u32, u64)) -> u64 {
    let slot = segment
        .register(channel.id(), PeerRole::Producer, who.0, who.1, runtime::C)
        .unwrap();
    let registered = channel.clone().with_peer(&slot);
    assert!(registered.is_registered(PeerRole::Producer));
    let loan = registered.try_loan().unwrap();
    let position = loan.position();
    // Death: neither the loan's drop (which would publish a skip marker) nor the slot's
    // (which would free the record) ever runs.
    std::mem::forget(loan);
    std::mem::forget(slot);
    position
}

/// A consumer of `who` on `channel` that claims a position in place and dies before freeing
/// it. Returns the position.
fn consumer_dies_after_claim(segment: &Segment<'_>, channel: u32, who: (u32, u64)) -> u64 {
    consumer_dies_on(segment, &segment.open_channel(channel).unwrap(), who)
}

/// [`consumer_dies_after_claim`] through a copy of a `channel` the caller opened already.
fn consumer_dies_on<'a>(segment: &Segment<'a>, channel: &Channel<'a>, who: (u32, u64)) -> u64 {
    let slot = segment
        .register(channel.id(), PeerRole::Consumer, who.0, who.1, runtime::GO)
        .unwrap();
    let registered = channel.clone().with_peer(&slot);
    let guard = registered.try_recv_in_place().unwrap();
    let position = guard.meta().message_id;
    std::mem::forget(guard);
    std::mem::forget(slot);
    position
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn the_peer_table_is_installed_on_first_registration() {
    let mut buf = buffer();
    {
        let segment = setup(&mut buf);
        assert_eq!(segment.peer_table().unwrap().map(<[_]>::len), None);
        assert!(segment.peers().unwrap().collect::<Vec<_>>().is_empty());
        let slot = segment
            .register(0, PeerRole::Producer, 7, 70, runtime::RUST)
            .unwrap();
        let table = table(&segment);
        assert_eq!(table.len(), PEER_RECORDS);
        let peers = segment.peers().unwrap().collect::<Vec<_>>();
        assert_eq!(peers.len(), 1);
        let record = peers[0].record;
        assert_eq!(peers[0].index, slot.index());
        assert_eq!(peers[0].role(), Some(PeerRole::Producer));
        assert_eq!(
            (
                record.pid,
                record.start_time,
                record.channel_id,
                record.runtime
            ),
            (7, 70, 0, runtime::RUST)
        );
        assert_eq!(record.intent_count, 0);
        slot.leave();
        assert!(segment.peers().unwrap().collect::<Vec<_>>().is_empty());
    }
    // Carved right after the two bands, and a copy of the bytes still parses.
    let table_offset = (HEADER_SIZE + 8 * SLOT_SIZE) as u64;
    assert_eq!(buf.read_u64(48), table_offset);
    assert_eq!(buf.read_u64(32), table_offset + PEER_TABLE_SIZE as u64);
    let info = parse_segment(buf.bytes()).unwrap();
    assert_eq!(info.header.peer_table_offset, table_offset);
    assert_eq!(info.channels.len(), 2);
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn registration_fills_the_table_then_reports_it_full() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    let slots: Vec<_> = (0..PEER_RECORDS as u32)
        .map(|i| {
            segment
                .register(i % 2, PeerRole::Consumer, 1000 + i, 0, runtime::RUST)
                .unwrap()
        })
        .collect();
    let indices: HashSet<usize> = slots.iter().map(|s| s.index()).collect();
    assert_eq!(indices.len(), PEER_RECORDS);
    assert_eq!(
        segment
            .register(0, PeerRole::Producer, 5, 0, runtime::RUST)
            .unwrap_err(),
        Error::PeerTableFull
    );
    drop(slots);
    assert!(segment.peers().unwrap().collect::<Vec<_>>().is_empty());
    assert!(segment
        .register(0, PeerRole::Producer, 5, 0, runtime::RUST)
        .is_ok());
    assert_eq!(
        segment
            .register(0, PeerRole::Producer, 0, 0, runtime::RUST)
            .unwrap_err(),
        Error::InvalidPid
    );
    assert_eq!(
        segment
            .register(256, PeerRole::Producer, 5, 0, runtime::RUST)
            .unwrap_err(),
        Error::InvalidChannelId { id: 256 }
    );
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn no_room_for_the_table_is_out_of_space_and_the_channel_still_works() {
    let mut buf = SegmentBuf::new(segment_len(&[4, 4]));
    let segment = format(&mut buf);
    assert!(matches!(
        segment.register(0, PeerRole::Producer, 5, 0, runtime::RUST),
        Err(Error::OutOfSpace { .. })
    ));
    let channel = segment.open_channel(0).unwrap();
    channel.try_send(b"unprotected", &meta()).unwrap();
    assert_eq!(recv(&channel).unwrap(), b"unprotected");
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn a_channel_created_after_the_table_is_carved_past_it() {
    let mut buf = SegmentBuf::new(segment_len(&[4, 4, 2]) + PEER_TABLE_SIZE);
    let segment = format(&mut buf);
    let _slot = segment
        .register(0, PeerRole::Producer, 5, 0, runtime::RUST)
        .unwrap();
    let table_offset = (HEADER_SIZE + 8 * SLOT_SIZE) as u64;
    let channel = segment.create_channel(2, 2, 1).unwrap();
    assert_eq!(
        channel.geometry().band_offset,
        table_offset + PEER_TABLE_SIZE as u64
    );
    segment.validate_all().unwrap();
}

#[test]
fn dead_producer_leaves_a_lost_tombstone_that_consumers_skip_and_count() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    let channel = segment.open_channel(0).unwrap();
    let position = producer_dies_on(&segment, &channel, DEAD);
    assert_eq!(position, 0);
    // A live producer sends behind the stuck position: consumers cannot reach it (and say
    // so: not empty, position 0 in flight).
    channel.try_send(b"after", &meta()).unwrap();
    assert_eq!(recv(&channel), Err(RecvError::Pending { position: 0 }));
    assert_eq!(channel.stuck_receive_position(), Some(0));

    let report = segment
        .repair(&channel, &alive(), REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!((report.tombstoned, report.freed), (1, 0));
    assert_eq!(report.records_freed, 1);
    assert!(report.repaired());
    assert!(
        segment.peers().unwrap().collect::<Vec<_>>().is_empty(),
        "dead record freed"
    );

    assert_eq!(channel.stuck_receive_position(), None);
    // The tombstone names the dead producer.
    let guard = channel.try_recv_in_place();
    assert_eq!(guard.err(), Some(RecvError::Lost { message_id: 0 }));
    assert_eq!(recv(&channel).unwrap(), b"after");
    assert_eq!(recv(&channel), Err(RecvError::Empty));

    // A second pass finds nothing to do.
    let again = segment
        .repair(&channel, &alive(), REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!(again, Default::default());
    assert!(!again.repaired());
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn a_lost_tombstone_is_counted_by_batch_receives() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    producer_dies_after_claim(&segment, 0, DEAD);
    let channel = segment.open_channel(0).unwrap();
    channel.try_send(b"x", &meta()).unwrap();
    let report = segment
        .repair(&channel, &alive(), REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!(report.tombstoned, 1);
    let mut got = Vec::new();
    let batch = channel
        .try_recv_batch(8, |meta, payload| {
            got.push((meta.message_id, payload.to_vec()))
        })
        .unwrap();
    assert_eq!((batch.delivered, batch.dropped, batch.lost), (1, 1, 1));
    assert_eq!(got, vec![(1, b"x".to_vec())]);
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn the_tombstone_meta_names_the_dead_producer() {
    let mut buf = buffer();
    {
        let segment = setup(&mut buf);
        producer_dies_after_claim(&segment, 0, DEAD);
        let channel = segment.open_channel(0).unwrap();
        let report = segment
            .repair(&channel, &alive(), REPAIRER.0, REPAIRER.1)
            .unwrap();
        assert_eq!(report.tombstoned, 1);
    }
    let slot = HEADER_SIZE;
    assert_eq!(buf.read_u64(slot), 1, "published");
    assert_eq!(buf.read_u64(slot + 8), 0, "message_id");
    assert_eq!(buf.read_u32(slot + 8 + 24), DEAD.0, "sender_pid");
    assert_eq!(buf.read_u16(slot + 8 + 28), runtime::C, "sender_runtime");
    assert_eq!(buf.read_u16(slot + 8 + 30), message_flags::LOST, "flags");
    assert_eq!(buf.read_u32(slot + 8 + 32), 0, "payload_len");
}

#[test]
fn dead_consumer_slot_is_freed_and_producers_go_on() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    let channel = segment.open_channel(0).unwrap();
    for i in 0..4u8 {
        channel.try_send(&[i], &meta()).unwrap();
    }
    let position = consumer_dies_on(&segment, &channel, DEAD);
    assert_eq!(position, 0);
    assert_eq!(recv(&channel).unwrap(), [1]);
    // Position 4 needs slot 0, which the dead consumer holds: the ring looks full although
    // slot 1 is free.
    assert_eq!(channel.try_send(&[4], &meta()), Err(SendError::Full));
    assert_eq!(channel.stuck_send_position(), Some(0));

    let report = segment
        .repair(&channel, &alive(), REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!((report.tombstoned, report.freed), (0, 1));
    assert_eq!(report.records_freed, 1);
    assert_eq!(channel.stuck_send_position(), None);
    channel.try_send(&[4], &meta()).unwrap();
    channel.try_send(&[5], &meta()).unwrap();
    for i in 2..6u8 {
        assert_eq!(recv(&channel).unwrap(), [i]);
    }
    assert_eq!(recv(&channel), Err(RecvError::Empty));
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn a_full_ring_with_a_slow_consumer_is_not_stuck() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    let channel = segment.open_channel(0).unwrap();
    for i in 0..4u8 {
        channel.try_send(&[i], &meta()).unwrap();
    }
    assert_eq!(channel.try_send(&[9], &meta()), Err(SendError::Full));
    assert_eq!(channel.stuck_send_position(), None);
    assert_eq!(channel.stuck_receive_position(), None);
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn a_dead_consumer_batch_intent_frees_every_claimed_position() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    let channel = segment.open_channel(0).unwrap();
    for i in 0..4u8 {
        channel.try_send(&[i], &meta()).unwrap();
    }
    consumer_dies_after_claim(&segment, 0, DEAD);
    // The same dead consumer had claimed position 1 too, in one batch: widen its intent and
    // leave position 1 claimed and unfreed.
    let record = &table(&segment)[0];
    assert_eq!(
        record.pid.load(std::sync::atomic::Ordering::Relaxed),
        DEAD.0
    );
    record
        .intent_count
        .store(2, std::sync::atomic::Ordering::Release);
    std::mem::forget(channel.try_recv_in_place().unwrap());
    assert_eq!(recv(&channel).unwrap(), [2]);

    let report = segment
        .repair(&channel, &alive(), REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!(report.freed, 2);
    for i in 4..7u8 {
        channel.try_send(&[i], &meta()).unwrap();
    }
    for i in [3u8, 4, 5, 6] {
        assert_eq!(recv(&channel).unwrap(), [i]);
    }
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn a_live_peers_claim_is_not_touched() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    let slot = segment
        .register(0, PeerRole::Producer, LIVE.0, LIVE.1, runtime::RUST)
        .unwrap();
    let producer = segment.open_channel(0).unwrap().with_peer(&slot);
    let mut loan = producer.try_loan().unwrap();
    let channel = segment.open_channel(0).unwrap();
    assert_eq!(channel.stuck_receive_position(), Some(0));
    let report = segment
        .repair(&channel, &alive(), REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!(report, Default::default());
    assert_eq!(segment.peers().unwrap().collect::<Vec<_>>().len(), 1);
    loan.write_at_start(b"slow but alive");
    loan.commit(14, &meta()).unwrap();
    assert_eq!(recv(&channel).unwrap(), b"slow but alive");
    // The intent was cleared by the publish.
    let record = segment.peers().unwrap().collect::<Vec<_>>()[0].record;
    assert_eq!(record.intent_count, 0);
}

/// Extension for brevity.
trait WriteAtStart {
    fn write_at_start(&mut self, bytes: &[u8]);
}

impl WriteAtStart for dmxp_nostd::SendLoan<'_, '_> {
    fn write_at_start(&mut self, bytes: &[u8]) {
        assert!(self.payload().write_at(0, bytes));
    }
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn a_stale_dead_intent_does_not_touch_a_position_a_live_peer_owns() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    // A dead producer whose intent named position 0, but who lost the CAS for it and died.
    let dead = segment
        .register(0, PeerRole::Producer, DEAD.0, DEAD.1, runtime::C)
        .unwrap();
    let records = table(&segment);
    let dead_record = &records[dead.index()];
    dead_record
        .intent_position
        .store(0, std::sync::atomic::Ordering::Relaxed);
    dead_record
        .intent_count
        .store(1, std::sync::atomic::Ordering::Release);
    std::mem::forget(dead);
    // The live owner of position 0, mid-send.
    let slot = segment
        .register(0, PeerRole::Producer, LIVE.0, LIVE.1, runtime::RUST)
        .unwrap();
    let producer = segment.open_channel(0).unwrap().with_peer(&slot);
    let mut loan = producer.try_loan().unwrap();
    assert_eq!(loan.position(), 0);

    let channel = segment.open_channel(0).unwrap();
    let report = segment
        .repair(&channel, &alive(), REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!(report.tombstoned, 0);
    assert_eq!(report.records_deferred, 1, "kept for a later pass");
    let peers = segment.peers().unwrap().collect::<Vec<_>>();
    assert_eq!(peers.len(), 2);
    assert!(peers.iter().any(|p| p.record.pid == DEAD.0
        && p.record.start_time == DEAD.1
        && p.record.intent_count == 1));

    loan.write_at_start(b"mine");
    loan.commit(4, &meta()).unwrap();
    assert_eq!(recv(&channel).unwrap(), b"mine");
    // Nothing is stuck any more: the next pass frees the dead record.
    let report = segment
        .repair(&channel, &alive(), REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!((report.tombstoned, report.records_freed), (0, 1));
    assert_eq!(segment.peers().unwrap().collect::<Vec<_>>().len(), 1);
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn two_dead_intents_on_one_position_give_one_tombstone() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    // The real claimant of position 0 died; a second dead producer's stale intent names it
    // too (it lost the CAS and died).
    let stale = segment
        .register(
            0,
            PeerRole::Producer,
            OTHER_DEAD.0,
            OTHER_DEAD.1,
            runtime::C,
        )
        .unwrap();
    let records = table(&segment);
    records[stale.index()]
        .intent_count
        .store(1, std::sync::atomic::Ordering::Release);
    std::mem::forget(stale);
    producer_dies_after_claim(&segment, 0, DEAD);
    let channel = segment.open_channel(0).unwrap();
    let report = segment
        .repair(&channel, &alive(), REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!(report.tombstoned, 1);
    assert_eq!(report.records_freed, 2);
    assert_eq!(recv(&channel), Err(RecvError::Lost { message_id: 0 }));
    assert_eq!(recv(&channel), Err(RecvError::Empty));
}

#[test]
fn concurrent_repairers_repair_once() {
    let rounds = if cfg!(miri) { 2 } else { 200 };
    for round in 0..rounds {
        let mut buf = buffer();
        let segment = setup(&mut buf);
        let channel = segment.open_channel(0).unwrap();
        producer_dies_on(&segment, &channel, DEAD);
        channel.try_send(b"next", &meta()).unwrap();
        let barrier = Barrier::new(2);
        let reports: Vec<_> = std::thread::scope(|scope| {
            let repairers = [REPAIRER, REPAIRER_2].map(|me| {
                let (segment, channel, barrier) = (&segment, &channel, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    segment.repair(channel, &alive(), me.0, me.1).unwrap()
                })
            });
            repairers.map(|r| r.join().unwrap()).to_vec()
        });
        let tombstones: u64 = reports.iter().map(|r| r.tombstoned).sum();
        assert_eq!(tombstones, 1, "round {round}: {reports:?}");
        let freed: u32 = reports.iter().map(|r| r.records_freed).sum();
        assert_eq!(freed, 1, "round {round}: {reports:?}");
        assert_eq!(recv(&channel), Err(RecvError::Lost { message_id: 0 }));
        assert_eq!(recv(&channel).unwrap(), b"next");
        assert_eq!(recv(&channel), Err(RecvError::Empty));
        assert!(segment.peers().unwrap().collect::<Vec<_>>().is_empty());
    }
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn a_repairer_holding_a_record_is_not_judged_dead() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    producer_dies_after_claim(&segment, 0, DEAD);
    let records = table(&segment);
    let record = &records[0];
    // What a repairer does to take the record over, stopped right there.
    use std::sync::atomic::Ordering::{AcqRel, Relaxed};
    let _ = record
        .start_time
        .compare_exchange(DEAD.1, 0, Relaxed, Relaxed);
    record
        .pid
        .compare_exchange(DEAD.0, REPAIRER.0, AcqRel, Relaxed)
        .unwrap();
    // Another repairer sees the repairer's pid with start time 0 ("unknown"): alive.
    let channel = segment.open_channel(0).unwrap();
    let report = segment
        .repair(&channel, &alive(), REPAIRER_2.0, REPAIRER_2.1)
        .unwrap();
    assert_eq!(report, Default::default());
    assert_eq!(channel.stuck_receive_position(), Some(0));
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn records_of_other_channels_are_untouched() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    producer_dies_after_claim(&segment, 1, DEAD);
    // A dead consumer of channel 1 that holds no intent.
    let idle = segment
        .register(
            1,
            PeerRole::Consumer,
            OTHER_DEAD.0,
            OTHER_DEAD.1,
            runtime::RUST,
        )
        .unwrap();
    std::mem::forget(idle);
    let zero = segment.open_channel(0).unwrap();
    let one = segment.open_channel(1).unwrap();
    one.try_send(b"one", &meta()).unwrap();
    zero.try_send(b"zero", &meta()).unwrap();

    let report = segment
        .repair(&zero, &alive(), REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!((report.tombstoned, report.freed), (0, 0));
    // The idle dead record is freed whatever its channel; the one with an intent is not.
    assert_eq!(report.records_freed, 1);
    let peers = segment.peers().unwrap().collect::<Vec<_>>();
    assert_eq!(peers.len(), 1);
    assert_eq!(
        (peers[0].record.pid, peers[0].record.intent_count),
        (DEAD.0, 1)
    );
    assert_eq!(one.stuck_receive_position(), Some(0));
    assert_eq!(recv(&zero).unwrap(), b"zero");

    // Channel 1's own repair.
    let report = segment
        .repair(&one, &alive(), REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!(report.tombstoned, 1);
    assert_eq!(recv(&one), Err(RecvError::Lost { message_id: 0 }));
    assert_eq!(recv(&one).unwrap(), b"one");
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn a_reused_pid_counts_as_dead() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    producer_dies_after_claim(&segment, 0, DEAD);
    let channel = segment.open_channel(0).unwrap();
    // The pid is alive again, but with another start time: a different process.
    let reused = Alive::new(&[(DEAD.0, DEAD.1 + 1), REPAIRER]);
    let report = segment
        .repair(&channel, &reused, REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!(report.tombstoned, 1);
    assert_eq!(recv(&channel), Err(RecvError::Lost { message_id: 0 }));
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn the_same_process_with_the_same_start_time_is_alive() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    producer_dies_after_claim(&segment, 0, DEAD);
    let channel = segment.open_channel(0).unwrap();
    let still_alive = Alive::new(&[DEAD, REPAIRER]);
    let report = segment
        .repair(&channel, &still_alive, REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!(report, Default::default());
    assert_eq!(channel.stuck_receive_position(), Some(0));
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn the_repairer_never_judges_its_own_pid() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    producer_dies_after_claim(&segment, 0, DEAD);
    let channel = segment.open_channel(0).unwrap();
    let nobody = Alive::new(&[]);
    let report = segment.repair(&channel, &nobody, DEAD.0, 99).unwrap();
    assert_eq!(report, Default::default());
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn unregistered_and_failed_claims_leave_no_intent() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    let slot = segment
        .register(0, PeerRole::Consumer, LIVE.0, LIVE.1, runtime::RUST)
        .unwrap();
    let consumer = segment.open_channel(0).unwrap().with_peer(&slot);
    assert!(!consumer.is_registered(PeerRole::Producer));
    assert!(!consumer.clone().is_registered(PeerRole::Consumer));
    // An empty ring: the claim fails, the intent stays clear.
    assert_eq!(recv(&consumer), Err(RecvError::Empty));
    consumer.try_send(b"a", &meta()).unwrap();
    assert_eq!(recv(&consumer).unwrap(), b"a");
    let record = segment.peers().unwrap().collect::<Vec<_>>()[0].record;
    assert_eq!(record.intent_count, 0);
    assert_eq!(record.intent_position, 0, "the claim of position 0");
    // A record of another channel is ignored.
    let other = segment
        .register(1, PeerRole::Producer, LIVE.0, LIVE.1, runtime::RUST)
        .unwrap();
    let channel = segment.open_channel(0).unwrap().with_peer(&other);
    assert!(!channel.is_registered(PeerRole::Producer));
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn a_peer_table_offset_out_of_range_is_refused() {
    let mut buf = buffer();
    setup(&mut buf);
    let len = buf.len() as u64;
    for bad in [
        64,                                // inside the header
        HEADER_SIZE as u64 + 8,            // misaligned
        len - PEER_TABLE_SIZE as u64 + 64, // runs past the end
        u64::MAX - 63,                     // overflows
    ] {
        let mut copy = SegmentBuf::from_bytes(buf.bytes());
        copy.write_u64(48, bad);
        let expected = Error::Corrupt(Corruption::PeerTableOutOfRange {
            found: bad,
            segment_len: len,
        });
        assert_eq!(parse_segment(copy.bytes()).unwrap_err(), expected, "{bad}");
        assert_eq!(
            Segment::attach(copy.region()).err(),
            Some(expected),
            "{bad}"
        );
    }
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn a_peer_table_overlapping_a_band_is_refused() {
    let mut buf = buffer();
    setup(&mut buf);
    // Channel 1's band starts at HEADER_SIZE + 4 slots.
    let bad = (HEADER_SIZE + 4 * SLOT_SIZE) as u64;
    buf.write_u64(48, bad);
    let expected = Error::Corrupt(Corruption::PeerTableOverlapsBand {
        peer_table_offset: bad,
        channel: 1,
    });
    assert_eq!(parse_segment(buf.bytes()).unwrap_err(), expected);
    let segment = Segment::attach(buf.region()).unwrap();
    assert_eq!(segment.peer_table().err(), Some(expected));
    assert_eq!(
        segment
            .register(0, PeerRole::Producer, 5, 0, runtime::RUST)
            .err(),
        Some(expected)
    );
    let channel = segment.open_channel(0).unwrap();
    assert_eq!(
        segment.repair(&channel, &alive(), 5, 0).err(),
        Some(expected)
    );
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn repair_refuses_a_channel_of_another_segment() {
    let mut a = buffer();
    let mut b = buffer();
    let segment_a = setup(&mut a);
    let segment_b = setup(&mut b);
    let foreign = segment_b.open_channel(0).unwrap();
    assert_eq!(
        segment_a.repair(&foreign, &alive(), 5, 0).err(),
        Some(Error::ChannelNotFound { id: 0 })
    );
}

#[test]
#[cfg_attr(miri, ignore = "slow under Miri")]
fn garbage_in_the_peer_table_never_panics() {
    // A hostile peer fills every record with junk: registration, listing and repair stay
    // typed and bounded.
    let mut buf = buffer();
    let segment = setup(&mut buf);
    let slot = segment
        .register(0, PeerRole::Producer, LIVE.0, LIVE.1, runtime::RUST)
        .unwrap();
    std::mem::forget(slot);
    let records = table(&segment);
    use std::sync::atomic::Ordering::Relaxed;
    for (i, record) in records.iter().enumerate() {
        let i = i as u64;
        record.pid.store(0xFFFF_0000 | i as u32, Relaxed);
        record.role.store((i % 4) as u16, Relaxed);
        record.channel_id.store((i % 3) as u32, Relaxed);
        record.intent_count.store(u32::MAX - i as u32, Relaxed);
        record.intent_position.store(u64::MAX - i * 977, Relaxed);
        record.start_time.store(i * 31, Relaxed);
    }
    assert_eq!(
        segment.peers().unwrap().collect::<Vec<_>>().len(),
        PEER_RECORDS
    );
    assert_eq!(
        segment
            .register(0, PeerRole::Producer, 5, 0, runtime::RUST)
            .unwrap_err(),
        Error::PeerTableFull
    );
    let channel = segment.open_channel(0).unwrap();
    channel.try_send(b"ok", &meta()).unwrap();
    let report = segment
        .repair(&channel, &Alive::new(&[]), REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!((report.tombstoned, report.freed), (0, 0));
    assert_eq!(recv(&channel).unwrap(), b"ok");
}

#[cfg(feature = "test-hooks")]
mod hooks {
    use super::*;
    use dmxp_nostd::hooks::Step;
    use std::sync::Mutex;

    static STEPS: Mutex<Vec<(Step, u64)>> = Mutex::new(Vec::new());

    fn record(step: Step, position: u64) {
        STEPS.lock().unwrap().push((step, position));
    }

    #[test]
    fn hooks_see_every_step_in_order() {
        let mut buf = buffer();
        let segment = setup(&mut buf);
        let producer_slot = segment
            .register(0, PeerRole::Producer, LIVE.0, LIVE.1, runtime::RUST)
            .unwrap();
        let consumer_slot = segment
            .register(0, PeerRole::Consumer, LIVE.0, LIVE.1, runtime::RUST)
            .unwrap();
        let producer = segment
            .open_channel(0)
            .unwrap()
            .with_peer(&producer_slot)
            .with_test_hook(Some(record));
        let consumer = segment
            .open_channel(0)
            .unwrap()
            .with_peer(&consumer_slot)
            .with_test_hook(Some(record));
        producer.try_send(b"x", &meta()).unwrap();
        recv(&consumer).unwrap();
        let steps = std::mem::take(&mut *STEPS.lock().unwrap());
        let expected: Vec<_> = Step::ALL.iter().map(|&s| (s, 0)).collect();
        assert_eq!(steps, expected);
        for step in Step::ALL {
            assert_eq!(Step::from_name(step.name()), Some(step));
        }
    }
}

// ---------------------------------------------------------------- revocation (§11.7, §11.8)

/// The raw `sequence` of the slot of `position`.
fn sequence(segment: &Segment<'_>, channel: u32, position: u64) -> u64 {
    let info = segment.open_channel(channel).unwrap().geometry();
    let offset = info.band_offset as usize + (position % info.capacity) as usize * SLOT_SIZE;
    segment
        .region()
        .view::<dmxp_nostd::layout::AtomicSlot>(offset)
        .unwrap()
        .sequence
        .load(std::sync::atomic::Ordering::Acquire)
}

#[test]
#[cfg_attr(
    miri,
    ignore = "minutes under Miri; the loom models check the same CASes"
)]
fn a_producer_whose_claim_was_repaired_is_told_and_never_overwrites_the_tombstone() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    // A producer that is alive after all: it holds a loan while a peer judges it dead.
    let slot = segment
        .register(0, PeerRole::Producer, DEAD.0, DEAD.1, runtime::RUST)
        .unwrap();
    let late = segment.open_channel(0).unwrap().with_peer(&slot);
    let mut loan = late.try_loan().unwrap();
    assert!(loan.payload().write_at(0, b"late"));
    let channel = segment.open_channel(0).unwrap();
    let report = segment
        .repair(&channel, &alive(), REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!(report.tombstoned, 1);
    assert_eq!(sequence(&segment, 0, 0), 1, "tombstone published");

    // The late commit learns it, and the tombstone stays as the repair made it.
    assert_eq!(
        loan.commit(4, &meta()),
        Err(SendError::Revoked { message_id: 0 })
    );
    assert_eq!(sequence(&segment, 0, 0), 1);
    assert_eq!(recv(&channel), Err(RecvError::Lost { message_id: 0 }));
    // Once consumed, the slot is free for the next lap: the late commit cannot wedge it.
    assert_eq!(sequence(&segment, 0, 0), 4);
    for lap in 0..8u8 {
        channel.try_send(&[lap], &meta()).unwrap();
        assert_eq!(recv(&channel).unwrap(), [lap]);
    }
    std::mem::forget(slot);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "slow under Miri; the loom models check the revocation CASes"
)]
fn a_late_copying_send_after_a_repair_is_revoked() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    let channel = segment.open_channel(0).unwrap();
    // Claim position 0 with a loan, tombstone it as an unblock would, then publish through the
    // copying path's CAS by committing: same outcome as a send stopped after its claim.
    let loan = channel.try_loan().unwrap();
    assert!(channel.unblock(0, PeerRole::Producer));
    assert_eq!(
        loan.commit(0, &meta()),
        Err(SendError::Revoked { message_id: 0 })
    );
    // A batch whose claim is partly revoked publishes the rest and says which was revoked.
    assert_eq!(recv(&channel), Err(RecvError::Lost { message_id: 0 }));
    assert_eq!(channel.try_send(b"x", &meta()), Ok(1));
    assert_eq!(recv(&channel).unwrap(), b"x");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "minutes under Miri; the loom models check the same CASes"
)]
fn a_consumer_whose_slot_was_freed_under_it_delivers_nothing_and_never_unfrees_it() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    let channel = segment.open_channel(0).unwrap();
    for i in 0..4u8 {
        channel.try_send(&[i], &meta()).unwrap();
    }
    // A consumer holds message 0 in place while the ring is full behind it.
    let guard = channel.try_recv_in_place().unwrap();
    assert_eq!(guard.meta().message_id, 0);
    assert_eq!(channel.try_send(b"next lap", &meta()), Err(SendError::Full));
    assert_eq!(channel.stuck_send_position(), Some(0));
    // Held past the unblock timeout: the slot is freed under it and the next lap takes it.
    assert!(channel.unblock(0, PeerRole::Consumer));
    assert_eq!(channel.try_send(b"next lap", &meta()), Ok(4));
    assert_eq!(sequence(&segment, 0, 4), 5);
    // The guard's release is refused and changes nothing: position 4 stays published.
    assert_eq!(guard.release(), Err(RecvError::Revoked { message_id: 0 }));
    assert_eq!(sequence(&segment, 0, 4), 5);
    for expected in [&[1u8][..], &[2], &[3], b"next lap"] {
        assert_eq!(recv(&channel).unwrap(), expected);
    }
    assert_eq!(recv(&channel), Err(RecvError::Empty));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "slow under Miri; the loom models check the revocation CASes"
)]
fn unblock_does_nothing_once_the_ring_has_moved_on() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    let channel = segment.open_channel(0).unwrap();
    let loan = channel.try_loan().unwrap();
    assert_eq!(loan.commit(1, &meta()), Ok(0));
    // Position 0 is published now: not stuck, not tombstoned.
    assert!(!channel.unblock(0, PeerRole::Producer));
    assert_eq!(recv(&channel).unwrap(), [0]);
    assert!(!channel.unblock(0, PeerRole::Consumer));
}

/// A checker that cannot see pids of namespace 77 (they all look dead to it).
struct OtherNamespaceBlind;

impl Liveness for OtherNamespaceBlind {
    fn is_alive(&self, pid: u32, start_time: u64) -> bool {
        alive().is_alive(pid, start_time)
    }

    fn judges(&self, pid_ns: u64) -> bool {
        pid_ns != 77
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "slow under Miri; the loom models check the revocation CASes"
)]
fn a_record_of_another_pid_namespace_is_never_repaired() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    // A live producer of another namespace holds position 0; its pid means nothing here.
    let slot = segment
        .register_in_namespace(0, PeerRole::Producer, DEAD.0, DEAD.1, 77, runtime::RUST)
        .unwrap();
    assert_eq!(
        segment.peers().unwrap().collect::<Vec<_>>()[0]
            .record
            .pid_ns,
        77
    );
    let theirs = segment.open_channel(0).unwrap().with_peer(&slot);
    let loan = theirs.try_loan().unwrap();
    let channel = segment.open_channel(0).unwrap();
    let report = segment
        .repair(&channel, &OtherNamespaceBlind, REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!(
        report,
        Default::default(),
        "nothing judged, nothing repaired"
    );
    assert_eq!(loan.commit(2, &meta()), Ok(0));
    assert_eq!(recv(&channel).unwrap(), [0, 0]);
    drop(slot);
    assert!(segment.peers().unwrap().collect::<Vec<_>>().is_empty());
}

/// Counts liveness checks.
struct Counting(std::cell::Cell<u64>);

impl Liveness for Counting {
    fn is_alive(&self, _pid: u32, _start_time: u64) -> bool {
        self.0.set(self.0.get() + 1);
        false
    }
}

#[test]
#[cfg_attr(miri, ignore = "a 4096-slot ring is slow under Miri")]
fn a_repair_pass_judges_each_record_once() {
    // Forged dead records whose intents all cover a ring of 4096 stuck positions.
    let mut buf = SegmentBuf::new(segment_len(&[4096]) + PEER_TABLE_SIZE);
    let segment = Segment::format(buf.region(), 1).unwrap();
    let channel = segment.create_channel(0, 4096, 1).unwrap();
    let records = PEER_RECORDS as u32 - 1;
    for pid in 0..records {
        let slot = segment
            .register(0, PeerRole::Producer, 1000 + pid, 1, runtime::RUST)
            .unwrap();
        let forged = segment.open_channel(0).unwrap().with_peer(&slot);
        std::mem::forget(forged.try_loan().unwrap());
        std::mem::forget(slot);
    }
    // Every record's intent names every stuck position (forged: the worst case for the scan
    // of covering intents, which judged each covering record once per position before).
    for record in &table(&segment)[..records as usize] {
        record
            .intent_position
            .store(0, std::sync::atomic::Ordering::Relaxed);
        record
            .intent_count
            .store(records, std::sync::atomic::Ordering::Release);
    }
    let liveness = Counting(std::cell::Cell::new(0));
    // Only the number of liveness checks the pass makes matters here, not what it repaired.
    let _ = segment
        .repair(&channel, &liveness, REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert!(
        liveness.0.get() <= 2 * u64::from(records),
        "{} liveness checks for {records} records",
        liveness.0.get()
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "slow under Miri; the loom models check the revocation CASes"
)]
fn dead_records_without_an_intent_are_freed_by_a_sweep() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    // Dead, idle: freed. Dead with an intent: left for its channel's repair. Live: kept.
    std::mem::forget(
        segment
            .register(0, PeerRole::Consumer, DEAD.0, DEAD.1, runtime::GO)
            .unwrap(),
    );
    std::mem::forget(
        segment
            .register(
                1,
                PeerRole::Producer,
                OTHER_DEAD.0,
                OTHER_DEAD.1,
                runtime::C,
            )
            .unwrap(),
    );
    let claimed = producer_dies_after_claim(&segment, 0, (DEAD.0, DEAD.1));
    let live = segment
        .register(0, PeerRole::Producer, LIVE.0, LIVE.1, runtime::RUST)
        .unwrap();
    assert_eq!(segment.peers().unwrap().collect::<Vec<_>>().len(), 4);
    let report = segment.free_dead_records(&alive(), REPAIRER.0).unwrap();
    assert_eq!(report.records_freed, 2);
    let left: Vec<u32> = segment.peers().unwrap().map(|p| p.record.pid).collect();
    assert_eq!(
        left,
        [DEAD.0, LIVE.0],
        "the dead claimer and the live peer remain"
    );
    // The claim is still repaired by its channel's repair.
    let channel = segment.open_channel(0).unwrap();
    let report = segment
        .repair(&channel, &alive(), REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!(report.tombstoned, 1);
    assert_eq!(
        recv(&channel),
        Err(RecvError::Lost {
            message_id: claimed
        })
    );
    drop(live);
}

// ------------------------------------------------------------- waiters that die (§11.9)

/// A wait that does not sleep: it runs `during` (what other peers do while we would sleep)
/// and returns as if woken.
#[derive(Clone)]
struct WhileAsleep<'f>(&'f dyn Fn());

impl WaitStrategy for WhileAsleep<'_> {
    fn wait(&self, _word: &AtomicU32, _expected: u32) -> WaitOutcome {
        (self.0)();
        WaitOutcome::Woken
    }

    fn wake_all(&self, _word: &AtomicU32) {}
}

/// What a peer saw while a waiter slept: the wait counts, the waiter's `waiting` word, and
/// the counts after its sweep and how many waits that sweep gave back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    counts: (u32, u32),
    waiting: u32,
    given_back: u32,
    counts_after: (u32, u32),
}

/// Registers a `role` handle on channel 0 for `owner`, makes it wait once, and while it
/// "sleeps" runs `sweep` over the segment. Returns what was seen then and the counts after
/// the waiter returned.
fn wait_while(
    role: PeerRole,
    owner: (u32, u64),
    sweep: &dyn Fn(&Segment<'_>, &Channel<'_>) -> u32,
) -> (Seen, (u32, u32)) {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    let slot = segment
        .register(0, role, owner.0, owner.1, runtime::GO)
        .unwrap();
    let channel = segment.open_channel(0).unwrap().with_peer(&slot);
    if role == PeerRole::Producer {
        // A full ring, so that a sender has something to wait for.
        while channel.try_send(b"fill", &meta()).is_ok() {}
    }
    let index = slot.index();
    let seen = std::cell::Cell::new(None);
    let during = || {
        let counts = channel.waiters();
        let waiting = table(&segment)[index].waiting.load(Relaxed);
        let given_back = sweep(&segment, &channel);
        seen.set(Some(Seen {
            counts,
            waiting,
            given_back,
            counts_after: channel.waiters(),
        }));
    };
    let outcome = match role {
        PeerRole::Consumer => channel.wait_for_message(&WhileAsleep(&during)),
        PeerRole::Producer => channel.wait_for_free_slot(&WhileAsleep(&during)),
    };
    assert_eq!(outcome, WaitOutcome::Woken);
    let after = channel.waiters();
    drop(slot);
    (seen.get().expect("the waiter slept"), after)
}

fn sweep(segment: &Segment<'_>, _: &Channel<'_>) -> u32 {
    let report = segment.free_dead_records(&alive(), REPAIRER.0).unwrap();
    report.waits_given_back
}

fn repair(segment: &Segment<'_>, channel: &Channel<'_>) -> u32 {
    let report = segment
        .repair(channel, &alive(), REPAIRER.0, REPAIRER.1)
        .unwrap();
    report.waits_given_back
}

#[test]
#[cfg_attr(
    miri,
    ignore = "minutes under Miri; the loom model of a misjudged waiter checks the same race"
)]
fn a_dead_waiters_count_is_given_back_by_a_sweep_or_a_repair_and_only_once() {
    // The "dead" waiter wakes up after all (a misjudgement): the freer won its `waiting`
    // word, so it must not take itself out of the count a second time (0, not u32::MAX).
    for (role, counts) in [(PeerRole::Consumer, (1, 0)), (PeerRole::Producer, (0, 1))] {
        let kind = match role {
            PeerRole::Consumer => peer_waiting::NOT_EMPTY,
            PeerRole::Producer => peer_waiting::NOT_FULL,
        };
        for (name, freer) in [
            (
                "sweep",
                &sweep as &dyn Fn(&Segment<'_>, &Channel<'_>) -> u32,
            ),
            ("repair", &repair),
        ] {
            let (seen, after) = wait_while(role, DEAD, freer);
            let expected = Seen {
                counts,
                waiting: kind,
                given_back: 1,
                counts_after: (0, 0),
            };
            assert_eq!(seen, expected, "{role:?} waiter, {name}");
            assert_eq!(after, (0, 0), "{role:?} waiter, {name}: counted out twice");
        }
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "minutes under Miri; the loom model of a misjudged waiter checks the same race"
)]
fn a_live_waiter_keeps_its_count_until_it_returns() {
    for (role, counts) in [(PeerRole::Consumer, (1, 0)), (PeerRole::Producer, (0, 1))] {
        let (seen, after) = wait_while(role, LIVE, &sweep);
        assert_eq!(seen.given_back, 0, "{role:?}");
        assert_eq!(
            seen.counts_after, counts,
            "{role:?}: a live waiter was counted out"
        );
        assert_eq!(after, (0, 0), "{role:?}");
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "minutes under Miri; the loom model of a misjudged waiter checks the same race"
)]
fn a_forged_waiting_word_never_takes_a_count_below_zero() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    // Dead records claiming waits nobody counted, and one naming a channel out of range.
    for (channel, waiting) in [(0, peer_waiting::NOT_EMPTY), (1, peer_waiting::NOT_FULL)] {
        let slot = segment
            .register(channel, PeerRole::Consumer, DEAD.0, DEAD.1, runtime::C)
            .unwrap();
        table(&segment)[slot.index()]
            .waiting
            .store(waiting, Relaxed);
        std::mem::forget(slot);
    }
    let slot = segment
        .register(
            0,
            PeerRole::Consumer,
            OTHER_DEAD.0,
            OTHER_DEAD.1,
            runtime::C,
        )
        .unwrap();
    let record = &table(&segment)[slot.index()];
    record.channel_id.store(4096, Relaxed);
    record.waiting.store(7, Relaxed);
    std::mem::forget(slot);

    let report = segment.free_dead_records(&alive(), REPAIRER.0).unwrap();
    assert_eq!(report.records_freed, 3);
    assert_eq!(report.waits_given_back, 0);
    for id in [0, 1] {
        let channel: Channel<'_> = segment.open_channel(id).unwrap();
        assert_eq!(channel.waiters(), (0, 0), "channel {id}");
    }
    assert!(table(&segment)
        .iter()
        .all(|r| r.waiting.load(Relaxed) == peer_waiting::NONE));
}

// ------------------------------------------------ gaps found by `cargo mutants` on peer.rs

#[test]
#[cfg_attr(
    miri,
    ignore = "slow under Miri; rules of the repair, checked natively"
)]
fn a_slot_names_its_owner_and_leaves_only_if_the_caller_registered_it() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    let slot = segment
        .register(0, PeerRole::Consumer, LIVE.0, LIVE.1, runtime::RUST)
        .unwrap();
    assert_eq!(slot.pid(), LIVE.0);
    assert!(format!("{slot:?}").contains(&format!("pid: {}", LIVE.0)));
    // A forked child holding a copy of the slot must not free its parent's record.
    slot.leave_if_mine(LIVE.0 + 1);
    assert_eq!(
        segment.peers().unwrap().collect::<Vec<_>>().len(),
        1,
        "the parent's record stays"
    );
    let slot = segment
        .register(0, PeerRole::Consumer, LIVE.0, LIVE.1, runtime::RUST)
        .unwrap();
    assert_eq!(segment.peers().unwrap().collect::<Vec<_>>().len(), 2);
    slot.leave_if_mine(LIVE.0);
    assert_eq!(
        segment.peers().unwrap().collect::<Vec<_>>().len(),
        1,
        "the caller's own record is freed"
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "slow under Miri; rules of the repair, checked natively"
)]
fn a_closure_is_a_liveness_check() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    producer_dies_after_claim(&segment, 0, DEAD);
    let channel = segment.open_channel(0).unwrap();
    channel.try_send(b"after", &meta()).unwrap();
    let everyone_alive = |_pid: u32, _start: u64| true;
    let report = segment
        .repair(&channel, &everyone_alive, REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!(report, Default::default(), "nobody dead: nothing repaired");
    let only_dead_is_dead = |pid: u32, _start: u64| pid != DEAD.0;
    let report = segment
        .repair(&channel, &only_dead_is_dead, REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!((report.tombstoned, report.records_freed), (1, 1));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "slow under Miri; rules of the repair, checked natively"
)]
fn a_sweep_never_frees_the_sweepers_own_record() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    std::mem::forget(
        segment
            .register(0, PeerRole::Consumer, REPAIRER.0, REPAIRER.1, runtime::RUST)
            .unwrap(),
    );
    // Even a liveness check that (wrongly) calls the sweeper dead.
    let nobody_alive = |_pid: u32, _start: u64| false;
    let report = segment
        .free_dead_records(&nobody_alive, REPAIRER.0)
        .unwrap();
    assert_eq!(report.records_freed, 0);
    assert_eq!(
        segment.peers().unwrap().collect::<Vec<_>>()[0].record.pid,
        REPAIRER.0
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "slow under Miri; rules of the repair, checked natively"
)]
fn the_oldest_position_of_the_last_lap_is_repaired() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    // Ring of 4: the dead producer holds 0, live sends take 1..=3, so tail − 0 == capacity.
    let position = producer_dies_after_claim(&segment, 0, DEAD);
    let channel = segment.open_channel(0).unwrap();
    for _ in 0..3 {
        channel.try_send(b"live", &meta()).unwrap();
    }
    assert_eq!(channel.tail() - position, 4);
    let report = segment
        .repair(&channel, &alive(), REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!((report.tombstoned, report.records_freed), (1, 1));
    assert_eq!(recv(&channel), Err(RecvError::Lost { message_id: 0 }));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "slow under Miri; rules of the repair, checked natively"
)]
fn a_dead_intent_on_an_unclaimed_position_is_not_tombstoned() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    // A producer wrote its intent for the position at tail, lost the CAS, and died: the
    // position was never claimed (its slot is free, sequence == position).
    let slot = segment
        .register(0, PeerRole::Producer, DEAD.0, DEAD.1, runtime::C)
        .unwrap();
    let record = &table(&segment)[slot.index()];
    std::mem::forget(slot);
    let channel = segment.open_channel(0).unwrap();
    channel.try_send(b"one", &meta()).unwrap();
    record.intent_position.store(channel.tail(), Relaxed);
    record.intent_count.store(1, Relaxed);
    let report = segment
        .repair(&channel, &alive(), REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!((report.tombstoned, report.freed), (0, 0));
    assert_eq!(report.records_freed, 1);
    // The next send takes that position and its message arrives.
    channel.try_send(b"two", &meta()).unwrap();
    assert_eq!(recv(&channel).unwrap(), b"one");
    assert_eq!(recv(&channel).unwrap(), b"two");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "slow under Miri; rules of the repair, checked natively"
)]
fn only_intents_of_the_same_channel_and_role_cover_a_position() {
    // (channel, role, offset of the live intent from the dead position)
    for (channel_id, role, offset) in [
        (0, PeerRole::Consumer, 0),
        (1, PeerRole::Producer, 0),
        (0, PeerRole::Producer, 2),
    ] {
        let mut buf = buffer();
        let segment = setup(&mut buf);
        let position = producer_dies_after_claim(&segment, 0, DEAD);
        // A live record naming the same position number for the other role or another
        // channel, or another position of channel 0's producers: it holds nothing of the
        // dead one's.
        let other = segment
            .register(channel_id, role, LIVE.0, LIVE.1, runtime::RUST)
            .unwrap();
        let record = &table(&segment)[other.index()];
        record.intent_position.store(position + offset, Relaxed);
        record.intent_count.store(1, Relaxed);
        let channel = segment.open_channel(0).unwrap();
        channel.try_send(b"after", &meta()).unwrap();
        let report = segment
            .repair(&channel, &alive(), REPAIRER.0, REPAIRER.1)
            .unwrap();
        assert_eq!(
            (report.tombstoned, report.records_deferred),
            (1, 0),
            "{role:?} of channel {channel_id}, intent at +{offset}"
        );
        record.intent_count.store(0, Relaxed);
        drop(other);
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "slow under Miri; rules of the repair, checked natively"
)]
fn the_repairers_own_intent_covers_a_position_whatever_liveness_says() {
    let mut buf = buffer();
    let segment = setup(&mut buf);
    let position = producer_dies_after_claim(&segment, 0, DEAD);
    // The repairer's own producer record names the position too (it lost the CAS for it
    // and is about to retry): it is alive by definition, even to a liveness check that
    // (wrongly) calls everyone dead.
    let own = segment
        .register(0, PeerRole::Producer, REPAIRER.0, REPAIRER.1, runtime::RUST)
        .unwrap();
    let record = &table(&segment)[own.index()];
    record.intent_position.store(position, Relaxed);
    record.intent_count.store(1, Relaxed);
    let channel = segment.open_channel(0).unwrap();
    let nobody_alive = |_pid: u32, _start: u64| false;
    let report = segment
        .repair(&channel, &nobody_alive, REPAIRER.0, REPAIRER.1)
        .unwrap();
    assert_eq!((report.tombstoned, report.records_deferred), (0, 1));
    record.intent_count.store(0, Relaxed);
    drop(own);
}
