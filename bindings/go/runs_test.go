package dmxp

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"
)

// Messages longer than one slot: runs (PROTOCOL.md §12).

// runPayload is n deterministic bytes for message seed.
func runPayload(n int, seed uint64) []byte {
	p := make([]byte, n)
	x := seed*0x9E3779B97F4A7C15 + 1
	for i := range p {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		p[i] = byte(x)
	}
	return p
}

// runChannel creates channel id with capacity slots and the message limit limit.
func runChannel(t testing.TB, seg *Segment, id uint32, capacity uint64, limit uint32) *Channel {
	t.Helper()
	ch, err := seg.CreateChannelWith(id, capacity, ChannelOptions{MaxMessageSize: limit})
	if err != nil {
		t.Fatalf("create channel %d (capacity %d, limit %d): %v", id, capacity, limit, err)
	}
	return ch
}

// rawRunSlot writes slot p's metadata and run fields as a (possibly hostile) peer would,
// without a payload, and publishes it.
func rawRunSlot(c *Channel, p, id uint64, flags uint16, length, slots, index uint32) {
	slot := c.slot(p)
	store64(slot, slotMessageID, id)
	store64(slot, slotTimestamp, 0)
	store32(slot, slotChannelID, c.ID())
	store32(slot, slotMessageType, 0)
	store32(slot, slotSenderPid, 0)
	store32(slot, slotRuntimeFlags, uint32(flags)<<16)
	store32(slot, slotPayloadLen, length)
	store32(slot, slotRunSlots, slots)
	store32(slot, slotRunIndex, index)
	store64(slot, slotSequence, p+1)
	c.notifyConsumers()
}

// claimRaw claims n positions of an idle ring (one CAS) without publishing them.
func claimRaw(t testing.TB, c *Channel, n uint64) uint64 {
	t.Helper()
	first, count, err := c.claimSend(n)
	if err != nil || count != n {
		t.Fatalf("claim %d: first %d count %d err %v", n, first, count, err)
	}
	return first
}

func expectCorruptRun(t *testing.T, err error, id uint64) {
	t.Helper()
	var cm *CorruptMessageError
	if !errors.As(err, &cm) || cm.MessageID != id || !errors.Is(err, ErrCorruptMessage) {
		t.Fatalf("got %v; want a CorruptMessageError for message %d", err, id)
	}
}

func TestRunLayout(t *testing.T) {
	if entFlags != 4 || entMaxMessageSize != 80 || slotRunSlots != 48 || slotRunIndex != 52 ||
		FlagRun != 0x0004 || FlagRunCont != 0x0008 || ChannelFlagRuns != 1 || peerIntentFlags != 44 ||
		intentFlagRun != 1 {
		t.Fatal("run layout differs from PROTOCOL.md §12")
	}
	for n, k := range map[int]uint64{0: 1, 960: 1, 961: 2, 1920: 2, 1921: 3, 65536: 69} {
		if runSlots(n) != k {
			t.Errorf("runSlots(%d) = %d, want %d", n, runSlots(n), k)
		}
	}
}

// Creation with a message limit: the entry's flags and max_message_size, the accessors, and
// a limit beyond the ring refused before anything is created.
func TestCreateWithMaxMessageSize(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	ch := runChannel(t, seg, 0, 8, 5000)
	if !ch.CarriesRuns() || ch.MaxMessageSize() != 5000 || ch.Capacity() != 8 {
		t.Fatalf("runs %v limit %d capacity %d", ch.CarriesRuns(), ch.MaxMessageSize(), ch.Capacity())
	}
	e, _ := seg.Entry(0)
	if e.Flags != ChannelFlagRuns || e.MaxMessageSize != 5000 {
		t.Fatalf("entry flags %#x max_message_size %d", e.Flags, e.MaxMessageSize)
	}
	again, err := seg.OpenChannel(0)
	if err != nil || again.MaxMessageSize() != 5000 || again.Geometry().Flags != ChannelFlagRuns {
		t.Fatalf("reopen: %v", err)
	}
	// Up to one slot: a channel without runs, as CreateChannel makes.
	for id, limit := range map[uint32]uint32{1: 0, 2: 100, 4: MsgInline} {
		plain := runChannel(t, seg, id, 8, limit)
		e, _ := seg.Entry(id)
		if plain.CarriesRuns() || plain.MaxMessageSize() != MsgInline || e.Flags != 0 || e.MaxMessageSize != 0 {
			t.Fatalf("limit %d: runs %v max %d entry %+v", limit, plain.CarriesRuns(), plain.MaxMessageSize(), e)
		}
	}
	_, err = seg.CreateChannelWith(3, 4, ChannelOptions{MaxMessageSize: 4*MsgInline + 1})
	var bad *InvalidMaxMessageSizeError
	if !errors.As(err, &bad) || !errors.Is(err, ErrInvalidArgument) || bad.Capacity != 4 || bad.MaxMessageSize != 4*MsgInline+1 {
		t.Fatalf("got %v; want an InvalidMaxMessageSizeError", err)
	}
	if e, _ := seg.Entry(3); e.State != StateEmpty || e.Capacity != 0 {
		t.Fatalf("refused creation left entry %+v", e)
	}
	if _, err := seg.CreateChannelWith(3, 4, ChannelOptions{MaxMessageSize: 4 * MsgInline}); err != nil {
		t.Fatalf("limit capacity × 960: %v", err)
	}
}

