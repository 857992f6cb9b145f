//! `dmxp.Consumer` and `dmxp.Message`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmxp::core::layout::MSG_INLINE;
use dmxp::core::{PeerRole, Received, RecvError};
use dmxp::MessageMeta;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyTuple};

use crate::blob::{self, BlobMessage};
use crate::buffers::{with_writable, MessageBuf};
use crate::errors;
use crate::event::{Armed, EventWait};
use crate::open::{self, OpenChannel, Target, Trust, Wait};
use crate::peer::{Handle, Lease, Peer};

/// Bound on consecutive lost or corrupt positions passed over in one call.
pub(crate) const SKIP_LIMIT: usize = 1 << 16;

/// A received message: the payload and the metadata its sender stamped.
#[pyclass(module = "dmxp._dmxp", name = "Message", frozen, get_all)]
pub struct Message {
    /// The payload.
    payload: Py<PyBytes>,
    /// The message's position in its channel (increasing, unique per channel).
    message_id: u64,
    /// CLOCK_MONOTONIC nanoseconds at send (0 if the sender had no clock).
    timestamp_ns: u64,
    channel_id: u32,
    /// Application-defined.
    message_type: u32,
    sender_pid: u32,
    /// 0 unknown, 1 Rust, 2 C, 3 Python, 4 Go.
    sender_runtime: u16,
    /// Application flags (0xFF00), and the protocol's RUN bit (0x0004) when the message was
    /// longer than one slot (the metadata of its first slot, PROTOCOL.md §12.4).
    flags: u16,
}

impl Message {
    fn new(py: Python<'_>, meta: &MessageMeta, payload: &[u8]) -> Self {
        Self::with_payload(meta, PyBytes::new(py, payload))
    }

    fn with_payload(meta: &MessageMeta, payload: Bound<'_, PyBytes>) -> Self {
        Self {
            payload: payload.unbind(),
            message_id: meta.message_id,
            timestamp_ns: meta.timestamp_ns,
            channel_id: meta.channel_id,
            message_type: meta.message_type,
            sender_pid: meta.sender_pid,
            sender_runtime: meta.sender_runtime,
            flags: meta.flags,
        }
    }
}

#[pymethods]
impl Message {
    fn __len__(&self, py: Python<'_>) -> usize {
        self.payload.bind(py).as_bytes().len()
    }

    fn __bytes__(&self, py: Python<'_>) -> Py<PyBytes> {
        self.payload.clone_ref(py)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "dmxp.Message(message_id={}, channel_id={}, message_type={}, flags={:#06x}, \
             sender_pid={}, sender_runtime={}, timestamp_ns={}, payload={})",
            self.message_id,
            self.channel_id,
            self.message_type,
            self.flags,
            self.sender_pid,
            self.sender_runtime,
            self.timestamp_ns,
            self.payload
                .bind(py)
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_default()
        )
    }
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    lost: AtomicU64,
    revoked: AtomicU64,
    corrupt: AtomicU64,
    dropped_in_batch: AtomicU64,
}

/// Receives messages from one existing channel. See the package documentation for the
/// timeout convention and for lost or corrupt messages.
#[pyclass(module = "dmxp._dmxp", name = "Consumer", frozen)]
pub struct Consumer {
    handle: Handle,
    label: String,
    channel_id: u32,
    /// How long `__next__` waits for a message (`None`: forever).
    idle_timeout: Option<Duration>,
    counters: Counters,
    /// The async waits' state: the facade consumer that arms them (`event`).
    event: EventWait<dmxp::Consumer>,
}

/// A function of `dmxp._aio` (the asyncio loop of the async methods), imported once.
pub(crate) fn aio<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.import(py, "dmxp._aio", name)
}

