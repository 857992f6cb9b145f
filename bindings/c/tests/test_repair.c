/* The repair pass of PROTOCOL.md §11.6, rule by rule: covered(c, p, role, i) exactly (a record
 * before the repaired one in the table, or a live one, covers a position; a later dead one does
 * not), a dead record with a covered stuck position given back to its dead owner with its
 * intent (records_deferred) and repaired by a later pass once nothing covers it, a record
 * whose channel changed between the two reads given back too, and dead idle records freed
 * whatever their channel. Dead pids are children that exited and were reaped; a live peer is a
 * child blocked on a pipe. The segment is anonymous MAP_SHARED memory. Single-threaded: what a
 * concurrent peer would do while a pass runs is played at the DMXP_HOOK_REPAIR_TAKEN point.
 * Then the same on tables of other sizes (§11.1 peer_records): a table of 1024 records used to
 * its last record by registrations, sweeps and repairs, each record judged once per pass, a
 * pass whose verdicts cannot be allocated doing nothing, and a handle whose segment's
 * peer_records is rewritten after attach staying within the 256 records it validated (heap
 * segments there, so that ASan reports any access past them). */
/* Defined below (dmxp.h must come first of all headers, so the hook names no type of it). */
static void test_hook(int point, const void *ch, unsigned long long position);
#define DMXP_TEST_HOOK(point, ch, position) test_hook((point), (const void *)(ch), (position))
/* The allocations of a pass's verdicts (tables above 256 records), counted; failing on demand. */
static int calloc_calls, calloc_fails;
#define DMXP_CALLOC(n, size) (calloc_calls++, calloc_fails ? NULL : calloc((n), (size)))

#include "util.h"

#define SEG_LEN (1u << 20)

static dmxp_segment seg;

/* The hook: runs `action` once, when a repair pass has taken record `index` over. */
static struct {
    int armed;
    uint32_t index;
    void (*action)(const dmxp_channel *ch);
    int fired;
} hook;

static void test_hook(int point, const void *ch, unsigned long long position) {
    if (point != DMXP_HOOK_REPAIR_TAKEN || !hook.armed || position != hook.index) return;
    hook.armed = 0;
    hook.fired++;
    hook.action((const dmxp_channel *)ch);
}

static void arm(uint32_t index, void (*action)(const dmxp_channel *ch)) {
    hook.armed = 1;
    hook.index = index;
    hook.action = action;
    hook.fired = 0;
}

/* A live process: a child blocked reading a pipe until end_live closes it. */
typedef struct live_peer {
    pid_t pid;
    int fd;
} live_peer;

static live_peer spawn_live(void) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        close(fds[1]);
        char c;
        while (read(fds[0], &c, 1) < 0 && errno == EINTR) {
        }
        _exit(0);
    }
    close(fds[0]);
    live_peer l = {child, fds[1]};
    CHECK(!dmxp_peer_dead((uint32_t)child, dmxp_process_start_time((uint32_t)child)));
    return l;
}

static void end_live(live_peer *l) {
    close(l->fd);
    CHECK(waitpid(l->pid, NULL, 0) == l->pid);
}

/* Fills record `r` as a registrant of channel `id` in `role` whose intent is
 * [position, position + count), in this process's pid namespace. */
static void fake_record(dmxp_peer_record *r, uint32_t pid, uint16_t role, uint32_t id,
                        uint64_t position, uint32_t count, uint16_t runtime, uint64_t start) {
    atomic_store(&r->runtime, runtime);
    atomic_store(&r->role, role);
    atomic_store(&r->channel_id, id);
    atomic_store(&r->intent_position, position);
    atomic_store(&r->intent_count, count);
    atomic_store(&r->waiting, DMXP_WAITING_NONE);
    atomic_store(&r->pid_ns, dmxp_pid_namespace());
    atomic_store(&r->start_time, start);
    atomic_store(&r->pid, pid);
}

static void clear_record(dmxp_peer_record *r) {
    atomic_store(&r->intent_count, 0);
    atomic_store(&r->intent_position, 0);
    atomic_store(&r->start_time, 0);
    atomic_store(&r->pid_ns, 0);
    atomic_store(&r->waiting, 0);
    atomic_store(&r->pid, 0);
}

static void check_report(const dmxp_recover_report *rep, uint64_t lost, uint64_t freed,
                         uint32_t records_freed, uint32_t records_deferred, uint32_t checks) {
    CHECK_EQ_U64(rep->lost, lost);
    CHECK_EQ_U64(rep->freed, freed);
    CHECK_EQ_U64(rep->records_freed, records_freed);
    CHECK_EQ_U64(rep->records_deferred, records_deferred);
    CHECK_EQ_U64(rep->liveness_checks, checks);
}

