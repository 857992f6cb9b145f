package dmxp

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Peers and crash recovery (PROTOCOL.md §11).

// StuckGrace is how long a sender or receiver lets the channel stay stuck at one position
// before it runs Recover. While the channel stays stuck there, the pause before the next pass
// doubles each time, up to 160 ms.
const StuckGrace = 10 * time.Millisecond

// RecoverReport says what Recover did.
type RecoverReport struct {
	// RecordsFreed is the number of dead peers' records taken over and freed.
	RecordsFreed int
	// Lost is the number of LOST tombstones published for positions of dead producers (one
	// per message: a run's first position, PROTOCOL.md §12.5).
	Lost uint64
	// Skipped is the number of SKIP markers published for the unpublished continuations of
	// runs of dead producers (§12.5): parts of a message counted once in Lost.
	Skipped uint64
	// Freed is the number of slots freed for positions claimed by dead consumers.
	Freed uint64
	// RecordsDeferred is the number of dead peers' records given back unrepaired (or partly
	// repaired) because another record's intent covers one of their stuck positions; a later
	// pass retries them.
	RecordsDeferred int
	// BlobsReclaimed is the number of blob-pool blocks the freed records owned (loaned or
	// held, PROTOCOL.md §13.6 rule 1), given back to the pool.
	BlobsReclaimed int
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

// PidNamespace is the pid namespace of this process: the inode of /proc/self/ns/pid, or 0
// when it cannot be read. Peer records carry it (pid_ns, PROTOCOL.md §11.2) so that a checker
// never judges a pid it cannot see.
func PidNamespace() uint64 {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/pid", &st); err != nil {
		return 0
	}
	return st.Ino
}

// identity is what this process registers with and repairs as (PROTOCOL.md §11.5).
type identity struct {
	pid   uint32
	start uint64 // 0: unknown
	pidNS uint64 // 0: unknown
}

// ownID caches this process's identity together with the pid it was read for: a process
// with another pid (a child forked after the cache was filled) reads its own.
var ownID struct {
	sync.Mutex
	id identity
}

// ownIdentity is this process's pid, start time and pid namespace, read again whenever
// os.Getpid() differs from the pid they were read for.
func ownIdentity() identity {
	pid := uint32(os.Getpid())
	ownID.Lock()
	defer ownID.Unlock()
	if ownID.id.pid != pid {
		ownID.id = identity{pid: pid, start: ProcessStartTime(pid), pidNS: PidNamespace()}
	}
	return ownID.id
}

// PeerDead applies the liveness rules of PROTOCOL.md §11.5 to a record naming pid and
// startTime: dead when kill(pid, 0) fails with ESRCH, when the process is a zombie, or when
// startTime is non-zero and differs from the start time of the process now at pid (the pid
// was reused). EPERM from kill means alive. It does not apply the rules for the checker's
// own pid and for records of another pid namespace (those are alive), which Recover does.
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

// judgeable is false for a record this process cannot judge: one of another pid namespace
// (its pid means another process here, or none), which counts as alive. A record without a
// namespace (0: a client that does not record it) is judged by its pid, and so is every
// record when this process cannot read its own namespace (as the Rust client does: a
// misjudged owner learns it by revocation, while a channel nobody repairs stays stuck).
func (me identity) judgeable(pidNS uint64) bool {
	return pidNS == 0 || me.pidNS == 0 || pidNS == me.pidNS
}

// verdicts is the liveness of the records one repair pass has judged: each record is judged
// once per pass, for the owner it showed then. A record seen later with another owner (it
// changed hands meanwhile: a new registrant, or a peer taking it over) counts as alive.
// There is room for one verdict per record of the segment's table (Segment.PeerRecords),
// allocated when the pass judges its first record.
type verdicts struct {
	me      identity
	records int
	seen    []verdict
}

// verdict is what a pass found for one record.
type verdict struct {
	judged, dead bool
	pid          uint32
	start, pidNS uint64
}

// newVerdicts starts the judgements of one pass over a table of records records, judged by me.
func newVerdicts(me identity, records int) *verdicts {
	return &verdicts{me: me, records: records}
}

