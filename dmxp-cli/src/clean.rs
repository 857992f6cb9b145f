//! `dmxp clean`: list the DMXP segments in a directory (`/dev/shm` by default), and remove
//! those selected when asked to.
//!
//! Version 1 of the protocol records only the pid of a segment's creator, not who is attached
//! now, so this command cannot tell a stale segment from one in use. It shows whether the
//! creator's pid still runs, as a hint, and removes only what the user selects.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{ArgGroup, Args};
use serde::Serialize;

use dmxp_nostd::layout::MAGIC;

use crate::report::{analyze, SourceJson};
use crate::source::read_header_of;
use crate::{table, Outcome};

const SHM_DIR: &str = "/dev/shm";

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("selection").multiple(true).args(["prefix", "creator_gone", "all"])))]
pub struct CleanArgs {
    /// Directory to scan: `/dev/shm` (POSIX shm segments) or a directory of file segments.
    #[arg(long, value_name = "PATH", default_value = SHM_DIR)]
    pub dir: PathBuf,
    /// Only segments whose name starts with this (shm names start with `/`).
    #[arg(long, value_name = "NAME")]
    pub prefix: Option<String>,
    /// Only segments whose creator pid is no longer running (a hint, not proof of staleness).
    #[arg(long)]
    pub creator_gone: bool,
    /// Select every DMXP segment found (needed with --remove when nothing else selects).
    #[arg(long)]
    pub all: bool,
    /// Remove the segments listed. Requires --prefix, --creator-gone or --all.
    #[arg(long, requires = "selection")]
    pub remove: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Listing {
    dir: String,
    /// Always `false` in protocol version 1: attached peers are not recorded.
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
    channels: usize,
    valid: bool,
    problems: usize,
    removed: bool,
}

fn creator_state(pid: u32) -> &'static str {
    if pid == 0 {
        "unknown"
    } else if Path::new("/proc").join(pid.to_string()).exists() {
        "running"
    } else {
        "gone"
    }
}

/// Reads `path`: `Some` only if it starts with the DMXP magic.
fn examine(path: &Path, name: String) -> Option<Found> {
    let file = File::open(path).ok()?;
    let (size, bytes) = read_header_of(&file).ok()?;
    let magic = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    if magic != MAGIC {
        return None;
    }
    let report = analyze(
        SourceJson {
            kind: "file",
            name: name.clone(),
        },
        size,
        &bytes,
    );
    let creator_pid = report.header.as_ref().map_or(0, |h| h.creator_pid);
    Some(Found {
        name,
        size,
        creator_pid,
        creator: creator_state(creator_pid),
        channels: report.channels.len(),
        valid: report.valid,
        problems: report.problems.len(),
        removed: false,
    })
}

pub fn run(args: CleanArgs) -> Result<Outcome> {
    let is_shm = args.dir == Path::new(SHM_DIR);
    let entries =
        std::fs::read_dir(&args.dir).with_context(|| format!("listing {}", args.dir.display()))?;
    let mut segments = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let name = if is_shm {
            format!("/{}", entry.file_name().to_string_lossy())
        } else {
            path.display().to_string()
        };
        if args.prefix.as_ref().is_some_and(|p| !name.starts_with(p)) {
            continue;
        }
        if let Some(found) = examine(&path, name) {
            if args.creator_gone && found.creator != "gone" {
                continue;
            }
            segments.push((path, found));
        }
    }
    segments.sort_by(|a, b| a.1.name.cmp(&b.1.name));

    let mut failures = Vec::new();
    if args.remove {
        for (path, found) in &mut segments {
            match std::fs::remove_file(&*path) {
                Ok(()) => found.removed = true,
                Err(e) => failures.push(format!("{}: {e}", found.name)),
            }
        }
    }

    let listing = Listing {
        dir: args.dir.display().to_string(),
        liveness_known: false,
        segments: segments.into_iter().map(|(_, f)| f).collect(),
    };
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &listing)?;
        writeln!(out)?;
    } else if listing.segments.is_empty() {
        writeln!(out, "no DMXP segments in {}", listing.dir)?;
    } else {
        let mut rows = vec![[
            "NAME",
            "SIZE",
            "CREATOR_PID",
            "CREATOR",
            "CHANNELS",
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
                f.channels.to_string(),
                if f.valid {
                    "yes".into()
                } else {
                    format!("no ({} problems)", f.problems)
                },
                if f.removed { "yes" } else { "no" }.to_string(),
            ]);
        }
        table::write(&mut out, &rows)?;
        writeln!(
            out,
            "note: protocol version 1 does not record attached peers; a segment whose creator \
             is gone may still be in use. Processes that have a removed segment mapped keep it."
        )?;
    }
    Ok(if failures.is_empty() {
        Outcome::Success
    } else {
        Outcome::Failure(format!("could not remove {}", failures.join("; ")))
    })
}
