//! `dmxp.Producer`.

use std::sync::Arc;
use std::time::Duration;

use dmxp::core::layout::{runtime, MSG_INLINE};
use dmxp::core::{PeerRole, SendError, SendMeta};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::blob::{self, BlobLoan};
use crate::buffers::{with_bytes, MessageBuf, Payloads};
use crate::consumer::aio;
use crate::errors;
use crate::event::{Armed, EventWait};
use crate::open::{self, OpenChannel, Target, Trust, Wait};
use crate::peer::{Handle, Lease, Peer};

/// Sends messages on one channel of a segment; creates the segment and the channel if they do
/// not exist. See the package documentation for the timeout convention.
#[pyclass(module = "dmxp._dmxp", name = "Producer", frozen)]
pub struct Producer {
    handle: Handle,
    label: String,
    channel_id: u32,
    pid: u32,
    /// Whether sends stamp `timestamp_ns` with the monotonic clock (the constructor's
    /// `timestamps`); false writes 0, "unknown".
    timestamps: bool,
    /// The async waits' state: the facade producer that arms them (`event`).
    event: EventWait<dmxp::Producer>,
}

/// The outcome of the first, non-blocking attempt of a send.
enum First {
    Sent(u64),
    Full,
    Failed(SendError),
}

impl Producer {
    /// A registration of this producer for one call (see `peer`), or ClosedError.
    fn lease(&self, py: Python<'_>, wait: &mut Wait) -> PyResult<Lease<'_>> {
        self.handle
            .lease(py, wait)?
            .ok_or_else(|| errors::closed(py, "producer"))
    }

    /// The open channel (a reference of its own, for its cursors), or ClosedError.
    fn open(&self, py: Python<'_>) -> PyResult<Arc<OpenChannel>> {
        self.handle
            .get()
            .ok_or_else(|| errors::closed(py, "producer"))
    }

    /// The registrations of this producer (blob loans take one each, `blob`).
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The channel id (for `blob`).
    pub(crate) fn id(&self) -> u32 {
        self.channel_id
    }

    pub(crate) fn meta(&self, message_type: u32, flags: u16) -> SendMeta {
        SendMeta {
            message_type,
            flags,
            // As the Rust producer's `with_timestamps(false)`: no clock read, 0 = unknown.
            timestamp_ns: if self.timestamps {
                dmxp::monotonic_ns()
            } else {
                0
            },
            sender_pid: self.pid,
            sender_runtime: runtime::PYTHON,
        }
    }

    /// One non-blocking send (repaired and tried again once if the ring is stuck on a dead
    /// consumer).
    fn send_now(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        meta: &SendMeta,
    ) -> PyResult<Result<u64, SendError>> {
        let mut lease = self.lease(py, &mut Wait::No)?;
        with_bytes(data, |payload| {
            lease.send_once(|channel| channel.try_send(payload, meta))
        })
    }

    /// One send, waiting according to `wait` while the ring is full. `Ok(None)`: full and no
    /// time left.
    fn send_waiting(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        meta: &SendMeta,
        mut wait: Wait,
    ) -> PyResult<Option<u64>> {
        let mut lease = self.lease(py, &mut wait)?;
        // The copy used while the GIL is released (the object's memory is only read with it);
        // not made when the call does not wait.
        let mut copy = None;
        let first = with_bytes(data, |payload| {
            match lease.send_once(|channel| channel.try_send(payload, meta)) {
                Ok(id) => First::Sent(id),
                // `try_send` checks the length before it claims, so a full ring means it fits.
                Err(SendError::Full) => {
                    if !matches!(wait, Wait::No) {
                        copy = Some(MessageBuf::holding(payload));
                    }
                    First::Full
                }
                Err(e) => First::Failed(e),
            }
        })?;
        let copy = match (first, copy) {
            (First::Sent(id), _) => return Ok(Some(id)),
            (First::Full, Some(copy)) => copy,
            (First::Full, None) => return Ok(None),
            (First::Failed(e), _) => return Err(errors::from_send(py, e, self.channel_id)),
        };
        self.block_on_send(py, &mut lease, copy.filled(copy.cap()), meta, wait)
    }

    /// Sends `payload` (private memory), sleeping in slices without the GIL while full and
    /// repairing the ring if a dead consumer holds it up.
    fn block_on_send(
        &self,
        py: Python<'_>,
        peer: &mut Peer,
        payload: &[u8],
        meta: &SendMeta,
        mut wait: Wait,
    ) -> PyResult<Option<u64>> {
        // Watching the ring for a moment before the first sleep (`peer::SPIN_BEFORE_SLEEP`).
        let mut spin = true;
        let slots = payload.len().div_ceil(MSG_INLINE).max(1) as u64;
        loop {
            let Some(until) = wait.slice() else {
                return Ok(None);
            };
            let sent = py.detach(|| {
                if std::mem::take(&mut spin) {
                    peer.spin_for_free_slots(slots, until);
                }
                peer.send_until(payload, meta, until)
            });
            match sent {
                Ok(id) => return Ok(Some(id)),
                Err(SendError::TimedOut) => {}
                Err(e) => return Err(errors::from_send(py, e, self.channel_id)),
            }
            py.check_signals()?;
            if !self.handle.is_open() {
                return Err(errors::closed(py, "producer"));
            }
        }
    }

    fn timed_out(&self, py: Python<'_>) -> PyErr {
        errors::from_send(py, SendError::TimedOut, self.channel_id)
    }
}

#[pymethods]
impl Producer {
    /// Opens (creating if needed) the segment and channel `channel_id`.
    ///
    /// `capacity`: ring slots if this creates the channel (a power of two >= 2; an existing
    /// channel keeps its own). `segment`: POSIX shm name. `size`: bytes of a segment this
    /// creates. `timeout`: seconds to wait for a segment or channel another process is still
    /// creating (None: forever). `mode`: permission bits of a segment this creates, and the
    /// widest accepted in an existing one; `trust_owner`: a uid (or several) whose existing segments are accepted
    /// besides this user's own (PROTOCOL.md §3.4). Anything else raises UntrustedError.
    /// `peer_records`: records of the peer table of a segment this creates, one per handle
    /// of every process using it at once (0: the default 256; else 256 to 16,384, or
    /// InvalidInputError; PROTOCOL.md §11.1). `max_message_size`: the largest message, in
    /// bytes, of a channel this creates (None or up to 960: one slot, 960 bytes; more: the
    /// channel carries messages up to that size as runs of slots, PROTOCOL.md §12, at most
    /// `capacity * 960`, else InvalidInputError). An existing channel keeps its own limit:
    /// `max_message_size` (the property) says which. `blob_pool`: about that many bytes of
    /// blob-pool blocks (PROTOCOL.md §13) in a segment this creates, split over size classes
    /// of 4 KiB to 16 MiB (as the Rust `ChannelBuilder::with_blob_pool`); `blob_classes`:
    /// the classes themselves, `[(block_size, block_count), ...]` (1 to 8, sizes multiples of
    /// 64, increasing; else InvalidInputError). With either, a channel this creates carries
    /// blobs (`loan()`); the segment (`size`) must hold the pool besides the rings. An
    /// existing segment and channel keep what they were made with. `single_slot_only`: for code that cannot
    /// take a message longer than 960 bytes; True refuses an existing channel that carries
    /// runs with RunsNotSupportedError (its `channel` says which), and a `max_message_size`
    /// above 960 with InvalidInputError, before anything is opened. `timestamps`: True (the
    /// default) stamps each message's `timestamp_ns` with CLOCK_MONOTONIC; False writes 0
    /// ("unknown", PROTOCOL.md §8) and saves the clock read of every send, as the Rust
    /// `ChannelBuilder::with_timestamps(false)` does. Receivers are unaffected.
    #[new]
    #[pyo3(signature = (channel_id, capacity = 1024, segment = "/dmxp_alloc".to_owned(), size = dmxp::DEFAULT_SEGMENT_SIZE, timeout = 5.0, *, trust_owner = None, mode = dmxp::DEFAULT_MODE as i64, peer_records = 0, max_message_size = None, single_slot_only = false, timestamps = true, blob_pool = None, blob_classes = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        channel_id: u32,
        capacity: u64,
        segment: String,
        size: usize,
        timeout: Option<f64>,
        trust_owner: Option<&Bound<'_, PyAny>>,
        mode: i64,
        peer_records: u32,
        max_message_size: Option<i64>,
        single_slot_only: bool,
        timestamps: bool,
        blob_pool: Option<u64>,
        blob_classes: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let timeout = open::limit(py, timeout, "timeout")?;
        let blob_pool = match (blob_pool, blob_classes) {
            (Some(_), Some(_)) => {
                return Err(errors::invalid(
                    py,
                    "give blob_pool or blob_classes, not both".to_owned(),
                ))
            }
            (Some(bytes), None) => Some(dmxp::BlobPoolSpec::for_bytes(bytes)),
            (None, Some(classes)) => Some(blob::spec_from_classes(py, classes)?),
            (None, None) => None,
        };
        let trust = Trust::from_args(py, trust_owner, mode)?;
        let max_message_size = match max_message_size.map(usize::try_from) {
            None => 0,
            Some(Ok(bytes)) => bytes,
            Some(Err(_)) => {
                return Err(errors::invalid(
                    py,
                    format!(
                        "max_message_size {} is not a size in bytes",
                        max_message_size.unwrap_or_default()
                    ),
                ))
            }
        };
        let opened = open::open(
            py,
            &Target {
                segment,
                channel_id,
                create: Some(capacity),
                max_message_size,
                size,
                peer_records,
                timeout,
                wait: Duration::ZERO,
                trust,
                single_slot_only,
                blob_pool,
            },
        )?;
        Ok(Self {
            handle: Handle::new(opened.channel, PeerRole::Producer),
            label: opened.label,
            channel_id,
            pid: std::process::id(),
            timestamps,
            event: EventWait::new("producer", channel_id, opened.allocator),
        })
    }

