//! The bridge's wire format: each DMXP message is an envelope, a fixed 72-byte header
//! followed by the payload, and a Zenoh sample carries one or more envelopes back to back
//! (an export puts what is waiting in its ring into one sample). The header carries what a
//! message's slot carries besides its payload (docs/MULTI_HOST.md, "The envelope"), plus
//! where the message came from and its place in its export stream, so that an importer can
//! drop loops and count gaps.
//!
//! All integers are little-endian. Nothing in a sample is trusted: [`Envelope::decode`]
//! checks the magic, the version, the header length and the payload length before anything is
//! used, and returns a typed [`DecodeError`] otherwise.

use core::fmt;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The first eight bytes of every envelope.
pub const MAGIC: [u8; 8] = *b"DMXPBRG\x01";
/// The envelope version this crate writes and reads.
pub const VERSION: u16 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = core::mem::size_of::<Header>();
/// The Zenoh encoding every envelope is published with.
pub const ENCODING: &str = "application/x-dmxp-bridge";

/// The header as it is on the wire (offsets in the field comments).
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
struct Header {
    /// 0: [`MAGIC`].
    magic: [u8; 8],
    /// 8: [`VERSION`].
    version: U16,
    /// 10: [`HEADER_LEN`]; a later version may grow the header, never shrink it.
    header_len: U16,
    /// 12: the sender's runtime (`dmxp_nostd::runtime`).
    sender_runtime: U16,
    /// 14: the message's flags, application bits only.
    flags: U16,
    /// 16: application-defined message type.
    message_type: U32,
    /// 20: the channel the message was sent on, on its source segment.
    source_channel: U32,
    /// 24: the message id on its source channel.
    message_id: U64,
    /// 32: the sender's CLOCK_MONOTONIC stamp (meaningful on the source host only), or 0.
    timestamp_ns: U64,
    /// 40: the sender's process id on the source host.
    sender_pid: U32,
    /// 44: payload bytes after the header.
    payload_len: U32,
    /// 48: [`host_id`] of the host whose bridge exported the message.
    origin_host: U64,
    /// 56: a random id of the export stream (one per export route per bridge start).
    stream_id: U64,
    /// 64: 0, 1, 2... within the stream.
    stream_seq: U64,
}

/// One DMXP message with its metadata, as carried across the bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The sender's runtime (`dmxp_nostd::runtime`).
    pub sender_runtime: u16,
    /// The message's application flags (the protocol's bits are never carried).
    pub flags: u16,
    /// Application-defined message type.
    pub message_type: u32,
    /// The channel the message was sent on at its source.
    pub source_channel: u32,
    /// The message id at its source.
    pub message_id: u64,
    /// The sender's monotonic timestamp at its source, or 0.
    pub timestamp_ns: u64,
    /// The sender's process id at its source.
    pub sender_pid: u32,
    /// [`host_id`] of the exporting host.
    pub origin_host: u64,
    /// The export stream the message belongs to.
    pub stream_id: u64,
    /// The message's place in its stream.
    pub stream_seq: u64,
    /// The message's bytes.
    pub payload: &'a [u8],
}

