/*
 * consumer — receives and verifies the messages `producer` sends, one thread per channel.
 *
 *   consumer <num_channels> <messages_per_channel> [--segment NAME] [--record FILE]
 *            [--idle-exit-ms MS] [--wait SECONDS] [--large] [--blob] [--trust-owner UID]
 *            [--mode MODE]
 *
 * Waits (up to --wait seconds, default 30) for the segment and each channel to exist, then
 * receives on channels 0..num_channels until it has messages_per_channel distinct messages
 * per channel (count mode). With --idle-exit-ms it instead stops once no message arrived on
 * any channel for MS milliseconds (the idle clock starts at the first message; before it,
 * --wait bounds the wait) — for several consumers sharing a channel. Every payload is checked
 * (length >= 24, checksum, filler, channel field == the channel it arrived on); duplicates
 * (the same (channel, index) twice), corrupt messages and, in count mode, missing ones are
 * counted. --record FILE writes one line "channel index" per received message. Exits
 * non-zero if anything is corrupt or duplicated, or (count mode) missing.
 *
 * --large: the producer's --large messages (PROTOCOL.md §12): message `index` must be
 * large_len(index, LIMIT) = min({24, 960, 961, 65536, LIMIT}[index % 5], LIMIT) bytes long,
 * LIMIT being the channel's max message size (as its entry says); a message of another length
 * is counted corrupt. Messages longer than one slot arrive whole through the same batch receives.
 *
 * --blob: the producer's --blob messages (PROTOCOL.md §13): each is received in place
 * (dmxp_blob_receive_timeout), read out of its block, released (dmxp_blob_release), and must be
 * blob_len(index) = {24, 4096, 65537, 1048576, 4194304}[index % 5] bytes long with the pattern;
 * anything else (an inline message: DMXP_E_NOT_A_BLOB, then received with dmxp_try_recv) is
 * counted corrupt. The segment is opened, or created if missing, with the interop contract's
 * pool (32 x 64 KiB, 8 x 1 MiB, 6 x 4 MiB; 128 MiB, mode 0600 or --mode), and each channel is
 * opened or created with the BLOBS flag and 1024 slots. Not with --large.
 *
 * The segment is used only if this euid owns it and its mode is within 0600 (PROTOCOL.md
 * §3.4); otherwise the consumer prints one line naming the owner and mode and exits 1 at once.
 * --trust-owner UID also accepts segments owned by UID; --mode MODE (octal, e.g. 0660) is the
 * most the segment's mode may grant. Both are needed for another user's world-writable one.
 */
#include "../dmxp.h"
#include "dmxp_pattern.h"

#include <pthread.h>
#include <stdlib.h>

/* Seen indices: a bitmap for 0..limit, an open-addressing set for the others. */
typedef struct {
    uint8_t *bits;
    uint64_t limit;
    uint64_t *table; /* stores index + 1; 0 = empty */
    size_t table_cap, table_len;
} seen_set;

static int set_grow(seen_set *s) {
    size_t cap = s->table_cap ? s->table_cap * 2 : 1024;
    uint64_t *t = calloc(cap, sizeof *t);
    if (!t) return 0;
    for (size_t i = 0; i < s->table_cap; i++) {
        uint64_t v = s->table[i];
        if (!v) continue;
        size_t h = (size_t)((v * UINT64_C(0x9E3779B97F4A7C15)) >> 17) & (cap - 1);
        while (t[h]) h = (h + 1) & (cap - 1);
        t[h] = v;
    }
    free(s->table);
    s->table = t;
    s->table_cap = cap;
    return 1;
}