/// One receive attempt in place: `build` makes the delivered value from the message's
/// metadata and a `bytes` of its payload, copied once, straight from its slot (or the slots of
/// a run) while the message is still claimed; then the slot is freed. A value built from a
/// slot that a repair freed first (`Revoked`: the bytes may be the next message's) is dropped.
/// A MemoryError making the `bytes` frees the slot: that message is lost.
fn recv_in_place<'py, T>(
    py: Python<'py>,
    peer: &Peer,
    build: impl FnOnce(&MessageMeta, Bound<'py, PyBytes>) -> PyResult<T>,
) -> PyResult<Result<T, RecvError>> {
    let guard = match peer.channel().try_recv_in_place() {
        Ok(guard) => guard,
        // A blob (PROTOCOL.md §13.5): copied out of its block, which goes back to the pool.
        Err(RecvError::IsBlob { len, .. }) => return recv_blob_copied(py, peer, len, build),
        Err(e) => return Ok(Err(e)),
    };
    let payload = PyBytes::new_with(py, guard.len(), |dst| {
        guard.copy_to(dst);
        Ok(())
    })?;
    let value = build(guard.meta(), payload)?;
    Ok(guard.release().map(|()| value))
}

/// A blob of `len` bytes at the head, received copied (its block freed at once) straight into
/// the `bytes` delivered; through private memory if the message found there is longer (another
/// consumer took that one first).
fn recv_blob_copied<'py, T>(
    py: Python<'py>,
    peer: &Peer,
    len: usize,
    build: impl FnOnce(&MessageMeta, Bound<'py, PyBytes>) -> PyResult<T>,
) -> PyResult<Result<T, RecvError>> {
    let mut got = Err(RecvError::Empty);
    let payload = PyBytes::new_with(py, len, |dst| {
        got = peer.channel().try_recv(dst);
        Ok(())
    })?;
    match got {
        Ok(received) if received.len == len => build(&received.meta, payload).map(Ok),
        Ok(received) => {
            let shorter = PyBytes::new(py, &payload.as_bytes()[..received.len]);
            build(&received.meta, shorter).map(Ok)
        }
        Err(RecvError::BufferTooSmall { .. }) => {
            let mut buf = MessageBuf::growable();
            match peer.try_recv(&mut buf) {
                Ok(received) => {
                    build(&received.meta, PyBytes::new(py, buf.filled(received.len))).map(Ok)
                }
                Err(e) => Ok(Err(e)),
            }
        }
        Err(e) => Ok(Err(e)),
    }
}

/// What a single receive attempt found.
pub(crate) enum Got<T> {
    Message(T),
    Empty,
    /// A claim in flight at the head with a message behind it: not empty (§6.2).
    Pending,
}

/// Spins of a non-blocking receive that found a claim in flight, before it sleeps.
const IN_FLIGHT_SPINS: u32 = 256;

/// How long one non-blocking receive has waited for a claim in flight at the head; it gives up
/// (reports empty) after twice the unblock timeout, by which the stuck-peer rules have
/// repaired any claimer that is not publishing.
#[derive(Default)]
pub(crate) struct InFlight {
    rounds: u32,
    /// When the spinning ended.
    since: Option<Instant>,
}

impl InFlight {
    /// One step of the wait: spin, then yield the processor (GIL released) with the
    /// stuck-peer look in between; never a futex sleep, so a channel in steady flow makes no
    /// system call but `sched_yield`. False once out of time.
    pub(crate) fn wait(&mut self, py: Python<'_>, peer: &mut Peer) -> bool {
        self.rounds += 1;
        if self.rounds <= IN_FLIGHT_SPINS {
            std::hint::spin_loop();
            return true;
        }
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        if now >= since + 2 * dmxp::UNBLOCK_TIMEOUT {
            return false;
        }
        py.detach(|| peer.wait_in_flight());
        true
    }
}

