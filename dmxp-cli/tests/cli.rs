//! Runs the `dmxp` binary against real segments: POSIX shm objects with names unique to each
//! test (removed when the test ends), and file segments in temporary directories.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

const HEADER_SIZE: u64 = 98_432;
const PEER_TABLE_SIZE: u64 = 16_384;

fn entry(id: u64) -> u64 {
    128 + id * 384
}

/// The binary, with no `DMXP_SEGMENT` from the environment the tests run in.
fn dmxp() -> Command {
    let mut cmd = Command::cargo_bin("dmxp").unwrap();
    cmd.env_remove("DMXP_SEGMENT");
    cmd
}

/// A shm segment name unique to this test run, unlinked on drop.
struct Shm(String);

impl Shm {
    fn new(tag: &str) -> Shm {
        static N: AtomicUsize = AtomicUsize::new(0);
        Shm(format!(
            "/dmxp_cli_test_{}_{tag}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn args(&self) -> [&str; 2] {
        ["--segment", &self.0]
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        let _ = dmxp::unlink_segment(&self.0);
    }
}

/// A file segment path in a fresh temporary directory.
struct FileSeg {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl FileSeg {
    fn new() -> FileSeg {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment.dmxp");
        FileSeg { dir, path }
    }

    fn args(&self) -> [&str; 2] {
        ["--file", self.path.to_str().unwrap()]
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.assert().success().get_output().stdout.clone();
    String::from_utf8(out).unwrap()
}

fn create(seg: [&str; 2], channel: u32, capacity: u64) {
    dmxp()
        .arg("create")
        .args(seg)
        .args(["--channel", &channel.to_string()])
        .args(["--capacity", &capacity.to_string()])
        .args(["--size", "1M"])
        .assert()
        .success();
}

/// `dmxp send --channel CHANNEL TEXT`, which must succeed.
fn send(seg: [&str; 2], channel: u32, text: &str) {
    dmxp()
        .arg("send")
        .args(seg)
        .args(["--channel", &channel.to_string(), text])
        .assert()
        .success();
}

fn inspect_json(seg: [&str; 2]) -> (Value, i32) {
    let out = dmxp()
        .arg("inspect")
        .args(seg)
        .arg("--json")
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap();
    (json, out.status.code().unwrap())
}

fn channel(report: &Value, id: u64) -> &Value {
    report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("channel {id} not in {report}"))
}

/// The whitespace-separated cells of the table row whose first cell is `first`.
fn row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first} in\n{text}"))
}

fn poke_u64(path: &Path, offset: u64, value: u64) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&value.to_le_bytes(), offset).unwrap();
}

fn poke_u32(path: &Path, offset: u64, value: u32) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&value.to_le_bytes(), offset).unwrap();
}

#[test]
fn inspect_fresh_shm_segment_table_and_json() {
    let shm = Shm::new("inspect");
    create(shm.args(), 4, 8);
    create(shm.args(), 9, 16);
    dmxp()
        .arg("send")
        .args(shm.args())
        .args(["--channel", "4", "a", "b", "c"])
        .assert()
        .success()
        .stdout(predicate::str::contains("sent 3 messages"));

    let text = run_ok(dmxp().arg("inspect").args(shm.args()));
    assert!(text.contains("validation: ok"), "{text}");
    assert!(text.contains("0x444d58505f4d454d (DMXP_MEM)"), "{text}");
    assert_eq!(row(&text, "channel_count"), ["channel_count", "2"]);
    let heading = row(&text, "ID");
    let ch4 = row(&text, "4");
    let cell = |name: &str| ch4[heading.iter().position(|h| *h == name).unwrap()];
    assert_eq!(
        (
            cell("STATUS"),
            cell("CAPACITY"),
            cell("HEAD"),
            cell("TAIL"),
            cell("DEPTH")
        ),
        ("ok", "8", "0", "3", "3")
    );
    assert_eq!(cell("BAND_OFFSET"), HEADER_SIZE.to_string());
    assert_eq!(
        (cell("NOT_EMPTY_WAITERS"), cell("NOT_FULL_WAITERS")),
        ("0", "0")
    );

    let (report, code) = inspect_json(shm.args());
    assert_eq!(code, 0);
    assert_eq!(report["valid"], true);
    assert_eq!(report["problems"], serde_json::json!([]));
    assert_eq!(report["source"]["kind"], "shm");
    assert_eq!(report["source"]["name"], shm.0.as_str());
    assert_eq!(report["size"], 1 << 20);
    assert_eq!(report["header"]["magic"], "0x444d58505f4d454d");
    assert_eq!(report["header"]["version"], 1);
    assert_eq!(report["header"]["max_channels"], 256);
    assert_eq!(report["header"]["channel_count"], 2);
    assert_eq!(report["header"]["segment_size"], 1 << 20);
    // Two bands carved (8 and 16 slots of 1088 bytes), then the peer table (256 records of
    // 64 bytes) when `dmxp send`'s producer registered.
    let table = HEADER_SIZE + 24 * 1088;
    assert_eq!(report["header"]["peer_table_offset"], table);
    assert_eq!(report["header"]["band_cursor"], table + PEER_TABLE_SIZE);
    // The sender has exited and freed its record.
    assert_eq!(report["peer_table"], "ok");
    assert_eq!(report["peers"], serde_json::json!([]));
    assert!(text.contains(&format!("peers: none registered (peer table at {table})")));
    let ids: Vec<_> = report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [4, 9]);
    let c4 = channel(&report, 4);
    assert_eq!(c4["status"], "ok");
    assert_eq!(c4["state"], "ready");
    assert_eq!(c4["capacity"], 8);
    assert_eq!(
        (c4["head"].as_u64(), c4["tail"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(c4["depth"], 3);
    assert_eq!(
        c4["peers"],
        serde_json::json!({"producers": 0, "consumers": 0, "dead": 0})
    );
    assert_eq!(c4["band_offset"], HEADER_SIZE);
    assert_eq!(c4["band_len"], 8 * 1088);
    assert!(c4["creator_pid"].as_u64().unwrap() > 0);
    let c9 = channel(&report, 9);
    assert_eq!(c9["band_offset"], HEADER_SIZE + 8 * 1088);
    assert_eq!(c9["depth"], 0);
}

#[test]
fn inspect_corrupt_segment_lists_every_problem() {
    let seg = FileSeg::new();
    create(seg.args(), 4, 8);
    create(seg.args(), 5, 8);
    poke_u32(&seg.path, 8, 2); // version
    poke_u64(&seg.path, entry(4) + 8, 3); // capacity 3
    poke_u64(&seg.path, entry(5) + 16, 1 << 20); // band starts at the end of the segment

    let assert = dmxp()
        .arg("inspect")
        .args(seg.args())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("invalid: 3 problems"));
    let out = assert.get_output();
    let text = String::from_utf8_lossy(&out.stdout);
    let (_, validation) = text
        .split_once("validation: FAILED, 3 problems")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(row(validation, "FIELD"), ["FIELD", "CHANNEL", "PROBLEM"]);
    assert_eq!(row(validation, "version")[0..2], ["version", "-"]);
    assert_eq!(row(validation, "capacity")[0..2], ["capacity", "4"]);
    assert_eq!(row(validation, "band_offset")[0..2], ["band_offset", "5"]);
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);

    let (report, code) = inspect_json(seg.args());
    assert_eq!(code, 1);
    assert_eq!(report["valid"], false);
    let problems: Vec<_> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["field"].as_str().unwrap(), p["channel"].as_u64()))
        .collect();
    assert_eq!(
        problems,
        [
            ("version", None),
            ("capacity", Some(4)),
            ("band_offset", Some(5))
        ]
    );
    assert!(report["problems"][1]["message"]
        .as_str()
        .unwrap()
        .contains("capacity 3 is not a power of two"));
    assert_eq!(channel(&report, 4)["status"], "corrupt");
    assert_eq!(channel(&report, 5)["status"], "corrupt");
    assert_eq!(channel(&report, 5)["depth"], Value::Null);
}

