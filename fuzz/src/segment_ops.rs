//! The `segment_ops` target: a valid segment, corrupted by fuzzer-chosen writes, then attached
//! and driven by a fuzzer-chosen sequence of channel operations.
//!
//! The input decodes to a [`Setup`] (two channels' capacities and how many messages they hold)
//! and a list of steps. A run of [`Scribble`]s is written straight into the segment's bytes
//! (no region alive, so plain writes are fine); each following run of [`Op`]s is a *session*:
//! validate the bytes with `parse_segment`, attach, open channels 0..4, run the ops, detach.
//!
//! What must hold, whatever was written:
//! * nothing panics, nothing reads or writes outside the segment (the `Region` checks every
//!   view, and the sanitizer build would catch anything else), every operation returns;
//! * `parse_segment` of the bytes and `Segment::attach` of the same bytes agree: the same
//!   header error, or the same channel list and the same first entry error;
//! * every error is the one its inputs explain (a `TooLarge` only for a long payload, a
//!   `Corrupt` only for a `payload_len` above 960, a `BufferTooSmall` only when it is so...);
//! * what a receive hands out is within bounds: lengths at most 960 and the caller's buffer;
//! * blocking operations leave the waiter counts as they found them.

use crate::support::{decode, formatted_segment, pattern, Patience};
use arbitrary::{Arbitrary, Unstructured};
use dmxp_nostd::layout::{
    CHANNEL_ENTRY_SIZE, CHANNEL_TABLE_OFFSET, HEADER_SIZE, MAX_CHANNELS, MIN_CAPACITY, MSG_INLINE,
    SLOT_SIZE,
};
use dmxp_nostd::{
    parse_segment, AlignedBlock, Channel, Error, Opened, RecvError, RecvGuard, Region, Segment,
    SegmentInfo, SendError, SendLoan, SendMeta,
};
use zerocopy::IntoBytes;

/// Channel ids opened in each session: 0 and 1 exist from the setup, 2 and 3 only once a
/// `Create` op made them (or a scribble faked them).
const OPENED: u32 = 4;
/// Steps decoded from one input, at most.
const MAX_STEPS: usize = 192;
/// Loans and in-place guards held at once, at most each.
const MAX_HELD: usize = 8;
/// The pid stamped by this harness.
const PID: u32 = 4242;
/// `Busy` results allowed per input before ring operations stop. A corrupt sequence or cursor
/// makes an operation spin through the core's whole retry limit (milliseconds) before it
/// gives up; that path is worth reaching, not worth repeating all run long.
const BUSY_BUDGET: usize = 2;

/// How the segment looks before any scribble.
#[derive(Arbitrary, Debug, Default)]
pub struct Setup {
    /// log2 of the capacities of channels 0 and 1, less one (taken mod 3: 2..=8 slots).
    capacity_log2: [u8; 2],
    /// Free slots left after the two bands (mod 4), room for `Create` ops.
    spare_slots: u8,
    /// Messages sent into each channel, then how many of them are received again.
    sent: [u8; 2],
    received: [u8; 2],
    /// Whether to leave a skip marker (a dropped loan) at the end of channel 0.
    skip_marker: bool,
}

/// One step of the input.
#[derive(Debug)]
pub enum Step {
    Scribble(Scribble),
    Op(Op),
}

