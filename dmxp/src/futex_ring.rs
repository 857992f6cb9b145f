//! A futex wait an event loop can poll (feature `wait-fd`; PROTOCOL.md §7.4).
//!
//! A [`FutexRing`] is an `io_uring` that holds at most one `IORING_OP_FUTEX_WAIT` on a
//! channel's wait word. Its fd turns readable when that wait completes (a sender or receiver
//! woke the word, or the word had already moved), so any reactor can wait for it: tokio's
//! `AsyncFd` ([`crate::Consumer::receive_async`]), Python's `loop.add_reader`, an epoll loop of
//! the caller's own ([`crate::Consumer::arm_wait`]).
//!
//! The ring is set up without SQPOLL and without DEFER_TASKRUN: completions must be posted
//! without our entering the ring, so that the fd turns readable on its own.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dmxp_nostd::{DetachedRegistration, PeerRole, WaitRegistration};
use io_uring::{opcode, types, IoUring, Probe};
use rustix::io::Errno;

use crate::handle::{FutexChannel, HandleCell};
use crate::recovery::StuckWatch;

static SUBMITTED: AtomicU64 = AtomicU64::new(0);
static WOKEN: AtomicU64 = AtomicU64::new(0);

/// `IORING_OP_FUTEX_WAIT` operations this process has submitted so far (waits that found the
/// ring still not ready after registering; a wait left parked and reused is counted once).
///
/// ```
/// // Nothing has waited through io_uring in this process yet.
/// assert_eq!(dmxp::io_uring_futex_waits(), 0);
/// ```
#[must_use]
pub fn io_uring_futex_waits() -> u64 {
    SUBMITTED.load(Ordering::Relaxed)
}

/// Of [`io_uring_futex_waits`], those completed by a wake-up (result 0), as opposed to the
/// word having changed before the kernel queued the wait (`EAGAIN`) or a cancellation: a
/// count that grows only if senders' `futex_wake` reaches these waits.
///
/// ```
/// assert_eq!(dmxp::io_uring_futex_wakeups(), 0);
/// ```
#[must_use]
pub fn io_uring_futex_wakeups() -> u64 {
    WOKEN.load(Ordering::Relaxed)
}

/// futex2 flag: the word is 32 bits. (Not `FUTEX2_PRIVATE`: the word is shared across
/// processes, PROTOCOL.md §7.3.)
const FUTEX2_SIZE_U32: u32 = 0x02;

/// Wake whatever bitset the waker names (`futex_wake` names all of them).
const FUTEX_BITSET_MATCH_ANY: u64 = 0xFFFF_FFFF;

/// Entries of each queue: one futex wait and one cancel at most are in flight.
const RING_ENTRIES: u32 = 4;

/// An `io_uring` holding at most one futex wait on a wait word.
///
/// The word must stay mapped while a wait is in flight: the owner drops the ring (which
/// cancels and reaps the wait) before it lets go of the mapping.
pub(crate) struct FutexRing {
    ring: IoUring,
    /// The process that set it up (a forked child must not use its parent's ring).
    pid: u32,
    /// `user_data` of the futex wait submitted and not reaped yet.
    in_flight: Option<u64>,
    next_user_data: u64,
}

