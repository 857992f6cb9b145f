/*
 * producer — sends verifiable messages on DMXP channels 0..num_channels, one thread each.
 *
 *   producer <num_channels> <messages_per_channel> [capacity] [--segment NAME]
 *            [--first-index K] [--batch N] [--size BYTES] [--full-wait SECONDS]
 *            [--large] [--max-message-size BYTES] [--blob] [--trust-owner UID] [--mode MODE]
 *
 * Opens or creates the segment (default /dmxp_alloc, or $DMXP_SEGMENT; 128 MiB, mode 0600)
 * and, for each channel c, opens or creates channel c with `capacity` slots (default 1024; an
 * existing channel is used as is). Sends indices K..K+messages_per_channel-1 on each channel
 * with payload pattern(c, index, default_len(index)); on a full ring it sleeps on the
 * channel's futex until a slot is freed, for at most --full-wait seconds (default 60).
 * --batch N sends N at a time with one claim. Prints one line per channel and a summary with
 * msgs/s; exits 0 when everything was sent.
 *
 * --large sends messages longer than one slot (PROTOCOL.md §12): message `index` is
 * pattern(c, index, large_len(index, LIMIT)) with large_len = min({24, 960, 961, 65536,
 * LIMIT}[index % 5], LIMIT), where LIMIT is the channel's max message size. A channel it creates
 * carries runs up to --max-message-size BYTES (default 262144 with --large; it must be at most
 * capacity x 960, so use a capacity of at least 512 for the default); an existing channel is
 * used with its own limit. With --batch, the messages of up to 960 bytes go in batches and
 * the longer ones one by one (a batch carries single-slot messages only).
 *
 * --blob sends blobs (PROTOCOL.md §13): message `index` is pattern(c, index, blob_len(index))
 * with blob_len = {24, 4096, 65537, 1048576, 4194304}[index % 5], written in place into a block
 * loaned from the segment's blob pool (dmxp_blob_loan_timeout, then dmxp_loan_write) and
 * committed (dmxp_blob_commit). A segment this creates gets the pool of the interop contract:
 * 32 blocks of 64 KiB, 8 of 1 MiB, 6 of 4 MiB; a channel this creates gets the BLOBS flag (an
 * existing one must have it). When the pool is exhausted a loan waits up to 30 s for a
 * consumer to release a block; a full ring waits up to --full-wait. Not with --large or --batch.
 *
 * An existing segment is used only if this euid owns it and its mode is within 0600
 * (PROTOCOL.md §3.4); otherwise the producer prints one line naming the owner and mode and
 * exits 1. --trust-owner UID also accepts segments owned by UID; --mode MODE (octal, e.g.
 * 0660) is the mode a created segment gets and the most an existing one may grant. Both are
 * needed to use another user's world-writable segment.
 */
#include "../dmxp.h"
#include "dmxp_pattern.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct {
    const dmxp_segment *seg;
    uint32_t channel;
    uint64_t capacity;
    uint64_t first;
    uint64_t count;
    size_t batch;
    int large;                 /* --large: lengths large_len(index, LIMIT) */
    int blob;                  /* --blob: blobs of blob_len(index) bytes */
    uint64_t max_message_size; /* for a channel this creates: 0 = single-slot messages */
    /* results */
    uint64_t sent;
    uint64_t full;
    uint64_t exhausted; /* --blob: loans that found the pool exhausted and waited */
    double seconds;
    int failed;
    char error[256];
} job;

static double now_s(void) { return (double)dmxp_now_ns() / 1e9; }

/* Give up after this long on a full ring (--full-wait); set before the threads start. */
static int64_t full_wait_ns = INT64_C(60000000000);

static void fail_job(job *j, const char *what, dmxp_status s) {
    j->failed = 1;
    snprintf(j->error, sizeof j->error, "channel %u: %s: %s (%s)", j->channel, what,
             dmxp_strerror(s), dmxp_status_name(s));
}

/* --blob: the interop contract's lengths and pool (the same in every language's examples). */
static size_t blob_len(uint64_t index) {
    static const size_t lens[5] = {24, 4096, 65537, 1048576, 4194304};
    return lens[index % 5];
}
static const dmxp_blob_class blob_classes[] = {{65536, 32}, {1048576, 8}, {4194304, 6}};
#define BLOB_CLASSES (sizeof blob_classes / sizeof blob_classes[0])
#define BLOB_LOAN_WAIT_NS INT64_C(30000000000)

