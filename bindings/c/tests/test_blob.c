/* The blob pool (PROTOCOL.md §13), in one process: the layout of the pool descriptor, class
 * descriptors and block headers (offsets, the tag and reference encodings as they lie in the
 * segment); a segment formatted with a pool (where the creator puts it, band_cursor after it,
 * the descriptor as written) and attached again, by memory and by name (shm create, open,
 * open_or_create); the refusals of bad class lists and of a pool that does not fit; the attach
 * checks #1..#5 of §13.2 on corrupted descriptors (each typed error with its values) and the
 * geometry cached at attach; entry check #10 with BLOBS (BLOBS_WITHOUT_POOL, unknown bits, a
 * channel created with .blobs, DMXP_E_NO_BLOB_POOL) and bands or a peer table overlapping the
 * pool; loan / write / commit / receive in place / read / release round trips of 1 B, 24 B,
 * 4 KiB, 64 KiB + 1, 1 MiB and 4 MiB with content checks, the word accessors at every
 * alignment; the copying receives (single, blocking, batch) taking blobs and refusing a short
 * buffer without consuming; inline messages on a BLOBS channel (DMXP_E_NOT_A_BLOB, nothing
 * consumed); exhaustion (DMXP_E_POOL_EXHAUSTED, DMXP_E_TOO_LARGE, a release making a block
 * available again, a blocking loan woken by a release, and its timeout); stale, forged and
 * out-of-range references (counted as bad, skipped, the ring flowing on, their blocks left
 * alone and then reclaimed by rule 3); a BLOB flag on a channel without blobs; revocation of a
 * commit (SKIP marker) and of a release; rule 2 (a record freed under its blocks) and
 * dmxp_channel_close giving a handle's blocks back. */
#include "check.h"
#include "../examples/dmxp_pattern.h"

#include <pthread.h>
#include <sys/mman.h>

#define SEG_LEN (24u << 20)
#define KIB 1024u
#define MIB (1024u * 1024u)
#define MS INT64_C(1000000)

/* 8 x 64 B, 4 x 4 KiB, 4 x 64 KiB, 2 x 1 MiB, 2 x 4 MiB: 20 blocks. */
static const dmxp_blob_class classes[] = {
    {64, 8}, {4 * KIB, 4}, {64 * KIB, 4}, {1 * MIB, 2}, {4 * MIB, 2}};
#define NCLASSES (sizeof classes / sizeof classes[0])
#define NBLOCKS 20u

static void *map_shared(size_t len) {
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    return mem;
}

static void new_pool_segment(dmxp_segment *seg, void **mem) {
    *mem = map_shared(SEG_LEN);
    dmxp_error err;
    CHECK_OK(dmxp_segment_format_memory_pool(seg, *mem, SEG_LEN, (uint32_t)getpid(), 0, classes,
                                             NCLASSES, &err));
}

static dmxp_channel blob_channel(const dmxp_segment *seg, uint32_t id, uint64_t capacity,
                                 unsigned roles) {
    dmxp_channel ch;
    dmxp_error err;
    dmxp_channel_opts opts = {.blobs = 1};
    CHECK_OK(dmxp_channel_create_ex(seg, id, capacity, &opts, &ch, &err));
    if (roles) CHECK_OK(dmxp_channel_register(&ch, roles, &err));
    return ch;
}

static uint64_t free_blocks(const dmxp_segment *seg) {
    dmxp_blob_stats st;
    CHECK_OK(dmxp_segment_blob_stats(seg, &st));
    return st.free;
}

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

/* Loans len bytes, writes the payload of `seed` in pieces (unaligned), commits. */
static uint64_t send_blob(const dmxp_channel *ch, size_t len, uint64_t seed) {
    dmxp_loan loan;
    CHECK_OK(dmxp_blob_loan(ch, len, &loan));
    CHECK(loan.live && loan.len == len && loan.block_size >= len && loan.data != NULL);
    CHECK_EQ_U64((uintptr_t)loan.data % 64, 0);
    unsigned char *p = make_payload(len, seed);
    size_t at = 0, piece = 1;
    while (at < len) { /* 1, 4, 16, ... bytes, then the rest: every alignment early on */
        size_t n = len - at < piece ? len - at : piece;
        CHECK_OK(dmxp_loan_write(&loan, at, p + at, n));
        at += n;
        piece = piece * 4 + 3;
    }
    free(p);
    uint64_t id = UINT64_MAX;
    dmxp_send_opts opts = {.message_type = 7, .flags = 0x0100};
    CHECK_OK(dmxp_blob_commit(&loan, len, &opts, &id));
    CHECK(!loan.live && loan.data == NULL);
    return id;
}

static void recv_blob(const dmxp_channel *ch, size_t len, uint64_t seed, uint64_t id) {
    dmxp_blob_view view;
    CHECK_OK(dmxp_blob_receive(ch, &view));
    CHECK(view.live && view.data != NULL);
    CHECK_EQ_U64(view.len, len);
    CHECK_EQ_U64(view.meta.payload_len, len);
    CHECK_EQ_U64(view.meta.message_id, id);
    CHECK_EQ_U64(view.meta.message_type, 7);
    CHECK_EQ_U64(view.meta.flags, 0x0100 | DMXP_FLAG_BLOB);
    CHECK_EQ_U64(view.meta.sender_pid, (uint32_t)getpid());
    CHECK_EQ_U64(view.meta.sender_runtime, DMXP_RUNTIME_C);
    unsigned char *got = malloc(len ? len : 1);
    CHECK(got != NULL);
    /* In pieces from the end, unaligned. */
    size_t end = len, piece = 3;
    while (end > 0) {
        size_t n = end < piece ? end : piece;
        CHECK_OK(dmxp_blob_read(&view, end - n, got + end - n, n));
        end -= n;
        piece = piece * 5 + 1;
    }
    check_payload(got, len, seed);
    if (len) {
        /* The last word past len is zero (the commit pads it). */
        uint64_t w;
        CHECK_OK(dmxp_blob_load_word(&view, (len - 1) / 8, &w));
        if (len % 8) CHECK_EQ_U64(w >> (8 * (len % 8)), 0);
        CHECK_STATUS(dmxp_blob_load_word(&view, (len + 7) / 8, &w), DMXP_E_INVALID_ARGUMENT);
    }
    CHECK_STATUS(dmxp_blob_read(&view, len, got, 1), DMXP_E_INVALID_ARGUMENT);
    CHECK_STATUS(dmxp_blob_read(&view, SIZE_MAX, got, 2), DMXP_E_INVALID_ARGUMENT);
    free(got);
    CHECK_OK(dmxp_blob_release(&view));
    CHECK(!view.live);
    CHECK_STATUS(dmxp_blob_release(&view), DMXP_E_INVALID_ARGUMENT);
}

/* --- (1) layout ------------------------------------------------------------------------- */