// Entry checks #10 and #11 (PROTOCOL.md §12.1) at open, with typed errors.
func TestOpenRefusesBadRunFields(t *testing.T) {
	e1 := EntryOffset(1) // capacity 2
	cases := []struct {
		name         string
		flags, size  uint64
		kind         CorruptionKind
		field        string
		value, limit uint64
	}{
		{"unknown flag bit", 0x4, 0, UnknownChannelFlags, "flags", 0x4, 0},
		{"unknown flag bit beside RUNS", 0x81, 1500, UnknownChannelFlags, "flags", 0x81, 0},
		{"size without RUNS", 0, 1500, MaxMessageSizeOutOfRange, "max_message_size", 1500, 0},
		{"RUNS with size 960", 1, 960, MaxMessageSizeOutOfRange, "max_message_size", 960, 2 * MsgInline},
		{"RUNS with size 0", 1, 0, MaxMessageSizeOutOfRange, "max_message_size", 0, 2 * MsgInline},
		{"RUNS past the ring", 1, 2*MsgInline + 1, MaxMessageSizeOutOfRange, "max_message_size", 2*MsgInline + 1, 2 * MsgInline},
	}
	good := validSegmentBytes(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte(nil), good...)
			putLE(b, e1+entFlags, 4, tc.flags)
			putLE(b, e1+entMaxMessageSize, 4, tc.size)
			seg, err := openBytes(t, b, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			_, err = seg.OpenChannel(1)
			var ce *CorruptionError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want a CorruptionError", err)
			}
			if ce.Kind != tc.kind || ce.Field != tc.field || ce.Channel != 1 || ce.Value != tc.value || ce.Limit != tc.limit {
				t.Errorf("got %+v, want kind %v field %s value %d limit %d", ce, tc.kind, tc.field, tc.value, tc.limit)
			}
			if ce.Error() == "" || ce.Kind.String() != map[CorruptionKind]string{UnknownChannelFlags: "UnknownChannelFlags", MaxMessageSizeOutOfRange: "MaxMessageSizeOutOfRange"}[tc.kind] {
				t.Errorf("kind name %s", ce.Kind)
			}
			if err := seg.ValidateAll(); !errors.As(err, &ce) || ce.Kind != tc.kind {
				t.Errorf("ValidateAll: %v", err)
			}
			if _, err := seg.OpenChannel(0); err != nil {
				t.Errorf("channel 0: %v", err)
			}
		})
	}
	// A valid run channel in the same bytes opens.
	b := append([]byte(nil), good...)
	putLE(b, e1+entFlags, 4, 1)
	putLE(b, e1+entMaxMessageSize, 4, 2*MsgInline)
	seg, err := openBytes(t, b, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ch, err := seg.OpenChannel(1); err != nil || ch.MaxMessageSize() != 2*MsgInline {
		t.Fatalf("valid run channel: %v", err)
	}
}

// checkRunsRefused asserts that err is the refusal of channel id by RequireSingleSlot.
func checkRunsRefused(t *testing.T, err error, id uint32) {
	t.Helper()
	var rn *RunsNotSupportedError
	if !errors.As(err, &rn) || !errors.Is(err, ErrRunsNotSupported) {
		t.Fatalf("got %v (%T); want a *RunsNotSupportedError", err, err)
	}
	if rn.Channel != id {
		t.Errorf("RunsNotSupportedError.Channel = %d, want %d", rn.Channel, id)
	}
	want := fmt.Sprintf("channel %d carries messages longer than MsgInline (960 bytes)", id)
	if msg := rn.Error(); !strings.HasPrefix(msg, "dmxp: "+want) || !strings.Contains(err.Error(), msg) {
		t.Errorf("message %q does not start with %q", msg, "dmxp: "+want)
	}
	for _, other := range []error{ErrCorrupt, ErrInvalidArgument, ErrTooLarge, ErrNotFound} {
		if errors.Is(err, other) {
			t.Errorf("%v matches %v", err, other)
		}
	}
}

// The opt-in refusal of runs (PROTOCOL.md §12.1): RequireSingleSlot refuses a channel with
// ChannelFlagRuns, whoever opened it and however, with a typed error naming the channel, and
// passes single-slot channels; it answers from the flags cached at open.
func TestRequireSingleSlot(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	runs := runChannel(t, seg, 7, 8, MsgInline+1)
	checkRunsRefused(t, runs.RequireSingleSlot(), 7)
	checkRunsRefused(t, fmt.Errorf("opening: %w", runs.RequireSingleSlot()), 7)
	again, err := seg.OpenChannel(7)
	if err != nil {
		t.Fatal(err)
	}
	checkRunsRefused(t, again.RequireSingleSlot(), 7)
	existing, created, err := seg.OpenOrCreateChannel(7, 8, time.Second)
	if err != nil || created {
		t.Fatalf("open-or-create of the existing channel: created %v, %v", created, err)
	}
	checkRunsRefused(t, existing.RequireSingleSlot(), 7)
	most := runChannel(t, seg, 9, 16, 16*MsgInline)
	checkRunsRefused(t, most.RequireSingleSlot(), 9)
	// The refusal changes nothing: the handle still carries a run both ways.
	if _, err := most.TrySend(runPayload(3000, 1)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, most.MaxMessageSize())
	if meta, err := most.TryReceive(buf); err != nil || !bytes.Equal(buf[:meta.PayloadLen], runPayload(3000, 1)) {
		t.Fatalf("receive after the refusal: %v", err)
	}

	// Single-slot channels pass: CreateChannel, and limits of 0 and MsgInline.
	plain, err := seg.CreateChannel(10, 4)
	if err != nil {
		t.Fatal(err)
	}
	for id, limit := range map[uint32]uint32{11: 0, 12: MsgInline} {
		if err := runChannel(t, seg, id, 4, limit).RequireSingleSlot(); err != nil {
			t.Errorf("channel %d (limit %d): %v", id, limit, err)
		}
	}
	if err := plain.RequireSingleSlot(); err != nil {
		t.Fatalf("single-slot channel: %v", err)
	}
	reopened, err := seg.OpenChannel(10)
	if err != nil {
		t.Fatal(err)
	}
	if err := reopened.RequireSingleSlot(); err != nil {
		t.Fatalf("single-slot channel reopened: %v", err)
	}

	// The answer comes from the flags cached at open: a peer that rewrites the entries later
	// changes neither handle's answer, and a handle opened afterwards sees the new flags.
	pe, re := plain.entry, again.entry
	store32(pe, entFlags, ChannelFlagRuns)
	store32(pe, entMaxMessageSize, 4*MsgInline)
	store32(re, entFlags, 0)
	store32(re, entMaxMessageSize, 0)
	if err := plain.RequireSingleSlot(); err != nil {
		t.Errorf("single-slot handle after the entry was rewritten: %v", err)
	}
	checkRunsRefused(t, again.RequireSingleSlot(), 7)
	if later, err := seg.OpenChannel(10); err != nil {
		t.Fatal(err)
	} else {
		checkRunsRefused(t, later.RequireSingleSlot(), 10)
	}
	if later, err := seg.OpenChannel(7); err != nil {
		t.Fatal(err)
	} else if err := later.RequireSingleSlot(); err != nil {
		t.Errorf("channel 7 opened without RUNS: %v", err)
	}
	store32(pe, entFlags, 0)
	store32(pe, entMaxMessageSize, 0)
	store32(re, entFlags, ChannelFlagRuns)
	store32(re, entMaxMessageSize, MsgInline+1)
	if err := seg.ValidateAll(); err != nil {
		t.Fatal(err)
	}
}

