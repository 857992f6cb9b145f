//! `ChannelBuilder`: the seed's entry point.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dmxp_nostd::{ChannelOptions, FormatOptions, SegmentMemory};

use crate::allocator::SharedMemoryAllocator;
use crate::consumer::Consumer;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::{open_channel, Missing, OpenChannel};
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
/// # // Not run as a test: it would create (or attach to) the host's default segment
/// # // /dmxp_alloc, which other programs may be using.
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
/// The examples of the methods below use a segment in a file of the temporary directory
/// (feature `file`), removed at the end, so that they leave nothing in `/dev/shm`; a segment
/// of 2 MiB instead of 128 MiB keeps that file small.
///
/// A `ChannelBuilder` is `Send + Sync` and cheap to clone: clone it to open several handles
/// with the same options.
///
/// [`ErrorKind::Io`]: crate::ErrorKind::Io
#[derive(Clone, Debug)]
#[must_use = "a ChannelBuilder does nothing until build_producer, build_consumer or build_allocator"]
pub struct ChannelBuilder {
    channel_id: u32,
    capacity: u64,
    channel_options: ChannelOptions,
    source: Source,
    size: usize,
    mode: u32,
    group: Option<u32>,
    group_access: bool,
    trusted_owners: Vec<u32>,
    timeout: Duration,
    unblock: Duration,
    registration_required: bool,
    single_slot_only: bool,
    timestamps: bool,
    format: FormatOptions,
}