/* Returns 1 if index was new, 0 if seen before, -1 on allocation failure. */
static int set_insert(seen_set *s, uint64_t index) {
    if (index < s->limit) {
        uint8_t bit = (uint8_t)(1u << (index & 7));
        if (s->bits[index >> 3] & bit) return 0;
        s->bits[index >> 3] |= bit;
        return 1;
    }
    if ((s->table_len + 1) * 2 > s->table_cap && !set_grow(s)) return -1;
    uint64_t v = index + 1;
    size_t h = (size_t)((v * UINT64_C(0x9E3779B97F4A7C15)) >> 17) & (s->table_cap - 1);
    while (s->table[h]) {
        if (s->table[h] == v) return 0;
        h = (h + 1) & (s->table_cap - 1);
    }
    s->table[h] = v;
    s->table_len++;
    return 1;
}

typedef struct {
    const dmxp_segment *seg;
    uint32_t channel;
    uint64_t expected;
    int64_t deadline_ns; /* for the channel to appear, and (count mode) the first message */
    int64_t wait_ns;
    int64_t idle_ns; /* 0: count mode */
    int record;
    int large;    /* --large: check each length against large_len(index, limit) */
    int blob;     /* --blob: receive blobs in place; check each length against blob_len */
    size_t limit; /* the channel's max message size, once opened */
    /* results */
    seen_set seen;
    uint64_t unique, duplicated, corrupt, lost;
    uint64_t tombstones; /* LOST tombstones: messages of producers that died mid-send */
    uint64_t revoked;    /* claims a peer repaired first (this consumer judged dead, §11.7) */
    uint64_t first_ns, last_ns;
    uint64_t *recorded;
    size_t recorded_len, recorded_cap;
    int failed;
    char error[256];
} job;

/* Time of the last message on any channel (idle mode), 0 before the first. */
static _Atomic uint64_t last_activity_ns;

/* --blob: the interop contract's lengths and pool (the same in every language's examples). */
static size_t blob_len(uint64_t index) {
    static const size_t lens[5] = {24, 4096, 65537, 1048576, 4194304};
    return lens[index % 5];
}
static const dmxp_blob_class blob_classes[] = {{65536, 32}, {1048576, 8}, {4194304, 6}};
#define BLOB_CLASSES (sizeof blob_classes / sizeof blob_classes[0])
#define BLOB_MAX 4194304u

static void check(void *ctx, const dmxp_meta *meta, const void *payload, size_t len) {
    job *j = ctx;
    uint64_t channel, index;
    uint64_t now = dmxp_now_ns();
    if (j->first_ns == 0) j->first_ns = now;
    j->last_ns = now;
    if (dmxp_pattern_decode(payload, len, &channel, &index) != DMXP_PATTERN_OK ||
        channel != j->channel || meta->channel_id != j->channel) {
        j->corrupt++;
        return;
    }
    if (j->large && len != dmxp_pattern_large_len(index, j->limit)) {
        j->corrupt++;
        return;
    }
    if (j->blob && (len != blob_len(index) || !(meta->flags & DMXP_FLAG_BLOB))) {
        j->corrupt++;
        return;
    }
    int fresh = set_insert(&j->seen, index);
    if (fresh < 0) {
        j->failed = 1;
        snprintf(j->error, sizeof j->error, "channel %u: out of memory", j->channel);
        return;
    }
    if (fresh)
        j->unique++;
    else
        j->duplicated++;
    if (j->record) {
        if (j->recorded_len == j->recorded_cap) {
            size_t cap = j->recorded_cap ? j->recorded_cap * 2 : 4096;
            uint64_t *r = realloc(j->recorded, cap * sizeof *r);
            if (!r) {
                j->failed = 1;
                snprintf(j->error, sizeof j->error, "channel %u: out of memory", j->channel);
                return;
            }
            j->recorded = r;
            j->recorded_cap = cap;
        }
        j->recorded[j->recorded_len++] = index;
    }
}

