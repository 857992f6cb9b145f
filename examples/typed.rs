//! Typed messages between two processes: a `#[repr(C)]` struct sent with `send_value` and
//! received with `receive_value`, its layout checked by zerocopy's derives instead of glue code.
//!
//! ```text
//! cargo run --release --example typed [count] [--segment /dmxp_typed]
//! ```
//!
//! The process creates channel 0, starts a copy of itself as the consumer, and sends `count`
//! quotes; the consumer checks every field of every quote and prints a summary.

use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Parser;
use dmxp::ChannelBuilder;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// One message: 24 bytes, no padding (the derives refuse a layout with holes).
#[derive(IntoBytes, FromBytes, Immutable, KnownLayout, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Quote {
    /// Price in units of 10⁻⁴.
    price: i64,
    sequence: u64,
    quantity: u32,
    venue: u32,
}

impl Quote {
    /// The quote number `sequence` the producer sends (the consumer recomputes it to check).
    fn number(sequence: u64) -> Self {
        Self {
            price: 1_000_000 + (sequence % 1000) as i64,
            sequence,
            quantity: (sequence % 500) as u32 + 1,
            venue: (sequence % 7) as u32,
        }
    }
}

#[derive(Parser)]
#[command(about = "Send typed quotes to a consumer process and check them")]
struct Args {
    /// Quotes to send.
    #[arg(default_value_t = 100_000)]
    count: u64,
    /// POSIX shm segment name.
    #[arg(long, env = "DMXP_SEGMENT", default_value = "/dmxp_typed")]
    segment: String,
    /// Run as the consumer (started by the producer).
    #[arg(long, hide = true)]
    consume: bool,
}

fn builder(args: &Args) -> ChannelBuilder {
    ChannelBuilder::new()
        .with_segment_name(args.segment.clone())
        .with_segment_size(4 << 20)
        .with_channel_id(0)
        .with_capacity(1024)
}

fn consume(args: &Args) -> dmxp::Result<()> {
    let consumer = builder(args).build_consumer()?;
    for sequence in 0..args.count {
        let quote: Quote = consumer
            .receive_value_timeout(Duration::from_secs(10))?
            .ok_or_else(|| std::io::Error::other(format!("quote {sequence} never came")))?;
        if quote != Quote::number(sequence) {
            return Err(std::io::Error::other(format!(
                "quote {sequence}: got {quote:?}, expected {:?}",
                Quote::number(sequence)
            ))
            .into());
        }
    }
    println!(
        "consumer: {} quotes of {} bytes received in order, every field as sent",
        args.count,
        std::mem::size_of::<Quote>()
    );
    Ok(())
}

fn produce(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let producer = builder(args).build_producer()?;
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            &args.count.to_string(),
            "--segment",
            &args.segment,
            "--consume",
        ])
        .spawn()?;
    for sequence in 0..args.count {
        producer.send_value_timeout(&Quote::number(sequence), Duration::from_secs(10))?;
    }
    let status = child.wait()?;
    let _ = dmxp::unlink_segment(&args.segment);
    if !status.success() {
        return Err(format!("consumer failed: {status}").into());
    }
    println!("producer: {} quotes sent", args.count);
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.consume {
        consume(&args).map_err(Into::into)
    } else {
        produce(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("typed: {e}");
            ExitCode::FAILURE
        }
    }
}
