//! What a waiter killed while it waits leaves behind, and what the repair of its record gives
//! back (PROTOCOL.md §7.3, §11.9; issue #12).
//!
//! A peer counted in a wait count (`not_empty_waiters` for a blocked receive, `not_full_waiters`
//! for a blocked send) and killed with SIGKILL never takes itself out of it: every later send
//! (or receive) of the channel would then make a `futex_wake` nobody needs. Its peer record
//! names the count it is in (`waiting`), and whoever frees the record after its death gives the
//! count back. Each case here:
//!
//! 1. starts a child (this test binary re-executed to run one `child_*` helper) that blocks in
//!    a receive (`receive_blocking`, `receive_timeout` of an hour, `receive_async` on a
//!    current-thread tokio runtime) or in a send into a full ring (`send_blocking`,
//!    `send_timeout` of an hour);
//! 2. waits until the child is counted and its record names the count (polling
//!    `waiters()` and the peer table, with a 30 s hang guard), stops it with SIGSTOP at a
//!    moment when both hold (a waiter leaves and re-enters the count at every 100 ms slice),
//!    and kills it with SIGKILL: the count stays at 1;
//! 3. shows that the leftover count costs: one send (a receive, for a dead sender) from this
//!    process makes exactly one `futex_wake` (`dmxp::futex_wake_calls`);
//! 4. runs the repair pass a live peer (and `dmxp recover`) runs,
//!    [`dmxp::SharedMemoryAllocator::recover`]: it frees the dead record and gives its count
//!    back, and the counts are 0;
//! 5. does 10⁴ sends, each followed by a receive, and checks that this process made no
//!    `futex_wake` (and no futex wait) over them.
//!
//! The counters are process-wide, so the cases take turns (`SERIAL`). No assertion depends on
//! timing: every wait is a poll with a generous hang guard. The case of the CLI (`dmxp recv
//! --follow` interrupted by SIGINT or SIGTERM, which leaves cleanly without any repair) is in
//! `dmxp-cli/tests/interrupted_waiter.rs`, where the `dmxp` binary is at hand.
#![cfg(all(feature = "tokio", feature = "file"))]

mod common;

use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{env, expected_wakeup, runtime, spawn_child, unique_path, Spec, TempPath};
use dmxp::core::layout::peer_waiting;
use dmxp::{AsyncWakeup, ChannelBuilder, Consumer, Producer, SharedMemoryAllocator};

/// Slots of the test channel.
const CAPACITY: u64 = 8;
/// Sends (each followed by a receive) after the repair.
const SENDS: u64 = 10_000;
/// A hang guard, never a timing assertion.
const HANG_GUARD: Duration = Duration::from_secs(30);
/// How long a child's `*_timeout` call would wait: far beyond any test.
const AN_HOUR: Duration = Duration::from_secs(3600);

/// The futex counters are process-wide: one case at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn builder(spec: &Spec) -> ChannelBuilder {
    spec.builder().with_channel_id(0).with_capacity(CAPACITY)
}

// ---------------------------------------------------------------- children

/// Blocks in a receive on the (empty) channel until killed: `DMXP_T_HOW` is `blocking`
/// (`receive_blocking`), `timeout` (`receive_timeout` of an hour) or `async`
/// (`receive_async` on a current-thread tokio runtime).
#[test]
#[ignore = "child process helper"]
fn child_blocked_receiver() {
    let Some(spec) = common::child_env("DMXP_T_SPEC") else {
        return;
    };
    let spec = Spec::decode(&spec);
    let how: String = env("DMXP_T_HOW");
    let mut consumer = builder(&spec).build_consumer().unwrap();
    assert!(consumer.is_registered());
    let got = match how.as_str() {
        "blocking" => Some(consumer.receive_blocking().unwrap().payload),
        "timeout" => consumer
            .receive_timeout(AN_HOUR)
            .unwrap()
            .map(|m| m.payload),
        "async" => Some(runtime().block_on(consumer.receive_async()).unwrap()),
        other => panic!("unknown DMXP_T_HOW {other}"),
    };
    panic!("the receiver was to be killed while it waited, but it received {got:?}");
}

/// Blocks in a send into the (full) channel until killed: `DMXP_T_HOW` is `blocking`
/// (`send_blocking`) or `timeout` (`send_timeout` of an hour).
#[test]
#[ignore = "child process helper"]
fn child_blocked_sender() {
    let Some(spec) = common::child_env("DMXP_T_SPEC") else {
        return;
    };
    let spec = Spec::decode(&spec);
    let how: String = env("DMXP_T_HOW");
    let producer = builder(&spec).build_producer().unwrap();
    assert!(producer.is_registered());
    let sent = match how.as_str() {
        "blocking" => producer.send_blocking("late"),
        "timeout" => producer.send_timeout("late", AN_HOUR),
        other => panic!("unknown DMXP_T_HOW {other}"),
    };
    panic!("the sender was to be killed while it waited, but its send returned {sent:?}");
}

