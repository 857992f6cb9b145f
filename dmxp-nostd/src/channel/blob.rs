//! Blobs on a channel (PROTOCOL.md §13.4, §13.5): a loan of a pool block written in place and
//! sent as a 16-byte reference, and the in-place receive that takes the block before it frees
//! the ring slot.

use super::{Channel, Content, Received, RETRY_LIMIT};
use crate::blob::{block_state, BlobPool, BlobRef, BLOB_REF_LEN};
use crate::error::{BlobError, RecvError, SendError};
use crate::layout::{message_flags, AtomicSlot, MessageMeta};
use crate::payload::{load_words, store_words};
use crate::sync::{
    fence, AtomicU64,
    Ordering::{Relaxed, SeqCst},
};
use crate::wait::WaitStrategy;

use super::SendMeta;

/// What a receive's claim accepts at the head (the `buffer` argument of `claim_recv`): an
/// in-place slot receive refuses blobs, a blob receive refuses everything else.
pub(super) const IN_PLACE: Option<usize> = Some(usize::MAX);
pub(super) const BLOB_ONLY: Option<usize> = Some(usize::MAX - 1);

/// A published slot's reference, as the consumer peeks at it before claiming: the length is
/// the high half of payload word 1.
pub(super) fn peeked_len(slot: &AtomicSlot) -> usize {
    (slot.payload[1].load(Relaxed) >> 32) as usize
}

/// The reference a claimed slot carries.
pub(super) fn read_ref(slot: &AtomicSlot) -> BlobRef {
    BlobRef::decode([slot.payload[0].load(Relaxed), slot.payload[1].load(Relaxed)])
}

/// Bytes of a block that this process reads: `len` bytes over atomic words (never a `&[u8]`,
/// since peers can write the block).
///
/// ```
/// # use dmxp_nostd::blob::BlobPoolSpec;
/// # use dmxp_nostd::{AlignedBlock, ChannelOptions, FormatOptions, PeerRole, Region, Segment, SendMeta};
/// # use zerocopy::IntoBytes;
/// # let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(1 << 20)];
/// # let options = FormatOptions::default().with_blob_pool(BlobPoolSpec::new().with_class(4096, 4));
/// # let segment = Segment::format_with(Region::new(memory.as_mut_bytes())?, 1, options)?;
/// # let (channel, _) = segment.open_or_create_channel_with(0, 8, 1, ChannelOptions::default().with_blobs())?;
/// # let producer = segment.register(0, PeerRole::Producer, 1, 0, 0)?;
/// # let consumer = segment.register(0, PeerRole::Consumer, 1, 0, 0)?;
/// # let tx = channel.clone().with_peer(&producer);
/// # let rx = channel.clone().with_peer(&consumer);
/// # let mut loan = tx.try_loan_blob(3000)?;
/// # assert!(loan.bytes().write_at(2990, b"0123456789"));
/// # loan.try_commit(3000, &SendMeta::default())?;
/// let received = rx.try_recv_blob()?;
/// let bytes = received.bytes();
/// let mut tail = [0u8; 10];
/// assert!(bytes.read_at(2990, &mut tail));
/// assert_eq!(&tail, b"0123456789");
/// assert_eq!(bytes.get(2999), Some(b'9'));
/// assert_eq!(bytes.get(3000), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy)]
pub struct BlobBytes<'a> {
    words: &'a [AtomicU64],
    len: usize,
}

impl core::fmt::Debug for BlobBytes<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlobBytes").field("len", &self.len).finish()
    }
}

impl<'a> BlobBytes<'a> {
    /// `len` bytes of `words` (clamped to the words there are).
    fn new(words: &'a [AtomicU64], len: usize) -> Self {
        Self {
            words,
            len: len.min(words.len() * 8),
        }
    }

    /// Bytes in the view.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a view of no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies bytes `offset .. offset + dst.len()` into `dst`; false (nothing copied) when
    /// that range runs past the view.
    #[must_use = "`false` means nothing was copied"]
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> bool {
        let Some(end) = offset.checked_add(dst.len()).filter(|&e| e <= self.len) else {
            return false;
        };
        if dst.is_empty() {
            return true;
        }
        let (first, last) = (offset / 8, (end - 1) / 8);
        if offset.is_multiple_of(8) {
            let (whole, rest) = dst.as_chunks_mut::<8>();
            let n = whole.len();
            load_words(&self.words[first..first + n], whole);
            if !rest.is_empty() {
                let word = self.words[first + n].load(Relaxed).to_le_bytes();
                rest.copy_from_slice(&word[..rest.len()]);
            }
            return true;
        }
        let mut at = 0;
        for index in first..=last {
            let word = self.words[index].load(Relaxed).to_le_bytes();
            let from = if index == first { offset % 8 } else { 0 };
            let take = (8 - from).min(dst.len() - at);
            dst[at..at + take].copy_from_slice(&word[from..from + take]);
            at += take;
        }
        true
    }

