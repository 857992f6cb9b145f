/* Waiting from an event loop (PROTOCOL.md §7.4): dmxp_wait_fd, an io_uring whose
 * IORING_OP_FUTEX_WAIT on a channel's wait word makes its fd readable when a sender (or a
 * receiver) of another process wakes the word. Covers: the ABI definitions against
 * <linux/io_uring.h>, the SQE the arm builds, readability only after a send from another
 * process (an inherited mapping and a separate one), DMXP_READY when the ring is ready, the
 * wait counts and the record's `waiting` word after complete and close, a free-slots wait
 * woken by a consumer, close cancelling a wait in flight (no fd or mapping left), a parked
 * wait reused, a switch of word cancelling it, a forked child leaving the parent's ring alone,
 * the repair of a channel stuck on a dead producer from the loop, an epoll loop over 4
 * channels fed by 2 processes, DMXP_E_UNSUPPORTED under a seccomp filter refusing
 * io_uring_setup, and the skip (forced by DMXP_ASYNC_POLL) with its message. Where the kernel
 * has no IORING_OP_FUTEX_WAIT the test says so loudly and skips the rest. Waits are bounded by
 * a generous hang guard (30 s); nothing is timed. */
#include "util.h"
#include "../examples/dmxp_pattern.h"

#include <dirent.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/utsname.h>

#if defined(__has_include)
#if __has_include(<linux/io_uring.h>)
#include <linux/io_uring.h>
#define HAVE_LINUX_IO_URING 1
#endif
#endif

#define SEC INT64_C(1000000000)
#define HANG_GUARD_MS 30000 /* how long a wait may take before the test fails: never reached */

/* poll(2) for readability, retried on EINTR; the revents (0: timed out). */
static short poll_in(int fd, int timeout_ms) {
    struct pollfd p = {fd, POLLIN, 0};
    for (;;) {
        int n = poll(&p, 1, timeout_ms);
        if (n >= 0) return n == 0 ? 0 : p.revents;
        CHECK(errno == EINTR);
    }
}

/* Waits for the wait fd to turn readable: a sender's futex_wake reached the io_uring wait. */
static void await_readable(const dmxp_wait_fd *w) {
    short r = poll_in(dmxp_wait_fd_fd(w), HANG_GUARD_MS);
    if ((r & POLLIN) == 0) {
        fprintf(stderr, "the wait fd did not turn readable in %d s: the futex_wake did not "
                        "reach the io_uring wait\n", HANG_GUARD_MS / 1000);
        exit(1);
    }
}

static int readable_now(const dmxp_wait_fd *w) {
    return (poll_in(dmxp_wait_fd_fd(w), 0) & POLLIN) != 0;
}

/* Entries of this process's fd table, or of its memory map, that name an io_uring. */
static int io_uring_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[300], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(path, target, sizeof target - 1);
        if (k <= 0) continue;
        target[k] = 0;
        n += strstr(target, "io_uring") != NULL;
    }
    closedir(d);
    return n;
}

static int io_uring_mappings(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f != NULL);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) n += strstr(line, "io_uring") != NULL;
    fclose(f);
    return n;
}

/* In a forked child: opens channel `id` and sends `text` on it (exit 0), or exits 20..22. */
static void child_send(const dmxp_segment *seg, uint32_t id, const char *text) {
    dmxp_channel ch;
    child_open_registered(seg, id, DMXP_ROLE_PRODUCER, &ch);
    if (dmxp_try_send(&ch, text, strlen(text), NULL, NULL) != DMXP_OK) _exit(22);
    dmxp_channel_close(&ch);
    _exit(0);
}

static pid_t fork_sender(const dmxp_segment *seg, uint32_t id, const char *text) {
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) child_send(seg, id, text);
    return child;
}

static void recv_text(const dmxp_channel *ch, const char *text) {
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len = 0;
    CHECK_OK(dmxp_try_recv(ch, buf, sizeof buf, NULL, &len));
    CHECK(len == strlen(text) && memcmp(buf, text, len) == 0);
}

/* What most tests here start from: a segment of their own (new_segment), channel `id` of
 * `capacity` slots on it registered for `roles`, and a wait fd, open. */
typedef struct {
    dmxp_segment seg;
    dmxp_channel ch;
    dmxp_wait_fd w;
} rig;

static void rig_open(rig *r, uint32_t id, uint64_t capacity, unsigned roles) {
    new_segment(&r->seg);
    create_registered(&r->seg, id, capacity, roles, &r->ch);
    dmxp_error err;
    CHECK_OK(dmxp_wait_fd_open(&r->w, &err));
}

/* Closes the wait fd (if the test has not), the channel and the segment. */
static void rig_close(rig *r) {
    dmxp_wait_fd_close(&r->w);
    dmxp_channel_close(&r->ch);
    drop_segment(&r->seg);
}

/* With a round armed on the rig's wait fd, which is not readable yet: a child process sends
 * `text` on channel `id`, the fd turns readable, and the child exits 0. */
static void woken_by_a_child_sending(const rig *r, uint32_t id, const char *text) {
    CHECK(!readable_now(&r->w));
    pid_t child = fork_sender(&r->seg, id, text);
    await_readable(&r->w);
    reap_ok(child);
}

/* ---- The ABI ----------------------------------------------------------------------------- */

/* dmxp.h's own io_uring definitions against the system's <linux/io_uring.h> (which may
 * predate IORING_OP_FUTEX_WAIT: the opcode itself is checked against the kernel's probe). */
