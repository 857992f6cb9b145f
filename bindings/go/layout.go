package dmxp

// Wire layout, version 1 (docs/PROTOCOL.md §2). Every offset is in bytes; header and entry
// offsets are from the segment base, entry field offsets from the entry, slot field offsets
// from the slot.
const (
	// Magic is the header magic, "MEM_PXMD" in memory.
	Magic uint64 = 0x444D58505F4D454D
	// Version is the layout version this package speaks.
	Version uint32 = 1
	// MaxChannels is the number of entries in the channel table.
	MaxChannels = 256
	// ChannelTableOffset is the offset of channel entry 0.
	ChannelTableOffset = 128
	// ChannelEntrySize is the stride of the channel table.
	ChannelEntrySize = 384
	// HeaderSize is the size of the header plus the channel table; the first band starts here.
	HeaderSize = ChannelTableOffset + MaxChannels*ChannelEntrySize
	// SlotSize is the stride of slots in a band.
	SlotSize = 1088
	// SlotAlign is the alignment of every band.
	SlotAlign = 64
	// MsgInline is the largest payload a slot holds.
	MsgInline = 960
	// MinCapacity is the smallest ring capacity.
	MinCapacity = 2
	// MaxCapacity is the largest ring capacity created or accepted.
	MaxCapacity uint64 = 1 << 32
	// SegmentAlign is the alignment of the segment base.
	SegmentAlign = 128
)

// Header field offsets.
const (
	offMagic        = 0
	offVersion      = 8
	offMaxChannels  = 12
	offChannelCount = 16
	offReserved     = 20
	offSegmentSize  = 24
	offBandCursor   = 32
	offCreatorPid   = 40
	offHeaderFlags  = 44
	// offPeerTableOffset is the header field locating the peer table (PROTOCOL.md §11.1).
	offPeerTableOffset = 48
	// offPeerRecords is the header field giving the number of records of the peer table
	// (u32; PROTOCOL.md §2.2, §11.1). Bytes 60..128 stay zero.
	offPeerRecords = 56
	// offBlobPoolOffset is the header field locating the blob pool (u64; PROTOCOL.md §13.1):
	// 0 = the segment has no pool. Bytes 72..128 stay zero.
	offBlobPoolOffset = 64
)

// Peer table (PROTOCOL.md §11.1): n records of PeerRecordSize bytes, carved from the band
// area like a channel band, where n is the header's peer_records, or PeerRecords when that
// is 0 (segments made before the field). The creator chooses n (Options.PeerRecords); an
// attachment reads it once, at attach, and uses it for every table operation.
const (
	// PeerRecords is the number of records of a peer table whose header field peer_records
	// is 0: the default, and the smallest table.
	PeerRecords = 256
	// MaxPeerRecords is the largest number of records a peer table may have (256 channels ×
	// 64 peers, 1 MiB).
	MaxPeerRecords = 16384
	// PeerRecordSize is the stride of peer records.
	PeerRecordSize = 64
	// PeerTableSize is the size of a default peer table (PeerRecords records, 16 KiB); a
	// table of n records is PeerTableLen(n) bytes.
	PeerTableSize = PeerRecords * PeerRecordSize
)

// validPeerRecords: a peer_records value a segment may hold, 0 (= PeerRecords) or
// PeerRecords..MaxPeerRecords (PROTOCOL.md §4.1 check #8).
func validPeerRecords(n uint32) bool {
	return n == 0 || (n >= PeerRecords && n <= MaxPeerRecords)
}

// peerRecordsOf is the number of records a valid peer_records field stands for.
func peerRecordsOf(field uint32) uint32 {
	if field == 0 {
		return PeerRecords
	}
	return field
}

// PeerTableLen is the size in bytes of a peer table of records records (records × 64).
func PeerTableLen(records uint32) uint64 { return uint64(records) * PeerRecordSize }

// Peer record field offsets.
const (
	peerPid = 0
	// runtime (u16) at 4 and role (u16) at 6 share the 32-bit word at 4 (no 16-bit atomics).
	peerRuntimeRole    = 4
	peerStartTime      = 8
	peerChannelID      = 16
	peerIntentCount    = 20
	peerIntentPosition = 24
	peerPidNS          = 32
	// peerWaiting names the wait count of channel_id the owner is counted in (§11.9):
	// waitingNone, waitingNotEmpty or waitingNotFull.
	peerWaiting = 40
	// peerIntentFlags qualifies the intent (PROTOCOL.md §12.5): intentFlagRun, or 0.
	peerIntentFlags     = 44
	peerRecordZeroStart = 48
)

// intentFlagRun is the peer record's intent_flags bit RUN: the intent is one run of exactly
// intent_count positions (PROTOCOL.md §12.5).
const intentFlagRun uint32 = 0x1

// Values of the peer record's waiting word (PROTOCOL.md §11.9).
const (
	// waitingNone: the owner is in no wait count.
	waitingNone uint32 = 0
	// waitingNotEmpty: the owner is counted in its channel's not_empty_waiters (a receive).
	waitingNotEmpty uint32 = 1
	// waitingNotFull: the owner is counted in its channel's not_full_waiters (a send).
	waitingNotFull uint32 = 2
)

// Role is what a registered handle does on its channel (peer record field role).
type Role uint16

// Roles.
const (
	RoleProducer Role = 1
	RoleConsumer Role = 2
)

