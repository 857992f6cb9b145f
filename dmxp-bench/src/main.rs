//! `dmxp-bench`: the cross-process benchmark (see the library docs and docs/BENCHMARKS.md).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dmxp_bench::async_latency::AsyncArgs;
use dmxp_bench::large::LargeArgs;
use dmxp_bench::BenchArgs;

/// DMXP side by side with a Unix socket, a pipe, crossbeam's ArrayQueue and the cache-line
/// floor: throughput and ping-pong latency across processes.
#[derive(Parser, Debug)]
#[command(
    name = "dmxp-bench",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: BenchArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Large messages (4 KiB to 256 KiB, sent as runs of slots): MB/s and msgs/s of DMXP 1->1
    /// and 2->2 next to a Unix stream socket, a pipe and one core's memcpy.
    Large(LargeArgs),
    /// Waits from an event loop: round-trip latency of 32 B ping-pong between two processes
    /// with tokio receive_async, with the blocking futex path, with a tokio Unix stream
    /// socket, and from Python asyncio (the dmxp package's receive_async).
    Async(AsyncArgs),
}

fn main() -> ExitCode {
    dmxp_bench::child_main_if_requested();
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Some(Command::Large(args)) => dmxp_bench::large::main_with(args).map(drop),
        Some(Command::Async(args)) => dmxp_bench::async_latency::main_with(args).map(drop),
        None => dmxp_bench::main_with(&cli.args).map(drop),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmxp-bench: error: {e}");
            ExitCode::from(1)
        }
    }
}
