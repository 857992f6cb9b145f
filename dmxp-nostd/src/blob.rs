//! The blob pool (PROTOCOL.md §13): fixed-size blocks in the segment that a producer writes in
//! place and its consumer reads in place, so that a message of any size costs one ring slot.
//!
//! # Algorithm
//!
//! The pool is a descriptor followed by up to [`MAX_BLOB_CLASSES`] size classes, each an array
//! of 64-byte block headers and an array of blocks. A block's owner is named in one 64-bit word
//! of its header, the **tag** (`state | owner << 8 | generation << 32`), and every change of
//! owner is one compare-and-swap of the whole tag from the value read:
//!
//! ```text
//!            loan (generation + 1)         send_blob                receive
//!   FREE ───────────────────────▶ LOANED ───────────▶ QUEUED ─────────────────▶ HELD
//!    ▲  ◀─────────────────────────┘ abandon             │ reclaim (position gone)  │
//!    └──────────────────────────────────────────────────┴──────────────────────────┘
//!                                                          release, reclaim (owner dead)
//! ```
//!
//! * A **loan** scans a class from a shared rotating hint for a `FREE` tag and CASes it to
//!   `LOANED` by the caller's peer record, with the next generation. The scan tries each block
//!   once, so an exhausted (or scribbled) pool fails in bounded time.
//! * A **send** names its ring position in the block header, then CASes `LOANED → QUEUED`; the
//!   ring slot then carries a [`BlobRef`] (class, block, generation, length).
//! * A **receive** CASes `QUEUED → HELD` (checking the generation and the position the header
//!   names) *before* it frees the ring slot, so a freed slot never hides an untaken block.
//! * A **release** CASes `HELD → FREE`.
//!
//! Because each owner is in the tag, a process that dies at any instruction leaves every block
//! with exactly one owner that recovery can judge ([`BlobPool::reclaim_owner`],
//! [`BlobPool::reclaim_leaked`], and the `QUEUED` rule in `Segment::reclaim_blobs`). A
//! reclaim, too, is a CAS from the exact tag it read: a peer judged dead that wakes up finds
//! its tag changed and is told *revoked*; it can never free a block that moved on.
//!
//! # Soundness
//!
//! Blocks are peer-writable memory, so they are read and written only as atomic 64-bit words
//! ([`BlobWords`]), never as `&[u8]`: a hostile or revoked peer writing the same block can
//! garble its bytes but cannot cause undefined behaviour.

#![cfg_attr(loom, allow(dead_code))]

use crate::error::{BlobError, Corruption};
use crate::layout::HEADER_SIZE;
use crate::sync::{
    AtomicU32, AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};

/// `pool_magic`: the bytes `"DMXPBLOB"` read as a little-endian `u64`.
pub const POOL_MAGIC: u64 = 0x424F_4C42_5058_4D44;
/// Most size classes a pool may have.
pub const MAX_BLOB_CLASSES: usize = 8;
/// Bytes of the pool descriptor before the class descriptors.
pub const POOL_HEADER_SIZE: usize = 64;
/// Bytes of one class descriptor.
pub const CLASS_DESCRIPTOR_SIZE: usize = 64;
/// Bytes of one block header.
pub const BLOCK_HEADER_SIZE: usize = 64;
/// The descriptor area with every class slot: where a pool needs at least this many bytes.
pub const POOL_DESCRIPTOR_AREA: usize = POOL_HEADER_SIZE + MAX_BLOB_CLASSES * CLASS_DESCRIPTOR_SIZE;
/// Largest block size (2³¹ bytes).
pub const MAX_BLOCK_SIZE: u64 = 1 << 31;
/// Most blocks in one class (2²⁴).
pub const MAX_BLOCK_COUNT: u32 = 1 << 24;
/// Bytes of a [`BlobRef`] in a slot's payload.
pub const BLOB_REF_LEN: usize = 16;
/// Alignment the Rust creator gives the pool and each class's data.
pub const POOL_PAGE: u64 = 4096;

/// The `state` byte of a block's tag.
pub mod block_state {
    /// Nobody owns the block.
    pub const FREE: u8 = 0;
    /// A producer is writing it (owner: its peer record).
    pub const LOANED: u8 = 1;
    /// A message in a ring refers to it (the header names the channel and position).
    pub const QUEUED: u8 = 2;
    /// A consumer received it and reads it (owner: its peer record).
    pub const HELD: u8 = 3;
}

/// A block's tag, unpacked: who owns it and which use of the block this is.
///
/// ```
/// use dmxp_nostd::blob::{block_state, Tag};
/// let tag = Tag { state: block_state::LOANED, owner: 5, generation: 9 };
/// assert_eq!(Tag::unpack(tag.pack()), tag);
/// assert_eq!(tag.pack(), 1 | 5 << 8 | 9 << 32);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    /// One of [`block_state`] (any byte when read from a scribbled header).
    pub state: u8,
    /// The owner's peer record index plus one while `LOANED` or `HELD`; 0 otherwise. 24 bits.
    pub owner: u32,
    /// Grows by one with every loan.
    pub generation: u32,
}

impl Tag {
    /// The tag of a free block of `generation`.
    #[must_use]
    pub const fn free(generation: u32) -> Self {
        Self {
            state: block_state::FREE,
            owner: 0,
            generation,
        }
    }

    /// The 64-bit word.
    #[must_use]
    pub const fn pack(self) -> u64 {
        self.state as u64 | ((self.owner as u64 & 0xFF_FFFF) << 8) | (self.generation as u64) << 32
    }

    /// The fields of a 64-bit word.
    #[must_use]
    pub const fn unpack(word: u64) -> Self {
        Self {
            state: word as u8,
            owner: (word >> 8) as u32 & 0xFF_FFFF,
            generation: (word >> 32) as u32,
        }
    }
}

/// The owner field for peer record `index`.
const fn owner_of(record: usize) -> u32 {
    record as u32 + 1
}

