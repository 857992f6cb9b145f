package dmxp

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A valid two-channel segment as bytes: channel 0 (capacity 4) then channel 1 (capacity 2).
func validSegmentBytes(t *testing.T) []byte {
	t.Helper()
	seg := newTestSegment(t, segmentSize(4, 2))
	mustChannel(t, seg, 0, 4)
	mustChannel(t, seg, 1, 2)
	return segmentBytes(seg)
}

func openBytes(t *testing.T, b []byte, timeout time.Duration) (*Segment, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "segment")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	seg, err := OpenPath(path, &Options{Timeout: timeout})
	if err == nil {
		t.Cleanup(func() { seg.Close() })
	}
	return seg, err
}

type mutation struct {
	off   uint64
	width int
	value uint64
}

func TestHeaderValidation(t *testing.T) {
	size := uint64(segmentSize(4, 2))
	cases := []struct {
		name   string
		mut    []mutation
		kind   CorruptionKind
		field  string
		value  uint64
		limit  uint64
		sentry error
	}{
		{"bad magic", []mutation{{offMagic, 8, 0x1122334455667788}}, BadMagic, "magic", 0x1122334455667788, 0, ErrBadMagic},
		{"version 2", []mutation{{offVersion, 4, 2}}, UnsupportedVersion, "version", 2, 0, ErrUnsupportedVersion},
		{"version 0", []mutation{{offVersion, 4, 0}}, UnsupportedVersion, "version", 0, 0, ErrUnsupportedVersion},
		{"max_channels", []mutation{{offMaxChannels, 4, 255}}, WrongMaxChannels, "max_channels", 255, 0, ErrCorrupt},
		{"channel_count", []mutation{{offChannelCount, 4, 257}}, ChannelCountTooLarge, "channel_count", 257, 0, ErrCorrupt},
		{"segment_size too big", []mutation{{offSegmentSize, 8, size + 64}}, SegmentSizeMismatch, "segment_size", size + 64, size, ErrCorrupt},
		{"segment_size below header", []mutation{{offSegmentSize, 8, HeaderSize - 8}}, SegmentSizeMismatch, "segment_size", HeaderSize - 8, size, ErrCorrupt},
		{"band_cursor misaligned", []mutation{{offBandCursor, 8, HeaderSize + 8}}, BandCursorOutOfRange, "band_cursor", HeaderSize + 8, size, ErrCorrupt},
		{"band_cursor in header", []mutation{{offBandCursor, 8, 64}}, BandCursorOutOfRange, "band_cursor", 64, size, ErrCorrupt},
		{"band_cursor past segment", []mutation{{offBandCursor, 8, size + 64}}, BandCursorOutOfRange, "band_cursor", size + 64, size, ErrCorrupt},
		{"peer_table_offset misaligned", []mutation{{offPeerTableOffset, 8, HeaderSize + 8}}, PeerTableOutOfRange, "peer_table_offset", HeaderSize + 8, size, ErrCorrupt},
		{"peer_table_offset in header", []mutation{{offPeerTableOffset, 8, 64}}, PeerTableOutOfRange, "peer_table_offset", 64, size, ErrCorrupt},
		{"peer table past segment", []mutation{{offPeerTableOffset, 8, HeaderSize}}, PeerTableOutOfRange, "peer_table_offset", HeaderSize, size, ErrCorrupt},
		{"peer_table_offset overflows", []mutation{{offPeerTableOffset, 8, ^uint64(63)}}, PeerTableOutOfRange, "peer_table_offset", ^uint64(63), size, ErrCorrupt},
		{"peer_records 100", []mutation{{offPeerRecords, 4, 100}}, PeerRecordsOutOfRange, "peer_records", 100, 0, ErrCorrupt},
		{"peer_records 255", []mutation{{offPeerRecords, 4, 255}}, PeerRecordsOutOfRange, "peer_records", 255, 0, ErrCorrupt},
		{"peer_records 16385", []mutation{{offPeerRecords, 4, 16385}}, PeerRecordsOutOfRange, "peer_records", 16385, 0, ErrCorrupt},
		{"peer_records 20000", []mutation{{offPeerRecords, 4, 20000}}, PeerRecordsOutOfRange, "peer_records", 20000, 0, ErrCorrupt},
		// Checked in order: band_cursor (#7), then peer_records (#8), then peer_table_offset (#9).
		{"band_cursor before peer_records", []mutation{{offBandCursor, 4, 64}, {offPeerRecords, 4, 1}}, BandCursorOutOfRange, "band_cursor", 64, size, ErrCorrupt},
		{"peer_records before peer_table_offset", []mutation{{offPeerRecords, 4, 1}, {offPeerTableOffset, 8, 64}}, PeerRecordsOutOfRange, "peer_records", 1, 0, ErrCorrupt},
		// Checked in order: a bad version is reported before a bad max_channels.
		{"first failing check wins", []mutation{{offVersion, 4, 9}, {offMaxChannels, 4, 1}}, UnsupportedVersion, "version", 9, 0, ErrUnsupportedVersion},
	}
	good := validSegmentBytes(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte(nil), good...)
			for _, m := range tc.mut {
				putLE(b, m.off, m.width, m.value)
			}
			_, err := openBytes(t, b, time.Second)
			var ce *CorruptionError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a CorruptionError", err)
			}
			if ce.Kind != tc.kind || ce.Field != tc.field || ce.Channel != -1 || ce.Value != tc.value || ce.Limit != tc.limit {
				t.Errorf("got %+v, want kind %v field %s value %d limit %d", ce, tc.kind, tc.field, tc.value, tc.limit)
			}
			if !errors.Is(err, tc.sentry) || !errors.Is(err, ErrCorrupt) {
				t.Errorf("%v does not match %v and ErrCorrupt", err, tc.sentry)
			}
		})
	}
	t.Run("zero extension fields are accepted", func(t *testing.T) {
		b := append([]byte(nil), good...)
		putLE(b, offSegmentSize, 8, 0)
		putLE(b, offBandCursor, 8, 0)
		seg, err := openBytes(t, b, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if seg.Len() != size {
			t.Errorf("length %d, want the mapped %d", seg.Len(), size)
		}
		// The first creation adopts the end of the last band as the cursor. The segment is
		// full, so it fails with OutOfSpace, and the cursor was adopted at the end.
		_, _, err = seg.TryOpenOrCreateChannel(2, 2)
		var oos *OutOfSpaceError
		if !errors.As(err, &oos) || oos.Available != 0 || seg.Header().BandCursor != size {
			t.Errorf("create on a full segment without cursor: %v, cursor %d", err, seg.Header().BandCursor)
		}
		if e, _ := seg.Entry(2); e.State != StateEmpty {
			t.Errorf("failed creation left state %d, want EMPTY", e.State)
		}
	})
}

