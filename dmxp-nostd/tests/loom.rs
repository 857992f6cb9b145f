//! Loom models of the ring and of channel creation.
//!
//! Run with `scripts/loom.sh` (or `RUSTFLAGS="--cfg loom" cargo test -p dmxp-nostd --test loom
//! --release`). Under `--cfg loom` the core's atomics are loom's, so loom explores the thread
//! interleavings and the weak-memory outcomes of every atomic access the core makes.
//!
//! Every model is bounded: test threads retry a failed `try_*` a fixed number of times (with
//! `loom::thread::yield_now`) and otherwise record the outcome; whatever the threads left in the
//! ring is drained by the main thread after joining them, and the checks are made on the union.
//! The shared memory (header fields, channel entries, slots) is built inside each execution as
//! a loom `lazy_static`, which gives the threads `'static` references and is dropped when the
//! execution ends.
//!
//! Interleaving points: loom 0.7 remembers only the last access to each atomic when it looks
//! for races, so in "thread A loads X, thread B loads X, B stores X" it never tries B's store
//! before A's load (loom issues #166 and #392: a model of one send racing one receive explores a
//! single execution). Every test-level operation therefore starts with [`interleave`], a relaxed
//! `fetch_add` on a probe word that all threads share: read-modify-writes always conflict, so
//! loom tries the orders in which the threads reach their operations, and from each of those it
//! finds the races inside the operations as usual. The probe orders nothing (relaxed, and
//! nobody reads it), so it hides no bug of the ring.
//!
//! What loom cannot show: it never lets a load read a store that comes later in the other
//! thread's program order (load buffering), so weakening the consumer's release of a slot to
//! `Relaxed` goes unnoticed here; the publication (`sequence = t + 1`, release) and its acquire
//! are checked.
//!
//! Blocking receives and sends are modelled with a futex stand-in built on loom's `Mutex` and
//! `Condvar`: a lost wake-up leaves the waiter asleep with nobody to wake it, which loom reports
//! as a deadlock.
//!
//! Each model has its own preemption bound (3, or 2 for concurrent channel creation, whose
//! creator makes hundreds of stores while zeroing the slots); LOOM_MAX_PREEMPTIONS overrides it.
//! The two models that take minutes at that bound (one producer and two consumers, concurrent
//! creation) run one bound lower in CI and at the full bound in `scripts/soak-loom.sh`
//! ([`deep_bound`]).

#![cfg(loom)]

use std::collections::BTreeMap;

use dmxp_nostd::atomic::{AtomicU32, Ordering};
use dmxp_nostd::layout::{band_len, AtomicPeerRecord, HEADER_SIZE};
use dmxp_nostd::peer::{free_dead_records, register_in, PeerRole};
use dmxp_nostd::{
    Channel, Error, Opened, RecvError, Segment, SendError, SendMeta, WaitOutcome, WaitStrategy,
};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

mod loom_common;
use loom_common::{check, deep_bound, interleave, Memory};

/// Sends message `tag`, returning its message_id.
fn send<W: WaitStrategy>(channel: &Channel<'_, W>, tag: u8) -> Result<u64, SendError> {
    interleave();
    channel.try_send(&payload(tag), &meta(tag))
}

/// Attempts a test thread makes at a `try_*` call that can legitimately find the ring empty or
/// full because another thread has not got there yet.
const ATTEMPTS: usize = 2;

/// The tiny payload of message `tag` (six bytes: one payload word, zero-padded).
fn payload(tag: u8) -> [u8; 6] {
    [b'm', tag, !tag, tag.wrapping_mul(7), 0x5A, tag ^ 0x3C]
}

fn meta(tag: u8) -> SendMeta {
    SendMeta {
        message_type: u32::from(tag),
        sender_pid: 100 + u32::from(tag),
        ..SendMeta::default()
    }
}

/// A message as the receiver saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Got {
    tag: u8,
    message_id: u64,
}

