//! The receiving side of a channel.
//!
//! # Lost and corrupt messages
//!
//! A position in the ring may hold a tombstone (its producer died mid-send: `Lost`) or a
//! message whose `payload_len` is impossible (a buggy or hostile peer: `Corrupt`). The core
//! consumes such a position and reports it. The receives here that return `Option` or `Vec`
//! skip it and keep going, so a bad message never hides the good ones behind it; each one is
//! counted in [`Consumer::stats`], and the most recent is kept for [`Consumer::take_error`].
//! Errors that are not about one message (a too-small buffer, a timeout on a blocking call,
//! contention that exhausted the retry bound) are returned as `Err`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dmxp_nostd::layout::MSG_INLINE;
use dmxp_nostd::{ChannelInfo, MessageMeta, Payload, PeerRole, RecvError, RecvGuard, RepairReport};

use crate::error::{Error, ErrorKind, Result};
#[cfg(feature = "wait-fd")]
use crate::futex_ring::ArmedWait;
use crate::handle::{FutexChannel, HandleCell, OpenChannel};
use crate::recovery::MissStreak;
use crate::recovery::{slice_deadline, StuckWatch};
use crate::wait::FutexWait;

/// Bound on consecutive lost/corrupt positions skipped in one call (each one is a consumed
/// position, so this only matters against a peer that keeps writing bad messages).
const SKIP_LIMIT: usize = 1 << 16;

/// A received message: metadata and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The metadata the sender stamped (`message_id`, `timestamp_ns`, `sender_pid`...).
    pub meta: MessageMeta,
    /// The payload, copied out of the slot (`meta.payload_len` bytes).
    pub payload: Vec<u8>,
}

/// Counters of one consumer (shared by its clones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiveStats {
    /// Messages delivered.
    pub received: u64,
    /// Tombstones of messages whose producer died (crash recovery, PROTOCOL.md §11),
    /// skipped. Batch receives count them here too (and in `dropped_in_batch`).
    pub lost: u64,
    /// Messages with an impossible `payload_len`, skipped.
    pub corrupt: u64,
    /// Lost or corrupt positions skipped by batch receives (the batch path does not tell the
    /// two apart).
    pub dropped_in_batch: u64,
    /// Claims of this consumer that a repair revoked before it freed them (PROTOCOL.md §11.7:
    /// it was judged dead, or held a position past the unblock timeout): nothing delivered.
    pub revoked: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    lost: AtomicU64,
    corrupt: AtomicU64,
    dropped_in_batch: AtomicU64,
    revoked: AtomicU64,
    last_error: Mutex<Option<Error>>,
}

/// Receives messages from one channel. Cheap to clone; clones share the mapping and the
/// counters, and each clone can be moved to its own thread (the ring is multi-consumer).
///
/// # Crash recovery
///
/// Each consumer (and each clone) registers a record in the segment's peer table and writes
/// there, around every claim, the positions it is about to take (PROTOCOL.md §11). If this
/// process dies mid-receive, a producer that finds the ring stuck on the slot frees it (the
/// message is lost). Because a record holds one receive at a time, a `Consumer` is `Send` but
/// not `Sync`: share clones between threads, not references. When the peer table is full the
/// consumer still works, without that protection ([`Self::is_registered`]).
///
/// A receive that finds nothing because a producer died between claiming a position and
/// publishing it repairs the channel once it has been stuck there for
/// [`STUCK_GRACE`](crate::STUCK_GRACE): the position becomes a LOST tombstone, skipped and
/// counted in [`ReceiveStats::lost`]. Blocking receives re-check that often while stuck.
/// Non-blocking receives start watching for a stuck position after 64 empty results in a row
/// (so that a consumer spinning on an empty ring does not keep reading the producers' cursor).
///
/// The examples of the methods below use a channel of 4 slots in a file segment of the
/// temporary directory (feature `file`), opened as in [`ChannelBuilder`](crate::ChannelBuilder)'s
/// examples: `producer` and `consumer` are a [`Producer`](crate::Producer) and a [`Consumer`]
/// of that channel.
pub struct Consumer {
    /// The async wake-up ring. Declared first, so dropped first: its pending futex wait is
    /// cancelled and reaped before `cell` can release the mapping that holds the word.
    #[cfg(feature = "tokio")]
    wakeup: crate::async_wait::Wakeup,
    /// The wait armed for the owner's event loop ([`Self::arm_wait`]); before `cell`, like
    /// `wakeup`. `Drop` undoes its registration.
    #[cfg(feature = "wait-fd")]
    event_wait: crate::futex_ring::EventWait,
    cell: HandleCell,
    counters: Arc<Counters>,
    stuck: StuckWatch,
    misses: MissStreak,
}

