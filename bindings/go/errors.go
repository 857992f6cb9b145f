package dmxp

import (
	"errors"
	"fmt"
)

// Sentinel errors. Typed errors below match them with errors.Is; use errors.As to get the
// values they carry.
var (
	// ErrNotReady: the segment's magic is still 0 (or the object is smaller than the header):
	// it is being created, or its creator died while formatting it.
	ErrNotReady = errors.New("dmxp: segment is still being created (magic not yet set)")
	// ErrAlreadyFormatted: refused to format memory whose magic is already set.
	ErrAlreadyFormatted = errors.New("dmxp: region already holds a segment; not formatting")
	// ErrCorrupt matches every *CorruptionError.
	ErrCorrupt = errors.New("dmxp: corrupt segment")
	// ErrBadMagic matches a *CorruptionError of kind BadMagic.
	ErrBadMagic = errors.New("dmxp: bad magic")
	// ErrUnsupportedVersion matches a *CorruptionError of kind UnsupportedVersion.
	ErrUnsupportedVersion = errors.New("dmxp: unsupported version")
	// ErrNotFound matches a *NotFoundError (no such channel) and a *SegmentNotFoundError (no
	// segment under the name or path an attach or Unlink was given).
	ErrNotFound = errors.New("dmxp: segment or channel does not exist")
	// ErrBeingCreated matches a *BeingCreatedError.
	ErrBeingCreated = errors.New("dmxp: channel is being created")
	// ErrExists matches a *ExistsError (a strict channel create found the channel) and a
	// *SegmentExistsError (Create or CreatePath found something under the name or path).
	ErrExists = errors.New("dmxp: segment or channel already exists")
	// ErrFull: every slot holds an unconsumed message.
	ErrFull = errors.New("dmxp: channel full")
	// ErrEmpty: nothing is queued: no published message at the head, and none behind a head
	// that a producer has claimed and not yet published (PROTOCOL.md §6.2; see UnblockTimeout).
	ErrEmpty = errors.New("dmxp: channel empty")
	// ErrBusy: contention (or a corrupt peer) kept an operation from finishing in bounded time.
	ErrBusy = errors.New("dmxp: gave up after too many contended retries")
	// ErrTimeout: a blocking operation reached its deadline.
	ErrTimeout = errors.New("dmxp: timed out")
	// ErrTooLarge matches a *TooLargeError.
	ErrTooLarge = errors.New("dmxp: message too large")
	// ErrReservedFlags matches a *ReservedFlagsError.
	ErrReservedFlags = errors.New("dmxp: flags set protocol-reserved bits")
	// ErrBufferTooSmall matches a *BufferTooSmallError.
	ErrBufferTooSmall = errors.New("dmxp: receive buffer too small")
	// ErrLost matches a *LostError.
	ErrLost = errors.New("dmxp: message lost")
	// ErrCorruptMessage matches a *CorruptMessageError.
	ErrCorruptMessage = errors.New("dmxp: corrupt message")
	// ErrInvalidArgument matches *InvalidCapacityError, *InvalidChannelIDError,
	// *InvalidPeerRecordsError, *InvalidMaxMessageSizeError, *InvalidBlobPoolError and bad
	// sizes.
	ErrInvalidArgument = errors.New("dmxp: invalid argument")
	// ErrOutOfSpace matches a *OutOfSpaceError.
	ErrOutOfSpace = errors.New("dmxp: segment out of space")
	// ErrRegionTooSmall matches a *RegionTooSmallError.
	ErrRegionTooSmall = errors.New("dmxp: region too small")
	// ErrClosed: the segment was closed.
	ErrClosed = errors.New("dmxp: segment closed")
	// ErrPeerTableFull: every record of the peer table (Segment.PeerRecords) is taken; the
	// handle was not registered and works without crash protection. A segment created with a
	// larger Options.PeerRecords has room for more handles.
	ErrPeerTableFull = errors.New("dmxp: peer table full: handle not registered (no crash protection)")
	// ErrRevoked matches a *RevokedError: a peer repaired a position this handle had claimed
	// (PROTOCOL.md §11.7) before the handle published or freed it.
	ErrRevoked = errors.New("dmxp: position revoked by a repair")
	// ErrRunsNotSupported matches a *RunsNotSupportedError: Channel.RequireSingleSlot found
	// the channel carries runs, messages longer than MsgInline (PROTOCOL.md §12.1).
	ErrRunsNotSupported = errors.New("dmxp: channel carries runs (messages longer than one slot)")
	// ErrPoolExhausted matches a *PoolExhaustedError: every block of the blob pool that could
	// hold the loan is in use (PROTOCOL.md §13.3).
	ErrPoolExhausted = errors.New("dmxp: blob pool exhausted")
	// ErrNoBlobPool: a blob operation (a channel created with ChannelOptions.Blobs, a loan, a
	// blob receive) on a segment without a blob pool, or on a channel created without
	// ChannelFlagBlobs.
	ErrNoBlobPool = errors.New("dmxp: no blob pool (segment without a pool, or channel without BLOBS)")
	// ErrNotRegistered: a blob loan or an in-place blob receive on a handle not registered
	// for that role (Channel.Register): a block's owner is the handle's peer record.
	ErrNotRegistered = errors.New("dmxp: blob loans and receives need a handle registered in the peer table")
	// ErrBlobDone: the loan was already committed or abandoned, or the view released: its
	// block is no longer this handle's.
	ErrBlobDone = errors.New("dmxp: blob loan or view already finished")
)

