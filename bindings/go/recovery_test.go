package dmxp

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// Crash recovery (PROTOCOL.md §11). Dead peers are real processes: this test binary re-run
// as a helper (TestHelperPeer) that opens a channel, registers and claims a position with the
// client's own claim code, then waits to be killed.

const helperEnv = "DMXP_TEST_PEER_HELPER"

// TestHelperPeer is not a test: it is the child process of the tests below.
func TestHelperPeer(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("helper process only")
	}
	parts := strings.Split(spec, ":")
	fail := func(err error) {
		fmt.Println("ERR", err)
		os.Exit(3)
	}
	id, _ := strconv.ParseUint(parts[2], 10, 32)
	seg, err := OpenPath(parts[1], nil)
	if err != nil {
		fail(err)
	}
	ch, err := seg.OpenChannel(uint32(id))
	if err != nil {
		fail(err)
	}
	switch parts[0] {
	case "recover":
		report, err := ch.Recover()
		if err != nil {
			fail(err)
		}
		fmt.Printf("REPORT %d %d %d\n", report.RecordsFreed, report.Lost, report.Freed)
		os.Exit(0)
	case "producer", "consumer":
		var position uint64
		if parts[0] == "producer" {
			if err := ch.Register(RoleProducer); err != nil {
				fail(err)
			}
			position, _, err = ch.claimSend(1)
		} else {
			if err := ch.Register(RoleConsumer); err != nil {
				fail(err)
			}
			position, _, err = ch.claimRecv(1, -1)
		}
		if err != nil {
			fail(err)
		}
		fmt.Printf("POS %d\n", position)
		time.Sleep(time.Hour) // killed by the test
	case "runproducer":
		// Registers as a producer, claims a run of 4 positions (PROTOCOL.md §12.3), publishes
		// its first continuation only, and waits to be killed.
		if err := ch.Register(RoleProducer); err != nil {
			fail(err)
		}
		position, err := ch.claimRun(4)
		if err != nil {
			fail(err)
		}
		part := make([]byte, MsgInline)
		if !ch.publishSlot(position+1, position, part, &SendOptions{}, 1, 3*MsgInline+1, FlagRunCont, 4, 1) {
			fail(errors.New("continuation revoked"))
		}
		fmt.Printf("POS %d\n", position)
		time.Sleep(time.Hour) // killed by the test
	case "waitrecv", "waitsend":
		// Registers and blocks in a receive on an empty ring (a send on a full one) until
		// killed.
		role := RoleConsumer
		if parts[0] == "waitsend" {
			role = RoleProducer
		}
		if err := ch.Register(role); err != nil {
			fail(err)
		}
		fmt.Println("WAITING")
		if role == RoleConsumer {
			_, err = ch.ReceiveTimeout(make([]byte, MsgInline), time.Hour)
		} else {
			_, err = ch.SendTimeout([]byte("never"), time.Hour)
		}
		fmt.Println("RETURNED", err)
		os.Exit(5)
	case "idle":
		// Registers both roles and does nothing until killed.
		if err := ch.Register(RoleProducer); err != nil {
			fail(err)
		}
		if err := ch.Register(RoleConsumer); err != nil {
			fail(err)
		}
		fmt.Println("IDLE")
		time.Sleep(time.Hour)
	}
	os.Exit(4)
}

func runHelper(t *testing.T, mode string, seg *Segment, id uint32) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperPeer$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%s:%d", helperEnv, mode, seg.Path(), id))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper %s: %v (read %q)", mode, err, line)
	}
	return cmd, strings.TrimSpace(line)
}

// spawnClaimer starts a helper that registers role on channel id and claims one position.
func spawnClaimer(t *testing.T, seg *Segment, id uint32, role string) (*exec.Cmd, uint64) {
	t.Helper()
	cmd, line := runHelper(t, role, seg, id)
	var position uint64
	if _, err := fmt.Sscanf(line, "POS %d", &position); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper said %q", line)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, position
}