#[test]
fn inspect_reports_header_fields_and_overlapping_bands() {
    let seg = FileSeg::new();
    create(seg.args(), 4, 8);
    create(seg.args(), 5, 8);
    poke_u32(&seg.path, 8, 2); // version
    poke_u32(&seg.path, 12, 7); // max_channels
    poke_u64(&seg.path, entry(5) + 16, HEADER_SIZE); // channel 5's band on channel 4's
    poke_u32(&seg.path, entry(6) + 24, 9); // an unknown state word on an unused entry

    let (report, code) = inspect_json(seg.args());
    assert_eq!(code, 1);
    let problems: Vec<_> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["field"].as_str().unwrap(), p["channel"].as_u64()))
        .collect();
    assert_eq!(
        problems,
        [
            ("version", None),
            ("max_channels", None),
            ("state", Some(6)),
            ("band_offset", Some(5)),
        ]
    );
    assert_eq!(channel(&report, 4)["status"], "ok");
    assert_eq!(channel(&report, 5)["status"], "corrupt");
    assert_eq!(channel(&report, 6)["state"], "unknown(9)");
}

#[test]
fn inspect_of_a_missing_segment_fails_with_one_line() {
    let shm = Shm::new("missing");
    dmxp()
        .arg("inspect")
        .args(shm.args())
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains(format!(
            "{} does not exist",
            shm.0
        )))
        .stderr(predicate::function(|s: &str| s.lines().count() == 1));
}

#[test]
fn create_send_recv_round_trip_with_json_metadata() {
    let seg = FileSeg::new();
    let out = run_ok(
        dmxp()
            .arg("create")
            .args(seg.args())
            .args([
                "--channel",
                "4",
                "--capacity",
                "16",
                "--size",
                "1M",
                "--mode",
                "0640",
            ])
            .arg("--json"),
    );
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["segment_created"], true);
    assert_eq!(created["channel_created"], true);
    assert_eq!(created["capacity"], 16);
    let mode = std::fs::metadata(&seg.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    // Wider than the default 0600: attaching needs the mode asked for (PROTOCOL.md §3.4).
    dmxp()
        .arg("send")
        .args(seg.args())
        .args(["--channel", "4", "refused"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("owned by uid").and(predicate::str::contains(
                "with mode 0640, which grants more than the 0600 asked for",
            )),
        );
    let seg_args = [seg.args()[0], seg.args()[1], "--mode", "0640"];

    let sent = run_ok(
        dmxp()
            .arg("send")
            .args(seg_args)
            .args([
                "--channel",
                "4",
                "--type",
                "7",
                "--flags",
                "0x0100",
                "--json",
            ])
            .args(["hello", "wörld"]),
    );
    let sent: Value = serde_json::from_str(&sent).unwrap();
    assert_eq!(sent["sent"], 2);
    assert_eq!(sent["first_message_id"], 0);
    assert_eq!(sent["last_message_id"], 1);

    let binary = seg.dir.path().join("blob");
    std::fs::write(&binary, [0u8, 0xff, 0x10, b'x']).unwrap();
    dmxp()
        .arg("send")
        .args(seg_args)
        .args(["--channel", "4", "--from-file", binary.to_str().unwrap()])
        .assert()
        .success();
    dmxp()
        .arg("send")
        .args(seg_args)
        .args(["--channel", "4", "--stdin"])
        .write_stdin("line one\r\nline two\n")
        .assert()
        .success()
        .stdout(predicate::str::contains("sent 2 messages"));

    let out = run_ok(dmxp().arg("recv").args(seg_args).args([
        "--channel",
        "4",
        "--count",
        "3",
        "--json",
    ]));
    let messages: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(messages.len(), 3);
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m["message_id"], i as u64);
        assert_eq!(m["channel_id"], 4);
        assert_eq!(m["sender_runtime"], 1);
        assert_eq!(m["sender_runtime_name"], "rust");
        assert!(m["sender_pid"].as_u64().unwrap() > 0);
        assert!(m["timestamp_ns"].as_u64().unwrap() > 0);
    }
    assert_eq!(messages[0]["message_type"], 7);
    assert_eq!(messages[0]["flags"], 0x0100);
    assert_eq!(messages[0]["payload_encoding"], "utf8");
    assert_eq!(messages[0]["payload"], "hello");
    assert_eq!(messages[0]["payload_len"], 5);
    assert_eq!(messages[1]["payload"], "wörld");
    assert_eq!(messages[1]["payload_len"], "wörld".len());
    assert_eq!(messages[2]["message_type"], 0);
    assert_eq!(messages[2]["flags"], 0);
    assert_eq!(messages[2]["payload_encoding"], "base64");
    assert_eq!(messages[2]["payload"], "AP8QeA==");
    assert_eq!(messages[2]["payload_len"], 4);

    // What is left (the two stdin lines), raw, by draining.
    dmxp()
        .arg("recv")
        .args(seg_args)
        .args(["--channel", "4", "--raw"])
        .assert()
        .success()
        .stdout("line one\nline two\n");
    let (report, _) = inspect_json(seg.args());
    assert_eq!(channel(&report, 4)["head"], 5);
    assert_eq!(channel(&report, 4)["depth"], 0);
}

#[test]
fn recv_table_shows_metadata_columns() {
    let shm = Shm::new("table");
    create(shm.args(), 2, 4);
    dmxp()
        .arg("send")
        .args(shm.args())
        .args(["--channel", "2", "--type", "0x2a", "hi there"])
        .assert()
        .success();
    let text = run_ok(dmxp().arg("recv").args(shm.args()).args(["--channel", "2"]));
    let heading = row(&text, "MESSAGE_ID");
    assert_eq!(
        heading,
        [
            "MESSAGE_ID",
            "TYPE",
            "FLAGS",
            "SENDER_PID",
            "RUNTIME",
            "LEN",
            "PAYLOAD"
        ]
    );
    let cells = row(&text, "0");
    assert_eq!(cells[1..3], ["42", "0x0000"]);
    assert_eq!(cells[4..6], ["rust", "8"]);
    assert_eq!(cells[6..], ["\"hi", "there\""]);
}

#[test]
fn recv_count_times_out_on_an_empty_channel() {
    let shm = Shm::new("timeout");
    create(shm.args(), 1, 4);
    dmxp()
        .arg("recv")
        .args(shm.args())
        .args([
            "--channel",
            "1",
            "--count",
            "2",
            "--timeout-ms",
            "200",
            "--json",
        ])
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains(
            "timed out: received 0 of 2 messages",
        ));

    // One message there, two asked for: the one is printed, then the timeout.
    send(shm.args(), 1, "only");
    dmxp()
        .arg("recv")
        .args(shm.args())
        .args([
            "--channel",
            "1",
            "--count",
            "2",
            "--timeout-ms",
            "200",
            "--raw",
        ])
        .assert()
        .code(1)
        .stdout("only\n")
        .stderr(predicate::str::contains("received 1 of 2"));

    // Draining an empty channel is not an error.
    dmxp()
        .arg("recv")
        .args(shm.args())
        .args(["--channel", "1", "--json"])
        .assert()
        .success()
        .stdout("");
}

#[test]
fn send_failures_exit_1() {
    let seg = FileSeg::new();
    create(seg.args(), 3, 2);
    let big = "x".repeat(961);
    dmxp()
        .arg("send")
        .args(seg.args())
        .args(["--channel", "3", "ok", &big])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("961 bytes").and(predicate::str::contains("nothing sent")),
        );
    dmxp()
        .arg("send")
        .args(seg.args())
        .args(["--channel", "8", "x"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("channel 8 does not exist"));
    // Capacity 2: the third message finds the ring full.
    dmxp()
        .arg("send")
        .args(seg.args())
        .args(["--channel", "3", "--timeout-ms", "0", "a", "b", "c"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("full").and(predicate::str::contains("after sending 2")));
    let (report, _) = inspect_json(seg.args());
    assert_eq!(channel(&report, 3)["tail"], 2);
}

#[test]
fn create_existing_channel() {
    let shm = Shm::new("exists");
    create(shm.args(), 0, 8);
    dmxp()
        .arg("create")
        .args(shm.args())
        .args(["--channel", "0", "--capacity", "32"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "channel 0 already exists with capacity 8",
        ));
    dmxp()
        .arg("create")
        .args(shm.args())
        .args(["--channel", "0", "--capacity", "32", "--exist-ok"])
        .assert()
        .success()
        .stdout("exists: channel 0 (capacity 8)\n");
}

#[test]
fn rm_removes_a_segment() {
    let shm = Shm::new("rm");
    create(shm.args(), 0, 4);
    dmxp()
        .arg("rm")
        .args(shm.args())
        .assert()
        .success()
        .stdout(format!("removed shm segment {}\n", shm.0));
    dmxp().arg("inspect").args(shm.args()).assert().code(1);
    dmxp()
        .arg("rm")
        .args(shm.args())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("does not exist"));

    // A file that is not a segment is left alone unless forced.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, "not a segment").unwrap();
    let other_arg = other.to_str().unwrap();
    dmxp()
        .args(["rm", "--file", other_arg])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("does not hold a DMXP segment"));
    assert!(other.exists());
    dmxp()
        .args(["rm", "--force", "--file", other_arg])
        .assert()
        .success();
    assert!(!other.exists());
}

