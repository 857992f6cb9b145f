//! A channel that owns its mapping: the mapping (an `Arc`) and a core `Channel` borrowing it,
//! tied together with `self_cell` so no hand-written unsafe is needed.

use std::sync::Arc;
use std::time::Instant;

use dmxp_nostd::{Channel, Error as CoreError, Segment};
use self_cell::self_cell;

use crate::error::{Error, ErrorKind, Result};
use crate::memory::{retry_until, Backing, SharedMemory};
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
}

impl OpenChannel {
    pub fn channel(&self) -> &FutexChannel<'_> {
        self.cell.borrow_dependent()
    }
}

/// What to do when the channel does not exist.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Missing {
    /// Create it with this capacity.
    Create(u64),
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
    let cell = retry_until(
        deadline,
        || {
            let opened = ChannelCell::try_new(Arc::clone(&backing.memory), |memory| {
                let segment =
                    Segment::attach(memory.region())?.with_wait_strategy(FutexWait::new());
                match missing {
                    Missing::Create(capacity) => segment
                        .open_or_create_channel(id, capacity, pid)
                        .map(|(channel, _)| channel),
                    Missing::Fail => segment.open_channel(id),
                }
            });
            match opened {
                Ok(cell) => Ok(Some(cell)),
                Err(CoreError::ChannelBeingCreated { .. }) => Ok(None),
                Err(CoreError::ChannelNotFound { id }) => Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "{label}: channel {id} does not exist (no producer has created it yet?)"
                    ),
                )),
                Err(other) => Err(Error::from_core(other, label)),
            }
        },
        || Error::from_core(CoreError::ChannelBeingCreated { id }, label),
    )?;
    Ok(OpenChannel {
        cell,
        label: Arc::clone(label),
    })
}
