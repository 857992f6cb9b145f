/* OS-backed segments and several processes: exclusive create with exact mode bits, attach
 * while being created, file segments made via a temporary file and link(2), fd attach,
 * processes racing to create one segment and its channels, a futex wake reaching another
 * process, and MPMC across processes over many laps. */
#include "util.h"
#include "../examples/dmxp_pattern.h"

#include <signal.h>
#include <sys/wait.h>

static char name[64];
static char shm_path[96];

static mode_t mode_of(const char *path) {
    struct stat st;
    CHECK(stat(path, &st) == 0);
    return st.st_mode & 0777;
}

static off_t size_of(const char *path) {
    struct stat st;
    CHECK(stat(path, &st) == 0);
    return st.st_size;
}

static void shm_create_and_attach(void) {
    dmxp_segment seg, seg2;
    dmxp_error err;
    dmxp_shm_unlink(name, NULL);
    CHECK_STATUS(dmxp_segment_open_shm(&seg, name, 0, &err), DMXP_E_NO_SEGMENT);
    CHECK_EQ_U64(err.os_errno, ENOENT);
    CHECK_STATUS(dmxp_segment_create_shm(&seg, name, 100, 0600, &err), DMXP_E_REGION_TOO_SMALL);

    mode_t old = umask(0);
    CHECK_OK(dmxp_segment_create_shm(&seg, name, 1u << 20, DMXP_DEFAULT_MODE, &err));
    umask(old);
    CHECK_EQ_U64(mode_of(shm_path), 0600); /* exact, whatever the umask */
    CHECK_EQ_U64(size_of(shm_path), 1u << 20);
    CHECK_STATUS(dmxp_segment_create_shm(&seg2, name, 1u << 20, 0600, &err),
                 DMXP_E_SEGMENT_EXISTS);
    CHECK_EQ_U64(err.os_errno, EEXIST);
    /* Attach sees the creator's work; open_or_create attaches and never resizes. */
    dmxp_channel a, b;
    CHECK_OK(dmxp_channel_create(&seg, 0, 4, &a, &err));
    CHECK_OK(dmxp_try_send(&a, "hello", 5, NULL, NULL));
    int created = 9;
    CHECK_OK(dmxp_segment_open_or_create_shm(&seg2, name, 4u << 20, 0600, 100, &created, &err));
    CHECK_EQ_U64(created, 0);
    CHECK_EQ_U64(seg2.len, 1u << 20);
    CHECK_EQ_U64(size_of(shm_path), 1u << 20);
    CHECK_OK(dmxp_channel_open(&seg2, 0, &b, &err));
    CHECK(b.slots != a.slots); /* a second mapping at another address */
    unsigned char out[DMXP_MSG_INLINE];
    size_t len;
    CHECK_OK(dmxp_try_recv(&b, out, sizeof out, NULL, &len));
    CHECK(len == 5 && memcmp(out, "hello", 5) == 0);
    dmxp_segment_close(&seg2);
    dmxp_segment_close(&seg);

    /* mode bits other than the default are applied exactly too */
    CHECK_OK(dmxp_shm_unlink(name, &err));
    old = umask(077);
    CHECK_OK(dmxp_segment_create_shm(&seg, name, 1u << 20, 0640, &err));
    umask(old);
    CHECK_EQ_U64(mode_of(shm_path), 0640);
    dmxp_segment_close(&seg);
    CHECK_OK(dmxp_shm_unlink(name, &err));
    CHECK_STATUS(dmxp_shm_unlink(name, &err), DMXP_E_NO_SEGMENT);
}

