//! `dmxp-bridge`: the bridge as its own binary (the same as `dmxp bridge`).

use clap::Parser;

/// Moves messages between local DMXP channels and Zenoh (docs/MULTI_HOST.md).
#[derive(Parser)]
#[command(name = "dmxp-bridge", version)]
struct Cli {
    #[command(flatten)]
    args: dmxp_bridge::cli::BridgeArgs,
}

fn main() -> anyhow::Result<()> {
    Cli::parse().args.run()
}
