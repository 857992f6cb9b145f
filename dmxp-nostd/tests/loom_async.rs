//! Loom models of the event-loop wait (PROTOCOL.md §7.4): a waiter that registers, submits a
//! futex wait to an `io_uring` and polls for its completion, racing a sender.
//!
//! Run with `scripts/loom.sh` (which runs this file after `tests/loom.rs`), or
//! `RUSTFLAGS="--cfg loom" cargo test -p dmxp-nostd --test loom_async --release`.
//!
//! The kernel's side is [`ModelRing`]: submitting `FUTEX_WAIT(word, v)` compares the word and
//! queues the wait under one lock (completing it at once when the word already differs, as the
//! kernel does with `-EAGAIN`), and the sender's `futex_wake` completes a queued wait under the
//! same lock. The event loop's poll of the ring fd is a wait on a condition variable until a
//! completion is posted: a lost wake-up leaves the waiter there with nobody to post one, which
//! loom reports as a deadlock.
//!
//! Like the models of `tests/loom.rs`, each test-level step starts with a relaxed
//! read-modify-write on a shared probe word ([`interleave`]), so that loom tries the orders in
//! which the threads reach their steps (loom 0.7 remembers only the last access to an atomic).

#![cfg(loom)]

use dmxp_nostd::atomic::{AtomicU32, Ordering};
use dmxp_nostd::layout::AtomicPeerRecord;
use dmxp_nostd::peer::{register_in, PeerRole};
use dmxp_nostd::{Channel, RecvError, SendMeta, WaitOutcome, WaitStrategy};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

mod loom_common;
use loom_common::{check, interleave, Memory};

#[derive(Default)]
struct RingState {
    /// A futex wait is queued in the kernel.
    queued: bool,
    /// A completion is posted and not reaped yet (the ring fd is readable).
    posted: bool,
}

/// The kernel's futex table and one `io_uring`'s completion queue, as far as one word goes.
#[derive(Clone)]
struct ModelRing {
    inner: Arc<(Mutex<RingState>, Condvar)>,
}

impl ModelRing {
    fn new() -> Self {
        Self {
            inner: Arc::new((Mutex::new(RingState::default()), Condvar::new())),
        }
    }

    /// `IORING_OP_FUTEX_WAIT(word, expected)`: compared and queued atomically.
    fn submit(&self, word: &AtomicU32, expected: u32) {
        let (lock, _) = &*self.inner;
        let mut state = lock.lock().unwrap();
        assert!(!state.queued, "at most one futex wait per ring");
        if word.load(Ordering::SeqCst) == expected {
            state.queued = true;
        } else {
            state.posted = true; // -EAGAIN
        }
    }

    /// Whether a wait submitted earlier is still queued or its completion unreaped (then the
    /// waiter reuses it instead of submitting another).
    fn in_flight(&self) -> bool {
        let (lock, _) = &*self.inner;
        let state = lock.lock().unwrap();
        state.queued || state.posted
    }

    /// The event loop: sleeps until the ring fd is readable, then reaps the completion.
    fn poll_and_reap(&self) {
        let (lock, condvar) = &*self.inner;
        let mut state = lock.lock().unwrap();
        while !state.posted {
            state = condvar.wait(state).unwrap();
        }
        state.posted = false;
    }
}

impl WaitStrategy for ModelRing {
    fn wait(&self, _word: &AtomicU32, _expected: u32) -> WaitOutcome {
        unreachable!("the async waiter never sleeps in a WaitStrategy")
    }

    /// `futex_wake(word, all)` from the sender: completes the queued wait.
    fn wake_all(&self, _word: &AtomicU32) {
        let (lock, condvar) = &*self.inner;
        let mut state = lock.lock().unwrap();
        if state.queued {
            state.queued = false;
            state.posted = true;
            condvar.notify_all();
        }
    }
}

fn send(channel: &Channel<'_, ModelRing>, tag: u8) -> u64 {
    interleave();
    let meta = SendMeta {
        message_type: u32::from(tag),
        ..SendMeta::default()
    };
    channel.try_send(&[tag], &meta).unwrap()
}

