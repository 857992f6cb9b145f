package dmxp

import "sort"

// HeaderInfo is a snapshot of the global header fields (PROTOCOL.md §2.2).
type HeaderInfo struct {
	Magic        uint64
	Version      uint32
	MaxChannels  uint32
	ChannelCount uint32
	Reserved     uint32
	SegmentSize  uint64
	BandCursor   uint64
	CreatorPID   uint32
	HeaderFlags  uint32
	// PeerTableOffset locates the peer table (PROTOCOL.md §11.1); 0 = none yet.
	PeerTableOffset uint64
	// PeerRecords is the header's peer_records as stored (offset 56): the number of records
	// of the peer table, 0 meaning PeerRecords (256). Segment.PeerRecords is the number the
	// attachment validated and uses.
	PeerRecords uint32
	// BlobPoolOffset is the header's blob_pool_offset (offset 64, PROTOCOL.md §13.1): where
	// the blob pool lies, 0 = no pool. Segment.BlobPool is the pool the attachment validated.
	BlobPoolOffset uint64
}

// EntryInfo is a snapshot of one channel entry (PROTOCOL.md §2.3).
type EntryInfo struct {
	ChannelID       uint32
	Flags           uint32
	Capacity        uint64
	BandOffset      uint64
	State           uint32
	CreatorPID      uint32
	NotEmptySeq     uint32
	NotEmptyWaiters uint32
	NotFullSeq      uint32
	NotFullWaiters  uint32
	Tail            uint64
	Head            uint64
	// MaxMessageSize is the entry's max_message_size (offset 80, PROTOCOL.md §12.1): with
	// ChannelFlagRuns in Flags, the largest message the channel takes; else 0.
	MaxMessageSize uint32
}

// Geometry is where a created channel's band lies: validated, then cached by the process and
// never re-read from the segment for indexing.
type Geometry struct {
	ID         uint32
	Capacity   uint64
	BandOffset uint64
	// Flags are the entry's channel flags (ChannelFlagRuns, ChannelFlagBlobs or 0) and MaxMessageSize its
	// max_message_size, read once with the rest (PROTOCOL.md §12.1). OpenChannel checks them
	// (entry checks #10 and #11); Segment.Channels lists bands and does not.
	Flags          uint32
	MaxMessageSize uint32
}

// MessageLimit is the largest message a channel of this geometry takes: MaxMessageSize
// with ChannelFlagRuns, else MsgInline (960).
func (g Geometry) MessageLimit() int {
	if g.Flags&ChannelFlagRuns != 0 {
		return int(g.MaxMessageSize)
	}
	return MsgInline
}

// BandEnd is one past the last byte of the band (validation proved it does not overflow).
func (g Geometry) BandEnd() uint64 { return g.BandOffset + BandLen(g.Capacity) }

// validateHeader runs the header checks of PROTOCOL.md §4.1 (#1..#9) in order and returns
// the segment length bands are checked against and the number of records of the peer table.
func validateHeader(h *HeaderInfo, mapped uint64) (segLen uint64, records uint32, err error) {
	switch h.Magic {
	case 0:
		return 0, 0, ErrNotReady
	case Magic:
	default:
		return 0, 0, corruptHeader(BadMagic, h.Magic)
	}
	if h.Version != Version {
		return 0, 0, corruptHeader(UnsupportedVersion, uint64(h.Version))
	}
	if h.MaxChannels != MaxChannels {
		return 0, 0, corruptHeader(WrongMaxChannels, uint64(h.MaxChannels))
	}
	if h.ChannelCount > MaxChannels {
		return 0, 0, corruptHeader(ChannelCountTooLarge, uint64(h.ChannelCount))
	}
	if mapped < HeaderSize {
		return 0, 0, &RegionTooSmallError{Len: mapped, Needed: HeaderSize}
	}
	segLen = mapped
	if h.SegmentSize != 0 {
		if h.SegmentSize > mapped || h.SegmentSize < HeaderSize {
			e := corruptHeader(SegmentSizeMismatch, h.SegmentSize)
			e.Limit = mapped
			return 0, 0, e
		}
		segLen = h.SegmentSize
	}
	if c := h.BandCursor; c != 0 && (c < HeaderSize || c > segLen || c%SlotAlign != 0) {
		e := corruptHeader(BandCursorOutOfRange, c)
		e.Limit = segLen
		return 0, 0, e
	}
	if !validPeerRecords(h.PeerRecords) {
		return 0, 0, corruptHeader(PeerRecordsOutOfRange, uint64(h.PeerRecords))
	}
	records = peerRecordsOf(h.PeerRecords)
	if tableLen := PeerTableLen(records); !peerTableInRange(h.PeerTableOffset, tableLen, segLen) {
		return 0, 0, peerTableOutOfRange(h.PeerTableOffset, tableLen, segLen)
	}
	return segLen, records, nil
}

