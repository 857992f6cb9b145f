//! Receives and checks the messages `producer` sends, one thread per channel.
//!
//! ```text
//! cargo run --release --example consumer 4 1000 [--segment /dmxp_alloc] [--wait 30]
//!     [--record FILE] [--idle-exit-ms MS]
//! ```
//!
//! Waits for the channels to appear, receives `messages_per_channel` messages on each, checks
//! every payload (channel, index, filler, checksum), and prints msgs/s with the counts of
//! lost (never received), duplicated and corrupt messages. Exits non-zero if any message is
//! missing or wrong. With `--idle-exit-ms` a channel's reader stops once the channel has been
//! idle that long instead (for consumers sharing a channel; nothing then counts as lost), and
//! `--record` writes a line `channel index` per message received, for a harness that checks
//! exactly-once across several consumers.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use dmxp::{pattern, ChannelBuilder, Consumer, ErrorKind};

#[derive(Parser)]
#[command(about = "Receive and verify messages on DMXP channels 0..num_channels")]
struct Args {
    /// Channels to read: 0..num_channels.
    num_channels: u32,
    /// Messages expected on each channel.
    messages_per_channel: u64,
    /// POSIX shm segment name.
    #[arg(long, env = "DMXP_SEGMENT", default_value = dmxp::DEFAULT_SEGMENT_NAME)]
    segment: String,
    /// Seconds to wait for a channel to appear, and for the next message.
    #[arg(long, default_value_t = 30)]
    wait: u64,
    /// Write `channel index` per received message to this file.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Stop reading a channel after it has been idle this long (instead of counting).
    #[arg(long)]
    idle_exit_ms: Option<u64>,
    /// Also trust a segment owned by this uid (PROTOCOL.md §3.4; repeatable).
    #[arg(long, value_name = "UID")]
    trust_owner: Vec<u32>,
    /// Mode (octal) of a segment this creates, and the widest accepted in an existing one.
    #[arg(long, value_name = "MODE", default_value = "600", value_parser = octal)]
    mode: u32,
    /// Expect the large-message lengths (`pattern::large_len` with the channel's limit) and
    /// check each message's length against them.
    #[arg(long)]
    large: bool,
    /// Expect blobs (PROTOCOL.md §13) of `pattern::blob_len(index)` bytes, received in place
    /// and released; the segment gets the pool `pattern::blob_classes()` if this creates it.
    #[arg(long, conflicts_with = "large")]
    blob: bool,
}

fn octal(text: &str) -> Result<u32, String> {
    let digits = text.trim_start_matches("0o");
    u32::from_str_radix(digits, 8).map_err(|e| format!("`{text}` is not octal: {e}"))
}

/// The builder for `args`' segment, trusting what the command line says.
fn segment_builder(args: &Args) -> ChannelBuilder {
    args.trust_owner
        .iter()
        .fold(ChannelBuilder::new(), |b, &uid| b.with_trust_owner(uid))
        .with_segment_name(args.segment.clone())
        .with_mode(args.mode)
}

#[derive(Default)]
struct Tally {
    channel: u32,
    unique: u64,
    duplicated: u64,
    corrupt: u64,
    lost: u64,
    received: Vec<u64>,
    first: Option<Instant>,
    last: Option<Instant>,
}

