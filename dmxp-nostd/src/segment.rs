//! The segment: formatting, attaching, and the channel table.
//!
//! Creation protocols (see `docs/PROTOCOL.md`):
//!
//! * **Segment.** The creator gets the memory exclusively (`O_EXCL`, a fresh memfd, a file
//!   renamed into place), writes every header field, and stores `magic` last with release. An
//!   attacher loads `magic` with acquire: 0 means "being created" ([`Error::NotReady`]), any
//!   other value but [`MAGIC`] is corruption.
//! * **Channel.** A creator claims the entry by CAS on its `state` word (EMPTY → CREATING),
//!   carves the band from `band_cursor` by CAS, initialises every slot's sequence and the
//!   cursors, stores `capacity` with release, then `state = READY`. Readers that test
//!   `capacity != 0` (as the seed's clients do) never see a half-made channel.

#[cfg(not(loom))]
use crate::blob::{
    check_pool_offset, validate_pool, BlobPool, BlobPoolSpec, PoolDescriptor, PoolGeometry,
    PoolPlan, MAX_BLOB_CLASSES, POOL_HEADER_SIZE, POOL_PAGE,
};
use crate::channel::Channel;
use crate::error::{Corruption, Error};
use crate::layout::{
    band_len, channel_flags, channel_state, peer_records_of, AtomicChannelEntry,
    AtomicHeaderFields, AtomicSlot, HEADER_SIZE, MAGIC, MAX_CAPACITY, MAX_CHANNELS, MIN_CAPACITY,
    MSG_INLINE, PEER_RECORDS, SLOT_ALIGN, VERSION,
};
use crate::peer::Liveness;
use crate::sync::{AtomicU64, Ordering};
#[cfg(not(loom))]
use crate::validate::validate_header;
use crate::validate::{
    check_overlaps, check_peer_table_range, peer_table_len, validate_entry, ChannelGeometry,
    ChannelInfo,
};
use crate::wait::{SpinWait, WaitStrategy};

#[cfg(not(loom))]
use crate::layout::{AtomicPeerRecord, CHANNEL_TABLE_OFFSET};
#[cfg(not(loom))]
use crate::peer::{self, register_in, PeerInfo, PeerRole, PeerSlot, RepairReport};
#[cfg(not(loom))]
use crate::region::Region;
#[cfg(not(loom))]
use crate::validate::check_peer_table_bands;

use Ordering::{AcqRel, Acquire, Relaxed, Release};

/// Retries of a CAS on the shared bump cursor before giving up with `Busy`.
const RETRY_LIMIT: u32 = 1 << 16;

/// Where the bands live.
#[derive(Clone, Copy)]
struct Bands<'a> {
    #[cfg(not(loom))]
    region: Region<'a>,
    /// Under loom: the slots that follow the header, one after another.
    #[cfg(loom)]
    slots: &'a [AtomicSlot],
}

impl<'a> Bands<'a> {
    fn slots(&self, band_offset: u64, capacity: u64) -> Option<&'a [AtomicSlot]> {
        let count = usize::try_from(capacity).ok()?;
        #[cfg(not(loom))]
        {
            let offset = usize::try_from(band_offset).ok()?;
            self.region.view_slice::<AtomicSlot>(offset, count)
        }
        #[cfg(loom)]
        {
            let relative = band_offset.checked_sub(HEADER_SIZE as u64)? as usize;
            let stride = crate::layout::SLOT_SIZE;
            if relative % stride != 0 {
                return None;
            }
            self.slots.get(relative / stride..relative / stride + count)
        }
    }
}

/// A validated segment: the header, the channel table and the band area.
///
/// Its `Debug` shows the validated length, the peer table size and the header's
/// `channel_count` and `creator_pid`, never the bands.
#[derive(Clone)]
pub struct Segment<'a, W: WaitStrategy = SpinWait> {
    fields: &'a AtomicHeaderFields,
    entries: &'a [AtomicChannelEntry],
    bands: Bands<'a>,
    len: u64,
    /// Records of the peer table, read once at attach (PROTOCOL.md §11.1): a peer that rewrites
    /// `peer_records` later cannot make this attachment reach past the table it validated.
    peer_records: usize,
    /// The blob pool's geometry, validated once at attach (PROTOCOL.md §13.2).
    #[cfg(not(loom))]
    pool: Option<PoolGeometry>,
    wait: W,
}

impl<W: WaitStrategy> core::fmt::Debug for Segment<'_, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Segment")
            .field("len", &self.len)
            .field("peer_records", &self.peer_records)
            .field("channel_count", &self.channel_count())
            .field("creator_pid", &self.creator_pid())
            .finish_non_exhaustive()
    }
}

/// How [`Segment::format_with`] lays out a new segment.
///
/// ```
/// use dmxp_nostd::FormatOptions;
/// let options = FormatOptions::default().with_peer_records(4096);
/// assert_eq!(options.peer_records, 4096);
/// assert!(options.check().is_ok());
/// assert!(FormatOptions::default().with_peer_records(100).check().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FormatOptions {
    /// Records of the peer table (PROTOCOL.md §11.1): 0 for the default 256, else 256 to
    /// [`crate::layout::MAX_PEER_RECORDS`]. One record per producer or consumer handle
    /// (clones included) of every process that uses the segment at once.
    pub peer_records: u32,
    /// The blob pool to carve (PROTOCOL.md §13), or `None` for a segment without one.
    #[cfg(not(loom))]
    pub blob_pool: Option<BlobPoolSpec>,
}

impl FormatOptions {
    /// These options with a blob pool of `spec`'s classes (PROTOCOL.md §13).
    ///
    /// ```
    /// use dmxp_nostd::layout::HEADER_SIZE;
    /// use dmxp_nostd::{AlignedBlock, BlobPoolSpec, FormatOptions, Region, Segment};
    /// use zerocopy::IntoBytes;
    ///
    /// let spec = BlobPoolSpec::new().with_class(4096, 16);
    /// let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(1 << 20)];
    /// let options = FormatOptions::default().with_blob_pool(spec);
    /// let segment = Segment::format_with(Region::new(memory.as_mut_bytes())?, 1, options)?;
    /// let pool = segment.blob_pool().expect("formatted with a pool");
    /// assert_eq!(pool.largest_block(), 4096);
    /// assert_eq!(pool.stats()[0].free, 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(not(loom))]
    #[must_use]
    pub const fn with_blob_pool(mut self, spec: BlobPoolSpec) -> Self {
        self.blob_pool = Some(spec);
        self
    }