// peerTableInRange: peer_table_offset 0 (no table), or 64-aligned, past the header, with the
// tableLen bytes of the table inside the segment (PROTOCOL.md §11.1).
func peerTableInRange(table, tableLen, segLen uint64) bool {
	if table == 0 {
		return true
	}
	return table%SlotAlign == 0 && table >= HeaderSize && segLen >= tableLen && table <= segLen-tableLen
}

// peerTableOutOfRange is the error for a tableLen-byte peer table at table that does not fit
// a segLen-byte segment.
func peerTableOutOfRange(table, tableLen, segLen uint64) *CorruptionError {
	e := corruptHeader(PeerTableOutOfRange, table)
	e.Limit = segLen
	e.BandLen = tableLen
	return e
}

// peerTableOverlap is the first band sharing a byte with the tableLen-byte peer table at
// table (ok false if none).
func peerTableOverlap(table, tableLen uint64, bands []Geometry) (Geometry, bool) {
	if table == 0 {
		return Geometry{}, false
	}
	for _, g := range bands {
		if g.BandOffset < table+tableLen && table < g.BandEnd() {
			return g, true
		}
	}
	return Geometry{}, false
}

// validateEntry runs the entry checks of PROTOCOL.md §4.2 (#1..#8) in order. ok is false
// (with a nil error) when the channel has not been created.
func validateEntry(id uint32, e *EntryInfo, segLen uint64) (g Geometry, ok bool, err error) {
	if e.State != StateEmpty && e.State != StateCreating && e.State != StateReady {
		return g, false, corruptEntry(UnknownChannelState, id, uint64(e.State))
	}
	capacity := e.Capacity
	if capacity == 0 {
		if e.State == StateReady {
			return g, false, corruptEntry(CapacityZero, id, 0)
		}
		return g, false, nil
	}
	if e.ChannelID != id {
		return g, false, corruptEntry(ChannelIDMismatch, id, uint64(e.ChannelID))
	}
	if !isPowerOfTwo(capacity) {
		return g, false, corruptEntry(CapacityNotPowerOfTwo, id, capacity)
	}
	if capacity < MinCapacity {
		return g, false, corruptEntry(CapacityTooSmall, id, capacity)
	}
	if capacity > MaxCapacity {
		return g, false, corruptEntry(CapacityTooLarge, id, capacity)
	}
	band := e.BandOffset
	if band%SlotAlign != 0 {
		return g, false, corruptEntry(BandMisaligned, id, band)
	}
	if band < HeaderSize {
		return g, false, corruptEntry(BandOverlapsHeader, id, band)
	}
	// capacity <= 2^32, so the band length fits in 64 bits; the sum may not.
	length := BandLen(capacity)
	if end := band + length; end < band || end > segLen {
		ce := corruptEntry(BandOutsideSegment, id, band)
		ce.BandLen = length
		ce.Limit = segLen
		return g, false, ce
	}
	return Geometry{ID: id, Capacity: capacity, BandOffset: band, Flags: e.Flags, MaxMessageSize: e.MaxMessageSize}, true, nil
}

// validateRuns runs the entry checks #10 and #11 of PROTOCOL.md §12.1 on a geometry that
// passed #1..#9: no flag but ChannelFlagRuns and ChannelFlagBlobs (§13.1; whether a BLOBS
// channel has a pool is Segment.checkBlobs), and with RUNS 960 < max_message_size <=
// capacity × 960; without it max_message_size 0.
func validateRuns(g Geometry) error {
	if unknown := g.Flags &^ knownChannelFlags; unknown != 0 {
		return corruptEntry(UnknownChannelFlags, g.ID, uint64(g.Flags))
	}
	limit := uint64(0)
	if g.Flags&ChannelFlagRuns != 0 {
		limit = g.Capacity * MsgInline
	}
	size := uint64(g.MaxMessageSize)
	if (limit == 0 && size != 0) || (limit != 0 && (size <= MsgInline || size > limit)) {
		e := corruptEntry(MaxMessageSizeOutOfRange, g.ID, size)
		e.Limit = limit
		e.BandLen = g.Capacity
		return e
	}
	return nil
}

// checkOverlaps reports the first pair of bands sharing a byte (sorts bands by offset).
func checkOverlaps(bands []Geometry) error {
	sort.Slice(bands, func(i, j int) bool { return bands[i].BandOffset < bands[j].BandOffset })
	for i := 1; i < len(bands); i++ {
		a, b := bands[i-1], bands[i]
		if a.BandEnd() > b.BandOffset {
			hi, lo := a.ID, b.ID
			if lo > hi {
				hi, lo = lo, hi
			}
			e := corruptEntry(BandsOverlap, hi, a.BandOffset)
			if hi == b.ID {
				e.Value = b.BandOffset
			}
			e.Other = int(lo)
			return e
		}
	}
	return nil
}
