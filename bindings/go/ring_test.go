package dmxp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

func payloadFor(i uint64) []byte {
	p := make([]byte, 1+i%23)
	for k := range p {
		p[k] = byte(i*13 + uint64(k))
	}
	return p
}

// TestManyLaps drives more than 10 laps of rings of capacity 2 and 4, one message at a time
// and in batches, checking ids, contents, Full, Empty and the sequence freeing.
func TestManyLaps(t *testing.T) {
	for _, capacity := range []uint64{2, 4} {
		t.Run(fmt.Sprint("capacity ", capacity), func(t *testing.T) {
			seg := newTestSegment(t, segmentSize(capacity))
			ch := mustChannel(t, seg, 0, capacity)
			buf := make([]byte, MsgInline)
			next := uint64(0)
			laps := uint64(12)
			for lap := uint64(0); lap < laps; lap++ {
				for k := uint64(0); k < capacity; k++ {
					id, err := ch.TrySend(payloadFor(next + k))
					if err != nil || id != next+k {
						t.Fatalf("lap %d: send %d: id %d err %v", lap, k, id, err)
					}
				}
				if _, err := ch.TrySend([]byte("overflow")); err != ErrFull {
					t.Fatalf("lap %d: send on a full ring: %v", lap, err)
				}
				for k := uint64(0); k < capacity; k++ {
					m, err := ch.TryReceive(buf)
					if err != nil || m.MessageID != next+k || !bytes.Equal(buf[:m.PayloadLen], payloadFor(next+k)) {
						t.Fatalf("lap %d: receive %d: %+v %v", lap, k, m, err)
					}
					if m.ChannelID != 0 || m.SenderRuntime != RuntimeGo || m.SenderPID != uint32(os.Getpid()) {
						t.Errorf("meta %+v", m)
					}
					// Freed for the producer one lap later.
					if s := ch.PeekSlot((next + k) % capacity).Sequence; s != next+k+capacity {
						t.Fatalf("freed slot holds sequence %d, want %d", s, next+k+capacity)
					}
				}
				if _, err := ch.TryReceive(buf); err != ErrEmpty {
					t.Fatalf("lap %d: receive on an empty ring: %v", lap, err)
				}
				next += capacity
			}
			// Batches: a batch never claims more than the free slots; laps continue.
			for lap := uint64(0); lap < laps; lap++ {
				payloads := make([][]byte, capacity+3)
				for k := range payloads {
					payloads[k] = payloadFor(next + uint64(k))
				}
				n, err := ch.TrySendBatch(payloads, SendOptions{MessageType: 9, Flags: 0x4200})
				if err != nil || uint64(n) != capacity {
					t.Fatalf("batch lap %d: sent %d of %d: %v", lap, n, len(payloads), err)
				}
				if _, err := ch.TrySendBatch(payloads[n:], SendOptions{}); err != ErrFull {
					t.Fatalf("batch on a full ring: %v", err)
				}
				var got []uint64
				res, err := ch.TryReceiveBatch(int(capacity)+5, func(m Meta, p []byte) {
					if m.MessageType != 9 || m.Flags != 0x4200 || !bytes.Equal(p, payloadFor(m.MessageID)) {
						t.Errorf("batch message %+v %x", m, p)
					}
					got = append(got, m.MessageID)
				})
				if err != nil || res.Delivered != int(capacity) || res.Dropped != 0 || len(got) != int(capacity) {
					t.Fatalf("batch receive: %+v %v", res, err)
				}
				for k, id := range got {
					if id != next+uint64(k) {
						t.Fatalf("batch order: %v from %d", got, next)
					}
				}
				next += capacity
			}
			if h, tl := ch.Head(), ch.Tail(); h != next || tl != next || next < 20*capacity {
				t.Errorf("head %d tail %d after %d positions", h, tl, next)
			}
		})
	}
}

func TestPayloadWordsAndPadding(t *testing.T) {
	seg := newTestSegment(t, segmentSize(2))
	ch := mustChannel(t, seg, 0, 2)
	buf := make([]byte, MsgInline)
	// A long message fills the slot; a shorter one must zero the rest of its last word.
	long := bytes.Repeat([]byte{0xAB}, MsgInline)
	for n := 0; n <= 17; n++ {
		ch.TrySend(long)
		ch.TryReceive(buf)
		ch.TrySend(long)
		ch.TryReceive(buf)
		msg := bytes.Repeat([]byte{0x11}, n)
		id, err := ch.TrySend(msg)
		if err != nil {
			t.Fatal(err)
		}
		slot := ch.PeekSlot(id % 2)
		words := (n + 7) / 8
		raw := make([]byte, words*8)
		for w := 0; w < words; w++ {
			binary.LittleEndian.PutUint64(raw[w*8:], load64(ch.slot(id), slotPayload+uintptr(w*8)))
		}
		if !bytes.Equal(raw[:n], msg) || !bytes.Equal(raw[n:], make([]byte, len(raw)-n)) || !bytes.Equal(slot.Payload, msg) {
			t.Errorf("len %d: words %x", n, raw)
		}
		m, err := ch.TryReceive(buf)
		if err != nil || !bytes.Equal(buf[:m.PayloadLen], msg) {
			t.Errorf("len %d: received %x %v", n, buf[:m.PayloadLen], err)
		}
	}
}

