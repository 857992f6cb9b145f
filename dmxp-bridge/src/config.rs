//! What a bridge does: its Zenoh session and its routes, read from a TOML file
//! (`--config`), from command-line flags, or both (the flags add routes and override the
//! session's settings). docs/MULTI_HOST.md documents every key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The whole configuration of one bridge process.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// This host's name in key expressions and in envelopes [default: the hostname].
    pub host: Option<String>,
    /// The Zenoh session.
    #[serde(default)]
    pub zenoh: ZenohConfig,
    /// Local channels published to Zenoh.
    #[serde(default)]
    pub export: Vec<ExportRoute>,
    /// Zenoh key expressions fed into local channels.
    #[serde(default)]
    pub import: Vec<ImportRoute>,
    /// How long an import waits for room in a full ring before it drops the message and
    /// counts it, in milliseconds [default: 5000].
    pub full_timeout_ms: Option<u64>,
    /// How often the counters are printed, in milliseconds; 0 prints them only at exit
    /// [default: 1000].
    pub stats_interval_ms: Option<u64>,
    /// Exports publish each message at once instead of letting Zenoh batch it with the next
    /// ones: lower latency, fewer small messages per second [default: false].
    pub express: Option<bool>,
}

/// The Zenoh session's settings. Peer mode with multicast scouting off is the default, so
/// that a bridge reaches only the endpoints it is given.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZenohConfig {
    /// A full Zenoh configuration file (JSON5) to start from; the keys below override it.
    pub config_file: Option<PathBuf>,
    /// `peer` (the default), `client` or `router`.
    pub mode: Option<String>,
    /// Endpoints to listen on, such as `tcp/0.0.0.0:7447`.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Endpoints to connect to, such as `tcp/10.0.0.2:7447` or `vsock/3:7447`.
    #[serde(default)]
    pub connect: Vec<String>,
    /// Multicast scouting [default: false].
    pub scouting: Option<bool>,
}

/// Where a local channel lives.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ChannelRef {
    /// A POSIX shm segment name (`/dmxp_alloc`).
    pub segment: Option<String>,
    /// A segment in a mapped file (instead of `segment`).
    pub file: Option<PathBuf>,
    /// The channel id.
    pub channel: u32,
}

/// A local channel whose messages are consumed and published. (Unknown keys in a route
/// are ignored: serde cannot refuse them beside a flattened field.)
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ExportRoute {
    /// The channel.
    #[serde(flatten)]
    pub local: ChannelRef,
    /// The key expression published to (default: `dmxp/<host>/<segment>/<channel>`).
    pub key: Option<String>,
}

/// A key expression whose samples are produced into a local channel.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ImportRoute {
    /// The key expression subscribed to (wildcards allowed: `dmxp/hosta/**`).
    pub key: String,
    /// The channel.
    #[serde(flatten)]
    pub local: ChannelRef,
    /// Create the segment and channel if they do not exist [default: true].
    pub create: Option<bool>,
    /// Ring capacity of a channel this route creates [default: 1024].
    pub capacity: Option<u64>,
    /// Largest message of a channel this route creates [default: one slot, 960 B].
    pub max_message_size: Option<usize>,
    /// Size in bytes of a segment this route creates [default: the facade's].
    pub segment_size: Option<usize>,
}

impl ChannelRef {
    /// Parses `SEGMENT:CHANNEL`, where SEGMENT is a shm name (`/dmxp_a`) or `file:PATH`.
    ///
    /// ```
    /// use dmxp_bridge::config::ChannelRef;
    ///
    /// let shm = ChannelRef::parse("/dmxp_a:3").unwrap();
    /// assert_eq!((shm.segment.as_deref(), shm.channel), (Some("/dmxp_a"), 3));
    /// let file = ChannelRef::parse("file:/tmp/seg:0").unwrap();
    /// assert_eq!(file.file.as_deref(), Some(std::path::Path::new("/tmp/seg")));
    /// assert!(ChannelRef::parse("/dmxp_a").is_err());
    /// ```
    pub fn parse(spec: &str) -> Result<Self> {
        let (segment, channel) = spec
            .rsplit_once(':')
            .with_context(|| format!("`{spec}`: expected SEGMENT:CHANNEL"))?;
        let channel = channel
            .parse()
            .with_context(|| format!("`{spec}`: `{channel}` is not a channel id"))?;
        if segment.is_empty() || segment == "file:" {
            bail!("`{spec}`: the segment is empty");
        }
        Ok(match segment.strip_prefix("file:") {
            Some(path) => ChannelRef {
                segment: None,
                file: Some(path.into()),
                channel,
            },
            None => ChannelRef {
                segment: Some(segment.to_owned()),
                file: None,
                channel,
            },
        })
    }

