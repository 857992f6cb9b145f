package dmxp

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"dmxp.dev/dmxp/pattern"
)

// TestMPMCStress: several producers and consumers on one small ring, with single, batch and
// blocking operations mixed; every message must arrive exactly once and intact.
func TestMPMCStress(t *testing.T) {
	const (
		producers   = 4
		consumers   = 4
		perProducer = 20000
		capacity    = 8
	)
	// More OS threads than cores: the kernel then preempts goroutines at any instruction,
	// including between reading a cursor and claiming it.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(producers + consumers))
	seg := newTestSegment(t, segmentSize(capacity))
	ch := mustChannel(t, seg, 3, capacity)
	total := producers * perProducer

	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			first := uint64(p * perProducer)
			if p%2 == 0 {
				buf := make([]byte, 0, pattern.MaxLen)
				for i := first; i < first+perProducer; i++ {
					buf = pattern.AppendEncode(buf[:0], 3, i, pattern.DefaultLen(i))
					if _, err := ch.SendTimeout(buf, 20*time.Second); err != nil {
						t.Errorf("producer %d: %v", p, err)
						return
					}
				}
				return
			}
			for i := first; i < first+perProducer; {
				batch := make([][]byte, 0, 5)
				for k := uint64(0); k < 5 && i+k < first+perProducer; k++ {
					batch = append(batch, pattern.Encode(3, i+k, pattern.DefaultLen(i+k)))
				}
				n, err := ch.SendBatch(batch, SendOptions{}, 20*time.Second)
				if err != nil {
					t.Errorf("producer %d: %v", p, err)
					return
				}
				i += uint64(n)
			}
		}(p)
	}

	var mu sync.Mutex
	seen := make([]int, total)
	corrupt := 0
	received := 0
	record := func(payload []byte) {
		c, index, err := pattern.Decode(payload)
		mu.Lock()
		defer mu.Unlock()
		if err != nil || c != 3 || index >= uint64(total) {
			corrupt++
			return
		}
		seen[index]++
		received++
	}
	// Consumers stop when everything arrived, or at the deadline (a broken ring loses or
	// stalls messages: the test must then fail, not hang).
	deadline := time.Now().Add(60 * time.Second)
	done := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return received+corrupt >= total || time.Now().After(deadline)
	}
	var cwg sync.WaitGroup
	for c := 0; c < consumers; c++ {
		cwg.Add(1)
		go func(c int) {
			defer cwg.Done()
			buf := make([]byte, MsgInline)
			for i := 0; !done(); i++ {
				var err error
				switch {
				case c%2 == 0:
					_, err = ch.TryReceiveBatch(1+c, func(_ Meta, p []byte) { record(p) })
				case i%64 == 63:
					// Now and then, the blocking path.
					var m Meta
					if m, err = ch.ReceiveTimeout(buf, time.Millisecond); err == nil {
						record(buf[:m.PayloadLen])
					}
				default:
					var m Meta
					if m, err = ch.TryReceive(buf); err == nil {
						record(buf[:m.PayloadLen])
					}
				}
				switch err {
				case nil:
				case ErrEmpty, ErrTimeout, ErrBusy:
					// Spin (yielding) so that consumers contend on head.
					runtime.Gosched()
				default:
					t.Errorf("consumer %d: %v", c, err)
					return
				}
			}
		}(c)
	}
	wg.Wait()
	cwg.Wait()
	if corrupt != 0 || received != total {
		t.Errorf("%d corrupt messages, %d received of %d", corrupt, received, total)
	}
	for index, n := range seen {
		if n != 1 {
			t.Fatalf("message %d received %d times", index, n)
		}
	}
	if h, tl := ch.Head(), ch.Tail(); h != uint64(total) || tl != uint64(total) {
		t.Errorf("head %d tail %d, want %d", h, tl, total)
	}
	if st := ch.Stats(); st != (Stats{}) {
		t.Errorf("stats %+v", st)
	}
}
