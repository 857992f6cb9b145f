/* Decodes the committed golden segment (dmxp-nostd/tests/golden/segment_v1.bin) field by
 * field as segment_v1.md describes it, then attaches to a copy with the client and receives
 * the queued messages. Usage: test_golden [path/to/segment_v1.bin] */
#include "check.h"

#ifndef GOLDEN_PATH
#define GOLDEN_PATH "../../dmxp-nostd/tests/golden/segment_v1.bin"
#endif

#define GOLDEN_SIZE 104960u

static unsigned char *bytes; /* the file, 128-aligned */
static unsigned char described[GOLDEN_SIZE];

static uint64_t le(size_t off, size_t size) {
    uint64_t v = 0;
    for (size_t i = 0; i < size; i++) v |= (uint64_t)bytes[off + i] << (8 * i);
    return v;
}

/* One row of a segment_v1.md table: checks the value and marks the bytes as described. */
static void row(size_t off, size_t size, uint64_t value) {
    if (le(off, size) != value) {
        fprintf(stderr, "golden: field at %zu (%zu bytes) is %" PRIu64 ", md says %" PRIu64 "\n",
                off, size, le(off, size), value);
        exit(1);
    }
    check_count++;
    memset(described + off, 1, size);
}

static void text_row(size_t off, const char *text) {
    size_t n = strlen(text);
    CHECK(memcmp(bytes + off, text, n) == 0);
    memset(described + off, 1, n);
}

typedef struct {
    uint64_t id, ts;
    uint32_t channel, type, pid;
    uint16_t runtime, flags;
    const char *payload;
} golden_msg;

static void slot_rows(size_t slot, uint64_t sequence, const golden_msg *m) {
    row(slot + 0, 8, sequence);
    row(slot + 8, 8, m->id);
    row(slot + 16, 8, m->ts);
    row(slot + 24, 4, m->channel);
    row(slot + 28, 4, m->type);
    row(slot + 32, 4, m->pid);
    row(slot + 36, 2, m->runtime);
    row(slot + 38, 2, m->flags);
    row(slot + 40, 4, strlen(m->payload));
    row(slot + 44, 4, 0);
    text_row(slot + 64, m->payload);
}

static const golden_msg MSGS[5] = {
    {0, 1000000000, 0, 1, 4242, 1, 0x0000, "first message"},
    {1, 1000000001, 0, 2, 4242, 1, 0x0100, "DMXP golden segment v1"},
    {2, 1000000002, 0, 3, 4242, 1, 0x0000,
     "The quick brown fox jumps over the lazy dog; 0123456789 ok."},
    {0, 1000000003, 1, 7, 4242, 1, 0x0100, ""},
    {1, 1000000004, 1, 8, 4242, 1, 0x0300, "ninebytes"},
};

static void decode_bytes(void) {
    /* Global header */
    row(0, 8, UINT64_C(0x444D58505F4D454D));
    CHECK(memcmp(bytes, "MEM_PXMD", 8) == 0);
    row(8, 4, 1);
    row(12, 4, 256);
    row(16, 4, 2);
    row(20, 4, 0);
    row(24, 8, 104960);
    row(32, 8, 104960);
    row(40, 4, 4242);
    row(44, 4, 0);
    /* Channel entry 0 */
    row(128, 4, 0);
    row(132, 4, 0);
    row(136, 8, 4);
    row(144, 8, 98432);
    row(152, 4, 2);
    row(156, 4, 4242);
    row(160, 4, 0);
    row(164, 4, 0);
    row(168, 4, 0);
    row(172, 4, 0);
    row(256, 8, 3);
    row(384, 8, 1);
    /* Channel entry 1 */
    row(512, 4, 1);
    row(516, 4, 0);
    row(520, 8, 2);
    row(528, 8, 102784);
    row(536, 4, 2);
    row(540, 4, 4242);
    row(544, 4, 0);
    row(548, 4, 0);
    row(552, 4, 0);
    row(556, 4, 0);
    row(640, 8, 2);
    row(768, 8, 0);
    /* Channel 0's band */
    slot_rows(98432, 4, &MSGS[0]);
    slot_rows(99520, 2, &MSGS[1]);
    slot_rows(100608, 3, &MSGS[2]);
    row(101696, 8, 3);
    /* Channel 1's band */
    slot_rows(102784, 1, &MSGS[3]);
    slot_rows(103872, 2, &MSGS[4]);
    /* Everything not listed is zero (including entries 2..255). */
    for (size_t i = 0; i < GOLDEN_SIZE; i++)
        if (!described[i] && bytes[i] != 0) {
            fprintf(stderr, "golden: undescribed byte %zu is %u\n", i, bytes[i]);
            exit(1);
        }
}