/* --blob: receive in place, copy out for the check, release. 1 to go on, 0 to stop. */
static int receive_blobs_once(job *j, const dmxp_channel *ch, unsigned char *buf) {
    int64_t slice = j->idle_ns ? (j->idle_ns < 50000000 ? j->idle_ns : 50000000) : j->wait_ns;
    dmxp_blob_view view;
    dmxp_status s = dmxp_blob_receive_timeout(ch, &view, slice);
    if (s == DMXP_OK) {
        /* The copy is only for the checksum: the bytes are read where they lie. */
        dmxp_meta meta = view.meta;
        size_t len = view.len;
        dmxp_status r = dmxp_blob_read(&view, 0, buf, len);
        if (dmxp_blob_release(&view) == DMXP_E_REVOKED) j->revoked++;
        if (r != DMXP_OK)
            j->corrupt++;
        else
            check(j, &meta, buf, len);
    } else if (s == DMXP_E_NOT_A_BLOB) {
        /* An inline message on the channel: not what --blob expects, counted corrupt. */
        dmxp_meta meta;
        size_t len = 0;
        s = dmxp_try_recv(ch, buf, BLOB_MAX, &meta, &len);
        if (s == DMXP_OK) check(j, &meta, buf, len);
        if (s == DMXP_E_LOST) j->tombstones++;
        if (s == DMXP_E_CORRUPT_MESSAGE) j->corrupt++;
        if (s == DMXP_E_REVOKED) j->revoked++;
        return 1;
    } else if (s == DMXP_E_LOST) {
        j->tombstones++;
    } else if (s == DMXP_E_CORRUPT_MESSAGE) {
        j->corrupt++;
    } else if (s == DMXP_E_REVOKED) {
        j->revoked++;
    } else if (s == DMXP_E_TIMEOUT || s == DMXP_E_BUSY) {
        if (j->idle_ns) {
            uint64_t last = atomic_load_explicit(&last_activity_ns, memory_order_relaxed);
            int64_t now = (int64_t)dmxp_now_ns();
            if (last == 0 && now >= j->deadline_ns) return 0; /* nothing ever arrived */
            if (last != 0 && now - (int64_t)last >= j->idle_ns) return 0;
            return 1;
        }
        fprintf(stderr, "consumer: channel %u: no blob for %llds, giving up\n", j->channel,
                (long long)(j->wait_ns / 1000000000));
        return 0;
    } else {
        j->failed = 1;
        snprintf(j->error, sizeof j->error, "channel %u: blob receive: %s (%s)", j->channel,
                 dmxp_strerror(s), dmxp_status_name(s));
        return 0;
    }
    if (j->idle_ns) atomic_store_explicit(&last_activity_ns, dmxp_now_ns(), memory_order_relaxed);
    return 1;
}

