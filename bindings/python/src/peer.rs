//! Crash recovery for Python handles (PROTOCOL.md §11), as the Rust facade does it.
//!
//! Each `Producer` and `Consumer` registers a record in the segment's peer table (runtime 3,
//! its role, pid, start time and channel) and writes its intents there around every claim;
//! the record is freed when the handle is closed or collected. A Python handle may be shared
//! by threads, but a record holds one intent at a time: so a handle keeps a small pool of
//! registrations ([`Peer`]) and each call borrows one for its duration ([`Lease`]). One thread
//! at a time uses one record, like one Rust handle; threads that use a handle at once each get
//! their own, like clones of a Rust handle, up to [`REGISTRATIONS_PER_HANDLE`] (see
//! [`Handle`]).
//!
//! A call that finds the channel stuck (a receive at a position a producer claimed and never
//! published, a send on a slot a consumer claimed and never freed) for `dmxp::STUCK_GRACE`
//! runs one repair pass of the core (`Segment::repair`, with `dmxp::process_alive` as the
//! liveness check); blocking calls re-check that often while stuck.

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dmxp::core::layout::{runtime, MSG_INLINE};
use dmxp::core::{
    Error as CoreError, PeerRole, PeerSlot, Received, RecvError, RepairReport, Segment, SendError,
    SendMeta,
};
use dmxp::{FutexWait, MissStreak, StuckWatch};
use self_cell::self_cell;

use crate::buffers::MessageBuf;
use crate::open::{FutexChannel, OpenChannel, Wait};
use pyo3::prelude::*;

/// The channel as one registration uses it: writing intents to its record (none when the
/// table is full, has no room, or is corrupt: the handle then works unprotected).
pub(crate) struct Peered<'a> {
    channel: FutexChannel<'a>,
    slot: Option<PeerSlot<'a>>,
}

impl Drop for Peered<'_> {
    fn drop(&mut self) {
        // A child forked after this registration holds a copy naming the parent's record:
        // freeing it would leave the parent writing intents into a record a new registration
        // may take.
        if let Some(slot) = self.slot.take() {
            slot.leave_if_mine(std::process::id());
        }
    }
}

self_cell!(
    /// A registration over the handle's open channel; dropping it frees the record.
    struct PeerCell {
        owner: Arc<OpenChannel>,

        #[covariant]
        dependent: Peered,
    }
);

/// One registration of a handle and its stuck watch, used by one thread at a time.
pub(crate) struct Peer {
    cell: PeerCell,
    stuck: StuckWatch,
    /// Non-blocking calls in a row that found nothing: the stuck check (which reads the other
    /// side's cursor) waits for a streak, as in the facade.
    misses: MissStreak,
}

impl Peer {
    /// Registers a record of `role` for the channel of `open` (PROTOCOL.md §11.3).
    fn register(open: Arc<OpenChannel>, role: PeerRole) -> Self {
        let cell = PeerCell::new(open, |open| {
            let base = open.borrow_dependent();
            let slot = Segment::attach(open.borrow_owner().region())
                .and_then(|segment| {
                    // As the facade does: dead peers' idle records are freed first.
                    let _ = segment.free_dead_records(&dmxp::ProcLiveness, std::process::id());
                    segment.register_in_namespace(
                        base.id(),
                        role,
                        std::process::id(),
                        dmxp::own_start_time(),
                        dmxp::own_pid_namespace(),
                        runtime::PYTHON,
                    )
                })
                .ok();
            let channel = match &slot {
                Some(slot) => base.clone().with_peer(slot),
                None => base.clone(),
            };
            Peered { channel, slot }
        });
        Self {
            cell,
            stuck: StuckWatch::default(),
            misses: MissStreak::default(),
        }
    }