// Runs of every interesting length, over several laps of a small ring, with every receive
// form; the slot fields are as §12.2 says.
func TestRunRoundTrip(t *testing.T) {
	const capacity = 128
	limit := uint32(capacity * MsgInline)
	seg := newTestSegment(t, segmentSize(capacity))
	ch := runChannel(t, seg, 0, capacity, limit)
	buf := make([]byte, limit)
	sizes := []int{961, 1920, 1921, 65536, int(limit), 24, 960, 0}
	next := uint64(0)
	for round := 0; round < 4; round++ {
		for i, n := range sizes {
			payload := runPayload(n, uint64(round*100+i))
			opts := SendOptions{MessageType: uint32(n), Flags: 0x4200, TimestampNs: 77}
			id, err := ch.SendWith(payload, opts, 5*time.Second)
			if err != nil || id != next {
				t.Fatalf("round %d: send %d bytes: id %d err %v; want id %d", round, n, id, err, next)
			}
			k := runSlots(n)
			for j := uint64(0); j < k; j++ {
				info := ch.PeekSlot((id + j) % capacity)
				wantFlags, wantSlots, wantIndex := uint16(0x4200), uint32(0), uint32(0)
				if k > 1 {
					wantFlags |= FlagRun
					if j > 0 {
						wantFlags = 0x4200 | FlagRunCont
					}
					wantSlots, wantIndex = uint32(k), uint32(j)
				}
				if info.Sequence != id+j+1 || info.Meta.MessageID != id || info.Meta.PayloadLen != uint32(n) ||
					info.Meta.Flags != wantFlags || info.RunSlots != wantSlots || info.RunIndex != wantIndex ||
					info.Meta.MessageType != uint32(n) || info.Meta.TimestampNs != 77 {
					t.Fatalf("round %d, %d bytes, slot %d of %d: %+v (meta %+v)", round, n, j, k, info, info.Meta)
				}
			}
			next += k
			check := func(meta Meta, got []byte) {
				t.Helper()
				wantFlags := uint16(0x4200)
				if k > 1 {
					wantFlags |= FlagRun
				}
				if meta.MessageID != id || meta.PayloadLen != uint32(n) || meta.Flags != wantFlags ||
					meta.MessageType != uint32(n) || !bytes.Equal(got, payload) {
					t.Fatalf("round %d: %d bytes: got meta %+v, %d bytes (equal %v)", round, n, meta, len(got), bytes.Equal(got, payload))
				}
			}
			switch (round + i) % 3 {
			case 0:
				meta, err := ch.TryReceive(buf)
				if err != nil {
					t.Fatalf("TryReceive %d bytes: %v", n, err)
				}
				check(meta, buf[:meta.PayloadLen])
			case 1:
				meta, err := ch.ReceiveTimeout(buf, time.Second)
				if err != nil {
					t.Fatalf("ReceiveTimeout %d bytes: %v", n, err)
				}
				check(meta, buf[:meta.PayloadLen])
			case 2:
				res, err := ch.TryReceiveBatch(16, func(meta Meta, got []byte) { check(meta, got) })
				if err != nil || res.Delivered != 1 || res.Dropped != 0 {
					t.Fatalf("batch %d bytes: %+v %v", n, res, err)
				}
			}
		}
	}
	if next < 4*capacity {
		t.Fatalf("only %d positions: fewer than four laps", next)
	}
	if ch.Head() != ch.Tail() || ch.Stats() != (Stats{}) {
		t.Fatalf("head %d tail %d stats %+v", ch.Head(), ch.Tail(), ch.Stats())
	}
	if _, err := ch.TryReceive(buf); err != ErrEmpty {
		t.Fatalf("after the rounds: %v", err)
	}
}

