//! The blob pool (PROTOCOL.md §13) in one process: loans, sends, in-place and copying
//! receives, exhaustion, stale and forged references, the reclaim rules, validation of a
//! corrupted descriptor, and a model-based property test of the allocator.

use dmxp_nostd::blob::{block_state, BlobPoolSpec, BlobRef, Tag, POOL_MAGIC};
use dmxp_nostd::layout::{
    channel_entry_offset, message_flags, AtomicChannelEntry, AtomicSlot, HEADER_SIZE, SLOT_SIZE,
};
use dmxp_nostd::{
    AlignedBlock, BlobError, Channel, ChannelOptions, Corruption, Error, FormatOptions, Liveness,
    PeerRole, RecvError, Region, Segment, SendError, SendMeta,
};
use proptest::prelude::*;
use std::sync::atomic::Ordering::Relaxed;
use zerocopy::IntoBytes;

const ME: u32 = 1000;
const DEAD: u32 = 2000;

/// Everyone is alive but `DEAD`.
struct AllButDead;
impl Liveness for AllButDead {
    fn is_alive(&self, pid: u32, _start_time: u64) -> bool {
        pid != DEAD
    }
}

/// Two classes: 4 blocks of 4 KiB and 2 of 64 KiB.
fn spec() -> BlobPoolSpec {
    BlobPoolSpec::new()
        .with_class(4096, 4)
        .with_class(64 << 10, 2)
}

fn memory() -> Vec<AlignedBlock> {
    vec![AlignedBlock::ZERO; AlignedBlock::count_for(1 << 20)]
}

fn format(memory: &mut [AlignedBlock]) -> Segment<'_> {
    let options = FormatOptions::default().with_blob_pool(spec());
    Segment::format_with(Region::new(memory.as_mut_bytes()).unwrap(), ME, options).unwrap()
}

fn blob_channel<'a>(segment: &Segment<'a>) -> Channel<'a> {
    let options = ChannelOptions::default().with_blobs();
    segment
        .open_or_create_channel_with(0, 8, ME, options)
        .unwrap()
        .0
}

fn pattern(index: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (index as usize * 31 + k * 7) as u8)
        .collect()
}

fn free_blocks(segment: &Segment<'_>) -> u32 {
    let pool = segment.blob_pool().unwrap();
    pool.stats().iter().map(|c| c.free).sum()
}

#[test]
fn a_blob_travels_whole_in_place_and_its_block_comes_back() {
    let mut memory = memory();
    let segment = format(&mut memory);
    let channel = blob_channel(&segment);
    let producer = segment.register(0, PeerRole::Producer, ME, 0, 1).unwrap();
    let consumer = segment.register(0, PeerRole::Consumer, ME, 0, 1).unwrap();
    let tx = channel.clone().with_peer(&producer);
    let rx = channel.clone().with_peer(&consumer);
    for (index, len) in [0usize, 1, 7, 8, 9, 4095, 4096, 4097, 65_536]
        .into_iter()
        .enumerate()
    {
        let payload = pattern(index as u64, len);
        let mut loan = tx.try_loan_blob(len).unwrap();
        assert_eq!(loan.bytes().write_chunks(payload.chunks(1000)), len);
        let meta = SendMeta {
            message_type: 9,
            flags: 0x0100,
            ..SendMeta::default()
        };
        let id = loan.try_commit(len, &meta).unwrap();
        let received = rx.try_recv_blob().unwrap();
        assert_eq!(received.meta().message_id, id);
        assert_eq!(received.meta().message_type, 9);
        assert_eq!(received.meta().flags, 0x0100 | message_flags::BLOB);
        assert_eq!(received.meta().payload_len as usize, len);
        let mut out = vec![0u8; len];
        assert_eq!(received.bytes().copy_to(&mut out), len);
        assert_eq!(out, payload, "blob of {len} bytes");
        // A block of the right class: the smallest that fits.
        let class = if len <= 4096 { 0 } else { 1 };
        assert_eq!(received.blob().class, class);
        received.release().unwrap();
        assert_eq!(free_blocks(&segment), 6);
    }
}