impl Consumer {
    /// The registrations of this consumer (received blobs take one each, `blob`).
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// A registration of this consumer for one call (see `peer`), or ClosedError.
    fn lease(&self, py: Python<'_>, wait: &mut Wait) -> PyResult<Lease<'_>> {
        self.handle
            .lease(py, wait)?
            .ok_or_else(|| errors::closed(py, "consumer"))
    }

    /// The open channel (a reference of its own, for its cursors), or ClosedError.
    fn open(&self, py: Python<'_>) -> PyResult<Arc<OpenChannel>> {
        self.handle
            .get()
            .ok_or_else(|| errors::closed(py, "consumer"))
    }

    /// Sorts a core receive result: lost and corrupt messages are counted and passed over
    /// (`Ok(None)`), like "empty" and "timed out"; other errors are raised.
    pub(crate) fn sort<T>(
        &self,
        py: Python<'_>,
        result: Result<T, RecvError>,
    ) -> PyResult<Option<Got<T>>> {
        match result {
            Ok(received) => {
                self.counters.received.fetch_add(1, Relaxed);
                Ok(Some(Got::Message(received)))
            }
            Err(RecvError::Empty | RecvError::TimedOut) => Ok(Some(Got::Empty)),
            Err(RecvError::Pending { .. }) => Ok(Some(Got::Pending)),
            Err(RecvError::Lost { .. }) => {
                self.counters.lost.fetch_add(1, Relaxed);
                Ok(None)
            }
            Err(RecvError::Corrupt { .. }) => {
                self.counters.corrupt.fetch_add(1, Relaxed);
                Ok(None)
            }
            // A repair freed the slot under us (judged dead or stopped): nothing delivered.
            Err(RecvError::Revoked { .. }) => {
                self.counters.revoked.fetch_add(1, Relaxed);
                Ok(None)
            }
            Err(e) => Err(errors::from_recv(py, e, self.channel_id)),
        }
    }

    /// One non-blocking receive into `dst`, passing over lost and corrupt messages. An empty
    /// ring held up by a dead producer for the grace period is repaired and tried again. A claim
    /// in flight at the head with a message behind it (§6.2) is waited for here when `wait` is
    /// `Wait::No` (the caller would otherwise report nothing); a caller that waits anyway gets
    /// `None` and waits for it within its own deadline.
    fn try_once(
        &self,
        py: Python<'_>,
        peer: &mut Peer,
        dst: &mut MessageBuf,
        wait: Wait,
    ) -> PyResult<Option<Received>> {
        self.try_once_with(py, peer, wait, |peer| Ok(peer.try_recv(dst)))
    }

    /// `try_once` with `attempt` making each try (with the GIL held: it may build Python
    /// objects, and write into one, since no Python code runs while it does).
    fn try_once_with<T>(
        &self,
        py: Python<'_>,
        peer: &mut Peer,
        wait: Wait,
        mut attempt: impl FnMut(&Peer) -> PyResult<Result<T, RecvError>>,
    ) -> PyResult<Option<T>> {
        let mut in_flight = InFlight::default();
        let mut skipped = 0;
        while skipped < SKIP_LIMIT {
            match self.sort(py, attempt(peer)?)? {
                Some(Got::Message(received)) => {
                    peer.hit();
                    return Ok(Some(received));
                }
                Some(Got::Pending) if matches!(wait, Wait::No) && in_flight.wait(py, peer) => {}
                Some(Got::Pending) => return Ok(None),
                Some(Got::Empty) if peer.repair_stuck_receive_after_misses() => skipped += 1,
                Some(Got::Empty) => return Ok(None),
                None => skipped += 1,
            }
        }
        Ok(None)
    }

    /// Receives one message into `dst`, private memory that grows to a message longer than
    /// one slot (up to its cap), waiting according to `wait`. The GIL is released while
    /// waiting.
    fn receive_private(
        &self,
        py: Python<'_>,
        peer: &mut Peer,
        dst: &mut MessageBuf,
        wait: Wait,
    ) -> PyResult<Option<Received>> {
        if let Some(received) = self.try_once(py, peer, dst, wait)? {
            return Ok(Some(received));
        }
        self.wait_for_message(py, peer, dst, wait, true)
    }

    /// Sleeps (GIL released, in slices, checking signals) until a message arrives in `dst`
    /// or `wait` runs out; repairs the channel meanwhile if a dead producer holds it up.
    fn wait_for_message(
        &self,
        py: Python<'_>,
        peer: &mut Peer,
        dst: &mut MessageBuf,
        mut wait: Wait,
        spin: bool,
    ) -> PyResult<Option<Received>> {
        // Watching the ring for a moment before the first sleep, if `spin`.
        let mut spin = spin;
        while let Some(until) = wait.slice() {
            let result = py.detach(|| {
                if std::mem::take(&mut spin) {
                    peer.spin_for_message(until);
                }
                peer.recv_until(dst, until)
            });
            if let Some(Got::Message(received)) = self.sort(py, result)? {
                return Ok(Some(received));
            }
            py.check_signals()?;
            if !self.handle.is_open() {
                return Err(errors::closed(py, "consumer"));
            }
        }
        Ok(None)
    }

    /// One message, built by `build` from its metadata and payload: straight from the ring
    /// when one is ready (`recv_in_place`), else waited for according to `wait` (GIL released,
    /// into private memory).
    fn receive_built<'py, T>(
        &self,
        py: Python<'py>,
        mut wait: Wait,
        build: impl Fn(&MessageMeta, Bound<'py, PyBytes>) -> PyResult<T>,
    ) -> PyResult<Option<T>> {
        let mut lease = self.lease(py, &mut wait)?;
        let ready =
            self.try_once_with(py, &mut lease, wait, |peer| recv_in_place(py, peer, &build))?;
        if ready.is_some() || matches!(wait, Wait::No) {
            return Ok(ready);
        }
        // In a steady flow the next message is a moment away: watch for it without the GIL
        // (`peer::SPIN_BEFORE_SLEEP`), then take it straight from the ring, as above.
        let Some(until) = wait.slice() else {
            return Ok(None);
        };
        let peer: &mut Peer = &mut lease;
        if py.detach(move || peer.spin_for_message(until)) {
            let ready =
                self.try_once_with(py, &mut lease, wait, |peer| recv_in_place(py, peer, &build))?;
            if ready.is_some() {
                return Ok(ready);
            }
        }
        let mut buf = MessageBuf::growable();
        match self.wait_for_message(py, &mut lease, &mut buf, wait, false)? {
            Some(received) => {
                let payload = PyBytes::new(py, buf.filled(received.len));
                build(&received.meta, payload).map(Some)
            }
            None => Ok(None),
        }
    }

    fn receive_bytes<'py>(
        &self,
        py: Python<'py>,
        wait: Wait,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.receive_built(py, wait, |_, payload| Ok(payload))
    }

