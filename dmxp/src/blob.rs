//! Zero-copy blobs (PROTOCOL.md §13): a producer loans a block of the segment's blob pool,
//! writes it in place and commits it; the ring carries a 16-byte reference; the consumer
//! reads the block in place and releases it. Passing 4 MiB costs what passing 32 bytes does.
//!
//! # Soundness: why there is no `&[u8]` over a block
//!
//! A block lives in memory that other processes map. While this process reads it, a buggy or
//! hostile peer, or a peer that was judged dead and woke up (§13.6), can write it. A `&[u8]`
//! over bytes that change under it is undefined behaviour in Rust, so blocks are read and
//! written only through atomic 8-byte words ([`BlobBytes`], [`BlobBytesMut`]): copies in and
//! out (`write_at`, `read_at`, `copy_to`), single words, and chunked writes. A racing writer
//! can garble the bytes, never the program. [`BlobMessage::to_vec`] is the safe way to get a
//! slice: one copy into private memory.

use std::cell::Cell;
use std::time::{Duration, Instant};

use dmxp_nostd::blob::BlobRef;
use dmxp_nostd::layout::MSG_INLINE;
use dmxp_nostd::{BlobError, MessageMeta, RecvError, WaitStrategy};

use crate::consumer::Consumer;
use crate::error::{Error, ErrorKind, Result};
use crate::producer::Producer;
use crate::wait::FutexWait;

pub use dmxp_nostd::blob::ClassStats;
pub use dmxp_nostd::channel::{BlobBytes, BlobBytesMut};
pub use dmxp_nostd::BlobPoolSpec;

thread_local! {
    /// The block this thread received last: its next loan looks there first, so that a
    /// thread that receives, releases and replies reuses a block still in its cache
    /// ([`dmxp_nostd::Channel::try_loan_blob_near`]). Only a place to start looking: a
    /// reference from another segment or one still held costs one look.
    static LAST_RECEIVED: Cell<Option<BlobRef>> = const { Cell::new(None) };
}

/// [`Channel::try_loan_blob`](dmxp_nostd::Channel::try_loan_blob) starting at the block this
/// thread received last.
fn loan_near<'p>(
    channel: &'p crate::handle::FutexChannel<'p>,
    len: usize,
) -> std::result::Result<CoreLoan<'p>, BlobError> {
    channel.try_loan_blob_near(len, LAST_RECEIVED.get())
}

type CoreLoan<'p> = dmxp_nostd::channel::BlobLoan<'p, 'p, FutexWait>;
type CoreReceived<'c> = dmxp_nostd::channel::BlobReceived<'c, 'c, FutexWait>;

