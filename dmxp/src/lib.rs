//! # dmxp
//!
//! Shared-memory, multi-producer multi-consumer message channels between processes on one
//! host: the everyday API over the `no_std` core ([`core`], the crate `dmxp-nostd`).
//!
//! ```no_run
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

pub use dmxp_nostd as core;
pub use dmxp_nostd::layout::{runtime, MAX_CHANNELS, MSG_INLINE};
pub use dmxp_nostd::{ChannelInfo, MessageMeta, Payload, PayloadMut, SegmentMemory};

#[cfg(feature = "file")]
pub use dmxp_file as file;
#[cfg(feature = "memfd")]
pub use dmxp_memfd as memfd;
#[cfg(feature = "shm")]
pub use dmxp_shm as shm;

mod allocator;
mod builder;
mod consumer;
mod error;
mod handle;
mod memory;
pub mod pattern;
mod producer;
mod wait;

pub use allocator::{ChannelHandle, SharedMemoryAllocator};
pub use builder::{ChannelBuilder, DEFAULT_CAPACITY};
pub use consumer::{Consumer, InPlace, Message, ReceiveStats};
pub use error::{Error, ErrorKind, Result};
pub use memory::{
    SharedMemory, DEFAULT_MODE, DEFAULT_SEGMENT_NAME, DEFAULT_SEGMENT_SIZE, DEFAULT_TIMEOUT,
};
pub use producer::{monotonic_ns, Loan, Producer};
pub use wait::{futex_wait_calls, futex_wake_calls, FutexWait};

/// Removes a POSIX shm segment's name. Processes that have it mapped keep using it; the memory
/// is freed when the last one unmaps. `NotFound` if there is no such name.
#[cfg(feature = "shm")]
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

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<Producer>();
        assert_send_sync::<Consumer>();
        assert_send_sync::<SharedMemoryAllocator>();
        assert_send_sync::<Error>();
    }
}