// CorruptionKind names what is wrong with bytes read from a segment; one kind per variant of
// the Rust core's Corruption.
type CorruptionKind int

// The kinds, in the order of the checks of PROTOCOL.md §4 (kinds added later come last, so
// that the values of the others stay as they were).
const (
	BadMagic CorruptionKind = iota + 1
	UnsupportedVersion
	WrongMaxChannels
	ChannelCountTooLarge
	SegmentSizeMismatch
	BandCursorOutOfRange
	ChannelIDMismatch
	UnknownChannelState
	CapacityZero
	CapacityNotPowerOfTwo
	CapacityTooSmall
	CapacityTooLarge
	BandMisaligned
	BandOverlapsHeader
	BandOutsideSegment
	BandsOverlap
	PeerTableOutOfRange
	PeerTableOverlapsBand
	// PeerRecordsOutOfRange: the header's peer_records is neither 0 nor within
	// PeerRecords..MaxPeerRecords (PROTOCOL.md §4.1 check #8).
	PeerRecordsOutOfRange
	// UnknownChannelFlags: the entry's flags has a bit other than ChannelFlagRuns
	// (PROTOCOL.md §12.1 check #10).
	UnknownChannelFlags
	// MaxMessageSizeOutOfRange: the entry's max_message_size is not 0 without
	// ChannelFlagRuns, or not in 961..capacity × 960 with it (PROTOCOL.md §12.1 check #11).
	MaxMessageSizeOutOfRange
	// BlobPoolOutOfRange: the header's blob_pool_offset is not 64-aligned, lies in the
	// header, or leaves no room for the pool descriptor (PROTOCOL.md §13.2 check #1). Limit
	// is the segment length.
	BlobPoolOutOfRange
	// BlobPoolBadMagic: the pool descriptor's pool_magic is not "DMXPBLOB" (check #2).
	BlobPoolBadMagic
	// BlobPoolBadGeometry: class_count is not 1..8, or pool_len does not hold the class
	// descriptors or runs past the segment (check #3). Value is pool_len, Other class_count,
	// Limit the segment length.
	BlobPoolBadGeometry
	// BlobClassBad: size class Other has a bad block size or count, sizes not strictly
	// increasing, or headers or data outside the pool, misaligned or overlapping another
	// class's (checks #4 and #5).
	BlobClassBad
	// BlobsWithoutPool: the channel's flags say BLOBS in a segment without a blob pool
	// (PROTOCOL.md §13.1).
	BlobsWithoutPool
	// BlobPoolOverlap: a channel's band (Channel set) or the peer table (Channel -1) shares
	// bytes with the blob pool (PROTOCOL.md §13.2: clients should refuse it). Value is the
	// band_offset or peer_table_offset.
	BlobPoolOverlap
)