static void being_created_and_bad_magic(void) {
    dmxp_segment seg;
    dmxp_error err;
    /* Between O_EXCL and ftruncate the object is empty: that is "being created". */
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    CHECK(fd >= 0);
    CHECK_STATUS(dmxp_segment_open_shm(&seg, name, 30, &err), DMXP_E_NOT_READY);
    CHECK_STATUS(dmxp_segment_open_or_create_shm(&seg, name, 1u << 20, 0600, 30, NULL, &err),
                 DMXP_E_NOT_READY);
    CHECK_EQ_U64(size_of(shm_path), 0); /* never truncated by an attacher */
    /* Full size, magic still 0 */
    CHECK(ftruncate(fd, 1u << 20) == 0);
    CHECK_STATUS(dmxp_segment_open_shm(&seg, name, 30, &err), DMXP_E_NOT_READY);
    char text[256];
    dmxp_error_format(&err, text, sizeof text);
    CHECK(strstr(text, "being created") != NULL);
    /* A different magic is refused at once and left alone. */
    uint64_t seed_magic = UINT64_C(0x5345454431323334);
    CHECK(pwrite(fd, &seed_magic, 8, 0) == 8);
    CHECK_STATUS(dmxp_segment_open_shm(&seg, name, 10000, &err), DMXP_E_BAD_MAGIC);
    CHECK_EQ_U64(err.found, seed_magic);
    CHECK_STATUS(dmxp_segment_open_or_create_shm(&seg, name, 1u << 20, 0600, 100, NULL, &err),
                 DMXP_E_BAD_MAGIC);
    /* Through the fd too */
    CHECK_STATUS(dmxp_segment_open_fd(&seg, fd, 0, &err), DMXP_E_BAD_MAGIC);
    uint64_t zero = 0;
    CHECK(pwrite(fd, &zero, 8, 0) == 8);
    /* An attacher waiting while a creator finishes: format the object from a child. */
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        dmxp__sleep_ns(50000000);
        void *base = mmap(NULL, 1u << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        dmxp_segment s;
        _exit(base != MAP_FAILED &&
                      dmxp_segment_format_memory(&s, base, 1u << 20, 1, NULL) == DMXP_OK
                  ? 0
                  : 1);
    }
    CHECK_OK(dmxp_segment_open_shm(&seg, name, 20000, &err));
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_EQ_U64(seg.len, 1u << 20);
    dmxp_segment_close(&seg);
    CHECK_OK(dmxp_segment_open_fd(&seg, fd, 0, &err));
    dmxp_segment_close(&seg);
    close(fd);
    CHECK_OK(dmxp_shm_unlink(name, &err));
}

static void file_segments(void) {
    char path[128];
    snprintf(path, sizeof path, "/tmp/dmxp_c_test_%ld.seg", (long)getpid());
    unlink(path);
    dmxp_segment seg, seg2;
    dmxp_error err;
    CHECK_STATUS(dmxp_segment_open_path(&seg, path, 0, &err), DMXP_E_NO_SEGMENT);
    CHECK_OK(dmxp_segment_create_path(&seg, path, 1u << 20, 0600, &err));
    CHECK_EQ_U64(mode_of(path), 0600);
    CHECK_EQ_U64(size_of(path), 1u << 20);
    CHECK_STATUS(dmxp_segment_create_path(&seg2, path, 1u << 20, 0600, &err),
                 DMXP_E_SEGMENT_EXISTS);
    /* No temporary file left behind */
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld.0", path, (long)getpid());
    CHECK(access(tmp, F_OK) != 0);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld.1", path, (long)getpid());
    CHECK(access(tmp, F_OK) != 0);
    dmxp_channel a, b;
    CHECK_OK(dmxp_channel_open_or_create(&seg, 7, 8, 0, &a, NULL, &err));
    CHECK_OK(dmxp_try_send(&a, "file", 4, NULL, NULL));
    CHECK_OK(dmxp_segment_open_path(&seg2, path, 0, &err));
    CHECK_OK(dmxp_channel_open(&seg2, 7, &b, &err));
    unsigned char out[16];
    size_t len;
    CHECK_OK(dmxp_try_recv(&b, out, sizeof out, NULL, &len));
    CHECK(len == 4 && memcmp(out, "file", 4) == 0);
    dmxp_segment_close(&seg2);
    int created = 5;
    CHECK_OK(dmxp_segment_open_or_create_path(&seg2, path, 1u << 20, 0600, 0, &created, &err));
    CHECK_EQ_U64(created, 0);
    dmxp_segment_close(&seg2);
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    CHECK_OK(dmxp_segment_open_fd(&seg2, fd, 0, &err));
    close(fd); /* the mapping outlives the fd */
    CHECK_OK(dmxp_channel_open(&seg2, 7, &b, &err));
    CHECK_EQ_U64(b.capacity, 8);
    dmxp_segment_close(&seg2);
    dmxp_segment_close(&seg);
    unlink(path);
}