static void *receive_all(void *arg) {
    job *j = arg;
    dmxp_channel ch;
    dmxp_error err;
    int64_t left_ms = (j->deadline_ns - (int64_t)dmxp_now_ns()) / 1000000;
    dmxp_channel_opts blob_opts = {.blobs = 1};
    /* --blob: opened, or created with the BLOBS flag; otherwise waited for. */
    dmxp_status s =
        j->blob ? dmxp_channel_open_or_create_ex(j->seg, j->channel, DMXP_DEFAULT_CAPACITY,
                                                 &blob_opts, left_ms > 0 ? left_ms : 0, &ch,
                                                 NULL, &err)
                : dmxp_channel_open_wait(j->seg, j->channel, left_ms > 0 ? left_ms : 0, &ch,
                                         &err);
    if (s != DMXP_OK) {
        j->failed = 1;
        char msg[200];
        dmxp_error_format(&err, msg, sizeof msg);
        snprintf(j->error, sizeof j->error, "channel %u: open: %s", j->channel, msg);
        return NULL;
    }
    j->limit = dmxp_channel_max_message_size(&ch);
    /* Crash protection (PROTOCOL.md §11): this thread's handle is registered as a consumer. */
    s = dmxp_channel_register(&ch, DMXP_ROLE_CONSUMER, &err);
    if (s != DMXP_OK)
        fprintf(stderr, "consumer: channel %u: not registered in the peer table (%s): "
                        "no crash protection%s\n", j->channel, dmxp_strerror(s),
                j->blob ? ", and no blob receives" : "");
    unsigned char *blob_buf = j->blob ? malloc(BLOB_MAX) : NULL;
    if (j->blob && !blob_buf) {
        j->failed = 1;
        snprintf(j->error, sizeof j->error, "channel %u: out of memory", j->channel);
    }
    while (j->blob && !j->failed && (j->idle_ns || j->unique < j->expected))
        if (!receive_blobs_once(j, &ch, blob_buf)) break;
    free(blob_buf);
    for (; !j->blob;) {
        if (j->failed) break;
        if (!j->idle_ns && j->unique >= j->expected) break;
        dmxp_recv_counts counts;
        s = dmxp_try_recv_batch_counts(&ch, 64, check, NULL, j, &counts);
        if (s == DMXP_OK) {
            j->corrupt += counts.corrupt;
            j->tombstones += counts.lost;
            j->revoked += counts.revoked;
            if (j->idle_ns) atomic_store_explicit(&last_activity_ns, dmxp_now_ns(),
                                                  memory_order_relaxed);
            continue;
        }
        /* BUSY (a corrupt or extremely contended ring) is treated like EMPTY: wait, re-check,
         * and give up after the idle/wait limit rather than spin. */
        if (s != DMXP_E_EMPTY && s != DMXP_E_BUSY) {
            j->failed = 1;
            snprintf(j->error, sizeof j->error, "channel %u: receive: %s", j->channel,
                     dmxp_strerror(s));
            break;
        }
        if (j->idle_ns) {
            uint64_t last = atomic_load_explicit(&last_activity_ns, memory_order_relaxed);
            int64_t now = (int64_t)dmxp_now_ns();
            if (last == 0 && now >= j->deadline_ns) break; /* nothing ever arrived */
            if (last != 0 && now - (int64_t)last >= j->idle_ns) break;
            dmxp_wait_message(&ch, j->idle_ns < 50000000 ? j->idle_ns : 50000000);
        } else if (dmxp_wait_message(&ch, j->wait_ns) == DMXP_E_TIMEOUT) {
            fprintf(stderr, "consumer: channel %u: no message for %llds, giving up\n",
                    j->channel, (long long)(j->wait_ns / 1000000000));
            break;
        }
    }
    if (!j->idle_ns && j->unique < j->expected) j->lost = j->expected - j->unique;
    if (j->tombstones)
        fprintf(stderr, "consumer: channel %u: %llu LOST tombstones (producers died mid-send)\n",
                j->channel, (unsigned long long)j->tombstones);
    if (j->revoked)
        fprintf(stderr, "consumer: channel %u: %llu receives revoked (a peer repaired them "
                        "first, judging this consumer dead)\n",
                j->channel, (unsigned long long)j->revoked);
    dmxp_channel_close(&ch);
    return NULL;
}

/* --mode: octal, at most 0777. */
static int parse_mode(const char *text, uint32_t *out) {
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 8);
    if (errno || end == text || *end || text[0] == '-' || v == 0 || v > 0777) return 0;
    *out = (uint32_t)v;
    return 1;
}

/* One line on stderr for a segment that could not be opened. A refused one (PROTOCOL.md §3.4)
 * gets the message naming its owner and mode, and the options that would accept it. */
