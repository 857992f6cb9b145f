/* Waiters that die (PROTOCOL.md §11.9) and the sweep of dead records at registration (§11.10).
 * A registered handle that waits names the count it is in, in its record's `waiting` word;
 * whoever frees the record after its death (a repair pass, the sweep a registration runs)
 * gives the count back, so wakers stop making futex_wake calls nobody needs. A waker bumps the
 * *_seq word right before each futex_wake (and only then), so "no futex_wake" is checked as
 * "the word did not move". Each test runs on its own anonymous MAP_SHARED segment, shared with
 * forked children; states are waited for by polling with a deadline, never by a fixed sleep. */
#include "util.h"

#define SEC INT64_C(1000000000)
#define DEADLINE_NS (20 * SEC) /* how long a poll waits for a state: generous, for loaded CI */

/* The one record of `pid`, polled for until it appears. */
static dmxp_peer_record *await_record_of(const dmxp_segment *seg, uint32_t pid) {
    int64_t deadline = (int64_t)dmxp_now_ns() + DEADLINE_NS;
    for (;;) {
        if (atomic_load(&dmxp__hdr(seg)->peer_table_offset) != 0) {
            dmxp_peer_record *t = peer_table_of(seg);
            for (uint32_t i = 0; i < DMXP_PEER_RECORDS; i++)
                if (atomic_load(&t[i].pid) == pid && atomic_load(&t[i].start_time) != 0) {
                    CHECK_EQ_U64(records_of(seg, pid), 1);
                    return &t[i];
                }
        }
        CHECK((int64_t)dmxp_now_ns() < deadline);
        dmxp__sleep_ns(1000000);
    }
}

static void kill_and_reap(pid_t child) {
    CHECK(kill(child, SIGKILL) == 0);
    int status;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    CHECK(dmxp_peer_dead((uint32_t)child, 0));
}

/* Stops `child` (SIGSTOP, and waitpid until it is stopped) at a moment when its record says
 * it is counted (`waiting == kind`): a stopped process changes neither the word nor the count,
 * so the state it is then looked at (or killed) in is known. The child loops in wait slices
 * (at most 100 ms) and its word is 0 between two of them: stop, look, and if that was such a
 * moment, continue it and try again. The word says "counted", so the count, of this one
 * waiter, is exactly 1. */
static void stop_while_counted(pid_t child, _Atomic uint32_t *count, dmxp_peer_record *rec,
                               uint32_t kind) {
    int64_t deadline = (int64_t)dmxp_now_ns() + DEADLINE_NS;
    for (;;) {
        CHECK(kill(child, SIGSTOP) == 0);
        int status;
        CHECK(waitpid(child, &status, WUNTRACED) == child && WIFSTOPPED(status));
        if (atomic_load(&rec->waiting) == kind) break;
        CHECK(kill(child, SIGCONT) == 0);
        CHECK((int64_t)dmxp_now_ns() < deadline);
        dmxp__sleep_ns(1000000);
    }
    CHECK_EQ_U64(atomic_load(count), 1);
}

/* (1) A consumer killed while it blocks in a receive. While it waits, the entry's
 * not_empty_waiters is 1 and its record's waiting word 1 (NOT_EMPTY); killed, it leaves both
 * behind, and every send then wakes nobody (the not_empty_seq word moves). The next
 * registration's sweep frees its record and gives the count back to 0: sends make no
 * futex_wake any more. */