// killAndReap kills the helper, checks that it is judged dead while still a zombie (kill(pid,
// 0) still finds it), then reaps it.
func killAndReap(t *testing.T, cmd *exec.Cmd) uint32 {
	t.Helper()
	pid := uint32(cmd.Process.Pid)
	start := ProcessStartTime(pid)
	if start == 0 {
		t.Fatalf("no start time for pid %d", pid)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	zombie := false
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if state, _, err := procStat(pid); err == nil && state == 'Z' {
			zombie = true
			break
		}
	}
	if !zombie {
		t.Fatalf("pid %d never became a zombie", pid)
	}
	if err := syscall.Kill(int(pid), 0); err != nil {
		t.Fatalf("kill(zombie, 0) = %v; want success", err)
	}
	if !PeerDead(pid, start) {
		t.Fatalf("zombie %d judged alive", pid)
	}
	_ = cmd.Wait()
	if !PeerDead(pid, start) {
		t.Fatalf("reaped %d judged alive", pid)
	}
	return pid
}

func peerTableOf(t *testing.T, seg *Segment) unsafe.Pointer {
	t.Helper()
	off := load64(seg.base, offPeerTableOffset)
	if off == 0 {
		t.Fatal("no peer table")
	}
	return unsafe.Add(seg.base, off)
}

func recordsOf(t *testing.T, seg *Segment, pid uint32) int {
	table := peerTableOf(t, seg)
	n := 0
	for i := 0; i < seg.PeerRecords(); i++ {
		if load32(unsafe.Add(table, i*PeerRecordSize), peerPid) == pid {
			n++
		}
	}
	return n
}

func registered(t *testing.T, seg *Segment, id uint32, role Role) *Channel {
	t.Helper()
	ch, err := seg.OpenChannel(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Register(role); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	return ch
}

func sendText(t *testing.T, ch *Channel, text string, want uint64) {
	t.Helper()
	id, err := ch.TrySend([]byte(text))
	if err != nil || id != want {
		t.Fatalf("send %q: id %d err %v; want id %d", text, id, err, want)
	}
}

func recvText(t *testing.T, ch *Channel, text string, want uint64) {
	t.Helper()
	buf := make([]byte, MsgInline)
	meta, err := ch.ReceiveTimeout(buf, 10*time.Second)
	if err != nil || meta.MessageID != want || string(buf[:meta.PayloadLen]) != text {
		t.Fatalf("receive: id %d %q err %v; want id %d %q", meta.MessageID, buf[:meta.PayloadLen], err, want, text)
	}
}

func expectLost(t *testing.T, err error, want uint64) {
	t.Helper()
	var lost *LostError
	if !errors.As(err, &lost) || lost.MessageID != want {
		t.Fatalf("got %v; want a LostError for message %d", err, want)
	}
}

// (1) A producer dies between claim and publish: the consumer gets the messages before,
// exactly one lost message with the dead claim's id, then the messages after.
func TestRecoverDeadProducer(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 2, 8)
	prod := registered(t, seg, 2, RoleProducer)
	cons := registered(t, seg, 2, RoleConsumer)
	sendText(t, prod, "before-0", 0)
	sendText(t, prod, "before-1", 1)
	child, position := spawnClaimer(t, seg, 2, "producer")
	if position != 2 {
		t.Fatalf("child claimed %d", position)
	}
	pid := uint32(child.Process.Pid)
	if recordsOf(t, seg, pid) != 1 {
		t.Fatal("child not registered")
	}
	killAndReap(t, child)
	sendText(t, prod, "after-3", 3)
	sendText(t, prod, "after-4", 4)
	recvText(t, cons, "before-0", 0)
	recvText(t, cons, "before-1", 1)
	// Stuck at 2: the timed receive repairs it after the grace period and reports the loss.
	buf := make([]byte, MsgInline)
	_, err := cons.ReceiveTimeout(buf, 10*time.Second)
	expectLost(t, err, 2)
	if cons.Stats().Lost != 1 {
		t.Fatalf("stats %+v", cons.Stats())
	}
	if recordsOf(t, seg, pid) != 0 {
		t.Fatal("the dead record was not freed")
	}
	info := cons.PeekSlot(2)
	if info.Meta.SenderPID != pid || info.Meta.SenderRuntime != RuntimeGo || info.Meta.Flags != FlagLost || info.Meta.PayloadLen != 0 {
		t.Fatalf("tombstone meta %+v", info.Meta)
	}
	recvText(t, cons, "after-3", 3)
	recvText(t, cons, "after-4", 4)
	if _, err := cons.ReceiveTimeout(buf, 30*time.Millisecond); err != ErrTimeout {
		t.Fatalf("got %v; want ErrTimeout", err)
	}
	// The same through an explicit Recover and a batch receive.
	child, position = spawnClaimer(t, seg, 2, "producer")
	if position != 5 {
		t.Fatalf("child claimed %d", position)
	}
	killAndReap(t, child)
	sendText(t, prod, "after-6", 6)
	report, err := cons.Recover()
	if err != nil || report != (RecoverReport{RecordsFreed: 1, Lost: 1}) {
		t.Fatalf("Recover: %+v %v", report, err)
	}
	got, err := cons.TryReceiveBatch(8, func(Meta, []byte) {})
	if err != nil || got.Delivered != 1 || got.Dropped != 1 || cons.Stats().Lost != 2 {
		t.Fatalf("batch %+v %v stats %+v", got, err, cons.Stats())
	}
}

