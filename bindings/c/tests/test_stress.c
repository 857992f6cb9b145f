/* Threaded stress: 4 producers x 4 consumers on one small ring, mixing single, batch and
 * blocking sends and receives, through handles registered in the peer table (intents around
 * every claim) and a shared unregistered one; every message is received exactly once with a
 * valid checksum.
 * Built with -fsanitize=thread (and also with ASan/UBSan). Usage: test_stress [per_producer] */
#include "check.h"
#include "../examples/dmxp_pattern.h"

#include <pthread.h>

#define PRODUCERS 4
#define CONSUMERS 4
#define SEG_LEN (1u << 20)

static dmxp_segment seg;
static dmxp_channel ch;
static uint64_t per_producer = 20000;
static _Atomic uint64_t received_total;
static _Atomic uint32_t *seen; /* index -> times received, across all consumers */
static _Atomic uint64_t corrupt;

static void *producer(void *p) {
    int who = (int)(intptr_t)p;
    /* Odd threads use their own handle, registered in the peer table (intents around every
     * claim); even ones share the unregistered handle. */
    /* A handle of its own is opened, not copied: other threads are using `ch`. */
    dmxp_channel mine;
    CHECK_OK(dmxp_channel_open(&seg, ch.id, &mine, NULL));
    const dmxp_channel *c = &ch;
    if (who % 2) {
        CHECK_OK(dmxp_channel_register(&mine, DMXP_ROLE_PRODUCER, NULL));
        c = &mine;
    }
    unsigned char bufs[5][DMXP_MSG_INLINE];
    uint64_t i = 0;
    while (i < per_producer) {
        uint64_t base = (uint64_t)who * per_producer;
        if (who % 3 == 1) { /* batches of up to 5 */
            const void *datas[5];
            size_t lens[5];
            size_t n = per_producer - i < 5 ? (size_t)(per_producer - i) : 5;
            for (size_t k = 0; k < n; k++) {
                uint64_t index = base + i + k;
                lens[k] = dmxp_pattern_encode(c->id, index, dmxp_pattern_default_len(index),
                                              bufs[k]);
                datas[k] = bufs[k];
            }
            size_t sent = 0;
            dmxp_status s = dmxp_try_send_batch(c, datas, lens, n, NULL, &sent, NULL);
            if (s == DMXP_E_FULL) {
                (void)dmxp_wait_free_slot(c, 10000000);
                continue;
            }
            CHECK_OK(s);
            i += sent;
            continue;
        }
        uint64_t index = base + i;
        size_t n = dmxp_pattern_encode(c->id, index, dmxp_pattern_default_len(index), bufs[0]);
        dmxp_status s;
        if (who % 3 == 2) {
            s = dmxp_send_timeout(c, bufs[0], n, NULL, NULL, DMXP_FOREVER);
        } else {
            while ((s = dmxp_try_send(c, bufs[0], n, NULL, NULL)) == DMXP_E_FULL)
                sched_yield();
        }
        CHECK_OK(s);
        i++;
    }
    CHECK_EQ_U64(dmxp_channel_revoked(&mine), 0); /* nobody is ever judged dead here */
    dmxp_channel_close(&mine);
    return NULL;
}

static void record(const unsigned char *payload, size_t len) {
    uint64_t c, index;
    if (dmxp_pattern_decode(payload, len, &c, &index) != DMXP_PATTERN_OK || c != ch.id ||
        index >= PRODUCERS * per_producer)
        atomic_fetch_add(&corrupt, 1);
    else
        atomic_fetch_add_explicit(&seen[index], 1, memory_order_relaxed);
    atomic_fetch_add(&received_total, 1);
}

static void deliver(void *ctx, const dmxp_meta *meta, const void *payload, size_t len) {
    (void)ctx;
    CHECK_EQ_U64(meta->payload_len, len);
    CHECK_EQ_U64(meta->sender_runtime, DMXP_RUNTIME_C);
    record(payload, len);
}

