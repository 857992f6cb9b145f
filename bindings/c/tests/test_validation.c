/* Validation (PROTOCOL.md §4) and error codes: writes bad values into a segment, one field at a
 * time, and checks the status, the field named and the values reported; plus the argument
 * errors of the API, markers and corrupt slots, and hostile cursors. */
#include "check.h"

#define SEG_LEN (1u << 20)

static dmxp_segment seg;
static dmxp_segment_layout *lay;
static unsigned char *mem;

/* Attach must fail with `want`, naming `field`. */
static void expect_attach(dmxp_status want, const char *field, uint64_t found) {
    dmxp_segment s2;
    dmxp_error err;
    memset(&err, 0, sizeof err);
    CHECK_STATUS(dmxp_segment_attach_memory(&s2, mem, SEG_LEN, &err), want);
    CHECK_EQ_U64(err.status, want);
    CHECK_EQ_U64((uint64_t)(int64_t)err.channel, (uint64_t)(int64_t)-1);
    if (field) CHECK(err.field && strcmp(err.field, field) == 0);
    CHECK_EQ_U64(err.found, found);
    char text[256];
    CHECK(dmxp_error_format(&err, text, sizeof text) > 0);
    if (field && want != DMXP_E_NOT_READY) CHECK(strstr(text, field) != NULL);
}

static void expect_open(uint32_t id, dmxp_status want, const char *field, uint64_t found) {
    dmxp_channel ch;
    dmxp_error err;
    memset(&err, 0, sizeof err);
    CHECK_STATUS(dmxp_channel_open(&seg, id, &ch, &err), want);
    CHECK_EQ_U64(err.status, want);
    CHECK_EQ_U64(err.channel, id);
    if (field) {
        CHECK(err.field && strcmp(err.field, field) == 0);
        CHECK(strcmp(dmxp_status_field(want), field) == 0);
        CHECK_EQ_U64(err.found, found);
    }
    /* validate_all reports the same problem. */
    if (field) CHECK_STATUS(dmxp_segment_validate_all(&seg, &err), want);
    char text[256];
    CHECK(dmxp_error_format(&err, text, sizeof text) > 0);
    CHECK(strstr(text, "channel") != NULL);
}

static void header_checks(void) {
    dmxp_header *h = &lay->header;
    dmxp_segment s2;
    dmxp_error err;

    /* #0 region */
    CHECK_STATUS(dmxp_segment_attach_memory(&s2, mem + 64, SEG_LEN - 64, &err),
                 DMXP_E_REGION_MISALIGNED);
    CHECK_EQ_U64(err.value2, 128);
    CHECK_STATUS(dmxp_segment_attach_memory(&s2, mem, DMXP_HEADER_SIZE - 1, &err),
                 DMXP_E_REGION_TOO_SMALL);
    CHECK_EQ_U64(err.found, DMXP_HEADER_SIZE - 1);
    CHECK_EQ_U64(err.value2, DMXP_HEADER_SIZE);
    CHECK_STATUS(dmxp_segment_attach_memory(&s2, NULL, SEG_LEN, &err), DMXP_E_REGION_MISALIGNED);

    /* #1 magic 0: being created */
    atomic_store(&h->magic, 0);
    expect_attach(DMXP_E_NOT_READY, "magic", 0);
    /* #2 bad magic (the seed's or a random value) */
    atomic_store(&h->magic, UINT64_C(0x1122334455667788));
    expect_attach(DMXP_E_BAD_MAGIC, "magic", UINT64_C(0x1122334455667788));
    /* order: a bad magic is reported before a bad version */
    atomic_store(&h->version, 9);
    expect_attach(DMXP_E_BAD_MAGIC, "magic", UINT64_C(0x1122334455667788));
    atomic_store(&h->magic, DMXP_MAGIC);
    /* #3 version */
    expect_attach(DMXP_E_UNSUPPORTED_VERSION, "version", 9);
    atomic_store(&h->max_channels, 128); /* version still wins */
    expect_attach(DMXP_E_UNSUPPORTED_VERSION, "version", 9);
    atomic_store(&h->version, 1);
    /* #4 max_channels */
    expect_attach(DMXP_E_WRONG_MAX_CHANNELS, "max_channels", 128);
    atomic_store(&h->max_channels, 256);
    /* #5 channel_count */
    atomic_store(&h->channel_count, 257);
    expect_attach(DMXP_E_CHANNEL_COUNT_TOO_LARGE, "channel_count", 257);
    atomic_store(&h->channel_count, 256);
    CHECK_OK(dmxp_segment_attach_memory(&s2, mem, SEG_LEN, &err));
    atomic_store(&h->channel_count, 2);
    /* #6 segment_size */
    atomic_store(&h->segment_size, SEG_LEN + 1);
    expect_attach(DMXP_E_SEGMENT_SIZE_MISMATCH, "segment_size", SEG_LEN + 1);
    atomic_store(&h->segment_size, DMXP_HEADER_SIZE - 8);
    expect_attach(DMXP_E_SEGMENT_SIZE_MISMATCH, "segment_size", DMXP_HEADER_SIZE - 8);
    atomic_store(&h->segment_size, 0); /* not recorded: the mapped size counts */
    CHECK_OK(dmxp_segment_attach_memory(&s2, mem, SEG_LEN, &err));
    CHECK_EQ_U64(s2.len, SEG_LEN);
    atomic_store(&h->segment_size, SEG_LEN / 2); /* smaller than mapped is fine */
    CHECK_OK(dmxp_segment_attach_memory(&s2, mem, SEG_LEN, &err));
    CHECK_EQ_U64(s2.len, SEG_LEN / 2);
    /* #7 band_cursor, checked against segment_len */
    uint64_t cursor = atomic_load(&h->band_cursor);
    atomic_store(&h->band_cursor, SEG_LEN / 2 + 64);
    expect_attach(DMXP_E_BAND_CURSOR_OUT_OF_RANGE, "band_cursor", SEG_LEN / 2 + 64);
    atomic_store(&h->segment_size, SEG_LEN);
    atomic_store(&h->band_cursor, DMXP_HEADER_SIZE - 64);
    expect_attach(DMXP_E_BAND_CURSOR_OUT_OF_RANGE, "band_cursor", DMXP_HEADER_SIZE - 64);
    atomic_store(&h->band_cursor, cursor + 8);
    expect_attach(DMXP_E_BAND_CURSOR_OUT_OF_RANGE, "band_cursor", cursor + 8);
    atomic_store(&h->band_cursor, 0); /* no band allocator: accepted */
    CHECK_OK(dmxp_segment_attach_memory(&s2, mem, SEG_LEN, &err));
    atomic_store(&h->band_cursor, cursor);
    CHECK_OK(dmxp_segment_attach_memory(&s2, mem, SEG_LEN, &err));
    CHECK_OK(dmxp_segment_validate_all(&s2, &err));
}

