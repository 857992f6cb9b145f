package dmxp

import (
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// Stopped peers (PROTOCOL.md §11.8): a position held by a live peer that does not move is
// repaired once it has stayed stuck for the unblock timeout; the holder learns it by
// revocation (§11.7). The holders here are handles of this process, so alive: Recover never
// repairs their positions, only the unblock does.

const shortUnblock = 100 * time.Millisecond

// expectHolderRecord checks that the holder's peer record is still its own: the unblock
// neither takes it over nor frees it, and the intent it set for position is still there.
func expectHolderRecord(t *testing.T, holder *Channel, role Role, position uint64) {
	t.Helper()
	r := holder.sendPeer
	if role == RoleConsumer {
		r = holder.recvPeer
	}
	if r == nil || load32(r, peerPid) != uint32(os.Getpid()) {
		t.Fatal("the holder's record was taken over or freed")
	}
	if load32(r, peerIntentCount) != 1 || load64(r, peerIntentPosition) != position {
		t.Fatalf("the holder's intent is %d at %d; want 1 at %d",
			load32(r, peerIntentCount), load64(r, peerIntentPosition), position)
	}
}

// A producer claims position 0 and never publishes it while position 1 holds a message: a
// consumer with a short unblock timeout gets a LostError for 0, then the message at 1. The
// stalled producer's publish is then revoked and writes neither sequence nor metadata.
func TestUnblockStoppedProducer(t *testing.T) {
	receives := []struct {
		name    string
		receive func(c *Channel, buf []byte) error
	}{
		{"ReceiveTimeout", func(c *Channel, buf []byte) error {
			_, err := c.ReceiveTimeout(buf, 5*time.Second)
			return err
		}},
		{"TryReceive", func(c *Channel, buf []byte) error {
			for deadline := time.Now().Add(5 * time.Second); ; {
				_, err := c.TryReceive(buf)
				if err != ErrEmpty || time.Now().After(deadline) {
					return err
				}
			}
		}},
	}
	for _, r := range receives {
		t.Run(r.name, func(t *testing.T) {
			seg := newTestSegment(t, 1<<20)
			mustChannel(t, seg, 1, 8)
			stalled := registered(t, seg, 1, RoleProducer)
			cons := registered(t, seg, 1, RoleConsumer)
			cons.SetUnblockTimeout(shortUnblock)
			if cons.UnblockTimeout() != shortUnblock {
				t.Fatalf("UnblockTimeout() = %v", cons.UnblockTimeout())
			}
			sender, err := seg.OpenChannel(1)
			if err != nil {
				t.Fatal(err)
			}
			claimInFlight(t, stalled, 0)
			sendText(t, sender, "behind", 1)

			buf := make([]byte, MsgInline)
			start := time.Now()
			err = r.receive(cons, buf)
			elapsed := time.Since(start)
			expectLost(t, err, 0)
			if elapsed < shortUnblock {
				t.Fatalf("unblocked after %v, before the unblock timeout", elapsed)
			}
			meta, err := cons.ReceiveTimeout(buf, 5*time.Second)
			expectMessage(t, meta, err, buf, 1, "behind")
			if st := cons.Stats(); st.Lost != 1 {
				t.Fatalf("consumer stats %+v; want one lost", st)
			}
			expectHolderRecord(t, stalled, RoleProducer, 0)

			// The stalled producer resumes: revoked, and the slot (freed by the consumer for
			// the next lap) keeps the sequence and the tombstone's metadata.
			_, err = stalled.finishSend(0, []byte("late"), &SendOptions{MessageType: 7})
			expectRevoked(t, err, 0, 1)
			if stalled.Stats().Revoked != 1 {
				t.Fatalf("producer stats %+v; want one revoked", stalled.Stats())
			}
			info := cons.PeekSlot(0)
			if info.Sequence != 8 {
				t.Fatalf("slot 0 sequence %d; want 8 (freed for the next lap)", info.Sequence)
			}
			if m := info.Meta; m.Flags&FlagLost == 0 || m.MessageID != 0 || m.MessageType != 0 || m.PayloadLen != 0 || m.SenderPID != 0 {
				t.Fatalf("slot 0 meta %+v; want the tombstone's", m)
			}
			if stalled.sendPeer == nil || load32(stalled.sendPeer, peerIntentCount) != 0 {
				t.Fatal("the revoked producer did not end its intent")
			}
			// The ring flows on.
			sendText(t, sender, "next", 2)
			recvText(t, cons, "next", 2)
		})
	}
}

// A consumer claims position 0 of a full ring and never frees it: a producer with a short
// unblock timeout sends; the stalled consumer's free is then revoked, and the message the
// producer wrote into the slot is received intact.
func TestUnblockStoppedConsumer(t *testing.T) {
	sends := []struct {
		name string
		send func(c *Channel, payload []byte) (uint64, error)
	}{
		{"SendTimeout", func(c *Channel, payload []byte) (uint64, error) {
			return c.SendTimeout(payload, 5*time.Second)
		}},
		{"TrySend", func(c *Channel, payload []byte) (uint64, error) {
			for deadline := time.Now().Add(5 * time.Second); ; {
				id, err := c.TrySend(payload)
				if err != ErrFull || time.Now().After(deadline) {
					return id, err
				}
				time.Sleep(100 * time.Microsecond)
			}
		}},
	}
	for _, s := range sends {
		t.Run(s.name, func(t *testing.T) {
			seg := newTestSegment(t, 1<<20)
			mustChannel(t, seg, 2, 2)
			prod := registered(t, seg, 2, RoleProducer)
			stalled := registered(t, seg, 2, RoleConsumer)
			prod.SetUnblockTimeout(shortUnblock)
			sendText(t, prod, "a", 0)
			sendText(t, prod, "b", 1)
			position, count, err := stalled.claimRecv(1, -1)
			if err != nil || position != 0 || count != 1 {
				t.Fatalf("claim: %d %d %v", position, count, err)
			}

			start := time.Now()
			id, err := s.send(prod, []byte("c"))
			elapsed := time.Since(start)
			if err != nil || id != 2 {
				t.Fatalf("send: id %d err %v; want id 2", id, err)
			}
			if elapsed < shortUnblock {
				t.Fatalf("unblocked after %v, before the unblock timeout", elapsed)
			}
			expectHolderRecord(t, stalled, RoleConsumer, 0)

			// The stalled consumer resumes: revoked, nothing delivered, and its failed free
			// leaves the next lap's message in place.
			buf := make([]byte, MsgInline)
			_, err = stalled.finishReceive(recvClaim{count: 1}, buf, new(Meta))
			expectRevoked(t, err, 0, 1)
			if stalled.Stats().Revoked != 1 {
				t.Fatalf("consumer stats %+v; want one revoked", stalled.Stats())
			}
			if seq := prod.PeekSlot(0).Sequence; seq != 3 {
				t.Fatalf("slot 0 sequence %d; want 3 (message 2 published)", seq)
			}
			reader, err := seg.OpenChannel(2)
			if err != nil {
				t.Fatal(err)
			}
			recvText(t, reader, "b", 1)
			recvText(t, reader, "c", 2)
		})
	}
}

// With the unblock disabled (0, or a negative timeout), a position held by a live peer stays
// stuck for a whole timeout longer than UnblockTimeout; the holder then finishes as usual.
func TestUnblockDisabled(t *testing.T) {
	wait := UnblockTimeout + UnblockTimeout/2
	buf := make([]byte, MsgInline)
	t.Run("receive", func(t *testing.T) {
		seg := newTestSegment(t, 1<<20)
		mustChannel(t, seg, 1, 8)
		stalled := registered(t, seg, 1, RoleProducer)
		cons := registered(t, seg, 1, RoleConsumer)
		cons.SetUnblockTimeout(0)
		claimInFlight(t, stalled, 0)
		sendText(t, cons, "behind", 1)
		if _, err := cons.ReceiveTimeout(buf, wait); err != ErrTimeout {
			t.Fatalf("got %v; want ErrTimeout", err)
		}
		if cons.Head() != 0 || cons.PeekSlot(0).Sequence != 0 || cons.Stats().Lost != 0 {
			t.Fatalf("head %d, slot 0 sequence %d, stats %+v: the claim was repaired",
				cons.Head(), cons.PeekSlot(0).Sequence, cons.Stats())
		}
		if _, err := stalled.finishSend(0, []byte("late"), &SendOptions{}); err != nil {
			t.Fatalf("publish: %v", err)
		}
		recvText(t, cons, "late", 0)
		recvText(t, cons, "behind", 1)
	})
	t.Run("send", func(t *testing.T) {
		seg := newTestSegment(t, 1<<20)
		mustChannel(t, seg, 2, 2)
		prod := registered(t, seg, 2, RoleProducer)
		stalled := registered(t, seg, 2, RoleConsumer)
		prod.SetUnblockTimeout(-time.Second)
		if prod.UnblockTimeout() != 0 {
			t.Fatalf("UnblockTimeout() = %v; want 0 (never)", prod.UnblockTimeout())
		}
		sendText(t, prod, "a", 0)
		sendText(t, prod, "b", 1)
		if position, _, err := stalled.claimRecv(1, -1); err != nil || position != 0 {
			t.Fatalf("claim: %d %v", position, err)
		}
		if _, err := prod.SendTimeout([]byte("c"), wait); err != ErrTimeout {
			t.Fatalf("got %v; want ErrTimeout", err)
		}
		if prod.Tail() != 2 || prod.PeekSlot(0).Sequence != 1 {
			t.Fatalf("tail %d, slot 0 sequence %d: the claim was repaired", prod.Tail(), prod.PeekSlot(0).Sequence)
		}
		var meta Meta
		_, err := stalled.finishReceive(recvClaim{count: 1}, buf, &meta)
		expectMessage(t, meta, err, buf, 0, "a")
		sendText(t, prod, "c", 2)
	})
}

// While a channel stays stuck at one position, repair passes back off: the pause between two
// passes doubles from StuckGrace up to 160 ms (about 9 passes in a second, against about 100
// at a fixed StuckGrace).
func TestRepairPassesBackOff(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	mustChannel(t, seg, 1, 8)
	stalled := registered(t, seg, 1, RoleProducer)
	cons := registered(t, seg, 1, RoleConsumer)
	cons.SetUnblockTimeout(0)
	claimInFlight(t, stalled, 0)
	buf := make([]byte, MsgInline)
	if _, err := cons.ReceiveTimeout(buf, time.Second); err != ErrTimeout {
		t.Fatalf("got %v; want ErrTimeout", err)
	}
	passes := atomic.LoadUint64(&cons.repairPasses)
	if passes < 3 || passes > 20 {
		t.Fatalf("%d repair passes in a second stuck; want 3 to 20", passes)
	}
	if _, err := stalled.finishSend(0, []byte("late"), &SendOptions{}); err != nil {
		t.Fatal(err)
	}
	recvText(t, cons, "late", 0)
}