/// A reference to one use of a block: what a ring slot carries (PROTOCOL.md §13.4).
///
/// ```
/// use dmxp_nostd::blob::BlobRef;
/// let r = BlobRef { class: 2, block: 7, generation: 3, len: 4096 };
/// assert_eq!(BlobRef::decode(r.encode()), r);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobRef {
    /// The size class.
    pub class: u8,
    /// The block within the class.
    pub block: u32,
    /// The generation of the loan that wrote it.
    pub generation: u32,
    /// Bytes of the block that are the message.
    pub len: u32,
}

impl BlobRef {
    /// The reference as its two payload words (little-endian bytes 0..8 and 8..16).
    #[must_use]
    pub const fn encode(self) -> [u64; 2] {
        [
            self.class as u64 | (self.block as u64) << 32,
            self.generation as u64 | (self.len as u64) << 32,
        ]
    }

    /// The reference in two payload words. Bytes 1..4 are ignored (zero when written).
    #[must_use]
    pub const fn decode(words: [u64; 2]) -> Self {
        Self {
            class: words[0] as u8,
            block: (words[0] >> 32) as u32,
            generation: words[1] as u32,
            len: (words[1] >> 32) as u32,
        }
    }
}

// ------------------------------------------------------------------------------ layout types

/// Live view of the pool descriptor's first 64 bytes (PROTOCOL.md §13.2).
#[derive(Debug)]
#[cfg_attr(not(loom), derive(zerocopy::FromBytes, zerocopy::KnownLayout))]
#[repr(C, align(64))]
pub struct AtomicPoolHeader {
    /// Offset 0: [`POOL_MAGIC`].
    pub pool_magic: AtomicU64,
    /// Offset 8: size classes, 1 to [`MAX_BLOB_CLASSES`].
    pub class_count: AtomicU32,
    /// Offset 12: zero.
    pub reserved_12: AtomicU32,
    /// Offset 16: bytes of the pool from its start.
    pub pool_len: AtomicU64,
    /// Offset 24: futex word producers waiting for a block sleep on; bumped by every free.
    pub free_seq: AtomicU32,
    /// Offset 28: producers registered as waiting on `free_seq`.
    pub free_waiters: AtomicU32,
    /// Offsets 32..64: zero.
    pub reserved: [AtomicU64; 4],
}

/// Live view of a class descriptor (64 bytes).
#[derive(Debug)]
#[cfg_attr(not(loom), derive(zerocopy::FromBytes, zerocopy::KnownLayout))]
#[repr(C, align(64))]
pub struct AtomicBlobClass {
    /// Offset 0: bytes per block, a multiple of 64, 64 to [`MAX_BLOCK_SIZE`].
    pub block_size: AtomicU64,
    /// Offset 8: blocks, 1 to [`MAX_BLOCK_COUNT`].
    pub block_count: AtomicU32,
    /// Offset 12: zero.
    pub reserved_12: AtomicU32,
    /// Offset 16: segment offset of the block headers.
    pub headers_offset: AtomicU64,
    /// Offset 24: segment offset of block 0.
    pub data_offset: AtomicU64,
    /// Offset 32: where the next loan starts looking (any value, modulo `block_count`).
    pub next_hint: AtomicU32,
    /// Offset 36: zero.
    pub reserved_36: AtomicU32,
    /// Offsets 40..64: zero.
    pub reserved: [AtomicU64; 3],
}

/// Live view of a block header (64 bytes, PROTOCOL.md §13.3).
#[derive(Debug)]
#[cfg_attr(not(loom), derive(zerocopy::FromBytes, zerocopy::KnownLayout))]
#[repr(C, align(64))]
pub struct AtomicBlockHeader {
    /// Offset 0: the [`Tag`]; changed only by CAS.
    pub tag: AtomicU64,
    /// Offset 8: while `QUEUED`, the channel carrying the block.
    pub channel_id: AtomicU32,
    /// Offset 12: informational, the committed length.
    pub length: AtomicU32,
    /// Offset 16: while `QUEUED`, the position of the message that refers to it.
    pub position: AtomicU64,
    /// Offset 24: informational, the pid of the last owner.
    pub owner_pid: AtomicU32,
    /// Offset 28: zero.
    pub reserved_28: AtomicU32,
    /// Offsets 32..64: zero.
    pub reserved: [AtomicU64; 4],
}

#[cfg(not(loom))]
mod layout_assertions {
    use super::*;
    use core::mem::{offset_of, size_of};
    use static_assertions::const_assert_eq;
    const_assert_eq!(size_of::<AtomicPoolHeader>(), POOL_HEADER_SIZE);
    const_assert_eq!(offset_of!(AtomicPoolHeader, class_count), 8);
    const_assert_eq!(offset_of!(AtomicPoolHeader, pool_len), 16);
    const_assert_eq!(offset_of!(AtomicPoolHeader, free_seq), 24);
    const_assert_eq!(offset_of!(AtomicPoolHeader, free_waiters), 28);
    const_assert_eq!(size_of::<AtomicBlobClass>(), CLASS_DESCRIPTOR_SIZE);
    const_assert_eq!(offset_of!(AtomicBlobClass, block_count), 8);
    const_assert_eq!(offset_of!(AtomicBlobClass, headers_offset), 16);
    const_assert_eq!(offset_of!(AtomicBlobClass, data_offset), 24);
    const_assert_eq!(offset_of!(AtomicBlobClass, next_hint), 32);
    const_assert_eq!(size_of::<AtomicBlockHeader>(), BLOCK_HEADER_SIZE);
    const_assert_eq!(offset_of!(AtomicBlockHeader, channel_id), 8);
    const_assert_eq!(offset_of!(AtomicBlockHeader, length), 12);
    const_assert_eq!(offset_of!(AtomicBlockHeader, position), 16);
    const_assert_eq!(offset_of!(AtomicBlockHeader, owner_pid), 24);
}

// ------------------------------------------------------------------------------ specification

/// One size class a pool is made with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobClass {
    /// Bytes per block: a multiple of 64, 64 to [`MAX_BLOCK_SIZE`].
    pub block_size: u64,
    /// Blocks in the class: 1 to [`MAX_BLOCK_COUNT`].
    pub block_count: u32,
}

