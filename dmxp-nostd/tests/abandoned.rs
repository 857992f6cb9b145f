//! Segments and channels left half-made by a creator that died (PROTOCOL.md §3.3, §5.3): they
//! are taken over only when the recorded creator is provably dead, by exactly one reclaimer.

// Formatting touches every header byte atomically, which takes minutes under Miri; these
// paths add no unsafe code of their own.
#![cfg(not(miri))]

mod common;

use common::{formatted, segment_len, SegmentBuf};
use dmxp_nostd::layout::{channel_state, CHANNEL_ENTRY_SIZE, CHANNEL_TABLE_OFFSET, MAGIC};
use dmxp_nostd::{Abandonment, Corruption, Error, FormatOptions, Segment, SendMeta};

const DEAD: u32 = 4001;
const LIVE: u32 = 4002;
const ME: u32 = 4003;

/// Liveness for the tests: only `LIVE` and `ME` run.
fn alive(pid: u32, _start_time: u64) -> bool {
    pid == LIVE || pid == ME
}

/// A region as a creator leaves it when it dies after recording its pid, before `magic`.
fn unpublished(creator_pid: u32) -> SegmentBuf {
    let mut buf = SegmentBuf::new(segment_len(&[4]));
    buf.write_u32(40, creator_pid);
    // Half-written header fields, as a creator dying mid-format leaves them.
    buf.write_u32(8, 1);
    buf.write_u64(32, 12345);
    buf
}

fn entry(id: usize) -> usize {
    CHANNEL_TABLE_OFFSET + id * CHANNEL_ENTRY_SIZE
}

fn round_trip(segment: &Segment<'_>, id: u32) {
    let channel = segment.open_channel(id).expect("open");
    channel.try_send(b"after", &SendMeta::default()).unwrap();
    let mut buf = [0u8; 16];
    let got = channel.try_recv(&mut buf).unwrap();
    assert_eq!(&buf[..got.len], b"after");
}

#[test]
fn format_records_the_creator_and_publishes_magic() {
    let mut buf = SegmentBuf::new(segment_len(&[4]));
    Segment::format(buf.region(), ME).unwrap();
    assert_eq!(buf.read_u32(40), ME);
    assert_eq!(buf.read_u64(0), MAGIC);
    assert_eq!(
        Segment::abandoned_by(buf.region(), &alive).unwrap(),
        Abandonment::Published
    );
}

#[test]
fn a_segment_whose_creator_died_is_reformatted_by_one_reclaimer() {
    let mut buf = unpublished(DEAD);
    assert!(matches!(
        Segment::attach(buf.region()),
        Err(Error::NotReady)
    ));
    assert_eq!(
        Segment::abandoned_by(buf.region(), &alive).unwrap(),
        Abandonment::Abandoned { creator_pid: DEAD }
    );
    {
        let segment =
            Segment::reclaim_abandoned(buf.region(), ME, &alive, FormatOptions::default()).unwrap();
        segment.create_channel(0, 4, ME).unwrap();
        round_trip(&segment, 0);
    }
    assert_eq!(buf.read_u32(40), ME, "the reclaimer is the creator now");
    assert_eq!(
        buf.read_u64(32),
        (segment_len(&[4])) as u64,
        "band cursor re-set"
    );
    // A second reclaimer finds a published segment and must attach instead.
    assert!(matches!(
        Segment::reclaim_abandoned(buf.region(), LIVE, &alive, FormatOptions::default()),
        Err(Error::AlreadyFormatted)
    ));
    let segment = Segment::attach(buf.region()).unwrap();
    round_trip(&segment, 0);
}

#[test]
fn a_segment_is_not_reclaimed_while_its_creator_runs_or_is_unknown() {
    for creator in [LIVE, 0] {
        let mut buf = unpublished(creator);
        let before = buf.bytes().to_vec();
        assert_eq!(
            Segment::abandoned_by(buf.region(), &alive).unwrap(),
            Abandonment::BeingCreated {
                creator_pid: creator
            }
        );
        assert!(matches!(
            Segment::reclaim_abandoned(buf.region(), ME, &alive, FormatOptions::default()),
            Err(Error::NotReady)
        ));
        assert_eq!(
            buf.bytes(),
            &before[..],
            "creator {creator}: bytes untouched"
        );
    }
}

