//! The `no_std` core over a plain aligned buffer, as an allocator's arena or a hypervisor's
//! shared page would hold it: no OS segment, no std facade, just `dmxp::core` (the
//! `dmxp-nostd` crate) and two threads sharing the region.
//!
//! ```text
//! cargo run --release --example static_region [messages]
//! ```
//!
//! `--segment` / `DMXP_SEGMENT` is accepted like every example's, but unused: this region is
//! ordinary process memory.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use dmxp::core::atomic::{AtomicU32, Ordering};
use dmxp::core::layout::{HEADER_SIZE, MSG_INLINE, SLOT_SIZE};
use dmxp::core::{AlignedBlock, Region, Segment, SendMeta, WaitOutcome, WaitStrategy};
use dmxp::pattern;
use zerocopy::IntoBytes;

#[derive(Parser)]
#[command(about = "Run a DMXP channel in a plain buffer shared by two threads")]
struct Args {
    /// Messages to pass.
    #[arg(default_value_t = 1_000_000)]
    messages: u64,
    /// Unused here (the region is ordinary memory); accepted for uniformity.
    #[arg(long, env = "DMXP_SEGMENT", default_value = dmxp::DEFAULT_SEGMENT_NAME)]
    segment: String,
}

const CAPACITY: u64 = 256;

/// A wait strategy without an OS wait primitive (as a hypervisor guest or an allocator might
/// have): spin briefly on the word, then give the CPU away so the peer thread can run even
/// when the machine has more runnable threads than cores. Waking is free: waiters watch the
/// word.
#[derive(Clone, Copy)]
struct SpinThenYield;

impl WaitStrategy for SpinThenYield {
    fn wait(&self, word: &AtomicU32, expected: u32) -> WaitOutcome {
        for _ in 0..64 {
            if word.load(Ordering::Acquire) != expected {
                return WaitOutcome::Woken;
            }
            std::hint::spin_loop();
        }
        std::thread::yield_now();
        WaitOutcome::Woken
    }

    fn wake_all(&self, _word: &AtomicU32) {}
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The header plus one band of 256 slots, in 128-byte aligned blocks.
    let bytes = HEADER_SIZE + CAPACITY as usize * SLOT_SIZE;
    let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(bytes)];
    let region = Region::new(memory.as_mut_bytes()).expect("aligned buffer");
    let segment = Segment::format(region, std::process::id()).expect("format");
    let channel = segment
        .create_channel(0, CAPACITY, 0)
        .expect("create channel");

    let started = Instant::now();
    let wrong = std::thread::scope(|s| {
        s.spawn(|| {
            let meta = SendMeta {
                sender_runtime: dmxp::runtime::RUST,
                ..SendMeta::default()
            };
            for index in 0..args.messages {
                let payload = pattern::encode(0, index, pattern::default_len(index));
                channel
                    .send_blocking(&payload, &meta, &SpinThenYield)
                    .expect("send");
            }
        });
        let receiver = s.spawn(|| {
            let mut buf = [0u8; MSG_INLINE];
            let mut wrong = 0u64;
            for index in 0..args.messages {
                let received = channel
                    .recv_blocking(&mut buf, &SpinThenYield)
                    .expect("receive");
                wrong += u64::from(pattern::decode(&buf[..received.len]) != Ok((0, index)));
            }
            wrong
        });
        receiver.join().expect("receiver")
    });
    let elapsed = started.elapsed();
    println!(
        "static_region: {} messages through a {bytes}-byte buffer between two threads in \
         {elapsed:.3?} ({:.0} msgs/s), {wrong} wrong",
        args.messages,
        args.messages as f64 / elapsed.as_secs_f64()
    );
    if wrong == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
