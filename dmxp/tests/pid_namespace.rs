//! Peers in different pid namespaces sharing one segment (containers sharing `/dev/shm`): a
//! consumer that cannot see a producer's pid must count its record alive, never repair its
//! claim (PROTOCOL.md §11.5).
//!
//! The consumer is this test binary re-executed under `unshare --pid --fork --mount-proc`
//! (needs root); without it the test says so and checks nothing.
#![cfg(feature = "shm")]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::ShmName;
use dmxp::ChannelBuilder;

const SEGMENT_ENV: &str = "DMXP_T_PIDNS_SEGMENT";

fn builder(name: &str) -> ChannelBuilder {
    ChannelBuilder::new()
        .with_segment_name(name)
        .with_segment_size(1 << 20)
        .with_capacity(8)
}

/// Child role, in its own pid namespace: the producer's pid means nothing here. Its receive
/// must wait (the claim is in flight, a message behind it) without repairing anything, and an
/// explicit repair pass must leave the claim alone. Exit 0 when so.
#[test]
#[ignore = "child process helper"]
fn child_consumer_in_another_pid_namespace() {
    let Some(name) = common::child_env(SEGMENT_ENV) else {
        return;
    };
    let consumer = builder(&name).build_consumer().unwrap();
    println!(
        "child: pid {} namespace {}",
        std::process::id(),
        dmxp::own_pid_namespace()
    );
    let got = consumer
        .receive_timeout(Duration::from_millis(300))
        .unwrap();
    let report = consumer.recover().unwrap();
    println!(
        "child: got {got:?}, repair {report:?}, lost {}",
        consumer.stats().lost
    );
    let untouched = got.is_none() && !report.repaired() && consumer.stats().lost == 0;
    std::process::exit(if untouched { 0 } else { 1 });
}

#[test]
fn a_consumer_in_another_pid_namespace_never_repairs_a_live_producers_claim() {
    let can_unshare = rustix::process::geteuid().is_root()
        && Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !can_unshare {
        eprintln!("SKIPPED: needs root and unshare(1) for a pid namespace; NOTHING WAS CHECKED");
        return;
    }
    let name = ShmName::new("pidns");
    let producer = builder(&name.0).build_producer().unwrap();
    let behind = producer.clone();
    // A live producer holds position 0 (a loan) while a completed send waits behind it.
    let mut loan = producer.loan().unwrap();
    behind.send("behind").unwrap();

    let output = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "child_consumer_in_another_pid_namespace",
            "--exact",
            "--ignored",
            "--nocapture",
            "-q",
        ])
        .env(SEGMENT_ENV, &name.0)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the child repaired a live claim:\n{text}"
    );
    assert!(
        !text.contains(&format!("namespace {}", dmxp::own_pid_namespace())),
        "the child ran in our own namespace:\n{text}"
    );

    // The claim is still ours: it publishes, and both messages arrive in order.
    assert!(loan.write_at(0, b"first"));
    assert_eq!(loan.commit(5).unwrap(), 0);
    let consumer = builder(&name.0).build_consumer().unwrap();
    assert_eq!(consumer.receive().unwrap().as_deref(), Some(&b"first"[..]));
    assert_eq!(consumer.receive().unwrap().as_deref(), Some(&b"behind"[..]));
}