impl Clone for Consumer {
    /// Another consumer on the same channel, with its own peer record and the same counters.
    fn clone(&self) -> Self {
        Self {
            #[cfg(feature = "tokio")]
            wakeup: crate::async_wait::Wakeup::default(),
            #[cfg(feature = "wait-fd")]
            event_wait: crate::futex_ring::EventWait::default(),
            cell: HandleCell::register(Arc::clone(self.cell.open()), PeerRole::Consumer),
            counters: Arc::clone(&self.counters),
            stuck: StuckWatch::new(self.cell.open().unblock),
            misses: MissStreak::default(),
        }
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("segment", &self.cell.open().label)
            .field("channel", &self.channel_id())
            .field("registered", &self.is_registered())
            .finish()
    }
}

/// Spins of a receive that found a claim in flight at the head, before it yields.
const IN_FLIGHT_SPINS: u32 = 256;

/// How long one receive has waited for a claim in flight at the head.
#[derive(Default)]
struct InFlight {
    rounds: u32,
    /// When the spinning ended.
    since: Option<Instant>,
}

/// What one receive attempt gave.
enum Step<T> {
    Got(T),
    Skipped,
}

impl Consumer {
    pub(crate) fn new(open: OpenChannel) -> Self {
        let unblock = open.unblock;
        Self {
            #[cfg(feature = "tokio")]
            wakeup: crate::async_wait::Wakeup::default(),
            #[cfg(feature = "wait-fd")]
            event_wait: crate::futex_ring::EventWait::default(),
            cell: HandleCell::register(Arc::new(open), PeerRole::Consumer),
            counters: Arc::default(),
            stuck: StuckWatch::new(unblock),
            misses: MissStreak::default(),
        }
    }

    /// The handle's registration and mapping.
    pub(crate) fn cell(&self) -> &HandleCell {
        &self.cell
    }