#[test]
fn a_live_segment_whose_magic_was_overwritten_is_corrupt_not_abandoned() {
    // Channels exist, so it was published once: zeroed magic is a scribble, not a creator
    // that died mid-format, whatever became of the creator.
    let mut buf = formatted(&[4], DEAD);
    buf.write_u64(0, 0);
    let before = buf.bytes().to_vec();
    assert!(matches!(
        Segment::abandoned_by(buf.region(), &alive),
        Err(Error::Corrupt(Corruption::BadMagic { found: 0 }))
    ));
    assert!(matches!(
        Segment::reclaim_abandoned(buf.region(), ME, &alive, FormatOptions::default()),
        Err(Error::Corrupt(Corruption::BadMagic { found: 0 }))
    ));
    assert_eq!(buf.bytes(), &before[..], "bytes untouched");
}

#[test]
fn a_published_segment_is_never_reformatted() {
    let mut buf = formatted(&[4], DEAD);
    let before = buf.bytes().to_vec();
    assert!(matches!(
        Segment::reclaim_abandoned(buf.region(), ME, &alive, FormatOptions::default()),
        Err(Error::AlreadyFormatted)
    ));
    assert_eq!(buf.bytes(), &before[..]);
}

/// Channel 1 claimed (CREATING) by `creator`, which then died before carving its band.
fn half_made_channel(creator: u32) -> SegmentBuf {
    let mut buf = SegmentBuf::new(segment_len(&[4, 8]));
    {
        let segment = Segment::format(buf.region(), ME).unwrap();
        segment.create_channel(0, 4, ME).unwrap();
    }
    buf.write_u32(entry(1) + 24, channel_state::CREATING);
    buf.write_u32(entry(1) + 28, creator);
    buf
}

#[test]
fn a_channel_whose_creator_died_is_created_by_the_reclaimer() {
    let mut buf = half_made_channel(DEAD);
    let segment = Segment::attach(buf.region()).unwrap();
    assert!(matches!(
        segment.open_or_create_channel(1, 8, ME),
        Err(Error::ChannelBeingCreated { id: 1 })
    ));
    assert_eq!(segment.channel_creator(1).unwrap(), Some(DEAD));
    assert_eq!(segment.channel_creator(0).unwrap(), None, "published");

    let channel = segment.reclaim_channel(1, 8, ME, &alive).unwrap();
    assert_eq!(channel.capacity(), 8);
    round_trip(&segment, 1);
    round_trip(&segment, 0);
    assert_eq!(segment.channel_creator(1).unwrap(), None);
    // Another reclaimer now just opens it.
    let again = segment.reclaim_channel(1, 8, LIVE, &alive).unwrap();
    assert_eq!(again.capacity(), 8);
}

#[test]
fn a_channel_is_not_taken_over_while_its_creator_runs_or_is_unknown() {
    for creator in [LIVE, 0] {
        let mut buf = half_made_channel(creator);
        let before = buf.bytes().to_vec();
        {
            let segment = Segment::attach(buf.region()).unwrap();
            assert!(matches!(
                segment.reclaim_channel(1, 8, ME, &alive),
                Err(Error::ChannelBeingCreated { id: 1 })
            ));
        }
        assert_eq!(
            buf.bytes(),
            &before[..],
            "creator {creator}: bytes untouched"
        );
    }
}

#[test]
fn reclaim_channel_creates_an_empty_entry_and_checks_the_capacity() {
    let mut buf = SegmentBuf::new(segment_len(&[4]));
    let segment = Segment::format(buf.region(), ME).unwrap();
    assert!(matches!(
        segment.reclaim_channel(0, 3, ME, &alive),
        Err(Error::InvalidCapacity { capacity: 3 })
    ));
    let channel = segment.reclaim_channel(0, 4, ME, &alive).unwrap();
    assert_eq!(channel.capacity(), 4);
}

/// A creator that publishes the segment and exits while a checker is judging it is not a dead
/// creator: the verdict is re-checked against `magic` (PROTOCOL.md §3.3).
#[test]
fn a_creator_that_publishes_and_exits_while_being_judged_is_not_abandoned() {
    let mut buf = unpublished(DEAD);
    let region = buf.region();
    // The liveness check is where the race window was: the creator publishes just then, then
    // exits (the check reports it dead).
    let publish_then_die = |_pid: u32, _start: u64| {
        let magic = region
            .view::<dmxp_nostd::layout::AtomicHeaderFields>(0)
            .unwrap();
        magic
            .magic
            .store(MAGIC, std::sync::atomic::Ordering::Release);
        false
    };
    assert_eq!(
        Segment::abandoned_by(region, &publish_then_die).unwrap(),
        Abandonment::Published
    );
}