    /// Sends one message without blocking; returns its message_id. Raises FullError when the
    /// ring is full, TooLargeError when the payload is longer than `max_message_size` (960
    /// bytes unless the channel was made for longer messages, which travel as runs of slots
    /// and need that many free slots at once).
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u64> {
        let meta = self.meta(0, 0);
        self.send_now(py, data, &meta)?
            .map_err(|e| errors::from_send(py, e, self.channel_id))
    }

    /// Like send, but returns None instead of raising when the ring is full.
    fn try_send(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
        let meta = self.meta(0, 0);
        match self.send_now(py, data, &meta)? {
            Ok(id) => Ok(Some(id)),
            Err(SendError::Full) => Ok(None),
            Err(e) => Err(errors::from_send(py, e, self.channel_id)),
        }
    }

    /// Sends with an application message type and flags (only bits 0xFF00). `timeout`: 0 (the
    /// default) does not wait: a full ring raises FullError; a positive number waits up to
    /// that many seconds while the ring is full, then raises TimeoutError; None (or a negative
    /// number, or math.inf) waits without a deadline.
    #[pyo3(signature = (data, message_type = 0, flags = 0, timeout = Some(0.0)), text_signature = "($self, data, message_type=0, flags=0, timeout=0)")]
    fn send_with(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        message_type: u32,
        flags: u16,
        timeout: Option<f64>,
    ) -> PyResult<u64> {
        let wait = Wait::from_timeout(py, timeout)?;
        let meta = self.meta(message_type, flags);
        match self.send_waiting(py, data, &meta, wait)? {
            Some(id) => Ok(id),
            None if matches!(wait, Wait::No) => {
                Err(errors::from_send(py, SendError::Full, self.channel_id))
            }
            None => Err(self.timed_out(py)),
        }
    }

