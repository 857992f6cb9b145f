//! Tests of the POSIX shm backend against real `shm_open` objects.

use std::io::ErrorKind;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use dmxp_nostd::layout::{runtime, HEADER_SIZE, MSG_INLINE, SLOT_SIZE};
use dmxp_nostd::{Segment, SegmentMemory, SendMeta};
use dmxp_shm::{ShmSegment, DEFAULT_MODE};

const SIZE: usize = HEADER_SIZE + 64 * SLOT_SIZE;

/// A unique object name that is unlinked when the guard drops, even if the test panics.
struct Name(String);

impl Name {
    fn new(tag: &str) -> Name {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Name(format!("/dmxp_test_shm_{}_{n}_{tag}", std::process::id()))
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = ShmSegment::unlink(&self.0);
    }
}

fn meta() -> SendMeta {
    SendMeta {
        sender_pid: std::process::id(),
        sender_runtime: runtime::RUST,
        ..SendMeta::default()
    }
}

fn recv_one(memory: &ShmSegment, channel: u32) -> Vec<u8> {
    let segment = Segment::attach(memory.region()).expect("attach");
    let channel = segment.open_channel(channel).expect("open channel");
    let mut buf = [0u8; MSG_INLINE];
    let received = channel.try_recv(&mut buf).expect("a message");
    buf[..received.len].to_vec()
}

#[test]
fn create_formats_and_open_maps_the_same_object() {
    let name = Name::new("same");
    let first = ShmSegment::create(&name.0, SIZE, DEFAULT_MODE).unwrap();
    assert_eq!(first.len(), SIZE);
    assert_eq!(first.name(), name.0);

    let segment = Segment::attach(first.region()).expect("create formats the segment");
    assert_eq!(segment.len(), SIZE as u64);
    assert_eq!(segment.channel_count(), 0);
    assert_eq!(segment.creator_pid(), std::process::id());
    let channel = segment.create_channel(3, 8, std::process::id()).unwrap();
    channel
        .try_send(b"through the first mapping", &meta())
        .unwrap();

    let second = ShmSegment::open(&name.0).unwrap();
    assert_eq!(second.len(), SIZE);
    assert_ne!(
        first.region().base_addr(),
        second.region().base_addr(),
        "two separate mappings"
    );
    assert_eq!(recv_one(&second, 3), b"through the first mapping");

    // And the other way round.
    let other = Segment::attach(second.region()).unwrap();
    other
        .open_channel(3)
        .unwrap()
        .try_send(b"back through the second", &meta())
        .unwrap();
    assert_eq!(recv_one(&first, 3), b"back through the second");
}

#[test]
fn second_create_fails_and_does_not_wipe() {
    let name = Name::new("excl");
    let first = ShmSegment::create(&name.0, SIZE, DEFAULT_MODE).unwrap();
    let segment = Segment::attach(first.region()).unwrap();
    segment
        .create_channel(0, 4, std::process::id())
        .unwrap()
        .try_send(b"must survive", &meta())
        .unwrap();

    let error = ShmSegment::create(&name.0, SIZE, DEFAULT_MODE).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::AlreadyExists, "{error}");
    // A different size must not resize the live object either.
    let error = ShmSegment::create(&name.0, SIZE * 2, DEFAULT_MODE).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::AlreadyExists, "{error}");

    let reopened = ShmSegment::open(&name.0).unwrap();
    assert_eq!(reopened.len(), SIZE, "size unchanged");
    assert_eq!(
        Segment::attach(reopened.region()).unwrap().channel_count(),
        1
    );
    assert_eq!(recv_one(&reopened, 0), b"must survive");
}

fn mode_of(memory: &ShmSegment) -> u32 {
    let stat = rustix::fs::fstat(memory.fd()).unwrap();
    stat.st_mode & 0o7777
}

#[test]
fn mode_bits_are_applied_exactly() {
    let default = Name::new("mode600");
    let memory = ShmSegment::create(&default.0, SIZE, DEFAULT_MODE).unwrap();
    assert_eq!(mode_of(&memory), 0o600);

    let group = Name::new("mode640");
    let memory = ShmSegment::create(&group.0, SIZE, 0o640).unwrap();
    assert_eq!(mode_of(&memory), 0o640);

    // Bits a usual umask (022) would strip are kept: the mode is set with fchmod.
    let open = Name::new("mode666");
    let memory = ShmSegment::create(&open.0, SIZE, 0o666).unwrap();
    assert_eq!(mode_of(&memory), 0o666);
}

