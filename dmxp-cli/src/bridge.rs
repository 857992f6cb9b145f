//! `dmxp bridge ARGS...`: runs the `dmxp-bridge` binary with ARGS, in the way git runs
//! `git-foo` for `git foo`. The bridge links Zenoh; keeping it a binary of its own
//! (`cargo install dmxp-bridge`) keeps this one small and quick to build.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::Outcome;

/// The bridge binary's name.
const BRIDGE: &str = "dmxp-bridge";

#[derive(Args, Debug)]
#[command(
    disable_help_flag = true,
    after_help = "Every argument goes to dmxp-bridge: `dmxp bridge --help` prints its options. \
    Install it with `cargo install dmxp-bridge`; docs/MULTI_HOST.md describes it."
)]
pub struct BridgeArgs {
    /// The bridge's arguments (routes, endpoints, config file; see `dmxp bridge --help`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<OsString>,
}

/// Replaces this process with `dmxp-bridge ARGS`: found beside this binary first (a cargo
/// target directory, an install prefix), then on PATH.
pub fn run(args: BridgeArgs) -> Result<Outcome> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(BRIDGE)))
        .filter(|path| path.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from(BRIDGE));
    // Only returns on failure.
    let error = std::process::Command::new(&program).args(&args.args).exec();
    if error.kind() == std::io::ErrorKind::NotFound {
        bail!("`dmxp bridge` runs {BRIDGE}, which is not installed: cargo install dmxp-bridge");
    }
    bail!("running {}: {error}", program.display())
}