static void layout(void) {
    CHECK_EQ_U64(offsetof(dmxp_header, zero[0]), 64); /* blob_pool_offset */
    CHECK_EQ_U64(sizeof(dmxp_blob_pool_header), 64);
    CHECK_EQ_U64(offsetof(dmxp_blob_pool_header, pool_magic), 0);
    CHECK_EQ_U64(offsetof(dmxp_blob_pool_header, class_count), 8);
    CHECK_EQ_U64(offsetof(dmxp_blob_pool_header, pool_len), 16);
    CHECK_EQ_U64(offsetof(dmxp_blob_pool_header, free_seq), 24);
    CHECK_EQ_U64(offsetof(dmxp_blob_pool_header, free_waiters), 28);
    CHECK_EQ_U64(sizeof(dmxp_blob_class_desc), 64);
    CHECK_EQ_U64(offsetof(dmxp_blob_class_desc, block_size), 0);
    CHECK_EQ_U64(offsetof(dmxp_blob_class_desc, block_count), 8);
    CHECK_EQ_U64(offsetof(dmxp_blob_class_desc, headers_offset), 16);
    CHECK_EQ_U64(offsetof(dmxp_blob_class_desc, data_offset), 24);
    CHECK_EQ_U64(offsetof(dmxp_blob_class_desc, next_hint), 32);
    CHECK_EQ_U64(sizeof(dmxp_block_header), 64);
    CHECK_EQ_U64(offsetof(dmxp_block_header, tag), 0);
    CHECK_EQ_U64(offsetof(dmxp_block_header, channel_id), 8);
    CHECK_EQ_U64(offsetof(dmxp_block_header, length), 12);
    CHECK_EQ_U64(offsetof(dmxp_block_header, position), 16);
    CHECK_EQ_U64(offsetof(dmxp_block_header, owner_pid), 24);
    CHECK_EQ_U64(DMXP_BLOB_POOL_MAGIC, 0x424F4C4250584D44);
    CHECK(memcmp("DMXPBLOB", &(uint64_t){DMXP_BLOB_POOL_MAGIC}, 8) == 0);
    CHECK_EQ_U64(DMXP_CHANNEL_BLOBS, 0x2);
    CHECK_EQ_U64(DMXP_FLAG_BLOB, 0x0010);
    CHECK_EQ_U64(dmxp__tag(DMXP_BLOCK_HELD, 5, 9), 3 | 5 << 8 | UINT64_C(9) << 32);
    CHECK_EQ_U64(dmxp__tag_owner(dmxp__tag(1, 0xFFFFFF, 7)), 0xFFFFFF);
    CHECK_EQ_U64(dmxp__tag_generation(dmxp__tag(1, 3, 0xFFFFFFFFu)), 0xFFFFFFFFu);
    dmxp_blob_ref r = dmxp__ref_decode(2 | UINT64_C(7) << 32, 3 | UINT64_C(4096) << 32);
    CHECK(r.class_index == 2 && r.block == 7 && r.generation == 3 && r.length == 4096);
}

/* --- (2) creation and attach ------------------------------------------------------------ */

