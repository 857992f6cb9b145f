//! The `segment_ops` target: a valid segment, corrupted by fuzzer-chosen writes, then attached
//! and driven by a fuzzer-chosen sequence of channel operations.
//!
//! The input decodes to a [`Setup`] (two channels' capacities, whether they carry runs and up
//! to what length, and how many messages they hold, runs among them) and a list of steps. A run of [`Scribble`]s is written straight into the segment's bytes
//! (no region alive, so plain writes are fine); each following run of [`Op`]s is a *session*:
//! validate the bytes with `parse_segment`, attach, open channels 0..4, run the ops, detach.
//!
//! What must hold, whatever was written:
//! * nothing panics, nothing reads or writes outside the segment (the `Region` checks every
//!   view, and the sanitizer build would catch anything else), every operation returns;
//! * `parse_segment` of the bytes and `Segment::attach` of the same bytes agree: the same
//!   header error, or the same channel list and the same first entry error;
//! * every error is the one its inputs explain (a `TooLarge` only for a payload over the
//!   channel's limit, a `Corrupt` only for a slot whose `payload_len` is above 960 or that
//!   starts a run, a `BufferTooSmall` only when it is so...);
//! * what a receive hands out is within bounds: lengths at most the channel's limit (960
//!   without runs) and the caller's buffer, a message of more than 960 bytes only as a run, a
//!   guard's parts adding up to its length;
//! * a receive that meets a run's first slot at the head does what PROTOCOL.md §12.4 says
//!   (the harness reads the slots first): a start that fails its checks (a length past the
//!   ring or the limit, a length that disagrees with `run_slots`, a continuation not
//!   published) is reported `Corrupt` naming it; a whole run is delivered whole, or refused
//!   for a short buffer without consuming anything, or reported `Corrupt`; a continuation
//!   without its start is passed over silently;
//! * blocking operations leave the waiter counts as they found them.

use crate::support::{decode, formatted_segment, pattern, Patience};
use arbitrary::{Arbitrary, Unstructured};
use dmxp_nostd::atomic::Ordering::{Acquire, Relaxed};
use dmxp_nostd::layout::message_flags::{LOST, RUN, RUN_CONT, SKIP};
use dmxp_nostd::layout::{
    AtomicSlot, CHANNEL_ENTRY_SIZE, CHANNEL_TABLE_OFFSET, HEADER_SIZE, MAX_CHANNELS, MIN_CAPACITY,
    MSG_INLINE, SLOT_SIZE,
};
use dmxp_nostd::validate::max_message_size_fits;
use dmxp_nostd::{
    parse_segment, AlignedBlock, Channel, ChannelOptions, Error, Opened, RecvError, RecvGuard,
    Region, Segment, SegmentInfo, SendError, SendLoan, SendMeta,
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
    /// Whether each channel carries runs, and its limit ([`limit_for`]: most choices make
    /// one, from 961 bytes to the whole ring's `capacity × 960`). Every other message
    /// `build` sends into such a channel is a run.
    runs: [u8; 2],
    /// After the receives, one more run into each channel that carries runs, as long as the
    /// free slots allow: with messages received first, it wraps past the ring's last slot.
    wrap_run: bool,
}

/// The limit of a channel of `capacity` slots for the setup's `choice`: 960 (no runs) for
/// three choices in eight, else a limit that makes it carry runs.
fn limit_for(capacity: u64, choice: u8) -> usize {
    let most = capacity as usize * MSG_INLINE;
    match choice % 8 {
        0..=2 => MSG_INLINE,
        3 => MSG_INLINE + 1,
        4 => most,
        5 => (most / 2).max(MSG_INLINE + 1),
        _ => MSG_INLINE + 1 + usize::from(choice) * 37 % (most - MSG_INLINE),
    }
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
    MaxMessageSize,
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
    RunSlots,
    RunIndex,
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
    /// A channel's message limit (960 without runs) plus `delta`: lengths at and past it.
    Limit {
        channel: bool,
        delta: i8,
    },
    /// `960 × (n % 9)`, plus one when `n >= 128`: lengths on slot boundaries.
    SlotBytes(u8),
    /// A channel's capacity: a `run_slots` covering the whole ring (`Plus(1)` gets past it).
    Capacity(bool),
    /// The current value with bits `n` set: RUN (4) or RUN_CONT (8) in a slot's flags,
    /// RUNS (1) in an entry's.
    SetBits(u8),
    /// The current value with bits `n` cleared.
    ClearBits(u8),
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
        max_message_size: u16,
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
    /// Runs sent by ops (messages of more than 960 bytes accepted).
    pub runs_sent: usize,
    /// Runs received whole (copied or in place).
    pub runs_received: usize,
    /// Runs refused for a short buffer (a batch's 960 bytes included), nothing consumed.
    pub runs_refused: usize,
    /// Receives that met a run's first slot at the head with a length past the ring or the
    /// channel's limit (or not above 960).
    pub runs_past_limit: usize,
    /// ... with a length that disagrees with its `run_slots`.
    pub runs_mismatched: usize,
    /// ... plausible, but with a continuation not published.
    pub runs_cut: usize,
    /// Receives that met a continuation without its start at the head.
    pub orphans: usize,
}

