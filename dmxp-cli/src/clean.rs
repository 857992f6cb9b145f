//! `dmxp clean`: list the DMXP segments in a directory (`/dev/shm` by default) with whether
//! each is stale, and remove those selected when asked to.
//!
//! Staleness comes from `dmxp::cleanup`: a segment is stale when no process registered in its
//! peer table (PROTOCOL.md §11) is alive and its creator's pid no longer runs. `--stale`
//! selects those, and `--stale --remove` examines each again just before removing it, so a
//! segment that gained a live peer meanwhile is kept. The other selections (`--prefix`,
//! `--creator-gone`, `--all`) remove what they select whatever its liveness, as before.
//! Processes that do not register (a bare allocator, clients older than §11) are not seen.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{ArgGroup, Args};
use serde::Serialize;

use dmxp::cleanup::{self, Removal, SegmentKind, SegmentStatus, Verdict};

use dmxp_inspect::{analyze, read_header, table, SourceJson};

use crate::Outcome;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("selection").multiple(true)
    .args(["prefix", "creator_gone", "stale", "all"])))]
pub struct CleanArgs {
    /// Directory to scan: `/dev/shm` (POSIX shm segments) or a directory of file segments.
    #[arg(long, value_name = "PATH", default_value = cleanup::SHM_DIR)]
    pub dir: PathBuf,
    /// Only segments whose name starts with this (shm names start with `/`).
    #[arg(long, value_name = "NAME")]
    pub prefix: Option<String>,
    /// Only segments whose creator pid is no longer running (live peers may still use them).
    #[arg(long)]
    pub creator_gone: bool,
    /// Only stale segments: no live registered peer, and the creator is gone. With --remove,
    /// each is examined again just before it is removed.
    #[arg(long)]
    pub stale: bool,
    /// Select every DMXP segment found (needed with --remove when nothing else selects).
    #[arg(long)]
    pub all: bool,
    /// Remove the segments listed. Requires --prefix, --creator-gone, --stale or --all.
    /// With --stale, a stale segment that still holds undelivered messages is kept unless
    /// --force is given.
    #[arg(long, requires = "selection")]
    pub remove: bool,
    /// With --stale --remove: remove stale segments even if messages are still queued in them.
    #[arg(long, requires = "remove")]
    pub force: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Listing {
    dir: String,
    /// `true`: peers register in the peer table (PROTOCOL.md §11), so staleness is known.
    liveness_known: bool,
    segments: Vec<Found>,
}

#[derive(Serialize)]
struct Found {
    /// The shm name (`/name`) when scanning /dev/shm, else the file path.
    name: String,
    size: u64,
    creator_pid: u32,
    /// `running`, `gone`, or `unknown` (pid 0).
    creator: &'static str,
    /// Registered peers whose process is alive.
    live_peers: usize,
    /// Registered peers whose process has died.
    dead_peers: usize,
    /// `stale`, `in_use`, or `unknown` (header or peer table invalid: never stale).
    state: &'static str,
    stale: bool,
    /// Why the state is `unknown`, or why a `--stale --remove` kept the segment.
    reason: Option<String>,
    channels: usize,
    /// Messages queued and not yet received, over all ready channels.
    queued: u64,
    valid: bool,
    problems: usize,
    removed: bool,
}

fn creator_state(status: &SegmentStatus) -> &'static str {
    if status.creator_pid == 0 {
        "unknown"
    } else if status.creator_alive {
        "running"
    } else {
        "gone"
    }
}

fn state_name(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Stale => "stale",
        Verdict::InUse { .. } => "in_use",
        Verdict::Unknown { .. } => "unknown",
    }
}

fn describe(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Stale => "stale".into(),
        Verdict::InUse {
            live_peers,
            creator_alive,
        } => {
            let mut why = Vec::new();
            if *live_peers > 0 {
                why.push(format!(
                    "{live_peers} live peer{}",
                    if *live_peers == 1 { "" } else { "s" }
                ));
            }
            if *creator_alive {
                why.push("creator running".into());
            }
            format!("in use ({})", why.join(", "))
        }
        Verdict::Unknown { reason, .. } => format!("liveness unknown: {reason}"),
    }
}

