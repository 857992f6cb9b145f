//! The facade's API within one process, on POSIX shm segments with unique names.
#![cfg(feature = "shm")]

mod common;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::ShmName;
use dmxp::core::layout::{AtomicSlot, SLOT_SIZE};
use dmxp::{pattern, ChannelBuilder, ErrorKind};

fn builder(name: &ShmName) -> ChannelBuilder {
    ChannelBuilder::new()
        .with_segment_name(name.0.clone())
        .with_segment_size(4 << 20)
}

#[test]
fn seed_shaped_hello_world_with_metadata() {
    let name = ShmName::new("hello");
    let producer = builder(&name)
        .with_channel_id(0)
        .with_capacity(1024)
        .build_producer()
        .unwrap();
    let before = dmxp::monotonic_ns();
    assert_eq!(producer.send("Hello, World!").unwrap(), 0);
    assert_eq!(producer.send_with(b"second", 42, 0x0100).unwrap(), 1);

    let consumer = builder(&name).with_channel_id(0).build_consumer().unwrap();
    let data = consumer.receive().unwrap().unwrap();
    assert_eq!(String::from_utf8(data).unwrap(), "Hello, World!");
    let message = consumer.receive_with_meta().unwrap().unwrap();
    let after = dmxp::monotonic_ns();
    assert_eq!(message.payload, b"second");
    let meta = message.meta;
    assert_eq!(meta.message_id, 1);
    assert_eq!(meta.message_type, 42);
    assert_eq!(meta.flags, 0x0100);
    assert_eq!(meta.channel_id, 0);
    assert_eq!(meta.sender_pid, std::process::id());
    assert_eq!(meta.sender_runtime, dmxp::runtime::RUST);
    assert!(before <= meta.timestamp_ns && meta.timestamp_ns <= after);
    assert_eq!(consumer.receive().unwrap(), None);
    assert_eq!(consumer.stats().received, 2);
}

#[test]
fn timestamps_can_be_turned_off_and_clones_keep_the_choice() {
    let name = ShmName::new("nostamp");
    let unstamped = builder(&name)
        .with_timestamps(false)
        .build_producer()
        .unwrap();
    let stamped = builder(&name).build_producer().unwrap();
    let consumer = builder(&name).build_consumer().unwrap();
    unstamped.send("a").unwrap();
    unstamped.clone().send("b").unwrap();
    let before = dmxp::monotonic_ns();
    stamped.send("c").unwrap();
    let mut loan = unstamped.loan().unwrap();
    assert!(loan.write_at(0, b"d"));
    loan.commit(1).unwrap();
    let stamps: Vec<u64> = std::iter::from_fn(|| consumer.receive_with_meta().unwrap())
        .map(|message| message.meta.timestamp_ns)
        .collect();
    assert_eq!(stamps.len(), 4);
    assert_eq!((stamps[0], stamps[1], stamps[3]), (0, 0, 0));
    assert!(stamps[2] >= before && stamps[2] > 0);
}

#[test]
fn clones_count_on_their_own_and_stats_sums_live_and_dropped_ones() {
    let name = ShmName::new("clonecount");
    let producer = builder(&name).build_producer().unwrap();
    let consumer = builder(&name).build_consumer().unwrap();
    let clone = consumer.clone();
    for i in 0..10u8 {
        producer.send([i]).unwrap();
    }
    assert!(consumer.receive().unwrap().is_some());
    assert!(clone.receive().unwrap().is_some());
    assert_eq!(clone.receive_batch_with(3, |_, _| {}).unwrap(), 3);
    // Live clones: each one's count, summed, seen from either.
    assert_eq!(consumer.stats().received, 5);
    assert_eq!(clone.stats().received, 5);
    drop(clone);
    // A dropped clone's messages stay counted.
    assert_eq!(consumer.stats().received, 5);
    let late = consumer.clone();
    assert!(late.receive().unwrap().is_some());
    assert_eq!(consumer.stats().received, 6);
    assert_eq!(late.stats().received, 6);
}

