//! Model tests of one channel: random sequences of operations run against the real ring and
//! against a `VecDeque` that says what each operation must return.
//!
//! The model knows, for every position between `head` and `tail`, whether it holds a message
//! (with the exact meta and payload the consumer must see), a skip marker (a loan dropped or
//! refused at commit) or a loan still being written. From that it predicts every result: `Ok`
//! with the position as `message_id`, `Full`, `Empty`, `TooLarge`, `ReservedFlags`,
//! `BufferTooSmall`, batch counts, and the cursors after each step.
//!
//! Case counts follow `PROPTEST_CASES` (through `ProptestConfig::default()`); under Miri they
//! are capped small.

use std::collections::VecDeque;

use dmxp_nostd::layout::{message_flags, MSG_INLINE};
mod common;

use common::SegmentBuf;
use dmxp_nostd::{
    BatchReceived, Channel, MessageMeta, PayloadMut, Received, RecvError, Segment, SendError,
    SendLoan, SendMeta,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Loans held open at once across operations.
const MAX_OPEN_LOANS: usize = 3;
/// Filler the receive buffer starts with, to show which bytes a receive wrote.
const SENTINEL: u8 = 0xA5;
/// Process id every segment in these tests is formatted and created with.
const PID: u32 = 4242;

// ------------------------------------------------------------------------------ operations

#[derive(Clone, Debug)]
enum Op {
    /// `try_send` of `len` pattern bytes.
    Send {
        len: usize,
        seed: u8,
        meta: SendMeta,
    },
    /// `try_send_batch` of one pattern payload per length.
    SendBatch {
        lens: Vec<usize>,
        seed: u8,
        meta: SendMeta,
    },
    /// `try_loan`, write `len` bytes in chunks of `chunk`, commit.
    LoanCommit { write: LoanWrite },
    /// `try_loan`, scribble `len` bytes, drop without commit.
    LoanDrop { len: usize, seed: u8 },
    /// `try_loan` and keep the loan open across later operations.
    LoanOpen,
    /// Commit (`Some`) or drop (`None`) one of the open loans, picked by index.
    LoanFinish {
        pick: usize,
        write: Option<LoanWrite>,
    },
    /// `try_recv` into a buffer of `buf_len` bytes.
    Recv { buf_len: usize },
    /// `try_recv_batch(max)`.
    RecvBatch { max: usize },
    /// `try_recv_in_place`, read the guard, optionally try one send while it is held, drop it.
    RecvInPlace {
        send_while_held: Option<(usize, u8)>,
    },
    /// `try_send` until `Full`.
    Fill,
    /// `try_recv` until `Empty`.
    Drain,
}

#[derive(Clone, Debug)]
struct LoanWrite {
    len: usize,
    seed: u8,
    chunk: usize,
    meta: SendMeta,
}

/// Application flags mostly; now and then protocol bits, which every send path must refuse.
fn flags_strategy() -> impl Strategy<Value = u16> {
    prop_oneof![
        9 => any::<u8>().prop_map(|high| u16::from(high) << 8),
        1 => any::<u16>(),
    ]
}

fn meta_strategy(flags: BoxedStrategy<u16>) -> impl Strategy<Value = SendMeta> {
    (any::<u32>(), flags, any::<u64>(), any::<u32>(), 0u16..6).prop_map(
        |(message_type, flags, timestamp_ns, sender_pid, sender_runtime)| SendMeta {
            message_type,
            flags,
            timestamp_ns,
            sender_pid,
            sender_runtime,
        },
    )
}

fn any_meta() -> BoxedStrategy<SendMeta> {
    meta_strategy(flags_strategy().boxed()).boxed()
}

fn valid_meta() -> BoxedStrategy<SendMeta> {
    meta_strategy(any::<u8>().prop_map(|high| u16::from(high) << 8).boxed()).boxed()
}

/// Payload lengths: small ones, any, the exact limit, and now and then too large.
fn any_len() -> BoxedStrategy<usize> {
    prop_oneof![
        4 => 0usize..=24,
        3 => 0usize..=MSG_INLINE,
        1 => Just(MSG_INLINE),
        1 => (MSG_INLINE + 1)..=(MSG_INLINE + 64),
    ]
    .boxed()
}

fn valid_len() -> BoxedStrategy<usize> {
    prop_oneof![3 => 0usize..=24, 2 => 0usize..=MSG_INLINE, 1 => Just(MSG_INLINE)].boxed()
}

fn loan_write(
    len: BoxedStrategy<usize>,
    meta: BoxedStrategy<SendMeta>,
) -> BoxedStrategy<LoanWrite> {
    (len, any::<u8>(), 1usize..=80, meta)
        .prop_map(|(len, seed, chunk, meta)| LoanWrite {
            len,
            seed,
            chunk,
            meta,
        })
        .boxed()
}

fn op_strategy(batch_max: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any_len(), any::<u8>(), any_meta())
            .prop_map(|(len, seed, meta)| Op::Send { len, seed, meta }),
        2 => (prop::collection::vec(any_len(), 0..=batch_max), any::<u8>(), any_meta())
            .prop_map(|(lens, seed, meta)| Op::SendBatch { lens, seed, meta }),
        2 => loan_write(any_len(), any_meta()).prop_map(|write| Op::LoanCommit { write }),
        1 => (0usize..=MSG_INLINE, any::<u8>()).prop_map(|(len, seed)| Op::LoanDrop { len, seed }),
        1 => Just(Op::LoanOpen),
        1 => (any::<usize>(), prop::option::of(loan_write(any_len(), any_meta())))
            .prop_map(|(pick, write)| Op::LoanFinish { pick, write }),
        5 => prop_oneof![3 => Just(MSG_INLINE), 1 => 0usize..=MSG_INLINE]
            .prop_map(|buf_len| Op::Recv { buf_len }),
        2 => (0usize..=batch_max + 1).prop_map(|max| Op::RecvBatch { max }),
        2 => prop::option::of((valid_len(), any::<u8>()))
            .prop_map(|send_while_held| Op::RecvInPlace { send_while_held }),
        1 => Just(Op::Fill),
        1 => Just(Op::Drain),
    ]
}