    /// Appends up to `max` ready messages to `out`, claimed together, without blocking; an
    /// empty ring held up by a dead producer is repaired and tried again once. Batches carry
    /// single-slot messages: the count stops before a message longer than one slot, and
    /// `Ok(true)` says that such a message (a run, PROTOCOL.md §12.4) is at the head, left
    /// there for a single receive.
    fn take_batch<T>(
        &self,
        py: Python<'_>,
        peer: &mut Peer,
        out: &mut Vec<T>,
        max: usize,
        make: &mut impl FnMut(&MessageMeta, &[u8]) -> T,
    ) -> PyResult<bool> {
        let mut deliver = |meta: &MessageMeta, payload: &[u8]| out.push(make(meta, payload));
        let mut result = peer.channel().try_recv_batch(max, &mut deliver);
        let mut in_flight = InFlight::default();
        while matches!(result, Err(RecvError::Pending { .. })) && in_flight.wait(py, peer) {
            result = peer.channel().try_recv_batch(max, &mut deliver);
        }
        if result == Err(RecvError::Empty) && peer.repair_stuck_receive_after_misses() {
            result = peer.channel().try_recv_batch(max, &mut deliver);
        }
        match result {
            Ok(batch) => {
                peer.hit();
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
                Ok(false)
            }
            Err(RecvError::Empty | RecvError::Pending { .. }) => Ok(false),
            // A blob at the head is delivered alone too, copied (PROTOCOL.md §13.5).
            Err(RecvError::BufferTooSmall { .. } | RecvError::IsBlob { .. }) => Ok(true),
            Err(e) => Err(errors::from_recv(py, e, self.channel_id)),
        }
    }