static void creation(void) {
    dmxp_segment seg, again;
    void *mem;
    dmxp_error err;
    new_pool_segment(&seg, &mem);
    unsigned char *base = mem;
    dmxp_header *h = (dmxp_header *)mem;
    /* Where the creator put it: the band cursor (HEADER_SIZE) rounded up to 4096. */
    uint64_t P = atomic_load(&h->zero[0]);
    CHECK_EQ_U64(P, 102400);
    const dmxp_blob_pool_geometry *g = dmxp_segment_blob_pool(&seg);
    CHECK(g != NULL);
    CHECK_EQ_U64(g->offset, P);
    CHECK_EQ_U64(g->class_count, NCLASSES);
    CHECK_EQ_U64(g->len % 4096, 0);
    CHECK_EQ_U64(atomic_load(&h->band_cursor), P + g->len);
    dmxp_blob_pool_header *ph = (dmxp_blob_pool_header *)(void *)(base + P);
    CHECK_EQ_U64(atomic_load(&ph->pool_magic), DMXP_BLOB_POOL_MAGIC);
    CHECK_EQ_U64(atomic_load(&ph->class_count), NCLASSES);
    CHECK_EQ_U64(atomic_load(&ph->pool_len), g->len);
    CHECK_EQ_U64(atomic_load(&ph->free_seq), 0);
    CHECK_EQ_U64(atomic_load(&ph->free_waiters), 0);
    dmxp_blob_class_desc *d = (dmxp_blob_class_desc *)(void *)(base + P + 64);
    uint64_t headers = P + DMXP_BLOB_DESCRIPTOR_AREA, data_end = 0;
    for (size_t i = 0; i < DMXP_MAX_BLOB_CLASSES; i++) {
        if (i >= NCLASSES) { /* the unused descriptors are zero */
            CHECK_EQ_U64(atomic_load(&d[i].block_size), 0);
            CHECK_EQ_U64(atomic_load(&d[i].headers_offset), 0);
            continue;
        }
        CHECK_EQ_U64(atomic_load(&d[i].block_size), classes[i].block_size);
        CHECK_EQ_U64(atomic_load(&d[i].block_count), classes[i].block_count);
        CHECK_EQ_U64(atomic_load(&d[i].headers_offset), headers);
        CHECK_EQ_U64(g->classes[i].headers_offset, headers);
        headers += 64u * classes[i].block_count;
        uint64_t data = atomic_load(&d[i].data_offset);
        CHECK_EQ_U64(data % 4096, 0);
        CHECK(data >= headers && data >= data_end);
        data_end = data + classes[i].block_size * classes[i].block_count;
        CHECK_EQ_U64(g->classes[i].data_offset, data);
        dmxp_block_header *b = (dmxp_block_header *)(void *)(base + headers - 64u * classes[i].block_count);
        for (uint32_t j = 0; j < classes[i].block_count; j++) CHECK_EQ_U64(atomic_load(&b[j].tag), 0);
    }
    CHECK_EQ_U64(P + g->len, (data_end + 4095) / 4096 * 4096);
    CHECK_EQ_U64(free_blocks(&seg), NBLOCKS);
    /* Attached again: the same geometry. */
    CHECK_OK(dmxp_segment_attach_memory(&again, mem, SEG_LEN, &err));
    CHECK(memcmp(dmxp_segment_blob_pool(&again), g, sizeof *g) == 0);
    CHECK_OK(dmxp_segment_validate_all(&again, &err));
    /* A channel with BLOBS and one without; runs and blobs together. */
    dmxp_channel ch = blob_channel(&seg, 0, 8, 0), plain, both;
    CHECK_EQ_U64(dmxp_channel_flags(&ch), DMXP_CHANNEL_BLOBS);
    CHECK_EQ_U64(atomic_load(&ch.entry->flags), DMXP_CHANNEL_BLOBS);
    CHECK_EQ_U64(dmxp_channel_blob_max(&ch), 4 * MIB);
    CHECK(dmxp_channel_blob_pool(&ch) != NULL);
    CHECK(ch.band_offset >= P + g->len); /* bands come after the pool */
    CHECK_OK(dmxp_channel_create(&seg, 1, 4, &plain, &err));
    CHECK_EQ_U64(dmxp_channel_blob_max(&plain), 0);
    CHECK(dmxp_channel_blob_pool(&plain) == NULL);
    dmxp_channel_opts opts = {.max_message_size = 4000, .blobs = 1};
    CHECK_OK(dmxp_channel_create_ex(&seg, 2, 8, &opts, &both, &err));
    CHECK_EQ_U64(dmxp_channel_flags(&both), DMXP_CHANNEL_BLOBS | DMXP_CHANNEL_RUNS);
    dmxp_channel reopened;
    CHECK_OK(dmxp_channel_open(&again, 2, &reopened, &err));
    CHECK_EQ_U64(dmxp_channel_flags(&reopened), DMXP_CHANNEL_BLOBS | DMXP_CHANNEL_RUNS);
    /* Loans need a BLOBS channel and a registered producer. */
    dmxp_loan loan;
    CHECK_STATUS(dmxp_blob_loan(&plain, 10, &loan), DMXP_E_NOT_A_BLOB_CHANNEL);
    CHECK_STATUS(dmxp_blob_loan(&ch, 10, &loan), DMXP_E_NOT_REGISTERED);
    dmxp_blob_view view;
    CHECK_STATUS(dmxp_blob_receive(&ch, &view), DMXP_E_NOT_REGISTERED);
    CHECK_STATUS(dmxp_blob_receive(&plain, &view), DMXP_E_NOT_A_BLOB_CHANNEL);
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER, &err));
    CHECK_STATUS(dmxp_blob_receive(&ch, &view), DMXP_E_EMPTY);
    /* The peer table is carved after the pool, and checked against it. */
    uint64_t table = atomic_load(&h->peer_table_offset);
    CHECK(table >= P + g->len);
    dmxp_channel_close(&ch);

    /* A segment without a pool: no BLOBS channel, and a BLOBS entry is corrupt there. */
    void *m2 = map_shared(1u << 20);
    dmxp_segment plain_seg;
    CHECK_OK(dmxp_segment_format_memory(&plain_seg, m2, 1u << 20, 1, &err));
    CHECK(dmxp_segment_blob_pool(&plain_seg) == NULL);
    dmxp_blob_stats st;
    CHECK_OK(dmxp_segment_blob_stats(&plain_seg, &st));
    CHECK_EQ_U64(st.class_count, 0);
    dmxp_channel_opts bo = {.blobs = 1};
    CHECK_STATUS(dmxp_channel_create_ex(&plain_seg, 3, 4, &bo, &plain, &err), DMXP_E_NO_BLOB_POOL);
    CHECK_EQ_U64(err.channel, 3);
    char text[256];
    CHECK(dmxp_error_format(&err, text, sizeof text) > 0 && strstr(text, "no blob pool") != NULL);
    CHECK_EQ_U64(atomic_load(&dmxp__entry(&plain_seg, 3)->state), DMXP_STATE_EMPTY); /* nothing written */
    CHECK_OK(dmxp_channel_create(&plain_seg, 3, 4, &plain, &err));
    /* .blobs on an existing channel is ignored: it opens as it is. */
    CHECK_OK(dmxp_channel_open_or_create_ex(&plain_seg, 3, 4, &bo, 0, &plain, NULL, &err));
    CHECK_EQ_U64(dmxp_channel_flags(&plain), 0);
    atomic_store(&plain.entry->flags, DMXP_CHANNEL_BLOBS);
    CHECK_STATUS(dmxp_channel_open(&plain_seg, 3, &plain, &err), DMXP_E_BLOBS_WITHOUT_POOL);
    CHECK_EQ_U64(err.channel, 3);
    CHECK_EQ_U64(err.found, DMXP_CHANNEL_BLOBS);
    CHECK(strcmp(err.field, "flags") == 0);
    CHECK_STATUS(dmxp_segment_validate_all(&plain_seg, &err), DMXP_E_BLOBS_WITHOUT_POOL);
    /* Check #10 is now RUNS | BLOBS: 0x4 is still unknown. */
    atomic_store(&plain.entry->flags, 0x4u);
    CHECK_STATUS(dmxp_channel_open(&plain_seg, 3, &plain, &err), DMXP_E_UNKNOWN_CHANNEL_FLAGS);
    CHECK_EQ_U64(err.found, 0x4);
    atomic_store(&plain.entry->flags, 0);
    CHECK_OK(dmxp_channel_open(&plain_seg, 3, &plain, &err));
    /* With a pool, BLOBS | RUNS and BLOBS pass and 0x4 does not. */
    atomic_store(&dmxp__entry(&seg, 1)->flags, DMXP_CHANNEL_BLOBS | 0x4u);
    CHECK_STATUS(dmxp_channel_open(&seg, 1, &plain, &err), DMXP_E_UNKNOWN_CHANNEL_FLAGS);
    atomic_store(&dmxp__entry(&seg, 1)->flags, DMXP_CHANNEL_BLOBS);
    CHECK_OK(dmxp_channel_open(&seg, 1, &plain, &err));
    CHECK_EQ_U64(dmxp_channel_flags(&plain), DMXP_CHANNEL_BLOBS);
    atomic_store(&dmxp__entry(&seg, 1)->flags, 0);
    munmap(m2, 1u << 20);

    /* Bad class lists and a pool that does not fit: refused before anything is written. */
    void *m3 = map_shared(1u << 20);
    dmxp_segment s3;
    const dmxp_blob_class bad_lists[][2] = {
        {{63, 1}, {0, 0}},          {{64, 0}, {0, 0}},           {{64, 1}, {64, 1}},
        {{128, 1}, {64, 1}},        {{100, 1}, {0, 0}},          {{64, (1u << 24) + 1}, {0, 0}},
        {{(UINT64_C(1) << 31) + 64, 1}, {0, 0}},
    };
    const size_t bad_counts[] = {1, 1, 2, 2, 1, 1, 1};
    for (size_t i = 0; i < sizeof bad_counts / sizeof bad_counts[0]; i++) {
        memset(&err, 0, sizeof err);
        CHECK_STATUS(dmxp_segment_format_memory_pool(&s3, m3, 1u << 20, 1, 0, bad_lists[i],
                                                     bad_counts[i], &err),
                     DMXP_E_INVALID_ARGUMENT);
        CHECK(strcmp(err.field, "blob_classes") == 0);
        CHECK(err.detail[0] != 0);
        CHECK_EQ_U64(atomic_load(&((dmxp_header *)m3)->magic), 0);
    }
    dmxp_blob_class nine[9];
    for (int i = 0; i < 9; i++) nine[i] = (dmxp_blob_class){64u << i, 1};
    CHECK_STATUS(dmxp_segment_format_memory_pool(&s3, m3, 1u << 20, 1, 0, nine, 9, &err),
                 DMXP_E_INVALID_ARGUMENT);
    CHECK_OK(dmxp_segment_format_memory_pool(&s3, m3, 1u << 20, 1, 0, nine, 8, &err));
    CHECK_EQ_U64(dmxp_segment_blob_pool(&s3)->class_count, 8);
    memset(m3, 0, 1u << 20);
    const dmxp_blob_class huge[] = {{1 * MIB, 1}};
    CHECK_STATUS(dmxp_segment_format_memory_pool(&s3, m3, 1u << 20, 1, 0, huge, 1, &err),
                 DMXP_E_OUT_OF_SPACE);
    CHECK(err.found > (1u << 20) - 102400u);
    CHECK_EQ_U64(err.value2, (1u << 20) - 102400u);
    CHECK_EQ_U64(atomic_load(&((dmxp_header *)m3)->magic), 0);
    /* Zero classes: no pool. */
    CHECK_OK(dmxp_segment_format_memory_pool(&s3, m3, 1u << 20, 1, 0, NULL, 0, &err));
    CHECK(dmxp_segment_blob_pool(&s3) == NULL);
    CHECK_EQ_U64(atomic_load(&((dmxp_header *)m3)->zero[0]), 0);
    munmap(m3, 1u << 20);

    /* By name: create, open_or_create (both ways), open. */
    char name[64];
    snprintf(name, sizeof name, "/dmxp_test_blob_%ld", (long)getpid());
    shm_unlink(name);
    dmxp_segment a, b, c;
    int created = -1;
    CHECK_STATUS(dmxp_segment_open_or_create_shm_pool(&a, name, 1u << 20, 1000, NULL, huge, 1,
                                                      &created, &err),
                 DMXP_E_OUT_OF_SPACE);
    CHECK_EQ_U64(created, 0);
    CHECK_STATUS(dmxp_segment_open_shm(&a, name, 0, &err), DMXP_E_NO_SEGMENT); /* not made */
    CHECK_OK(dmxp_segment_open_or_create_shm_pool(&a, name, 4u << 20, 1000, NULL, classes, 3,
                                                  &created, &err));
    CHECK_EQ_U64(created, 1);
    CHECK_EQ_U64(dmxp_segment_blob_pool(&a)->class_count, 3);
    CHECK_OK(dmxp_segment_open_or_create_shm_pool(&b, name, 4u << 20, 1000, NULL, classes, 1,
                                                  &created, &err));
    CHECK_EQ_U64(created, 0);
    CHECK(memcmp(dmxp_segment_blob_pool(&a), dmxp_segment_blob_pool(&b),
                 sizeof(dmxp_blob_pool_geometry)) == 0); /* its creator's pool */
    CHECK_OK(dmxp_segment_open_shm(&c, name, 1000, &err));
    CHECK_EQ_U64(dmxp_segment_blob_pool(&c)->classes[2].block_size, 64 * KIB);
    CHECK_STATUS(dmxp_segment_create_shm_pool(&c, name, 4u << 20, NULL, classes, 1, &err),
                 DMXP_E_SEGMENT_EXISTS);
    dmxp_segment_close(&a);
    dmxp_segment_close(&b);
    dmxp_segment_close(&c);
    CHECK_OK(dmxp_shm_unlink(name, &err));
    CHECK_OK(dmxp_segment_create_shm_pool(&a, name, 4u << 20, NULL, classes, 2, &err));
    CHECK_EQ_U64(dmxp_segment_blob_pool(&a)->class_count, 2);
    dmxp_segment_close(&a);
    CHECK_OK(dmxp_shm_unlink(name, &err));
    /* A file segment. */
    char path[96];
    snprintf(path, sizeof path, "/tmp/dmxp_test_blob_%ld", (long)getpid());
    unlink(path);
    CHECK_OK(dmxp_segment_create_path_pool(&a, path, 4u << 20, NULL, classes, 2, &err));
    CHECK_OK(dmxp_segment_open_or_create_path_pool(&b, path, 4u << 20, 1000, NULL, classes, 1,
                                                   &created, &err));
    CHECK_EQ_U64(created, 0);
    CHECK_EQ_U64(dmxp_segment_blob_pool(&b)->class_count, 2);
    dmxp_segment_close(&a);
    dmxp_segment_close(&b);
    unlink(path);
    munmap(mem, SEG_LEN);
}

