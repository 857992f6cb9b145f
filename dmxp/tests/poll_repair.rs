//! Non-blocking sends and receives repair a channel stuck behind a dead peer (PROTOCOL.md
//! §11.6) when they keep polling it: they look for a stuck position only after a streak of
//! full (or empty) results, so that a spinning handle does not read the other side's cursor
//! on every miss, but a handle that keeps polling a stuck channel still repairs it.
//!
//! A peer that died mid-operation is made by hand: a record registered under the pid of a
//! reaped child (provably dead), whose core channel claims a position and never finishes.

mod common;

use std::time::{Duration, Instant};

use common::ShmName;
use dmxp::core::{PeerRole, Segment};
use dmxp::ChannelBuilder;

/// Hang guard only: a repair needs the 10 ms grace period plus a streak of polls.
const LIMIT: Duration = Duration::from_secs(60);

fn builder(name: &ShmName) -> ChannelBuilder {
    ChannelBuilder::new()
        .with_segment_name(name.0.clone())
        .with_segment_size(4 << 20)
        .with_capacity(2)
}

/// The pid of a process that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn a_polling_consumer_tombstones_the_position_of_a_dead_producer() {
    let name = ShmName::new("pollrecv");
    let producer = builder(&name).build_producer().unwrap();
    let consumer = builder(&name).build_consumer().unwrap();
    let allocator = builder(&name).attach_allocator().unwrap();
    let segment = Segment::attach(allocator.memory().region()).unwrap();
    let dead = segment
        .register(0, PeerRole::Producer, dead_pid(), 0, 1)
        .unwrap();
    let channel = segment.open_channel(0).unwrap().with_peer(&dead);
    // Claimed (intent written, tail moved) and never published: the process "died" here.
    let loan = channel.try_loan().unwrap();
    assert_eq!(loan.position(), 0);
    std::mem::forget(loan);
    std::mem::forget(dead);
    producer.send("after").unwrap();

    let start = Instant::now();
    let mut polls = 0u64;
    let got = loop {
        assert!(
            start.elapsed() < LIMIT,
            "never repaired after {polls} polls"
        );
        polls += 1;
        if let Some(message) = consumer.receive().unwrap() {
            break message;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    assert_eq!(got, b"after");
    assert_eq!(consumer.stats().lost, 1);
    assert_eq!(consumer.stats().received, 1);
}

#[test]
fn a_polling_producer_frees_the_slot_of_a_dead_consumer() {
    let name = ShmName::new("pollsend");
    let producer = builder(&name).build_producer().unwrap();
    let consumer = builder(&name).build_consumer().unwrap();
    producer.send("lost").unwrap();
    producer.send("kept").unwrap();
    let allocator = builder(&name).attach_allocator().unwrap();
    let segment = Segment::attach(allocator.memory().region()).unwrap();
    let dead = segment
        .register(0, PeerRole::Consumer, dead_pid(), 0, 1)
        .unwrap();
    let channel = segment.open_channel(0).unwrap().with_peer(&dead);
    // Position 0 claimed in place and never freed: the ring stays full.
    let guard = channel.try_recv_in_place().unwrap();
    assert_eq!(guard.meta().message_id, 0);
    std::mem::forget(guard);
    std::mem::forget(dead);

    let start = Instant::now();
    let mut polls = 0u64;
    loop {
        assert!(
            start.elapsed() < LIMIT,
            "never repaired after {polls} polls"
        );
        polls += 1;
        match producer.send("new") {
            Ok(id) => {
                assert_eq!(id, 2);
                break;
            }
            Err(e) if e.kind() == dmxp::ErrorKind::Full => {}
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(consumer.receive().unwrap().unwrap(), b"kept");
    assert_eq!(consumer.receive().unwrap().unwrap(), b"new");
    assert_eq!(consumer.receive().unwrap(), None);
}