    /// The channel, writing this registration's intents.
    pub fn channel(&self) -> &FutexChannel<'_> {
        &self.cell.borrow_dependent().channel
    }

    pub fn is_registered(&self) -> bool {
        self.cell.borrow_dependent().slot.is_some()
    }

    /// One repair pass for the channel (PROTOCOL.md §11.6).
    pub fn recover(&self) -> Result<RepairReport, CoreError> {
        let memory = self.cell.borrow_owner().borrow_owner();
        Segment::attach(memory.region())?.repair(
            self.channel(),
            &dmxp::ProcLiveness,
            std::process::id(),
            dmxp::own_start_time(),
        )
    }

    /// Unblocks `position`, held by a live but stopped `holder` (PROTOCOL.md §11.8): a whole
    /// run at once when the holder's record says it claimed one (§12.5), as the facade does.
    fn unblock(&self, position: u64, holder: PeerRole) -> bool {
        let memory = self.cell.borrow_owner().borrow_owner();
        match Segment::attach(memory.region()) {
            Ok(segment) => segment.unblock(self.channel(), position, holder),
            Err(_) => self.channel().unblock(position, holder),
        }
    }

    /// Repairs the channel if the watch says it has been stuck long enough at the position a
    /// `holder` holds: a dead holder's position after the grace period, a stopped one's after
    /// the unblock timeout (the facade's rule, `dmxp::StuckWatch`). True when something was
    /// repaired.
    fn repair_if_stuck(&mut self, holder: PeerRole) -> bool {
        self.stuck.repair_if_stuck(
            self.channel(),
            holder,
            || self.recover().is_ok_and(|report| report.repaired()),
            |position| self.unblock(position, holder),
        )
    }

    /// [`Self::repair_if_stuck`] with a stuck watch the caller keeps: for a wait that uses
    /// this registration while something else borrows it (a blob loan committing, `blob`).
    pub fn repair_watched(&self, stuck: &mut StuckWatch, holder: PeerRole) -> bool {
        stuck.repair_if_stuck(
            self.channel(),
            holder,
            || self.recover().is_ok_and(|report| report.repaired()),
            |position| self.unblock(position, holder),
        )
    }

    /// The open channel this registration belongs to (its mapping lives while this `Arc`
    /// does).
    pub fn open(&self) -> &Arc<OpenChannel> {
        self.cell.borrow_owner()
    }

    /// After a receive found nothing: repairs a position a dead producer holds at `head`.
    pub fn repair_stuck_receive(&mut self) -> bool {
        self.repair_if_stuck(PeerRole::Producer)
    }

    /// After a send found the ring full: repairs a slot a dead consumer holds at `tail`.
    pub fn repair_stuck_send(&mut self) -> bool {
        self.repair_if_stuck(PeerRole::Consumer)
    }

    /// When to wake from a wait that would last until `until`: sooner when the stuck watch is
    /// due for a look.
    fn wake_by(&self, until: Instant) -> Instant {
        self.stuck
            .next_check()
            .map_or(until, |next| next.min(until))
    }

    /// After a non-blocking receive found nothing: counts the miss, and once a streak of them
    /// has come, repairs a position a dead producer holds at `head`.
    pub fn repair_stuck_receive_after_misses(&mut self) -> bool {
        self.misses.miss() && self.repair_stuck_receive()
    }

    /// A non-blocking call that got through ends the streak of misses.
    pub fn hit(&self) {
        self.misses.hit();
    }

    /// One non-blocking send attempt, tried again once if the ring was full because of a dead
    /// consumer and has just been repaired.
    pub fn send_once<T>(
        &mut self,
        mut attempt: impl FnMut(&FutexChannel<'_>) -> Result<T, SendError>,
    ) -> Result<T, SendError> {
        let result = match attempt(self.channel()) {
            Err(SendError::Full) if self.misses.miss() && self.repair_stuck_send() => {
                attempt(self.channel())
            }
            other => other,
        };
        if result.is_ok() {
            self.misses.hit();
        }
        result
    }

    /// Sends, waiting on the futex until `until` while the ring is full and repairing it if
    /// it stays stuck; `TimedOut` when `until` has passed.
    pub fn send_until(
        &mut self,
        payload: &[u8],
        meta: &SendMeta,
        until: Instant,
    ) -> Result<u64, SendError> {
        loop {
            match self.channel().try_send(payload, meta) {
                Err(SendError::Full) => {}
                other => return other,
            }
            if self.repair_stuck_send() {
                continue;
            }
            if Instant::now() >= until {
                return Err(SendError::TimedOut);
            }
            let waiter = FutexWait::until(self.wake_by(until));
            // A run waits until all its slots are free (PROTOCOL.md §12.3).
            let slots = payload.len().div_ceil(MSG_INLINE).max(1) as u64;
            self.channel().wait_for_free_slots(slots, &waiter);
        }
    }

    /// One sleep of a blocking receive that takes its message itself (a blob received in
    /// place, `blob`): until a message may be there, `until`, or a stuck watch look is due,
    /// repairing the channel first if a dead producer holds it up. The caller tries to
    /// receive again afterwards, whatever woke it.
    pub fn wait_for_message_until(&mut self, until: Instant) {
        if self.channel().has_message() || self.repair_stuck_receive() {
            return;
        }
        if Instant::now() >= until {
            return;
        }
        let waiter = FutexWait::until(self.wake_by(until));
        self.channel().wait_for_message(&waiter);
    }

    /// Before a blocking receive sleeps: watches the head (spinning, without the GIL) for up to
    /// [`SPIN_BEFORE_SLEEP`], or until `until`; true once a message (or marker) is published
    /// there.
    pub fn spin_for_message(&self, until: Instant) -> bool {
        spin_until(until, || self.channel().has_message())
    }

    /// Before a blocking send sleeps: watches for `slots` free slots at the tail, like
    /// [`Self::spin_for_message`].
    pub fn spin_for_free_slots(&self, slots: u64, until: Instant) -> bool {
        spin_until(until, || self.channel().has_free_slots(slots))
    }

    /// One step of the wait for a claim in flight at the head (PROTOCOL.md §6.2): repairs the
    /// position if the stuck-peer rules say so, else yields the processor.
    pub fn wait_in_flight(&mut self) {
        if !self.repair_stuck_receive() {
            std::thread::yield_now();
        }
    }

    /// One non-blocking receive into `buf`. A message longer than the room offered (a run,
    /// PROTOCOL.md §12) stays in the ring while `buf` grows to its length, then is received;
    /// `BufferTooSmall` (with the buffer's cap as `available`, nothing consumed) when `buf`
    /// may not grow that far.
    pub fn try_recv(&self, buf: &mut MessageBuf) -> Result<Received, RecvError> {
        loop {
            match self.channel().try_recv(buf.room()) {
                // Each retry offers strictly more room, at most the cap: this ends.
                Err(RecvError::BufferTooSmall { needed, .. }) if !buf.grow(needed) => {
                    return Err(RecvError::BufferTooSmall {
                        needed,
                        available: buf.cap(),
                    })
                }
                Err(RecvError::BufferTooSmall { .. }) => {}
                other => return other,
            }
        }
    }

    /// One non-blocking receive straight into `dst` (memory the caller lends for this call
    /// only): `BufferTooSmall` with `dst`'s length as `available`, nothing consumed, when the
    /// message is longer.
    pub fn try_recv_into(&self, dst: &mut [u8]) -> Result<Received, RecvError> {
        self.channel().try_recv(dst)
    }

    /// Receives into `buf`, waiting on the futex until `until` while the ring is empty and
    /// repairing it if it stays stuck; `TimedOut` when `until` has passed. Lost and corrupt
    /// messages are returned as errors for the caller to count.
    pub fn recv_until(
        &mut self,
        buf: &mut MessageBuf,
        until: Instant,
    ) -> Result<Received, RecvError> {
        loop {
            match self.try_recv(buf) {
                // A claim in flight at the head is waited for like an empty ring.
                Err(RecvError::Empty | RecvError::Pending { .. }) => {}
                other => return other,
            }
            if self.repair_stuck_receive() {
                continue;
            }
            if Instant::now() >= until {
                return Err(RecvError::TimedOut);
            }
            let waiter = FutexWait::until(self.wake_by(until));
            self.channel().wait_for_message(&waiter);
        }
    }
}

