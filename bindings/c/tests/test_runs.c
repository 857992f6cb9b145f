/* Messages longer than one slot: runs (PROTOCOL.md §12). Creation with a max message size and
 * its refusal when the ring cannot hold it; open checks #10/#11 (unknown entry flags, a bad
 * max_message_size); the opt-in refusal of a channel with RUNS (dmxp_channel_require_single_slot:
 * DMXP_E_RUNS_NOT_SUPPORTED naming the channel, single-slot channels pass, the flag as cached at
 * open); round trips at 961, 1920, 1921, 64 KiB and the limit over several laps
 * of a small ring, the slot fields of a run as sent; single-slot and run messages mixed, in
 * order, through single and batch receives (a batch stops at a run and delivers a run alone);
 * TOO_LARGE sends nothing, BUFFER_TOO_SMALL consumes nothing, FULL until a run's slots are all
 * free (and a blocking send that waits for them); corrupt runs (run_slots past the ring, a
 * payload_len that disagrees with run_slots, continuations with a wrong message_id, run_index
 * or payload_len, a continuation unpublished under a published start) each counted once as
 * corrupt with the channel flowing on; an orphan continuation passed over; a receive at a run
 * whose continuations are published and whose first slot is not yet reports PENDING and
 * delivers it once published, never EMPTY; intents with intent_flags; the repair of a dead
 * producer's run (a forked child that claims a run, publishes a continuation and _exit()s):
 * SKIP markers on the stuck continuations, one LOST on the start, found by a repair pass or
 * by a blocking receive on its own; a dead consumer's run freed; and 2 producer threads x 2
 * consumer threads moving runs of random sizes 1 B .. 64 KiB exactly once, in per-producer
 * order, with checksums.
 *
 *   test_runs            everything (built with ASan+UBSan)
 *   test_runs stress N   only the threaded test, N messages per producer (the TSan build) */
static void test_hook(int point, const void *ch, unsigned long long position);
#define DMXP_TEST_HOOK(point, ch, position) test_hook((point), (const void *)(ch), (position))

#include "util.h"
#include "../examples/dmxp_pattern.h"

#include <pthread.h>
#include <sys/mman.h>

#define SEG_LEN (32u << 20)
#define MS INT64_C(1000000)

static dmxp_segment seg;

/* --- the hook: a sender that stops (pending) or dies (repair) at one position ------------ */

static _Atomic int hook_die_armed;        /* in a forked child: _exit at die_at */
static _Atomic uint64_t hook_die_at;
static _Atomic int hook_stop_armed;       /* a sender thread waits at stop_at until released */
static _Atomic uint64_t hook_stop_at;
static _Atomic int hook_stopped;          /* it is waiting there */
static _Atomic int hook_release;

static void test_hook(int point, const void *ch, unsigned long long position) {
    (void)ch;
    if (point != DMXP_HOOK_AFTER_PAYLOAD) return;
    if (atomic_load(&hook_die_armed) && position == atomic_load(&hook_die_at)) _exit(0);
    if (atomic_load(&hook_stop_armed) && position == atomic_load(&hook_stop_at)) {
        atomic_store(&hook_stop_armed, 0);
        atomic_store(&hook_stopped, 1);
        while (!atomic_load(&hook_release)) dmxp__sleep_ns(MS);
    }
}

/* --- payloads ------------------------------------------------------------------------------ */

static unsigned char fill_byte(uint64_t seed, size_t k) {
    uint64_t x = (seed + 1) * UINT64_C(0x9E3779B97F4A7C15) + k * UINT64_C(0x2545F4914F6CDD1D);
    return (unsigned char)(x >> 56);
}

static unsigned char *make_payload(size_t len, uint64_t seed) {
    unsigned char *p = malloc(len ? len : 1);
    CHECK(p != NULL);
    for (size_t k = 0; k < len; k++) p[k] = fill_byte(seed, k);
    return p;
}

static void check_payload(const unsigned char *p, size_t len, uint64_t seed) {
    for (size_t k = 0; k < len; k++)
        if (p[k] != fill_byte(seed, k)) {
            fprintf(stderr, "payload byte %zu of %zu differs (seed %llu)\n", k, len,
                    (unsigned long long)seed);
            exit(1);
        }
}

static void send_payload(const dmxp_channel *ch, size_t len, uint64_t seed, uint64_t *id) {
    unsigned char *p = make_payload(len, seed);
    CHECK_OK(dmxp_try_send(ch, p, len, NULL, id));
    free(p);
}

/* Receives one message, which must be (len, seed) sent at position `id`. */
static void recv_payload(const dmxp_channel *ch, size_t len, uint64_t seed, uint64_t id) {
    size_t cap = len + 16;
    unsigned char *buf = malloc(cap);
    CHECK(buf != NULL);
    dmxp_meta meta;
    size_t got = 0;
    CHECK_OK(dmxp_try_recv(ch, buf, cap, &meta, &got));
    CHECK_EQ_U64(got, len);
    CHECK_EQ_U64(meta.payload_len, len);
    CHECK_EQ_U64(meta.message_id, id);
    CHECK_EQ_U64(meta.flags & DMXP_FLAG_RUN, len > DMXP_MSG_INLINE ? DMXP_FLAG_RUN : 0);
    check_payload(buf, len, seed);
    free(buf);
}

static void expect_empty(const dmxp_channel *ch) {
    unsigned char buf[16];
    CHECK_STATUS(dmxp_try_recv(ch, buf, sizeof buf, NULL, NULL), DMXP_E_EMPTY);
}

static dmxp_channel make_runs(uint32_t id, uint64_t capacity, uint64_t limit) {
    dmxp_channel ch;
    dmxp_error err;
    dmxp_channel_opts opts = {.max_message_size = limit};
    CHECK_OK(dmxp_channel_create_ex(&seg, id, capacity, &opts, &ch, &err));
    return ch;
}

static uint64_t seq_of(const dmxp_channel *ch, uint64_t p) {
    return atomic_load(&ch->slots[p & ch->mask].sequence);
}

/* --- (1) creation and accessors -------------------------------------------------------------- */