/* --blob: each message written in place into a loaned block, then committed. */
static void send_blobs(job *j, const dmxp_channel *ch) {
    unsigned char *buf = malloc(4194304);
    if (!buf) {
        j->failed = 1;
        snprintf(j->error, sizeof j->error, "channel %u: out of memory", j->channel);
        return;
    }
    for (uint64_t i = 0; i < j->count; i++) {
        uint64_t index = j->first + i;
        size_t len = dmxp_pattern_encode_long(j->channel, index, blob_len(index), buf);
        dmxp_loan loan;
        dmxp_status s = dmxp_blob_loan(ch, len, &loan);
        if (s == DMXP_E_POOL_EXHAUSTED) {
            j->exhausted++;
            s = dmxp_blob_loan_timeout(ch, len, &loan, BLOB_LOAN_WAIT_NS);
        }
        if (s != DMXP_OK) {
            fail_job(j, "loan", s);
            break;
        }
        /* In place: 8-byte atomic words straight into the block. */
        s = dmxp_loan_write(&loan, 0, buf, len);
        if (s == DMXP_OK) s = dmxp_blob_commit(&loan, len, NULL, NULL);
        if (s == DMXP_E_FULL) {
            j->full++;
            s = dmxp_blob_commit_timeout(&loan, len, NULL, NULL, full_wait_ns);
        }
        if (s != DMXP_OK) {
            if (loan.live) (void)dmxp_blob_abandon(&loan);
            fail_job(j, "commit", s);
            break;
        }
        j->sent++;
    }
    free(buf);
}