// ---------------------------------------------------------------- the parent's side

/// A child that is killed (SIGKILL) and reaped when dropped, so that a failing test leaves no
/// process blocked behind it.
struct Waiter(Child);

impl Waiter {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Panics with the child's output if it has exited (it should be blocked).
    fn check_alive(&mut self) {
        use std::io::Read;
        if let Some(status) = self.0.try_wait().unwrap() {
            let mut output = String::new();
            if let Some(mut out) = self.0.stdout.take() {
                let _ = out.read_to_string(&mut output);
            }
            if let Some(mut err) = self.0.stderr.take() {
                let _ = err.read_to_string(&mut output);
            }
            panic!("the waiter exited ({status}) instead of blocking:\n{output}");
        }
    }

    fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.pid()).unwrap();
        // SAFETY: kill(2) on our own child, which has not been reaped (we hold its `Child`).
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    /// SIGSTOP, and waits until the child has stopped (`waitpid` with `WUNTRACED` reports the
    /// stop without reaping it).
    fn stop(&self) {
        self.signal(libc::SIGSTOP);
        let pid = i32::try_from(self.pid()).unwrap();
        let mut status = 0;
        // SAFETY: waits for a state change of our own child; `status` is a valid out pointer.
        let waited = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
        assert_eq!(waited, pid, "waitpid");
        assert!(
            libc::WIFSTOPPED(status),
            "the waiter did not stop: {status:#x}"
        );
    }

    fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGKILL and reap (dropping it afterwards changes nothing).
    fn kill(mut self) {
        use std::os::unix::process::ExitStatusExt;
        self.0.kill().unwrap();
        let status = self.0.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Which count the waiter is in, as its record's `waiting` word names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Count {
    /// `not_empty_waiters`: a receiver waiting for a message.
    NotEmpty,
    /// `not_full_waiters`: a sender waiting for a free slot.
    NotFull,
}

impl Count {
    fn of(self, waiters: (u32, u32)) -> u32 {
        match self {
            Count::NotEmpty => waiters.0,
            Count::NotFull => waiters.1,
        }
    }

    fn word(self) -> u32 {
        match self {
            Count::NotEmpty => peer_waiting::NOT_EMPTY,
            Count::NotFull => peer_waiting::NOT_FULL,
        }
    }
}

/// The `waiting` word of `pid`'s record, if it has one.
fn waiting_of(allocator: &SharedMemoryAllocator, pid: u32) -> Option<u32> {
    allocator
        .peers()
        .unwrap()
        .iter()
        .find(|p| p.record.pid == pid)
        .map(|p| p.record.waiting)
}

/// True when the waiter is counted once in `count` and its record names that count.
fn counted(consumer: &Consumer, allocator: &SharedMemoryAllocator, pid: u32, count: Count) -> bool {
    count.of(consumer.waiters()) == 1 && waiting_of(allocator, pid) == Some(count.word())
}

