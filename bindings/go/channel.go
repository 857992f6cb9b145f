package dmxp

import (
	"context"
	"errors"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Meta is a message's metadata (PROTOCOL.md §2.5, §8).
type Meta struct {
	// MessageID is the position the message took in the channel: 0, 1, 2, ... per channel.
	MessageID uint64
	// TimestampNs is the sender's CLOCK_MONOTONIC nanoseconds (SendOptions.TimestampNs), or 0
	// when the sender did not stamp it ("unknown", PROTOCOL.md §8; Channel.SetTimestamps).
	TimestampNs uint64
	// ChannelID is the channel the message was sent on.
	ChannelID uint32
	// MessageType is application-defined (SendOptions.MessageType).
	MessageType uint32
	// SenderPID is the sending process's pid.
	SenderPID uint32
	// SenderRuntime is the sender's client: RuntimeRust, RuntimeC, RuntimePython, RuntimeGo.
	SenderRuntime uint16
	// Flags are the message's flags; its ApplicationFlagsMask bits are SendOptions.Flags. A
	// message longer than one slot (a run, PROTOCOL.md §12) has FlagRun set too.
	Flags uint16
	// PayloadLen is the payload's length: a receive's payload is buf[:PayloadLen]. For a
	// run it is the whole message's length.
	PayloadLen uint32
}

// SendOptions is what a sender stamps on a message besides the payload. sender_pid (this
// process) and sender_runtime (RuntimeGo) are filled in by the channel.
type SendOptions struct {
	// MessageType is application-defined.
	MessageType uint32
	// Flags may use only ApplicationFlagsMask bits.
	Flags uint16
	// TimestampNs is CLOCK_MONOTONIC nanoseconds; 0 means "now" (MonotonicNow), except on a
	// handle whose timestamps are off (Channel.SetTimestamps), which writes 0 ("unknown").
	TimestampNs uint64
}

// BatchResult counts what a batch receive consumed.
type BatchResult struct {
	// Delivered is the number of messages handed to the callback.
	Delivered int
	// Dropped is the number of positions consumed without a message: LOST tombstones,
	// corrupt lengths and revoked positions (SKIP markers are not counted).
	Dropped int
	// Revoked is the number of the Dropped positions that a repair took from this handle
	// before it freed them (PROTOCOL.md §11.7): what was copied from them was discarded.
	Revoked int
}

// Stats counts the bad positions a Channel handle has consumed.
type Stats struct {
	// Lost is the number of LOST tombstones consumed.
	Lost uint64
	// Corrupt is the number of messages dropped for an impossible payload_len, as a run
	// cut short or inconsistent (each run counted once), or as a bad, stale or forged blob
	// reference (PROTOCOL.md §13.5).
	Corrupt uint64
	// Revoked is the number of positions, sent or received, that a repair took from this
	// handle before it published or freed them (PROTOCOL.md §11.7); a run counts once. It
	// also counts blob loans and received blocks reclaimed from this handle before its Commit
	// or Release (§13.6).
	Revoked uint64
}

// Channel is an opened, validated channel: a bounded MPMC ring. Its geometry was validated
// and cached at open; every slot address is computed from the cached values. Safe for
// concurrent use by many goroutines, except once registered in the peer table (Register):
// a registered handle is used for its role by one goroutine at a time.
type Channel struct {
	seg  *Segment
	geom Geometry
	mask uint64
	// limit is the largest message the channel takes (Geometry.MessageLimit), cached at open.
	limit int
	entry unsafe.Pointer
	band  unsafe.Pointer
	// pid is the sender_pid stamped on messages (metadata only: the identity a registration
	// and a repair use is ownIdentity, re-read whenever the pid changes).
	pid     uint32
	lost    uint64
	corrupt uint64
	revoked uint64
	// This handle's peer records (Register), nil when not registered.
	sendPeer unsafe.Pointer
	recvPeer unsafe.Pointer
	// What this handle last stored in each record's intent_flags (intentSet).
	sendFlagsShown, recvFlagsShown uint32
	// The owner values of this handle's blob loans and received blocks (PROTOCOL.md §13.3):
	// its producer's and its consumer's peer record index plus one, 0 when not registered.
	sendOwner, recvOwner uint32
	// blobsOut counts this handle's loans and in-place views not yet committed, abandoned or
	// released (accessed atomically): Close gives their blocks back first.
	blobsOut int64
	// Non-blocking calls in a row that found the ring full (sends) or empty (receives), and
	// the stuck watches they keep once a streak is long enough (missThreshold).
	sendMisses, recvMisses missStreak
	sendWatch, recvWatch   stuckWatch
	// stuckLooks counts how often this handle looked for a stuck position, repairPasses how
	// many repair passes its stuck trackers ran.
	stuckLooks, repairPasses uint64
	// unblockNs is the unblock timeout in nanoseconds (PROTOCOL.md §11.8); 0: never unblock.
	unblockNs int64
	// timestamps is 1 when sends stamp timestamp_ns with the clock (the default), 0 when they
	// leave it 0 (SetTimestamps); accessed atomically.
	timestamps uint32
}

// hookStep names the points of a send or receive where a test hook runs.
type hookStep int

const (
	// hookBeforePublish: the payload and metadata are written, the publishing CAS is next.
	hookBeforePublish hookStep = iota + 1
	// hookBeforeFree: the payload is copied out, the freeing CAS is next.
	hookBeforeFree
	// hookSweepTakenOver: a registration's sweep has taken over the dead record at index
	// position and checks its intent next.
	hookSweepTakenOver
	// hookJudged: a repair or sweep pass has just judged the liveness of the record at index
	// position (the first time in that pass: later looks reuse the verdict).
	hookJudged
)

// testHook, when set, runs at each hookStep of every handle of the process (tests only).
var testHook atomic.Pointer[func(step hookStep, position uint64)]

func runHook(step hookStep, position uint64) {
	if h := testHook.Load(); h != nil {
		(*h)(step, position)
	}
}

var scratchPool = sync.Pool{New: func() interface{} { return new([MsgInline]byte) }}

func newChannel(s *Segment, g Geometry) *Channel {
	return &Channel{
		seg:   s,
		geom:  g,
		mask:  g.Capacity - 1,
		limit: g.MessageLimit(),
		entry: s.entry(g.ID),
		band:  unsafe.Add(s.base, g.BandOffset),
		pid:   uint32(os.Getpid()),

		unblockNs:  int64(UnblockTimeout),
		timestamps: 1,
	}
}

// SetUnblockTimeout sets how long this handle lets a position stay stuck, held by a peer that
// is alive but not moving (stopped, or holding its claim), before it repairs the position
// anyway (PROTOCOL.md §11.8): a producer's claim becomes a LOST tombstone, a consumer's claim
// is freed, and the holder learns it by ErrRevoked. d <= 0 never unblocks (positions of dead
// peers are still repaired). The default is UnblockTimeout. Safe to call at any time.
func (c *Channel) SetUnblockTimeout(d time.Duration) {
	if d < 0 {
		d = 0
	}
	atomic.StoreInt64(&c.unblockNs, int64(d))
}

// UnblockTimeout is this handle's unblock timeout (SetUnblockTimeout); 0 means never.
func (c *Channel) UnblockTimeout() time.Duration {
	return time.Duration(atomic.LoadInt64(&c.unblockNs))
}

// SetTimestamps sets whether this handle's sends stamp each message's timestamp_ns with
// CLOCK_MONOTONIC (true, the default) or leave it 0, which the protocol reads as "unknown"
// (PROTOCOL.md §8): the clock read is the largest cost of a send that the ring does not need.
// It applies to every send of the handle (single, batch, run, blocking or not); a message sent
// with an explicit SendOptions.TimestampNs still carries that value, and receives are
// unaffected. The same switch as the Rust ChannelBuilder::with_timestamps. Safe to call at any
// time.
func (c *Channel) SetTimestamps(on bool) {
	var v uint32
	if on {
		v = 1
	}
	atomic.StoreUint32(&c.timestamps, v)
}

// Timestamps reports whether this handle's sends stamp timestamp_ns (SetTimestamps).
func (c *Channel) Timestamps() bool {
	return atomic.LoadUint32(&c.timestamps) != 0
}

// ID is the channel id.
func (c *Channel) ID() uint32 { return c.geom.ID }

// Capacity is the number of slots in the ring.
func (c *Channel) Capacity() uint64 { return c.geom.Capacity }

// MaxMessageSize is the largest message the channel takes, in bytes, as validated and
// cached at open: the entry's max_message_size on a channel created with
// ChannelOptions.MaxMessageSize above MsgInline (it carries runs, PROTOCOL.md §12), else
// MsgInline (960).
func (c *Channel) MaxMessageSize() int { return c.limit }

// CarriesRuns is true when the channel takes messages longer than one slot (the entry flag
// ChannelFlagRuns).
func (c *Channel) CarriesRuns() bool { return c.geom.Flags&ChannelFlagRuns != 0 }

// RequireSingleSlot refuses a channel that carries runs (PROTOCOL.md §12.1), for code that
// cannot take a message longer than MsgInline (960) bytes: fixed 960-byte buffers, code that
// speaks only the single-slot protocol of §6. It returns nil when the channel has no
// ChannelFlagRuns (CarriesRuns is false, as validated and cached at open: the entry is not
// read again), else a *RunsNotSupportedError naming the channel (matching
// ErrRunsNotSupported). Call it right after opening the channel; it changes nothing, so the
// handle stays usable either way.
func (c *Channel) RequireSingleSlot() error {
	if !c.CarriesRuns() {
		return nil
	}
	return &RunsNotSupportedError{Channel: c.ID()}
}

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
	return Stats{
		Lost:    atomic.LoadUint64(&c.lost),
		Corrupt: atomic.LoadUint64(&c.corrupt),
		Revoked: atomic.LoadUint64(&c.revoked),
	}
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
	// RunSlots and RunIndex are the slot's run_slots and run_index (PROTOCOL.md §12.2): the
	// positions of the run it belongs to and its place in it; 0 in a single-slot message.
	RunSlots, RunIndex uint32
	// Payload is the first min(payload_len, 960) bytes of the payload area.
	Payload []byte
}

