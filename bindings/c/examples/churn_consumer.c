/*
 * churn_consumer — a consumer for the crash churn soak (scripts/soak_churn.py).
 *
 *   churn_consumer SEGMENT
 *
 * Attaches to the existing segment SEGMENT (default trust policy), opens channel 0, registers
 * the handle as a consumer (crash protection, PROTOCOL.md §11) and receives one message at a
 * time until it is killed, writing each payload to stdout as one line, flushed at once (a
 * kill loses at most the one message it had taken). LOST tombstones, revoked receives and
 * corrupt slots are passed over. Other errors: one line on stderr, exit 1.
 */
#include "../dmxp.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: churn_consumer SEGMENT\n");
        return 2;
    }
    dmxp_segment seg;
    dmxp_channel ch;
    dmxp_error err;
    char msg[256];
    memset(&seg, 0, sizeof seg); /* only to quiet gcc's -Wmaybe-uninitialized */
    dmxp_status s = dmxp_segment_open_shm(&seg, argv[1], 5000, &err);
    if (s == DMXP_OK) s = dmxp_channel_open_wait(&seg, 0, 5000, &ch, &err);
    if (s != DMXP_OK) {
        dmxp_error_format(&err, msg, sizeof msg);
        fprintf(stderr, "churn_consumer: %s: %s\n", argv[1], msg);
        return 1;
    }
    s = dmxp_channel_register(&ch, DMXP_ROLE_CONSUMER, &err);
    if (s != DMXP_OK)
        fprintf(stderr, "churn_consumer: not registered (%s): no crash protection\n",
                dmxp_strerror(s));
    unsigned char buf[DMXP_MSG_INLINE];
    for (;;) {
        dmxp_meta meta;
        size_t len = 0;
        s = dmxp_recv_timeout(&ch, buf, sizeof buf, &meta, &len, INT64_C(200000000));
        if (s == DMXP_OK) {
            fwrite(buf, 1, len, stdout);
            fputc('\n', stdout);
            if (fflush(stdout) != 0) return 1; /* the reader is gone */
        } else if (s != DMXP_E_TIMEOUT && s != DMXP_E_EMPTY && s != DMXP_E_LOST &&
                   s != DMXP_E_REVOKED && s != DMXP_E_CORRUPT_MESSAGE && s != DMXP_E_BUSY) {
            fprintf(stderr, "churn_consumer: receive: %s\n", dmxp_strerror(s));
            return 1;
        }
    }
}
