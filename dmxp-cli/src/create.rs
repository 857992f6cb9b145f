//! `dmxp create` and `dmxp rm`.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use dmxp::SharedMemory;
use dmxp_nostd::error::Error as CoreError;
use dmxp_nostd::layout::MAGIC;
use dmxp_nostd::{BlobPoolSpec, ChannelOptions, FormatOptions, Opened, Segment};

use crate::source::{SegmentArgs, Source};
use crate::{parse, Outcome};

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub segment: SegmentArgs,
    /// Channel id (0..256).
    #[arg(long, value_name = "ID", value_parser = parse::channel_id)]
    pub channel: u32,
    /// Ring capacity in slots: a power of two from 2 to 2^32.
    #[arg(long, value_name = "SLOTS", value_parser = parse::capacity)]
    pub capacity: u64,
    /// Size of the segment if it is created (bytes, or with a K/M/G binary suffix).
    #[arg(long, value_name = "BYTES", value_parser = parse::size, default_value = "128M")]
    pub size: usize,
    /// Records of the peer table if the segment is created: one per producer or consumer
    /// handle of every process using it at once; 0 = the default 256, else 256 to 16384
    /// (64 bytes each). Clients from before this option see only the first 256.
    #[arg(long, value_name = "N", value_parser = parse::peer_records, default_value = "0")]
    pub peer_records: u32,
    /// The largest message the channel takes (bytes, or with a K/M/G binary suffix). Above
    /// 960 (one slot), messages travel as runs of slots: at most capacity x 960 bytes.
    #[arg(long, value_name = "BYTES", value_parser = parse::size, default_value = "960")]
    pub max_message_size: usize,
    /// Give the segment, if it is created, a blob pool of about BYTES (K/M/G suffixes) for
    /// zero-copy payloads of any size (PROTOCOL.md §13), split over classes of 4 KiB to
    /// 16 MiB blocks; and make the channel, if it is created, carry blobs. A segment without a
    /// pool works as before.
    #[arg(long, value_name = "BYTES", value_parser = parse::size)]
    pub blob_pool: Option<usize>,
    /// Succeed if the channel already exists (whatever its capacity and limit).
    #[arg(long)]
    pub exist_ok: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Created {
    segment: String,
    segment_created: bool,
    channel: u32,
    capacity: u64,
    /// The largest message the channel takes, in bytes.
    max_message_size: usize,
    channel_created: bool,
    /// Records of the segment's peer table (256 unless it was created with more).
    peer_records: usize,
    /// Bytes of the segment's blob pool blocks (0: no pool).
    blob_pool_bytes: u64,
    /// Whether the channel carries blobs.
    blobs: bool,
}

/// Creates the segment exclusively, or attaches to the existing one; says which.
fn create_or_attach(
    args: &SegmentArgs,
    size: usize,
    format: FormatOptions,
) -> Result<(SharedMemory, bool)> {
    let source = &args.source();
    let mode = args.mode();
    let created: io::Result<SharedMemory> = match source {
        Source::Shm(name) => dmxp::shm::ShmSegment::create_with(name, size, mode, None, format)
            .map(|s| Arc::new(s) as SharedMemory),
        Source::File(path) => dmxp::file::FileSegment::create_with(path, size, mode, None, format)
            .map(|s| Arc::new(s) as SharedMemory),
    };
    match created {
        Ok(memory) => Ok((memory, true)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let allocator = args.builder().attach_allocator()?;
            Ok((Arc::clone(allocator.memory()), false))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("creating {source}"))),
    }
}

pub fn run(args: CreateArgs) -> Result<Outcome> {
    let source = args.segment.source();
    let mut options = ChannelOptions::default().with_max_message_size(args.max_message_size);
    options.check(args.capacity).context("--max-message-size")?;
    let mut format = FormatOptions::default().with_peer_records(args.peer_records);
    if let Some(bytes) = args.blob_pool {
        format = format.with_blob_pool(BlobPoolSpec::for_bytes(bytes as u64));
        options = options.with_blobs();
    }
    let (memory, segment_created) = create_or_attach(&args.segment, args.size, format)?;
    let segment = Segment::attach(memory.region()).with_context(|| source.to_string())?;
    let pid = std::process::id();
    let deadline = Instant::now() + dmxp::DEFAULT_TIMEOUT;
    let (capacity, max_message_size, blobs, channel_created) = loop {
        match segment.open_or_create_channel_with(args.channel, args.capacity, pid, options) {
            Ok((channel, Opened::Created)) => {
                let blobs = channel.blob_pool().is_some();
                break (channel.capacity(), channel.max_message_size(), blobs, true);
            }
            Ok((channel, Opened::Existing)) if args.exist_ok => {
                let blobs = channel.blob_pool().is_some();
                break (channel.capacity(), channel.max_message_size(), blobs, false);
            }
            Ok((channel, Opened::Existing)) => bail!(
                "{source}: {}",
                CoreError::ChannelExists {
                    id: args.channel,
                    capacity: channel.capacity()
                }
            ),
            Err(CoreError::ChannelBeingCreated { id }) => {
                if Instant::now() >= deadline {
                    bail!("{source}: channel {id} still being created or abandoned by its creator");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => bail!("{source}: {e}"),
        }
    };
    let result = Created {
        segment: source.to_string(),
        segment_created,
        channel: args.channel,
        capacity,
        max_message_size,
        channel_created,
        peer_records: segment.peer_records(),
        blob_pool_bytes: segment.blob_pool().map_or(0, |pool| {
            pool.geometry()
                .classes()
                .iter()
                .map(|c| c.block_size * u64::from(c.block_count))
                .sum()
        }),
        blobs,
    };
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &result)?;
        writeln!(out)?;
    } else {
        if segment_created {
            writeln!(
                out,
                "created {source} ({} bytes, mode {:04o}, {} peer records)",
                memory.region().len(),
                args.segment.mode(),
                segment.peer_records()
            )?;
            if result.blob_pool_bytes != 0 {
                writeln!(out, "blob pool: {} bytes of blocks", result.blob_pool_bytes)?;
            }
        }
        let verb = if channel_created {
            "created"
        } else {
            "exists:"
        };
        // The limit is named only for a channel made for messages longer than one slot.
        let limit = if max_message_size > dmxp::MSG_INLINE {
            format!(", messages up to {max_message_size} bytes")
        } else {
            String::new()
        };
        let blobs = if blobs { ", carries blobs" } else { "" };
        writeln!(
            out,
            "{verb} channel {} (capacity {capacity}{limit}{blobs})",
            args.channel
        )?;
    }
    Ok(Outcome::Success)
}

#[derive(Args, Debug)]
pub struct RmArgs {
    #[command(flatten)]
    pub segment: SegmentArgs,
    /// Remove it even if it does not start with the DMXP magic.
    #[arg(long)]
    pub force: bool,
}

pub fn rm(args: RmArgs) -> Result<Outcome> {
    let source = args.segment.source();
    if !args.force {
        let mut file = source.open_read()?;
        let mut magic = [0u8; 8];
        let has_magic = file.read_exact(&mut magic).is_ok() && u64::from_le_bytes(magic) == MAGIC;
        if !has_magic {
            bail!("{source} does not hold a DMXP segment (no DMXP magic); use --force to remove it anyway");
        }
    }
    source.remove()?;
    writeln!(io::stdout().lock(), "removed {source}")?;
    Ok(Outcome::Success)
}
