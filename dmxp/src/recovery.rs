//! Crash recovery on Linux (PROTOCOL.md §11): process liveness guarded against pid reuse, and
//! the stuck-channel watch that producers and consumers run when an operation finds the ring
//! empty or full.

use std::cell::Cell;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dmxp_nostd::{Channel, Liveness, PeerRole, WaitStrategy};
use rustix::io::Errno;
use rustix::process::{test_kill_process, Pid};

use crate::producer::monotonic_ns;

/// How long a channel must stay stuck at one position before a producer or consumer runs a
/// repair: a live peer needs microseconds between claiming a position and publishing (or
/// freeing) it. While stuck, blocking calls re-check at least this often.
pub const STUCK_GRACE: Duration = Duration::from_millis(10);

/// Whether process `pid` is alive and is the process that had `start_time` (0 = unknown:
/// any process with that pid counts). Dead: `kill(pid, 0)` fails with `ESRCH`, or
/// `/proc/<pid>/stat` shows a zombie, or a different start time (the pid was reused).
/// `EPERM` (another user's process) counts as alive.
///
/// This is what crash recovery uses to judge the owners of peer records; tools listing the
/// records (`Segment::peers`) can use it to show which are dead.
#[must_use]
pub fn process_alive(pid: u32, start_time: u64) -> bool {
    let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        // 0 or beyond any pid the kernel hands out.
        return false;
    };
    // Any other answer (success, EPERM for another user's process) means it exists.
    if let Err(Errno::SRCH) = test_kill_process(raw) {
        return false;
    }
    match proc_stat(pid) {
        Some(stat) => stat.state != 'Z' && (start_time == 0 || stat.start_time == start_time),
        // Gone between the two checks, or no /proc to tell: trust kill's answer unless the
        // process has disappeared since.
        None => !matches!(test_kill_process(raw), Err(Errno::SRCH)),
    }
}

