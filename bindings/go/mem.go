package dmxp

import (
	"sync/atomic"
	"unsafe"
)

// Every access to live segment memory goes through these helpers: sync/atomic loads, stores
// and CASes on aligned words (Go's atomics are sequentially consistent, which is at least as
// strong as every ordering PROTOCOL.md §1.2 asks for), except the meta and payload of a slot
// this process has claimed, moved with ordinary accesses (putWord, storePayload, loadPayload:
// see the memory model below). Callers compute offsets only from constants and from geometry
// validated and cached at open, so every address lies inside the mapping.

func ptr64(base unsafe.Pointer, off uintptr) *uint64 {
	return (*uint64)(unsafe.Add(base, off))
}

func ptr32(base unsafe.Pointer, off uintptr) *uint32 {
	return (*uint32)(unsafe.Add(base, off))
}

func load64(base unsafe.Pointer, off uintptr) uint64 { return atomic.LoadUint64(ptr64(base, off)) }
func load32(base unsafe.Pointer, off uintptr) uint32 { return atomic.LoadUint32(ptr32(base, off)) }
func store64(base unsafe.Pointer, off uintptr, v uint64) {
	atomic.StoreUint64(ptr64(base, off), v)
}
func store32(base unsafe.Pointer, off uintptr, v uint32) {
	atomic.StoreUint32(ptr32(base, off), v)
}
func cas64(base unsafe.Pointer, off uintptr, old, new uint64) bool {
	return atomic.CompareAndSwapUint64(ptr64(base, off), old, new)
}
func cas32(base unsafe.Pointer, off uintptr, old, new uint32) bool {
	return atomic.CompareAndSwapUint32(ptr32(base, off), old, new)
}
func swap32(base unsafe.Pointer, off uintptr, v uint32) uint32 {
	return atomic.SwapUint32(ptr32(base, off), v)
}

// zeroWords stores zero in the n bytes at base+off (n and off multiples of 8).
func zeroWords(base unsafe.Pointer, off, n uintptr) {
	for i := uintptr(0); i < n; i += 8 {
		store64(base, off+i, 0)
	}
}

// ------------------------------------------------------------------ claimed slots
//
// Memory model (bindings/go/README.md, "Memory model"). A slot's meta fields and payload bytes
// are touched only by the process holding the slot's claim (PROTOCOL.md §6): a producer
// between its CAS on tail and its publishing CAS on sequence, a consumer between its CAS on
// head and its freeing CAS. Those CASes and the loads of sequence and of the cursors stay
// sync/atomic operations, and they alone order the bytes. In the Go memory model
// (go.dev/ref/mem, Go 1.19) an atomic operation observed by another is synchronized before
// it, so an ordinary store sequenced before the publishing CAS happens before an ordinary
// load sequenced after the acquire load that sees the publish; the compiler keeps ordinary
// accesses on their side of every sync/atomic operation, and on amd64 those are LOCK-prefixed
// or plain MOVs whose ordering a Rust or C peer's acquire and release pair with. So inside a
// claim the bytes are moved with ordinary stores and copy(): no locked XCHG per 8 bytes, as
// atomic.StoreUint64 costs on amd64.
//
// A peer racing on the slot anyway (buggy, hostile, or a revoked claim, §11.7) can only
// garble bytes: unlike C and Rust, Go gives a data race no undefined behaviour, and a racing
// read of a value of at most a word observes some write of it (a byte of the payload, an
// aligned word of the meta). The receiver treats what it read as untrusted, as before:
// payload_len is read once and checked against 960 and the buffer before any copy. Addresses
// come from validated, cached geometry and lengths are bounded by MsgInline (the helpers
// below cut at it too), so nothing reads or writes outside the mapping.

// putWord stores v at base+off (8-aligned) with an ordinary store: meta words of a slot this
// process has claimed, before the publishing CAS (see the memory model above).
func putWord(base unsafe.Pointer, off uintptr, v uint64) {
	*(*uint64)(unsafe.Add(base, off)) = v
}

// storePayload copies p (at most MsgInline bytes; longer is cut there) into the payload area
// at dst of a claimed slot with copy() (see the memory model above); the bytes of the last
// 8-byte word past len(p) are zero, as PROTOCOL.md §6.1 pads them.
func storePayload(dst unsafe.Pointer, p []byte) {
	if len(p) > MsgInline {
		p = p[:MsgInline]
	}
	full := len(p) &^ 7
	copy(unsafe.Slice((*byte)(dst), full), p[:full])
	if full < len(p) {
		var w [8]byte
		copy(w[:], p[full:])
		*(*[8]byte)(unsafe.Add(dst, full)) = w // one 8-byte store, zero-padded
	}
}

// loadPayload copies len(dst) bytes (at most MsgInline; a longer dst is filled only that
// far) out of the payload area at src of a claimed slot with copy() (see the memory model
// above).
func loadPayload(src unsafe.Pointer, dst []byte) {
	if len(dst) > MsgInline {
		dst = dst[:MsgInline]
	}
	copy(dst, unsafe.Slice((*byte)(src), len(dst)))
}