/* N processes race to create the segment and channels 0..N-1 (each opens all of them). */
#define RACERS 4
static void creation_race(void) {
    dmxp_shm_unlink(name, NULL);
    pid_t kids[RACERS];
    for (int i = 0; i < RACERS; i++) {
        kids[i] = fork();
        CHECK(kids[i] >= 0);
        if (kids[i] == 0) {
            dmxp_segment seg;
            int created = 0, made = 0;
            if (dmxp_segment_open_or_create_shm(&seg, name, 4u << 20, 0600, 5000, &created,
                                                NULL) != DMXP_OK)
                _exit(100);
            for (uint32_t c = 0; c < RACERS; c++) {
                dmxp_channel ch;
                int mine = 0;
                if (dmxp_channel_open_or_create(&seg, c, 16, 5000, &ch, &mine, NULL) != DMXP_OK)
                    _exit(101);
                made += mine;
                if (c == (uint32_t)i &&
                    dmxp_try_send(&ch, &i, sizeof i, NULL, NULL) != DMXP_OK)
                    _exit(102);
            }
            /* exit code: bit 0 = made the segment, bits 1.. = channels made */
            _exit(created | (made << 1));
        }
    }
    int segments = 0, channels = 0;
    for (int i = 0; i < RACERS; i++) {
        int status;
        CHECK(waitpid(kids[i], &status, 0) == kids[i] && WIFEXITED(status));
        int code = WEXITSTATUS(status);
        CHECK(code < 100);
        segments += code & 1;
        channels += code >> 1;
    }
    CHECK_EQ_U64(segments, 1);
    CHECK_EQ_U64(channels, RACERS);
    dmxp_segment seg;
    dmxp_error err;
    CHECK_OK(dmxp_segment_open_shm(&seg, name, 0, &err));
    CHECK_EQ_U64(dmxp_segment_channel_count(&seg), RACERS);
    CHECK_OK(dmxp_segment_validate_all(&seg, &err));
    for (uint32_t c = 0; c < RACERS; c++) {
        dmxp_channel ch;
        CHECK_OK(dmxp_channel_open(&seg, c, &ch, &err));
        CHECK_EQ_U64(ch.capacity, 16);
        int got = -1;
        size_t len;
        CHECK_OK(dmxp_try_recv(&ch, &got, sizeof got, NULL, &len));
        CHECK_EQ_U64(got, c);
        CHECK_STATUS(dmxp_try_recv(&ch, &got, sizeof got, NULL, &len), DMXP_E_EMPTY);
    }
    CHECK_EQ_U64(dmxp_segment_free_space(&seg), (4u << 20) - DMXP_HEADER_SIZE -
                                                    RACERS * 16 * DMXP_SLOT_SIZE);
    dmxp_segment_close(&seg);
    CHECK_OK(dmxp_shm_unlink(name, &err));
}

/* A sleeper in one process on a futex word of the shared mapping is woken from another
 * process, both ways: the client's wake reaches a plain shared FUTEX_WAIT, and a plain shared
 * FUTEX_WAKE reaches the client's wait. With FUTEX_PRIVATE_FLAG on either side the sleeper
 * would stay asleep until its 30 s timeout and report ETIMEDOUT. */
static void cross_process_wake(void) {
    dmxp_segment seg;
    dmxp_error err;
    dmxp_shm_unlink(name, NULL);
    CHECK_OK(dmxp_segment_create_shm(&seg, name, 1u << 20, 0600, &err));
    dmxp_channel ch;
    CHECK_OK(dmxp_channel_create(&seg, 0, 2, &ch, &err));
    for (int client_waits = 0; client_waits < 2; client_waits++) {
        pid_t child = fork();
        CHECK(child >= 0);
        if (child == 0) {
            dmxp_segment s;
            dmxp_channel c;
            if (dmxp_segment_open_shm(&s, name, 1000, NULL) != DMXP_OK) _exit(10);
            if (dmxp_channel_open(&s, 0, &c, NULL) != DMXP_OK) _exit(11);
            _Atomic uint32_t *word = &c.entry->not_empty_seq;
            atomic_fetch_add(&c.entry->not_empty_waiters, 1);
            uint32_t v = atomic_load(word);
            /* The parent sends as soon as it sees the count, so the message may already be
             * there: the re-check of §7.2 then skips the sleep. */
            int already = dmxp_has_message(&c);
            int r = 0;
            if (already) {
            } else if (client_waits) {
                r = dmxp__futex_wait(word, v, INT64_C(30000000000));
            } else {
                struct timespec ts = {30, 0};
                r = syscall(SYS_futex, (void *)word, FUTEX_WAIT, v, &ts, NULL, 0) == 0 ? 0
                                                                                       : errno;
            }
            atomic_fetch_sub(&c.entry->not_empty_waiters, 1);
            /* woken (0), or the word changed before we slept (EAGAIN): the wake came */
            if (r != 0 && r != EAGAIN) _exit(13);
            if (!already && atomic_load(word) == v) _exit(14);
            unsigned char out[16];
            size_t len;
            if (dmxp_try_recv(&c, out, sizeof out, NULL, &len) != DMXP_OK) _exit(15);
            _exit(len == 3 && memcmp(out, "hey", 3) == 0 ? 0 : 16);
        }
        for (int i = 0; i < 200000 && atomic_load(&ch.entry->not_empty_waiters) == 0; i++)
            dmxp__sleep_ns(100000);
        CHECK_EQ_U64(atomic_load(&ch.entry->not_empty_waiters), 1);
        if (client_waits) {
            /* publish by hand, then wake with a plain shared FUTEX_WAKE */
            uint64_t t = atomic_load(&ch.entry->tail);
            CHECK(atomic_compare_exchange_strong(&ch.entry->tail, &t, t + 1));
            CHECK_OK(dmxp__publish(&ch, t, "hey", 3, 0, 0, dmxp_now_ns()));
            atomic_fetch_add(&ch.entry->not_empty_seq, 1);
            CHECK(syscall(SYS_futex, (void *)&ch.entry->not_empty_seq, FUTEX_WAKE, INT_MAX, NULL,
                          NULL, 0) >= 0);
        } else {
            CHECK_OK(dmxp_try_send(&ch, "hey", 3, NULL, NULL));
        }
        int status;
        CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status));
        CHECK_EQ_U64(WEXITSTATUS(status), 0);
    }
    dmxp_segment_close(&seg);
    CHECK_OK(dmxp_shm_unlink(name, &err));
}

