//! Properties of validation over untrusted bytes.
//!
//! * `parse_segment` over arbitrary bytes (lengths up to 200,000, biased to the sizes where the
//!   parser changes its mind: around 128 and around `HEADER_SIZE`) never panics.
//! * Over a valid segment made with the core API and then mutated by random writes (biased to
//!   the header and entry fields) it returns `Ok` or a typed error, never panics, and when it
//!   returns `Ok` every band it reports lies inside the segment, past the header, 64-aligned,
//!   and apart from every other band.
//! * The live path over the same bytes (`Segment::attach`, `open_channel`, a few sends and
//!   receives) never panics either, and agrees with `parse_segment`.
//!
//! Case counts follow `PROPTEST_CASES`; under Miri they are capped small.

mod common;

use std::sync::OnceLock;

use common::SegmentBuf;
use dmxp_nostd::layout::{
    channel_entry_offset, HEADER_SIZE, MAGIC, MAX_CAPACITY, MAX_CHANNELS, MSG_INLINE, SLOT_ALIGN,
    SLOT_SIZE,
};
use dmxp_nostd::{parse_segment, Corruption, Error, Segment, SegmentInfo, SendMeta};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

const PID: u32 = 31337;

/// The channels of the valid base segment: (id, capacity).
const BASE_CHANNELS: [(u32, u64); 3] = [(0, 2), (7, 4), (200, 8)];
/// Slots left free after the base channels' bands, so `band_cursor` sits inside the segment.
const SPARE_SLOTS: usize = 2;

/// `PROPTEST_CASES` (through the default config), capped at `miri_cases` under Miri.
fn config(miri_cases: u32) -> Config {
    let base = Config::default();
    Config {
        cases: if cfg!(miri) {
            base.cases.min(miri_cases)
        } else {
            base.cases
        },
        failure_persistence: None,
        ..base
    }
}

// ------------------------------------------------------------------------------ inputs

/// A valid segment: three channels, a few messages sent, one received, room to spare.
fn base_segment() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let slots: u64 = BASE_CHANNELS.iter().map(|&(_, c)| c).sum();
        let mut buf = SegmentBuf::new(HEADER_SIZE + (slots as usize + SPARE_SLOTS) * SLOT_SIZE);
        {
            let segment = Segment::format(buf.region(), PID).unwrap();
            for (sent, &(id, capacity)) in BASE_CHANNELS.iter().enumerate() {
                let channel = segment.create_channel(id, capacity, PID).unwrap();
                for n in 0..=sent {
                    channel
                        .try_send(&[n as u8; 100], &SendMeta::default())
                        .unwrap();
                }
            }
            let channel = segment.open_channel(7).unwrap();
            channel.try_recv(&mut [0u8; MSG_INLINE]).unwrap();
        }
        buf.bytes().to_vec()
    })
}

/// Longest arbitrary input: 200,000 bytes natively; under Miri, which interprets every byte
/// the generator writes, a little past a header and a few slots.
const MAX_LEN: usize = if cfg!(miri) {
    HEADER_SIZE + 4 * SLOT_SIZE
} else {
    200_000
};

/// Lengths where the parser's behaviour changes, and anything up to `MAX_LEN`.
fn length_strategy() -> BoxedStrategy<usize> {
    prop_oneof![
        2 => 0usize..=MAX_LEN,
        1 => 0usize..=256,
        1 => 120usize..=136,
        2 => (HEADER_SIZE - 130)..=(HEADER_SIZE + 130),
        2 => (0usize..=16, 0usize..=64).prop_map(|(slots, extra)| HEADER_SIZE + slots * SLOT_SIZE + extra),
    ]
    .boxed()
}

/// How the arbitrary bytes are filled before any planting.
#[derive(Clone, Copy, Debug)]
enum Fill {
    Zero,
    Ones,
    Noise(u64),
}

/// What of a real header is planted at the start, to get past the first checks.
#[derive(Clone, Copy, Debug)]
enum Plant {
    Nothing,
    Magic,
    /// magic, version, max_channels, plus the given channel_count, segment_size, band_cursor.
    Header {
        channel_count: u32,
        segment_size: u64,
        band_cursor: u64,
    },
}

