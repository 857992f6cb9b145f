//! Runs: messages longer than one slot (PROTOCOL.md §12).
//!
//! A message of `L > 960` bytes takes `k = ceil(L / 960)` consecutive positions, claimed by
//! one CAS on `tail` once all `k` slots are free. Every slot carries the message's metadata
//! with `payload_len = L`, the run's length `k` (`run_slots`) and its own place (`run_index`);
//! the first slot is flagged `RUN`, the others `RUN_CONT`. The producer publishes the
//! continuations first and the first slot last, so a consumer that sees the first slot
//! published (acquire) sees the whole run published, and claims all `k` positions with one CAS
//! on `head`: exactly one consumer gets the message, whole.
//!
//! Everything a consumer reads is checked against the geometry cached at open (the
//! channel's `max_message_size`, its capacity) and against the `k` slots it claimed: a peer
//! that rewrites a run can make that message be dropped as corrupt, never make a copy read
//! outside the run's slots or write past the caller's buffer. A run's first slot claimed alone
//! (its checks failed) is reported corrupt; continuations left at the head without their start
//! are passed over like SKIP markers (their loss was counted at the start).
//!
//! A producer that dies mid-run is repaired as one message (PROTOCOL.md §12.5): its peer record
//! says the intent is a run (`intent_flags`), and the repair tombstones the first position as
//! LOST and the unpublished continuations as SKIP.

use super::{Channel, Received, RETRY_LIMIT};
use crate::error::{RecvError, SendError};
use crate::layout::{intent_flags, message_flags, MessageMeta, MSG_INLINE};
use crate::payload::{self, Payload};
use crate::sync::Ordering::{Acquire, Relaxed, Release};
use crate::wait::WaitStrategy;

use super::SendMeta;

/// Bits of `flags` that mark a slot as part of a run.
const RUN_BITS: u16 = message_flags::RUN | message_flags::RUN_CONT;

/// The slots a run of `len` bytes takes.
fn slots_for(len: usize) -> u64 {
    len.div_ceil(MSG_INLINE) as u64
}

/// Bytes `960 × index ..` of a message of `len` bytes: the part slot `index` of its run holds.
fn part_range(len: usize, index: u64) -> core::ops::Range<usize> {
    let start = (index as usize).saturating_mul(MSG_INLINE).min(len);
    start..start.saturating_add(MSG_INLINE).min(len)
}

impl<'a, W: WaitStrategy> Channel<'a, W> {
    /// Whether slot flags `flags` mark a slot of a run on this channel (always false on a
    /// channel without runs, where those bits are reserved and ignored).
    #[inline(always)]
    pub(super) fn is_run_slot(&self, flags: u16) -> bool {
        (self.geometry.carries_runs() && flags & RUN_BITS != 0)
            || (self.geometry.carries_blobs && flags & message_flags::BLOB != 0)
    }

    // ------------------------------------------------------------------ sending

    /// Sends a message longer than one slot as a run. Out of line: single-slot sends never
    /// come here.
    #[cold]
    #[inline(never)]
    pub(super) fn try_send_run(&self, payload: &[u8], meta: &SendMeta) -> Result<u64, SendError> {
        let limit = self.geometry.message_limit();
        if payload.len() > limit {
            return Err(SendError::TooLarge {
                len: payload.len(),
                limit,
            });
        }
        if meta.flags & message_flags::PROTOCOL_MASK != 0 {
            return Err(SendError::ReservedFlags { flags: meta.flags });
        }
        let count = slots_for(payload.len());
        let first = self.claim_send_run(count)?;
        let len = payload.len();
        // Continuations first, in order; the first slot last: it publishes the run.
        let mut published = (1..count).all(|index| {
            let position = first.wrapping_add(index);
            payload::store(
                &self.slot(position).payload,
                &payload[part_range(len, index)],
            );
            self.publish_run_slot(position, first, index, count, len, meta)
        });
        if published {
            payload::store(&self.slot(first).payload, &payload[part_range(len, 0)]);
            published = self.publish_run_slot(first, first, 0, count, len, meta);
        }
        self.end_run_send_intent();
        hook!(self, SendIntentCleared, first);
        if !published {
            // A repair settled the run while we wrote it; it tombstones the first slot.
            return Err(SendError::Revoked { message_id: first });
        }
        self.notify_consumers();
        Ok(first)
    }

