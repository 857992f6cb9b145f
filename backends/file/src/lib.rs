//! # dmxp-file
//!
//! DMXP segments in ordinary files mapped `MAP_SHARED`. The file is the segment, byte for
//! byte, so anything that can map a file can take part, and the queued messages stay in it
//! when every process has exited (and, on a disk-backed file system, across reboots after
//! [`FileSegment::flush`]).
//!
//! * [`FileSegment::create`] builds the segment in a temporary file in the target directory
//!   (sized, mapped, formatted, flushed) and only then makes it appear at the requested path
//!   with `link(2)`, which never replaces an existing file. Nobody can attach to a half-made
//!   segment, and an existing file at the path is left untouched
//!   ([`std::io::ErrorKind::AlreadyExists`]).
//! * [`FileSegment::open`] maps an existing file read-write. It refuses
//!   ([`std::io::ErrorKind::InvalidData`]) a file smaller than the header or smaller than the
//!   `segment_size` its header records (a file cut short), reading that field with a plain
//!   `pread` before anything is mapped. Validation of the rest is the caller's job
//!   (`dmxp_nostd::Segment::attach`).
//!
//! ## Permissions
//!
//! The segment file's owner, group and mode bits decide who can attach, as for any file.
//! Create with `0o600` (owner only: another uid's [`FileSegment::open`] fails with
//! [`std::io::ErrorKind::PermissionDenied`], `EACCES`) or, to share with a group, `0o660`
//! and, if the group is not the creator's effective group,
//! [`FileSegment::create_with_group`], which `fchown`s the file to that group before it is
//! linked into place (the creator must belong to the group or hold `CAP_CHOWN`). The file
//! appears with its final owner, group and mode. The directory's permissions matter too.
//! Anyone who can open the file read-write can corrupt or truncate it (below), so grant
//! access only to trusted users.
//!
//! ## Attach checks
//!
//! A segment path in a shared directory can be taken first by another user, as a file or as a
//! symbolic link to somewhere else. [`FileSegment::open`] therefore opens the last component
//! with `O_NOFOLLOW` (a symbolic link is refused), refuses a directory that anyone may write
//! and that is not sticky (anyone could swap the file), and trusts the file only if it is
//! regular, owned by this process's effective uid and grants nothing outside `0o600`;
//! [`FileSegment::open_with`] takes the rule as a [`dmxp_nostd::trust::AttachPolicy`]. The
//! check is `fstat` on the descriptor that is then mapped, and a refusal carries a
//! [`dmxp_os::UntrustedObject`] (PROTOCOL.md §3.4). [`FileSegment::create`] never writes
//! through an existing path: it formats a new temporary file (`O_EXCL`) and `link(2)`s it,
//! which fails on anything already there.
//!
//! ## Truncation
//!
//! A file can be truncated by any process allowed to write it (or by `>` in a shell), and
//! files cannot be sealed. Every process that has it mapped then dies with `SIGBUS` the next
//! time it touches a page past the new end. This crate never truncates a segment file, and
//! detects a truncation where it can without touching the lost pages:
//!
//! * [`FileSegment::open`] refuses a file shorter than the `segment_size` its header records
//!   ([`std::io::ErrorKind::InvalidData`] carrying a [`Truncated`]).
//! * [`FileSegment::check_size`] compares the file's current size (`fstat`) with this mapping
//!   and returns the same typed error if it shrank. Call it when a peer may misbehave, for
//!   example before a batch of work or after an unexpected error.
//!
//! Sends and receives cannot `fstat` every time: a truncation while they run still raises
//! `SIGBUS` in the process that touches the lost pages (a test shows both the `check_size`
//! error and the signal). Keep the file's mode and directory restricted to trusted users, and
//! prefer the memfd backend (`dmxp-memfd`, size sealed by the kernel) when a peer must not be
//! able to crash you this way.
//!
//! ## Special file systems
//!
//! * **hugetlbfs** (`mount -t hugetlbfs none /dev/hugepages`): the segment lives in huge
//!   pages, which cuts TLB misses on large rings. The size passed to `create` must be a
//!   multiple of the huge page size (2 MiB or 1 GiB, see `/proc/meminfo`), or sizing the file
//!   fails; enough huge pages must be reserved (`vm.nr_hugepages`). hugetlbfs files can be
//!   mapped and linked but not `write(2)`n, which this crate never does. They do not persist
//!   across reboots.
//! * **DAX** (persistent memory, a file system mounted with `-o dax`): the mapping goes
//!   straight to the device, without the page cache. This crate maps with plain `MAP_SHARED`
//!   and does not use `MAP_SHARED_VALIDATE | MAP_SYNC`, so make data durable with
//!   [`FileSegment::flush`] (`msync`) rather than relying on CPU cache flushes alone.
//! * **Hypervisor shared memory**: QEMU's `ivshmem-plain` device exposes a host file as a PCI
//!   BAR, e.g. `-object memory-backend-file,id=hostmem,share=on,mem-path=/dev/shm/dmxp,size=128M
//!   -device ivshmem-plain,memdev=hostmem` (or a file under `/dev/hugepages`). The host creates
//!   or opens that file with this crate; the guest maps the BAR (for instance
//!   `/sys/bus/pci/devices/.../resource2`, or the physical range in a kernel or firmware) and
//!   runs `dmxp-nostd` directly over it as a `Region`. Both sides then share one segment.
//!
//! ```no_run
//! # // Not run as a test: it would leave a file at a fixed path outside the temporary
//! # // directory.
//! use std::path::Path;
//! use dmxp_file::FileSegment;
//! use dmxp_nostd::{Segment, SegmentMemory};
//!
//! let memory = FileSegment::create(Path::new("/var/tmp/dmxp.seg"), 1 << 20, 0o600)?;
//! let segment = Segment::attach(memory.region()).expect("freshly formatted");
//! # let _ = segment;
//! memory.flush()?;
//! # Ok::<(), std::io::Error>(())
//! ```
#![warn(missing_docs, missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use dmxp_nostd::layout::{HEADER_SIZE, SEGMENT_ALIGN};
use dmxp_nostd::trust::AttachPolicy;
use dmxp_nostd::{FormatOptions, Region, Segment, SegmentMemory};
pub use dmxp_os::Truncated;
use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{Mode, OFlags};

