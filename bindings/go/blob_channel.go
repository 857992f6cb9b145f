package dmxp

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"
	"unsafe"
)

// Blobs on a channel (PROTOCOL.md §13.4, §13.5): a loan of a pool block written in place and
// committed as a 16-byte reference, and the in-place receive that takes the block before it
// frees the ring slot. The pool itself is in blob.go.
//
// Memory model. A loaned block is written only by its owner between the loan's CAS and the
// commit's CAS, and a received block read only by its holder between the take's CAS and the
// release's CAS, exactly as a claimed slot's payload is (mem.go, README.md "Memory model"):
// the tag CASes are sync/atomic operations and order the bytes, and the bytes themselves are
// moved with ordinary accesses and copy() over a slice of the mapping, which Go's memory model
// makes safe against racing peers (they can garble bytes, nothing more). Lengths and offsets
// come from a reference checked against the pool's cached geometry, so no access leaves the
// block.

// CarriesBlobs is true when the channel was created with ChannelFlagBlobs (PROTOCOL.md §13.1)
// and so may carry blobs: loans (LoanBlob) and in-place receives (ReceiveBlob) work on it.
func (c *Channel) CarriesBlobs() bool {
	return c.geom.Flags&ChannelFlagBlobs != 0 && c.seg.pool != nil
}

// MaxBlobSize is the longest blob a loan on this channel can hold: the pool's largest block
// size (0 on a channel that does not carry blobs).
func (c *Channel) MaxBlobSize() int {
	if !c.CarriesBlobs() {
		return 0
	}
	return int(c.seg.pool.largest())
}

// peekBlobLen is the length in the reference of a published slot flagged FlagBlob, read
// before the claim (advisory: re-read and checked after it); plausible is false when the slot
// cannot hold a valid reference (no pool, payload_len not 16, a length past every block),
// which the claim then drops as corrupt rather than refuse.
func (c *Channel) peekBlobLen(slot unsafe.Pointer) (n uint32, plausible bool) {
	if !c.CarriesBlobs() || load32(slot, slotPayloadLen) != BlobRefLen {
		return 0, false
	}
	n = load32(slot, slotPayload+12)
	return n, uint64(n) <= c.seg.pool.largest()
}

// claimedBlobRef reads the reference of a claimed slot whose meta is *meta and checks it
// against the cached geometry (PROTOCOL.md §13.5): payload_len 16, class, block and length in
// range, on a channel that carries blobs. ok false: a bad reference.
func (c *Channel) claimedBlobRef(slot unsafe.Pointer, meta *Meta) (r BlobRef, ok bool) {
	if !c.CarriesBlobs() || meta.PayloadLen != BlobRefLen || meta.Flags&(FlagRun|FlagRunCont) != 0 {
		return r, false
	}
	r = decodeBlobRef(load64(slot, slotPayload), load64(slot, slotPayload+8))
	return r, c.seg.pool.validRef(r)
}

// queuedFor checks that the block of the valid reference r is queued for this channel's
// position (the tag is (QUEUED, 0, generation), loaded first, and the header names the
// channel and the position): anything else is a stale or forged reference. It returns the
// header and the tag word read.
func (c *Channel) queuedFor(r BlobRef, position uint64) (h unsafe.Pointer, tag uint64, ok bool) {
	h = c.seg.blockHeader(int(r.Class), r.Block)
	tag = load64(h, blkTag)
	ok = tag == packTag(BlockQueued, 0, r.Generation) &&
		load32(h, blkChannelID) == c.geom.ID && load64(h, blkPosition) == position
	return h, tag, ok
}

