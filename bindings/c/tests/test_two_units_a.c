/* With test_two_units_b.c: dmxp.h included in two translation units of one program. */
#include "check.h"

dmxp_status format_in_other_unit(void *mem, size_t len, dmxp_segment *seg);

int main(void) {
    void *mem = test_segment_memory(1u << 20);
    dmxp_segment seg, again;
    dmxp_error err;
    CHECK_OK(format_in_other_unit(mem, 1u << 20, &seg));
    CHECK_OK(dmxp_segment_attach_memory(&again, mem, 1u << 20, &err));
    dmxp_channel ch;
    CHECK_OK(dmxp_channel_open(&again, 0, &ch, &err));
    unsigned char out[8];
    size_t len;
    CHECK_OK(dmxp_try_recv(&ch, out, sizeof out, NULL, &len));
    CHECK(len == 5 && memcmp(out, "other", 5) == 0);
    free(mem);
    TEST_DONE("test_two_units");
}