static void entry_checks(void) {
    dmxp_channel_entry *e = &lay->channels[1];
    uint64_t band = atomic_load(&e->band_offset);
    uint64_t band0 = atomic_load(&lay->channels[0].band_offset);
    dmxp_channel ch;
    dmxp_error err;

    /* #1 state */
    atomic_store(&e->state, 7);
    expect_open(1, DMXP_E_UNKNOWN_CHANNEL_STATE, "state", 7);
    atomic_store(&e->channel_id, 99); /* state is checked first */
    expect_open(1, DMXP_E_UNKNOWN_CHANNEL_STATE, "state", 7);
    atomic_store(&e->state, DMXP_STATE_READY);
    /* #3 channel_id */
    expect_open(1, DMXP_E_CHANNEL_ID_MISMATCH, "channel_id", 99);
    atomic_store(&e->channel_id, 1);
    /* #2 capacity 0 */
    atomic_store(&e->capacity, 0);
    expect_open(1, DMXP_E_CAPACITY_ZERO, "capacity", 0);
    atomic_store(&e->state, DMXP_STATE_CREATING);
    expect_open(1, DMXP_E_BEING_CREATED, NULL, 0);
    atomic_store(&e->state, DMXP_STATE_EMPTY);
    expect_open(1, DMXP_E_NOT_FOUND, NULL, 0);
    /* #4 power of two, #5 minimum, #5b maximum */
    atomic_store(&e->capacity, 6);
    expect_open(1, DMXP_E_CAPACITY_NOT_POWER_OF_TWO, "capacity", 6);
    atomic_store(&e->capacity, 1);
    expect_open(1, DMXP_E_CAPACITY_TOO_SMALL, "capacity", 1);
    atomic_store(&e->capacity, UINT64_C(1) << 33);
    expect_open(1, DMXP_E_CAPACITY_TOO_LARGE, "capacity", UINT64_C(1) << 33);
    /* A created entry with state EMPTY (an older client) is valid. */
    atomic_store(&e->capacity, 8);
    CHECK_OK(dmxp_channel_open(&seg, 1, &ch, &err));
    atomic_store(&e->state, DMXP_STATE_READY);
    /* #6 band alignment, #7 header overlap, #8 inside the segment */
    atomic_store(&e->band_offset, band + 8);
    expect_open(1, DMXP_E_BAND_MISALIGNED, "band_offset", band + 8);
    atomic_store(&e->band_offset, 64);
    expect_open(1, DMXP_E_BAND_OVERLAPS_HEADER, "band_offset", 64);
    atomic_store(&e->band_offset, SEG_LEN - 7 * DMXP_SLOT_SIZE / 64 * 64);
    expect_open(1, DMXP_E_BAND_OUTSIDE_SEGMENT, "band_offset",
                SEG_LEN - 7 * DMXP_SLOT_SIZE / 64 * 64);
    CHECK_STATUS(dmxp_channel_open(&seg, 1, &ch, &err), DMXP_E_BAND_OUTSIDE_SEGMENT);
    CHECK_EQ_U64(err.value2, 8 * DMXP_SLOT_SIZE);
    CHECK_EQ_U64(err.value3, SEG_LEN);
    atomic_store(&e->band_offset, UINT64_MAX - 63); /* would overflow */
    expect_open(1, DMXP_E_BAND_OUTSIDE_SEGMENT, "band_offset", UINT64_MAX - 63);
    atomic_store(&e->band_offset, band);
    atomic_store(&e->capacity, UINT64_C(1) << 32); /* valid capacity, band far too long */
    expect_open(1, DMXP_E_BAND_OUTSIDE_SEGMENT, "band_offset", band);
    atomic_store(&e->capacity, 8);
    /* #9 overlap with channel 0's band (reported for the channel opened, naming the other) */
    atomic_store(&e->band_offset, band0 + 64);
    expect_open(1, DMXP_E_BANDS_OVERLAP, "band_offset", 0);
    expect_open(0, DMXP_E_BANDS_OVERLAP, "band_offset", 1);
    /* A corrupt neighbour does not stop a healthy channel from opening. */
    atomic_store(&e->band_offset, band);
    atomic_store(&e->capacity, 6);
    CHECK_OK(dmxp_channel_open(&seg, 0, &ch, &err));
    atomic_store(&e->capacity, 8);
    CHECK_OK(dmxp_channel_open(&seg, 1, &ch, &err));
    CHECK_OK(dmxp_segment_validate_all(&seg, &err));
}

