//! Zero-copy blobs (PROTOCOL.md §13): `Producer.loan()` gives a [`BlobLoan`], a block of the
//! segment's blob pool written in place through a writable `memoryview` and sent by
//! `commit()`; `Consumer.receive_view()` gives a [`BlobMessage`], a read-only `memoryview`
//! over the block in place until `release()`.
//!
//! # Who owns what
//!
//! A block's owner is a peer record (§13.2): the record of the registration that loaned or
//! received it. So a loan and a received blob each keep one registration of their handle
//! (`peer::Detached`) for as long as they live, with the core's guard borrowing it
//! ([`LoanCell`], [`HeldCell`]); when they end, the guard goes first (the core then sends,
//! or gives the block back), and the registration goes back to the handle. While it is out,
//! the handle's other calls use its other registrations (up to `REGISTRATIONS_PER_HANDLE`,
//! then one of their own each).
//!
//! # Views and the mapping
//!
//! The `memoryview`s are built by `dmxp._blob.block_view` over a `ctypes` array at the
//! block's address, which also holds a [`Mapping`]: the `Arc` of the open channel, which
//! keeps the segment mapped. Every view derived from ours (a slice, `memoryview(view)`, the
//! view numpy keeps as an array's base) is registered on the same managed buffer, which holds
//! that array until the last of them is gone: the memory a view reads or writes is mapped
//! for as long as any such view exists, whatever was closed meanwhile. `commit()`, `abandon()`
//! and `release()` release our view (using it then raises ValueError); what was derived from
//! it stays usable but no longer names the message (the block is the consumer's, or free):
//! the lifetime rule the package documentation states.
//!
//! Python code reads and writes those views with plain loads and stores (memcpy), not the
//! atomic words the Rust core uses (`dmxp::BlobBytes`): as for any shared memory in Python
//! (`multiprocessing.shared_memory`), a peer writing the same block garbles bytes, never the
//! interpreter.

use std::sync::atomic::{fence, AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dmxp::core::channel::{BlobLoan as CoreBlobLoan, BlobReceived};
use dmxp::core::{BlobError, BlobRef, PeerRole, RecvError, Segment, SendError, SendMeta};
use dmxp::core::{BlobPoolSpec, WaitStrategy};
use dmxp::{FutexWait, MessageMeta, StuckWatch};
use pyo3::exceptions::PyBufferError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use self_cell::self_cell;

use crate::buffers::MessageBuf;
use crate::consumer::{Consumer, Got, InFlight, SKIP_LIMIT};
use crate::errors;
use crate::open::{FutexChannel, OpenChannel, Wait};
use crate::peer::{Detached, Handle, Peer};
use crate::producer::Producer;

type CoreLoan<'p> = CoreBlobLoan<'p, 'p, FutexWait>;
/// `None` once released (`release` consumes the core guard to report a revoked block).
type CoreHeld<'p> = Option<BlobReceived<'p, 'p, FutexWait>>;

self_cell!(
    /// A loan and the registration whose record owns its block.
    struct LoanCell {
        owner: Detached,

        #[covariant]
        dependent: CoreLoan,
    }
);

self_cell!(
    /// A received block and the registration whose record holds it.
    struct HeldCell {
        owner: Detached,

        #[covariant]
        dependent: CoreHeld,
    }
);

/// How often a loan waiting for a free block looks for blocks that dead peers left, as the
/// Rust `Producer::loan_blob_timeout` does.
const RECLAIM_EVERY: Duration = Duration::from_millis(10);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Never held across anything that can panic; recover the value anyway.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A registration detached from a handle for one blob call, given back when this is dropped
/// unless the call moved it into the loan or message it returns.
struct Taken<'h> {
    handle: &'h Handle,
    peer: Option<Detached>,
}