    /// Copies the first `min(len, dst.len())` bytes into `dst`; returns how many.
    pub fn copy_to(&self, dst: &mut [u8]) -> usize {
        let n = self.len.min(dst.len());
        let copied = self.read_at(0, &mut dst[..n]);
        debug_assert!(copied);
        n
    }

    /// Byte `index`, or `None` past the end.
    #[must_use]
    pub fn get(&self, index: usize) -> Option<u8> {
        if index >= self.len {
            return None;
        }
        Some(self.words[index / 8].load(Relaxed).to_le_bytes()[index % 8])
    }

    /// Little-endian word `index` (bytes `8 × index ..`), or `None` past the last word that
    /// holds a byte of the view.
    #[must_use]
    pub fn word(&self, index: usize) -> Option<u64> {
        if index >= self.len.div_ceil(8) {
            return None;
        }
        Some(self.words[index].load(Relaxed))
    }

    /// Every word that holds a byte of the view, in order (the last one as stored: bytes past
    /// the length are zero when its producer wrote it through [`BlobBytesMut`]). The fast way
    /// to scan a block: one load per word, no index checks.
    pub fn words(&self) -> impl ExactSizeIterator<Item = u64> + 'a {
        self.words[..self.len.div_ceil(8)]
            .iter()
            .map(|word| word.load(Relaxed))
    }
}

/// Bytes of a loaned block that this process writes: relaxed atomic word stores, so a racing
/// peer can garble them but never cause undefined behaviour.
#[derive(Clone, Copy)]
pub struct BlobBytesMut<'a> {
    words: &'a [AtomicU64],
    len: usize,
}

impl core::fmt::Debug for BlobBytesMut<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlobBytesMut")
            .field("len", &self.len)
            .finish()
    }
}

impl<'a> BlobBytesMut<'a> {
    fn new(words: &'a [AtomicU64], len: usize) -> Self {
        Self {
            words,
            len: len.min(words.len() * 8),
        }
    }

    /// Bytes the view can hold.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a view of no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The same bytes, for reading back.
    #[must_use]
    pub fn as_read(&self) -> BlobBytes<'a> {
        BlobBytes::new(self.words, self.len)
    }

    /// Writes `src` at `offset`; false (nothing written) when it runs past the view. Bytes of
    /// a partial word around it are kept.
    #[must_use = "`false` means nothing was written"]
    pub fn write_at(&self, offset: usize, src: &[u8]) -> bool {
        let Some(end) = offset.checked_add(src.len()).filter(|&e| e <= self.len) else {
            return false;
        };
        if src.is_empty() {
            return true;
        }
        if offset.is_multiple_of(8) {
            let first = offset / 8;
            let (whole, rest) = src.as_chunks::<8>();
            store_words(&self.words[first..first + whole.len()], whole);
            if !rest.is_empty() {
                self.merge(first + whole.len(), 0, rest);
            }
            return true;
        }
        let (first, last) = (offset / 8, (end - 1) / 8);
        let mut at = 0;
        for index in first..=last {
            let from = if index == first { offset % 8 } else { 0 };
            let take = (8 - from).min(src.len() - at);
            if from == 0 && take == 8 {
                let chunk: [u8; 8] = src[at..at + 8].try_into().unwrap_or([0; 8]);
                self.words[index].store(u64::from_le_bytes(chunk), Relaxed);
            } else {
                self.merge(index, from, &src[at..at + take]);
            }
            at += take;
        }
        true
    }

    /// Stores `bytes` into word `index` from byte `within`, keeping its other bytes (only the
    /// owner writes a loaned block, so the load and store do not race with an honest peer).
    fn merge(&self, index: usize, within: usize, bytes: &[u8]) {
        let mut word = self.words[index].load(Relaxed).to_le_bytes();
        word[within..within + bytes.len()].copy_from_slice(bytes);
        self.words[index].store(u64::from_le_bytes(word), Relaxed);
    }

    /// Writes `chunks` one after another from byte 0, stopping at the end of the view;
    /// returns the bytes written.
    pub fn write_chunks<'c>(&self, chunks: impl IntoIterator<Item = &'c [u8]>) -> usize {
        let mut at = 0;
        for chunk in chunks {
            let n = chunk.len().min(self.len - at);
            let written = self.write_at(at, &chunk[..n]);
            debug_assert!(written);
            at += n;
            if at == self.len {
                break;
            }
        }
        at
    }

    /// Stores little-endian word `index`; false past the view's last word.
    #[must_use = "`false` means nothing was written"]
    pub fn set_word(&self, index: usize, value: u64) -> bool {
        if index >= self.len.div_ceil(8) {
            return false;
        }
        self.words[index].store(value, Relaxed);
        true
    }

    /// Zero-pads the last word after byte `len` (so no earlier use's bytes follow a message
    /// that ends mid-word), as a slot's send does.
    fn pad_after(&self, len: usize) {
        if !len.is_multiple_of(8) {
            let index = len / 8;
            let mask = (1u64 << ((len % 8) * 8)) - 1;
            let kept = self.words[index].load(Relaxed) & mask;
            self.words[index].store(kept, Relaxed);
        }
    }
}