    /// `SEGMENT:CHANNEL` as [`Self::parse`] reads it, for reports.
    pub fn label(&self) -> String {
        match (&self.segment, &self.file) {
            (Some(name), _) => format!("{name}:{}", self.channel),
            (None, Some(path)) => format!("file:{}:{}", path.display(), self.channel),
            (None, None) => format!("?:{}", self.channel),
        }
    }

    /// A facade builder aimed at this channel.
    pub fn builder(&self) -> Result<dmxp::ChannelBuilder> {
        let builder = match (&self.segment, &self.file) {
            (Some(name), None) => dmxp::ChannelBuilder::new()
                .with_segment_name(format!("/{}", name.trim_start_matches('/'))),
            (None, Some(path)) => dmxp::ChannelBuilder::new().with_file(path),
            (None, None) => bail!(
                "channel {}: neither `segment` nor `file` is set",
                self.channel
            ),
            (Some(_), Some(_)) => bail!(
                "channel {}: both `segment` and `file` are set",
                self.channel
            ),
        };
        Ok(builder.with_channel_id(self.channel))
    }

    /// The segment's short name in default key expressions: the shm name without its `/`, or
    /// the file's name.
    pub fn segment_label(&self) -> String {
        match (&self.segment, &self.file) {
            (Some(name), _) => name.trim_start_matches('/').to_owned(),
            (None, Some(path)) => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "segment".to_owned()),
            (None, None) => "segment".to_owned(),
        }
    }
}

impl ExportRoute {
    /// Parses `SEGMENT:CHANNEL[=KEY]`.
    ///
    /// ```
    /// let route = dmxp_bridge::config::ExportRoute::parse("/dmxp_a:1=demo/a").unwrap();
    /// assert_eq!((route.local.channel, route.key.as_deref()), (1, Some("demo/a")));
    /// ```
    pub fn parse(spec: &str) -> Result<Self> {
        let (local, key) = match spec.split_once('=') {
            Some((local, key)) => (local, Some(key.to_owned())),
            None => (spec, None),
        };
        Ok(ExportRoute {
            local: ChannelRef::parse(local)?,
            key,
        })
    }

    /// The key expression this route publishes to.
    pub fn key(&self, host: &str) -> String {
        self.key.clone().unwrap_or_else(|| {
            format!(
                "dmxp/{host}/{}/{}",
                self.local.segment_label(),
                self.local.channel
            )
        })
    }
}

impl ImportRoute {
    /// Parses `KEY=SEGMENT:CHANNEL`.
    ///
    /// ```
    /// let route = dmxp_bridge::config::ImportRoute::parse("dmxp/a/**=/dmxp_b:2").unwrap();
    /// assert_eq!((route.key.as_str(), route.local.channel), ("dmxp/a/**", 2));
    /// ```
    pub fn parse(spec: &str) -> Result<Self> {
        let (key, local) = spec
            .split_once('=')
            .with_context(|| format!("`{spec}`: expected KEY=SEGMENT:CHANNEL"))?;
        Ok(ImportRoute {
            key: key.to_owned(),
            local: ChannelRef::parse(local)?,
            create: None,
            capacity: None,
            max_message_size: None,
            segment_size: None,
        })
    }
}