/// The size classes of a pool a segment is formatted with.
///
/// ```
/// use dmxp_nostd::blob::BlobPoolSpec;
///
/// // Explicit classes: 32 blocks of 64 KiB and 6 of 4 MiB.
/// let spec = BlobPoolSpec::new().with_class(64 << 10, 32).with_class(4 << 20, 6);
/// assert_eq!(spec.largest_block(), 4 << 20);
/// assert!(spec.check().is_ok());
///
/// // Or a byte budget split over classes of 4 KiB to 16 MiB.
/// let spec = BlobPoolSpec::for_bytes(64 << 20);
/// assert!(spec.largest_block() >= 4 << 20);
/// assert!(spec.data_bytes() <= 64 << 20);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobPoolSpec {
    classes: [BlobClass; MAX_BLOB_CLASSES],
    count: usize,
}

impl BlobPoolSpec {
    /// No classes yet.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            classes: [BlobClass {
                block_size: 0,
                block_count: 0,
            }; MAX_BLOB_CLASSES],
            count: 0,
        }
    }

    /// This spec with one more class (ignored past [`MAX_BLOB_CLASSES`]; [`Self::check`]
    /// reports it).
    #[must_use]
    pub const fn with_class(mut self, block_size: u64, block_count: u32) -> Self {
        if self.count < MAX_BLOB_CLASSES {
            self.classes[self.count] = BlobClass {
                block_size,
                block_count,
            };
            self.count += 1;
        } else {
            // Remembered as too many: `check` refuses it.
            self.count = MAX_BLOB_CLASSES + 1;
        }
        self
    }

    /// About `bytes` of blocks, split evenly over the classes of 4 KiB × 4ᵏ (4 KiB to 16 MiB)
    /// whose blocks are at most an eighth of `bytes`, each class getting at least one block.
    /// Fewer than 32 KiB gives one class of 4 KiB blocks.
    #[must_use]
    pub fn for_bytes(bytes: u64) -> Self {
        let mut sizes = [0u64; 7];
        let mut n = 0;
        let mut size = 4096u64;
        while size <= 16 << 20 && (n == 0 || size <= bytes / 8) {
            sizes[n] = size;
            n += 1;
            size *= 4;
        }
        let share = bytes / n as u64;
        let mut spec = Self::new();
        for &size in &sizes[..n] {
            let count = (share / size).clamp(1, u64::from(MAX_BLOCK_COUNT)) as u32;
            spec = spec.with_class(size, count);
        }
        spec
    }

    /// The classes, smallest first.
    #[must_use]
    pub fn classes(&self) -> &[BlobClass] {
        &self.classes[..self.count.min(MAX_BLOB_CLASSES)]
    }

    /// The largest block (0 without classes).
    #[must_use]
    pub fn largest_block(&self) -> u64 {
        self.classes()
            .iter()
            .map(|c| c.block_size)
            .max()
            .unwrap_or(0)
    }

    /// Bytes of blocks (without headers and alignment).
    #[must_use]
    pub fn data_bytes(&self) -> u64 {
        self.classes()
            .iter()
            .map(|c| c.block_size.saturating_mul(u64::from(c.block_count)))
            .fold(0, u64::saturating_add)
    }

    /// [`BlobError::InvalidSpec`] unless there are 1 to 8 classes, each with a block size that
    /// is a multiple of 64 from 64 to 2³¹ and 1 to 2²⁴ blocks, sizes strictly increasing.
    pub fn check(&self) -> Result<(), BlobError> {
        if self.count == 0 || self.count > MAX_BLOB_CLASSES {
            return Err(BlobError::InvalidSpec);
        }
        let mut previous = 0;
        for class in self.classes() {
            let size_ok = class.block_size >= 64
                && class.block_size <= MAX_BLOCK_SIZE
                && class.block_size.is_multiple_of(64)
                && class.block_size > previous;
            if !size_ok || class.block_count == 0 || class.block_count > MAX_BLOCK_COUNT {
                return Err(BlobError::InvalidSpec);
            }
            previous = class.block_size;
        }
        Ok(())
    }

    /// Where the classes go in a pool starting at `start`: each class's headers and data
    /// offsets, and the pool's length. `None` on overflow.
    pub(crate) fn plan(&self, start: u64) -> Option<PoolPlan> {
        let mut plan = PoolPlan {
            start,
            len: 0,
            classes: [ClassPlan::default(); MAX_BLOB_CLASSES],
            count: self.classes().len(),
        };
        let mut headers = start.checked_add(POOL_DESCRIPTOR_AREA as u64)?;
        for (i, class) in self.classes().iter().enumerate() {
            plan.classes[i].headers_offset = headers;
            headers =
                headers.checked_add(u64::from(class.block_count) * BLOCK_HEADER_SIZE as u64)?;
        }
        let mut data = round_up(headers, POOL_PAGE)?;
        for (i, class) in self.classes().iter().enumerate() {
            plan.classes[i].data_offset = data;
            plan.classes[i].class = *class;
            let bytes = class.block_size.checked_mul(u64::from(class.block_count))?;
            data = round_up(data.checked_add(bytes)?, POOL_PAGE)?;
        }
        plan.len = data - start;
        Some(plan)
    }
}

fn round_up(value: u64, to: u64) -> Option<u64> {
    value.checked_next_multiple_of(to)
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ClassPlan {
    pub(crate) class: BlobClass,
    pub(crate) headers_offset: u64,
    pub(crate) data_offset: u64,
}

/// A pool's layout before it is written.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolPlan {
    pub(crate) start: u64,
    pub(crate) len: u64,
    pub(crate) classes: [ClassPlan; MAX_BLOB_CLASSES],
    pub(crate) count: usize,
}

