//! Who may attach to a segment: owner-only by default, a group on request, and a process of
//! another uid refused with a typed permission error. Also the typed "truncated" error of a
//! file segment cut short.
//!
//! The other-uid tests need root (to switch the child to `nobody`); without root they say so
//! on stderr and pass without checking (CI runs as root).
#![cfg(feature = "shm")]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{child_env, ShmName};
use dmxp::{ChannelBuilder, ErrorKind};

/// `nobody` and `nogroup` on Debian-like systems (and the overflow ids everywhere).
const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;
/// EACCES on Linux.
const EACCES: i32 = 13;
/// Exit code of the child when it got exactly the expected permission error.
const EXIT_PERMISSION_DENIED: i32 = 13;
/// Exit code of the child when it attached and received the parent's message.
const EXIT_ATTACHED: i32 = 0;

const SEGMENT_ENV: &str = "DMXP_T_PERM_SEGMENT";

fn small() -> ChannelBuilder {
    ChannelBuilder::new()
        .with_segment_size(1 << 20)
        .with_capacity(8)
        .with_timeout(std::time::Duration::from_secs(10))
}

fn shm_path(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(name.trim_start_matches('/'))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Effective uid and gid of this process (`/proc/self` belongs to them).
fn effective_ids() -> (u32, u32) {
    let meta = std::fs::metadata("/proc/self").unwrap();
    (meta.uid(), meta.gid())
}

#[test]
fn shm_segments_are_owner_only_unless_shared_with_a_group() {
    let default = ShmName::new("perm_default");
    let _producer = small()
        .with_segment_name(default.0.clone())
        .build_producer()
        .unwrap();
    assert_eq!(mode(&shm_path(&default.0)), 0o600);

    let group = ShmName::new("perm_group");
    let _producer = small()
        .with_segment_name(group.0.clone())
        .with_group_access()
        .build_producer()
        .unwrap();
    let meta = std::fs::metadata(shm_path(&group.0)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), effective_ids().1, "the creator's group");

    let (uid, egid) = effective_ids();
    let gid = if uid == 0 { NOGROUP } else { egid };
    let named = ShmName::new("perm_named");
    let _producer = small()
        .with_segment_name(named.0.clone())
        .with_group(gid)
        .build_producer()
        .unwrap();
    let meta = std::fs::metadata(shm_path(&named.0)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), gid);
}

#[cfg(feature = "file")]
#[test]
fn file_segments_are_owner_only_unless_shared_with_a_group() {
    let default = common::TempPath(common::unique_path("perm_default"));
    let _producer = small().with_file(&default.0).build_producer().unwrap();
    assert_eq!(mode(&default.0), 0o600);

    let group = common::TempPath(common::unique_path("perm_group"));
    let _producer = small()
        .with_file(&group.0)
        .with_group_access()
        .build_producer()
        .unwrap();
    assert_eq!(mode(&group.0), 0o660);

    let (uid, egid) = effective_ids();
    let gid = if uid == 0 { NOGROUP } else { egid };
    let named = common::TempPath(common::unique_path("perm_named"));
    let _producer = small()
        .with_file(&named.0)
        .with_group(gid)
        .build_producer()
        .unwrap();
    let meta = std::fs::metadata(&named.0).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), gid);
}

#[test]
fn with_group_of_a_group_the_creator_is_not_in_fails_with_permission_denied() {
    let (uid, egid) = effective_ids();
    if uid == 0 {
        eprintln!(
            "SKIPPED with_group_of_a_group_the_creator_is_not_in: root may chown to any group"
        );
        return;
    }
    let other = if egid == NOGROUP { 0 } else { NOGROUP };
    let name = ShmName::new("perm_badgroup");
    let error = small()
        .with_segment_name(name.0.clone())
        .with_group(other)
        .build_producer()
        .expect_err("chown to a foreign group must fail");
    assert_eq!(
        error.kind(),
        ErrorKind::Io(std::io::ErrorKind::PermissionDenied),
        "{error}"
    );
}

// ---------------------------------------------------------------- another uid

/// Child role: attach as whatever user we were started as, report, exit with a code the parent
/// checks. Does nothing when run on its own.
#[test]
#[ignore = "child process helper"]
fn child_attach_as_other_user() {
    let Some(spec) = child_env(SEGMENT_ENV) else {
        return;
    };
    let (uid, gid) = effective_ids();
    println!("child: uid {uid} gid {gid}");
    let builder = match spec.split_once(':') {
        Some(("shm", name)) => small().with_segment_name(name),
        #[cfg(feature = "file")]
        Some(("file", path)) => small().with_file(path),
        _ => panic!("bad spec {spec}"),
    };
    match builder.build_consumer() {
        Ok(consumer) => {
            let message = consumer.receive().unwrap();
            println!("child: attached, received {message:?}");
            let code = if message.as_deref() == Some(&b"for the group"[..]) {
                EXIT_ATTACHED
            } else {
                1
            };
            std::process::exit(code);
        }
        Err(error) => {
            let os_error = std::error::Error::source(&error)
                .and_then(|source| source.downcast_ref::<std::io::Error>())
                .and_then(std::io::Error::raw_os_error);
            println!(
                "child: kind {:?}, os error {os_error:?}: {error}",
                error.kind()
            );
            let expected = error.kind() == ErrorKind::Io(std::io::ErrorKind::PermissionDenied)
                && os_error == Some(EACCES);
            std::process::exit(if expected { EXIT_PERMISSION_DENIED } else { 1 });
        }
    }
}