#[test]
fn unaligned_writes_and_reads_keep_the_bytes_around_them() {
    let mut memory = memory();
    let segment = format(&mut memory);
    let channel = blob_channel(&segment);
    let producer = segment.register(0, PeerRole::Producer, ME, 0, 1).unwrap();
    let consumer = segment.register(0, PeerRole::Consumer, ME, 0, 1).unwrap();
    let tx = channel.clone().with_peer(&producer);
    let rx = channel.clone().with_peer(&consumer);
    let mut loan = tx.try_loan_blob(100).unwrap();
    let bytes = loan.bytes();
    assert!(bytes.write_at(0, &[0xAA; 100]));
    assert!(bytes.write_at(3, b"hello, world"));
    assert!(!bytes.write_at(95, b"too long"), "past the loan");
    assert!(bytes.write_at(92, b"12345678"));
    loan.try_commit(100, &SendMeta::default()).unwrap();
    let received = rx.try_recv_blob().unwrap();
    let mut all = [0u8; 100];
    received.bytes().copy_to(&mut all);
    let mut expected = [0xAAu8; 100];
    expected[3..15].copy_from_slice(b"hello, world");
    expected[92..100].copy_from_slice(b"12345678");
    assert_eq!(all, expected);
    let mut middle = [0u8; 5];
    assert!(received.bytes().read_at(5, &mut middle));
    assert_eq!(&middle, b"llo, ");
    assert!(!received.bytes().read_at(96, &mut middle), "past the end");
}

#[test]
fn a_copying_receive_takes_a_blob_that_fits_and_refuses_one_that_does_not() {
    let mut memory = memory();
    let segment = format(&mut memory);
    let channel = blob_channel(&segment);
    let producer = segment.register(0, PeerRole::Producer, ME, 0, 1).unwrap();
    let tx = channel.clone().with_peer(&producer);
    let payload = pattern(3, 5000);
    let mut loan = tx.try_loan_blob(5000).unwrap();
    assert!(loan.bytes().write_at(0, &payload));
    loan.try_commit(5000, &SendMeta::default()).unwrap();
    // An unregistered consumer may copy it.
    let mut small = [0u8; 960];
    assert_eq!(
        channel.try_recv(&mut small),
        Err(RecvError::BufferTooSmall {
            needed: 5000,
            available: 960
        })
    );
    // The batch and the in-place slot receive refuse it, consuming nothing.
    assert!(matches!(
        channel.try_recv_batch(4, |_, _| panic!("nothing delivered")),
        Err(RecvError::IsBlob { len: 5000, .. })
    ));
    assert!(matches!(
        channel.try_recv_in_place(),
        Err(RecvError::IsBlob { len: 5000, .. })
    ));
    let mut big = vec![0u8; 8000];
    let received = channel.try_recv(&mut big).unwrap();
    assert_eq!(received.len, 5000);
    assert_eq!(&big[..5000], &payload[..]);
    assert_eq!(free_blocks(&segment), 6);
}

#[test]
fn a_blob_receive_leaves_inline_messages_to_the_ordinary_receive() {
    let mut memory = memory();
    let segment = format(&mut memory);
    let channel = blob_channel(&segment);
    let consumer = segment.register(0, PeerRole::Consumer, ME, 0, 1).unwrap();
    let rx = channel.clone().with_peer(&consumer);
    channel.try_send(b"inline", &SendMeta::default()).unwrap();
    assert_eq!(
        rx.try_recv_blob().unwrap_err(),
        RecvError::NotABlob { message_id: 0 }
    );
    let mut buf = [0u8; 960];
    assert_eq!(rx.try_recv(&mut buf).unwrap().len, 6);
    assert_eq!(rx.try_recv_blob().unwrap_err(), RecvError::Empty);
    // Unregistered handles cannot own blocks.
    assert_eq!(
        channel.try_recv_blob().unwrap_err(),
        RecvError::NotRegistered
    );
    assert_eq!(
        channel.try_loan_blob(10).unwrap_err(),
        BlobError::NotRegistered
    );
}

