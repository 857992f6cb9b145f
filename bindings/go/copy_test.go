package dmxp

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"testing"
	"unsafe"
)

// The payload and meta of a claimed slot are moved with ordinary copies and word stores
// (mem.go). These tests pin the exact bytes they leave, read back word by word with atomic
// loads, for every length 0..960 (and cut-off lengths past it), with source and destination
// slices at odd offsets so the copies cross word boundaries unaligned.

// rawPayload is the 960-byte payload area of slot, read with 8-byte atomic loads.
func rawPayload(slot unsafe.Pointer) []byte {
	out := make([]byte, MsgInline)
	for w := uintptr(0); w < MsgInline; w += 8 {
		binary.LittleEndian.PutUint64(out[w:], load64(slot, slotPayload+w))
	}
	return out
}

// fillPayload stores b (a multiple of 8 bytes long) in the payload area of slot with 8-byte
// atomic stores: the previous lap's bytes.
func fillPayload(slot unsafe.Pointer, b []byte) {
	for w := uintptr(0); w < uintptr(len(b)); w += 8 {
		store64(slot, slotPayload+w, binary.LittleEndian.Uint64(b[w:]))
	}
}

func TestPayloadCopiesEveryLength(t *testing.T) {
	seg := newTestSegment(t, segmentSize(2))
	ch := mustChannel(t, seg, 0, 2)
	slot := ch.slot(0)
	dst := unsafe.Add(slot, slotPayload)
	rng := rand.New(rand.NewSource(1))
	src := make([]byte, MsgInline+64)
	rng.Read(src)
	old := bytes.Repeat([]byte{0xA5}, MsgInline)
	for n := 0; n <= MsgInline; n++ {
		for _, off := range []int{0, 1, 3, 7} {
			p := src[off : off+n]
			fillPayload(slot, old)
			storePayload(dst, p)
			raw := rawPayload(slot)
			words := (n + 7) / 8 * 8
			if !bytes.Equal(raw[:n], p) {
				t.Fatalf("store len %d off %d: payload %x, want %x", n, off, raw[:n], p)
			}
			if !bytes.Equal(raw[n:words], make([]byte, words-n)) {
				t.Fatalf("store len %d off %d: last word's padding %x, want zeros", n, off, raw[n:words])
			}
			if !bytes.Equal(raw[words:], old[words:]) {
				t.Fatalf("store len %d off %d: wrote past its last word", n, off)
			}

			// Load into a buffer at an odd offset, between canaries.
			for _, doff := range []int{0, 1, 5} {
				out := bytes.Repeat([]byte{0x5A}, n+16)
				loadPayload(dst, out[doff:doff+n])
				if !bytes.Equal(out[doff:doff+n], p) {
					t.Fatalf("load len %d off %d: %x, want %x", n, doff, out[doff:doff+n], p)
				}
				for i, b := range out {
					if (i < doff || i >= doff+n) && b != 0x5A {
						t.Fatalf("load len %d off %d: byte %d outside the destination written", n, doff, i)
					}
				}
			}
		}
	}
}

// A payload or buffer longer than a slot is cut at MsgInline: nothing is read or written past
// the payload area (the callers check lengths first; this is the helpers' own bound).
func TestPayloadCopiesStopAtMsgInline(t *testing.T) {
	seg := newTestSegment(t, segmentSize(2))
	ch := mustChannel(t, seg, 0, 2)
	slot := ch.slot(0)
	dst := unsafe.Add(slot, slotPayload)
	next := load64(ch.slot(1), slotSequence)
	long := bytes.Repeat([]byte{0x77}, MsgInline+200)
	storePayload(dst, long)
	if raw := rawPayload(slot); !bytes.Equal(raw, long[:MsgInline]) {
		t.Fatal("payload area not filled")
	}
	for off := uintptr(slotPayload + MsgInline); off < SlotSize; off += 8 {
		if load64(slot, off) != 0 {
			t.Fatalf("slot byte %d written", off)
		}
	}
	if load64(ch.slot(1), slotSequence) != next {
		t.Fatal("next slot written")
	}
	out := bytes.Repeat([]byte{0x01}, MsgInline+200)
	loadPayload(dst, out)
	if !bytes.Equal(out[:MsgInline], long[:MsgInline]) || !bytes.Equal(out[MsgInline:], bytes.Repeat([]byte{0x01}, 200)) {
		t.Fatal("load did not stop at MsgInline")
	}
}