func TestNotReady(t *testing.T) {
	t.Run("magic 0", func(t *testing.T) {
		b := validSegmentBytes(t)
		putLE(b, offMagic, 8, 0)
		if _, err := openBytes(t, b, 20*time.Millisecond); !errors.Is(err, ErrNotReady) {
			t.Errorf("got %v, want ErrNotReady", err)
		}
	})
	t.Run("smaller than the header", func(t *testing.T) {
		if _, err := openBytes(t, make([]byte, HeaderSize-128), 20*time.Millisecond); !errors.Is(err, ErrNotReady) {
			t.Errorf("got %v, want ErrNotReady", err)
		}
	})
}

func TestEntryValidation(t *testing.T) {
	size := uint64(segmentSize(4, 2))
	e1 := EntryOffset(1)
	band0, band1 := uint64(HeaderSize), uint64(HeaderSize)+BandLen(4)
	cases := []struct {
		name  string
		mut   []mutation
		kind  CorruptionKind
		field string
		value uint64
	}{
		{"unknown state", []mutation{{e1 + entState, 4, 3}}, UnknownChannelState, "state", 3},
		{"ready with capacity 0", []mutation{{e1 + entCapacity, 8, 0}}, CapacityZero, "capacity", 0},
		{"channel_id mismatch", []mutation{{e1 + entChannelID, 4, 7}}, ChannelIDMismatch, "channel_id", 7},
		{"capacity not a power of two", []mutation{{e1 + entCapacity, 8, 3}}, CapacityNotPowerOfTwo, "capacity", 3},
		{"capacity 1", []mutation{{e1 + entCapacity, 8, 1}}, CapacityTooSmall, "capacity", 1},
		{"capacity 2^33", []mutation{{e1 + entCapacity, 8, 1 << 33}}, CapacityTooLarge, "capacity", 1 << 33},
		{"band misaligned", []mutation{{e1 + entBandOffset, 8, band1 + 8}}, BandMisaligned, "band_offset", band1 + 8},
		{"band in header", []mutation{{e1 + entBandOffset, 8, HeaderSize - 64}}, BandOverlapsHeader, "band_offset", HeaderSize - 64},
		{"band past segment", []mutation{{e1 + entBandOffset, 8, band1 + 64}}, BandOutsideSegment, "band_offset", band1 + 64},
		{"band offset overflows", []mutation{{e1 + entBandOffset, 8, ^uint64(63)}}, BandOutsideSegment, "band_offset", ^uint64(63)},
		{"bands overlap", []mutation{{e1 + entBandOffset, 8, band0 + 64}}, BandsOverlap, "band_offset", band0 + 64},
	}
	good := validSegmentBytes(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte(nil), good...)
			for _, m := range tc.mut {
				putLE(b, m.off, m.width, m.value)
			}
			seg, err := openBytes(t, b, time.Second)
			if err != nil {
				t.Fatalf("header should validate: %v", err)
			}
			_, err = seg.OpenChannel(1)
			var ce *CorruptionError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want a CorruptionError", err)
			}
			if ce.Kind != tc.kind || ce.Field != tc.field || ce.Channel != 1 || ce.Value != tc.value {
				t.Errorf("got %+v, want kind %v field %s channel 1 value %d", ce, tc.kind, tc.field, tc.value)
			}
			switch tc.kind {
			case BandOutsideSegment:
				if ce.Limit != size || ce.BandLen != BandLen(2) {
					t.Errorf("limit %d band_len %d", ce.Limit, ce.BandLen)
				}
			case BandsOverlap:
				if ce.Other != 0 {
					t.Errorf("other %d, want 0", ce.Other)
				}
			}
			// Channel 0 is untouched and still opens; ValidateAll reports the bad entry.
			if _, err := seg.OpenChannel(0); tc.kind != BandsOverlap && err != nil {
				t.Errorf("channel 0: %v", err)
			}
			if err := seg.ValidateAll(); !errors.As(err, &ce) || ce.Kind != tc.kind || ce.Channel != 1 {
				t.Errorf("ValidateAll: %v", err)
			}
		})
	}
}

