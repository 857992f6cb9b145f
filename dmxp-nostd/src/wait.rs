//! How a blocked sender or receiver waits, and how it is woken.
//!
//! The core never calls the OS. A blocking operation announces itself in the channel's waiter
//! count, re-checks the ring, then hands a futex-compatible 32-bit word and the value it saw to
//! a [`WaitStrategy`]. Senders and receivers that make progress bump the word and call
//! [`WaitStrategy::wake_all`] only when the waiter count is non-zero, so nobody pays for a wake
//! when nobody waits. The std facade supplies a futex strategy; [`SpinWait`] needs nothing.

use crate::sync::{spin_loop, AtomicU32, Ordering};

/// Whether a wait ended by a wake-up (or spuriously) or by the strategy's own deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Woken, or returned early; the caller re-checks the ring.
    Woken,
    /// The strategy's deadline passed.
    TimedOut,
}

/// A way to sleep on a 32-bit word in shared memory and to wake its sleepers.
pub trait WaitStrategy: Clone {
    /// Waits while `*word == expected`, until woken, or until this strategy's deadline (if it
    /// has one) passes. May return early; callers loop.
    fn wait(&self, word: &AtomicU32, expected: u32) -> WaitOutcome;
    /// Wakes every waiter sleeping on `word`.
    fn wake_all(&self, word: &AtomicU32);
}

/// Busy-waits for a bounded number of spins, then returns so the caller re-checks. Waking is
/// free: spinners watch the word. It has no deadline.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpinWait;

impl SpinWait {
    const SPINS: u32 = 1 << 10;
}

impl WaitStrategy for SpinWait {
    fn wait(&self, word: &AtomicU32, expected: u32) -> WaitOutcome {
        for _ in 0..Self::SPINS {
            if word.load(Ordering::Acquire) != expected {
                break;
            }
            spin_loop();
        }
        WaitOutcome::Woken
    }

    fn wake_all(&self, _word: &AtomicU32) {}
}