var kindNames = map[CorruptionKind]string{
	BadMagic:              "BadMagic",
	UnsupportedVersion:    "UnsupportedVersion",
	WrongMaxChannels:      "WrongMaxChannels",
	ChannelCountTooLarge:  "ChannelCountTooLarge",
	SegmentSizeMismatch:   "SegmentSizeMismatch",
	BandCursorOutOfRange:  "BandCursorOutOfRange",
	ChannelIDMismatch:     "ChannelIdMismatch",
	UnknownChannelState:   "UnknownChannelState",
	CapacityZero:          "CapacityZero",
	CapacityNotPowerOfTwo: "CapacityNotPowerOfTwo",
	CapacityTooSmall:      "CapacityTooSmall",
	CapacityTooLarge:      "CapacityTooLarge",
	BandMisaligned:        "BandMisaligned",
	BandOverlapsHeader:    "BandOverlapsHeader",
	BandOutsideSegment:    "BandOutsideSegment",
	BandsOverlap:          "BandsOverlap",
	PeerTableOutOfRange:   "PeerTableOutOfRange",
	PeerTableOverlapsBand: "PeerTableOverlapsBand",
	PeerRecordsOutOfRange: "PeerRecordsOutOfRange",

	UnknownChannelFlags:      "UnknownChannelFlags",
	MaxMessageSizeOutOfRange: "MaxMessageSizeOutOfRange",

	BlobPoolOutOfRange:  "BlobPoolOutOfRange",
	BlobPoolBadMagic:    "BlobPoolBadMagic",
	BlobPoolBadGeometry: "BlobPoolBadGeometry",
	BlobClassBad:        "BlobClassBad",
	BlobsWithoutPool:    "BlobsWithoutPool",
	BlobPoolOverlap:     "BlobPoolOverlap",
}

// String is the kind's name as the Rust core spells it (ChannelIDMismatch is
// "ChannelIdMismatch"), or CorruptionKind(n) for an unknown kind.
func (k CorruptionKind) String() string {
	if name, ok := kindNames[k]; ok {
		return name
	}
	return fmt.Sprintf("CorruptionKind(%d)", int(k))
}

// field is the name of the field at fault, as the layout tables spell it.
func (k CorruptionKind) field() string {
	switch k {
	case BadMagic:
		return "magic"
	case UnsupportedVersion:
		return "version"
	case WrongMaxChannels:
		return "max_channels"
	case ChannelCountTooLarge:
		return "channel_count"
	case SegmentSizeMismatch:
		return "segment_size"
	case BandCursorOutOfRange:
		return "band_cursor"
	case ChannelIDMismatch:
		return "channel_id"
	case UnknownChannelState:
		return "state"
	case CapacityZero, CapacityNotPowerOfTwo, CapacityTooSmall, CapacityTooLarge:
		return "capacity"
	case PeerTableOutOfRange, PeerTableOverlapsBand:
		return "peer_table_offset"
	case PeerRecordsOutOfRange:
		return "peer_records"
	case UnknownChannelFlags, BlobsWithoutPool:
		return "flags"
	case MaxMessageSizeOutOfRange:
		return "max_message_size"
	case BlobPoolOutOfRange:
		return "blob_pool_offset"
	case BlobPoolBadMagic:
		return "pool_magic"
	case BlobPoolBadGeometry:
		return "pool_len"
	case BlobClassBad:
		return "block_size"
	default:
		return "band_offset"
	}
}

