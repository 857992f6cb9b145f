/*
 * churn_attach.h — the setup churn_producer.c and churn_consumer.c share (scripts/soak_churn.py
 * kills and restarts them, so each run starts the same way).
 */
#ifndef DMXP_CHURN_ATTACH_H
#define DMXP_CHURN_ATTACH_H

#include "../dmxp.h"

#include <stdio.h>
#include <string.h>

/* Attaches to the existing segment `segment` (default trust policy, waiting up to 5 s for it
 * and for channel 0), opens channel 0 into `ch` and registers it for `role` (crash protection,
 * PROTOCOL.md §11). 0 when `ch` is usable; 1 (the exit code) after one line on stderr when the
 * segment or the channel cannot be opened. A failed registration is reported but not fatal:
 * the soak still runs, that process only without crash protection. `prog` names the lines. */
static inline int churn_attach(const char *prog, const char *segment, unsigned role,
                               dmxp_segment *seg, dmxp_channel *ch) {
    dmxp_error err;
    char msg[256];
    memset(seg, 0, sizeof *seg); /* only to quiet gcc's -Wmaybe-uninitialized */
    dmxp_status s = dmxp_segment_open_shm(seg, segment, 5000, &err);
    if (s == DMXP_OK) s = dmxp_channel_open_wait(seg, 0, 5000, ch, &err);
    if (s != DMXP_OK) {
        dmxp_error_format(&err, msg, sizeof msg);
        fprintf(stderr, "%s: %s: %s\n", prog, segment, msg);
        return 1;
    }
    s = dmxp_channel_register(ch, role, &err);
    if (s != DMXP_OK)
        fprintf(stderr, "%s: not registered (%s): no crash protection\n", prog,
                dmxp_strerror(s));
    return 0;
}

#endif