#[test]
fn an_exhausted_pool_fails_with_a_typed_error_until_a_block_is_released() {
    let mut memory = memory();
    let segment = format(&mut memory);
    let channel = blob_channel(&segment);
    let producer = segment.register(0, PeerRole::Producer, ME, 0, 1).unwrap();
    let tx = channel.clone().with_peer(&producer);
    assert_eq!(
        tx.try_loan_blob((64 << 10) + 1).unwrap_err(),
        BlobError::TooLarge {
            len: (64 << 10) + 1,
            largest: 64 << 10
        }
    );
    // Four small blocks, then the two large ones serve small loans too.
    let loans: Vec<_> = (0..6).map(|_| tx.try_loan_blob(100).unwrap()).collect();
    assert_eq!(
        tx.try_loan_blob(100).unwrap_err(),
        BlobError::PoolExhausted { len: 100 }
    );
    assert_eq!(free_blocks(&segment), 0);
    drop(loans);
    assert_eq!(free_blocks(&segment), 6, "dropped loans are given back");
    tx.try_loan_blob(100).unwrap();
}

#[test]
fn a_full_ring_keeps_the_loan_for_a_retry() {
    let mut memory = memory();
    let segment = format(&mut memory);
    let channel = segment
        .open_or_create_channel_with(0, 2, ME, ChannelOptions::default().with_blobs())
        .unwrap()
        .0;
    let producer = segment.register(0, PeerRole::Producer, ME, 0, 1).unwrap();
    let tx = channel.clone().with_peer(&producer);
    channel.try_send(b"a", &SendMeta::default()).unwrap();
    channel.try_send(b"b", &SendMeta::default()).unwrap();
    let mut loan = tx.try_loan_blob(10).unwrap();
    assert!(loan.bytes().write_at(0, b"0123456789"));
    assert_eq!(
        loan.try_commit(10, &SendMeta::default()),
        Err(SendError::Full)
    );
    let mut buf = [0u8; 960];
    channel.try_recv(&mut buf).unwrap();
    loan.try_commit(10, &SendMeta::default()).unwrap();
    drop(loan);
    channel.try_recv(&mut buf).unwrap();
    let received = channel.try_recv(&mut buf).unwrap();
    assert_eq!(&buf[..received.len], b"0123456789");
}

#[test]
fn a_stale_or_forged_reference_is_dropped_as_corrupt_and_touches_nothing() {
    let mut memory = memory();
    let segment = format(&mut memory);
    let channel = blob_channel(&segment);
    let producer = segment.register(0, PeerRole::Producer, ME, 0, 1).unwrap();
    let consumer = segment.register(0, PeerRole::Consumer, ME, 0, 1).unwrap();
    let tx = channel.clone().with_peer(&producer);
    let rx = channel.clone().with_peer(&consumer);
    let pool = segment.blob_pool().unwrap();
    // A real blob, then a message that names it again (a replay: same generation, another
    // position), one with the wrong generation, and references outside the pool.
    let mut loan = tx.try_loan_blob(64).unwrap();
    let real = loan.blob();
    loan.try_commit(64, &SendMeta::default()).unwrap();
    let forged = [
        real,
        BlobRef {
            generation: real.generation + 1,
            ..real
        },
        BlobRef { class: 7, ..real },
        BlobRef {
            block: 1 << 20,
            ..real
        },
        BlobRef {
            len: 1 << 20,
            ..real
        },
    ];
    for r in forged {
        let [a, b] = r.encode();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..].copy_from_slice(&b.to_le_bytes());
        forge_blob_message(&segment, &channel, &bytes);
    }
    let received = rx.try_recv_blob().unwrap();
    assert_eq!(received.blob(), real);
    for _ in forged {
        assert!(matches!(
            rx.try_recv_blob().unwrap_err(),
            RecvError::Corrupt {
                payload_len: 16,
                ..
            }
        ));
    }
    assert_eq!(pool.tag(&real).unwrap().state, block_state::HELD);
    received.release().unwrap();
    assert_eq!(free_blocks(&segment), 6);
}

/// The slot of `position` through the segment's region, as a peer that does not follow the
/// protocol would write it.
fn raw_slot<'a>(segment: &Segment<'a>, channel: &Channel<'_>, position: u64) -> &'a AtomicSlot {
    let geometry = channel.geometry();
    let index = position & (geometry.capacity - 1);
    let offset = geometry.band_offset as usize + index as usize * SLOT_SIZE;
    segment.region().view::<AtomicSlot>(offset).unwrap()
}

