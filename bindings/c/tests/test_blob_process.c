/* The blob pool (PROTOCOL.md §13) across processes (fork, a MAP_SHARED segment): a child that
 * dies holding loans, and one that dies holding received blocks, leave their blocks owned by
 * a dead record; they are reclaimed (rule 1 of §13.6) by dmxp_blob_reclaim, by the sweep of a
 * registration, and by a blocking loan that finds the pool exhausted, the free count returning
 * to its start value each time. A producer killed between handing its block to the ring
 * (QUEUED) and publishing the reference: a blocking blob receive repairs the position (LOST),
 * and rule 3 then frees the block. Then 2 producer processes x 2 consumer processes move
 * blobs of 24 B .. 1 MiB through a small pool (loans wait for releases), each checked against
 * its pattern checksum and its expected length, every message received exactly once, and the
 * pool entirely free at the end. */
static void test_hook(int point, const void *ch, unsigned long long position);
#define DMXP_TEST_HOOK(point, ch, position) test_hook((point), (const void *)(ch), (position))

#include "util.h"
#include "../examples/dmxp_pattern.h"

#define SEG_LEN (32u << 20)
#define KIB 1024u
#define MIB (1024u * 1024u)
#define MS INT64_C(1000000)

/* In a forked child: _exit(0) when a commit is about to publish (its block already QUEUED). */
static _Atomic int die_before_publish;

static void test_hook(int point, const void *ch, unsigned long long position) {
    (void)ch;
    (void)position;
    if (point == DMXP_HOOK_BEFORE_PUBLISH && atomic_load(&die_before_publish)) _exit(0);
}

static void *map_shared(size_t len) {
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    return mem;
}

static void pool_segment(dmxp_segment *seg, const dmxp_blob_class *classes, size_t n) {
    void *mem = map_shared(SEG_LEN);
    dmxp_error err;
    CHECK_OK(dmxp_segment_format_memory_pool(seg, mem, SEG_LEN, (uint32_t)getpid(), 0, classes, n,
                                             &err));
}

static dmxp_channel blob_channel(const dmxp_segment *seg, uint32_t id, uint64_t capacity) {
    dmxp_channel ch;
    dmxp_error err;
    dmxp_channel_opts opts = {.blobs = 1};
    CHECK_OK(dmxp_channel_open_or_create_ex(seg, id, capacity, &opts, 1000, &ch, NULL, &err));
    return ch;
}

static dmxp_blob_stats stats_of(const dmxp_segment *seg) {
    dmxp_blob_stats st;
    CHECK_OK(dmxp_segment_blob_stats(seg, &st));
    return st;
}

/* Reads one byte from the child's pipe: it is ready (has done what it reports). */
static void await_ready(int fd) {
    char c = 0;
    CHECK(read(fd, &c, 1) == 1);
    CHECK(c == 'r');
}

/* Sends blob `index` of `len` bytes with the shared pattern (channel field `who`). */
static void send_pattern(const dmxp_channel *ch, uint32_t who, uint64_t index, size_t len,
                         unsigned char *scratch) {
    dmxp_loan loan;
    dmxp_status s = dmxp_blob_loan_timeout(ch, len, &loan, 30000 * MS);
    if (s != DMXP_OK) {
        fprintf(stderr, "loan of %zu bytes: %s\n", len, dmxp_status_name(s));
        exit(1);
    }
    dmxp_pattern_encode_long(who, index, len, scratch);
    CHECK_OK(dmxp_loan_write(&loan, 0, scratch, len));
    s = dmxp_blob_commit_timeout(&loan, len, NULL, NULL, 30000 * MS);
    if (s != DMXP_OK) {
        fprintf(stderr, "commit of %zu bytes: %s\n", len, dmxp_status_name(s));
        exit(1);
    }
}

/* --- (1) dead owners: rule 1 ------------------------------------------------------------ */

static const dmxp_blob_class small_pool[] = {{4 * KIB, 4}, {64 * KIB, 4}, {1 * MIB, 2}};
#define SMALL_BLOCKS 10u

