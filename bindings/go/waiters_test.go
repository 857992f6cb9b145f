package dmxp

import (
	"os"
	"os/exec"
	"testing"
	"time"
	"unsafe"
)

// Waiters that die (PROTOCOL.md §11.9) and the registration sweep (§11.10). Dead peers are
// real processes: helpers of TestHelperPeer (recovery_test.go) that register, then block in a
// receive or a send ("waitrecv", "waitsend") or do nothing ("idle") until killed.

// recordOf is the one record of the table that names pid.
func recordOf(t *testing.T, seg *Segment, pid uint32) unsafe.Pointer {
	t.Helper()
	table := peerTableOf(t, seg)
	var found unsafe.Pointer
	for i := 0; i < seg.PeerRecords(); i++ {
		r := unsafe.Add(table, i*PeerRecordSize)
		if load32(r, peerPid) == pid {
			if found != nil {
				t.Fatalf("pid %d holds more than one record", pid)
			}
			found = r
		}
	}
	if found == nil {
		t.Fatalf("pid %d holds no record", pid)
	}
	return found
}

// waitCount is the entry's not_empty_waiters (kind 1) or not_full_waiters (kind 2).
func waitCount(seg *Segment, id uint32, kind uint32) uint32 {
	if kind == waitingNotEmpty {
		return load32(seg.entry(id), entNotEmptyWaiters)
	}
	return load32(seg.entry(id), entNotFullWaiters)
}

// pollUntil polls cond every millisecond until it holds, failing the test after timeout.
func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// spawnHelper starts a helper in mode and checks its first line.
func spawnHelper(t *testing.T, seg *Segment, id uint32, mode, want string) *exec.Cmd {
	t.Helper()
	cmd, line := runHelper(t, mode, seg, id)
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line != want {
		t.Fatalf("helper %s said %q; want %q", mode, line, want)
	}
	return cmd
}

// deadWaiter starts a helper that registers and blocks in a receive (mode "waitrecv", kind 1)
// or a send ("waitsend", kind 2) on channel id, waits until it is counted in the entry's wait
// count (exactly 1) and its record's waiting word is kind, then kills and reaps it. It
// returns the dead pid and its record, which still show the count (1) and the word (kind).
//
// A waiter leaves the count for a few instructions between two wait slices (every 100 ms);
// a kill that lands there leaves a dead record that is not counted, and the attempt is
// cleaned up and made again.
func deadWaiter(t *testing.T, seg *Segment, id uint32, mode string, kind uint32) (uint32, unsafe.Pointer) {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		cmd := spawnHelper(t, seg, id, mode, "WAITING")
		pid := uint32(cmd.Process.Pid)
		r := recordOf(t, seg, pid)
		pollUntil(t, 10*time.Second, "the child to be counted as a waiter", func() bool {
			return waitCount(seg, id, kind) == 1 && load32(r, peerWaiting) == kind
		})
		killAndReap(t, cmd)
		if waitCount(seg, id, kind) == 1 && load32(r, peerWaiting) == kind {
			return pid, r
		}
		t.Logf("attempt %d: pid %d died between two wait slices (count %d, waiting %d); again",
			attempt, pid, waitCount(seg, id, kind), load32(r, peerWaiting))
		store32(seg.entry(id), entNotEmptyWaiters, 0)
		store32(seg.entry(id), entNotFullWaiters, 0)
		store32(r, peerWaiting, 0)
		store64(r, peerStartTime, 0)
		store32(r, peerPid, 0)
	}
	t.Fatal("no child died while counted as a waiter")
	return 0, nil
}

