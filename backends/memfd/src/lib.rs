//! # dmxp-memfd
//!
//! DMXP segments in anonymous memory files (`memfd_create`), sealed so that nobody can shrink
//! or grow them, and handed from process to process as file descriptors over a Unix socket
//! (`SCM_RIGHTS`). There is no name in a global namespace to collide with or leak, and only
//! processes that were given the descriptor can map the segment.
//!
//! This is the robust backend. A POSIX shm object or a file can be truncated by any process
//! that can open it, and every process that has it mapped then dies with `SIGBUS` on its next
//! touch past the new end. A memfd carries kernel seals: [`MemfdSegment::create`] seals it
//! with `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL` once sized, after which `ftruncate` fails
//! with `EPERM` for everyone, and [`MemfdSegment::from_fd`] refuses a descriptor that lacks the
//! shrink and grow seals, so a peer cannot hand over memory it could later pull away.
//!
//! Permissions: a memfd has no name, so mode bits and groups play no part. Access is by
//! descriptor: only processes that were sent it (or can open `/proc/PID/fd/N` of a holder,
//! which needs ptrace rights over that process) can map it. A [`SegmentServer`] therefore
//! guards the hand-off: its socket file is `0o600` whatever the umask, and every connecting
//! process's credentials (`SO_PEERCRED`) must pass its [`PeerPolicy`] (the same user by
//! default) before the descriptor is sent.
//!
//! * [`MemfdSegment::create`] makes, sizes, seals, maps (`MAP_SHARED`) and formats a segment.
//! * [`MemfdSegment::send_over`] / [`MemfdSegment::receive_from`] pass it over a connected
//!   [`UnixStream`]; [`MemfdSegment::connect`] connects to a socket path and receives.
//! * [`SegmentServer`] listens on a socket path and hands the segment to every client that
//!   connects, once ([`SegmentServer::serve_one`]) or on a background thread
//!   ([`SegmentServer::spawn`]).
//!
//! ```no_run
//! # // Not run as a test: the client side belongs in another process, and a fixed socket
//! # // path could collide with a running server.
//! use std::path::Path;
//! use std::sync::Arc;
//! use dmxp_memfd::{MemfdSegment, SegmentServer};
//!
//! // Server side.
//! let segment = Arc::new(MemfdSegment::create("dmxp", 1 << 20)?);
//! let server = SegmentServer::bind(Path::new("/tmp/dmxp.sock"), segment)?.spawn();
//!
//! // Client side (another process).
//! let mine = MemfdSegment::connect(Path::new("/tmp/dmxp.sock"))?;
//! # drop((server, mine));
//! # Ok::<(), std::io::Error>(())
//! ```
#![warn(missing_docs, missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn)]

