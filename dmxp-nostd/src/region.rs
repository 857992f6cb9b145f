//! The one unsafe boundary: a region of memory that other processes may write at any time.
//!
//! [`Region`] is a base pointer and a length. Everything above it obtains typed views through
//! [`Region::view`] and [`Region::view_slice`], which check bounds and alignment and hand out
//! shared references only to types made entirely of atomics ([`SharedView`]). No plain `&[u8]`
//! or `&T` of plain data over peer-writable memory is ever created.

use crate::blob::{AtomicBlobClass, AtomicBlockHeader, AtomicPoolHeader};
use crate::error::Error;
use crate::layout::{
    AtomicChannelEntry, AtomicHeaderFields, AtomicPeerRecord, AtomicSlot, SEGMENT_ALIGN,
};
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ptr::NonNull;
use core::sync::atomic::AtomicU64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Types that may be viewed in place in shared memory.
///
/// # Safety
/// Every byte of the type must lie inside an `UnsafeCell` (in practice: the type is built only
/// from atomics), so a shared reference to it stays sound while another process writes it, and
/// every bit pattern must be valid (`FromBytes`).
pub unsafe trait SharedView: FromBytes + KnownLayout + Sync + Sized {}

// SAFETY: all fields are atomics or arrays of atomics (see `layout`), and they derive FromBytes.
unsafe impl SharedView for AtomicHeaderFields {}
// SAFETY: as above.
unsafe impl SharedView for AtomicChannelEntry {}
// SAFETY: as above.
unsafe impl SharedView for AtomicSlot {}
// SAFETY: as above.
unsafe impl SharedView for AtomicPeerRecord {}
// SAFETY: as above (blob.rs: the pool descriptor, class descriptors and block headers).
unsafe impl SharedView for AtomicPoolHeader {}
// SAFETY: as above.
unsafe impl SharedView for AtomicBlobClass {}
// SAFETY: as above.
unsafe impl SharedView for AtomicBlockHeader {}
// SAFETY: an atomic word is an UnsafeCell, and every bit pattern is a valid u64 (zerocopy's
// FromBytes). Blob-pool blocks are viewed as slices of these.
unsafe impl SharedView for AtomicU64 {}

/// Memory that holds a segment for as long as the value lives: a mapping from a backend, an
/// owned buffer. Backends implement it so the std facade can be generic over them.
pub trait SegmentMemory {
    /// The whole segment as a region borrowed from `self`.
    fn region(&self) -> Region<'_>;

    /// The size the memory behind the region has **now**, for memory another process could
    /// shrink under the mapping (a POSIX shm object, a file: `fstat`). `None` when it cannot
    /// shrink (a sealed memfd, ordinary memory) or the size cannot be read. The facade calls
    /// it on slow paths, before sleeping, so that a truncated segment becomes a typed error
    /// instead of a `SIGBUS` wherever a handle is waiting rather than touching memory.
    fn current_len(&self) -> Option<u64> {
        None
    }
}

/// A 128-byte aligned block. A slice of these is a correctly aligned buffer for a segment that
/// lives in ordinary memory (a static, a `Box`, an allocator's arena):
/// `Region::new(blocks.as_mut_bytes())`.
///
/// Its `Debug` does not show the bytes: a block is part of a segment other threads may be
/// using.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Clone, Copy)]
#[repr(C, align(128))]
pub struct AlignedBlock(pub [u8; SEGMENT_ALIGN]);

impl core::fmt::Debug for AlignedBlock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AlignedBlock").finish_non_exhaustive()
    }
}

impl AlignedBlock {
    /// A block of zero bytes: `vec![AlignedBlock::ZERO; n]` is zeroed, aligned memory for an
    /// unformatted segment.
    pub const ZERO: Self = Self([0; SEGMENT_ALIGN]);

    /// Blocks needed to hold `bytes` bytes.
    #[must_use]
    pub const fn count_for(bytes: usize) -> usize {
        bytes.div_ceil(SEGMENT_ALIGN)
    }
}

/// Memory shared with other processes: a base pointer with write provenance and a length.
#[derive(Clone, Copy, Debug)]
pub struct Region<'a> {
    base: NonNull<u8>,
    len: usize,
    _memory: PhantomData<&'a [UnsafeCell<u8>]>,
}

// SAFETY: a Region only hands out views of `SharedView` types, which are `Sync` and tolerate
// concurrent access; the pointer itself is just an address.
unsafe impl Send for Region<'_> {}
// SAFETY: as above.
unsafe impl Sync for Region<'_> {}

impl<'a> Region<'a> {
    /// A region over memory this process owns, borrowed mutably for `'a` so nothing else in
    /// this process touches it except through the region. The buffer must be aligned to 128
    /// bytes (see [`AlignedBlock`]).
    pub fn new(buf: &'a mut [u8]) -> Result<Self, Error> {
        // SAFETY: `buf` is valid for reads and writes of `buf.len()` bytes for `'a`, the
        // pointer comes from `as_mut_ptr` (write provenance), and the exclusive borrow keeps
        // every other access in this process away for `'a`.
        unsafe { Self::from_raw_parts(buf.as_mut_ptr(), buf.len()) }
    }

    /// A region over memory mapped from elsewhere (mmap of shm, memfd, a file, a hypervisor
    /// page).
    ///
    /// # Safety
    /// `base` must be valid for reads and writes of `len` bytes for all of `'a`, derived from a
    /// pointer with write provenance (mmap's return value, `as_mut_ptr`), and this process
    /// must access the memory during `'a` only through atomics (for example through other
    /// `Region`s), never through plain references.
    pub unsafe fn from_raw_parts(base: *mut u8, len: usize) -> Result<Self, Error> {
        let base = NonNull::new(base).ok_or(Error::RegionMisaligned {
            addr: 0,
            align: SEGMENT_ALIGN,
        })?;
        if !(base.as_ptr() as usize).is_multiple_of(SEGMENT_ALIGN) {
            return Err(Error::RegionMisaligned {
                addr: base.as_ptr() as usize,
                align: SEGMENT_ALIGN,
            });
        }
        Ok(Self {
            base,
            len,
            _memory: PhantomData,
        })
    }

    /// Length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the region has no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Base address (for diagnostics and for tests of position independence).
    #[must_use]
    pub fn base_addr(&self) -> usize {
        self.base.as_ptr() as usize
    }

    /// A view of one `T` at `offset`, checked to lie inside the region and to be aligned.
    #[must_use]
    pub fn view<T: SharedView>(&self, offset: usize) -> Option<&'a T> {
        self.view_slice::<T>(offset, 1).map(|s| &s[0])
    }

    /// A view of `count` consecutive `T`s starting at `offset`, checked like [`Self::view`].
    #[must_use]
    pub fn view_slice<T: SharedView>(&self, offset: usize, count: usize) -> Option<&'a [T]> {
        let bytes = size_of::<T>().checked_mul(count)?;
        let end = offset.checked_add(bytes)?;
        if end > self.len || !offset.is_multiple_of(align_of::<T>()) {
            return None;
        }
        // SAFETY: `offset + bytes <= len`, so the range lies inside the region, which is valid
        // for `'a` (constructor contract). The base is 128-aligned and `offset` is a multiple of
        // `align_of::<T>()` (at most 128), so the pointer is aligned. `T: SharedView` means
        // every bit pattern is valid and every byte is inside an UnsafeCell, so a shared
        // reference tolerates concurrent writes from other processes.
        unsafe {
            let ptr = self.base.as_ptr().add(offset).cast::<T>();
            Some(core::slice::from_raw_parts(ptr, count))
        }
    }
}
