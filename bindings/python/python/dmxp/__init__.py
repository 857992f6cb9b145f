"""DMXP-MPMC for Python: shared-memory multi-producer multi-consumer channels.

Any process on the host that maps the same segment -- in Rust, C, Go or Python -- can send
and receive on its channels (see ``docs/PROTOCOL.md``). This package is a PyO3 extension over
the Rust library, so it follows the protocol exactly as the Rust client does.

>>> import dmxp
>>> with dmxp.Producer(0, capacity=1024) as producer:            # doctest: +SKIP
...     producer.send(b"Hello, World!")
>>> with dmxp.Consumer(0) as consumer:                            # doctest: +SKIP
...     print(consumer.receive(timeout=1.0))

Segments are POSIX shm objects by name (default ``/dmxp_alloc``, i.e. ``/dev/shm/dmxp_alloc``,
128 MiB, mode 0600). A ``Producer`` creates the segment and its channel if they do not exist
(processes racing to do so get one of each); a ``Consumer`` needs them to exist (its ``wait``
argument retries for a while).

Trust (``docs/PROTOCOL.md`` section 3.4): an existing segment is attached to only if this
process's effective user owns it and its mode grants nothing outside ``mode`` (default
``0o600``); anything else raises :class:`UntrustedError` naming its owner and mode, before
anything is mapped. ``trust_owner=uid`` (or a list of up to four uids) also accepts that
user's segments, and ``mode=0o660`` (say) accepts -- and creates -- a wider mode; the two are
separate, explicit opt-ins. Names with control characters raise :class:`InvalidInputError`.

Timeouts -- every ``timeout=`` argument means the same, as in Python's standard library
(``queue.Queue.get``, sockets):

* ``0``: do not wait. Receives return ``None`` when nothing is there (an empty list for
  batches); ``send_with()``, ``send_timeout()`` and ``send_async()`` raise
  :class:`FullError` when the ring is full, ``send_batch()`` returns 0, ``send_all()`` raises
  :class:`TimeoutError` (saying how many it sent).
* a positive number of seconds: wait up to that long. Receives then return ``None`` (an empty
  list for batches); sends raise :class:`TimeoutError`.
* ``None``, a negative number (``dmxp.FOREVER``) or ``math.inf``: wait without a deadline.

Defaults: the calls that do not wait unless asked -- ``receive()``, ``receive_with_meta()``,
``receive_into()``, ``receive_batch()``, ``receive_batch_with_meta()``, ``receive_view()``,
``send_with()``, ``send_batch()``, ``loan()`` -- default to ``timeout=0``; ``send_all()``,
``BlobLoan.commit()`` and the async calls (``receive_async()``, ``receive_with_meta_async()``,
``send_async()``) default to ``None``; ``send_timeout(data, timeout)`` takes it always.
``send()`` and ``try_send()`` never wait, ``send_blocking()`` and ``receive_blocking()``
always do. The constructors' ``timeout`` (and
the consumer's ``wait``) take the same values: ``None`` is "no limit".
(Before this convention, ``timeout=None`` meant "do not wait" in receives and in
``send_with``/``send_batch``; pass ``0`` for that.)

While a blocking call waits it releases the GIL and sleeps on the channel's futex word, waking
every 100 ms to let Python handle signals (Ctrl-C interrupts it with ``KeyboardInterrupt``).

Iteration: ``for payload in consumer:`` yields payloads, waiting for each; it stops when no
message arrived for the consumer's ``idle_timeout`` seconds (``None``, the default: it never
stops by itself) or when the consumer is closed, also from another thread.

asyncio: ``await consumer.receive_async(timeout=None)``,
``await consumer.receive_with_meta_async(...)``, ``async for payload in consumer:`` (stops
like iteration) and ``await producer.send_async(data, timeout=None, message_type=0,
flags=0)`` wait in the running loop, with no thread: the handle's io_uring futex wait
(``docs/PROTOCOL.md`` section 7.4) is watched with ``loop.add_reader``. Cancelling such a call
consumes (or sends) nothing and leaves the channel's waiter counts (``.waiters``) as they
were. One async wait per handle at a time: a second coroutine (or thread) that has to wait on
the same handle meanwhile gets :class:`BusyError`; use one handle per concurrent waiter. Where
the kernel has no io_uring futex waits (Linux before 6.7, io_uring disabled), or with
``DMXP_ASYNC_POLL=1`` in the environment or ``use_async_polling(True)`` on a handle, the
waits poll: a few yields to the loop, then a look every millisecond (``async_wakeup`` says
which). :func:`io_uring_futex_waits` and :func:`io_uring_futex_wakeups` count this process's
io_uring waits and those that a wake-up completed.

``close()`` (or leaving a ``with`` block) releases the mapping; afterwards every call raises
:class:`ClosedError`, including a call that another thread had blocked in.

Long messages (``docs/PROTOCOL.md`` section 12): a slot holds 960 bytes; a channel created
with ``Producer(..., max_message_size=N)`` (N up to ``capacity * 960``) takes messages of up to
N bytes, sent as runs of consecutive slots claimed and published as one message. Every single
send takes payloads up to the channel's ``max_message_size`` (:class:`TooLargeError` beyond),
and every receive delivers them whole; ``receive_into`` needs a buffer of the message's length
(:class:`BufferTooSmallError` otherwise, nothing consumed). Batches carry single-slot messages:
``send_batch`` refuses items over 960 bytes, and a batch receive delivers a long message in a
list of its own. An existing channel keeps the limit it was made with; other clients (Rust, C,
Go) send and receive the same runs. Code that cannot take a message longer than 960 bytes
passes ``single_slot_only=True`` to ``Producer`` or ``Consumer``: a channel that carries runs
then raises :class:`RunsNotSupportedError` (``.channel`` says which) instead of opening.

Blobs (``docs/PROTOCOL.md`` section 13): a segment created with a blob pool
(``Producer(..., blob_pool=64 << 20)``, or ``blob_classes=[(block_size, count), ...]``; the
segment's ``size`` must hold it) passes large payloads without copying them through the ring.
``producer.loan(nbytes)`` lends a block of the pool; write it in place through ``loan.view``, a
writable memoryview (``numpy.frombuffer(loan.view, dtype)`` wraps it without a copy), then
``loan.commit()`` sends a 16-byte reference to it::

    with producer.loan(len(frame)) as loan:       # commits on exit, abandons on an exception
        loan.view[:] = frame

    with consumer.receive_view(timeout=1.0) as message:   # releases the block on exit
        process(message.view)                     # read-only, in place; message.in_place

``consumer.receive_view()`` returns a :class:`BlobMessage` whose ``view`` reads the block in
place until ``release()`` gives it back (an ordinary message comes in the same type, over a
copy, ``in_place`` False). ``loan(nbytes, timeout=0)`` raises :class:`PoolExhaustedError`
when every block that fits is in use (a positive ``timeout`` waits for a consumer to release
one, then raises :class:`TimeoutError`); :class:`TooLargeError` beyond ``max_blob_size``,
:class:`NoBlobPoolError` on a channel without blobs. ``blob_stats()`` counts the blocks by
class and state; ``reclaim_blobs()`` gives back the blocks of dead peers (loans do it
themselves when the pool is exhausted). The copying receives (``receive()``,
``receive_into()``, batches) deliver blobs copied, the block freed at once.

Lifetime rule: ``commit()``, ``abandon()`` and ``release()`` release the view (using it then
raises ``ValueError``). What was made from it -- a numpy array, a slice, another memoryview --
stays valid memory (the segment stays mapped while any of them lives, even after ``close()``),
but is no longer the message: after commit the block is the receiver's, after release it may
hold the next blob. Drop such objects before the loan or message ends. Every open loan and
every held message keeps one of its handle's peer registrations (the block's owner).

Lost and corrupt messages (a tombstone left for a producer that died, an impossible
``payload_len`` written by a buggy peer) are consumed, passed over and counted in
``Consumer.stats``; they never hide the messages behind them.

Crash recovery (``docs/PROTOCOL.md`` section 11): every ``Producer`` and ``Consumer``
registers a record in the segment's peer table (pid, process start time, role, channel,
runtime 3) and notes there, around each claim, the positions it is about to own; the record is
freed by ``close()`` (or when the handle is collected). A process killed between claiming a
slot and publishing (or freeing) it would stall the channel: a receive that finds the channel
stuck at one position for :data:`STUCK_GRACE` seconds, or a send that finds the ring full on a
slot a consumer claimed and never freed, checks the registrants' liveness and repairs the
positions of dead ones, like every other client. A dead producer's position becomes a
tombstone that receives pass over and count (``Consumer.lost``, ``stats["lost"]``); a dead
consumer's slot is freed (its message is lost). ``recover()`` runs a repair pass on demand,
:func:`peers` lists the records. A handle shared by threads registers one record per thread
using it at the same time, up to :data:`REGISTRATIONS_PER_HANDLE`; beyond that, a call that
can wait waits for a record to come back (its own timeout still applies), so one handle never
takes the whole table; a handle that cannot register (every record taken: :data:`PEER_RECORDS`
unless the segment's creator asked for up to :data:`MAX_PEER_RECORDS` with
``Producer(..., peer_records=N)``) still works, without this protection (``is_registered``).

Metadata: ``Message.message_id`` is the message's position in its channel (increasing),
``timestamp_ns`` is CLOCK_MONOTONIC (see :func:`monotonic_ns`; 0, "unknown", from a
``Producer(..., timestamps=False)``), ``sender_runtime`` is 3 for messages sent from Python
(1 Rust, 2 C, 4 Go). ``flags`` may carry only application bits (``0xFF00``).
"""