impl Default for ChannelBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChannelBuilder {
    /// The defaults above.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-new", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// let producer = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20)
    ///     .build_producer()?;
    /// assert_eq!(producer.channel_id(), 0);
    /// assert_eq!(producer.capacity(), dmxp::DEFAULT_CAPACITY);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> Self {
        Self {
            channel_id: 0,
            capacity: DEFAULT_CAPACITY,
            channel_options: ChannelOptions::default(),
            source: Source::default(),
            size: DEFAULT_SEGMENT_SIZE,
            mode: DEFAULT_MODE,
            group: None,
            group_access: false,
            trusted_owners: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            unblock: crate::recovery::UNBLOCK_TIMEOUT,
            registration_required: false,
            single_slot_only: false,
            timestamps: true,
            format: FormatOptions::default(),
        }
    }

    /// The channel (0..256).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-with-channel-id", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// let builder = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20);
    /// let producer = builder.clone().with_channel_id(7).build_producer()?;
    /// assert_eq!(producer.channel_id(), 7);
    /// let too_far = builder.with_channel_id(256).build_producer().unwrap_err();
    /// assert_eq!(too_far.kind(), dmxp::ErrorKind::InvalidInput);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_channel_id(mut self, id: u32) -> Self {
        self.channel_id = id;
        self
    }

    /// Ring capacity (a power of two, at least 2) used if the producer creates the channel. An existing
    /// channel keeps the capacity it was created with.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-with-capacity", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// let builder = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20);
    /// let producer = builder.clone().with_capacity(16).build_producer()?;
    /// assert_eq!(producer.capacity(), 16);
    /// // The channel exists now: a consumer asking for another capacity gets this one.
    /// let consumer = builder.with_capacity(64).build_consumer()?;
    /// assert_eq!(consumer.capacity(), 16);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// The largest message, in bytes, of a channel the producer creates (default 960, one
    /// slot). A longer message travels as a run of consecutive slots (PROTOCOL.md §12), so
    /// the limit may be up to `capacity × 960` bytes; a limit the capacity cannot hold fails
    /// the build with [`crate::ErrorKind::InvalidInput`]. An existing channel keeps the limit
    /// it was created with ([`Producer::max_message_size`] says which).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-with-max-message-size", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// let builder = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(4 << 20)
    ///     .with_capacity(1024)
    ///     .with_max_message_size(256 << 10);
    /// let producer = builder.build_producer()?;
    /// let consumer = builder.build_consumer()?;
    /// let frame = vec![0xAB; 200 << 10]; // a 200 KiB message, sent like 32 bytes
    /// producer.send(&frame)?;
    /// assert_eq!(consumer.receive()?.as_deref(), Some(&frame[..]));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.channel_options = self.channel_options.with_max_message_size(bytes);
        self
    }

    /// Takes single-slot messages only: the build fails with
    /// [`crate::ErrorKind::RunsNotSupported`] when the channel was made for messages longer
    /// than 960 bytes (it carries runs, PROTOCOL.md §12), and with
    /// [`crate::ErrorKind::InvalidInput`] beside a [`Self::with_max_message_size`] above 960.
    /// For code that cannot take a longer message (fixed 960-byte buffers, a batch loop) and
    /// would rather refuse such a channel up front than meet its first run mid-stream.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-single-slot-only", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// let builder = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20)
    ///     .with_capacity(64);
    /// let _small = builder.clone().with_channel_id(0).build_producer()?;
    /// let _large = builder.clone().with_channel_id(1).with_max_message_size(16 << 10).build_producer()?;
    ///
    /// let strict = builder.with_single_slot_only();
    /// assert!(strict.clone().with_channel_id(0).build_consumer().is_ok());
    /// let refused = strict.with_channel_id(1).build_consumer().unwrap_err();
    /// assert_eq!(refused.kind(), dmxp::ErrorKind::RunsNotSupported { channel: 1 });
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_single_slot_only(mut self) -> Self {
        self.single_slot_only = true;
        self
    }

    /// A POSIX shm segment by name (`/name`).
    ///
    /// ```
    /// # let name = format!("/dmxp_doc_segment_name_{}", std::process::id());
    /// # // This one does make a /dev/shm object: the guard removes its name again.
    /// # struct Unlink(String);
    /// # impl Drop for Unlink { fn drop(&mut self) { let _ = dmxp::unlink_segment(&self.0); } }
    /// # let _unlink = Unlink(name.clone());
    /// let producer = dmxp::ChannelBuilder::new()
    ///     .with_segment_name(&name) // such as "/sensors"
    ///     .with_segment_size(2 << 20)
    ///     .build_producer()?;
    /// assert_eq!(producer.segment(), format!("shm segment {name}"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[cfg(feature = "shm")]
    #[cfg_attr(docsrs, doc(cfg(feature = "shm")))]
    pub fn with_segment_name(mut self, name: impl Into<String>) -> Self {
        self.source = Source::Shm(name.into());
        self
    }

    /// A segment in a mapped file (created through a temporary file linked into place).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// let path = std::env::temp_dir().join(format!("dmxp-doc-{}-with-file", std::process::id()));
    /// # let _rm = Rm(path.clone());
    /// let producer = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20)
    ///     .build_producer()?;
    /// producer.send("kept in the file")?;
    /// drop(producer);
    /// // The segment outlives the processes that use it: a later consumer finds the message.
    /// let consumer = dmxp::ChannelBuilder::new().with_file(&path).build_consumer()?;
    /// assert_eq!(consumer.receive()?.as_deref(), Some(&b"kept in the file"[..]));
    /// std::fs::remove_file(&path)?;
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[cfg(feature = "file")]
    #[cfg_attr(docsrs, doc(cfg(feature = "file")))]
    pub fn with_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.source = Source::File(path.into());
        self
    }

    /// A memfd segment fetched from a segment server listening on this Unix socket path
    /// (`dmxp::memfd::SegmentServer`). The segment must exist: nothing is created.
    ///
    /// ```
    /// # #[cfg(feature = "memfd")] {
    /// use std::sync::Arc;
    /// use dmxp::memfd::{MemfdSegment, SegmentServer};
    ///
    /// # let socket = std::env::temp_dir().join(format!("dmxp-doc-{}.sock", std::process::id()));
    /// // The process that made the segment serves it on a socket...
    /// let segment = Arc::new(MemfdSegment::create("dmxp-doc", 2 << 20)?);
    /// let server = SegmentServer::bind(&socket, Arc::clone(&segment))?.spawn();
    /// let producer = dmxp::ChannelBuilder::new().with_memory(segment).build_producer()?;
    /// producer.send("over a socket")?;
    ///
    /// // ...and another one fetches it by the socket's path.
    /// let consumer = dmxp::ChannelBuilder::new()
    ///     .with_memfd_socket(&socket)
    ///     .build_consumer()?;
    /// assert_eq!(consumer.receive()?.as_deref(), Some(&b"over a socket"[..]));
    /// server.stop()?; // also removes the socket file
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[cfg(feature = "memfd")]
    #[cfg_attr(docsrs, doc(cfg(feature = "memfd")))]
    pub fn with_memfd_socket(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.source = Source::MemfdSocket(path.into());
        self
    }

    /// A segment already mapped and formatted: a memfd received over a socket, or any other
    /// [`SegmentMemory`]. Nothing is created.
    ///
    /// ```
    /// # #[cfg(feature = "memfd")] {
    /// // An anonymous segment (feature `memfd`): no name anyone else could open.
    /// let segment = std::sync::Arc::new(dmxp::memfd::MemfdSegment::create("dmxp-doc", 2 << 20)?);
    /// let builder = dmxp::ChannelBuilder::new().with_memory(segment);
    /// let producer = builder.build_producer()?;
    /// let consumer = builder.build_consumer()?;
    /// producer.send("private")?;
    /// assert_eq!(consumer.receive()?.as_deref(), Some(&b"private"[..]));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_memory<M: SegmentMemory + Send + Sync + 'static>(mut self, memory: Arc<M>) -> Self {
        let label = format!("segment at {:#x}", memory.region().base_addr());
        self.source = Source::Memory(memory, label);
        self
    }

    /// Size of a segment this builder creates (default 128 MiB). An existing segment keeps
    /// its size.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-with-segment-size", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// let producer = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(4 << 20)
    ///     .build_producer()?;
    /// let allocator = dmxp::ChannelBuilder::new().with_file(&path).attach_allocator()?;
    /// assert_eq!(allocator.segment_len(), 4 << 20);
    /// # drop(producer);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
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
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-with-peer-records", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// // 64 channels with up to 16 handles each.
    /// let producer = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(4 << 20)
    ///     .with_peer_records(1024)
    ///     .build_producer()?;
    /// assert!(producer.is_registered());
    /// let refused = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_peer_records(100)
    ///     .build_consumer()
    ///     .unwrap_err();
    /// assert_eq!(refused.kind(), dmxp::ErrorKind::InvalidInput);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_peer_records(mut self, records: u32) -> Self {
        self.format = self.format.with_peer_records(records);
        self
    }

    /// A blob pool of about `bytes` (PROTOCOL.md §13) in a segment this builder creates, split
    /// over size classes of 4 KiB to 16 MiB blocks ([`BlobPoolSpec::for_bytes`]), and a
    /// channel this builder creates that carries blobs. Producers then loan blocks
    /// ([`crate::Producer::loan_blob`]) written in place, and consumers read them in place
    /// ([`crate::Consumer::receive_blob`]). The segment must be large enough for the pool and
    /// the rings ([`Self::with_segment_size`]). An existing segment keeps the pool it was made
    /// with.
    ///
    /// [`BlobPoolSpec::for_bytes`]: crate::BlobPoolSpec::for_bytes
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-with-blob-pool", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// let producer = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(80 << 20)
    ///     .with_blob_pool(64 << 20)
    ///     .build_producer()?;
    /// assert_eq!(producer.max_blob_size(), 4 << 20);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_blob_pool(self, bytes: u64) -> Self {
        self.with_blob_classes(crate::BlobPoolSpec::for_bytes(bytes))
    }

    /// [`Self::with_blob_pool`] with explicit size classes.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-with-blob-classes", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// let classes = dmxp::BlobPoolSpec::new().with_class(64 << 10, 32).with_class(4 << 20, 4);
    /// let producer = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(32 << 20)
    ///     .with_blob_classes(classes)
    ///     .build_producer()?;
    /// assert_eq!(producer.max_blob_size(), 4 << 20);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_blob_classes(mut self, spec: crate::BlobPoolSpec) -> Self {
        self.format = self.format.with_blob_pool(spec);
        self.channel_options = self.channel_options.with_blobs();
        self
    }

    /// Mode bits of a segment this builder creates (default `0o600`, owner only), applied
    /// exactly whatever the umask. Bits outside `0o777` make creation fail (`InvalidInput`).
    ///
    /// It is also the widest mode accepted in an existing segment: one that grants more (a
    /// world-writable object when `0o600` was asked) is refused with
    /// [`ErrorKind::Untrusted`](crate::ErrorKind::Untrusted) (PROTOCOL.md §3.4).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-with-mode", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// use std::os::unix::fs::PermissionsExt;
    ///
    /// let producer = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20)
    ///     .with_mode(0o640) // the owner writes, the group reads
    ///     .build_producer()?;
    /// assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o640);
    /// // A builder that asks for owner-only (the default) refuses a segment granting more.
    /// let refused = dmxp::ChannelBuilder::new().with_file(&path).build_consumer().unwrap_err();
    /// assert!(matches!(refused.kind(), dmxp::ErrorKind::Untrusted { .. }));
    /// # drop(producer);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
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
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-with-group-access", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// use std::os::unix::fs::PermissionsExt;
    ///
    /// let producer = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20)
    ///     .with_group_access()
    ///     .build_producer()?;
    /// assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o660);
    /// # drop(producer);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
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
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-with-group", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// use std::os::unix::fs::MetadataExt;
    ///
    /// let gid = rustix::process::getegid().as_raw(); // a group this process belongs to
    /// let producer = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20)
    ///     .with_group(gid)
    ///     .build_producer()?;
    /// let metadata = std::fs::metadata(&path)?;
    /// assert_eq!((metadata.gid(), metadata.mode() & 0o777), (gid, 0o660));
    /// # drop(producer);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
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
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-with-trust-owner", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let producer = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_group_access()
    /// #     .build_producer()?;
    /// // A segment made by the service account 990 with mode 0o660, shared with our group
    /// // (here this user made it, and its own segments are always trusted).
    /// let consumer = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_trust_owner(990)
    ///     .with_mode(0o660)
    ///     .build_consumer()?;
    /// // A fifth trusted owner is refused.
    /// let five = (1..=5).fold(dmxp::ChannelBuilder::new().with_file(&path), |builder, uid| {
    ///     builder.with_trust_owner(uid)
    /// });
    /// assert_eq!(five.build_consumer().unwrap_err().kind(), dmxp::ErrorKind::InvalidInput);
    /// # drop((producer, consumer));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_trust_owner(mut self, uid: u32) -> Self {
        self.trusted_owners.push(uid);
        self
    }

    /// How long to wait for a segment or channel that another process is still creating
    /// (default 5 s).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-with-timeout", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// use std::os::unix::fs::OpenOptionsExt;
    /// use std::time::{Duration, Instant};
    ///
    /// // A segment file its creator has not formatted yet (all zeros, as just after creation).
    /// let file = std::fs::OpenOptions::new()
    ///     .write(true)
    ///     .create_new(true)
    ///     .mode(0o600)
    ///     .open(&path)?;
    /// file.set_len(2 << 20)?;
    /// let started = Instant::now();
    /// let waited = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_timeout(Duration::from_millis(50))
    ///     .build_consumer()
    ///     .unwrap_err();
    /// assert_eq!(waited.kind(), dmxp::ErrorKind::Timeout);
    /// assert!(started.elapsed() >= Duration::from_millis(50));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
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
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-with-unblock-timeout", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// use std::time::Duration;
    ///
    /// // Loans of large frames are held for up to 5 s by design.
    /// let producer = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20)
    ///     .with_unblock_timeout(Duration::from_secs(10))
    ///     .build_producer()?;
    /// let mut loan = producer.loan()?;
    /// assert!(loan.write_at(0, b"frame")); // ...taking its time over a large frame
    /// loan.commit(5)?;
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_unblock_timeout(mut self, timeout: Duration) -> Self {
        self.unblock = timeout;
        self
    }

    /// Whether the producer stamps each message's `timestamp_ns` with the monotonic clock (the
    /// default) or leaves it 0, which the protocol reads as "unknown" (PROTOCOL.md §8). The
    /// clock read is the largest cost of a send that the ring does not need: 25 instructions
    /// under valgrind and about 18 ns natively on this project's benchmark machine
    /// (docs/BENCHMARKS.md, "Instruction counts"). Consumers are unaffected.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-with-timestamps", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// let builder = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20)
    ///     .with_timestamps(false);
    /// let producer = builder.build_producer()?;
    /// let consumer = builder.build_consumer()?;
    /// producer.send("no clock read")?;
    /// assert_eq!(consumer.receive_with_meta()?.unwrap().meta.timestamp_ns, 0);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_timestamps(mut self, stamp: bool) -> Self {
        self.timestamps = stamp;
        self
    }

    /// Fails `build_producer` / `build_consumer` with [`ErrorKind::OutOfSpace`] when the handle
    /// cannot take a record in the segment's peer table (it is full of live peers, or there is
    /// no room to carve it), instead of handing out a handle without crash protection: a
    /// claim left by an unregistered handle that dies is never repaired (PROTOCOL.md §11.3).
    /// By default such a handle works unregistered and says so through `is_registered()`.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-with-registration-required", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// let producer = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20)
    ///     .with_registration_required()
    ///     .build_producer()?;
    /// assert!(producer.is_registered());
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_registration_required(mut self) -> Self {
        self.registration_required = true;
        self
    }

    /// The error for a handle that could not register, when registration is required.
    fn check_single_slot(&self, open: &OpenChannel) -> Result<()> {
        if self.single_slot_only {
            // The core's refusal, on a clone that is not registered (it is dropped at once).
            open.channel()
                .clone()
                .require_single_slot()
                .map_err(|refused| Error::from_core(refused, &open.label))?;
        }
        Ok(())
    }

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
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-build-producer", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// let builder = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20);
    /// let first = builder.build_producer()?; // creates the segment and the channel
    /// let second = builder.build_producer()?; // attaches to both
    /// first.send("one")?;
    /// second.send("two")?;
    /// assert_eq!(second.info().depth, 2);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn build_producer(&self) -> Result<Producer> {
        if self.single_slot_only && self.channel_options.max_message_size > crate::MSG_INLINE {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "channel {}: with_single_slot_only() and with_max_message_size({}) \
                     contradict each other (one slot holds 960 bytes)",
                    self.channel_id, self.channel_options.max_message_size
                ),
            ));
        }
        let deadline = self.deadline();
        let backing = self.backing(true)?;
        let open = open_channel(
            &backing,
            self.channel_id,
            Missing::Create(self.capacity, self.channel_options),
            deadline,
        )?;
        self.check_single_slot(&open)?;
        let producer = Producer::new(open).with_timestamps(self.timestamps);
        self.check_registered(producer.is_registered())?;
        Ok(producer)
    }

    /// Attaches to an existing segment and channel. Fails with kind `NotFound` and a message
    /// naming the segment or the channel when it does not exist.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-build-consumer", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// let builder = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20);
    /// let missing = builder.build_consumer().unwrap_err();
    /// assert_eq!(missing.kind(), dmxp::ErrorKind::NotFound);
    ///
    /// let producer = builder.build_producer()?;
    /// let consumer = builder.build_consumer()?;
    /// producer.send("hello")?;
    /// assert_eq!(consumer.receive()?.as_deref(), Some(&b"hello"[..]));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn build_consumer(&self) -> Result<Consumer> {
        let deadline = self.deadline();
        let backing = self.backing(false)?;
        let open = open_channel(&backing, self.channel_id, Missing::Fail, deadline)?;
        self.check_single_slot(&open)?;
        let consumer = Consumer::new(open);
        self.check_registered(consumer.is_registered())?;
        Ok(consumer)
    }

    /// The segment as a [`SharedMemoryAllocator`], created if it does not exist.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-build-allocator", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// let allocator = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20)
    ///     .build_allocator()?;
    /// let channel = allocator.create_channel(64)?;
    /// assert_eq!((channel.id(), channel.capacity()), (0, 64));
    /// assert_eq!(allocator.channels().len(), 1);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn build_allocator(&self) -> Result<SharedMemoryAllocator> {
        Ok(SharedMemoryAllocator::from_backing(
            self.backing(true)?,
            self.timeout,
        ))
    }

    /// The existing segment as a [`SharedMemoryAllocator`] (`NotFound` if absent).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-attach-allocator", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// let builder = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20);
    /// let missing = builder.attach_allocator().unwrap_err();
    /// assert_eq!(missing.kind(), dmxp::ErrorKind::NotFound);
    ///
    /// let producer = builder.with_channel_id(3).build_producer()?;
    /// let allocator = dmxp::ChannelBuilder::new().with_file(&path).attach_allocator()?;
    /// assert_eq!(allocator.channels()[0].id, 3);
    /// # drop(producer);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn attach_allocator(&self) -> Result<SharedMemoryAllocator> {
        Ok(SharedMemoryAllocator::from_backing(
            self.backing(false)?,
            self.timeout,
        ))
    }
}