    /// A batch: up to `max` messages without blocking; if none and `wait` allows, one
    /// message received blocking followed by whatever else is ready. A message longer than
    /// one slot at the head is delivered alone (batches claim single slots only); one
    /// behind the messages of a batch is left for the next call.
    fn batch<T>(
        &self,
        py: Python<'_>,
        max: usize,
        wait: Wait,
        mut make: impl FnMut(&MessageMeta, &[u8]) -> T,
    ) -> PyResult<Vec<T>> {
        let mut wait = wait;
        let mut lease = self.lease(py, &mut wait)?;
        let mut out = Vec::with_capacity(max.min(1024));
        if max == 0 {
            return Ok(out);
        }
        let run_at_head = self.take_batch(py, &mut lease, &mut out, max, &mut make)?;
        if !out.is_empty() {
            return Ok(out);
        }
        let mut buf = MessageBuf::growable();
        if run_at_head {
            // Received alone, without waiting: it is there (or was just taken by another
            // consumer, and then this batch is empty, as when the ring is).
            if let Some(received) = self.receive_private(py, &mut lease, &mut buf, Wait::No)? {
                out.push(make(&received.meta, buf.filled(received.len)));
            }
            return Ok(out);
        }
        if !matches!(wait, Wait::No) {
            if let Some(received) = self.receive_private(py, &mut lease, &mut buf, wait)? {
                let long = received.len > MSG_INLINE;
                out.push(make(&received.meta, buf.filled(received.len)));
                if !long && max > 1 {
                    self.take_batch(py, &mut lease, &mut out, max - 1, &mut make)?;
                }
            }
        }
        Ok(out)
    }
}