    /// These options with a peer table of `records` records (0 = the default 256).
    #[must_use]
    pub const fn with_peer_records(mut self, records: u32) -> Self {
        self.peer_records = records;
        self
    }

    /// [`Error::InvalidPeerRecords`] for a record count no segment may hold.
    pub fn check(&self) -> Result<(), Error> {
        #[cfg(not(loom))]
        if let Some(spec) = &self.blob_pool {
            spec.check().map_err(|_| Error::InvalidBlobPool)?;
        }
        match peer_records_of(self.peer_records) {
            Some(_) => Ok(()),
            None => Err(Error::InvalidPeerRecords {
                requested: self.peer_records,
            }),
        }
    }

    /// Where the blob pool goes in a fresh segment of `len` bytes: after the header, on a
    /// 4,096-byte boundary. [`Error::OutOfSpace`] when it does not fit.
    #[cfg(not(loom))]
    fn pool_plan(&self, len: u64) -> Result<Option<PoolPlan>, Error> {
        let Some(spec) = &self.blob_pool else {
            return Ok(None);
        };
        let start = (HEADER_SIZE as u64).next_multiple_of(POOL_PAGE);
        let too_big = Error::OutOfSpace {
            needed: u64::MAX,
            available: len.saturating_sub(start),
        };
        let plan = spec.plan(start).ok_or(too_big)?;
        if start + plan.len > len {
            return Err(Error::OutOfSpace {
                needed: plan.len,
                available: len.saturating_sub(start),
            });
        }
        Ok(Some(plan))
    }
}

/// How [`Segment::open_or_create_channel_with`] makes a channel it creates.
///
/// ```
/// use dmxp_nostd::ChannelOptions;
///
/// // Messages of up to 64 KiB on a channel of 256 slots (at most 256 × 960 bytes).
/// let options = ChannelOptions::default().with_max_message_size(64 << 10);
/// assert!(options.check(256).is_ok());
/// assert!(options.check(64).is_err()); // 64 slots hold at most 61,440 bytes
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelOptions {
    /// The largest message in bytes. 960 or less (0 included) makes a channel of single-slot
    /// messages, as every channel was before runs; more makes a channel that carries runs
    /// (PROTOCOL.md §12), which needs at most `capacity × 960` and less than 2³².
    pub max_message_size: usize,
    /// Whether the channel may carry references to blob-pool blocks (entry flag `BLOBS`,
    /// PROTOCOL.md §13.1); the segment must have a pool.
    pub blobs: bool,
}

impl ChannelOptions {
    /// These options for a channel that carries blobs.
    #[must_use]
    pub const fn with_blobs(mut self) -> Self {
        self.blobs = true;
        self
    }

    /// These options with a message size limit of `bytes`.
    #[must_use]
    pub const fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// [`Error::InvalidMaxMessageSize`] when a channel of `capacity` slots cannot take the
    /// limit.
    pub fn check(&self, capacity: u64) -> Result<(), Error> {
        self.entry_value(capacity).map(|_| ())
    }

    /// The entry's `flags` for these options and the `max_message_size` they give.
    fn entry_flags(&self, max_message_size: u32) -> u32 {
        let runs = if max_message_size != 0 {
            channel_flags::RUNS
        } else {
            0
        };
        let blobs = if self.blobs { channel_flags::BLOBS } else { 0 };
        runs | blobs
    }

    /// The entry's `max_message_size` for these options: 0 for single-slot channels.
    fn entry_value(&self, capacity: u64) -> Result<u32, Error> {
        let bytes = self.max_message_size as u64;
        if bytes <= MSG_INLINE as u64 {
            return Ok(0);
        }
        if !crate::validate::max_message_size_fits(bytes, capacity) {
            return Err(Error::InvalidMaxMessageSize {
                max_message_size: bytes,
                capacity,
            });
        }
        Ok(bytes as u32)
    }
}

/// What [`Segment::abandoned_by`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abandonment {
    /// `magic` is set: attach.
    Published,
    /// `magic` is 0 and `creator_pid` (0: not recorded yet) may still be at work.
    BeingCreated {
        /// The header's `creator_pid`: alive, or 0 (not recorded yet).
        creator_pid: u32,
    },
    /// `magic` is 0 and `creator_pid` is dead: [`Segment::reclaim_abandoned`] may reformat it.
    Abandoned {
        /// The header's `creator_pid`, a process that is no longer alive.
        creator_pid: u32,
    },
}

/// Whether [`Segment::open_or_create_channel`] made the channel or found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// This call created the channel (with the capacity it asked for).
    Created,
    /// The channel existed already (with whatever capacity it was created with), or another
    /// process published it first.
    Existing,
}

#[cfg(not(loom))]
impl<'a> Segment<'a, SpinWait> {
    /// Formats a region that nobody else uses yet (freshly created, exclusively owned) as an
    /// empty segment; `magic` is stored last. Refuses a region whose `magic` is already set.
    ///
    /// `creator_pid` is recorded before anything else, so that an attacher that finds `magic`
    /// still 0 can tell who is formatting, and whether that process died (PROTOCOL.md §3.3).
    pub fn format(region: Region<'a>, creator_pid: u32) -> Result<Self, Error> {
        Self::format_with(region, creator_pid, FormatOptions::default())
    }

    /// [`Self::format`] with `options` (a larger peer table, say). Refuses options that
    /// [`FormatOptions::check`] refuses, before touching the region.
    ///
    /// ```
    /// use dmxp_nostd::layout::HEADER_SIZE;
    /// use dmxp_nostd::{AlignedBlock, FormatOptions, PeerRole, Region, Segment};
    /// use zerocopy::IntoBytes;
    ///
    /// // The header and a 1,024-record (64 KiB) peer table.
    /// let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(HEADER_SIZE + 65_536)];
    /// let options = FormatOptions::default().with_peer_records(1024);
    /// let segment = Segment::format_with(Region::new(memory.as_mut_bytes()).unwrap(), 1, options)
    ///     .unwrap();
    /// assert_eq!(segment.peer_records(), 1024);
    /// let handles: Vec<_> = (0..300)
    ///     .map(|_| segment.register(0, PeerRole::Producer, 1, 0, 0).unwrap())
    ///     .collect();
    /// assert_eq!(segment.peers().unwrap().count(), 300);
    /// # drop(handles);
    /// ```
    pub fn format_with(
        region: Region<'a>,
        creator_pid: u32,
        options: FormatOptions,
    ) -> Result<Self, Error> {
        options.check()?;
        options.pool_plan(region.len() as u64)?;
        let (fields, entries) = Self::header_views(region)?;
        if fields.magic.load(Acquire) != 0 {
            return Err(Error::AlreadyFormatted);
        }
        fields.creator_pid.store(creator_pid, Release);
        Ok(Self::write_empty(region, fields, entries, options))
    }