fn open(args: &Args, channel: u32) -> dmxp::Result<Consumer> {
    let mut builder = segment_builder(args).with_channel_id(channel);
    if args.blob {
        builder = builder.with_blob_classes(pattern::blob_classes());
    }
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    loop {
        match builder.build_consumer() {
            Err(e) if e.kind() == ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

fn receive_all(args: &Args, channel: u32) -> dmxp::Result<Tally> {
    let consumer = open(args, channel)?;
    let expected = args.messages_per_channel;
    let mut seen = HashSet::new();
    let record = args.record.is_some();
    let mut tally = Tally {
        channel,
        ..Tally::default()
    };
    let limit = consumer.max_message_size();
    let large = args.large;
    let blob = args.blob;
    let mut check = |payload: &[u8], tally: &mut Tally| {
        let now = Instant::now();
        tally.first.get_or_insert(now);
        tally.last = Some(now);
        match pattern::decode(payload) {
            Ok((ch, index))
                if ch == u64::from(channel)
                    && (!large || payload.len() == pattern::large_len(index, limit))
                    && (!blob || payload.len() == pattern::blob_len(index)) =>
            {
                if record {
                    tally.received.push(index);
                }
                if seen.insert(index) {
                    tally.unique += 1;
                } else {
                    tally.duplicated += 1;
                }
            }
            _ => tally.corrupt += 1,
        }
    };
    let idle = args.idle_exit_ms.map(Duration::from_millis);
    while args.blob && (idle.is_some() || tally.unique < expected) {
        // In place: the copy is only for the checksum.
        match consumer.receive_blob_timeout(idle.unwrap_or(Duration::from_secs(args.wait)))? {
            Some(message) => {
                check(&message.to_vec(), &mut tally);
                message.release()?;
            }
            None if idle.is_some() => break,
            None => {
                eprintln!(
                    "consumer: channel {channel}: no blob for {}s, giving up",
                    args.wait
                );
                break;
            }
        }
    }
    while !args.blob && (idle.is_some() || tally.unique < expected) {
        let got = consumer.receive_batch_with(64, |_, payload| check(payload, &mut tally))?;
        if got == 0 {
            match consumer.receive_timeout(idle.unwrap_or(Duration::from_secs(args.wait)))? {
                Some(message) => check(&message.payload, &mut tally),
                None if idle.is_some() => break,
                None => {
                    eprintln!(
                        "consumer: channel {channel}: no message for {}s, giving up",
                        args.wait
                    );
                    break;
                }
            }
        }
    }
    let stats = consumer.stats();
    tally.corrupt += stats.corrupt + stats.lost + stats.dropped_in_batch;
    if idle.is_none() {
        tally.lost = expected.saturating_sub(tally.unique);
    }
    Ok(tally)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.num_channels)
            .map(|channel| {
                let args = &args;
                s.spawn(move || receive_all(args, channel))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("receiver thread"))
            .collect()
    });
    let mut ok = true;
    let mut record = match args.record.as_ref().map(File::create).transpose() {
        Ok(file) => file.map(BufWriter::new),
        Err(e) => {
            eprintln!("consumer: cannot create the record file: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut unique, mut lost, mut duplicated, mut corrupt) = (0, 0, 0, 0);
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    for result in results {
        match result {
            Ok(t) => {
                let span = match (t.first, t.last) {
                    (Some(a), Some(b)) => b - a,
                    _ => Duration::ZERO,
                };
                println!(
                    "consumer: channel {}: received {} ({:.0} msgs/s), lost {}, duplicated {}, corrupt {}",
                    t.channel,
                    t.unique,
                    t.unique as f64 / span.as_secs_f64().max(1e-9),
                    t.lost,
                    t.duplicated,
                    t.corrupt
                );
                if let Some(out) = record.as_mut() {
                    for index in &t.received {
                        ok &= writeln!(out, "{} {index}", t.channel).is_ok();
                    }
                }
                unique += t.unique;
                lost += t.lost;
                duplicated += t.duplicated;
                corrupt += t.corrupt;
                first = first.into_iter().chain(t.first).min();
                last = last.into_iter().chain(t.last).max();
            }
            Err(e) => {
                eprintln!("consumer: {e}");
                ok = false;
            }
        }
    }
    if let Some(out) = record.as_mut() {
        ok &= out.flush().is_ok();
    }
    let span = match (first, last) {
        (Some(a), Some(b)) => b - a,
        _ => Duration::ZERO,
    };
    println!(
        "consumer: received {unique} messages on {} channels of {} in {span:.3?}: {:.0} msgs/s; \
         lost {lost}, duplicated {duplicated}, corrupt {corrupt}",
        args.num_channels,
        args.segment,
        unique as f64 / span.as_secs_f64().max(1e-9)
    );
    if ok && lost == 0 && duplicated == 0 && corrupt == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
