//! Peers and crash recovery (PROTOCOL.md §11).
//!
//! A producer killed between claiming a position and publishing it leaves every consumer
//! waiting at that position; a consumer killed between claiming and freeing one leaves every
//! producer finding the ring full a lap later. Each handle therefore registers a record in the
//! segment's peer table ([`register_in`], or [`crate::Segment::register`]) and, around every
//! claim, writes there the positions it is about to own (its *intent*, written by
//! [`crate::Channel`] once given the record with [`crate::Channel::with_peer`]). A peer that
//! finds a channel stuck runs [`repair_channel`]: for each dead registrant of that channel
//! whose intent covers a stuck position and no live intent does, it publishes a LOST tombstone
//! (dead producer) or frees the slot (dead consumer).
//!
//! Whether a process is alive is the caller's business ([`Liveness`]): the core makes no
//! system calls. The std facade checks `kill(pid, 0)` and `/proc/<pid>/stat`.

use core::cell::Cell;
use core::marker::PhantomData;

use crate::channel::Channel;
use crate::error::Error;
use crate::layout::{
    intent_flags, peer_role, peer_waiting, AtomicChannelEntry, AtomicPeerRecord, PeerRecord,
    MAX_CHANNELS,
};
use crate::sync::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use crate::wait::WaitStrategy;

/// Tells whether a process is alive. `start_time` is the record's (0 = unknown): a process
/// whose current start time differs is a different process that reused the pid, so the record's
/// owner is dead.
pub trait Liveness {
    /// Whether process `pid` is alive and is the process that registered with
    /// `start_time` (0 = unknown: then only the pid is judged). False makes a repair treat
    /// the record's owner as dead, so it must not be false for a live process.
    fn is_alive(&self, pid: u32, start_time: u64) -> bool;

    /// Whether this checker can judge a record registered in pid namespace `pid_ns`
    /// (PROTOCOL.md §11.5): a pid from another namespace means nothing here, so its record
    /// counts as alive. `pid_ns == 0` (not recorded) is always judged. The default judges
    /// everything (a checker that cannot tell namespaces apart).
    fn judges(&self, pid_ns: u64) -> bool {
        let _ = pid_ns;
        true
    }
}

/// Verdicts a repair pass remembers: one per record of tables up to this size.
#[cfg(not(loom))]
const JUDGED_CACHE: usize = 1024;
/// Under loom the models have a handful of records, and run on small coroutine stacks.
#[cfg(loom)]
const JUDGED_CACHE: usize = 16;

/// One remembered verdict: the record it was for and the owner judged.
#[derive(Clone, Copy)]
struct Verdict {
    /// Record index + 1 (0: nothing remembered here).
    tag: u32,
    pid: u32,
    start_time: u64,
    alive: bool,
}

/// Liveness of the records of one repair pass, asked of the [`Liveness`] at most once per
/// record (while its owner stays the same): a pass over `n` records and `capacity` stuck
/// positions then makes O(n) liveness checks, not O(n² × capacity). The verdicts live in a
/// direct-mapped cache on the stack (16 KiB, no allocation): exact for tables of up to
/// [`JUDGED_CACHE`] records; in a larger table two records `JUDGED_CACHE` apart evict each
/// other, and one may be judged again (more system calls, never a different rule).
struct Judged<'l, L: Liveness> {
    liveness: &'l L,
    seen: [Verdict; JUDGED_CACHE],
}

impl<'l, L: Liveness> Judged<'l, L> {
    fn new(liveness: &'l L) -> Self {
        let nothing = Verdict {
            tag: 0,
            pid: 0,
            start_time: 0,
            alive: false,
        };
        Self {
            liveness,
            seen: [nothing; JUDGED_CACHE],
        }
    }

    fn alive(
        &mut self,
        index: usize,
        record: &AtomicPeerRecord,
        pid: u32,
        start_time: u64,
    ) -> bool {
        // A table a segment hands out has at most MAX_PEER_RECORDS records: the tag fits.
        let tag = index as u32 + 1;
        let slot = &mut self.seen[index % JUDGED_CACHE];
        if slot.tag == tag && slot.pid == pid && slot.start_time == start_time && pid != 0 {
            return slot.alive;
        }
        let alive = !self.liveness.judges(record.pid_ns.load(Relaxed))
            || self.liveness.is_alive(pid, start_time);
        *slot = Verdict {
            tag,
            pid,
            start_time,
            alive,
        };
        alive
    }
}