/// Whether the owner of peer record `record` counts as alive for this process: a record of
/// another pid namespace always does (its pid means nothing here, PROTOCOL.md §11.5), others
/// by [`process_alive`]. What tools listing records (`dmxp inspect`, `dmxp clean`) use.
///
/// ```
/// let mut record = dmxp::core::layout::PeerRecord {
///     pid: std::process::id(),
///     start_time: 0,
///     pid_ns: 0,
///     ..Default::default()
/// };
/// assert!(dmxp::peer_alive(&record));
/// record.pid = u32::MAX - 1; // no such process here...
/// assert!(!dmxp::peer_alive(&record));
/// record.pid_ns = dmxp::own_pid_namespace() ^ 1; // ...unless it lives in another namespace
/// assert!(dmxp::peer_alive(&record));
/// ```
#[must_use]
pub fn peer_alive(record: &dmxp_nostd::layout::PeerRecord) -> bool {
    !ProcLiveness.judges(record.pid_ns) || process_alive(record.pid, record.start_time)
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`, clock ticks since boot),
/// if it exists and `/proc` is mounted.
#[must_use]
pub fn process_start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|stat| stat.start_time)
}

/// A value of this process read once and kept with the pid it was read for: a child forked
/// after the parent read it inherits the cache, and must read its own.
struct PerProcess(Mutex<Option<(u32, u64)>>);

impl PerProcess {
    const fn new() -> Self {
        Self(Mutex::new(None))
    }

    fn get(&self, read: impl FnOnce(u32) -> u64) -> u64 {
        let pid = std::process::id();
        let mut cached = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match *cached {
            Some((for_pid, value)) if for_pid == pid => value,
            _ => {
                let value = read(pid);
                *cached = Some((pid, value));
                value
            }
        }
    }
}

/// This process's pid namespace: the inode of `/proc/self/ns/pid` (0 if it cannot be read),
/// read once per process (again in a forked child, which may be in another namespace after
/// `unshare`).
#[must_use]
pub fn own_pid_namespace() -> u64 {
    static CACHED: PerProcess = PerProcess::new();
    CACHED.get(|_| rustix::fs::stat("/proc/self/ns/pid").map_or(0, |st| st.st_ino))
}

/// This process's start time (0 if `/proc` cannot tell), read once per process.
///
/// Cached with the pid it was read for: a child forked after its parent used DMXP inherits the
/// cache, and registering with the parent's start time would make every checker judge the
/// child dead (a reused pid) and repair its positions under it.
#[must_use]
pub fn own_start_time() -> u64 {
    static CACHED: PerProcess = PerProcess::new();
    CACHED.get(|pid| process_start_time(pid).unwrap_or(0))
}

struct Stat {
    state: char,
    start_time: u64,
}

fn proc_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses `/proc/<pid>/stat`: `pid (comm) state ppid …`. `comm` may hold spaces and
/// parentheses, so the fields are counted from after the last `)`: state is field 3,
/// starttime field 22.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4..=21 lie between state and starttime.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_time })
}

/// The [`Liveness`] of crash recovery on Linux: [`process_alive`], and only records of this
/// process's own pid namespace (or an unrecorded one) are judged (PROTOCOL.md §11.5).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcLiveness;

impl Liveness for ProcLiveness {
    fn is_alive(&self, pid: u32, start_time: u64) -> bool {
        process_alive(pid, start_time)
    }

    /// Only records of our own pid namespace (or of an unknown one) can be judged by pid.
    fn judges(&self, pid_ns: u64) -> bool {
        let own = own_pid_namespace();
        pid_ns == 0 || own == 0 || pid_ns == own
    }
}

/// Non-blocking calls in a row that found the ring full (producers) or empty (consumers).
///
/// Looking for a stuck position reads the other side's cursor (`head` for a producer, `tail`
/// for a consumer). Done on every miss, a spinning handle pulls that cache line away from the
/// other side at each of its claims, which then waits for it to come back (measured: a third
/// of the 32-byte throughput, and 130 ns of ping-pong latency). So a non-blocking call looks
/// only once [`Self::THRESHOLD`] misses have come in a row, which a channel in steady flow
/// rarely reaches; a blocking call, about to sleep, always looks. Looking only starts the
/// watch: a repair still needs the position stuck for [`STUCK_GRACE`].
///
/// ```
/// let misses = dmxp::MissStreak::default();
/// for _ in 1..dmxp::MissStreak::THRESHOLD {
///     assert!(!misses.miss());
/// }
/// assert!(misses.miss(), "the 64th miss in a row looks");
/// assert!(misses.miss(), "still stuck: every further miss looks");
/// misses.hit();
/// assert!(!misses.miss());
/// ```
///
/// A streak belongs to one handle: the type is `Send` but not `Sync` (a plain counter in a
/// `Cell`, no atomic traffic on the fast path).
#[derive(Debug, Default)]
pub struct MissStreak(Cell<u32>);

impl MissStreak {
    /// Misses in a row after which a non-blocking call looks for a stuck position.
    pub const THRESHOLD: u32 = 64;

    /// Counts a miss; true when the streak is long enough to look for a stuck position.
    #[must_use = "the miss is counted either way; `true` says to look for a stuck position now"]
    pub fn miss(&self) -> bool {
        let n = self.0.get().saturating_add(1);
        self.0.set(n);
        n >= Self::THRESHOLD
    }

    /// A call that got through ends the streak.
    #[inline]
    pub fn hit(&self) {
        self.0.set(0);
    }
}

/// Default time after which a position held by a peer that is alive but not moving (stopped,
/// or holding a loan or an in-place guard) is repaired anyway (PROTOCOL.md §11.8).
pub const UNBLOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest pause between two repair passes over a channel that stays stuck.
const MAX_RECHECK: Duration = Duration::from_millis(160);

/// What a [`StuckWatch`] says to do about the channel now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StuckAction {
    /// Nothing (not stuck, or not for long enough, or checked too recently).
    Wait,
    /// Run a repair pass for dead peers (PROTOCOL.md §11.6).
    Repair,
    /// The position has been stuck past the unblock timeout: run a repair pass and, if that
    /// does not free it, unblock the position (its holder is alive but stopped, §11.8).
    Unblock(u64),
}