/* The channel flows: one message through it, received with id `id`. */
static void flows(const dmxp_channel *ch, uint64_t id) {
    uint64_t sent;
    CHECK_OK(dmxp_try_send(ch, "flows", 5, NULL, &sent));
    CHECK_EQ_U64(sent, id);
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len;
    dmxp_meta meta;
    CHECK_OK(dmxp_try_recv(ch, buf, sizeof buf, &meta, &len));
    CHECK(len == 5 && memcmp(buf, "flows", 5) == 0);
    CHECK_EQ_U64(meta.message_id, id);
    CHECK_STATUS(dmxp_try_recv(ch, buf, sizeof buf, NULL, &len), DMXP_E_EMPTY);
}

/* Receives the LOST tombstone of position p, naming dead `pid` and `runtime`. */
static void recv_lost(const dmxp_channel *ch, uint64_t p, uint32_t pid, uint16_t runtime) {
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len;
    dmxp_meta meta;
    CHECK_STATUS(dmxp_try_recv(ch, buf, sizeof buf, &meta, &len), DMXP_E_LOST);
    CHECK_EQ_U64(meta.message_id, p);
    CHECK_EQ_U64(meta.sender_pid, pid);
    CHECK_EQ_U64(meta.sender_runtime, runtime);
    CHECK_EQ_U64(meta.payload_len, 0);
}

/* (1) covered(c, p, role, i) on its own, on a scratch table: for d = record 10 of channel 3,
 * producers, position 100. */
static dmxp_peer_record scratch[DMXP_PEER_RECORDS];

static void covered_rule(void) {
    dmxp__liveness l;
    CHECK(dmxp__liveness_init(&l, DMXP_PEER_RECORDS));
    const uint16_t P = DMXP_ROLE_PRODUCER;
    dmxp_peer_record *t = scratch;
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, 100, &l), 0); /* an empty table */
    /* A dead record before d covers p (its own repair handles it), judged by nobody. */
    uint32_t dead = gone_pid();
    fake_record(&t[5], dead, P, 3, 100, 1, DMXP_RUNTIME_GO, 0);
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, 100, &l), 1);
    CHECK_EQ_U64(l.checks, 0);
    clear_record(&t[5]);
    /* The same record after d: dead, so it does not; judged once, however often asked. */
    fake_record(&t[20], dead, P, 3, 100, 1, DMXP_RUNTIME_GO, 0);
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, 100, &l), 0);
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, 100, &l), 0);
    CHECK_EQ_U64(l.checks, 1);
    /* After d and alive: it does. A live child, then our own pid (never judged). */
    live_peer live = spawn_live();
    fake_record(&t[20], (uint32_t)live.pid, P, 3, 100, 1, DMXP_RUNTIME_GO,
                dmxp_process_start_time((uint32_t)live.pid));
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, 100, &l), 1);
    CHECK_EQ_U64(l.checks, 2);
    atomic_store(&t[20].pid, l.me.pid);
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, 100, &l), 1);
    CHECK_EQ_U64(l.checks, 2);
    atomic_store(&t[20].pid, (uint32_t)live.pid);
    /* Not covering: another channel, another role, no intent, a free record, p outside. */
    atomic_store(&t[20].channel_id, 4);
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, 100, &l), 0);
    atomic_store(&t[20].channel_id, 3);
    atomic_store(&t[20].role, DMXP_ROLE_CONSUMER);
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, 100, &l), 0);
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, DMXP_ROLE_CONSUMER, 100, &l), 1);
    atomic_store(&t[20].role, P);
    atomic_store(&t[20].intent_count, 0);
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, 100, &l), 0);
    atomic_store(&t[20].intent_count, 1);
    atomic_store(&t[20].pid, 0);
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, 100, &l), 0);
    atomic_store(&t[20].pid, (uint32_t)live.pid);
    atomic_store(&t[20].intent_position, 96);
    atomic_store(&t[20].intent_count, 4); /* 96..99 */
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, 100, &l), 0);
    atomic_store(&t[20].intent_count, 5); /* 96..100 */
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, 100, &l), 1);
    atomic_store(&t[20].intent_position, 101);
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, 100, &l), 0);
    /* d's own intent is not another's. */
    clear_record(&t[20]);
    fake_record(&t[10], (uint32_t)live.pid, P, 3, 100, 1, DMXP_RUNTIME_GO, 0);
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, 100, &l), 0);
    clear_record(&t[10]);
    /* Wrapping: an intent of 4 from 2^64 - 2 covers 2^64 - 2, 2^64 - 1, 0 and 1. */
    fake_record(&t[5], dead, P, 3, UINT64_MAX - 1, 4, DMXP_RUNTIME_GO, 0);
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, UINT64_MAX - 1, &l), 1);
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, 0, &l), 1);
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, 1, &l), 1);
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, 2, &l), 0);
    CHECK_EQ_U64(dmxp__covered(t, 10, 3, P, UINT64_MAX - 2, &l), 0);
    clear_record(&t[5]);
    end_live(&live);
    dmxp__liveness_end(&l);
}