    /// Sends, waiting up to `timeout` seconds while the ring is full (None, negative or
    /// math.inf: forever); raises TimeoutError when time runs out. 0 does not wait: a full
    /// ring raises FullError, as send does.
    #[pyo3(signature = (data, timeout, message_type = 0, flags = 0))]
    fn send_timeout(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        message_type: u32,
        flags: u16,
    ) -> PyResult<u64> {
        let wait = Wait::from_timeout(py, timeout)?;
        let meta = self.meta(message_type, flags);
        match self.send_waiting(py, data, &meta, wait)? {
            Some(id) => Ok(id),
            None if matches!(wait, Wait::No) => {
                Err(errors::from_send(py, SendError::Full, self.channel_id))
            }
            None => Err(self.timed_out(py)),
        }
    }

    /// Sends, waiting without a deadline while the ring is full (Ctrl-C still interrupts).
    fn send_blocking(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u64> {
        let meta = self.meta(0, 0);
        self.send_waiting(py, data, &meta, Wait::Forever)?
            .ok_or_else(|| self.timed_out(py))
    }

    /// Sends as many of `payloads` (an iterable of bytes-like objects) as there is room for,
    /// in order, claiming their slots with one atomic operation; returns how many were sent
    /// (0 when the ring is full and `timeout` is 0, the default). A positive `timeout` waits up
    /// to that long for room for the first one (then raises TimeoutError); None (or negative)
    /// waits for it without a deadline. Batches carry single-slot messages: every
    /// payload is checked first, and one over 960 bytes raises TooLargeError (with `limit`
    /// 960, whatever the channel's `max_message_size`) and nothing is sent. Send longer
    /// messages one at a time.
    #[pyo3(signature = (payloads, timeout = Some(0.0)), text_signature = "($self, payloads, timeout=0)")]
    fn send_batch(
        &self,
        py: Python<'_>,
        payloads: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        let wait = Wait::from_timeout(py, timeout)?;
        let payloads = Payloads::collect(payloads)?;
        let slices = payloads.slices()?;
        let meta = self.meta(0, 0);
        match self.send_some(py, &slices, &meta, wait)? {
            Some(sent) => Ok(sent),
            None if matches!(wait, Wait::No) => Ok(0),
            None => Err(self.timed_out(py)),
        }
    }

    /// Sends every payload, in order, in batches, waiting while the ring is full: up to
    /// `timeout` seconds in all (None, the default, or negative: no limit; 0: no wait at
    /// all). Returns the number sent (all of them); raises TimeoutError (saying how many were
    /// sent) when the ring is full and time has run out, also with 0. Payloads
    /// longer than one slot (960 bytes) are sent one at a time, in their place in the order;
    /// one longer than `max_message_size` raises TooLargeError before anything is sent.
    #[pyo3(signature = (payloads, timeout = None))]
    fn send_all(
        &self,
        py: Python<'_>,
        payloads: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        // One deadline for every batch (each call below takes a copy).
        let wait = Wait::from_timeout(py, timeout)?.started();
        let payloads = Payloads::collect(payloads)?;
        let slices = payloads.slices()?;
        let limit = self.open(py)?.borrow_dependent().max_message_size();
        if let Some(long) = slices.iter().find(|payload| payload.len() > limit) {
            let too_large = SendError::TooLarge {
                len: long.len(),
                limit,
            };
            return Err(errors::from_send(py, too_large, self.channel_id));
        }
        let meta = self.meta(0, 0);
        let mut sent = 0;
        while sent < slices.len() {
            let rest = &slices[sent..];
            // Single-slot payloads go in batches; a longer one alone.
            let short = rest.iter().take_while(|p| p.len() <= MSG_INLINE).count();
            let outcome = match short {
                0 => self.send_one(py, rest[0], &meta, wait)?.map(|_| 1),
                _ => self.send_some(py, &rest[..short], &meta, wait)?,
            };
            match outcome {
                Some(count) => sent += count,
                None => {
                    return Err(errors::new_error(
                        py,
                        "TimeoutError",
                        format!(
                            "channel {}: timed out waiting for a free slot after sending {sent} \
                             of {} messages",
                            self.channel_id,
                            payloads.len()
                        ),
                        &[],
                    ))
                }
            }
        }
        Ok(sent)
    }

    /// Loans a block of the segment's blob pool (PROTOCOL.md §13) for one message of up to
    /// `nbytes` bytes, to be written in place (`loan.view`, a writable memoryview; numpy
    /// wraps it without a copy) and sent by `loan.commit()`, or used as a context manager
    /// (commits on a normal exit, abandons on an exception). A 4 MiB message costs what a
    /// small one does: the ring carries a 16-byte reference to the block. `timeout` when the
    /// pool is exhausted (every block that fits is loaned or held): 0 (the default) raises
    /// PoolExhaustedError at once (after one look for blocks that dead peers left), a
    /// positive number waits up to that many seconds for a consumer to release one (then
    /// TimeoutError), None (or negative) waits without a deadline; the GIL is released while
    /// waiting. TooLargeError (`limit`: `max_blob_size`) when no block is that large,
    /// NoBlobPoolError on a channel that does not carry blobs, PeerTableFullError for a
    /// producer without a peer record (`is_registered` False). While the loan is open it
    /// keeps one of this producer's peer registrations (its record owns the block).
    #[pyo3(signature = (nbytes, timeout = Some(0.0)), text_signature = "($self, nbytes, timeout=0)")]
    fn loan(slf: &Bound<'_, Self>, nbytes: usize, timeout: Option<f64>) -> PyResult<BlobLoan> {
        blob::loan(slf, nbytes, timeout)
    }

    /// The largest blob a loan can hold (the pool's largest block), 0 on a channel that does
    /// not carry blobs.
    #[getter]
    fn max_blob_size(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(blob::max_size(self.open(py)?.borrow_dependent()))
    }

    /// The blob pool's blocks by class: a list of dicts with block_size, block_count and the
    /// counts by state (free, loaned, queued, held, invalid); empty on a channel that does
    /// not carry blobs.
    fn blob_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        blob::stats(py, self.open(py)?.borrow_dependent())
    }

