package dmxp

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

// Peers and crash recovery (PROTOCOL.md §11).

// StuckGrace is how long a blocked sender or receiver lets the channel stay stuck at one
// position before it runs Recover, and how often it re-checks while it stays stuck.
const StuckGrace = 10 * time.Millisecond

// RecoverReport says what Recover did.
type RecoverReport struct {
	// RecordsFreed is the number of dead peers' records taken over and freed.
	RecordsFreed int
	// Lost is the number of LOST tombstones published for positions of dead producers.
	Lost uint64
	// Freed is the number of slots freed for positions claimed by dead consumers.
	Freed uint64
}

// procStat reads the state (field 3) and starttime (field 22) of /proc/<pid>/stat, counting
// fields after the last ')' (the command name may hold any byte).
func procStat(pid uint32) (state byte, start uint64, err error) {
	data, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	fields := bytes.Fields(data[i+1:])
	// fields[0] is field 3 (state), fields[19] is field 22 (starttime).
	if len(fields) < 20 || len(fields[0]) == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	start, err = strconv.ParseUint(string(fields[19]), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: starttime: %w", pid, err)
	}
	return fields[0][0], start, nil
}

// ProcessStartTime is the start time of process pid (field 22 of /proc/<pid>/stat, clock ticks
// since boot), or 0 when it cannot be read.
func ProcessStartTime(pid uint32) uint64 {
	_, start, err := procStat(pid)
	if err != nil {
		return 0
	}
	return start
}

// PeerDead applies the liveness rules of PROTOCOL.md §11.5 to a record naming pid and
// startTime: dead when kill(pid, 0) fails with ESRCH, when the process is a zombie, or when
// startTime is non-zero and differs from the start time of the process now at pid (the pid
// was reused). EPERM from kill means alive. It does not apply the "own pid is alive" rule,
// which Recover does.
func PeerDead(pid uint32, startTime uint64) bool {
	if pid == 0 {
		return false
	}
	if pid > 1<<31-1 {
		return true // no process has such a pid; kill would read it as a process group
	}
	if err := syscall.Kill(int(pid), 0); err == syscall.ESRCH {
		return true
	}
	state, now, err := procStat(pid)
	if err != nil {
		return os.IsNotExist(err) // exited between kill and the read; else cannot tell: alive
	}
	if state == 'Z' || state == 'X' {
		return true
	}
	return startTime != 0 && now != startTime
}

func (c *Channel) record(table unsafe.Pointer, i int) unsafe.Pointer {
	return unsafe.Add(table, i*PeerRecordSize)
}

// peerTable locates the peer table, installing it first when install is set and there is
// none (PROTOCOL.md §11.1); it validates the offset's range and that no band overlaps it.
// A nil pointer with a nil error means there is no table.
func (c *Channel) peerTable(install bool) (unsafe.Pointer, error) {
	s := c.seg
	table := load64(s.base, offPeerTableOffset)
	if table == 0 {
		if !install {
			return nil, nil
		}
		start, err := s.reserveBytes(PeerTableSize)
		if err != nil {
			return nil, err
		}
		zeroWords(s.base, uintptr(start), PeerTableSize)
		// Go's CAS is sequentially consistent: the zeroed records are visible to whoever sees
		// the offset. A loser uses the winner's table; its own bytes stay unused.
		if cas64(s.base, offPeerTableOffset, 0, start) {
			table = start
		} else {
			table = load64(s.base, offPeerTableOffset)
		}
	}
	if table == 0 || !peerTableInRange(table, s.length) {
		e := corruptHeader(PeerTableOutOfRange, table)
		e.Limit = s.length
		return nil, e
	}
	if g, bad := peerTableOverlap(table, s.Channels()); bad {
		return nil, corruptEntry(PeerTableOverlapsBand, g.ID, table)
	}
	return unsafe.Add(s.base, table), nil
}