// CorruptionError reports an invalid value read from a segment: the field at fault, the
// channel (-1 for a header field) and the value found.
type CorruptionError struct {
	Kind CorruptionKind
	// Field is the field at fault: magic, version, max_channels, channel_count, segment_size,
	// band_cursor, peer_records, channel_id, state, capacity, band_offset,
	// peer_table_offset, flags or max_message_size.
	Field string
	// Channel is the entry's id, or -1 for a header field.
	Channel int
	// Value is the value found: the magic, version, max_channels, channel_count, recorded
	// segment_size, band_cursor, peer_records, channel_id, state, capacity, band_offset,
	// peer_table_offset, flags or max_message_size.
	Value uint64
	// Limit is what Value was checked against where there is one: the mapped size
	// (SegmentSizeMismatch), the segment length (BandCursorOutOfRange, BandOutsideSegment,
	// PeerTableOutOfRange), or the largest max_message_size allowed, capacity × 960, for
	// MaxMessageSizeOutOfRange (0 when the channel has no ChannelFlagRuns: it must be 0).
	Limit uint64
	// BandLen is the band's length for BandOutsideSegment, the peer table's length
	// (records × PeerRecordSize) for PeerTableOutOfRange, and the channel's capacity for
	// MaxMessageSizeOutOfRange.
	BandLen uint64
	// Other is the other channel of BandsOverlap, the size class of BlobClassBad and the
	// class_count of BlobPoolBadGeometry (-1 otherwise).
	Other int
}

func corruptHeader(kind CorruptionKind, value uint64) *CorruptionError {
	return &CorruptionError{Kind: kind, Field: kind.field(), Channel: -1, Value: value, Other: -1}
}

func corruptEntry(kind CorruptionKind, channel uint32, value uint64) *CorruptionError {
	return &CorruptionError{Kind: kind, Field: kind.field(), Channel: int(channel), Value: value, Other: -1}
}

// Error implements the error interface.
func (e *CorruptionError) Error() string {
	prefix := "dmxp: corrupt segment: "
	if e.Channel >= 0 {
		prefix += fmt.Sprintf("channel %d: ", e.Channel)
	}
	var what string
	switch e.Kind {
	case BadMagic:
		what = fmt.Sprintf("bad magic 0x%016x (expected 0x%016x)", e.Value, Magic)
	case UnsupportedVersion:
		what = fmt.Sprintf("unsupported version %d (expected %d)", e.Value, Version)
	case WrongMaxChannels:
		what = fmt.Sprintf("max_channels is %d (expected %d)", e.Value, MaxChannels)
	case ChannelCountTooLarge:
		what = fmt.Sprintf("channel_count %d exceeds %d", e.Value, MaxChannels)
	case SegmentSizeMismatch:
		what = fmt.Sprintf("segment_size %d does not fit: %d bytes mapped, at least %d needed",
			e.Value, e.Limit, HeaderSize)
	case BandCursorOutOfRange:
		what = fmt.Sprintf("band_cursor %d outside the band area of a %d-byte segment", e.Value, e.Limit)
	case PeerRecordsOutOfRange:
		what = fmt.Sprintf("peer_records %d is neither 0 nor between %d and %d", e.Value, PeerRecords, MaxPeerRecords)
	case ChannelIDMismatch:
		what = fmt.Sprintf("channel_id field holds %d", e.Value)
	case UnknownChannelState:
		what = fmt.Sprintf("unknown state word %d", e.Value)
	case CapacityZero:
		what = "created but capacity is 0"
	case CapacityNotPowerOfTwo:
		what = fmt.Sprintf("capacity %d is not a power of two", e.Value)
	case CapacityTooSmall:
		what = fmt.Sprintf("capacity %d is below the minimum %d", e.Value, MinCapacity)
	case CapacityTooLarge:
		what = fmt.Sprintf("capacity %d exceeds the limit %d", e.Value, MaxCapacity)
	case BandMisaligned:
		what = fmt.Sprintf("band_offset %d is not a multiple of %d", e.Value, SlotAlign)
	case BandOverlapsHeader:
		what = fmt.Sprintf("band_offset %d lies inside the global header", e.Value)
	case BandOutsideSegment:
		what = fmt.Sprintf("band at %d of %d bytes runs past the %d-byte segment", e.Value, e.BandLen, e.Limit)
	case BandsOverlap:
		what = fmt.Sprintf("band overlaps channel %d's band", e.Other)
	case PeerTableOutOfRange:
		what = fmt.Sprintf("peer_table_offset %d: the %d-byte peer table does not fit, %d-aligned, in the band area of a %d-byte segment",
			e.Value, e.BandLen, SlotAlign, e.Limit)
	case PeerTableOverlapsBand:
		what = fmt.Sprintf("peer table at %d overlaps the channel's band", e.Value)
	case UnknownChannelFlags:
		what = fmt.Sprintf("flags 0x%x has bits other than RUNS (0x%x) and BLOBS (0x%x)", e.Value, ChannelFlagRuns, ChannelFlagBlobs)
	case BlobPoolOutOfRange:
		what = fmt.Sprintf("blob_pool_offset %d does not name a %d-aligned pool descriptor inside the band area of a %d-byte segment",
			e.Value, SlotAlign, e.Limit)
	case BlobPoolBadMagic:
		what = fmt.Sprintf("blob pool magic 0x%016x (expected 0x%016x, \"DMXPBLOB\")", e.Value, BlobPoolMagic)
	case BlobPoolBadGeometry:
		what = fmt.Sprintf("blob pool of %d classes and %d bytes is impossible (1 to %d classes, descriptors and blocks inside the %d-byte segment)",
			e.Other, e.Value, MaxBlobClasses, e.Limit)
	case BlobClassBad:
		what = fmt.Sprintf("blob pool class %d has a bad block size or count, or blocks outside the pool or overlapping another class", e.Other)
	case BlobsWithoutPool:
		what = "flags say BLOBS but the segment has no blob pool"
	case BlobPoolOverlap:
		if e.Channel >= 0 {
			what = fmt.Sprintf("band at %d overlaps the blob pool", e.Value)
		} else {
			what = fmt.Sprintf("peer table at %d overlaps the blob pool", e.Value)
		}
	case MaxMessageSizeOutOfRange:
		if e.Limit == 0 {
			what = fmt.Sprintf("max_message_size %d without the RUNS flag (must be 0)", e.Value)
		} else {
			what = fmt.Sprintf("max_message_size %d outside %d..%d (capacity %d × %d)",
				e.Value, MsgInline+1, e.Limit, e.BandLen, MsgInline)
		}
	default:
		what = fmt.Sprintf("%s: %d", e.Field, e.Value)
	}
	return prefix + what
}

