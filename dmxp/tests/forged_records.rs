//! Measurement (ignored): a consumer's receive with a 100 ms timeout on a 4096-slot channel
//! whose peer table holds 255 forged dead records, each with an intent over every stuck
//! position. Prints the elapsed time.
#![cfg(feature = "shm")]

mod common;

use std::time::{Duration, Instant};

use common::ShmName;
use dmxp::core::layout::runtime;
use dmxp::core::{PeerRole, Segment};
use dmxp::{ChannelBuilder, SharedMemory};

#[test]
#[ignore = "measurement"]
fn forged_dead_records_at_capacity_4096() {
    let name = ShmName::new("forged");
    let builder = ChannelBuilder::new()
        .with_segment_name(name.0.clone())
        .with_segment_size(16 << 20)
        .with_capacity(4096);
    let producer = builder.build_producer().unwrap();
    let consumer = builder.build_consumer().unwrap();
    drop(producer);
    let allocator = builder.attach_allocator().unwrap();
    let memory: &SharedMemory = allocator.memory();
    let segment = Segment::attach(memory.region()).unwrap();
    // Forged records of a reused pid: pid 1 runs, but not with the recorded start time, so
    // every liveness check reads /proc/1/stat and judges the record dead.
    let dead: Vec<u32> = vec![1; 250];
    let table_before = segment.peers().unwrap().collect::<Vec<_>>().len();
    for &pid in &dead {
        let Ok(slot) = segment.register(0, PeerRole::Producer, pid, 12_345, runtime::RUST) else {
            break;
        };
        let ch = segment.open_channel(0).unwrap().with_peer(&slot);
        std::mem::forget(ch.try_loan().unwrap());
        std::mem::forget(slot);
    }
    let table = segment.peer_table().unwrap().unwrap();
    let forged = segment.peers().unwrap().collect::<Vec<_>>().len() - table_before;
    for record in table.iter() {
        if record.start_time.load(std::sync::atomic::Ordering::Relaxed) == 12_345 {
            record
                .intent_position
                .store(0, std::sync::atomic::Ordering::Relaxed);
            record
                .intent_count
                .store(forged as u32, std::sync::atomic::Ordering::Release);
        }
    }
    let started = Instant::now();
    let got = consumer.receive_timeout(Duration::from_millis(100));
    println!(
        "forged {forged} dead records over {forged} stuck positions: receive_timeout(100 ms) \
         returned {:?} after {:?}",
        got.map(|m| m.map(|m| m.meta.message_id)),
        started.elapsed()
    );
    // A receiver blocked on the stuck channel for 2 s: the CPU its repair passes cost.
    let (cpu_before, wall) = (cpu_seconds(), Instant::now());
    let _ = consumer.receive_timeout(Duration::from_secs(2));
    println!(
        "blocked 2 s on the stuck channel: {:.1} % of a CPU",
        100.0 * (cpu_seconds() - cpu_before) / wall.elapsed().as_secs_f64()
    );
}

/// User + system CPU time of this process so far (`/proc/self/stat` fields 14 and 15).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Measurement (ignored): the CPU a receiver blocked on a channel that stays stuck costs, with
/// 250 records of live processes (pid 1) in the table and a stuck position no pass can repair.
#[test]
#[ignore = "measurement"]
fn cpu_of_a_receiver_blocked_on_a_stuck_channel() {
    let name = ShmName::new("stuckcpu");
    let builder = ChannelBuilder::new()
        .with_segment_name(name.0.clone())
        .with_segment_size(16 << 20)
        .with_capacity(4096)
        .with_unblock_timeout(Duration::MAX);
    let producer = builder.build_producer().unwrap();
    let consumer = builder.build_consumer().unwrap();
    let allocator = builder.attach_allocator().unwrap();
    let memory: &SharedMemory = allocator.memory();
    let segment = Segment::attach(memory.region()).unwrap();
    for _ in 0..250 {
        let Ok(slot) = segment.register(0, PeerRole::Producer, 1, 0, runtime::RUST) else {
            break;
        };
        std::mem::forget(slot);
    }
    // Position 0 held by a live holder (this process), a message behind it.
    let loan = producer.loan().unwrap();
    producer.clone().send("behind").unwrap();
    let (cpu_before, wall) = (cpu_seconds(), Instant::now());
    let got = consumer.receive_timeout(Duration::from_secs(2));
    println!(
        "blocked 2 s on a stuck channel with {} records: {:.1} % of a CPU (got {:?})",
        segment.peers().unwrap().collect::<Vec<_>>().len(),
        100.0 * (cpu_seconds() - cpu_before) / wall.elapsed().as_secs_f64(),
        got.map(|m| m.is_some())
    );
    drop(loan);
}