impl AsRawFd for FutexRing {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

impl FutexRing {
    /// A ring, if the kernel has `io_uring` and `IORING_OP_FUTEX_WAIT` (Linux 6.7 or later).
    pub(crate) fn new() -> io::Result<Self> {
        let ring = IoUring::new(RING_ENTRIES)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::FutexWait::CODE) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel has no IORING_OP_FUTEX_WAIT (Linux 6.7 or later)",
            ));
        }
        Ok(Self {
            ring,
            pid: std::process::id(),
            in_flight: None,
            next_user_data: 1,
        })
    }

    /// True when this process set the ring up (false in a child forked after).
    pub(crate) fn is_own(&self) -> bool {
        self.pid == std::process::id()
    }

    /// True while a submitted wait has not been reaped.
    pub(crate) fn is_waiting(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Queues a futex wait on `word` while it holds `observed`, unless one is in flight
    /// already (it was queued earlier, so any wake issued from now on completes it). True when
    /// a wait has completed already (the word had moved): look at the ring again.
    pub(crate) fn submit_wait(&mut self, word: &AtomicU32, observed: u32) -> io::Result<bool> {
        if self.reap()? {
            return Ok(true);
        }
        if self.in_flight.is_some() {
            return Ok(false);
        }
        let user_data = self.next_user_data;
        self.next_user_data = self.next_user_data.wrapping_add(1).max(1);
        let entry = opcode::FutexWait::new(
            word.as_ptr().cast_const(),
            u64::from(observed),
            FUTEX_BITSET_MATCH_ANY,
            FUTEX2_SIZE_U32,
        )
        .build()
        .user_data(user_data);
        // SAFETY: the entry names the futex word by address. The kernel reads it once, while
        // issuing the wait inside the `submit` below, when `word` is a live reference into the
        // owner's mapping; afterwards a queued futex wait is found by its futex key (for a
        // shared mapping: the backing object and the offset), never by dereferencing the
        // address again. Still, the mapping outlives the operation: the owner drops this ring
        // (which cancels and reaps the wait, `Drop for FutexRing`) before it releases its share
        // of the mapping. No buffer of ours is handed over.
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        self.ring.submit()?;
        SUBMITTED.fetch_add(1, Ordering::Relaxed);
        self.in_flight = Some(user_data);
        // A word that had already changed completes at once (-EAGAIN).
        self.reap()
    }

    /// Reaps every posted completion; true when one was the wait in flight (which is then
    /// over). A result other than "woken" (0), "the word had changed" (`EAGAIN`), `EINTR` or
    /// `ECANCELED` means the kernel refused the wait: an error, so that the owner polls
    /// instead of spinning.
    pub(crate) fn reap(&mut self) -> io::Result<bool> {
        let mut completed = false;
        let mut refused = None;
        for cqe in self.ring.completion() {
            if Some(cqe.user_data()) != self.in_flight {
                continue; // a cancel's own completion, or a stale one
            }
            self.in_flight = None;
            completed = true;
            let result = cqe.result();
            if result == 0 {
                WOKEN.fetch_add(1, Ordering::Relaxed);
            }
            if result < 0
                && ![Errno::AGAIN, Errno::INTR, Errno::CANCELED, Errno::TIMEDOUT]
                    .contains(&Errno::from_raw_os_error(-result))
            {
                refused = Some(io::Error::from_raw_os_error(-result));
            }
        }
        match refused {
            Some(error) => Err(error),
            None => Ok(completed),
        }
    }
}

impl Drop for FutexRing {
    fn drop(&mut self) {
        // A ring inherited across fork is the parent's: its wait is the parent's to cancel.
        let Some(user_data) = self.in_flight.filter(|_| self.is_own()) else {
            return;
        };
        let cancel = opcode::AsyncCancel::new(user_data).build().user_data(0);
        // SAFETY: a cancel names its target by `user_data` and hands the kernel no memory.
        if unsafe { self.ring.submission().push(&cancel) }.is_err() {
            return;
        }
        // A futex wait is cancelled at once; its -ECANCELED completion is posted while we
        // wait in the ring. Each wait is bounded (10 ms), and so is the loop: never a hang.
        let timeout = types::Timespec::new().nsec(10_000_000);
        let args = types::SubmitArgs::new().timespec(&timeout);
        for _ in 0..8 {
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(Errno::TIME.raw_os_error()) => {}
                Err(_) => break,
            }
            match self.reap() {
                Ok(true) | Err(_) => break,
                Ok(false) if self.in_flight.is_none() => break,
                Ok(false) => {}
            }
        }
    }
}

