//! Where a segment comes from, and getting hold of it without races.
//!
//! Creating: exclusively (`O_EXCL`, a file linked into place), so two processes never both
//! format one segment. The loser of that race opens the winner's segment and attaches; while
//! the winner has not finished (the object is still too small, or `magic` is still 0) the
//! loser retries until the builder's timeout, then fails with "still being created". Nothing
//! here ever truncates or unlinks an existing segment, and the only one it reformats is one
//! provably abandoned: `magic` still 0 and the recorded creator dead (PROTOCOL.md §3.3), and
//! only when the caller may create (a consumer gets `ErrorKind::Abandoned` instead).

use std::cell::Cell;
use std::fmt;
#[cfg(any(feature = "file", feature = "memfd"))]
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dmxp_nostd::trust::AttachPolicy;
use dmxp_nostd::{Abandonment, Error as CoreError, FormatOptions, Segment, SegmentMemory};

use crate::error::{Error, ErrorKind, Result};
use crate::recovery::ProcLiveness;

/// A mapped segment shared by every handle that uses it; unmapped when the last one drops.
pub type SharedMemory = Arc<dyn SegmentMemory + Send + Sync>;

/// Default POSIX shm segment name, as in the seed.
pub const DEFAULT_SEGMENT_NAME: &str = "/dmxp_alloc";
/// Default segment size: 128 MiB, as in the seed.
pub const DEFAULT_SEGMENT_SIZE: usize = 128 << 20;
/// Default mode bits of a created segment: owner read/write only.
pub const DEFAULT_MODE: u32 = 0o600;
/// Mode bits of a segment shared with a group (`ChannelBuilder::with_group_access`): owner and
/// group read/write.
pub(crate) const GROUP_MODE: u32 = 0o660;
/// Default time to wait for a segment or channel that another process is creating.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the segment lives.
#[derive(Clone)]
pub(crate) enum Source {
    /// A POSIX shm object by name (`/dmxp_alloc`).
    #[cfg(feature = "shm")]
    Shm(String),
    /// A file mapped with mmap.
    #[cfg(feature = "file")]
    File(PathBuf),
    /// A memfd segment fetched from a segment server's Unix socket.
    #[cfg(feature = "memfd")]
    MemfdSocket(PathBuf),
    /// Memory the caller already holds (a received memfd, any `SegmentMemory`).
    Memory(SharedMemory, String),
    /// No backend compiled in and none given.
    #[cfg(not(feature = "shm"))]
    Unset,
}

#[allow(clippy::derivable_impls)] // not derivable when `shm` is on
impl Default for Source {
    fn default() -> Self {
        #[cfg(feature = "shm")]
        {
            Source::Shm(DEFAULT_SEGMENT_NAME.to_owned())
        }
        #[cfg(not(feature = "shm"))]
        {
            Source::Unset
        }
    }
}

/// Names the source as `Display` does, without the mapping itself.
impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            #[cfg(feature = "shm")]
            Source::Shm(name) => f.debug_tuple("Shm").field(name).finish(),
            #[cfg(feature = "file")]
            Source::File(path) => f.debug_tuple("File").field(path).finish(),
            #[cfg(feature = "memfd")]
            Source::MemfdSocket(path) => f.debug_tuple("MemfdSocket").field(path).finish(),
            Source::Memory(_, label) => f.debug_tuple("Memory").field(label).finish(),
            #[cfg(not(feature = "shm"))]
            Source::Unset => f.write_str("Unset"),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            #[cfg(feature = "shm")]
            Source::Shm(name) => write!(f, "shm segment {name}"),
            #[cfg(feature = "file")]
            Source::File(path) => write!(f, "file segment {}", path.display()),
            #[cfg(feature = "memfd")]
            Source::MemfdSocket(path) => {
                write!(f, "memfd segment served at {}", path.display())
            }
            Source::Memory(_, label) => f.write_str(label),
            #[cfg(not(feature = "shm"))]
            Source::Unset => f.write_str("(no segment)"),
        }
    }
}

/// How to get the segment.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(any(feature = "shm", feature = "file")), allow(dead_code))]
pub(crate) struct OpenOptions {
    pub create: bool,
    /// Which existing objects to attach to (PROTOCOL.md §3.4).
    pub policy: AttachPolicy,
    pub size: usize,
    pub mode: u32,
    /// Group to give a created segment to (`fchown`); `None`: the creator's effective group.
    pub group: Option<u32>,
    pub timeout: Duration,
    /// After how long a position held by a live but stopped peer is repaired (§11.8).
    pub unblock: Duration,
    /// How a segment this call creates (or reformats, §3.3) is laid out.
    pub format: FormatOptions,
}

