//! The sending side of a channel.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmxp_nostd::layout::runtime;
use dmxp_nostd::{ChannelInfo, PayloadMut, PeerRole, RepairReport, SendError, SendLoan, SendMeta};

use crate::error::{Error, Result};
#[cfg(feature = "wait-fd")]
use crate::futex_ring::ArmedWait;
use crate::handle::{FutexChannel, HandleCell, OpenChannel};
use crate::recovery::{slice_deadline, MissStreak, StuckWatch};
use crate::wait::FutexWait;

/// CLOCK_MONOTONIC in nanoseconds: the clock DMXP stamps `timestamp_ns` with. It counts from
/// an arbitrary point (boot on Linux) that is the same for every process on the host, so a
/// receiver can compute a message's age as `monotonic_ns() - meta.timestamp_ns`. (std's
/// `Instant` reads the same clock but does not expose its value.)
///
/// ```
/// let before = dmxp::monotonic_ns();
/// std::thread::sleep(std::time::Duration::from_millis(1));
/// assert!(dmxp::monotonic_ns() - before >= 1_000_000);
/// ```
#[must_use]
pub fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (now.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(now.tv_nsec as u64)
}

/// Sends messages on one channel. Cheap to clone; clones share the mapping, and each clone
/// can be moved to its own thread (the ring is multi-producer).
///
/// Every message is stamped with `message_id` (its position in the channel, increasing),
/// `timestamp_ns` ([`monotonic_ns`] at send), `sender_pid` and `sender_runtime` = 1 (Rust).
///
/// # Crash recovery
///
/// Each producer (and each clone) registers a record in the segment's peer table and writes
/// there, around every claim, the positions it is about to fill (PROTOCOL.md §11). If this
/// process dies mid-send, a peer that finds the channel stuck publishes a LOST tombstone in
/// place of the unfinished message, so consumers go on. Because a record holds one send at a
/// time, a `Producer` is `Send` but not `Sync`: share clones between threads, not references.
/// When the peer table is full (or there is no room to carve it) the producer still works,
/// without that protection ([`Self::is_registered`]).
///
/// A send that finds the ring full because a consumer died holding a slot repairs it
/// (frees the slot) once the channel has been stuck at that slot for
/// [`STUCK_GRACE`](crate::STUCK_GRACE); blocking sends re-check that often while stuck.
/// Non-blocking sends start watching for a stuck slot after 64 full results in a row (so that
/// a producer spinning on a full ring does not keep reading the consumers' cursor).
///
/// The examples of the methods below use a channel of 4 slots in a file segment of the
/// temporary directory (feature `file`), opened as in [`ChannelBuilder`](crate::ChannelBuilder)'s
/// examples: `producer` and `consumer` are a [`Producer`] and a [`Consumer`](crate::Consumer)
/// of that channel.
pub struct Producer {
    /// The async wake-up ring. Declared first, so dropped first: its pending futex wait is
    /// cancelled and reaped before `cell` can release the mapping that holds the word.
    #[cfg(feature = "tokio")]
    wakeup: crate::async_wait::Wakeup,
    /// The wait armed for the owner's event loop ([`Self::arm_wait`]); before `cell`, like
    /// `wakeup`. `Drop` undoes its registration.
    #[cfg(feature = "wait-fd")]
    event_wait: crate::futex_ring::EventWait,
    cell: HandleCell,
    pid: u32,
    timestamps: bool,
    stuck: StuckWatch,
    misses: MissStreak,
}

impl Clone for Producer {
    /// Another producer on the same channel, with its own peer record.
    fn clone(&self) -> Self {
        Self::from_open(Arc::clone(self.cell.open())).with_timestamps(self.timestamps)
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("segment", &self.cell.open().label)
            .field("channel", &self.channel_id())
            .field("registered", &self.is_registered())
            .finish()
    }
}

impl Producer {
    pub(crate) fn new(open: OpenChannel) -> Self {
        Self::from_open(Arc::new(open))
    }