impl PoolPlan {
    /// Writes the descriptor and zeroes every block header. Run by the creator before
    /// `magic` is stored; the views are those of the planned offsets.
    pub(crate) fn write<'m>(
        &self,
        header: &AtomicPoolHeader,
        classes: &[AtomicBlobClass],
        headers: impl Fn(usize) -> Option<&'m [AtomicBlockHeader]>,
    ) {
        header.class_count.store(self.count as u32, Relaxed);
        header.reserved_12.store(0, Relaxed);
        header.pool_len.store(self.len, Relaxed);
        header.free_seq.store(0, Relaxed);
        header.free_waiters.store(0, Relaxed);
        for word in &header.reserved {
            word.store(0, Relaxed);
        }
        for (i, descriptor) in classes.iter().enumerate() {
            let plan = self.classes.get(i).filter(|_| i < self.count);
            let plan = plan.copied().unwrap_or_default();
            descriptor.block_size.store(plan.class.block_size, Relaxed);
            descriptor
                .block_count
                .store(plan.class.block_count, Relaxed);
            descriptor.reserved_12.store(0, Relaxed);
            descriptor
                .headers_offset
                .store(plan.headers_offset, Relaxed);
            descriptor.data_offset.store(plan.data_offset, Relaxed);
            descriptor.next_hint.store(0, Relaxed);
            descriptor.reserved_36.store(0, Relaxed);
            for word in &descriptor.reserved {
                word.store(0, Relaxed);
            }
            if i < self.count {
                for block in headers(i).unwrap_or(&[]) {
                    block.tag.store(0, Relaxed);
                    block.channel_id.store(0, Relaxed);
                    block.length.store(0, Relaxed);
                    block.position.store(0, Relaxed);
                    block.owner_pid.store(0, Relaxed);
                    block.reserved_28.store(0, Relaxed);
                    for word in &block.reserved {
                        word.store(0, Relaxed);
                    }
                }
            }
        }
        header.pool_magic.store(POOL_MAGIC, Release);
    }
}

// ------------------------------------------------------------------------------ validation

/// A validated class: what the pool's operations index with, read once at attach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassGeometry {
    /// Bytes per block.
    pub block_size: u64,
    /// Blocks in the class.
    pub block_count: u32,
    /// Segment offset of the block headers.
    pub headers_offset: u64,
    /// Segment offset of block 0.
    pub data_offset: u64,
}

impl ClassGeometry {
    fn headers_end(&self) -> u64 {
        self.headers_offset + u64::from(self.block_count) * BLOCK_HEADER_SIZE as u64
    }

    fn data_end(&self) -> u64 {
        self.data_offset + self.block_size * u64::from(self.block_count)
    }
}

/// A validated pool: its offset, length and classes (PROTOCOL.md §13.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Segment offset of the pool descriptor.
    pub offset: u64,
    /// Bytes of the pool.
    pub len: u64,
    /// Classes, smallest first; `class_count` of them are valid.
    pub classes: [ClassGeometry; MAX_BLOB_CLASSES],
    /// Valid entries of `classes`.
    pub class_count: usize,
}

impl PoolGeometry {
    /// The valid classes.
    #[must_use]
    pub fn classes(&self) -> &[ClassGeometry] {
        &self.classes[..self.class_count]
    }

    /// The largest block.
    #[must_use]
    pub fn largest_block(&self) -> u64 {
        self.classes().last().map_or(0, |c| c.block_size)
    }

    /// Total blocks over every class.
    #[must_use]
    pub fn block_count(&self) -> u64 {
        self.classes()
            .iter()
            .map(|c| u64::from(c.block_count))
            .sum()
    }
}

/// The raw descriptor values validation reads (PROTOCOL.md §13.2), from a live pool or from
/// bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolDescriptor {
    /// `pool_magic`.
    pub magic: u64,
    /// `class_count`.
    pub class_count: u32,
    /// `pool_len`.
    pub pool_len: u64,
    /// The first `class_count` class descriptors (the rest zero).
    pub classes: [ClassGeometry; MAX_BLOB_CLASSES],
}

impl PoolDescriptor {
    /// Reads the descriptor of a live pool (relaxed loads after the caller's acquire of
    /// `magic` in the segment header).
    #[must_use]
    pub fn read(header: &AtomicPoolHeader, classes: &[AtomicBlobClass]) -> Self {
        let mut descriptor = Self {
            magic: header.pool_magic.load(Acquire),
            class_count: header.class_count.load(Relaxed),
            pool_len: header.pool_len.load(Relaxed),
            classes: [ClassGeometry::default(); MAX_BLOB_CLASSES],
        };
        for (out, class) in descriptor.classes.iter_mut().zip(classes) {
            *out = ClassGeometry {
                block_size: class.block_size.load(Relaxed),
                block_count: class.block_count.load(Relaxed),
                headers_offset: class.headers_offset.load(Relaxed),
                data_offset: class.data_offset.load(Relaxed),
            };
        }
        descriptor
    }

    /// Decodes a descriptor from the pool's first [`POOL_DESCRIPTOR_AREA`] bytes; `None` if
    /// `bytes` is shorter.
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
        };
        bytes.get(..POOL_DESCRIPTOR_AREA)?;
        let mut descriptor = Self {
            magic: u64_at(0)?,
            class_count: u32_at(8)?,
            pool_len: u64_at(16)?,
            classes: [ClassGeometry::default(); MAX_BLOB_CLASSES],
        };
        for (i, out) in descriptor.classes.iter_mut().enumerate() {
            let at = POOL_HEADER_SIZE + i * CLASS_DESCRIPTOR_SIZE;
            *out = ClassGeometry {
                block_size: u64_at(at)?,
                block_count: u32_at(at + 8)?,
                headers_offset: u64_at(at + 16)?,
                data_offset: u64_at(at + 24)?,
            };
        }
        Some(descriptor)
    }
}

/// Checks where the header says the pool is (check #1 of PROTOCOL.md §13.2).
pub fn check_pool_offset(offset: u64, segment_len: u64) -> Result<(), Corruption> {
    let fits = offset.is_multiple_of(64)
        && offset >= HEADER_SIZE as u64
        && offset
            .checked_add(POOL_DESCRIPTOR_AREA as u64)
            .is_some_and(|end| end <= segment_len);
    if fits {
        Ok(())
    } else {
        Err(Corruption::BlobPoolOutOfRange {
            found: offset,
            segment_len,
        })
    }
}

