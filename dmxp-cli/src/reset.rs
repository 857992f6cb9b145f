//! `dmxp reset`: brings a channel back after a peer scribbled on its cursors (an impossible
//! `head`/`tail` that `dmxp inspect` flags), discarding and counting what was queued. Refuses
//! while live peers hold claims on the channel unless `--force`.

use std::io::{self, Write};

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::source::SegmentArgs;
use crate::{parse, Outcome};

#[derive(Args, Debug)]
pub struct ResetArgs {
    #[command(flatten)]
    pub segment: SegmentArgs,
    /// The channel to reset.
    #[arg(long, value_name = "ID", value_parser = parse::channel_id)]
    pub channel: u32,
    /// Reset even while live peers hold claims on the channel (their claims are revoked).
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Reset {
    segment: String,
    channel: u32,
    /// Published messages that were queued and are now gone.
    discarded: u64,
}

pub fn run(args: ResetArgs) -> Result<Outcome> {
    let source = args.segment.source();
    let allocator = args.segment.builder().attach_allocator()?;
    let discarded = allocator.reset(args.channel, args.force)?;
    let reset = Reset {
        segment: source.name(),
        channel: args.channel,
        discarded,
    };
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &reset)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "reset channel {} of {source}: {discarded} queued messages discarded",
            args.channel
        )?;
    }
    Ok(Outcome::Success)
}