    fn from_open(open: Arc<OpenChannel>) -> Self {
        let unblock = open.unblock;
        Self {
            #[cfg(feature = "tokio")]
            wakeup: crate::async_wait::Wakeup::default(),
            #[cfg(feature = "wait-fd")]
            event_wait: crate::futex_ring::EventWait::default(),
            cell: HandleCell::register(open, PeerRole::Producer),
            pid: std::process::id(),
            timestamps: true,
            stuck: StuckWatch::new(unblock),
            misses: MissStreak::default(),
        }
    }

    /// See [`crate::ChannelBuilder::with_timestamps`].
    pub(crate) fn with_timestamps(mut self, stamp: bool) -> Self {
        self.timestamps = stamp;
        self
    }

    /// The handle's registration and mapping.
    pub(crate) fn cell(&self) -> &HandleCell {
        &self.cell
    }

    pub(crate) fn channel(&self) -> &FutexChannel<'_> {
        self.cell.channel()
    }

    /// True when this producer holds a peer record, so that a send it leaves unfinished by
    /// dying is repaired by its peers. False when the segment's peer table is full or could
    /// not be carved (no room left).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-is-registered", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// assert!(producer.is_registered());
    /// // Each clone registers its own record.
    /// assert!(producer.clone().is_registered());
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn is_registered(&self) -> bool {
        self.cell.is_registered()
    }

    /// Runs one repair pass over this channel now (PROTOCOL.md §11.6): positions claimed by
    /// producers or consumers that have died are tombstoned or freed. Sends do this by
    /// themselves when the ring stays stuck; this is for tools and tests.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-recover", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// let report = producer.recover()?;
    /// assert!(!report.repaired()); // nobody died holding a position
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recover(&self) -> Result<RepairReport> {
        self.cell.recover()
    }

    /// After a send found the ring full: repairs it if a dead consumer has held the slot at
    /// `tail` for the grace period. True when something was repaired (try again).
    fn repair_if_stuck(&self) -> bool {
        self.cell.repair_if_stuck(&self.stuck, PeerRole::Consumer)
    }

    /// Runs `attempt` until it does not find the ring full; while full, repairs a stuck ring
    /// and waits on the futex until `deadline` (`None`: no deadline).
    pub(crate) fn sending<T>(
        &self,
        deadline: Option<Instant>,
        len: usize,
        mut attempt: impl FnMut() -> std::result::Result<T, SendError>,
    ) -> std::result::Result<T, SendError> {
        // A message longer than a slot waits until its whole run is free (PROTOCOL.md §12.3).
        let slots = len.div_ceil(crate::MSG_INLINE).max(1) as u64;
        loop {
            match attempt() {
                Err(SendError::Full) => {}
                other => return other,
            }
            if self.repair_if_stuck() {
                continue;
            }
            // A shrunk segment ends the wait as if timed out; `waiting_error` then reports
            // it. The futex word lives in the segment, so it is checked around the sleep.
            if deadline.is_some_and(|d| Instant::now() >= d) || self.cell.check_size().is_err() {
                return Err(SendError::TimedOut);
            }
            let slice = slice_deadline(deadline, &self.stuck);
            let waiter = slice.map_or(FutexWait::new(), FutexWait::until);
            self.channel().wait_for_free_slots(slots, &waiter);
            if self.cell.check_size().is_err() {
                return Err(SendError::TimedOut);
            }
        }
    }

    /// The error of a blocking send: [`ErrorKind::Truncated`] if the segment shrank while it
    /// waited, else the core error's.
    ///
    /// [`ErrorKind::Truncated`]: crate::ErrorKind::Truncated
    pub(crate) fn waiting_error(&self, e: dmxp_nostd::SendError) -> Error {
        match (e, self.cell.check_size()) {
            (SendError::TimedOut, Err(truncated)) => truncated,
            _ => self.error(e),
        }
    }

    /// One non-blocking attempt, repaired once if the ring is stuck on a dead consumer (looked
    /// for only after a streak of full rings, see [`MissStreak`]).
    #[inline(always)]
    fn once<T>(
        &self,
        mut attempt: impl FnMut() -> std::result::Result<T, SendError>,
    ) -> std::result::Result<T, SendError> {
        match attempt() {
            Ok(value) => {
                self.misses.hit();
                Ok(value)
            }
            Err(error) => self.once_failed(error, attempt),
        }
    }

    /// [`Self::once`] after a first attempt failed. Out of line: a send that gets through
    /// never comes here.
    #[cold]
    #[inline(never)]
    fn once_failed<T>(
        &self,
        error: SendError,
        mut attempt: impl FnMut() -> std::result::Result<T, SendError>,
    ) -> std::result::Result<T, SendError> {
        let result = match error {
            SendError::Full if self.misses.miss() && self.repair_if_stuck() => attempt(),
            other => Err(other),
        };
        if result.is_ok() {
            self.misses.hit();
        }
        result
    }

    #[inline(always)]
    pub(crate) fn meta(&self, message_type: u32, flags: u16) -> SendMeta {
        SendMeta {
            message_type,
            flags,
            timestamp_ns: if self.timestamps { monotonic_ns() } else { 0 },
            sender_pid: self.pid,
            sender_runtime: runtime::RUST,
        }
    }

    pub(crate) fn error(&self, e: dmxp_nostd::SendError) -> Error {
        Error::from_send(e, self.channel_id())
    }

    /// Sends one message without blocking; returns its `message_id`. A full ring is an error
    /// of kind [`crate::ErrorKind::Full`]; a payload over 960 bytes is `TooLarge`.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-send", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// let id = producer.send("hello")?;
    /// assert_eq!(consumer.receive_with_meta()?.unwrap().meta.message_id, id);
    ///
    /// let too_large = producer.send([0u8; 961]).unwrap_err();
    /// assert!(matches!(too_large.kind(), dmxp::ErrorKind::TooLarge { .. }));
    /// for _ in 0..4 {
    ///     producer.send("fill")?;
    /// }
    /// // Nobody receives: the fifth message finds the 4-slot ring full.
    /// assert_eq!(producer.send("one too many").unwrap_err().kind(), dmxp::ErrorKind::Full);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send(&self, payload: impl AsRef<[u8]>) -> Result<u64> {
        self.send_with(payload, 0, 0)
    }

    /// Like [`Self::send`] with an application message type and application flags (only the
    /// bits in `0xFF00`; the low byte belongs to the protocol).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-send-with", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// producer.send_with("tagged", 7, 0x0100)?;
    /// let message = consumer.receive_with_meta()?.unwrap();
    /// assert_eq!((message.meta.message_type, message.meta.flags), (7, 0x0100));
    ///
    /// let reserved = producer.send_with("x", 0, 0x0001).unwrap_err();
    /// assert_eq!(reserved.kind(), dmxp::ErrorKind::InvalidInput);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_with(
        &self,
        payload: impl AsRef<[u8]>,
        message_type: u32,
        flags: u16,
    ) -> Result<u64> {
        let meta = self.meta(message_type, flags);
        self.once(|| self.channel().try_send(payload.as_ref(), &meta))
            .map_err(|e| self.error(e))
    }

    /// Sends, sleeping (futex) while the ring is full, for at most `timeout`; then fails with
    /// kind [`crate::ErrorKind::Timeout`].
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-send-timeout", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// use std::time::Duration;
    ///
    /// for _ in 0..4 {
    ///     producer.send_timeout("fill", Duration::from_millis(10))?;
    /// }
    /// // Full, and nobody receives: the fifth send gives up after 10 ms.
    /// let waited = producer.send_timeout("late", Duration::from_millis(10)).unwrap_err();
    /// assert_eq!(waited.kind(), dmxp::ErrorKind::Timeout);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_timeout(&self, payload: impl AsRef<[u8]>, timeout: Duration) -> Result<u64> {
        self.send_with_timeout(payload, 0, 0, timeout)
    }

    /// [`Self::send_timeout`] with a message type and application flags.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-send-with-timeout", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// use std::time::Duration;
    ///
    /// producer.send_with_timeout("tagged", 7, 0x0100, Duration::from_millis(10))?;
    /// let message = consumer.receive_with_meta()?.unwrap();
    /// assert_eq!((message.meta.message_type, message.meta.flags), (7, 0x0100));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_with_timeout(
        &self,
        payload: impl AsRef<[u8]>,
        message_type: u32,
        flags: u16,
        timeout: Duration,
    ) -> Result<u64> {
        let meta = self.meta(message_type, flags);
        let deadline = FutexWait::with_timeout(timeout).deadline();
        let payload = payload.as_ref();
        self.sending(deadline, payload.len(), || {
            self.channel().try_send(payload, &meta)
        })
        .map_err(|e| self.waiting_error(e))
    }

    /// Sends, sleeping (futex) while the ring is full, without a deadline.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-send-blocking", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// use std::time::Duration;
    ///
    /// for _ in 0..4 {
    ///     producer.send("fill")?;
    /// }
    /// let receiver = std::thread::spawn(move || {
    ///     std::thread::sleep(Duration::from_millis(10));
    ///     consumer.receive()
    /// });
    /// // The ring is full: this send sleeps until the consumer frees a slot.
    /// producer.send_blocking("waited")?;
    /// assert_eq!(receiver.join().unwrap()?.as_deref(), Some(&b"fill"[..]));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_blocking(&self, payload: impl AsRef<[u8]>) -> Result<u64> {
        let meta = self.meta(0, 0);
        let payload = payload.as_ref();
        self.sending(None, payload.len(), || {
            self.channel().try_send(payload, &meta)
        })
        .map_err(|e| self.waiting_error(e))
    }

    /// Sends as many of `payloads` as there is room for, in order, claiming their slots with
    /// one atomic operation; returns how many were sent (0 only for an empty slice). Every
    /// payload is checked first: one over 960 bytes fails the call and sends nothing. A full
    /// ring is a `Full` error.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-send-batch", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// let sent = producer.send_batch(&["a", "b", "c", "d", "e"])?;
    /// assert_eq!(sent, 4); // as many as the 4-slot ring has room for
    /// assert_eq!(consumer.receive_batch(8)?.len(), 4);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<usize> {
        let meta = self.meta(0, 0);
        self.once(|| self.channel().try_send_batch(payloads, &meta))
            .map_err(|e| self.error(e))
    }

    /// Claims a slot to write in place (zero-copy); publish it with [`Loan::commit`]. A loan
    /// dropped without commit is published as a skip marker that consumers pass over.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-loan", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// let mut loan = producer.loan()?;
    /// assert!(loan.write_at(0, b"in place"));
    /// let id = loan.commit(8)?;
    /// let message = consumer.receive_with_meta()?.unwrap();
    /// assert_eq!((message.meta.message_id, &message.payload[..]), (id, &b"in place"[..]));
    ///
    /// // A loan dropped without commit is skipped by consumers.
    /// drop(producer.loan()?);
    /// assert_eq!(consumer.receive()?, None);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn loan(&self) -> Result<Loan<'_>> {
        let inner = self
            .once(|| self.channel().try_loan())
            .map_err(|e| self.error(e))?;
        Ok(Loan {
            inner,
            producer: self,
        })
    }

    /// Claims room for a message of up to `len` bytes, written in place: one slot as
    /// [`Self::loan`] for `len <= 960`, else the slots of a run, claimed at once when all of
    /// them are free (the loan's [`Loan::capacity`] is then a multiple of 960, up to the
    /// channel's limit). Fails at once, sending nothing: [`crate::ErrorKind::TooLarge`] past
    /// [`Self::max_message_size`], [`crate::ErrorKind::Full`] while too few slots are free.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-loan-for", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// let builder = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20)
    ///     .with_capacity(64)
    ///     .with_max_message_size(32 << 10);
    /// let producer = builder.build_producer()?;
    /// let consumer = builder.build_consumer()?;
    /// let frame = vec![0xA5u8; 20_000];
    /// let mut loan = producer.loan_for(frame.len())?;
    /// for (i, row) in frame.chunks(1_000).enumerate() {
    ///     assert!(loan.write_at(i * 1_000, row));
    /// }
    /// loan.commit(frame.len())?;
    /// assert_eq!(consumer.receive()?.as_deref(), Some(&frame[..]));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn loan_for(&self, len: usize) -> Result<Loan<'_>> {
        let inner = self
            .once(|| self.channel().try_loan_for(len))
            .map_err(|e| self.error(e))?;
        Ok(Loan {
            inner,
            producer: self,
        })
    }

    /// The channel id.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-channel-id", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// assert_eq!(producer.channel_id(), 0);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn channel_id(&self) -> u32 {
        self.channel().id()
    }

    /// Slots in the ring.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-capacity", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// assert_eq!(producer.capacity(), 4);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.channel().capacity()
    }

    /// The largest message the channel takes, in bytes: 960 (one slot) unless it was made
    /// for larger ones ([`crate::ChannelBuilder::with_max_message_size`]); a longer send fails
    /// with [`crate::ErrorKind::TooLarge`] and sends nothing.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-max-message-size", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// let builder = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(2 << 20)
    ///     .with_capacity(256)
    ///     .with_max_message_size(200 << 10);
    /// let producer = builder.build_producer()?;
    /// let consumer = builder.build_consumer()?;
    /// assert_eq!(producer.max_message_size(), 200 << 10);
    /// producer.send(vec![7u8; 200 << 10])?;
    /// assert_eq!(consumer.receive()?.unwrap().len(), 200 << 10);
    /// let too_large = producer.send(vec![0u8; (200 << 10) + 1]).unwrap_err();
    /// assert!(matches!(too_large.kind(), dmxp::ErrorKind::TooLarge { limit: 204_800, .. }));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn max_message_size(&self) -> usize {
        self.channel().max_message_size()
    }

    /// How many consumers and producers are registered as waiting on this channel right now
    /// (`not_empty_waiters`, `not_full_waiters`: PROTOCOL.md §7): blocked or awaiting a
    /// message, blocked or awaiting free slots. While both are 0, sends and receives make no
    /// wake-up system call.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-waiters", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// assert_eq!(producer.waiters(), (0, 0)); // nobody waits
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn waiters(&self) -> (u32, u32) {
        self.channel().waiters()
    }

    /// Cursors and depth right now.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-info", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// producer.send("queued")?;
    /// let info = producer.info();
    /// assert_eq!((info.head, info.tail, info.depth), (0, 1, 1));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn info(&self) -> ChannelInfo {
        self.channel().info()
    }

    /// The segment, as named in error messages (`shm segment /dmxp_alloc`).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-segment", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// assert_eq!(producer.segment(), format!("file segment {}", path.display()));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn segment(&self) -> &str {
        &self.cell.open().label
    }
}

