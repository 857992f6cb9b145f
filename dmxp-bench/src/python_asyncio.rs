//! The `asyncio` arm of `dmxp-bench async`: the same ping-pong as the `dmxp-async` arm (the
//! same segment, the same two channels of the same capacity, the same payload), but each end
//! is a Python process waiting from an asyncio event loop (`await consumer.receive_async()`,
//! `await producer.send_async(...)` of the `dmxp` package), running
//! `bindings/python/bench/asyncio_pingpong.py` (built into this binary and passed with `-c`)
//! under the interpreter given with `--python`.
//!
//! The Python ends do not touch the control block (Python has no atomic read-modify-write on
//! shared memory): each prints `ready` on its stdout once its handles are open, the parent
//! writes `go` to both stdins once both are, and the ping stops by itself after the run's
//! seconds (or round trips) counted from the go, as the Rust pings stop at the parent's stop
//! flag set that long after its go. The ping writes one CLOCK_MONOTONIC reading per round trip
//! to a file; the parent makes round-trip times of them and percentiles with the same code as
//! a Rust ping's ([`percentiles_of`], the first [`WARMUP`] dropped, at most [`MAX_SAMPLES`]).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::async_latency::{doubled, AsyncSample};
use crate::child::{percentiles_of, Res, MAX_SAMPLES, WARMUP};
use crate::control::SEGMENT_SIZE;
use crate::runner::{self, Placement, RunLength};

/// The Python side of both ends.
pub(crate) const SCRIPT: &str = include_str!("../../bindings/python/bench/asyncio_pingpong.py");

/// How long the Python ends may take to start (interpreter, `import dmxp`, open the handles).
const READY_LIMIT: Duration = Duration::from_secs(60);

/// What [`probe`] runs: imports `dmxp` and checks it is the package with the asyncio calls
/// (not, say, a directory named `dmxp` in the working directory, such as this repository's
/// Rust crate, which Python imports as an empty namespace package).
const PROBE: &str = r#"
import sys
import dmxp
if not hasattr(getattr(dmxp, "Consumer", None), "receive_async"):
    where = getattr(dmxp, "__file__", None) or list(getattr(dmxp, "__path__", []))
    sys.exit(f"the dmxp it imports ({where}) is not the Python package (no Consumer.receive_async)")
print("Python", sys.version.split()[0], "with", dmxp.__file__)
"#;

