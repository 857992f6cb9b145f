/*
 * scribble_client — a C producer or consumer for dmxp/tests/scribbler.rs: keeps sending or
 * receiving on one channel while another process writes random bytes into the segment, until
 * a stop file appears. Every failure the client reports is counted, and the segment is
 * re-attached after any status other than full/empty/timeout; nothing here may crash or hang.
 * The test builds it with ASan and UBSan (-fno-sanitize-recover), so a sanitizer report fails
 * it too.
 *
 *   scribble_client <p|c> <shm name> <channel> <stop file>
 *
 * Prints "ready" once it has tried to attach, and at the end one line
 *   RESULT c-<producer|consumer> ch=<channel> ops=<n> ok=<n> errors=<NAME:count,...>
 * Exits 0 unless the arguments are wrong.
 */
#include "../../../bindings/c/dmxp.h"

#include <stdlib.h>

#define MAX_STATUS 128 /* statuses are small negative numbers */
#define SELF_DEADLINE_NS INT64_C(120000000000) /* safety net if the parent vanished */

static uint64_t counts[MAX_STATUS];

static void count(dmxp_status s) {
    int i = -(int)s;
    if (i < 0 || i >= MAX_STATUS) i = MAX_STATUS - 1;
    counts[i]++;
}

static int stop_requested(const char *stop_file) { return access(stop_file, F_OK) == 0; }

/* Statuses after which the channel handle is kept; anything else re-attaches. */
static int routine(dmxp_status s) {
    return s == DMXP_OK || s == DMXP_E_FULL || s == DMXP_E_EMPTY || s == DMXP_E_TIMEOUT;
}

static void on_message(void *ctx, const dmxp_meta *meta, const void *payload, size_t len) {
    (void)meta;
    (void)payload;
    *(uint64_t *)ctx += len <= DMXP_MSG_INLINE ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc != 5 || (argv[1][0] != 'p' && argv[1][0] != 'c')) {
        fprintf(stderr, "usage: scribble_client <p|c> <shm name> <channel> <stop file>\n");
        return 2;
    }
    const int producer = argv[1][0] == 'p';
    const char *name = argv[2];
    const uint32_t id = (uint32_t)strtoul(argv[3], NULL, 10);
    const char *stop_file = argv[4];
    const int64_t started = (int64_t)dmxp_now_ns();

    dmxp_segment seg;
    memset(&seg, 0, sizeof seg);
    dmxp_channel ch;
    int attached = 0, announced = 0;
    uint64_t ops = 0, ok = 0, iteration = 0;
    unsigned char buf[DMXP_MSG_INLINE];
    memset(buf, 'c', sizeof buf);

    for (;;) {
        if ((iteration++ & 31) == 0) {
            if (stop_requested(stop_file)) break;
            if ((int64_t)dmxp_now_ns() - started > SELF_DEADLINE_NS) break;
        }
        if (!attached) {
            dmxp_error err;
            dmxp_status s = dmxp_segment_open_shm(&seg, name, 200, &err);
            if (s == DMXP_OK) {
                s = producer ? dmxp_channel_open_or_create(&seg, id, 16, 200, &ch, NULL, &err)
                             : dmxp_channel_open(&seg, id, &ch, &err);
                if (s == DMXP_OK)
                    attached = 1;
                else
                    dmxp_segment_close(&seg);
            }
            if (!announced) {
                printf("ready\n");
                fflush(stdout);
                announced = 1;
            }
            if (!attached) {
                count(s);
                dmxp__sleep_ns(2000000);
                continue;
            }
        }
        dmxp_status s;
        size_t n = 0;
        int kind = (int)(iteration % 3);
        if (producer) {
            size_t len = (size_t)(iteration * 37 % (DMXP_MSG_INLINE + 1));
            if (kind == 0) {
                s = dmxp_try_send(&ch, buf, len, NULL, NULL);
                n = s == DMXP_OK;
            } else if (kind == 1) {
                s = dmxp_send_timeout(&ch, buf, len, NULL, NULL, 20000000);
                n = s == DMXP_OK;
            } else {
                const void *datas[4] = {buf, buf, buf, buf};
                size_t lens[4] = {len, 1, 100, DMXP_MSG_INLINE};
                s = dmxp_try_send_batch(&ch, datas, lens, 4, NULL, &n, NULL);
            }
        } else {
            size_t len = 0;
            if (kind == 0) {
                s = dmxp_try_recv(&ch, buf, sizeof buf, NULL, &len);
                n = s == DMXP_OK;
            } else if (kind == 1) {
                s = dmxp_recv_timeout(&ch, buf, sizeof buf, NULL, &len, 20000000);
                n = s == DMXP_OK;
            } else {
                uint64_t delivered = 0;
                size_t got = 0, dropped = 0;
                s = dmxp_try_recv_batch(&ch, 8, on_message, &delivered, &got, &dropped);
                n = got;
                if (dropped) count(DMXP_E_CORRUPT_MESSAGE);
            }
        }
        ops++;
        ok += n;
        if (s != DMXP_OK) count(s);
        /* Re-attach after anything unusual, and now and then anyway, so that attach and
         * validation run against the scribbled segment too. */
        if (!routine(s) || iteration % 512 == 0) {
            dmxp_segment_close(&seg);
            attached = 0;
        }
    }
    if (attached) dmxp_segment_close(&seg);

    printf("RESULT c-%s ch=%u ops=%llu ok=%llu errors=", producer ? "producer" : "consumer", id,
           (unsigned long long)ops, (unsigned long long)ok);
    int first = 1;
    for (int i = 1; i < MAX_STATUS; i++) {
        if (!counts[i]) continue;
        printf("%s%s:%llu", first ? "" : ",", dmxp_status_name((dmxp_status)-i),
               (unsigned long long)counts[i]);
        first = 0;
    }
    printf("\n");
    return 0;
}