// Channel entry field offsets.
const (
	entChannelID       = 0
	entFlags           = 4
	entCapacity        = 8
	entBandOffset      = 16
	entState           = 24
	entCreatorPid      = 28
	entNotEmptySeq     = 32
	entNotEmptyWaiters = 36
	entNotFullSeq      = 40
	entNotFullWaiters  = 44
	// entMaxMessageSize is the largest message of a channel with ChannelFlagRuns (u32;
	// PROTOCOL.md §12.1); 0 without it.
	entMaxMessageSize = 80
	entTail           = 128
	entHead           = 256
)

// Slot field offsets (the meta starts at 8).
const (
	slotSequence    = 0
	slotMessageID   = 8
	slotTimestamp   = 16
	slotChannelID   = 24
	slotMessageType = 28
	slotSenderPid   = 32
	// sender_runtime (u16) at 36 and flags (u16) at 38 share the 32-bit word at 36: Go has no
	// 16-bit atomics, so both are read and written through that one aligned word.
	slotRuntimeFlags = 36
	slotPayloadLen   = 40
	slotMetaPad      = 44
	// slotRunSlots and slotRunIndex (u32 each, PROTOCOL.md §12.2) say which run a slot belongs
	// to: its number of positions and this slot's place in it; both 0 in a single-slot
	// message. They share the 64-bit word at 48 (run_slots in its low half).
	slotRunSlots = 48
	slotRunIndex = 52
	slotPayload  = 64
	payloadWords = MsgInline / 8
)

// Channel states (entry offset 24).
const (
	StateEmpty    uint32 = 0
	StateCreating uint32 = 1
	StateReady    uint32 = 2
)

// Channel entry flags (entry offset 4, PROTOCOL.md §2.3, §12.1).
const (
	// ChannelFlagRuns: the channel may carry messages longer than one slot (runs), up to its
	// max_message_size.
	ChannelFlagRuns uint32 = 0x1
	// ChannelFlagBlobs: the channel may carry references to blocks of the segment's blob
	// pool (PROTOCOL.md §13.1); the segment must have a pool.
	ChannelFlagBlobs uint32 = 0x2
	// knownChannelFlags is every entry flag this package knows.
	knownChannelFlags = ChannelFlagRuns | ChannelFlagBlobs
)

// Message flags (meta offset 30).
const (
	// FlagSkip marks a position without a message (an abandoned claim).
	FlagSkip uint16 = 0x0001
	// FlagLost marks a tombstone for a lost message.
	FlagLost uint16 = 0x0002
	// FlagRun marks the first slot of a message longer than one slot: a run (PROTOCOL.md
	// §12.2). A received run's Meta.Flags has it set.
	FlagRun uint16 = 0x0004
	// FlagRunCont marks the other slots of a run.
	FlagRunCont uint16 = 0x0008
	// FlagBlob marks a message whose payload is a 16-byte reference to a block of the blob
	// pool (PROTOCOL.md §13.4); only on channels with ChannelFlagBlobs. A blob received with
	// Channel.ReceiveBlob, or copied by a copying receive, has it set in Meta.Flags, and
	// Meta.PayloadLen is then the block's message length, not 16.
	FlagBlob uint16 = 0x0010
	// ProtocolFlagsMask is the bits the protocol reserves; ordinary sends never set them.
	ProtocolFlagsMask uint16 = 0x00FF
	// ApplicationFlagsMask is the bits applications may use.
	ApplicationFlagsMask uint16 = 0xFF00
)

// sender_runtime codes.
const (
	RuntimeUnknown uint16 = 0
	RuntimeRust    uint16 = 1
	RuntimeC       uint16 = 2
	RuntimePython  uint16 = 3
	RuntimeGo      uint16 = 4
)

// Defaults shared by every client.
const (
	DefaultSegmentName = "/dmxp_alloc"
	DefaultSegmentSize = 128 << 20
	DefaultCapacity    = 1024
	DefaultMode        = 0o600
)

// retryLimit bounds every retry loop of one operation (PROTOCOL.md §4.3).
const retryLimit = 1 << 16

// EntryOffset is the offset of channel entry id.
func EntryOffset(id uint32) uint64 { return ChannelTableOffset + uint64(id)*ChannelEntrySize }

// BandLen is the size in bytes of a band of capacity slots.
func BandLen(capacity uint64) uint64 { return capacity * SlotSize }

// runSlots is the number of positions a message of n bytes takes: 1 up to MsgInline bytes,
// else ceil(n / MsgInline), a run (PROTOCOL.md §12.2).
func runSlots(n int) uint64 {
	if n <= MsgInline {
		return 1
	}
	return uint64((n + MsgInline - 1) / MsgInline)
}

func isPowerOfTwo(v uint64) bool { return v != 0 && v&(v-1) == 0 }

func validCapacity(c uint64) bool {
	return isPowerOfTwo(c) && c >= MinCapacity && c <= MaxCapacity
}

// publishSlot writes the meta as aligned 8-byte words, pairs of 4-byte fields low half
// first; these fail to compile unless each pair is adjacent in one such word.
var (
	_ = [1]struct{}{}[slotMessageType-slotChannelID-4+slotChannelID%8]  // channel_id, message_type
	_ = [1]struct{}{}[slotRuntimeFlags-slotSenderPid-4+slotSenderPid%8] // sender_pid, runtime and flags
	_ = [1]struct{}{}[slotMetaPad-slotPayloadLen-4+slotPayloadLen%8]    // payload_len, zero
	_ = [1]struct{}{}[slotRunIndex-slotRunSlots-4+slotRunSlots%8]       // run_slots, run_index
)