    pub(crate) fn channel(&self) -> &FutexChannel<'_> {
        self.cell.channel()
    }

    /// True when this consumer holds a peer record, so that a receive it leaves unfinished by
    /// dying is repaired by its peers. False when the segment's peer table is full or could
    /// not be carved (no room left).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-is-registered", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// assert!(consumer.is_registered());
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn is_registered(&self) -> bool {
        self.cell.is_registered()
    }

    /// Runs one repair pass over this channel now (PROTOCOL.md §11.6): positions claimed by
    /// producers or consumers that have died are tombstoned or freed. Receives do this by
    /// themselves when the channel stays stuck; this is for tools and tests.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-recover", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// let report = consumer.recover()?;
    /// assert_eq!((report.tombstoned, report.freed), (0, 0)); // nobody died holding a position
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recover(&self) -> Result<RepairReport> {
        self.cell.recover()
    }

    /// After a receive found nothing: repairs the channel if a dead producer has held the
    /// position at `head` for the grace period. True when something was repaired (try again).
    pub(crate) fn repair_if_stuck(&self) -> bool {
        self.cell.repair_if_stuck(&self.stuck, PeerRole::Producer)
    }

    /// One wait for a message until `deadline` (sooner while watching a stuck position);
    /// `Err(Empty)` once the deadline has passed.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> std::result::Result<(), RecvError> {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(RecvError::Empty);
        }
        // A shrunk segment ends the wait as if empty; `receive_waiting` then reports it. The
        // futex word lives in the segment, so the size is checked on both sides of the sleep.
        if self.cell.check_size().is_err() {
            return Err(RecvError::Empty);
        }
        let slice = slice_deadline(deadline, &self.stuck);
        let waiter = slice.map_or(FutexWait::new(), FutexWait::until);
        self.channel().wait_for_message(&waiter);
        if self.cell.check_size().is_err() {
            return Err(RecvError::Empty);
        }
        Ok(())
    }

    /// Sorts a core receive error: `Ok(None)` empty, `Ok(Some(Skipped))` a lost or corrupt
    /// message (counted), `Err` anything else.
    fn sort<T>(&self, error: RecvError) -> Result<Option<Step<T>>> {
        let channel = self.channel_id();
        let Some(error) = Error::from_recv(error, channel) else {
            return Ok(None);
        };
        match error.kind() {
            ErrorKind::Lost { .. } => self.counters.lost.fetch_add(1, Relaxed),
            ErrorKind::Revoked { .. } => self.counters.revoked.fetch_add(1, Relaxed),
            ErrorKind::Corrupt { .. } => self.counters.corrupt.fetch_add(1, Relaxed),
            _ => return Err(error),
        };
        if let Ok(mut last) = self.counters.last_error.lock() {
            *last = Some(error);
        }
        Ok(Some(Step::Skipped))
    }

    /// Runs `attempt` until it gives a message, finds the ring empty, or fails; lost and
    /// corrupt messages are counted and skipped.
    #[inline(always)]
    pub(crate) fn skipping<T>(
        &self,
        mut attempt: impl FnMut() -> std::result::Result<T, RecvError>,
    ) -> Result<Option<T>> {
        match attempt() {
            Ok(value) => Ok(Some(self.got(value))),
            Err(error) => self.skipping_after(error, attempt),
        }
    }

    /// A message delivered: the miss streak ends and it is counted.
    #[inline(always)]
    fn got<T>(&self, value: T) -> T {
        self.misses.hit();
        self.counters.received.fetch_add(1, Relaxed);
        value
    }

    /// [`Self::skipping`] after the first attempt failed with `error`. Out of line: a receive
    /// that finds an ordinary message never comes here.
    #[cold]
    #[inline(never)]
    fn skipping_after<T>(
        &self,
        error: RecvError,
        mut attempt: impl FnMut() -> std::result::Result<T, RecvError>,
    ) -> Result<Option<T>> {
        let mut in_flight = InFlight::default();
        let mut skipped = 0;
        let mut outcome = Err(error);
        loop {
            let step = match outcome {
                Ok(value) => Step::Got(value),
                // Not empty: a completed send waits behind a claim still in flight.
                Err(RecvError::Pending { .. }) => {
                    if self.wait_in_flight(&mut in_flight) {
                        outcome = attempt();
                        continue;
                    }
                    return Ok(None);
                }
                Err(e) => match self.sort(e)? {
                    // Empty: unless a dead producer holds the head and was just repaired
                    // (looked for after a streak of empty results, see `MissStreak`).
                    None if self.misses.miss() && self.repair_if_stuck() => Step::Skipped,
                    None => return Ok(None),
                    Some(step) => step,
                },
            };
            if let Step::Got(value) = step {
                return Ok(Some(self.got(value)));
            }
            skipped += 1;
            if skipped >= SKIP_LIMIT {
                return Ok(None);
            }
            outcome = attempt();
        }
    }

    /// One step of waiting for the claim in flight at `head` (PROTOCOL.md §6.2): spin first (a
    /// live producer publishes within nanoseconds), then yield the processor (a producer
    /// preempted mid-send gets it back), looking for a stuck position under the stuck-peer
    /// rules as it goes (a dead claimer is repaired after the grace period, a stopped one after
    /// the unblock timeout). A non-blocking call never sleeps on the futex here, so a channel in
    /// steady flow makes no system call but `sched_yield`. False once the wait has lasted past
    /// twice the unblock timeout: the caller then reports empty.
    fn wait_in_flight(&self, state: &mut InFlight) -> bool {
        state.rounds += 1;
        if state.rounds <= IN_FLIGHT_SPINS {
            std::hint::spin_loop();
            return true;
        }
        let now = Instant::now();
        let since = *state.since.get_or_insert(now);
        let bound = self
            .cell
            .open()
            .unblock
            .min(crate::recovery::UNBLOCK_TIMEOUT);
        if now >= since.checked_add(bound * 2).unwrap_or(since) {
            return false;
        }
        if !self.repair_if_stuck() {
            std::thread::yield_now();
        }
        true
    }

    /// Receives one message without blocking; `None` when the channel is empty.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-receive", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// assert_eq!(consumer.receive()?, None);
    /// producer.send("hello")?;
    /// assert_eq!(consumer.receive()?.as_deref(), Some(&b"hello"[..]));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn receive(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.receive_with_meta()?.map(|m| m.payload))
    }

    /// Receives one message and its metadata without blocking.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-receive-with-meta", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// let id = producer.send_with("hello", 7, 0)?;
    /// let message = consumer.receive_with_meta()?.unwrap();
    /// assert_eq!((message.meta.message_id, message.meta.message_type), (id, 7));
    /// assert_eq!(message.meta.sender_pid, std::process::id());
    /// assert_eq!(message.payload, b"hello");
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn receive_with_meta(&self) -> Result<Option<Message>> {
        let channel = self.channel();
        self.skipping(|| try_recv_owned(channel))
    }

    /// Receives one message into `buf` without blocking; returns its metadata and length. A
    /// message longer than `buf` stays in the ring and the call fails with `BufferTooSmall`
    /// (a buffer of [`Self::max_message_size`] bytes always suffices: 960 unless the channel
    /// was made for larger messages).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-receive-into", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// let mut buf = [0u8; dmxp::MSG_INLINE];
    /// producer.send("into a buffer")?;
    /// let (meta, len) = consumer.receive_into(&mut buf)?.unwrap();
    /// assert_eq!((meta.message_id, &buf[..len]), (0, &b"into a buffer"[..]));
    ///
    /// // A buffer too small leaves the message in the ring.
    /// producer.send("longer than four")?;
    /// let small = consumer.receive_into(&mut [0; 4]).unwrap_err();
    /// assert!(matches!(small.kind(), dmxp::ErrorKind::BufferTooSmall { needed: 16, .. }));
    /// assert!(consumer.receive_into(&mut buf)?.is_some());
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn receive_into(&self, buf: &mut [u8]) -> Result<Option<(MessageMeta, usize)>> {
        let channel = self.channel();
        Ok(self
            .skipping(|| channel.try_recv(buf))?
            .map(|r| (r.meta, r.len)))
    }

    /// Receives one message, sleeping (futex) while the channel is empty, for at most
    /// `timeout`; `None` if nothing arrived in time.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-receive-timeout", std::process::id()));
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
    /// assert_eq!(consumer.receive_timeout(Duration::from_millis(10))?, None);
    /// producer.send("now")?;
    /// let message = consumer.receive_timeout(Duration::from_millis(10))?.unwrap();
    /// assert_eq!(message.payload, b"now");
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn receive_timeout(&self, timeout: Duration) -> Result<Option<Message>> {
        self.receive_waiting(FutexWait::with_timeout(timeout).deadline())
    }

    /// Receives one message, sleeping (futex) while the channel is empty, without a deadline.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-receive-blocking", std::process::id()));
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
    /// let sender = std::thread::spawn(move || {
    ///     std::thread::sleep(Duration::from_millis(10));
    ///     producer.send("worth the wait")
    /// });
    /// // Sleeps until the message is there.
    /// let message = consumer.receive_blocking()?;
    /// assert_eq!(message.payload, b"worth the wait");
    /// sender.join().unwrap()?;
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn receive_blocking(&self) -> Result<Message> {
        match self.receive_waiting(None)? {
            Some(message) => Ok(message),
            // Only reachable if a peer keeps writing bad messages past SKIP_LIMIT.
            None => Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "channel {}: gave up after {SKIP_LIMIT} lost or corrupt messages in a row",
                    self.channel_id()
                ),
            )),
        }
    }

    /// Receives, waiting until `deadline` (`None`: no deadline); "empty" ends the loop only
    /// once out of time.
    fn receive_waiting(&self, deadline: Option<Instant>) -> Result<Option<Message>> {
        let channel = self.channel();
        let received = self.skipping(|| loop {
            match try_recv_owned(channel) {
                // A claim in flight at the head is waited for like an empty ring, until the
                // caller's deadline.
                Err(RecvError::Empty | RecvError::Pending { .. }) if self.repair_if_stuck() => {}
                Err(RecvError::Empty | RecvError::Pending { .. }) => self.wait(deadline)?,
                other => return other,
            }
        })?;
        if received.is_none() {
            // Out of time, or the wait saw the segment shrink: say which.
            self.cell.check_size()?;
        }
        Ok(received)
    }

    /// Receives up to `max` messages without blocking, their slots claimed with one atomic
    /// operation. Empty when the channel is.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-receive-batch", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// producer.send_batch(&["a", "b", "c"])?;
    /// let messages = consumer.receive_batch(2)?;
    /// assert_eq!((messages[0].payload.as_slice(), messages[1].payload.as_slice()), (&b"a"[..], &b"b"[..]));
    /// assert_eq!(consumer.receive_batch(2)?.len(), 1);
    /// assert!(consumer.receive_batch(2)?.is_empty());
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn receive_batch(&self, max: usize) -> Result<Vec<Message>> {
        let mut messages = Vec::new();
        self.receive_batch_with(max, |meta, payload| {
            messages.push(Message {
                meta: *meta,
                payload: payload.to_vec(),
            })
        })?;
        Ok(messages)
    }

    /// Like [`Self::receive_batch`] without allocating: calls `deliver` for each message;
    /// returns how many were delivered.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-receive-batch-with", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// producer.send_batch(&["a", "bb", "ccc"])?;
    /// let mut bytes = 0;
    /// let delivered = consumer.receive_batch_with(8, |_meta, payload| bytes += payload.len())?;
    /// assert_eq!((delivered, bytes), (3, 6));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn receive_batch_with<F>(&self, max: usize, deliver: F) -> Result<usize>
    where
        F: FnMut(&MessageMeta, &[u8]),
    {
        let mut deliver = deliver;
        let mut result = self.channel().try_recv_batch(max, &mut deliver);
        let mut in_flight = InFlight::default();
        // Not empty while a completed send waits behind a claim in flight (§6.2).
        while matches!(result, Err(RecvError::Pending { .. }))
            && self.wait_in_flight(&mut in_flight)
        {
            result = self.channel().try_recv_batch(max, &mut deliver);
        }
        if result == Err(RecvError::Empty) && self.misses.miss() && self.repair_if_stuck() {
            result = self.channel().try_recv_batch(max, &mut deliver);
        }
        match result {
            Ok(batch) => {
                self.misses.hit();
                self.counters
                    .received
                    .fetch_add(batch.delivered as u64, Relaxed);
                self.counters
                    .dropped_in_batch
                    .fetch_add(batch.dropped as u64, Relaxed);
                self.counters.lost.fetch_add(batch.lost as u64, Relaxed);
                self.counters
                    .revoked
                    .fetch_add(batch.revoked as u64, Relaxed);
                Ok(batch.delivered)
            }
            Err(RecvError::Empty | RecvError::Pending { .. }) => Ok(0),
            // A message longer than one slot at the head: batches carry single slots, so it
            // is delivered alone (PROTOCOL.md §12.4).
            // A blob at the head is delivered alone too, copied (PROTOCOL.md §13.5).
            Err(RecvError::BufferTooSmall { .. } | RecvError::IsBlob { .. }) => {
                Ok(match self.receive_with_meta()? {
                    Some(message) => {
                        deliver(&message.meta, &message.payload);
                        1
                    }
                    None => 0,
                })
            }
            Err(e) => Err(Error::from_recv(e, self.channel_id())
                .unwrap_or_else(|| Error::new(ErrorKind::Busy, "receive failed"))),
        }
    }

    /// Receives one message in place (zero-copy) without blocking. The slot is freed when the
    /// guard drops: hold it briefly, producers cannot reuse the slot meanwhile.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-receive-in-place", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// producer.send("read where it lies")?;
    /// let message = consumer.receive_in_place()?.unwrap();
    /// assert_eq!(message.meta().payload_len, 18);
    /// assert_eq!(message.to_vec(), b"read where it lies");
    /// drop(message); // frees the slot
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn receive_in_place(&self) -> Result<Option<InPlace<'_>>> {
        let channel = self.channel();
        Ok(self
            .skipping(|| channel.try_recv_in_place())?
            .map(|guard| InPlace { guard }))
    }

    /// The counters of this consumer and its clones.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-stats", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// producer.send_batch(&["a", "b"])?;
    /// consumer.receive()?;
    /// consumer.clone().receive()?; // clones share the counters
    /// assert_eq!(consumer.stats().received, 2);
    /// assert_eq!(consumer.stats().lost, 0);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn stats(&self) -> ReceiveStats {
        ReceiveStats {
            received: self.counters.received.load(Relaxed),
            lost: self.counters.lost.load(Relaxed),
            corrupt: self.counters.corrupt.load(Relaxed),
            dropped_in_batch: self.counters.dropped_in_batch.load(Relaxed),
            revoked: self.counters.revoked.load(Relaxed),
        }
    }

    /// The most recent lost or corrupt message error since the last call, if any.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-take-error", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// use dmxp::core::layout::AtomicSlot;
    /// use std::sync::atomic::Ordering;
    ///
    /// producer.send("garbled")?;
    /// // A buggy peer writes an impossible length into the message's slot...
    /// let allocator = builder.attach_allocator()?;
    /// let band = allocator.channels()[0].band_offset as usize;
    /// let slot = allocator.memory().region().view::<AtomicSlot>(band).unwrap();
    /// slot.meta.payload_len.store(961, Ordering::Relaxed);
    /// // ...so the consumer drops the message, counts it, and keeps the error for later.
    /// assert_eq!(consumer.receive()?, None);
    /// assert_eq!(consumer.stats().corrupt, 1);
    /// let error = consumer.take_error().unwrap();
    /// assert!(matches!(error.kind(), dmxp::ErrorKind::Corrupt { field: "payload_len", .. }));
    /// assert!(consumer.take_error().is_none());
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn take_error(&self) -> Option<Error> {
        self.counters
            .last_error
            .lock()
            .ok()
            .and_then(|mut last| last.take())
    }

    /// The channel id.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-channel-id", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// assert_eq!(consumer.channel_id(), 0);
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
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-capacity", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// assert_eq!(consumer.capacity(), 4);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.channel().capacity()
    }

    /// The largest message the channel takes, in bytes: 960 (one slot) unless it was made
    /// for larger ones ([`crate::ChannelBuilder::with_max_message_size`]). A
    /// [`Self::receive_into`] buffer this long always suffices.
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
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-waiters", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// assert_eq!(consumer.waiters(), (0, 0)); // nobody waits
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
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-info", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// producer.send_batch(&["a", "b"])?;
    /// consumer.receive()?;
    /// let info = consumer.info();
    /// assert_eq!((info.head, info.tail, info.depth), (1, 2, 1));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn info(&self) -> ChannelInfo {
        self.channel().info()
    }

    /// The segment, as named in error messages.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-segment", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// assert_eq!(consumer.segment(), format!("file segment {}", path.display()));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn segment(&self) -> &str {
        &self.cell.open().label
    }
}