// PeekSlot reads slot index (0 <= index < capacity) without claiming it: a racy snapshot.
func (c *Channel) PeekSlot(index uint64) SlotInfo {
	slot := c.slot(index)
	info := SlotInfo{Sequence: load64(slot, slotSequence), Meta: readMeta(slot), MetaPad: load32(slot, slotMetaPad),
		RunSlots: load32(slot, slotRunSlots), RunIndex: load32(slot, slotRunIndex)}
	n := info.Meta.PayloadLen
	if n > MsgInline {
		n = MsgInline
	}
	info.Payload = make([]byte, n)
	loadPayload(unsafe.Add(slot, slotPayload), info.Payload)
	return info
}

func readMeta(slot unsafe.Pointer) Meta {
	var m Meta
	readMetaInto(slot, &m)
	return m
}

// readMetaInto reads a slot's meta into m, each field once. The receive path fills the
// caller's Meta in place rather than passing it up by value through each call.
func readMetaInto(slot unsafe.Pointer, m *Meta) {
	runtimeFlags := load32(slot, slotRuntimeFlags)
	*m = Meta{
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
				intentSet(peer, &c.sendFlagsShown, tail, count, 0)
			}
			if cas64(c.entry, entTail, tail, tail+count) {
				return tail, count, nil
			}
			tail = load64(c.entry, entTail)
		case lag < 0:
			// The slot still holds the message of the previous lap.
			intentClear(peer, &c.sendFlagsShown)
			return 0, 0, ErrFull
		default:
			// Another producer claimed this position: catch up.
			tail = load64(c.entry, entTail)
		}
	}
	intentClear(peer, &c.sendFlagsShown)
	return 0, 0, ErrBusy
}

// claimRun claims the k consecutive free positions of a run (2 <= k <= capacity) with one
// CAS on tail (PROTOCOL.md §12.3), naming them in a run intent first (§12.5). ErrFull when
// one of the k slots still holds a message of the previous lap: the run does not fit now.
// A producer never claims part of a run.
func (c *Channel) claimRun(k uint64) (uint64, error) {
	peer := c.sendPeer
	tail := load64(c.entry, entTail)
	for i := 0; i < retryLimit; i++ {
		lag := int64(load64(c.slot(tail), slotSequence) - tail)
		switch {
		case lag == 0:
			j, d := uint64(1), int64(0)
			for ; j < k; j++ {
				if d = int64(load64(c.slot(tail+j), slotSequence) - (tail + j)); d != 0 {
					break
				}
			}
			switch {
			case j == k: // all k slots are free
				if peer != nil {
					intentSet(peer, &c.sendFlagsShown, tail, k, intentFlagRun)
				}
				if cas64(c.entry, entTail, tail, tail+k) {
					return tail, nil
				}
				tail = load64(c.entry, entTail)
			case d < 0:
				intentClear(peer, &c.sendFlagsShown)
				return 0, ErrFull
			default: // another producer moved on
				tail = load64(c.entry, entTail)
			}
		case lag < 0:
			intentClear(peer, &c.sendFlagsShown)
			return 0, ErrFull
		default:
			tail = load64(c.entry, entTail)
		}
	}
	intentClear(peer, &c.sendFlagsShown)
	return 0, ErrBusy
}

// recvClaim is what claimRecvAt claimed: count positions from first. With run, they are one
// run of length bytes (PROTOCOL.md §12.4), checked before the claim; otherwise single-slot
// positions, or one slot of a run claimed alone (an orphan continuation, or a run start that
// failed its checks).
type recvClaim struct {
	first, count uint64
	run          bool
	length       uint32
	// blob: the position, claimed alone, was published with FlagBlob (PROTOCOL.md §13.5);
	// length is then the reference's length as peeked before the claim (advisory).
	blob bool
}

// claimRecv claims up to max consecutive published positions with one CAS on head. With
// avail >= 0 it refuses, consuming nothing, when the first message is longer than avail.
func (c *Channel) claimRecv(max uint64, avail int) (uint64, uint64, error) {
	cl, err := c.claimRecvAt(max, avail)
	return cl.first, cl.count, err
}