func TestMissingAndBeingCreated(t *testing.T) {
	seg := newTestSegment(t, segmentSize(4))
	_, err := seg.OpenChannel(5)
	var nf *NotFoundError
	if !errors.As(err, &nf) || nf.Channel != 5 || !errors.Is(err, ErrNotFound) {
		t.Errorf("missing channel: %v", err)
	}
	if err.Error() != "dmxp: channel 5 does not exist" {
		t.Errorf("message %q", err.Error())
	}
	store32(seg.entry(6), entState, StateCreating)
	_, err = seg.OpenChannel(6)
	var bc *BeingCreatedError
	if !errors.As(err, &bc) || bc.Channel != 6 {
		t.Errorf("channel being created: %v", err)
	}
	if _, _, err := seg.TryOpenOrCreateChannel(6, 4); !errors.Is(err, ErrBeingCreated) {
		t.Errorf("create while another holds the claim: %v", err)
	}
	if _, _, err := seg.OpenOrCreateChannel(6, 4, 10*time.Millisecond); !errors.Is(err, ErrBeingCreated) {
		t.Errorf("create with retry: %v", err)
	}
	if _, err := seg.WaitChannel(7, 10*time.Millisecond); !errors.Is(err, ErrNotFound) {
		t.Errorf("wait for a channel nobody creates: %v", err)
	}
	var ic *InvalidChannelIDError
	if _, err := seg.OpenChannel(256); !errors.As(err, &ic) || ic.ID != 256 {
		t.Errorf("channel 256: %v", err)
	}
	for _, capacity := range []uint64{0, 1, 3, 1 << 33} {
		var bad *InvalidCapacityError
		if _, _, err := seg.TryOpenOrCreateChannel(0, capacity); !errors.As(err, &bad) || bad.Capacity != capacity || !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("capacity %d: %v", capacity, err)
		}
	}
	// Out of space: room for 4 slots only.
	var oos *OutOfSpaceError
	if _, _, err := seg.TryOpenOrCreateChannel(0, 8); !errors.As(err, &oos) || oos.Needed != BandLen(8) || oos.Available != BandLen(4) {
		t.Errorf("too big a band: %v", err)
	}
	if e, _ := seg.Entry(0); e.State != StateEmpty || e.Capacity != 0 {
		t.Errorf("failed creation left %+v", e)
	}
	ch := mustChannel(t, seg, 0, 4)
	var exists *ExistsError
	if _, err := seg.CreateChannel(0, 2); !errors.As(err, &exists) || exists.Capacity != 4 {
		t.Errorf("strict create of an existing channel: %v", err)
	}
	// open-or-create of an existing channel opens it with its own capacity.
	again, created, err := seg.TryOpenOrCreateChannel(0, 2)
	if err != nil || created || again.Capacity() != 4 || again.Geometry() != ch.Geometry() {
		t.Errorf("reopen: %v %v %+v", created, err, again)
	}
}

