package dmxp

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// The size of the peer table (PROTOCOL.md §2.2 offset 56 peer_records, §4.1 checks #8 and #9,
// §11.1): chosen by the creator, read once at attach.

// attachAgain opens a second Segment on seg's file, closed when the test ends.
func attachAgain(t *testing.T, seg *Segment) *Segment {
	t.Helper()
	other, err := OpenPath(seg.Path(), nil)
	if err != nil {
		t.Fatalf("OpenPath(%s): %v", seg.Path(), err)
	}
	t.Cleanup(func() { other.Close() })
	return other
}

// registerHandles registers count new handles of channel id as producers, each with its own
// record, closed when the test ends; it stops at the first failure and returns how many
// registered and that failure.
func registerHandles(t *testing.T, seg *Segment, id uint32, count int) (int, error) {
	t.Helper()
	for i := 0; i < count; i++ {
		ch, err := seg.OpenChannel(id)
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.Register(RoleProducer); err != nil {
			return i, err
		}
		t.Cleanup(func() { ch.Close() })
	}
	return count, nil
}

// A segment created with 1024 records: the header holds 1024, every attachment uses 1024, the
// first registration carves 1024 × 64 bytes, and 300 handles register (past the 256 of the
// default table, which the same test fills at its 257th registration).
func TestPeerRecordsLargeTable(t *testing.T) {
	const n = 1024
	seg := newTestSegmentWith(t, &Options{Size: segmentSize(8) + int64(PeerTableLen(n)), PeerRecords: n})
	raw := segmentBytes(seg)
	if got := binary.LittleEndian.Uint32(raw[offPeerRecords:]); got != n {
		t.Fatalf("header bytes 56..60 hold %d; want %d", got, n)
	}
	for off := 60; off < ChannelTableOffset; off++ {
		if raw[off] != 0 {
			t.Fatalf("header byte %d is %d; want 0", off, raw[off])
		}
	}
	other := attachAgain(t, seg)
	if seg.Header().PeerRecords != n || seg.PeerRecords() != n || other.PeerRecords() != n {
		t.Fatalf("peer records: header %d, creator %d, attached %d; want %d",
			seg.Header().PeerRecords, seg.PeerRecords(), other.PeerRecords(), n)
	}
	mustChannel(t, seg, 2, 8)
	cursor := seg.Header().BandCursor
	if got, err := registerHandles(t, seg, 2, 300); err != nil {
		t.Fatalf("registration %d of 300: %v", got+1, err)
	}
	h := seg.Header()
	if h.PeerTableOffset != cursor || h.BandCursor != cursor+n*PeerRecordSize || h.BandCursor-cursor != 65536 {
		t.Fatalf("table at %d, cursor %d -> %d; want the table at %d and the cursor moved by 65536",
			h.PeerTableOffset, cursor, h.BandCursor, cursor)
	}
	if got := recordsOf(t, seg, uint32(os.Getpid())); got != 300 {
		t.Fatalf("%d records of this process; want 300", got)
	}
	// The other attachment finds the same table and takes the next record.
	ch, err := other.OpenChannel(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Register(RoleConsumer); err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if want := unsafe.Add(peerTableOf(t, other), 300*PeerRecordSize); ch.recvPeer != want {
		t.Fatal("the other attachment did not take record 300")
	}
	// The table fills at n.
	if got, err := registerHandles(t, seg, 2, n); got != n-301 || !errors.Is(err, ErrPeerTableFull) {
		t.Fatalf("%d more registrations, then %v; want %d, then ErrPeerTableFull", got, err, n-301)
	}

	// The default table: peer_records 0, 256 records carved as 16,384 bytes, the 257th
	// registration refused.
	def := newTestSegment(t, segmentSize(8)+PeerTableSize)
	mustChannel(t, def, 2, 8)
	cursor = def.Header().BandCursor
	if def.Header().PeerRecords != 0 || def.PeerRecords() != PeerRecords {
		t.Fatalf("default segment: header %d, records %d", def.Header().PeerRecords, def.PeerRecords())
	}
	if got, err := registerHandles(t, def, 2, PeerRecords+1); got != PeerRecords || !errors.Is(err, ErrPeerTableFull) {
		t.Fatalf("default table: %d registrations, then %v; want 256, then ErrPeerTableFull", got, err)
	}
	if h := def.Header(); h.PeerTableOffset != cursor || h.BandCursor != cursor+PeerTableSize {
		t.Fatalf("default table at %d, cursor %d -> %d", h.PeerTableOffset, cursor, h.BandCursor)
	}
}

// A dead record past the default 256 is repaired (Recover) and swept (a registration), with
// its wait count given back.
func TestPeerRecordsRepairPastDefault(t *testing.T) {
	seg := newTestSegmentWith(t, &Options{Size: 1 << 20, PeerRecords: 1024})
	mustChannel(t, seg, 3, 8)
	cons := registered(t, seg, 3, RoleConsumer) // installs the table
	raw, err := seg.OpenChannel(3)              // unregistered: only the claiming CAS
	if err != nil {
		t.Fatal(err)
	}
	position, _, err := raw.claimSend(1) // stuck: claimed, never published
	if err != nil {
		t.Fatal(err)
	}
	table := peerTableOf(t, seg)
	gone := deadPid(t)
	d := writeRecord(table, 900, gone, RuntimeC, RoleProducer, 0, 3, position, 1)
	report, err := cons.Recover()
	if err != nil || report != (RecoverReport{RecordsFreed: 1, Lost: 1}) {
		t.Fatalf("Recover: %+v %v; want 1 record freed, 1 lost", report, err)
	}
	if load32(d, peerPid) != 0 || load32(d, peerIntentCount) != 0 {
		t.Fatal("record 900 not freed")
	}
	_, err = cons.TryReceive(make([]byte, MsgInline))
	expectLost(t, err, position)
	if info := cons.PeekSlot(position); info.Meta.SenderPID != gone || info.Meta.SenderRuntime != RuntimeC {
		t.Fatalf("tombstone meta %+v", info.Meta)
	}

	// The last record, dead while blocked in a receive: a registration's sweep frees it and
	// gives back its not_empty_waiters.
	w := writeRecord(table, 1023, gone, RuntimeRust, RoleConsumer, 0, 3, 0, 0)
	store32(w, peerWaiting, waitingNotEmpty)
	store32(seg.entry(3), entNotEmptyWaiters, 1)
	registered(t, seg, 3, RoleProducer)
	if load32(w, peerPid) != 0 || load32(w, peerWaiting) != waitingNone || waitCount(seg, 3, waitingNotEmpty) != 0 {
		t.Fatalf("record 1023: pid %d waiting %d, not_empty_waiters %d; want 0, 0, 0",
			load32(w, peerPid), load32(w, peerWaiting), waitCount(seg, 3, waitingNotEmpty))
	}
}

// Each pass judges each record at most once, however many stuck positions and records it
// compares: 600 dead producers past the default 256 whose intents all cover the same 8 stuck
// positions cost 600 liveness checks, in Recover and in a registration's sweep.
func TestPeerRecordsJudgedOncePerPass(t *testing.T) {
	seg := newTestSegmentWith(t, &Options{Size: 1 << 20, PeerRecords: 1024})
	mustChannel(t, seg, 4, 8)
	cons := registered(t, seg, 4, RoleConsumer) // record 0
	raw, err := seg.OpenChannel(4)
	if err != nil {
		t.Fatal(err)
	}
	p0, claimed, err := raw.claimSend(8)
	if err != nil || claimed != 8 {
		t.Fatalf("claim: %d positions, %v", claimed, err)
	}
	table := peerTableOf(t, seg)
	gone := deadPid(t)
	const first, dead = 300, 600
	for i := first; i < first+dead; i++ {
		writeRecord(table, i, gone, RuntimeRust, RoleProducer, 0, 4, p0, 8)
	}
	judged := map[uint64]int{}
	setHook(t, func(step hookStep, index uint64) {
		if step == hookJudged {
			judged[index]++
		}
	})
	report, err := cons.Recover()
	if err != nil || report != (RecoverReport{RecordsFreed: dead, Lost: 8}) {
		t.Fatalf("Recover: %+v %v; want %d records freed, 8 lost", report, err, dead)
	}
	checkJudgedOnce(t, "Recover", judged, first, dead)

	for i := first; i < first+dead; i++ {
		writeRecord(table, i, gone, RuntimeRust, RoleConsumer, 0, 4, 0, 0) // idle
	}
	judged = map[uint64]int{}
	registered(t, seg, 4, RoleProducer)
	checkJudgedOnce(t, "sweep", judged, first, dead)
	if n := recordsOf(t, seg, gone); n != 0 {
		t.Fatalf("the sweep left %d dead records", n)
	}
}

// checkJudgedOnce: records first..first+count were each judged exactly once, and no other.
func checkJudgedOnce(t *testing.T, pass string, judged map[uint64]int, first, count int) {
	t.Helper()
	if len(judged) != count {
		t.Fatalf("%s judged %d records; want %d", pass, len(judged), count)
	}
	for i := first; i < first+count; i++ {
		if judged[uint64(i)] != 1 {
			t.Fatalf("%s judged record %d %d times; want once", pass, i, judged[uint64(i)])
		}
	}
}

// Check #9 with the table size of check #8: peer_table_offset + n × 64 must fit the segment,
// and the table of n records must overlap no band.
func TestPeerRecordsTableChecks(t *testing.T) {
	size := uint64(HeaderSize + 32768)
	good := segmentBytes(newTestSegment(t, int64(size)))
	for _, tc := range []struct {
		records uint32
		table   uint64
		fits    bool
	}{
		{0, HeaderSize, true},           // 16,384 bytes
		{256, HeaderSize + 16384, true}, // ends at the segment's end
		{512, HeaderSize, true},         // 32,768 bytes: ends at the segment's end
		{512, HeaderSize + 64, false},   // one record too far
		{1024, HeaderSize, false},       // 65,536 bytes
		{0, HeaderSize + 16384 + 64, false},
	} {
		b := append([]byte(nil), good...)
		putLE(b, offPeerRecords, 4, uint64(tc.records))
		putLE(b, offPeerTableOffset, 8, tc.table)
		seg, err := openBytes(t, b, time.Second)
		if tc.fits {
			if err != nil {
				t.Errorf("records %d, table at %d: %v", tc.records, tc.table, err)
			} else if seg.PeerRecords() != int(peerRecordsOf(tc.records)) {
				t.Errorf("records %d: attached with %d", tc.records, seg.PeerRecords())
			}
			continue
		}
		tableLen := PeerTableLen(peerRecordsOf(tc.records))
		var ce *CorruptionError
		if !errors.As(err, &ce) || ce.Kind != PeerTableOutOfRange || ce.Field != "peer_table_offset" ||
			ce.Channel != -1 || ce.Value != tc.table || ce.Limit != size || ce.BandLen != tableLen {
			t.Errorf("records %d, table at %d: %v (%+v); want PeerTableOutOfRange of a %d-byte table", tc.records, tc.table, err, ce, tableLen)
		} else if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "the "+strconv.FormatUint(tableLen, 10)+"-byte peer table") {
			t.Errorf("records %d: %q", tc.records, err)
		}
	}

	// A table of 1024 records reaches a band 16,384 bytes past its start; one of 256 does not.
	for _, records := range []uint32{0, 1024} {
		seg := newTestSegmentWith(t, &Options{Size: 1 << 20, PeerRecords: records})
		mustChannel(t, seg, 0, 2)
		gap, err := seg.reserveBytes(PeerTableSize)
		if err != nil {
			t.Fatal(err)
		}
		mustChannel(t, seg, 1, 2) // its band starts where a 256-record table at gap ends
		store64(seg.base, offPeerTableOffset, gap)
		_, openErr := seg.OpenChannel(1)
		validateErr := seg.ValidateAll()
		attachAgain(t, seg) // the header alone is fine
		if records == 0 {
			if openErr != nil || validateErr != nil {
				t.Fatalf("default table beside the band: open %v, validate %v", openErr, validateErr)
			}
			continue
		}
		var ce *CorruptionError
		for _, err := range []error{openErr, validateErr} {
			if !errors.As(err, &ce) || ce.Kind != PeerTableOverlapsBand || ce.Channel != 1 || ce.Value != gap {
				t.Fatalf("1024-record table over channel 1's band: %v", err)
			}
		}
		c0, err := seg.OpenChannel(0)
		if err != nil {
			t.Fatal(err)
		}
		if err := c0.Register(RoleProducer); !errors.As(err, &ce) || ce.Kind != PeerTableOverlapsBand {
			t.Fatalf("Register: %v", err)
		}
		if _, err := c0.Recover(); !errors.As(err, &ce) || ce.Kind != PeerTableOverlapsBand {
			t.Fatalf("Recover: %v", err)
		}
	}
}