impl<'h> Taken<'h> {
    /// A registration of `handle` that the call may keep (never waiting for one: a handle
    /// whose registrations are all out, held by loans and messages, makes one for the call).
    fn new(py: Python<'_>, handle: &'h Handle, what: &str) -> PyResult<Self> {
        let lease = handle
            .lease(py, &mut Wait::No)?
            .ok_or_else(|| errors::closed(py, what))?;
        Ok(Self {
            handle,
            peer: Some(lease.detach()),
        })
    }

    fn take(&mut self) -> Detached {
        match self.peer.take() {
            Some(peer) => peer,
            None => unreachable!("a failed attempt puts the registration back"),
        }
    }

    fn put(&mut self, peer: Detached) {
        self.peer = Some(peer);
    }

    fn peer(&mut self) -> &mut Peer {
        match self.peer.as_mut() {
            Some(peer) => peer,
            None => unreachable!("a failed attempt puts the registration back"),
        }
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if let Some(peer) = self.peer.take() {
            self.handle.restore(peer);
        }
    }
}

/// Keeps a segment mapped: held by the `ctypes` array under every view of one of its blocks
/// (see the module documentation). Nothing to call.
#[pyclass(module = "dmxp._dmxp", name = "_Mapping", frozen)]
pub struct Mapping {
    _open: Arc<OpenChannel>,
}

/// The start and size of the block `blob` names, in this process's mapping.
fn block_memory(channel: &FutexChannel<'_>, blob: &BlobRef) -> Option<(usize, usize)> {
    let words = channel.blob_pool()?.words(blob)?;
    Some((words.as_ptr() as usize, std::mem::size_of_val(words)))
}

/// A memoryview of `len` bytes at `address` (a block of `capacity` bytes) that keeps `open`
/// mapped while it or any view derived from it lives: `dmxp._blob.block_view`.
fn block_view(
    py: Python<'_>,
    open: &Arc<OpenChannel>,
    (address, capacity): (usize, usize),
    len: usize,
    readonly: bool,
) -> PyResult<Py<PyAny>> {
    static BLOCK_VIEW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let mapping = Mapping {
        _open: Arc::clone(open),
    };
    let view = BLOCK_VIEW
        .import(py, "dmxp._blob", "block_view")?
        .call1((address, capacity, len, mapping, readonly))?;
    Ok(view.unbind())
}

/// Releases a view we made; a view that something still holds a buffer of (BufferError)
/// stays valid (its memory stays mapped, see the module documentation): nothing to do then.
fn release_view(py: Python<'_>, view: &Py<PyAny>) {
    if let Err(e) = view.bind(py).call_method0(intern!(py, "release")) {
        if !e.is_instance_of::<PyBufferError>(py) {
            // Only a broken interpreter state gets here: reported the way Python reports
            // errors it cannot raise.
            e.write_unraisable(py, Some(view.bind(py)));
        }
    }
}

/// Frees the blocks nobody will free (PROTOCOL.md §13.6): those of dead peers (freeing their
/// records), then the leaked and orphaned ones, as the Rust `reclaim_blobs` does. Returns how
/// many; the GIL is released meanwhile.
pub(crate) fn reclaim(py: Python<'_>, open: &OpenChannel) -> u32 {
    py.detach(|| reclaim_now(open))
}

fn reclaim_now(open: &OpenChannel) -> u32 {
    let Ok(segment) = Segment::attach(open.borrow_owner().region()) else {
        return 0;
    };
    let segment = segment.with_wait_strategy(FutexWait::new());
    let dead = segment
        .free_dead_records(&dmxp::ProcLiveness, std::process::id())
        .map_or(0, |report| report.blocks_reclaimed);
    dead + segment.reclaim_blobs().unwrap_or(0)
}

/// `blob_stats()`: one dict per size class (block_size, block_count, free, loaned, queued,
/// held, invalid); an empty list on a channel without blobs.
pub(crate) fn stats<'py>(
    py: Python<'py>,
    channel: &FutexChannel<'_>,
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    if let Some(pool) = channel.blob_pool() {
        for class in pool.stats() {
            let dict = PyDict::new(py);
            dict.set_item("block_size", class.block_size)?;
            dict.set_item("block_count", class.block_count)?;
            dict.set_item("free", class.free)?;
            dict.set_item("loaned", class.loaned)?;
            dict.set_item("queued", class.queued)?;
            dict.set_item("held", class.held)?;
            dict.set_item("invalid", class.invalid)?;
            list.append(dict)?;
        }
    }
    Ok(list)
}

