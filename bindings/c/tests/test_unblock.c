/* The unblock timeout (PROTOCOL.md §11.8): a position held by a peer that is alive but stopped
 * is tombstoned (receive side) or freed (send side) once it has been stuck for the handle's
 * unblock timeout, and the holder learns it from DMXP_E_REVOKED (§11.7). The stopped holder
 * is a handle of this process (so every repair pass counts it alive), parked in a thread at a
 * DMXP_TEST_HOOK point between its claim and its publish or free. Also: with the unblock
 * disabled the position stays stuck, and repair passes back off while it does. */
/* Defined below; dmxp.h (through check.h) must come after it. */
static void test_hook(int point, const void *ch, unsigned long long position);
#define DMXP_TEST_HOOK(point, ch, position) test_hook((point), (const void *)(ch), (position))

#include "check.h"

#include <pthread.h>

#define SEG_LEN (1u << 20)
#define MS INT64_C(1000000)
#define SHORT_UNBLOCK_NS (UINT64_C(100) * 1000000u)

static dmxp_segment seg;

/* The handle to park, and where: the hook holds its thread there until released. */
static struct {
    const void *handle;
    int point;
    _Atomic int parked;
    _Atomic int release;
} stall;

static void test_hook(int point, const void *ch, unsigned long long position) {
    (void)position;
    if (ch != stall.handle || point != stall.point) return;
    atomic_store(&stall.parked, 1);
    while (!atomic_load(&stall.release)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

/* A stalled claimer: one try_send or try_recv on `ch`, parked at the hook. */
struct stalled {
    pthread_t thread;
    dmxp_channel *ch;
    int send;
    dmxp_status status;
    uint64_t id;
    dmxp_meta meta;
};

static void *stalled_main(void *arg) {
    struct stalled *s = arg;
    if (s->send) {
        s->status = dmxp_try_send(s->ch, "stalled", 7, NULL, &s->id);
    } else {
        unsigned char buf[DMXP_MSG_INLINE];
        size_t len;
        s->status = dmxp_try_recv(s->ch, buf, sizeof buf, &s->meta, &len);
    }
    return NULL;
}

static void stall_start(struct stalled *s, dmxp_channel *ch, int send) {
    s->ch = ch;
    s->send = send;
    s->status = DMXP_OK;
    stall.handle = ch;
    stall.point = send ? DMXP_HOOK_AFTER_PAYLOAD : DMXP_HOOK_BEFORE_FREE;
    atomic_store(&stall.parked, 0);
    atomic_store(&stall.release, 0);
    CHECK(pthread_create(&s->thread, NULL, stalled_main, s) == 0);
    while (!atomic_load(&stall.parked)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static dmxp_status stall_finish(struct stalled *s) {
    atomic_store(&stall.release, 1);
    CHECK(pthread_join(s->thread, NULL) == 0);
    stall.handle = NULL;
    return s->status;
}

static uint64_t seq_of(const dmxp_channel *ch, uint64_t p) {
    return atomic_load(&ch->slots[p & ch->mask].sequence);
}

static void open_registered(uint32_t id, unsigned role, dmxp_channel *ch) {
    dmxp_error err;
    CHECK_OK(dmxp_channel_open(&seg, id, ch, &err));
    CHECK_OK(dmxp_channel_register(ch, role, &err));
}

static int64_t now_ns(void) { return (int64_t)dmxp_now_ns(); }

/* (1) Receive side: a live producer claims position 0 and stops; position 1 holds a message. A
 * consumer with a 100 ms unblock timeout gets DMXP_E_LOST for 0 and then the message; the
 * stalled producer's publish is revoked and leaves the slot alone; its record stays its own. */
static void recv_unblocks_a_stalled_producer(void) {
    dmxp_channel made, stalled_prod, prod, cons;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 1, 8, &made, &err));
    open_registered(1, DMXP_ROLE_PRODUCER, &stalled_prod);
    open_registered(1, DMXP_ROLE_PRODUCER, &prod);
    open_registered(1, DMXP_ROLE_CONSUMER, &cons);
    CHECK_EQ_U64(dmxp_channel_unblock_timeout(&cons), DMXP_UNBLOCK_TIMEOUT_NS);
    dmxp_channel_set_unblock_timeout(&cons, SHORT_UNBLOCK_NS);
    CHECK_EQ_U64(dmxp_channel_unblock_timeout(&cons), SHORT_UNBLOCK_NS);

    struct stalled s;
    stall_start(&s, &stalled_prod, 1);
    uint64_t id;
    CHECK_OK(dmxp_try_send(&prod, "behind", 6, NULL, &id));
    CHECK_EQ_U64(id, 1);

    unsigned char buf[DMXP_MSG_INLINE];
    dmxp_meta meta;
    size_t len;
    int64_t t0 = now_ns();
    CHECK_STATUS(dmxp_recv_timeout(&cons, buf, sizeof buf, &meta, &len, 5000 * MS),
                 DMXP_E_LOST);
    CHECK(now_ns() - t0 >= 100 * MS); /* not before the unblock timeout */
    CHECK_EQ_U64(meta.message_id, 0);
    CHECK_OK(dmxp_recv_timeout(&cons, buf, sizeof buf, &meta, &len, 5000 * MS));
    CHECK_EQ_U64(meta.message_id, 1);
    CHECK(len == 6 && memcmp(buf, "behind", 6) == 0);

    /* The holder was alive: its record was neither taken over nor freed. */
    CHECK_EQ_U64(atomic_load(&stalled_prod.send_peer->pid), (uint32_t)getpid());
    CHECK_EQ_U64(atomic_load(&stalled_prod.send_peer->intent_position), 0);

    uint64_t seq_before = seq_of(&cons, 0);
    CHECK_EQ_U64(seq_before, 8); /* the tombstone, received and freed */
    CHECK_STATUS(stall_finish(&s), DMXP_E_REVOKED);
    CHECK_EQ_U64(s.id, 0);
    CHECK_EQ_U64(seq_of(&cons, 0), seq_before); /* the late publish stored nothing */
    CHECK_EQ_U64(dmxp_channel_revoked(&stalled_prod), 1);
    CHECK_EQ_U64(atomic_load(&stalled_prod.send_peer->intent_count), 0); /* intent ended */

    /* The channel goes on, the stalled producer included. */
    CHECK_OK(dmxp_try_send(&stalled_prod, "again", 5, NULL, &id));
    CHECK_EQ_U64(id, 2);
    CHECK_OK(dmxp_recv_timeout(&cons, buf, sizeof buf, &meta, &len, 5000 * MS));
    CHECK(meta.message_id == 2 && len == 5 && memcmp(buf, "again", 5) == 0);
    CHECK_STATUS(dmxp_try_recv(&cons, buf, sizeof buf, &meta, &len), DMXP_E_EMPTY);
    dmxp_channel_close(&stalled_prod);
    dmxp_channel_close(&prod);
    dmxp_channel_close(&cons);
    dmxp_channel_close(&made);
}

/* (2) The same through the non-blocking receive, nothing queued behind the stuck position: the
 * watch of dmxp_try_recv unblocks it after the timeout. */
static void try_recv_unblocks_a_stalled_producer(void) {
    dmxp_channel made, stalled_prod, cons;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 2, 8, &made, &err));
    open_registered(2, DMXP_ROLE_PRODUCER, &stalled_prod);
    open_registered(2, DMXP_ROLE_CONSUMER, &cons);
    dmxp_channel_set_unblock_timeout(&cons, SHORT_UNBLOCK_NS);

    struct stalled s;
    stall_start(&s, &stalled_prod, 1);
    unsigned char buf[DMXP_MSG_INLINE];
    dmxp_meta meta;
    size_t len;
    dmxp_status got = DMXP_E_EMPTY;
    int64_t t0 = now_ns();
    while (got == DMXP_E_EMPTY && now_ns() - t0 < 5000 * MS) {
        got = dmxp_try_recv(&cons, buf, sizeof buf, &meta, &len);
        if (got == DMXP_E_EMPTY) {
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
    }
    CHECK_STATUS(got, DMXP_E_LOST);
    CHECK(now_ns() - t0 >= 100 * MS);
    CHECK_EQ_U64(meta.message_id, 0);
    CHECK_STATUS(stall_finish(&s), DMXP_E_REVOKED);
    CHECK_EQ_U64(seq_of(&cons, 0), 8);
    CHECK_STATUS(dmxp_try_recv(&cons, buf, sizeof buf, &meta, &len), DMXP_E_EMPTY);
    dmxp_channel_close(&stalled_prod);
    dmxp_channel_close(&cons);
    dmxp_channel_close(&made);
}

/* (2b) A pending head (a message queued behind it) with the default unblock timeout: one
 * dmxp_try_recv waits for it, tombstones it when the timeout comes (it does not give up with
 * DMXP_E_EMPTY at the end of its own pending wait of the same length), then gets the message. */
static void try_recv_pending_unblocks_with_the_default(void) {
    dmxp_channel made, stalled_prod, prod, cons;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 5, 8, &made, &err));
    open_registered(5, DMXP_ROLE_PRODUCER, &stalled_prod);
    open_registered(5, DMXP_ROLE_PRODUCER, &prod);
    open_registered(5, DMXP_ROLE_CONSUMER, &cons);
    CHECK_EQ_U64(dmxp_channel_unblock_timeout(&cons), DMXP_UNBLOCK_TIMEOUT_NS);

    struct stalled s;
    stall_start(&s, &stalled_prod, 1);
    uint64_t id;
    CHECK_OK(dmxp_try_send(&prod, "behind", 6, NULL, &id));
    unsigned char buf[DMXP_MSG_INLINE];
    dmxp_meta meta;
    size_t len;
    int64_t t0 = now_ns();
    CHECK_STATUS(dmxp_try_recv(&cons, buf, sizeof buf, &meta, &len), DMXP_E_LOST);
    CHECK(now_ns() - t0 >= (int64_t)DMXP_UNBLOCK_TIMEOUT_NS);
    CHECK_EQ_U64(meta.message_id, 0);
    CHECK_OK(dmxp_try_recv(&cons, buf, sizeof buf, &meta, &len));
    CHECK(meta.message_id == 1 && len == 6 && memcmp(buf, "behind", 6) == 0);
    CHECK_STATUS(stall_finish(&s), DMXP_E_REVOKED);
    CHECK_EQ_U64(seq_of(&cons, 0), 8);
    dmxp_channel_close(&stalled_prod);
    dmxp_channel_close(&prod);
    dmxp_channel_close(&cons);
    dmxp_channel_close(&made);
}

