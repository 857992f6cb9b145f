//! Handles across `fork` (PROTOCOL.md §11.3): a child forked after its parent used DMXP must
//! register as itself (its own start time, so checkers do not take it for a reused pid and
//! repair its positions under it), and dropping the handles it inherited must never free the
//! parent's peer records.
//!
//! Alone in its test binary: `fork` in a process with other busy threads could copy a held lock.
#![cfg(feature = "shm")]

mod common;

use common::ShmName;
use dmxp::ChannelBuilder;

/// Exit codes of the child: each names the check that failed.
const OK: i32 = 0;
const OWN_RECORD_WRONG: i32 = 10;
const PARENT_RECORD_FREED: i32 = 11;
const SETUP_FAILED: i32 = 12;

fn records_of(builder: &ChannelBuilder, pid: u32) -> Vec<u64> {
    builder
        .attach_allocator()
        .unwrap()
        .peers()
        .unwrap()
        .into_iter()
        .filter(|p| p.record.pid == pid)
        .map(|p| p.record.start_time)
        .collect()
}

fn child(builder: &ChannelBuilder, inherited: dmxp::Producer, parent: u32) -> i32 {
    let me = std::process::id();
    let Ok(consumer) = builder.build_consumer() else {
        return SETUP_FAILED;
    };
    let Some(own_start) = dmxp::process_start_time(me) else {
        return SETUP_FAILED;
    };
    // The parent waited long enough for the clock-tick start times to differ; otherwise the
    // check below would prove nothing.
    if dmxp::process_start_time(parent) == Some(own_start) {
        return SETUP_FAILED;
    }
    // One record of ours, with our own start time (not the parent's cached one).
    if records_of(builder, me) != [own_start] {
        return OWN_RECORD_WRONG;
    }
    drop(inherited);
    if records_of(builder, parent).is_empty() {
        return PARENT_RECORD_FREED;
    }
    drop(consumer);
    OK
}

#[test]
fn a_forked_child_registers_as_itself_and_never_frees_its_parents_record() {
    let name = ShmName::new("fork");
    let builder = ChannelBuilder::new()
        .with_segment_name(name.0.clone())
        .with_segment_size(1 << 20)
        .with_capacity(8);
    let producer = builder.build_producer().unwrap();
    assert!(producer.is_registered());
    let parent = std::process::id();
    let parent_start = dmxp::own_start_time();
    assert_eq!(records_of(&builder, parent), [parent_start]);

    // Start times count clock ticks (10 ms at most): let a few pass, so that the child's
    // differs from ours and a child registered with ours is caught.
    std::thread::sleep(std::time::Duration::from_millis(30));
    // SAFETY: this test binary runs one test, so no other thread of ours holds a lock the
    // child could need; the child only runs `child` and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            child(&builder, producer, parent)
        }))
        .unwrap_or(SETUP_FAILED);
        // SAFETY: ends the forked child at once, without running the parent's atexit
        // handlers or the test harness's teardown.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above; `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status), "child did not exit: {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), OK, "child check failed");
    // The parent's record is still its own, and its handle still works.
    assert_eq!(records_of(&builder, parent), [parent_start]);
    producer.send("still registered").unwrap();
}