/// Receives one message, checking that its payload and metadata belong together.
fn recv<W: WaitStrategy>(channel: &Channel<'_, W>) -> Result<Got, RecvError> {
    interleave();
    let mut buf = [0u8; 16];
    let received = channel.try_recv(&mut buf)?;
    Ok(check_received(&buf, received))
}

fn check_received(buf: &[u8], received: dmxp_nostd::Received) -> Got {
    let tag = u8::try_from(received.meta.message_type).expect("message_type is a tag");
    assert_eq!(received.len, 6, "payload length of message {tag}");
    assert_eq!(buf[..6], payload(tag), "payload of message {tag}");
    assert_eq!(received.meta.sender_pid, 100 + u32::from(tag));
    assert_eq!(received.meta.channel_id, 0);
    assert_eq!(received.meta.flags, 0);
    Got {
        tag,
        message_id: received.meta.message_id,
    }
}

/// Up to `ATTEMPTS` receives, yielding after each `Empty`.
fn recv_some<W: WaitStrategy>(channel: &Channel<'_, W>, got: &mut Vec<Got>) {
    for _ in 0..ATTEMPTS {
        match recv(channel) {
            Ok(message) => got.push(message),
            // Pending: a claim in flight at the head with a message behind it (§6.2).
            Err(RecvError::Empty | RecvError::Pending { .. }) => thread::yield_now(),
            Err(other) => panic!("receive failed: {other:?}"),
        }
    }
}

/// Receives until the ring reports `Empty` (only called when no thread is sending).
fn drain<W: WaitStrategy>(channel: &Channel<'_, W>, got: &mut Vec<Got>) {
    loop {
        match recv(channel) {
            Ok(message) => got.push(message),
            Err(RecvError::Empty) => return,
            Err(other) => panic!("drain failed: {other:?}"),
        }
    }
}

/// Asserts that `got` holds each of `sent` (tag → message_id returned by the send) exactly once.
fn assert_exactly_once(got: &[Got], sent: &BTreeMap<u8, u64>) {
    let mut seen: BTreeMap<u8, u64> = BTreeMap::new();
    for message in got {
        assert!(
            seen.insert(message.tag, message.message_id).is_none(),
            "message {} received twice: {got:?}",
            message.tag
        );
    }
    assert_eq!(&seen, sent, "received {got:?}");
}

/// Two producers send one message each into a ring of 2 while the main thread receives.
#[test]
fn two_producers_one_consumer() {
    check("two_producers_one_consumer", 3, || {
        loom::lazy_static! {
            static ref MEMORY: Memory = Memory::new(1, 2);
        }
        let channel = MEMORY.segment().create_channel(0, 2, 1).unwrap();
        let producers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|tag| {
                let tx = channel.clone();
                thread::spawn(move || (tag, send(&tx, tag).unwrap()))
            })
            .collect();

        let mut got = Vec::new();
        recv_some(&channel, &mut got);
        let sent: BTreeMap<u8, u64> = producers.into_iter().map(|p| p.join().unwrap()).collect();
        drain(&channel, &mut got);

        assert_exactly_once(&got, &sent);
        let mut ids: Vec<u64> = sent.values().copied().collect();
        ids.sort_unstable();
        assert_eq!(ids, [0, 1], "the two sends took positions 0 and 1");
        assert_eq!((channel.head(), channel.tail()), (2, 2));
    });
}

/// One producer sends two messages; two consumers race for them.
#[test]
fn one_producer_two_consumers() {
    check("one_producer_two_consumers", deep_bound(2, 3), || {
        loom::lazy_static! {
            static ref MEMORY: Memory = Memory::new(1, 2);
        }
        let channel = MEMORY.segment().create_channel(0, 2, 1).unwrap();
        let tx = channel.clone();
        let producer = thread::spawn(move || {
            let first = send(&tx, 1).unwrap();
            let second = send(&tx, 2).unwrap();
            BTreeMap::from([(1u8, first), (2u8, second)])
        });
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let rx = channel.clone();
                thread::spawn(move || {
                    let mut got = Vec::new();
                    recv_some(&rx, &mut got);
                    got
                })
            })
            .collect();

        let sent = producer.join().unwrap();
        assert_eq!(sent, BTreeMap::from([(1, 0), (2, 1)]));
        let mut all = Vec::new();
        for consumer in consumers {
            let got = consumer.join().unwrap();
            // One consumer's receipts follow the ring's order.
            assert!(
                got.windows(2).all(|w| w[0].message_id < w[1].message_id),
                "out of order: {got:?}"
            );
            all.extend(got);
        }
        drain(&channel, &mut all);
        assert_exactly_once(&all, &sent);
        assert_eq!((channel.head(), channel.tail()), (2, 2));
    });
}

