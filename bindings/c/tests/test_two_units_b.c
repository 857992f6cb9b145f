/* The other translation unit of test_two_units. */
#include "../dmxp.h"

dmxp_status format_in_other_unit(void *mem, size_t len, dmxp_segment *seg);

dmxp_status format_in_other_unit(void *mem, size_t len, dmxp_segment *seg) {
    dmxp_channel ch;
    dmxp_status s = dmxp_segment_format_memory(seg, mem, len, 1, NULL);
    if (s == DMXP_OK) s = dmxp_channel_create(seg, 0, 2, &ch, NULL);
    if (s == DMXP_OK) s = dmxp_try_send(&ch, "other", 5, NULL, NULL);
    return s;
}