from __future__ import annotations

from . import errors, pattern
from ._dmxp import (
    DEFAULT_CAPACITY,
    DEFAULT_SEGMENT,
    DEFAULT_SEGMENT_SIZE,
    HEADER_SIZE,
    MAGIC,
    MAX_CHANNELS,
    MAX_PEER_RECORDS,
    MSG_INLINE,
    PEER_RECORDS,
    REGISTRATIONS_PER_HANDLE,
    RUNTIME_PYTHON,
    SLOT_SIZE,
    STUCK_GRACE,
    VERSION,
    BlobLoan,
    BlobMessage,
    Consumer,
    Message,
    Producer,
    futex_wake_calls,
    io_uring_futex_waits,
    io_uring_futex_wakeups,
    monotonic_ns,
    parse_segment,
    peers,
    unlink_segment,
)
from .errors import (
    AlreadyExistsError,
    BadMagicError,
    BufferTooSmallError,
    BusyError,
    ClosedError,
    CorruptError,
    DmxpError,
    FullError,
    InvalidInputError,
    IoError,
    LostError,
    NoBlobPoolError,
    NotFoundError,
    NotReadyError,
    OutOfSpaceError,
    PeerTableFullError,
    PoolExhaustedError,
    RevokedError,
    RunsNotSupportedError,
    TimeoutError,
    TooLargeError,
    UnsupportedVersionError,
    UntrustedError,
)

