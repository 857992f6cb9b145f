/* The ring over many laps of small rings (capacity 2 and 4), single-threaded and MPMC with
 * threads, batches, blocking send/receive on the futex words with the wake rule, and the
 * handle's timestamp switch (dmxp_channel_set_timestamps). */
#include "check.h"
#include "../examples/dmxp_pattern.h"

#include <pthread.h>

#define SEG_LEN (1u << 20)

static dmxp_segment seg;

/* Single thread: > 10 laps, checking each slot's sequence after publish and after free. */
static void laps_single(uint32_t id, uint64_t cap) {
    dmxp_channel ch;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, id, cap, &ch, &err));
    unsigned char buf[DMXP_MSG_INLINE], out[DMXP_MSG_INLINE];
    const uint64_t laps = 25;
    uint64_t next_send = 0, next_recv = 0;
    for (uint64_t lap = 0; lap < laps; lap++) {
        /* fill the ring completely, then it is full */
        for (uint64_t k = 0; k < cap; k++) {
            size_t n = dmxp_pattern_encode(id, next_send, dmxp_pattern_default_len(next_send),
                                           buf);
            uint64_t mid;
            CHECK_OK(dmxp_try_send(&ch, buf, n, NULL, &mid));
            CHECK_EQ_U64(mid, next_send);
            CHECK_EQ_U64(atomic_load(&ch.slots[mid & ch.mask].sequence), mid + 1);
            next_send++;
        }
        CHECK_STATUS(dmxp_try_send(&ch, buf, 24, NULL, NULL), DMXP_E_FULL);
        CHECK(!dmxp_has_free_slot(&ch));
        /* drain it, checking order, contents and the freeing store */
        for (uint64_t k = 0; k < cap; k++) {
            dmxp_meta meta;
            size_t len;
            uint64_t c, index;
            CHECK_OK(dmxp_try_recv(&ch, out, sizeof out, &meta, &len));
            CHECK_EQ_U64(meta.message_id, next_recv);
            CHECK_EQ_U64(dmxp_pattern_decode(out, len, &c, &index), DMXP_PATTERN_OK);
            CHECK_EQ_U64(c, id);
            CHECK_EQ_U64(index, next_recv);
            CHECK_EQ_U64(atomic_load(&ch.slots[next_recv & ch.mask].sequence),
                         next_recv + cap);
            next_recv++;
        }
        CHECK_STATUS(dmxp_try_recv(&ch, out, sizeof out, NULL, NULL), DMXP_E_EMPTY);
        /* half-lap offsets: interleave one send and one receive */
        size_t n = dmxp_pattern_encode(id, next_send, 40, buf);
        CHECK_OK(dmxp_try_send(&ch, buf, n, NULL, NULL));
        next_send++;
        CHECK_OK(dmxp_try_recv(&ch, out, sizeof out, NULL, NULL));
        next_recv++;
    }
    CHECK(next_recv > 10 * cap);
    CHECK_EQ_U64(dmxp_channel_head(&ch), next_recv);
    CHECK_EQ_U64(dmxp_channel_tail(&ch), next_send);

    /* Batches over laps: each batch claims at most what is free, with one CAS. */
    for (uint64_t round = 0; round < 12 * cap; round++) {
        const void *datas[8];
        size_t lens[8];
        unsigned char bufs[8][64];
        for (int k = 0; k < 8; k++) {
            lens[k] = dmxp_pattern_encode(id, next_send + (uint64_t)k, 32, bufs[k]);
            datas[k] = bufs[k];
        }
        size_t sent = 0;
        uint64_t first = 0;
        CHECK_OK(dmxp_try_send_batch(&ch, datas, lens, 8, NULL, &sent, &first));
        CHECK_EQ_U64(sent, cap < 8 ? cap : 8);
        CHECK_EQ_U64(first, next_send);
        next_send += sent;
        size_t delivered = 0, dropped = 0;
        CHECK_OK(dmxp_try_recv_batch(&ch, 8, NULL, NULL, &delivered, &dropped));
        CHECK_EQ_U64(delivered, sent);
        CHECK_EQ_U64(dropped, 0);
        next_recv += delivered;
        for (uint64_t p = next_recv - delivered; p < next_recv; p++)
            CHECK_EQ_U64(atomic_load(&ch.slots[p & ch.mask].sequence), p + cap);
    }
}

/* ---- MPMC with threads on a tiny ring ---------------------------------------------------- */

#define MP_PRODUCERS 2
#define MP_CONSUMERS 2
#define MP_PER_PRODUCER 20000u