impl Producer {
    /// Loans a block of at least `len` bytes from the segment's blob pool, to be written in
    /// place and sent with [`BlobLoan::commit`]. Does not wait: an exhausted pool fails with
    /// [`ErrorKind::PoolExhausted`] (after one pass reclaiming blocks that dead or departed
    /// peers left, §13.6), a length over the largest block with [`ErrorKind::TooLarge`]
    /// (nothing tried), a channel without blobs with [`ErrorKind::NoBlobPool`].
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-loan-blob", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// let builder = dmxp::ChannelBuilder::new()
    ///     .with_file(&path)
    ///     .with_segment_size(32 << 20)
    ///     .with_blob_pool(16 << 20);
    /// let producer = builder.build_producer()?;
    /// let consumer = builder.build_consumer()?;
    ///
    /// let frame = vec![7u8; 1 << 20];
    /// let mut loan = producer.loan_blob(frame.len())?;
    /// assert!(loan.write_at(0, &frame));
    /// loan.commit()?;
    ///
    /// let message = consumer.receive_blob()?.expect("sent above");
    /// assert_eq!(message.len(), 1 << 20);
    /// assert_eq!(message.to_vec(), frame);
    /// message.release()?;
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn loan_blob(&self, len: usize) -> Result<BlobLoan<'_>> {
        match loan_near(self.channel(), len) {
            Ok(inner) => Ok(self.wrap_loan(inner)),
            Err(BlobError::PoolExhausted { .. }) if self.cell().reclaim_blobs() != 0 => {
                loan_near(self.channel(), len)
                    .map(|inner| self.wrap_loan(inner))
                    .map_err(|e| Error::from_blob(e, self.channel_id()))
            }
            Err(e) => Err(Error::from_blob(e, self.channel_id())),
        }
    }

    /// [`Self::loan_blob`], waiting up to `timeout` for a consumer to release a block when
    /// the pool is exhausted (a futex wait on the pool's `free_seq`, PROTOCOL.md §13.3, in
    /// slices that also look for blocks the dead left). Fails with [`ErrorKind::Timeout`].
    pub fn loan_blob_timeout(&self, len: usize, timeout: Duration) -> Result<BlobLoan<'_>> {
        let deadline = Instant::now() + timeout;
        let mut reclaimed_at = Instant::now();
        loop {
            match loan_near(self.channel(), len) {
                Ok(inner) => return Ok(self.wrap_loan(inner)),
                Err(BlobError::PoolExhausted { .. }) => {}
                Err(e) => return Err(Error::from_blob(e, self.channel_id())),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::from_blob(BlobError::TimedOut, self.channel_id()));
            }
            // Blocks of dead peers are looked for at most every 10 ms of waiting.
            if now >= reclaimed_at {
                reclaimed_at = now + Duration::from_millis(10);
                if self.cell().reclaim_blobs() != 0 {
                    continue;
                }
            }
            self.cell().check_size()?;
            self.wait_for_block(len, deadline.min(reclaimed_at));
        }
    }

    /// Sleeps until a block is freed or `until` (registered on the pool's wait word, then the
    /// loan is checked again before sleeping, as PROTOCOL.md §7.2 does for slots).
    fn wait_for_block(&self, len: usize, until: Instant) {
        let Some(pool) = self.channel().blob_pool() else {
            return;
        };
        let (word, waiters) = pool.free_words();
        waiters.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let seen = word.load(std::sync::atomic::Ordering::SeqCst);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let free = pool
            .stats()
            .iter()
            .any(|class| class.block_size as usize >= len && class.free != 0);
        if !free {
            FutexWait::until(until).wait(word, seen);
        }
        // Never below 0: a forged count cannot make this wrap.
        let _ = waiters.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| n.checked_sub(1),
        );
    }

    fn wrap_loan<'p>(&'p self, inner: CoreLoan<'p>) -> BlobLoan<'p> {
        BlobLoan {
            inner,
            producer: self,
        }
    }

    /// The largest blob a loan can hold (the pool's largest block), or 0 on a channel
    /// without blobs.
    #[must_use]
    pub fn max_blob_size(&self) -> u64 {
        self.channel()
            .blob_pool()
            .map_or(0, dmxp_nostd::BlobPool::largest_block)
    }

    /// The pool's blocks by class and state (empty on a channel without blobs).
    #[must_use]
    pub fn blob_stats(&self) -> Vec<ClassStats> {
        pool_stats(self.channel())
    }

    /// Frees the blocks that dead or departed peers left (PROTOCOL.md §13.6); returns how
    /// many. Loans run it themselves when the pool is exhausted.
    pub fn reclaim_blobs(&self) -> u32 {
        self.cell().reclaim_blobs()
    }
}

fn pool_stats(channel: &crate::handle::FutexChannel<'_>) -> Vec<ClassStats> {
    channel
        .blob_pool()
        .map_or_else(Vec::new, |pool| pool.stats().to_vec())
}

/// A loaned blob-pool block, written in place and sent by [`Self::commit`]. Dropped unsent,
/// the block goes back to the pool.
pub struct BlobLoan<'p> {
    inner: CoreLoan<'p>,
    producer: &'p Producer,
}

