//! The control block every process of a run shares, and the helpers around it.
//!
//! Each run gets its own POSIX shm segment holding the DMXP channels of the run. Its last
//! pages, past any channel's band, hold two slot-sized blocks used only by the benchmark:
//! start/stop flags and per-channel counters (so consumers know when they have drained
//! everything the producers sent), and the floor's ping-pong word. They are reached through
//! the core's checked views (`Region::view`), so no unsafe code is needed here.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use dmxp::core::layout::{AtomicSlot, SLOT_SIZE};
use dmxp::{ChannelBuilder, SharedMemoryAllocator};

use crate::bare_ring::BareRing;

/// Bytes of each run's segment: 8 rings of 1024 slots fit with room to spare.
pub const SEGMENT_SIZE: usize = 16 << 20;
/// Default slots per benchmark channel (and elements per `ArrayQueue`): the facade's default.
pub const CAPACITY: u64 = 1024;
/// Largest capacity that fits 8 rings in [`SEGMENT_SIZE`].
pub const MAX_CAPACITY: u64 = 1024;
/// Where the control blocks start: the last 8 KiB of the segment.
pub const CONTROL_OFFSET: usize = SEGMENT_SIZE - 8192;
/// Where the bare rings of a `bare-ring` run start (such a run makes no DMXP channel, so the
/// band area is free): the middle of the segment, room for [`BARE_RINGS`] rings of
/// [`MAX_CAPACITY`] slots before the control blocks.
pub const BARE_RING_OFFSET: usize = SEGMENT_SIZE / 2;
/// Bare rings a run may use (a ping-pong uses two).
pub const BARE_RINGS: usize = 2;
const _: () = assert!(
    BARE_RING_OFFSET + BARE_RINGS * BareRing::bytes(MAX_CAPACITY) <= CONTROL_OFFSET
        && BARE_RING_OFFSET.is_multiple_of(128)
);

/// Bare ring `index` (below [`BARE_RINGS`]) of `capacity` slots in the segment behind
/// `region`; `None` if the segment is too small or the index or capacity out of range.
#[must_use]
pub fn bare_ring(
    region: dmxp::core::Region<'_>,
    index: usize,
    capacity: u64,
) -> Option<BareRing<'_>> {
    if index >= BARE_RINGS || capacity > MAX_CAPACITY {
        return None;
    }
    let offset = BARE_RING_OFFSET + index * BareRing::bytes(MAX_CAPACITY);
    BareRing::view(region, offset, capacity)
}

const READY: usize = 0;
const GO: usize = 1;
const STOP: usize = 2;
/// Channel groups with counters (the most any shape uses is 4).
pub const GROUPS: usize = 4;
/// Consumers per group with a counter.
pub const CONSUMERS_PER_GROUP: usize = 4;

fn group_base(group: u32) -> usize {
    8 + group as usize * 8
}

/// Spin briefly, then give the core away: the same policy for every busy-polling system, so
/// that processes sharing a core (2->2 and 4 channels on two cores) can make progress.
#[derive(Debug, Default)]
pub struct Backoff {
    spins: u32,
}

impl Backoff {
    const SPIN_LIMIT: u32 = 128;

    /// Starts spinning again (after progress).
    pub fn reset(&mut self) {
        self.spins = 0;
    }

    /// One wait: a spin hint for the first 128 calls since the last reset, then a yield of
    /// the processor.
    pub fn snooze(&mut self) {
        if self.spins < Self::SPIN_LIMIT {
            self.spins += 1;
            spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// The run's segment, attached by name.
pub fn attach(segment: &str) -> dmxp::Result<SharedMemoryAllocator> {
    ChannelBuilder::new()
        .with_segment_name(segment)
        .attach_allocator()
}

/// Views of the control blocks inside a run's segment.
///
/// Its `Debug` shows the flags and the ready count, not the counters.
pub struct Control<'a> {
    main: &'a AtomicSlot,
    floor: &'a AtomicSlot,
}

impl std::fmt::Debug for Control<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("ready", &self.ready_count())
            .field("go", &(self.word(GO).load(SeqCst) != 0))
            .field("stopped", &self.stopped())
            .finish_non_exhaustive()
    }
}

impl<'a> Control<'a> {
    /// The control blocks of the segment behind `region`, at [`CONTROL_OFFSET`]; `None` if
    /// the segment is too small to hold them.
    #[must_use]
    pub fn new(region: dmxp::core::Region<'a>) -> Option<Self> {
        Some(Self {
            main: region.view::<AtomicSlot>(CONTROL_OFFSET)?,
            floor: region.view::<AtomicSlot>(CONTROL_OFFSET + 2 * SLOT_SIZE)?,
        })
    }

    fn word(&self, index: usize) -> &'a AtomicU64 {
        &self.main.payload[index]
    }

    /// A child announces it is set up.
    pub fn announce_ready(&self) {
        self.word(READY).fetch_add(1, SeqCst);
    }

    /// How many children have announced they are ready.
    #[must_use]
    pub fn ready_count(&self) -> u64 {
        self.word(READY).load(SeqCst)
    }

    /// The parent starts the run: every child waiting in [`Self::wait_go`] goes.
    pub fn set_go(&self) {
        self.word(GO).store(1, SeqCst);
    }

    /// Waits for the parent's go (or gives up after `limit`).
    #[must_use = "`false` means the go never came"]
    pub fn wait_go(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut backoff = Backoff::default();
        while self.word(GO).load(SeqCst) == 0 {
            if Instant::now() > deadline {
                return false;
            }
            backoff.snooze();
        }
        true
    }

    /// The parent ends a timed run: children see [`Self::stopped`].
    pub fn set_stop(&self) {
        self.word(STOP).store(1, SeqCst);
    }

    /// Cheap to poll: the word is written once, at the end.
    #[inline]
    #[must_use]
    pub fn stopped(&self) -> bool {
        self.word(STOP).load(std::sync::atomic::Ordering::Relaxed) != 0
    }

    /// A producer of `group` is done, having sent `sent` messages.
    pub fn producer_done(&self, group: u32, sent: u64) {
        let base = group_base(group);
        self.word(base + 1).fetch_add(sent, SeqCst);
        self.word(base).fetch_add(1, SeqCst);
    }

    /// A consumer of `group` publishes how many it has received so far, and learns whether
    /// the group is drained: every producer is done and the consumers together received all
    /// they sent.
    #[must_use]
    pub fn consumer_drained(&self, group: u32, index: usize, producers: usize, got: u64) -> bool {
        let base = group_base(group);
        if self.word(base).load(SeqCst) < producers as u64 {
            return false;
        }
        self.word(base + 2 + index).store(got, SeqCst);
        let sent = self.word(base + 1).load(SeqCst);
        let received: u64 = (0..CONSUMERS_PER_GROUP)
            .map(|c| self.word(base + 2 + c).load(SeqCst))
            .sum();
        received >= sent
    }

    /// The floor's spinning word.
    #[must_use]
    pub fn floor_word(&self) -> &'a AtomicU64 {
        &self.floor.sequence
    }

    /// The floor's futex word (32 bits, as futexes are).
    #[must_use]
    pub fn floor_futex(&self) -> &'a AtomicU32 {
        &self.floor.meta.payload_len
    }
}

/// CPUs this process may run on, in order.
#[must_use]
pub fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&cpu| set.is_set(cpu))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Pins the calling thread to `cpu` (best effort: a refusal leaves it unpinned).
pub fn pin(cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        let _ = rustix::thread::sched_setaffinity(None, &set);
    }
}
