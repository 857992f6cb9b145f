//! # dmxp-nostd
//!
//! The core of DMXP-MPMC: multi-producer multi-consumer message channels in one shared-memory
//! segment, readable and writable by any process (or guest) that maps it, in any language.
//!
//! This crate needs neither `std` nor `alloc` and makes no system calls. It works over any
//! memory a caller hands it as a [`Region`]: a static buffer, an allocator's arena, a
//! hypervisor's shared page, or an mmap from one of the `backends/` crates.
//!
//! * [`layout`]: the version-1 wire layout, with every offset a compile-time assertion.
//! * [`validate`]: validation of untrusted bytes ([`parse_segment`]).
//! * [`Region`]: the single unsafe boundary, turning a pointer and a length into checked views.
//! * [`Segment`]: formatting, attaching, and the race-free channel table.
//! * [`Channel`]: the lock-free ring: send, receive, batches, loans and in-place receives.
//! * [`blob`]: the blob pool (PROTOCOL.md §13): blocks of any size written and read in place,
//!   owned by one party at a time through a CAS on each block's tag.
//! * [`peer`]: the peer table and crash recovery (PROTOCOL.md §11): registering handles,
//!   intents around claims, and repairing positions left by dead peers.
//! * [`wait`]: the wait/notify trait used by blocking operations.
//! * [`trust`]: which existing objects a process may attach to, and which names it may use
//!   (PROTOCOL.md §3.4); pure rules the `backends/` crates apply after `fstat`.
//!
//! ```
//! use dmxp_nostd::{AlignedBlock, Region, Segment, SendMeta};
//! use zerocopy::IntoBytes;
//!
//! // A segment with room for one channel of 4 slots, in ordinary memory.
//! let bytes = dmxp_nostd::layout::HEADER_SIZE + 4 * dmxp_nostd::layout::SLOT_SIZE;
//! let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(bytes)];
//! let segment = Segment::format(Region::new(memory.as_mut_bytes()).unwrap(), 1).unwrap();
//! let channel = segment.create_channel(0, 4, 1).unwrap();
//!
//! channel.try_send(b"hello", &SendMeta::default()).unwrap();
//! let mut buf = [0u8; 960];
//! let received = channel.try_recv(&mut buf).unwrap();
//! assert_eq!(&buf[..received.len], b"hello");
//! ```

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(target_endian = "big")]
compile_error!(
    "dmxp-nostd supports little-endian targets only: the DMXP wire layout is little-endian and \
     its atomics are accessed in place"
);

#[cfg(test)]
extern crate std;

pub mod blob;
pub mod channel;
pub mod error;
#[cfg(feature = "test-hooks")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-hooks")))]
pub mod hooks;
pub mod layout;
pub mod payload;
pub mod peer;
#[cfg(not(loom))]
pub mod region;
pub mod segment;
mod sync;
pub mod trust;
pub mod validate;
pub mod wait;

pub use blob::{BlobPool, BlobPoolSpec, BlobRef};
pub use channel::{BatchReceived, Channel, Received, RecvGuard, RunParts, SendLoan, SendMeta};
pub use error::{BlobError, Corruption, Error, RecvError, SendError};
pub use layout::MessageMeta;
pub use payload::{Payload, PayloadMut};
pub use peer::{Liveness, PeerInfo, PeerRole, PeerSlot, RepairReport};
#[cfg(not(loom))]
pub use region::{AlignedBlock, Region, SegmentMemory, SharedView};
pub use segment::{Abandonment, ChannelOptions, FormatOptions, Opened, Segment};
pub use validate::{parse_segment, ChannelGeometry, ChannelInfo, SegmentInfo};
pub use wait::{DetachedRegistration, SpinWait, WaitOutcome, WaitRegistration, WaitStrategy};

/// Atomics used by the layout types (re-exported so model tests can build them).
pub mod atomic {
    pub use crate::sync::{AtomicU16, AtomicU32, AtomicU64, Ordering};
}