static void creation(void) {
    dmxp_channel ch, other;
    dmxp_error err;
    /* 0 and <= 960: a channel of single-slot messages, entry fields 0. */
    dmxp_channel_opts small = {.max_message_size = 960};
    CHECK_OK(dmxp_channel_create_ex(&seg, 1, 8, &small, &ch, &err));
    CHECK_EQ_U64(dmxp_channel_flags(&ch), 0);
    CHECK_EQ_U64(dmxp_channel_max_message_size(&ch), DMXP_MSG_INLINE);
    CHECK_EQ_U64(dmxp_channel_capacity(&ch), 8);
    CHECK_EQ_U64(atomic_load(&ch.entry->flags), 0);
    CHECK_EQ_U64(atomic_load(&ch.entry->max_message_size), 0);
    CHECK_OK(dmxp_channel_create(&seg, 2, 4, &ch, &err));
    CHECK_EQ_U64(dmxp_channel_max_message_size(&ch), DMXP_MSG_INLINE);
    /* A limit the ring cannot hold: refused, nothing created. */
    dmxp_channel_opts big = {.max_message_size = 8 * 960 + 1};
    CHECK_STATUS(dmxp_channel_create_ex(&seg, 3, 8, &big, &ch, &err),
                 DMXP_E_INVALID_MAX_MESSAGE_SIZE);
    CHECK_EQ_U64(err.found, 8 * 960 + 1);
    CHECK_EQ_U64(err.value2, 8);
    CHECK_EQ_U64(err.value3, 8 * 960);
    char text[256];
    dmxp_error_format(&err, text, sizeof text);
    CHECK(strstr(text, "7681") != NULL && strstr(text, "7680") != NULL);
    CHECK_STATUS(dmxp_channel_open(&seg, 3, &ch, &err), DMXP_E_NOT_FOUND);
    dmxp_channel_opts huge = {.max_message_size = UINT64_C(1) << 32};
    CHECK_STATUS(dmxp_channel_create_ex(&seg, 3, UINT64_C(1) << 23, &huge, &ch, &err),
                 DMXP_E_INVALID_MAX_MESSAGE_SIZE); /* below 2^32 whatever the capacity */
    /* The most the ring holds: accepted; the entry says so, and so does every handle. */
    dmxp_channel_opts most = {.max_message_size = 8 * 960};
    CHECK_OK(dmxp_channel_create_ex(&seg, 3, 8, &most, &ch, &err));
    CHECK_EQ_U64(atomic_load(&ch.entry->flags), DMXP_CHANNEL_RUNS);
    CHECK_EQ_U64(atomic_load(&ch.entry->max_message_size), 8 * 960);
    CHECK_EQ_U64(dmxp_channel_flags(&ch), DMXP_CHANNEL_RUNS);
    CHECK_EQ_U64(dmxp_channel_max_message_size(&ch), 8 * 960);
    CHECK_OK(dmxp_channel_open(&seg, 3, &other, &err));
    CHECK_EQ_U64(dmxp_channel_max_message_size(&other), 8 * 960);
    /* An existing channel keeps its limit (and a strict create reports it exists). */
    dmxp_channel_opts less = {.max_message_size = 2000};
    int created = 1;
    CHECK_OK(dmxp_channel_open_or_create_ex(&seg, 3, 16, &less, 0, &other, &created, &err));
    CHECK(!created);
    CHECK_EQ_U64(dmxp_channel_max_message_size(&other), 8 * 960);
    CHECK_EQ_U64(dmxp_channel_capacity(&other), 8);
    CHECK_STATUS(dmxp_channel_create_ex(&seg, 3, 8, &less, &other, &err), DMXP_E_CHANNEL_EXISTS);
    CHECK_OK(dmxp_segment_validate_all(&seg, &err));
    /* dmxp_check_message_size names length and limit. */
    CHECK_OK(dmxp_check_message_size(&ch, 8 * 960, &err));
    CHECK_STATUS(dmxp_check_message_size(&ch, 8 * 960 + 1, &err), DMXP_E_TOO_LARGE);
    CHECK_EQ_U64(err.found, 8 * 960 + 1);
    CHECK_EQ_U64(err.value2, 8 * 960);
    dmxp_error_format(&err, text, sizeof text);
    CHECK(strstr(text, "7681 bytes") != NULL && strstr(text, "7680 bytes") != NULL);
}

/* --- (2) entry checks #10 and #11 at open ---------------------------------------------------- */

static void expect_refused(uint32_t id, dmxp_status want, uint64_t found) {
    dmxp_channel ch;
    dmxp_error err;
    CHECK_STATUS(dmxp_channel_open(&seg, id, &ch, &err), want);
    CHECK_EQ_U64(err.channel, id);
    CHECK_EQ_U64(err.found, found);
    CHECK(strcmp(err.field, want == DMXP_E_UNKNOWN_CHANNEL_FLAGS ? "flags"
                                                                  : "max_message_size") == 0);
    char text[256];
    CHECK(dmxp_error_format(&err, text, sizeof text) > 0);
    CHECK(strstr(text, want == DMXP_E_UNKNOWN_CHANNEL_FLAGS ? "flags" : "max_message_size") !=
          NULL);
    CHECK_STATUS(dmxp_segment_validate_all(&seg, &err), want);
}

static void open_checks(void) {
    dmxp_channel ch = make_runs(10, 4, 3000), plain;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 11, 4, &plain, &err));
    dmxp_channel_entry *e = ch.entry, *p = plain.entry;
    atomic_store(&e->flags, DMXP_CHANNEL_RUNS | 0x4u);
    expect_refused(10, DMXP_E_UNKNOWN_CHANNEL_FLAGS, 0x5);
    atomic_store(&e->flags, 0x80000000u);
    expect_refused(10, DMXP_E_UNKNOWN_CHANNEL_FLAGS, 0x80000000u);
    atomic_store(&e->flags, DMXP_CHANNEL_RUNS);
    atomic_store(&e->max_message_size, 960);
    expect_refused(10, DMXP_E_MAX_MESSAGE_SIZE_OUT_OF_RANGE, 960);
    atomic_store(&e->max_message_size, 4 * 960 + 1);
    expect_refused(10, DMXP_E_MAX_MESSAGE_SIZE_OUT_OF_RANGE, 4 * 960 + 1);
    atomic_store(&e->max_message_size, 0);
    expect_refused(10, DMXP_E_MAX_MESSAGE_SIZE_OUT_OF_RANGE, 0);
    atomic_store(&e->max_message_size, 4 * 960);
    CHECK_OK(dmxp_channel_open(&seg, 10, &ch, &err));
    CHECK_EQ_U64(dmxp_channel_max_message_size(&ch), 4 * 960);
    atomic_store(&e->max_message_size, 3000);
    /* Without RUNS the field must be 0. */
    atomic_store(&p->max_message_size, 2000);
    expect_refused(11, DMXP_E_MAX_MESSAGE_SIZE_OUT_OF_RANGE, 2000);
    atomic_store(&p->max_message_size, 0);
    CHECK_OK(dmxp_channel_open(&seg, 11, &plain, &err));
    CHECK_OK(dmxp_segment_validate_all(&seg, &err));
    /* The limit is cached at open: a peer that rewrites the field later changes nothing. */
    CHECK_OK(dmxp_channel_open(&seg, 10, &ch, &err));
    atomic_store(&e->max_message_size, 4 * 960);
    CHECK_STATUS(dmxp_try_send(&ch, NULL, 0, NULL, NULL), DMXP_OK);
    unsigned char *big = make_payload(3001, 1);
    CHECK_STATUS(dmxp_try_send(&ch, big, 3001, NULL, NULL), DMXP_E_TOO_LARGE);
    free(big);
    atomic_store(&e->max_message_size, 3000);
    unsigned char buf[8];
    size_t len = 9;
    CHECK_OK(dmxp_try_recv(&ch, buf, sizeof buf, NULL, &len));
    CHECK_EQ_U64(len, 0);
}

/* --- (2b) the opt-in refusal of runs: dmxp_channel_require_single_slot (§12.1) ----------- */

static void expect_no_runs_refusal(const dmxp_channel *ch, uint32_t id, uint64_t limit) {
    dmxp_error err;
    memset(&err, 0, sizeof err);
    CHECK_STATUS(dmxp_channel_require_single_slot(ch, &err), DMXP_E_RUNS_NOT_SUPPORTED);
    CHECK_EQ_U64(err.status, DMXP_E_RUNS_NOT_SUPPORTED);
    CHECK_EQ_U64(err.channel, id);
    CHECK(err.field != NULL && strcmp(err.field, "flags") == 0);
    CHECK_EQ_U64(err.found, limit);
    CHECK_EQ_U64(err.value2, DMXP_CHANNEL_RUNS);
    char text[256], want[32];
    CHECK(dmxp_error_format(&err, text, sizeof text) > 0);
    snprintf(want, sizeof want, "channel %u: ", (unsigned)id);
    CHECK(strstr(text, want) == text);
    CHECK(strstr(text, "longer than 960 bytes") != NULL);
    /* And without an error record. */
    CHECK_STATUS(dmxp_channel_require_single_slot(ch, NULL), DMXP_E_RUNS_NOT_SUPPORTED);
}