/* The same fields through the client's layout structs (atomic loads). */
static void decode_structs(void) {
    dmxp_segment_layout *l = (dmxp_segment_layout *)(void *)bytes;
    CHECK_EQ_U64(atomic_load(&l->header.magic), DMXP_MAGIC);
    CHECK_EQ_U64(atomic_load(&l->header.version), 1);
    CHECK_EQ_U64(atomic_load(&l->header.max_channels), 256);
    CHECK_EQ_U64(atomic_load(&l->header.channel_count), 2);
    CHECK_EQ_U64(atomic_load(&l->header.segment_size), 104960);
    CHECK_EQ_U64(atomic_load(&l->header.band_cursor), 104960);
    CHECK_EQ_U64(atomic_load(&l->header.creator_pid), 4242);
    CHECK_EQ_U64(atomic_load(&l->header.header_flags), 0);
    const uint64_t caps[2] = {4, 2}, bands[2] = {98432, 102784}, tails[2] = {3, 2},
                   heads[2] = {1, 0};
    for (int c = 0; c < 2; c++) {
        dmxp_channel_entry *e = &l->channels[c];
        CHECK_EQ_U64(atomic_load(&e->channel_id), c);
        CHECK_EQ_U64(atomic_load(&e->flags), 0);
        CHECK_EQ_U64(atomic_load(&e->capacity), caps[c]);
        CHECK_EQ_U64(atomic_load(&e->band_offset), bands[c]);
        CHECK_EQ_U64(atomic_load(&e->state), DMXP_STATE_READY);
        CHECK_EQ_U64(atomic_load(&e->creator_pid), 4242);
        CHECK_EQ_U64(atomic_load(&e->not_empty_seq), 0);
        CHECK_EQ_U64(atomic_load(&e->not_empty_waiters), 0);
        CHECK_EQ_U64(atomic_load(&e->not_full_seq), 0);
        CHECK_EQ_U64(atomic_load(&e->not_full_waiters), 0);
        CHECK_EQ_U64(atomic_load(&e->tail), tails[c]);
        CHECK_EQ_U64(atomic_load(&e->head), heads[c]);
    }
    for (int c = 2; c < 256; c++) CHECK_EQ_U64(atomic_load(&l->channels[c].capacity), 0);
    dmxp_slot *band0 = (dmxp_slot *)(void *)(bytes + 98432);
    CHECK_EQ_U64(atomic_load(&band0[0].sequence), 4);
    CHECK_EQ_U64(atomic_load(&band0[0].meta.message_id), 0);
    CHECK_EQ_U64(atomic_load(&band0[0].meta.payload_len), 13);
    CHECK_EQ_U64(atomic_load(&band0[2].meta.timestamp_ns), 1000000002);
    CHECK_EQ_U64(atomic_load(&band0[3].sequence), 3);
    dmxp_slot *band1 = (dmxp_slot *)(void *)(bytes + 102784);
    CHECK_EQ_U64(atomic_load(&band1[1].meta.flags), 0x0300);
    CHECK_EQ_U64(atomic_load(&band1[1].meta.sender_runtime), DMXP_RUNTIME_RUST);
}