/// Publishes `reference` with the BLOB flag (the ordinary send refuses protocol bits): sent
/// as an ordinary 16-byte message, then its flags rewritten, as a hostile peer could.
fn forge_blob_message(segment: &Segment<'_>, channel: &Channel<'_>, reference: &[u8; 16]) {
    let position = channel.try_send(reference, &SendMeta::default()).unwrap();
    raw_slot(segment, channel, position)
        .meta
        .flags
        .store(message_flags::BLOB, Relaxed);
}

#[test]
fn a_dead_producers_loan_and_a_dead_consumers_block_are_reclaimed_with_their_records() {
    let mut memory = memory();
    let segment = format(&mut memory);
    let channel = blob_channel(&segment);
    let dead_producer = segment.register(0, PeerRole::Producer, DEAD, 0, 1).unwrap();
    let dead_consumer = segment.register(0, PeerRole::Consumer, DEAD, 0, 1).unwrap();
    let tx = channel.clone().with_peer(&dead_producer);
    let rx = channel.clone().with_peer(&dead_consumer);
    let unsent = tx.try_loan_blob(10).unwrap();
    let mut sent = tx.try_loan_blob(20).unwrap();
    sent.try_commit(20, &SendMeta::default()).unwrap();
    let held = rx.try_recv_blob().unwrap();
    assert_eq!(free_blocks(&segment), 4);
    // The process "dies": nothing it held is dropped.
    std::mem::forget((unsent, held));
    std::mem::forget((dead_producer, dead_consumer));
    let report = segment.free_dead_records(&AllButDead, ME).unwrap();
    assert_eq!(report.records_freed, 2);
    assert_eq!(report.blocks_reclaimed, 2);
    assert_eq!(free_blocks(&segment), 6);
}

#[test]
fn a_woken_owner_finds_its_reclaimed_block_revoked() {
    let mut memory = memory();
    let segment = format(&mut memory);
    let channel = blob_channel(&segment);
    let producer = segment.register(0, PeerRole::Producer, ME, 0, 1).unwrap();
    let consumer = segment.register(0, PeerRole::Consumer, ME, 0, 1).unwrap();
    let tx = channel.clone().with_peer(&producer);
    let rx = channel.clone().with_peer(&consumer);
    let pool = segment.blob_pool().unwrap();
    let mut loan = tx.try_loan_blob(10).unwrap();
    let mut sent = tx.try_loan_blob(10).unwrap();
    sent.try_commit(10, &SendMeta::default()).unwrap();
    let held = rx.try_recv_blob().unwrap();
    // A peer misjudges both records dead and reclaims their blocks (rule 1).
    assert_eq!(pool.reclaim_owner(producer.index()), 1);
    assert_eq!(pool.reclaim_owner(consumer.index()), 1);
    // The loan cannot be sent: its position becomes a SKIP marker, passed over.
    assert!(matches!(
        loan.try_commit(10, &SendMeta::default()),
        Err(SendError::Revoked { .. })
    ));
    assert_eq!(held.release(), Err(BlobError::Revoked));
    assert_eq!(rx.try_recv_blob().unwrap_err(), RecvError::Empty);
    assert_eq!(free_blocks(&segment), 6);
}

#[test]
fn queued_blocks_of_messages_that_left_the_ring_are_reclaimed() {
    let mut memory = memory();
    let segment = format(&mut memory);
    let channel = blob_channel(&segment);
    let producer = segment.register(0, PeerRole::Producer, ME, 0, 1).unwrap();
    let tx = channel.clone().with_peer(&producer);
    let mut loan = tx.try_loan_blob(10).unwrap();
    let blob = loan.blob();
    loan.try_commit(10, &SendMeta::default()).unwrap();
    // Still in the ring: not reclaimable.
    assert_eq!(segment.reclaim_blobs().unwrap(), 0);
    // A consumer that dies between freeing the slot and taking the block is modelled by a
    // slot freed without the block taken (what a repair of its claim does).
    let pool = segment.blob_pool().unwrap();
    assert_eq!(pool.tag(&blob).unwrap().state, block_state::QUEUED);
    assert!(matches!(
        channel.try_recv_batch(1, |_, _| {}),
        Err(RecvError::IsBlob { .. })
    ));
    force_free_head(&segment, &channel);
    assert_eq!(segment.reclaim_blobs().unwrap(), 1);
    assert_eq!(
        pool.tag(&blob).unwrap(),
        Tag::free(blob.generation),
        "freed, same generation"
    );
    assert_eq!(free_blocks(&segment), 6);
}