/// Validates a pool's descriptor (checks #2 to #5 of PROTOCOL.md §13.2); the pool lies at
/// `offset`, which [`check_pool_offset`] accepted.
///
/// ```
/// use dmxp_nostd::blob::{validate_pool, PoolDescriptor};
/// use dmxp_nostd::Corruption;
/// let descriptor = PoolDescriptor { magic: 1, ..Default::default() };
/// assert_eq!(
///     validate_pool(&descriptor, 1 << 20, 2 << 20),
///     Err(Corruption::BlobPoolBadMagic { found: 1 })
/// );
/// ```
pub fn validate_pool(
    descriptor: &PoolDescriptor,
    offset: u64,
    segment_len: u64,
) -> Result<PoolGeometry, Corruption> {
    if descriptor.magic != POOL_MAGIC {
        return Err(Corruption::BlobPoolBadMagic {
            found: descriptor.magic,
        });
    }
    let count = descriptor.class_count as usize;
    let descriptors_end = (POOL_HEADER_SIZE + count * CLASS_DESCRIPTOR_SIZE) as u64;
    let bad_geometry = Corruption::BlobPoolBadGeometry {
        class_count: descriptor.class_count,
        pool_len: descriptor.pool_len,
    };
    if count == 0 || count > MAX_BLOB_CLASSES || descriptor.pool_len < descriptors_end {
        return Err(bad_geometry);
    }
    let end = offset
        .checked_add(descriptor.pool_len)
        .filter(|&end| end <= segment_len)
        .ok_or(bad_geometry)?;
    let inner_start = offset + descriptors_end;
    let mut geometry = PoolGeometry {
        offset,
        len: descriptor.pool_len,
        classes: [ClassGeometry::default(); MAX_BLOB_CLASSES],
        class_count: count,
    };
    let mut previous_size = 0;
    for (i, class) in descriptor.classes[..count].iter().enumerate() {
        let bad = Corruption::BlobClassBad { class: i as u32 };
        let size_ok = class.block_size >= 64
            && class.block_size <= MAX_BLOCK_SIZE
            && class.block_size.is_multiple_of(64)
            && class.block_size > previous_size;
        let count_ok = class.block_count >= 1 && class.block_count <= MAX_BLOCK_COUNT;
        if !size_ok || !count_ok {
            return Err(bad);
        }
        previous_size = class.block_size;
        // Sizes and counts are bounded above, so these products fit in u64.
        let headers_len = u64::from(class.block_count) * BLOCK_HEADER_SIZE as u64;
        let data_len = class.block_size * u64::from(class.block_count);
        let inside = |start: u64, len: u64| {
            start.is_multiple_of(64)
                && start >= inner_start
                && start.checked_add(len).is_some_and(|e| e <= end)
        };
        if !inside(class.headers_offset, headers_len) || !inside(class.data_offset, data_len) {
            return Err(bad);
        }
        geometry.classes[i] = *class;
    }
    // No byte shared between any two ranges (headers or data) of any classes.
    let ranges = || {
        geometry.classes().iter().flat_map(|c| {
            [
                (c.headers_offset, c.headers_end()),
                (c.data_offset, c.data_end()),
            ]
        })
    };
    for (i, a) in ranges().enumerate() {
        for b in ranges().skip(i + 1) {
            if a.0 < b.1 && b.0 < a.1 {
                return Err(Corruption::BlobClassBad {
                    class: (i / 2) as u32,
                });
            }
        }
    }
    Ok(geometry)
}

// ------------------------------------------------------------------------------ the pool

/// The block words of one block: `block_size / 8` atomic words (not under loom, which models
/// the tags only).
#[cfg(not(loom))]
pub type BlobWords<'a> = &'a [AtomicU64];

#[cfg(not(loom))]
impl<'a> PoolMemory<'a> for crate::region::Region<'a> {
    fn pool_header(&self, offset: u64) -> Option<&'a AtomicPoolHeader> {
        self.view(usize::try_from(offset).ok()?)
    }
    fn class_descriptors(&self, offset: u64) -> Option<&'a [AtomicBlobClass]> {
        self.view_slice(usize::try_from(offset).ok()?, MAX_BLOB_CLASSES)
    }
    fn block_headers(&self, offset: u64, count: u32) -> Option<&'a [AtomicBlockHeader]> {
        self.view_slice(usize::try_from(offset).ok()?, count as usize)
    }
    fn block_words(&self, offset: u64, words: u64) -> Option<&'a [AtomicU64]> {
        self.view_slice(usize::try_from(offset).ok()?, usize::try_from(words).ok()?)
    }
}

/// A class's live views.
#[derive(Clone, Copy)]
struct ClassView<'a> {
    geometry: ClassGeometry,
    descriptor: &'a AtomicBlobClass,
    headers: &'a [AtomicBlockHeader],
    #[cfg(not(loom))]
    data: &'a [AtomicU64],
}

/// Counts of a pool's blocks by state, for tools (`dmxp inspect`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Bytes per block.
    pub block_size: u64,
    /// Blocks in the class.
    pub block_count: u32,
    /// `FREE` blocks.
    pub free: u32,
    /// `LOANED` blocks.
    pub loaned: u32,
    /// `QUEUED` blocks.
    pub queued: u32,
    /// `HELD` blocks.
    pub held: u32,
    /// Blocks whose state byte is none of the four (a scribbled tag).
    pub invalid: u32,
}

/// The pool of a segment, validated at attach, with views built from the cached geometry.
///
/// Every operation is bounded: a loan tries each block of a class once; a reclaim scans each
/// block once; every index comes from the cached geometry.
#[derive(Clone, Copy)]
pub struct BlobPool<'a> {
    geometry: PoolGeometry,
    header: &'a AtomicPoolHeader,
    classes: [Option<ClassView<'a>>; MAX_BLOB_CLASSES],
}