typedef struct {
    dmxp_channel ch;
    int who;
    _Atomic uint64_t *received; /* shared: messages received by all consumers */
    uint8_t *seen;              /* index -> times seen, owned per consumer */
    uint64_t corrupt;
} mp_arg;

static void *mp_producer(void *p) {
    mp_arg *a = p;
    unsigned char buf[DMXP_MSG_INLINE];
    for (uint64_t i = 0; i < MP_PER_PRODUCER; i++) {
        uint64_t index = (uint64_t)a->who * MP_PER_PRODUCER + i;
        size_t n = dmxp_pattern_encode(a->ch.id, index, dmxp_pattern_default_len(index), buf);
        dmxp_status s;
        while ((s = dmxp_try_send(&a->ch, buf, n, NULL, NULL)) == DMXP_E_FULL)
            if (i % 2) (void)dmxp_wait_free_slot(&a->ch, 5000000);
            else sched_yield();
        CHECK_OK(s);
    }
    return NULL;
}

static void *mp_consumer(void *p) {
    mp_arg *a = p;
    const uint64_t total = (uint64_t)MP_PRODUCERS * MP_PER_PRODUCER;
    unsigned char out[DMXP_MSG_INLINE];
    while (atomic_load(a->received) < total) {
        dmxp_meta meta;
        size_t len;
        dmxp_status s = dmxp_try_recv(&a->ch, out, sizeof out, &meta, &len);
        if (s == DMXP_E_EMPTY) {
            (void)dmxp_wait_message(&a->ch, 5000000);
            continue;
        }
        CHECK_OK(s);
        uint64_t c, index;
        if (dmxp_pattern_decode(out, len, &c, &index) != DMXP_PATTERN_OK || c != a->ch.id ||
            index >= total) {
            a->corrupt++;
        } else {
            a->seen[index]++;
        }
        atomic_fetch_add(a->received, 1);
    }
    return NULL;
}

static void laps_mpmc(uint32_t id, uint64_t cap) {
    dmxp_error err;
    dmxp_channel ch;
    CHECK_OK(dmxp_channel_create(&seg, id, cap, &ch, &err));
    const uint64_t total = (uint64_t)MP_PRODUCERS * MP_PER_PRODUCER;
    _Atomic uint64_t received = 0;
    mp_arg prod[MP_PRODUCERS], cons[MP_CONSUMERS];
    pthread_t tp[MP_PRODUCERS], tc[MP_CONSUMERS];
    for (int i = 0; i < MP_CONSUMERS; i++) {
        cons[i] = (mp_arg){.ch = ch, .who = i, .received = &received};
        cons[i].seen = calloc(total, 1);
        CHECK(cons[i].seen != NULL);
        CHECK(pthread_create(&tc[i], NULL, mp_consumer, &cons[i]) == 0);
    }
    for (int i = 0; i < MP_PRODUCERS; i++) {
        prod[i] = (mp_arg){.ch = ch, .who = i};
        CHECK(pthread_create(&tp[i], NULL, mp_producer, &prod[i]) == 0);
    }
    for (int i = 0; i < MP_PRODUCERS; i++) pthread_join(tp[i], NULL);
    for (int i = 0; i < MP_CONSUMERS; i++) pthread_join(tc[i], NULL);
    /* Exactly once across both consumers. */
    for (uint64_t index = 0; index < total; index++) {
        unsigned times = 0;
        for (int i = 0; i < MP_CONSUMERS; i++) times += cons[i].seen[index];
        if (times != 1) {
            fprintf(stderr, "capacity %llu: index %llu received %u times\n",
                    (unsigned long long)cap, (unsigned long long)index, times);
            exit(1);
        }
    }
    for (int i = 0; i < MP_CONSUMERS; i++) {
        CHECK_EQ_U64(cons[i].corrupt, 0);
        free(cons[i].seen);
    }
    CHECK_EQ_U64(dmxp_channel_head(&ch), total);
    CHECK_EQ_U64(dmxp_channel_tail(&ch), total);
    CHECK(total / cap > 10); /* many laps */
    /* Every slot was freed for the next lap. */
    for (uint64_t k = 0; k < cap; k++) {
        uint64_t last = total - cap + ((k - total) & (cap - 1));
        CHECK_EQ_U64(last & (cap - 1), k);
        CHECK_EQ_U64(atomic_load(&ch.slots[k].sequence), last + cap);
    }
    CHECK_EQ_U64(atomic_load(&ch.entry->not_empty_waiters), 0);
    CHECK_EQ_U64(atomic_load(&ch.entry->not_full_waiters), 0);
}

/* ---- Blocking and the wake rule --------------------------------------------------------- */