static void abi_matches_linux_header(void) {
#if defined(HAVE_LINUX_IO_URING)
#define SAME_AT(ours, theirs, f1, f2) \
    CHECK_EQ_U64(offsetof(ours, f1), offsetof(theirs, f2))
    CHECK_EQ_U64(sizeof(dmxp__uring_sqe), sizeof(struct io_uring_sqe));
    SAME_AT(dmxp__uring_sqe, struct io_uring_sqe, opcode, opcode);
    SAME_AT(dmxp__uring_sqe, struct io_uring_sqe, flags, flags);
    SAME_AT(dmxp__uring_sqe, struct io_uring_sqe, ioprio, ioprio);
    SAME_AT(dmxp__uring_sqe, struct io_uring_sqe, fd, fd);
    SAME_AT(dmxp__uring_sqe, struct io_uring_sqe, off, off);
    SAME_AT(dmxp__uring_sqe, struct io_uring_sqe, off, addr2);
    SAME_AT(dmxp__uring_sqe, struct io_uring_sqe, addr, addr);
    SAME_AT(dmxp__uring_sqe, struct io_uring_sqe, len, len);
    SAME_AT(dmxp__uring_sqe, struct io_uring_sqe, op_flags, rw_flags);
    SAME_AT(dmxp__uring_sqe, struct io_uring_sqe, op_flags, cancel_flags);
    SAME_AT(dmxp__uring_sqe, struct io_uring_sqe, user_data, user_data);
    SAME_AT(dmxp__uring_sqe, struct io_uring_sqe, buf_index, buf_index);
    SAME_AT(dmxp__uring_sqe, struct io_uring_sqe, personality, personality);
    SAME_AT(dmxp__uring_sqe, struct io_uring_sqe, file_index, splice_fd_in);
#if defined(IORING_SETUP_SQE128) /* addr3 came with the 128-byte SQEs (Linux 5.19/6.0) */
    SAME_AT(dmxp__uring_sqe, struct io_uring_sqe, addr3, addr3);
#endif
    CHECK_EQ_U64(sizeof(dmxp__uring_cqe), sizeof(struct io_uring_cqe));
    SAME_AT(dmxp__uring_cqe, struct io_uring_cqe, user_data, user_data);
    SAME_AT(dmxp__uring_cqe, struct io_uring_cqe, res, res);
    SAME_AT(dmxp__uring_cqe, struct io_uring_cqe, flags, flags);
    CHECK_EQ_U64(sizeof(dmxp__uring_params), sizeof(struct io_uring_params));
    SAME_AT(dmxp__uring_params, struct io_uring_params, sq_entries, sq_entries);
    SAME_AT(dmxp__uring_params, struct io_uring_params, cq_entries, cq_entries);
    SAME_AT(dmxp__uring_params, struct io_uring_params, flags, flags);
    SAME_AT(dmxp__uring_params, struct io_uring_params, features, features);
    SAME_AT(dmxp__uring_params, struct io_uring_params, sq_off, sq_off);
    SAME_AT(dmxp__uring_params, struct io_uring_params, cq_off, cq_off);
/* The size of a ring's offsets and the fields both rings' offsets begin with. */
#define SAME_RING_OFFSETS(ours, theirs)                        \
    CHECK_EQ_U64(sizeof(ours), sizeof(theirs));                \
    SAME_AT(ours, theirs, head, head);                         \
    SAME_AT(ours, theirs, tail, tail);                         \
    SAME_AT(ours, theirs, ring_mask, ring_mask);               \
    SAME_AT(ours, theirs, ring_entries, ring_entries)
    SAME_RING_OFFSETS(dmxp__uring_sq_offsets, struct io_sqring_offsets);
    SAME_AT(dmxp__uring_sq_offsets, struct io_sqring_offsets, array, array);
    SAME_RING_OFFSETS(dmxp__uring_cq_offsets, struct io_cqring_offsets);
    SAME_AT(dmxp__uring_cq_offsets, struct io_cqring_offsets, cqes, cqes);
#undef SAME_RING_OFFSETS
    CHECK_EQ_U64(offsetof(dmxp__uring_probe, ops), sizeof(struct io_uring_probe));
    SAME_AT(dmxp__uring_probe, struct io_uring_probe, last_op, last_op);
    SAME_AT(dmxp__uring_probe, struct io_uring_probe, ops_len, ops_len);
    SAME_AT(dmxp__uring_probe, struct io_uring_probe, ops, ops);
    CHECK_EQ_U64(sizeof(dmxp__uring_probe_op), sizeof(struct io_uring_probe_op));
    SAME_AT(dmxp__uring_probe_op, struct io_uring_probe_op, flags, flags);
    CHECK_EQ_U64(sizeof(dmxp__uring_getevents_arg), sizeof(struct io_uring_getevents_arg));
    SAME_AT(dmxp__uring_getevents_arg, struct io_uring_getevents_arg, sigmask_sz, sigmask_sz);
    SAME_AT(dmxp__uring_getevents_arg, struct io_uring_getevents_arg, ts, ts);
#undef SAME_AT
    CHECK_EQ_U64(DMXP__IORING_OFF_SQ_RING, IORING_OFF_SQ_RING);
    CHECK_EQ_U64(DMXP__IORING_OFF_CQ_RING, IORING_OFF_CQ_RING);
    CHECK_EQ_U64(DMXP__IORING_OFF_SQES, IORING_OFF_SQES);
    CHECK_EQ_U64(DMXP__IORING_REGISTER_PROBE, IORING_REGISTER_PROBE);
    CHECK_EQ_U64(DMXP__IORING_OP_ASYNC_CANCEL, IORING_OP_ASYNC_CANCEL);
    CHECK_EQ_U64(DMXP__IO_URING_OP_SUPPORTED, IO_URING_OP_SUPPORTED);
    CHECK_EQ_U64(DMXP__IORING_ENTER_GETEVENTS, IORING_ENTER_GETEVENTS);
    CHECK_EQ_U64(DMXP__IORING_ENTER_EXT_ARG, IORING_ENTER_EXT_ARG);
    CHECK_EQ_U64(DMXP__IORING_FEAT_SINGLE_MMAP, IORING_FEAT_SINGLE_MMAP);
    CHECK_EQ_U64(DMXP__IORING_FEAT_EXT_ARG, IORING_FEAT_EXT_ARG);
#else
    printf("note: no <linux/io_uring.h> here: the io_uring layout is checked by dmxp.h's "
           "static assertions only\n");
#endif
    CHECK_EQ_U64(DMXP__FUTEX_BITSET_MATCH_ANY, FUTEX_BITSET_MATCH_ANY);
#if defined(FUTEX2_SIZE_U32)
    CHECK_EQ_U64(DMXP__FUTEX2_SIZE_U32, FUTEX2_SIZE_U32);
    CHECK((DMXP__FUTEX2_SIZE_U32 & FUTEX2_PRIVATE) == 0);
#endif
}

/* ---- Support, and the skip --------------------------------------------------------------- */

/* 1 when the wait fd works here; otherwise prints, loudly, why the rest is skipped. */
static int supported_or_skip(void) {
    dmxp_wait_fd w;
    dmxp_error err;
    dmxp_status s = dmxp_wait_fd_open(&w, &err);
    if (s == DMXP_OK) {
        dmxp_wait_fd_close(&w);
        return 1;
    }
    char msg[512];
    dmxp_error_format(&err, msg, sizeof msg);
    if (s != DMXP_E_UNSUPPORTED) {
        fprintf(stderr, "dmxp_wait_fd_open failed: %s (%s)\n", msg, dmxp_status_name(s));
        exit(1);
    }
    struct utsname u;
    if (uname(&u) != 0) snprintf(u.release, sizeof u.release, "?");
    printf("!!! SKIP: test_wait_fd: %s [%s, Linux %s]: the io_uring wait fd was NOT tested "
           "(clients poll instead)\n", msg, dmxp_status_name(s), u.release);
    fflush(stdout);
    return 0;
}