static void api_errors(void) {
    dmxp_channel ch, ch0;
    dmxp_error err;
    int created = 7;
    CHECK_STATUS(dmxp_channel_open(&seg, 256, &ch, &err), DMXP_E_INVALID_CHANNEL_ID);
    CHECK_EQ_U64(err.found, 256);
    CHECK_STATUS(dmxp_channel_open_or_create(&seg, 300, 4, 0, &ch, NULL, &err),
                 DMXP_E_INVALID_CHANNEL_ID);
    const uint64_t bad_caps[] = {0, 1, 3, 12, UINT64_C(1) << 33};
    for (size_t i = 0; i < sizeof bad_caps / sizeof bad_caps[0]; i++) {
        CHECK_STATUS(dmxp_channel_open_or_create(&seg, 5, bad_caps[i], 0, &ch, NULL, &err),
                     DMXP_E_INVALID_CAPACITY);
        CHECK_EQ_U64(err.found, bad_caps[i]);
    }
    /* Missing channel */
    CHECK_STATUS(dmxp_channel_open(&seg, 5, &ch, &err), DMXP_E_NOT_FOUND);
    CHECK_STATUS(dmxp_channel_open_wait(&seg, 5, 20, &ch, &err), DMXP_E_NOT_FOUND);
    /* An existing channel is opened with its own capacity; strict create refuses it. */
    CHECK_OK(dmxp_channel_open_or_create(&seg, 0, 64, 0, &ch0, &created, &err));
    CHECK_EQ_U64(created, 0);
    CHECK_EQ_U64(ch0.capacity, 4);
    CHECK_STATUS(dmxp_channel_create(&seg, 0, 4, &ch, &err), DMXP_E_CHANNEL_EXISTS);
    CHECK_EQ_U64(err.found, 4);
    CHECK_EQ_U64(err.channel, 0);
    /* Out of space: the id is given back (state EMPTY again) */
    CHECK_STATUS(dmxp_channel_open_or_create(&seg, 5, 1024, 0, &ch, NULL, &err),
                 DMXP_E_OUT_OF_SPACE);
    CHECK_EQ_U64(err.found, 1024 * DMXP_SLOT_SIZE);
    CHECK_EQ_U64(err.value2, dmxp_segment_free_space(&seg));
    CHECK_EQ_U64(atomic_load(&lay->channels[5].state), DMXP_STATE_EMPTY);
    /* Another process holding the claim: BEING_CREATED after the timeout. */
    atomic_store(&lay->channels[6].state, DMXP_STATE_CREATING);
    CHECK_STATUS(dmxp_channel_open_or_create(&seg, 6, 4, 20, &ch, NULL, &err),
                 DMXP_E_BEING_CREATED);
    CHECK_EQ_U64(err.channel, 6);
    atomic_store(&lay->channels[6].state, DMXP_STATE_EMPTY);
    /* Reformatting a live segment is refused. */
    dmxp_segment s2;
    CHECK_STATUS(dmxp_segment_format_memory(&s2, mem, SEG_LEN, 1, &err),
                 DMXP_E_ALREADY_FORMATTED);

    /* Too large, reserved flags, 960 bytes exactly */
    unsigned char big[DMXP_MSG_INLINE + 1], out[DMXP_MSG_INLINE];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (unsigned char)(i * 13 + 1);
    CHECK_STATUS(dmxp_try_send(&ch0, big, DMXP_MSG_INLINE + 1, NULL, NULL), DMXP_E_TOO_LARGE);
    dmxp_send_opts bad_flags = {.flags = DMXP_FLAG_SKIP};
    CHECK_STATUS(dmxp_try_send(&ch0, big, 8, &bad_flags, NULL), DMXP_E_RESERVED_FLAGS);
    const void *datas[2] = {big, big};
    size_t lens[2] = {10, DMXP_MSG_INLINE + 1};
    size_t sent = 9;
    CHECK_STATUS(dmxp_try_send_batch(&ch0, datas, lens, 2, NULL, &sent, NULL), DMXP_E_TOO_LARGE);
    CHECK_EQ_U64(sent, 0);
    CHECK(!dmxp_has_message(&ch0)); /* nothing of the batch was sent */
    CHECK_OK(dmxp_try_send(&ch0, big, DMXP_MSG_INLINE, NULL, NULL));
    /* A buffer too small consumes nothing. */
    dmxp_meta meta;
    size_t len;
    CHECK_STATUS(dmxp_try_recv(&ch0, out, 100, &meta, &len), DMXP_E_BUFFER_TOO_SMALL);
    CHECK_EQ_U64(meta.payload_len, DMXP_MSG_INLINE);
    CHECK(dmxp_has_message(&ch0));
    CHECK_OK(dmxp_try_recv(&ch0, out, sizeof out, &meta, &len));
    CHECK_EQ_U64(len, DMXP_MSG_INLINE);
    CHECK(memcmp(out, big, DMXP_MSG_INLINE) == 0);
    /* Every length 0..960 round-trips, and the last word is zero-padded. */
    for (size_t n = 0; n <= DMXP_MSG_INLINE; n += (n < 40 ? 1 : 37)) {
        uint64_t id;
        CHECK_OK(dmxp_try_send(&ch0, big + 1, n, NULL, &id));
        dmxp_slot *slot = &ch0.slots[id & ch0.mask];
        if (n % 8) {
            uint64_t w = atomic_load(&slot->payload[n / 8]);
            CHECK_EQ_U64(w >> (8 * (n % 8)), 0);
        }
        CHECK_OK(dmxp_try_recv(&ch0, out, sizeof out, &meta, &len));
        CHECK_EQ_U64(len, n);
        CHECK(n == 0 || memcmp(out, big + 1, n) == 0);
    }
    CHECK_STATUS(dmxp_try_recv(&ch0, out, sizeof out, &meta, &len), DMXP_E_EMPTY);
}

/* Publishes position-by-position as a foreign producer would, with arbitrary meta. */
static uint64_t peer_publish(const dmxp_channel *ch, uint16_t flags, uint32_t payload_len) {
    uint64_t t = atomic_load(&ch->entry->tail);
    dmxp_slot *s = &ch->slots[t & ch->mask];
    CHECK_EQ_U64(atomic_load(&s->sequence), t);
    CHECK(atomic_compare_exchange_strong(&ch->entry->tail, &t, t + 1));
    atomic_store(&s->meta.message_id, t);
    atomic_store(&s->meta.flags, flags);
    atomic_store(&s->meta.payload_len, payload_len);
    atomic_store(&s->sequence, t + 1);
    return t;
}

typedef struct {
    int n;
    uint64_t ids[16];
} id_log;

static void log_id(void *ctx, const dmxp_meta *meta, const void *payload, size_t len) {
    id_log *log = ctx;
    (void)payload;
    (void)len;
    CHECK(log->n < 16);
    log->ids[log->n++] = meta->message_id;
}

static void markers_and_bad_slots(void) {
    dmxp_channel ch;
    dmxp_error err;
    CHECK_OK(dmxp_channel_open(&seg, 1, &ch, &err)); /* capacity 8 */
    unsigned char out[DMXP_MSG_INLINE];
    dmxp_meta meta;
    size_t len;
    uint64_t a, b;

    /* SKIP is passed over silently; LOST and a corrupt length are reported, and freed. */
    CHECK_OK(dmxp_try_send(&ch, "one", 3, NULL, &a));
    uint64_t skip = peer_publish(&ch, DMXP_FLAG_SKIP, 0);
    uint64_t lost = peer_publish(&ch, DMXP_FLAG_LOST, 0);
    uint64_t bad = peer_publish(&ch, 0, 5000);
    uint64_t skip2 = peer_publish(&ch, DMXP_FLAG_SKIP | DMXP_FLAG_LOST, 7777); /* SKIP first */
    CHECK_OK(dmxp_try_send(&ch, "two", 3, NULL, &b));
    CHECK_OK(dmxp_try_recv(&ch, out, sizeof out, &meta, &len));
    CHECK_EQ_U64(meta.message_id, a);
    CHECK_STATUS(dmxp_try_recv(&ch, out, sizeof out, &meta, &len), DMXP_E_LOST);
    CHECK_EQ_U64(meta.message_id, lost);
    CHECK_EQ_U64(atomic_load(&ch.slots[skip & ch.mask].sequence), skip + ch.capacity);
    CHECK_EQ_U64(atomic_load(&ch.slots[lost & ch.mask].sequence), lost + ch.capacity);
    CHECK_STATUS(dmxp_try_recv(&ch, out, sizeof out, &meta, &len), DMXP_E_CORRUPT_MESSAGE);
    CHECK_EQ_U64(meta.message_id, bad);
    CHECK_EQ_U64(meta.payload_len, 5000);
    CHECK_EQ_U64(atomic_load(&ch.slots[bad & ch.mask].sequence), bad + ch.capacity);
    CHECK_OK(dmxp_try_recv(&ch, out, sizeof out, &meta, &len));
    CHECK_EQ_U64(meta.message_id, b); /* ids increase with a gap at the skipped positions */
    CHECK(b > skip2);
    CHECK_EQ_U64(atomic_load(&ch.slots[skip2 & ch.mask].sequence), skip2 + ch.capacity);
    CHECK_STATUS(dmxp_try_recv(&ch, out, sizeof out, &meta, &len), DMXP_E_EMPTY);
    /* A SKIP-only tail reads as empty, and is consumed. */
    uint64_t lone = peer_publish(&ch, DMXP_FLAG_SKIP, 0);
    CHECK_STATUS(dmxp_try_recv(&ch, out, sizeof out, &meta, &len), DMXP_E_EMPTY);
    CHECK_EQ_U64(atomic_load(&ch.slots[lone & ch.mask].sequence), lone + ch.capacity);

    /* The same through the batch path: dropped counts LOST + corrupt, not SKIP. */
    CHECK_OK(dmxp_try_send(&ch, "x", 1, NULL, &a));
    peer_publish(&ch, DMXP_FLAG_SKIP, 0);
    peer_publish(&ch, DMXP_FLAG_LOST, 0);
    peer_publish(&ch, 0, 961);
    CHECK_OK(dmxp_try_send(&ch, "y", 1, NULL, &b));
    id_log log = {0};
    size_t delivered = 0, dropped = 0;
    CHECK_OK(dmxp_try_recv_batch(&ch, 16, log_id, &log, &delivered, &dropped));
    CHECK_EQ_U64(delivered, 2);
    CHECK_EQ_U64(dropped, 2);
    CHECK_EQ_U64(log.ids[0], a);
    CHECK_EQ_U64(log.ids[1], b);
    for (uint64_t p = a; p <= b; p++)
        CHECK_EQ_U64(atomic_load(&ch.slots[p & ch.mask].sequence), p + ch.capacity);
    /* Every slot is free again: the ring takes exactly `capacity` more. */
    for (uint64_t k = 0; k < ch.capacity; k++) CHECK_OK(dmxp_try_send(&ch, "z", 1, NULL, NULL));
    CHECK_STATUS(dmxp_try_send(&ch, "z", 1, NULL, NULL), DMXP_E_FULL);
    CHECK_OK(dmxp_try_recv_batch(&ch, 100, NULL, NULL, &delivered, &dropped));
    CHECK_EQ_U64(delivered, ch.capacity);
}