/// Offset of the header's `segment_size` field (u64, little-endian).
const SEGMENT_SIZE_OFFSET: u64 = 24;

/// A file mapped read-write and `MAP_SHARED` into this process. Unmaps on drop; the file stays.
#[derive(Debug)]
pub struct FileSegment {
    path: PathBuf,
    map: MmapRaw,
    /// Kept open for [`FileSegment::check_size`] (`fstat`).
    file: File,
    /// The file's owner when it was created or opened.
    owner_uid: u32,
}

impl FileSegment {
    /// Creates a segment file of `size` bytes at `path` with permission bits `mode` (applied
    /// exactly, whatever the umask). The file appears at `path` only once it is formatted.
    ///
    /// Errors: [`ErrorKind::AlreadyExists`] if `path` exists (it is not touched);
    /// [`ErrorKind::InvalidInput`] if `size` is smaller than the header ([`HEADER_SIZE`]),
    /// `mode` has bits outside `0o777` or `path` has no file name; the OS error otherwise.
    /// No temporary file is left behind on failure.
    pub fn create(path: &Path, size: usize, mode: u32) -> io::Result<FileSegment> {
        Self::create_with_group(path, size, mode, None)
    }

    /// [`Self::create`], and with `group: Some(gid)` the file is also given to group `gid`
    /// (`fchown`, before it is linked into place) so that members of that group can attach
    /// when `mode` grants the group access (`0o660`).
    ///
    /// Errors: as [`Self::create`], and [`ErrorKind::PermissionDenied`] if this process may not
    /// give the file to `gid` (it is not a member and lacks `CAP_CHOWN`).
    pub fn create_with_group(
        path: &Path,
        size: usize,
        mode: u32,
        group: Option<u32>,
    ) -> io::Result<FileSegment> {
        Self::create_with(path, size, mode, group, FormatOptions::default())
    }