/* DMXP_ASYNC_POLL=1 makes the open fail with DMXP_E_UNSUPPORTED (the fallback's switch, as in
 * the Rust client); the failed wait fd is closed, and closing or arming it is harmless. */
static void async_poll_env_forces_fallback(void) {
    CHECK(setenv("DMXP_ASYNC_POLL", "1", 1) == 0);
    dmxp_wait_fd w;
    dmxp_error err;
    dmxp_status s = dmxp_wait_fd_open(&w, &err);
    CHECK_STATUS(s, DMXP_E_UNSUPPORTED);
    CHECK(strcmp(err.field, "DMXP_ASYNC_POLL") == 0);
    char msg[256];
    dmxp_error_format(&err, msg, sizeof msg);
    CHECK(strstr(msg, "DMXP_ASYNC_POLL=1") != NULL && strstr(msg, "poll instead") != NULL);
    CHECK(dmxp_wait_fd_fd(&w) == -1);
    CHECK(!dmxp_wait_fd_pending(&w));
    CHECK(dmxp_wait_fd_timeout_ms(&w) == 0);
    dmxp_segment seg;
    new_segment(&seg);
    dmxp_channel ch;
    CHECK_OK(dmxp_channel_create(&seg, 1, 8, &ch, &err));
    CHECK_STATUS(dmxp_channel_arm_message_wait(&ch, &w, &err), DMXP_E_INVALID_ARGUMENT);
    CHECK_STATUS(dmxp_wait_fd_complete(&w, &err), DMXP_E_INVALID_ARGUMENT);
    CHECK_EQ_U64(atomic_load(&ch.entry->not_empty_waiters), 0);
    dmxp_wait_fd_close(&w);
    dmxp_wait_fd_close(&w);
    CHECK(setenv("DMXP_ASYNC_POLL", "0", 1) == 0); /* "0" does not force it */
    s = dmxp_wait_fd_open(&w, &err);
    CHECK(s != DMXP_E_UNSUPPORTED || strcmp(err.field, "DMXP_ASYNC_POLL") != 0);
    dmxp_wait_fd_close(&w);
    CHECK(unsetenv("DMXP_ASYNC_POLL") == 0);
    drop_segment(&seg);
    CHECK(strcmp(dmxp_status_name(DMXP_E_UNSUPPORTED), "DMXP_E_UNSUPPORTED") == 0);
    CHECK(strcmp(dmxp_status_name(DMXP_READY), "DMXP_READY") == 0);
    CHECK(DMXP_ARMED == DMXP_OK);
}

/* The skip itself: a child whose open is refused (DMXP_ASYNC_POLL=1 plays a kernel without
 * IORING_OP_FUTEX_WAIT) prints the loud SKIP line, naming the reason, rather than passing in
 * silence. */
static void skip_is_loud(void) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    fflush(stdout);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        close(fds[0]);
        if (dup2(fds[1], 1) != 1) _exit(20);
        if (setenv("DMXP_ASYNC_POLL", "1", 1) != 0) _exit(21);
        _exit(supported_or_skip() ? 22 : 0);
    }
    close(fds[1]);
    char out[1024];
    size_t n = 0;
    ssize_t k;
    while (n < sizeof out - 1 && (k = read(fds[0], out + n, sizeof out - 1 - n)) > 0)
        n += (size_t)k;
    out[n] = 0;
    close(fds[0]);
    reap_ok(child);
    CHECK(strncmp(out, "!!! SKIP: test_wait_fd: ", 24) == 0);
    CHECK(strstr(out, "DMXP_ASYNC_POLL") != NULL && strstr(out, "NOT tested") != NULL);
}

/* A system that filters io_uring (a seccomp filter, as container runtimes install): in a child
 * whose io_uring_setup fails with ENOSYS (then EPERM), the open reports DMXP_E_UNSUPPORTED
 * naming the call and its errno, leaves the wait fd closed, and the skip line says why. */
static void filtered_io_uring_is_unsupported(void) {
    for (int e = 0; e < 2; e++) {
        int err_no = e == 0 ? ENOSYS : EPERM;
        fflush(stdout);
        pid_t child = fork();
        CHECK(child >= 0);
        if (child == 0) {
            struct sock_filter code[] = {
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, DMXP__NR_IO_URING_SETUP, 0, 1),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (uint32_t)err_no),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
            };
            struct sock_fprog prog = {(unsigned short)(sizeof code / sizeof code[0]), code};
            if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(20);
            if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) _exit(21);
            dmxp_wait_fd w;
            dmxp_error err;
            if (dmxp_wait_fd_open(&w, &err) != DMXP_E_UNSUPPORTED) _exit(22);
            if (strcmp(err.field, "io_uring_setup") != 0 || err.os_errno != err_no) _exit(23);
            if (dmxp_wait_fd_fd(&w) != -1) _exit(24);
            dmxp_wait_fd_close(&w);
            char msg[256];
            dmxp_error_format(&err, msg, sizeof msg);
            if (strstr(msg, "io_uring_setup") == NULL) _exit(25);
            if (freopen("/dev/null", "w", stdout) == NULL) _exit(26);
            _exit(supported_or_skip() ? 27 : 0);
        }
        reap_ok(child);
    }
}

/* ---- One wait ---------------------------------------------------------------------------- */

/* (1) Armed on an empty ring: counted (not_empty_waiters 1, the record says NOT_EMPTY), one
 * futex wait submitted with the SQE of §7.4, the fd not readable. A child process sends: the
 * fd turns readable, the completion is a wake-up (result 0), and complete gives everything
 * back. */
