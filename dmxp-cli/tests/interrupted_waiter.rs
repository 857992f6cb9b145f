//! `dmxp recv --follow` interrupted while it waits (issue #12; PROTOCOL.md §11.9): SIGINT or
//! SIGTERM makes it leave cleanly, so its wait count is back to 0 and its peer record is free
//! without any repair, and 10⁴ sends after it left make no `futex_wake`. The cases of waiters
//! killed with SIGKILL (given back by a repair) are in `dmxp/tests/leftover_waiters.rs`.
//!
//! While the follower waits, one send is shown to make a `futex_wake` (the count is real and
//! the counter sees it): the follower is stopped with SIGSTOP at a moment when it is counted
//! (a waiter leaves and re-enters the count at every wait slice), the probe is sent, and it is
//! let go on (SIGCONT) to receive it. No assertion depends on timing: every wait is a poll
//! with a generous hang guard.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dmxp::core::layout::peer_waiting;
use dmxp::{ChannelBuilder, SharedMemoryAllocator};

const CHANNEL: u32 = 0;
const SENDS: u64 = 10_000;
const HANG_GUARD: Duration = Duration::from_secs(30);

/// `dmxp recv --follow --raw` on the segment at `path`, killed and reaped when dropped.
struct Follower(Child);

impl Follower {
    fn spawn(path: &std::path::Path) -> Follower {
        let child = Command::new(env!("CARGO_BIN_EXE_dmxp"))
            .arg("recv")
            .arg("--file")
            .arg(path)
            .args(["--channel", &CHANNEL.to_string(), "--follow", "--raw"])
            .env_remove("DMXP_SEGMENT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Follower(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends `signal` (a name such as `INT`) with kill(1).
    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal}");
    }

    /// The state letter of `/proc/<pid>/stat` (`S` asleep, `T` stopped...).
    fn state(&self) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        rest.trim_start().chars().next().unwrap()
    }

    /// SIGSTOP, and waits (hang guard only) until it has stopped.
    fn stop(&self) {
        self.signal("STOP");
        let deadline = Instant::now() + HANG_GUARD;
        while self.state() != 'T' {
            assert!(Instant::now() < deadline, "the follower never stopped");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Panics with its output if it has exited (it should be following).
    fn check_alive(&mut self) {
        if let Some(status) = self.0.try_wait().unwrap() {
            let (stdout, stderr) = self.output();
            panic!("the follower exited ({status}):\nstdout:\n{stdout}\nstderr:\n{stderr}");
        }
    }

    /// Polls (hang guard only) until `done`; panics with `failure()` once the hang guard has
    /// passed, or with the follower's output if it exits first.
    fn wait_until(&mut self, mut done: impl FnMut() -> bool, failure: impl Fn() -> String) {
        let deadline = Instant::now() + HANG_GUARD;
        while !done() {
            self.check_alive();
            assert!(Instant::now() < deadline, "{}", failure());
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// What it wrote (once it has exited).
    fn output(&mut self) -> (String, String) {
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut out) = self.0.stdout.take() {
            out.read_to_string(&mut stdout).unwrap();
        }
        if let Some(mut err) = self.0.stderr.take() {
            err.read_to_string(&mut stderr).unwrap();
        }
        (stdout, stderr)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

#[test]
fn an_interrupted_follower_leaves_no_waiter_and_sends_make_no_wake() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment.dmxp");
    let builder = ChannelBuilder::new()
        .with_file(&path)
        .with_segment_size(2 << 20)
        .with_channel_id(CHANNEL)
        .with_capacity(8);
    // This process's handles register before any follower, so none of our registrations
    // (a sweep, PROTOCOL.md §11.10) can free a follower's record: only the follower may.
    let producer = builder.build_producer().unwrap();
    let consumer = builder.build_consumer().unwrap();
    let allocator = builder.attach_allocator().unwrap();
    let counted = |pid: u32| {
        consumer.waiters() == (1, 0) && waiting_of(&allocator, pid) == Some(peer_waiting::NOT_EMPTY)
    };

    for signal in ["INT", "TERM"] {
        let mut follower = Follower::spawn(&path);
        let pid = follower.pid();
        // Counted while it waits (hang guard only).
        follower.wait_until(
            || counted(pid),
            || {
                format!(
                    "{signal}: the follower was never counted: waiters {:?}, record {:?}",
                    consumer.waiters(),
                    waiting_of(&allocator, pid)
                )
            },
        );

        // The count is real: stopped while counted, one send makes one futex_wake.
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            follower.stop();
            if counted(pid) {
                break;
            }
            follower.signal("CONT");
            assert!(
                Instant::now() < deadline,
                "{signal}: never stopped while counted"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let wakes = dmxp::futex_wake_calls();
        let probe = format!("probe before SIG{signal}");
        producer.send(&probe).unwrap();
        assert_eq!(
            dmxp::futex_wake_calls() - wakes,
            1,
            "{signal}: a send to a counted waiter makes one futex_wake"
        );
        follower.signal("CONT");
        // It takes the probe and waits again (hang guard only).
        follower.wait_until(
            || consumer.info().depth == 0 && counted(pid),
            || format!("{signal}: the follower never took the probe and waited again"),
        );

        // Interrupted: it leaves by itself, cleanly (exit 130), taking its count and its
        // record with it. Nothing here repairs anything: the handles above never find the
        // channel stuck, and none registers after the follower.
        follower.signal(signal);
        let status = follower.0.wait().unwrap();
        let (stdout, stderr) = follower.output();
        assert_eq!(
            status.code(),
            Some(130),
            "SIG{signal}: {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert_eq!(
            stdout,
            format!("{probe}\n"),
            "SIG{signal}: it received the probe"
        );
        assert_eq!(consumer.waiters(), (0, 0), "SIG{signal}: no count left");
        assert_eq!(
            waiting_of(&allocator, pid),
            None,
            "SIG{signal}: its record is free"
        );
        assert_eq!(
            allocator.peers().unwrap().len(),
            2,
            "only this process's two records"
        );

        // 10⁴ sends, each followed by a receive: no futex call at all.
        let (wakes, waits) = (dmxp::futex_wake_calls(), dmxp::futex_wait_calls());
        for n in 0..SENDS {
            producer.send(n.to_le_bytes()).unwrap();
            assert!(consumer.receive().unwrap().is_some(), "message {n}");
        }
        let (wakes, waits) = (
            dmxp::futex_wake_calls() - wakes,
            dmxp::futex_wait_calls() - waits,
        );
        assert_eq!(
            (wakes, waits),
            (0, 0),
            "SIG{signal}: {SENDS} sends and receives after the follower left"
        );
        eprintln!(
            "SIG{signal}: the follower (pid {pid}) left with exit 130, count 0 and its record \
             free without any repair; {SENDS} sends + receives then made {wakes} futex_wake"
        );
    }
}