/* --- (3) attach checks on corrupted descriptors (§13.2) ---------------------------------- */

static unsigned char *pristine;

/* A fresh copy of the pristine segment at `m`; attaching it must fail with `want`. */
static void expect_attach(unsigned char *m, dmxp_status want, uint64_t found,
                          const char *field) {
    dmxp_segment s;
    dmxp_error err;
    memset(&err, 0, sizeof err);
    CHECK_STATUS(dmxp_segment_attach_memory(&s, m, SEG_LEN, &err), want);
    CHECK_EQ_U64(err.found, found);
    if (field) CHECK(err.field && strcmp(err.field, field) == 0);
    char text[256];
    CHECK(dmxp_error_format(&err, text, sizeof text) > 0);
    CHECK(strstr(text, "blob pool") != NULL || strstr(text, "blob_pool_offset") != NULL);
    memcpy(m, pristine, SEG_LEN);
}

static void validation(void) {
    dmxp_segment seg;
    void *mem;
    dmxp_error err;
    new_pool_segment(&seg, &mem);
    unsigned char *m = mem;
    pristine = malloc(SEG_LEN);
    CHECK(pristine != NULL);
    memcpy(pristine, m, SEG_LEN);
    dmxp_header *h = (dmxp_header *)mem;
    uint64_t P = atomic_load(&h->zero[0]);
    dmxp_blob_pool_header *ph = (dmxp_blob_pool_header *)(void *)(m + P);
    dmxp_blob_class_desc *d = (dmxp_blob_class_desc *)(void *)(m + P + 64);
    uint64_t plen = atomic_load(&ph->pool_len);

    /* #1 */
    atomic_store(&h->zero[0], P + 8);
    expect_attach(m, DMXP_E_BLOB_POOL_OUT_OF_RANGE, P + 8, "blob_pool_offset");
    atomic_store(&h->zero[0], 64);
    expect_attach(m, DMXP_E_BLOB_POOL_OUT_OF_RANGE, 64, NULL);
    atomic_store(&h->zero[0], SEG_LEN - 512);
    expect_attach(m, DMXP_E_BLOB_POOL_OUT_OF_RANGE, SEG_LEN - 512, NULL);
    atomic_store(&h->zero[0], UINT64_MAX - 63);
    expect_attach(m, DMXP_E_BLOB_POOL_OUT_OF_RANGE, UINT64_MAX - 63, NULL);
    /* #2 */
    atomic_store(&ph->pool_magic, 0x1234);
    expect_attach(m, DMXP_E_BLOB_POOL_BAD_MAGIC, 0x1234, "pool_magic");
    atomic_store(&h->zero[0], P + 4096); /* a valid offset where no pool is */
    expect_attach(m, DMXP_E_BLOB_POOL_BAD_MAGIC, 0, NULL);
    /* #3 */
    atomic_store(&ph->class_count, 0);
    expect_attach(m, DMXP_E_BLOB_POOL_BAD_GEOMETRY, 0, "class_count");
    atomic_store(&ph->class_count, 9);
    expect_attach(m, DMXP_E_BLOB_POOL_BAD_GEOMETRY, 9, NULL);
    atomic_store(&ph->pool_len, 64 + 64 * NCLASSES - 1);
    expect_attach(m, DMXP_E_BLOB_POOL_BAD_GEOMETRY, NCLASSES, NULL);
    atomic_store(&ph->pool_len, SEG_LEN - P + 1);
    expect_attach(m, DMXP_E_BLOB_POOL_BAD_GEOMETRY, NCLASSES, NULL);
    atomic_store(&ph->pool_len, UINT64_MAX);
    expect_attach(m, DMXP_E_BLOB_POOL_BAD_GEOMETRY, NCLASSES, NULL);
    /* #4 */
    atomic_store(&d[1].block_size, 4 * KIB + 8);
    expect_attach(m, DMXP_E_BLOB_CLASS_BAD, 1, "block_size");
    atomic_store(&d[0].block_size, 0);
    expect_attach(m, DMXP_E_BLOB_CLASS_BAD, 0, "block_size");
    atomic_store(&d[2].block_size, 4 * KIB); /* not larger than class 1 */
    expect_attach(m, DMXP_E_BLOB_CLASS_BAD, 2, "block_size");
    atomic_store(&d[4].block_size, (UINT64_C(1) << 31) + 64);
    expect_attach(m, DMXP_E_BLOB_CLASS_BAD, 4, "block_size");
    atomic_store(&d[3].block_count, 0);
    expect_attach(m, DMXP_E_BLOB_CLASS_BAD, 3, "block_count");
    atomic_store(&d[0].block_count, (1u << 24) + 1);
    expect_attach(m, DMXP_E_BLOB_CLASS_BAD, 0, "block_count");
    /* #5 */
    atomic_store(&d[0].headers_offset, atomic_load(&d[0].headers_offset) + 8);
    expect_attach(m, DMXP_E_BLOB_CLASS_BAD, 0, "headers_offset");
    atomic_store(&d[1].headers_offset, P + 64 + 64 * 4); /* inside the descriptors in use */
    expect_attach(m, DMXP_E_BLOB_CLASS_BAD, 1, "headers_offset");
    atomic_store(&d[1].headers_offset, P + plen - 64); /* runs past the pool */
    expect_attach(m, DMXP_E_BLOB_CLASS_BAD, 1, "headers_offset");
    atomic_store(&d[4].data_offset, P + plen - 4 * MIB); /* 2 blocks do not fit */
    expect_attach(m, DMXP_E_BLOB_CLASS_BAD, 4, "data_offset");
    atomic_store(&d[2].data_offset, UINT64_MAX - 63);
    expect_attach(m, DMXP_E_BLOB_CLASS_BAD, 2, "data_offset");
    /* Overlaps: two classes' data, a class's data over another's headers. */
    atomic_store(&d[1].data_offset, atomic_load(&d[0].data_offset));
    expect_attach(m, DMXP_E_BLOB_CLASS_BAD, 0, "overlap");
    atomic_store(&d[4].headers_offset, atomic_load(&d[3].headers_offset) + 64);
    expect_attach(m, DMXP_E_BLOB_CLASS_BAD, 3, "overlap");
    atomic_store(&d[2].headers_offset, atomic_load(&d[1].headers_offset) + 64);
    expect_attach(m, DMXP_E_BLOB_CLASS_BAD, 1, "overlap");
    {
        dmxp_segment s;
        CHECK_OK(dmxp_segment_attach_memory(&s, m, SEG_LEN, &err)); /* the copy is pristine */
    }

    /* A band inside the pool is refused at open (and so is the peer table), and a creation
     * whose band_cursor was scribbled into the pool writes nothing there. */
    dmxp_channel ch = blob_channel(&seg, 0, 4, 0);
    uint64_t band = atomic_load(&ch.entry->band_offset);
    atomic_store(&ch.entry->band_offset, P + 4096);
    CHECK_STATUS(dmxp_channel_open(&seg, 0, &ch, &err), DMXP_E_BLOB_POOL_OVERLAP);
    CHECK_EQ_U64(err.channel, 0);
    CHECK_EQ_U64(err.found, P + 4096);
    CHECK_EQ_U64(err.value2, P);
    atomic_store(&ch.entry->band_offset, band);
    CHECK_OK(dmxp_channel_open(&seg, 0, &ch, &err));
    uint64_t cursor = atomic_load(&h->band_cursor);
    atomic_store(&h->band_cursor, P + 64 * KIB);
    dmxp_channel other;
    CHECK_STATUS(dmxp_channel_create(&seg, 5, 4, &other, &err), DMXP_E_BLOB_POOL_OVERLAP);
    CHECK_EQ_U64(atomic_load(&dmxp__entry(&seg, 5)->state), DMXP_STATE_EMPTY);
    CHECK_STATUS(dmxp_channel_register(&ch, DMXP_ROLE_PRODUCER, &err), DMXP_E_BLOB_POOL_OVERLAP);
    CHECK_EQ_U64(err.channel, -1);
    CHECK_EQ_U64(atomic_load(&h->peer_table_offset), 0);
    CHECK(memcmp(m + P, pristine + P, atomic_load(&ph->pool_len)) == 0); /* untouched */
    atomic_store(&h->band_cursor, cursor);
    CHECK_OK(dmxp_channel_register(&ch, DMXP_ROLE_PRODUCER, &err));
    uint64_t table = atomic_load(&h->peer_table_offset);
    atomic_store(&h->peer_table_offset, P + 64 * KIB);
    dmxp_loan loan;
    CHECK_OK(dmxp_blob_loan(&ch, 10, &loan)); /* the handle's record is cached */
    CHECK_OK(dmxp_blob_abandon(&loan));
    dmxp_channel ch2;
    CHECK_OK(dmxp_channel_open(&seg, 0, &ch2, &err));
    CHECK_STATUS(dmxp_channel_register(&ch2, DMXP_ROLE_PRODUCER, &err), DMXP_E_BLOB_POOL_OVERLAP);
    atomic_store(&h->peer_table_offset, table);

    /* The geometry is cached at attach: a descriptor rewritten afterwards changes nothing. */
    atomic_store(&d[0].block_count, 1u << 24);
    atomic_store(&d[0].headers_offset, 0);
    atomic_store(&d[0].data_offset, 0);
    atomic_store(&d[0].next_hint, 0xFFFFFFFFu);
    for (int i = 0; i < 8; i++) {
        CHECK_OK(dmxp_blob_loan(&ch, 10, &loan));
        CHECK_EQ_U64(loan.ref.class_index, 0);
        CHECK(loan.ref.block < 8);
        CHECK_EQ_U64((uint64_t)(loan.data - m), seg.pool.classes[0].data_offset +
                                                   64u * loan.ref.block);
        CHECK_OK(dmxp_blob_abandon(&loan));
    }
    dmxp_channel_close(&ch);
    free(pristine);
    munmap(mem, SEG_LEN);
}

