//! Helpers shared by the integration tests of `dmxp-nostd`: an aligned, zeroed buffer that
//! holds a segment in ordinary memory, and little-endian field access at raw offsets.
//!
//! Use with `mod common;`. Keep this small: several test files depend on it.

#![allow(dead_code)]

use dmxp_nostd::layout::{HEADER_SIZE, SLOT_SIZE};
use dmxp_nostd::{AlignedBlock, Region, Segment};
use std::sync::{Mutex, PoisonError};
use zerocopy::IntoBytes;

/// Bytes of a segment whose bands hold exactly the given capacities.
pub fn segment_len(capacities: &[u64]) -> usize {
    HEADER_SIZE
        + capacities
            .iter()
            .map(|&c| c as usize * SLOT_SIZE)
            .sum::<usize>()
}

/// A copy of a segment formatted by `creator_pid` in exactly [`segment_len`]`(capacities)`
/// bytes, with channels `0, 1, …` of `capacities` created in that order (so channel 0's band
/// starts at `HEADER_SIZE`). Each distinct segment is built once per test binary and then
/// copied: formatting touches every header byte atomically, which is slow under Miri.
pub fn formatted(capacities: &[u64], creator_pid: u32) -> SegmentBuf {
    type Key = (Vec<u64>, u32);
    static BUILT: Mutex<Vec<(Key, Vec<u8>)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    let key = (capacities.to_vec(), creator_pid);
    if let Some((_, bytes)) = built.iter().find(|(k, _)| *k == key) {
        return SegmentBuf::from_bytes(bytes);
    }
    let mut buf = SegmentBuf::for_capacities(capacities);
    {
        let segment = Segment::format(buf.region(), creator_pid).expect("format");
        for (id, &capacity) in capacities.iter().enumerate() {
            segment
                .create_channel(id as u32, capacity, creator_pid)
                .expect("create_channel");
        }
    }
    built.push((key, buf.bytes().to_vec()));
    buf
}

/// A zeroed buffer of exactly `len` bytes whose start is aligned to 128 (built from
/// [`AlignedBlock`]s, so it is a valid base for a [`Region`]).
pub struct SegmentBuf {
    blocks: Vec<AlignedBlock>,
    len: usize,
}

impl SegmentBuf {
    /// `len` zero bytes, 128-aligned.
    pub fn new(len: usize) -> Self {
        Self {
            blocks: vec![AlignedBlock::ZERO; AlignedBlock::count_for(len)],
            len,
        }
    }

    /// Room for the header and bands of exactly these capacities.
    pub fn for_capacities(capacities: &[u64]) -> Self {
        Self::new(segment_len(capacities))
    }

    /// An aligned copy of `bytes` (for example a file read from disk).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut buf = Self::new(bytes.len());
        buf.bytes_mut().copy_from_slice(bytes);
        buf
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> &[u8] {
        &self.blocks.as_bytes()[..self.len]
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.blocks.as_mut_bytes()[..self.len]
    }

    /// The whole buffer as a region (borrowed mutably for as long as the region lives).
    pub fn region(&mut self) -> Region<'_> {
        Region::new(self.bytes_mut()).expect("SegmentBuf is 128-aligned")
    }

    pub fn read_u16(&self, offset: usize) -> u16 {
        u16::from_le_bytes(self.bytes()[offset..offset + 2].try_into().unwrap())
    }

    pub fn read_u32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.bytes()[offset..offset + 4].try_into().unwrap())
    }

    pub fn read_u64(&self, offset: usize) -> u64 {
        u64::from_le_bytes(self.bytes()[offset..offset + 8].try_into().unwrap())
    }

    pub fn write_u16(&mut self, offset: usize, value: u16) {
        self.bytes_mut()[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
    }

    pub fn write_u32(&mut self, offset: usize, value: u32) {
        self.bytes_mut()[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }

    pub fn write_u64(&mut self, offset: usize, value: u64) {
        self.bytes_mut()[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    }
}
