// Package pattern builds and checks the verifiable test payloads every DMXP client shares
// (the Rust dmxp::pattern): derived from a channel and an index, with a checksum, so a
// receiver can tell a right message from a garbled, misrouted or duplicated one.
//
// Layout of a payload of len bytes (24 <= len), little-endian: bytes 0..8 the channel id
// (u64), 8..16 the index (u64), byte k of 16..len-8 = (channel*31 + index*7 + k) mod 256, the
// last 8 bytes the FNV-1a-64 of bytes 0..len-8. Encode keeps to one slot (len <= 960);
// EncodeLarge and AppendEncodeLarge write the same layout at any length, for channels that
// carry messages longer than one slot (PROTOCOL.md §12), and Decode checks either.
package pattern

import (
	"encoding/binary"
	"fmt"
)

// MinLen is the shortest pattern payload.
const MinLen = 24

// MaxLen is the longest pattern payload (a slot's payload size).
const MaxLen = 960

const (
	fnvOffset = 0xcbf29ce484222325
	fnvPrime  = 0x100000001b3
)

// DefaultLen is the length the example programs use for message index: 32 to 144 bytes.
func DefaultLen(index uint64) int { return 32 + int(index%8)*16 }

// largeLens are the lengths of the example programs' --large messages, message index taking
// largeLens[index % 5], where 0 stands for the channel's limit.
var largeLens = [5]int{24, 960, 961, 65536, 0}

// LargeLen is the length the example programs use with --large for message index on a
// channel whose largest message is limit bytes: {24, 960, 961, 65536, limit}[index % 5], as
// every client's programs do (a channel for them takes at least 65536 bytes).
func LargeLen(index uint64, limit int) int {
	if n := largeLens[index%5]; n != 0 {
		return n
	}
	return limit
}

func fnv1a(b []byte) uint64 {
	h := uint64(fnvOffset)
	for _, c := range b {
		h = (h ^ uint64(c)) * fnvPrime
	}
	return h
}

func filler(channel, index uint64, k int) byte {
	return byte(channel*31 + index*7 + uint64(k))
}

// EncodeLarge returns the payload for (channel, index) of length n (at least MinLen, no upper
// clamp): the layout of Encode at any length.
func EncodeLarge(channel uint32, index uint64, n int) []byte {
	return AppendEncodeLarge(make([]byte, 0, n), channel, index, n)
}

// AppendEncodeLarge appends the payload for (channel, index) of length n (at least MinLen, no
// upper clamp) to dst.
func AppendEncodeLarge(dst []byte, channel uint32, index uint64, n int) []byte {
	if n < MinLen {
		n = MinLen
	}
	start := len(dst)
	ch := uint64(channel)
	dst = binary.LittleEndian.AppendUint64(dst, ch)
	dst = binary.LittleEndian.AppendUint64(dst, index)
	for k := 16; k < n-8; k++ {
		dst = append(dst, filler(ch, index, k))
	}
	return binary.LittleEndian.AppendUint64(dst, fnv1a(dst[start:]))
}

// Encode returns the payload for (channel, index) of length n (clamped to MinLen..MaxLen).
func Encode(channel uint32, index uint64, n int) []byte {
	return AppendEncode(nil, channel, index, n)
}

// AppendEncode appends the payload for (channel, index) of length n (clamped) to dst.
func AppendEncode(dst []byte, channel uint32, index uint64, n int) []byte {
	if n > MaxLen {
		n = MaxLen
	}
	return AppendEncodeLarge(dst, channel, index, n)
}

// Error says why a payload is not a valid pattern.
type Error struct {
	// Reason is "too short", "checksum" or "filler".
	Reason string
	// Len is the payload length (too short); At is the first wrong filler byte.
	Len, At int
}

// Error implements the error interface.
func (e *Error) Error() string {
	switch e.Reason {
	case "too short":
		return fmt.Sprintf("payload of %d bytes is too short", e.Len)
	case "filler":
		return fmt.Sprintf("filler byte %d is wrong", e.At)
	}
	return "checksum mismatch"
}

// Decode checks a payload of any length (at least MinLen) and returns its (channel, index).
func Decode(p []byte) (channel, index uint64, err error) {
	n := len(p)
	if n < MinLen {
		return 0, 0, &Error{Reason: "too short", Len: n}
	}
	if fnv1a(p[:n-8]) != binary.LittleEndian.Uint64(p[n-8:]) {
		return 0, 0, &Error{Reason: "checksum", Len: n}
	}
	channel, index = binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint64(p[8:])
	for k := 16; k < n-8; k++ {
		if p[k] != filler(channel, index, k) {
			return 0, 0, &Error{Reason: "filler", Len: n, At: k}
		}
	}
	return channel, index, nil
}