// copyBlob is the copying receive of a claimed blob at position (PROTOCOL.md §13.5): it checks
// the reference and that its block is queued for this position, copies the block's bytes
// into buf and frees the block (QUEUED -> FREE), all before the caller frees the slot: the
// claim on the slot keeps the block queued meanwhile, so no registration is needed. A bad,
// stale or forged reference is contentCorrupt and its block is left alone; a tag that moved
// under the claim (a repair revoked it and a reclaim freed the block) makes the copy garbage:
// contentCorrupt, or contentRevoked once the slot's free fails. meta.PayloadLen becomes the
// blob's length.
func (c *Channel) copyBlob(position uint64, slot unsafe.Pointer, buf []byte, meta *Meta) content {
	r, ok := c.claimedBlobRef(slot, meta)
	if !ok {
		return contentCorrupt
	}
	h, tag, ok := c.queuedFor(r, position)
	if !ok {
		return contentCorrupt
	}
	free := packTag(BlockFree, 0, r.Generation)
	if int64(r.Len) > int64(len(buf)) {
		// The peek saw a length that fit: only a slot rewritten under the claim gets here. The
		// message is dropped, so its block goes back.
		if cas64(h, blkTag, tag, free) {
			c.seg.notifyBlockFreed()
		}
		return contentCorrupt
	}
	copy(buf[:r.Len], c.seg.blockBytes(int(r.Class), r.Block, r.Len))
	if !cas64(h, blkTag, tag, free) {
		return contentCorrupt
	}
	c.seg.notifyBlockFreed()
	meta.PayloadLen = r.Len
	return contentMessage
}

// receiveBlobBatch is a batch whose first position is a blob, claimed alone: its bytes are
// copied into a pooled buffer (the peeked length, bounded by the largest block), the block and
// the slot freed, then the blob is delivered (valid only during the call).
func (c *Channel) receiveBlobBatch(cl recvClaim, deliver func(Meta, []byte)) BatchResult {
	var result BatchResult
	n := uint64(cl.length)
	if !c.CarriesBlobs() || n > c.seg.pool.largest() {
		n = 0 // a bad reference: dropped as corrupt without a buffer
	}
	bufp := runBuffers.Get().(*[]byte)
	defer runBuffers.Put(bufp)
	if uint64(cap(*bufp)) < n {
		*bufp = make([]byte, n)
	}
	buf := (*bufp)[:n]
	var meta Meta
	kind := c.consume(cl.first, buf, &meta)
	intentClear(c.recvPeer, &c.recvFlagsShown) // after the free
	if kind != contentRevoked {
		c.notifyProducers()
	}
	switch kind {
	case contentMessage:
		result.Delivered++
		deliver(meta, buf[:meta.PayloadLen])
	case contentLost:
		atomic.AddUint64(&c.lost, 1)
		result.Dropped++
	case contentCorrupt:
		atomic.AddUint64(&c.corrupt, 1)
		result.Dropped++
	case contentRevoked:
		atomic.AddUint64(&c.revoked, 1)
		result.Dropped++
		result.Revoked++
	}
	return result
}

// ------------------------------------------------------------------ loans

// blobStage is where a loan or a view is in its life.
type blobStage uint8

const (
	blobActive    blobStage = iota // loaned, or held
	blobCommitted                  // a loan sent (or revoked at its commit)
	blobAbandoned                  // a loan given back
	blobReleased                   // a view released
)

// BlobLoan is a block of the segment's blob pool loaned to a registered producer handle
// (Channel.LoanBlob, PROTOCOL.md §13.3): written in place, then sent as one message with
// Commit, or given back with Abandon. A loan belongs to one goroutine at a time. A loan that
// is neither committed nor abandoned keeps its block until the handle is closed (Close gives
// it back) or the process dies (a peer's recovery frees it, §13.6).
type BlobLoan struct {
	ch    *Channel
	ref   BlobRef // ref.Len is the length to commit (Truncate shortens it)
	owner uint32
	data  []byte
	stage blobStage
}

// loanOwner checks that this handle may loan n bytes and returns the owner value of its loans.
func (c *Channel) loanOwner(n int) (uint32, error) {
	if !c.CarriesBlobs() {
		return 0, fmt.Errorf("%w: channel %d", ErrNoBlobPool, c.ID())
	}
	if c.sendPeer == nil || c.sendOwner == 0 {
		return 0, ErrNotRegistered
	}
	if n < 0 {
		return 0, fmt.Errorf("%w: a loan of %d bytes", ErrInvalidArgument, n)
	}
	if largest := c.seg.pool.largest(); uint64(n) > largest {
		return 0, &TooLargeError{Len: n, Limit: int(largest)}
	}
	return c.sendOwner, nil
}