static void *consumer(void *p) {
    int who = (int)(intptr_t)p;
    dmxp_channel mine;
    CHECK_OK(dmxp_channel_open(&seg, ch.id, &mine, NULL));
    const dmxp_channel *c = &ch;
    if (who % 4 >= 2) {
        CHECK_OK(dmxp_channel_register(&mine, DMXP_ROLE_CONSUMER, NULL));
        c = &mine;
    }
    const uint64_t total = PRODUCERS * per_producer;
    unsigned char out[DMXP_MSG_INLINE];
    while (atomic_load(&received_total) < total) {
        if (who % 2 == 0) {
            size_t delivered = 0, dropped = 0;
            dmxp_status s = dmxp_try_recv_batch(c, 7, deliver, NULL, &delivered, &dropped);
            if (s == DMXP_E_EMPTY) {
                (void)dmxp_wait_message(c, 10000000);
                continue;
            }
            CHECK_OK(s);
            CHECK_EQ_U64(dropped, 0);
        } else {
            size_t len;
            dmxp_meta meta;
            dmxp_status s = dmxp_recv_timeout(c, out, sizeof out, &meta, &len, 10000000);
            if (s == DMXP_E_TIMEOUT) continue;
            CHECK_OK(s);
            record(out, len);
        }
    }
    CHECK_EQ_U64(dmxp_channel_revoked(&mine), 0); /* nobody is ever judged dead here */
    dmxp_channel_close(&mine);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) per_producer = strtoull(argv[1], NULL, 10);
    void *mem = test_segment_memory(SEG_LEN);
    dmxp_error err;
    CHECK_OK(dmxp_segment_format_memory(&seg, mem, SEG_LEN, (uint32_t)getpid(), &err));
    CHECK_OK(dmxp_channel_create(&seg, 9, 8, &ch, &err));
    const uint64_t total = PRODUCERS * per_producer;
    seen = calloc(total, sizeof *seen);
    CHECK(seen != NULL);
    pthread_t tp[PRODUCERS], tc[CONSUMERS];
    for (intptr_t i = 0; i < CONSUMERS; i++)
        CHECK(pthread_create(&tc[i], NULL, consumer, (void *)i) == 0);
    for (intptr_t i = 0; i < PRODUCERS; i++)
        CHECK(pthread_create(&tp[i], NULL, producer, (void *)i) == 0);
    for (int i = 0; i < PRODUCERS; i++) pthread_join(tp[i], NULL);
    for (int i = 0; i < CONSUMERS; i++) pthread_join(tc[i], NULL);

    CHECK_EQ_U64(atomic_load(&corrupt), 0);
    CHECK_EQ_U64(atomic_load(&received_total), total);
    for (uint64_t i = 0; i < total; i++)
        if (atomic_load(&seen[i]) != 1) {
            fprintf(stderr, "index %llu received %u times\n", (unsigned long long)i,
                    (unsigned)atomic_load(&seen[i]));
            return 1;
        }
    check_count += (int)total;
    CHECK_EQ_U64(dmxp_channel_revoked(&ch), 0);
    CHECK_EQ_U64(dmxp_channel_head(&ch), total);
    CHECK_EQ_U64(dmxp_channel_tail(&ch), total);
    CHECK_EQ_U64(atomic_load(&ch.entry->not_empty_waiters), 0);
    CHECK_EQ_U64(atomic_load(&ch.entry->not_full_waiters), 0);
    /* The registered threads left the peer table: every record is free again. */
    uint64_t table = atomic_load(&dmxp__hdr(&seg)->peer_table_offset);
    CHECK(table != 0);
    dmxp_peer_record *records = (dmxp_peer_record *)(void *)(seg.base + table);
    for (uint32_t i = 0; i < DMXP_PEER_RECORDS; i++) CHECK_EQ_U64(atomic_load(&records[i].pid), 0);
    free(seen);
    free(mem);
    printf("test_stress: %d producers x %d consumers, %llu messages through a ring of 8, "
           "exactly once\n",
           PRODUCERS, CONSUMERS, (unsigned long long)total);
    TEST_DONE("test_stress");
}