/// Moves the head past its position and frees the slot without taking the block: what a
/// repair does for a consumer that died between its claim and the take.
fn force_free_head(segment: &Segment<'_>, channel: &Channel<'_>) {
    let head = channel.head();
    let entry = segment
        .region()
        .view::<AtomicChannelEntry>(channel_entry_offset(0))
        .unwrap();
    entry.head.store(head + 1, Relaxed);
    raw_slot(segment, channel, head)
        .sequence
        .store(head + channel.capacity(), Relaxed);
}

#[test]
fn leaked_blocks_of_records_that_were_freed_are_reclaimed() {
    let mut memory = memory();
    let segment = format(&mut memory);
    let channel = blob_channel(&segment);
    let producer = segment.register(0, PeerRole::Producer, ME, 0, 1).unwrap();
    let tx = channel.clone().with_peer(&producer);
    std::mem::forget(tx.try_loan_blob(10).unwrap());
    assert_eq!(
        segment.reclaim_blobs().unwrap(),
        0,
        "its owner is registered"
    );
    drop(producer);
    assert_eq!(segment.reclaim_blobs().unwrap(), 1, "its owner left");
    assert_eq!(free_blocks(&segment), 6);
}

#[test]
fn a_blobs_channel_needs_a_pool() {
    let mut memory = memory();
    let segment = Segment::format(Region::new(memory.as_mut_bytes()).unwrap(), ME).unwrap();
    assert!(segment.blob_pool().is_none());
    let options = ChannelOptions::default().with_blobs();
    assert_eq!(
        segment
            .open_or_create_channel_with(0, 8, ME, options)
            .unwrap_err(),
        Error::Blob(BlobError::NoPool)
    );
    // A pool that does not fit the segment is refused before anything is written.
    let too_big =
        FormatOptions::default().with_blob_pool(BlobPoolSpec::new().with_class(1 << 20, 4));
    let mut small = vec![AlignedBlock::ZERO; AlignedBlock::count_for(1 << 20)];
    assert!(matches!(
        Segment::format_with(Region::new(small.as_mut_bytes()).unwrap(), ME, too_big),
        Err(Error::OutOfSpace { .. })
    ));
    assert!(matches!(
        Segment::format_with(
            Region::new(small.as_mut_bytes()).unwrap(),
            ME,
            FormatOptions::default().with_blob_pool(BlobPoolSpec::new().with_class(100, 1))
        ),
        Err(Error::InvalidBlobPool)
    ));
}

/// Offsets in the pool descriptor (PROTOCOL.md §13.2).
const CLASS_COUNT: usize = 8;
const POOL_LEN: usize = 16;
const CLASS0: usize = 64;

/// A change to the segment's bytes, given the pool's offset.
type Patch = Box<dyn FnOnce(&mut [u8], usize)>;

