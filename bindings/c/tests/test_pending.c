/* "Empty means nothing is queued" (PROTOCOL.md §6.2): a receive that finds the head position
 * claimed by a producer that has not published it yet, while a later position holds the
 * message of a completed send, does not report DMXP_E_EMPTY: it waits for the head position
 * (repairing a dead claimer after the grace period, giving up only after
 * DMXP_PENDING_WAIT_NS). With nothing published behind the claim, DMXP_E_EMPTY comes at
 * once. And N threads that each send, then receive, never see DMXP_E_EMPTY. */
#include "util.h"

#include <pthread.h>
#include <sys/wait.h>

#define SEG_LEN (8u << 20)
#define MS INT64_C(1000000)

static dmxp_segment seg;

static double ms_since(uint64_t t0) { return (double)(dmxp_now_ns() - t0) / 1e6; }

static void check_text(const unsigned char *buf, size_t len, const char *text) {
    CHECK_EQ_U64(len, strlen(text));
    CHECK(memcmp(buf, text, len) == 0);
}

/* Claims the next position as a producer does (intent, CAS on tail) without publishing it. */
static uint64_t claim_unpublished(dmxp_channel *producer) {
    uint64_t p, n;
    CHECK_OK(dmxp__claim_send(producer, 1, &p, &n));
    CHECK_EQ_U64(n, 1);
    CHECK_EQ_U64(atomic_load(&producer->slots[p & producer->mask].sequence), p);
    return p;
}

static uint64_t send_text(dmxp_channel *ch, const char *text) {
    uint64_t id;
    CHECK_OK(dmxp_try_send(ch, text, strlen(text), NULL, &id));
    return id;
}

/* A producer that claimed `position` earlier and publishes it `delay_ns` later, from another
 * thread: the end of a send (publish, then wake the consumers). */
typedef struct late_publish {
    dmxp_channel *producer;
    uint64_t position;
    const char *text;
    int64_t delay_ns;
    pthread_t thread;
} late_publish;

static void *late_publish_main(void *arg) {
    late_publish *lp = arg;
    dmxp__sleep_ns(lp->delay_ns);
    CHECK_OK(dmxp__publish(lp->producer, lp->position, lp->text, strlen(lp->text), 0, 0,
                           dmxp_now_ns()));
    dmxp__notify_consumers(lp->producer);
    return NULL;
}

static void start_late_publish(late_publish *lp, dmxp_channel *producer, uint64_t position,
                               const char *text) {
    lp->producer = producer;
    lp->position = position;
    lp->text = text;
    lp->delay_ns = 50 * MS;
    CHECK(pthread_create(&lp->thread, NULL, late_publish_main, lp) == 0);
}

typedef struct collected {
    size_t n;
    uint64_t ids[16];
    char texts[16][32];
} collected;

static void collect(void *ctx, const dmxp_meta *meta, const void *payload, size_t len) {
    collected *c = ctx;
    CHECK(c->n < 16 && len < 32);
    c->ids[c->n] = meta->message_id;
    memcpy(c->texts[c->n], payload, len);
    c->texts[c->n][len] = 0;
    c->n++;
}

/* (1) Position 0 claimed and not published, position 1 sent (a completed send), position 0
 * published 50 ms later by another thread: the non-blocking receive returns position 0's
 * message, not DMXP_E_EMPTY, then position 1's. The same for a batch receive. A blocking
 * receive waits for such a position within its own deadline, and times out at it. */
