//! Tests of the file backend: atomic creation, size checks at open, persistence across
//! processes, and the documented truncation hazard.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use dmxp_file::FileSegment;
use dmxp_nostd::layout::{runtime, HEADER_SIZE, MSG_INLINE, SLOT_SIZE};
use dmxp_nostd::{Segment, SegmentMemory, SendMeta};

const SIZE: usize = HEADER_SIZE + 64 * SLOT_SIZE;

/// A fresh directory per test, removed with its contents when the guard drops.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("dmxp_test_file_{}_{n}_{tag}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn meta() -> SendMeta {
    SendMeta {
        sender_pid: std::process::id(),
        sender_runtime: runtime::RUST,
        message_type: 7,
        ..SendMeta::default()
    }
}

fn recv_one(memory: &FileSegment, channel: u32) -> Vec<u8> {
    let segment = Segment::attach(memory.region()).unwrap();
    let channel = segment.open_channel(channel).unwrap();
    let mut buf = [0u8; MSG_INLINE];
    let received = channel.try_recv(&mut buf).expect("a message");
    buf[..received.len].to_vec()
}

#[test]
fn create_links_a_formatted_file_into_place_and_leaves_no_temporary() {
    let dir = TempDir::new("create");
    let path = dir.path("seg");
    let memory = FileSegment::create(&path, SIZE, 0o600).unwrap();
    assert_eq!(memory.path(), path);
    assert_eq!(memory.len(), SIZE);
    assert_eq!(dir.entries(), ["seg"], "the temporary name is gone");

    let metadata = std::fs::metadata(&path).unwrap();
    assert_eq!(metadata.len(), SIZE as u64);
    assert_eq!(metadata.permissions().mode() & 0o7777, 0o600);
    assert_eq!(metadata.nlink(), 1);

    // The file on disk already holds a formatted header (it was formatted before linking).
    let segment = Segment::attach(memory.region()).unwrap();
    assert_eq!(segment.len(), SIZE as u64);
    assert_eq!(segment.channel_count(), 0);
    assert_eq!(segment.creator_pid(), std::process::id());
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        &bytes[0..8],
        b"MEM_PXMD",
        "magic 0x444D58505F4D454D, little-endian"
    );
    assert_eq!(
        u64::from_le_bytes(bytes[24..32].try_into().unwrap()),
        SIZE as u64
    );
}

#[test]
fn create_applies_the_mode_exactly() {
    let dir = TempDir::new("mode");
    for mode in [0o600, 0o640, 0o666] {
        let path = dir.path(&format!("seg{mode:o}"));
        FileSegment::create(&path, SIZE, mode).unwrap();
        let actual = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(actual, mode, "asked {mode:o}");
    }
}

#[test]
fn create_refuses_an_existing_path_and_leaves_it_untouched() {
    let dir = TempDir::new("exists");
    let path = dir.path("precious");
    std::fs::write(&path, b"someone else's data").unwrap();
    let error = FileSegment::create(&path, SIZE, 0o600).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::AlreadyExists, "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's data");
    assert_eq!(dir.entries(), ["precious"]);

    // An existing live segment is not wiped either.
    let seg = dir.path("seg");
    let memory = FileSegment::create(&seg, SIZE, 0o600).unwrap();
    Segment::attach(memory.region())
        .unwrap()
        .create_channel(0, 4, std::process::id())
        .unwrap()
        .try_send(b"queued", &meta())
        .unwrap();
    let error = FileSegment::create(&seg, SIZE * 2, 0o600).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::AlreadyExists, "{error}");
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), SIZE as u64);
    assert_eq!(recv_one(&memory, 0), b"queued");
    assert_eq!(dir.entries(), ["precious", "seg"]);
}

#[test]
fn create_refuses_bad_arguments() {
    let dir = TempDir::new("args");
    let error = FileSegment::create(&dir.path("small"), HEADER_SIZE - 1, 0o600).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
    let error = FileSegment::create(&dir.path("setuid"), SIZE, 0o4600).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
    let error = FileSegment::create(Path::new("/"), SIZE, 0o600).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
    assert!(dir.entries().is_empty(), "{:?}", dir.entries());
}

#[test]
fn create_in_a_missing_directory_fails_cleanly() {
    let dir = TempDir::new("nodir");
    let error = FileSegment::create(&dir.path("missing/seg"), SIZE, 0o600).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
    assert!(dir.entries().is_empty());
}

#[test]
fn open_refuses_a_file_smaller_than_the_header() {
    let dir = TempDir::new("tiny");
    let path = dir.path("tiny");
    std::fs::write(&path, [0u8; 100]).unwrap();
    // Owner-only, as a DMXP creator makes it (a wider mode is refused before the size check).
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let error = FileSegment::open(&path).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");

    std::fs::write(&path, []).unwrap();
    let error = FileSegment::open(&path).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");

    let error = FileSegment::open(&dir.path("absent")).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
}