static void wakes_on_a_send_from_another_process(void) {
    rig r;
    rig_open(&r, 1, 8, DMXP_ROLE_CONSUMER);
    dmxp_error err;
    dmxp_channel_entry *e = r.ch.entry;
    CHECK(dmxp_wait_fd_fd(&r.w) >= 0);
    CHECK(dmxp_wait_fd_deadline_ns(&r.w) == 0);
    uint32_t seq = atomic_load(&e->not_empty_seq);
    CHECK_STATUS(dmxp_channel_arm_message_wait(&r.ch, &r.w, &err), DMXP_ARMED);
    CHECK_EQ_U64(atomic_load(&e->not_empty_waiters), 1);
    CHECK_EQ_U64(atomic_load(&r.ch.recv_peer->waiting), DMXP_WAITING_NOT_EMPTY);
    CHECK(dmxp_wait_fd_pending(&r.w));
    CHECK_EQ_U64(r.w.stats.submitted, 1);
    CHECK(dmxp_wait_fd_timeout_ms(&r.w) >= 0 && dmxp_wait_fd_timeout_ms(&r.w) <= 100);
    CHECK(dmxp_wait_fd_deadline_ns(&r.w) > 0);
    /* The entry the kernel took: FUTEX_WAIT on the word, expecting the value read, any bitset,
     * futex2 flags SIZE_U32 and not PRIVATE. */
    uint32_t tail = atomic_load(r.w.sq_tail);
    const dmxp__uring_sqe *sqe = &r.w.sqes[(tail - 1) & (r.w.sq_entries - 1)];
    CHECK_EQ_U64(sqe->opcode, 51);
    CHECK_EQ_U64(sqe->addr, (uint64_t)(uintptr_t)&e->not_empty_seq);
    CHECK_EQ_U64(sqe->off, seq);
    CHECK_EQ_U64(sqe->addr3, 0xFFFFFFFFu);
    CHECK_EQ_U64(sqe->fd, 2);
    CHECK_EQ_U64(sqe->len, 0);
    CHECK_EQ_U64(sqe->op_flags, 0);
    CHECK(sqe->user_data != 0);
    woken_by_a_child_sending(&r, 1, "wake");
    CHECK_EQ_U64(atomic_load(&e->not_empty_seq), seq + 1); /* the sender saw a waiter */
    CHECK_OK(dmxp_wait_fd_complete(&r.w, &err));
    CHECK_EQ_U64(atomic_load(&e->not_empty_waiters), 0);
    CHECK_EQ_U64(atomic_load(&r.ch.recv_peer->waiting), DMXP_WAITING_NONE);
    CHECK(!dmxp_wait_fd_pending(&r.w));
    CHECK(!readable_now(&r.w));
    CHECK_EQ_U64(r.w.stats.completed, 1);
    CHECK_EQ_U64(r.w.stats.woken, 1);
    CHECK(dmxp_wait_fd_timeout_ms(&r.w) == 0);
    recv_text(&r.ch, "wake");
    /* Complete again: nothing to do. */
    CHECK_OK(dmxp_wait_fd_complete(&r.w, &err));
    dmxp_wait_fd_close(&r.w);
    CHECK(dmxp_wait_fd_fd(&r.w) == -1);
    CHECK_EQ_U64(r.w.stats.woken, 1); /* kept after close */
    rig_close(&r);
}

/* (2) Many rounds with a producer process that attached the segment by name (its own mapping,
 * at another address: the shared futex is keyed by the object, not the address). Each round
 * the consumer arms, then tells the producer, which sends one message: the wait was queued
 * before the send, so each completion must be a wake-up (result 0). This fails (hang guard,
 * or a count below the rounds) if a sender's futex_wake did not reach the io_uring wait, e.g.
 * with FUTEX2_PRIVATE. */
static void futex_wake_reaches_io_uring_wait(void) {
    enum { ROUNDS = 50 };
    char name[64];
    snprintf(name, sizeof name, "/dmxp_test_wait_fd_%d", (int)getpid());
    dmxp_error err;
    (void)dmxp_shm_unlink(name, NULL);
    dmxp_segment seg;
    CHECK_OK(dmxp_segment_create_shm(&seg, name, 1u << 20, 0600, &err));
    dmxp_channel ch;
    CHECK_OK(dmxp_channel_create(&seg, 3, 4, &ch, &err));
    int go[2];
    CHECK(pipe(go) == 0);
    fflush(stdout);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        close(go[1]);
        dmxp_segment cseg;
        dmxp_channel prod;
        if (dmxp_segment_open_shm(&cseg, name, 5000, NULL) != DMXP_OK) _exit(20);
        if (cseg.base == seg.base) _exit(21); /* meant to be a mapping of its own */
        if (dmxp_channel_open(&cseg, 3, &prod, NULL) != DMXP_OK) _exit(22);
        if (dmxp_channel_register(&prod, DMXP_ROLE_PRODUCER, NULL) != DMXP_OK) _exit(23);
        for (int i = 0; i < ROUNDS; i++) {
            char b;
            if (read(go[0], &b, 1) != 1) _exit(24);
            char text[32];
            snprintf(text, sizeof text, "round %d", i);
            if (dmxp_try_send(&prod, text, strlen(text), NULL, NULL) != DMXP_OK) _exit(25);
        }
        dmxp_channel_close(&prod);
        dmxp_segment_close(&cseg);
        _exit(0);
    }
    close(go[0]);
    /* A mapping of its own in the parent too, after the fork: no inherited addresses. */
    dmxp_segment pseg;
    CHECK_OK(dmxp_segment_open_shm(&pseg, name, 5000, &err));
    dmxp_channel cons;
    CHECK_OK(dmxp_channel_open(&pseg, 3, &cons, &err));
    CHECK_OK(dmxp_channel_register(&cons, DMXP_ROLE_CONSUMER, &err));
    dmxp_wait_fd w;
    CHECK_OK(dmxp_wait_fd_open(&w, &err));
    for (int i = 0; i < ROUNDS; i++) {
        CHECK_STATUS(dmxp_channel_arm_message_wait(&cons, &w, &err), DMXP_ARMED);
        CHECK(!readable_now(&w));
        CHECK(write(go[1], "g", 1) == 1);
        await_readable(&w);
        CHECK_OK(dmxp_wait_fd_complete(&w, &err));
        char text[32];
        snprintf(text, sizeof text, "round %d", i);
        recv_text(&cons, text);
    }
    close(go[1]);
    reap_ok(child);
    CHECK_EQ_U64(w.stats.submitted, ROUNDS);
    CHECK_EQ_U64(w.stats.completed, ROUNDS);
    CHECK_EQ_U64(w.stats.woken, ROUNDS);
    CHECK_EQ_U64(w.stats.reused, 0);
    CHECK_EQ_U64(atomic_load(&cons.entry->not_empty_waiters), 0);
    CHECK_EQ_U64(atomic_load(&cons.recv_peer->waiting), DMXP_WAITING_NONE);
    dmxp_wait_fd_close(&w);
    dmxp_channel_close(&cons);
    dmxp_segment_close(&pseg);
    dmxp_segment_close(&seg);
    CHECK_OK(dmxp_shm_unlink(name, &err));
}