/// `max_blob_size`: the pool's largest block, 0 on a channel without blobs.
pub(crate) fn max_size(channel: &FutexChannel<'_>) -> u64 {
    channel
        .blob_pool()
        .map_or(0, dmxp::core::BlobPool::largest_block)
}

/// The `blob_classes` argument: an iterable of `(block_size, block_count)` pairs.
pub(crate) fn spec_from_classes(
    py: Python<'_>,
    classes: &Bound<'_, PyAny>,
) -> PyResult<BlobPoolSpec> {
    let mut spec = BlobPoolSpec::new();
    for item in classes.try_iter()? {
        let item = item?;
        let (size, count): (u64, u32) = item.extract().map_err(|_| {
            errors::invalid(
                py,
                format!(
                    "blob_classes: {} is not a (block_size, block_count) pair",
                    item.repr()
                        .map_or_else(|_| "an item".to_owned(), |r| r.to_string())
                ),
            )
        })?;
        spec = spec.with_class(size, count);
    }
    spec.check()
        .map_err(|e| errors::invalid(py, format!("blob_classes: {e}")))?;
    Ok(spec)
}

/// Sleeps until a block is freed (the pool's `free_seq` word, PROTOCOL.md §13.3) or `until`:
/// counted among the pool's waiters, and the pool looked at again after registering, so that
/// a block freed meanwhile is not slept through (as the Rust producer does).
fn wait_for_block(channel: &FutexChannel<'_>, len: usize, until: Instant) {
    let Some(pool) = channel.blob_pool() else {
        return;
    };
    let (word, waiters) = pool.free_words();
    waiters.fetch_add(1, SeqCst);
    let seen = word.load(SeqCst);
    fence(SeqCst);
    let free = pool
        .stats()
        .iter()
        .any(|class| class.block_size >= len as u64 && class.free != 0);
    if !free {
        FutexWait::until(until).wait(word, seen);
    }
    // Never below 0: a forged count cannot make this wrap.
    let _ = waiters.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
}

/// `Producer.loan(nbytes, timeout=0)`.
pub(crate) fn loan(
    slf: &Bound<'_, Producer>,
    nbytes: usize,
    timeout: Option<f64>,
) -> PyResult<BlobLoan> {
    let py = slf.py();
    let producer = slf.get();
    let mut wait = Wait::from_timeout(py, timeout)?;
    let channel_id = producer.id();
    let mut taken = Taken::new(py, producer.handle(), "producer")?;
    // The first pass reclaims at once (a non-waiting loan does once, as in Rust).
    let mut reclaim_at = Instant::now();
    loop {
        match LoanCell::try_new_or_recover(taken.take(), |peer| {
            peer.channel().try_loan_blob(nbytes)
        }) {
            Ok(cell) => return BlobLoan::new(py, slf, cell, channel_id),
            Err((peer, BlobError::PoolExhausted { .. })) => taken.put(peer),
            Err((peer, e)) => {
                taken.put(peer);
                return Err(errors::from_blob(py, e, channel_id));
            }
        }
        let now = Instant::now();
        if now >= reclaim_at {
            reclaim_at = now + RECLAIM_EVERY;
            let open = Arc::clone(taken.peer().open());
            if reclaim(py, &open) != 0 {
                continue;
            }
        }
        if matches!(wait, Wait::No) {
            return Err(errors::from_blob(
                py,
                BlobError::PoolExhausted { len: nbytes },
                channel_id,
            ));
        }
        let Some(until) = wait.slice() else {
            return Err(errors::from_blob(py, BlobError::TimedOut, channel_id));
        };
        let peer: &mut Peer = taken.peer();
        py.detach(move || wait_for_block(peer.channel(), nbytes, until.min(reclaim_at)));
        py.check_signals()?;
        if !producer.handle().is_open() {
            return Err(errors::closed(py, "producer"));
        }
    }
}