// dead judges record i (below the table's records), which shows pid, start and pidNS.
func (v *verdicts) dead(i int, pid uint32, start, pidNS uint64) bool {
	if v.seen == nil {
		v.seen = make([]verdict, v.records)
	}
	s := &v.seen[i]
	if s.judged {
		return s.dead && s.pid == pid && s.start == start && s.pidNS == pidNS
	}
	s.judged, s.pid, s.start, s.pidNS = true, pid, start, pidNS
	s.dead = pid != 0 && pid != v.me.pid && v.me.judgeable(pidNS) && PeerDead(pid, start)
	runHook(hookJudged, uint64(i))
	return s.dead
}

func (c *Channel) record(table unsafe.Pointer, i int) unsafe.Pointer {
	return unsafe.Add(table, i*PeerRecordSize)
}

// records is the number of records of the peer table, as this attachment validated it.
func (c *Channel) records() int { return c.seg.PeerRecords() }

// peerTable locates the peer table, installing it first when install is set and there is
// none (PROTOCOL.md §11.1); it validates the offset's range and that no band overlaps it,
// for a table of the attachment's records. A nil pointer with a nil error means there is no
// table.
func (c *Channel) peerTable(install bool) (unsafe.Pointer, error) {
	s := c.seg
	size := s.peerTableLen()
	table := load64(s.base, offPeerTableOffset)
	if table == 0 {
		if !install {
			return nil, nil
		}
		start, err := s.reserveBytes(size)
		if err != nil {
			return nil, err
		}
		zeroWords(s.base, uintptr(start), uintptr(size))
		// Go's CAS is sequentially consistent: the zeroed records are visible to whoever sees
		// the offset. A loser uses the winner's table; its own bytes stay unused.
		if cas64(s.base, offPeerTableOffset, 0, start) {
			table = start
		} else {
			table = load64(s.base, offPeerTableOffset)
		}
	}
	if table == 0 { // installed by another peer, then zeroed
		return nil, peerTableOutOfRange(table, size, s.length)
	}
	if err := s.checkPeerTable(table, s.Channels()); err != nil {
		return nil, err
	}
	return unsafe.Add(s.base, table), nil
}

// Register records this handle in the segment's peer table (PROTOCOL.md §11.3) as a producer
// or a consumer, so that a position it claimed is repaired (a LOST tombstone, or a freed slot)
// if this process dies before publishing or freeing it. Call it once per role; the first
// registration on a segment carves the table (Segment.PeerRecords records of 64 bytes: 16 KiB
// by default, see Options.PeerRecords) from the band area. The record names
// this process by pid, start time and pid namespace, read for the calling process. Before it
// takes a record, it frees the records of dead peers that hold no intent (PROTOCOL.md §11.10),
// giving back the wait counts they died in (§11.9).
//
// A registered handle blocked in a send or receive names, in its record, the wait count it is
// in; whoever frees the record after this process dies takes the count down.
//
// The record also owns the handle's blob loans (LoanBlob, as a producer) and the blobs it
// holds (ReceiveBlob, as a consumer): whoever frees the record after this process dies gives
// those blocks back to the pool (PROTOCOL.md §13.6).
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
	var shown, owner *uint32
	switch role {
	case RoleProducer:
		slot, shown, owner = &c.sendPeer, &c.sendFlagsShown, &c.sendOwner
	case RoleConsumer:
		slot, shown, owner = &c.recvPeer, &c.recvFlagsShown, &c.recvOwner
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
	me := ownIdentity()
	c.sweep(table, me)
	for i, n := 0, c.records(); i < n; i++ {
		r := c.record(table, i)
		if !cas32(r, peerPid, 0, me.pid) {
			continue
		}
		store32(r, peerRuntimeRole, uint32(RuntimeGo)|uint32(role)<<16)
		store32(r, peerChannelID, c.geom.ID)
		store32(r, peerIntentCount, 0)
		store32(r, peerIntentFlags, 0)
		store64(r, peerIntentPosition, 0)
		store32(r, peerWaiting, waitingNone)
		store64(r, peerPidNS, me.pidNS)
		store64(r, peerStartTime, me.start) // last: 0 until then means "unknown"
		*slot, *shown, *owner = r, 0, uint32(i)+1
		return nil
	}
	return ErrPeerTableFull
}