/* (3) A ring that is ready already: DMXP_READY, nothing registered, nothing submitted. */
static void ready_when_already_there(void) {
    rig r;
    rig_open(&r, 1, 8, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER);
    dmxp_error err;
    CHECK_OK(dmxp_try_send(&r.ch, "there", 5, NULL, NULL));
    CHECK_STATUS(dmxp_channel_arm_message_wait(&r.ch, &r.w, &err), DMXP_READY);
    CHECK_STATUS(dmxp_channel_arm_free_slots_wait(&r.ch, &r.w, 1, &err), DMXP_READY);
    CHECK_STATUS(dmxp_channel_arm_free_slots_wait(&r.ch, &r.w, 7, &err), DMXP_READY);
    CHECK_EQ_U64(atomic_load(&r.ch.entry->not_empty_waiters), 0);
    CHECK_EQ_U64(atomic_load(&r.ch.entry->not_full_waiters), 0);
    CHECK_EQ_U64(atomic_load(&r.ch.recv_peer->waiting), DMXP_WAITING_NONE);
    CHECK_EQ_U64(atomic_load(&r.ch.send_peer->waiting), DMXP_WAITING_NONE);
    CHECK_EQ_U64(r.w.stats.submitted, 0);
    CHECK(!dmxp_wait_fd_pending(&r.w));
    CHECK(dmxp_wait_fd_timeout_ms(&r.w) == 0);
    /* 8 free slots are never there with a message queued: armed; complete ends the round. */
    CHECK_STATUS(dmxp_channel_arm_free_slots_wait(&r.ch, &r.w, 8, &err), DMXP_ARMED);
    CHECK_EQ_U64(atomic_load(&r.ch.entry->not_full_waiters), 1);
    CHECK_EQ_U64(atomic_load(&r.ch.send_peer->waiting), DMXP_WAITING_NOT_FULL);
    CHECK_OK(dmxp_wait_fd_complete(&r.w, &err));
    CHECK_EQ_U64(atomic_load(&r.ch.entry->not_full_waiters), 0);
    CHECK_EQ_U64(atomic_load(&r.ch.send_peer->waiting), DMXP_WAITING_NONE);
    /* Bad slot counts: refused, nothing registered. */
    CHECK_STATUS(dmxp_channel_arm_free_slots_wait(&r.ch, &r.w, 0, &err), DMXP_E_INVALID_ARGUMENT);
    CHECK_STATUS(dmxp_channel_arm_free_slots_wait(&r.ch, &r.w, 9, &err), DMXP_E_INVALID_ARGUMENT);
    CHECK(strcmp(err.field, "slots") == 0);
    CHECK_STATUS(dmxp_channel_arm_message_wait(NULL, &r.w, &err), DMXP_E_INVALID_ARGUMENT);
    CHECK_STATUS(dmxp_channel_arm_message_wait(&r.ch, NULL, &err), DMXP_E_INVALID_ARGUMENT);
    CHECK_EQ_U64(atomic_load(&r.ch.entry->not_full_waiters), 0);
    recv_text(&r.ch, "there");
    dmxp_wait_fd_close(&r.w);
    /* Closed: refused. */
    CHECK_STATUS(dmxp_channel_arm_message_wait(&r.ch, &r.w, &err), DMXP_E_INVALID_ARGUMENT);
    rig_close(&r);
}

/* (4) A producer's wait for a free slot on a full ring (not_full_waiters, record NOT_FULL) is
 * woken when a consumer process frees one. */
static void free_slots_wait_woken_by_a_consumer(void) {
    rig r;
    rig_open(&r, 2, 2, DMXP_ROLE_PRODUCER);
    dmxp_error err;
    fill_two_slots(&r.ch);
    CHECK_STATUS(dmxp_channel_arm_free_slots_wait(&r.ch, &r.w, 1, &err), DMXP_ARMED);
    CHECK_EQ_U64(atomic_load(&r.ch.entry->not_full_waiters), 1);
    CHECK_EQ_U64(atomic_load(&r.ch.send_peer->waiting), DMXP_WAITING_NOT_FULL);
    CHECK_EQ_U64(atomic_load(&r.ch.entry->not_empty_waiters), 0);
    const dmxp__uring_sqe *sqe = &r.w.sqes[(atomic_load(r.w.sq_tail) - 1) & (r.w.sq_entries - 1)];
    CHECK_EQ_U64(sqe->addr, (uint64_t)(uintptr_t)&r.ch.entry->not_full_seq);
    CHECK(!readable_now(&r.w));
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        dmxp_channel cons;
        child_open_registered(&r.seg, 2, DMXP_ROLE_CONSUMER, &cons);
        unsigned char buf[DMXP_MSG_INLINE];
        size_t len;
        if (dmxp_try_recv(&cons, buf, sizeof buf, NULL, &len) != DMXP_OK) _exit(22);
        if (len != 2 || memcmp(buf, "m0", 2) != 0) _exit(23);
        dmxp_channel_close(&cons);
        _exit(0);
    }
    await_readable(&r.w);
    reap_ok(child);
    CHECK_OK(dmxp_wait_fd_complete(&r.w, &err));
    CHECK_EQ_U64(atomic_load(&r.ch.entry->not_full_waiters), 0);
    CHECK_EQ_U64(atomic_load(&r.ch.send_peer->waiting), DMXP_WAITING_NONE);
    CHECK_EQ_U64(r.w.stats.woken, 1);
    CHECK(dmxp_has_free_slot(&r.ch));
    CHECK_OK(dmxp_try_send(&r.ch, "m2", 2, NULL, NULL));
    rig_close(&r);
}

/* (5) Closing with a wait in flight (never completed): the registration is undone, the wait
 * cancelled and reaped (-ECANCELED, counted as completed, not woken), the fd closed and the
 * rings unmapped; 40 times over, nothing is left behind. A send afterwards finds no waiter
 * (the word does not move: no futex_wake). */
static void close_cancels_the_wait_in_flight(void) {
    dmxp_segment seg;
    new_segment(&seg);
    dmxp_error err;
    dmxp_channel ch, prod;
    create_registered(&seg, 1, 8, DMXP_ROLE_CONSUMER, &ch);
    CHECK_OK(dmxp_channel_open(&seg, 1, &prod, &err));
    int fds = io_uring_fds(), maps = io_uring_mappings();
    for (int i = 0; i < 40; i++) {
        dmxp_wait_fd w;
        CHECK_OK(dmxp_wait_fd_open(&w, &err));
        int fd = dmxp_wait_fd_fd(&w);
        if (i == 0) {
            CHECK_EQ_U64(io_uring_fds(), fds + 1);
            CHECK(io_uring_mappings() > maps);
        }
        CHECK_STATUS(dmxp_channel_arm_message_wait(&ch, &w, &err), DMXP_ARMED);
        CHECK_EQ_U64(atomic_load(&ch.entry->not_empty_waiters), 1);
        dmxp_wait_fd_close(&w);
        CHECK_EQ_U64(atomic_load(&ch.entry->not_empty_waiters), 0);
        CHECK_EQ_U64(atomic_load(&ch.recv_peer->waiting), DMXP_WAITING_NONE);
        CHECK_EQ_U64(w.stats.submitted, 1);
        CHECK_EQ_U64(w.stats.completed, 1); /* the cancelled wait, reaped */
        CHECK_EQ_U64(w.stats.woken, 0);
        CHECK(fcntl(fd, F_GETFD) == -1 && errno == EBADF);
        CHECK(dmxp_wait_fd_fd(&w) == -1);
    }
    CHECK_EQ_U64(io_uring_fds(), fds);
    CHECK_EQ_U64(io_uring_mappings(), maps);
    uint32_t seq = atomic_load(&ch.entry->not_empty_seq);
    CHECK_OK(dmxp_try_send(&prod, "late", 4, NULL, NULL));
    CHECK_EQ_U64(atomic_load(&ch.entry->not_empty_seq), seq);
    recv_text(&ch, "late");
    dmxp_channel_close(&ch);
    drop_segment(&seg);
}