/// What a loan is now.
enum LoanState {
    /// Loaned, to be written and committed (or abandoned).
    Open(LoanCell),
    /// A `commit` is waiting for a free slot (in another thread, or this one's).
    Committing,
    Committed(u64),
    Abandoned,
    /// Its block was reclaimed (this producer was judged dead): nothing was sent.
    Revoked,
}

/// A block of the blob pool loaned for one message (PROTOCOL.md §13.3): fill `view` in place,
/// then `commit()`. As a context manager it commits on a normal exit and abandons (gives the
/// block back, nothing sent) on an exception. After commit or abandon `view` is released.
#[pyclass(module = "dmxp._dmxp", name = "BlobLoan", frozen)]
pub struct BlobLoan {
    producer: Py<Producer>,
    state: Mutex<LoanState>,
    view: Py<PyAny>,
    len: usize,
    channel_id: u32,
}

impl BlobLoan {
    fn new(
        py: Python<'_>,
        producer: &Bound<'_, Producer>,
        cell: LoanCell,
        channel_id: u32,
    ) -> PyResult<Self> {
        let peer: &Peer = cell.borrow_owner();
        let loan = cell.borrow_dependent();
        let len = loan.len();
        let view = block_memory(peer.channel(), &loan.blob())
            .ok_or_else(|| {
                errors::new_error(
                    py,
                    "DmxpError",
                    format!("channel {channel_id}: the loaned block is outside the pool"),
                    &[],
                )
            })
            .and_then(|memory| block_view(py, peer.open(), memory, len, false));
        let view = match view {
            Ok(view) => view,
            Err(e) => {
                // Given back: the block (the core loan's drop), then the registration.
                producer.get().handle().restore(cell.into_owner());
                return Err(e);
            }
        };
        Ok(Self {
            producer: producer.clone().unbind(),
            state: Mutex::new(LoanState::Open(cell)),
            view,
            len,
            channel_id,
        })
    }

    fn handle(&self) -> &Handle {
        self.producer.get().handle()
    }

    /// Ends the loan: the core guard first (sent already, or dropped: the block goes back),
    /// then the registration, then our view.
    fn finish(&self, py: Python<'_>, cell: LoanCell, state: LoanState) {
        self.handle().restore(cell.into_owner());
        *lock(&self.state) = state;
        release_view(py, &self.view);
    }

    /// Sends the first `len` bytes, waiting while the ring is full according to `wait`, with
    /// the GIL released (in slices, checking signals). `Err(TimedOut)` when time runs out,
    /// `Err(Full)` when `wait` is `No`.
    fn commit_waiting(
        &self,
        py: Python<'_>,
        cell: &mut LoanCell,
        len: usize,
        meta: &SendMeta,
        mut wait: Wait,
    ) -> PyResult<Result<u64, SendError>> {
        if matches!(wait, Wait::No) {
            return Ok(Err(SendError::Full));
        }
        // The loan's registration is borrowed by the loan: the stuck watch of this wait is
        // kept here.
        let mut stuck = StuckWatch::default();
        let mut spin = true;
        loop {
            let Some(until) = wait.slice() else {
                return Ok(Err(SendError::TimedOut));
            };
            let sent = py.detach(|| {
                cell.with_dependent_mut(|peer, loan| {
                    if std::mem::take(&mut spin) {
                        peer.spin_for_free_slots(1, until);
                    }
                    loop {
                        match loan.try_commit(len, meta) {
                            Err(SendError::Full) => {}
                            other => return other,
                        }
                        if peer.repair_watched(&mut stuck, PeerRole::Consumer) {
                            continue;
                        }
                        if Instant::now() >= until {
                            return Err(SendError::TimedOut);
                        }
                        let wake = stuck.next_check().map_or(until, |next| next.min(until));
                        peer.channel()
                            .wait_for_free_slots(1, &FutexWait::until(wake));
                    }
                })
            });
            match sent {
                Err(SendError::TimedOut) => {}
                other => return Ok(other),
            }
            py.check_signals()?;
            if !self.handle().is_open() {
                return Err(errors::closed(py, "producer"));
            }
        }
    }

