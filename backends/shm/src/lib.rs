//! # dmxp-shm
//!
//! DMXP segments in POSIX shared memory (`shm_open`): named objects under `/dev/shm` that any
//! process on the host (in any language) can open by name and map. This is the facade's
//! default backend and the one the seed's clients use (`/dmxp_alloc`, 128 MiB).
//!
//! * [`ShmSegment::create`] makes a new object exclusively (`O_CREAT | O_EXCL`), applies the
//!   requested mode bits exactly (default callers pass `0o600`: owner only; see
//!   [Permissions](#permissions)), sizes it with
//!   `ftruncate`, maps it `MAP_SHARED` and formats an empty segment (magic stored last). If
//!   the name exists it fails with [`std::io::ErrorKind::AlreadyExists`] and leaves the
//!   existing object alone. If anything fails after the object was created, the object is
//!   unlinked again: no half-made object is left behind.
//! * [`ShmSegment::open`] maps an existing object whole. It never truncates and never
//!   reformats: a prior implementation that reopened with `O_TRUNC` killed its live peers.
//!   An object still smaller than the header (its creator has not sized it yet) is reported
//!   as [`std::io::ErrorKind::WouldBlock`], to be retried. Validation of the contents is the
//!   caller's job (`dmxp_nostd::Segment::attach`, which also checks the object is at least
//!   as large as the `segment_size` its header records).
//! * [`ShmSegment::unlink`] removes the name; mappings that exist stay valid until dropped.
//!
//! ## Permissions
//!
//! A segment is an ordinary object under `/dev/shm` with an owner, a group and mode bits, and
//! `shm_open` checks them like `open(2)` does. [`DEFAULT_MODE`] (`0o600`) lets only the
//! creating user attach: a process of another uid gets [`std::io::ErrorKind::PermissionDenied`]
//! (`EACCES`) from [`ShmSegment::open`]. To share with a group, create with `0o660` and, if
//! the group is not the creator's effective group, name it:
//! [`ShmSegment::create_with_group`] `fchown`s the new object to that group before sizing it
//! (the creator must belong to the group, or hold `CAP_CHOWN`). The name exists, owner-only,
//! between `shm_open` and `fchown`/`fchmod`: a group member attaching in that instant gets
//! `PermissionDenied` and may retry. Anyone who can open the object read-write can corrupt it
//! or truncate it (below), so grant access only to trusted users.
//!
//! ## Attach checks
//!
//! Anyone may create an object under a name before its real creator runs (a squatter). So
//! [`ShmSegment::open`] trusts an existing object only if it is a regular file owned by this
//! process's effective uid and granting nothing outside `0o600`; [`ShmSegment::open_with`]
//! takes the rule as a [`dmxp_nostd::trust::AttachPolicy`] (a wider mode, a group, other
//! trusted owners). The check is `fstat` on the descriptor that is then mapped, after an
//! `O_NOFOLLOW` open, and a refusal carries a [`dmxp_os::UntrustedObject`] naming the owner
//! and the mode (PROTOCOL.md §3.4).
//!
//! ## Truncation
//!
//! POSIX shm objects cannot be sealed. Any process with write access to the object can
//! `ftruncate` it while others have it mapped, and every mapper then dies with `SIGBUS` the
//! next time it touches a page past the new end. This crate never truncates a live object, and
//! detects a truncation where it can without touching the lost pages:
//!
//! * [`ShmSegment::open`] maps the object's current size, so `Segment::attach` sees a segment
//!   shorter than the `segment_size` its header records and refuses it (`segment_size`).
//! * [`ShmSegment::check_size`] compares the object's current size (`fstat`) with this
//!   mapping and returns [`std::io::ErrorKind::InvalidData`] carrying a [`Truncated`]
//!   (expected, found) if it shrank. Call it when a peer may misbehave, for example before a
//!   batch of work or after an unexpected error.
//!
//! Sends and receives cannot `fstat` every time: a truncation by a peer while they run still
//! raises `SIGBUS` in the process that touches the lost pages (a test shows both the
//! `check_size` error and the signal). Keep the mode at `0o600` (or a group you trust), and use
//! the memfd backend (`dmxp-memfd`), whose size is sealed by the kernel, when a peer must not be
//! able to crash you this way.
//!
//! ```no_run
//! # // Not run as a test: a failure before the unlink would leave the object in /dev/shm.
//! use dmxp_nostd::{Segment, SegmentMemory};
//! use dmxp_shm::ShmSegment;
//!
//! let memory = ShmSegment::create("/dmxp_doc_example", 1 << 20, 0o600)?;
//! let segment = Segment::attach(memory.region()).expect("freshly formatted");
//! let channel = segment.create_channel(0, 64, std::process::id()).expect("room for it");
//! # let _ = channel;
//! ShmSegment::unlink("/dmxp_doc_example")?;
//! # Ok::<(), std::io::Error>(())
//! ```
#![warn(missing_docs, missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn)]