/// A write into the segment between sessions.
#[derive(Arbitrary, Debug)]
pub struct Scribble {
    target: Target,
    value: Value,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Target {
    Header(HeaderField),
    Entry {
        channel: u8,
        field: EntryField,
    },
    Slot {
        channel: bool,
        slot: u8,
        field: SlotField,
    },
    Anywhere(u32),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum HeaderField {
    Magic,
    Version,
    MaxChannels,
    ChannelCount,
    Reserved,
    SegmentSize,
    BandCursor,
    CreatorPid,
    HeaderFlags,
    Byte(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum EntryField {
    ChannelId,
    Flags,
    Capacity,
    BandOffset,
    State,
    CreatorPid,
    NotEmptySeq,
    NotEmptyWaiters,
    NotFullSeq,
    NotFullWaiters,
    Tail,
    Head,
    Byte(u16),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum SlotField {
    Sequence,
    MessageId,
    Timestamp,
    ChannelId,
    MessageType,
    SenderPid,
    SenderRuntime,
    Flags,
    PayloadLen,
    PayloadWord(u16),
    Byte(u16),
}

/// What to write: a value of the field's natural width, or raw bytes.
#[derive(Arbitrary, Debug)]
pub enum Value {
    Word(u64),
    Special(Special),
    Bytes(Vec<u8>),
}

/// Values that sit on the edges the validator and the ring must handle.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Special {
    Zero,
    One,
    Three,
    Len5000,
    U32Max,
    TwoPow40,
    U64Max,
    SignBit,
    HeaderSize,
    InsideHeader,
    SegmentLen,
    NearEnd,
    BandOfChannel0,
    BandOfChannel1,
    /// The current value plus `n` (a sequence or cursor just ahead).
    Plus(u8),
    /// The current value minus `n`.
    Minus(u8),
}

/// A channel operation inside a session.
#[derive(Arbitrary, Debug)]
pub enum Op {
    Send {
        channel: u8,
        len: u16,
        fill: u8,
        flags: u16,
    },
    SendBatch {
        channel: u8,
        count: u8,
        len: u16,
        fill: u8,
    },
    SendBlocking {
        channel: u8,
        len: u16,
        fill: u8,
    },
    Loan {
        channel: u8,
        len: u16,
        fill: u8,
        commit: bool,
    },
    HoldLoan {
        channel: u8,
    },
    FinishLoan {
        index: u8,
        len: u16,
        commit: bool,
    },
    Recv {
        channel: u8,
        buf_len: u16,
    },
    RecvBlocking {
        channel: u8,
    },
    RecvBatch {
        channel: u8,
        max: u8,
    },
    RecvInPlace {
        channel: u8,
        hold: bool,
    },
    ReleaseGuard {
        index: u8,
    },
    Create {
        id: u16,
        capacity_log2: u8,
    },
    Inspect {
        channel: u8,
    },
    Survey,
}

/// Counts of what a run did (the replay test checks the corpus exercises each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub scribbles: usize,
    pub sessions: usize,
    /// Sessions whose header validated.
    pub attached: usize,
    /// Sessions where `parse_segment` found a bad header or entry.
    pub rejected: usize,
    pub ops: usize,
    pub messages_received: usize,
    /// Receives that reported a corrupt or lost message.
    pub bad_messages: usize,
    /// Operations that gave up with `Busy`.
    pub busy: usize,
}

/// Decodes `data` into a setup and steps (the same way for the fuzzer and the replay).
pub fn decode_input(data: &[u8]) -> (Setup, Vec<Step>) {
    decode(data, MAX_STEPS, |u: &mut Unstructured<'_>| {
        // One step in eight is a scribble, so sessions hold several ops.
        Ok(if u.ratio(1u8, 8u8)? {
            Step::Scribble(u.arbitrary()?)
        } else {
            Step::Op(u.arbitrary()?)
        })
    })
}

/// Runs one input. Panics if an invariant breaks.
pub fn run(data: &[u8]) -> Stats {
    let (setup, steps) = decode_input(data);
    let mut stats = Stats::default();
    let (mut memory, layout) = build(&setup);
    let mut index = 0;
    loop {
        while let Some(Step::Scribble(scribble)) = steps.get(index) {
            scribble.apply(memory.as_mut_bytes(), &layout);
            stats.scribbles += 1;
            index += 1;
        }
        let ops: Vec<&Op> = steps[index..]
            .iter()
            .map_while(|step| match step {
                Step::Op(op) => Some(op),
                Step::Scribble(_) => None,
            })
            .collect();
        index += ops.len();
        session(&mut memory, &ops, &mut stats);
        if index >= steps.len() {
            return stats;
        }
    }
}

/// Where the setup put things, to aim scribbles at fields.
struct Layout {
    len: usize,
    capacities: [u64; 2],
    bands: [u64; 2],
}

fn build(setup: &Setup) -> (Vec<AlignedBlock>, Layout) {
    let capacities = setup.capacity_log2.map(|c| MIN_CAPACITY << (c % 3));
    let slots = capacities[0] + capacities[1] + u64::from(setup.spare_slots % 4);
    let mut memory = formatted_segment(HEADER_SIZE + slots as usize * SLOT_SIZE, PID);
    let bytes = memory.as_mut_bytes();
    let len = bytes.len();
    let region = Region::new(bytes).expect("AlignedBlock memory is aligned");
    let segment = Segment::attach(region).expect("a formatted segment attaches");
    let mut bands = [0; 2];
    for (id, capacity) in capacities.iter().copied().enumerate() {
        let channel = segment
            .create_channel(id as u32, capacity, PID)
            .expect("the segment has room for both channels");
        bands[id] = channel.geometry().band_offset;
        let sent = u64::from(setup.sent[id]) % (capacity + 1);
        for n in 0..sent {
            let payload = pattern(id as u8, n, (n as usize * 97) % (MSG_INLINE + 1));
            let meta = SendMeta {
                message_type: n as u32,
                sender_pid: PID,
                ..SendMeta::default()
            };
            channel.try_send(&payload, &meta).expect("room was left");
        }
        let mut buf = [0u8; MSG_INLINE];
        for _ in 0..u64::from(setup.received[id]) % (sent + 1) {
            channel.try_recv(&mut buf).expect("a message was sent");
        }
        if id == 0 && setup.skip_marker {
            // A loan dropped without commit leaves a marker that consumers pass over.
            drop(channel.try_loan());
        }
    }
    let layout = Layout {
        len,
        capacities,
        bands,
    };
    (memory, layout)
}

impl Scribble {
    fn apply(&self, bytes: &mut [u8], layout: &Layout) {
        let (offset, width) = self.target.locate(layout);
        let current = read_le(bytes, offset, width);
        let data: Vec<u8> = match &self.value {
            Value::Word(word) => word.to_le_bytes()[..width].to_vec(),
            Value::Special(special) => {
                special.resolve(layout, current).to_le_bytes()[..width].to_vec()
            }
            Value::Bytes(raw) => raw.iter().copied().take(64).collect(),
        };
        // Writes that would run past the end are clipped: the harness itself must not panic.
        let end = offset.saturating_add(data.len()).min(bytes.len());
        if let Some(dst) = bytes.get_mut(offset..end) {
            dst.copy_from_slice(&data[..end - offset]);
        }
    }
}

/// Reads up to 8 little-endian bytes (missing bytes read as zero).
fn read_le(bytes: &[u8], offset: usize, width: usize) -> u64 {
    let mut le = [0u8; 8];
    for (i, byte) in le.iter_mut().enumerate().take(width) {
        *byte = offset
            .checked_add(i)
            .and_then(|at| bytes.get(at))
            .copied()
            .unwrap_or(0);
    }
    u64::from_le_bytes(le)
}

impl Target {
    /// Byte offset and natural width of the field.
    fn locate(self, layout: &Layout) -> (usize, usize) {
        match self {
            Target::Header(field) => field.locate(),
            Target::Entry { channel, field } => {
                let (offset, width) = field.locate();
                let id = channel as usize % MAX_CHANNELS;
                // Mostly the channels the sessions open, sometimes any entry.
                let id = if id < 240 { id % OPENED as usize } else { id };
                (
                    CHANNEL_TABLE_OFFSET + id * CHANNEL_ENTRY_SIZE + offset,
                    width,
                )
            }
            Target::Slot {
                channel,
                slot,
                field,
            } => {
                let which = usize::from(channel);
                let (offset, width) = field.locate();
                // Slots past the capacity land in the next band or the spare space.
                let index = u64::from(slot) % (layout.capacities[which] + 1);
                let base = layout.bands[which] + index * SLOT_SIZE as u64;
                (base as usize + offset, width)
            }
            Target::Anywhere(at) => (at as usize % layout.len, 8),
        }
    }
}

impl HeaderField {
    fn locate(self) -> (usize, usize) {
        match self {
            HeaderField::Magic => (0, 8),
            HeaderField::Version => (8, 4),
            HeaderField::MaxChannels => (12, 4),
            HeaderField::ChannelCount => (16, 4),
            HeaderField::Reserved => (20, 4),
            HeaderField::SegmentSize => (24, 8),
            HeaderField::BandCursor => (32, 8),
            HeaderField::CreatorPid => (40, 4),
            HeaderField::HeaderFlags => (44, 4),
            HeaderField::Byte(at) => (usize::from(at) % 128, 1),
        }
    }
}

impl EntryField {
    fn locate(self) -> (usize, usize) {
        match self {
            EntryField::ChannelId => (0, 4),
            EntryField::Flags => (4, 4),
            EntryField::Capacity => (8, 8),
            EntryField::BandOffset => (16, 8),
            EntryField::State => (24, 4),
            EntryField::CreatorPid => (28, 4),
            EntryField::NotEmptySeq => (32, 4),
            EntryField::NotEmptyWaiters => (36, 4),
            EntryField::NotFullSeq => (40, 4),
            EntryField::NotFullWaiters => (44, 4),
            EntryField::Tail => (128, 8),
            EntryField::Head => (256, 8),
            EntryField::Byte(at) => (usize::from(at) % CHANNEL_ENTRY_SIZE, 1),
        }
    }
}

impl SlotField {
    fn locate(self) -> (usize, usize) {
        match self {
            SlotField::Sequence => (0, 8),
            SlotField::MessageId => (8, 8),
            SlotField::Timestamp => (16, 8),
            SlotField::ChannelId => (24, 4),
            SlotField::MessageType => (28, 4),
            SlotField::SenderPid => (32, 4),
            SlotField::SenderRuntime => (36, 2),
            SlotField::Flags => (38, 2),
            SlotField::PayloadLen => (40, 4),
            SlotField::PayloadWord(word) => (64 + usize::from(word) % (MSG_INLINE / 8) * 8, 8),
            SlotField::Byte(at) => (usize::from(at) % SLOT_SIZE, 1),
        }
    }
}

impl Special {
    fn resolve(self, layout: &Layout, current: u64) -> u64 {
        match self {
            Special::Zero => 0,
            Special::One => 1,
            Special::Three => 3,
            Special::Len5000 => 5000,
            Special::U32Max => u64::from(u32::MAX),
            Special::TwoPow40 => 1 << 40,
            Special::U64Max => u64::MAX,
            Special::SignBit => 1 << 63,
            Special::HeaderSize => HEADER_SIZE as u64,
            Special::InsideHeader => HEADER_SIZE as u64 - 64,
            Special::SegmentLen => layout.len as u64,
            Special::NearEnd => layout.len as u64 - 64,
            Special::BandOfChannel0 => layout.bands[0],
            Special::BandOfChannel1 => layout.bands[1],
            Special::Plus(n) => current.wrapping_add(u64::from(n)),
            Special::Minus(n) => current.wrapping_sub(u64::from(n)),
        }
    }
}

/// Errors `parse_segment` and `Segment::attach` both derive from the header alone.
fn is_header_error(error: &Error) -> bool {
    match error {
        Error::NotReady | Error::RegionTooSmall { .. } => true,
        Error::Corrupt(corruption) => corruption.channel().is_none(),
        _ => false,
    }
}

/// Checks that the byte parser and the live attach agree on `segment`.
fn cross_check(parsed: &Result<SegmentInfo, Error>, attached: &Result<Segment<'_>, Error>) {
    match (parsed, attached) {
        (Ok(info), Ok(segment)) => {
            assert_eq!(segment.len(), info.segment_len);
            assert_eq!(segment.channels(), info.channels, "channel lists differ");
            assert_eq!(segment.validate_all(), Ok(()));
            for channel in &info.channels {
                let opened = segment
                    .open_channel(channel.id)
                    .unwrap_or_else(|e| panic!("parsed channel {} fails to open: {e}", channel.id));
                assert_eq!(opened.capacity(), channel.capacity);
                assert_eq!(opened.geometry().band_offset, channel.band_offset);
            }
        }
        (Err(error), Err(attach_error)) => {
            assert!(
                is_header_error(error),
                "attach failed on a valid header: {attach_error}"
            );
            assert_eq!(error, attach_error);
        }
        (Err(error), Ok(segment)) => {
            assert!(
                !is_header_error(error),
                "attach accepted a header the parser refused: {error}"
            );
            assert_eq!(segment.validate_all(), Err(*error), "validators disagree");
        }
        (Ok(_), Err(error)) => panic!("attach refused a segment the parser accepted: {error}"),
    }
}

fn session(memory: &mut [AlignedBlock], ops: &[&Op], stats: &mut Stats) {
    stats.sessions += 1;
    let bytes = memory.as_mut_bytes();
    let parsed = parse_segment(bytes);
    if parsed.is_err() {
        stats.rejected += 1;
    }
    let region = Region::new(bytes).expect("AlignedBlock memory is aligned");
    let attached = Segment::attach(region);
    cross_check(&parsed, &attached);
    let Ok(segment) = attached else {
        return;
    };
    stats.attached += 1;
    assert!(segment.len() <= region.len() as u64);
    let channels: Vec<Option<Channel<'_>>> = (0..OPENED)
        .map(|id| match segment.open_channel(id) {
            Ok(channel) => {
                check_geometry(&segment, &channel);
                Some(channel)
            }
            Err(error) => {
                assert!(!error.to_string().is_empty());
                None
            }
        })
        .collect();
    let mut held = Held {
        loans: Vec::new(),
        guards: Vec::new(),
    };
    // A channel that answered `Busy` is left alone for the rest of the session: it stays
    // wedged until a scribble changes it.
    let mut usable: Vec<Option<&Channel<'_>>> = channels.iter().map(Option::as_ref).collect();
    for op in ops {
        if stats.busy >= BUSY_BUDGET {
            usable.iter_mut().for_each(|channel| *channel = None);
        }
        stats.ops += 1;
        let busy_before = stats.busy;
        run_op(&segment, &usable, &mut held, op, stats);
        if stats.busy > busy_before {
            if let Some(index) = op.channel() {
                let at = usize::from(index) % usable.len();
                usable[at] = None;
            }
        }
    }
    // Dropping what is still held publishes skip markers and frees slots: it must not panic.
    drop(held);
    for channel in channels.iter().flatten() {
        let info = channel.info();
        assert!(info.depth <= info.capacity);
    }
}

fn check_geometry(segment: &Segment<'_>, channel: &Channel<'_>) {
    let geometry = channel.geometry();
    assert!(geometry.capacity.is_power_of_two());
    assert!(geometry.band_offset >= HEADER_SIZE as u64);
    assert!(geometry.band_end() <= segment.len());
    assert_eq!(channel.capacity(), geometry.capacity);
}

struct Held<'c, 'a> {
    loans: Vec<SendLoan<'c, 'a>>,
    guards: Vec<RecvGuard<'c, 'a>>,
}

fn meta(len: usize, flags: u16) -> SendMeta {
    SendMeta {
        message_type: len as u32,
        flags,
        timestamp_ns: 7,
        sender_pid: PID,
        sender_runtime: dmxp_nostd::layout::runtime::RUST,
    }
}

fn payload_len(raw: u16) -> usize {
    // About one in sixteen is too long for a slot.
    usize::from(raw) % 1024
}

fn check_send(result: Result<u64, SendError>, len: usize, flags: u16, blocking: bool) -> bool {
    let valid = len <= MSG_INLINE && flags & 0x00FF == 0;
    match result {
        Ok(_) => assert!(valid, "accepted a bad send (len {len}, flags {flags:#x})"),
        Err(SendError::TooLarge { len: l, limit }) => {
            assert_eq!((l, limit), (len, MSG_INLINE));
            assert!(len > MSG_INLINE);
        }
        Err(SendError::ReservedFlags { flags: f }) => {
            assert_eq!(f, flags);
            assert!(len <= MSG_INLINE && flags & 0x00FF != 0);
        }
        Err(SendError::Full) | Err(SendError::Busy) => assert!(valid),
        Err(SendError::TimedOut) => assert!(blocking && valid),
        // A scribbled sequence looks like a repair that revoked the claim.
        Err(SendError::Revoked { .. }) => assert!(valid),
    }
    matches!(result, Err(SendError::Busy))
}

fn check_recv_error(error: RecvError, buf_len: usize, blocking: bool, stats: &mut Stats) {
    match error {
        RecvError::Empty => assert!(!blocking, "a blocking receive returned Empty"),
        RecvError::Pending { .. } => assert!(!blocking, "a blocking receive returned Pending"),
        RecvError::TimedOut => assert!(blocking),
        RecvError::BufferTooSmall { needed, available } => {
            assert_eq!(available, buf_len);
            assert!(needed > available && needed <= MSG_INLINE);
        }
        RecvError::Corrupt { payload_len, .. } => {
            assert!(
                payload_len as usize > MSG_INLINE,
                "Corrupt for a valid length"
            );
            stats.bad_messages += 1;
        }
        RecvError::Lost { .. } | RecvError::Revoked { .. } => stats.bad_messages += 1,
        RecvError::Busy => stats.busy += 1,
    }
}

fn check_delivered(meta: &dmxp_nostd::MessageMeta, len: usize) {
    assert!(len <= MSG_INLINE);
    assert_eq!(meta.payload_len as usize, len);
    let markers = dmxp_nostd::layout::message_flags::SKIP | dmxp_nostd::layout::message_flags::LOST;
    assert_eq!(
        meta.flags & markers,
        0,
        "a marker was delivered as a message"
    );
}

fn check_guard(guard: &RecvGuard<'_, '_>) {
    let len = guard.meta().payload_len as usize;
    check_delivered(guard.meta(), len);
    let payload = guard.payload();
    assert_eq!(payload.len(), len);
    let mut buf = [0u8; MSG_INLINE];
    assert_eq!(payload.copy_to(&mut buf), len);
    assert_eq!(payload.get(len), None);
    if len > 0 {
        assert_eq!(payload.get(len - 1), Some(buf[len - 1]));
    }
    assert_eq!(payload.word(len.div_ceil(8)), None);
}

impl Op {
    /// The channel index the op works on, if any.
    fn channel(&self) -> Option<u8> {
        match *self {
            Op::Send { channel, .. }
            | Op::SendBatch { channel, .. }
            | Op::SendBlocking { channel, .. }
            | Op::Loan { channel, .. }
            | Op::HoldLoan { channel }
            | Op::Recv { channel, .. }
            | Op::RecvBlocking { channel }
            | Op::RecvBatch { channel, .. }
            | Op::RecvInPlace { channel, .. }
            | Op::Inspect { channel } => Some(channel),
            Op::FinishLoan { .. } | Op::ReleaseGuard { .. } | Op::Create { .. } | Op::Survey => {
                None
            }
        }
    }
}

fn run_op<'c, 'a>(
    segment: &Segment<'a>,
    channels: &[Option<&'c Channel<'a>>],
    held: &mut Held<'c, 'a>,
    op: &Op,
    stats: &mut Stats,
) {
    let pick = |channel: u8| channels[usize::from(channel) % channels.len()];
    match *op {
        Op::Send {
            channel,
            len,
            fill,
            flags,
        } => {
            let Some(ch) = pick(channel) else { return };
            let len = payload_len(len);
            // Mostly application flags; one in sixteen sets protocol bits.
            let flags = if flags & 0xF == 0 {
                flags
            } else {
                flags & 0xFF00
            };
            let result = ch.try_send(&pattern(fill, ch.tail(), len), &meta(len, flags));
            stats.busy += usize::from(check_send(result, len, flags, false));
        }
        Op::SendBatch {
            channel,
            count,
            len,
            fill,
        } => {
            let Some(ch) = pick(channel) else { return };
            let count = usize::from(count % 12);
            let lens: Vec<usize> = (0..count)
                .map(|k| (payload_len(len) + k * 131) % 1000)
                .collect();
            let payloads: Vec<Vec<u8>> = lens.iter().map(|&l| pattern(fill, l as u64, l)).collect();
            let result = ch.try_send_batch(&payloads, &meta(0, 0));
            let first_bad = lens.iter().copied().find(|&l| l > MSG_INLINE);
            match result {
                Ok(sent) => {
                    assert!(sent <= count && first_bad.is_none());
                    assert!(sent > 0 || count == 0);
                }
                Err(SendError::TooLarge { len, .. }) => assert_eq!(Some(len), first_bad),
                Err(SendError::Full) => assert!(first_bad.is_none() && count > 0),
                Err(SendError::Busy) => stats.busy += 1,
                Err(other) => panic!("unexpected batch send error {other:?}"),
            }
        }
        Op::SendBlocking { channel, len, fill } => {
            let Some(ch) = pick(channel) else { return };
            let len = payload_len(len);
            let before = ch.waiters();
            let result = ch.send_blocking(&pattern(fill, 0, len), &meta(len, 0), &Patience::new(2));
            stats.busy += usize::from(check_send(result, len, 0, true));
            assert_eq!(
                ch.waiters(),
                before,
                "a blocking send left its waiter count behind"
            );
        }
        Op::Loan {
            channel,
            len,
            fill,
            commit,
        } => {
            let Some(ch) = pick(channel) else { return };
            match ch.try_loan() {
                Ok(mut loan) => {
                    let len = payload_len(len);
                    let data = pattern(fill, loan.position(), len.min(MSG_INLINE));
                    let mut area = loan.payload();
                    assert!(area.write_at(0, &data));
                    assert!(!area.write_at(MSG_INLINE - 3, &[1, 2, 3, 4]));
                    if let Some(&last) = data.last() {
                        assert_eq!(area.get(data.len() - 1), Some(last));
                    }
                    if commit {
                        let position = loan.position();
                        match loan.commit(len, &meta(len, 0)) {
                            Ok(id) => assert_eq!(id, position),
                            Err(SendError::TooLarge { .. }) => assert!(len > MSG_INLINE),
                            Err(other) => panic!("unexpected commit error {other:?}"),
                        }
                    }
                }
                Err(error) => {
                    stats.busy += usize::from(check_send(Err(error), 0, 0, false));
                }
            }
        }
        Op::HoldLoan { channel } => {
            let Some(ch) = pick(channel) else { return };
            if held.loans.len() < MAX_HELD {
                match ch.try_loan() {
                    Ok(loan) => held.loans.push(loan),
                    Err(error) => stats.busy += usize::from(check_send(Err(error), 0, 0, false)),
                }
            }
        }
        Op::FinishLoan { index, len, commit } => {
            if held.loans.is_empty() {
                return;
            }
            let mut loan = held
                .loans
                .swap_remove(usize::from(index) % held.loans.len());
            let len = payload_len(len);
            if commit {
                let data = pattern(index, loan.position(), len.min(MSG_INLINE));
                assert!(loan.payload().write_at(0, &data));
                let _ = loan.commit(len, &meta(len, 0));
            }
        }
        Op::Recv { channel, buf_len } => {
            let Some(ch) = pick(channel) else { return };
            let buf_len = usize::from(buf_len) % (MSG_INLINE + 64);
            let mut buf = vec![0u8; buf_len];
            match ch.try_recv(&mut buf) {
                Ok(received) => {
                    check_delivered(&received.meta, received.len);
                    assert!(received.len <= buf_len);
                    stats.messages_received += 1;
                }
                Err(error) => check_recv_error(error, buf_len, false, stats),
            }
        }
        Op::RecvBlocking { channel } => {
            let Some(ch) = pick(channel) else { return };
            let before = ch.waiters();
            let mut buf = [0u8; MSG_INLINE];
            match ch.recv_blocking(&mut buf, &Patience::new(2)) {
                Ok(received) => {
                    check_delivered(&received.meta, received.len);
                    stats.messages_received += 1;
                }
                Err(error) => check_recv_error(error, MSG_INLINE, true, stats),
            }
            assert_eq!(
                ch.waiters(),
                before,
                "a blocking receive left its waiter count behind"
            );
        }
        Op::RecvBatch { channel, max } => {
            let Some(ch) = pick(channel) else { return };
            let max = usize::from(max % 20);
            let mut delivered = 0;
            match ch.try_recv_batch(max, |meta, payload| {
                check_delivered(meta, payload.len());
                delivered += 1;
            }) {
                Ok(outcome) => {
                    assert_eq!(outcome.delivered, delivered);
                    assert!(outcome.delivered + outcome.dropped <= max);
                    stats.messages_received += delivered;
                    stats.bad_messages += outcome.dropped;
                }
                Err(error) => check_recv_error(error, usize::MAX, false, stats),
            }
        }
        Op::RecvInPlace { channel, hold } => {
            let Some(ch) = pick(channel) else { return };
            match ch.try_recv_in_place() {
                Ok(guard) => {
                    check_guard(&guard);
                    stats.messages_received += 1;
                    if hold && held.guards.len() < MAX_HELD {
                        held.guards.push(guard);
                    }
                }
                Err(error) => check_recv_error(error, usize::MAX, false, stats),
            }
        }
        Op::ReleaseGuard { index } => {
            if !held.guards.is_empty() {
                let guard = held
                    .guards
                    .swap_remove(usize::from(index) % held.guards.len());
                check_guard(&guard);
            }
        }
        Op::Create { id, capacity_log2 } => create(segment, id, capacity_log2),
        Op::Inspect { channel } => {
            let Some(ch) = pick(channel) else { return };
            let info = ch.info();
            assert!(info.depth <= info.capacity);
            assert_eq!(info.capacity, ch.capacity());
            let _ = (ch.has_message(), ch.has_free_slot(), ch.waiters());
        }
        Op::Survey => {
            for info in segment.channels() {
                assert!(info.depth <= info.capacity);
                assert!(info.band_offset >= HEADER_SIZE as u64);
            }
            if let Err(error) = segment.validate_all() {
                assert!(!error.to_string().is_empty());
            }
            let _ = (
                segment.channel_count(),
                segment.free_space(),
                segment.creator_pid(),
            );
        }
    }
}

fn create(segment: &Segment<'_>, id: u16, capacity_log2: u8) {
    let id = u32::from(id) % (MAX_CHANNELS as u32 + 8);
    let capacity = match capacity_log2 {
        250.. => u64::from(capacity_log2 - 250), // 0..=5: zero, one, non-powers of two
        _ => 1 << (capacity_log2 % 6),
    };
    let valid_capacity = capacity.is_power_of_two() && capacity >= MIN_CAPACITY;
    match segment.open_or_create_channel(id, capacity, PID) {
        Ok((channel, opened)) => {
            assert!(valid_capacity && (id as usize) < MAX_CHANNELS);
            assert_eq!(channel.id(), id);
            check_geometry(segment, &channel);
            if opened == Opened::Created {
                assert_eq!(channel.capacity(), capacity);
                // A channel this thread just initialised must work: one message round trip.
                let payload = pattern(9, 0, 33);
                assert_eq!(channel.try_send(&payload, &meta(33, 0)), Ok(0));
                let mut buf = [0u8; MSG_INLINE];
                let received = channel.try_recv(&mut buf).expect("the message just sent");
                assert_eq!(&buf[..received.len], &payload[..]);
            }
        }
        Err(Error::InvalidCapacity { capacity: c }) => {
            assert_eq!(c, capacity);
            assert!(!valid_capacity);
        }
        Err(Error::InvalidChannelId { id: i }) => {
            assert_eq!(i, id);
            assert!(valid_capacity && id as usize >= MAX_CHANNELS);
        }
        Err(error) => {
            assert!(valid_capacity);
            assert!(!error.to_string().is_empty());
        }
    }
}
