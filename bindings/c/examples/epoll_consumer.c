/*
 * epoll_consumer — one thread, one epoll, several channels: waiting from an event loop
 * (PROTOCOL.md §7.4) with dmxp_wait_fd.
 *
 *   epoll_consumer [num_channels] [messages_per_channel] [--segment NAME] [--wait SECONDS]
 *
 * Receives messages_per_channel messages (default 10000) on each of channels
 * 0..num_channels (default 4) in a single thread: each channel has a wait fd (an io_uring
 * whose futex wait on the channel's wait word turns its fd readable when a sender wakes the
 * word), all of them in one epoll set. Every payload is checked (the examples' pattern:
 * checksum, filler, the channel it arrived on); the consumer prints the count and how it
 * waited, and exits 0 when every message arrived once, intact.
 *
 * Without --segment it makes a segment of its own (/dmxp_epoll_<pid>, removed at the end)
 * and forks a producer process that sends the messages, pausing now and then so that the loop
 * really sleeps. With --segment NAME it consumes what examples/producer sends there (it waits
 * up to --wait seconds, default 30, for the segment and the channels):
 *
 *   build/producer 4 10000 --segment /demo & build/epoll_consumer 4 10000 --segment /demo
 *
 * Where the kernel cannot do it (no io_uring, Linux before 6.7, DMXP_ASYNC_POLL=1), it says
 * so and polls instead: a look at every channel each millisecond, without registering as a
 * waiter (§7.4 "Fallback").
 */
#include "../dmxp.h"
#include "dmxp_pattern.h"

#include <sys/epoll.h>
#include <sys/wait.h>

#define MAX_CHANNELS 64

typedef struct {
    dmxp_channel ch;
    dmxp_wait_fd w;
    int armed;        /* a round is armed on w */
    int due;          /* look at it now: readable, its slice over, or never armed */
    uint64_t received;
    uint8_t *seen;    /* one bit per index */
} channel_state;

static uint64_t expected, duplicates, corrupt;

static int64_t now_ns(void) { return (int64_t)dmxp_now_ns(); }

/* Receives everything queued on c (checking each payload); 1 when it got at least one. */
static int drain(channel_state *s, uint32_t c) {
    unsigned char buf[DMXP_MSG_INLINE];
    int got = 0;
    for (;;) {
        size_t len;
        dmxp_status st = dmxp_try_recv(&s->ch, buf, sizeof buf, NULL, &len);
        if (st == DMXP_E_EMPTY) return got;
        got = 1;
        uint64_t pc, index;
        if (st != DMXP_OK || dmxp_pattern_decode(buf, len, &pc, &index) != DMXP_PATTERN_OK ||
            pc != c || index >= expected) {
            corrupt++;
            continue;
        }
        if (s->seen[index / 8] & (1u << (index % 8))) {
            duplicates++;
            continue;
        }
        s->seen[index / 8] |= (uint8_t)(1u << (index % 8));
        s->received++;
    }
}

/* The fallback without io_uring: look at every channel each millisecond (do not arm). */
static void poll_loop(channel_state *st, uint32_t n, uint64_t total, int64_t deadline) {
    uint64_t received = 0;
    while (received < total && now_ns() < deadline) {
        int got = 0;
        received = 0;
        for (uint32_t c = 0; c < n; c++) {
            got |= drain(&st[c], c);
            received += st[c].received;
        }
        if (!got) nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
}

/* The event loop: drain and arm every due channel, then sleep in epoll until a wait fd turns
 * readable or the shortest slice ends (at most 100 ms). */
static int epoll_loop(channel_state *st, uint32_t n, uint64_t total, int64_t deadline,
                      uint64_t *epoll_waits) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return -1;
    for (uint32_t c = 0; c < n; c++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, dmxp_wait_fd_fd(&st[c].w), &ev) != 0) return -1;
        st[c].due = 1;
    }
    uint64_t received = 0;
    dmxp_error err;
    while (received < total && now_ns() < deadline) {
        for (uint32_t c = 0; c < n; c++) {
            channel_state *s = &st[c];
            if (!s->due) continue;
            s->due = 0;
            if (s->armed && dmxp_wait_fd_complete(&s->w, &err) != DMXP_OK) goto failed;
            s->armed = 0;
            for (;;) {
                (void)drain(s, c);
                dmxp_status a = dmxp_channel_arm_message_wait(&s->ch, &s->w, &err);
                if (a == DMXP_READY) continue; /* a message came meanwhile: receive it */
                if (a != DMXP_ARMED) goto failed;
                s->armed = 1;
                break;
            }
        }
        received = 0;
        for (uint32_t c = 0; c < n; c++) received += st[c].received;
        if (received >= total) break;
        int timeout = 100;
        for (uint32_t c = 0; c < n; c++) {
            int t = dmxp_wait_fd_timeout_ms(&st[c].w);
            if (t < timeout) timeout = t;
        }
        struct epoll_event events[MAX_CHANNELS];
        int k = epoll_wait(ep, events, MAX_CHANNELS, timeout);
        (*epoll_waits)++;
        if (k < 0 && errno != EINTR) goto failed; /* EINTR: the kernel posted a completion */
        for (int i = 0; i < k; i++) st[events[i].data.u32].due = 1;
        for (uint32_t c = 0; c < n; c++)
            if (dmxp_wait_fd_timeout_ms(&st[c].w) == 0) st[c].due = 1; /* slice over */
    }
    close(ep);
    return 0;
