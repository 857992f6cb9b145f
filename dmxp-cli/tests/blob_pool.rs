//! `dmxp create --blob-pool`, `dmxp inspect` and `dmxp recover` on a segment with a blob pool
//! (PROTOCOL.md §13): the pool's classes and free bytes, the blocks a live peer holds, the
//! blocks a killed one leaked, and `recover` giving them back.
//!
//! The peer that holds blocks is this test binary re-executed to run the ignored helper
//! `child_holds_blocks`.

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;

fn dmxp() -> Command {
    let mut cmd = Command::cargo_bin("dmxp").unwrap();
    cmd.env_remove("DMXP_SEGMENT");
    cmd
}

/// A shm segment name unique to this test, unlinked on drop.
struct Shm(String);

impl Drop for Shm {
    fn drop(&mut self) {
        let _ = dmxp::unlink_segment(&self.0);
    }
}

/// `dmxp inspect --json` (which exits non-zero for an invalid segment, after the report).
fn inspect(segment: &str) -> Value {
    let out = dmxp()
        .args(["inspect", "--segment", segment, "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// Opens the segment's channel 0 as a producer and a consumer, loans two blocks, sends one
/// and receives it (held), prints `holding`, and sleeps until killed.
#[test]
#[ignore = "child process helper"]
fn child_holds_blocks() {
    let Ok(segment) = std::env::var("DMXP_T_SEGMENT") else {
        return;
    };
    let builder = dmxp::ChannelBuilder::new().with_segment_name(segment);
    let producer = builder.build_producer().unwrap();
    let consumer = builder.build_consumer().unwrap();
    let _unsent = producer.loan_blob(100_000).unwrap();
    let mut sent = producer.loan_blob(5000).unwrap();
    assert!(sent.write_at(0, b"held"));
    sent.commit().unwrap();
    let _held = consumer
        .receive_blob()
        .unwrap()
        .expect("the blob just sent");
    println!("holding");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[test]
fn inspect_shows_the_pool_and_recover_gives_back_what_a_killed_peer_held() {
    let shm = Shm(format!("/dmxp_cli_blob_{}", std::process::id()));
    let created = dmxp()
        .args([
            "create",
            "--segment",
            &shm.0,
            "--channel",
            "0",
            "--capacity",
            "16",
        ])
        .args(["--size", "16M", "--blob-pool", "8M", "--json"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(created["blobs"], true);
    let block_bytes = created["blob_pool_bytes"].as_u64().unwrap();
    assert!(block_bytes > 7 << 20 && block_bytes <= 8 << 20, "{created}");

    let report = inspect(&shm.0);
    let pool = &report["blob_pool"];
    assert_eq!(pool["status"], "ok");
    assert_eq!(pool["free_bytes"].as_u64(), Some(block_bytes));
    let sizes: Vec<u64> = pool["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["block_size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [4096, 16384, 65536, 262_144, 1 << 20]);

    let mut child = Process::new(std::env::current_exe().unwrap())
        .args([
            "child_holds_blocks",
            "--exact",
            "--ignored",
            "--nocapture",
            "-q",
        ])
        .env("DMXP_T_SEGMENT", &shm.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let holding = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line == "holding");
    assert!(holding, "the child did not get its blocks");

    // Alive: two blocks in use by two records of the child, nothing leaked.
    let report = inspect(&shm.0);
    let pool = &report["blob_pool"];
    assert_eq!(pool["leaked"], 0, "{pool}");
    let owners = pool["owners"].as_array().unwrap();
    assert_eq!(owners.len(), 2, "{pool}");
    assert!(owners
        .iter()
        .all(|o| o["alive"] == true && o["blocks"] == 1));
    let text = dmxp()
        .args(["inspect", "--segment", &shm.0])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("blob pool at"), "{text}");
    assert!(text.contains("alive): 1 block(s)"), "{text}");

    child.kill().unwrap();
    child.wait().unwrap();
    let pool = inspect(&shm.0)["blob_pool"].clone();
    assert_eq!(pool["leaked"], 2, "{pool}");

    let recovered = dmxp()
        .args(["recover", "--segment", &shm.0, "--json"])
        .output()
        .unwrap();
    assert!(recovered.status.success());
    let recovered: Value = serde_json::from_slice(&recovered.stdout).unwrap();
    assert_eq!(recovered["blob_blocks_reclaimed"], 2, "{recovered}");
    let pool = inspect(&shm.0)["blob_pool"].clone();
    assert_eq!(pool["free_bytes"].as_u64(), Some(block_bytes), "{pool}");
    assert_eq!(pool["leaked"], 0);
}

#[test]
fn a_corrupt_pool_descriptor_is_a_problem_inspect_names() {
    let shm = Shm(format!("/dmxp_cli_blob_bad_{}", std::process::id()));
    dmxp()
        .args([
            "create",
            "--segment",
            &shm.0,
            "--channel",
            "0",
            "--capacity",
            "16",
        ])
        .args(["--size", "4M", "--blob-pool", "1M"])
        .assert()
        .success();
    let offset = inspect(&shm.0)["blob_pool"]["offset"].as_u64().unwrap();
    // Scribble on the pool's magic through the shm object.
    let path = format!("/dev/shm{}", shm.0);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0xFF; 8], offset).unwrap();
    let report = inspect(&shm.0);
    assert_eq!(report["valid"], false);
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["field"] == "pool_magic"),
        "{problems:?}"
    );
}
