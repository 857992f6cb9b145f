//! Runs the benchmark binary end to end in its counting mode (a fixed number of messages per
//! producer, so the runner checks that every message sent was received) and checks the report.
//! No timing is asserted: the machine may be loaded.

mod common;

use serde_json::Value;

#[test]
fn counted_run_covers_every_system_and_makes_no_futex_calls_when_spinning() {
    let dir = common::scratch_dir("dmxp-bench-test");
    let json = dir.join("report.json");
    let chart = dir.join("chart.svg");
    let stdout = common::stdout_of_success(
        common::bench()
            .args([
                "--messages",
                "3000",
                "--reps",
                "1",
                "--payloads",
                "32,960",
                "--no-progress",
            ])
            .arg("--json")
            .arg(&json)
            .arg("--chart")
            .arg(&chart),
    );
    assert!(
        stdout.contains("THROUGHPUT")
            && stdout.contains("ONE-WAY LATENCY")
            && stdout.contains("TARGETS")
    );

    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = report["throughput"].as_array().unwrap();
    // 3 shapes x 2 payloads x 6 systems, plus the floor once.
    assert_eq!(rows.len(), 3 * 2 * 6 + 1);
    for system in [
        "dmxp",
        "dmxp-batch",
        "dmxp-loan",
        "uds",
        "pipe",
        "arrayqueue",
    ] {
        for shape in ["one-to-one", "two-to-two", "four-channels"] {
            for payload in [32, 960] {
                let row = rows
                    .iter()
                    .find(|r| {
                        r["system"] == system && r["shape"] == shape && r["payload"] == payload
                    })
                    .unwrap_or_else(|| panic!("no row for {system} {shape} {payload}"));
                assert!(row["msgs_per_sec"].as_f64().unwrap() > 0.0);
                assert!(row["vs_arrayqueue"].as_f64().unwrap() > 0.0);
                if system.starts_with("dmxp") {
                    assert_eq!(row["futex_wake"], 0, "{system} {shape} {payload}");
                    assert_eq!(row["futex_wait"], 0, "{system} {shape} {payload}");
                }
            }
        }
    }
    assert!(rows
        .iter()
        .any(|r| r["system"] == "floor" && r["msgs_per_sec"].as_f64().unwrap() > 0.0));

    let latency = report["latency"].as_array().unwrap();
    assert_eq!(latency.len(), 8);
    for row in latency {
        let runs = row["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1);
        // 3000 round trips minus the 200 warm-up ones.
        assert_eq!(runs[0]["samples"], 2800, "{row}");
        let (p50, p99, p999) = (
            row["p50_ns"].as_f64().unwrap(),
            row["p99_ns"].as_f64().unwrap(),
            row["p999_ns"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{row}");
        if row["mode"] == "spin" && row["system"].as_str().unwrap().starts_with("dmxp") {
            assert_eq!(row["futex_wake"], 0);
            assert_eq!(row["futex_wait"], 0);
        }
    }
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 6);
    let futex = targets
        .iter()
        .find(|t| t["name"].as_str().unwrap().contains("futex"))
        .unwrap();
    assert_eq!(futex["met"], true);

    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Throughput") && svg.contains("dmxp-batch"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_fail_cleanly() {
    let output = common::bench()
        .args(["--payloads", "2000", "--no-progress"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("outside 8..=960"));
    let output = common::bench()
        .args(["--systems", "carrier-pigeon"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}