    /// Formats a region whose creator died before publishing it (PROTOCOL.md §3.3): `magic`
    /// is still 0 and the recorded `creator_pid` is not 0 and not alive by `liveness`. The
    /// takeover is a CAS of `creator_pid` from the dead pid to `creator_pid`, so of several
    /// racing reclaimers exactly one formats.
    ///
    /// Errors: [`Error::AlreadyFormatted`] if `magic` is set (attach instead);
    /// [`Error::NotReady`] if the region is not provably abandoned (no creator recorded yet,
    /// the creator is alive, or another process has just taken it over).
    pub fn reclaim_abandoned(
        region: Region<'a>,
        creator_pid: u32,
        liveness: &impl Liveness,
        options: FormatOptions,
    ) -> Result<Self, Error> {
        options.check()?;
        options.pool_plan(region.len() as u64)?;
        let (fields, entries) = Self::header_views(region)?;
        let previous = match Self::abandoned_by(region, liveness)? {
            Abandonment::Abandoned { creator_pid } => creator_pid,
            Abandonment::Published => return Err(Error::AlreadyFormatted),
            Abandonment::BeingCreated { .. } => return Err(Error::NotReady),
        };
        fields
            .creator_pid
            .compare_exchange(previous, creator_pid, AcqRel, Relaxed)
            .map_err(|_| Error::NotReady)?;
        Ok(Self::write_empty(region, fields, entries, options))
    }

    /// Whether a region is published, being created, or provably abandoned (PROTOCOL.md
    /// §3.3): `magic` 0, the recorded creator not 0 and not alive by `liveness`, and nothing
    /// in it that only a published segment has (a created or claimed channel, a peer table).
    ///
    /// `magic` 0 in a region that holds channels is not an unfinished segment but a live one
    /// whose `magic` was overwritten: [`Corruption::BadMagic`], never reformatted.
    pub fn abandoned_by(
        region: Region<'a>,
        liveness: &impl Liveness,
    ) -> Result<Abandonment, Error> {
        let (fields, entries) = Self::header_views(region)?;
        if fields.magic.load(Acquire) != 0 {
            return Ok(Abandonment::Published);
        }
        let creator_pid = fields.creator_pid.load(Acquire);
        let used = fields.peer_table_offset.load(Relaxed) != 0
            || entries.iter().any(|entry| {
                entry.capacity.load(Relaxed) != 0
                    || entry.state.load(Relaxed) != channel_state::EMPTY
            });
        // Every verdict below is re-checked against `magic`: a creator that publishes the
        // segment (and creates channels in it, or exits) while we look is not a dead creator.
        let published_meanwhile = || fields.magic.load(Acquire) != 0;
        if used {
            if published_meanwhile() {
                return Ok(Abandonment::Published);
            }
            return Err(Corruption::BadMagic { found: 0 }.into());
        }
        // Start time unknown (0): a reused pid makes a dead creator look alive, never the
        // reverse, so "not alive" is proof.
        if creator_pid == 0 || liveness.is_alive(creator_pid, 0) {
            return Ok(Abandonment::BeingCreated { creator_pid });
        }
        if published_meanwhile() {
            return Ok(Abandonment::Published);
        }
        Ok(Abandonment::Abandoned { creator_pid })
    }

    /// Writes an empty segment's header around the already recorded `creator_pid`, `magic`
    /// last. The caller owns the region exclusively.
    fn write_empty(
        region: Region<'a>,
        fields: &'a AtomicHeaderFields,
        entries: &'a [AtomicChannelEntry],
        options: FormatOptions,
    ) -> Self {
        let len = region.len() as u64;
        zero_header_fields(fields);
        for entry in entries {
            zero_entry(entry);
        }
        fields.version.store(VERSION, Relaxed);
        fields.max_channels.store(MAX_CHANNELS as u32, Relaxed);
        fields.segment_size.store(len, Relaxed);
        fields.band_cursor.store(HEADER_SIZE as u64, Relaxed);
        fields.peer_records.store(options.peer_records, Relaxed);
        // Checked by the caller before anything was written.
        let plan = options.pool_plan(len).ok().flatten();
        let pool = plan.and_then(|plan| Self::write_pool(region, fields, &plan));
        fields.magic.store(MAGIC, Release);
        let records = peer_records_of(options.peer_records).unwrap_or(PEER_RECORDS);
        let mut segment =
            Self::from_parts(fields, entries, Bands { region }, len, records, SpinWait);
        segment.pool = pool;
        segment
    }

    /// Writes the pool of `plan` and records it in the header (the band cursor moves past
    /// it), before `magic` is stored. Returns its geometry.
    fn write_pool(
        region: Region<'a>,
        fields: &AtomicHeaderFields,
        plan: &PoolPlan,
    ) -> Option<PoolGeometry> {
        let header = region.view(usize::try_from(plan.start).ok()?)?;
        let classes = region.view_slice(
            usize::try_from(plan.start).ok()? + POOL_HEADER_SIZE,
            MAX_BLOB_CLASSES,
        )?;
        plan.write(header, classes, |i| {
            let class = plan.classes.get(i)?;
            region.view_slice(
                usize::try_from(class.headers_offset).ok()?,
                class.class.block_count as usize,
            )
        });
        fields.blob_pool_offset.store(plan.start, Relaxed);
        fields.band_cursor.store(plan.start + plan.len, Relaxed);
        Self::read_pool(region, plan.start, region.len() as u64).ok()
    }

    /// Validates the pool at `offset` (PROTOCOL.md §13.2).
    fn read_pool(region: Region<'a>, offset: u64, len: u64) -> Result<PoolGeometry, Error> {
        check_pool_offset(offset, len)?;
        let at = offset as usize;
        let out_of_range = Corruption::BlobPoolOutOfRange {
            found: offset,
            segment_len: len,
        };
        let header = region.view(at).ok_or(out_of_range)?;
        let classes = region
            .view_slice(at + POOL_HEADER_SIZE, MAX_BLOB_CLASSES)
            .ok_or(out_of_range)?;
        Ok(validate_pool(
            &PoolDescriptor::read(header, classes),
            offset,
            len,
        )?)
    }

