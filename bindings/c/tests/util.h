/* Helpers for the tests that look into a segment's peer table (PROTOCOL.md §11) and fake its
 * peers with forked children: test_peers, test_repair, test_waiters, test_process,
 * test_pending, test_runs and test_wait_fd. static inline, so a test that uses only some of
 * them builds warning-free. */
#ifndef DMXP_TEST_UTIL_H
#define DMXP_TEST_UTIL_H

#include "check.h"

#include <sys/mman.h>
#include <sys/wait.h>

/* The size of the segments new_segment makes. */
#define TEST_SHARED_SEG_LEN (1u << 20)

/* A new segment of TEST_SHARED_SEG_LEN bytes of anonymous MAP_SHARED memory, formatted by this
 * process: forked children share it. */
static inline void new_segment(dmxp_segment *seg) {
    void *mem = mmap(NULL, TEST_SHARED_SEG_LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                     -1, 0);
    CHECK(mem != MAP_FAILED);
    dmxp_error err;
    CHECK_OK(dmxp_segment_format_memory(seg, mem, TEST_SHARED_SEG_LEN, (uint32_t)getpid(), &err));
}

/* Unmaps a segment made by new_segment. */
static inline void drop_segment(dmxp_segment *seg) {
    CHECK(munmap(seg->base, TEST_SHARED_SEG_LEN) == 0);
}

/* Creates channel `id` of `capacity` slots on `seg` into `ch` and registers it for `roles`. */
static inline void create_registered(const dmxp_segment *seg, uint32_t id, uint64_t capacity,
                                     unsigned roles, dmxp_channel *ch) {
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(seg, id, capacity, ch, &err));
    CHECK_OK(dmxp_channel_register(ch, roles, &err));
}

/* Fills the 2 slots of `ch`: "m0" and "m1" are queued, and a third send is refused. */
static inline void fill_two_slots(const dmxp_channel *ch) {
    CHECK_OK(dmxp_try_send(ch, "m0", 2, NULL, NULL));
    CHECK_OK(dmxp_try_send(ch, "m1", 2, NULL, NULL));
    CHECK_STATUS(dmxp_try_send(ch, "m2", 2, NULL, NULL), DMXP_E_FULL);
}

/* Waits for `child`, which must have exited 0 (the test fails, naming its status, if not). */
static inline void reap_ok(pid_t child) {
    int status;
    CHECK(waitpid(child, &status, 0) == child);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "child %d failed (status %#x)\n", (int)child, (unsigned)status);
        exit(1);
    }
}

/* The peer table of `seg`, which must have one (a handle has registered on it). */
static inline dmxp_peer_record *peer_table_of(const dmxp_segment *seg) {
    uint64_t off = atomic_load(&dmxp__hdr(seg)->peer_table_offset);
    CHECK(off != 0);
    return (dmxp_peer_record *)(void *)(seg->base + off);
}

/* How many records of the peer table of `seg` name `pid`. */
static inline int records_of(const dmxp_segment *seg, uint32_t pid) {
    dmxp_peer_record *t = peer_table_of(seg);
    int n = 0;
    for (uint32_t i = 0; i < dmxp_segment_peer_records(seg); i++)
        n += atomic_load(&t[i].pid) == pid;
    return n;
}

/* A pid that names no process: a child that has exited and been reaped. */
static inline uint32_t gone_pid(void) {
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) _exit(0);
    CHECK(waitpid(child, NULL, 0) == child);
    CHECK(kill(child, 0) != 0 && errno == ESRCH);
    return (uint32_t)child;
}

/* Forks a child that reports to the parent through a pipe (that it is ready, what it claimed):
 * 0 in the child, where *fd is the write end; the child's pid in the parent, where *fd is the
 * read end. Each side closes the end it does not use, so a child that dies unreported ends
 * the parent's read. */
static inline pid_t fork_reporting(int *fd) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t child = fork();
    CHECK(child >= 0);
    close(fds[child == 0 ? 0 : 1]);
    *fd = fds[child == 0 ? 1 : 0];
    return child;
}

/* In a forked child: opens channel `id` of `seg` into `ch` and registers it for `roles`, or
 * exits 20 (the open failed) or 21 (the registration failed), for the parent to tell apart. */
static inline void child_open_registered(const dmxp_segment *seg, uint32_t id, unsigned roles,
                                         dmxp_channel *ch) {
    if (dmxp_channel_open(seg, id, ch, NULL) != DMXP_OK) _exit(20);
    if (dmxp_channel_register(ch, roles, NULL) != DMXP_OK) _exit(21);
}

#endif