static void waits_for_claim_with_message_behind(void) {
    dmxp_channel ch, producer;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 1, 16, &ch, &err));
    CHECK_OK(dmxp_channel_open(&seg, 1, &producer, &err));
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len;
    dmxp_meta meta;
    late_publish lp;

    /* try_recv */
    CHECK_EQ_U64(claim_unpublished(&producer), 0);
    CHECK_EQ_U64(send_text(&producer, "second"), 1);
    CHECK_EQ_U64(atomic_load(&ch.slots[1].sequence), 2);
    start_late_publish(&lp, &producer, 0, "first");
    uint64_t t0 = dmxp_now_ns();
    CHECK_OK(dmxp_try_recv(&ch, buf, sizeof buf, &meta, &len));
    double waited = ms_since(t0);
    CHECK_EQ_U64(meta.message_id, 0);
    check_text(buf, len, "first");
    CHECK_OK(dmxp_try_recv(&ch, buf, sizeof buf, &meta, &len));
    CHECK_EQ_U64(meta.message_id, 1);
    check_text(buf, len, "second");
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, &meta, &len), DMXP_E_EMPTY);
    CHECK(pthread_join(lp.thread, NULL) == 0);
    printf("  try_recv waited %.1f ms for the pending position\n", waited);

    /* try_recv_batch_counts: after the wait, one claim takes all three in order */
    CHECK_EQ_U64(claim_unpublished(&producer), 2);
    CHECK_EQ_U64(send_text(&producer, "b3"), 3);
    CHECK_EQ_U64(send_text(&producer, "b4"), 4);
    start_late_publish(&lp, &producer, 2, "b2");
    collected c;
    memset(&c, 0, sizeof c);
    dmxp_recv_counts counts;
    CHECK_OK(dmxp_try_recv_batch_counts(&ch, 8, collect, NULL, &c, &counts));
    CHECK_EQ_U64(counts.delivered, 3);
    CHECK_EQ_U64(c.n, 3);
    for (size_t i = 0; i < 3; i++) CHECK_EQ_U64(c.ids[i], 2 + i);
    CHECK(strcmp(c.texts[0], "b2") == 0 && strcmp(c.texts[2], "b4") == 0);
    CHECK(pthread_join(lp.thread, NULL) == 0);

    /* recv_timeout: times out at its deadline (1 ms) while position 5 is pending, and with a
     * longer one gets it once published */
    CHECK_EQ_U64(claim_unpublished(&producer), 5);
    CHECK_EQ_U64(send_text(&producer, "t6"), 6);
    CHECK_STATUS(dmxp_recv_timeout(&ch, buf, sizeof buf, &meta, &len, 1 * MS), DMXP_E_TIMEOUT);
    start_late_publish(&lp, &producer, 5, "t5");
    CHECK_OK(dmxp_recv_timeout(&ch, buf, sizeof buf, &meta, &len, 5000 * MS));
    CHECK_EQ_U64(meta.message_id, 5);
    check_text(buf, len, "t5");
    CHECK_OK(dmxp_recv_timeout(&ch, buf, sizeof buf, &meta, &len, 1 * MS));
    CHECK_EQ_U64(meta.message_id, 6);
    CHECK(pthread_join(lp.thread, NULL) == 0);
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, NULL, NULL), DMXP_E_EMPTY);
}

/* (2) The wait applies the stuck-peer rules (§11.6): position 0 claimed by a producer that is
 * dead (its record names it), a message sent behind it. The first non-blocking receive
 * already reports the LOST tombstone its repair writes (not DMXP_E_EMPTY), then the message. */
static void repairs_dead_claimer_while_waiting(void) {
    dmxp_channel ch, producer;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 2, 8, &ch, &err));
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_CONSUMER, &err)); /* installs the table */
    CHECK_OK(dmxp_channel_open(&seg, 2, &producer, &err));
    uint64_t p = claim_unpublished(&producer);
    dmxp_peer_record *d = &peer_table_of(&seg)[200];
    uint32_t dead = gone_pid();
    atomic_store(&d->pid, dead);
    atomic_store(&d->runtime, DMXP_RUNTIME_C);
    atomic_store(&d->role, DMXP_ROLE_PRODUCER);
    atomic_store(&d->channel_id, 2);
    atomic_store(&d->intent_position, p);
    atomic_store(&d->intent_count, 1);
    atomic_store(&d->pid_ns, dmxp_pid_namespace());
    atomic_store(&d->start_time, 0);
    CHECK_EQ_U64(send_text(&producer, "behind"), p + 1);
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len;
    dmxp_meta meta;
    uint64_t t0 = dmxp_now_ns();
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, &meta, &len), DMXP_E_LOST);
    printf("  dead claimer repaired after %.1f ms\n", ms_since(t0));
    CHECK_EQ_U64(meta.message_id, p);
    CHECK_EQ_U64(atomic_load(&d->pid), 0); /* the record was taken over and freed */
    CHECK_OK(dmxp_try_recv(&ch, buf, sizeof buf, &meta, &len));
    CHECK_EQ_U64(meta.message_id, p + 1);
    check_text(buf, len, "behind");
    dmxp_channel_close(&ch);
}