impl Stats {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Stats) {
        self.scribbles += other.scribbles;
        self.sessions += other.sessions;
        self.attached += other.attached;
        self.rejected += other.rejected;
        self.ops += other.ops;
        self.messages_received += other.messages_received;
        self.bad_messages += other.bad_messages;
        self.busy += other.busy;
        self.runs_sent += other.runs_sent;
        self.runs_received += other.runs_received;
        self.runs_refused += other.runs_refused;
        self.runs_past_limit += other.runs_past_limit;
        self.runs_mismatched += other.runs_mismatched;
        self.runs_cut += other.runs_cut;
        self.orphans += other.orphans;
    }
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
    /// The channels' message limits (960 for a channel without runs).
    limits: [usize; 2],
}

/// The length of the `n`th message `build` sends into a channel with limit `limit`: every
/// other one a run when the channel carries them.
fn seed_len(n: u64, limit: usize, salt: u8) -> usize {
    if limit > MSG_INLINE && n % 2 == 1 {
        MSG_INLINE + 1 + (n as usize * 613 + usize::from(salt) * 31) % (limit - MSG_INLINE)
    } else {
        (n as usize * 97) % (MSG_INLINE + 1)
    }
}

/// Slots a message of `len` bytes takes.
fn slots_for(len: usize) -> u64 {
    len.div_ceil(MSG_INLINE).max(1) as u64
}

