//! `dmxp bench`: not in this binary. The cross-process benchmark is the `dmxp-bench` binary of
//! the repository's `dmxp-bench` crate, which is not published (it pulls in plotters); keeping
//! it out of `dmxp-cli` keeps this crate publishable and its binary small.
//!
//! `dmxp bench ...` is answered before clap parses anything, so that the benchmark's own
//! options get this pointer rather than a complaint about them, and so that no `bench` shows
//! in `--help`, the completions or the man pages.

use std::ffi::OsString;

/// The one line `dmxp bench` prints on stderr (after `dmxp: `), exit 2.
pub const MOVED: &str = "bench is not part of this binary: the benchmark is `dmxp-bench` \
    (in a DMXP checkout: cargo run --release -p dmxp-bench -- --quick, or scripts/bench.sh; \
    see docs/BENCHMARKS.md)";

/// True when the command line is `dmxp bench ...`.
pub fn requested(mut args: impl Iterator<Item = OsString>) -> bool {
    args.nth(1).is_some_and(|command| command == "bench")
}