/* (2) Two dead producers whose intents both name one stuck position (the claimant, and one
 * whose CAS for it failed): the earlier in the table tombstones it (one LOST, naming it), the
 * later finds it no longer stuck and is freed; a second pass has nothing left. */
static void two_dead_producers_one_position(void) {
    dmxp_channel ch, raw;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 11, 8, &ch, &err));
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_CONSUMER, &err)); /* ours: never judged */
    CHECK_OK(dmxp_channel_open(&seg, 11, &raw, &err)); /* unregistered: claims by CAS only */
    uint64_t p, n;
    CHECK_OK(dmxp__claim_send(&raw, 1, &p, &n));
    CHECK(p == 0 && n == 1);
    dmxp_peer_record *t = peer_table_of(&seg);
    uint32_t a = gone_pid(), b = gone_pid();
    fake_record(&t[100], a, DMXP_ROLE_PRODUCER, 11, p, 1, DMXP_RUNTIME_GO, 0);
    fake_record(&t[101], b, DMXP_ROLE_PRODUCER, 11, p, 1, DMXP_RUNTIME_RUST, 0);
    dmxp_recover_report rep;
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    check_report(&rep, 1, 0, 2, 0, 2);
    CHECK_EQ_U64(atomic_load(&t[100].pid), 0);
    CHECK_EQ_U64(atomic_load(&t[101].pid), 0);
    CHECK_EQ_U64(atomic_load(&t[101].intent_count), 0);
    CHECK_EQ_U64(atomic_load(&ch.slots[p & ch.mask].sequence), p + 1);
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    check_report(&rep, 0, 0, 0, 0, 0);
    CHECK_EQ_U64(records_of(&seg, a), 0);
    CHECK_EQ_U64(records_of(&seg, b), 0);
    recv_lost(&ch, p, a, DMXP_RUNTIME_GO);
    flows(&ch, p + 1);
    dmxp_channel_close(&ch);
}

/* (3) The later record defers to an earlier one, dead or alive. While a pass repairs record
 * 101 (a producer that lost the CAS for position p to another and died), the other shows up in
 * record 100, behind the pass: it registered, wrote its intent, claimed p and died meanwhile.
 * Record 101 is given back (p is 100's to repair, by a later pass) and nothing is tombstoned;
 * the next pass tombstones p from record 100 (naming its pid) and frees both. */
static uint32_t late_pid;

static void late_claimant_dies(const dmxp_channel *ch) {
    dmxp_channel raw;
    CHECK_OK(dmxp_channel_open(&seg, ch->id, &raw, NULL));
    uint64_t p, n;
    CHECK_OK(dmxp__claim_send(&raw, 1, &p, &n));
    CHECK(p == 0 && n == 1);
    fake_record(&peer_table_of(&seg)[100], late_pid, DMXP_ROLE_PRODUCER, ch->id, p, 1,
                DMXP_RUNTIME_GO, 0);
}

static void later_record_defers_to_earlier(void) {
    dmxp_channel ch;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 12, 8, &ch, &err));
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_CONSUMER, &err));
    dmxp_peer_record *t = peer_table_of(&seg);
    CHECK_EQ_U64(atomic_load(&t[100].pid), 0);
    uint32_t b = gone_pid();
    late_pid = gone_pid();
    fake_record(&t[101], b, DMXP_ROLE_PRODUCER, 12, 0, 1, DMXP_RUNTIME_RUST, 777);
    arm(101, late_claimant_dies);
    dmxp_recover_report rep;
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    CHECK_EQ_U64(hook.fired, 1);
    /* Record 100 is not judged: coming first is enough. */
    check_report(&rep, 0, 0, 0, 1, 1);
    CHECK_EQ_U64(atomic_load(&t[101].pid), b);
    CHECK_EQ_U64(atomic_load(&t[101].start_time), 777);
    CHECK_EQ_U64(atomic_load(&t[101].intent_position), 0);
    CHECK_EQ_U64(atomic_load(&t[101].intent_count), 1);
    CHECK_EQ_U64(atomic_load(&t[100].pid), late_pid);
    CHECK_EQ_U64(atomic_load(&ch.slots[0].sequence), 0);
    CHECK_EQ_U64(atomic_load(&ch.entry->tail), 1);
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    CHECK_EQ_U64(hook.fired, 1);
    check_report(&rep, 1, 0, 2, 0, 2);
    CHECK_EQ_U64(records_of(&seg, b), 0);
    CHECK_EQ_U64(records_of(&seg, late_pid), 0);
    recv_lost(&ch, 0, late_pid, DMXP_RUNTIME_GO);
    flows(&ch, 1);
    dmxp_channel_close(&ch);
}