// claimRecvAt claims what the published head holds, with one CAS on head: up to max
// consecutive single-slot positions (the count stops at a slot of a run), or a whole run
// whose start is at head (PROTOCOL.md §12.4), or one position alone: a continuation whose
// start is gone (passed over), or a run start that is inconsistent or whose continuations are
// not all published (dropped as corrupt). With avail >= 0 it refuses, consuming nothing, when
// the message at head is longer than avail (a *BufferTooSmallError).
func (c *Channel) claimRecvAt(max uint64, avail int) (recvClaim, error) {
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
			// Advisory peeks: what decides is re-read and re-checked after the claim.
			flags := uint16(load32(slot, slotRuntimeFlags) >> 16)
			cl := recvClaim{first: head, count: 1}
			switch {
			case flags&FlagRunCont != 0:
				// A continuation whose start is gone: claimed alone, passed over.
			case flags&FlagRun != 0:
				k, length, ok := c.checkRunStart(slot)
				if ok && avail >= 0 && int(length) > avail {
					intentClear(peer, &c.recvFlagsShown)
					return recvClaim{}, &BufferTooSmallError{Needed: int(length), Available: avail}
				}
				if ok && c.runPublished(head, k) {
					cl.count, cl.run, cl.length = k, true, length
				}
				// Otherwise claimed alone and dropped as corrupt: an honest start is
				// published last, after every continuation.
			case flags&FlagBlob != 0 && flags&(FlagSkip|FlagLost) == 0:
				// A blob (PROTOCOL.md §13.5), claimed alone. A copying receive judges by the
				// reference's length whether its buffer fits, before it claims.
				var plausible bool
				cl.blob = true
				cl.length, plausible = c.peekBlobLen(slot)
				if plausible && avail >= 0 && int64(cl.length) > int64(avail) {
					intentClear(peer, &c.recvFlagsShown)
					return recvClaim{}, &BufferTooSmallError{Needed: int(cl.length), Available: avail}
				}
			default:
				if avail >= 0 {
					needed := load32(slot, slotPayloadLen)
					if flags&(FlagSkip|FlagLost) == 0 && needed <= MsgInline && int(needed) > avail {
						intentClear(peer, &c.recvFlagsShown)
						return recvClaim{}, &BufferTooSmallError{Needed: int(needed), Available: avail}
					}
				}
				for cl.count < max {
					next := c.slot(head + cl.count)
					if load64(next, slotSequence) != head+cl.count+1 ||
						uint16(load32(next, slotRuntimeFlags)>>16)&(FlagRun|FlagRunCont|FlagBlob) != 0 {
						break // a batch stops before a run and before a blob
					}
					cl.count++
				}
			}
			if peer != nil {
				var intentFlags uint32
				if cl.run {
					intentFlags = intentFlagRun
				}
				intentSet(peer, &c.recvFlagsShown, head, cl.count, intentFlags)
			}
			if cas64(c.entry, entHead, head, head+cl.count) {
				return cl, nil
			}
			head = load64(c.entry, entHead)
		case lag < 0:
			// Nothing published at head: empty, unless a completed send is queued behind a
			// claim still in flight (PROTOCOL.md §6.2), which the caller waits for.
			intentClear(peer, &c.recvFlagsShown)
			switch c.queuedBehind(head) {
			case queuedYes:
				return recvClaim{first: head}, errPending
			case queuedNo:
				return recvClaim{}, ErrEmpty
			}
			// The scan raced a publish of head and proves nothing: look at head again.
			head = load64(c.entry, entHead)
		default:
			head = load64(c.entry, entHead)
		}
	}
	intentClear(peer, &c.recvFlagsShown)
	return recvClaim{}, ErrBusy
}

// checkRunStart reads the run fields of a slot flagged FlagRun: ok when 2 <= run_slots <=
// capacity, 960 < payload_len <= the channel's limit and run_slots == ceil(payload_len /
// 960) (PROTOCOL.md §12.4). On a channel without runs the limit is 960: never ok.
func (c *Channel) checkRunStart(slot unsafe.Pointer) (k uint64, length uint32, ok bool) {
	k = uint64(load32(slot, slotRunSlots))
	length = load32(slot, slotPayloadLen)
	ok = k >= 2 && k <= c.geom.Capacity && length > MsgInline && int64(length) <= int64(c.limit) &&
		k == runSlots(int(length))
	return k, length, ok
}

// runPublished is true when every continuation of the run of k positions at head is
// published.
func (c *Channel) runPublished(head, k uint64) bool {
	for i := uint64(1); i < k; i++ {
		if load64(c.slot(head+i), slotSequence) != head+i+1 {
			return false
		}
	}
	return true
}

// queued is what queuedBehind found behind an unpublished head.
type queued int

const (
	queuedNo    queued = iota // nothing published behind head: empty
	queuedYes                 // a later position holds a message: the head is pending
	queuedStale               // head was published (or taken) during the scan: look again
)

// queuedBehind reports whether a position after head, up to tail and within one lap, is
// published: a completed send waits behind head, which a producer has claimed and not yet
// published. While head stays unpublished nobody can consume past it, so a message queued
// when the scan began is still there when the scan reads it; but once head is published,
// others may consume the positions behind it during the scan, so a scan that found nothing
// while head changed proves nothing (queuedStale). The scan runs only on a miss with tail past
// head+1, so a receive on an empty channel (tail == head) pays one more load.
func (c *Channel) queuedBehind(head uint64) queued {
	ahead := load64(c.entry, entTail) - head
	if int64(ahead) <= 1 {
		return queuedNo
	}
	if ahead > c.geom.Capacity {
		ahead = c.geom.Capacity
	}
	for k := uint64(1); k < ahead; k++ {
		p := head + k
		if load64(c.slot(p), slotSequence) == p+1 {
			return queuedYes
		}
	}
	if int64(load64(c.slot(head), slotSequence)-(head+1)) >= 0 || load64(c.entry, entHead) != head {
		return queuedStale
	}
	return queuedNo
}

// free frees the slot of a consumed position for the producer one lap later, by CAS from the
// claimed state (PROTOCOL.md §11.7). False means a repair freed it first: the position was
// revoked and nothing was stored.
func (c *Channel) free(position uint64) bool {
	return cas64(c.slot(position), slotSequence, position+1, position+c.geom.Capacity)
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
	return c.hasFreeSlots(1)
}

// hasFreeSlots is true when the need positions from tail are free: a run of need slots
// (need <= capacity) fits now.
func (c *Channel) hasFreeSlots(need uint64) bool {
	tail := load64(c.entry, entTail)
	if need > c.geom.Capacity {
		need = c.geom.Capacity
	}
	for i := uint64(0); i < need || i == 0; i++ {
		if load64(c.slot(tail+i), slotSequence) != tail+i {
			return false
		}
	}
	return true
}