// Single-slot messages and runs interleaved arrive in order; a batch stops before a run and
// a batch that starts at a run delivers it alone.
func TestRunsMixedInOrder(t *testing.T) {
	seg := newTestSegment(t, segmentSize(64))
	ch := runChannel(t, seg, 0, 64, 8000)
	var want [][]byte
	send := func(n int) {
		p := runPayload(n, uint64(len(want)))
		if _, err := ch.TrySend(p); err != nil {
			t.Fatalf("send %d bytes: %v", n, err)
		}
		want = append(want, p)
	}
	for _, n := range []int{10, 20, 3000, 30, 961, 8000, 960, 1} {
		send(n)
	}
	if n, err := ch.TrySendBatch([][]byte{runPayload(5, 100), runPayload(6, 101)}, SendOptions{}); n != 2 || err != nil {
		t.Fatalf("batch send: %d %v", n, err)
	}
	want = append(want, runPayload(5, 100), runPayload(6, 101))
	var got [][]byte
	var batches []int
	for {
		res, err := ch.TryReceiveBatch(64, func(_ Meta, p []byte) { got = append(got, append([]byte(nil), p...)) })
		if err == ErrEmpty {
			break
		}
		if err != nil || res.Dropped != 0 {
			t.Fatalf("batch: %+v %v", res, err)
		}
		batches = append(batches, res.Delivered)
	}
	if fmt.Sprint(batches) != "[2 1 1 1 1 4]" {
		t.Errorf("batch sizes %v, want [2 1 1 1 1 4]", batches)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("message %d: %d bytes, want %d", i, len(got[i]), len(want[i]))
		}
	}
}

// Too large: nothing sent, whatever the call; a batch takes single-slot items only.
func TestRunTooLarge(t *testing.T) {
	seg := newTestSegment(t, segmentSize(8, 8))
	ch := runChannel(t, seg, 0, 8, 4000)
	plain := mustChannel(t, seg, 1, 8)
	expect := func(err error, n, limit int) {
		t.Helper()
		var tl *TooLargeError
		if !errors.As(err, &tl) || !errors.Is(err, ErrTooLarge) || tl.Len != n || tl.Limit != limit {
			t.Fatalf("got %v; want TooLargeError{%d, %d}", err, n, limit)
		}
	}
	_, err := ch.TrySend(make([]byte, 4001))
	expect(err, 4001, 4000)
	_, err = ch.Send(make([]byte, 4001))
	expect(err, 4001, 4000)
	_, err = ch.SendTimeout(make([]byte, 1<<20), time.Second)
	expect(err, 1<<20, 4000)
	_, err = plain.TrySend(make([]byte, 961))
	expect(err, 961, MsgInline)
	n, err := ch.TrySendBatch([][]byte{{1}, make([]byte, 961)}, SendOptions{})
	expect(err, 961, MsgInline)
	if n != 0 {
		t.Fatalf("batch took %d", n)
	}
	_, err = ch.SendBatch([][]byte{make([]byte, 2000)}, SendOptions{}, time.Second)
	expect(err, 2000, MsgInline)
	if ch.Tail() != 0 || plain.Tail() != 0 {
		t.Fatalf("tails %d %d: something was claimed", ch.Tail(), plain.Tail())
	}
	if id, err := ch.TrySend(make([]byte, 4000)); err != nil || id != 0 || ch.Tail() != 5 {
		t.Fatalf("send at the limit: %d %v tail %d", id, err, ch.Tail())
	}
}

// A buffer too small for a run consumes nothing; a large enough one then gets it.
func TestRunBufferTooSmall(t *testing.T) {
	seg := newTestSegment(t, segmentSize(16))
	ch := runChannel(t, seg, 0, 16, 10000)
	payload := runPayload(5000, 1)
	if _, err := ch.TrySend(payload); err != nil {
		t.Fatal(err)
	}
	for _, receive := range []func([]byte) (Meta, error){
		ch.TryReceive,
		func(b []byte) (Meta, error) { return ch.ReceiveTimeout(b, time.Second) },
	} {
		for _, size := range []int{MsgInline, 4999} {
			_, err := receive(make([]byte, size))
			var small *BufferTooSmallError
			if !errors.As(err, &small) || small.Needed != 5000 || small.Available != size {
				t.Fatalf("buffer %d: got %v; want BufferTooSmallError{5000, %d}", size, err, size)
			}
			if ch.Head() != 0 || !ch.HasMessage() {
				t.Fatalf("head %d: something was consumed", ch.Head())
			}
		}
	}
	buf := make([]byte, 5000)
	meta, err := ch.TryReceive(buf)
	if err != nil || meta.PayloadLen != 5000 || !bytes.Equal(buf, payload) || ch.Head() != 6 {
		t.Fatalf("got %+v %v head %d", meta, err, ch.Head())
	}
}