typedef struct {
    dmxp_channel ch;
    dmxp_status status;
    size_t len;
    unsigned char out[DMXP_MSG_INLINE];
} blocker;

static void *block_recv(void *p) {
    blocker *b = p;
    b->status = dmxp_recv_timeout(&b->ch, b->out, sizeof b->out, NULL, &b->len, DMXP_FOREVER);
    return NULL;
}

static void *block_send(void *p) {
    blocker *b = p;
    b->status = dmxp_send_timeout(&b->ch, "late", 4, NULL, NULL, DMXP_FOREVER);
    return NULL;
}

static void wait_for_waiters(_Atomic uint32_t *waiters) {
    /* The blocked thread registers before sleeping; poll for that (bounded). */
    for (int i = 0; i < 20000 && atomic_load(waiters) == 0; i++) dmxp__sleep_ns(100000);
    CHECK(atomic_load(waiters) != 0);
}

static void blocking(uint32_t id) {
    dmxp_channel ch;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, id, 2, &ch, &err));
    dmxp_channel_entry *e = ch.entry;
    unsigned char out[DMXP_MSG_INLINE];

    /* Nobody waits: sends and receives never touch the seq words (no wake syscall). */
    for (int i = 0; i < 10; i++) {
        CHECK_OK(dmxp_try_send(&ch, "a", 1, NULL, NULL));
        CHECK_OK(dmxp_try_recv(&ch, out, sizeof out, NULL, NULL));
    }
    CHECK_EQ_U64(atomic_load(&e->not_empty_seq), 0);
    CHECK_EQ_U64(atomic_load(&e->not_full_seq), 0);

    /* Timeouts on an empty / full ring, with the registration undone. */
    CHECK_STATUS(dmxp_recv_timeout(&ch, out, sizeof out, NULL, NULL, 2000000), DMXP_E_TIMEOUT);
    CHECK_STATUS(dmxp_wait_message(&ch, 1000000), DMXP_E_TIMEOUT);
    CHECK_EQ_U64(atomic_load(&e->not_empty_waiters), 0);
    CHECK_OK(dmxp_try_send(&ch, "1", 1, NULL, NULL));
    CHECK_OK(dmxp_try_send(&ch, "2", 1, NULL, NULL));
    CHECK_STATUS(dmxp_send_timeout(&ch, "3", 1, NULL, NULL, 2000000), DMXP_E_TIMEOUT);
    CHECK_STATUS(dmxp_wait_free_slot(&ch, 1000000), DMXP_E_TIMEOUT);
    CHECK_EQ_U64(atomic_load(&e->not_full_waiters), 0);
    CHECK_OK(dmxp_wait_message(&ch, 0)); /* ready: returns at once */

    /* A sender blocked on a full ring is woken by a receive, which bumps not_full_seq. */
    blocker b = {.ch = ch};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, block_send, &b) == 0);
    wait_for_waiters(&e->not_full_waiters);
    size_t len;
    CHECK_OK(dmxp_try_recv(&ch, out, sizeof out, NULL, &len));
    CHECK(out[0] == '1');
    pthread_join(t, NULL);
    CHECK_OK(b.status);
    CHECK(atomic_load(&e->not_full_seq) >= 1);
    CHECK_EQ_U64(atomic_load(&e->not_full_waiters), 0);
    CHECK_OK(dmxp_try_recv(&ch, out, sizeof out, NULL, &len));
    CHECK(out[0] == '2');
    CHECK_OK(dmxp_try_recv(&ch, out, sizeof out, NULL, &len));
    CHECK(len == 4 && memcmp(out, "late", 4) == 0);

    /* A receiver blocked on an empty ring is woken by a send, which bumps not_empty_seq. */
    uint32_t before = atomic_load(&e->not_empty_seq);
    blocker r = {.ch = ch};
    CHECK(pthread_create(&t, NULL, block_recv, &r) == 0);
    wait_for_waiters(&e->not_empty_waiters);
    CHECK_OK(dmxp_try_send(&ch, "wake", 4, NULL, NULL));
    pthread_join(t, NULL);
    CHECK_OK(r.status);
    CHECK(r.len == 4 && memcmp(r.out, "wake", 4) == 0);
    CHECK(atomic_load(&e->not_empty_seq) != before);
    CHECK_EQ_U64(atomic_load(&e->not_empty_waiters), 0);

    /* A stale waiter count (a waiter that died) costs a wake per operation, nothing else. */
    atomic_store(&e->not_empty_waiters, 1);
    before = atomic_load(&e->not_empty_seq);
    CHECK_OK(dmxp_try_send(&ch, "x", 1, NULL, NULL));
    CHECK_EQ_U64(atomic_load(&e->not_empty_seq), before + 1u);
    CHECK_OK(dmxp_try_recv(&ch, out, sizeof out, NULL, NULL));
    atomic_store(&e->not_empty_waiters, 0);
}