// wait registers as a waiter, re-checks the ring and sleeps on the word for at most d. A
// sender waits until need slots are free from tail (1, or a run's positions).
//
// A registered handle names the count it is in, in its peer record's waiting word, so that
// whoever frees the record after this process dies gives the count back (PROTOCOL.md §11.9).
// After the sleep it takes itself out of the count only if it wins the word back: a peer that
// misjudged it dead and freed its record has already taken the count down.
func (c *Channel) wait(ctx context.Context, forSend bool, need uint64, d time.Duration) {
	word, waiters := uintptr(entNotEmptySeq), uintptr(entNotEmptyWaiters)
	peer, kind := c.recvPeer, waitingNotEmpty
	if forSend {
		word, waiters = entNotFullSeq, entNotFullWaiters
		peer, kind = c.sendPeer, waitingNotFull
	}
	atomic.AddUint32(ptr32(c.entry, waiters), 1)
	if peer != nil {
		store32(peer, peerWaiting, kind) // after the count: "waiting" implies "counted"
	}
	observed := load32(c.entry, word)
	// Go's atomics are sequentially consistent: the registration above is ordered before the
	// re-check below, as the protocol's fence requires.
	var ready bool
	if forSend {
		ready = c.hasFreeSlots(need)
	} else {
		ready = c.HasMessage()
	}
	// A context cancelled before the load of observed is seen here; one cancelled after it
	// bumps the word (watchContext), so the futex wait returns at once or is woken.
	if !ready && ctx.Err() == nil {
		futexWait(ptr32(c.entry, word), observed, d)
	}
	if peer == nil || swap32(peer, peerWaiting, waitingNone) == kind {
		atomic.AddUint32(ptr32(c.entry, waiters), ^uint32(0))
	}
}

// watchContext makes a wait on word (an entry offset) return promptly when ctx is done: a
// goroutine then bumps the word and wakes its sleepers, as a sender's notify does (the
// others re-check their rings and sleep again). The returned stop ends the goroutine and
// returns only once it no longer touches the mapping. A context that is never done costs
// nothing.
func (c *Channel) watchContext(ctx context.Context, word uintptr) (stop func()) {
	if ctx.Done() == nil {
		return func() {}
	}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		select {
		case <-ctx.Done():
			atomic.AddUint32(ptr32(c.entry, word), 1)
			futexWakeAll(ptr32(c.entry, word))
		case <-done:
		}
	}()
	return func() {
		close(done)
		<-finished
	}
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

// checkOutgoing checks a payload of at most limit bytes and the flags asked for.
func checkOutgoing(payload []byte, opts *SendOptions, limit int) error {
	if len(payload) > limit {
		return &TooLargeError{Len: len(payload), Limit: limit}
	}
	if opts.Flags&ProtocolFlagsMask != 0 {
		return &ReservedFlagsError{Flags: opts.Flags}
	}
	return nil
}

// publish writes a claimed position's message and publishes it (PROTOCOL.md §11.7): the
// payload first, then a check that the position is still claimed, the metadata, and the CAS
// from the claimed state. False means a repair took the position first (revoked); then no
// metadata was written, or the CAS changed nothing.
func (c *Channel) publish(position uint64, payload []byte, opts *SendOptions, timestamp uint64) bool {
	return c.publishSlot(position, position, payload, opts, timestamp, uint32(len(payload)), 0, 0, 0)
}

// publishSlot is publish for one slot of a message: part (at most MsgInline bytes) as its
// payload, the message's id and length in the metadata, protocol flags (FlagRun, FlagRunCont
// or 0) beside the application's, and the run fields run_slots, run_index (0, 0 in a
// single-slot message, PROTOCOL.md §12.2).
func (c *Channel) publishSlot(position, messageID uint64, part []byte, opts *SendOptions, timestamp uint64,
	length uint32, protocolFlags uint16, slots, index uint64) bool {
	slot := c.slot(position)
	storePayload(unsafe.Add(slot, slotPayload), part)
	if load64(slot, slotSequence) != position {
		return false
	}
	// The meta as six aligned little-endian words, with ordinary stores: the slot is claimed
	// and the CAS below publishes them (the memory model in mem.go).
	putWord(slot, slotMessageID, messageID)
	putWord(slot, slotTimestamp, timestamp)
	putWord(slot, slotChannelID, uint64(c.geom.ID)|uint64(opts.MessageType)<<32)
	putWord(slot, slotSenderPid, uint64(c.pid)|uint64(uint32(RuntimeGo)|uint32(opts.Flags|protocolFlags)<<16)<<32)
	putWord(slot, slotPayloadLen, uint64(length)) // payload_len, then the zero bytes 44..48
	putWord(slot, slotRunSlots, slots|index<<32)  // run_slots, run_index
	runHook(hookBeforePublish, position)
	return cas64(slot, slotSequence, position, position+1)
}

// stamp is the timestamp_ns of a message sent with opts: the explicit one, else the clock, or
// 0 when this handle's timestamps are off (SetTimestamps).
func (c *Channel) stamp(opts *SendOptions) uint64 {
	if opts.TimestampNs != 0 {
		return opts.TimestampNs
	}
	if atomic.LoadUint32(&c.timestamps) == 0 {
		return 0
	}
	return MonotonicNow()
}

// TrySend sends one message without waiting; it returns the message_id (the position the
// message took), or ErrFull, ErrBusy, a *TooLargeError, or a *RevokedError (ErrRevoked) when
// a repair took the claimed position before it was published (PROTOCOL.md §11.7).
//
// A payload may be as long as MaxMessageSize: on a channel created with a limit above
// MsgInline, a longer one travels as a run of ceil(len / 960) consecutive slots claimed at
// once (PROTOCOL.md §12.3), so it needs that many free slots (ErrFull until then). Beyond the
// limit it fails with a *TooLargeError naming the length and the limit; nothing is sent.
//
// After a streak of missThreshold full results in a row, a full ring is also checked for a
// slot a consumer claimed and never freed, which is repaired once it has stayed stuck for
// StuckGrace if the consumer is dead, and for the unblock timeout if it is alive
// (SetUnblockTimeout).
func (c *Channel) TrySend(payload []byte) (uint64, error) {
	return c.TrySendWith(payload, SendOptions{})
}

// TrySendWith is TrySend with a message type, application flags or a timestamp.
func (c *Channel) TrySendWith(payload []byte, opts SendOptions) (uint64, error) {
	id, err := c.trySend(payload, &opts)
	if err == ErrFull && c.sendMisses.miss() && c.repairIfStuck(true, runSlots(len(payload))) {
		id, err = c.trySend(payload, &opts)
	}
	if err != ErrFull {
		c.sendMisses.hit()
	}
	return id, err
}

// trySend is one attempt of a send, without the miss streak.
func (c *Channel) trySend(payload []byte, opts *SendOptions) (uint64, error) {
	if err := checkOutgoing(payload, opts, c.limit); err != nil {
		return 0, err
	}
	if len(payload) > MsgInline {
		k := runSlots(len(payload))
		position, err := c.claimRun(k)
		if err != nil {
			return 0, err
		}
		return c.finishRun(position, k, payload, opts)
	}
	position, _, err := c.claimSend(1)
	if err != nil {
		return 0, err
	}
	return c.finishSend(position, payload, opts)
}

// finishSend publishes the message of a claimed position and ends the intent.
func (c *Channel) finishSend(position uint64, payload []byte, opts *SendOptions) (uint64, error) {
	published := c.publish(position, payload, opts, c.stamp(opts))
	intentClear(c.sendPeer, &c.sendFlagsShown) // after the publish (or the failed one)
	if !published {
		atomic.AddUint64(&c.revoked, 1)
		return 0, &RevokedError{MessageID: position, Count: 1}
	}
	c.notifyConsumers()
	return position, nil
}

