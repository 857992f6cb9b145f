/*
 * hotpath — the C client's hot paths in one thread on one channel, for instruction counts
 * (valgrind --tool=callgrind): no second core, so no cache-line transfers, only the CPU work
 * of the calls themselves. The segment is ordinary process memory (dmxp_segment_format_memory),
 * one channel of 1024 slots.
 *
 *   hotpath MODE LEN N [--reg] [--check]
 *
 *   MODE  single    N x (dmxp_try_send of LEN bytes + dmxp_try_recv into a 960-byte buffer)
 *         timeout   N x (dmxp_send_timeout + dmxp_recv_timeout, timeouts 0: the paths the
 *                   blocking calls take while the ring is neither full nor empty)
 *         batch16   N / 16 x (dmxp_try_send_batch_counts of 16 + dmxp_try_recv_batch_counts
 *                   of 16, the callback summing lengths): per message, divide by N
 *         empty     N x dmxp_try_recv on an empty channel (a consumer polling: LEN unused)
 *   LEN   payload bytes, 0..960
 *   N     messages (0: set up and tear down only, the baseline to subtract)
 *   --reg register a producer and a consumer peer record, so every claim writes its intents
 *   --check verify every received byte (costs instructions: not for counting)
 *
 * Per message: (Ir(N) - Ir(0)) / N, e.g.
 *   make -s -C bindings/c $(pwd)/bindings/c/build/bench_hotpath
 *   valgrind --tool=callgrind --callgrind-out-file=/dev/null bindings/c/build/bench_hotpath single 32 0
 *   valgrind --tool=callgrind --callgrind-out-file=/dev/null bindings/c/build/bench_hotpath single 32 100000
 * (bench/callgrind.sh runs every mode and prints the table.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dmxp.h> /* -I bindings/c (or a directory holding another copy, to compare) */

#define SEGMENT_BYTES ((size_t)DMXP_HEADER_SIZE + 1024u * DMXP_SLOT_SIZE + (1u << 20))

static unsigned char pattern[DMXP_MSG_INLINE];
static volatile uint64_t sink;
static int check;
static size_t want_len;

static void fail(const char *what, dmxp_status s) {
    fprintf(stderr, "hotpath: %s: %s\n", what, dmxp_status_name(s));
    exit(1);
}

static void verify(const void *buf, size_t len) {
    if (len != want_len || memcmp(buf, pattern, len) != 0) {
        fprintf(stderr, "hotpath: received %zu bytes that differ from the %zu sent\n", len,
                want_len);
        exit(1);
    }
}

static void deliver(void *ctx, const dmxp_meta *meta, const void *payload, size_t len) {
    (void)meta;
    *(uint64_t *)ctx += len;
    if (check) verify(payload, len);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: hotpath single|timeout|batch16|empty LEN N [--reg] [--check]\n");
        return 2;
    }
    const char *mode = argv[1];
    size_t len = (size_t)strtoul(argv[2], NULL, 10);
    uint64_t n = strtoull(argv[3], NULL, 10);
    int reg = 0;
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--reg") == 0) reg = 1;
        else if (strcmp(argv[i], "--check") == 0) check = 1;
    }
    if (len > DMXP_MSG_INLINE) len = DMXP_MSG_INLINE;
    want_len = len;
    for (size_t i = 0; i < sizeof pattern; i++) pattern[i] = (unsigned char)(i * 7 + 3);

    void *mem = aligned_alloc(DMXP_SEGMENT_ALIGN, SEGMENT_BYTES);
    if (mem == NULL) return 1;
    memset(mem, 0, SEGMENT_BYTES);
    dmxp_segment seg;
    dmxp_channel ch;
    dmxp_error err;
    dmxp_status s = dmxp_segment_format_memory(&seg, mem, SEGMENT_BYTES, 1, &err);
    if (s != DMXP_OK) fail("format", s);
    s = dmxp_channel_create(&seg, 0, 1024, &ch, &err);
    if (s != DMXP_OK) fail("create", s);
    if (reg && (s = dmxp_channel_register(&ch, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER, &err)) !=
                   DMXP_OK)
        fail("register", s);

    unsigned char buf[DMXP_MSG_INLINE];
    dmxp_meta meta;
    size_t got = 0;
    uint64_t sum = 0;
    if (strcmp(mode, "single") == 0) {
        for (uint64_t i = 0; i < n; i++) {
            if ((s = dmxp_try_send(&ch, pattern, len, NULL, NULL)) != DMXP_OK) fail("send", s);
            if ((s = dmxp_try_recv(&ch, buf, sizeof buf, &meta, &got)) != DMXP_OK)
                fail("recv", s);
            sum += got;
            if (check) verify(buf, got);
        }
    } else if (strcmp(mode, "timeout") == 0) {
        for (uint64_t i = 0; i < n; i++) {
            if ((s = dmxp_send_timeout(&ch, pattern, len, NULL, NULL, 0)) != DMXP_OK)
                fail("send", s);
            if ((s = dmxp_recv_timeout(&ch, buf, sizeof buf, &meta, &got, 0)) != DMXP_OK)
                fail("recv", s);
            sum += got;
            if (check) verify(buf, got);
        }
    } else if (strcmp(mode, "batch16") == 0) {
        const void *datas[16];
        size_t lens[16];
        for (int i = 0; i < 16; i++) {
            datas[i] = pattern;
            lens[i] = len;
        }
        for (uint64_t i = 0; i < n; i += 16) {
            dmxp_send_counts sc;
            dmxp_recv_counts rc;
            if ((s = dmxp_try_send_batch_counts(&ch, datas, lens, 16, NULL, &sc)) != DMXP_OK ||
                sc.published != 16)
                fail("send batch", s);
            if ((s = dmxp_try_recv_batch_counts(&ch, 16, deliver, NULL, &sum, &rc)) != DMXP_OK ||
                rc.delivered != 16)
                fail("recv batch", s);
        }
    } else if (strcmp(mode, "empty") == 0) {
        for (uint64_t i = 0; i < n; i++)
            if ((s = dmxp_try_recv(&ch, buf, sizeof buf, &meta, &got)) != DMXP_E_EMPTY)
                fail("recv on empty", s);
    } else {
        fprintf(stderr, "hotpath: unknown mode %s\n", mode);
        return 2;
    }
    sink = sum;
    dmxp_channel_close(&ch);
    free(mem);
    return 0;
}