    fn done_error(&self, py: Python<'_>, state: &LoanState) -> PyErr {
        let what = match state {
            LoanState::Committed(id) => format!("committed (message {id})"),
            LoanState::Abandoned => "abandoned".to_owned(),
            LoanState::Revoked => "revoked".to_owned(),
            LoanState::Committing | LoanState::Open(_) => "being committed".to_owned(),
        };
        errors::new_error(
            py,
            "ClosedError",
            format!(
                "channel {}: this blob loan is already {what}",
                self.channel_id
            ),
            &[],
        )
    }
}

impl Drop for BlobLoan {
    fn drop(&mut self) {
        // Dropped without commit or abandon (collected): abandoned.
        let state = std::mem::replace(
            self.state.get_mut().unwrap_or_else(|p| p.into_inner()),
            LoanState::Abandoned,
        );
        if let LoanState::Open(cell) = state {
            self.producer.get().handle().restore(cell.into_owner());
            let view = &self.view;
            let _ = Python::try_attach(|py| release_view(py, view));
        }
    }
}

#[pymethods]
impl BlobLoan {
    /// A writable memoryview over the loaned block's `nbytes` bytes, in place in the segment
    /// (format "B"); `numpy.frombuffer(loan.view, dtype)` wraps it without a copy. Released
    /// by commit and abandon: using it afterwards raises ValueError.
    #[getter]
    fn view(&self, py: Python<'_>) -> Py<PyAny> {
        self.view.clone_ref(py)
    }

    /// Bytes loaned (the `nbytes` asked for).
    #[getter]
    fn nbytes(&self) -> usize {
        self.len
    }

    fn __len__(&self) -> usize {
        self.len
    }

    /// The message_id once committed, else None.
    #[getter]
    fn message_id(&self) -> Option<u64> {
        match *lock(&self.state) {
            LoanState::Committed(id) => Some(id),
            _ => None,
        }
    }

    /// True once committed, abandoned or revoked (the view is released then).
    #[getter]
    fn closed(&self) -> bool {
        !matches!(
            *lock(&self.state),
            LoanState::Open(_) | LoanState::Committing
        )
    }

    /// Sends the first `nbytes` bytes of the block (None: all of it) as one message with an
    /// application `message_type` and `flags` (bits 0xFF00 only); returns its message_id.
    /// The bytes are not copied: the message names the block, which is the receiver's from
    /// then on. Waits while the ring is full: `timeout` None (the default) without a deadline,
    /// 0 not at all (FullError), a positive number up to that many seconds (TimeoutError);
    /// after those two errors, and TooLargeError (`nbytes` over the loan) or
    /// InvalidInputError (reserved flags), the loan stays open to retry or abandon.
    /// RevokedError: the block was reclaimed (this producer was judged dead); nothing sent.
    #[pyo3(signature = (nbytes = None, message_type = 0, flags = 0, *, timeout = None))]
    fn commit(
        &self,
        py: Python<'_>,
        nbytes: Option<usize>,
        message_type: u32,
        flags: u16,
        timeout: Option<f64>,
    ) -> PyResult<u64> {
        let wait = Wait::from_timeout(py, timeout)?;
        if !self.handle().is_open() {
            return Err(errors::closed(py, "producer"));
        }
        let len = nbytes.unwrap_or(self.len);
        let mut cell = {
            let mut state = lock(&self.state);
            match std::mem::replace(&mut *state, LoanState::Committing) {
                LoanState::Open(cell) => cell,
                other => {
                    let error = self.done_error(py, &other);
                    *state = other;
                    return Err(error);
                }
            }
        };
        let meta = self.producer.get().meta(message_type, flags);
        let first = cell.with_dependent_mut(|_, loan| loan.try_commit(len, &meta));
        let result = match first {
            Err(SendError::Full) => match self.commit_waiting(py, &mut cell, len, &meta, wait) {
                Ok(result) => result,
                Err(interrupted) => {
                    // Ctrl-C or a close while waiting: still loaned.
                    *lock(&self.state) = LoanState::Open(cell);
                    return Err(interrupted);
                }
            },
            other => other,
        };
        match result {
            Ok(id) => {
                self.finish(py, cell, LoanState::Committed(id));
                Ok(id)
            }
            // The core keeps the loan on these (and `TimedOut` is ours): retry or abandon.
            Err(
                e @ (SendError::Full
                | SendError::TimedOut
                | SendError::Busy
                | SendError::TooLarge { .. }
                | SendError::ReservedFlags { .. }),
            ) => {
                *lock(&self.state) = LoanState::Open(cell);
                Err(errors::from_send(py, e, self.channel_id))
            }
            Err(e) => {
                self.finish(py, cell, LoanState::Revoked);
                Err(errors::from_send(py, e, self.channel_id))
            }
        }
    }