/* ---- Rounds ------------------------------------------------------------------------------ */

/* (6) A round completed without a wake-up parks its wait (not counted: waiters 0); the next
 * arm on the same word keeps it (reused, not submitted again), and a send after that arm's
 * registration reaches it. Arming twice in a row registers once. */
static void parked_wait_reused(void) {
    rig r;
    rig_open(&r, 1, 8, DMXP_ROLE_CONSUMER);
    dmxp_error err;
    CHECK_STATUS(dmxp_channel_arm_message_wait(&r.ch, &r.w, &err), DMXP_ARMED);
    CHECK_OK(dmxp_wait_fd_complete(&r.w, &err)); /* gave up: nothing came */
    CHECK(dmxp_wait_fd_pending(&r.w));
    CHECK_EQ_U64(atomic_load(&r.ch.entry->not_empty_waiters), 0);
    CHECK_EQ_U64(atomic_load(&r.ch.recv_peer->waiting), DMXP_WAITING_NONE);
    CHECK_STATUS(dmxp_channel_arm_message_wait(&r.ch, &r.w, &err), DMXP_ARMED);
    CHECK_STATUS(dmxp_channel_arm_message_wait(&r.ch, &r.w, &err), DMXP_ARMED); /* again */
    CHECK_EQ_U64(atomic_load(&r.ch.entry->not_empty_waiters), 1);
    CHECK_EQ_U64(atomic_load(&r.ch.recv_peer->waiting), DMXP_WAITING_NOT_EMPTY);
    CHECK_EQ_U64(r.w.stats.submitted, 1);
    CHECK_EQ_U64(r.w.stats.reused, 2);
    woken_by_a_child_sending(&r, 1, "to the parked wait");
    CHECK_OK(dmxp_wait_fd_complete(&r.w, &err));
    CHECK_EQ_U64(r.w.stats.completed, 1);
    CHECK_EQ_U64(r.w.stats.woken, 1);
    CHECK(!dmxp_wait_fd_pending(&r.w));
    CHECK_EQ_U64(atomic_load(&r.ch.entry->not_empty_waiters), 0);
    recv_text(&r.ch, "to the parked wait");
    rig_close(&r);
}

/* (7) One wait in flight per ring: arming on another word (another channel; the other side of
 * the same one) cancels and reaps the parked one first. Unregistered handles are counted too. */
static void another_word_cancels_the_parked_wait(void) {
    dmxp_segment seg;
    new_segment(&seg);
    dmxp_error err;
    dmxp_channel a, b;
    CHECK_OK(dmxp_channel_create(&seg, 1, 2, &a, &err));
    CHECK_OK(dmxp_channel_create(&seg, 2, 2, &b, &err));
    dmxp_wait_fd w;
    CHECK_OK(dmxp_wait_fd_open(&w, &err));
    CHECK_STATUS(dmxp_channel_arm_message_wait(&a, &w, &err), DMXP_ARMED);
    CHECK_EQ_U64(atomic_load(&a.entry->not_empty_waiters), 1);
    CHECK_OK(dmxp_wait_fd_complete(&w, &err));
    CHECK(dmxp_wait_fd_pending(&w));
    CHECK_STATUS(dmxp_channel_arm_message_wait(&b, &w, &err), DMXP_ARMED);
    CHECK_EQ_U64(w.stats.submitted, 2);
    CHECK_EQ_U64(w.stats.completed, 1); /* a's, cancelled */
    CHECK_EQ_U64(w.stats.woken, 0);
    CHECK_EQ_U64(atomic_load(&a.entry->not_empty_waiters), 0);
    CHECK_EQ_U64(atomic_load(&b.entry->not_empty_waiters), 1);
    const dmxp__uring_sqe *sqe = &w.sqes[(atomic_load(w.sq_tail) - 1) & (w.sq_entries - 1)];
    CHECK_EQ_U64(sqe->addr, (uint64_t)(uintptr_t)&b.entry->not_empty_seq);
    /* Arming without completing first moves the registration, once. */
    CHECK_OK(dmxp_try_send(&b, "x", 1, NULL, NULL));
    CHECK_OK(dmxp_try_send(&b, "y", 1, NULL, NULL));
    CHECK_STATUS(dmxp_channel_arm_free_slots_wait(&b, &w, 1, &err), DMXP_ARMED);
    CHECK_EQ_U64(atomic_load(&b.entry->not_empty_waiters), 0);
    CHECK_EQ_U64(atomic_load(&b.entry->not_full_waiters), 1);
    CHECK_EQ_U64(w.stats.submitted, 3);
    /* b's not_empty wait: woken by those sends (reaped), or cancelled if not posted yet. */
    CHECK_EQ_U64(w.stats.completed, 2);
    CHECK(w.stats.woken <= 1);
    CHECK_OK(dmxp_wait_fd_complete(&w, &err));
    CHECK_EQ_U64(atomic_load(&b.entry->not_full_waiters), 0);
    dmxp_wait_fd_close(&w);
    CHECK_EQ_U64(w.stats.completed, 3);
    drop_segment(&seg);
}

/* (8) A forked child inherits the parent's ring: it may not arm or complete it, and its close
 * releases its own copies only. The parent's round is untouched: still counted, still
 * pending, and woken by a later send. */
