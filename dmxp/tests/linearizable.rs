//! A receive reports "nothing" only when nothing a completed send left is queued (PROTOCOL.md
//! §6.2): a producer that has claimed the head and not yet published it does not hide the
//! messages behind it.
#![cfg(feature = "shm")]

mod common;

use std::sync::Barrier;
use std::time::Duration;

use common::ShmName;
use dmxp::ChannelBuilder;

fn builder(name: &ShmName, capacity: u64) -> ChannelBuilder {
    ChannelBuilder::new()
        .with_segment_name(name.0.clone())
        .with_segment_size(1 << 20)
        .with_capacity(capacity)
}

#[test]
fn a_receive_waits_for_a_claim_in_flight_when_a_completed_send_is_behind_it() {
    let name = ShmName::new("lin_in_flight");
    let producer = builder(&name, 8).build_producer().unwrap();
    let consumer = builder(&name, 8).build_consumer().unwrap();
    let slow = producer.clone();
    let claimed = Barrier::new(2);
    std::thread::scope(|s| {
        let claimed = &claimed;
        s.spawn(move || {
            // Claims position 0 and publishes it only 50 ms later.
            let mut loan = slow.loan().unwrap();
            claimed.wait();
            std::thread::sleep(Duration::from_millis(50));
            assert!(loan.write_at(0, b"first"));
            loan.commit(5).unwrap();
        });
        claimed.wait();
        // A completed send at position 1, behind the claim in flight.
        assert_eq!(producer.send("second").unwrap(), 1);
        // Not empty: the receive waits for position 0 rather than report nothing.
        assert_eq!(consumer.receive().unwrap().as_deref(), Some(&b"first"[..]));
    });
    assert_eq!(consumer.receive().unwrap().as_deref(), Some(&b"second"[..]));
    assert_eq!(consumer.receive().unwrap(), None);
}

#[test]
fn a_claim_in_flight_with_nothing_behind_it_is_empty_at_once() {
    let name = ShmName::new("lin_nothing_behind");
    let producer = builder(&name, 8).build_producer().unwrap();
    let consumer = builder(&name, 8).build_consumer().unwrap();
    let loan = producer.loan().unwrap();
    // The send in flight has not completed: "nothing" is a correct answer, and given at once.
    assert_eq!(consumer.receive().unwrap(), None);
    drop(loan);
    assert_eq!(
        consumer.receive().unwrap(),
        None,
        "a dropped loan is skipped"
    );
}

/// Threads that each send and then receive (without blocking) always find something: their
/// own message at least is queued once their send has returned.
#[test]
fn every_receive_after_a_completed_send_finds_a_message() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 10_000;
    let name = ShmName::new("lin_check");
    let producer = builder(&name, 64).build_producer().unwrap();
    let consumer = builder(&name, 64).build_consumer().unwrap();
    let start = Barrier::new(THREADS);
    let empty = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (producer, consumer) = (producer.clone(), consumer.clone());
            let (start, empty) = (&start, &empty);
            s.spawn(move || {
                start.wait();
                for i in 0..ROUNDS {
                    // Waits while a lap-old slot is still being read by a preempted receiver.
                    producer
                        .send_timeout(format!("{t}:{i}"), Duration::from_secs(60))
                        .unwrap();
                    if consumer.receive().unwrap().is_none() {
                        let info = consumer.info();
                        if empty.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 5 {
                            eprintln!("empty at round {i}: head {} tail {}", info.head, info.tail);
                        }
                    }
                }
            });
        }
    });
    assert_eq!(
        empty.into_inner(),
        0,
        "a receive after a completed send found nothing"
    );
    assert_eq!(consumer.receive().unwrap(), None);
}