impl<F: Fn(u32, u64) -> bool> Liveness for F {
    fn is_alive(&self, pid: u32, start_time: u64) -> bool {
        self(pid, start_time)
    }
}

/// Which cursor a record's intents refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerRole {
    /// Claims `tail` positions (sends, loans).
    Producer,
    /// Claims `head` positions (receives, in-place receives).
    Consumer,
}

impl PeerRole {
    /// The `role` word of the record ([`peer_role`]).
    #[must_use]
    pub const fn code(self) -> u16 {
        match self {
            PeerRole::Producer => peer_role::PRODUCER,
            PeerRole::Consumer => peer_role::CONSUMER,
        }
    }

    /// The role of a `role` word, if it is one.
    #[must_use]
    pub const fn from_code(code: u16) -> Option<Self> {
        match code {
            peer_role::PRODUCER => Some(PeerRole::Producer),
            peer_role::CONSUMER => Some(PeerRole::Consumer),
            _ => None,
        }
    }
}

/// A registered peer record, owned by one handle. Dropping it (or [`PeerSlot::leave`]) frees
/// the record.
///
/// A record holds one intent at a time, so it must be used by one thread at a time: the type
/// is `Send` but not `Sync`. Give it to a channel with [`Channel::with_peer`].
#[must_use = "dropping the slot frees the peer record at once"]
pub struct PeerSlot<'a> {
    record: &'a AtomicPeerRecord,
    index: usize,
    pid: u32,
    role: PeerRole,
    channel: u32,
    _one_thread: PhantomData<Cell<()>>,
}

impl core::fmt::Debug for PeerSlot<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PeerSlot")
            .field("index", &self.index)
            .field("pid", &self.pid)
            .field("role", &self.role)
            .field("channel", &self.channel)
            .finish()
    }
}

impl<'a> PeerSlot<'a> {
    /// Index of the record in the table (below the segment's `peer_records`).
    #[must_use]
    pub fn index(&self) -> usize {
        self.index
    }

    /// The pid the record was registered with.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The role the record was registered for: which cursor its intents name.
    #[must_use]
    pub fn role(&self) -> PeerRole {
        self.role
    }

    /// The channel whose positions the record's intents name.
    #[must_use]
    pub fn channel_id(&self) -> u32 {
        self.channel
    }

    pub(crate) fn record(&self) -> &'a AtomicPeerRecord {
        self.record
    }

    /// Frees the record now (the same as dropping the slot).
    pub fn leave(self) {}

    /// Frees the record if `current_pid` (the calling process's pid) registered it, else
    /// leaves it untouched: a child forked after registration holds a copy of the slot that
    /// names its parent's record, which only the parent may free (PROTOCOL.md §11.5).
    pub fn leave_if_mine(self, current_pid: u32) {
        if self.pid == current_pid {
            self.leave();
        } else {
            core::mem::forget(self);
        }
    }
}

impl Drop for PeerSlot<'_> {
    fn drop(&mut self) {
        let record = self.record;
        // Someone took the record over (they judged us dead: a hostile or confused peer):
        // it is theirs now, leave its fields alone.
        if record.pid.load(Relaxed) != self.pid {
            return;
        }
        record.intent_count.store(0, Relaxed);
        record.pid_ns.store(0, Relaxed);
        record.waiting.store(peer_waiting::NONE, Relaxed);
        // Zeroed before the pid so that the next owner's record never shows our start time
        // next to its pid (a checker would take it for pid reuse and judge it dead).
        record.start_time.store(0, Relaxed);
        let _ = record.pid.compare_exchange(self.pid, 0, Release, Relaxed);
    }
}