impl<'a, W: WaitStrategy> Channel<'a, W> {
    /// The same channel carrying blobs through `pool` (set by `Segment` for `BLOBS` channels).
    pub(crate) fn with_blob_pool(mut self, pool: BlobPool<'a>) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The segment's pool when this channel carries blobs.
    #[must_use]
    pub fn blob_pool(&self) -> Option<&BlobPool<'a>> {
        self.pool.as_ref()
    }

    fn blob_channel(&self) -> Result<&BlobPool<'a>, BlobError> {
        self.pool.as_ref().ok_or(BlobError::NotABlobChannel {
            channel: self.geometry.id,
        })
    }

    /// Wakes producers waiting for a free block after one was freed.
    pub(crate) fn notify_block_freed(&self) {
        if let Some(pool) = &self.pool {
            let (word, waiters) = pool.free_words();
            fence(SeqCst);
            if waiters.load(Relaxed) != 0 {
                self.wake(word);
            }
        }
    }

    /// Loans a block of at least `len` bytes from the pool, to be written in place and sent
    /// with [`BlobLoan::try_commit`]. Needs a registered producer ([`Self::with_peer`]): the
    /// block's owner is its record, so that a crash mid-loan can be reclaimed.
    ///
    /// Errors: [`BlobError::NotABlobChannel`], [`BlobError::NotRegistered`],
    /// [`BlobError::TooLarge`] (no class fits; nothing tried), [`BlobError::PoolExhausted`].
    ///
    /// ```
    /// use dmxp_nostd::blob::BlobPoolSpec;
    /// use dmxp_nostd::{AlignedBlock, ChannelOptions, FormatOptions, PeerRole, Region, Segment, SendMeta};
    /// use zerocopy::IntoBytes;
    ///
    /// let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(1 << 20)];
    /// let options = FormatOptions::default().with_blob_pool(BlobPoolSpec::new().with_class(64 << 10, 4));
    /// let segment = Segment::format_with(Region::new(memory.as_mut_bytes())?, 1, options)?;
    /// let (channel, _) =
    ///     segment.open_or_create_channel_with(0, 8, 1, ChannelOptions::default().with_blobs())?;
    /// let producer = segment.register(0, PeerRole::Producer, 1, 0, 0)?;
    /// let consumer = segment.register(0, PeerRole::Consumer, 1, 0, 0)?;
    /// let tx = channel.clone().with_peer(&producer);
    /// let rx = channel.clone().with_peer(&consumer);
    ///
    /// let mut loan = tx.try_loan_blob(50_000)?;
    /// assert!(loan.bytes().write_at(0, b"frame"));
    /// assert!(loan.bytes().set_word(6_249, u64::MAX)); // the last word
    /// let id = loan.try_commit(50_000, &SendMeta::default())?;
    ///
    /// let received = rx.try_recv_blob()?;
    /// assert_eq!(received.meta().message_id, id);
    /// assert_eq!(received.len(), 50_000);
    /// assert_eq!(received.bytes().word(6_249), Some(u64::MAX));
    /// received.release()?;
    /// assert_eq!(segment.blob_pool().unwrap().stats()[0].free, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_loan_blob(&self, len: usize) -> Result<BlobLoan<'_, 'a, W>, BlobError> {
        self.try_loan_blob_near(len, None)
    }

    /// [`Self::try_loan_blob`] that starts the scan of `near`'s class at the block `near`
    /// names: pass the block this thread last received, and a thread that receives, releases
    /// and then sends (a reply, a pipeline stage) loans the block whose header and words are
    /// still in its cache instead of lines another core wrote last. `near` only moves where the scan starts (PROTOCOL.md §13.3 lets it start
    /// anywhere), so a stale or foreign reference costs one look at a block, never a wrong
    /// loan.
    ///
    /// ```
    /// use dmxp_nostd::blob::BlobPoolSpec;
    /// use dmxp_nostd::{AlignedBlock, ChannelOptions, FormatOptions, PeerRole, Region, Segment, SendMeta};
    /// use zerocopy::IntoBytes;
    ///
    /// let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(1 << 20)];
    /// let options = FormatOptions::default().with_blob_pool(BlobPoolSpec::new().with_class(4096, 8));
    /// let segment = Segment::format_with(Region::new(memory.as_mut_bytes())?, 1, options)?;
    /// let (channel, _) =
    ///     segment.open_or_create_channel_with(0, 8, 1, ChannelOptions::default().with_blobs())?;
    /// let producer = segment.register(0, PeerRole::Producer, 1, 0, 0)?;
    /// let consumer = segment.register(0, PeerRole::Consumer, 1, 0, 0)?;
    /// let tx = channel.clone().with_peer(&producer);
    /// let rx = channel.clone().with_peer(&consumer);
    ///
    /// tx.try_loan_blob(100)?.try_commit(100, &SendMeta::default())?;
    /// let received = rx.try_recv_blob()?;
    /// let block = received.blob();
    /// received.release()?;
    /// // The block just read is loaned again, whatever this handle loaned before.
    /// let loan = tx.try_loan_blob_near(200, Some(block))?;
    /// assert_eq!(loan.blob().block, block.block);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_loan_blob_near(
        &self,
        len: usize,
        near: Option<BlobRef>,
    ) -> Result<BlobLoan<'_, 'a, W>, BlobError> {
        let pool = self.blob_channel()?;
        let (record, pid) = self.send_record.ok_or(BlobError::NotRegistered)?;
        // Other classes start after this handle's last loan: usually free again by now, and a
        // block other handles start elsewhere from.
        let hint = self.loan_hint.load(Relaxed);
        let blob = pool.loan_from(record, pid, len, Some(hint), near)?;
        self.loan_hint.store(blob.block.wrapping_add(1), Relaxed);
        let words = pool.words(&blob).ok_or(BlobError::PoolExhausted { len })?;
        Ok(BlobLoan {
            channel: self,
            blob,
            words,
            done: false,
        })
    }

    /// Sends a loaned block: claims a position, names it in the block header, hands the
    /// block to the ring (`LOANED → QUEUED`) and publishes the reference (PROTOCOL.md §13.4).
    fn send_blob(&self, blob: &BlobRef, meta: &SendMeta) -> Result<u64, SendError> {
        if meta.flags & message_flags::PROTOCOL_MASK != 0 {
            return Err(SendError::ReservedFlags { flags: meta.flags });
        }
        let (Some(pool), Some((record, _))) = (&self.pool, self.send_record) else {
            return Err(SendError::Revoked { message_id: 0 });
        };
        let (position, _) = self.claim_send(1)?;
        if !pool.queue(record, blob, self.geometry.id, position) {
            // The loan was reclaimed (this producer was judged dead): give the position up.
            let _ = self.skip_marker(position);
            self.end_send_intent(position);
            self.notify_consumers();
            return Err(SendError::Revoked {
                message_id: position,
            });
        }
        let [first, second] = blob.encode();
        let mut reference = [0u8; BLOB_REF_LEN];
        reference[..8].copy_from_slice(&first.to_le_bytes());
        reference[8..].copy_from_slice(&second.to_le_bytes());
        let published =
            self.write_slot(position, &reference, meta, meta.flags | message_flags::BLOB);
        self.end_send_intent(position);
        if !published {
            // Tombstoned meanwhile: the QUEUED block is reclaimed once the position is freed.
            return Err(SendError::Revoked {
                message_id: position,
            });
        }
        self.notify_consumers();
        Ok(position)
    }

    /// Receives the next message if it is a blob, in place: the block is taken for this
    /// consumer (`QUEUED → HELD`) before the ring slot is freed, so the ring moves on while
    /// the block is read, and several received blocks can be held at once. Needs a registered
    /// consumer ([`Self::with_peer`]).
    ///
    /// Errors as [`Self::try_recv`], and [`RecvError::NotABlob`] (nothing consumed) when the
    /// next message is an inline one (receive it with `try_recv`), [`RecvError::Corrupt`]
    /// for a reference that is bad, stale or forged (consumed and dropped), and
    /// [`RecvError::NotRegistered`].
    pub fn try_recv_blob(&self) -> Result<BlobReceived<'_, 'a, W>, RecvError> {
        let Some((record, pid)) = self.recv_record.filter(|_| self.pool.is_some()) else {
            return Err(RecvError::NotRegistered);
        };
        for _ in 0..RETRY_LIMIT {
            let (position, _) = self.claim_recv(1, BLOB_ONLY)?;
            let slot = self.slot(position);
            match self.read_content(slot, position) {
                Content::Blob(mut meta, blob) => {
                    let Some(pool) = &self.pool else {
                        return Err(RecvError::NotRegistered);
                    };
                    let words = pool.words(&blob);
                    let taken = words.is_some()
                        && pool.take(record, pid, &blob, self.geometry.id, position);
                    let Some(words) = words.filter(|_| taken) else {
                        self.finish_recv_slot(slot, position)?;
                        return Err(RecvError::Corrupt {
                            message_id: position,
                            payload_len: meta.payload_len,
                        });
                    };
                    if let Err(revoked) = self.finish_recv_slot(slot, position) {
                        if pool.free(record, &blob, block_state::HELD) {
                            self.notify_block_freed();
                        }
                        return Err(revoked);
                    }
                    meta.payload_len = blob.len;
                    return Ok(BlobReceived {
                        channel: self,
                        blob,
                        bytes: BlobBytes::new(words, blob.len as usize),
                        meta,
                        record,
                        released: false,
                    });
                }
                Content::Skip => self.finish_recv_slot(slot, position)?,
                Content::Lost(message_id) => {
                    self.finish_recv_slot(slot, position)?;
                    return Err(RecvError::Lost { message_id });
                }
                Content::Corrupt(message_id, payload_len) => {
                    self.finish_recv_slot(slot, position)?;
                    return Err(RecvError::Corrupt {
                        message_id,
                        payload_len,
                    });
                }
                // Only a peer rewriting a published slot under the claim gets here.
                Content::Message(meta, _) => {
                    self.finish_recv_slot(slot, position)?;
                    return Err(RecvError::Corrupt {
                        message_id: position,
                        payload_len: meta.payload_len,
                    });
                }
            }
        }
        Err(RecvError::Busy)
    }

    /// The copying receive of a claimed blob message (PROTOCOL.md §13.5): checks that the
    /// block is queued for this position, copies it, frees it (`QUEUED → FREE`), then the
    /// slot. No peer record is needed: the claim on the slot keeps the block queued.
    pub(super) fn recv_blob_copy(
        &self,
        slot: &AtomicSlot,
        position: u64,
        mut meta: MessageMeta,
        blob: BlobRef,
        buf: &mut [u8],
    ) -> Result<Received, RecvError> {
        let corrupt = RecvError::Corrupt {
            message_id: position,
            payload_len: meta.payload_len,
        };
        let queued = self.pool.as_ref().and_then(|pool| {
            let tag = pool.tag(&blob)?;
            let ok = pool.is_valid_ref(&blob)
                && tag.state == block_state::QUEUED
                && tag.owner == 0
                && tag.generation == blob.generation
                && pool.queued_at(&blob) == Some((self.geometry.id, position));
            ok.then_some(pool)
        });
        let Some(pool) = queued else {
            self.finish_recv_slot(slot, position)?;
            return Err(corrupt);
        };
        let len = blob.len as usize;
        let (Some(words), Some(dst)) = (pool.words(&blob), buf.get_mut(..len)) else {
            // The peek saw a length that fit; only a rewritten slot gets here.
            if pool.free_queued(&blob) {
                self.notify_block_freed();
            }
            self.finish_recv_slot(slot, position)?;
            return Err(corrupt);
        };
        BlobBytes::new(words, len).copy_to(dst);
        if !pool.free_queued(&blob) {
            // Reclaimed under us: our claim was revoked, the copy may be another message's.
            self.finish_recv_slot(slot, position)?;
            return Err(RecvError::Revoked {
                message_id: position,
            });
        }
        self.notify_block_freed();
        self.finish_recv_slot(slot, position)?;
        meta.payload_len = blob.len;
        Ok(Received { meta, len })
    }
}

