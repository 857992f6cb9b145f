package dmxp

import (
	"testing"

	"dmxp.dev/dmxp/pattern"
)

// Single-goroutine costs of the ring operations (no contention, no waiting).

func BenchmarkSendReceive64(b *testing.B) { benchSendReceive(b, 64, false) }

// BenchmarkSendReceive144Registered is one send and one receive of 144 bytes (the longest
// pattern payload) on handles registered in the peer table, as the example programs are.
func BenchmarkSendReceive144Registered(b *testing.B) { benchSendReceive(b, 144, true) }

func BenchmarkSendReceive960(b *testing.B) { benchSendReceive(b, MsgInline, false) }

func benchSendReceive(b *testing.B, n int, register bool) {
	seg := newTestSegment(b, segmentSize(1024)+PeerTableSize)
	ch := mustChannel(b, seg, 0, 1024)
	if register {
		if err := ch.Register(RoleProducer); err != nil {
			b.Fatal(err)
		}
		if err := ch.Register(RoleConsumer); err != nil {
			b.Fatal(err)
		}
		defer ch.Close()
	}
	payload := make([]byte, n)
	buf := make([]byte, MsgInline)
	b.SetBytes(int64(n))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ch.TrySend(payload); err != nil {
			b.Fatal(err)
		}
		if _, err := ch.TryReceive(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBatch64x32(b *testing.B) { benchBatch(b, false) }

// BenchmarkBatch64x32Registered is BenchmarkBatch64x32 on registered handles.
func BenchmarkBatch64x32Registered(b *testing.B) { benchBatch(b, true) }

func benchBatch(b *testing.B, register bool) {
	seg := newTestSegment(b, segmentSize(1024)+PeerTableSize)
	ch := mustChannel(b, seg, 0, 1024)
	if register {
		if err := ch.Register(RoleProducer); err != nil {
			b.Fatal(err)
		}
		if err := ch.Register(RoleConsumer); err != nil {
			b.Fatal(err)
		}
		defer ch.Close()
	}
	batch := make([][]byte, 32)
	for i := range batch {
		batch[i] = make([]byte, 64)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i += len(batch) {
		if _, err := ch.TrySendBatch(batch, SendOptions{}); err != nil {
			b.Fatal(err)
		}
		if _, err := ch.TryReceiveBatch(len(batch), func(Meta, []byte) {}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPatternEncode(b *testing.B) {
	buf := make([]byte, 0, pattern.MaxLen)
	for i := 0; i < b.N; i++ {
		buf = pattern.AppendEncode(buf[:0], 1, uint64(i), pattern.DefaultLen(uint64(i)))
	}
}

func BenchmarkMonotonicNow(b *testing.B) {
	for i := 0; i < b.N; i++ {
		MonotonicNow()
	}
}