    /// Claims the slots of a run for a loan of up to `len` bytes (`len > 960`):
    /// `(first position, slots)`.
    #[cold]
    #[inline(never)]
    pub(super) fn claim_loan_run(&self, len: usize) -> Result<(u64, u64), SendError> {
        let limit = self.geometry.message_limit();
        if len > limit {
            return Err(SendError::TooLarge { len, limit });
        }
        let count = slots_for(len);
        Ok((self.claim_send_run(count)?, count))
    }

    /// Publishes the loaned run of `count` slots at `first`, whose bytes are in place, as a
    /// message of `len` bytes: in the order of a copying send (continuations, then the first
    /// slot), with the slots the message does not need published as skip markers before the
    /// first slot. A message that fits in one slot is published with `flags` as a single-slot
    /// message. False when a repair settled the run first. Out of line: single-slot loans
    /// never come here.
    #[cold]
    #[inline(never)]
    pub(super) fn publish_loaned_run(
        &self,
        first: u64,
        count: u64,
        len: usize,
        meta: &SendMeta,
        flags: u16,
    ) -> bool {
        let used = slots_for(len).max(1);
        let mut published = (1..count).all(|index| {
            let position = first.wrapping_add(index);
            if index < used {
                self.publish_run_slot(position, first, index, used, len, meta)
            } else {
                self.publish_slot(position, 0, &SendMeta::default(), message_flags::SKIP)
            }
        });
        if published {
            published = if used == 1 {
                self.publish_slot(first, len, meta, flags)
            } else {
                self.publish_run_slot(first, first, 0, used, len, meta)
            };
        }
        self.end_run_send_intent();
        hook!(self, SendIntentCleared, first);
        if published {
            self.notify_consumers();
        }
        published
    }

    /// Claims `count` consecutive free positions with one CAS on `tail`, all or none: `Full`
    /// while fewer are free. A registered producer's intent names the run (§12.5).
    fn claim_send_run(&self, count: u64) -> Result<u64, SendError> {
        let mut tail = self.entry.tail.load(Relaxed);
        for _ in 0..RETRY_LIMIT {
            let lag_at = |k: u64| {
                let p = tail.wrapping_add(k);
                self.slot(p).sequence.load(Acquire).wrapping_sub(p) as i64
            };
            let lag = lag_at(0);
            let blocked = if lag == 0 {
                (1..count).map(lag_at).find(|&lag| lag != 0)
            } else {
                Some(lag)
            };
            match blocked {
                None => {
                    if let Some(record) = self.send_intent {
                        record.intent_flags.store(intent_flags::RUN, Relaxed);
                    }
                    super::write_intent(self.send_intent, tail, count);
                    hook!(self, SendIntent, tail);
                    match self.entry.tail.compare_exchange_weak(
                        tail,
                        tail.wrapping_add(count),
                        Release,
                        Relaxed,
                    ) {
                        Ok(_) => {
                            hook!(self, SendClaimed, tail);
                            return Ok(tail);
                        }
                        Err(current) => tail = current,
                    }
                }
                // A slot of the run still holds the previous lap's message.
                Some(lag) if lag < 0 => {
                    self.end_run_send_intent();
                    return Err(SendError::Full);
                }
                Some(_) => {
                    // Another producer claimed part of it; as in `claim_send`, an honest tail
                    // has moved on by now.
                    let current = self.entry.tail.load(Relaxed);
                    if current == tail {
                        self.end_run_send_intent();
                        return Err(SendError::Busy);
                    }
                    tail = current;
                }
            }
        }
        self.end_run_send_intent();
        Err(SendError::Busy)
    }