// Every length 0..960 through the ring, registered and not, with the metadata words checked
// field by field in the slot (publishSlot stores them as pairs in 8-byte words).
func TestSendReceiveEveryLength(t *testing.T) {
	for _, register := range []bool{false, true} {
		seg := newTestSegment(t, segmentSize(4)+PeerTableSize)
		ch := mustChannel(t, seg, 3, 4)
		if register {
			for _, role := range []Role{RoleProducer, RoleConsumer} {
				if err := ch.Register(role); err != nil {
					t.Fatal(err)
				}
			}
		}
		rng := rand.New(rand.NewSource(2))
		src := make([]byte, MsgInline+8)
		buf := make([]byte, MsgInline+8)
		// The previous lap left 0xEE everywhere.
		for i := uint64(0); i < 4; i++ {
			fillPayload(ch.slot(i), bytes.Repeat([]byte{0xEE}, MsgInline))
		}
		for n := 0; n <= MsgInline; n++ {
			rng.Read(src)
			off := n % 8
			p := src[off : off+n]
			opts := SendOptions{MessageType: 0x01020304 + uint32(n), Flags: uint16(n%256) << 8, TimestampNs: 0x1122334455667788}
			id, err := ch.TrySendWith(p, opts)
			if err != nil {
				t.Fatalf("len %d: send: %v", n, err)
			}
			slot := ch.slot(id)
			if got := load64(slot, slotMessageID); got != id {
				t.Fatalf("len %d: message_id %d, want %d", n, got, id)
			}
			if got := load64(slot, slotTimestamp); got != opts.TimestampNs {
				t.Fatalf("len %d: timestamp %#x", n, got)
			}
			fields := [][2]uint32{
				{load32(slot, slotChannelID), 3},
				{load32(slot, slotMessageType), opts.MessageType},
				{load32(slot, slotSenderPid), ch.pid},
				{load32(slot, slotRuntimeFlags), uint32(RuntimeGo) | uint32(opts.Flags)<<16},
				{load32(slot, slotPayloadLen), uint32(n)},
				{load32(slot, slotMetaPad), 0},
				{load32(slot, slotRunSlots), 0},
				{load32(slot, slotRunIndex), 0},
				{load32(slot, 56), 0},
				{load32(slot, 60), 0},
			}
			for i, f := range fields {
				if f[0] != f[1] {
					t.Fatalf("len %d: meta field %d is %#x, want %#x", n, i, f[0], f[1])
				}
			}
			raw := rawPayload(slot)
			words := (n + 7) / 8 * 8
			if !bytes.Equal(raw[:n], p) || !bytes.Equal(raw[n:words], make([]byte, words-n)) {
				t.Fatalf("len %d: slot payload %x", n, raw[:words])
			}
			doff := (n * 3) % 8
			meta, err := ch.TryReceive(buf[doff : doff+MsgInline])
			if err != nil {
				t.Fatalf("len %d: receive: %v", n, err)
			}
			want := Meta{MessageID: id, TimestampNs: opts.TimestampNs, ChannelID: 3, MessageType: opts.MessageType,
				SenderPID: ch.pid, SenderRuntime: RuntimeGo, Flags: opts.Flags, PayloadLen: uint32(n)}
			if meta != want {
				t.Fatalf("len %d: meta %+v, want %+v", n, meta, want)
			}
			if !bytes.Equal(buf[doff:doff+n], p) {
				t.Fatalf("len %d: received %x, want %x", n, buf[doff:doff+n], p)
			}
		}
		ch.Close()
	}
}

// Batches of every length 0..960 (32 at a time, across word boundaries), each item from an
// odd offset, delivered byte for byte.
func TestBatchEveryLength(t *testing.T) {
	seg := newTestSegment(t, segmentSize(64)+PeerTableSize)
	ch := mustChannel(t, seg, 0, 64)
	for _, role := range []Role{RoleProducer, RoleConsumer} {
		if err := ch.Register(role); err != nil {
			t.Fatal(err)
		}
	}
	defer ch.Close()
	rng := rand.New(rand.NewSource(3))
	for first := 0; first <= MsgInline; first += 32 {
		var batch [][]byte
		for n := first; n < first+32 && n <= MsgInline; n++ {
			b := make([]byte, n+3)
			rng.Read(b)
			batch = append(batch, b[3:])
		}
		sent, err := ch.TrySendBatch(batch, SendOptions{})
		if err != nil || sent != len(batch) {
			t.Fatalf("batch at %d: sent %d of %d: %v", first, sent, len(batch), err)
		}
		k := 0
		got, err := ch.TryReceiveBatch(len(batch), func(m Meta, payload []byte) {
			if k >= len(batch) || !bytes.Equal(payload, batch[k]) || m.PayloadLen != uint32(len(batch[k])) {
				t.Fatalf("batch at %d: item %d wrong (%d bytes)", first, k, len(payload))
			}
			k++
		})
		if err != nil || got.Delivered != len(batch) || k != len(batch) {
			t.Fatalf("batch at %d: %+v %v", first, got, err)
		}
	}
}