static void expect_message(const dmxp_channel *ch, const golden_msg *m) {
    unsigned char buf[DMXP_MSG_INLINE];
    dmxp_meta meta;
    size_t len = 99;
    CHECK_OK(dmxp_try_recv(ch, buf, sizeof buf, &meta, &len));
    CHECK_EQ_U64(meta.message_id, m->id);
    CHECK_EQ_U64(meta.timestamp_ns, m->ts);
    CHECK_EQ_U64(meta.channel_id, m->channel);
    CHECK_EQ_U64(meta.message_type, m->type);
    CHECK_EQ_U64(meta.sender_pid, m->pid);
    CHECK_EQ_U64(meta.sender_runtime, m->runtime);
    CHECK_EQ_U64(meta.flags, m->flags);
    CHECK_EQ_U64(meta.payload_len, strlen(m->payload));
    CHECK_EQ_U64(len, strlen(m->payload));
    CHECK(memcmp(buf, m->payload, len) == 0);
    /* Freed for the next lap: sequence = position + capacity. */
    CHECK_EQ_U64(atomic_load(&ch->slots[m->id & ch->mask].sequence), m->id + ch->capacity);
}

/* After draining: exactly `capacity` sends fit, then FULL; they come back with C's stamp. */
static void refill_and_drain(const dmxp_channel *ch, uint64_t first_id) {
    for (uint64_t k = 0; k < ch->capacity; k++) {
        uint64_t id = 0;
        char msg[16];
        int n = snprintf(msg, sizeof msg, "c-%" PRIu64, k);
        dmxp_send_opts opts = {.message_type = 40 + (uint32_t)k, .flags = 0x0200};
        CHECK_OK(dmxp_try_send(ch, msg, (size_t)n, &opts, &id));
        CHECK_EQ_U64(id, first_id + k);
    }
    CHECK_STATUS(dmxp_try_send(ch, "x", 1, NULL, NULL), DMXP_E_FULL);
    for (uint64_t k = 0; k < ch->capacity; k++) {
        unsigned char buf[DMXP_MSG_INLINE];
        dmxp_meta meta;
        size_t len;
        char msg[16];
        int n = snprintf(msg, sizeof msg, "c-%" PRIu64, k);
        CHECK_OK(dmxp_try_recv(ch, buf, sizeof buf, &meta, &len));
        CHECK_EQ_U64(meta.message_id, first_id + k);
        CHECK_EQ_U64(meta.channel_id, ch->id);
        CHECK_EQ_U64(meta.message_type, 40 + k);
        CHECK_EQ_U64(meta.flags, 0x0200);
        CHECK_EQ_U64(meta.sender_runtime, DMXP_RUNTIME_C);
        CHECK_EQ_U64(meta.sender_pid, (uint32_t)getpid());
        CHECK(meta.timestamp_ns != 0);
        CHECK_EQ_U64(len, (size_t)n);
        CHECK(memcmp(buf, msg, len) == 0);
    }
    CHECK_STATUS(dmxp_try_recv(ch, NULL, 0, NULL, NULL), DMXP_E_EMPTY);
}

typedef struct {
    int n;
    dmxp_meta meta[2];
    char text[2][64];
    size_t len[2];
} batch_log;

