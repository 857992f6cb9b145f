//! `SharedMemoryAllocator`: the segment and its channel table, as in the seed's low-level API.

use std::fmt;
use std::time::{Duration, Instant};

use dmxp_nostd::layout::MAX_CHANNELS;
use dmxp_nostd::{
    ChannelInfo, ChannelOptions, Error as CoreError, PeerInfo, RepairReport, Segment,
};

use crate::consumer::Consumer;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::{open_channel, Missing};
use crate::memory::{Backing, SharedMemory};
use crate::producer::Producer;

/// A segment's channel table: create channels, list them, open producers and consumers.
///
/// Cheap to clone (clones share the mapping) and `Send + Sync`: it holds no peer record, so
/// one allocator may serve every thread. Its `Debug` names the segment.
#[derive(Clone)]
pub struct SharedMemoryAllocator {
    backing: Backing,
    timeout: Duration,
}

impl fmt::Debug for SharedMemoryAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemoryAllocator")
            .field("segment", &self.backing.label)
            .finish()
    }
}

/// A channel made by [`SharedMemoryAllocator::create_channel`].
#[derive(Clone, Debug)]
pub struct ChannelHandle {
    id: u32,
    capacity: u64,
    allocator: SharedMemoryAllocator,
}

impl ChannelHandle {
    /// The channel id (the lowest that was free).
    #[must_use]
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Slots in the ring.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// A producer on this channel.
    pub fn producer(&self) -> Result<Producer> {
        self.allocator.producer(self.id)
    }

    /// A consumer on this channel.
    pub fn consumer(&self) -> Result<Consumer> {
        self.allocator.consumer(self.id)
    }
}

impl SharedMemoryAllocator {
    /// Creates the default segment (`/dmxp_alloc`) with `size` bytes, or attaches to it if it
    /// exists (keeping its size).
    #[cfg(feature = "shm")]
    #[cfg_attr(docsrs, doc(cfg(feature = "shm")))]
    pub fn new(size: usize) -> Result<Self> {
        crate::ChannelBuilder::new()
            .with_segment_size(size)
            .build_allocator()
    }

    /// Attaches to the existing default segment (`/dmxp_alloc`).
    #[cfg(feature = "shm")]
    #[cfg_attr(docsrs, doc(cfg(feature = "shm")))]
    pub fn attach() -> Result<Self> {
        crate::ChannelBuilder::new().attach_allocator()
    }

    pub(crate) fn from_backing(backing: Backing, timeout: Duration) -> Self {
        Self { backing, timeout }
    }