/* --- (4) round trips ---------------------------------------------------------------------- */

static void round_trips(void) {
    dmxp_segment seg;
    void *mem;
    new_pool_segment(&seg, &mem);
    dmxp_channel ch = blob_channel(&seg, 0, 4, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER);
    const size_t lens[] = {0, 1, 7, 8, 9, 24, 64, 65, 4 * KIB, 64 * KIB + 1, 1 * MIB,
                           4 * MIB - 3, 4 * MIB};
    uint64_t seed = 0;
    for (int lap = 0; lap < 3; lap++) /* several laps of a 4-slot ring, and of the blocks */
        for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
            seed++;
            uint64_t id = send_blob(&ch, lens[i], seed);
            recv_blob(&ch, lens[i], seed, id);
            CHECK_EQ_U64(free_blocks(&seg), NBLOCKS);
        }
    /* Several held at once, released out of order; the ring moves on meanwhile. */
    uint64_t ids[4];
    for (int i = 0; i < 4; i++) ids[i] = send_blob(&ch, 1000 + (size_t)i, 100 + (uint64_t)i);
    dmxp_blob_view views[4];
    for (int i = 0; i < 4; i++) {
        CHECK_OK(dmxp_blob_receive(&ch, &views[i]));
        CHECK_EQ_U64(views[i].meta.message_id, ids[i]);
    }
    CHECK_EQ_U64(dmxp_channel_depth(&ch), 0);
    dmxp_blob_stats st;
    CHECK_OK(dmxp_segment_blob_stats(&seg, &st));
    CHECK_EQ_U64(st.classes[1].held, 4); /* 1000 B: the smallest class that fits, 4 KiB */
    for (int i = 3; i >= 0; i--) {
        unsigned char got[1003];
        CHECK_OK(dmxp_blob_read(&views[i], 0, got, views[i].len));
        check_payload(got, views[i].len, 100 + (uint64_t)i);
        CHECK_OK(dmxp_blob_release(&views[i]));
    }
    CHECK_EQ_U64(free_blocks(&seg), NBLOCKS);

    /* The word accessors at every alignment, read back from the loan. */
    dmxp_loan loan;
    CHECK_OK(dmxp_blob_loan(&ch, 200, &loan));
    unsigned char src[200], back[200];
    for (size_t off = 0; off < 16; off++)
        for (size_t n = 0; n + off <= 40; n++) {
            for (size_t k = 0; k < n; k++) src[k] = (unsigned char)(off * 41 + n * 7 + k);
            memset(back, 0xEE, sizeof back);
            CHECK_OK(dmxp_loan_write(&loan, 100 + off, src, n));
            CHECK_OK(dmxp_loan_read(&loan, 100 + off, back, n));
            CHECK(memcmp(src, back, n) == 0);
            CHECK_EQ_U64(back[n], 0xEE); /* nothing past n */
        }
    /* Neighbours of a merged partial word are kept. */
    for (size_t k = 0; k < 200; k++) src[k] = (unsigned char)k;
    CHECK_OK(dmxp_loan_write(&loan, 0, src, 200));
    CHECK_OK(dmxp_loan_write(&loan, 13, "xyz", 3));
    CHECK_OK(dmxp_loan_read(&loan, 0, back, 200));
    src[13] = 'x';
    src[14] = 'y';
    src[15] = 'z';
    CHECK(memcmp(src, back, 200) == 0);
    CHECK_OK(dmxp_loan_store_word(&loan, 24, UINT64_C(0x0807060504030201)));
    CHECK_STATUS(dmxp_loan_store_word(&loan, 25, 0), DMXP_E_INVALID_ARGUMENT);
    CHECK_STATUS(dmxp_loan_write(&loan, 199, "ab", 2), DMXP_E_INVALID_ARGUMENT);
    CHECK_STATUS(dmxp_loan_write(&loan, SIZE_MAX, "ab", 2), DMXP_E_INVALID_ARGUMENT);
    CHECK_STATUS(dmxp_loan_read(&loan, 201, back, 0), DMXP_E_INVALID_ARGUMENT);
    /* Commit refusals leave the loan live; then a shorter commit. */
    CHECK_STATUS(dmxp_blob_commit(&loan, 201, NULL, NULL), DMXP_E_TOO_LARGE);
    dmxp_send_opts bad = {.flags = 0x0010};
    CHECK_STATUS(dmxp_blob_commit(&loan, 10, &bad, NULL), DMXP_E_RESERVED_FLAGS);
    CHECK(loan.live);
    uint64_t id;
    CHECK_OK(dmxp_blob_commit(&loan, 195, NULL, &id));
    CHECK_STATUS(dmxp_blob_commit(&loan, 10, NULL, NULL), DMXP_E_INVALID_ARGUMENT);
    CHECK_STATUS(dmxp_blob_abandon(&loan), DMXP_E_INVALID_ARGUMENT);
    dmxp_blob_view v;
    CHECK_OK(dmxp_blob_receive(&ch, &v));
    CHECK_EQ_U64(v.len, 195);
    uint64_t w;
    CHECK_OK(dmxp_blob_load_word(&v, 24, &w));
    CHECK_EQ_U64(w, UINT64_C(0x030201)); /* bytes 195.. of the word zeroed by the commit */
    CHECK_OK(dmxp_blob_release(&v));
    /* Abandon gives the block back; generations grow with each loan. */
    CHECK_OK(dmxp_blob_loan(&ch, 4 * MIB, &loan));
    uint32_t g1 = loan.ref.generation, b1 = loan.ref.block;
    CHECK_OK(dmxp_blob_abandon(&loan));
    CHECK_EQ_U64(free_blocks(&seg), NBLOCKS);
    dmxp_block_header *bh = dmxp__block_header(seg.base, &seg.pool, 4, b1);
    CHECK_EQ_U64(atomic_load(&bh->tag), dmxp__tag(DMXP_BLOCK_FREE, 0, g1));
    CHECK_EQ_U64(atomic_load(&bh->owner_pid), (uint32_t)getpid());
    dmxp_channel_close(&ch);
    munmap(mem, SEG_LEN);
}

/* --- (5) copying receives, inline messages on a BLOBS channel ------------------------------ */

typedef struct {
    int n;
    uint64_t ids[8];
    size_t lens[8];
    uint16_t flags[8];
    uint64_t seeds[8];
} collected;