// A corrupt run is dropped and counted once, whatever is wrong with it, by every receive
// form; its leftovers are passed over and the channel keeps flowing.
func TestCorruptRuns(t *testing.T) {
	const capacity = 16
	cases := []struct {
		name string
		// write publishes a bad run at the claimed positions first..first+claim-1.
		claim uint64
		write func(c *Channel, first uint64)
	}{
		{"run_slots past the ring", 1, func(c *Channel, p uint64) {
			rawRunSlot(c, p, p, FlagRun, 5000, capacity+1, 0)
		}},
		{"run_slots of 1", 1, func(c *Channel, p uint64) {
			rawRunSlot(c, p, p, FlagRun, 961, 1, 0)
		}},
		{"payload_len disagrees with run_slots", 3, func(c *Channel, p uint64) {
			rawRunSlot(c, p+1, p, FlagRunCont, 1500, 3, 1)
			rawRunSlot(c, p+2, p, FlagRunCont, 1500, 3, 2)
			rawRunSlot(c, p, p, FlagRun, 1500, 3, 0)
		}},
		{"payload_len past the limit", 6, func(c *Channel, p uint64) {
			for i := uint64(1); i < 6; i++ {
				rawRunSlot(c, p+i, p, FlagRunCont, 5001, 6, uint32(i))
			}
			rawRunSlot(c, p, p, FlagRun, 5001, 6, 0)
		}},
		{"continuation with a wrong message_id", 3, func(c *Channel, p uint64) {
			rawRunSlot(c, p+1, p, FlagRunCont, 2000, 3, 1)
			rawRunSlot(c, p+2, p+7, FlagRunCont, 2000, 3, 2)
			rawRunSlot(c, p, p, FlagRun, 2000, 3, 0)
		}},
		{"continuation with a wrong run_index", 3, func(c *Channel, p uint64) {
			rawRunSlot(c, p+1, p, FlagRunCont, 2000, 3, 2)
			rawRunSlot(c, p+2, p, FlagRunCont, 2000, 3, 2)
			rawRunSlot(c, p, p, FlagRun, 2000, 3, 0)
		}},
		{"continuation without RUN_CONT", 2, func(c *Channel, p uint64) {
			rawRunSlot(c, p+1, p, 0, 1500, 2, 1)
			rawRunSlot(c, p, p, FlagRun, 1500, 2, 0)
		}},
		{"continuation with another payload_len", 2, func(c *Channel, p uint64) {
			rawRunSlot(c, p+1, p, FlagRunCont, 1501, 2, 1)
			rawRunSlot(c, p, p, FlagRun, 1500, 2, 0)
		}},
		{"continuation not published", 2, func(c *Channel, p uint64) {
			rawRunSlot(c, p, p, FlagRun, 1500, 2, 0)
			rawRunSlot(c, p+1, p, FlagRunCont, 1500, 2, 1) // published after the start
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seg := newTestSegment(t, segmentSize(capacity))
			ch := runChannel(t, seg, 0, capacity, 5000)
			buf := make([]byte, 5000)
			for form := 0; form < 3; form++ {
				// Something in the ring before, to take the bad run round the ring.
				if _, err := ch.TrySend(runPayload(1000*form+10, 9)); err != nil {
					t.Fatal(err)
				}
				if _, err := ch.TryReceive(buf); err != nil {
					t.Fatal(err)
				}
				first := claimRaw(t, ch, tc.claim)
				if tc.name == "continuation not published" {
					// The start is published first (a broken peer): the consumer sees it
					// before its continuation.
					rawRunSlot(ch, first, first, FlagRun, 1500, 2, 0)
				} else {
					tc.write(ch, first)
				}
				after := runPayload(1200, uint64(form))
				var corrupt error
				switch form {
				case 0:
					_, corrupt = ch.TryReceive(buf)
				case 1:
					_, corrupt = ch.ReceiveTimeout(buf, time.Second)
				case 2:
					res, err := ch.TryReceiveBatch(16, func(Meta, []byte) { t.Fatal("delivered a corrupt run") })
					if err != nil || res.Dropped != 1 || res.Delivered != 0 {
						t.Fatalf("batch %+v %v", res, err)
					}
					corrupt = &CorruptMessageError{MessageID: first}
				}
				expectCorruptRun(t, corrupt, first)
				if tc.name == "continuation not published" {
					rawRunSlot(ch, first+1, first, FlagRunCont, 1500, 2, 1)
				}
				id, err := ch.TrySend(after)
				if err != nil {
					t.Fatal(err)
				}
				meta, err := ch.TryReceive(buf)
				if err != nil || meta.MessageID != id || !bytes.Equal(buf[:meta.PayloadLen], after) {
					t.Fatalf("after the corrupt run: %+v %v (want message %d)", meta, err, id)
				}
				if st := ch.Stats(); st.Corrupt != uint64(form+1) || st.Lost != 0 || st.Revoked != 0 {
					t.Fatalf("stats %+v after %d corrupt runs", st, form+1)
				}
				if ch.Head() != ch.Tail() {
					t.Fatalf("head %d tail %d", ch.Head(), ch.Tail())
				}
			}
		})
	}
}

// A continuation whose start is gone is passed over silently.
func TestOrphanContinuation(t *testing.T) {
	seg := newTestSegment(t, segmentSize(8))
	ch := runChannel(t, seg, 0, 8, 4000)
	buf := make([]byte, 4000)
	for form := 0; form < 2; form++ {
		p := claimRaw(t, ch, 2)
		rawRunSlot(ch, p, p+100, FlagRunCont, 2000, 3, 1)
		rawRunSlot(ch, p+1, p+100, FlagRunCont, 2000, 3, 2)
		id, err := ch.TrySend([]byte("after"))
		if err != nil {
			t.Fatal(err)
		}
		if form == 0 {
			meta, err := ch.TryReceive(buf)
			if err != nil || meta.MessageID != id || string(buf[:meta.PayloadLen]) != "after" {
				t.Fatalf("got %+v %v", meta, err)
			}
		} else {
			var got []string
			for ch.Head() != ch.Tail() {
				if _, err := ch.TryReceiveBatch(8, func(_ Meta, b []byte) { got = append(got, string(b)) }); err != nil {
					t.Fatal(err)
				}
			}
			if fmt.Sprint(got) != "[after]" {
				t.Fatalf("got %q", got)
			}
		}
	}
	if ch.Stats() != (Stats{}) {
		t.Fatalf("stats %+v: orphans were counted", ch.Stats())
	}
}

