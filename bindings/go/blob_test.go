package dmxp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"dmxp.dev/dmxp/pattern"
)

// The blob pool (PROTOCOL.md §13): layout, validation, loans, receives, reclaim.

// roundTripClasses hold the round trips' blobs: 1 B and 4 KiB in the first class, 1 MiB in the
// second, 4 MiB in the third.
var roundTripClasses = []BlobClass{{BlockSize: 4096, BlockCount: 4}, {BlockSize: 1 << 20, BlockCount: 2}, {BlockSize: 4 << 20, BlockCount: 2}}

// newBlobSegment creates a test segment of size bytes with a pool of classes.
func newBlobSegment(t testing.TB, size int64, classes []BlobClass) *Segment {
	t.Helper()
	return newTestSegmentWith(t, &Options{Size: size, BlobPool: classes})
}

// blobPair creates channel id (capacity slots, BLOBS, with opts) and returns two handles on
// it: a registered producer and a registered consumer.
func blobPair(t testing.TB, seg *Segment, id uint32, capacity uint64, opts ChannelOptions) (prod, cons *Channel) {
	t.Helper()
	opts.Blobs = true
	prod, err := seg.CreateChannelWith(id, capacity, opts)
	if err != nil {
		t.Fatalf("create blob channel: %v", err)
	}
	if cons, err = seg.OpenChannel(id); err != nil {
		t.Fatal(err)
	}
	if err := prod.Register(RoleProducer); err != nil {
		t.Fatal(err)
	}
	if err := cons.Register(RoleConsumer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prod.Close(); cons.Close() })
	return prod, cons
}

func freeBlocks(t testing.TB, seg *Segment) int {
	t.Helper()
	st, ok := seg.BlobPoolStats()
	if !ok {
		t.Fatal("no pool")
	}
	return st.FreeBlocks()
}

func totalBlocks(classes []BlobClass) int {
	n := 0
	for _, c := range classes {
		n += int(c.BlockCount)
	}
	return n
}

// fillBlob writes the blob of length n for index into b (the shared pattern from 24 bytes on,
// a byte derived from the index below).
func fillBlob(b []byte, channel uint32, index uint64) {
	if len(b) >= pattern.MinLen {
		pattern.AppendEncodeLarge(b[:0], channel, index, len(b))
		return
	}
	for i := range b {
		b[i] = byte(index*13 + uint64(i))
	}
}

func wantBlob(channel uint32, index uint64, n int) []byte {
	b := make([]byte, n)
	fillBlob(b, channel, index)
	return b
}

// forgeBlob publishes, on c, a message flagged FlagBlob carrying ref with payload_len
// payloadLen: how a hostile or stale peer writes a reference.
func forgeBlob(t testing.TB, c *Channel, ref BlobRef, payloadLen uint32) uint64 {
	t.Helper()
	position, _, err := c.claimSend(1)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	var b [BlobRefLen]byte
	w0, w1 := ref.words()
	for i := 0; i < 8; i++ {
		b[i], b[8+i] = byte(w0>>(8*i)), byte(w1>>(8*i))
	}
	if !c.publishSlot(position, position, b[:], &SendOptions{}, 0, payloadLen, FlagBlob, 0, 0) {
		t.Fatal("forged publish revoked")
	}
	intentClear(c.sendPeer, &c.sendFlagsShown)
	c.notifyConsumers()
	return position
}

// ------------------------------------------------------------------ layout

func TestBlobLayoutOffsets(t *testing.T) {
	if BlobDescriptorArea != 576 || BlobPoolHeaderSize != 64 || BlockHeaderSize != 64 || BlobRefLen != 16 {
		t.Fatalf("sizes %d %d %d %d", BlobDescriptorArea, BlobPoolHeaderSize, BlockHeaderSize, BlobRefLen)
	}
	if offBlobPoolOffset != 64 || ChannelFlagBlobs != 0x2 || FlagBlob != 0x0010 || knownChannelFlags != 0x3 {
		t.Fatal("header, entry or message flag constants")
	}
	var magic [8]byte
	for i := range magic {
		magic[i] = byte(BlobPoolMagic >> (8 * i))
	}
	if string(magic[:]) != "DMXPBLOB" {
		t.Errorf("pool magic in memory %q", magic)
	}
	if poolClassCount != 8 || poolLenOff != 16 || poolFreeSeq != 24 || poolFreeWaiters != 28 ||
		clsBlockCount != 8 || clsHeadersOffset != 16 || clsDataOffset != 24 || clsNextHint != 32 ||
		blkChannelID != 8 || blkLength != 12 || blkPosition != 16 || blkOwnerPid != 24 {
		t.Fatal("descriptor or header field offsets")
	}
	tag := BlobTag{State: BlockLoaned, Owner: 5, Generation: 9}
	if tag.Pack() != 1|5<<8|9<<32 || UnpackBlobTag(tag.Pack()) != tag {
		t.Errorf("tag %#x", tag.Pack())
	}
	if UnpackBlobTag(0xFFFFFFFF_12345603) != (BlobTag{State: BlockHeld, Owner: 0x123456, Generation: 0xFFFFFFFF}) {
		t.Error("unpack")
	}
	r := BlobRef{Class: 2, Block: 7, Generation: 3, Len: 4096}
	w0, w1 := r.words()
	if w0 != 2|7<<32 || w1 != 3|4096<<32 || decodeBlobRef(w0, w1) != r || decodeBlobRef(w0|0xFFFFFF00, w1) != r {
		t.Errorf("reference words %#x %#x", w0, w1)
	}

	// The interop programs' pool, laid out as the contract says.
	classes := []BlobClass{{65536, 32}, {1048576, 8}, {4194304, 6}}
	p, err := planBlobPool(classes, blobPoolStart)
	if err != nil {
		t.Fatal(err)
	}
	const P = 102400
	want := []BlobClassGeometry{
		{65536, 32, P + 256, 106496},
		{1048576, 8, P + 256 + 32*64, 106496 + 32*65536},
		{4194304, 6, P + 256 + 40*64, 106496 + 32*65536 + 8*1048576},
	}
	if blobPoolStart != P || p.offset != P || p.length != 106496+32*65536+8*1048576+6*4194304-P || p.count != 3 {
		t.Fatalf("pool at %d, %d bytes, %d classes", p.offset, p.length, p.count)
	}
	for i, w := range want {
		if p.classes[i] != w {
			t.Errorf("class %d: %+v, want %+v", i, p.classes[i], w)
		}
	}

	// What a created segment holds, byte for byte.
	seg := newBlobSegment(t, 64<<20, classes)
	b := segmentBytes(seg)
	le64 := func(off uint64) uint64 {
		var v uint64
		for i := uint64(0); i < 8; i++ {
			v |= uint64(b[off+i]) << (8 * i)
		}
		return v
	}
	le32 := func(off uint64) uint64 { return le64(off) & 0xFFFFFFFF }
	if le64(64) != P || le64(offBandCursor) != P+p.length || le64(P) != BlobPoolMagic || le32(P+8) != 3 ||
		le32(P+12) != 0 || le64(P+16) != p.length || le64(P+24) != 0 {
		t.Fatalf("header or pool descriptor: offset %d cursor %d magic %#x count %d len %d", le64(64), le64(offBandCursor), le64(P), le32(P+8), le64(P+16))
	}
	for i, w := range want {
		d := uint64(P + 64 + 64*i)
		if le64(d) != w.BlockSize || le32(d+8) != uint64(w.BlockCount) || le32(d+12) != 0 || le64(d+16) != w.HeadersOffset ||
			le64(d+24) != w.DataOffset || le32(d+32) != 0 {
			t.Errorf("class descriptor %d", i)
		}
		for j := uint64(0); j < uint64(w.BlockCount)*64; j += 8 {
			if le64(w.HeadersOffset+j) != 0 {
				t.Fatalf("class %d: block header bytes not zero at %d", i, j)
			}
		}
	}
	if h := seg.Header(); h.BlobPoolOffset != P {
		t.Errorf("HeaderInfo.BlobPoolOffset %d", h.BlobPoolOffset)
	}

	// A message that refers to a block: FlagBlob, payload_len 16, the reference's bytes.
	ch, err := seg.CreateChannelWith(0, 4, ChannelOptions{Blobs: true})
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := seg.Entry(0); e.Flags != ChannelFlagBlobs || e.MaxMessageSize != 0 || e.BandOffset != P+p.length {
		t.Errorf("entry %+v", e)
	}
	if err := ch.Register(RoleProducer); err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	loan, err := ch.LoanBlob(70000)
	if err != nil {
		t.Fatal(err)
	}
	id, err := loan.Commit(SendOptions{MessageType: 7, Flags: 0x0100})
	if err != nil {
		t.Fatal(err)
	}
	s := ch.PeekSlot(id)
	ref := loan.Ref()
	wantRef := []byte{ref.Class, 0, 0, 0, byte(ref.Block), byte(ref.Block >> 8), byte(ref.Block >> 16), byte(ref.Block >> 24),
		byte(ref.Generation), byte(ref.Generation >> 8), byte(ref.Generation >> 16), byte(ref.Generation >> 24), 0x70, 0x11, 0x01, 0}
	if s.Meta.Flags != 0x0100|FlagBlob || s.Meta.PayloadLen != 16 || s.Meta.MessageType != 7 || !bytes.Equal(s.Payload, wantRef) ||
		ref.Class != 1 || ref.Generation != 1 || ref.Len != 70000 {
		t.Errorf("slot %+v, reference %+v (%x, want %x)", s.Meta, ref, s.Payload, wantRef)
	}
	info, ok := seg.BlobBlock(int(ref.Class), ref.Block)
	if !ok || info.Tag != (BlobTag{State: BlockQueued, Generation: 1}) || info.ChannelID != 0 || info.Position != id ||
		info.Length != 70000 || info.OwnerPID != uint32(os.Getpid()) {
		t.Errorf("block header %+v", info)
	}
}