fn corrupt_and_attach(patch: impl FnOnce(&mut [u8], usize)) -> Result<(), Error> {
    let mut memory = memory();
    let pool_offset = {
        let segment = format(&mut memory);
        blob_channel(&segment);
        segment.blob_pool().unwrap().geometry().offset as usize
    };
    let bytes = memory.as_mut_bytes();
    patch(bytes, pool_offset);
    Segment::attach(Region::new(bytes).unwrap()).map(|_| ())
}

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn a_corrupted_pool_descriptor_is_refused_at_attach_with_the_field_named() {
    assert_eq!(corrupt_and_attach(|_, _| {}), Ok(()));
    let cases: Vec<(Patch, Corruption)> = vec![
        (
            Box::new(|b, _| put_u64(b, 64, 100)),
            Corruption::BlobPoolOutOfRange {
                found: 100,
                segment_len: 1 << 20,
            },
        ),
        (
            Box::new(|b, _| put_u64(b, 64, (1 << 20) - 64)),
            Corruption::BlobPoolOutOfRange {
                found: (1 << 20) - 64,
                segment_len: 1 << 20,
            },
        ),
        (
            Box::new(|b, p| put_u64(b, p, POOL_MAGIC ^ 1)),
            Corruption::BlobPoolBadMagic {
                found: POOL_MAGIC ^ 1,
            },
        ),
        (
            Box::new(|b, p| put_u32(b, p + CLASS_COUNT, 9)),
            Corruption::BlobPoolBadGeometry {
                class_count: 9,
                pool_len: 0,
            },
        ),
        (
            Box::new(|b, p| put_u64(b, p + POOL_LEN, 1 << 40)),
            Corruption::BlobPoolBadGeometry {
                class_count: 2,
                pool_len: 1 << 40,
            },
        ),
        // Block size not a multiple of 64; sizes not increasing; too many blocks; headers
        // outside the pool; data overlapping the other class's.
        (
            Box::new(|b, p| put_u64(b, p + CLASS0, 4000)),
            Corruption::BlobClassBad { class: 0 },
        ),
        (
            Box::new(|b, p| put_u64(b, p + CLASS0 + 64, 4096)),
            Corruption::BlobClassBad { class: 1 },
        ),
        (
            Box::new(|b, p| put_u32(b, p + CLASS0 + 8, 1 << 25)),
            Corruption::BlobClassBad { class: 0 },
        ),
        (
            Box::new(|b, p| put_u64(b, p + CLASS0 + 16, HEADER_SIZE as u64)),
            Corruption::BlobClassBad { class: 0 },
        ),
        (
            Box::new(|b, p| {
                let data0 =
                    u64::from_le_bytes(b[p + CLASS0 + 24..p + CLASS0 + 32].try_into().unwrap());
                put_u64(b, p + CLASS0 + 64 + 24, data0 + 4096);
            }),
            Corruption::BlobClassBad { class: 0 },
        ),
    ];
    for (patch, expected) in cases {
        let found = corrupt_and_attach(|b, p| patch(b, p)).unwrap_err();
        let expected = match (expected, found) {
            // The pool length is whatever the creator wrote: compare the rest.
            (
                Corruption::BlobPoolBadGeometry { class_count: 9, .. },
                Error::Corrupt(Corruption::BlobPoolBadGeometry { pool_len, .. }),
            ) => Corruption::BlobPoolBadGeometry {
                class_count: 9,
                pool_len,
            },
            (expected, _) => expected,
        };
        assert_eq!(found, Error::Corrupt(expected));
    }
}

#[test]
fn a_blobs_flag_without_a_pool_is_corrupt() {
    let result = corrupt_and_attach(|b, _| put_u64(b, 64, 0));
    assert_eq!(result, Ok(()), "a segment without a pool attaches");
    let mut memory = memory();
    {
        let segment = format(&mut memory);
        blob_channel(&segment);
    }
    let bytes = memory.as_mut_bytes();
    put_u64(bytes, 64, 0);
    let segment = Segment::attach(Region::new(bytes).unwrap()).unwrap();
    assert_eq!(
        segment.open_channel(0).unwrap_err(),
        Error::Corrupt(Corruption::BlobsWithoutPool { channel: 0 })
    );
}

#[test]
fn the_default_split_covers_the_budget_with_growing_classes() {
    for bytes in [4096u64, 1 << 20, 64 << 20, 1 << 30] {
        let spec = BlobPoolSpec::for_bytes(bytes);
        spec.check().unwrap();
        let sizes: Vec<u64> = spec.classes().iter().map(|c| c.block_size).collect();
        assert!(sizes.windows(2).all(|w| w[0] < w[1]));
        assert!(spec.data_bytes() <= bytes.max(4096));
    }
    assert_eq!(BlobPoolSpec::for_bytes(64 << 20).largest_block(), 4 << 20);
}

// ------------------------------------------------------------------ the allocator's model

