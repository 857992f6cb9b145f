//! Payload bytes in shared memory, moved as 64-bit relaxed atomic words.
//!
//! A slot's payload is 120 `AtomicU64`s. Copies in and out go word by word (little-endian), so
//! a peer writing the same slot at the same time can garble the bytes but never causes
//! undefined behaviour. [`Payload`] and [`PayloadMut`] are the in-place views handed out by the
//! zero-copy receive and send paths, in the spirit of `vm-memory`'s `VolatileSlice`: they offer
//! copies and word accesses, never a `&[u8]`.

use crate::layout::{MSG_INLINE, PAYLOAD_WORDS};
use crate::sync::{AtomicU64, Ordering::Relaxed};

pub(crate) type Words = [AtomicU64; PAYLOAD_WORDS];

/// Stores `src` at the start of `words`, zero-padding the last word.
pub(crate) fn store(words: &Words, src: &[u8]) {
    let mut chunks = src.chunks_exact(8);
    for (word, chunk) in words.iter().zip(&mut chunks) {
        let mut le = [0u8; 8];
        le.copy_from_slice(chunk);
        word.store(u64::from_le_bytes(le), Relaxed);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut le = [0u8; 8];
        le[..rest.len()].copy_from_slice(rest);
        if let Some(word) = words.get(src.len() / 8) {
            word.store(u64::from_le_bytes(le), Relaxed);
        }
    }
}

/// Fills `dst` from the start of `words` (at most 960 bytes are read).
pub(crate) fn load(words: &Words, dst: &mut [u8]) {
    let last_word = (dst.len() / 8).min(PAYLOAD_WORDS - 1);
    let mut chunks = dst.chunks_exact_mut(8);
    for (word, chunk) in words.iter().zip(&mut chunks) {
        chunk.copy_from_slice(&word.load(Relaxed).to_le_bytes());
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let len = rest.len();
        rest.copy_from_slice(&words[last_word].load(Relaxed).to_le_bytes()[..len]);
    }
}

/// A read-only, in-place view of a received payload.
#[derive(Clone, Copy)]
pub struct Payload<'a> {
    words: &'a Words,
    len: usize,
}

impl<'a> Payload<'a> {
    /// `len` must be at most `MSG_INLINE` (the caller validated `payload_len`).
    pub(crate) fn new(words: &'a Words, len: usize) -> Self {
        Self {
            words,
            len: len.min(MSG_INLINE),
        }
    }

    /// Payload length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty payload.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the payload into `dst`; returns the bytes copied (`min(len, dst.len())`).
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let n = self.len.min(dst.len());
        load(self.words, &mut dst[..n]);
        n
    }

    /// Byte `index`, or `None` past the end.
    #[must_use]
    pub fn get(&self, index: usize) -> Option<u8> {
        if index >= self.len {
            return None;
        }
        let word = self.words[index / 8].load(Relaxed);
        Some(word.to_le_bytes()[index % 8])
    }

    /// The 64-bit little-endian word `index` (bytes `8*index..8*index+8`; bytes past `len` are
    /// whatever the sender left, normally zero), or `None` past the payload.
    #[must_use]
    pub fn word(&self, index: usize) -> Option<u64> {
        if index >= self.len.div_ceil(8) {
            return None;
        }
        Some(self.words[index].load(Relaxed))
    }
}

impl core::fmt::Debug for Payload<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Payload").field("len", &self.len).finish()
    }
}

/// A writable, in-place view of a loaned slot's payload area (960 bytes).
///
/// Its `Debug` shows the capacity, never the bytes.
pub struct PayloadMut<'a> {
    words: &'a Words,
}

impl core::fmt::Debug for PayloadMut<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PayloadMut")
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

impl<'a> PayloadMut<'a> {
    pub(crate) fn new(words: &'a Words) -> Self {
        Self { words }
    }

    /// Size of the payload area: 960 bytes.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        MSG_INLINE
    }

    /// Writes `src` at byte `offset`. Returns `false` (writing nothing) if it would run past
    /// the 960-byte area.
    #[must_use = "`false` means nothing was written"]
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> bool {
        if offset
            .checked_add(src.len())
            .is_none_or(|end| end > MSG_INLINE)
        {
            return false;
        }
        if src.is_empty() {
            return true;
        }
        // A partial first word, then whole words with no per-word branch, then a partial
        // last word.
        let (mut index, within) = (offset / 8, offset % 8);
        let mut src = src;
        if within != 0 {
            let (head, rest) = src.split_at((8 - within).min(src.len()));
            self.merge(index, within, head);
            (index, src) = (index + 1, rest);
        }
        let mut chunks = src.chunks_exact(8);
        for (word, chunk) in self.words[index..].iter().zip(&mut chunks) {
            let mut le = [0u8; 8];
            le.copy_from_slice(chunk);
            word.store(u64::from_le_bytes(le), Relaxed);
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            self.merge(index + src.len() / 8, 0, tail);
        }
        true
    }

    /// Stores `bytes` at byte `within` of word `index`, keeping its other bytes. The loan owns
    /// the slot, so this read-modify-write races with nobody honest.
    fn merge(&self, index: usize, within: usize, bytes: &[u8]) {
        let word = &self.words[index];
        let mut le = word.load(Relaxed).to_le_bytes();
        le[within..within + bytes.len()].copy_from_slice(bytes);
        word.store(u64::from_le_bytes(le), Relaxed);
    }

    /// Stores the 64-bit little-endian word `index` (0..120). Returns `false` past the area.
    #[must_use = "`false` means nothing was written"]
    pub fn set_word(&mut self, index: usize, value: u64) -> bool {
        match self.words.get(index) {
            Some(word) => {
                word.store(value, Relaxed);
                true
            }
            None => false,
        }
    }

    /// Reads back byte `index` of the area.
    #[must_use]
    pub fn get(&self, index: usize) -> Option<u8> {
        let word = self.words.get(index / 8)?.load(Relaxed);
        Some(word.to_le_bytes()[index % 8])
    }
}