// sweep frees the records of dead peers that hold no intent (PROTOCOL.md §11.10), whatever
// their channel, so that records of peers killed while idle do not pile up until the table is
// full: each is taken over by CAS as a repair does (takeover, §11.6), its wait count is given
// back (§11.9), and it is freed. A record that shows an intent once taken over belongs to a
// live owner after all (only an owner writes one): it is given back untouched. A record with
// an intent is left to the repair of its channel. Each record is judged at most once (one
// kill and one read of /proc/<pid>/stat), by the rules of §11.5. It returns how many records
// it freed.
func (c *Channel) sweep(table unsafe.Pointer, me identity) int {
	judge := newVerdicts(me, c.records())
	freed := 0
	for i, n := 0, c.records(); i < n; i++ {
		d := c.record(table, i)
		pid := load32(d, peerPid)
		if pid == 0 || pid == me.pid || load32(d, peerIntentCount) != 0 {
			continue // free, ours, or left to a repair
		}
		start, pidNS := load64(d, peerStartTime), load64(d, peerPidNS)
		if !judge.dead(i, pid, start, pidNS) {
			continue
		}
		cas64(d, peerStartTime, start, 0) // takeover: our pid never beside its start time
		if !cas32(d, peerPid, pid, me.pid) {
			continue // someone else took it, or it changed hands
		}
		runHook(hookSweepTakenOver, uint64(i))
		if load32(d, peerIntentCount) != 0 {
			// Only a live owner writes an intent: misjudged. Back to it as it was.
			store64(d, peerStartTime, start)
			store32(d, peerPid, pid)
			continue
		}
		c.seg.giveBackWait(d)
		c.seg.reclaimBlobOwner(uint32(i) + 1) // its blocks, while it is still held (§13.6)
		store32(d, peerIntentFlags, 0)
		store64(d, peerPidNS, 0)
		store64(d, peerStartTime, 0)
		store32(d, peerPid, 0) // free again
		freed++
	}
	return freed
}

