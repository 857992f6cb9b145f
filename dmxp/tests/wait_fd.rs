//! Event-loop waits of any runtime (feature `wait-fd`, PROTOCOL.md §7.4): `arm_wait` hands
//! out the handle's `io_uring` fd, which turns readable when the armed futex wait completes.
//! A `poll` loop here stands for the caller's reactor.
//!
//! Every wait has a generous bound, so a lost wake-up fails a test instead of hanging it; no
//! test asserts a speed. On a kernel without `IORING_OP_FUTEX_WAIT` each test checks that
//! `arm_wait` says so with `Unsupported`, and stops there.
#![cfg(feature = "wait-fd")]

mod common;

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{env, expect_success, file_segment, small_channel, spawn_child, Spec};
use dmxp::{ArmedWait, Consumer, ErrorKind};
use rustix::event::{poll, PollFd, PollFlags, Timespec};

/// A bound on any single test's waiting: far beyond what a loaded machine needs.
const LONG: Duration = Duration::from_secs(60);

/// The counters the tests compare are per process: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `fds` for readability for at most `timeout`; the indexes of those readable.
fn readable(fds: &[RawFd], timeout: Duration) -> Vec<usize> {
    // SAFETY: every fd is a handle's ring fd, open while the handle lives, and each handle
    // outlives this call (the callers hold them).
    let borrowed: Vec<BorrowedFd<'_>> = fds
        .iter()
        .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })
        .collect();
    let mut polled: Vec<PollFd<'_>> = borrowed
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    let timeout = Timespec::try_from(timeout).unwrap();
    poll(&mut polled, Some(&timeout)).unwrap();
    polled
        .iter()
        .enumerate()
        .filter(|(_, fd)| fd.revents().contains(PollFlags::IN))
        .map(|(i, _)| i)
        .collect()
}

/// True when `arm_wait` must work here; otherwise checks that `result` says `Unsupported`.
fn supported(result: &dmxp::Result<ArmedWait>) -> bool {
    if common::io_uring_futex_waits_available() {
        assert!(result.is_ok(), "arm_wait failed: {result:?}");
        return true;
    }
    let kind = result.as_ref().map_err(dmxp::Error::kind).unwrap_err();
    assert_eq!(kind, ErrorKind::Io(std::io::ErrorKind::Unsupported));
    eprintln!("skipped: this kernel has no IORING_OP_FUTEX_WAIT");
    false
}

fn payload(channel: u32, index: u64) -> Vec<u8> {
    let mut bytes = channel.to_le_bytes().to_vec();
    bytes.extend_from_slice(&index.to_le_bytes());
    bytes
}

// ---------------------------------------------------------------- children

