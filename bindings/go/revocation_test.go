package dmxp

import (
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// Revocation (PROTOCOL.md §11.7), pid namespaces and identity (§11.5), the close rule and the
// miss streak that gates the stuck check of non-blocking calls.

// setHook installs fn as the process-wide test hook until the test ends.
func setHook(t *testing.T, fn func(step hookStep, position uint64)) {
	t.Helper()
	testHook.Store(&fn)
	t.Cleanup(func() { testHook.Store(nil) })
}

// tombstone writes what a repairer writes for a dead producer's position p: LOST metadata,
// then sequence p + 1.
func tombstone(c *Channel, p uint64, pid uint32) {
	slot := c.slot(p)
	store64(slot, slotMessageID, p)
	store64(slot, slotTimestamp, 0)
	store32(slot, slotChannelID, c.ID())
	store32(slot, slotMessageType, 0)
	store32(slot, slotSenderPid, pid)
	store32(slot, slotRuntimeFlags, uint32(RuntimeRust)|uint32(FlagLost)<<16)
	store32(slot, slotPayloadLen, 0)
	store32(slot, slotMetaPad, 0)
	store64(slot, slotSequence, p+1)
}

// nextLap writes what the producer of position p + capacity publishes into p's slot once a
// repairer has freed p: a complete message of its own.
func nextLap(c *Channel, p uint64, text string) {
	slot := c.slot(p)
	q := p + c.Capacity()
	store64(slot, slotMessageID, q)
	store32(slot, slotChannelID, c.ID())
	store32(slot, slotRuntimeFlags, uint32(RuntimeC))
	store32(slot, slotPayloadLen, uint32(len(text)))
	storePayload(unsafe.Add(slot, slotPayload), []byte(text))
	store64(slot, slotSequence, q+1)
}

func expectRevoked(t *testing.T, err error, want uint64, count int) {
	t.Helper()
	var re *RevokedError
	if !errors.Is(err, ErrRevoked) || !errors.As(err, &re) || re.MessageID != want || re.Count != count {
		t.Fatalf("got %v; want a RevokedError for message %d (count %d)", err, want, count)
	}
}

// A repair lands on a claimed position before its producer publishes: the publish is revoked,
// the tombstone (sequence and metadata) stays as the repairer wrote it, and the consumer
// gets the loss.
func TestRevokedPublish(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 1, 4)
	prod := registered(t, seg, 1, RoleProducer)
	cons := registered(t, seg, 1, RoleConsumer)
	p, _, err := prod.claimSend(1)
	if err != nil || p != 0 {
		t.Fatalf("claim: %d %v", p, err)
	}
	tombstone(prod, p, 4242)
	_, err = prod.finishSend(p, []byte("too late"), &SendOptions{MessageType: 7})
	expectRevoked(t, err, p, 1)
	info := prod.PeekSlot(p)
	if info.Sequence != p+1 {
		t.Fatalf("sequence %d; want the tombstone's %d", info.Sequence, p+1)
	}
	// Checked before the metadata: the tombstone's metadata is untouched.
	if m := info.Meta; m.Flags != FlagLost || m.PayloadLen != 0 || m.SenderPID != 4242 || m.MessageType != 0 {
		t.Fatalf("tombstone metadata overwritten: %+v", m)
	}
	if load32(prod.sendPeer, peerIntentCount) != 0 || prod.Stats().Revoked != 1 {
		t.Fatalf("intent %d, stats %+v", load32(prod.sendPeer, peerIntentCount), prod.Stats())
	}
	buf := make([]byte, MsgInline)
	_, err = cons.TryReceive(buf)
	expectLost(t, err, p)

	// The repair lands between the check and the publishing CAS, and the tombstone has been
	// consumed and freed since (sequence p + capacity): the CAS fails and changes nothing.
	p = 1
	setHook(t, func(step hookStep, position uint64) {
		if step == hookBeforePublish && position == p {
			store64(prod.slot(p), slotSequence, p+prod.Capacity())
		}
	})
	_, err = prod.TrySend([]byte("later still"))
	expectRevoked(t, err, p, 1)
	if seq := prod.PeekSlot(p).Sequence; seq != p+prod.Capacity() {
		t.Fatalf("sequence %d; want %d", seq, p+prod.Capacity())
	}
	if prod.Stats().Revoked != 2 || load32(prod.sendPeer, peerIntentCount) != 0 {
		t.Fatalf("stats %+v", prod.Stats())
	}
}