    /// Writes the run fields and metadata of slot `index` of the run at `first`, then
    /// publishes it by CAS; false when a repair settled the position first (§11.7).
    fn publish_run_slot(
        &self,
        position: u64,
        first: u64,
        index: u64,
        count: u64,
        len: usize,
        meta: &SendMeta,
    ) -> bool {
        let slot = self.slot(position);
        if slot.sequence.load(Relaxed) != position {
            return false;
        }
        slot.run_slots.store(count as u32, Relaxed);
        slot.run_index.store(index as u32, Relaxed);
        let flags = meta.flags
            | if index == 0 {
                message_flags::RUN
            } else {
                message_flags::RUN_CONT
            };
        self.publish_slot_of(position, first, len, meta, flags)
    }

    /// Ends a run's intent: the count first (release), then the run flag, so that a repairer
    /// reading a later intent's count (acquire) sees the flag cleared.
    fn end_run_send_intent(&self) {
        super::clear_intent(self.send_intent);
        if let Some(record) = self.send_intent {
            record.intent_flags.store(0, Relaxed);
        }
    }

    // ------------------------------------------------------------------ receiving

    /// Called by `claim_recv` when the published slot at `head` starts a run. Claims the run
    /// (`Some((head, k))`), or the first slot alone when the run fails its checks
    /// (`Some((head, 1))`, which the caller's content check reports corrupt), or `None` when
    /// another consumer moved `head` first. With `buffer`, a run longer than it is refused
    /// without consuming anything; without one (a batch, which delivers single slots), every
    /// run is refused that way, naming the 960 bytes a batch holds.
    #[cold]
    #[inline(never)]
    pub(super) fn claim_run_recv(
        &self,
        head: u64,
        buffer: Option<usize>,
    ) -> Result<Option<(u64, u64)>, RecvError> {
        let slot = self.slot(head);
        let len = slot.meta.payload_len.load(Relaxed) as usize;
        let count = u64::from(slot.run_slots.load(Relaxed));
        let whole = self.run_is_plausible(len, count)
            && (1..count).all(|k| {
                let p = head.wrapping_add(k);
                self.slot(p).sequence.load(Acquire) == p.wrapping_add(1)
            });
        let claim = if whole {
            let available = buffer.unwrap_or(MSG_INLINE);
            if len > available {
                return Err(self.recv_failed(RecvError::BufferTooSmall {
                    needed: len,
                    available,
                }));
            }
            count
        } else {
            1
        };
        super::write_intent(self.recv_intent, head, claim);
        hook!(self, RecvIntent, head);
        match self.entry.head.compare_exchange_weak(
            head,
            head.wrapping_add(claim),
            Release,
            Relaxed,
        ) {
            Ok(_) => {
                hook!(self, RecvClaimed, head);
                Ok(Some((head, claim)))
            }
            Err(_) => Ok(None),
        }
    }

    /// Whether a run's first slot may be believed: a length above one slot and within the
    /// channel's limit, and the slot count that length needs, within the ring.
    fn run_is_plausible(&self, len: usize, count: u64) -> bool {
        len > MSG_INLINE
            && len <= self.geometry.message_limit()
            && count == slots_for(len)
            && count <= self.geometry.capacity
    }

    /// Checks the `count` claimed slots of the run at `first` again, now that they are ours:
    /// the first slot's length and count, then every continuation's flags, message id, index
    /// and length. The first slot's metadata when the run holds together, else the
    /// `payload_len` to report it corrupt with.
    fn check_run(&self, first: u64, count: u64) -> Result<MessageMeta, u32> {
        let start = self.slot(first);
        let meta = start.meta.load();
        let len = meta.payload_len as usize;
        let starts = meta.flags & RUN_BITS == message_flags::RUN
            && u64::from(start.run_slots.load(Relaxed)) == count
            && self.run_is_plausible(len, count);
        let continues = |index: u64| {
            let slot = self.slot(first.wrapping_add(index));
            slot.meta.flags.load(Relaxed) & RUN_BITS == message_flags::RUN_CONT
                && slot.meta.message_id.load(Relaxed) == first
                && u64::from(slot.run_index.load(Relaxed)) == index
                && slot.meta.payload_len.load(Relaxed) == meta.payload_len
        };
        if starts && (1..count).all(continues) {
            Ok(meta)
        } else {
            Err(meta.payload_len)
        }
    }