#[pymethods]
impl Consumer {
    /// Opens the existing channel `channel_id` of the segment.
    ///
    /// `wait`: seconds to keep retrying while the segment or the channel does not exist yet
    /// (default 0: raise NotFoundError at once; None: forever). `timeout`: seconds to wait for
    /// a segment or channel another process is still creating (None: forever).
    /// `idle_timeout`: how long iteration waits for the next message before it stops (None:
    /// forever). `trust_owner`: a uid (or several) whose segments are accepted besides this
    /// user's own; `mode`: the widest permission bits accepted (PROTOCOL.md §3.4). Anything
    /// else raises UntrustedError.
    /// `single_slot_only`: for code that cannot take a message longer than 960 bytes; True
    /// refuses a channel that carries runs (PROTOCOL.md §12) with RunsNotSupportedError (its
    /// `channel` says which).
    #[new]
    #[pyo3(signature = (channel_id, segment = "/dmxp_alloc".to_owned(), timeout = 5.0, wait = 0.0, idle_timeout = None, *, trust_owner = None, mode = dmxp::DEFAULT_MODE as i64, single_slot_only = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        channel_id: u32,
        segment: String,
        timeout: Option<f64>,
        wait: Option<f64>,
        idle_timeout: Option<f64>,
        trust_owner: Option<&Bound<'_, PyAny>>,
        mode: i64,
        single_slot_only: bool,
    ) -> PyResult<Self> {
        let trust = Trust::from_args(py, trust_owner, mode)?;
        let timeout = open::limit(py, timeout, "timeout")?;
        let wait = open::limit(py, wait, "wait")?;
        let idle_timeout = match idle_timeout {
            Some(secs) => open::seconds(py, secs, "idle_timeout")?,
            None => None,
        };
        let opened = open::open(
            py,
            &Target {
                segment,
                channel_id,
                create: None,
                max_message_size: 0,
                size: 0,
                peer_records: 0,
                timeout,
                wait,
                trust,
                single_slot_only,
                blob_pool: None,
            },
        )?;
        Ok(Self {
            handle: Handle::new(opened.channel, PeerRole::Consumer),
            label: opened.label,
            channel_id,
            idle_timeout,
            counters: Counters::default(),
            event: EventWait::new("consumer", channel_id, opened.allocator),
        })
    }

    /// Receives one message's payload, or None when nothing came. `timeout`: 0 (the default)
    /// does not wait; a positive number waits up to that many seconds; None (or a negative
    /// number, or math.inf) waits without a deadline.
    #[pyo3(signature = (timeout = Some(0.0)), text_signature = "($self, timeout=0)")]
    fn receive<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let wait = Wait::from_timeout(py, timeout)?;
        self.receive_bytes(py, wait)
    }

    /// Receives, waiting without a deadline (Ctrl-C still interrupts).
    fn receive_blocking<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        match self.receive_bytes(py, Wait::Forever)? {
            Some(bytes) => Ok(bytes),
            None => Err(errors::from_recv(py, RecvError::TimedOut, self.channel_id)),
        }
    }

    /// Like receive, returning a Message (payload and metadata).
    #[pyo3(signature = (timeout = Some(0.0)), text_signature = "($self, timeout=0)")]
    fn receive_with_meta(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Message>> {
        let wait = Wait::from_timeout(py, timeout)?;
        self.receive_built(py, wait, |meta, payload| {
            Ok(Message::with_payload(meta, payload))
        })
    }

    /// Receives one message into `buffer` (any writable, C-contiguous buffer: bytearray,
    /// memoryview, numpy array...) without creating a bytes object (the payload is copied in
    /// once, only its own bytes, through private memory); returns the payload length
    /// or None. A message longer than the buffer stays in the ring and BufferTooSmallError is
    /// raised, with the message's length as `needed` (a buffer of `max_message_size` bytes
    /// always suffices: 960 unless the channel was made for longer messages). `timeout` as
    /// for receive (default 0: no wait).
    #[pyo3(signature = (buffer, timeout = Some(0.0)), text_signature = "($self, buffer, timeout=0)")]
    fn receive_into(
        &self,
        py: Python<'_>,
        buffer: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Option<usize>> {
        let mut wait = Wait::from_timeout(py, timeout)?;
        let mut lease = self.lease(py, &mut wait)?;
        let room = if let Ok(array) = buffer.cast::<PyByteArray>() {
            // A bytearray (the common case) is written straight from the ring when a message
            // is ready: each attempt takes its memory afresh with the GIL held (a wait for a
            // claim in flight between two attempts may release it, and another thread resize
            // the bytearray meanwhile).
            let ready = self.try_once_with(py, &mut lease, wait, |peer| {
                // SAFETY: the slice lives only for this attempt, with the GIL held, and is the
                // only reference to the bytearray's memory: the core copies a message into it
                // and runs no Python code, so nothing resizes or reads the bytearray meanwhile.
                Ok(peer.try_recv_into(unsafe { array.as_bytes_mut() }))
            })?;
            match ready {
                Some(received) => return Ok(Some(received.len)),
                None => array.len(),
            }
        } else {
            // Anything else from the ring when a message is ready, through private memory,
            // copied into the buffer with the GIL held (see `buffers::with_writable`).
            match with_writable(buffer, |dst| {
                match self.try_once(py, &mut lease, dst, wait) {
                    Ok(Some(received)) => (Ok(Ok(received.len)), received.len),
                    Ok(None) => (Ok(Err(dst.cap())), 0),
                    Err(e) => (Err(e), 0),
                }
            })?? {
                Ok(len) => return Ok(Some(len)),
                Err(room) => room,
            }
        };
        if matches!(wait, Wait::No) {
            return Ok(None);
        }
        // Otherwise wait into private memory (the buffer is not touched without the GIL),
        // capped at the buffer's length so that a longer message stays in the ring, then copy.
        let mut private = MessageBuf::capped(room);
        let Some(received) = self.wait_for_message(py, &mut lease, &mut private, wait, true)?
        else {
            return Ok(None);
        };
        let payload = private.filled(received.len);
        let len = payload.len();
        with_writable(buffer, |dst| {
            if len <= dst.cap() {
                // Room for `len`: grown to it beyond one slot, `min(cap, 960)` within one.
                let _ = dst.grow(len);
                dst.room()[..len].copy_from_slice(payload);
                return (Ok(Some(len)), len);
            }
            let error = errors::new_error(
                py,
                "BufferTooSmallError",
                format!(
                    "channel {}: the buffer shrank to {} bytes while waiting; message {} of {} \
                     bytes was received and dropped",
                    self.channel_id,
                    dst.cap(),
                    received.meta.message_id,
                    len
                ),
                &[
                    ("needed", Some(len as u64)),
                    ("available", Some(dst.cap() as u64)),
                ],
            );
            (Err(error), 0)
        })?
    }

    /// Receives the next message in place (PROTOCOL.md §13.5): a BlobMessage whose `view` is
    /// a read-only memoryview over the blob's block in the segment, no copy made, until
    /// `release()` (or the end of a `with` block) gives the block back; or None when nothing
    /// came. An ordinary message arrives in the same type over a private copy (`in_place`
    /// False). `timeout` as for receive (default 0: no wait; the GIL is released while
    /// waiting). Holding a blob holds a pool block, not the ring: several may be held at
    /// once, each keeping one of this consumer's peer registrations. Lost, corrupt and
    /// revoked messages are counted and passed over, as by receive.
    #[pyo3(signature = (timeout = Some(0.0)), text_signature = "($self, timeout=0)")]
    fn receive_view(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Option<BlobMessage>> {
        blob::receive_view(slf, timeout)
    }

    /// The largest blob of the channel (the pool's largest block), 0 on a channel that does
    /// not carry blobs. A copying receive of a blob (receive, receive_into...) needs room for
    /// it.
    #[getter]
    fn max_blob_size(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(blob::max_size(self.open(py)?.borrow_dependent()))
    }

    /// The blob pool's blocks by class (see Producer.blob_stats).
    fn blob_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        blob::stats(py, self.open(py)?.borrow_dependent())
    }

    /// Frees the blocks nobody will free (see Producer.reclaim_blobs); returns how many.
    fn reclaim_blobs(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(blob::reclaim(py, &*self.open(py)?))
    }

    /// Receives up to `max` payloads, claimed together; an empty list when nothing came.
    /// `timeout` (as for receive; default 0: no wait) bounds the wait for the first message.
    /// Batches claim single-slot messages: a message longer than one slot comes in a list of
    /// its own.
    #[pyo3(signature = (max = 64, timeout = Some(0.0)), text_signature = "($self, max=64, timeout=0)")]
    fn receive_batch<'py>(
        &self,
        py: Python<'py>,
        max: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let wait = Wait::from_timeout(py, timeout)?;
        let items = self.batch(py, max, wait, |_, payload| PyBytes::new(py, payload))?;
        PyList::new(py, items)
    }

    /// Like receive_batch, returning Message objects.
    #[pyo3(signature = (max = 64, timeout = Some(0.0)), text_signature = "($self, max=64, timeout=0)")]
    fn receive_batch_with_meta<'py>(
        &self,
        py: Python<'py>,
        max: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let wait = Wait::from_timeout(py, timeout)?;
        let items = self.batch(py, max, wait, |meta, payload| {
            Message::new(py, meta, payload)
        })?;
        PyList::new(py, items)
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// The next payload, waiting up to `idle_timeout` (forever if None); the iteration stops
    /// when that passes without a message, or when the consumer is closed.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        match self.receive_bytes(py, Wait::after(self.idle_timeout)) {
            // Closed (by another thread, while this one waited): the iteration ends.
            Err(_) if !self.handle.is_open() => Ok(None),
            other => other,
        }
    }

    /// Receives one message's payload without blocking the thread: a coroutine for asyncio
    /// (`await consumer.receive_async()`), which waits for the channel's wake-up through the
    /// running loop (`loop.add_reader` on an io_uring futex wait, PROTOCOL.md §7.4; polling
    /// where the kernel has none). `timeout`: None (the default) waits without a deadline, 0
    /// does not wait, a positive number waits up to that many seconds; None is returned when
    /// nothing came. Cancelling it consumes nothing. One async wait per consumer at a time
    /// (BusyError otherwise).
    #[pyo3(signature = (timeout = None))]
    fn receive_async<'py>(
        slf: &Bound<'py, Self>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        static RECEIVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        aio(slf.py(), &RECEIVE, "receive")?.call1((slf, timeout, false))
    }

    /// Like receive_async, returning a Message (payload and metadata).
    #[pyo3(signature = (timeout = None))]
    fn receive_with_meta_async<'py>(
        slf: &Bound<'py, Self>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        static RECEIVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        aio(slf.py(), &RECEIVE, "receive")?.call1((slf, timeout, true))
    }

    fn __aiter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// `async for payload in consumer`: the next payload, waited for like receive_async up
    /// to `idle_timeout` (forever if None); the iteration stops when that passes without a
    /// message, or when the consumer is closed.
    fn __anext__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        static NEXT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let idle = slf.get().idle_timeout.map(|d| d.as_secs_f64());
        aio(slf.py(), &NEXT, "next_payload")?.call1((slf, idle))
    }

    /// One receive that never waits, not even for a claim in flight at the head (the async
    /// wait that follows covers it): payload (or Message with `meta`) or None. For `_aio`.
    #[pyo3(signature = (meta = false))]
    fn _try_receive<'py>(
        &self,
        py: Python<'py>,
        meta: bool,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let mut lease = self.lease(py, &mut Wait::No)?;
        // `Wait::Forever`: the caller waits anyway, so a claim in flight is not waited for.
        self.try_once_with(py, &mut lease, Wait::Forever, |peer| {
            recv_in_place(py, peer, |message_meta, payload| {
                Ok(if meta {
                    Bound::new(py, Message::with_payload(message_meta, payload))?.into_any()
                } else {
                    payload.into_any()
                })
            })
        })
    }

    /// Claims this consumer for one async wait (BusyError while another holds it). For `_aio`.
    fn _wait_begin(&self, py: Python<'_>) -> PyResult<()> {
        self.event.begin(py)
    }

    /// Arms one round of an async wait for a message: None (a message may be there: receive
    /// again), `(fd, seconds)` (wait until fd is readable or the seconds pass, then
    /// `_disarm_wait` and receive again), or False (no io_uring futex waits: poll). For `_aio`.
    fn _arm_wait(&self, py: Python<'_>) -> PyResult<Armed> {
        self.event.arm(py, 0)
    }

    /// Ends the round `_arm_wait` armed. For `_aio`.
    fn _disarm_wait(&self, py: Python<'_>) {
        self.event.disarm(py);
    }

    /// Ends the async wait `_wait_begin` started. For `_aio`.
    fn _wait_end(&self, py: Python<'_>) {
        self.event.end(py);
    }

    /// Makes the async waits of this consumer poll (True: re-check the ring every 1 ms or so,
    /// as where the kernel has no io_uring futex waits; DMXP_ASYNC_POLL=1 does it for every
    /// handle) or use io_uring again (False).
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

    /// Messages lost because their producer died mid-send (tombstones passed over, by every
    /// kind of receive): the same as `stats["lost"]`.
    #[getter]
    fn lost(&self) -> u64 {
        self.counters.lost.load(Relaxed)
    }

    /// Counters: received, lost (tombstones passed over, batch receives included), corrupt
    /// (impossible lengths passed over), dropped_in_batch (lost or corrupt, passed over by
    /// batch receives, which do not tell the two apart).
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("received", self.counters.received.load(Relaxed))?;
        dict.set_item("lost", self.counters.lost.load(Relaxed))?;
        dict.set_item("revoked", self.counters.revoked.load(Relaxed))?;
        dict.set_item("corrupt", self.counters.corrupt.load(Relaxed))?;
        dict.set_item(
            "dropped_in_batch",
            self.counters.dropped_in_batch.load(Relaxed),
        )?;
        Ok(dict)
    }

    /// Closes the consumer and releases its mapping (when no other handle uses it). Further
    /// receives raise ClosedError; iteration stops (also `async for`). Idempotent.
    fn close(&self, py: Python<'_>) {
        self.handle.close();
        self.event.close(py);
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        !self.handle.is_open()
    }

    /// True when this consumer holds a record in the segment's peer table (taken at open), so
    /// that a call it leaves unfinished by dying is repaired by its peers. False when the
    /// table is full (or there is no room to carve it): the consumer works, unprotected.
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

    /// Slots in the ring.
    #[getter]
    fn capacity(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.open(py)?.borrow_dependent().capacity())
    }

    /// The largest message the channel takes, in bytes: 960 (one slot) unless its creator
    /// made it for longer messages (`Producer(..., max_message_size=N)`). A `receive_into`
    /// buffer of this size always suffices.
    #[getter]
    fn max_message_size(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.open(py)?.borrow_dependent().max_message_size())
    }

    /// The segment, as named in messages.
    #[getter]
    fn segment(&self) -> &str {
        &self.label
    }

    /// Cursors and depth right now (see Producer.info).
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
            "dmxp.Consumer(channel_id={}, segment={:?}{state})",
            self.channel_id, self.label
        )
    }
}
