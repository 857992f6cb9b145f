//! The ring: Vyukov's bounded MPMC queue with a sequence number per slot (DESIGN.md §4).
//!
//! Positions (`head`, `tail`) only grow; slot `i` of position `p` is `p & (capacity - 1)`.
//! A slot's `sequence` tells whose turn it is:
//!
//! * `sequence == p`: free for the producer of position `p`;
//! * `sequence == p + 1`: holds the message of position `p`, ready for its consumer;
//! * a consumer that took position `p` frees the slot with `sequence = p + capacity`, which is
//!   the producer turn of position `p + capacity`, one lap later.
//!
//! A producer claims position `t` by CAS on `tail` after seeing `sequence == t`, writes meta
//! and payload, then publishes with a release store of `t + 1`. A consumer claims `h` by CAS on
//! `head` after seeing `sequence == h + 1` (acquire), copies out, then frees the slot. Batches
//! check several consecutive slots and claim them with one CAS.
//!
//! The geometry (capacity, band) was validated at open and lives in this struct; nothing here
//! re-reads it from shared memory. Every loop is bounded: a peer that scribbles on the cursors
//! or sequences can make an operation fail with `Busy`, never spin forever.

use crate::error::{Error, RecvError, SendError};
#[cfg(feature = "test-hooks")]
use crate::hooks::Hook;
use crate::layout::{
    message_flags, peer_waiting, AtomicChannelEntry, AtomicPeerRecord, AtomicSlot, MessageMeta,
    MSG_INLINE,
};
use crate::payload::{self, Payload, PayloadMut};
use crate::peer::{PeerRole, PeerSlot};
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};
use crate::validate::{ChannelGeometry, ChannelInfo};
use crate::wait::{DetachedRegistration, WaitRegistration};
use crate::wait::{SpinWait, WaitOutcome, WaitStrategy};

use Ordering::{Acquire, Relaxed, Release, SeqCst};

/// Upper bound on the retries of one operation (lost CAS races, skipped markers, a stale
/// cursor). Honest contention resolves in a handful; only a corrupt peer exhausts it.
const RETRY_LIMIT: u32 = 1 << 16;

/// What a sender stamps on each message besides the payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendMeta {
    /// Application-defined type tag.
    pub message_type: u32,
    /// Application flags: only bits in [`message_flags::APPLICATION_MASK`].
    pub flags: u16,
    /// CLOCK_MONOTONIC nanoseconds, or 0 (the core has no clock; the caller fills it).
    pub timestamp_ns: u64,
    /// The sender's process id, or 0 when unknown (the core cannot ask the OS).
    pub sender_pid: u32,
    /// One of [`crate::layout::runtime`].
    pub sender_runtime: u16,
}

/// A message copied out of the ring: its metadata and its length in the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// The message's metadata as read from the slot (`payload_len` validated).
    pub meta: MessageMeta,
    /// Bytes of the payload copied to the start of the caller's buffer.
    pub len: usize,
}

/// The result of a batch receive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use = "a batch receive reports dropped, lost and revoked positions here"]
pub struct BatchReceived {
    /// Messages handed to the callback.
    pub delivered: usize,
    /// Positions consumed without a message: corrupt lengths and lost-message tombstones.
    pub dropped: usize,
    /// Of `dropped`, the lost-message tombstones (PROTOCOL.md §6.4, §11.6).
    pub lost: usize,
    /// Positions whose claim a repair revoked before this receiver freed them (PROTOCOL.md
    /// §11.7): not delivered, not counted in `dropped`.
    pub revoked: usize,
}

/// Calls the channel's test hook, if the `test-hooks` feature is on and a hook is set.
macro_rules! hook {
    ($channel:expr, $step:ident, $position:expr) => {
        #[cfg(feature = "test-hooks")]
        if let Some(hook) = $channel.hook {
            hook($crate::hooks::Step::$step, $position);
        }
    };
}

// After `hook!`, which it uses.
#[cfg(not(loom))]
mod blob;
mod run;
#[cfg(not(loom))]
use blob::{BLOB_ONLY, IN_PLACE};
#[cfg(loom)]
const IN_PLACE: Option<usize> = Some(usize::MAX);
#[cfg(loom)]
const BLOB_ONLY: Option<usize> = Some(usize::MAX - 1);
#[cfg(not(loom))]
pub use blob::{BlobBytes, BlobBytesMut, BlobLoan, BlobReceived};
pub use run::RunParts;

/// A created channel, opened and validated. Cheap to clone; safe to share between threads.
///
/// A channel given a peer record ([`Self::with_peer`]) writes its intents there around every
/// claim (PROTOCOL.md §11.4). A record holds one intent at a time: such a channel must be
/// used by one thread at a time, and its clones are not registered. The type is still `Sync`
/// (everything it touches is atomic, so sharing it is never undefined behaviour); the std
/// facade keeps registered channels inside handles that are not `Sync`.
///
/// Its `Debug` shows the geometry and which roles are registered, not the slots.
pub struct Channel<'a, W: WaitStrategy = SpinWait> {
    geometry: ChannelGeometry,
    mask: u64,
    entry: &'a AtomicChannelEntry,
    slots: &'a [AtomicSlot],
    wait: W,
    /// The record sends write their intents to (a registered producer).
    send_intent: Option<&'a AtomicPeerRecord>,
    /// The record receives write their intents to (a registered consumer).
    recv_intent: Option<&'a AtomicPeerRecord>,
    /// The producer record's index and pid: the owner of this handle's blob loans.
    send_record: Option<(usize, u32)>,
    /// The consumer record's index and pid: the owner of the blobs this handle receives.
    recv_record: Option<(usize, u32)>,
    /// The segment's blob pool, on a channel that carries blobs (PROTOCOL.md §13).
    #[cfg(not(loom))]
    pool: Option<crate::blob::BlobPool<'a>>,
    /// Where this handle's next blob loan starts looking: after its last one. Private to
    /// this process (not shared memory), so never modelled.
    #[cfg(not(loom))]
    loan_hint: core::sync::atomic::AtomicU32,
    #[cfg(feature = "test-hooks")]
    hook: Option<Hook>,
}

impl<W: WaitStrategy> core::fmt::Debug for Channel<'_, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Channel")
            .field("geometry", &self.geometry)
            .field("send_registered", &self.send_intent.is_some())
            .field("recv_registered", &self.recv_intent.is_some())
            .finish_non_exhaustive()
    }
}

impl<W: WaitStrategy> Clone for Channel<'_, W> {
    /// An unregistered copy: a peer record belongs to one handle.
    fn clone(&self) -> Self {
        Self {
            geometry: self.geometry,
            mask: self.mask,
            entry: self.entry,
            slots: self.slots,
            wait: self.wait.clone(),
            send_intent: None,
            recv_intent: None,
            send_record: None,
            recv_record: None,
            #[cfg(not(loom))]
            pool: self.pool,
            #[cfg(not(loom))]
            loan_hint: core::sync::atomic::AtomicU32::new(0),
            #[cfg(feature = "test-hooks")]
            hook: self.hook,
        }
    }
}

/// Writes an intent before a claiming CAS: the position relaxed, then the count with release,
/// so that a repairer that reads the count with acquire also sees everything this handle did
/// before (in particular the publish or free that ended its previous intent).
#[inline(always)]
fn write_intent(record: Option<&AtomicPeerRecord>, position: u64, count: u64) {
    if let Some(record) = record {
        record.intent_position.store(position, Relaxed);
        record
            .intent_count
            .store(u32::try_from(count).unwrap_or(u32::MAX), Release);
    }
}

/// Clears the intent, with release, after the last publish or free it covered (or after a
/// claim that failed).
#[inline(always)]
fn clear_intent(record: Option<&AtomicPeerRecord>) {
    if let Some(record) = record {
        record.intent_count.store(0, Release);
    }
}

/// What a claimed receive slot holds.
enum Content {
    Message(MessageMeta, usize),
    /// A reference to a blob-pool block (PROTOCOL.md §13.4), not yet checked against the pool.
    #[cfg_attr(loom, allow(dead_code))]
    Blob(MessageMeta, crate::blob::BlobRef),
    Skip,
    Lost(u64),
    Corrupt(u64, u32),
}

impl<'a, W: WaitStrategy> Channel<'a, W> {
    /// `slots.len()` must equal `geometry.capacity` (a power of two); `Segment` guarantees it.
    pub(crate) fn new(
        geometry: ChannelGeometry,
        entry: &'a AtomicChannelEntry,
        slots: &'a [AtomicSlot],
        wait: W,
    ) -> Self {
        debug_assert_eq!(slots.len() as u64, geometry.capacity);
        debug_assert!(geometry.capacity.is_power_of_two());
        Self {
            geometry,
            mask: geometry.capacity - 1,
            entry,
            slots,
            wait,
            send_intent: None,
            recv_intent: None,
            send_record: None,
            recv_record: None,
            #[cfg(not(loom))]
            pool: None,
            #[cfg(not(loom))]
            loan_hint: core::sync::atomic::AtomicU32::new(0),
            #[cfg(feature = "test-hooks")]
            hook: None,
        }
    }