/* 2 producer and 2 consumer processes on a ring of 4 (many laps), exactly once. */
#define XP_PER_PRODUCER 20000u
static void mpmc_processes(void) {
    dmxp_segment seg;
    dmxp_error err;
    dmxp_shm_unlink(name, NULL);
    CHECK_OK(dmxp_segment_create_shm(&seg, name, 1u << 20, 0600, &err));
    dmxp_channel ch;
    CHECK_OK(dmxp_channel_create(&seg, 3, 4, &ch, &err));
    const uint64_t total = 2 * XP_PER_PRODUCER;
    /* Results shared with the children: a count per index, and the total received. */
    size_t shared_len = (total + 1) * sizeof(_Atomic uint32_t) + 64;
    void *shared = mmap(NULL, shared_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                        -1, 0);
    CHECK(shared != MAP_FAILED);
    _Atomic uint64_t *received = shared;
    _Atomic uint32_t *counts = (_Atomic uint32_t *)((char *)shared + 64);
    pid_t kids[4];
    for (int k = 0; k < 4; k++) {
        kids[k] = fork();
        CHECK(kids[k] >= 0);
        if (kids[k] != 0) continue;
        dmxp_segment s;
        dmxp_channel c;
        if (dmxp_segment_open_shm(&s, name, 1000, NULL) != DMXP_OK) _exit(10);
        if (dmxp_channel_open(&s, 3, &c, NULL) != DMXP_OK) _exit(11);
        unsigned char buf[DMXP_MSG_INLINE];
        if (k < 2) {
            for (uint64_t i = 0; i < XP_PER_PRODUCER; i++) {
                uint64_t index = (uint64_t)k * XP_PER_PRODUCER + i;
                size_t n = dmxp_pattern_encode(3, index, dmxp_pattern_default_len(index), buf);
                if (dmxp_send_timeout(&c, buf, n, NULL, NULL, INT64_C(30000000000)) != DMXP_OK)
                    _exit(12);
            }
            _exit(0);
        }
        while (atomic_load(received) < total) {
            size_t len;
            dmxp_status st = dmxp_recv_timeout(&c, buf, sizeof buf, NULL, &len, 20000000);
            if (st == DMXP_E_TIMEOUT) continue;
            if (st != DMXP_OK) _exit(13);
            uint64_t cc, index;
            if (dmxp_pattern_decode(buf, len, &cc, &index) != DMXP_PATTERN_OK || cc != 3 ||
                index >= total)
                _exit(14);
            atomic_fetch_add(&counts[index], 1);
            atomic_fetch_add(received, 1);
        }
        _exit(0);
    }
    for (int k = 0; k < 4; k++) {
        int status;
        CHECK(waitpid(kids[k], &status, 0) == kids[k] && WIFEXITED(status));
        CHECK_EQ_U64(WEXITSTATUS(status), 0);
    }
    CHECK_EQ_U64(atomic_load(received), total);
    for (uint64_t i = 0; i < total; i++)
        if (atomic_load(&counts[i]) != 1) {
            fprintf(stderr, "index %llu received %u times\n", (unsigned long long)i,
                    (unsigned)atomic_load(&counts[i]));
            exit(1);
        }
    CHECK_EQ_U64(dmxp_channel_head(&ch), total);
    munmap(shared, shared_len);
    dmxp_segment_close(&seg);
    CHECK_OK(dmxp_shm_unlink(name, &err));
}