/// How long a blocking call watches the ring (spinning, GIL released) before it registers as a
/// waiter and sleeps on the futex. Between two processes in a steady flow the next message
/// (or free slot) comes well within it, and is then taken without a sleep and a wake-up: a
/// system call on each side and two context switches, which cost more than the call itself
/// (and the sender's wake-up system call, since nobody is registered as waiting). Spent once
/// per blocking call, not per slice of its sleep.
pub(crate) const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(10);

/// Spins until `ready` holds (true) or [`SPIN_BEFORE_SLEEP`] has passed, or `until` (false).
fn spin_until(until: Instant, ready: impl Fn() -> bool) -> bool {
    let end = Instant::now()
        .checked_add(SPIN_BEFORE_SLEEP)
        .map_or(until, |end| end.min(until));
    loop {
        // The clock is read once per 32 looks: a look is two loads and a pause.
        for _ in 0..32 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if Instant::now() >= end {
            return ready();
        }
    }
}

/// The open channel of a `Producer` or `Consumer` and its idle registrations, or nothing once
/// closed.
///
/// Each call takes its own reference to the channel (a [`Lease`]), so `close` from another
/// thread never pulls the mapping from under a call in progress: the mapping goes when the
/// last reference does, and blocked calls notice the close between two sleeps. Records of
/// idle registrations are freed at close; a call in progress frees its own when it ends.
///
/// A handle holds at most [`REGISTRATIONS_PER_HANDLE`] records while its calls are waiting, so
/// that one handle shared by hundreds of threads cannot take the whole peer table from every
/// other handle. A call that finds them all in use waits for one to come back (GIL released,
/// until its own deadline); a call that may not wait (or whose deadline has passed) takes a
/// registration of its own for that call only, freed when it ends.
///
/// The first registration (made at open) is kept outside the lock, in `hot`: a call takes it
/// with one atomic swap and gives it back with another, so that a handle used by one thread at
/// a time (the common case) takes no lock and makes no system call per call. Calls that find
/// it taken use the pool behind the lock; it counts among the pool's `lent` registrations for
/// as long as the handle is open.
pub(crate) struct Handle {
    role: PeerRole,
    /// Whether the registration made at open got a record.
    registered: bool,
    /// The registration calls take first: a `Box<Peer>` owned by the handle while it is here,
    /// null while a call holds it and once closed (`Box::into_raw` / `Box::from_raw`; whoever
    /// swaps a non-null pointer out owns that box).
    hot: AtomicPtr<Peer>,
    /// Set by `close` before it empties `hot` and `state`; read without the lock.
    closed: AtomicBool,
    state: Mutex<Option<Pool>>,
    /// Calls asleep on `returned` (or about to be) waiting for a registration: changed under
    /// the lock, read without it when the hot registration comes back, so that nobody is
    /// signalled (a futex system call) when nobody waits.
    waiting: AtomicUsize,
    /// Signalled when a call gives its registration back and `waiting` is not zero.
    returned: Condvar,
}