func TestSendErrors(t *testing.T) {
	seg := newTestSegment(t, segmentSize(2))
	ch := mustChannel(t, seg, 0, 2)
	var tl *TooLargeError
	if _, err := ch.TrySend(make([]byte, MsgInline+1)); !errors.As(err, &tl) || tl.Len != 961 || tl.Limit != 960 || !errors.Is(err, ErrTooLarge) {
		t.Errorf("961 bytes: %v", err)
	}
	if _, err := ch.TrySendBatch([][]byte{{1}, make([]byte, 2000)}, SendOptions{}); !errors.As(err, &tl) || tl.Len != 2000 {
		t.Errorf("batch with a too-large payload: %v", err)
	}
	var rf *ReservedFlagsError
	if _, err := ch.TrySendWith([]byte{1}, SendOptions{Flags: 0x0101}); !errors.As(err, &rf) || rf.Flags != 0x0101 {
		t.Errorf("reserved flags: %v", err)
	}
	if ch.Tail() != 0 {
		t.Errorf("refused sends moved tail to %d", ch.Tail())
	}
	if _, err := ch.TrySend(make([]byte, MsgInline)); err != nil {
		t.Errorf("960 bytes: %v", err)
	}
	var small *BufferTooSmallError
	if _, err := ch.TryReceive(make([]byte, 100)); !errors.As(err, &small) || small.Needed != 960 || small.Available != 100 {
		t.Errorf("small buffer: %v", err)
	}
	if ch.Head() != 0 {
		t.Errorf("refused receive consumed: head %d", ch.Head())
	}
	if m, err := ch.TryReceive(make([]byte, MsgInline)); err != nil || m.PayloadLen != 960 {
		t.Errorf("receive 960: %+v %v", m, err)
	}
}

func TestMarkersAndCorruptLengths(t *testing.T) {
	seg := newTestSegment(t, segmentSize(4))
	ch := mustChannel(t, seg, 0, 4)
	buf := make([]byte, MsgInline)
	for lap := 0; lap < 3; lap++ {
		publishRaw(t, ch, FlagSkip, 0)
		sent, _ := ch.TrySend([]byte("after skip"))
		lost := publishRaw(t, ch, FlagLost, 0)
		bad := publishRaw(t, ch, 0, 5000)
		m, err := ch.TryReceive(buf)
		if err != nil || string(buf[:m.PayloadLen]) != "after skip" || m.MessageID != sent {
			t.Fatalf("skip not passed over: %+v %v", m, err)
		}
		var le *LostError
		if _, err := ch.TryReceive(buf); !errors.As(err, &le) || le.MessageID != lost {
			t.Errorf("lost marker: %v", err)
		}
		var cm *CorruptMessageError
		if _, err := ch.TryReceive(buf); !errors.As(err, &cm) || cm.MessageID != bad || cm.PayloadLen != 5000 {
			t.Errorf("corrupt length: %v", err)
		}
		if _, err := ch.TryReceive(buf); err != ErrEmpty {
			t.Errorf("after markers: %v", err)
		}
	}
	if st := ch.Stats(); st.Lost != 3 || st.Corrupt != 3 {
		t.Errorf("stats %+v, want 3 lost, 3 corrupt", st)
	}
	// Every position was freed: the ring takes a full lap again.
	for k := 0; k < 4; k++ {
		if _, err := ch.TrySend([]byte{byte(k)}); err != nil {
			t.Fatalf("send %d after markers: %v", k, err)
		}
	}
	// Batches drop the bad positions too, and free them.
	for k := 0; k < 4; k++ {
		ch.TryReceive(buf)
	}
	publishRaw(t, ch, FlagLost, 0)
	publishRaw(t, ch, FlagSkip, 0)
	ch.TrySend([]byte("ok"))
	publishRaw(t, ch, 0, 961)
	var got []string
	res, err := ch.TryReceiveBatch(10, func(m Meta, p []byte) { got = append(got, string(p)) })
	if err != nil || res.Delivered != 1 || res.Dropped != 2 || len(got) != 1 || got[0] != "ok" {
		t.Errorf("batch over markers: %+v %v %q", res, err, got)
	}
	if ch.Head() != ch.Tail() || !ch.HasFreeSlot() || ch.HasMessage() {
		t.Errorf("batch left head %d tail %d", ch.Head(), ch.Tail())
	}
}