/// A message still in its slot; the slot is freed on drop.
///
/// Producers cannot reuse the slot while it is held: drop it soon (peers revoke a position
/// held past the unblock timeout). Its `Debug` shows the metadata, never the payload.
#[must_use = "dropping it frees the slot at once, unread"]
pub struct InPlace<'c> {
    guard: RecvGuard<'c, 'c, FutexWait>,
}

impl fmt::Debug for InPlace<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InPlace")
            .field("meta", self.meta())
            .finish_non_exhaustive()
    }
}

impl InPlace<'_> {
    /// The metadata (`payload_len` validated).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-in-place-meta", std::process::id()));
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
    /// let message = consumer.receive_in_place()?.unwrap();
    /// assert_eq!((message.meta().message_id, message.meta().payload_len), (id, 5));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    #[inline]
    pub fn meta(&self) -> &MessageMeta {
        self.guard.meta()
    }

    /// The payload where it lies: copy it out or read words (never a `&[u8]` of shared
    /// memory, see the core's `Payload`).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-in-place-payload", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// producer.send("word")?;
    /// let message = consumer.receive_in_place()?.unwrap();
    /// let payload = message.payload();
    /// let mut out = [0u8; 4];
    /// assert_eq!(payload.copy_to(&mut out), 4);
    /// assert_eq!(&out, b"word");
    /// assert_eq!(payload.get(0), Some(b'w'));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    #[inline]
    pub fn payload(&self) -> Payload<'_> {
        self.guard.payload()
    }

    /// The message where it lies, slot by slot: one [`Payload`] for a message of up to 960
    /// bytes, `ceil(len / 960)` for a longer one, read with the same accessors as
    /// [`Self::payload`] (which holds only the first part of a long message).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-in-place-parts", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(8)
    /// #     .with_max_message_size(4_096);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// producer.send(vec![1u8; 2_000])?;
    /// let message = consumer.receive_in_place()?.unwrap();
    /// let lengths: Vec<usize> = message.parts().map(|part| part.len()).collect();
    /// assert_eq!(lengths, [960, 960, 80]);
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn parts(&self) -> dmxp_nostd::RunParts<'_> {
        self.guard.parts()
    }

    /// Copies the payload out.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-in-place-to-vec", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// producer.send("copied")?;
    /// let message = consumer.receive_in_place()?.unwrap();
    /// assert_eq!(message.to_vec(), b"copied");
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0; self.guard.len()];
        self.guard.copy_to(&mut out);
        out
    }
}