#[test]
fn consumer_not_found_names_the_channel() {
    let name = ShmName::new("nf");
    builder(&name).with_channel_id(0).build_producer().unwrap();
    let err = builder(&name)
        .with_channel_id(9)
        .build_consumer()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let text = err.to_string();
    assert!(
        text.contains("channel 9") && text.contains(&name.0),
        "{text}"
    );
    assert_eq!(
        std::io::Error::from(err).kind(),
        std::io::ErrorKind::NotFound
    );
}

#[test]
fn full_and_too_large_are_errors_with_kinds() {
    let name = ShmName::new("full");
    let producer = builder(&name).with_capacity(2).build_producer().unwrap();
    producer.send("a").unwrap();
    producer.send("b").unwrap();
    let full = producer.send("c").unwrap_err();
    assert_eq!(full.kind(), ErrorKind::Full);
    assert_eq!(
        std::io::Error::from(full).kind(),
        std::io::ErrorKind::WouldBlock
    );
    let big = producer.send(vec![0u8; 961]).unwrap_err();
    assert_eq!(
        big.kind(),
        ErrorKind::TooLarge {
            len: 961,
            limit: 960
        }
    );
    let reserved = producer.send_with("x", 0, 0x0001).unwrap_err();
    assert_eq!(reserved.kind(), ErrorKind::InvalidInput);
    // The ring still holds exactly the two messages.
    assert_eq!(producer.info().depth, 2);
}

#[test]
fn blocking_send_times_out_when_full_and_proceeds_when_freed() {
    let name = ShmName::new("sendto");
    let producer = builder(&name).with_capacity(2).build_producer().unwrap();
    producer.send("first").unwrap();
    producer.send("second").unwrap();
    let err = producer
        .send_timeout("third", Duration::from_millis(50))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(
        std::io::Error::from(err).kind(),
        std::io::ErrorKind::TimedOut
    );

    let consumer = builder(&name).build_consumer().unwrap();
    std::thread::scope(|s| {
        let sender = s.spawn(move || producer.send_blocking("third"));
        assert_eq!(
            consumer
                .receive_timeout(Duration::from_secs(30))
                .unwrap()
                .unwrap()
                .payload,
            b"first"
        );
        assert_eq!(sender.join().unwrap().unwrap(), 2);
    });
    assert_eq!(consumer.receive().unwrap().unwrap(), b"second");
    assert_eq!(consumer.receive().unwrap().unwrap(), b"third");
}

#[test]
fn receive_timeout_and_blocking_receive() {
    let name = ShmName::new("recvto");
    let producer = builder(&name).build_producer().unwrap();
    let consumer = builder(&name).build_consumer().unwrap();
    assert_eq!(
        consumer.receive_timeout(Duration::from_millis(20)).unwrap(),
        None
    );
    std::thread::scope(|s| {
        let waiter = s.spawn(move || consumer.receive_blocking());
        producer.send("wake up").unwrap();
        assert_eq!(waiter.join().unwrap().unwrap().payload, b"wake up");
    });
}

#[test]
fn batches_in_order() {
    let name = ShmName::new("batch");
    let producer = builder(&name).with_capacity(8).build_producer().unwrap();
    let payloads: Vec<Vec<u8>> = (0..12u64).map(|i| pattern::encode(0, i, 40)).collect();
    assert_eq!(producer.send_batch(&payloads).unwrap(), 8);
    let too_big = [vec![0u8; 10], vec![0u8; 2000]];
    assert!(matches!(
        producer.send_batch(&too_big).unwrap_err().kind(),
        ErrorKind::TooLarge { .. } | ErrorKind::Full
    ));
    let consumer = builder(&name).build_consumer().unwrap();
    let first = consumer.receive_batch(5).unwrap();
    assert_eq!(first.len(), 5);
    assert_eq!(producer.send_batch(&payloads[8..]).unwrap(), 4);
    let mut rest = Vec::new();
    let delivered = consumer
        .receive_batch_with(100, |meta, payload| {
            rest.push((meta.message_id, payload.to_vec()))
        })
        .unwrap();
    assert_eq!(delivered, 7);
    let all: Vec<u64> = first
        .iter()
        .map(|m| pattern::decode(&m.payload).unwrap().1)
        .chain(rest.iter().map(|(_, p)| pattern::decode(p).unwrap().1))
        .collect();
    assert_eq!(all, (0..12).collect::<Vec<_>>());
    assert!(consumer.receive_batch(4).unwrap().is_empty());
}

