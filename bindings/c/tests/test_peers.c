/* The peer table across pid namespaces and fork (PROTOCOL.md §11.2, §11.5), liveness judged
 * once per repair pass, and the miss streak that gates the non-blocking calls' look for a
 * stuck channel. The segment is anonymous MAP_SHARED memory, shared with forked children. */
#include "util.h"

#define SEG_LEN (1u << 20)

static dmxp_segment seg;

/* Fills record `r` as a producer of channel `id` that claimed [position, position + count). */
static void fake_producer(dmxp_peer_record *r, uint32_t pid, uint64_t pid_ns, uint32_t id,
                          uint64_t position, uint32_t count) {
    atomic_store(&r->pid, pid);
    atomic_store(&r->runtime, DMXP_RUNTIME_GO);
    atomic_store(&r->role, DMXP_ROLE_PRODUCER);
    atomic_store(&r->channel_id, id);
    atomic_store(&r->intent_position, position);
    atomic_store(&r->intent_count, count);
    atomic_store(&r->pid_ns, pid_ns);
    atomic_store(&r->start_time, 0);
}

/* (1) Registration records this process's pid namespace and start time. */
static void registration_identity(void) {
    dmxp_channel ch;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 1, 4, &ch, &err));
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER, &err));
    uint64_t ns = dmxp_pid_namespace();
    CHECK(ns != 0); /* Linux with /proc */
    struct stat st;
    CHECK(stat("/proc/self/ns/pid", &st) == 0);
    CHECK_EQ_U64(ns, st.st_ino);
    dmxp_identity me = dmxp_self_identity();
    CHECK_EQ_U64(me.pid, (uint32_t)getpid());
    CHECK_EQ_U64(me.pid_ns, ns);
    CHECK_EQ_U64(me.start_time, dmxp_process_start_time((uint32_t)getpid()));
    dmxp_peer_record *rs[2] = {ch.send_peer, ch.recv_peer};
    for (int i = 0; i < 2; i++) {
        CHECK(rs[i] != NULL);
        CHECK_EQ_U64(atomic_load(&rs[i]->pid), me.pid);
        CHECK_EQ_U64(atomic_load(&rs[i]->pid_ns), ns);
        CHECK_EQ_U64(atomic_load(&rs[i]->start_time), me.start_time);
        CHECK_EQ_U64(atomic_load(&rs[i]->waiting), DMXP_WAITING_NONE);
        CHECK_EQ_U64(atomic_load(&rs[i]->intent_flags), 0);
        for (int k = 0; k < 2; k++) CHECK_EQ_U64(atomic_load(&rs[i]->zero[k]), 0);
    }
    CHECK_EQ_U64(offsetof(dmxp_peer_record, pid_ns), 32);
    CHECK_EQ_U64(offsetof(dmxp_peer_record, waiting), 40);
    dmxp_channel_close(&ch);
    CHECK_EQ_U64(records_of(&seg, me.pid), 0);
}

/* (2) A record of another pid namespace names a pid this process cannot see: alive, so never
 * repaired, even though no process has that pid here. The same record in our namespace, or
 * with pid_ns 0 (a client that predates the field), is judged by its pid and repaired. */
