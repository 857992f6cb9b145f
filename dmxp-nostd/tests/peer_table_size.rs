//! The size of the peer table (PROTOCOL.md §11.1): chosen by the segment's creator with
//! [`FormatOptions::with_peer_records`], validated at attach, read once per attachment, and
//! honoured by registration, listing and repair.

mod common;

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use common::{segment_len, SegmentBuf};
use dmxp_nostd::layout::{
    runtime, AtomicHeaderFields, AtomicPeerRecord, MAX_PEER_RECORDS, PEER_RECORDS, PEER_RECORD_SIZE,
};
use dmxp_nostd::{
    parse_segment, Corruption, Error, FormatOptions, Liveness, PeerRole, PeerSlot, Segment,
    SendMeta,
};

const CREATOR: u32 = 1;
const REPAIRER: u32 = 300;
/// Offset of `peer_records` in the header.
const PEER_RECORDS_AT: usize = 56;

/// Alive: the repairer and pids from 200 to 299; every other pid is dead. Counts its checks.
#[derive(Default)]
struct Judge {
    checks: AtomicU32,
}

impl Liveness for Judge {
    fn is_alive(&self, pid: u32, _start_time: u64) -> bool {
        self.checks.fetch_add(1, Relaxed);
        pid == REPAIRER || (200..300).contains(&pid)
    }
}

/// Room for one channel of `capacity` slots and a peer table of `records` records.
fn buffer(capacity: u64, records: usize) -> SegmentBuf {
    SegmentBuf::new(segment_len(&[capacity]) + records * PEER_RECORD_SIZE)
}

/// Formats `buf` with a table of `records` and creates channel 0 of `capacity` slots.
fn format(buf: &mut SegmentBuf, records: u32, capacity: u64) -> Segment<'_> {
    let options = FormatOptions::default().with_peer_records(records);
    let segment = Segment::format_with(buf.region(), CREATOR, options).unwrap();
    segment.create_channel(0, capacity, CREATOR).unwrap();
    segment
}

fn header<'a>(segment: &Segment<'a>) -> &'a AtomicHeaderFields {
    segment.region().view::<AtomicHeaderFields>(0).unwrap()
}

fn table<'a>(segment: &Segment<'a>) -> &'a [AtomicPeerRecord] {
    segment.peer_table().unwrap().expect("a peer table")
}

fn register<'a>(segment: &Segment<'a>, pid: u32) -> Result<PeerSlot<'a>, Error> {
    segment.register(0, PeerRole::Producer, pid, 0, runtime::RUST)
}

#[test]
fn a_segment_made_with_more_records_holds_as_many_handles() {
    let mut buf = buffer(4, 1024);
    let segment = format(&mut buf, 1024, 4);
    assert_eq!(segment.peer_records(), 1024);
    assert_eq!(header(&segment).peer_records.load(Relaxed), 1024);

    let cursor = header(&segment).band_cursor.load(Relaxed);
    let slots: Vec<_> = (0..1024)
        .map(|i| register(&segment, 1000 + i).unwrap())
        .collect();
    // The table carved is 1,024 records of 64 bytes.
    assert_eq!(header(&segment).band_cursor.load(Relaxed), cursor + 65_536);
    assert_eq!(slots.last().unwrap().index(), 1023);
    assert_eq!(register(&segment, 5).unwrap_err(), Error::PeerTableFull);
    assert_eq!(segment.peers().unwrap().count(), 1024);

    // Another attachment reads the same size from the header.
    let again = Segment::attach(segment.region()).unwrap();
    assert_eq!(again.peer_records(), 1024);
    assert_eq!(again.peers().unwrap().count(), 1024);
    drop(slots);
    assert_eq!(again.peers().unwrap().count(), 0);
}

#[test]
fn the_default_table_holds_256_and_says_so_in_the_header() {
    let mut buf = buffer(4, PEER_RECORDS);
    let segment = format(&mut buf, 0, 4);
    assert_eq!(segment.peer_records(), PEER_RECORDS);
    let slots: Vec<_> = (0..256)
        .map(|i| register(&segment, 1000 + i).unwrap())
        .collect();
    assert_eq!(register(&segment, 5).unwrap_err(), Error::PeerTableFull);
    drop(slots);
    assert_eq!(buf.read_u32(PEER_RECORDS_AT), 0);
}

#[test]
fn a_size_no_segment_may_have_is_refused_before_anything_is_written() {
    for requested in [1, 100, 255, 16_385, u32::MAX] {
        let mut buf = buffer(4, 0);
        let options = FormatOptions::default().with_peer_records(requested);
        assert_eq!(
            Segment::format_with(buf.region(), CREATOR, options).err(),
            Some(Error::InvalidPeerRecords { requested })
        );
        assert!(
            buf.bytes().iter().all(|&b| b == 0),
            "{requested}: region written"
        );
    }
    for accepted in [0, 256, 257, 4096, MAX_PEER_RECORDS as u32] {
        assert!(FormatOptions::default()
            .with_peer_records(accepted)
            .check()
            .is_ok());
    }
}

#[test]
fn attach_refuses_a_peer_records_field_out_of_range() {
    let mut buf = buffer(4, PEER_RECORDS);
    format(&mut buf, 0, 4);
    for found in [1, 100, 255, 16_385, 20_000, u32::MAX] {
        buf.write_u32(PEER_RECORDS_AT, found);
        let expected = Error::Corrupt(Corruption::PeerRecordsOutOfRange { found });
        assert_eq!(Segment::attach(buf.region()).err(), Some(expected));
        assert_eq!(parse_segment(buf.bytes()).unwrap_err(), expected);
    }
    buf.write_u32(PEER_RECORDS_AT, 0);
    assert!(Segment::attach(buf.region()).is_ok());
}

