//! The `ring_model` target: structure-aware sequences of ring operations on two valid channels,
//! each checked step by step against a plain model of what the ring must do.
//!
//! The model of one channel is the list of positions between `head` and `tail`, each either a
//! message, a skip marker (a loan dropped without commit) or pending (a loan not yet
//! committed), plus the positions received in place whose slots are still held. From that it
//! predicts every result: which sends find the ring full, how many slots a batch claims, which
//! receives find it empty, what each message carries (id, metadata, payload bytes), the cursors
//! and depth. Operations on one channel must never change the other.

use crate::support::{decode, formatted_segment, pattern, Patience};
use arbitrary::{Arbitrary, Unstructured};
use dmxp_nostd::layout::{HEADER_SIZE, MIN_CAPACITY, MSG_INLINE, SLOT_SIZE};
use dmxp_nostd::{
    Channel, ChannelInfo, Error, MessageMeta, RecvError, RecvGuard, Region, Segment, SendError,
    SendLoan, SendMeta,
};
use std::collections::{BTreeSet, VecDeque};
use zerocopy::IntoBytes;

/// Operations decoded from one input, at most.
const MAX_OPS: usize = 512;
/// Loans and guards held at once, at most each (more than any capacity, so rings fill up).
const MAX_HELD: usize = 20;

/// log2 of the smallest capacity tried: the protocol's minimum, 2 slots. (A one-slot ring
/// cannot tell "position p published", `sequence == p + 1`, from "free for position p + 1",
/// `sequence == p + capacity`; `run` checks that such a channel is refused.)
pub const MIN_CAPACITY_LOG2: u8 = MIN_CAPACITY.trailing_zeros() as u8;
/// log2 of the largest capacity tried (16 slots).
pub const MAX_CAPACITY_LOG2: u8 = 4;

/// The two channels' capacities, as log2 taken into `MIN_CAPACITY_LOG2..=MAX_CAPACITY_LOG2`.
#[derive(Arbitrary, Debug, Default)]
pub struct RingSetup {
    capacity_log2: [u8; 2],
}

impl RingSetup {
    pub fn capacities(&self) -> [u64; 2] {
        let span = MAX_CAPACITY_LOG2 - MIN_CAPACITY_LOG2 + 1;
        self.capacity_log2
            .map(|c| 1u64 << (MIN_CAPACITY_LOG2 + c % span))
    }
}

/// What a sender stamps besides the payload.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct MetaIn {
    message_type: u32,
    timestamp_ns: u64,
    sender_pid: u32,
    sender_runtime: u16,
    /// High byte: application flags. A low byte below 8 also sets protocol-reserved bits
    /// (refused); otherwise they are cleared.
    flags: u16,
}

