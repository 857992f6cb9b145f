/* The hot paths' copies and fast paths (dmxp.h: dmxp__payload_store / dmxp__payload_load, the
 * word-wide meta stores and loads, dmxp__recv_fast, the slot pointers of the batches):
 *  - every length 0..960, through try_send/try_recv, send_timeout/recv_timeout and the batch
 *    calls, with exact bytes, from and into buffers of exactly that length at every alignment
 *    (ASan catches any read or write past them), and sentinels past a larger buffer's end;
 *  - the slot as another client reads it: each payload word, the zero padding of the last
 *    word, and each meta field read field by field at its own width;
 *  - a slot written field by field (as another client writes it) received through the
 *    word-wide meta loads;
 *  - what makes the receive fast path step aside (SKIP, LOST, a corrupt length, a buffer too
 *    small) and a peer that rewrites the slot between the fast path's peek and its claim
 *    (DMXP_HOOK_AFTER_PEEK);
 *  - a registered handle's intents around the fast paths, and the miss streak's `since`.
 * Single-threaded. */
static void test_hook(int point, const void *ch, unsigned long long position);
#define DMXP_TEST_HOOK(point, ch, position) test_hook((point), (const void *)(ch), (position))

#include "check.h"

#define SEG_LEN (4u << 20)

static dmxp_segment seg;

/* What the hook does at DMXP_HOOK_AFTER_PEEK (and what it saw at the other points). */
enum peek_action { PEEK_NONE, PEEK_SKIP, PEEK_CORRUPT, PEEK_GROW };
static struct {
    enum peek_action action;
    int fired;
    /* the registered handle's intent as the send / the receive saw it before its publish /
     * free: count and position */
    const dmxp_channel *watch;
    uint32_t send_count, recv_count;
    uint64_t send_position, recv_position;
} hook;

static void test_hook(int point, const void *chp, unsigned long long position) {
    const dmxp_channel *ch = (const dmxp_channel *)chp;
    if (hook.watch == ch && point == DMXP_HOOK_AFTER_PAYLOAD && ch->send_peer) {
        hook.send_count = atomic_load(&ch->send_peer->intent_count);
        hook.send_position = atomic_load(&ch->send_peer->intent_position);
    }
    if (hook.watch == ch && point == DMXP_HOOK_BEFORE_FREE && ch->recv_peer) {
        hook.recv_count = atomic_load(&ch->recv_peer->intent_count);
        hook.recv_position = atomic_load(&ch->recv_peer->intent_position);
    }
    if (point != DMXP_HOOK_AFTER_PEEK || hook.action == PEEK_NONE || hook.fired) return;
    dmxp_slot *s = &ch->slots[position & ch->mask];
    if (hook.action == PEEK_SKIP) {
        atomic_store(&s->meta.flags, (uint16_t)DMXP_FLAG_SKIP);
        atomic_store(&s->meta.payload_len, 0);
    } else if (hook.action == PEEK_CORRUPT) {
        atomic_store(&s->meta.payload_len, DMXP_MSG_INLINE + 1);
    } else if (hook.action == PEEK_GROW) {
        atomic_store(&s->meta.payload_len, DMXP_MSG_INLINE);
    }
    hook.fired = 1;
}

/* Byte i of message `seed`: every byte differs from its neighbours and from other seeds'. */
static unsigned char byte_of(unsigned seed, size_t i) {
    return (unsigned char)(seed * 131u + i * 7u + (i >> 8) * 13u + 1u);
}

static void fill(unsigned char *p, size_t len, unsigned seed) {
    for (size_t i = 0; i < len; i++) p[i] = byte_of(seed, i);
}

static void check_bytes(const unsigned char *p, size_t len, unsigned seed) {
    for (size_t i = 0; i < len; i++)
        if (p[i] != byte_of(seed, i)) {
            fprintf(stderr, "byte %zu of a %zu-byte message (seed %u): 0x%02x, expected 0x%02x\n",
                    i, len, seed, p[i], byte_of(seed, i));
            CHECK(0);
        }
}