// Is matches ErrCorrupt, and ErrBadMagic / ErrUnsupportedVersion for those kinds.
func (e *CorruptionError) Is(target error) bool {
	switch target {
	case ErrCorrupt:
		return true
	case ErrBadMagic:
		return e.Kind == BadMagic
	case ErrUnsupportedVersion:
		return e.Kind == UnsupportedVersion
	}
	return false
}

// NotFoundError: no channel with this id has been created.
type NotFoundError struct{ Channel uint32 }

// Error implements the error interface.
func (e *NotFoundError) Error() string {
	return fmt.Sprintf("dmxp: channel %d does not exist", e.Channel)
}

// Is matches ErrNotFound.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// SegmentNotFoundError: Open, OpenPath or Unlink found no segment under the name or path (or
// no directory where a file segment's path says); OpenOrCreate and OpenOrCreatePath report
// one when a segment they found was removed and retrying ran out of Options.Timeout. It
// matches ErrNotFound and, through Unwrap, fs.ErrNotExist and the *fs.PathError of the failed
// system call.
type SegmentNotFoundError struct {
	// Segment names what was looked for: "shm segment /name" or "file segment path".
	Segment string
	// Err is the failed system call's error, an *fs.PathError (ENOENT).
	Err error
}

// Error names the segment and the failed system call.
func (e *SegmentNotFoundError) Error() string {
	return fmt.Sprintf("dmxp: %s does not exist (%v)", e.Segment, e.Err)
}

// Is matches ErrNotFound.
func (e *SegmentNotFoundError) Is(target error) bool { return target == ErrNotFound }