use core::ffi::c_void;
use core::ptr::NonNull;
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use dmxp_nostd::layout::{HEADER_SIZE, SEGMENT_ALIGN};
use dmxp_nostd::trust::AttachPolicy;
use dmxp_nostd::{FormatOptions, Region, Segment, SegmentMemory};
pub use dmxp_os::Truncated;
use rustix::fs::{Gid, Mode, OFlags};
use rustix::mm::{MapFlags, ProtFlags};
use rustix::shm;

/// The segment name the seed's clients use.
pub const DEFAULT_NAME: &str = "/dmxp_alloc";
/// The segment size the seed's clients use: 128 MiB.
pub const DEFAULT_SIZE: usize = 128 << 20;
/// The mode bits used unless a caller asks for others: read and write for the owner only.
pub const DEFAULT_MODE: u32 = 0o600;

/// A POSIX shared-memory object mapped read-write and `MAP_SHARED` into this process.
///
/// Unmaps on drop; the object itself lives on until [`ShmSegment::unlink`] and the last
/// mapping are gone.
#[derive(Debug)]
pub struct ShmSegment {
    name: String,
    fd: OwnedFd,
    base: NonNull<c_void>,
    len: usize,
    /// The object's owner when it was opened (this user for one it created).
    owner_uid: u32,
}

// SAFETY: the mapping is process-wide memory owned by this value; it is only ever accessed
// through `Region`, whose views are atomics, so sharing or moving the owner between threads
// cannot create a data race. The fd is an ordinary owned descriptor.
unsafe impl Send for ShmSegment {}
// SAFETY: as above; `&ShmSegment` only hands out `Region`s and metadata.
unsafe impl Sync for ShmSegment {}

impl ShmSegment {
    /// Creates the object `name` exclusively with `size` bytes and permission bits `mode`
    /// (applied exactly, whatever the umask), maps it and formats an empty segment in it.
    ///
    /// Errors: [`ErrorKind::AlreadyExists`] if `name` exists (the existing object is not
    /// touched), [`ErrorKind::InvalidInput`] if `size` is smaller than the header
    /// ([`HEADER_SIZE`] bytes), `mode` has bits outside `0o777` or `name` is not a valid shm
    /// name (PROTOCOL.md §3.4: `/`, then 1 to 254 bytes, no `/`, no control character), or
    /// the OS error.
    pub fn create(name: &str, size: usize, mode: u32) -> io::Result<ShmSegment> {
        Self::create_with_group(name, size, mode, None)
    }

    /// [`Self::create`], and with `group: Some(gid)` the new object is also given to group
    /// `gid` (`fchown`, before it is sized and formatted) so that members of that group can
    /// attach when `mode` grants the group access (`0o660`).
    ///
    /// Errors: as [`Self::create`], and [`ErrorKind::PermissionDenied`] if this process may not
    /// give the object to `gid` (it is not a member and lacks `CAP_CHOWN`); the object is
    /// unlinked again then.
    pub fn create_with_group(
        name: &str,
        size: usize,
        mode: u32,
        group: Option<u32>,
    ) -> io::Result<ShmSegment> {
        Self::create_with(name, size, mode, group, FormatOptions::default())
    }

