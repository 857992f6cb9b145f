"""Exceptions raised by :mod:`dmxp`.

Every exception derives from :class:`DmxpError`. The subclasses mirror the Rust facade's
``dmxp::ErrorKind``; a few also derive from the builtin exception a Python caller would expect
(``TimeoutError``, ``ValueError``, ``OSError``), so ``except TimeoutError`` works too.

This module is pure Python and does not import the extension: the extension imports it to
raise these classes.
"""

from __future__ import annotations

import builtins
import errno as _errno

__all__ = [
    "DmxpError",
    "NotFoundError",
    "AlreadyExistsError",
    "FullError",
    "TooLargeError",
    "BufferTooSmallError",
    "TimeoutError",
    "NotReadyError",
    "CorruptError",
    "BadMagicError",
    "UnsupportedVersionError",
    "LostError",
    "RevokedError",
    "RunsNotSupportedError",
    "InvalidInputError",
    "OutOfSpaceError",
    "PeerTableFullError",
    "PoolExhaustedError",
    "NoBlobPoolError",
    "BusyError",
    "IoError",
    "UntrustedError",
    "ClosedError",
]


class DmxpError(Exception):
    """Base class of every error raised by dmxp."""


class NotFoundError(DmxpError):
    """The segment or the channel does not exist (the message says which)."""


class AlreadyExistsError(DmxpError):
    """Something that had to be new already exists."""


class FullError(DmxpError):
    """Every slot of the ring holds an unconsumed message (non-blocking send)."""


class TooLargeError(DmxpError):
    """The payload is longer than the channel takes: its ``max_message_size`` (960 bytes, one
    slot, unless the channel was made for longer messages), or one slot's 960 for an item of
    a batch. Nothing was sent."""

    def __init__(self, message: str, length: int = 0, limit: int = 960) -> None:
        super().__init__(message)
        #: Length of the refused payload in bytes.
        self.length = length
        #: The largest payload the call takes: the channel's ``max_message_size``, or 960
        #: for ``send_batch``.
        self.limit = limit


class BufferTooSmallError(DmxpError):
    """The buffer given to ``receive_into`` is shorter than the next message.

    Nothing was consumed: the message is still in the ring. A buffer of the consumer's
    ``max_message_size`` bytes always suffices.
    """

    def __init__(self, message: str, needed: int = 0, available: int = 0) -> None:
        super().__init__(message)
        #: Length of the waiting message.
        self.needed = needed
        #: Length of the buffer that was given.
        self.available = available


class TimeoutError(DmxpError, builtins.TimeoutError):  # noqa: A001 - mirrors ErrorKind::Timeout
    """A deadline passed: a blocking send on a full ring, or a segment or channel that stayed
    "being created" (its creator is slow, or died half-way).

    Also a builtin :class:`TimeoutError`.
    """


class NotReadyError(DmxpError):
    """The segment's ``magic`` is still 0: it is being created, or its creator died."""


class CorruptError(DmxpError):
    """Bytes read from the segment are invalid.

    ``field`` is the layout's name of the field at fault (``magic``, ``version``,
    ``max_channels``, ``channel_count``, ``segment_size``, ``band_cursor``,
    ``peer_table_offset``, ``channel_id``, ``state``, ``capacity``, ``band_offset``,
    ``payload_len``); ``channel`` is the channel id
    when the field belongs to a channel entry or a message, else ``None``.
    """

    def __init__(self, message: str, field: str = "", channel: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.channel = channel


class BadMagicError(CorruptError):
    """The header's ``magic`` is neither 0 nor the DMXP magic: not a DMXP segment."""


class UnsupportedVersionError(CorruptError):
    """The header's ``version`` is not 1: a layout this client does not speak."""


class LostError(DmxpError):
    """A message was lost: its position held a tombstone left for a producer that died."""

    def __init__(self, message: str, message_id: int = 0) -> None:
        super().__init__(message)
        self.message_id = message_id


class RevokedError(DmxpError):
    """This handle's claim on a position was revoked by a repair before it finished.

    A peer judged this process dead, or it held the position longer than the unblock timeout
    (stopped, or holding a loan or view too long; PROTOCOL.md section 11.7). A send so refused
    may still have been delivered once; a receive delivered nothing (consumers count these in
    ``stats["revoked"]`` and go on).
    """

    def __init__(self, message: str, message_id: int = 0) -> None:
        super().__init__(message)
        #: The position whose claim was revoked.
        self.message_id = message_id


class RunsNotSupportedError(DmxpError):
    """The channel carries messages longer than one slot's 960 bytes (runs, PROTOCOL.md
    section 12), and the ``Producer`` or ``Consumer`` was opened with
    ``single_slot_only=True``: code that cannot take a longer message (fixed 960-byte buffers,
    code that speaks only single-slot messages) refuses such a channel up front.

    Nothing was registered and nothing was sent or received; ``channel`` is the channel id.
    """

    def __init__(self, message: str, channel: int = 0) -> None:
        super().__init__(message)
        #: The id of the channel refused.
        self.channel = channel


class InvalidInputError(DmxpError, ValueError):
    """An argument is out of range (channel id, capacity, reserved flag bits, size)."""


class OutOfSpaceError(DmxpError):
    """The segment has no room left for another channel's ring (or for its peer table)."""


class PeerTableFullError(OutOfSpaceError):
    """Every record of the segment's peer table (256) is taken.

    Producers and consumers do not raise it when they open: a handle that cannot register
    works without crash protection (see ``is_registered``). A blob loan needs a record (its
    block's owner), so ``Producer.loan`` on such a handle raises it.
    """


class PoolExhaustedError(DmxpError):
    """Every block of the segment's blob pool that could hold the loan is loaned or held
    (``Producer.loan`` with ``timeout=0``; docs/PROTOCOL.md section 13). Blocks come back as
    consumers release what they received, or ``reclaim_blobs()`` gives back those of dead
    peers. Nothing was loaned.
    """

    def __init__(self, message: str, length: int = 0) -> None:
        super().__init__(message)
        #: Bytes asked for.
        self.length = length


class NoBlobPoolError(DmxpError):
    """The channel does not carry blobs: its segment has no blob pool, or it was created
    without them (``Producer(..., blob_pool=BYTES)`` creates both)."""


class BusyError(DmxpError):
    """An operation gave up after a bounded number of contended retries."""


class IoError(DmxpError, OSError):
    """An operating-system call failed; ``errno`` is set when the OS gave one."""


class UntrustedError(DmxpError, PermissionError):
    """The object found under the segment's name is not one to attach to (PROTOCOL.md
    section 3.4): another user owns it, or it grants more than the ``mode`` asked for.

    Anyone may create a shm object under a name before its real creator runs; its owner can
    then read and rewrite every message. Nothing was mapped or written. ``owner`` is the
    object's owner uid and ``mode`` its permission bits, when known (else ``None``); the
    message names both. Pass ``trust_owner=owner`` and ``mode=mode`` to accept it on purpose.

    Also a builtin :class:`PermissionError` (``errno`` is ``EACCES``).
    """

    def __init__(self, message: str, owner: int | None = None, mode: int | None = None) -> None:
        super().__init__(message)
        # Set after construction: as OSError arguments they would change str(self).
        self.errno = _errno.EACCES
        #: The object's owner uid, or None.
        self.owner = owner
        #: The object's permission bits (``st_mode & 0o7777``), or None.
        self.mode = mode


class ClosedError(DmxpError, ValueError):
    """The producer or consumer was closed."""