/// One receive into an owned buffer: a slot's worth on the stack first, and a buffer of the
/// channel's limit only for a message longer than one slot (which a channel without runs never
/// holds).
fn try_recv_owned(channel: &FutexChannel<'_>) -> std::result::Result<Message, RecvError> {
    let mut buf = [0u8; MSG_INLINE];
    match channel.try_recv(&mut buf) {
        Ok(r) => Ok(Message {
            meta: r.meta,
            payload: buf[..r.len].to_vec(),
        }),
        // A run (up to the channel's limit) or a blob (up to the pool's largest block).
        Err(RecvError::BufferTooSmall { needed, .. }) => {
            let mut payload = vec![0u8; needed.max(channel.max_message_size())];
            let r = channel.try_recv(&mut payload)?;
            payload.truncate(r.len);
            Ok(Message {
                meta: r.meta,
                payload,
            })
        }
        Err(e) => Err(e),
    }
}

/// A waiting iterator over a consumer's messages ([`Consumer::iter`]): each `next` sleeps
/// (futex) until a message arrives, so it never ends. Lost and corrupt messages are skipped
/// and counted as by [`Consumer::receive_blocking`]; other errors are yielded.
#[derive(Debug)]
pub struct Iter<'c> {
    consumer: &'c Consumer,
}