/// One round of the many-laps property: a few valid sends of mixed kinds, then a full drain
/// by one kind of receive. Every round moves `tail` forward by at least one.
fn round_strategy(capacity: usize) -> impl Strategy<Value = Vec<Op>> {
    let send = prop_oneof![
        3 => (valid_len(), any::<u8>(), valid_meta())
            .prop_map(|(len, seed, meta)| Op::Send { len, seed, meta }),
        1 => (prop::collection::vec(valid_len(), 1..=capacity), any::<u8>(), valid_meta())
            .prop_map(|(lens, seed, meta)| Op::SendBatch { lens, seed, meta }),
        1 => loan_write(valid_len(), valid_meta()).prop_map(|write| Op::LoanCommit { write }),
        1 => (0usize..=MSG_INLINE, any::<u8>()).prop_map(|(len, seed)| Op::LoanDrop { len, seed }),
    ];
    let drain = prop_oneof![
        Just(Op::Drain),
        Just(Op::RecvBatch { max: capacity }),
        Just(Op::RecvInPlace {
            send_while_held: None
        }),
    ];
    (prop::collection::vec(send, 1..=capacity), drain).prop_map(move |(mut ops, drain)| {
        // An in-place receive takes one message, so repeat it enough times to empty the ring.
        let repeats = if matches!(drain, Op::RecvInPlace { .. }) {
            capacity + 1
        } else {
            1
        };
        ops.extend(vec![drain; repeats]);
        ops
    })
}

// ------------------------------------------------------------------------------ the model

#[derive(Clone, Debug)]
struct Expected {
    meta: MessageMeta,
    payload: Vec<u8>,
    /// Sent by copy, so the bytes after the payload in its last word are zero.
    zero_padded: bool,
}

#[derive(Clone, Debug)]
enum Entry {
    Message(Expected),
    Skip,
    Pending,
}

struct Model {
    capacity: u64,
    channel_id: u32,
    head: u64,
    queue: VecDeque<Entry>,
    /// Slots claimed by an in-place receive guard that is still alive.
    held: u64,
    delivered: u64,
}

impl Model {
    fn new(capacity: u64, channel_id: u32) -> Self {
        Self {
            capacity,
            channel_id,
            head: 0,
            queue: VecDeque::new(),
            held: 0,
            delivered: 0,
        }
    }

    fn tail(&self) -> u64 {
        self.head + self.queue.len() as u64
    }

    fn occupied(&self) -> u64 {
        self.queue.len() as u64 + self.held
    }

    fn is_full(&self) -> bool {
        self.occupied() == self.capacity
    }

    fn free(&self) -> u64 {
        self.capacity - self.occupied()
    }

