package dmxp

import (
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Meta is a message's metadata (PROTOCOL.md §2.5, §8).
type Meta struct {
	MessageID     uint64
	TimestampNs   uint64
	ChannelID     uint32
	MessageType   uint32
	SenderPID     uint32
	SenderRuntime uint16
	Flags         uint16
	PayloadLen    uint32
}

// SendOptions is what a sender stamps on a message besides the payload. sender_pid (this
// process) and sender_runtime (RuntimeGo) are filled in by the channel.
type SendOptions struct {
	// MessageType is application-defined.
	MessageType uint32
	// Flags may use only ApplicationFlagsMask bits.
	Flags uint16
	// TimestampNs is CLOCK_MONOTONIC nanoseconds; 0 means "now" (MonotonicNow).
	TimestampNs uint64
}

// BatchResult counts what a batch receive consumed.
type BatchResult struct {
	// Delivered is the number of messages handed to the callback.
	Delivered int
	// Dropped is the number of positions consumed without a message: LOST tombstones and
	// corrupt lengths (SKIP markers are not counted).
	Dropped int
}

// Stats counts the bad positions a Channel handle has consumed.
type Stats struct {
	// Lost is the number of LOST tombstones consumed.
	Lost uint64
	// Corrupt is the number of messages dropped for an impossible payload_len.
	Corrupt uint64
}

// Channel is an opened, validated channel: a bounded MPMC ring. Its geometry was validated
// and cached at open; every slot address is computed from the cached values. Safe for
// concurrent use by many goroutines, except once registered in the peer table (Register):
// a registered handle is used for its role by one goroutine at a time.
type Channel struct {
	seg     *Segment
	geom    Geometry
	mask    uint64
	entry   unsafe.Pointer
	band    unsafe.Pointer
	pid     uint32
	lost    uint64
	corrupt uint64
	// This handle's peer records (Register), nil when not registered.
	sendPeer unsafe.Pointer
	recvPeer unsafe.Pointer
}

var scratchPool = sync.Pool{New: func() interface{} { return new([MsgInline]byte) }}

func newChannel(s *Segment, g Geometry) *Channel {
	return &Channel{
		seg:   s,
		geom:  g,
		mask:  g.Capacity - 1,
		entry: s.entry(g.ID),
		band:  unsafe.Add(s.base, g.BandOffset),
		pid:   uint32(os.Getpid()),
	}
}

// ID is the channel id.
func (c *Channel) ID() uint32 { return c.geom.ID }

// Capacity is the number of slots in the ring.
func (c *Channel) Capacity() uint64 { return c.geom.Capacity }

// Geometry is the validated geometry cached at open.
func (c *Channel) Geometry() Geometry { return c.geom }

// Head is a snapshot of the consumer cursor.
func (c *Channel) Head() uint64 { return load64(c.entry, entHead) }

// Tail is a snapshot of the producer cursor.
func (c *Channel) Tail() uint64 { return load64(c.entry, entTail) }

// Waiters is the number of receivers and senders registered as waiting.
func (c *Channel) Waiters() (receivers, senders uint32) {
	return load32(c.entry, entNotEmptyWaiters), load32(c.entry, entNotFullWaiters)
}

// Stats is what this handle has consumed without delivering.
func (c *Channel) Stats() Stats {
	return Stats{Lost: atomic.LoadUint64(&c.lost), Corrupt: atomic.LoadUint64(&c.corrupt)}
}

func (c *Channel) slot(position uint64) unsafe.Pointer {
	// The mask keeps the index below the cached capacity, so the slot lies in the band.
	return unsafe.Add(c.band, (position&c.mask)*SlotSize)
}

// SlotInfo is a snapshot of one slot, for inspection tools and tests.
type SlotInfo struct {
	Sequence uint64
	Meta     Meta
	// MetaPad is bytes 44..48 of the slot (zero when written).
	MetaPad uint32
	// Payload is the first min(payload_len, 960) bytes of the payload area.
	Payload []byte
}

// PeekSlot reads slot index (0 <= index < capacity) without claiming it: a racy snapshot.
func (c *Channel) PeekSlot(index uint64) SlotInfo {
	slot := c.slot(index)
	info := SlotInfo{Sequence: load64(slot, slotSequence), Meta: readMeta(slot), MetaPad: load32(slot, slotMetaPad)}
	n := info.Meta.PayloadLen
	if n > MsgInline {
		n = MsgInline
	}
	info.Payload = make([]byte, n)
	loadPayload(unsafe.Add(slot, slotPayload), info.Payload)
	return info
}

func readMeta(slot unsafe.Pointer) Meta {
	runtimeFlags := load32(slot, slotRuntimeFlags)
	return Meta{
		MessageID:     load64(slot, slotMessageID),
		TimestampNs:   load64(slot, slotTimestamp),
		ChannelID:     load32(slot, slotChannelID),
		MessageType:   load32(slot, slotMessageType),
		SenderPID:     load32(slot, slotSenderPid),
		SenderRuntime: uint16(runtimeFlags),
		Flags:         uint16(runtimeFlags >> 16),
		PayloadLen:    load32(slot, slotPayloadLen),
	}
}

// ------------------------------------------------------------------ claiming positions

// claimSend claims up to max consecutive free positions with one CAS on tail.
// A registered handle names the positions in its intent before the CAS (PROTOCOL.md §11.4);
// on failure the intent is cleared, on success the caller clears it after the last publish.
func (c *Channel) claimSend(max uint64) (uint64, uint64, error) {
	peer := c.sendPeer
	if max > 1<<32-1 {
		max = 1<<32 - 1 // intent_count is 32 bits
	}
	tail := load64(c.entry, entTail)
	for i := 0; i < retryLimit; i++ {
		lag := int64(load64(c.slot(tail), slotSequence) - tail)
		switch {
		case lag == 0:
			count := uint64(1)
			for count < max && load64(c.slot(tail+count), slotSequence) == tail+count {
				count++
			}
			if peer != nil {
				intentSet(peer, tail, count)
			}
			if cas64(c.entry, entTail, tail, tail+count) {
				return tail, count, nil
			}
			tail = load64(c.entry, entTail)
		case lag < 0:
			// The slot still holds the message of the previous lap.
			intentClear(peer)
			return 0, 0, ErrFull
		default:
			// Another producer claimed this position: catch up.
			tail = load64(c.entry, entTail)
		}
	}
	intentClear(peer)
	return 0, 0, ErrBusy
}

// claimRecv claims up to max consecutive published positions with one CAS on head. With
// avail >= 0 it refuses, consuming nothing, when the first message is longer than avail.
func (c *Channel) claimRecv(max uint64, avail int) (uint64, uint64, error) {
	peer := c.recvPeer
	if max > 1<<32-1 {
		max = 1<<32 - 1 // intent_count is 32 bits
	}
	head := load64(c.entry, entHead)
	for i := 0; i < retryLimit; i++ {
		slot := c.slot(head)
		lag := int64(load64(slot, slotSequence) - (head + 1))
		switch {
		case lag == 0:
			if avail >= 0 {
				// Advisory peek: re-read and re-checked after the claim.
				needed := load32(slot, slotPayloadLen)
				flags := uint16(load32(slot, slotRuntimeFlags) >> 16)
				if flags&(FlagSkip|FlagLost) == 0 && needed <= MsgInline && int(needed) > avail {
					intentClear(peer)
					return 0, 0, &BufferTooSmallError{Needed: int(needed), Available: avail}
				}
			}
			count := uint64(1)
			for count < max && load64(c.slot(head+count), slotSequence) == head+count+1 {
				count++
			}
			if peer != nil {
				intentSet(peer, head, count)
			}
			if cas64(c.entry, entHead, head, head+count) {
				return head, count, nil
			}
			head = load64(c.entry, entHead)
		case lag < 0:
			// Empty, or the producer of this position has not published yet.
			intentClear(peer)
			return 0, 0, ErrEmpty
		default:
			head = load64(c.entry, entHead)
		}
	}
	intentClear(peer)
	return 0, 0, ErrBusy
}

// release frees the slot of a consumed position for the producer one lap later.
func (c *Channel) release(position uint64) {
	store64(c.slot(position), slotSequence, position+c.geom.Capacity)
}

// notify bumps word and wakes its sleepers, only if a waiter is registered. The preceding
// publish or free was a sequentially consistent store, so it is ordered before the load of
// the waiter count exactly as the protocol's fence orders it (PROTOCOL.md §7.2).
func (c *Channel) notify(word, waiters uintptr) {
	if load32(c.entry, waiters) != 0 {
		atomic.AddUint32(ptr32(c.entry, word), 1)
		futexWakeAll(ptr32(c.entry, word))
	}
}

func (c *Channel) notifyConsumers() { c.notify(entNotEmptySeq, entNotEmptyWaiters) }
func (c *Channel) notifyProducers() { c.notify(entNotFullSeq, entNotFullWaiters) }

// HasMessage is true when the position at head has been published (a message or a marker).
func (c *Channel) HasMessage() bool {
	head := load64(c.entry, entHead)
	return load64(c.slot(head), slotSequence) == head+1
}

// HasFreeSlot is true when the position at tail is free.
func (c *Channel) HasFreeSlot() bool {
	tail := load64(c.entry, entTail)
	return load64(c.slot(tail), slotSequence) == tail
}

// wait registers as a waiter, re-checks the ring and sleeps on the word for at most d.
func (c *Channel) wait(forSend bool, d time.Duration) {
	word, waiters := uintptr(entNotEmptySeq), uintptr(entNotEmptyWaiters)
	if forSend {
		word, waiters = entNotFullSeq, entNotFullWaiters
	}
	atomic.AddUint32(ptr32(c.entry, waiters), 1)
	observed := load32(c.entry, word)
	// Go's atomics are sequentially consistent: the registration above is ordered before the
	// re-check below, as the protocol's fence requires.
	var ready bool
	if forSend {
		ready = c.HasFreeSlot()
	} else {
		ready = c.HasMessage()
	}
	if !ready {
		futexWait(ptr32(c.entry, word), observed, d)
	}
	atomic.AddUint32(ptr32(c.entry, waiters), ^uint32(0))
}

// sleepSlice is how long the next wait may sleep; ok is false once the deadline has passed.
func sleepSlice(deadline time.Time, forever bool) (time.Duration, bool) {
	if forever {
		return maxWaitSlice, true
	}
	remaining := time.Until(deadline)
	if remaining <= 0 {
		return 0, false
	}
	if remaining > maxWaitSlice {
		remaining = maxWaitSlice
	}
	return remaining, true
}

// ------------------------------------------------------------------ sending

func checkOutgoing(payload []byte, opts *SendOptions) error {
	if len(payload) > MsgInline {
		return &TooLargeError{Len: len(payload), Limit: MsgInline}
	}
	if opts.Flags&ProtocolFlagsMask != 0 {
		return &ReservedFlagsError{Flags: opts.Flags}
	}
	return nil
}

func (c *Channel) writeSlot(position uint64, payload []byte, opts *SendOptions, timestamp uint64) {
	slot := c.slot(position)
	store64(slot, slotMessageID, position)
	store64(slot, slotTimestamp, timestamp)
	store32(slot, slotChannelID, c.geom.ID)
	store32(slot, slotMessageType, opts.MessageType)
	store32(slot, slotSenderPid, c.pid)
	store32(slot, slotRuntimeFlags, uint32(RuntimeGo)|uint32(opts.Flags)<<16)
	store32(slot, slotPayloadLen, uint32(len(payload)))
	store32(slot, slotMetaPad, 0)
	storePayload(unsafe.Add(slot, slotPayload), payload)
	store64(slot, slotSequence, position+1) // publish
}

func stamp(opts *SendOptions) uint64 {
	if opts.TimestampNs != 0 {
		return opts.TimestampNs
	}
	return MonotonicNow()
}

// TrySend sends one message without waiting; it returns the message_id (the position the
// message took), or ErrFull, ErrBusy, a *TooLargeError.
func (c *Channel) TrySend(payload []byte) (uint64, error) {
	return c.TrySendWith(payload, SendOptions{})
}

// TrySendWith is TrySend with a message type, application flags or a timestamp.
func (c *Channel) TrySendWith(payload []byte, opts SendOptions) (uint64, error) {
	if err := checkOutgoing(payload, &opts); err != nil {
		return 0, err
	}
	position, _, err := c.claimSend(1)
	if err != nil {
		return 0, err
	}
	c.writeSlot(position, payload, &opts, stamp(&opts))
	intentClear(c.sendPeer) // after the last publish
	c.notifyConsumers()
	return position, nil
}

// Send sends one message, sleeping while the ring is full.
func (c *Channel) Send(payload []byte) (uint64, error) {
	return c.SendWith(payload, SendOptions{}, -1)
}

// SendTimeout sends one message, sleeping while the ring is full for at most timeout
// (ErrTimeout after it).
func (c *Channel) SendTimeout(payload []byte, timeout time.Duration) (uint64, error) {
	return c.SendWith(payload, SendOptions{}, timeout)
}

// SendWith sends one message with opts, waiting at most timeout while the ring is full; a
// negative timeout waits as long as it takes.
func (c *Channel) SendWith(payload []byte, opts SendOptions, timeout time.Duration) (uint64, error) {
	deadline, forever := time.Now().Add(timeout), timeout < 0
	var stuck stuckTracker
	for {
		id, err := c.TrySendWith(payload, opts)
		if err != ErrFull {
			return id, err
		}
		slice, ok := sleepSlice(deadline, forever)
		if !ok {
			id, err = c.TrySendWith(payload, opts)
			if err == ErrFull {
				return 0, ErrTimeout
			}
			return id, err
		}
		c.wait(true, stuck.step(c, true, slice))
	}
}

// TrySendBatch sends as many of payloads, in order, as there are free slots for, claimed
// with one CAS. It returns how many were sent (at least one), or ErrFull when none could be.
// Every payload is checked before anything is sent.
func (c *Channel) TrySendBatch(payloads [][]byte, opts SendOptions) (int, error) {
	if len(payloads) == 0 {
		return 0, nil
	}
	for _, p := range payloads {
		if err := checkOutgoing(p, &opts); err != nil {
			return 0, err
		}
	}
	first, count, err := c.claimSend(uint64(len(payloads)))
	if err != nil {
		return 0, err
	}
	timestamp := stamp(&opts)
	for k := uint64(0); k < count; k++ {
		c.writeSlot(first+k, payloads[k], &opts, timestamp)
	}
	intentClear(c.sendPeer) // after the last publish
	c.notifyConsumers()
	return int(count), nil
}

// SendBatch sends every payload in order (in batches as large as the free space allows),
// waiting at most timeout while the ring is full; a negative timeout waits as long as it
// takes. It returns how many were sent.
func (c *Channel) SendBatch(payloads [][]byte, opts SendOptions, timeout time.Duration) (int, error) {
	deadline, forever := time.Now().Add(timeout), timeout < 0
	var stuck stuckTracker
	sent := 0
	for sent < len(payloads) {
		n, err := c.TrySendBatch(payloads[sent:], opts)
		sent += n
		if err == nil {
			continue
		}
		if err != ErrFull {
			return sent, err
		}
		slice, ok := sleepSlice(deadline, forever)
		if !ok {
			n, err = c.TrySendBatch(payloads[sent:], opts)
			sent += n
			if err == ErrFull {
				return sent, ErrTimeout
			}
			if err != nil {
				return sent, err
			}
			continue
		}
		c.wait(true, stuck.step(c, true, slice))
	}
	return sent, nil
}

// ------------------------------------------------------------------ receiving

type content int

const (
	contentMessage content = iota
	contentSkip
	contentLost
	contentCorrupt
)

func classify(meta *Meta) content {
	switch {
	case meta.Flags&FlagSkip != 0:
		return contentSkip
	case meta.Flags&FlagLost != 0:
		return contentLost
	case meta.PayloadLen > MsgInline:
		return contentCorrupt
	}
	return contentMessage
}

// TryReceive receives one message into buf without waiting; the payload is
// buf[:meta.PayloadLen]. SKIP markers are passed over. It fails with ErrEmpty, ErrBusy, a
// *BufferTooSmallError (nothing consumed; a MsgInline-byte buffer always suffices), or after
// consuming a bad position with a *LostError or *CorruptMessageError.
func (c *Channel) TryReceive(buf []byte) (Meta, error) {
	for i := 0; i < retryLimit; i++ {
		position, _, err := c.claimRecv(1, len(buf))
		if err != nil {
			return Meta{}, err
		}
		slot := c.slot(position)
		meta := readMeta(slot)
		switch classify(&meta) {
		case contentSkip:
			err = nil
		case contentLost:
			atomic.AddUint64(&c.lost, 1)
			err = &LostError{MessageID: position}
		case contentCorrupt:
			atomic.AddUint64(&c.corrupt, 1)
			err = &CorruptMessageError{MessageID: position, PayloadLen: meta.PayloadLen}
		default:
			if int(meta.PayloadLen) > len(buf) {
				// Only a peer rewriting a published slot gets here.
				atomic.AddUint64(&c.corrupt, 1)
				err = &CorruptMessageError{MessageID: position, PayloadLen: meta.PayloadLen}
			} else {
				loadPayload(unsafe.Add(slot, slotPayload), buf[:meta.PayloadLen])
				c.release(position)
				intentClear(c.recvPeer) // after the free
				c.notifyProducers()
				return meta, nil
			}
		}
		c.release(position)
		intentClear(c.recvPeer)
		c.notifyProducers()
		if err != nil {
			return Meta{}, err
		}
	}
	return Meta{}, ErrBusy
}

// Receive receives one message into buf, sleeping while the ring is empty.
func (c *Channel) Receive(buf []byte) (Meta, error) {
	return c.ReceiveTimeout(buf, -1)
}

// ReceiveTimeout receives one message into buf, sleeping while the ring is empty for at most
// timeout (ErrTimeout after it); a negative timeout waits as long as it takes.
func (c *Channel) ReceiveTimeout(buf []byte, timeout time.Duration) (Meta, error) {
	deadline, forever := time.Now().Add(timeout), timeout < 0
	var stuck stuckTracker
	for {
		meta, err := c.TryReceive(buf)
		if err != ErrEmpty {
			return meta, err
		}
		slice, ok := sleepSlice(deadline, forever)
		if !ok {
			meta, err = c.TryReceive(buf)
			if err == ErrEmpty {
				return meta, ErrTimeout
			}
			return meta, err
		}
		c.wait(false, stuck.step(c, false, slice))
	}
}

// TryReceiveBatch receives up to max messages claimed with one CAS and calls deliver for
// each with its metadata and payload (valid only during the call). Each slot is freed
// before its callback runs; producers are woken once at the end. Fails with ErrEmpty when
// nothing was published.
func (c *Channel) TryReceiveBatch(max int, deliver func(Meta, []byte)) (BatchResult, error) {
	var result BatchResult
	if max <= 0 {
		return result, nil
	}
	first, count, err := c.claimRecv(uint64(max), -1)
	if err != nil {
		return result, err
	}
	scratch := scratchPool.Get().(*[MsgInline]byte)
	defer scratchPool.Put(scratch)
	next, end := first, first+count
	// Frees whatever a panicking callback leaves claimed, so the ring never stalls.
	defer func() {
		for ; next != end; next++ {
			c.release(next)
		}
		intentClear(c.recvPeer)
		c.notifyProducers()
	}()
	for next != end {
		position := next
		next++
		slot := c.slot(position)
		meta := readMeta(slot)
		kind := classify(&meta)
		if kind == contentMessage {
			loadPayload(unsafe.Add(slot, slotPayload), scratch[:meta.PayloadLen])
		}
		c.release(position)
		if next == end {
			intentClear(c.recvPeer) // after the last free
		}
		switch kind {
		case contentMessage:
			result.Delivered++
			deliver(meta, scratch[:meta.PayloadLen])
		case contentLost:
			atomic.AddUint64(&c.lost, 1)
			result.Dropped++
		case contentCorrupt:
			atomic.AddUint64(&c.corrupt, 1)
			result.Dropped++
		}
	}
	return result, nil
}