static void single_slot_only(void) {
    dmxp_channel ch, plain, again;
    dmxp_error err;
    CHECK((int)DMXP_E_RUNS_NOT_SUPPORTED == -52);
    CHECK(strcmp(dmxp_status_name(DMXP_E_RUNS_NOT_SUPPORTED), "DMXP_E_RUNS_NOT_SUPPORTED") == 0);
    CHECK(strcmp(dmxp_strerror(DMXP_E_RUNS_NOT_SUPPORTED), "unknown status") != 0);
    CHECK(strstr(dmxp_strerror(DMXP_E_RUNS_NOT_SUPPORTED), "960") != NULL);
    /* A channel created with a limit above 960 is refused, by the handle that created it and
     * by one that opens it later (open_or_create of an existing one included). */
    ch = make_runs(50, 8, 961);
    expect_no_runs_refusal(&ch, 50, 961);
    CHECK_OK(dmxp_channel_open(&seg, 50, &again, &err));
    expect_no_runs_refusal(&again, 50, 961);
    CHECK_OK(dmxp_channel_open_or_create(&seg, 50, 8, 0, &again, NULL, &err));
    expect_no_runs_refusal(&again, 50, 961);
    ch = make_runs(51, 16, 16 * 960);
    expect_no_runs_refusal(&ch, 51, 16 * 960);
    /* The refusal changes nothing: the handle still sends and receives. */
    send_payload(&ch, 24, 7, NULL);
    unsigned char buf[64];
    size_t len = 0;
    CHECK_OK(dmxp_try_recv(&ch, buf, sizeof buf, NULL, &len));
    CHECK_EQ_U64(len, 24);
    check_payload(buf, 24, 7);
    CHECK_STATUS(dmxp_channel_require_single_slot(NULL, &err), DMXP_E_INVALID_ARGUMENT);
    /* Single-slot channels pass: the default creation, a limit of 960, and 0. */
    dmxp_channel_opts inline_limit = {.max_message_size = 960}, zero = {.max_message_size = 0};
    CHECK_OK(dmxp_channel_create(&seg, 52, 4, &plain, &err));
    err.status = DMXP_E_BUSY; /* a success leaves err alone */
    CHECK_OK(dmxp_channel_require_single_slot(&plain, &err));
    CHECK_EQ_U64(err.status, DMXP_E_BUSY);
    CHECK_OK(dmxp_channel_require_single_slot(&plain, NULL));
    CHECK_OK(dmxp_channel_create_ex(&seg, 53, 4, &inline_limit, &plain, &err));
    CHECK_OK(dmxp_channel_require_single_slot(&plain, &err));
    CHECK_OK(dmxp_channel_create_ex(&seg, 54, 4, &zero, &plain, &err));
    CHECK_OK(dmxp_channel_require_single_slot(&plain, &err));
    CHECK_OK(dmxp_channel_open(&seg, 52, &plain, &err));
    CHECK_OK(dmxp_channel_require_single_slot(&plain, &err));
    /* The flag as cached at open: a peer rewriting the entry afterwards changes neither
     * answer (the entry is restored before anything validates it again). */
    dmxp_channel_entry *pe = plain.entry, *re = again.entry;
    atomic_store(&pe->flags, DMXP_CHANNEL_RUNS);
    atomic_store(&pe->max_message_size, 4 * 960);
    atomic_store(&re->flags, 0);
    atomic_store(&re->max_message_size, 0);
    CHECK_OK(dmxp_channel_require_single_slot(&plain, &err));
    expect_no_runs_refusal(&again, 50, 961);
    /* ... and a handle opened after the rewrite sees it. */
    CHECK_OK(dmxp_channel_open(&seg, 52, &ch, &err));
    expect_no_runs_refusal(&ch, 52, 4 * 960);
    CHECK_OK(dmxp_channel_open(&seg, 50, &ch, &err));
    CHECK_OK(dmxp_channel_require_single_slot(&ch, &err));
    atomic_store(&pe->flags, 0);
    atomic_store(&pe->max_message_size, 0);
    atomic_store(&re->flags, DMXP_CHANNEL_RUNS);
    atomic_store(&re->max_message_size, 961);
    CHECK_OK(dmxp_segment_validate_all(&seg, &err));
}

/* --- (3) round trips over several laps ------------------------------------------------------- */

static void slot_fields(const dmxp_channel *ch, uint64_t t, size_t len) {
    uint64_t k = (len + 959) / 960;
    for (uint64_t i = 0; i < k; i++) {
        dmxp_slot *s = &ch->slots[(t + i) & ch->mask];
        CHECK_EQ_U64(atomic_load(&s->sequence), t + i + 1);
        CHECK_EQ_U64(atomic_load(&s->meta.message_id), t);
        CHECK_EQ_U64(atomic_load(&s->meta.payload_len), len);
        CHECK_EQ_U64(atomic_load(&s->meta.channel_id), ch->id);
        CHECK_EQ_U64(atomic_load(&s->meta.sender_runtime), DMXP_RUNTIME_C);
        CHECK_EQ_U64(atomic_load(&s->meta.flags),
                     (i == 0 ? DMXP_FLAG_RUN : DMXP_FLAG_RUN_CONT) | 0x4200u);
        CHECK_EQ_U64(atomic_load(&s->meta.message_type), 77);
        CHECK_EQ_U64(atomic_load(&s->run_slots), k);
        CHECK_EQ_U64(atomic_load(&s->run_index), i);
        CHECK_EQ_U64(atomic_load(&s->zero0), 0);
    }
}

static void round_trips(void) {
    dmxp_channel ch = make_runs(20, 128, 128 * 960);
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER, NULL));
    const size_t sizes[] = {961, 1920, 1921, 65536, 128 * 960, 1, 960};
    uint64_t expect_id = 0;
    for (int lap = 0; lap < 4; lap++) {
        for (size_t j = 0; j < sizeof sizes / sizeof *sizes; j++) {
            size_t len = sizes[j];
            uint64_t seed = (uint64_t)lap * 100 + j, id;
            unsigned char *p = make_payload(len, seed);
            dmxp_send_opts opts = {.message_type = 77, .flags = 0x4200};
            if (lap % 2 == 0)
                CHECK_OK(dmxp_try_send(&ch, p, len, &opts, &id));
            else
                CHECK_OK(dmxp_send_timeout(&ch, p, len, &opts, &id, 1000 * MS));
            free(p);
            CHECK_EQ_U64(id, expect_id);
            CHECK_EQ_U64(dmxp_channel_tail(&ch), expect_id + (len + 959) / 960);
            if (len > 960) slot_fields(&ch, id, len);
            /* The intents were cleared with their flags. */
            CHECK_EQ_U64(atomic_load(&ch.send_peer->intent_count), 0);
            CHECK_EQ_U64(atomic_load(&ch.send_peer->intent_flags), 0);
            unsigned char *buf = malloc(len);
            dmxp_meta meta;
            size_t got = 0;
            if (lap % 2 == 0)
                CHECK_OK(dmxp_try_recv(&ch, buf, len, &meta, &got));
            else
                CHECK_OK(dmxp_recv_timeout(&ch, buf, len, &meta, &got, 1000 * MS));
            CHECK_EQ_U64(got, len);
            CHECK_EQ_U64(meta.message_id, id);
            CHECK_EQ_U64(meta.payload_len, len);
            CHECK_EQ_U64(meta.message_type, 77);
            CHECK_EQ_U64(meta.flags, (len > 960 ? DMXP_FLAG_RUN : 0) | 0x4200u);
            CHECK_EQ_U64(meta.sender_pid, (uint32_t)getpid());
            check_payload(buf, len, seed);
            free(buf);
            expect_id += (len + 959) / 960;
            CHECK_EQ_U64(dmxp_channel_head(&ch), expect_id);
            CHECK_EQ_U64(atomic_load(&ch.recv_peer->intent_count), 0);
            CHECK_EQ_U64(atomic_load(&ch.recv_peer->intent_flags), 0);
        }
    }
    CHECK(expect_id > 6 * 128); /* several laps */
    /* Several runs queued at once, received in order. */
    uint64_t ids[3];
    send_payload(&ch, 30000, 1, &ids[0]);
    send_payload(&ch, 961, 2, &ids[1]);
    send_payload(&ch, 50000, 3, &ids[2]);
    recv_payload(&ch, 30000, 1, ids[0]);
    recv_payload(&ch, 961, 2, ids[1]);
    recv_payload(&ch, 50000, 3, ids[2]);
    expect_empty(&ch);
    dmxp_channel_close(&ch);
}

/* --- (4) mixed sizes, in order, single and batch ----------------------------------------------- */

typedef struct got_list {
    size_t n;
    uint64_t ids[64];
    size_t lens[64];
    uint64_t seeds[64];
} got_list;