/* (3) The wait is bounded: a live producer (nobody repairs it, and the consumer's unblock
 * timeout of §11.8 is disabled) that never publishes position 0 while position 1 is queued;
 * the receive gives up with DMXP_E_EMPTY, and not before the position has been pending for
 * DMXP_PENDING_WAIT_NS. */
static void gives_up_after_the_bound(void) {
    dmxp_channel ch, producer;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 3, 8, &ch, &err));
    CHECK_OK(dmxp_channel_open(&seg, 3, &producer, &err));
    dmxp_channel_set_unblock_timeout(&ch, 0);
    CHECK_EQ_U64(claim_unpublished(&producer), 0);
    CHECK_EQ_U64(send_text(&producer, "queued"), 1);
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len;
    uint64_t t0 = dmxp_now_ns();
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, NULL, &len), DMXP_E_EMPTY);
    uint64_t waited = dmxp_now_ns() - t0;
    printf("  gave up after %.1f ms\n", (double)waited / 1e6);
    CHECK(waited >= (uint64_t)DMXP_PENDING_WAIT_NS);
    /* Once published, both come out in order. */
    CHECK_OK(dmxp__publish(&producer, 0, "late", 4, 0, 0, dmxp_now_ns()));
    dmxp_meta meta;
    CHECK_OK(dmxp_try_recv(&ch, buf, sizeof buf, &meta, &len));
    CHECK_EQ_U64(meta.message_id, 0);
    CHECK_OK(dmxp_try_recv(&ch, buf, sizeof buf, &meta, &len));
    CHECK_EQ_U64(meta.message_id, 1);
}

/* (4) Nothing queued behind in-flight claims (two positions claimed, none published, nothing
 * after them): DMXP_E_EMPTY at once, from the single and the batch receive. They do not
 * enter the wait: it would run the stuck check, which dmxp_channel_stuck_looks counts. */
static void empty_behind_claims_at_once(void) {
    dmxp_channel ch, producer;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 4, 8, &ch, &err));
    CHECK_OK(dmxp_channel_open(&seg, 4, &producer, &err));
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len;
    /* nothing claimed at all */
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, NULL, &len), DMXP_E_EMPTY);
    CHECK_EQ_U64(claim_unpublished(&producer), 0);
    CHECK_EQ_U64(claim_unpublished(&producer), 1);
    uint64_t t0 = dmxp_now_ns();
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, NULL, &len), DMXP_E_EMPTY);
    CHECK_STATUS(dmxp_try_recv_batch_counts(&ch, 8, NULL, NULL, NULL, NULL), DMXP_E_EMPTY);
    printf("  empty behind two claims in %.3f ms\n", ms_since(t0));
    CHECK_EQ_U64(dmxp_channel_stuck_looks(&ch), 0);
    CHECK_EQ_U64(dmxp_channel_head(&ch), 0);
    /* finish the claims: both are then received */
    CHECK_OK(dmxp__publish(&producer, 1, "one", 3, 0, 0, dmxp_now_ns()));
    CHECK_OK(dmxp__publish(&producer, 0, "zero", 4, 0, 0, dmxp_now_ns()));
    size_t delivered = 0;
    CHECK_OK(dmxp_try_recv_batch(&ch, 8, NULL, NULL, &delivered, NULL));
    CHECK_EQ_U64(delivered, 2);
}

/* (5) Linearizability: each thread loops send one message, then receive once, on its own
 * handle. A receive starts after its thread's send completed, and every other receive is
 * matched by a send that completed before it, so a message is always queued for it: every
 * receive gets one (any), never DMXP_E_EMPTY. More threads than cores, so that threads are
 * preempted between claim and publish. Every message is received exactly once. */
#define LIN_ROUNDS 10000u
#define LIN_MAX_THREADS 16u

typedef struct lin_thread {
    uint32_t index;
    uint64_t empties;
    pthread_t thread;
} lin_thread;

static _Atomic uint32_t lin_seen[LIN_MAX_THREADS * LIN_ROUNDS];
static _Atomic int lin_go;
static _Atomic uint32_t lin_channel;

