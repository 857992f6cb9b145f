//! `dmxp inspect`: the header, every channel, the registered peers, and the validation result
//! (the analysis and the text are `dmxp-inspect`'s).

use std::io::{self, Write};

use anyhow::{Context, Result};
use clap::Args;

use dmxp_inspect::{verdict, write_report, Report, SourceJson};

use crate::source::{SegmentArgs, Source};
use crate::Outcome;

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub segment: SegmentArgs,
    /// Print one JSON object (schema in docs/CLI.md).
    #[arg(long)]
    pub json: bool,
}

/// Reads and analyses the segment `source` names, peer table included.
pub fn snapshot(source: &Source) -> Result<Report> {
    let file = source.open_read()?;
    let named = SourceJson {
        kind: source.kind().into(),
        name: source.name(),
    };
    dmxp_inspect::snapshot(named, &file).with_context(|| format!("reading {source}"))
}

pub fn run(args: InspectArgs) -> Result<Outcome> {
    let source = args.segment.source();
    let report = snapshot(&source)?;
    let mut out = io::stdout().lock();
    if args.json {
        // Also of an object that is not a DMXP segment (short: the header as read and that
        // one problem), for scripts; a person gets the one line of the verdict alone.
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else if report.is_dmxp_segment {
        write_report(&mut out, &report)?;
    }
    out.flush()?;
    Ok(match verdict(&report) {
        Some(line) => Outcome::Failure(line),
        None => Outcome::Success,
    })
}