static void collect(void *ctx, const dmxp_meta *meta, const void *payload, size_t len) {
    collected *c = ctx;
    CHECK(c->n < 8);
    c->ids[c->n] = meta->message_id;
    c->lens[c->n] = len;
    c->flags[c->n] = meta->flags;
    if (meta->flags & DMXP_FLAG_BLOB) check_payload(payload, len, c->seeds[c->n]);
    c->n++;
}

static void copying(void) {
    dmxp_segment seg;
    void *mem;
    new_pool_segment(&seg, &mem);
    dmxp_channel ch = blob_channel(&seg, 0, 8, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER);
    dmxp_channel rx; /* an unregistered consumer copies blobs too */
    dmxp_error err;
    CHECK_OK(dmxp_channel_open(&seg, 0, &rx, &err));
    unsigned char *buf = malloc(4 * MIB);
    CHECK(buf != NULL);
    dmxp_meta meta;
    size_t len = 0;
    uint64_t id = send_blob(&ch, 70000, 1);
    /* A buffer shorter than the blob: refused, nothing consumed. */
    CHECK_STATUS(dmxp_try_recv(&rx, buf, 69999, &meta, &len), DMXP_E_BUFFER_TOO_SMALL);
    CHECK_EQ_U64(meta.payload_len, 70000);
    CHECK_EQ_U64(dmxp_channel_depth(&rx), 1);
    CHECK_OK(dmxp_try_recv(&rx, buf, 70000, &meta, &len));
    CHECK_EQ_U64(len, 70000);
    CHECK_EQ_U64(meta.payload_len, 70000);
    CHECK_EQ_U64(meta.message_id, id);
    CHECK_EQ_U64(meta.flags, 0x0100 | DMXP_FLAG_BLOB);
    check_payload(buf, len, 1);
    CHECK_EQ_U64(free_blocks(&seg), NBLOCKS); /* copied, then freed */
    /* Blocking receive. */
    id = send_blob(&ch, 4 * MIB, 2);
    CHECK_OK(dmxp_recv_timeout(&rx, buf, 4 * MIB, &meta, &len, 100 * MS));
    CHECK_EQ_U64(len, 4 * MIB);
    check_payload(buf, len, 2);
    CHECK_EQ_U64(free_blocks(&seg), NBLOCKS);
    /* Inline messages and blobs mixed: a blob receive refuses an inline one without consuming
     * it, a batch stops before a blob and delivers a blob alone. */
    CHECK_OK(dmxp_try_send(&ch, "one", 3, NULL, NULL));
    CHECK_OK(dmxp_try_send(&ch, "two", 3, NULL, NULL));
    uint64_t b3 = send_blob(&ch, 5000, 3);
    CHECK_OK(dmxp_try_send(&ch, "four", 4, NULL, NULL));
    uint64_t b5 = send_blob(&ch, 100, 5);
    uint64_t b6 = send_blob(&ch, 1, 6);
    dmxp_blob_view v;
    CHECK_STATUS(dmxp_blob_receive(&ch, &v), DMXP_E_NOT_A_BLOB);
    CHECK(!v.live);
    CHECK_EQ_U64(dmxp_channel_depth(&ch), 6);
    CHECK_STATUS(dmxp_blob_receive_timeout(&ch, &v, 100 * MS), DMXP_E_NOT_A_BLOB);
    collected c = {0};
    c.seeds[2] = 3;
    size_t delivered, dropped;
    CHECK_OK(dmxp_try_recv_batch(&ch, 8, collect, &c, &delivered, &dropped));
    CHECK_EQ_U64(delivered, 2); /* one, two: stops before the blob */
    CHECK_OK(dmxp_try_recv_batch(&ch, 8, collect, &c, &delivered, &dropped));
    CHECK_EQ_U64(delivered, 1); /* the blob alone */
    CHECK_EQ_U64(c.ids[2], b3);
    CHECK_EQ_U64(c.lens[2], 5000);
    CHECK_EQ_U64(c.flags[2], 0x0100 | DMXP_FLAG_BLOB);
    CHECK_OK(dmxp_try_recv(&ch, buf, 960, &meta, &len));
    CHECK_EQ_U64(len, 4);
    CHECK(memcmp(buf, "four", 4) == 0);
    CHECK_OK(dmxp_blob_receive(&ch, &v));
    CHECK_EQ_U64(v.meta.message_id, b5);
    CHECK_OK(dmxp_blob_release(&v));
    CHECK_OK(dmxp_try_recv(&ch, buf, 1, &meta, &len)); /* a 1-byte blob into 1 byte */
    CHECK_EQ_U64(meta.message_id, b6);
    check_payload(buf, 1, 6);
    CHECK_EQ_U64(free_blocks(&seg), NBLOCKS);
    CHECK_EQ_U64(dmxp_channel_blob_bad_refs(&ch) + dmxp_channel_blob_bad_refs(&rx), 0);
    dmxp_channel_close(&ch);
    free(buf);
    munmap(mem, SEG_LEN);
}

/* --- (6) exhaustion ------------------------------------------------------------------------ */

static dmxp_blob_view held_view;
static dmxp_channel release_ch;

static void *release_later(void *arg) {
    (void)arg;
    dmxp__sleep_ns(50 * MS);
    CHECK_OK(dmxp_blob_release(&held_view));
    return NULL;
}

static void exhaustion(void) {
    dmxp_segment seg;
    void *mem;
    new_pool_segment(&seg, &mem);
    dmxp_channel ch = blob_channel(&seg, 0, 32, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER);
    dmxp_loan loan;
    CHECK_STATUS(dmxp_blob_loan(&ch, 4 * MIB + 1, &loan), DMXP_E_TOO_LARGE);
    CHECK(!loan.live);
    CHECK_EQ_U64(free_blocks(&seg), NBLOCKS);
    /* 4 MiB loans: 2 blocks. */
    dmxp_loan big[3];
    CHECK_OK(dmxp_blob_loan(&ch, 4 * MIB, &big[0]));
    CHECK_OK(dmxp_blob_loan(&ch, 3 * MIB, &big[1]));
    CHECK_STATUS(dmxp_blob_loan(&ch, 2 * MIB, &big[2]), DMXP_E_POOL_EXHAUSTED);
    CHECK(!big[2].live);
    CHECK_OK(dmxp_blob_loan(&ch, 1 * MIB, &big[2])); /* a smaller class still has room */
    CHECK_EQ_U64(big[2].ref.class_index, 3);
    CHECK_OK(dmxp_blob_abandon(&big[2]));
    /* A loan of 1 byte takes the smallest class first, then larger ones. */
    dmxp_loan small[NBLOCKS];
    int n = 0;
    for (; n < (int)NBLOCKS; n++) {
        dmxp_status s = dmxp_blob_loan(&ch, 1, &small[n]);
        if (s != DMXP_OK) {
            CHECK_STATUS(s, DMXP_E_POOL_EXHAUSTED);
            break;
        }
    }
    CHECK_EQ_U64(n, NBLOCKS - 2);
    CHECK_EQ_U64(small[0].ref.class_index, 0);
    CHECK_EQ_U64(small[8].ref.class_index, 1);
    CHECK_EQ_U64(free_blocks(&seg), 0);
    /* Timeout of a blocking loan. */
    int64_t t0 = (int64_t)dmxp_now_ns();
    CHECK_STATUS(dmxp_blob_loan_timeout(&ch, 1, &loan, 30 * MS), DMXP_E_TIMEOUT);
    CHECK((int64_t)dmxp_now_ns() - t0 >= 30 * MS);
    /* A release makes a block available again. */
    CHECK_OK(dmxp_blob_commit(&big[0], 4 * MIB, NULL, NULL));
    CHECK_OK(dmxp_blob_receive(&ch, &held_view));
    CHECK_STATUS(dmxp_blob_loan(&ch, 4 * MIB, &loan), DMXP_E_POOL_EXHAUSTED);
    CHECK_OK(dmxp_blob_release(&held_view));
    CHECK_OK(dmxp_blob_loan(&ch, 4 * MIB, &loan));
    /* A blocking loan woken by a release in another thread (free_seq, free_waiters). */
    CHECK_OK(dmxp_blob_commit(&loan, 10, NULL, NULL));
    CHECK_OK(dmxp_blob_receive(&ch, &held_view));
    release_ch = ch;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, release_later, NULL) == 0);
    t0 = (int64_t)dmxp_now_ns();
    CHECK_OK(dmxp_blob_loan_timeout(&ch, 4 * MIB, &loan, 5000 * MS));
    int64_t waited = (int64_t)dmxp_now_ns() - t0;
    CHECK(waited >= 40 * MS && waited < 2000 * MS);
    CHECK(pthread_join(t, NULL) == 0);
    dmxp_blob_pool_header *ph = dmxp__pool_header(seg.base, &seg.pool);
    CHECK_EQ_U64(atomic_load(&ph->free_waiters), 0);
    CHECK(atomic_load(&ph->free_seq) >= 1); /* bumped: a waiter was registered */
    CHECK_OK(dmxp_blob_abandon(&loan));
    CHECK_OK(dmxp_blob_abandon(&big[1]));
    for (int i = 0; i < n; i++) CHECK_OK(dmxp_blob_abandon(&small[i]));
    CHECK_EQ_U64(free_blocks(&seg), NBLOCKS);
    dmxp_channel_close(&ch);
    munmap(mem, SEG_LEN);
}