static void foreign_namespace(void) {
    dmxp_channel ch, raw;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 2, 8, &ch, &err));
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_CONSUMER, &err));
    CHECK_OK(dmxp_channel_open(&seg, 2, &raw, &err)); /* unregistered: claims by CAS only */
    uint64_t ns = dmxp_pid_namespace();
    uint32_t dead = gone_pid();
    CHECK(dmxp_peer_dead(dead, 0));
    CHECK(!dmxp_peer_record_dead(dead, 0, ns + 1));
    CHECK(dmxp_peer_record_dead(dead, 0, ns));
    CHECK(dmxp_peer_record_dead(dead, 0, 0));
    uint64_t p, n;
    CHECK_OK(dmxp__claim_send(&raw, 1, &p, &n));
    dmxp_peer_record *d = &peer_table_of(&seg)[200];
    fake_producer(d, dead, ns + 1, 2, p, 1);
    dmxp_recover_report rep;
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    CHECK_EQ_U64(rep.records_freed, 0);
    CHECK_EQ_U64(rep.lost, 0);
    CHECK_EQ_U64(atomic_load(&d->pid), dead); /* left alone */
    CHECK_EQ_U64(atomic_load(&ch.slots[p & ch.mask].sequence), p);
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len;
    CHECK_STATUS(dmxp_recv_timeout(&ch, buf, sizeof buf, NULL, &len, 40000000), DMXP_E_TIMEOUT);
    CHECK_EQ_U64(atomic_load(&d->pid), dead);
    /* In our namespace: repaired. */
    atomic_store(&d->pid_ns, ns);
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    CHECK_EQ_U64(rep.records_freed, 1);
    CHECK_EQ_U64(rep.lost, 1);
    CHECK_EQ_U64(atomic_load(&d->pid), 0);
    dmxp_meta meta;
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, &meta, &len), DMXP_E_LOST);
    CHECK_EQ_U64(meta.message_id, p);
    CHECK_EQ_U64(meta.sender_pid, dead);
    /* pid_ns 0: judged by the pid. */
    CHECK_OK(dmxp__claim_send(&raw, 1, &p, &n));
    fake_producer(d, dead, 0, 2, p, 1);
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    CHECK(rep.records_freed == 1 && rep.lost == 1);
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, &meta, &len), DMXP_E_LOST);
    dmxp_channel_close(&ch);
}

/* (3) Liveness is judged once per record and pass, however many positions its intent and
 * other intents name: two dead records whose intents both cover four claimed positions (the
 * second a stale one) cost two judgements. */
static void liveness_once_per_pass(void) {
    dmxp_channel ch, raw;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 3, 8, &ch, &err));
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_CONSUMER, &err)); /* ours: never judged */
    CHECK_OK(dmxp_channel_open(&seg, 3, &raw, &err));
    uint64_t p, n;
    CHECK_OK(dmxp__claim_send(&raw, 4, &p, &n));
    CHECK_EQ_U64(n, 4);
    uint64_t ns = dmxp_pid_namespace();
    dmxp_peer_record *t = peer_table_of(&seg);
    fake_producer(&t[100], gone_pid(), ns, 3, p, 4);
    fake_producer(&t[101], gone_pid(), ns, 3, p, 4);
    dmxp_recover_report rep;
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    CHECK_EQ_U64(rep.records_freed, 2);
    CHECK_EQ_U64(rep.lost, 4);
    CHECK_EQ_U64(rep.liveness_checks, 2);
    CHECK_OK(dmxp_channel_recover(&ch, &rep)); /* nothing left to judge but ourselves */
    CHECK_EQ_U64(rep.liveness_checks, 0);
    dmxp_recv_counts c;
    CHECK_OK(dmxp_try_recv_batch_counts(&ch, 8, NULL, NULL, NULL, &c));
    CHECK_EQ_U64(c.lost, 4);
    dmxp_channel_close(&ch);
}

/* (4) Fork: a child that closes a handle it inherited leaves its parent's records alone; a
 * child that registers does so with its own pid, start time and namespace (not the parent's,
 * cached before the fork). */