/// The whole case: see the module docs. `child` is `child_blocked_receiver` (count
/// `NotEmpty`) or `child_blocked_sender` (`NotFull`), `how` its `DMXP_T_HOW`.
fn a_killed_waiter_is_given_back_by_the_repair(tag: &str, child: &str, how: &str, count: Count) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let path = unique_path(tag);
    let _guard = TempPath(path.clone());
    let spec = Spec::File(path);
    // This process's handles register before the child does, so that no registration of
    // ours (a sweep, §11.10) frees the dead child's record: only the repair below may.
    let producer: Producer = builder(&spec).build_producer().unwrap();
    let consumer: Consumer = builder(&spec).build_consumer().unwrap();
    let allocator = builder(&spec).attach_allocator().unwrap();
    if count == Count::NotFull {
        for n in 0..CAPACITY {
            producer.send(n.to_le_bytes()).unwrap();
        }
        assert_eq!(consumer.info().depth, CAPACITY, "the ring is full");
    }
    assert_eq!(consumer.waiters(), (0, 0));

    let mut waiter = Waiter(spawn_child(
        child,
        &[
            ("DMXP_T_SPEC", spec.encode()),
            ("DMXP_T_HOW", how.to_owned()),
        ],
    ));
    let pid = waiter.pid();
    // 1. Counted: poll (hang guard only) until the count and the record say so.
    let deadline = Instant::now() + HANG_GUARD;
    while !counted(&consumer, &allocator, pid, count) {
        waiter.check_alive();
        assert!(
            Instant::now() < deadline,
            "{how}: the waiter was never counted: waiters {:?}, its record's waiting word {:?}",
            consumer.waiters(),
            waiting_of(&allocator, pid)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // 2. Stopped while counted, then killed. Between two wait slices the waiter is briefly
    // out of the count (or, for two instructions, counted and not yet named in its record):
    // stopped there, it is let go on and stopped again.
    let deadline = Instant::now() + HANG_GUARD;
    let mut stops = 0;
    loop {
        waiter.stop();
        stops += 1;
        if counted(&consumer, &allocator, pid, count) {
            break;
        }
        waiter.resume();
        assert!(
            Instant::now() < deadline,
            "{how}: never stopped while counted"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    waiter.kill();
    assert_eq!(
        count.of(consumer.waiters()),
        1,
        "{how}: the dead waiter is still counted"
    );
    assert_eq!(waiting_of(&allocator, pid), Some(count.word()));

    // 3. The leftover count costs one futex_wake per operation that wakes that count: a send
    // for a dead receiver, a receive (which frees a slot) for a dead sender.
    let wakes = dmxp::futex_wake_calls();
    match count {
        Count::NotEmpty => {
            producer.send("probe").unwrap();
        }
        Count::NotFull => {
            assert!(consumer.receive().unwrap().is_some());
        }
    }
    let probe_wakes = dmxp::futex_wake_calls() - wakes;
    assert_eq!(
        probe_wakes, 1,
        "{how}: with the dead waiter still counted, the probe makes one futex_wake"
    );
    if count == Count::NotEmpty {
        // Taken back (no wake: nobody waits for a free slot).
        assert_eq!(consumer.receive().unwrap().as_deref(), Some(&b"probe"[..]));
    }

    // 4. The repair a live peer (or `dmxp recover`) runs frees the record and gives the count
    // back.
    let report = allocator.recover(0).unwrap();
    assert_eq!(report.waits_given_back, 1, "{how}: {report:?}");
    assert_eq!(report.records_freed, 1, "{how}: {report:?}");
    assert_eq!(
        (report.tombstoned, report.freed),
        (0, 0),
        "{how}: {report:?}"
    );
    assert_eq!(consumer.waiters(), (0, 0), "{how}: no count left");
    assert_eq!(
        waiting_of(&allocator, pid),
        None,
        "{how}: the record is freed"
    );
    assert!(
        allocator
            .peers()
            .unwrap()
            .iter()
            .all(|p| p.record.waiting == 0),
        "{how}: no record names a count"
    );

    // 5. 10⁴ sends (each followed by a receive) make no futex call at all.
    let (wakes, waits) = (dmxp::futex_wake_calls(), dmxp::futex_wait_calls());
    let depth = consumer.info().depth;
    for n in 0..SENDS {
        producer.send(n.to_le_bytes()).unwrap();
        assert!(consumer.receive().unwrap().is_some(), "message {n}");
    }
    let (wakes, waits) = (
        dmxp::futex_wake_calls() - wakes,
        dmxp::futex_wait_calls() - waits,
    );
    assert_eq!(consumer.info().depth, depth);
    assert_eq!(
        wakes, 0,
        "{how}: {SENDS} sends and receives after the repair made {wakes} futex_wake calls"
    );
    assert_eq!(waits, 0);
    assert_eq!(consumer.waiters(), (0, 0));
    eprintln!(
        "{how} {count:?} waiter (pid {pid}) killed while counted (stopped {stops} time(s) to \
         catch it counted): {probe_wakes} futex_wake for the probe before the repair; the \
         repair gave {} count back; then {SENDS} sends + receives, {wakes} futex_wake",
        report.waits_given_back
    );
}

#[test]
fn a_receiver_killed_in_receive_blocking_is_given_back_and_costs_no_wake() {
    a_killed_waiter_is_given_back_by_the_repair(
        "dead_blocking_recv",
        "child_blocked_receiver",
        "blocking",
        Count::NotEmpty,
    );
}

#[test]
fn a_receiver_killed_in_receive_timeout_is_given_back_and_costs_no_wake() {
    a_killed_waiter_is_given_back_by_the_repair(
        "dead_timeout_recv",
        "child_blocked_receiver",
        "timeout",
        Count::NotEmpty,
    );
}

#[test]
fn a_receiver_killed_in_receive_async_is_given_back_and_costs_no_wake() {
    if expected_wakeup() == AsyncWakeup::Polling {
        // A polling async wait never registers: there is no count to leave behind.
        eprintln!("skipped: async waits poll here (no io_uring futex wait), nothing registers");
        return;
    }
    a_killed_waiter_is_given_back_by_the_repair(
        "dead_async_recv",
        "child_blocked_receiver",
        "async",
        Count::NotEmpty,
    );
}

#[test]
fn a_sender_killed_in_send_blocking_on_a_full_ring_is_given_back_and_costs_no_wake() {
    a_killed_waiter_is_given_back_by_the_repair(
        "dead_blocking_send",
        "child_blocked_sender",
        "blocking",
        Count::NotFull,
    );
}

#[test]
fn a_sender_killed_in_send_timeout_on_a_full_ring_is_given_back_and_costs_no_wake() {
    a_killed_waiter_is_given_back_by_the_repair(
        "dead_timeout_send",
        "child_blocked_sender",
        "timeout",
        Count::NotFull,
    );
}