#[test]
fn loans_write_in_place_and_dropped_loans_are_skipped() {
    let name = ShmName::new("loan");
    let producer = builder(&name).with_capacity(4).build_producer().unwrap();
    {
        let mut loan = producer.loan().unwrap();
        assert_eq!(loan.message_id(), 0);
        assert!(loan.write_at(0, b"in place"));
        assert!(!loan.write_at(955, b"too far"));
        assert_eq!(loan.commit_with(8, 7, 0).unwrap(), 0);
    }
    drop(producer.loan().unwrap()); // never committed: a skip marker
    producer.send("after").unwrap();

    let consumer = builder(&name).build_consumer().unwrap();
    let first = consumer.receive_with_meta().unwrap().unwrap();
    assert_eq!(
        (first.payload.as_slice(), first.meta.message_type),
        (&b"in place"[..], 7)
    );
    let second = consumer.receive_with_meta().unwrap().unwrap();
    assert_eq!(second.payload, b"after");
    assert_eq!(second.meta.message_id, 2);
    assert_eq!(consumer.receive().unwrap(), None);
}

#[test]
fn in_place_receive_and_receive_into() {
    let name = ShmName::new("inplace");
    let producer = builder(&name).with_capacity(4).build_producer().unwrap();
    let consumer = builder(&name).build_consumer().unwrap();
    producer.send(pattern::encode(0, 5, 100)).unwrap();
    {
        let guard = consumer.receive_in_place().unwrap().unwrap();
        assert_eq!(guard.meta().payload_len, 100);
        assert_eq!(guard.payload().len(), 100);
        assert_eq!(pattern::decode(&guard.to_vec()), Ok((0, 5)));
        // The slot stays claimed until the guard drops.
        assert_eq!(consumer.info().head, 1);
    }
    producer.send([9u8; 50]).unwrap();
    let mut small = [0u8; 10];
    let err = consumer.receive_into(&mut small).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::BufferTooSmall {
            needed: 50,
            available: 10
        }
    );
    let mut buf = [0u8; 64];
    let (meta, len) = consumer.receive_into(&mut buf).unwrap().unwrap();
    assert_eq!((meta.message_id, len), (1, 50));
    assert_eq!(&buf[..50], &[9u8; 50]);
    assert!(consumer.receive_in_place().unwrap().is_none());
}

#[test]
fn corrupt_messages_are_counted_and_skipped() {
    let name = ShmName::new("corrupt");
    let allocator = builder(&name).build_allocator().unwrap();
    let handle = allocator.create_channel(4).unwrap();
    let producer = handle.producer().unwrap();
    producer.send("good 0").unwrap();
    producer.send("bad").unwrap();
    producer.send("good 2").unwrap();
    // A hostile peer rewrites the second message's length.
    let info = allocator.channels()[0];
    let region = allocator.memory().region();
    let slot = region
        .view::<AtomicSlot>(info.band_offset as usize + SLOT_SIZE)
        .unwrap();
    slot.meta.payload_len.store(5000, Ordering::Relaxed);

    let consumer = handle.consumer().unwrap();
    assert_eq!(consumer.receive().unwrap().unwrap(), b"good 0");
    assert_eq!(consumer.receive().unwrap().unwrap(), b"good 2");
    let stats = consumer.stats();
    assert_eq!((stats.received, stats.corrupt, stats.lost), (2, 1, 0));
    let err = consumer.take_error().unwrap();
    assert_eq!(
        err.kind(),
        ErrorKind::Corrupt {
            field: "payload_len",
            channel: Some(0)
        }
    );
    assert_eq!(
        std::io::Error::from(err).kind(),
        std::io::ErrorKind::InvalidData
    );
    assert!(consumer.take_error().is_none());
}

