//! Tests of the memfd backend: seals, SCM_RIGHTS hand-off, and the segment server with a
//! client in another process.

use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dmxp_memfd::{MemfdSegment, SegmentServer};
use dmxp_nostd::layout::{runtime, HEADER_SIZE, MSG_INLINE, SLOT_SIZE};
use dmxp_nostd::{Segment, SegmentMemory, SendMeta};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;

const SIZE: usize = HEADER_SIZE + 128 * SLOT_SIZE;

fn meta() -> SendMeta {
    SendMeta {
        sender_pid: std::process::id(),
        sender_runtime: runtime::RUST,
        ..SendMeta::default()
    }
}

/// A unique socket path, removed when the guard drops (even if the test panics).
struct SocketPath(PathBuf);

impl SocketPath {
    fn new(tag: &str) -> SocketPath {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        SocketPath(std::env::temp_dir().join(format!(
            "dmxp_test_memfd_{}_{n}_{tag}.sock",
            std::process::id()
        )))
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn send(memory: &MemfdSegment, channel: u32, payload: &[u8]) {
    let segment = Segment::attach(memory.region()).unwrap();
    segment
        .open_channel(channel)
        .unwrap()
        .try_send(payload, &meta())
        .unwrap();
}

fn recv_one(memory: &MemfdSegment, channel: u32) -> Vec<u8> {
    let segment = Segment::attach(memory.region()).unwrap();
    let channel = segment.open_channel(channel).unwrap();
    let mut buf = [0u8; MSG_INLINE];
    let received = channel.try_recv(&mut buf).expect("a message");
    buf[..received.len].to_vec()
}

fn with_channel(capacity: u64) -> MemfdSegment {
    let memory = MemfdSegment::create("dmxp-test", SIZE).unwrap();
    Segment::attach(memory.region())
        .expect("create formats the segment")
        .create_channel(0, capacity, std::process::id())
        .unwrap();
    memory
}

#[test]
fn create_formats_a_sealed_segment() {
    let memory = MemfdSegment::create("dmxp-test", SIZE).unwrap();
    assert_eq!(memory.len(), SIZE);
    let seals = rustix::fs::fcntl_get_seals(memory.fd()).unwrap();
    assert!(
        seals.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL),
        "seals {seals:?}"
    );
    assert_eq!(rustix::fs::fstat(memory.fd()).unwrap().st_size, SIZE as i64);
    let segment = Segment::attach(memory.region()).unwrap();
    assert_eq!(segment.len(), SIZE as u64);
    assert_eq!(segment.channel_count(), 0);
    assert_eq!(segment.creator_pid(), std::process::id());
}

#[test]
fn sealed_memfd_cannot_be_resized_or_resealed() {
    let memory = MemfdSegment::create("dmxp-test", SIZE).unwrap();
    assert_eq!(
        rustix::fs::ftruncate(memory.fd(), 4096),
        Err(Errno::PERM),
        "shrink"
    );
    assert_eq!(
        rustix::fs::ftruncate(memory.fd(), 2 * SIZE as u64),
        Err(Errno::PERM),
        "grow"
    );
    // F_SEAL_SEAL: nobody can add a write seal that would break our writable mapping.
    assert_eq!(
        rustix::fs::fcntl_add_seals(memory.fd(), SealFlags::WRITE),
        Err(Errno::PERM)
    );
    assert_eq!(rustix::fs::fstat(memory.fd()).unwrap().st_size, SIZE as i64);
}

#[test]
fn create_refuses_a_size_below_the_header() {
    let error = MemfdSegment::create("dmxp-test", HEADER_SIZE - 1).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
}

fn raw_memfd(flags: MemfdFlags, seals: SealFlags) -> std::os::fd::OwnedFd {
    let fd = rustix::fs::memfd_create("dmxp-raw", flags).unwrap();
    rustix::fs::ftruncate(&fd, SIZE as u64).unwrap();
    if !seals.is_empty() {
        rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
    }
    fd
}

#[test]
fn from_fd_refuses_an_unsealed_memfd() {
    // Sealing not allowed at all (the kernel reports only F_SEAL_SEAL).
    let fd = raw_memfd(MemfdFlags::CLOEXEC, SealFlags::empty());
    let error = MemfdSegment::from_fd(fd).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
    assert!(error.to_string().contains("not sealed"), "{error}");

    // Sealing allowed but not done.
    let fd = raw_memfd(
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        SealFlags::empty(),
    );
    let error = MemfdSegment::from_fd(fd).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");

    // Half sealed: it could still be shrunk, or grown.
    for half in [SealFlags::SHRINK, SealFlags::GROW] {
        let fd = raw_memfd(MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING, half);
        let error = MemfdSegment::from_fd(fd).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "{half:?}: {error}");
    }
}