// Register records this handle in the segment's peer table (PROTOCOL.md §11.3) as a producer
// or a consumer, so that a position it claimed is repaired (a LOST tombstone, or a freed slot)
// if this process dies before publishing or freeing it. Call it once per role; the first
// registration on a segment carves the 16 KiB table from the band area.
//
// A registered handle must be used for its role by one goroutine at a time (its record holds
// one intent): give each goroutine its own handle (OpenChannel again) and register each, and
// Close it when done.
//
// On failure (ErrPeerTableFull, an *OutOfSpaceError, a *CorruptionError for
// peer_table_offset) the handle still works as before, without crash protection: a claim it
// leaves behind by dying stalls the channel.
func (c *Channel) Register(role Role) error {
	var slot *unsafe.Pointer
	switch role {
	case RoleProducer:
		slot = &c.sendPeer
	case RoleConsumer:
		slot = &c.recvPeer
	default:
		return fmt.Errorf("%w: role %d", ErrInvalidArgument, role)
	}
	if *slot != nil {
		return nil
	}
	table, err := c.peerTable(true)
	if err != nil {
		return err
	}
	me := uint32(os.Getpid())
	start := ProcessStartTime(me)
	for i := 0; i < PeerRecords; i++ {
		r := c.record(table, i)
		if !cas32(r, peerPid, 0, me) {
			continue
		}
		store32(r, peerRuntimeRole, uint32(RuntimeGo)|uint32(role)<<16)
		store32(r, peerChannelID, c.geom.ID)
		store32(r, peerIntentCount, 0)
		store64(r, peerIntentPosition, 0)
		store64(r, peerStartTime, start) // last: 0 until then means "unknown"
		*slot = r
		return nil
	}
	return ErrPeerTableFull
}

// Registered tells whether this handle holds a peer record for role.
func (c *Channel) Registered(role Role) bool {
	switch role {
	case RoleProducer:
		return c.sendPeer != nil
	case RoleConsumer:
		return c.recvPeer != nil
	}
	return false
}

// Close frees this handle's peer records (PROTOCOL.md §11.3 leave). The handle stays usable,
// unregistered. Close channels before their Segment.
func (c *Channel) Close() error {
	for _, slot := range []*unsafe.Pointer{&c.sendPeer, &c.recvPeer} {
		r := *slot
		*slot = nil
		if r == nil {
			continue
		}
		store32(r, peerIntentCount, 0)
		// A free record keeps no start time, so the next owner's record never shows its pid
		// with a stale start time (which would look like a reused pid).
		store64(r, peerStartTime, 0)
		store32(r, peerPid, 0)
	}
	return nil
}

// intentSet names positions [position, position+n) before a claiming CAS (§11.4).
func intentSet(r unsafe.Pointer, position, n uint64) {
	store64(r, peerIntentPosition, position)
	store32(r, peerIntentCount, uint32(n))
}

// intentClear ends the intent after the last publish or free.
func intentClear(r unsafe.Pointer) {
	if r != nil {
		store32(r, peerIntentCount, 0)
	}
}

type liveIntent struct {
	position uint64
	count    uint32
}

// liveIntents snapshots the intents of live records of role on this channel, except skip.
func (c *Channel) liveIntents(table, skip unsafe.Pointer, role uint16, me uint32) []liveIntent {
	var live []liveIntent
	for i := 0; i < PeerRecords; i++ {
		o := c.record(table, i)
		if o == skip {
			continue
		}
		pid := load32(o, peerPid)
		if pid == 0 || load32(o, peerChannelID) != c.geom.ID || uint16(load32(o, peerRuntimeRole)>>16) != role {
			continue
		}
		count := load32(o, peerIntentCount)
		if count == 0 {
			continue
		}
		position := load64(o, peerIntentPosition)
		if pid != me && PeerDead(pid, load64(o, peerStartTime)) {
			continue
		}
		live = append(live, liveIntent{position, count})
	}
	return live
}