func TestTimestamps(t *testing.T) {
	seg := newTestSegment(t, segmentSize(2))
	ch := mustChannel(t, seg, 0, 2)
	before := ClockMonotonicSyscall()
	ch.TrySend([]byte("now"))
	after := ClockMonotonicSyscall()
	m, err := ch.TryReceive(make([]byte, MsgInline))
	if err != nil {
		t.Fatal(err)
	}
	slack := uint64(clockError)
	if m.TimestampNs+slack < before || m.TimestampNs > after+slack {
		t.Errorf("timestamp %d outside CLOCK_MONOTONIC [%d, %d] (calibration error %d)", m.TimestampNs, before, after, slack)
	}
	ch.TrySendWith([]byte("explicit"), SendOptions{TimestampNs: 12345})
	if m, _ := ch.TryReceive(make([]byte, MsgInline)); m.TimestampNs != 12345 {
		t.Errorf("explicit timestamp %d", m.TimestampNs)
	}
}

// TestTimestampsOff: SetTimestamps(false) makes every send path (TrySend, Send, a batch, a
// run) write timestamp_ns = 0, in each slot and in what the receiver sees; on again (the
// default) they carry a CLOCK_MONOTONIC reading of the send; an explicit TimestampNs is kept
// either way; and the switch is the handle's, not the channel's.
func TestTimestampsOff(t *testing.T) {
	seg := newTestSegment(t, segmentSize(4))
	ch, err := seg.CreateChannelWith(0, 4, ChannelOptions{MaxMessageSize: 2 * MsgInline})
	if err != nil {
		t.Fatal(err)
	}
	run := bytes.Repeat([]byte("r"), MsgInline+40)
	buf := make([]byte, 2*MsgInline)
	slack := uint64(clockError)
	check := func(c *Channel, stamped bool) {
		t.Helper()
		paths := []struct {
			name  string
			slots uint64 // slots written
			msgs  int    // messages received
			send  func() (uint64, error)
		}{
			{"TrySend", 1, 1, func() (uint64, error) { return c.TrySend([]byte("one")) }},
			{"Send", 1, 1, func() (uint64, error) { return c.Send([]byte("blocking")) }},
			{"TrySendBatch", 2, 2, func() (uint64, error) {
				first := c.Tail()
				n, err := c.TrySendBatch([][]byte{[]byte("b1"), []byte("b2")}, SendOptions{})
				if err == nil && n != 2 {
					t.Fatalf("batch sent %d of 2", n)
				}
				return first, err
			}},
			{"run", 2, 1, func() (uint64, error) { return c.TrySend(run) }},
		}
		for _, p := range paths {
			before := ClockMonotonicSyscall()
			first, err := p.send()
			after := ClockMonotonicSyscall()
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			ok := func(ts uint64) bool {
				if !stamped {
					return ts == 0
				}
				return ts != 0 && ts+slack >= before && ts <= after+slack
			}
			for k := uint64(0); k < p.slots; k++ {
				if ts := load64(c.slot(first+k), slotTimestamp); !ok(ts) {
					t.Errorf("%s (timestamps %v): slot %d timestamp_ns %d", p.name, stamped, first+k, ts)
				}
			}
			for k := 0; k < p.msgs; k++ {
				m, err := c.TryReceive(buf)
				if err != nil {
					t.Fatalf("%s: receive: %v", p.name, err)
				}
				if !ok(m.TimestampNs) {
					t.Errorf("%s (timestamps %v): received timestamp_ns %d", p.name, stamped, m.TimestampNs)
				}
			}
		}
		if _, err := c.TryReceive(buf); err != ErrEmpty {
			t.Fatalf("left over: %v", err)
		}
	}
	if !ch.Timestamps() {
		t.Fatal("a new handle does not stamp")
	}
	check(ch, true)
	ch.SetTimestamps(false)
	if ch.Timestamps() {
		t.Fatal("Timestamps() after SetTimestamps(false)")
	}
	check(ch, false)
	ch.TrySendWith([]byte("explicit"), SendOptions{TimestampNs: 12345})
	if m, _ := ch.TryReceive(buf); m.TimestampNs != 12345 {
		t.Errorf("explicit timestamp with timestamps off: %d", m.TimestampNs)
	}
	other, err := seg.OpenChannel(0)
	if err != nil {
		t.Fatal(err)
	}
	check(other, true) // another handle of the channel still stamps
	check(ch, false)
	ch.SetTimestamps(true)
	check(ch, true)
}