#[test]
fn usage_errors_exit_2() {
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["create", "--channel", "4"],
        &["create", "--channel", "4", "--capacity", "3"],
        &["create", "--channel", "256", "--capacity", "4"],
        &[
            "create",
            "--channel",
            "1",
            "--capacity",
            "4",
            "--mode",
            "999",
        ],
        &["inspect", "--segment", "/x", "--file", "/tmp/x"],
        &["send", "--channel", "1"],
        &["send", "--channel", "1", "--flags", "0x0001", "m"],
        &["send", "--channel", "1", "--lines", "m"],
        &["send", "--channel", "1", "--lines", "--stdin"],
        &["recv", "--channel", "1", "--json", "--raw"],
        &["watch", "--interval-ms", "0"],
        &["watch", "--once", "--count", "2"],
        &["clean", "--remove"],
        &["completions"],
        &["completions", "tcsh"],
        &["man", "frobnicate"],
        &["bench", "--quick"],
    ];
    for args in cases {
        dmxp()
            .args(*args)
            .assert()
            .code(2)
            .stderr(predicate::str::is_empty().not());
    }
}

#[test]
fn watch_count_2_prints_two_refreshes() {
    let seg = FileSeg::new();
    create(seg.args(), 6, 8);
    dmxp()
        .arg("send")
        .args(seg.args())
        .args(["--channel", "6", "1", "2", "3"])
        .assert()
        .success();
    let text =
        run_ok(
            dmxp()
                .arg("watch")
                .args(seg.args())
                .args(["--count", "2", "--interval-ms", "50"]),
        );
    assert!(
        !text.contains('\x1b'),
        "no escape codes when not a terminal"
    );
    let frames: Vec<&str> = text.split("refresh ").skip(1).collect();
    assert_eq!(frames.len(), 2, "{text}");
    for (n, frame) in frames.iter().enumerate() {
        assert!(frame.starts_with(&(n + 1).to_string()));
        let heading = row(frame, "ID");
        let cells = row(frame, "6");
        let cell = |name: &str| cells[heading.iter().position(|h| *h == name).unwrap()];
        assert_eq!(
            (cell("TAIL"), cell("DEPTH"), cell("CAPACITY")),
            ("3", "3", "8")
        );
        for rate in [cell("SEND/S"), cell("RECV/S")] {
            if n == 0 {
                assert_eq!(rate, "-", "no rate before a second read");
            } else {
                assert_eq!(rate.parse::<f64>().unwrap(), 0.0);
            }
        }
    }

    let out = run_ok(dmxp().arg("watch").args(seg.args()).args([
        "--count",
        "2",
        "--interval-ms",
        "50",
        "--json",
    ]));
    let frames: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0]["refresh"], 1);
    assert_eq!(frames[0]["channels"][0]["send_per_s"], Value::Null);
    assert_eq!(frames[0]["channels"][0]["recv_per_s"], Value::Null);
    assert_eq!(frames[1]["channels"][0]["send_per_s"], 0.0);
    assert_eq!(frames[1]["channels"][0]["recv_per_s"], 0.0);
    assert_eq!(frames[1]["peers"], serde_json::json!([]));
    assert_eq!(frames[1]["channels"][0]["tail"], 3);
    assert_eq!(frames[1]["valid"], true);
}

#[test]
fn clean_lists_and_removes_only_dmxp_segments() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.seg");
    let b = dir.path().join("b.seg");
    let plain = dir.path().join("plain.txt");
    for path in [&a, &b] {
        create(["--file", path.to_str().unwrap()], 0, 4);
    }
    std::fs::write(&plain, vec![0u8; 200]).unwrap();
    poke_u64(&b, entry(0) + 8, 5); // b is corrupt but still a DMXP segment
    let dir_arg = dir.path().to_str().unwrap();

    let out = run_ok(dmxp().args(["clean", "--dir", dir_arg, "--json"]));
    let listing: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listing["liveness_known"], true);
    let names: Vec<_> = listing["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["valid"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            (a.display().to_string(), true),
            (b.display().to_string(), false)
        ]
    );
    // The creator (a finished `dmxp create`) is gone and nobody registered: stale. The
    // corrupt one still validates its header, so its liveness is known too.
    for segment in listing["segments"].as_array().unwrap() {
        assert_eq!(segment["creator"], "gone");
        assert_eq!(segment["stale"], true);
        assert_eq!(segment["state"], "stale");
        assert_eq!(segment["live_peers"], 0);
    }
    assert!(a.exists() && b.exists(), "listing removes nothing");

    run_ok(dmxp().args(["clean", "--dir", dir_arg, "--all", "--remove"]));
    assert!(!a.exists() && !b.exists());
    assert!(plain.exists(), "a file without the magic is never removed");
}

#[test]
fn clean_removes_shm_segments_by_prefix() {
    let shm = Shm::new("clean");
    create(shm.args(), 0, 4);
    let text = run_ok(dmxp().args(["clean", "--prefix", &shm.0]));
    assert_eq!(row(&text, &shm.0)[1], (1u64 << 20).to_string());
    assert!(text.contains("only registered peers are seen"));
    let out = run_ok(dmxp().args(["clean", "--prefix", &shm.0, "--remove", "--json"]));
    let listing: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listing["segments"][0]["name"], shm.0.as_str());
    assert_eq!(listing["segments"][0]["removed"], true);
    dmxp().arg("inspect").args(shm.args()).assert().code(1);
}

// ---------------------------------------------------------------- peers, clean --stale, recover

fn read_u64(path: &Path, offset: u64) -> u64 {
    let file = std::fs::File::open(path).unwrap();
    let mut bytes = [0u8; 8];
    file.read_exact_at(&mut bytes, offset).unwrap();
    u64::from_le_bytes(bytes)
}

fn shm_path(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(name.trim_start_matches('/'))
}

/// `dmxp recv --follow` in the background: a registered consumer of `channel` until killed.
struct Follower(std::process::Child);