// finishRun publishes the run of k positions claimed at first (PROTOCOL.md §12.3): the
// continuations in order, each its 960-byte part with FlagRunCont, then the first slot with
// FlagRun, the run's publication point; then it ends the intent. A continuation a repair took
// first stops the run there, its first slot unpublished (the repair tombstones it): a
// *RevokedError naming the message, counted once.
func (c *Channel) finishRun(first, k uint64, payload []byte, opts *SendOptions) (uint64, error) {
	timestamp := c.stamp(opts)
	length := uint32(len(payload))
	part := func(i uint64) []byte {
		lo, hi := i*MsgInline, (i+1)*MsgInline
		if hi > uint64(len(payload)) {
			hi = uint64(len(payload))
		}
		return payload[lo:hi]
	}
	published := true
	for i := uint64(1); i < k && published; i++ {
		published = c.publishSlot(first+i, first, part(i), opts, timestamp, length, FlagRunCont, k, i)
	}
	if published {
		published = c.publishSlot(first, first, part(0), opts, timestamp, length, FlagRun, k, 0)
	}
	intentClear(c.sendPeer, &c.sendFlagsShown) // after the last publish (or the failed one)
	if !published {
		atomic.AddUint64(&c.revoked, 1)
		return 0, &RevokedError{MessageID: first, Count: 1}
	}
	c.notifyConsumers()
	return first, nil
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
// negative timeout waits as long as it takes. Before each sleep it checks the ring for a slot
// a consumer claimed and never freed (repaired once stuck for StuckGrace if the consumer is
// dead, for the unblock timeout if it is alive). A message longer than MsgInline (a run)
// waits until all the slots it needs are free at once.
func (c *Channel) SendWith(payload []byte, opts SendOptions, timeout time.Duration) (uint64, error) {
	// One attempt before the clock is read for the deadline: a free slot costs no time read
	// beyond the timestamp.
	if id, err := c.trySend(payload, &opts); err != ErrFull {
		c.sendMisses.hit()
		return id, err
	}
	return c.sendUntil(context.Background(), payload, &opts, time.Now().Add(timeout), timeout < 0)
}

// SendContext sends one message, sleeping while the ring is full until ctx is done; it then
// returns ctx.Err() and has sent nothing. A context already done returns its error at once,
// without trying. The sleep ends promptly on cancellation (the waiting word is woken, see
// PROTOCOL.md §7), and the waiter count is left as it was found.
func (c *Channel) SendContext(ctx context.Context, payload []byte) (uint64, error) {
	return c.SendWithContext(ctx, payload, SendOptions{})
}

// SendWithContext is SendContext with opts.
func (c *Channel) SendWithContext(ctx context.Context, payload []byte, opts SendOptions) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	defer c.watchContext(ctx, entNotFullSeq)()
	return c.sendUntil(ctx, payload, &opts, time.Time{}, true)
}

