/* Revocation (PROTOCOL.md §11.7): a claim a peer repaired meanwhile (its owner wrongly judged
 * dead, or stopped past the unblock timeout) ends with DMXP_E_REVOKED, and the late owner
 * stores nothing more into the slot. The repair is played by this test, with the stores a
 * repairer makes, at the points of DMXP_TEST_HOOK: after a send wrote the payload, between its
 * metadata and its publishing CAS, and before a receive's freeing CAS. Single-threaded. */
/* Defined below; runs the armed repair at the hook points of dmxp.h (which must come first of
 * all headers, so the hook names no type of it). */
static void test_hook(int point, const void *ch, unsigned long long position);
#define DMXP_TEST_HOOK(point, ch, position) test_hook((point), (const void *)(ch), (position))

#include "check.h"

#define SEG_LEN (1u << 20)
#define TOMBSTONE_PID 4242u
#define NEXT_LAP_TEXT "next lap's message"

static dmxp_segment seg;

/* What the hook does, once, when `point` is reached for `position`. */
enum action { NONE, TOMBSTONE, TOMBSTONE_CONSUMED, REPAIR_FREE_NEXT_LAP };
static struct {
    int point;
    uint64_t position;
    enum action action;
    int fired;
} armed;

static void arm(int point, uint64_t position, enum action action) {
    armed.point = point;
    armed.position = position;
    armed.action = action;
    armed.fired = 0;
}

/* The repairer's LOST tombstone for position p of a producer judged dead (§11.6). */
static void store_tombstone(const dmxp_channel *ch, uint64_t p) {
    dmxp_slot *s = &ch->slots[p & ch->mask];
    atomic_store(&s->meta.message_id, p);
    atomic_store(&s->meta.timestamp_ns, 0);
    atomic_store(&s->meta.channel_id, ch->id);
    atomic_store(&s->meta.message_type, 0);
    atomic_store(&s->meta.sender_pid, TOMBSTONE_PID);
    atomic_store(&s->meta.sender_runtime, DMXP_RUNTIME_C);
    atomic_store(&s->meta.flags, (uint16_t)DMXP_FLAG_LOST);
    atomic_store(&s->meta.payload_len, 0);
    atomic_store(&s->meta.reserved, 0);
    atomic_store_explicit(&s->sequence, p + 1, memory_order_release);
}

/* The repairer frees position h of a consumer judged dead, and the producer of the next lap
 * (h + capacity) writes and publishes its message in the slot. */
static void store_free_and_next_lap(const dmxp_channel *ch, uint64_t h) {
    dmxp_slot *s = &ch->slots[h & ch->mask];
    uint64_t next = h + ch->capacity;
    atomic_store_explicit(&s->sequence, next, memory_order_release);
    unsigned char text[24] = NEXT_LAP_TEXT;
    for (size_t i = 0; i < 3; i++) {
        uint64_t w;
        memcpy(&w, text + 8 * i, 8);
        atomic_store(&s->payload[i], w);
    }
    atomic_store(&s->meta.message_id, next);
    atomic_store(&s->meta.flags, 0);
    atomic_store(&s->meta.payload_len, (uint32_t)strlen(NEXT_LAP_TEXT));
    atomic_store_explicit(&s->sequence, next + 1, memory_order_release);
}

static void test_hook(int point, const void *handle, unsigned long long position) {
    const dmxp_channel *ch = handle;
    if (armed.action == NONE || armed.fired || point != armed.point ||
        position != armed.position)
        return;
    armed.fired = 1;
    switch (armed.action) {
    case TOMBSTONE:
        store_tombstone(ch, position);
        break;
    case TOMBSTONE_CONSUMED: /* tombstoned, then a consumer received and freed it */
        store_tombstone(ch, position);
        atomic_store(&ch->slots[position & ch->mask].sequence, position + ch->capacity);
        break;
    case REPAIR_FREE_NEXT_LAP:
        store_free_and_next_lap(ch, position);
        break;
    case NONE:
        break;
    }
}

static uint64_t seq_of(const dmxp_channel *ch, uint64_t p) {
    return atomic_load(&ch->slots[p & ch->mask].sequence);
}

static void open_pair(uint32_t id, uint64_t cap, dmxp_channel *prod, dmxp_channel *cons) {
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, id, cap, prod, &err));
    CHECK_OK(dmxp_channel_register(prod, DMXP_ROLE_PRODUCER, &err));
    CHECK_OK(dmxp_channel_open(&seg, id, cons, &err));
    CHECK_OK(dmxp_channel_register(cons, DMXP_ROLE_CONSUMER, &err));
}

