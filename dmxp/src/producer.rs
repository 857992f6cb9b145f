//! The sending side of a channel.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use dmxp_nostd::layout::runtime;
use dmxp_nostd::{ChannelInfo, PayloadMut, SendLoan, SendMeta};

use crate::error::{Error, Result};
use crate::handle::OpenChannel;
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

/// Sends messages on one channel. Cheap to clone; clones share the mapping and may be used
/// from several threads at once (the ring is multi-producer).
///
/// Every message is stamped with `message_id` (its position in the channel, increasing),
/// `timestamp_ns` ([`monotonic_ns`] at send), `sender_pid` and `sender_runtime` = 1 (Rust).
#[derive(Clone)]
pub struct Producer {
    open: Arc<OpenChannel>,
    pid: u32,
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("segment", &self.open.label)
            .field("channel", &self.channel_id())
            .finish()
    }
}

impl Producer {
    pub(crate) fn new(open: OpenChannel) -> Self {
        Self {
            open: Arc::new(open),
            pid: std::process::id(),
        }
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
        self.open
            .channel()
            .try_send(payload.as_ref(), &self.meta(message_type, flags))
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
        self.open
            .channel()
            .send_blocking(
                payload.as_ref(),
                &self.meta(message_type, flags),
                &FutexWait::with_timeout(timeout),
            )
            .map_err(|e| self.error(e))
    }

    /// Sends, sleeping (futex) while the ring is full, without a deadline.
    pub fn send_blocking(&self, payload: impl AsRef<[u8]>) -> Result<u64> {
        self.open
            .channel()
            .send_blocking(payload.as_ref(), &self.meta(0, 0), &FutexWait::new())
            .map_err(|e| self.error(e))
    }

    /// Sends as many of `payloads` as there is room for, in order, claiming their slots with
    /// one atomic operation; returns how many were sent (0 only for an empty slice). Every
    /// payload is checked first: one over 960 bytes fails the call and sends nothing. A full
    /// ring is a `Full` error.
    pub fn send_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<usize> {
        self.open
            .channel()
            .try_send_batch(payloads, &self.meta(0, 0))
            .map_err(|e| self.error(e))
    }

    /// Claims a slot to write in place (zero-copy); publish it with [`Loan::commit`]. A loan
    /// dropped without commit is published as a skip marker that consumers pass over.
    pub fn loan(&self) -> Result<Loan<'_>> {
        let inner = self.open.channel().try_loan().map_err(|e| self.error(e))?;
        Ok(Loan {
            inner,
            producer: self,
        })
    }

    /// The channel id.
    pub fn channel_id(&self) -> u32 {
        self.open.channel().id()
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> u64 {
        self.open.channel().capacity()
    }

    /// Cursors and depth right now.
    pub fn info(&self) -> ChannelInfo {
        self.open.channel().info()
    }

    /// The segment, as named in error messages (`shm segment /dmxp_alloc`).
    pub fn segment(&self) -> &str {
        &self.open.label
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
