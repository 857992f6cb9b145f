//! The sending side of a channel.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmxp_nostd::layout::runtime;
use dmxp_nostd::{ChannelInfo, PayloadMut, PeerRole, RepairReport, SendError, SendLoan, SendMeta};

use crate::error::{Error, Result};
use crate::handle::{FutexChannel, HandleCell, OpenChannel};
use crate::recovery::{slice_deadline, MissStreak, StuckWatch};
use crate::wait::FutexWait;

/// CLOCK_MONOTONIC in nanoseconds: the clock DMXP stamps `timestamp_ns` with. It counts from
/// an arbitrary point (boot on Linux) that is the same for every process on the host, so a
/// receiver can compute a message's age as `monotonic_ns() - meta.timestamp_ns`. (std's
/// `Instant` reads the same clock but does not expose its value.)
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
pub struct Producer {
    cell: HandleCell,
    pid: u32,
    stuck: StuckWatch,
    misses: MissStreak,
}

impl Clone for Producer {
    /// Another producer on the same channel, with its own peer record.
    fn clone(&self) -> Self {
        Self::from_open(Arc::clone(self.cell.open()))
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
            cell: HandleCell::register(open, PeerRole::Producer),
            pid: std::process::id(),
            stuck: StuckWatch::new(unblock),
            misses: MissStreak::default(),
        }
    }

    fn channel(&self) -> &FutexChannel<'_> {
        self.cell.channel()
    }

    /// True when this producer holds a peer record, so that a send it leaves unfinished by
    /// dying is repaired by its peers. False when the segment's peer table is full or could
    /// not be carved (no room left).
    pub fn is_registered(&self) -> bool {
        self.cell.is_registered()
    }

    /// Runs one repair pass over this channel now (PROTOCOL.md §11.6): positions claimed by
    /// producers or consumers that have died are tombstoned or freed. Sends do this by
    /// themselves when the ring stays stuck; this is for tools and tests.
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
    fn sending<T>(
        &self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut() -> std::result::Result<T, SendError>,
    ) -> std::result::Result<T, SendError> {
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
            self.channel().wait_for_free_slot(&waiter);
            if self.cell.check_size().is_err() {
                return Err(SendError::TimedOut);
            }
        }
    }

    /// The error of a blocking send: [`ErrorKind::Truncated`] if the segment shrank while it
    /// waited, else the core error's.
    ///
    /// [`ErrorKind::Truncated`]: crate::ErrorKind::Truncated
    fn waiting_error(&self, e: dmxp_nostd::SendError) -> Error {
        match (e, self.cell.check_size()) {
            (SendError::TimedOut, Err(truncated)) => truncated,
            _ => self.error(e),
        }
    }

    /// One non-blocking attempt, repaired once if the ring is stuck on a dead consumer (looked
    /// for only after a streak of full rings, see [`MissStreak`]).
    fn once<T>(
        &self,
        mut attempt: impl FnMut() -> std::result::Result<T, SendError>,
    ) -> std::result::Result<T, SendError> {
        let result = match attempt() {
            Err(SendError::Full) if self.misses.miss() && self.repair_if_stuck() => attempt(),
            other => other,
        };
        if result.is_ok() {
            self.misses.hit();
        }
        result
    }

    fn meta(&self, message_type: u32, flags: u16) -> SendMeta {
        SendMeta {
            message_type,
            flags,
            timestamp_ns: monotonic_ns(),
            sender_pid: self.pid,
            sender_runtime: runtime::RUST,
        }
    }

    fn error(&self, e: dmxp_nostd::SendError) -> Error {
        Error::from_send(e, self.channel_id())
    }

    /// Sends one message without blocking; returns its `message_id`. A full ring is an error
    /// of kind [`crate::ErrorKind::Full`]; a payload over 960 bytes is `TooLarge`.
    pub fn send(&self, payload: impl AsRef<[u8]>) -> Result<u64> {
        self.send_with(payload, 0, 0)
    }

    /// Like [`Self::send`] with an application message type and application flags (only the
    /// bits in `0xFF00`; the low byte belongs to the protocol).
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
    pub fn send_timeout(&self, payload: impl AsRef<[u8]>, timeout: Duration) -> Result<u64> {
        self.send_with_timeout(payload, 0, 0, timeout)
    }

    /// [`Self::send_timeout`] with a message type and application flags.
    pub fn send_with_timeout(
        &self,
        payload: impl AsRef<[u8]>,
        message_type: u32,
        flags: u16,
        timeout: Duration,
    ) -> Result<u64> {
        let meta = self.meta(message_type, flags);
        let deadline = FutexWait::with_timeout(timeout).deadline();
        self.sending(deadline, || {
            self.channel().try_send(payload.as_ref(), &meta)
        })
        .map_err(|e| self.waiting_error(e))
    }

    /// Sends, sleeping (futex) while the ring is full, without a deadline.
    pub fn send_blocking(&self, payload: impl AsRef<[u8]>) -> Result<u64> {
        let meta = self.meta(0, 0);
        self.sending(None, || self.channel().try_send(payload.as_ref(), &meta))
            .map_err(|e| self.waiting_error(e))
    }

    /// Sends as many of `payloads` as there is room for, in order, claiming their slots with
    /// one atomic operation; returns how many were sent (0 only for an empty slice). Every
    /// payload is checked first: one over 960 bytes fails the call and sends nothing. A full
    /// ring is a `Full` error.
    pub fn send_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<usize> {
        let meta = self.meta(0, 0);
        self.once(|| self.channel().try_send_batch(payloads, &meta))
            .map_err(|e| self.error(e))
    }

    /// Claims a slot to write in place (zero-copy); publish it with [`Loan::commit`]. A loan
    /// dropped without commit is published as a skip marker that consumers pass over.
    pub fn loan(&self) -> Result<Loan<'_>> {
        let inner = self
            .once(|| self.channel().try_loan())
            .map_err(|e| self.error(e))?;
        Ok(Loan {
            inner,
            producer: self,
        })
    }

    /// The channel id.
    pub fn channel_id(&self) -> u32 {
        self.channel().id()
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> u64 {
        self.channel().capacity()
    }

    /// Cursors and depth right now.
    pub fn info(&self) -> ChannelInfo {
        self.channel().info()
    }

    /// The segment, as named in error messages (`shm segment /dmxp_alloc`).
    pub fn segment(&self) -> &str {
        &self.cell.open().label
    }
}

/// A slot claimed by [`Producer::loan`], written in place.
pub struct Loan<'p> {
    inner: SendLoan<'p, 'p, FutexWait>,
    producer: &'p Producer,
}

impl Loan<'_> {
    /// The `message_id` this message will carry.
    pub fn message_id(&self) -> u64 {
        self.inner.position()
    }

    /// The 960-byte payload area, written in place.
    pub fn payload(&mut self) -> PayloadMut<'_> {
        self.inner.payload()
    }

    /// Writes `bytes` at `offset` of the payload area; `false` (nothing written) if it would
    /// run past 960 bytes.
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) -> bool {
        self.inner.payload().write_at(offset, bytes)
    }

    /// Publishes the first `len` bytes of the payload area; returns the `message_id`.
    pub fn commit(self, len: usize) -> Result<u64> {
        self.commit_with(len, 0, 0)
    }

    /// Publishes with a message type and application flags.
    pub fn commit_with(self, len: usize, message_type: u32, flags: u16) -> Result<u64> {
        let meta = self.producer.meta(message_type, flags);
        let producer = self.producer;
        self.inner.commit(len, &meta).map_err(|e| producer.error(e))
    }
}