failed:;
    char msg[256];
    dmxp_error_format(&err, msg, sizeof msg);
    fprintf(stderr, "epoll_consumer: %s\n", msg);
    close(ep);
    return -1;
}

/* The forked producer: sends indices 0..count-1 on every channel, pausing every 64 messages. */
static void produce(const char *segment, uint32_t n, uint64_t count) {
    dmxp_segment seg;
    if (dmxp_segment_open_shm(&seg, segment, 5000, NULL) != DMXP_OK) _exit(20);
    dmxp_channel ch[MAX_CHANNELS];
    for (uint32_t c = 0; c < n; c++) {
        if (dmxp_channel_open(&seg, c, &ch[c], NULL) != DMXP_OK) _exit(21);
        (void)dmxp_channel_register(&ch[c], DMXP_ROLE_PRODUCER, NULL);
    }
    unsigned char buf[DMXP_MSG_INLINE];
    for (uint64_t i = 0; i < count; i++) {
        for (uint32_t c = 0; c < n; c++) {
            size_t len = dmxp_pattern_encode(c, i, dmxp_pattern_default_len(i), buf);
            if (dmxp_send_timeout(&ch[c], buf, len, NULL, NULL, INT64_C(30000000000)) != DMXP_OK)
                _exit(22);
        }
        if (i % 64 == 63) nanosleep(&(struct timespec){0, 200000}, NULL);
    }
    for (uint32_t c = 0; c < n; c++) dmxp_channel_close(&ch[c]);
    dmxp_segment_close(&seg);
    _exit(0);
}

static void usage(void) {
    fprintf(stderr, "usage: epoll_consumer [num_channels] [messages_per_channel] "
                    "[--segment NAME] [--wait SECONDS]\n");
    exit(2);
}