    fn expected_meta(&self, position: u64, meta: &SendMeta, len: usize) -> MessageMeta {
        MessageMeta {
            message_id: position,
            timestamp_ns: meta.timestamp_ns,
            channel_id: self.channel_id,
            message_type: meta.message_type,
            sender_pid: meta.sender_pid,
            sender_runtime: meta.sender_runtime,
            flags: meta.flags,
            payload_len: len as u32,
            reserved: 0,
        }
    }

    fn push(&mut self, entry: Entry) -> u64 {
        let position = self.tail();
        self.queue.push_back(entry);
        position
    }

    fn push_message(&mut self, payload: Vec<u8>, meta: &SendMeta, zero_padded: bool) -> u64 {
        let meta = self.expected_meta(self.tail(), meta, payload.len());
        self.push(Entry::Message(Expected {
            meta,
            payload,
            zero_padded,
        }))
    }

    fn entry_mut(&mut self, position: u64) -> Option<&mut Entry> {
        let index = position.checked_sub(self.head)?;
        self.queue.get_mut(index as usize)
    }

    /// Every receive passes over skip markers at the head (and consumes them).
    fn pass_skips(&mut self) {
        while matches!(self.queue.front(), Some(Entry::Skip)) {
            self.queue.pop_front();
            self.head += 1;
        }
    }

    fn pop(&mut self) -> Option<Entry> {
        let entry = self.queue.pop_front()?;
        self.head += 1;
        Some(entry)
    }

    /// Positions at the head that are published (message or marker), at most `max`.
    /// What a receive that finds nothing at the head reports (PROTOCOL.md §6.2): `Pending` when
    /// the head is claimed and unpublished while a later position is published, else `Empty`.
    fn nothing_at_head(&self) -> RecvError {
        let pending_front = matches!(self.queue.front(), Some(Entry::Pending));
        let published_behind = self
            .queue
            .iter()
            .skip(1)
            .any(|entry| !matches!(entry, Entry::Pending));
        if pending_front && published_behind {
            RecvError::Pending {
                position: self.head,
            }
        } else {
            RecvError::Empty
        }
    }

    fn published_run(&self, max: usize) -> usize {
        self.queue
            .iter()
            .take(max)
            .take_while(|entry| !matches!(entry, Entry::Pending))
            .count()
    }
}

/// What a send path must refuse before claiming anything.
fn outgoing_error(len: usize, flags: u16) -> Option<SendError> {
    if len > MSG_INLINE {
        Some(SendError::TooLarge {
            len,
            limit: MSG_INLINE,
        })
    } else if flags & message_flags::PROTOCOL_MASK != 0 {
        Some(SendError::ReservedFlags { flags })
    } else {
        None
    }
}

/// Deterministic payload bytes, different for each seed and each length.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(37)) ^ ((i >> 8) as u8) ^ (len as u8))
        .collect()
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

fn word_of(bytes: &[u8], index: usize) -> u64 {
    let mut le = [0u8; 8];
    let start = index * 8;
    let end = (start + 8).min(bytes.len());
    le[..end - start].copy_from_slice(&bytes[start..end]);
    u64::from_le_bytes(le)
}

// ------------------------------------------------------------------------------ the runner

type Loans<'c, 'a> = Vec<SendLoan<'c, 'a>>;

struct Harness<'c, 'a> {
    channel: &'c Channel<'a>,
    model: Model,
    loans: Loans<'c, 'a>,
}

impl<'c, 'a> Harness<'c, 'a> {
    fn send(&mut self, len: usize, seed: u8, meta: &SendMeta) -> Result<(), TestCaseError> {
        let payload = pattern(seed, len);
        let result = self.channel.try_send(&payload, meta);
        let expected = match outgoing_error(len, meta.flags) {
            Some(error) => Err(error),
            None if self.model.is_full() => Err(SendError::Full),
            None => Ok(self.model.push_message(payload, meta, true)),
        };
        prop_assert_eq!(result, expected, "try_send of {} bytes", len);
        Ok(())
    }

