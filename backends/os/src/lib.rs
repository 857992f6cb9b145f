//! # dmxp-os
//!
//! The operating-system glue every DMXP backend shares, so that each applies the same rules:
//!
//! * [`check_descriptor`]: `fstat` on an **opened** descriptor and the attach rule of
//!   PROTOCOL.md §3.4 ([`dmxp_nostd::trust::AttachPolicy`]): a regular file, owned by this
//!   user (or an owner or group trusted explicitly), granting nothing outside the mode asked
//!   for. Checking the descriptor rather than the path means the check and the mapping see the
//!   same object.
//! * [`open_nofollow`] and [`check_directory`]: a path's last component must not be a
//!   symbolic link, and its directory must not let others replace it.
//! * [`check_shm_name`] / [`check_path`]: names with control characters are refused before
//!   any system call.
//! * [`UntrustedObject`] and [`Truncated`]: the typed payloads of the `io::Error`s the backends
//!   return, which the `dmxp` facade turns into its own error kinds.
//!
//! ```
//! use dmxp_os::{check_descriptor, current_user_policy};
//!
//! let file = tempfile_in_cwd();
//! # fn tempfile_in_cwd() -> std::fs::File {
//! #     use std::os::unix::fs::OpenOptionsExt;
//! #     let path = std::env::temp_dir().join(format!("dmxp-os-doc-{}", std::process::id()));
//! #     let f = std::fs::OpenOptions::new().read(true).write(true).create(true).mode(0o600)
//! #         .open(&path).unwrap();
//! #     std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
//! #     std::fs::remove_file(&path).unwrap();
//! #     f
//! # }
//! // A file this user made with mode 0600 passes the default rule.
//! let stat = check_descriptor(&file, &current_user_policy(0o600), "my file")?;
//! assert_eq!(stat.mode, 0o600);
//! # Ok::<(), std::io::Error>(())
//! ```
#![warn(missing_docs, missing_debug_implementations)]

use std::fmt;
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use dmxp_nostd::trust::{self, AttachPolicy, GroupAccess, ObjectStat, Untrusted};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

/// The directory where Linux keeps POSIX shm objects (`shm_open` opens files in it).
pub const SHM_DIR: &str = "/dev/shm";

/// The default attach rule for this process: objects owned by its effective uid that grant
/// nothing outside `mode`.
///
/// ```
/// let policy = dmxp_os::current_user_policy(0o600);
/// assert_eq!(policy.euid(), rustix::process::geteuid().as_raw());
/// ```
#[must_use]
pub fn current_user_policy(mode: u32) -> AttachPolicy {
    AttachPolicy::new(rustix::process::geteuid().as_raw(), mode)
}

/// `fstat`s `fd` and applies `policy` (PROTOCOL.md §3.4). `what` names the object in the error
/// ("shm segment /dmxp_alloc").
///
/// Errors: [`ErrorKind::PermissionDenied`] carrying an [`UntrustedObject`] when the rule
/// refuses the object; the OS error if `fstat` fails.
///
/// ```
/// # let file = std::fs::File::open("/dev/null")?;
/// // /dev/null is not a regular file: refused.
/// let error = dmxp_os::check_descriptor(&file, &dmxp_os::current_user_policy(0o600), "null")
///     .unwrap_err();
/// assert!(dmxp_os::UntrustedObject::of(&error).is_some());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn check_descriptor(
    fd: impl AsFd,
    policy: &AttachPolicy,
    what: &str,
) -> io::Result<ObjectStat> {
    let stat = rustix::fs::fstat(fd).map_err(|e| annotate(e.into(), "fstat", what))?;
    let found = ObjectStat {
        uid: stat.st_uid,
        gid: stat.st_gid,
        mode: stat.st_mode & 0o7777,
        regular: FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile,
    };
    let groups = own_groups(policy);
    policy
        .check(&found, &groups)
        .map_err(|reason| untrusted(what, reason))?;
    Ok(found)
}