static void collect(void *ctx, const dmxp_meta *meta, const void *payload, size_t len) {
    got_list *g = ctx;
    CHECK(g->n < 64);
    CHECK_EQ_U64(meta->payload_len, len);
    g->ids[g->n] = meta->message_id;
    g->lens[g->n] = len;
    /* the seed is the message id: see mixed() */
    check_payload(payload, len, meta->message_id);
    g->n++;
}

static void mixed(void) {
    dmxp_channel ch = make_runs(21, 16, 8 * 960);
    const size_t lens[] = {10, 2000, 5, 961, 960, 3000, 0, 7680, 24, 1921};
    uint64_t next = 0;
    for (int round = 0; round < 30; round++) {
        /* Send as many as fit, then receive them all, alternating single and batch. */
        uint64_t ids[16];
        size_t sent_lens[16], n = 0;
        for (size_t j = 0; n < 16; j++) {
            size_t len = lens[(round + j) % (sizeof lens / sizeof *lens)];
            unsigned char *p = make_payload(len, next);
            dmxp_status s = dmxp_try_send(&ch, p, len, NULL, &ids[n]);
            free(p);
            if (s == DMXP_E_FULL) break;
            CHECK_OK(s);
            CHECK_EQ_U64(ids[n], next);
            sent_lens[n++] = len;
            next += len > 960 ? (len + 959) / 960 : 1;
        }
        CHECK(n > 0);
        size_t r = 0;
        while (r < n) {
            if (round % 2 == 0) {
                recv_payload(&ch, sent_lens[r], ids[r], ids[r]);
                r++;
                continue;
            }
            got_list g = {0};
            dmxp_recv_counts c;
            CHECK_OK(dmxp_try_recv_batch_counts(&ch, 64, collect, NULL, &g, &c));
            CHECK_EQ_U64(c.delivered, g.n);
            CHECK_EQ_U64(c.corrupt + c.lost + c.revoked, 0);
            CHECK(g.n >= 1);
            /* A batch stops before a run, and a run comes alone. */
            if (sent_lens[r] > 960)
                CHECK_EQ_U64(g.n, 1);
            for (size_t k = 0; k < g.n; k++) {
                CHECK_EQ_U64(g.ids[k], ids[r + k]);
                CHECK_EQ_U64(g.lens[k], sent_lens[r + k]);
                if (k > 0) CHECK(sent_lens[r + k] <= 960);
            }
            if (r + g.n < n && sent_lens[r] <= 960) CHECK(sent_lens[r + g.n] > 960);
            r += g.n;
        }
        expect_empty(&ch);
    }
    /* Batch sends carry single-slot messages only: an item of 961 bytes is refused before
     * anything is claimed, even on a channel that carries runs. */
    unsigned char *p = make_payload(961, 0);
    const void *datas[2] = {p, p};
    size_t blens[2] = {10, 961}, sent = 99;
    uint64_t tail = dmxp_channel_tail(&ch);
    CHECK_STATUS(dmxp_try_send_batch(&ch, datas, blens, 2, NULL, &sent, NULL), DMXP_E_TOO_LARGE);
    CHECK_EQ_U64(sent, 0);
    CHECK_EQ_U64(dmxp_channel_tail(&ch), tail);
    free(p);
}

/* --- (5) TOO_LARGE, BUFFER_TOO_SMALL, FULL --------------------------------------------------- */

typedef struct drainer {
    dmxp_channel *ch;
    int count;
} drainer;

static void *drain_later(void *arg) {
    drainer *d = arg;
    dmxp__sleep_ns(50 * MS);
    for (int i = 0; i < d->count; i++) {
        unsigned char buf[DMXP_MSG_INLINE];
        CHECK_OK(dmxp_recv_timeout(d->ch, buf, sizeof buf, NULL, NULL, 1000 * MS));
        dmxp__sleep_ns(5 * MS);
    }
    return NULL;
}

static void limits(void) {
    dmxp_channel ch = make_runs(22, 4, 4 * 960), plain;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 23, 4, &plain, &err));
    unsigned char *p = make_payload(4 * 960 + 1, 5);
    /* TOO_LARGE sends nothing: tail and slots untouched. */
    CHECK_STATUS(dmxp_try_send(&ch, p, 4 * 960 + 1, NULL, NULL), DMXP_E_TOO_LARGE);
    CHECK_STATUS(dmxp_send_timeout(&ch, p, 4 * 960 + 1, NULL, NULL, 10 * MS), DMXP_E_TOO_LARGE);
    CHECK_STATUS(dmxp_try_send(&plain, p, 961, NULL, NULL), DMXP_E_TOO_LARGE);
    CHECK_EQ_U64(dmxp_channel_tail(&ch), 0);
    CHECK_EQ_U64(dmxp_channel_tail(&plain), 0);
    for (uint64_t i = 0; i < 4; i++) CHECK_EQ_U64(seq_of(&ch, i), i);
    CHECK_OK(dmxp_try_send(&plain, p, 960, NULL, NULL));
    /* BUFFER_TOO_SMALL consumes nothing and names the length needed. */
    uint64_t id;
    send_payload(&ch, 2000, 6, &id);
    unsigned char *buf = malloc(4 * 960);
    dmxp_meta meta;
    size_t got = 7;
    CHECK_STATUS(dmxp_try_recv(&ch, buf, 1999, &meta, &got), DMXP_E_BUFFER_TOO_SMALL);
    CHECK_EQ_U64(meta.payload_len, 2000);
    CHECK_EQ_U64(got, 0);
    CHECK_STATUS(dmxp_try_recv(&ch, buf, 960, &meta, NULL), DMXP_E_BUFFER_TOO_SMALL);
    CHECK_STATUS(dmxp_recv_timeout(&ch, buf, 100, &meta, NULL, 10 * MS), DMXP_E_BUFFER_TOO_SMALL);
    CHECK_EQ_U64(dmxp_channel_head(&ch), 0);
    CHECK_EQ_U64(seq_of(&ch, 0), 1);
    CHECK_EQ_U64(seq_of(&ch, 1), 2);
    recv_payload(&ch, 2000, 6, id);
    /* A run needs all its slots free at once: FULL until they are. */
    send_payload(&ch, 10, 7, &id);
    CHECK_STATUS(dmxp_try_send(&ch, p, 4 * 960, NULL, NULL), DMXP_E_FULL);
    CHECK_STATUS(dmxp_send_timeout(&ch, p, 4 * 960, NULL, NULL, 20 * MS), DMXP_E_TIMEOUT);
    CHECK_OK(dmxp_try_send(&ch, p, 3 * 960, NULL, NULL)); /* 3 slots do fit */
    CHECK_EQ_U64(dmxp_channel_tail(&ch), 7); /* 2000 bytes took 3 slots, 10 one */
    recv_payload(&ch, 10, 7, id);
    CHECK_OK(dmxp_try_recv(&ch, buf, 4 * 960, &meta, &got));
    CHECK_EQ_U64(got, 3 * 960);
    check_payload(buf, got, 5);
    CHECK_OK(dmxp_try_send(&ch, p, 4 * 960, NULL, &id)); /* the whole ring */
    recv_payload(&ch, 4 * 960, 5, id);
    /* A blocking send of a run waits until every slot it needs has been freed. */
    for (int i = 0; i < 4; i++) CHECK_OK(dmxp_try_send(&ch, "x", 1, NULL, NULL));
    drainer d = {&ch, 4};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, drain_later, &d) == 0);
    uint64_t t0 = dmxp_now_ns();
    CHECK_OK(dmxp_send_timeout(&ch, p, 4 * 960, NULL, &id, 5000 * MS));
    CHECK(dmxp_now_ns() - t0 >= (uint64_t)60 * MS); /* the drainer took 50 + 4 x 5 ms */
    CHECK(pthread_join(th, NULL) == 0);
    recv_payload(&ch, 4 * 960, 5, id);
    expect_empty(&ch);
    free(buf);
    free(p);
}

/* --- (6) corrupt runs, (7) orphans ------------------------------------------------------------- */