static void dead_loaner(void) {
    dmxp_segment seg;
    pool_segment(&seg, small_pool, 3);
    dmxp_channel ch = blob_channel(&seg, 0, 8);
    dmxp_error err;
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER, &err));
    CHECK_EQ_U64(stats_of(&seg).free, SMALL_BLOCKS);
    int fd;
    pid_t child = fork_reporting(&fd);
    if (child == 0) {
        dmxp_channel mine;
        child_open_registered(&seg, 0, DMXP_ROLE_PRODUCER, &mine);
        dmxp_loan loans[3];
        const size_t lens[3] = {100, 5000, 1 * MIB};
        for (int i = 0; i < 3; i++) {
            if (dmxp_blob_loan(&mine, lens[i], &loans[i]) != DMXP_OK) _exit(30);
            if (dmxp_loan_write(&loans[i], 0, "partial", 7) != DMXP_OK) _exit(31);
        }
        CHECK(write(fd, "r", 1) == 1);
        _exit(0); /* dies holding three loans, without abandoning or closing */
    }
    await_ready(fd);
    close(fd);
    reap_ok(child);
    dmxp_blob_stats st = stats_of(&seg);
    CHECK_EQ_U64(st.free, SMALL_BLOCKS - 3);
    CHECK_EQ_U64(st.classes[0].loaned + st.classes[1].loaned + st.classes[2].loaned, 3);
    dmxp_blob_reclaim_report rep;
    CHECK_OK(dmxp_blob_reclaim(&ch, &rep));
    CHECK_EQ_U64(rep.records_freed, 1);
    CHECK_EQ_U64(rep.dead_owners, 3);
    CHECK_EQ_U64(rep.leaked + rep.queued, 0);
    CHECK_EQ_U64(stats_of(&seg).free, SMALL_BLOCKS);
    CHECK_EQ_U64(records_of(&seg, (uint32_t)child), 0);
    /* The pool is whole again: every block can be loaned. */
    dmxp_loan all[SMALL_BLOCKS];
    for (unsigned i = 0; i < SMALL_BLOCKS; i++) CHECK_OK(dmxp_blob_loan(&ch, 1, &all[i]));
    for (unsigned i = 0; i < SMALL_BLOCKS; i++) CHECK_OK(dmxp_blob_abandon(&all[i]));
    dmxp_channel_close(&ch);
    munmap(seg.base, SEG_LEN);
}

static void dead_holder(void) {
    dmxp_segment seg;
    pool_segment(&seg, small_pool, 3);
    dmxp_channel ch = blob_channel(&seg, 0, 8);
    dmxp_error err;
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_PRODUCER, &err));
    unsigned char *scratch = malloc(1 * MIB);
    CHECK(scratch != NULL);
    send_pattern(&ch, 0, 0, 3000, scratch);
    send_pattern(&ch, 0, 1, 1 * MIB, scratch);
    int fd;
    pid_t child = fork_reporting(&fd);
    if (child == 0) {
        dmxp_channel mine;
        child_open_registered(&seg, 0, DMXP_ROLE_CONSUMER, &mine);
        dmxp_blob_view views[2];
        for (int i = 0; i < 2; i++) {
            if (dmxp_blob_receive(&mine, &views[i]) != DMXP_OK) _exit(30);
            if (views[i].len != (i ? 1 * MIB : 3000)) _exit(31);
        }
        CHECK(write(fd, "r", 1) == 1);
        _exit(0); /* dies holding two received blocks */
    }
    await_ready(fd);
    close(fd);
    reap_ok(child);
    dmxp_blob_stats st = stats_of(&seg);
    CHECK_EQ_U64(st.free, SMALL_BLOCKS - 2);
    CHECK_EQ_U64(st.classes[0].held + st.classes[2].held, 2);
    CHECK_EQ_U64(dmxp_channel_depth(&ch), 0); /* the ring moved on */
    /* A registration's sweep frees the dead record, and its blocks first. */
    dmxp_channel other;
    CHECK_OK(dmxp_channel_open(&seg, 0, &other, &err));
    CHECK_OK(dmxp_channel_register(&other, DMXP_ROLE_CONSUMER, &err));
    CHECK_EQ_U64(stats_of(&seg).free, SMALL_BLOCKS);
    CHECK_EQ_U64(records_of(&seg, (uint32_t)child), 0);

    /* A dead holder found by a blocking loan on an exhausted pool: both 1 MiB blocks held by
     * a child that dies (not reaped yet: a zombie is dead too). */
    send_pattern(&ch, 0, 2, 1 * MIB, scratch);
    send_pattern(&ch, 0, 3, 1 * MIB - 1, scratch);
    child = fork_reporting(&fd);
    if (child == 0) {
        dmxp_channel mine;
        child_open_registered(&seg, 0, DMXP_ROLE_CONSUMER, &mine);
        dmxp_blob_view views[2];
        for (int i = 0; i < 2; i++)
            if (dmxp_blob_receive(&mine, &views[i]) != DMXP_OK) _exit(30);
        CHECK(write(fd, "r", 1) == 1);
        _exit(0);
    }
    await_ready(fd);
    close(fd);
    for (int i = 0; i < 200 && !dmxp_peer_dead((uint32_t)child, 0); i++) dmxp__sleep_ns(5 * MS);
    CHECK_EQ_U64(stats_of(&seg).classes[2].held, 2);
    dmxp_loan loan;
    CHECK_OK(dmxp_blob_loan_timeout(&ch, 1 * MIB, &loan, 5000 * MS));
    CHECK_EQ_U64(loan.ref.class_index, 2);
    CHECK_OK(dmxp_blob_abandon(&loan));
    reap_ok(child);
    CHECK_EQ_U64(stats_of(&seg).free, SMALL_BLOCKS);
    free(scratch);
    dmxp_channel_close(&other);
    dmxp_channel_close(&ch);
    munmap(seg.base, SEG_LEN);
}