// giveBackWait undoes the wait count that dead record d, about to be freed by this process,
// is counted in (PROTOCOL.md §11.9): the waiting word names it (1: not_empty_waiters, 2:
// not_full_waiters of d's channel_id). Whoever wins the word by CAS (this freer, or the owner
// waking up, with its swap, when it was misjudged dead) takes the count down, so each
// increment is undone once; the count never goes below 0. The counts sit in the header's
// channel table, so any channel id below 256 is in the segment, opened or not. A value other
// than 0, 1 or 2 (or a channel id of 256 or more) has nothing to give back and is cleared.
// True when a count was given back.
func (s *Segment) giveBackWait(d unsafe.Pointer) bool {
	kind := load32(d, peerWaiting)
	if kind == waitingNone {
		return false
	}
	id := load32(d, peerChannelID)
	if (kind != waitingNotEmpty && kind != waitingNotFull) || id >= MaxChannels {
		store32(d, peerWaiting, waitingNone) // garbage: nothing to give back
		return false
	}
	if !cas32(d, peerWaiting, kind, waitingNone) {
		return false // the owner took itself out of the count meanwhile
	}
	off := uintptr(entNotEmptyWaiters)
	if kind == waitingNotFull {
		off = entNotFullWaiters
	}
	entry := s.entry(id)
	for i := 0; i < retryLimit; i++ {
		n := load32(entry, off)
		if n == 0 {
			break // never below 0
		}
		if cas32(entry, off, n, n-1) {
			break
		}
	}
	return true
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

// Close frees this handle's peer records (PROTOCOL.md §11.3 leave), each only if it still
// names this process: a record that shows another pid belongs to someone else (the process
// that registered it, when this one inherited the handle, or a peer that took it over) and is
// left alone. The handle stays usable, unregistered. Close channels before their Segment.
//
// Blob loans and views of the handle still outstanding are given back to the pool first
// (PROTOCOL.md §13.6: a client that closes a handle releases or abandons its blocks): a later
// Commit of such a loan, or Release of such a view, reports ErrRevoked.
func (c *Channel) Close() error {
	me := uint32(os.Getpid())
	if atomic.LoadInt64(&c.blobsOut) > 0 {
		if c.sendPeer != nil && load32(c.sendPeer, peerPid) == me {
			c.seg.reclaimBlobOwner(c.sendOwner)
		}
		if c.recvPeer != nil && load32(c.recvPeer, peerPid) == me {
			c.seg.reclaimBlobOwner(c.recvOwner)
		}
	}
	c.sendOwner, c.recvOwner = 0, 0
	c.sendFlagsShown, c.recvFlagsShown = 0, 0
	for _, slot := range []*unsafe.Pointer{&c.sendPeer, &c.recvPeer} {
		r := *slot
		*slot = nil
		if r == nil || load32(r, peerPid) != me {
			continue
		}
		store32(r, peerIntentCount, 0)
		store32(r, peerIntentFlags, 0)
		store32(r, peerWaiting, waitingNone)
		// A free record keeps no start time, so the next owner's record never shows its pid
		// with a stale start time (which would look like a reused pid).
		store64(r, peerStartTime, 0)
		store64(r, peerPidNS, 0)
		cas32(r, peerPid, me, 0)
	}
	return nil
}

// intentSet names positions [position, position+n) before a claiming CAS (§11.4), with
// intent_flags (intentFlagRun for a run, else 0, §12.5) stored before the count. *shown is
// what this handle last stored in the record's intent_flags: the field is stored only when it
// changes, so that single positions and batches (flags 0, the common case) store position and
// count alone. intent_flags is still RUN exactly while the intent is a run, the rule of §12.5.
func intentSet(r unsafe.Pointer, shown *uint32, position, n uint64, flags uint32) {
	store64(r, peerIntentPosition, position)
	if flags != *shown {
		store32(r, peerIntentFlags, flags)
		*shown = flags
	}
	store32(r, peerIntentCount, uint32(n))
}

// intentClear ends the intent after the last publish or free, and its flags with it (after
// the count, §12.5; only when they are not 0 already, see intentSet).
func intentClear(r unsafe.Pointer, shown *uint32) {
	if r != nil {
		store32(r, peerIntentCount, 0)
		if *shown != 0 {
			store32(r, peerIntentFlags, 0)
			*shown = 0
		}
	}
}

// Recover repairs what dead peers left on this channel (PROTOCOL.md §11.6). Each dead
// registrant's record is taken over by CAS. A position of its intent that is still claimed
// and unpublished (a producer's) gets a LOST tombstone, one still claimed and unfreed (a
// consumer's) is freed; then the record is freed. A position that another record's intent
// also covers (a live peer's, or a dead one earlier in the table, whose own repair handles
// it) is left alone, and the record is given back to its dead owner for a later pass
// (RecordsDeferred). Dead records of other channels are freed when they hold no intent and
// left alone otherwise. A freed record's wait count (a peer killed while blocked) is given
// back (PROTOCOL.md §11.9). Liveness is judged once per record per pass; a record of another
// pid namespace counts as alive.
//
// Blocking sends and receives run it by themselves once the channel has been stuck for
// StuckGrace, and so do non-blocking ones after a streak of misses; tools may call it at any
// time. A live owner of a repaired position learns it by ErrRevoked. Recover judges owners by
// liveness only: a position held by a live peer that has stopped is left to the unblock
// timeout (Channel.SetUnblockTimeout).
func (c *Channel) Recover() (RecoverReport, error) {
	var report RecoverReport
	table, err := c.peerTable(false)
	if err != nil || table == nil {
		return report, err
	}
	judge := newVerdicts(ownIdentity(), c.records())
	me := judge.me
	wakeConsumers, wakeProducers := false, false
	for i, n := 0, c.records(); i < n; i++ {
		d := c.record(table, i)
		deadPid := load32(d, peerPid)
		if deadPid == 0 || deadPid == me.pid {
			continue // free, or ours (alive)
		}
		if load32(d, peerChannelID) != c.geom.ID && load32(d, peerIntentCount) != 0 {
			continue // another channel's intent: not ours to judge
		}
		start, pidNS := load64(d, peerStartTime), load64(d, peerPidNS)
		if !judge.dead(i, deadPid, start, pidNS) {
			continue
		}
		// Takeover: whoever reads our pid here next must not find the dead owner's start
		// time beside it (it would judge us dead too).
		cas64(d, peerStartTime, start, 0)
		if !cas32(d, peerPid, deadPid, me.pid) {
			continue // someone else repairs it, or it changed hands
		}
		store64(d, peerStartTime, me.start) // d is now ours
		store64(d, peerPidNS, me.pidNS)
		deferred := false
		if n := load32(d, peerIntentCount); n != 0 {
			if load32(d, peerChannelID) != c.geom.ID {
				deferred = true // its channel changed meanwhile: not ours to repair
			} else {
				lost, skipped, freed, covered := c.repairIntent(table, judge, i, d, deadPid, n)
				report.Lost += lost
				report.Skipped += skipped
				report.Freed += freed
				wakeConsumers = wakeConsumers || lost != 0 || skipped != 0
				wakeProducers = wakeProducers || freed != 0
				deferred = covered
			}
		}
		if deferred {
			// Back to its dead owner, intent intact, for a later pass.
			store64(d, peerPidNS, pidNS)
			store64(d, peerStartTime, start)
			store32(d, peerPid, deadPid)
			report.RecordsDeferred++
			continue
		}
		c.seg.giveBackWait(d) // the wait count it died in, if any (§11.9)
		// The blocks it owned, while it is still held (PROTOCOL.md §13.6 rule 1).
		report.BlobsReclaimed += c.seg.reclaimBlobOwner(uint32(i) + 1)
		store32(d, peerIntentCount, 0)
		store32(d, peerIntentFlags, 0)
		store64(d, peerStartTime, 0)
		store64(d, peerPidNS, 0)
		store32(d, peerPid, 0) // free again
		report.RecordsFreed++
	}
	if wakeConsumers {
		c.notifyConsumers()
	}
	if wakeProducers {
		c.notifyProducers()
	}
	return report, nil
}

// repairIntent repairs the stuck positions of the intent of dead record d (index i, taken
// over by this process), n positions long. covered reports a stuck position left alone
// because another intent covers it.
//
// A producer's intent with intentFlagRun is one run (PROTOCOL.md §12.5): its first position
// p0 is the message and the others parts of it, so the stuck ones among p0+1.. get SKIP
// markers first, in order, then p0 the LOST tombstone: one loss per run.
func (c *Channel) repairIntent(table unsafe.Pointer, judge *verdicts, i int, d unsafe.Pointer, deadPid, n uint32) (lost, skipped, freed uint64, covered bool) {
	capacity := c.geom.Capacity
	count := uint64(n)
	if count > capacity {
		count = capacity
	}
	p0 := load64(d, peerIntentPosition)
	runtimeRole := load32(d, peerRuntimeRole)
	role, runtime := uint16(runtimeRole>>16), uint16(runtimeRole)
	var cursorOff uintptr
	switch Role(role) {
	case RoleProducer:
		cursorOff = entTail
	case RoleConsumer:
		cursorOff = entHead
	default:
		return 0, 0, 0, false // no cursor to repair against: the record is just freed
	}
	producer := Role(role) == RoleProducer
	run := producer && load32(d, peerIntentFlags)&intentFlagRun != 0
	// The cursor first: every claim it shows happened before, so the claimant's intent
	// (written before its CAS) is visible to the scan of intents below.
	cursor := load64(c.entry, cursorOff)
	for j := uint64(0); j < count; j++ {
		k := j
		if run {
			k = (j + 1) % count // p0+1 .. p0+count-1, then p0
		}
		p := p0 + k
		if behind := cursor - p; behind == 0 || behind > capacity {
			continue // not claimed (yet), or not in the last lap
		}
		stuck := p
		if !producer {
			stuck = p + 1
		}
		slot := c.slot(p)
		if load64(slot, slotSequence) != stuck {
			continue
		}
		if c.coveredElsewhere(table, judge, i, role, p) {
			covered = true
			continue
		}
		if load64(slot, slotSequence) != stuck {
			continue // its owner finished meanwhile
		}
		// The repair's own store is a CAS from the stuck state too: an owner that was alive
		// after all and finishes now wins, and a sequence is never moved back.
		switch {
		case producer && run && k != 0:
			if c.publishMarker(p, FlagSkip, 0, 0) { // a part of the run's message
				skipped++
			}
		case producer:
			if c.publishMarker(p, FlagLost, deadPid, runtime) { // the tombstone
				lost++
			}
		case cas64(slot, slotSequence, p+1, p+capacity):
			freed++
		}
	}
	return lost, skipped, freed, covered
}

// publishMarker writes a SKIP marker or a LOST tombstone (flag) at the unpublished position
// p and publishes it by CAS from p (PROTOCOL.md §6.4, §11.6): message_id p, this channel,
// payload_len 0, no run fields; a tombstone names the producer (pid, runtime), a marker
// nobody. False when p was no longer unpublished (its owner published it, or another repair
// settled it).
func (c *Channel) publishMarker(p uint64, flag uint16, pid uint32, runtime uint16) bool {
	slot := c.slot(p)
	if load64(slot, slotSequence) != p {
		return false
	}
	store64(slot, slotMessageID, p)
	store64(slot, slotTimestamp, 0)
	store32(slot, slotChannelID, c.geom.ID)
	store32(slot, slotMessageType, 0)
	store32(slot, slotSenderPid, pid)
	store32(slot, slotRuntimeFlags, uint32(runtime)|uint32(flag)<<16)
	store32(slot, slotPayloadLen, 0)
	store32(slot, slotMetaPad, 0)
	store64(slot, slotRunSlots, 0) // run_slots and run_index
	return cas64(slot, slotSequence, p, p+1)
}

// coveredElsewhere is true when a record other than index i, of this channel and role, has
// an intent covering p and either comes before i in the table (its own repair handles p) or
// is not dead (it owns p, or is about to find that its claim failed).
func (c *Channel) coveredElsewhere(table unsafe.Pointer, judge *verdicts, i int, role uint16, p uint64) bool {
	for j, n := 0, c.records(); j < n; j++ {
		if j == i {
			continue
		}
		e := c.record(table, j)
		pid := load32(e, peerPid)
		if pid == 0 {
			continue
		}
		count := load32(e, peerIntentCount)
		position := load64(e, peerIntentPosition)
		if count == 0 || p-position >= uint64(count) || // wrapping: position <= p < position+count
			load32(e, peerChannelID) != c.geom.ID || uint16(load32(e, peerRuntimeRole)>>16) != role {
			continue
		}
		if j < i || !judge.dead(j, pid, load64(e, peerStartTime), load64(e, peerPidNS)) {
			return true
		}
	}
	return false
}

// ------------------------------------------------------------------ stuck channels

// missThreshold is how many non-blocking calls in a row must find the ring full (or empty)
// before they look for a stuck position. Looking reads the other side's cursor; done on
// every miss, a handle spinning on a full or empty ring would pull that cache line away from
// the other side at each of its claims.
const missThreshold = 64

// missStreak counts non-blocking calls in a row that found the ring full (or empty).
type missStreak struct{ n uint32 }

// miss counts a miss; true once the streak is long enough to look for a stuck position.
func (m *missStreak) miss() bool {
	if atomic.LoadUint32(&m.n) >= missThreshold {
		return true
	}
	return atomic.AddUint32(&m.n, 1) >= missThreshold
}

// hit ends the streak: a call that did not find the ring full (or empty).
func (m *missStreak) hit() {
	if atomic.LoadUint32(&m.n) != 0 {
		atomic.StoreUint32(&m.n, 0)
	}
}

// stuckWatch is the stuck tracker of a handle's non-blocking calls, which may come from
// several goroutines (an unregistered handle).
type stuckWatch struct {
	mu sync.Mutex
	st stuckTracker
}

// repairIfStuck looks for a stuck position and, when the tracker says a pass is due, runs it
// (see stuckTracker.act); true when something was repaired (worth another attempt). A
// goroutine that finds another one looking meanwhile does not look.
// A sender passes the number of free slots its message needs (need, 1 for one slot).
func (c *Channel) repairIfStuck(forSend bool, need uint64) bool {
	w := &c.recvWatch
	if forSend {
		w = &c.sendWatch
	}
	if !w.mu.TryLock() {
		return false
	}
	defer w.mu.Unlock()
	w.st.need = need
	return w.st.act(c, forSend)
}

// maxRecheck is the longest pause between two repair passes over a channel that stays stuck
// at one position.
const maxRecheck = 160 * time.Millisecond

// stuckTracker follows how long a caller has seen the channel stuck at one position, and when
// it is next due for a repair pass. A position is claimed once, so stuck at p seen twice means
// stuck at p all along in between.
type stuckTracker struct {
	// need is the number of free slots the caller's send waits for (a run's positions; 0 or
	// 1 for one slot, and for receivers).
	need     uint64
	tracking bool
	position uint64
	since    time.Time     // when the channel was first seen stuck at position
	next     time.Time     // when the next pass is due
	pause    time.Duration // the pause before the next pass: StuckGrace, doubling to maxRecheck
}

// stuckAt: for a receiver, nothing published at head while tail is past it (the position is
// head); for a sender, the slot at tail holds a message a consumer claimed (head is past it)
// and never freed (the position is tail - capacity). A sender that needs need > 1 free
// slots (a run) looks at the first of tail .. tail+need-1 that is not free instead of tail.
func (c *Channel) stuckAt(forSend bool, need uint64) (uint64, bool) {
	if !forSend {
		head := load64(c.entry, entHead)
		seq := load64(c.slot(head), slotSequence)
		tail := load64(c.entry, entTail)
		return head, seq == head && int64(tail-head) > 0
	}
	tail := load64(c.entry, entTail)
	if need > c.geom.Capacity {
		need = c.geom.Capacity
	}
	at := tail
	for i := uint64(1); i < need && load64(c.slot(at), slotSequence) == at; i++ {
		at++
	}
	prev := at - c.geom.Capacity
	seq := load64(c.slot(at), slotSequence)
	head := load64(c.entry, entHead)
	return prev, seq == prev+1 && int64(head-prev) > 0
}

// looksStuck is stuckAt, counted in stuckLooks.
func (c *Channel) looksStuck(forSend bool, need uint64) (uint64, bool) {
	atomic.AddUint64(&c.stuckLooks, 1)
	return c.stuckAt(forSend, need)
}

// schedule sets when the next pass is due: pause after now, or sooner when the unblock
// timeout of the watched position falls before that.
func (st *stuckTracker) schedule(now time.Time, unblock time.Duration) {
	st.next = now.Add(st.pause)
	if unblock > 0 {
		if at := st.since.Add(unblock); at.After(now) && at.Before(st.next) {
			st.next = at
		}
	}
}

// act looks at the channel and, when a pass is due, runs it; true when it repaired something.
// A position first seen stuck is due after StuckGrace; a pass runs Recover (dead peers,
// PROTOCOL.md §11.6) and, once the position has been stuck for the channel's unblock timeout,
// unblocks it if Recover did not (a holder alive but stopped, §11.8). A pass that leaves the
// position stuck doubles the pause before the next one, up to maxRecheck.
func (st *stuckTracker) act(c *Channel, forSend bool) bool {
	position, stuck := c.looksStuck(forSend, st.need)
	if !stuck {
		st.tracking = false
		return false
	}
	now := time.Now()
	unblock := c.UnblockTimeout()
	if !st.tracking || st.position != position {
		st.tracking, st.position, st.since, st.pause = true, position, now, StuckGrace
		st.schedule(now, unblock)
		return false
	}
	if now.Before(st.next) {
		return false
	}
	atomic.AddUint64(&c.repairPasses, 1)
	report, err := c.Recover()
	repaired := err == nil && (report.Lost != 0 || report.Skipped != 0 || report.Freed != 0)
	if !repaired && unblock > 0 && now.Sub(st.since) >= unblock {
		repaired = c.unblock(position, forSend, st.need)
	}
	if !repaired {
		st.pause *= 2
		if st.pause > maxRecheck {
			st.pause = maxRecheck
		}
		st.schedule(time.Now(), unblock)
	}
	return repaired
}

// step runs before a blocked caller sleeps: act, then cap the next sleep so that the caller
// wakes when the next pass is due while the channel is stuck.
func (st *stuckTracker) step(c *Channel, forSend bool, slice time.Duration) time.Duration {
	if st.act(c, forSend) {
		return 0 // something moved: try again at once
	}
	if st.tracking {
		if due := time.Until(st.next); due < slice {
			slice = due
		}
	}
	return slice
}

// unblock repairs position p, which has stayed stuck for the unblock timeout although its
// holder is alive (or was not judged dead), if the channel is still stuck there (PROTOCOL.md
// §11.8). For a receiver, p is a producer's claim: it gets a LOST tombstone, published by CAS
// p -> p+1 as Recover does. For a sender, p is a consumer's claim: its slot is freed by CAS
// p+1 -> p+capacity. The holder's peer record is neither taken over nor freed (it lives): it
// learns of the repair by revocation (ErrRevoked) when it finishes. The other side is woken.
// When a peer record shows that p belongs to a run its holder claimed (a run intent,
// PROTOCOL.md §12.5), the whole run is repaired at once (unblockRun). need is the number of
// free slots the sender waits for (stuckAt). True when the position was repaired.
func (c *Channel) unblock(p uint64, forSend bool, need uint64) bool {
	if at, stuck := c.stuckAt(forSend, need); !stuck || at != p {
		return false // moved since it was judged
	}
	role := RoleProducer
	if forSend {
		role = RoleConsumer
	}
	if p0, n, ok := c.runIntentCovering(p, role); ok {
		return c.unblockRun(p0, n, forSend)
	}
	if forSend {
		if !cas64(c.slot(p), slotSequence, p+1, p+c.geom.Capacity) {
			return false
		}
		c.notifyProducers()
		return true
	}
	// The holder is not known: the tombstone names nobody.
	if !c.publishMarker(p, FlagLost, 0, 0) {
		return false // its producer published meanwhile: its message stands
	}
	c.notifyConsumers()
	return true
}

// runIntentCovering finds a peer record of this channel and role whose intent is a run
// (intentFlagRun) covering position p: the run p belongs to, positions p0 .. p0+n-1 (n at
// most the capacity). ok is false when there is none (or no peer table).
func (c *Channel) runIntentCovering(p uint64, role Role) (p0, n uint64, ok bool) {
	table, err := c.peerTable(false)
	if err != nil || table == nil {
		return 0, 0, false
	}
	for j, records := 0, c.records(); j < records; j++ {
		e := c.record(table, j)
		if load32(e, peerPid) == 0 {
			continue
		}
		count := uint64(load32(e, peerIntentCount))
		if count == 0 || load32(e, peerIntentFlags)&intentFlagRun == 0 ||
			load32(e, peerChannelID) != c.geom.ID || Role(load32(e, peerRuntimeRole)>>16) != role {
			continue
		}
		position := load64(e, peerIntentPosition)
		if count > c.geom.Capacity {
			count = c.geom.Capacity
		}
		if p-position < count { // wrapping: position <= p < position+count
			return position, count, true
		}
	}
	return 0, 0, false
}

// unblockRun repairs the run p0 .. p0+n-1 a live but stopped peer holds (PROTOCOL.md §11.8
// with §12.5), all of it at once rather than one unblock timeout per slot. A producer's run
// (a receiver unblocking): its unpublished continuations get SKIP markers, in order, then its
// first position the LOST tombstone, one loss. A consumer's run (a sender unblocking): every
// position still claimed is freed. Only positions claimed in the last lap and still in the
// stuck state are touched, each by CAS from it. True when something was repaired.
func (c *Channel) unblockRun(p0, n uint64, forSend bool) bool {
	capacity := c.geom.Capacity
	cursor := load64(c.entry, entTail)
	if forSend {
		cursor = load64(c.entry, entHead)
	}
	repaired := false
	for j := uint64(0); j < n; j++ {
		k := j
		if !forSend {
			k = (j + 1) % n // p0+1 .. p0+n-1, then p0
		}
		q := p0 + k
		if behind := cursor - q; behind == 0 || behind > capacity {
			continue // not claimed, or not in the last lap
		}
		switch {
		case forSend:
			repaired = cas64(c.slot(q), slotSequence, q+1, q+capacity) || repaired
		case k != 0:
			repaired = c.publishMarker(q, FlagSkip, 0, 0) || repaired
		default:
			repaired = c.publishMarker(q, FlagLost, 0, 0) || repaired
		}
	}
	if repaired {
		if forSend {
			c.notifyProducers()
		} else {
			c.notifyConsumers()
		}
	}
	return repaired
}