/// Sends `DMXP_T_PER_CHANNEL` messages round robin on channels `0..DMXP_T_CHANNELS`, each
/// with a blocking send (the rings are small, so this process waits for room too).
#[test]
#[ignore = "child process helper"]
fn child_blocking_producer() {
    let Some(spec) = common::child_env("DMXP_T_SPEC") else {
        return;
    };
    let spec = Spec::decode(&spec);
    let channels: u32 = env("DMXP_T_CHANNELS");
    let per_channel: u64 = env("DMXP_T_PER_CHANNEL");
    let producers: Vec<_> = (0..channels)
        .map(|channel| small_channel(&spec, channel, 8).build_producer().unwrap())
        .collect();
    for index in 0..per_channel {
        for (channel, producer) in (0..channels).zip(&producers) {
            producer
                .send_timeout(payload(channel, index), LONG)
                .unwrap_or_else(|e| panic!("channel {channel} message {index}: {e}"));
        }
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn a_poll_loop_on_one_thread_receives_every_message_of_many_channels_from_another_process() {
    let _serial = serial();
    const CHANNELS: u32 = 8;
    const PER_CHANNEL: u64 = 2_000;
    let (_guard, spec) = file_segment("wait-fd-many");
    let mut consumers: Vec<Consumer> = (0..CHANNELS)
        .map(|channel| small_channel(&spec, channel, 8).build_producer().unwrap())
        .map(|producer| {
            // Created by a producer first, so that the consumers find the channels.
            let consumer = small_channel(&spec, producer.channel_id(), 8)
                .build_consumer()
                .unwrap();
            drop(producer);
            consumer
        })
        .collect();
    if !supported(&consumers[0].arm_wait()) {
        return;
    }
    consumers[0].disarm_wait();
    let wakeups_before = dmxp::io_uring_futex_wakeups();
    let child = spawn_child(
        "child_blocking_producer",
        &[
            ("DMXP_T_SPEC", spec.encode()),
            ("DMXP_T_CHANNELS", CHANNELS.to_string()),
            ("DMXP_T_PER_CHANNEL", PER_CHANNEL.to_string()),
        ],
    );
    let mut next = vec![0u64; CHANNELS as usize];
    let mut armed: Vec<Option<RawFd>> = vec![None; CHANNELS as usize];
    let started = Instant::now();
    while next.iter().any(|&n| n < PER_CHANNEL) {
        assert!(started.elapsed() < LONG, "no end after {LONG:?}: {next:?}");
        for (channel, consumer) in consumers.iter_mut().enumerate() {
            if armed[channel].is_some() {
                continue;
            }
            // Drain, then arm; a message that came meanwhile makes `arm_wait` say Ready.
            loop {
                while let Some(message) = consumer.receive().unwrap() {
                    assert_eq!(message, payload(channel as u32, next[channel]));
                    next[channel] += 1;
                }
                if next[channel] == PER_CHANNEL {
                    break;
                }
                match consumer.arm_wait().unwrap() {
                    ArmedWait::Ready => continue,
                    ArmedWait::Readable { fd, timeout } => {
                        assert!(timeout <= dmxp::FutexWait::MAX_SLICE);
                        armed[channel] = Some(fd);
                        break;
                    }
                }
            }
        }
        let waiting: Vec<(usize, RawFd)> = armed
            .iter()
            .enumerate()
            .filter_map(|(channel, fd)| fd.map(|fd| (channel, fd)))
            .collect();
        if waiting.is_empty() {
            continue;
        }
        let fds: Vec<RawFd> = waiting.iter().map(|&(_, fd)| fd).collect();
        let ready = readable(&fds, dmxp::FutexWait::MAX_SLICE);
        // A slice that ended with nothing readable re-arms everything (the §7.3 bound).
        let done: Vec<usize> = if ready.is_empty() {
            waiting.iter().map(|&(channel, _)| channel).collect()
        } else {
            ready.iter().map(|&i| waiting[i].0).collect()
        };
        for channel in done {
            consumers[channel].disarm_wait();
            armed[channel] = None;
        }
    }
    expect_success(child, "producer process");
    for consumer in &consumers {
        assert_eq!(consumer.waiters(), (0, 0));
    }
    assert!(
        dmxp::io_uring_futex_wakeups() > wakeups_before,
        "the producer's wakes never reached an armed wait"
    );
}

#[test]
fn the_fd_turns_readable_only_once_a_message_is_sent() {
    let _serial = serial();
    let (_guard, spec) = file_segment("wait-fd-readable");
    let producer = small_channel(&spec, 0, 4).build_producer().unwrap();
    let mut consumer = small_channel(&spec, 0, 4).build_consumer().unwrap();
    let armed = consumer.arm_wait();
    if !supported(&armed) {
        return;
    }
    let ArmedWait::Readable { fd, .. } = armed.unwrap() else {
        panic!("an empty channel armed Ready");
    };
    assert_eq!(consumer.waiters(), (1, 0));
    assert!(
        readable(&[fd], Duration::ZERO).is_empty(),
        "readable before any send"
    );
    let wakes = dmxp::futex_wake_calls();
    producer.send("ring").unwrap();
    assert_eq!(
        dmxp::futex_wake_calls(),
        wakes + 1,
        "a counted waiter is woken"
    );
    assert_eq!(readable(&[fd], LONG), [0]);
    consumer.disarm_wait();
    assert_eq!(consumer.waiters(), (0, 0));
    assert!(
        readable(&[fd], Duration::ZERO).is_empty(),
        "disarm reaps the completion"
    );
    assert_eq!(consumer.receive().unwrap().as_deref(), Some(&b"ring"[..]));
    // Disarmed: nobody is counted, so a send wakes nobody.
    producer.send("quiet").unwrap();
    assert_eq!(dmxp::futex_wake_calls(), wakes + 1);
}

#[test]
fn arming_with_a_message_queued_says_ready_and_counts_nobody() {
    let _serial = serial();
    let (_guard, spec) = file_segment("wait-fd-ready");
    let producer = small_channel(&spec, 0, 4).build_producer().unwrap();
    let mut consumer = small_channel(&spec, 0, 4).build_consumer().unwrap();
    if !supported(&consumer.arm_wait()) {
        return;
    }
    consumer.disarm_wait();
    producer.send("already here").unwrap();
    assert_eq!(consumer.arm_wait().unwrap(), ArmedWait::Ready);
    assert_eq!(consumer.waiters(), (0, 0));
}

#[test]
fn arming_again_reuses_the_queued_wait_and_dropping_the_handle_uncounts_it() {
    let _serial = serial();
    let (_guard, spec) = file_segment("wait-fd-reuse");
    let producer = small_channel(&spec, 0, 4).build_producer().unwrap();
    let mut consumer = small_channel(&spec, 0, 4).build_consumer().unwrap();
    let first = consumer.arm_wait();
    if !supported(&first) {
        return;
    }
    let submitted = dmxp::io_uring_futex_waits();
    let again = consumer.arm_wait().unwrap();
    assert_eq!(again, first.unwrap(), "the same fd, still armed");
    assert_eq!(
        dmxp::io_uring_futex_waits(),
        submitted,
        "no second submission"
    );
    assert_eq!(producer.waiters(), (1, 0), "counted once");
    drop(consumer);
    assert_eq!(producer.waiters(), (0, 0));
    let wakes = dmxp::futex_wake_calls();
    producer.send("nobody waits").unwrap();
    assert_eq!(dmxp::futex_wake_calls(), wakes);
}

#[test]
fn a_producer_waits_for_room_for_a_whole_run() {
    let _serial = serial();
    let (_guard, spec) = file_segment("wait-fd-room");
    let spec_builder = small_channel(&spec, 0, 4).with_max_message_size(3 * dmxp::MSG_INLINE);
    let mut producer = spec_builder.build_producer().unwrap();
    let consumer = spec_builder.build_consumer().unwrap();
    producer.send("one").unwrap();
    producer.send("two").unwrap();
    // Two slots free: a run of three does not fit.
    let run = vec![7u8; 3 * dmxp::MSG_INLINE];
    assert_eq!(producer.send(&run).unwrap_err().kind(), ErrorKind::Full);
    let armed = producer.arm_wait(run.len());
    if !supported(&armed) {
        return;
    }
    let ArmedWait::Readable { fd, .. } = armed.unwrap() else {
        panic!("two free slots armed Ready for a run of three");
    };
    assert_eq!(consumer.waiters(), (0, 1));
    assert_eq!(consumer.receive().unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(readable(&[fd], LONG), [0], "a freed slot wakes the word");
    producer.disarm_wait();
    assert_eq!(consumer.waiters(), (0, 0));
    producer.send(&run).unwrap();
    assert_eq!(consumer.receive().unwrap().as_deref(), Some(&b"two"[..]));
    assert_eq!(consumer.receive().unwrap(), Some(run));
}