// (a) A peer killed while it waits leaves its wait count behind; whoever frees its record
// gives the count back: a registration's sweep (not_empty_waiters of a dead receiver) and a
// repair pass (not_full_waiters of a dead sender). Until then every send (receive) makes a
// futex wake for nobody; afterwards none.
func TestDeadWaiterCountGivenBack(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 3, 4)
	prod, err := seg.OpenChannel(3) // unregistered
	if err != nil {
		t.Fatal(err)
	}

	// A receiver dies blocked on the empty ring; a registration frees its record.
	pid, r := deadWaiter(t, seg, 3, "waitrecv", waitingNotEmpty)
	if got := load32(r, peerChannelID); got != 3 {
		t.Fatalf("dead waiter's record names channel %d", got)
	}
	wakes := FutexWakeCalls()
	sendText(t, prod, "a", 0)
	if got := FutexWakeCalls() - wakes; got != 1 {
		t.Fatalf("a send with a dead waiter counted made %d futex wakes; want 1", got)
	}
	cons := registered(t, seg, 3, RoleConsumer) // sweeps first
	if rx, tx := cons.Waiters(); rx != 0 || tx != 0 {
		t.Fatalf("after the sweep: waiters %d/%d; want 0/0", rx, tx)
	}
	if n := recordsOf(t, seg, pid); n != 0 || load32(r, peerWaiting) != 0 {
		t.Fatalf("after the sweep: %d records of dead pid %d, waiting word %d; want 0, 0", n, pid, load32(r, peerWaiting))
	}
	if cons.recvPeer != r {
		t.Fatal("the new registration did not take the freed record (the first free one)")
	}
	wakes = FutexWakeCalls()
	sendText(t, prod, "b", 1)
	if got := FutexWakeCalls() - wakes; got != 0 {
		t.Fatalf("a send with nobody waiting made %d futex wakes; want 0", got)
	}
	recvText(t, cons, "a", 0)
	recvText(t, cons, "b", 1)

	// A sender dies blocked on the full ring; a repair pass frees its record.
	for i := uint64(2); i < 6; i++ {
		sendText(t, prod, "full", i)
	}
	pid, r = deadWaiter(t, seg, 3, "waitsend", waitingNotFull)
	report, err := cons.Recover()
	if err != nil || report != (RecoverReport{RecordsFreed: 1}) {
		t.Fatalf("Recover: %+v %v; want 1 record freed", report, err)
	}
	if rx, tx := cons.Waiters(); rx != 0 || tx != 0 {
		t.Fatalf("after Recover: waiters %d/%d; want 0/0", rx, tx)
	}
	if n := recordsOf(t, seg, pid); n != 0 || load32(r, peerPid) != 0 || load32(r, peerWaiting) != 0 {
		t.Fatalf("after Recover: %d records of dead pid %d, record pid %d, waiting %d; want 0, 0, 0",
			n, pid, load32(r, peerPid), load32(r, peerWaiting))
	}
	wakes = FutexWakeCalls()
	recvText(t, cons, "full", 2)
	if got := FutexWakeCalls() - wakes; got != 0 {
		t.Fatalf("a receive with nobody waiting made %d futex wakes; want 0", got)
	}
}

// (b) A registration first frees the records of peers that died idle, on any channel, and
// leaves alone: records with an intent (a repair's), records of live peers, records of
// another pid namespace and its own.
func TestRegisterSweepsDeadIdleRecords(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 5, 4)
	mustChannel(t, seg, 6, 4)
	// All registered before any dies (a registration would sweep the records of those dead
	// already): records 0-5, and 6-7 for the one that stays alive.
	var children []*exec.Cmd
	for _, id := range []uint32{5, 5, 6} {
		cmd := spawnHelper(t, seg, id, "idle", "IDLE")
		if n := recordsOf(t, seg, uint32(cmd.Process.Pid)); n != 2 {
			t.Fatalf("idle child holds %d records; want 2", n)
		}
		children = append(children, cmd)
	}
	live := uint32(spawnHelper(t, seg, 5, "idle", "IDLE").Process.Pid)
	var dead []uint32
	for _, cmd := range children {
		dead = append(dead, killAndReap(t, cmd))
	}
	for _, pid := range dead {
		if n := recordsOf(t, seg, pid); n != 2 {
			t.Fatalf("dead pid %d holds %d records before the sweep; want 2", pid, n)
		}
	}
	table := peerTableOf(t, seg)
	// Planted records of a reaped pid: one with an intent (left to a repair of channel 5),
	// one of another pid namespace (cannot be judged: alive), one idle with a garbage
	// waiting word (freed, the word cleared).
	gone := deadPid(t)
	withIntent := writeRecord(table, 200, gone, RuntimeRust, RoleProducer, 77, 5, 0, 1)
	otherNS := writeRecord(table, 201, gone, RuntimeC, RoleConsumer, 0, 6, 0, 0)
	store64(otherNS, peerPidNS, PidNamespace()+1)
	garbage := writeRecord(table, 202, gone, RuntimeC, RoleConsumer, 0, 6, 0, 0)
	store32(garbage, peerWaiting, 7)
	me := uint32(os.Getpid())
	mine := registered(t, seg, 6, RoleProducer)
	if mine.sendPeer != table {
		t.Fatal("the registration did not take record 0 (freed by its sweep)")
	}

	for _, pid := range dead {
		if n := recordsOf(t, seg, pid); n != 0 {
			t.Fatalf("dead pid %d still holds %d records", pid, n)
		}
	}
	if n := recordsOf(t, seg, live); n != 2 {
		t.Fatalf("live child holds %d records; want 2", n)
	}
	if load32(withIntent, peerPid) != gone || load32(withIntent, peerIntentCount) != 1 || load64(withIntent, peerStartTime) != 77 {
		t.Fatal("the dead record with an intent was touched")
	}
	if load32(otherNS, peerPid) != gone || load64(otherNS, peerPidNS) != PidNamespace()+1 {
		t.Fatal("the record of another pid namespace was touched")
	}
	if load32(garbage, peerPid) != 0 || load32(garbage, peerWaiting) != 0 {
		t.Fatalf("garbage-waiting record: pid %d waiting %d; want 0, 0", load32(garbage, peerPid), load32(garbage, peerWaiting))
	}
	free := 0
	for i := 0; i < seg.PeerRecords(); i++ {
		r := unsafe.Add(table, i*PeerRecordSize)
		if load32(r, peerPid) != 0 {
			continue
		}
		free++
		if load64(r, peerStartTime) != 0 || load64(r, peerPidNS) != 0 || load32(r, peerWaiting) != 0 {
			t.Fatalf("free record %d keeps start %d pid_ns %d waiting %d", i,
				load64(r, peerStartTime), load64(r, peerPidNS), load32(r, peerWaiting))
		}
	}
	// The default 256 records: 2 of the live child, 2 planted, 1 of this process.
	if want := seg.PeerRecords() - 5; free != want {
		t.Fatalf("%d free records; want %d", free, want)
	}
	if recordsOf(t, seg, me) != 1 {
		t.Fatal("this process's record")
	}

	// A table filled with dead idle records (no intent) still takes a registration.
	for i := 0; i < seg.PeerRecords(); i++ {
		r := unsafe.Add(table, i*PeerRecordSize)
		if load32(r, peerPid) == 0 {
			writeRecord(table, i, gone, RuntimeRust, RoleConsumer, 0, 5, 0, 0)
		}
	}
	other := registered(t, seg, 5, RoleConsumer)
	if !other.Registered(RoleConsumer) || recordsOf(t, seg, gone) != 2 {
		t.Fatalf("full table of dead records: registered %v, %d records of the dead pid left; want true, 2",
			other.Registered(RoleConsumer), recordsOf(t, seg, gone))
	}
}