    fn send_batch(
        &mut self,
        lens: &[usize],
        seed: u8,
        meta: &SendMeta,
    ) -> Result<(), TestCaseError> {
        let payloads: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| pattern(seed.wrapping_add(i as u8), len))
            .collect();
        let result = self.channel.try_send_batch(&payloads, meta);
        let refused = lens.iter().find_map(|&len| outgoing_error(len, meta.flags));
        let expected = if payloads.is_empty() {
            Ok(0)
        } else if let Some(error) = refused {
            Err(error)
        } else if self.model.is_full() {
            Err(SendError::Full)
        } else {
            let count = (self.model.free() as usize).min(payloads.len());
            for payload in payloads.into_iter().take(count) {
                self.model.push_message(payload, meta, true);
            }
            Ok(count)
        };
        prop_assert_eq!(result, expected, "try_send_batch of {:?}", lens);
        Ok(())
    }

    /// Writes the loan's bytes in chunks and checks the writes read back.
    fn fill_loan(
        payload: &mut PayloadMut<'_>,
        bytes: &[u8],
        chunk: usize,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(payload.capacity(), MSG_INLINE);
        for (index, part) in bytes.chunks(chunk).enumerate() {
            prop_assert!(payload.write_at(index * chunk, part));
        }
        for (index, &byte) in bytes.iter().enumerate() {
            prop_assert_eq!(payload.get(index), Some(byte));
        }
        // Writes that would run past the 960-byte area are refused.
        prop_assert!(!payload.write_at(MSG_INLINE, &[1]));
        prop_assert!(!payload.write_at(MSG_INLINE - 1, &[1, 2]));
        prop_assert!(!payload.write_at(usize::MAX, &[1]));
        prop_assert!(!payload.set_word(MSG_INLINE / 8, 0));
        prop_assert_eq!(payload.get(MSG_INLINE), None);
        Ok(())
    }

    /// Writes and commits `loan`, or lets a refused commit turn it into a skip marker.
    fn commit(
        &mut self,
        mut loan: SendLoan<'c, 'a>,
        write: &LoanWrite,
    ) -> Result<(), TestCaseError> {
        let position = loan.position();
        let bytes = pattern(write.seed, write.len.min(MSG_INLINE));
        Self::fill_loan(&mut loan.payload(), &bytes, write.chunk)?;
        let result = loan.commit(write.len, &write.meta);
        let entry = match outgoing_error(write.len, write.meta.flags) {
            Some(error) => {
                prop_assert_eq!(result, Err(error));
                Entry::Skip
            }
            None => {
                prop_assert_eq!(result, Ok(position));
                let meta = self.model.expected_meta(position, &write.meta, bytes.len());
                Entry::Message(Expected {
                    meta,
                    payload: bytes,
                    zero_padded: false,
                })
            }
        };
        match self.model.entry_mut(position) {
            Some(slot @ Entry::Pending) => *slot = entry,
            other => return Err(fail(format!("loan at {position} finished over {other:?}"))),
        }
        Ok(())
    }

    /// `try_loan`, checked against the model; the loan's position is recorded as pending.
    fn loan(&mut self) -> Result<Option<SendLoan<'c, 'a>>, TestCaseError> {
        let channel: &'c Channel<'a> = self.channel;
        match channel.try_loan() {
            Ok(loan) => {
                prop_assert!(!self.model.is_full(), "loan granted on a full ring");
                let position = self.model.push(Entry::Pending);
                prop_assert_eq!(loan.position(), position);
                Ok(Some(loan))
            }
            Err(error) => {
                prop_assert_eq!(error, SendError::Full);
                prop_assert!(self.model.is_full(), "loan refused on a ring with room");
                Ok(None)
            }
        }
    }

    fn drop_loan(
        &mut self,
        mut loan: SendLoan<'c, 'a>,
        scribble: &[u8],
    ) -> Result<(), TestCaseError> {
        let position = loan.position();
        prop_assert!(loan.payload().write_at(0, scribble));
        drop(loan);
        match self.model.entry_mut(position) {
            Some(slot @ Entry::Pending) => *slot = Entry::Skip,
            other => return Err(fail(format!("dropped loan at {position} over {other:?}"))),
        }
        Ok(())
    }

    fn check_received(
        &self,
        expected: &Expected,
        meta: &MessageMeta,
        bytes: &[u8],
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(meta, &expected.meta);
        prop_assert_eq!(bytes, &expected.payload[..]);
        Ok(())
    }

    fn recv(&mut self, buf_len: usize) -> Result<bool, TestCaseError> {
        let mut buf = vec![SENTINEL; buf_len];
        let result = self.channel.try_recv(&mut buf);
        self.model.pass_skips();
        match self.model.queue.front() {
            None | Some(Entry::Pending) => {
                prop_assert_eq!(result, Err(self.model.nothing_at_head()));
                Ok(false)
            }
            Some(Entry::Message(expected)) if expected.payload.len() > buf_len => {
                let needed = expected.payload.len();
                prop_assert_eq!(
                    result,
                    Err(RecvError::BufferTooSmall {
                        needed,
                        available: buf_len
                    })
                );
                Ok(false)
            }
            Some(_) => {
                let Some(Entry::Message(expected)) = self.model.pop() else {
                    unreachable!("the front was a message")
                };
                let len = expected.payload.len();
                prop_assert_eq!(
                    result,
                    Ok(Received {
                        meta: expected.meta,
                        len
                    })
                );
                self.check_received(&expected, &expected.meta, &buf[..len])?;
                prop_assert!(
                    buf[len..].iter().all(|&b| b == SENTINEL),
                    "try_recv wrote past the payload"
                );
                self.model.delivered += 1;
                Ok(true)
            }
        }
    }

    fn recv_batch(&mut self, max: usize) -> Result<(), TestCaseError> {
        let mut got: Vec<(MessageMeta, Vec<u8>)> = Vec::new();
        let result = self
            .channel
            .try_recv_batch(max, |meta, payload| got.push((*meta, payload.to_vec())));
        let run = self.model.published_run(max);
        if max == 0 {
            prop_assert_eq!(result, Ok(BatchReceived::default()));
        } else if run == 0 {
            prop_assert_eq!(result, Err(self.model.nothing_at_head()));
        } else {
            let mut expected = Vec::new();
            for _ in 0..run {
                if let Some(Entry::Message(message)) = self.model.pop() {
                    expected.push(message);
                }
            }
            prop_assert_eq!(
                result,
                Ok(BatchReceived {
                    delivered: expected.len(),
                    dropped: 0,
                    lost: 0,
                    revoked: 0
                })
            );
            prop_assert_eq!(got.len(), expected.len());
            for (message, (meta, bytes)) in expected.iter().zip(&got) {
                self.check_received(message, meta, bytes)?;
            }
            self.model.delivered += expected.len() as u64;
        }
        if result.is_err() || max == 0 {
            prop_assert!(got.is_empty(), "callback ran without a delivery");
        }
        Ok(())
    }

    fn recv_in_place(&mut self, send_while_held: Option<(usize, u8)>) -> Result<(), TestCaseError> {
        let channel: &'c Channel<'a> = self.channel;
        let result = channel.try_recv_in_place();
        self.model.pass_skips();
        let guard = match (result, self.model.queue.front()) {
            (Err(error), None | Some(Entry::Pending)) => {
                prop_assert_eq!(error, self.model.nothing_at_head());
                return Ok(());
            }
            (Ok(guard), Some(Entry::Message(_))) => guard,
            (Ok(guard), front) => {
                let meta = *guard.meta();
                return Err(fail(format!(
                    "in-place receive got {meta:?}, model has {front:?}"
                )));
            }
            (Err(error), front) => {
                return Err(fail(format!(
                    "in-place receive failed with {error:?}, model has {front:?}"
                )));
            }
        };
        let Some(Entry::Message(expected)) = self.model.pop() else {
            unreachable!("the front was a message")
        };
        self.model.held = 1;
        let len = expected.payload.len();
        prop_assert_eq!(guard.meta(), &expected.meta);
        let payload = guard.payload();
        prop_assert_eq!(payload.len(), len);
        prop_assert_eq!(payload.is_empty(), len == 0);
        let mut copy = [SENTINEL; MSG_INLINE];
        prop_assert_eq!(payload.copy_to(&mut copy), len);
        prop_assert_eq!(&copy[..len], &expected.payload[..]);
        prop_assert!(copy[len..].iter().all(|&b| b == SENTINEL));
        let mut short = vec![0u8; len / 2];
        prop_assert_eq!(payload.copy_to(&mut short), len / 2);
        prop_assert_eq!(&short[..], &expected.payload[..len / 2]);
        for index in [0, len / 3, len.saturating_sub(1)] {
            prop_assert_eq!(payload.get(index), expected.payload.get(index).copied());
        }
        prop_assert_eq!(payload.get(len), None);
        for index in 0..len / 8 {
            prop_assert_eq!(payload.word(index), Some(word_of(&expected.payload, index)));
        }
        if len % 8 != 0 && expected.zero_padded {
            // Copy sends zero the bytes after the payload in its last word.
            prop_assert_eq!(
                payload.word(len / 8),
                Some(word_of(&expected.payload, len / 8))
            );
        }
        prop_assert_eq!(payload.word(len.div_ceil(8)), None);
        // While the guard lives its slot is not free: a send sees it as occupied.
        if let Some((len, seed)) = send_while_held {
            self.send(len, seed, &SendMeta::default())?;
        }
        drop(guard);
        self.model.held = 0;
        self.model.delivered += 1;
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Send { len, seed, meta } => self.send(*len, *seed, meta)?,
            Op::SendBatch { lens, seed, meta } => self.send_batch(lens, *seed, meta)?,
            Op::LoanCommit { write } => {
                if let Some(loan) = self.loan()? {
                    self.commit(loan, write)?;
                }
            }
            Op::LoanDrop { len, seed } => {
                if let Some(loan) = self.loan()? {
                    self.drop_loan(loan, &pattern(*seed, *len))?;
                }
            }
            Op::LoanOpen => {
                if self.loans.len() < MAX_OPEN_LOANS {
                    if let Some(loan) = self.loan()? {
                        self.loans.push(loan);
                    }
                }
            }
            Op::LoanFinish { pick, write } => {
                if !self.loans.is_empty() {
                    let loan = self.loans.remove(pick % self.loans.len());
                    match write {
                        Some(write) => self.commit(loan, write)?,
                        None => self.drop_loan(loan, &[0xEE; 17])?,
                    }
                }
            }
            Op::Recv { buf_len } => {
                self.recv(*buf_len)?;
            }
            Op::RecvBatch { max } => self.recv_batch(*max)?,
            Op::RecvInPlace { send_while_held } => self.recv_in_place(*send_while_held)?,
            Op::Fill => {
                let room = self.model.free();
                let mut sent = 0u64;
                while !self.model.is_full() {
                    self.send(sent as usize % 40, sent as u8, &SendMeta::default())?;
                    sent += 1;
                    prop_assert!(sent <= room, "more sends succeeded than there was room");
                }
                prop_assert_eq!(sent, room);
                // The ring is full now: one more send is refused.
                self.send(8, 0, &SendMeta::default())?;
            }
            Op::Drain => {
                let mut rounds = 0;
                while self.recv(MSG_INLINE)? {
                    rounds += 1;
                    prop_assert!(rounds <= self.model.capacity, "drained more than capacity");
                }
            }
        }
        self.check_cursors()
    }

    fn check_cursors(&self) -> Result<(), TestCaseError> {
        let (channel, model) = (self.channel, &self.model);
        prop_assert_eq!(channel.head(), model.head);
        prop_assert_eq!(channel.tail(), model.tail());
        let info = channel.info();
        prop_assert_eq!(
            (info.head, info.tail, info.depth),
            (model.head, model.tail(), model.tail() - model.head)
        );
        prop_assert_eq!(
            channel.has_message(),
            matches!(model.queue.front(), Some(Entry::Message(_) | Entry::Skip))
        );
        prop_assert_eq!(channel.has_free_slot(), !model.is_full());
        Ok(())
    }

    /// Finishes open loans (dropping them), drains the ring, and checks nothing is left.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        while let Some(loan) = self.loans.pop() {
            self.drop_loan(loan, &[])?;
        }
        self.apply(&Op::Drain)?;
        prop_assert!(
            self.model.queue.is_empty(),
            "left over: {:?}",
            self.model.queue
        );
        prop_assert_eq!(
            self.channel.try_recv(&mut [0u8; MSG_INLINE]),
            Err(RecvError::Empty)
        );
        Ok(())
    }
}

