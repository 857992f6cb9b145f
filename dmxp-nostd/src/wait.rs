//! How a blocked sender or receiver waits, and how it is woken.
//!
//! The core never calls the OS. A blocking operation announces itself in the channel's waiter
//! count, re-checks the ring, then hands a futex-compatible 32-bit word and the value it saw to
//! a [`WaitStrategy`]. Senders and receivers that make progress bump the word and call
//! [`WaitStrategy::wake_all`] only when the waiter count is non-zero, so nobody pays for a wake
//! when nobody waits. The std facade supplies a futex strategy; [`SpinWait`] needs nothing.
//!
//! A blocking wait and an event loop's wait share one registration ([`WaitRegistration`],
//! PROTOCOL.md §7.2 and §7.4): the first sleeps through a [`WaitStrategy`]; the second submits
//! a futex wait on [`WaitRegistration::word`] to its `io_uring` and polls the ring's fd, keeping
//! the registration alive until the wait completes or is abandoned.

use crate::layout::{peer_waiting, AtomicPeerRecord};
use crate::sync::{fence, spin_loop, AtomicU32, Ordering};

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

/// A handle counted as a waiter on one of a channel's wait words (PROTOCOL.md §7.2, §7.4),
/// made by [`Channel::register_for_message`](crate::Channel::register_for_message) or
/// [`Channel::register_for_free_slots`](crate::Channel::register_for_free_slots).
///
/// While it lives, wakers bump [`Self::word`] and wake its sleepers after every publish (or
/// free). Dropping it takes the handle out of the count exactly once: when the handle's peer
/// record names the count (§11.9), whoever wins the record's `waiting` word back to 0 (this
/// guard, or a peer that freed the record judging us dead) does the decrement, never both.
///
/// Sleep only when [`Self::is_ready`] is false, and only while the word still holds
/// [`Self::observed`]: a futex wait with that value cannot miss a wake issued after the
/// registration (the fence argument of §7.2).
#[must_use = "dropping the registration at once undoes it: sleep on its word first"]
pub struct WaitRegistration<'a> {
    word: &'a AtomicU32,
    waiters: &'a AtomicU32,
    record: Option<(&'a AtomicPeerRecord, u32)>,
    /// The count this is ([`peer_waiting::NOT_EMPTY`] or [`peer_waiting::NOT_FULL`]).
    kind: u32,
    observed: u32,
    ready: bool,
}

/// A [`WaitRegistration`] kept without its borrow of the channel
/// ([`WaitRegistration::detach`]), for a handle that stays counted as a waiter between two
/// calls: an event loop's wait armed by one call and finished by another (PROTOCOL.md §7.4).
///
/// It is still counted. Give it back to the channel it came from with
/// [`Channel::reattach`](crate::Channel::reattach) and drop what that returns to undo the count;
/// forgetting it leaves the count raised (senders then pay a wake per message) until a repair
/// judges this process dead.
#[must_use = "a detached registration stays counted until it is reattached and dropped"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetachedRegistration {
    pub(crate) kind: u32,
    pub(crate) in_record: bool,
    pub(crate) observed: u32,
}

impl DetachedRegistration {
    /// The word's value read before the fence ([`WaitRegistration::observed`]).
    #[must_use]
    pub fn observed(&self) -> u32 {
        self.observed
    }

    /// True for a wait for a message, false for a wait for free slots.
    #[must_use]
    pub fn is_for_message(&self) -> bool {
        self.kind == peer_waiting::NOT_EMPTY
    }
}

impl core::fmt::Debug for WaitRegistration<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WaitRegistration")
            .field("observed", &self.observed)
            .field("ready", &self.ready)
            .field("in_peer_record", &self.record.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> WaitRegistration<'a> {
    /// Counts a waiter in `waiters` (and names the count `kind` in `record`), reads `word`,
    /// fences, then re-checks `ready`.
    pub(crate) fn register(
        word: &'a AtomicU32,
        waiters: &'a AtomicU32,
        kind: u32,
        record: Option<&'a AtomicPeerRecord>,
        ready: impl FnOnce() -> bool,
    ) -> Self {
        waiters.fetch_add(1, Ordering::SeqCst);
        let record = record.map(|record| (record, kind));
        if let Some((record, kind)) = record {
            // After the count: a record that says "waiting" is always counted.
            record.waiting.store(kind, Ordering::Release);
        }
        let observed = word.load(Ordering::SeqCst);
        // Pairs with the waker's fence between its publication and its load of `waiters`.
        fence(Ordering::SeqCst);
        Self {
            word,
            waiters,
            record,
            kind,
            observed,
            ready: ready(),
        }
    }

    /// Rebuilds a registration from its detached form, counted already (no count, no fence).
    pub(crate) fn resume(
        word: &'a AtomicU32,
        waiters: &'a AtomicU32,
        record: Option<&'a AtomicPeerRecord>,
        detached: DetachedRegistration,
    ) -> Self {
        Self {
            word,
            waiters,
            record: record
                .filter(|_| detached.in_record)
                .map(|record| (record, detached.kind)),
            kind: detached.kind,
            observed: detached.observed,
            ready: false,
        }
    }

    /// Keeps the registration (still counted) without borrowing the channel; see
    /// [`DetachedRegistration`].
    ///
    /// ```
    /// # use dmxp_nostd::{AlignedBlock, Region, Segment, SendMeta};
    /// # use zerocopy::IntoBytes;
    /// # let bytes = dmxp_nostd::layout::HEADER_SIZE + 4 * dmxp_nostd::layout::SLOT_SIZE;
    /// # let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(bytes)];
    /// # let segment = Segment::format(Region::new(memory.as_mut_bytes()).unwrap(), 1).unwrap();
    /// let channel = segment.create_channel(0, 4, 1).unwrap();
    /// let detached = channel.register_for_message().detach();
    /// assert_eq!(channel.waiters(), (1, 0)); // still counted
    /// drop(channel.reattach(detached));
    /// assert_eq!(channel.waiters(), (0, 0));
    /// ```
    pub fn detach(self) -> DetachedRegistration {
        let detached = DetachedRegistration {
            kind: self.kind,
            in_record: self.record.is_some(),
            observed: self.observed,
        };
        // Not dropped: the count stays until the reattached registration drops.
        core::mem::forget(self);
        detached
    }

    /// True when the re-check after registering found the ring ready (a message, or the free
    /// slots asked for): do not sleep, drop the registration and try again.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The futex word to sleep on (`not_empty_seq` or `not_full_seq`, in the shared segment).
    #[must_use]
    pub fn word(&self) -> &'a AtomicU32 {
        self.word
    }

    /// The word's value read before the fence: sleep only while the word still holds it.
    #[must_use]
    pub fn observed(&self) -> u32 {
        self.observed
    }

    /// One blocking wait: sleeps with `strategy` unless [`Self::is_ready`], then unregisters.
    pub fn wait<V: WaitStrategy>(self, strategy: &V) -> WaitOutcome {
        if self.ready {
            WaitOutcome::Woken
        } else {
            strategy.wait(self.word, self.observed)
        }
        // `self` drops here: unregistered after the sleep.
    }
}

impl Drop for WaitRegistration<'_> {
    fn drop(&mut self) {
        let still_counted = match self.record {
            Some((record, kind)) => {
                record.waiting.swap(peer_waiting::NONE, Ordering::AcqRel) == kind
            }
            None => true,
        };
        if still_counted {
            self.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
