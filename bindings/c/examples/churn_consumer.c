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
#include "churn_attach.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: churn_consumer SEGMENT\n");
        return 2;
    }
    dmxp_segment seg;
    dmxp_channel ch;
    if (churn_attach("churn_consumer", argv[1], DMXP_ROLE_CONSUMER, &seg, &ch) != 0) return 1;
    unsigned char buf[DMXP_MSG_INLINE];
    for (;;) {
        dmxp_meta meta;
        size_t len = 0;
        dmxp_status s = dmxp_recv_timeout(&ch, buf, sizeof buf, &meta, &len, INT64_C(200000000));
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
