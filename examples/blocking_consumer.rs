//! Sleeps (futex) until messages arrive on one channel and prints each with its metadata and
//! its age (now - timestamp_ns, both CLOCK_MONOTONIC).
//!
//! ```text
//! cargo run --release --example blocking_consumer [channel] [count] [--segment /dmxp_alloc]
//! ```
//!
//! Try it with `producer 1 10` in another terminal: this process uses no CPU while it waits.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use dmxp::{ChannelBuilder, ErrorKind};

#[derive(Parser)]
#[command(about = "Block on a DMXP channel and print the messages that arrive")]
struct Args {
    /// Channel to read.
    #[arg(default_value_t = 0)]
    channel: u32,
    /// Messages to receive before exiting.
    #[arg(default_value_t = 10)]
    count: u64,
    /// POSIX shm segment name.
    #[arg(long, env = "DMXP_SEGMENT", default_value = dmxp::DEFAULT_SEGMENT_NAME)]
    segment: String,
    /// Seconds to wait for the channel to appear and for each message.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

fn run(args: &Args) -> dmxp::Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    let builder = ChannelBuilder::new()
        .with_segment_name(args.segment.clone())
        .with_channel_id(args.channel);
    let deadline = Instant::now() + timeout;
    let consumer = loop {
        match builder.build_consumer() {
            Err(e) if e.kind() == ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => break other?,
        }
    };
    println!(
        "blocking_consumer: waiting on channel {} of {}",
        args.channel, args.segment
    );
    for _ in 0..args.count {
        let Some(message) = consumer.receive_timeout(timeout)? else {
            println!("blocking_consumer: nothing for {timeout:?}, exiting");
            break;
        };
        let meta = message.meta;
        let age_us = dmxp::monotonic_ns().saturating_sub(meta.timestamp_ns) as f64 / 1e3;
        let head = &message.payload[..message.payload.len().min(24)];
        let text = match std::str::from_utf8(head) {
            Ok(text) if !text.contains(char::is_control) => format!("\"{text}\""),
            _ => head.iter().map(|b| format!("{b:02x}")).collect(),
        };
        println!(
            "#{} type {} from pid {} (runtime {}), {} bytes, {age_us:.1} us old: {text}",
            meta.message_id,
            meta.message_type,
            meta.sender_pid,
            meta.sender_runtime,
            message.payload.len()
        );
    }
    let stats = consumer.stats();
    println!(
        "blocking_consumer: received {}, lost {}, corrupt {}; {} futex waits",
        stats.received,
        stats.lost,
        stats.corrupt,
        dmxp::futex_wait_calls()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blocking_consumer: {e}");
            ExitCode::FAILURE
        }
    }
}