/* (4) A dead record whose stuck position a live peer's (stale) intent covers, that live record
 * coming after it in the table: given back to its dead owner, start time restored and intent
 * intact, its wait not given back; again at the next pass. Once the live intent clears, a pass
 * tombstones the position and frees the record, giving its wait count back. */
static void live_stale_intent_defers(void) {
    dmxp_channel ch, raw;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 13, 8, &ch, &err));
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_CONSUMER, &err));
    CHECK_OK(dmxp_channel_open(&seg, 13, &raw, &err));
    uint64_t p, n;
    CHECK_OK(dmxp__claim_send(&raw, 1, &p, &n));
    CHECK(p == 0 && n == 1);
    dmxp_peer_record *t = peer_table_of(&seg);
    uint32_t dead = gone_pid();
    dmxp_peer_record *d = &t[110], *lr = &t[120];
    fake_record(d, dead, DMXP_ROLE_PRODUCER, 13, p, 1, DMXP_RUNTIME_GO, 12345);
    atomic_store(&d->waiting, DMXP_WAITING_NOT_EMPTY);
    atomic_store(&ch.entry->not_empty_waiters, 1); /* the count it died in */
    live_peer live = spawn_live();
    fake_record(lr, (uint32_t)live.pid, DMXP_ROLE_PRODUCER, 13, p, 1, DMXP_RUNTIME_PYTHON,
                dmxp_process_start_time((uint32_t)live.pid));
    dmxp_recover_report rep;
    for (int pass = 0; pass < 2; pass++) {
        CHECK_OK(dmxp_channel_recover(&ch, &rep));
        check_report(&rep, 0, 0, 0, 1, 2); /* judged: the dead record and the live one */
        CHECK_EQ_U64(atomic_load(&d->pid), dead);
        CHECK_EQ_U64(atomic_load(&d->start_time), 12345);
        CHECK_EQ_U64(atomic_load(&d->intent_position), p);
        CHECK_EQ_U64(atomic_load(&d->intent_count), 1);
        CHECK_EQ_U64(atomic_load(&d->waiting), DMXP_WAITING_NOT_EMPTY);
        CHECK_EQ_U64(atomic_load(&ch.entry->not_empty_waiters), 1);
        CHECK_EQ_U64(atomic_load(&lr->pid), (uint32_t)live.pid);
        CHECK_EQ_U64(atomic_load(&ch.slots[p & ch.mask].sequence), p);
    }
    atomic_store(&lr->intent_count, 0); /* the live peer's next attempt: its intent moves on */
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    check_report(&rep, 1, 0, 1, 0, 2);
    CHECK_EQ_U64(atomic_load(&d->pid), 0);
    CHECK_EQ_U64(atomic_load(&d->start_time), 0);
    CHECK_EQ_U64(atomic_load(&d->intent_count), 0);
    CHECK_EQ_U64(atomic_load(&d->waiting), DMXP_WAITING_NONE);
    CHECK_EQ_U64(atomic_load(&ch.entry->not_empty_waiters), 0);
    CHECK_EQ_U64(atomic_load(&lr->pid), (uint32_t)live.pid); /* alive: left alone */
    recv_lost(&ch, p, dead, DMXP_RUNTIME_GO);
    flows(&ch, p + 1);
    clear_record(lr);
    end_live(&live);
    dmxp_channel_close(&ch);
}

/* (5) A record whose channel changes between the pass's first read and its takeover (its
 * intent is another channel's now): given back, not repaired; the next pass leaves it alone,
 * unjudged (another channel's intent); back on this channel, it is repaired. */
static void to_channel_78(const dmxp_channel *ch) {
    (void)ch;
    atomic_store(&peer_table_of(&seg)[140].channel_id, 78);
}

static void channel_changed_given_back(void) {
    dmxp_channel ch, raw;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 15, 8, &ch, &err));
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_CONSUMER, &err));
    CHECK_OK(dmxp_channel_open(&seg, 15, &raw, &err));
    uint64_t p, n;
    CHECK_OK(dmxp__claim_send(&raw, 1, &p, &n));
    dmxp_peer_record *d = &peer_table_of(&seg)[140];
    uint32_t dead = gone_pid();
    fake_record(d, dead, DMXP_ROLE_PRODUCER, 15, p, 1, DMXP_RUNTIME_GO, 4242);
    arm(140, to_channel_78);
    dmxp_recover_report rep;
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    CHECK_EQ_U64(hook.fired, 1);
    check_report(&rep, 0, 0, 0, 1, 1);
    CHECK_EQ_U64(atomic_load(&d->pid), dead);
    CHECK_EQ_U64(atomic_load(&d->start_time), 4242);
    CHECK_EQ_U64(atomic_load(&d->channel_id), 78);
    CHECK_EQ_U64(atomic_load(&d->intent_count), 1);
    CHECK_EQ_U64(atomic_load(&ch.slots[p & ch.mask].sequence), p);
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    check_report(&rep, 0, 0, 0, 0, 0);
    CHECK_EQ_U64(atomic_load(&d->pid), dead);
    atomic_store(&d->channel_id, 15);
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    check_report(&rep, 1, 0, 1, 0, 1);
    recv_lost(&ch, p, dead, DMXP_RUNTIME_GO);
    flows(&ch, p + 1);
    dmxp_channel_close(&ch);
}