impl OpenOptions {
    /// The options to reformat an abandoned segment with (§3.3): only a caller that would
    /// create it, and only when `allowed` (the object is this user's own).
    fn reclaim(&self, allowed: bool) -> Option<FormatOptions> {
        (self.create && allowed).then_some(self.format)
    }
}

/// A segment mapped and attached once (its header validated), with a label for messages.
#[derive(Clone)]
pub(crate) struct Backing {
    pub memory: SharedMemory,
    pub label: Arc<str>,
    /// The unblock timeout of handles opened through it (PROTOCOL.md §11.8).
    pub unblock: Duration,
}

/// One attempt: `Ok(None)` means "being created by someone else; retry".
type Attempt = Result<Option<SharedMemory>>;

/// Checks that `memory` holds a formatted segment: `Ok(None)` while it is being created.
///
/// A segment whose creator died before publishing it (PROTOCOL.md §3.3) is reformatted with
/// `reclaim`'s options when given (this caller would have created it anyway, and the object is
/// its own user's) and reported as [`ErrorKind::Abandoned`] otherwise. `creator` records the
/// pid found, for the timeout message.
fn attached(
    memory: SharedMemory,
    label: &str,
    reclaim: Option<FormatOptions>,
    creator: &Cell<u32>,
) -> Attempt {
    match Segment::attach(memory.region()) {
        Ok(_) => Ok(Some(memory)),
        Err(CoreError::NotReady) => unpublished(memory, label, reclaim, creator),
        Err(other) => Err(Error::from_core(other, label)),
    }
}

fn unpublished(
    memory: SharedMemory,
    label: &str,
    reclaim: Option<FormatOptions>,
    creator: &Cell<u32>,
) -> Attempt {
    let pid = match Segment::abandoned_by(memory.region(), &ProcLiveness) {
        // Published since: the next attempt attaches.
        Ok(Abandonment::Published) => return Ok(None),
        Ok(Abandonment::BeingCreated { creator_pid }) => {
            creator.set(creator_pid);
            return Ok(None);
        }
        Ok(Abandonment::Abandoned { creator_pid }) => creator_pid,
        Err(other) => return Err(Error::from_core(other, label)),
    };
    creator.set(pid);
    let Some(format) = reclaim else {
        return Err(Error::new(
            ErrorKind::Abandoned { creator_pid: pid },
            format!(
                "{label}: abandoned: its creator (pid {pid}) died before finishing it; a \
                 producer reformats it, or remove it (`dmxp rm`)"
            ),
        ));
    };
    match Segment::reclaim_abandoned(memory.region(), std::process::id(), &ProcLiveness, format) {
        Ok(_) => Ok(Some(memory)),
        // Another process took it over first: attach to its segment once published.
        Err(CoreError::NotReady | CoreError::AlreadyFormatted) => Ok(None),
        Err(other) => Err(Error::from_core(other, label)),
    }
}

/// The timeout error for a segment that stayed unpublished: who was creating it, if known.
fn still_being_created(label: &str, creator: u32, waited: Duration) -> Error {
    let message = if creator == 0 {
        format!(
            "{label}: segment still being created (waited {waited:?}); its creator has not \
             recorded its pid: if it died that early, remove the segment (`dmxp rm`)"
        )
    } else {
        format!("{label}: segment still being created by pid {creator} (waited {waited:?})")
    };
    Error::new(ErrorKind::Timeout, message)
}