    /// Attaches to a formatted segment after validating its header. `Error::NotReady` means
    /// the creator has not finished (or died while) formatting it.
    pub fn attach(region: Region<'a>) -> Result<Self, Error> {
        let (fields, entries) = Self::header_views(region)?;
        let magic = fields.magic.load(Acquire);
        let mut header = fields.snapshot();
        header.magic = magic;
        let len = validate_header(&header, region.len() as u64)?;
        // Validated with the rest of the header just above.
        let records = peer_records_of(header.peer_records).unwrap_or(PEER_RECORDS);
        let pool = match header.blob_pool_offset {
            0 => None,
            offset => Some(Self::read_pool(region, offset, len)?),
        };
        let mut segment =
            Self::from_parts(fields, entries, Bands { region }, len, records, SpinWait);
        segment.pool = pool;
        Ok(segment)
    }

    fn header_views(
        region: Region<'a>,
    ) -> Result<(&'a AtomicHeaderFields, &'a [AtomicChannelEntry]), Error> {
        let too_small = Error::RegionTooSmall {
            len: region.len() as u64,
            needed: HEADER_SIZE as u64,
        };
        let fields = region.view::<AtomicHeaderFields>(0).ok_or(too_small)?;
        let entries = region
            .view_slice::<AtomicChannelEntry>(CHANNEL_TABLE_OFFSET, MAX_CHANNELS)
            .ok_or(too_small)?;
        Ok((fields, entries))
    }
}

#[cfg(loom)]
impl<'a> Segment<'a, SpinWait> {
    /// A segment over loom atomics for model checking: `slots` stand for the band area that
    /// starts at `HEADER_SIZE`. Formats the header like [`Segment::format`].
    pub fn model(
        fields: &'a AtomicHeaderFields,
        entries: &'a [AtomicChannelEntry],
        slots: &'a [AtomicSlot],
    ) -> Self {
        let len = (HEADER_SIZE + slots.len() * crate::layout::SLOT_SIZE) as u64;
        fields.version.store(VERSION, Relaxed);
        fields.max_channels.store(MAX_CHANNELS as u32, Relaxed);
        fields.segment_size.store(len, Relaxed);
        fields.band_cursor.store(HEADER_SIZE as u64, Relaxed);
        fields.magic.store(MAGIC, Release);
        Self::from_parts(
            fields,
            entries,
            Bands { slots },
            len,
            PEER_RECORDS,
            SpinWait,
        )
    }
}

impl<'a, W: WaitStrategy> Segment<'a, W> {
    fn from_parts(
        fields: &'a AtomicHeaderFields,
        entries: &'a [AtomicChannelEntry],
        bands: Bands<'a>,
        len: u64,
        peer_records: usize,
        wait: W,
    ) -> Self {
        Self {
            fields,
            entries,
            bands,
            len,
            peer_records,
            #[cfg(not(loom))]
            pool: None,
            wait,
        }
    }