use core::ffi::c_void;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use std::io::{self, ErrorKind, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use dmxp_nostd::layout::{HEADER_SIZE, SEGMENT_ALIGN};
use dmxp_nostd::{FormatOptions, Region, Segment, SegmentMemory};
use rustix::event::{PollFd, PollFlags};
use rustix::fs::{MemfdFlags, Mode, SealFlags};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The one data byte that travels with the descriptor (a stream socket needs at least one
/// byte to carry ancillary data). Anything else is refused as a foreign protocol.
const HANDOFF_TAG: u8 = b'D';

/// Descriptors a receiver makes room for; extra ones a peer sends are closed.
const MAX_RECEIVED_FDS: usize = 4;

/// The seals a segment must carry before this crate maps it.
pub const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW);

/// A sealed memfd mapped read-write and `MAP_SHARED` into this process. Unmaps on drop; the
/// memory lives until the last descriptor and mapping in any process are gone.
#[derive(Debug)]
pub struct MemfdSegment {
    fd: OwnedFd,
    base: NonNull<c_void>,
    len: usize,
}

// SAFETY: the mapping is process-wide memory owned by this value; it is only ever accessed
// through `Region`, whose views are atomics, so moving or sharing the owner between threads
// cannot create a data race. The fd is an ordinary owned descriptor.
unsafe impl Send for MemfdSegment {}
// SAFETY: as above; `&MemfdSegment` only hands out `Region`s, the fd and the length.
unsafe impl Sync for MemfdSegment {}

impl MemfdSegment {
    /// Creates a memfd of `size` bytes (`debug_name` shows in `/proc/PID/fd`), seals it against
    /// shrinking, growing and further sealing, maps it and formats an empty segment.
    ///
    /// Errors: [`ErrorKind::InvalidInput`] if `size` is smaller than the header
    /// ([`HEADER_SIZE`] bytes), or the OS error.
    pub fn create(debug_name: &str, size: usize) -> io::Result<MemfdSegment> {
        Self::create_with(debug_name, size, FormatOptions::default())
    }

    /// [`Self::create`], formatting the segment with `format` (a larger peer table, say:
    /// [`FormatOptions::with_peer_records`]).
    ///
    /// Errors: as [`Self::create`], and [`ErrorKind::InvalidInput`] for options that
    /// [`FormatOptions::check`] refuses.
    pub fn create_with(
        debug_name: &str,
        size: usize,
        format: FormatOptions,
    ) -> io::Result<MemfdSegment> {
        format
            .check()
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
        if size < HEADER_SIZE {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("segment size {size} is smaller than the {HEADER_SIZE}-byte header"),
            ));
        }
        let fd =
            rustix::fs::memfd_create(debug_name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .map_err(|e| annotate(e, "memfd_create"))?;
        rustix::fs::ftruncate(&fd, size as u64).map_err(|e| annotate(e, "ftruncate"))?;
        rustix::fs::fcntl_add_seals(&fd, REQUIRED_SEALS | SealFlags::SEAL)
            .map_err(|e| annotate(e, "F_ADD_SEALS"))?;
        let segment = Self::map(fd, size)?;
        Segment::format_with(segment.region(), std::process::id(), format)
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
        Ok(segment)
    }

    /// Maps a memfd received from elsewhere. Does not validate its contents (attach does).
    ///
    /// Errors: [`ErrorKind::InvalidInput`] if the descriptor is not sealed against shrinking
    /// and growing (a peer could then truncate it under the mapping), including descriptors
    /// that cannot be sealed at all; [`ErrorKind::InvalidData`] if it is smaller than the
    /// header; the OS error otherwise.
    pub fn from_fd(fd: OwnedFd) -> io::Result<MemfdSegment> {
        let seals = match rustix::fs::fcntl_get_seals(&fd) {
            Ok(seals) => seals,
            Err(Errno::INVAL) => {
                return Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    "descriptor cannot be sealed (not a memfd): refusing it",
                ))
            }
            Err(e) => return Err(annotate(e, "F_GET_SEALS")),
        };
        if !seals.contains(REQUIRED_SEALS) {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "memfd is not sealed against shrink and grow (seals {:#x}): another process \
                     could truncate it under the mapping",
                    seals.bits()
                ),
            ));
        }
        let stat = rustix::fs::fstat(&fd).map_err(|e| annotate(e, "fstat"))?;
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        if size < HEADER_SIZE as u64 {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("memfd of {size} bytes is smaller than the {HEADER_SIZE}-byte header"),
            ));
        }
        let size = usize::try_from(size).map_err(|_| {
            io::Error::new(
                ErrorKind::InvalidData,
                format!("memfd is too large to map ({size} bytes)"),
            )
        })?;
        Self::map(fd, size)
    }

    /// Sends this segment's descriptor over a connected Unix stream socket (`SCM_RIGHTS`).
    /// The receiver gets its own descriptor for the same memory.
    pub fn send_over(&self, stream: &UnixStream) -> io::Result<()> {
        let fds = [self.fd.as_fd()];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::other(
                "control buffer too small for one descriptor",
            ));
        }
        let data = [HANDOFF_TAG];
        loop {
            // NOSIGNAL: a client that hung up yields EPIPE instead of killing us with SIGPIPE.
            match rustix::net::sendmsg(
                stream,
                &[IoSlice::new(&data)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(1) => return Ok(()),
                Ok(_) => return Err(io::Error::new(ErrorKind::WriteZero, "sendmsg sent nothing")),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(annotate(e, "sendmsg")),
            }
        }
    }

    /// Receives a segment descriptor sent with [`Self::send_over`] and maps it (checking its
    /// seals, see [`Self::from_fd`]).
    ///
    /// Errors: [`ErrorKind::UnexpectedEof`] if the peer closed without sending;
    /// [`ErrorKind::InvalidData`] if it sent something else or no descriptor.
    pub fn receive_from(stream: &UnixStream) -> io::Result<MemfdSegment> {
        let mut data = [0u8; 1];
        let mut space =
            [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_RECEIVED_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = loop {
            match rustix::net::recvmsg(
                stream,
                &mut [IoSliceMut::new(&mut data)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(received) => break received,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(annotate(e, "recvmsg")),
            }
        };
        // Take the first descriptor; any others drop (close) here.
        let mut fd = None;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                for received_fd in fds {
                    fd.get_or_insert(received_fd);
                }
            }
        }
        if received.bytes == 0 && fd.is_none() {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "peer closed the socket without sending a segment",
            ));
        }
        if data[0] != HANDOFF_TAG {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "peer sent something other than a DMXP segment hand-off",
            ));
        }
        let fd = fd.ok_or_else(|| {
            io::Error::new(
                ErrorKind::InvalidData,
                "peer's hand-off message carried no file descriptor",
            )
        })?;
        Self::from_fd(fd)
    }

    /// Connects to a [`SegmentServer`] listening at `socket_path` and receives its segment.
    pub fn connect(socket_path: &Path) -> io::Result<MemfdSegment> {
        let stream = UnixStream::connect(socket_path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("connect to {}: {e}", socket_path.display()),
            )
        })?;
        Self::receive_from(&stream)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel (null hint, no MAP_FIXED), so it
        // replaces nothing in this process. It is MAP_SHARED over a memfd of exactly `len`
        // bytes whose size is sealed, and it is only ever accessed through `Region`, i.e.
        // through atomics.
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
        .map_err(|e| annotate(e, "mmap"))?;
        let base = NonNull::new(ptr).ok_or_else(|| io::Error::other("mmap returned null"))?;
        let segment = MemfdSegment { fd, base, len };
        if !(ptr as usize).is_multiple_of(SEGMENT_ALIGN) {
            // Never happens (mmap returns page-aligned addresses); checked so `region` holds.
            return Err(io::Error::other("mmap returned a misaligned address"));
        }
        Ok(segment)
    }

    /// The memfd (to check its seals, or to pass it on by other means).
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The mapped length in bytes (the memfd's sealed size).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a mapping holds at least the header.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl SegmentMemory for MemfdSegment {
    fn region(&self) -> Region<'_> {
        // SAFETY: `base..base + len` is a live MAP_SHARED read-write mapping owned by `self`
        // and unmapped only in `drop`, so it is valid for the borrow of `self`; its size is
        // sealed, so no process can truncate it away. The pointer is mmap's return value
        // (write provenance). All access goes through `Region`'s atomic views.
        unsafe { Region::from_raw_parts(self.base.as_ptr().cast::<u8>(), self.len) }
            .expect("mmap returns page-aligned, non-null addresses (checked in `map`)")
    }
}