static void report_segment_error(const char *segment, dmxp_status s, const dmxp_error *err) {
    char msg[512];
    dmxp_error_format(err, msg, sizeof msg);
    if (s != DMXP_E_UNTRUSTED) {
        /* The name as given, control characters escaped: the report stays one line. */
        char shown[4 * 256 + 4];
        size_t n = 0;
        for (const unsigned char *c = (const unsigned char *)segment; *c && n < 4 * 256; c++)
            n += (size_t)snprintf(shown + n, sizeof shown - n,
                                  *c < 0x20 || *c == 0x7f ? "\\x%02x" : "%c", *c);
        shown[n] = 0;
        fprintf(stderr, "consumer: segment %s: %s\n", shown, msg);
        return;
    }
    const char *f = err->field ? err->field : "";
    int owner = strcmp(f, "owner") == 0 || strcmp(f, "owner and mode") == 0;
    int mode = (strcmp(f, "mode") == 0 || strcmp(f, "owner and mode") == 0) &&
               (err->value2 & ~UINT64_C(0777)) == 0;
    unsigned long long uid = (unsigned long long)err->found, bits = (unsigned long long)err->value2;
    if (owner && mode)
        fprintf(stderr, "consumer: %s (trust it explicitly with --trust-owner %llu --mode 0%03llo)\n",
                err->detail, uid, bits);
    else if (owner)
        fprintf(stderr, "consumer: %s (trust it explicitly with --trust-owner %llu)\n", err->detail,
                uid);
    else if (mode)
        fprintf(stderr, "consumer: %s (accept it explicitly with --mode 0%03llo)\n", err->detail,
                bits);
    else
        fprintf(stderr, "consumer: %s\n", err->detail);
}

static int parse_u64(const char *text, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-') return 0;
    *out = v;
    return 1;
}