/// Whether `python` can import `dmxp`: its version and where the package lies, or why not.
pub(crate) fn probe(python: &Path) -> Result<String, String> {
    let output = Command::new(python)
        .args(["-c", PROBE])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Err(format!(
            "`{} -c 'import dmxp'` failed ({}): {}",
            python.display(),
            output.status,
            last.unwrap_or("no message").trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// What an end prints last (the fields the harness uses).
#[derive(Debug, Deserialize)]
struct EndResult {
    messages: u64,
    futex_wake: u64,
    io_uring_waits: u64,
    io_uring_wakeups: u64,
    async_wakeup: Option<String>,
}

/// Measures one run of the asyncio arm with messages of `payload` bytes.
pub(crate) fn measure(
    python: &Path,
    payload: usize,
    length: &RunLength,
    placement: &Placement,
) -> Res<AsyncSample> {
    let segment = runner::new_segment(2, length.capacity)?;
    let dir = runner::results_dir()?;
    let stamps = runner::out_path(&dir, 1).with_extension("stamps");
    let end = |role: &str, cpu: Option<usize>| {
        let mut args: Vec<OsString> = [
            "--role",
            role,
            "--segment",
            &segment.name,
            "--size",
            &SEGMENT_SIZE.to_string(),
            "--channel",
            "0",
            "--capacity",
            &length.capacity.to_string(),
            "--payload",
            &payload.to_string(),
            "--warmup",
            &WARMUP.to_string(),
            "--max-samples",
            &MAX_SAMPLES.to_string(),
        ]
        .map(OsString::from)
        .to_vec();
        if let Some(cpu) = cpu {
            args.extend(["--cpu".into(), cpu.to_string().into()]);
        }
        args
    };
    let mut ping = end("ping", placement.producer_cpu);
    ping.extend(["--stamps".into(), stamps.clone().into_os_string()]);
    match length.messages {
        Some(n) => ping.extend(["--messages".into(), n.to_string().into()]),
        None => ping.extend(["--seconds".into(), length.seconds.to_string().into()]),
    }
    let pong = end("pong", placement.consumer_cpu);
    let outcome = run_ends(python, &[ping, pong], length);
    let clock = std::fs::read(&stamps);
    let _ = std::fs::remove_file(&stamps);
    let results = outcome?;
    let (ping, pong) = (&results[0], &results[1]);
    if ping.messages != pong.messages {
        return Err(format!(
            "asyncio: {} round trips timed but {} answered",
            ping.messages, pong.messages
        )
        .into());
    }
    if length.messages.is_some_and(|n| n != ping.messages) {
        return Err(format!(
            "asyncio: {} round trips, not {:?}",
            ping.messages, length.messages
        )
        .into());
    }
    if ping.async_wakeup.as_deref() != Some("io_uring") && ping.messages > 0 {
        eprintln!(
            "dmxp-bench async: the Python ping's waits used {:?}, not io_uring",
            ping.async_wakeup
        );
    }
    let clock: Vec<i64> = clock?
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
        .collect();
    if clock.len() as u64 != ping.messages + 1 {
        return Err(format!(
            "asyncio: {} clock readings for {} round trips",
            clock.len(),
            ping.messages
        )
        .into());
    }
    // What a Rust ping's `Recorder` keeps: the time between consecutive readings, from the
    // round trip after the warm-up on.
    let mut samples = clock
        .windows(2)
        .skip(WARMUP as usize)
        .take(MAX_SAMPLES)
        .map(|w| u64::try_from(w[1] - w[0]))
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|_| "asyncio: the ping's clock went backwards")?;
    let one_way = percentiles_of(&mut samples);
    if one_way.samples == 0 {
        return Err("asyncio: no latency samples (run too short?)".into());
    }
    Ok(AsyncSample {
        round_trip: doubled(one_way),
        futex_wake: ping.futex_wake + pong.futex_wake,
        // The Python module counts no futex(2) waits; its asyncio path makes none.
        futex_wait: None,
        io_uring_waits: ping.io_uring_waits + pong.io_uring_waits,
        io_uring_wakeups: ping.io_uring_wakeups + pong.io_uring_wakeups,
    })
}

/// Starts one Python process per argument list, gives the go once all are ready, waits until
/// all have finished, and returns what each printed last, in order. On any failure the ends
/// still running are killed.
fn run_ends(python: &Path, ends: &[Vec<OsString>], length: &RunLength) -> Res<Vec<EndResult>> {
    let mut children: Vec<Child> = Vec::new();
    let outcome = drive(python, ends, length, &mut children);
    if outcome.is_err() {
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    outcome
}

fn drive(
    python: &Path,
    ends: &[Vec<OsString>],
    length: &RunLength,
    children: &mut Vec<Child>,
) -> Res<Vec<EndResult>> {
    let role = |k: usize| if k == 0 { "ping" } else { "pong" };
    // Every line an end prints, tagged with its index; `None` when its stdout closed.
    let (lines_tx, lines) = mpsc::channel::<(usize, Option<String>)>();
    for (k, args) in ends.iter().enumerate() {
        let mut child = Command::new(python)
            .arg("-c")
            .arg(SCRIPT)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        children.push(child);
        let tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((k, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((k, None));
        });
    }
    drop(lines_tx);
    let mut printed: Vec<Vec<String>> = vec![Vec::new(); ends.len()];
    // An end whose stdout closed has exited (or is about to): a failure ends the run at once.
    let closed = |k: usize, children: &mut Vec<Child>| -> Res<()> {
        let status = children[k].wait()?;
        if !status.success() {
            return Err(format!("the Python {} failed: {status}", role(k)).into());
        }
        Ok(())
    };
    let deadline = Instant::now() + READY_LIMIT;
    let mut ready = 0;
    while ready < ends.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok((_, Some(line))) if line == "ready" => ready += 1,
            Ok((k, Some(line))) => printed[k].push(line),
            Ok((k, None)) => {
                closed(k, children)?;
                return Err(format!("the Python {} exited before it was ready", role(k)).into());
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("the Python ends were not ready within {READY_LIMIT:?}").into())
            }
            Err(RecvTimeoutError::Disconnected) => return Err("lost the Python ends".into()),
        }
    }
    for child in children.iter_mut() {
        // Written, then closed: an end reads one line.
        let mut stdin = child.stdin.take().ok_or("no stdin pipe")?;
        stdin.write_all(b"go\n")?;
    }
    let limit = Duration::from_secs_f64(length.seconds) + Duration::from_secs(120);
    let deadline = Instant::now() + limit;
    let mut open = ends.len();
    while open > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok((k, Some(line))) => printed[k].push(line),
            Ok((k, None)) => {
                closed(k, children)?;
                open -= 1;
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("the Python ends did not finish within {limit:?}").into())
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    printed
        .iter()
        .enumerate()
        .map(|(k, lines)| {
            let last = lines
                .last()
                .ok_or_else(|| format!("the Python {} printed no result", role(k)))?;
            serde_json::from_str(last).map_err(|e| {
                format!(
                    "the Python {} printed {last:?}, not its result: {e}",
                    role(k)
                )
                .into()
            })
        })
        .collect()
}