#[test]
fn from_fd_refuses_a_descriptor_that_cannot_be_sealed() {
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    let error = MemfdSegment::from_fd(file.into()).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
}

#[test]
fn from_fd_maps_a_sealed_memfd_without_formatting_it() {
    let fd = raw_memfd(
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        SealFlags::SHRINK | SealFlags::GROW,
    );
    let memory = MemfdSegment::from_fd(fd).unwrap();
    assert_eq!(memory.len(), SIZE);
    assert!(matches!(
        Segment::attach(memory.region()),
        Err(dmxp_nostd::Error::NotReady)
    ));
}

#[test]
fn from_fd_refuses_a_sealed_memfd_smaller_than_the_header() {
    let fd = rustix::fs::memfd_create("dmxp-raw", MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::ftruncate(&fd, 4096).unwrap();
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).unwrap();
    let error = MemfdSegment::from_fd(fd).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");
}

#[test]
fn send_over_and_receive_from_share_the_memory() {
    let sender_side = with_channel(8);
    let (a, b) = UnixStream::pair().unwrap();
    sender_side.send_over(&a).unwrap();
    let receiver_side = MemfdSegment::receive_from(&b).unwrap();

    assert_eq!(receiver_side.len(), SIZE);
    assert_ne!(
        sender_side.region().base_addr(),
        receiver_side.region().base_addr(),
        "two separate mappings"
    );
    assert_ne!(
        std::os::fd::AsRawFd::as_raw_fd(&sender_side.fd()),
        std::os::fd::AsRawFd::as_raw_fd(&receiver_side.fd()),
        "a new descriptor"
    );

    send(&sender_side, 0, b"one way");
    assert_eq!(recv_one(&receiver_side, 0), b"one way");
    send(&receiver_side, 0, b"and back");
    assert_eq!(recv_one(&sender_side, 0), b"and back");

    // The same segment can be sent again, on the same stream.
    sender_side.send_over(&a).unwrap();
    let third = MemfdSegment::receive_from(&b).unwrap();
    send(&third, 0, b"third mapping");
    assert_eq!(recv_one(&sender_side, 0), b"third mapping");
}

#[test]
fn a_received_descriptor_cannot_truncate_or_unseal_the_segment() {
    let sender_side = with_channel(8);
    let (a, b) = UnixStream::pair().unwrap();
    sender_side.send_over(&a).unwrap();
    let received = MemfdSegment::receive_from(&b).unwrap();

    for size in [0, 4096, SIZE as u64 - 1, 2 * SIZE as u64] {
        assert_eq!(
            rustix::fs::ftruncate(received.fd(), size),
            Err(Errno::PERM),
            "ftruncate to {size} on the received descriptor"
        );
    }
    assert_eq!(
        rustix::fs::fcntl_add_seals(received.fd(), SealFlags::WRITE),
        Err(Errno::PERM),
        "F_SEAL_SEAL holds for the receiver too"
    );
    assert_eq!(
        rustix::fs::fstat(received.fd()).unwrap().st_size,
        SIZE as i64
    );
    // Both mappings are intact and still share messages.
    send(&received, 0, b"after the attempts");
    assert_eq!(recv_one(&sender_side, 0), b"after the attempts");
}

#[test]
fn receive_from_reports_a_peer_that_sent_nothing_or_no_descriptor() {
    let (a, b) = UnixStream::pair().unwrap();
    drop(a);
    let error = MemfdSegment::receive_from(&b).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UnexpectedEof, "{error}");

    let (mut a, b) = UnixStream::pair().unwrap();
    a.write_all(b"D").unwrap();
    let error = MemfdSegment::receive_from(&b).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");
    assert!(error.to_string().contains("no file descriptor"), "{error}");

    let (mut a, b) = UnixStream::pair().unwrap();
    a.write_all(b"x").unwrap();
    let error = MemfdSegment::receive_from(&b).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");
}