/* Receives until a message arrives: exactly one CORRUPT (naming `id` and `len`) first. */
static void one_corrupt_then(const dmxp_channel *ch, uint64_t id, uint32_t len, size_t next_len,
                             uint64_t next_seed, uint64_t next_id, int batch) {
    if (batch) {
        dmxp_recv_counts c;
        size_t corrupt = 0, delivered = 0;
        got_list g = {0};
        (void)next_seed;
        while (delivered == 0) {
            CHECK_OK(dmxp_try_recv_batch_counts(ch, 64, collect, NULL, &g, &c));
            corrupt += c.corrupt;
            delivered += c.delivered;
            CHECK_EQ_U64(c.lost + c.revoked, 0);
        }
        CHECK_EQ_U64(corrupt, 1);
        CHECK_EQ_U64(g.n, 1);
        CHECK_EQ_U64(g.ids[0], next_id);
        CHECK_EQ_U64(g.lens[0], next_len);
    } else {
        unsigned char *buf = malloc(16 * 960);
        dmxp_meta meta;
        CHECK_STATUS(dmxp_try_recv(ch, buf, 16 * 960, &meta, NULL), DMXP_E_CORRUPT_MESSAGE);
        CHECK_EQ_U64(meta.message_id, id);
        CHECK_EQ_U64(meta.payload_len, len);
        free(buf);
        recv_payload(ch, next_len, next_seed, next_id);
    }
    expect_empty(ch);
}

static void corrupt_runs(void) {
    dmxp_channel ch = make_runs(24, 16, 16 * 960);
    const uint32_t L = 4 * 960 + 100; /* k = 5 */
    for (int kind = 0; kind < 7; kind++) {
        for (int batch = 0; batch < 2; batch++) {
            uint64_t id, next;
            send_payload(&ch, L, 1, &id);
            dmxp_slot *first = &ch.slots[id & ch.mask];
            dmxp_slot *cont = &ch.slots[(id + 2) & ch.mask];
            uint32_t reported = L;
            switch (kind) {
            case 0: atomic_store(&first->run_slots, 17); break; /* past the ring of 16 */
            case 1: atomic_store(&first->run_slots, 4); break;  /* 4 slots cannot hold L */
            case 2: /* payload_len disagrees with run_slots */
                atomic_store(&first->meta.payload_len, L + 960);
                reported = L + 960;
                break;
            case 3: atomic_store(&cont->meta.message_id, id + 2); break;
            case 4: atomic_store(&cont->run_index, 3); break;
            case 5: atomic_store(&cont->meta.payload_len, L - 1); break;
            case 6: atomic_store(&cont->sequence, id + 2); break; /* unpublished under a start */
            }
            /* The next message, sent behind the broken one (its seed is its id). */
            send_payload(&ch, 1500, dmxp_channel_tail(&ch), &next);
            if (kind == 6) {
                unsigned char buf[5 * 960]; /* a shorter one: BUFFER_TOO_SMALL first (§12.4) */
                dmxp_meta meta;
                if (batch) {
                    dmxp_recv_counts c;
                    CHECK_OK(dmxp_try_recv_batch_counts(&ch, 64, collect, NULL, NULL, &c));
                    CHECK_EQ_U64(c.corrupt, 1);
                    CHECK_EQ_U64(c.delivered, 0);
                } else {
                    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, &meta, NULL),
                                 DMXP_E_CORRUPT_MESSAGE);
                    CHECK_EQ_U64(meta.message_id, id);
                    CHECK_EQ_U64(meta.payload_len, L);
                }
                CHECK_EQ_U64(dmxp_channel_head(&ch), id + 1); /* the start, claimed alone */
                atomic_store(&cont->sequence, id + 3); /* its continuations: orphans */
                recv_payload(&ch, 1500, next, next);
                expect_empty(&ch);
                continue;
            }
            one_corrupt_then(&ch, id, reported, 1500, next, next, batch);
            CHECK_EQ_U64(dmxp_channel_head(&ch), dmxp_channel_tail(&ch));
        }
    }
    /* The same through batch receives, counted once in `corrupt`. */
    for (int kind = 0; kind < 2; kind++) {
        uint64_t id, next;
        send_payload(&ch, L, 1, &id);
        dmxp_slot *first = &ch.slots[id & ch.mask];
        dmxp_slot *cont = &ch.slots[(id + 1) & ch.mask];
        if (kind == 0)
            atomic_store(&first->run_slots, 1000);
        else
            atomic_store(&cont->meta.flags, DMXP_FLAG_RUN); /* not a continuation */
        unsigned char *p = make_payload(700, dmxp_channel_tail(&ch));
        CHECK_OK(dmxp_try_send(&ch, p, 700, NULL, &next));
        free(p);
        one_corrupt_then(&ch, id, L, 700, next, next, 1);
    }
    /* A run on a channel without runs: dropped as corrupt (its length exceeds 960 there). */
    dmxp_channel plain;
    CHECK_OK(dmxp_channel_create(&seg, 25, 8, &plain, NULL));
    uint64_t t, n;
    CHECK_OK(dmxp__claim_send(&plain, 2, &t, &n));
    CHECK_EQ_U64(n, 2);
    unsigned char *p = make_payload(1500, 3);
    CHECK_OK(dmxp__publish_slot(&plain, t + 1, p + 960, 540, 1500, 0, DMXP_FLAG_RUN_CONT, 0, t,
                                2, 1));
    CHECK_OK(dmxp__publish_slot(&plain, t, p, 960, 1500, 0, DMXP_FLAG_RUN, 0, t, 2, 0));
    free(p);
    dmxp__intent_clear(plain.send_peer);
    dmxp_meta meta;
    unsigned char buf[DMXP_MSG_INLINE];
    CHECK_STATUS(dmxp_try_recv(&plain, buf, sizeof buf, &meta, NULL), DMXP_E_CORRUPT_MESSAGE);
    CHECK_EQ_U64(meta.message_id, t);
    expect_empty(&plain); /* the continuation was passed over */
}

static void orphans(void) {
    dmxp_channel ch = make_runs(26, 8, 8 * 960);
    /* A run whose start became a LOST tombstone (an unblock, §11.8): its published
     * continuations are passed over, unreported. */
    uint64_t t;
    unsigned char *p = make_payload(3 * 960, 4);
    CHECK_OK(dmxp__claim_run(&ch, 3, &t));
    CHECK_OK(dmxp__publish_slot(&ch, t + 1, p + 960, 960, 3 * 960, 0, DMXP_FLAG_RUN_CONT, 0, t,
                                3, 1));
    CHECK_OK(dmxp__publish_slot(&ch, t + 2, p + 1920, 960, 3 * 960, 0, DMXP_FLAG_RUN_CONT, 0,
                                t, 3, 2));
    CHECK(dmxp__tombstone(&ch, t, 0, 0));
    free(p);
    uint64_t next;
    send_payload(&ch, 100, 5, &next);
    unsigned char buf[DMXP_MSG_INLINE];
    dmxp_meta meta;
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, &meta, NULL), DMXP_E_LOST);
    CHECK_EQ_U64(meta.message_id, t);
    recv_payload(&ch, 100, 5, next);
    expect_empty(&ch);
    /* The same through a batch: nothing but the message counted. */
    CHECK_OK(dmxp__claim_run(&ch, 2, &t));
    p = make_payload(1000, 0);
    CHECK_OK(dmxp__publish_slot(&ch, t + 1, p + 960, 40, 1000, 0, DMXP_FLAG_RUN_CONT, 0, t, 2,
                                1));
    CHECK(dmxp__tombstone(&ch, t, 0, 0));
    free(p);
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, &meta, NULL), DMXP_E_LOST);
    p = make_payload(50, dmxp_channel_tail(&ch));
    CHECK_OK(dmxp_try_send(&ch, p, 50, NULL, &next));
    free(p);
    dmxp_recv_counts c;
    got_list g = {0};
    size_t delivered = 0;
    while (delivered == 0) {
        CHECK_OK(dmxp_try_recv_batch_counts(&ch, 64, collect, NULL, &g, &c));
        CHECK_EQ_U64(c.corrupt + c.lost + c.revoked, 0);
        delivered += c.delivered;
    }
    CHECK_EQ_U64(g.ids[0], next);
    /* An orphan alone at the head: consumed, and the ring is empty. */
    CHECK_OK(dmxp__claim_run(&ch, 2, &t));
    p = make_payload(1000, 0);
    CHECK_OK(dmxp__publish_slot(&ch, t + 1, p + 960, 40, 1000, 0, DMXP_FLAG_RUN_CONT, 0, t, 2,
                                1));
    CHECK(dmxp__marker(&ch, t, DMXP_FLAG_SKIP, 0, 0)); /* an abandoned start */
    free(p);
    expect_empty(&ch);
    CHECK_EQ_U64(dmxp_channel_head(&ch), t + 2);
}

