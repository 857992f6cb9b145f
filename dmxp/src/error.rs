//! One error type for the whole facade, with a [`ErrorKind`] to match on and a one-line
//! message that names the segment, the channel or the message concerned.

use std::fmt;
use std::io;

use dmxp_nostd::{BlobError, Error as CoreError, RecvError, SendError};

/// What went wrong, without the prose. Match on this; print the [`Error`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The segment or the channel does not exist (the message names which).
    NotFound,
    /// Something that must be new already exists (a channel id given to `create_channel`).
    AlreadyExists,
    /// Every slot of the ring holds an unconsumed message (non-blocking send).
    Full,
    /// The payload is longer than the channel takes.
    TooLarge {
        /// The payload's length in bytes.
        len: usize,
        /// The channel's largest message: [`MSG_INLINE`](crate::MSG_INLINE) (960) unless it
        /// was made for larger ones ([`crate::ChannelBuilder::with_max_message_size`]), and
        /// 960 for the items of a batch send.
        limit: usize,
    },
    /// The caller's buffer is shorter than the next message; nothing was consumed.
    BufferTooSmall {
        /// The message's length in bytes.
        needed: usize,
        /// The buffer's length.
        available: usize,
    },
    /// A deadline passed: a blocking send on a full ring, or a segment or channel that stayed
    /// "being created" (its creator is slow, or died half-way).
    Timeout,
    /// Bytes read from the segment are invalid. `field` is the layout's name for the field at
    /// fault; `channel` is set when it belongs to a channel entry or a message.
    Corrupt {
        /// The field at fault, as the layout spells it (`payload_len`, `capacity`...).
        field: &'static str,
        /// The channel concerned, `None` for a header field.
        channel: Option<u32>,
    },
    /// A message was lost: its position held a tombstone left for a producer that died.
    Lost {
        /// The position of the lost message.
        message_id: u64,
    },
    /// The channel carries messages longer than one slot (runs, PROTOCOL.md §12), and the
    /// handle was asked to take single-slot messages only
    /// ([`crate::ChannelBuilder::with_single_slot_only`]).
    RunsNotSupported {
        /// The channel refused.
        channel: u32,
    },
    /// An argument is out of range (channel id, capacity, reserved flag bits, segment size).
    InvalidInput,
    /// The segment has no room left for another channel's ring.
    OutOfSpace,
    /// An operation gave up after a bounded number of contended retries (heavy contention,
    /// or a peer scribbling on the cursors).
    Busy,
    /// The segment or channel was left half-made by a creator that died (`creator_pid` no
    /// longer runs). A producer (which may create) reformats or re-creates it; a consumer
    /// gets this error at once rather than a timeout.
    Abandoned {
        /// The creator recorded in the segment header or channel entry.
        creator_pid: u32,
    },
    /// An operating-system call failed.
    Io(io::ErrorKind),
    /// The segment's shm object or file is shorter than the segment: a peer truncated it.
    /// `expected` is the size the segment needs (its recorded `segment_size`, or the size
    /// mapped), `found` the object's size now. Touching the lost pages would raise `SIGBUS`.
    Truncated {
        /// The size the segment needs, in bytes.
        expected: u64,
        /// The object's size now.
        found: u64,
    },
    /// This handle's claim on position `message_id` was revoked by a repair before it
    /// finished (PROTOCOL.md §11.7): it was judged dead, or held the position past the unblock
    /// timeout (stopped, or a loan or in-place guard held too long). A send so refused may
    /// still have been delivered once; a receive so refused delivered nothing (consumers count
    /// it in `ReceiveStats::revoked` and go on).
    Revoked {
        /// The position whose claim was revoked.
        message_id: u64,
    },
    /// The object found under the segment's name is not one this process trusts
    /// (PROTOCOL.md §3.4): owned by another user, granting more than the mode asked for, a
    /// symbolic link, not a regular file, or in a directory anyone may write. `owner` and
    /// `mode` are the object's (or its directory's mode) when known. Nothing was mapped or
    /// written; trust it explicitly with [`ChannelBuilder::with_trust_owner`] and
    /// [`ChannelBuilder::with_mode`] if it is meant to be shared.
    ///
    /// [`ChannelBuilder::with_trust_owner`]: crate::ChannelBuilder::with_trust_owner
    /// [`ChannelBuilder::with_mode`]: crate::ChannelBuilder::with_mode
    Untrusted {
        /// The object's owner (uid), when known.
        owner: Option<u32>,
        /// The object's permission bits, or its directory's for an open directory, when
        /// known.
        mode: Option<u32>,
    },
    /// A typed receive ([`Consumer::receive_value`](crate::Consumer::receive_value)) found a
    /// message of `found` bytes where its type has `expected`: the message (position
    /// `message_id`) was consumed, and nothing else was.
    WrongSize {
        /// The size of the type asked for, in bytes.
        expected: usize,
        /// The message's length in bytes.
        found: usize,
        /// The position of the message consumed.
        message_id: u64,
    },
    /// Every blob-pool block that could hold `len` bytes is in use (a non-blocking
    /// [`Producer::loan_blob`](crate::Producer::loan_blob)); blocks come back as consumers
    /// release them.
    PoolExhausted {
        /// Bytes asked for.
        len: usize,
    },
    /// The segment has no blob pool, or the channel was not created to carry blobs
    /// ([`crate::ChannelBuilder::with_blob_pool`]).
    NoBlobPool,
    /// A blob operation needs a handle registered in the peer table (the block's owner is
    /// its record), and this one could not register (the table is full).
    NotRegistered,
}

