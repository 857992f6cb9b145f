//! `dmxp`: inspect, watch, create, remove, send to, receive from, clean up and recover DMXP
//! segments.
//!
//! Exit codes: 0 success, 1 failure (including a segment that fails validation, or an object
//! that is not a DMXP segment at all), 2 usage error (clap's own), 130 interrupted (SIGINT or
//! SIGTERM). Errors are one line on stderr. See `docs/CLI.md`.

use std::io;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

mod bench;
mod bridge;
mod clean;
mod create;
mod inspect;
mod interrupt;
mod meta;
mod parse;
mod recover;
mod recv;
mod reset;
mod send;
mod source;
mod watch;

/// Inspect and use DMXP shared-memory segments.
#[derive(Parser, Debug)]
#[command(
    name = "dmxp",
    version,
    about,
    propagate_version = true,
    after_long_help = AFTER_LONG_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The end of `dmxp --help` (and the man page).
const AFTER_LONG_HELP: &str = "\
Exit codes: 0 success; 1 failure (the segment or channel does not exist, a segment fails \
validation, an object is not a DMXP segment, an OS error); 2 usage error; 130 interrupted by \
SIGINT or SIGTERM.

Environment: DMXP_SEGMENT names the shm segment of every command that takes --segment, when \
neither --segment nor --file is given (default: /dmxp_alloc).

Reference: docs/CLI.md in the DMXP repository.";

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the header, every channel and the validation result (exit 1 if invalid).
    Inspect(inspect::InspectArgs),
    /// A live view of the channels (send and receive rates) and their peers; q quits.
    Watch(watch::WatchArgs),
    /// Create a channel, and the segment if it does not exist.
    Create(create::CreateArgs),
    /// Remove a segment (shm name or file). Processes that have it mapped keep it.
    Rm(create::RmArgs),
    /// Send messages from arguments, a file, or stdin lines.
    Send(send::SendArgs),
    /// Receive messages (with metadata in --json).
    Recv(recv::RecvArgs),
    /// List DMXP segments in /dev/shm (or a directory), whether each is stale and what is
    /// queued in it; remove them with --remove (--stale: only stale ones).
    Clean(clean::CleanArgs),
    /// Repair positions left stuck by dead producers and consumers (all channels, or one).
    Recover(recover::RecoverArgs),
    /// Bring a channel back after a peer scribbled on its cursors, discarding what was queued
    /// (refused while live peers hold claims, unless --force).
    Reset(reset::ResetArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(meta::CompletionsArgs),
    /// Print the man page (roff) of dmxp, or of one command, on stdout.
    Man(meta::ManArgs),
    /// Move messages between local channels and Zenoh, to and from other hosts (runs the
    /// dmxp-bridge binary).
    Bridge(bridge::BridgeArgs),
}

/// What a command ended with, beyond success.
pub enum Outcome {
    Success,
    /// The command did its work but found a failure to report (already printed).
    Failure(String),
    /// SIGINT or SIGTERM stopped the command, which left the channel cleanly.
    Interrupted,
    /// A request this binary cannot serve, reported as a usage error (exit 2).
    Usage(String),
}

fn main() -> ExitCode {
    if bench::requested(std::env::args_os()) {
        eprintln!("dmxp: {}", bench::MOVED);
        return ExitCode::from(2);
    }
    // An empty DMXP_SEGMENT means "not set", as shells write `DMXP_SEGMENT= dmxp ...`.
    if std::env::var_os("DMXP_SEGMENT").is_some_and(|v| v.is_empty()) {
        // Single-threaded still: nothing else reads the environment yet.
        std::env::remove_var("DMXP_SEGMENT");
    }
    let matches = Cli::command().get_matches();
    refuse_segment_with_file(&matches);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
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
        Command::Completions(args) => meta::completions(args, Cli::command()),
        Command::Man(args) => meta::man(args, Cli::command()),
        Command::Bridge(args) => bridge::run(args),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failure(message)) => {
            eprintln!("dmxp: {message}");
            ExitCode::from(1)
        }
        // The shells' convention for a command ended by SIGINT.
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        Ok(Outcome::Usage(message)) => {
            eprintln!("dmxp: {message}");
            ExitCode::from(2)
        }
        // A reader that went away (`dmxp recv --follow | head`) is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmxp: error: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// `--segment` and `--file` both on the command line are a usage error. (Not clap's
/// `conflicts_with`: that also counts a `--segment` taken from `DMXP_SEGMENT`, and an
/// explicit `--file` must win over the environment.)
fn refuse_segment_with_file(matches: &ArgMatches) {
    let Some((name, sub)) = matches.subcommand() else {
        return;
    };
    let given = |id: &str| {
        sub.ids().any(|i| i.as_str() == id)
            && sub.value_source(id) == Some(ValueSource::CommandLine)
    };
    if given("segment") && given("file") {
        let mut cmd = Cli::command();
        cmd.build();
        let sub = cmd
            .find_subcommand_mut(name)
            .expect("the subcommand just parsed");
        sub.error(
            clap::error::ErrorKind::ArgumentConflict,
            "the argument '--segment <NAME>' cannot be used with '--file <PATH>'",
        )
        .exit();
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
