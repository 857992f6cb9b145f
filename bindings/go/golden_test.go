package dmxp

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

const goldenFile = "../../dmxp-nostd/tests/golden/segment_v1.bin"

// openGolden attaches to a private copy of the committed golden segment.
func openGolden(t *testing.T) *Segment {
	t.Helper()
	bytes, err := os.ReadFile(goldenFile)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("golden segment %s not present", goldenFile)
	}
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "segment_v1.bin")
	if err := os.WriteFile(path, bytes, 0o600); err != nil {
		t.Fatal(err)
	}
	seg, err := OpenPath(path, nil)
	if err != nil {
		t.Fatalf("OpenPath(golden copy): %v", err)
	}
	t.Cleanup(func() { seg.Close() })
	return seg
}

type goldenMessage struct {
	id, timestamp uint64
	channel       uint32
	messageType   uint32
	flags         uint16
	payload       string
}

var goldenChannel0 = []goldenMessage{
	{0, 1000000000, 0, 1, 0x0000, "first message"},
	{1, 1000000001, 0, 2, 0x0100, "DMXP golden segment v1"},
	{2, 1000000002, 0, 3, 0x0000, "The quick brown fox jumps over the lazy dog; 0123456789 ok."},
}

var goldenChannel1 = []goldenMessage{
	{0, 1000000003, 1, 7, 0x0100, ""},
	{1, 1000000004, 1, 8, 0x0300, "ninebytes"},
}

func checkSlot(t *testing.T, ch *Channel, index, sequence uint64, want goldenMessage) {
	t.Helper()
	s := ch.PeekSlot(index)
	got := goldenMessage{s.Meta.MessageID, s.Meta.TimestampNs, s.Meta.ChannelID, s.Meta.MessageType, s.Meta.Flags, string(s.Payload)}
	if s.Sequence != sequence || got != want || s.Meta.SenderPID != 4242 || s.Meta.SenderRuntime != RuntimeRust ||
		s.Meta.PayloadLen != uint32(len(want.payload)) || s.MetaPad != 0 {
		t.Errorf("channel %d slot %d: sequence %d, %+v, pid %d, runtime %d, len %d, pad %d; want sequence %d, %+v, pid 4242, runtime 1",
			ch.ID(), index, s.Sequence, got, s.Meta.SenderPID, s.Meta.SenderRuntime, s.Meta.PayloadLen, s.MetaPad, sequence, want)
	}
}

func TestGoldenDecodesEveryField(t *testing.T) {
	seg := openGolden(t)
	wantHeader := HeaderInfo{
		Magic: Magic, Version: 1, MaxChannels: 256, ChannelCount: 2, Reserved: 0,
		SegmentSize: 104960, BandCursor: 104960, CreatorPID: 4242, HeaderFlags: 0,
		PeerTableOffset: 0, PeerRecords: 0,
	}
	if h := seg.Header(); h != wantHeader {
		t.Errorf("header %+v, want %+v", h, wantHeader)
	}
	// peer_records 0 (a segment made before the field): the default table of 256 records.
	if n := seg.PeerRecords(); n != PeerRecords {
		t.Errorf("peer records %d, want %d", n, PeerRecords)
	}
	if seg.Len() != 104960 {
		t.Errorf("segment length %d", seg.Len())
	}
	wantEntries := map[uint32]EntryInfo{
		0: {ChannelID: 0, Capacity: 4, BandOffset: 98432, State: StateReady, CreatorPID: 4242, Tail: 3, Head: 1},
		1: {ChannelID: 1, Capacity: 2, BandOffset: 102784, State: StateReady, CreatorPID: 4242, Tail: 2, Head: 0},
	}
	for id := uint32(0); id < MaxChannels; id++ {
		e, err := seg.Entry(id)
		if err != nil {
			t.Fatal(err)
		}
		if e != wantEntries[id] { // ids 2..255: the all-zero entry
			t.Errorf("entry %d: %+v, want %+v", id, e, wantEntries[id])
		}
	}
	if got := seg.Channels(); len(got) != 2 ||
		got[0] != (Geometry{ID: 0, Capacity: 4, BandOffset: 98432}) || got[1] != (Geometry{ID: 1, Capacity: 2, BandOffset: 102784}) {
		t.Errorf("channels %+v", got)
	}
	if err := seg.ValidateAll(); err != nil {
		t.Errorf("ValidateAll: %v", err)
	}
	if _, err := seg.OpenChannel(2); !errors.Is(err, ErrNotFound) {
		t.Errorf("channel 2: %v, want not found", err)
	}

	ch0, err := seg.OpenChannel(0)
	if err != nil {
		t.Fatal(err)
	}
	checkSlot(t, ch0, 0, 4, goldenChannel0[0])
	checkSlot(t, ch0, 1, 2, goldenChannel0[1])
	checkSlot(t, ch0, 2, 3, goldenChannel0[2])
	if s := ch0.PeekSlot(3); s.Sequence != 3 || s.Meta != (Meta{}) || s.MetaPad != 0 {
		t.Errorf("channel 0 slot 3: %+v, want sequence 3 and zero meta", s)
	}
	ch1, err := seg.OpenChannel(1)
	if err != nil {
		t.Fatal(err)
	}
	checkSlot(t, ch1, 0, 1, goldenChannel1[0])
	checkSlot(t, ch1, 1, 2, goldenChannel1[1])
}

