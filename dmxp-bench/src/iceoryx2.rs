//! The `iceoryx2` system: runs of an external peer program (`--iceoryx2-peer PATH`, built
//! from `dmxp-bench/peers/iceoryx2`, outside the workspace), which pins its publisher to CPU 0
//! and its subscriber to CPU 1 and prints one JSON line per run:
//!
//! * `PATH throughput --payload N --seconds S` →
//!   `{"system":"iceoryx2","payload":N,"messages":M,"elapsed_ns":E,"msgs_per_sec":R,"checksum_ok":true}`
//! * `PATH latency --payload N --round-trips R` →
//!   `{"system":"iceoryx2","payload":N,"p50_ns":..,"p99_ns":..,"p999_ns":..}` (one-way).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::child::Res;
use crate::runner::{LatencySample, RunLength, ThroughputSample};
use crate::spec::Percentiles;

#[derive(Deserialize)]
struct ThroughputLine {
    system: String,
    payload: usize,
    messages: u64,
    #[serde(default)]
    elapsed_ns: u64,
    msgs_per_sec: f64,
    checksum_ok: bool,
}

#[derive(Deserialize)]
struct LatencyLine {
    system: String,
    payload: usize,
    p50_ns: f64,
    p99_ns: f64,
    p999_ns: f64,
}

/// Round trips of a latency run of the peer: `--messages` if given, else about one per
/// microsecond of the run's length (10,000 to 2,000,000, the most the runner's own pings keep).
#[must_use]
pub fn round_trips(length: &RunLength) -> u64 {
    length.messages.unwrap_or_else(|| {
        ((length.seconds * 1e6) as u64).clamp(10_000, crate::child::MAX_SAMPLES as u64)
    })
}

/// Runs the peer with `args`, at most `limit`, and returns the last line of its stdout that is
/// a JSON object.
fn run_peer(peer: &Path, args: &[String], limit: Duration) -> Res<String> {
    let mut child = Command::new(peer)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", peer.display()))?;
    // Read stdout as it comes, so a chatty peer never blocks on a full pipe.
    let reader = child.stdout.take().map(|mut stdout| {
        std::thread::spawn(move || {
            let mut out = String::new();
            use std::io::Read as _;
            let _ = stdout.read_to_string(&mut out);
            out
        })
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{} did not finish within {limit:?}", peer.display()).into());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let out = reader
        .map(|r| r.join().unwrap_or_default())
        .unwrap_or_default();
    if !status.success() {
        return Err(format!("{} {} failed: {status}", peer.display(), args.join(" ")).into());
    }
    out.lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .map(str::to_owned)
        .ok_or_else(|| format!("{} printed no JSON line", peer.display()).into())
}

/// One 1->1 throughput run of the peer.
pub fn throughput(peer: &Path, payload: usize, length: &RunLength) -> Res<ThroughputSample> {
    let args = vec![
        "throughput".to_owned(),
        "--payload".to_owned(),
        payload.to_string(),
        "--seconds".to_owned(),
        length.seconds.to_string(),
    ];
    let limit = Duration::from_secs_f64(length.seconds) + Duration::from_secs(120);
    let line = run_peer(peer, &args, limit)?;
    let parsed: ThroughputLine = serde_json::from_str(&line)
        .map_err(|e| format!("iceoryx2 peer: cannot read {line:?}: {e}"))?;
    if parsed.system != "iceoryx2" || parsed.payload != payload {
        return Err(format!("iceoryx2 peer answered for another run: {line}").into());
    }
    if !parsed.checksum_ok {
        return Err(format!("iceoryx2 peer: checksum mismatch: {line}").into());
    }
    if parsed.messages == 0 || parsed.msgs_per_sec.is_nan() || parsed.msgs_per_sec <= 0.0 {
        return Err(format!("iceoryx2 peer moved no message: {line}").into());
    }
    let _ = parsed.elapsed_ns;
    Ok(ThroughputSample {
        msgs_per_sec: parsed.msgs_per_sec,
        messages: parsed.messages,
        futex_wake: 0,
        futex_wait: 0,
        per_send_call: None,
        per_receive_call: None,
    })
}

/// One spin ping-pong run of the peer.
pub fn latency(peer: &Path, payload: usize, length: &RunLength) -> Res<LatencySample> {
    let trips = round_trips(length);
    let args = vec![
        "latency".to_owned(),
        "--payload".to_owned(),
        payload.to_string(),
        "--round-trips".to_owned(),
        trips.to_string(),
    ];
    let line = run_peer(peer, &args, Duration::from_secs(180))?;
    let parsed: LatencyLine = serde_json::from_str(&line)
        .map_err(|e| format!("iceoryx2 peer: cannot read {line:?}: {e}"))?;
    if parsed.system != "iceoryx2" || parsed.payload != payload {
        return Err(format!("iceoryx2 peer answered for another run: {line}").into());
    }
    if !(0.0 < parsed.p50_ns && parsed.p50_ns <= parsed.p99_ns && parsed.p99_ns <= parsed.p999_ns) {
        return Err(format!("iceoryx2 peer: percentiles out of order: {line}").into());
    }
    Ok(LatencySample {
        percentiles: Percentiles {
            p50: parsed.p50_ns,
            p99: parsed.p99_ns,
            p999: parsed.p999_ns,
            samples: trips,
        },
        futex_wake: 0,
        futex_wait: 0,
    })
}
