//! Waits an asyncio loop polls (PROTOCOL.md §7.4): the facade's event-loop wait (feature
//! `wait-fd`, `dmxp::Consumer::arm_wait`), for `receive_async`, `send_async` and `async for`
//! (python/dmxp/_aio.py, which runs the loop).
//!
//! The Python handles send and receive through their own core channel and peer records
//! (`peer`); the arming is done by a facade handle of the same channel, opened on the first
//! async wait that has to wait and kept until `close()`. It owns the `io_uring` whose fd the
//! loop watches (`loop.add_reader`), and it is what counts as the waiter (in the channel's
//! `*_waiters` word, and in its own peer record while armed, PROTOCOL.md §11.9): senders and
//! receivers of every client wake it as they wake a blocked thread. A message is taken only by
//! the non-waiting attempt that starts each round (`_try_receive`), never by the wait, so a
//! cancelled wait consumes nothing.
//!
//! One async wait per handle at a time: a handle has one ring, and its fd may be given to one
//! `add_reader` only. [`EventWait::begin`] claims the handle for one wait (BusyError when a
//! wait of another coroutine or thread holds it) and [`EventWait::end`] gives it back; between
//! the two, the wait arms and disarms once per round.
//!
//! Where `io_uring` futex waits are not available (Linux before 6.7, io_uring disabled or
//! filtered), arming reports "poll" and the loop re-checks the ring at a bounded interval
//! instead, without registering as a waiter (PROTOCOL.md §7.4, fallback); so does every wait
//! when `DMXP_ASYNC_POLL=1` is set, or on a handle told to (`use_async_polling(True)`).

use std::sync::{Mutex, MutexGuard, OnceLock};

use dmxp::{ArmedWait, ErrorKind, SharedMemoryAllocator};
use pyo3::prelude::*;

use crate::errors;

/// A facade handle that can arm an event-loop wait.
pub(crate) trait Waiter: Send + Sized + 'static {
    fn open(allocator: &SharedMemoryAllocator, channel_id: u32) -> dmxp::Result<Self>;
    /// Arms a wait: for a message (a consumer), or for room for `len` bytes (a producer).
    fn arm(&mut self, len: usize) -> dmxp::Result<ArmedWait>;
    fn disarm(&mut self);
}

impl Waiter for dmxp::Consumer {
    fn open(allocator: &SharedMemoryAllocator, channel_id: u32) -> dmxp::Result<Self> {
        allocator.consumer(channel_id)
    }

    fn arm(&mut self, _len: usize) -> dmxp::Result<ArmedWait> {
        self.arm_wait()
    }

    fn disarm(&mut self) {
        self.disarm_wait();
    }
}

impl Waiter for dmxp::Producer {
    fn open(allocator: &SharedMemoryAllocator, channel_id: u32) -> dmxp::Result<Self> {
        allocator.producer(channel_id)
    }

    fn arm(&mut self, len: usize) -> dmxp::Result<ArmedWait> {
        self.arm_wait(len)
    }

    fn disarm(&mut self) {
        self.disarm_wait();
    }
}

/// What one arming found.
pub(crate) enum Armed {
    /// Try the operation again now.
    Ready,
    /// Wait until the fd is readable or this many seconds pass, then disarm and try again.
    Readable(i32, f64),
    /// No `io_uring` futex waits here (or polling was asked for): re-check at an interval.
    Poll,
}

impl<'py> IntoPyObject<'py> for Armed {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    /// `None` (ready), `(fd, seconds)` (readable), `False` (poll).
    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Armed::Ready => Ok(py.None().into_bound(py)),
            Armed::Readable(fd, secs) => Ok((fd, secs).into_pyobject(py)?.into_any()),
            Armed::Poll => Ok(false.into_pyobject(py)?.to_owned().into_any()),
        }
    }
}