static void *send_all(void *arg) {
    job *j = arg;
    dmxp_channel ch;
    dmxp_error err;
    dmxp_channel_opts copts = {.max_message_size = j->max_message_size, .blobs = j->blob};
    dmxp_status s = dmxp_channel_open_or_create_ex(j->seg, j->channel, j->capacity, &copts, 5000,
                                                   &ch, NULL, &err);
    if (s != DMXP_OK) {
        j->failed = 1;
        char msg[200];
        dmxp_error_format(&err, msg, sizeof msg);
        snprintf(j->error, sizeof j->error, "channel %u: open: %s", j->channel, msg);
        return NULL;
    }
    /* Crash protection (PROTOCOL.md §11): this thread's handle is registered as a producer. */
    s = dmxp_channel_register(&ch, DMXP_ROLE_PRODUCER, &err);
    if (s != DMXP_OK)
        fprintf(stderr, "producer: channel %u: not registered in the peer table (%s): "
                        "no crash protection%s\n", j->channel, dmxp_strerror(s),
                j->blob ? ", and no loans" : "");
    /* The channel's limit: LIMIT of --large (960 on a channel without runs). */
    size_t limit = dmxp_channel_max_message_size(&ch);
    size_t cap = limit > DMXP_MSG_INLINE ? limit : DMXP_MSG_INLINE;
    double start = now_s();
    if (j->blob) {
        send_blobs(j, &ch);
    } else if (j->batch <= 1) {
        unsigned char *buf = malloc(cap);
        if (!buf) {
            j->failed = 1;
            snprintf(j->error, sizeof j->error, "channel %u: out of memory", j->channel);
        }
        for (uint64_t i = 0; buf && i < j->count; i++) {
            uint64_t index = j->first + i;
            size_t len = j->large ? dmxp_pattern_large_len(index, limit)
                                  : dmxp_pattern_default_len(index);
            if (j->large) {
                len = dmxp_pattern_encode_long(j->channel, index, len, buf);
            } else {
                len = dmxp_pattern_encode(j->channel, index, len, buf);
            }
            s = dmxp_try_send(&ch, buf, len, NULL, NULL);
            if (s == DMXP_E_FULL) {
                j->full++;
                s = dmxp_send_timeout(&ch, buf, len, NULL, NULL, full_wait_ns);
            }
            if (s != DMXP_OK) {
                fail_job(j, "send", s);
                break;
            }
            j->sent++;
        }
        free(buf);
    } else {
        unsigned char *bufs = malloc(j->batch * DMXP_MSG_INLINE);
        unsigned char *big = j->large ? malloc(cap) : NULL;
        const void **datas = malloc(j->batch * sizeof *datas);
        size_t *lens = malloc(j->batch * sizeof *lens);
        if (!bufs || !datas || !lens || (j->large && !big)) {
            j->failed = 1;
            snprintf(j->error, sizeof j->error, "channel %u: out of memory", j->channel);
        }
        uint64_t next = 0;
        while (!j->failed && next < j->count) {
            size_t n = j->count - next < j->batch ? (size_t)(j->count - next) : j->batch;
            if (j->large) {
                /* A message longer than one slot goes alone; a batch stops before it. */
                uint64_t index = j->first + next;
                size_t len = dmxp_pattern_large_len(index, limit);
                if (len > DMXP_MSG_INLINE) {
                    len = dmxp_pattern_encode_long(j->channel, index, len, big);
                    s = dmxp_try_send(&ch, big, len, NULL, NULL);
                    if (s == DMXP_E_FULL) {
                        j->full++;
                        s = dmxp_send_timeout(&ch, big, len, NULL, NULL, full_wait_ns);
                    }
                    if (s != DMXP_OK) {
                        fail_job(j, "send", s);
                        break;
                    }
                    j->sent++;
                    next++;
                    continue;
                }
                for (size_t k = 1; k < n; k++)
                    if (dmxp_pattern_large_len(index + k, limit) > DMXP_MSG_INLINE) {
                        n = k;
                        break;
                    }
            }
            for (size_t k = 0; k < n; k++) {
                uint64_t index = j->first + next + k;
                unsigned char *b = bufs + k * DMXP_MSG_INLINE;
                lens[k] = dmxp_pattern_encode(j->channel, index,
                                              j->large ? dmxp_pattern_large_len(index, limit)
                                                       : dmxp_pattern_default_len(index),
                                              b);
                datas[k] = b;
            }
            size_t done = 0;
            while (done < n) {
                size_t got = 0;
                s = dmxp_try_send_batch(&ch, datas + done, lens + done, n - done, NULL, &got,
                                        NULL);
                if (s == DMXP_OK) {
                    done += got;
                    continue;
                }
                if (s != DMXP_E_FULL) {
                    fail_job(j, "send batch", s);
                    break;
                }
                j->full++;
                s = dmxp_wait_free_slot(&ch, full_wait_ns);
                if (s != DMXP_OK) {
                    fail_job(j, "waiting for a free slot", s);
                    break;
                }
            }
            j->sent += done;
            next += n;
        }
        free(bufs);
        free(big);
        free(datas);
        free(lens);
    }
    j->seconds = now_s() - start;
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
        fprintf(stderr, "producer: segment %s: %s\n", shown, msg);
        return;
    }
    const char *f = err->field ? err->field : "";
    int owner = strcmp(f, "owner") == 0 || strcmp(f, "owner and mode") == 0;
    int mode = (strcmp(f, "mode") == 0 || strcmp(f, "owner and mode") == 0) &&
               (err->value2 & ~UINT64_C(0777)) == 0;
    unsigned long long uid = (unsigned long long)err->found, bits = (unsigned long long)err->value2;
    if (owner && mode)
        fprintf(stderr, "producer: %s (trust it explicitly with --trust-owner %llu --mode 0%03llo)\n",
                err->detail, uid, bits);
    else if (owner)
        fprintf(stderr, "producer: %s (trust it explicitly with --trust-owner %llu)\n", err->detail,
                uid);
    else if (mode)
        fprintf(stderr, "producer: %s (accept it explicitly with --mode 0%03llo)\n", err->detail,
                bits);
    else
        fprintf(stderr, "producer: %s\n", err->detail);
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
    fprintf(stderr, "usage: producer <num_channels> <messages_per_channel> [capacity] "
                    "[--segment NAME] [--first-index K] [--batch N] [--size BYTES] "
                    "[--full-wait SECONDS] [--large] [--max-message-size BYTES] [--blob] "
                    "[--trust-owner UID] [--mode MODE]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *segment = getenv("DMXP_SEGMENT");
    if (segment == NULL || segment[0] == 0) segment = DMXP_DEFAULT_SEGMENT_NAME;
    uint64_t positional[3];
    int npos = 0;
    uint64_t first = 0, batch = 1, size = DMXP_DEFAULT_SEGMENT_SIZE;
    int large = 0, have_max = 0, blob = 0;
    uint64_t max_message_size = 0;
    dmxp_trust trust = DMXP_TRUST_DEFAULT;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--segment") == 0 && i + 1 < argc) {
            segment = argv[++i];
        } else if (strcmp(a, "--first-index") == 0 && i + 1 < argc) {
            if (!parse_u64(argv[++i], &first)) usage();
        } else if (strcmp(a, "--batch") == 0 && i + 1 < argc) {
            if (!parse_u64(argv[++i], &batch) || batch == 0 || batch > 65536) usage();
        } else if (strcmp(a, "--size") == 0 && i + 1 < argc) {
            if (!parse_u64(argv[++i], &size)) usage();
        } else if (strcmp(a, "--full-wait") == 0 && i + 1 < argc) {
            uint64_t seconds;
            if (!parse_u64(argv[++i], &seconds) || seconds > 86400) usage();
            full_wait_ns = (int64_t)seconds * 1000000000;
        } else if (strcmp(a, "--large") == 0) {
            large = 1;
        } else if (strcmp(a, "--blob") == 0) {
            blob = 1;
        } else if (strcmp(a, "--max-message-size") == 0 && i + 1 < argc) {
            if (!parse_u64(argv[++i], &max_message_size) || max_message_size > UINT32_MAX)
                usage();
            have_max = 1;
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
            if (npos == 3 || !parse_u64(a, &positional[npos])) usage();
            npos++;
        }
    }
    if (npos < 2 || positional[0] > DMXP_MAX_CHANNELS) usage();
    uint32_t channels = (uint32_t)positional[0];
    uint64_t count = positional[1];
    uint64_t capacity = npos == 3 ? positional[2] : DMXP_DEFAULT_CAPACITY;
    if (large && !have_max) max_message_size = 262144;
    if (blob && (large || batch > 1)) usage();

    dmxp_segment seg;
    dmxp_error err;
    /* With --blob, a segment this creates gets the pool (an existing one is used as is). */
    dmxp_status s = dmxp_segment_open_or_create_shm_pool(&seg, segment, (size_t)size, 5000,
                                                         &trust, blob_classes,
                                                         blob ? BLOB_CLASSES : 0, NULL, &err);
    if (s != DMXP_OK) {
        report_segment_error(segment, s, &err);
        return 1;
    }
    job *jobs = calloc(channels ? channels : 1, sizeof *jobs);
    pthread_t *threads = calloc(channels ? channels : 1, sizeof *threads);
    if (!jobs || !threads) return 1;
    double start = now_s();
    for (uint32_t c = 0; c < channels; c++) {
        jobs[c] = (job){.seg = &seg, .channel = c, .capacity = capacity, .first = first,
                        .count = count, .batch = (size_t)batch, .large = large, .blob = blob,
                        .max_message_size = max_message_size};
        if (pthread_create(&threads[c], NULL, send_all, &jobs[c]) != 0) {
            fprintf(stderr, "producer: pthread_create failed\n");
            return 1;
        }
    }
    int failed = 0;
    uint64_t total = 0;
    for (uint32_t c = 0; c < channels; c++) pthread_join(threads[c], NULL);
    double elapsed = now_s() - start;
    for (uint32_t c = 0; c < channels; c++) {
        job *j = &jobs[c];
        if (j->failed) {
            fprintf(stderr, "producer: %s\n", j->error);
            failed = 1;
        }
        total += j->sent;
        printf("producer: channel %u: sent %llu in %.3fs (%.0f msgs/s), ring full %llu times",
               c, (unsigned long long)j->sent, j->seconds,
               j->seconds > 0 ? (double)j->sent / j->seconds : 0.0,
               (unsigned long long)j->full);
        if (blob) printf(", pool exhausted %llu times", (unsigned long long)j->exhausted);
        printf("\n");
    }
    printf("producer: sent %llu messages on %u channels of %s in %.3fs: %.0f msgs/s\n",
           (unsigned long long)total, channels, segment, elapsed,
           elapsed > 0 ? (double)total / elapsed : 0.0);
    dmxp_segment_close(&seg);
    free(jobs);
    free(threads);
    return failed ? 1 : 0;
}