// Recover repairs what dead peers left on this channel (PROTOCOL.md §11.6): each dead
// registrant's record is taken over by CAS; a position of its intent still claimed and
// unpublished (a producer's) gets a LOST tombstone, one still claimed and unfreed (a
// consumer's) is freed, unless a live peer's intent covers it; then the record is freed.
// Records of other channels are left alone. Blocking sends and receives run it by themselves
// once the channel has been stuck for StuckGrace; tools may call it at any time.
func (c *Channel) Recover() (RecoverReport, error) {
	var report RecoverReport
	table, err := c.peerTable(false)
	if err != nil || table == nil {
		return report, err
	}
	me := uint32(os.Getpid())
	var myStart uint64
	haveStart := false
	wakeConsumers, wakeProducers := false, false
	capacity := c.geom.Capacity
	for i := 0; i < PeerRecords; i++ {
		d := c.record(table, i)
		deadPid := load32(d, peerPid)
		if deadPid == 0 || deadPid == me || load32(d, peerChannelID) != c.geom.ID {
			continue // free, ours (alive), or another channel's
		}
		if !PeerDead(deadPid, load64(d, peerStartTime)) {
			continue
		}
		if !cas32(d, peerPid, deadPid, me) {
			continue // someone else repairs it
		}
		if !haveStart {
			myStart, haveStart = ProcessStartTime(me), true
		}
		store64(d, peerStartTime, myStart) // d is now ours
		report.RecordsFreed++
		runtimeRole := load32(d, peerRuntimeRole)
		role, runtime := uint16(runtimeRole>>16), uint16(runtimeRole)
		n := uint64(load32(d, peerIntentCount))
		p0 := load64(d, peerIntentPosition)
		if n > capacity {
			n = capacity
		}
		producer := role == uint16(RoleProducer)
		if n != 0 && (producer || role == uint16(RoleConsumer)) {
			// The cursor first: every claim it shows happened before, so the claimant's
			// intent (written before its CAS) is in the snapshot of live intents taken next.
			cursorOff := uintptr(entHead)
			if producer {
				cursorOff = entTail
			}
			cursor := load64(c.entry, cursorOff)
			live := c.liveIntents(table, d, role, me)
			k0 := uint64(0)
			// Only the last lap before the cursor can hold a stuck claim.
			if behind := int64(cursor - p0); behind > 0 && uint64(behind) > capacity {
				k0 = uint64(behind) - capacity
			}
			for k := k0; k < n; k++ {
				p := p0 + k
				if int64(cursor-p) <= 0 {
					break // not claimed (yet): not stuck
				}
				if covered(live, p) {
					continue // a live peer owns p
				}
				slot := c.slot(p)
				seq := load64(slot, slotSequence)
				if producer && seq == p {
					store64(slot, slotMessageID, p)
					store64(slot, slotTimestamp, 0)
					store32(slot, slotChannelID, c.geom.ID)
					store32(slot, slotMessageType, 0)
					store32(slot, slotSenderPid, deadPid)
					store32(slot, slotRuntimeFlags, uint32(runtime)|uint32(FlagLost)<<16)
					store32(slot, slotPayloadLen, 0)
					store32(slot, slotMetaPad, 0)
					store64(slot, slotSequence, p+1) // the tombstone
					report.Lost++
					wakeConsumers = true
				} else if !producer && seq == p+1 {
					store64(slot, slotSequence, p+capacity)
					report.Freed++
					wakeProducers = true
				}
			}
		}
		store32(d, peerIntentCount, 0)
		store64(d, peerStartTime, 0)
		store32(d, peerPid, 0) // free again
	}
	if wakeConsumers {
		c.notifyConsumers()
	}
	if wakeProducers {
		c.notifyProducers()
	}
	return report, nil
}

func covered(live []liveIntent, p uint64) bool {
	for _, l := range live {
		if p-l.position < uint64(l.count) { // wrapping: position <= p < position+count
			return true
		}
	}
	return false
}

// stuckTracker follows how long a blocked caller has seen the channel stuck at one position.
type stuckTracker struct {
	tracking bool
	position uint64
	since    time.Time
}

// looksStuck: for a receiver, nothing published at head while tail is past it; for a sender,
// the slot at tail holds a message a consumer claimed (head is past it) and never freed.
func (c *Channel) looksStuck(forSend bool) (uint64, bool) {
	if !forSend {
		head := load64(c.entry, entHead)
		seq := load64(c.slot(head), slotSequence)
		tail := load64(c.entry, entTail)
		return head, seq == head && int64(tail-head) > 0
	}
	tail := load64(c.entry, entTail)
	prev := tail - c.geom.Capacity
	seq := load64(c.slot(tail), slotSequence)
	head := load64(c.entry, entHead)
	return prev, seq == prev+1 && int64(head-prev) > 0
}

// step runs before a blocked caller sleeps: once the channel has been stuck at one position
// for StuckGrace it runs Recover (again at every re-check while it stays stuck), and it caps
// the next sleep at StuckGrace while stuck.
func (st *stuckTracker) step(c *Channel, forSend bool, slice time.Duration) time.Duration {
	position, stuck := c.looksStuck(forSend)
	if !stuck {
		st.tracking = false
		return slice
	}
	now := time.Now()
	if !st.tracking || st.position != position {
		st.tracking, st.position, st.since = true, position, now
	} else if now.Sub(st.since) >= StuckGrace {
		_, _ = c.Recover()
	}
	if slice > StuckGrace {
		slice = StuckGrace
	}
	return slice
}