// ------------------------------------------------------------------ create, attach, validate

func TestBlobPoolCreateAndAttach(t *testing.T) {
	seg := newBlobSegment(t, 16<<20, roundTripClasses)
	g, ok := seg.BlobPool()
	if !ok || !seg.HasBlobPool() || len(g.Classes) != 3 || g.LargestBlock() != 4<<20 || g.Offset != blobPoolStart {
		t.Fatalf("pool %+v %v", g, ok)
	}
	other, err := OpenPath(seg.Path(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	g2, ok := other.BlobPool()
	if !ok || g2.Offset != g.Offset || g2.Len != g.Len || len(g2.Classes) != 3 {
		t.Fatalf("attached pool %+v", g2)
	}
	for i := range g.Classes {
		if g.Classes[i] != g2.Classes[i] {
			t.Errorf("class %d: %+v vs %+v", i, g.Classes[i], g2.Classes[i])
		}
	}
	if err := other.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	// The geometry is cached at attach: a descriptor rewritten later is never read.
	store64(other.base, uintptr(g.Offset)+poolMagicOff, 1)
	if g3, _ := other.BlobPool(); g3.Len != g.Len {
		t.Error("geometry re-read")
	}
	store64(other.base, uintptr(g.Offset)+poolMagicOff, BlobPoolMagic)
	if st, _ := other.BlobPoolStats(); st.FreeBlocks() != totalBlocks(roundTripClasses) || len(st.Owners) != 0 {
		t.Errorf("stats %+v", st)
	}

	// Creation refuses a bad pool or one that does not fit, before anything is created.
	bad := [][]BlobClass{
		{},
		{{64, 1}, {128, 1}, {192, 1}, {256, 1}, {320, 1}, {384, 1}, {448, 1}, {512, 1}, {576, 1}},
		{{100, 1}},
		{{0, 1}},
		{{MaxBlockSize + 64, 1}},
		{{4096, 0}},
		{{4096, MaxBlockCount + 1}},
		{{4096, 1}, {4096, 1}},
		{{8192, 1}, {4096, 1}},
	}
	for i, classes := range bad {
		path := testSegmentPath(t)
		_, err := CreatePath(path, &Options{Size: 1 << 20, BlobPool: classes})
		var ie *InvalidBlobPoolError
		if !errors.As(err, &ie) || !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("classes %d: %v", i, err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("classes %d: a segment was created", i)
			os.Remove(path)
		}
	}
	path := testSegmentPath(t)
	if _, err := CreatePath(path, &Options{Size: 1 << 20, BlobPool: []BlobClass{{1 << 20, 1}}}); !errors.Is(err, ErrOutOfSpace) {
		t.Errorf("pool larger than the segment: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Error("a segment was created")
		os.Remove(path)
	}
	// The pool fills the segment exactly: it is made; a channel then finds no room.
	p, _ := planBlobPool([]BlobClass{{4096, 3}}, blobPoolStart)
	exact := newBlobSegment(t, int64(p.end()), []BlobClass{{4096, 3}})
	if _, err := exact.CreateChannelWith(0, 2, ChannelOptions{Blobs: true}); !errors.Is(err, ErrOutOfSpace) {
		t.Errorf("channel in a full segment: %v", err)
	}
	// No pool: a BLOBS channel is refused before anything is claimed.
	plain := newTestSegment(t, segmentSize(4))
	if _, err := plain.CreateChannelWith(0, 4, ChannelOptions{Blobs: true}); !errors.Is(err, ErrNoBlobPool) {
		t.Errorf("BLOBS without a pool: %v", err)
	}
	if e, _ := plain.Entry(0); e.State != StateEmpty || plain.HasBlobPool() {
		t.Errorf("entry claimed: %+v", e)
	}
}

// poolBytes is a quiescent segment of 1 MiB with a pool of two small classes and channel 0
// (capacity 2, BLOBS) after it, as bytes.
func poolBytes(t *testing.T) ([]byte, *blobPool) {
	t.Helper()
	seg := newBlobSegment(t, 1<<20, []BlobClass{{64, 4}, {4096, 2}})
	if _, err := seg.CreateChannelWith(0, 2, ChannelOptions{Blobs: true}); err != nil {
		t.Fatal(err)
	}
	return segmentBytes(seg), seg.pool
}

func TestBlobPoolValidation(t *testing.T) {
	good, p := poolBytes(t)
	P := p.offset
	segLen := uint64(len(good))
	if p.classes[0].HeadersOffset != P+192 || p.classes[1].HeadersOffset != P+448 || p.classes[0].DataOffset != P+4096 ||
		p.classes[1].DataOffset != P+8192 || p.length != 16384 {
		t.Fatalf("layout %+v", p)
	}
	c0, c1 := P+64, P+128
	cases := []struct {
		name  string
		mut   []mutation
		kind  CorruptionKind
		field string
		class int
	}{
		{"offset misaligned", []mutation{{offBlobPoolOffset, 8, P + 8}}, BlobPoolOutOfRange, "blob_pool_offset", -1},
		{"offset in the header", []mutation{{offBlobPoolOffset, 8, 4096}}, BlobPoolOutOfRange, "blob_pool_offset", -1},
		{"no room for the descriptors", []mutation{{offBlobPoolOffset, 8, segLen - 512}}, BlobPoolOutOfRange, "blob_pool_offset", -1},
		{"offset past the segment", []mutation{{offBlobPoolOffset, 8, 1 << 40}}, BlobPoolOutOfRange, "blob_pool_offset", -1},
		{"bad magic", []mutation{{P, 8, 1}}, BlobPoolBadMagic, "pool_magic", -1},
		{"no classes", []mutation{{P + 8, 4, 0}}, BlobPoolBadGeometry, "pool_len", 0},
		{"nine classes", []mutation{{P + 8, 4, 9}}, BlobPoolBadGeometry, "pool_len", 9},
		{"pool_len below the descriptors", []mutation{{P + 16, 8, 191}}, BlobPoolBadGeometry, "pool_len", 2},
		{"pool_len past the segment", []mutation{{P + 16, 8, segLen}}, BlobPoolBadGeometry, "pool_len", 2},
		{"pool_len overflows", []mutation{{P + 16, 8, ^uint64(0)}}, BlobPoolBadGeometry, "pool_len", 2},
		{"block size not a multiple of 64", []mutation{{c0, 8, 100}}, BlobClassBad, "block_size", 0},
		{"block size 0", []mutation{{c0, 8, 0}}, BlobClassBad, "block_size", 0},
		{"block size past 2^31", []mutation{{c1, 8, MaxBlockSize + 64}}, BlobClassBad, "block_size", 1},
		{"sizes not increasing", []mutation{{c1, 8, 64}}, BlobClassBad, "block_size", 1},
		{"block count 0", []mutation{{c0 + 8, 4, 0}}, BlobClassBad, "block_size", 0},
		{"block count past 2^24", []mutation{{c1 + 8, 4, uint64(MaxBlockCount) + 1}}, BlobClassBad, "block_size", 1},
		{"headers misaligned", []mutation{{c0 + 16, 8, P + 200}}, BlobClassBad, "block_size", 0},
		{"headers over the descriptors", []mutation{{c0 + 16, 8, P + 128}}, BlobClassBad, "block_size", 0},
		{"headers overflow", []mutation{{c0 + 16, 8, ^uint64(63)}}, BlobClassBad, "block_size", 0},
		{"data past the pool", []mutation{{c1 + 24, 8, P + 16384 - 4096}}, BlobClassBad, "block_size", 1},
		{"data before the pool", []mutation{{c1 + 24, 8, P - 8192}}, BlobClassBad, "block_size", 1},
		{"two classes' headers overlap", []mutation{{c1 + 16, 8, P + 192}}, BlobClassBad, "block_size", 0},
		{"data over headers", []mutation{{c0 + 24, 8, P + 192}}, BlobClassBad, "block_size", 0},
		{"two classes' data overlap", []mutation{{c1 + 24, 8, P + 4096}}, BlobClassBad, "block_size", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte(nil), good...)
			for _, m := range tc.mut {
				putLE(b, m.off, m.width, m.value)
			}
			_, err := openBytes(t, b, time.Second)
			var ce *CorruptionError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want a CorruptionError", err)
			}
			if ce.Kind != tc.kind || ce.Field != tc.field || ce.Channel != -1 || (tc.class >= 0 && ce.Other != tc.class) {
				t.Errorf("got %+v (%v), want kind %v field %s class %d", ce, ce, tc.kind, tc.field, tc.class)
			}
			if ce.Kind.String() != map[CorruptionKind]string{BlobPoolOutOfRange: "BlobPoolOutOfRange", BlobPoolBadMagic: "BlobPoolBadMagic",
				BlobPoolBadGeometry: "BlobPoolBadGeometry", BlobClassBad: "BlobClassBad"}[tc.kind] || ce.Error() == "" {
				t.Errorf("kind name %s", ce.Kind)
			}
		})
	}
	// The pristine bytes attach, with the same geometry.
	seg, err := openBytes(t, good, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if seg.pool == nil || *seg.pool != *p {
		t.Fatalf("attached pool %+v, want %+v", seg.pool, p)
	}
	if _, err := seg.OpenChannel(0); err != nil {
		t.Fatal(err)
	}
	// Another creator's layout validates too: the Rust creator puts the headers after room
	// for all 8 class descriptors (P + 576).
	b := append([]byte(nil), good...)
	putLE(b, c0+16, 8, P+576)
	putLE(b, c1+16, 8, P+576+4*64)
	if seg, err = openBytes(t, b, time.Second); err != nil {
		t.Fatalf("headers at P + 576: %v", err)
	}
	if seg.pool.classes[1].HeadersOffset != P+832 {
		t.Errorf("pool %+v", seg.pool)
	}

	// A band or a peer table over the pool is refused when the channel is opened.
	e0 := EntryOffset(0)
	b = append([]byte(nil), good...)
	putLE(b, e0+entBandOffset, 8, P)
	seg, err = openBytes(t, b, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ce *CorruptionError
	if _, err := seg.OpenChannel(0); !errors.As(err, &ce) || ce.Kind != BlobPoolOverlap || ce.Channel != 0 || ce.Value != P {
		t.Errorf("band over the pool: %v", err)
	}
	if err := seg.ValidateAll(); !errors.As(err, &ce) || ce.Kind != BlobPoolOverlap {
		t.Errorf("ValidateAll: %v", err)
	}
	b = append([]byte(nil), good...)
	putLE(b, offPeerTableOffset, 8, P)
	seg, err = openBytes(t, b, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seg.OpenChannel(0); !errors.As(err, &ce) || ce.Kind != BlobPoolOverlap || ce.Channel != -1 || ce.Field != "peer_table_offset" {
		t.Errorf("peer table over the pool: %v", err)
	}
	// A scribbled band cursor never carves a band over the pool.
	b = append([]byte(nil), good...)
	putLE(b, offBandCursor, 8, P+4096)
	seg, err = openBytes(t, b, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seg.CreateChannel(1, 2); !errors.As(err, &ce) || ce.Kind != BandCursorOutOfRange {
		t.Errorf("band cursor inside the pool: %v", err)
	}
}

func TestBlobChannelFlags(t *testing.T) {
	// BLOBS in a segment without a pool: corrupt (PROTOCOL.md §13.1).
	good := validSegmentBytes(t)
	e1 := EntryOffset(1)
	for _, flags := range []uint64{0x2, 0x3} {
		b := append([]byte(nil), good...)
		putLE(b, e1+entFlags, 4, flags)
		if flags&uint64(ChannelFlagRuns) != 0 {
			putLE(b, e1+entMaxMessageSize, 4, 2*MsgInline)
		}
		seg, err := openBytes(t, b, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var ce *CorruptionError
		if _, err := seg.OpenChannel(1); !errors.As(err, &ce) || ce.Kind != BlobsWithoutPool || ce.Channel != 1 ||
			ce.Field != "flags" || ce.Kind.String() != "BlobsWithoutPool" {
			t.Errorf("flags %#x: %v", flags, err)
		}
		if err := seg.ValidateAll(); !errors.As(err, &ce) || ce.Kind != BlobsWithoutPool {
			t.Errorf("ValidateAll: %v", err)
		}
		if _, err := seg.OpenChannel(0); err != nil {
			t.Errorf("channel 0: %v", err)
		}
	}
	// Unknown bits beside RUNS and BLOBS are still refused.
	b := append([]byte(nil), good...)
	putLE(b, e1+entFlags, 4, 0x6)
	seg, err := openBytes(t, b, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ce *CorruptionError
	if _, err := seg.OpenChannel(1); !errors.As(err, &ce) || ce.Kind != UnknownChannelFlags || ce.Value != 0x6 {
		t.Errorf("flags 0x6: %v", err)
	}

	// BLOBS with RUNS, in a segment with a pool: both kinds of message travel.
	pseg := newBlobSegment(t, 8<<20, []BlobClass{{8192, 2}})
	prod, cons := blobPair(t, pseg, 2, 16, ChannelOptions{MaxMessageSize: 4000})
	if !prod.CarriesBlobs() || !prod.CarriesRuns() || prod.MaxBlobSize() != 8192 || prod.MaxMessageSize() != 4000 {
		t.Fatalf("flags of the channel: blobs %v runs %v", prod.CarriesBlobs(), prod.CarriesRuns())
	}
	plain, err := pseg.CreateChannel(3, 4)
	if err != nil {
		t.Fatal(err)
	}
	if plain.CarriesBlobs() || plain.MaxBlobSize() != 0 {
		t.Error("plain channel carries blobs")
	}
	if err := plain.Register(RoleProducer); err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.LoanBlob(10); !errors.Is(err, ErrNoBlobPool) {
		t.Errorf("loan on a plain channel: %v", err)
	}
	if _, err := plain.TryReceiveBlob(); !errors.Is(err, ErrNoBlobPool) {
		t.Errorf("blob receive on a plain channel: %v", err)
	}
	run := pattern.EncodeLarge(2, 1, 3000)
	if _, err := prod.TrySend(run); err != nil {
		t.Fatal(err)
	}
	loan, err := prod.LoanBlob(5000)
	if err != nil {
		t.Fatal(err)
	}
	fillBlob(loan.Bytes(), 2, 2)
	if _, err := loan.Commit(SendOptions{}); err != nil {
		t.Fatal(err)
	}
	v, err := cons.TryReceiveBlob()
	if err != nil || v.IsBlob() || !bytes.Equal(v.Bytes(), run) || v.Meta().Flags&FlagRun == 0 || v.Ref() != (BlobRef{}) {
		t.Fatalf("run through ReceiveBlob: %v", err)
	}
	if err := v.Release(); err != nil {
		t.Fatal(err)
	}
	v, err = cons.TryReceiveBlob()
	if err != nil || !v.IsBlob() || !bytes.Equal(v.Bytes(), wantBlob(2, 2, 5000)) {
		t.Fatalf("blob: %v", err)
	}
	if err := v.Release(); err != nil || v.Release() != ErrBlobDone || v.Bytes() != nil {
		t.Fatal("release")
	}
}

// ------------------------------------------------------------------ round trips

func TestBlobRoundTrips(t *testing.T) {
	seg := newBlobSegment(t, 16<<20, roundTripClasses)
	prod, cons := blobPair(t, seg, 0, 8, ChannelOptions{})
	start := freeBlocks(t, seg)
	for i, n := range []int{1, 4096, 1 << 20, 4 << 20, 0, 23, 4097} {
		index := uint64(i)
		loan, err := prod.LoanBlob(n)
		if err != nil {
			t.Fatalf("loan %d: %v", n, err)
		}
		if loan.Len() != n || len(loan.Bytes()) != n || cap(loan.Bytes()) != n {
			t.Fatalf("loan of %d: len %d", n, loan.Len())
		}
		wantClass := map[int]uint8{1: 0, 4096: 0, 1 << 20: 1, 4 << 20: 2, 0: 0, 23: 0, 4097: 1}[n]
		if loan.Ref().Class != wantClass {
			t.Errorf("loan of %d in class %d, want %d", n, loan.Ref().Class, wantClass)
		}
		if i%2 == 0 {
			fillBlob(loan.Bytes(), 0, index)
		} else {
			if w, err := loan.WriteAt(wantBlob(0, index, n), 0); w != n || err != nil {
				t.Fatalf("WriteAt: %d %v", w, err)
			}
		}
		if w, err := loan.WriteAt([]byte{1, 2}, int64(n)-1); n > 0 && (w != 1 || err != io.ErrShortWrite) {
			t.Errorf("WriteAt past the end: %d %v", w, err)
		}
		if n > 0 {
			loan.Bytes()[n-1] = wantBlob(0, index, n)[n-1]
		}
		if st, _ := seg.BlobPoolStats(); st.Owners[int(prod.sendOwner-1)] != 1 {
			t.Errorf("owners %+v", st.Owners)
		}
		id, err := loan.Commit(SendOptions{MessageType: uint32(n)})
		if err != nil {
			t.Fatalf("commit %d: %v", n, err)
		}
		if loan.Bytes() != nil {
			t.Error("Bytes after commit")
		}
		if _, err := loan.Commit(SendOptions{}); err != ErrBlobDone {
			t.Errorf("second commit: %v", err)
		}
		if _, err := loan.WriteAt([]byte{1}, 0); err != ErrBlobDone {
			t.Errorf("WriteAt after commit: %v", err)
		}
		v, err := cons.ReceiveBlobTimeout(time.Second)
		if err != nil {
			t.Fatalf("receive %d: %v", n, err)
		}
		m := v.Meta()
		if !v.IsBlob() || v.Len() != n || m.MessageID != id || m.PayloadLen != uint32(n) || m.Flags&FlagBlob == 0 ||
			m.MessageType != uint32(n) || m.SenderRuntime != RuntimeGo || v.Ref() != loan.Ref() {
			t.Errorf("view of %d: %+v ref %+v", n, m, v.Ref())
		}
		if !bytes.Equal(v.Bytes(), wantBlob(0, index, n)) {
			t.Fatalf("content of the %d-byte blob differs", n)
		}
		if n >= pattern.MinLen {
			if c, idx, err := pattern.Decode(v.Bytes()); err != nil || c != 0 || idx != index {
				t.Errorf("pattern: %v", err)
			}
		}
		got := make([]byte, n)
		if r, err := v.ReadAt(got, 0); r != n || (err != nil && !(n == 0 && err == nil)) || !bytes.Equal(got, wantBlob(0, index, n)) {
			t.Errorf("ReadAt: %d %v", r, err)
		}
		if r, err := v.ReadAt(make([]byte, 4), int64(n)-2); n >= 2 && (r != 2 || err != io.EOF) {
			t.Errorf("ReadAt past the end: %d %v", r, err)
		}
		if v.CopyTo(make([]byte, n+10)) != n {
			t.Error("CopyTo")
		}
		if info, _ := seg.BlobBlock(int(v.Ref().Class), v.Ref().Block); info.Tag.State != BlockHeld || info.Tag.Owner != cons.recvOwner {
			t.Errorf("held block %+v", info)
		}
		if err := v.Release(); err != nil {
			t.Fatalf("release: %v", err)
		}
		if _, err := v.ReadAt(got, 0); err != ErrBlobDone || v.CopyTo(got) != 0 {
			t.Error("reads after release")
		}
		if f := freeBlocks(t, seg); f != start {
			t.Fatalf("free blocks %d after release, want %d", f, start)
		}
	}
	if st := cons.Stats(); st != (Stats{}) {
		t.Errorf("stats %+v", st)
	}
	if st := prod.Stats(); st != (Stats{}) {
		t.Errorf("producer stats %+v", st)
	}
	// Truncate commits fewer bytes, the last word zero-padded.
	loan, err := prod.LoanBlob(100)
	if err != nil {
		t.Fatal(err)
	}
	for i := range loan.Bytes() {
		loan.Bytes()[i] = 0xEE
	}
	if err := loan.Truncate(101); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("grow: %v", err)
	}
	if err := loan.Truncate(13); err != nil || loan.Len() != 13 {
		t.Fatal(err)
	}
	if _, err := loan.Commit(SendOptions{}); err != nil {
		t.Fatal(err)
	}
	v, err := cons.TryReceiveBlob()
	if err != nil || v.Len() != 13 || v.Meta().PayloadLen != 13 {
		t.Fatalf("truncated: %v", err)
	}
	block := seg.blockBytes(int(v.Ref().Class), v.Ref().Block, 24)
	if !bytes.Equal(block[:13], bytes.Repeat([]byte{0xEE}, 13)) || !bytes.Equal(block[13:16], []byte{0, 0, 0}) || block[16] != 0xEE {
		t.Errorf("padding %x", block)
	}
	if err := v.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := cons.TryReceiveBlob(); err != ErrEmpty {
		t.Errorf("empty: %v", err)
	}
}

// The copying receives take blobs too: they copy the block's bytes and free it, refuse a
// buffer too short consuming nothing, and never deliver the reference.
func TestBlobCopyingReceives(t *testing.T) {
	seg := newBlobSegment(t, 4<<20, []BlobClass{{4096, 2}, {65536, 2}})
	prod, cons := blobPair(t, seg, 0, 8, ChannelOptions{})
	unregistered, err := seg.OpenChannel(0)
	if err != nil {
		t.Fatal(err)
	}
	start := freeBlocks(t, seg)
	send := func(index uint64, n int) uint64 {
		t.Helper()
		loan, err := prod.LoanBlob(n)
		if err != nil {
			t.Fatal(err)
		}
		fillBlob(loan.Bytes(), 0, index)
		id, err := loan.Commit(SendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	id := send(1, 3000)
	var tooSmall *BufferTooSmallError
	if _, err := unregistered.TryReceive(make([]byte, MsgInline)); !errors.As(err, &tooSmall) || tooSmall.Needed != 3000 {
		t.Fatalf("960-byte buffer: %v", err)
	}
	if unregistered.Head() != id || freeBlocks(t, seg) != start-1 {
		t.Fatal("the refusal consumed something")
	}
	buf := make([]byte, 4000)
	meta, err := unregistered.TryReceive(buf) // no registration needed
	if err != nil || meta.PayloadLen != 3000 || meta.Flags&FlagBlob == 0 || meta.MessageID != id ||
		!bytes.Equal(buf[:3000], wantBlob(0, 1, 3000)) {
		t.Fatalf("copy: %+v %v", meta, err)
	}
	if freeBlocks(t, seg) != start {
		t.Error("block not freed by the copying receive")
	}
	// Blocking receive, with a timeout.
	send(2, 50000)
	buf = make([]byte, 65536)
	if meta, err = cons.ReceiveTimeout(buf, time.Second); err != nil || meta.PayloadLen != 50000 || !bytes.Equal(buf[:50000], wantBlob(0, 2, 50000)) {
		t.Fatalf("ReceiveTimeout: %v", err)
	}
	// A batch stops before a blob; one that starts at a blob delivers it alone.
	if _, err := prod.TrySend([]byte("inline 1")); err != nil {
		t.Fatal(err)
	}
	send(3, 70)
	if _, err := prod.TrySend([]byte("inline 2")); err != nil {
		t.Fatal(err)
	}
	var got []string
	deliver := func(m Meta, p []byte) {
		got = append(got, fmt.Sprintf("%d:%d:%v", m.PayloadLen, m.Flags&FlagBlob, bytes.Equal(p, wantBlob(0, 3, 70))))
	}
	for i := 0; i < 3; i++ {
		r, err := cons.TryReceiveBatch(8, deliver)
		if err != nil || r.Delivered != 1 || r.Dropped != 0 {
			t.Fatalf("batch %d: %+v %v", i, r, err)
		}
	}
	if want := []string{"8:0:false", "70:16:true", "8:0:false"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("batches delivered %v, want %v", got, want)
	}
	if freeBlocks(t, seg) != start || cons.Stats() != (Stats{}) || unregistered.Stats() != (Stats{}) {
		t.Errorf("free %d, stats %+v", freeBlocks(t, seg), cons.Stats())
	}
	// An inline message through ReceiveBlob: a private copy.
	if _, err := prod.TrySend([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	v, err := cons.TryReceiveBlob()
	if err != nil || v.IsBlob() || string(v.Bytes()) != "hello" || v.Meta().PayloadLen != 5 || v.Meta().Flags&FlagBlob != 0 {
		t.Fatalf("inline: %v", err)
	}
	if err := v.Release(); err != nil {
		t.Fatal(err)
	}
}

// ------------------------------------------------------------------ exhaustion and waits

func TestBlobExhaustionAndRecovery(t *testing.T) {
	seg := newBlobSegment(t, 2<<20, []BlobClass{{4096, 2}})
	prod, cons := blobPair(t, seg, 0, 8, ChannelOptions{})
	a, err := prod.LoanBlob(4096)
	if err != nil {
		t.Fatal(err)
	}
	b, err := prod.LoanBlob(10)
	if err != nil {
		t.Fatal(err)
	}
	var pe *PoolExhaustedError
	if _, err := prod.LoanBlob(1); !errors.As(err, &pe) || !errors.Is(err, ErrPoolExhausted) || pe.Len != 1 {
		t.Fatalf("third loan: %v", err)
	}
	if _, err := prod.LoanBlob(4097); !errors.Is(err, ErrTooLarge) {
		t.Errorf("too large: %v", err)
	}
	began := time.Now()
	if _, err := prod.LoanBlobTimeout(1, 30*time.Millisecond); err != ErrTimeout || time.Since(began) < 30*time.Millisecond {
		t.Errorf("timed loan: %v after %v", err, time.Since(began))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	if _, err := prod.LoanBlobContext(ctx, 1); err != context.DeadlineExceeded {
		t.Errorf("context loan: %v", err)
	}
	cancel()
	// Abandon gives a block back at once.
	if err := b.Abandon(); err != nil || b.Abandon() != ErrBlobDone {
		t.Fatal("abandon")
	}
	if _, err := b.Commit(SendOptions{}); err != ErrBlobDone {
		t.Errorf("commit after abandon: %v", err)
	}
	c, err := prod.LoanBlob(100)
	if err != nil {
		t.Fatalf("loan after abandon: %v", err)
	}
	// A blocking loan sleeps until a consumer releases a block.
	fillBlob(a.Bytes(), 0, 1)
	if _, err := a.Commit(SendOptions{}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		l   *BlobLoan
		err error
		at  time.Duration
	}
	done := make(chan result)
	began = time.Now()
	go func() {
		l, err := prod.LoanBlobTimeout(4000, 10*time.Second)
		done <- result{l, err, time.Since(began)}
	}()
	time.Sleep(50 * time.Millisecond)
	waits := FutexWaitCalls()
	v, err := cons.TryReceiveBlob()
	if err != nil || !bytes.Equal(v.Bytes(), wantBlob(0, 1, 4096)) {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		t.Fatalf("loan returned while the pool was exhausted: %v", r.err)
	default:
	}
	if err := v.Release(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.l.Ref().Block != v.Ref().Block || r.at > 5*time.Second {
		t.Fatalf("woken loan: %v after %v", r.err, r.at)
	}
	if waits == 0 {
		t.Log("the waiting loan made no futex wait before the release")
	}
	if n := atomic.LoadUint32(seg.poolWord(poolFreeWaiters)); n != 0 {
		t.Errorf("free_waiters %d after the wait", n)
	}
	// A cancelled context wakes a sleeping loan promptly.
	ctx, cancel = context.WithCancel(context.Background())
	go func() { time.Sleep(30 * time.Millisecond); cancel() }()
	began = time.Now()
	if _, err := prod.LoanBlobContext(ctx, 1); err != context.Canceled || time.Since(began) > 2*time.Second {
		t.Errorf("cancelled loan: %v after %v", err, time.Since(began))
	}
	for _, l := range []*BlobLoan{c, r.l} {
		if err := l.Abandon(); err != nil {
			t.Fatal(err)
		}
	}
	if f := freeBlocks(t, seg); f != 2 {
		t.Errorf("free blocks %d", f)
	}
	// A full ring keeps the loan the producer's; CommitTimeout waits for a slot.
	small := newBlobSegment(t, 2<<20, []BlobClass{{64, 8}})
	sprod, scons := blobPair(t, small, 0, 2, ChannelOptions{})
	for i := 0; i < 2; i++ {
		l, err := sprod.LoanBlob(8)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Commit(SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	l, err := sprod.LoanBlob(8)
	if err != nil {
		t.Fatal(err)
	}
	copy(l.Bytes(), "12345678")
	if _, err := l.Commit(SendOptions{}); err != ErrFull {
		t.Fatalf("commit on a full ring: %v", err)
	}
	if _, err := l.CommitTimeout(SendOptions{}, 20*time.Millisecond); err != ErrTimeout {
		t.Fatalf("timed commit: %v", err)
	}
	if _, err := l.Commit(SendOptions{Flags: 0x0001}); !errors.Is(err, ErrReservedFlags) {
		t.Errorf("reserved flags: %v", err)
	}
	released := make(chan error, 1)
	go func() {
		time.Sleep(30 * time.Millisecond)
		v, err := scons.TryReceiveBlob()
		if err == nil {
			err = v.Release()
		}
		released <- err
	}()
	_, err = l.CommitTimeout(SendOptions{}, 5*time.Second)
	if rerr := <-released; rerr != nil {
		t.Fatalf("receive in the other goroutine: %v", rerr)
	}
	if err != nil {
		t.Fatalf("commit after a slot freed: %v", err)
	}
	for i := 0; i < 2; i++ {
		v, err := scons.TryReceiveBlob()
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 && string(v.Bytes()) != "12345678" {
			t.Errorf("last blob %q", v.Bytes())
		}
		v.Release()
	}
	if f := freeBlocks(t, small); f != 8 {
		t.Errorf("free blocks %d", f)
	}
}

func TestBlobNeedsRegistration(t *testing.T) {
	seg := newBlobSegment(t, 2<<20, []BlobClass{{4096, 2}})
	ch, err := seg.CreateChannelWith(0, 4, ChannelOptions{Blobs: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.LoanBlob(1); err != ErrNotRegistered {
		t.Errorf("unregistered loan: %v", err)
	}
	if _, err := ch.LoanBlobTimeout(1, time.Millisecond); err != ErrNotRegistered {
		t.Errorf("unregistered timed loan: %v", err)
	}
	if _, err := ch.TryReceiveBlob(); err != ErrNotRegistered {
		t.Errorf("unregistered receive: %v", err)
	}
	if _, err := ch.ReceiveBlobTimeout(time.Millisecond); err != ErrNotRegistered {
		t.Errorf("unregistered timed receive: %v", err)
	}
	if err := ch.Register(RoleProducer); err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if _, err := ch.LoanBlob(-1); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("negative loan: %v", err)
	}
	var tl *TooLargeError
	if _, err := ch.LoanBlob(4097); !errors.As(err, &tl) || tl.Limit != 4096 || tl.Len != 4097 {
		t.Errorf("too large: %v", err)
	}
	if freeBlocks(t, seg) != 2 {
		t.Error("a refused loan took a block")
	}
}

// ------------------------------------------------------------------ bad references

func TestBlobStaleReferenceCountedCorrupt(t *testing.T) {
	seg := newBlobSegment(t, 2<<20, []BlobClass{{4096, 1}})
	prod, cons := blobPair(t, seg, 0, 8, ChannelOptions{})
	loan, err := prod.LoanBlob(100)
	if err != nil {
		t.Fatal(err)
	}
	fillBlob(loan.Bytes(), 0, 1)
	old := loan.Ref()
	if _, err := loan.Commit(SendOptions{}); err != nil {
		t.Fatal(err)
	}
	v, err := cons.TryReceiveBlob()
	if err != nil {
		t.Fatal(err)
	}
	// A replay of the reference while the block is held: not queued for that position.
	forgeBlob(t, prod, old, BlobRefLen)
	var cm *CorruptMessageError
	if _, err := cons.TryReceiveBlob(); !errors.As(err, &cm) || !cm.Blob || cm.Run {
		t.Fatalf("replayed reference: %v", err)
	}
	if info, _ := seg.BlobBlock(0, 0); info.Tag != (BlobTag{State: BlockHeld, Owner: cons.recvOwner, Generation: old.Generation}) {
		t.Errorf("the held block was touched: %+v", info.Tag)
	}
	if err := v.Release(); err != nil {
		t.Fatal(err)
	}
	// The next loan of the block has the next generation; the old reference is stale.
	loan, err = prod.LoanBlob(200)
	if err != nil {
		t.Fatal(err)
	}
	if loan.Ref().Block != old.Block || loan.Ref().Generation != old.Generation+1 {
		t.Fatalf("next loan %+v after %+v", loan.Ref(), old)
	}
	stale := forgeBlob(t, prod, old, BlobRefLen)
	if _, err := cons.TryReceiveBlob(); !errors.As(err, &cm) || cm.MessageID != stale || !cm.Blob {
		t.Fatalf("stale reference: %v", err)
	}
	if info, _ := seg.BlobBlock(0, 0); info.Tag != (BlobTag{State: BlockLoaned, Owner: prod.sendOwner, Generation: old.Generation + 1}) {
		t.Errorf("the loaned block was touched: %+v", info.Tag)
	}
	// Stale through a copying receive too, and forged references of every kind.
	forgeBlob(t, prod, old, BlobRefLen)
	bad := []struct {
		ref BlobRef
		len uint32
	}{
		{BlobRef{Class: 1, Block: 0, Generation: 1, Len: 10}, BlobRefLen},     // no such class
		{BlobRef{Class: 0, Block: 1, Generation: 1, Len: 10}, BlobRefLen},     // no such block
		{BlobRef{Class: 0, Block: 0, Generation: 1, Len: 4097}, BlobRefLen},   // longer than the block
		{BlobRef{Class: 0, Block: 0, Generation: 1, Len: 10}, BlobRefLen + 8}, // payload_len not 16
		{BlobRef{Class: 0, Block: 0, Generation: 2, Len: 10}, BlobRefLen},     // the loan's, not queued
	}
	for _, b := range bad {
		forgeBlob(t, prod, b.ref, b.len)
	}
	buf := make([]byte, 8192)
	if _, err := cons.TryReceive(buf); !errors.As(err, &cm) || !cm.Blob {
		t.Fatalf("stale reference, copied: %v", err)
	}
	for i, b := range bad {
		var err error
		if i%2 == 0 {
			_, err = cons.TryReceiveBlob()
		} else {
			_, err = cons.TryReceive(buf)
		}
		if !errors.As(err, &cm) || !cm.Blob {
			t.Errorf("bad reference %d %+v: %v", i, b, err)
		}
	}
	if st := cons.Stats(); st.Corrupt != 3+uint64(len(bad)) || st.Revoked != 0 || st.Lost != 0 {
		t.Errorf("stats %+v", st)
	}
	// The real message still goes through, and the block was never freed by a bad one.
	fillBlob(loan.Bytes(), 0, 2)
	if _, err := loan.Commit(SendOptions{}); err != nil {
		t.Fatal(err)
	}
	v, err = cons.TryReceiveBlob()
	if err != nil || !bytes.Equal(v.Bytes(), wantBlob(0, 2, 200)) {
		t.Fatalf("real blob: %v", err)
	}
	v.Release()
	if freeBlocks(t, seg) != 1 {
		t.Error("free blocks")
	}
	// A blob flag on a channel that does not carry blobs is corrupt, never a 16-byte message.
	plain, err := seg.CreateChannel(1, 4)
	if err != nil {
		t.Fatal(err)
	}
	forgeBlob(t, plain, BlobRef{Len: 10}, BlobRefLen)
	if _, err := plain.TryReceive(buf); !errors.As(err, &cm) || !cm.Blob {
		t.Errorf("blob on a plain channel: %v", err)
	}
}

// ------------------------------------------------------------------ reclaim

// Rules 2 and 3 of PROTOCOL.md §13.6, and what the owners whose blocks were reclaimed see.
func TestBlobReclaimLeakedAndQueued(t *testing.T) {
	seg := newBlobSegment(t, 2<<20, []BlobClass{{4096, 4}})
	prod, cons := blobPair(t, seg, 0, 8, ChannelOptions{})
	if r, err := seg.ReclaimBlobs(); err != nil || r != (BlobReclaimReport{}) {
		t.Fatalf("nothing to reclaim: %+v %v", r, err)
	}
	// Rule 3: a queued block whose position was freed without taking it.
	loan, err := prod.LoanBlob(10)
	if err != nil {
		t.Fatal(err)
	}
	id, err := loan.Commit(SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := seg.ReclaimBlobs(); r.Queued != 0 {
		t.Fatal("reclaimed a block whose message is in the ring")
	}
	cl, err := cons.claimRecvAt(1, -1)
	if err != nil || cl.first != id || !cl.blob {
		t.Fatal(err)
	}
	if r, _ := seg.ReclaimBlobs(); r.Queued != 0 {
		t.Fatal("reclaimed a block whose message is claimed")
	}
	if !cons.free(id) { // the consumer "died" before taking the block; a repair freed the slot
		t.Fatal("free")
	}
	intentClear(cons.recvPeer, &cons.recvFlagsShown)
	if r, _ := seg.ReclaimBlobs(); r.Queued != 1 || r.Leaked != 0 {
		t.Fatalf("rule 3: %+v", r)
	}
	if freeBlocks(t, seg) != 4 {
		t.Fatal("free blocks")
	}
	// Rule 2: a loan whose owner's record is free (the client exited without closing).
	loan, err = prod.LoanBlob(10)
	if err != nil {
		t.Fatal(err)
	}
	v2loan, err := prod.LoanBlob(10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v2loan.Commit(SendOptions{}); err != nil {
		t.Fatal(err)
	}
	held, err := cons.TryReceiveBlob()
	if err != nil {
		t.Fatal(err)
	}
	pid := load32(prod.sendPeer, peerPid)
	store32(prod.sendPeer, peerPid, 0)
	if r, _ := seg.ReclaimBlobs(); r.Leaked != 1 || r.Queued != 0 {
		t.Fatalf("rule 2: %+v", r)
	}
	store32(prod.sendPeer, peerPid, pid)
	// Its owner learns it at commit: revoked, a SKIP marker in the position, nothing sent.
	var re *RevokedError
	if _, err := loan.Commit(SendOptions{}); !errors.As(err, &re) || !errors.Is(err, ErrRevoked) {
		t.Fatalf("commit of a reclaimed loan: %v", err)
	}
	if _, err := cons.TryReceiveBlob(); err != ErrEmpty {
		t.Errorf("after the SKIP marker: %v", err)
	}
	if prod.Stats().Revoked != 1 {
		t.Errorf("producer stats %+v", prod.Stats())
	}
	// A held block whose owner was misjudged dead: its release reports revoked.
	if n := seg.reclaimBlobOwner(cons.recvOwner); n != 1 {
		t.Fatalf("rule 1 reclaimed %d", n)
	}
	if err := held.Release(); !errors.As(err, &re) || re.MessageID != held.Meta().MessageID {
		t.Errorf("release of a reclaimed block: %v", err)
	}
	if cons.Stats().Revoked != 1 || freeBlocks(t, seg) != 4 {
		t.Errorf("stats %+v, free %d", cons.Stats(), freeBlocks(t, seg))
	}
	// A scribbled owner (no such record) counts as leaked.
	h := seg.blockHeader(0, 3)
	store64(h, blkTag, packTag(BlockHeld, uint32(seg.PeerRecords())+5, 7))
	if r, _ := seg.ReclaimBlobs(); r.Leaked != 1 {
		t.Errorf("scribbled owner: %+v", r)
	}
	// A scribbled state byte is left alone and counted invalid.
	store64(h, blkTag, packTag(BlockState(9), 0, 7))
	if st, _ := seg.BlobPoolStats(); st.Classes[0].Invalid != 1 || st.Classes[0].Free != 3 {
		t.Errorf("stats %+v", st)
	}
	if _, err := prod.LoanBlob(10); err != nil {
		t.Error(err)
	}
}

// Close gives the handle's loans and held blocks back first.
func TestBlobCloseGivesBlocksBack(t *testing.T) {
	seg := newBlobSegment(t, 2<<20, []BlobClass{{4096, 4}})
	prod, cons := blobPair(t, seg, 0, 8, ChannelOptions{})
	loan, err := prod.LoanBlob(10)
	if err != nil {
		t.Fatal(err)
	}
	sent, err := prod.LoanBlob(10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sent.Commit(SendOptions{}); err != nil {
		t.Fatal(err)
	}
	v, err := cons.TryReceiveBlob()
	if err != nil {
		t.Fatal(err)
	}
	prod.Close()
	cons.Close()
	if freeBlocks(t, seg) != 4 {
		t.Fatalf("free blocks %d after Close", freeBlocks(t, seg))
	}
	if err := v.Release(); !errors.Is(err, ErrRevoked) {
		t.Errorf("release after Close: %v", err)
	}
	if _, err := loan.Commit(SendOptions{}); !errors.Is(err, ErrRevoked) {
		t.Errorf("commit after Close: %v", err)
	}
	if _, err := prod.LoanBlob(10); err != ErrNotRegistered {
		t.Errorf("loan after Close: %v", err)
	}
}

// ------------------------------------------------------------------ crashes

const blobHelperEnv = "DMXP_TEST_BLOB_HELPER"

// TestHelperBlobPeer is not a test: it is the child process of the crash tests below. It
// opens a channel, registers, and either loans blocks ("loan:PATH:ID:N:COUNT") or receives
// a blob and holds it ("hold:PATH:ID"), then waits to be killed.
func TestHelperBlobPeer(t *testing.T) {
	spec := os.Getenv(blobHelperEnv)
	if spec == "" {
		t.Skip("helper process only")
	}
	var mode, path string
	var id, n, count int
	fail := func(err error) {
		fmt.Println("ERR", err)
		os.Exit(3)
	}
	parts := bytes.Split([]byte(spec), []byte(":"))
	mode, path = string(parts[0]), string(parts[1])
	fmt.Sscan(string(parts[2]), &id)
	seg, err := OpenPath(path, nil)
	if err != nil {
		fail(err)
	}
	ch, err := seg.OpenChannel(uint32(id))
	if err != nil {
		fail(err)
	}
	switch mode {
	case "loan":
		fmt.Sscan(string(parts[3]), &n)
		fmt.Sscan(string(parts[4]), &count)
		if err := ch.Register(RoleProducer); err != nil {
			fail(err)
		}
		for i := 0; i < count; i++ {
			l, err := ch.LoanBlob(n)
			if err != nil {
				fail(err)
			}
			fillBlob(l.Bytes(), uint32(id), uint64(i))
		}
		fmt.Println("LOANED", ch.sendOwner-1)
	case "hold":
		if err := ch.Register(RoleConsumer); err != nil {
			fail(err)
		}
		v, err := ch.ReceiveBlobTimeout(10 * time.Second)
		if err != nil {
			fail(err)
		}
		fmt.Println("HELD", ch.recvOwner-1, v.Len())
	default:
		fail(fmt.Errorf("mode %q", mode))
	}
	// Killed by the test; gone with it if the test process dies first (its stdout and
	// stderr would keep go test waiting).
	for parent := os.Getppid(); os.Getppid() == parent; {
		time.Sleep(50 * time.Millisecond)
	}
	os.Exit(4)
}

func spawnBlobHelper(t *testing.T, spec string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperBlobPeer$")
	cmd.Env = append(os.Environ(), blobHelperEnv+"="+spec)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.HasPrefix(line, "ERR") {
		t.Fatalf("helper %s: %v (said %q)", spec, err, line)
	}
	return cmd, strings.TrimSpace(line)
}

// A child killed holding loans: a loan that finds the pool exhausted sweeps its dead record
// and reclaims its blocks (PROTOCOL.md §13.6 rule 1).
func TestBlobChildKilledHoldingLoan(t *testing.T) {
	classes := []BlobClass{{4096, 4}}
	seg := newBlobSegment(t, 2<<20, classes)
	prod, cons := blobPair(t, seg, 0, 8, ChannelOptions{})
	start := freeBlocks(t, seg)
	cmd, line := spawnBlobHelper(t, fmt.Sprintf("loan:%s:0:3000:3", seg.Path()))
	var record int
	if _, err := fmt.Sscanf(line, "LOANED %d", &record); err != nil {
		t.Fatalf("helper said %q", line)
	}
	st, _ := seg.BlobPoolStats()
	if st.FreeBlocks() != start-3 || st.Owners[record] != 3 {
		t.Fatalf("after the child's loans: %+v", st)
	}
	killAndReap(t, cmd)
	// One block is still free; the next loan finds the pool exhausted and reclaims.
	first, err := prod.LoanBlob(100)
	if err != nil {
		t.Fatal(err)
	}
	second, err := prod.LoanBlob(100)
	if err != nil {
		t.Fatalf("loan after the child died: %v", err)
	}
	st, _ = seg.BlobPoolStats()
	if st.FreeBlocks() != start-2 || st.Owners[record] != 0 || len(st.Owners) != 1 {
		t.Fatalf("after the reclaim: %+v", st)
	}
	for _, l := range []*BlobLoan{first, second} {
		fillBlob(l.Bytes(), 0, 9)
		if _, err := l.Commit(SendOptions{}); err != nil {
			t.Fatal(err)
		}
		v, err := cons.TryReceiveBlob()
		if err != nil || !bytes.Equal(v.Bytes(), wantBlob(0, 9, 100)) {
			t.Fatalf("receive: %v", err)
		}
		v.Release()
	}
	if f := freeBlocks(t, seg); f != start {
		t.Errorf("free blocks %d, want %d", f, start)
	}
	if recordsOf(t, seg, uint32(cmd.Process.Pid)) != 0 {
		t.Error("the dead child's record was not freed")
	}
}

// A child killed holding a received block: Recover frees its record and the block.
func TestBlobChildKilledHoldingReceived(t *testing.T) {
	classes := []BlobClass{{4096, 2}, {1 << 20, 1}}
	seg := newBlobSegment(t, 4<<20, classes)
	prod, _ := blobPair(t, seg, 0, 8, ChannelOptions{})
	start := freeBlocks(t, seg)
	loan, err := prod.LoanBlob(500000)
	if err != nil {
		t.Fatal(err)
	}
	fillBlob(loan.Bytes(), 0, 1)
	if _, err := loan.Commit(SendOptions{}); err != nil {
		t.Fatal(err)
	}
	cmd, line := spawnBlobHelper(t, fmt.Sprintf("hold:%s:0", seg.Path()))
	var record, n int
	if _, err := fmt.Sscanf(line, "HELD %d %d", &record, &n); err != nil || n != 500000 {
		t.Fatalf("helper said %q", line)
	}
	if st, _ := seg.BlobPoolStats(); st.Classes[1].Held != 1 || st.Owners[record] != 1 {
		t.Fatalf("after the child's receive: %+v", st)
	}
	killAndReap(t, cmd)
	report, err := prod.Recover()
	if err != nil || report.BlobsReclaimed != 1 || report.RecordsFreed != 1 {
		t.Fatalf("recover: %+v %v", report, err)
	}
	if f := freeBlocks(t, seg); f != start {
		t.Errorf("free blocks %d, want %d", f, start)
	}
	if st, _ := seg.BlobPoolStats(); len(st.Owners) != 0 {
		t.Errorf("owners %+v", st.Owners)
	}
}

// ------------------------------------------------------------------ many producers and consumers

// Two producers and two consumers, each with its own registered handle, move blobs of many
// sizes through a small ring and a small pool: every blob arrives exactly once and intact,
// and every block is back in the pool at the end.
func TestBlobMPMC(t *testing.T) {
	const (
		producers   = 2
		consumers   = 2
		perProducer = 150
	)
	classes := []BlobClass{{4096, 4}, {65536, 4}, {1 << 20, 2}}
	seg := newBlobSegment(t, 8<<20, classes)
	if _, err := seg.CreateChannelWith(5, 4, ChannelOptions{Blobs: true}); err != nil {
		t.Fatal(err)
	}
	sizes := []int{1, 24, 1000, 4096, 5000, 65536, 70000, 1 << 20}
	total := producers * perProducer
	var received int64
	seen := make([]int, total)
	var mu sync.Mutex
	var wg sync.WaitGroup
	handle := func(role Role) *Channel {
		ch, err := seg.OpenChannel(5)
		if err != nil {
			t.Error(err)
			return nil
		}
		if err := ch.Register(role); err != nil {
			t.Error(err)
			return nil
		}
		return ch
	}
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			ch := handle(RoleProducer)
			if ch == nil {
				return
			}
			defer ch.Close()
			for i := 0; i < perProducer; i++ {
				index := uint64(p*perProducer + i)
				n := sizes[index%uint64(len(sizes))]
				loan, err := ch.LoanBlobTimeout(n, 20*time.Second)
				if err != nil {
					t.Errorf("producer %d: loan %d: %v", p, n, err)
					return
				}
				fillBlob(loan.Bytes(), 5, index)
				if _, err := loan.CommitTimeout(SendOptions{MessageType: uint32(index)}, 20*time.Second); err != nil {
					t.Errorf("producer %d: commit: %v", p, err)
					return
				}
			}
		}(p)
	}
	for c := 0; c < consumers; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			ch := handle(RoleConsumer)
			if ch == nil {
				return
			}
			defer ch.Close()
			deadline := time.Now().Add(60 * time.Second)
			for atomic.LoadInt64(&received) < int64(total) && time.Now().Before(deadline) {
				v, err := ch.ReceiveBlobTimeout(50 * time.Millisecond)
				if err == ErrTimeout {
					continue
				}
				if err != nil {
					t.Errorf("consumer %d: %v", c, err)
					return
				}
				index := uint64(v.Meta().MessageType)
				ok := index < uint64(total) && v.IsBlob() && v.Len() == sizes[index%uint64(len(sizes))] &&
					bytes.Equal(v.Bytes(), wantBlob(5, index, v.Len()))
				if v.Len() >= pattern.MinLen {
					if _, idx, err := pattern.Decode(v.Bytes()); err != nil || idx != index {
						ok = false
					}
				}
				if err := v.Release(); err != nil {
					t.Errorf("consumer %d: release: %v", c, err)
				}
				if !ok {
					t.Errorf("consumer %d: blob %d of %d bytes is wrong", c, index, v.Len())
					continue
				}
				mu.Lock()
				seen[index]++
				mu.Unlock()
				atomic.AddInt64(&received, 1)
			}
		}(c)
	}
	wg.Wait()
	for i, n := range seen {
		if n != 1 {
			t.Errorf("blob %d received %d times", i, n)
		}
	}
	st, _ := seg.BlobPoolStats()
	if st.FreeBlocks() != totalBlocks(classes) || len(st.Owners) != 0 {
		t.Errorf("pool after the run: %+v", st)
	}
}

// Revocations around a blob (PROTOCOL.md §13.4, §13.5, §11.7): a consumer whose claim is
// revoked between taking the block and freeing the slot releases the block at once; a
// producer whose position is tombstoned before its publish is told revoked, and the block it
// queued is reclaimed once the tombstone is consumed.
func TestBlobRevokedAtTakeAndPublish(t *testing.T) {
	seg := newBlobSegment(t, 2<<20, []BlobClass{{4096, 2}})
	prod, cons := blobPair(t, seg, 0, 8, ChannelOptions{})
	start := freeBlocks(t, seg)
	loan, err := prod.LoanBlob(10)
	if err != nil {
		t.Fatal(err)
	}
	id, err := loan.Commit(SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	setHook(t, func(step hookStep, position uint64) {
		if step == hookBeforeFree && position == id {
			cas64(cons.slot(id), slotSequence, id+1, id+cons.Capacity()) // a repair frees it first
		}
	})
	var re *RevokedError
	if _, err := cons.TryReceiveBlob(); !errors.As(err, &re) || re.MessageID != id {
		t.Fatalf("revoked take: %v", err)
	}
	if freeBlocks(t, seg) != start || cons.Stats().Revoked != 1 {
		t.Fatalf("free %d, stats %+v", freeBlocks(t, seg), cons.Stats())
	}
	testHook.Store(nil)

	loan, err = prod.LoanBlob(10)
	if err != nil {
		t.Fatal(err)
	}
	setHook(t, func(step hookStep, position uint64) {
		if step == hookBeforePublish {
			tombstone(prod, position, 4242)
		}
	})
	if id, err = loan.Commit(SendOptions{}); !errors.As(err, &re) {
		t.Fatalf("revoked publish: %v", err)
	}
	testHook.Store(nil)
	if st, _ := seg.BlobPoolStats(); st.Classes[0].Queued != 1 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := cons.TryReceiveBlob(); !errors.Is(err, ErrLost) {
		t.Fatalf("tombstone: %v", err)
	}
	if r, _ := seg.ReclaimBlobs(); r.Queued != 1 {
		t.Fatalf("reclaim %+v", r)
	}
	if freeBlocks(t, seg) != start || prod.Stats().Revoked != 1 {
		t.Errorf("free %d, stats %+v", freeBlocks(t, seg), prod.Stats())
	}
}