/// Calls `attempt` until it yields the memory or an error, or the deadline passes.
pub(crate) fn retry_until<T>(
    deadline: Instant,
    mut attempt: impl FnMut() -> Result<Option<T>>,
    on_timeout: impl FnOnce() -> Error,
) -> Result<T> {
    let mut pause = Duration::from_micros(50);
    loop {
        if let Some(found) = attempt()? {
            return Ok(found);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(on_timeout());
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Opens (and with `create`, creates if absent) the segment `source` names.
pub(crate) fn open(source: &Source, options: OpenOptions) -> Result<Backing> {
    // Before any label is made of it: a control character must not reach a message raw.
    let bad_name: Option<std::io::Error> = match source {
        #[cfg(feature = "shm")]
        Source::Shm(name) => dmxp_os::check_shm_name(name).err(),
        #[cfg(feature = "file")]
        Source::File(path) => dmxp_os::check_path(path).err(),
        _ => None,
    };
    if let Some(error) = bad_name {
        return Err(Error::new(ErrorKind::InvalidInput, error.to_string()));
    }
    let label = source.to_string();
    let deadline = Instant::now()
        .checked_add(options.timeout)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
    let creator = Cell::new(0);
    let memory = retry_until(
        deadline,
        || attempt(source, options, &label, &creator),
        || still_being_created(&label, creator.get(), options.timeout),
    )?;
    Ok(Backing {
        memory,
        label: label.into(),
        unblock: options.unblock,
    })
}

#[cfg_attr(not(any(feature = "shm", feature = "file")), allow(unused_variables))]
fn attempt(source: &Source, options: OpenOptions, label: &str, creator: &Cell<u32>) -> Attempt {
    match source {
        #[cfg(feature = "shm")]
        Source::Shm(name) => shm_attempt(name, options, label, creator),
        #[cfg(feature = "file")]
        Source::File(path) => file_attempt(path, options, label, creator),
        #[cfg(feature = "memfd")]
        Source::MemfdSocket(path) => {
            let segment = dmxp_memfd::MemfdSegment::connect(path)
                .map_err(|e| Error::io(e, format!("fetching {label}")))?;
            attached(Arc::new(segment), label, options.reclaim(true), creator)
        }
        Source::Memory(memory, _) => {
            attached(Arc::clone(memory), label, options.reclaim(true), creator)
        }
        #[cfg(not(feature = "shm"))]
        Source::Unset => Err(Error::new(
            ErrorKind::InvalidInput,
            "no segment given: enable the `shm` feature, or use with_file / with_memory",
        )),
    }
}

#[cfg(any(feature = "shm", feature = "file"))]
fn not_found(label: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("{label} does not exist (no producer has created it yet?)"),
    )
}

#[cfg(feature = "shm")]
fn shm_attempt(name: &str, options: OpenOptions, label: &str, creator: &Cell<u32>) -> Attempt {
    use dmxp_shm::ShmSegment;
    use std::io::ErrorKind as Io;

    if options.create {
        match ShmSegment::create_with(
            name,
            options.size,
            options.mode,
            options.group,
            options.format,
        ) {
            // `create` hands back a formatted segment.
            Ok(segment) => return Ok(Some(Arc::new(segment))),
            Err(e) if e.kind() == Io::AlreadyExists => {}
            Err(e) => return Err(Error::io(e, format!("creating {label}"))),
        }
    }
    match ShmSegment::open_with(name, &options.policy) {
        Ok(segment) => {
            // Only this user's own object may be reformatted (PROTOCOL.md §3.4).
            let own = segment.owner_uid() == options.policy.euid();
            attached(Arc::new(segment), label, options.reclaim(own), creator)
        }
        // The object is still smaller than the header: its creator is sizing it.
        Err(e) if e.kind() == Io::WouldBlock => Ok(None),
        // Gone between our create and open (a creator that failed unlinks); create again.
        Err(e) if e.kind() == Io::NotFound && options.create => Ok(None),
        Err(e) if e.kind() == Io::NotFound => Err(not_found(label)),
        Err(e) if dmxp_os::UntrustedObject::of(&e).is_some() => Err(Error::io_bare(e)),
        Err(e) if e.kind() == Io::PermissionDenied => Err(permission_denied(e, label)),
        Err(e) => Err(Error::io(e, format!("opening {label}"))),
    }
}

/// Another user's segment, or one not shared with our group: say so, keep the OS error.
#[cfg(any(feature = "shm", feature = "file"))]
fn permission_denied(error: std::io::Error, label: &str) -> Error {
    Error::io(
        error,
        format!(
            "opening {label}: permission denied: its owner and mode do not let this user \
             attach (its creator can share it with a group: ChannelBuilder::with_group_access \
             or with_group)"
        ),
    )
}

#[cfg(feature = "file")]
fn file_attempt(
    path: &std::path::Path,
    options: OpenOptions,
    label: &str,
    creator: &Cell<u32>,
) -> Attempt {
    use dmxp_file::FileSegment;
    use std::io::ErrorKind as Io;

    if options.create {
        match FileSegment::create_with(
            path,
            options.size,
            options.mode,
            options.group,
            options.format,
        ) {
            Ok(segment) => return Ok(Some(Arc::new(segment))),
            Err(e) if e.kind() == Io::AlreadyExists => {}
            Err(e) => return Err(Error::io(e, format!("creating {label}"))),
        }
    }
    match FileSegment::open_with(path, &options.policy) {
        Ok(segment) => {
            // Only this user's own file may be reformatted (PROTOCOL.md §3.4).
            let own = segment.owner_uid() == options.policy.euid();
            attached(Arc::new(segment), label, options.reclaim(own), creator)
        }
        Err(e) if e.kind() == Io::NotFound && options.create => Ok(None),
        Err(e) if e.kind() == Io::NotFound => Err(not_found(label)),
        Err(e) if dmxp_os::UntrustedObject::of(&e).is_some() => Err(Error::io_bare(e)),
        Err(e) if e.kind() == Io::PermissionDenied => Err(permission_denied(e, label)),
        Err(e) => Err(Error::io(e, format!("opening {label}"))),
    }
}