/// The groups this process belongs to, when the policy needs them.
fn own_groups(policy: &AttachPolicy) -> Vec<u32> {
    if policy.group() != GroupAccess::OwnGroups {
        return Vec::new();
    }
    let mut groups: Vec<u32> = rustix::process::getgroups()
        .map(|gids| gids.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default();
    groups.push(rustix::process::getegid().as_raw());
    groups
}

/// Opens `path` without following a symbolic link in its last component (`O_NOFOLLOW`,
/// close-on-exec). `flags` are added (`OFlags::RDWR`, `OFlags::CREATE | OFlags::EXCL`...).
///
/// Errors: [`ErrorKind::PermissionDenied`] carrying an [`UntrustedObject`]
/// ([`Untrusted::Symlink`]) when the last component is a symbolic link; the OS error otherwise
/// (unwrapped, so `raw_os_error()` and `kind()` are the kernel's).
///
/// ```
/// let dir = std::env::temp_dir().join(format!("dmxp-os-nofollow-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// std::os::unix::fs::symlink("/etc/hostname", dir.join("link"))?;
/// let error = dmxp_os::open_nofollow(&dir.join("link"), rustix::fs::OFlags::RDONLY,
///     rustix::fs::Mode::empty(), "link").unwrap_err();
/// assert!(dmxp_os::UntrustedObject::of(&error).is_some());
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn open_nofollow(path: &Path, flags: OFlags, mode: Mode, what: &str) -> io::Result<OwnedFd> {
    loop {
        match rustix::fs::open(path, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, mode) {
            Ok(fd) => return Ok(fd),
            Err(Errno::INTR) => continue,
            Err(Errno::LOOP) => return Err(untrusted(what, Untrusted::Symlink)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Refuses a directory that others may write and that is not sticky (`S_IWOTH` without
/// `S_ISVTX`): anyone could then replace the segment in it (PROTOCOL.md §3.4). `/tmp` and
/// `/dev/shm` are sticky and pass.
///
/// Errors: [`ErrorKind::PermissionDenied`] carrying an [`UntrustedObject`]
/// ([`Untrusted::OpenDirectory`]); the OS error if the directory cannot be opened.
///
/// ```
/// dmxp_os::check_directory(std::path::Path::new("/tmp"), "/tmp")?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn check_directory(dir: &Path, what: &str) -> io::Result<()> {
    let fd = rustix::fs::open(
        dir,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| annotate(e.into(), "open directory of", what))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| annotate(e.into(), "fstat", what))?;
    let mode = stat.st_mode & 0o7777;
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(untrusted(what, Untrusted::OpenDirectory { mode }));
    }
    Ok(())
}

/// The directory a path's last component lives in (`.` for a bare name).
///
/// ```
/// use std::path::Path;
/// assert_eq!(dmxp_os::parent_dir(Path::new("/tmp/seg")), Path::new("/tmp"));
/// assert_eq!(dmxp_os::parent_dir(Path::new("seg")), Path::new("."));
/// ```
#[must_use]
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Checks a POSIX shm name ([`trust::check_shm_name`]).
///
/// Errors: [`ErrorKind::InvalidInput`] saying what is wrong with it.
///
/// ```
/// assert!(dmxp_os::check_shm_name("/dmxp_alloc").is_ok());
/// assert_eq!(dmxp_os::check_shm_name("/a\nb").unwrap_err().kind(),
///     std::io::ErrorKind::InvalidInput);
/// ```
pub fn check_shm_name(name: &str) -> io::Result<()> {
    trust::check_shm_name(name).map_err(|reason| {
        io::Error::new(
            ErrorKind::InvalidInput,
            format!("bad shm segment name {name:?}: {reason}"),
        )
    })
}

/// Checks that a file path has no control characters.
///
/// Errors: [`ErrorKind::InvalidInput`] naming the byte.
///
/// ```
/// use std::path::Path;
/// assert!(dmxp_os::check_path(Path::new("/tmp/seg")).is_ok());
/// assert!(dmxp_os::check_path(Path::new("/tmp/a\tb")).is_err());
/// ```
pub fn check_path(path: &Path) -> io::Result<()> {
    trust::check_control_characters(path.as_os_str().as_bytes()).map_err(|reason| {
        io::Error::new(
            ErrorKind::InvalidInput,
            format!("bad segment path {path:?}: {reason}"),
        )
    })
}

/// The path of the file behind the POSIX shm object `name` (`/dev/shm/NAME`).
///
/// ```
/// assert_eq!(dmxp_os::shm_path("/dmxp_alloc"), std::path::Path::new("/dev/shm/dmxp_alloc"));
/// ```
#[must_use]
pub fn shm_path(name: &str) -> std::path::PathBuf {
    Path::new(SHM_DIR).join(name.trim_start_matches('/'))
}

/// An `io::Error` of kind [`ErrorKind::PermissionDenied`] carrying an [`UntrustedObject`].
///
/// ```
/// use dmxp_nostd::trust::Untrusted;
/// let error = dmxp_os::untrusted("x", Untrusted::NotRegular);
/// assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
/// ```
#[must_use]
pub fn untrusted(what: &str, reason: Untrusted) -> io::Error {
    io::Error::new(
        ErrorKind::PermissionDenied,
        UntrustedObject {
            what: what.to_owned(),
            reason,
        },
    )
}

/// The payload of the error a backend returns when the attach rule refuses an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UntrustedObject {
    what: String,
    /// Which check failed, with the owner and mode found.
    pub reason: Untrusted,
}

impl UntrustedObject {
    /// The payload of `error`, if it carries one.
    ///
    /// ```
    /// let plain = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
    /// assert!(dmxp_os::UntrustedObject::of(&plain).is_none());
    /// ```
    #[must_use]
    pub fn of(error: &io::Error) -> Option<&UntrustedObject> {
        error.get_ref()?.downcast_ref()
    }
}

impl fmt::Display for UntrustedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: refusing to attach: {}", self.what, self.reason)
    }
}