#[test]
fn allocator_creates_at_the_lowest_free_id_and_lists_channels() {
    let name = ShmName::new("alloc");
    let allocator = builder(&name).build_allocator().unwrap();
    assert_eq!(allocator.creator_pid().unwrap(), std::process::id());
    assert!(allocator.channels().is_empty());
    let a = allocator.create_channel(16).unwrap();
    let b = allocator.create_channel(32).unwrap();
    assert_eq!((a.id(), b.id()), (0, 1));
    // A builder on an existing channel keeps its capacity.
    let p = builder(&name)
        .with_channel_id(1)
        .with_capacity(1024)
        .build_producer()
        .unwrap();
    assert_eq!(p.capacity(), 32);
    builder(&name)
        .with_channel_id(3)
        .with_capacity(8)
        .build_producer()
        .unwrap();
    assert_eq!(allocator.create_channel(8).unwrap().id(), 2);
    p.send("x").unwrap();
    p.send("y").unwrap();
    let channels = allocator.channels();
    let summary: Vec<_> = channels
        .iter()
        .map(|c| (c.id, c.capacity, c.tail, c.head, c.depth))
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, 16, 0, 0, 0),
            (1, 32, 2, 0, 2),
            (2, 8, 0, 0, 0),
            (3, 8, 0, 0, 0)
        ]
    );
    assert_eq!(allocator.channel_count().unwrap(), 4);
    for capacity in [0, 1, 3] {
        let bad = allocator.create_channel(capacity).unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::InvalidInput, "capacity {capacity}");
    }
    let bad = builder(&name)
        .with_channel_id(7)
        .with_capacity(1)
        .build_producer()
        .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidInput);
}

#[test]
fn an_existing_segment_is_never_reformatted() {
    let name = ShmName::new("keep");
    let producer = builder(&name).build_producer().unwrap();
    producer.send("kept").unwrap();
    // Another builder with another size attaches; it does not wipe or resize.
    let again = builder(&name)
        .with_segment_size(8 << 20)
        .build_producer()
        .unwrap();
    assert_eq!(again.info().depth, 1);
    let allocator = builder(&name).attach_allocator().unwrap();
    assert_eq!(allocator.segment_len(), 4 << 20);
    assert_eq!(
        builder(&name)
            .build_consumer()
            .unwrap()
            .receive()
            .unwrap()
            .unwrap(),
        b"kept"
    );
}

/// A shm object made by hand under /dev/shm (what `shm_open` names map to on Linux).
fn raw_shm_object(name: &ShmName, bytes: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/dev/shm{}", name.0);
    // Owner-only, as a DMXP creator makes it: anything wider is refused at attach.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(bytes).unwrap();
}

/// The pid of a process that has exited and been reaped: provably dead.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// A segment as a creator leaves it when it dies mid-format: sized, `creator_pid` recorded,
/// `magic` still 0.
fn unpublished_segment(name: &ShmName, creator_pid: u32) {
    let mut bytes = vec![0u8; 1 << 20];
    bytes[40..44].copy_from_slice(&creator_pid.to_le_bytes());
    raw_shm_object(name, &bytes);
}

#[test]
fn a_segment_still_being_created_times_out_naming_its_creator() {
    // Creator recorded and running (this process).
    let name = ShmName::new("unfinished");
    unpublished_segment(&name, std::process::id());
    let err = builder(&name)
        .with_timeout(Duration::from_millis(100))
        .build_producer()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let expected = format!("still being created by pid {}", std::process::id());
    assert!(err.to_string().contains(&expected), "{err}");

    // No creator recorded: cannot be proven abandoned, never reformatted.
    let name = ShmName::new("anonymous");
    unpublished_segment(&name, 0);
    let err = builder(&name)
        .with_timeout(Duration::from_millis(100))
        .build_producer()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        err.to_string().contains("has not recorded its pid"),
        "{err}"
    );

    // Not even sized yet.
    let name = ShmName::new("unsized");
    raw_shm_object(&name, &[]);
    let err = builder(&name)
        .with_timeout(Duration::from_millis(100))
        .build_consumer()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.to_string().contains("still being created"), "{err}");
}