/* (6) A repair of this channel frees the dead idle records of every channel (giving back the
 * wait a record of another channel died in, in that channel's entry of the header) and leaves
 * another channel's dead record that holds an intent alone, without judging it. */
static void dead_idle_records_of_any_channel(void) {
    dmxp_channel ch;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 14, 8, &ch, &err));
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_CONSUMER, &err));
    dmxp_peer_record *t = peer_table_of(&seg);
    dmxp_channel_entry *e77 = dmxp__entry(&seg, 77); /* a channel nobody here opened */
    uint32_t idle_other = gone_pid(), busy_other = gone_pid(), idle_ours = gone_pid();
    fake_record(&t[130], idle_other, DMXP_ROLE_CONSUMER, 77, 9, 0, DMXP_RUNTIME_GO, 0);
    atomic_store(&t[130].waiting, DMXP_WAITING_NOT_FULL);
    atomic_store(&e77->not_full_waiters, 1);
    fake_record(&t[131], busy_other, DMXP_ROLE_PRODUCER, 77, 5, 1, DMXP_RUNTIME_GO, 0);
    fake_record(&t[132], idle_ours, DMXP_ROLE_PRODUCER, 14, 0, 0, DMXP_RUNTIME_GO, 0);
    dmxp_recover_report rep;
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    check_report(&rep, 0, 0, 2, 0, 2);
    CHECK_EQ_U64(atomic_load(&t[130].pid), 0);
    CHECK_EQ_U64(atomic_load(&t[130].waiting), DMXP_WAITING_NONE);
    CHECK_EQ_U64(atomic_load(&e77->not_full_waiters), 0);
    CHECK_EQ_U64(atomic_load(&t[132].pid), 0);
    CHECK_EQ_U64(atomic_load(&t[131].pid), busy_other);
    CHECK_EQ_U64(atomic_load(&t[131].channel_id), 77);
    CHECK_EQ_U64(atomic_load(&t[131].intent_position), 5);
    CHECK_EQ_U64(atomic_load(&t[131].intent_count), 1);
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    check_report(&rep, 0, 0, 0, 0, 0);
    CHECK_EQ_U64(atomic_load(&t[131].pid), busy_other);
    clear_record(&t[131]);
    flows(&ch, 0);
    dmxp_channel_close(&ch);
}

/* Registers handles of channel `id` of `s` (consumers, in handles[from..]) until the table of
 * `records` records, whose first `from` are this process's, is full: each takes the next
 * record; one more is refused with DMXP_E_PEER_TABLE_FULL naming the table's size. Then closes
 * them. */
#define BIG 1024u
static dmxp_channel handles[BIG + 1];

static void fill_table(const dmxp_segment *s, uint32_t id, uint32_t from, uint32_t records) {
    dmxp_error err;
    for (uint32_t i = from; i < records; i++) {
        CHECK_OK(dmxp_channel_open(s, id, &handles[i], &err));
        CHECK_OK(dmxp_channel_register(&handles[i], DMXP_ROLE_CONSUMER, &err));
        CHECK(handles[i].recv_peer == &peer_table_of(s)[i]);
    }
    dmxp_channel *extra = &handles[records];
    CHECK_OK(dmxp_channel_open(s, id, extra, &err));
    CHECK_STATUS(dmxp_channel_register(extra, DMXP_ROLE_CONSUMER, &err), DMXP_E_PEER_TABLE_FULL);
    CHECK_EQ_U64(err.found, records);
    CHECK_EQ_U64(dmxp_channel_registered(extra), 0);
    char text[256];
    CHECK(dmxp_error_format(&err, text, sizeof text) > 0 && strstr(text, "peer table full"));
    CHECK_EQ_U64(records_of(s, (uint32_t)getpid()), records);
    for (uint32_t i = from; i <= records; i++) dmxp_channel_close(&handles[i]);
    CHECK_EQ_U64(records_of(s, (uint32_t)getpid()), from);
}

/* A heap segment whose band area holds garbage (formatting leaves it alone; whoever carves a
 * band or the peer table initialises all of it). */
