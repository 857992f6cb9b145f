//! Runs `dmxp-bench async` end to end with a fixed number of round trips per run (the runner
//! checks that every ping was answered) and checks the report. No timing is asserted: the
//! machine may be loaded.

//!
//! The asyncio arm runs under `DMXP_BENCH_PYTHON`, else the interpreter of
//! `bindings/python/.venv` (which `scripts/test-python.sh` makes) if there is one, else
//! `python3`; where that cannot import the `dmxp` package the arm must be reported as skipped
//! and the other arms must still run.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The interpreter for the asyncio arm, and whether it can import the `dmxp` package.
fn python() -> (PathBuf, bool) {
    let venv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bindings/python/.venv/bin/python");
    let python = std::env::var_os("DMXP_BENCH_PYTHON")
        .map(PathBuf::from)
        .or_else(|| venv.exists().then_some(venv))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let importable = Command::new(&python)
        .args(["-c", "import dmxp; dmxp.Consumer.receive_async"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (python, importable)
}

#[test]
fn counted_async_run_covers_every_arm() {
    let dir = common::scratch_dir("dmxp-bench-async-test");
    let json = dir.join("async.json");
    let (python, importable) = python();
    let stdout = common::stdout_of_success(
        common::bench()
            .args([
                "async",
                "--messages",
                "1000",
                "--reps",
                "2",
                "--no-progress",
            ])
            .arg("--python")
            .arg(&python)
            .arg("--json")
            .arg(&json),
    );
    assert!(stdout.contains("ROUND TRIP"), "{stdout}");

    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let mut arms = vec!["dmxp-async", "dmxp-blocking", "uds-tokio"];
    if importable {
        arms.push("asyncio");
        assert_eq!(report["skipped"], Value::Array(vec![]), "{report}");
        assert!(
            report["python"].as_str().unwrap().contains("Python 3"),
            "{report}"
        );
    } else {
        eprintln!(
            "{} cannot import dmxp: the asyncio arm must be skipped",
            python.display()
        );
        assert_eq!(report["skipped"][0]["arm"], "asyncio", "{report}");
        assert!(stdout.contains("asyncio: SKIPPED"), "{stdout}");
    }
    assert_eq!(rows.len(), arms.len(), "{report}");
    for arm in arms {
        let row = rows
            .iter()
            .find(|r| r["arm"] == arm)
            .unwrap_or_else(|| panic!("no row for {arm}"));
        assert_eq!(row["payload"], 32, "{row}");
        let runs = row["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "{row}");
        for run in runs {
            // 1000 round trips, the first 200 of them a warm-up.
            assert_eq!(run["samples"], 800, "{row}");
            assert!(run["p50"].as_f64().unwrap() > 0.0, "{row}");
            assert!(run["p99"].as_f64() >= run["p50"].as_f64(), "{row}");
        }
        assert!(row["p50_vs_blocking"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["p50_vs_uds"].as_f64().unwrap() > 0.0, "{row}");
    }
    let of = |arm: &str| rows.iter().find(|r| r["arm"] == arm).unwrap();
    // The blocking path sleeps in futex(2); the async one never does (it waits through
    // io_uring, or polls where io_uring futex waits are unavailable).
    assert!(
        of("dmxp-blocking")["futex_wait_per_round_trip"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(of("dmxp-async")["futex_wait_per_round_trip"], 0.0);
    assert_eq!(of("dmxp-blocking")["io_uring_waits_per_round_trip"], 0.0);
    if importable {
        // The Python module counts no futex(2) waits (its asyncio path makes none).
        assert_eq!(of("asyncio")["futex_wait_per_round_trip"], Value::Null);
        assert!(of("asyncio")["futex_wake_per_round_trip"].as_f64().unwrap() > 0.0);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn asyncio_arm_without_dmxp_is_skipped_loudly() {
    let dir = common::scratch_dir("dmxp-bench-async-skip-test");
    let json = dir.join("async.json");
    let output = common::bench()
        .args(["async", "--messages", "500", "--reps", "1", "--no-progress"])
        .args(["--arms", "dmxp-blocking,asyncio"])
        .args(["--python", "/nonexistent/python3"])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.contains("SKIPPING THE asyncio ARM"), "{stderr}");
    assert!(stdout.contains("asyncio: SKIPPED"), "{stdout}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{report}");
    assert_eq!(rows[0]["arm"], "dmxp-blocking");
    assert_eq!(report["skipped"][0]["arm"], "asyncio");
    assert!(report["skipped"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/python3"));
    // Nothing else to run: that is an error, not an empty report.
    let alone = common::bench()
        .args([
            "async",
            "--messages",
            "500",
            "--no-progress",
            "--arms",
            "asyncio",
        ])
        .args(["--python", "/nonexistent/python3"])
        .output()
        .unwrap();
    assert_eq!(alone.status.code(), Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn async_bad_arguments_fail_cleanly() {
    let run = |args: &[&str]| {
        common::bench()
            .arg("async")
            .args(args)
            .arg("--no-progress")
            .output()
            .unwrap()
    };
    let output = run(&["--payload", "4"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("outside 8..=960"));
    let output = run(&["--messages", "100"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("warm-up"));
    assert_eq!(run(&["--arms", "carrier-pigeon"]).status.code(), Some(2));
}