impl MetaIn {
    fn send_meta(&self) -> SendMeta {
        let flags = if self.flags & 0xFF < 8 {
            self.flags
        } else {
            self.flags & 0xFF00
        };
        SendMeta {
            message_type: self.message_type,
            flags,
            timestamp_ns: self.timestamp_ns,
            sender_pid: self.sender_pid,
            sender_runtime: self.sender_runtime,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum RingOp {
    Send {
        channel: bool,
        len: u16,
        fill: u8,
        meta: MetaIn,
    },
    SendBatch {
        channel: bool,
        count: u8,
        len: u16,
        fill: u8,
        meta: MetaIn,
    },
    SendBlocking {
        channel: bool,
        len: u16,
        fill: u8,
        meta: MetaIn,
    },
    /// Takes a loan and keeps it.
    Loan {
        channel: bool,
    },
    /// Writes a held loan's payload (in two pieces split at `split`) and commits it.
    Commit {
        index: u8,
        len: u16,
        split: u16,
        fill: u8,
        meta: MetaIn,
    },
    /// Drops a held loan without commit (it becomes a skip marker).
    DropLoan {
        index: u8,
    },
    Recv {
        channel: bool,
        buf_len: u16,
    },
    RecvBlocking {
        channel: bool,
        buf_len: u16,
    },
    RecvBatch {
        channel: bool,
        max: u8,
    },
    /// Receives in place and keeps the guard.
    RecvInPlace {
        channel: bool,
    },
    /// Checks a held guard's payload again and drops it.
    ReleaseGuard {
        index: u8,
    },
    Inspect {
        channel: bool,
    },
}

/// A message the model expects.
#[derive(Clone, Debug)]
struct Expected {
    position: u64,
    meta: SendMeta,
    payload: Vec<u8>,
}

#[derive(Clone, Debug)]
enum Cell {
    Pending,
    Skip,
    Message(Expected),
}

/// The model of one channel.
struct Model {
    id: u32,
    capacity: u64,
    band_offset: u64,
    head: u64,
    tail: u64,
    /// Positions `head..tail`.
    queue: VecDeque<Cell>,
    /// Positions received in place whose slot is not yet freed.
    held: BTreeSet<u64>,
}

impl Model {
    /// Whether a producer at `position` finds its slot free: the position one lap earlier has
    /// been received and its slot released.
    fn free(&self, position: u64) -> bool {
        match position.checked_sub(self.capacity) {
            None => true,
            Some(previous) => previous < self.head && !self.held.contains(&previous),
        }
    }

    /// Free positions from `tail` on, at most `max`.
    fn claimable(&self, max: usize) -> usize {
        (0..max as u64)
            .take_while(|&k| self.free(self.tail + k))
            .count()
    }

    /// Published positions (messages or markers) from `head` on, at most `max`.
    /// What a receive that finds nothing at the head reports (PROTOCOL.md §6.2): `Pending`
    /// when the head is claimed and unpublished while a later position is published.
    fn nothing_at_head(&self) -> RecvError {
        let pending_front = matches!(self.queue.front(), Some(Cell::Pending));
        let published_behind = self
            .queue
            .iter()
            .skip(1)
            .any(|cell| !matches!(cell, Cell::Pending));
        if pending_front && published_behind {
            RecvError::Pending {
                position: self.head,
            }
        } else {
            RecvError::Empty
        }
    }

    fn published(&self, max: usize) -> usize {
        self.queue
            .iter()
            .take(max)
            .take_while(|cell| !matches!(cell, Cell::Pending))
            .count()
    }

    fn claim(&mut self, cell: Cell) -> u64 {
        let position = self.tail;
        self.queue.push_back(cell);
        self.tail += 1;
        position
    }

    fn set(&mut self, position: u64, cell: Cell) {
        let index = (position - self.head) as usize;
        assert!(matches!(self.queue[index], Cell::Pending));
        self.queue[index] = cell;
    }

    fn pop(&mut self) -> Cell {
        self.head += 1;
        self.queue.pop_front().expect("popped a published position")
    }

    fn info(&self) -> ChannelInfo {
        ChannelInfo {
            id: self.id,
            capacity: self.capacity,
            band_offset: self.band_offset,
            head: self.head,
            tail: self.tail,
            depth: (self.tail - self.head).min(self.capacity),
        }
    }

    /// What `try_recv` with a buffer of `buf_len` bytes must return; applies it to the model.
    fn recv(&mut self, buf_len: usize) -> Result<Expected, RecvError> {
        loop {
            match self.queue.front() {
                None | Some(Cell::Pending) => return Err(self.nothing_at_head()),
                Some(Cell::Skip) => {
                    self.pop();
                }
                Some(Cell::Message(message)) => {
                    if message.payload.len() > buf_len {
                        return Err(RecvError::BufferTooSmall {
                            needed: message.payload.len(),
                            available: buf_len,
                        });
                    }
                    match self.pop() {
                        Cell::Message(message) => return Ok(message),
                        _ => unreachable!("front was a message"),
                    }
                }
            }
        }
    }
}

/// The metadata a receiver must see for `expected` on channel `id`.
fn expected_meta(id: u32, expected: &Expected) -> MessageMeta {
    MessageMeta {
        message_id: expected.position,
        timestamp_ns: expected.meta.timestamp_ns,
        channel_id: id,
        message_type: expected.meta.message_type,
        sender_pid: expected.meta.sender_pid,
        sender_runtime: expected.meta.sender_runtime,
        flags: expected.meta.flags,
        payload_len: expected.payload.len() as u32,
        reserved: 0,
    }
}

/// The error a send of `len` bytes with `meta` must fail with before claiming anything.
fn refusal(len: usize, meta: &SendMeta) -> Option<SendError> {
    if len > MSG_INLINE {
        Some(SendError::TooLarge {
            len,
            limit: MSG_INLINE,
        })
    } else if meta.flags & 0x00FF != 0 {
        Some(SendError::ReservedFlags { flags: meta.flags })
    } else {
        None
    }
}

fn payload_len(raw: u16) -> usize {
    usize::from(raw) % 1024
}

/// Decodes `data` into a setup and operations (the same way for the fuzzer and the replay).
pub fn decode_input(data: &[u8]) -> (RingSetup, Vec<RingOp>) {
    decode(data, MAX_OPS, |u: &mut Unstructured<'_>| u.arbitrary())
}

/// What a run did (the replay test checks the corpus exercises each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub ops: usize,
    pub sent: usize,
    pub received: usize,
    pub full: usize,
    pub empty: usize,
    pub skipped_markers: usize,
}

struct Held<'c, 'a> {
    loans: Vec<(usize, SendLoan<'c, 'a>)>,
    guards: Vec<(usize, RecvGuard<'c, 'a>, Expected)>,
}

/// Runs one input against the model. Panics on any disagreement.
pub fn run(data: &[u8]) -> Stats {
    let (setup, ops) = decode_input(data);
    let capacities = setup.capacities();
    let mut memory = formatted_segment(
        HEADER_SIZE + (capacities[0] + capacities[1]) as usize * SLOT_SIZE,
        1,
    );
    let region = Region::new(memory.as_mut_bytes()).expect("AlignedBlock memory is aligned");
    let segment = Segment::attach(region).expect("a formatted segment attaches");
    let channels: Vec<Channel<'_>> = capacities
        .iter()
        .enumerate()
        .map(|(id, &capacity)| {
            segment
                .create_channel(id as u32, capacity, 1)
                .expect("room for both channels")
        })
        .collect();
    // Below the minimum is refused, and refusing leaves no trace.
    assert_eq!(
        segment.create_channel(2, MIN_CAPACITY / 2, 1).err(),
        Some(Error::InvalidCapacity {
            capacity: MIN_CAPACITY / 2
        })
    );
    let mut models: Vec<Model> = channels
        .iter()
        .map(|channel| Model {
            id: channel.id(),
            capacity: channel.capacity(),
            band_offset: channel.geometry().band_offset,
            head: 0,
            tail: 0,
            queue: VecDeque::new(),
            held: BTreeSet::new(),
        })
        .collect();
    let mut held = Held {
        loans: Vec::new(),
        guards: Vec::new(),
    };
    let mut stats = Stats::default();
    for op in &ops {
        stats.ops += 1;
        apply(&channels, &mut models, &mut held, op, &mut stats);
        for (channel, model) in channels.iter().zip(&models) {
            assert_eq!(
                channel.info(),
                model.info(),
                "cursors diverged after {op:?}"
            );
        }
    }

    // Wind down: outstanding loans become skip markers, guards free their slots, and then
    // every message still queued must come out in order and intact.
    for (which, loan) in held.loans.drain(..) {
        let position = loan.position();
        drop(loan);
        models[which].set(position, Cell::Skip);
    }
    for (which, guard, expected) in held.guards.drain(..) {
        check_guard(&guard, models[which].id, &expected);
        drop(guard);
        models[which].held.remove(&expected.position);
    }
    for (which, channel) in channels.iter().enumerate() {
        loop {
            let predicted = models[which].recv(MSG_INLINE);
            let mut buf = [0u8; MSG_INLINE];
            let actual = channel.try_recv(&mut buf);
            check_recv(which, &models, predicted, actual, &buf);
            if actual.is_err() {
                break;
            }
        }
        let info = channel.info();
        assert_eq!(info, models[which].info());
        assert_eq!(
            (info.depth, info.head),
            (0, info.tail),
            "drained channel not empty"
        );
        assert!(channel.has_free_slot());
    }
    assert_eq!(
        segment.channels().as_slice(),
        &[models[0].info(), models[1].info()]
    );
    stats
}

fn check_recv(
    which: usize,
    models: &[Model],
    predicted: Result<Expected, RecvError>,
    actual: Result<dmxp_nostd::Received, RecvError>,
    buf: &[u8],
) {
    match (predicted, actual) {
        (Ok(expected), Ok(received)) => {
            assert_eq!(received.meta, expected_meta(models[which].id, &expected));
            assert_eq!(received.len, expected.payload.len());
            assert_eq!(
                &buf[..received.len],
                &expected.payload[..],
                "payload differs"
            );
        }
        (Err(predicted), Err(actual)) => assert_eq!(actual, predicted),
        (predicted, actual) => panic!(
            "channel {which}: model says {:?}, ring says {:?}",
            predicted.map(|e| e.position),
            actual.map(|r| r.meta.message_id)
        ),
    }
}

fn check_guard(guard: &RecvGuard<'_, '_>, id: u32, expected: &Expected) {
    assert_eq!(*guard.meta(), expected_meta(id, expected));
    let payload = guard.payload();
    assert_eq!(payload.len(), expected.payload.len());
    let mut buf = [0u8; MSG_INLINE];
    assert_eq!(payload.copy_to(&mut buf), expected.payload.len());
    assert_eq!(
        &buf[..payload.len()],
        &expected.payload[..],
        "in-place payload differs"
    );
    for (index, byte) in expected.payload.iter().enumerate().step_by(61) {
        assert_eq!(payload.get(index), Some(*byte));
    }
    assert_eq!(payload.get(expected.payload.len()), None);
    if let Some(word) = payload.word(0) {
        let mut le = [0u8; 8];
        let n = expected.payload.len().min(8);
        le[..n].copy_from_slice(&expected.payload[..n]);
        assert_eq!(
            word,
            u64::from_le_bytes(le),
            "first payload word (zero-padded)"
        );
    }
}

fn apply<'c, 'a>(
    channels: &'c [Channel<'a>],
    models: &mut [Model],
    held: &mut Held<'c, 'a>,
    op: &RingOp,
    stats: &mut Stats,
) {
    match *op {
        RingOp::Send {
            channel,
            len,
            fill,
            meta,
        }
        | RingOp::SendBlocking {
            channel,
            len,
            fill,
            meta,
        } => {
            let blocking = matches!(op, RingOp::SendBlocking { .. });
            let which = usize::from(channel);
            let (ch, model) = (&channels[which], &mut models[which]);
            let len = payload_len(len);
            let meta = meta.send_meta();
            let payload = pattern(fill, model.tail, len);
            let result = if blocking {
                let before = ch.waiters();
                let result = ch.send_blocking(&payload, &meta, &Patience::new(1));
                assert_eq!(ch.waiters(), before);
                result
            } else {
                ch.try_send(&payload, &meta)
            };
            let predicted = match refusal(len, &meta) {
                Some(error) => Err(error),
                None if !model.free(model.tail) => {
                    stats.full += 1;
                    Err(if blocking {
                        SendError::TimedOut
                    } else {
                        SendError::Full
                    })
                }
                None => {
                    stats.sent += 1;
                    let position = model.tail;
                    Ok(model.claim(Cell::Message(Expected {
                        position,
                        meta,
                        payload,
                    })))
                }
            };
            assert_eq!(result, predicted, "{op:?}");
        }
        RingOp::SendBatch {
            channel,
            count,
            len,
            fill,
            meta,
        } => {
            let which = usize::from(channel);
            let (ch, model) = (&channels[which], &mut models[which]);
            let count = usize::from(count % 20);
            let meta = meta.send_meta();
            let payloads: Vec<Vec<u8>> = (0..count)
                .map(|k| {
                    let len = (payload_len(len) + k * 37) % 1000;
                    pattern(fill, model.tail + k as u64, len)
                })
                .collect();
            let result = ch.try_send_batch(&payloads, &meta);
            let predicted = if count == 0 {
                Ok(0)
            } else if let Some(error) = payloads.iter().find_map(|p| refusal(p.len(), &meta)) {
                Err(error)
            } else {
                match model.claimable(count) {
                    0 => {
                        stats.full += 1;
                        Err(SendError::Full)
                    }
                    n => {
                        for payload in payloads.into_iter().take(n) {
                            let position = model.tail;
                            model.claim(Cell::Message(Expected {
                                position,
                                meta,
                                payload,
                            }));
                        }
                        stats.sent += n;
                        Ok(n)
                    }
                }
            };
            assert_eq!(result, predicted, "{op:?}");
        }
        RingOp::Loan { channel } => {
            let which = usize::from(channel);
            if held.loans.len() >= MAX_HELD {
                return;
            }
            let (ch, model) = (&channels[which], &mut models[which]);
            match ch.try_loan() {
                Ok(loan) => {
                    assert!(model.free(model.tail), "loan granted on a full ring");
                    assert_eq!(loan.position(), model.claim(Cell::Pending));
                    held.loans.push((which, loan));
                }
                Err(error) => {
                    assert_eq!(error, SendError::Full);
                    assert!(!model.free(model.tail), "loan refused on a ring with room");
                    stats.full += 1;
                }
            }
        }
        RingOp::Commit {
            index,
            len,
            split,
            fill,
            meta,
        } => {
            if held.loans.is_empty() {
                return;
            }
            let (which, mut loan) = held
                .loans
                .swap_remove(usize::from(index) % held.loans.len());
            let position = loan.position();
            let len = payload_len(len);
            let meta = meta.send_meta();
            let payload = pattern(fill, position, len.min(MSG_INLINE));
            let split = usize::from(split) % (payload.len() + 1);
            let mut area = loan.payload();
            assert_eq!(area.capacity(), MSG_INLINE);
            assert!(area.write_at(0, &payload[..split]));
            assert!(area.write_at(split, &payload[split..]));
            assert!(
                !area.write_at(MSG_INLINE, &[0]),
                "wrote past the payload area"
            );
            for (index, byte) in payload.iter().enumerate().step_by(53) {
                assert_eq!(area.get(index), Some(*byte));
            }
            let result = loan.commit(len, &meta);
            let model = &mut models[which];
            match refusal(len, &meta) {
                Some(error) => {
                    assert_eq!(result, Err(error));
                    // A refused commit drops the loan, which publishes a skip marker.
                    model.set(position, Cell::Skip);
                }
                None => {
                    assert_eq!(result, Ok(position));
                    stats.sent += 1;
                    model.set(
                        position,
                        Cell::Message(Expected {
                            position,
                            meta,
                            payload,
                        }),
                    );
                }
            }
        }
        RingOp::DropLoan { index } => {
            if held.loans.is_empty() {
                return;
            }
            let (which, loan) = held
                .loans
                .swap_remove(usize::from(index) % held.loans.len());
            let position = loan.position();
            drop(loan);
            models[which].set(position, Cell::Skip);
        }
        RingOp::Recv { channel, buf_len } | RingOp::RecvBlocking { channel, buf_len } => {
            let blocking = matches!(op, RingOp::RecvBlocking { .. });
            let which = usize::from(channel);
            let ch = &channels[which];
            let buf_len = usize::from(buf_len) % (MSG_INLINE + 64);
            let skipped_before = count_leading_skips(&models[which]);
            let mut predicted = models[which].recv(buf_len);
            let mut buf = vec![0u8; buf_len];
            let actual = if blocking {
                let before = ch.waiters();
                let actual = ch.recv_blocking(&mut buf, &Patience::new(1));
                assert_eq!(ch.waiters(), before);
                if matches!(predicted, Err(RecvError::Empty | RecvError::Pending { .. })) {
                    predicted = Err(RecvError::TimedOut);
                }
                actual
            } else {
                ch.try_recv(&mut buf)
            };
            stats.skipped_markers += skipped_before;
            match &predicted {
                Ok(_) => stats.received += 1,
                Err(RecvError::Empty | RecvError::Pending { .. } | RecvError::TimedOut) => {
                    stats.empty += 1
                }
                Err(_) => {}
            }
            check_recv(which, models, predicted, actual, &buf);
        }
        RingOp::RecvBatch { channel, max } => {
            let which = usize::from(channel);
            let (ch, model) = (&channels[which], &mut models[which]);
            let max = usize::from(max % 24);
            let mut delivered: Vec<(MessageMeta, Vec<u8>)> = Vec::new();
            let result = ch.try_recv_batch(max, |meta, payload| {
                delivered.push((*meta, payload.to_vec()));
            });
            let claimed = if max == 0 { 0 } else { model.published(max) };
            if max > 0 && claimed == 0 {
                stats.empty += 1;
                assert_eq!(result, Err(model.nothing_at_head()));
                return;
            }
            let mut expected = Vec::new();
            for _ in 0..claimed {
                match model.pop() {
                    Cell::Message(message) => expected.push(message),
                    Cell::Skip => stats.skipped_markers += 1,
                    Cell::Pending => unreachable!("published() stops at pending positions"),
                }
            }
            let outcome = result.expect("the model predicts a successful batch");
            assert_eq!((outcome.delivered, outcome.dropped), (expected.len(), 0));
            assert_eq!(delivered.len(), expected.len());
            for ((meta, payload), expected) in delivered.iter().zip(&expected) {
                assert_eq!(*meta, expected_meta(model.id, expected));
                assert_eq!(payload, &expected.payload);
            }
            stats.received += expected.len();
        }
        RingOp::RecvInPlace { channel } => {
            let which = usize::from(channel);
            let ch = &channels[which];
            let skipped = count_leading_skips(&models[which]);
            let predicted = models[which].recv(usize::MAX);
            stats.skipped_markers += skipped;
            match (predicted, ch.try_recv_in_place()) {
                (Ok(expected), Ok(guard)) => {
                    check_guard(&guard, models[which].id, &expected);
                    stats.received += 1;
                    if held.guards.len() < MAX_HELD {
                        models[which].held.insert(expected.position);
                        held.guards.push((which, guard, expected));
                    }
                }
                (Err(predicted), Err(actual)) => {
                    assert_eq!(actual, predicted);
                    stats.empty += 1;
                }
                (predicted, actual) => panic!(
                    "channel {which}: model says {:?}, in-place receive says {:?}",
                    predicted.map(|e| e.position),
                    actual.map(|g| g.meta().message_id)
                ),
            }
        }
        RingOp::ReleaseGuard { index } => {
            if held.guards.is_empty() {
                return;
            }
            let at = usize::from(index) % held.guards.len();
            let (which, guard, expected) = held.guards.swap_remove(at);
            // Nothing may have reused the slot while it was held.
            check_guard(&guard, models[which].id, &expected);
            drop(guard);
            models[which].held.remove(&expected.position);
        }
        RingOp::Inspect { channel } => {
            let which = usize::from(channel);
            let (ch, model) = (&channels[which], &models[which]);
            assert_eq!(ch.has_free_slot(), model.free(model.tail));
            assert_eq!(
                ch.has_message(),
                matches!(model.queue.front(), Some(Cell::Skip | Cell::Message(_)))
            );
            assert_eq!((ch.head(), ch.tail()), (model.head, model.tail));
            assert_eq!(ch.waiters(), (0, 0));
        }
    }
}

fn count_leading_skips(model: &Model) -> usize {
    model
        .queue
        .iter()
        .take_while(|cell| matches!(cell, Cell::Skip))
        .count()
}