/* --- (2) a producer killed between QUEUED and the publish: repair, then rule 3 ------------- */

static void dead_before_publish(void) {
    dmxp_segment seg;
    pool_segment(&seg, small_pool, 3);
    dmxp_channel ch = blob_channel(&seg, 0, 8);
    dmxp_error err;
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER, &err));
    int fd;
    pid_t child = fork_reporting(&fd);
    if (child == 0) {
        dmxp_channel mine;
        child_open_registered(&seg, 0, DMXP_ROLE_PRODUCER, &mine);
        dmxp_loan loan;
        if (dmxp_blob_loan(&mine, 70000, &loan) != DMXP_OK) _exit(30);
        CHECK(write(fd, "r", 1) == 1);
        atomic_store(&die_before_publish, 1);
        (void)dmxp_blob_commit(&loan, 70000, NULL, NULL); /* dies in it */
        _exit(31);
    }
    await_ready(fd);
    close(fd);
    reap_ok(child);
    /* The position is claimed, the block QUEUED for it, nothing published. */
    CHECK_EQ_U64(dmxp_channel_tail(&ch), 1);
    CHECK_EQ_U64(stats_of(&seg).classes[2].queued, 1);
    /* A message behind it, from us. */
    unsigned char *scratch = malloc(4 * KIB);
    CHECK(scratch != NULL);
    send_pattern(&ch, 0, 7, 4000, scratch);
    dmxp_blob_view v;
    CHECK_STATUS(dmxp_blob_receive_timeout(&ch, &v, 5000 * MS), DMXP_E_LOST);
    CHECK_EQ_U64(v.meta.message_id, 0);
    CHECK_OK(dmxp_blob_receive_timeout(&ch, &v, 1000 * MS));
    CHECK_EQ_U64(v.len, 4000);
    unsigned char got[4000];
    CHECK_OK(dmxp_blob_read(&v, 0, got, 4000));
    uint64_t c, index;
    CHECK_EQ_U64(dmxp_pattern_decode(got, 4000, &c, &index), DMXP_PATTERN_OK);
    CHECK_EQ_U64(index, 7);
    CHECK_OK(dmxp_blob_release(&v));
    /* The block still names position 0, which is freed now: rule 3. */
    CHECK_EQ_U64(stats_of(&seg).classes[2].queued, 1);
    dmxp_blob_reclaim_report rep;
    CHECK_OK(dmxp_blob_reclaim(&ch, &rep));
    CHECK_EQ_U64(rep.queued, 1);
    CHECK_EQ_U64(stats_of(&seg).free, SMALL_BLOCKS);
    free(scratch);
    dmxp_channel_close(&ch);
    munmap(seg.base, SEG_LEN);
}

/* --- (3) 2 producers x 2 consumers, processes ---------------------------------------------- */

#define MPMC_N 300u
#define MPMC_PRODUCERS 2u
#define MPMC_CONSUMERS 2u

typedef struct {
    _Atomic uint32_t seen[MPMC_PRODUCERS][MPMC_N];
    _Atomic uint64_t received;
    _Atomic uint64_t corrupt;
    _Atomic uint64_t wrong_len;
} mpmc_shared;

static size_t mpmc_len(uint32_t who, uint64_t index) {
    static const size_t lens[7] = {24, 960, 961, 4096, 65537, 300000, 1 * MIB};
    return lens[(index * 3 + who) % 7];
}

static void mpmc_producer(const dmxp_segment *seg, uint32_t who) {
    dmxp_channel ch;
    child_open_registered(seg, 0, DMXP_ROLE_PRODUCER, &ch);
    unsigned char *scratch = malloc(1 * MIB);
    if (scratch == NULL) _exit(40);
    for (uint64_t i = 0; i < MPMC_N; i++) send_pattern(&ch, who, i, mpmc_len(who, i), scratch);
    free(scratch);
    dmxp_channel_close(&ch);
    _exit(0);
}