// Unwrap returns the system call's error (it matches fs.ErrNotExist).
func (e *SegmentNotFoundError) Unwrap() error { return e.Err }

// SegmentExistsError: Create or CreatePath found something under the name or path (a
// segment, any other file, or a symbolic link, which is never followed). It matches ErrExists
// and, through Unwrap, fs.ErrExist and the *fs.PathError of the failed system call.
type SegmentExistsError struct {
	// Segment names what was to be created: "shm segment /name" or "file segment path".
	Segment string
	// Err is the failed system call's error, an *fs.PathError (EEXIST).
	Err error
}

// Error names the segment and the failed system call.
func (e *SegmentExistsError) Error() string {
	return fmt.Sprintf("dmxp: %s already exists (%v)", e.Segment, e.Err)
}

// Is matches ErrExists.
func (e *SegmentExistsError) Is(target error) bool { return target == ErrExists }

// Unwrap returns the system call's error (it matches fs.ErrExist).
func (e *SegmentExistsError) Unwrap() error { return e.Err }

// BeingCreatedError: another process holds the creation claim of this channel right now.
type BeingCreatedError struct{ Channel uint32 }

// Error implements the error interface.
func (e *BeingCreatedError) Error() string {
	return fmt.Sprintf("dmxp: channel %d is being created by another process", e.Channel)
}

// Is matches ErrBeingCreated.
func (e *BeingCreatedError) Is(target error) bool { return target == ErrBeingCreated }

// ExistsError: a strict create found the channel already created.
type ExistsError struct {
	Channel  uint32
	Capacity uint64
}

// Error implements the error interface.
func (e *ExistsError) Error() string {
	return fmt.Sprintf("dmxp: channel %d already exists with capacity %d", e.Channel, e.Capacity)
}

// Is matches ErrExists.
func (e *ExistsError) Is(target error) bool { return target == ErrExists }

// TooLargeError: a payload longer than the call takes: the channel's MaxMessageSize for a
// single send (MsgInline, 960, on a channel without runs), MsgInline for an item of a batch.
// Nothing was sent.
type TooLargeError struct{ Len, Limit int }

// Error implements the error interface.
func (e *TooLargeError) Error() string {
	return fmt.Sprintf("dmxp: message of %d bytes exceeds the %d-byte limit", e.Len, e.Limit)
}

// Is matches ErrTooLarge.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// ReservedFlagsError: a send asked for flags in the protocol's 0x00FF.
type ReservedFlagsError struct{ Flags uint16 }

// Error implements the error interface.
func (e *ReservedFlagsError) Error() string {
	return fmt.Sprintf("dmxp: flags 0x%04x set protocol-reserved bits (0x00ff)", e.Flags)
}

// Is matches ErrReservedFlags.
func (e *ReservedFlagsError) Is(target error) bool { return target == ErrReservedFlags }

// BufferTooSmallError: the next message is longer than the buffer; nothing was consumed.
type BufferTooSmallError struct{ Needed, Available int }

// Error implements the error interface.
func (e *BufferTooSmallError) Error() string {
	return fmt.Sprintf("dmxp: buffer of %d bytes too small for a %d-byte message", e.Available, e.Needed)
}

// Is matches ErrBufferTooSmall.
func (e *BufferTooSmallError) Is(target error) bool { return target == ErrBufferTooSmall }

// LostError: a LOST tombstone was consumed at MessageID: its producer died mid-send, or held
// the position unpublished past a peer's unblock timeout (PROTOCOL.md §11.8).
type LostError struct{ MessageID uint64 }

// Error implements the error interface.
func (e *LostError) Error() string {
	return fmt.Sprintf("dmxp: message %d lost: its producer died or stopped mid-send", e.MessageID)
}

// Is matches ErrLost.
func (e *LostError) Is(target error) bool { return target == ErrLost }

