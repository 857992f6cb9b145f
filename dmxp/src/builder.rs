//! `ChannelBuilder`: the seed's entry point.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dmxp_nostd::{FormatOptions, SegmentMemory};

use crate::allocator::SharedMemoryAllocator;
use crate::consumer::Consumer;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::{open_channel, Missing};
use crate::memory::{
    self, Backing, OpenOptions, Source, DEFAULT_MODE, DEFAULT_SEGMENT_SIZE, DEFAULT_TIMEOUT,
    GROUP_MODE,
};
use crate::producer::Producer;
use dmxp_nostd::trust::{AttachPolicy, GroupAccess, MAX_TRUSTED_OWNERS};

/// Default ring capacity, as in the seed.
pub const DEFAULT_CAPACITY: u64 = 1024;

/// Opens producers and consumers.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// let producer = dmxp::ChannelBuilder::new()
///     .with_channel_id(0)
///     .with_capacity(1024)
///     .build_producer()?;
/// producer.send("Hello, World!")?;
///
/// let consumer = dmxp::ChannelBuilder::new().with_channel_id(0).build_consumer()?;
/// if let Some(data) = consumer.receive()? {
///     println!("Received: {}", String::from_utf8_lossy(&data));
/// }
/// # Ok(())
/// # }
/// ```
///
/// Defaults: channel 0, capacity 1024, the POSIX shm segment `/dmxp_alloc` (feature `shm`) of
/// 128 MiB created with mode `0o600`, and 5 s to wait for a segment or channel that another
/// process is still creating. The library does not read environment variables; the examples
/// honour `DMXP_SEGMENT` themselves.
///
/// Trust: an existing segment is attached to only if this user owns it and it grants nothing
/// outside the mode asked for (PROTOCOL.md §3.4); see [`Self::with_trust_owner`].
///
/// Permissions: a segment this builder creates (shm object or file) is owner-only (`0o600`):
/// processes of other users cannot attach and get [`ErrorKind::Io`]`(PermissionDenied)`
/// (`EACCES`). Share it with a group explicitly, with [`Self::with_group_access`] (`0o660`,
/// the creator's group) or [`Self::with_group`] (`0o660`, a named group). Anyone who can attach
/// can also corrupt or truncate the segment, so share it only with trusted users. An existing
/// segment keeps its owner, group and mode. memfd segments have no mode: access is by
/// descriptor.
///
/// [`ErrorKind::Io`]: crate::ErrorKind::Io
#[derive(Clone)]
pub struct ChannelBuilder {
    channel_id: u32,
    capacity: u64,
    source: Source,
    size: usize,
    mode: u32,
    group: Option<u32>,
    group_access: bool,
    trusted_owners: Vec<u32>,
    timeout: Duration,
    unblock: Duration,
    registration_required: bool,
    format: FormatOptions,
}

impl Default for ChannelBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChannelBuilder {
    /// The defaults above.
    pub fn new() -> Self {
        Self {
            channel_id: 0,
            capacity: DEFAULT_CAPACITY,
            source: Source::default(),
            size: DEFAULT_SEGMENT_SIZE,
            mode: DEFAULT_MODE,
            group: None,
            group_access: false,
            trusted_owners: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            unblock: crate::recovery::UNBLOCK_TIMEOUT,
            registration_required: false,
            format: FormatOptions::default(),
        }
    }

    /// The channel (0..256).
    pub fn with_channel_id(mut self, id: u32) -> Self {
        self.channel_id = id;
        self
    }

    /// Ring capacity (a power of two, at least 2) used if the producer creates the channel. An existing
    /// channel keeps the capacity it was created with.
    pub fn with_capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// A POSIX shm segment by name (`/name`).
    #[cfg(feature = "shm")]
    pub fn with_segment_name(mut self, name: impl Into<String>) -> Self {
        self.source = Source::Shm(name.into());
        self
    }