static void *lin_main(void *arg) {
    lin_thread *t = arg;
    dmxp_channel ch;
    dmxp_error err;
    CHECK_OK(dmxp_channel_open(&seg, atomic_load(&lin_channel), &ch, &err));
    while (!atomic_load(&lin_go)) sched_yield();
    for (uint32_t i = 0; i < LIN_ROUNDS; i++) {
        uint32_t msg[2] = {t->index, i};
        /* A thread preempted between its claim and free of a receive holds its slot, and a
         * lap later the ring is full at it until that thread runs again: retry. */
        dmxp_status sent;
        while ((sent = dmxp_try_send(&ch, msg, sizeof msg, NULL, NULL)) == DMXP_E_FULL)
            sched_yield();
        CHECK_OK(sent);
        uint32_t got[2] = {UINT32_MAX, UINT32_MAX};
        size_t len = 0;
        dmxp_status s;
        for (;;) {
            if (i % 2 == 0) {
                s = dmxp_try_recv(&ch, got, sizeof got, NULL, &len);
            } else {
                /* the batch receive, one message at a time */
                collected c;
                memset(&c, 0, sizeof c);
                s = dmxp_try_recv_batch_counts(&ch, 1, collect, NULL, &c, NULL);
                if (s == DMXP_OK) {
                    CHECK_EQ_U64(c.n, 1);
                    len = sizeof got;
                    memcpy(got, c.texts[0], sizeof got);
                }
            }
            if (s != DMXP_E_EMPTY) break;
            /* The failure under test. Counted, then received anyway so that every message
             * is still accounted for and the ring never fills up with leftovers. */
            t->empties++;
            sched_yield();
        }
        CHECK_OK(s);
        CHECK_EQ_U64(len, sizeof got);
        CHECK(got[0] < LIN_MAX_THREADS && got[1] < LIN_ROUNDS);
        atomic_fetch_add(&lin_seen[got[0] * LIN_ROUNDS + got[1]], 1);
    }
    return NULL;
}

static void send_then_receive_never_empty(uint32_t id) {
    /* Four threads per core, at least 8: with two per core a run without the wait can go
     * without a single empty receive now and then; with four it does not. */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint32_t n = 4 * (uint32_t)(cpus > 0 && cpus < 4 ? cpus : 4); /* at most LIN_MAX_THREADS */
    if (n < 8) n = 8;
    dmxp_channel ch;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, id, 1024, &ch, &err));
    for (uint32_t i = 0; i < LIN_MAX_THREADS * LIN_ROUNDS; i++) atomic_store(&lin_seen[i], 0);
    atomic_store(&lin_channel, id);
    atomic_store(&lin_go, 0);
    lin_thread threads[LIN_MAX_THREADS];
    for (uint32_t i = 0; i < n; i++) {
        threads[i].index = i;
        threads[i].empties = 0;
        CHECK(pthread_create(&threads[i].thread, NULL, lin_main, &threads[i]) == 0);
    }
    uint64_t t0 = dmxp_now_ns();
    atomic_store(&lin_go, 1);
    uint64_t empties = 0;
    for (uint32_t i = 0; i < n; i++) {
        CHECK(pthread_join(threads[i].thread, NULL) == 0);
        empties += threads[i].empties;
    }
    printf("  %u threads x %u rounds in %.0f ms: %" PRIu64 " empty receives\n", n, LIN_ROUNDS,
           ms_since(t0), empties);
    CHECK_EQ_U64(empties, 0);
    for (uint32_t i = 0; i < n * LIN_ROUNDS; i++) CHECK_EQ_U64(atomic_load(&lin_seen[i]), 1);
    CHECK_STATUS(dmxp_try_recv(&ch, NULL, 0, NULL, NULL), DMXP_E_EMPTY);
}

int main(void) {
    void *mem = test_segment_memory(SEG_LEN);
    dmxp_error err;
    CHECK_OK(dmxp_segment_format_memory(&seg, mem, SEG_LEN, (uint32_t)getpid(), &err));
    waits_for_claim_with_message_behind();
    repairs_dead_claimer_while_waiting();
    gives_up_after_the_bound();
    empty_behind_claims_at_once();
    for (uint32_t run = 0; run < 3; run++) send_then_receive_never_empty(5 + run);
    free(mem);
    TEST_DONE("test_pending");
}