impl BridgeConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// This host's name: `host`, else the kernel's hostname.
    pub fn host(&self) -> String {
        self.host.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .unwrap_or_else(|_| "localhost".to_owned())
        })
    }

    /// The bounded wait of an import into a full ring.
    pub fn full_timeout(&self) -> Duration {
        Duration::from_millis(self.full_timeout_ms.unwrap_or(5000))
    }

    /// The counters' print interval, `None` for "at exit only".
    pub fn stats_interval(&self) -> Option<Duration> {
        match self.stats_interval_ms.unwrap_or(1000) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// The Zenoh configuration: the file if any, then peer mode, the endpoints and scouting.
    pub fn zenoh_config(&self) -> Result<zenoh::Config> {
        let settings = &self.zenoh;
        let mut config = match &settings.config_file {
            Some(path) => zenoh::Config::from_file(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            None => zenoh::Config::default(),
        };
        let mut set = |key: &str, value: String| {
            config
                .insert_json5(key, &value)
                .map_err(|e| anyhow::anyhow!("Zenoh setting {key} = {value}: {e}"))
        };
        let mode = settings.mode.as_deref().unwrap_or("peer");
        if !matches!(mode, "peer" | "client" | "router") {
            bail!("Zenoh mode `{mode}`: expected peer, client or router");
        }
        set("mode", serde_json::to_string(mode)?)?;
        if !settings.listen.is_empty() {
            set("listen/endpoints", serde_json::to_string(&settings.listen)?)?;
        }
        if !settings.connect.is_empty() {
            set(
                "connect/endpoints",
                serde_json::to_string(&settings.connect)?,
            )?;
        }
        let scouting = settings.scouting.unwrap_or(false);
        set("scouting/multicast/enabled", scouting.to_string())?;
        Ok(config)
    }

    /// Checks what can be checked before anything is opened.
    pub fn validate(&self) -> Result<()> {
        if self.export.is_empty() && self.import.is_empty() {
            bail!("nothing to bridge: give at least one --export or --import route");
        }
        for route in &self.export {
            let _ = route.local.builder()?;
        }
        for route in &self.import {
            let _ = route.local.builder()?;
            zenoh::key_expr::KeyExpr::try_from(route.key.as_str())
                .map_err(|e| anyhow::anyhow!("import key `{}`: {e}", route.key))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_reads_every_section() {
        let config: BridgeConfig = toml::from_str(
            r#"
            host = "hosta"
            full_timeout_ms = 250
            stats_interval_ms = 0
            express = true
            [zenoh]
            listen = ["tcp/127.0.0.1:7447"]
            [[export]]
            segment = "/dmxp_a"
            channel = 1
            [[import]]
            key = "dmxp/hostb/**"
            file = "/tmp/b"
            channel = 2
            capacity = 64
            max_message_size = 65536
            "#,
        )
        .unwrap();
        assert_eq!(config.host(), "hosta");
        assert_eq!(config.full_timeout(), Duration::from_millis(250));
        assert_eq!(config.stats_interval(), None);
        assert_eq!(config.express, Some(true));
        assert_eq!(config.export[0].key("hosta"), "dmxp/hosta/dmxp_a/1");
        assert_eq!(config.import[0].local.segment_label(), "b");
        assert_eq!(config.import[0].max_message_size, Some(65536));
        config.validate().unwrap();
        config.zenoh_config().unwrap();
    }

    #[test]
    fn the_example_file_parses_and_validates() {
        let config: BridgeConfig = toml::from_str(include_str!("../bridge.example.toml")).unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.export[0].key(&config.host()),
            "dmxp/hosta/dmxp_sensors/0"
        );
        assert_eq!(config.export[1].key(&config.host()), "sensors/imu");
        assert_eq!(config.import[0].max_message_size, Some(65536));
        config.zenoh_config().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_routes_are_refused() {
        assert!(toml::from_str::<BridgeConfig>("hots = \"a\"").is_err());
        assert!(ChannelRef::parse("/dmxp_a:x").is_err());
        assert!(ChannelRef::parse(":1").is_err());
        assert!(ImportRoute::parse("no-channel").is_err());
        assert!(BridgeConfig::default().validate().is_err());
        let both = BridgeConfig {
            export: vec![ExportRoute {
                local: ChannelRef {
                    segment: Some("/a".into()),
                    file: Some("/b".into()),
                    channel: 0,
                },
                key: None,
            }],
            ..Default::default()
        };
        assert!(both.validate().is_err());
        let bad_key = BridgeConfig {
            import: vec![ImportRoute::parse("a//b=/dmxp_b:0").unwrap()],
            ..Default::default()
        };
        assert!(bad_key.validate().is_err());
        let bad_mode = BridgeConfig {
            zenoh: ZenohConfig {
                mode: Some("broker".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(bad_mode.zenoh_config().is_err());
    }
}
