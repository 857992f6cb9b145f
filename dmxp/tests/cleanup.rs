//! `dmxp::cleanup` against real segments and real processes: a segment is stale only when no
//! registered peer is alive and its creator is gone, and `remove_if_stale` never removes one
//! that is in use. Children are this test binary re-executed (the `child_*` helpers).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{env, expect_success, spawn_child, ShmName, Spec};
use dmxp::cleanup::{
    examine_file, examine_shm, remove_if_stale, scan_dir, scan_shm, Removal, SegmentKind,
    SegmentStatus, Verdict, SHM_DIR,
};
use dmxp::{ErrorKind, PeerRole};

const HEADER_SIZE: u64 = 98_432;

/// Creates the segment of `DMXP_T_SPEC` with channel 0, sends one message, and exits (its
/// producer's peer record is freed on the way out).
#[test]
#[ignore = "child process helper"]
fn child_create() {
    let Some(spec) = common::child_env("DMXP_T_SPEC") else {
        return;
    };
    let producer = Spec::decode(&spec)
        .builder()
        .with_channel_id(0)
        .with_capacity(8)
        .build_producer()
        .unwrap();
    assert!(producer.is_registered());
    producer.send("hello").unwrap();
}

/// A holder child, running once it has said `ready`.
struct Holder {
    child: Child,
    /// Kept open: the child's test harness prints after `ready`, and a closed pipe fails it.
    stdout: BufReader<std::process::ChildStdout>,
}

impl Holder {
    fn spawn(spec: &Spec, role: &str) -> Holder {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([
                "child_hold_handle",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env("DMXP_T_SPEC", spec.encode())
            .env("DMXP_T_ROLE", role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stdout = BufReader::new(stdout);
        let ready = (&mut stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line == "ready");
        if !ready {
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            let _ = child.kill();
            panic!("holder never got ready:\n{stderr}");
        }
        Holder { child, stdout }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes its stdin: it drops its handle (freeing its record) and exits 0.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "holder exited with {status}");
    }

    /// SIGKILL: its record stays behind with a dead pid.
    fn kill(mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success());
    }
}

/// Holds a registered producer or consumer (`DMXP_T_ROLE`) on channel 0, says `ready`, and
/// keeps it until its stdin closes (or it is killed). What [`Holder`] runs.
#[test]
#[ignore = "child process helper"]
fn child_hold_handle() {
    let Some(spec) = common::child_env("DMXP_T_SPEC") else {
        return;
    };
    let builder = Spec::decode(&spec).builder().with_channel_id(0);
    let role: String = env("DMXP_T_ROLE");
    // Held until the end of the function, so its record stays registered.
    let (producer, consumer) = match role.as_str() {
        "producer" => (Some(builder.build_producer().unwrap()), None),
        _ => (None, Some(builder.build_consumer().unwrap())),
    };
    let registered = match (&producer, &consumer) {
        (Some(p), _) => p.is_registered(),
        (_, Some(c)) => c.is_registered(),
        _ => false,
    };
    assert!(registered, "the handle could not register");
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}

/// Runs `child_create` for `spec` and returns the creator's (now dead) pid.
fn create_in_child(spec: &Spec) -> u32 {
    let child = spawn_child("child_create", &[("DMXP_T_SPEC", spec.encode())]);
    let pid = child.id();
    expect_success(child, "creator");
    pid
}

fn shm_path(name: &str) -> PathBuf {
    Path::new(SHM_DIR).join(name.trim_start_matches('/'))
}

fn poke_u64(path: &Path, offset: u64, value: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&value.to_le_bytes(), offset).unwrap();
}

fn read_u64(path: &Path, offset: u64) -> u64 {
    let file = std::fs::File::open(path).unwrap();
    let mut bytes = [0u8; 8];
    file.read_exact_at(&mut bytes, offset).unwrap();
    u64::from_le_bytes(bytes)
}