    /// Gives the block back to the pool without sending anything; the view is released. Does
    /// nothing on a loan already committed or abandoned.
    fn abandon(&self, py: Python<'_>) {
        let cell = {
            let mut state = lock(&self.state);
            match std::mem::replace(&mut *state, LoanState::Abandoned) {
                LoanState::Open(cell) => cell,
                other => {
                    *state = other;
                    return;
                }
            }
        };
        self.finish(py, cell, LoanState::Abandoned);
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Commits (all of the loan) on a normal exit, unless it was committed or abandoned in
    /// the block; abandons on an exception.
    #[pyo3(signature = (exc_type, _exc = None, _tb = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let failed = exc_type.is_some_and(|t| !t.is_none());
        if failed {
            self.abandon(py);
        } else if matches!(*lock(&self.state), LoanState::Open(_)) {
            self.commit(py, None, 0, 0, None)?;
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let state = match *lock(&self.state) {
            LoanState::Open(_) => "open".to_owned(),
            LoanState::Committing => "committing".to_owned(),
            LoanState::Committed(id) => format!("committed as {id}"),
            LoanState::Abandoned => "abandoned".to_owned(),
            LoanState::Revoked => "revoked".to_owned(),
        };
        format!(
            "dmxp.BlobLoan(channel_id={}, nbytes={}, {state})",
            self.channel_id, self.len
        )
    }
}

/// `Consumer.receive_view(timeout=0)`.
pub(crate) fn receive_view(
    slf: &Bound<'_, Consumer>,
    timeout: Option<f64>,
) -> PyResult<Option<BlobMessage>> {
    let py = slf.py();
    let consumer = slf.get();
    let mut wait = Wait::from_timeout(py, timeout)?;
    let mut taken = Taken::new(py, consumer.handle(), "consumer")?;
    let mut in_flight = InFlight::default();
    let mut skipped = 0;
    let mut spin = true;
    loop {
        let error = match HeldCell::try_new_or_recover(taken.take(), |peer| {
            peer.channel().try_recv_blob().map(Some)
        }) {
            Ok(cell) => {
                cell.borrow_owner().hit();
                consumer.sort(py, Ok(()))?;
                return BlobMessage::held(py, slf, cell).map(Some);
            }
            Err((peer, e)) => {
                taken.put(peer);
                e
            }
        };
        let error = match error {
            // An ordinary message (or a consumer without a record, which copies blobs):
            // received copied, delivered in the same type.
            RecvError::NotABlob { .. } | RecvError::NotRegistered => {
                let mut buf = MessageBuf::growable();
                match taken.peer().try_recv(&mut buf) {
                    Ok(received) => {
                        consumer.sort(py, Ok(()))?;
                        taken.peer().hit();
                        let payload = PyBytes::new(py, buf.filled(received.len));
                        return BlobMessage::inline(slf, &received.meta, payload).map(Some);
                    }
                    Err(e) => e,
                }
            }
            e => e,
        };
        match consumer.sort::<()>(py, Err(error))? {
            Some(Got::Empty) if taken.peer().repair_stuck_receive_after_misses() => {
                skipped += 1;
            }
            Some(Got::Pending) if matches!(wait, Wait::No) && in_flight.wait(py, taken.peer()) => {}
            Some(Got::Empty | Got::Pending) => {
                if matches!(wait, Wait::No) {
                    return Ok(None);
                }
                let Some(until) = wait.slice() else {
                    return Ok(None);
                };
                let peer = taken.peer();
                py.detach(|| {
                    if std::mem::take(&mut spin) && peer.spin_for_message(until) {
                        return;
                    }
                    peer.wait_for_message_until(until);
                });
                py.check_signals()?;
                if !consumer.handle().is_open() {
                    return Err(errors::closed(py, "consumer"));
                }
            }
            Some(Got::Message(())) => unreachable!("only errors are sorted here"),
            // Lost, corrupt or revoked: counted, passed over.
            None => skipped += 1,
        }
        if skipped >= SKIP_LIMIT {
            return Ok(None);
        }
    }
}

/// A message received in place (`Consumer.receive_view()`): a blob read straight from its
/// block until `release()`, or an ordinary message (`in_place` False) over a private copy.
#[pyclass(module = "dmxp._dmxp", name = "BlobMessage", frozen)]
pub struct BlobMessage {
    consumer: Py<Consumer>,
    /// The block, until released; `None` for an ordinary message.
    held: Mutex<Option<HeldCell>>,
    released: AtomicBool,
    view: Py<PyAny>,
    meta: MessageMeta,
    len: usize,
    in_place: bool,
}

impl BlobMessage {
    fn held(py: Python<'_>, consumer: &Bound<'_, Consumer>, cell: HeldCell) -> PyResult<Self> {
        let peer: &Peer = cell.borrow_owner();
        let Some(received) = cell.borrow_dependent() else {
            unreachable!("a message is released only by `release`")
        };
        let meta = *received.meta();
        let len = received.len();
        let view = block_memory(peer.channel(), &received.blob())
            .ok_or_else(|| {
                errors::new_error(
                    py,
                    "DmxpError",
                    format!(
                        "channel {}: message {}: the block is outside the pool",
                        meta.channel_id, meta.message_id
                    ),
                    &[],
                )
            })
            .and_then(|memory| block_view(py, peer.open(), memory, len, true));
        let view = match view {
            Ok(view) => view,
            Err(e) => {
                consumer.get().handle().restore(cell.into_owner());
                return Err(e);
            }
        };
        Ok(Self {
            consumer: consumer.clone().unbind(),
            held: Mutex::new(Some(cell)),
            released: AtomicBool::new(false),
            view,
            meta,
            len,
            in_place: true,
        })
    }