/// Takes a free record of `records` for a handle of `role` on `channel`.
///
/// `pid` must not be 0 (it marks a free record); `start_time` is the process's start time
/// (0 if unknown: then only pid liveness protects the record against pid reuse); `pid_ns` its
/// pid namespace (0 if unknown).
pub fn register_in<'a>(
    records: &'a [AtomicPeerRecord],
    channel: u32,
    role: PeerRole,
    pid: u32,
    start_time: u64,
    pid_ns: u64,
    runtime: u16,
) -> Result<PeerSlot<'a>, Error> {
    if pid == 0 {
        return Err(Error::InvalidPid);
    }
    if channel as usize >= MAX_CHANNELS {
        return Err(Error::InvalidChannelId { id: channel });
    }
    for (index, record) in records.iter().enumerate() {
        if record.pid.load(Relaxed) != 0
            || record
                .pid
                .compare_exchange(0, pid, Acquire, Relaxed)
                .is_err()
        {
            continue;
        }
        record.runtime.store(runtime, Relaxed);
        record.role.store(role.code(), Relaxed);
        record.channel_id.store(channel, Relaxed);
        record.intent_count.store(0, Relaxed);
        record.intent_position.store(0, Relaxed);
        record.waiting.store(peer_waiting::NONE, Relaxed);
        record.pid_ns.store(pid_ns, Relaxed);
        // Last: until then the record's start time reads 0, "unknown".
        record.start_time.store(start_time, Release);
        return Ok(PeerSlot {
            record,
            index,
            pid,
            role,
            channel,
            _one_thread: PhantomData,
        });
    }
    Err(Error::PeerTableFull)
}

/// A taken record as seen at one instant (fields may be mid-update).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Index of the record in the table.
    pub index: usize,
    /// The record's fields.
    pub record: PeerRecord,
}

impl PeerInfo {
    /// The record's role, if its `role` word holds a known one.
    #[must_use]
    pub fn role(&self) -> Option<PeerRole> {
        PeerRole::from_code(self.record.role)
    }
}

/// Every taken record (`pid != 0`) of `records`, in table order, each read when the iterator
/// reaches it.
pub fn snapshot(records: &[AtomicPeerRecord]) -> impl Iterator<Item = PeerInfo> + '_ {
    records.iter().enumerate().filter_map(|(index, record)| {
        let record = record.snapshot();
        (record.pid != 0).then_some(PeerInfo { index, record })
    })
}

/// What one repair pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use = "a repair pass reports here what it repaired and what it deferred"]
pub struct RepairReport {
    /// Positions of dead producers published as LOST tombstones: one per lost message (a
    /// run's first position; PROTOCOL.md §12.5).
    pub tombstoned: u64,
    /// Continuations of dead producers' runs published as SKIP markers (their message is
    /// counted once, in `tombstoned`).
    pub skipped: u64,
    /// Positions of dead consumers freed (their messages are lost).
    pub freed: u64,
    /// Dead records freed.
    pub records_freed: u32,
    /// Dead records given back unrepaired because a position of theirs is covered by another
    /// intent right now; a later pass retries them.
    pub records_deferred: u32,
    /// Wait counts of dead waiters decremented (PROTOCOL.md §11.9).
    pub waits_given_back: u32,
    /// Blob-pool blocks of freed records given back to the pool (PROTOCOL.md §13.6, rule 1).
    pub blocks_reclaimed: u32,
}

/// What freeing a dead record must do first: give back the blob-pool blocks it owns
/// (PROTOCOL.md §13.6, rule 1). Called with the record's index while the caller holds the
/// record; returns the blocks freed.
pub type BeforeFree<'f> = &'f dyn Fn(usize) -> u32;

/// A [`BeforeFree`] for segments without a blob pool.
pub fn no_blocks(_record: usize) -> u32 {
    0
}

impl RepairReport {
    /// True when the pass repaired at least one position.
    #[must_use]
    pub fn repaired(&self) -> bool {
        self.tombstoned != 0 || self.freed != 0 || self.skipped != 0
    }
}

/// One repair pass over `records` for `channel` (PROTOCOL.md §11.6).
///
/// For each record whose owner `liveness` says is dead: records of `channel` have the stuck
/// positions of their intent repaired (a LOST tombstone for a producer's, a free for a
/// consumer's) unless another intent covers them; dead records without an intent are freed
/// whatever their channel; dead records of other channels with an intent are left alone.
/// `my_pid` and `my_start_time` identify the caller, who owns a record while repairing it.
/// At most `records.len()` records and, for each, at most `capacity` positions are visited.
/// A freed record's wait, if it was counted in one, is given back to its channel in `entries`
/// (the segment's channel table; PROTOCOL.md §11.9).
pub fn repair_channel<W: WaitStrategy, L: Liveness>(
    channel: &Channel<'_, W>,
    entries: &[AtomicChannelEntry],
    records: &[AtomicPeerRecord],
    liveness: &L,
    my_pid: u32,
    my_start_time: u64,
) -> RepairReport {
    repair_channel_with(
        channel,
        entries,
        records,
        liveness,
        (my_pid, my_start_time),
        &no_blocks,
    )
}