static void close_pair(dmxp_channel *prod, dmxp_channel *cons) {
    dmxp_channel_close(prod);
    dmxp_channel_close(cons);
}

/* (1) The publish path on a claimed position that the repair tombstoned first: REVOKED, the
 * tombstone's sequence and metadata untouched, and the consumer gets the LOST it stands for. */
static void send_after_tombstone(void) {
    dmxp_channel prod, cons;
    open_pair(1, 4, &prod, &cons);
    uint64_t p, n;
    CHECK_OK(dmxp__claim_send(&prod, 1, &p, &n));
    CHECK_EQ_U64(n, 1);
    store_tombstone(&prod, p); /* as the repairer would */
    CHECK_STATUS(dmxp__publish(&prod, p, "late", 4, 7, 0, 99), DMXP_E_REVOKED);
    CHECK_EQ_U64(seq_of(&prod, p), p + 1);
    CHECK_EQ_U64(atomic_load(&prod.slots[p].meta.sender_pid), TOMBSTONE_PID);
    CHECK_EQ_U64(atomic_load(&prod.slots[p].meta.flags), DMXP_FLAG_LOST);
    CHECK_EQ_U64(atomic_load(&prod.slots[p].meta.payload_len), 0);
    dmxp__intent_clear(prod.send_peer);

    /* The same through dmxp_try_send, the tombstone landing while the payload is copied. */
    arm(DMXP_HOOK_AFTER_PAYLOAD, 1, TOMBSTONE);
    uint64_t id = 77;
    CHECK_STATUS(dmxp_try_send(&prod, "late message", 12, NULL, &id), DMXP_E_REVOKED);
    CHECK(armed.fired);
    CHECK_EQ_U64(id, 1); /* the revoked message's id */
    CHECK_EQ_U64(seq_of(&prod, 1), 2);
    CHECK_EQ_U64(atomic_load(&prod.slots[1].meta.sender_pid), TOMBSTONE_PID);
    CHECK_EQ_U64(atomic_load(&prod.slots[1].meta.payload_len), 0); /* no metadata written */
    CHECK_EQ_U64(atomic_load(&prod.send_peer->intent_count), 0);   /* intent ended */
    CHECK_EQ_U64(dmxp_channel_revoked(&prod), 2);
    CHECK_EQ_U64(dmxp_channel_tail(&prod), 2);

    /* Both positions are received as the LOST tombstones they are. */
    unsigned char buf[DMXP_MSG_INLINE];
    dmxp_meta meta;
    size_t len;
    for (uint64_t k = 0; k < 2; k++) {
        CHECK_STATUS(dmxp_try_recv(&cons, buf, sizeof buf, &meta, &len), DMXP_E_LOST);
        CHECK_EQ_U64(meta.message_id, k);
        CHECK_EQ_U64(meta.sender_pid, TOMBSTONE_PID);
    }
    CHECK_STATUS(dmxp_try_recv(&cons, buf, sizeof buf, &meta, &len), DMXP_E_EMPTY);
    /* The channel goes on. */
    CHECK_OK(dmxp_try_send(&prod, "on", 2, NULL, &id));
    CHECK_EQ_U64(id, 2);
    CHECK_OK(dmxp_try_recv(&cons, buf, sizeof buf, &meta, &len));
    CHECK(len == 2 && memcmp(buf, "on", 2) == 0);
    close_pair(&prod, &cons);
}

/* (2) The repair lands between the metadata and the publish: the CAS from the claimed state
 * fails, and leaves the slot's sequence as the repair (and a consumer after it) left it. */
static void send_cas_revoked(void) {
    dmxp_channel prod, cons;
    open_pair(2, 4, &prod, &cons);
    arm(DMXP_HOOK_BEFORE_PUBLISH, 0, TOMBSTONE_CONSUMED);
    uint64_t id = 77;
    CHECK_STATUS(dmxp_try_send(&prod, "late", 4, NULL, &id), DMXP_E_REVOKED);
    CHECK(armed.fired);
    CHECK_EQ_U64(id, 0);
    CHECK_EQ_U64(seq_of(&prod, 0), 0 + 4); /* not overwritten with 1 */
    CHECK_EQ_U64(atomic_load(&prod.send_peer->intent_count), 0);
    /* A plain tombstone at that point: also REVOKED (the CAS, not a store, publishes). */
    arm(DMXP_HOOK_BEFORE_PUBLISH, 1, TOMBSTONE);
    CHECK_STATUS(dmxp_try_send(&prod, "late", 4, NULL, &id), DMXP_E_REVOKED);
    CHECK_EQ_U64(id, 1);
    CHECK_EQ_U64(seq_of(&prod, 1), 2);
    CHECK_EQ_U64(dmxp_channel_revoked(&prod), 2);
    close_pair(&prod, &cons);
}