impl Follower {
    fn spawn(seg: [&str; 2], channel: u32) -> Follower {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_dmxp"))
            .arg("recv")
            .args(seg)
            .args(["--channel", &channel.to_string(), "--follow", "--raw"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let follower = Follower(child);
        // Registered once inspect shows its record (a hang guard, not a timing assertion).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !inspect_json(seg).0["peers"]
            .as_array()
            .is_some_and(|peers| peers.iter().any(|p| p["pid"] == follower.pid()))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the follower never registered"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        follower
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL, and reaped: its record stays, its pid is dead.
    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pid of a process that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Writes peer record `index` of the table at `table`: as if a process `pid` had registered
/// with `role` (1 producer, 2 consumer) on `channel` and died with intent `(position, 1)`.
fn poke_record(
    path: &Path,
    table: u64,
    index: u64,
    pid: u32,
    role: u16,
    channel: u32,
    position: u64,
) {
    let at = table + 64 * index;
    let mut record = [0u8; 64];
    record[0..4].copy_from_slice(&pid.to_le_bytes());
    record[4..6].copy_from_slice(&1u16.to_le_bytes()); // runtime: rust
    record[6..8].copy_from_slice(&role.to_le_bytes());
    record[16..20].copy_from_slice(&channel.to_le_bytes());
    record[20..24].copy_from_slice(&1u32.to_le_bytes());
    record[24..32].copy_from_slice(&position.to_le_bytes());
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&record, at).unwrap();
}

#[test]
fn inspect_shows_live_and_dead_peers() {
    let shm = Shm::new("peers");
    create(shm.args(), 4, 8);
    let (report, _) = inspect_json(shm.args());
    assert_eq!(report["peer_table"], "none");
    assert_eq!(report["header"]["peer_table_offset"], 0);
    let text = run_ok(dmxp().arg("inspect").args(shm.args()));
    assert!(text.contains("peers: none (no peer table yet)"), "{text}");

    let follower = Follower::spawn(shm.args(), 4);
    let pid = follower.pid();
    let (report, code) = inspect_json(shm.args());
    assert_eq!(code, 0);
    assert_eq!(report["peer_table"], "ok");
    assert!(report["header"]["peer_table_offset"].as_u64().unwrap() >= HEADER_SIZE);
    let peers = report["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{report}");
    let peer = &peers[0];
    assert_eq!(peer["index"], 0);
    assert_eq!(peer["pid"], pid);
    assert_eq!(peer["runtime"], 1);
    assert_eq!(peer["runtime_name"], "rust");
    assert_eq!(peer["role"], "consumer");
    assert_eq!(peer["channel"], 4);
    assert_eq!(peer["alive"], true);
    assert_eq!(
        peer["intent"],
        Value::Null,
        "an idle consumer claims nothing"
    );
    assert_eq!(
        peer["start_time"].as_u64(),
        dmxp::process_start_time(pid),
        "the start-time guard"
    );
    assert_eq!(
        channel(&report, 4)["peers"],
        serde_json::json!({"producers": 0, "consumers": 1, "dead": 0})
    );

    let text = run_ok(dmxp().arg("inspect").args(shm.args()));
    let heading = row(&text, "ID");
    let ch4 = row(&text, "4");
    assert_eq!(
        ch4[heading.iter().position(|h| *h == "PEERS").unwrap()],
        "0/1"
    );
    assert!(text.contains("peers: 1 registered, 0 dead"), "{text}");
    assert_eq!(
        row(&text, "INDEX"),
        [
            "INDEX",
            "PID",
            "RUNTIME",
            "ROLE",
            "CHANNEL",
            "ALIVE",
            "START_TIME",
            "INTENT",
            "WAITING"
        ]
    );
    let record = row(&text, "0");
    assert_eq!(record[1], pid.to_string());
    assert_eq!(record[2..6], ["rust", "consumer", "4", "yes"]);
    assert_eq!(record[7], "-");

    // Killed: the record stays behind, judged dead.
    follower.kill();
    let (report, code) = inspect_json(shm.args());
    assert_eq!(code, 0, "a dead peer is not a validation problem");
    assert_eq!(report["peers"][0]["pid"], pid);
    assert_eq!(report["peers"][0]["alive"], false);
    assert_eq!(
        channel(&report, 4)["peers"],
        serde_json::json!({"producers": 0, "consumers": 0, "dead": 1})
    );
    let text = run_ok(dmxp().arg("inspect").args(shm.args()));
    assert!(text.contains("peers: 1 registered, 1 dead"), "{text}");
    assert_eq!(row(&text, "0")[5], "no");
}

/// Waits (a hang guard, not a timing assertion) until `inspect --json` satisfies `done`.
fn inspect_until(seg: [&str; 2], what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (report, _) = inspect_json(seg);
        if done(&report) {
            return report;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {report}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn waiting_consumer(report: &Value, pid: u32) -> bool {
    let waiters = channel(report, 4)["not_empty_waiters"] == 1;
    waiters
        && report["peers"].as_array().is_some_and(|p| {
            p.iter()
                .any(|p| p["pid"] == pid && p["waiting"] == "message")
        })
}

/// Stops (SIGSTOP) the follower `pid` at a moment it is counted as a waiting consumer. A
/// waiting receive unregisters for an instant at the end of every 100 ms slice, so a signal
/// sent after seeing it counted could land in that instant: stop it, look again, and resume
/// and retry if it was caught between two slices.
fn stop_while_counted(seg: [&str; 2], pid: u32) {
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {name} {pid}");
    };
    for _ in 0..100 {
        inspect_until(seg, "the follower never waited", |r| {
            waiting_consumer(r, pid)
        });
        signal("-STOP");
        // `kill` returns before the stop takes effect: wait until /proc says "T" (stopped).
        let stopped = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    stat.rsplit_once(") ")
                        .map(|(_, rest)| rest.starts_with('T'))
                })
                .unwrap_or(false)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !stopped() {
            assert!(std::time::Instant::now() < deadline, "{pid} never stopped");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (report, _) = inspect_json(seg);
        if waiting_consumer(&report, pid) {
            return;
        }
        signal("-CONT");
    }
    panic!("follower {pid} was never stopped while counted as waiting");
}

#[test]
fn a_waiter_killed_or_interrupted_leaves_no_wait_count_behind() {
    let shm = Shm::new("dead_waiter");
    create(shm.args(), 4, 8);

    // Killed while blocked: its count stays until the next peer registers and sweeps.
    let follower = Follower::spawn(shm.args(), 4);
    let pid = follower.pid();
    stop_while_counted(shm.args(), pid);
    follower.kill();
    let (report, _) = inspect_json(shm.args());
    assert_eq!(channel(&report, 4)["not_empty_waiters"], 1, "{report}");
    send(shm.args(), 4, "after the kill");
    let (report, _) = inspect_json(shm.args());
    assert_eq!(
        channel(&report, 4)["not_empty_waiters"],
        0,
        "the sender's registration gives the dead waiter's count back: {report}"
    );
    assert_eq!(report["peers"], serde_json::json!([]), "{report}");

    // Interrupted with Ctrl-C (SIGINT) or SIGTERM: leaves at once, cleanly, exit 130.
    for signal in ["-INT", "-TERM"] {
        let mut follower = Follower::spawn(shm.args(), 4);
        let pid = follower.pid();
        inspect_until(shm.args(), "the follower never waited", |r| {
            waiting_consumer(r, pid)
        });
        let sent = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = follower.0.wait().unwrap();
        assert_eq!(status.code(), Some(130), "{signal}: {status:?}");
        let (report, _) = inspect_json(shm.args());
        assert_eq!(
            channel(&report, 4)["not_empty_waiters"],
            0,
            "{signal}: {report}"
        );
        assert_eq!(report["peers"], serde_json::json!([]), "{signal}: {report}");
    }
}

#[test]
fn inspect_names_who_holds_a_stuck_position_and_for_how_long() {
    let seg = FileSeg::new();
    create(seg.args(), 2, 4);
    send(seg.args(), 2, "a");
    dmxp()
        .arg("recv")
        .args(seg.args())
        .args(["--channel", "2", "--raw"])
        .assert()
        .success()
        .stdout("a\n");
    let table = read_u64(&seg.path, 48);
    // A live producer (a sleeping process) claimed position 1 (tail 1 → 2) and holds it.
    let mut holder = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    poke_record(&seg.path, table, 5, holder.id(), 1, 2, 1);
    poke_u64(&seg.path, entry(2) + 128, 2);

    let (report, _) = inspect_json(seg.args());
    let held = serde_json::json!([{"channel": 2, "side": "receive", "position": 1,
        "holders": [{"pid": holder.id(), "index": 5, "alive": true}], "for_ms": null}]);
    assert_eq!(report["stuck"], held, "before any waiting peer noted it");

    // A receiver waits at position 1 (its holder is alive: not repaired within the default
    // 1 s unblock timeout) and notes since when it has been stuck.
    let started = std::time::Instant::now();
    dmxp()
        .arg("recv")
        .args(seg.args())
        .args([
            "--channel",
            "2",
            "--count",
            "1",
            "--timeout-ms",
            "300",
            "--raw",
        ])
        .assert()
        .code(1)
        .stdout("");
    let (report, _) = inspect_json(seg.args());
    let stuck = &report["stuck"][0];
    assert_eq!(stuck["holders"], held[0]["holders"], "{report}");
    let for_ms = stuck["for_ms"].as_u64().expect("noted by the receiver");
    assert!(
        u128::from(for_ms) <= started.elapsed().as_millis(),
        "stuck for {for_ms} ms, but the receiver started {:?} ago",
        started.elapsed()
    );
    let text = run_ok(dmxp().arg("inspect").args(seg.args()));
    let line = format!(
        "stuck: channel 2 position 1: claimed by a producer, not published: receives wait; \
         held by pid {} (alive, record 5); stuck for ",
        holder.id()
    );
    assert!(text.contains(&line), "{text}");

    holder.kill().unwrap();
    holder.wait().unwrap();
    let (report, _) = inspect_json(seg.args());
    assert_eq!(report["stuck"][0]["holders"][0]["alive"], false);
}

#[test]
fn inspect_reports_a_misplaced_peer_table() {
    let seg = FileSeg::new();
    create(seg.args(), 4, 8);
    send(seg.args(), 4, "x");
    let table = read_u64(&seg.path, 48);
    for (bad, message) in [
        (table + 8, "does not name a 64-aligned"),
        (1 << 40, "does not name a 64-aligned"),
        (HEADER_SIZE, "overlaps channel 4's band"),
    ] {
        poke_u64(&seg.path, 48, bad);
        let (report, code) = inspect_json(seg.args());
        assert_eq!(code, 1, "offset {bad}");
        assert_eq!(report["problems"].as_array().unwrap().len(), 1, "{report}");
        let problem = &report["problems"][0];
        assert_eq!(problem["field"], "peer_table_offset");
        assert_eq!(problem["channel"], Value::Null);
        assert!(
            problem["message"].as_str().unwrap().contains(message),
            "{problem}"
        );
        assert_eq!(report["peer_table"], "invalid");
        assert_eq!(channel(&report, 4)["peers"], Value::Null);
        dmxp()
            .arg("inspect")
            .args(seg.args())
            .assert()
            .code(1)
            .stdout(predicate::str::contains(
                "peers: not read (peer_table_offset is invalid)",
            ))
            .stderr(predicate::str::contains("fields: peer_table_offset"));
    }
}

#[test]
fn clean_stale_removes_only_segments_without_live_peers() {
    let shm = Shm::new("stale");
    create(shm.args(), 0, 4);
    let follower = Follower::spawn(shm.args(), 0);

    let listing: Value = serde_json::from_str(&run_ok(
        dmxp().args(["clean", "--prefix", &shm.0, "--json"]),
    ))
    .unwrap();
    let found = &listing["segments"][0];
    assert_eq!(found["name"], shm.0.as_str());
    assert_eq!(found["creator"], "gone", "`dmxp create` has exited");
    assert_eq!(found["live_peers"], 1);
    assert_eq!(found["state"], "in_use");
    assert_eq!(found["stale"], false);
    let text = run_ok(dmxp().args(["clean", "--prefix", &shm.0]));
    let heading = row(&text, "NAME");
    let cells = row(&text, &shm.0);
    let cell = |name: &str| cells[heading.iter().position(|h| *h == name).unwrap()];
    assert_eq!((cell("LIVE_PEERS"), cell("STALE")), ("1", "no"));

    // In use: --stale selects nothing and removes nothing.
    run_ok(dmxp().args(["clean", "--prefix", &shm.0, "--stale", "--remove"]));
    let out = run_ok(dmxp().args(["clean", "--prefix", &shm.0, "--stale", "--remove", "--json"]));
    let listing: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listing["segments"], serde_json::json!([]));
    assert!(shm_path(&shm.0).exists());
    dmxp()
        .args(["clean", "--prefix", &shm.0, "--stale"])
        .assert()
        .success()
        .stdout("no stale DMXP segments in /dev/shm\n");

    // Its only peer is killed: stale now, and removed.
    follower.kill();
    let text = run_ok(dmxp().args(["clean", "--prefix", &shm.0]));
    let cells = row(&text, &shm.0);
    let cell = |name: &str| cells[heading.iter().position(|h| *h == name).unwrap()];
    assert_eq!(
        (cell("LIVE_PEERS"), cell("DEAD_PEERS"), cell("STALE")),
        ("0", "1", "yes")
    );
    let out = run_ok(dmxp().args(["clean", "--prefix", &shm.0, "--stale", "--remove", "--json"]));
    let listing: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listing["segments"][0]["name"], shm.0.as_str());
    assert_eq!(listing["segments"][0]["stale"], true);
    assert_eq!(listing["segments"][0]["dead_peers"], 1);
    assert_eq!(listing["segments"][0]["removed"], true);
    assert!(!shm_path(&shm.0).exists());
}

#[test]
fn recover_tombstones_a_dead_producers_position_and_frees_a_dead_consumers_slot() {
    let seg = FileSeg::new();
    create(seg.args(), 2, 4);
    send(seg.args(), 2, "a");
    let table = read_u64(&seg.path, 48);
    assert!(table >= HEADER_SIZE, "the sender installed the peer table");

    // A producer claimed position 1 (tail 1 → 2) and died before publishing it.
    let producer = dead_pid();
    poke_record(&seg.path, table, 5, producer, 1, 2, 1);
    poke_u64(&seg.path, entry(2) + 128, 2);
    let (report, _) = inspect_json(seg.args());
    let peer = &report["peers"][0];
    assert_eq!(
        (&peer["index"], &peer["pid"], &peer["role"], &peer["alive"]),
        (
            &Value::from(5),
            &Value::from(producer),
            &Value::from("producer"),
            &Value::from(false)
        )
    );
    assert_eq!(
        peer["intent"],
        serde_json::json!({"position": 1, "count": 1})
    );
    assert_eq!(
        channel(&report, 2)["peers"],
        serde_json::json!({"producers": 0, "consumers": 0, "dead": 1})
    );
    let text = run_ok(dmxp().arg("inspect").args(seg.args()));
    assert_eq!(row(&text, "5")[7], "1..2");

    let out = run_ok(dmxp().arg("recover").args(seg.args()).arg("--json"));
    let recovery: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        recovery["channels"],
        serde_json::json!([{"channel": 2, "tombstoned": 1, "freed": 0,
                            "records_freed": 1, "records_deferred": 0}])
    );
    assert_eq!(recovery["total"]["tombstoned"], 1);
    assert_eq!(inspect_json(seg.args()).0["peers"], serde_json::json!([]));
    // Nothing left to do.
    dmxp()
        .arg("recover")
        .args(seg.args())
        .args(["--channel", "2"])
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing to repair"));