/// [`repair_channel`] that calls `before_free` for each dead record before freeing it (the
/// segment passes its blob pool's reclaim, PROTOCOL.md §13.6).
pub fn repair_channel_with<W: WaitStrategy, L: Liveness>(
    channel: &Channel<'_, W>,
    entries: &[AtomicChannelEntry],
    records: &[AtomicPeerRecord],
    liveness: &L,
    (my_pid, my_start_time): (u32, u64),
    before_free: BeforeFree<'_>,
) -> RepairReport {
    let mut report = RepairReport::default();
    let mut judged = Judged::new(liveness);
    for (index, record) in records.iter().enumerate() {
        let dead_pid = record.pid.load(Acquire);
        // Our own pid is alive by definition (a torn read never makes us judge ourselves).
        if dead_pid == 0 || dead_pid == my_pid {
            continue;
        }
        let ours = record.channel_id.load(Relaxed) == channel.id();
        if !ours && record.intent_count.load(Acquire) != 0 {
            continue;
        }
        let start_time = record.start_time.load(Acquire);
        if judged.alive(index, record, dead_pid, start_time) {
            continue;
        }
        if !take_over(record, dead_pid, start_time, my_pid) {
            // Someone else repairs it, or it changed hands meanwhile.
            continue;
        }
        record.start_time.store(my_start_time, Relaxed);
        let count = record.intent_count.load(Acquire);
        let position = record.intent_position.load(Relaxed);
        let run = record.intent_flags.load(Relaxed) & intent_flags::RUN != 0;
        let role = PeerRole::from_code(record.role.load(Relaxed));
        let ours = record.channel_id.load(Relaxed) == channel.id();
        let done = match role {
            _ if count == 0 => Done::Complete,
            // Not ours to repair after all (it changed between the two reads): give it back.
            _ if !ours => Done::Deferred,
            // A corrupt role word: no cursor to repair against, free the record.
            None => Done::Complete,
            Some(role) => {
                let dead = Dead {
                    index,
                    role,
                    first: position,
                    count,
                    run,
                    pid: dead_pid,
                    runtime: record.runtime.load(Relaxed),
                };
                repair_intent(channel, records, &dead, &mut judged, my_pid, &mut report)
            }
        };
        match done {
            Done::Complete => {
                report.blocks_reclaimed += before_free(index);
                if give_back_wait(record, entries) {
                    report.waits_given_back += 1;
                }
                record.intent_count.store(0, Relaxed);
                record.intent_flags.store(0, Relaxed);
                record.pid_ns.store(0, Relaxed);
                record.start_time.store(0, Relaxed);
                record.pid.store(0, Release);
                report.records_freed += 1;
            }
            Done::Deferred => {
                // Back to the dead owner, intent intact, for a later pass.
                record.start_time.store(start_time, Relaxed);
                record.pid.store(dead_pid, Release);
                report.records_deferred += 1;
            }
        }
    }
    report
}

enum Done {
    Complete,
    Deferred,
}

/// Takes the record of dead `pid` (judged with `start_time`) over for `my_pid`, so that one
/// peer alone repairs or frees it (PROTOCOL.md §11.6, takeover). A checker that sees our pid
/// there next must not see the dead owner's start time beside it (it would judge us dead
/// too), so that is cleared first. False when someone else took it, or it changed hands.
fn take_over(record: &AtomicPeerRecord, pid: u32, start_time: u64, my_pid: u32) -> bool {
    let _ = record
        .start_time
        .compare_exchange(start_time, 0, Relaxed, Relaxed);
    record
        .pid
        .compare_exchange(pid, my_pid, AcqRel, Relaxed)
        .is_ok()
}

