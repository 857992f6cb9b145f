package dmxp

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"
)

// Every access to live segment memory goes through these helpers: sync/atomic loads, stores
// and CASes on aligned words (Go's atomics are sequentially consistent, which is at least as
// strong as every ordering PROTOCOL.md §1.2 asks for). Callers compute offsets only from
// constants and from geometry validated and cached at open, so every address lies inside the
// mapping.

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

// storePayload copies p (at most MsgInline bytes) into the payload area at dst as
// little-endian 8-byte atomic stores; the bytes of the last word past len(p) are zero.
func storePayload(dst unsafe.Pointer, p []byte) {
	n := uintptr(len(p))
	i := uintptr(0)
	for ; i+8 <= n; i += 8 {
		atomic.StoreUint64(ptr64(dst, i), binary.LittleEndian.Uint64(p[i:]))
	}
	if i < n {
		var w [8]byte
		copy(w[:], p[i:])
		atomic.StoreUint64(ptr64(dst, i), binary.LittleEndian.Uint64(w[:]))
	}
}

// loadPayload copies len(dst) bytes (at most MsgInline) out of the payload area at src with
// 8-byte atomic loads.
func loadPayload(src unsafe.Pointer, dst []byte) {
	n := uintptr(len(dst))
	i := uintptr(0)
	for ; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(dst[i:], atomic.LoadUint64(ptr64(src, i)))
	}
	if i < n {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], atomic.LoadUint64(ptr64(src, i)))
		copy(dst[i:], w[:])
	}
}