/* ---- Crash recovery (PROTOCOL.md §11) ------------------------------------------------------ */

/* A child that opens channel `id`, registers `role` and claims one position without publishing
 * (producer) or freeing (consumer), with the client's own claim code (intent, then the CAS);
 * then it waits to be killed. *position gets the claimed position. */
static pid_t spawn_claimer(const dmxp_segment *seg, uint32_t id, unsigned role,
                           uint64_t *position) {
    int fd;
    pid_t child = fork_reporting(&fd);
    if (child == 0) {
        dmxp_channel ch;
        uint64_t pos = 0, n = 0;
        uint32_t needed = 0;
        child_open_registered(seg, id, role, &ch);
        dmxp_status s = role == DMXP_ROLE_PRODUCER
                            ? dmxp__claim_send(&ch, 1, &pos, &n)
                            : dmxp__claim_recv(&ch, 1, SIZE_MAX, &pos, &n, &needed);
        if (s != DMXP_OK || n != 1) _exit(22);
        if (write(fd, &pos, sizeof pos) != (ssize_t)sizeof pos) _exit(23);
        for (;;) pause();
    }
    CHECK(read(fd, position, sizeof *position) == (ssize_t)sizeof *position);
    close(fd);
    return child;
}

/* Kills the child; checks that it is judged dead while still a zombie, then reaps it. */
static void kill_and_reap(pid_t child, uint64_t start_time) {
    CHECK(kill(child, SIGKILL) == 0);
    int dead = 0;
    for (int i = 0; i < 10000 && !dead; i++) { /* hang guard only */
        char st = 0;
        uint64_t t;
        if (dmxp__proc_stat((uint32_t)child, &st, &t) == 0 && st == 'Z') {
            CHECK_EQ_U64(kill(child, 0), 0); /* kill alone still finds the zombie */
            dead = dmxp_peer_dead((uint32_t)child, start_time);
            CHECK(dead);
        } else {
            dmxp__sleep_ns(1000000);
        }
    }
    CHECK(dead);
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFSIGNALED(status));
    CHECK(dmxp_peer_dead((uint32_t)child, start_time)); /* reaped: ESRCH */
}

static void send_text(const dmxp_channel *ch, const char *text, uint64_t want_id) {
    uint64_t id;
    CHECK_OK(dmxp_try_send(ch, text, strlen(text), NULL, &id));
    CHECK_EQ_U64(id, want_id);
}

static void recv_text(const dmxp_channel *ch, const char *text, uint64_t want_id) {
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len;
    dmxp_meta meta;
    CHECK_OK(dmxp_recv_timeout(ch, buf, sizeof buf, &meta, &len, 10 * INT64_C(1000000000)));
    CHECK_EQ_U64(meta.message_id, want_id);
    CHECK(len == strlen(text) && memcmp(buf, text, len) == 0);
}

static void recovery_segment(dmxp_segment *seg) {
    dmxp_error err;
    dmxp_shm_unlink(name, NULL);
    CHECK_OK(dmxp_segment_create_shm(seg, name, 1u << 20, 0600, &err));
}

/* (1) A producer dies between claim and publish: the consumer gets the messages before,
 * exactly one LOST with the dead claim's id, then the messages after. */