    fn segment(&self) -> Result<Segment<'_>> {
        Segment::attach(self.backing.memory.region())
            .map_err(|e| Error::from_core(e, &self.backing.label))
    }

    fn deadline(&self) -> Instant {
        Instant::now()
            .checked_add(self.timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365))
    }

    /// Creates a channel with `capacity` slots (a power of two) at the lowest free id.
    pub fn create_channel(&self, capacity: u64) -> Result<ChannelHandle> {
        let segment = self.segment()?;
        let pid = std::process::id();
        for id in 0..MAX_CHANNELS as u32 {
            match segment.create_channel(id, capacity, pid) {
                Ok(channel) => {
                    return Ok(ChannelHandle {
                        id,
                        capacity: channel.capacity(),
                        allocator: self.clone(),
                    })
                }
                // Taken (or being taken by another process): try the next id.
                Err(CoreError::ChannelExists { .. } | CoreError::ChannelBeingCreated { .. }) => {}
                // A corrupt entry is not ours to repair; skip it as well.
                Err(CoreError::Corrupt(c)) if c.channel() == Some(id) => {}
                Err(other) => return Err(Error::from_core(other, &self.backing.label)),
            }
        }
        Err(Error::new(
            ErrorKind::OutOfSpace,
            format!(
                "{}: all {MAX_CHANNELS} channel ids are taken",
                self.backing.label
            ),
        ))
    }

    /// Every created channel (id, capacity, head, tail, depth), in id order. Entries that do
    /// not validate are left out; an unreadable header gives an empty list.
    ///
    /// The seed called it `get_channels`, which still works ([`Self::get_channels`]).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-allocator-channels", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// let allocator = builder.build_allocator()?;
    /// allocator.create_channel(16)?;
    /// let channels = allocator.channels();
    /// assert_eq!(channels.iter().map(|c| (c.id, c.capacity)).collect::<Vec<_>>(), [(0, 4), (1, 16)]);
    /// producer.send("queued")?;
    /// assert_eq!(allocator.channels()[0].depth, 1);
    /// # drop(consumer);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[doc(alias = "get_channels")]
    #[must_use]
    pub fn channels(&self) -> Vec<ChannelInfo> {
        self.segment()
            .map(|segment| segment.channels().into_iter().collect())
            .unwrap_or_default()
    }

    /// The seed's name for [`Self::channels`], kept so that code written against the seed
    /// compiles unchanged; it returns the same list. New code calls `channels`.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-allocator-get-channels", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// let allocator = builder.build_allocator()?;
    /// assert_eq!(allocator.get_channels(), allocator.channels());
    /// # drop((producer, consumer));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn get_channels(&self) -> Vec<ChannelInfo> {
        self.channels()
    }

    /// A producer on channel `id`, creating the channel with `capacity` if needed.
    pub fn producer_or_create(&self, id: u32, capacity: u64) -> Result<Producer> {
        self.producer_or_create_with(id, capacity, ChannelOptions::default())
    }

    /// [`Self::producer_or_create`] with the options of a channel it creates, such as a
    /// message size limit above one slot; an existing channel keeps its own.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-or-create-with", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// use dmxp::ChannelOptions;
    ///
    /// let allocator = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20)
    ///     .build_allocator()?;
    /// let options = ChannelOptions::default().with_max_message_size(16 << 10);
    /// let producer = allocator.producer_or_create_with(5, 64, options)?;
    /// assert_eq!(producer.max_message_size(), 16 << 10);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn producer_or_create_with(
        &self,
        id: u32,
        capacity: u64,
        options: ChannelOptions,
    ) -> Result<Producer> {
        let open = open_channel(
            &self.backing,
            id,
            Missing::Create(capacity, options),
            self.deadline(),
        )?;
        Ok(Producer::new(open))
    }

    /// A producer on the existing channel `id`.
    pub fn producer(&self, id: u32) -> Result<Producer> {
        let open = open_channel(&self.backing, id, Missing::Fail, self.deadline())?;
        Ok(Producer::new(open))
    }

    /// A consumer on the existing channel `id`.
    pub fn consumer(&self, id: u32) -> Result<Consumer> {
        let open = open_channel(&self.backing, id, Missing::Fail, self.deadline())?;
        Ok(Consumer::new(open))
    }

    /// Channel `id` of `segment`, unregistered, waking through the futex.
    fn open<'s>(
        &self,
        segment: &Segment<'s>,
        id: u32,
    ) -> Result<dmxp_nostd::Channel<'s, crate::FutexWait>> {
        segment
            .open_channel(id)
            .map(|channel| channel.with_wait_strategy(crate::FutexWait::new()))
            .map_err(|e| Error::from_core(e, &self.backing.label))
    }

    /// Runs one repair pass over channel `id` (PROTOCOL.md §11.6): positions claimed by
    /// producers or consumers that have died are tombstoned (a dead producer's) or freed (a
    /// dead consumer's); dead records are freed. For tools such as `dmxp recover`.
    pub fn recover(&self, id: u32) -> Result<RepairReport> {
        let segment = self.segment()?;
        let label = &self.backing.label;
        let channel = self.open(&segment, id)?;
        segment
            .repair(
                &channel,
                &crate::recovery::ProcLiveness,
                std::process::id(),
                crate::recovery::own_start_time(),
            )
            .map_err(|e| Error::from_core(e, label))
    }

    /// Gives back the blob-pool blocks nobody will free (PROTOCOL.md §13.6): those of dead
    /// peers (freeing their records), of records that were freed, and of queued messages that
    /// left their ring. Returns how many (0 without a pool).
    pub fn reclaim_blobs(&self) -> Result<u32> {
        let segment = self.segment()?;
        let label = &self.backing.label;
        let dead = segment
            .free_dead_records(&crate::recovery::ProcLiveness, std::process::id())
            .map_err(|e| Error::from_core(e, label))?
            .blocks_reclaimed;
        let rest = segment
            .reclaim_blobs()
            .map_err(|e| Error::from_core(e, label))?;
        Ok(dead + rest)
    }

    /// Brings channel `id` back to an empty, consistent ring after a peer scribbled on its
    /// cursors or sequences (for `dmxp reset`); returns how many queued messages it discarded.
    /// Refused with [`ErrorKind::Busy`](crate::ErrorKind::Busy) naming them while live
    /// registered peers hold claims on the channel, unless `force` (their claims are then
    /// revoked, PROTOCOL.md §11.7).
    pub fn reset(&self, id: u32, force: bool) -> Result<u64> {
        let segment = self.segment()?;
        let label = &self.backing.label;
        let channel = self.open(&segment, id)?;
        if !force {
            let holders: Vec<String> = self
                .peers()?
                .iter()
                .filter(|p| p.record.channel_id == id && p.record.intent_count != 0)
                .filter(|p| crate::peer_alive(&p.record))
                .map(|p| {
                    format!(
                        "pid {} ({} positions from {})",
                        p.record.pid, p.record.intent_count, p.record.intent_position
                    )
                })
                .collect();
            if !holders.is_empty() {
                return Err(Error::new(
                    crate::ErrorKind::Busy,
                    format!(
                        "{label}: channel {id}: live peers hold claims: {}; stop them first or \
                         reset with force",
                        holders.join(", ")
                    ),
                ));
            }
        }
        Ok(channel.reset())
    }

    /// Every taken record of the segment's peer table (empty when it has none yet), in table
    /// order: who is registered on which channel, and what each is claiming. Judge their
    /// owners with [`crate::process_alive`]`(pid, start_time)`.
    pub fn peers(&self) -> Result<Vec<PeerInfo>> {
        let segment = self.segment()?;
        segment
            .peers()
            .map(Iterator::collect)
            .map_err(|e| Error::from_core(e, &self.backing.label))
    }

    /// `channel_count` from the header.
    pub fn channel_count(&self) -> Result<u32> {
        Ok(self.segment()?.channel_count())
    }

    /// The pid recorded by the segment's creator.
    pub fn creator_pid(&self) -> Result<u32> {
        Ok(self.segment()?.creator_pid())
    }

    /// The segment's length in bytes.
    #[must_use]
    pub fn segment_len(&self) -> usize {
        self.backing.memory.region().len()
    }

    /// The segment, as named in error messages.
    #[must_use]
    pub fn label(&self) -> &str {
        &self.backing.label
    }

    /// The mapping itself (to hand to a `ChannelBuilder::with_memory`, or to inspect).
    #[must_use]
    pub fn memory(&self) -> &SharedMemory {
        &self.backing.memory
    }
}