// A run whose continuations are published and whose first slot is not is a send in flight
// with something queued behind the head: a non-blocking receive waits and delivers it.
func TestRunPendingStartWaited(t *testing.T) {
	seg := newTestSegment(t, segmentSize(16))
	ch := runChannel(t, seg, 0, 16, 8000)
	slow, err := seg.OpenChannel(0)
	if err != nil {
		t.Fatal(err)
	}
	payload := runPayload(4000, 5)
	k := runSlots(len(payload))
	first, err := slow.claimRun(k)
	if err != nil || first != 0 {
		t.Fatalf("claim: %d %v", first, err)
	}
	opts := &SendOptions{}
	for i := uint64(1); i < k; i++ {
		part := payload[i*MsgInline : min64(uint64(len(payload)), (i+1)*MsgInline)]
		if !slow.publishSlot(first+i, first, part, opts, 1, uint32(len(payload)), FlagRunCont, k, i) {
			t.Fatal("revoked")
		}
	}
	if q := ch.queuedBehind(0); q != queuedYes {
		t.Fatalf("queuedBehind %d", q)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(30 * time.Millisecond)
		slow.publishSlot(first, first, payload[:MsgInline], opts, 1, uint32(len(payload)), FlagRun, k, 0)
	}()
	t.Cleanup(wg.Wait)
	buf := make([]byte, 8000)
	meta, err := ch.TryReceive(buf)
	if err != nil || meta.MessageID != 0 || !bytes.Equal(buf[:meta.PayloadLen], payload) {
		t.Fatalf("got %+v %v; want the run", meta, err)
	}
}

func min64(a, b uint64) uint64 {
	if a < b {
		return a
	}
	return b
}

// Registered handles name a run in their intent with intent_flags RUN (and a single claim
// without it), and clear both after.
func TestRunIntentFlags(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	runChannel(t, seg, 0, 16, 8000)
	prod := registered(t, seg, 0, RoleProducer)
	cons := registered(t, seg, 0, RoleConsumer)
	type seen struct{ count, flags uint32 }
	var mu sync.Mutex
	var got []seen
	setHook(t, func(step hookStep, _ uint64) {
		r := prod.sendPeer
		if step == hookBeforeFree {
			r = cons.recvPeer
		}
		if step == hookBeforePublish || step == hookBeforeFree {
			mu.Lock()
			got = append(got, seen{load32(r, peerIntentCount), load32(r, peerIntentFlags)})
			mu.Unlock()
		}
	})
	if _, err := prod.TrySend(make([]byte, 2000)); err != nil { // 3 publishes
		t.Fatal(err)
	}
	if _, err := prod.TrySend(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8000)
	for i := 0; i < 2; i++ {
		if _, err := cons.TryReceive(buf); err != nil {
			t.Fatal(err)
		}
	}
	want := []seen{{3, 1}, {3, 1}, {3, 1}, {1, 0}, {3, 1}, {1, 0}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("intents seen %v, want %v", got, want)
	}
	for _, r := range []unsafe.Pointer{prod.sendPeer, cons.recvPeer} {
		if load32(r, peerIntentCount) != 0 || load32(r, peerIntentFlags) != 0 {
			t.Fatal("intent not cleared")
		}
	}
}

// intent_flags is RUN exactly while the intent is a run (PROTOCOL.md §12.5): a handle stores
// the flags only when they change (intentSet), so after a run, and after a single send that
// follows a run, the record must show 0 again, and a run after single sends must show RUN.
func TestRunIntentFlagsFollowTheIntent(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	runChannel(t, seg, 0, 16, 8000)
	prod := registered(t, seg, 0, RoleProducer)
	cons := registered(t, seg, 0, RoleConsumer)
	var flagsAtPublish []uint32
	setHook(t, func(step hookStep, _ uint64) {
		if step == hookBeforePublish {
			flagsAtPublish = append(flagsAtPublish, load32(prod.sendPeer, peerIntentFlags))
		}
	})
	buf := make([]byte, 8000)
	for i, n := range []int{10, 10, 2000, 2000, 10, 2000} {
		flagsAtPublish = flagsAtPublish[:0]
		if _, err := prod.TrySend(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		want := uint32(0)
		if n > MsgInline {
			want = intentFlagRun
		}
		for _, f := range flagsAtPublish {
			if f != want {
				t.Fatalf("send %d (%d bytes): intent_flags %d at a publish, want %d", i, n, f, want)
			}
		}
		if _, err := cons.TryReceive(buf); err != nil {
			t.Fatal(err)
		}
		for _, r := range []unsafe.Pointer{prod.sendPeer, cons.recvPeer} {
			if load32(r, peerIntentCount) != 0 || load32(r, peerIntentFlags) != 0 {
				t.Fatalf("after message %d (%d bytes): intent %d flags %d, want 0 0", i, n,
					load32(r, peerIntentCount), load32(r, peerIntentFlags))
			}
		}
	}
}

// A dead producer's run intent (PROTOCOL.md §12.5): SKIP markers on its stuck continuations,
// then the LOST tombstone on its first position: one loss, and the ring flows.
func TestRepairDeadRunProducer(t *testing.T) {
	const capacity = 16
	seg := newTestSegment(t, 1<<20)
	runChannel(t, seg, 0, capacity, 8000)
	cons := registered(t, seg, 0, RoleConsumer)
	raw, err := seg.OpenChannel(0) // unregistered: the record below is the claim's only intent
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8000)
	for round, published := range []uint64{0, 2, 4} { // continuations published before the death
		if _, err := raw.TrySend([]byte("before")); err != nil {
			t.Fatal(err)
		}
		const k = 5
		p0, err := raw.claimRun(k)
		if err != nil {
			t.Fatal(err)
		}
		for i := uint64(1); i <= published; i++ {
			raw.publishSlot(p0+i, p0, make([]byte, MsgInline), &SendOptions{}, 1, 4000, FlagRunCont, k, i)
		}
		gone := deadPid(t)
		d := writeRecord(peerTableOf(t, seg), PeerRecords-1, gone, RuntimeC, RoleProducer, 0, 0, p0, k)
		store32(d, peerIntentFlags, intentFlagRun)
		after, err := raw.TrySend([]byte("after"))
		if err != nil {
			t.Fatal(err)
		}
		recvText(t, cons, "before", p0-1)
		report, err := cons.Recover()
		if err != nil || report != (RecoverReport{RecordsFreed: 1, Lost: 1, Skipped: k - 1 - published}) {
			t.Fatalf("round %d: Recover %+v %v", round, report, err)
		}
		if load32(d, peerPid) != 0 || load32(d, peerIntentFlags) != 0 {
			t.Fatal("record not freed")
		}
		tomb := cons.PeekSlot(p0 % capacity)
		if tomb.Meta.Flags != FlagLost || tomb.Meta.SenderPID != gone || tomb.Meta.SenderRuntime != RuntimeC || tomb.RunSlots != 0 {
			t.Fatalf("tombstone %+v", tomb)
		}
		if published < k-1 {
			if skip := cons.PeekSlot((p0 + k - 1) % capacity); skip.Meta.Flags != FlagSkip || skip.Meta.MessageID != p0+k-1 {
				t.Fatalf("marker %+v", skip.Meta)
			}
		}
		_, err = cons.TryReceive(buf)
		expectLost(t, err, p0)
		recvText(t, cons, "after", after)
		if st := cons.Stats(); st.Lost != uint64(round+1) || st.Corrupt != 0 {
			t.Fatalf("stats %+v", st)
		}
	}
	// Without intent_flags (a run repaired by a repairer that ignores it, or a batch): each
	// stuck position is a loss.
	p0, _ := raw.claimRun(3)
	gone := deadPid(t)
	writeRecord(peerTableOf(t, seg), PeerRecords-1, gone, RuntimeC, RoleProducer, 0, 0, p0, 3)
	if report, _ := cons.Recover(); report != (RecoverReport{RecordsFreed: 1, Lost: 3}) {
		t.Fatalf("Recover without RUN: %+v", report)
	}
}

