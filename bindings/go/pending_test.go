package dmxp

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Empty means nothing is queued (PROTOCOL.md §6.2): a receive that finds the head claimed and
// not yet published while a later position holds a message waits for the head.

// claimInFlight claims the next position on ch the way a send does (the CAS on tail) and
// leaves it unpublished; publishLater publishes it from another goroutine after delay.
func claimInFlight(t *testing.T, ch *Channel, want uint64) {
	t.Helper()
	position, count, err := ch.claimSend(1)
	if err != nil || position != want || count != 1 {
		t.Fatalf("claim: position %d count %d err %v; want position %d", position, count, err, want)
	}
}

func publishLater(t *testing.T, ch *Channel, position uint64, text string, delay time.Duration) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(delay)
		if _, err := ch.finishSend(position, []byte(text), &SendOptions{}); err != nil {
			t.Errorf("publish %d: %v", position, err)
		}
	}()
	// A test that fails early still waits for the publish (before the segment is unmapped).
	t.Cleanup(wg.Wait)
	return &wg
}

func expectMessage(t *testing.T, meta Meta, err error, buf []byte, id uint64, text string) {
	t.Helper()
	if err != nil || meta.MessageID != id || string(buf[:meta.PayloadLen]) != text {
		t.Fatalf("got id %d %q err %v; want id %d %q", meta.MessageID, buf[:meta.PayloadLen], err, id, text)
	}
}

// A send that completed behind a claim in flight: every kind of receive waits for the claim
// and delivers both messages in position order, never ErrEmpty (or ErrTimeout).
func TestReceiveWaitsForClaimInFlight(t *testing.T) {
	seg := newTestSegment(t, segmentSize(8))
	ch := mustChannel(t, seg, 1, 8)
	slow, err := seg.OpenChannel(1) // the producer that claimed and has not published yet
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, MsgInline)

	// TryReceive.
	claimInFlight(t, slow, 0)
	sendText(t, ch, "second", 1)
	wg := publishLater(t, slow, 0, "first", 50*time.Millisecond)
	meta, err := ch.TryReceive(buf)
	expectMessage(t, meta, err, buf, 0, "first")
	meta, err = ch.TryReceive(buf)
	expectMessage(t, meta, err, buf, 1, "second")
	wg.Wait()
	if _, err := ch.TryReceive(buf); err != ErrEmpty {
		t.Fatalf("after both messages: %v; want ErrEmpty", err)
	}

	// TryReceiveBatch: one batch gets both, in order.
	claimInFlight(t, slow, 2)
	sendText(t, ch, "fourth", 3)
	wg = publishLater(t, slow, 2, "third", 50*time.Millisecond)
	var got []string
	result, err := ch.TryReceiveBatch(8, func(m Meta, p []byte) {
		got = append(got, fmt.Sprintf("%d:%s", m.MessageID, p))
	})
	if err == nil && result.Delivered == 1 {
		// The batch may have claimed position 2 alone; position 3 is next.
		result, err = ch.TryReceiveBatch(8, func(m Meta, p []byte) {
			got = append(got, fmt.Sprintf("%d:%s", m.MessageID, p))
		})
	}
	if err != nil || fmt.Sprint(got) != "[2:third 3:fourth]" {
		t.Fatalf("batch: %v %+v err %v; want [2:third 3:fourth]", got, result, err)
	}
	wg.Wait()

	// A blocking receive waits for the claim within its deadline, like for an empty ring.
	claimInFlight(t, slow, 4)
	sendText(t, ch, "sixth", 5)
	wg = publishLater(t, slow, 4, "fifth", 50*time.Millisecond)
	meta, err = ch.ReceiveTimeout(buf, 30*time.Second)
	expectMessage(t, meta, err, buf, 4, "fifth")
	meta, err = ch.ReceiveTimeout(buf, time.Millisecond)
	expectMessage(t, meta, err, buf, 5, "sixth")
	wg.Wait()
}

// Nothing published behind a claim in flight: no completed send is queued, so a receive
// reports ErrEmpty at once, without sleeping or looking for a stuck position. Once a send
// completes behind the same claim, the channel is no longer empty.
func TestReceiveEmptyBehindClaimInFlight(t *testing.T) {
	seg := newTestSegment(t, segmentSize(8))
	ch := mustChannel(t, seg, 1, 8)
	slow, err := seg.OpenChannel(1)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, MsgInline)
	claimInFlight(t, slow, 0)
	claimInFlight(t, slow, 1) // two claims in flight, nothing published
	stuckLooks := func() uint64 { return atomic.LoadUint64(&ch.stuckLooks) }
	waits, looks := FutexWaitCalls(), stuckLooks()
	if _, err := ch.TryReceive(buf); err != ErrEmpty {
		t.Fatalf("TryReceive: %v; want ErrEmpty", err)
	}
	if _, err := ch.TryReceiveBatch(8, func(Meta, []byte) { t.Error("delivered") }); err != ErrEmpty {
		t.Fatalf("TryReceiveBatch: %v; want ErrEmpty", err)
	}
	if FutexWaitCalls() != waits || stuckLooks() != looks {
		t.Fatalf("an empty receive waited (%d futex waits) or looked for a stuck position (%d looks)",
			FutexWaitCalls()-waits, stuckLooks()-looks)
	}
	if ch.Head() != 0 || ch.Tail() != 2 {
		t.Fatalf("head %d tail %d; want 0 and 2", ch.Head(), ch.Tail())
	}

	// A completed send behind the two claims: not empty any more.
	sendText(t, ch, "third", 2)
	wg := publishLater(t, slow, 0, "first", 20*time.Millisecond)
	wg2 := publishLater(t, slow, 1, "second", 40*time.Millisecond)
	for i, text := range []string{"first", "second", "third"} {
		meta, err := ch.TryReceive(buf)
		expectMessage(t, meta, err, buf, uint64(i), text)
	}
	wg.Wait()
	wg2.Wait()
	if _, err := ch.TryReceive(buf); err != ErrEmpty {
		t.Fatalf("drained: %v; want ErrEmpty", err)
	}
}