static void hostile_cursors(void) {
    dmxp_channel ch;
    dmxp_error err;
    CHECK_OK(dmxp_channel_open(&seg, 1, &ch, &err));
    unsigned char out[DMXP_MSG_INLINE];
    uint64_t tail = atomic_load(&ch.entry->tail), head = atomic_load(&ch.entry->head);
    /* A cursor far behind every sequence: each retry sees "taken by someone else", so the
     * bounded retries run out and the call returns BUSY (never a hang, never an index outside
     * the band). */
    atomic_store(&ch.entry->tail, tail - 1000 * ch.capacity - 3);
    atomic_store(&ch.entry->head, head - 1000 * ch.capacity - 5);
    CHECK_STATUS(dmxp_try_send(&ch, "x", 1, NULL, NULL), DMXP_E_BUSY);
    CHECK_STATUS(dmxp_try_recv(&ch, out, sizeof out, NULL, NULL), DMXP_E_BUSY);
    CHECK_STATUS(dmxp_try_recv_batch(&ch, 4, NULL, NULL, NULL, NULL), DMXP_E_BUSY);
    /* A cursor far ahead: the ring looks full / empty. */
    atomic_store(&ch.entry->tail, tail + 3 * ch.capacity);
    atomic_store(&ch.entry->head, head + 5 * ch.capacity + 1);
    CHECK_STATUS(dmxp_try_send(&ch, "x", 1, NULL, NULL), DMXP_E_FULL);
    CHECK_STATUS(dmxp_try_recv(&ch, out, sizeof out, NULL, NULL), DMXP_E_EMPTY);
    CHECK_STATUS(dmxp_recv_timeout(&ch, out, sizeof out, NULL, NULL, 1000000), DMXP_E_TIMEOUT);
    /* A garbage sequence in a slot */
    atomic_store(&ch.entry->tail, tail);
    atomic_store(&ch.entry->head, head);
    uint64_t saved = atomic_load(&ch.slots[tail & ch.mask].sequence);
    atomic_store(&ch.slots[tail & ch.mask].sequence, UINT64_C(0xdeadbeefdeadbeef));
    dmxp_status s = dmxp_try_send(&ch, "x", 1, NULL, NULL);
    CHECK(s == DMXP_E_FULL || s == DMXP_E_BUSY);
    CHECK_STATUS(dmxp_send_timeout(&ch, "x", 1, NULL, NULL, 1000000), s == DMXP_E_FULL
                                                                          ? DMXP_E_TIMEOUT
                                                                          : DMXP_E_BUSY);
    atomic_store(&ch.slots[tail & ch.mask].sequence, saved);
    CHECK_OK(dmxp_try_send(&ch, "ok", 2, NULL, NULL));
    CHECK_OK(dmxp_try_recv(&ch, out, sizeof out, NULL, NULL));
}

/* band_cursor == 0 (a segment from a client without the band allocator) is adopted. */
static void adopt_band_cursor(void) {
    dmxp_error err;
    dmxp_channel c0, c1, c2;
    CHECK_OK(dmxp_channel_open(&seg, 0, &c0, &err));
    CHECK_OK(dmxp_channel_open(&seg, 1, &c1, &err));
    uint64_t end = c1.band_offset + c1.capacity * DMXP_SLOT_SIZE;
    CHECK_EQ_U64(atomic_load(&lay->header.band_cursor), end);
    atomic_store(&lay->header.band_cursor, 0);
    int created = 0;
    CHECK_OK(dmxp_channel_open_or_create(&seg, 2, 2, 0, &c2, &created, &err));
    CHECK_EQ_U64(created, 1);
    CHECK_EQ_U64(c2.band_offset, end);
    CHECK_EQ_U64(atomic_load(&lay->header.band_cursor), end + 2 * DMXP_SLOT_SIZE);
    CHECK_EQ_U64(dmxp_segment_channel_count(&seg), 3);
    CHECK_EQ_U64(atomic_load(&lay->channels[2].state), DMXP_STATE_READY);
    CHECK_EQ_U64(atomic_load(&lay->channels[2].creator_pid), (uint32_t)getpid());
    for (uint64_t k = 0; k < 2; k++) CHECK_EQ_U64(atomic_load(&c2.slots[k].sequence), k);
    CHECK_OK(dmxp_segment_validate_all(&seg, &err));
    /* A corrupt cursor stops creation with the field named. */
    atomic_store(&lay->header.band_cursor, 100);
    CHECK_STATUS(dmxp_channel_open_or_create(&seg, 3, 2, 0, &c2, NULL, &err),
                 DMXP_E_BAND_CURSOR_OUT_OF_RANGE);
    CHECK(strcmp(err.field, "band_cursor") == 0);
    CHECK_EQ_U64(atomic_load(&lay->channels[3].state), DMXP_STATE_EMPTY);
}