/// Frees every record of `records` whose owner is dead and that holds no intent (nothing of a
/// channel to repair), taking it over first as a repair does (PROTOCOL.md §11.6, takeover) so
/// that two sweepers, or a sweeper and a repairer, never both free it, and giving back the
/// wait of a freed record to its channel in `entries` (PROTOCOL.md §11.9, §11.10). Reports the
/// records freed and the waits given back.
pub fn free_dead_records<L: Liveness>(
    entries: &[AtomicChannelEntry],
    records: &[AtomicPeerRecord],
    liveness: &L,
    my_pid: u32,
) -> RepairReport {
    free_dead_records_with(entries, records, liveness, my_pid, &no_blocks)
}

/// [`free_dead_records`] that calls `before_free` for each dead record before freeing it.
pub fn free_dead_records_with<L: Liveness>(
    entries: &[AtomicChannelEntry],
    records: &[AtomicPeerRecord],
    liveness: &L,
    my_pid: u32,
    before_free: BeforeFree<'_>,
) -> RepairReport {
    let mut judged = Judged::new(liveness);
    let mut report = RepairReport::default();
    for (index, record) in records.iter().enumerate() {
        let pid = record.pid.load(Acquire);
        if pid == 0 || pid == my_pid || record.intent_count.load(Acquire) != 0 {
            continue;
        }
        let start_time = record.start_time.load(Acquire);
        if judged.alive(index, record, pid, start_time) {
            continue;
        }
        if !take_over(record, pid, start_time, my_pid) {
            continue;
        }
        if record.intent_count.load(Acquire) != 0 {
            // Only a live owner writes an intent: it was misjudged. Give it back untouched.
            record.start_time.store(start_time, Relaxed);
            record.pid.store(pid, Release);
            continue;
        }
        report.blocks_reclaimed += before_free(index);
        if give_back_wait(record, entries) {
            report.waits_given_back += 1;
        }
        record.pid_ns.store(0, Relaxed);
        record.start_time.store(0, Relaxed);
        record.pid.store(0, Release);
        report.records_freed += 1;
    }
    report
}

/// Gives back the wait of a dead `record` that we took over (PROTOCOL.md §11.9): if its owner
/// was counted in a wait count of its channel and we win its `waiting` word back to 0 (the
/// owner, if it was misjudged and wakes up, then leaves the count alone), decrements that
/// count, never below 0 (a forged word can only take a live waiter out of the count, which
/// delays its wake-up by one wait slice). True when a count was decremented.
///
/// The counts live in the header's channel table, so any id below 256 names words inside the
/// segment; the channel need not be valid or opened.
fn give_back_wait(record: &AtomicPeerRecord, entries: &[AtomicChannelEntry]) -> bool {
    let kind = record.waiting.load(Acquire);
    if kind == peer_waiting::NONE {
        return false;
    }
    let entry = entries.get(record.channel_id.load(Relaxed) as usize);
    let count = match (kind, entry) {
        (peer_waiting::NOT_EMPTY, Some(entry)) => &entry.not_empty_waiters,
        (peer_waiting::NOT_FULL, Some(entry)) => &entry.not_full_waiters,
        _ => {
            // Garbage, or a channel id out of range: nothing to give back.
            record.waiting.store(peer_waiting::NONE, Relaxed);
            return false;
        }
    };
    if record
        .waiting
        .compare_exchange(kind, peer_waiting::NONE, AcqRel, Relaxed)
        .is_err()
    {
        return false;
    }
    count
        .fetch_update(SeqCst, Relaxed, |waiters| waiters.checked_sub(1))
        .is_ok()
}

/// A dead record being repaired, as read after taking it over.
struct Dead {
    index: usize,
    role: PeerRole,
    first: u64,
    count: u32,
    /// The intent is one run (`intent_flags`, PROTOCOL.md §12.5).
    run: bool,
    pid: u32,
    runtime: u16,
}

