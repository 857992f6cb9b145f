//! The command line: flags that add routes to, and override, a `--config` file.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::{BridgeConfig, ExportRoute, ImportRoute};

/// `dmxp-bridge` / `dmxp bridge`: moves messages between local DMXP channels and Zenoh.
///
/// Prints one JSON line when every route is open (`"event":"ready"`), one per
/// `--stats-interval-ms` (`"stats"`) and one at exit (`"final"`), each with every route's
/// counters. Stops on SIGINT or SIGTERM.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BridgeArgs {
    /// A TOML file of routes and Zenoh settings (docs/MULTI_HOST.md); the flags below add
    /// to it and override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This host's name in default keys and in envelopes [default: the hostname].
    #[arg(long)]
    pub host: Option<String>,
    /// Zenoh mode: peer, client or router [default: peer].
    #[arg(long)]
    pub mode: Option<String>,
    /// A Zenoh endpoint to listen on (tcp/127.0.0.1:7447); repeatable.
    #[arg(long, value_name = "ENDPOINT")]
    pub listen: Vec<String>,
    /// A Zenoh endpoint to connect to (tcp/10.0.0.2:7447, vsock/3:7447); repeatable.
    #[arg(long, value_name = "ENDPOINT")]
    pub connect: Vec<String>,
    /// Turn Zenoh's multicast scouting on (off by default: only the given endpoints).
    #[arg(long)]
    pub scouting: bool,
    /// Publish a local channel: SEGMENT:CHANNEL[=KEY], SEGMENT a shm name or file:PATH;
    /// KEY defaults to dmxp/HOST/SEGMENT/CHANNEL. Repeatable.
    #[arg(long, value_name = "SPEC")]
    pub export: Vec<String>,
    /// Feed a local channel from Zenoh: KEY=SEGMENT:CHANNEL (the channel is created if
    /// missing, with the --create-* settings). Repeatable.
    #[arg(long, value_name = "SPEC")]
    pub import: Vec<String>,
    /// Ring capacity of channels the --import routes create [default: 1024].
    #[arg(long, value_name = "SLOTS")]
    pub create_capacity: Option<u64>,
    /// Largest message of channels the --import routes create [default: 960].
    #[arg(long, value_name = "BYTES")]
    pub create_max_message_size: Option<usize>,
    /// Size of segments the --import routes create [default: the facade's].
    #[arg(long, value_name = "BYTES")]
    pub create_segment_size: Option<usize>,
    /// How long an import waits on a full ring before it drops and counts [default: 5000].
    #[arg(long, value_name = "MS")]
    pub full_timeout_ms: Option<u64>,
    /// Print counters every MS milliseconds; 0 prints them only at exit [default: 1000].
    #[arg(long, value_name = "MS")]
    pub stats_interval_ms: Option<u64>,
    /// Publish each exported message at once instead of letting Zenoh batch small ones:
    /// lower latency, lower throughput of small messages.
    #[arg(long)]
    pub express: bool,
}

impl BridgeArgs {
    /// The configuration these flags describe: the file's, then the flags'.
    pub fn config(&self) -> Result<BridgeConfig> {
        let mut config = match &self.config {
            Some(path) => BridgeConfig::from_file(path)?,
            None => BridgeConfig::default(),
        };
        if self.host.is_some() {
            config.host.clone_from(&self.host);
        }
        if self.mode.is_some() {
            config.zenoh.mode.clone_from(&self.mode);
        }
        config.zenoh.listen.extend(self.listen.iter().cloned());
        config.zenoh.connect.extend(self.connect.iter().cloned());
        if self.scouting {
            config.zenoh.scouting = Some(true);
        }
        for spec in &self.export {
            config.export.push(ExportRoute::parse(spec)?);
        }
        for spec in &self.import {
            let mut route = ImportRoute::parse(spec)?;
            route.capacity = self.create_capacity;
            route.max_message_size = self.create_max_message_size;
            route.segment_size = self.create_segment_size;
            config.import.push(route);
        }
        if self.full_timeout_ms.is_some() {
            config.full_timeout_ms = self.full_timeout_ms;
        }
        if self.express {
            config.express = Some(true);
        }
        if self.stats_interval_ms.is_some() {
            config.stats_interval_ms = self.stats_interval_ms;
        }
        config.validate()?;
        Ok(config)
    }

    /// Runs the bridge on stdout until SIGINT or SIGTERM.
    pub fn run(&self) -> Result<()> {
        let config = self.config()?;
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&stop))
                .context("installing the signal handlers")?;
        }
        crate::bridge::run(&config, &stop, &mut std::io::stdout().lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_add_routes_and_override_the_session() {
        let args = BridgeArgs {
            host: Some("a".into()),
            listen: vec!["tcp/127.0.0.1:7447".into()],
            export: vec!["/dmxp_a:1".into()],
            import: vec!["dmxp/b/**=file:/tmp/x:2".into()],
            create_capacity: Some(64),
            stats_interval_ms: Some(0),
            express: true,
            ..Default::default()
        };
        let config = args.config().unwrap();
        assert_eq!(config.express, Some(true));
        assert_eq!(config.export[0].key(&config.host()), "dmxp/a/dmxp_a/1");
        assert_eq!(config.import[0].capacity, Some(64));
        assert_eq!(config.import[0].local.channel, 2);
        assert_eq!(config.stats_interval(), None);
        assert_eq!(config.zenoh.listen, ["tcp/127.0.0.1:7447"]);
    }

    #[test]
    fn no_route_is_an_error() {
        assert!(BridgeArgs::default().config().is_err());
    }
}