// (2) A consumer dies holding a claimed, unfreed slot: recovery frees it and the producer can
// fill the ring again.
func TestRecoverDeadConsumer(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 4, 4)
	prod := registered(t, seg, 4, RoleProducer)
	cons := registered(t, seg, 4, RoleConsumer)
	for i := uint64(0); i < 4; i++ {
		sendText(t, prod, "m", i)
	}
	child, position := spawnClaimer(t, seg, 4, "consumer")
	if position != 0 {
		t.Fatalf("child claimed %d", position)
	}
	killAndReap(t, child)
	for i := uint64(1); i < 4; i++ {
		recvText(t, cons, "m", i)
	}
	if _, err := prod.TrySend([]byte("n")); err != ErrFull {
		t.Fatalf("got %v; want ErrFull", err)
	}
	report, err := prod.Recover()
	if err != nil || report != (RecoverReport{RecordsFreed: 1, Freed: 1}) {
		t.Fatalf("Recover: %+v %v", report, err)
	}
	if report, _ = prod.Recover(); report != (RecoverReport{}) {
		t.Fatalf("second Recover: %+v", report)
	}
	for i := uint64(4); i < 8; i++ {
		sendText(t, prod, "full again", i)
	}
	if _, err := prod.TrySend([]byte("n")); err != ErrFull {
		t.Fatalf("got %v; want ErrFull", err)
	}
	for i := uint64(4); i < 8; i++ {
		recvText(t, cons, "full again", i)
	}
	// Through the blocking send: it repairs by itself after the grace period.
	for i := uint64(8); i < 12; i++ {
		sendText(t, prod, "o", i)
	}
	child, position = spawnClaimer(t, seg, 4, "consumer")
	if position != 8 {
		t.Fatalf("child claimed %d", position)
	}
	killAndReap(t, child)
	for i := uint64(9); i < 12; i++ {
		recvText(t, cons, "o", i)
	}
	id, err := prod.SendTimeout([]byte("p"), 10*time.Second)
	if err != nil || id != 12 {
		t.Fatalf("SendTimeout: %d %v", id, err)
	}
	recvText(t, cons, "p", 12)
}

// writeRecord fills record i of the table as a peer would.
func writeRecord(table unsafe.Pointer, i int, pid uint32, runtime uint16, role Role, start uint64, channel uint32, position uint64, count uint32) unsafe.Pointer {
	r := unsafe.Add(table, i*PeerRecordSize)
	store32(r, peerRuntimeRole, uint32(runtime)|uint32(role)<<16)
	store64(r, peerStartTime, start)
	store32(r, peerChannelID, channel)
	store64(r, peerIntentPosition, position)
	store32(r, peerIntentCount, count)
	store32(r, peerPid, pid)
	return r
}