static void dead_receiver_given_back_by_registration(void) {
    dmxp_segment seg;
    new_segment(&seg);
    dmxp_channel prod;
    create_registered(&seg, 1, 8, DMXP_ROLE_PRODUCER, &prod);
    dmxp_channel_entry *e = prod.entry;
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        dmxp_channel cons;
        child_open_registered(&seg, 1, DMXP_ROLE_CONSUMER, &cons);
        unsigned char buf[DMXP_MSG_INLINE];
        size_t len;
        (void)dmxp_recv_timeout(&cons, buf, sizeof buf, NULL, &len, 120 * SEC);
        _exit(22); /* never: it is killed first */
    }
    dmxp_peer_record *rec = await_record_of(&seg, (uint32_t)child);
    CHECK(rec != prod.send_peer);
    CHECK_EQ_U64(atomic_load(&rec->role), DMXP_ROLE_CONSUMER);
    CHECK_EQ_U64(atomic_load(&rec->channel_id), 1);
    stop_while_counted(child, &e->not_empty_waiters, rec, DMXP_WAITING_NOT_EMPTY);
    CHECK_EQ_U64(atomic_load(&e->not_empty_waiters), 1);
    CHECK_EQ_U64(atomic_load(&rec->waiting), DMXP_WAITING_NOT_EMPTY);
    CHECK_EQ_U64(atomic_load(&rec->intent_count), 0);
    kill_and_reap(child);
    /* Dead, still counted: a send wakes nobody, at the price of a futex_wake. */
    CHECK_EQ_U64(atomic_load(&e->not_empty_waiters), 1);
    CHECK_EQ_U64(atomic_load(&rec->pid), (uint32_t)child);
    uint32_t seq0 = atomic_load(&e->not_empty_seq);
    CHECK_OK(dmxp_try_send(&prod, "a", 1, NULL, NULL));
    CHECK_EQ_U64(atomic_load(&e->not_empty_seq), seq0 + 1);
    /* A new registration sweeps first: the dead record is freed (its count given back), then
     * taken by the registration as the first free record. */
    dmxp_error err;
    dmxp_channel cons;
    CHECK_OK(dmxp_channel_open(&seg, 1, &cons, &err));
    CHECK_OK(dmxp_channel_register(&cons, DMXP_ROLE_CONSUMER, &err));
    CHECK_EQ_U64(atomic_load(&e->not_empty_waiters), 0);
    CHECK_EQ_U64(records_of(&seg, (uint32_t)child), 0);
    CHECK(cons.recv_peer == rec); /* freed, then reused */
    CHECK_EQ_U64(atomic_load(&rec->pid), (uint32_t)getpid());
    CHECK_EQ_U64(atomic_load(&rec->waiting), DMXP_WAITING_NONE);
    CHECK_EQ_U64(atomic_load(&rec->start_time), dmxp_self_identity().start_time);
    /* No futex_wake now. */
    uint32_t seq1 = atomic_load(&e->not_empty_seq);
    for (int i = 0; i < 3; i++) CHECK_OK(dmxp_try_send(&prod, "b", 1, NULL, NULL));
    CHECK_EQ_U64(atomic_load(&e->not_empty_seq), seq1);
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len;
    for (int i = 0; i < 4; i++)
        CHECK_OK(dmxp_recv_timeout(&cons, buf, sizeof buf, NULL, &len, 10 * SEC));
    CHECK_EQ_U64(atomic_load(&e->not_empty_waiters), 0);
    dmxp_channel_close(&cons);
    dmxp_channel_close(&prod);
    drop_segment(&seg);
}

/* (2) A producer killed while it blocks in a send on a full ring (not_full_waiters, waiting
 * 2 = NOT_FULL): the repair pass of its channel frees its record and gives the count back, and
 * the receives that free slots then make no futex_wake. */
static void dead_sender_given_back_by_repair(void) {
    dmxp_segment seg;
    new_segment(&seg);
    dmxp_channel ch;
    create_registered(&seg, 2, 2, DMXP_ROLE_CONSUMER, &ch);
    fill_two_slots(&ch);
    dmxp_channel_entry *e = ch.entry;
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        dmxp_channel prod;
        child_open_registered(&seg, 2, DMXP_ROLE_PRODUCER, &prod);
        (void)dmxp_send_timeout(&prod, "late", 4, NULL, NULL, 120 * SEC);
        _exit(22);
    }
    dmxp_peer_record *rec = await_record_of(&seg, (uint32_t)child);
    stop_while_counted(child, &e->not_full_waiters, rec, DMXP_WAITING_NOT_FULL);
    CHECK_EQ_U64(atomic_load(&rec->intent_count), 0);
    kill_and_reap(child);
    CHECK_EQ_U64(atomic_load(&e->not_full_waiters), 1);
    CHECK_EQ_U64(atomic_load(&e->not_empty_waiters), 0);
    dmxp_recover_report rep;
    CHECK_OK(dmxp_channel_recover(&ch, &rep));
    CHECK_EQ_U64(rep.records_freed, 1);
    CHECK_EQ_U64(rep.lost, 0);
    CHECK_EQ_U64(rep.freed, 0);
    CHECK_EQ_U64(atomic_load(&e->not_full_waiters), 0);
    CHECK_EQ_U64(atomic_load(&e->not_empty_waiters), 0);
    CHECK_EQ_U64(atomic_load(&rec->pid), 0);
    CHECK_EQ_U64(atomic_load(&rec->waiting), DMXP_WAITING_NONE);
    CHECK_EQ_U64(atomic_load(&rec->start_time), 0);
    uint32_t seq = atomic_load(&e->not_full_seq);
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len;
    CHECK_OK(dmxp_try_recv(&ch, buf, sizeof buf, NULL, &len));
    CHECK_OK(dmxp_try_recv(&ch, buf, sizeof buf, NULL, &len));
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, NULL, &len), DMXP_E_EMPTY);
    CHECK_EQ_U64(atomic_load(&e->not_full_seq), seq);
    dmxp_channel_close(&ch);
    drop_segment(&seg);
}