impl Iterator for Iter<'_> {
    type Item = Result<Message>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.consumer.receive_blocking())
    }
}

/// A draining iterator over the messages a consumer finds without waiting
/// ([`Consumer::try_iter`]): it ends at the first empty look.
#[derive(Debug)]
pub struct TryIter<'c> {
    consumer: &'c Consumer,
}

impl Iterator for TryIter<'_> {
    type Item = Result<Message>;

    fn next(&mut self) -> Option<Self::Item> {
        self.consumer.receive_with_meta().transpose()
    }
}

impl Consumer {
    /// Iterates over messages as they arrive, sleeping (futex) while the channel is empty:
    /// each item is [`Self::receive_blocking`]'s result, and the iterator never ends (stop
    /// with `take`, `break` or an error). Like crossbeam's `Receiver::iter`.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-iter", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// let sender = std::thread::spawn(move || -> dmxp::Result<()> {
    ///     for word in ["one", "two", "three"] {
    ///         producer.send_blocking(word)?;
    ///     }
    ///     Ok(())
    /// });
    /// let words: Vec<Vec<u8>> = consumer
    ///     .iter()
    ///     .take(3)
    ///     .map(|message| message.map(|m| m.payload))
    ///     .collect::<dmxp::Result<_>>()?;
    /// assert_eq!(words, [&b"one"[..], b"two", b"three"]);
    /// sender.join().unwrap()?;
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn iter(&self) -> Iter<'_> {
        Iter { consumer: self }
    }

    /// Iterates over the messages that are there now, without waiting: each item is
    /// [`Self::receive_with_meta`]'s, and the iterator ends when the channel is empty. Like
    /// crossbeam's `Receiver::try_iter`.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-try-iter", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// producer.send_batch(&["a", "b"])?;
    /// let drained = consumer.try_iter().collect::<dmxp::Result<Vec<_>>>()?;
    /// assert_eq!(drained.len(), 2);
    /// assert_eq!(consumer.try_iter().count(), 0); // empty: ends at once
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_iter(&self) -> TryIter<'_> {
        TryIter { consumer: self }
    }
}