static void fork_identity(void) {
    dmxp_channel ch;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 4, 4, &ch, &err));
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER, &err));
    uint32_t me = (uint32_t)getpid();
    dmxp_identity mine = dmxp_self_identity(); /* cached now */
    CHECK_EQ_U64(records_of(&seg, me), 2);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        dmxp_channel_close(&ch); /* inherited: not this process's records */
        _exit(ch.send_peer == NULL && ch.recv_peer == NULL ? 0 : 40);
    }
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status));
    CHECK_EQ_U64(WEXITSTATUS(status), 0);
    CHECK_EQ_U64(records_of(&seg, me), 2);
    CHECK_EQ_U64(atomic_load(&ch.send_peer->pid), me);
    CHECK_EQ_U64(atomic_load(&ch.recv_peer->pid), me);
    CHECK_EQ_U64(atomic_load(&ch.send_peer->start_time), mine.start_time);

    /* Start times count clock ticks (1/100 s): let the child start in a later tick than this
     * process did, so that a start time cached across the fork would show. */
    dmxp__sleep_ns(30000000);
    int fd;
    child = fork_reporting(&fd);
    if (child == 0) {
        dmxp_channel own;
        if (dmxp_channel_open(&seg, 4, &own, NULL) != DMXP_OK) _exit(41);
        if (dmxp_channel_register(&own, DMXP_ROLE_PRODUCER, NULL) != DMXP_OK) _exit(42);
        dmxp_identity self = dmxp_self_identity();
        uint64_t start = dmxp_process_start_time((uint32_t)getpid());
        if (self.pid != (uint32_t)getpid() || self.start_time != start) _exit(43);
        if (atomic_load(&own.send_peer->pid) != self.pid) _exit(44);
        if (atomic_load(&own.send_peer->start_time) != start) _exit(45);
        if (atomic_load(&own.send_peer->pid_ns) != dmxp_pid_namespace()) _exit(46);
        /* A repair pass here judges the parent (another pid, alive) and frees nothing. */
        dmxp_recover_report rep;
        if (dmxp_channel_recover(&own, &rep) != DMXP_OK || rep.records_freed != 0) _exit(47);
        if (write(fd, &start, sizeof start) != (ssize_t)sizeof start) _exit(48);
        _exit(0); /* dies registered: the parent finds the record */
    }
    uint64_t child_start = 0;
    CHECK(read(fd, &child_start, sizeof child_start) == (ssize_t)sizeof child_start);
    close(fd);
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status));
    CHECK_EQ_U64(WEXITSTATUS(status), 0);
    CHECK(child_start != 0 && child_start != mine.start_time);
    dmxp_peer_record *t = peer_table_of(&seg);
    int found = 0;
    for (uint32_t i = 0; i < DMXP_PEER_RECORDS; i++)
        if (atomic_load(&t[i].pid) == (uint32_t)child) {
            CHECK_EQ_U64(atomic_load(&t[i].start_time), child_start);
            found++;
        }
    CHECK_EQ_U64(found, 1);
    /* This process's identity is still its own, and the dead child's record is repaired. */
    CHECK_EQ_U64(dmxp_self_identity().start_time, mine.start_time);
    dmxp_recover_report rep;
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    CHECK_EQ_U64(rep.records_freed, 1);
    CHECK_EQ_U64(records_of(&seg, (uint32_t)child), 0);
    CHECK_EQ_U64(records_of(&seg, me), 2);
    dmxp_channel_close(&ch);
    CHECK_EQ_U64(records_of(&seg, me), 0);
}

/* (5) The non-blocking calls look for a stuck channel only from the 64th miss
 * in a row on; a hit starts the streak again. The blocking calls look before every sleep. */
static void miss_streak(void) {
    enum { STREAK = 64 }; /* as the Rust facade's MissStreak::THRESHOLD */
    CHECK_EQ_U64(DMXP_MISS_STREAK, STREAK);
    dmxp_channel ch;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 5, 2, &ch, &err));
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len;
    for (uint32_t i = 1; i < STREAK; i++)
        CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, NULL, &len), DMXP_E_EMPTY);
    CHECK_EQ_U64(dmxp_channel_stuck_looks(&ch), 0);
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, NULL, &len), DMXP_E_EMPTY);
    CHECK_EQ_U64(dmxp_channel_stuck_looks(&ch), 1);
    CHECK_STATUS(dmxp_try_recv_batch_counts(&ch, 4, NULL, NULL, NULL, NULL), DMXP_E_EMPTY);
    CHECK_EQ_U64(dmxp_channel_stuck_looks(&ch), 2);
    CHECK_OK(dmxp_try_send(&ch, "x", 1, NULL, NULL));
    CHECK_OK(dmxp_try_recv(&ch, buf, sizeof buf, NULL, &len)); /* a hit */
    for (uint32_t i = 1; i < STREAK; i++)
        CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, NULL, &len), DMXP_E_EMPTY);
    CHECK_EQ_U64(dmxp_channel_stuck_looks(&ch), 2);
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, NULL, &len), DMXP_E_EMPTY);
    CHECK_EQ_U64(dmxp_channel_stuck_looks(&ch), 3);
    /* Sends: the ring of 2 full, then a streak of full results. */
    CHECK_OK(dmxp_try_send(&ch, "a", 1, NULL, NULL));
    CHECK_OK(dmxp_try_send(&ch, "b", 1, NULL, NULL));
    const void *datas[1] = {"c"};
    size_t lens[1] = {1};
    for (uint32_t i = 1; i < STREAK; i++) {
        if (i % 2)
            CHECK_STATUS(dmxp_try_send(&ch, "c", 1, NULL, NULL), DMXP_E_FULL);
        else
            CHECK_STATUS(dmxp_try_send_batch_counts(&ch, datas, lens, 1, NULL, NULL),
                         DMXP_E_FULL);
    }
    CHECK_EQ_U64(dmxp_channel_stuck_looks(&ch), 3);
    CHECK_STATUS(dmxp_try_send(&ch, "c", 1, NULL, NULL), DMXP_E_FULL);
    CHECK_EQ_U64(dmxp_channel_stuck_looks(&ch), 4);
    /* A blocking call looks before its sleep without a streak. */
    CHECK_STATUS(dmxp_send_timeout(&ch, "c", 1, NULL, NULL, 1000000), DMXP_E_TIMEOUT);
    CHECK(dmxp_channel_stuck_looks(&ch) >= 5);
}

