package dmxp

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

var testSegmentSeq uint64

// newTestSegment creates a fresh segment of size bytes under /dev/shm (or the test's temp
// dir when /dev/shm is absent) and removes it when the test ends.
func newTestSegment(t testing.TB, size int64) *Segment {
	t.Helper()
	return newTestSegmentWith(t, &Options{Size: size})
}

// testSegmentPath is a fresh path under /dev/shm (or the test's temp dir when /dev/shm is
// absent) for a test segment.
func testSegmentPath(t testing.TB) string {
	dir := "/dev/shm"
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		dir = t.TempDir()
	}
	return filepath.Join(dir, fmt.Sprintf("dmxp_gotest_%d_%d", os.Getpid(), atomic.AddUint64(&testSegmentSeq, 1)))
}

// newTestSegmentWith is newTestSegment with the creation options opts.
func newTestSegmentWith(t testing.TB, opts *Options) *Segment {
	t.Helper()
	path := testSegmentPath(t)
	seg, err := CreatePath(path, opts)
	if err != nil {
		t.Fatalf("CreatePath(%s): %v", path, err)
	}
	t.Cleanup(func() {
		seg.Close()
		os.Remove(path)
	})
	return seg
}

func segmentSize(capacities ...uint64) int64 {
	size := uint64(HeaderSize)
	for _, c := range capacities {
		size += BandLen(c)
	}
	return int64(size)
}

func mustChannel(t testing.TB, seg *Segment, id uint32, capacity uint64) *Channel {
	t.Helper()
	ch, created, err := seg.TryOpenOrCreateChannel(id, capacity)
	if err != nil || !created {
		t.Fatalf("create channel %d (capacity %d): created=%v err=%v", id, capacity, created, err)
	}
	return ch
}

// publishRaw claims one position and publishes it with the given flags and payload_len,
// without a payload: how a peer writes SKIP or LOST markers, or a hostile length.
func publishRaw(t testing.TB, c *Channel, flags uint16, payloadLen uint32) uint64 {
	t.Helper()
	position, _, err := c.claimSend(1)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	slot := c.slot(position)
	store64(slot, slotMessageID, position)
	store64(slot, slotTimestamp, 0)
	store32(slot, slotChannelID, c.ID())
	store32(slot, slotMessageType, 0)
	store32(slot, slotSenderPid, 0)
	store32(slot, slotRuntimeFlags, uint32(flags)<<16)
	store32(slot, slotPayloadLen, payloadLen)
	store64(slot, slotSequence, position+1)
	c.notifyConsumers()
	return position
}

// putLE writes v as a little-endian integer of width bytes at off in b.
func putLE(b []byte, off uint64, width int, v uint64) {
	switch width {
	case 4:
		binary.LittleEndian.PutUint32(b[off:], uint32(v))
	case 8:
		binary.LittleEndian.PutUint64(b[off:], v)
	default:
		panic("width")
	}
}

// segmentBytes copies the whole mapped segment (test-only; the segment must be quiescent).
func segmentBytes(s *Segment) []byte {
	out := make([]byte, s.mapped)
	for i := uintptr(0); i < uintptr(s.mapped); i += 8 {
		binary.LittleEndian.PutUint64(out[i:], load64(s.base, i))
	}
	return out
}