#[test]
fn open_of_missing_name_is_not_found() {
    let name = Name::new("missing");
    let error = ShmSegment::open(&name.0).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
    assert!(error.to_string().contains(&name.0), "{error}");
}

#[test]
fn unlink_removes_the_name_but_not_live_mappings() {
    let name = Name::new("unlink");
    let memory = ShmSegment::create(&name.0, SIZE, DEFAULT_MODE).unwrap();
    ShmSegment::unlink(&name.0).unwrap();
    assert_eq!(
        ShmSegment::open(&name.0).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        ShmSegment::unlink(&name.0).unwrap_err().kind(),
        ErrorKind::NotFound
    );

    let segment = Segment::attach(memory.region()).unwrap();
    let channel = segment.create_channel(1, 2, std::process::id()).unwrap();
    channel.try_send(b"still mapped", &meta()).unwrap();
    assert_eq!(recv_one(&memory, 1), b"still mapped");

    // The name is free again for a new, independent object.
    let again = ShmSegment::create(&name.0, SIZE, DEFAULT_MODE).unwrap();
    assert_eq!(Segment::attach(again.region()).unwrap().channel_count(), 0);
}

#[test]
fn create_refuses_a_size_below_the_header_and_leaves_nothing() {
    let name = Name::new("small");
    let error = ShmSegment::create(&name.0, HEADER_SIZE - 1, DEFAULT_MODE).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
    assert_eq!(
        ShmSegment::open(&name.0).unwrap_err().kind(),
        ErrorKind::NotFound
    );

    let error = ShmSegment::create(&name.0, SIZE, 0o4600).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
    assert_eq!(
        ShmSegment::open(&name.0).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn create_unlinks_the_object_when_it_cannot_finish() {
    // An object too large to map fails after shm_open: ftruncate or mmap refuses it. The
    // object must not be left behind.
    let name = Name::new("huge");
    let error = ShmSegment::create(&name.0, usize::MAX / 2, DEFAULT_MODE).unwrap_err();
    assert_ne!(error.kind(), ErrorKind::AlreadyExists, "{error}");
    assert_eq!(
        ShmSegment::open(&name.0).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn open_of_an_unsized_object_would_block_and_leaves_it_alone() {
    // What an opener sees between its creator's shm_open and ftruncate.
    let name = Name::new("unsized");
    let fd = rustix::shm::open(
        name.0.as_str(),
        rustix::shm::OFlags::CREATE | rustix::shm::OFlags::EXCL | rustix::shm::OFlags::RDWR,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
    )
    .unwrap();
    rustix::fs::ftruncate(&fd, 4096).unwrap();

    let error = ShmSegment::open(&name.0).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WouldBlock, "{error}");
    assert!(error.to_string().contains("being created"), "{error}");
    assert_eq!(rustix::fs::fstat(&fd).unwrap().st_size, 4096, "not resized");
}

#[test]
fn open_maps_an_object_whose_creator_has_not_formatted_it_yet() {
    // Sized but magic still 0: open maps it; attach reports NotReady.
    let name = Name::new("unformatted");
    let fd = rustix::shm::open(
        name.0.as_str(),
        rustix::shm::OFlags::CREATE | rustix::shm::OFlags::EXCL | rustix::shm::OFlags::RDWR,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
    )
    .unwrap();
    rustix::fs::ftruncate(&fd, SIZE as u64).unwrap();
    let memory = ShmSegment::open(&name.0).unwrap();
    assert_eq!(memory.len(), SIZE);
    assert!(matches!(
        Segment::attach(memory.region()),
        Err(dmxp_nostd::Error::NotReady)
    ));
}

#[test]
fn segment_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ShmSegment>();

    let name = Name::new("threads");
    let memory = std::sync::Arc::new(ShmSegment::create(&name.0, SIZE, DEFAULT_MODE).unwrap());
    Segment::attach(memory.region())
        .unwrap()
        .create_channel(0, 16, std::process::id())
        .unwrap();
    let sender = {
        let memory = memory.clone();
        std::thread::spawn(move || {
            let segment = Segment::attach(memory.region()).unwrap();
            let channel = segment.open_channel(0).unwrap();
            for i in 0u32..10 {
                channel.try_send(&i.to_le_bytes(), &meta()).unwrap();
            }
        })
    };
    sender.join().unwrap();
    let segment = Segment::attach(memory.region()).unwrap();
    let channel = segment.open_channel(0).unwrap();
    let mut buf = [0u8; MSG_INLINE];
    for i in 0u32..10 {
        let received = channel.try_recv(&mut buf).unwrap();
        assert_eq!(&buf[..received.len], i.to_le_bytes());
    }
}

const CHILD_ENV: &str = "DMXP_SHM_TEST_CHILD_SEGMENT";
const CHILD_MESSAGES: u32 = 100;

/// Run by `messages_cross_processes` in a child process (the test binary re-executed): opens
/// the segment by name and sends messages back. Does nothing when run on its own.
#[test]
#[ignore = "child role of messages_cross_processes"]
fn child_sends_messages() {
    let Ok(name) = std::env::var(CHILD_ENV) else {
        return;
    };
    let memory = ShmSegment::open(&name).unwrap();
    let segment = Segment::attach(memory.region()).unwrap();
    let channel = segment.open_channel(0).unwrap();
    for i in 0..CHILD_MESSAGES {
        let payload = format!("child message {i}");
        channel.try_send(payload.as_bytes(), &meta()).unwrap();
    }
}

#[test]
fn messages_cross_processes() {
    let name = Name::new("child");
    let capacity = u64::from(CHILD_MESSAGES.next_power_of_two());
    let size = HEADER_SIZE + capacity as usize * SLOT_SIZE;
    let memory = ShmSegment::create(&name.0, size, DEFAULT_MODE).unwrap();
    let segment = Segment::attach(memory.region()).unwrap();
    let channel = segment
        .create_channel(0, capacity, std::process::id())
        .unwrap();

    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_sends_messages",
            "--nocapture",
            "--ignored",
        ])
        .env(CHILD_ENV, &name.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child_pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "child failed: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The child ran the helper, not nothing: libtest reports exactly one test passed.
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "child did not run its role"
    );

    let mut buf = [0u8; MSG_INLINE];
    for i in 0..CHILD_MESSAGES {
        let received = channel.try_recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..received.len],
            format!("child message {i}").as_bytes()
        );
        assert_eq!(received.meta.sender_pid, child_pid);
    }
    assert!(
        channel.try_recv(&mut buf).is_err(),
        "exactly the child's messages"
    );
}