/* A buffer of exactly len bytes (at least 1 allocated) at offset `align` of its allocation. */
static unsigned char *exact(size_t len, size_t align, unsigned char **base) {
    *base = (unsigned char *)malloc(len + align + 1);
    CHECK(*base != NULL);
    return *base + align;
}

/* The slot of message_id `id` as another client reads it: every meta field at its own width,
 * the payload words, and the zero padding of the last word. */
static void check_slot(const dmxp_channel *ch, uint64_t id, size_t len, unsigned seed,
                       uint32_t type, uint16_t flags) {
    dmxp_slot *s = &ch->slots[id & ch->mask];
    CHECK_EQ_U64(atomic_load(&s->sequence), id + 1);
    CHECK_EQ_U64(atomic_load(&s->meta.message_id), id);
    CHECK(atomic_load(&s->meta.timestamp_ns) != 0);
    CHECK_EQ_U64(atomic_load(&s->meta.channel_id), ch->id);
    CHECK_EQ_U64(atomic_load(&s->meta.message_type), type);
    CHECK_EQ_U64(atomic_load(&s->meta.sender_pid), (uint32_t)getpid());
    CHECK_EQ_U64(atomic_load(&s->meta.sender_runtime), DMXP_RUNTIME_C);
    CHECK_EQ_U64(atomic_load(&s->meta.flags), flags);
    CHECK_EQ_U64(atomic_load(&s->meta.payload_len), len);
    CHECK_EQ_U64(atomic_load(&s->meta.reserved), 0);
    CHECK_EQ_U64(atomic_load(&s->run_slots), 0);
    CHECK_EQ_U64(atomic_load(&s->run_index), 0);
    unsigned char words[DMXP_MSG_INLINE];
    size_t n = (len + 7) / 8;
    for (size_t i = 0; i < n; i++) {
        uint64_t w = atomic_load(&s->payload[i]);
        memcpy(words + 8 * i, &w, 8);
    }
    check_bytes(words, len, seed);
    for (size_t i = len; i < n * 8; i++) CHECK_EQ_U64(words[i], 0); /* zero-padded */
}

/* try_send + try_recv of every length 0..960 at alignments 0..7 of both buffers, on a ring
 * of 4 (so the slots wrap), each slot first dirtied by a 960-byte message (so a missing store
 * or padding shows). */