fn build(setup: &Setup) -> (Vec<AlignedBlock>, Layout) {
    let capacities = setup.capacity_log2.map(|c| MIN_CAPACITY << (c % 3));
    let limits = [0, 1].map(|id| limit_for(capacities[id], setup.runs[id]));
    let slots = capacities[0] + capacities[1] + u64::from(setup.spare_slots % 4);
    let mut memory = formatted_segment(HEADER_SIZE + slots as usize * SLOT_SIZE, PID);
    let bytes = memory.as_mut_bytes();
    let len = bytes.len();
    let region = Region::new(bytes).expect("AlignedBlock memory is aligned");
    let segment = Segment::attach(region).expect("a formatted segment attaches");
    let mut bands = [0; 2];
    for (id, capacity) in capacities.iter().copied().enumerate() {
        let limit = limits[id];
        let options = ChannelOptions::default().with_max_message_size(limit);
        let (channel, _) = segment
            .open_or_create_channel_with(id as u32, capacity, PID, options)
            .expect("the segment has room for both channels");
        assert_eq!(channel.max_message_size(), limit);
        bands[id] = channel.geometry().band_offset;
        let meta = |n: u64| SendMeta {
            message_type: n as u32,
            sender_pid: PID,
            ..SendMeta::default()
        };
        // The slots each queued message takes, oldest first.
        let mut queued = std::collections::VecDeque::new();
        let mut free = capacity;
        for n in 0..u64::from(setup.sent[id]) % (capacity + 1) {
            if free == 0 {
                break;
            }
            let mut len = seed_len(n, limit, setup.sent[id]);
            if slots_for(len) > free {
                len = (n as usize * 97) % (MSG_INLINE + 1);
            }
            let payload = pattern(id as u8, n, len);
            channel.try_send(&payload, &meta(n)).expect("room was left");
            queued.push_back(slots_for(len));
            free -= slots_for(len);
        }
        let mut buf = vec![0u8; limit];
        for _ in 0..u64::from(setup.received[id]) % (queued.len() as u64 + 1) {
            channel.try_recv(&mut buf).expect("a message was sent");
            free += queued.pop_front().expect("one was queued");
        }
        if setup.wrap_run && limit > MSG_INLINE && free >= 2 {
            let len = limit.min(free as usize * MSG_INLINE);
            let payload = pattern(id as u8, channel.tail(), len);
            channel
                .try_send(&payload, &meta(99))
                .expect("the run fits in the free slots");
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
        limits,
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
            EntryField::MaxMessageSize => (80, 4),
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
            SlotField::RunSlots => (48, 4),
            SlotField::RunIndex => (52, 4),
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
            Special::Limit { channel, delta } => {
                (layout.limits[usize::from(channel)] as u64).wrapping_add_signed(i64::from(delta))
            }
            Special::SlotBytes(n) => MSG_INLINE as u64 * u64::from(n % 9) + u64::from(n >> 7),
            Special::Capacity(channel) => layout.capacities[usize::from(channel)],
            Special::SetBits(bits) => current | u64::from(bits),
            Special::ClearBits(bits) => current & !u64::from(bits),
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
    // The entry checks passed, so the limit is one a ring of this capacity can hold.
    let limit = channel.max_message_size();
    if geometry.carries_runs() {
        assert!(max_message_size_fits(limit as u64, geometry.capacity));
        assert_eq!(limit, geometry.max_message_size as usize);
    } else {
        assert_eq!(limit, MSG_INLINE);
    }
}

/// The slot of `position` in `channel`'s ring, read through the segment's region (the band
/// was validated at open, so it lies inside the segment).
fn slot_of<'a>(segment: &Segment<'a>, channel: &Channel<'a>, position: u64) -> &'a AtomicSlot {
    let geometry = channel.geometry();
    let index = position & (geometry.capacity - 1);
    let offset = geometry.band_offset + index * SLOT_SIZE as u64;
    segment
        .region()
        .view::<AtomicSlot>(offset as usize)
        .expect("a validated band lies inside the segment")
}

/// What a receive must do with the position at the head, read from its slots beforehand:
/// PROTOCOL.md §12.4, for a channel that carries runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Head {
    /// Nothing predicted here: nothing published, a single-slot message or a marker, a
    /// channel without runs, or flags that combine run bits with others.
    Open,
    /// A continuation whose start is gone: passed over, not reported.
    Orphan,
    /// A run's first slot that fails its checks (`len` out of range, or `run_slots` not the
    /// count `len` needs, or a continuation not published): claimed alone and reported
    /// `Corrupt` with this length.
    BadRun { len: u32 },
    /// A plausible run whose `count` slots are all published: delivered whole (or `Corrupt`
    /// if a continuation disagrees), or refused for a buffer shorter than `len`.
    Run { len: usize, count: u64 },
}

fn classify_head(segment: &Segment<'_>, channel: &Channel<'_>, stats: &mut Stats) -> (u64, Head) {
    let head = channel.head();
    let geometry = channel.geometry();
    let slot = slot_of(segment, channel, head);
    if !geometry.carries_runs() || slot.sequence.load(Acquire) != head.wrapping_add(1) {
        return (head, Head::Open);
    }
    let flags = slot.meta.flags.load(Relaxed);
    if flags & (SKIP | LOST) != 0 {
        return (head, Head::Open);
    }
    let kind = match flags & (RUN | RUN_CONT) {
        RUN_CONT => {
            stats.orphans += 1;
            Head::Orphan
        }
        RUN => {
            let len = slot.meta.payload_len.load(Relaxed);
            let count = u64::from(slot.run_slots.load(Relaxed));
            let in_range = len as usize > MSG_INLINE
                && len as usize <= channel.max_message_size()
                && count <= geometry.capacity;
            let whole = (1..count.min(geometry.capacity)).all(|k| {
                let p = head.wrapping_add(k);
                slot_of(segment, channel, p).sequence.load(Acquire) == p.wrapping_add(1)
            });
            if !in_range {
                stats.runs_past_limit += 1;
                Head::BadRun { len }
            } else if count != slots_for(len as usize) {
                stats.runs_mismatched += 1;
                Head::BadRun { len }
            } else if !whole {
                stats.runs_cut += 1;
                Head::BadRun { len }
            } else {
                Head::Run {
                    len: len as usize,
                    count,
                }
            }
        }
        _ => Head::Open,
    };
    (head, kind)
}

/// Who received, and with what room: the checks differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Receiver {
    /// `try_recv` into a buffer of this many bytes.
    Buffer(usize),
    /// `recv_blocking` into a buffer of this many bytes.
    Blocking(usize),
    /// `try_recv_batch`: single slots, 960 bytes each.
    Batch,
    /// `try_recv_in_place`: no buffer.
    InPlace,
}