static unsigned char *garbage_segment(void) {
    unsigned char *m = test_segment_memory(SEG_LEN);
    memset(m + DMXP_HEADER_SIZE, 0xa5, SEG_LEN - DMXP_HEADER_SIZE);
    return m;
}

/* (7) The default table takes 256 registrations and carves 16 KiB; one of 1024 records
 * (peer_records = 1024 at format) takes 1024 and carves (and zeroes) 64 KiB. */
static void table_sizes(void) {
    dmxp_error err;
    dmxp_channel ch;
    unsigned char *m = garbage_segment();
    dmxp_segment s;
    CHECK_OK(dmxp_segment_format_memory(&s, m, SEG_LEN, (uint32_t)getpid(), &err));
    CHECK_EQ_U64(dmxp_segment_peer_records(&s), DMXP_PEER_RECORDS);
    CHECK_OK(dmxp_channel_create(&s, 3, 8, &ch, &err));
    uint64_t cursor = atomic_load(&dmxp__hdr(&s)->band_cursor);
    fill_table(&s, 3, 0, DMXP_PEER_RECORDS);
    CHECK_EQ_U64(atomic_load(&dmxp__hdr(&s)->peer_table_offset), cursor);
    CHECK_EQ_U64(atomic_load(&dmxp__hdr(&s)->band_cursor), cursor + DMXP_PEER_TABLE_SIZE);
    free(m);

    m = garbage_segment();
    CHECK_OK(dmxp_segment_format_memory_ex(&s, m, SEG_LEN, (uint32_t)getpid(), BIG, &err));
    CHECK_EQ_U64(atomic_load(&dmxp__hdr(&s)->peer_records), BIG);
    CHECK_EQ_U64(dmxp_segment_peer_records(&s), BIG);
    CHECK_OK(dmxp_channel_create(&s, 3, 8, &ch, &err));
    CHECK_EQ_U64(ch.peer_records, BIG);
    cursor = atomic_load(&dmxp__hdr(&s)->band_cursor);
    /* 300 registrations, more than a default table holds, all succeed ... */
    for (uint32_t i = 0; i < 300; i++) {
        CHECK_OK(dmxp_channel_open(&s, 3, &handles[i], &err));
        CHECK_OK(dmxp_channel_register(&handles[i], DMXP_ROLE_PRODUCER, &err));
    }
    CHECK_EQ_U64(atomic_load(&dmxp__hdr(&s)->peer_table_offset), cursor);
    CHECK_EQ_U64(atomic_load(&dmxp__hdr(&s)->band_cursor), cursor + BIG * 64); /* 65536 */
    CHECK(handles[299].send_peer == &peer_table_of(&s)[299]);
    CHECK_EQ_U64(records_of(&s, (uint32_t)getpid()), 300);
    for (uint32_t i = 0; i < 300; i++) dmxp_channel_close(&handles[i]);
    /* ... and so do the next 724, to the last record. */
    fill_table(&s, 3, 0, BIG);
    free(m);
}

/* (8) Repair, sweep and liveness on a table of 1024 records: a dead producer's record at index
 * 900 is repaired (deferred first while a live record at 1000 covers its position); dead idle
 * records past 256 are freed by dmxp_free_dead_records and by a registration's sweep; each
 * record is judged at most once per pass, whatever the positions (300 dead producers whose
 * intents all cover 8 stuck positions: 300 judgements, one allocation); and a pass whose
 * verdicts cannot be allocated judges, frees and repairs nothing (DMXP_E_OS), the
 * registration it precedes still taking a record. */