    /// A segment in a mapped file (created through a temporary file linked into place).
    #[cfg(feature = "file")]
    pub fn with_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.source = Source::File(path.into());
        self
    }

    /// A memfd segment fetched from a segment server listening on this Unix socket path
    /// (`dmxp::memfd::SegmentServer`). The segment must exist: nothing is created.
    #[cfg(feature = "memfd")]
    pub fn with_memfd_socket(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.source = Source::MemfdSocket(path.into());
        self
    }

    /// A segment already mapped and formatted: a memfd received over a socket, or any other
    /// [`SegmentMemory`]. Nothing is created.
    pub fn with_memory<M: SegmentMemory + Send + Sync + 'static>(mut self, memory: Arc<M>) -> Self {
        let label = format!("segment at {:#x}", memory.region().base_addr());
        self.source = Source::Memory(memory, label);
        self
    }

    /// Size of a segment this builder creates (default 128 MiB). An existing segment keeps
    /// its size.
    pub fn with_segment_size(mut self, bytes: usize) -> Self {
        self.size = bytes;
        self
    }

    /// Records in the peer table of a segment this builder creates (PROTOCOL.md §11.1):
    /// one per producer or consumer handle (each clone is a handle) of every process using
    /// the segment at once. The default, 0, means 256; 256 to 16,384 may be asked for (64
    /// bytes each). Other values make `build_*` fail with `InvalidInput`. An existing segment
    /// keeps its table.
    ///
    /// Clients from before this option treat every table as 256 records; give a segment more
    /// only when all its clients know the field (PROTOCOL.md §9).
    ///
    /// ```no_run
    /// // 64 channels with up to 16 handles each.
    /// let producer = dmxp::ChannelBuilder::new()
    ///     .with_segment_name("/dmxp_fleet")
    ///     .with_peer_records(1024)
    ///     .build_producer()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_peer_records(mut self, records: u32) -> Self {
        self.format = self.format.with_peer_records(records);
        self
    }

    /// Mode bits of a segment this builder creates (default `0o600`, owner only), applied
    /// exactly whatever the umask. Bits outside `0o777` make creation fail (`InvalidInput`).
    ///
    /// It is also the widest mode accepted in an existing segment: one that grants more (a
    /// world-writable object when `0o600` was asked) is refused with
    /// [`ErrorKind::Untrusted`](crate::ErrorKind::Untrusted) (PROTOCOL.md §3.4).
    pub fn with_mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Shares a segment this builder creates with the creator's group: mode `0o660`, so every
    /// process whose user is in that group can attach (and, like the owner, read and write
    /// every byte of it). Same as `with_mode(0o660)`.
    ///
    /// When attaching, an existing segment of any group this process belongs to is accepted
    /// whatever its owner (see [`Self::with_trust_owner`]).
    pub fn with_group_access(mut self) -> Self {
        self.group_access = true;
        self.with_mode(GROUP_MODE)
    }

    /// Shares a segment this builder creates with group `gid`: the new shm object or file is
    /// given to that group (`fchown`, before it is formatted) and gets mode `0o660`. The
    /// creating process must belong to the group (or hold `CAP_CHOWN`), else creation fails
    /// with [`ErrorKind::Io`]`(PermissionDenied)`. A later [`Self::with_mode`] changes the mode
    /// bits. Ignored for segments that exist already, and for memfd segments.
    ///
    /// [`ErrorKind::Io`]: crate::ErrorKind::Io
    ///
    /// When attaching, an existing segment of group `gid` is accepted whatever its owner.
    pub fn with_group(mut self, gid: u32) -> Self {
        self.group = Some(gid);
        self.group_access = true;
        self.with_mode(GROUP_MODE)
    }

    /// Trusts an existing segment owned by user `uid` (besides this process's own user).
    ///
    /// By default an existing shm object or file is attached to only if this process's
    /// effective user owns it and it grants nothing outside the mode asked for
    /// ([`Self::with_mode`], `0o600` by default): anyone can create an object under a name
    /// first, and whoever owns it can read every message, rewrite it, or truncate it under
    /// its peers. Other segments are refused with
    /// [`ErrorKind::Untrusted`](crate::ErrorKind::Untrusted) naming their owner and mode.
    /// Trusting an owner does not widen the mode: add `with_mode` for that. At most four
    /// owners can be trusted (`InvalidInput` when building otherwise).
    ///
    /// ```no_run
    /// // A segment made by the service account 990 with mode 0o660, shared with our group.
    /// let consumer = dmxp::ChannelBuilder::new()
    ///     .with_segment_name("/sensors")
    ///     .with_trust_owner(990)
    ///     .with_mode(0o660)
    ///     .build_consumer()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_trust_owner(mut self, uid: u32) -> Self {
        self.trusted_owners.push(uid);
        self
    }

    /// How long to wait for a segment or channel that another process is still creating
    /// (default 5 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The attach rule of PROTOCOL.md §3.4 for this builder's choices.
    fn policy(&self) -> Result<AttachPolicy> {
        let group = match (self.group, self.group_access) {
            (Some(gid), _) => GroupAccess::Group(gid),
            (None, true) => GroupAccess::OwnGroups,
            (None, false) => GroupAccess::None,
        };
        let mut policy = dmxp_os::current_user_policy(self.mode).with_group(group);
        for &uid in &self.trusted_owners {
            policy = policy.trust_owner(uid).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("at most {MAX_TRUSTED_OWNERS} owners can be trusted"),
                )
            })?;
        }
        Ok(policy)
    }

    /// How long a position may stay held by a peer that is alive but not moving (stopped with
    /// `SIGSTOP` or a debugger, or holding a loan or an in-place guard) before this builder's
    /// handles repair it anyway (default 1 s, PROTOCOL.md §11.8): the channel then flows past
    /// it, the position counts as lost, and the holder's late publish or free is refused
    /// ([`ErrorKind::Revoked`]). `Duration::MAX` never unblocks (dead peers are still
    /// repaired after [`crate::STUCK_GRACE`]).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// // Loans of large frames are held for up to 5 s by design.
    /// let producer = dmxp::ChannelBuilder::new()
    ///     .with_unblock_timeout(Duration::from_secs(10))
    ///     .build_producer()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_unblock_timeout(mut self, timeout: Duration) -> Self {
        self.unblock = timeout;
        self
    }

    /// Fails `build_producer` / `build_consumer` with [`ErrorKind::OutOfSpace`] when the handle
    /// cannot take a record in the segment's peer table (it is full of live peers, or there is
    /// no room to carve it), instead of handing out a handle without crash protection: a
    /// claim left by an unregistered handle that dies is never repaired (PROTOCOL.md §11.3).
    /// By default such a handle works unregistered and says so through `is_registered()`.
    ///
    /// ```no_run
    /// let producer = dmxp::ChannelBuilder::new()
    ///     .with_registration_required()
    ///     .build_producer()?;
    /// assert!(producer.is_registered());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_registration_required(mut self) -> Self {
        self.registration_required = true;
        self
    }

    /// The error for a handle that could not register, when registration is required.
    fn check_registered(&self, registered: bool) -> Result<()> {
        if self.registration_required && !registered {
            return Err(Error::new(
                ErrorKind::OutOfSpace,
                format!(
                    "channel {}: no peer record free for this handle (the peer table is full \
                     of live peers, or there is no room for it); refusing an unprotected handle",
                    self.channel_id
                ),
            ));
        }
        Ok(())
    }

    fn options(&self, create: bool) -> Result<OpenOptions> {
        self.format
            .check()
            .map_err(|e| Error::new(ErrorKind::InvalidInput, e.to_string()))?;
        Ok(OpenOptions {
            format: self.format,
            create,
            unblock: self.unblock,
            policy: self.policy()?,
            size: self.size,
            mode: self.mode,
            group: self.group,
            timeout: self.timeout,
        })
    }

    fn deadline(&self) -> Instant {
        Instant::now()
            .checked_add(self.timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365))
    }

    pub(crate) fn backing(&self, create: bool) -> Result<Backing> {
        memory::open(&self.source, self.options(create)?)
    }

    /// Attaches to the segment and the channel, creating either if it does not exist. Two
    /// processes doing this at once get one segment and one channel: creation is exclusive,
    /// the loser opens what the winner made, and waits (up to the timeout) while it is being
    /// made. An existing segment is never truncated or reformatted.
    pub fn build_producer(&self) -> Result<Producer> {
        let deadline = self.deadline();
        let backing = self.backing(true)?;
        let open = open_channel(
            &backing,
            self.channel_id,
            Missing::Create(self.capacity),
            deadline,
        )?;
        let producer = Producer::new(open);
        self.check_registered(producer.is_registered())?;
        Ok(producer)
    }

    /// Attaches to an existing segment and channel. Fails with kind `NotFound` and a message
    /// naming the segment or the channel when it does not exist.
    pub fn build_consumer(&self) -> Result<Consumer> {
        let deadline = self.deadline();
        let backing = self.backing(false)?;
        let open = open_channel(&backing, self.channel_id, Missing::Fail, deadline)?;
        let consumer = Consumer::new(open);
        self.check_registered(consumer.is_registered())?;
        Ok(consumer)
    }

    /// The segment as a [`SharedMemoryAllocator`], created if it does not exist.
    pub fn build_allocator(&self) -> Result<SharedMemoryAllocator> {
        Ok(SharedMemoryAllocator::from_backing(
            self.backing(true)?,
            self.timeout,
        ))
    }

    /// The existing segment as a [`SharedMemoryAllocator`] (`NotFound` if absent).
    pub fn attach_allocator(&self) -> Result<SharedMemoryAllocator> {
        Ok(SharedMemoryAllocator::from_backing(
            self.backing(false)?,
            self.timeout,
        ))
    }
}