static void dead_producer(void) {
    dmxp_segment seg;
    dmxp_error err;
    recovery_segment(&seg);
    dmxp_channel prod, cons;
    CHECK_OK(dmxp_channel_create(&seg, 2, 8, &prod, &err));
    CHECK_OK(dmxp_channel_register(&prod, DMXP_ROLE_PRODUCER, &err));
    CHECK_OK(dmxp_channel_open(&seg, 2, &cons, &err));
    CHECK_OK(dmxp_channel_register(&cons, DMXP_ROLE_CONSUMER, &err));
    send_text(&prod, "before-0", 0);
    send_text(&prod, "before-1", 1);
    uint64_t pos;
    pid_t child = spawn_claimer(&seg, 2, DMXP_ROLE_PRODUCER, &pos);
    CHECK_EQ_U64(pos, 2);
    CHECK_EQ_U64(records_of(&seg, (uint32_t)child), 1);
    uint64_t child_start = dmxp_process_start_time((uint32_t)child);
    CHECK(child_start != 0);
    kill_and_reap(child, child_start);
    send_text(&prod, "after-3", 3);
    send_text(&prod, "after-4", 4);
    recv_text(&cons, "before-0", 0);
    recv_text(&cons, "before-1", 1);
    /* Stuck at 2: the timed receive repairs it after the grace period and reports the loss. */
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len = 99;
    dmxp_meta meta;
    CHECK_STATUS(dmxp_recv_timeout(&cons, buf, sizeof buf, &meta, &len, 10 * INT64_C(1000000000)),
                 DMXP_E_LOST);
    CHECK_EQ_U64(meta.message_id, 2);
    CHECK_EQ_U64(meta.sender_pid, (uint32_t)child);
    CHECK_EQ_U64(meta.sender_runtime, DMXP_RUNTIME_C);
    CHECK_EQ_U64(meta.payload_len, 0);
    CHECK_EQ_U64(len, 0);
    CHECK_EQ_U64(records_of(&seg, (uint32_t)child), 0); /* the dead record was freed */
    recv_text(&cons, "after-3", 3);
    recv_text(&cons, "after-4", 4);
    CHECK_STATUS(dmxp_recv_timeout(&cons, buf, sizeof buf, &meta, &len, 30000000),
                 DMXP_E_TIMEOUT);
    /* The same through a batch receive: the tombstone is counted as lost. */
    child = spawn_claimer(&seg, 2, DMXP_ROLE_PRODUCER, &pos);
    CHECK_EQ_U64(pos, 5);
    kill_and_reap(child, dmxp_process_start_time((uint32_t)child));
    send_text(&prod, "after-6", 6);
    CHECK_OK(dmxp_wait_message(&cons, 10 * INT64_C(1000000000))); /* repairs */
    dmxp_recv_counts counts;
    CHECK_OK(dmxp_try_recv_batch_counts(&cons, 8, NULL, NULL, NULL, &counts));
    CHECK_EQ_U64(counts.lost, 1);
    CHECK_EQ_U64(counts.delivered, 1);
    dmxp_channel_close(&prod);
    dmxp_channel_close(&cons);
    dmxp_segment_close(&seg);
    CHECK_OK(dmxp_shm_unlink(name, &err));
}

/* (2) A consumer dies holding a claimed, unfreed slot: recovery frees it and the producer can
 * fill the ring again. */
static void dead_consumer(void) {
    dmxp_segment seg;
    dmxp_error err;
    recovery_segment(&seg);
    dmxp_channel prod, cons;
    CHECK_OK(dmxp_channel_create(&seg, 4, 4, &prod, &err));
    CHECK_OK(dmxp_channel_register(&prod, DMXP_ROLE_PRODUCER, &err));
    CHECK_OK(dmxp_channel_open(&seg, 4, &cons, &err));
    CHECK_OK(dmxp_channel_register(&cons, DMXP_ROLE_CONSUMER, &err));
    for (uint64_t i = 0; i < 4; i++) send_text(&prod, "m", i);
    uint64_t pos;
    pid_t child = spawn_claimer(&seg, 4, DMXP_ROLE_CONSUMER, &pos);
    CHECK_EQ_U64(pos, 0);
    kill_and_reap(child, dmxp_process_start_time((uint32_t)child));
    for (uint64_t i = 1; i < 4; i++) recv_text(&cons, "m", i);
    CHECK_STATUS(dmxp_try_send(&prod, "n", 1, NULL, NULL), DMXP_E_FULL);
    /* The explicit call reports what it did. */
    dmxp_recover_report rep;
    CHECK_OK(dmxp_channel_recover(&prod, &rep));
    CHECK_EQ_U64(rep.records_freed, 1);
    CHECK_EQ_U64(rep.freed, 1);
    CHECK_EQ_U64(rep.lost, 0);
    CHECK_OK(dmxp_channel_recover(&prod, &rep)); /* nothing left */
    CHECK(rep.records_freed == 0 && rep.freed == 0);
    for (uint64_t i = 4; i < 8; i++) send_text(&prod, "full again", i);
    CHECK_STATUS(dmxp_try_send(&prod, "n", 1, NULL, NULL), DMXP_E_FULL);
    for (uint64_t i = 4; i < 8; i++) recv_text(&cons, "full again", i);
    /* Through the blocking send: it repairs by itself after the grace period. */
    for (uint64_t i = 8; i < 12; i++) send_text(&prod, "o", i);
    child = spawn_claimer(&seg, 4, DMXP_ROLE_CONSUMER, &pos);
    CHECK_EQ_U64(pos, 8);
    kill_and_reap(child, dmxp_process_start_time((uint32_t)child));
    for (uint64_t i = 9; i < 12; i++) recv_text(&cons, "o", i);
    uint64_t id;
    CHECK_OK(dmxp_send_timeout(&prod, "p", 1, NULL, &id, 10 * INT64_C(1000000000)));
    CHECK_EQ_U64(id, 12);
    recv_text(&cons, "p", 12);
    dmxp_channel_close(&prod);
    dmxp_channel_close(&cons);
    dmxp_segment_close(&seg);
    CHECK_OK(dmxp_shm_unlink(name, &err));
}

