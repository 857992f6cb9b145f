package pattern

import (
	"encoding/binary"
	"encoding/hex"
	"testing"
)

// Vectors computed by the Rust dmxp::pattern::encode (the reference): full bytes for the
// short ones, the length and trailing checksum for the 960-byte ones.
var vectors = []struct {
	channel uint32
	index   uint64
	n       int
	full    string
	length  int
	sum     string
}{
	{0, 0, 24, "000000000000000000000000000000006564ff60b91f2088", 24, "6564ff60b91f2088"},
	{3, 1000003, 80, "030000000000000043420f000000000042434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f7071727374757677787908518240911d0bb8", 80, "08518240911d0bb8"},
	{255, ^uint64(0), 33, "ff00000000000000ffffffffffffffffeaebecedeeeff0f1f208153dcfa1520d31", 33, "08153dcfa1520d31"},
	{7, 42, 960, "", 960, "d827b32fd65f52da"},
	{1, 5, 5000, "", 960, "794375da705ad867"},
}

func TestMatchesRustVectors(t *testing.T) {
	for _, v := range vectors {
		got := Encode(v.channel, v.index, v.n)
		if v.full != "" && hex.EncodeToString(got) != v.full {
			t.Errorf("Encode(%d, %d, %d) = %x, want %s", v.channel, v.index, v.n, got, v.full)
		}
		if len(got) != v.length || hex.EncodeToString(got[len(got)-8:]) != v.sum {
			t.Errorf("Encode(%d, %d, %d): len %d sum %x, want %d %s", v.channel, v.index, v.n, len(got), got[len(got)-8:], v.length, v.sum)
		}
		c, i, err := Decode(got)
		if err != nil || c != uint64(v.channel) || i != v.index {
			t.Errorf("Decode: %d %d %v", c, i, err)
		}
	}
}

func TestDetectsDamage(t *testing.T) {
	for _, index := range []uint64{0, 1, 7, 8, 1000003} {
		p := Encode(3, index, DefaultLen(index))
		if len(p) != DefaultLen(index) {
			t.Fatalf("len %d", len(p))
		}
		for _, flip := range []int{0, 9, 20, len(p) - 1} {
			bad := append([]byte(nil), p...)
			bad[flip] ^= 0x10
			if _, _, err := Decode(bad); err == nil {
				t.Errorf("flip at %d went unnoticed", flip)
			}
		}
	}
	// A payload with a valid checksum but another filler scheme.
	p := Encode(1, 2, 40)
	p[20]++
	binary.LittleEndian.PutUint64(p[32:], fnv1a(p[:32]))
	if _, _, err := Decode(p); err == nil || err.(*Error).Reason != "filler" || err.(*Error).At != 20 {
		t.Errorf("filler damage: %v", err)
	}
	if _, _, err := Decode(make([]byte, 10)); err == nil || err.(*Error).Reason != "too short" {
		t.Errorf("short: %v", err)
	}
	if DefaultLen(0) != 32 || DefaultLen(7) != 144 || DefaultLen(8) != 32 {
		t.Error("DefaultLen")
	}
	if got := AppendEncode([]byte("xy"), 0, 0, 1); len(got) != 2+MinLen || string(got[:2]) != "xy" {
		t.Errorf("AppendEncode prefix/clamp: %x", got)
	}
}

func TestLargePayloads(t *testing.T) {
	// Same bytes as Encode up to one slot.
	for _, n := range []int{24, 80, 960} {
		if a, b := Encode(4, 9, n), EncodeLarge(4, 9, n); hex.EncodeToString(a) != hex.EncodeToString(b) {
			t.Errorf("n=%d: EncodeLarge differs from Encode", n)
		}
	}
	for _, n := range []int{961, 1920, 1921, 65536, 262144} {
		p := EncodeLarge(2, 77, n)
		if len(p) != n {
			t.Fatalf("len %d, want %d", len(p), n)
		}
		if c, i, err := Decode(p); err != nil || c != 2 || i != 77 {
			t.Fatalf("n=%d: Decode %d %d %v", n, c, i, err)
		}
		for _, flip := range []int{n / 2, 960, n - 9} {
			bad := append([]byte(nil), p...)
			bad[flip] ^= 1
			if _, _, err := Decode(bad); err == nil {
				t.Errorf("n=%d: flip at %d went unnoticed", n, flip)
			}
		}
	}
	if got := len(EncodeLarge(0, 0, 3)); got != MinLen {
		t.Errorf("short clamp: %d", got)
	}
	want := []int{24, 960, 961, 65536, 262144, 24}
	for i, w := range want {
		if got := LargeLen(uint64(i), 262144); got != w {
			t.Errorf("LargeLen(%d) = %d, want %d", i, got, w)
		}
	}
	if LargeLen(9, 70000) != 70000 || LargeLen(8, 70000) != 65536 {
		t.Error("LargeLen with another limit")
	}
}
