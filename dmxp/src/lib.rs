//! # dmxp
//!
//! Shared-memory, multi-producer multi-consumer message channels between processes on one
//! host: the everyday API over the `no_std` core ([`core`], the crate `dmxp-nostd`).
//!
//! ```no_run
//! # // Not run as a test: it would create (or attach to) the host's default segment
//! # // /dmxp_alloc, which other programs may be using.
//! # fn main() -> std::io::Result<()> {
//! use dmxp::ChannelBuilder;
//!
//! // In one process:
//! let producer = ChannelBuilder::new()
//!     .with_channel_id(0)
//!     .with_capacity(1024)
//!     .build_producer()?;
//! producer.send("Hello, World!")?;
//!
//! // In another:
//! let consumer = ChannelBuilder::new().with_channel_id(0).build_consumer()?;
//! if let Some(data) = consumer.receive()? {
//!     println!("Received: {}", String::from_utf8_lossy(&data));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Backends (cargo features)
//!
//! * `shm` (default): POSIX shared memory by name, `/dmxp_alloc` unless
//!   [`ChannelBuilder::with_segment_name`] says otherwise.
//! * `memfd`: anonymous segments sealed against resizing, handed to other processes over a
//!   Unix socket ([`memfd::SegmentServer`], [`ChannelBuilder::with_memfd_socket`],
//!   [`ChannelBuilder::with_memory`]).
//! * `file`: a segment in a mapped file ([`ChannelBuilder::with_file`]).
//! * `tokio` (not a backend): async waits for tokio, off by default (see below).
//! * `wait-fd` (not a backend, implied by `tokio`): waits any event loop can poll (see below).
//!
//! ## Async (feature `tokio`)
//!
//! [`Consumer::receive_async`], [`Consumer::receive_async_timeout`],
//! [`Consumer::into_stream`] (a `futures_core::Stream`) and [`Producer::send_async`] wait
//! without a thread per wait: each handle submits an `io_uring` futex wait on the channel's
//! wait word and tokio polls the ring's fd (Linux 6.7 or later; elsewhere a poll every
//! millisecond, [`AsyncWakeup`]). Senders are unchanged and still make no system call when
//! nobody waits. Every async method is cancel-safe: a dropped future consumes or sends
//! nothing and leaves no waiter registered (`docs/PROTOCOL.md` §7.4). [`Consumer::iter`] and
//! [`Consumer::try_iter`] are the blocking and draining iterators (no feature needed).
//!
//! ## Any other event loop (feature `wait-fd`)
//!
//! [`Consumer::arm_wait`] and [`Producer::arm_wait`] run the same `io_uring` futex wait in two
//! calls, for a loop that is not tokio (epoll, mio, async-io, glib, Python's asyncio): arm
//! after a receive found the channel empty (a send found the ring full), poll the returned fd
//! with the returned timeout, then [`Consumer::disarm_wait`] and try again ([`ArmedWait`]).
//! `docs/WAITING.md` lists which calls wait, for how long, in each of the four clients.
//!
//! ## What the API promises
//!
//! * [`ChannelBuilder::build_producer`] attaches to or creates the segment and the channel;
//!   processes racing to do so get one segment and one channel, never an error and never a
//!   wipe. [`ChannelBuilder::build_consumer`] fails with [`ErrorKind::NotFound`] naming the
//!   missing segment or channel.
//! * Metadata: `message_id` is the message's position in its channel (increasing);
//!   `timestamp_ns` is CLOCK_MONOTONIC ([`monotonic_ns`]), comparable across processes on one
//!   host; `sender_pid` is the sender's pid; `sender_runtime` is 1 (Rust).
//! * Blocking calls sleep on futex words in the segment ([`FutexWait`]), shared across
//!   processes. A send or receive makes no system call when nobody waits
//!   ([`futex_wake_calls`] counts the wakes).
//! * Nothing read from the segment makes this crate panic: bad bytes become an [`Error`]
//!   (kind `Corrupt`, naming the field), lost or corrupt messages are counted and skipped
//!   (see [`Consumer`]).
//! * One error type, [`Error`], with [`Error::kind`]; it converts into `std::io::Error`.
//!
//! ## Crash recovery
//!
//! A process can be killed at any instruction, including between claiming a slot and
//! publishing (or freeing) it, which would stall the channel for everyone. Every [`Producer`]
//! and [`Consumer`] therefore registers in the segment's peer table and records, around each
//! claim, the positions it is about to own (`docs/PROTOCOL.md` §11). A receive that finds the
//! channel stuck at one position for [`STUCK_GRACE`] (10 ms), or a send that finds the ring
//! full on a slot a consumer claimed and never freed, checks the registrants' liveness
//! ([`process_alive`]: `kill(pid, 0)` and `/proc/<pid>/stat`, with the process start time
//! guarding against pid reuse) and repairs the positions of dead ones: a dead producer's
//! position becomes a LOST tombstone that consumers skip and count
//! ([`ReceiveStats::lost`]), a dead consumer's slot is freed (its message is lost).
//! Blocking calls re-check at least every [`STUCK_GRACE`] while the channel is stuck, so a
//! stall ends within a few tens of milliseconds. [`Producer::recover`],
//! [`Consumer::recover`] and [`SharedMemoryAllocator::recover`] run a repair pass on demand;
//! [`SharedMemoryAllocator::peers`] lists the records.
//!
//! Because a record holds one claim at a time, producers and consumers are `Send` but not
//! `Sync`: clone a handle for each thread (each clone registers its own record). A handle
//! that cannot register (every record taken: 256 unless the segment was created with more,
//! [`ChannelBuilder::with_peer_records`]; or no room left in the segment for the table)
//! still works, without this protection ([`Producer::is_registered`]). Clients that
//! do not register at all (older ones) give up the guarantee for positions they own.
//!
//! ## Threads
//!
//! [`Producer`] and [`Consumer`] are `Send` but not `Sync` (see above); a [`Loan`] is
//! neither, as it borrows its producer. [`SharedMemoryAllocator`], [`ChannelHandle`],
//! [`ChannelBuilder`] and [`Error`] are `Send + Sync`.
//!
//! <!-- Without a backend's feature its items do not exist: the links to them lead to the
//! list of backends above instead of breaking. -->
#![cfg_attr(
    not(feature = "shm"),
    doc = "[`ChannelBuilder::with_segment_name`]: #backends-cargo-features"
)]
#![cfg_attr(
    not(feature = "memfd"),
    doc = "[`memfd::SegmentServer`]: #backends-cargo-features"
)]
#![cfg_attr(
    not(feature = "memfd"),
    doc = "[`ChannelBuilder::with_memfd_socket`]: #backends-cargo-features"
)]
#![cfg_attr(
    not(feature = "file"),
    doc = "[`ChannelBuilder::with_file`]: #backends-cargo-features"
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "[`Consumer::receive_async`]: #async-feature-tokio"
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "[`Consumer::receive_async_timeout`]: #async-feature-tokio"
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "[`Consumer::into_stream`]: #async-feature-tokio"
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "[`Producer::send_async`]: #async-feature-tokio"
)]
#![cfg_attr(not(feature = "tokio"), doc = "[`AsyncWakeup`]: #async-feature-tokio")]
#![cfg_attr(
    not(feature = "wait-fd"),
    doc = "[`Consumer::arm_wait`]: #any-other-event-loop-feature-wait-fd"
)]
#![cfg_attr(
    not(feature = "wait-fd"),
    doc = "[`Producer::arm_wait`]: #any-other-event-loop-feature-wait-fd"
)]
#![cfg_attr(
    not(feature = "wait-fd"),
    doc = "[`Consumer::disarm_wait`]: #any-other-event-loop-feature-wait-fd"
)]
#![cfg_attr(
    not(feature = "wait-fd"),
    doc = "[`ArmedWait`]: #any-other-event-loop-feature-wait-fd"
)]
#![warn(missing_docs, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use dmxp_nostd as core;
pub use dmxp_nostd::layout::{runtime, MAX_CHANNELS, MSG_INLINE};
pub use dmxp_nostd::{
    ChannelInfo, ChannelOptions, MessageMeta, Payload, PayloadMut, RunParts, SegmentMemory,
};

