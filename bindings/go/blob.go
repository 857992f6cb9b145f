package dmxp

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// The blob pool (PROTOCOL.md §13): fixed-size blocks in the segment that a producer writes in
// place and its consumer reads in place, so that a payload of any size costs one ring slot
// (a 16-byte reference). This file holds the pool's layout, its validation at attach, its
// creation with a segment, the block state machine and the reclaim rules; blob_channel.go
// holds the loans and receives on a channel.
//
// A block's owner is named in one 64-bit word of its header, the tag (state | owner << 8 |
// generation << 32), and every change of owner is one CAS of the whole tag from the value
// read:
//
//	FREE --loan (generation+1)--> LOANED --commit--> QUEUED --receive--> HELD
//	 ^  <--------abandon-----------'                  |                    |
//	 '-------------------------------------------------'--------------------'
//	            reclaim (position gone)            release, reclaim (owner dead or gone)
//
// Every offset, length and generation read from the pool is checked against the geometry
// validated and cached at attach before it is used, and every loop is bounded by that
// geometry: a peer that scribbles on the pool can make loans fail or leak blocks, never make
// this client loop, panic, or touch memory outside the pool's validated ranges.

// Blob pool layout (PROTOCOL.md §13.2, §13.3).
const (
	// BlobPoolMagic is the pool descriptor's pool_magic, "DMXPBLOB" in memory.
	BlobPoolMagic uint64 = 0x424F4C4250584D44
	// MaxBlobClasses is the most size classes a pool may have.
	MaxBlobClasses = 8
	// BlobPoolHeaderSize is the size of the pool descriptor before the class descriptors.
	BlobPoolHeaderSize = 64
	// BlobClassDescriptorSize is the stride of the class descriptors, which start at
	// blob_pool_offset + BlobPoolHeaderSize.
	BlobClassDescriptorSize = 64
	// BlobDescriptorArea is the descriptor with room for every class descriptor: the fewest
	// bytes a segment must have from blob_pool_offset on (PROTOCOL.md §13.2 check #1).
	BlobDescriptorArea = BlobPoolHeaderSize + MaxBlobClasses*BlobClassDescriptorSize
	// BlockHeaderSize is the stride of a class's block headers.
	BlockHeaderSize = 64
	// MaxBlockSize is the largest block size (2³¹ bytes).
	MaxBlockSize uint64 = 1 << 31
	// MaxBlockCount is the most blocks a class may have (2²⁴).
	MaxBlockCount uint32 = 1 << 24
	// BlobRefLen is the payload_len of a message that refers to a block (PROTOCOL.md §13.4).
	BlobRefLen = 16
	// BlobPoolPage is the alignment this client (like the Rust creator) gives the pool and
	// each class's data.
	BlobPoolPage = 4096
)

// Pool descriptor field offsets (from blob_pool_offset).
const (
	poolMagicOff    = 0
	poolClassCount  = 8
	poolLenOff      = 16
	poolFreeSeq     = 24
	poolFreeWaiters = 28
	poolReserved    = 32
)

// Class descriptor field offsets (from the class's descriptor).
const (
	clsBlockSize     = 0
	clsBlockCount    = 8
	clsReserved12    = 12
	clsHeadersOffset = 16
	clsDataOffset    = 24
	clsNextHint      = 32
	clsReserved36    = 36
)

// Block header field offsets (from the block's header).
const (
	blkTag       = 0
	blkChannelID = 8
	blkLength    = 12
	blkPosition  = 16
	blkOwnerPid  = 24
)

// BlockState is the state byte of a block's tag (PROTOCOL.md §13.3).
type BlockState uint8

// Block states.
const (
	// BlockFree: nobody owns the block.
	BlockFree BlockState = 0
	// BlockLoaned: a producer is writing it; the owner is its peer record.
	BlockLoaned BlockState = 1
	// BlockQueued: a message in a ring refers to it; the header names the channel and
	// position.
	BlockQueued BlockState = 2
	// BlockHeld: a consumer received it and reads it; the owner is its peer record.
	BlockHeld BlockState = 3
)