// CorruptMessageError: the message at MessageID had an impossible payload_len, or was a run
// (PROTOCOL.md §12.4) cut short or inconsistent, or a blob reference (§13.5) that is bad,
// stale or forged; it was consumed and dropped, and counted once.
type CorruptMessageError struct {
	MessageID  uint64
	PayloadLen uint32
	// Run is true for a run: a bad run_slots or payload_len, a continuation missing or with
	// the wrong message_id, run_index, flags or payload_len.
	Run bool
	// Blob is true for a message flagged FlagBlob whose reference is bad (payload_len not 16,
	// class, block or length out of range, on a channel without ChannelFlagBlobs), stale (the
	// block's generation moved on) or forged (the block is not queued for this position).
	// The block it names was left alone.
	Blob bool
}

// Error implements the error interface.
func (e *CorruptMessageError) Error() string {
	if e.Blob {
		return fmt.Sprintf("dmxp: message %d dropped: a bad, stale or forged blob reference", e.MessageID)
	}
	if e.Run {
		return fmt.Sprintf("dmxp: message %d dropped: a run of %d bytes cut short or inconsistent", e.MessageID, e.PayloadLen)
	}
	return fmt.Sprintf("dmxp: message %d dropped: payload_len %d exceeds %d", e.MessageID, e.PayloadLen, MsgInline)
}

// Is matches ErrCorruptMessage.
func (e *CorruptMessageError) Is(target error) bool { return target == ErrCorruptMessage }

// InvalidCapacityError: a requested capacity that is not a power of two in [2, 2^32].
type InvalidCapacityError struct{ Capacity uint64 }

// Error implements the error interface.
func (e *InvalidCapacityError) Error() string {
	return fmt.Sprintf("dmxp: capacity %d must be a power of two between %d and %d", e.Capacity, MinCapacity, MaxCapacity)
}

// Is matches ErrInvalidArgument.
func (e *InvalidCapacityError) Is(target error) bool { return target == ErrInvalidArgument }

// InvalidMaxMessageSizeError: a requested ChannelOptions.MaxMessageSize above the most the
// ring can hold, Capacity × MsgInline (PROTOCOL.md §12.1). Nothing was created.
type InvalidMaxMessageSizeError struct {
	MaxMessageSize uint32
	Capacity       uint64
}

// Error implements the error interface.
func (e *InvalidMaxMessageSizeError) Error() string {
	return fmt.Sprintf("dmxp: max message size %d exceeds what %d slots hold (%d bytes)",
		e.MaxMessageSize, e.Capacity, e.Capacity*MsgInline)
}

// Is matches ErrInvalidArgument.
func (e *InvalidMaxMessageSizeError) Is(target error) bool { return target == ErrInvalidArgument }

// InvalidPeerRecordsError: a requested peer table size (Options.PeerRecords) that is neither 0
// nor within PeerRecords..MaxPeerRecords.
type InvalidPeerRecordsError struct{ Records uint32 }

// Error implements the error interface.
func (e *InvalidPeerRecordsError) Error() string {
	return fmt.Sprintf("dmxp: peer table of %d records: must be 0 (the default, %d) or between %d and %d",
		e.Records, PeerRecords, PeerRecords, MaxPeerRecords)
}

// Is matches ErrInvalidArgument.
func (e *InvalidPeerRecordsError) Is(target error) bool { return target == ErrInvalidArgument }

// InvalidChannelIDError: a channel id at or above 256.
type InvalidChannelIDError struct{ ID uint32 }

// Error implements the error interface.
func (e *InvalidChannelIDError) Error() string {
	return fmt.Sprintf("dmxp: channel id %d out of range (0..%d)", e.ID, MaxChannels)
}

// Is matches ErrInvalidArgument.
func (e *InvalidChannelIDError) Is(target error) bool { return target == ErrInvalidArgument }

// OutOfSpaceError: no room left in the segment for a band of Needed bytes.
type OutOfSpaceError struct{ Needed, Available uint64 }

// Error implements the error interface.
func (e *OutOfSpaceError) Error() string {
	return fmt.Sprintf("dmxp: segment out of space: band needs %d bytes, %d left", e.Needed, e.Available)
}

// Is matches ErrOutOfSpace.
func (e *OutOfSpaceError) Is(target error) bool { return target == ErrOutOfSpace }