/// A directory removed (with its contents) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = common::unique_path(tag);
        std::fs::create_dir(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn in_use(status: &SegmentStatus) -> (usize, bool) {
    match status.verdict {
        Verdict::InUse {
            live_peers,
            creator_alive,
        } => (live_peers, creator_alive),
        ref other => panic!("{} is not in use: {other:?}", status.name),
    }
}

/// The full life of a segment: stale after its creator exits; in use while a peer lives (and
/// not removed); stale again once that peer exits or is killed; then removed.
fn stale_only_without_live_peers(spec: &Spec, examine: impl Fn() -> dmxp::Result<SegmentStatus>) {
    let creator = create_in_child(spec);

    let fresh = examine().unwrap();
    assert_eq!(fresh.creator_pid, creator);
    assert!(!fresh.creator_alive);
    assert!(fresh.peers.is_empty(), "{:?}", fresh.peers);
    assert_eq!(fresh.verdict, Verdict::Stale);

    // A consumer attaches after that verdict: removal examines again and keeps the segment.
    let consumer = Holder::spawn(spec, "consumer");
    let status = examine().unwrap();
    assert_eq!(in_use(&status), (1, false));
    let peer = status.peers[0];
    assert!(peer.alive);
    assert_eq!(peer.info.record.pid, consumer.pid());
    assert_eq!(peer.info.role(), Some(PeerRole::Consumer));
    assert_eq!(peer.info.record.channel_id, 0);
    assert_eq!(peer.info.record.runtime, dmxp::runtime::RUST);
    assert_ne!(peer.info.record.start_time, 0);
    match remove_if_stale(&fresh, false).unwrap() {
        Removal::Kept(Verdict::InUse { live_peers: 1, .. }) => {}
        other => panic!("a segment with a live consumer was not kept: {other:?}"),
    }
    assert!(status.path.exists());

    // It exits normally: its record is freed, the segment is stale again.
    consumer.finish();
    let status = examine().unwrap();
    assert!(status.peers.is_empty(), "{:?}", status.peers);
    assert!(status.is_stale());

    // A producer is killed: its record stays, with a dead pid.
    let producer = Holder::spawn(spec, "producer");
    let pid = producer.pid();
    assert_eq!(in_use(&examine().unwrap()), (1, false));
    producer.kill();
    let status = examine().unwrap();
    assert_eq!(status.peers.len(), 1);
    assert_eq!(status.peers[0].info.record.pid, pid);
    assert!(!status.peers[0].alive);
    assert_eq!((status.live_peers(), status.dead_peers()), (0, 1));
    assert!(status.is_stale(), "{:?}", status.verdict);

    // Stale, but the creator's "hello" was never received: kept unless forced.
    assert_eq!(status.queued, 1);
    assert_eq!(
        remove_if_stale(&status, false).unwrap(),
        Removal::KeptQueued { queued: 1 }
    );
    assert!(
        status.path.exists(),
        "a segment with undelivered messages was removed"
    );
    assert_eq!(remove_if_stale(&status, true).unwrap(), Removal::Removed);
    assert!(!status.path.exists());
    assert_eq!(examine().unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        remove_if_stale(&status, false).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn shm_segment_is_stale_only_without_live_peers() {
    let name = ShmName::new("stale");
    let spec = Spec::Shm(name.0.clone());
    stale_only_without_live_peers(&spec, || examine_shm(&name.0));
}

#[cfg(feature = "file")]
#[test]
fn file_segment_is_stale_only_without_live_peers() {
    let dir = TempDir::new("stale_dir");
    let path = dir.0.join("segment.dmxp");
    let spec = Spec::File(path.clone());
    stale_only_without_live_peers(&spec, || examine_file(&path));
}

#[test]
fn scan_shm_lists_segments_with_their_verdicts() {
    let name = ShmName::new("scan");
    let spec = Spec::Shm(name.0.clone());
    create_in_child(&spec);
    let holder = Holder::spawn(&spec, "consumer");
    let listed = scan_shm().unwrap();
    let ours = listed
        .iter()
        .find(|s| s.name == name.0)
        .unwrap_or_else(|| panic!("{} not listed", name.0));
    assert_eq!(ours.kind, SegmentKind::Shm);
    assert_eq!(ours.path, shm_path(&name.0));
    assert_eq!(ours.size, 2 << 20);
    assert_eq!(in_use(ours), (1, false));
    let mut names: Vec<_> = listed.iter().map(|s| s.name.clone()).collect();
    names.sort();
    assert_eq!(
        names,
        listed.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "in name order"
    );
    holder.kill();
    let listed = scan_shm().unwrap();
    assert!(listed.iter().find(|s| s.name == name.0).unwrap().is_stale());
}

#[test]
fn a_running_creator_keeps_a_segment_in_use() {
    let name = ShmName::new("creator");
    Spec::Shm(name.0.clone())
        .builder()
        .build_allocator()
        .unwrap()
        .create_channel(4)
        .unwrap();
    let status = examine_shm(&name.0).unwrap();
    assert_eq!(status.creator_pid, std::process::id());
    assert_eq!(in_use(&status), (0, true));
    assert!(matches!(
        remove_if_stale(&status, false).unwrap(),
        Removal::Kept(Verdict::InUse {
            creator_alive: true,
            ..
        })
    ));
    assert!(status.path.exists());
}

#[test]
fn a_live_pid_with_another_start_time_is_a_dead_peer() {
    let name = ShmName::new("reuse");
    let spec = Spec::Shm(name.0.clone());
    create_in_child(&spec);
    let holder = Holder::spawn(&spec, "consumer");
    let status = examine_shm(&name.0).unwrap();
    let record_at = read_u64(&status.path, 48) + 64 * status.peers[0].info.index as u64;
    let start_time = status.peers[0].info.record.start_time;
    // As if the holder's pid now belonged to a newer process.
    poke_u64(&status.path, record_at + 8, start_time + 1);
    let status = examine_shm(&name.0).unwrap();
    assert!(!status.peers[0].alive);
    assert!(status.is_stale());
    poke_u64(&status.path, record_at + 8, start_time);
    assert_eq!(in_use(&examine_shm(&name.0).unwrap()), (1, false));
    holder.finish();
}

#[test]
fn a_corrupt_peer_table_makes_the_verdict_unknown_and_nothing_is_removed() {
    let name = ShmName::new("corrupt");
    let spec = Spec::Shm(name.0.clone());
    create_in_child(&spec);
    let path = shm_path(&name.0);
    let table = read_u64(&path, 48);
    assert!(
        table >= HEADER_SIZE,
        "the creator's producer installed a table"
    );
    // Misaligned; past the segment; on top of channel 0's band (which starts at the header's
    // end, carved before the table).
    for bad in [table + 8, 1 << 40, HEADER_SIZE] {
        poke_u64(&path, 48, bad);
        let status = examine_shm(&name.0).unwrap();
        let field = match &status.verdict {
            Verdict::Unknown { kind, reason } => {
                assert!(reason.contains(&name.0), "{reason}");
                match kind {
                    ErrorKind::Corrupt { field, .. } => *field,
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("offset {bad}: {other:?}"),
        };
        assert_eq!(field, "peer_table_offset");
        assert!(!status.is_stale());
        assert!(matches!(
            remove_if_stale(&status, false).unwrap(),
            Removal::Kept(Verdict::Unknown { .. })
        ));
        assert!(path.exists());
    }
    // A corrupt header (version 9) likewise.
    poke_u64(&path, 48, table);
    poke_u64(&path, 8, 9 | (256 << 32));
    let status = examine_shm(&name.0).unwrap();
    assert!(matches!(
        status.verdict,
        Verdict::Unknown {
            kind: ErrorKind::Corrupt {
                field: "version",
                ..
            },
            ..
        }
    ));
}

#[test]
fn scan_dir_lists_only_dmxp_files() {
    let name = ShmName::new("copy");
    let spec = Spec::Shm(name.0.clone());
    create_in_child(&spec);
    let dir = TempDir::new("scan_dir");
    // A real segment's bytes in a file: a file segment whose creator is gone.
    let segment = dir.0.join("b.dmxp");
    std::fs::copy(shm_path(&name.0), &segment).unwrap();
    std::fs::write(dir.0.join("a.txt"), vec![0u8; 200]).unwrap();
    std::fs::write(dir.0.join("short"), b"DM").unwrap();
    std::os::unix::fs::symlink(&segment, dir.0.join("c.link")).unwrap();
    std::fs::create_dir(dir.0.join("d")).unwrap();

    let listed = scan_dir(&dir.0, SegmentKind::File).unwrap();
    let names: Vec<_> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, [segment.display().to_string()]);
    assert_eq!(listed[0].kind, SegmentKind::File);
    assert!(listed[0].is_stale());

    let err = examine_file(&dir.0.join("a.txt")).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::Corrupt { field: "magic", .. }
    ));
    assert_eq!(
        examine_file(&dir.0.join("missing")).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        scan_dir(&dir.0.join("missing"), SegmentKind::File)
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );

    assert_eq!(remove_if_stale(&listed[0], true).unwrap(), Removal::Removed);
    assert!(!segment.exists());
    assert!(dir.0.join("a.txt").exists());
    assert!(scan_dir(&dir.0, SegmentKind::File).unwrap().is_empty());
}