    /// [`Self::create_with_group`], formatting the segment with `format` (a larger peer table,
    /// say: [`FormatOptions::with_peer_records`]).
    ///
    /// Errors: as [`Self::create_with_group`], and [`ErrorKind::InvalidInput`] for options
    /// that [`FormatOptions::check`] refuses (nothing is created then).
    pub fn create_with(
        name: &str,
        size: usize,
        mode: u32,
        group: Option<u32>,
        format: FormatOptions,
    ) -> io::Result<ShmSegment> {
        format
            .check()
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
        if size < HEADER_SIZE {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("segment size {size} is smaller than the {HEADER_SIZE}-byte header"),
            ));
        }
        if mode & !0o777 != 0 {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("mode {mode:#o} has bits outside 0o777"),
            ));
        }
        dmxp_os::check_shm_name(name)?;
        let mode = Mode::from_bits_truncate(mode);
        let fd = shm::open(
            name,
            shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
            mode,
        )
        .map_err(|errno| {
            let error = io::Error::from(errno);
            if error.kind() == ErrorKind::AlreadyExists {
                io::Error::new(
                    ErrorKind::AlreadyExists,
                    format!("shared-memory object {name} already exists"),
                )
            } else {
                annotate(error, "shm_open (create)", name)
            }
        })?;
        // From here on the object is ours: remove it again if we cannot finish.
        let result = Self::finish_create(name, fd, size, mode, group, format);
        if result.is_err() {
            let _ = shm::unlink(name);
        }
        result
    }

    fn finish_create(
        name: &str,
        fd: OwnedFd,
        size: usize,
        mode: Mode,
        group: Option<u32>,
        format: FormatOptions,
    ) -> io::Result<Self> {
        if let Some(gid) = group {
            // Before fchmod: a chown by a non-root owner may clear mode bits.
            rustix::fs::fchown(&fd, None, Some(Gid::from_raw(gid)))
                .map_err(|e| annotate(e.into(), &format!("fchown to group {gid}"), name))?;
        }
        // shm_open applied the umask; set the bits exactly as asked.
        rustix::fs::fchmod(&fd, mode).map_err(|e| annotate(e.into(), "fchmod", name))?;
        rustix::fs::ftruncate(&fd, size as u64)
            .map_err(|e| annotate(e.into(), "ftruncate", name))?;
        let segment = Self::map(name, fd, size, rustix::process::geteuid().as_raw())?;
        Segment::format_with(segment.region(), std::process::id(), format)
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
        Ok(segment)
    }

    /// Opens and maps the existing object `name`, whole, if this user may trust it: owned by
    /// this process's effective uid and granting nothing outside [`DEFAULT_MODE`] (see
    /// [`Self::open_with`] and [Attach checks](#attach-checks)). Does not validate its contents
    /// and never truncates or reformats it.
    ///
    /// Errors: as [`Self::open_with`].
    pub fn open(name: &str) -> io::Result<ShmSegment> {
        Self::open_with(name, &dmxp_os::current_user_policy(DEFAULT_MODE))
    }

    /// Opens and maps the existing object `name`, whole, if `policy` accepts it (PROTOCOL.md
    /// §3.4): the object is opened without following a symbolic link, then `fstat`ed on the
    /// opened descriptor, so the object checked is the object mapped. Nothing is mapped or
    /// written when the check fails.
    ///
    /// Errors: [`ErrorKind::InvalidInput`] for a bad name (a control character, a second
    /// `/`); [`ErrorKind::NotFound`] if there is no such object; [`ErrorKind::PermissionDenied`]
    /// carrying a [`dmxp_os::UntrustedObject`] if `policy` refuses it (another owner, a wider
    /// mode, a symbolic link, not a regular file), or the bare OS error (`EACCES`) if its owner
    /// and mode do not let this process open it; [`ErrorKind::WouldBlock`] if it is still
    /// smaller than the header (its creator has not sized it yet: retry); the OS error
    /// otherwise.
    pub fn open_with(name: &str, policy: &AttachPolicy) -> io::Result<ShmSegment> {
        dmxp_os::check_shm_name(name)?;
        let what = format!("shm segment {name}");
        let fd =
            dmxp_os::open_nofollow(&dmxp_os::shm_path(name), OFlags::RDWR, Mode::empty(), &what)
                .map_err(|error| {
                    if error.kind() == ErrorKind::NotFound {
                        io::Error::new(
                            ErrorKind::NotFound,
                            format!("shared-memory object {name} does not exist"),
                        )
                    } else if error.kind() == ErrorKind::PermissionDenied
                        || error.get_ref().is_some()
                    {
                        // Unwrapped, so that `raw_os_error()` still says EACCES (callers add the
                        // name) and an untrusted-object payload stays reachable.
                        error
                    } else {
                        annotate(error, "shm_open", name)
                    }
                })?;
        let owner = dmxp_os::check_descriptor(&fd, policy, &what)?;
        let size = dmxp_os::object_size(&fd).map_err(|e| annotate(e, "fstat", name))?;
        if size < HEADER_SIZE as u64 {
            return Err(io::Error::new(
                ErrorKind::WouldBlock,
                format!(
                    "shared-memory object {name} is still being created \
                     ({size} bytes, header needs {HEADER_SIZE})"
                ),
            ));
        }
        let size = usize::try_from(size).map_err(|_| {
            io::Error::new(
                ErrorKind::InvalidData,
                format!("shared-memory object {name} is too large to map ({size} bytes)"),
            )
        })?;
        Self::map(name, fd, size, owner.uid)
    }

    /// Removes the name `name`. Existing mappings stay valid until they are dropped.
    pub fn unlink(name: &str) -> io::Result<()> {
        shm::unlink(name).map_err(|e| annotate(e.into(), "shm_unlink", name))
    }

    fn map(name: &str, fd: OwnedFd, len: usize, owner_uid: u32) -> io::Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel (null hint, no MAP_FIXED), so it
        // replaces nothing in this process. It is MAP_SHARED over an object of at least `len`
        // bytes (created with that size, or `len` came from fstat), and it is only ever
        // accessed through `Region`, i.e. through atomics.
        let ptr = unsafe {
            rustix::mm::mmap(
                core::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .map_err(|e| annotate(e.into(), "mmap", name))?;
        let base = NonNull::new(ptr).ok_or_else(|| io::Error::other("mmap returned null"))?;
        let segment = ShmSegment {
            name: name.to_owned(),
            fd,
            base,
            len,
            owner_uid,
        };
        if !(ptr as usize).is_multiple_of(SEGMENT_ALIGN) {
            // Never happens (mmap returns page-aligned addresses); checked so `region` holds.
            return Err(io::Error::other("mmap returned a misaligned address"));
        }
        Ok(segment)
    }

    /// The object's name, as given to `create` or `open`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The object's owner (`st_uid`) when it was created or opened. Reclaiming an abandoned
    /// segment (PROTOCOL.md §3.3) is only for objects this user owns.
    #[must_use]
    pub fn owner_uid(&self) -> u32 {
        self.owner_uid
    }

    /// The mapped length in bytes (the object's size when it was mapped).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a mapping holds at least the header.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The object's file descriptor (for `fstat`, or to check whether someone resized it).
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Checks, without touching the mapping, that the object is still as large as this
    /// mapping: `fstat` on the descriptor. Cheap (one system call), but not free: call it when
    /// a peer may have misbehaved, not on every send.
    ///
    /// Errors: [`ErrorKind::InvalidData`] carrying a [`Truncated`] (get it with
    /// `error.get_ref()` and `downcast_ref`) if a peer shrank the object: touching the pages
    /// past [`Truncated::found`] would raise `SIGBUS`. The OS error if `fstat` fails.
    pub fn check_size(&self) -> io::Result<()> {
        let found = dmxp_os::object_size(&self.fd).map_err(|e| annotate(e, "fstat", &self.name))?;
        let expected = self.len as u64;
        if found < expected {
            return Err(Truncated {
                what: format!("shared-memory object {}", self.name),
                expected,
                found,
            }
            .into_error());
        }
        Ok(())
    }
}

impl SegmentMemory for ShmSegment {
    fn region(&self) -> Region<'_> {
        // SAFETY: `base..base + len` is a live MAP_SHARED read-write mapping owned by `self`
        // and unmapped only in `drop`, so it is valid for the borrow of `self`. The pointer is
        // mmap's return value (write provenance). Nothing in this crate creates plain
        // references into it; all access goes through `Region`'s atomic views.
        unsafe { Region::from_raw_parts(self.base.as_ptr().cast::<u8>(), self.len) }
            .expect("mmap returns page-aligned, non-null addresses (checked in `map`)")
    }

    fn current_len(&self) -> Option<u64> {
        dmxp_os::object_size(&self.fd).ok()
    }
}

impl Drop for ShmSegment {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `map`, unmapped only here.
        // Every `Region` borrowed from `self` has ended, since `drop` takes `&mut self`.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr(), self.len) };
    }
}

fn annotate(error: io::Error, what: &str, name: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {name}: {error}"))
}