    // The channel moves again: position 1 is a LOST tombstone, skipped and counted.
    dmxp()
        .arg("send")
        .args(seg.args())
        .args(["--channel", "2", "b", "c"])
        .assert()
        .success();
    // Take "a" and "b" (positions 0..=2), leave "c" at position 3.
    dmxp()
        .arg("recv")
        .args(seg.args())
        .args(["--channel", "2", "--count", "2", "--raw"])
        .assert()
        .success()
        .stdout("a\nb\n")
        .stderr(predicate::str::contains("skipped 1 lost"));

    // A consumer claimed position 3 (head 3 → 4) and died before freeing its slot.
    let consumer = dead_pid();
    poke_record(&seg.path, table, 7, consumer, 2, 2, 3);
    poke_u64(&seg.path, entry(2) + 256, 4);
    let text = run_ok(
        dmxp()
            .arg("recover")
            .args(seg.args())
            .args(["--channel", "2"]),
    );
    let heading = row(&text, "CHANNEL");
    assert_eq!(heading[..3], ["CHANNEL", "TOMBSTONED", "FREED"]);
    assert_eq!(row(&text, "2"), ["2", "0", "1", "1", "0"]);
    assert!(text.contains("1 slot of dead consumers freed"), "{text}");
    // With the slot freed, the ring of 4 takes 4 messages without waiting.
    dmxp()
        .arg("send")
        .args(seg.args())
        .args(["--channel", "2", "--timeout-ms", "0", "d", "e", "f", "g"])
        .assert()
        .success();
}

#[test]
fn recover_of_a_missing_channel_or_segment_fails() {
    let seg = FileSeg::new();
    create(seg.args(), 2, 4);
    dmxp()
        .arg("recover")
        .args(seg.args())
        .args(["--channel", "9"])
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains("channel 9 does not exist"));
    // No peer table yet: nothing to repair, on every channel.
    dmxp()
        .arg("recover")
        .args(seg.args())
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing to repair"));
    let shm = Shm::new("recover_missing");
    dmxp()
        .arg("recover")
        .args(shm.args())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("does not exist"));
    dmxp()
        .args(["recover", "--channel", "256"])
        .assert()
        .code(2);
}

/// `dmxp clean --stale --remove` keeps a stale segment that still holds undelivered messages
/// (a `dmxp create` + `dmxp send` leaves no live peer behind) unless `--force` is given.
#[test]
fn clean_stale_remove_keeps_queued_messages_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queued.seg");
    let seg = ["--file", path.to_str().unwrap()];
    create(seg, 0, 4);
    run_ok(
        dmxp()
            .arg("send")
            .args(seg)
            .args(["--channel", "0", "undelivered"]),
    );
    let dir_arg = dir.path().to_str().unwrap();

    let out = run_ok(dmxp().args(["clean", "--dir", dir_arg, "--stale", "--json"]));
    let listing: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listing["segments"][0]["stale"], true);
    assert_eq!(listing["segments"][0]["queued"], 1);

    let text = run_ok(dmxp().args(["clean", "--dir", dir_arg, "--stale", "--remove"]));
    assert!(
        path.exists(),
        "removed a segment with a queued message:\n{text}"
    );
    assert!(text.contains("1 undelivered messages queued"), "{text}");

    run_ok(dmxp().args(["clean", "--dir", dir_arg, "--stale", "--remove", "--force"]));
    assert!(!path.exists());
}

