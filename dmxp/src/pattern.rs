//! Verifiable test payloads: derived from a channel and an index, with a checksum, so a
//! receiver can tell a right message from a garbled, misrouted or duplicated one. Used by the
//! examples and the cross-process tests; other languages' clients can produce and check the
//! same bytes.
//!
//! Layout of a payload of `len` bytes (`len >= 24`), little-endian:
//!
//! | bytes | content |
//! |---|---|
//! | 0..8 | channel id (u64) |
//! | 8..16 | index (u64) |
//! | 16..len-8 | byte `k` (from 16) = `(channel * 31 + index * 7 + k) mod 256` |
//! | len-8..len | FNV-1a 64 of bytes `0..len-8` |

use std::fmt;

/// The shortest pattern payload.
pub const MIN_LEN: usize = 24;

/// The length the examples use for message `index`: 32 to 144 bytes, varying with the index.
#[must_use]
pub fn default_len(index: u64) -> usize {
    32 + (index % 8) as usize * 16
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn filler(channel: u64, index: u64, k: usize) -> u8 {
    channel
        .wrapping_mul(31)
        .wrapping_add(index.wrapping_mul(7))
        .wrapping_add(k as u64) as u8
}

/// The lengths of the large-message run of the examples (`--large`): message `index` is
/// `[24, 960, 961, 65,536, limit][index % 5]` bytes long, clamped to `limit` (the channel's
/// largest message). They span one slot, its edge, the first run, and the largest run.
#[must_use]
pub fn large_len(index: u64, limit: usize) -> usize {
    [MIN_LEN, 960, 961, 65_536, limit][(index % 5) as usize].min(limit)
}

/// The lengths of the examples' blobs (`--blob`, PROTOCOL.md §13): message `index` is
/// `[24, 4,096, 65,537, 1 MiB, 4 MiB][index % 5]` bytes long: tiny, a page, just past a
/// 64 KiB block, and the two large classes of [`blob_classes`].
#[must_use]
pub fn blob_len(index: u64) -> usize {
    [MIN_LEN, 4096, 65_537, 1 << 20, 4 << 20][(index % 5) as usize]
}

/// The blob pool the examples create with `--blob` (the same in every language's examples):
/// 32 blocks of 64 KiB, 8 of 1 MiB and 6 of 4 MiB.
#[must_use]
pub fn blob_classes() -> crate::BlobPoolSpec {
    crate::BlobPoolSpec::new()
        .with_class(64 << 10, 32)
        .with_class(1 << 20, 8)
        .with_class(4 << 20, 6)
}

/// The payload for (`channel`, `index`) of `len` bytes (at least 24).
#[must_use]
pub fn encode(channel: u32, index: u64, len: usize) -> Vec<u8> {
    let len = len.max(MIN_LEN);
    let channel = u64::from(channel);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&channel.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend((16..len - 8).map(|k| filler(channel, index, k)));
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// Why a payload is not a valid pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternError {
    /// Shorter than [`MIN_LEN`].
    TooShort {
        /// The payload's length.
        len: usize,
    },
    /// The checksum does not match the bytes.
    Checksum,
    /// The checksum matches but the filler does not (a sender using another scheme).
    Filler {
        /// Offset of the first wrong byte.
        at: usize,
    },
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternError::TooShort { len } => write!(f, "payload of {len} bytes is too short"),
            PatternError::Checksum => write!(f, "checksum mismatch"),
            PatternError::Filler { at } => write!(f, "filler byte {at} is wrong"),
        }
    }
}

impl std::error::Error for PatternError {}

/// Checks a payload and returns its (channel, index).
pub fn decode(payload: &[u8]) -> Result<(u64, u64), PatternError> {
    let len = payload.len();
    if len < MIN_LEN {
        return Err(PatternError::TooShort { len });
    }
    let word = |at: usize| {
        let mut le = [0u8; 8];
        le.copy_from_slice(&payload[at..at + 8]);
        u64::from_le_bytes(le)
    };
    if fnv1a(&payload[..len - 8]) != word(len - 8) {
        return Err(PatternError::Checksum);
    }
    let (channel, index) = (word(0), word(8));
    if let Some(at) = (16..len - 8).find(|&k| payload[k] != filler(channel, index, k)) {
        return Err(PatternError::Filler { at });
    }
    Ok((channel, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_detection() {
        for index in [0u64, 1, 7, 8, 1_000_003] {
            let bytes = encode(3, index, default_len(index));
            assert_eq!(bytes.len(), default_len(index));
            assert_eq!(decode(&bytes), Ok((3, index)));
            for flip in [0, 9, 20, bytes.len() - 1] {
                let mut bad = bytes.clone();
                bad[flip] ^= 0x10;
                assert!(decode(&bad).is_err(), "flip at {flip} went unnoticed");
            }
        }
        assert_eq!(decode(&[0; 10]), Err(PatternError::TooShort { len: 10 }));
        assert_eq!(encode(0, 0, 5).len(), MIN_LEN);
        let long = encode(2, 9, 70_000);
        assert_eq!(long.len(), 70_000);
        assert_eq!(decode(&long), Ok((2, 9)));
        let lens: Vec<usize> = (0..5).map(|i| large_len(i, 262_144)).collect();
        assert_eq!(lens, [24, 960, 961, 65_536, 262_144]);
        assert_eq!(large_len(3, 10_000), 10_000);
    }
}