impl core::fmt::Debug for BlobPool<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlobPool")
            .field("geometry", &self.geometry)
            .finish_non_exhaustive()
    }
}

/// What the pool needs from the memory it lives in: views at validated offsets.
pub(crate) trait PoolMemory<'a> {
    fn pool_header(&self, offset: u64) -> Option<&'a AtomicPoolHeader>;
    fn class_descriptors(&self, offset: u64) -> Option<&'a [AtomicBlobClass]>;
    fn block_headers(&self, offset: u64, count: u32) -> Option<&'a [AtomicBlockHeader]>;
    #[cfg(not(loom))]
    fn block_words(&self, offset: u64, words: u64) -> Option<&'a [AtomicU64]>;
}

impl<'a> BlobPool<'a> {
    /// Builds the views of a validated pool. `None` if the memory cannot hold them (it always
    /// can once validation passed against the same length).
    pub(crate) fn new(memory: &impl PoolMemory<'a>, geometry: PoolGeometry) -> Option<Self> {
        let header = memory.pool_header(geometry.offset)?;
        let descriptors = memory.class_descriptors(geometry.offset + POOL_HEADER_SIZE as u64)?;
        let mut classes = [None; MAX_BLOB_CLASSES];
        for (i, class) in geometry.classes().iter().enumerate() {
            classes[i] = Some(ClassView {
                geometry: *class,
                descriptor: descriptors.get(i)?,
                headers: memory.block_headers(class.headers_offset, class.block_count)?,
                #[cfg(not(loom))]
                data: memory.block_words(
                    class.data_offset,
                    class.block_size / 8 * u64::from(class.block_count),
                )?,
            });
        }
        Some(Self {
            geometry,
            header,
            classes,
        })
    }

    /// The validated geometry.
    #[must_use]
    pub fn geometry(&self) -> &PoolGeometry {
        &self.geometry
    }

    /// The largest block: the longest message a loan can hold.
    #[must_use]
    pub fn largest_block(&self) -> u64 {
        self.geometry.largest_block()
    }