/* §11.1: peer_table_offset range at attach, overlap with a band at channel open. */
static void peer_table_checks(void) {
    dmxp_header *h = &lay->header;
    dmxp_error err;
    uint64_t saved = atomic_load(&h->peer_table_offset);
    atomic_store(&h->band_cursor, DMXP_HEADER_SIZE + 14 * DMXP_SLOT_SIZE); /* after channel 2 */
    atomic_store(&h->peer_table_offset, DMXP_HEADER_SIZE + 8 * DMXP_SLOT_SIZE + 8);
    expect_attach(DMXP_E_PEER_TABLE_OUT_OF_RANGE, "peer_table_offset",
                  DMXP_HEADER_SIZE + 8 * DMXP_SLOT_SIZE + 8); /* not 64-aligned */
    atomic_store(&h->peer_table_offset, DMXP_HEADER_SIZE - 64);
    expect_attach(DMXP_E_PEER_TABLE_OUT_OF_RANGE, "peer_table_offset", DMXP_HEADER_SIZE - 64);
    atomic_store(&h->peer_table_offset, SEG_LEN - DMXP_PEER_TABLE_SIZE + 64);
    expect_attach(DMXP_E_PEER_TABLE_OUT_OF_RANGE, "peer_table_offset",
                  SEG_LEN - DMXP_PEER_TABLE_SIZE + 64); /* runs past the end */
    atomic_store(&h->peer_table_offset, UINT64_MAX - 63); /* overflows */
    expect_attach(DMXP_E_PEER_TABLE_OUT_OF_RANGE, "peer_table_offset", UINT64_MAX - 63);
    atomic_store(&h->peer_table_offset, SEG_LEN - DMXP_PEER_TABLE_SIZE); /* last place: ok */
    dmxp_segment s2;
    CHECK_OK(dmxp_segment_attach_memory(&s2, mem, SEG_LEN, &err));
    /* A table on channel 1's band (64-aligned, in range): refused when the channel is opened
     * and by validate_all. */
    atomic_store(&h->peer_table_offset, DMXP_HEADER_SIZE + 4 * DMXP_SLOT_SIZE + 64 * 3);
    CHECK_OK(dmxp_segment_attach_memory(&s2, mem, SEG_LEN, &err)); /* range is fine */
    expect_open(1, DMXP_E_PEER_TABLE_OVERLAPS_BAND, "peer_table_offset",
                DMXP_HEADER_SIZE + 4 * DMXP_SLOT_SIZE + 64 * 3);
    /* Registration and recovery refuse it too, and the handle keeps working. */
    dmxp_channel c0;
    CHECK_OK(dmxp_channel_open(&seg, 0, &c0, &err));
    CHECK_STATUS(dmxp_channel_register(&c0, DMXP_ROLE_PRODUCER, &err),
                 DMXP_E_PEER_TABLE_OVERLAPS_BAND);
    CHECK_EQ_U64(err.channel, 1);
    CHECK_EQ_U64(dmxp_channel_registered(&c0), 0);
    CHECK_STATUS(dmxp_channel_recover(&c0, NULL), DMXP_E_PEER_TABLE_OVERLAPS_BAND);
    atomic_store(&h->peer_table_offset, saved);
    CHECK_OK(dmxp_segment_validate_all(&seg, &err));
}

/* §4.1 #8 and #9 with the header's peer_records (§11.1): 0 or 256..16384, else corrupt; the
 * table's range and its overlap with the bands checked with n * 64 bytes, n read once at
 * attach and kept by the handle whatever the field says later. */
static void peer_records_checks(void) {
    dmxp_header *h = &lay->header;
    dmxp_segment s2;
    dmxp_error err;
    CHECK_EQ_U64(atomic_load(&h->peer_records), 0); /* format_memory: the default table */
    CHECK_EQ_U64(seg.peer_records, DMXP_PEER_RECORDS);
    CHECK_EQ_U64(dmxp_segment_peer_records(&seg), DMXP_PEER_RECORDS);
    const uint32_t bad[] = {1, 100, 255, 16385, 20000, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        atomic_store(&h->peer_records, bad[i]);
        expect_attach(DMXP_E_PEER_RECORDS_OUT_OF_RANGE, "peer_records", bad[i]);
    }
    char text[256];
    atomic_store(&h->peer_records, 100);
    CHECK_STATUS(dmxp_segment_attach_memory(&s2, mem, SEG_LEN, &err),
                 DMXP_E_PEER_RECORDS_OUT_OF_RANGE);
    CHECK(dmxp_error_format(&err, text, sizeof text) > 0);
    CHECK(strstr(text, "peer_records 100 is neither 0 nor between 256 and 16384") != NULL);
    /* Order: #7 before #8, #8 before #9. */
    uint64_t cursor = atomic_load(&h->band_cursor);
    atomic_store(&h->band_cursor, cursor + 8);
    expect_attach(DMXP_E_BAND_CURSOR_OUT_OF_RANGE, "band_cursor", cursor + 8);
    atomic_store(&h->band_cursor, cursor);
    atomic_store(&h->peer_table_offset, 8);
    expect_attach(DMXP_E_PEER_RECORDS_OUT_OF_RANGE, "peer_records", 100);
    atomic_store(&h->peer_table_offset, 0);
    const uint32_t good[] = {0, 256, 300, 1024, 16384};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        atomic_store(&h->peer_records, good[i]);
        CHECK_OK(dmxp_segment_attach_memory(&s2, mem, SEG_LEN, &err));
        CHECK_EQ_U64(dmxp_segment_peer_records(&s2), good[i] ? good[i] : DMXP_PEER_RECORDS);
    }
    /* #9 with n * 64: a table at the last place for 256 records runs past the segment with
     * 1024 (value3 = the table's bytes), and fits at its own last place. */
    atomic_store(&h->peer_records, 1024);
    atomic_store(&h->peer_table_offset, SEG_LEN - DMXP_PEER_TABLE_SIZE);
    expect_attach(DMXP_E_PEER_TABLE_OUT_OF_RANGE, "peer_table_offset",
                  SEG_LEN - DMXP_PEER_TABLE_SIZE);
    CHECK_STATUS(dmxp_segment_attach_memory(&s2, mem, SEG_LEN, &err),
                 DMXP_E_PEER_TABLE_OUT_OF_RANGE);
    CHECK_EQ_U64(err.value2, SEG_LEN);
    CHECK_EQ_U64(err.value3, 1024 * 64);
    CHECK(dmxp_error_format(&err, text, sizeof text) > 0 && strstr(text, "65536-byte") != NULL);
    atomic_store(&h->peer_table_offset, SEG_LEN - 1024 * 64);
    CHECK_OK(dmxp_segment_attach_memory(&s2, mem, SEG_LEN, &err));
    atomic_store(&h->peer_records, 16384); /* 1 MiB: never fits in this 1 MiB segment */
    atomic_store(&h->peer_table_offset, DMXP_HEADER_SIZE + 16 * DMXP_SLOT_SIZE);
    expect_attach(DMXP_E_PEER_TABLE_OUT_OF_RANGE, "peer_table_offset",
                  DMXP_HEADER_SIZE + 16 * DMXP_SLOT_SIZE);
    atomic_store(&h->peer_table_offset, 0);
    CHECK_OK(dmxp_segment_attach_memory(&s2, mem, SEG_LEN, &err)); /* no table yet: fine */
    atomic_store(&h->peer_records, 0);

    /* The overlap with a band uses n * 64 too, and each handle's own n. A segment of 1024
     * records whose table (set by hand) starts at HEADER_SIZE and channel 1's band 16 KiB
     * later: inside the 64 KiB table, just past a 256-record one. */
    unsigned char *m = test_segment_memory(SEG_LEN);
    dmxp_segment big, small;
    CHECK_OK(dmxp_segment_format_memory_ex(&big, m, SEG_LEN, 1, 1024, &err));
    dmxp_header *mh = (dmxp_header *)(void *)m;
    CHECK_EQ_U64(atomic_load(&mh->peer_records), 1024);
    CHECK_EQ_U64(dmxp_segment_peer_records(&big), 1024);
    atomic_store(&mh->band_cursor, DMXP_HEADER_SIZE + DMXP_PEER_TABLE_SIZE);
    dmxp_channel c;
    CHECK_OK(dmxp_channel_create(&big, 1, 2, &c, &err));
    CHECK_EQ_U64(c.band_offset, DMXP_HEADER_SIZE + DMXP_PEER_TABLE_SIZE);
    atomic_store(&mh->peer_table_offset, DMXP_HEADER_SIZE);
    CHECK_OK(dmxp_segment_attach_memory(&big, m, SEG_LEN, &err)); /* its range is fine */
    CHECK_STATUS(dmxp_channel_open(&big, 1, &c, &err), DMXP_E_PEER_TABLE_OVERLAPS_BAND);
    CHECK_EQ_U64(err.channel, 1);
    CHECK_STATUS(dmxp_segment_validate_all(&big, &err), DMXP_E_PEER_TABLE_OVERLAPS_BAND);
    /* Rewritten to 0 after that attach: the handle keeps its 1024 (still refused), while a
     * handle attached now has 256 records, which end where the band starts. */
    atomic_store(&mh->peer_records, 0);
    CHECK_STATUS(dmxp_channel_open(&big, 1, &c, &err), DMXP_E_PEER_TABLE_OVERLAPS_BAND);
    CHECK_OK(dmxp_segment_attach_memory(&small, m, SEG_LEN, &err));
    CHECK_EQ_U64(dmxp_segment_peer_records(&small), DMXP_PEER_RECORDS);
    CHECK_OK(dmxp_channel_open(&small, 1, &c, &err));
    CHECK_OK(dmxp_segment_validate_all(&small, &err));
    /* ... and rewritten to 16384 after that: `small` keeps 256 and still opens it. */
    atomic_store(&mh->peer_records, 16384);
    CHECK_OK(dmxp_channel_open(&small, 1, &c, &err));
    CHECK_EQ_U64(c.peer_records, DMXP_PEER_RECORDS);
    CHECK_STATUS(dmxp_segment_attach_memory(&s2, m, SEG_LEN, &err),
                 DMXP_E_PEER_TABLE_OUT_OF_RANGE);
    free(m);
}