/// A slot claimed by [`Producer::loan`], or the slots of a run claimed by
/// [`Producer::loan_for`], written in place.
///
/// Dropped without [`Self::commit`], the slot is published as a skip marker that consumers
/// pass over, so the ring never stalls on it; hold a loan briefly (peers revoke a position held
/// past the unblock timeout, [`ChannelBuilder::with_unblock_timeout`]).
///
/// A `Loan` is neither `Send` nor `Sync`: it borrows its [`Producer`], which is not `Sync`
/// (its peer record holds this one claim). Commit or drop it on the thread that made it.
/// Its `Debug` shows the channel and the `message_id`, never the payload.
///
/// [`ChannelBuilder::with_unblock_timeout`]: crate::ChannelBuilder::with_unblock_timeout
#[must_use = "a loan dropped unused publishes an empty skip marker; write it, then commit it"]
pub struct Loan<'p> {
    inner: SendLoan<'p, 'p, FutexWait>,
    producer: &'p Producer,
}

impl fmt::Debug for Loan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loan")
            .field("channel", &self.producer.channel_id())
            .field("message_id", &self.message_id())
            .finish_non_exhaustive()
    }
}

impl Loan<'_> {
    /// The `message_id` this message will carry.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-loan-message-id", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// let loan = producer.loan()?;
    /// let id = loan.message_id();
    /// assert_eq!(loan.commit(0)?, id);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn message_id(&self) -> u64 {
        self.inner.position()
    }

    /// The most bytes [`Self::commit`] takes: 960 for a loan of one slot, a multiple of 960
    /// (up to the channel's limit) for a run made by [`Producer::loan_for`].
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-loan-capacity", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(16)
    /// #     .with_max_message_size(8_000);
    /// # let producer = builder.build_producer()?;
    /// assert_eq!(producer.loan()?.capacity(), 960);
    /// assert_eq!(producer.loan_for(1_000)?.capacity(), 1_920);
    /// assert_eq!(producer.loan_for(7_900)?.capacity(), 8_000);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    /// The first slot's 960-byte payload area, written in place (the slots after it through
    /// [`Self::part`]).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-loan-payload", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// let mut loan = producer.loan()?;
    /// let mut area = loan.payload();
    /// assert_eq!(area.capacity(), 960);
    /// assert!(area.set_word(0, u64::from_le_bytes(*b"8 bytes!")));
    /// loan.commit(8)?;
    /// assert_eq!(consumer.receive()?.as_deref(), Some(&b"8 bytes!"[..]));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    #[inline]
    pub fn payload(&mut self) -> PayloadMut<'_> {
        self.inner.payload()
    }

    /// The payload area of slot `index` of the loan (bytes `960 × index ..` of the message),
    /// or `None` past its slots.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-loan-part", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(16)
    /// #     .with_max_message_size(8_000);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// let mut loan = producer.loan_for(968)?;
    /// assert!(loan.part(1).unwrap().set_word(0, u64::from_le_bytes(*b"8 bytes!")));
    /// assert!(loan.part(2).is_none());
    /// loan.commit(968)?;
    /// assert_eq!(&consumer.receive()?.unwrap()[960..], b"8 bytes!");
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn part(&mut self, index: usize) -> Option<PayloadMut<'_>> {
        self.inner.part(index)
    }

    /// Writes `bytes` at `offset` of the message, across slots as needed; `false` (nothing
    /// written) if it would run past [`Self::capacity`].
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-loan-write-at", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// let mut loan = producer.loan()?;
    /// assert!(loan.write_at(0, b"head"));
    /// assert!(loan.write_at(4, b"-tail"));
    /// assert!(!loan.write_at(958, b"past the end"));
    /// loan.commit(9)?;
    /// assert_eq!(consumer.receive()?.as_deref(), Some(&b"head-tail"[..]));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use = "`false` means nothing was written"]
    #[inline]
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) -> bool {
        self.inner.write_at(offset, bytes)
    }

    /// Publishes the first `len` bytes; returns the `message_id`. A `len` past
    /// [`Self::capacity`] fails with [`crate::ErrorKind::TooLarge`] and publishes the loan as
    /// skip markers; a run loan committing fewer bytes than it claimed frees the slots it does
    /// not need the same way.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-loan-commit", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// let mut loan = producer.loan()?;
    /// assert!(loan.write_at(0, b"zero-copy"));
    /// let id = loan.commit(9)?;
    /// let message = consumer.receive_with_meta()?.unwrap();
    /// assert_eq!((message.meta.message_id, message.payload.len()), (id, 9));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn commit(self, len: usize) -> Result<u64> {
        self.commit_with(len, 0, 0)
    }

    /// Publishes with a message type and application flags.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-loan-commit-with", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// let mut loan = producer.loan()?;
    /// assert!(loan.write_at(0, b"typed"));
    /// loan.commit_with(5, 42, 0x8000)?;
    /// let meta = consumer.receive_with_meta()?.unwrap().meta;
    /// assert_eq!((meta.message_type, meta.flags), (42, 0x8000));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn commit_with(self, len: usize, message_type: u32, flags: u16) -> Result<u64> {
        let meta = self.producer.meta(message_type, flags);
        let producer = self.producer;
        self.inner.commit(len, &meta).map_err(|e| producer.error(e))
    }
}