func receiveGolden(t *testing.T, ch *Channel, want []goldenMessage) {
	t.Helper()
	buf := make([]byte, MsgInline)
	for _, w := range want {
		m, err := ch.TryReceive(buf)
		if err != nil {
			t.Fatalf("channel %d: receive message %d: %v", ch.ID(), w.id, err)
		}
		got := goldenMessage{m.MessageID, m.TimestampNs, m.ChannelID, m.MessageType, m.Flags, string(buf[:m.PayloadLen])}
		if got != w || m.SenderPID != 4242 || m.SenderRuntime != RuntimeRust {
			t.Errorf("channel %d: received %+v (pid %d runtime %d), want %+v", ch.ID(), got, m.SenderPID, m.SenderRuntime, w)
		}
	}
	if _, err := ch.TryReceive(buf); err != ErrEmpty {
		t.Errorf("channel %d: after the queued messages: %v, want ErrEmpty", ch.ID(), err)
	}
}

func TestGoldenReceivesQueuedMessages(t *testing.T) {
	seg := openGolden(t)
	ch0, err := seg.OpenChannel(0)
	if err != nil {
		t.Fatal(err)
	}
	ch1, err := seg.OpenChannel(1)
	if err != nil {
		t.Fatal(err)
	}
	// Channel 1 is full: a send must be refused before anything is received.
	if _, err := ch1.TrySend([]byte("x")); err != ErrFull {
		t.Errorf("send on the full channel 1: %v, want ErrFull", err)
	}
	receiveGolden(t, ch0, goldenChannel0[1:])
	receiveGolden(t, ch1, goldenChannel1)
	// The freed slots hold sequence h + capacity.
	if s := ch1.PeekSlot(0).Sequence; s != 2 {
		t.Errorf("channel 1 slot 0 after receive: sequence %d, want 0+2", s)
	}
	for _, c := range []struct {
		ch   *Channel
		free int
		next uint64
	}{{ch0, 4, 3}, {ch1, 2, 2}} {
		for k := 0; k < c.free; k++ {
			id, err := c.ch.TrySend([]byte("after"))
			if err != nil || id != c.next+uint64(k) {
				t.Fatalf("channel %d: send %d: id %d err %v, want id %d", c.ch.ID(), k, id, err, c.next+uint64(k))
			}
		}
		if _, err := c.ch.TrySend([]byte("one too many")); err != ErrFull {
			t.Errorf("channel %d: send past capacity: %v, want ErrFull", c.ch.ID(), err)
		}
	}
}