#[derive(Clone, Debug)]
struct Arbitrary {
    len: usize,
    fill: Fill,
    plant: Plant,
    /// Little-endian words written over the result.
    words: Vec<(usize, u64)>,
}

fn interesting_u64() -> BoxedStrategy<u64> {
    let base = base_segment().len() as u64;
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(3),
        Just(64),
        Just(SLOT_SIZE as u64),
        Just(HEADER_SIZE as u64),
        Just(HEADER_SIZE as u64 + 64),
        Just(HEADER_SIZE as u64 + SLOT_SIZE as u64),
        Just(base),
        Just(base - SLOT_SIZE as u64),
        Just(base + 1),
        Just(u64::from(u32::MAX)),
        Just(MAX_CAPACITY),
        Just(MAX_CAPACITY * 2),
        Just(u64::MAX),
        Just(u64::MAX - 63),
        Just(i64::MIN as u64),
        Just(MAGIC),
        (0u32..64).prop_map(|shift| 1u64 << shift),
        // Band starts: the base channels' own, their neighbours', misaligned ones.
        (0u64..20).prop_map(|k| HEADER_SIZE as u64 + k * SLOT_SIZE as u64),
        (0u64..300).prop_map(|k| HEADER_SIZE as u64 + k * 64),
        any::<u64>(),
    ]
    .boxed()
}

fn arbitrary_strategy() -> impl Strategy<Value = Arbitrary> {
    let fill = prop_oneof![
        1 => Just(Fill::Zero),
        1 => Just(Fill::Ones),
        3 => any::<u64>().prop_map(Fill::Noise),
    ];
    let plant = prop_oneof![
        2 => Just(Plant::Nothing),
        1 => Just(Plant::Magic),
        3 => (0u32..300, interesting_u64(), interesting_u64()).prop_map(
            |(channel_count, segment_size, band_cursor)| Plant::Header {
                channel_count,
                segment_size,
                band_cursor,
            }
        ),
    ];
    let words = prop::collection::vec((0usize..HEADER_SIZE + 4096, interesting_u64()), 0..8);
    (length_strategy(), fill, plant, words).prop_map(|(len, fill, plant, words)| Arbitrary {
        len,
        fill,
        plant,
        words,
    })
}

/// A small, fast generator for bulk noise (proptest draws only its seed).
fn noise(mut state: u64, len: usize) -> Vec<u8> {
    state |= 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write_le(bytes: &mut [u8], offset: usize, value: &[u8]) {
    for (i, &b) in value.iter().enumerate() {
        if let Some(slot) = offset.checked_add(i).and_then(|at| bytes.get_mut(at)) {
            *slot = b;
        }
    }
}

impl Arbitrary {
    fn bytes(&self) -> Vec<u8> {
        let mut bytes = match self.fill {
            Fill::Zero => vec![0; self.len],
            Fill::Ones => vec![0xFF; self.len],
            Fill::Noise(seed) => noise(seed, self.len),
        };
        match self.plant {
            Plant::Nothing => {}
            Plant::Magic => write_le(&mut bytes, 0, &MAGIC.to_le_bytes()),
            Plant::Header {
                channel_count,
                segment_size,
                band_cursor,
            } => {
                write_le(&mut bytes, 0, &MAGIC.to_le_bytes());
                write_le(&mut bytes, 8, &1u32.to_le_bytes());
                write_le(&mut bytes, 12, &(MAX_CHANNELS as u32).to_le_bytes());
                write_le(&mut bytes, 16, &channel_count.to_le_bytes());
                write_le(&mut bytes, 24, &segment_size.to_le_bytes());
                write_le(&mut bytes, 32, &band_cursor.to_le_bytes());
            }
        }
        for &(offset, value) in &self.words {
            write_le(&mut bytes, offset, &value.to_le_bytes());
        }
        bytes
    }
}

/// One write into a copy of the base segment.
#[derive(Clone, Debug)]
enum Mutation {
    Byte(usize, u8),
    U32(usize, u32),
    U64(usize, u64),
}

/// Offsets biased to the fields validation reads: header fields, the fields of the created
/// entries (and of a few others), slot sequences and metadata, and anywhere at all.
fn offset_strategy() -> BoxedStrategy<usize> {
    let len = base_segment().len();
    let header_field = prop::sample::select(vec![0usize, 8, 12, 16, 20, 24, 32, 40, 44]);
    let entry_field =
        prop::sample::select(vec![0usize, 4, 8, 12, 16, 20, 24, 28, 32, 40, 128, 256]);
    let id = prop_oneof![
        3 => prop::sample::select(BASE_CHANNELS.iter().map(|&(id, _)| id as usize).collect::<Vec<_>>()),
        1 => 0usize..MAX_CHANNELS,
    ];
    let slot_field = prop::sample::select(vec![0usize, 8, 38, 40, 64]);
    prop_oneof![
        3 => (header_field, 0usize..4).prop_map(|(field, jitter)| field + jitter),
        5 => (id, entry_field, 0usize..4)
            .prop_map(|(id, field, jitter)| channel_entry_offset(id) + field + jitter),
        2 => (0usize..(len - HEADER_SIZE) / SLOT_SIZE, slot_field)
            .prop_map(|(slot, field)| HEADER_SIZE + slot * SLOT_SIZE + field),
        2 => 0usize..len,
    ]
    .boxed()
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => (offset_strategy(), any::<u8>()).prop_map(|(at, v)| Mutation::Byte(at, v)),
        1 => (offset_strategy(), interesting_u64()).prop_map(|(at, v)| Mutation::U32(at, v as u32)),
        3 => (offset_strategy(), interesting_u64()).prop_map(|(at, v)| Mutation::U64(at, v)),
    ]
}