impl Drop for MemfdSegment {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `map`, unmapped only here.
        // Every `Region` borrowed from `self` has ended, since `drop` takes `&mut self`.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr(), self.len) };
    }
}

/// The credentials of a process connecting to a [`SegmentServer`] (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// The peer's process id (as seen from this process's pid namespace; 0 if unknown there).
    pub pid: u32,
    /// The peer's effective uid.
    pub uid: u32,
    /// The peer's effective gid.
    pub gid: u32,
}

/// Who a [`SegmentServer`] hands its segment to.
///
/// The default ([`PeerPolicy::same_user`]) accepts only processes of this process's effective
/// uid. Others are added explicitly by uid or gid, or decided by a callback.
///
/// ```
/// use dmxp_memfd::{PeerCredentials, PeerPolicy};
/// let policy = PeerPolicy::same_user().allow_uid(1001).allow_gid(50);
/// let me = rustix::process::geteuid().as_raw();
/// assert!(policy.allows(&PeerCredentials { pid: 1, uid: me, gid: 0 }));
/// assert!(policy.allows(&PeerCredentials { pid: 1, uid: 1001, gid: 0 }));
/// assert!(policy.allows(&PeerCredentials { pid: 1, uid: 1002, gid: 50 }));
/// assert!(!policy.allows(&PeerCredentials { pid: 1, uid: 1002, gid: 51 }) || me == 1002);
/// ```
#[derive(Clone)]
pub struct PeerPolicy {
    uids: Vec<u32>,
    gids: Vec<u32>,
    decide: Option<Decide>,
}

/// A [`PeerPolicy`] callback.
type Decide = Arc<dyn Fn(&PeerCredentials) -> bool + Send + Sync>;