/// The stuck position a handle last saw, since when, and when to look again. Consulted only on
/// paths where an operation already failed (empty or full), so the fast path never reads the
/// clock. Repair passes over a channel that stays stuck back off from [`STUCK_GRACE`] to 160 ms,
/// so a blocked peer does not burn a CPU judging the same records over and over.
///
/// ```
/// use dmxp::{StuckAction, StuckWatch};
/// use std::time::Duration;
///
/// let watch = StuckWatch::new(Duration::from_millis(50));
/// assert_eq!(watch.check(Some(7)), StuckAction::Wait); // first seen now
/// std::thread::sleep(dmxp::STUCK_GRACE);
/// assert_eq!(watch.check(Some(7)), StuckAction::Repair);
/// watch.checked();
/// std::thread::sleep(Duration::from_millis(60));
/// assert_eq!(watch.check(Some(7)), StuckAction::Unblock(7));
/// assert_eq!(watch.check(None), StuckAction::Wait); // moving again: forgotten
/// ```
///
/// A watch belongs to one handle, as [`MissStreak`] does: the type is `Send` but not `Sync`
/// (its state is in a `Cell`).
#[derive(Debug)]
pub struct StuckWatch {
    unblock: Duration,
    seen: Cell<Option<Seen>>,
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    position: u64,
    since: Instant,
    next: Instant,
    pause: Duration,
}

impl Default for StuckWatch {
    fn default() -> Self {
        Self::new(UNBLOCK_TIMEOUT)
    }
}

impl StuckWatch {
    /// A watch that unblocks positions stuck for `unblock` (`Duration::MAX`: never).
    #[must_use]
    pub fn new(unblock: Duration) -> Self {
        Self {
            unblock,
            seen: Cell::new(None),
        }
    }

    /// Records what the channel looks like now (`position`: the stuck position, if any) and
    /// says what to do. A position is claimed once, so "stuck at p" seen twice means stuck all
    /// along in between.
    #[must_use]
    pub fn check(&self, position: Option<u64>) -> StuckAction {
        let now = Instant::now();
        let Some(p) = position else {
            self.seen.set(None);
            return StuckAction::Wait;
        };
        match self.seen.get() {
            Some(seen) if seen.position == p => {
                if now.duration_since(seen.since) >= self.unblock {
                    StuckAction::Unblock(p)
                } else if now >= seen.next {
                    StuckAction::Repair
                } else {
                    StuckAction::Wait
                }
            }
            _ => {
                self.seen.set(Some(Seen {
                    position: p,
                    since: now,
                    next: now + STUCK_GRACE,
                    pause: STUCK_GRACE,
                }));
                StuckAction::Wait
            }
        }
    }

    /// After a repair pass (or an unblock) that left the position stuck: look again after a
    /// longer pause, up to 160 ms.
    pub fn checked(&self) {
        if let Some(mut seen) = self.seen.get() {
            seen.pause = (seen.pause * 2).min(MAX_RECHECK);
            seen.next = Instant::now() + seen.pause;
            self.seen.set(Some(seen));
        }
    }

    /// Acts on what an operation that found nothing to do sees: the channel's stuck position
    /// for a `holder` (`Channel::stuck_position`), if any. Once it has been stuck for
    /// [`STUCK_GRACE`] it notes since when in the channel's entry (for `dmxp inspect`) and
    /// runs `repair` (one repair pass, true when it repaired something); after the unblock
    /// timeout it also runs `unblock` on the position if the pass did not (true when that
    /// repaired it). Returns true when something was repaired (try the operation again);
    /// otherwise the next look is put off.
    #[must_use = "`true` means something was repaired: try the operation again"]
    pub fn repair_if_stuck<W: WaitStrategy>(
        &self,
        channel: &Channel<'_, W>,
        holder: PeerRole,
        repair: impl FnOnce() -> bool,
        unblock: impl FnOnce(u64) -> bool,
    ) -> bool {
        let action = self.check(channel.stuck_position(holder));
        if action == StuckAction::Wait {
            return false;
        }
        if let Some((stuck, stuck_for)) = self.stuck_for() {
            let since = monotonic_ns().saturating_sub(stuck_for.as_nanos() as u64);
            channel.note_stuck(holder, stuck, since.max(1));
        }
        let repaired = match action {
            StuckAction::Wait => false,
            StuckAction::Repair => repair(),
            StuckAction::Unblock(p) => repair() || unblock(p),
        };
        if !repaired {
            self.checked();
        }
        repaired
    }