    fn class(&self, class: usize) -> Option<&ClassView<'a>> {
        self.classes.get(class)?.as_ref()
    }

    fn header_of(&self, r: &BlobRef) -> Option<&'a AtomicBlockHeader> {
        self.class(usize::from(r.class))?
            .headers
            .get(r.block as usize)
    }

    /// The futex word and waiter count producers waiting for a block use (PROTOCOL.md §13.3).
    #[must_use]
    pub fn free_words(&self) -> (&'a AtomicU32, &'a AtomicU32) {
        (&self.header.free_seq, &self.header.free_waiters)
    }

    /// Loans a block of at least `len` bytes to peer record `record` (of a process `pid`):
    /// the smallest class that fits, then larger ones. The reference's `len` is `len`. Each
    /// class is scanned from the class's shared `next_hint`, which is advanced by one.
    ///
    /// Errors: [`BlobError::TooLarge`] when no class fits `len` (nothing was tried);
    /// [`BlobError::PoolExhausted`] when every block that could hold it is taken.
    pub fn loan(&self, record: usize, pid: u32, len: usize) -> Result<BlobRef, BlobError> {
        self.loan_from(record, pid, len, None, None)
    }

    /// [`Self::loan`] starting each class's scan at `start` (modulo its block count) instead
    /// of the shared `next_hint`, which is then neither read nor written: a handle that
    /// remembers where its last loan ended keeps the scan off a cache line that every
    /// producer writes (PROTOCOL.md §13.3 lets the scan start anywhere). The scan of the
    /// class `near` names starts at `near`'s block instead: a block the caller read last,
    /// whose lines are still in its cache. Neither can make a loan wrong, only slower.
    pub fn loan_from(
        &self,
        record: usize,
        pid: u32,
        len: usize,
        start: Option<u32>,
        near: Option<BlobRef>,
    ) -> Result<BlobRef, BlobError> {
        let largest = self.largest_block();
        let len32 = u32::try_from(len).ok().filter(|&l| u64::from(l) <= largest);
        let Some(len32) = len32 else {
            return Err(BlobError::TooLarge { len, largest });
        };
        let owner = owner_of(record);
        for (index, class) in self.classes.iter().flatten().enumerate() {
            if class.geometry.block_size < u64::from(len32) {
                continue;
            }
            let count = class.geometry.block_count;
            let start = match (near.filter(|near| usize::from(near.class) == index), start) {
                (Some(near), _) => near.block % count,
                (None, Some(start)) => start % count,
                (None, None) => class.descriptor.next_hint.fetch_add(1, Relaxed) % count,
            };
            for i in 0..count {
                let block = (start + i) % count;
                let header = &class.headers[block as usize];
                let word = header.tag.load(Acquire);
                let tag = Tag::unpack(word);
                if tag.state != block_state::FREE {
                    continue;
                }
                let generation = tag.generation.wrapping_add(1);
                let loaned = Tag {
                    state: block_state::LOANED,
                    owner,
                    generation,
                };
                if header
                    .tag
                    .compare_exchange(word, loaned.pack(), AcqRel, Relaxed)
                    .is_ok()
                {
                    header.owner_pid.store(pid, Relaxed);
                    header.length.store(len32, Relaxed);
                    return Ok(BlobRef {
                        class: index as u8,
                        block,
                        generation,
                        len: len32,
                    });
                }
            }
        }
        Err(BlobError::PoolExhausted { len })
    }

    /// Hands a loaned block to the ring: names `channel` and `position` in its header, then
    /// CASes `LOANED → QUEUED` (release). False when the loan was reclaimed meanwhile
    /// (the caller publishes a SKIP marker instead, PROTOCOL.md §13.4).
    #[must_use]
    pub fn queue(&self, record: usize, r: &BlobRef, channel: u32, position: u64) -> bool {
        let Some(header) = self.header_of(r) else {
            return false;
        };
        let from = Tag {
            state: block_state::LOANED,
            owner: owner_of(record),
            generation: r.generation,
        };
        // A loan reclaimed meanwhile: leave the header alone (it may be another owner's now).
        if header.tag.load(Relaxed) != from.pack() {
            return false;
        }
        header.channel_id.store(channel, Relaxed);
        header.position.store(position, Relaxed);
        header.length.store(r.len, Relaxed);
        let to = Tag {
            state: block_state::QUEUED,
            owner: 0,
            generation: r.generation,
        };
        header
            .tag
            .compare_exchange(from.pack(), to.pack(), Release, Relaxed)
            .is_ok()
    }

    /// Whether `r` names a block of this pool and fits it (the checks before any access of a
    /// reference read from a slot).
    #[must_use]
    pub fn is_valid_ref(&self, r: &BlobRef) -> bool {
        self.class(usize::from(r.class)).is_some_and(|class| {
            r.block < class.geometry.block_count && u64::from(r.len) <= class.geometry.block_size
        })
    }

    /// Takes the block a message at `position` of `channel` refers to, for peer record
    /// `record`: CAS `(QUEUED, 0, generation) → (HELD, record + 1, generation)`, then a check
    /// that the header names this message (else the block is put back). False (take nothing)
    /// for a bad, stale or forged reference.
    #[must_use]
    pub fn take(&self, record: usize, pid: u32, r: &BlobRef, channel: u32, position: u64) -> bool {
        if !self.is_valid_ref(r) {
            return false;
        }
        let Some(header) = self.header_of(r) else {
            return false;
        };
        let queued = Tag {
            state: block_state::QUEUED,
            owner: 0,
            generation: r.generation,
        };
        let held = Tag {
            state: block_state::HELD,
            owner: owner_of(record),
            generation: r.generation,
        };
        // CAS first (one coherence transaction on a line the producer wrote last, not a load
        // and then an upgrade); the generation already names one use of the block.
        if header
            .tag
            .compare_exchange(queued.pack(), held.pack(), AcqRel, Relaxed)
            .is_err()
        {
            return false;
        }
        // A reference replayed at another position names a block queued for some other
        // message: give it back untouched.
        if header.channel_id.load(Relaxed) != channel || header.position.load(Relaxed) != position {
            let _ = header
                .tag
                .compare_exchange(held.pack(), queued.pack(), AcqRel, Relaxed);
            return false;
        }
        header.owner_pid.store(pid, Relaxed);
        true
    }

    /// Gives a block back from `state` (`LOANED`: an abandoned loan; `HELD`: a received block
    /// released) by peer record `record`. False when it was reclaimed meanwhile (the caller
    /// reports *revoked*). The caller wakes waiting producers ([`Self::free_words`]).
    #[must_use]
    pub fn free(&self, record: usize, r: &BlobRef, state: u8) -> bool {
        let Some(header) = self.header_of(r) else {
            return false;
        };
        let from = Tag {
            state,
            owner: owner_of(record),
            generation: r.generation,
        };
        header
            .tag
            .compare_exchange(
                from.pack(),
                Tag::free(r.generation).pack(),
                Release,
                Relaxed,
            )
            .is_ok()
    }

    /// The words of the block `r` names: `block_size / 8` of them (the whole block, of which
    /// the message is the first `r.len` bytes). `None` for a reference outside the pool.
    #[cfg(not(loom))]
    #[must_use]
    pub fn words(&self, r: &BlobRef) -> Option<BlobWords<'a>> {
        let class = self.class(usize::from(r.class))?;
        if r.block >= class.geometry.block_count {
            return None;
        }
        let per_block = (class.geometry.block_size / 8) as usize;
        let start = r.block as usize * per_block;
        class.data.get(start..start + per_block)
    }

    /// Where the header of the block `r` names says its message is: `(channel_id, position)`.
    #[must_use]
    pub fn queued_at(&self, r: &BlobRef) -> Option<(u32, u64)> {
        let header = self.header_of(r)?;
        Some((
            header.channel_id.load(Relaxed),
            header.position.load(Relaxed),
        ))
    }

    /// Frees a block straight from `QUEUED` (a copying receive that has copied it, while its
    /// claim on the slot keeps the block queued). False when it was reclaimed meanwhile.
    #[must_use]
    pub fn free_queued(&self, r: &BlobRef) -> bool {
        let Some(header) = self.header_of(r) else {
            return false;
        };
        let queued = Tag {
            state: block_state::QUEUED,
            owner: 0,
            generation: r.generation,
        };
        header
            .tag
            .compare_exchange(
                queued.pack(),
                Tag::free(r.generation).pack(),
                Release,
                Relaxed,
            )
            .is_ok()
    }

    /// The current tag of the block `r` names.
    #[must_use]
    pub fn tag(&self, r: &BlobRef) -> Option<Tag> {
        Some(Tag::unpack(self.header_of(r)?.tag.load(Acquire)))
    }

    /// Frees every `LOANED` or `HELD` block owned by peer record `record` (rule 1 of
    /// PROTOCOL.md §13.6): run while holding a dead peer's record, before freeing it.
    /// Returns how many blocks were freed.
    pub fn reclaim_owner(&self, record: usize) -> u32 {
        let owner = owner_of(record);
        self.reclaim_where(|_, tag| {
            (tag.state == block_state::LOANED || tag.state == block_state::HELD)
                && tag.owner == owner
        })
    }

    /// Frees every `LOANED` or `HELD` block whose owner record is free (rule 2 of
    /// PROTOCOL.md §13.6): `record_pid(i)` loads record `i`'s `pid` with acquire (`None`
    /// when `i` is outside the table: such an owner is a scribble, and its block is freed).
    /// The tag is loaded before the record.
    pub fn reclaim_leaked(&self, record_pid: impl Fn(usize) -> Option<u32>) -> u32 {
        self.reclaim_where(|_, tag| {
            (tag.state == block_state::LOANED || tag.state == block_state::HELD)
                && tag.owner != 0
                && record_pid(tag.owner as usize - 1).is_none_or(|pid| pid == 0)
        })
    }

    /// Frees every `QUEUED` block for which `gone(channel, position)` says the message that
    /// referred to it has been freed from its ring (rule 3 of PROTOCOL.md §13.6).
    pub fn reclaim_queued(&self, gone: impl Fn(u32, u64) -> bool) -> u32 {
        self.reclaim_where(|header, tag| {
            tag.state == block_state::QUEUED
                && gone(
                    header.channel_id.load(Relaxed),
                    header.position.load(Relaxed),
                )
        })
    }

    /// One pass over every block: frees those `reclaimable` says so of, each by a CAS from the
    /// tag read (loaded with acquire before `reclaimable` looks at anything else).
    fn reclaim_where(&self, reclaimable: impl Fn(&AtomicBlockHeader, Tag) -> bool) -> u32 {
        let mut freed = 0;
        for class in self.classes.iter().flatten() {
            for header in class.headers {
                let word = header.tag.load(Acquire);
                let tag = Tag::unpack(word);
                if tag.state == block_state::FREE || !reclaimable(header, tag) {
                    continue;
                }
                let free = Tag::free(tag.generation).pack();
                if header
                    .tag
                    .compare_exchange(word, free, AcqRel, Relaxed)
                    .is_ok()
                {
                    freed += 1;
                }
            }
        }
        freed
    }

    /// Counts of each class's blocks by state (one relaxed pass; a snapshot for display).
    pub fn stats(&self) -> heapless::Vec<ClassStats, MAX_BLOB_CLASSES> {
        let mut out = heapless::Vec::new();
        for class in self.classes.iter().flatten() {
            let mut stats = ClassStats {
                block_size: class.geometry.block_size,
                block_count: class.geometry.block_count,
                ..ClassStats::default()
            };
            for header in class.headers {
                match Tag::unpack(header.tag.load(Relaxed)).state {
                    block_state::FREE => stats.free += 1,
                    block_state::LOANED => stats.loaned += 1,
                    block_state::QUEUED => stats.queued += 1,
                    block_state::HELD => stats.held += 1,
                    _ => stats.invalid += 1,
                }
            }
            // At most MAX_BLOB_CLASSES classes.
            let _ = out.push(stats);
        }
        out
    }

    /// Calls `f(class, block, tag, owner_pid)` for every block that is not free (for tools).
    pub fn for_each_used(&self, mut f: impl FnMut(usize, u32, Tag, u32)) {
        for (index, class) in self.classes.iter().flatten().enumerate() {
            for (block, header) in class.headers.iter().enumerate() {
                let tag = Tag::unpack(header.tag.load(Relaxed));
                if tag.state != block_state::FREE {
                    f(index, block as u32, tag, header.owner_pid.load(Relaxed));
                }
            }
        }
    }
}