// tryLoan makes one loan attempt (every block that could hold n bytes tried once).
func (c *Channel) tryLoan(owner uint32, n int) *BlobLoan {
	r, ok := c.seg.loanBlock(owner, c.pid, n)
	if !ok {
		return nil
	}
	atomic.AddInt64(&c.blobsOut, 1)
	return &BlobLoan{ch: c, ref: r, owner: owner, data: c.seg.blockBytes(int(r.Class), r.Block, r.Len)}
}

// reclaimForLoan runs when a loan finds the pool exhausted (PROTOCOL.md §13.6): a sweep of the
// peer table frees the records of dead peers that hold no intent, and with each record the
// blocks it owned (rule 1), then ReclaimBlobs frees leaked blocks and queued blocks whose
// message is gone (rules 2 and 3).
func (c *Channel) reclaimForLoan() {
	if table, err := c.peerTable(false); err == nil && table != nil {
		c.sweep(table, ownIdentity())
	}
	_, _ = c.seg.ReclaimBlobs()
}

// LoanBlob loans a block of at least n bytes from the segment's blob pool without waiting
// (PROTOCOL.md §13.3): the smallest class that fits, else a larger one. Write the blob in
// place through BlobLoan.Bytes (or WriteAt), then send it with BlobLoan.Commit, or give it
// back with BlobLoan.Abandon.
//
// It needs a channel that carries blobs (ErrNoBlobPool otherwise) and a handle registered as
// a producer (Register; ErrNotRegistered otherwise): the block's owner is its peer record, so
// that a crash while the loan is out can be reclaimed. n beyond the pool's largest block
// (MaxBlobSize) fails at once with a *TooLargeError. When every block that could hold n bytes
// is taken, it runs one reclaim pass (dead peers' records swept, leaked and orphaned blocks
// freed, §13.6) and tries again, then fails with a *PoolExhaustedError (ErrPoolExhausted).
// LoanBlobTimeout and LoanBlobContext wait for a block instead.
func (c *Channel) LoanBlob(n int) (*BlobLoan, error) {
	owner, err := c.loanOwner(n)
	if err != nil {
		return nil, err
	}
	if l := c.tryLoan(owner, n); l != nil {
		return l, nil
	}
	c.reclaimForLoan()
	if l := c.tryLoan(owner, n); l != nil {
		return l, nil
	}
	return nil, &PoolExhaustedError{Len: n}
}

// LoanBlobTimeout is LoanBlob waiting at most timeout for a block while the pool is
// exhausted (ErrTimeout after it); a negative timeout waits as long as it takes. It sleeps on
// the pool's free_seq word (PROTOCOL.md §13.3, §7.2) in slices of at most 100 ms, trying again
// after each wake-up or slice, and runs a reclaim pass at most every 100 ms while it waits.
func (c *Channel) LoanBlobTimeout(n int, timeout time.Duration) (*BlobLoan, error) {
	return c.loanUntil(context.Background(), n, time.Now().Add(timeout), timeout < 0)
}

// LoanBlobContext is LoanBlob waiting while the pool is exhausted until ctx is done; it then
// returns ctx.Err() and has loaned nothing. A context already done returns its error at once.
// The sleep ends promptly on cancellation (free_seq is bumped and woken).
func (c *Channel) LoanBlobContext(ctx context.Context, n int) (*BlobLoan, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, err := c.loanOwner(n); err != nil {
		return nil, err
	}
	defer c.watchFreeSeq(ctx)()
	return c.loanUntil(ctx, n, time.Time{}, true)
}

// blobReclaimEvery is how often a waiting loan runs a reclaim pass.
const blobReclaimEvery = 100 * time.Millisecond