// A repair frees a claimed position while its consumer copies it, and the next lap's producer
// publishes there: the consumer's free fails, it delivers nothing and leaves the slot alone.
func TestRevokedReceive(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 2, 4)
	prod := registered(t, seg, 2, RoleProducer)
	cons := registered(t, seg, 2, RoleConsumer)
	sendText(t, prod, "mine", 0)
	h, _, err := cons.claimRecv(1, -1)
	if err != nil || h != 0 {
		t.Fatalf("claim: %d %v", h, err)
	}
	nextLap(cons, h, "next lap's")
	buf := make([]byte, MsgInline)
	var meta Meta
	skipped, err := cons.finishReceive(recvClaim{first: h, count: 1}, buf, &meta)
	expectRevoked(t, err, h, 1)
	if skipped || meta != (Meta{}) {
		t.Fatalf("delivered %+v (skipped %v)", meta, skipped)
	}
	if seq := cons.PeekSlot(h).Sequence; seq != h+cons.Capacity()+1 {
		t.Fatalf("sequence %d; want the next lap's %d", seq, h+cons.Capacity()+1)
	}
	if load32(cons.recvPeer, peerIntentCount) != 0 || cons.Stats() != (Stats{Revoked: 1}) {
		t.Fatalf("intent %d, stats %+v", load32(cons.recvPeer, peerIntentCount), cons.Stats())
	}

	// Through TryReceive: the repair lands after the copy, before the freeing CAS.
	sendText(t, prod, "copied", 1)
	setHook(t, func(step hookStep, position uint64) {
		if step == hookBeforeFree && position == 1 {
			nextLap(cons, 1, "overwritten")
		}
	})
	// The claim above moved head past 0 by hand; the receive takes position 1.
	meta, err = cons.TryReceive(buf)
	expectRevoked(t, err, 1, 1)
	if meta != (Meta{}) || cons.PeekSlot(1).Sequence != 1+cons.Capacity()+1 {
		t.Fatalf("meta %+v, sequence %d", meta, cons.PeekSlot(1).Sequence)
	}
}

// Batches finish each position on its own: a revoked position is counted and not delivered,
// the others go through.
func TestRevokedBatches(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 3, 8)
	prod := registered(t, seg, 3, RoleProducer)
	cons := registered(t, seg, 3, RoleConsumer)
	capacity := prod.Capacity()
	setHook(t, func(step hookStep, position uint64) {
		if step == hookBeforePublish && position == 1 {
			store64(prod.slot(1), slotSequence, 1+capacity) // tombstoned, consumed, freed
		}
	})
	n, err := prod.TrySendBatch([][]byte{[]byte("a"), []byte("b"), []byte("c")}, SendOptions{})
	if n != 3 {
		t.Fatalf("took %d payloads", n)
	}
	expectRevoked(t, err, 1, 1)
	if prod.PeekSlot(0).Sequence != 1 || prod.PeekSlot(1).Sequence != 1+capacity || prod.PeekSlot(2).Sequence != 3 {
		t.Fatal("positions 0 and 2 published, 1 left alone: sequences wrong")
	}
	if prod.Stats().Revoked != 1 || load32(prod.sendPeer, peerIntentCount) != 0 {
		t.Fatalf("stats %+v", prod.Stats())
	}

	// Receive side: three published messages, position 5 freed by a repair and refilled by
	// the next lap while the batch copies it.
	testHook.Store(nil)
	seg2 := newTestSegment(t, 1<<20)
	mustChannel(t, seg2, 3, 8)
	prod = registered(t, seg2, 3, RoleProducer)
	cons = registered(t, seg2, 3, RoleConsumer)
	for i := uint64(0); i < 4; i++ {
		sendText(t, prod, "x", i)
	}
	for i := uint64(0); i < 4; i++ {
		recvText(t, cons, "x", i)
	}
	for i, text := range []string{"four", "five", "six"} {
		sendText(t, prod, text, uint64(4+i))
	}
	setHook(t, func(step hookStep, position uint64) {
		if step == hookBeforeFree && position == 5 {
			nextLap(cons, 5, "thirteen")
		}
	})
	var got []string
	result, err := cons.TryReceiveBatch(8, func(m Meta, payload []byte) {
		got = append(got, string(payload))
	})
	if err != nil || result != (BatchResult{Delivered: 2, Dropped: 1, Revoked: 1}) {
		t.Fatalf("batch %+v %v", result, err)
	}
	if len(got) != 2 || got[0] != "four" || got[1] != "six" {
		t.Fatalf("delivered %q", got)
	}
	if seq := cons.PeekSlot(5).Sequence; seq != 5+capacity+1 || cons.Stats().Revoked != 1 {
		t.Fatalf("sequence %d, stats %+v", seq, cons.Stats())
	}
	if load32(cons.recvPeer, peerIntentCount) != 0 {
		t.Fatal("intent not cleared")
	}
}

