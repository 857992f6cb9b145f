//! Blocking across processes: a futex [`WaitStrategy`] for the core's wait words.
//!
//! The words live in the shared segment (the channel entry's `not_empty_seq` / `not_full_seq`),
//! so the futex calls use `Flags::empty()`, not `FUTEX_PRIVATE_FLAG`: a private futex is keyed
//! by the process's own address space and would never see a wake from another process. The
//! kernel keys a shared futex by the backing page, so it works even when two processes (or two
//! mappings in one process) see the segment at different addresses.
//!
//! The core calls [`WaitStrategy::wake_all`] only when a waiter has registered, so a send or
//! receive with nobody waiting makes no system call; [`futex_wake_calls`] counts the wake
//! calls this process made, which lets tests and benchmarks check exactly that.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dmxp_nostd::{WaitOutcome, WaitStrategy};
use rustix::io::Errno;
use rustix::thread::futex;

static WAKE_CALLS: AtomicU64 = AtomicU64::new(0);
static WAIT_CALLS: AtomicU64 = AtomicU64::new(0);

/// Futex wake system calls made by this process so far (every [`FutexWait`]).
#[must_use]
pub fn futex_wake_calls() -> u64 {
    WAKE_CALLS.load(Ordering::Relaxed)
}

/// Futex wait system calls made by this process so far (every [`FutexWait`]).
#[must_use]
pub fn futex_wait_calls() -> u64 {
    WAIT_CALLS.load(Ordering::Relaxed)
}

/// Sleeps on a shared futex word, optionally until a deadline.
#[derive(Clone, Copy, Debug, Default)]
pub struct FutexWait {
    deadline: Option<Instant>,
}

impl FutexWait {
    /// Longest single futex sleep; the blocking loop re-checks the ring after each.
    pub const MAX_SLICE: Duration = Duration::from_millis(100);

    /// Waits without a deadline.
    #[must_use]
    pub const fn new() -> Self {
        Self { deadline: None }
    }

    /// Waits until `deadline` at the latest, then reports [`WaitOutcome::TimedOut`].
    #[must_use]
    pub const fn until(deadline: Instant) -> Self {
        Self {
            deadline: Some(deadline),
        }
    }

    /// Waits for `timeout` from now at the latest.
    #[must_use]
    pub fn with_timeout(timeout: Duration) -> Self {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => Self::until(deadline),
            // Too far to represent: no deadline.
            None => Self::new(),
        }
    }

    /// The deadline, if any.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

impl WaitStrategy for FutexWait {
    fn wait(&self, word: &AtomicU32, expected: u32) -> WaitOutcome {
        // Sleep in bounded slices even without a deadline, so a waker that breaks the wake
        // rule (or dies between publishing and waking) delays us, never strands us.
        let slice = match self.deadline {
            None => Self::MAX_SLICE,
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return WaitOutcome::TimedOut;
                }
                (deadline - now).min(Self::MAX_SLICE)
            }
        };
        // FUTEX_WAIT takes a relative timeout; a slice of at most 100 ms always converts.
        let timeout = futex::Timespec::try_from(slice).ok();
        WAIT_CALLS.fetch_add(1, Ordering::Relaxed);
        match futex::wait(word, futex::Flags::empty(), expected, timeout.as_ref()) {
            Err(Errno::TIMEDOUT) if self.deadline.is_some_and(|d| Instant::now() >= d) => {
                WaitOutcome::TimedOut
            }
            // Woken, the word already changed (EAGAIN), a signal (EINTR), or a spurious return:
            // the caller re-checks the ring either way.
            _ => WaitOutcome::Woken,
        }
    }

    fn wake_all(&self, word: &AtomicU32) {
        WAKE_CALLS.fetch_add(1, Ordering::Relaxed);
        // Wake every sleeper (the count is an i32 in the kernel). A failure here could only be
        // EFAULT on an address that is not mapped, which a live channel rules out.
        let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
    }
}

/// The end of one wait: `until` (the caller's deadline or the stuck watch's next look), but
/// never more than [`FutexWait::MAX_SLICE`] from `now`, so that a waker that died between
/// publishing and waking delays a waiter, never strands it (PROTOCOL.md §7.3).
#[cfg(feature = "wait-fd")]
pub(crate) fn slice_end(until: Option<Instant>, now: Instant) -> Instant {
    let slice = now + FutexWait::MAX_SLICE;
    until.map_or(slice, |until| until.min(slice))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn wait_returns_timed_out_after_the_deadline() {
        let word = AtomicU32::new(0);
        let strategy = FutexWait::with_timeout(Duration::from_millis(20));
        // Loop as a caller would: spurious returns are allowed, but the deadline must end it.
        let mut outcome = WaitOutcome::Woken;
        for _ in 0..1000 {
            outcome = strategy.wait(&word, 0);
            if outcome == WaitOutcome::TimedOut {
                break;
            }
        }
        assert_eq!(outcome, WaitOutcome::TimedOut);
        assert!(Instant::now() >= strategy.deadline().unwrap());
    }

    #[test]
    fn wait_returns_at_once_when_the_word_differs() {
        let word = AtomicU32::new(5);
        // Without a deadline this would sleep forever if the value check were wrong.
        assert_eq!(FutexWait::new().wait(&word, 4), WaitOutcome::Woken);
    }

    #[test]
    fn wake_all_releases_a_sleeper() {
        let word = Arc::new(AtomicU32::new(0));
        let sleeper = {
            let word = Arc::clone(&word);
            std::thread::spawn(move || {
                while word.load(Ordering::Acquire) == 0 {
                    FutexWait::new().wait(&word, 0);
                }
            })
        };
        word.store(1, Ordering::Release);
        FutexWait::new().wake_all(&word);
        sleeper.join().unwrap();
    }
}