// Linearizability: each goroutine sends one message and then receives one. When its receive
// starts, its own send has completed and every other goroutine has received no more than it
// sent, so at least one message is queued: a receive must never report ErrEmpty. More OS
// threads than cores let the kernel preempt producers between claim and publish.
func TestSendThenReceiveNeverEmpty(t *testing.T) {
	const (
		workers = 6
		rounds  = 10000
	)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4 * runtime.NumCPU()))
	seg := newTestSegment(t, segmentSize(64))
	ch := mustChannel(t, seg, 1, 64)
	var mu sync.Mutex
	seen := make(map[uint64]bool, workers*rounds)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			buf := make([]byte, MsgInline)
			ids := make([]uint64, 0, rounds)
			empties := 0
			for i := 0; i < rounds; i++ {
				if _, err := ch.SendTimeout([]byte(fmt.Sprintf("%d/%d", w, i)), 10*time.Second); err != nil {
					t.Errorf("worker %d send %d: %v", w, i, err)
					return
				}
				meta, err := ch.TryReceive(buf)
				if err == ErrEmpty {
					empties++
					continue
				}
				if err != nil {
					t.Errorf("worker %d receive %d: %v", w, i, err)
					return
				}
				ids = append(ids, meta.MessageID)
			}
			if empties != 0 {
				t.Errorf("worker %d: %d of %d receives reported ErrEmpty after a completed send", w, empties, rounds)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				if seen[id] {
					t.Errorf("message %d received twice", id)
				}
				seen[id] = true
			}
		}(w)
	}
	wg.Wait()
	if !t.Failed() && len(seen) != workers*rounds {
		t.Fatalf("received %d messages; want %d", len(seen), workers*rounds)
	}
}

// A dead producer's claim with a message queued behind it: the non-blocking receive waits, the
// wait repairs the claim after StuckGrace (its first call: no miss streak needed), and the
// receive reports the lost message, then delivers the one behind it.
func TestPendingWaitRepairsDeadClaimer(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 4, 8)
	cons := registered(t, seg, 4, RoleConsumer) // installs the peer table
	raw, err := seg.OpenChannel(4)
	if err != nil {
		t.Fatal(err)
	}
	claimInFlight(t, raw, 0)
	writeRecord(peerTableOf(t, seg), 30, deadPid(t), RuntimeGo, RoleProducer, 0, 4, 0, 1)
	sendText(t, raw, "behind", 1)
	buf := make([]byte, MsgInline)
	_, err = cons.TryReceive(buf)
	expectLost(t, err, 0)
	meta, err := cons.TryReceive(buf)
	expectMessage(t, meta, err, buf, 1, "behind")
}

// A claim nobody publishes or repairs (a producer that stopped, on a handle that never
// unblocks): the wait is bounded, and never shorter than UnblockTimeout.
func TestPendingWaitIsBounded(t *testing.T) {
	seg := newTestSegment(t, segmentSize(8))
	ch := mustChannel(t, seg, 1, 8)
	ch.SetUnblockTimeout(0)
	claimInFlight(t, ch, 0)
	sendText(t, ch, "behind", 1)
	buf := make([]byte, MsgInline)
	check := func(name string, want error, receive func() error) {
		t.Helper()
		start := time.Now()
		err := receive()
		elapsed := time.Since(start)
		if err != want {
			t.Fatalf("%s: %v; want %v", name, err, want)
		}
		if elapsed < UnblockTimeout || elapsed > UnblockTimeout+5*time.Second {
			t.Fatalf("%s gave up after %v; want UnblockTimeout (%v)", name, elapsed, UnblockTimeout)
		}
	}
	check("TryReceive", ErrEmpty, func() error { _, err := ch.TryReceive(buf); return err })
	// A receive with a deadline honours it, pending head or not.
	if _, err := ch.ReceiveTimeout(buf, time.Millisecond); err != ErrTimeout {
		t.Fatalf("ReceiveTimeout: %v; want ErrTimeout", err)
	}
	if ch.Head() != 0 {
		t.Fatalf("head moved to %d", ch.Head())
	}
}
