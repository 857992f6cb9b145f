//! Sends verifiable messages on several channels, one thread per channel.
//!
//! ```text
//! cargo run --release --example producer 4 1000 [capacity] [--segment /dmxp_alloc]
//!     [--first-index K] [--batch N] [--full-wait SECONDS]
//! ```
//!
//! Creates the segment and the channels if they do not exist (two processes racing to do so
//! get one of each). Message `i` of channel `c` is `dmxp::pattern::encode(c, i, ..)`; a full
//! ring makes the sender sleep until a consumer frees a slot.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use dmxp::{pattern, ChannelBuilder, ErrorKind};

#[derive(Parser)]
#[command(about = "Send verifiable messages on DMXP channels 0..num_channels")]
struct Args {
    /// Channels to use: 0..num_channels.
    num_channels: u32,
    /// Messages to send on each channel.
    messages_per_channel: u64,
    /// Ring capacity of channels this creates (a power of two).
    #[arg(default_value_t = dmxp::DEFAULT_CAPACITY)]
    capacity: u64,
    /// POSIX shm segment name.
    #[arg(long, env = "DMXP_SEGMENT", default_value = dmxp::DEFAULT_SEGMENT_NAME)]
    segment: String,
    /// Size of the segment if this creates it, in bytes.
    #[arg(long, default_value_t = dmxp::DEFAULT_SEGMENT_SIZE)]
    size: usize,
    /// Index of the first message (so several producers can share a channel).
    #[arg(long, default_value_t = 0)]
    first_index: u64,
    /// Send with the batch API, this many messages per call (1: one at a time).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    batch: u64,
    /// Seconds a send waits on a full ring for a consumer before giving up.
    #[arg(long, default_value_t = 60)]
    full_wait: u64,
    /// Also trust a segment owned by this uid (PROTOCOL.md §3.4; repeatable).
    #[arg(long, value_name = "UID")]
    trust_owner: Vec<u32>,
    /// Mode (octal) of a segment this creates, and the widest accepted in an existing one.
    #[arg(long, value_name = "MODE", default_value = "600", value_parser = octal)]
    mode: u32,
    /// Send the large-message lengths (`pattern::large_len` with the channel's limit): one
    /// slot, its edge, the first run, 64 KiB and the limit, in turn.
    #[arg(long)]
    large: bool,
    /// The largest message of channels this creates (bytes; above 960 they carry runs).
    /// Default: 262,144 with --large, else 960.
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<usize>,
    /// Send blobs (PROTOCOL.md §13): message `index` is `pattern::blob_len(index)` bytes (up to
    /// 4 MiB), written in place into a block loaned from the pool `pattern::blob_classes()`
    /// (made if this creates the segment); a loan waits up to --full-wait for a free block.
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

struct Sent {
    channel: u32,
    count: u64,
    full: u64,
    elapsed: Duration,
}

fn send_all(args: &Args, channel: u32) -> dmxp::Result<Sent> {
    if args.blob {
        return send_blobs(args, channel);
    }
    let producer = segment_builder(args)
        .with_segment_size(args.size)
        .with_channel_id(channel)
        .with_capacity(args.capacity)
        .with_max_message_size(args.max_message_size.unwrap_or(if args.large {
            256 << 10
        } else {
            0
        }))
        .build_producer()?;
    let limit = producer.max_message_size();
    let len = |index| {
        if args.large {
            pattern::large_len(index, limit)
        } else {
            pattern::default_len(index)
        }
    };
    let started = Instant::now();
    let mut full = 0;
    let end = args.first_index + args.messages_per_channel;
    let mut next = args.first_index;
    let mut batch = Vec::with_capacity(args.batch as usize);
    while next < end {
        batch.clear();
        batch.extend(
            (next..end.min(next + args.batch))
                .map(|index| pattern::encode(channel, index, len(index))),
        );
        // Batches carry single-slot messages: the large run sends one at a time.
        let sent = match if args.large {
            producer.send(&batch[0]).map(|_| 1)
        } else {
            producer.send_batch(&batch)
        } {
            Ok(sent) => sent,
            Err(e) if e.kind() == ErrorKind::Full => {
                full += 1;
                // Sleep on the channel's futex until a consumer frees a slot.
                producer.send_timeout(&batch[0], Duration::from_secs(args.full_wait))?;
                1
            }
            Err(e) => return Err(e),
        };
        next += sent as u64;
    }
    Ok(Sent {
        channel,
        count: args.messages_per_channel,
        full,
        elapsed: started.elapsed(),
    })
}

/// `--blob`: each message written in place into a loaned block, then committed.
fn send_blobs(args: &Args, channel: u32) -> dmxp::Result<Sent> {
    let producer = segment_builder(args)
        .with_segment_size(args.size)
        .with_channel_id(channel)
        .with_capacity(args.capacity)
        .with_blob_classes(pattern::blob_classes())
        .build_producer()?;
    let started = Instant::now();
    let wait = Duration::from_secs(args.full_wait);
    for index in args.first_index..args.first_index + args.messages_per_channel {
        let payload = pattern::encode(channel, index, pattern::blob_len(index));
        let mut loan = producer.loan_blob_timeout(payload.len(), wait)?;
        let written = loan.write_at(0, &payload);
        debug_assert!(written, "a loan holds the length it was asked for");
        loan.commit()?;
    }
    Ok(Sent {
        channel,
        count: args.messages_per_channel,
        full: 0,
        elapsed: started.elapsed(),
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.num_channels)
            .map(|channel| {
                let args = &args;
                s.spawn(move || send_all(args, channel))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sender thread"))
            .collect()
    });
    let elapsed = started.elapsed();
    let mut failed = false;
    let mut total = 0;
    for result in results {
        match result {
            Ok(sent) => {
                total += sent.count;
                println!(
                    "producer: channel {}: sent {} in {:.3?} ({:.0} msgs/s), ring full {} times",
                    sent.channel,
                    sent.count,
                    sent.elapsed,
                    sent.count as f64 / sent.elapsed.as_secs_f64(),
                    sent.full
                );
            }
            Err(e) => {
                eprintln!("producer: {e}");
                failed = true;
            }
        }
    }
    println!(
        "producer: sent {total} messages on {} channels of {} in {elapsed:.3?}: {:.0} msgs/s",
        args.num_channels,
        args.segment,
        total as f64 / elapsed.as_secs_f64()
    );
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