/* --- (8) pending: continuations published, the start not yet ------------------------------- */

typedef struct run_sender {
    dmxp_channel ch; /* registered, its own */
    size_t len;
    uint64_t id;
    dmxp_status status;
} run_sender;

static void *send_run_main(void *arg) {
    run_sender *r = arg;
    unsigned char *p = make_payload(r->len, 8);
    r->status = dmxp_try_send(&r->ch, p, r->len, NULL, &r->id);
    free(p);
    return NULL;
}

static void *release_later(void *arg) {
    (void)arg;
    dmxp__sleep_ns(30 * MS);
    atomic_store(&hook_release, 1);
    return NULL;
}

static void pending(void) {
    run_sender r;
    make_runs(27, 16, 16 * 960);
    CHECK_OK(dmxp_channel_open(&seg, 27, &r.ch, NULL));
    CHECK_OK(dmxp_channel_register(&r.ch, DMXP_ROLE_PRODUCER, NULL));
    dmxp_channel cons;
    CHECK_OK(dmxp_channel_open(&seg, 27, &cons, NULL));
    uint64_t t = dmxp_channel_tail(&cons);
    r.len = 5 * 960;
    atomic_store(&hook_release, 0);
    atomic_store(&hook_stopped, 0);
    atomic_store(&hook_stop_at, t); /* the start, written last */
    atomic_store(&hook_stop_armed, 1);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, send_run_main, &r) == 0);
    while (!atomic_load(&hook_stopped)) dmxp__sleep_ns(MS);
    for (uint64_t i = 1; i < 5; i++) CHECK_EQ_U64(seq_of(&cons, t + i), t + i + 1);
    CHECK_EQ_U64(seq_of(&cons, t), t);
    /* The live sender's intent names the run. */
    CHECK_EQ_U64(atomic_load(&r.ch.send_peer->intent_position), t);
    CHECK_EQ_U64(atomic_load(&r.ch.send_peer->intent_count), 5);
    CHECK_EQ_U64(atomic_load(&r.ch.send_peer->intent_flags), DMXP_INTENT_RUN);
    /* Not empty: a later position is published. */
    uint64_t first, count;
    uint32_t needed;
    CHECK_STATUS(dmxp__claim_recv(&cons, 1, SIZE_MAX, &first, &count, &needed), DMXP__PENDING);
    CHECK_EQ_U64(first, t);
    /* A blocking receive with a short deadline times out, consuming nothing. */
    unsigned char *buf = malloc(5 * 960);
    dmxp_meta meta;
    size_t got = 0;
    CHECK_STATUS(dmxp_recv_timeout(&cons, buf, 5 * 960, &meta, &got, 5 * MS), DMXP_E_TIMEOUT);
    CHECK_EQ_U64(dmxp_channel_head(&cons), t);
    /* A non-blocking receive waits for the start and delivers the whole run. */
    atomic_store(&hook_release, 1);
    CHECK_OK(dmxp_try_recv(&cons, buf, 5 * 960, &meta, &got));
    CHECK_EQ_U64(got, 5 * 960);
    CHECK_EQ_U64(meta.message_id, t);
    check_payload(buf, got, 8);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK_OK(r.status);
    CHECK_EQ_U64(r.id, t);
    CHECK_EQ_U64(atomic_load(&r.ch.send_peer->intent_count), 0);
    CHECK_EQ_U64(atomic_load(&r.ch.send_peer->intent_flags), 0);
    /* Once more, the receive already waiting when the start is published. */
    t = dmxp_channel_tail(&cons);
    atomic_store(&hook_release, 0);
    atomic_store(&hook_stopped, 0);
    atomic_store(&hook_stop_at, t);
    atomic_store(&hook_stop_armed, 1);
    r.len = 2 * 960 + 1;
    CHECK(pthread_create(&th, NULL, send_run_main, &r) == 0);
    while (!atomic_load(&hook_stopped)) dmxp__sleep_ns(MS);
    /* Released 30 ms into the receive, by a helper thread. */
    pthread_t rel;
    CHECK(pthread_create(&rel, NULL, release_later, NULL) == 0);
    uint64_t t0 = dmxp_now_ns();
    CHECK_OK(dmxp_try_recv(&cons, buf, 5 * 960, &meta, &got));
    CHECK(dmxp_now_ns() - t0 >= (uint64_t)25 * MS);
    CHECK_EQ_U64(got, 2 * 960 + 1);
    CHECK_EQ_U64(meta.message_id, t);
    check_payload(buf, got, 8);
    CHECK(pthread_join(rel, NULL) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK_OK(r.status);
    free(buf);
    dmxp_channel_close(&r.ch);
}

/* A sender stopped inside a run (alive: its record is this process's) is unblocked after the
 * unblock timeout as one message: one LOST, every slot of the run settled, and the sender
 * learns by DMXP_E_REVOKED when it resumes (§11.8, §12.5). */
static void stopped_run(void) {
    run_sender r;
    make_runs(28, 16, 16 * 960);
    CHECK_OK(dmxp_channel_open(&seg, 28, &r.ch, NULL));
    CHECK_OK(dmxp_channel_register(&r.ch, DMXP_ROLE_PRODUCER, NULL));
    dmxp_channel cons;
    CHECK_OK(dmxp_channel_open(&seg, 28, &cons, NULL));
    dmxp_channel_set_unblock_timeout(&cons, 20 * MS);
    uint64_t t = dmxp_channel_tail(&cons);
    r.len = 5 * 960;
    atomic_store(&hook_release, 0);
    atomic_store(&hook_stopped, 0);
    atomic_store(&hook_stop_at, t + 2); /* continuation 1 published, 2 written, 3 and 4 not */
    atomic_store(&hook_stop_armed, 1);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, send_run_main, &r) == 0);
    while (!atomic_load(&hook_stopped)) dmxp__sleep_ns(MS);
    unsigned char *buf = malloc(5 * 960);
    dmxp_meta meta;
    size_t got = 0;
    CHECK_STATUS(dmxp_recv_timeout(&cons, buf, 5 * 960, &meta, &got, 10000 * MS), DMXP_E_LOST);
    CHECK_EQ_U64(meta.message_id, t);
    /* The whole run is settled at once: nothing else is lost, nothing stays stuck. */
    CHECK_STATUS(dmxp_try_recv(&cons, buf, 5 * 960, &meta, &got), DMXP_E_EMPTY);
    CHECK_EQ_U64(dmxp_channel_head(&cons), t + 5);
    atomic_store(&hook_release, 1);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK_STATUS(r.status, DMXP_E_REVOKED);
    free(buf);
    dmxp_channel_close(&r.ch);
}

/* --- (9) crash recovery ------------------------------------------------------------------------ */

/* A forked child claims a run of `k` positions through a registered producer handle,
 * publishes `published` of its continuations and dies (the hook _exits at the next). */
static pid_t child_dies_in_run(uint32_t id, uint64_t k, uint64_t published) {
    int fd;
    pid_t child = fork_reporting(&fd);
    if (child == 0) {
        dmxp_channel ch;
        child_open_registered(&seg, id, DMXP_ROLE_PRODUCER, &ch);
        uint64_t t = dmxp_channel_tail(&ch);
        atomic_store(&hook_die_at, published + 1 < k ? t + published + 1 : t);
        atomic_store(&hook_die_armed, 1);
        unsigned char *p = make_payload((size_t)k * 960, 9);
        (void)dmxp_try_send(&ch, p, (size_t)k * 960, NULL, NULL);
        _exit(30); /* not reached: the hook exits */
    }
    close(fd);
    int status;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return child;
}