// A producer process killed holding a run, its first continuation published: the consumer's
// blocking receive repairs it and reports exactly one loss; the ring flows.
func TestRepairKilledRunProducer(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	runChannel(t, seg, 0, 16, 8000)
	prod := registered(t, seg, 0, RoleProducer)
	cons := registered(t, seg, 0, RoleConsumer)
	sendText(t, prod, "before", 0)
	child, position := spawnClaimer(t, seg, 0, "runproducer")
	if position != 1 {
		t.Fatalf("child claimed %d", position)
	}
	killAndReap(t, child)
	big := runPayload(3000, 1)
	after, err := prod.TrySend(big)
	if err != nil || after != 5 {
		t.Fatalf("send after: %d %v", after, err)
	}
	recvText(t, cons, "before", 0)
	buf := make([]byte, 8000)
	_, err = cons.ReceiveTimeout(buf, 10*time.Second)
	expectLost(t, err, 1)
	meta, err := cons.ReceiveTimeout(buf, 10*time.Second)
	if err != nil || meta.MessageID != after || !bytes.Equal(buf[:meta.PayloadLen], big) {
		t.Fatalf("after the repair: %+v %v", meta, err)
	}
	if st := cons.Stats(); st.Lost != 1 || st.Corrupt != 0 {
		t.Fatalf("stats %+v: want exactly one loss", st)
	}
	if _, err := cons.TryReceive(buf); err != ErrEmpty {
		t.Fatalf("then: %v", err)
	}
}

// A live producer stopped holding a run: the unblock repairs the whole run at once, one
// loss, and the stopped producer learns it by revocation.
func TestUnblockStoppedRunProducer(t *testing.T) {
	seg := newTestSegment(t, 1<<20)
	runChannel(t, seg, 0, 16, 8000)
	stalled := registered(t, seg, 0, RoleProducer)
	prod := registered(t, seg, 0, RoleProducer)
	cons := registered(t, seg, 0, RoleConsumer)
	cons.SetUnblockTimeout(40 * time.Millisecond)
	payload := runPayload(4000, 3)
	k := runSlots(len(payload))
	p0, err := stalled.claimRun(k)
	if err != nil {
		t.Fatal(err)
	}
	sendText(t, prod, "after", k)
	buf := make([]byte, 8000)
	started := time.Now()
	_, err = cons.ReceiveTimeout(buf, 10*time.Second)
	expectLost(t, err, p0)
	recvText(t, cons, "after", k)
	if elapsed := time.Since(started); elapsed > 2*time.Second {
		t.Fatalf("took %v: the run was not repaired at once", elapsed)
	}
	if st := cons.Stats(); st.Lost != 1 {
		t.Fatalf("stats %+v", st)
	}
	_, err = stalled.finishRun(p0, k, payload, &SendOptions{})
	expectRevoked(t, err, p0, 1)
	if _, err := cons.TryReceive(buf); err != ErrEmpty {
		t.Fatalf("the revoked run left %v", err)
	}
}