impl std::fmt::Debug for BlobLoan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobLoan")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl BlobLoan<'_> {
    /// Bytes loaned.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// True for a loan of no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// The block's bytes, written with atomic words (see the module's soundness note).
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// # let path = std::env::temp_dir().join(format!("dmxp-doc-{}-blob-bytes", std::process::id()));
    /// # struct Rm(std::path::PathBuf);
    /// # impl Drop for Rm { fn drop(&mut self) { let _ = std::fs::remove_file(&self.0); } }
    /// # let _rm = Rm(path.clone());
    /// # let builder = dmxp::ChannelBuilder::new().with_file(&path).with_segment_size(8 << 20).with_blob_pool(1 << 20);
    /// # let producer = builder.build_producer()?;
    /// # let consumer = builder.build_consumer()?;
    /// let mut loan = producer.loan_blob(4096)?;
    /// // A header, then rows from an iterator of chunks.
    /// assert!(loan.bytes().set_word(0, 0xFEED));
    /// let rows = [[1u8; 1000], [2u8; 1000], [3u8; 1000], [4u8; 1000]];
    /// let body: Vec<u8> = std::iter::repeat(0).take(8).chain(rows.iter().flatten().copied()).collect();
    /// assert_eq!(loan.bytes().write_chunks(body.chunks(512)), 4008);
    /// assert!(loan.bytes().set_word(0, 0xFEED));
    /// loan.commit()?;
    /// let message = consumer.receive_blob()?.unwrap();
    /// assert_eq!(message.bytes().unwrap().word(0), Some(0xFEED));
    /// assert_eq!(message.bytes().unwrap().get(8 + 3999), Some(4));
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn bytes(&mut self) -> BlobBytesMut<'_> {
        self.inner.bytes()
    }

    /// Copies `src` into the block at `offset`; false (nothing written) when it runs past the
    /// loan.
    #[must_use = "`false` means nothing was written"]
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> bool {
        self.inner.bytes().write_at(offset, src)
    }

    /// Sends the whole loan, waiting while the ring is full; returns the `message_id`.
    pub fn commit(self) -> Result<u64> {
        let len = self.len();
        self.commit_with(len, 0, 0)
    }

    /// Sends the first `len` bytes with an application message type and flags (`0xFF00`
    /// only), waiting while the ring is full.
    pub fn commit_with(mut self, len: usize, message_type: u32, flags: u16) -> Result<u64> {
        let producer = self.producer;
        let meta = producer.meta(message_type, flags);
        producer
            .sending(None, 1, || self.inner.try_commit(len, &meta))
            .map_err(|e| producer.waiting_error(e))
    }

    /// Sends the first `len` bytes without waiting. A full ring is an error of kind
    /// [`ErrorKind::Full`] that leaves the loan in place for a retry.
    pub fn try_commit(&mut self, len: usize) -> Result<u64> {
        let meta = self.producer.meta(0, 0);
        self.inner
            .try_commit(len, &meta)
            .map_err(|e| self.producer.error(e))
    }
}

impl Consumer {
    /// Receives the next message in place, without waiting: a blob stays in the pool and is
    /// read through the returned [`BlobMessage`] until it is released (or dropped); an
    /// ordinary message arrives copied, in the same type. `None` when the channel is empty.
    /// Lost, corrupt and revoked messages (a bad reference among them) are counted and
    /// skipped, as by [`Self::receive`].
    ///
    /// Holding a blob does not hold the ring: its slot is free once this returns, and a
    /// consumer may hold several blobs at once. It does hold a pool block; release it when
    /// done.
    pub fn receive_blob(&self) -> Result<Option<BlobMessage<'_>>> {
        let channel = self.channel();
        let mut inline = None;
        let received = self.skipping(|| match channel.try_recv_blob() {
            Err(RecvError::NotABlob { .. } | RecvError::NotRegistered) => {
                self.inline_message().map(|message| {
                    inline = Some(message);
                    None
                })
            }
            other => other.map(Some),
        })?;
        Ok(match (received, inline) {
            (Some(Some(held)), _) => Some(BlobMessage::held(held)),
            (_, Some((meta, bytes))) => Some(BlobMessage::inline(meta, bytes)),
            _ => None,
        })
    }

    /// [`Self::receive_blob`], waiting up to `timeout` for a message.
    pub fn receive_blob_timeout(&self, timeout: Duration) -> Result<Option<BlobMessage<'_>>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(message) = self.receive_blob()? {
                return Ok(Some(message));
            }
            if self.repair_if_stuck() {
                continue;
            }
            if self.wait(Some(deadline)).is_err() {
                self.cell().check_size()?;
                return Ok(None);
            }
        }
    }

    /// The pool's blocks by class and state (empty on a channel without blobs).
    #[must_use]
    pub fn blob_stats(&self) -> Vec<ClassStats> {
        pool_stats(self.channel())
    }

    /// Frees the blocks that dead or departed peers left (PROTOCOL.md §13.6); returns how
    /// many.
    pub fn reclaim_blobs(&self) -> u32 {
        self.cell().reclaim_blobs()
    }

    /// One ordinary (copying) receive, for the inline messages of a blob channel.
    fn inline_message(&self) -> std::result::Result<(MessageMeta, Vec<u8>), RecvError> {
        let channel = self.channel();
        let mut buf = vec![0u8; channel.max_message_size().max(MSG_INLINE)];
        loop {
            match channel.try_recv(&mut buf) {
                Ok(received) => {
                    buf.truncate(received.len);
                    return Ok((received.meta, buf));
                }
                // A blob after all (an unregistered consumer copies blobs).
                Err(RecvError::BufferTooSmall { needed, .. }) => buf.resize(needed, 0),
                Err(e) => return Err(e),
            }
        }
    }
}

enum Content<'c> {
    Held(CoreReceived<'c>),
    Inline(Vec<u8>),
}

/// A received message read in place: a blob-pool block (released by [`Self::release`] or
/// on drop), or an ordinary message copied. The same accessors serve both.
pub struct BlobMessage<'c> {
    meta: MessageMeta,
    content: Content<'c>,
}