static void every_length_single(uint32_t id, int registered) {
    dmxp_channel ch;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, id, 4, &ch, &err));
    if (registered) CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER, &err));
    hook.watch = &ch;
    dmxp_send_opts opts = {7u, 0x1200u};
    unsigned char dirt[DMXP_MSG_INLINE];
    memset(dirt, 0xEE, sizeof dirt);
    unsigned char big[DMXP_MSG_INLINE + 16];
    for (size_t len = 0; len <= DMXP_MSG_INLINE; len++) {
        unsigned seed = (unsigned)len;
        size_t sa = len % 8, ra = (len / 8) % 8;
        unsigned char *sbase, *rbase;
        unsigned char *src = exact(len, sa, &sbase), *dst = exact(len, ra, &rbase);
        fill(src, len, seed);
        /* dirty the slot this message will take */
        uint64_t id0 = 0, mid = 0;
        CHECK_OK(dmxp_try_send(&ch, dirt, sizeof dirt, NULL, &id0));
        CHECK_OK(dmxp_try_recv(&ch, big, sizeof big, NULL, NULL));
        for (size_t k = 0; k < 3; k++) { /* 3 more laps of the ring of 4: the same slot */
            CHECK_OK(dmxp_try_send(&ch, dirt, sizeof dirt, NULL, NULL));
            CHECK_OK(dmxp_try_recv(&ch, big, sizeof big, NULL, NULL));
        }
        CHECK_OK(dmxp_try_send(&ch, src, len, &opts, &mid));
        CHECK_EQ_U64(mid & 3, id0 & 3);
        if (registered) {
            CHECK_EQ_U64(hook.send_count, 1);
            CHECK_EQ_U64(hook.send_position, mid);
            CHECK_EQ_U64(atomic_load(&ch.send_peer->intent_count), 0);
        }
        check_slot(&ch, mid, len, seed, opts.message_type, opts.flags);
        dmxp_meta meta;
        size_t got = 12345;
        CHECK_OK(dmxp_try_recv(&ch, dst, len, &meta, &got)); /* a buffer of exactly len */
        CHECK_EQ_U64(got, len);
        check_bytes(dst, len, seed);
        CHECK_EQ_U64(meta.message_id, mid);
        CHECK_EQ_U64(meta.channel_id, id);
        CHECK_EQ_U64(meta.message_type, 7);
        CHECK_EQ_U64(meta.sender_pid, (uint32_t)getpid());
        CHECK_EQ_U64(meta.sender_runtime, DMXP_RUNTIME_C);
        CHECK_EQ_U64(meta.flags, 0x1200u);
        CHECK_EQ_U64(meta.payload_len, len);
        CHECK(meta.timestamp_ns != 0);
        if (registered) {
            CHECK_EQ_U64(hook.recv_count, 1);
            CHECK_EQ_U64(hook.recv_position, mid);
            CHECK_EQ_U64(atomic_load(&ch.recv_peer->intent_count), 0);
        }
        /* into a larger buffer: nothing past len is written */
        CHECK_OK(dmxp_try_send(&ch, src, len, NULL, NULL));
        memset(big, 0xA5, sizeof big);
        CHECK_OK(dmxp_try_recv(&ch, big + sa, sizeof big - 8, NULL, &got));
        CHECK_EQ_U64(got, len);
        check_bytes(big + sa, len, seed);
        for (size_t i = 0; i < sa; i++) CHECK_EQ_U64(big[i], 0xA5);
        for (size_t i = sa + len; i < sizeof big; i++) CHECK_EQ_U64(big[i], 0xA5);
        /* send_timeout + recv_timeout (their own first attempts) */
        CHECK_OK(dmxp_send_timeout(&ch, src, len, &opts, &mid, 0));
        memset(dst, 0, len);
        CHECK_OK(dmxp_recv_timeout(&ch, dst, len, &meta, &got, 0));
        CHECK_EQ_U64(got, len);
        CHECK_EQ_U64(meta.message_id, mid);
        CHECK_EQ_U64(meta.message_type, 7);
        check_bytes(dst, len, seed);
        free(sbase);
        free(rbase);
    }
    CHECK_STATUS(dmxp_try_recv(&ch, big, sizeof big, NULL, NULL), DMXP_E_EMPTY);
    hook.watch = NULL;
    dmxp_channel_close(&ch);
}

static struct {
    unsigned seed0;
    size_t next;
    size_t len;
} batch_seen;

static void batch_deliver(void *ctx, const dmxp_meta *meta, const void *payload, size_t len) {
    (void)ctx;
    CHECK_EQ_U64(len, batch_seen.len);
    CHECK_EQ_U64(meta->payload_len, len);
    CHECK_EQ_U64(meta->message_type, 9);
    check_bytes((const unsigned char *)payload, len, batch_seen.seed0 + (unsigned)batch_seen.next);
    batch_seen.next++;
}

/* Batches of 3 of every length on a ring of 4: the batches start at every slot and wrap
 * around the band's end (the slot pointers of the batch loops). */