impl PeerPolicy {
    /// Processes whose effective uid is this process's.
    ///
    /// ```
    /// let me = rustix::process::geteuid().as_raw();
    /// let policy = dmxp_memfd::PeerPolicy::same_user();
    /// assert!(policy.allows(&dmxp_memfd::PeerCredentials { pid: 1, uid: me, gid: 0 }));
    /// ```
    #[must_use]
    pub fn same_user() -> Self {
        Self {
            uids: vec![rustix::process::geteuid().as_raw()],
            gids: Vec::new(),
            decide: None,
        }
    }

    /// Also processes of user `uid`.
    ///
    /// ```
    /// let policy = dmxp_memfd::PeerPolicy::same_user().allow_uid(4242);
    /// assert!(policy.allows(&dmxp_memfd::PeerCredentials { pid: 1, uid: 4242, gid: 0 }));
    /// ```
    #[must_use]
    pub fn allow_uid(mut self, uid: u32) -> Self {
        self.uids.push(uid);
        self
    }

    /// Also processes whose effective gid is `gid`.
    ///
    /// ```
    /// let policy = dmxp_memfd::PeerPolicy::same_user().allow_gid(77);
    /// assert!(policy.allows(&dmxp_memfd::PeerCredentials { pid: 1, uid: 4242, gid: 77 }));
    /// ```
    #[must_use]
    pub fn allow_gid(mut self, gid: u32) -> Self {
        self.gids.push(gid);
        self
    }

    /// Decide with `decide` (called for each connection; true hands the segment over). Uids
    /// and gids allowed above still pass.
    ///
    /// ```
    /// let policy = dmxp_memfd::PeerPolicy::same_user().or_if(|peer| peer.pid == 1);
    /// assert!(policy.allows(&dmxp_memfd::PeerCredentials { pid: 1, uid: 4242, gid: 9 }));
    /// ```
    #[must_use]
    pub fn or_if(
        mut self,
        decide: impl Fn(&PeerCredentials) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.decide = Some(Arc::new(decide));
        self
    }

    /// Whether a peer with these credentials gets the segment.
    ///
    /// ```
    /// let policy = dmxp_memfd::PeerPolicy::same_user();
    /// let stranger = dmxp_memfd::PeerCredentials { pid: 1, uid: u32::MAX - 1, gid: u32::MAX - 1 };
    /// assert!(!policy.allows(&stranger));
    /// ```
    #[must_use]
    pub fn allows(&self, peer: &PeerCredentials) -> bool {
        self.uids.contains(&peer.uid)
            || self.gids.contains(&peer.gid)
            || self.decide.as_ref().is_some_and(|decide| decide(peer))
    }
}

impl Default for PeerPolicy {
    fn default() -> Self {
        Self::same_user()
    }
}

impl core::fmt::Debug for PeerPolicy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PeerPolicy")
            .field("uids", &self.uids)
            .field("gids", &self.gids)
            .field("callback", &self.decide.is_some())
            .finish()
    }
}

/// What a server has done: hand-offs made, and peers refused by its [`PeerPolicy`].
#[derive(Debug, Default)]
struct Counters {
    served: AtomicUsize,
    refused: AtomicUsize,
    last_refused: std::sync::Mutex<Option<PeerCredentials>>,
}

/// Listens on a Unix socket path and hands a segment to each client that connects and that its
/// [`PeerPolicy`] allows (the same user, by default).
///
/// The socket file is created with mode `0o600` whatever the umask (bound in a private `0o700`
/// directory, set to `0o600`, then renamed into place, so it is never reachable with a wider
/// mode), in a directory that others cannot replace it in (PROTOCOL.md §3.4). Each connection's
/// credentials are read with `SO_PEERCRED`; a refused peer gets no descriptor, only a closed
/// connection, and is counted ([`ServerHandle::refused`]). The socket file is removed when the
/// server (or the [`ServerHandle`] of a spawned server) is dropped.
#[derive(Debug)]
pub struct SegmentServer {
    listener: UnixListener,
    path: PathBuf,
    segment: Arc<MemfdSegment>,
    policy: PeerPolicy,
    counters: Arc<Counters>,
}