/// Runs `ops` on a fresh channel `id` of `capacity` slots; returns the final tail.
fn run_case(capacity: u64, id: u32, ops: &[Op]) -> Result<u64, TestCaseError> {
    let mut memory = SegmentBuf::for_capacities(&[capacity]);
    let segment = Segment::format(memory.region(), PID).expect("format");
    let channel = segment.create_channel(id, capacity, PID).expect("create");
    let mut harness = Harness {
        channel: &channel,
        model: Model::new(capacity, id),
        loans: Vec::new(),
    };
    for op in ops {
        harness.apply(op)?;
    }
    harness.finish()?;
    Ok(harness.model.tail())
}

/// `PROPTEST_CASES` (through the default config), capped at `miri_cases` under Miri.
fn config(miri_cases: u32) -> Config {
    let base = Config::default();
    let cases = if cfg!(miri) {
        base.cases.min(miri_cases)
    } else {
        base.cases
    };
    Config {
        cases,
        // Failures print the shrunk input; nothing is written into the source tree.
        failure_persistence: None,
        ..base
    }
}

/// Random operation sequences on one capacity; returns the largest tail any case reached.
fn model_property(capacity: u64, batch_max: usize, max_ops: usize) -> (u32, u64) {
    let config = config(1);
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let max_tail = std::cell::Cell::new(0u64);
    let strategy = (
        0u32..256,
        prop::collection::vec(op_strategy(batch_max), 1..=max_ops),
    );
    let result = runner.run(&strategy, |(id, ops)| {
        let tail = run_case(capacity, id, &ops)?;
        max_tail.set(max_tail.get().max(tail));
        Ok(())
    });
    if let Err(error) = result {
        panic!("capacity {capacity}: {error}");
    }
    (cases, max_tail.get())
}