    /// The same channel with another wait strategy (used for wake-ups after sends/receives).
    #[must_use]
    pub fn with_wait_strategy<V: WaitStrategy>(self, wait: V) -> Channel<'a, V> {
        Channel {
            geometry: self.geometry,
            mask: self.mask,
            entry: self.entry,
            slots: self.slots,
            wait,
            send_intent: self.send_intent,
            recv_intent: self.recv_intent,
            send_record: self.send_record,
            recv_record: self.recv_record,
            #[cfg(not(loom))]
            pool: self.pool,
            #[cfg(not(loom))]
            loan_hint: core::sync::atomic::AtomicU32::new(0),
            #[cfg(feature = "test-hooks")]
            hook: self.hook,
        }
    }

    /// The same channel writing its intents to `peer`'s record (PROTOCOL.md §11.4): sends
    /// for a producer record, receives for a consumer record. A record registered for another
    /// channel is ignored (the channel stays unregistered for that role).
    ///
    /// The record must outlive its use: keep `peer` alive as long as this channel, and use
    /// the channel from one thread at a time.
    #[must_use]
    pub fn with_peer(mut self, peer: &PeerSlot<'a>) -> Self {
        if peer.channel_id() == self.geometry.id {
            match peer.role() {
                PeerRole::Producer => {
                    self.send_intent = Some(peer.record());
                    self.send_record = Some((peer.index(), peer.pid()));
                }
                PeerRole::Consumer => {
                    self.recv_intent = Some(peer.record());
                    self.recv_record = Some((peer.index(), peer.pid()));
                }
            }
        }
        self
    }

    /// True when sends (`Producer`) or receives (`Consumer`) write intents to a peer record.
    #[must_use]
    pub fn is_registered(&self, role: PeerRole) -> bool {
        match role {
            PeerRole::Producer => self.send_intent.is_some(),
            PeerRole::Consumer => self.recv_intent.is_some(),
        }
    }

    /// The same channel calling `hook` at each step of its sends and receives (for tests that
    /// stop or kill a peer at a chosen step).
    #[cfg(feature = "test-hooks")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-hooks")))]
    #[must_use]
    pub fn with_test_hook(mut self, hook: Option<Hook>) -> Self {
        self.hook = hook;
        self
    }

    /// The channel id (its index in the channel table).
    #[must_use]
    pub fn id(&self) -> u32 {
        self.geometry.id
    }

    /// Slots in the ring, as validated at open.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.geometry.capacity
    }

    /// The largest message this channel takes, in bytes: its `max_message_size` when it
    /// carries runs (PROTOCOL.md §12), else one slot's 960. A receive buffer of this size
    /// always suffices.
    #[must_use]
    pub fn max_message_size(&self) -> usize {
        self.geometry.message_limit()
    }

    /// The validated geometry cached at open.
    #[must_use]
    pub fn geometry(&self) -> ChannelGeometry {
        self.geometry
    }

    /// This channel, refused with [`Error::RunsNotSupported`] if it carries runs: for a client
    /// that takes single-slot messages only, which PROTOCOL.md §12.1 requires to refuse such a
    /// channel rather than use it.
    ///
    /// ```
    /// use dmxp_nostd::{AlignedBlock, ChannelOptions, Error, Region, Segment};
    /// use zerocopy::IntoBytes;
    ///
    /// let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(1 << 20)];
    /// let segment = Segment::format(Region::new(memory.as_mut_bytes())?, 1)?;
    /// segment.open_or_create_channel(0, 8, 1)?;
    /// let options = ChannelOptions::default().with_max_message_size(4_000);
    /// segment.open_or_create_channel_with(1, 8, 1, options)?;
    /// assert!(segment.open_channel(0)?.require_single_slot().is_ok());
    /// assert_eq!(
    ///     segment.open_channel(1)?.require_single_slot().err(),
    ///     Some(Error::RunsNotSupported { id: 1 })
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn require_single_slot(self) -> Result<Self, Error> {
        if self.geometry.carries_runs() {
            return Err(Error::RunsNotSupported {
                id: self.geometry.id,
            });
        }
        Ok(self)
    }

    /// Consumer cursor (a snapshot).
    #[must_use]
    pub fn head(&self) -> u64 {
        self.entry.head.load(Relaxed)
    }

    /// Producer cursor (a snapshot).
    #[must_use]
    pub fn tail(&self) -> u64 {
        self.entry.tail.load(Relaxed)
    }

    /// Cursors and depth at one instant.
    #[must_use]
    pub fn info(&self) -> ChannelInfo {
        let head = self.entry.head.load(Acquire);
        let tail = self.entry.tail.load(Acquire);
        ChannelInfo::new(self.geometry, head, tail)
    }

    /// Consumers and producers currently registered as waiting.
    #[must_use]
    pub fn waiters(&self) -> (u32, u32) {
        (
            self.entry.not_empty_waiters.load(Relaxed),
            self.entry.not_full_waiters.load(Relaxed),
        )
    }

    #[inline]
    pub(crate) fn slot(&self, position: u64) -> &'a AtomicSlot {
        // `mask < capacity == slots.len()`, so the index is always in bounds.
        &self.slots[(position & self.mask) as usize]
    }

    pub(crate) fn entry(&self) -> &'a AtomicChannelEntry {
        self.entry
    }

    /// For a consumer that found nothing to receive: the position at `head` if it looks held
    /// by a producer that claimed it and has not published it (`tail` is past it but its slot
    /// is still free). A live producer publishes within microseconds; one that stays stuck for
    /// long has likely died (PROTOCOL.md §11.6).
    #[must_use]
    pub fn stuck_receive_position(&self) -> Option<u64> {
        let head = self.entry.head.load(Relaxed);
        let tail = self.entry.tail.load(Relaxed);
        let unpublished = self.slot(head).sequence.load(Acquire) == head;
        (unpublished && (tail.wrapping_sub(head) as i64) > 0).then_some(head)
    }

    /// For a producer that found the ring full: the position one lap behind `tail` if its slot
    /// looks held by a consumer that claimed it and has not freed it (`head` is past it but the
    /// slot still holds its message).
    ///
    /// On a channel with runs the slot holding a run back may lie past `tail` (a run needs
    /// all its slots free at once): the first slot at or after `tail` that is not free is
    /// the one looked at.
    #[must_use]
    pub fn stuck_send_position(&self) -> Option<u64> {
        let tail = self.entry.tail.load(Relaxed);
        let reach = if self.geometry.carries_runs() {
            self.geometry.capacity
        } else {
            1
        };
        let blocked = (0..reach)
            .map(|k| tail.wrapping_add(k))
            .find(|&p| self.slot(p).sequence.load(Acquire) != p)?;
        let previous = blocked.wrapping_sub(self.geometry.capacity);
        let unfreed = self.slot(blocked).sequence.load(Acquire) == previous.wrapping_add(1);
        let head = self.entry.head.load(Relaxed);
        (unfreed && (head.wrapping_sub(previous) as i64) > 0).then_some(previous)
    }

    /// The position a `holder` looks to hold the channel up at: [`Self::stuck_receive_position`]
    /// for the producers, [`Self::stuck_send_position`] for the consumers.
    #[must_use]
    pub fn stuck_position(&self, holder: PeerRole) -> Option<u64> {
        match holder {
            PeerRole::Producer => self.stuck_receive_position(),
            PeerRole::Consumer => self.stuck_send_position(),
        }
    }

    /// Notes in the entry, for tools (`dmxp inspect`), that the position held by a `holder`
    /// (see [`Self::stuck_receive_position`], [`Self::stuck_send_position`]) has been stuck
    /// since `since_ns` (`CLOCK_MONOTONIC` nanoseconds, nonzero). Informational only: no
    /// client decides anything from it (PROTOCOL.md §11.8). Stores nothing when the same
    /// position is already noted, so watching peers write it once per stuck position.
    ///
    /// ```
    /// # use dmxp_nostd::{AlignedBlock, PeerRole, Region, Segment};
    /// # use zerocopy::IntoBytes;
    /// # let bytes = dmxp_nostd::layout::HEADER_SIZE + 4 * dmxp_nostd::layout::SLOT_SIZE;
    /// # let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(bytes)];
    /// # let segment = Segment::format(Region::new(memory.as_mut_bytes()).unwrap(), 1).unwrap();
    /// let channel = segment.create_channel(0, 4, 1).unwrap();
    /// channel.note_stuck(PeerRole::Producer, 7, 1_000);
    /// channel.note_stuck(PeerRole::Producer, 7, 2_000); // the same position: kept
    /// assert_eq!(channel.stuck_note(PeerRole::Producer), Some((7, 1_000)));
    /// assert_eq!(channel.stuck_note(PeerRole::Consumer), None);
    /// ```
    pub fn note_stuck(&self, holder: PeerRole, position: u64, since_ns: u64) {
        let (noted, since) = self.stuck_words(holder);
        if since.load(Relaxed) != 0 && noted.load(Relaxed) == position {
            return;
        }
        // Two relaxed stores: a reader may pair them wrongly while a note changes, which can
        // only misstate a duration on a tool's display.
        since.store(0, Relaxed);
        noted.store(position, Relaxed);
        since.store(since_ns, Relaxed);
    }

    /// The last [`Self::note_stuck`] for positions a `holder` holds: the position and since
    /// when (`CLOCK_MONOTONIC` ns), if any was noted. Written by peers: the position may be
    /// long unstuck; compare it with the current stuck position first.
    #[must_use]
    pub fn stuck_note(&self, holder: PeerRole) -> Option<(u64, u64)> {
        let (noted, since) = self.stuck_words(holder);
        let since = since.load(Relaxed);
        (since != 0).then(|| (noted.load(Relaxed), since))
    }

    fn stuck_words(&self, holder: PeerRole) -> (&AtomicU64, &AtomicU64) {
        match holder {
            PeerRole::Producer => (
                &self.entry.stuck_receive_position,
                &self.entry.stuck_receive_since_ns,
            ),
            PeerRole::Consumer => (
                &self.entry.stuck_send_position,
                &self.entry.stuck_send_since_ns,
            ),
        }
    }

    /// Tombstones position `p` (a LOST marker naming `sender_pid`/`sender_runtime`) if it is
    /// still claimed and unpublished: metadata first, then a CAS `p → p + 1`, so a claimer
    /// that publishes meanwhile wins and the tombstone is not written over its message's state
    /// (PROTOCOL.md §11.6, §11.7). True when the tombstone was published.
    pub(crate) fn tombstone(&self, p: u64, sender_pid: u32, sender_runtime: u16) -> bool {
        self.settle_unpublished(p, message_flags::LOST, sender_pid, sender_runtime)
    }

    /// Publishes a SKIP marker at position `p` if it is still claimed and unpublished, as
    /// [`Self::tombstone`] does a LOST one: for the continuations of a dead producer's run
    /// (PROTOCOL.md §12.5). True when the marker was published.
    pub(crate) fn skip_marker(&self, p: u64) -> bool {
        self.settle_unpublished(p, message_flags::SKIP, 0, 0)
    }

    fn settle_unpublished(&self, p: u64, flags: u16, sender_pid: u32, sender_runtime: u16) -> bool {
        let slot = self.slot(p);
        if slot.sequence.load(Acquire) != p {
            return false;
        }
        slot.meta.store(&MessageMeta {
            message_id: p,
            channel_id: self.geometry.id,
            sender_pid,
            sender_runtime,
            flags,
            ..MessageMeta::default()
        });
        slot.sequence
            .compare_exchange(p, p.wrapping_add(1), Release, Relaxed)
            .is_ok()
    }

    /// Whether position `p` has been freed for a later lap: its slot's `sequence` (acquire)
    /// has reached `p + capacity` (wrapping, signed), as PROTOCOL.md §13.6 rule 3 reads it.
    #[must_use]
    pub fn position_freed(&self, p: u64) -> bool {
        let sequence = self.slot(p).sequence.load(Acquire);
        sequence.wrapping_sub(p.wrapping_add(self.geometry.capacity)) as i64 >= 0
    }

    /// Frees position `p` for the next lap if it is still published and unfreed: a CAS
    /// `p + 1 → p + capacity`, so a claimer that frees it meanwhile wins. True when freed.
    pub(crate) fn force_free(&self, p: u64) -> bool {
        self.slot(p)
            .sequence
            .compare_exchange(
                p.wrapping_add(1),
                p.wrapping_add(self.geometry.capacity),
                Release,
                Relaxed,
            )
            .is_ok()
    }

    /// Unblocks the ring past a position that a **live** peer has held for longer than the
    /// unblock timeout (PROTOCOL.md §11.8): the position at `head` that `stuck_receive_position`
    /// reports is tombstoned, or the slot `stuck_send_position` reports is freed. The holder
    /// keeps its record and learns by `Revoked` when it resumes. `position` is the one the
    /// caller saw stuck for that long; nothing is done if the ring has moved past it since.
    /// True when something was repaired.
    #[must_use]
    pub fn unblock(&self, position: u64, role: PeerRole) -> bool {
        let repaired = match role {
            PeerRole::Producer => {
                self.stuck_receive_position() == Some(position) && self.tombstone(position, 0, 0)
            }
            PeerRole::Consumer => {
                self.stuck_send_position() == Some(position) && self.force_free(position)
            }
        };
        if repaired {
            match role {
                PeerRole::Producer => self.notify_consumers(),
                PeerRole::Consumer => self.notify_producers(),
            }
        }
        repaired
    }

    /// [`Self::unblock`] for a run of `count` positions at `first` that a stopped producer
    /// holds (its record says so; see [`crate::Segment::unblock`]): its unpublished
    /// continuations get SKIP markers, then its first position the LOST tombstone, if it is
    /// still the position receives find stuck. True when something was repaired.
    #[must_use]
    pub fn unblock_run(&self, first: u64, count: u64) -> bool {
        if self.stuck_receive_position() != Some(first) {
            return false;
        }
        let tail = self.entry.tail.load(Acquire);
        let count = count.min(self.geometry.capacity);
        let mut repaired = false;
        for k in 1..count {
            let p = first.wrapping_add(k);
            // Claimed (behind tail): never mark a position nobody claimed yet.
            if tail.wrapping_sub(p) as i64 > 0 {
                repaired |= self.skip_marker(p);
            }
        }
        repaired |= self.tombstone(first, 0, 0);
        if repaired {
            self.notify_consumers();
        }
        repaired
    }

    /// Brings a channel whose cursors or sequences a peer scribbled on back to an empty,
    /// consistent ring, for an operator (`dmxp reset`): every slot is made free for the next
    /// lap from a fresh start position, then `head` and `tail` are set to it. Returns how many
    /// published, unreceived messages were discarded (counted within one ring past `head`).
    ///
    /// Not atomic with respect to live peers: run it while the channel's producers and
    /// consumers are idle (none holds a claim), as `dmxp reset` checks; a peer that sends or
    /// receives meanwhile may have its claim revoked or its message discarded, never a crash.
    pub fn reset(&self) -> u64 {
        let head = self.entry.head.load(Acquire);
        let tail = self.entry.tail.load(Acquire);
        let capacity = self.geometry.capacity;
        let span = tail.wrapping_sub(head);
        let plausible = (span as i64) >= 0 && span <= capacity;
        let discarded = if plausible {
            (0..span)
                .filter(|&k| {
                    let p = head.wrapping_add(k);
                    self.slot(p).sequence.load(Acquire) == p.wrapping_add(1)
                })
                .count() as u64
        } else {
            0
        };
        // A start no honest cursor has reached: past both, one lap on, so that no position a
        // peer claimed before the reset is ever claimed again.
        let start = (if (span as i64) >= 0 { tail } else { head }).wrapping_add(capacity);
        for k in 0..capacity {
            let p = start.wrapping_add(k);
            self.slot(p).sequence.store(p, Release);
        }
        self.entry.tail.store(start, Release);
        self.entry.head.store(start, Release);
        self.notify_producers();
        self.notify_consumers();
        discarded
    }

    // ------------------------------------------------------------------ claiming positions

    /// Claims up to `max` consecutive free positions with one CAS on `tail`. A registered
    /// producer's intent covers them on success, and is cleared on failure.
    ///
    /// Always inlined: with `max` a constant 1 the batch scan folds away, and the facade's
    /// instantiation (`FutexWait`) otherwise kept it out of line (a call and a returned
    /// `Result` in memory per message).
    #[inline(always)]
    fn claim_send(&self, max: u64) -> Result<(u64, u64), SendError> {
        if max == 1 {
            // The common case in a straight line: the slot at `tail` is free for this lap and
            // the CAS wins. Anything else starts over in the loop below, which rewrites the
            // intent before its own CAS or clears it when it gives up.
            let tail = self.entry.tail.load(Relaxed);
            if self.slot(tail).sequence.load(Acquire) == tail
                && self.claim_one(PeerRole::Producer, &self.entry.tail, tail)
            {
                return Ok((tail, 1));
            }
        }
        self.claim_send_loop(max)
    }

    /// [`Self::claim_send`]'s general form: retries after lost races, catches up with other
    /// producers, and tells a full ring from a scribbled cursor.
    #[inline(always)]
    fn claim_send_loop(&self, max: u64) -> Result<(u64, u64), SendError> {
        let mut tail = self.entry.tail.load(Relaxed);
        for _ in 0..RETRY_LIMIT {
            let sequence = self.slot(tail).sequence.load(Acquire);
            let lag = sequence.wrapping_sub(tail) as i64;
            if lag == 0 {
                let mut count = 1;
                while count < max
                    && self.slot(tail.wrapping_add(count)).sequence.load(Acquire)
                        == tail.wrapping_add(count)
                {
                    count += 1;
                }
                write_intent(self.send_intent, tail, max.min(self.geometry.capacity));
                hook!(self, SendIntent, tail);
                // Release: a repairer that reads `tail` with acquire sees the intent above.
                match self.entry.tail.compare_exchange_weak(
                    tail,
                    tail.wrapping_add(count),
                    Release,
                    Relaxed,
                ) {
                    Ok(_) => {
                        hook!(self, SendClaimed, tail);
                        return Ok((tail, count));
                    }
                    Err(current) => tail = current,
                }
            } else if lag < 0 {
                // The slot still holds the message of the previous lap.
                return Err(self.send_failed(SendError::Full));
            } else {
                // Another producer claimed this position; catch up. The sequence we read was
                // published after that producer moved `tail` past us, so an honest `tail` has
                // moved by now: one that has not was scribbled on.
                let current = self.entry.tail.load(Relaxed);
                if current == tail {
                    return Err(self.send_failed(SendError::Busy));
                }
                tail = current;
            }
        }
        Err(self.send_failed(SendError::Busy))
    }

    /// A claim that gives up clears the intent an earlier attempt may have written. Out of
    /// line: only failures pay for it.
    #[cold]
    #[inline(never)]
    fn send_failed(&self, error: SendError) -> SendError {
        clear_intent(self.send_intent);
        error
    }

    #[cold]
    #[inline(never)]
    fn recv_failed(&self, error: RecvError) -> RecvError {
        clear_intent(self.recv_intent);
        error
    }

    /// Claims up to `max` consecutive published positions with one CAS on `head`. With
    /// `buffer`, refuses (consuming nothing) when the first message is longer than it. A
    /// registered consumer's intent covers them on success, and is cleared on failure.
    /// Always inlined, as [`Self::claim_send`].
    #[inline(always)]
    fn claim_recv(&self, max: u64, buffer: Option<usize>) -> Result<(u64, u64), RecvError> {
        if max == 1 {
            // The common case in a straight line, as in `claim_send`: a published
            // single-slot message that fits, and a CAS that wins. A run, a message too long
            // for the buffer, a miss or a lost race go to the loop.
            let head = self.entry.head.load(Relaxed);
            let slot = self.slot(head);
            if slot.sequence.load(Acquire) == head.wrapping_add(1)
                && buffer != BLOB_ONLY
                && !self.is_run_slot(slot.meta.flags.load(Relaxed))
                && buffer.is_none_or(|available| {
                    slot.meta.payload_len.load(Relaxed) as usize <= available
                })
                && self.claim_one(PeerRole::Consumer, &self.entry.head, head)
            {
                return Ok((head, 1));
            }
        }
        self.claim_recv_loop(max, buffer)
    }

    /// The straight line of a single claim by `role` at `position`: the intent, then one CAS
    /// of `cursor` (the entry's `tail` or `head`) from `position` to the next. Release: a
    /// repairer that reads the cursor with acquire sees the intent.
    #[inline(always)]
    fn claim_one(&self, role: PeerRole, cursor: &AtomicU64, position: u64) -> bool {
        let producer = role == PeerRole::Producer;
        write_intent(
            if producer {
                self.send_intent
            } else {
                self.recv_intent
            },
            position,
            1,
        );
        if producer {
            hook!(self, SendIntent, position);
        } else {
            hook!(self, RecvIntent, position);
        }
        let claimed = cursor
            .compare_exchange(position, position.wrapping_add(1), Release, Relaxed)
            .is_ok();
        if claimed && producer {
            hook!(self, SendClaimed, position);
        } else if claimed {
            hook!(self, RecvClaimed, position);
        }
        claimed
    }

    /// [`Self::claim_recv`]'s general form.
    #[inline(always)]
    fn claim_recv_loop(&self, max: u64, buffer: Option<usize>) -> Result<(u64, u64), RecvError> {
        let mut head = self.entry.head.load(Relaxed);
        for _ in 0..RETRY_LIMIT {
            let slot = self.slot(head);
            let sequence = slot.sequence.load(Acquire);
            let lag = sequence.wrapping_sub(head.wrapping_add(1)) as i64;
            if lag == 0 {
                // Blobs (§13.5) are looked at only on channels that carry them, before runs:
                // a blob receive takes nothing else.
                if self.geometry.carries_blobs {
                    self.check_blob_claim(slot, head, max, buffer)?;
                }
                // The flags are looked at only on channels that carry runs (§12.4).
                if self.geometry.carries_runs()
                    && slot.meta.flags.load(Relaxed) & message_flags::RUN != 0
                {
                    match self.claim_run_recv(head, buffer)? {
                        Some(claimed) => return Ok(claimed),
                        None => {
                            head = self.entry.head.load(Relaxed);
                            continue;
                        }
                    }
                }
                if let Some(available) = buffer {
                    // Published meta is stable until this position is consumed, and if another
                    // consumer takes it first our CAS below fails; a stale peek can at worst
                    // make us report a too-small buffer without consuming anything.
                    let needed = slot.meta.payload_len.load(Relaxed) as usize;
                    let flags = slot.meta.flags.load(Relaxed);
                    let carries_message = flags & (message_flags::SKIP | message_flags::LOST) == 0;
                    if carries_message && needed <= MSG_INLINE && needed > available {
                        return Err(
                            self.recv_failed(RecvError::BufferTooSmall { needed, available })
                        );
                    }
                }
                let mut count = 1;
                // A batch takes single-slot messages only: it stops before a run's slots.
                while count < max && {
                    let next = self.slot(head.wrapping_add(count));
                    next.sequence.load(Acquire) == head.wrapping_add(count + 1)
                        && !self.is_run_slot(next.meta.flags.load(Relaxed))
                } {
                    count += 1;
                }
                write_intent(self.recv_intent, head, max.min(self.geometry.capacity));
                hook!(self, RecvIntent, head);
                // Release: a repairer that reads `head` with acquire sees the intent above.
                match self.entry.head.compare_exchange_weak(
                    head,
                    head.wrapping_add(count),
                    Release,
                    Relaxed,
                ) {
                    Ok(_) => {
                        hook!(self, RecvClaimed, head);
                        return Ok((head, count));
                    }
                    Err(current) => head = current,
                }
            } else if lag < 0 {
                // Nothing published at `head`: empty, unless a completed send waits behind a
                // claim that is still in flight (PROTOCOL.md §6.2).
                let (answer, scanned) = self.empty_or_pending(head);
                // A scan can miss messages that others took meanwhile because `head` was
                // published and consumed under us: look again rather than report empty.
                if scanned
                    && answer == RecvError::Empty
                    && (slot.sequence.load(Acquire) != sequence
                        || self.entry.head.load(Relaxed) != head)
                {
                    head = self.entry.head.load(Relaxed);
                    continue;
                }
                return Err(self.recv_failed(answer));
            } else {
                // Another consumer took this position (and the slot may already hold the next
                // lap); as for sends, an honest `head` has moved past us by now.
                let current = self.entry.head.load(Relaxed);
                if current == head {
                    return Err(self.recv_failed(RecvError::Busy));
                }
                head = current;
            }
        }
        Err(self.recv_failed(RecvError::Busy))
    }

    /// Whether a receive may claim the published slot at `head` on a channel that carries
    /// blobs: a blob receive ([`BLOB_ONLY`]) takes blobs and markers only; a batch or an
    /// in-place slot receive ([`IN_PLACE`]) no blob; a copying receive a blob that fits its
    /// buffer. A refusal consumes nothing.
    #[inline]
    fn check_blob_claim(
        &self,
        slot: &AtomicSlot,
        head: u64,
        max: u64,
        buffer: Option<usize>,
    ) -> Result<(), RecvError> {
        let flags = slot.meta.flags.load(Relaxed);
        if flags & (message_flags::SKIP | message_flags::LOST) != 0 {
            return Ok(());
        }
        let is_blob = flags & message_flags::BLOB != 0;
        if buffer == BLOB_ONLY {
            if is_blob {
                return Ok(());
            }
            return Err(self.recv_failed(RecvError::NotABlob { message_id: head }));
        }
        if !is_blob {
            return Ok(());
        }
        #[cfg(not(loom))]
        let len = blob::peeked_len(slot);
        #[cfg(loom)]
        let len = 0;
        match buffer {
            Some(available) if max == 1 && buffer != IN_PLACE => {
                if len > available {
                    return Err(self.recv_failed(RecvError::BufferTooSmall {
                        needed: len,
                        available,
                    }));
                }
                Ok(())
            }
            _ => Err(self.recv_failed(RecvError::IsBlob {
                message_id: head,
                len,
            })),
        }
    }

    /// What a receive that found nothing published at `head` reports: `Pending` when a later
    /// position of this lap is published (a completed send is queued behind a producer that
    /// has claimed `head` and not published it yet), else `Empty`; and whether any later
    /// position was looked at (only then can the answer be stale). Out of line and cold: it
    /// runs only on a miss, and scans only while two or more claims are in flight.
    #[cold]
    #[inline(never)]
    fn empty_or_pending(&self, head: u64) -> (RecvError, bool) {
        let tail = self.entry.tail.load(Acquire);
        let in_flight = tail.wrapping_sub(head);
        // Nothing claimed past `head` (or a scribbled cursor): nothing can be queued behind.
        if (in_flight as i64) <= 1 {
            return (RecvError::Empty, false);
        }
        let queued = (1..in_flight.min(self.geometry.capacity)).any(|k| {
            let p = head.wrapping_add(k);
            self.slot(p).sequence.load(Acquire) == p.wrapping_add(1)
        });
        if queued {
            (RecvError::Pending { position: head }, true)
        } else {
            (RecvError::Empty, true)
        }
    }

    // ------------------------------------------------------------------ slot contents

    /// Writes and publishes one claimed position; false when the claim was revoked
    /// (PROTOCOL.md §11.7).
    #[must_use]
    #[inline(always)]
    fn write_slot(&self, position: u64, payload: &[u8], meta: &SendMeta, flags: u16) -> bool {
        let slot = self.slot(position);
        payload::store(&slot.payload, payload);
        self.publish_into(slot, position, position, payload.len(), meta, flags)
    }

    /// Ends a producer's intent after its last publish.
    #[inline(always)]
    fn end_send_intent(&self, _position: u64) {
        clear_intent(self.send_intent);
        hook!(self, SendIntentCleared, _position);
    }

    /// Ends a consumer's intent after its last free.
    #[inline(always)]
    fn end_recv_intent(&self, _position: u64) {
        clear_intent(self.recv_intent);
        hook!(self, RecvIntentCleared, _position);
    }

    /// Stores the meta of a claimed position whose payload is in place, then publishes it by
    /// a CAS from the claimed state. False when a repair revoked the claim meanwhile
    /// (PROTOCOL.md §11.7): nothing more is stored, and the slot's state is left as the
    /// repair made it.
    #[inline(always)]
    #[must_use]
    fn publish_slot(&self, position: u64, len: usize, meta: &SendMeta, flags: u16) -> bool {
        self.publish_slot_of(position, position, len, meta, flags)
    }

    /// [`Self::publish_slot`] for a slot of the message `message_id`: its own position, or
    /// the first position of the run it continues (PROTOCOL.md §12.2).
    #[inline(always)]
    #[must_use]
    fn publish_slot_of(
        &self,
        position: u64,
        message_id: u64,
        len: usize,
        meta: &SendMeta,
        flags: u16,
    ) -> bool {
        self.publish_into(self.slot(position), position, message_id, len, meta, flags)
    }

    /// [`Self::publish_slot_of`] with the slot of `position` already looked up.
    #[inline(always)]
    #[must_use]
    fn publish_into(
        &self,
        slot: &AtomicSlot,
        position: u64,
        message_id: u64,
        len: usize,
        meta: &SendMeta,
        flags: u16,
    ) -> bool {
        // Tombstoned while we copied: leave the tombstone's metadata alone.
        if slot.sequence.load(Relaxed) != position {
            return false;
        }
        slot.meta.store(&MessageMeta {
            message_id,
            timestamp_ns: meta.timestamp_ns,
            channel_id: self.geometry.id,
            message_type: meta.message_type,
            sender_pid: meta.sender_pid,
            sender_runtime: meta.sender_runtime,
            flags,
            payload_len: len as u32,
            reserved: 0,
        });
        hook!(self, SendWritten, position);
        let published = slot
            .sequence
            .compare_exchange(position, position.wrapping_add(1), Release, Relaxed)
            .is_ok();
        hook!(self, SendPublished, position);
        published
    }

    /// What the claimed slot of `position` holds. One test decides the common case (a
    /// message that fits, no protocol flag of note); the rest is out of line.
    #[inline(always)]
    fn read_content(&self, slot: &AtomicSlot, position: u64) -> Content {
        let meta = slot.meta.load();
        let unusual = message_flags::SKIP | message_flags::LOST | message_flags::RUN;
        let unusual = if self.geometry.carries_runs() {
            unusual | message_flags::RUN_CONT
        } else {
            unusual
        };
        let unusual = if self.geometry.carries_blobs {
            unusual | message_flags::BLOB
        } else {
            unusual
        };
        if meta.flags & unusual == 0 && meta.payload_len as usize <= MSG_INLINE {
            let len = meta.payload_len as usize;
            Content::Message(meta, len)
        } else {
            self.unusual_content(&meta, position)
        }
    }

    #[cold]
    #[inline(never)]
    fn unusual_content(&self, meta: &MessageMeta, position: u64) -> Content {
        if meta.flags & message_flags::SKIP != 0 {
            Content::Skip
        } else if meta.flags & message_flags::LOST != 0 {
            Content::Lost(position)
        } else if self.geometry.carries_runs() && meta.flags & message_flags::RUN_CONT != 0 {
            // A continuation whose start is gone (repaired or corrupt, and counted there).
            Content::Skip
        } else if self.geometry.carries_blobs
            && meta.flags & message_flags::BLOB != 0
            && meta.flags & message_flags::RUN == 0
            && meta.payload_len as usize == crate::blob::BLOB_REF_LEN
        {
            #[cfg(not(loom))]
            {
                Content::Blob(*meta, blob::read_ref(self.slot(position)))
            }
            #[cfg(loom)]
            {
                Content::Corrupt(position, meta.payload_len)
            }
        } else {
            // Too long, or a run's first slot claimed alone: a run that failed its checks
            // (§12.4).
            Content::Corrupt(position, meta.payload_len)
        }
    }

    /// Frees the slot of a consumed position for the producer one lap later, by a CAS from
    /// the claimed state. False when a repair freed it first (PROTOCOL.md §11.7): what was read
    /// from it may be the next lap's, and the slot's state is left alone.
    #[inline(always)]
    #[must_use]
    fn release(&self, position: u64) -> bool {
        self.release_slot(self.slot(position), position)
    }

    /// [`Self::release`] with the slot of `position` already looked up.
    #[inline(always)]
    #[must_use]
    fn release_slot(&self, slot: &AtomicSlot, position: u64) -> bool {
        hook!(self, RecvCopied, position);
        let freed = slot
            .sequence
            .compare_exchange(
                position.wrapping_add(1),
                position.wrapping_add(self.geometry.capacity),
                Release,
                Relaxed,
            )
            .is_ok();
        hook!(self, RecvFreed, position);
        freed
    }

    /// Wakes sleepers on `word` if any registered. The SeqCst fence orders our publication
    /// before the waiter-count load; the waiter orders its registration before its re-check of
    /// the ring the same way, so one of the two always sees the other.
    #[inline(always)]
    fn notify(&self, word: &AtomicU32, waiters: &AtomicU32) {
        fence(SeqCst);
        if waiters.load(Relaxed) != 0 {
            self.wake(word);
        }
    }

    /// Out of line: only reached when someone sleeps.
    #[cold]
    #[inline(never)]
    fn wake(&self, word: &AtomicU32) {
        word.fetch_add(1, Release);
        self.wait.wake_all(word);
    }

    pub(crate) fn notify_consumers(&self) {
        self.notify(&self.entry.not_empty_seq, &self.entry.not_empty_waiters);
    }

    pub(crate) fn notify_producers(&self) {
        self.notify(&self.entry.not_full_seq, &self.entry.not_full_waiters);
    }

    // ------------------------------------------------------------------ sending

    fn check_outgoing(payload: &[u8], meta: &SendMeta) -> Result<(), SendError> {
        if payload.len() > MSG_INLINE {
            return Err(SendError::TooLarge {
                len: payload.len(),
                limit: MSG_INLINE,
            });
        }
        if meta.flags & message_flags::PROTOCOL_MASK != 0 {
            return Err(SendError::ReservedFlags { flags: meta.flags });
        }
        Ok(())
    }

    /// Sends one message; returns its `message_id` (the position it took).
    pub fn try_send(&self, payload: &[u8], meta: &SendMeta) -> Result<u64, SendError> {
        if payload.len() > MSG_INLINE {
            return self.try_send_run(payload, meta);
        }
        Self::check_outgoing(payload, meta)?;
        let (position, _) = self.claim_send(1)?;
        let published = self.write_slot(position, payload, meta, meta.flags);
        self.end_send_intent(position);
        if !published {
            return Err(SendError::Revoked {
                message_id: position,
            });
        }
        self.notify_consumers();
        Ok(position)
    }

    /// Sends as many of `payloads` as there are free slots for, claimed with one CAS, in order.
    /// Returns how many were sent (at least one), or `Full` when none could be. Every payload
    /// is checked before anything is sent. If a repair revoked some of the claimed positions
    /// (PROTOCOL.md §11.7), the others are still published and the call fails with
    /// `Revoked` naming the first revoked one.
    pub fn try_send_batch<P: AsRef<[u8]>>(
        &self,
        payloads: &[P],
        meta: &SendMeta,
    ) -> Result<usize, SendError> {
        if payloads.is_empty() {
            return Ok(0);
        }
        for payload in payloads {
            Self::check_outgoing(payload.as_ref(), meta)?;
        }
        let (first, count) = self.claim_send(payloads.len() as u64)?;
        let mut revoked = None;
        for (offset, payload) in payloads.iter().take(count as usize).enumerate() {
            let position = first.wrapping_add(offset as u64);
            if !self.write_slot(position, payload.as_ref(), meta, meta.flags) {
                revoked.get_or_insert(position);
            }
        }
        self.end_send_intent(first.wrapping_add(count - 1));
        self.notify_consumers();
        match revoked {
            Some(message_id) => Err(SendError::Revoked { message_id }),
            None => Ok(count as usize),
        }
    }

    /// Claims a slot to be written in place. Commit it with [`SendLoan::commit`]; a loan dropped
    /// without commit is published as a skip marker that consumers pass over, so the ring never
    /// stalls on it.
    pub fn try_loan(&self) -> Result<SendLoan<'_, 'a, W>, SendError> {
        let (position, _) = self.claim_send(1)?;
        Ok(SendLoan {
            channel: self,
            slot: self.slot(position),
            position,
            count: 1,
            published: false,
        })
    }

    /// Claims room for a message of up to `len` bytes, to be written in place: one slot for
    /// `len <= 960`, else the `ceil(len / 960)` slots of a run (PROTOCOL.md §12), claimed with
    /// one CAS once all of them are free. `TooLarge` past the channel's limit, `Full` while
    /// fewer slots are free. The loan may commit any length up to [`SendLoan::capacity`].
    ///
    /// ```
    /// use dmxp_nostd::{AlignedBlock, ChannelOptions, Region, Segment, SendMeta};
    /// use zerocopy::IntoBytes;
    ///
    /// let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(1 << 20)];
    /// let segment = Segment::format(Region::new(memory.as_mut_bytes())?, 1)?;
    /// let options = ChannelOptions::default().with_max_message_size(4_000);
    /// let (channel, _) = segment.open_or_create_channel_with(0, 8, 1, options)?;
    /// let mut loan = channel.try_loan_for(2_000)?;
    /// assert_eq!(loan.capacity(), 2_880); // three slots
    /// assert!(loan.write_at(0, &[7u8; 2_000]));
    /// loan.commit(2_000, &SendMeta::default())?;
    /// let mut out = vec![0u8; 4_000];
    /// assert_eq!(channel.try_recv(&mut out)?.len, 2_000);
    /// assert!(out[..2_000].iter().all(|&b| b == 7));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_loan_for(&self, len: usize) -> Result<SendLoan<'_, 'a, W>, SendError> {
        if len <= MSG_INLINE {
            return self.try_loan();
        }
        let (position, count) = self.claim_loan_run(len)?;
        Ok(SendLoan {
            channel: self,
            slot: self.slot(position),
            position,
            count,
            published: false,
        })
    }

    /// Sends, waiting with `waiter` while the ring is full.
    pub fn send_blocking<V: WaitStrategy>(
        &self,
        payload: &[u8],
        meta: &SendMeta,
        waiter: &V,
    ) -> Result<u64, SendError> {
        loop {
            match self.try_send(payload, meta) {
                Err(SendError::Full) => {}
                other => return other,
            }
            let slots = payload.len().div_ceil(MSG_INLINE).max(1) as u64;
            if self.wait_for_free_slots(slots, waiter) == WaitOutcome::TimedOut {
                return match self.try_send(payload, meta) {
                    Err(SendError::Full) => Err(SendError::TimedOut),
                    other => other,
                };
            }
        }
    }

    // ------------------------------------------------------------------ receiving

    /// Receives one message into `buf`. Skip markers are passed over. A message longer than
    /// `buf` is left in place (`BufferTooSmall`); a buffer of 960 bytes always suffices.
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<Received, RecvError> {
        let (position, count) = self.claim_recv(1, Some(buf.len()))?;
        if count == 1 {
            let slot = self.slot(position);
            if let Content::Message(meta, len) = self.read_content(slot, position) {
                if let Some(dst) = buf.get_mut(..len) {
                    payload::load(&slot.payload, dst);
                    // Revoked: the copy may be the next lap's bytes; it is not delivered.
                    self.finish_recv_slot(slot, position)?;
                    return Ok(Received { meta, len });
                }
            }
        }
        self.recv_unusual(position, count, buf)
    }

    /// The rest of [`Self::try_recv`] once `position` (and `count - 1` more, for a run) is
    /// claimed and is not a message that fits: a run, a skip marker (then the next position
    /// is claimed), a lost or corrupt slot. Out of line: ordinary messages never come here.
    #[cold]
    #[inline(never)]
    fn recv_unusual(
        &self,
        mut position: u64,
        mut count: u64,
        buf: &mut [u8],
    ) -> Result<Received, RecvError> {
        for _ in 0..RETRY_LIMIT {
            if count > 1 {
                return self.finish_run_recv(position, count, buf);
            }
            let slot = self.slot(position);
            match self.read_content(slot, position) {
                Content::Message(meta, len) => {
                    let Some(dst) = buf.get_mut(..len) else {
                        // Only a peer rewriting a published slot gets here.
                        self.finish_recv_slot(slot, position)?;
                        return Err(RecvError::Corrupt {
                            message_id: position,
                            payload_len: meta.payload_len,
                        });
                    };
                    payload::load(&slot.payload, dst);
                    self.finish_recv_slot(slot, position)?;
                    return Ok(Received { meta, len });
                }
                #[cfg(not(loom))]
                Content::Blob(meta, blob) => {
                    return self.recv_blob_copy(slot, position, meta, blob, buf);
                }
                #[cfg(loom)]
                Content::Blob(..) => unreachable!("loom models carry no blobs"),
                Content::Skip => self.finish_recv_slot(slot, position)?,
                Content::Lost(message_id) => {
                    self.finish_recv_slot(slot, position)?;
                    return Err(RecvError::Lost { message_id });
                }
                Content::Corrupt(message_id, payload_len) => {
                    self.finish_recv_slot(slot, position)?;
                    return Err(RecvError::Corrupt {
                        message_id,
                        payload_len,
                    });
                }
            }
            (position, count) = self.claim_recv(1, Some(buf.len()))?;
        }
        Err(RecvError::Busy)
    }

    /// After a single receive has copied (or dropped) its position: frees it, ends the intent,
    /// wakes producers. `Revoked` when a repair freed the position first (nothing was freed
    /// by us, so nobody is woken). `slot` is the slot of `position`, looked up by the caller.
    #[inline(always)]
    fn finish_recv_slot(&self, slot: &AtomicSlot, position: u64) -> Result<(), RecvError> {
        let freed = self.release_slot(slot, position);
        self.end_recv_intent(position);
        if !freed {
            return Err(RecvError::Revoked {
                message_id: position,
            });
        }
        self.notify_producers();
        Ok(())
    }

    /// Receives up to `max` messages claimed with one CAS, calling `deliver` for each with its
    /// metadata and payload. Each slot is freed before its callback runs.
    pub fn try_recv_batch<F>(&self, max: usize, mut deliver: F) -> Result<BatchReceived, RecvError>
    where
        F: FnMut(&MessageMeta, &[u8]),
    {
        if max == 0 {
            return Ok(BatchReceived::default());
        }
        let (first, count) = self.claim_recv(max as u64, None)?;
        // Frees whatever a panicking callback leaves claimed, so the ring never stalls.
        let mut claimed = ClaimedRange {
            channel: self,
            next: first,
            end: first.wrapping_add(count),
        };
        let mut outcome = BatchReceived::default();
        let mut buf = [0u8; MSG_INLINE];
        while let Some(position) = claimed.take() {
            let slot = self.slot(position);
            let content = self.read_content(slot, position);
            if let Content::Message(_, len) = content {
                payload::load(&slot.payload, &mut buf[..len]);
            }
            if !self.release_slot(slot, position) {
                // Freed under us by a repair: what we read may be the next lap's.
                outcome.revoked += 1;
                continue;
            }
            match content {
                Content::Message(meta, len) => {
                    outcome.delivered += 1;
                    deliver(&meta, &buf[..len]);
                }
                Content::Skip => {}
                Content::Lost(_) => {
                    outcome.dropped += 1;
                    outcome.lost += 1;
                }
                // A batch refuses a blob at its head before claiming (`IsBlob`); only a slot
                // rewritten under the claim gets here. Its block is reclaimed once the
                // position is freed (PROTOCOL.md §13.6, rule 3).
                Content::Corrupt(..) | Content::Blob(..) => outcome.dropped += 1,
            }
        }
        // Frees nothing more (every position was taken) and ends the intent.
        drop(claimed);
        self.notify_producers();
        Ok(outcome)
    }

    /// Receives one message in place: the guard reads the payload where it lies and frees the
    /// slot when dropped. Hold it briefly: producers cannot reuse the slot meanwhile.
    pub fn try_recv_in_place(&self) -> Result<RecvGuard<'_, 'a, W>, RecvError> {
        let (position, count) = self.claim_recv(1, IN_PLACE)?;
        if count == 1 {
            let slot = self.slot(position);
            if let Content::Message(meta, _) = self.read_content(slot, position) {
                return Ok(RecvGuard {
                    channel: self,
                    slot,
                    position,
                    count: 1,
                    meta,
                    released: false,
                });
            }
        }
        self.recv_in_place_unusual(position, count)
    }

    /// The rest of [`Self::try_recv_in_place`], as [`Self::recv_unusual`] is for `try_recv`.
    #[cold]
    #[inline(never)]
    fn recv_in_place_unusual(
        &self,
        mut position: u64,
        mut count: u64,
    ) -> Result<RecvGuard<'_, 'a, W>, RecvError> {
        for _ in 0..RETRY_LIMIT {
            if count > 1 {
                let meta = self.check_run_in_place(position, count)?;
                return Ok(RecvGuard {
                    channel: self,
                    slot: self.slot(position),
                    position,
                    count,
                    meta,
                    released: false,
                });
            }
            let slot = self.slot(position);
            let error = match self.read_content(slot, position) {
                Content::Message(meta, _) => {
                    return Ok(RecvGuard {
                        channel: self,
                        slot,
                        position,
                        count: 1,
                        meta,
                        released: false,
                    })
                }
                Content::Skip => None,
                Content::Lost(message_id) => Some(RecvError::Lost { message_id }),
                Content::Corrupt(message_id, payload_len) => Some(RecvError::Corrupt {
                    message_id,
                    payload_len,
                }),
                // Refused before the claim (`IsBlob`); only a rewritten slot gets here.
                Content::Blob(meta, _) => Some(RecvError::Corrupt {
                    message_id: position,
                    payload_len: meta.payload_len,
                }),
            };
            self.finish_recv_slot(slot, position)?;
            if let Some(error) = error {
                return Err(error);
            }
            (position, count) = self.claim_recv(1, IN_PLACE)?;
        }
        Err(RecvError::Busy)
    }

    /// Receives, waiting with `waiter` while the ring is empty.
    pub fn recv_blocking<V: WaitStrategy>(
        &self,
        buf: &mut [u8],
        waiter: &V,
    ) -> Result<Received, RecvError> {
        loop {
            match self.try_recv(buf) {
                // An in-flight claim at the head is waited for like an empty ring: its
                // publication wakes `not_empty` too.
                Err(RecvError::Empty | RecvError::Pending { .. }) => {}
                other => return other,
            }
            if self.wait_for_message(waiter) == WaitOutcome::TimedOut {
                return match self.try_recv(buf) {
                    Err(RecvError::Empty | RecvError::Pending { .. }) => Err(RecvError::TimedOut),
                    other => other,
                };
            }
        }
    }

    /// One wait of a blocking receive: registers as a waiter on `not_empty`, re-checks the
    /// ring, and sleeps with `waiter` unless a message is there. Returns early on a wake-up;
    /// callers loop (as [`Self::recv_blocking`] does) and may check for a stuck channel
    /// between waits.
    pub fn wait_for_message<V: WaitStrategy>(&self, waiter: &V) -> WaitOutcome {
        self.register_for_message().wait(waiter)
    }

    /// One wait of a blocking send, like [`Self::wait_for_message`] for a free slot.
    pub fn wait_for_free_slot<V: WaitStrategy>(&self, waiter: &V) -> WaitOutcome {
        self.wait_for_free_slots(1, waiter)
    }

    /// One wait of a blocking send of a message taking `slots` slots (a run, PROTOCOL.md
    /// §12.3, needs them all free at once): returns at once only when they are.
    pub fn wait_for_free_slots<V: WaitStrategy>(&self, slots: u64, waiter: &V) -> WaitOutcome {
        self.register_for_free_slots(slots).wait(waiter)
    }

    /// Registers as a waiter for a message (PROTOCOL.md §7.2, §7.4): counts this handle in
    /// `not_empty_waiters` (and names that count in its peer record, §11.9), reads the
    /// `not_empty_seq` word, fences, and re-checks the ring. Senders wake the word while the
    /// registration lives; dropping it undoes it exactly once.
    ///
    /// [`WaitRegistration::is_ready`] says whether a message was already there (do not sleep);
    /// otherwise sleep on [`WaitRegistration::word`] while it still holds
    /// [`WaitRegistration::observed`] (a futex wait, blocking or submitted to an event loop's
    /// `io_uring`), then drop the registration and try to receive again. This is what
    /// [`Self::wait_for_message`] does with a blocking [`WaitStrategy`].
    ///
    /// ```
    /// # use dmxp_nostd::{AlignedBlock, Region, Segment, SendMeta};
    /// # use zerocopy::IntoBytes;
    /// # let bytes = dmxp_nostd::layout::HEADER_SIZE + 4 * dmxp_nostd::layout::SLOT_SIZE;
    /// # let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(bytes)];
    /// # let segment = Segment::format(Region::new(memory.as_mut_bytes()).unwrap(), 1).unwrap();
    /// let channel = segment.create_channel(0, 4, 1).unwrap();
    /// let registration = channel.register_for_message();
    /// assert!(!registration.is_ready()); // empty: this waiter would sleep
    /// assert_eq!(channel.waiters(), (1, 0)); // and senders would wake it
    /// drop(registration);
    /// assert_eq!(channel.waiters(), (0, 0));
    ///
    /// channel.try_send(b"hi", &SendMeta::default()).unwrap();
    /// assert!(channel.register_for_message().is_ready());
    /// assert_eq!(channel.waiters(), (0, 0));
    /// ```
    pub fn register_for_message(&self) -> WaitRegistration<'a> {
        WaitRegistration::register(
            &self.entry.not_empty_seq,
            &self.entry.not_empty_waiters,
            peer_waiting::NOT_EMPTY,
            self.recv_intent,
            || self.has_message(),
        )
    }

    /// Registers as a waiter for `slots` free slots (one, or all the slots of a run), like
    /// [`Self::register_for_message`] on `not_full_seq` / `not_full_waiters`.
    ///
    /// ```
    /// # use dmxp_nostd::{AlignedBlock, Region, Segment, SendMeta};
    /// # use zerocopy::IntoBytes;
    /// # let bytes = dmxp_nostd::layout::HEADER_SIZE + 4 * dmxp_nostd::layout::SLOT_SIZE;
    /// # let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(bytes)];
    /// # let segment = Segment::format(Region::new(memory.as_mut_bytes()).unwrap(), 1).unwrap();
    /// let channel = segment.create_channel(0, 4, 1).unwrap();
    /// assert!(channel.register_for_free_slots(4).is_ready());
    /// channel.try_send(b"one", &SendMeta::default()).unwrap();
    /// let registration = channel.register_for_free_slots(4);
    /// assert!(!registration.is_ready()); // only 3 free
    /// assert_eq!(channel.waiters(), (0, 1));
    /// ```
    pub fn register_for_free_slots(&self, slots: u64) -> WaitRegistration<'a> {
        WaitRegistration::register(
            &self.entry.not_full_seq,
            &self.entry.not_full_waiters,
            peer_waiting::NOT_FULL,
            self.send_intent,
            || self.has_free_slots(slots),
        )
    }

    /// Takes back a registration of this channel kept with [`WaitRegistration::detach`]:
    /// dropping what it returns undoes the count (once, as any registration does). Give it only
    /// registrations of this channel, made through this handle.
    ///
    /// ```
    /// # use dmxp_nostd::{AlignedBlock, Region, Segment, SendMeta};
    /// # use zerocopy::IntoBytes;
    /// # let bytes = dmxp_nostd::layout::HEADER_SIZE + 4 * dmxp_nostd::layout::SLOT_SIZE;
    /// # let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(bytes)];
    /// # let segment = Segment::format(Region::new(memory.as_mut_bytes()).unwrap(), 1).unwrap();
    /// let channel = segment.create_channel(0, 4, 1).unwrap();
    /// let detached = channel.register_for_free_slots(8).detach();
    /// assert_eq!(channel.waiters(), (0, 1));
    /// let registration = channel.reattach(detached);
    /// assert_eq!(registration.observed(), detached.observed());
    /// drop(registration);
    /// assert_eq!(channel.waiters(), (0, 0));
    /// ```
    pub fn reattach(&self, detached: DetachedRegistration) -> WaitRegistration<'a> {
        if detached.is_for_message() {
            WaitRegistration::resume(
                &self.entry.not_empty_seq,
                &self.entry.not_empty_waiters,
                self.recv_intent,
                detached,
            )
        } else {
            WaitRegistration::resume(
                &self.entry.not_full_seq,
                &self.entry.not_full_waiters,
                self.send_intent,
                detached,
            )
        }
    }

    /// True when the position at `head` has been published (a message or a marker).
    #[must_use]
    pub fn has_message(&self) -> bool {
        let head = self.entry.head.load(Relaxed);
        self.slot(head).sequence.load(Acquire) == head.wrapping_add(1)
    }

    /// True when the position at `tail` is free.
    #[must_use]
    pub fn has_free_slot(&self) -> bool {
        self.has_free_slots(1)
    }

    /// True when the `slots` positions from `tail` on are free (at most one lap is looked at).
    #[must_use]
    pub fn has_free_slots(&self, slots: u64) -> bool {
        let tail = self.entry.tail.load(Relaxed);
        (0..slots.clamp(1, self.geometry.capacity)).all(|k| {
            let p = tail.wrapping_add(k);
            self.slot(p).sequence.load(Acquire) == p
        })
    }
}