    /// The same segment handing `wait` to the channels it opens (for wake-ups).
    #[must_use]
    pub fn with_wait_strategy<V: WaitStrategy>(self, wait: V) -> Segment<'a, V> {
        let Self {
            fields,
            entries,
            bands,
            len,
            peer_records,
            #[cfg(not(loom))]
            pool,
            ..
        } = self;
        #[allow(unused_mut)]
        let mut segment = Segment::from_parts(fields, entries, bands, len, peer_records, wait);
        #[cfg(not(loom))]
        {
            segment.pool = pool;
        }
        segment
    }

    /// Records in this segment's peer table (PROTOCOL.md §11.1), as read when it was attached
    /// or formatted: 256 unless its creator asked for more ([`FormatOptions`]).
    #[must_use]
    pub fn peer_records(&self) -> usize {
        self.peer_records
    }

    /// The segment's blob pool (PROTOCOL.md §13), validated when the segment was attached or
    /// formatted; `None` when it has none.
    #[cfg(not(loom))]
    #[must_use]
    pub fn blob_pool(&self) -> Option<BlobPool<'a>> {
        BlobPool::new(&self.bands.region, self.pool?)
    }

    /// The validated segment length.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Never true for a validated segment (it holds at least the header).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `channel_count` as stored.
    #[must_use]
    pub fn channel_count(&self) -> u32 {
        self.fields.channel_count.load(Acquire)
    }

    /// Bytes still free for bands.
    #[must_use]
    pub fn free_space(&self) -> u64 {
        self.len
            .saturating_sub(self.fields.band_cursor.load(Relaxed))
    }

    /// Pid recorded by the creator.
    #[must_use]
    pub fn creator_pid(&self) -> u32 {
        self.fields.creator_pid.load(Relaxed)
    }

    fn entry(&self, id: u32) -> Result<&'a AtomicChannelEntry, Error> {
        let index = id as usize;
        // Indexed rather than `get`: a method call on the 98 KiB table makes Miri's Stacked
        // Borrows retag all of it (about 120 ms a call), and every per-channel scan of the
        // table comes here 256 times. The table holds exactly MAX_CHANNELS entries.
        #[cfg(not(loom))]
        if index < MAX_CHANNELS {
            return Ok(&self.entries[index]);
        }
        // Loom models hold a shorter table.
        #[cfg(loom)]
        if let Some(entry) = self.entries.get(index) {
            return Ok(entry);
        }
        Err(Error::InvalidChannelId { id })
    }

    /// Reads and validates entry `id`: `Ok(None)` when not created.
    fn geometry(&self, id: u32) -> Result<Option<ChannelGeometry>, Error> {
        let entry = self.entry(id)?;
        // `state` first: READY seen with acquire makes the capacity stored before it visible.
        // Read the other way round, a creator finishing between the two loads pairs a stale
        // capacity of 0 with READY, which validation rightly calls corrupt.
        let state = entry.state.load(Acquire);
        let capacity = entry.capacity.load(Acquire);
        let mut snapshot = entry.snapshot();
        snapshot.state = state;
        snapshot.capacity = capacity;
        Ok(validate_entry(id, &snapshot, self.len)?)
    }

    /// Checks `geometry` against every other created channel's band.
    fn check_no_overlap(&self, geometry: ChannelGeometry) -> Result<(), Error> {
        for other in 0..self.entries.len() as u32 {
            if other == geometry.id {
                continue;
            }
            // A corrupt neighbour is reported when it is opened, not here.
            if let Ok(Some(theirs)) = self.geometry(other) {
                check_overlaps(&mut [geometry, theirs]).map_err(|_| Corruption::BandsOverlap {
                    channel: geometry.id,
                    other,
                })?;
            }
        }
        Ok(())
    }

    fn channel(&self, geometry: ChannelGeometry) -> Result<Channel<'a, W>, Error> {
        let entry = self.entry(geometry.id)?;
        let slots = self
            .bands
            .slots(geometry.band_offset, geometry.capacity)
            .ok_or(Corruption::BandOutsideSegment {
                channel: geometry.id,
                band_offset: geometry.band_offset,
                band_len: band_len(geometry.capacity).unwrap_or(u64::MAX),
                segment_len: self.len,
            })?;
        #[allow(unused_mut)]
        let mut channel = Channel::new(geometry, entry, slots, self.wait.clone());
        #[cfg(not(loom))]
        if geometry.carries_blobs {
            let pool = self.blob_pool().ok_or(Corruption::BlobsWithoutPool {
                channel: geometry.id,
            })?;
            channel = channel.with_blob_pool(pool);
        }
        Ok(channel)
    }

    /// Opens a created channel after validating its entry and band.
    pub fn open_channel(&self, id: u32) -> Result<Channel<'a, W>, Error> {
        match self.geometry(id)? {
            Some(geometry) => {
                self.check_no_overlap(geometry)?;
                self.channel(geometry)
            }
            None if self.entry(id)?.state.load(Acquire) == channel_state::CREATING => {
                Err(Error::ChannelBeingCreated { id })
            }
            None => Err(Error::ChannelNotFound { id }),
        }
    }

    /// Creates channel `id` with `capacity` slots, or opens it if it already exists (whatever
    /// its capacity). `Error::ChannelBeingCreated` means another process holds the claim right
    /// now: retry shortly.
    pub fn open_or_create_channel(
        &self,
        id: u32,
        capacity: u64,
        creator_pid: u32,
    ) -> Result<(Channel<'a, W>, Opened), Error> {
        self.open_or_create_channel_with(id, capacity, creator_pid, ChannelOptions::default())
    }

    /// [`Self::open_or_create_channel`] with options for a channel it creates, such as a
    /// message size limit above one slot (PROTOCOL.md §12.1). An existing channel is opened
    /// with the options it was created with.
    ///
    /// ```
    /// use dmxp_nostd::{AlignedBlock, ChannelOptions, Region, Segment, SendMeta};
    /// use zerocopy::IntoBytes;
    ///
    /// let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(2 << 20)];
    /// let segment = Segment::format(Region::new(memory.as_mut_bytes())?, 1)?;
    /// let options = ChannelOptions::default().with_max_message_size(64 << 10);
    /// let (channel, _) = segment.open_or_create_channel_with(0, 256, 1, options)?;
    /// assert_eq!(channel.max_message_size(), 64 << 10);
    /// channel.try_send(&vec![7u8; 5_000], &SendMeta::default())?;
    /// let mut buf = vec![0u8; channel.max_message_size()];
    /// assert_eq!(channel.try_recv(&mut buf)?.len, 5_000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_or_create_channel_with(
        &self,
        id: u32,
        capacity: u64,
        creator_pid: u32,
        options: ChannelOptions,
    ) -> Result<(Channel<'a, W>, Opened), Error> {
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(Error::InvalidCapacity { capacity });
        }
        let max_message_size = options.entry_value(capacity)?;
        let flags = options.entry_flags(max_message_size);
        let entry = self.entry(id)?;
        if entry.capacity.load(Acquire) != 0 {
            return Ok((self.open_channel(id)?, Opened::Existing));
        }
        if entry
            .state
            .compare_exchange(
                channel_state::EMPTY,
                channel_state::CREATING,
                Acquire,
                Acquire,
            )
            .is_err()
        {
            return match self.open_channel(id) {
                Ok(channel) => Ok((channel, Opened::Existing)),
                Err(Error::ChannelNotFound { .. }) => Err(Error::ChannelBeingCreated { id }),
                Err(other) => Err(other),
            };
        }
        // Recorded at once so that a creator dying mid-creation can be identified.
        entry.creator_pid.store(creator_pid, Release);
        self.create_claimed(id, entry, capacity, (max_message_size, flags), creator_pid)
            .map(|channel| (channel, Opened::Created))
    }

    /// Creates channel `id` holding its CREATING claim; gives the id back on failure so that
    /// a later attempt can succeed.
    fn create_claimed(
        &self,
        id: u32,
        entry: &'a AtomicChannelEntry,
        capacity: u64,
        options: (u32, u32),
        creator_pid: u32,
    ) -> Result<Channel<'a, W>, Error> {
        self.initialise_channel(id, entry, capacity, options, creator_pid)
            .inspect_err(|_| entry.state.store(channel_state::EMPTY, Release))
    }

    /// The pid recorded by the process creating channel `id` while it is `CREATING` and not
    /// yet published (0: none recorded yet); `None` otherwise.
    pub fn channel_creator(&self, id: u32) -> Result<Option<u32>, Error> {
        let entry = self.entry(id)?;
        let creating = entry.state.load(Acquire) == channel_state::CREATING
            && entry.capacity.load(Acquire) == 0;
        Ok(creating.then(|| entry.creator_pid.load(Acquire)))
    }

    /// Takes over channel `id` left `CREATING` by a creator that died (PROTOCOL.md §5.3) and
    /// creates it with `capacity` slots; opens it instead if it has been published meanwhile.
    /// The takeover is a CAS of the entry's `creator_pid` from the dead pid, so one of several
    /// racing reclaimers wins. The dead creator's band, if it carved one, stays unused.
    ///
    /// [`Error::ChannelBeingCreated`] when the entry is not provably abandoned: no creator
    /// recorded, a creator alive by `liveness`, or another reclaimer won.
    pub fn reclaim_channel(
        &self,
        id: u32,
        capacity: u64,
        creator_pid: u32,
        liveness: &impl Liveness,
    ) -> Result<Channel<'a, W>, Error> {
        self.reclaim_channel_with(
            id,
            capacity,
            creator_pid,
            ChannelOptions::default(),
            liveness,
        )
    }

    /// [`Self::reclaim_channel`] with the options of [`Self::open_or_create_channel_with`].
    pub fn reclaim_channel_with(
        &self,
        id: u32,
        capacity: u64,
        creator_pid: u32,
        options: ChannelOptions,
        liveness: &impl Liveness,
    ) -> Result<Channel<'a, W>, Error> {
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(Error::InvalidCapacity { capacity });
        }
        let max_message_size = options.entry_value(capacity)?;
        let flags = options.entry_flags(max_message_size);
        let entry = self.entry(id)?;
        let previous = match self.channel_creator(id)? {
            Some(previous) => previous,
            // Published, or given back (EMPTY): the ordinary path handles both.
            None => {
                return self
                    .open_or_create_channel_with(id, capacity, creator_pid, options)
                    .map(|c| c.0)
            }
        };
        // As for segments: without a start time, "not alive" is proof, "alive" is not.
        if previous == 0 || liveness.is_alive(previous, 0) {
            return Err(Error::ChannelBeingCreated { id });
        }
        entry
            .creator_pid
            .compare_exchange(previous, creator_pid, AcqRel, Relaxed)
            .map_err(|_| Error::ChannelBeingCreated { id })?;
        // The dead creator may have published between our check and the CAS only if it was
        // alive then; still, never initialise over a published channel.
        if entry.capacity.load(Acquire) != 0 {
            return self.open_channel(id);
        }
        self.create_claimed(id, entry, capacity, (max_message_size, flags), creator_pid)
    }

    /// Like [`Self::open_or_create_channel`] but fails with the existing channel's id if it
    /// was already there.
    pub fn create_channel(
        &self,
        id: u32,
        capacity: u64,
        creator_pid: u32,
    ) -> Result<Channel<'a, W>, Error> {
        match self.open_or_create_channel(id, capacity, creator_pid)? {
            (channel, Opened::Created) => Ok(channel),
            (channel, Opened::Existing) => Err(Error::ChannelExists {
                id,
                capacity: channel.capacity(),
            }),
        }
    }

    /// Runs with the entry's CREATING claim held.
    fn initialise_channel(
        &self,
        id: u32,
        entry: &'a AtomicChannelEntry,
        capacity: u64,
        (max_message_size, flags): (u32, u32),
        creator_pid: u32,
    ) -> Result<Channel<'a, W>, Error> {
        #[cfg(not(loom))]
        if flags & channel_flags::BLOBS != 0 && self.pool.is_none() {
            return Err(Error::Blob(crate::error::BlobError::NoPool));
        }
        let band_offset = self.reserve_band(capacity)?;
        let geometry = ChannelGeometry {
            id,
            capacity,
            band_offset,
            max_message_size,
            carries_blobs: flags & channel_flags::BLOBS != 0,
        };
        // A scribbled cursor could point into a live band or the peer table; never zero
        // another channel's slots or the records of live peers.
        self.check_no_overlap(geometry)?;
        if let Some((start, end)) = self.peer_table_range() {
            if band_offset < end && start < geometry.band_end() {
                return Err(Corruption::PeerTableOverlapsBand {
                    peer_table_offset: start,
                    channel: id,
                }
                .into());
            }
        }
        let channel = self.channel(geometry)?;
        for (position, slot) in channel_slots(&self.bands, geometry) {
            zero_slot(slot);
            slot.sequence.store(position, Relaxed);
        }
        entry.channel_id.store(id, Relaxed);
        entry.flags.store(flags, Relaxed);
        entry.max_message_size.store(max_message_size, Relaxed);
        entry.band_offset.store(band_offset, Relaxed);
        entry.creator_pid.store(creator_pid, Relaxed);
        entry.not_empty_seq.store(0, Relaxed);
        entry.not_empty_waiters.store(0, Relaxed);
        entry.not_full_seq.store(0, Relaxed);
        entry.not_full_waiters.store(0, Relaxed);
        entry.head.store(0, Relaxed);
        entry.tail.store(0, Relaxed);
        self.fields.channel_count.fetch_add(1, AcqRel);
        // Publication point: everything above happens-before any acquire load that sees it.
        entry.capacity.store(capacity, Release);
        entry.state.store(channel_state::READY, Release);
        Ok(channel)
    }

    /// Carves a band of `capacity` slots from the bump cursor.
    fn reserve_band(&self, capacity: u64) -> Result<u64, Error> {
        let needed = band_len(capacity).ok_or(Error::InvalidCapacity { capacity })?;
        self.reserve_bytes(needed)
    }

    /// Carves `needed` bytes (a multiple of 64) from the bump cursor.
    fn reserve_bytes(&self, needed: u64) -> Result<u64, Error> {
        let cursor: &AtomicU64 = &self.fields.band_cursor;
        let mut start = cursor.load(Relaxed);
        for _ in 0..RETRY_LIMIT {
            if start == 0 {
                // A segment made by a client that keeps no cursor: adopt the end of the last
                // band. Racing adopters compute the same value; the CAS lets one of them win.
                let adopted = self.end_of_bands();
                start = match cursor.compare_exchange(0, adopted, AcqRel, Relaxed) {
                    Ok(_) => adopted,
                    Err(current) => current,
                };
            }
            if start < HEADER_SIZE as u64
                || start > self.len
                || !start.is_multiple_of(SLOT_ALIGN as u64)
            {
                return Err(Corruption::BandCursorOutOfRange {
                    found: start,
                    segment_len: self.len,
                }
                .into());
            }
            let end = match start.checked_add(needed) {
                Some(end) if end <= self.len => end,
                _ => {
                    return Err(Error::OutOfSpace {
                        needed,
                        available: self.len - start,
                    })
                }
            };
            match cursor.compare_exchange_weak(start, end, AcqRel, Relaxed) {
                Ok(_) => return Ok(start),
                Err(current) => start = current,
            }
        }
        Err(Error::Busy)
    }

    /// One past the last byte of any valid band or of the peer table (the header's end when
    /// there are none).
    fn end_of_bands(&self) -> u64 {
        let bands = (0..self.entries.len() as u32)
            .filter_map(|id| self.geometry(id).ok().flatten())
            .map(|geometry| geometry.band_end())
            .fold(HEADER_SIZE as u64, u64::max);
        match self.peer_table_range() {
            Some((_, end)) => bands.max(end),
            None => bands,
        }
    }

    /// `[start, end)` of the peer table when `peer_table_offset` names a table inside the
    /// segment.
    fn peer_table_range(&self) -> Option<(u64, u64)> {
        let offset = self.fields.peer_table_offset.load(Acquire);
        let valid =
            offset != 0 && check_peer_table_range(offset, self.peer_records, self.len).is_ok();
        valid.then(|| (offset, offset + peer_table_len(self.peer_records)))
    }

    /// Every created channel whose entry validates, in id order.
    #[must_use]
    pub fn channels(&self) -> heapless::Vec<ChannelInfo, MAX_CHANNELS> {
        let mut list = heapless::Vec::new();
        for id in 0..self.entries.len() as u32 {
            if let (Ok(Some(geometry)), Ok(entry)) = (self.geometry(id), self.entry(id)) {
                let head = entry.head.load(Acquire);
                let tail = entry.tail.load(Acquire);
                // At most MAX_CHANNELS entries, so the push cannot fail.
                let _ = list.push(ChannelInfo::new(geometry, head, tail));
            }
        }
        list
    }

    /// Validates every channel entry and checks that no two bands overlap.
    pub fn validate_all(&self) -> Result<(), Error> {
        let mut bands: heapless::Vec<ChannelGeometry, MAX_CHANNELS> = heapless::Vec::new();
        for id in 0..self.entries.len() as u32 {
            if let Some(geometry) = self.geometry(id)? {
                #[cfg(not(loom))]
                if geometry.carries_blobs && self.pool.is_none() {
                    return Err(Corruption::BlobsWithoutPool { channel: id }.into());
                }
                let _ = bands.push(geometry);
            }
        }
        check_overlaps(&mut bands)?;
        Ok(())
    }
}