/// A loaned block (PROTOCOL.md §13.3): written in place through [`Self::bytes`], sent with
/// [`Self::try_commit`]. Dropped unsent, it is given back to the pool.
pub struct BlobLoan<'c, 'a, W: WaitStrategy> {
    channel: &'c Channel<'a, W>,
    blob: BlobRef,
    words: &'a [AtomicU64],
    done: bool,
}

impl<W: WaitStrategy> core::fmt::Debug for BlobLoan<'_, '_, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlobLoan")
            .field("blob", &self.blob)
            .finish_non_exhaustive()
    }
}

impl<W: WaitStrategy> BlobLoan<'_, '_, W> {
    /// Bytes loaned (the length asked for).
    #[must_use]
    pub fn len(&self) -> usize {
        self.blob.len as usize
    }

    /// True for a loan of no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.blob.len == 0
    }

    /// The reference the message will carry.
    #[must_use]
    pub fn blob(&self) -> BlobRef {
        self.blob
    }

    /// The loaned bytes, to write in place.
    #[must_use]
    pub fn bytes(&mut self) -> BlobBytesMut<'_> {
        BlobBytesMut::new(self.words, self.blob.len as usize)
    }

    /// Sends the first `len` bytes (at most the loan's length) as one message.
    ///
    /// On `Full` or `Busy` the loan stays this producer's: retry, or drop it to give the
    /// block back. On `Revoked` the block was reclaimed (this producer was judged dead) and
    /// the loan is spent.
    pub fn try_commit(&mut self, len: usize, meta: &SendMeta) -> Result<u64, SendError> {
        if self.done {
            return Err(SendError::Revoked { message_id: 0 });
        }
        let Some(len32) = u32::try_from(len).ok().filter(|&l| l <= self.blob.len) else {
            return Err(SendError::TooLarge {
                len,
                limit: self.blob.len as usize,
            });
        };
        BlobBytesMut::new(self.words, self.blob.len as usize).pad_after(len);
        let blob = BlobRef {
            len: len32,
            ..self.blob
        };
        let sent = self.channel.send_blob(&blob, meta);
        match sent {
            Err(SendError::Full | SendError::Busy | SendError::ReservedFlags { .. }) => {}
            _ => self.done = true,
        }
        sent
    }
}