/// Positions claimed by a batch receive and not yet freed.
struct ClaimedRange<'c, 'a, W: WaitStrategy> {
    channel: &'c Channel<'a, W>,
    next: u64,
    end: u64,
}

impl<W: WaitStrategy> ClaimedRange<'_, '_, W> {
    fn take(&mut self) -> Option<u64> {
        (self.next != self.end).then(|| {
            let position = self.next;
            self.next = self.next.wrapping_add(1);
            position
        })
    }
}

impl<W: WaitStrategy> Drop for ClaimedRange<'_, '_, W> {
    fn drop(&mut self) {
        while let Some(position) = self.take() {
            // A revoked position was freed by its repair already; nothing to undo.
            let _ = self.channel.release(position);
        }
        self.channel.end_recv_intent(self.end.wrapping_sub(1));
    }
}

/// A claimed slot being written in place (zero-copy send).
///
/// Dropped without [`Self::commit`], the slot is published as a skip marker that consumers
/// pass over. Its `Debug` shows the position, never the payload.
#[must_use = "a loan dropped at once publishes an empty skip marker; write it and commit it"]
pub struct SendLoan<'c, 'a, W: WaitStrategy = SpinWait> {
    channel: &'c Channel<'a, W>,
    /// The slot of `position`, looked up once for every access the loan makes.
    slot: &'a AtomicSlot,
    position: u64,
    /// Slots claimed: 1, or the slots of a run.
    count: u64,
    published: bool,
}

