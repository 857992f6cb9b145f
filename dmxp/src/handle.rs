//! A channel that owns its mapping: the mapping (an `Arc`) and a core `Channel` borrowing it,
//! tied together with `self_cell` so no hand-written unsafe is needed.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use dmxp_nostd::layout::runtime;
use dmxp_nostd::{
    Channel, ChannelOptions, Error as CoreError, PeerRole, PeerSlot, RepairReport, Segment,
};
use self_cell::self_cell;

use crate::error::{Error, ErrorKind, Result};
use crate::memory::{retry_until, Backing, SharedMemory};
use crate::recovery::{process_alive, ProcLiveness, StuckWatch};
use crate::wait::FutexWait;

pub(crate) type FutexChannel<'a> = Channel<'a, FutexWait>;

self_cell!(
    /// The mapping and the channel opened in it.
    pub(crate) struct ChannelCell {
        owner: SharedMemory,

        #[covariant]
        dependent: FutexChannel,
    }
);

/// An open channel shared by clones of a `Producer` or `Consumer`.
pub(crate) struct OpenChannel {
    pub cell: ChannelCell,
    pub label: Arc<str>,
    /// After how long a position a live peer holds is repaired anyway (PROTOCOL.md §11.8).
    pub unblock: std::time::Duration,
}

impl OpenChannel {
    pub fn channel(&self) -> &FutexChannel<'_> {
        self.cell.borrow_dependent()
    }
}

/// One handle's view of an open channel: the channel writing this handle's intents, and the
/// peer record it writes them to (none when the table is full or could not be carved).
pub(crate) struct Peered<'a> {
    pub channel: FutexChannel<'a>,
    pub slot: Option<PeerSlot<'a>>,
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
    /// A producer's or consumer's own registration over the shared open channel. Not `Sync`:
    /// its peer record holds one intent at a time.
    pub(crate) struct HandleCell {
        owner: Arc<OpenChannel>,

        #[covariant]
        dependent: Peered,
    }
);

impl HandleCell {
    /// Registers a new peer record of `role` for a handle on `open` (PROTOCOL.md §11.3). A
    /// handle that cannot register (table full, no room for it, a corrupt table) still works,
    /// without crash protection.
    pub fn register(open: Arc<OpenChannel>, role: PeerRole) -> Self {
        HandleCell::new(open, |open| {
            let base = open.channel();
            let slot = Segment::attach(open.cell.borrow_owner().region())
                .and_then(|segment| {
                    // Records of dead peers without an intent are freed first, so that crash
                    // churn never fills the table (the others wait for their channel's repair).
                    let _ = segment.free_dead_records(&ProcLiveness, std::process::id());
                    segment.register_in_namespace(
                        base.id(),
                        role,
                        std::process::id(),
                        crate::recovery::own_start_time(),
                        crate::recovery::own_pid_namespace(),
                        runtime::RUST,
                    )
                })
                .ok();
            let channel = match &slot {
                Some(slot) => base.clone().with_peer(slot),
                None => base.clone(),
            };
            #[cfg(feature = "test-hooks")]
            let channel = channel.with_test_hook(Some(crate::recovery::test_hooks::trampoline));
            Peered { channel, slot }
        })
    }

    /// The channel as this handle uses it.
    pub fn channel(&self) -> &FutexChannel<'_> {
        &self.borrow_dependent().channel
    }

    pub fn open(&self) -> &Arc<OpenChannel> {
        self.borrow_owner()
    }

    pub fn is_registered(&self) -> bool {
        self.borrow_dependent().slot.is_some()
    }

    /// Frees the blob-pool blocks nobody will free (PROTOCOL.md §13.6): the dead peers'
    /// (with their records) first, then leaked and orphaned ones. Returns the blocks freed.
    pub fn reclaim_blobs(&self) -> u32 {
        let Ok(segment) = Segment::attach(self.borrow_owner().cell.borrow_owner().region()) else {
            return 0;
        };
        let dead = segment
            .free_dead_records(&ProcLiveness, std::process::id())
            .map_or(0, |report| report.blocks_reclaimed);
        dead + segment.reclaim_blobs().unwrap_or(0)
    }

    /// Whether a peer has shrunk the segment under this mapping (`fstat`, for backends whose
    /// memory can shrink). Called before and after every sleep of a blocking call: touching
    /// the lost pages would raise `SIGBUS`, so a waiting handle reports
    /// [`ErrorKind::Truncated`] instead of going back to the ring.
    pub fn check_size(&self) -> Result<()> {
        let open = self.borrow_owner();
        let memory = open.cell.borrow_owner();
        let mapped = memory.region().len() as u64;
        match memory.current_len() {
            Some(found) if found < mapped => Err(Error::new(
                ErrorKind::Truncated {
                    expected: mapped,
                    found,
                },
                format!(
                    "{}: segment truncated under this mapping: expected {mapped} bytes, found \
                     {found} (another process shrank it; nothing more is read or written)",
                    open.label
                ),
            )),
            _ => Ok(()),
        }
    }

    /// After an operation found the ring empty (`holder` = the producers, one of which may
    /// hold the position at `head`) or full (`holder` = the consumers): repairs the channel if
    /// `watch` says it has been stuck long enough, a dead peer's position after
    /// [`crate::STUCK_GRACE`] and a stopped peer's after the unblock timeout. True when
    /// something was repaired (try again).
    pub fn repair_if_stuck(&self, watch: &StuckWatch, holder: PeerRole) -> bool {
        watch.repair_if_stuck(
            self.channel(),
            holder,
            || self.recover().is_ok_and(|report| report.repaired()),
            |position| self.unblock(position, holder),
        )
    }

    /// Unblocks `position`, held by a live but stopped `holder` (PROTOCOL.md §11.8): a whole
    /// run at once when the holder's record says it claimed one (§12.5).
    fn unblock(&self, position: u64, holder: PeerRole) -> bool {
        let open = self.borrow_owner();
        match Segment::attach(open.cell.borrow_owner().region()) {
            Ok(segment) => segment.unblock(self.channel(), position, holder),
            Err(_) => self.channel().unblock(position, holder),
        }
    }

    /// One repair pass for this channel (PROTOCOL.md §11.6).
    pub fn recover(&self) -> Result<RepairReport> {
        let open = self.borrow_owner();
        let segment = Segment::attach(open.cell.borrow_owner().region())
            .map_err(|e| Error::from_core(e, &open.label))?;
        segment
            .repair(
                self.channel(),
                &crate::recovery::ProcLiveness,
                std::process::id(),
                crate::recovery::own_start_time(),
            )
            .map_err(|e| Error::from_core(e, &open.label))
    }
}