const MAX_OPS: usize = if cfg!(miri) { 30 } else { 300 };

/// Capacity 1 cannot work in this protocol: with one slot, "position p published"
/// (`sequence == p + 1`) and "free for position p + 1" (`sequence == p + capacity`) are the same
/// value, so a second send would overwrite the unread message (this property found it). The
/// core therefore refuses it; the model checks the refusal instead of a ring.
#[test]
fn capacity_1_is_refused() {
    let mut memory = SegmentBuf::for_capacities(&[2]);
    let segment = Segment::format(memory.region(), 1).unwrap();
    assert_eq!(
        segment.create_channel(0, 1, 1).err(),
        Some(dmxp_nostd::Error::InvalidCapacity { capacity: 1 })
    );
}

#[test]
fn model_capacity_2() {
    let (cases, max_tail) = model_property(2, 5, MAX_OPS);
    if cases >= 64 {
        assert!(
            max_tail > 20,
            "no case lapped the ring 10 times: {max_tail}"
        );
    }
}

/// Under Miri, formatting a segment and carving a 1024-slot band take minutes (every reserved
/// byte is zeroed with its own atomic store), so this one runs natively only.
#[test]
#[cfg_attr(miri, ignore)]
fn model_capacity_1024() {
    let batch_max = if cfg!(miri) { 16 } else { 64 };
    let (cases, max_tail) = model_property(1024, batch_max, MAX_OPS);
    // `Fill` alone takes a case past one lap.
    if cases >= 64 {
        assert!(max_tail > 1024, "no case wrapped the ring: {max_tail}");
    }
}