/// A scribbled `tail` (2^63) wedges a channel: `inspect` flags the impossible cursors and
/// `dmxp reset` brings it back, counting what it discards.
#[test]
fn inspect_flags_impossible_cursors_and_reset_brings_the_channel_back() {
    let seg = FileSeg::new();
    create(seg.args(), 3, 8);
    run_ok(
        dmxp()
            .arg("send")
            .args(seg.args())
            .args(["--channel", "3", "a", "b"]),
    );
    poke_u64(&seg.path, entry(3) + 128, 1 << 63);

    let (report, code) = inspect_json(seg.args());
    assert_eq!(code, 1, "{report}");
    let problems = report["problems"].to_string();
    assert!(problems.contains("impossible cursors"), "{problems}");
    assert!(problems.contains("dmxp reset --channel 3"), "{problems}");
    dmxp()
        .arg("send")
        .args(seg.args())
        .args(["--channel", "3", "wedged"])
        .assert()
        .failure();

    let out = run_ok(
        dmxp()
            .arg("reset")
            .args(seg.args())
            .args(["--channel", "3", "--json"]),
    );
    let reset: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        reset["discarded"], 0,
        "cursors a ring apart: nothing countable"
    );
    let (report, code) = inspect_json(seg.args());
    assert_eq!(code, 0, "{report}");
    run_ok(
        dmxp()
            .arg("send")
            .args(seg.args())
            .args(["--channel", "3", "flows"]),
    );
    let out = run_ok(
        dmxp()
            .arg("recv")
            .args(seg.args())
            .args(["--channel", "3", "--count", "1"]),
    );
    assert!(out.contains("flows"), "{out}");

    // With honest cursors, reset counts the queued messages it drops.
    run_ok(
        dmxp()
            .arg("send")
            .args(seg.args())
            .args(["--channel", "3", "x", "y"]),
    );
    let out = run_ok(
        dmxp()
            .arg("reset")
            .args(seg.args())
            .args(["--channel", "3", "--json"]),
    );
    let reset: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reset["discarded"], 2);
}

#[test]
fn create_with_more_peer_records_and_inspect_lists_them_all() {
    let seg = FileSeg::new();
    let out = run_ok(
        dmxp()
            .arg("create")
            .args(seg.args())
            .args(["--channel", "0", "--capacity", "4", "--size", "1M"])
            .args(["--peer-records", "1024", "--json"]),
    );
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["peer_records"], 1024);

    let producer = dmxp::ChannelBuilder::new()
        .with_file(&seg.path)
        .with_registration_required()
        .build_producer()
        .unwrap();
    let clones: Vec<_> = (0..299).map(|_| producer.clone()).collect();
    let (report, code) = inspect_json(seg.args());
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["header"]["peer_records"], 1024);
    let peers = report["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 300);
    assert!(peers.iter().any(|p| p["index"].as_u64().unwrap() >= 256));
    let text = run_ok(dmxp().arg("inspect").args(seg.args()));
    assert_eq!(row(&text, "peer_records")[1], "1024");
    drop(clones);

    // A size no creator may write is a header problem, and the table is not read.
    poke_u32(&seg.path, 56, 100);
    let (report, code) = inspect_json(seg.args());
    assert_ne!(code, 0);
    assert_eq!(report["peer_table"], "invalid");
    assert!(report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["field"] == "peer_records"));
}

#[test]
fn create_refuses_a_peer_table_size_out_of_range() {
    let seg = FileSeg::new();
    dmxp()
        .arg("create")
        .args(seg.args())
        .args(["--channel", "0", "--capacity", "4", "--peer-records", "100"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "peer table of 100 records requested",
        ));
    assert!(!seg.path.exists());
}

// ------------------------------------------------- bench, completions, man, DMXP_SEGMENT

/// The commands every completion script and the man page must name.
const COMMANDS: [&str; 12] = [
    "inspect",
    "watch",
    "create",
    "rm",
    "send",
    "recv",
    "clean",
    "recover",
    "reset",
    "completions",
    "man",
    "bridge",
];

/// Copies `from` to `to` in a `cp` process, then makes it executable. A file this process
/// wrote itself could fail to run with "Text file busy": the write's descriptor lives on in
/// any child another test thread forks meanwhile, until that child execs.
fn place_executable(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success(), "cp {} {}", from.display(), to.display());
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A copy of the binary alone in a directory, so that what lies beside it is the test's.
fn lone_dmxp(dir: &Path) -> PathBuf {
    let copy = dir.join("dmxp");
    place_executable(&assert_cmd::cargo::cargo_bin("dmxp"), &copy);
    copy
}

#[test]
fn bridge_hands_every_argument_to_the_bridge_binary_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let binary = lone_dmxp(dir.path());
    let script = dir.path().join("fake-bridge.sh");
    std::fs::write(&script, "#!/bin/sh\nprintf '%s|' \"$@\"\nexit 7\n").unwrap();
    place_executable(&script, &dir.path().join("dmxp-bridge"));
    Command::new(&binary)
        .env("PATH", "")
        .args([
            "bridge",
            "--help",
            "--export",
            "/dmxp_a:0",
            "-x",
            "two words",
        ])
        .assert()
        .code(7)
        .stdout("--help|--export|/dmxp_a:0|-x|two words|");
}

#[test]
fn bridge_without_the_bridge_binary_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let binary = lone_dmxp(dir.path());
    Command::new(&binary)
        .env("PATH", dir.path().join("nothing-here"))
        .args(["bridge", "--export", "/dmxp_a:0"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cargo install dmxp-bridge"));
}

#[test]
fn bench_is_not_in_this_binary_and_says_where_it_is() {
    for args in [&["bench"][..], &["bench", "--quick", "--json", "x.json"]] {
        let out = dmxp().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("`dmxp-bench`"), "{stderr}");
        assert!(
            stderr.contains("cargo run --release -p dmxp-bench"),
            "{stderr}"
        );
    }
    let help = run_ok(dmxp().arg("--help"));
    assert!(!help.contains("bench"), "{help}");
}

#[test]
fn completions_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let script = run_ok(dmxp().args(["completions", shell]));
        assert!(script.len() > 1000, "{shell}: {} bytes", script.len());
        for command in COMMANDS {
            assert!(script.contains(command), "{shell}: no {command}");
        }
        assert!(script.contains("--segment"), "{shell}: no options");
        assert!(!script.contains("bench"), "{shell}");
    }
    // The bash script parses.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dmxp.bash");
    std::fs::write(&path, run_ok(dmxp().args(["completions", "bash"]))).unwrap();
    match std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "bash -n: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("bash not found ({e}): `bash -n` skipped"),
    }
}

#[test]
fn man_prints_roff_pages_naming_every_command() {
    let page = run_ok(dmxp().arg("man"));
    assert!(page.contains(".TH dmxp 1"), "{page}");
    assert!(page.contains(".SH SYNOPSIS") && page.contains(".SH SUBCOMMANDS"));
    for command in COMMANDS {
        assert!(
            page.contains(&format!("dmxp\\-{command}(1)")),
            "no {command} in\n{page}"
        );
    }
    assert!(
        page.contains("DMXP_SEGMENT"),
        "the environment is documented"
    );
    assert!(page.contains("Exit codes"), "{page}");

    let page = run_ok(dmxp().args(["man", "inspect"]));
    assert!(page.contains(".TH dmxp-inspect 1"), "{page}");
    assert!(page.contains("\\fBdmxp inspect\\fR"), "{page}");
    assert!(page.contains("\\-\\-segment") && page.contains("\\-\\-json"));
    assert!(page.contains("DMXP_SEGMENT"), "{page}");
}