static void every_length_batch(uint32_t id) {
    dmxp_channel ch;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, id, 4, &ch, &err));
    dmxp_send_opts opts = {9u, 0};
    for (size_t len = 0; len <= DMXP_MSG_INLINE; len++) {
        unsigned char *bases[3];
        const void *datas[3];
        size_t lens[3];
        unsigned seed0 = (unsigned)len * 3u;
        for (int k = 0; k < 3; k++) {
            unsigned char *p = exact(len, (size_t)k, &bases[k]);
            fill(p, len, seed0 + (unsigned)k);
            datas[k] = p;
            lens[k] = len;
        }
        dmxp_send_counts sc;
        CHECK_OK(dmxp_try_send_batch_counts(&ch, datas, lens, 3, &opts, &sc));
        CHECK_EQ_U64(sc.claimed, 3);
        CHECK_EQ_U64(sc.published, 3);
        CHECK_EQ_U64(sc.revoked, 0);
        for (int k = 0; k < 3; k++)
            check_slot(&ch, sc.first_id + (uint64_t)k, len, seed0 + (unsigned)k, 9, 0);
        batch_seen.seed0 = seed0;
        batch_seen.next = 0;
        batch_seen.len = len;
        dmxp_recv_counts rc;
        CHECK_OK(dmxp_try_recv_batch_counts(&ch, 3, batch_deliver, NULL, NULL, &rc));
        CHECK_EQ_U64(rc.delivered, 3);
        CHECK_EQ_U64(batch_seen.next, 3);
        for (int k = 0; k < 3; k++) free(bases[k]);
    }
    dmxp_channel_close(&ch);
}

/* Claims the position at tail by hand (another client's producer). */
static uint64_t claim_tail(const dmxp_channel *ch) {
    uint64_t t = atomic_load(&ch->entry->tail);
    CHECK(atomic_compare_exchange_strong(&ch->entry->tail, &t, t + 1));
    CHECK_EQ_U64(atomic_load(&ch->slots[t & ch->mask].sequence), t);
    return t;
}

/* Another client's producer: every field at its own width, then the publish. */
static void foreign_publish(const dmxp_channel *ch, uint64_t t, const unsigned char *data,
                            uint32_t len, uint16_t flags) {
    dmxp_slot *s = &ch->slots[t & ch->mask];
    for (uint32_t i = 0; i < (len + 7) / 8 && i < DMXP_PAYLOAD_WORDS; i++) {
        uint64_t w = 0;
        memcpy(&w, data + 8 * i, len - 8 * i < 8 ? len - 8 * i : 8);
        atomic_store(&s->payload[i], w);
    }
    atomic_store(&s->meta.message_id, t);
    atomic_store(&s->meta.timestamp_ns, UINT64_C(0x0102030405060708));
    atomic_store(&s->meta.channel_id, ch->id);
    atomic_store(&s->meta.message_type, 0xA1B2C3D4u);
    atomic_store(&s->meta.sender_pid, 0x11223344u);
    atomic_store(&s->meta.sender_runtime, DMXP_RUNTIME_GO);
    atomic_store(&s->meta.flags, flags);
    atomic_store(&s->meta.payload_len, len);
    atomic_store(&s->meta.reserved, 0);
    atomic_store_explicit(&s->sequence, t + 1, memory_order_release);
}