/// Dedicated many-laps property: rounds of mixed sends then a full drain, at least 11 laps per
/// case on rings of 2 and 4 slots.
fn laps_property(capacity: usize) {
    let mut runner = TestRunner::new(config(1));
    let laps = 11 * capacity;
    let strategy = (
        0u32..256,
        prop::collection::vec(round_strategy(capacity), laps..=laps + 2 * capacity),
    );
    let result = runner.run(&strategy, |(id, rounds)| {
        let ops: Vec<Op> = rounds.into_iter().flatten().collect();
        let tail = run_case(capacity as u64, id, &ops)?;
        prop_assert!(
            tail > 10 * capacity as u64,
            "only {} positions on a ring of {}",
            tail,
            capacity
        );
        Ok(())
    });
    if let Err(error) = result {
        panic!("capacity {capacity}: {error}");
    }
}

#[test]
fn many_laps_capacity_2() {
    laps_property(2);
}

#[test]
#[cfg_attr(miri, ignore)]
fn many_laps_capacity_4() {
    laps_property(4);
}

/// The model itself must notice a wrong ring: a receive that found a message where the model
/// expects none is reported, not ignored (guards against a model that checks nothing).
#[test]
fn model_detects_a_message_it_did_not_expect() {
    let mut memory = SegmentBuf::for_capacities(&[2]);
    let segment = Segment::format(memory.region(), PID).unwrap();
    let channel = segment.create_channel(3, 2, PID).unwrap();
    let mut harness = Harness {
        channel: &channel,
        model: Model::new(2, 3),
        loans: Vec::new(),
    };
    // Sent behind the model's back.
    channel.try_send(b"surprise", &SendMeta::default()).unwrap();
    assert!(harness
        .apply(&Op::Recv {
            buf_len: MSG_INLINE
        })
        .is_err());
}