/* A child that registers `roles` on channel `id` and idles until it is killed. */
static pid_t spawn_idle(const dmxp_segment *seg, uint32_t id, unsigned roles) {
    int fd;
    pid_t child = fork_reporting(&fd);
    if (child == 0) {
        dmxp_channel ch;
        child_open_registered(seg, id, roles, &ch);
        char ok = 1;
        if (write(fd, &ok, 1) != 1) _exit(22);
        for (;;) pause();
    }
    char ok = 0;
    CHECK(read(fd, &ok, 1) == 1 && ok == 1);
    close(fd);
    return child;
}

/* (3) The sweep at registration frees the records of peers killed while idle, whatever their
 * channel, and only those: a live peer's record, a dead record that still holds an intent
 * (left to its channel's repair) and a record of another pid namespace (alive by §11.5) stay.
 * dmxp_free_dead_records judges each record once. */
static void sweep_frees_dead_idle_records(void) {
    dmxp_segment seg;
    new_segment(&seg);
    dmxp_error err;
    dmxp_channel a, b;
    CHECK_OK(dmxp_channel_create(&seg, 3, 4, &a, &err));
    CHECK_OK(dmxp_channel_create(&seg, 4, 4, &b, &err));
    enum { DEAD = 4 };
    pid_t dead[DEAD];
    const unsigned roles[DEAD] = {DMXP_ROLE_PRODUCER, DMXP_ROLE_CONSUMER,
                                  DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER, DMXP_ROLE_CONSUMER};
    for (int i = 0; i < DEAD; i++) dead[i] = spawn_idle(&seg, i % 2 ? 4 : 3, roles[i]);
    pid_t live = spawn_idle(&seg, 4, DMXP_ROLE_PRODUCER);
    dmxp_peer_record *t = peer_table_of(&seg);
    uint64_t ns = dmxp_pid_namespace();
    /* A dead record with an intent, and a record of another namespace (no such pid here). */
    uint32_t with_intent = gone_pid(), foreign = gone_pid();
    dmxp_peer_record *ri = &t[200], *rf = &t[201];
    atomic_store(&ri->role, DMXP_ROLE_PRODUCER);
    atomic_store(&ri->channel_id, 4);
    atomic_store(&ri->intent_position, 0);
    atomic_store(&ri->intent_count, 1);
    atomic_store(&ri->pid_ns, ns);
    atomic_store(&ri->pid, with_intent);
    atomic_store(&rf->role, DMXP_ROLE_CONSUMER);
    atomic_store(&rf->channel_id, 3);
    atomic_store(&rf->pid_ns, ns + 1);
    atomic_store(&rf->pid, foreign);
    for (int i = 0; i < DEAD; i++) {
        CHECK_EQ_U64(records_of(&seg, (uint32_t)dead[i]), i == 2 ? 2 : 1);
        kill_and_reap(dead[i]);
        CHECK_EQ_U64(records_of(&seg, (uint32_t)dead[i]), i == 2 ? 2 : 1);
    }
    /* 5 dead idle records, the live child's, and the two fakes. */
    CHECK_OK(dmxp_channel_register(&a, DMXP_ROLE_CONSUMER, &err));
    for (int i = 0; i < DEAD; i++) CHECK_EQ_U64(records_of(&seg, (uint32_t)dead[i]), 0);
    CHECK_EQ_U64(records_of(&seg, (uint32_t)live), 1);
    CHECK_EQ_U64(atomic_load(&ri->pid), with_intent);
    CHECK_EQ_U64(atomic_load(&ri->intent_count), 1);
    CHECK_EQ_U64(atomic_load(&rf->pid), foreign);
    uint32_t used = 0;
    for (uint32_t i = 0; i < DMXP_PEER_RECORDS; i++) {
        uint32_t pid = atomic_load(&t[i].pid);
        if (pid == 0) {
            CHECK_EQ_U64(atomic_load(&t[i].start_time), 0);
            CHECK_EQ_U64(atomic_load(&t[i].pid_ns), 0);
            CHECK_EQ_U64(atomic_load(&t[i].waiting), 0);
        } else {
            used++;
        }
    }
    CHECK_EQ_U64(used, 4); /* ours, the live child's, the two fakes */

    /* Five more dead idle records (fakes, with start times): one sweep frees them, judging
     * each record once: the 5, the live child and the foreign record (the record with an
     * intent is skipped unjudged, ours is never judged). */
    for (uint32_t i = 0; i < 5; i++) {
        dmxp_peer_record *r = &t[210 + i];
        atomic_store(&r->role, DMXP_ROLE_CONSUMER);
        atomic_store(&r->channel_id, 100 + i); /* channels nobody here opened */
        atomic_store(&r->pid_ns, i % 2 ? ns : 0);
        atomic_store(&r->start_time, 12345);
        atomic_store(&r->pid, gone_pid());
    }
    dmxp_recover_report rep;
    CHECK_OK(dmxp_free_dead_records(&b, &rep));
    CHECK_EQ_U64(rep.records_freed, 5);
    CHECK_EQ_U64(rep.liveness_checks, 7);
    for (uint32_t i = 0; i < 5; i++) {
        CHECK_EQ_U64(atomic_load(&t[210 + i].pid), 0);
        CHECK_EQ_U64(atomic_load(&t[210 + i].start_time), 0);
        CHECK_EQ_U64(atomic_load(&t[210 + i].pid_ns), 0);
    }
    CHECK_OK(dmxp_free_dead_records(&b, &rep)); /* nothing left to free */
    CHECK_EQ_U64(rep.records_freed, 0);
    CHECK_EQ_U64(rep.liveness_checks, 2);
    CHECK_EQ_U64(records_of(&seg, (uint32_t)live), 1);
    kill_and_reap(live);
    dmxp_channel_close(&a);
    drop_segment(&seg);
}