// (b) A record that shows an intent once the sweep has taken it over belongs to a live owner
// that was misjudged dead: it goes back to that owner as it was, its wait count untouched.
func TestSweepGivesBackMisjudgedRecord(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 2, 4)
	registered(t, seg, 2, RoleProducer) // installs the table
	table := peerTableOf(t, seg)
	gone := deadPid(t)
	d := writeRecord(table, 3, gone, RuntimeC, RoleConsumer, 4242, 2, 0, 0)
	store32(d, peerWaiting, waitingNotEmpty)
	store32(seg.entry(2), entNotEmptyWaiters, 1)
	me := uint32(os.Getpid())
	tookOver := false
	setHook(t, func(step hookStep, position uint64) {
		if step == hookSweepTakenOver && position == 3 {
			tookOver = load32(d, peerPid) == me && load64(d, peerStartTime) == 0
			store32(d, peerIntentCount, 1) // what only a live owner writes
		}
	})
	registered(t, seg, 2, RoleConsumer)
	if !tookOver {
		t.Fatal("the sweep never took the dead record over (pid = ours, start_time cleared)")
	}
	if load32(d, peerPid) != gone || load64(d, peerStartTime) != 4242 || load32(d, peerIntentCount) != 1 ||
		load32(d, peerWaiting) != waitingNotEmpty || load32(seg.entry(2), entNotEmptyWaiters) != 1 {
		t.Fatalf("misjudged record: pid %d start %d intent %d waiting %d, count %d; want %d 4242 1 1, 1",
			load32(d, peerPid), load64(d, peerStartTime), load32(d, peerIntentCount), load32(d, peerWaiting),
			load32(seg.entry(2), entNotEmptyWaiters), gone)
	}
}