/* Choosing the peer table's size at creation: format_memory_ex, and .peer_records of the
 * dmxp_trust the _ex calls take. 0 or 256..16384, else DMXP_E_INVALID_ARGUMENT (field
 * "peer_records", found = the value) before anything is created or written. An existing
 * segment keeps its creator's choice. */
static void peer_records_creation(void) {
    dmxp_error err;
    dmxp_segment s;
    char text[256];
    unsigned char *m = test_segment_memory(SEG_LEN);
    const uint32_t bad[] = {1, 100, 255, 16385, 20000, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        CHECK_STATUS(dmxp_segment_format_memory_ex(&s, m, SEG_LEN, 1, bad[i], &err),
                     DMXP_E_INVALID_ARGUMENT);
        CHECK(err.field && strcmp(err.field, "peer_records") == 0);
        CHECK_EQ_U64(err.found, bad[i]);
        CHECK_EQ_U64(atomic_load(&((dmxp_header *)(void *)m)->magic), 0); /* nothing written */
        CHECK_EQ_U64(atomic_load(&((dmxp_header *)(void *)m)->creator_pid), 0);
    }
    CHECK_STATUS(dmxp_segment_format_memory_ex(&s, m, SEG_LEN, 1, 100, &err),
                 DMXP_E_INVALID_ARGUMENT);
    CHECK(dmxp_error_format(&err, text, sizeof text) > 0);
    CHECK(strstr(text, "peer table of 100 records requested") != NULL);
    const uint32_t good[] = {256, 300, 16384};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        memset(m, 0, SEG_LEN);
        CHECK_OK(dmxp_segment_format_memory_ex(&s, m, SEG_LEN, 1, good[i], &err));
        CHECK_EQ_U64(atomic_load(&((dmxp_header *)(void *)m)->peer_records), good[i]);
        CHECK_EQ_U64(dmxp_segment_peer_records(&s), good[i]);
        for (size_t k = 0; k < 8; k++)
            CHECK_EQ_U64(atomic_load(&((dmxp_header *)(void *)m)->zero[k]), 0);
        CHECK_EQ_U64(atomic_load(&((dmxp_header *)(void *)m)->zero32), 0);
    }
    free(m);

    /* shm: create_shm_ex and open_or_create_shm_ex refuse 100 before creating anything. */
    char name[64], path[96];
    snprintf(name, sizeof name, "/dmxp_test_records_%ld", (long)getpid());
    snprintf(path, sizeof path, "/tmp/dmxp_test_records_%ld", (long)getpid());
    shm_unlink(name);
    unlink(path);
    dmxp_trust t = DMXP_TRUST_DEFAULT;
    t.peer_records = 100;
    CHECK_STATUS(dmxp_segment_create_shm_ex(&s, name, SEG_LEN, &t, &err),
                 DMXP_E_INVALID_ARGUMENT);
    CHECK(strcmp(err.field, "peer_records") == 0);
    CHECK_STATUS(dmxp_segment_open_or_create_shm_ex(&s, name, SEG_LEN, 0, &t, NULL, &err),
                 DMXP_E_INVALID_ARGUMENT);
    CHECK_STATUS(dmxp_segment_create_path_ex(&s, path, SEG_LEN, &t, &err),
                 DMXP_E_INVALID_ARGUMENT);
    CHECK_STATUS(dmxp_segment_open_or_create_path_ex(&s, path, SEG_LEN, 0, &t, NULL, &err),
                 DMXP_E_INVALID_ARGUMENT);
    CHECK_STATUS(dmxp_segment_open_shm(&s, name, 0, &err), DMXP_E_NO_SEGMENT);
    CHECK_STATUS(dmxp_segment_open_path(&s, path, 0, &err), DMXP_E_NO_SEGMENT);
    /* 1024: the header says so, and every attacher reads it. */
    t.peer_records = 1024;
    CHECK_OK(dmxp_segment_create_shm_ex(&s, name, SEG_LEN, &t, &err));
    CHECK_EQ_U64(atomic_load(&dmxp__hdr(&s)->peer_records), 1024);
    CHECK_EQ_U64(dmxp_segment_peer_records(&s), 1024);
    struct stat st;
    char file[96];
    snprintf(file, sizeof file, "/dev/shm%s", name);
    CHECK(stat(file, &st) == 0 && (st.st_mode & 0777) == 0600);
    dmxp_segment_close(&s);
    CHECK_STATUS(dmxp_segment_create_shm_ex(&s, name, SEG_LEN, &t, &err), DMXP_E_SEGMENT_EXISTS);
    CHECK_OK(dmxp_segment_open_shm(&s, name, 0, &err));
    CHECK_EQ_U64(dmxp_segment_peer_records(&s), 1024);
    dmxp_segment_close(&s);
    /* An existing segment keeps its creator's choice, whatever the attacher asks for. */
    int created = 7;
    t.peer_records = 2048;
    CHECK_OK(dmxp_segment_open_or_create_shm_ex(&s, name, SEG_LEN, 0, &t, &created, &err));
    CHECK_EQ_U64(created, 0);
    CHECK_EQ_U64(dmxp_segment_peer_records(&s), 1024);
    dmxp_segment_close(&s);
    CHECK_OK(dmxp_shm_unlink(name, &err));
    CHECK_OK(dmxp_segment_open_or_create_shm_ex(&s, name, SEG_LEN, 0, &t, &created, &err));
    CHECK_EQ_U64(created, 1);
    CHECK_EQ_U64(dmxp_segment_peer_records(&s), 2048);
    dmxp_segment_close(&s);
    CHECK_OK(dmxp_shm_unlink(name, &err));
    /* The calls without a choice make the default table. */
    CHECK_OK(dmxp_segment_create_shm(&s, name, SEG_LEN, 0600, &err));
    CHECK_EQ_U64(atomic_load(&dmxp__hdr(&s)->peer_records), 0);
    CHECK_EQ_U64(dmxp_segment_peer_records(&s), DMXP_PEER_RECORDS);
    dmxp_segment_close(&s);
    CHECK_OK(dmxp_shm_unlink(name, &err));
    /* Files: the same through create_path_ex and open_or_create_path_ex. */
    t.peer_records = 512;
    CHECK_OK(dmxp_segment_create_path_ex(&s, path, SEG_LEN, &t, &err));
    CHECK_EQ_U64(atomic_load(&dmxp__hdr(&s)->peer_records), 512);
    dmxp_segment_close(&s);
    CHECK_OK(dmxp_segment_open_path(&s, path, 0, &err));
    CHECK_EQ_U64(dmxp_segment_peer_records(&s), 512);
    dmxp_segment_close(&s);
    CHECK(unlink(path) == 0);
    t.peer_records = 300;
    CHECK_OK(dmxp_segment_open_or_create_path_ex(&s, path, SEG_LEN, 0, &t, &created, &err));
    CHECK_EQ_U64(created, 1);
    CHECK_EQ_U64(dmxp_segment_peer_records(&s), 300);
    dmxp_segment_close(&s);
    CHECK(unlink(path) == 0);
}