#[test]
fn attach_checks_the_table_range_with_the_size_the_header_gives() {
    // A 256-record table at the very end of the segment.
    let mut buf = buffer(4, PEER_RECORDS);
    let table_at = segment_len(&[4]) as u64;
    {
        let segment = format(&mut buf, 0, 4);
        drop(register(&segment, 1000).unwrap());
        assert_eq!(header(&segment).peer_table_offset.load(Relaxed), table_at);
    }
    assert!(Segment::attach(buf.region()).is_ok());
    // Said to hold 1,024 records, the same table would run past the segment.
    buf.write_u32(PEER_RECORDS_AT, 1024);
    assert_eq!(
        Segment::attach(buf.region()).err(),
        Some(Error::Corrupt(Corruption::PeerTableOutOfRange {
            found: table_at,
            segment_len: buf.len() as u64,
        }))
    );
}

#[test]
fn a_size_rewritten_after_attach_changes_nothing_for_that_attachment() {
    let mut buf = buffer(4, PEER_RECORDS);
    let segment = format(&mut buf, 0, 4);
    let first = register(&segment, 1000).unwrap();
    // A hostile peer claims a table 64 times larger than the one installed.
    header(&segment)
        .peer_records
        .store(MAX_PEER_RECORDS as u32, Relaxed);
    assert_eq!(segment.peer_records(), PEER_RECORDS);
    assert_eq!(table(&segment).len(), PEER_RECORDS);
    let more: Vec<_> = (1..256)
        .map(|i| register(&segment, 1000 + i).unwrap())
        .collect();
    assert_eq!(register(&segment, 5).unwrap_err(), Error::PeerTableFull);
    assert_eq!(segment.peers().unwrap().count(), 256);
    // A new attachment sees the lie: that table cannot fit in the segment.
    assert!(matches!(
        Segment::attach(segment.region()),
        Err(Error::Corrupt(Corruption::PeerTableOutOfRange { .. }))
    ));
    drop((first, more));
}

/// Writes an intent covering `count` positions from `first` into `record`, as a claimer does.
fn forge_intent(record: &AtomicPeerRecord, first: u64, count: u32) {
    record.intent_position.store(first, Relaxed);
    record.intent_count.store(count, Relaxed);
}

#[test]
fn repair_reaches_records_past_the_first_256_and_defers_to_live_ones_there() {
    let mut buf = buffer(4, 1024);
    let segment = format(&mut buf, 1024, 4);
    // Records 0..900 belong to live idle peers.
    let idle: Vec<_> = (0..900)
        .map(|i| register(&segment, 200 + i % 100).unwrap())
        .collect();

    // Record 900: a producer that claims position 0 and dies before publishing it.
    let dead = register(&segment, 100).unwrap();
    assert_eq!(dead.index(), 900);
    let channel = segment.open_channel(0).unwrap().with_peer(&dead);
    let loan = channel.try_loan().unwrap();
    assert_eq!(loan.position(), 0);
    std::mem::forget(loan);
    std::mem::forget(dead);

    // Record 1000: a live producer whose intent names the same position (it lost the CAS
    // for it and is about to retry): the dead record's position must wait for it.
    let filler: Vec<_> = (901..1000)
        .map(|i| register(&segment, 200 + i % 100).unwrap())
        .collect();
    let live = register(&segment, 250).unwrap();
    assert_eq!(live.index(), 1000);
    forge_intent(&table(&segment)[1000], 0, 1);

    let repairer = segment.open_channel(0).unwrap();
    let judge = Judge::default();
    let report = segment.repair(&repairer, &judge, REPAIRER, 3).unwrap();
    assert_eq!(report.tombstoned, 0, "{report:?}");
    assert_eq!(report.records_deferred, 1);

    // Once the live intent is gone, the position is repaired.
    forge_intent(&table(&segment)[1000], 0, 0);
    let report = segment.repair(&repairer, &judge, REPAIRER, 3).unwrap();
    assert_eq!(report.tombstoned, 1, "{report:?}");
    assert_eq!(report.records_freed, 1);
    let mut out = [0u8; 960];
    assert!(
        repairer.try_recv(&mut out).is_err(),
        "the tombstone is no message"
    );
    let sent = repairer.try_send(b"after", &SendMeta::default()).unwrap();
    assert_eq!(sent, 1);
    drop((idle, filler, live));
}

#[test]
fn a_repair_over_a_large_table_judges_each_record_once() {
    // Four positions claimed by four dead producers (records 0..4), and 1,020 forged dead
    // records (4..1024) whose intents all name those four positions: every stuck position
    // makes the repair look at every record.
    let mut buf = buffer(4, 1024);
    let segment = format(&mut buf, 1024, 4);
    for i in 0..4 {
        let dead = register(&segment, 10 + i).unwrap();
        let channel = segment.open_channel(0).unwrap().with_peer(&dead);
        std::mem::forget(channel.try_loan().unwrap());
        std::mem::forget(dead);
    }
    for i in 4..1024 {
        let forged = register(&segment, 1000 + i).unwrap();
        forge_intent(&table(&segment)[forged.index()], 0, 4);
        std::mem::forget(forged);
    }
    let judge = Judge::default();
    let repairer = segment.open_channel(0).unwrap();
    let report = segment.repair(&repairer, &judge, REPAIRER, 3).unwrap();
    assert_eq!(report.tombstoned, 4, "{report:?}");
    assert_eq!(report.records_freed, 1024);
    let checks = judge.checks.load(Relaxed);
    assert!(checks <= 1024, "{checks} liveness checks for 1,024 records");
}