static void mpmc_consumer(const dmxp_segment *seg, mpmc_shared *sh) {
    dmxp_channel ch;
    child_open_registered(seg, 0, DMXP_ROLE_CONSUMER, &ch);
    unsigned char *buf = malloc(1 * MIB);
    if (buf == NULL) _exit(40);
    const uint64_t total = (uint64_t)MPMC_PRODUCERS * MPMC_N;
    int64_t idle_since = (int64_t)dmxp_now_ns();
    while (atomic_load(&sh->received) < total) {
        dmxp_blob_view v;
        dmxp_status s = dmxp_blob_receive_timeout(&ch, &v, 100 * MS);
        if (s == DMXP_E_TIMEOUT) {
            if ((int64_t)dmxp_now_ns() - idle_since > 20000 * MS) _exit(41); /* stuck */
            continue;
        }
        if (s != DMXP_OK) _exit(42);
        idle_since = (int64_t)dmxp_now_ns();
        if (v.len > 1 * MIB || dmxp_blob_read(&v, 0, buf, v.len) != DMXP_OK) _exit(43);
        dmxp_status r = dmxp_blob_release(&v);
        uint64_t who, index;
        if (r != DMXP_OK || dmxp_pattern_decode(buf, v.len, &who, &index) != DMXP_PATTERN_OK ||
            who >= MPMC_PRODUCERS || index >= MPMC_N) {
            atomic_fetch_add(&sh->corrupt, 1);
        } else {
            if (v.len != mpmc_len((uint32_t)who, index)) atomic_fetch_add(&sh->wrong_len, 1);
            atomic_fetch_add(&sh->seen[who][index], 1);
        }
        atomic_fetch_add(&sh->received, 1);
    }
    free(buf);
    dmxp_channel_close(&ch);
    _exit(0);
}

static void mpmc(void) {
    /* Fewer blocks than the ring has slots: producers wait for releases as often as for room. */
    static const dmxp_blob_class pool[] = {{1 * KIB, 4}, {4 * KIB, 4}, {320 * KIB, 3}, {1 * MIB, 3}};
    dmxp_segment seg;
    pool_segment(&seg, pool, 4);
    dmxp_channel ch = blob_channel(&seg, 0, 16);
    dmxp_blob_stats before = stats_of(&seg);
    mpmc_shared *sh = map_shared(sizeof *sh);
    memset(sh, 0, sizeof *sh);
    pid_t kids[MPMC_PRODUCERS + MPMC_CONSUMERS];
    int k = 0;
    for (uint32_t c = 0; c < MPMC_CONSUMERS; c++) {
        kids[k] = fork();
        CHECK(kids[k] >= 0);
        if (kids[k] == 0) mpmc_consumer(&seg, sh);
        k++;
    }
    for (uint32_t p = 0; p < MPMC_PRODUCERS; p++) {
        kids[k] = fork();
        CHECK(kids[k] >= 0);
        if (kids[k] == 0) mpmc_producer(&seg, p);
        k++;
    }
    int64_t t0 = (int64_t)dmxp_now_ns();
    for (int i = 0; i < k; i++) reap_ok(kids[i]);
    double seconds = (double)((int64_t)dmxp_now_ns() - t0) / 1e9;
    CHECK_EQ_U64(atomic_load(&sh->received), (uint64_t)MPMC_PRODUCERS * MPMC_N);
    CHECK_EQ_U64(atomic_load(&sh->corrupt), 0);
    CHECK_EQ_U64(atomic_load(&sh->wrong_len), 0);
    for (uint32_t p = 0; p < MPMC_PRODUCERS; p++)
        for (uint32_t i = 0; i < MPMC_N; i++)
            if (atomic_load(&sh->seen[p][i]) != 1) {
                fprintf(stderr, "producer %u message %u received %u times\n", p, i,
                        (unsigned)atomic_load(&sh->seen[p][i]));
                exit(1);
            }
    dmxp_blob_stats after = stats_of(&seg);
    CHECK_EQ_U64(after.free, before.free);
    CHECK_EQ_U64(dmxp_channel_depth(&ch), 0);
    dmxp_blob_pool_header *ph = dmxp__pool_header(seg.base, &seg.pool);
    CHECK_EQ_U64(atomic_load(&ph->free_waiters), 0);
    printf("mpmc: %u x %u processes, %u blobs of 24 B .. 1 MiB exactly once in %.2fs "
           "(free_seq %u)\n",
           MPMC_PRODUCERS, MPMC_CONSUMERS, MPMC_PRODUCERS * MPMC_N, seconds,
           (unsigned)atomic_load(&ph->free_seq));
    munmap(sh, sizeof *sh);
    munmap(seg.base, SEG_LEN);
}

int main(void) {
    dead_loaner();
    dead_holder();
    dead_before_publish();
    mpmc();
    TEST_DONE("test_blob_process");
}