/* --- (7) bad references --------------------------------------------------------------------- */

static void expect_bad(const dmxp_channel *ch, int copying, uint64_t id, uint64_t bad_before) {
    dmxp_blob_view v;
    if (copying) {
        unsigned char buf[8192];
        dmxp_meta meta;
        size_t len = 1;
        CHECK_STATUS(dmxp_try_recv(ch, buf, sizeof buf, &meta, &len), DMXP_E_CORRUPT_MESSAGE);
        CHECK_EQ_U64(meta.message_id, id);
        CHECK_EQ_U64(len, 0);
    } else {
        CHECK_STATUS(dmxp_blob_receive(ch, &v), DMXP_E_CORRUPT_MESSAGE);
        CHECK(!v.live);
        CHECK_EQ_U64(v.meta.message_id, id);
    }
    CHECK_EQ_U64(dmxp_channel_blob_bad_refs(ch), bad_before + 1);
}

static void bad_refs(void) {
    dmxp_segment seg;
    void *mem;
    new_pool_segment(&seg, &mem);
    dmxp_channel ch = blob_channel(&seg, 0, 8, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER);
    for (int copying = 0; copying < 2; copying++) {
        /* A stale reference: the slot names the block's previous generation. Counted as bad
         * and skipped; the next message is received; the block, left QUEUED at a position that
         * is now free, is reclaimed by rule 3. */
        for (int what = 0; what < 7; what++) {
            uint64_t bad_before = dmxp_channel_blob_bad_refs(&ch);
            uint64_t id = send_blob(&ch, 3000, 10 + (uint64_t)what);
            dmxp_slot *slot = dmxp__slot(&ch, id);
            uint64_t w0 = atomic_load(&slot->payload[0]), w1 = atomic_load(&slot->payload[1]);
            dmxp_blob_ref r = dmxp__ref_decode(w0, w1);
            dmxp_block_header *bh = dmxp__block_header(seg.base, &seg.pool, r.class_index, r.block);
            int reclaimable = 1;
            switch (what) {
            case 0: atomic_store(&slot->payload[1], w1 - 1); break; /* generation - 1: stale */
            case 1: atomic_store(&slot->payload[1], w1 + 1); break; /* a later one: forged */
            case 2: atomic_store(&slot->payload[0], (w0 & ~UINT64_C(0xFF)) | 5); break; /* class */
            case 3: atomic_store(&slot->payload[0], (w0 & 0xFF) | UINT64_C(4) << 32); break; /* block */
            case 4: atomic_store(&slot->payload[1], (w1 & 0xFFFFFFFFu) | UINT64_C(4097) << 32); break;
            case 5: atomic_store(&bh->position, id + 8); reclaimable = 0; break; /* header: another position */
            default: atomic_store(&slot->meta.payload_len, 17); break;
            }
            expect_bad(&ch, copying, id, bad_before);
            CHECK_EQ_U64(dmxp_channel_depth(&ch), 0);
            /* Left alone: still QUEUED. */
            CHECK_EQ_U64(dmxp__tag_state(atomic_load(&bh->tag)), DMXP_BLOCK_QUEUED);
            /* The ring flows on. */
            uint64_t next = send_blob(&ch, 50, 99);
            recv_blob(&ch, 50, 99, next);
            dmxp_blob_reclaim_report rep;
            CHECK_OK(dmxp_blob_reclaim(&ch, &rep));
            CHECK_EQ_U64(rep.queued, (uint64_t)reclaimable);
            CHECK_EQ_U64(rep.leaked + rep.dead_owners, 0);
            if (!reclaimable) { /* a header naming a later position: rule 3 waits for it */
                CHECK_EQ_U64(free_blocks(&seg), NBLOCKS - 1);
                atomic_store(&bh->position, id);
                CHECK_OK(dmxp_blob_reclaim(&ch, &rep));
                CHECK_EQ_U64(rep.queued, 1);
            }
            CHECK_EQ_U64(free_blocks(&seg), NBLOCKS);
        }
    }
    /* A reference longer than the largest block is dropped, not refused for ever as too long
     * for the buffer. */
    {
        uint64_t bad_before = dmxp_channel_blob_bad_refs(&ch);
        uint64_t id = send_blob(&ch, 3000, 1);
        dmxp_slot *slot = dmxp__slot(&ch, id);
        atomic_store(&slot->payload[1], (atomic_load(&slot->payload[1]) & 0xFFFFFFFFu) |
                                            UINT64_C(0xFFFFFFFF) << 32);
        unsigned char small[100];
        dmxp_meta m;
        size_t n;
        CHECK_STATUS(dmxp_try_recv(&ch, small, sizeof small, &m, &n), DMXP_E_CORRUPT_MESSAGE);
        CHECK_EQ_U64(dmxp_channel_blob_bad_refs(&ch), bad_before + 1);
        dmxp_blob_reclaim_report r;
        CHECK_OK(dmxp_blob_reclaim(&ch, &r));
        CHECK_EQ_U64(r.queued, 1);
        /* And one that fits the pool but not the buffer is refused, nothing consumed. */
        id = send_blob(&ch, 3000, 2);
        CHECK_STATUS(dmxp_try_recv(&ch, small, sizeof small, &m, &n), DMXP_E_BUFFER_TOO_SMALL);
        CHECK_EQ_U64(m.payload_len, 3000);
        recv_blob(&ch, 3000, 2, id);
    }
    /* A BLOB flag on a channel without blobs: dropped as corrupt, never delivered as a
     * 16-byte message. */
    dmxp_channel plain;
    dmxp_error err;
    CHECK_OK(dmxp_channel_create(&seg, 1, 4, &plain, &err));
    CHECK_OK(dmxp_try_send(&plain, "0123456789abcdef", 16, NULL, NULL));
    atomic_store(&dmxp__slot(&plain, 0)->meta.flags, DMXP_FLAG_BLOB);
    unsigned char buf[64];
    dmxp_meta meta;
    size_t len;
    CHECK_STATUS(dmxp_try_recv(&plain, buf, sizeof buf, &meta, &len), DMXP_E_CORRUPT_MESSAGE);
    CHECK_OK(dmxp_try_send(&plain, "x", 1, NULL, NULL));
    atomic_store(&dmxp__slot(&plain, 1)->meta.flags, DMXP_FLAG_BLOB);
    dmxp_recv_counts counts;
    CHECK_OK(dmxp_try_recv_batch_counts(&plain, 8, NULL, NULL, NULL, &counts));
    CHECK_EQ_U64(counts.delivered, 0);
    CHECK_EQ_U64(counts.corrupt, 1);
    /* A batch counts a bad reference as corrupt. */
    uint64_t id = send_blob(&ch, 10, 1);
    atomic_store(&dmxp__slot(&ch, id)->payload[1], atomic_load(&dmxp__slot(&ch, id)->payload[1]) + 1);
    CHECK_OK(dmxp_try_recv_batch_counts(&ch, 8, NULL, NULL, NULL, &counts));
    CHECK_EQ_U64(counts.corrupt, 1);
    CHECK_EQ_U64(counts.delivered, 0);
    dmxp_blob_reclaim_report rep;
    CHECK_OK(dmxp_blob_reclaim(&ch, &rep));
    CHECK_EQ_U64(rep.queued, 1);
    /* A scribbled QUEUED header naming no channel is reclaimed; one naming a channel that
     * does not exist is left alone. */
    dmxp_loan loan;
    CHECK_OK(dmxp_blob_loan(&ch, 1, &loan));
    dmxp_block_header *bh = loan.header;
    uint32_t g = loan.ref.generation;
    atomic_store(&bh->channel_id, 300);
    atomic_store(&bh->tag, dmxp__tag(DMXP_BLOCK_QUEUED, 0, g));
    CHECK_OK(dmxp_blob_reclaim(&ch, &rep));
    CHECK_EQ_U64(rep.queued, 1);
    CHECK_OK(dmxp_blob_loan(&ch, 1, &loan));
    bh = loan.header;
    atomic_store(&bh->channel_id, 77);
    atomic_store(&bh->tag, dmxp__tag(DMXP_BLOCK_QUEUED, 0, loan.ref.generation));
    CHECK_OK(dmxp_blob_reclaim(&ch, &rep));
    CHECK_EQ_U64(rep.queued, 0);
    atomic_store(&bh->tag, dmxp__tag(DMXP_BLOCK_FREE, 0, loan.ref.generation));
    /* A scribbled state byte is left alone and counted invalid. */
    atomic_store(&bh->tag, dmxp__tag(9, 0, 1));
    dmxp_blob_stats st;
    CHECK_OK(dmxp_channel_blob_stats(&ch, &st));
    CHECK_EQ_U64(st.classes[0].invalid, 1);
    CHECK_OK(dmxp_blob_reclaim(&ch, &rep));
    CHECK_EQ_U64(rep.queued + rep.leaked, 0);
    atomic_store(&bh->tag, 0);
    CHECK_EQ_U64(free_blocks(&seg), NBLOCKS);
    dmxp_channel_close(&ch);
    munmap(mem, SEG_LEN);
}