impl<W: WaitStrategy> core::fmt::Debug for SendLoan<'_, '_, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SendLoan")
            .field("channel", &self.channel.geometry.id)
            .field("position", &self.position)
            .field("slots", &self.count)
            .field("published", &self.published)
            .finish()
    }
}

impl<W: WaitStrategy> SendLoan<'_, '_, W> {
    /// The position (and future `message_id`) of this message: its first slot.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The most bytes this loan can commit: 960 for one slot; for a run, its slots' 960 bytes
    /// each, up to the channel's limit.
    #[inline]
    #[must_use]
    pub fn capacity(&self) -> usize {
        if self.count == 1 {
            MSG_INLINE
        } else {
            (self.count as usize * MSG_INLINE).min(self.channel.geometry.message_limit())
        }
    }

    /// The first slot's 960-byte payload area, written in place (bytes `0..960` of the
    /// message; the others through [`Self::part`] or [`Self::write_at`]).
    #[must_use]
    #[inline]
    pub fn payload(&mut self) -> PayloadMut<'_> {
        PayloadMut::new(&self.slot.payload)
    }

    /// The payload area of slot `index` of the loan (bytes `960 × index ..` of the message),
    /// or `None` past its slots.
    #[must_use]
    pub fn part(&mut self, index: usize) -> Option<PayloadMut<'_>> {
        (index < self.count as usize).then(|| PayloadMut::new(&self.slot_at(index).payload))
    }

    /// The slot of part `index` (`index < count`): the one kept for part 0, else looked up.
    fn slot_at(&self, index: usize) -> &AtomicSlot {
        if index == 0 {
            self.slot
        } else {
            self.channel.slot(self.position.wrapping_add(index as u64))
        }
    }

    /// Writes `src` at byte `offset` of the message, across slots as needed. Returns `false`
    /// (writing nothing) if it would run past [`Self::capacity`].
    #[inline]
    #[must_use = "`false` means nothing was written"]
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> bool {
        if self.count == 1 {
            return self.payload().write_at(offset, src);
        }
        if offset
            .checked_add(src.len())
            .is_none_or(|end| end > self.capacity())
        {
            return false;
        }
        let (mut offset, mut src) = (offset, src);
        while !src.is_empty() {
            let (index, within) = (offset / MSG_INLINE, offset % MSG_INLINE);
            let (here, rest) = src.split_at(src.len().min(MSG_INLINE - within));
            let stored = self
                .part(index)
                .is_some_and(|mut part| part.write_at(within, here));
            debug_assert!(stored, "checked against the capacity above");
            offset += here.len();
            src = rest;
        }
        true
    }

    /// Publishes the first `len` bytes with `meta`; returns the `message_id`. On an argument
    /// error (`TooLarge` past [`Self::capacity`], `ReservedFlags`) the loan is published as
    /// skip markers instead. A run loan that commits fewer bytes than its slots hold publishes
    /// the slots it does not need as skip markers. `Revoked` when a repair tombstoned the
    /// position while it was on loan (PROTOCOL.md §11.7).
    pub fn commit(mut self, len: usize, meta: &SendMeta) -> Result<u64, SendError> {
        let capacity = self.capacity();
        if len > capacity {
            return Err(SendError::TooLarge {
                len,
                limit: capacity,
            });
        }
        if meta.flags & message_flags::PROTOCOL_MASK != 0 {
            return Err(SendError::ReservedFlags { flags: meta.flags });
        }
        // Bytes past `len` in the last word are zero, as on the copying path.
        if !len.is_multiple_of(8) {
            let (index, within) = (len / MSG_INLINE, len % MSG_INLINE);
            let word = &self.slot_at(index).payload[within / 8];
            let keep = (1u64 << ((within % 8) * 8)) - 1;
            word.store(word.load(Relaxed) & keep, Relaxed);
        }
        if !self.publish(len, meta, meta.flags) {
            return Err(SendError::Revoked {
                message_id: self.position,
            });
        }
        Ok(self.position)
    }

    /// Publishes the loan: a message of `len` bytes with `flags` on its first slot when it
    /// fits there (a run's flags are its own).
    #[inline(always)]
    fn publish(&mut self, len: usize, meta: &SendMeta, flags: u16) -> bool {
        self.published = true;
        if self.count > 1 {
            return self
                .channel
                .publish_loaned_run(self.position, self.count, len, meta, flags);
        }
        let published =
            self.channel
                .publish_into(self.slot, self.position, self.position, len, meta, flags);
        self.channel.end_send_intent(self.position);
        if published {
            self.channel.notify_consumers();
        }
        published
    }
}