static void log_message(void *ctx, const dmxp_meta *meta, const void *payload, size_t len) {
    batch_log *log = ctx;
    CHECK(log->n < 2 && len <= sizeof log->text[0]);
    log->meta[log->n] = *meta;
    memcpy(log->text[log->n], payload, len);
    log->len[log->n] = len;
    log->n++;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : GOLDEN_PATH;
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 1;
    }
    bytes = test_segment_memory(GOLDEN_SIZE + 128);
    size_t got = fread(bytes, 1, GOLDEN_SIZE + 1, f);
    fclose(f);
    CHECK_EQ_U64(got, GOLDEN_SIZE);

    decode_bytes();
    decode_structs();

    dmxp_segment seg;
    dmxp_error err;
    CHECK_OK(dmxp_segment_attach_memory(&seg, bytes, GOLDEN_SIZE, &err));
    CHECK_EQ_U64(seg.len, 104960);
    CHECK_EQ_U64(dmxp_segment_channel_count(&seg), 2);
    CHECK_EQ_U64(dmxp_segment_free_space(&seg), 0);
    CHECK_OK(dmxp_segment_validate_all(&seg, &err));

    dmxp_channel ch0, ch1, other;
    CHECK_OK(dmxp_channel_open(&seg, 0, &ch0, &err));
    CHECK_OK(dmxp_channel_open(&seg, 1, &ch1, &err));
    CHECK_EQ_U64(ch0.capacity, 4);
    CHECK_EQ_U64(ch0.band_offset, 98432);
    CHECK_EQ_U64(ch1.capacity, 2);
    CHECK_EQ_U64(ch1.band_offset, 102784);
    CHECK_EQ_U64(dmxp_channel_head(&ch0), 1);
    CHECK_EQ_U64(dmxp_channel_tail(&ch0), 3);
    CHECK_EQ_U64(dmxp_channel_depth(&ch0), 2);
    CHECK_EQ_U64(dmxp_channel_depth(&ch1), 2);
    for (uint32_t id = 2; id < 256; id++) {
        CHECK_STATUS(dmxp_channel_open(&seg, id, &other, &err), DMXP_E_NOT_FOUND);
        CHECK_EQ_U64((uint64_t)err.channel, id);
    }
    /* No room for another band: the golden segment is exactly full. */
    CHECK_STATUS(dmxp_channel_open_or_create(&seg, 2, 2, 0, &other, NULL, &err),
                 DMXP_E_OUT_OF_SPACE);
    CHECK_EQ_U64(err.found, 2 * DMXP_SLOT_SIZE);
    CHECK_EQ_U64(err.value2, 0);
    CHECK_STATUS(dmxp_channel_open(&seg, 2, &other, &err), DMXP_E_NOT_FOUND); /* given back */

    /* Channel 1 is full: a send must report it. */
    CHECK_STATUS(dmxp_try_send(&ch1, "x", 1, NULL, NULL), DMXP_E_FULL);

    /* Channel 0: message 1, message 2, then empty; then exactly 4 sends fit. */
    CHECK(dmxp_has_message(&ch0));
    expect_message(&ch0, &MSGS[1]);
    expect_message(&ch0, &MSGS[2]);
    CHECK(!dmxp_has_message(&ch0));
    CHECK_STATUS(dmxp_try_recv(&ch0, NULL, 0, NULL, NULL), DMXP_E_EMPTY);
    refill_and_drain(&ch0, 3);

    /* Channel 1: message 0 (empty payload), message 1, then empty; then exactly 2 sends. */
    expect_message(&ch1, &MSGS[3]);
    expect_message(&ch1, &MSGS[4]);
    CHECK_STATUS(dmxp_try_recv(&ch1, NULL, 0, NULL, NULL), DMXP_E_EMPTY);
    refill_and_drain(&ch1, 2);

    /* The original file decodes again from a fresh copy through the batch path. */
    f = fopen(path, "rb");
    CHECK(f != NULL);
    CHECK_EQ_U64(fread(bytes, 1, GOLDEN_SIZE, f), GOLDEN_SIZE);
    fclose(f);
    CHECK_OK(dmxp_segment_attach_memory(&seg, bytes, GOLDEN_SIZE, &err));
    CHECK_OK(dmxp_channel_open(&seg, 1, &ch1, &err));
    batch_log log = {0};
    size_t delivered = 0, dropped = 0;
    CHECK_OK(dmxp_try_recv_batch(&ch1, 8, log_message, &log, &delivered, &dropped));
    CHECK_EQ_U64(delivered, 2);
    CHECK_EQ_U64(dropped, 0);
    CHECK_EQ_U64(log.n, 2);
    for (int k = 0; k < 2; k++) {
        const golden_msg *m = &MSGS[3 + k];
        CHECK_EQ_U64(log.meta[k].message_id, m->id);
        CHECK_EQ_U64(log.meta[k].message_type, m->type);
        CHECK_EQ_U64(log.meta[k].flags, m->flags);
        CHECK_EQ_U64(log.len[k], strlen(m->payload));
        CHECK(memcmp(log.text[k], m->payload, log.len[k]) == 0);
    }
    CHECK_STATUS(dmxp_try_recv_batch(&ch1, 8, log_message, &log, &delivered, &dropped),
                 DMXP_E_EMPTY);

    free(bytes);
    TEST_DONE("test_golden");
}