int main(int argc, char **argv) {
    uint64_t num[2] = {4, 10000};
    int npos = 0;
    const char *segment = NULL;
    long wait_s = 30;
    for (int i = 1; i < argc; i++) {
        char *end;
        if (strcmp(argv[i], "--segment") == 0 && i + 1 < argc) {
            segment = argv[++i];
        } else if (strcmp(argv[i], "--wait") == 0 && i + 1 < argc) {
            wait_s = strtol(argv[++i], &end, 10);
            if (*end || wait_s < 0 || wait_s > 86400) usage();
        } else if (argv[i][0] != '-' && npos < 2) {
            num[npos++] = strtoull(argv[i], &end, 10);
            if (*end) usage();
        } else {
            usage();
        }
    }
    if (num[0] == 0 || num[0] > MAX_CHANNELS || num[1] > (UINT64_C(1) << 32)) usage();
    uint32_t n = (uint32_t)num[0];
    expected = num[1];
    int64_t deadline = now_ns() + (int64_t)wait_s * INT64_C(1000000000);

    char own[64];
    pid_t producer = 0;
    dmxp_segment seg;
    dmxp_error err;
    dmxp_status s;
    if (segment == NULL) {
        snprintf(own, sizeof own, "/dmxp_epoll_%d", (int)getpid());
        segment = own;
        s = dmxp_segment_create_shm(&seg, segment, (size_t)16 << 20, DMXP_DEFAULT_MODE, &err);
    } else {
        do { /* the producer may not have made it yet */
            s = dmxp_segment_open_shm(&seg, segment, 1000, &err);
        } while ((s == DMXP_E_NO_SEGMENT || s == DMXP_E_NOT_READY) && now_ns() < deadline &&
                 nanosleep(&(struct timespec){0, 5000000}, NULL) == 0);
    }
    if (s != DMXP_OK) {
        char msg[512];
        dmxp_error_format(&err, msg, sizeof msg);
        fprintf(stderr, "epoll_consumer: segment %s: %s\n", segment, msg);
        return 1;
    }

    channel_state *st = calloc(n, sizeof *st);
    if (st == NULL) return 1;
    int use_epoll = 1;
    for (uint32_t c = 0; c < n; c++) {
        int64_t left = (deadline - now_ns()) / 1000000;
        s = segment == own ? dmxp_channel_create(&seg, c, 64, &st[c].ch, &err)
                           : dmxp_channel_open_wait(&seg, c, left > 0 ? left : 0, &st[c].ch, &err);
        if (s != DMXP_OK) {
            char msg[512];
            dmxp_error_format(&err, msg, sizeof msg);
            fprintf(stderr, "epoll_consumer: channel %u: %s\n", c, msg);
            return 1;
        }
        if (dmxp_channel_register(&st[c].ch, DMXP_ROLE_CONSUMER, &err) != DMXP_OK)
            fprintf(stderr, "epoll_consumer: channel %u not registered: no crash protection\n", c);
        st[c].seen = calloc((size_t)(expected / 8 + 1), 1);
        if (st[c].seen == NULL) return 1;
        /* Opened for every channel: a failed open leaves the wait fd closed (close is then
         * harmless), and one failure makes the whole loop poll. */
        s = dmxp_wait_fd_open(&st[c].w, &err);
        if (s != DMXP_OK && use_epoll) {
            char msg[512];
            dmxp_error_format(&err, msg, sizeof msg);
            fprintf(stderr, "epoll_consumer: no wait fd (%s): polling every millisecond\n", msg);
            use_epoll = 0;
        }
    }
    if (segment == own) {
        fflush(stdout);
        producer = fork();
        if (producer < 0) return 1;
        if (producer == 0) produce(segment, n, expected);
    }

    uint64_t total = expected * n, epoll_waits = 0;
    int64_t start = now_ns();
    int failed = 0;
    if (use_epoll)
        failed = epoll_loop(st, n, total, deadline, &epoll_waits) != 0;
    else
        poll_loop(st, n, total, deadline);
    double seconds = (double)(now_ns() - start) / 1e9;

    uint64_t received = 0;
    dmxp_wait_fd_stats stats = {0, 0, 0, 0};
    for (uint32_t c = 0; c < n; c++) {
        received += st[c].received;
        dmxp_wait_fd_close(&st[c].w); /* before the handle's close and the segment's */
        stats.submitted += st[c].w.stats.submitted;
        stats.reused += st[c].w.stats.reused;
        stats.woken += st[c].w.stats.woken;
        dmxp_channel_close(&st[c].ch);
        free(st[c].seen);
    }
    if (producer > 0) {
        int status;
        if (waitpid(producer, &status, 0) != producer || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0) {
            fprintf(stderr, "epoll_consumer: the producer process failed\n");
            failed = 1;
        }
    }
    printf("epoll_consumer: received %llu of %llu messages on %u channels in %.3fs, one thread "
           "(%s: %llu epoll_waits, %llu futex waits submitted, %llu reused, %llu woken); "
           "%llu duplicates, %llu corrupt\n",
           (unsigned long long)received, (unsigned long long)total, n, seconds,
           use_epoll ? "epoll over io_uring wait fds" : "polling", (unsigned long long)epoll_waits,
           (unsigned long long)stats.submitted, (unsigned long long)stats.reused,
           (unsigned long long)stats.woken, (unsigned long long)duplicates,
           (unsigned long long)corrupt);
    dmxp_segment_close(&seg);
    if (segment == own) (void)dmxp_shm_unlink(segment, NULL);
    free(st);
    return failed || received != total || duplicates || corrupt ? 1 : 0;
}
