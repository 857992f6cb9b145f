/* dmxp.h included after <stdio.h>, <stdlib.h> and <string.h>, in a unit that defines no
 * feature macro. Built as -std=c11 (strict ISO C: the first header fixes glibc's feature set
 * without POSIX, so dmxp.h's own _GNU_SOURCE comes too late and it must declare what it uses
 * itself) and, from the same source, as C++17. Valid in both languages; uses only ISO C and
 * dmxp.h. Checks, through the calls that need POSIX declarations:
 *   - the clock (clock_gettime, CLOCK_MONOTONIC): non-zero, never going back, and a 20 ms
 *     receive timeout (futex syscall, nanosleep) lasting at least 20 ms of it;
 *   - an shm segment (shm_open, ftruncate, fstat, fchmod, mmap): create, send, receive, the
 *     trust check of a second attach, unlink;
 *   - a file segment in /tmp (O_DIRECTORY, O_NOFOLLOW, O_CLOEXEC, openat, linkat, unlinkat,
 *     the sticky-bit check, S_ISVTX): create, attach, send, receive;
 *   - the liveness check of a peer (kill). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../dmxp.h"

/* As C, this unit must take the header's fallback path (nothing else declares clock_gettime,
 * openat, ... here); g++ defines _GNU_SOURCE, so as C++ it takes the usual one. */
#if !defined(__cplusplus) && !defined(DMXP__FALLBACK_DECLS)
#error "strict C11 with <stdio.h> first should need dmxp.h's fallback declarations"
#endif

static int checks;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        checks++;                                                                    \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

#if defined(__cplusplus)
#define LANGUAGE "C++"
#else
#define LANGUAGE "C"
#endif

/* Sends `text` on channel 0 of seg (created with capacity 4) and receives it through a second
 * attach `other`. */
static void round_trip(const dmxp_segment *seg, const dmxp_segment *other, const char *text) {
    dmxp_channel tx, rx;
    dmxp_error err;
    CHECK(dmxp_channel_open_or_create(seg, 0, 4, 1000, &tx, NULL, &err) == DMXP_OK);
    CHECK(dmxp_channel_open(other, 0, &rx, &err) == DMXP_OK);
    CHECK(dmxp_try_send(&tx, text, strlen(text), NULL, NULL) == DMXP_OK);
    char buf[64];
    size_t len = 0;
    dmxp_meta meta;
    CHECK(dmxp_recv_timeout(&rx, buf, sizeof buf, &meta, &len, 1000000000) == DMXP_OK);
    CHECK(len == strlen(text) && memcmp(buf, text, len) == 0);
    CHECK(meta.sender_pid == seg->pid);
}

int main(void) {
    /* The clock. */
    uint64_t a = dmxp_now_ns(), b = dmxp_now_ns();
    CHECK(a != 0 && b >= a);

    char name[64], path[96];
    snprintf(name, sizeof name, "/dmxp_order_%s_%u", LANGUAGE[1] ? "cpp" : "c",
             (unsigned)dmxp_self_identity().pid);
    snprintf(path, sizeof path, "/tmp/dmxp_order_%s_%u.seg", LANGUAGE[1] ? "cpp" : "c",
             (unsigned)dmxp_self_identity().pid);
    CHECK(dmxp_self_identity().start_time != 0);

    /* shm: create, a second (checked) attach, a message, a timed-out receive, unlink. */
    dmxp_segment seg, other;
    dmxp_error err;
    (void)dmxp_shm_unlink(name, NULL);
    CHECK(dmxp_segment_create_shm(&seg, name, (size_t)1 << 20, 0600, &err) == DMXP_OK);
    CHECK(dmxp_segment_open_shm(&other, name, 1000, &err) == DMXP_OK);
    round_trip(&seg, &other, "through shm");
    dmxp_channel rx;
    CHECK(dmxp_channel_open(&other, 0, &rx, &err) == DMXP_OK);
    uint64_t t0 = dmxp_now_ns();
    CHECK(dmxp_recv_timeout(&rx, NULL, 0, NULL, NULL, 20000000) == DMXP_E_TIMEOUT);
    CHECK(dmxp_now_ns() - t0 >= 20000000);
    /* Liveness (kill(pid, 0)): this process is alive, a pid beyond pid_max is not. */
    CHECK(!dmxp_peer_dead(seg.pid, dmxp_self_identity().start_time));
    CHECK(dmxp_peer_dead(UINT32_C(0x7FFFFFF0), 0));
    dmxp_segment_close(&other);
    dmxp_segment_close(&seg);
    CHECK(dmxp_shm_unlink(name, &err) == DMXP_OK);
    CHECK(dmxp_segment_open_shm(&other, name, 0, &err) == DMXP_E_NO_SEGMENT);

    /* A file segment: the directory and link checks, exclusive create through linkat. */
    remove(path);
    CHECK(dmxp_segment_create_path(&seg, path, (size_t)1 << 20, 0600, &err) == DMXP_OK);
    CHECK(dmxp_segment_create_path(&other, path, (size_t)1 << 20, 0600, &err) ==
          DMXP_E_SEGMENT_EXISTS);
    CHECK(dmxp_segment_open_path(&other, path, 1000, &err) == DMXP_OK);
    round_trip(&seg, &other, "through a file");
    dmxp_segment_close(&other);
    dmxp_segment_close(&seg);
    CHECK(remove(path) == 0);

    printf("test_include_order (%s, <stdio.h> <stdlib.h> <string.h> first): ok (%d checks)\n",
           LANGUAGE, checks);
    return 0;
}