static void large_table_repair(void) {
    dmxp_error err;
    unsigned char *m = test_segment_memory(SEG_LEN);
    dmxp_segment s;
    CHECK_OK(dmxp_segment_format_memory_ex(&s, m, SEG_LEN, (uint32_t)getpid(), BIG, &err));
    dmxp_channel ch, raw;
    CHECK_OK(dmxp_channel_create(&s, 21, 8, &ch, &err));
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_CONSUMER, &err)); /* ours: never judged */
    CHECK_OK(dmxp_channel_open(&s, 21, &raw, &err));                /* claims by CAS only */
    dmxp_peer_record *t = peer_table_of(&s);
    const uint16_t P = DMXP_ROLE_PRODUCER;
    uint64_t p, n;
    CHECK_OK(dmxp__claim_send(&raw, 1, &p, &n));
    CHECK(p == 0 && n == 1);
    uint32_t dead = gone_pid();
    fake_record(&t[900], dead, P, 21, p, 1, DMXP_RUNTIME_GO, 0);
    live_peer live = spawn_live();
    fake_record(&t[1000], (uint32_t)live.pid, P, 21, p, 1, DMXP_RUNTIME_PYTHON,
                dmxp_process_start_time((uint32_t)live.pid));
    dmxp_recover_report rep;
    calloc_calls = 0;
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    check_report(&rep, 0, 0, 0, 1, 2);
    CHECK_EQ_U64(calloc_calls, 1);
    CHECK_EQ_U64(atomic_load(&t[900].pid), dead);
    CHECK_EQ_U64(atomic_load(&t[900].intent_count), 1);
    clear_record(&t[1000]);
    end_live(&live);
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    check_report(&rep, 1, 0, 1, 0, 1);
    CHECK_EQ_U64(atomic_load(&t[900].pid), 0);
    recv_lost(&ch, p, dead, DMXP_RUNTIME_GO);
    flows(&ch, p + 1);

    /* 600 dead idle records, at 256..855: the sweep frees them all, judging each once. */
    uint32_t gone = gone_pid();
    for (uint32_t i = 256; i < 856; i++) fake_record(&t[i], gone, P, 21, 0, 0, DMXP_RUNTIME_GO, 0);
    CHECK_OK(dmxp_free_dead_records(&ch, &rep));
    CHECK_EQ_U64(rep.records_freed, 600);
    CHECK_EQ_U64(rep.liveness_checks, 600);
    CHECK_EQ_U64(records_of(&s, gone), 0);
    /* The last record, dead and idle: freed by the sweep a registration runs first. */
    fake_record(&t[BIG - 1], gone, P, 21, 0, 0, DMXP_RUNTIME_GO, 0);
    dmxp_channel other;
    CHECK_OK(dmxp_channel_open(&s, 21, &other, &err));
    CHECK_OK(dmxp_channel_register(&other, DMXP_ROLE_PRODUCER, &err));
    CHECK_EQ_U64(atomic_load(&t[BIG - 1].pid), 0);
    CHECK(other.send_peer == &t[1]);
    dmxp_channel_close(&other);

    /* 300 dead producers (records 300..599) whose intents all name the 8 positions claimed. */
    CHECK_OK(dmxp__claim_send(&raw, 8, &p, &n));
    CHECK_EQ_U64(n, 8);
    for (uint32_t i = 300; i < 600; i++) fake_record(&t[i], gone, P, 21, p, 8, DMXP_RUNTIME_GO, 0);
    calloc_calls = 0;
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    check_report(&rep, 8, 0, 300, 0, 300);
    CHECK_EQ_U64(calloc_calls, 1);
    dmxp_recv_counts c;
    CHECK_OK(dmxp_try_recv_batch_counts(&ch, 16, NULL, NULL, NULL, &c));
    CHECK_EQ_U64(c.lost, 8);
    flows(&ch, p + 8);

    /* No memory for the verdicts: nothing judged, freed or repaired, and the registration
     * still takes a record (its sweep skipped); once memory is back, the pass repairs. */
    CHECK_OK(dmxp__claim_send(&raw, 1, &p, &n));
    fake_record(&t[900], dead, P, 21, p, 1, DMXP_RUNTIME_GO, 0);
    fake_record(&t[901], gone, P, 21, 0, 0, DMXP_RUNTIME_GO, 0);
    calloc_fails = 1;
    calloc_calls = 0;
    CHECK_STATUS(dmxp_channel_recover(&ch, &rep), DMXP_E_OS);
    check_report(&rep, 0, 0, 0, 0, 0);
    CHECK_STATUS(dmxp_free_dead_records(&ch, &rep), DMXP_E_OS);
    check_report(&rep, 0, 0, 0, 0, 0);
    CHECK_OK(dmxp_channel_register(&other, DMXP_ROLE_PRODUCER, &err));
    CHECK_EQ_U64(calloc_calls, 3);
    CHECK_EQ_U64(atomic_load(&t[900].pid), dead);
    CHECK_EQ_U64(atomic_load(&t[901].pid), gone);
    CHECK_EQ_U64(atomic_load(&ch.slots[p & ch.mask].sequence), p);
    calloc_fails = 0;
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    check_report(&rep, 1, 0, 2, 0, 2);
    recv_lost(&ch, p, dead, DMXP_RUNTIME_GO);
    flows(&ch, p + 1);
    dmxp_channel_close(&other);
    dmxp_channel_close(&ch);
    CHECK_EQ_U64(records_of(&s, (uint32_t)getpid()), 0);
    /* The default table's verdicts are never allocated. */
    dmxp_channel d;
    CHECK_OK(dmxp_channel_open_or_create(&seg, 16, 8, 0, &d, NULL, &err));
    calloc_calls = 0;
    CHECK_OK(dmxp_channel_register(&d, DMXP_ROLE_PRODUCER, &err));
    CHECK_OK(dmxp_channel_recover(&d, &rep));
    CHECK_OK(dmxp_free_dead_records(&d, &rep));
    CHECK_EQ_U64(calloc_calls, 0);
    dmxp_channel_close(&d);
    free(m);
}