#[test]
fn open_refuses_a_file_shorter_than_its_recorded_segment_size() {
    let dir = TempDir::new("short");
    let path = dir.path("seg");
    drop(FileSegment::create(&path, SIZE, 0o600).unwrap());
    // Cut it short, but still longer than the header.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len((SIZE - SLOT_SIZE) as u64).unwrap();
    let error = FileSegment::open(&path).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");
    assert!(error.to_string().contains("cut short"), "{error}");

    // A hand-made file whose header claims more than it has.
    let forged = dir.path("forged");
    let file = std::fs::File::create(&forged).unwrap();
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap();
    file.set_len(HEADER_SIZE as u64).unwrap();
    file.write_all_at(&(2 * HEADER_SIZE as u64).to_le_bytes(), 24)
        .unwrap();
    let error = FileSegment::open(&forged).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");

    // The same file with an honest size opens (the size check is all `open` does).
    file.write_all_at(&(HEADER_SIZE as u64).to_le_bytes(), 24)
        .unwrap();
    assert_eq!(FileSegment::open(&forged).unwrap().len(), HEADER_SIZE);
}

#[test]
fn two_mappings_of_one_file_share_messages() {
    let dir = TempDir::new("share");
    let path = dir.path("seg");
    let first = FileSegment::create(&path, SIZE, 0o600).unwrap();
    let channel_owner = Segment::attach(first.region()).unwrap();
    let channel = channel_owner
        .create_channel(2, 8, std::process::id())
        .unwrap();
    let second = FileSegment::open(&path).unwrap();
    assert_ne!(first.region().base_addr(), second.region().base_addr());

    channel.try_send(b"via first", &meta()).unwrap();
    assert_eq!(recv_one(&second, 2), b"via first");
}

#[test]
fn messages_persist_after_the_segment_is_dropped_and_reopened() {
    let dir = TempDir::new("persist");
    let path = dir.path("seg");
    {
        let memory = FileSegment::create(&path, SIZE, 0o600).unwrap();
        let segment = Segment::attach(memory.region()).unwrap();
        let channel = segment.create_channel(5, 16, std::process::id()).unwrap();
        for i in 0..3u32 {
            channel
                .try_send(format!("persisted {i}").as_bytes(), &meta())
                .unwrap();
        }
        memory.flush().unwrap();
    }
    let memory = FileSegment::open(&path).unwrap();
    let segment = Segment::attach(memory.region()).unwrap();
    let channel = segment.open_channel(5).unwrap();
    let mut buf = [0u8; MSG_INLINE];
    for i in 0..3u32 {
        let received = channel.try_recv(&mut buf).unwrap();
        assert_eq!(&buf[..received.len], format!("persisted {i}").as_bytes());
        assert_eq!(received.meta.message_id, u64::from(i));
        assert_eq!(received.meta.message_type, 7);
        assert_eq!(received.meta.sender_pid, std::process::id());
    }
    assert!(channel.try_recv(&mut buf).is_err());
}

#[test]
fn segment_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<FileSegment>();
}

// ---------------------------------------------------------------- child processes

const CHILD_ROLE: &str = "DMXP_FILE_TEST_ROLE";
const CHILD_PATH: &str = "DMXP_FILE_TEST_PATH";
const CHILD_MESSAGES: u32 = 50;
/// SIGBUS on Linux (x86, x86_64, arm, aarch64, riscv).
const SIGBUS: i32 = 7;

/// Child roles, run by the tests below in a re-executed test binary. Does nothing when run on
/// its own.
#[test]
#[ignore = "child role of the cross-process tests"]
fn child_role() {
    let (Ok(role), Ok(path)) = (std::env::var(CHILD_ROLE), std::env::var(CHILD_PATH)) else {
        return;
    };
    let memory = FileSegment::open(Path::new(&path)).unwrap();
    match role.as_str() {
        "send" => {
            let segment = Segment::attach(memory.region()).unwrap();
            let channel = segment.open_channel(0).unwrap();
            for i in 0..CHILD_MESSAGES {
                channel
                    .try_send(format!("from child {i}").as_bytes(), &meta())
                    .unwrap();
            }
        }
        "touch_after_truncation" => {
            println!("mapped");
            std::io::stdout().flush().unwrap();
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            // The explicit check sees the truncation without touching the mapping...
            match memory.check_size() {
                Err(error) => println!("check_size: {error}"),
                Ok(()) => println!("check_size: ok"),
            }
            std::io::stdout().flush().unwrap();
            // ...while this touch of the header (past the new end) faults (SIGBUS).
            let _ = Segment::attach(memory.region());
            println!("survived");
        }
        other => panic!("unknown role {other}"),
    }
}