/// A batch of two races a single send in a ring of 4; the batch stays consecutive and in order.
#[test]
fn batch_send_races_single_send() {
    check("batch_send_races_single_send", 3, || {
        loom::lazy_static! {
            static ref MEMORY: Memory = Memory::new(1, 4);
        }
        let channel = MEMORY.segment().create_channel(0, 4, 1).unwrap();
        let tx = channel.clone();
        let batch = thread::spawn(move || {
            interleave();
            tx.try_send_batch(&[payload(1), payload(2)], &meta(1))
                .unwrap()
        });
        let tx = channel.clone();
        let single = thread::spawn(move || send(&tx, 3).unwrap());

        // The batch shares one SendMeta (message_type 1), so its messages are told apart by
        // payload.
        let receive = || -> Result<Got, RecvError> {
            interleave();
            let mut buf = [0u8; 16];
            let received = channel.try_recv(&mut buf)?;
            let tag = buf[1];
            assert_eq!(received.len, 6);
            assert_eq!(buf[..6], payload(tag), "payload of message {tag}");
            let expected_type = if tag == 3 { 3 } else { 1 };
            assert_eq!(received.meta.message_type, expected_type);
            Ok(Got {
                tag,
                message_id: received.meta.message_id,
            })
        };
        let mut got = Vec::new();
        // One receive while the sends are in flight.
        match receive() {
            Ok(message) => got.push(message),
            Err(RecvError::Empty | RecvError::Pending { .. }) => {}
            Err(other) => panic!("receive failed: {other:?}"),
        }
        let batch_sent = batch.join().unwrap();
        assert_eq!(batch_sent, 2, "a ring of 4 has room for the whole batch");
        let single_id = single.join().unwrap();
        loop {
            match receive() {
                Ok(message) => got.push(message),
                Err(RecvError::Empty) => break,
                Err(other) => panic!("drain failed: {other:?}"),
            }
        }

        let tags: Vec<u8> = got.iter().map(|g| g.tag).collect();
        let ids: Vec<u64> = got.iter().map(|g| g.message_id).collect();
        assert_eq!(ids, [0, 1, 2], "drained in position order: {got:?}");
        let one = tags.iter().position(|&t| t == 1).expect("batch message 1");
        assert_eq!(
            tags.get(one + 1),
            Some(&2),
            "batch split or reordered: {tags:?}"
        );
        assert_eq!(tags.iter().filter(|&&t| t == 3).count(), 1, "{tags:?}");
        assert_eq!(
            got[tags.iter().position(|&t| t == 3).unwrap()].message_id,
            single_id
        );
        assert_eq!((channel.head(), channel.tail()), (3, 3));
    });
}

