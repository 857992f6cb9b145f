// Package dmxp is a pure-Go client (no cgo) for DMXP shared-memory MPMC channels: it maps a
// DMXP segment and sends and receives on its channels following docs/PROTOCOL.md (layout
// version 1), interoperating with the Rust, C and Python clients on the same segment.
//
// A producer creates (or attaches to) a segment and a channel, and sends:
//
//	seg, err := dmxp.OpenOrCreate("/dmxp_quickstart", &dmxp.Options{Size: 1 << 20})
//	ch, _, err := seg.OpenOrCreateChannel(0, 64, time.Second)
//	_, err = ch.Send([]byte("hello"))
//
// A consumer, in another process, attaches and receives:
//
//	seg, err := dmxp.Open("/dmxp_quickstart", nil) // ErrNotFound until it exists
//	ch, err := seg.WaitChannel(0, 10*time.Second)
//	buf := make([]byte, dmxp.MsgInline)
//	meta, err := ch.Receive(buf) // the payload is buf[:meta.PayloadLen]
//
// The package examples, and README.md in this directory, show it whole, with the error
// checks.
//
// # Segments
//
// Open, OpenPath and OpenFd attach to an existing segment (waiting, up to
// Options.Timeout, while its creator is still formatting it) and validate its header;
// Create/CreatePath make one exclusively (O_CREAT|O_EXCL, mode 0600 by default) and format it
// with the magic stored last; OpenOrCreate does either. A POSIX shm name such as "/dmxp_alloc"
// is the file /dev/shm/dmxp_alloc. Open and OpenPath fail at once, with a
// *SegmentNotFoundError matching ErrNotFound, when there is no segment yet.
//
// # Large messages
//
// A slot holds MsgInline (960) bytes. A channel created with ChannelOptions.MaxMessageSize
// above that (Segment.CreateChannelWith and the other ...With calls) carries messages up to
// its limit, Channel.MaxMessageSize: a longer message travels as a run of consecutive slots,
// claimed at once and received whole (PROTOCOL.md §12). Sends past the limit fail with a
// *TooLargeError; a receive buffer shorter than the message gets a *BufferTooSmallError and
// consumes nothing. Batch calls carry single-slot messages only. Code that cannot take a
// message longer than MsgInline calls Channel.RequireSingleSlot after opening a channel: a
// channel that carries runs is refused with a *RunsNotSupportedError.
//
// # Blobs
//
// A segment created with Options.BlobPool (1 to MaxBlobClasses size classes of fixed-size
// blocks) has a blob pool (PROTOCOL.md §13): a payload of any size up to the largest block is
// written once, in place, and read in place, and the ring carries a 16-byte reference to its
// block (message flag FlagBlob). An attach validates the pool's descriptor once and caches it
// (Segment.BlobPool; a bad one is a *CorruptionError of kind BlobPoolOutOfRange,
// BlobPoolBadMagic, BlobPoolBadGeometry or BlobClassBad). A channel created with
// ChannelOptions.Blobs (entry flag ChannelFlagBlobs; BlobsWithoutPool in a segment without a
// pool) carries blobs besides inline messages. On a handle registered as a producer,
// Channel.LoanBlob (or LoanBlobTimeout, LoanBlobContext, which wait for a block) loans a block:
// write it through BlobLoan.Bytes, a slice over the block valid until the loan ends, or
// WriteAt, then BlobLoan.Commit (CommitTimeout, CommitContext while the ring is full) sends
// it, or Abandon gives it back; an exhausted pool is a *PoolExhaustedError. On a handle
// registered as a consumer, Channel.TryReceiveBlob (ReceiveBlob, ReceiveBlobTimeout,
// ReceiveBlobContext) returns a *BlobView: a blob read in place until BlobView.Release, or an
// inline message of the channel in a private copy. The copying receives (TryReceive, Receive,
// the batches) take blobs too: they copy the block's bytes into the buffer and free the block,
// and refuse a buffer shorter than the blob with a *BufferTooSmallError, consuming nothing.
// A bad, stale or forged reference is a *CorruptMessageError with Blob set, counted in
// Stats.Corrupt, and the block it names is left alone. Blocks of dead peers are given back when
// their records are freed (Recover, the sweep of Register; RecoverReport.BlobsReclaimed), and
// Segment.ReclaimBlobs frees leaked blocks and blocks whose message is gone (a loan that finds
// the pool exhausted runs both once); a holder whose block was reclaimed learns it by
// ErrRevoked at Commit or Release. Segment.BlobPoolStats counts blocks by class, state and
// owner. The bytes of a loaned or held block are moved like a claimed slot's payload (below).
//
// # Trust
//
// Trust (PROTOCOL.md §3.4): before mapping a segment it did not just create exclusively,
// Open, OpenPath and OpenOrCreate* check the opened descriptor with fstat: it must be a
// regular file (T1) owned by the effective uid (T2) whose mode grants nothing outside the mode
// asked for, Options.Mode, 0600 by default (T3). Options.Trust opts in explicitly:
// Trust.Owners trusts other uids, Trust.GroupAccess (or Trust.GID, a named group) trusts a
// segment by its group and makes the default mode 0660. Trusting an owner does not widen the
// mode: a 0666 segment of uid 65534 takes Trust{Owners: []int{65534}} and Mode 0o666. The
// last path component is opened with O_NOFOLLOW, so a symbolic link there is refused, and a
// file segment's directory must not be writable by others unless it is sticky (as /tmp is);
// creation (O_CREAT|O_EXCL) never follows a link either. A refused object is reported as an
// *UntrustedError matching ErrUntrusted whose message names its owner uid, its mode in octal
// and what was expected; nothing is mapped or written. Names are checked before any system
// call: a shm name is "/" and 1 to 254 bytes without "/", NUL or control characters, and a
// file path has no control characters; others fail with ErrInvalidArgument. OpenFd makes no
// owner check (access by descriptor is the caller's choice). The client never reformats an
// existing segment, abandoned or not (§3.3).
//
// # Channels
//
// Segment.OpenChannel validates an entry (and that its band overlaps no other) and
// caches its geometry; Segment.OpenOrCreateChannel claims an empty entry by CAS on its state
// word, carves the band from the header's band cursor by CAS, initialises the slots and
// publishes the capacity. A Channel is safe for concurrent use by any number of goroutines
// and processes (a registered one, below, by one goroutine per role). OpenChannel does not
// wait (ErrNotFound, ErrBeingCreated); WaitChannel waits up to its timeout for the channel to
// be created.
//
// # Messages
//
// TrySend / TrySendWith / TrySendBatch never wait (ErrFull); Send, SendTimeout,
// SendWith and SendBatch sleep on the channel's futex word while the ring is full.
// TryReceive / TryReceiveBatch do not wait for a message (ErrEmpty); Receive and
// ReceiveTimeout sleep while the ring is empty. ReceiveContext, SendContext and
// SendWithContext wait until their context is done and then return ctx.Err(), having
// consumed or sent nothing. Empty means nothing is queued (PROTOCOL.md
// §6.2): a receive that finds the head claimed by a producer that has not published it yet,
// while a later position already holds a message, waits for the head instead (the
// non-blocking calls too, spinning and then sleeping, for a bounded time, see UnblockTimeout;
// a blocking one within its deadline). Sleeps last at most 100 ms at a time before re-checking
// the ring, and a sender or receiver makes a FUTEX_WAKE system call only when a peer is
// registered as waiting. Each message is stamped with CLOCK_MONOTONIC (MonotonicNow) unless
// SendOptions.TimestampNs gives its timestamp; Channel.SetTimestamps(false) makes a handle's
// sends write 0 ("unknown", PROTOCOL.md §8) instead of reading the clock.
//
// # Memory model
//
// Every protocol word of the mapping (cursors, sequences, intents, wait words, the header
// and entry fields) is accessed with a sync/atomic operation on an aligned word. Go's atomics
// are sequentially consistent, which implies every acquire, release and fence the protocol
// asks for. The meta and payload of a slot this process has claimed, which no other process
// may touch until the publishing or freeing CAS, are moved with ordinary stores and copy()
// (the meta written as aligned 8-byte words, the payload's last word padded with zeros): the
// Go memory model gives a racing access no undefined behaviour, so a peer that writes the
// slot anyway can only garble bytes, which are then checked like any untrusted value (see
// "Memory model" in README.md). Go has no 16-bit atomics, so the meta fields sender_runtime
// and flags (two u16 at slot offsets 36 and 38) are read as the one aligned 32-bit word they
// share.
//
// # Errors
//
// Errors are typed: *CorruptionError (Kind, Field, Channel, Value; matches ErrCorrupt and, by
// kind, ErrBadMagic or ErrUnsupportedVersion), *UntrustedError (ErrUntrusted),
// *SegmentNotFoundError and *NotFoundError (ErrNotFound: no such segment, no such channel),
// *SegmentExistsError and *ExistsError (ErrExists), *BeingCreatedError, *TooLargeError,
// *BufferTooSmallError, *LostError, *CorruptMessageError, *RevokedError,
// *PoolExhaustedError, *InvalidBlobPoolError and others, each matching a sentinel with
// errors.Is; ErrFull, ErrEmpty, ErrBusy, ErrTimeout, ErrNotReady, ErrNoBlobPool,
// ErrNotRegistered and ErrBlobDone are plain sentinels. The segment errors wrap the *fs.PathError of the failed system call,
// so a missing segment also matches fs.ErrNotExist, and an existing one fs.ErrExist. Other
// failed system calls keep the operating system's error (an *fs.PathError naming the call
// and the file, where there is one).
//
// # Crash recovery
//
// Crash recovery (PROTOCOL.md §11): Channel.Register(RoleProducer or RoleConsumer) takes a
// record in the segment's peer table (carving the table from the band area on first use) and
// brackets every claim with an intent; Channel.Close frees the records. The table has the
// number of records the segment's creator wrote into the header's peer_records
// (Options.PeerRecords: 0, the default, means PeerRecords = 256 records, 16 KiB; otherwise 256
// to MaxPeerRecords = 16,384, 1 MiB; other values are refused with an
// *InvalidPeerRecordsError). Each registered handle takes one record, so a segment with many
// channels and handles may need more. An attach checks the field (a value outside those is a
// *CorruptionError of kind PeerRecordsOutOfRange) and reads it once: Segment.PeerRecords is
// the number every table operation of that Segment uses (registering, leaving, repairs,
// sweeps), whatever the field says later, and peer_table_offset is checked against that table
// size. A registered handle must be used for its role by one goroutine at a time: give each
// goroutine its own handle. If registration fails (ErrPeerTableFull, no space, a corrupt
// peer_table_offset) the handle still works, without protection. The record names the process
// by pid, start time and pid namespace, read for the registering process (not inherited across
// fork); Close frees only records that still name this process. Sends and receives that find
// the channel stuck at one position for StuckGrace (10 ms) run Channel.Recover, which turns a
// dead producer's claim into a LOST tombstone (received as a *LostError and counted in Stats)
// and frees a dead consumer's claim; blocking calls look before each sleep, non-blocking ones
// after 64 full (or empty) results in a row. While the channel stays stuck at one position,
// the pause between two passes doubles up to 160 ms. Records of another pid namespace count as
// alive. Tools may call Recover at any time. PeerDead applies the liveness rules to a pid.
// Register first frees the records of dead peers that hold no intent (§11.10), so records of
// peers killed while idle do not fill the table. A registered handle blocked in a send or
// receive names the wait count it is in (not_empty_waiters or not_full_waiters) in its record,
// and whoever frees the record of a dead peer (Recover or a registration) gives that count
// back (§11.9), so wakers stop making futex calls for it.
//
// # Stopped peers
//
// Stopped peers (PROTOCOL.md §11.8): a position that stays stuck for the handle's unblock
// timeout (UnblockTimeout, 1 s, by default; Channel.SetUnblockTimeout changes it, 0 or less
// never unblocks) is repaired even though its holder is alive: after a repair pass that did
// not move it, a producer's unpublished claim gets a LOST tombstone and a consumer's unfreed
// claim is freed, and the other side is woken. The holder's peer record is left to it; the
// holder learns of the repair by revocation, below.
//
// # Revocation
//
// Revocation (PROTOCOL.md §11.7): a repair may take a position from a peer that was misjudged
// dead. So a send writes the payload, checks the position is still claimed, writes the
// metadata and publishes with a CAS from the claimed state, and a receive frees with a CAS
// from the published state. A failed check or CAS stores nothing more and fails with a
// *RevokedError (ErrRevoked) naming the message_id; a revoked receive discards what it copied.
// Batches finish each position on their own: revoked positions are counted (BatchResult,
// Stats.Revoked) and not delivered.
//
// # Lifetime
//
// Segment.Close unmaps the segment; no Channel of it may be used afterwards.
package dmxp
