//! The futex wake rule, in a test binary of its own so that no other test's wake-ups are
//! counted: a send or receive makes no futex call when nobody waits, and does when someone
//! does.
#![cfg(feature = "shm")]

mod common;

use std::time::Duration;

use common::ShmName;
use dmxp::ChannelBuilder;

#[test]
fn wakes_only_when_someone_waits() {
    let name = ShmName::new("futex");
    let builder = ChannelBuilder::new()
        .with_segment_name(name.0.clone())
        .with_segment_size(1 << 20)
        .with_capacity(64);
    let producer = builder.build_producer().unwrap();
    let consumer = builder.build_consumer().unwrap();

    // Nobody waits: 10,000 sends and receives (the ring wraps many times) make no wake call.
    let wakes = dmxp::futex_wake_calls();
    let waits = dmxp::futex_wait_calls();
    for i in 0..10_000u64 {
        producer.send(i.to_le_bytes()).unwrap();
        assert_eq!(consumer.receive().unwrap().unwrap(), i.to_le_bytes());
    }
    assert_eq!(dmxp::futex_wake_calls(), wakes);
    assert_eq!(dmxp::futex_wait_calls(), waits);

    // A consumer sleeps on the empty ring: the send that ends its wait makes a wake call.
    std::thread::scope(|s| {
        // Handles are Send, not Sync: the sleeping thread gets its own clone.
        let sleeping = consumer.clone();
        let sleeper = s.spawn(move || sleeping.receive_blocking().unwrap());
        // Wait until the sleeper has registered, then send.
        while consumer.info().depth == 0 && dmxp::futex_wait_calls() == waits {
            std::thread::sleep(Duration::from_millis(1));
        }
        producer.send("wake").unwrap();
        assert_eq!(sleeper.join().unwrap().payload, b"wake");
    });
    assert!(dmxp::futex_wake_calls() > wakes);
}