fn child(role: &str, path: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child_role", "--nocapture", "--ignored"])
        .env(CHILD_ROLE, role)
        .env(CHILD_PATH, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[test]
fn messages_sent_by_an_exited_process_are_there_on_reopen() {
    let dir = TempDir::new("exited");
    let path = dir.path("seg");
    {
        let memory = FileSegment::create(&path, SIZE, 0o600).unwrap();
        Segment::attach(memory.region())
            .unwrap()
            .create_channel(0, 64, std::process::id())
            .unwrap();
    } // no mapping left in this process

    let child = child("send", &path).spawn().unwrap();
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

    // Every process that mapped the file has exited; reopen it.
    let memory = FileSegment::open(&path).unwrap();
    let segment = Segment::attach(memory.region()).unwrap();
    let channel = segment.open_channel(0).unwrap();
    let mut buf = [0u8; MSG_INLINE];
    for i in 0..CHILD_MESSAGES {
        let received = channel.try_recv(&mut buf).unwrap();
        assert_eq!(&buf[..received.len], format!("from child {i}").as_bytes());
        assert_eq!(received.meta.sender_pid, child_pid);
    }
    assert!(channel.try_recv(&mut buf).is_err());
}

#[test]
fn truncation_under_a_live_mapping_kills_the_mapper_and_open_refuses_the_file() {
    // The hazard the crate documents: it cannot be prevented for files, only detected at open.
    let dir = TempDir::new("truncate");
    let path = dir.path("seg");
    drop(FileSegment::create(&path, SIZE, 0o600).unwrap());

    let mut child = child("touch_after_truncation", &path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // libtest prints its own lines first; wait for the child's "mapped".
    while line.trim() != "mapped" {
        line.clear();
        assert_ne!(
            stdout.read_line(&mut line).unwrap(),
            0,
            "child exited early"
        );
    }

    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "go").unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(
        status.signal(),
        Some(SIGBUS),
        "SIGBUS expected, got {status}; output: {rest}"
    );
    assert!(!rest.contains("survived"));
    assert!(
        rest.contains(&format!(
            "check_size: {}: segment truncated: expected {SIZE} bytes, found 0",
            path.display()
        )),
        "the check must report the truncation first; output: {rest}"
    );

    let error = FileSegment::open(&path).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");
}

fn truncated_of(error: &std::io::Error) -> &dmxp_file::Truncated {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<dmxp_file::Truncated>())
        .unwrap_or_else(|| panic!("not a Truncated error: {error:?}"))
}

#[test]
fn check_size_reports_a_truncation_without_touching_the_mapping() {
    let dir = TempDir::new("check");
    let path = dir.path("seg");
    let memory = FileSegment::create(&path, SIZE, 0o600).unwrap();
    memory.check_size().unwrap();

    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(8192).unwrap();
    let error = memory.check_size().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");
    let truncated = truncated_of(&error);
    assert_eq!((truncated.expected, truncated.found), (SIZE as u64, 8192));
    assert!(error.to_string().contains("segment truncated"), "{error}");

    // Restored to its size, the check passes again.
    file.set_len(SIZE as u64).unwrap();
    memory.check_size().unwrap();
}

#[test]
fn open_of_a_cut_short_file_reports_the_sizes() {
    let dir = TempDir::new("cutshort");
    let path = dir.path("seg");
    drop(FileSegment::create(&path, SIZE, 0o600).unwrap());
    let short = (SIZE - SLOT_SIZE) as u64;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(short)
        .unwrap();
    let error = FileSegment::open(&path).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");
    let truncated = truncated_of(&error);
    assert_eq!((truncated.expected, truncated.found), (SIZE as u64, short));
}

#[test]
fn create_with_group_gives_the_file_to_the_group() {
    let me = std::fs::metadata("/proc/self").unwrap();
    // Root may give it to any group; anyone may give it to their own group.
    let gid = if me.uid() == 0 { 65534 } else { me.gid() };
    let dir = TempDir::new("group");
    let path = dir.path("seg");
    let memory = FileSegment::create_with_group(&path, SIZE, 0o660, Some(gid)).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.gid(), gid);
    assert_eq!(meta.uid(), me.uid());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    Segment::attach(memory.region()).expect("formatted");
    assert_eq!(dir.entries(), ["seg"], "no temporary left");
}

#[test]
fn racing_creators_get_exactly_one_file() {
    let dir = TempDir::new("race");
    for round in 0..20 {
        let path = dir.path(&format!("seg{round}"));
        let barrier = std::sync::Barrier::new(4);
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        FileSegment::create(&path, SIZE, 0o600)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}"
        );
        for result in &results {
            if let Err(error) = result {
                assert_eq!(
                    error.kind(),
                    ErrorKind::AlreadyExists,
                    "round {round}: {error}"
                );
            }
        }
        let opened = FileSegment::open(&path).unwrap();
        assert_eq!(Segment::attach(opened.region()).unwrap().len(), SIZE as u64);
    }
    let expected: Vec<String> = {
        let mut names: Vec<String> = (0..20).map(|r| format!("seg{r}")).collect();
        names.sort();
        names
    };
    assert_eq!(dir.entries(), expected, "no temporary files left");
}