#[cfg(loom)]
mod loom_model {
    use super::*;

    impl AtomicPoolHeader {
        /// An all-zero value, for loom models (which cannot view a byte buffer).
        #[must_use]
        pub fn new_zeroed() -> Self {
            Self {
                pool_magic: AtomicU64::new(0),
                class_count: AtomicU32::new(0),
                reserved_12: AtomicU32::new(0),
                pool_len: AtomicU64::new(0),
                free_seq: AtomicU32::new(0),
                free_waiters: AtomicU32::new(0),
                reserved: core::array::from_fn(|_| AtomicU64::new(0)),
            }
        }
    }

    impl AtomicBlobClass {
        /// An all-zero value, for loom models.
        #[must_use]
        pub fn new_zeroed() -> Self {
            Self {
                block_size: AtomicU64::new(0),
                block_count: AtomicU32::new(0),
                reserved_12: AtomicU32::new(0),
                headers_offset: AtomicU64::new(0),
                data_offset: AtomicU64::new(0),
                next_hint: AtomicU32::new(0),
                reserved_36: AtomicU32::new(0),
                reserved: core::array::from_fn(|_| AtomicU64::new(0)),
            }
        }
    }

    impl AtomicBlockHeader {
        /// An all-zero value (a free block of generation 0), for loom models.
        #[must_use]
        pub fn new_zeroed() -> Self {
            Self {
                tag: AtomicU64::new(0),
                channel_id: AtomicU32::new(0),
                length: AtomicU32::new(0),
                position: AtomicU64::new(0),
                owner_pid: AtomicU32::new(0),
                reserved_28: AtomicU32::new(0),
                reserved: core::array::from_fn(|_| AtomicU64::new(0)),
            }
        }
    }

    /// The memory of a modelled pool of one class: `headers.len()` blocks of 64 bytes (the
    /// model has tags only; no block bytes).
    struct ModelMemory<'a> {
        header: &'a AtomicPoolHeader,
        class: &'a [AtomicBlobClass],
        headers: &'a [AtomicBlockHeader],
    }

    impl<'a> PoolMemory<'a> for ModelMemory<'a> {
        fn pool_header(&self, _offset: u64) -> Option<&'a AtomicPoolHeader> {
            Some(self.header)
        }
        fn class_descriptors(&self, _offset: u64) -> Option<&'a [AtomicBlobClass]> {
            Some(self.class)
        }
        fn block_headers(&self, _offset: u64, count: u32) -> Option<&'a [AtomicBlockHeader]> {
            self.headers.get(..count as usize)
        }
    }

    impl<'a> BlobPool<'a> {
        /// A pool over loom atomics: one class of `headers.len()` blocks of 64 bytes.
        #[must_use]
        pub fn model(
            header: &'a AtomicPoolHeader,
            class: &'a [AtomicBlobClass],
            headers: &'a [AtomicBlockHeader],
        ) -> Self {
            let mut classes = [ClassGeometry::default(); MAX_BLOB_CLASSES];
            classes[0] = ClassGeometry {
                block_size: 64,
                block_count: headers.len() as u32,
                headers_offset: 0,
                data_offset: 0,
            };
            let geometry = PoolGeometry {
                offset: 0,
                len: 0,
                classes,
                class_count: 1,
            };
            let memory = ModelMemory {
                header,
                class,
                headers,
            };
            Self::new(&memory, geometry).expect("a model pool")
        }
    }
}
