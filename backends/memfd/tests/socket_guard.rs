//! Who can reach a `SegmentServer`: the socket file's mode whatever the umask, and the
//! `SO_PEERCRED` policy that decides who gets the descriptor (PROTOCOL.md §3.4).
//!
//! These tests change the process umask, so they live in their own test binary. The other-uid
//! cases need root (to run a client as `nobody`) and `python3` (the client); without them they
//! say so on stderr and check nothing.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use dmxp_memfd::{MemfdSegment, PeerPolicy, SegmentServer};

const NOBODY: u32 = 65534;

/// A client that connects as `nobody` and prints how many descriptors it received (or the
/// connect error).
const CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect-error", e.errno)
    sys.exit(0)
try:
    msg, fds, flags, addr = socket.recv_fds(s, 1, 4)
except OSError as e:
    print("recv-error", e.errno)
    sys.exit(0)
print("fds", len(fds))
"#;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("dmxp_sock_{tag}_{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        // Searchable by everyone, so that a client of another uid reaches the socket's mode.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn segment() -> Arc<MemfdSegment> {
    Arc::new(MemfdSegment::create("dmxp-guard", 1 << 20).unwrap())
}

fn connect_as_nobody(socket: &Path) -> Option<String> {
    // The system's Python: a per-user install under /root is not executable by nobody.
    let python = "/usr/bin/python3";
    if rustix::process::geteuid().as_raw() != 0
        || !Path::new("/usr/bin/setpriv").exists()
        || !Path::new(python).exists()
    {
        eprintln!(
            "SKIPPED: needs root, setpriv and {python} to connect as nobody; NOTHING WAS CHECKED"
        );
        return None;
    }
    let output = Command::new("/usr/bin/setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .args([python, "-c", CLIENT])
        .arg(socket)
        .output()
        .expect("run python3 as nobody");
    assert!(output.status.success(), "{output:?}");
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[test]
fn the_socket_is_owner_only_under_umask_0_and_strangers_get_no_descriptor() {
    let old = rustix::process::umask(rustix::fs::Mode::empty());
    let dir = TempDir::new("umask");
    let path = dir.0.join("segment.sock");
    let server = SegmentServer::bind(&path, segment()).unwrap();
    rustix::process::umask(old);

    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    // Nothing of the private staging directory is left beside it.
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("segment.sock")]);

    let handle = server.spawn();
    // EACCES: the file's mode already keeps other users from connecting.
    if let Some(reply) = connect_as_nobody(&path) {
        assert_eq!(reply, "connect-error 13");
    }
    // The owner still gets the segment.
    MemfdSegment::connect(&path).unwrap();
    assert_eq!(handle.served(), 1);
    handle.stop().unwrap();
}

#[test]
fn a_peer_the_policy_refuses_gets_nothing_and_is_counted() {
    let dir = TempDir::new("policy");
    let path = dir.0.join("segment.sock");
    // A socket anyone may connect to: only the SO_PEERCRED policy stands in the way.
    let handle = SegmentServer::bind_with_mode(&path, segment(), 0o666)
        .unwrap()
        .spawn();
    let Some(reply) = connect_as_nobody(&path) else {
        return;
    };
    assert_eq!(reply, "fds 0", "a refused peer must get no descriptor");
    assert_eq!(handle.refused(), 1);
    assert_eq!(handle.served(), 0);
    let refused = handle.last_refused().unwrap();
    assert_eq!((refused.uid, refused.gid), (NOBODY, NOBODY));
    handle.stop().unwrap();

    // Allowed explicitly, the same client gets the descriptor.
    let path = dir.0.join("allowed.sock");
    let handle = SegmentServer::bind_with_mode(&path, segment(), 0o666)
        .unwrap()
        .with_policy(PeerPolicy::same_user().allow_uid(NOBODY))
        .spawn();
    assert_eq!(connect_as_nobody(&path).unwrap(), "fds 1");
    assert_eq!((handle.served(), handle.refused()), (1, 0));
    handle.stop().unwrap();
}

#[test]
fn binding_refuses_an_existing_path_and_an_open_directory() {
    let dir = TempDir::new("exists");
    let path = dir.0.join("taken");
    std::fs::write(&path, b"someone else's").unwrap();
    let error = SegmentServer::bind(&path, segment()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");

    let open = dir.0.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let error = SegmentServer::bind(&open.join("s.sock"), segment()).unwrap_err();
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::PermissionDenied,
        "{error}"
    );
    assert!(!open.join("s.sock").exists());
}