    /// Frees the blocks nobody will free (PROTOCOL.md §13.6): those of dead peers (whose
    /// records it frees), and the leaked and orphaned ones; returns how many. Loans do this
    /// by themselves when the pool is exhausted.
    fn reclaim_blobs(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(blob::reclaim(py, &*self.open(py)?))
    }

    /// Closes the producer and releases its mapping (when no other handle uses it). Further
    /// calls raise ClosedError. Idempotent.
    fn close(&self, py: Python<'_>) {
        self.handle.close();
        self.event.close(py);
    }

    /// Sends one message without blocking the thread: a coroutine for asyncio
    /// (`await producer.send_async(data)`) that waits for room through the running loop
    /// (`loop.add_reader` on an io_uring futex wait, PROTOCOL.md §7.4; polling where the kernel
    /// has none); returns the message_id. `timeout`: None (the default) waits without a
    /// deadline, 0 does not wait (FullError when full), a positive number waits up to that
    /// many seconds (then TimeoutError). `message_type` and `flags` as for send_with. A
    /// payload other than bytes is copied when the call has to wait. Cancelling it sends
    /// nothing. One async wait per producer at a time (BusyError otherwise).
    #[pyo3(signature = (data, timeout = None, message_type = 0, flags = 0))]
    fn send_async<'py>(
        slf: &Bound<'py, Self>,
        data: &Bound<'py, PyAny>,
        timeout: Option<&Bound<'py, PyAny>>,
        message_type: u32,
        flags: u16,
    ) -> PyResult<Bound<'py, PyAny>> {
        static SEND: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        aio(slf.py(), &SEND, "send")?.call1((slf, data, timeout, message_type, flags))
    }

    /// One send that never waits: the message_id, or None when the ring is full (other
    /// errors are raised). For `_aio`.
    #[pyo3(signature = (data, message_type = 0, flags = 0))]
    fn _try_send(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        message_type: u32,
        flags: u16,
    ) -> PyResult<Option<u64>> {
        let meta = self.meta(message_type, flags);
        match self.send_now(py, data, &meta)? {
            Ok(id) => Ok(Some(id)),
            Err(SendError::Full) => Ok(None),
            Err(e) => Err(errors::from_send(py, e, self.channel_id)),
        }
    }

    /// Claims this producer for one async wait (BusyError while another holds it). For `_aio`.
    fn _wait_begin(&self, py: Python<'_>) -> PyResult<()> {
        self.event.begin(py)
    }

    /// Arms one round of an async wait for room for a message of `len` bytes: None (send
    /// again), `(fd, seconds)` (wait until fd is readable or the seconds pass, then
    /// `_disarm_wait` and send again), or False (no io_uring futex waits: poll). For `_aio`.
    fn _arm_wait(&self, py: Python<'_>, len: usize) -> PyResult<Armed> {
        self.event.arm(py, len)
    }

    /// Ends the round `_arm_wait` armed. For `_aio`.
    fn _disarm_wait(&self, py: Python<'_>) {
        self.event.disarm(py);
    }

    /// Ends the async wait `_wait_begin` started. For `_aio`.
    fn _wait_end(&self, py: Python<'_>) {
        self.event.end(py);
    }

    /// Makes the async waits of this producer poll (True) or use io_uring again (False); see
    /// Consumer.use_async_polling.
    #[pyo3(signature = (yes = true))]
    fn use_async_polling(&self, py: Python<'_>, yes: bool) {
        self.event.set_force_polling(py, yes);
    }

    /// How the async waits are woken: "io_uring", "polling", or None before the first async
    /// wait that had to wait.
    #[getter]
    fn async_wakeup(&self, py: Python<'_>) -> Option<&'static str> {
        self.event.mode(py)
    }

    /// The channel's waiter counts right now: (receivers, senders) registered as waiting, by
    /// every client (the `receivers_waiting` and `senders_waiting` of info()).
    #[getter]
    fn waiters(&self, py: Python<'_>) -> PyResult<(u32, u32)> {
        Ok(self.open(py)?.borrow_dependent().waiters())
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        !self.handle.is_open()
    }

    /// True when this producer holds a record in the segment's peer table (taken at open), so
    /// that a call it leaves unfinished by dying is repaired by its peers. False when the
    /// table is full (or there is no room to carve it): the producer works, unprotected.
    #[getter]
    fn is_registered(&self) -> bool {
        self.handle.is_registered()
    }

    /// Runs one crash-recovery pass over the channel now (PROTOCOL.md §11.6): positions
    /// claimed by producers or consumers that have died are published as lost-message
    /// tombstones or freed. Sends and receives do this by themselves when the channel stays
    /// stuck for STUCK_GRACE seconds; this is for tools and tests. Returns a dict: tombstoned,
    /// freed, records_freed, records_deferred.
    fn recover<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let lease = self.lease(py, &mut Wait::No)?;
        let report = lease
            .recover()
            .map_err(|e| errors::from_core(py, e, &self.label))?;
        crate::repair_report(py, &report)
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }

    /// The channel id.
    #[getter]
    fn channel_id(&self) -> u32 {
        self.channel_id
    }

    /// True when sends stamp `timestamp_ns` with CLOCK_MONOTONIC; False when they write 0
    /// (the constructor's `timestamps`).
    #[getter]
    fn timestamps(&self) -> bool {
        self.timestamps
    }

    /// Slots in the ring.
    #[getter]
    fn capacity(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.open(py)?.borrow_dependent().capacity())
    }

    /// The largest message the channel takes, in bytes: 960 (one slot), or the
    /// `max_message_size` its creator gave (PROTOCOL.md §12).
    #[getter]
    fn max_message_size(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.open(py)?.borrow_dependent().max_message_size())
    }

    /// The segment, as named in messages (`shm segment /dmxp_alloc`).
    #[getter]
    fn segment(&self) -> &str {
        &self.label
    }

    /// Cursors and depth right now: a dict with id, capacity, band_offset, head, tail, depth,
    /// receivers_waiting and senders_waiting.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        crate::channel_info(py, self.open(py)?.borrow_dependent())
    }

    fn __repr__(&self) -> String {
        let state = if self.handle.is_open() {
            ""
        } else {
            ", closed"
        };
        format!(
            "dmxp.Producer(channel_id={}, segment={:?}{state})",
            self.channel_id, self.label
        )
    }
}

