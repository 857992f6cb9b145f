//! The layout floor: a minimal Vyukov bounded MPMC ring over slots of DMXP's size and
//! alignment (1,088 bytes, 64-aligned: the sequence at offset 0, the length in the message
//! metadata's `payload_len` word, the payload from byte 64), with nothing else: no metadata,
//! no intents, no wake fence, no validation beyond clamping the length to 960.
//!
//! * A producer claims position `p` by a compare-and-swap of the tail from `p` to `p + 1`
//!   once slot `p mod capacity` shows sequence `p` (acquire); it writes the length and the
//!   payload (relaxed `AtomicU64` words, the same copy as DMXP's) and publishes by storing
//!   sequence `p + 1` (release).
//! * A consumer claims position `p` by a compare-and-swap of the head once the slot shows
//!   `p + 1` (acquire); it copies the length and the payload out and frees the slot by storing
//!   `p + capacity` (release).
//!
//! The ring lives in the run's shared memory (the same segment and backend as the floor's
//! word), viewed through [`Region::view_slice`] as DMXP's own [`AtomicSlot`]s: no unsafe code.
//! The tail and the head are the sequence words of two header slots of their own, so each has
//! its own cache lines.

use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

use dmxp::core::layout::{AtomicSlot, MSG_INLINE, SLOT_SIZE};
use dmxp::core::payload::{load, store};
use dmxp::core::Region;

/// A bare ring: two header slots (the tail's and the head's) and `capacity` message slots.
#[derive(Clone, Copy)]
pub struct BareRing<'a> {
    tail: &'a AtomicU64,
    head: &'a AtomicU64,
    slots: &'a [AtomicSlot],
    mask: u64,
}

impl std::fmt::Debug for BareRing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BareRing")
            .field("capacity", &self.slots.len())
            .field("tail", &self.tail.load(Relaxed))
            .field("head", &self.head.load(Relaxed))
            .finish()
    }
}

impl<'a> BareRing<'a> {
    /// Bytes a ring of `capacity` slots takes: two header slots and the message slots.
    #[must_use]
    pub const fn bytes(capacity: u64) -> usize {
        (2 + capacity as usize) * SLOT_SIZE
    }

    /// The ring of `capacity` slots (a power of two, at least 2) at `offset` in `region`;
    /// `None` if it does not fit, is misaligned, or the capacity is not a power of two.
    #[must_use]
    pub fn view(region: Region<'a>, offset: usize, capacity: u64) -> Option<Self> {
        if capacity < 2 || !capacity.is_power_of_two() {
            return None;
        }
        let all = region.view_slice::<AtomicSlot>(offset, 2 + capacity as usize)?;
        let (header, slots) = all.split_at(2);
        Some(Self {
            tail: &header[0].sequence,
            head: &header[1].sequence,
            slots,
            mask: capacity - 1,
        })
    }

    /// Makes the ring empty: tail and head 0, slot `i` at sequence `i`. Only while nobody
    /// else uses it (the parent, before the children start).
    pub fn init(&self) {
        self.tail.store(0, Relaxed);
        self.head.store(0, Relaxed);
        for (i, slot) in self.slots.iter().enumerate() {
            slot.meta.payload_len.store(0, Relaxed);
            slot.sequence.store(i as u64, Release);
        }
    }

    /// Slots in the ring.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// Sends `payload` (at most 960 bytes): `false` if the ring is full (or the payload too
    /// long).
    #[inline]
    pub fn try_send(&self, payload: &[u8]) -> bool {
        if payload.len() > MSG_INLINE {
            return false;
        }
        let mut pos = self.tail.load(Relaxed);
        let slot = loop {
            let slot = &self.slots[(pos & self.mask) as usize];
            let seq = slot.sequence.load(Acquire);
            let dif = seq.wrapping_sub(pos) as i64;
            if dif == 0 {
                match self
                    .tail
                    .compare_exchange_weak(pos, pos + 1, Relaxed, Relaxed)
                {
                    Ok(_) => break slot,
                    Err(now) => pos = now,
                }
            } else if dif < 0 {
                return false;
            } else {
                pos = self.tail.load(Relaxed);
            }
        };
        slot.meta.payload_len.store(payload.len() as u32, Relaxed);
        store(&slot.payload, payload);
        slot.sequence.store(pos.wrapping_add(1), Release);
        true
    }