// ownPidNS is the inode of /proc/self/ns/pid, read by the test itself.
func ownPidNS(t *testing.T) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/pid", &st); err != nil || st.Ino == 0 {
		t.Fatalf("stat /proc/self/ns/pid: %v", err)
	}
	return st.Ino
}

// Registration records pid_ns at offset 32; Close clears it with the rest of the record.
func TestRegisterRecordsPidNamespace(t *testing.T) {
	ns := ownPidNS(t)
	if PidNamespace() != ns {
		t.Fatalf("PidNamespace %d; want %d", PidNamespace(), ns)
	}
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 0, 4)
	ch := registered(t, seg, 0, RoleProducer)
	r := ch.sendPeer
	if got := *(*uint64)(unsafe.Add(r, 32)); got != ns || load64(r, peerPidNS) != ns {
		t.Fatalf("pid_ns %d; want %d", got, ns)
	}
	ch.Close()
	if load64(r, peerPidNS) != 0 || load32(r, peerPid) != 0 {
		t.Fatal("Close left pid_ns or pid")
	}
}

// A record of another pid namespace names a pid this process cannot see: even with a pid
// that does not exist here, it counts as alive and is not repaired. The same record in our
// namespace (or without one) is.
func TestRecoverForeignPidNamespace(t *testing.T) {
	ns := ownPidNS(t)
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 7, 4)
	cons := registered(t, seg, 7, RoleConsumer)
	raw, err := seg.OpenChannel(7)
	if err != nil {
		t.Fatal(err)
	}
	position, _, err := raw.claimSend(1)
	if err != nil {
		t.Fatal(err)
	}
	gone := deadPid(t)
	d := writeRecord(peerTableOf(t, seg), 20, gone, RuntimeC, RoleProducer, 0, 7, position, 1)
	store64(d, peerPidNS, ns+1)
	// Another foreign record, without an intent (one that would be freed if dead).
	e := writeRecord(peerTableOf(t, seg), 21, gone, RuntimeC, RoleConsumer, 0, 9, 0, 0)
	store64(e, peerPidNS, ns+1)
	if report, err := cons.Recover(); err != nil || report != (RecoverReport{}) {
		t.Fatalf("Recover: %+v %v", report, err)
	}
	if load32(d, peerPid) != gone || load64(d, peerPidNS) != ns+1 || load32(d, peerIntentCount) != 1 ||
		load32(e, peerPid) != gone || cons.PeekSlot(position).Sequence != position {
		t.Fatal("a foreign namespace's record or its position was touched")
	}
	buf := make([]byte, MsgInline)
	if _, err := cons.ReceiveTimeout(buf, 40*time.Millisecond); err != ErrTimeout {
		t.Fatalf("got %v; want ErrTimeout", err)
	}
	// The same records in our namespace belong to a dead process.
	store64(d, peerPidNS, ns)
	store64(e, peerPidNS, 0)
	if report, err := cons.Recover(); err != nil || report != (RecoverReport{RecordsFreed: 2, Lost: 1}) {
		t.Fatalf("Recover: %+v %v", report, err)
	}
	_, err = cons.TryReceive(buf)
	expectLost(t, err, position)
}

// The identity a registration uses is read for the process that registers: a cache filled for
// another pid (as a forked child inherits its parent's) is read again.
func TestOwnIdentityFollowsPid(t *testing.T) {
	me := uint32(os.Getpid())
	start := ProcessStartTime(me)
	ns := ownPidNS(t)
	stale := identity{pid: me + 1, start: start + 77, pidNS: ns + 1}
	ownID.Lock()
	saved := ownID.id
	ownID.id = stale
	ownID.Unlock()
	t.Cleanup(func() {
		ownID.Lock()
		ownID.id = saved
		ownID.Unlock()
	})
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 0, 4)
	ch := registered(t, seg, 0, RoleConsumer)
	r := ch.recvPeer
	if load32(r, peerPid) != me || load64(r, peerStartTime) != start || load64(r, peerPidNS) != ns {
		t.Fatalf("registered as pid %d start %d ns %d; want %d %d %d",
			load32(r, peerPid), load64(r, peerStartTime), load64(r, peerPidNS), me, start, ns)
	}
	if id := ownIdentity(); id != (identity{pid: me, start: start, pidNS: ns}) {
		t.Fatalf("ownIdentity %+v", id)
	}
}