/// Why a sample is not a DMXP envelope. The importer drops such a sample and counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than a header.
    Truncated {
        /// Bytes in the sample.
        len: usize,
    },
    /// The first eight bytes are not [`MAGIC`].
    BadMagic,
    /// A version this crate does not read.
    UnsupportedVersion(u16),
    /// A header length below [`HEADER_LEN`] or past the sample's end.
    BadHeaderLength(u16),
    /// The payload length does not match the bytes after the header.
    BadPayloadLength {
        /// What the header says.
        stated: u32,
        /// What the sample holds.
        actual: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { len } => {
                write!(f, "{len} bytes, shorter than the {HEADER_LEN}-byte header")
            }
            DecodeError::BadMagic => f.write_str("not a DMXP bridge envelope (bad magic)"),
            DecodeError::UnsupportedVersion(v) => write!(f, "envelope version {v} is not 1"),
            DecodeError::BadHeaderLength(n) => write!(f, "header length {n} is out of range"),
            DecodeError::BadPayloadLength { stated, actual } => {
                write!(
                    f,
                    "header states {stated} payload bytes, the sample has {actual}"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

impl<'a> Envelope<'a> {
    /// Appends the envelope's bytes (header, then payload) to `out`.
    ///
    /// ```
    /// use dmxp_bridge::envelope::{Envelope, HEADER_LEN};
    ///
    /// let envelope = Envelope { payload: b"hello", ..Envelope::default_for_tests() };
    /// let mut wire = Vec::new();
    /// envelope.encode_into(&mut wire);
    /// assert_eq!(wire.len(), HEADER_LEN + 5);
    /// assert_eq!(Envelope::decode(&wire), Ok(envelope));
    /// ```
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let header = Header {
            magic: MAGIC,
            version: VERSION.into(),
            header_len: (HEADER_LEN as u16).into(),
            sender_runtime: self.sender_runtime.into(),
            flags: self.flags.into(),
            message_type: self.message_type.into(),
            source_channel: self.source_channel.into(),
            message_id: self.message_id.into(),
            timestamp_ns: self.timestamp_ns.into(),
            sender_pid: self.sender_pid.into(),
            // A payload over 4 GiB cannot come out of a DMXP channel (max_message_size is u32).
            payload_len: (self.payload.len() as u32).into(),
            origin_host: self.origin_host.into(),
            stream_id: self.stream_id.into(),
            stream_seq: self.stream_seq.into(),
        };
        out.reserve(HEADER_LEN + self.payload.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(self.payload);
    }

    /// Reads the envelope at the start of untrusted bytes, borrowing its payload; returns it
    /// and the bytes after it (the next envelope of a sample that carries several).
    ///
    /// ```
    /// use dmxp_bridge::envelope::Envelope;
    ///
    /// let mut wire = Vec::new();
    /// Envelope { payload: b"one", ..Envelope::default_for_tests() }.encode_into(&mut wire);
    /// Envelope { payload: b"two", ..Envelope::default_for_tests() }.encode_into(&mut wire);
    /// let (first, rest) = Envelope::decode_prefix(&wire).unwrap();
    /// assert_eq!((first.payload, Envelope::decode(rest).unwrap().payload), (&b"one"[..], &b"two"[..]));
    /// ```
    pub fn decode_prefix(bytes: &'a [u8]) -> Result<(Self, &'a [u8]), DecodeError> {
        let (header, _) = Header::ref_from_prefix(bytes)
            .map_err(|_| DecodeError::Truncated { len: bytes.len() })?;
        if header.magic != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if header.version.get() != VERSION {
            return Err(DecodeError::UnsupportedVersion(header.version.get()));
        }
        let header_len = header.header_len.get();
        if usize::from(header_len) < HEADER_LEN || usize::from(header_len) > bytes.len() {
            return Err(DecodeError::BadHeaderLength(header_len));
        }
        let after_header = &bytes[usize::from(header_len)..];
        let stated = header.payload_len.get();
        let Some(payload) = usize::try_from(stated)
            .ok()
            .and_then(|len| after_header.get(..len))
        else {
            return Err(DecodeError::BadPayloadLength {
                stated,
                actual: after_header.len(),
            });
        };
        let envelope = Envelope {
            sender_runtime: header.sender_runtime.get(),
            flags: header.flags.get(),
            message_type: header.message_type.get(),
            source_channel: header.source_channel.get(),
            message_id: header.message_id.get(),
            timestamp_ns: header.timestamp_ns.get(),
            sender_pid: header.sender_pid.get(),
            origin_host: header.origin_host.get(),
            stream_id: header.stream_id.get(),
            stream_seq: header.stream_seq.get(),
            payload,
        };
        Ok((envelope, &after_header[payload.len()..]))
    }

    /// Every envelope of a sample, in order: one or more back to back. The iterator ends
    /// after the first error (what follows a bad envelope cannot be found), and an empty
    /// sample is an error, not zero envelopes.
    ///
    /// ```
    /// use dmxp_bridge::envelope::{DecodeError, Envelope};
    ///
    /// let mut wire = Vec::new();
    /// Envelope { payload: b"one", ..Envelope::default_for_tests() }.encode_into(&mut wire);
    /// wire.extend_from_slice(b"junk");
    /// let read: Vec<_> = Envelope::decode_all(&wire).collect();
    /// assert_eq!(read.len(), 2);
    /// assert_eq!(read[0].as_ref().unwrap().payload, b"one");
    /// assert_eq!(read[1], Err(DecodeError::Truncated { len: 4 }));
    /// ```
    pub fn decode_all(bytes: &'a [u8]) -> impl Iterator<Item = Result<Self, DecodeError>> + 'a {
        let mut rest = Some(bytes);
        std::iter::from_fn(move || {
            let bytes = rest.take()?;
            match Self::decode_prefix(bytes) {
                Ok((envelope, after)) => {
                    // Each envelope is at least a header long, so this ends.
                    rest = (!after.is_empty()).then_some(after);
                    Some(Ok(envelope))
                }
                Err(e) => Some(Err(e)),
            }
        })
    }

    /// Reads an envelope from untrusted bytes, borrowing its payload.
    ///
    /// ```
    /// use dmxp_bridge::envelope::{DecodeError, Envelope};
    ///
    /// assert_eq!(Envelope::decode(b"short"), Err(DecodeError::Truncated { len: 5 }));
    /// assert_eq!(Envelope::decode(&[0u8; 100]), Err(DecodeError::BadMagic));
    /// ```
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let (envelope, rest) = Self::decode_prefix(bytes)?;
        if !rest.is_empty() {
            return Err(DecodeError::BadPayloadLength {
                stated: envelope.payload.len() as u32,
                actual: envelope.payload.len() + rest.len(),
            });
        }
        Ok(envelope)
    }

    /// An envelope with every field set to a distinct value and an empty payload, for
    /// examples and tests.
    #[doc(hidden)]
    pub fn default_for_tests() -> Envelope<'static> {
        Envelope {
            sender_runtime: 3,
            flags: 0x0100,
            message_type: 7,
            source_channel: 2,
            message_id: 41,
            timestamp_ns: 123_456_789,
            sender_pid: 4242,
            origin_host: host_id("a"),
            stream_id: 99,
            stream_seq: 5,
            payload: b"",
        }
    }
}

/// A host's 64-bit id in envelopes: the FNV-1a hash of its name. Two bridges on one host must
/// use the same name, and two hosts different names (the default is the hostname).
///
/// ```
/// assert_eq!(dmxp_bridge::envelope::host_id("a"), dmxp_bridge::envelope::host_id("a"));
/// assert_ne!(dmxp_bridge::envelope::host_id("a"), dmxp_bridge::envelope::host_id("b"));
/// ```
pub fn host_id(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Envelope {
            payload,
            ..Envelope::default_for_tests()
        }
        .encode_into(&mut out);
        out
    }

    #[test]
    fn header_is_72_bytes_with_fields_at_their_documented_offsets() {
        assert_eq!(HEADER_LEN, 72);
        let bytes = wire(&[0xAB; 3]);
        assert_eq!(&bytes[0..8], &MAGIC);
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 1);
        assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 72);
        assert_eq!(u16::from_le_bytes([bytes[12], bytes[13]]), 3);
        assert_eq!(u32::from_le_bytes(bytes[16..20].try_into().unwrap()), 7);
        assert_eq!(u64::from_le_bytes(bytes[24..32].try_into().unwrap()), 41);
        assert_eq!(u32::from_le_bytes(bytes[44..48].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(bytes[64..72].try_into().unwrap()), 5);
        assert_eq!(&bytes[72..], &[0xAB; 3]);
    }

    #[test]
    fn every_truncation_and_corruption_is_a_typed_error() {
        let good = wire(b"payload");
        for len in 0..HEADER_LEN {
            assert_eq!(
                Envelope::decode(&good[..len]),
                Err(DecodeError::Truncated { len })
            );
        }
        // A cut inside the payload disagrees with payload_len.
        assert_eq!(
            Envelope::decode(&good[..good.len() - 1]),
            Err(DecodeError::BadPayloadLength {
                stated: 7,
                actual: 6
            })
        );
        let mut extra = good.clone();
        extra.push(0);
        assert!(matches!(
            Envelope::decode(&extra),
            Err(DecodeError::BadPayloadLength { .. })
        ));
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert_eq!(Envelope::decode(&bad), Err(DecodeError::BadMagic));
        let mut bad = good.clone();
        bad[8] = 2;
        assert_eq!(
            Envelope::decode(&bad),
            Err(DecodeError::UnsupportedVersion(2))
        );
        for header_len in [0u16, 71, u16::MAX] {
            let mut bad = good.clone();
            bad[10..12].copy_from_slice(&header_len.to_le_bytes());
            assert_eq!(
                Envelope::decode(&bad),
                Err(DecodeError::BadHeaderLength(header_len))
            );
        }
        let mut bad = good;
        bad[44..48].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Envelope::decode(&bad),
            Err(DecodeError::BadPayloadLength { .. })
        ));
    }

    #[test]
    fn a_longer_header_from_a_later_writer_is_skipped() {
        let mut bytes = wire(b"xy");
        bytes[10..12].copy_from_slice(&80u16.to_le_bytes());
        bytes.splice(72..72, [0u8; 8]);
        assert_eq!(Envelope::decode(&bytes).unwrap().payload, b"xy");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for round in 0..10_000 {
            let mut bytes = wire(&vec![1; round % 97]);
            for _ in 0..(round % 5 + 1) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state as usize) % bytes.len();
                bytes[at] = (state >> 32) as u8;
            }
            if let Ok(envelope) = Envelope::decode(&bytes) {
                assert!(envelope.payload.len() <= bytes.len() - HEADER_LEN);
            }
        }
    }
}