/// The peer table (PROTOCOL.md §11): installed on first registration, then found through
/// `peer_table_offset`, which is validated again at every use (a peer may rewrite it).
#[cfg(not(loom))]
impl<'a, W: WaitStrategy> Segment<'a, W> {
    /// The installed peer table, `Ok(None)` when there is none yet, or the corruption of
    /// `peer_table_offset` (out of range, or overlapping a channel's band).
    pub fn peer_table(&self) -> Result<Option<&'a [AtomicPeerRecord]>, Error> {
        self.table_at(self.fields.peer_table_offset.load(Acquire))
    }

    fn table_at(&self, offset: u64) -> Result<Option<&'a [AtomicPeerRecord]>, Error> {
        if offset == 0 {
            return Ok(None);
        }
        check_peer_table_range(offset, self.peer_records, self.len)?;
        let mut bands: heapless::Vec<ChannelGeometry, MAX_CHANNELS> = heapless::Vec::new();
        for id in 0..self.entries.len() as u32 {
            // A corrupt entry is reported when its channel is opened, not here.
            if let Ok(Some(geometry)) = self.geometry(id) {
                let _ = bands.push(geometry);
            }
        }
        check_peer_table_bands(offset, self.peer_records, &bands)?;
        let table = usize::try_from(offset)
            .ok()
            .and_then(|offset| self.bands.region.view_slice(offset, self.peer_records))
            .ok_or(Corruption::PeerTableOutOfRange {
                found: offset,
                segment_len: self.len,
            })?;
        Ok(Some(table))
    }

    /// The peer table, installing it first if there is none: carved from the band area like
    /// a band, zeroed, then published with a CAS of `peer_table_offset` from 0. A loser of
    /// that race uses the winner's table (its own carved bytes stay unused).
    fn peer_table_or_install(&self) -> Result<&'a [AtomicPeerRecord], Error> {
        if let Some(table) = self.peer_table()? {
            return Ok(table);
        }
        let offset = self.reserve_bytes(peer_table_len(self.peer_records))?;
        // A scribbled cursor could point into a live band: never zero one.
        let table = self.table_at(offset)?.ok_or(Error::Busy)?;
        for record in table {
            zero_record(record);
        }
        match self
            .fields
            .peer_table_offset
            .compare_exchange(0, offset, AcqRel, Acquire)
        {
            Ok(_) => Ok(table),
            Err(current) => self.table_at(current)?.ok_or(Error::Busy),
        }
    }

    /// Registers a handle of `role` on `channel` for crash recovery (PROTOCOL.md §11.3),
    /// installing the peer table if needed. The record is freed when the returned slot drops.
    /// Give the slot to the handle's channel with [`Channel::with_peer`].
    ///
    /// `Error::PeerTableFull` when every record is taken ([`Self::peer_records`]),
    /// `Error::OutOfSpace` when there is no room to carve the table: the handle then works
    /// without crash protection.
    pub fn register(
        &self,
        channel: u32,
        role: PeerRole,
        pid: u32,
        start_time: u64,
        runtime: u16,
    ) -> Result<PeerSlot<'a>, Error> {
        if channel as usize >= MAX_CHANNELS {
            return Err(Error::InvalidChannelId { id: channel });
        }
        if pid == 0 {
            return Err(Error::InvalidPid);
        }
        self.register_in_namespace(channel, role, pid, start_time, 0, runtime)
    }

    /// [`Self::register`], recording the registrant's pid namespace too (`pid_ns`, the inode
    /// of `/proc/self/ns/pid`; PROTOCOL.md §11.5), so that checkers in other namespaces, which
    /// cannot see this pid, count the record as alive instead of repairing it.
    pub fn register_in_namespace(
        &self,
        channel: u32,
        role: PeerRole,
        pid: u32,
        start_time: u64,
        pid_ns: u64,
        runtime: u16,
    ) -> Result<PeerSlot<'a>, Error> {
        if channel as usize >= MAX_CHANNELS {
            return Err(Error::InvalidChannelId { id: channel });
        }
        if pid == 0 {
            return Err(Error::InvalidPid);
        }
        let table = self.peer_table_or_install()?;
        register_in(table, channel, role, pid, start_time, pid_ns, runtime)
    }

    /// The memory the segment lives in (for tools and tests that look at raw fields).
    #[cfg(not(loom))]
    #[must_use]
    pub fn region(&self) -> Region<'a> {
        self.bands.region
    }

    /// Every taken record of the peer table, in table order (none when there is no table),
    /// each read when the iterator reaches it.
    pub fn peers(&self) -> Result<impl Iterator<Item = PeerInfo> + 'a, Error> {
        Ok(peer::snapshot(self.peer_table()?.unwrap_or_default()))
    }

    /// [`Channel::unblock`] that knows runs (PROTOCOL.md §11.8, §12.5): when the position a
    /// stopped producer holds starts a run that its peer record names (`intent_flags`), the
    /// run's unpublished continuations get SKIP markers and its first position the one LOST
    /// tombstone, so that the run costs one unblock timeout and one loss, not one per slot.
    /// Otherwise (no run, no record, a consumer's position) it is [`Channel::unblock`].
    #[must_use]
    pub fn unblock<V: WaitStrategy>(
        &self,
        channel: &Channel<'_, V>,
        position: u64,
        holder: PeerRole,
    ) -> bool {
        let table = self.peer_table().ok().flatten().unwrap_or_default();
        if holder == PeerRole::Producer && channel.geometry().carries_runs() {
            if let Some(count) = peer::run_intent_at(table, channel.id(), position) {
                return channel.unblock_run(position, count);
            }
        }
        channel.unblock(position, holder)
    }

    /// One repair pass for `channel`, which must have been opened from this segment
    /// (PROTOCOL.md §11.6); see [`peer::repair_channel`]. With no peer table there is nothing
    /// to repair.
    pub fn repair<V: WaitStrategy, L: Liveness>(
        &self,
        channel: &Channel<'_, V>,
        liveness: &L,
        my_pid: u32,
        my_start_time: u64,
    ) -> Result<RepairReport, Error> {
        let id = channel.id();
        let ours = self
            .entry(id)
            .is_ok_and(|entry| core::ptr::eq(entry, channel.entry()));
        if !ours {
            return Err(Error::ChannelNotFound { id });
        }
        let pool = self.blob_pool();
        let reclaim = |record: usize| pool.map_or(0, |pool| pool.reclaim_owner(record));
        Ok(match self.peer_table()? {
            Some(table) => peer::repair_channel_with(
                channel,
                self.entries,
                table,
                liveness,
                (my_pid, my_start_time),
                &reclaim,
            ),
            None => RepairReport::default(),
        })
    }

    /// Frees the records of dead processes that hold no intent, on every channel, and gives
    /// back the wait counts they were in (PROTOCOL.md §11.9, §11.10): under crash churn they
    /// would otherwise wait for a stuck channel's repair pass, and fill the table. Records
    /// with an intent are left to the repair of their channel. Reports the records freed and
    /// the waits given back (nothing without a table).
    pub fn free_dead_records<L: Liveness>(
        &self,
        liveness: &L,
        my_pid: u32,
    ) -> Result<RepairReport, Error> {
        let pool = self.blob_pool();
        let reclaim = |record: usize| pool.map_or(0, |pool| pool.reclaim_owner(record));
        Ok(match self.peer_table()? {
            Some(table) => {
                peer::free_dead_records_with(self.entries, table, liveness, my_pid, &reclaim)
            }
            None => RepairReport::default(),
        })
    }

    /// Frees the blob-pool blocks nobody will free (PROTOCOL.md §13.6): rule 2, blocks whose
    /// owner record is free; rule 3, queued blocks whose message has left its ring. Dead
    /// owners' blocks (rule 1) are freed with their records by [`Self::free_dead_records`].
    /// Returns the blocks freed (0 without a pool). One pass over the pool, bounded.
    pub fn reclaim_blobs(&self) -> Result<u32, Error> {
        let Some(pool) = self.blob_pool() else {
            return Ok(0);
        };
        let table = self.peer_table()?;
        let leaked = pool.reclaim_leaked(|record| {
            let record = table?.get(record)?;
            Some(record.pid.load(Acquire))
        });
        let queued = pool.reclaim_queued(|channel, position| {
            let Ok(channel) = self.open_channel(channel) else {
                // A scribbled channel id: nothing can take the block.
                return channel as usize >= MAX_CHANNELS;
            };
            channel.position_freed(position)
        });
        let freed = leaked + queued;
        if freed != 0 {
            let (word, waiters) = pool.free_words();
            crate::sync::fence(Ordering::SeqCst);
            if waiters.load(Relaxed) != 0 {
                word.fetch_add(1, Release);
                self.wait.wake_all(word);
            }
        }
        Ok(freed)
    }
}