/* (3) A live peer's claim is never repaired, and a dead record's stale intent over a position
 * a live peer owns is not either. */
static void live_peer_respected(void) {
    dmxp_segment seg;
    dmxp_error err;
    recovery_segment(&seg);
    dmxp_channel cons;
    CHECK_OK(dmxp_channel_create(&seg, 6, 8, &cons, &err));
    CHECK_OK(dmxp_channel_register(&cons, DMXP_ROLE_CONSUMER, &err));
    uint64_t pos;
    pid_t live = spawn_claimer(&seg, 6, DMXP_ROLE_PRODUCER, &pos);
    CHECK_EQ_U64(pos, 0);
    dmxp_recover_report rep;
    CHECK_OK(dmxp_channel_recover(&cons, &rep));
    CHECK(rep.records_freed == 0 && rep.lost == 0);
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len;
    /* Stuck for 60 ms, re-checked (and recovery tried) every 10 ms: still nothing. */
    CHECK_STATUS(dmxp_recv_timeout(&cons, buf, sizeof buf, NULL, &len, 60000000),
                 DMXP_E_TIMEOUT);
    CHECK_EQ_U64(atomic_load(&cons.slots[0].sequence), 0);
    CHECK_EQ_U64(records_of(&seg, (uint32_t)live), 1);
    /* A dead record whose stale intent also names position 0 (it lost the CAS to the live
     * child and died): position 0 is left to its live owner, and the record is given back to
     * its dead owner, intent intact (§11.6: the covering intent might be a live peer's stale
     * one, and the position must stay repairable once it is gone). */
    pid_t gone = fork();
    if (gone == 0) _exit(0);
    CHECK(waitpid(gone, NULL, 0) == gone);
    dmxp_peer_record *t = peer_table_of(&seg);
    dmxp_peer_record *d = &t[DMXP_PEER_RECORDS - 1];
    atomic_store(&d->pid, (uint32_t)gone);
    atomic_store(&d->runtime, DMXP_RUNTIME_RUST);
    atomic_store(&d->role, DMXP_ROLE_PRODUCER);
    atomic_store(&d->channel_id, 6);
    atomic_store(&d->intent_position, 0);
    atomic_store(&d->intent_count, 1);
    CHECK_OK(dmxp_channel_recover(&cons, &rep));
    CHECK_EQ_U64(rep.records_freed, 0);
    CHECK_EQ_U64(rep.records_deferred, 1);
    CHECK_EQ_U64(rep.lost, 0);
    CHECK_EQ_U64(atomic_load(&d->pid), (uint32_t)gone);
    CHECK_EQ_U64(atomic_load(&d->intent_count), 1);
    CHECK_EQ_U64(atomic_load(&d->intent_position), 0);
    CHECK_EQ_U64(atomic_load(&cons.slots[0].sequence), 0);
    /* Once the owner dies, its claim is repaired (by its own record, which comes first in the
     * table), and the same pass frees the given-back record: 0 is no longer stuck. */
    kill_and_reap(live, dmxp_process_start_time((uint32_t)live));
    dmxp_meta meta;
    CHECK_STATUS(dmxp_recv_timeout(&cons, buf, sizeof buf, &meta, &len, 10 * INT64_C(1000000000)),
                 DMXP_E_LOST);
    CHECK_EQ_U64(meta.message_id, 0);
    CHECK_EQ_U64(meta.sender_pid, (uint32_t)live);
    CHECK_EQ_U64(records_of(&seg, (uint32_t)gone), 0);
    CHECK_EQ_U64(records_of(&seg, (uint32_t)live), 0);
    dmxp_channel_close(&cons);
    dmxp_segment_close(&seg);
    CHECK_OK(dmxp_shm_unlink(name, &err));
}

/* (4) pid reuse: a record naming this (live) process's pid with another start time belongs to
 * a dead process. This process does not judge its own pid (§11.5); a child does. */