    /// Receives the next message into `buf` (which must hold 960 bytes, or the message is
    /// cut to `buf`'s length): its length, or `None` if the ring is empty.
    #[inline]
    pub fn try_recv(&self, buf: &mut [u8]) -> Option<usize> {
        let mut pos = self.head.load(Relaxed);
        let slot = loop {
            let slot = &self.slots[(pos & self.mask) as usize];
            let seq = slot.sequence.load(Acquire);
            let dif = seq.wrapping_sub(pos.wrapping_add(1)) as i64;
            if dif == 0 {
                match self
                    .head
                    .compare_exchange_weak(pos, pos + 1, Relaxed, Relaxed)
                {
                    Ok(_) => break slot,
                    Err(now) => pos = now,
                }
            } else if dif < 0 {
                return None;
            } else {
                pos = self.head.load(Relaxed);
            }
        };
        let len = (slot.meta.payload_len.load(Relaxed) as usize)
            .min(MSG_INLINE)
            .min(buf.len());
        load(&slot.payload, &mut buf[..len]);
        slot.sequence
            .store(pos.wrapping_add(self.mask + 1), Release);
        Some(len)
    }
}

/// The first 8 bytes of a payload as a little-endian word (zero-padded): what the bare-ring
/// consumers add up for the checksum.
#[must_use]
pub fn first_word(payload: &[u8]) -> u64 {
    let mut le = [0u8; 8];
    let n = payload.len().min(8);
    le[..n].copy_from_slice(&payload[..n]);
    u64::from_le_bytes(le)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmxp::core::AlignedBlock;
    use zerocopy::IntoBytes;

    #[test]
    fn fifo_full_empty_and_wrap() {
        let mut blocks = vec![AlignedBlock::ZERO; AlignedBlock::count_for(BareRing::bytes(4))];
        let region = Region::new(blocks.as_mut_bytes()).unwrap();
        let ring = BareRing::view(region, 0, 4).unwrap();
        ring.init();
        let mut buf = [0u8; MSG_INLINE];
        assert_eq!(ring.try_recv(&mut buf), None);
        for round in 0..5u8 {
            for k in 0..4u8 {
                let msg = vec![round * 10 + k; 13 + k as usize];
                assert!(ring.try_send(&msg));
            }
            assert!(!ring.try_send(b"full"), "a fifth message fits in 4 slots");
            for k in 0..4u8 {
                let len = ring.try_recv(&mut buf).unwrap();
                assert_eq!(len, 13 + k as usize);
                assert!(buf[..len].iter().all(|&b| b == round * 10 + k));
            }
            assert_eq!(ring.try_recv(&mut buf), None);
        }
        assert!(!ring.try_send(&[0u8; MSG_INLINE + 1]));
        assert!(ring.try_send(&[7u8; MSG_INLINE]));
        assert_eq!(ring.try_recv(&mut buf), Some(MSG_INLINE));
        assert!(buf.iter().all(|&b| b == 7));
        assert!(BareRing::view(region, 0, 3).is_none());
        assert!(BareRing::view(region, 8, 4).is_none());
        assert_eq!(first_word(&[1, 2]), 0x0201);
    }

    #[test]
    fn threads_move_every_message_once() {
        let mut blocks = vec![AlignedBlock::ZERO; AlignedBlock::count_for(BareRing::bytes(8))];
        let region = Region::new(blocks.as_mut_bytes()).unwrap();
        let ring = BareRing::view(region, 0, 8).unwrap();
        ring.init();
        const PER: u64 = 20_000;
        let sums: Vec<u64> = std::thread::scope(|s| {
            for p in 0..2u64 {
                s.spawn(move || {
                    for n in 0..PER {
                        let msg = (p * PER + n).to_le_bytes();
                        while !ring.try_send(&msg) {
                            std::hint::spin_loop();
                        }
                    }
                });
            }
            let consumers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(move || {
                        let mut buf = [0u8; MSG_INLINE];
                        let (mut got, mut sum) = (0u64, 0u64);
                        while got < PER {
                            if let Some(len) = ring.try_recv(&mut buf) {
                                sum = sum.wrapping_add(first_word(&buf[..len]));
                                got += 1;
                            }
                        }
                        sum
                    })
                })
                .collect();
            consumers.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let want: u64 = (0..2 * PER).sum();
        assert_eq!(sums.iter().sum::<u64>(), want);
    }
}
