//! The `blob_pool` target: a segment with a blob pool (PROTOCOL.md §13) and a channel that
//! carries blobs, driven by a fuzzer-chosen sequence of loans, commits, receives, releases,
//! reclaims and re-attaches, interleaved with fuzzer-chosen words written anywhere in the pool
//! (its descriptor, the block headers, the blocks) or in the ring's slots (the references).
//!
//! What must hold, whatever was written:
//! * nothing panics, nothing touches memory outside the segment, every operation returns;
//! * a loan is of a block that exists and is as long as asked; until a scribble lands, never of
//!   a block another live loan or held blob has;
//! * a received blob is of a block that exists, no longer than it, and its bytes view is
//!   exactly its length; a bad reference is reported `Corrupt`;
//! * re-attaching either succeeds or fails with a corruption that names a pool field;
//! * the pool's counts always add up to its blocks, and reclaims free at most that many.

use crate::support::decode;
use arbitrary::Arbitrary;
use dmxp_nostd::blob::BlobPoolSpec;
use dmxp_nostd::layout::SLOT_SIZE;
use dmxp_nostd::{
    AlignedBlock, BlobError, ChannelOptions, Error, FormatOptions, PeerRole, RecvError, Region,
    Segment, SendError, SendMeta,
};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use zerocopy::IntoBytes;

const SEGMENT: usize = 512 << 10;
const PID: u32 = 4242;
const MAX_STEPS: usize = 96;
const MAX_HELD: usize = 6;

/// The pool: 4 blocks of 4 KiB and 2 of 16 KiB.
fn spec() -> BlobPoolSpec {
    BlobPoolSpec::new()
        .with_class(4096, 4)
        .with_class(16 << 10, 2)
}

/// Where a scribble lands.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Target {
    /// A word of the pool (descriptor, block headers or blocks), by index.
    Pool(u16),
    /// A word of slot `n`'s payload (0 and 1 hold a reference).
    SlotPayload(u8, u8),
    /// Slot `n`'s meta word that holds `flags` and `payload_len` (meta offset 24..40).
    SlotMeta(u8, bool),
}

/// One step.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Step {
    /// Loan a blob of `len` bytes (taken mod 20,000).
    Loan(u16),
    /// Commit loan `i` (mod the loans held) with its whole length, or `shorter` bytes less.
    Commit(u8, u16),
    /// Drop loan `i`.
    Abandon(u8),
    /// Receive a blob in place.
    Receive,
    /// Receive by copy into a buffer of `len` bytes (mod 20,000).
    ReceiveCopy(u16),
    /// Release held blob `i`.
    Release(u8),
    /// Reclaim leaked and orphaned blocks.
    Reclaim,
    /// Attach the segment again (its pool is validated anew).
    Reattach,
    /// Write `value` at `target`.
    Scribble(Target, u64),
}

/// What one input did, for the replay tests' coverage checks.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub loans: u32,
    pub exhausted: u32,
    pub delivered: u32,
    pub corrupt: u32,
    pub attach_refused: u32,
}

/// Decodes the steps of `data` (at most [`MAX_STEPS`]).
pub fn decode_input(data: &[u8]) -> Vec<Step> {
    let ((), steps) = decode(data, MAX_STEPS, Step::arbitrary);
    steps
}

fn formatted() -> Vec<AlignedBlock> {
    let mut memory = vec![AlignedBlock::ZERO; AlignedBlock::count_for(SEGMENT)];
    {
        let region = Region::new(memory.as_mut_bytes()).expect("aligned");
        let options = FormatOptions::default().with_blob_pool(spec());
        let segment = Segment::format_with(region, PID, options).expect("fits");
        segment
            .open_or_create_channel_with(0, 8, PID, ChannelOptions::default().with_blobs())
            .expect("a blob channel");
    }
    memory
}

