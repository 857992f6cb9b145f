/* Shared by test_cpp.cpp (compiled as C++17) and test_cpp_c.c (compiled as C11), linked into
 * one program: the same dmxp.h in both languages. Everything here is valid C and C++. */
#ifndef DMXP_TEST_CPP_C_H
#define DMXP_TEST_CPP_C_H

#include "../dmxp.h"

/* sizeof, alignment and offsets of every struct of dmxp.h, wire layout and handles alike:
 * each language fills a table from this list, and test_cpp compares the two. */
#define DMXP_TEST_LAYOUT(X)                                                                  \
    X(sizeof(dmxp_header)) X(DMXP__ALIGNOF(dmxp_header)) X(offsetof(dmxp_header, zero))       \
    X(sizeof(dmxp_peer_record)) X(DMXP__ALIGNOF(dmxp_peer_record))                           \
    X(offsetof(dmxp_peer_record, waiting)) X(sizeof(dmxp_channel_entry))                     \
    X(DMXP__ALIGNOF(dmxp_channel_entry)) X(offsetof(dmxp_channel_entry, tail))               \
    X(offsetof(dmxp_channel_entry, head)) X(sizeof(dmxp_slot_meta))                          \
    X(offsetof(dmxp_slot_meta, flags)) X(sizeof(dmxp_slot)) X(DMXP__ALIGNOF(dmxp_slot))      \
    X(offsetof(dmxp_slot, payload)) X(sizeof(dmxp_segment_layout))                           \
    X(sizeof(dmxp_segment)) X(DMXP__ALIGNOF(dmxp_segment))                                   \
    X(offsetof(dmxp_segment, peer_records)) X(sizeof(dmxp__watch))                           \
    X(DMXP__ALIGNOF(dmxp__watch)) X(offsetof(dmxp__watch, position))                         \
    X(offsetof(dmxp__watch, last)) X(sizeof(dmxp_channel)) X(DMXP__ALIGNOF(dmxp_channel))    \
    X(offsetof(dmxp_channel, slots)) X(offsetof(dmxp_channel, peer_records))                 \
    X(offsetof(dmxp_channel, send_peer)) X(offsetof(dmxp_channel, send_watch))               \
    X(offsetof(dmxp_channel, recv_watch)) X(offsetof(dmxp_channel, unblock_ns))              \
    X(offsetof(dmxp_channel, stuck_looks)) X(offsetof(dmxp_channel, timestamps))             \
    X(sizeof(dmxp_meta))                                                                     \
    X(offsetof(dmxp_meta, payload_len)) X(sizeof(dmxp_send_opts)) X(sizeof(dmxp_error))      \
    X(offsetof(dmxp_error, os_errno)) X(offsetof(dmxp_error, detail)) X(sizeof(dmxp_trust))   \
    X(offsetof(dmxp_trust, peer_records)) X(sizeof(dmxp_send_counts))                        \
    X(sizeof(dmxp_recv_counts)) X(sizeof(dmxp_identity)) X(sizeof(dmxp_recover_report))      \
    X(sizeof(dmxp_status)) X(sizeof(dmxp_wait_fd)) X(DMXP__ALIGNOF(dmxp_wait_fd))             \
    X(offsetof(dmxp_wait_fd, sqes)) X(offsetof(dmxp_wait_fd, in_flight))                     \
    X(offsetof(dmxp_wait_fd, stuck)) X(offsetof(dmxp_wait_fd, stats))                        \
    X(sizeof(dmxp_wait_fd_stats)) X(sizeof(dmxp__uring_sqe)) X(sizeof(dmxp__uring_params))

#define DMXP_TEST_LAYOUT_COUNT_ONE(e) +1
#define DMXP_TEST_LAYOUT_COUNT (0 DMXP_TEST_LAYOUT(DMXP_TEST_LAYOUT_COUNT_ONE))

/* The size of the segment test_build_segment makes. */
#define DMXP_TEST_BUILD_SIZE ((size_t)DMXP_HEADER_SIZE + 64 * DMXP_SLOT_SIZE)

/* The same sequence of calls in either language, on zeroed, 128-aligned memory of
 * DMXP_TEST_BUILD_SIZE bytes: format, channels 0 (capacity 4) and 3 (capacity 8), sends with
 * options, a receive. Two runs make the same bytes but for the timestamps of the messages. */
static inline dmxp_status test_build_segment(void *mem, dmxp_segment *seg) {
    dmxp_channel ch0, ch3;
    dmxp_status s = dmxp_segment_format_memory(seg, mem, DMXP_TEST_BUILD_SIZE, 4242, NULL);
    if (s == DMXP_OK) s = dmxp_channel_create(seg, 0, 4, &ch0, NULL);
    if (s == DMXP_OK) s = dmxp_channel_create(seg, 3, 8, &ch3, NULL);
    static const char *const texts[3] = {"one", "two two", "three three three"};
    for (uint32_t i = 0; s == DMXP_OK && i < 3; i++) {
        dmxp_send_opts opts = {10 + i, (uint16_t)(0x0100u << i)};
        s = dmxp_try_send(&ch0, texts[i], strlen(texts[i]), &opts, NULL);
    }
    if (s == DMXP_OK) {
        char buf[32];
        size_t len = 0;
        s = dmxp_try_recv(&ch0, buf, sizeof buf, NULL, &len);
    }
    if (s == DMXP_OK) s = dmxp_try_send(&ch3, "", 0, NULL, NULL);
    return s;
}

#if defined(__cplusplus)
extern "C" {
#endif

/* Implemented in test_cpp_c.c, by the C compiler. */
size_t test_c_layout(uint64_t *out, size_t max);
dmxp_status test_c_build_segment(void *mem, dmxp_segment *seg);
dmxp_status test_c_open(const dmxp_segment *seg, uint32_t id, dmxp_channel *ch);
dmxp_status test_c_send(const dmxp_channel *ch, const char *text, uint32_t message_type);
dmxp_status test_c_recv(const dmxp_channel *ch, char *out, size_t cap, dmxp_meta *meta,
                        size_t *len);
void test_c_close(dmxp_channel *ch);
uint64_t test_c_now_ns(void);

#if defined(__cplusplus)
}
#endif

#endif