/// Two threads open-or-create the same channel at once: one creates it, the other finds it
/// (possibly after `ChannelBeingCreated` and a retry), and only one band is carved. The threads
/// race on creation only; the handles are used after joining them (the ring has its own models).
#[test]
fn concurrent_open_or_create() {
    check("concurrent_open_or_create", deep_bound(1, 2), || {
        loom::lazy_static! {
            static ref MEMORY: Memory = Memory::new(1, 2);
        }
        let segment = MEMORY.segment();
        let racers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|tag| {
                let segment = segment.clone();
                thread::spawn(move || {
                    interleave();
                    segment.open_or_create_channel(0, 2, u32::from(tag))
                })
            })
            .collect();
        let outcomes: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();

        let mut handles = Vec::new();
        let mut created = 0;
        for outcome in outcomes {
            match outcome {
                Ok((channel, how)) => {
                    created += usize::from(how == Opened::Created);
                    handles.push(channel);
                }
                Err(Error::ChannelBeingCreated { id: 0 }) => {
                    // The creator has finished now: a retry finds the channel.
                    let (channel, how) = segment.open_or_create_channel(0, 2, 9).unwrap();
                    assert_eq!(how, Opened::Existing);
                    handles.push(channel);
                }
                Err(other) => panic!("open_or_create failed: {other:?}"),
            }
        }
        assert_eq!(created, 1, "exactly one thread creates the channel");
        assert_eq!(segment.channel_count(), 1);
        let band = band_len(2).unwrap();
        assert_eq!(
            MEMORY.fields.band_cursor.load(Ordering::Relaxed),
            HEADER_SIZE as u64 + band,
            "exactly one band carved"
        );
        assert_eq!(handles[0].geometry(), handles[1].geometry());
        assert_eq!(handles[0].geometry().band_offset, HEADER_SIZE as u64);

        // A message sent through one handle comes out of the other.
        assert_eq!(send(&handles[0], 1), Ok(0));
        assert_eq!(send(&handles[1], 2), Ok(1));
        let mut got = Vec::new();
        got.push(recv(&handles[1]).unwrap());
        drain(&handles[0], &mut got);
        let tags: BTreeMap<u8, u64> = got.iter().map(|g| (g.tag, g.message_id)).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(tags.keys().copied().collect::<Vec<_>>(), [1, 2]);
    });
}

/// Capacity 2, second lap: the producer's third and fourth messages reuse the slots the
/// consumer is freeing (positions 2 and 3 land on slots 0 and 1 again). Capacity 2 is the
/// smallest ring: with one slot, "position p published" and "free for position p + 1" would be
/// the same sequence value, and this model found exactly that (a send overwriting an unread
/// message, and a consumer's release overwriting a newer publication), so capacity 1 is refused.
#[test]
fn wrap_around_second_lap() {
    check("wrap_around_second_lap", 3, || {
        loom::lazy_static! {
            static ref MEMORY: Memory = Memory::new(1, 2);
        }
        wrap_around_model(MEMORY.segment(), 2, [1, 2, 3, 4]);
    });
}