#[test]
fn serve_one_hands_the_segment_to_a_client() {
    let socket = SocketPath::new("one");
    let memory = Arc::new(with_channel(4));
    let server = SegmentServer::bind(&socket.0, memory.clone()).unwrap();
    assert_eq!(server.path(), socket.0);

    let path = socket.0.clone();
    let client = std::thread::spawn(move || {
        let mine = MemfdSegment::connect(&path).unwrap();
        send(&mine, 0, b"from the client");
    });
    server.serve_one().unwrap();
    client.join().unwrap();
    assert_eq!(recv_one(&memory, 0), b"from the client");

    // Binding the same path twice fails while the first server lives.
    let error = SegmentServer::bind(&socket.0, memory.clone()).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::AddrInUse, "{error}");
    drop(server);
    assert!(
        !socket.0.exists(),
        "dropping the server removes the socket file"
    );
}

#[test]
fn spawned_server_serves_many_clients_and_cleans_up_when_stopped() {
    let socket = SocketPath::new("many");
    let memory = Arc::new(with_channel(16));
    let handle = SegmentServer::bind(&socket.0, memory.clone())
        .unwrap()
        .spawn();
    assert_eq!(handle.path(), socket.0);

    // A client that hangs up without reading must not stop the server.
    drop(UnixStream::connect(&socket.0).unwrap());
    for i in 0..5u8 {
        let mine = MemfdSegment::connect(&socket.0).unwrap();
        send(&mine, 0, &[i]);
    }
    for i in 0..5u8 {
        assert_eq!(recv_one(&memory, 0), [i]);
    }
    assert!(handle.served() >= 5, "served {}", handle.served());

    handle.stop().unwrap();
    assert!(!socket.0.exists(), "stopping removes the socket file");
    assert!(MemfdSegment::connect(&socket.0).is_err());
    // The segment outlives the server.
    send(&memory, 0, b"after stop");
    assert_eq!(recv_one(&memory, 0), b"after stop");
}

#[test]
fn dropping_the_handle_stops_the_server() {
    let socket = SocketPath::new("drop");
    let memory = Arc::new(with_channel(4));
    let handle = SegmentServer::bind(&socket.0, memory).unwrap().spawn();
    assert!(socket.0.exists());
    drop(handle);
    assert!(!socket.0.exists());
}

#[test]
fn types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<MemfdSegment>();
    check::<SegmentServer>();
    check::<dmxp_memfd::ServerHandle>();
}

const CHILD_ENV: &str = "DMXP_MEMFD_TEST_CHILD_SOCKET";
const CHILD_MESSAGES: u32 = 100;

/// Run by `client_in_another_process_sends_messages_back` in a child process (the test binary
/// re-executed): connects to the server and sends messages. Does nothing when run on its own.
#[test]
#[ignore = "child role of client_in_another_process_sends_messages_back"]
fn child_connects_and_sends() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let memory = MemfdSegment::connect(Path::new(&path)).unwrap();
    let segment = Segment::attach(memory.region()).unwrap();
    let channel = segment.open_channel(0).unwrap();
    for i in 0..CHILD_MESSAGES {
        channel
            .try_send(format!("from child {i}").as_bytes(), &meta())
            .unwrap();
    }
    // A peer holding the received descriptor cannot pull the memory from under the server.
    assert_eq!(rustix::fs::ftruncate(memory.fd(), 0), Err(Errno::PERM));
    assert_eq!(
        rustix::fs::ftruncate(memory.fd(), 2 * SIZE as u64),
        Err(Errno::PERM)
    );
}

#[test]
fn client_in_another_process_sends_messages_back() {
    let socket = SocketPath::new("child");
    let memory = Arc::new(with_channel(u64::from(CHILD_MESSAGES.next_power_of_two())));
    let handle = SegmentServer::bind(&socket.0, memory.clone())
        .unwrap()
        .spawn();

    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_connects_and_sends",
            "--nocapture",
            "--ignored",
        ])
        .env(CHILD_ENV, &socket.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child_pid = child.id();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {}\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "child did not run its role:\n{stdout}"
    );
    assert_eq!(handle.served(), 1);
    handle.stop().unwrap();

    let segment = Segment::attach(memory.region()).unwrap();
    let channel = segment.open_channel(0).unwrap();
    let mut buf = [0u8; MSG_INLINE];
    for i in 0..CHILD_MESSAGES {
        let received = channel.try_recv(&mut buf).unwrap();
        assert_eq!(&buf[..received.len], format!("from child {i}").as_bytes());
        assert_eq!(received.meta.sender_pid, child_pid);
    }
    assert!(
        channel.try_recv(&mut buf).is_err(),
        "exactly the child's messages"
    );
}