#[cfg(feature = "wait-fd")]
#[cfg_attr(docsrs, doc(cfg(feature = "wait-fd")))]
impl Producer {
    /// Arms a wait for room for a message of `len` bytes (one slot, or all the slots of a
    /// run) that an event loop of any kind can poll: the `io_uring` futex wait of PROTOCOL.md
    /// §7.4 on the channel's `not_full` word. Call it after a send failed with
    /// [`ErrorKind::Full`](crate::ErrorKind::Full); the rules are those of [`Consumer::arm_wait`](crate::Consumer::arm_wait):
    /// on [`ArmedWait::Ready`] send again, on [`ArmedWait::Readable`] wait for the fd (or the
    /// timeout), call [`Self::disarm_wait`], then send again.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-arm-wait", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let mut producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// for _ in 0..4 {
    ///     producer.send("fill")?;
    /// }
    /// match producer.arm_wait(4) {
    ///     Ok(dmxp::ArmedWait::Readable { .. }) => assert_eq!(producer.waiters(), (0, 1)),
    ///     Ok(dmxp::ArmedWait::Ready) => unreachable!("the ring is full"),
    ///     Err(_) => {} // no io_uring futex waits on this kernel
    /// }
    /// consumer.receive()?;
    /// producer.disarm_wait();
    /// producer.send("room")?;
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn arm_wait(&mut self, len: usize) -> Result<ArmedWait> {
        let slots = len.div_ceil(crate::MSG_INLINE).max(1) as u64;
        self.event_wait
            .arm_handle(&self.cell, &self.stuck, PeerRole::Consumer, |channel| {
                channel.register_for_free_slots(slots)
            })
    }