/// The base segment with `mutations` applied, then cut to `keep` bytes if given.
fn mutated(mutations: &[Mutation], keep: Option<usize>) -> Vec<u8> {
    let mut bytes = base_segment().to_vec();
    for mutation in mutations {
        match *mutation {
            Mutation::Byte(at, v) => write_le(&mut bytes, at, &[v]),
            Mutation::U32(at, v) => write_le(&mut bytes, at, &v.to_le_bytes()),
            Mutation::U64(at, v) => write_le(&mut bytes, at, &v.to_le_bytes()),
        }
    }
    if let Some(keep) = keep {
        bytes.truncate(keep);
    }
    bytes
}

fn keep_strategy() -> impl Strategy<Value = Option<usize>> {
    let len = base_segment().len();
    prop_oneof![
        8 => Just(None),
        1 => (0..len).prop_map(Some),
        1 => (HEADER_SIZE - 1..len).prop_map(Some),
    ]
}

// ------------------------------------------------------------------------------ checks

/// What an `Ok` from `parse_segment` promises about `bytes`.
fn check_parsed(info: &SegmentInfo, bytes: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(info.segment_len >= HEADER_SIZE as u64);
    prop_assert!(info.segment_len <= bytes.len() as u64);
    let mut bands = Vec::new();
    let mut previous_id = None;
    for channel in &info.channels {
        prop_assert!((channel.id as usize) < MAX_CHANNELS);
        prop_assert!(previous_id < Some(channel.id), "ids not in order");
        previous_id = Some(channel.id);
        prop_assert!(channel.capacity.is_power_of_two());
        prop_assert!(channel.capacity <= MAX_CAPACITY);
        prop_assert_eq!(
            channel.band_offset % SLOT_ALIGN as u64,
            0,
            "band misaligned"
        );
        prop_assert!(
            channel.band_offset >= HEADER_SIZE as u64,
            "band in the header"
        );
        let end = channel
            .capacity
            .checked_mul(SLOT_SIZE as u64)
            .and_then(|len| channel.band_offset.checked_add(len));
        prop_assert!(
            matches!(end, Some(end) if end <= info.segment_len),
            "band of channel {} runs past the segment",
            channel.id
        );
        prop_assert!(channel.depth <= channel.capacity);
        bands.push((channel.band_offset, end.unwrap_or(u64::MAX), channel.id));
    }
    bands.sort_unstable();
    for pair in bands.windows(2) {
        prop_assert!(
            pair[0].1 <= pair[1].0,
            "bands of channels {} and {} overlap",
            pair[0].2,
            pair[1].2
        );
    }
    Ok(())
}