static void foreign_slots_and_fallbacks(uint32_t id) {
    dmxp_channel ch;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, id, 8, &ch, &err));
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER, &err));
    unsigned char msg[DMXP_MSG_INLINE], buf[DMXP_MSG_INLINE];
    fill(msg, sizeof msg, 77);
    dmxp_meta meta;
    size_t got;

    /* A foreign message: every meta field comes out of the word-wide loads as written. */
    uint64_t t = claim_tail(&ch);
    foreign_publish(&ch, t, msg, 45, 0xAB00u);
    CHECK_OK(dmxp_try_recv(&ch, buf, sizeof buf, &meta, &got));
    CHECK_EQ_U64(got, 45);
    check_bytes(buf, 45, 77);
    CHECK_EQ_U64(meta.message_id, t);
    CHECK_EQ_U64(meta.timestamp_ns, UINT64_C(0x0102030405060708));
    CHECK_EQ_U64(meta.channel_id, id);
    CHECK_EQ_U64(meta.message_type, 0xA1B2C3D4u);
    CHECK_EQ_U64(meta.sender_pid, 0x11223344u);
    CHECK_EQ_U64(meta.sender_runtime, DMXP_RUNTIME_GO);
    CHECK_EQ_U64(meta.flags, 0xAB00u);
    CHECK_EQ_U64(meta.payload_len, 45);
    CHECK_EQ_U64(atomic_load(&ch.recv_peer->intent_count), 0);

    /* A SKIP marker at head is passed over (the fast path steps aside), the next delivered. */
    t = claim_tail(&ch);
    foreign_publish(&ch, t, msg, 0, DMXP_FLAG_SKIP);
    CHECK_OK(dmxp_try_send(&ch, msg, 100, NULL, NULL));
    CHECK_OK(dmxp_try_recv(&ch, buf, sizeof buf, &meta, &got));
    CHECK_EQ_U64(got, 100);
    CHECK_EQ_U64(meta.message_id, t + 1);
    check_bytes(buf, 100, 77);

    /* LOST at head: reported, consumed. */
    t = claim_tail(&ch);
    foreign_publish(&ch, t, msg, 0, DMXP_FLAG_LOST);
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, &meta, &got), DMXP_E_LOST);
    CHECK_EQ_U64(meta.message_id, t);

    /* A corrupt length at head: dropped, consumed, nothing copied. */
    t = claim_tail(&ch);
    foreign_publish(&ch, t, msg, 0, 0);
    atomic_store(&ch.slots[t & ch.mask].meta.payload_len, DMXP_MSG_INLINE + 1);
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, &meta, &got), DMXP_E_CORRUPT_MESSAGE);
    CHECK_EQ_U64(meta.message_id, t);
    CHECK_EQ_U64(meta.payload_len, DMXP_MSG_INLINE + 1);
    CHECK_EQ_U64(got, 0);

    /* A buffer too small: nothing consumed, the size needed said; then received whole. */
    uint64_t mid;
    CHECK_OK(dmxp_try_send(&ch, msg, 65, NULL, &mid));
    CHECK_STATUS(dmxp_try_recv(&ch, buf, 64, &meta, &got), DMXP_E_BUFFER_TOO_SMALL);
    CHECK_EQ_U64(meta.payload_len, 65);
    CHECK_EQ_U64(atomic_load(&ch.entry->head), mid);
    CHECK_STATUS(dmxp_recv_timeout(&ch, buf, 64, &meta, &got, 0), DMXP_E_BUFFER_TOO_SMALL);
    CHECK_OK(dmxp_try_recv(&ch, buf, 65, &meta, &got));
    CHECK_EQ_U64(got, 65);
    CHECK_EQ_U64(meta.message_id, mid);
    check_bytes(buf, 65, 77);

    /* A NULL buffer with a capacity is refused before anything is claimed. */
    CHECK_OK(dmxp_try_send(&ch, msg, 8, NULL, &mid));
    CHECK_STATUS(dmxp_try_recv(&ch, NULL, 8, &meta, &got), DMXP_E_INVALID_ARGUMENT);
    CHECK_STATUS(dmxp_recv_timeout(&ch, NULL, 8, &meta, &got, 0), DMXP_E_INVALID_ARGUMENT);
    CHECK_OK(dmxp_try_recv(&ch, buf, 8, NULL, NULL)); /* meta and len optional */
    check_bytes(buf, 8, 77);

    /* A peer rewrites the slot between the fast path's peek and its claim: what is delivered
     * is decided on the values read after the claim. SKIP: passed over, the next message
     * delivered by the same call. */
    CHECK_OK(dmxp_try_send(&ch, msg, 30, NULL, &mid));
    CHECK_OK(dmxp_try_send(&ch, msg, 31, NULL, NULL));
    hook.action = PEEK_SKIP;
    hook.fired = 0;
    CHECK_OK(dmxp_try_recv(&ch, buf, sizeof buf, &meta, &got));
    CHECK(hook.fired);
    CHECK_EQ_U64(meta.message_id, mid + 1);
    CHECK_EQ_U64(got, 31);
    check_bytes(buf, 31, 77);
    /* A length over 960: dropped as corrupt. */
    CHECK_OK(dmxp_try_send(&ch, msg, 30, NULL, &mid));
    hook.action = PEEK_CORRUPT;
    hook.fired = 0;
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, &meta, &got), DMXP_E_CORRUPT_MESSAGE);
    CHECK(hook.fired);
    CHECK_EQ_U64(meta.message_id, mid);
    CHECK_EQ_U64(got, 0);
    /* A length that grew past the buffer after the peek: dropped as corrupt, nothing written
     * past the buffer (ASan). */
    CHECK_OK(dmxp_try_send(&ch, msg, 30, NULL, &mid));
    hook.action = PEEK_GROW;
    hook.fired = 0;
    unsigned char *base, *small = exact(30, 0, &base);
    CHECK_STATUS(dmxp_try_recv(&ch, small, 30, &meta, &got), DMXP_E_CORRUPT_MESSAGE);
    CHECK(hook.fired);
    CHECK_EQ_U64(meta.message_id, mid);
    free(base);
    hook.action = PEEK_NONE;
    CHECK_EQ_U64(atomic_load(&ch.recv_peer->intent_count), 0);
    CHECK_EQ_U64(atomic_load(&ch.send_peer->intent_count), 0);
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, NULL, NULL), DMXP_E_EMPTY);
    dmxp_channel_close(&ch);
}