/* (3) Send side: the ring (capacity 4) is full and a live consumer has claimed position 0 and
 * stopped before freeing it. A producer with a 100 ms unblock timeout sends within its timeout
 * (the slot freed for it); the stalled consumer's free is revoked and the new message in the
 * slot is left alone. */
static void send_unblocks_a_stalled_consumer(void) {
    dmxp_channel prod, stalled_cons, cons;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 3, 4, &prod, &err));
    CHECK_OK(dmxp_channel_register(&prod, DMXP_ROLE_PRODUCER, &err));
    open_registered(3, DMXP_ROLE_CONSUMER, &stalled_cons);
    open_registered(3, DMXP_ROLE_CONSUMER, &cons);
    dmxp_channel_set_unblock_timeout(&prod, SHORT_UNBLOCK_NS);
    uint64_t id;
    for (uint64_t k = 0; k < 4; k++) {
        char text[2] = {(char)('a' + k), 0};
        CHECK_OK(dmxp_try_send(&prod, text, 1, NULL, &id));
        CHECK_EQ_U64(id, k);
    }

    struct stalled s;
    stall_start(&s, &stalled_cons, 0);
    CHECK_EQ_U64(seq_of(&prod, 0), 1); /* claimed, not freed: the ring stays full */
    int64_t t0 = now_ns();
    CHECK_OK(dmxp_send_timeout(&prod, "after", 5, NULL, &id, 5000 * MS));
    CHECK(now_ns() - t0 >= 100 * MS);
    CHECK_EQ_U64(id, 4);
    CHECK_EQ_U64(atomic_load(&stalled_cons.recv_peer->pid), (uint32_t)getpid());

    uint64_t seq_before = seq_of(&prod, 4);
    CHECK_EQ_U64(seq_before, 5); /* position 4 published in slot 0 */
    CHECK_STATUS(stall_finish(&s), DMXP_E_REVOKED);
    CHECK_EQ_U64(s.meta.message_id, 0);
    CHECK_EQ_U64(seq_of(&prod, 4), seq_before); /* the late free stored nothing */
    CHECK_EQ_U64(dmxp_channel_revoked(&stalled_cons), 1);

    unsigned char buf[DMXP_MSG_INLINE];
    dmxp_meta meta;
    size_t len;
    for (uint64_t k = 1; k < 4; k++) {
        CHECK_OK(dmxp_try_recv(&cons, buf, sizeof buf, &meta, &len));
        CHECK(meta.message_id == k && len == 1 && buf[0] == 'a' + k);
    }
    CHECK_OK(dmxp_try_recv(&cons, buf, sizeof buf, &meta, &len));
    CHECK(meta.message_id == 4 && len == 5 && memcmp(buf, "after", 5) == 0);
    CHECK_STATUS(dmxp_try_recv(&cons, buf, sizeof buf, &meta, &len), DMXP_E_EMPTY);
    dmxp_channel_close(&prod);
    dmxp_channel_close(&stalled_cons);
    dmxp_channel_close(&cons);
}

