//! Payload bytes in shared memory, moved as 64-bit relaxed atomic words.
//!
//! A slot's payload is 120 `AtomicU64`s. Copies in and out go word by word (little-endian), so
//! a peer writing the same slot at the same time can garble the bytes but never causes
//! undefined behaviour. [`Payload`] and [`PayloadMut`] are the in-place views handed out by the
//! zero-copy receive and send paths, in the spirit of `vm-memory`'s `VolatileSlice`: they offer
//! copies and word accesses, never a `&[u8]`.

use crate::layout::{MSG_INLINE, PAYLOAD_WORDS};
use crate::sync::{AtomicU64, Ordering::Relaxed};

/// A slot's payload area: 120 words, 960 bytes.
pub type Words = [AtomicU64; PAYLOAD_WORDS];

/// Stores `src` at the start of `words`, zero-padding the last word; nothing is stored when
/// `src` is longer than 960 bytes. Public for code that lays out its own rings over DMXP's
/// slots (the benchmark's bare ring).
///
/// The copy is a loop of relaxed 8-byte atomic stores over whole words with no bounds check or
/// branch inside it (the range of words is sliced once, up front), and the partial last word
/// is assembled with a fixed number of loads. Atomics are what make a racing peer harmless
/// (PROTOCOL.md §1.3); the loop is as cheap as atomics allow: one load and one store per word.
///
/// ```
/// use dmxp_nostd::payload::{load, store, Words};
///
/// let words: Words = core::array::from_fn(|_| Default::default());
/// store(&words, b"nine byte");
/// let mut out = [0u8; 9];
/// load(&words, &mut out);
/// assert_eq!(&out, b"nine byte");
/// assert_eq!(words[1].load(core::sync::atomic::Ordering::Relaxed), u64::from(b'e'));
/// ```
#[inline(always)]
pub fn store(words: &Words, src: &[u8]) {
    let (whole, rest) = src.as_chunks::<8>();
    let Some(targets) = words.get(..whole.len()) else {
        return;
    };
    store_words(targets, whole);
    if !rest.is_empty() {
        if let Some(word) = words.get(whole.len()) {
            word.store(tail_word(src, rest.len()), Relaxed);
        }
    }
}

/// Stores `src` into `targets` (of the same length), four words per round: the loop's
/// counting and branching is paid once per 32 bytes, not once per word.
#[inline(always)]
pub(crate) fn store_words(targets: &[AtomicU64], src: &[[u8; 8]]) {
    let (target_quads, target_rest) = targets.as_chunks::<4>();
    let (src_quads, src_rest) = src.as_chunks::<4>();
    for (quad, bytes) in target_quads.iter().zip(src_quads) {
        for (word, chunk) in quad.iter().zip(bytes) {
            word.store(u64::from_le_bytes(*chunk), Relaxed);
        }
    }
    for (word, chunk) in target_rest.iter().zip(src_rest) {
        word.store(u64::from_le_bytes(*chunk), Relaxed);
    }
}

/// Loads `sources` into `dst` (of the same length), four words per round.
#[inline(always)]
pub(crate) fn load_words(sources: &[AtomicU64], dst: &mut [[u8; 8]]) {
    let (source_quads, source_rest) = sources.as_chunks::<4>();
    let (dst_quads, dst_rest) = dst.as_chunks_mut::<4>();
    for (quad, bytes) in source_quads.iter().zip(dst_quads) {
        for (word, chunk) in quad.iter().zip(bytes) {
            *chunk = word.load(Relaxed).to_le_bytes();
        }
    }
    for (word, chunk) in source_rest.iter().zip(dst_rest) {
        *chunk = word.load(Relaxed).to_le_bytes();
    }
}

/// The last `rest` (1..=7) bytes of `src` as a little-endian word, zero-extended.
#[inline(always)]
fn tail_word(src: &[u8], rest: usize) -> u64 {
    let len = src.len();
    if len >= 8 {
        // The last 8 bytes overlap the previous word: shift its bytes out.
        let last: [u8; 8] = src[len - 8..].try_into().unwrap_or([0; 8]);
        u64::from_le_bytes(last) >> (8 * (8 - rest))
    } else {
        small_word(src)
    }
}

/// Up to 7 bytes as a little-endian word: a 4-, 2- and 1-byte piece, each present or not.
#[inline(always)]
fn small_word(src: &[u8]) -> u64 {
    let mut word = 0u64;
    let mut at = 0;
    if src.len() & 4 != 0 {
        word = u64::from(u32::from_le_bytes([src[0], src[1], src[2], src[3]]));
        at = 4;
    }
    if src.len() & 2 != 0 {
        word |= u64::from(u16::from_le_bytes([src[at], src[at + 1]])) << (8 * at);
        at += 2;
    }
    if src.len() & 1 != 0 {
        word |= u64::from(src[at]) << (8 * at);
    }
    word
}

/// Fills `dst` from the start of `words`, with the same loop as [`store`] the other way;
/// nothing is read when `dst` is longer than 960 bytes.
#[inline(always)]
pub fn load(words: &Words, dst: &mut [u8]) {
    let (whole, rest) = dst.as_chunks_mut::<8>();
    let Some(sources) = words.get(..whole.len()) else {
        return;
    };
    load_words(sources, whole);
    let rest_len = rest.len();
    if rest_len != 0 {
        if let Some(word) = words.get(whole.len()) {
            let bytes = word.load(Relaxed).to_le_bytes();
            for (byte, value) in rest.iter_mut().zip(bytes) {
                *byte = value;
            }
        }
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

impl<'a> Payload<'a> {
    /// The payload's 64-bit little-endian words, in order (`len.div_ceil(8)` of them; bytes
    /// past `len` in the last word are whatever the sender left, normally zero). The fast way
    /// to read a whole payload in place: one relaxed load per word and no bounds check per
    /// word, where a loop over [`Self::word`] checks each index.
    ///
    /// ```
    /// use dmxp_nostd::{AlignedBlock, Region, Segment, SendMeta};
    /// use zerocopy::IntoBytes;
    ///
    /// let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(1 << 20)];
    /// let segment = Segment::format(Region::new(memory.as_mut_bytes())?, 1)?;
    /// let channel = segment.create_channel(0, 4, 1)?;
    /// channel.try_send(&[1, 0, 0, 0, 0, 0, 0, 0, 2], &SendMeta::default())?;
    /// let guard = channel.try_recv_in_place()?;
    /// let words: Vec<u64> = guard.payload().words().collect();
    /// assert_eq!(words, [1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn words(&self) -> impl ExactSizeIterator<Item = u64> + 'a {
        let count = self.len.div_ceil(8).min(PAYLOAD_WORDS);
        self.words[..count].iter().map(|word| word.load(Relaxed))
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
    #[inline]
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
        if offset.is_multiple_of(8) {
            // The common case (a header at 0, a body after it): whole words straight from
            // `src`, as a copying send stores them, then a partial last word merged.
            let index = offset / 8;
            let (whole, tail) = src.as_chunks::<8>();
            if let Some(targets) = self.words.get(index..index + whole.len()) {
                store_words(targets, whole);
            }
            if !tail.is_empty() {
                self.merge(index + whole.len(), 0, tail);
            }
            return true;
        }
        self.write_unaligned(offset, src);
        true
    }

    /// [`Self::write_at`] at an offset inside a word (checked by the caller): a partial first
    /// word, then whole words with no per-word branch, then a partial last word. Out of line,
    /// so that the aligned case stays small.
    #[inline(never)]
    fn write_unaligned(&mut self, offset: usize, src: &[u8]) {
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
