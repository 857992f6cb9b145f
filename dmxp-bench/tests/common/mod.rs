//! What the end-to-end tests of `dmxp-bench` share: the binary, a scratch directory, and a
//! run that must succeed.

use std::path::PathBuf;
use std::process::Command;

/// The `dmxp-bench` binary of this build, as a command to add arguments to.
pub fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dmxp-bench"))
}

/// A new directory `<temp>/<prefix>-<pid>` for one test's files (the test removes it).
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `command`, asserts that it succeeded (showing both streams if not), and returns its
/// stdout.
pub fn stdout_of_success(command: &mut Command) -> String {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