    /// Ends the wait [`Self::arm_wait`] armed, like
    /// [`Consumer::disarm_wait`](crate::Consumer::disarm_wait).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-disarm-wait", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let mut producer = builder.build_producer()?;
    /// producer.disarm_wait(); // nothing armed: nothing to do
    /// assert_eq!(producer.waiters(), (0, 0));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn disarm_wait(&mut self) {
        self.event_wait.disarm(self.cell.channel());
    }
}

#[cfg(feature = "wait-fd")]
impl Drop for Producer {
    fn drop(&mut self) {
        self.event_wait.disarm(self.cell.channel());
    }
}

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl Producer {
    /// Sends one message, waiting without a thread while the ring is full (for a message
    /// longer than one slot: until all the slots of its run are free at once): an `io_uring`
    /// futex wait on the channel's `not_full` word, whose ring fd the runtime polls
    /// (PROTOCOL.md §7.4), or a poll every millisecond where `io_uring` is unavailable.
    /// Returns the `message_id`. Errors other than a full ring (`TooLarge`...) return at once.
    ///
    /// Needs a tokio runtime with I/O and time enabled (`enable_all`). It takes `&mut self`
    /// so that the future is `Send` (a `Producer` is not `Sync`).
    ///
    /// **Cancel-safe**: dropping the future before it completes sends nothing (the message is
    /// written only in the step that returns its id) and leaves no waiter registered.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-send-async", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let mut producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// use std::time::Duration;
    ///
    /// for _ in 0..4 {
    ///     producer.send("fill")?;
    /// }
    /// let receiver = std::thread::spawn(move || {
    ///     std::thread::sleep(Duration::from_millis(10));
    ///     consumer.receive()
    /// });
    /// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// // The ring is full: this send waits until the consumer frees a slot.
    /// let id = runtime.block_on(producer.send_async("waited"))?;
    /// assert_eq!(id, 4);
    /// assert_eq!(receiver.join().unwrap()?.as_deref(), Some(&b"fill"[..]));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn send_async(&mut self, payload: impl AsRef<[u8]>) -> Result<u64> {
        self.send_async_until(payload.as_ref(), None).await
    }

    /// [`Self::send_async`] for at most `timeout`; then fails with kind
    /// [`crate::ErrorKind::Timeout`], having sent nothing. Cancel-safe, like it.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-send-async-timeout", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let mut producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// use std::time::Duration;
    ///
    /// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// runtime.block_on(async {
    ///     for _ in 0..4 {
    ///         producer.send_async_timeout("fill", Duration::from_millis(10)).await?;
    ///     }
    ///     // Full, and nobody receives: the fifth send gives up after 10 ms.
    ///     let late = producer.send_async_timeout("late", Duration::from_millis(10)).await;
    ///     assert_eq!(late.unwrap_err().kind(), dmxp::ErrorKind::Timeout);
    ///     Ok::<_, dmxp::Error>(())
    /// })?;
    /// assert_eq!(consumer.info().depth, 4);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn send_async_timeout(
        &mut self,
        payload: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<u64> {
        let deadline = FutexWait::with_timeout(timeout).deadline();
        self.send_async_until(payload.as_ref(), deadline).await
    }

    async fn send_async_until(&mut self, payload: &[u8], deadline: Option<Instant>) -> Result<u64> {
        let meta = self.meta(0, 0);
        // A message longer than a slot waits until its whole run is free (PROTOCOL.md §12.3).
        let slots = payload.len().div_ceil(crate::MSG_INLINE).max(1) as u64;
        loop {
            match self.channel().try_send(payload, &meta) {
                Err(SendError::Full) => {}
                Ok(id) => {
                    self.wakeup.made_progress();
                    return Ok(id);
                }
                Err(e) => return Err(self.error(e)),
            }
            if self.repair_if_stuck() {
                continue;
            }
            // The wait word lives in the segment: a shrunk one is reported, not touched.
            self.cell.check_size()?;
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(self.error(SendError::TimedOut));
            }
            let until = crate::wait::slice_end(slice_deadline(deadline, &self.stuck), now);
            if self.wakeup.must_poll() {
                self.wakeup.pause(Some(until)).await;
                continue;
            }
            // A round that ends at once (the word moved before the kernel queued the wait, a
            // busy channel) never returns `Pending`: let the runtime's budget decide when to
            // yield, so that other tasks still run.
            tokio::task::consume_budget().await;
            let registration = self.cell.channel().register_for_free_slots(slots);
            if registration.is_ready() {
                continue;
            }
            self.wakeup
                .sleep_on(registration.word(), registration.observed(), Some(until))
                .await;
            drop(registration);
        }
    }

    /// Makes this producer's async waits poll instead of using `io_uring` (`true`), or go back
    /// to `io_uring` where available (`false`); see [`crate::Consumer::use_async_polling`].
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-use-async-polling", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let mut producer = builder.build_producer()?;
    /// producer.use_async_polling(true);
    /// assert_eq!(producer.async_wakeup(), Some(dmxp::AsyncWakeup::Polling));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn use_async_polling(&mut self, yes: bool) {
        self.wakeup.set_force_polling(yes);
    }

    /// How this producer's async waits are woken: `None` until its first async wait, unless
    /// polling is forced; see [`crate::Consumer::async_wakeup`].
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-producer-async-wakeup", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// assert_eq!(producer.async_wakeup(), None); // no async wait yet
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn async_wakeup(&self) -> Option<crate::async_wait::AsyncWakeup> {
        self.wakeup.mode()
    }
}
