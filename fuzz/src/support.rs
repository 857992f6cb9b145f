//! Pieces shared by the targets: segment memory, payload patterns, a wait strategy that gives
//! up, and input decoding helpers.

use arbitrary::{Arbitrary, Unstructured};
use dmxp_nostd::{AlignedBlock, Region, Segment, WaitOutcome, WaitStrategy};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use zerocopy::IntoBytes;

/// Zeroed, 128-byte aligned memory for a segment of at least `bytes` bytes.
pub fn segment_memory(bytes: usize) -> Vec<AlignedBlock> {
    vec![AlignedBlock::ZERO; AlignedBlock::count_for(bytes)]
}

/// A freshly formatted, empty segment of at least `bytes` bytes (formatted by `creator_pid`),
/// ready for `Segment::attach`.
///
/// Formatting zeroes the whole 98 KB header through atomics, which would dominate a fuzz
/// iteration, so each size is formatted once per thread and copied afterwards: the copy is
/// byte for byte what `Segment::format` leaves.
pub fn formatted_segment(bytes: usize, creator_pid: u32) -> Vec<AlignedBlock> {
    thread_local! {
        static FORMATTED: RefCell<HashMap<(usize, u32), Vec<AlignedBlock>>> =
            RefCell::new(HashMap::new());
    }
    FORMATTED.with(|cache| {
        cache
            .borrow_mut()
            .entry((bytes, creator_pid))
            .or_insert_with(|| {
                let mut memory = segment_memory(bytes);
                let region = Region::new(memory.as_mut_bytes()).expect("AlignedBlock is aligned");
                Segment::format(region, creator_pid).expect("fresh memory formats");
                memory
            })
            .clone()
    })
}

/// A payload of `len` bytes derived from `fill` and the position it is sent at, so that two
/// messages rarely carry the same bytes and a payload delivered for the wrong position shows.
pub fn pattern(fill: u8, position: u64, len: usize) -> Vec<u8> {
    let salt = (position as u8).wrapping_mul(151) ^ (position >> 8) as u8;
    (0..len)
        .map(|i| fill ^ salt ^ (i as u8).wrapping_mul(73) ^ (i >> 8) as u8)
        .collect()
}

/// A wait strategy for a single thread: nothing can change while it waits, so it returns
/// "woken" a few times (letting the blocking loop re-check) and then "timed out". Blocking
/// operations therefore always end.
#[derive(Clone, Debug)]
pub struct Patience {
    wakes_left: Cell<u32>,
}

impl Patience {
    pub fn new(wakes: u32) -> Self {
        Self {
            wakes_left: Cell::new(wakes),
        }
    }
}

impl WaitStrategy for Patience {
    fn wait(&self, _word: &dmxp_nostd::atomic::AtomicU32, _expected: u32) -> WaitOutcome {
        match self.wakes_left.get() {
            0 => WaitOutcome::TimedOut,
            left => {
                self.wakes_left.set(left - 1);
                WaitOutcome::Woken
            }
        }
    }

    fn wake_all(&self, _word: &dmxp_nostd::atomic::AtomicU32) {}
}

/// Decodes a `T` followed by as many `S`s as the input holds (at most `max`). An input too
/// short for the head decodes as all-zero bytes would; a step that fails to decode ends the
/// list. The same input always gives the same result, in the fuzz targets and in the replay
/// tests alike.
pub fn decode<'a, T, S>(
    data: &'a [u8],
    max: usize,
    mut step: impl FnMut(&mut Unstructured<'a>) -> arbitrary::Result<S>,
) -> (T, Vec<S>)
where
    T: Arbitrary<'a> + Default,
{
    let mut u = Unstructured::new(data);
    let head = T::arbitrary(&mut u).unwrap_or_default();
    let mut steps = Vec::new();
    while !u.is_empty() && steps.len() < max {
        match step(&mut u) {
            Ok(s) => steps.push(s),
            Err(_) => break,
        }
    }
    (head, steps)
}
