//! Runs `dmxp-bench large` end to end with a fixed, small number of messages per producer (so
//! the runner checks that every message sent was received, and the consumers check every
//! message's words) and checks the report. No timing is asserted: the machine may be loaded.

mod common;

use serde_json::Value;

#[test]
fn counted_large_run_covers_every_size_system_and_shape() {
    let dir = common::scratch_dir("dmxp-bench-large-test");
    let json = dir.join("large.json");
    let stdout = common::stdout_of_success(
        common::bench()
            .args(["large", "--messages", "40", "--reps", "1", "--no-progress"])
            .arg("--json")
            .arg(&json),
    );
    assert!(stdout.contains("LARGE MESSAGES") && stdout.contains("RATIOS"));

    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    // 3 sizes x (3 systems x 2 shapes + memcpy).
    assert_eq!(rows.len(), 3 * 7);
    for size in [4096, 65536, 262144] {
        for (system, shape) in [
            ("dmxp", "one-to-one"),
            ("dmxp", "two-to-two"),
            ("uds-stream", "one-to-one"),
            ("uds-stream", "two-to-two"),
            ("pipe", "one-to-one"),
            ("pipe", "two-to-two"),
            ("memcpy", "one-to-one"),
        ] {
            let row = rows
                .iter()
                .find(|r| r["size"] == size && r["carrier"] == system && r["shape"] == shape)
                .unwrap_or_else(|| panic!("no row for {system} {shape} {size}"));
            assert!(row["msgs_per_sec"].as_f64().unwrap() > 0.0, "{row}");
            if system == "dmxp" {
                assert_eq!(row["futex_wake"], 0, "{row}");
                assert_eq!(row["futex_wait"], 0, "{row}");
                assert!(row["vs_memcpy"].as_f64().unwrap() > 0.0, "{row}");
                assert!(row["vs_uds"].as_f64().unwrap() > 0.0, "{row}");
            }
        }
    }
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3);
    assert!(targets.iter().all(|t| t["measured"].is_number()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn large_bad_arguments_fail_cleanly() {
    let output = common::bench()
        .args(["large", "--sizes", "512", "--no-progress"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("outside 961..="));
    let output = common::bench()
        .args(["large", "--systems", "carrier-pigeon"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}