static void forked_child_leaves_the_parents_ring_alone(void) {
    rig r;
    rig_open(&r, 1, 8, DMXP_ROLE_CONSUMER);
    dmxp_error err;
    CHECK_STATUS(dmxp_channel_arm_message_wait(&r.ch, &r.w, &err), DMXP_ARMED);
    fflush(stdout);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        dmxp_error cerr;
        if (dmxp_channel_arm_message_wait(&r.ch, &r.w, &cerr) != DMXP_E_INVALID_ARGUMENT) _exit(20);
        if (strstr(cerr.detail, "inherited") == NULL) _exit(21);
        if (dmxp_wait_fd_complete(&r.w, &cerr) != DMXP_E_INVALID_ARGUMENT) _exit(22);
        dmxp_wait_fd_close(&r.w);
        if (dmxp_wait_fd_fd(&r.w) != -1) _exit(23);
        /* A wait fd of its own works. */
        dmxp_wait_fd mine;
        if (dmxp_wait_fd_open(&mine, &cerr) != DMXP_OK) _exit(24);
        dmxp_wait_fd_close(&mine);
        _exit(0);
    }
    reap_ok(child);
    CHECK_EQ_U64(atomic_load(&r.ch.entry->not_empty_waiters), 1);
    CHECK_EQ_U64(atomic_load(&r.ch.recv_peer->waiting), DMXP_WAITING_NOT_EMPTY);
    CHECK(dmxp_wait_fd_pending(&r.w));
    woken_by_a_child_sending(&r, 1, "after the fork");
    CHECK_OK(dmxp_wait_fd_complete(&r.w, &err));
    CHECK_EQ_U64(r.w.stats.woken, 1);
    CHECK_EQ_U64(atomic_load(&r.ch.entry->not_empty_waiters), 0);
    recv_text(&r.ch, "after the fork");
    rig_close(&r);
}

/* (9) A producer dies between claim and publish with nothing behind: no sender will ever wake
 * the loop. Its slices are bounded, and each arm runs the stuck watch of the blocking calls:
 * the position is repaired (a LOST tombstone) within a few rounds, well before the 64 misses
 * after which the non-blocking receive would look for it itself. */
static void stuck_channel_repaired_from_the_loop(void) {
    dmxp_segment seg;
    new_segment(&seg);
    dmxp_error err;
    dmxp_channel ch;
    create_registered(&seg, 1, 8, DMXP_ROLE_CONSUMER, &ch);
    int fd;
    pid_t child = fork_reporting(&fd);
    if (child == 0) {
        dmxp_channel prod;
        uint64_t pos = 0, n = 0;
        child_open_registered(&seg, 1, DMXP_ROLE_PRODUCER, &prod);
        if (dmxp__claim_send(&prod, 1, &pos, &n) != DMXP_OK || n != 1) _exit(22);
        if (write(fd, &pos, sizeof pos) != (ssize_t)sizeof pos) _exit(23);
        for (;;) pause();
    }
    uint64_t pos;
    CHECK(read(fd, &pos, sizeof pos) == (ssize_t)sizeof pos);
    close(fd);
    CHECK_EQ_U64(pos, 0);
    CHECK(kill(child, SIGKILL) == 0);
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFSIGNALED(status));
    dmxp_wait_fd w;
    CHECK_OK(dmxp_wait_fd_open(&w, &err));
    int rounds = 0;
    int64_t guard = (int64_t)dmxp_now_ns() + HANG_GUARD_MS * INT64_C(1000000);
    for (;;) {
        unsigned char buf[DMXP_MSG_INLINE];
        size_t len;
        dmxp_meta meta;
        dmxp_status s = dmxp_try_recv(&ch, buf, sizeof buf, &meta, &len);
        if (s == DMXP_E_LOST) {
            CHECK_EQ_U64(meta.message_id, 0);
            break;
        }
        CHECK_STATUS(s, DMXP_E_EMPTY);
        s = dmxp_channel_arm_message_wait(&ch, &w, &err);
        if (s == DMXP_READY) continue;
        CHECK_STATUS(s, DMXP_ARMED);
        CHECK(dmxp_wait_fd_timeout_ms(&w) <= 100);
        (void)poll_in(dmxp_wait_fd_fd(&w), dmxp_wait_fd_timeout_ms(&w));
        CHECK_OK(dmxp_wait_fd_complete(&w, &err));
        rounds++;
        CHECK(rounds < (int)DMXP_MISS_STREAK);
        CHECK((int64_t)dmxp_now_ns() < guard);
    }
    CHECK(rounds >= 1);
    CHECK_EQ_U64(records_of(&seg, (uint32_t)child), 0); /* the dead record was freed */
    CHECK_EQ_U64(atomic_load(&ch.entry->not_empty_waiters), 0);
    dmxp_wait_fd_close(&w);
    dmxp_channel_close(&ch);
    drop_segment(&seg);
}

/* ---- An event loop ----------------------------------------------------------------------- */

enum { LOOP_CHANNELS = 4, LOOP_PRODUCERS = 2, LOOP_PER_CHANNEL = 4000 };

/* A producer process: attaches the segment by name, sends its share of indices on every
 * channel (blocking on a full ring), pausing now and then so that the loop goes to sleep. */
static void loop_producer(const char *name, int k) {
    dmxp_segment seg;
    dmxp_channel ch[LOOP_CHANNELS];
    if (dmxp_segment_open_shm(&seg, name, 5000, NULL) != DMXP_OK) _exit(20);
    for (uint32_t c = 0; c < LOOP_CHANNELS; c++) {
        if (dmxp_channel_open(&seg, c, &ch[c], NULL) != DMXP_OK) _exit(21);
        if (dmxp_channel_register(&ch[c], DMXP_ROLE_PRODUCER, NULL) != DMXP_OK) _exit(22);
    }
    unsigned char buf[DMXP_MSG_INLINE];
    for (uint64_t i = 0; i < LOOP_PER_CHANNEL; i++) {
        uint64_t index = (uint64_t)k * LOOP_PER_CHANNEL + i;
        for (uint32_t c = 0; c < LOOP_CHANNELS; c++) {
            if ((index + c) % 7 == 0) continue; /* channels get their messages unevenly */
            size_t len = dmxp_pattern_encode(c, index, dmxp_pattern_default_len(index), buf);
            if (dmxp_send_timeout(&ch[c], buf, len, NULL, NULL, 30 * SEC) != DMXP_OK) _exit(23);
        }
        if (i % 97 == 0) dmxp__sleep_ns(200000);
    }
    for (uint32_t c = 0; c < LOOP_CHANNELS; c++) dmxp_channel_close(&ch[c]);
    dmxp_segment_close(&seg);
    _exit(0);
}

/* (10) One thread, one epoll over the wait fds of 4 channels, fed by 2 producer processes:
 * every message arrives exactly once and intact, and no waiter is left counted. */
