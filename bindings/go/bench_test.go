package dmxp

import (
	"testing"

	"dmxp.dev/dmxp/pattern"
)

// Single-goroutine costs of the ring operations (no contention, no waiting).

func BenchmarkSendReceive64(b *testing.B) {
	seg := newTestSegment(b, segmentSize(1024))
	ch := mustChannel(b, seg, 0, 1024)
	payload := make([]byte, 64)
	buf := make([]byte, MsgInline)
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

func BenchmarkBatch64x32(b *testing.B) {
	seg := newTestSegment(b, segmentSize(1024))
	ch := mustChannel(b, seg, 0, 1024)
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