/// Registrations one handle keeps for calls that can wait for one.
pub(crate) const REGISTRATIONS_PER_HANDLE: usize = 16;

/// A handle is shared by Python threads: the registrations it keeps (behind a raw pointer in
/// `Handle::hot`, which would not say so) must be `Send`.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Peer>();
};

struct Pool {
    open: Arc<OpenChannel>,
    idle: Vec<Peer>,
    /// Registrations lent to calls in progress, and the hot one wherever it is.
    lent: usize,
}

impl Handle {
    /// Opens a handle of `role` on `open`, registering its first record now (so that it is
    /// in the peer table from the start, as a Rust handle's is).
    pub fn new(open: Arc<OpenChannel>, role: PeerRole) -> Self {
        let first = Box::new(Peer::register(Arc::clone(&open), role));
        Self {
            role,
            registered: first.is_registered(),
            hot: AtomicPtr::new(Box::into_raw(first)),
            closed: AtomicBool::new(false),
            state: Mutex::new(Some(Pool {
                open,
                idle: Vec::new(),
                lent: 1,
            })),
            waiting: AtomicUsize::new(0),
            returned: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Pool>> {
        // The lock is never held across anything that can panic; recover the value anyway.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the box out of `hot`, if there is one there.
    fn swap_hot(&self, new: *mut Peer) -> Option<Box<Peer>> {
        let old = self.hot.swap(new, SeqCst);
        // SAFETY: every non-null pointer stored in `hot` comes from `Box::into_raw` (in `new`
        // and `put_hot`), and the swap gave this caller the only copy of it: it owns the box.
        (!old.is_null()).then(|| unsafe { Box::from_raw(old) })
    }

    /// The hot registration, unless another call holds it or the handle is closed.
    fn take_hot(&self) -> Option<Box<Peer>> {
        let peer = self.swap_hot(ptr::null_mut())?;
        if self.closed.load(SeqCst) {
            // Closed before `close` looked at `hot` (or a return put it back after): ours to
            // free.
            drop(peer);
            return None;
        }
        Some(peer)
    }

    /// Gives the hot registration back (or frees it if the handle was closed meanwhile), and
    /// signals a call waiting for a registration, if any.
    fn put_hot(&self, peer: Box<Peer>) {
        if self.closed.load(SeqCst) {
            drop(peer);
            return;
        }
        // Null before this swap: there is one hot registration, and this call held it.
        drop(self.swap_hot(Box::into_raw(peer)));
        // A close that set `closed` after the check above may have looked at `hot` before the
        // swap: take it back then (unless the close or another call already has). With the
        // SeqCst store of `closed` before its swap in `close`, one of the two sees the other.
        if self.closed.load(SeqCst) {
            drop(self.swap_hot(ptr::null_mut()));
        }
        // A waiter counts itself (under the lock) before it looks at `hot`; this return stored
        // `hot` before it reads the count: one of the two sees the other.
        if self.waiting.load(SeqCst) > 0 {
            let _state = self.lock();
            self.returned.notify_all();
        }
    }

    /// A registration for one call, unless closed (`Ok(None)`): the hot one or an idle one;
    /// else a new one while the handle has fewer than [`REGISTRATIONS_PER_HANDLE`]; else, once
    /// every one is in use, the next one given back, waited for (GIL released, signals checked)
    /// until `wait`'s deadline (fixed here if this is the first wait of the call), after which
    /// the call gets one of its own (so that it can still do its non-blocking part and return
    /// as a timeout would).
    pub fn lease(&self, py: Python<'_>, wait: &mut Wait) -> PyResult<Option<Lease<'_>>> {
        loop {
            if let Some(peer) = self.take_hot() {
                return Ok(Some(self.lend(Leased::Hot(peer))));
            }
            let mut state = self.lock();
            let Some(pool) = state.as_mut() else {
                return Ok(None);
            };
            if let Some(peer) = pool.idle.pop() {
                pool.lent += 1;
                return Ok(Some(self.lend(Leased::Pooled(peer))));
            }
            let full = pool.lent >= REGISTRATIONS_PER_HANDLE;
            let until = if full { wait.slice() } else { None };
            let Some(until) = until else {
                pool.lent += 1;
                let open = Arc::clone(&pool.open);
                drop(state);
                let peer = Peer::register(open, self.role);
                return Ok(Some(self.lend(Leased::Pooled(peer))));
            };
            drop(state);
            py.detach(|| {
                let state = self.lock();
                self.waiting.fetch_add(1, SeqCst);
                let none_back = state.as_ref().is_some_and(|pool| pool.idle.is_empty())
                    && self.hot.load(SeqCst).is_null();
                let state = if none_back {
                    let left = until.saturating_duration_since(Instant::now());
                    match self.returned.wait_timeout(state, left) {
                        Ok((state, _)) => state,
                        Err(poisoned) => poisoned.into_inner().0,
                    }
                } else {
                    state
                };
                self.waiting.fetch_sub(1, SeqCst);
                drop(state);
            });
            py.check_signals()?;
        }
    }

    fn lend(&self, peer: Leased) -> Lease<'_> {
        Lease {
            handle: self,
            peer: Some(peer),
        }
    }

    /// The channel (unregistered: for reading its cursors), unless closed.
    pub fn get(&self) -> Option<Arc<OpenChannel>> {
        self.lock().as_ref().map(|pool| Arc::clone(&pool.open))
    }

    pub fn is_open(&self) -> bool {
        !self.closed.load(SeqCst)
    }

    /// True when the handle holds a peer record (taken at open).
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// Drops the channel and the idle registrations (outside the lock).
    pub fn close(&self) {
        self.closed.store(true, SeqCst);
        drop(self.swap_hot(ptr::null_mut()));
        let taken = self.lock().take();
        drop(taken);
        // Calls waiting for a registration see the close now, not a slice later.
        let _state = self.lock();
        self.returned.notify_all();
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        drop(self.swap_hot(ptr::null_mut()));
    }
}

/// A registration borrowed from a [`Handle`] for one call; given back when dropped (or freed,
/// if the handle was closed meanwhile).
pub(crate) struct Lease<'h> {
    handle: &'h Handle,
    peer: Option<Leased>,
}

/// The registration a [`Lease`] holds, and where it goes back to.
enum Leased {
    /// The handle's hot registration (back to `Handle::hot`).
    Hot(Box<Peer>),
    /// One of the pool's (back to the pool, or freed).
    Pooled(Peer),
}

impl std::ops::Deref for Lease<'_> {
    type Target = Peer;

    fn deref(&self) -> &Peer {
        match self.peer.as_ref() {
            Some(Leased::Hot(peer)) => peer,
            Some(Leased::Pooled(peer)) => peer,
            None => unreachable!("a lease holds its peer until dropped"),
        }
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut Peer {
        match self.peer.as_mut() {
            Some(Leased::Hot(peer)) => peer,
            Some(Leased::Pooled(peer)) => peer,
            None => unreachable!("a lease holds its peer until dropped"),
        }
    }
}

impl<'h> Lease<'h> {
    /// Takes the registration out of the handle's hands for longer than one call: a blob loan
    /// or a received blob (`blob`) keeps the registration whose record owns its block until
    /// it ends, then gives it back with [`Handle::restore`].
    pub fn detach(mut self) -> Detached {
        match self.peer.take() {
            Some(peer) => Detached(peer),
            None => unreachable!("a lease holds its peer until dropped"),
        }
    }
}

/// A registration taken from a handle by [`Lease::detach`]: owned (no borrow of the handle),
/// so that a Python object can keep it. Given back with [`Handle::restore`]; dropped instead,
/// its record is freed (and the handle's count of registrations lent is not given back).
pub(crate) struct Detached(Leased);

impl std::ops::Deref for Detached {
    type Target = Peer;

    fn deref(&self) -> &Peer {
        match &self.0 {
            Leased::Hot(peer) => peer,
            Leased::Pooled(peer) => peer,
        }
    }
}

impl std::ops::DerefMut for Detached {
    fn deref_mut(&mut self) -> &mut Peer {
        match &mut self.0 {
            Leased::Hot(peer) => peer,
            Leased::Pooled(peer) => peer,
        }
    }
}

impl Handle {
    /// Gives back a registration [`Lease::detach`] took (kept for the next call, or freed if
    /// the handle was closed meanwhile, as a lease is when it ends).
    pub fn restore(&self, peer: Detached) {
        drop(self.lend(peer.0));
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let peer = match self.peer.take() {
            None => return,
            Some(Leased::Hot(peer)) => {
                self.handle.put_hot(peer);
                return;
            }
            Some(Leased::Pooled(peer)) => peer,
        };
        let mut state = self.handle.lock();
        match state.as_mut() {
            // Kept for the next call, up to the handle's share; one a call took beyond it
            // (when all were in use) is freed.
            Some(pool) => {
                pool.lent -= 1;
                if pool.idle.len() + pool.lent < REGISTRATIONS_PER_HANDLE {
                    pool.idle.push(peer);
                    // Waiters count themselves under the lock: nobody to signal (no system
                    // call) when the count is zero.
                    let waiting = self.handle.waiting.load(SeqCst) > 0;
                    drop(state);
                    if waiting {
                        self.handle.returned.notify_one();
                    }
                } else {
                    drop(state);
                    drop(peer);
                }
            }
            // Closed meanwhile: free the record (outside the lock).
            None => {
                drop(state);
                drop(peer);
            }
        }
    }
}