static void dead_producer(void) {
    dmxp_channel ch = make_runs(30, 16, 16 * 960);
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_CONSUMER, NULL));
    dmxp_peer_record *table = peer_table_of(&seg);
    for (int automatic = 0; automatic < 2; automatic++) {
        uint64_t t = dmxp_channel_tail(&ch);
        pid_t child = child_dies_in_run(30, 5, 1);
        /* Its record: the run intent. */
        dmxp_peer_record *rec = NULL;
        for (uint32_t i = 0; i < dmxp_segment_peer_records(&seg); i++)
            if (atomic_load(&table[i].pid) == (uint32_t)child) rec = &table[i];
        CHECK(rec != NULL);
        CHECK_EQ_U64(atomic_load(&rec->intent_position), t);
        CHECK_EQ_U64(atomic_load(&rec->intent_count), 5);
        CHECK_EQ_U64(atomic_load(&rec->intent_flags), DMXP_INTENT_RUN);
        CHECK_EQ_U64(dmxp_channel_tail(&ch), t + 5);
        CHECK_EQ_U64(seq_of(&ch, t), t);
        CHECK_EQ_U64(seq_of(&ch, t + 1), t + 2);
        for (uint64_t i = 2; i < 5; i++) CHECK_EQ_U64(seq_of(&ch, t + i), t + i);
        uint64_t next;
        send_payload(&ch, 2000, 10, &next);
        unsigned char *buf = malloc(16 * 960);
        dmxp_meta meta;
        if (!automatic) {
            dmxp_recover_report rep;
            CHECK_OK(dmxp_channel_recover(&ch, &rep));
            CHECK_EQ_U64(rep.lost, 1);
            CHECK_EQ_U64(rep.skipped, 3);
            CHECK_EQ_U64(rep.records_freed, 1);
            CHECK_EQ_U64(atomic_load(&ch.slots[t & ch.mask].meta.flags), DMXP_FLAG_LOST);
            CHECK_EQ_U64(atomic_load(&ch.slots[t & ch.mask].meta.sender_pid), (uint32_t)child);
            for (uint64_t i = 2; i < 5; i++)
                CHECK_EQ_U64(atomic_load(&ch.slots[(t + i) & ch.mask].meta.flags),
                             DMXP_FLAG_SKIP);
            CHECK_OK(dmxp_channel_recover(&ch, &rep)); /* nothing left to do */
            CHECK_EQ_U64(rep.lost + rep.skipped + rep.records_freed, 0);
            CHECK_STATUS(dmxp_try_recv(&ch, buf, 16 * 960, &meta, NULL), DMXP_E_LOST);
        } else {
            /* A blocking receive finds the head stuck and repairs it after the grace. */
            CHECK_STATUS(dmxp_recv_timeout(&ch, buf, 16 * 960, &meta, NULL, 5000 * MS),
                         DMXP_E_LOST);
        }
        CHECK_EQ_U64(meta.message_id, t);
        /* One loss: then the message sent behind the run, then nothing. */
        recv_payload(&ch, 2000, 10, next);
        expect_empty(&ch);
        CHECK_EQ_U64(records_of(&seg, (uint32_t)child), 0);
        free(buf);
    }
    /* A child that dies before publishing anything of its run: still one loss. */
    uint64_t t = dmxp_channel_tail(&ch);
    (void)child_dies_in_run(30, 3, 0);
    dmxp_recover_report rep;
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    CHECK_EQ_U64(rep.lost, 1);
    CHECK_EQ_U64(rep.skipped, 2);
    unsigned char buf[DMXP_MSG_INLINE];
    dmxp_meta meta;
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, &meta, NULL), DMXP_E_LOST);
    CHECK_EQ_U64(meta.message_id, t);
    expect_empty(&ch);
    /* The ring flows, a full-ring run included. */
    uint64_t id;
    send_payload(&ch, 16 * 960, 11, &id);
    recv_payload(&ch, 16 * 960, 11, id);
    dmxp_channel_close(&ch);
}

/* A dead consumer that claimed a run and never freed it: each of its positions is freed. */
static void dead_consumer(void) {
    dmxp_channel ch = make_runs(31, 8, 8 * 960), raw;
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_PRODUCER, NULL));
    CHECK_OK(dmxp_channel_open(&seg, 31, &raw, NULL));
    uint64_t id;
    send_payload(&ch, 3 * 960, 12, &id);
    uint64_t h, n;
    uint32_t needed, kind;
    CHECK_OK(dmxp__claim_recv_kind(&raw, 1, SIZE_MAX, &h, &n, &needed, &kind));
    CHECK_EQ_U64(kind, DMXP__CLAIM_RUN);
    CHECK_EQ_U64(n, 3);
    CHECK_EQ_U64(needed, 3 * 960);
    /* ...by a process that is gone, whose record says so. */
    dmxp_peer_record *table = peer_table_of(&seg), *r = NULL;
    for (uint32_t i = 0; i < dmxp_segment_peer_records(&seg) && !r; i++)
        if (atomic_load(&table[i].pid) == 0) r = &table[i];
    CHECK(r != NULL);
    uint32_t dead = gone_pid();
    atomic_store(&r->role, DMXP_ROLE_CONSUMER);
    atomic_store(&r->channel_id, 31);
    atomic_store(&r->intent_position, h);
    atomic_store(&r->intent_flags, DMXP_INTENT_RUN);
    atomic_store(&r->intent_count, 3);
    atomic_store(&r->pid_ns, dmxp_pid_namespace());
    atomic_store(&r->pid, dead);
    /* The ring is not free for a run of the whole ring until the repair. */
    unsigned char *p = make_payload(8 * 960, 13);
    CHECK_STATUS(dmxp_try_send(&ch, p, 8 * 960, NULL, NULL), DMXP_E_FULL);
    dmxp_recover_report rep;
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    CHECK_EQ_U64(rep.freed, 3);
    CHECK_EQ_U64(rep.lost, 0);
    CHECK_EQ_U64(rep.records_freed, 1);
    CHECK_EQ_U64(atomic_load(&r->intent_flags), 0);
    CHECK_OK(dmxp_try_send(&ch, p, 8 * 960, NULL, &id));
    free(p);
    recv_payload(&ch, 8 * 960, 13, id);
    dmxp_channel_close(&ch);
}

/* --- (10) 2 producers x 2 consumers ------------------------------------------------------------- */

#define STRESS_PRODUCERS 2
#define STRESS_CONSUMERS 2
#define STRESS_MAX 65536u

static uint64_t stress_n = 1500;
static dmxp_channel stress_ch;
static _Atomic uint8_t *stress_seen; /* [producer * n + index]: times received */
static _Atomic uint64_t stress_total;

static size_t stress_len(uint64_t who, uint64_t index) {
    uint64_t x = (who * 1000003 + index + 1) * UINT64_C(0x9E3779B97F4A7C15);
    x ^= x >> 29;
    /* Mostly short ones, a third longer than a slot, up to 64 KiB. */
    switch (x % 3) {
    case 0: return 1 + (size_t)((x >> 8) % 960);
    case 1: return 1 + (size_t)((x >> 8) % 4000);
    default: return 1 + (size_t)((x >> 8) % STRESS_MAX);
    }
}

/* The payload of (producer, index): the pattern (channel = producer, checksummed) from 24
 * bytes, else its filler bytes. The index also travels in message_type, the producer in the
 * application flags, so that short ones can be checked too. */
static void stress_encode(uint64_t who, uint64_t index, size_t len, unsigned char *out) {
    if (len >= DMXP_PATTERN_MIN_LEN)
        dmxp_pattern_encode_long((uint32_t)who, index, len, out);
    else
        for (size_t k = 0; k < len; k++) out[k] = dmxp_pattern_filler(who, index, k);
}