/// Repairs the stuck positions of one dead record's intent.
fn repair_intent<W: WaitStrategy, L: Liveness>(
    channel: &Channel<'_, W>,
    records: &[AtomicPeerRecord],
    dead: &Dead,
    judged: &mut Judged<'_, L>,
    my_pid: u32,
    report: &mut RepairReport,
) -> Done {
    let role = dead.role;
    let capacity = channel.capacity();
    let count = u64::from(dead.count).min(capacity);
    // The cursor first, with acquire: its claimants' intents (written before their release
    // CAS) are then visible to the scan of live intents below.
    let cursor = match role {
        PeerRole::Producer => channel.entry().tail.load(Acquire),
        PeerRole::Consumer => channel.entry().head.load(Acquire),
    };
    // Sequence value of a stuck position: claimed and not published (producer), or
    // published, claimed and not freed (consumer).
    let stuck = |p: u64| match role {
        PeerRole::Producer => p,
        PeerRole::Consumer => p.wrapping_add(1),
    };
    let mut done = Done::Complete;
    let mut repaired = false;
    // A dead producer's run is one message: its continuations become SKIP markers, then its
    // first position the one LOST tombstone (PROTOCOL.md §12.5).
    let run = dead.run && role == PeerRole::Producer && count > 1;
    let order = if run { 1..count } else { 0..count };
    for k in order.chain(run.then_some(0)) {
        let p = dead.first.wrapping_add(k);
        // Claimed (behind the cursor) and within the last lap.
        let behind = cursor.wrapping_sub(p);
        if behind == 0 || behind > capacity {
            continue;
        }
        let slot = channel.slot(p);
        if slot.sequence.load(Acquire) != stuck(p) {
            continue;
        }
        if covered(channel.id(), records, dead.index, role, p, judged, my_pid) {
            done = Done::Deferred;
            continue;
        }
        // Re-read after the intents: an owner that finished meanwhile has moved it on.
        if slot.sequence.load(Acquire) != stuck(p) {
            continue;
        }
        // By CAS from the stuck state: an owner that was alive after all and finishes now wins,
        // and its slot state is never written over (PROTOCOL.md §11.7).
        match role {
            PeerRole::Producer if run && k != 0 => {
                if !channel.skip_marker(p) {
                    continue;
                }
                report.skipped += 1;
            }
            PeerRole::Producer => {
                if !channel.tombstone(p, dead.pid, dead.runtime) {
                    continue;
                }
                report.tombstoned += 1;
            }
            PeerRole::Consumer => {
                if !channel.force_free(p) {
                    continue;
                }
                report.freed += 1;
            }
        }
        repaired = true;
    }
    if repaired {
        match role {
            PeerRole::Producer => channel.notify_consumers(),
            PeerRole::Consumer => channel.notify_producers(),
        }
    }
    done
}

/// The length of the run a registered producer of `channel` has claimed at `position`, if
/// its record names one there (`intent_flags`, PROTOCOL.md §12.5).
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn run_intent_at(
    records: &[AtomicPeerRecord],
    channel: u32,
    position: u64,
) -> Option<u64> {
    records.iter().find_map(|record| {
        let count = record.intent_count.load(Acquire);
        let run = record.intent_flags.load(Relaxed) & intent_flags::RUN != 0;
        let matches = run
            && count > 1
            && record.pid.load(Relaxed) != 0
            && record.role.load(Relaxed) == PeerRole::Producer.code()
            && record.channel_id.load(Relaxed) == channel
            && record.intent_position.load(Relaxed) == position;
        matches.then_some(u64::from(count))
    })
}

/// True when a record other than `except`, of the same channel and role, has an intent
/// covering `p` and either comes first in the table (its own repair handles `p`) or belongs to
/// a live process (it owns `p`, or is about to learn its CAS failed).
fn covered<L: Liveness>(
    channel: u32,
    records: &[AtomicPeerRecord],
    except: usize,
    role: PeerRole,
    p: u64,
    judged: &mut Judged<'_, L>,
    my_pid: u32,
) -> bool {
    records.iter().enumerate().any(|(index, record)| {
        if index == except {
            return false;
        }
        let pid = record.pid.load(Acquire);
        if pid == 0 {
            return false;
        }
        let count = record.intent_count.load(Acquire);
        let first = record.intent_position.load(Relaxed);
        if count == 0
            || p.wrapping_sub(first) >= u64::from(count)
            || record.channel_id.load(Relaxed) != channel
            || record.role.load(Relaxed) != role.code()
        {
            return false;
        }
        index < except
            || pid == my_pid
            || judged.alive(index, record, pid, record.start_time.load(Relaxed))
    })
}