// (c) A live waiter misjudged dead: a freer wins its waiting word and takes the count down
// while it sleeps. When the waiter wakes it finds the word taken and leaves the count alone,
// so the count ends at 0, not wrapped to 0xFFFFFFFF; and it still gets its message (or slot).
func TestMisjudgedWaiterKeepsCount(t *testing.T) {
	for _, kind := range []uint32{waitingNotEmpty, waitingNotFull} {
		seg := newTestSegment(t, 1<<20)
		mustChannel(t, seg, 7, 4)
		raw, err := seg.OpenChannel(7) // unregistered: the other side
		if err != nil {
			t.Fatal(err)
		}
		var waiter *Channel
		var r unsafe.Pointer
		done := make(chan error, 1)
		if kind == waitingNotEmpty {
			waiter = registered(t, seg, 7, RoleConsumer)
			r = waiter.recvPeer
			go func() {
				buf := make([]byte, MsgInline)
				meta, err := waiter.ReceiveTimeout(buf, 30*time.Second)
				if err == nil && (meta.MessageID != 0 || string(buf[:meta.PayloadLen]) != "wake") {
					err = os.ErrInvalid
				}
				done <- err
			}()
		} else {
			waiter = registered(t, seg, 7, RoleProducer)
			r = waiter.sendPeer
			for i := uint64(0); i < 4; i++ {
				sendText(t, raw, "full", i)
			}
			go func() {
				id, err := waiter.SendTimeout([]byte("late"), 30*time.Second)
				if err == nil && id != 4 {
					err = os.ErrInvalid
				}
				done <- err
			}()
		}
		// The freer: wins the waiting word by CAS while the waiter is counted, and takes the
		// count down (a waiter between two slices leaves the word 0: poll again).
		pollUntil(t, 10*time.Second, "the freer to win the waiting word", func() bool {
			return waitCount(seg, 7, kind) == 1 && load32(r, peerWaiting) == kind && seg.giveBackWait(r)
		})
		if kind == waitingNotEmpty {
			sendText(t, raw, "wake", 0)
		} else {
			recvText(t, raw, "full", 0)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("kind %d: the waiter got %v", kind, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("kind %d: the waiter never returned", kind)
		}
		if got := waitCount(seg, 7, kind); got != 0 {
			t.Fatalf("kind %d: wait count %#x after the waiter returned; want 0", kind, got)
		}
		if got := load32(r, peerWaiting); got != 0 {
			t.Fatalf("kind %d: waiting word %d after the waiter returned; want 0", kind, got)
		}
	}
}

// giveBackWait: 1 and 2 name not_empty_waiters and not_full_waiters of channel_id, the count
// never goes below 0, a garbage word or channel id is cleared without touching a count; a
// registration and a close write waiting = 0.
func TestGiveBackWait(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 1, 4)
	registered(t, seg, 1, RoleProducer) // installs the table: record 0
	table := peerTableOf(t, seg)
	d := unsafe.Add(table, 100*PeerRecordSize)
	cases := []struct {
		waiting, channel uint32
		rx, tx           uint32 // counts of channel before
		gave             bool
		wantRx, wantTx   uint32
	}{
		{1, 9, 3, 5, true, 2, 5},
		{2, 9, 3, 5, true, 3, 4},
		{2, 255, 0, 0, true, 0, 0}, // never below 0; the last entry
		{1, 255, 0, 1, true, 0, 1},
		{0, 9, 3, 5, false, 3, 5},
		{7, 9, 3, 5, false, 3, 5},   // garbage
		{1, 256, 3, 5, false, 3, 5}, // no such entry
		{2, 1 << 31, 3, 5, false, 3, 5},
	}
	for _, tc := range cases {
		id := tc.channel
		if id >= MaxChannels {
			id = 9 // the counts watched
		}
		store32(seg.entry(id), entNotEmptyWaiters, tc.rx)
		store32(seg.entry(id), entNotFullWaiters, tc.tx)
		store32(d, peerChannelID, tc.channel)
		store32(d, peerWaiting, tc.waiting)
		gave := seg.giveBackWait(d)
		rx, tx := load32(seg.entry(id), entNotEmptyWaiters), load32(seg.entry(id), entNotFullWaiters)
		if gave != tc.gave || rx != tc.wantRx || tx != tc.wantTx || load32(d, peerWaiting) != 0 {
			t.Fatalf("%+v: gave %v, counts %d/%d, waiting %d", tc, gave, rx, tx, load32(d, peerWaiting))
		}
	}
	// Registration writes waiting = 0 over whatever a free record held; Close too.
	store32(seg.entry(9), entNotEmptyWaiters, 0)
	store32(seg.entry(9), entNotFullWaiters, 0)
	free := unsafe.Add(table, 1*PeerRecordSize)
	store32(free, peerWaiting, 2)
	c := registered(t, seg, 1, RoleConsumer)
	if c.recvPeer != free || load32(free, peerWaiting) != 0 {
		t.Fatalf("registration left waiting %d", load32(free, peerWaiting))
	}
	store32(free, peerWaiting, 1)
	c.Close()
	if load32(free, peerPid) != 0 || load32(free, peerWaiting) != 0 {
		t.Fatalf("close left pid %d waiting %d", load32(free, peerPid), load32(free, peerWaiting))
	}
}