    fn inline(
        consumer: &Bound<'_, Consumer>,
        meta: &MessageMeta,
        payload: Bound<'_, PyBytes>,
    ) -> PyResult<Self> {
        let len = payload.as_bytes().len();
        let view = pyo3::types::PyMemoryView::from(payload.as_any())?;
        Ok(Self {
            consumer: consumer.clone().unbind(),
            held: Mutex::new(None),
            released: AtomicBool::new(false),
            view: view.into_any().unbind(),
            meta: *meta,
            len,
            in_place: false,
        })
    }
}

impl Drop for BlobMessage {
    fn drop(&mut self) {
        let held = self
            .held
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(cell) = held {
            // The core guard gives the block back as it goes, then the registration goes.
            self.consumer.get().handle().restore(cell.into_owner());
            let view = &self.view;
            let _ = Python::try_attach(|py| release_view(py, view));
        }
    }
}

#[pymethods]
impl BlobMessage {
    /// A read-only memoryview over the message's bytes (format "B"): in place in the block
    /// for a blob, over a private copy for an ordinary message. Released by `release()`:
    /// using it afterwards raises ValueError.
    #[getter]
    fn view(&self, py: Python<'_>) -> Py<PyAny> {
        self.view.clone_ref(py)
    }

    /// True when `view` reads the block in place (a blob); False for an ordinary message,
    /// copied out of the ring.
    #[getter]
    fn in_place(&self) -> bool {
        self.in_place
    }