/* (4) A live waiter misjudged dead: while a child (alive, registered) blocks in a receive, this
 * process plays a freer that judged it dead, five times over: with the child stopped while
 * counted (count 1, word 1), give_back_wait takes the word (CAS 1 -> 0) and the count back to
 * 0; then the child continues. Its own swap after the sleep finds 0 and leaves the count
 * alone, so each time it waits again the count is exactly 1, and once the message is sent and
 * it returns with it, 0, not wrapped below 0 (0xFFFFFFFF). */
static void misjudged_waiter_keeps_count(void) {
    dmxp_segment seg;
    new_segment(&seg);
    dmxp_error err;
    dmxp_channel prod;
    CHECK_OK(dmxp_channel_create(&seg, 5, 4, &prod, &err));
    dmxp_channel_entry *e = prod.entry;
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        dmxp_channel cons;
        child_open_registered(&seg, 5, DMXP_ROLE_CONSUMER, &cons);
        char got[8];
        size_t len = 0;
        dmxp_status s = dmxp_recv_timeout(&cons, got, sizeof got, NULL, &len, 120 * SEC);
        if (s != DMXP_OK) _exit(22);
        if (len != 5 || memcmp(got, "hello", 5) != 0) _exit(23);
        dmxp_channel_close(&cons);
        _exit(0);
    }
    dmxp_peer_record *rec = await_record_of(&seg, (uint32_t)child);
    for (int round = 0; round < 5; round++) {
        stop_while_counted(child, &e->not_empty_waiters, rec, DMXP_WAITING_NOT_EMPTY);
        CHECK_EQ_U64(dmxp__give_back_wait(seg.base, rec), 1);
        CHECK_EQ_U64(atomic_load(&e->not_empty_waiters), 0);
        CHECK_EQ_U64(atomic_load(&rec->waiting), DMXP_WAITING_NONE);
        CHECK_EQ_U64(atomic_load(&rec->pid), (uint32_t)child); /* a live owner keeps it */
        CHECK(kill(child, SIGCONT) == 0);
    }
    /* The count is 0 (nobody to wake as far as a sender can tell): the child finds the message
     * at the end of its wait slice. */
    CHECK_OK(dmxp_try_send(&prod, "hello", 5, NULL, NULL));
    reap_ok(child);
    CHECK_EQ_U64(atomic_load(&e->not_empty_waiters), 0);
    CHECK_EQ_U64(atomic_load(&rec->waiting), DMXP_WAITING_NONE);
    CHECK_EQ_U64(atomic_load(&rec->pid), 0); /* it left */
    drop_segment(&seg);
}