// RegionTooSmallError: memory smaller than the header (or a requested size too small).
type RegionTooSmallError struct{ Len, Needed uint64 }

// Error implements the error interface.
func (e *RegionTooSmallError) Error() string {
	return fmt.Sprintf("dmxp: region of %d bytes is too small: %d needed", e.Len, e.Needed)
}

// Is matches ErrRegionTooSmall.
func (e *RegionTooSmallError) Is(target error) bool { return target == ErrRegionTooSmall }

// RevokedError: a position this handle had claimed was repaired by a peer before the handle
// finished with it (PROTOCOL.md §11.7): the handle was judged dead, or stopped for too long.
// The handle stored nothing more into the slot. For a send, the message may or may not reach
// a consumer (a consumer may already have taken the repair's LOST tombstone, or this handle's
// metadata if it was written just before the repair); for a receive, whatever was copied
// was discarded: the message at that position is lost for this handle.
type RevokedError struct {
	// MessageID is the position revoked (the first one, for a batch).
	MessageID uint64
	// Count is the number of positions of the call that were revoked (1 outside batches).
	Count int
}

// Error implements the error interface.
func (e *RevokedError) Error() string {
	if e.Count > 1 {
		return fmt.Sprintf("dmxp: %d positions revoked by a repair, the first message %d", e.Count, e.MessageID)
	}
	return fmt.Sprintf("dmxp: message %d revoked: a peer repaired the position before this handle finished with it", e.MessageID)
}

// Is matches ErrRevoked.
func (e *RevokedError) Is(target error) bool { return target == ErrRevoked }

// RunsNotSupportedError: Channel.RequireSingleSlot, the opt-in check of PROTOCOL.md §12.1
// for code that cannot take a message longer than MsgInline (960) bytes, found the channel's
// entry flag ChannelFlagRuns set: it carries messages up to its MaxMessageSize, longer than
// one slot. The channel handle is unchanged and still usable; this is a refusal on request,
// not corruption.
type RunsNotSupportedError struct{ Channel uint32 }

// Error implements the error interface.
func (e *RunsNotSupportedError) Error() string {
	return fmt.Sprintf("dmxp: channel %d carries messages longer than MsgInline (%d bytes): refused, single-slot messages only",
		e.Channel, MsgInline)
}

// Is matches ErrRunsNotSupported.
func (e *RunsNotSupportedError) Is(target error) bool { return target == ErrRunsNotSupported }

// PoolExhaustedError: LoanBlob found every block of the blob pool that could hold Len bytes
// in use (after one reclaim pass, PROTOCOL.md §13.6). Nothing was loaned. A blocking loan
// (LoanBlobTimeout, LoanBlobContext) waits for a block instead.
type PoolExhaustedError struct{ Len int }

// Error implements the error interface.
func (e *PoolExhaustedError) Error() string {
	return fmt.Sprintf("dmxp: blob pool exhausted: no free block of %d bytes or more", e.Len)
}

// Is matches ErrPoolExhausted.
func (e *PoolExhaustedError) Is(target error) bool { return target == ErrPoolExhausted }

// InvalidBlobPoolError: Options.BlobPool asks for a pool no segment may hold: no class or
// more than MaxBlobClasses, a block size that is not a multiple of 64 within 64..MaxBlockSize,
// a count outside 1..MaxBlockCount, or sizes not strictly increasing. Class is the first
// class at fault (-1 for the number of classes). Nothing was created.
type InvalidBlobPoolError struct {
	Class  int
	Reason string
}

// Error implements the error interface.
func (e *InvalidBlobPoolError) Error() string {
	if e.Class < 0 {
		return fmt.Sprintf("dmxp: blob pool: %s", e.Reason)
	}
	return fmt.Sprintf("dmxp: blob pool class %d: %s", e.Class, e.Reason)
}

// Is matches ErrInvalidArgument.
func (e *InvalidBlobPoolError) Is(target error) bool { return target == ErrInvalidArgument }