// sendUntil sends, sleeping while the ring is full until deadline (unless forever) or until
// ctx is done.
func (c *Channel) sendUntil(ctx context.Context, payload []byte, opts *SendOptions, deadline time.Time, forever bool) (uint64, error) {
	need := runSlots(len(payload))
	stuck := stuckTracker{need: need}
	for {
		id, err := c.trySend(payload, opts)
		if err != ErrFull {
			c.sendMisses.hit()
			return id, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		slice, ok := sleepSlice(deadline, forever)
		if !ok {
			id, err = c.trySend(payload, opts)
			if err == ErrFull {
				return 0, ErrTimeout
			}
			c.sendMisses.hit()
			return id, err
		}
		c.wait(ctx, true, need, stuck.step(c, true, slice))
	}
}

// TrySendBatch sends as many of payloads, in order, as there are free slots for, claimed
// with one CAS. It returns how many payloads it took (at least one), or ErrFull when none
// could be. Every payload is checked before anything is sent: a batch carries single-slot
// messages only, so a payload longer than MsgInline fails with a *TooLargeError (limit 960)
// even on a channel that carries runs (send those with TrySend or Send).
//
// Each position is published on its own (PROTOCOL.md §11.7): a position a repair took before
// its publish is revoked, counted in Stats().Revoked, and not published; the others are. The
// count still includes revoked payloads (do not send them again blindly: a consumer may
// have received them) and the error is then a *RevokedError (ErrRevoked) naming the first
// revoked message and how many were.
func (c *Channel) TrySendBatch(payloads [][]byte, opts SendOptions) (int, error) {
	n, err := c.trySendBatch(payloads, &opts)
	if err == ErrFull && c.sendMisses.miss() && c.repairIfStuck(true, 1) {
		n, err = c.trySendBatch(payloads, &opts)
	}
	if err != ErrFull {
		c.sendMisses.hit()
	}
	return n, err
}

// trySendBatch is one attempt of a batch send, without the miss streak.
func (c *Channel) trySendBatch(payloads [][]byte, opts *SendOptions) (int, error) {
	if len(payloads) == 0 {
		return 0, nil
	}
	for _, p := range payloads {
		if err := checkOutgoing(p, opts, MsgInline); err != nil {
			return 0, err
		}
	}
	first, count, err := c.claimSend(uint64(len(payloads)))
	if err != nil {
		return 0, err
	}
	timestamp := c.stamp(opts)
	var revoked *RevokedError
	for k := uint64(0); k < count; k++ {
		if c.publish(first+k, payloads[k], opts, timestamp) {
			continue
		}
		if revoked == nil {
			revoked = &RevokedError{MessageID: first + k}
		}
		revoked.Count++
	}
	intentClear(c.sendPeer, &c.sendFlagsShown) // after the last publish
	if revoked == nil {
		c.notifyConsumers()
		return int(count), nil
	}
	atomic.AddUint64(&c.revoked, uint64(revoked.Count))
	if uint64(revoked.Count) < count {
		c.notifyConsumers()
	}
	return int(count), revoked
}

// SendBatch sends every payload in order (in batches as large as the free space allows),
// waiting at most timeout while the ring is full; a negative timeout waits as long as it
// takes. It returns how many payloads it took; it stops at the first error, which may be a
// *RevokedError for positions of the last batch (counted in the number taken, see
// TrySendBatch).
func (c *Channel) SendBatch(payloads [][]byte, opts SendOptions, timeout time.Duration) (int, error) {
	deadline, forever := time.Now().Add(timeout), timeout < 0
	var stuck stuckTracker
	sent := 0
	for sent < len(payloads) {
		n, err := c.trySendBatch(payloads[sent:], &opts)
		sent += n
		if err != ErrFull {
			c.sendMisses.hit()
		}
		if err == nil {
			continue
		}
		if err != ErrFull {
			return sent, err
		}
		slice, ok := sleepSlice(deadline, forever)
		if !ok {
			n, err = c.trySendBatch(payloads[sent:], &opts)
			sent += n
			if err == ErrFull {
				return sent, ErrTimeout
			}
			c.sendMisses.hit()
			if err != nil {
				return sent, err
			}
			continue
		}
		c.wait(context.Background(), true, 1, stuck.step(c, true, slice))
	}
	return sent, nil
}

// ------------------------------------------------------------------ receiving

// UnblockTimeout is the default unblock timeout of a Channel handle (PROTOCOL.md §11.8; see
// SetUnblockTimeout): a position that stays stuck this long, held by a peer that is alive but
// stopped, is repaired anyway. A producer's claim left unpublished gets a LOST tombstone
// (reported as a *LostError), a consumer's claim left unfreed is freed; the holder's record
// stays its own, and the holder learns of the repair by ErrRevoked when it finishes. Positions
// of dead peers are repaired sooner, after StuckGrace (§11.6).
//
// It also bounds how long a non-blocking receive waits for a position that a producer has
// claimed and not yet published while a later position already holds a message. Such a
// channel is not empty (PROTOCOL.md §6.2: a completed send is queued), so the receive waits for
// that position instead of reporting ErrEmpty: it spins briefly, then sleeps on the not_empty
// word in short slices, repairing the position under the rules above. It gives up, reporting
// ErrEmpty, after twice the smaller of UnblockTimeout and the handle's unblock timeout (twice
// UnblockTimeout when the handle never unblocks), which leaves the unblock time to happen
// within the wait. A blocking receive waits within its own deadline (ErrTimeout after it). A
// receive that finds no later position published reports ErrEmpty at once: every send in
// flight then has yet to complete.
const UnblockTimeout = time.Second

// errPending is what claimRecv returns, with the head position, when nothing is published at
// head while a later position is: the head is a claim in flight and the receive must wait
// for it. It never reaches a caller of the package.
var errPending = errors.New("dmxp: head claimed but not yet published, messages queued behind it")

const (
	// pendingSpins is how many times a non-blocking receive re-checks a pending head before
	// it sleeps on the not_empty word; it yields the processor every pendingYield checks.
	pendingSpins = 256
	pendingYield = 16
)

// pendingWait is how long one receive call has waited for claims in flight at the head.
type pendingWait struct {
	waiting  bool
	position uint64 // the head the wait began at
	since    time.Time
	stuck    stuckTracker
}

// until notes that the channel is pending at its head at now and returns when the wait ends:
// pendingBound after it began. With restart, a head other than the one the wait began at
// (the channel made progress meanwhile) begins a new wait.
func (w *pendingWait) until(c *Channel, now time.Time, restart bool) time.Time {
	head := c.Head()
	if !w.waiting || (restart && head != w.position) {
		w.waiting, w.position, w.since = true, head, now
	}
	return w.since.Add(c.pendingBound())
}

// pendingBound is how long one non-blocking receive waits in all for claims in flight at the
// head: twice the smaller of UnblockTimeout and the handle's unblock timeout, so that the
// unblock happens within the wait (twice UnblockTimeout when the handle never unblocks).
func (c *Channel) pendingBound() time.Duration {
	bound := c.UnblockTimeout()
	if bound <= 0 || bound > UnblockTimeout {
		bound = UnblockTimeout
	}
	return 2 * bound
}

// settled is true when a receive that found position h pending may try again: head has
// moved on, or h has been published (or repaired).
func (c *Channel) settled(h uint64) bool {
	return load64(c.entry, entHead) != h || int64(load64(c.slot(h), slotSequence)-(h+1)) >= 0
}

// waitPending is how a non-blocking receive that got errPending waits for the head to be
// published: it spins, then yields, repairing a dead claimer once the head has stayed stuck for
// StuckGrace and a stopped one after the unblock timeout. It returns true when the receive
// should try again (the head settled, or the call's wait ran out during this one: one last
// try), false when the call has already waited pendingBound in all and must report ErrEmpty.
func (c *Channel) waitPending(w *pendingWait) bool {
	now := time.Now()
	limit := w.until(c, now, false)
	if !now.Before(limit) {
		return false
	}
	head := c.Head()
	for i := 1; i <= pendingSpins; i++ {
		if c.settled(head) {
			return true
		}
		if i%pendingYield == 0 {
			runtime.Gosched()
		}
	}
	// Then yield (a producer preempted mid-send gets the processor back), with the stuck
	// check of the blocking calls in between; never a futex sleep, so a channel in steady
	// flow makes no system call.
	for !c.settled(head) {
		if !time.Now().Before(limit) {
			break
		}
		w.stuck.step(c, false, time.Until(limit))
		runtime.Gosched()
	}
	return true
}

type content int

const (
	contentMessage content = iota
	contentSkip
	contentLost
	contentCorrupt
	// contentRevoked: the freeing CAS failed, a repair had freed the position (§11.7).
	contentRevoked
	// contentBlob: a message flagged FlagBlob (PROTOCOL.md §13.5), its reference not yet
	// checked.
	contentBlob
)

// classify sorts what a single claimed position holds. A slot of a run claimed alone is a
// continuation whose start is gone (passed over like SKIP, PROTOCOL.md §12.4) or a run start
// that failed its checks (corrupt); both are tested before SKIP, LOST and payload_len, as
// §12.4 tests them before §6.2.
func classify(meta *Meta) content {
	switch {
	case meta.Flags&FlagRunCont != 0:
		return contentSkip
	case meta.Flags&FlagRun != 0:
		return contentCorrupt
	case meta.Flags&FlagSkip != 0:
		return contentSkip
	case meta.Flags&FlagLost != 0:
		return contentLost
	case meta.Flags&FlagBlob != 0:
		return contentBlob
	case meta.PayloadLen > MsgInline:
		return contentCorrupt
	}
	return contentMessage
}

// consume finishes a claimed position: reads its metadata, copies a message's payload into
// buf, and frees the slot by CAS. What it read counts only if the free succeeded: otherwise
// (contentRevoked) the slot may have held the next lap's bytes, and the caller must discard
// buf. A message longer than buf (only a peer rewriting a published slot gets there) is
// reported as corrupt. The metadata goes to *meta (zero when revoked).
//
// A blob (FlagBlob, PROTOCOL.md §13.5) is copied out of its block into buf and the block
// freed, before the slot (copyBlob): the message delivered is the block's bytes, never the
// reference. A bad, stale or forged reference is contentCorrupt, and its block left alone.
func (c *Channel) consume(position uint64, buf []byte, meta *Meta) content {
	slot := c.slot(position)
	readMetaInto(slot, meta)
	kind := classify(meta)
	if kind == contentBlob {
		kind = c.copyBlob(position, slot, buf, meta)
	}
	if kind == contentMessage && meta.Flags&FlagBlob == 0 {
		// n is read once: the length checked is the length copied.
		if n := meta.PayloadLen; int(n) > len(buf) {
			kind = contentCorrupt
		} else {
			loadPayload(unsafe.Add(slot, slotPayload), buf[:n])
		}
	}
	runHook(hookBeforeFree, position)
	if !c.free(position) {
		*meta = Meta{}
		return contentRevoked
	}
	return kind
}

// consumeRun finishes a claimed run (PROTOCOL.md §12.4): re-reads run_slots and payload_len
// of its first slot (they must be what the claim checked), checks each continuation
// (FlagRunCont, the run's message_id, its run_index, the same payload_len), copies each part
// into buf (at least cl.length bytes), and frees every position by CAS, whatever it found.
// A bad run is contentCorrupt, once; a free that fails (a repair freed the position first)
// makes it contentRevoked, and the copy must be discarded.
func (c *Channel) consumeRun(cl recvClaim, buf []byte, meta *Meta) content {
	first, k, length := cl.first, cl.count, cl.length
	slot := c.slot(first)
	readMetaInto(slot, meta)
	bad := uint64(load32(slot, slotRunSlots)) != k || meta.PayloadLen != length
	for i := uint64(0); i < k && !bad; i++ {
		part := c.slot(first + i)
		if i > 0 && (uint16(load32(part, slotRuntimeFlags)>>16)&FlagRunCont == 0 ||
			load64(part, slotMessageID) != first || uint64(load32(part, slotRunIndex)) != i ||
			load32(part, slotPayloadLen) != length) {
			bad = true
			break
		}
		lo, hi := i*MsgInline, (i+1)*MsgInline
		if hi > uint64(length) {
			hi = uint64(length)
		}
		loadPayload(unsafe.Add(part, slotPayload), buf[lo:hi])
	}
	runHook(hookBeforeFree, first)
	revoked := false
	for i := uint64(0); i < k; i++ {
		if !c.free(first + i) {
			revoked = true
		}
	}
	switch {
	case revoked:
		*meta = Meta{}
		return contentRevoked
	case bad:
		*meta = Meta{MessageID: first, PayloadLen: length, Flags: FlagRun}
		return contentCorrupt
	}
	return contentMessage
}

// TryReceive receives one message into buf without waiting; the payload is
// buf[:meta.PayloadLen]. SKIP markers are passed over. It fails with ErrEmpty, ErrBusy, a
// *BufferTooSmallError (nothing consumed; a buffer of MaxMessageSize bytes always suffices,
// MsgInline on a channel without runs), after
// consuming a bad position with a *LostError or *CorruptMessageError, or with a *RevokedError
// (ErrRevoked) when a repair freed the claimed position before this call did: then buf holds
// nothing to use (PROTOCOL.md §11.7).
//
// A message longer than one slot (a run, PROTOCOL.md §12.4) is delivered whole into buf,
// with FlagRun in meta.Flags. A run cut short or inconsistent is consumed and reported once
// as a *CorruptMessageError (Run set); a continuation whose start is gone is passed over
// like a SKIP marker.
//
// On a channel that carries blobs (ChannelFlagBlobs, PROTOCOL.md §13.5), a blob is delivered
// by copying its block's bytes into buf (meta.PayloadLen is the blob's length, meta.Flags has
// FlagBlob), then freeing the block: no registration is needed. A blob longer than buf is
// refused with a *BufferTooSmallError, judged by the reference's length, consuming nothing.
// A bad, stale or forged reference is consumed and reported as a *CorruptMessageError (Blob
// set), leaving the block it names alone. Channel.ReceiveBlob reads a blob in place instead.
//
// ErrEmpty means nothing is queued. When the head is claimed by a producer that has not
// published it yet while a later position holds a message (a run's continuations, for one),
// TryReceive waits for the head (for a bounded time, see UnblockTimeout) instead of reporting
// ErrEmpty.
//
// After a streak of missThreshold empty results in a row, an empty ring is also checked for a
// position a producer claimed and never published, which is repaired (a LOST tombstone) once
// it has stayed stuck for StuckGrace if the producer is dead, and for the unblock timeout if
// it is alive (SetUnblockTimeout).
func (c *Channel) TryReceive(buf []byte) (meta Meta, err error) {
	// The common case is one attempt; the pending wait and the stuck check are out of line.
	if err = c.tryReceive(buf, &meta); err == errPending || err == ErrEmpty {
		err = c.receiveMissed(buf, &meta, err)
	}
	if err != ErrEmpty {
		c.recvMisses.hit()
	}
	return meta, err
}

// receiveMissed is the rest of a TryReceive whose first attempt returned err, errPending or
// ErrEmpty: it waits for a pending head, and after a streak of empty results looks for a
// stuck position, trying again after a repair.
func (c *Channel) receiveMissed(buf []byte, meta *Meta, err error) error {
	var pending pendingWait
	if err == errPending {
		if c.waitPending(&pending) {
			err = c.receiveNow(buf, &pending, meta)
		} else {
			*meta, err = Meta{}, ErrEmpty
		}
	}
	if err == ErrEmpty && c.recvMisses.miss() && c.repairIfStuck(false, 0) {
		err = c.receiveNow(buf, &pending, meta)
	}
	return err
}

// receiveNow is a non-blocking receive without the miss streak: attempts, waiting for a
// pending head between them, until one gets through or the wait runs out (ErrEmpty).
func (c *Channel) receiveNow(buf []byte, pending *pendingWait, meta *Meta) error {
	for {
		err := c.tryReceive(buf, meta)
		if err != errPending {
			return err
		}
		if !c.waitPending(pending) {
			*meta = Meta{}
			return ErrEmpty
		}
	}
}

// tryReceive is one attempt of a receive, into buf and *meta (zero unless a message is
// delivered). It returns errPending when the head is a claim in flight with messages queued
// behind it.
func (c *Channel) tryReceive(buf []byte, meta *Meta) error {
	for i := 0; i < retryLimit; i++ {
		cl, err := c.claimRecvAt(1, len(buf))
		if err != nil {
			*meta = Meta{}
			return err // errPending included
		}
		if skipped, err := c.finishReceive(cl, buf, meta); !skipped {
			return err
		}
	}
	*meta = Meta{}
	return ErrBusy
}

// finishReceive consumes a claimed position (or run) into buf and *meta (left zero unless
// a message is delivered) and ends the intent; skipped is true for a SKIP marker or an orphan
// continuation (nothing to report: the caller goes on to the next position).
func (c *Channel) finishReceive(cl recvClaim, buf []byte, meta *Meta) (skipped bool, err error) {
	position := cl.first
	var kind content
	if cl.run {
		kind = c.consumeRun(cl, buf, meta)
	} else {
		kind = c.consume(position, buf, meta)
	}
	intentClear(c.recvPeer, &c.recvFlagsShown) // after the free (or the failed one)
	if kind == contentMessage {
		c.notifyProducers()
		return false, nil
	}
	bad := *meta
	*meta = Meta{}
	if kind == contentRevoked {
		atomic.AddUint64(&c.revoked, 1)
		return false, &RevokedError{MessageID: position, Count: 1}
	}
	c.notifyProducers()
	switch kind {
	case contentSkip:
		return true, nil
	case contentLost:
		atomic.AddUint64(&c.lost, 1)
		return false, &LostError{MessageID: position}
	default: // contentCorrupt
		atomic.AddUint64(&c.corrupt, 1)
		blob := bad.Flags&FlagBlob != 0 && !cl.run
		return false, &CorruptMessageError{MessageID: position, PayloadLen: bad.PayloadLen,
			Run: !blob && (cl.run || bad.Flags&FlagRun != 0), Blob: blob}
	}
}

// Receive receives one message into buf, sleeping while the ring is empty.
func (c *Channel) Receive(buf []byte) (Meta, error) {
	return c.ReceiveTimeout(buf, -1)
}

// ReceiveTimeout receives one message into buf, sleeping while the ring is empty for at most
// timeout (ErrTimeout after it); a negative timeout waits as long as it takes. Before each
// sleep it checks the ring for a position a producer claimed and never published (repaired
// once stuck for StuckGrace if the producer is dead, for the unblock timeout if it is alive).
//
// A ring whose head is claimed but not yet published while a later position holds a message
// is not empty: the receive waits for that head like for an empty ring, within the same
// deadline (ErrTimeout after it, as in the Rust and Python clients).
func (c *Channel) ReceiveTimeout(buf []byte, timeout time.Duration) (meta Meta, err error) {
	// One attempt before the clock is read: a queued message costs no time read.
	if err = c.tryReceive(buf, &meta); err != ErrEmpty && err != errPending {
		c.recvMisses.hit()
		return meta, err
	}
	return c.receiveUntil(context.Background(), buf, time.Now().Add(timeout), timeout < 0)
}

// ReceiveContext receives one message into buf, sleeping while the ring is empty until ctx
// is done; it then returns ctx.Err() and has consumed nothing. A context already done
// returns its error at once, without trying. The sleep ends promptly on cancellation (the
// waiting word is woken, see PROTOCOL.md §7), and the waiter count is left as it was found.
func (c *Channel) ReceiveContext(ctx context.Context, buf []byte) (Meta, error) {
	if err := ctx.Err(); err != nil {
		return Meta{}, err
	}
	defer c.watchContext(ctx, entNotEmptySeq)()
	return c.receiveUntil(ctx, buf, time.Time{}, true)
}

// receiveUntil receives, sleeping while the ring is empty until deadline (unless forever) or
// until ctx is done.
func (c *Channel) receiveUntil(ctx context.Context, buf []byte, deadline time.Time, forever bool) (Meta, error) {
	var stuck stuckTracker
	for {
		var meta Meta
		err := c.tryReceive(buf, &meta)
		if err != ErrEmpty && err != errPending {
			c.recvMisses.hit()
			return meta, err
		}
		if err := ctx.Err(); err != nil {
			return Meta{}, err
		}
		slice, ok := sleepSlice(deadline, forever)
		if !ok {
			return Meta{}, ErrTimeout
		}
		c.wait(ctx, false, 0, stuck.step(c, false, slice))
	}
}

// TryReceiveBatch receives up to max messages claimed with one CAS and calls deliver for
// each with its metadata and payload (valid only during the call). Each slot is freed
// before its callback runs; producers are woken once at the end. Fails with ErrEmpty when
// nothing is queued (after a streak of empty results, also checking for a dead producer as
// TryReceive does); like TryReceive, it waits for a head claimed but not yet published while
// a later position holds a message (for a bounded time, see UnblockTimeout).
//
// Each position is freed on its own: one a repair freed first is revoked (PROTOCOL.md §11.7):
// it is not delivered, and counted in Dropped and Revoked (and Stats().Revoked).
//
// A batch claims consecutive single-slot messages only: it stops before a message longer
// than one slot (a run, PROTOCOL.md §12.4) and before a blob (§13.5). A batch whose first
// position starts a run delivers that run alone, whole (a bad run counts once in Dropped);
// one whose first position is a blob delivers the blob's bytes alone, copied out of its block,
// which is then freed (a bad reference counts once in Dropped).
func (c *Channel) TryReceiveBatch(max int, deliver func(Meta, []byte)) (BatchResult, error) {
	// The common case is one attempt; the pending wait and the stuck check are out of line.
	result, err := c.tryReceiveBatch(max, deliver)
	if err == errPending || err == ErrEmpty {
		result, err = c.receiveBatchMissed(max, deliver, result, err)
	}
	if err != ErrEmpty {
		c.recvMisses.hit()
	}
	return result, err
}

// receiveBatchMissed is receiveMissed for a batch whose first attempt returned result, err.
func (c *Channel) receiveBatchMissed(max int, deliver func(Meta, []byte), result BatchResult, err error) (BatchResult, error) {
	var pending pendingWait
	if err == errPending {
		if c.waitPending(&pending) {
			result, err = c.receiveBatchNow(max, deliver, &pending)
		} else {
			err = ErrEmpty
		}
	}
	if err == ErrEmpty && c.recvMisses.miss() && c.repairIfStuck(false, 0) {
		result, err = c.receiveBatchNow(max, deliver, &pending)
	}
	return result, err
}

// receiveBatchNow is receiveNow for a batch.
func (c *Channel) receiveBatchNow(max int, deliver func(Meta, []byte), pending *pendingWait) (BatchResult, error) {
	for {
		result, err := c.tryReceiveBatch(max, deliver)
		if err != errPending {
			return result, err
		}
		if !c.waitPending(pending) {
			return result, ErrEmpty
		}
	}
}

func (c *Channel) tryReceiveBatch(max int, deliver func(Meta, []byte)) (BatchResult, error) {
	var result BatchResult
	if max <= 0 {
		return result, nil
	}
	cl, err := c.claimRecvAt(uint64(max), -1)
	if err != nil {
		return result, err // errPending included: the caller waits
	}
	if cl.run {
		return c.receiveRunBatch(cl, deliver), nil
	}
	if cl.blob {
		return c.receiveBlobBatch(cl, deliver), nil
	}
	first, count := cl.first, cl.count
	scratch := scratchPool.Get().(*[MsgInline]byte)
	defer scratchPool.Put(scratch)
	next, end := first, first+count
	defer func() {
		// Frees whatever a panicking callback leaves claimed, so the ring never stalls (the
		// loop has cleared the intent once it reached the end).
		if next != end {
			for ; next != end; next++ {
				if !c.free(next) {
					atomic.AddUint64(&c.revoked, 1)
				}
			}
			intentClear(c.recvPeer, &c.recvFlagsShown)
		}
		c.notifyProducers()
	}()
	for next != end {
		position := next
		next++
		var meta Meta
		kind := c.consume(position, scratch[:], &meta)
		if next == end {
			intentClear(c.recvPeer, &c.recvFlagsShown) // after the last free
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
		case contentRevoked:
			atomic.AddUint64(&c.revoked, 1)
			result.Dropped++
			result.Revoked++
		}
	}
	return result, nil
}

// runBuffers holds the buffers batch receives copy runs into (grown as needed).
var runBuffers = sync.Pool{New: func() interface{} { return new([]byte) }}

// receiveRunBatch is a batch that claimed one run: it consumes the run into a pooled buffer,
// ends the intent, wakes producers, then delivers it (valid only during the call).
func (c *Channel) receiveRunBatch(cl recvClaim, deliver func(Meta, []byte)) BatchResult {
	var result BatchResult
	bufp := runBuffers.Get().(*[]byte)
	defer runBuffers.Put(bufp)
	if cap(*bufp) < int(cl.length) {
		*bufp = make([]byte, cl.length)
	}
	buf := (*bufp)[:cl.length]
	var meta Meta
	kind := c.consumeRun(cl, buf, &meta)
	intentClear(c.recvPeer, &c.recvFlagsShown) // after the last free
	c.notifyProducers()
	switch kind {
	case contentMessage:
		result.Delivered++
		deliver(meta, buf[:meta.PayloadLen])
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