#[test]
fn a_segment_abandoned_by_a_dead_creator_is_reformatted_by_a_producer() {
    let name = ShmName::new("abandoned");
    let dead = dead_pid();
    unpublished_segment(&name, dead);

    // A consumer is told at once (no waiting out the timeout).
    let err = builder(&name)
        .with_timeout(Duration::from_secs(30))
        .build_consumer()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Abandoned { creator_pid: dead });
    assert!(err.to_string().contains("abandoned"), "{err}");

    // A producer takes it over, formats it and creates its channel.
    let producer = builder(&name)
        .with_channel_id(3)
        .with_capacity(16)
        .build_producer()
        .unwrap();
    producer.send("reborn").unwrap();
    let consumer = builder(&name).with_channel_id(3).build_consumer().unwrap();
    assert_eq!(consumer.receive().unwrap().unwrap(), b"reborn");
    let allocator = builder(&name).attach_allocator().unwrap();
    assert_eq!(allocator.creator_pid().unwrap(), std::process::id());
}

#[test]
fn a_channel_abandoned_by_a_dead_creator_is_re_created_by_a_producer() {
    let name = ShmName::new("halfchan");
    builder(&name).with_channel_id(0).build_producer().unwrap();
    // Channel 5 claimed by a process that died before carving its band.
    let dead = dead_pid();
    let entry = 128 + 5 * 384;
    poke(&name, entry + 24, &1u32.to_le_bytes()); // state = CREATING
    poke(&name, entry + 28, &dead.to_le_bytes()); // creator_pid

    let err = builder(&name)
        .with_channel_id(5)
        .with_timeout(Duration::from_secs(30))
        .build_consumer()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Abandoned { creator_pid: dead });

    let producer = builder(&name)
        .with_channel_id(5)
        .with_capacity(8)
        .build_producer()
        .unwrap();
    assert_eq!(producer.capacity(), 8);
    producer.send("five").unwrap();
    let consumer = builder(&name).with_channel_id(5).build_consumer().unwrap();
    assert_eq!(consumer.receive().unwrap().unwrap(), b"five");

    // Claimed by a running process (this one): a consumer waits, then times out naming it.
    poke(&name, 128 + 6 * 384 + 24, &1u32.to_le_bytes());
    poke(&name, 128 + 6 * 384 + 28, &std::process::id().to_le_bytes());
    let err = builder(&name)
        .with_channel_id(6)
        .with_timeout(Duration::from_millis(100))
        .build_producer()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let expected = format!(
        "channel 6 still being created by pid {}",
        std::process::id()
    );
    assert!(err.to_string().contains(&expected), "{err}");
}

/// Writes `bytes` at `offset` of a live shm segment (as a crashed or hostile peer would).
fn poke(name: &ShmName, offset: usize, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm{}", name.0))
        .unwrap();
    file.write_all_at(bytes, offset as u64).unwrap();
}

#[test]
fn a_garbage_segment_is_reported_not_panicked_on() {
    let name = ShmName::new("garbage");
    let mut bytes = vec![0xA5u8; 1 << 20];
    bytes[..8].copy_from_slice(&0x1234u64.to_le_bytes());
    raw_shm_object(&name, &bytes);
    for result in [
        builder(&name).build_producer().map(drop),
        builder(&name).build_consumer().map(drop),
    ] {
        let err = result.unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::Corrupt {
                field: "magic",
                channel: None
            }
        );
    }
}