/* --- (8) revocation, rule 2, close ---------------------------------------------------------- */

static void revocation(void) {
    dmxp_segment seg;
    void *mem;
    new_pool_segment(&seg, &mem);
    dmxp_channel ch = blob_channel(&seg, 0, 8, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER);
    /* A loan reclaimed under its producer (as rule 1 does for a producer judged dead): the
     * commit publishes a SKIP marker and reports revoked. */
    dmxp_loan loan;
    CHECK_OK(dmxp_blob_loan(&ch, 100, &loan));
    uint64_t t = atomic_load(&loan.header->tag);
    CHECK_EQ_U64(dmxp__tag_state(t), DMXP_BLOCK_LOANED);
    CHECK_EQ_U64(dmxp__tag_owner(t), ch.send_index + 1);
    CHECK_EQ_U64(dmxp__reclaim_owner(seg.base, &seg.pool, ch.send_index), 1);
    uint64_t id = 0;
    uint64_t revoked = dmxp_channel_revoked(&ch);
    CHECK_STATUS(dmxp_blob_commit(&loan, 100, NULL, &id), DMXP_E_REVOKED);
    CHECK_EQ_U64(dmxp_channel_revoked(&ch), revoked + 1);
    CHECK_EQ_U64(atomic_load(&dmxp__slot(&ch, id)->meta.flags), DMXP_FLAG_SKIP);
    CHECK_EQ_U64(dmxp_channel_depth(&ch), 1);
    dmxp_blob_view v;
    CHECK_STATUS(dmxp_blob_receive(&ch, &v), DMXP_E_EMPTY); /* the marker is passed over */
    CHECK_EQ_U64(dmxp_channel_depth(&ch), 0);
    /* The same for an abandon. */
    CHECK_OK(dmxp_blob_loan(&ch, 100, &loan));
    CHECK_EQ_U64(dmxp__reclaim_owner(seg.base, &seg.pool, ch.send_index), 1);
    CHECK_STATUS(dmxp_blob_abandon(&loan), DMXP_E_REVOKED);
    /* A held block reclaimed under its consumer: the release reports revoked. */
    id = send_blob(&ch, 100, 1);
    CHECK_OK(dmxp_blob_receive(&ch, &v));
    CHECK_EQ_U64(dmxp__tag_owner(atomic_load(&v.header->tag)), ch.recv_index + 1);
    CHECK_EQ_U64(dmxp__reclaim_owner(seg.base, &seg.pool, ch.recv_index), 1);
    CHECK_STATUS(dmxp_blob_release(&v), DMXP_E_REVOKED);
    CHECK_EQ_U64(free_blocks(&seg), NBLOCKS);
    /* Rule 2: a record freed under its blocks (a peer that exited without closing, or an older
     * sweep): its LOANED and HELD blocks are reclaimed. */
    dmxp_channel other = blob_channel(&seg, 1, 4, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER);
    dmxp_loan l1, l2;
    CHECK_OK(dmxp_blob_loan(&other, 10, &l1));
    CHECK_OK(dmxp_blob_loan(&other, 10, &l2));
    CHECK_OK(dmxp_blob_commit(&l2, 10, NULL, NULL));
    CHECK_OK(dmxp_blob_receive(&other, &v));
    CHECK_EQ_U64(free_blocks(&seg), NBLOCKS - 2);
    dmxp_blob_reclaim_report rep;
    CHECK_OK(dmxp_blob_reclaim(&ch, &rep));
    CHECK_EQ_U64(rep.leaked + rep.queued + rep.dead_owners, 0); /* live owners */
    dmxp_peer_record *table = (dmxp_peer_record *)(void *)(seg.base + atomic_load(&dmxp__hdr(&seg)->peer_table_offset));
    atomic_store(&table[other.send_index].pid, 0);
    atomic_store(&table[other.recv_index].pid, 0);
    CHECK_OK(dmxp_blob_reclaim(&ch, &rep));
    CHECK_EQ_U64(rep.leaked, 2);
    CHECK_EQ_U64(free_blocks(&seg), NBLOCKS);
    CHECK_STATUS(dmxp_blob_release(&v), DMXP_E_REVOKED);
    CHECK_STATUS(dmxp_blob_abandon(&l1), DMXP_E_REVOKED);
    /* An owner that names no record: a scribble, reclaimed by rule 2. */
    CHECK_OK(dmxp_blob_loan(&ch, 10, &l1));
    atomic_store(&l1.header->tag, dmxp__tag(DMXP_BLOCK_HELD, 0xFFFFFF, l1.ref.generation));
    CHECK_OK(dmxp_blob_reclaim(&ch, &rep));
    CHECK_EQ_U64(rep.leaked, 1);
    /* An exhausted loan runs the reclaim itself. */
    dmxp_channel third = blob_channel(&seg, 2, 4, DMXP_ROLE_PRODUCER);
    dmxp_loan all[2];
    CHECK_OK(dmxp_blob_loan(&third, 4 * MIB, &all[0]));
    CHECK_OK(dmxp_blob_loan(&third, 4 * MIB, &all[1]));
    atomic_store(&table[third.send_index].pid, 0);
    atomic_store(&ch.reclaim_ns, 0);
    CHECK_OK(dmxp_blob_loan(&ch, 4 * MIB, &l1));
    CHECK_EQ_U64(free_blocks(&seg), NBLOCKS - 1);
    CHECK_OK(dmxp_blob_abandon(&l1));
    /* dmxp_channel_close gives back the blocks a handle still owns. */
    CHECK_OK(dmxp_blob_loan(&ch, 10, &l1));
    id = send_blob(&ch, 10, 3);
    CHECK_OK(dmxp_blob_receive(&ch, &v));
    CHECK_EQ_U64(free_blocks(&seg), NBLOCKS - 2);
    dmxp_channel_close(&ch);
    CHECK_EQ_U64(free_blocks(&seg), NBLOCKS);
    CHECK_STATUS(dmxp_blob_release(&v), DMXP_E_REVOKED);
    CHECK_STATUS(dmxp_blob_loan(&ch, 10, &l1), DMXP_E_NOT_REGISTERED);
    munmap(mem, SEG_LEN);
}

int main(void) {
    layout();
    creation();
    validation();
    round_trips();
    copying();
    exhaustion();
    bad_refs();
    revocation();
    TEST_DONE("test_blob");
}