/// The doc examples of the async methods: the usual file segment, and a current-thread
/// runtime with I/O and timers.
#[cfg(feature = "wait-fd")]
#[cfg_attr(docsrs, doc(cfg(feature = "wait-fd")))]
impl Consumer {
    /// Arms a wait for a message that an event loop of any kind can poll (epoll, mio,
    /// async-io, Python's `loop.add_reader`...), without a thread: the `io_uring` futex wait of
    /// PROTOCOL.md §7.4 on this channel's `not_empty` word, whose fd turns readable when a
    /// producer publishes. Call it after a receive found the channel empty:
    ///
    /// - [`ArmedWait::Ready`]: a message may be there already; receive again.
    /// - [`ArmedWait::Readable`]: wait until its fd is readable or its timeout passes, then
    ///   call [`Self::disarm_wait`] and receive again.
    ///
    /// While armed, the consumer is counted as a waiter (producers then wake the word after
    /// each publish); [`Self::disarm_wait`], or dropping the consumer, undoes it. Arming again
    /// while the last wait is still queued reuses it. Like every wait, it repairs a channel
    /// stuck on a dead peer first (PROTOCOL.md §11). Fails with an [`ErrorKind::Io`] of
    /// `Unsupported` where the kernel lacks `IORING_OP_FUTEX_WAIT` (Linux 6.7): poll then.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-arm-wait", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let mut consumer = builder.build_consumer()?;
    /// use dmxp::ArmedWait;
    /// use rustix::event::{poll, PollFd, PollFlags, Timespec};
    /// use std::os::fd::BorrowedFd;
    ///
    /// let sender = std::thread::spawn(move || producer.send("polled"));
    /// let payload = loop {
    ///     if let Some(payload) = consumer.receive()? {
    ///         break payload;
    ///     }
    ///     match consumer.arm_wait() {
    ///         Ok(ArmedWait::Ready) => continue,
    ///         Ok(ArmedWait::Readable { fd, timeout }) => {
    ///             // SAFETY: the consumer keeps the fd open while it lives.
    ///             let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    ///             let timeout = Timespec::try_from(timeout).unwrap();
    ///             poll(&mut [PollFd::new(&fd, PollFlags::IN)], Some(&timeout))?;
    ///             consumer.disarm_wait();
    ///         }
    ///         // No io_uring futex waits on this kernel: a polling loop instead.
    ///         Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
    ///     }
    /// };
    /// assert_eq!(payload, b"polled");
    /// assert_eq!(consumer.waiters(), (0, 0));
    /// sender.join().unwrap()?;
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn arm_wait(&mut self) -> Result<ArmedWait> {
        self.event_wait
            .arm_handle(&self.cell, &self.stuck, PeerRole::Producer, |channel| {
                channel.register_for_message()
            })
    }

    /// Ends the wait [`Self::arm_wait`] armed: reaps its completion and stops counting this
    /// consumer as a waiter. Harmless when nothing is armed. (A futex wait still queued stays
    /// parked for the next [`Self::arm_wait`].)
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-disarm-wait", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let _producer = builder.build_producer()?;
    /// # let mut consumer = builder.build_consumer()?;
    /// if let Ok(dmxp::ArmedWait::Readable { .. }) = consumer.arm_wait() {
    ///     assert_eq!(consumer.waiters(), (1, 0)); // counted while armed
    /// }
    /// consumer.disarm_wait();
    /// assert_eq!(consumer.waiters(), (0, 0));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn disarm_wait(&mut self) {
        self.event_wait.disarm(self.cell.channel());
    }
}

#[cfg(feature = "wait-fd")]
impl Drop for Consumer {
    fn drop(&mut self) {
        self.event_wait.disarm(self.cell.channel());
    }
}

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
impl Consumer {
    /// Receives one message, waiting without a thread while the channel is empty: the wait is
    /// an `io_uring` futex wait on the channel's `not_empty` word, whose ring fd the runtime
    /// polls (PROTOCOL.md §7.4), or a poll every millisecond where `io_uring` is unavailable
    /// ([`Self::async_wakeup`]). Lost and corrupt messages are skipped and counted as by
    /// [`Self::receive_blocking`].
    ///
    /// Needs a tokio runtime with I/O and time enabled (`enable_all`). It takes `&mut self`
    /// so that the future is `Send` (a `Consumer` is not `Sync`).
    ///
    /// **Cancel-safe**: dropping the future before it completes consumes nothing (a message
    /// is taken only in the step that returns it) and leaves no waiter registered, so it can
    /// sit in a `select!` or under a timeout.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-receive-async", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let mut consumer = builder.build_consumer()?;
    /// use std::time::Duration;
    ///
    /// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// let sender = std::thread::spawn(move || {
    ///     std::thread::sleep(Duration::from_millis(10));
    ///     producer.send("worth the wait")
    /// });
    /// let payload = runtime.block_on(consumer.receive_async())?;
    /// assert_eq!(payload, b"worth the wait");
    /// sender.join().unwrap()?;
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn receive_async(&mut self) -> Result<Vec<u8>> {
        Ok(self.receive_with_meta_async().await?.payload)
    }