#[derive(Clone, Debug)]
enum Op {
    Loan(usize),
    Commit(usize),
    DropLoan(usize),
    Receive,
    Release(usize),
    KillConsumer,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..70_000).prop_map(Op::Loan),
        3 => (0usize..8).prop_map(Op::Commit),
        1 => (0usize..8).prop_map(Op::DropLoan),
        3 => Just(Op::Receive),
        3 => (0usize..8).prop_map(Op::Release),
        1 => Just(Op::KillConsumer),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random loans, commits, drops, receives, releases and consumer deaths against a model of
    /// who owns what: no block is ever owned twice, every blob arrives with its bytes, and
    /// once every handle is gone and the dead are reclaimed, every block is free again.
    #[test]
    fn the_pool_never_owns_a_block_twice_and_leaks_nothing(ops in proptest::collection::vec(op(), 1..120)) {
        let mut memory = memory();
        let segment = format(&mut memory);
        let channel = blob_channel(&segment);
        let producer = segment.register(0, PeerRole::Producer, ME, 0, 1).unwrap();
        let tx = channel.clone().with_peer(&producer);
        // Each consumer incarnation lives until the end (a dead one's guards borrow it).
        let new_consumer = || -> &Channel<'_> {
            let record = Box::leak(Box::new(segment.register(0, PeerRole::Consumer, DEAD, 0, 1).unwrap()));
            Box::leak(Box::new(channel.clone().with_peer(record)))
        };
        let mut rx = new_consumer();
        let mut loans = Vec::new();
        let mut held = Vec::new();
        let mut in_ring = std::collections::VecDeque::new();
        let mut owned = std::collections::HashSet::new();
        let mut next = 0u64;
        for op in ops {
            match op {
                Op::Loan(len) => match tx.try_loan_blob(len) {
                    Ok(mut loan) => {
                        let b = loan.blob();
                        prop_assert!(owned.insert((b.class, b.block)), "block loaned twice");
                        let payload = pattern(next, len.min(64));
                        prop_assert!(loan.bytes().write_at(0, &payload));
                        loans.push((loan, next));
                        next += 1;
                    }
                    Err(BlobError::PoolExhausted { .. }) => {
                        prop_assert!(segment.blob_pool().unwrap().stats().iter()
                            .filter(|c| c.block_size as usize >= len).all(|c| c.free == 0));
                    }
                    Err(BlobError::TooLarge { .. }) => prop_assert!(len > 64 << 10),
                    Err(other) => prop_assert!(false, "{other}"),
                },
                Op::Commit(i) if i < loans.len() => {
                    let (mut loan, index) = loans.remove(i);
                    let len = loan.len();
                    match loan.try_commit(len, &SendMeta::default()) {
                        Ok(_) => in_ring.push_back((loan.blob(), index)),
                        Err(SendError::Full) => loans.push((loan, index)),
                        Err(other) => prop_assert!(false, "{other}"),
                    }
                }
                Op::DropLoan(i) if i < loans.len() => {
                    let (loan, _) = loans.remove(i);
                    let b = loan.blob();
                    drop(loan);
                    owned.remove(&(b.class, b.block));
                }
                Op::Receive => {
                    match rx.try_recv_blob() {
                        Ok(received) => {
                            let (b, index) = in_ring.pop_front().unwrap();
                            prop_assert_eq!(received.blob(), b);
                            let expected = pattern(index, received.len().min(64));
                            let mut out = vec![0u8; expected.len()];
                            received.bytes().copy_to(&mut out);
                            prop_assert_eq!(out, expected);
                            held.push(received);
                        }
                        Err(RecvError::Empty) => prop_assert!(in_ring.is_empty()),
                        Err(other) => prop_assert!(false, "{other}"),
                    }
                }
                Op::Release(i) if i < held.len() => {
                    let received = held.remove(i);
                    let b = received.blob();
                    received.release().unwrap();
                    owned.remove(&(b.class, b.block));
                }
                Op::KillConsumer => {
                    // Everything it holds is left as a crash leaves it.
                    for received in held.drain(..) {
                        owned.remove(&(received.blob().class, received.blob().block));
                        std::mem::forget(received);
                    }
                    let report = segment.free_dead_records(&AllButDead, ME).unwrap();
                    prop_assert_eq!(report.records_freed, 1);
                    // A new consumer takes over.
                    rx = new_consumer();
                }
                _ => {}
            }
            let stats = segment.blob_pool().unwrap().stats();
            let used: u32 = stats.iter().map(|c| c.block_count - c.free).sum();
            prop_assert_eq!(used as usize, owned.len(), "model and pool agree");
        }
        // Drain: release everything, drop every handle.
        drop(held);
        drop(loans);
        while let Ok(received) = rx.try_recv_blob() {
            drop(received);
        }
        prop_assert_eq!(free_blocks(&segment), 6);
    }
}