/// A producer sends `tags` in order into a ring of `capacity` (the first `capacity` sends find
/// room; later ones retry a bounded number of times on `Full`) while the main thread receives.
/// Whatever the producer could not send is sent by the main thread after joining it. One
/// producer and one consumer: everything arrives once, in order, intact.
fn wrap_around_model<const N: usize>(segment: Segment<'static>, capacity: u64, tags: [u8; N]) {
    let channel = segment.create_channel(0, capacity, 1).unwrap();
    let tx = channel.clone();
    let producer = thread::spawn(move || {
        let mut sent = 0;
        for (index, tag) in tags.into_iter().enumerate() {
            let mut attempts = 0;
            loop {
                match send(&tx, tag) {
                    Ok(id) => {
                        assert_eq!(id, index as u64);
                        break;
                    }
                    Err(SendError::Full) if (index as u64) >= capacity && attempts < ATTEMPTS => {
                        attempts += 1;
                        thread::yield_now();
                    }
                    Err(SendError::Full) if (index as u64) >= capacity => return sent,
                    Err(other) => panic!("send of message {tag} failed: {other:?}"),
                }
            }
            sent += 1;
        }
        sent
    });

    let mut got = Vec::new();
    recv_some(&channel, &mut got);
    let sent = producer.join().unwrap();
    drain(&channel, &mut got);
    for (index, &tag) in tags.iter().enumerate().skip(sent) {
        assert_eq!(send(&channel, tag), Ok(index as u64));
        drain(&channel, &mut got);
    }
    let expected: Vec<Got> = tags
        .iter()
        .enumerate()
        .map(|(index, &tag)| Got {
            tag,
            message_id: index as u64,
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!((channel.head(), channel.tail()), (N as u64, N as u64));
}

/// A loan dropped without commit races a send and a consumer: the consumer never sees the
/// abandoned slot, only the real message (or `Empty` while it is not there yet).
#[test]
fn dropped_loan_is_skipped() {
    check("dropped_loan_is_skipped", 3, || {
        loom::lazy_static! {
            static ref MEMORY: Memory = Memory::new(1, 2);
        }
        let channel = MEMORY.segment().create_channel(0, 2, 1).unwrap();
        let tx = channel.clone();
        let loaner = thread::spawn(move || {
            interleave();
            let mut loan = tx.try_loan().unwrap();
            // Scribble in the slot, then abandon it.
            assert!(loan.payload().set_word(0, u64::MAX));
            let position = loan.position();
            interleave();
            drop(loan);
            position
        });
        let tx = channel.clone();
        let sender = thread::spawn(move || send(&tx, 1).unwrap());

        let mut got = Vec::new();
        recv_some(&channel, &mut got);
        let loan_position = loaner.join().unwrap();
        let sent_id = sender.join().unwrap();
        drain(&channel, &mut got);

        assert_eq!(
            got,
            [Got {
                tag: 1,
                message_id: sent_id
            }]
        );
        let mut positions = [loan_position, sent_id];
        positions.sort_unstable();
        assert_eq!(positions, [0, 1]);
        // The skip marker was consumed too.
        assert_eq!((channel.head(), channel.tail()), (2, 2));
    });
}

/// A futex stand-in: `wait` sleeps on a condition variable while the word still holds the
/// expected value; `wake_all` wakes every sleeper. The word is re-checked under the mutex, and
/// wakers bump the word before calling `wake_all`, so a wake-up cannot slip between the check
/// and the sleep (as with a real futex).
#[derive(Clone)]
struct ModelFutex {
    inner: Arc<(Mutex<()>, Condvar)>,
}

impl ModelFutex {
    fn new() -> Self {
        Self {
            inner: Arc::new((Mutex::new(()), Condvar::new())),
        }
    }
}

impl WaitStrategy for ModelFutex {
    fn wait(&self, word: &AtomicU32, expected: u32) -> WaitOutcome {
        let (lock, condvar) = &*self.inner;
        let mut guard = lock.lock().unwrap();
        while word.load(Ordering::SeqCst) == expected {
            guard = condvar.wait(guard).unwrap();
        }
        WaitOutcome::Woken
    }

    fn wake_all(&self, _word: &AtomicU32) {
        let (lock, condvar) = &*self.inner;
        let _guard = lock.lock().unwrap();
        condvar.notify_all();
    }
}

/// A blocking receive racing a send into an empty ring: the receiver either finds the message
/// or registers as a waiter in time to be woken. A lost wake-up is a deadlock, which loom
/// reports.
#[test]
fn blocking_recv_is_woken() {
    check("blocking_recv_is_woken", 3, || {
        loom::lazy_static! {
            static ref MEMORY: Memory = Memory::new(1, 2);
        }
        let futex = ModelFutex::new();
        let segment = MEMORY.segment().with_wait_strategy(futex.clone());
        let channel = segment.create_channel(0, 2, 1).unwrap();
        let tx = channel.clone();
        let sender = thread::spawn(move || send(&tx, 1).unwrap());

        let mut buf = [0u8; 16];
        interleave();
        let received = channel.recv_blocking(&mut buf, &futex).unwrap();
        let got = check_received(&buf, received);
        assert_eq!(
            got,
            Got {
                tag: 1,
                message_id: sender.join().unwrap()
            }
        );
        assert_eq!(channel.waiters(), (0, 0));
    });
}

/// A blocking send into a full ring of 2 racing a receive that frees a slot.
#[test]
fn blocking_send_is_woken() {
    check("blocking_send_is_woken", 3, || {
        loom::lazy_static! {
            static ref MEMORY: Memory = Memory::new(1, 2);
        }
        let futex = ModelFutex::new();
        let segment = MEMORY.segment().with_wait_strategy(futex.clone());
        let channel = segment.create_channel(0, 2, 1).unwrap();
        assert_eq!(send(&channel, 1), Ok(0));
        assert_eq!(send(&channel, 2), Ok(1));
        let rx = channel.clone();
        let receiver = thread::spawn(move || recv(&rx).unwrap());

        interleave();
        let id = channel
            .send_blocking(&payload(3), &meta(3), &futex)
            .unwrap();
        assert_eq!(id, 2);
        assert_eq!(
            receiver.join().unwrap(),
            Got {
                tag: 1,
                message_id: 0
            }
        );
        let mut got = Vec::new();
        drain(&channel, &mut got);
        assert_eq!(
            got,
            [
                Got {
                    tag: 2,
                    message_id: 1
                },
                Got {
                    tag: 3,
                    message_id: 2
                }
            ]
        );
        assert_eq!(channel.waiters(), (0, 0));
    });
}

/// A repair (an unblock of a position held too long) racing the claimer's late publish
/// (PROTOCOL.md §11.7): exactly one of them settles the position's `sequence`, the claimer is
/// told when it lost, and the ring is never wedged: the next lap flows.
#[test]
fn a_repair_racing_a_late_publish_settles_the_position_once() {
    check(
        "a_repair_racing_a_late_publish_settles_the_position_once",
        3,
        || {
            loom::lazy_static! {
                static ref MEMORY: Memory = Memory::new(1, 2);
            }
            let channel = MEMORY.segment().create_channel(0, 2, 1).unwrap();
            let tx = channel.clone();
            let late = thread::spawn(move || {
                interleave();
                let mut loan = tx.try_loan().unwrap();
                assert!(loan.payload().set_word(
                    0,
                    u64::from_le_bytes([b'm', 1, !1, 7, 0x5A, 1 ^ 0x3C, 0, 0])
                ));
                interleave();
                loan.commit(6, &meta(1))
            });
            let rx = channel.clone();
            let repairer = thread::spawn(move || {
                interleave();
                rx.unblock(0, dmxp_nostd::PeerRole::Producer)
            });
            let published = late.join().unwrap();
            let repaired = repairer.join().unwrap();
            match published {
                Ok(id) => {
                    assert_eq!(id, 0);
                    assert!(!repaired, "a published position was also tombstoned");
                }
                Err(SendError::Revoked { message_id }) => {
                    assert_eq!(message_id, 0);
                    assert!(repaired, "revoked without a repair");
                }
                Err(other) => panic!("late publish: {other:?}"),
            }
            // Position 0 is consumed whatever it holds: the message, the LOST tombstone, or (in the
            // window §11.7 describes: metadata stores of the two writers interleaved) a garbled
            // mix of both. What must hold is the ring's state, checked below.
            let mut buf = [0u8; 960];
            match channel.try_recv(&mut buf) {
                Ok(_) | Err(RecvError::Lost { .. } | RecvError::Corrupt { .. }) => {}
                Err(other) => panic!("position 0: {other:?}"),
            }
            assert_eq!((channel.head(), channel.tail()), (1, 1));
            // Not wedged: two more laps go through.
            for tag in 2..6 {
                assert_eq!(send(&channel, tag), Ok(u64::from(tag) - 1));
                assert_eq!(recv(&channel).map(|g| g.tag), Ok(tag));
            }
        },
    );
}

/// A repair (an unblock of a slot a consumer holds too long) racing that consumer's late
/// free: exactly one of them frees the slot, a revoked consumer is told and frees nothing, and
/// the producer's next lap is never overwritten.
#[test]
fn a_repair_racing_a_late_free_frees_the_slot_once() {
    check("a_repair_racing_a_late_free_frees_the_slot_once", 3, || {
        loom::lazy_static! {
            static ref MEMORY: Memory = Memory::new(1, 2);
        }
        let channel = MEMORY.segment().create_channel(0, 2, 1).unwrap();
        assert_eq!(send(&channel, 1), Ok(0));
        assert_eq!(send(&channel, 2), Ok(1));
        let rx = channel.clone();
        let late = thread::spawn(move || {
            interleave();
            let guard = rx.try_recv_in_place().unwrap();
            // Read after the claim: the next lap's, if the slot was freed under us meanwhile.
            let seen = guard.meta().message_id;
            interleave();
            let released = guard.release();
            if released.is_ok() {
                assert_eq!(
                    seen, 0,
                    "a receive that kept its claim read its own message"
                );
            }
            released
        });
        let tx = channel.clone();
        let repairer = thread::spawn(move || {
            interleave();
            let repaired = tx.unblock(0, dmxp_nostd::PeerRole::Consumer);
            // The next lap takes the slot if it is free by now.
            (repaired, send(&tx, 3))
        });
        let freed = late.join().unwrap();
        let (repaired, sent) = repairer.join().unwrap();
        match freed {
            Ok(()) => assert!(!repaired, "a freed slot was freed twice"),
            Err(RecvError::Revoked { message_id }) => {
                assert_eq!(message_id, 0);
                assert!(repaired, "revoked without a repair");
            }
            Err(other) => panic!("late free: {other:?}"),
        }
        // Message 2, then message 3 if it got a slot: never lost or overwritten.
        let mut got = Vec::new();
        drain(&channel, &mut got);
        let mut expected = vec![Got {
            tag: 2,
            message_id: 1,
        }];
        match sent {
            Ok(id) => {
                assert_eq!(id, 2);
                expected.push(Got {
                    tag: 3,
                    message_id: 2,
                });
            }
            Err(SendError::Full) => {}
            Err(other) => panic!("next lap: {other:?}"),
        }
        assert_eq!(got, expected);
        for tag in 4..6 {
            let id = send(&channel, tag).unwrap();
            assert_eq!(
                recv(&channel),
                Ok(Got {
                    tag,
                    message_id: id
                })
            );
        }
    });
}

/// A wait that does not sleep: it yields once and returns as if woken.
#[derive(Clone)]
struct YieldOnce;

impl WaitStrategy for YieldOnce {
    fn wait(&self, _word: &AtomicU32, _expected: u32) -> WaitOutcome {
        thread::yield_now();
        WaitOutcome::Woken
    }

    fn wake_all(&self, _word: &AtomicU32) {}
}

/// Judges every peer dead, the waiter below included: a wrong judgement.
struct NobodyAlive;

impl dmxp_nostd::Liveness for NobodyAlive {
    fn is_alive(&self, _pid: u32, _start_time: u64) -> bool {
        false
    }
}

/// A waiter misjudged dead while it waits (PROTOCOL.md §11.9): the sweep that frees its record
/// and gives its wait back races the waiter for the record's `waiting` word, so the wait count
/// is undone exactly once whoever wins (0 at the end, never wrapped below it) and the word is
/// left at 0.
#[test]
fn a_misjudged_waiter_and_its_freer_undo_the_wait_count_once() {
    check(
        "a_misjudged_waiter_and_its_freer_undo_the_wait_count_once",
        3,
        || {
            loom::lazy_static! {
                static ref MEMORY: Memory = Memory::new(1, 2);
                static ref RECORDS: Vec<AtomicPeerRecord> = vec![AtomicPeerRecord::new_zeroed()];
            }
            let channel = MEMORY.segment().create_channel(0, 2, 1).unwrap();
            let slot = register_in(&RECORDS, 0, PeerRole::Consumer, 7, 70, 0, 1).unwrap();
            let rx = channel.clone();
            let waiter = thread::spawn(move || {
                let registered = rx.with_peer(&slot);
                interleave();
                registered.wait_for_message(&YieldOnce);
                // The record is the (misjudged) freer's business now, or still ours: either
                // way leaving it is not what this model checks.
                std::mem::forget(slot);
            });
            let sweeper = thread::spawn(|| {
                interleave();
                free_dead_records(&MEMORY.entries, &RECORDS, &NobodyAlive, 9)
            });
            waiter.join().unwrap();
            let report = sweeper.join().unwrap();
            assert_eq!(report.records_freed, 1);
            assert_eq!(channel.waiters(), (0, 0), "the count undone once");
            assert_eq!(RECORDS[0].waiting.load(Ordering::Relaxed), 0);
        },
    );
}

// ---------------------------------------------------------------- runs (PROTOCOL.md §12)

/// A run of two slots: 961 bytes derived from `tag`.
fn run_payload(tag: u8) -> Vec<u8> {
    (0..961).map(|k| tag ^ (k as u8)).collect()
}

/// A channel of 4 slots taking messages of up to two slots.
fn run_channel(memory: &'static Memory) -> Channel<'static> {
    let options = dmxp_nostd::ChannelOptions::default().with_max_message_size(1_920);
    let (channel, _) = memory
        .segment()
        .open_or_create_channel_with(0, 4, 1, options)
        .unwrap();
    channel
}

/// Receives one run and checks that it is whole: the message of one tag, all 961 bytes.
fn recv_run(channel: &Channel<'_>) -> Result<Got, RecvError> {
    interleave();
    let mut buf = vec![0u8; 1_920];
    let received = channel.try_recv(&mut buf)?;
    let tag = u8::try_from(received.meta.message_type).expect("message_type is a tag");
    assert_eq!(received.len, 961, "length of run {tag}");
    assert!(
        buf[..961] == run_payload(tag)[..],
        "run {tag} arrived garbled"
    );
    Ok(Got {
        tag,
        message_id: received.meta.message_id,
    })
}

/// Two producers each send a two-slot run into a ring of 4 while the main thread receives:
/// both runs arrive once and whole, at positions 0 and 2.
#[test]
fn two_producers_of_runs_one_consumer() {
    check("two_producers_of_runs_one_consumer", 3, || {
        loom::lazy_static! {
            static ref MEMORY: Memory = Memory::new(1, 4);
        }
        let channel = run_channel(&MEMORY);
        let producers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|tag| {
                let tx = channel.clone();
                thread::spawn(move || {
                    interleave();
                    (tag, tx.try_send(&run_payload(tag), &meta(tag)).unwrap())
                })
            })
            .collect();
        let mut got = Vec::new();
        match recv_run(&channel) {
            Ok(message) => got.push(message),
            Err(RecvError::Empty | RecvError::Pending { .. }) => {}
            Err(other) => panic!("receive failed: {other:?}"),
        }
        let sent: BTreeMap<u8, u64> = producers.into_iter().map(|p| p.join().unwrap()).collect();
        loop {
            match recv_run(&channel) {
                Ok(message) => got.push(message),
                Err(RecvError::Empty) => break,
                Err(other) => panic!("drain failed: {other:?}"),
            }
        }
        assert_exactly_once(&got, &sent);
        let mut ids: Vec<u64> = sent.values().copied().collect();
        ids.sort_unstable();
        assert_eq!(ids, [0, 2], "each run took two positions");
        assert_eq!((channel.head(), channel.tail()), (4, 4));
    });
}

/// One producer sends a two-slot run; two consumers race for it: exactly one gets it whole.
#[test]
fn two_consumers_race_for_one_run() {
    check("two_consumers_race_for_one_run", 3, || {
        loom::lazy_static! {
            static ref MEMORY: Memory = Memory::new(1, 4);
        }
        let channel = run_channel(&MEMORY);
        let tx = channel.clone();
        let producer = thread::spawn(move || {
            interleave();
            tx.try_send(&run_payload(7), &meta(7)).unwrap()
        });
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let rx = channel.clone();
                thread::spawn(move || match recv_run(&rx) {
                    Ok(message) => Some(message),
                    Err(RecvError::Empty | RecvError::Pending { .. }) => None,
                    Err(other) => panic!("receive failed: {other:?}"),
                })
            })
            .collect();
        let id = producer.join().unwrap();
        let mut got: Vec<Got> = consumers
            .into_iter()
            .filter_map(|c| c.join().unwrap())
            .collect();
        if got.is_empty() {
            got.push(recv_run(&channel).unwrap());
        }
        assert_exactly_once(&got, &BTreeMap::from([(7u8, id)]));
        assert_eq!(
            channel.try_recv(&mut [0u8; 1_920]).err(),
            Some(RecvError::Empty)
        );
        assert_eq!((channel.head(), channel.tail()), (2, 2));
    });
}
