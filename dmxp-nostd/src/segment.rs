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

use crate::channel::Channel;
use crate::error::{Corruption, Error};
use crate::layout::{
    band_len, channel_state, AtomicChannelEntry, AtomicHeaderFields, AtomicSlot, HEADER_SIZE,
    MAGIC, MAX_CAPACITY, MAX_CHANNELS, MIN_CAPACITY, SLOT_ALIGN, VERSION,
};
use crate::sync::{AtomicU64, Ordering};
#[cfg(not(loom))]
use crate::validate::validate_header;
use crate::validate::{check_overlaps, validate_entry, ChannelGeometry, ChannelInfo};
use crate::wait::{SpinWait, WaitStrategy};

#[cfg(not(loom))]
use crate::layout::CHANNEL_TABLE_OFFSET;
#[cfg(not(loom))]
use crate::region::Region;

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
#[derive(Clone)]
pub struct Segment<'a, W: WaitStrategy = SpinWait> {
    fields: &'a AtomicHeaderFields,
    entries: &'a [AtomicChannelEntry],
    bands: Bands<'a>,
    len: u64,
    wait: W,
}

/// Whether [`Segment::open_or_create_channel`] made the channel or found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    Created,
    Existing,
}

#[cfg(not(loom))]
impl<'a> Segment<'a, SpinWait> {
    /// Formats a region that nobody else uses yet (freshly created, exclusively owned) as an
    /// empty segment; `magic` is stored last. Refuses a region whose `magic` is already set.
    pub fn format(region: Region<'a>, creator_pid: u32) -> Result<Self, Error> {
        let len = region.len() as u64;
        let (fields, entries) = Self::header_views(region)?;
        if fields.magic.load(Acquire) != 0 {
            return Err(Error::AlreadyFormatted);
        }
        zero_header_fields(fields);
        for entry in entries {
            zero_entry(entry);
        }
        fields.version.store(VERSION, Relaxed);
        fields.max_channels.store(MAX_CHANNELS as u32, Relaxed);
        fields.segment_size.store(len, Relaxed);
        fields.band_cursor.store(HEADER_SIZE as u64, Relaxed);
        fields.creator_pid.store(creator_pid, Relaxed);
        fields.magic.store(MAGIC, Release);
        Ok(Self::from_parts(
            fields,
            entries,
            Bands { region },
            len,
            SpinWait,
        ))
    }

    /// Attaches to a formatted segment after validating its header. `Error::NotReady` means
    /// the creator has not finished (or died while) formatting it.
    pub fn attach(region: Region<'a>) -> Result<Self, Error> {
        let (fields, entries) = Self::header_views(region)?;
        let magic = fields.magic.load(Acquire);
        let mut header = fields.snapshot();
        header.magic = magic;
        let len = validate_header(&header, region.len() as u64)?;
        Ok(Self::from_parts(
            fields,
            entries,
            Bands { region },
            len,
            SpinWait,
        ))
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
        Self::from_parts(fields, entries, Bands { slots }, len, SpinWait)
    }
}

impl<'a, W: WaitStrategy> Segment<'a, W> {
    fn from_parts(
        fields: &'a AtomicHeaderFields,
        entries: &'a [AtomicChannelEntry],
        bands: Bands<'a>,
        len: u64,
        wait: W,
    ) -> Self {
        Self {
            fields,
            entries,
            bands,
            len,
            wait,
        }
    }

    /// The same segment handing `wait` to the channels it opens (for wake-ups).
    pub fn with_wait_strategy<V: WaitStrategy>(self, wait: V) -> Segment<'a, V> {
        Segment::from_parts(self.fields, self.entries, self.bands, self.len, wait)
    }

    /// The validated segment length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Never true for a validated segment (it holds at least the header).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `channel_count` as stored.
    pub fn channel_count(&self) -> u32 {
        self.fields.channel_count.load(Acquire)
    }

    /// Bytes still free for bands.
    pub fn free_space(&self) -> u64 {
        self.len
            .saturating_sub(self.fields.band_cursor.load(Relaxed))
    }

    /// Pid recorded by the creator.
    pub fn creator_pid(&self) -> u32 {
        self.fields.creator_pid.load(Relaxed)
    }

    fn entry(&self, id: u32) -> Result<&'a AtomicChannelEntry, Error> {
        self.entries
            .get(id as usize)
            .ok_or(Error::InvalidChannelId { id })
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
        Ok(Channel::new(geometry, entry, slots, self.wait.clone()))
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
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(Error::InvalidCapacity { capacity });
        }
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
        entry.creator_pid.store(creator_pid, Relaxed);
        match self.initialise_channel(id, entry, capacity, creator_pid) {
            Ok(channel) => Ok((channel, Opened::Created)),
            Err(error) => {
                // Give the id back so that a later attempt can succeed.
                entry.state.store(channel_state::EMPTY, Release);
                Err(error)
            }
        }
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
        creator_pid: u32,
    ) -> Result<Channel<'a, W>, Error> {
        let band_offset = self.reserve_band(capacity)?;
        let geometry = ChannelGeometry {
            id,
            capacity,
            band_offset,
        };
        // A scribbled cursor could point into a live band; never zero another channel's slots.
        self.check_no_overlap(geometry)?;
        let channel = self.channel(geometry)?;
        for (position, slot) in channel_slots(&self.bands, geometry) {
            zero_slot(slot);
            slot.sequence.store(position, Relaxed);
        }
        entry.channel_id.store(id, Relaxed);
        entry.flags.store(0, Relaxed);
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
            if start < HEADER_SIZE as u64 || start > self.len || start % SLOT_ALIGN as u64 != 0 {
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

    /// One past the last byte of any valid band (the header's end when there are none).
    fn end_of_bands(&self) -> u64 {
        (0..self.entries.len() as u32)
            .filter_map(|id| self.geometry(id).ok().flatten())
            .map(|geometry| geometry.band_end())
            .fold(HEADER_SIZE as u64, u64::max)
    }

    /// Every created channel whose entry validates, in id order.
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
                let _ = bands.push(geometry);
            }
        }
        check_overlaps(&mut bands)?;
        Ok(())
    }
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
    fields.creator_pid.store(0, Relaxed);
    fields.header_flags.store(0, Relaxed);
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
    ] {
        word.store(0, Relaxed);
    }
    for word in [
        &entry.capacity,
        &entry.band_offset,
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
    zero_words(&slot.padding);
    for word in &slot.payload {
        word.store(0, Relaxed);
    }
    zero_words(&slot.reserved);
}