func TestBlockingAndTimeouts(t *testing.T) {
	seg := newTestSegment(t, segmentSize(2))
	ch := mustChannel(t, seg, 0, 2)
	buf := make([]byte, MsgInline)
	if _, err := ch.ReceiveTimeout(buf, 5*time.Millisecond); err != ErrTimeout {
		t.Errorf("receive on empty: %v", err)
	}
	ch.TrySend([]byte("a"))
	ch.TrySend([]byte("b"))
	if _, err := ch.SendTimeout([]byte("c"), 5*time.Millisecond); err != ErrTimeout {
		t.Errorf("send on full: %v", err)
	}
	if n, err := ch.SendBatch([][]byte{{1}, {2}}, SendOptions{}, 5*time.Millisecond); err != ErrTimeout || n != 0 {
		t.Errorf("batch send on full: %d %v", n, err)
	}
	if r, s := ch.Waiters(); r != 0 || s != 0 {
		t.Errorf("waiters left registered: %d %d", r, s)
	}
	ch.TryReceive(buf)
	ch.TryReceive(buf)

	// No system call when nobody waits.
	wakes := FutexWakeCalls()
	for i := 0; i < 1000; i++ {
		ch.TrySend([]byte("x"))
		ch.TryReceive(buf)
	}
	ch.TrySendBatch([][]byte{{1}, {2}}, SendOptions{})
	ch.TryReceiveBatch(2, func(Meta, []byte) {})
	if got := FutexWakeCalls(); got != wakes {
		t.Errorf("%d futex wakes with nobody waiting", got-wakes)
	}

	// A sleeping receiver is registered, and a send wakes it.
	done := make(chan string)
	go func() {
		b := make([]byte, MsgInline)
		m, err := ch.Receive(b)
		if err != nil {
			done <- err.Error()
			return
		}
		done <- string(b[:m.PayloadLen])
	}()
	waitFor(t, func() bool { r, _ := ch.Waiters(); return r > 0 })
	ch.TrySend([]byte("wake up"))
	if got := <-done; got != "wake up" {
		t.Errorf("blocked receiver got %q", got)
	}
	if FutexWakeCalls() == wakes {
		t.Errorf("send to a registered waiter made no futex wake")
	}

	// A sleeping sender is woken by a receive.
	ch.TrySend([]byte("1"))
	ch.TrySend([]byte("2"))
	sent := make(chan error)
	go func() {
		_, err := ch.Send([]byte("3"))
		sent <- err
	}()
	waitFor(t, func() bool { _, s := ch.Waiters(); return s > 0 })
	if m, err := ch.TryReceive(buf); err != nil || string(buf[:m.PayloadLen]) != "1" {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Errorf("blocked sender: %v", err)
	}
	for _, want := range []string{"2", "3"} {
		if m, err := ch.TryReceive(buf); err != nil || string(buf[:m.PayloadLen]) != want {
			t.Errorf("got %q %v, want %q", buf[:m.PayloadLen], err, want)
		}
	}
	waitFor(t, func() bool { r, s := ch.Waiters(); return r == 0 && s == 0 })
}

// waitFor polls cond (a state another goroutine reaches) for up to 10 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 10000; i++ {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("condition not reached")
}