/* (3) A consumer's claim that the repair freed, after which the next lap's producer published
 * in the slot: finishing the receive returns REVOKED, delivers nothing (the copy, which holds
 * the next lap's bytes, is discarded) and leaves the next lap's message in place. */
static void recv_after_repair(void) {
    dmxp_channel prod, cons;
    open_pair(3, 4, &prod, &cons);
    CHECK_OK(dmxp_try_send(&prod, "mine", 4, NULL, NULL));
    uint64_t h, n;
    uint32_t needed = 0;
    CHECK_OK(dmxp__claim_recv(&cons, 1, SIZE_MAX, &h, &n, &needed));
    CHECK_EQ_U64(h, 0);
    store_free_and_next_lap(&cons, h); /* the repair's free, then the next lap's publish */
    unsigned char buf[DMXP_MSG_INLINE];
    memset(buf, 0xAA, sizeof buf);
    dmxp_meta meta;
    size_t len = 99;
    CHECK_STATUS(dmxp__finish_recv(&cons, h, buf, sizeof buf, &meta, &len), DMXP_E_REVOKED);
    CHECK_EQ_U64(meta.message_id, h);
    CHECK_EQ_U64(meta.payload_len, 0);
    CHECK_EQ_U64(len, 99); /* not set: nothing delivered (dmxp_try_recv zeroes it first) */
    for (size_t i = 0; i < strlen(NEXT_LAP_TEXT); i++) CHECK_EQ_U64(buf[i], 0); /* discarded */
    CHECK_EQ_U64(buf[strlen(NEXT_LAP_TEXT)], 0xAA);
    CHECK_EQ_U64(seq_of(&cons, h), h + 4 + 1); /* the next lap's publish stays */
    CHECK_EQ_U64(atomic_load(&cons.recv_peer->intent_count), 0);

    /* The same through dmxp_try_recv, the repair landing before the freeing CAS. */
    CHECK_OK(dmxp_try_send(&prod, "mine too", 8, NULL, NULL));
    arm(DMXP_HOOK_BEFORE_FREE, 1, REPAIR_FREE_NEXT_LAP);
    memset(buf, 0xAA, sizeof buf);
    len = 99;
    CHECK_STATUS(dmxp_try_recv(&cons, buf, sizeof buf, &meta, &len), DMXP_E_REVOKED);
    CHECK(armed.fired);
    CHECK_EQ_U64(meta.message_id, 1);
    CHECK_EQ_U64(len, 0);
    for (size_t i = 0; i < 8; i++) CHECK_EQ_U64(buf[i], 0); /* "mine too" was discarded */
    CHECK_EQ_U64(seq_of(&cons, 1), 1 + 4 + 1);
    CHECK_EQ_U64(dmxp_channel_revoked(&cons), 2);
    CHECK_EQ_U64(atomic_load(&cons.recv_peer->intent_count), 0);
    close_pair(&prod, &cons);
}

static uint64_t delivered_ids[16];
static size_t delivered_n;
static void collect(void *ctx, const dmxp_meta *meta, const void *payload, size_t len) {
    (void)ctx;
    (void)payload;
    (void)len;
    if (delivered_n < 16) delivered_ids[delivered_n++] = meta->message_id;
}

/* (4) Batches: each position on its own. A send batch whose middle position is tombstoned
 * while its payload is written publishes the others and counts that one revoked; a receive
 * batch whose middle position is freed by a repair delivers the others only. */