impl Producer {
    /// Sends `payload` (the bytes of an immutable object the caller holds), waiting for room
    /// according to `wait`. `Ok(None)`: full and no time left.
    fn send_one(
        &self,
        py: Python<'_>,
        payload: &[u8],
        meta: &SendMeta,
        mut wait: Wait,
    ) -> PyResult<Option<u64>> {
        let mut lease = self.lease(py, &mut wait)?;
        match lease.send_once(|channel| channel.try_send(payload, meta)) {
            Ok(id) => Ok(Some(id)),
            Err(SendError::Full) => {
                let copy = MessageBuf::holding(payload);
                self.block_on_send(py, &mut lease, copy.filled(copy.cap()), meta, wait)
            }
            Err(e) => Err(errors::from_send(py, e, self.channel_id)),
        }
    }

    /// Sends a prefix of `slices` (at least one) with one claim, waiting for room according to
    /// `wait`. `Ok(None)`: full and no time left.
    fn send_some(
        &self,
        py: Python<'_>,
        slices: &[&[u8]],
        meta: &SendMeta,
        mut wait: Wait,
    ) -> PyResult<Option<usize>> {
        if slices.is_empty() {
            return Ok(Some(0));
        }
        let mut lease = self.lease(py, &mut wait)?;
        match lease.send_once(|channel| channel.try_send_batch(slices, meta)) {
            Ok(count) => Ok(Some(count)),
            Err(SendError::Full) => {
                // Sleep until a slot frees up by sending the first payload blocking, from a
                // private copy since the GIL is released meanwhile.
                let copy = MessageBuf::holding(slices[0]);
                Ok(self
                    .block_on_send(py, &mut lease, copy.filled(copy.cap()), meta, wait)?
                    .map(|_| 1))
            }
            Err(e) => Err(errors::from_send(py, e, self.channel_id)),
        }
    }
}