#[cfg(feature = "file")]
#[cfg_attr(docsrs, doc(cfg(feature = "file")))]
pub use dmxp_file as file;
#[cfg(feature = "memfd")]
#[cfg_attr(docsrs, doc(cfg(feature = "memfd")))]
pub use dmxp_memfd as memfd;
/// Attach-trust checks and typed backend error payloads shared by every backend.
pub use dmxp_os as os;
#[cfg(feature = "shm")]
#[cfg_attr(docsrs, doc(cfg(feature = "shm")))]
pub use dmxp_shm as shm;

mod allocator;
#[cfg(feature = "tokio")]
mod async_wait;
mod blob;
mod builder;
pub mod cleanup;
mod consumer;
mod error;
#[cfg(feature = "wait-fd")]
mod futex_ring;
mod handle;
mod memory;
pub mod pattern;
mod producer;
mod recovery;
mod typed;
mod wait;

pub use dmxp_nostd::{PeerInfo, PeerRole, RepairReport};
#[cfg(feature = "test-hooks")]
pub use recovery::test_hooks;
pub use recovery::{
    own_pid_namespace, own_start_time, peer_alive, process_alive, process_start_time, MissStreak,
    ProcLiveness, StuckAction, StuckWatch, STUCK_GRACE, UNBLOCK_TIMEOUT,
};

pub use allocator::{ChannelHandle, SharedMemoryAllocator};
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use async_wait::{AsyncWakeup, MessageStream, POLL_INTERVAL};
pub use blob::{BlobBytes, BlobBytesMut, BlobLoan, BlobMessage, BlobPoolSpec, ClassStats};
pub use builder::{ChannelBuilder, DEFAULT_CAPACITY};
pub use consumer::{Consumer, InPlace, Iter, Message, ReceiveStats, TryIter};
pub use error::{Error, ErrorKind, Result};
#[cfg(feature = "wait-fd")]
#[cfg_attr(docsrs, doc(cfg(feature = "wait-fd")))]
pub use futex_ring::{io_uring_futex_waits, io_uring_futex_wakeups, ArmedWait};
pub use memory::{
    SharedMemory, DEFAULT_MODE, DEFAULT_SEGMENT_NAME, DEFAULT_SEGMENT_SIZE, DEFAULT_TIMEOUT,
};
pub use producer::{monotonic_ns, Loan, Producer};
pub use wait::{futex_wait_calls, futex_wake_calls, FutexWait};

/// Removes a POSIX shm segment's name. Processes that have it mapped keep using it; the memory
/// is freed when the last one unmaps. `NotFound` if there is no such name.
#[cfg(feature = "shm")]
#[cfg_attr(docsrs, doc(cfg(feature = "shm")))]
pub fn unlink_segment(name: &str) -> Result<()> {
    dmxp_shm::ShmSegment::unlink(name).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::new(
                ErrorKind::NotFound,
                format!("shm segment {name} does not exist"),
            )
        } else {
            Error::io(e, format!("unlinking shm segment {name}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn handles_are_send_and_the_segment_sync() {
        // Producers and consumers are Send, not Sync: each holds one peer record.
        assert_send::<Producer>();
        assert_send::<Consumer>();
        assert_send_sync::<SharedMemoryAllocator>();
        assert_send_sync::<Error>();
    }
}