    /// [`Self::create_with_group`], formatting the segment with `format` (a larger peer table,
    /// say: [`FormatOptions::with_peer_records`]).
    ///
    /// Errors: as [`Self::create_with_group`], and [`ErrorKind::InvalidInput`] for options
    /// that [`FormatOptions::check`] refuses (nothing is created then).
    pub fn create_with(
        path: &Path,
        size: usize,
        mode: u32,
        group: Option<u32>,
        format: FormatOptions,
    ) -> io::Result<FileSegment> {
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
        let file_name = path.file_name().ok_or_else(|| {
            io::Error::new(
                ErrorKind::InvalidInput,
                format!("{} has no file name", path.display()),
            )
        })?;
        dmxp_os::check_path(path)?;
        dmxp_os::check_directory(
            dmxp_os::parent_dir(path),
            &format!("file segment {}", path.display()),
        )?;
        // Cheap early answer; `hard_link` below is what guarantees it (link(2) never follows
        // or replaces what is at the path, symbolic links included).
        if path.symlink_metadata().is_ok() {
            return Err(already_exists(path));
        }
        let dir = dmxp_os::parent_dir(path);
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let temp = TempFile(dir.join(format!(
            ".{}.dmxp-tmp.{}.{}",
            file_name.to_string_lossy(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )));

        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp.0)
            .map_err(|e| annotate(e, "create", &temp.0))?;
        if let Some(gid) = group {
            // Before chmod: a chown by a non-root owner may clear mode bits.
            std::os::unix::fs::fchown(&file, None, Some(gid))
                .map_err(|e| annotate(e, &format!("chown to group {gid}"), &temp.0))?;
        }
        // open(2) applied the umask; set the bits exactly as asked.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| annotate(e, "chmod", &temp.0))?;
        file.set_len(size as u64)
            .map_err(|e| annotate(e, "set size of", &temp.0))?;
        let segment = Self::map(path, file, size, rustix::process::geteuid().as_raw())?;
        Segment::format_with(segment.region(), std::process::id(), format)
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
        segment.flush()?;

        std::fs::hard_link(&temp.0, path).map_err(|e| {
            if e.kind() == ErrorKind::AlreadyExists {
                already_exists(path)
            } else {
                annotate(e, "link into place", path)
            }
        })?;
        drop(temp); // removes the temporary name; the file lives on at `path`
        Ok(segment)
    }

    /// Maps the existing segment file at `path` read-write, whole, if this user may trust it:
    /// a regular file (not a symbolic link) owned by this process's effective uid, granting
    /// nothing outside `0o600`, in a directory others cannot replace it in (see
    /// [`Self::open_with`] and [Attach checks](#attach-checks)).
    ///
    /// Errors: as [`Self::open_with`].
    pub fn open(path: &Path) -> io::Result<FileSegment> {
        Self::open_with(path, &dmxp_os::current_user_policy(0o600))
    }