#[cfg(not(loom))]
fn zero_record(record: &AtomicPeerRecord) {
    record.pid.store(0, Relaxed);
    record.runtime.store(0, Relaxed);
    record.role.store(0, Relaxed);
    record.start_time.store(0, Relaxed);
    record.channel_id.store(0, Relaxed);
    record.intent_count.store(0, Relaxed);
    record.intent_position.store(0, Relaxed);
    record.pid_ns.store(0, Relaxed);
    record.waiting.store(0, Relaxed);
    record.intent_flags.store(0, Relaxed);
    zero_words(&record.reserved);
}

fn channel_slots<'a>(
    bands: &Bands<'a>,
    geometry: ChannelGeometry,
) -> impl Iterator<Item = (u64, &'a AtomicSlot)> {
    bands
        .slots(geometry.band_offset, geometry.capacity)
        .unwrap_or(&[])
        .iter()
        .enumerate()
        .map(|(index, slot)| (index as u64, slot))
}

#[cfg(not(loom))]
fn zero_words(words: &[AtomicU64]) {
    for word in words {
        word.store(0, Relaxed);
    }
}

#[cfg(loom)]
fn zero_words(_words: &[u64]) {}

#[cfg(not(loom))]
fn zero_header_fields(fields: &AtomicHeaderFields) {
    fields.version.store(0, Relaxed);
    fields.max_channels.store(0, Relaxed);
    fields.channel_count.store(0, Relaxed);
    fields.reserved.store(0, Relaxed);
    fields.segment_size.store(0, Relaxed);
    fields.band_cursor.store(0, Relaxed);
    // Not `creator_pid`: it names the process formatting the segment.
    fields.header_flags.store(0, Relaxed);
    fields.peer_table_offset.store(0, Relaxed);
    zero_words(&fields.extension);
}