// Close frees only a record that names this process: one showing another pid (a handle
// inherited across fork, or a record a peer took over) is left as it is.
func TestCloseLeavesOthersRecord(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 0, 4)
	ch := registered(t, seg, 0, RoleProducer)
	if err := ch.Register(RoleConsumer); err != nil {
		t.Fatal(err)
	}
	other, mine := ch.sendPeer, ch.recvPeer
	parent := uint32(os.Getpid()) + 1
	store32(other, peerPid, parent)
	store32(other, peerIntentCount, 3)
	start := load64(other, peerStartTime)
	ch.Close()
	if ch.Registered(RoleProducer) || ch.Registered(RoleConsumer) {
		t.Fatal("handle still registered")
	}
	if load32(other, peerPid) != parent || load64(other, peerStartTime) != start || start == 0 ||
		load32(other, peerIntentCount) != 3 || load64(other, peerPidNS) == 0 {
		t.Fatal("Close touched a record that is not this process's")
	}
	if load32(mine, peerPid) != 0 || load64(mine, peerStartTime) != 0 {
		t.Fatal("Close did not free this process's record")
	}
	store32(other, peerPid, 0)
}

// Non-blocking calls look for a stuck position only once 64 of them in a row found the ring
// empty (or full); a call that gets through ends the streak. Blocking calls look before each
// sleep.
func TestMissStreakGatesStuckCheck(t *testing.T) {
	const streak = 64 // as the Rust client's MissStreak
	seg := newTestSegment(t, 1<<20)
	ch := mustChannel(t, seg, 0, 2)
	looks := func() uint64 { return atomic.LoadUint64(&ch.stuckLooks) }
	buf := make([]byte, MsgInline)
	miss := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if _, err := ch.TryReceive(buf); err != ErrEmpty {
				t.Fatalf("got %v; want ErrEmpty", err)
			}
		}
	}
	miss(streak - 1)
	if looks() != 0 {
		t.Fatalf("looked %d times after %d misses", looks(), streak-1)
	}
	miss(1)
	if looks() != 1 {
		t.Fatalf("looked %d times after %d misses; want 1", looks(), streak)
	}
	miss(1)
	if _, err := ch.TryReceiveBatch(4, func(Meta, []byte) {}); err != ErrEmpty {
		t.Fatal(err)
	}
	if looks() != 3 {
		t.Fatalf("looked %d times; want 3 (every miss once the streak is long enough)", looks())
	}
	// A receive that gets a message ends the streak.
	sendText(t, ch, "x", 0)
	if _, err := ch.TryReceive(buf); err != nil {
		t.Fatal(err)
	}
	miss(streak - 1)
	if looks() != 3 {
		t.Fatalf("looked %d times after a hit and %d misses; want 3", looks(), streak-1)
	}
	miss(1)
	if looks() != 4 {
		t.Fatalf("looked %d times; want 4", looks())
	}
	// Sends: their own streak, of full rings.
	sendText(t, ch, "a", 1)
	sendText(t, ch, "b", 2)
	base := looks()
	for i := 0; i < streak-1; i++ {
		if _, err := ch.TrySend([]byte("c")); err != ErrFull {
			t.Fatalf("got %v; want ErrFull", err)
		}
	}
	if looks() != base {
		t.Fatalf("a send looked after %d full rings", streak-1)
	}
	if _, err := ch.TrySendBatch([][]byte{[]byte("c")}, SendOptions{}); err != ErrFull {
		t.Fatal(err)
	}
	if looks() != base+1 {
		t.Fatalf("looked %d times after %d full rings; want %d", looks(), streak, base+1)
	}
	// A blocking call looks before it sleeps, streak or not.
	if _, err := ch.TryReceive(buf); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.TryReceive(buf); err != nil {
		t.Fatal(err)
	}
	base = looks()
	if _, err := ch.ReceiveTimeout(buf, time.Millisecond); err != ErrTimeout {
		t.Fatal(err)
	}
	if looks() == base {
		t.Fatal("a blocking receive did not look before sleeping")
	}
}

// A consumer that only polls (non-blocking receives) repairs a dead producer's claim once the
// streak is long enough and the channel has stayed stuck for StuckGrace.
func TestPollingReceiveRepairs(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 5, 4)
	cons := registered(t, seg, 5, RoleConsumer)
	raw, err := seg.OpenChannel(5)
	if err != nil {
		t.Fatal(err)
	}
	position, _, err := raw.claimSend(1)
	if err != nil {
		t.Fatal(err)
	}
	writeRecord(peerTableOf(t, seg), 30, deadPid(t), RuntimeGo, RoleProducer, 0, 5, position, 1)
	buf := make([]byte, MsgInline)
	calls := 0
	for deadline := time.Now().Add(10 * time.Second); ; calls++ {
		_, err := cons.TryReceive(buf)
		if err != ErrEmpty {
			expectLost(t, err, position)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never repaired")
		}
		time.Sleep(100 * time.Microsecond)
	}
	if calls < 64-1 {
		t.Fatalf("repaired after %d empty receives", calls)
	}
}
