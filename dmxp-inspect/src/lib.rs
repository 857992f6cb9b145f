//! What `dmxp inspect` (and `python -m dmxp inspect`) reports about a DMXP segment: the
//! header, every channel entry in use, the registered peers (alive or dead), the positions
//! that hold a channel up, and every validation problem found, not just the first.
//!
//! The segment is read, never mapped nor written, from an [`Object`]: an open [`File`] (an
//! shm object is one under /dev/shm) or a copy of its bytes. [`snapshot`] does the whole
//! reading; its steps are [`read_header`] and [`analyze`] (the header copy), then
//! [`add_peers`] (the peer table) and [`add_stuck`] (the slots at the cursors).
//!
//! A [`Report`] serializes (serde) to the JSON of `dmxp inspect --json`, key for key and in
//! the same order (docs/CLI.md), and deserializes from it; [`write_report`] writes the text
//! of `dmxp inspect`, and [`verdict`] the one line that says why it fails.
//!
//! ```no_run
//! use std::fs::File;
//! use dmxp_inspect::{snapshot, verdict, write_report, SourceJson};
//!
//! # fn main() -> std::io::Result<()> {
//! let file = File::open("/dev/shm/dmxp_alloc")?;
//! let source = SourceJson { kind: "shm".into(), name: "/dmxp_alloc".into() };
//! let report = snapshot(source, &file)?;
//! write_report(&mut std::io::stdout(), &report)?;
//! if let Some(line) = verdict(&report) {
//!     eprintln!("{line}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`File`]: std::fs::File

#![warn(missing_docs, missing_debug_implementations)]

use std::io;

mod object;
mod report;
pub mod table;
mod text;

pub use object::{read_header, Object};
pub use report::{
    add_blob_pool, add_peers, add_runs, add_stuck, analyze, depth, fill_peers, impossible_cursors,
    runtime_name, BlobClassJson, BlobOwnerJson, BlobPoolJson, ChannelJson, HeaderJson, HolderJson,
    IntentJson, PeerCounts, PeerJson, Problem, Report, SourceJson, StuckJson,
};
pub use text::{
    invalid_line, not_a_segment_line, peers_line, verdict, write_report, write_validation,
    CHANNEL_COLUMNS, PEER_COLUMNS, PROBLEM_COLUMNS,
};

/// Reads and analyses the segment `object`, peer table and stuck positions included: its
/// size and header copy ([`read_header`], [`analyze`]), then [`add_peers`] judging each owner
/// with `dmxp::peer_alive`, then [`add_stuck`] at `dmxp::monotonic_ns()`, then [`add_runs`] and [`add_blob_pool`]. `source` names it in
/// the report. Fails only when the size or the header cannot be read; a peer table or slot
/// that cannot be read is reported in the report.
pub fn snapshot<O: Object + ?Sized>(source: SourceJson, object: &O) -> io::Result<Report> {
    let (size, bytes) = read_header(object)?;
    let mut report = analyze(source, size, &bytes);
    add_peers(&mut report, object, dmxp::peer_alive);
    add_stuck(&mut report, object, dmxp::monotonic_ns());
    add_runs(&mut report, object);
    add_blob_pool(&mut report, object);
    Ok(report)
}