impl std::error::Error for UntrustedObject {}

/// The payload of the [`ErrorKind::InvalidData`] error a backend returns when a segment is
/// shorter than it should be: the object was truncated (under a live mapping, or before
/// `open`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    /// The object ("shm segment /x", a path).
    pub what: String,
    /// Bytes expected (the size mapped, or the `segment_size` the header records).
    pub expected: u64,
    /// Bytes the object has now.
    pub found: u64,
}

impl Truncated {
    /// An `io::Error` of kind [`ErrorKind::InvalidData`] carrying this report.
    ///
    /// ```
    /// let t = dmxp_os::Truncated { what: "x".into(), expected: 10, found: 0 };
    /// assert_eq!(t.into_error().kind(), std::io::ErrorKind::InvalidData);
    /// ```
    #[must_use]
    pub fn into_error(self) -> io::Error {
        io::Error::new(ErrorKind::InvalidData, self)
    }

    /// The report `error` carries, if any.
    ///
    /// ```
    /// let e = dmxp_os::Truncated { what: "x".into(), expected: 10, found: 0 }.into_error();
    /// assert_eq!(dmxp_os::Truncated::of(&e).unwrap().found, 0);
    /// ```
    #[must_use]
    pub fn of(error: &io::Error) -> Option<&Truncated> {
        error.get_ref()?.downcast_ref()
    }
}

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: segment truncated: expected {} bytes, found {} (cut short by another \
             process; touching the lost pages would raise SIGBUS)",
            self.what, self.expected, self.found
        )
    }
}

impl std::error::Error for Truncated {}

/// The current size of the object behind `fd` (`fstat`).
///
/// ```
/// let file = std::fs::File::open("/etc/hostname")?;
/// assert!(dmxp_os::object_size(&file)? > 0);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn object_size(fd: impl AsFd) -> io::Result<u64> {
    let stat = rustix::fs::fstat(fd)?;
    Ok(u64::try_from(stat.st_size).unwrap_or(0))
}

/// `error` with "`what` `name`: " in front, keeping its kind.
#[must_use]
pub fn annotate(error: io::Error, what: &str, name: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {name}: {error}"))
}
