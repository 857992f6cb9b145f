//! Helpers shared by the integration tests: unique segment names, cleanup, and children that
//! are this same test binary re-executed to run one `#[ignore]`d helper "test".
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use dmxp::ChannelBuilder;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `/dmxp_t<pid>_<n>_<tag>`.
pub fn unique_name(tag: &str) -> String {
    format!(
        "/dmxp_t{}_{}_{tag}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A path unique to this process and call, in the temp directory.
pub fn unique_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "dmxp_t{}_{}_{tag}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Unlinks a shm segment name when dropped.
pub struct ShmName(pub String);

impl ShmName {
    pub fn new(tag: &str) -> Self {
        Self(unique_name(tag))
    }
}

impl Drop for ShmName {
    fn drop(&mut self) {
        let _ = dmxp::unlink_segment(&self.0);
    }
}

/// Removes a file (or socket) when dropped.
pub struct TempPath(pub PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Where a segment is, as passed to children in `DMXP_T_SPEC`.
#[derive(Clone, Debug)]
pub enum Spec {
    Shm(String),
    File(PathBuf),
    MemfdSocket(PathBuf),
}

impl Spec {
    pub fn encode(&self) -> String {
        match self {
            Spec::Shm(name) => format!("shm:{name}"),
            Spec::File(path) => format!("file:{}", path.display()),
            Spec::MemfdSocket(path) => format!("memfd:{}", path.display()),
        }
    }

    pub fn decode(text: &str) -> Spec {
        let (kind, rest) = text.split_once(':').expect("spec is kind:value");
        match kind {
            "shm" => Spec::Shm(rest.to_owned()),
            "file" => Spec::File(rest.into()),
            "memfd" => Spec::MemfdSocket(rest.into()),
            other => panic!("unknown spec kind {other}"),
        }
    }

    /// A builder for this segment (2 MiB when created).
    pub fn builder(&self) -> ChannelBuilder {
        let builder = ChannelBuilder::new()
            .with_segment_size(2 << 20)
            .with_timeout(std::time::Duration::from_secs(30));
        match self {
            Spec::Shm(name) => builder.with_segment_name(name.clone()),
            #[cfg(feature = "file")]
            Spec::File(path) => builder.with_file(path.clone()),
            #[cfg(feature = "memfd")]
            Spec::MemfdSocket(path) => builder.with_memfd_socket(path.clone()),
            #[allow(unreachable_patterns)]
            other => panic!("backend of {other:?} not compiled in"),
        }
    }
}

/// The environment variable a child reads, or `None` when the helper runs as a plain test
/// (then it returns at once).
pub fn child_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// Required environment variable of a child.
pub fn env<T: std::str::FromStr>(key: &str) -> T {
    std::env::var(key)
        .unwrap_or_else(|_| panic!("{key} not set"))
        .parse()
        .unwrap_or_else(|_| panic!("{key} does not parse"))
}

/// Starts this test binary again, running only the ignored helper `test` with `envs`.
pub fn spawn_child(test: &str, envs: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    let mut command = Command::new(exe);
    command
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in envs {
        command.env(key, value);
    }
    command.spawn().expect("spawn child test process")
}

/// Waits for a child and panics with its output unless it succeeded; returns its stdout.
pub fn expect_success(child: Child, what: &str) -> String {
    let output = child.wait_with_output().expect("wait for child");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stdout
}

/// True when this kernel has `IORING_OP_FUTEX_WAIT` (6.7 or later) and lets this process set
/// up an `io_uring`, so that async and event-loop waits must use it (PROTOCOL.md §7.4).
pub fn io_uring_futex_waits_available() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version < (6, 7) {
        return false;
    }
    // io_uring_setup(1, params): fails under kernel.io_uring_disabled or a seccomp filter.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes a `struct io_uring_params` (120 bytes) at the
    // pointer, which `params` provides; a returned fd is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` is the descriptor the call just returned, owned by nothing else.
    unsafe { libc::close(fd as i32) };
    true
}

/// A file segment in the temporary directory, removed when the guard drops.
pub fn file_segment(tag: &str) -> (TempPath, Spec) {
    let path = unique_path(tag);
    (TempPath(path.clone()), Spec::File(path))
}

/// A builder of channel `channel` (`capacity` slots) in a 4 MiB segment of `spec`.
pub fn small_channel(spec: &Spec, channel: u32, capacity: u64) -> ChannelBuilder {
    spec.builder()
        .with_segment_size(4 << 20)
        .with_channel_id(channel)
        .with_capacity(capacity)
}

/// A current-thread tokio runtime with I/O and timers, as async users run one.
#[cfg(feature = "tokio")]
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The mechanism async waits must use here: `IoUring` where the kernel has
/// `IORING_OP_FUTEX_WAIT` (6.7 or later) and lets this process set up a ring, `Polling`
/// otherwise or when `DMXP_ASYNC_POLL` forces it.
#[cfg(feature = "tokio")]
pub fn expected_wakeup() -> dmxp::AsyncWakeup {
    let forced = std::env::var_os("DMXP_ASYNC_POLL").is_some_and(|v| !v.is_empty() && v != "0");
    if !forced && io_uring_futex_waits_available() {
        dmxp::AsyncWakeup::IoUring
    } else {
        dmxp::AsyncWakeup::Polling
    }
}
