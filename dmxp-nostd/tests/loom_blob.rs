//! Loom models of the blob pool's allocator (PROTOCOL.md §13.3, §13.6): every change of a
//! block's owner is one CAS on its tag, so racing loans never share a block, and a reclaim
//! that races a late release by the owner it judged dead frees the block exactly once.
//!
//! Run with `scripts/loom.sh` (which runs every loom model file).

#![cfg(loom)]

use dmxp_nostd::blob::{
    block_state, AtomicBlobClass, AtomicBlockHeader, AtomicPoolHeader, BlobPool, BlobRef, Tag,
};
use dmxp_nostd::BlobError;
use loom::thread;

mod loom_common;
use loom_common::{check, interleave};

struct PoolMemory {
    header: AtomicPoolHeader,
    class: Vec<AtomicBlobClass>,
    headers: Vec<AtomicBlockHeader>,
}

impl PoolMemory {
    fn new(blocks: usize) -> Self {
        Self {
            header: AtomicPoolHeader::new_zeroed(),
            class: (0..8).map(|_| AtomicBlobClass::new_zeroed()).collect(),
            headers: (0..blocks)
                .map(|_| AtomicBlockHeader::new_zeroed())
                .collect(),
        }
    }

    fn pool(&'static self) -> BlobPool<'static> {
        BlobPool::model(&self.header, &self.class, &self.headers)
    }
}

fn tag(pool: &BlobPool<'_>, block: u32) -> Tag {
    pool.tag(&BlobRef {
        class: 0,
        block,
        generation: 0,
        len: 0,
    })
    .unwrap()
}

/// Block 0 starts held by consumer record 2; block 1 is free. Two producers (records 0 and 1)
/// loan while the consumer releases block 0. Every loan that succeeds has a block of its own,
/// at least one succeeds (block 1 is free throughout), and the tags end up saying exactly
/// who owns what.
#[test]
fn two_producers_allocating_while_a_consumer_frees() {
    check("two_producers_allocating_while_a_consumer_frees", 3, || {
        loom::lazy_static! {
            static ref MEMORY: PoolMemory = PoolMemory::new(2);
        }
        let pool = MEMORY.pool();
        // The consumer's block: loaned, queued and taken before the model starts.
        let held = pool.loan(2, 1, 64).unwrap();
        assert!(pool.queue(2, &held, 0, 0));
        assert!(pool.take(2, 1, &held, 0, 0));
        let producers: Vec<_> = [0usize, 1]
            .into_iter()
            .map(|record| {
                thread::spawn(move || {
                    interleave();
                    MEMORY.pool().loan(record, 1, 64).map(|r| (record, r))
                })
            })
            .collect();
        let consumer = thread::spawn(move || {
            interleave();
            MEMORY.pool().free(2, &held, block_state::HELD)
        });
        assert!(consumer.join().unwrap(), "the owner's release never fails");
        let loans: Vec<_> = producers
            .into_iter()
            .filter_map(|p| match p.join().unwrap() {
                Ok(loan) => Some(loan),
                Err(BlobError::PoolExhausted { .. }) => None,
                Err(other) => panic!("{other}"),
            })
            .collect();
        assert!(!loans.is_empty(), "block 1 was free throughout");
        if let [(_, a), (_, b)] = loans[..] {
            assert_ne!(a.block, b.block, "two loans of one block");
        }
        for block in 0..2 {
            let t = tag(&pool, block);
            match loans.iter().find(|(_, r)| r.block == block) {
                Some((record, r)) => {
                    assert_eq!(t.state, block_state::LOANED);
                    assert_eq!(t.owner as usize, record + 1);
                    assert_eq!(t.generation, r.generation);
                }
                None => assert_eq!(t.state, block_state::FREE),
            }
        }
    });
}

/// Block 0 is held by consumer record 2, which a peer judges dead and reclaims while the
/// consumer, alive after all, releases it; a producer (record 3) loans meanwhile. Exactly one
/// of the reclaim and the release frees the block; a loan that gets it is never freed by the
/// late release (the generation moved on).
#[test]
fn a_reclaim_racing_a_late_release_frees_the_block_once() {
    check(
        "a_reclaim_racing_a_late_release_frees_the_block_once",
        3,
        || {
            loom::lazy_static! {
                static ref MEMORY: PoolMemory = PoolMemory::new(1);
            }
            let pool = MEMORY.pool();
            let held = pool.loan(2, 1, 64).unwrap();
            assert!(pool.queue(2, &held, 0, 0));
            assert!(pool.take(2, 1, &held, 0, 0));
            let reclaimer = thread::spawn(|| {
                interleave();
                MEMORY.pool().reclaim_owner(2)
            });
            let owner = thread::spawn(move || {
                interleave();
                MEMORY.pool().free(2, &held, block_state::HELD)
            });
            let producer = thread::spawn(|| {
                interleave();
                MEMORY.pool().loan(3, 1, 64)
            });
            let reclaimed = reclaimer.join().unwrap();
            let released = owner.join().unwrap();
            let loaned = producer.join().unwrap();
            assert_eq!(reclaimed + u32::from(released), 1, "freed exactly once");
            let t = tag(&pool, 0);
            match loaned {
                Ok(r) => {
                    assert_eq!(r.generation, held.generation + 1);
                    assert_eq!(
                        t,
                        Tag {
                            state: block_state::LOANED,
                            owner: 4,
                            generation: r.generation
                        },
                        "the new loan is intact"
                    );
                }
                Err(BlobError::PoolExhausted { .. }) => {
                    assert_eq!(t, Tag::free(held.generation));
                }
                Err(other) => panic!("{other}"),
            }
        },
    );
}