/* §11.1 / §11.3: the table is installed by the first registration, records are taken and
 * freed, a full table or a full segment leaves the handle working without protection. */
static void peer_registration(void) {
    enum { LEN = DMXP_HEADER_SIZE + 4 * DMXP_SLOT_SIZE + DMXP_PEER_TABLE_SIZE };
    unsigned char *m = test_segment_memory(LEN);
    dmxp_segment s;
    dmxp_error err;
    CHECK_OK(dmxp_segment_format_memory(&s, m, LEN, 1, &err));
    dmxp_header *h = (dmxp_header *)(void *)m;
    dmxp_channel a, b;
    CHECK_OK(dmxp_channel_create(&s, 5, 4, &a, &err));
    CHECK_EQ_U64(atomic_load(&h->peer_table_offset), 0); /* lazy */
    CHECK_STATUS(dmxp_channel_register(&a, 0, &err), DMXP_E_INVALID_ARGUMENT);
    CHECK_STATUS(dmxp_channel_register(&a, 4, &err), DMXP_E_INVALID_ARGUMENT);
    CHECK_OK(dmxp_channel_register(&a, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER, &err));
    uint64_t table = DMXP_HEADER_SIZE + 4 * DMXP_SLOT_SIZE;
    CHECK_EQ_U64(atomic_load(&h->peer_table_offset), table); /* carved like a band */
    CHECK_EQ_U64(atomic_load(&h->band_cursor), table + DMXP_PEER_TABLE_SIZE);
    CHECK_EQ_U64(dmxp_channel_registered(&a), DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER);
    dmxp_peer_record *r = (dmxp_peer_record *)(void *)(m + table);
    CHECK(a.send_peer == &r[0] && a.recv_peer == &r[1]);
    CHECK_EQ_U64(atomic_load(&r[0].pid), (uint32_t)getpid());
    CHECK_EQ_U64(atomic_load(&r[0].runtime), DMXP_RUNTIME_C);
    CHECK_EQ_U64(atomic_load(&r[0].role), DMXP_ROLE_PRODUCER);
    CHECK_EQ_U64(atomic_load(&r[1].role), DMXP_ROLE_CONSUMER);
    CHECK_EQ_U64(atomic_load(&r[0].channel_id), 5);
    CHECK_EQ_U64(atomic_load(&r[0].start_time), dmxp_process_start_time((uint32_t)getpid()));
    CHECK(atomic_load(&r[0].start_time) != 0);
    /* Registering again for a role it has is a no-op. */
    CHECK_OK(dmxp_channel_register(&a, DMXP_ROLE_PRODUCER, &err));
    CHECK(a.send_peer == &r[0]);
    /* Intents: cleared after the publish and after the free. */
    uint64_t id;
    CHECK_OK(dmxp_try_send(&a, "x", 1, NULL, &id));
    CHECK_EQ_U64(atomic_load(&r[0].intent_position), 0);
    CHECK_EQ_U64(atomic_load(&r[0].intent_count), 0);
    const void *datas[3] = {"a", "b", "c"};
    size_t lens[3] = {1, 1, 1}, sent;
    CHECK_OK(dmxp_try_send_batch(&a, datas, lens, 3, NULL, &sent, &id));
    CHECK_EQ_U64(sent, 3);
    CHECK_EQ_U64(atomic_load(&r[0].intent_position), 1); /* the batch's first position */
    CHECK_EQ_U64(atomic_load(&r[0].intent_count), 0);
    CHECK_STATUS(dmxp_try_send(&a, "y", 1, NULL, &id), DMXP_E_FULL);
    CHECK_EQ_U64(atomic_load(&r[0].intent_count), 0);
    unsigned char buf[DMXP_MSG_INLINE];
    size_t len;
    CHECK_OK(dmxp_try_recv(&a, buf, sizeof buf, NULL, &len));
    CHECK_EQ_U64(atomic_load(&r[1].intent_count), 0);
    dmxp_recv_counts counts;
    CHECK_OK(dmxp_try_recv_batch_counts(&a, 8, NULL, NULL, NULL, &counts));
    CHECK_EQ_U64(counts.delivered, 3);
    CHECK_EQ_U64(atomic_load(&r[1].intent_position), 1);
    CHECK_EQ_U64(atomic_load(&r[1].intent_count), 0);
    CHECK_STATUS(dmxp_try_recv(&a, buf, sizeof buf, NULL, &len), DMXP_E_EMPTY);
    CHECK_EQ_U64(atomic_load(&r[1].intent_count), 0);
    /* A second handle takes the next free record; close frees them. */
    CHECK_OK(dmxp_channel_open(&s, 5, &b, &err));
    CHECK_OK(dmxp_channel_register(&b, DMXP_ROLE_CONSUMER, &err));
    CHECK(b.recv_peer == &r[2]);
    dmxp_channel_close(&a);
    CHECK_EQ_U64(dmxp_channel_registered(&a), 0);
    CHECK_EQ_U64(atomic_load(&r[0].pid), 0);
    CHECK_EQ_U64(atomic_load(&r[1].pid), 0);
    CHECK_EQ_U64(atomic_load(&r[1].start_time), 0);
    CHECK_OK(dmxp_channel_register(&a, DMXP_ROLE_PRODUCER, &err));
    CHECK(a.send_peer == &r[0]);
    /* Recovery among live records (ours) changes nothing. */
    dmxp_recover_report rep;
    CHECK_OK(dmxp_channel_recover(&a, &rep));
    CHECK(rep.records_freed == 0 && rep.lost == 0 && rep.freed == 0);
    /* Full table: every other record taken by a (live) pid. */
    for (uint32_t i = 3; i < DMXP_PEER_RECORDS; i++) atomic_store(&r[i].pid, (uint32_t)getpid());
    atomic_store(&r[1].pid, (uint32_t)getpid());
    dmxp_channel c;
    CHECK_OK(dmxp_channel_open(&s, 5, &c, &err));
    CHECK_STATUS(dmxp_channel_register(&c, DMXP_ROLE_PRODUCER, &err), DMXP_E_PEER_TABLE_FULL);
    CHECK_EQ_U64(dmxp_channel_registered(&c), 0);
    char text[256];
    CHECK(dmxp_error_format(&err, text, sizeof text) > 0 && strstr(text, "peer table full"));
    CHECK_OK(dmxp_try_send(&c, "z", 1, NULL, &id)); /* unprotected, still works */
    CHECK_OK(dmxp_try_recv(&b, buf, sizeof buf, NULL, &len));
    CHECK(len == 1 && buf[0] == 'z');
    dmxp_channel_close(&c); /* nothing to free */
    dmxp_channel_close(&a);
    dmxp_channel_close(&b);
    free(m);

    /* No room for the table: OUT_OF_SPACE, the handle still works. */
    enum { LEN2 = DMXP_HEADER_SIZE + 4 * DMXP_SLOT_SIZE + 1024 };
    m = test_segment_memory(LEN2);
    CHECK_OK(dmxp_segment_format_memory(&s, m, LEN2, 1, &err));
    CHECK_OK(dmxp_channel_create(&s, 0, 4, &a, &err));
    CHECK_STATUS(dmxp_channel_register(&a, DMXP_ROLE_CONSUMER, &err), DMXP_E_OUT_OF_SPACE);
    CHECK_EQ_U64(atomic_load(&((dmxp_header *)(void *)m)->peer_table_offset), 0);
    CHECK_OK(dmxp_try_send(&a, "q", 1, NULL, &id));
    CHECK_OK(dmxp_try_recv(&a, buf, sizeof buf, NULL, &len));
    dmxp_recover_report rep2;
    CHECK_OK(dmxp_channel_recover(&a, &rep2)); /* no table: nothing to do */
    CHECK(rep2.records_freed == 0);
    free(m);
}