static void batches(void) {
    dmxp_channel prod, cons;
    open_pair(4, 4, &prod, &cons);
    const void *datas[3] = {"zero", "one", "two"};
    size_t lens[3] = {4, 3, 3};
    arm(DMXP_HOOK_AFTER_PAYLOAD, 1, TOMBSTONE);
    dmxp_send_counts sc;
    CHECK_OK(dmxp_try_send_batch_counts(&prod, datas, lens, 3, NULL, &sc));
    CHECK(armed.fired);
    CHECK_EQ_U64(sc.claimed, 3);
    CHECK_EQ_U64(sc.published, 2);
    CHECK_EQ_U64(sc.revoked, 1);
    CHECK_EQ_U64(sc.first_id, 0);
    CHECK_EQ_U64(seq_of(&prod, 0), 1);
    CHECK_EQ_U64(seq_of(&prod, 1), 2);
    CHECK_EQ_U64(atomic_load(&prod.slots[1].meta.sender_pid), TOMBSTONE_PID);
    CHECK_EQ_U64(seq_of(&prod, 2), 3);
    CHECK_EQ_U64(atomic_load(&prod.send_peer->intent_count), 0);
    dmxp_recv_counts rc;
    delivered_n = 0;
    CHECK_OK(dmxp_try_recv_batch_counts(&cons, 8, collect, NULL, NULL, &rc));
    CHECK_EQ_U64(rc.delivered, 2);
    CHECK_EQ_U64(rc.lost, 1);
    CHECK_EQ_U64(rc.revoked, 0);
    CHECK(delivered_n == 2 && delivered_ids[0] == 0 && delivered_ids[1] == 2);

    /* The older batch send reports what it took, revoked ones included. */
    arm(DMXP_HOOK_BEFORE_PUBLISH, 4, TOMBSTONE);
    size_t sent = 0;
    uint64_t first = 0;
    CHECK_OK(dmxp_try_send_batch(&prod, datas, lens, 3, NULL, &sent, &first));
    CHECK(armed.fired);
    CHECK_EQ_U64(sent, 3);
    CHECK_EQ_U64(first, 3);
    CHECK_EQ_U64(dmxp_channel_revoked(&prod), 2);

    /* Receive batch over 3..5, the repair freeing 4 (and the next lap publishing there). */
    arm(DMXP_HOOK_BEFORE_FREE, 4, REPAIR_FREE_NEXT_LAP);
    delivered_n = 0;
    CHECK_OK(dmxp_try_recv_batch_counts(&cons, 8, collect, NULL, NULL, &rc));
    CHECK(armed.fired);
    CHECK_EQ_U64(rc.delivered, 2);
    CHECK_EQ_U64(rc.revoked, 1);
    CHECK_EQ_U64(rc.lost, 0);
    CHECK(delivered_n == 2 && delivered_ids[0] == 3 && delivered_ids[1] == 5);
    CHECK_EQ_U64(seq_of(&cons, 4), 4 + 4 + 1); /* the next lap's publish stays */
    CHECK_EQ_U64(seq_of(&cons, 3), 3 + 4);
    CHECK_EQ_U64(seq_of(&cons, 5), 5 + 4);
    CHECK_EQ_U64(atomic_load(&cons.recv_peer->intent_count), 0);
    CHECK_EQ_U64(dmxp_channel_revoked(&cons), 1);
    close_pair(&prod, &cons);

    /* The older batch receive counts a revoked position as dropped. */
    open_pair(5, 4, &prod, &cons);
    CHECK_OK(dmxp_try_send_batch_counts(&prod, datas, lens, 2, NULL, &sc));
    arm(DMXP_HOOK_BEFORE_FREE, 0, REPAIR_FREE_NEXT_LAP);
    size_t delivered = 0, dropped = 0;
    CHECK_OK(dmxp_try_recv_batch(&cons, 8, NULL, NULL, &delivered, &dropped));
    CHECK_EQ_U64(delivered, 1);
    CHECK_EQ_U64(dropped, 1);
    close_pair(&prod, &cons);
}

/* (5) Status plumbing. */
static void names(void) {
    CHECK(strcmp(dmxp_status_name(DMXP_E_REVOKED), "DMXP_E_REVOKED") == 0);
    CHECK(strstr(dmxp_strerror(DMXP_E_REVOKED), "revoked") != NULL);
}

int main(void) {
    void *mem = test_segment_memory(SEG_LEN);
    dmxp_error err;
    CHECK_OK(dmxp_segment_format_memory(&seg, mem, SEG_LEN, (uint32_t)getpid(), &err));
    send_after_tombstone();
    send_cas_revoked();
    recv_after_repair();
    batches();
    names();
    free(mem);
    TEST_DONE("test_revoke");
}