    /// The watched stuck position and how long it has been seen stuck.
    #[must_use]
    pub fn stuck_for(&self) -> Option<(u64, Duration)> {
        self.seen
            .get()
            .map(|seen| (seen.position, seen.since.elapsed()))
    }

    /// True while a stuck position is being watched.
    #[must_use]
    pub fn watching(&self) -> bool {
        self.seen.get().is_some()
    }

    /// When the watched position is next due for a look (`None` when nothing is watched):
    /// a blocked call sleeps no longer than this.
    #[must_use]
    pub fn next_check(&self) -> Option<Instant> {
        self.seen.get().map(|seen| {
            let unblock_at = seen.since.checked_add(self.unblock).unwrap_or(seen.next);
            seen.next.min(unblock_at)
        })
    }
}

/// The deadline of one wait: `deadline`, or sooner when the watch is due for a look.
pub(crate) fn slice_deadline(deadline: Option<Instant>, watch: &StuckWatch) -> Option<Instant> {
    match (watch.next_check(), deadline) {
        (None, deadline) => deadline,
        (Some(next), None) => Some(next),
        (Some(next), Some(deadline)) => Some(next.min(deadline)),
    }
}

/// Test hooks (feature `test-hooks`): one hook for the whole process, called at each step of
/// every send and receive of every producer and consumer.
#[cfg(feature = "test-hooks")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-hooks")))]
pub mod test_hooks {
    use std::sync::RwLock;

    pub use dmxp_nostd::hooks::{Hook, Step};

    static HOOK: RwLock<Option<Hook>> = RwLock::new(None);

    /// Sets (or with `None` clears) the process-wide hook.
    pub fn set_hook(hook: Option<Hook>) {
        *HOOK.write().unwrap_or_else(|e| e.into_inner()) = hook;
    }

    /// What every handle's channel calls.
    pub(crate) fn trampoline(step: Step, position: u64) {
        let hook = *HOOK.read().unwrap_or_else(|e| e.into_inner());
        if let Some(hook) = hook {
            hook(step, position);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let tail = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 20 21";
        for comm in ["sleep", "a b", "x) (y", ")", "(("] {
            let stat = parse_stat(&format!("77 ({comm}) {tail}")).unwrap();
            assert_eq!((stat.state, stat.start_time), ('S', 4242), "{comm}");
        }
        assert!(parse_stat("77 (short) S 1 2").is_none());
        assert!(parse_stat("no parens").is_none());
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = std::process::id();
        let start = process_start_time(me).expect("/proc is mounted");
        assert_eq!(own_start_time(), start);
        assert!(process_alive(me, start));
        assert!(process_alive(me, 0));
        assert!(!process_alive(me, start + 1));
        assert!(!process_alive(0, 0));
        assert!(!process_alive(u32::MAX, 0));
    }

    #[test]
    fn a_reaped_child_is_dead_and_a_zombie_too() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: once it has exited it is a zombie, dead for recovery.
        let deadline = Instant::now() + Duration::from_secs(30);
        while process_alive(pid, 0) {
            assert!(Instant::now() < deadline, "child never exited");
            std::thread::sleep(Duration::from_millis(1));
        }
        child.wait().unwrap();
        assert!(!process_alive(pid, 0));
    }

    #[test]
    fn the_watch_repairs_after_the_grace_period_then_backs_off_then_unblocks() {
        let watch = StuckWatch::new(Duration::from_millis(300));
        assert_eq!(watch.check(Some(5)), StuckAction::Wait);
        assert!(watch.watching());
        assert_eq!(
            watch.check(Some(6)),
            StuckAction::Wait,
            "a new position starts over"
        );
        std::thread::sleep(STUCK_GRACE);
        assert_eq!(watch.check(Some(6)), StuckAction::Repair);
        watch.checked();
        // The next look waits twice as long.
        assert_eq!(watch.check(Some(6)), StuckAction::Wait);
        let next = watch.next_check().unwrap();
        assert!(next >= Instant::now() + STUCK_GRACE, "backed off");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(watch.check(Some(6)), StuckAction::Unblock(6));
        assert_eq!(watch.check(None), StuckAction::Wait);
        assert!(!watch.watching());
    }
}
