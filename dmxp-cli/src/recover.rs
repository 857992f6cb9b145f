//! `dmxp recover`: one repair pass (PROTOCOL.md §11.6) over a channel, or every channel: the
//! positions that dead producers claimed and never published become LOST tombstones, the
//! slots that dead consumers claimed and never freed are freed, and dead records are freed.

use std::io::{self, Write};

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use dmxp_inspect::table;

use crate::source::SegmentArgs;
use crate::{parse, Outcome};

#[derive(Args, Debug)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub segment: SegmentArgs,
    /// Only this channel (default: every channel of the segment).
    #[arg(long, value_name = "ID", value_parser = parse::channel_id)]
    pub channel: Option<u32>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What one pass did, for one channel or in total.
#[derive(Serialize, Default, Clone, Copy)]
struct Repaired {
    /// Positions of dead producers published as LOST tombstones.
    tombstoned: u64,
    /// Slots of dead consumers freed (their messages are lost).
    freed: u64,
    /// Dead peer records freed.
    records_freed: u32,
    /// Dead records given back for a later pass (another intent covered a position).
    records_deferred: u32,
}

impl Repaired {
    fn add(&mut self, other: Repaired) {
        self.tombstoned += other.tombstoned;
        self.freed += other.freed;
        self.records_freed += other.records_freed;
        self.records_deferred += other.records_deferred;
    }
}

impl From<dmxp::RepairReport> for Repaired {
    fn from(r: dmxp::RepairReport) -> Self {
        Repaired {
            tombstoned: r.tombstoned,
            freed: r.freed,
            records_freed: r.records_freed,
            records_deferred: r.records_deferred,
        }
    }
}

#[derive(Serialize)]
struct ChannelRepair {
    channel: u32,
    #[serde(flatten)]
    repaired: Repaired,
}

#[derive(Serialize)]
struct Recovery {
    segment: String,
    channels: Vec<ChannelRepair>,
    total: Repaired,
    /// Blob-pool blocks given back (PROTOCOL.md §13.6; 0 without a pool).
    blob_blocks_reclaimed: u32,
}

pub fn run(args: RecoverArgs) -> Result<Outcome> {
    let source = args.segment.source();
    let allocator = args.segment.builder().attach_allocator()?;
    let ids: Vec<u32> = match args.channel {
        Some(id) => vec![id],
        None => allocator.channels().iter().map(|c| c.id).collect(),
    };
    let mut recovery = Recovery {
        segment: source.to_string(),
        channels: Vec::new(),
        total: Repaired::default(),
        blob_blocks_reclaimed: 0,
    };
    for id in ids {
        let report = allocator.recover(id)?;
        // A dead record's blocks are given back with the record (PROTOCOL.md §13.6).
        recovery.blob_blocks_reclaimed += report.blocks_reclaimed;
        let repaired = Repaired::from(report);
        recovery.total.add(repaired);
        recovery.channels.push(ChannelRepair {
            channel: id,
            repaired,
        });
    }
    // After the channels' repairs, which free the positions a queued block waits on.
    recovery.blob_blocks_reclaimed += allocator.reclaim_blobs()?;

    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &recovery)?;
        writeln!(out)?;
        return Ok(Outcome::Success);
    }
    if recovery.channels.is_empty() {
        writeln!(out, "{source}: no channels")?;
        return Ok(Outcome::Success);
    }
    let mut rows = vec![[
        "CHANNEL",
        "TOMBSTONED",
        "FREED",
        "RECORDS_FREED",
        "RECORDS_DEFERRED",
    ]
    .map(String::from)
    .to_vec()];
    for c in &recovery.channels {
        let r = c.repaired;
        rows.push(vec![
            c.channel.to_string(),
            r.tombstoned.to_string(),
            r.freed.to_string(),
            r.records_freed.to_string(),
            r.records_deferred.to_string(),
        ]);
    }
    table::write(&mut out, &rows)?;
    let t = recovery.total;
    if t.tombstoned + t.freed == 0 && t.records_freed + t.records_deferred == 0 {
        writeln!(out, "nothing to repair")?;
    } else {
        writeln!(
            out,
            "{} position{} of dead producers tombstoned (LOST), {} slot{} of dead consumers \
             freed, {} dead record{} freed",
            t.tombstoned,
            plural(t.tombstoned),
            t.freed,
            plural(t.freed),
            t.records_freed,
            plural(u64::from(t.records_freed)),
        )?;
    }
    if recovery.blob_blocks_reclaimed > 0 {
        writeln!(
            out,
            "{} blob-pool block{} of dead or departed peers given back",
            recovery.blob_blocks_reclaimed,
            plural(u64::from(recovery.blob_blocks_reclaimed))
        )?;
    }
    if t.records_deferred > 0 {
        writeln!(
            out,
            "{} dead record{} deferred: a position is covered by another intent right now; \
             run again",
            t.records_deferred,
            plural(u64::from(t.records_deferred))
        )?;
    }
    Ok(Outcome::Success)
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