/// The facade's error: a kind, a one-line message, and the underlying OS error if any.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<io::Error>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An OS error, with what we were doing when it happened. A backend's "truncated"
    /// report becomes [`ErrorKind::Truncated`], its "untrusted" one [`ErrorKind::Untrusted`],
    /// and a refused name [`ErrorKind::InvalidInput`].
    pub(crate) fn io(source: io::Error, doing: impl fmt::Display) -> Self {
        let kind = typed_backend_error(&source).unwrap_or(ErrorKind::Io(source.kind()));
        Self {
            kind,
            message: format!("{doing}: {source}"),
            source: Some(source),
        }
    }

    /// An OS error whose own message already says everything (an untrusted object names
    /// itself, its owner and its mode). Only the shm and file backends attach to named objects.
    #[cfg_attr(not(any(feature = "shm", feature = "file")), allow(dead_code))]
    pub(crate) fn io_bare(source: io::Error) -> Self {
        let kind = typed_backend_error(&source).unwrap_or(ErrorKind::Io(source.kind()));
        Self {
            kind,
            message: source.to_string(),
            source: Some(source),
        }
    }

    /// A core segment/channel-table error, with the segment it concerns.
    pub(crate) fn from_core(error: CoreError, segment: &str) -> Self {
        let kind = match error {
            CoreError::ChannelNotFound { .. } => ErrorKind::NotFound,
            CoreError::ChannelExists { .. } | CoreError::AlreadyFormatted => {
                ErrorKind::AlreadyExists
            }
            CoreError::ChannelBeingCreated { .. } | CoreError::NotReady => ErrorKind::Timeout,
            CoreError::Corrupt(c) => ErrorKind::Corrupt {
                field: c.field(),
                channel: c.channel(),
            },
            CoreError::OutOfSpace { .. } | CoreError::PeerTableFull => ErrorKind::OutOfSpace,
            CoreError::Busy => ErrorKind::Busy,
            CoreError::RunsNotSupported { id } => ErrorKind::RunsNotSupported { channel: id },
            CoreError::RegionMisaligned { .. }
            | CoreError::RegionTooSmall { .. }
            | CoreError::InvalidChannelId { .. }
            | CoreError::InvalidCapacity { .. }
            | CoreError::InvalidMaxMessageSize { .. }
            | CoreError::InvalidPid
            | CoreError::InvalidBlobPool
            | CoreError::InvalidPeerRecords { .. } => ErrorKind::InvalidInput,
            CoreError::Blob(e) => Self::blob_kind(e),
        };
        let message = match error {
            CoreError::ChannelBeingCreated { id } => {
                format!("{segment}: channel {id} still being created or abandoned by its creator")
            }
            CoreError::NotReady => {
                format!("{segment}: segment still being created or abandoned by its creator")
            }
            other => format!("{segment}: {other}"),
        };
        Self::new(kind, message)
    }

    fn blob_kind(error: BlobError) -> ErrorKind {
        match error {
            BlobError::NoPool | BlobError::NotABlobChannel { .. } => ErrorKind::NoBlobPool,
            BlobError::NotRegistered => ErrorKind::NotRegistered,
            BlobError::InvalidSpec => ErrorKind::InvalidInput,
            BlobError::TooLarge { len, largest } => ErrorKind::TooLarge {
                len,
                limit: usize::try_from(largest).unwrap_or(usize::MAX),
            },
            BlobError::PoolExhausted { len } => ErrorKind::PoolExhausted { len },
            BlobError::TimedOut => ErrorKind::Timeout,
            BlobError::Revoked => ErrorKind::Revoked { message_id: 0 },
        }
    }

    /// A blob-pool error on `channel`.
    pub(crate) fn from_blob(error: BlobError, channel: u32) -> Self {
        Self::new(
            Self::blob_kind(error),
            format!("channel {channel}: {error}"),
        )
    }

    pub(crate) fn from_send(error: SendError, channel: u32) -> Self {
        match error {
            SendError::Full => Self::new(ErrorKind::Full, format!("channel {channel} is full")),
            SendError::TooLarge { len, limit } => Self::new(
                ErrorKind::TooLarge { len, limit },
                format!("channel {channel}: message of {len} bytes exceeds the {limit}-byte slot"),
            ),
            SendError::ReservedFlags { flags } => Self::new(
                ErrorKind::InvalidInput,
                format!(
                    "channel {channel}: flags {flags:#06x} set protocol-reserved bits (0x00ff)"
                ),
            ),
            SendError::Busy => Self::new(
                ErrorKind::Busy,
                format!("channel {channel}: send gave up after too many contended retries"),
            ),
            SendError::TimedOut => Self::new(
                ErrorKind::Timeout,
                format!("channel {channel}: timed out waiting for a free slot"),
            ),
            SendError::Revoked { message_id } => Self::new(
                ErrorKind::Revoked { message_id },
                format!(
                    "channel {channel}: the claim on position {message_id} was revoked by a \
                     repair before it was published (this producer was judged dead or held \
                     the position past the unblock timeout); the message may or may not have \
                     been delivered"
                ),
            ),
        }
    }

    /// `None` for `Empty` and `Pending` (not errors in the facade: the consumer waits out a
    /// pending position before it reports empty).
    pub(crate) fn from_recv(error: RecvError, channel: u32) -> Option<Self> {
        Some(match error {
            RecvError::Empty | RecvError::Pending { .. } => return None,
            RecvError::BufferTooSmall { needed, available } => Self::new(
                ErrorKind::BufferTooSmall { needed, available },
                format!(
                    "channel {channel}: buffer of {available} bytes too small for a \
                     {needed}-byte message (nothing consumed)"
                ),
            ),
            RecvError::Corrupt {
                message_id,
                payload_len,
            } => Self::new(
                ErrorKind::Corrupt {
                    field: "payload_len",
                    channel: Some(channel),
                },
                format!(
                    "channel {channel}: message {message_id} dropped: payload_len \
                     {payload_len} is impossible (over the limit, or a run of slots that \
                     disagree with it)"
                ),
            ),
            RecvError::Lost { message_id } => Self::new(
                ErrorKind::Lost { message_id },
                format!("channel {channel}: message {message_id} lost (its producer died)"),
            ),
            RecvError::Busy => Self::new(
                ErrorKind::Busy,
                format!("channel {channel}: receive gave up after too many contended retries"),
            ),
            RecvError::TimedOut => Self::new(
                ErrorKind::Timeout,
                format!("channel {channel}: timed out waiting for a message"),
            ),
            RecvError::Revoked { message_id } => Self::new(
                ErrorKind::Revoked { message_id },
                format!(
                    "channel {channel}: the claim on message {message_id} was revoked by a \
                     repair before this consumer freed it; nothing delivered"
                ),
            ),
            RecvError::IsBlob { len, .. } => Self::new(
                ErrorKind::BufferTooSmall {
                    needed: len,
                    available: 0,
                },
                format!("channel {channel}: {error}"),
            ),
            RecvError::NotABlob { .. } => Self::new(
                ErrorKind::InvalidInput,
                format!("channel {channel}: {error}"),
            ),
            RecvError::NotRegistered => Self::new(
                ErrorKind::NotRegistered,
                format!("channel {channel}: {error}"),
            ),
        })
    }

    /// What went wrong.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The `std::io::ErrorKind` this error converts to.
    #[must_use]
    pub fn io_kind(&self) -> io::ErrorKind {
        match self.kind {
            ErrorKind::NotFound => io::ErrorKind::NotFound,
            ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
            ErrorKind::Full => io::ErrorKind::WouldBlock,
            ErrorKind::TooLarge { .. }
            | ErrorKind::BufferTooSmall { .. }
            | ErrorKind::InvalidInput => io::ErrorKind::InvalidInput,
            ErrorKind::WrongSize { .. } => io::ErrorKind::InvalidData,
            ErrorKind::Timeout => io::ErrorKind::TimedOut,
            ErrorKind::Corrupt { .. } | ErrorKind::Lost { .. } => io::ErrorKind::InvalidData,
            ErrorKind::Revoked { .. } => io::ErrorKind::Interrupted,
            ErrorKind::OutOfSpace | ErrorKind::Busy | ErrorKind::Abandoned { .. } => {
                io::ErrorKind::Other
            }
            ErrorKind::Io(kind) => kind,
            ErrorKind::RunsNotSupported { .. } => io::ErrorKind::Unsupported,
            ErrorKind::Truncated { .. } => io::ErrorKind::InvalidData,
            ErrorKind::Untrusted { .. } => io::ErrorKind::PermissionDenied,
            ErrorKind::PoolExhausted { .. } => io::ErrorKind::WouldBlock,
            ErrorKind::NoBlobPool | ErrorKind::NotRegistered => io::ErrorKind::Unsupported,
        }
    }
}