    /// [`Self::receive_async`] with the message's metadata. Cancel-safe, like it.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-receive-with-meta-async", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let mut consumer = builder.build_consumer()?;
    /// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// let id = producer.send_with("typed", 7, 0)?;
    /// let message = runtime.block_on(consumer.receive_with_meta_async())?;
    /// assert_eq!((message.meta.message_id, message.meta.message_type), (id, 7));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn receive_with_meta_async(&mut self) -> Result<Message> {
        loop {
            if let Some(message) = self.receive_async_until(None).await? {
                return Ok(message);
            }
        }
    }

    /// [`Self::receive_async`] for at most `timeout`: `None` if nothing arrived in time.
    /// Cancel-safe, like it.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-receive-async-timeout", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let mut consumer = builder.build_consumer()?;
    /// use std::time::Duration;
    ///
    /// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// runtime.block_on(async {
    ///     assert_eq!(consumer.receive_async_timeout(Duration::from_millis(10)).await?, None);
    ///     producer.send("now")?;
    ///     let payload = consumer.receive_async_timeout(Duration::from_millis(10)).await?;
    ///     assert_eq!(payload.as_deref(), Some(&b"now"[..]));
    ///     Ok::<_, dmxp::Error>(())
    /// })?;
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn receive_async_timeout(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let deadline = FutexWait::with_timeout(timeout).deadline();
        Ok(self
            .receive_async_until(deadline)
            .await?
            .map(|message| message.payload))
    }

    /// Receives until a message, or `None` once `deadline` has passed (or after a long run of
    /// lost or corrupt messages, which ends one call of `skipping`).
    async fn receive_async_until(&mut self, deadline: Option<Instant>) -> Result<Option<Message>> {
        loop {
            let received = {
                let channel = self.cell.channel();
                // A claim in flight at the head is waited for like an empty ring: its
                // publication wakes `not_empty` too.
                self.skipping(|| match try_recv_owned(channel) {
                    Err(RecvError::Pending { .. }) => Err(RecvError::Empty),
                    other => other,
                })?
            };
            if let Some(message) = received {
                self.wakeup.made_progress();
                return Ok(Some(message));
            }
            if self.repair_if_stuck() {
                continue;
            }
            // The wait word lives in the segment: a shrunk one is reported, not touched.
            self.cell.check_size()?;
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
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
            let registration = self.cell.channel().register_for_message();
            if registration.is_ready() {
                continue;
            }
            self.wakeup
                .sleep_on(registration.word(), registration.observed(), Some(until))
                .await;
            drop(registration);
        }
    }

    /// Turns the consumer into a [`futures_core::Stream`] of its messages, received with
    /// [`Self::receive_with_meta_async`]; it never ends. Dropping the stream (or the task
    /// polling it) while it waits consumes nothing and leaves no waiter registered.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-into-stream", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// use futures_core::Stream;
    /// use std::pin::Pin;
    ///
    /// /// The next item of a stream (what `StreamExt::next` does).
    /// async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    ///     std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
    /// }
    ///
    /// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// let mut messages = consumer.into_stream();
    /// let sender = std::thread::spawn(move || producer.send_blocking("streamed"));
    /// let message = runtime.block_on(next(&mut messages)).unwrap()?;
    /// assert_eq!(message.payload, b"streamed");
    /// sender.join().unwrap()?;
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_stream(self) -> crate::async_wait::MessageStream {
        crate::async_wait::MessageStream::new(self)
    }

    /// Makes this consumer's async waits poll (a look every millisecond, after a few yields)
    /// instead of using `io_uring` (`true`), or go back to `io_uring` where available
    /// (`false`). Setting `DMXP_ASYNC_POLL=1` in the environment forces polling for every
    /// handle of the process. For tests and for platforms that filter `io_uring`.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-use-async-polling", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let mut consumer = builder.build_consumer()?;
    /// consumer.use_async_polling(true);
    /// assert_eq!(consumer.async_wakeup(), Some(dmxp::AsyncWakeup::Polling));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn use_async_polling(&mut self, yes: bool) {
        self.wakeup.set_force_polling(yes);
    }

    /// How this consumer's async waits are woken: `None` until its first async wait (the
    /// ring is set up then, inside the runtime), unless polling is forced.
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-consumer-async-wakeup", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new()
    /// #     .with_file(&path)
    /// #     .with_segment_size(2 << 20)
    /// #     .with_capacity(4);
    /// # let producer = builder.build_producer()?;
    /// # let mut consumer = builder.build_consumer()?;
    /// use std::time::Duration;
    ///
    /// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// runtime.block_on(consumer.receive_async_timeout(Duration::from_millis(1)))?;
    /// // `IoUring` on Linux 6.7 and later where io_uring is allowed, `Polling` elsewhere.
    /// assert!(consumer.async_wakeup().is_some());
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn async_wakeup(&self) -> Option<crate::async_wait::AsyncWakeup> {
        self.wakeup.mode()
    }
}