/* ---- Timestamps on and off (dmxp_channel_set_timestamps) --------------------------------- */

/* Sends through `ch` by each send path in turn (dmxp_try_send, dmxp_send_timeout, a batch of
 * two, a run of two slots) and receives every message, checking that each slot and each
 * received meta carries timestamp_ns == 0 when `stamped` is 0, else a CLOCK_MONOTONIC reading
 * taken during the send. */
static void check_stamps(const dmxp_channel *ch, int stamped) {
    static unsigned char run[DMXP_MSG_INLINE + 40], out[2 * DMXP_MSG_INLINE];
    memset(run, 'r', sizeof run);
    const void *datas[2] = {"b1", "b2"};
    size_t lens[2] = {2, 2};
    for (int path = 0; path < 4; path++) {
        uint64_t before = dmxp_now_ns(), first = 0;
        size_t n = 1, sent = 0;
        switch (path) {
        case 0: CHECK_OK(dmxp_try_send(ch, "one", 3, NULL, &first)); break;
        case 1: CHECK_OK(dmxp_send_timeout(ch, "blocking", 8, NULL, &first, DMXP_FOREVER)); break;
        case 2:
            CHECK_OK(dmxp_try_send_batch(ch, datas, lens, 2, NULL, &sent, &first));
            CHECK_EQ_U64(sent, 2);
            n = 2;
            break;
        default:
            CHECK_OK(dmxp_try_send(ch, run, sizeof run, NULL, &first));
            n = 2; /* the run's two slots, one message */
            break;
        }
        uint64_t after = dmxp_now_ns();
        for (size_t k = 0; k < n; k++) { /* every slot written, a run's continuation too */
            uint64_t ts = atomic_load(&ch->slots[(first + k) & ch->mask].meta.timestamp_ns);
            if (stamped) CHECK(ts >= before && ts <= after);
            else CHECK_EQ_U64(ts, 0);
        }
        for (size_t k = 0; k < (path == 2 ? 2u : 1u); k++) {
            dmxp_meta meta;
            size_t len;
            CHECK_OK(dmxp_try_recv(ch, out, sizeof out, &meta, &len));
            CHECK_EQ_U64(meta.message_id, first + k);
            if (path == 3) CHECK_EQ_U64(len, sizeof run);
            if (stamped) CHECK(meta.timestamp_ns != 0 && meta.timestamp_ns >= before &&
                               meta.timestamp_ns <= after);
            else CHECK_EQ_U64(meta.timestamp_ns, 0);
        }
    }
    CHECK_STATUS(dmxp_try_recv(ch, out, sizeof out, NULL, NULL), DMXP_E_EMPTY);
}

static void timestamps(uint32_t id) {
    dmxp_channel ch, other;
    dmxp_error err;
    dmxp_channel_opts opts = {.max_message_size = 2 * DMXP_MSG_INLINE};
    CHECK_OK(dmxp_channel_create_ex(&seg, id, 4, &opts, &ch, &err));
    CHECK_EQ_U64(dmxp_channel_timestamps(&ch), 1); /* stamped by default */
    check_stamps(&ch, 1);
    dmxp_channel_set_timestamps(&ch, 0);
    CHECK_EQ_U64(dmxp_channel_timestamps(&ch), 0);
    check_stamps(&ch, 0);
    /* The switch is the handle's: another handle of the channel still stamps. */
    CHECK_OK(dmxp_channel_open(&seg, id, &other, &err));
    CHECK_EQ_U64(dmxp_channel_timestamps(&other), 1);
    check_stamps(&other, 1);
    check_stamps(&ch, 0);
    dmxp_channel_set_timestamps(&ch, 2); /* any non-zero value turns it back on */
    CHECK_EQ_U64(dmxp_channel_timestamps(&ch), 1);
    check_stamps(&ch, 1);
}

int main(void) {
    void *mem = test_segment_memory(SEG_LEN);
    dmxp_error err;
    CHECK_OK(dmxp_segment_format_memory(&seg, mem, SEG_LEN, (uint32_t)getpid(), &err));
    laps_single(0, 2);
    laps_single(1, 4);
    laps_mpmc(2, 2);
    laps_mpmc(3, 4);
    blocking(4);
    timestamps(5);
    free(mem);
    TEST_DONE("test_ring");
}