#: A ``timeout`` that never expires.
FOREVER: float = -1.0

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "BadMagicError",
    "BlobLoan",
    "BlobMessage",
    "BufferTooSmallError",
    "BusyError",
    "ClosedError",
    "Consumer",
    "CorruptError",
    "DEFAULT_CAPACITY",
    "DEFAULT_SEGMENT",
    "DEFAULT_SEGMENT_SIZE",
    "DmxpError",
    "FOREVER",
    "FullError",
    "HEADER_SIZE",
    "InvalidInputError",
    "IoError",
    "LostError",
    "RevokedError",
    "RunsNotSupportedError",
    "MAGIC",
    "MAX_CHANNELS",
    "MAX_PEER_RECORDS",
    "MSG_INLINE",
    "Message",
    "NoBlobPoolError",
    "NotFoundError",
    "NotReadyError",
    "OutOfSpaceError",
    "PEER_RECORDS",
    "REGISTRATIONS_PER_HANDLE",
    "PeerTableFullError",
    "PoolExhaustedError",
    "Producer",
    "RUNTIME_PYTHON",
    "SLOT_SIZE",
    "STUCK_GRACE",
    "TimeoutError",
    "TooLargeError",
    "UnsupportedVersionError",
    "UntrustedError",
    "VERSION",
    "errors",
    "futex_wake_calls",
    "io_uring_futex_waits",
    "io_uring_futex_wakeups",
    "monotonic_ns",
    "parse_segment",
    "pattern",
    "peers",
    "shm_path",
    "unlink_segment",
]


def shm_path(segment: str) -> str:
    """The file that backs the POSIX shm segment ``segment`` (``/dmxp_alloc`` ->
    ``/dev/shm/dmxp_alloc``)."""
    return "/dev/shm/" + segment.lstrip("/")