/// What to do when the channel does not exist.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Missing {
    /// Create it with this capacity and these options.
    Create(u64, ChannelOptions),
    /// Fail with `NotFound`.
    Fail,
}

/// Opens channel `id` in `backing`, creating it if asked. Retries while another process is
/// creating it, until `deadline`.
pub(crate) fn open_channel(
    backing: &Backing,
    id: u32,
    missing: Missing,
    deadline: Instant,
) -> Result<OpenChannel> {
    let pid = std::process::id();
    let label = &backing.label;
    let creator = Cell::new(0);
    let cell = retry_until(
        deadline,
        || {
            let opened = ChannelCell::try_new(Arc::clone(&backing.memory), |memory| {
                let segment =
                    Segment::attach(memory.region())?.with_wait_strategy(FutexWait::new());
                match missing {
                    Missing::Create(capacity, options) => {
                        match segment.open_or_create_channel_with(id, capacity, pid, options) {
                            Ok((channel, _)) => Ok(channel),
                            // Left half-made by a creator that died? Take it over (§5.3).
                            Err(CoreError::ChannelBeingCreated { .. }) => segment
                                .reclaim_channel_with(id, capacity, pid, options, &ProcLiveness),
                            Err(other) => Err(other),
                        }
                    }
                    Missing::Fail => segment.open_channel(id),
                }
            });
            match opened {
                Ok(cell) => Ok(Some(cell)),
                Err(CoreError::ChannelBeingCreated { .. }) => {
                    channel_pending(backing, id, &creator).map(|()| None)
                }
                Err(CoreError::ChannelNotFound { id }) => Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "{label}: channel {id} does not exist (no producer has created it yet?)"
                    ),
                )),
                Err(other) => Err(Error::from_core(other, label)),
            }
        },
        || channel_still_being_created(label, id, creator.get()),
    )?;
    Ok(OpenChannel {
        cell,
        label: Arc::clone(label),
        unblock: backing.unblock,
    })
}

/// Channel `id` is `CREATING`: notes its creator's pid, and fails with
/// [`ErrorKind::Abandoned`] when that creator is dead (only a caller that may create takes the
/// channel over, and it got here only if it could not).
fn channel_pending(backing: &Backing, id: u32, creator: &Cell<u32>) -> Result<()> {
    let segment = Segment::attach(backing.memory.region())
        .map_err(|e| Error::from_core(e, &backing.label))?;
    let pid = match segment.channel_creator(id) {
        Ok(Some(pid)) => pid,
        _ => return Ok(()),
    };
    creator.set(pid);
    if pid != 0 && !process_alive(pid, 0) {
        return Err(Error::new(
            ErrorKind::Abandoned { creator_pid: pid },
            format!(
                "{}: channel {id} abandoned: its creator (pid {pid}) died before finishing it; \
                 a producer re-creates it",
                backing.label
            ),
        ));
    }
    Ok(())
}

/// The timeout error for a channel that stayed `CREATING`.
fn channel_still_being_created(label: &str, id: u32, creator: u32) -> Error {
    let by = match creator {
        0 => "a creator that has not recorded its pid".to_owned(),
        pid => format!("pid {pid}"),
    };
    Error::new(
        ErrorKind::Timeout,
        format!("{label}: channel {id} still being created by {by}"),
    )
}