/// The facade kind for a backend error that carries a typed payload: a truncation report, an
/// untrusted object, or a refused name (`InvalidInput`).
fn typed_backend_error(error: &io::Error) -> Option<ErrorKind> {
    if let Some(t) = dmxp_os::Truncated::of(error) {
        return Some(ErrorKind::Truncated {
            expected: t.expected,
            found: t.found,
        });
    }
    if let Some(u) = dmxp_os::UntrustedObject::of(error) {
        return Some(ErrorKind::Untrusted {
            owner: u.reason.owner(),
            mode: u.reason.mode(),
        });
    }
    if error.kind() == io::ErrorKind::InvalidInput {
        return Some(ErrorKind::InvalidInput);
    }
    None
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for io::Error {
    /// Keeps the [`Error`] as the payload (`get_ref()` / `downcast`) under the matching
    /// `io::ErrorKind`: NotFound, WouldBlock for Full, InvalidInput for TooLarge, TimedOut,
    /// InvalidData for Corrupt and Lost.
    fn from(error: Error) -> Self {
        io::Error::new(error.io_kind(), error)
    }
}

impl From<io::Error> for Error {
    fn from(error: io::Error) -> Self {
        Self::io(error, "I/O error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmxp_nostd::Corruption;

    #[test]
    fn kinds_map_to_io_kinds() {
        let cases = [
            (
                Error::from_core(CoreError::ChannelNotFound { id: 7 }, "shm segment /x"),
                io::ErrorKind::NotFound,
            ),
            (
                Error::from_send(SendError::Full, 1),
                io::ErrorKind::WouldBlock,
            ),
            (
                Error::from_send(
                    SendError::TooLarge {
                        len: 961,
                        limit: 960,
                    },
                    1,
                ),
                io::ErrorKind::InvalidInput,
            ),
            (
                Error::from_send(SendError::TimedOut, 1),
                io::ErrorKind::TimedOut,
            ),
            (
                Error::from_core(
                    CoreError::Corrupt(Corruption::BadMagic { found: 5 }),
                    "shm segment /x",
                ),
                io::ErrorKind::InvalidData,
            ),
        ];
        for (error, expected) in cases {
            let text = error.to_string();
            let io_error: io::Error = error.into();
            assert_eq!(io_error.kind(), expected, "{text}");
            assert_eq!(io_error.to_string(), text);
            assert!(io_error
                .get_ref()
                .unwrap()
                .downcast_ref::<Error>()
                .is_some());
        }
    }

    #[test]
    fn messages_name_what_failed_on_one_line() {
        let e = Error::from_core(CoreError::ChannelNotFound { id: 7 }, "shm segment /seg");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let text = e.to_string();
        assert!(
            text.contains("channel 7") && text.contains("/seg"),
            "{text}"
        );
        assert!(!text.contains('\n'));

        let e = Error::from_send(
            SendError::TooLarge {
                len: 2000,
                limit: 960,
            },
            3,
        );
        assert_eq!(
            e.kind(),
            ErrorKind::TooLarge {
                len: 2000,
                limit: 960
            }
        );
        assert!(e.to_string().contains("2000"));

        let e = Error::from_core(
            CoreError::Corrupt(Corruption::CapacityNotPowerOfTwo {
                channel: 4,
                capacity: 3,
            }),
            "seg",
        );
        assert_eq!(
            e.kind(),
            ErrorKind::Corrupt {
                field: "capacity",
                channel: Some(4)
            }
        );

        let e = Error::from_core(CoreError::ChannelBeingCreated { id: 2 }, "seg");
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.to_string().contains("still being created or abandoned"));

        assert!(Error::from_recv(RecvError::Empty, 0).is_none());
        let lost = Error::from_recv(RecvError::Lost { message_id: 9 }, 0).unwrap();
        assert_eq!(lost.kind(), ErrorKind::Lost { message_id: 9 });
    }

    #[test]
    fn io_errors_keep_their_source() {
        let e = Error::io(
            io::Error::from(io::ErrorKind::PermissionDenied),
            "opening shm segment /x",
        );
        assert_eq!(e.kind(), ErrorKind::Io(io::ErrorKind::PermissionDenied));
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::PermissionDenied);
    }
}