#[cfg(not(loom))]
fn zero_entry(entry: &AtomicChannelEntry) {
    for word in [
        &entry.channel_id,
        &entry.flags,
        &entry.state,
        &entry.creator_pid,
        &entry.not_empty_seq,
        &entry.not_empty_waiters,
        &entry.not_full_seq,
        &entry.not_full_waiters,
        &entry.max_message_size,
        &entry.extension_word,
    ] {
        word.store(0, Relaxed);
    }
    for word in [
        &entry.capacity,
        &entry.band_offset,
        &entry.stuck_receive_position,
        &entry.stuck_receive_since_ns,
        &entry.stuck_send_position,
        &entry.stuck_send_since_ns,
        &entry.tail,
        &entry.head,
    ] {
        word.store(0, Relaxed);
    }
    zero_words(&entry.extension);
    zero_words(&entry.tail_pad);
    zero_words(&entry.head_pad);
}

fn zero_slot(slot: &AtomicSlot) {
    let meta = &slot.meta;
    meta.store(&crate::layout::MessageMeta::default());
    slot.run_slots.store(0, Relaxed);
    slot.run_index.store(0, Relaxed);
    zero_words(&slot.padding);
    for word in &slot.payload {
        word.store(0, Relaxed);
    }
    zero_words(&slot.reserved);
}
