//! Bridge processes on loopback for the integration tests: start one, wait for its `ready`
//! line, read its counters, stop it with SIGTERM or kill it with SIGKILL.
//!
//! Every wait here is a hang guard, not a measurement: a test fails on a deadline only
//! when something never happens.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long anything may take before the test gives up on it (a loaded machine with a debug
/// build of Zenoh is slow, never this slow).
pub const HANG_GUARD: Duration = Duration::from_secs(120);

/// A running `dmxp-bridge` process.
pub struct Bridge {
    child: Child,
    lines: Receiver<String>,
    /// Its `ready` report.
    pub ready: Value,
}

impl Bridge {
    /// Starts a bridge with `args` (plus `--stats-interval-ms 100` unless given) and waits for
    /// its `ready` line.
    pub fn start<S: AsRef<str>>(args: &[S]) -> Bridge {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dmxp-bridge"));
        command.args(args.iter().map(AsRef::as_ref));
        if !args.iter().any(|a| a.as_ref() == "--stats-interval-ms") {
            command.args(["--stats-interval-ms", "100"]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn dmxp-bridge");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut bridge = Bridge {
            child,
            lines,
            ready: Value::Null,
        };
        bridge.ready = bridge.next_event("ready");
        bridge
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next report whose event is `event`, skipping others.
    fn next_event(&mut self, event: &str) -> Value {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => {
                    let status = self.child.try_wait();
                    panic!("no `{event}` line from the bridge ({e}); exit status {status:?}")
                }
            };
            let report: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("a report that is not JSON: {line}: {e}"));
            if report["event"] == event {
                return report;
            }
        }
    }

    /// Waits for a `stats` report that satisfies `done`, and returns it.
    pub fn wait_for_stats(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            assert!(
                Instant::now() < deadline,
                "the bridge's counters never showed {what}"
            );
            let report = self.next_event("stats");
            if done(&report) {
                return report;
            }
        }
    }

    /// Stops the bridge with SIGTERM and returns its `final` report; it must exit with 0.
    pub fn stop(mut self) -> Value {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let report = self.next_event("final");
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "the bridge exited with {exit}");
        report
    }

    /// Kills the bridge with SIGKILL: no `final` report, nothing cleaned up.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // A failed test must not leave a bridge behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A route's counters in a report, found by its local channel or key.
pub fn route<'a>(report: &'a Value, direction: &str) -> &'a Value {
    let routes = report["routes"].as_array().expect("routes");
    let mut matching = routes.iter().filter(|r| r["direction"] == direction);
    let found = matching
        .next()
        .unwrap_or_else(|| panic!("no {direction} route in {report}"));
    assert!(
        matching.next().is_none(),
        "more than one {direction} route in {report}"
    );
    found
}

/// A counter of the only route of `direction` in `report`.
pub fn counter(report: &Value, direction: &str, name: &str) -> u64 {
    route(report, direction)[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter `{name}` in {report}"))
}

/// A Zenoh endpoint on a loopback port that was free a moment ago.
pub fn free_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp/127.0.0.1:{}", listener.local_addr().unwrap().port())
}

/// A file-backed segment path in `dir`, as a bridge's `SEGMENT:CHANNEL` spec wants it.
pub fn segment(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// `file:PATH:CHANNEL`.
pub fn spec(path: &Path, channel: u32) -> String {
    format!("file:{}:{channel}", path.display())
}

/// A builder for the file segment at `path`, channel `channel`.
pub fn builder(path: &Path, channel: u32) -> dmxp::ChannelBuilder {
    dmxp::ChannelBuilder::new()
        .with_file(path)
        .with_segment_size(4 << 20)
        .with_channel_id(channel)
}

/// Sends with `message_type` and `flags`, waiting as long as the ring stays full (the
/// bridge drains it) up to the hang guard.
pub fn send_waiting(producer: &dmxp::Producer, payload: &[u8], message_type: u32, flags: u16) {
    let started = Instant::now();
    loop {
        match producer.send_with_timeout(payload, message_type, flags, Duration::from_secs(1)) {
            Ok(_) => return,
            Err(e) if e.kind() == dmxp::ErrorKind::Timeout => {
                assert!(
                    started.elapsed() < HANG_GUARD,
                    "the ring stayed full: nobody drains it"
                );
            }
            Err(e) => panic!("send: {e}"),
        }
    }
}

/// The payload of message `seq` of producer `producer`: its length cycles through 1..=max
/// and its bytes depend on both numbers, so that a wrong, torn or misplaced payload shows.
pub fn payload(producer: u32, seq: u32, max: usize) -> Vec<u8> {
    let len = 1 + (seq as usize * 7919 + producer as usize * 131) % max;
    let mut state = (u64::from(producer) << 32 | u64::from(seq)) ^ 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Message type carrying a producer and a sequence number (the payload may be one byte).
pub fn tag(producer: u32, seq: u32) -> u32 {
    assert!(producer < 256 && seq < 1 << 24);
    producer << 24 | seq
}

/// The inverse of [`tag`].
pub fn untag(message_type: u32) -> (u32, u32) {
    (message_type >> 24, message_type & 0xFF_FFFF)
}