/* (9) A peer rewrites peer_records after this process attached (to 16384 on a segment with
 * room for one default table, then to 20000): the handle and every channel opened from it keep
 * the 256 records validated at attach. Registration carves 16 KiB (1 MiB would not fit) and
 * fills the table to its 256th record, the sweep and the repair (of a dead record at 255) stay
 * in it (the segment is exactly as long as the heap buffer: ASan would see a byte past it).
 * A process attaching now refuses the segment. */
static void rewritten_peer_records(void) {
    enum { LEN = DMXP_HEADER_SIZE + 8 * DMXP_SLOT_SIZE + DMXP_PEER_TABLE_SIZE };
    _Static_assert(LEN % 128 == 0, "the heap buffer is exactly the segment");
    dmxp_error err;
    unsigned char *m = test_segment_memory(LEN);
    dmxp_segment s, s2;
    CHECK_OK(dmxp_segment_format_memory(&s, m, LEN, (uint32_t)getpid(), &err));
    dmxp_header *h = dmxp__hdr(&s);
    dmxp_channel ch, raw;
    CHECK_OK(dmxp_channel_create(&s, 0, 8, &ch, &err));
    atomic_store(&h->peer_records, DMXP_MAX_PEER_RECORDS);
    CHECK_OK(dmxp_channel_open(&s, 0, &raw, &err)); /* opened after the rewrite */
    CHECK_EQ_U64(raw.peer_records, DMXP_PEER_RECORDS);
    CHECK_EQ_U64(dmxp_segment_peer_records(&s), DMXP_PEER_RECORDS);
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_CONSUMER, &err));
    uint64_t table = DMXP_HEADER_SIZE + 8 * DMXP_SLOT_SIZE;
    CHECK_EQ_U64(atomic_load(&h->peer_table_offset), table);
    CHECK_EQ_U64(atomic_load(&h->band_cursor), LEN);
    dmxp_peer_record *t = peer_table_of(&s);
    uint64_t p, n;
    CHECK_OK(dmxp__claim_send(&raw, 1, &p, &n));
    uint32_t dead = gone_pid();
    fake_record(&t[DMXP_PEER_RECORDS - 1], dead, DMXP_ROLE_PRODUCER, 0, p, 1, DMXP_RUNTIME_GO, 0);
    dmxp_recover_report rep;
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    check_report(&rep, 1, 0, 1, 0, 1);
    recv_lost(&ch, p, dead, DMXP_RUNTIME_GO);
    flows(&ch, p + 1);
    /* Full at 256: record 0 is ch's, the others go to new handles. */
    fill_table(&s, 0, 1, DMXP_PEER_RECORDS);
    CHECK_OK(dmxp_free_dead_records(&ch, &rep));
    check_report(&rep, 0, 0, 0, 0, 0);
    /* Attaching now: a 1 MiB table at `table` runs past the segment; 20000 is no count. */
    CHECK_STATUS(dmxp_segment_attach_memory(&s2, m, LEN, &err), DMXP_E_PEER_TABLE_OUT_OF_RANGE);
    CHECK_EQ_U64(err.value3, (uint64_t)DMXP_MAX_PEER_RECORDS * 64);
    atomic_store(&h->peer_records, 20000);
    CHECK_STATUS(dmxp_segment_attach_memory(&s2, m, LEN, &err),
                 DMXP_E_PEER_RECORDS_OUT_OF_RANGE);
    CHECK_EQ_U64(err.found, 20000);
    /* The handle attached before is unaffected. */
    CHECK_OK(dmxp_channel_open(&s, 0, &raw, &err));
    CHECK_OK(dmxp_segment_validate_all(&s, &err));
    CHECK_OK(dmxp__claim_send(&raw, 1, &p, &n));
    fake_record(&t[DMXP_PEER_RECORDS - 1], dead, DMXP_ROLE_PRODUCER, 0, p, 1, DMXP_RUNTIME_GO, 0);
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    check_report(&rep, 1, 0, 1, 0, 1);
    recv_lost(&ch, p, dead, DMXP_RUNTIME_GO);
    dmxp_channel_close(&ch);
    free(m);
}

int main(void) {
    void *mem = mmap(NULL, SEG_LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    dmxp_error err;
    CHECK_OK(dmxp_segment_format_memory(&seg, mem, SEG_LEN, (uint32_t)getpid(), &err));
    covered_rule();
    two_dead_producers_one_position();
    later_record_defers_to_earlier();
    live_stale_intent_defers();
    channel_changed_given_back();
    dead_idle_records_of_any_channel();
    table_sizes();
    large_table_repair();
    rewritten_peer_records();
    munmap(mem, SEG_LEN);
    TEST_DONE("test_repair");
}