#[test]
fn clones_share_the_channel_across_threads() {
    let name = ShmName::new("clone");
    let producer = builder(&name).with_capacity(64).build_producer().unwrap();
    let consumer = builder(&name).build_consumer().unwrap();
    let per_thread = 5_000u64;
    let taken = &std::sync::atomic::AtomicU64::new(0);
    let received = std::thread::scope(|s| {
        for t in 0..2u64 {
            let producer = producer.clone();
            s.spawn(move || {
                for i in 0..per_thread {
                    producer
                        .send_timeout(
                            pattern::encode(0, (t << 32) | i, 32),
                            Duration::from_secs(30),
                        )
                        .unwrap();
                }
            });
        }
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let consumer = consumer.clone();
                s.spawn(move || {
                    let mut got = Vec::new();
                    // Until both consumers together have everything.
                    while taken.load(Ordering::SeqCst) < 2 * per_thread {
                        if let Some(m) =
                            consumer.receive_timeout(Duration::from_millis(10)).unwrap()
                        {
                            taken.fetch_add(1, Ordering::SeqCst);
                            got.push(pattern::decode(&m.payload).unwrap().1);
                        }
                    }
                    got
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let mut sorted = received.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), received.len(), "duplicates");
    assert_eq!(sorted.len() as u64, 2 * per_thread);
    assert_eq!(consumer.stats().received, 2 * per_thread);
}

#[test]
fn reset_refuses_while_a_live_peer_holds_a_claim_unless_forced() {
    let name = ShmName::new("reset_live");
    let producer = builder(&name).build_producer().unwrap();
    producer.send("queued").unwrap();
    let allocator = builder(&name).attach_allocator().unwrap();
    let loan = producer.loan().unwrap();
    let error = allocator.reset(0, false).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Busy, "{error}");
    assert!(
        error
            .to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{error}"
    );
    // Forced: the queued message is discarded and the holder's claim revoked.
    assert_eq!(allocator.reset(0, true).unwrap(), 1);
    assert!(matches!(
        loan.commit(0).unwrap_err().kind(),
        ErrorKind::Revoked { .. }
    ));
    let consumer = builder(&name).build_consumer().unwrap();
    assert_eq!(consumer.receive().unwrap(), None);
    producer.send("after").unwrap();
    assert_eq!(consumer.receive().unwrap().as_deref(), Some(&b"after"[..]));
}

#[test]
fn a_segment_created_with_more_peer_records_registers_every_clone() {
    let name = ShmName::new("records");
    let producer = builder(&name)
        .with_peer_records(1024)
        .with_registration_required()
        .build_producer()
        .unwrap();
    // 600 handles: more than a default table holds, every one protected.
    let clones: Vec<_> = (0..599).map(|_| producer.clone()).collect();
    assert!(clones.iter().all(|c| c.is_registered()));
    let allocator = builder(&name).attach_allocator().unwrap();
    assert_eq!(allocator.peers().unwrap().len(), 600);
    assert!(allocator.peers().unwrap().iter().any(|p| p.index >= 256));
    clones[598].send("from the last clone").unwrap();
    let consumer = builder(&name).build_consumer().unwrap();
    assert_eq!(consumer.receive().unwrap().unwrap(), b"from the last clone");
}

#[test]
fn a_peer_table_size_no_segment_may_have_is_invalid_input() {
    let name = ShmName::new("badrecords");
    for records in [100, 16_385] {
        let err = builder(&name)
            .with_peer_records(records)
            .build_producer()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("peer table of"), "{err}");
    }
    // Nothing was created.
    assert_eq!(
        builder(&name).attach_allocator().unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// A plain record as an application would send it.
#[derive(
    zerocopy::IntoBytes,
    zerocopy::FromBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
    Debug,
    PartialEq,
    Clone,
    Copy,
)]
#[repr(C)]
struct Reading {
    sensor: u32,
    flags: u32,
    value: f64,
    at_ns: u64,
}

#[test]
fn typed_values_round_trip_and_a_wrong_size_is_a_typed_error() {
    let name = ShmName::new("typed");
    let producer = builder(&name).with_capacity(8).build_producer().unwrap();
    let consumer = builder(&name).build_consumer().unwrap();
    let readings: Vec<Reading> = (0..5)
        .map(|i| Reading {
            sensor: i,
            flags: 0x5a5a_0000 | i,
            value: f64::from(i) * 1.5,
            at_ns: 1_000 + u64::from(i),
        })
        .collect();
    for reading in &readings {
        producer.send_value(reading).unwrap();
    }
    producer.send(b"not a reading").unwrap();
    producer
        .send_value_timeout(&readings[0], Duration::from_secs(1))
        .unwrap();

    for reading in &readings {
        assert_eq!(consumer.receive_value::<Reading>().unwrap(), Some(*reading));
    }
    let err = consumer.receive_value::<Reading>().unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::WrongSize {
            expected: 24,
            found: 13,
            message_id: 5
        }
    );
    assert!(err.to_string().contains("message 5 has 13 bytes"), "{err}");
    // Only the bad message was consumed: the next one is still there.
    assert_eq!(
        consumer
            .receive_value_timeout::<Reading>(Duration::from_secs(1))
            .unwrap(),
        Some(readings[0])
    );
    assert_eq!(consumer.receive_value::<Reading>().unwrap(), None);
    assert_eq!(
        consumer
            .receive_value_timeout::<Reading>(Duration::from_millis(1))
            .unwrap(),
        None
    );
}