    /// Length in bytes.
    #[getter]
    fn nbytes(&self) -> usize {
        self.len
    }

    fn __len__(&self) -> usize {
        self.len
    }

    /// The message's position in its channel.
    #[getter]
    fn message_id(&self) -> u64 {
        self.meta.message_id
    }

    /// CLOCK_MONOTONIC nanoseconds at send (0 if the sender had no clock).
    #[getter]
    fn timestamp_ns(&self) -> u64 {
        self.meta.timestamp_ns
    }

    #[getter]
    fn channel_id(&self) -> u32 {
        self.meta.channel_id
    }

    /// Application-defined.
    #[getter]
    fn message_type(&self) -> u32 {
        self.meta.message_type
    }

    #[getter]
    fn sender_pid(&self) -> u32 {
        self.meta.sender_pid
    }

    /// 0 unknown, 1 Rust, 2 C, 3 Python, 4 Go.
    #[getter]
    fn sender_runtime(&self) -> u16 {
        self.meta.sender_runtime
    }

    /// Application flags (0xFF00), plus the protocol's BLOB bit (0x0010) for a blob.
    #[getter]
    fn flags(&self) -> u16 {
        self.meta.flags
    }

    /// The metadata as a dict: message_id, timestamp_ns, channel_id, message_type,
    /// sender_pid, sender_runtime, flags, payload_len.
    #[getter]
    fn meta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = &self.meta;
        let dict = PyDict::new(py);
        dict.set_item("message_id", m.message_id)?;
        dict.set_item("timestamp_ns", m.timestamp_ns)?;
        dict.set_item("channel_id", m.channel_id)?;
        dict.set_item("message_type", m.message_type)?;
        dict.set_item("sender_pid", m.sender_pid)?;
        dict.set_item("sender_runtime", m.sender_runtime)?;
        dict.set_item("flags", m.flags)?;
        dict.set_item("payload_len", self.len)?;
        Ok(dict)
    }

    /// True once released.
    #[getter]
    fn released(&self) -> bool {
        self.released.load(SeqCst)
    }

    /// A copy of the bytes (ValueError once released).
    fn __bytes__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.view.bind(py).call_method0(intern!(py, "tobytes"))
    }

    /// Gives the block back to the pool (for an ordinary message, only releases the view);
    /// `view` is released. Idempotent. RevokedError when the block was reclaimed while held
    /// (this consumer was judged dead, PROTOCOL.md §13.6): what was read may have been
    /// overwritten and must not be acted on.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let held = lock(&self.held).take();
        if self.released.swap(true, SeqCst) && held.is_none() {
            return Ok(());
        }
        release_view(py, &self.view);
        let Some(mut cell) = held else {
            return Ok(());
        };
        let released =
            cell.with_dependent_mut(|_, received| received.take().map(BlobReceived::release));
        self.consumer.get().handle().restore(cell.into_owner());
        match released {
            Some(Err(e)) => Err(errors::blob_error(
                py,
                e,
                format!(
                    "channel {}: blob {}: {e}",
                    self.meta.channel_id, self.meta.message_id
                ),
                self.meta.message_id,
            )),
            _ => Ok(()),
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Releases the message (also on an exception).
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.release(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let state = if self.released.load(SeqCst) {
            ", released"
        } else {
            ""
        };
        format!(
            "dmxp.BlobMessage(message_id={}, channel_id={}, nbytes={}, in_place={}, \
             message_type={}, flags={:#06x}, sender_pid={}, sender_runtime={}{state})",
            self.meta.message_id,
            self.meta.channel_id,
            self.len,
            if self.in_place { "True" } else { "False" },
            self.meta.message_type,
            self.meta.flags,
            self.meta.sender_pid,
            self.meta.sender_runtime,
        )
    }
}
