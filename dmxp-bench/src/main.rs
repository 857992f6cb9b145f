//! `dmxp-bench`: the cross-process benchmark (see the library docs and docs/BENCHMARKS.md).

use std::process::ExitCode;

use clap::Parser;
use dmxp_bench::BenchArgs;

/// DMXP side by side with a Unix socket, a pipe, crossbeam's ArrayQueue and the cache-line
/// floor: throughput and ping-pong latency across processes.
#[derive(Parser, Debug)]
#[command(name = "dmxp-bench", version, about)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> ExitCode {
    dmxp_bench::child_main_if_requested();
    let cli = Cli::parse();
    match dmxp_bench::main_with(&cli.args) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmxp-bench: error: {e}");
            ExitCode::from(1)
        }
    }
}
