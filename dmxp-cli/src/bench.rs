//! `dmxp bench`: the cross-process benchmark of the `dmxp-bench` crate.

use anyhow::anyhow;

use crate::Outcome;

pub fn run(args: dmxp_bench::BenchArgs) -> anyhow::Result<Outcome> {
    dmxp_bench::main_with(&args).map_err(|e| anyhow!("bench: {e}"))?;
    Ok(Outcome::Success)
}
