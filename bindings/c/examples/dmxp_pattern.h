/*
 * The verifiable test payload shared by every DMXP client (the interop contract; the Rust
 * original is dmxp/src/pattern.rs). A payload of len bytes (24 <= len; at most 960 through
 * dmxp_pattern_encode, any length through dmxp_pattern_encode_long), little-endian:
 *   bytes 0..8       channel id (u64)
 *   bytes 8..16      index (u64)
 *   bytes k in 16..len-8   (channel*31 + index*7 + k) mod 256
 *   last 8 bytes     FNV-1a-64 of bytes 0..len-8
 * Message `index` of the examples is default_len(index) = 32 + (index % 8) * 16 bytes long;
 * with --large (messages longer than one slot, PROTOCOL.md §12) it is
 * large_len(index, limit) = min({24, 960, 961, 65536, limit}[index % 5], limit) bytes long,
 * where limit is the channel's max message size.
 * Used by the examples and the tests; not part of the dmxp.h API.
 */
#ifndef DMXP_PATTERN_H
#define DMXP_PATTERN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define DMXP_PATTERN_MIN_LEN 24u
#define DMXP_PATTERN_MAX_LEN 960u

static inline size_t dmxp_pattern_default_len(uint64_t index) {
    return 32 + (size_t)(index % 8) * 16;
}

static inline uint64_t dmxp_pattern_fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

static inline unsigned char dmxp_pattern_filler(uint64_t channel, uint64_t index, size_t k) {
    return (unsigned char)(channel * 31 + index * 7 + (uint64_t)k);
}

static inline void dmxp_pattern_put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint64_t dmxp_pattern_get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* The length of message `index` with --large: {24, 960, 961, 65536, limit}[index % 5], at
 * most `limit` (as the Rust original: pattern::large_len). */
static inline size_t dmxp_pattern_large_len(uint64_t index, size_t limit) {
    static const size_t lens[4] = {24, 960, 961, 65536};
    size_t len = index % 5 == 4 ? limit : lens[index % 5];
    return len < limit ? len : limit;
}

/* Writes the payload for (channel, index) of len bytes (at least 24) into out, which must
 * hold that many (24 when len is shorter); returns the length written. */
static inline size_t dmxp_pattern_encode_long(uint32_t channel, uint64_t index, size_t len,
                                              unsigned char *out) {
    if (len < DMXP_PATTERN_MIN_LEN) len = DMXP_PATTERN_MIN_LEN;
    dmxp_pattern_put64(out, channel);
    dmxp_pattern_put64(out + 8, index);
    for (size_t k = 16; k < len - 8; k++) out[k] = dmxp_pattern_filler(channel, index, k);
    dmxp_pattern_put64(out + len - 8, dmxp_pattern_fnv1a(out, len - 8));
    return len;
}

/* Writes the payload for (channel, index) of len bytes (clamped to 24..960) into out, which
 * must hold 960 bytes; returns the length written. */
static inline size_t dmxp_pattern_encode(uint32_t channel, uint64_t index, size_t len,
                                         unsigned char *out) {
    if (len > DMXP_PATTERN_MAX_LEN) len = DMXP_PATTERN_MAX_LEN;
    return dmxp_pattern_encode_long(channel, index, len, out);
}

enum { DMXP_PATTERN_OK = 0, DMXP_PATTERN_TOO_SHORT = 1, DMXP_PATTERN_CHECKSUM = 2,
       DMXP_PATTERN_FILLER = 3 };

/* Checks a payload; on DMXP_PATTERN_OK sets *channel and *index. */
static inline int dmxp_pattern_decode(const unsigned char *p, size_t len, uint64_t *channel,
                                      uint64_t *index) {
    if (len < DMXP_PATTERN_MIN_LEN) return DMXP_PATTERN_TOO_SHORT;
    if (dmxp_pattern_fnv1a(p, len - 8) != dmxp_pattern_get64(p + len - 8))
        return DMXP_PATTERN_CHECKSUM;
    uint64_t c = dmxp_pattern_get64(p), i = dmxp_pattern_get64(p + 8);
    for (size_t k = 16; k < len - 8; k++)
        if (p[k] != dmxp_pattern_filler(c, i, k)) return DMXP_PATTERN_FILLER;
    *channel = c;
    *index = i;
    return DMXP_PATTERN_OK;
}

#endif