impl<W: WaitStrategy> Drop for BlobLoan<'_, '_, W> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let (Some(pool), Some((record, _))) = (&self.channel.pool, self.channel.send_record) {
            if pool.free(record, &self.blob, block_state::LOANED) {
                self.channel.notify_block_freed();
            }
        }
    }
}

/// A received block, read in place (PROTOCOL.md §13.5). The ring slot is already free; the
/// block stays this consumer's until [`Self::release`] (or drop) gives it back.
pub struct BlobReceived<'c, 'a, W: WaitStrategy> {
    channel: &'c Channel<'a, W>,
    blob: BlobRef,
    bytes: BlobBytes<'a>,
    meta: MessageMeta,
    record: usize,
    released: bool,
}

impl<W: WaitStrategy> core::fmt::Debug for BlobReceived<'_, '_, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlobReceived")
            .field("blob", &self.blob)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl<'a, W: WaitStrategy> BlobReceived<'_, 'a, W> {
    /// The message's metadata; `payload_len` is the blob's length and `flags` has `BLOB`.
    #[must_use]
    pub fn meta(&self) -> &MessageMeta {
        &self.meta
    }

    /// The blob's length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for an empty blob.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The reference the message carried.
    #[must_use]
    pub fn blob(&self) -> BlobRef {
        self.blob
    }

    /// The bytes, read in place.
    #[must_use]
    pub fn bytes(&self) -> BlobBytes<'a> {
        self.bytes
    }

    /// Gives the block back to the pool. [`BlobError::Revoked`] when it was reclaimed while
    /// held (this consumer was judged dead): what was read may have been overwritten.
    pub fn release(mut self) -> Result<(), BlobError> {
        self.released = true;
        self.give_back()
    }

    fn give_back(&self) -> Result<(), BlobError> {
        let pool = self.channel.pool.as_ref().ok_or(BlobError::Revoked)?;
        if pool.free(self.record, &self.blob, block_state::HELD) {
            self.channel.notify_block_freed();
            Ok(())
        } else {
            Err(BlobError::Revoked)
        }
    }
}

impl<W: WaitStrategy> Drop for BlobReceived<'_, '_, W> {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.give_back();
        }
    }
}