#[test]
fn racing_creators_get_exactly_one_segment() {
    for round in 0..20 {
        let name = Name::new("race");
        let barrier = std::sync::Barrier::new(4);
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        ShmSegment::create(&name.0, SIZE, DEFAULT_MODE)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}");
        for result in &results {
            if let Err(error) = result {
                assert_eq!(
                    error.kind(),
                    ErrorKind::AlreadyExists,
                    "round {round}: {error}"
                );
            }
        }
        let opened = ShmSegment::open(&name.0).unwrap();
        assert_eq!(Segment::attach(opened.region()).unwrap().len(), SIZE as u64);
    }
}

#[test]
fn an_object_shorter_than_its_recorded_size_is_refused_at_attach() {
    let name = Name::new("short");
    drop(ShmSegment::create(&name.0, SIZE, DEFAULT_MODE).unwrap());
    // Someone cuts the object short while nobody has it mapped.
    let fd = rustix::shm::open(
        name.0.as_str(),
        rustix::shm::OFlags::RDWR,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    rustix::fs::ftruncate(&fd, (SIZE - SLOT_SIZE) as u64).unwrap();

    let memory = ShmSegment::open(&name.0).unwrap();
    assert_eq!(memory.len(), SIZE - SLOT_SIZE);
    match Segment::attach(memory.region()) {
        Err(dmxp_nostd::Error::Corrupt(corruption)) => {
            assert_eq!(corruption.field(), "segment_size", "{corruption}")
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("attached to a segment shorter than its header says"),
    }
}

// ---------------------------------------------------------------- permissions and truncation

/// The effective uid and gid of this process (`/proc/self` belongs to them).
fn effective_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/proc/self").unwrap();
    (meta.uid(), meta.gid())
}

#[test]
fn create_with_group_gives_the_object_to_the_group() {
    let (uid, egid) = effective_ids();
    // Root may give it to any group; anyone may give it to their own group.
    let gid = if uid == 0 { 65534 } else { egid };
    let name = Name::new("group");
    let memory = ShmSegment::create_with_group(&name.0, SIZE, 0o660, Some(gid)).unwrap();
    let stat = rustix::fs::fstat(memory.fd()).unwrap();
    assert_eq!(stat.st_gid, gid);
    assert_eq!(stat.st_uid, uid);
    assert_eq!(mode_of(&memory), 0o660);
    Segment::attach(memory.region()).expect("formatted after the chown");

    // Without a group it keeps the creator's.
    let plain = Name::new("nogroup");
    let memory = ShmSegment::create_with_group(&plain.0, SIZE, 0o600, None).unwrap();
    assert_eq!(rustix::fs::fstat(memory.fd()).unwrap().st_gid, egid);
}

#[test]
fn create_with_a_group_it_may_not_use_fails_and_leaves_nothing() {
    let (uid, egid) = effective_ids();
    if uid == 0 {
        eprintln!("SKIPPED: running as root, which may chown to any group");
        return;
    }
    let other = if egid == 65534 { 0 } else { 65534 };
    let name = Name::new("badgroup");
    let error = ShmSegment::create_with_group(&name.0, SIZE, 0o660, Some(other)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::PermissionDenied, "{error}");
    assert_eq!(
        ShmSegment::open(&name.0).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

fn truncated_of(error: &std::io::Error) -> &dmxp_shm::Truncated {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<dmxp_shm::Truncated>())
        .unwrap_or_else(|| panic!("not a Truncated error: {error:?}"))
}

#[test]
fn check_size_reports_a_truncation_without_touching_the_mapping() {
    let name = Name::new("check");
    let memory = ShmSegment::create(&name.0, SIZE, DEFAULT_MODE).unwrap();
    memory.check_size().unwrap();

    // A peer truncates the object while we have it mapped.
    let peer = ShmSegment::open(&name.0).unwrap();
    rustix::fs::ftruncate(peer.fd(), 4096).unwrap();

    for mapping in [&memory, &peer] {
        let error = mapping.check_size().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");
        let truncated = truncated_of(&error);
        assert_eq!((truncated.expected, truncated.found), (SIZE as u64, 4096));
        let text = error.to_string();
        assert!(
            text.contains("segment truncated") && text.contains(&name.0),
            "{text}"
        );
    }
    // Growing it back makes the check pass again (the pages are zero now, though).
    rustix::fs::ftruncate(peer.fd(), SIZE as u64).unwrap();
    memory.check_size().unwrap();
    // A fresh open maps the current size; a shorter object is refused at attach (not SIGBUS).
    rustix::fs::ftruncate(peer.fd(), (SIZE - SLOT_SIZE) as u64).unwrap();
    let reopened = ShmSegment::open(&name.0).unwrap();
    reopened.check_size().unwrap();
}

const TRUNC_ENV: &str = "DMXP_SHM_TEST_TRUNCATED_SEGMENT";
/// SIGBUS on Linux (x86, x86_64, arm, aarch64, riscv).
const SIGBUS: i32 = 7;

/// Child role of `touching_truncated_pages_raises_sigbus_after_check_size_reported_it`: maps
/// the segment, waits for the parent to truncate it, runs the check, then touches the lost
/// pages. Does nothing when run on its own.
#[test]
#[ignore = "child role of the truncation test"]
fn child_touches_truncated_segment() {
    use std::io::{BufRead, Write};
    let Ok(name) = std::env::var(TRUNC_ENV) else {
        return;
    };
    let memory = ShmSegment::open(&name).unwrap();
    memory.check_size().unwrap();
    println!("mapped");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    match memory.check_size() {
        Err(error) => println!("check_size: {error}"),
        Ok(()) => println!("check_size: ok"),
    }
    std::io::stdout().flush().unwrap();
    // The parent truncated the object to 0: reading the header faults.
    let _ = Segment::attach(memory.region());
    println!("survived");
}

#[test]
fn touching_truncated_pages_raises_sigbus_after_check_size_reported_it() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::process::ExitStatusExt;

    let name = Name::new("sigbus");
    let memory = ShmSegment::create(&name.0, SIZE, DEFAULT_MODE).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_touches_truncated_segment",
            "--nocapture",
            "--ignored",
        ])
        .env(TRUNC_ENV, &name.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "mapped" {
        line.clear();
        assert_ne!(
            stdout.read_line(&mut line).unwrap(),
            0,
            "child exited early"
        );
    }
    rustix::fs::ftruncate(memory.fd(), 0).unwrap();
    writeln!(child.stdin.take().unwrap(), "go").unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains(&format!(
            "segment truncated: expected {SIZE} bytes, found 0"
        )),
        "the check must report the truncation first; output: {rest}"
    );
    assert_eq!(
        status.signal(),
        Some(SIGBUS),
        "SIGBUS expected, got {status}; output: {rest}"
    );
    assert!(!rest.contains("survived"), "{rest}");
}
