//! `dmxp inspect`: the header, every channel, the registered peers, and the validation result.

use std::io::{self, Write};

use anyhow::{Context, Result};
use clap::Args;

use crate::report::{add_peers, add_stuck, analyze, PeerJson, Report, SourceJson};
use crate::source::{read_header_of, SegmentArgs, Source};
use crate::{table, Outcome};

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
    let (size, bytes) = read_header_of(&file).with_context(|| format!("reading {source}"))?;
    let mut report = analyze(
        SourceJson {
            kind: source.kind(),
            name: source.name(),
        },
        size,
        &bytes,
    );
    add_peers(&mut report, &file, dmxp::peer_alive);
    add_stuck(&mut report, &file, dmxp::monotonic_ns());
    Ok(report)
}

/// The one line that says `source` is not a DMXP segment, when the report found it is not.
pub fn not_a_segment(source: &Source, report: &Report) -> Option<String> {
    report
        .not_a_segment()
        .map(|why| format!("{} is not a DMXP segment: {why}", source.object()))
}

pub fn run(args: InspectArgs) -> Result<Outcome> {
    let source = args.segment.source();
    let report = snapshot(&source)?;
    let mut out = io::stdout().lock();
    if let Some(line) = not_a_segment(&source, &report) {
        // The JSON report (short: the header as read and that one problem) stays on stdout
        // for scripts; a person gets the one line.
        if args.json {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
            out.flush()?;
        }
        return Ok(Outcome::Failure(line));
    }
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write_human(&mut out, &source, &report)?;
    }
    out.flush()?;
    Ok(if report.valid {
        Outcome::Success
    } else {
        Outcome::Failure(format!(
            "{source} is invalid: {} problem{} (fields: {})",
            report.problems.len(),
            plural(report.problems.len()),
            field_list(&report)
        ))
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The fields at fault, each once, in the order first found.
fn field_list(report: &Report) -> String {
    let mut fields: Vec<&str> = Vec::new();
    for p in &report.problems {
        if !fields.contains(&p.field) {
            fields.push(p.field);
        }
    }
    fields.join(", ")
}

fn write_human(out: &mut impl Write, source: &Source, report: &Report) -> io::Result<()> {
    let mut rows = vec![
        vec!["segment".into(), source.to_string()],
        vec!["size".into(), format!("{} bytes", report.size)],
    ];
    if let Some(h) = &report.header {
        let magic_note = if h.magic == format!("{:#018x}", dmxp_nostd::layout::MAGIC) {
            " (DMXP_MEM)"
        } else {
            ""
        };
        let free = report.segment_len.saturating_sub(h.band_cursor);
        rows.extend([
            vec!["magic".into(), format!("{}{magic_note}", h.magic)],
            vec!["version".into(), h.version.to_string()],
            vec!["max_channels".into(), h.max_channels.to_string()],
            vec!["channel_count".into(), h.channel_count.to_string()],
            vec!["segment_size".into(), h.segment_size.to_string()],
            vec![
                "band_cursor".into(),
                format!("{} ({free} bytes free)", h.band_cursor),
            ],
            vec!["creator_pid".into(), h.creator_pid.to_string()],
            vec!["header_flags".into(), format!("{:#x}", h.header_flags)],
            vec![
                "peer_table_offset".into(),
                match h.peer_table_offset {
                    0 => "0 (no peer table yet)".into(),
                    offset => offset.to_string(),
                },
            ],
            vec![
                "peer_records".into(),
                match h.peer_records {
                    0 => "0 (the default: 256 records)".into(),
                    n => n.to_string(),
                },
            ],
        ]);
    }
    table::write(&mut *out, &rows)?;
    writeln!(out)?;

    if report.channels.is_empty() {
        writeln!(out, "channels: none")?;
    } else {
        writeln!(out, "channels: {}", report.channels.len())?;
        let mut rows = vec![[
            "ID",
            "STATUS",
            "STATE",
            "CAPACITY",
            "HEAD",
            "TAIL",
            "DEPTH",
            "PEERS",
            "NOT_EMPTY_WAITERS",
            "NOT_FULL_WAITERS",
            "CREATOR_PID",
            "BAND_OFFSET",
        ]
        .map(String::from)
        .to_vec()];
        for c in &report.channels {
            rows.push(vec![
                c.id.to_string(),
                c.status.to_string(),
                c.state.clone(),
                c.capacity.to_string(),
                c.head.to_string(),
                c.tail.to_string(),
                c.depth.map_or("-".into(), |d| d.to_string()),
                c.peers
                    .map_or("-".into(), |p| format!("{}/{}", p.producers, p.consumers)),
                c.not_empty_waiters.to_string(),
                c.not_full_waiters.to_string(),
                c.creator_pid.to_string(),
                c.band_offset.to_string(),
            ]);
        }
        table::write(&mut *out, &rows)?;
    }
    writeln!(out)?;
    write_peers(&mut *out, report)?;
    write_stuck(&mut *out, report)?;
    writeln!(out)?;
    write_validation(out, report)
}

/// One line per position holding a channel up, naming who holds it and for how long.
fn write_stuck(out: &mut impl Write, report: &Report) -> io::Result<()> {
    for s in &report.stuck {
        let what = match s.side {
            "receive" => "claimed by a producer, not published: receives wait",
            _ => "claimed by a consumer, not freed: sends find the ring full",
        };
        let holders = if s.holders.is_empty() {
            "no registered holder".to_owned()
        } else {
            s.holders
                .iter()
                .map(|h| {
                    let state = if h.alive { "alive" } else { "dead" };
                    format!("pid {} ({state}, record {})", h.pid, h.index)
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let since = s
            .for_ms
            .map_or("not yet noted by a waiting peer".to_owned(), |ms| {
                format!("stuck for {ms} ms")
            });
        writeln!(
            out,
            "stuck: channel {} position {}: {what}; held by {holders}; {since}",
            s.channel, s.position
        )?;
    }
    Ok(())
}

/// The line that opens the peer table section: why the records were not read, or how many
/// are taken and how many of those are dead.
pub fn peers_line(report: &Report) -> String {
    let offset = report.header.as_ref().map_or(0, |h| h.peer_table_offset);
    match report.peer_table {
        "none" => "peers: none (no peer table yet)".into(),
        "invalid" => {
            let field = match report.problems.iter().any(|p| p.field == "peer_records") {
                true => "peer_records",
                false => "peer_table_offset",
            };
            format!("peers: not read ({field} is invalid)")
        }
        "skipped" => "peers: not read (the header is invalid)".into(),
        "unreadable" => format!(
            "peers: unreadable: {}",
            report
                .peer_table_error
                .as_deref()
                .unwrap_or("unknown error")
        ),
        _ if report.peers.is_empty() => format!("peers: none registered (peer table at {offset})"),
        _ => format!(
            "peers: {} registered, {} dead (peer table at {offset})",
            report.peers.len(),
            report.peers.iter().filter(|p| !p.alive).count()
        ),
    }
}

/// The peer table section: one row per taken record.
fn write_peers(out: &mut impl Write, report: &Report) -> io::Result<()> {
    writeln!(out, "{}", peers_line(report))?;
    if report.peers.is_empty() {
        return Ok(());
    }
    let mut rows = vec![[
        "INDEX",
        "PID",
        "RUNTIME",
        "ROLE",
        "CHANNEL",
        "ALIVE",
        "START_TIME",
        "INTENT",
        "WAITING",
    ]
    .map(String::from)
    .to_vec()];
    rows.extend(report.peers.iter().map(peer_row));
    table::write(out, &rows)
}

fn peer_row(p: &PeerJson) -> Vec<String> {
    vec![
        p.index.to_string(),
        p.pid.to_string(),
        p.runtime_name.clone(),
        p.role.clone(),
        p.channel.to_string(),
        if p.alive { "yes" } else { "no" }.into(),
        p.start_time.to_string(),
        // Half-open, as Rust writes ranges: positions first..first+count.
        p.intent.map_or("-".into(), |i| {
            format!(
                "{}..{}",
                i.position,
                i.position.wrapping_add(u64::from(i.count))
            )
        }),
        p.waiting.clone().unwrap_or_else(|| "-".into()),
    ]
}

/// The validation result: `validation: ok`, or a table of problems.
pub fn write_validation(out: &mut impl Write, report: &Report) -> io::Result<()> {
    if report.valid {
        return writeln!(out, "validation: ok");
    }
    writeln!(
        out,
        "validation: FAILED, {} problem{}",
        report.problems.len(),
        plural(report.problems.len())
    )?;
    let mut rows = vec![["FIELD", "CHANNEL", "PROBLEM"].map(String::from).to_vec()];
    for p in &report.problems {
        rows.push(vec![
            p.field.to_string(),
            p.channel.map_or("-".into(), |c| c.to_string()),
            p.message.clone(),
        ]);
    }
    table::write(out, &rows)
}