/// A typed error says what it is about.
fn check_error(error: &Error) -> Result<(), TestCaseError> {
    prop_assert!(!error.to_string().is_empty());
    if let Error::Corrupt(corruption) = error {
        prop_assert!(!corruption.field().is_empty());
    }
    Ok(())
}

/// The live path over an aligned copy of `bytes` never panics and agrees with `parse_segment`.
fn check_live(bytes: &[u8], parsed: &Result<SegmentInfo, Error>) -> Result<(), TestCaseError> {
    let mut buf = SegmentBuf::from_bytes(bytes);
    let attached = Segment::attach(buf.region());
    let segment = match (attached, parsed) {
        (Ok(segment), _) => segment,
        (Err(error), Ok(_)) => {
            return Err(TestCaseError::fail(format!(
                "parse_segment accepted what attach refused: {error:?}"
            )))
        }
        (Err(error), Err(parse_error)) => {
            check_error(&error)?;
            if bytes.len() >= HEADER_SIZE {
                // Both validate the same header fields in the same order.
                prop_assert_eq!(&error, parse_error);
            }
            return Ok(());
        }
    };
    match parsed {
        Ok(info) => {
            let live: Vec<_> = segment
                .channels()
                .iter()
                .map(|c| (c.id, c.capacity, c.band_offset))
                .collect();
            let want: Vec<_> = info
                .channels
                .iter()
                .map(|c| (c.id, c.capacity, c.band_offset))
                .collect();
            prop_assert_eq!(live, want);
            prop_assert_eq!(segment.validate_all(), Ok(()));
        }
        Err(Error::Corrupt(corruption)) => {
            // A bad channel is refused by the live path too.
            if let Some(channel) = corruption.channel() {
                prop_assert!(
                    segment.open_channel(channel).is_err(),
                    "open_channel({}) accepted {:?}",
                    channel,
                    corruption
                );
                prop_assert!(segment.validate_all().is_err());
            }
        }
        Err(_) => {}
    }

    for id in 0..MAX_CHANNELS as u32 {
        let opened = segment.open_channel(id);
        let listed = parsed
            .as_ref()
            .ok()
            .map(|info| info.channels.iter().find(|c| c.id == id));
        match (&opened, listed) {
            (Ok(channel), Some(Some(info))) => {
                prop_assert_eq!(channel.capacity(), info.capacity);
                prop_assert_eq!(channel.geometry().band_offset, info.band_offset);
            }
            (Ok(_), Some(None)) => {
                return Err(TestCaseError::fail(format!(
                    "channel {id} opened but parse_segment did not list it"
                )))
            }
            (Err(error), Some(Some(_))) => {
                return Err(TestCaseError::fail(format!(
                    "channel {id} listed by parse_segment but open failed: {error:?}"
                )))
            }
            (Err(error), _) => check_error(error)?,
            (Ok(_), None) => {}
        }
        let Ok(channel) = opened else { continue };
        // Whatever the cursors and slots hold, these return (with any result) and stay in
        // bounds.
        let mut buf = [0u8; MSG_INLINE];
        let _ = channel.try_send(b"probe", &SendMeta::default());
        let _ = channel.try_recv(&mut buf);
        let _ = channel.try_recv(&mut buf[..8]);
        let _ = channel.try_send_batch(&[&b"a"[..], &b"bc"[..]], &SendMeta::default());
        let _ = channel.try_recv_batch(4, |meta, payload| {
            assert!(payload.len() <= MSG_INLINE);
            assert_eq!(payload.len(), meta.payload_len as usize);
        });
        if let Ok(guard) = channel.try_recv_in_place() {
            let payload = guard.payload();
            assert!(payload.len() <= MSG_INLINE);
            let _ = payload.copy_to(&mut buf);
            let _ = payload.get(payload.len().saturating_sub(1));
        }
        if let Ok(mut loan) = channel.try_loan() {
            assert!(loan.payload().write_at(0, b"loaned"));
            let _ = loan.commit(6, &SendMeta::default());
        }
        let _ = channel.info();
    }
    // Carving a new band reads the (possibly corrupt) bump cursor.
    if let Ok((channel, _)) = segment.open_or_create_channel(3, 2, PID) {
        let _ = channel.try_send(b"new", &SendMeta::default());
    }
    let _ = segment.free_space();
    Ok(())
}

