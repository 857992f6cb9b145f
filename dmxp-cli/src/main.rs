//! `dmxp`: inspect, watch, create, remove, send to, receive from, clean up and recover DMXP
//! segments.
//!
//! Exit codes: 0 success, 1 failure (including a segment that fails validation), 2 usage
//! error (clap's own). Errors are one line on stderr. See `docs/CLI.md`.

use std::io;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod clean;
mod create;
mod inspect;
mod interrupt;
mod parse;
mod recover;
mod recv;
mod report;
mod reset;
mod send;
mod source;
mod table;
mod watch;

/// Inspect and use DMXP shared-memory segments.
#[derive(Parser, Debug)]
#[command(name = "dmxp", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the header, every channel and the validation result (exit 1 if invalid).
    Inspect(inspect::InspectArgs),
    /// A live table of the channels, refreshed in place, with messages/s.
    Watch(watch::WatchArgs),
    /// Create a channel, and the segment if it does not exist.
    Create(create::CreateArgs),
    /// Remove a segment (shm name or file). Processes that have it mapped keep it.
    Rm(create::RmArgs),
    /// Send messages from arguments, a file, or stdin lines.
    Send(send::SendArgs),
    /// Receive messages (with metadata in --json).
    Recv(recv::RecvArgs),
    /// List DMXP segments in /dev/shm (or a directory) and whether each is stale; remove them
    /// with --remove (--stale: only stale ones).
    Clean(clean::CleanArgs),
    /// Repair positions left stuck by dead producers and consumers (all channels, or one).
    Recover(recover::RecoverArgs),
    /// Bring a channel back after a peer scribbled on its cursors, discarding what was queued
    /// (refused while live peers hold claims, unless --force).
    Reset(reset::ResetArgs),
    /// Benchmark DMXP across processes against a Unix socket, a pipe, ArrayQueue and the
    /// cache-line floor (see docs/BENCHMARKS.md).
    Bench(dmxp_bench::BenchArgs),
}

/// What a command ended with, beyond success.
pub enum Outcome {
    Success,
    /// The command did its work but found a failure to report (already printed).
    Failure(String),
    /// SIGINT or SIGTERM stopped the command, which left the channel cleanly.
    Interrupted,
}

fn main() -> ExitCode {
    // `dmxp bench` re-executes this binary as its producer and consumer processes.
    dmxp_bench::child_main_if_requested();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Watch(args) => watch::run(args),
        Command::Create(args) => create::run(args),
        Command::Rm(args) => create::rm(args),
        Command::Send(args) => send::run(args),
        Command::Recv(args) => recv::run(args),
        Command::Clean(args) => clean::run(args),
        Command::Recover(args) => recover::run(args),
        Command::Reset(args) => reset::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failure(message)) => {
            eprintln!("dmxp: {message}");
            ExitCode::from(1)
        }
        // The shells' convention for a command ended by SIGINT.
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        // A reader that went away (`dmxp recv --follow | head`) is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmxp: error: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let kind = match cause.downcast_ref::<io::Error>() {
            Some(io) => Some(io.kind()),
            None => cause
                .downcast_ref::<serde_json::Error>()
                .and_then(|json| json.io_error_kind()),
        };
        kind == Some(io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line, without repeating a cause the message already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}