/* /proc/<pid>/stat parsing and the liveness rules of §11.5 on this (live) process. */
static void liveness(void) {
    uint32_t me = (uint32_t)getpid();
    uint64_t start = dmxp_process_start_time(me);
    CHECK(start != 0);
    char st;
    uint64_t again;
    CHECK_EQ_U64(dmxp__proc_stat(me, &st, &again), 0);
    CHECK_EQ_U64(again, start);
    CHECK(st == 'R' || st == 'S');
    CHECK_EQ_U64(dmxp_peer_dead(me, start), 0);
    CHECK_EQ_U64(dmxp_peer_dead(me, 0), 0);             /* unknown start time */
    CHECK_EQ_U64(dmxp_peer_dead(me, start + 12345), 1); /* pid reused */
    CHECK_EQ_U64(dmxp_peer_dead(UINT32_MAX, 0), 1);     /* no such pid can exist */
    CHECK_EQ_U64(dmxp_peer_dead(1, 0), 0);              /* init: alive (EPERM or not) */
    CHECK_EQ_U64(dmxp_process_start_time(UINT32_MAX - 1), 0);
}

int main(void) {
    mem = test_segment_memory(SEG_LEN);
    lay = (dmxp_segment_layout *)(void *)mem;
    dmxp_error err;
    /* Attach before format: NOT_READY */
    CHECK_STATUS(dmxp_segment_attach_memory(&seg, mem, SEG_LEN, &err), DMXP_E_NOT_READY);
    CHECK_OK(dmxp_segment_format_memory(&seg, mem, SEG_LEN, 77, &err));
    CHECK(memcmp(mem, "MEM_PXMD", 8) == 0);
    CHECK_EQ_U64(atomic_load(&lay->header.creator_pid), 77);
    CHECK_EQ_U64(atomic_load(&lay->header.segment_size), SEG_LEN);
    CHECK_EQ_U64(atomic_load(&lay->header.band_cursor), DMXP_HEADER_SIZE);
    dmxp_channel c0, c1;
    CHECK_OK(dmxp_channel_create(&seg, 0, 4, &c0, &err));
    CHECK_OK(dmxp_channel_create(&seg, 1, 8, &c1, &err));
    CHECK_EQ_U64(c0.band_offset, DMXP_HEADER_SIZE);
    CHECK_EQ_U64(c1.band_offset, DMXP_HEADER_SIZE + 4 * DMXP_SLOT_SIZE);

    header_checks();
    entry_checks();
    api_errors();
    markers_and_bad_slots();
    hostile_cursors();
    adopt_band_cursor();
    peer_table_checks();
    peer_records_checks();
    peer_records_creation();
    peer_registration();
    liveness();

    /* Every status has a name and a description. */
    for (int s = 0; s >= -70; s--) {
        CHECK(dmxp_strerror((dmxp_status)s) != NULL);
        CHECK(dmxp_status_name((dmxp_status)s) != NULL);
    }
    CHECK(strcmp(dmxp_status_name(DMXP_E_BAD_MAGIC), "DMXP_E_BAD_MAGIC") == 0);
    CHECK(strcmp(dmxp_status_name(DMXP_E_PEER_RECORDS_OUT_OF_RANGE),
                 "DMXP_E_PEER_RECORDS_OUT_OF_RANGE") == 0);
    CHECK(strcmp(dmxp_status_field(DMXP_E_PEER_RECORDS_OUT_OF_RANGE), "peer_records") == 0);
    CHECK(strcmp(dmxp_strerror(DMXP_E_PEER_RECORDS_OUT_OF_RANGE),
                 "corrupt segment: peer_records out of range") == 0);
    free(mem);
    TEST_DONE("test_validation");
}