// A run held by a consumer that died: a producer waiting to send a run repairs it (every
// position of the run freed at once) and sends.
func TestRepairDeadRunConsumer(t *testing.T) {
	const capacity = 8
	seg := newTestSegment(t, 1<<20)
	runChannel(t, seg, 0, capacity, capacity*MsgInline)
	prod := registered(t, seg, 0, RoleProducer)
	raw, err := seg.OpenChannel(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prod.TrySend(make([]byte, 3*MsgInline)); err != nil {
		t.Fatal(err)
	}
	cl, err := raw.claimRecvAt(1, 8000)
	if err != nil || !cl.run || cl.count != 3 {
		t.Fatalf("claim %+v %v", cl, err)
	}
	gone := deadPid(t)
	d := writeRecord(peerTableOf(t, seg), PeerRecords-1, gone, RuntimeGo, RoleConsumer, 0, 0, cl.first, 3)
	store32(d, peerIntentFlags, intentFlagRun)
	// A run of the whole ring needs every slot, three of them held by the dead consumer.
	id, err := prod.SendTimeout(make([]byte, capacity*MsgInline), 10*time.Second)
	if err != nil || id != 3 {
		t.Fatalf("send: %d %v", id, err)
	}
	if load32(d, peerPid) != 0 {
		t.Fatal("dead record not freed")
	}
}

// 2 producers × 2 consumers moving runs of random sizes (1 B .. 64 KiB): every message
// exactly once, intact, in per-producer order at each consumer.
func TestRunsMPMC(t *testing.T) {
	const (
		producers = 2
		consumers = 2
		perProd   = 150
		capacity  = 256
		limit     = 65536
	)
	seg := newTestSegment(t, 4<<20)
	runChannel(t, seg, 0, capacity, limit)
	size := func(p, seq int) int {
		return 1 + rand.New(rand.NewSource(int64(p*100003+seq))).Intn(limit)
	}
	var seen [producers][perProd]int32
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, producers+consumers)
	var remaining sync.WaitGroup
	remaining.Add(producers * perProd)
	done := make(chan struct{})
	for p := 0; p < producers; p++ {
		ch := registered(t, seg, 0, RoleProducer)
		wg.Add(1)
		go func(p int, ch *Channel) {
			defer wg.Done()
			for seq := 0; seq < perProd; seq++ {
				payload := runPayload(size(p, seq), uint64(p<<20|seq))
				if _, err := ch.SendWith(payload, SendOptions{MessageType: uint32(p<<20 | seq)}, 20*time.Second); err != nil {
					errs <- fmt.Errorf("producer %d seq %d: %w", p, seq, err)
					return
				}
			}
		}(p, ch)
	}
	for c := 0; c < consumers; c++ {
		ch := registered(t, seg, 0, RoleConsumer)
		wg.Add(1)
		go func(c int, ch *Channel) {
			defer wg.Done()
			last := [producers]int{-1, -1}
			buf := make([]byte, limit)
			check := func(meta Meta, got []byte) error {
				p, seq := int(meta.MessageType>>20), int(meta.MessageType&(1<<20-1))
				if p >= producers || seq >= perProd {
					return fmt.Errorf("consumer %d: bad message type %#x", c, meta.MessageType)
				}
				if len(got) != size(p, seq) || !bytes.Equal(got, runPayload(size(p, seq), uint64(p<<20|seq))) {
					return fmt.Errorf("consumer %d: producer %d seq %d: %d bytes garbled", c, p, seq, len(got))
				}
				if seq <= last[p] {
					return fmt.Errorf("consumer %d: producer %d seq %d after %d", c, p, seq, last[p])
				}
				last[p] = seq
				mu.Lock()
				seen[p][seq]++
				n := seen[p][seq]
				mu.Unlock()
				if n != 1 {
					return fmt.Errorf("producer %d seq %d received %d times", p, seq, n)
				}
				remaining.Done()
				return nil
			}
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				var err error
				if i%2 == 0 {
					var meta Meta
					meta, err = ch.ReceiveTimeout(buf, 20*time.Millisecond)
					if err == nil {
						err = check(meta, buf[:meta.PayloadLen])
					}
				} else {
					var cerr error
					_, err = ch.TryReceiveBatch(8, func(meta Meta, got []byte) {
						if e := check(meta, got); e != nil && cerr == nil {
							cerr = e
						}
					})
					if err == nil {
						err = cerr
					}
				}
				if err != nil && err != ErrTimeout && err != ErrEmpty {
					errs <- err
					return
				}
			}
		}(c, ch)
	}
	finished := make(chan struct{})
	go func() { remaining.Wait(); close(finished) }()
	select {
	case <-finished:
	case err := <-errs:
		close(done)
		wg.Wait()
		t.Fatal(err)
	case <-time.After(60 * time.Second):
		close(done)
		wg.Wait()
		t.Fatal("timed out")
	}
	close(done)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

// A run send on a ring with fewer free slots than the run needs sleeps (it does not spin on
// the one free slot) and goes out once a consumer frees enough.
func TestRunSendWaitsForAllSlots(t *testing.T) {
	seg := newTestSegment(t, segmentSize(8))
	ch := runChannel(t, seg, 0, 8, 8*MsgInline)
	for i := 0; i < 7; i++ {
		if _, err := ch.TrySend([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	run := runPayload(2*MsgInline, 4)
	if _, err := ch.TrySend(run); err != ErrFull {
		t.Fatalf("got %v; want ErrFull with one free slot", err)
	}
	before := FutexWaitCalls()
	sent := make(chan error, 1)
	go func() {
		_, err := ch.SendTimeout(run, 10*time.Second)
		sent <- err
	}()
	time.Sleep(60 * time.Millisecond)
	if FutexWaitCalls() == before {
		t.Fatal("the blocked run send never slept: it spins on the one free slot")
	}
	select {
	case err := <-sent:
		t.Fatalf("sent with one free slot: %v", err)
	default:
	}
	buf := make([]byte, 8*MsgInline)
	if _, err := ch.TryReceive(buf); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 7; i++ {
		if _, err := ch.TryReceive(buf); err != nil {
			t.Fatal(err)
		}
	}
	if meta, err := ch.TryReceive(buf); err != nil || !bytes.Equal(buf[:meta.PayloadLen], run) {
		t.Fatalf("the run: %+v %v", meta, err)
	}
}