// deadPid is the pid of a process that has exited and been reaped.
func deadPid(t *testing.T) uint32 {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return uint32(cmd.Process.Pid)
}

// (3) A live peer's claim is never repaired, nor is a dead record's stale intent over a
// position a live peer owns.
func TestRecoverRespectsLivePeer(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 6, 8)
	cons := registered(t, seg, 6, RoleConsumer)
	live, position := spawnClaimer(t, seg, 6, "producer")
	if position != 0 {
		t.Fatalf("child claimed %d", position)
	}
	if report, err := cons.Recover(); err != nil || report != (RecoverReport{}) {
		t.Fatalf("Recover: %+v %v", report, err)
	}
	buf := make([]byte, MsgInline)
	// Stuck for 60 ms, re-checked (and recovery tried) every 10 ms: still nothing.
	if _, err := cons.ReceiveTimeout(buf, 60*time.Millisecond); err != ErrTimeout {
		t.Fatalf("got %v; want ErrTimeout", err)
	}
	if info := cons.PeekSlot(0); info.Sequence != 0 {
		t.Fatalf("sequence %d", info.Sequence)
	}
	// A dead record whose stale intent also names position 0 (it lost the CAS to the live
	// child and died): given back to its dead owner, intent intact, position 0 left to its
	// owner.
	gone := deadPid(t)
	d := writeRecord(peerTableOf(t, seg), PeerRecords-1, gone, RuntimeRust, RoleProducer, 0, 6, 0, 1)
	report, err := cons.Recover()
	if err != nil || report != (RecoverReport{RecordsDeferred: 1}) {
		t.Fatalf("Recover: %+v %v", report, err)
	}
	if load32(d, peerPid) != gone || load32(d, peerIntentCount) != 1 || cons.PeekSlot(0).Sequence != 0 {
		t.Fatal("dead record not given back intact, or the live claim was touched")
	}
	killAndReap(t, live)
	_, err = cons.ReceiveTimeout(buf, 10*time.Second)
	expectLost(t, err, 0)
	// Position 0 was repaired through the child's own record (earlier in the table); the
	// stale record, with nothing stuck left, was freed in the same pass.
	if load32(d, peerPid) != 0 {
		t.Fatal("the stale record was not freed")
	}
}

// (4) pid reuse: a record naming this (live) process's pid with another start time belongs
// to a dead process. This process does not judge its own pid (§11.5); a child does.
func TestRecoverPidReuse(t *testing.T) {
	me := uint32(os.Getpid())
	start := ProcessStartTime(me)
	if start == 0 {
		t.Fatal("no start time for this process")
	}
	if PeerDead(me, start) || PeerDead(me, 0) || !PeerDead(me, start+1) || !PeerDead(1<<31, 0) {
		t.Fatal("liveness rules")
	}
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 7, 4)
	cons := registered(t, seg, 7, RoleConsumer) // installs the table
	raw, err := seg.OpenChannel(7)              // unregistered: only the CAS
	if err != nil {
		t.Fatal(err)
	}
	position, _, err := raw.claimSend(1)
	if err != nil {
		t.Fatal(err)
	}
	d := writeRecord(peerTableOf(t, seg), 10, me, RuntimeC, RoleProducer, start+1000, 7, position, 1)
	if report, err := cons.Recover(); err != nil || report != (RecoverReport{}) {
		t.Fatalf("own pid must be alive to itself: %+v %v", report, err)
	}
	cmd, line := runHelper(t, "recover", seg, 7)
	if err := cmd.Wait(); err != nil || line != "REPORT 1 1 0" {
		t.Fatalf("helper: %q %v", line, err)
	}
	if load32(d, peerPid) != 0 {
		t.Fatal("record not freed")
	}
	buf := make([]byte, MsgInline)
	_, err = cons.TryReceive(buf)
	expectLost(t, err, position)
	if info := cons.PeekSlot(position); info.Meta.SenderRuntime != RuntimeC || info.Meta.SenderPID != me {
		t.Fatalf("tombstone meta %+v", info.Meta)
	}
}

