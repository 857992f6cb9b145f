//! The text `dmxp inspect` prints for a [`Report`]: the header rows, the channel table, the
//! peer table, the stuck positions and the validation result; and the one line that says why
//! the command fails, when it does.

use std::io::{self, Write};

use dmxp_nostd::layout::MAGIC;

use crate::report::{PeerJson, Report};
use crate::table;

/// The column headings of the channel table.
pub const CHANNEL_COLUMNS: [&str; 14] = [
    "ID",
    "STATUS",
    "STATE",
    "CAPACITY",
    "MAX_MSG",
    "RUNS",
    "HEAD",
    "TAIL",
    "DEPTH",
    "PEERS",
    "NOT_EMPTY_WAITERS",
    "NOT_FULL_WAITERS",
    "CREATOR_PID",
    "BAND_OFFSET",
];

/// The column headings of the peer table.
pub const PEER_COLUMNS: [&str; 9] = [
    "INDEX",
    "PID",
    "RUNTIME",
    "ROLE",
    "CHANNEL",
    "ALIVE",
    "START_TIME",
    "INTENT",
    "WAITING",
];

/// The column headings of the table of validation problems.
pub const PROBLEM_COLUMNS: [&str; 3] = ["FIELD", "CHANNEL", "PROBLEM"];

