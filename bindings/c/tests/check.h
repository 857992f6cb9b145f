/* Minimal test helpers: every failed check prints where and what, then exits non-zero. */
#ifndef DMXP_TEST_CHECK_H
#define DMXP_TEST_CHECK_H

#include "../dmxp.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static _Atomic int check_count;

#define CHECK(cond)                                                               \
    do {                                                                          \
        check_count++;                                                            \
        if (!(cond)) {                                                            \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                              \
        }                                                                         \
    } while (0)

#define CHECK_EQ_U64(a, b)                                                              \
    do {                                                                                \
        check_count++;                                                                  \
        uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);                                \
        if (a_ != b_) {                                                                 \
            fprintf(stderr, "%s:%d: %s == %" PRIu64 ", expected %s == %" PRIu64 "\n",    \
                    __FILE__, __LINE__, #a, a_, #b, b_);                                \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

#define CHECK_STATUS(expr, expected)                                                   \
    do {                                                                               \
        check_count++;                                                                 \
        dmxp_status got_ = (expr);                                                     \
        if (got_ != (expected)) {                                                      \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s\n", __FILE__, __LINE__, \
                    #expr, dmxp_status_name(got_), dmxp_status_name(expected));        \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

#define CHECK_OK(expr) CHECK_STATUS(expr, DMXP_OK)

/* A zeroed, 128-aligned buffer standing for a segment in ordinary memory. */
static inline void *test_segment_memory(size_t len) {
    size_t rounded = (len + 127) / 128 * 128;
    void *p = aligned_alloc(DMXP_SEGMENT_ALIGN, rounded);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    memset(p, 0, rounded);
    return p;
}

#define TEST_DONE(name)                                                   \
    do {                                                                  \
        printf("%s: ok (%d checks)\n", name, (int)check_count);                \
        return 0;                                                         \
    } while (0)

#endif
