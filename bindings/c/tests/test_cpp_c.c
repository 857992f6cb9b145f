/* The C half of test_cpp: dmxp.h compiled as C11 (by the C compiler) and linked into the C++
 * test, which hands these functions its own segments and channel handles and uses theirs. */
#include "test_cpp_c.h"

size_t test_c_layout(uint64_t *out, size_t max) {
    const uint64_t values[] = {
#define DMXP_TEST_LAYOUT_VALUE(e) (uint64_t)(e),
        DMXP_TEST_LAYOUT(DMXP_TEST_LAYOUT_VALUE)
#undef DMXP_TEST_LAYOUT_VALUE
    };
    size_t n = sizeof values / sizeof values[0];
    for (size_t i = 0; i < n && i < max; i++) out[i] = values[i];
    return n;
}

dmxp_status test_c_build_segment(void *mem, dmxp_segment *seg) {
    return test_build_segment(mem, seg);
}

dmxp_status test_c_open(const dmxp_segment *seg, uint32_t id, dmxp_channel *ch) {
    return dmxp_channel_open(seg, id, ch, NULL);
}

dmxp_status test_c_send(const dmxp_channel *ch, const char *text, uint32_t message_type) {
    dmxp_send_opts opts = {message_type, 0};
    return dmxp_try_send(ch, text, strlen(text), &opts, NULL);
}

dmxp_status test_c_recv(const dmxp_channel *ch, char *out, size_t cap, dmxp_meta *meta,
                        size_t *len) {
    return dmxp_try_recv(ch, out, cap, meta, len);
}

void test_c_close(dmxp_channel *ch) { dmxp_channel_close(ch); }

uint64_t test_c_now_ns(void) { return dmxp_now_ns(); }
