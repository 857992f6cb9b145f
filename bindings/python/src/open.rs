//! Opening a channel, and the timeouts of blocking calls.
//!
//! The facade (`dmxp::ChannelBuilder`, `SharedMemoryAllocator`) creates or attaches to the
//! segment and creates the channel, race-free across processes. The extension then opens its
//! own core `Channel` over the same mapping, so that it can stamp messages with
//! `sender_runtime = 3` (Python) and build Python objects straight from the ring; each handle
//! registers its own peer records over it (`peer`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dmxp::core::layout::MSG_INLINE;
use dmxp::core::{Channel, Segment};
use dmxp::{
    BlobPoolSpec, ChannelBuilder, ChannelOptions, ErrorKind, FutexWait, SharedMemory,
    SharedMemoryAllocator,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use self_cell::self_cell;

use crate::errors;

pub(crate) type FutexChannel<'a> = Channel<'a, FutexWait>;

self_cell!(
    /// The mapping and the channel opened in it.
    pub(crate) struct OpenChannel {
        owner: SharedMemory,

        #[covariant]
        dependent: FutexChannel,
    }
);

/// An open channel and the label of its segment (`shm segment /dmxp_alloc`).
pub(crate) struct Opened {
    pub channel: Arc<OpenChannel>,
    pub label: String,
    /// The segment's allocator (sharing the mapping), which opens the facade handle an async
    /// wait arms (`event`).
    pub allocator: SharedMemoryAllocator,
}

/// Where and how to open.
pub(crate) struct Target {
    pub segment: String,
    pub channel_id: u32,
    /// `Some(capacity)`: create the segment and the channel if missing (producer).
    pub create: Option<u64>,
    /// The largest message of a channel this creates (960 or less: single-slot messages).
    pub max_message_size: usize,
    pub size: usize,
    /// Records of the peer table of a segment this creates (0: the default 256).
    pub peer_records: u32,
    /// How long to wait for a segment or channel that another process is still creating.
    pub timeout: Duration,
    /// How long to keep retrying while the segment or channel does not exist (consumer).
    pub wait: Duration,
    /// Refuse a channel that carries runs (messages longer than one slot, PROTOCOL.md §12.1)
    /// with `RunsNotSupportedError`, and a `max_message_size` above 960 with
    /// `InvalidInputError` before anything is opened.
    pub single_slot_only: bool,
    /// Which existing segments to attach to.
    pub trust: Trust,
    /// The blob pool (PROTOCOL.md §13) of a segment this creates, and whether a channel this
    /// creates carries blobs (`Some`). An existing segment and channel keep what they have.
    pub blob_pool: Option<BlobPoolSpec>,
}

/// The attach rule asked for (PROTOCOL.md §3.4): owners trusted besides this process's own
/// user, and the mode of a created segment, which is also the widest mode accepted in an
/// existing one.
#[derive(Clone, Debug)]
pub(crate) struct Trust {
    pub owners: Vec<u32>,
    pub mode: u32,
}

impl Trust {
    /// From the `trust_owner` and `mode` arguments: `trust_owner` is `None`, one uid, or an
    /// iterable of uids; `mode` holds permission bits only (at most `0o777`). How many owners
    /// may be trusted is the facade's rule (it refuses more than four when opening).
    pub fn from_args(
        py: Python<'_>,
        trust_owner: Option<&Bound<'_, PyAny>>,
        mode: i64,
    ) -> PyResult<Self> {
        let Some(mode) = u32::try_from(mode).ok().filter(|m| m & !0o777 == 0) else {
            let shown = if mode < 0 {
                mode.to_string()
            } else {
                format!("{mode:#o}")
            };
            return Err(errors::invalid(
                py,
                format!("mode {shown} is not permission bits (0 to 0o777)"),
            ));
        };
        let owners = match trust_owner {
            None => Vec::new(),
            // An int (or anything usable as one): a single uid.
            Some(value) if value.hasattr("__index__")? => vec![uid(py, value)?],
            Some(value)
                if value.is_instance_of::<PyString>() || value.is_instance_of::<PyBytes>() =>
            {
                return Err(not_uids(py, value));
            }
            Some(value) => {
                let items = value.try_iter().map_err(|_| not_uids(py, value))?;
                items
                    .map(|item| uid(py, &item?))
                    .collect::<PyResult<Vec<u32>>>()?
            }
        };
        Ok(Self { owners, mode })
    }

    /// `builder` with this rule applied.
    pub fn apply(&self, builder: ChannelBuilder) -> ChannelBuilder {
        self.owners
            .iter()
            .fold(builder, |b, &uid| b.with_trust_owner(uid))
            .with_mode(self.mode)
    }
}

/// One uid of `trust_owner` (0 to 2**32 - 1).
fn uid(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<u32> {
    value
        .extract::<u32>()
        .map_err(|_| errors::invalid(py, format!("trust_owner: {} is not a uid", repr(value))))
}

fn not_uids(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyErr {
    errors::invalid(
        py,
        format!(
            "trust_owner is a uid or a sequence of uids, not {}",
            repr(value)
        ),
    )
}

fn repr(value: &Bound<'_, PyAny>) -> String {
    value
        .repr()
        .map_or_else(|_| "that value".to_owned(), |r| r.to_string())
}

/// Seconds from Python to a duration; `None` for "no limit" (negative or infinite).
pub(crate) fn seconds(py: Python<'_>, secs: f64, what: &str) -> PyResult<Option<Duration>> {
    if secs.is_nan() {
        return Err(errors::invalid(py, format!("{what} is NaN")));
    }
    if secs < 0.0 {
        return Ok(None);
    }
    Ok(Duration::try_from_secs_f64(secs).ok())
}

/// An optional number of seconds (`None`, negative or infinite: no limit), as the handles'
/// constructors take `timeout` and `wait`.
pub(crate) fn limit(py: Python<'_>, secs: Option<f64>, what: &str) -> PyResult<Duration> {
    match secs {
        None => Ok(Duration::MAX),
        Some(secs) => Ok(seconds(py, secs, what)?.unwrap_or(Duration::MAX)),
    }
}

/// When a blocking call gives up.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Do not wait at all.
    No,
    /// Wait this long from the first look at the clock ([`Wait::slice`]), which a call makes
    /// only once its first, non-blocking attempt has failed: a call that does not have to wait
    /// never reads the clock for its deadline.
    Within(Duration),
    /// Wait until this instant.
    Until(Instant),
    /// Wait without a deadline (in bounded slices, checking for signals between them).
    Forever,
}

/// Longest sleep without the GIL before re-checking Python signals (Ctrl-C).
const SLICE: Duration = Duration::from_millis(100);

impl Wait {
    /// The convention of every `timeout=` argument, as in Python's standard library
    /// (`queue.Queue.get`, sockets): `None` no deadline (wait forever), `0` no wait, a
    /// positive number that many seconds, a negative or infinite number no deadline; NaN is
    /// refused. The deadline is fixed when the call first has to wait (`Within`).
    pub fn from_timeout(py: Python<'_>, timeout: Option<f64>) -> PyResult<Self> {
        match timeout {
            None => Ok(Wait::Forever),
            // The default of the calls that do not wait, without the float conversion.
            Some(0.0) => Ok(Wait::No),
            Some(secs) => match seconds(py, secs, "timeout")? {
                Some(duration) if duration.is_zero() => Ok(Wait::No),
                Some(duration) => Ok(Wait::Within(duration)),
                None => Ok(Wait::Forever),
            },
        }
    }

    /// A deadline `duration` from now (`None` = forever).
    pub fn after(duration: Option<Duration>) -> Self {
        match duration.and_then(|d| Instant::now().checked_add(d)) {
            Some(deadline) => Wait::Until(deadline),
            None => Wait::Forever,
        }
    }

    /// This wait with the deadline of `Within` fixed now: for a call that waits in several
    /// phases (each taking a copy) within one deadline.
    pub fn started(mut self) -> Self {
        self.start();
        self
    }

    /// Fixes the deadline of `Within` (from now); the other kinds stay as they are.
    fn start(&mut self) {
        if let Wait::Within(duration) = *self {
            *self = Self::after(Some(duration));
        }
    }

    /// The end of the next sleep: at most `SLICE` from now, `None` once the deadline has
    /// passed (or for `No`). The first call fixes the deadline of `Within`.
    pub fn slice(&mut self) -> Option<Instant> {
        self.start();
        let now = Instant::now();
        let slice_end = now.checked_add(SLICE);
        match *self {
            Wait::No => None,
            Wait::Forever => slice_end,
            Wait::Until(deadline) if now < deadline => {
                Some(slice_end.map_or(deadline, |end| end.min(deadline)))
            }
            Wait::Until(_) | Wait::Within(_) => None,
        }
    }

    /// True when the deadline has passed (fixing that of `Within` first).
    pub fn expired(&mut self) -> bool {
        self.start();
        match *self {
            Wait::No => true,
            Wait::Forever => false,
            Wait::Until(deadline) => Instant::now() >= deadline,
            Wait::Within(_) => true,
        }
    }
}

/// Opens the channel of `target`, releasing the GIL while the facade waits.
pub(crate) fn open(py: Python<'_>, target: &Target) -> PyResult<Opened> {
    if target.single_slot_only && target.max_message_size > MSG_INLINE {
        return Err(errors::invalid(
            py,
            format!(
                "channel {}: single_slot_only=True and max_message_size={} contradict each \
                 other (one slot holds {MSG_INLINE} bytes)",
                target.channel_id, target.max_message_size
            ),
        ));
    }
    let mut retry_until = Wait::after(Some(target.wait));
    loop {
        match py.detach(|| open_once(target)) {
            Ok(opened) => return Ok(opened),
            Err(OpenError::Facade(e)) if e.kind() == ErrorKind::NotFound => {
                if retry_until.expired() {
                    return Err(errors::from_facade(py, &e));
                }
                py.detach(|| std::thread::sleep(Duration::from_millis(5)));
                py.check_signals()?;
            }
            Err(OpenError::Facade(e)) => return Err(errors::from_facade(py, &e)),
            Err(OpenError::Core(e, label)) => return Err(errors::from_core(py, e, &label)),
            Err(OpenError::RunsNotSupported {
                channel,
                max_message_size,
                label,
            }) => {
                return Err(errors::runs_not_supported(
                    py,
                    channel,
                    format!(
                        "{label}: channel {channel} carries messages longer than {MSG_INLINE} \
                         bytes (runs, up to {max_message_size} bytes); refused: \
                         single_slot_only=True"
                    ),
                ))
            }
        }
    }
}

enum OpenError {
    Facade(dmxp::Error),
    Core(dmxp::core::Error, String),
    /// `single_slot_only` and a channel that carries runs (its geometry, as validated at open).
    RunsNotSupported {
        channel: u32,
        max_message_size: usize,
        label: String,
    },
}

fn open_once(target: &Target) -> Result<Opened, OpenError> {
    let builder = target
        .trust
        .apply(ChannelBuilder::new())
        .with_segment_name(target.segment.clone())
        .with_segment_size(target.size)
        .with_peer_records(target.peer_records)
        .with_timeout(target.timeout)
        .with_channel_id(target.channel_id);
    let allocator = match target.create {
        Some(capacity) => {
            let mut builder = builder.with_capacity(capacity);
            let mut options = ChannelOptions::default();
            if target.max_message_size > MSG_INLINE {
                options = options.with_max_message_size(target.max_message_size);
            }
            if let Some(spec) = target.blob_pool {
                // The pool of a segment this creates; the channel carries blobs.
                builder = builder.with_blob_classes(spec);
                options = options.with_blobs();
            }
            let allocator = builder.build_allocator().map_err(OpenError::Facade)?;
            // Creates the channel if it does not exist (or waits while another process does).
            allocator
                .producer_or_create_with(target.channel_id, capacity, options)
                .map_err(OpenError::Facade)?;
            allocator
        }
        None => {
            let allocator = builder.attach_allocator().map_err(OpenError::Facade)?;
            // Fails with NotFound naming the channel when it does not exist.
            allocator
                .consumer(target.channel_id)
                .map_err(OpenError::Facade)?;
            allocator
        }
    };
    let label = allocator.label().to_owned();
    let id = target.channel_id;
    let channel = OpenChannel::try_new(Arc::clone(allocator.memory()), |memory| {
        Segment::attach(memory.region())?
            .with_wait_strategy(FutexWait::new())
            .open_channel(id)
    })
    .map_err(|e| OpenError::Core(e, label.clone()))?;
    let opened = channel.borrow_dependent();
    if target.single_slot_only && opened.geometry().carries_runs() {
        // Refused before any handle registers a peer record; the mapping goes with `channel`.
        return Err(OpenError::RunsNotSupported {
            channel: id,
            max_message_size: opened.max_message_size(),
            label,
        });
    }
    Ok(Opened {
        channel: Arc::new(channel),
        label,
        allocator,
    })
}