static void *stress_producer(void *arg) {
    uint64_t who = (uint64_t)(uintptr_t)arg;
    dmxp_channel mine;
    CHECK_OK(dmxp_channel_open(&seg, stress_ch.id, &mine, NULL));
    if (who == 0) CHECK_OK(dmxp_channel_register(&mine, DMXP_ROLE_PRODUCER, NULL));
    unsigned char *buf = malloc(STRESS_MAX);
    CHECK(buf != NULL);
    for (uint64_t i = 0; i < stress_n; i++) {
        size_t len = stress_len(who, i);
        stress_encode(who, i, len, buf);
        dmxp_send_opts opts = {.message_type = (uint32_t)i, .flags = (uint16_t)((who + 1) << 8)};
        dmxp_status s;
        if (len <= 960 && i % 5 == 0) { /* a batch of one */
            const void *d[1] = {buf};
            size_t l[1] = {len}, sent = 0;
            for (;;) {
                s = dmxp_try_send_batch(&mine, d, l, 1, &opts, &sent, NULL);
                if (s != DMXP_E_FULL) break;
                (void)dmxp_wait_free_slot(&mine, 10 * MS);
            }
            CHECK_OK(s);
            CHECK_EQ_U64(sent, 1);
            continue;
        }
        s = i % 2 ? dmxp_try_send(&mine, buf, len, &opts, NULL) : DMXP_E_FULL;
        if (s == DMXP_E_FULL) s = dmxp_send_timeout(&mine, buf, len, &opts, NULL, 20000 * MS);
        CHECK_OK(s);
    }
    free(buf);
    dmxp_channel_close(&mine);
    return NULL;
}

typedef struct stress_consumer_state {
    int who;
    uint64_t last[STRESS_PRODUCERS]; /* index + 1 of the last message of each producer */
    uint64_t got;
} stress_consumer_state;

static void stress_check(stress_consumer_state *st, const dmxp_meta *meta,
                         const unsigned char *payload, size_t len) {
    uint64_t who = (meta->flags >> 8) - 1, index = meta->message_type;
    CHECK(who < STRESS_PRODUCERS && index < stress_n);
    CHECK_EQ_U64(len, stress_len(who, index));
    CHECK_EQ_U64(meta->payload_len, len);
    CHECK_EQ_U64(meta->flags & DMXP_FLAG_RUN, len > 960 ? DMXP_FLAG_RUN : 0);
    if (len >= DMXP_PATTERN_MIN_LEN) {
        uint64_t c, i;
        CHECK_EQ_U64(dmxp_pattern_decode(payload, len, &c, &i), DMXP_PATTERN_OK);
        CHECK_EQ_U64(c, who);
        CHECK_EQ_U64(i, index);
    } else {
        for (size_t k = 0; k < len; k++)
            CHECK_EQ_U64(payload[k], dmxp_pattern_filler(who, index, k));
    }
    /* Per-producer order: positions grow, so do one producer's indices. */
    CHECK(index + 1 > st->last[who]);
    st->last[who] = index + 1;
    CHECK_EQ_U64(atomic_fetch_add(&stress_seen[who * stress_n + index], 1), 0);
    st->got++;
    atomic_fetch_add(&stress_total, 1);
}

static void stress_deliver(void *ctx, const dmxp_meta *meta, const void *payload, size_t len) {
    stress_check(ctx, meta, payload, len);
}

static void *stress_consumer(void *arg) {
    stress_consumer_state *st = arg;
    dmxp_channel mine;
    CHECK_OK(dmxp_channel_open(&seg, stress_ch.id, &mine, NULL));
    if (st->who == 0) CHECK_OK(dmxp_channel_register(&mine, DMXP_ROLE_CONSUMER, NULL));
    unsigned char *buf = malloc(STRESS_MAX);
    CHECK(buf != NULL);
    uint64_t want = stress_n * STRESS_PRODUCERS;
    uint64_t turn = 0;
    while (atomic_load(&stress_total) < want) {
        turn++;
        if (st->who == 1 && turn % 2) {
            dmxp_recv_counts c;
            dmxp_status s = dmxp_try_recv_batch_counts(&mine, 16, stress_deliver, NULL, st, &c);
            if (s == DMXP_E_EMPTY) {
                (void)dmxp_wait_message(&mine, 10 * MS);
                continue;
            }
            CHECK_OK(s);
            CHECK_EQ_U64(c.lost + c.corrupt + c.revoked, 0);
            continue;
        }
        dmxp_meta meta;
        size_t len = 0;
        dmxp_status s = turn % 3 ? dmxp_try_recv(&mine, buf, STRESS_MAX, &meta, &len)
                                 : dmxp_recv_timeout(&mine, buf, STRESS_MAX, &meta, &len,
                                                     10 * MS);
        if (s == DMXP_E_EMPTY || s == DMXP_E_TIMEOUT) {
            if (s == DMXP_E_EMPTY) (void)dmxp_wait_message(&mine, 10 * MS);
            continue;
        }
        CHECK_OK(s);
        stress_check(st, &meta, buf, len);
    }
    free(buf);
    dmxp_channel_close(&mine);
    return NULL;
}

static void stress(uint32_t id) {
    stress_ch = make_runs(id, 128, STRESS_MAX);
    stress_seen = calloc(STRESS_PRODUCERS * stress_n, 1);
    CHECK(stress_seen != NULL);
    atomic_store(&stress_total, 0);
    pthread_t prod[STRESS_PRODUCERS], cons[STRESS_CONSUMERS];
    stress_consumer_state st[STRESS_CONSUMERS];
    memset(st, 0, sizeof st);
    uint64_t t0 = dmxp_now_ns();
    for (int c = 0; c < STRESS_CONSUMERS; c++) {
        st[c].who = c;
        CHECK(pthread_create(&cons[c], NULL, stress_consumer, &st[c]) == 0);
    }
    for (int p = 0; p < STRESS_PRODUCERS; p++)
        CHECK(pthread_create(&prod[p], NULL, stress_producer, (void *)(uintptr_t)p) == 0);
    for (int p = 0; p < STRESS_PRODUCERS; p++) CHECK(pthread_join(prod[p], NULL) == 0);
    for (int c = 0; c < STRESS_CONSUMERS; c++) CHECK(pthread_join(cons[c], NULL) == 0);
    CHECK_EQ_U64(atomic_load(&stress_total), STRESS_PRODUCERS * stress_n);
    CHECK_EQ_U64(st[0].got + st[1].got, STRESS_PRODUCERS * stress_n);
    for (uint64_t i = 0; i < STRESS_PRODUCERS * stress_n; i++)
        CHECK_EQ_U64(atomic_load(&stress_seen[i]), 1);
    expect_empty(&stress_ch);
    printf("  stress: %d producers x %d consumers, %llu messages of 1 B..64 KiB in %.0f ms "
           "(%llu / %llu per consumer), head %llu\n",
           STRESS_PRODUCERS, STRESS_CONSUMERS,
           (unsigned long long)(STRESS_PRODUCERS * stress_n),
           (double)(dmxp_now_ns() - t0) / 1e6, (unsigned long long)st[0].got,
           (unsigned long long)st[1].got,
           (unsigned long long)dmxp_channel_head(&stress_ch));
    free((void *)stress_seen);
}

int main(int argc, char **argv) {
    void *mem = mmap(NULL, SEG_LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    dmxp_error err;
    CHECK_OK(dmxp_segment_format_memory(&seg, mem, SEG_LEN, (uint32_t)getpid(), &err));
    if (argc >= 2 && strcmp(argv[1], "stress") == 0) {
        if (argc >= 3) stress_n = strtoull(argv[2], NULL, 10);
        stress(40);
        TEST_DONE("test_runs stress");
    }
    creation();
    open_checks();
    single_slot_only();
    round_trips();
    mixed();
    limits();
    corrupt_runs();
    orphans();
    pending();
    stopped_run();
    dead_producer();
    dead_consumer();
    stress(40);
    TEST_DONE("test_runs");
}