/* (6) With the streak and the grace period, a spinning non-blocking receive repairs a
 * position a dead producer left claimed, and a spinning send a slot a dead consumer held. */
static void nonblocking_repair(void) {
    dmxp_channel ch, raw;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 6, 2, &ch, &err));
    CHECK_OK(dmxp_channel_open(&seg, 6, &raw, &err));
    uint64_t p, n;
    CHECK_OK(dmxp__claim_send(&raw, 1, &p, &n));
    fake_producer(&peer_table_of(&seg)[150], gone_pid(), dmxp_pid_namespace(), 6, p, 1);
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len;
    dmxp_meta meta;
    dmxp_status s = DMXP_E_EMPTY;
    int64_t deadline = (int64_t)dmxp_now_ns() + 5 * INT64_C(1000000000);
    while (s == DMXP_E_EMPTY && (int64_t)dmxp_now_ns() < deadline) {
        s = dmxp_try_recv(&ch, buf, sizeof buf, &meta, &len);
        if (s == DMXP_E_EMPTY) dmxp__sleep_ns(100000);
    }
    CHECK_STATUS(s, DMXP_E_LOST);
    CHECK_EQ_U64(meta.message_id, p);

    /* A consumer that died holding slot 1 (position 1): the ring of 2 fills, then stays full. */
    CHECK_OK(dmxp_try_send(&ch, "m1", 2, NULL, NULL));
    uint32_t needed;
    CHECK_OK(dmxp__claim_recv(&raw, 1, SIZE_MAX, &p, &n, &needed));
    CHECK_EQ_U64(p, 1);
    dmxp_peer_record *d = &peer_table_of(&seg)[151];
    fake_producer(d, gone_pid(), dmxp_pid_namespace(), 6, p, 1);
    atomic_store(&d->role, DMXP_ROLE_CONSUMER);
    CHECK_OK(dmxp_try_send(&ch, "m2", 2, NULL, NULL));
    CHECK_OK(dmxp_try_recv(&ch, buf, sizeof buf, &meta, &len));
    CHECK_EQ_U64(meta.message_id, 2);
    /* Position 3 maps to the held slot: full until the repair frees it. */
    s = DMXP_E_FULL;
    deadline = (int64_t)dmxp_now_ns() + 5 * INT64_C(1000000000);
    while (s == DMXP_E_FULL && (int64_t)dmxp_now_ns() < deadline) {
        s = dmxp_try_send(&ch, "m3", 2, NULL, NULL);
        if (s == DMXP_E_FULL) dmxp__sleep_ns(100000);
    }
    CHECK_OK(s);
    CHECK_EQ_U64(atomic_load(&d->pid), 0);
}

int main(void) {
    void *mem = mmap(NULL, SEG_LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    dmxp_error err;
    CHECK_OK(dmxp_segment_format_memory(&seg, mem, SEG_LEN, (uint32_t)getpid(), &err));
    registration_identity();
    foreign_namespace();
    liveness_once_per_pass();
    fork_identity();
    miss_streak();
    nonblocking_repair();
    munmap(mem, SEG_LEN);
    TEST_DONE("test_peers");
}