// ------------------------------------------------------------------------------ properties

proptest! {
    #![proptest_config(config(1))]

    /// Arbitrary bytes: `parse_segment` returns (never panics), and anything it accepts keeps
    /// its promises.
    #[test]
    fn parse_arbitrary_bytes_never_panics(input in arbitrary_strategy()) {
        let bytes = input.bytes();
        match parse_segment(&bytes) {
            Ok(info) => check_parsed(&info, &bytes)?,
            Err(error) => check_error(&error)?,
        }
    }

    /// Same bytes at an odd address: the parser copies, so alignment does not matter.
    #[test]
    fn parse_does_not_need_alignment(input in arbitrary_strategy(), shift in 1usize..8) {
        let bytes = input.bytes();
        let mut shifted = vec![0u8; shift];
        shifted.extend_from_slice(&bytes);
        let aligned = parse_segment(&bytes).map(|info| info.channels);
        let unaligned = parse_segment(&shifted[shift..]).map(|info| info.channels);
        prop_assert_eq!(aligned, unaligned);
    }

    /// A valid segment with random writes: `Ok` with sound bands or a typed error, and the
    /// live path over the same bytes neither panics nor disagrees.
    #[test]
    fn mutated_segment_parses_or_fails_typed(
        mutations in prop::collection::vec(mutation_strategy(), 0..=8),
        keep in keep_strategy(),
    ) {
        let bytes = mutated(&mutations, keep);
        let parsed = parse_segment(&bytes);
        match &parsed {
            Ok(info) => check_parsed(info, &bytes)?,
            Err(error) => check_error(error)?,
        }
        check_live(&bytes, &parsed)?;
    }

    /// Any magic but `"DMXP_MEM"` is refused by name (0 means "still being created").
    #[test]
    fn magic_is_checked(magic in any::<u64>()) {
        prop_assume!(magic != MAGIC);
        let bytes = mutated(&[Mutation::U64(0, magic)], None);
        let expected = if magic == 0 {
            Error::NotReady
        } else {
            Error::Corrupt(Corruption::BadMagic { found: magic })
        };
        prop_assert_eq!(parse_segment(&bytes).err(), Some(expected));
    }

    /// A created channel's capacity that is not a power of two is refused by name.
    #[test]
    fn capacity_must_be_a_power_of_two(pick in 0usize..BASE_CHANNELS.len(), capacity in any::<u64>()) {
        prop_assume!(capacity != 0 && !capacity.is_power_of_two());
        let id = BASE_CHANNELS[pick].0;
        let bytes = mutated(&[Mutation::U64(channel_entry_offset(id as usize) + 8, capacity)], None);
        prop_assert_eq!(
            parse_segment(&bytes).err(),
            Some(Error::Corrupt(Corruption::CapacityNotPowerOfTwo { channel: id, capacity }))
        );
    }
}

/// The unmutated base segment parses with exactly the channels that were created, and the
/// live path opens each of them (the positive control for the properties above).
#[test]
fn base_segment_parses_with_its_channels() {
    let bytes = base_segment();
    let info = parse_segment(bytes).expect("the base segment is valid");
    let listed: Vec<_> = info.channels.iter().map(|c| (c.id, c.capacity)).collect();
    assert_eq!(listed, BASE_CHANNELS);
    let depths: Vec<_> = info.channels.iter().map(|c| c.depth).collect();
    assert_eq!(depths, [1, 1, 3], "sent 1, 2 (one received) and 3 messages");
    assert_eq!(info.segment_len, bytes.len() as u64);
    check_parsed(&info, bytes).unwrap();
    check_live(bytes, &Ok(info)).unwrap();
}