static void pid_reuse(void) {
    dmxp_segment seg;
    dmxp_error err;
    recovery_segment(&seg);
    dmxp_channel ch;
    CHECK_OK(dmxp_channel_create(&seg, 7, 4, &ch, &err));
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_CONSUMER, &err)); /* installs the table */
    uint32_t me = (uint32_t)getpid();
    uint64_t start = dmxp_process_start_time(me);
    CHECK(dmxp_peer_dead(me, start + 1));
    CHECK(!dmxp_peer_dead(me, start));
    /* A claim by "the previous owner of our pid": tail moved, nothing published. */
    dmxp_channel raw; /* unregistered: only the CAS */
    CHECK_OK(dmxp_channel_open(&seg, 7, &raw, &err));
    uint64_t pos, n;
    CHECK_OK(dmxp__claim_send(&raw, 1, &pos, &n));
    dmxp_peer_record *d = &peer_table_of(&seg)[10];
    atomic_store(&d->pid, me);
    atomic_store(&d->runtime, DMXP_RUNTIME_GO);
    atomic_store(&d->role, DMXP_ROLE_PRODUCER);
    atomic_store(&d->start_time, start + 1000);
    atomic_store(&d->channel_id, 7);
    atomic_store(&d->intent_position, pos);
    atomic_store(&d->intent_count, 1);
    dmxp_recover_report rep;
    CHECK_OK(dmxp_channel_recover(&ch, &rep)); /* our own pid: alive to us */
    CHECK(rep.records_freed == 0 && rep.lost == 0);
    pid_t child = fork();
    if (child == 0) {
        dmxp_recover_report r;
        if (dmxp_channel_recover(&ch, &r) != DMXP_OK) _exit(30);
        _exit(r.records_freed == 1 && r.lost == 1 ? 0 : 31);
    }
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status));
    CHECK_EQ_U64(WEXITSTATUS(status), 0);
    CHECK_EQ_U64(atomic_load(&d->pid), 0);
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len;
    dmxp_meta meta;
    CHECK_STATUS(dmxp_try_recv(&ch, buf, sizeof buf, &meta, &len), DMXP_E_LOST);
    CHECK_EQ_U64(meta.message_id, pos);
    CHECK_EQ_U64(meta.sender_runtime, DMXP_RUNTIME_GO);
    dmxp_channel_close(&ch);
    dmxp_segment_close(&seg);
    CHECK_OK(dmxp_shm_unlink(name, &err));
}

/* (5) Records of another channel are left alone. */
static void other_channel_untouched(void) {
    dmxp_segment seg;
    dmxp_error err;
    recovery_segment(&seg);
    dmxp_channel a, b;
    CHECK_OK(dmxp_channel_create(&seg, 8, 4, &a, &err));
    CHECK_OK(dmxp_channel_create(&seg, 9, 4, &b, &err));
    uint64_t pos;
    pid_t child = spawn_claimer(&seg, 9, DMXP_ROLE_PRODUCER, &pos);
    kill_and_reap(child, dmxp_process_start_time((uint32_t)child));
    dmxp_recover_report rep;
    CHECK_OK(dmxp_channel_recover(&a, &rep));
    CHECK(rep.records_freed == 0 && rep.lost == 0 && rep.freed == 0);
    CHECK_EQ_U64(records_of(&seg, (uint32_t)child), 1);
    CHECK_EQ_U64(atomic_load(&b.slots[0].sequence), 0);
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len;
    CHECK_STATUS(dmxp_recv_timeout(&a, buf, sizeof buf, NULL, &len, 30000000), DMXP_E_TIMEOUT);
    CHECK_EQ_U64(records_of(&seg, (uint32_t)child), 1);
    CHECK_OK(dmxp_channel_recover(&b, &rep));
    CHECK(rep.records_freed == 1 && rep.lost == 1);
    CHECK_STATUS(dmxp_try_recv(&b, buf, sizeof buf, NULL, &len), DMXP_E_LOST);
    dmxp_segment_close(&seg);
    CHECK_OK(dmxp_shm_unlink(name, &err));
}

int main(void) {
    snprintf(name, sizeof name, "/dmxp_c_test_%ld", (long)getpid());
    snprintf(shm_path, sizeof shm_path, "/dev/shm%s", name);
    shm_create_and_attach();
    being_created_and_bad_magic();
    file_segments();
    creation_race();
    cross_process_wake();
    mpmc_processes();
    dead_producer();
    dead_consumer();
    live_peer_respected();
    pid_reuse();
    other_channel_untouched();
    TEST_DONE("test_process");
}