/// This test binary, copied where `nobody` can execute it (the target directory need not be
/// reachable by other users). Removed on drop.
struct ExeCopy(PathBuf);

impl ExeCopy {
    fn new() -> ExeCopy {
        let dir = common::unique_path("perm_exe");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.join("child");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        ExeCopy(dir)
    }
}

impl Drop for ExeCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `child_attach_as_other_user` as `nobody:nogroup` with no supplementary groups:
/// through util-linux `setpriv` when installed, else by `setgid`/`setgroups`/`setuid` in the
/// forked child before exec (std's `CommandExt::uid/gid`, which drops supplementary groups
/// when root switches uid).
fn run_as_nobody(exe: &ExeCopy, spec: &str) -> Output {
    let child = exe.0.join("child");
    let args = [
        "child_attach_as_other_user",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ];
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let mut command = match setpriv {
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command
                .arg(format!("--reuid={NOBODY}"))
                .arg(format!("--regid={NOGROUP}"))
                .arg("--clear-groups")
                .arg(&child)
                .args(args);
            command
        }
        None => {
            eprintln!("note: setpriv not found; switching uid with CommandExt::uid/gid");
            use std::os::unix::process::CommandExt;
            let mut command = Command::new(&child);
            command.args(args).uid(NOBODY).gid(NOGROUP);
            command
        }
    };
    command
        .env(SEGMENT_ENV, spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.output().expect("spawn the child as nobody")
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn root_or_skip(test: &str) -> bool {
    if effective_ids().0 == 0 {
        return true;
    }
    eprintln!(
        "SKIPPED {test}: needs root to start a child as another uid (nobody); \
         NOTHING WAS CHECKED (CI runs as root)"
    );
    false
}

/// Another uid is refused with `Io(PermissionDenied)` / EACCES on an owner-only segment, and
/// let in once the segment is given to its group with mode 0660.
fn other_uid_is_refused_then_let_in_by_group(
    mut spec: impl FnMut(&str) -> (String, ChannelBuilder),
) {
    let exe = ExeCopy::new();

    let (private, builder) = spec("private");
    let producer = builder.build_producer().unwrap();
    producer.send("not for you").unwrap();
    let output = run_as_nobody(&exe, &private);
    let text = describe(&output);
    eprintln!("child as nobody on an owner-only segment: {text}");
    assert_eq!(
        output.status.code(),
        Some(EXIT_PERMISSION_DENIED),
        "the child must fail with Io(PermissionDenied), EACCES: {text}"
    );
    assert!(
        text.contains(&format!("child: uid {NOBODY} gid {NOGROUP}")),
        "{text}"
    );
    assert!(text.contains("permission denied"), "{text}");
    assert!(text.contains("os error 13"), "{text}");

    let (shared, builder) = spec("shared");
    let producer = builder.with_group(NOGROUP).build_producer().unwrap();
    producer.send("for the group").unwrap();
    let output = run_as_nobody(&exe, &shared);
    assert_eq!(
        output.status.code(),
        Some(EXIT_ATTACHED),
        "a member of the segment's group attaches: {}",
        describe(&output)
    );
}

#[test]
fn another_uid_cannot_attach_to_an_owner_only_shm_segment() {
    if !root_or_skip("another_uid_cannot_attach_to_an_owner_only_shm_segment") {
        return;
    }
    let mut names = Vec::new();
    other_uid_is_refused_then_let_in_by_group(|tag| {
        let name = ShmName::new(&format!("perm_uid_{tag}"));
        let builder = small().with_segment_name(name.0.clone());
        let spec = format!("shm:{}", name.0);
        names.push(name);
        (spec, builder)
    });
}

#[cfg(feature = "file")]
#[test]
fn another_uid_cannot_attach_to_an_owner_only_file_segment() {
    if !root_or_skip("another_uid_cannot_attach_to_an_owner_only_file_segment") {
        return;
    }
    let mut paths = Vec::new();
    other_uid_is_refused_then_let_in_by_group(|tag| {
        // Directly in the temp directory, which every user can search.
        let path = common::TempPath(common::unique_path(&format!("perm_uid_{tag}")));
        let builder = small().with_file(&path.0);
        let spec = format!("file:{}", path.0.display());
        paths.push(path);
        (spec, builder)
    });
}

// ---------------------------------------------------------------- truncation

#[cfg(feature = "file")]
#[test]
fn a_file_segment_cut_short_is_reported_as_truncated() {
    let path = common::TempPath(common::unique_path("perm_trunc"));
    let size = 1 << 20;
    drop(small().with_file(&path.0).build_producer().unwrap());
    let short = (size / 2) as u64;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path.0)
        .unwrap()
        .set_len(short)
        .unwrap();
    let error = small()
        .with_file(&path.0)
        .build_consumer()
        .expect_err("a cut-short file must be refused");
    assert_eq!(
        error.kind(),
        ErrorKind::Truncated {
            expected: size as u64,
            found: short
        },
        "{error}"
    );
    assert_eq!(
        std::io::Error::from(error).kind(),
        std::io::ErrorKind::InvalidData
    );
}