/// True when `DMXP_ASYNC_POLL` is set to something other than `0` or the empty string (read
/// once per process), as for the Rust client's async waits.
fn polling_forced_by_env() -> bool {
    static FORCED: OnceLock<bool> = OnceLock::new();
    *FORCED.get_or_init(|| {
        std::env::var_os("DMXP_ASYNC_POLL").is_some_and(|v| !v.is_empty() && v != "0")
    })
}

/// The async-wait state of one Python handle.
pub(crate) struct EventWait<W> {
    what: &'static str,
    channel_id: u32,
    state: Mutex<State<W>>,
}

struct State<W> {
    /// What the waiter is opened from; `None` once the handle is closed.
    allocator: Option<SharedMemoryAllocator>,
    /// The facade handle, opened by the first arming.
    waiter: Option<W>,
    /// The process `waiter` and `busy` belong to (a child forked after lets go of both).
    pid: u32,
    /// An async wait holds the handle ([`EventWait::begin`] to [`EventWait::end`]).
    busy: bool,
    /// Told to poll (`use_async_polling(True)`).
    force_polling: bool,
    /// `io_uring` futex waits failed here: poll from now on.
    unavailable: bool,
}

impl<W: Waiter> EventWait<W> {
    pub fn new(what: &'static str, channel_id: u32, allocator: SharedMemoryAllocator) -> Self {
        Self {
            what,
            channel_id,
            state: Mutex::new(State {
                allocator: Some(allocator),
                waiter: None,
                pid: std::process::id(),
                busy: false,
                force_polling: false,
                unavailable: false,
            }),
        }
    }