func (c *Channel) loanUntil(ctx context.Context, n int, deadline time.Time, forever bool) (*BlobLoan, error) {
	owner, err := c.loanOwner(n)
	if err != nil {
		return nil, err
	}
	if l := c.tryLoan(owner, n); l != nil {
		return l, nil
	}
	c.reclaimForLoan()
	reclaimed := time.Now()
	for {
		if l := c.tryLoan(owner, n); l != nil {
			return l, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		slice, ok := sleepSlice(deadline, forever)
		if !ok {
			return nil, ErrTimeout
		}
		if l := c.waitBlock(ctx, owner, n, slice); l != nil {
			return l, nil
		}
		if time.Since(reclaimed) >= blobReclaimEvery {
			c.reclaimForLoan()
			reclaimed = time.Now()
		}
	}
}

// waitBlock registers as a waiter on free_seq, tries a loan (the re-check of §7.2 after the
// registration) and, if none is free, sleeps on the word for at most d.
func (c *Channel) waitBlock(ctx context.Context, owner uint32, n int, d time.Duration) *BlobLoan {
	waiters, word := c.seg.poolWord(poolFreeWaiters), c.seg.poolWord(poolFreeSeq)
	atomic.AddUint32(waiters, 1)
	observed := atomic.LoadUint32(word)
	// Go's atomics are sequentially consistent: the registration is ordered before the loan
	// attempt, as the protocol's fence requires.
	l := c.tryLoan(owner, n)
	if l == nil && ctx.Err() == nil {
		futexWait(word, observed, d)
	}
	atomic.AddUint32(waiters, ^uint32(0))
	return l
}

// watchFreeSeq makes a wait on free_seq return promptly when ctx is done (as watchContext
// does for a channel's words). The returned stop ends the goroutine.
func (c *Channel) watchFreeSeq(ctx context.Context) (stop func()) {
	if ctx.Done() == nil {
		return func() {}
	}
	word := c.seg.poolWord(poolFreeSeq)
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		select {
		case <-ctx.Done():
			atomic.AddUint32(word, 1)
			futexWakeAll(word)
		case <-done:
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// Len is the number of bytes the loan will commit: the length loaned, or less after Truncate.
func (l *BlobLoan) Len() int { return int(l.ref.Len) }

// Ref is the block the loan holds and the reference Commit will send (Len as now).
func (l *BlobLoan) Ref() BlobRef { return l.ref }

// Bytes is the loan's bytes, Len of them, as a slice over the block in the mapping, to write
// the blob in place (its capacity is Len, so append stays inside the block). The block holds
// whatever an earlier use left: write every byte of the blob. The slice is valid only until
// Commit or Abandon (Bytes returns nil afterwards): the block may then be reused by anyone,
// and writing through an old slice garbles another message; after the Segment is closed it
// faults.
func (l *BlobLoan) Bytes() []byte {
	if l.stage != blobActive {
		return nil
	}
	return l.data[:l.ref.Len:l.ref.Len]
}

// WriteAt copies p into the loan at off (io.WriterAt), with the bounds checked: bytes past
// Len are not written (it returns how many were, with io.ErrShortWrite). After Commit or
// Abandon it writes nothing and fails with ErrBlobDone.
func (l *BlobLoan) WriteAt(p []byte, off int64) (int, error) {
	if l.stage != blobActive {
		return 0, ErrBlobDone
	}
	return writeBounded(l.data[:l.ref.Len], p, off)
}

// ReadAt copies the loan's bytes at off into p (io.ReaderAt): what was written so far.
// After Commit or Abandon it fails with ErrBlobDone.
func (l *BlobLoan) ReadAt(p []byte, off int64) (int, error) {
	if l.stage != blobActive {
		return 0, ErrBlobDone
	}
	return readBounded(l.data[:l.ref.Len], p, off)
}

// Truncate shortens the blob to n bytes (0 <= n <= Len): Commit then sends n bytes.
func (l *BlobLoan) Truncate(n int) error {
	if l.stage != blobActive {
		return ErrBlobDone
	}
	if n < 0 || n > int(l.ref.Len) {
		return fmt.Errorf("%w: truncate a %d-byte loan to %d", ErrInvalidArgument, l.ref.Len, n)
	}
	l.ref.Len = uint32(n)
	return nil
}

// Commit sends the loan's Len bytes as one message without waiting (PROTOCOL.md §13.4): it
// claims a ring position, names it in the block's header, hands the block to the ring
// (LOANED -> QUEUED) and publishes the 16-byte reference with FlagBlob. It returns the
// message_id. opts gives the message type, application flags (ApplicationFlagsMask only,
// else a *ReservedFlagsError) and timestamp as for SendWith.
//
// ErrFull and ErrBusy (and a *ReservedFlagsError) leave the loan as it was: retry, use
// CommitTimeout, or Abandon it. A *RevokedError (ErrRevoked) means the loan was reclaimed
// first (this handle was judged dead, or closed): a SKIP marker took the position, nothing
// was sent, and the loan is spent; also when a repair took the position before the publish
// (the block is then reclaimed once the position is freed). After any other outcome the loan
// is spent, and Bytes is no longer valid. Like TrySend, a streak of full results makes it
// look for a consumer stuck holding the ring.
func (l *BlobLoan) Commit(opts SendOptions) (uint64, error) {
	c := l.ch
	id, err := l.tryCommit(&opts)
	if err == ErrFull && c.sendMisses.miss() && c.repairIfStuck(true, 1) {
		id, err = l.tryCommit(&opts)
	}
	if err != ErrFull {
		c.sendMisses.hit()
	}
	return id, err
}

// CommitTimeout is Commit sleeping while the ring is full for at most timeout (ErrTimeout
// after it, the loan still this producer's); a negative timeout waits as long as it takes.
func (l *BlobLoan) CommitTimeout(opts SendOptions, timeout time.Duration) (uint64, error) {
	return l.commitUntil(context.Background(), &opts, time.Now().Add(timeout), timeout < 0)
}

// CommitContext is Commit sleeping while the ring is full until ctx is done; it then returns
// ctx.Err() and the loan is still this producer's.
func (l *BlobLoan) CommitContext(ctx context.Context, opts SendOptions) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	defer l.ch.watchContext(ctx, entNotFullSeq)()
	return l.commitUntil(ctx, &opts, time.Time{}, true)
}

func (l *BlobLoan) commitUntil(ctx context.Context, opts *SendOptions, deadline time.Time, forever bool) (uint64, error) {
	c := l.ch
	stuck := stuckTracker{need: 1}
	for {
		id, err := l.tryCommit(opts)
		if err != ErrFull {
			c.sendMisses.hit()
			return id, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		slice, ok := sleepSlice(deadline, forever)
		if !ok {
			id, err = l.tryCommit(opts)
			if err == ErrFull {
				return 0, ErrTimeout
			}
			c.sendMisses.hit()
			return id, err
		}
		c.wait(ctx, true, 1, stuck.step(c, true, slice))
	}
}

// tryCommit is one attempt of a commit (PROTOCOL.md §13.4 send_blob).
func (l *BlobLoan) tryCommit(opts *SendOptions) (uint64, error) {
	if l.stage != blobActive {
		return 0, ErrBlobDone
	}
	if opts.Flags&ProtocolFlagsMask != 0 {
		return 0, &ReservedFlagsError{Flags: opts.Flags}
	}
	c := l.ch
	r := l.ref
	// Zero the rest of the last word after the blob, as a slot's send pads its payload (the
	// block size is a multiple of 64, so the word is inside the block).
	if tail := int(r.Len) % 8; tail != 0 {
		block := c.seg.blockBytes(int(r.Class), r.Block, uint32(roundUp(uint64(r.Len), 8)))
		if end := int(r.Len) - tail + 8; end <= len(block) {
			for i := int(r.Len); i < end; i++ {
				block[i] = 0
			}
		}
	}
	position, _, err := c.claimSend(1)
	if err != nil {
		return 0, err // FULL or BUSY: the loan stays the producer's
	}
	h := c.seg.blockHeader(int(r.Class), r.Block)
	loaned := packTag(BlockLoaned, l.owner, r.Generation)
	l.stage = blobCommitted
	atomic.AddInt64(&c.blobsOut, -1)
	revoked := load64(h, blkTag) != loaned // reclaimed already: leave the header alone
	if !revoked {
		// The header names the position before the block is handed to the ring, so that
		// whoever finds a QUEUED block whose position is gone can free it (§13.6 rule 3).
		store32(h, blkChannelID, c.geom.ID)
		store64(h, blkPosition, position)
		store32(h, blkLength, r.Len)
		revoked = !cas64(h, blkTag, loaned, packTag(BlockQueued, 0, r.Generation))
	}
	if revoked {
		// The loan was reclaimed (this producer was judged dead): give the position up.
		c.publishMarker(position, FlagSkip, 0, 0)
		intentClear(c.sendPeer, &c.sendFlagsShown)
		c.notifyConsumers()
		atomic.AddUint64(&c.revoked, 1)
		return 0, &RevokedError{MessageID: position, Count: 1}
	}
	var ref [BlobRefLen]byte
	w0, w1 := r.words()
	for i := 0; i < 8; i++ {
		ref[i], ref[8+i] = byte(w0>>(8*i)), byte(w1>>(8*i))
	}
	published := c.publishSlot(position, position, ref[:], opts, c.stamp(opts), BlobRefLen, FlagBlob, 0, 0)
	intentClear(c.sendPeer, &c.sendFlagsShown) // after the publish (or the failed one)
	if !published {
		// Tombstoned meanwhile: the QUEUED block is reclaimed once the position is freed.
		atomic.AddUint64(&c.revoked, 1)
		return 0, &RevokedError{MessageID: position, Count: 1}
	}
	c.notifyConsumers()
	return position, nil
}

// Abandon gives the loaned block back to the pool unsent (LOANED -> FREE, PROTOCOL.md
// §13.3) and wakes producers waiting for a block. A loan reclaimed meanwhile has nothing to
// give back. After Commit or Abandon it fails with ErrBlobDone.
func (l *BlobLoan) Abandon() error {
	if l.stage != blobActive {
		return ErrBlobDone
	}
	l.stage = blobAbandoned
	atomic.AddInt64(&l.ch.blobsOut, -1)
	l.ch.seg.freeBlock(l.ref, BlockLoaned, l.owner)
	return nil
}

// ------------------------------------------------------------------ receiving blobs

// BlobView is a message received with Channel.ReceiveBlob: a blob read in place in its
// block (IsBlob), or an inline message of the channel in a private copy. The ring slot is
// already free; a blob's block stays this handle's until Release gives it back. A view
// belongs to one goroutine at a time.
type BlobView struct {
	ch      *Channel
	meta    Meta
	data    []byte
	ref     BlobRef
	owner   uint32
	inPlace bool
	stage   blobStage
}

// Meta is the message's metadata. For a blob, PayloadLen is the blob's length (not 16) and
// Flags has FlagBlob.
func (v *BlobView) Meta() Meta { return v.meta }

// Len is the message's length in bytes.
func (v *BlobView) Len() int { return len(v.data) }

// IsBlob is true for a blob read in place in its block; false for an inline message (or a
// run) of the channel, which the view holds in a private copy.
func (v *BlobView) IsBlob() bool { return v.inPlace }

// Ref is the reference the message carried (zero for an inline message).
func (v *BlobView) Ref() BlobRef { return v.ref }

// Bytes is the message, Len bytes. For a blob it is a slice over the block in the mapping,
// read in place: valid only until Release (Bytes returns nil afterwards), after which the
// block may hold another message; after the Segment is closed it faults. Do not write
// through it. A peer misjudging this process dead can reclaim the block while it is read
// (PROTOCOL.md §13.6): Release then reports it (ErrRevoked), and an application that must not
// act on such bytes checks Release before acting. For an inline message it is a private copy.
func (v *BlobView) Bytes() []byte {
	if v.stage != blobActive {
		return nil
	}
	return v.data
}

// ReadAt copies the message's bytes at off into p (io.ReaderAt), with the bounds checked.
// After Release it fails with ErrBlobDone.
func (v *BlobView) ReadAt(p []byte, off int64) (int, error) {
	if v.stage != blobActive {
		return 0, ErrBlobDone
	}
	return readBounded(v.data, p, off)
}

// CopyTo copies the first min(Len, len(dst)) bytes of the message into dst and returns how
// many (0 after Release).
func (v *BlobView) CopyTo(dst []byte) int {
	if v.stage != blobActive {
		return 0
	}
	return copy(dst, v.data)
}

// Release gives a blob's block back to the pool (HELD -> FREE, PROTOCOL.md §13.3) and wakes
// producers waiting for a block; for an inline message it only ends the view. A
// *RevokedError (ErrRevoked, counted in Stats().Revoked) means the block was reclaimed while
// this handle held it (it was judged dead): what was read may have been overwritten. A
// second Release fails with ErrBlobDone.
func (v *BlobView) Release() error {
	if v.stage != blobActive {
		return ErrBlobDone
	}
	v.stage = blobReleased
	if !v.inPlace {
		return nil
	}
	c := v.ch
	atomic.AddInt64(&c.blobsOut, -1)
	if c.seg.freeBlock(v.ref, BlockHeld, v.owner) {
		return nil
	}
	atomic.AddUint64(&c.revoked, 1)
	return &RevokedError{MessageID: v.meta.MessageID, Count: 1}
}

// blobReceiver checks that this handle may receive blobs in place.
func (c *Channel) blobReceiver() error {
	if !c.CarriesBlobs() {
		return fmt.Errorf("%w: channel %d", ErrNoBlobPool, c.ID())
	}
	if c.recvPeer == nil || c.recvOwner == 0 {
		return ErrNotRegistered
	}
	return nil
}

// TryReceiveBlob receives the next message without waiting for one (PROTOCOL.md §13.5). A
// blob is taken for this handle (QUEUED -> HELD) before its ring slot is freed, and read in
// place through the view until BlobView.Release; the ring moves on meanwhile, and several
// blobs can be held at once. An inline message (or a run) of the channel is delivered too,
// in a private copy (BlobView.IsBlob is false), so one loop receives everything a channel
// carries.
//
// It needs a channel that carries blobs (ErrNoBlobPool) and a handle registered as a
// consumer (Register; ErrNotRegistered): the block's owner is its peer record, so that a
// crash while it is held can be reclaimed. Errors are TryReceive's (ErrEmpty, ErrBusy, a
// *LostError, a *RevokedError when a repair freed the position first: the block, if taken, is
// released at once), and a *CorruptMessageError (Blob set, counted in Stats().Corrupt) for a
// reference that is bad, stale (its generation moved on) or forged (its block is not queued
// for this position): consumed and dropped, its block left alone.
func (c *Channel) TryReceiveBlob() (*BlobView, error) {
	if err := c.blobReceiver(); err != nil {
		return nil, err
	}
	v, err := c.tryReceiveBlob()
	if err == errPending || err == ErrEmpty {
		var pending pendingWait
		if err == errPending {
			if c.waitPending(&pending) {
				v, err = c.receiveBlobNow(&pending)
			} else {
				v, err = nil, ErrEmpty
			}
		}
		if err == ErrEmpty && c.recvMisses.miss() && c.repairIfStuck(false, 0) {
			v, err = c.receiveBlobNow(&pending)
		}
	}
	if err != ErrEmpty {
		c.recvMisses.hit()
	}
	return v, err
}

// receiveBlobNow is receiveNow for TryReceiveBlob.
func (c *Channel) receiveBlobNow(pending *pendingWait) (*BlobView, error) {
	for {
		v, err := c.tryReceiveBlob()
		if err != errPending {
			return v, err
		}
		if !c.waitPending(pending) {
			return nil, ErrEmpty
		}
	}
}

// ReceiveBlob is TryReceiveBlob sleeping while the ring is empty, as long as it takes.
func (c *Channel) ReceiveBlob() (*BlobView, error) {
	return c.ReceiveBlobTimeout(-1)
}

// ReceiveBlobTimeout is TryReceiveBlob sleeping while the ring is empty for at most timeout
// (ErrTimeout after it); a negative timeout waits as long as it takes. It repairs a stuck
// ring as ReceiveTimeout does.
func (c *Channel) ReceiveBlobTimeout(timeout time.Duration) (*BlobView, error) {
	if err := c.blobReceiver(); err != nil {
		return nil, err
	}
	if v, err := c.tryReceiveBlob(); err != ErrEmpty && err != errPending {
		c.recvMisses.hit()
		return v, err
	}
	return c.receiveBlobUntil(context.Background(), time.Now().Add(timeout), timeout < 0)
}

// ReceiveBlobContext is TryReceiveBlob sleeping while the ring is empty until ctx is done;
// it then returns ctx.Err() and has consumed nothing.
func (c *Channel) ReceiveBlobContext(ctx context.Context) (*BlobView, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := c.blobReceiver(); err != nil {
		return nil, err
	}
	defer c.watchContext(ctx, entNotEmptySeq)()
	return c.receiveBlobUntil(ctx, time.Time{}, true)
}

func (c *Channel) receiveBlobUntil(ctx context.Context, deadline time.Time, forever bool) (*BlobView, error) {
	var stuck stuckTracker
	for {
		v, err := c.tryReceiveBlob()
		if err != ErrEmpty && err != errPending {
			c.recvMisses.hit()
			return v, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		slice, ok := sleepSlice(deadline, forever)
		if !ok {
			return nil, ErrTimeout
		}
		c.wait(ctx, false, 0, stuck.step(c, false, slice))
	}
}

// tryReceiveBlob is one attempt of a blob receive; errPending when the head is a claim in
// flight with messages queued behind it.
func (c *Channel) tryReceiveBlob() (*BlobView, error) {
	for i := 0; i < retryLimit; i++ {
		cl, err := c.claimRecvAt(1, -1)
		if err != nil {
			return nil, err // errPending included
		}
		var meta Meta
		var buf []byte
		if cl.run {
			buf = make([]byte, cl.length) // bounded by the channel's validated limit
		} else {
			slot := c.slot(cl.first)
			readMetaInto(slot, &meta)
			if classify(&meta) == contentBlob {
				return c.takeBlob(cl.first, slot, &meta)
			}
			buf = make([]byte, MsgInline)
		}
		skipped, err := c.finishReceive(cl, buf, &meta)
		if skipped {
			continue
		}
		if err != nil {
			return nil, err
		}
		n := meta.PayloadLen
		return &BlobView{ch: c, meta: meta, data: buf[:n:n]}, nil
	}
	return nil, ErrBusy
}

// takeBlob is receive_blob of PROTOCOL.md §13.5 for the claimed position holding a blob whose
// meta is *meta: the block is taken (QUEUED -> HELD by this handle's record) before the slot
// is freed, so a free slot never hides an untaken block; a claim revoked meanwhile releases
// the block at once.
func (c *Channel) takeBlob(position uint64, slot unsafe.Pointer, meta *Meta) (*BlobView, error) {
	owner := c.recvOwner
	r, ok := c.claimedBlobRef(slot, meta)
	var h unsafe.Pointer
	var tag uint64
	if ok {
		h, tag, ok = c.queuedFor(r, position)
	}
	if ok {
		ok = cas64(h, blkTag, tag, packTag(BlockHeld, owner, r.Generation))
	}
	if !ok {
		// Bad, stale or forged: dropped, and the block it names is left alone.
		freed := c.free(position)
		intentClear(c.recvPeer, &c.recvFlagsShown)
		if !freed {
			atomic.AddUint64(&c.revoked, 1)
			return nil, &RevokedError{MessageID: position, Count: 1}
		}
		c.notifyProducers()
		atomic.AddUint64(&c.corrupt, 1)
		return nil, &CorruptMessageError{MessageID: position, PayloadLen: meta.PayloadLen, Blob: true}
	}
	store32(h, blkOwnerPid, c.pid)
	runHook(hookBeforeFree, position)
	freed := c.free(position)
	intentClear(c.recvPeer, &c.recvFlagsShown) // after the free (or the failed one)
	if !freed {
		// The claim was revoked (§11.7): the block goes back at once.
		c.seg.freeBlock(r, BlockHeld, owner)
		atomic.AddUint64(&c.revoked, 1)
		return nil, &RevokedError{MessageID: position, Count: 1}
	}
	c.notifyProducers()
	atomic.AddInt64(&c.blobsOut, 1)
	m := *meta
	m.PayloadLen = r.Len
	return &BlobView{ch: c, meta: m, ref: r, owner: owner, inPlace: true,
		data: c.seg.blockBytes(int(r.Class), r.Block, r.Len)}, nil
}

// ------------------------------------------------------------------ bounded copies

// writeBounded copies p into dst at off, never past dst (io.WriterAt's contract).
func writeBounded(dst, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: negative offset %d", ErrInvalidArgument, off)
	}
	if off >= int64(len(dst)) {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.ErrShortWrite
	}
	n := copy(dst[off:], p)
	if n < len(p) {
		return n, io.ErrShortWrite
	}
	return n, nil
}

// readBounded copies src at off into p, never past src (io.ReaderAt's contract: io.EOF when
// fewer than len(p) bytes were read).
func readBounded(src, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: negative offset %d", ErrInvalidArgument, off)
	}
	if off >= int64(len(src)) {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := copy(p, src[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