/// Runs one input.
pub fn run(data: &[u8]) -> Stats {
    let steps = decode_input(data);
    let mut memory = formatted();
    let region = Region::new(memory.as_mut_bytes()).expect("aligned");
    let mut stats = Stats::default();
    let segment = Segment::attach(region).expect("a fresh segment attaches");
    let pool = segment.blob_pool().expect("formatted with a pool");
    let geometry = *pool.geometry();
    let blocks = geometry.block_count() as u32;
    let channel = segment.open_channel(0).expect("the blob channel");
    let producer = segment.register(0, PeerRole::Producer, PID, 0, 1).unwrap();
    let consumer = segment.register(0, PeerRole::Consumer, PID, 0, 1).unwrap();
    let tx = channel.clone().with_peer(&producer);
    let rx = channel.clone().with_peer(&consumer);
    let pool_words = (geometry.len / 8) as usize;
    let band = channel.geometry().band_offset as usize;
    let word_at = |offset: usize| region.view::<AtomicU64>(offset);
    let mut loans = Vec::new();
    let mut held = Vec::new();
    let mut scribbled = false;
    for step in steps {
        match step {
            Step::Loan(len) => {
                let len = usize::from(len) % 20_000;
                match tx.try_loan_blob(len) {
                    Ok(loan) => {
                        stats.loans += 1;
                        let r = loan.blob();
                        assert!(pool.is_valid_ref(&r), "a loan of a block that exists");
                        assert_eq!(loan.len(), len);
                        if loans.len() < MAX_HELD {
                            loans.push(loan);
                        }
                    }
                    Err(BlobError::PoolExhausted { .. }) => stats.exhausted += 1,
                    Err(BlobError::TooLarge { largest, .. }) => {
                        assert!(len as u64 > largest)
                    }
                    Err(other) => panic!("loan: {other}"),
                }
            }
            Step::Commit(i, shorter) if !loans.is_empty() => {
                let mut loan = loans.remove(usize::from(i) % loans.len());
                let len = loan.len().saturating_sub(usize::from(shorter) % 64);
                match loan.try_commit(len, &SendMeta::default()) {
                    Ok(_) | Err(SendError::Revoked { .. }) => {}
                    Err(SendError::Full | SendError::Busy) => {}
                    Err(other) => panic!("commit: {other}"),
                }
            }
            Step::Abandon(i) if !loans.is_empty() => {
                drop(loans.remove(usize::from(i) % loans.len()));
            }
            Step::Receive => match rx.try_recv_blob() {
                Ok(blob) => {
                    stats.delivered += 1;
                    let r = blob.blob();
                    assert!(pool.is_valid_ref(&r), "a blob of a block that exists");
                    assert_eq!(blob.len(), r.len as usize);
                    assert_eq!(blob.bytes().len(), blob.len());
                    let mut last = [0u8; 1];
                    if !blob.is_empty() {
                        assert!(blob.bytes().read_at(blob.len() - 1, &mut last));
                    }
                    if held.len() < MAX_HELD {
                        held.push(blob);
                    }
                }
                Err(RecvError::Corrupt { .. }) => stats.corrupt += 1,
                Err(
                    RecvError::Empty
                    | RecvError::Pending { .. }
                    | RecvError::NotABlob { .. }
                    | RecvError::Lost { .. }
                    | RecvError::Busy
                    | RecvError::Revoked { .. },
                ) => {}
                Err(other) => panic!("receive: {other}"),
            },
            Step::ReceiveCopy(len) => {
                let mut buf = vec![0u8; usize::from(len) % 20_000];
                match channel.try_recv(&mut buf) {
                    Ok(received) => {
                        assert!(received.len <= buf.len());
                        stats.delivered += 1;
                    }
                    Err(RecvError::Corrupt { .. }) => stats.corrupt += 1,
                    Err(RecvError::BufferTooSmall { needed, available }) => {
                        assert!(needed > available)
                    }
                    Err(_) => {}
                }
            }
            Step::Release(i) if !held.is_empty() => {
                let blob = held.remove(usize::from(i) % held.len());
                // Revoked only when a scribble or a reclaim changed its tag.
                let _ = blob.release();
            }
            Step::Reclaim => {
                let freed = segment.reclaim_blobs().unwrap_or(0);
                assert!(freed <= blocks);
            }
            Step::Reattach => match Segment::attach(region) {
                Ok(again) => {
                    if let Some(pool) = again.blob_pool() {
                        assert!(pool.geometry().block_count() > 0);
                    }
                }
                Err(Error::Corrupt(c)) => {
                    stats.attach_refused += 1;
                    assert!(
                        ["blob_pool_offset", "pool_magic", "pool_len", "block_size"]
                            .contains(&c.field()),
                        "only the pool was scribbled on: {c}"
                    );
                }
                Err(other) => panic!("attach: {other}"),
            },
            Step::Scribble(target, value) => {
                let offset = match target {
                    Target::Pool(i) => geometry.offset as usize + (usize::from(i) % pool_words) * 8,
                    Target::SlotPayload(slot, word) => {
                        band + usize::from(slot % 8) * SLOT_SIZE + 64 + usize::from(word % 4) * 8
                    }
                    Target::SlotMeta(slot, high) => {
                        band + usize::from(slot % 8) * SLOT_SIZE + 8 + 24 + if high { 8 } else { 0 }
                    }
                };
                if let Some(word) = word_at(offset) {
                    word.store(value, Relaxed);
                    scribbled = true;
                }
            }
            _ => {}
        }
        // Counts add up (the pool's views come from the geometry validated at attach, so
        // scribbles on the descriptor change nothing here).
        let counted: u32 = pool
            .stats()
            .iter()
            .map(|c| c.free + c.loaned + c.queued + c.held + c.invalid)
            .sum();
        assert_eq!(counted, blocks);
        // No block is in two live handles at once (a scribble can forge anything).
        if scribbled {
            continue;
        }
        let mut owned = HashSet::new();
        for r in loans
            .iter()
            .map(|l| l.blob())
            .chain(held.iter().map(|h| h.blob()))
        {
            let live = pool
                .tag(&r)
                .is_some_and(|t| t.generation == r.generation && t.owner != 0);
            if live {
                assert!(owned.insert((r.class, r.block)), "one block, two owners");
            }
        }
    }
    drop(loans);
    drop(held);
    stats
}
