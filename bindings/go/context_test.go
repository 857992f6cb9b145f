package dmxp

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// Cancellable waits: ReceiveContext and SendContext end with the context's error when it is
// done, consume or send nothing then, and leave the waiter counts as they found them.

// hangGuard is how long a call may take before the test reports it stuck (a hang guard
// only: nothing here asserts speed).
const hangGuard = 30 * time.Second

// inTime runs f in a goroutine and fails the test if it does not return within hangGuard.
func inTime(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(hangGuard):
		t.Fatalf("%s did not return within %v", what, hangGuard)
	}
}

func TestReceiveContextCancelledWhileWaitingConsumesNothing(t *testing.T) {
	seg := newTestSegment(t, 4<<20)
	ch := mustChannel(t, seg, 0, 8)
	if err := ch.Register(RoleConsumer); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var err error
	inTime(t, "cancelled ReceiveContext", func() {
		go func() {
			// Cancel once the receive is asleep (counted as a waiter).
			for receivers, _ := ch.Waiters(); receivers == 0; receivers, _ = ch.Waiters() {
				time.Sleep(time.Millisecond)
			}
			cancel()
		}()
		_, err = ch.ReceiveContext(ctx, make([]byte, MsgInline))
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("ReceiveContext: %v, want context.Canceled", err)
	}
	if receivers, senders := ch.Waiters(); receivers != 0 || senders != 0 {
		t.Fatalf("waiters left: %d receivers, %d senders", receivers, senders)
	}
	if ch.Head() != 0 {
		t.Fatalf("head moved to %d", ch.Head())
	}
	// The channel works as before: a message sent now is received.
	if _, err := ch.TrySend([]byte("after")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, MsgInline)
	meta, err := ch.ReceiveContext(context.Background(), buf)
	if err != nil || string(buf[:meta.PayloadLen]) != "after" {
		t.Fatalf("receive after the cancel: %q, %v", buf[:meta.PayloadLen], err)
	}
}

func TestReceiveContextDeadlineAndAlreadyDone(t *testing.T) {
	seg := newTestSegment(t, 4<<20)
	ch := mustChannel(t, seg, 0, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	var err error
	inTime(t, "ReceiveContext past its deadline", func() {
		_, err = ch.ReceiveContext(ctx, make([]byte, MsgInline))
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReceiveContext: %v, want context.DeadlineExceeded", err)
	}
	// A context already done does not even try: the queued message stays queued.
	if _, err := ch.TrySend([]byte("kept")); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.ReceiveContext(ctx, make([]byte, MsgInline)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReceiveContext with a done context: %v", err)
	}
	if ch.Head() != 0 || ch.Tail() != 1 {
		t.Fatalf("head %d tail %d: the done context consumed", ch.Head(), ch.Tail())
	}
}

func TestReceiveContextIsWokenBySend(t *testing.T) {
	seg := newTestSegment(t, 4<<20)
	ch := mustChannel(t, seg, 0, 8)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	buf := make([]byte, MsgInline)
	var meta Meta
	var err error
	inTime(t, "ReceiveContext woken by a send", func() {
		go func() {
			for receivers, _ := ch.Waiters(); receivers == 0; receivers, _ = ch.Waiters() {
				time.Sleep(time.Millisecond)
			}
			if _, err := ch.TrySend([]byte("wake")); err != nil {
				t.Error(err)
			}
		}()
		meta, err = ch.ReceiveContext(ctx, buf)
	})
	if err != nil || string(buf[:meta.PayloadLen]) != "wake" {
		t.Fatalf("ReceiveContext: %q, %v", buf[:meta.PayloadLen], err)
	}
}

func TestSendContextCancelledOnAFullRingSendsNothing(t *testing.T) {
	seg := newTestSegment(t, 4<<20)
	ch := mustChannel(t, seg, 0, 2)
	if err := ch.Register(RoleProducer); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := ch.TrySend([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var err error
	inTime(t, "cancelled SendContext", func() {
		go func() {
			for _, senders := ch.Waiters(); senders == 0; _, senders = ch.Waiters() {
				time.Sleep(time.Millisecond)
			}
			cancel()
		}()
		_, err = ch.SendContext(ctx, []byte("never"))
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("SendContext: %v, want context.Canceled", err)
	}
	if receivers, senders := ch.Waiters(); receivers != 0 || senders != 0 {
		t.Fatalf("waiters left: %d receivers, %d senders", receivers, senders)
	}
	if ch.Tail() != 2 {
		t.Fatalf("tail moved to %d", ch.Tail())
	}
	// Room made, the next SendContext goes through.
	if _, err := ch.TryReceive(make([]byte, MsgInline)); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.SendWithContext(context.Background(), []byte("now"), SendOptions{MessageType: 7}); err != nil {
		t.Fatal(err)
	}
}

// Cancellations racing with sends: every message is received exactly once, either by the
// ReceiveContext that was being cancelled or, afterwards, by a plain receive.
func TestReceiveContextCancelRacingSendsLosesNothing(t *testing.T) {
	seg := newTestSegment(t, 4<<20)
	ch := mustChannel(t, seg, 0, 64)
	const rounds = 500
	got := make(map[byte]int)
	buf := make([]byte, MsgInline)
	inTime(t, "the race rounds", func() {
		for i := 0; i < rounds; i++ {
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				if _, err := ch.TrySend([]byte{byte(i)}); err != nil {
					t.Error(err)
				}
			}()
			go func() {
				defer wg.Done()
				cancel()
			}()
			meta, err := ch.ReceiveContext(ctx, buf)
			wg.Wait()
			if err == nil {
				got[buf[0]]++
				if meta.PayloadLen != 1 {
					t.Errorf("round %d: length %d", i, meta.PayloadLen)
				}
			} else if !errors.Is(err, context.Canceled) {
				t.Errorf("round %d: %v", i, err)
			}
			// What the cancelled receive left is still there.
			for {
				meta, err := ch.TryReceive(buf)
				if errors.Is(err, ErrEmpty) {
					break
				}
				if err != nil || meta.PayloadLen != 1 {
					t.Fatalf("round %d: drain: %v", i, err)
				}
				got[buf[0]]++
			}
		}
	})
	for i := 0; i < rounds; i++ {
		if got[byte(i)] != rounds/256+boolInt(i%256 < rounds%256) {
			t.Fatalf("message byte %d received %d times", i%256, got[byte(i)])
		}
	}
	if receivers, senders := ch.Waiters(); receivers != 0 || senders != 0 {
		t.Fatalf("waiters left: %d receivers, %d senders", receivers, senders)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