impl Receiver {
    fn room(self) -> usize {
        match self {
            Receiver::Buffer(len) | Receiver::Blocking(len) => len,
            Receiver::Batch => MSG_INLINE,
            Receiver::InPlace => usize::MAX,
        }
    }
}

/// A receive's result, reduced to what the head checks look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// A message of this length (for a batch: the counts delivered and dropped).
    Delivered(usize),
    Batch {
        delivered: usize,
        dropped: usize,
    },
    Failed(RecvError),
}

/// Checks a receive's outcome against what the head predicted (see [`Head`]).
fn check_head(
    channel: &Channel<'_>,
    (head, kind): (u64, Head),
    receiver: Receiver,
    outcome: Outcome,
    stats: &mut Stats,
) {
    let after = channel.head();
    let context = || format!("head {head} was {kind:?}; {receiver:?} gave {outcome:?}");
    match kind {
        Head::Open => {}
        Head::Orphan => {
            assert!(
                !matches!(
                    outcome,
                    Outcome::Failed(
                        RecvError::Corrupt { message_id, .. } | RecvError::Lost { message_id }
                    ) if message_id == head
                ),
                "an orphan continuation was reported: {}",
                context()
            );
            if !matches!(
                outcome,
                Outcome::Failed(RecvError::Busy | RecvError::Revoked { .. })
            ) {
                assert_ne!(after, head, "an orphan was not passed over: {}", context());
            }
        }
        Head::BadRun { len } => {
            let corrupt = RecvError::Corrupt {
                message_id: head,
                payload_len: len,
            };
            match receiver {
                Receiver::Batch => assert_eq!(
                    outcome,
                    Outcome::Batch {
                        delivered: 0,
                        dropped: 1
                    },
                    "{}",
                    context()
                ),
                _ => assert_eq!(outcome, Outcome::Failed(corrupt), "{}", context()),
            }
            assert_eq!(after, head.wrapping_add(1), "{}", context());
        }
        Head::Run { len, count } => {
            if len > receiver.room() {
                let refusal = RecvError::BufferTooSmall {
                    needed: len,
                    available: receiver.room(),
                };
                assert_eq!(outcome, Outcome::Failed(refusal), "{}", context());
                assert_eq!(after, head, "a refused run was consumed: {}", context());
                stats.runs_refused += 1;
            } else {
                let corrupt = RecvError::Corrupt {
                    message_id: head,
                    payload_len: len as u32,
                };
                match outcome {
                    Outcome::Delivered(delivered) => {
                        assert_eq!(delivered, len, "{}", context());
                        stats.runs_received += 1;
                    }
                    Outcome::Failed(error) => assert_eq!(error, corrupt, "{}", context()),
                    Outcome::Batch { .. } => panic!("a batch took a run: {}", context()),
                }
                assert_eq!(after, head.wrapping_add(count), "{}", context());
            }
        }
    }
}