// Options.PeerRecords: 0, 256 and 16,384 are written into the header; others are refused
// before anything is created.
func TestCreatePeerRecordsOption(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []uint32{1, 100, 255, 16385, 20000, 1 << 31} {
		path := filepath.Join(dir, "bad")
		_, err := CreatePath(path, &Options{Size: 1 << 20, PeerRecords: v})
		var ie *InvalidPeerRecordsError
		if !errors.As(err, &ie) || ie.Records != v || !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("CreatePath with %d records: %v; want an *InvalidPeerRecordsError", v, err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("CreatePath with %d records left %s behind: %v", v, path, err)
		}
		if _, err := OpenOrCreatePath(path, &Options{PeerRecords: v}); !errors.As(err, &ie) {
			t.Fatalf("OpenOrCreatePath with %d records: %v", v, err)
		}
	}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		name := "/" + filepath.Base(testSegmentPath(t))
		for _, create := range []func(string, *Options) (*Segment, error){Create, OpenOrCreate} {
			var ie *InvalidPeerRecordsError
			if _, err := create(name, &Options{PeerRecords: 100}); !errors.As(err, &ie) || ie.Records != 100 {
				t.Fatalf("shm create with 100 records: %v", err)
			}
			if _, err := os.Stat("/dev/shm" + name); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("/dev/shm%s left behind: %v", name, err)
			}
		}
	}
	for _, v := range []uint32{0, PeerRecords, 4096, MaxPeerRecords} {
		seg := newTestSegmentWith(t, &Options{Size: segmentSize(), PeerRecords: v})
		if seg.Header().PeerRecords != v || seg.PeerRecords() != int(peerRecordsOf(v)) {
			t.Fatalf("created with %d: header %d, records %d", v, seg.Header().PeerRecords, seg.PeerRecords())
		}
	}
	// An attach by OpenOrCreate uses what the creator chose, whatever its own options say.
	path := filepath.Join(dir, "made")
	seg, err := CreatePath(path, &Options{Size: 1 << 20, PeerRecords: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	again, err := OpenOrCreatePath(path, &Options{PeerRecords: 512})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if again.Created() || again.PeerRecords() != 1024 {
		t.Fatalf("OpenOrCreatePath on an existing segment: created %v, records %d", again.Created(), again.PeerRecords())
	}
}

// A peer rewriting peer_records after an attach does not move that attachment past the table
// it validated: registration, Recover and the sweep stay within its own 256 records, whoever
// formatted the segment. A new attach sees the new value (and is refused when it is out of
// range).
func TestPeerRecordsReadOnceAtAttach(t *testing.T) {
	seg := newTestSegment(t, 1<<20) // the default: 256 records
	other := attachAgain(t, seg)
	mustChannel(t, seg, 1, 8)
	cons := registered(t, other, 1, RoleConsumer) // installs the table: record 0
	h := seg.Header()
	// Carve what a 1024-record table would also cover, and forge records there: a dead
	// producer whose intent covers a stuck position (256), a dead idle one (300); 257 is free.
	past, err := seg.reserveBytes(PeerTableLen(1024 - PeerRecords))
	if err != nil || past != h.PeerTableOffset+PeerTableSize {
		t.Fatalf("carved %d (%v); want the bytes right after the table at %d", past, err, h.PeerTableOffset)
	}
	raw, err := seg.OpenChannel(1)
	if err != nil {
		t.Fatal(err)
	}
	position, _, err := raw.claimSend(1)
	if err != nil {
		t.Fatal(err)
	}
	table := peerTableOf(t, seg)
	gone := deadPid(t)
	stuck := writeRecord(table, 256, gone, RuntimeRust, RoleProducer, 0, 1, position, 1)
	idle := writeRecord(table, 300, gone, RuntimeRust, RoleConsumer, 0, 1, 0, 0)
	me := uint32(os.Getpid())
	for i := 1; i < PeerRecords; i++ {
		cas32(unsafe.Add(table, i*PeerRecordSize), peerPid, 0, me)
	}

	for _, rewritten := range []uint32{1024, 1 << 31} {
		store32(seg.base, offPeerRecords, rewritten)
		for _, s := range []*Segment{seg, other} {
			if s.PeerRecords() != PeerRecords {
				t.Fatalf("peer_records %d: the attachment now uses %d records", rewritten, s.PeerRecords())
			}
			ch, err := s.OpenChannel(1)
			if err != nil {
				t.Fatal(err)
			}
			if err := ch.Register(RoleProducer); !errors.Is(err, ErrPeerTableFull) {
				t.Fatalf("peer_records %d: Register on a full table: %v; want ErrPeerTableFull", rewritten, err)
			}
			if report, err := ch.Recover(); err != nil || report != (RecoverReport{}) {
				t.Fatalf("peer_records %d: Recover: %+v %v; want nothing done", rewritten, report, err)
			}
			if err := s.ValidateAll(); err != nil {
				t.Fatalf("peer_records %d: ValidateAll: %v", rewritten, err)
			}
		}
		if load32(unsafe.Add(table, 257*PeerRecordSize), peerPid) != 0 || load32(stuck, peerPid) != gone ||
			load32(stuck, peerIntentCount) != 1 || load32(idle, peerPid) != gone || cons.PeekSlot(position).Sequence != position {
			t.Fatalf("peer_records %d: records past the 256 validated were touched", rewritten)
		}
	}
	_, err = OpenPath(seg.Path(), nil)
	var ce *CorruptionError
	if !errors.As(err, &ce) || ce.Kind != PeerRecordsOutOfRange || ce.Field != "peer_records" || ce.Value != 1<<31 || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a new attach with peer_records 2^31: %v; want PeerRecordsOutOfRange", err)
	}
	// A new attach that validates 1024 reaches the forged records: they were there to find.
	store32(seg.base, offPeerRecords, 1024)
	wide := attachAgain(t, seg)
	ch, err := wide.OpenChannel(1)
	if err != nil {
		t.Fatal(err)
	}
	if report, err := ch.Recover(); err != nil || report.Lost != 1 || load32(stuck, peerPid) != 0 {
		t.Fatalf("a 1024-record attachment: Recover %+v %v; want the stuck position repaired", report, err)
	}
}