/* (4) Unblock disabled (0, then UINT64_MAX, each set over a short timeout): a receive waits out
 * its whole timeout with the position still claimed, and its repair passes back off (without
 * the backoff a 500 ms wait looks about 50 times). The producer then publishes, unrevoked. */
static void disabled_unblock_leaves_the_position_stuck(void) {
    dmxp_channel made, stalled_prod, prod, cons;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 4, 8, &made, &err));
    open_registered(4, DMXP_ROLE_PRODUCER, &stalled_prod);
    open_registered(4, DMXP_ROLE_PRODUCER, &prod);
    open_registered(4, DMXP_ROLE_CONSUMER, &cons);

    struct stalled s;
    stall_start(&s, &stalled_prod, 1);
    uint64_t id;
    CHECK_OK(dmxp_try_send(&prod, "behind", 6, NULL, &id));
    CHECK_EQ_U64(id, 1);

    unsigned char buf[DMXP_MSG_INLINE];
    dmxp_meta meta;
    size_t len;
    const uint64_t never[2] = {0, UINT64_MAX};
    for (int i = 0; i < 2; i++) {
        dmxp_channel_set_unblock_timeout(&cons, SHORT_UNBLOCK_NS);
        dmxp_channel_set_unblock_timeout(&cons, never[i]);
        uint64_t looks = dmxp_channel_stuck_looks(&cons);
        CHECK_STATUS(dmxp_recv_timeout(&cons, buf, sizeof buf, &meta, &len, 500 * MS),
                     DMXP_E_TIMEOUT);
        CHECK_EQ_U64(seq_of(&cons, 0), 0); /* still claimed, unpublished */
        CHECK_EQ_U64(dmxp_channel_head(&cons), 0);
        CHECK(dmxp_channel_stuck_looks(&cons) - looks <= 20);
    }

    CHECK_OK(stall_finish(&s));
    CHECK_EQ_U64(s.id, 0);
    CHECK_EQ_U64(dmxp_channel_revoked(&stalled_prod), 0);
    CHECK_OK(dmxp_recv_timeout(&cons, buf, sizeof buf, &meta, &len, 5000 * MS));
    CHECK(meta.message_id == 0 && len == 7 && memcmp(buf, "stalled", 7) == 0);
    CHECK_OK(dmxp_recv_timeout(&cons, buf, sizeof buf, &meta, &len, 5000 * MS));
    CHECK(meta.message_id == 1 && len == 6 && memcmp(buf, "behind", 6) == 0);
    dmxp_channel_close(&stalled_prod);
    dmxp_channel_close(&prod);
    dmxp_channel_close(&cons);
    dmxp_channel_close(&made);
}

int main(void) {
    void *mem = test_segment_memory(SEG_LEN);
    dmxp_error err;
    CHECK_OK(dmxp_segment_format_memory(&seg, mem, SEG_LEN, (uint32_t)getpid(), &err));
    recv_unblocks_a_stalled_producer();
    try_recv_unblocks_a_stalled_producer();
    try_recv_pending_unblocks_with_the_default();
    send_unblocks_a_stalled_consumer();
    disabled_unblock_leaves_the_position_stuck();
    free(mem);
    TEST_DONE("test_unblock");
}