impl std::fmt::Debug for BlobMessage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobMessage")
            .field("meta", &self.meta)
            .field("in_place", &self.is_in_place())
            .finish()
    }
}

impl<'c> BlobMessage<'c> {
    fn held(inner: CoreReceived<'c>) -> Self {
        LAST_RECEIVED.set(Some(inner.blob()));
        Self {
            meta: *inner.meta(),
            content: Content::Held(inner),
        }
    }

    fn inline(meta: MessageMeta, bytes: Vec<u8>) -> Self {
        Self {
            meta,
            content: Content::Inline(bytes),
        }
    }

    /// The message's metadata (`payload_len` is its length; `flags` has `BLOB` for a blob).
    #[must_use]
    pub fn meta(&self) -> &MessageMeta {
        &self.meta
    }

    /// Length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        match &self.content {
            Content::Held(held) => held.len(),
            Content::Inline(bytes) => bytes.len(),
        }
    }

    /// True for an empty message.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the bytes are read in place from a pool block (a blob), false for an
    /// ordinary message copied out of the ring.
    #[must_use]
    pub fn is_in_place(&self) -> bool {
        matches!(self.content, Content::Held(_))
    }

    /// The block's bytes (a blob), read with atomic words; `None` for an ordinary message
    /// (use [`Self::read_at`] or [`Self::to_vec`], which serve both).
    #[must_use]
    pub fn bytes(&self) -> Option<BlobBytes<'c>> {
        match &self.content {
            Content::Held(held) => Some(held.bytes()),
            Content::Inline(_) => None,
        }
    }

    /// Copies bytes `offset .. offset + dst.len()` into `dst`; false (nothing copied) past
    /// the end.
    #[must_use = "`false` means nothing was copied"]
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> bool {
        match &self.content {
            Content::Held(held) => held.bytes().read_at(offset, dst),
            Content::Inline(bytes) => match offset
                .checked_add(dst.len())
                .and_then(|end| bytes.get(offset..end))
            {
                Some(src) => {
                    dst.copy_from_slice(src);
                    true
                }
                None => false,
            },
        }
    }

    /// The whole message copied into a `Vec`.
    #[must_use]
    pub fn to_vec(&self) -> Vec<u8> {
        match &self.content {
            Content::Held(held) => {
                let mut out = vec![0u8; held.len()];
                held.bytes().copy_to(&mut out);
                out
            }
            Content::Inline(bytes) => bytes.clone(),
        }
    }

    /// Gives the block back to the pool (nothing to do for an ordinary message). An error of
    /// kind [`ErrorKind::Revoked`] when the block was reclaimed while held (this consumer was
    /// judged dead, PROTOCOL.md §13.6): what was read may have been overwritten, and must not
    /// be acted on.
    pub fn release(self) -> Result<()> {
        let channel = self.meta.channel_id;
        match self.content {
            Content::Held(held) => held.release().map_err(|e| {
                Error::new(
                    ErrorKind::Revoked {
                        message_id: self.meta.message_id,
                    },
                    format!("channel {channel}: blob {}: {e}", self.meta.message_id),
                )
            }),
            Content::Inline(_) => Ok(()),
        }
    }
}

#[cfg(all(test, feature = "file"))]
mod tests {
    use super::*;

    #[test]
    fn a_thread_loans_the_block_it_received_last() {
        let path = std::env::temp_dir().join(format!("dmxp-unit-{}-warm", std::process::id()));
        let builder = crate::ChannelBuilder::new()
            .with_file(&path)
            .with_segment_size(8 << 20)
            .with_blob_classes(BlobPoolSpec::new().with_class(4096, 8));
        let producer = builder.build_producer().unwrap();
        let consumer = builder.build_consumer().unwrap();
        std::fs::remove_file(&path).unwrap();

        // The producer's own hint walks on: blocks 0, 1, 2, ... in turn.
        for _ in 0..3 {
            producer.loan_blob(64).unwrap().commit().unwrap();
        }
        let first = consumer.receive_blob().unwrap().unwrap();
        let received = LAST_RECEIVED.get().expect("recorded by the receive");
        assert_eq!(received.block, 0);
        first.release().unwrap();
        // Blocks 3.. are free too, yet the loan takes the one this thread just read.
        let loan = producer.loan_blob(100).unwrap();
        assert_eq!(loan.inner.blob().block, received.block);
        // A block still held is passed over for the next free one after it.
        let held = consumer.receive_blob().unwrap().unwrap();
        let other = producer.loan_blob(100).unwrap();
        assert_ne!(other.inner.blob().block, LAST_RECEIVED.get().unwrap().block);
        drop((held, other, loan));
    }
}