impl SegmentServer {
    /// Binds `socket_path` (which must not exist) to serve `segment` to processes of this
    /// user, with a socket file of mode `0o600`.
    ///
    /// Errors: [`ErrorKind::AddrInUse`] if something is at `socket_path` (it is left alone);
    /// [`ErrorKind::InvalidInput`] for a path with control characters;
    /// [`ErrorKind::PermissionDenied`] (carrying a `dmxp_os::UntrustedObject`) if its
    /// directory is writable by anyone and not sticky; the OS error otherwise.
    pub fn bind(socket_path: &Path, segment: Arc<MemfdSegment>) -> io::Result<SegmentServer> {
        Self::bind_with_mode(socket_path, segment, 0o600)
    }

    /// [`Self::bind`] with socket file mode `mode` (for example `0o660` to let a group
    /// connect; the [`PeerPolicy`] still decides who gets the segment).
    pub fn bind_with_mode(
        socket_path: &Path,
        segment: Arc<MemfdSegment>,
        mode: u32,
    ) -> io::Result<SegmentServer> {
        if mode & !0o777 != 0 {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("mode {mode:#o} has bits outside 0o777"),
            ));
        }
        dmxp_os::check_path(socket_path)?;
        let what = format!("segment server socket {}", socket_path.display());
        let dir = dmxp_os::parent_dir(socket_path);
        dmxp_os::check_directory(dir, &what)?;
        let listener = bind_private(socket_path, dir, mode).map_err(|e| {
            io::Error::new(e.kind(), format!("bind {}: {e}", socket_path.display()))
        })?;
        Ok(SegmentServer {
            listener,
            path: socket_path.to_path_buf(),
            segment,
            policy: PeerPolicy::same_user(),
            counters: Arc::default(),
        })
    }

    /// Serves only peers `policy` allows (instead of this user's processes only).
    #[must_use]
    pub fn with_policy(mut self, policy: PeerPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The socket path clients connect to.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The segment being served.
    #[must_use]
    pub fn segment(&self) -> &Arc<MemfdSegment> {
        &self.segment
    }

    /// Waits for one client and sends it the segment if the policy allows it.
    ///
    /// Errors: [`ErrorKind::PermissionDenied`] naming the peer's pid, uid and gid if the
    /// policy refused it (it got nothing); the OS error otherwise.
    pub fn serve_one(&self) -> io::Result<()> {
        let (stream, _) = self.listener.accept()?;
        self.hand_off(&stream)
    }

    /// Checks the peer of `stream` and sends it the segment, counting either outcome.
    fn hand_off(&self, stream: &UnixStream) -> io::Result<()> {
        let cred = rustix::net::sockopt::socket_peercred(stream)
            .map_err(|e| annotate(e, "SO_PEERCRED"))?;
        let peer = PeerCredentials {
            pid: u32::try_from(cred.pid.as_raw_nonzero().get()).unwrap_or(0),
            uid: cred.uid.as_raw(),
            gid: cred.gid.as_raw(),
        };
        if !self.policy.allows(&peer) {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.counters.last_refused.lock() {
                *last = Some(peer);
            }
            return Err(io::Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "{}: refused peer pid {} uid {} gid {} (not allowed by the server's policy)",
                    self.path.display(),
                    peer.pid,
                    peer.uid,
                    peer.gid
                ),
            ));
        }
        // Counted before the descriptor leaves, so a client holding it always sees itself
        // counted; uncounted again if the send fails.
        self.counters.served.fetch_add(1, Ordering::Relaxed);
        let sent = self.segment.send_over(stream);
        if sent.is_err() {
            self.counters.served.fetch_sub(1, Ordering::Relaxed);
        }
        sent
    }

    /// Serves every client on a background thread until the returned handle is stopped or
    /// dropped. A client that hangs up early, or that the policy refuses, does not stop the
    /// server.
    pub fn spawn(self) -> ServerHandle {
        let (stop_tx, stop_rx) = match UnixStream::pair() {
            Ok(pair) => pair,
            Err(error) => return ServerHandle::failed(self, error),
        };
        if let Err(error) = self.listener.set_nonblocking(true) {
            return ServerHandle::failed(self, error);
        }
        let counters = self.counters.clone();
        let path = self.path.clone();
        let thread = std::thread::Builder::new()
            .name("dmxp-memfd-server".into())
            .spawn(move || self.serve_until(&stop_rx));
        match thread {
            Ok(thread) => ServerHandle {
                stop: Some(stop_tx),
                thread: Some(thread),
                counters,
                path,
                spawn_error: None,
            },
            Err(error) => ServerHandle {
                stop: None,
                thread: None,
                counters,
                path,
                spawn_error: Some(error),
            },
        }
    }

    fn serve_until(self, stop: &UnixStream) -> io::Result<()> {
        loop {
            let mut fds = [
                PollFd::new(&self.listener, PollFlags::IN),
                PollFd::new(stop, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => return Err(annotate(e, "poll")),
            }
            if !fds[1].revents().is_empty() {
                return Ok(());
            }
            if fds[0].revents().is_empty() {
                continue;
            }
            match self.listener.accept() {
                Ok((stream, _)) => {
                    // Our end was made non-blocking by the listener; the hand-off blocks.
                    let _ = stream.set_nonblocking(false);
                    // A client that hung up already, or one the policy refused (counted), is
                    // skipped; the others are still served.
                    let _ = self.hand_off(&stream);
                }
                // Spurious readiness, or a client that gave up before we accepted it.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock
                            | ErrorKind::Interrupted
                            | ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Binds a listener at `path` whose socket file has `mode` from the first instant others can
/// reach it: bound inside a fresh `0o700` directory next to `path`, `chmod`ed, then renamed
/// into place without replacing anything.
fn bind_private(path: &Path, dir: &Path, mode: u32) -> io::Result<UnixListener> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "socket path has no file name"))?;
    if path.symlink_metadata().is_ok() {
        // As bind(2) itself says of a taken path.
        return Err(io::Error::new(ErrorKind::AddrInUse, "the path exists"));
    }
    let private = dir.join(format!(
        ".{}.dmxp-bind.{}.{}",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    rustix::fs::mkdir(&private, Mode::from_raw_mode(0o700)).map_err(io::Error::from)?;
    let staged = private.join("socket");
    let result = (|| {
        let listener = UnixListener::bind(&staged)?;
        rustix::fs::chmod(&staged, Mode::from_raw_mode(mode)).map_err(io::Error::from)?;
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &staged,
            rustix::fs::CWD,
            path,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| match e {
            Errno::EXIST => io::Error::new(ErrorKind::AddrInUse, "the path exists"),
            e => io::Error::from(e),
        })?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    result
}

impl Drop for SegmentServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A [`SegmentServer`] running on a background thread. Stops it (and removes the socket file)
/// when dropped or [stopped](ServerHandle::stop).
#[derive(Debug)]
#[must_use = "dropping the handle stops the server at once"]
pub struct ServerHandle {
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<io::Result<()>>>,
    counters: Arc<Counters>,
    path: PathBuf,
    spawn_error: Option<io::Error>,
}

impl ServerHandle {
    fn failed(server: SegmentServer, error: io::Error) -> ServerHandle {
        let path = server.path.clone();
        let counters = server.counters.clone();
        drop(server);
        ServerHandle {
            stop: None,
            thread: None,
            counters,
            path,
            spawn_error: Some(error),
        }
    }

    /// The socket path clients connect to.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many clients have been sent the segment so far. A hand-off is counted just before
    /// its descriptor is sent (and uncounted if sending fails), so a client that holds the
    /// segment is always included.
    #[must_use]
    pub fn served(&self) -> usize {
        self.counters.served.load(Ordering::Relaxed)
    }

    /// How many connecting peers the [`PeerPolicy`] refused (they got no descriptor).
    #[must_use]
    pub fn refused(&self) -> usize {
        self.counters.refused.load(Ordering::Relaxed)
    }

    /// The credentials of the last peer refused, if any.
    #[must_use]
    pub fn last_refused(&self) -> Option<PeerCredentials> {
        self.counters
            .last_refused
            .lock()
            .ok()
            .and_then(|last| *last)
    }

    /// Stops serving, waits for the thread, removes the socket file. Returns the error that
    /// stopped the server early, if one did (or that kept it from starting).
    pub fn stop(mut self) -> io::Result<()> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> io::Result<()> {
        // Closing our end makes the thread's end readable (end of file): it returns.
        drop(self.stop.take());
        let result = match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("segment server thread panicked"))),
            None => Ok(()),
        };
        // The thread dropped the server, which removed the socket file.
        match self.spawn_error.take() {
            Some(error) => Err(error),
            None => result,
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

fn annotate(errno: Errno, what: &str) -> io::Error {
    let error = io::Error::from(errno);
    io::Error::new(error.kind(), format!("{what}: {error}"))
}