    /// The state, forgotten first if it was inherited across `fork` (the parent's ring and
    /// the parent's wait are the parent's). What the caller must drop outside the lock is
    /// put in `dropped`.
    fn lock(&self, dropped: &mut Option<W>) -> MutexGuard<'_, State<W>> {
        // Nothing run under the lock panics; recover the value anyway.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let pid = std::process::id();
        if state.pid != pid {
            // Dropping an inherited facade handle touches neither the parent's ring nor its
            // peer record (both check the pid); it closes this process's copy of the fd.
            *dropped = state.waiter.take();
            state.busy = false;
            state.pid = pid;
        }
        state
    }

    fn polls(state: &State<W>) -> bool {
        state.force_polling || state.unavailable || polling_forced_by_env()
    }

    /// Claims the handle for one async wait: BusyError while another holds it, ClosedError
    /// once closed.
    pub fn begin(&self, py: Python<'_>) -> PyResult<()> {
        let mut dropped = None;
        let result = {
            let mut state = self.lock(&mut dropped);
            if state.allocator.is_none() {
                Err(errors::closed(py, self.what))
            } else if state.busy {
                Err(errors::new_error(
                    py,
                    "BusyError",
                    format!(
                        "{} of channel {}: another coroutine (or thread) is waiting on this \
                         handle; one async wait per handle at a time",
                        self.what, self.channel_id
                    ),
                    &[],
                ))
            } else {
                state.busy = true;
                Ok(())
            }
        };
        release(py, dropped);
        result
    }

    /// Arms one round of the wait (see [`Armed`]); `len` is the message's length for a
    /// producer. Errors other than `io_uring`'s own (which turn into polling) are raised.
    pub fn arm(&self, py: Python<'_>, len: usize) -> PyResult<Armed> {
        let mut dropped = None;
        let result = self.arm_locked(py, len, &mut dropped);
        release(py, dropped);
        result
    }

    fn arm_locked(&self, py: Python<'_>, len: usize, dropped: &mut Option<W>) -> PyResult<Armed> {
        let mut state = self.lock(dropped);
        let Some(allocator) = &state.allocator else {
            return Err(errors::closed(py, self.what));
        };
        if Self::polls(&state) {
            return Ok(Armed::Poll);
        }
        if state.waiter.is_none() {
            let waiter =
                W::open(allocator, self.channel_id).map_err(|e| errors::from_facade(py, &e))?;
            state.waiter = Some(waiter);
        }
        let waiter = state.waiter.as_mut().expect("opened above");
        match waiter.arm(len) {
            Ok(ArmedWait::Ready) => Ok(Armed::Ready),
            Ok(ArmedWait::Readable { fd, timeout }) => {
                Ok(Armed::Readable(fd, timeout.as_secs_f64()))
            }
            // io_uring could not be set up, lacks the opcode, or refused the wait: poll from
            // now on; the facade handle (its record, its ring) is let go.
            Err(e) if matches!(e.kind(), ErrorKind::Io(_)) => {
                state.unavailable = true;
                *dropped = state.waiter.take();
                Ok(Armed::Poll)
            }
            Err(e) => Err(errors::from_facade(py, &e)),
        }
    }

    /// Ends the round [`Self::arm`] armed: reaps the ring, stops counting the waiter.
    pub fn disarm(&self, py: Python<'_>) {
        let mut dropped = None;
        {
            let mut state = self.lock(&mut dropped);
            if let Some(waiter) = state.waiter.as_mut() {
                waiter.disarm();
            }
        }
        release(py, dropped);
    }

    /// Gives the handle back after [`Self::begin`] (disarming first); if it was closed
    /// meanwhile, lets go of the facade handle now.
    pub fn end(&self, py: Python<'_>) {
        let mut dropped = None;
        {
            let mut state = self.lock(&mut dropped);
            if let Some(waiter) = state.waiter.as_mut() {
                waiter.disarm();
            }
            state.busy = false;
            if state.allocator.is_none() {
                dropped = dropped.or(state.waiter.take());
            }
        }
        release(py, dropped);
    }

    /// At `close()`: no new waits; the facade handle goes now, or when the wait holding it
    /// ends (its fd may still be registered with that wait's loop).
    pub fn close(&self, py: Python<'_>) {
        let mut dropped = None;
        let allocator = {
            let mut state = self.lock(&mut dropped);
            if !state.busy {
                dropped = dropped.or(state.waiter.take());
            }
            state.allocator.take()
        };
        drop(allocator);
        release(py, dropped);
    }

    /// `use_async_polling(yes)`: polling from now on (the facade handle goes, unless a wait
    /// holds it), or `io_uring` again where available.
    pub fn set_force_polling(&self, py: Python<'_>, yes: bool) {
        let mut dropped = None;
        {
            let mut state = self.lock(&mut dropped);
            state.force_polling = yes;
            if yes && !state.busy {
                dropped = dropped.or(state.waiter.take());
            }
        }
        release(py, dropped);
    }

    /// `"polling"`, `"io_uring"`, or `None` before the first wait that had to wait.
    pub fn mode(&self, py: Python<'_>) -> Option<&'static str> {
        let mut dropped = None;
        let mode = {
            let state = self.lock(&mut dropped);
            if Self::polls(&state) {
                Some("polling")
            } else if state.waiter.is_some() {
                Some("io_uring")
            } else {
                None
            }
        };
        release(py, dropped);
        mode
    }
}

/// Drops a facade handle without the GIL (closing its ring cancels and reaps a parked wait,
/// which takes at most a few milliseconds) and outside the state's lock.
fn release<W: Waiter>(py: Python<'_>, dropped: Option<W>) {
    if let Some(waiter) = dropped {
        py.detach(move || drop(waiter));
    }
}

/// `dmxp.io_uring_futex_waits()`: `IORING_OP_FUTEX_WAIT` operations this process submitted.
#[pyfunction]
pub(crate) fn io_uring_futex_waits() -> u64 {
    dmxp::io_uring_futex_waits()
}

/// `dmxp.io_uring_futex_wakeups()`: of those, the ones a sender's or receiver's wake
/// completed (not the word having moved already, nor a cancellation).
#[pyfunction]
pub(crate) fn io_uring_futex_wakeups() -> u64 {
    dmxp::io_uring_futex_wakeups()
}