func TestCreateOpenAndRaces(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/seg"
	size := segmentSize(4, 4, 4, 4)
	seg, err := CreatePath(path, &Options{Size: size})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 || st.Size() != size {
		t.Errorf("created %v %v", st.Mode(), err)
	}
	if _, err := CreatePath(path, &Options{Size: size}); !errors.Is(err, os.ErrExist) {
		t.Errorf("second exclusive create: %v", err)
	}
	if h := seg.Header(); h.CreatorPID != uint32(os.Getpid()) || h.SegmentSize != uint64(size) || h.BandCursor != HeaderSize || !seg.Created() {
		t.Errorf("header %+v", h)
	}

	// Racing open-or-create of the segment: exactly one creator.
	path2 := dir + "/raced"
	var wg sync.WaitGroup
	results := make([]*Segment, 8)
	errs := make([]error, 8)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i], errs[i] = OpenOrCreatePath(path2, &Options{Size: size, Timeout: 5 * time.Second})
		}(i)
	}
	wg.Wait()
	created := 0
	for i, s := range results {
		if errs[i] != nil {
			t.Fatalf("OpenOrCreatePath: %v", errs[i])
		}
		if s.Created() {
			created++
		}
	}
	if created != 1 {
		t.Errorf("%d creators, want 1", created)
	}

	// Racing channel creation on the same ids from several handles: one creator per id, one
	// geometry, disjoint bands.
	chans := make([][]*Channel, len(results))
	made := make([]int, 4)
	var mu sync.Mutex
	for i, s := range results {
		chans[i] = make([]*Channel, 4)
		for id := 0; id < 4; id++ {
			wg.Add(1)
			go func(i, id int, s *Segment) {
				defer wg.Done()
				ch, c, err := s.OpenOrCreateChannel(uint32(id), 4, 5*time.Second)
				if err != nil {
					t.Errorf("channel %d: %v", id, err)
					return
				}
				chans[i][id] = ch
				if c {
					mu.Lock()
					made[id]++
					mu.Unlock()
				}
			}(i, id, s)
		}
	}
	wg.Wait()
	for id := 0; id < 4; id++ {
		if made[id] != 1 {
			t.Errorf("channel %d created %d times", id, made[id])
		}
		for i := range chans {
			if chans[i][id] == nil || chans[i][id].Geometry() != chans[0][id].Geometry() {
				t.Fatalf("channel %d: differing geometry", id)
			}
		}
	}
	if err := results[0].ValidateAll(); err != nil || results[0].Header().ChannelCount != 4 || results[0].Header().BandCursor != uint64(size) {
		t.Errorf("after racing creation: %v %+v", err, results[0].Header())
	}
	// A message sent through one mapping arrives through another.
	chans[1][2].TrySend([]byte("across mappings"))
	buf := make([]byte, MsgInline)
	if m, err := chans[5][2].TryReceive(buf); err != nil || string(buf[:m.PayloadLen]) != "across mappings" {
		t.Errorf("got %q %v", buf[:m.PayloadLen], err)
	}
	for _, s := range results {
		s.Close()
	}
}

func TestAttachWaitsForFormat(t *testing.T) {
	path := t.TempDir() + "/slow"
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The window between O_EXCL and ftruncate: an empty object.
	attached := make(chan error)
	go func() {
		s, err := OpenPath(path, &Options{Timeout: 10 * time.Second})
		if err == nil {
			if s.Header().Magic != Magic {
				err = fmt.Errorf("attached before magic was set")
			}
			s.Close()
		}
		attached <- err
	}()
	time.Sleep(5 * time.Millisecond)
	if err := f.Truncate(HeaderSize); err != nil {
		t.Fatal(err)
	}
	creator, err := mapFd(int(f.Fd()), path, HeaderSize)
	if err != nil {
		t.Fatal(err)
	}
	defer creator.Close()
	time.Sleep(5 * time.Millisecond)
	if err := creator.format(1, 0); err != nil {
		t.Fatal(err)
	}
	if err := <-attached; err != nil {
		t.Errorf("attach during creation: %v", err)
	}
	if err := creator.format(1, 0); err != ErrAlreadyFormatted {
		t.Errorf("reformat: %v", err)
	}
	// OpenFd attaches through a descriptor.
	s, err := OpenFd(int(f.Fd()), nil)
	if err != nil || s.Len() != HeaderSize {
		t.Fatalf("OpenFd: %v", err)
	}
	s.Close()
	if err := s.Close(); err != ErrClosed {
		t.Errorf("second close: %v", err)
	}
}

func TestShmNames(t *testing.T) {
	for name, want := range map[string]string{"/dmxp_alloc": "/dev/shm/dmxp_alloc", "/x": "/dev/shm/x"} {
		if got, err := ShmPath(name); err != nil || got != want {
			t.Errorf("ShmPath(%q) = %q, %v", name, got, err)
		}
	}
	for _, bad := range []string{"", "/", "/a/b", "x", "//x"} {
		if _, err := ShmPath(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ShmPath(%q): %v", bad, err)
		}
	}
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Skip("no /dev/shm")
	}
	name := fmt.Sprintf("/dmxp_gotest_name_%d", os.Getpid())
	seg, err := OpenOrCreate(name, &Options{Size: segmentSize(2)})
	if err != nil {
		t.Fatal(err)
	}
	defer Unlink(name)
	defer seg.Close()
	other, err := Open(name, nil)
	if err != nil || other.Created() || !seg.Created() {
		t.Fatalf("Open: %v", err)
	}
	other.Close()
	if _, err := Open("/dmxp_gotest_does_not_exist", nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing segment: %v", err)
	}
}