// (5) Records of another channel are left alone.
func TestRecoverLeavesOtherChannels(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	a := mustChannel(t, seg, 8, 4)
	b := mustChannel(t, seg, 9, 4)
	child, _ := spawnClaimer(t, seg, 9, "producer")
	pid := killAndReap(t, child)
	if report, err := a.Recover(); err != nil || report != (RecoverReport{}) {
		t.Fatalf("Recover(a): %+v %v", report, err)
	}
	buf := make([]byte, MsgInline)
	if _, err := a.ReceiveTimeout(buf, 30*time.Millisecond); err != ErrTimeout {
		t.Fatalf("got %v", err)
	}
	if recordsOf(t, seg, pid) != 1 || b.PeekSlot(0).Sequence != 0 {
		t.Fatal("channel 9's record or slot was touched")
	}
	if report, err := b.Recover(); err != nil || report != (RecoverReport{RecordsFreed: 1, Lost: 1}) {
		t.Fatalf("Recover(b): %+v %v", report, err)
	}
	_, err := b.TryReceive(buf)
	expectLost(t, err, 0)
}

// Registration: the table is installed lazily, records are taken and freed, intents are
// cleared after the publish or free, a full table or segment leaves the handle working.
func TestRegistration(t *testing.T) {
	size := segmentSize(4) + PeerTableSize
	seg := newTestSegment(t, size)
	a := mustChannel(t, seg, 5, 4)
	if seg.Header().PeerTableOffset != 0 {
		t.Fatal("table installed before any registration")
	}
	if err := a.Register(Role(3)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("got %v", err)
	}
	if err := a.Register(RoleProducer); err != nil {
		t.Fatal(err)
	}
	if err := a.Register(RoleConsumer); err != nil {
		t.Fatal(err)
	}
	table := uint64(segmentSize(4))
	if h := seg.Header(); h.PeerTableOffset != table || h.BandCursor != table+PeerTableSize {
		t.Fatalf("header %+v", h)
	}
	base := unsafe.Add(seg.base, table)
	r0, r1 := base, unsafe.Add(base, PeerRecordSize)
	if a.sendPeer != r0 || a.recvPeer != r1 || !a.Registered(RoleProducer) || !a.Registered(RoleConsumer) {
		t.Fatal("records")
	}
	me := uint32(os.Getpid())
	if load32(r0, peerPid) != me || load32(r0, peerRuntimeRole) != uint32(RuntimeGo)|1<<16 ||
		load32(r1, peerRuntimeRole) != uint32(RuntimeGo)|2<<16 || load32(r0, peerChannelID) != 5 ||
		load64(r0, peerStartTime) != ProcessStartTime(me) || load64(r0, peerStartTime) == 0 {
		t.Fatal("record fields")
	}
	if _, err := a.TrySend([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if n, err := a.TrySendBatch([][]byte{{1}, {2}, {3}}, SendOptions{}); n != 3 || err != nil {
		t.Fatal(n, err)
	}
	if load64(r0, peerIntentPosition) != 1 || load32(r0, peerIntentCount) != 0 {
		t.Fatal("producer intent")
	}
	if _, err := a.TrySend([]byte("y")); err != ErrFull || load32(r0, peerIntentCount) != 0 {
		t.Fatal(err)
	}
	buf := make([]byte, MsgInline)
	if _, err := a.TryReceive(buf); err != nil || load32(r1, peerIntentCount) != 0 {
		t.Fatal(err)
	}
	if got, err := a.TryReceiveBatch(8, func(Meta, []byte) {}); err != nil || got.Delivered != 3 ||
		load64(r1, peerIntentPosition) != 1 || load32(r1, peerIntentCount) != 0 {
		t.Fatal(got, err)
	}
	if _, err := a.TryReceive(buf); err != ErrEmpty || load32(r1, peerIntentCount) != 0 {
		t.Fatal(err)
	}
	b := registered(t, seg, 5, RoleConsumer)
	if b.recvPeer != unsafe.Add(base, 2*PeerRecordSize) {
		t.Fatal("second handle's record")
	}
	a.Close()
	if a.Registered(RoleProducer) || load32(r0, peerPid) != 0 || load32(r1, peerPid) != 0 || load64(r1, peerStartTime) != 0 {
		t.Fatal("Close did not free the records")
	}
	// Full table: the handle works without protection.
	for i := 0; i < seg.PeerRecords(); i++ {
		cas32(unsafe.Add(base, i*PeerRecordSize), peerPid, 0, me)
	}
	c, _ := seg.OpenChannel(5)
	if err := c.Register(RoleProducer); !errors.Is(err, ErrPeerTableFull) || c.Registered(RoleProducer) {
		t.Fatalf("got %v", err)
	}
	if _, err := c.TrySend([]byte("z")); err != nil {
		t.Fatal(err)
	}
	if meta, err := b.TryReceive(buf); err != nil || string(buf[:meta.PayloadLen]) != "z" {
		t.Fatal(err)
	}
	// No room for the table.
	small := newTestSegment(t, segmentSize(4)+1024)
	s := mustChannel(t, small, 0, 4)
	if err := s.Register(RoleConsumer); !errors.Is(err, ErrOutOfSpace) || small.Header().PeerTableOffset != 0 {
		t.Fatalf("got %v", err)
	}
	if _, err := s.TrySend([]byte("q")); err != nil {
		t.Fatal(err)
	}
	if report, err := s.Recover(); err != nil || report != (RecoverReport{}) {
		t.Fatal(report, err)
	}
}

// A peer table on a channel's band is refused at open, by ValidateAll, Register and Recover.
func TestPeerTableOverlapsBand(t *testing.T) {
	seg := newTestSegment(t, segmentSize(4, 8)+PeerTableSize)
	c0 := mustChannel(t, seg, 0, 4)
	mustChannel(t, seg, 1, 8)
	bad := uint64(HeaderSize + 4*SlotSize + 3*64)
	store64(seg.base, offPeerTableOffset, bad)
	var ce *CorruptionError
	_, err := seg.OpenChannel(1)
	if !errors.As(err, &ce) || ce.Kind != PeerTableOverlapsBand || ce.Field != "peer_table_offset" || ce.Channel != 1 || ce.Value != bad {
		t.Fatalf("OpenChannel: %v", err)
	}
	if err := seg.ValidateAll(); !errors.As(err, &ce) || ce.Kind != PeerTableOverlapsBand {
		t.Fatalf("ValidateAll: %v", err)
	}
	if err := c0.Register(RoleProducer); !errors.As(err, &ce) || ce.Kind != PeerTableOverlapsBand || c0.Registered(RoleProducer) {
		t.Fatalf("Register: %v", err)
	}
	if _, err := c0.Recover(); !errors.As(err, &ce) || ce.Kind != PeerTableOverlapsBand {
		t.Fatalf("Recover: %v", err)
	}
	if !strings.Contains(ce.Error(), "peer table") {
		t.Fatal(ce.Error())
	}
	store64(seg.base, offPeerTableOffset, 0)
	if err := seg.ValidateAll(); err != nil {
		t.Fatal(err)
	}
}

func TestPeerLayout(t *testing.T) {
	if offPeerTableOffset != 48 || offPeerRecords != 56 || PeerRecords != 256 || MaxPeerRecords != 16384 ||
		PeerRecordSize != 64 || PeerTableSize != 16384 || PeerTableLen(1024) != 65536 ||
		peerPid != 0 || peerRuntimeRole != 4 || peerStartTime != 8 || peerChannelID != 16 ||
		peerIntentCount != 20 || peerIntentPosition != 24 || peerPidNS != 32 || peerWaiting != 40 ||
		peerIntentFlags != 44 || peerRecordZeroStart != 48 || waitingNone != 0 || waitingNotEmpty != 1 || waitingNotFull != 2 ||
		RoleProducer != 1 || RoleConsumer != 2 {
		t.Fatal("peer table layout differs from PROTOCOL.md §11")
	}
	state, start, err := procStat(uint32(os.Getpid()))
	if err != nil || start == 0 || (state != 'R' && state != 'S') {
		t.Fatalf("procStat: %c %d %v", state, start, err)
	}
}