/* (5) give_back_wait on forged or stale words: a count already 0 stays 0 (never below), a
 * garbage value or a channel id out of range is cleared without touching any count, and an
 * empty word changes nothing. leave clears the word. */
static void give_back_edge_cases(void) {
    dmxp_segment seg;
    new_segment(&seg);
    dmxp_channel ch;
    create_registered(&seg, 6, 4, DMXP_ROLE_PRODUCER, &ch);
    dmxp_peer_record *d = &peer_table_of(&seg)[100];
    dmxp_channel_entry *e6 = ch.entry;
    dmxp_channel_entry *e44 = dmxp__entry(&seg, 44); /* 300 mod 256 */
    atomic_store(&d->channel_id, 6);
    atomic_store(&d->waiting, DMXP_WAITING_NOT_FULL);
    CHECK_EQ_U64(dmxp__give_back_wait(seg.base, d), 0); /* the count is 0 already */
    CHECK_EQ_U64(atomic_load(&e6->not_full_waiters), 0);
    CHECK_EQ_U64(atomic_load(&d->waiting), 0);
    atomic_store(&e6->not_empty_waiters, 3);
    atomic_store(&e6->not_full_waiters, 3);
    atomic_store(&d->waiting, DMXP_WAITING_NOT_FULL);
    CHECK_EQ_U64(dmxp__give_back_wait(seg.base, d), 1);
    CHECK_EQ_U64(atomic_load(&e6->not_full_waiters), 2);
    CHECK_EQ_U64(atomic_load(&e6->not_empty_waiters), 3);
    CHECK_EQ_U64(atomic_load(&d->waiting), 0);
    CHECK_EQ_U64(dmxp__give_back_wait(seg.base, d), 0); /* once */
    CHECK_EQ_U64(atomic_load(&e6->not_full_waiters), 2);
    atomic_store(&d->waiting, 7);
    CHECK_EQ_U64(dmxp__give_back_wait(seg.base, d), 0);
    CHECK_EQ_U64(atomic_load(&d->waiting), 0);
    CHECK(atomic_load(&e6->not_empty_waiters) == 3 && atomic_load(&e6->not_full_waiters) == 2);
    atomic_store(&e44->not_empty_waiters, 3);
    atomic_store(&d->channel_id, 300);
    atomic_store(&d->waiting, DMXP_WAITING_NOT_EMPTY);
    CHECK_EQ_U64(dmxp__give_back_wait(seg.base, d), 0);
    CHECK_EQ_U64(atomic_load(&d->waiting), 0);
    CHECK_EQ_U64(atomic_load(&e44->not_empty_waiters), 3);
    /* A dead record of another channel with a wait and no intent: the sweep gives it back. */
    atomic_store(&d->channel_id, 44);
    atomic_store(&d->waiting, DMXP_WAITING_NOT_EMPTY);
    atomic_store(&d->pid, gone_pid());
    dmxp_recover_report rep;
    CHECK_OK(dmxp_free_dead_records(&ch, &rep));
    CHECK_EQ_U64(rep.records_freed, 1);
    CHECK_EQ_U64(atomic_load(&e44->not_empty_waiters), 2);
    CHECK_EQ_U64(atomic_load(&d->pid), 0);
    CHECK_EQ_U64(atomic_load(&d->waiting), 0);
    /* leave clears the handle's word. */
    dmxp_peer_record *mine = ch.send_peer;
    atomic_store(&mine->waiting, DMXP_WAITING_NOT_FULL);
    dmxp_channel_close(&ch);
    CHECK_EQ_U64(atomic_load(&mine->pid), 0);
    CHECK_EQ_U64(atomic_load(&mine->waiting), 0);
    drop_segment(&seg);
}

int main(void) {
    dead_receiver_given_back_by_registration();
    dead_sender_given_back_by_repair();
    sweep_frees_dead_idle_records();
    misjudged_waiter_keeps_count();
    give_back_edge_cases();
    TEST_DONE("test_waiters");
}