static void usage(void) {
    fprintf(stderr, "usage: consumer <num_channels> <messages_per_channel> [--segment NAME] "
                    "[--record FILE] [--idle-exit-ms MS] [--wait SECONDS] [--large] [--blob] "
                    "[--trust-owner UID] [--mode MODE]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *segment = getenv("DMXP_SEGMENT");
    if (segment == NULL || segment[0] == 0) segment = DMXP_DEFAULT_SEGMENT_NAME;
    const char *record = NULL;
    uint64_t positional[2];
    int npos = 0;
    uint64_t idle_ms = 0, wait_s = 30;
    int large = 0, blob = 0;
    dmxp_trust trust = DMXP_TRUST_DEFAULT;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--segment") == 0 && i + 1 < argc) {
            segment = argv[++i];
        } else if (strcmp(a, "--record") == 0 && i + 1 < argc) {
            record = argv[++i];
        } else if (strcmp(a, "--idle-exit-ms") == 0 && i + 1 < argc) {
            if (!parse_u64(argv[++i], &idle_ms) || idle_ms == 0) usage();
        } else if (strcmp(a, "--wait") == 0 && i + 1 < argc) {
            if (!parse_u64(argv[++i], &wait_s) || wait_s > 86400) usage();
        } else if (strcmp(a, "--large") == 0) {
            large = 1;
        } else if (strcmp(a, "--blob") == 0) {
            blob = 1;
        } else if (strcmp(a, "--trust-owner") == 0 && i + 1 < argc) {
            uint64_t uid;
            if (!parse_u64(argv[++i], &uid) || uid > UINT32_MAX) usage();
            trust.has_trusted_uid = 1;
            trust.trusted_uid = (uint32_t)uid;
        } else if (strcmp(a, "--mode") == 0 && i + 1 < argc) {
            if (!parse_mode(argv[++i], &trust.mode)) usage();
        } else if (a[0] == '-' && a[1] == '-') {
            usage();
        } else {
            if (npos == 2 || !parse_u64(a, &positional[npos])) usage();
            npos++;
        }
    }
    if (npos != 2 || positional[0] > DMXP_MAX_CHANNELS || (blob && large)) usage();
    uint32_t channels = (uint32_t)positional[0];
    uint64_t expected = positional[1];
    int64_t wait_ns = (int64_t)wait_s * 1000000000;
    int64_t deadline = (int64_t)dmxp_now_ns() + wait_ns;

    /* The segment may not exist yet: a consumer may start before the producer. */
    dmxp_segment seg;
    dmxp_error err;
    dmxp_status s;
    for (;;) {
        /* --blob: opened, or created with the contract's pool, at once. */
        s = blob ? dmxp_segment_open_or_create_shm_pool(&seg, segment, DMXP_DEFAULT_SEGMENT_SIZE,
                                                        1000, &trust, blob_classes, BLOB_CLASSES,
                                                        NULL, &err)
                 : dmxp_segment_open_shm_trusting(&seg, segment, 1000, &trust, &err);
        if ((s != DMXP_E_NO_SEGMENT && s != DMXP_E_NOT_READY) ||
            (int64_t)dmxp_now_ns() >= deadline)
            break;
        nanosleep(&(struct timespec){0, 5000000}, NULL);
    }
    if (s != DMXP_OK) {
        report_segment_error(segment, s, &err);
        return 1;
    }

    job *jobs = calloc(channels ? channels : 1, sizeof *jobs);
    pthread_t *threads = calloc(channels ? channels : 1, sizeof *threads);
    if (!jobs || !threads) return 1;
    uint64_t limit = expected < (UINT64_C(1) << 33) ? expected : (UINT64_C(1) << 33);
    for (uint32_t c = 0; c < channels; c++) {
        jobs[c] = (job){.seg = &seg, .channel = c, .expected = expected,
                        .deadline_ns = deadline, .wait_ns = wait_ns,
                        .idle_ns = (int64_t)idle_ms * 1000000, .record = record != NULL,
                        .large = large, .blob = blob};
        jobs[c].seen.limit = limit;
        jobs[c].seen.bits = calloc((size_t)(limit / 8 + 1), 1);
        if (!jobs[c].seen.bits) return 1;
        if (pthread_create(&threads[c], NULL, receive_all, &jobs[c]) != 0) {
            fprintf(stderr, "consumer: pthread_create failed\n");
            return 1;
        }
    }
    for (uint32_t c = 0; c < channels; c++) pthread_join(threads[c], NULL);

    int ok = 1;
    uint64_t unique = 0, lost = 0, dup = 0, corrupt = 0, first = 0, last = 0;
    for (uint32_t c = 0; c < channels; c++) {
        job *j = &jobs[c];
        if (j->failed) {
            fprintf(stderr, "consumer: %s\n", j->error);
            ok = 0;
        }
        double span = j->last_ns > j->first_ns ? (double)(j->last_ns - j->first_ns) / 1e9 : 0;
        printf("consumer: channel %u: received %llu (%.0f msgs/s), lost %llu, duplicated %llu, "
               "corrupt %llu\n",
               c, (unsigned long long)j->unique, span > 0 ? (double)j->unique / span : 0.0,
               (unsigned long long)j->lost, (unsigned long long)j->duplicated,
               (unsigned long long)j->corrupt);
        unique += j->unique;
        lost += j->lost;
        dup += j->duplicated;
        corrupt += j->corrupt;
        if (j->first_ns && (first == 0 || j->first_ns < first)) first = j->first_ns;
        if (j->last_ns > last) last = j->last_ns;
    }
    double span = last > first ? (double)(last - first) / 1e9 : 0;
    printf("consumer: received %llu messages on %u channels of %s in %.3fs: %.0f msgs/s; "
           "lost %llu, duplicated %llu, corrupt %llu\n",
           (unsigned long long)unique, channels, segment, span,
           span > 0 ? (double)unique / span : 0.0, (unsigned long long)lost,
           (unsigned long long)dup, (unsigned long long)corrupt);

    if (record) {
        FILE *f = fopen(record, "w");
        if (!f) {
            perror(record);
            ok = 0;
        } else {
            for (uint32_t c = 0; c < channels; c++)
                for (size_t i = 0; i < jobs[c].recorded_len; i++)
                    fprintf(f, "%u %llu\n", c, (unsigned long long)jobs[c].recorded[i]);
            if (fclose(f) != 0) ok = 0;
        }
    }
    for (uint32_t c = 0; c < channels; c++) {
        free(jobs[c].seen.bits);
        free(jobs[c].seen.table);
        free(jobs[c].recorded);
    }
    free(jobs);
    free(threads);
    dmxp_segment_close(&seg);
    return ok && lost == 0 && dup == 0 && corrupt == 0 ? 0 : 1;
}