    /// Copies the claimed run at `first` into `buf` and frees it (PROTOCOL.md §12.4).
    pub(super) fn finish_run_recv(
        &self,
        first: u64,
        count: u64,
        buf: &mut [u8],
    ) -> Result<Received, RecvError> {
        let checked = self.check_run(first, count).and_then(|meta| {
            let len = meta.payload_len as usize;
            let dst = buf.get_mut(..len).ok_or(meta.payload_len)?;
            for index in 0..count {
                let words = &self.slot(first.wrapping_add(index)).payload;
                payload::load(words, &mut dst[part_range(len, index)]);
            }
            Ok(meta)
        });
        // Revoked: the copy may hold the next lap's bytes; it is not delivered.
        self.free_run(first, count)?;
        match checked {
            Ok(meta) => Ok(Received {
                meta,
                len: meta.payload_len as usize,
            }),
            Err(payload_len) => Err(RecvError::Corrupt {
                message_id: first,
                payload_len,
            }),
        }
    }

    /// An in-place receive that claimed the run at `first`: its metadata when it holds
    /// together, else the run is freed and reported corrupt (or revoked).
    pub(super) fn check_run_in_place(
        &self,
        first: u64,
        count: u64,
    ) -> Result<MessageMeta, RecvError> {
        match self.check_run(first, count) {
            Ok(meta) => Ok(meta),
            Err(payload_len) => {
                self.free_run(first, count)?;
                Err(RecvError::Corrupt {
                    message_id: first,
                    payload_len,
                })
            }
        }
    }

    /// Frees every claimed position of a run, ends the intent and wakes producers. `Revoked`
    /// when a repair freed any of them first: what was read may be another message's.
    pub(super) fn free_run(&self, first: u64, count: u64) -> Result<(), RecvError> {
        let mut revoked = false;
        for index in 0..count {
            revoked |= !self.release(first.wrapping_add(index));
        }
        self.end_recv_intent(first);
        self.notify_producers();
        if revoked {
            return Err(RecvError::Revoked { message_id: first });
        }
        Ok(())
    }

    /// The in-place parts of the claimed run at `first` (validated by [`Self::check_run`]).
    pub(super) fn run_parts(&self, first: u64, count: u64, len: usize) -> RunParts<'_> {
        RunParts {
            slots: self.slots,
            mask: self.mask,
            first,
            count,
            next: 0,
            len,
        }
    }
}

/// The parts of a message received in place, one per slot, in order: each a [`Payload`] of
/// at most 960 bytes read through the same word accessors as a single slot. A message of one
/// slot has one part.
///
/// ```
/// use dmxp_nostd::{AlignedBlock, ChannelOptions, Region, Segment, SendMeta};
/// use zerocopy::IntoBytes;
///
/// let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(1 << 20)];
/// let segment = Segment::format(Region::new(memory.as_mut_bytes())?, 1)?;
/// let options = ChannelOptions::default().with_max_message_size(4_000);
/// let (channel, _) = segment.open_or_create_channel_with(0, 8, 1, options)?;
/// channel.try_send(&[9u8; 2_500], &SendMeta::default())?;
/// let guard = channel.try_recv_in_place()?;
/// let sizes: Vec<usize> = guard.parts().map(|part| part.len()).collect();
/// assert_eq!(sizes, [960, 960, 580]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct RunParts<'c> {
    slots: &'c [crate::layout::AtomicSlot],
    mask: u64,
    first: u64,
    count: u64,
    next: u64,
    len: usize,
}

impl<'c> Iterator for RunParts<'c> {
    type Item = Payload<'c>;

    fn next(&mut self) -> Option<Payload<'c>> {
        if self.next == self.count {
            return None;
        }
        let index = self.next;
        self.next += 1;
        let slot = &self.slots[(self.first.wrapping_add(index) & self.mask) as usize];
        Some(Payload::new(
            &slot.payload,
            part_range(self.len, index).len(),
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.count - self.next) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for RunParts<'_> {}
