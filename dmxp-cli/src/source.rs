//! Which segment a command works on, and the two ways of reaching it: the object opened
//! read-only, for `dmxp-inspect` to take a point-in-time copy of with ordinary `read(2)` calls
//! (inspect, watch, clean), or a mapping through the `dmxp` facade (create, send, recv).

use std::fmt;
use std::fs::File;
use std::io;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use dmxp::ChannelBuilder;

use crate::parse;

/// `--segment NAME | --file PATH`, shared by every command that works on one segment.
#[derive(Args, Debug, Clone)]
pub struct SegmentArgs {
    /// POSIX shared-memory segment name (a leading `/` is added if missing) [default:
    /// $DMXP_SEGMENT, else /dmxp_alloc].
    // Not `conflicts_with = "file"`: clap would count a value from the environment too, and
    // `--file` wins over `DMXP_SEGMENT` (both on the command line: see main.rs).
    #[arg(long, value_name = "NAME", env = "DMXP_SEGMENT")]
    pub segment: Option<String>,
    /// Segment in a mapped file (wins over `DMXP_SEGMENT`; not with --segment).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Also trust an existing segment owned by this uid (repeatable). By default only
    /// segments owned by this user are attached to (PROTOCOL.md §3.4).
    #[arg(long, value_name = "UID")]
    pub trust_owner: Vec<u32>,
    /// Permission bits (octal): of a segment this command creates, and the widest accepted in
    /// an existing one [default: 0600].
    #[arg(long, value_name = "MODE", value_parser = parse::mode)]
    pub mode: Option<u32>,
}

/// Where a segment lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A POSIX shm object by name, with its leading `/`.
    Shm(String),
    /// A file.
    File(PathBuf),
}

impl SegmentArgs {
    /// The mode asked for: of a created segment, and the widest accepted.
    pub fn mode(&self) -> u32 {
        self.mode.unwrap_or(dmxp::DEFAULT_MODE)
    }

    /// A facade builder aimed at this segment, with the trust and mode asked for.
    pub fn builder(&self) -> ChannelBuilder {
        let builder = self
            .trust_owner
            .iter()
            .fold(self.source().builder(), |b, &uid| b.with_trust_owner(uid));
        builder.with_mode(self.mode())
    }

    /// The segment named: `--file`, else `--segment` (or `DMXP_SEGMENT`), else the default
    /// shm segment `/dmxp_alloc`.
    pub fn source(&self) -> Source {
        match (&self.segment, &self.file) {
            (_, Some(path)) => Source::File(path.clone()),
            (Some(name), None) => Source::Shm(shm_name(name)),
            (None, None) => Source::Shm(dmxp::DEFAULT_SEGMENT_NAME.to_owned()),
        }
    }
}

/// `name` with exactly one leading `/`.
pub fn shm_name(name: &str) -> String {
    format!("/{}", name.trim_start_matches('/'))
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Shm(name) => write!(f, "shm segment {name}"),
            Source::File(path) => write!(f, "file segment {}", path.display()),
        }
    }
}

impl Source {
    /// `"shm"` or `"file"`, as in the JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Shm(_) => "shm",
            Source::File(_) => "file",
        }
    }

    /// The shm name or the file path, as in the JSON output.
    pub fn name(&self) -> String {
        match self {
            Source::Shm(name) => name.clone(),
            Source::File(path) => path.display().to_string(),
        }
    }

    /// Opens the object read-only (no mapping, nothing written).
    pub fn open_read(&self) -> Result<File> {
        match self {
            Source::Shm(name) => dmxp::os::check_shm_name(name)?,
            Source::File(path) => dmxp::os::check_path(path)?,
        }
        let file = match self {
            Source::Shm(name) => rustix::shm::open(
                name.as_str(),
                rustix::shm::OFlags::RDONLY,
                rustix::fs::Mode::empty(),
            )
            .map(File::from)
            .map_err(io::Error::from),
            Source::File(path) => File::open(path),
        };
        file.map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                anyhow::anyhow!("{self} does not exist")
            } else {
                anyhow::Error::new(e).context(format!("opening {self}"))
            }
        })
    }

    /// A facade builder aimed at this segment, trusting only this user's own segments (use
    /// [`SegmentArgs::builder`] to honour `--trust-owner` and `--mode`).
    pub fn builder(&self) -> ChannelBuilder {
        match self {
            Source::Shm(name) => ChannelBuilder::new().with_segment_name(name.clone()),
            Source::File(path) => ChannelBuilder::new().with_file(path.clone()),
        }
    }

    /// Removes the segment's name (shm) or file. Mappings that exist stay valid.
    pub fn remove(&self) -> Result<()> {
        match self {
            Source::Shm(name) => dmxp::unlink_segment(name).map_err(anyhow::Error::new),
            Source::File(path) => {
                std::fs::remove_file(path).with_context(|| format!("removing {self}"))
            }
        }
    }
}
