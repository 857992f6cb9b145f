//! A peer that stops while alive, holding a claim (PROTOCOL.md §11.7, §11.8): a producer
//! stopped with SIGSTOP after claiming a position, and a consumer stopped holding a slot. The
//! others must flow again after the unblock timeout while it is still stopped (and alive);
//! after SIGCONT its late publish or free is refused (`Revoked`), nothing wedges, nothing
//! arrives twice, and the loss is counted.
//!
//! The stopped peer is this test binary re-executed to run `child_stopping_peer`: the test
//! hook stops it (SIGSTOP to itself) at the chosen step of its first operation.
#![cfg(all(feature = "test-hooks", feature = "shm"))]

mod common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::{env, spawn_child, ShmName, Spec};
use dmxp::test_hooks::{self, Step};
use dmxp::{ChannelBuilder, ErrorKind};

/// Hang guard for anything that waits on another process.
const LONG: Duration = Duration::from_secs(60);
const CAPACITY: u64 = 4;
/// Short, so the test is quick; the default is 1 s.
const UNBLOCK: Duration = Duration::from_millis(300);

fn builder(spec: &Spec) -> ChannelBuilder {
    spec.builder()
        .with_capacity(CAPACITY)
        .with_unblock_timeout(UNBLOCK)
}

static STOP_AT: std::sync::OnceLock<Step> = std::sync::OnceLock::new();

fn stop_at_target(step: Step, _position: u64) {
    if STOP_AT.get() == Some(&step) {
        // To this thread: a process-directed SIGSTOP may be taken by another thread, and this
        // one would run on (and publish) before the group stop reaches it.
        // SAFETY: pthread_self() names the calling thread, which is alive; SIGSTOP is a valid
        // signal. The process stops here until the parent sends SIGCONT.
        let sent = unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGSTOP) };
        assert_eq!(sent, 0, "pthread_kill");
    }
}

/// Producer: one send, stopped after its claim; prints how the send ended. Consumer: one
/// receive, stopped holding the slot; prints its counters.
#[test]
#[ignore = "child process helper"]
fn child_stopping_peer() {
    let Some(spec) = common::child_env("DMXP_T_SPEC") else {
        return;
    };
    let step = Step::from_name(&env::<String>("DMXP_STOP_AT")).expect("a step name");
    let builder = builder(&Spec::decode(&spec));
    if step.is_send() {
        let producer = builder.build_producer().unwrap();
        println!("ready");
        STOP_AT.set(step).unwrap();
        test_hooks::set_hook(Some(stop_at_target));
        match producer.send("from the stopped producer") {
            Err(e) if matches!(e.kind(), ErrorKind::Revoked { message_id: 0 }) => {
                println!("revoked")
            }
            other => println!("unexpected {other:?}"),
        }
    } else {
        let consumer = builder.build_consumer().unwrap();
        println!("ready");
        STOP_AT.set(step).unwrap();
        test_hooks::set_hook(Some(stop_at_target));
        let got = consumer
            .receive_timeout(Duration::from_millis(200))
            .unwrap();
        println!(
            "got {:?} revoked {}",
            got.map(|m| m.payload),
            consumer.stats().revoked
        );
    }
}

/// Waits until process `pid` is stopped (state `T` in /proc).
fn wait_until_stopped(pid: u32) {
    let deadline = Instant::now() + LONG;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let state = stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap();
        if state == 'T' {
            return;
        }
        assert!(Instant::now() < deadline, "the child never stopped");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn resume(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
}

fn start_child(
    spec: &Spec,
    step: Step,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = spawn_child(
        "child_stopping_peer",
        &[
            ("DMXP_T_SPEC", spec.encode()),
            ("DMXP_STOP_AT", step.name().to_owned()),
        ],
    );
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // The test harness prints its own lines first.
    while line.trim() != "ready" {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended before it was ready"
        );
    }
    (child, out)
}

fn rest_of(child: std::process::Child, mut out: BufReader<std::process::ChildStdout>) -> String {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut out, &mut text).unwrap();
    let status = child.wait_with_output().unwrap();
    assert!(status.status.success(), "child failed: {status:?}\n{text}");
    // Our lines only, not the harness's summary.
    text.lines()
        .filter(|l| {
            l.starts_with("revoked") || l.starts_with("got ") || l.starts_with("unexpected")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_stopped_producer_holding_a_claim_is_unblocked_and_told_on_resuming() {
    let name = ShmName::new("stopped_producer");
    let spec = Spec::Shm(name.0.clone());
    let consumer = builder(&spec)
        .build_producer()
        .map(drop)
        .and_then(|()| builder(&spec).build_consumer())
        .unwrap();
    let (child, out) = start_child(&spec, Step::SendClaimed);
    wait_until_stopped(child.id());

    // It holds position 0 and is alive (stopped). Messages sent behind it must get through.
    let producer = builder(&spec).build_producer().unwrap();
    for i in 0..3u8 {
        producer.send_timeout([i], LONG).unwrap();
    }
    let started = Instant::now();
    let mut got = Vec::new();
    while got.len() < 3 {
        let message = consumer
            .receive_timeout(LONG)
            .unwrap()
            .expect("flows again");
        got.push(message.payload);
    }
    eprintln!(
        "flowed again {:?} after the child stopped",
        started.elapsed()
    );
    assert_eq!(got, [[0u8], [1], [2]]);
    assert_eq!(
        consumer.stats().lost,
        1,
        "the stopped producer's position counts lost"
    );

    resume(child.id());
    let text = rest_of(child, out);
    assert_eq!(text.trim(), "revoked", "the late publish must be refused");
    // Nothing wedged, nothing arrives twice: two more laps go through.
    for i in 0..(2 * CAPACITY) as u8 {
        producer.send_timeout([i], LONG).unwrap();
        assert_eq!(
            consumer.receive_timeout(LONG).unwrap().unwrap().payload,
            [i]
        );
    }
    assert_eq!(consumer.receive().unwrap(), None);
}

#[test]
fn a_stopped_consumer_holding_a_slot_is_unblocked_and_delivers_nothing_on_resuming() {
    let name = ShmName::new("stopped_consumer");
    let spec = Spec::Shm(name.0.clone());
    let producer = builder(&spec).build_producer().unwrap();
    producer.send("held by the stopped consumer").unwrap();
    let (child, out) = start_child(&spec, Step::RecvCopied);
    wait_until_stopped(child.id());

    // The ring fills behind the held slot; a lap later the producer needs that slot.
    let consumer = builder(&spec).build_consumer().unwrap();
    for i in 1..CAPACITY as u8 {
        producer.send([i]).unwrap();
    }
    let started = Instant::now();
    producer.send_timeout([CAPACITY as u8], LONG).unwrap();
    eprintln!("slot freed {:?} after the ring filled", started.elapsed());
    for i in 1..=CAPACITY as u8 {
        assert_eq!(
            consumer.receive_timeout(LONG).unwrap().unwrap().payload,
            [i]
        );
    }

    resume(child.id());
    let text = rest_of(child, out);
    assert_eq!(
        text.trim(),
        "got None revoked 1",
        "the late free must be refused and counted"
    );
    for i in 0..(2 * CAPACITY) as u8 {
        producer.send_timeout([i], LONG).unwrap();
        assert_eq!(
            consumer.receive_timeout(LONG).unwrap().unwrap().payload,
            [i]
        );
    }
    assert_eq!(consumer.receive().unwrap(), None);
}