    /// Maps the existing segment file at `path` read-write, whole, if `policy` accepts it
    /// (PROTOCOL.md §3.4). Does not validate its contents beyond the size checks below, and
    /// never modifies the file.
    ///
    /// Errors: [`ErrorKind::InvalidInput`] if the path holds a control character;
    /// [`ErrorKind::NotFound`] if there is no such file; [`ErrorKind::PermissionDenied`]
    /// carrying a [`dmxp_os::UntrustedObject`] if the last component is a symbolic link, the
    /// directory is writable by anyone and not sticky, or `policy` refuses the file's owner or
    /// mode — or the bare OS error (`EACCES`) if its owner and mode do not let this process
    /// open it read-write; [`ErrorKind::InvalidData`] if it is smaller than the header, or
    /// than the `segment_size` its header records (then carrying a [`Truncated`]); the OS
    /// error otherwise.
    pub fn open_with(path: &Path, policy: &AttachPolicy) -> io::Result<FileSegment> {
        dmxp_os::check_path(path)?;
        let what = format!("file segment {}", path.display());
        dmxp_os::check_directory(dmxp_os::parent_dir(path), &what)?;
        let fd = dmxp_os::open_nofollow(path, OFlags::RDWR, Mode::empty(), &what).map_err(|e| {
            if e.kind() == ErrorKind::PermissionDenied || e.get_ref().is_some() {
                e // unwrapped: `raw_os_error()` still says EACCES; payloads stay reachable
            } else {
                annotate(e, "open", path)
            }
        })?;
        let owner = dmxp_os::check_descriptor(&fd, policy, &what)?;
        let file = File::from(fd);
        let len = file
            .metadata()
            .map_err(|e| annotate(e, "stat", path))?
            .len();
        if len < HEADER_SIZE as u64 {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "{} is {len} bytes, smaller than the {HEADER_SIZE}-byte segment header",
                    path.display()
                ),
            ));
        }
        let mut field = [0u8; 8];
        file.read_exact_at(&mut field, SEGMENT_SIZE_OFFSET)
            .map_err(|e| annotate(e, "read header of", path))?;
        let recorded = u64::from_le_bytes(field);
        if recorded > len {
            return Err(Truncated {
                what: path.display().to_string(),
                expected: recorded,
                found: len,
            }
            .into_error());
        }
        let len = usize::try_from(len).map_err(|_| {
            io::Error::new(
                ErrorKind::InvalidData,
                format!("{} is too large to map ({len} bytes)", path.display()),
            )
        })?;
        Self::map(path, file, len, owner.uid)
    }

    fn map(path: &Path, file: File, len: usize, owner_uid: u32) -> io::Result<Self> {
        // memmap2 maps PROT_READ | PROT_WRITE, MAP_SHARED. `MmapRaw` hands out only raw
        // pointers, never slices, which suits memory other processes write.
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(|e| annotate(e, "mmap", path))?;
        if !(map.as_mut_ptr() as usize).is_multiple_of(SEGMENT_ALIGN) {
            // Never happens (mmap returns page-aligned addresses); checked so `region` holds.
            return Err(io::Error::other("mmap returned a misaligned address"));
        }
        Ok(FileSegment {
            path: path.to_path_buf(),
            map,
            file,
            owner_uid,
        })
    }

    /// The path the segment was created or opened at.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's owner (`st_uid`) when it was created or opened. Reclaiming an abandoned
    /// segment (PROTOCOL.md §3.3) is only for files this user owns.
    #[must_use]
    pub fn owner_uid(&self) -> u32 {
        self.owner_uid
    }

    /// The mapped length in bytes (the file's size when it was mapped).
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Never true: a mapping holds at least the header.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Checks, without touching the mapping, that the file is still as large as this mapping:
    /// `fstat` on the open file. Cheap (one system call), but not free: call it when a peer
    /// may have misbehaved, not on every send.
    ///
    /// Errors: [`ErrorKind::InvalidData`] carrying a [`Truncated`] (get it with
    /// `error.get_ref()` and `downcast_ref`) if the file shrank: touching the pages past
    /// [`Truncated::found`] would raise `SIGBUS`. The OS error if `fstat` fails.
    pub fn check_size(&self) -> io::Result<()> {
        let found =
            dmxp_os::object_size(&self.file).map_err(|e| annotate(e, "stat", &self.path))?;
        let expected = self.map.len() as u64;
        if found < expected {
            return Err(Truncated {
                what: self.path.display().to_string(),
                expected,
                found,
            }
            .into_error());
        }
        Ok(())
    }

    /// Writes the mapping's modified pages back to the file and waits (`msync(MS_SYNC)`).
    pub fn flush(&self) -> io::Result<()> {
        self.map
            .flush()
            .map_err(|e| annotate(e, "msync", &self.path))
    }
}

impl SegmentMemory for FileSegment {
    fn region(&self) -> Region<'_> {
        // SAFETY: `as_mut_ptr()..+len()` is the live MAP_SHARED read-write mapping owned by
        // `self.map` and unmapped only when `self` drops, so it is valid for the borrow of
        // `self`. The pointer is mmap's return value (write provenance). `MmapRaw` never
        // creates plain references into it, and neither does this crate: all access goes
        // through `Region`'s atomic views.
        unsafe { Region::from_raw_parts(self.map.as_mut_ptr(), self.map.len()) }
            .expect("mmap returns page-aligned, non-null addresses (checked in `map`)")
    }

    fn current_len(&self) -> Option<u64> {
        dmxp_os::object_size(&self.file).ok()
    }
}

/// A temporary file name, removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn already_exists(path: &Path) -> io::Error {
    io::Error::new(
        ErrorKind::AlreadyExists,
        format!("{} already exists", path.display()),
    )
}

fn annotate(error: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}