#[test]
fn dmxp_segment_is_the_default_segment_of_every_command() {
    let shm = Shm::new("env");
    let with_env = || {
        let mut cmd = dmxp();
        cmd.env("DMXP_SEGMENT", &shm.0);
        cmd
    };
    for command in [
        "inspect", "watch", "create", "rm", "send", "recv", "recover", "reset",
    ] {
        let help = run_ok(dmxp().args([command, "--help"]));
        assert!(help.contains("DMXP_SEGMENT"), "{command} --help:\n{help}");
    }

    run_ok(with_env().args([
        "create",
        "--channel",
        "3",
        "--capacity",
        "8",
        "--size",
        "1M",
    ]));
    let out = run_ok(with_env().args(["inspect", "--json"]));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["source"]["name"], shm.0.as_str());
    assert_eq!(channel(&report, 3)["capacity"], 8);
    run_ok(with_env().args(["send", "--channel", "3", "one", "two", "three"]));
    let out = run_ok(with_env().args(["recv", "--channel", "3", "--count", "1", "--raw"]));
    assert_eq!(out, "one\n");
    let out = run_ok(with_env().args(["watch", "--once", "--interval-ms", "10", "--json"]));
    let frame: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(frame["channels"][0]["tail"], 3);
    run_ok(with_env().args(["recover", "--channel", "3"]));
    let out = run_ok(with_env().args(["reset", "--channel", "3", "--json"]));
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["discarded"], 2);

    // --segment wins over the environment, and so does --file (no conflict with the
    // environment); both on the command line are still a usage error.
    let other = Shm::new("env_other");
    with_env()
        .args(["inspect", "--segment", &other.0])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "{} does not exist",
            other.0
        )));
    let seg = FileSeg::new();
    create(seg.args(), 1, 4);
    let out = run_ok(with_env().arg("inspect").args(seg.args()).arg("--json"));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["source"]["kind"], "file");
    with_env()
        .args(["inspect", "--segment", &shm.0])
        .args(seg.args())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));

    run_ok(with_env().arg("rm"));
    assert!(!shm_path(&shm.0).exists());

    // Empty is unset: the default segment.
    let out = dmxp()
        .env("DMXP_SEGMENT", "")
        .args(["inspect", "--json"])
        .output()
        .unwrap();
    if out.status.code() == Some(0) || !out.stdout.is_empty() {
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["source"]["name"], "/dmxp_alloc");
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("/dmxp_alloc"), "{stderr}");
    }
}

// ------------------------------------------------------------ not a DMXP segment

/// `len` bytes that look random (and so do not start with the DMXP magic).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `dmxp inspect ARGS`: exit 1, one line on stderr saying `what` is not a DMXP segment; the
/// stdout of the text form is empty, the JSON form's is one valid report saying so.
fn assert_not_a_segment(args: &[&str], what: &str, why: &str) {
    let out = dmxp().arg("inspect").args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{args:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.len() < 200, "{} characters: {stderr}", stderr.len());
    assert!(
        stderr.starts_with(&format!("dmxp: {what} is not a DMXP segment: ")),
        "{stderr}"
    );
    assert!(stderr.contains(why), "{stderr}");

    let out = dmxp()
        .arg("inspect")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["is_dmxp_segment"], false);
    assert_eq!(report["valid"], false);
    assert_eq!(report["channels"], serde_json::json!([]));
    assert_eq!(report["problems"].as_array().unwrap().len(), 1, "{report}");
    assert!(report["problems"][0]["message"]
        .as_str()
        .unwrap()
        .contains(why));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