// String names the state ("FREE", "LOANED", "QUEUED", "HELD", or "state(n)" for a byte a
// peer scribbled).
func (s BlockState) String() string {
	switch s {
	case BlockFree:
		return "FREE"
	case BlockLoaned:
		return "LOANED"
	case BlockQueued:
		return "QUEUED"
	case BlockHeld:
		return "HELD"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// BlobTag is a block's tag, unpacked: its state, its owner (the owner's peer record index
// plus one while LOANED or HELD, else 0; 24 bits) and its generation (one more with every
// loan, wrapping).
type BlobTag struct {
	State      BlockState
	Owner      uint32
	Generation uint32
}

// Pack is the tag's 64-bit word: state | owner << 8 | generation << 32.
func (t BlobTag) Pack() uint64 {
	return uint64(t.State) | uint64(t.Owner&0xFFFFFF)<<8 | uint64(t.Generation)<<32
}

// UnpackBlobTag splits a tag word into its fields.
func UnpackBlobTag(word uint64) BlobTag {
	return BlobTag{State: BlockState(word), Owner: uint32(word>>8) & 0xFFFFFF, Generation: uint32(word >> 32)}
}

func packTag(state BlockState, owner, generation uint32) uint64 {
	return BlobTag{State: state, Owner: owner, Generation: generation}.Pack()
}

// BlobRef is a reference to one use of a block: what a message flagged FlagBlob carries as
// its 16-byte payload (PROTOCOL.md §13.4).
type BlobRef struct {
	// Class is the size class, Block the block within it.
	Class uint8
	Block uint32
	// Generation is the generation of the loan that wrote the block.
	Generation uint32
	// Len is the number of bytes of the block that are the message.
	Len uint32
}

// words is the reference as its two little-endian payload words (bytes 1..4 zero).
func (r BlobRef) words() (uint64, uint64) {
	return uint64(r.Class) | uint64(r.Block)<<32, uint64(r.Generation) | uint64(r.Len)<<32
}

// decodeBlobRef reads a reference from its two payload words (bytes 1..4 are ignored).
func decodeBlobRef(w0, w1 uint64) BlobRef {
	return BlobRef{Class: uint8(w0), Block: uint32(w0 >> 32), Generation: uint32(w1), Len: uint32(w1 >> 32)}
}

// BlobClass is one size class of a pool a segment is created with (Options.BlobPool).
type BlobClass struct {
	// BlockSize is the bytes per block: a multiple of 64, 64..MaxBlockSize.
	BlockSize uint64
	// BlockCount is the blocks of the class: 1..MaxBlockCount.
	BlockCount uint32
}

// BlobClassGeometry is a validated size class: where its block headers and blocks lie.
type BlobClassGeometry struct {
	BlockSize  uint64
	BlockCount uint32
	// HeadersOffset is the segment offset of block 0's 64-byte header, DataOffset of block
	// 0's bytes; block j's are at HeadersOffset + 64 × j and DataOffset + BlockSize × j.
	HeadersOffset, DataOffset uint64
}

func (g BlobClassGeometry) headersEnd() uint64 {
	return g.HeadersOffset + uint64(g.BlockCount)*BlockHeaderSize
}

func (g BlobClassGeometry) dataEnd() uint64 { return g.DataOffset + g.BlockSize*uint64(g.BlockCount) }

// BlobPoolGeometry is a segment's blob pool as validated when it was attached (or made when
// it was created), cached and never read again (PROTOCOL.md §13.2).
type BlobPoolGeometry struct {
	// Offset is blob_pool_offset, Len pool_len.
	Offset, Len uint64
	// Classes are the size classes, smallest first.
	Classes []BlobClassGeometry
}

// LargestBlock is the largest block size: the longest blob a loan can hold.
func (g BlobPoolGeometry) LargestBlock() uint64 {
	if len(g.Classes) == 0 {
		return 0
	}
	return g.Classes[len(g.Classes)-1].BlockSize
}

// blobPool is the validated geometry a Segment caches.
type blobPool struct {
	offset, length uint64
	count          int
	classes        [MaxBlobClasses]BlobClassGeometry
}

func (p *blobPool) end() uint64 { return p.offset + p.length }

func (p *blobPool) largest() uint64 { return p.classes[p.count-1].BlockSize }

// overlaps is true when [start, start+n) shares a byte with the pool (n > 0).
func (p *blobPool) overlaps(start, n uint64) bool {
	return p != nil && start < p.end() && p.offset < start+n
}

// validRef is true when r names a block of the pool and fits it: the checks before any
// access through a reference read from a slot (PROTOCOL.md §13.5).
func (p *blobPool) validRef(r BlobRef) bool {
	if int(r.Class) >= p.count {
		return false
	}
	g := &p.classes[r.Class]
	return r.Block < g.BlockCount && uint64(r.Len) <= g.BlockSize
}

// ------------------------------------------------------------------ creation

// checkBlobClasses checks the classes of a pool to create (PROTOCOL.md §13.2).
func checkBlobClasses(classes []BlobClass) error {
	if len(classes) == 0 || len(classes) > MaxBlobClasses {
		return &InvalidBlobPoolError{Class: -1, Reason: fmt.Sprintf("%d classes; 1 to %d are allowed", len(classes), MaxBlobClasses)}
	}
	var previous uint64
	for i, c := range classes {
		switch {
		case c.BlockSize < 64 || c.BlockSize > MaxBlockSize || c.BlockSize%64 != 0:
			return &InvalidBlobPoolError{Class: i, Reason: fmt.Sprintf("block size %d is not a multiple of 64 between 64 and %d", c.BlockSize, MaxBlockSize)}
		case c.BlockSize <= previous:
			return &InvalidBlobPoolError{Class: i, Reason: fmt.Sprintf("block size %d does not exceed the previous class's %d", c.BlockSize, previous)}
		case c.BlockCount == 0 || c.BlockCount > MaxBlockCount:
			return &InvalidBlobPoolError{Class: i, Reason: fmt.Sprintf("block count %d is not between 1 and %d", c.BlockCount, MaxBlockCount)}
		}
		previous = c.BlockSize
	}
	return nil
}

func roundUp(v, to uint64) uint64 { return (v + to - 1) / to * to }

// blobPoolStart is where this client's creator places the pool in a fresh segment: the band
// cursor (HeaderSize) rounded up to BlobPoolPage.
const blobPoolStart = (HeaderSize + BlobPoolPage - 1) / BlobPoolPage * BlobPoolPage

// planBlobPool lays out a pool of classes at start (a multiple of BlobPoolPage), as the
// interop contract describes the creator's layout: the headers of every class right after the
// class descriptors (start + 64 + 64 × classes), one class after another; then each class's
// data at the next BlobPoolPage boundary, class after class; the pool's length rounded up to
// BlobPoolPage.
func planBlobPool(classes []BlobClass, start uint64) (*blobPool, error) {
	if err := checkBlobClasses(classes); err != nil {
		return nil, err
	}
	p := &blobPool{offset: start, count: len(classes)}
	headers := start + BlobPoolHeaderSize + uint64(len(classes))*BlobClassDescriptorSize
	for i, c := range classes {
		p.classes[i] = BlobClassGeometry{BlockSize: c.BlockSize, BlockCount: c.BlockCount, HeadersOffset: headers}
		headers += uint64(c.BlockCount) * BlockHeaderSize
	}
	// Sizes and counts are bounded (2³¹ × 2²⁴ per class), so nothing below overflows.
	data := roundUp(headers, BlobPoolPage)
	for i := range classes {
		p.classes[i].DataOffset = data
		data = roundUp(p.classes[i].dataEnd(), BlobPoolPage)
	}
	p.length = data - start
	return p, nil
}

// planBlobPoolFor is the pool a segment of size bytes is created with for classes (nil for
// none), or an *OutOfSpaceError when it does not fit, checked before anything is created.
func planBlobPoolFor(classes []BlobClass, size uint64) (*blobPool, error) {
	if classes == nil {
		return nil, nil
	}
	p, err := planBlobPool(classes, blobPoolStart)
	if err != nil {
		return nil, err
	}
	if size < blobPoolStart || p.length > size-blobPoolStart {
		available := uint64(0)
		if size > blobPoolStart {
			available = size - blobPoolStart
		}
		return nil, &OutOfSpaceError{Needed: p.length, Available: available}
	}
	return p, nil
}

// writeBlobPool carves the pool p from the band area with the band_cursor CAS and writes its
// descriptor and zeroed block headers, pool_magic last, then blob_pool_offset: run by the
// segment's creator before the release store of magic (PROTOCOL.md §13.1).
func (s *Segment) writeBlobPool(p *blobPool) error {
	start := load64(s.base, offBandCursor)
	if start > p.offset || !cas64(s.base, offBandCursor, start, p.end()) {
		return fmt.Errorf("%w: band cursor %d moved while formatting", ErrBusy, start)
	}
	d := unsafe.Add(s.base, p.offset)
	store32(d, poolClassCount, uint32(p.count))
	store32(d, poolClassCount+4, 0)
	store64(d, poolLenOff, p.length)
	store32(d, poolFreeSeq, 0)
	store32(d, poolFreeWaiters, 0)
	zeroWords(d, poolReserved, BlobPoolHeaderSize-poolReserved)
	for i := 0; i < p.count; i++ {
		g := p.classes[i]
		c := unsafe.Add(d, BlobPoolHeaderSize+i*BlobClassDescriptorSize)
		store64(c, clsBlockSize, g.BlockSize)
		store32(c, clsBlockCount, g.BlockCount)
		store32(c, clsReserved12, 0)
		store64(c, clsHeadersOffset, g.HeadersOffset)
		store64(c, clsDataOffset, g.DataOffset)
		store32(c, clsNextHint, 0)
		zeroWords(c, 40, BlobClassDescriptorSize-40)
		store32(c, clsReserved36, 0)
		zeroWords(s.base, uintptr(g.HeadersOffset), uintptr(uint64(g.BlockCount)*BlockHeaderSize))
	}
	store64(d, poolMagicOff, BlobPoolMagic)
	store64(s.base, offBlobPoolOffset, p.offset)
	s.pool = p
	return nil
}

// ------------------------------------------------------------------ validation

// validateBlobPool runs the pool checks of PROTOCOL.md §13.2 (#1..#5) on the pool at offset
// of a segment of segLen bytes (at most the mapping) and returns its geometry.
func validateBlobPool(base unsafe.Pointer, offset, segLen uint64) (*blobPool, error) {
	if offset%SlotAlign != 0 || offset < HeaderSize || offset > segLen || segLen-offset < BlobDescriptorArea {
		e := corruptHeader(BlobPoolOutOfRange, offset)
		e.Limit = segLen
		return nil, e
	}
	d := unsafe.Add(base, offset)
	if magic := load64(d, poolMagicOff); magic != BlobPoolMagic {
		return nil, corruptHeader(BlobPoolBadMagic, magic)
	}
	count := load32(d, poolClassCount)
	length := load64(d, poolLenOff)
	descriptors := uint64(BlobPoolHeaderSize) + uint64(count)*BlobClassDescriptorSize
	if count == 0 || count > MaxBlobClasses || length < descriptors || length > segLen-offset {
		e := corruptHeader(BlobPoolBadGeometry, length)
		e.Other = int(count)
		e.Limit = segLen
		return nil, e
	}
	p := &blobPool{offset: offset, length: length, count: int(count)}
	inner, end := offset+descriptors, offset+length
	inside := func(start, n uint64) bool {
		return start%SlotAlign == 0 && start >= inner && start <= end && end-start >= n
	}
	bad := func(class int) error {
		e := corruptHeader(BlobClassBad, uint64(class))
		e.Other = class
		return e
	}
	var previous uint64
	for i := 0; i < int(count); i++ {
		c := unsafe.Add(d, BlobPoolHeaderSize+i*BlobClassDescriptorSize)
		g := BlobClassGeometry{
			BlockSize:     load64(c, clsBlockSize),
			BlockCount:    load32(c, clsBlockCount),
			HeadersOffset: load64(c, clsHeadersOffset),
			DataOffset:    load64(c, clsDataOffset),
		}
		if g.BlockSize < 64 || g.BlockSize > MaxBlockSize || g.BlockSize%64 != 0 || g.BlockSize <= previous ||
			g.BlockCount == 0 || g.BlockCount > MaxBlockCount {
			return nil, bad(i)
		}
		previous = g.BlockSize
		// Bounded above, so these products fit in 64 bits.
		if !inside(g.HeadersOffset, uint64(g.BlockCount)*BlockHeaderSize) || !inside(g.DataOffset, g.BlockSize*uint64(g.BlockCount)) {
			return nil, bad(i)
		}
		p.classes[i] = g
	}
	// No byte shared between any two ranges (headers or data) of any classes.
	type span struct {
		lo, hi uint64
		class  int
	}
	spans := make([]span, 0, 2*count)
	for i := 0; i < int(count); i++ {
		g := p.classes[i]
		spans = append(spans, span{g.HeadersOffset, g.headersEnd(), i}, span{g.DataOffset, g.dataEnd(), i})
	}
	for i, a := range spans {
		for _, b := range spans[i+1:] {
			if a.lo < b.hi && b.lo < a.hi {
				return nil, bad(a.class)
			}
		}
	}
	return p, nil
}

// checkBlobs is the pool check of an entry (PROTOCOL.md §13.1): a channel with
// ChannelFlagBlobs needs a pool (BlobsWithoutPool), and its band must not overlap the pool.
func (s *Segment) checkBlobs(g Geometry) error {
	if g.Flags&ChannelFlagBlobs != 0 && s.pool == nil {
		return corruptEntry(BlobsWithoutPool, g.ID, uint64(g.Flags))
	}
	if s.pool.overlaps(g.BandOffset, BandLen(g.Capacity)) {
		return corruptEntry(BlobPoolOverlap, g.ID, g.BandOffset)
	}
	return nil
}

// ------------------------------------------------------------------ the segment's pool

// HasBlobPool is true when the segment has a blob pool (PROTOCOL.md §13).
func (s *Segment) HasBlobPool() bool { return s.pool != nil }

// BlobPool is the segment's blob pool as validated when this Segment attached (or as it
// created it): ok is false when the segment has none. The geometry is cached: a later change
// of the descriptor in the segment is never read.
func (s *Segment) BlobPool() (g BlobPoolGeometry, ok bool) {
	p := s.pool
	if p == nil {
		return g, false
	}
	g = BlobPoolGeometry{Offset: p.offset, Len: p.length, Classes: make([]BlobClassGeometry, p.count)}
	copy(g.Classes, p.classes[:p.count])
	return g, true
}

func (s *Segment) poolWord(off uintptr) *uint32 {
	return ptr32(s.base, uintptr(s.pool.offset)+off)
}

// classDescriptor is the live descriptor of class c (< count).
func (s *Segment) classDescriptor(c int) unsafe.Pointer {
	return unsafe.Add(s.base, uintptr(s.pool.offset)+BlobPoolHeaderSize+uintptr(c)*BlobClassDescriptorSize)
}

// blockHeader is the header of block j of class c; both in range (validRef, or a loop over
// the cached geometry).
func (s *Segment) blockHeader(c int, j uint32) unsafe.Pointer {
	g := &s.pool.classes[c]
	return unsafe.Add(s.base, uintptr(g.HeadersOffset)+uintptr(j)*BlockHeaderSize)
}

// blockBytes is the first n bytes of block j of class c (n at most the block size), as a
// slice over the mapping whose capacity is n, so that appending to it never reaches the
// next block.
func (s *Segment) blockBytes(c int, j uint32, n uint32) []byte {
	g := &s.pool.classes[c]
	if uint64(n) > g.BlockSize {
		n = uint32(g.BlockSize)
	}
	if n == 0 {
		return []byte{}
	}
	p := (*byte)(unsafe.Add(s.base, uintptr(g.DataOffset)+uintptr(j)*uintptr(g.BlockSize)))
	return unsafe.Slice(p, n)[:n:n]
}

// loanBlock loans a block of at least n bytes (n at most the largest block) to owner (a peer
// record index plus one) of process pid: the smallest class that fits, then larger ones,
// each tried from its rotating next_hint, every block at most once (PROTOCOL.md §13.3).
func (s *Segment) loanBlock(owner, pid uint32, n int) (BlobRef, bool) {
	p := s.pool
	for c := 0; c < p.count; c++ {
		g := &p.classes[c]
		if g.BlockSize < uint64(n) {
			continue
		}
		count := uint64(g.BlockCount)
		start := uint64(atomic.AddUint32(ptr32(s.classDescriptor(c), clsNextHint), 1)-1) % count
		for i := uint64(0); i < count; i++ {
			j := uint32((start + i) % count)
			h := s.blockHeader(c, j)
			t := load64(h, blkTag)
			if BlockState(t) != BlockFree {
				continue
			}
			generation := uint32(t>>32) + 1
			if cas64(h, blkTag, t, packTag(BlockLoaned, owner, generation)) {
				store32(h, blkOwnerPid, pid)
				store32(h, blkLength, uint32(n))
				return BlobRef{Class: uint8(c), Block: j, Generation: generation, Len: uint32(n)}, true
			}
		}
	}
	return BlobRef{}, false
}

// freeBlock gives block r back from (state, owner, r.Generation) to (FREE, 0, r.Generation)
// by CAS: an abandoned loan (LOANED), a released block (HELD), or a block a copying receive
// has copied (QUEUED, owner 0). False when the tag is not that: the block was reclaimed
// meanwhile. Waiting producers are woken on success.
func (s *Segment) freeBlock(r BlobRef, state BlockState, owner uint32) bool {
	if s.pool == nil || !s.pool.validRef(BlobRef{Class: r.Class, Block: r.Block}) {
		return false
	}
	h := s.blockHeader(int(r.Class), r.Block)
	if !cas64(h, blkTag, packTag(state, owner, r.Generation), packTag(BlockFree, 0, r.Generation)) {
		return false
	}
	s.notifyBlockFreed()
	return true
}

// notifyBlockFreed is wake(free_seq) (PROTOCOL.md §13.3): after a free (a sequentially
// consistent CAS, so ordered before the load of the count as the protocol's fence orders
// it), bump free_seq and wake its sleepers only when a waiter is registered.
func (s *Segment) notifyBlockFreed() {
	if atomic.LoadUint32(s.poolWord(poolFreeWaiters)) != 0 {
		word := s.poolWord(poolFreeSeq)
		atomic.AddUint32(word, 1)
		futexWakeAll(word)
	}
}

// reclaimWhere makes one pass over every block of the pool (bounded by the cached geometry)
// and frees each one reclaimable says so of, by a CAS from the tag it read (loaded before
// reclaimable looks at anything else). It returns how many it freed and wakes waiting
// producers if any.
func (s *Segment) reclaimWhere(reclaimable func(h unsafe.Pointer, t BlobTag) bool) int {
	p := s.pool
	if p == nil {
		return 0
	}
	freed := 0
	for c := 0; c < p.count; c++ {
		for j := uint32(0); j < p.classes[c].BlockCount; j++ {
			h := s.blockHeader(c, j)
			word := load64(h, blkTag)
			t := UnpackBlobTag(word)
			if t.State == BlockFree || !reclaimable(h, t) {
				continue
			}
			if cas64(h, blkTag, word, packTag(BlockFree, 0, t.Generation)) {
				freed++
			}
		}
	}
	if freed != 0 {
		s.notifyBlockFreed()
	}
	return freed
}

// reclaimBlobOwner frees every LOANED or HELD block owned by owner (peer record index plus
// one): rule 1 of PROTOCOL.md §13.6, run by whoever frees a dead record while it holds it
// (Recover, the sweep of Register). It returns how many blocks it freed.
func (s *Segment) reclaimBlobOwner(owner uint32) int {
	if s.pool == nil || owner == 0 {
		return 0
	}
	return s.reclaimWhere(func(_ unsafe.Pointer, t BlobTag) bool {
		return (t.State == BlockLoaned || t.State == BlockHeld) && t.Owner == owner
	})
}

// BlobReclaimReport says what Segment.ReclaimBlobs freed.
type BlobReclaimReport struct {
	// Leaked is the number of LOANED or HELD blocks freed whose owner's peer record is free
	// (or names no record of the table): rule 2 of PROTOCOL.md §13.6.
	Leaked int
	// Queued is the number of QUEUED blocks freed whose message is gone from its ring (the
	// slot of the position the block's header names has been freed): rule 3.
	Queued int
}

// ReclaimBlobs runs rules 2 and 3 of PROTOCOL.md §13.6, one pass over the pool: it frees the
// LOANED and HELD blocks whose owner's peer record is free (leaked by a client that exited
// without closing its handle, or by a sweep that did not know the pool), and the QUEUED
// blocks whose message no longer exists (its producer died after queuing it, its consumer
// died or was revoked before taking it, or the message was a bad reference), judged by the
// slot sequence of the position the block's header names, in that channel opened and
// validated. Each block is freed by a CAS from the tag it read, so a block that moved on is
// never freed. A loan that finds the pool exhausted runs it once (with a sweep of dead peers'
// records, which frees their blocks too) before giving up or waiting; tools may run it at any
// time. A segment without a pool has nothing to reclaim.
func (s *Segment) ReclaimBlobs() (BlobReclaimReport, error) {
	var report BlobReclaimReport
	if s.pool == nil {
		return report, nil
	}
	// Rule 2. The table is read once, and only used when its offset is in range; a table of
	// 0 with a LOANED or HELD block (loans need a registration, which installs the table
	// first) means a scribbled tag.
	tableOff := load64(s.base, offPeerTableOffset)
	judgeable := peerTableInRange(tableOff, s.peerTableLen(), s.length)
	records := uint32(s.records)
	report.Leaked = s.reclaimWhere(func(_ unsafe.Pointer, t BlobTag) bool {
		if !judgeable || (t.State != BlockLoaned && t.State != BlockHeld) || t.Owner == 0 {
			return false
		}
		if tableOff == 0 || t.Owner-1 >= records {
			return true // no such record: a scribbled owner
		}
		// The tag was loaded first: a registrant's loan comes after its registration, so a
		// pid of 0 read now is not the registration of the block's current owner.
		return load32(s.base, uintptr(tableOff)+uintptr(t.Owner-1)*PeerRecordSize+peerPid) == 0
	})
	// Rule 3.
	channels := map[uint32]*Channel{}
	report.Queued = s.reclaimWhere(func(h unsafe.Pointer, t BlobTag) bool {
		if t.State != BlockQueued {
			return false
		}
		id, position := load32(h, blkChannelID), load64(h, blkPosition)
		ch, seen := channels[id]
		if !seen {
			if id < MaxChannels {
				if c, err := s.OpenChannel(id); err == nil && c.CarriesBlobs() {
					ch = c
				}
			}
			channels[id] = ch
		}
		if ch == nil {
			return false // no channel to judge it by
		}
		sequence := load64(ch.slot(position), slotSequence)
		return int64(sequence-(position+ch.geom.Capacity)) >= 0
	})
	return report, nil
}

// BlobClassStats counts one size class's blocks by state.
type BlobClassStats struct {
	BlockSize  uint64
	BlockCount uint32
	// Free, Loaned, Queued and Held count the blocks in each state; Invalid those whose state
	// byte is none of the four (a scribbled tag).
	Free, Loaned, Queued, Held, Invalid uint32
}

// BlobPoolStats is a snapshot of a pool's blocks, for tools and tests.
type BlobPoolStats struct {
	// Classes are the size classes, smallest first.
	Classes []BlobClassStats
	// Owners maps a peer record index to the number of LOANED or HELD blocks it owns.
	Owners map[int]int
}

// FreeBlocks is the number of FREE blocks of every class.
func (st BlobPoolStats) FreeBlocks() int {
	n := 0
	for _, c := range st.Classes {
		n += int(c.Free)
	}
	return n
}

// BlobPoolStats counts the pool's blocks by class and state, and the blocks each peer record
// owns (one pass of relaxed reads: a snapshot). ok is false when the segment has no pool.
func (s *Segment) BlobPoolStats() (st BlobPoolStats, ok bool) {
	p := s.pool
	if p == nil {
		return st, false
	}
	st.Owners = map[int]int{}
	for c := 0; c < p.count; c++ {
		cs := BlobClassStats{BlockSize: p.classes[c].BlockSize, BlockCount: p.classes[c].BlockCount}
		for j := uint32(0); j < cs.BlockCount; j++ {
			t := UnpackBlobTag(load64(s.blockHeader(c, j), blkTag))
			switch t.State {
			case BlockFree:
				cs.Free++
			case BlockLoaned:
				cs.Loaned++
			case BlockQueued:
				cs.Queued++
			case BlockHeld:
				cs.Held++
			default:
				cs.Invalid++
			}
			if (t.State == BlockLoaned || t.State == BlockHeld) && t.Owner != 0 {
				st.Owners[int(t.Owner-1)]++
			}
		}
		st.Classes = append(st.Classes, cs)
	}
	return st, true
}

// BlobBlockInfo is a snapshot of one block's header (PROTOCOL.md §13.3).
type BlobBlockInfo struct {
	Tag BlobTag
	// ChannelID and Position name the message that refers to the block while it is QUEUED.
	ChannelID uint32
	Position  uint64
	// Length is the committed length, OwnerPID the pid of the last owner (informational).
	Length   uint32
	OwnerPID uint32
}

// BlobBlock reads the header of block of class (a racy snapshot, for tools); ok is false
// when the segment has no pool or the class or block is out of range.
func (s *Segment) BlobBlock(class int, block uint32) (info BlobBlockInfo, ok bool) {
	p := s.pool
	if p == nil || class < 0 || class >= p.count || block >= p.classes[class].BlockCount {
		return info, false
	}
	h := s.blockHeader(class, block)
	return BlobBlockInfo{
		Tag:       UnpackBlobTag(load64(h, blkTag)),
		ChannelID: load32(h, blkChannelID),
		Position:  load64(h, blkPosition),
		Length:    load32(h, blkLength),
		OwnerPID:  load32(h, blkOwnerPid),
	}, true
}