struct Held<'c, 'a> {
    loans: Vec<SendLoan<'c, 'a>>,
    /// Each with the channel it came from.
    guards: Vec<(&'c Channel<'a>, RecvGuard<'c, 'a>)>,
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

/// A length for one slot (a loan's): about one in sixteen is too long for it.
fn slot_len(raw: u16) -> usize {
    usize::from(raw) % 1024
}

/// A length for a send into a channel with limit `limit`: half of them for one slot (as
/// [`slot_len`]), a quarter anywhere up to a little past the limit, a quarter around it.
fn payload_len(raw: u16, limit: usize) -> usize {
    let low = usize::from(raw & 0x3FFF);
    match raw >> 14 {
        0 | 1 => slot_len(raw),
        2 => low % (limit + 64),
        _ => limit - 64 + low % 128,
    }
}

/// A receive buffer's length for a channel with limit `limit`: a quarter exactly the limit
/// (always enough), a quarter for one slot, half anywhere up to a little past the limit.
fn buffer_len(raw: u16, limit: usize) -> usize {
    let low = usize::from(raw >> 2);
    match raw % 4 {
        0 => limit,
        1 => low % (MSG_INLINE + 64),
        _ => low % (limit + 64),
    }
}

/// Checks a send's result; true for `Busy`. After a run was sent, its slots must say so.
fn check_send(
    segment: &Segment<'_>,
    channel: &Channel<'_>,
    result: Result<u64, SendError>,
    len: usize,
    flags: u16,
    blocking: bool,
    stats: &mut Stats,
) -> bool {
    let limit = channel.max_message_size();
    let valid = len <= limit && flags & 0x00FF == 0;
    match result {
        Ok(position) => {
            assert!(valid, "accepted a bad send (len {len}, flags {flags:#x})");
            if len > MSG_INLINE {
                stats.runs_sent += 1;
                check_sent_run(segment, channel, position, len);
            }
        }
        Err(SendError::TooLarge { len: l, limit: lim }) => {
            assert_eq!((l, lim), (len, limit));
            assert!(len > limit);
        }
        Err(SendError::ReservedFlags { flags: f }) => {
            assert_eq!(f, flags);
            assert!(len <= limit && flags & 0x00FF != 0);
        }
        Err(SendError::Full) | Err(SendError::Busy) => assert!(valid),
        Err(SendError::TimedOut) => assert!(blocking && valid),
        // A scribbled sequence looks like a repair that revoked the claim.
        Err(SendError::Revoked { .. }) => assert!(valid),
    }
    matches!(result, Err(SendError::Busy))
}

/// The slots of a run of `len` bytes just sent at `position` (PROTOCOL.md §12.2).
fn check_sent_run(segment: &Segment<'_>, channel: &Channel<'_>, position: u64, len: usize) {
    let count = slots_for(len);
    assert!(channel.geometry().carries_runs() && count <= channel.capacity());
    for index in 0..count {
        let slot = slot_of(segment, channel, position.wrapping_add(index));
        let flag = if index == 0 { RUN } else { RUN_CONT };
        assert_eq!(
            slot.sequence.load(Relaxed),
            position.wrapping_add(index + 1)
        );
        assert_eq!(slot.meta.flags.load(Relaxed) & 0x00FF, flag);
        assert_eq!(slot.meta.message_id.load(Relaxed), position);
        assert_eq!(slot.meta.payload_len.load(Relaxed) as usize, len);
        assert_eq!(u64::from(slot.run_slots.load(Relaxed)), count);
        assert_eq!(u64::from(slot.run_index.load(Relaxed)), index);
    }
}

fn check_recv_error(
    segment: &Segment<'_>,
    channel: &Channel<'_>,
    error: RecvError,
    receiver: Receiver,
    stats: &mut Stats,
) {
    let blocking = matches!(receiver, Receiver::Blocking(_));
    let limit = channel.max_message_size();
    match error {
        RecvError::Empty => assert!(!blocking, "a blocking receive returned Empty"),
        RecvError::Pending { .. } => assert!(!blocking, "a blocking receive returned Pending"),
        RecvError::TimedOut => assert!(blocking),
        // The harness's channels carry no blobs, so a scribbled BLOB flag is an ordinary bit.
        RecvError::IsBlob { .. } | RecvError::NotABlob { .. } | RecvError::NotRegistered => {
            panic!("a blob error on a channel without blobs: {error:?}")
        }
        RecvError::BufferTooSmall { needed, available } => {
            assert_ne!(
                receiver,
                Receiver::InPlace,
                "an in-place receive needs no buffer"
            );
            assert_eq!(available, receiver.room());
            assert!(needed > available && needed <= limit);
            // Only a run is too long for a batch, and only a channel with runs has one.
            assert!(needed <= MSG_INLINE || channel.geometry().carries_runs());
        }
        RecvError::Corrupt {
            message_id,
            payload_len,
        } => {
            // The slot named holds that length, and it is impossible for one slot or it
            // starts a run that failed its checks.
            let slot = slot_of(segment, channel, message_id);
            assert_eq!(slot.meta.payload_len.load(Relaxed), payload_len);
            let flags = slot.meta.flags.load(Relaxed);
            assert!(
                payload_len as usize > MSG_INLINE || flags & RUN != 0,
                "Corrupt for a valid length {payload_len} (flags {flags:#x})"
            );
            stats.bad_messages += 1;
        }
        RecvError::Lost { message_id } => {
            let flags = slot_of(segment, channel, message_id)
                .meta
                .flags
                .load(Relaxed);
            assert!(
                flags & LOST != 0,
                "Lost for a slot without LOST ({flags:#x})"
            );
            stats.bad_messages += 1;
        }
        RecvError::Revoked { .. } => stats.bad_messages += 1,
        RecvError::Busy => stats.busy += 1,
    }
}

/// What every delivered message must satisfy on `channel`, received with `room` bytes.
fn check_delivered(channel: &Channel<'_>, meta: &dmxp_nostd::MessageMeta, len: usize, room: usize) {
    assert!(len <= channel.max_message_size(), "longer than the limit");
    assert!(len <= room, "longer than the buffer");
    assert_eq!(meta.payload_len as usize, len);
    let runs = channel.geometry().carries_runs();
    // A run's first slot flagged SKIP or LOST as well as RUN (only a hostile peer writes
    // that) is delivered: PROTOCOL.md §12.4 looks at RUN_CONT and RUN before anything else,
    // while §6.4 tests SKIP and LOST first for single slots. Reported as a spec question;
    // only single slots are held to "a marker is never delivered".
    if len <= MSG_INLINE {
        assert_eq!(
            meta.flags & (SKIP | LOST),
            0,
            "a marker was delivered as a message (len {len}, flags {:#x})",
            meta.flags
        );
    }
    if len > MSG_INLINE {
        assert!(runs, "a long message on a channel without runs");
        assert_eq!(
            meta.flags & (RUN | RUN_CONT),
            RUN,
            "a run delivered without RUN"
        );
    } else {
        assert_eq!(meta.flags & RUN, 0, "a single slot delivered with RUN");
        // Without runs the bit is ignored; with them a continuation is never delivered.
        if runs {
            assert_eq!(meta.flags & RUN_CONT, 0, "a continuation delivered");
        }
    }
}

fn check_guard(channel: &Channel<'_>, guard: &RecvGuard<'_, '_>) {
    let len = guard.len();
    assert_eq!(len, guard.meta().payload_len as usize);
    assert_eq!(guard.is_empty(), len == 0);
    check_delivered(channel, guard.meta(), len, usize::MAX);
    // The parts: one per slot, all full but the last, adding up to the length.
    let parts: Vec<_> = guard.parts().collect();
    assert_eq!(parts.len() as u64, slots_for(len));
    assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), len);
    assert!(parts[..parts.len() - 1]
        .iter()
        .all(|p| p.len() == MSG_INLINE));
    let mut joined = Vec::with_capacity(len);
    for part in &parts {
        let mut buf = [0u8; MSG_INLINE];
        let n = part.copy_to(&mut buf);
        assert_eq!(n, part.len());
        joined.extend_from_slice(&buf[..n]);
    }
    let mut whole = vec![0u8; len + 1];
    assert_eq!(guard.copy_to(&mut whole), len);
    assert_eq!(&whole[..len], &joined[..]);
    let mut half = vec![0u8; len / 2];
    assert_eq!(guard.copy_to(&mut half), len / 2);
    assert_eq!(&half[..], &joined[..len / 2]);
    // The first part, as `payload` sees it.
    let payload = guard.payload();
    let first = len.min(MSG_INLINE);
    assert_eq!(payload.len(), first);
    assert_eq!(payload.get(first), None);
    if first > 0 {
        assert_eq!(payload.get(first - 1), Some(joined[first - 1]));
    }
    assert_eq!(payload.word(first.div_ceil(8)), None);
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
            let len = payload_len(len, ch.max_message_size());
            // Mostly application flags; one in sixteen sets protocol bits.
            let flags = if flags & 0xF == 0 {
                flags
            } else {
                flags & 0xFF00
            };
            let result = ch.try_send(&pattern(fill, ch.tail(), len), &meta(len, flags));
            stats.busy += usize::from(check_send(segment, ch, result, len, flags, false, stats));
        }
        Op::SendBatch {
            channel,
            count,
            len,
            fill,
        } => {
            let Some(ch) = pick(channel) else { return };
            let count = usize::from(count % 12);
            // The first item anywhere up to the channel's limit (a batch refuses runs), the
            // others for one slot or just past it.
            let lens: Vec<usize> = (0..count)
                .map(|k| match k {
                    0 => payload_len(len, ch.max_message_size()),
                    _ => (slot_len(len) + k * 131) % 1000,
                })
                .collect();
            let payloads: Vec<Vec<u8>> = lens.iter().map(|&l| pattern(fill, l as u64, l)).collect();
            let result = ch.try_send_batch(&payloads, &meta(0, 0));
            let first_bad = lens.iter().copied().find(|&l| l > MSG_INLINE);
            match result {
                Ok(sent) => {
                    assert!(sent <= count && first_bad.is_none());
                    assert!(sent > 0 || count == 0);
                }
                Err(SendError::TooLarge { len, limit }) => {
                    assert_eq!((Some(len), limit), (first_bad, MSG_INLINE));
                }
                Err(SendError::Full) => assert!(first_bad.is_none() && count > 0),
                Err(SendError::Busy) => stats.busy += 1,
                Err(other) => panic!("unexpected batch send error {other:?}"),
            }
        }
        Op::SendBlocking { channel, len, fill } => {
            let Some(ch) = pick(channel) else { return };
            let len = payload_len(len, ch.max_message_size());
            let before = ch.waiters();
            let payload = pattern(fill, 0, len);
            let result = ch.send_blocking(&payload, &meta(len, 0), &Patience::new(2));
            stats.busy += usize::from(check_send(segment, ch, result, len, 0, true, stats));
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
                    let len = slot_len(len);
                    let data = pattern(fill, loan.position(), len.min(MSG_INLINE));
                    let mut area = loan.payload();
                    assert!(area.write_at(0, &data));
                    assert!(!area.write_at(MSG_INLINE - 3, &[1, 2, 3, 4]));
                    if let Some(&last) = data.last() {
                        assert_eq!(area.get(data.len() - 1), Some(last));
                    }
                    if commit {
                        let position = loan.position();
                        // A loan is one slot, whatever the channel's limit.
                        match loan.commit(len, &meta(len, 0)) {
                            Ok(id) => assert_eq!(id, position),
                            Err(SendError::TooLarge { len: l, limit }) => {
                                assert_eq!((l, limit), (len, MSG_INLINE));
                                assert!(len > MSG_INLINE);
                            }
                            Err(other) => panic!("unexpected commit error {other:?}"),
                        }
                    }
                }
                Err(error) => {
                    let busy = check_send(segment, ch, Err(error), 0, 0, false, stats);
                    stats.busy += usize::from(busy);
                }
            }
        }
        Op::HoldLoan { channel } => {
            let Some(ch) = pick(channel) else { return };
            if held.loans.len() < MAX_HELD {
                match ch.try_loan() {
                    Ok(loan) => held.loans.push(loan),
                    Err(error) => {
                        let busy = check_send(segment, ch, Err(error), 0, 0, false, stats);
                        stats.busy += usize::from(busy);
                    }
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
            let len = slot_len(len);
            if commit {
                let data = pattern(index, loan.position(), len.min(MSG_INLINE));
                assert!(loan.payload().write_at(0, &data));
                let _ = loan.commit(len, &meta(len, 0));
            }
        }
        Op::Recv { channel, buf_len } => {
            let Some(ch) = pick(channel) else { return };
            let buf_len = buffer_len(buf_len, ch.max_message_size());
            let receiver = Receiver::Buffer(buf_len);
            let head = classify_head(segment, ch, stats);
            let mut buf = vec![0u8; buf_len];
            let outcome = match ch.try_recv(&mut buf) {
                Ok(received) => {
                    check_delivered(ch, &received.meta, received.len, buf_len);
                    stats.messages_received += 1;
                    Outcome::Delivered(received.len)
                }
                Err(error) => {
                    check_recv_error(segment, ch, error, receiver, stats);
                    Outcome::Failed(error)
                }
            };
            check_head(ch, head, receiver, outcome, stats);
        }
        Op::RecvBlocking { channel } => {
            let Some(ch) = pick(channel) else { return };
            let before = ch.waiters();
            let room = ch.max_message_size();
            let receiver = Receiver::Blocking(room);
            let head = classify_head(segment, ch, stats);
            let mut buf = vec![0u8; room];
            let outcome = match ch.recv_blocking(&mut buf, &Patience::new(2)) {
                Ok(received) => {
                    check_delivered(ch, &received.meta, received.len, room);
                    stats.messages_received += 1;
                    Outcome::Delivered(received.len)
                }
                Err(error) => {
                    check_recv_error(segment, ch, error, receiver, stats);
                    Outcome::Failed(error)
                }
            };
            check_head(ch, head, receiver, outcome, stats);
            assert_eq!(
                ch.waiters(),
                before,
                "a blocking receive left its waiter count behind"
            );
        }
        Op::RecvBatch { channel, max } => {
            let Some(ch) = pick(channel) else { return };
            let max = usize::from(max % 20);
            let head = if max > 0 {
                classify_head(segment, ch, stats)
            } else {
                (ch.head(), Head::Open)
            };
            let mut delivered = 0;
            let result = ch.try_recv_batch(max, |meta, payload| {
                check_delivered(ch, meta, payload.len(), MSG_INLINE);
                delivered += 1;
            });
            let outcome = match result {
                Ok(outcome) => {
                    assert_eq!(outcome.delivered, delivered);
                    assert!(outcome.delivered + outcome.dropped <= max);
                    stats.messages_received += delivered;
                    stats.bad_messages += outcome.dropped;
                    Outcome::Batch {
                        delivered,
                        dropped: outcome.dropped,
                    }
                }
                Err(error) => {
                    check_recv_error(segment, ch, error, Receiver::Batch, stats);
                    Outcome::Failed(error)
                }
            };
            check_head(ch, head, Receiver::Batch, outcome, stats);
        }
        Op::RecvInPlace { channel, hold } => {
            let Some(ch) = pick(channel) else { return };
            let head = classify_head(segment, ch, stats);
            let outcome = match ch.try_recv_in_place() {
                Ok(guard) => {
                    check_guard(ch, &guard);
                    stats.messages_received += 1;
                    let len = guard.len();
                    if hold && held.guards.len() < MAX_HELD {
                        held.guards.push((ch, guard));
                    }
                    Outcome::Delivered(len)
                }
                Err(error) => {
                    check_recv_error(segment, ch, error, Receiver::InPlace, stats);
                    Outcome::Failed(error)
                }
            };
            check_head(ch, head, Receiver::InPlace, outcome, stats);
        }
        Op::ReleaseGuard { index } => {
            if !held.guards.is_empty() {
                let (ch, guard) = held
                    .guards
                    .swap_remove(usize::from(index) % held.guards.len());
                check_guard(ch, &guard);
            }
        }
        Op::Create {
            id,
            capacity_log2,
            max_message_size,
        } => create(segment, id, capacity_log2, max_message_size),
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

fn create(segment: &Segment<'_>, id: u16, capacity_log2: u8, max_message_size: u16) {
    let id = u32::from(id) % (MAX_CHANNELS as u32 + 8);
    let capacity = match capacity_log2 {
        250.. => u64::from(capacity_log2 - 250), // 0..=5: zero, one, non-powers of two
        _ => 1 << (capacity_log2 % 6),
    };
    let valid_capacity = capacity.is_power_of_two() && capacity >= MIN_CAPACITY;
    // No runs, the smallest limit, the whole ring, or anything up to 64 KB.
    let limit = match max_message_size % 4 {
        0 => usize::from(max_message_size) % (MSG_INLINE + 1),
        1 => MSG_INLINE + 1,
        2 => capacity as usize * MSG_INLINE,
        _ => usize::from(max_message_size),
    };
    let valid_limit = limit <= MSG_INLINE || max_message_size_fits(limit as u64, capacity);
    let options = ChannelOptions::default().with_max_message_size(limit);
    match segment.open_or_create_channel_with(id, capacity, PID, options) {
        Ok((channel, opened)) => {
            assert!(valid_capacity && valid_limit && (id as usize) < MAX_CHANNELS);
            assert_eq!(channel.id(), id);
            check_geometry(segment, &channel);
            if opened == Opened::Created {
                assert_eq!(channel.capacity(), capacity);
                assert_eq!(channel.max_message_size(), limit.max(MSG_INLINE));
                // A channel this thread just initialised must work: one message round trip,
                // and one of the largest message it takes.
                let payload = pattern(9, 0, 33);
                assert_eq!(channel.try_send(&payload, &meta(33, 0)), Ok(0));
                let mut buf = vec![0u8; channel.max_message_size()];
                let received = channel.try_recv(&mut buf).expect("the message just sent");
                assert_eq!(&buf[..received.len], &payload[..]);
                if limit > MSG_INLINE {
                    let payload = pattern(10, 1, limit);
                    assert_eq!(channel.try_send(&payload, &meta(limit, 0)), Ok(1));
                    let received = channel.try_recv(&mut buf).expect("the run just sent");
                    assert_eq!(received.len, limit);
                    assert_eq!(buf, payload);
                }
            }
        }
        Err(Error::InvalidCapacity { capacity: c }) => {
            assert_eq!(c, capacity);
            assert!(!valid_capacity);
        }
        Err(Error::InvalidMaxMessageSize {
            max_message_size: m,
            capacity: c,
        }) => {
            assert_eq!((m, c), (limit as u64, capacity));
            assert!(valid_capacity && !valid_limit);
        }
        Err(Error::InvalidChannelId { id: i }) => {
            assert_eq!(i, id);
            assert!(valid_capacity && valid_limit && id as usize >= MAX_CHANNELS);
        }
        Err(error) => {
            assert!(valid_capacity && valid_limit);
            assert!(!error.to_string().is_empty());
        }
    }
}