/// The listing row of `status`, with the validation summary from its header.
fn found(status: &SegmentStatus) -> Found {
    let (channels, valid, problems) = File::open(&status.path)
        .and_then(|file| read_header(&file))
        .map(|(size, bytes)| {
            let report = analyze(
                SourceJson {
                    kind: "file".into(),
                    name: status.name.clone(),
                },
                size,
                &bytes,
            );
            (report.channels.len(), report.valid, report.problems.len())
        })
        // Gone or unreadable since the scan: nothing validated.
        .unwrap_or((0, false, 0));
    Found {
        name: status.name.clone(),
        size: status.size,
        creator_pid: status.creator_pid,
        creator: creator_state(status),
        live_peers: status.live_peers(),
        dead_peers: status.dead_peers(),
        state: state_name(&status.verdict),
        stale: status.is_stale(),
        reason: match &status.verdict {
            Verdict::Unknown { reason, .. } => Some(reason.clone()),
            _ => None,
        },
        channels,
        queued: status.queued,
        valid,
        problems,
        removed: false,
    }
}

pub fn run(args: CleanArgs) -> Result<Outcome> {
    let kind = if args.dir == Path::new(cleanup::SHM_DIR) {
        SegmentKind::Shm
    } else {
        SegmentKind::File
    };
    let scanned = cleanup::scan_dir(&args.dir, kind)
        .with_context(|| format!("listing {}", args.dir.display()))?;
    let selected: Vec<SegmentStatus> = scanned
        .into_iter()
        .filter(|s| match &args.prefix {
            Some(prefix) => s.name.starts_with(prefix.as_str()),
            None => true,
        })
        .filter(|s| !args.creator_gone || creator_state(s) == "gone")
        .filter(|s| !args.stale || s.is_stale())
        .collect();
    let mut segments: Vec<(SegmentStatus, Found)> = selected
        .into_iter()
        .map(|s| {
            let f = found(&s);
            (s, f)
        })
        .collect();

    let mut failures = Vec::new();
    let mut kept = Vec::new();
    if args.remove {
        for (status, found) in &mut segments {
            let removal = if args.stale {
                cleanup::remove_if_stale(status, args.force).map_err(|e| e.to_string())
            } else {
                std::fs::remove_file(&status.path)
                    .map(|()| Removal::Removed)
                    .map_err(|e| e.to_string())
            };
            match removal {
                Ok(Removal::Removed) => found.removed = true,
                Ok(Removal::Kept(verdict)) => {
                    let why = describe(&verdict);
                    kept.push(format!("{}: {why}", found.name));
                    found.reason = Some(format!("kept: {why}"));
                }
                Ok(Removal::KeptQueued { queued }) => {
                    let why = format!(
                        "{queued} undelivered messages queued (remove anyway with --force)"
                    );
                    kept.push(format!("{}: {why}", found.name));
                    found.reason = Some(format!("kept: {why}"));
                }
                Err(e) => failures.push(format!("{}: {e}", found.name)),
            }
        }
    }

    let listing = Listing {
        dir: args.dir.display().to_string(),
        liveness_known: true,
        segments: segments.into_iter().map(|(_, f)| f).collect(),
    };
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &listing)?;
        writeln!(out)?;
    } else if listing.segments.is_empty() {
        let what = if args.stale { "stale DMXP" } else { "DMXP" };
        writeln!(out, "no {what} segments in {}", listing.dir)?;
    } else {
        write_table(&mut out, &listing)?;
        for line in &kept {
            writeln!(out, "kept {line}")?;
        }
        writeln!(
            out,
            "note: only registered peers are seen (producers and consumers of current \
             clients). Processes that have a removed segment mapped keep it."
        )?;
    }
    Ok(if failures.is_empty() {
        Outcome::Success
    } else {
        Outcome::Failure(format!("could not remove {}", failures.join("; ")))
    })
}

fn write_table(out: &mut impl Write, listing: &Listing) -> io::Result<()> {
    let mut rows = vec![[
        "NAME",
        "SIZE",
        "CREATOR_PID",
        "CREATOR",
        "LIVE_PEERS",
        "DEAD_PEERS",
        "STALE",
        "CHANNELS",
        "QUEUED",
        "VALID",
        "REMOVED",
    ]
    .map(String::from)
    .to_vec()];
    for f in &listing.segments {
        rows.push(vec![
            f.name.clone(),
            f.size.to_string(),
            f.creator_pid.to_string(),
            f.creator.to_string(),
            f.live_peers.to_string(),
            f.dead_peers.to_string(),
            match f.state {
                "stale" => "yes",
                "in_use" => "no",
                _ => "unknown",
            }
            .to_string(),
            f.channels.to_string(),
            f.queued.to_string(),
            if f.valid {
                "yes".into()
            } else {
                format!("no ({} problems)", f.problems)
            },
            if f.removed { "yes" } else { "no" }.to_string(),
        ]);
    }
    table::write(out, &rows)
}