impl<W: WaitStrategy> SendLoan<'_, '_, W> {
    /// Publishes an uncommitted loan as skip markers: revoked or not, its positions no longer
    /// stall the ring. Out of line: a committed loan's drop is one check.
    #[cold]
    #[inline(never)]
    fn abandon(&mut self) {
        let _ = self.publish(0, &SendMeta::default(), message_flags::SKIP);
    }
}

impl<W: WaitStrategy> Drop for SendLoan<'_, '_, W> {
    #[inline]
    fn drop(&mut self) {
        if !self.published {
            self.abandon();
        }
    }
}

/// A received message still in its slot (zero-copy receive). Frees the slot on drop.
///
/// Its `Debug` shows the position and the metadata, never the payload.
#[must_use = "dropping the guard frees the slot at once, unread"]
pub struct RecvGuard<'c, 'a, W: WaitStrategy = SpinWait> {
    channel: &'c Channel<'a, W>,
    /// The slot of `position`, looked up once.
    slot: &'a AtomicSlot,
    position: u64,
    /// Positions claimed: 1, or the slots of a run.
    count: u64,
    meta: MessageMeta,
    released: bool,
}

impl<W: WaitStrategy> core::fmt::Debug for RecvGuard<'_, '_, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecvGuard")
            .field("channel", &self.channel.geometry.id)
            .field("position", &self.position)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl<W: WaitStrategy> RecvGuard<'_, '_, W> {
    /// The metadata, as read when the slot was claimed (`payload_len` validated).
    #[must_use]
    pub fn meta(&self) -> &MessageMeta {
        &self.meta
    }

    /// The payload in place; for a message longer than one slot (a run), only its first
    /// 960 bytes: read the whole through [`Self::parts`].
    #[must_use]
    #[inline]
    pub fn payload(&self) -> Payload<'_> {
        Payload::new(&self.slot.payload, self.meta.payload_len as usize)
    }

    /// The message's length in bytes (`meta().payload_len`).
    #[must_use]
    pub fn len(&self) -> usize {
        self.meta.payload_len as usize
    }

    /// True for an empty message.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message in place, part by part: one [`Payload`] per slot (one for a single-slot
    /// message, `ceil(len / 960)` for a run).
    pub fn parts(&self) -> RunParts<'_> {
        self.channel
            .run_parts(self.position, self.count, self.len())
    }

    /// Copies the whole message into the start of `dst`; returns the bytes copied
    /// (`min(len, dst.len())`).
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let mut copied = 0;
        for part in self.parts() {
            let Some(rest) = dst.get_mut(copied..) else {
                break;
            };
            let n = part.copy_to(rest);
            copied += n;
            if n < part.len() {
                break;
            }
        }
        copied
    }
}

impl<W: WaitStrategy> RecvGuard<'_, '_, W> {
    /// Frees the slot and says whether what was read through the guard was this message:
    /// `Revoked` when a repair freed the slot first (the guard was held past the unblock
    /// timeout, or its process was judged dead; PROTOCOL.md §11.7), in which case the bytes
    /// read may belong to the next message in the slot and must be discarded. Dropping the
    /// guard frees it the same way without the answer.
    pub fn release(mut self) -> Result<(), RecvError> {
        self.released = true;
        self.free()
    }

    #[inline(always)]
    fn free(&self) -> Result<(), RecvError> {
        if self.count > 1 {
            self.channel.free_run(self.position, self.count)
        } else {
            self.channel.finish_recv_slot(self.slot, self.position)
        }
    }
}

impl<W: WaitStrategy> Drop for RecvGuard<'_, '_, W> {
    #[inline]
    fn drop(&mut self) {
        if !self.released {
            let _ = self.free();
        }
    }
}