/// What [`crate::Consumer::arm_wait`] and [`crate::Producer::arm_wait`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArmedWait {
    /// Do not wait: the ring was ready when the wait was armed (a message, or the free slots
    /// asked for), or the word moved meanwhile. Try the operation again.
    Ready,
    /// Wait until `fd` is readable or `timeout` has passed, whichever is first, then call
    /// `disarm_wait` and try the operation again. The fd is the handle's own: the same number
    /// for each wait, open until the handle drops; do not read it or close it. The timeout is
    /// at most [`FutexWait::MAX_SLICE`](crate::FutexWait::MAX_SLICE), sooner while the handle
    /// watches a stuck position: a waker that died between publishing and waking, or a peer
    /// that died holding the position, delays the loop, never strands it (PROTOCOL.md §7.3).
    Readable {
        /// The handle's `io_uring` fd; readable when the wait completed.
        fd: RawFd,
        /// The longest the loop should wait before trying again.
        timeout: Duration,
    },
}

/// The wait a handle's owner armed for an event loop of its own, and the ring it waits on.
#[derive(Default)]
pub(crate) struct EventWait {
    ring: Option<FutexRing>,
    /// The registration of the armed wait, counted until [`Self::disarm`].
    armed: Option<DetachedRegistration>,
}

impl EventWait {
    /// What every handle's `arm_wait` does: repairs a channel stuck on a dead `holder` (then
    /// `Ready`), checks the mapping still holds the wait word, and arms the wait `register`
    /// makes, for at most one slice (§7.3, sooner while `stuck` watches a position).
    pub(crate) fn arm_handle<'a>(
        &mut self,
        cell: &'a HandleCell,
        stuck: &StuckWatch,
        holder: PeerRole,
        register: impl FnOnce(&FutexChannel<'a>) -> WaitRegistration<'a>,
    ) -> crate::Result<ArmedWait> {
        if cell.repair_if_stuck(stuck, holder) {
            return Ok(ArmedWait::Ready);
        }
        // The wait word lives in the segment: a shrunk one is reported, not touched.
        cell.check_size()?;
        let now = Instant::now();
        let timeout = crate::wait::slice_end(stuck.next_check(), now) - now;
        let channel = cell.channel();
        Ok(self.arm(channel, timeout, || register(channel))?)
    }

    /// Arms a wait registered by `register` (unless the wait armed before is still in flight:
    /// it is kept). Sets up the ring on first use.
    fn arm<'a>(
        &mut self,
        channel: &FutexChannel<'a>,
        timeout: Duration,
        register: impl FnOnce() -> WaitRegistration<'a>,
    ) -> io::Result<ArmedWait> {
        self.forget_inherited();
        let ring = match &mut self.ring {
            Some(ring) => ring,
            none => none.insert(FutexRing::new()?),
        };
        let in_flight = !ring.reap()? && ring.is_waiting();
        if let Some(armed) = self.armed {
            if in_flight {
                // Queued after this registration counted us: any wake since completes it.
                return Ok(ArmedWait::Readable {
                    fd: ring.as_raw_fd(),
                    timeout,
                });
            }
            self.armed = None;
            drop(channel.reattach(armed));
        }
        let registration = register();
        if registration.is_ready()
            || ring.submit_wait(registration.word(), registration.observed())?
        {
            return Ok(ArmedWait::Ready);
        }
        self.armed = Some(registration.detach());
        Ok(ArmedWait::Readable {
            fd: ring.as_raw_fd(),
            timeout,
        })
    }

    /// Reaps what the ring posted and undoes the armed wait's registration. A wait still in
    /// flight stays parked on the ring, for the next [`Self::arm`] to reuse.
    pub(crate) fn disarm(&mut self, channel: &FutexChannel<'_>) {
        self.forget_inherited();
        if let Some(ring) = &mut self.ring {
            // A refused wait is reported by the next arm's reap.
            let _ = ring.reap();
        }
        if let Some(armed) = self.armed.take() {
            drop(channel.reattach(armed));
        }
    }

    /// A ring and registration inherited across `fork` are the parent's: the child lets go of
    /// its copy of the fd and leaves the parent's count alone.
    fn forget_inherited(&mut self) {
        if self.ring.as_ref().is_some_and(|ring| !ring.is_own()) {
            self.ring = None;
            self.armed = None;
        }
    }
}