#[test]
fn run_loans_write_in_place_across_slots_and_free_what_they_do_not_use() {
    let name = ShmName::new("runloan");
    let builder = builder(&name)
        .with_capacity(16)
        .with_max_message_size(10 * 960);
    let producer = builder.build_producer().unwrap();
    let consumer = builder.build_consumer().unwrap();

    // Written part by part and across slot boundaries, then committed whole.
    let message: Vec<u8> = (0..5_000u32).map(|i| (i % 251) as u8).collect();
    let mut loan = producer.loan_for(message.len()).unwrap();
    assert_eq!(loan.capacity(), 6 * 960);
    for chunk in (0..message.len()).step_by(700) {
        let end = (chunk + 700).min(message.len());
        assert!(loan.write_at(chunk, &message[chunk..end]));
    }
    assert!(!loan.write_at(6 * 960 - 4, b"too far"));
    let id = loan.commit(message.len()).unwrap();
    let received = consumer.receive_with_meta().unwrap().unwrap();
    assert_eq!((received.meta.message_id, received.payload), (id, message));

    // A run loan that commits less frees the slots it does not need; the ring flows on.
    let mut loan = producer.loan_for(4_000).unwrap();
    assert!(loan.write_at(0, b"short after all"));
    loan.commit(15).unwrap();
    assert_eq!(
        consumer.receive().unwrap().as_deref(),
        Some(&b"short after all"[..])
    );
    assert_eq!(consumer.receive().unwrap(), None);
    let info = producer.info();
    assert_eq!((info.head, info.tail), (11, 11));

    // A dropped run loan is passed over; a loan past the limit or the free room is refused.
    drop(producer.loan_for(3_000).unwrap());
    assert_eq!(consumer.receive().unwrap(), None);
    let too_large = producer.loan_for(10 * 960 + 1).unwrap_err();
    assert_eq!(
        too_large.kind(),
        ErrorKind::TooLarge {
            len: 10 * 960 + 1,
            limit: 10 * 960
        }
    );
    let _held = producer.loan_for(9 * 960).unwrap();
    assert_eq!(
        producer.loan_for(8 * 960).unwrap_err().kind(),
        ErrorKind::Full
    );
}

#[test]
fn a_single_slot_only_handle_refuses_a_channel_made_for_runs() {
    let name = ShmName::new("single");
    let large = builder(&name)
        .with_channel_id(1)
        .with_capacity(16)
        .with_max_message_size(4_000);
    large.build_producer().unwrap();
    builder(&name).with_channel_id(2).build_producer().unwrap();
    let strict = builder(&name).with_single_slot_only();
    for refused in [
        strict
            .clone()
            .with_channel_id(1)
            .build_consumer()
            .unwrap_err(),
        strict
            .clone()
            .with_channel_id(1)
            .build_producer()
            .unwrap_err(),
    ] {
        assert_eq!(refused.kind(), ErrorKind::RunsNotSupported { channel: 1 });
        assert!(refused.to_string().contains("channel 1"), "{refused}");
    }
    let consumer = strict.clone().with_channel_id(2).build_consumer().unwrap();
    assert_eq!(consumer.max_message_size(), 960);
    let contradiction = strict
        .with_channel_id(3)
        .with_max_message_size(4_000)
        .build_producer()
        .unwrap_err();
    assert_eq!(contradiction.kind(), ErrorKind::InvalidInput);
}