#[test]
fn inspect_of_something_that_is_not_a_segment_says_so_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let random = dir.path().join("random.bin");
    std::fs::write(&random, noise(1 << 20)).unwrap();
    let random_arg = random.to_str().unwrap();
    assert_not_a_segment(
        &["--file", random_arg],
        &format!("file {random_arg}"),
        "bad magic 0x",
    );
    let report: Value = serde_json::from_slice(
        &dmxp()
            .args(["inspect", "--file", random_arg, "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(report["problems"][0]["field"], "magic");
    assert_eq!(report["size"], 1 << 20);

    for len in [0, 10, 127] {
        let short = dir.path().join(format!("short{len}"));
        std::fs::write(&short, noise(len)).unwrap();
        let short_arg = short.to_str().unwrap();
        assert_not_a_segment(
            &["--file", short_arg],
            &format!("file {short_arg}"),
            &format!("object of {len} bytes is too short"),
        );
    }

    // Another program's shm object.
    let shm = Shm::new("not_a_segment");
    std::fs::write(shm_path(&shm.0), noise(4096)).unwrap();
    assert_not_a_segment(&shm.args(), &format!("shm object {}", shm.0), "bad magic");

    // watch refuses it the same way.
    let out = dmxp()
        .args([
            "watch",
            "--once",
            "--interval-ms",
            "10",
            "--file",
            random_arg,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is not a DMXP segment"), "{stderr}");
}

// -------------------------------------------------------------------- clean: queued

#[test]
fn clean_lists_the_messages_queued_in_each_segment() {
    let dir = tempfile::tempdir().unwrap();
    let busy = dir.path().join("busy.seg");
    let idle = dir.path().join("idle.seg");
    let busy_args = ["--file", busy.to_str().unwrap()];
    create(busy_args, 0, 8);
    create(busy_args, 5, 4);
    create(["--file", idle.to_str().unwrap()], 0, 4);
    dmxp()
        .arg("send")
        .args(busy_args)
        .args(["--channel", "0", "a", "b", "c"])
        .assert()
        .success();
    send(busy_args, 5, "d");
    send(busy_args, 5, "e");
    dmxp()
        .arg("recv")
        .args(busy_args)
        .args(["--channel", "0", "--count", "1", "--raw"])
        .assert()
        .success()
        .stdout("a\n");
    let dir_arg = dir.path().to_str().unwrap();

    let text = run_ok(dmxp().args(["clean", "--dir", dir_arg]));
    let heading = row(&text, "NAME");
    let queued = |path: &Path| {
        let cells = row(&text, path.to_str().unwrap());
        cells[heading.iter().position(|h| *h == "QUEUED").unwrap()].to_owned()
    };
    assert_eq!(
        queued(&busy),
        "4",
        "2 on channel 0, 2 on channel 5:\n{text}"
    );
    assert_eq!(queued(&idle), "0", "{text}");

    let out = run_ok(dmxp().args(["clean", "--dir", dir_arg, "--json"]));
    let listing: Value = serde_json::from_str(&out).unwrap();
    let by_name: Vec<_> = listing["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s["queued"].as_u64()))
        .collect();
    assert_eq!(
        by_name,
        [
            (busy.display().to_string(), Some(4)),
            (idle.display().to_string(), Some(0))
        ]
    );
}

// -------------------------------------------------------------- watch: rates, peers

#[test]
fn watch_once_shows_send_and_receive_rates_and_the_peers() {
    let seg = FileSeg::new();
    create(seg.args(), 2, 256);
    let follower = Follower::spawn(seg.args(), 2);
    // A producer in this process sends all along the measured interval.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = std::sync::Arc::clone(&stop);
        let producer = dmxp::ChannelBuilder::new()
            .with_file(&seg.path)
            .with_channel_id(2)
            .build_producer()
            .unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                producer.send(b"tick").unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let mine = std::process::id();

    let text =
        run_ok(
            dmxp()
                .arg("watch")
                .args(seg.args())
                .args(["--once", "--interval-ms", "400"]),
        );
    let out = run_ok(dmxp().arg("watch").args(seg.args()).args([
        "--once",
        "--interval-ms",
        "400",
        "--json",
    ]));
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();

    assert!(text.contains("rates over 400 ms"), "{text}");
    assert!(!text.contains('\x1b'), "not a terminal: no escape codes");
    let heading = row(&text, "ID");
    assert_eq!(
        heading,
        [
            "ID",
            "STATUS",
            "CAPACITY",
            "HEAD",
            "TAIL",
            "DEPTH",
            "SEND/S",
            "RECV/S",
            "PEERS",
            "NOT_EMPTY_WAITERS",
            "NOT_FULL_WAITERS"
        ]
    );
    let cells = row(&text, "2");
    let cell = |name: &str| cells[heading.iter().position(|h| *h == name).unwrap()];
    let send_rate: f64 = cell("SEND/S").parse().unwrap();
    let recv_rate: f64 = cell("RECV/S").parse().unwrap();
    assert!(send_rate > 0.0, "{text}");
    assert!(recv_rate > 0.0, "the follower receives:\n{text}");
    assert_eq!(cell("PEERS"), "1/1");
    assert!(text.contains("peers: 2 registered, 0 dead"), "{text}");
    assert_eq!(
        row(&text, "PID"),
        ["PID", "ROLE", "CHANNEL", "ALIVE", "WAITING"]
    );
    assert_eq!(
        row(&text, &follower.pid().to_string())[1..4],
        ["consumer", "2", "yes"]
    );
    assert_eq!(
        row(&text, &mine.to_string())[1..5],
        ["producer", "2", "yes", "-"]
    );

    let frames: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 1, "--once: one frame");
    let frame = &frames[0];
    assert!(frame["elapsed_ms"].as_u64().unwrap() >= 400);
    let c = &frame["channels"][0];
    assert!(c["send_per_s"].as_f64().unwrap() > 0.0, "{frame}");
    assert!(c["recv_per_s"].as_f64().unwrap() > 0.0, "{frame}");
    assert!(c.get("messages_per_s").is_none(), "one name per counter");
    let peers: Vec<_> = frame["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pid"].as_u64().unwrap(),
                p["role"].as_str().unwrap(),
                p["alive"].clone(),
            )
        })
        .collect();
    assert!(peers.contains(&(u64::from(follower.pid()), "consumer", Value::from(true))));
    assert!(peers.contains(&(u64::from(mine), "producer", Value::from(true))));
}

// ------------------------------------------------------------- watch on a terminal

/// A pseudo-terminal: the master end read in the background, the slave end for a child.
struct Pty {
    master: std::fs::File,
    slave: std::fs::File,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Pty {
    fn open() -> Pty {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave = OpenOptions::new()
            .read(true)
            .write(true)
            .open(std::ffi::OsStr::new(
                std::str::from_utf8(name.as_bytes()).unwrap(),
            ))
            .unwrap();
        rustix::termios::tcsetwinsize(
            &slave,
            rustix::termios::Winsize {
                ws_row: 40,
                ws_col: 160,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )
        .unwrap();
        let master = std::fs::File::from(master);
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = std::sync::Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut reader, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            master,
            slave,
            output,
        }
    }

    /// `dmxp ARGS` on the terminal: its stdin, stdout and stderr.
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        let end = || std::process::Stdio::from(self.slave.try_clone().unwrap());
        std::process::Command::new(env!("CARGO_BIN_EXE_dmxp"))
            .args(args)
            .env_remove("DMXP_SEGMENT")
            .stdin(end())
            .stdout(end())
            .stderr(end())
            .spawn()
            .unwrap()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits (a hang guard) until the output contains `what`.
    fn wait_for(&self, what: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !self.text().contains(what) {
            assert!(
                std::time::Instant::now() < deadline,
                "never saw {what:?} in {:?}",
                self.text()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn type_keys(&self, keys: &[u8]) {
        std::io::Write::write_all(&mut &self.master, keys).unwrap();
    }

    /// The slave end is back in canonical mode with echo: raw mode was left.
    fn is_cooked(&self) -> bool {
        use rustix::termios::LocalModes;
        let modes = rustix::termios::tcgetattr(&self.slave).unwrap().local_modes;
        modes.contains(LocalModes::ICANON | LocalModes::ECHO)
    }
}

fn wait_exit(child: &mut std::process::Child) -> Option<i32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("dmxp watch did not exit");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

const ENTER_ALTERNATE_SCREEN: &str = "\x1b[?1049h";
const LEAVE_ALTERNATE_SCREEN: &str = "\x1b[?1049l";
const HIDE_CURSOR: &str = "\x1b[?25l";
const SHOW_CURSOR: &str = "\x1b[?25h";

/// After the run: the screen was taken over, then given back (in that order).
fn assert_taken_over_and_given_back(pty: &Pty) {
    // The restoring bytes may still be on their way through the reader thread.
    pty.wait_for(LEAVE_ALTERNATE_SCREEN);
    pty.wait_for(SHOW_CURSOR);
    let text = pty.text();
    let entered = text.find(ENTER_ALTERNATE_SCREEN).expect("alternate screen");
    let hidden = text.find(HIDE_CURSOR).expect("cursor hidden");
    assert!(text.rfind(LEAVE_ALTERNATE_SCREEN).unwrap() > entered);
    assert!(text.rfind(SHOW_CURSOR).unwrap() > hidden);
    assert!(pty.is_cooked(), "raw mode left");
}

#[test]
fn watch_on_a_terminal_takes_it_over_and_always_gives_it_back() {
    let seg = FileSeg::new();
    create(seg.args(), 7, 8);
    send(seg.args(), 7, "x");
    let args = ["watch", seg.args()[0], seg.args()[1], "--interval-ms", "50"];

    // q quits: exit 0.
    let pty = Pty::open();
    assert!(pty.is_cooked());
    let mut child = pty.spawn(&args);
    pty.wait_for("(q to quit)");
    pty.wait_for("NOT_FULL_WAITERS");
    assert!(!pty.is_cooked(), "raw mode while watching");
    pty.type_keys(b"q");
    assert_eq!(wait_exit(&mut child), Some(0));
    assert_taken_over_and_given_back(&pty);
    let text = pty.text();
    assert!(text.contains("SEND/S") && text.contains("RECV/S"), "{text}");
    assert!(text.contains("peers: none registered"), "{text}");

    // Ctrl-C (a key in raw mode) and SIGTERM: exit 130.
    for how in ["ctrl-c", "sigterm"] {
        let pty = Pty::open();
        let mut child = pty.spawn(&args);
        pty.wait_for("(q to quit)");
        match how {
            "ctrl-c" => pty.type_keys(b"\x03"),
            _ => {
                let sent = std::process::Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status()
                    .unwrap();
                assert!(sent.success());
            }
        }
        assert_eq!(wait_exit(&mut child), Some(130), "{how}");
        assert_taken_over_and_given_back(&pty);
    }

    // An error (the segment removed under it): exit 1, the terminal given back before the
    // error line is printed on it.
    let pty = Pty::open();
    let mut child = pty.spawn(&args);
    pty.wait_for("(q to quit)");
    std::fs::remove_file(&seg.path).unwrap();
    assert_eq!(wait_exit(&mut child), Some(1));
    assert_taken_over_and_given_back(&pty);
    pty.wait_for("does not exist");
    let text = pty.text();
    assert!(
        text.rfind("does not exist").unwrap() > text.rfind(LEAVE_ALTERNATE_SCREEN).unwrap(),
        "the error is printed on the normal screen: {text:?}"
    );
}

/// A channel made for large messages (`--max-message-size`) takes a file as one message and
/// `recv --json` returns it whole; a longer file is refused naming the limit, nothing sent.
#[test]
fn large_messages_round_trip_whole() {
    let seg = FileSeg::new();
    let created: Value =
        serde_json::from_str(&run_ok(dmxp().arg("create").args(seg.args()).args([
            "--channel",
            "1",
            "--capacity",
            "256",
            "--size",
            "4M",
            "--max-message-size",
            "200K",
            "--json",
        ])))
        .unwrap();
    assert_eq!(created["max_message_size"], 200 << 10);
    let bytes: Vec<u8> = (0..150_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = seg.dir.path().join("frame");
    std::fs::write(&file, &bytes).unwrap();
    run_ok(dmxp().arg("send").args(seg.args()).args([
        "--channel",
        "1",
        "--from-file",
        file.to_str().unwrap(),
    ]));
    // Inspect counts the run queued: one message of 157 slots.
    let (report, _) = inspect_json(seg.args());
    assert_eq!(channel(&report, 1)["queued_runs"], 1);
    assert_eq!(channel(&report, 1)["depth"], 157);
    let out = run_ok(dmxp().arg("recv").args(seg.args()).args([
        "--channel",
        "1",
        "--count",
        "1",
        "--json",
    ]));
    let message: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(message["payload_len"], 150_000);
    assert_eq!(message["payload_encoding"], "base64");
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(message["payload"].as_str().unwrap())
        .unwrap();
    assert!(payload == bytes, "the message came back altered");
    let (report, _) = inspect_json(seg.args());
    assert_eq!(channel(&report, 1)["max_message_size"], 200 << 10);
    assert_eq!(channel(&report, 1)["queued_runs"], 0);

    std::fs::write(&file, vec![0u8; (200 << 10) + 1]).unwrap();
    dmxp()
        .arg("send")
        .args(seg.args())
        .args(["--channel", "1", "--from-file", file.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("takes at most 204800"));
    assert_eq!(channel(&inspect_json(seg.args()).0, 1)["tail"], 157);
}