/// One non-blocking receive: the tag, or `None` when empty.
fn try_recv(channel: &Channel<'_, ModelRing>) -> Option<u8> {
    interleave();
    let mut buf = [0u8; 8];
    match channel.try_recv(&mut buf) {
        Ok(received) => {
            assert_eq!(received.len, 1);
            Some(buf[0])
        }
        Err(RecvError::Empty | RecvError::Pending { .. }) => None,
        Err(other) => panic!("receive failed: {other:?}"),
    }
}

/// The async receive of the facade, one round at a time: receive; else register, re-check,
/// submit the futex wait (or reuse the one in flight), poll the ring, unregister.
fn async_receive(channel: &Channel<'_, ModelRing>, ring: &ModelRing) -> u8 {
    for _ in 0..4 {
        if let Some(tag) = try_recv(channel) {
            return tag;
        }
        interleave();
        let registration = channel.register_for_message();
        if !registration.is_ready() {
            if !ring.in_flight() {
                ring.submit(registration.word(), registration.observed());
            }
            ring.poll_and_reap();
        }
        drop(registration);
    }
    panic!("no message after 4 rounds, each ended by a completion or a ready re-check");
}

/// An async receive racing a send into an empty ring: the waiter finds the message, or its
/// futex wait is completed (woken, or -EAGAIN) so it looks again. A lost wake-up deadlocks.
/// The wait count is 0 afterwards.
#[test]
fn async_recv_is_woken() {
    check("async_recv_is_woken", 3, || {
        loom::lazy_static! {
            static ref MEMORY: Memory = Memory::new(1, 2);
        }
        let ring = ModelRing::new();
        let segment = MEMORY.segment().with_wait_strategy(ring.clone());
        let channel = segment.create_channel(0, 2, 1).unwrap();
        let tx = channel.clone();
        let sender = thread::spawn(move || send(&tx, 7));

        assert_eq!(async_receive(&channel, &ring), 7);
        assert_eq!(sender.join().unwrap(), 0);
        assert_eq!(channel.waiters(), (0, 0));
    });
}

/// An async wait abandoned while its futex wait is queued (a dropped future) races a send:
/// nothing is consumed, the count and the peer record's `waiting` word are back to 0, and a
/// later async receive that reuses the abandoned futex wait still gets the message (it was
/// queued before the new registration, so the sender's wake reaches it).
#[test]
fn a_cancelled_async_wait_leaves_no_count_and_loses_no_wake() {
    check(
        "a_cancelled_async_wait_leaves_no_count_and_loses_no_wake",
        3,
        || {
            loom::lazy_static! {
                static ref MEMORY: Memory = Memory::new(1, 2);
                static ref RECORDS: Vec<AtomicPeerRecord> = vec![AtomicPeerRecord::new_zeroed()];
            }
            let ring = ModelRing::new();
            let segment = MEMORY.segment().with_wait_strategy(ring.clone());
            let channel = segment.create_channel(0, 2, 1).unwrap();
            let slot = register_in(&RECORDS, 0, PeerRole::Consumer, 7, 70, 0, 1).unwrap();
            let consumer = channel.clone().with_peer(&slot);
            let tx = channel.clone();
            let sender = thread::spawn(move || send(&tx, 9));

            // Round one, abandoned: registered and queued, then dropped before any poll.
            interleave();
            let registration = consumer.register_for_message();
            if !registration.is_ready() {
                ring.submit(registration.word(), registration.observed());
            }
            drop(registration);
            interleave();
            assert_eq!(
                RECORDS[0].waiting.load(Ordering::SeqCst),
                0,
                "a dropped wait leaves the record clear"
            );

            // A later receive on the same handle and ring.
            assert_eq!(async_receive(&consumer, &ring), 9);
            assert_eq!(sender.join().unwrap(), 0);
            assert_eq!(consumer.waiters(), (0, 0), "no count left behind");
            assert_eq!(RECORDS[0].waiting.load(Ordering::SeqCst), 0);
            std::mem::forget(slot);
        },
    );
}
