//! The in-process reference: crossbeam's `ArrayQueue<[u8; N]>` between threads of one child
//! process, pinned like the cross-process runs (producers on one core, consumers on the other),
//! with the same spin-then-yield policy and the same termination protocol.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use dmxp::monotonic_ns;

use crate::child::{Recorder, Res};
use crate::control::{self, Backoff, Control, CONSUMERS_PER_GROUP};
use crate::spec::{ChildResult, ChildSpec, Shape};

/// Runs the in-process scenario of `spec` (throughput when it has a shape, else latency).
pub fn run(spec: &ChildSpec) -> Res<ChildResult> {
    match spec.payload {
        8 => run_sized::<8>(spec),
        32 => run_sized::<32>(spec),
        64 => run_sized::<64>(spec),
        128 => run_sized::<128>(spec),
        256 => run_sized::<256>(spec),
        512 => run_sized::<512>(spec),
        960 => run_sized::<960>(spec),
        other => Err(format!("ArrayQueue runs support payloads of 8, 32, 64, 128, 256, 512 and 960 bytes, not {other}").into()),
    }
}

fn run_sized<const N: usize>(spec: &ChildSpec) -> Res<ChildResult> {
    let allocator = control::attach(&spec.segment)?;
    let region = allocator.memory().region();
    let control = Control::new(region).ok_or("segment too small for the control block")?;
    match spec.shape {
        Some(shape) => throughput::<N>(spec, shape, &control),
        None => latency::<N>(spec, &control),
    }
}

/// Per-queue counters, as in the shared control block of the cross-process runs.
#[derive(Default)]
struct Group {
    producers_done: AtomicUsize,
    sent: AtomicU64,
    got: [AtomicU64; CONSUMERS_PER_GROUP],
}

impl Group {
    fn drained(&self, index: usize, producers: usize, got: u64) -> bool {
        if self.producers_done.load(SeqCst) < producers {
            return false;
        }
        self.got[index].store(got, SeqCst);
        let received: u64 = self.got.iter().map(|g| g.load(SeqCst)).sum();
        received >= self.sent.load(SeqCst)
    }
}

fn stamped<const N: usize>(n: u64) -> [u8; N] {
    let mut value = [0x5Au8; N];
    let bytes = n.to_le_bytes();
    let len = N.min(8);
    value[..len].copy_from_slice(&bytes[..len]);
    value
}

fn throughput<const N: usize>(
    spec: &ChildSpec,
    shape: Shape,
    control: &Control<'_>,
) -> Res<ChildResult> {
    let per = shape.per_channel();
    let queues: Vec<ArrayQueue<[u8; N]>> = (0..shape.channels())
        .map(|_| ArrayQueue::new(spec.capacity as usize))
        .collect();
    let groups: Vec<Group> = (0..shape.channels()).map(|_| Group::default()).collect();
    let go = AtomicBool::new(false);
    let quota = spec.messages.unwrap_or(u64::MAX);
    let (begin, ends, counts) = std::thread::scope(|scope| {
        let mut consumers = Vec::new();
        for (queue, group) in queues.iter().zip(&groups) {
            for _ in 0..per {
                let go = &go;
                scope.spawn(move || {
                    control::pin(spec.cpu);
                    wait_local(go);
                    let mut sent = 0u64;
                    let mut backoff = Backoff::default();
                    while sent < quota && !control.stopped() {
                        match queue.push(stamped::<N>(sent)) {
                            Ok(()) => {
                                sent += 1;
                                backoff.reset();
                            }
                            Err(_) => backoff.snooze(),
                        }
                    }
                    group.sent.fetch_add(sent, SeqCst);
                    group.producers_done.fetch_add(1, SeqCst);
                });
            }
            for index in 0..per {
                let go = &go;
                consumers.push(scope.spawn(move || {
                    control::pin(spec.cpu2);
                    wait_local(go);
                    let mut got = 0u64;
                    let mut sink = 0u8;
                    let mut backoff = Backoff::default();
                    loop {
                        match queue.pop() {
                            Some(value) => {
                                sink ^= value[0];
                                got += 1;
                                backoff.reset();
                            }
                            None if group.drained(index, per, got) => break,
                            None => backoff.snooze(),
                        }
                    }
                    std::hint::black_box(sink);
                    (got, monotonic_ns())
                }));
            }
        }
        control.announce_ready();
        let released = control.wait_go(Duration::from_secs(60));
        let begin = monotonic_ns();
        go.store(true, SeqCst);
        if !released {
            control.set_stop();
        }
        let results: Vec<(u64, u64)> = consumers
            .into_iter()
            .map(|h| h.join().unwrap_or((0, 0)))
            .collect();
        let ends: Vec<u64> = results.iter().map(|r| r.1).collect();
        let counts: u64 = results.iter().map(|r| r.0).sum();
        (begin, ends, counts)
    });
    Ok(ChildResult {
        messages: counts,
        start_ns: begin,
        end_ns: ends.into_iter().max().unwrap_or(begin),
        ..ChildResult::default()
    })
}

fn latency<const N: usize>(spec: &ChildSpec, control: &Control<'_>) -> Res<ChildResult> {
    let there: ArrayQueue<[u8; N]> = ArrayQueue::new(spec.capacity as usize);
    let back: ArrayQueue<[u8; N]> = ArrayQueue::new(spec.capacity as usize);
    let go = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let quota = spec.messages.unwrap_or(u64::MAX);
    let (begin, rounds, percentiles) = std::thread::scope(|scope| {
        let pinger = scope.spawn(|| {
            control::pin(spec.cpu);
            wait_local(&go);
            let mut recorder = Recorder::new(spec.messages);
            recorder.restart();
            let mut round = 0u64;
            let mut backoff = Backoff::default();
            while round < quota && !control.stopped() && !recorder.full() {
                let mut value = stamped::<N>(round);
                while let Err(v) = there.push(value) {
                    value = v;
                    backoff.snooze();
                }
                backoff.reset();
                loop {
                    if let Some(reply) = back.pop() {
                        std::hint::black_box(reply[0]);
                        break;
                    }
                    backoff.snooze();
                }
                backoff.reset();
                recorder.tick();
                round += 1;
            }
            done.store(true, SeqCst);
            (round, recorder.percentiles())
        });
        scope.spawn(|| {
            control::pin(spec.cpu2);
            wait_local(&go);
            let mut backoff = Backoff::default();
            loop {
                match there.pop() {
                    Some(mut value) => {
                        value[0] ^= 0xFF;
                        while let Err(v) = back.push(value) {
                            value = v;
                            backoff.snooze();
                        }
                        backoff.reset();
                    }
                    None if done.load(SeqCst) => break,
                    None => backoff.snooze(),
                }
            }
        });
        control.announce_ready();
        let released = control.wait_go(Duration::from_secs(60));
        let begin = monotonic_ns();
        go.store(true, SeqCst);
        if !released {
            control.set_stop();
        }
        let (rounds, percentiles) = pinger.join().unwrap_or_default();
        (begin, rounds, percentiles)
    });
    Ok(ChildResult {
        messages: rounds,
        start_ns: begin,
        end_ns: monotonic_ns(),
        latency: Some(percentiles),
        ..ChildResult::default()
    })
}

fn wait_local(go: &AtomicBool) {
    let mut backoff = Backoff::default();
    while !go.load(SeqCst) {
        backoff.snooze();
    }
}