fn heading(columns: &[&str]) -> Vec<String> {
    columns.iter().map(|&c| c.to_owned()).collect()
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The one line that says the object is not a DMXP segment (`shm object /x is not a DMXP
/// segment: bad magic ...`), when the report found it is not.
pub fn not_a_segment_line(report: &Report) -> Option<String> {
    report
        .not_a_segment()
        .map(|why| format!("{} is not a DMXP segment: {why}", report.source.object()))
}

/// The one line that says the segment is invalid (`file segment x is invalid: 2 problems
/// (fields: version, capacity)`); `None` when it is valid.
pub fn invalid_line(report: &Report) -> Option<String> {
    (!report.valid).then(|| {
        format!(
            "{} is invalid: {} problem{} (fields: {})",
            report.source,
            report.problems.len(),
            plural(report.problems.len()),
            report.fields_at_fault().join(", ")
        )
    })
}

/// Why `dmxp inspect` fails on this report, in one line ([`not_a_segment_line`], else
/// [`invalid_line`]); `None` when the segment is valid.
pub fn verdict(report: &Report) -> Option<String> {
    not_a_segment_line(report).or_else(|| invalid_line(report))
}

/// Writes the whole report as `dmxp inspect` prints it (of a DMXP segment: an object that is
/// not one is reported by [`not_a_segment_line`] alone).
pub fn write_report(out: &mut impl Write, report: &Report) -> io::Result<()> {
    let mut rows = vec![
        vec!["segment".into(), report.source.to_string()],
        vec!["size".into(), format!("{} bytes", report.size)],
    ];
    if let Some(h) = &report.header {
        let magic_note = if h.magic == format!("{MAGIC:#018x}") {
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
        let mut rows = vec![heading(&CHANNEL_COLUMNS)];
        for c in &report.channels {
            rows.push(vec![
                c.id.to_string(),
                c.status.to_string(),
                c.state.clone(),
                c.capacity.to_string(),
                c.max_message_size.to_string(),
                c.queued_runs.map_or("-".into(), |n| n.to_string()),
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
    write_blob_pool(&mut *out, report)?;
    write_stuck(&mut *out, report)?;
    writeln!(out)?;
    write_validation(out, report)
}

/// The blob pool: its classes, free bytes, blocks per owner and leaked blocks.
fn write_blob_pool(out: &mut impl Write, report: &Report) -> io::Result<()> {
    let Some(pool) = &report.blob_pool else {
        return Ok(());
    };
    if pool.status != "ok" {
        return writeln!(out, "blob pool at {}: {}", pool.offset, pool.status);
    }
    writeln!(
        out,
        "blob pool at {}: {} bytes, {} of {} block bytes free, {} leaked block(s)",
        pool.offset, pool.len, pool.free_bytes, pool.block_bytes, pool.leaked
    )?;
    let mut rows = vec![heading(&[
        "block_size",
        "blocks",
        "free",
        "loaned",
        "queued",
        "held",
        "invalid",
    ])];
    for c in &pool.classes {
        rows.push(
            [
                c.block_size,
                c.blocks.into(),
                c.free.into(),
                c.loaned.into(),
                c.queued.into(),
                c.held.into(),
                c.invalid.into(),
            ]
            .iter()
            .map(u64::to_string)
            .collect(),
        );
    }
    table::write(&mut *out, &rows)?;
    for owner in &pool.owners {
        let state = match (owner.pid, owner.alive) {
            (0, _) => "free record: leaked".to_owned(),
            (pid, true) => format!("pid {pid}, alive"),
            (pid, false) => format!("pid {pid}, dead: leaked"),
        };
        writeln!(
            out,
            "blob owner: record {} ({state}): {} block(s), {} bytes",
            owner.record, owner.blocks, owner.bytes
        )?;
    }
    writeln!(out)
}

/// One line per position holding a channel up, naming who holds it and for how long.
fn write_stuck(out: &mut impl Write, report: &Report) -> io::Result<()> {
    for s in &report.stuck {
        let what = match s.side.as_str() {
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
    match report.peer_table.as_str() {
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
    let mut rows = vec![heading(&PEER_COLUMNS)];
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
    let mut rows = vec![heading(&PROBLEM_COLUMNS)];
    for p in &report.problems {
        rows.push(vec![
            p.field.to_string(),
            p.channel.map_or("-".into(), |c| c.to_string()),
            p.message.clone(),
        ]);
    }
    table::write(out, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{snapshot, SourceJson};
    use dmxp_nostd::layout::{HEADER_SIZE, SLOT_SIZE};
    use dmxp_nostd::{AlignedBlock, Region, Segment};
    use zerocopy::IntoBytes;

    /// A formatted segment with channel 2 (4 slots).
    fn segment() -> Vec<u8> {
        let size = HEADER_SIZE + 4 * SLOT_SIZE;
        let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(size)];
        {
            let segment = Segment::format(Region::new(memory.as_mut_bytes()).unwrap(), 42).unwrap();
            segment.create_channel(2, 4, 7).unwrap();
        }
        memory.as_bytes().to_vec()
    }

    fn report_of(bytes: &[u8]) -> Report {
        let source = SourceJson {
            kind: "file".into(),
            name: "seg.bin".into(),
        };
        snapshot(source, bytes).unwrap()
    }

    fn text(report: &Report) -> String {
        let mut out = Vec::new();
        write_report(&mut out, report).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_valid_segment() {
        let report = report_of(&segment());
        let text = text(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "segment            file segment seg.bin");
        assert_eq!(lines[2], "magic              0x444d58505f4d454d (DMXP_MEM)");
        let at = lines.iter().position(|l| *l == "channels: 1").unwrap();
        assert_eq!(
            lines[at + 1].split_whitespace().collect::<Vec<_>>(),
            CHANNEL_COLUMNS
        );
        assert!(lines[at + 2].starts_with("2   ok      ready  4 "), "{text}");
        assert!(lines.contains(&"peers: none (no peer table yet)"));
        assert_eq!(lines.last(), Some(&"validation: ok"));
        assert_eq!(verdict(&report), None);
    }

    #[test]
    fn the_verdict_names_the_fields_at_fault_or_the_object() {
        let mut bytes = segment();
        bytes[8..12].copy_from_slice(&9u32.to_le_bytes()); // version
        bytes[12..16].copy_from_slice(&255u32.to_le_bytes()); // max_channels
        bytes[16..20].copy_from_slice(&300u32.to_le_bytes()); // channel_count
        let report = report_of(&bytes);
        assert_eq!(
            verdict(&report).unwrap(),
            "file segment seg.bin is invalid: 3 problems (fields: version, max_channels, \
             channel_count)"
        );
        let text = text(&report);
        assert!(
            text.contains("\nvalidation: FAILED, 3 problems\nFIELD "),
            "{text}"
        );

        let report = report_of(b"0123456789");
        assert_eq!(
            verdict(&report).unwrap(),
            "file seg.bin is not a DMXP segment: object of 10 bytes is too short for the \
             128-byte header fields"
        );
        assert_eq!(
            invalid_line(&report).unwrap().split(':').next(),
            Some("file segment seg.bin is invalid")
        );
    }

    #[test]
    fn a_report_read_back_from_its_json_prints_the_same() {
        let mut bytes = segment();
        bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
        for report in [report_of(&segment()), report_of(&bytes)] {
            let json = serde_json::to_string_pretty(&report).unwrap();
            let back: Report = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_json::to_string_pretty(&back).unwrap(), json);
            assert_eq!(text(&back), text(&report));
            assert_eq!(verdict(&back), verdict(&report));
        }
    }

    #[test]
    fn shm_sources_are_named_as_segments_and_objects() {
        let source = SourceJson {
            kind: "shm".into(),
            name: "/dmxp_alloc".into(),
        };
        assert_eq!(source.to_string(), "shm segment /dmxp_alloc");
        assert_eq!(source.object(), "shm object /dmxp_alloc");
    }
}
