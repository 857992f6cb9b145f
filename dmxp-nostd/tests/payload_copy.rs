//! The payload copy routines, byte for byte: every length from 0 to 960 through the copying
//! send and receive, the in-place reads (`words`, `copy_to`) and loans written at every offset
//! inside a word. The copies move whole words with the partial last word assembled apart, so
//! each length class (a multiple of 8, 1..7 past one, under 8) has its own code path.

#![cfg(not(loom))]

mod common;

use common::{formatted, SegmentBuf};
use dmxp_nostd::layout::MSG_INLINE;
use dmxp_nostd::{Channel, Segment, SendMeta};

fn open(buf: &mut SegmentBuf) -> Channel<'_> {
    Segment::attach(buf.region())
        .unwrap()
        .open_channel(0)
        .unwrap()
}

/// Bytes no two positions of which are equal within a word, different for every `seed`.
fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + seed * 13 + 1) as u8).collect()
}

/// The payload as the wire holds it: little-endian words, the last one zero-padded.
fn wire_words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks(8)
        .map(|chunk| {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            u64::from_le_bytes(word)
        })
        .collect()
}

#[test]
fn every_length_round_trips_through_send_and_receive() {
    let mut buf = formatted(&[4], 1);
    let channel = open(&mut buf);
    for len in 0..=MSG_INLINE {
        let sent = pattern(len, len);
        channel.try_send(&sent, &SendMeta::default()).unwrap();
        // A buffer longer than the message: the bytes past it must stay as they were.
        let mut out = vec![0xEE; MSG_INLINE + 8];
        let received = channel.try_recv(&mut out).unwrap();
        assert_eq!(received.len, len);
        assert_eq!(&out[..len], &sent[..], "length {len}");
        assert!(
            out[len..].iter().all(|&b| b == 0xEE),
            "length {len}: wrote past the message"
        );
        // And a buffer of exactly the message's length.
        channel.try_send(&sent, &SendMeta::default()).unwrap();
        let mut exact = vec![0u8; len];
        assert_eq!(channel.try_recv(&mut exact).unwrap().len, len);
        assert_eq!(exact, sent, "length {len}, exact buffer");
    }
}

#[test]
fn the_last_word_is_zero_padded_over_a_dirty_slot() {
    let mut buf = formatted(&[2], 1);
    let channel = open(&mut buf);
    for len in 0..=MSG_INLINE {
        // Fill both slots with 0xFF first, so padding that is not written shows.
        for _ in 0..2 {
            channel
                .try_send(&[0xFF; MSG_INLINE], &SendMeta::default())
                .unwrap();
            channel.try_recv(&mut [0u8; MSG_INLINE]).unwrap();
        }
        let sent = pattern(len, 3);
        channel.try_send(&sent, &SendMeta::default()).unwrap();
        let guard = channel.try_recv_in_place().unwrap();
        let words: Vec<u64> = guard.payload().words().collect();
        assert_eq!(words, wire_words(&sent), "length {len}");
        assert_eq!(guard.payload().words().len(), len.div_ceil(8));
        let mut copied = vec![0u8; len];
        assert_eq!(guard.copy_to(&mut copied), len);
        assert_eq!(copied, sent, "length {len}, copy_to");
        for (index, &byte) in sent.iter().enumerate().step_by(61) {
            assert_eq!(guard.payload().get(index), Some(byte));
        }
        assert_eq!(guard.payload().get(len), None);
        guard.release().unwrap();
    }
}

#[test]
fn loans_write_at_any_offset_and_keep_the_bytes_around() {
    let mut buf = formatted(&[2], 1);
    let channel = open(&mut buf);
    let lengths = (0..=40).chain([63, 64, 65, 119, 120, 121, 500, 951, 952, 953]);
    for offset in 0..=17 {
        for len in lengths.clone().filter(|len| offset + len <= MSG_INLINE) {
            let background = pattern(MSG_INLINE, 5);
            let written = pattern(len, offset + 11);
            let mut loan = channel.try_loan().unwrap();
            assert!(loan.write_at(0, &background));
            assert!(
                loan.write_at(offset, &written),
                "offset {offset}, length {len}"
            );
            loan.commit(MSG_INLINE, &SendMeta::default()).unwrap();
            let mut out = [0u8; MSG_INLINE];
            assert_eq!(channel.try_recv(&mut out).unwrap().len, MSG_INLINE);
            let mut expected = background.clone();
            expected[offset..offset + len].copy_from_slice(&written);
            assert_eq!(&out[..], &expected[..], "offset {offset}, length {len}");
        }
    }
}

#[test]
fn loan_writes_past_the_area_write_nothing() {
    let mut buf = formatted(&[2], 1);
    let channel = open(&mut buf);
    let mut loan = channel.try_loan().unwrap();
    assert!(loan.write_at(0, &[1; MSG_INLINE]));
    assert!(!loan.write_at(MSG_INLINE - 7, &[2; 8]));
    assert!(!loan.write_at(8, &[2; MSG_INLINE]));
    assert!(!loan.write_at(usize::MAX, &[2]));
    assert!(loan.write_at(MSG_INLINE, &[]));
    loan.commit(MSG_INLINE, &SendMeta::default()).unwrap();
    let mut out = [0u8; MSG_INLINE];
    channel.try_recv(&mut out).unwrap();
    assert!(out.iter().all(|&b| b == 1));
}

#[test]
fn a_committed_length_zeroes_the_rest_of_its_last_word() {
    let mut buf = formatted(&[2], 1);
    let channel = open(&mut buf);
    for len in 0..=24 {
        let mut loan = channel.try_loan().unwrap();
        assert!(loan.write_at(0, &[0xAB; 32]));
        loan.commit(len, &SendMeta::default()).unwrap();
        let guard = channel.try_recv_in_place().unwrap();
        let words: Vec<u64> = guard.payload().words().collect();
        assert_eq!(words, wire_words(&vec![0xAB; len]), "length {len}");
        guard.release().unwrap();
    }
}