static void epoll_loop_over_four_channels(void) {
    char name[64];
    snprintf(name, sizeof name, "/dmxp_test_wait_fd_loop_%d", (int)getpid());
    dmxp_error err;
    (void)dmxp_shm_unlink(name, NULL);
    dmxp_segment seg;
    CHECK_OK(dmxp_segment_create_shm(&seg, name, 4u << 20, 0600, &err));
    dmxp_channel ch[LOOP_CHANNELS];
    dmxp_wait_fd w[LOOP_CHANNELS];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    for (uint32_t c = 0; c < LOOP_CHANNELS; c++) {
        CHECK_OK(dmxp_channel_create(&seg, c, 16, &ch[c], &err));
        CHECK_OK(dmxp_channel_register(&ch[c], DMXP_ROLE_CONSUMER, &err));
        CHECK_OK(dmxp_wait_fd_open(&w[c], &err));
        struct epoll_event ev;
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN;
        ev.data.u32 = c;
        CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, dmxp_wait_fd_fd(&w[c]), &ev) == 0);
    }
    uint64_t expected = 0;
    for (uint64_t index = 0; index < (uint64_t)LOOP_PRODUCERS * LOOP_PER_CHANNEL; index++)
        for (uint32_t c = 0; c < LOOP_CHANNELS; c++) expected += (index + c) % 7 != 0;
    size_t seen_len = (size_t)LOOP_CHANNELS * LOOP_PRODUCERS * LOOP_PER_CHANNEL;
    unsigned char *seen = calloc(seen_len, 1);
    CHECK(seen != NULL);
    fflush(stdout);
    pid_t kids[LOOP_PRODUCERS];
    for (int k = 0; k < LOOP_PRODUCERS; k++) {
        kids[k] = fork();
        CHECK(kids[k] >= 0);
        if (kids[k] == 0) loop_producer(name, k);
    }
    uint64_t received = 0, epoll_waits = 0, eintr = 0;
    int armed[LOOP_CHANNELS] = {0};
    int64_t guard = (int64_t)dmxp_now_ns() + HANG_GUARD_MS * INT64_C(1000000);
    int due[LOOP_CHANNELS];
    for (uint32_t c = 0; c < LOOP_CHANNELS; c++) due[c] = 1;
    while (received < expected) {
        CHECK((int64_t)dmxp_now_ns() < guard);
        /* Drain and arm every channel that is due: readable, its slice over, or new. */
        for (uint32_t c = 0; c < LOOP_CHANNELS; c++) {
            if (!due[c]) continue;
            due[c] = 0;
            if (armed[c]) CHECK_OK(dmxp_wait_fd_complete(&w[c], &err));
            armed[c] = 0;
            for (;;) {
                unsigned char buf[DMXP_MSG_INLINE];
                size_t len;
                dmxp_status s = dmxp_try_recv(&ch[c], buf, sizeof buf, NULL, &len);
                if (s == DMXP_OK) {
                    uint64_t pc, index;
                    CHECK_EQ_U64(dmxp_pattern_decode(buf, len, &pc, &index), DMXP_PATTERN_OK);
                    CHECK_EQ_U64(pc, c);
                    CHECK(index < (uint64_t)LOOP_PRODUCERS * LOOP_PER_CHANNEL);
                    CHECK_EQ_U64(seen[index * LOOP_CHANNELS + c], 0);
                    seen[index * LOOP_CHANNELS + c] = 1;
                    received++;
                    continue;
                }
                CHECK_STATUS(s, DMXP_E_EMPTY);
                s = dmxp_channel_arm_message_wait(&ch[c], &w[c], &err);
                if (s == DMXP_READY) continue;
                CHECK_STATUS(s, DMXP_ARMED);
                armed[c] = 1;
                break;
            }
        }
        if (received == expected) break;
        int timeout = 100;
        for (uint32_t c = 0; c < LOOP_CHANNELS; c++) {
            int t = dmxp_wait_fd_timeout_ms(&w[c]);
            if (t < timeout) timeout = t;
        }
        struct epoll_event events[LOOP_CHANNELS];
        int n = epoll_wait(ep, events, LOOP_CHANNELS, timeout);
        epoll_waits++;
        if (n < 0) {
            CHECK(errno == EINTR); /* the kernel ran the ring's completion on our way out */
            eintr++;
            continue;
        }
        for (int i = 0; i < n; i++) due[events[i].data.u32] = 1;
        for (uint32_t c = 0; c < LOOP_CHANNELS; c++)
            if (dmxp_wait_fd_timeout_ms(&w[c]) == 0) due[c] = 1;
    }
    for (int k = 0; k < LOOP_PRODUCERS; k++) reap_ok(kids[k]);
    dmxp_wait_fd_stats total = {0, 0, 0, 0};
    for (uint32_t c = 0; c < LOOP_CHANNELS; c++) {
        dmxp_wait_fd_close(&w[c]);
        total.submitted += w[c].stats.submitted;
        total.reused += w[c].stats.reused;
        total.completed += w[c].stats.completed;
        total.woken += w[c].stats.woken;
        CHECK_EQ_U64(atomic_load(&ch[c].entry->not_empty_waiters), 0);
        CHECK_EQ_U64(atomic_load(&ch[c].recv_peer->waiting), DMXP_WAITING_NONE);
        unsigned char buf[DMXP_MSG_INLINE];
        size_t len;
        CHECK_STATUS(dmxp_try_recv(&ch[c], buf, sizeof buf, NULL, &len), DMXP_E_EMPTY);
        dmxp_channel_close(&ch[c]);
    }
    CHECK_EQ_U64(received, expected);
    printf("epoll loop: %llu messages on %d channels from %d processes; %llu epoll_waits "
           "(%llu EINTR), %llu futex waits submitted, %llu reused, %llu woken\n",
           (unsigned long long)received, LOOP_CHANNELS, LOOP_PRODUCERS,
           (unsigned long long)epoll_waits, (unsigned long long)eintr,
           (unsigned long long)total.submitted, (unsigned long long)total.reused,
           (unsigned long long)total.woken);
    free(seen);
    close(ep);
    dmxp_segment_close(&seg);
    CHECK_OK(dmxp_shm_unlink(name, &err));
}

int main(void) {
    abi_matches_linux_header();
    async_poll_env_forces_fallback();
    skip_is_loud();
    filtered_io_uring_is_unsupported();
    if (!supported_or_skip()) return 0;
    wakes_on_a_send_from_another_process();
    futex_wake_reaches_io_uring_wait();
    ready_when_already_there();
    free_slots_wait_woken_by_a_consumer();
    close_cancels_the_wait_in_flight();
    parked_wait_reused();
    another_word_cancels_the_parked_wait();
    forked_child_leaves_the_parents_ring_alone();
    stuck_channel_repaired_from_the_loop();
    epoll_loop_over_four_channels();
    TEST_DONE("test_wait_fd");
}