/* The miss streak (dmxp__hit reads only `misses`): a streak's first miss clears a `since`
 * left behind, and a hit that ends a streak clears both. */
static void miss_streak(uint32_t id) {
    dmxp_channel ch;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, id, 4, &ch, &err));
    unsigned char buf[16];
    atomic_store(&ch.recv_watch.since, 12345);
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, NULL, NULL), DMXP_E_EMPTY);
    CHECK_EQ_U64(atomic_load(&ch.recv_watch.misses), 1);
    CHECK_EQ_U64(atomic_load(&ch.recv_watch.since), 0);
    atomic_store(&ch.recv_watch.since, 12345);
    CHECK_OK(dmxp_try_send(&ch, "x", 1, NULL, NULL));
    CHECK_OK(dmxp_try_recv(&ch, buf, sizeof buf, NULL, NULL));
    CHECK_EQ_U64(atomic_load(&ch.recv_watch.misses), 0);
    CHECK_EQ_U64(atomic_load(&ch.recv_watch.since), 0);
    /* A full ring: the send side's streak likewise. */
    for (int i = 0; i < 4; i++) CHECK_OK(dmxp_try_send(&ch, "y", 1, NULL, NULL));
    atomic_store(&ch.send_watch.since, 999);
    CHECK_STATUS(dmxp_try_send(&ch, "z", 1, NULL, NULL), DMXP_E_FULL);
    CHECK_EQ_U64(atomic_load(&ch.send_watch.misses), 1);
    CHECK_EQ_U64(atomic_load(&ch.send_watch.since), 0);
    CHECK_OK(dmxp_try_recv(&ch, buf, sizeof buf, NULL, NULL));
    CHECK_OK(dmxp_try_send(&ch, "z", 1, NULL, NULL));
    CHECK_EQ_U64(atomic_load(&ch.send_watch.misses), 0);
    dmxp_channel_close(&ch);
}

int main(void) {
    void *mem = test_segment_memory(SEG_LEN);
    dmxp_error err;
    CHECK_OK(dmxp_segment_format_memory(&seg, mem, SEG_LEN, (uint32_t)getpid(), &err));
    every_length_single(0, 0);
    every_length_single(1, 1);
    every_length_batch(2);
    foreign_slots_and_fallbacks(3);
    miss_streak(4);
    free(mem);
    TEST_DONE("test_copy");
}
