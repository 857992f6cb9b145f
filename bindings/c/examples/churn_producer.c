/*
 * churn_producer — a producer for the crash churn soak (scripts/soak_churn.py).
 *
 *   churn_producer SEGMENT TAG
 *
 * Attaches to the existing segment SEGMENT (default trust policy), opens channel 0, registers
 * the handle as a producer (crash protection, PROTOCOL.md §11) and sends the text payloads
 * "TAG:0", "TAG:1", ... in order, waiting while the ring is full, until it is killed. A send
 * that times out is retried with the same index; a revoked one (§11.7: may or may not have
 * been delivered) is not, so nothing is sent twice. Other errors: one line on stderr, exit 1.
 */
#include "churn_attach.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: churn_producer SEGMENT TAG\n");
        return 2;
    }
    dmxp_segment seg;
    dmxp_channel ch;
    if (churn_attach("churn_producer", argv[1], DMXP_ROLE_PRODUCER, &seg, &ch) != 0) return 1;
    char msg[256];
    for (unsigned long long i = 0;;) {
        int len = snprintf(msg, sizeof msg, "%s:%llu", argv[2], i);
        if (len < 0 || (size_t)len >= sizeof msg) return 2;
        dmxp_status s =
            dmxp_send_timeout(&ch, msg, (size_t)len, NULL, NULL, INT64_C(30000000000));
        if (s == DMXP_OK || s == DMXP_E_REVOKED) {
            i++;
        } else if (s != DMXP_E_TIMEOUT && s != DMXP_E_BUSY) {
            fprintf(stderr, "churn_producer: send: %s\n", dmxp_strerror(s));
            return 1;
        }
    }
}
