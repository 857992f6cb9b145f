/*
 * dmxp.h — a C11 and C++ client for DMXP shared-memory MPMC channels (wire protocol version 1).
 *
 * This header is the whole client. It implements docs/PROTOCOL.md on its own and shares no
 * code with the Rust crates; the Rust core (dmxp-nostd) is the reference it is tested against.
 *
 * Usage
 * -----
 * Header-only: every function is `static inline`, so there is nothing to link but -pthread
 * (for programs that use threads) and, on glibc before 2.34, -lrt (shm_open). C11 or later
 * (-std=c11 is enough, strict or not), or C++11 or later (tested as C++17): the declarations
 * have C linkage (extern "C") and the same layout in both languages, so C and C++ units of one
 * program can share segments and handles. The include order does not matter: the header may
 * come after any system header, with or without feature macros (see "Feature macros" below).
 *
 *     #include <dmxp.h>
 *     dmxp_segment seg; dmxp_channel ch; dmxp_error err;
 *     dmxp_segment_open_or_create_shm(&seg, "/dmxp_alloc", DMXP_DEFAULT_SEGMENT_SIZE,
 *                                     0600, 1000, NULL, &err);
 *     dmxp_channel_open_or_create(&seg, 0, 1024, 1000, &ch, NULL, &err);
 *     uint64_t id; dmxp_try_send(&ch, "hi", 2, NULL, &id);
 *
 * Requirements: Linux (futex), a little-endian host, lock-free 16/32/64-bit atomics.
 *
 * Messages longer than one slot (PROTOCOL.md §12): a channel created with
 * dmxp_channel_open_or_create_ex and a dmxp_channel_opts .max_message_size above 960 carries
 * messages up to that size as runs of consecutive slots; the single sends and every receive
 * handle them (batch sends do not). See dmxp_channel_opts and dmxp_try_send.
 *
 * Blobs (PROTOCOL.md §13): a segment created with a blob pool (dmxp_segment_create_shm_pool,
 * ..._open_or_create_shm_pool) has fixed-size blocks that a producer loans (dmxp_blob_loan),
 * writes in place and commits (dmxp_blob_commit), and a consumer receives in place
 * (dmxp_blob_receive) and releases (dmxp_blob_release): a payload of any size costs one slot,
 * on a channel created with dmxp_channel_opts .blobs. See "The blob pool" below.
 *
 * Waiting from an event loop (PROTOCOL.md §7.4): a dmxp_wait_fd is a pollable fd (an io_uring
 * futex wait on a channel's wait word, Linux 6.7 or later) that turns readable when a peer
 * wakes the channel; an epoll loop arms it (dmxp_channel_arm_message_wait), polls it and
 * completes the round (dmxp_wait_fd_complete). See "Waiting from an event loop" at the end.
 *
 * Trust (PROTOCOL.md §3.4)
 * ------------------------
 * Attaching to an shm object or file this call did not create exclusively first checks the
 * opened descriptor with fstat: a regular file, owned by this euid (or an owner or group the
 * caller trusts explicitly), granting no mode bit outside the mode asked for (0600 by default);
 * file segments must not be symbolic links nor sit in a directory others may write without
 * the sticky bit. Otherwise DMXP_E_UNTRUSTED, before anything is mapped. The _trusting and
 * _ex calls take a dmxp_trust with the opt-ins; see its comment block. Malformed shm names and
 * paths are refused with DMXP_E_INVALID_ARGUMENT before any system call.
 *
 * Memory model
 * ------------
 * Every byte of a live segment may be written by another process at any moment, so this
 * header touches segment memory only through atomics: the layout structs below are made of
 * DMXP_ATOMIC fields (_Atomic in C; in C++ plain integers accessed with the __atomic
 * builtins, see "Atomics") and never read or written as plain memory (no memcpy on a live
 * slot).
 * Payloads move as aligned 8-byte relaxed atomic words between the `sequence` acquire that
 * grants a claim and the `sequence` release that ends it. The geometry of a channel
 * (capacity, band offset) is validated once at open and cached in the dmxp_channel handle;
 * slot addresses come only from the cached values, so a hostile peer cannot steer an access
 * outside the band. Every retry loop is bounded (DMXP_RETRY_LIMIT) and every wait sleeps in
 * slices of at most 100 ms.
 *
 * Thread safety: a dmxp_segment is immutable after open (the size of its peer table included,
 * read once: PROTOCOL.md §11.1), and so is the geometry a dmxp_channel handle caches; any
 * number of threads may use one handle concurrently (the few counters a handle keeps, such as
 * its miss streaks, are relaxed atomics). Do not copy a handle that other threads are using:
 * open another one. Close the segment only
 * after every thread is done with its channels. Exception: a handle registered in the peer
 * table (dmxp_channel_register, for crash recovery, PROTOCOL.md §11) holds one intent per
 * role and must be used for that role by one thread at a time; give each thread its own
 * registered handle. Registration is optional: an unregistered (or failed-to-register) handle
 * works as before, without crash protection. A registration first frees the records of dead
 * peers that hold no intent (PROTOCOL.md §11.10), and a registered handle that blocks names
 * the wait count it is in, in its record, so that a peer that frees the record after its death
 * gives the count back (§11.9).
 *
 * Stuck channels (PROTOCOL.md §11.6-11.8): a call that finds the channel stuck at one position
 * (a claim never published, or never freed) watches it. After DMXP_STUCK_GRACE_NS it runs a
 * repair pass for dead peers, and again while the position stays stuck, the pause between two
 * passes doubling up to DMXP_STUCK_MAX_RECHECK_NS. Once the position has been stuck for the
 * handle's unblock timeout (DMXP_UNBLOCK_TIMEOUT_NS, 1 s, by default; see
 * dmxp_channel_set_unblock_timeout) and a pass did not move it, it is unblocked whatever its
 * holder's liveness: a receive tombstones it (received as DMXP_E_LOST), a send frees it. A
 * holder that resumes gets DMXP_E_REVOKED from its publish or free (§11.7).
 *
 * Status codes: every fallible function returns a dmxp_status (DMXP_OK == 0, errors < 0).
 * Functions that validate a segment also fill an optional dmxp_error with the values that
 * explain the failure (the field at fault, the value found, ...), mirroring the Rust
 * `Corruption` / `Error` variants; dmxp_error_format() renders it.
 */
#ifndef DMXP_H
#define DMXP_H

/* Feature macros. The header needs POSIX 2008 and Linux declarations (shm_open, openat,
 * ftruncate, clock_gettime, CLOCK_MONOTONIC, syscall, ...) that a strict ISO mode (-std=c11)
 * hides. Included first, it defines _GNU_SOURCE (as it always has), so that the system headers
 * below, and those the unit includes after it, declare them. Included after another system
 * header, that is too late: the C library fixed its feature set when it read the first one.
 * The header then checks that set (glibc's __USE_* macros, after its own includes) and
 * declares itself what is missing ("Fallback declarations" below, DMXP__FALLBACK_DECLS), so
 * the include order does not matter and the unit need not define any feature macro. (g++ and
 * clang++ on Linux always define _GNU_SOURCE.) */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1
#endif

#if defined(__cplusplus)
#if __cplusplus < 201103L
#error "dmxp.h needs C++11 or later (tested with -std=c++17)"
#endif
#elif !defined(__STDC_VERSION__) || __STDC_VERSION__ < 201112L
#error "dmxp.h needs C11 (-std=c11 or later)"
#elif defined(__STDC_NO_ATOMICS__)
#error "dmxp.h needs C11 <stdatomic.h>"
#endif
#if !defined(__linux__)
#error "dmxp.h needs Linux (futex(2), POSIX shm)"
#endif
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "DMXP segments are little-endian and accessed in place: big-endian hosts are not supported"
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#if !defined(__cplusplus)
#include <stdatomic.h>
#endif

/* Fallback declarations: what the header uses beyond ISO C, when an earlier #include fixed
 * a feature set without it (glibc: no __USE_XOPEN2K8 or no __USE_MISC; e.g. -std=c11 with
 * <stdio.h> first, or -U_GNU_SOURCE in C++). The prototypes are POSIX's, with glibc's
 * __THROW where glibc has it, so they agree with the C library's own declarations where it
 * made them (a redeclaration, valid in C and C++), and the constants are the values glibc's
 * headers define (its __O_* and __S_ISVTX, Linux's CLOCK_MONOTONIC). On a 32-bit host with a
 * 64-bit off_t or time_t the C library renames these calls, which plain declarations cannot
 * follow: there the header must come first (or the unit be compiled with -D_GNU_SOURCE). */
#if defined(__GLIBC__) && (!defined(__USE_XOPEN2K8) || !defined(__USE_MISC))
#if __SIZEOF_LONG__ == 4 && (defined(__USE_FILE_OFFSET64) || defined(__USE_TIME_BITS64))
#error "dmxp.h: include dmxp.h before any system header, or compile with -D_GNU_SOURCE"
#endif
#define DMXP__FALLBACK_DECLS 1
#if defined(__cplusplus)
extern "C" {
#endif
extern int kill(__pid_t pid, int sig) __THROW;
extern long int syscall(long int number, ...) __THROW;
extern int nanosleep(const struct timespec *request, struct timespec *remaining);
extern int clock_gettime(__clockid_t clock, struct timespec *ts) __THROW;
extern int openat(int dirfd, const char *path, int flags, ...);
extern int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
                  int flags) __THROW;
extern int unlinkat(int dirfd, const char *path, int flags) __THROW;
extern int ftruncate(int fd, __off_t length) __THROW;
extern int fchown(int fd, __uid_t owner, __gid_t group) __THROW;
extern int fchmod(int fd, __mode_t mode) __THROW;
#if defined(__cplusplus)
}
#endif
#endif
#if !defined(O_CLOEXEC) && defined(__O_CLOEXEC)
#define O_CLOEXEC __O_CLOEXEC
#endif
#if !defined(O_NOFOLLOW) && defined(__O_NOFOLLOW)
#define O_NOFOLLOW __O_NOFOLLOW
#endif
#if !defined(O_DIRECTORY) && defined(__O_DIRECTORY)
#define O_DIRECTORY __O_DIRECTORY
#endif
#if !defined(S_ISVTX) && defined(__S_ISVTX)
#define S_ISVTX __S_ISVTX
#endif
#if !defined(CLOCK_MONOTONIC)
#define CLOCK_MONOTONIC 1 /* Linux's clock id, the same on every architecture */
#endif
#if !defined(O_CLOEXEC) || !defined(O_NOFOLLOW) || !defined(O_DIRECTORY) || !defined(S_ISVTX)
#error "dmxp.h: include dmxp.h before any system header, or compile with -D_GNU_SOURCE"
#endif

/* ------------------------------------------------------------------------------------------ */
/* Atomics: C11 <stdatomic.h> in C, the GCC/Clang __atomic builtins in C++                    */
/* ------------------------------------------------------------------------------------------ */

/* DMXP_ATOMIC(T), T one of uint16_t, uint32_t, uint64_t, int64_t, is the type of every field
 * a peer may write: _Atomic(T) in C; in C++ (which has no _Atomic) T itself, aligned to its
 * size like _Atomic(T), and accessed only through the __atomic builtins, which GCC and Clang
 * compile to the same instructions as the C11 calls (std::atomic_ref, in C++20, is the same
 * thing). So the layout structs have the same size, offsets and alignment in both languages
 * (checked below and by tests/test_cpp.cpp), stay trivially copyable C structs in C++, and a
 * segment or a handle can be passed between C and C++ code. The dmxp__ macros are the
 * operations the header uses, in either language. */
#if defined(__cplusplus)
typedef uint16_t dmxp__atomic_uint16_t;
typedef uint32_t dmxp__atomic_uint32_t;
#if defined(__i386__)
/* i386 aligns a plain 64-bit integer to 4 in a struct, _Atomic(uint64_t) to 8. */
typedef uint64_t dmxp__atomic_uint64_t __attribute__((aligned(8)));
typedef int64_t dmxp__atomic_int64_t __attribute__((aligned(8)));
#else
typedef uint64_t dmxp__atomic_uint64_t;
typedef int64_t dmxp__atomic_int64_t;
#endif
#define DMXP_ATOMIC(T) dmxp__atomic_##T
#define DMXP__STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#define DMXP__ALIGNOF(T) alignof(T)
#define DMXP__RLX __ATOMIC_RELAXED
#define DMXP__ACQ __ATOMIC_ACQUIRE
#define DMXP__REL __ATOMIC_RELEASE
#define DMXP__ACQREL __ATOMIC_ACQ_REL
#define DMXP__SEQ __ATOMIC_SEQ_CST
#define dmxp__init(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define dmxp__load(p, mo) __atomic_load_n((p), (mo))
#define dmxp__store(p, v, mo) __atomic_store_n((p), (v), (mo))
#define dmxp__exchange(p, v, mo) __atomic_exchange_n((p), (v), (mo))
#define dmxp__fetch_add(p, v, mo) __atomic_fetch_add((p), (v), (mo))
#define dmxp__fetch_sub(p, v, mo) __atomic_fetch_sub((p), (v), (mo))
#define dmxp__cas_strong(p, expected, desired, ok, fail) \
    __atomic_compare_exchange_n((p), (expected), (desired), false, (ok), (fail))
#define dmxp__cas_weak(p, expected, desired, ok, fail) \
    __atomic_compare_exchange_n((p), (expected), (desired), true, (ok), (fail))
#define dmxp__fence(mo) __atomic_thread_fence(mo)
/* Cross-process atomics must be lock-free (a lock would live in one process only). */
DMXP__STATIC_ASSERT(__atomic_always_lock_free(sizeof(uint16_t), 0),
                    "16-bit atomics must be lock-free");
DMXP__STATIC_ASSERT(__atomic_always_lock_free(sizeof(uint32_t), 0),
                    "32-bit atomics must be lock-free");
DMXP__STATIC_ASSERT(__atomic_always_lock_free(sizeof(uint64_t), 0),
                    "64-bit atomics must be lock-free");
/* The alignment C gives _Atomic(T): its size. */
DMXP__STATIC_ASSERT(alignof(dmxp__atomic_uint16_t) == 2 && alignof(dmxp__atomic_uint32_t) == 4 &&
                        alignof(dmxp__atomic_uint64_t) == 8 && alignof(dmxp__atomic_int64_t) == 8,
                    "atomic fields are aligned to their size");
#else
#define DMXP_ATOMIC(T) _Atomic(T)
#define DMXP__STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#define DMXP__ALIGNOF(T) _Alignof(T)
#define DMXP__RLX memory_order_relaxed
#define DMXP__ACQ memory_order_acquire
#define DMXP__REL memory_order_release
#define DMXP__ACQREL memory_order_acq_rel
#define DMXP__SEQ memory_order_seq_cst
#define dmxp__init(p, v) atomic_init((p), (v))
#define dmxp__load(p, mo) atomic_load_explicit((p), (mo))
#define dmxp__store(p, v, mo) atomic_store_explicit((p), (v), (mo))
#define dmxp__exchange(p, v, mo) atomic_exchange_explicit((p), (v), (mo))
#define dmxp__fetch_add(p, v, mo) atomic_fetch_add_explicit((p), (v), (mo))
#define dmxp__fetch_sub(p, v, mo) atomic_fetch_sub_explicit((p), (v), (mo))
#define dmxp__cas_strong(p, expected, desired, ok, fail) \
    atomic_compare_exchange_strong_explicit((p), (expected), (desired), (ok), (fail))
#define dmxp__cas_weak(p, expected, desired, ok, fail) \
    atomic_compare_exchange_weak_explicit((p), (expected), (desired), (ok), (fail))
#define dmxp__fence(mo) atomic_thread_fence(mo)
/* Cross-process atomics must be lock-free (a lock would live in one process only). */
DMXP__STATIC_ASSERT(ATOMIC_SHORT_LOCK_FREE == 2, "16-bit atomics must be lock-free");
DMXP__STATIC_ASSERT(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");
DMXP__STATIC_ASSERT(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
#endif

#if defined(__cplusplus)
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* Constants (PROTOCOL.md §2.1)                                                               */
/* ------------------------------------------------------------------------------------------ */

#define DMXP_MAGIC UINT64_C(0x444D58505F4D454D) /* bytes in memory: "MEM_PXMD" */
#define DMXP_VERSION 1u
#define DMXP_MAX_CHANNELS 256u
#define DMXP_CHANNEL_TABLE_OFFSET 128u
#define DMXP_CHANNEL_ENTRY_SIZE 384u
#define DMXP_HEADER_SIZE 98432u /* 128 + 256 * 384 */
#define DMXP_SLOT_SIZE 1088u
#define DMXP_SLOT_ALIGN 64u
#define DMXP_PAYLOAD_OFFSET 64u
#define DMXP_MSG_INLINE 960u
#define DMXP_PAYLOAD_WORDS 120u
#define DMXP_MIN_CAPACITY UINT64_C(2)
#define DMXP_MAX_CAPACITY (UINT64_C(1) << 32)
#define DMXP_SEGMENT_ALIGN 128u

/* Peer table (PROTOCOL.md §11.1): n records of 64 bytes, carved from the band area. n is the
 * header's peer_records, chosen by the creator (dmxp_segment_format_memory_ex, the
 * .peer_records of dmxp_trust for the _ex creating calls), or DMXP_PEER_RECORDS when that is
 * 0 (every segment made before the field). A table is never smaller than DMXP_PEER_RECORDS, so
 * that a client unaware of the field, which uses the first 256 records, stays inside it. */
#define DMXP_PEER_RECORDS 256u        /* records when peer_records is 0; the fewest otherwise */
#define DMXP_MAX_PEER_RECORDS 16384u  /* the most: 256 channels x 64 handles, 1 MiB */
#define DMXP_PEER_RECORD_SIZE 64u
#define DMXP_PEER_TABLE_SIZE 16384u /* the default table: DMXP_PEER_RECORDS * 64 */
#define DMXP_ROLE_PRODUCER 1u
#define DMXP_ROLE_CONSUMER 2u
/* A peer record's `waiting` word (§11.9): the wait count of its channel the owner is in. */
#define DMXP_WAITING_NONE 0u
#define DMXP_WAITING_NOT_EMPTY 1u /* counted in not_empty_waiters (a blocked receive) */
#define DMXP_WAITING_NOT_FULL 2u  /* counted in not_full_waiters (a blocked send) */
/* A blocked sender/receiver runs the repair of §11.6 once the channel has been stuck at the
 * same position this long (the first pause between passes; see DMXP_STUCK_MAX_RECHECK_NS). */
#define DMXP_STUCK_GRACE_NS INT64_C(10000000)
/* While a channel stays stuck at one position, the pause between two repair passes doubles
 * from DMXP_STUCK_GRACE_NS up to this, so a blocked peer does not re-judge the peer table
 * every grace period for as long as a stopped peer holds the position. */
#define DMXP_STUCK_MAX_RECHECK_NS INT64_C(160000000)
/* The default unblock timeout (PROTOCOL.md §11.8): a position stuck this long is unblocked
 * whether or not its holder is alive (see dmxp_channel_set_unblock_timeout). */
#define DMXP_UNBLOCK_TIMEOUT_NS UINT64_C(1000000000)
/* The non-blocking calls (dmxp_try_*) look for a stuck channel only after this many misses in
 * a row (empty receives, full sends) on one handle: looking reads the other side's cursor,
 * and a handle spinning on an empty or full ring would otherwise pull that cache line away
 * from the other side at each of its claims. Blocking calls look before every sleep. */
#define DMXP_MISS_STREAK 64u
/* A non-blocking receive that finds the head position claimed but unpublished while a later
 * position of the lap holds a message (PROTOCOL.md §6.2: "Empty means nothing is queued")
 * does not report DMXP_E_EMPTY: it waits for the head position, first spinning
 * DMXP_PENDING_SPINS times, then on the not_empty futex word in short slices, repairing a
 * dead claimer after DMXP_STUCK_GRACE_NS. It gives up with DMXP_E_EMPTY only when the
 * position has not moved for DMXP_PENDING_WAIT_NS (1 s): a producer stopped that long
 * between claim and publish, with the handle's unblock timeout (§11.8) disabled or longer
 * (with the default, DMXP_UNBLOCK_TIMEOUT_NS, the position is tombstoned first). (A
 * blocking receive waits for it within its own deadline.) */
#define DMXP_PENDING_SPINS 256u
#define DMXP_PENDING_WAIT_NS INT64_C(1000000000)

#define DMXP_STATE_EMPTY 0u
#define DMXP_STATE_CREATING 1u
#define DMXP_STATE_READY 2u

#define DMXP_FLAG_SKIP 0x0001u
#define DMXP_FLAG_LOST 0x0002u
#define DMXP_FLAG_RUN 0x0004u      /* the slot starts a message longer than one slot (§12.2) */
#define DMXP_FLAG_RUN_CONT 0x0008u /* the slot continues such a message */
#define DMXP_FLAGS_PROTOCOL_MASK 0x00FFu
#define DMXP_FLAGS_APPLICATION_MASK 0xFF00u

/* Messages longer than one slot (PROTOCOL.md §12). A channel whose entry flags have
 * DMXP_CHANNEL_RUNS carries messages of up to its max_message_size bytes (961 .. capacity *
 * 960, below 2^32); a longer message travels as a run of ceil(len / 960) consecutive
 * positions. Without it the limit is DMXP_MSG_INLINE. DMXP_INTENT_RUN in a peer record's
 * intent_flags: its intent is one run (§12.5). */
#define DMXP_CHANNEL_RUNS 0x1u
#define DMXP_INTENT_RUN 0x1u

/* The blob pool (PROTOCOL.md §13): fixed-size blocks in the segment that a producer writes in
 * place and a consumer reads in place, the ring carrying a 16-byte reference (a message with
 * DMXP_FLAG_BLOB) instead of the bytes. The pool is made by the segment's creator
 * (dmxp_segment_create_shm_pool and the other _pool calls), never resized; a channel created
 * with dmxp_channel_opts .blobs = 1 has DMXP_CHANNEL_BLOBS in its entry flags and carries
 * references to its blocks. See "The blob pool" below. */
#define DMXP_CHANNEL_BLOBS 0x2u
#define DMXP_CHANNEL_KNOWN_FLAGS (DMXP_CHANNEL_RUNS | DMXP_CHANNEL_BLOBS) /* entry check #10 */
#define DMXP_FLAG_BLOB 0x0010u /* the payload is a 16-byte blob reference (§13.4) */
#define DMXP_BLOB_POOL_MAGIC UINT64_C(0x424F4C4250584D44) /* bytes in memory: "DMXPBLOB" */
#define DMXP_HEADER_BLOB_POOL_OFFSET 64u /* the header's blob_pool_offset (u64): zero[0] */
#define DMXP_MAX_BLOB_CLASSES 8u
#define DMXP_BLOB_POOL_HEADER_SIZE 64u  /* the pool descriptor before the class descriptors */
#define DMXP_BLOB_CLASS_SIZE 64u        /* one class descriptor */
#define DMXP_BLOCK_HEADER_SIZE 64u      /* one block header */
#define DMXP_BLOB_DESCRIPTOR_AREA 576u  /* 64 + 8 x 64: the least a pool can be (§13.2 #1) */
#define DMXP_BLOB_MIN_BLOCK_SIZE UINT64_C(64)
#define DMXP_BLOB_MAX_BLOCK_SIZE (UINT64_C(1) << 31)
#define DMXP_BLOB_MAX_BLOCK_COUNT (UINT32_C(1) << 24)
#define DMXP_BLOB_REF_LEN 16u           /* payload_len of a message with DMXP_FLAG_BLOB */
#define DMXP_BLOB_POOL_ALIGN 4096u      /* where this creator puts the pool and each class's data */
/* The state byte of a block's tag (bits 0-7; bits 8-31 the owner, 32-63 the generation). */
#define DMXP_BLOCK_FREE 0u
#define DMXP_BLOCK_LOANED 1u /* a producer writes it; owner = its peer record index + 1 */
#define DMXP_BLOCK_QUEUED 2u /* a message in a ring refers to it; owner 0 */
#define DMXP_BLOCK_HELD 3u   /* a consumer received it; owner = its peer record index + 1 */
/* A loan that finds the pool exhausted runs dmxp_blob_reclaim first, at most this often per
 * handle (a reclaim judges the liveness of the peer table's records and scans the pool). */
#define DMXP_BLOB_RECLAIM_PAUSE_NS INT64_C(100000000)

#define DMXP_RUNTIME_UNKNOWN 0u
#define DMXP_RUNTIME_RUST 1u
#define DMXP_RUNTIME_C 2u
#define DMXP_RUNTIME_PYTHON 3u
#define DMXP_RUNTIME_GO 4u

/* Project defaults (interop contract). */
#define DMXP_DEFAULT_SEGMENT_NAME "/dmxp_alloc"
#define DMXP_DEFAULT_SEGMENT_SIZE ((size_t)134217728u) /* 128 MiB */
#define DMXP_DEFAULT_CAPACITY UINT64_C(1024)
#define DMXP_DEFAULT_MODE 0600u

/* Retries of one claim (lost CAS races, a stale cursor) before giving up with DMXP_E_BUSY. */
#define DMXP_RETRY_LIMIT (1u << 16)
/* Longest single futex sleep: waits re-check the ring at least this often. */
#define DMXP_WAIT_SLICE_NS INT64_C(100000000)
/* Pass as a timeout to wait without a deadline (still in 100 ms slices). */
#define DMXP_FOREVER INT64_C(-1)

/* ------------------------------------------------------------------------------------------ */
/* Wire layout (PROTOCOL.md §2). Every field is atomic: peers may write it at any time.       */
/* ------------------------------------------------------------------------------------------ */

/* GlobalHeader fields: the first 128 bytes of the segment. */
typedef struct dmxp_header {
    DMXP_ATOMIC(uint64_t) magic;          /*  0 */
    DMXP_ATOMIC(uint32_t) version;        /*  8 */
    DMXP_ATOMIC(uint32_t) max_channels;   /* 12 */
    DMXP_ATOMIC(uint32_t) channel_count;  /* 16 */
    DMXP_ATOMIC(uint32_t) reserved;       /* 20 */
    DMXP_ATOMIC(uint64_t) segment_size;   /* 24 */
    DMXP_ATOMIC(uint64_t) band_cursor;    /* 32 */
    DMXP_ATOMIC(uint32_t) creator_pid;    /* 40 */
    DMXP_ATOMIC(uint32_t) header_flags;   /* 44 */
    DMXP_ATOMIC(uint64_t) peer_table_offset; /* 48: 0 = no peer table yet (§11.1) */
    DMXP_ATOMIC(uint32_t) peer_records;   /* 56: records of the peer table; 0 = DMXP_PEER_RECORDS */
    DMXP_ATOMIC(uint32_t) zero32;         /* 60 */
    /* 64..128. zero[0], at offset 64, is blob_pool_offset (PROTOCOL.md §13.1): the offset of
     * the blob pool, 0 = none, written by the creator before magic and never changed; the
     * header reads it once, at attach (dmxp__blob_pool_offset_word). The other words are 0. */
    DMXP_ATOMIC(uint64_t) zero[8];
} dmxp_header;

/* The blob pool descriptor (§13.2): the pool's first 64 bytes, at blob_pool_offset. */
typedef struct dmxp_blob_pool_header {
    DMXP_ATOMIC(uint64_t) pool_magic;   /*  0: DMXP_BLOB_POOL_MAGIC */
    DMXP_ATOMIC(uint32_t) class_count;  /*  8: 1..DMXP_MAX_BLOB_CLASSES */
    DMXP_ATOMIC(uint32_t) zero12;       /* 12 */
    DMXP_ATOMIC(uint64_t) pool_len;     /* 16: bytes of the pool from its start */
    DMXP_ATOMIC(uint32_t) free_seq;     /* 24: futex word producers waiting for a block sleep on */
    DMXP_ATOMIC(uint32_t) free_waiters; /* 28: producers registered as waiting on it */
    DMXP_ATOMIC(uint64_t) zero[4];      /* 32..64 */
} dmxp_blob_pool_header;

/* A class descriptor (§13.2), class i at blob_pool_offset + 64 + 64 * i. */
typedef struct dmxp_blob_class_desc {
    DMXP_ATOMIC(uint64_t) block_size;     /*  0: a multiple of 64, 64..2^31 */
    DMXP_ATOMIC(uint32_t) block_count;    /*  8: 1..2^24 */
    DMXP_ATOMIC(uint32_t) zero12;         /* 12 */
    DMXP_ATOMIC(uint64_t) headers_offset; /* 16: segment offset of the block headers */
    DMXP_ATOMIC(uint64_t) data_offset;    /* 24: segment offset of block 0 */
    DMXP_ATOMIC(uint32_t) next_hint;      /* 32: where the next loan starts looking */
    DMXP_ATOMIC(uint32_t) zero36;         /* 36 */
    DMXP_ATOMIC(uint64_t) zero[3];        /* 40..64 */
} dmxp_blob_class_desc;

/* A block header (§13.3), block j of a class at its headers_offset + 64 * j. */
typedef struct dmxp_block_header {
    DMXP_ATOMIC(uint64_t) tag;        /*  0: state | owner << 8 | generation << 32; CAS only */
    DMXP_ATOMIC(uint32_t) channel_id; /*  8: while QUEUED, the channel carrying it */
    DMXP_ATOMIC(uint32_t) length;     /* 12: informational, the committed length */
    DMXP_ATOMIC(uint64_t) position;   /* 16: while QUEUED, the position of its message */
    DMXP_ATOMIC(uint32_t) owner_pid;  /* 24: informational, the pid of the last owner */
    DMXP_ATOMIC(uint32_t) zero28;     /* 28 */
    DMXP_ATOMIC(uint64_t) zero[4];    /* 32..64 */
} dmxp_block_header;

/* Peer record (§11.2): 64 bytes, 64-aligned, record i at peer_table_offset + i * 64. */
typedef struct dmxp_peer_record {
    DMXP_ATOMIC(uint32_t) pid;             /*  0: owner's pid; 0 = free record */
    DMXP_ATOMIC(uint16_t) runtime;         /*  4: owner's sender_runtime code */
    DMXP_ATOMIC(uint16_t) role;            /*  6: DMXP_ROLE_PRODUCER / DMXP_ROLE_CONSUMER */
    DMXP_ATOMIC(uint64_t) start_time;      /*  8: /proc/<pid>/stat starttime; 0 = unknown */
    DMXP_ATOMIC(uint32_t) channel_id;      /* 16 */
    DMXP_ATOMIC(uint32_t) intent_count;    /* 20: positions the owner may own; 0 = none */
    DMXP_ATOMIC(uint64_t) intent_position; /* 24: first position of the intent */
    DMXP_ATOMIC(uint64_t) pid_ns;          /* 32: st_ino of the owner's pid namespace; 0: unknown */
    DMXP_ATOMIC(uint32_t) waiting;         /* 40: the wait count the owner is in: DMXP_WAITING_* */
    DMXP_ATOMIC(uint32_t) intent_flags;    /* 44: DMXP_INTENT_RUN: the intent is one run (§12.5) */
    DMXP_ATOMIC(uint64_t) zero[2];         /* 48..64 */
} dmxp_peer_record;

/* ChannelEntry: 384 bytes, 128-aligned, at 128 + id * 384. */
typedef struct dmxp_channel_entry {
    DMXP_ATOMIC(uint32_t) channel_id;        /*   0 */
    DMXP_ATOMIC(uint32_t) flags;             /*   4 */
    DMXP_ATOMIC(uint64_t) capacity;          /*   8 */
    DMXP_ATOMIC(uint64_t) band_offset;       /*  16 */
    DMXP_ATOMIC(uint32_t) state;             /*  24 */
    DMXP_ATOMIC(uint32_t) creator_pid;       /*  28 */
    DMXP_ATOMIC(uint32_t) not_empty_seq;     /*  32 */
    DMXP_ATOMIC(uint32_t) not_empty_waiters; /*  36 */
    DMXP_ATOMIC(uint32_t) not_full_seq;      /*  40 */
    DMXP_ATOMIC(uint32_t) not_full_waiters;  /*  44 */
    DMXP_ATOMIC(uint64_t) stuck_receive_position; /* 48: informational (§11.8); not written here */
    DMXP_ATOMIC(uint64_t) stuck_receive_since_ns; /* 56 */
    DMXP_ATOMIC(uint64_t) stuck_send_position;    /* 64 */
    DMXP_ATOMIC(uint64_t) stuck_send_since_ns;    /* 72 */
    DMXP_ATOMIC(uint32_t) max_message_size;  /*  80: with DMXP_CHANNEL_RUNS the limit (§12.1), else 0 */
    DMXP_ATOMIC(uint32_t) zero32;            /*  84 */
    DMXP_ATOMIC(uint64_t) zero0[5];          /*  88..128 */
    DMXP_ATOMIC(uint64_t) tail;              /* 128 */
    DMXP_ATOMIC(uint64_t) zero1[15];         /* 136..256 */
    DMXP_ATOMIC(uint64_t) head;              /* 256 */
    DMXP_ATOMIC(uint64_t) zero2[15];         /* 264..384 */
} dmxp_channel_entry;

/* MessageMeta as it lies in a slot (slot offset 8). */
typedef struct dmxp_slot_meta {
    DMXP_ATOMIC(uint64_t) message_id;     /*  0 */
    DMXP_ATOMIC(uint64_t) timestamp_ns;   /*  8 */
    DMXP_ATOMIC(uint32_t) channel_id;     /* 16 */
    DMXP_ATOMIC(uint32_t) message_type;   /* 20 */
    DMXP_ATOMIC(uint32_t) sender_pid;     /* 24 */
    DMXP_ATOMIC(uint16_t) sender_runtime; /* 28 */
    DMXP_ATOMIC(uint16_t) flags;          /* 30 */
    DMXP_ATOMIC(uint32_t) payload_len;    /* 32 */
    DMXP_ATOMIC(uint32_t) reserved;       /* 36 */
} dmxp_slot_meta;

/* Slot: 1088 bytes, 64-aligned, slot i of a band at band_offset + i * 1088. */
typedef struct dmxp_slot {
    DMXP_ATOMIC(uint64_t) sequence;                    /*    0 */
    dmxp_slot_meta meta;                               /*    8 */
    DMXP_ATOMIC(uint32_t) run_slots;                   /*   48: k of the run (§12.2); 0 = one slot */
    DMXP_ATOMIC(uint32_t) run_index;                   /*   52: this slot's place in its run */
    DMXP_ATOMIC(uint64_t) zero0;                       /*   56..64 */
    DMXP_ATOMIC(uint64_t) payload[DMXP_PAYLOAD_WORDS]; /*   64..1024 */
    DMXP_ATOMIC(uint64_t) zero1[8];                    /* 1024..1088 */
} dmxp_slot;

/* The header plus the channel table: HEADER_SIZE bytes at offset 0. */
typedef struct dmxp_segment_layout {
    dmxp_header header;
    dmxp_channel_entry channels[DMXP_MAX_CHANNELS];
} dmxp_segment_layout;

#define DMXP_ASSERT_AT(type, field, offset) \
    DMXP__STATIC_ASSERT(offsetof(type, field) == (offset), #type "." #field " must be at " #offset)

DMXP__STATIC_ASSERT(sizeof(DMXP_ATOMIC(uint16_t)) == 2 && sizeof(DMXP_ATOMIC(uint32_t)) == 4 &&
                        sizeof(DMXP_ATOMIC(uint64_t)) == 8,
                    "atomic integers must have the width of the plain ones");
DMXP__STATIC_ASSERT(DMXP__ALIGNOF(DMXP_ATOMIC(uint64_t)) == 8,
                    "u64 fields are 8-aligned in the layout");

DMXP_ASSERT_AT(dmxp_header, magic, 0);
DMXP_ASSERT_AT(dmxp_header, version, 8);
DMXP_ASSERT_AT(dmxp_header, max_channels, 12);
DMXP_ASSERT_AT(dmxp_header, channel_count, 16);
DMXP_ASSERT_AT(dmxp_header, reserved, 20);
DMXP_ASSERT_AT(dmxp_header, segment_size, 24);
DMXP_ASSERT_AT(dmxp_header, band_cursor, 32);
DMXP_ASSERT_AT(dmxp_header, creator_pid, 40);
DMXP_ASSERT_AT(dmxp_header, header_flags, 44);
DMXP_ASSERT_AT(dmxp_header, peer_table_offset, 48);
DMXP_ASSERT_AT(dmxp_header, peer_records, 56);
DMXP_ASSERT_AT(dmxp_header, zero32, 60);
DMXP_ASSERT_AT(dmxp_header, zero, 64);
DMXP_ASSERT_AT(dmxp_header, zero[0], DMXP_HEADER_BLOB_POOL_OFFSET); /* blob_pool_offset */
DMXP__STATIC_ASSERT(sizeof(dmxp_header) == 128, "header fields are 128 bytes");

DMXP_ASSERT_AT(dmxp_blob_pool_header, pool_magic, 0);
DMXP_ASSERT_AT(dmxp_blob_pool_header, class_count, 8);
DMXP_ASSERT_AT(dmxp_blob_pool_header, zero12, 12);
DMXP_ASSERT_AT(dmxp_blob_pool_header, pool_len, 16);
DMXP_ASSERT_AT(dmxp_blob_pool_header, free_seq, 24);
DMXP_ASSERT_AT(dmxp_blob_pool_header, free_waiters, 28);
DMXP_ASSERT_AT(dmxp_blob_pool_header, zero, 32);
DMXP__STATIC_ASSERT(sizeof(dmxp_blob_pool_header) == DMXP_BLOB_POOL_HEADER_SIZE,
                    "pool descriptor is 64 bytes");
DMXP_ASSERT_AT(dmxp_blob_class_desc, block_size, 0);
DMXP_ASSERT_AT(dmxp_blob_class_desc, block_count, 8);
DMXP_ASSERT_AT(dmxp_blob_class_desc, zero12, 12);
DMXP_ASSERT_AT(dmxp_blob_class_desc, headers_offset, 16);
DMXP_ASSERT_AT(dmxp_blob_class_desc, data_offset, 24);
DMXP_ASSERT_AT(dmxp_blob_class_desc, next_hint, 32);
DMXP_ASSERT_AT(dmxp_blob_class_desc, zero36, 36);
DMXP_ASSERT_AT(dmxp_blob_class_desc, zero, 40);
DMXP__STATIC_ASSERT(sizeof(dmxp_blob_class_desc) == DMXP_BLOB_CLASS_SIZE,
                    "class descriptor is 64 bytes");
DMXP_ASSERT_AT(dmxp_block_header, tag, 0);
DMXP_ASSERT_AT(dmxp_block_header, channel_id, 8);
DMXP_ASSERT_AT(dmxp_block_header, length, 12);
DMXP_ASSERT_AT(dmxp_block_header, position, 16);
DMXP_ASSERT_AT(dmxp_block_header, owner_pid, 24);
DMXP_ASSERT_AT(dmxp_block_header, zero28, 28);
DMXP_ASSERT_AT(dmxp_block_header, zero, 32);
DMXP__STATIC_ASSERT(sizeof(dmxp_block_header) == DMXP_BLOCK_HEADER_SIZE,
                    "block header is 64 bytes");
DMXP__STATIC_ASSERT(DMXP_BLOB_POOL_HEADER_SIZE + DMXP_MAX_BLOB_CLASSES * DMXP_BLOB_CLASS_SIZE ==
                        DMXP_BLOB_DESCRIPTOR_AREA,
                    "the descriptor area is 576 bytes");

DMXP_ASSERT_AT(dmxp_peer_record, pid, 0);
DMXP_ASSERT_AT(dmxp_peer_record, runtime, 4);
DMXP_ASSERT_AT(dmxp_peer_record, role, 6);
DMXP_ASSERT_AT(dmxp_peer_record, start_time, 8);
DMXP_ASSERT_AT(dmxp_peer_record, channel_id, 16);
DMXP_ASSERT_AT(dmxp_peer_record, intent_count, 20);
DMXP_ASSERT_AT(dmxp_peer_record, intent_position, 24);
DMXP_ASSERT_AT(dmxp_peer_record, pid_ns, 32);
DMXP_ASSERT_AT(dmxp_peer_record, waiting, 40);
DMXP_ASSERT_AT(dmxp_peer_record, intent_flags, 44);
DMXP_ASSERT_AT(dmxp_peer_record, zero, 48);
DMXP__STATIC_ASSERT(sizeof(dmxp_peer_record) == DMXP_PEER_RECORD_SIZE, "peer record is 64 bytes");
DMXP__STATIC_ASSERT(DMXP_PEER_RECORDS * DMXP_PEER_RECORD_SIZE == DMXP_PEER_TABLE_SIZE,
                    "the default peer table is 16384 bytes");
DMXP__STATIC_ASSERT((uint64_t)DMXP_MAX_PEER_RECORDS * DMXP_PEER_RECORD_SIZE == (UINT64_C(1) << 20),
                    "the largest peer table is 1 MiB");

DMXP_ASSERT_AT(dmxp_channel_entry, channel_id, 0);
DMXP_ASSERT_AT(dmxp_channel_entry, flags, 4);
DMXP_ASSERT_AT(dmxp_channel_entry, capacity, 8);
DMXP_ASSERT_AT(dmxp_channel_entry, band_offset, 16);
DMXP_ASSERT_AT(dmxp_channel_entry, state, 24);
DMXP_ASSERT_AT(dmxp_channel_entry, creator_pid, 28);
DMXP_ASSERT_AT(dmxp_channel_entry, not_empty_seq, 32);
DMXP_ASSERT_AT(dmxp_channel_entry, not_empty_waiters, 36);
DMXP_ASSERT_AT(dmxp_channel_entry, not_full_seq, 40);
DMXP_ASSERT_AT(dmxp_channel_entry, not_full_waiters, 44);
DMXP_ASSERT_AT(dmxp_channel_entry, stuck_receive_position, 48);
DMXP_ASSERT_AT(dmxp_channel_entry, stuck_receive_since_ns, 56);
DMXP_ASSERT_AT(dmxp_channel_entry, stuck_send_position, 64);
DMXP_ASSERT_AT(dmxp_channel_entry, stuck_send_since_ns, 72);
DMXP_ASSERT_AT(dmxp_channel_entry, max_message_size, 80);
DMXP_ASSERT_AT(dmxp_channel_entry, zero32, 84);
DMXP_ASSERT_AT(dmxp_channel_entry, zero0, 88);
DMXP_ASSERT_AT(dmxp_channel_entry, tail, 128);
DMXP_ASSERT_AT(dmxp_channel_entry, zero1, 136);
DMXP_ASSERT_AT(dmxp_channel_entry, head, 256);
DMXP_ASSERT_AT(dmxp_channel_entry, zero2, 264);
DMXP__STATIC_ASSERT(sizeof(dmxp_channel_entry) == DMXP_CHANNEL_ENTRY_SIZE, "entry stride is 384");

DMXP_ASSERT_AT(dmxp_slot_meta, message_id, 0);
DMXP_ASSERT_AT(dmxp_slot_meta, timestamp_ns, 8);
DMXP_ASSERT_AT(dmxp_slot_meta, channel_id, 16);
DMXP_ASSERT_AT(dmxp_slot_meta, message_type, 20);
DMXP_ASSERT_AT(dmxp_slot_meta, sender_pid, 24);
DMXP_ASSERT_AT(dmxp_slot_meta, sender_runtime, 28);
DMXP_ASSERT_AT(dmxp_slot_meta, flags, 30);
DMXP_ASSERT_AT(dmxp_slot_meta, payload_len, 32);
DMXP_ASSERT_AT(dmxp_slot_meta, reserved, 36);
DMXP__STATIC_ASSERT(sizeof(dmxp_slot_meta) == 40, "MessageMeta is 40 bytes");

DMXP_ASSERT_AT(dmxp_slot, sequence, 0);
DMXP_ASSERT_AT(dmxp_slot, meta, 8);
DMXP_ASSERT_AT(dmxp_slot, meta.message_id, 8);
DMXP_ASSERT_AT(dmxp_slot, meta.timestamp_ns, 16);
DMXP_ASSERT_AT(dmxp_slot, meta.channel_id, 24);
DMXP_ASSERT_AT(dmxp_slot, meta.message_type, 28);
DMXP_ASSERT_AT(dmxp_slot, meta.sender_pid, 32);
DMXP_ASSERT_AT(dmxp_slot, meta.sender_runtime, 36);
DMXP_ASSERT_AT(dmxp_slot, meta.flags, 38);
DMXP_ASSERT_AT(dmxp_slot, meta.payload_len, 40);
DMXP_ASSERT_AT(dmxp_slot, meta.reserved, 44);
DMXP_ASSERT_AT(dmxp_slot, run_slots, 48);
DMXP_ASSERT_AT(dmxp_slot, run_index, 52);
DMXP_ASSERT_AT(dmxp_slot, zero0, 56);
DMXP_ASSERT_AT(dmxp_slot, payload, DMXP_PAYLOAD_OFFSET);
DMXP_ASSERT_AT(dmxp_slot, zero1, 1024);
DMXP__STATIC_ASSERT(sizeof(dmxp_slot) == DMXP_SLOT_SIZE, "slot stride is 1088");
DMXP__STATIC_ASSERT(DMXP_PAYLOAD_WORDS * 8 == DMXP_MSG_INLINE, "payload is 120 words");

DMXP_ASSERT_AT(dmxp_segment_layout, header, 0);
DMXP_ASSERT_AT(dmxp_segment_layout, channels, DMXP_CHANNEL_TABLE_OFFSET);
DMXP_ASSERT_AT(dmxp_segment_layout, channels[3], 1280);         /* PROTOCOL.md §2.3 example */
DMXP_ASSERT_AT(dmxp_segment_layout, channels[3].state, 1304);
DMXP_ASSERT_AT(dmxp_segment_layout, channels[3].not_empty_seq, 1312);
DMXP_ASSERT_AT(dmxp_segment_layout, channels[3].tail, 1408);
DMXP_ASSERT_AT(dmxp_segment_layout, channels[3].head, 1536);
DMXP__STATIC_ASSERT(sizeof(dmxp_segment_layout) == DMXP_HEADER_SIZE, "header + table is 98432");

/* ------------------------------------------------------------------------------------------ */
/* Status codes                                                                               */
/* ------------------------------------------------------------------------------------------ */

/* Negative values are errors. The groups mirror the Rust core: Error, Corruption (a bad field
 * read from the segment), SendError and RecvError; plus OS-level failures of this client. */
typedef enum dmxp_status {
    DMXP_OK = 0,
    /* Not an error: dmxp_channel_arm_message_wait / dmxp_channel_arm_free_slots_wait armed
     * nothing, because the ring was ready (a message at head, the slots free) or its wait word
     * had already moved: receive (send) now, and arm again if that finds nothing. (1 is used
     * inside the header; DMXP_ARMED, the arming calls' other answer, is DMXP_OK.) */
    DMXP_READY = 2,

    /* Error (segment and channel table) */
    DMXP_E_REGION_MISALIGNED = -1,  /* base not 128-aligned; found = address, value2 = 128 */
    DMXP_E_REGION_TOO_SMALL = -2,   /* found = bytes available, value2 = bytes needed */
    DMXP_E_NOT_READY = -3,          /* magic still 0: being created, or its creator died */
    DMXP_E_ALREADY_FORMATTED = -4,  /* refused to format memory whose magic is set */
    DMXP_E_INVALID_CHANNEL_ID = -5, /* found = id (>= 256) */
    DMXP_E_INVALID_CAPACITY = -6,   /* found = requested capacity */
    DMXP_E_NOT_FOUND = -7,          /* channel not created; channel = id */
    DMXP_E_BEING_CREATED = -8,      /* another process holds the creation claim; channel = id */
    DMXP_E_CHANNEL_EXISTS = -9,     /* strict create found it; channel = id, found = capacity */
    DMXP_E_OUT_OF_SPACE = -10,      /* found = bytes needed, value2 = bytes available */
    DMXP_E_BUSY = -11,              /* gave up after DMXP_RETRY_LIMIT contended retries */
    DMXP_E_PEER_TABLE_FULL = -12,   /* every record of the peer table is taken (handle
                                       unprotected); found = the table's records */
    DMXP_E_INVALID_MAX_MESSAGE_SIZE = -13, /* a channel creation asked for a limit it cannot
                                              have (§12.1): found = the limit asked for,
                                              value2 = capacity, value3 = the most allowed
                                              (capacity * 960, below 2^32) */

    /* Corruption: a field read from the segment is invalid (dmxp_error.field names it) */
    DMXP_E_BAD_MAGIC = -20,                /* found = magic */
    DMXP_E_UNSUPPORTED_VERSION = -21,      /* found = version */
    DMXP_E_WRONG_MAX_CHANNELS = -22,       /* found = max_channels */
    DMXP_E_CHANNEL_COUNT_TOO_LARGE = -23,  /* found = channel_count */
    DMXP_E_SEGMENT_SIZE_MISMATCH = -24,    /* found = segment_size, value2 = bytes mapped */
    DMXP_E_BAND_CURSOR_OUT_OF_RANGE = -25, /* found = band_cursor, value2 = segment length */
    DMXP_E_CHANNEL_ID_MISMATCH = -26,      /* channel, found = channel_id field */
    DMXP_E_UNKNOWN_CHANNEL_STATE = -27,    /* channel, found = state */
    DMXP_E_CAPACITY_ZERO = -28,            /* channel: READY but capacity 0 */
    DMXP_E_CAPACITY_NOT_POWER_OF_TWO = -29, /* channel, found = capacity */
    DMXP_E_CAPACITY_TOO_SMALL = -30,       /* channel, found = capacity */
    DMXP_E_CAPACITY_TOO_LARGE = -31,       /* channel, found = capacity */
    DMXP_E_BAND_MISALIGNED = -32,          /* channel, found = band_offset */
    DMXP_E_BAND_OVERLAPS_HEADER = -33,     /* channel, found = band_offset */
    DMXP_E_BAND_OUTSIDE_SEGMENT = -34, /* channel, found = band_offset, value2 = band length,
                                          value3 = segment length */
    DMXP_E_BANDS_OVERLAP = -35,        /* channel, found = the other channel */
    DMXP_E_PEER_TABLE_OUT_OF_RANGE = -36, /* found = peer_table_offset, value2 = segment length,
                                             value3 = the table's bytes (records * 64) */
    DMXP_E_PEER_TABLE_OVERLAPS_BAND = -37, /* channel = the band's, found = peer_table_offset */
    DMXP_E_PEER_RECORDS_OUT_OF_RANGE = -38, /* found = peer_records: neither 0 nor 256..16384 */
    DMXP_E_UNKNOWN_CHANNEL_FLAGS = -50,     /* entry check #10 (§12.1): channel, found = flags
                                               (a bit other than DMXP_CHANNEL_RUNS) */
    DMXP_E_MAX_MESSAGE_SIZE_OUT_OF_RANGE = -51, /* entry check #11: channel, found =
                                                   max_message_size, value2 = capacity, value3
                                                   = flags */
    DMXP_E_RUNS_NOT_SUPPORTED = -52, /* §12.1, refused on request (not corruption):
                                        dmxp_channel_require_single_slot found the channel
                                        carries runs (DMXP_CHANNEL_RUNS); channel = id,
                                        found = its max message size, value2 = flags */
    /* The blob pool (PROTOCOL.md §13.2), checked at attach; and entry check #10 of §13.1 */
    DMXP_E_BLOB_POOL_OUT_OF_RANGE = -53, /* #1: found = blob_pool_offset, value2 = segment
                                            length (not 64-aligned, inside the header, or no
                                            room for the 576-byte descriptor area) */
    DMXP_E_BLOB_POOL_BAD_MAGIC = -54,    /* #2: found = pool_magic */
    DMXP_E_BLOB_POOL_BAD_GEOMETRY = -55, /* #3: found = class_count, value2 = pool_len, value3
                                            = blob_pool_offset */
    DMXP_E_BLOB_CLASS_BAD = -56,         /* #4, #5: found = the class, field = what is wrong
                                            with it ("block_size", "block_count",
                                            "headers_offset", "data_offset"), value2 = its
                                            value (for an overlap: the other class) */
    DMXP_E_BLOBS_WITHOUT_POOL = -57,     /* §13.1: channel has DMXP_CHANNEL_BLOBS in a segment
                                            without a pool; found = flags */
    DMXP_E_BLOB_POOL_OVERLAP = -58,      /* a channel band (channel = its id) or the peer
                                            table (channel -1) shares bytes with the pool:
                                            found = the band's or table's offset, value2 =
                                            blob_pool_offset, value3 = pool_len */

    /* SendError / RecvError */
    DMXP_E_FULL = -40,             /* every slot holds an unconsumed message */
    DMXP_E_TOO_LARGE = -41,        /* payload longer than the channel's max message size
                                      (dmxp_channel_max_message_size: 960 on a channel without
                                      runs), or a batch item longer than 960; nothing sent.
                                      dmxp_check_message_size names length and limit. A loan
                                      longer than the largest block (dmxp_channel_blob_max),
                                      a commit longer than its loan */
    DMXP_E_RESERVED_FLAGS = -42,   /* send flags set protocol bits (0x00FF) */
    DMXP_E_TIMEOUT = -43,          /* a blocking call reached its deadline */
    DMXP_E_EMPTY = -44,            /* no published message at the head */
    DMXP_E_BUFFER_TOO_SMALL = -45, /* nothing consumed; meta->payload_len = bytes needed */
    DMXP_E_CORRUPT_MESSAGE = -46,  /* consumed and dropped: payload_len > 960 outside a run,
                                      or a run that is cut short or inconsistent (§12.4), or a
                                      bad, stale or forged blob reference (§13.5, its block left
                                      alone; dmxp_channel_blob_bad_refs counts them);
                                      meta->message_id and meta->payload_len say which */
    DMXP_E_LOST = -47,             /* consumed a LOST tombstone; meta->message_id says which */
    DMXP_E_REVOKED = -48,          /* a peer repaired the claimed position before this call
                                      finished with it (PROTOCOL.md §11.7): nothing more was
                                      stored into the slot; the message_id (send) or
                                      meta->message_id (receive) says which position. A revoked
                                      send may or may not have been delivered; a revoked
                                      receive delivered nothing (the copy is discarded). Blobs
                                      (§13.6): a commit whose loan, or a release whose block,
                                      was reclaimed meanwhile (judged dead) */

    /* This client */
    DMXP_E_OS = -60,               /* a system call failed; dmxp_error.os_errno, .field = call */
    DMXP_E_NO_SEGMENT = -61,       /* no shm object / file of that name */
    DMXP_E_SEGMENT_EXISTS = -62,   /* exclusive create found the name taken */
    DMXP_E_INVALID_ARGUMENT = -63, /* a NULL pointer, a malformed name (detail says why), ... */
    DMXP_E_UNTRUSTED = -64,        /* the object failed a check of PROTOCOL.md §3.4: field names
                                      it ("type", "owner", "mode", "owner and mode", "symlink",
                                      "directory"), found = owner uid, value2 = mode bits
                                      (st_mode & 07777), value3 = the mode asked for; detail
                                      is the message. Nothing was mapped. */
    DMXP_E_UNSUPPORTED = -65,      /* this system cannot wait from an event loop (PROTOCOL.md
                                      §7.4): io_uring_setup failed (no io_uring, the sysctl
                                      kernel.io_uring_disabled, a seccomp filter: os_errno
                                      says), the kernel has no IORING_OP_FUTEX_WAIT (Linux
                                      6.7), or DMXP_ASYNC_POLL is set; field names which, and
                                      detail explains. Poll instead (dmxp_wait_fd_open) */

    /* Blobs (PROTOCOL.md §13): loans, commits, receives and releases */
    DMXP_E_POOL_EXHAUSTED = -70,     /* every block of every class that could hold the loan is
                                        taken (after one dmxp_blob_reclaim); nothing loaned */
    DMXP_E_NOT_A_BLOB_CHANNEL = -71, /* the channel has no DMXP_CHANNEL_BLOBS (or the handle
                                        no pool): no loan, no blob receive */
    DMXP_E_NOT_REGISTERED = -72,     /* a loan needs a handle registered as a producer, a blob
                                        receive one registered as a consumer, by this process
                                        (the block's owner is the record, §13.3) */
    DMXP_E_NOT_A_BLOB = -73,         /* dmxp_blob_receive found an inline message at the head
                                        (or a run): nothing consumed; meta->message_id says
                                        which. Receive it with dmxp_try_recv */
    DMXP_E_NO_BLOB_POOL = -74,       /* a channel creation asked for .blobs in a segment
                                        without a pool; channel = id. Nothing written */
} dmxp_status;

/* What dmxp_channel_arm_message_wait / _free_slots_wait return when a wait is armed: poll the
 * wait fd (DMXP_READY: do not wait, the ring is ready). */
#define DMXP_ARMED DMXP_OK

/* Details of a failure. `channel` is -1 for a header field or when no channel is involved. */
typedef struct dmxp_error {
    dmxp_status status;
    int32_t channel;
    const char *field; /* layout field at fault ("magic", "capacity", ...), or the failed call */
    uint64_t found;    /* see the comments of dmxp_status */
    uint64_t value2;
    uint64_t value3;
    int os_errno;
    /* Empty, or (DMXP_E_UNTRUSTED, a malformed name) the whole explanation, naming the object:
     * "shm segment /x: owned by uid 65534 with mode 0666; expected owner uid 0 and a mode
     * within 0600". dmxp_error_format prints it (with a hint for owner and mode). */
    char detail[384];
} dmxp_error;

/* ------------------------------------------------------------------------------------------ */
/* Handles and message metadata                                                               */
/* ------------------------------------------------------------------------------------------ */

/* One class of a blob pool as validated at attach (PROTOCOL.md §13.2), in private memory:
 * every block address is computed from these values, never from the segment again. */
typedef struct dmxp_blob_class_geometry {
    uint64_t block_size;     /* bytes per block: a multiple of 64, 64..2^31 */
    uint64_t headers_offset; /* segment offset of the block headers (block_count x 64 bytes) */
    uint64_t data_offset;    /* segment offset of block 0; block j at + j x block_size */
    uint32_t block_count;    /* 1..2^24 */
    uint32_t reserved;
} dmxp_blob_class_geometry;

/* A segment's blob pool as validated at attach (or made at format): class_count 0 = no pool.
 * Classes are in strictly increasing block_size order. */
typedef struct dmxp_blob_pool_geometry {
    uint64_t offset; /* blob_pool_offset: the descriptor (dmxp_blob_pool_header) */
    uint64_t len;    /* pool_len */
    uint32_t class_count;
    uint32_t reserved;
    dmxp_blob_class_geometry classes[DMXP_MAX_BLOB_CLASSES];
} dmxp_blob_pool_geometry;

typedef struct dmxp_segment {
    unsigned char *base; /* 128-aligned start of the segment */
    size_t mapped_len;   /* bytes mapped (or given) */
    uint64_t len;        /* validated segment length (segment_size, or mapped_len if 0) */
    int mapped;          /* 1: dmxp_segment_close() unmaps base */
    uint32_t pid;        /* getpid() at open: the sender_pid of messages sent through it */
    /* Records of the peer table (§11.1), read once when the segment was attached or formatted
     * (the header's peer_records, or DMXP_PEER_RECORDS when it is 0) and validated with
     * peer_table_offset: every table operation through this handle and the channels opened
     * from it uses this many, so a peer that rewrites the field later cannot make them reach
     * past the table validated. */
    uint32_t peer_records;
    /* The blob pool (PROTOCOL.md §13), validated when the segment was attached (or written
     * when it was formatted) and never read from the header again; class_count 0: none. */
    dmxp_blob_pool_geometry pool;
} dmxp_segment;

/* A non-blocking call's watch for a stuck channel (one per role and handle). */
typedef struct dmxp__watch {
    DMXP_ATOMIC(uint32_t) misses;   /* empty receives / full sends in a row */
    DMXP_ATOMIC(uint64_t) position; /* the stuck position being watched */
    DMXP_ATOMIC(int64_t) since;     /* when it was first seen stuck there (ns); 0 = not watching */
    DMXP_ATOMIC(int64_t) next;      /* when the next repair pass is due (ns) */
    DMXP_ATOMIC(int64_t) pause;     /* the pause before it: doubles while the position is stuck */
    DMXP_ATOMIC(int64_t) last;      /* when the last pass ran (ns; `since` before the first) */
} dmxp__watch;

typedef struct dmxp_channel {
    dmxp_channel_entry *entry;
    dmxp_slot *slots;     /* base + band_offset, cached at open */
    uint64_t capacity;    /* cached at open; never re-read for indexing */
    uint64_t mask;        /* capacity - 1 */
    uint64_t band_offset;
    uint32_t id;
    uint32_t pid;
    /* The entry's flags and message limit (§12.1), validated and cached at open: never
     * re-read. max_message is DMXP_MSG_INLINE on a channel without DMXP_CHANNEL_RUNS. */
    uint32_t channel_flags;
    uint32_t max_message;
    unsigned char *base;  /* the segment, for the peer table (§11) */
    uint64_t segment_len; /* validated segment length */
    uint32_t peer_records; /* the segment handle's: records of the peer table (§11.1) */
    /* This handle's peer records (dmxp_channel_register), NULL when not registered. */
    dmxp_peer_record *send_peer;
    dmxp_peer_record *recv_peer;
    /* State the calls keep per handle, updated with relaxed atomics even through a const
     * handle (so never define a dmxp_channel const): the miss streaks and stuck watches of
     * the non-blocking calls, the unblock timeout (dmxp_channel_set_unblock_timeout), the
     * timestamp switch (dmxp_channel_set_timestamps), and two counters (dmxp_channel_revoked,
     * dmxp_channel_stuck_looks). Copy a handle only while no thread uses it. */
    dmxp__watch send_watch;
    dmxp__watch recv_watch;
    DMXP_ATOMIC(uint64_t) unblock_ns;  /* §11.8 unblock timeout; 0 or UINT64_MAX: never */
    DMXP_ATOMIC(uint64_t) revoked;     /* positions of this handle's claims revoked (§11.7) */
    DMXP_ATOMIC(uint64_t) stuck_looks; /* times a call read the other side's cursor for §11.6 */
    DMXP_ATOMIC(uint32_t) timestamps;  /* 1: sends stamp timestamp_ns (default); 0: they write 0 */
    /* Blobs (PROTOCOL.md §13). The segment's pool geometry as validated at attach (class_count
     * 0: no pool), copied at open: every block address comes from it. The indexes of
     * send_peer and recv_peer in the peer table, the owners (index + 1) of this handle's loans
     * and received blocks (§13.3). The count of blob references found bad, stale or forged
     * (consumed and dropped), and when a loan last ran dmxp_blob_reclaim (ns). */
    dmxp_blob_pool_geometry pool;
    uint32_t send_index;
    uint32_t recv_index;
    DMXP_ATOMIC(uint64_t) bad_refs;
    DMXP_ATOMIC(int64_t) reclaim_ns;
} dmxp_channel;

/* A message's metadata as copied out of its slot. */
typedef struct dmxp_meta {
    uint64_t message_id;
    uint64_t timestamp_ns;
    uint32_t channel_id;
    uint32_t message_type;
    uint32_t sender_pid;
    uint16_t sender_runtime;
    uint16_t flags;
    uint32_t payload_len;
} dmxp_meta;

/* A reference to one use of a pool block, as a message carries it (PROTOCOL.md §13.4): its
 * 16-byte payload is class (byte 0), block (bytes 4..8), generation (8..12), length (12..16). */
typedef struct dmxp_blob_ref {
    uint8_t class_index; /* the size class */
    uint32_t block;      /* the block within the class */
    uint32_t generation; /* the generation of the loan that wrote it */
    uint32_t length;     /* bytes of the block that are the message */
} dmxp_blob_ref;

/* A loaned block (PROTOCOL.md §13.3), from dmxp_blob_loan: this producer's to write until
 * dmxp_blob_commit sends it or dmxp_blob_abandon gives it back (every loan must end in one of
 * the two: a loan left behind is reclaimed only when the handle's record is freed or left,
 * dmxp_blob_reclaim). The public fields are read-only.
 *
 * `data` is the block's first byte in this process's mapping (64-aligned), and `len` bytes
 * from it are loaned. It is live segment memory that peers can write (a buggy or hostile one,
 * or a new owner after a reclaim that judged this producer dead, §13.6), so under the header's
 * memory model it is accessed only with atomics: write it with dmxp_loan_write (8-byte relaxed
 * atomic words; the partial words at either end are merged) or dmxp_loan_store_word, read it
 * back with dmxp_loan_read. The raw pointer is for what needs an address and is not a C access
 * of this process: a system call that fills it (read(2), recv(2), a DMA engine), or code of
 * your own that uses atomic or volatile word accesses. Plain stores or memcpy through it race
 * with such peers, which is undefined behaviour in C; the protocol does not forbid it to you,
 * it forbids the header. */
typedef struct dmxp_loan {
    unsigned char *data; /* the loaned bytes (see above); NULL when the loan is not live */
    size_t len;          /* bytes loaned: the length asked for; a commit sends at most this */
    size_t block_size;   /* the block's size (>= len) */
    dmxp_blob_ref ref;   /* the block and its generation; ref.length = len */
    /* The loan's own: */
    const dmxp_channel *channel;
    dmxp_block_header *header;
    DMXP_ATOMIC(uint64_t) *words;
    uint32_t owner; /* the producer record's index + 1, as in the tag */
    uint32_t live;  /* 1 from the loan until its commit (or a failed one) or abandon */
} dmxp_loan;

/* A received block, read in place (PROTOCOL.md §13.5), from dmxp_blob_receive: this consumer's
 * until dmxp_blob_release gives it back; the ring slot that carried its reference is already
 * free. The public fields are read-only. `data` points at the block in this mapping and `len`
 * bytes of it are the message; read them with dmxp_blob_read or dmxp_blob_load_word (8-byte
 * relaxed atomic words), for the reasons given at dmxp_loan: a peer that reclaimed the block
 * (this consumer judged dead, §13.6) or a hostile one may write it meanwhile, and then
 * dmxp_blob_release reports DMXP_E_REVOKED: check it before acting on what was read. */
typedef struct dmxp_blob_view {
    const unsigned char *data; /* the message's bytes (see above); NULL when not live */
    size_t len;                /* its length (meta.payload_len too) */
    dmxp_meta meta;            /* the message's metadata; flags has DMXP_FLAG_BLOB */
    dmxp_blob_ref ref;         /* the block it came in */
    /* The view's own: */
    const dmxp_channel *channel;
    dmxp_block_header *header;
    DMXP_ATOMIC(uint64_t) *words;
    uint32_t owner; /* the consumer record's index + 1, as in the tag */
    uint32_t live;  /* 1 from the receive until the release */
} dmxp_blob_view;

/* What a sender chooses; NULL means all zero. The client fills message_id, timestamp_ns
 * (CLOCK_MONOTONIC, or 0 after dmxp_channel_set_timestamps(ch, 0)), channel_id, sender_pid,
 * sender_runtime (2 = C) and payload_len. */
typedef struct dmxp_send_opts {
    uint32_t message_type;
    uint16_t flags; /* application bits 0xFF00 only */
} dmxp_send_opts;

/* Called by dmxp_try_recv_batch for each message; the slot is already freed (so the message
 * can no longer be revoked) and `payload` points into a private buffer valid for the duration
 * of the call. */
typedef void (*dmxp_deliver_fn)(void *ctx, const dmxp_meta *meta, const void *payload,
                                size_t len);

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static inline const char *dmxp_status_name(dmxp_status s) {
    switch (s) {
#define DMXP__NAME(x) \
    case x:           \
        return #x;
        DMXP__NAME(DMXP_OK)
        DMXP__NAME(DMXP_READY)
        DMXP__NAME(DMXP_E_REGION_MISALIGNED)
        DMXP__NAME(DMXP_E_REGION_TOO_SMALL)
        DMXP__NAME(DMXP_E_NOT_READY)
        DMXP__NAME(DMXP_E_ALREADY_FORMATTED)
        DMXP__NAME(DMXP_E_INVALID_CHANNEL_ID)
        DMXP__NAME(DMXP_E_INVALID_CAPACITY)
        DMXP__NAME(DMXP_E_NOT_FOUND)
        DMXP__NAME(DMXP_E_BEING_CREATED)
        DMXP__NAME(DMXP_E_CHANNEL_EXISTS)
        DMXP__NAME(DMXP_E_OUT_OF_SPACE)
        DMXP__NAME(DMXP_E_BUSY)
        DMXP__NAME(DMXP_E_PEER_TABLE_FULL)
        DMXP__NAME(DMXP_E_INVALID_MAX_MESSAGE_SIZE)
        DMXP__NAME(DMXP_E_BAD_MAGIC)
        DMXP__NAME(DMXP_E_UNSUPPORTED_VERSION)
        DMXP__NAME(DMXP_E_WRONG_MAX_CHANNELS)
        DMXP__NAME(DMXP_E_CHANNEL_COUNT_TOO_LARGE)
        DMXP__NAME(DMXP_E_SEGMENT_SIZE_MISMATCH)
        DMXP__NAME(DMXP_E_BAND_CURSOR_OUT_OF_RANGE)
        DMXP__NAME(DMXP_E_CHANNEL_ID_MISMATCH)
        DMXP__NAME(DMXP_E_UNKNOWN_CHANNEL_STATE)
        DMXP__NAME(DMXP_E_CAPACITY_ZERO)
        DMXP__NAME(DMXP_E_CAPACITY_NOT_POWER_OF_TWO)
        DMXP__NAME(DMXP_E_CAPACITY_TOO_SMALL)
        DMXP__NAME(DMXP_E_CAPACITY_TOO_LARGE)
        DMXP__NAME(DMXP_E_BAND_MISALIGNED)
        DMXP__NAME(DMXP_E_BAND_OVERLAPS_HEADER)
        DMXP__NAME(DMXP_E_BAND_OUTSIDE_SEGMENT)
        DMXP__NAME(DMXP_E_BANDS_OVERLAP)
        DMXP__NAME(DMXP_E_PEER_TABLE_OUT_OF_RANGE)
        DMXP__NAME(DMXP_E_PEER_TABLE_OVERLAPS_BAND)
        DMXP__NAME(DMXP_E_PEER_RECORDS_OUT_OF_RANGE)
        DMXP__NAME(DMXP_E_UNKNOWN_CHANNEL_FLAGS)
        DMXP__NAME(DMXP_E_MAX_MESSAGE_SIZE_OUT_OF_RANGE)
        DMXP__NAME(DMXP_E_RUNS_NOT_SUPPORTED)
        DMXP__NAME(DMXP_E_BLOB_POOL_OUT_OF_RANGE)
        DMXP__NAME(DMXP_E_BLOB_POOL_BAD_MAGIC)
        DMXP__NAME(DMXP_E_BLOB_POOL_BAD_GEOMETRY)
        DMXP__NAME(DMXP_E_BLOB_CLASS_BAD)
        DMXP__NAME(DMXP_E_BLOBS_WITHOUT_POOL)
        DMXP__NAME(DMXP_E_BLOB_POOL_OVERLAP)
        DMXP__NAME(DMXP_E_FULL)
        DMXP__NAME(DMXP_E_TOO_LARGE)
        DMXP__NAME(DMXP_E_RESERVED_FLAGS)
        DMXP__NAME(DMXP_E_TIMEOUT)
        DMXP__NAME(DMXP_E_EMPTY)
        DMXP__NAME(DMXP_E_BUFFER_TOO_SMALL)
        DMXP__NAME(DMXP_E_CORRUPT_MESSAGE)
        DMXP__NAME(DMXP_E_LOST)
        DMXP__NAME(DMXP_E_REVOKED)
        DMXP__NAME(DMXP_E_OS)
        DMXP__NAME(DMXP_E_NO_SEGMENT)
        DMXP__NAME(DMXP_E_SEGMENT_EXISTS)
        DMXP__NAME(DMXP_E_INVALID_ARGUMENT)
        DMXP__NAME(DMXP_E_UNTRUSTED)
        DMXP__NAME(DMXP_E_UNSUPPORTED)
        DMXP__NAME(DMXP_E_POOL_EXHAUSTED)
        DMXP__NAME(DMXP_E_NOT_A_BLOB_CHANNEL)
        DMXP__NAME(DMXP_E_NOT_REGISTERED)
        DMXP__NAME(DMXP_E_NOT_A_BLOB)
        DMXP__NAME(DMXP_E_NO_BLOB_POOL)
#undef DMXP__NAME
    }
    return "DMXP_E_UNKNOWN";
}

/* A one-line description of a status (no values: see dmxp_error_format for those). */
static inline const char *dmxp_strerror(dmxp_status s) {
    switch (s) {
    case DMXP_OK: return "ok";
    case DMXP_READY: return "ready: the ring is ready now, nothing was armed (receive or send now)";
    case DMXP_E_REGION_MISALIGNED: return "segment base is not aligned to 128 bytes";
    case DMXP_E_REGION_TOO_SMALL: return "region too small for a DMXP segment";
    case DMXP_E_NOT_READY: return "segment is still being created (magic not yet set), or its creator died";
    case DMXP_E_ALREADY_FORMATTED: return "region already holds a segment; not formatting";
    case DMXP_E_INVALID_CHANNEL_ID: return "channel id out of range (0..256)";
    case DMXP_E_INVALID_CAPACITY: return "capacity must be a power of two between 2 and 2^32";
    case DMXP_E_NOT_FOUND: return "channel does not exist";
    case DMXP_E_BEING_CREATED: return "channel is being created by another process";
    case DMXP_E_CHANNEL_EXISTS: return "channel already exists";
    case DMXP_E_OUT_OF_SPACE: return "segment out of space for the channel's band";
    case DMXP_E_BUSY: return "gave up after too many contended retries";
    case DMXP_E_PEER_TABLE_FULL: return "peer table full: handle not registered (no crash protection)";
    case DMXP_E_INVALID_MAX_MESSAGE_SIZE: return "max message size must be at most capacity * 960 bytes (and below 2^32)";
    case DMXP_E_BAD_MAGIC: return "corrupt segment: bad magic";
    case DMXP_E_UNSUPPORTED_VERSION: return "corrupt segment: unsupported layout version";
    case DMXP_E_WRONG_MAX_CHANNELS: return "corrupt segment: max_channels is not 256";
    case DMXP_E_CHANNEL_COUNT_TOO_LARGE: return "corrupt segment: channel_count exceeds 256";
    case DMXP_E_SEGMENT_SIZE_MISMATCH: return "corrupt segment: segment_size does not fit the mapping";
    case DMXP_E_BAND_CURSOR_OUT_OF_RANGE: return "corrupt segment: band_cursor out of range";
    case DMXP_E_CHANNEL_ID_MISMATCH: return "corrupt segment: channel_id differs from the entry index";
    case DMXP_E_UNKNOWN_CHANNEL_STATE: return "corrupt segment: unknown channel state";
    case DMXP_E_CAPACITY_ZERO: return "corrupt segment: channel READY but capacity 0";
    case DMXP_E_CAPACITY_NOT_POWER_OF_TWO: return "corrupt segment: capacity not a power of two";
    case DMXP_E_CAPACITY_TOO_SMALL: return "corrupt segment: capacity below 2";
    case DMXP_E_CAPACITY_TOO_LARGE: return "corrupt segment: capacity above 2^32";
    case DMXP_E_BAND_MISALIGNED: return "corrupt segment: band_offset not a multiple of 64";
    case DMXP_E_BAND_OVERLAPS_HEADER: return "corrupt segment: band lies inside the header";
    case DMXP_E_BAND_OUTSIDE_SEGMENT: return "corrupt segment: band runs past the segment";
    case DMXP_E_BANDS_OVERLAP: return "corrupt segment: two channels' bands overlap";
    case DMXP_E_PEER_TABLE_OUT_OF_RANGE: return "corrupt segment: peer_table_offset out of range";
    case DMXP_E_PEER_TABLE_OVERLAPS_BAND: return "corrupt segment: peer table overlaps a channel band";
    case DMXP_E_PEER_RECORDS_OUT_OF_RANGE: return "corrupt segment: peer_records out of range";
    case DMXP_E_UNKNOWN_CHANNEL_FLAGS: return "corrupt segment: unknown channel flags";
    case DMXP_E_MAX_MESSAGE_SIZE_OUT_OF_RANGE: return "corrupt segment: max_message_size out of range";
    case DMXP_E_RUNS_NOT_SUPPORTED: return "channel carries messages longer than 960 bytes (runs), refused as asked";
    case DMXP_E_BLOB_POOL_OUT_OF_RANGE: return "corrupt segment: blob_pool_offset out of range";
    case DMXP_E_BLOB_POOL_BAD_MAGIC: return "corrupt segment: bad blob pool magic";
    case DMXP_E_BLOB_POOL_BAD_GEOMETRY: return "corrupt segment: blob pool class_count or pool_len out of range";
    case DMXP_E_BLOB_CLASS_BAD: return "corrupt segment: a blob pool class is invalid";
    case DMXP_E_BLOBS_WITHOUT_POOL: return "corrupt segment: a channel carries blobs in a segment without a blob pool";
    case DMXP_E_BLOB_POOL_OVERLAP: return "corrupt segment: the blob pool overlaps a channel band or the peer table";
    case DMXP_E_FULL: return "channel full";
    case DMXP_E_TOO_LARGE: return "message exceeds the channel's max message size";
    case DMXP_E_RESERVED_FLAGS: return "flags set protocol-reserved bits (0x00ff)";
    case DMXP_E_TIMEOUT: return "timed out";
    case DMXP_E_EMPTY: return "channel empty";
    case DMXP_E_BUFFER_TOO_SMALL: return "buffer too small for the next message (nothing consumed)";
    case DMXP_E_CORRUPT_MESSAGE: return "message dropped: payload_len exceeds 960, or a broken run";
    case DMXP_E_LOST: return "message lost: a tombstone was consumed";
    case DMXP_E_REVOKED: return "claim revoked: a peer repaired the position before this call finished with it";
    case DMXP_E_OS: return "system call failed";
    case DMXP_E_NO_SEGMENT: return "no such segment";
    case DMXP_E_SEGMENT_EXISTS: return "segment already exists";
    case DMXP_E_INVALID_ARGUMENT: return "invalid argument";
    case DMXP_E_UNTRUSTED: return "segment not trusted: its owner, mode, type or directory fails the attach checks";
    case DMXP_E_UNSUPPORTED: return "no io_uring futex wait here (io_uring unavailable, or Linux before 6.7): poll instead";
    case DMXP_E_POOL_EXHAUSTED: return "blob pool exhausted: every block that could hold the loan is taken";
    case DMXP_E_NOT_A_BLOB_CHANNEL: return "channel does not carry blobs";
    case DMXP_E_NOT_REGISTERED: return "handle not registered in the peer table by this process (blobs need a registered handle)";
    case DMXP_E_NOT_A_BLOB: return "the next message is not a blob (nothing consumed): receive it with dmxp_try_recv";
    case DMXP_E_NO_BLOB_POOL: return "the segment has no blob pool: no channel can carry blobs";
    }
    return "unknown status";
}

/* The layout field a Corruption status names, or NULL for other statuses. */
static inline const char *dmxp_status_field(dmxp_status s) {
    switch (s) {
    case DMXP_E_BAD_MAGIC: return "magic";
    case DMXP_E_UNSUPPORTED_VERSION: return "version";
    case DMXP_E_WRONG_MAX_CHANNELS: return "max_channels";
    case DMXP_E_CHANNEL_COUNT_TOO_LARGE: return "channel_count";
    case DMXP_E_SEGMENT_SIZE_MISMATCH: return "segment_size";
    case DMXP_E_BAND_CURSOR_OUT_OF_RANGE: return "band_cursor";
    case DMXP_E_CHANNEL_ID_MISMATCH: return "channel_id";
    case DMXP_E_UNKNOWN_CHANNEL_STATE: return "state";
    case DMXP_E_CAPACITY_ZERO:
    case DMXP_E_CAPACITY_NOT_POWER_OF_TWO:
    case DMXP_E_CAPACITY_TOO_SMALL:
    case DMXP_E_CAPACITY_TOO_LARGE: return "capacity";
    case DMXP_E_BAND_MISALIGNED:
    case DMXP_E_BAND_OVERLAPS_HEADER:
    case DMXP_E_BAND_OUTSIDE_SEGMENT:
    case DMXP_E_BANDS_OVERLAP: return "band_offset";
    case DMXP_E_PEER_TABLE_OUT_OF_RANGE:
    case DMXP_E_PEER_TABLE_OVERLAPS_BAND: return "peer_table_offset";
    case DMXP_E_PEER_RECORDS_OUT_OF_RANGE: return "peer_records";
    case DMXP_E_UNKNOWN_CHANNEL_FLAGS: return "flags";
    case DMXP_E_MAX_MESSAGE_SIZE_OUT_OF_RANGE: return "max_message_size";
    case DMXP_E_BLOB_POOL_OUT_OF_RANGE:
    case DMXP_E_BLOB_POOL_OVERLAP: return "blob_pool_offset";
    case DMXP_E_BLOB_POOL_BAD_MAGIC: return "pool_magic";
    case DMXP_E_BLOB_POOL_BAD_GEOMETRY: return "class_count";
    case DMXP_E_BLOB_CLASS_BAD: return "block_size";
    case DMXP_E_BLOBS_WITHOUT_POOL: return "flags";
    default: return NULL;
    }
}

/* Writes `text` at buf[at] within len bytes, truncating and NUL-terminating like snprintf;
 * returns at + strlen(text), the length the whole output wants. */
static inline size_t dmxp__put(char *buf, size_t len, size_t at, const char *text) {
    size_t n = strlen(text);
    if (len > 0 && at < len) {
        size_t room = len - 1 - at, k = n < room ? n : room;
        memcpy(buf + at, text, k);
        buf[at + k] = 0;
    }
    return at + n;
}

/* Writes "what went wrong, with the values" into buf (snprintf semantics). */
static inline int dmxp_error_format(const dmxp_error *e, char *buf, size_t len) {
    char where[32] = "";
    if (e->channel >= 0) snprintf(where, sizeof where, "channel %d: ", (int)e->channel);
    unsigned long long f = (unsigned long long)e->found, v2 = (unsigned long long)e->value2,
                       v3 = (unsigned long long)e->value3;
    switch (e->status) {
    case DMXP_E_BAD_MAGIC:
        return snprintf(buf, len, "corrupt segment: bad magic %#018llx (expected %#018llx)", f,
                        (unsigned long long)DMXP_MAGIC);
    case DMXP_E_UNSUPPORTED_VERSION:
        return snprintf(buf, len, "corrupt segment: unsupported version %llu (expected 1)", f);
    case DMXP_E_WRONG_MAX_CHANNELS:
        return snprintf(buf, len, "corrupt segment: max_channels is %llu (expected 256)", f);
    case DMXP_E_CHANNEL_COUNT_TOO_LARGE:
        return snprintf(buf, len, "corrupt segment: channel_count %llu exceeds 256", f);
    case DMXP_E_SEGMENT_SIZE_MISMATCH:
        return snprintf(buf, len,
                        "corrupt segment: segment_size %llu does not fit: %llu bytes mapped, "
                        "at least %u needed",
                        f, v2, DMXP_HEADER_SIZE);
    case DMXP_E_BAND_CURSOR_OUT_OF_RANGE:
        return snprintf(buf, len,
                        "corrupt segment: band_cursor %llu outside the band area of a "
                        "%llu-byte segment",
                        f, v2);
    case DMXP_E_CHANNEL_ID_MISMATCH:
        return snprintf(buf, len, "corrupt segment: %schannel_id field holds %llu", where, f);
    case DMXP_E_UNKNOWN_CHANNEL_STATE:
        return snprintf(buf, len, "corrupt segment: %sunknown state word %llu", where, f);
    case DMXP_E_CAPACITY_ZERO:
        return snprintf(buf, len, "corrupt segment: %screated but capacity is 0", where);
    case DMXP_E_CAPACITY_NOT_POWER_OF_TWO:
        return snprintf(buf, len, "corrupt segment: %scapacity %llu is not a power of two",
                        where, f);
    case DMXP_E_CAPACITY_TOO_SMALL:
        return snprintf(buf, len, "corrupt segment: %scapacity %llu is below the minimum 2",
                        where, f);
    case DMXP_E_CAPACITY_TOO_LARGE:
        return snprintf(buf, len,
                        "corrupt segment: %scapacity %llu exceeds the limit 4294967296", where,
                        f);
    case DMXP_E_BAND_MISALIGNED:
        return snprintf(buf, len, "corrupt segment: %sband_offset %llu is not a multiple of 64",
                        where, f);
    case DMXP_E_BAND_OVERLAPS_HEADER:
        return snprintf(buf, len,
                        "corrupt segment: %sband_offset %llu lies inside the global header",
                        where, f);
    case DMXP_E_BAND_OUTSIDE_SEGMENT:
        return snprintf(buf, len,
                        "corrupt segment: %sband at %llu of %llu bytes runs past the "
                        "%llu-byte segment",
                        where, f, v2, v3);
    case DMXP_E_BANDS_OVERLAP:
        return snprintf(buf, len, "corrupt segment: %sband overlaps channel %llu's band", where,
                        f);
    case DMXP_E_PEER_TABLE_OUT_OF_RANGE:
        return snprintf(buf, len,
                        "corrupt segment: peer_table_offset %llu: the %llu-byte peer table does "
                        "not fit, 64-aligned, in the band area of a %llu-byte segment",
                        f, v3, v2);
    case DMXP_E_PEER_TABLE_OVERLAPS_BAND:
        return snprintf(buf, len,
                        "corrupt segment: %speer table at %llu overlaps the channel's band",
                        where, f);
    case DMXP_E_PEER_RECORDS_OUT_OF_RANGE:
        return snprintf(buf, len,
                        "corrupt segment: peer_records %llu is neither 0 nor between %u and %u",
                        f, DMXP_PEER_RECORDS, DMXP_MAX_PEER_RECORDS);
    case DMXP_E_UNKNOWN_CHANNEL_FLAGS:
        return snprintf(buf, len,
                        "corrupt segment: %sflags %#llx set bits other than RUNS (0x1) and "
                        "BLOBS (0x2)",
                        where, f);
    case DMXP_E_BLOB_POOL_OUT_OF_RANGE:
        return snprintf(buf, len,
                        "corrupt segment: blob_pool_offset %llu: the pool descriptor does not "
                        "fit, 64-aligned, in the band area of a %llu-byte segment",
                        f, v2);
    case DMXP_E_BLOB_POOL_BAD_MAGIC:
        return snprintf(buf, len, "corrupt segment: blob pool magic %#018llx (expected %#018llx)",
                        f, (unsigned long long)DMXP_BLOB_POOL_MAGIC);
    case DMXP_E_BLOB_POOL_BAD_GEOMETRY:
        return snprintf(buf, len,
                        "corrupt segment: blob pool at %llu: class_count %llu (1..%u) or pool_len "
                        "%llu does not fit",
                        v3, f, DMXP_MAX_BLOB_CLASSES, v2);
    case DMXP_E_BLOB_CLASS_BAD:
        if (e->field && strcmp(e->field, "overlap") == 0)
            return snprintf(buf, len,
                            "corrupt segment: blob pool class %llu shares bytes with class %llu",
                            f, v2);
        return snprintf(buf, len, "corrupt segment: blob pool class %llu: %s %llu is invalid", f,
                        e->field ? e->field : "?", v2);
    case DMXP_E_BLOBS_WITHOUT_POOL:
        return snprintf(buf, len,
                        "corrupt segment: %sflags %#llx carry BLOBS (0x2) but the segment has no "
                        "blob pool",
                        where, f);
    case DMXP_E_BLOB_POOL_OVERLAP:
        if (e->channel >= 0)
            return snprintf(buf, len,
                            "corrupt segment: %sband at %llu overlaps the blob pool at %llu "
                            "(%llu bytes)",
                            where, f, v2, v3);
        return snprintf(buf, len,
                        "corrupt segment: the peer table at %llu overlaps the blob pool at %llu "
                        "(%llu bytes)",
                        f, v2, v3);
    case DMXP_E_NO_BLOB_POOL:
        return snprintf(buf, len, "%sthe segment has no blob pool: a channel cannot carry blobs",
                        where);
    case DMXP_E_MAX_MESSAGE_SIZE_OUT_OF_RANGE:
        if (v3 & DMXP_CHANNEL_RUNS)
            return snprintf(buf, len,
                            "corrupt segment: %smax_message_size %llu is outside 961..%llu "
                            "(capacity %llu x 960, below 2^32)",
                            where, f,
                            v2 * DMXP_MSG_INLINE > UINT32_MAX ? (unsigned long long)UINT32_MAX
                                                              : v2 * DMXP_MSG_INLINE,
                            v2);
        return snprintf(buf, len,
                        "corrupt segment: %smax_message_size %llu on a channel without RUNS "
                        "(expected 0)",
                        where, f);
    case DMXP_E_RUNS_NOT_SUPPORTED:
        return snprintf(buf, len,
                        "%scarries messages longer than %u bytes (runs, up to %llu bytes); "
                        "refused: single-slot messages only",
                        where, DMXP_MSG_INLINE, f);
    case DMXP_E_INVALID_MAX_MESSAGE_SIZE:
        return snprintf(buf, len,
                        "%smax message size %llu is more than a ring of %llu slots allows "
                        "(at most %llu bytes)",
                        where, f, v2, v3);
    case DMXP_E_TOO_LARGE:
        return snprintf(buf, len, "%smessage of %llu bytes exceeds the limit of %llu bytes",
                        where, f, v2);
    case DMXP_E_PEER_TABLE_FULL:
        return snprintf(buf, len,
                        "%speer table full: all %llu records are taken; handle not registered "
                        "(no crash protection)",
                        where, f);
    case DMXP_E_REGION_MISALIGNED:
        return snprintf(buf, len, "region base %#llx is not aligned to %llu bytes", f, v2);
    case DMXP_E_REGION_TOO_SMALL:
        return snprintf(buf, len, "region of %llu bytes is too small: %llu needed", f, v2);
    case DMXP_E_INVALID_CHANNEL_ID:
        return snprintf(buf, len, "channel id %llu out of range (0..256)", f);
    case DMXP_E_INVALID_CAPACITY:
        return snprintf(buf, len,
                        "capacity %llu must be a power of two between 2 and 4294967296", f);
    case DMXP_E_NOT_FOUND:
        return snprintf(buf, len, "%schannel does not exist", where);
    case DMXP_E_BEING_CREATED:
        return snprintf(buf, len, "%schannel is being created by another process", where);
    case DMXP_E_CHANNEL_EXISTS:
        return snprintf(buf, len, "%schannel already exists with capacity %llu", where, f);
    case DMXP_E_OUT_OF_SPACE:
        return snprintf(buf, len, "segment out of space: band needs %llu bytes, %llu left", f,
                        v2);
    case DMXP_E_OS:
    case DMXP_E_NO_SEGMENT:
    case DMXP_E_SEGMENT_EXISTS:
        return snprintf(buf, len, "%s: %s: %s", dmxp_strerror(e->status),
                        e->field ? e->field : "?", strerror(e->os_errno));
    case DMXP_E_UNTRUSTED: {
        /* The message, then the opt-ins that would let the attach pass (owner, mode, both). */
        int owner = e->field && (strcmp(e->field, "owner") == 0 ||
                                 strcmp(e->field, "owner and mode") == 0);
        int mode = e->field && (strcmp(e->field, "mode") == 0 ||
                                strcmp(e->field, "owner and mode") == 0) && (v2 & ~0777ull) == 0;
        char hint[128] = "";
        if (owner && mode)
            snprintf(hint, sizeof hint,
                     " (trust it explicitly with dmxp_trust .has_trusted_uid = 1, "
                     ".trusted_uid = %llu and .mode = 0%03llo)", f, v2);
        else if (owner)
            snprintf(hint, sizeof hint,
                     " (trust it explicitly with dmxp_trust .has_trusted_uid = 1, "
                     ".trusted_uid = %llu)", f);
        else if (mode)
            snprintf(hint, sizeof hint, " (accept it explicitly with dmxp_trust .mode = 0%03llo)",
                     v2);
        size_t n = dmxp__put(buf, len, 0, e->detail[0] ? e->detail : dmxp_strerror(e->status));
        return (int)dmxp__put(buf, len, n, hint);
    }
    case DMXP_E_INVALID_ARGUMENT:
        return (int)dmxp__put(buf, len, dmxp__put(buf, len, 0, "invalid argument: "),
                              e->detail[0] ? e->detail : e->field ? e->field : "?");
    case DMXP_E_UNSUPPORTED:
        if (e->detail[0]) return (int)dmxp__put(buf, len, 0, e->detail);
        if (e->os_errno != 0)
            return snprintf(buf, len, "%s: %s: %s", dmxp_strerror(e->status),
                            e->field ? e->field : "?", strerror(e->os_errno));
        return snprintf(buf, len, "%s: %s", dmxp_strerror(e->status), e->field ? e->field : "?");
    default:
        return snprintf(buf, len, "%s%s", where, dmxp_strerror(e->status));
    }
}

static inline dmxp_status dmxp__fail(dmxp_error *err, dmxp_status s, int32_t channel,
                                     const char *field, uint64_t found, uint64_t v2,
                                     uint64_t v3) {
    if (err) {
        err->status = s;
        err->channel = channel;
        err->field = field ? field : dmxp_status_field(s);
        err->found = found;
        err->value2 = v2;
        err->value3 = v3;
        err->os_errno = 0;
        err->detail[0] = 0;
    }
    return s;
}

/* dmxp__fail with a printf-style explanation in err->detail. */
__attribute__((format(printf, 7, 8))) static inline dmxp_status
dmxp__fail_detail(dmxp_error *err, dmxp_status s, const char *field, uint64_t found, uint64_t v2,
                  uint64_t v3, const char *fmt, ...) {
    if (err) {
        dmxp__fail(err, s, -1, field, found, v2, v3);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->detail, sizeof err->detail, fmt, ap);
        va_end(ap);
    }
    return s;
}

static inline dmxp_status dmxp__fail_os(dmxp_error *err, dmxp_status s, const char *call,
                                        int errnum) {
    if (err) {
        dmxp__fail(err, s, -1, call, 0, 0, 0);
        err->os_errno = errnum;
    }
    return s;
}

/* The hot paths' helpers (a send, a receive, their claims, copies and wake rule) are inlined
 * into the public calls whatever the optimiser's size heuristics say. */
#if defined(__GNUC__)
#define DMXP__INLINE static inline __attribute__((always_inline))
#define DMXP__NOINLINE static __attribute__((noinline, unused))
#define DMXP__COLD __attribute__((cold))
#else
#define DMXP__INLINE static inline
#define DMXP__NOINLINE static inline
#define DMXP__COLD
#endif

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* CLOCK_MONOTONIC in nanoseconds (the timestamp_ns of sent messages). */
static inline uint64_t dmxp_now_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
    return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

/* Deadline `timeout_ns` from now; DMXP_FOREVER (any negative value) means none (INT64_MAX). */
static inline int64_t dmxp__deadline(int64_t timeout_ns) {
    if (timeout_ns < 0) return INT64_MAX;
    int64_t now = (int64_t)dmxp_now_ns();
    return timeout_ns > INT64_MAX - now ? INT64_MAX : now + timeout_ns;
}

/* The same for a timeout in milliseconds. */
static inline int64_t dmxp__ms_deadline(int64_t timeout_ms) {
    if (timeout_ms < 0) return INT64_MAX;
    return dmxp__deadline(timeout_ms > INT64_MAX / 1000000 ? INT64_MAX : timeout_ms * 1000000);
}

static inline void dmxp__sleep_ns(int64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static inline int dmxp__is_pow2(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

static inline int64_t dmxp__diff(uint64_t a, uint64_t b) { return (int64_t)(a - b); }

/* futex(2) on a word of a MAP_SHARED mapping: never FUTEX_PRIVATE_FLAG, which would key the
 * futex by this process's address space and never reach a sleeper in another process. */
/* Returns 0 when woken, else the errno (EAGAIN: the word had changed; ETIMEDOUT; EINTR). */
static inline int dmxp__futex_wait(DMXP_ATOMIC(uint32_t) *word, uint32_t expected,
                                   int64_t timeout_ns) {
    struct timespec ts = {(time_t)(timeout_ns / 1000000000), (long)(timeout_ns % 1000000000)};
    /* EAGAIN, EINTR, ETIMEDOUT and spurious returns all mean "re-check the ring". */
    if (syscall(SYS_futex, (void *)word, FUTEX_WAIT, expected, &ts, NULL, 0) == 0) return 0;
    return errno;
}

static inline void dmxp__futex_wake_all(DMXP_ATOMIC(uint32_t) *word) {
    (void)syscall(SYS_futex, (void *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* Validation (PROTOCOL.md §4)                                                                */
/* ------------------------------------------------------------------------------------------ */

static inline dmxp_header *dmxp__hdr(const dmxp_segment *seg) {
    return (dmxp_header *)(void *)seg->base;
}

static inline dmxp_channel_entry *dmxp__entry(const dmxp_segment *seg, uint32_t id) {
    return &((dmxp_segment_layout *)(void *)seg->base)->channels[id];
}

/* §2.2 peer_records: 0 (the default table), or DMXP_PEER_RECORDS..DMXP_MAX_PEER_RECORDS. */
static inline int dmxp__valid_peer_records(uint64_t n) {
    return n == 0 || (n >= DMXP_PEER_RECORDS && n <= DMXP_MAX_PEER_RECORDS);
}

/* The records of a table whose header field is `field` (valid): 0 means DMXP_PEER_RECORDS. */
static inline uint32_t dmxp__table_records(uint32_t field) {
    return field == 0 ? DMXP_PEER_RECORDS : field;
}

/* The bytes of a table of `records` records (at most 1 MiB). */
static inline uint64_t dmxp__table_size(uint32_t records) {
    return (uint64_t)records * DMXP_PEER_RECORD_SIZE;
}

/* §11.1: 0 (no table), or 64-aligned, at or past HEADER_SIZE, `size` bytes inside the
 * segment (no overflow). */
static inline int dmxp__peer_table_in_range(uint64_t table, uint64_t size, uint64_t segment_len) {
    if (table == 0) return 1;
    return table % DMXP_SLOT_ALIGN == 0 && table >= DMXP_HEADER_SIZE && segment_len >= size &&
           table <= segment_len - size;
}

/* Header checks #1..#9, in the order of §4.1. `magic` was loaded with acquire by the caller.
 * On success *segment_len is the length bands are checked against and *peer_records the
 * records of the peer table (#8; 0 read as DMXP_PEER_RECORDS), which #9 checks the table's
 * range with: the caller keeps both, and never reads either field again. */
static inline dmxp_status dmxp__validate_header(dmxp_header *h, uint64_t magic,
                                                uint64_t available, uint64_t *segment_len,
                                                uint32_t *peer_records, dmxp_error *err) {
    if (magic == 0) return dmxp__fail(err, DMXP_E_NOT_READY, -1, "magic", 0, 0, 0);
    if (magic != DMXP_MAGIC) return dmxp__fail(err, DMXP_E_BAD_MAGIC, -1, NULL, magic, 0, 0);
    uint32_t version = dmxp__load(&h->version, DMXP__RLX);
    if (version != DMXP_VERSION)
        return dmxp__fail(err, DMXP_E_UNSUPPORTED_VERSION, -1, NULL, version, 0, 0);
    uint32_t max_channels = dmxp__load(&h->max_channels, DMXP__RLX);
    if (max_channels != DMXP_MAX_CHANNELS)
        return dmxp__fail(err, DMXP_E_WRONG_MAX_CHANNELS, -1, NULL, max_channels, 0, 0);
    uint32_t count = dmxp__load(&h->channel_count, DMXP__ACQ);
    if (count > DMXP_MAX_CHANNELS)
        return dmxp__fail(err, DMXP_E_CHANNEL_COUNT_TOO_LARGE, -1, NULL, count, 0, 0);
    uint64_t recorded = dmxp__load(&h->segment_size, DMXP__RLX);
    uint64_t len = available;
    if (recorded != 0) {
        if (recorded > available || recorded < DMXP_HEADER_SIZE)
            return dmxp__fail(err, DMXP_E_SEGMENT_SIZE_MISMATCH, -1, NULL, recorded, available,
                              0);
        len = recorded;
    }
    uint64_t cursor = dmxp__load(&h->band_cursor, DMXP__RLX);
    if (cursor != 0 &&
        (cursor < DMXP_HEADER_SIZE || cursor > len || cursor % DMXP_SLOT_ALIGN != 0))
        return dmxp__fail(err, DMXP_E_BAND_CURSOR_OUT_OF_RANGE, -1, NULL, cursor, len, 0);
    /* Written by the creator before magic (the acquire above makes it visible), never after. */
    uint32_t records = dmxp__load(&h->peer_records, DMXP__RLX);
    if (!dmxp__valid_peer_records(records))
        return dmxp__fail(err, DMXP_E_PEER_RECORDS_OUT_OF_RANGE, -1, NULL, records, 0, 0);
    records = dmxp__table_records(records);
    uint64_t size = dmxp__table_size(records);
    uint64_t table = dmxp__load(&h->peer_table_offset, DMXP__ACQ);
    if (!dmxp__peer_table_in_range(table, size, len))
        return dmxp__fail(err, DMXP_E_PEER_TABLE_OUT_OF_RANGE, -1, NULL, table, len, size);
    *segment_len = len;
    *peer_records = records;
    return DMXP_OK;
}

/* The header's blob_pool_offset (offset 64, PROTOCOL.md §13.1): zero[0] of dmxp_header. */
static inline DMXP_ATOMIC(uint64_t) *dmxp__blob_pool_offset_word(dmxp_header *h) {
    return &h->zero[0];
}

/* 1 when [start, start + len) and [ostart, ostart + olen) share a byte (no overflow: every
 * caller's ranges lie inside the segment). */
static inline int dmxp__ranges_overlap(uint64_t start, uint64_t len, uint64_t ostart,
                                       uint64_t olen) {
    return len != 0 && olen != 0 && start < ostart + olen && ostart < start + len;
}

/* 1 when the validated range [start, start + len) shares a byte with the pool (none: 0). */
static inline int dmxp__overlaps_pool(const dmxp_blob_pool_geometry *pool, uint64_t start,
                                      uint64_t len) {
    return pool->class_count != 0 && dmxp__ranges_overlap(start, len, pool->offset, pool->len);
}

/* [start, start + len) lies in [lo, hi), start 64-aligned, with no overflow (§13.2 #5). */
static inline int dmxp__inside_pool(uint64_t start, uint64_t len, uint64_t lo, uint64_t hi) {
    return start % 64 == 0 && start >= lo && start <= hi && len <= hi - start;
}

/* The blob pool checks #1..#5 of PROTOCOL.md §13.2 for a pool at offset P (non-zero) of a
 * segment of segment_len bytes whose header validated: on success *out is the geometry, read
 * here once (relaxed loads after the caller's acquire of magic; pool_magic with acquire) and
 * cached by the caller, never read again. */
static inline dmxp_status dmxp__validate_pool(unsigned char *base, uint64_t segment_len,
                                              uint64_t P, dmxp_blob_pool_geometry *out,
                                              dmxp_error *err) {
    memset(out, 0, sizeof *out);
    if (P % 64 != 0 || P < DMXP_HEADER_SIZE || segment_len < DMXP_BLOB_DESCRIPTOR_AREA ||
        P > segment_len - DMXP_BLOB_DESCRIPTOR_AREA)
        return dmxp__fail(err, DMXP_E_BLOB_POOL_OUT_OF_RANGE, -1, NULL, P, segment_len, 0);
    dmxp_blob_pool_header *h = (dmxp_blob_pool_header *)(void *)(base + P);
    dmxp_blob_class_desc *d = (dmxp_blob_class_desc *)(void *)(base + P + DMXP_BLOB_POOL_HEADER_SIZE);
    uint64_t magic = dmxp__load(&h->pool_magic, DMXP__ACQ);
    if (magic != DMXP_BLOB_POOL_MAGIC)
        return dmxp__fail(err, DMXP_E_BLOB_POOL_BAD_MAGIC, -1, NULL, magic, 0, 0);
    uint32_t count = dmxp__load(&h->class_count, DMXP__RLX);
    uint64_t plen = dmxp__load(&h->pool_len, DMXP__RLX);
    uint64_t descriptors = DMXP_BLOB_POOL_HEADER_SIZE + (uint64_t)count * DMXP_BLOB_CLASS_SIZE;
    if (count == 0 || count > DMXP_MAX_BLOB_CLASSES || plen < descriptors ||
        plen > segment_len - P)
        return dmxp__fail(err, DMXP_E_BLOB_POOL_BAD_GEOMETRY, -1, NULL, count, plen, P);
    uint64_t lo = P + descriptors, hi = P + plen;
    uint64_t previous = 0;
    for (uint32_t i = 0; i < count; i++) {
        dmxp_blob_class_geometry g;
        g.block_size = dmxp__load(&d[i].block_size, DMXP__RLX);
        g.block_count = dmxp__load(&d[i].block_count, DMXP__RLX);
        g.headers_offset = dmxp__load(&d[i].headers_offset, DMXP__RLX);
        g.data_offset = dmxp__load(&d[i].data_offset, DMXP__RLX);
        g.reserved = 0;
        if (g.block_size < DMXP_BLOB_MIN_BLOCK_SIZE || g.block_size > DMXP_BLOB_MAX_BLOCK_SIZE ||
            g.block_size % 64 != 0 || g.block_size <= previous)
            return dmxp__fail(err, DMXP_E_BLOB_CLASS_BAD, -1, "block_size", i, g.block_size, 0);
        if (g.block_count == 0 || g.block_count > DMXP_BLOB_MAX_BLOCK_COUNT)
            return dmxp__fail(err, DMXP_E_BLOB_CLASS_BAD, -1, "block_count", i, g.block_count,
                              0);
        previous = g.block_size;
        /* Bounded above (2^24 x 64, 2^31 x 2^24): no overflow. */
        uint64_t headers_len = (uint64_t)g.block_count * DMXP_BLOCK_HEADER_SIZE;
        uint64_t data_len = g.block_size * g.block_count;
        if (!dmxp__inside_pool(g.headers_offset, headers_len, lo, hi))
            return dmxp__fail(err, DMXP_E_BLOB_CLASS_BAD, -1, "headers_offset", i,
                              g.headers_offset, 0);
        if (!dmxp__inside_pool(g.data_offset, data_len, lo, hi))
            return dmxp__fail(err, DMXP_E_BLOB_CLASS_BAD, -1, "data_offset", i, g.data_offset,
                              0);
        out->classes[i] = g;
    }
    /* No byte shared between any two ranges (headers or data) of any classes. */
    for (uint32_t a = 0; a < 2 * count; a++) {
        const dmxp_blob_class_geometry *ga = &out->classes[a / 2];
        uint64_t sa = a % 2 ? ga->data_offset : ga->headers_offset;
        uint64_t la = a % 2 ? ga->block_size * ga->block_count
                            : (uint64_t)ga->block_count * DMXP_BLOCK_HEADER_SIZE;
        for (uint32_t b = a + 1; b < 2 * count; b++) {
            const dmxp_blob_class_geometry *gb = &out->classes[b / 2];
            uint64_t sb = b % 2 ? gb->data_offset : gb->headers_offset;
            uint64_t lb = b % 2 ? gb->block_size * gb->block_count
                                : (uint64_t)gb->block_count * DMXP_BLOCK_HEADER_SIZE;
            if (dmxp__ranges_overlap(sa, la, sb, lb)) {
                memset(out, 0, sizeof *out);
                return dmxp__fail(err, DMXP_E_BLOB_CLASS_BAD, -1, "overlap", a / 2, b / 2, 0);
            }
        }
    }
    out->offset = P;
    out->len = plen;
    out->class_count = count;
    return DMXP_OK;
}

/* Entry checks #1..#8 of §4.2 on a snapshot of entry `id`. DMXP_OK with *capacity == 0 means
 * "not created" (*state tells EMPTY from CREATING). */
static inline dmxp_status dmxp__geometry(const dmxp_segment *seg, uint32_t id,
                                         uint64_t *capacity, uint64_t *band_offset,
                                         uint32_t *state_out, dmxp_error *err) {
    dmxp_channel_entry *e = dmxp__entry(seg, id);
    int32_t ch = (int32_t)id;
    /* state first: READY seen with acquire makes the capacity stored before it visible. */
    uint32_t state = dmxp__load(&e->state, DMXP__ACQ);
    uint64_t cap = dmxp__load(&e->capacity, DMXP__ACQ);
    *capacity = 0;
    *band_offset = 0;
    if (state_out) *state_out = state;
    if (state != DMXP_STATE_EMPTY && state != DMXP_STATE_CREATING && state != DMXP_STATE_READY)
        return dmxp__fail(err, DMXP_E_UNKNOWN_CHANNEL_STATE, ch, NULL, state, 0, 0);
    if (cap == 0) {
        if (state == DMXP_STATE_READY)
            return dmxp__fail(err, DMXP_E_CAPACITY_ZERO, ch, NULL, 0, 0, 0);
        return DMXP_OK;
    }
    uint32_t channel_id = dmxp__load(&e->channel_id, DMXP__RLX);
    if (channel_id != id)
        return dmxp__fail(err, DMXP_E_CHANNEL_ID_MISMATCH, ch, NULL, channel_id, 0, 0);
    if (!dmxp__is_pow2(cap))
        return dmxp__fail(err, DMXP_E_CAPACITY_NOT_POWER_OF_TWO, ch, NULL, cap, 0, 0);
    if (cap < DMXP_MIN_CAPACITY)
        return dmxp__fail(err, DMXP_E_CAPACITY_TOO_SMALL, ch, NULL, cap, 0, 0);
    if (cap > DMXP_MAX_CAPACITY)
        return dmxp__fail(err, DMXP_E_CAPACITY_TOO_LARGE, ch, NULL, cap, 0, 0);
    uint64_t band = dmxp__load(&e->band_offset, DMXP__RLX);
    if (band % DMXP_SLOT_ALIGN != 0)
        return dmxp__fail(err, DMXP_E_BAND_MISALIGNED, ch, NULL, band, 0, 0);
    if (band < DMXP_HEADER_SIZE)
        return dmxp__fail(err, DMXP_E_BAND_OVERLAPS_HEADER, ch, NULL, band, 0, 0);
    uint64_t band_len = cap * DMXP_SLOT_SIZE; /* cap <= 2^32: no overflow */
    if (band > UINT64_MAX - band_len || band + band_len > seg->len)
        return dmxp__fail(err, DMXP_E_BAND_OUTSIDE_SEGMENT, ch, NULL, band, band_len, seg->len);
    *capacity = cap;
    *band_offset = band;
    return DMXP_OK;
}

/* Check #9: the band of `id` shares no byte with any other created channel's valid band. A
 * corrupt neighbour is reported when it is opened, not here. */
static inline dmxp_status dmxp__check_overlap(const dmxp_segment *seg, uint32_t id,
                                              uint64_t cap, uint64_t band, dmxp_error *err) {
    uint64_t end = band + cap * DMXP_SLOT_SIZE;
    for (uint32_t other = 0; other < DMXP_MAX_CHANNELS; other++) {
        if (other == id) continue;
        uint64_t ocap, oband;
        if (dmxp__geometry(seg, other, &ocap, &oband, NULL, NULL) != DMXP_OK || ocap == 0)
            continue;
        uint64_t oend = oband + ocap * DMXP_SLOT_SIZE;
        if (band < oend && oband < end)
            return dmxp__fail(err, DMXP_E_BANDS_OVERLAP, (int32_t)id, NULL, other, 0, 0);
    }
    /* The peer table is carved like a band: it shares no byte with one either (§11.1). */
    uint64_t table = dmxp__load(&dmxp__hdr(seg)->peer_table_offset, DMXP__ACQ);
    uint64_t size = dmxp__table_size(dmxp__table_records(seg->peer_records));
    if (!dmxp__peer_table_in_range(table, size, seg->len))
        return dmxp__fail(err, DMXP_E_PEER_TABLE_OUT_OF_RANGE, -1, NULL, table, seg->len, size);
    if (table != 0 && band < table + size && table < end)
        return dmxp__fail(err, DMXP_E_PEER_TABLE_OVERLAPS_BAND, (int32_t)id, NULL, table, 0, 0);
    /* Nor with the blob pool (PROTOCOL.md §13.2: a band there would garble blocks). */
    if (dmxp__overlaps_pool(&seg->pool, band, end - band))
        return dmxp__fail(err, DMXP_E_BLOB_POOL_OVERLAP, (int32_t)id, NULL, band,
                          seg->pool.offset, seg->pool.len);
    return DMXP_OK;
}

/* The largest max_message_size a ring of `cap` (<= 2^32) slots may have: cap * 960, below
 * 2^32 (§12.1). */
static inline uint64_t dmxp__most_message(uint64_t cap) {
    uint64_t most = cap * DMXP_MSG_INLINE;
    return most > UINT32_MAX ? UINT32_MAX : most;
}

/* Entry checks #10 and #11 (§12.1, §13.1) of created channel `id`, whose capacity `cap` passed
 * #1..#8: no flag bit but DMXP_CHANNEL_RUNS and DMXP_CHANNEL_BLOBS; BLOBS only in a segment
 * with a pool (DMXP_E_BLOBS_WITHOUT_POOL); with RUNS, 960 < max_message_size <= cap * 960
 * (below 2^32), without it max_message_size == 0. On success *flags is the entry's flags and
 * *limit the largest message the channel takes (DMXP_MSG_INLINE without runs), both read once
 * here (after the capacity acquire of dmxp__geometry) and cached by the caller. */
static inline dmxp_status dmxp__check_runs(const dmxp_segment *seg, uint32_t id, uint64_t cap,
                                           uint32_t *flags, uint32_t *limit, dmxp_error *err) {
    dmxp_channel_entry *e = dmxp__entry(seg, id);
    uint32_t f = dmxp__load(&e->flags, DMXP__RLX);
    uint32_t max = dmxp__load(&e->max_message_size, DMXP__RLX);
    if ((f & ~DMXP_CHANNEL_KNOWN_FLAGS) != 0)
        return dmxp__fail(err, DMXP_E_UNKNOWN_CHANNEL_FLAGS, (int32_t)id, NULL, f, 0, 0);
    if ((f & DMXP_CHANNEL_BLOBS) && seg->pool.class_count == 0)
        return dmxp__fail(err, DMXP_E_BLOBS_WITHOUT_POOL, (int32_t)id, NULL, f, 0, 0);
    if ((f & DMXP_CHANNEL_RUNS) ? max <= DMXP_MSG_INLINE || max > dmxp__most_message(cap)
                                : max != 0)
        return dmxp__fail(err, DMXP_E_MAX_MESSAGE_SIZE_OUT_OF_RANGE, (int32_t)id, NULL, max,
                          cap, f);
    *flags = f;
    *limit = (f & DMXP_CHANNEL_RUNS) ? max : DMXP_MSG_INLINE;
    return DMXP_OK;
}

/* Validates every entry (§4.2, all 256) and the absence of band overlaps. */
static inline dmxp_status dmxp_segment_validate_all(const dmxp_segment *seg, dmxp_error *err) {
    for (uint32_t id = 0; id < DMXP_MAX_CHANNELS; id++) {
        uint64_t cap, band;
        dmxp_status s = dmxp__geometry(seg, id, &cap, &band, NULL, err);
        if (s != DMXP_OK) return s;
    }
    for (uint32_t id = 0; id < DMXP_MAX_CHANNELS; id++) {
        uint64_t cap, band;
        if (dmxp__geometry(seg, id, &cap, &band, NULL, NULL) == DMXP_OK && cap != 0) {
            dmxp_status s = dmxp__check_overlap(seg, id, cap, band, err);
            if (s != DMXP_OK) return s;
            uint32_t flags, limit;
            s = dmxp__check_runs(seg, id, cap, &flags, &limit, err);
            if (s != DMXP_OK) return s;
        }
    }
    return DMXP_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Segments in memory the caller provides (PROTOCOL.md §3.1, §4.1)                            */
/* ------------------------------------------------------------------------------------------ */

static inline dmxp_status dmxp__check_region(const void *base, size_t len, dmxp_error *err) {
    if (base == NULL || ((uintptr_t)base % DMXP_SEGMENT_ALIGN) != 0)
        return dmxp__fail(err, DMXP_E_REGION_MISALIGNED, -1, NULL, (uint64_t)(uintptr_t)base,
                          DMXP_SEGMENT_ALIGN, 0);
    if (len < DMXP_HEADER_SIZE)
        return dmxp__fail(err, DMXP_E_REGION_TOO_SMALL, -1, NULL, len, DMXP_HEADER_SIZE, 0);
    return DMXP_OK;
}

/* Attaches to a formatted segment at `base` (128-aligned, `len` bytes, shared or private),
 * validating its header. DMXP_E_NOT_READY: magic is still 0. Never writes to the memory.
 * seg->peer_records is the size of its peer table from now on (§11.1), read here once. */
static inline dmxp_status dmxp_segment_attach_memory(dmxp_segment *seg, void *base, size_t len,
                                                     dmxp_error *err) {
    if (seg == NULL) return dmxp__fail(err, DMXP_E_INVALID_ARGUMENT, -1, "seg", 0, 0, 0);
    dmxp_status s = dmxp__check_region(base, len, err);
    if (s != DMXP_OK) return s;
    dmxp_header *h = (dmxp_header *)base;
    uint64_t magic = dmxp__load(&h->magic, DMXP__ACQ);
    uint64_t seglen = 0;
    uint32_t records = 0;
    s = dmxp__validate_header(h, magic, len, &seglen, &records, err);
    if (s != DMXP_OK) return s;
    /* The blob pool (§13.2), after the header checks: its geometry is read once, here. */
    dmxp_blob_pool_geometry pool;
    memset(&pool, 0, sizeof pool);
    uint64_t pool_offset = dmxp__load(dmxp__blob_pool_offset_word(h), DMXP__RLX);
    if (pool_offset != 0) {
        s = dmxp__validate_pool((unsigned char *)base, seglen, pool_offset, &pool, err);
        if (s != DMXP_OK) return s;
    }
    seg->base = (unsigned char *)base;
    seg->mapped_len = len;
    seg->len = seglen;
    seg->mapped = 0;
    seg->pid = (uint32_t)getpid();
    seg->peer_records = records;
    seg->pool = pool;
    return DMXP_OK;
}

static inline void dmxp__zero_entry(dmxp_channel_entry *e) {
    dmxp__store(&e->channel_id, 0, DMXP__RLX);
    dmxp__store(&e->flags, 0, DMXP__RLX);
    dmxp__store(&e->capacity, 0, DMXP__RLX);
    dmxp__store(&e->band_offset, 0, DMXP__RLX);
    dmxp__store(&e->state, 0, DMXP__RLX);
    dmxp__store(&e->creator_pid, 0, DMXP__RLX);
    dmxp__store(&e->not_empty_seq, 0, DMXP__RLX);
    dmxp__store(&e->not_empty_waiters, 0, DMXP__RLX);
    dmxp__store(&e->not_full_seq, 0, DMXP__RLX);
    dmxp__store(&e->not_full_waiters, 0, DMXP__RLX);
    dmxp__store(&e->tail, 0, DMXP__RLX);
    dmxp__store(&e->head, 0, DMXP__RLX);
    dmxp__store(&e->stuck_receive_position, 0, DMXP__RLX);
    dmxp__store(&e->stuck_receive_since_ns, 0, DMXP__RLX);
    dmxp__store(&e->stuck_send_position, 0, DMXP__RLX);
    dmxp__store(&e->stuck_send_since_ns, 0, DMXP__RLX);
    dmxp__store(&e->max_message_size, 0, DMXP__RLX);
    dmxp__store(&e->zero32, 0, DMXP__RLX);
    for (size_t i = 0; i < 5; i++) dmxp__store(&e->zero0[i], 0, DMXP__RLX);
    for (size_t i = 0; i < 15; i++) dmxp__store(&e->zero1[i], 0, DMXP__RLX);
    for (size_t i = 0; i < 15; i++) dmxp__store(&e->zero2[i], 0, DMXP__RLX);
}

/* DMXP_E_INVALID_ARGUMENT (field "peer_records", found = the value) unless `n` is 0 (the
 * default table) or DMXP_PEER_RECORDS..DMXP_MAX_PEER_RECORDS. */
static inline dmxp_status dmxp__check_peer_records(uint32_t n, dmxp_error *err) {
    if (dmxp__valid_peer_records(n)) return DMXP_OK;
    return dmxp__fail_detail(err, DMXP_E_INVALID_ARGUMENT, "peer_records", n, 0, 0,
                             "peer table of %u records requested: use 0 (the default, %u) or "
                             "%u to %u",
                             (unsigned)n, DMXP_PEER_RECORDS, DMXP_PEER_RECORDS,
                             DMXP_MAX_PEER_RECORDS);
}

/* One size class of a blob pool to create (PROTOCOL.md §13.2): `block_count` blocks of
 * `block_size` bytes each. block_size: a multiple of 64, 64..2^31 (DMXP_BLOB_MAX_BLOCK_SIZE);
 * block_count: 1..2^24 (DMXP_BLOB_MAX_BLOCK_COUNT). */
typedef struct dmxp_blob_class {
    uint64_t block_size;
    uint32_t block_count;
} dmxp_blob_class;

static inline uint64_t dmxp__round_up(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }

/* Checks the classes a pool is asked for (1..8 of them, each in range, sizes strictly
 * increasing; count 0 means no pool) and plans the pool in a fresh segment of `len` bytes as
 * the Rust creator does: at P = HEADER_SIZE rounded up to 4096 (the band cursor of a fresh
 * segment), the 576-byte descriptor area, then the block headers of every class one after
 * another, then each class's data on a 4096-byte boundary, class after class; pool_len =
 * the end of the last class's data (rounded up to 4096) - P. *plan gets the geometry
 * (class_count 0 without a pool). DMXP_E_INVALID_ARGUMENT (field "blob_classes", found = the
 * class at fault, detail says why) or DMXP_E_OUT_OF_SPACE (found = the pool's bytes, value2 =
 * the bytes after P) before anything is written. */
static inline dmxp_status dmxp__blob_plan(const dmxp_blob_class *classes, size_t count,
                                          uint64_t len, dmxp_blob_pool_geometry *plan,
                                          dmxp_error *err) {
    memset(plan, 0, sizeof *plan);
    if (count == 0) return DMXP_OK;
    if (classes == NULL || count > DMXP_MAX_BLOB_CLASSES)
        return dmxp__fail_detail(err, DMXP_E_INVALID_ARGUMENT, "blob_classes", count, 0, 0,
                                 "a blob pool has 1 to %u size classes (%zu asked for)",
                                 DMXP_MAX_BLOB_CLASSES, count);
    uint64_t previous = 0;
    for (size_t i = 0; i < count; i++) {
        uint64_t size = classes[i].block_size;
        uint32_t n = classes[i].block_count;
        if (size < DMXP_BLOB_MIN_BLOCK_SIZE || size > DMXP_BLOB_MAX_BLOCK_SIZE || size % 64 != 0 ||
            size <= previous)
            return dmxp__fail_detail(err, DMXP_E_INVALID_ARGUMENT, "blob_classes", i, size, 0,
                                     "blob class %zu: block size %llu must be a multiple of 64 "
                                     "from 64 to 2^31, larger than the class before",
                                     i, (unsigned long long)size);
        if (n == 0 || n > DMXP_BLOB_MAX_BLOCK_COUNT)
            return dmxp__fail_detail(err, DMXP_E_INVALID_ARGUMENT, "blob_classes", i, n, 0,
                                     "blob class %zu: %u blocks (1 to 2^24)", i, (unsigned)n);
        previous = size;
    }
    /* Bounded: 8 classes of at most 2^24 headers and 2^55 data bytes each. */
    uint64_t start = dmxp__round_up(DMXP_HEADER_SIZE, DMXP_BLOB_POOL_ALIGN);
    uint64_t at = start + DMXP_BLOB_DESCRIPTOR_AREA;
    for (size_t i = 0; i < count; i++) {
        plan->classes[i].block_size = classes[i].block_size;
        plan->classes[i].block_count = classes[i].block_count;
        plan->classes[i].headers_offset = at;
        at += (uint64_t)classes[i].block_count * DMXP_BLOCK_HEADER_SIZE;
    }
    at = dmxp__round_up(at, DMXP_BLOB_POOL_ALIGN);
    for (size_t i = 0; i < count; i++) {
        plan->classes[i].data_offset = at;
        at = dmxp__round_up(at + classes[i].block_size * classes[i].block_count,
                            DMXP_BLOB_POOL_ALIGN);
    }
    plan->offset = start;
    plan->len = at - start;
    plan->class_count = (uint32_t)count;
    if (len < start || plan->len > len - start) {
        uint64_t available = len > start ? len - start : 0;
        uint64_t needed = plan->len;
        memset(plan, 0, sizeof *plan);
        return dmxp__fail(err, DMXP_E_OUT_OF_SPACE, -1, "blob_classes", needed, available, 0);
    }
    return DMXP_OK;
}

/* Writes the pool of `plan` into memory being formatted (before magic): carves it from the
 * band area with the band_cursor CAS (§13.1), zeroes the descriptor area and every block
 * header, writes the descriptor (pool_magic last, with release) and names it in the header. */
static inline void dmxp__write_pool(unsigned char *base, const dmxp_blob_pool_geometry *plan) {
    dmxp_header *h = (dmxp_header *)(void *)base;
    uint64_t cursor = DMXP_HEADER_SIZE; /* as the format just stored it: this CAS succeeds */
    (void)dmxp__cas_strong(&h->band_cursor, &cursor, plan->offset + plan->len, DMXP__ACQREL,
                           DMXP__RLX);
    dmxp_blob_pool_header *ph = (dmxp_blob_pool_header *)(void *)(base + plan->offset);
    dmxp_blob_class_desc *d =
        (dmxp_blob_class_desc *)(void *)(base + plan->offset + DMXP_BLOB_POOL_HEADER_SIZE);
    dmxp__store(&ph->pool_magic, 0, DMXP__RLX);
    dmxp__store(&ph->class_count, plan->class_count, DMXP__RLX);
    dmxp__store(&ph->zero12, 0, DMXP__RLX);
    dmxp__store(&ph->pool_len, plan->len, DMXP__RLX);
    dmxp__store(&ph->free_seq, 0, DMXP__RLX);
    dmxp__store(&ph->free_waiters, 0, DMXP__RLX);
    for (size_t k = 0; k < 4; k++) dmxp__store(&ph->zero[k], 0, DMXP__RLX);
    for (uint32_t i = 0; i < DMXP_MAX_BLOB_CLASSES; i++) {
        int used = i < plan->class_count;
        const dmxp_blob_class_geometry *g = &plan->classes[i];
        dmxp__store(&d[i].block_size, used ? g->block_size : 0, DMXP__RLX);
        dmxp__store(&d[i].block_count, used ? g->block_count : 0, DMXP__RLX);
        dmxp__store(&d[i].zero12, 0, DMXP__RLX);
        dmxp__store(&d[i].headers_offset, used ? g->headers_offset : 0, DMXP__RLX);
        dmxp__store(&d[i].data_offset, used ? g->data_offset : 0, DMXP__RLX);
        dmxp__store(&d[i].next_hint, 0, DMXP__RLX);
        dmxp__store(&d[i].zero36, 0, DMXP__RLX);
        for (size_t k = 0; k < 3; k++) dmxp__store(&d[i].zero[k], 0, DMXP__RLX);
        if (!used) continue;
        dmxp_block_header *b = (dmxp_block_header *)(void *)(base + g->headers_offset);
        for (uint32_t j = 0; j < g->block_count; j++) {
            dmxp__store(&b[j].tag, 0, DMXP__RLX);
            dmxp__store(&b[j].channel_id, 0, DMXP__RLX);
            dmxp__store(&b[j].length, 0, DMXP__RLX);
            dmxp__store(&b[j].position, 0, DMXP__RLX);
            dmxp__store(&b[j].owner_pid, 0, DMXP__RLX);
            dmxp__store(&b[j].zero28, 0, DMXP__RLX);
            for (size_t k = 0; k < 4; k++) dmxp__store(&b[j].zero[k], 0, DMXP__RLX);
        }
    }
    dmxp__store(&ph->pool_magic, DMXP_BLOB_POOL_MAGIC, DMXP__REL);
    dmxp__store(dmxp__blob_pool_offset_word(h), plan->offset, DMXP__RLX);
}

/* Formats memory nobody else uses yet (freshly created, exclusively owned) as an empty
 * segment of `len` bytes whose peer table will have `peer_records` records (§11.1: 0 for the
 * default DMXP_PEER_RECORDS, else DMXP_PEER_RECORDS..DMXP_MAX_PEER_RECORDS; each producer or
 * consumer handle registered at once takes one; DMXP_E_INVALID_ARGUMENT otherwise, before
 * anything is written), with a blob pool of the `class_count` size classes `classes`
 * (PROTOCOL.md §13; 0 classes: no pool; see dmxp_blob_class), storing magic last with
 * release. The pool is carved at once, after the header (4096-aligned; see dmxp__blob_plan
 * for the layout), its block headers zeroed (its blocks are not: a fresh object is zero, and
 * a loan's bytes are the producer's to write); a class list that is invalid
 * (DMXP_E_INVALID_ARGUMENT, field "blob_classes") or a pool that does not fit
 * (DMXP_E_OUT_OF_SPACE) is refused before anything is written. The peer table is carved by
 * the first registration (peer_records * 64 bytes of the band area). Refuses memory whose magic
 * is set (DMXP_E_ALREADY_FORMATTED): it may be live. Only clients that know the peer_records
 * field (PROTOCOL.md §9) should share a segment made with more than 256 records, and only
 * clients that know §13 use the pool (older ones refuse its BLOBS channels, §13.1). */
static inline dmxp_status dmxp_segment_format_memory_pool(dmxp_segment *seg, void *base,
                                                          size_t len, uint32_t creator_pid,
                                                          uint32_t peer_records,
                                                          const dmxp_blob_class *classes,
                                                          size_t class_count, dmxp_error *err) {
    if (seg == NULL) return dmxp__fail(err, DMXP_E_INVALID_ARGUMENT, -1, "seg", 0, 0, 0);
    dmxp_status s = dmxp__check_peer_records(peer_records, err);
    if (s == DMXP_OK) s = dmxp__check_region(base, len, err);
    dmxp_blob_pool_geometry plan;
    if (s == DMXP_OK) s = dmxp__blob_plan(classes, class_count, (uint64_t)len, &plan, err);
    if (s != DMXP_OK) return s;
    dmxp_segment_layout *l = (dmxp_segment_layout *)base;
    dmxp_header *h = &l->header;
    if (dmxp__load(&h->magic, DMXP__ACQ) != 0)
        return dmxp__fail(err, DMXP_E_ALREADY_FORMATTED, -1, "magic", 0, 0, 0);
    /* First: names who is formatting, so a creator dying here is identifiable (§3.3). */
    dmxp__store(&h->creator_pid, creator_pid, DMXP__REL);
    dmxp__store(&h->version, 0, DMXP__RLX);
    dmxp__store(&h->max_channels, 0, DMXP__RLX);
    dmxp__store(&h->channel_count, 0, DMXP__RLX);
    dmxp__store(&h->reserved, 0, DMXP__RLX);
    dmxp__store(&h->header_flags, 0, DMXP__RLX);
    dmxp__store(&h->peer_table_offset, 0, DMXP__RLX);
    dmxp__store(&h->peer_records, 0, DMXP__RLX);
    dmxp__store(&h->zero32, 0, DMXP__RLX);
    for (size_t i = 0; i < 8; i++) dmxp__store(&h->zero[i], 0, DMXP__RLX);
    for (uint32_t id = 0; id < DMXP_MAX_CHANNELS; id++) dmxp__zero_entry(&l->channels[id]);
    dmxp__store(&h->version, DMXP_VERSION, DMXP__RLX);
    dmxp__store(&h->max_channels, DMXP_MAX_CHANNELS, DMXP__RLX);
    dmxp__store(&h->segment_size, (uint64_t)len, DMXP__RLX);
    dmxp__store(&h->band_cursor, DMXP_HEADER_SIZE, DMXP__RLX);
    /* Before magic, never changed after: attachers read it once, after magic (§3.1). */
    dmxp__store(&h->peer_records, peer_records, DMXP__RLX);
    /* The pool and blob_pool_offset, before magic too (§13.1). */
    if (plan.class_count != 0) dmxp__write_pool((unsigned char *)base, &plan);
    dmxp__store(&h->magic, DMXP_MAGIC, DMXP__REL); /* publication point */
    seg->base = (unsigned char *)base;
    seg->mapped_len = len;
    seg->len = len;
    seg->mapped = 0;
    seg->pid = (uint32_t)getpid();
    seg->peer_records = dmxp__table_records(peer_records);
    seg->pool = plan;
    return DMXP_OK;
}

/* dmxp_segment_format_memory_pool without a blob pool. */
static inline dmxp_status dmxp_segment_format_memory_ex(dmxp_segment *seg, void *base,
                                                        size_t len, uint32_t creator_pid,
                                                        uint32_t peer_records, dmxp_error *err) {
    return dmxp_segment_format_memory_pool(seg, base, len, creator_pid, peer_records, NULL, 0,
                                           err);
}

/* dmxp_segment_format_memory_ex with the default peer table (peer_records 0: 256 records). */
static inline dmxp_status dmxp_segment_format_memory(dmxp_segment *seg, void *base, size_t len,
                                                     uint32_t creator_pid, dmxp_error *err) {
    return dmxp_segment_format_memory_ex(seg, base, len, creator_pid, 0, err);
}

/* ------------------------------------------------------------------------------------------ */
/* Names and trust: what an attach accepts (PROTOCOL.md §3.4)                                 */
/* ------------------------------------------------------------------------------------------ */

/* Whom an attach trusts. Another user can create an shm object, or plant a file or a symbolic
 * link at a file segment's path, before the real creator runs; a client attaching to it would
 * hand that user every message. So every object this client attaches to without having just
 * created it exclusively is checked with fstat on the opened descriptor (the object that is
 * then mapped), before anything is mapped:
 *
 *   T1 type   a regular file;
 *   T2 owner  st_uid == geteuid(); or has_trusted_uid and st_uid == trusted_uid; or
 *             group_access and st_gid is the group: gid when has_gid, else the caller's
 *             effective group or one of its supplementary groups;
 *   T3 mode   (st_mode & 07777) & ~asked == 0, where `asked` is `mode` (0: 0600, or 0660
 *             with group_access); the calls without a dmxp_trust ask for their `mode`
 *             argument, or 0600 when they have none.
 *
 * Trusting an owner does not widen the mode: to attach to a 0666 object of uid 65534, set
 * has_trusted_uid = 1, trusted_uid = 65534 and mode = 0666. File segments are refused as well
 * when the last path component is a symbolic link (it is opened with O_NOFOLLOW) or when the
 * directory holding it is writable by others without the sticky bit (anyone could replace the
 * segment in it; /tmp and /dev/shm are sticky); the directory rule applies to creating a file
 * segment too. A failure is DMXP_E_UNTRUSTED, its message in dmxp_error.detail. The calls that
 * take no dmxp_trust use DMXP_TRUST_DEFAULT.
 *
 * The _ex calls (dmxp_segment_create_shm_ex / _path_ex, dmxp_segment_open_or_create_shm_ex /
 * _path_ex) create with the asked mode and, with group_access and has_gid, hand a segment they
 * create to group `gid` (fchown) before formatting it; `peer_records` is the size of its peer
 * table (§11.1). When they attach to an existing segment instead, it has the table its
 * creator chose: peer_records is then ignored (dmxp_segment_peer_records tells).
 *
 * This client never reformats a segment whose creator died mid-format (§3.3): it waits and
 * fails with DMXP_E_NOT_READY, so it never writes to an object it does not own. */
typedef struct dmxp_trust {
    uint32_t mode;       /* the mode asked for (at most 0777); 0 = the default above */
    int has_trusted_uid; /* 1: objects owned by trusted_uid pass T2 as well */
    uint32_t trusted_uid;
    int group_access;    /* 1: shared with a group: T2 by group, default mode 0660 */
    int has_gid;         /* with group_access: the group is gid (else any of the caller's) */
    uint32_t gid;
    /* Creating only: records of the new segment's peer table, one per producer or consumer
     * handle registered at once (all processes together). 0 = DMXP_PEER_RECORDS (256); else
     * DMXP_PEER_RECORDS..DMXP_MAX_PEER_RECORDS, or DMXP_E_INVALID_ARGUMENT before any system
     * call. Share a segment with more than 256 only among clients that know the field. */
    uint32_t peer_records;
} dmxp_trust;

/* Every field 0 (positional, so that C++ before C++20 takes it too): mode, has_trusted_uid,
 * trusted_uid, group_access, has_gid, gid, peer_records. */
#define DMXP_TRUST_DEFAULT {0u, 0, 0u, 0, 0, 0u, 0u}

/* Longest file path this client accepts, its terminating NUL included. */
#define DMXP_PATH_CAP 4096u

/* Checks a POSIX shm name without any system call: "/" followed by 1 to 254 bytes, none of
 * them '/' or a control character (below 0x20, or 0x7f). DMXP_E_INVALID_ARGUMENT otherwise
 * (field "name", found = the offset of the offending byte, detail says what is wrong). */
static inline dmxp_status dmxp_check_shm_name(const char *name, dmxp_error *err) {
    if (name == NULL) return dmxp__fail(err, DMXP_E_INVALID_ARGUMENT, -1, "name", 0, 0, 0);
    if (name[0] != '/')
        return dmxp__fail_detail(err, DMXP_E_INVALID_ARGUMENT, "name", 0, 0, 0,
                                 "an shm segment name starts with '/'");
    size_t i = 1;
    for (; name[i] != 0 && i <= 255; i++) {
        unsigned c = (unsigned char)name[i];
        if (c == '/')
            return dmxp__fail_detail(err, DMXP_E_INVALID_ARGUMENT, "name", i, c, 0,
                                     "shm segment name with a '/' at byte %zu (only the first "
                                     "byte may be '/')",
                                     i);
        if (c < 0x20 || c == 0x7f)
            return dmxp__fail_detail(err, DMXP_E_INVALID_ARGUMENT, "name", i, c, 0,
                                     "shm segment name with a control character (0x%02x) at "
                                     "byte %zu",
                                     c, i);
    }
    if (i == 1)
        return dmxp__fail_detail(err, DMXP_E_INVALID_ARGUMENT, "name", 1, 0, 0,
                                 "shm segment name \"/\" without a name after the '/'");
    if (i > 255)
        return dmxp__fail_detail(err, DMXP_E_INVALID_ARGUMENT, "name", 255, 0, 0,
                                 "shm segment name longer than 255 bytes ('/' and at most "
                                 "254 more)");
    return DMXP_OK;
}

/* Checks a file segment's path without any system call: not empty, shorter than
 * DMXP_PATH_CAP, no control character (below 0x20, or 0x7f), not ending in '/'.
 * DMXP_E_INVALID_ARGUMENT otherwise (field "path", found = the offending byte's offset). */
static inline dmxp_status dmxp_check_path(const char *path, dmxp_error *err) {
    if (path == NULL || path[0] == 0)
        return dmxp__fail(err, DMXP_E_INVALID_ARGUMENT, -1, "path", 0, 0, 0);
    size_t i = 0;
    for (; path[i] != 0 && i < DMXP_PATH_CAP; i++) {
        unsigned c = (unsigned char)path[i];
        if (c < 0x20 || c == 0x7f)
            return dmxp__fail_detail(err, DMXP_E_INVALID_ARGUMENT, "path", i, c, 0,
                                     "segment path with a control character (0x%02x) at "
                                     "byte %zu",
                                     c, i);
    }
    if (i >= DMXP_PATH_CAP)
        return dmxp__fail_detail(err, DMXP_E_INVALID_ARGUMENT, "path", i, 0, 0,
                                 "segment path of %u bytes or more", DMXP_PATH_CAP);
    if (path[i - 1] == '/')
        return dmxp__fail_detail(err, DMXP_E_INVALID_ARGUMENT, "path", i - 1, '/', 0,
                                 "segment path ends with '/' (it must name a file)");
    return DMXP_OK;
}

/* "shm segment /x" or "file segment /path", the start of an UNTRUSTED message (the last
 * bytes of a very long path). */
static inline void dmxp__subject(int kind, const char *name, char *buf, size_t cap) {
    const char *k = kind == 0 ? "shm" : "file";
    size_t n = strlen(name);
    if (n > 200)
        snprintf(buf, cap, "%s segment ...%s", k, name + (n - 197));
    else
        snprintf(buf, cap, "%s segment %s", k, name);
}

/* Copies `in` (NULL: DMXP_TRUST_DEFAULT) with the asked mode filled in: in->mode, else
 * `mode` (a call's mode argument) when non-zero, else 0600 / 0660 with group_access. */
static inline dmxp_status dmxp__resolve_trust(const dmxp_trust *in, unsigned mode,
                                              dmxp_trust *out, dmxp_error *err) {
    dmxp_trust def = DMXP_TRUST_DEFAULT;
    *out = in ? *in : def;
    if (out->mode == 0) out->mode = mode ? mode : (out->group_access ? 0660u : DMXP_DEFAULT_MODE);
    if (out->mode & ~0777u)
        return dmxp__fail(err, DMXP_E_INVALID_ARGUMENT, -1, "mode", out->mode, 0, 0);
    return DMXP_OK;
}

/* 1 when g is the caller's effective group or one of its supplementary groups. */
static inline int dmxp__in_my_groups(gid_t g) {
    if (g == getegid()) return 1;
    int n = getgroups(0, NULL);
    if (n <= 0) return 0;
    gid_t *list = (gid_t *)malloc((size_t)n * sizeof *list);
    if (list == NULL) return 0;
    n = getgroups(n, list); /* -1 if the set grew meanwhile: no match */
    int found = 0;
    for (int i = 0; i < n; i++)
        if (list[i] == g) found = 1;
    free(list);
    return found;
}

/* T1..T3 on an open descriptor, with `t` resolved (t->mode is the asked mode). */
static inline dmxp_status dmxp__check_trust(int fd, const char *what, const dmxp_trust *t,
                                            dmxp_error *err) {
    struct stat st;
    if (fstat(fd, &st) != 0) return dmxp__fail_os(err, DMXP_E_OS, "fstat", errno);
    unsigned uid = (unsigned)st.st_uid, gid = (unsigned)st.st_gid;
    unsigned mode = (unsigned)st.st_mode & 07777u;
    if (!S_ISREG(st.st_mode))
        return dmxp__fail_detail(err, DMXP_E_UNTRUSTED, "type", uid, mode, t->mode,
                                 "%s: not a regular file (owned by uid %u with mode 0%03o)",
                                 what, uid, mode);
    unsigned me = (unsigned)geteuid();
    int owner_ok = uid == me || (t->has_trusted_uid && uid == t->trusted_uid) ||
                   (t->group_access &&
                    (t->has_gid ? gid == t->gid : dmxp__in_my_groups(st.st_gid)));
    int mode_ok = (mode & ~t->mode) == 0;
    if (owner_ok && mode_ok) return DMXP_OK;
    char owners[96], group[40] = "";
    int n = snprintf(owners, sizeof owners, "uid %u", me);
    if (t->has_trusted_uid && t->trusted_uid != me && n > 0 && (size_t)n < sizeof owners)
        n += snprintf(owners + n, sizeof owners - (size_t)n, " or uid %u", (unsigned)t->trusted_uid);
    if (t->group_access && n > 0 && (size_t)n < sizeof owners) {
        if (t->has_gid)
            snprintf(owners + n, sizeof owners - (size_t)n, " or group gid %u", (unsigned)t->gid);
        else
            snprintf(owners + n, sizeof owners - (size_t)n, " or one of this process's groups");
        snprintf(group, sizeof group, ", group gid %u,", gid);
    }
    return dmxp__fail_detail(err, DMXP_E_UNTRUSTED,
                             !owner_ok && !mode_ok ? "owner and mode"
                             : !owner_ok           ? "owner"
                                                   : "mode",
                             uid, mode, t->mode,
                             "%s: owned by uid %u%s with mode 0%03o; expected owner %s and a "
                             "mode within 0%03o",
                             what, uid, group, mode, owners, (unsigned)t->mode);
}

/* Checks T1..T3 (above) on an open descriptor of an shm object or file, the way the open
 * calls do: fstat on the descriptor, so the object checked is the one that would be mapped.
 * `what` names it in the message ("shm segment /x"); `trust` NULL = DMXP_TRUST_DEFAULT. Run it
 * before dmxp_segment_open_fd on a descriptor you did not create yourself (a memfd received
 * over a socket has no owner to check: access to it is by descriptor). */
static inline dmxp_status dmxp_check_trust_fd(int fd, const char *what, const dmxp_trust *trust,
                                              dmxp_error *err) {
    dmxp_trust t;
    dmxp_status s = dmxp__resolve_trust(trust, 0, &t, err);
    if (s != DMXP_OK) return s;
    return dmxp__check_trust(fd, what ? what : "segment", &t, err);
}

/* Opens the directory that holds `path` (O_DIRECTORY, so the check and the later openat see
 * the same directory) and refuses one writable by others without the sticky bit. *base = the
 * last component. `missing` is the status for a directory that does not exist. */
static inline dmxp_status dmxp__open_parent(const char *path, dmxp_status missing, int *dirfd,
                                            const char **base, dmxp_error *err) {
    char dir[DMXP_PATH_CAP];
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        memcpy(dir, ".", 2);
        *base = path;
    } else if (slash == path) {
        memcpy(dir, "/", 2);
        *base = path + 1;
    } else {
        size_t n = (size_t)(slash - path); /* < DMXP_PATH_CAP: dmxp_check_path */
        memcpy(dir, path, n);
        dir[n] = 0;
        *base = slash + 1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return dmxp__fail_os(err, e == ENOENT ? missing : DMXP_E_OS, "open (directory)", e);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return dmxp__fail_os(err, DMXP_E_OS, "fstat (directory)", e);
    }
    if ((st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX)) {
        close(fd);
        char what[232];
        dmxp__subject(1, path, what, sizeof what);
        unsigned uid = (unsigned)st.st_uid, mode = (unsigned)st.st_mode & 07777u;
        return dmxp__fail_detail(err, DMXP_E_UNTRUSTED, "directory", uid, mode, 0,
                                 "%s: its directory %.120s (owned by uid %u with mode 0%03o) "
                                 "is writable by others and not sticky: anyone could replace "
                                 "the segment",
                                 what, dir, uid, mode);
    }
    *dirfd = fd;
    return DMXP_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Segments backed by POSIX shm objects, files, or a file descriptor (PROTOCOL.md §3)         */
/* ------------------------------------------------------------------------------------------ */

/* Unmaps (if this handle mapped it) and forgets the segment. Channels opened from it must no
 * longer be used. Never unlinks: see dmxp_shm_unlink. */
static inline void dmxp_segment_close(dmxp_segment *seg) {
    if (seg == NULL) return;
    if (seg->mapped && seg->base) munmap(seg->base, seg->mapped_len);
    memset(seg, 0, sizeof *seg);
}

/* Removes the shm object `name` (live mappings stay valid). The name is checked as
 * dmxp_check_shm_name does. */
static inline dmxp_status dmxp_shm_unlink(const char *name, dmxp_error *err) {
    dmxp_status s = dmxp_check_shm_name(name, err);
    if (s != DMXP_OK) return s;
    if (shm_unlink(name) != 0)
        return dmxp__fail_os(err, errno == ENOENT ? DMXP_E_NO_SEGMENT : DMXP_E_OS, "shm_unlink",
                             errno);
    return DMXP_OK;
}

/* One attempt on an open fd: map it and look at magic. DMXP_E_NOT_READY when the object is
 * still smaller than the header or magic is 0. On success the mapping belongs to seg. */
static inline dmxp_status dmxp__attach_fd_once(dmxp_segment *seg, int fd, dmxp_error *err) {
    struct stat st;
    if (fstat(fd, &st) != 0) return dmxp__fail_os(err, DMXP_E_OS, "fstat", errno);
    if (st.st_size < (off_t)DMXP_HEADER_SIZE)
        return dmxp__fail(err, DMXP_E_NOT_READY, -1, "magic", 0, 0, 0);
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX)
        return dmxp__fail_os(err, DMXP_E_OS, "mmap", EFBIG);
    size_t len = (size_t)st.st_size;
    void *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) return dmxp__fail_os(err, DMXP_E_OS, "mmap", errno);
    dmxp_status s = dmxp_segment_attach_memory(seg, base, len, err);
    if (s != DMXP_OK) {
        munmap(base, len);
        return s;
    }
    seg->mapped = 1;
    return DMXP_OK;
}

/* Attaches to the segment in `fd` (opened O_RDWR; the caller keeps it and may close it after
 * this returns). Waits up to timeout_ms while the segment is being created. The descriptor is
 * the caller's: no trust check here (see dmxp_check_trust_fd for an shm object or a file). */
static inline dmxp_status dmxp_segment_open_fd(dmxp_segment *seg, int fd, int64_t timeout_ms,
                                               dmxp_error *err) {
    if (seg == NULL) return dmxp__fail(err, DMXP_E_INVALID_ARGUMENT, -1, "seg", 0, 0, 0);
    int64_t deadline = dmxp__ms_deadline(timeout_ms);
    for (;;) {
        dmxp_status s = dmxp__attach_fd_once(seg, fd, err);
        if (s != DMXP_E_NOT_READY) return s;
        if ((int64_t)dmxp_now_ns() >= deadline) return s;
        dmxp__sleep_ns(1000000);
    }
}

/* kind 0: the shm object `name` (glibc's shm_open adds O_NOFOLLOW); kind 1: the file `base` in
 * the checked directory dirfd. O_RDWR only: never O_CREAT or O_TRUNC on an object someone
 * else created, never through a symbolic link. */
static inline int dmxp__open_existing(int kind, const char *name, int dirfd, const char *base) {
    if (kind == 0) return shm_open(name, O_RDWR, 0);
    return openat(dirfd, base, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
}

/* The attach loop of §3.2, with the checks of §3.4 on every object opened (each attempt may
 * find another object under the name), before it is mapped. `t` is resolved. */
static inline dmxp_status dmxp__attach_named(int kind, dmxp_segment *seg, const char *name,
                                             int dirfd, const char *base, const dmxp_trust *t,
                                             int64_t deadline, dmxp_error *err) {
    const char *call = kind == 0 ? "shm_open" : "open";
    char what[232];
    dmxp__subject(kind, name, what, sizeof what);
    for (;;) {
        int fd = dmxp__open_existing(kind, name, dirfd, base);
        if (fd < 0) {
            int e = errno;
            if (e == ELOOP)
                return dmxp__fail_detail(err, DMXP_E_UNTRUSTED, "symlink", 0, 0, t->mode,
                                         "%s: is a symbolic link", what);
            return dmxp__fail_os(err, e == ENOENT ? DMXP_E_NO_SEGMENT : DMXP_E_OS, call, e);
        }
        dmxp_status s = dmxp__check_trust(fd, what, t, err);
        if (s == DMXP_OK) s = dmxp__attach_fd_once(seg, fd, err);
        close(fd);
        if (s != DMXP_E_NOT_READY) return s;
        if ((int64_t)dmxp_now_ns() >= deadline) return s;
        dmxp__sleep_ns(1000000);
    }
}

/* Attaches to the existing shm object `name` ("/dmxp_alloc") if it passes the checks of
 * `trust` (NULL = DMXP_TRUST_DEFAULT: owned by this euid, mode within 0600; see dmxp_trust).
 * Waits up to timeout_ms while it is being created (size below the header, or magic 0), then
 * fails with DMXP_E_NOT_READY. DMXP_E_NO_SEGMENT when there is no such object,
 * DMXP_E_UNTRUSTED when it fails a check (nothing mapped), DMXP_E_INVALID_ARGUMENT for a
 * malformed name (dmxp_check_shm_name). */
static inline dmxp_status dmxp_segment_open_shm_trusting(dmxp_segment *seg, const char *name,
                                                         int64_t timeout_ms,
                                                         const dmxp_trust *trust,
                                                         dmxp_error *err) {
    if (seg == NULL) return dmxp__fail(err, DMXP_E_INVALID_ARGUMENT, -1, "seg", 0, 0, 0);
    dmxp_status s = dmxp_check_shm_name(name, err);
    if (s != DMXP_OK) return s;
    dmxp_trust t;
    s = dmxp__resolve_trust(trust, 0, &t, err);
    if (s != DMXP_OK) return s;
    return dmxp__attach_named(0, seg, name, -1, NULL, &t, dmxp__ms_deadline(timeout_ms), err);
}

/* dmxp_segment_open_shm_trusting with the default policy. */
static inline dmxp_status dmxp_segment_open_shm(dmxp_segment *seg, const char *name,
                                                int64_t timeout_ms, dmxp_error *err) {
    return dmxp_segment_open_shm_trusting(seg, name, timeout_ms, NULL, err);
}

/* Like dmxp_segment_open_shm_trusting for a file (for example "/dev/shm/dmxp_alloc"). Also
 * DMXP_E_UNTRUSTED when the last component is a symbolic link or its directory is writable
 * by others without the sticky bit. */
static inline dmxp_status dmxp_segment_open_path_trusting(dmxp_segment *seg, const char *path,
                                                          int64_t timeout_ms,
                                                          const dmxp_trust *trust,
                                                          dmxp_error *err) {
    if (seg == NULL) return dmxp__fail(err, DMXP_E_INVALID_ARGUMENT, -1, "seg", 0, 0, 0);
    dmxp_status s = dmxp_check_path(path, err);
    if (s != DMXP_OK) return s;
    dmxp_trust t;
    s = dmxp__resolve_trust(trust, 0, &t, err);
    if (s != DMXP_OK) return s;
    int64_t deadline = dmxp__ms_deadline(timeout_ms);
    int dirfd;
    const char *base;
    s = dmxp__open_parent(path, DMXP_E_NO_SEGMENT, &dirfd, &base, err);
    if (s != DMXP_OK) return s;
    s = dmxp__attach_named(1, seg, path, dirfd, base, &t, deadline, err);
    close(dirfd);
    return s;
}

/* dmxp_segment_open_path_trusting with the default policy. */
static inline dmxp_status dmxp_segment_open_path(dmxp_segment *seg, const char *path,
                                                 int64_t timeout_ms, dmxp_error *err) {
    return dmxp_segment_open_path_trusting(seg, path, timeout_ms, NULL, err);
}

/* The blob classes a creating call asks for (PROTOCOL.md §13): `count` of `classes`, 0 = no
 * pool. A NULL request means none. */
typedef struct dmxp__pool_req {
    const dmxp_blob_class *classes;
    size_t count;
} dmxp__pool_req;

/* Sizes, maps and formats a freshly created, exclusively owned fd with a peer table of
 * `peer_records` (checked) and the blob pool of `pool` (checked; NULL: none); with gid >= 0
 * hands it to that group first. */
static inline dmxp_status dmxp__format_new_fd(dmxp_segment *seg, int fd, size_t size,
                                              unsigned mode, int64_t gid, uint32_t peer_records,
                                              const dmxp__pool_req *pool, dmxp_error *err) {
    if (gid >= 0 && fchown(fd, (uid_t)-1, (gid_t)gid) != 0)
        return dmxp__fail_os(err, DMXP_E_OS, "fchown", errno);
    /* Exact mode bits whatever the umask. */
    if (fchmod(fd, (mode_t)mode) != 0) return dmxp__fail_os(err, DMXP_E_OS, "fchmod", errno);
    if (ftruncate(fd, (off_t)size) != 0) return dmxp__fail_os(err, DMXP_E_OS, "ftruncate", errno);
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) return dmxp__fail_os(err, DMXP_E_OS, "mmap", errno);
    dmxp_status s = dmxp_segment_format_memory_pool(
        seg, base, size, (uint32_t)getpid(), peer_records, pool ? pool->classes : NULL,
        pool ? pool->count : 0, err);
    if (s != DMXP_OK) {
        munmap(base, size);
        return s;
    }
    seg->mapped = 1;
    return DMXP_OK;
}

static inline dmxp_status dmxp__check_create_args(dmxp_segment *seg, size_t size, unsigned mode,
                                                  uint32_t peer_records, dmxp_error *err) {
    if (seg == NULL) return dmxp__fail(err, DMXP_E_INVALID_ARGUMENT, -1, "seg", 0, 0, 0);
    if (size < DMXP_HEADER_SIZE)
        return dmxp__fail(err, DMXP_E_REGION_TOO_SMALL, -1, NULL, size, DMXP_HEADER_SIZE, 0);
    if (mode & ~0777u) return dmxp__fail(err, DMXP_E_INVALID_ARGUMENT, -1, "mode", mode, 0, 0);
    return dmxp__check_peer_records(peer_records, err);
}

/* The creating calls' check of their blob classes (NULL: none), before any system call: the
 * same refusals as the format (DMXP_E_INVALID_ARGUMENT, DMXP_E_OUT_OF_SPACE for a pool that
 * does not fit a segment of `size` bytes). */
static inline dmxp_status dmxp__check_pool_req(const dmxp__pool_req *pool, size_t size,
                                               dmxp_error *err) {
    if (pool == NULL) return DMXP_OK;
    dmxp_blob_pool_geometry plan;
    return dmxp__blob_plan(pool->classes, pool->count, (uint64_t)size, &plan, err);
}

/* Exclusive create of a checked shm name. */
static inline dmxp_status dmxp__create_shm(dmxp_segment *seg, const char *name, size_t size,
                                           unsigned mode, int64_t gid, uint32_t peer_records,
                                           const dmxp__pool_req *pool, dmxp_error *err) {
    /* O_EXCL: fails on any existing entry, a symbolic link included; never follows one. */
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, (mode_t)mode);
    if (fd < 0) {
        int e = errno;
        return dmxp__fail_os(err, e == EEXIST ? DMXP_E_SEGMENT_EXISTS : DMXP_E_OS, "shm_open", e);
    }
    dmxp_status s = dmxp__format_new_fd(seg, fd, size, mode, gid, peer_records, pool, err);
    close(fd);
    if (s != DMXP_OK) shm_unlink(name); /* ours, never formatted: nobody can be using it */
    return s;
}

/* Exclusive create of file `base` in the checked directory dirfd, through a temporary file
 * and linkat (which fails with EEXIST on any existing entry, a dangling symbolic link
 * included, and never writes through one). */
static inline dmxp_status dmxp__create_at(dmxp_segment *seg, int dirfd, const char *base,
                                          size_t size, unsigned mode, int64_t gid,
                                          uint32_t peer_records, const dmxp__pool_req *pool,
                                          dmxp_error *err) {
    static DMXP_ATOMIC(uint32_t) counter;
    char tmp[DMXP_PATH_CAP];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%u", base, (long)getpid(),
                     (unsigned)dmxp__fetch_add(&counter, 1, DMXP__SEQ));
    if (n < 0 || (size_t)n >= sizeof tmp)
        return dmxp__fail(err, DMXP_E_INVALID_ARGUMENT, -1, "path", 0, 0, 0);
    int fd = openat(dirfd, tmp, O_CREAT | O_EXCL | O_NOFOLLOW | O_RDWR | O_CLOEXEC, (mode_t)mode);
    if (fd < 0) return dmxp__fail_os(err, DMXP_E_OS, "open", errno);
    dmxp_status s = dmxp__format_new_fd(seg, fd, size, mode, gid, peer_records, pool, err);
    close(fd);
    if (s == DMXP_OK && linkat(dirfd, tmp, dirfd, base, 0) != 0) {
        int e = errno;
        dmxp_segment_close(seg);
        s = dmxp__fail_os(err, e == EEXIST ? DMXP_E_SEGMENT_EXISTS : DMXP_E_OS, "link", e);
    }
    unlinkat(dirfd, tmp, 0);
    return s;
}

/* The exclusive create of kind 0 (shm object `name`) or 1 (file `name`), the name checked
 * here, the other arguments by dmxp__check_create_args. */
static inline dmxp_status dmxp__create(int kind, dmxp_segment *seg, const char *name,
                                       size_t size, unsigned mode, int64_t gid,
                                       uint32_t peer_records, const dmxp__pool_req *pool,
                                       dmxp_error *err) {
    if (kind == 0) {
        dmxp_status s = dmxp_check_shm_name(name, err);
        if (s != DMXP_OK) return s;
        return dmxp__create_shm(seg, name, size, mode, gid, peer_records, pool, err);
    }
    dmxp_status s = dmxp_check_path(name, err);
    if (s != DMXP_OK) return s;
    int dirfd;
    const char *base;
    s = dmxp__open_parent(name, DMXP_E_OS, &dirfd, &base, err);
    if (s != DMXP_OK) return s;
    s = dmxp__create_at(seg, dirfd, base, size, mode, gid, peer_records, pool, err);
    close(dirfd);
    return s;
}

/* The group a segment created under policy `t` is handed to: gid with group_access and
 * has_gid, else none (-1). */
static inline int64_t dmxp__trust_gid(const dmxp_trust *t) {
    return t->group_access && t->has_gid ? (int64_t)t->gid : -1;
}

/* The exclusive create of kind 0 or 1 with the creation options of `trust` (NULL =
 * DMXP_TRUST_DEFAULT): the asked mode, the group, peer_records. */
static inline dmxp_status dmxp__create_ex(int kind, dmxp_segment *seg, const char *name,
                                          size_t size, const dmxp_trust *trust,
                                          const dmxp__pool_req *pool, dmxp_error *err) {
    dmxp_trust t;
    dmxp_status s = dmxp__resolve_trust(trust, 0, &t, err);
    if (s == DMXP_OK) s = dmxp__check_create_args(seg, size, t.mode, t.peer_records, err);
    if (s == DMXP_OK) s = dmxp__check_pool_req(pool, size, err);
    if (s != DMXP_OK) return s;
    return dmxp__create(kind, seg, name, size, t.mode, dmxp__trust_gid(&t), t.peer_records, pool,
                        err);
}

/* Creates the shm object `name` exclusively (O_CREAT|O_EXCL), applies `mode` exactly
 * (DMXP_DEFAULT_MODE = 0600), sizes it to `size` bytes and formats it with the default peer
 * table (256 records; dmxp_segment_create_shm_ex chooses). DMXP_E_SEGMENT_EXISTS when the
 * name is taken (the existing object is left untouched); DMXP_E_INVALID_ARGUMENT for a
 * malformed name (dmxp_check_shm_name). */
static inline dmxp_status dmxp_segment_create_shm(dmxp_segment *seg, const char *name,
                                                  size_t size, unsigned mode, dmxp_error *err) {
    dmxp_status s = dmxp__check_create_args(seg, size, mode, 0, err);
    if (s != DMXP_OK) return s;
    return dmxp__create(0, seg, name, size, mode, -1, 0, NULL, err);
}

/* Creates the file `path` exclusively: a temporary file in the same directory is sized,
 * mapped and formatted, then linked to `path` (link(2) fails if `path` exists, even as a
 * symbolic link, so an existing segment is never replaced or written through), then the
 * temporary name is removed. DMXP_E_UNTRUSTED when the directory is writable by others
 * without the sticky bit; DMXP_E_INVALID_ARGUMENT for a malformed path (dmxp_check_path). */
static inline dmxp_status dmxp_segment_create_path(dmxp_segment *seg, const char *path,
                                                   size_t size, unsigned mode,
                                                   dmxp_error *err) {
    dmxp_status s = dmxp__check_create_args(seg, size, mode, 0, err);
    if (s != DMXP_OK) return s;
    return dmxp__create(1, seg, path, size, mode, -1, 0, NULL, err);
}

/* dmxp_segment_create_shm with the creation options of a dmxp_trust (`trust` NULL =
 * DMXP_TRUST_DEFAULT): the asked mode (trust->mode, or 0600 / 0660 with group_access), with
 * group_access and has_gid the group trust->gid (fchown before formatting), and
 * trust->peer_records records in the peer table (0 = 256; else 256..16384, or
 * DMXP_E_INVALID_ARGUMENT with field "peer_records" before any system call). */
static inline dmxp_status dmxp_segment_create_shm_ex(dmxp_segment *seg, const char *name,
                                                     size_t size, const dmxp_trust *trust,
                                                     dmxp_error *err) {
    return dmxp__create_ex(0, seg, name, size, trust, NULL, err);
}

/* dmxp_segment_create_path with the creation options of a dmxp_trust (as
 * dmxp_segment_create_shm_ex). */
static inline dmxp_status dmxp_segment_create_path_ex(dmxp_segment *seg, const char *path,
                                                      size_t size, const dmxp_trust *trust,
                                                      dmxp_error *err) {
    return dmxp__create_ex(1, seg, path, size, trust, NULL, err);
}

/* Create-or-attach on checked arguments and a resolved policy: creates with t->mode (and
 * group gid when >= 0) and t->peer_records; an existing object is attached to only if it
 * passes `t`. */
static inline dmxp_status dmxp__open_or_create(int kind, dmxp_segment *seg, const char *name,
                                               size_t size, const dmxp_trust *t, int64_t gid,
                                               const dmxp__pool_req *pool, int64_t timeout_ms,
                                               int *created, dmxp_error *err) {
    int64_t deadline = dmxp__ms_deadline(timeout_ms);
    if (created) *created = 0;
    int dirfd = -1;
    const char *base = NULL;
    dmxp_status s;
    if (kind == 1) {
        s = dmxp__open_parent(name, DMXP_E_OS, &dirfd, &base, err);
        if (s != DMXP_OK) return s;
    }
    for (;;) {
        s = kind == 0 ? dmxp__create_shm(seg, name, size, t->mode, gid, t->peer_records, pool,
                                         err)
                      : dmxp__create_at(seg, dirfd, base, size, t->mode, gid, t->peer_records,
                                        pool, err);
        if (s == DMXP_OK) {
            if (created) *created = 1;
            break;
        }
        if (s != DMXP_E_SEGMENT_EXISTS) break;
        s = dmxp__attach_named(kind, seg, name, dirfd, base, t, deadline, err);
        /* Removed between our create and our attach: try creating again. */
        if (s != DMXP_E_NO_SEGMENT) break;
        if ((int64_t)dmxp_now_ns() >= deadline) break;
    }
    if (dirfd >= 0) close(dirfd);
    return s;
}

/* Create-or-attach (§3.2): tries the exclusive create; if the name exists, attaches (waiting
 * up to timeout_ms while it is being created); if it vanished meanwhile, creates again.
 * *created (optional) tells which happened. An existing segment is used as is, whatever its
 * size: it is never truncated or reformatted. It must pass the checks of dmxp_trust with the
 * default policy and `mode` as the asked mode: owned by this euid, no mode bit outside
 * `mode`; else DMXP_E_UNTRUSTED. A segment it creates has the default peer table (256
 * records; the _ex calls choose). */
static inline dmxp_status dmxp_segment_open_or_create_shm(dmxp_segment *seg, const char *name,
                                                          size_t size, unsigned mode,
                                                          int64_t timeout_ms, int *created,
                                                          dmxp_error *err) {
    dmxp_status s = dmxp__check_create_args(seg, size, mode, 0, err);
    if (s == DMXP_OK) s = dmxp_check_shm_name(name, err);
    dmxp_trust t;
    if (s == DMXP_OK) s = dmxp__resolve_trust(NULL, mode, &t, err);
    if (s != DMXP_OK) return s;
    return dmxp__open_or_create(0, seg, name, size, &t, -1, NULL, timeout_ms, created, err);
}

/* dmxp_segment_open_or_create_shm for a file path, with the file rules of dmxp_trust. */
static inline dmxp_status dmxp_segment_open_or_create_path(dmxp_segment *seg, const char *path,
                                                           size_t size, unsigned mode,
                                                           int64_t timeout_ms, int *created,
                                                           dmxp_error *err) {
    dmxp_status s = dmxp__check_create_args(seg, size, mode, 0, err);
    if (s == DMXP_OK) s = dmxp_check_path(path, err);
    dmxp_trust t;
    if (s == DMXP_OK) s = dmxp__resolve_trust(NULL, mode, &t, err);
    if (s != DMXP_OK) return s;
    return dmxp__open_or_create(1, seg, path, size, &t, -1, NULL, timeout_ms, created, err);
}

/* Create-or-attach with an explicit policy (`trust` NULL = DMXP_TRUST_DEFAULT). A segment it
 * creates gets the asked mode (trust->mode, or 0600 / 0660 with group_access), with
 * group_access and has_gid group trust->gid (fchown before formatting), and a peer table of
 * trust->peer_records records (0 = 256; else 256..16384, or DMXP_E_INVALID_ARGUMENT before
 * any system call); an existing one is attached to only if it passes the checks of
 * dmxp_trust, else DMXP_E_UNTRUSTED (nothing mapped or written), and keeps the table its
 * creator chose (dmxp_segment_peer_records). */
static inline dmxp_status dmxp_segment_open_or_create_shm_ex(dmxp_segment *seg, const char *name,
                                                             size_t size, int64_t timeout_ms,
                                                             const dmxp_trust *trust,
                                                             int *created, dmxp_error *err) {
    dmxp_trust t;
    dmxp_status s = dmxp__resolve_trust(trust, 0, &t, err);
    if (s == DMXP_OK) s = dmxp__check_create_args(seg, size, t.mode, t.peer_records, err);
    if (s == DMXP_OK) s = dmxp_check_shm_name(name, err);
    if (s != DMXP_OK) return s;
    return dmxp__open_or_create(0, seg, name, size, &t, dmxp__trust_gid(&t), NULL, timeout_ms,
                                created, err);
}

/* dmxp_segment_open_or_create_shm_ex for a file path. */
static inline dmxp_status dmxp_segment_open_or_create_path_ex(dmxp_segment *seg,
                                                              const char *path, size_t size,
                                                              int64_t timeout_ms,
                                                              const dmxp_trust *trust,
                                                              int *created, dmxp_error *err) {
    dmxp_trust t;
    dmxp_status s = dmxp__resolve_trust(trust, 0, &t, err);
    if (s == DMXP_OK) s = dmxp__check_create_args(seg, size, t.mode, t.peer_records, err);
    if (s == DMXP_OK) s = dmxp_check_path(path, err);
    if (s != DMXP_OK) return s;
    return dmxp__open_or_create(1, seg, path, size, &t, dmxp__trust_gid(&t), NULL, timeout_ms,
                                created, err);
}

/* dmxp_segment_create_shm_ex with a blob pool (PROTOCOL.md §13) of the `class_count` size
 * classes `classes` (1..DMXP_MAX_BLOB_CLASSES of them, block sizes strictly increasing; see
 * dmxp_blob_class; 0 classes: no pool), laid out as dmxp_segment_format_memory_pool says. An
 * invalid class list (DMXP_E_INVALID_ARGUMENT, field "blob_classes", detail says why) or a pool
 * that does not fit `size` (DMXP_E_OUT_OF_SPACE: found = the pool's bytes, value2 = the bytes
 * available) is refused before any system call. */
static inline dmxp_status dmxp_segment_create_shm_pool(dmxp_segment *seg, const char *name,
                                                       size_t size, const dmxp_trust *trust,
                                                       const dmxp_blob_class *classes,
                                                       size_t class_count, dmxp_error *err) {
    dmxp__pool_req pool = {classes, class_count};
    return dmxp__create_ex(0, seg, name, size, trust, &pool, err);
}

/* dmxp_segment_create_path_ex with a blob pool (as dmxp_segment_create_shm_pool). */
static inline dmxp_status dmxp_segment_create_path_pool(dmxp_segment *seg, const char *path,
                                                        size_t size, const dmxp_trust *trust,
                                                        const dmxp_blob_class *classes,
                                                        size_t class_count, dmxp_error *err) {
    dmxp__pool_req pool = {classes, class_count};
    return dmxp__create_ex(1, seg, path, size, trust, &pool, err);
}

/* dmxp_segment_open_or_create_shm_ex whose created segment gets a blob pool of the
 * `class_count` size classes `classes` (as dmxp_segment_create_shm_pool; the classes are
 * checked before any system call, whether the segment exists or not). An existing segment is
 * attached to as it is, with the pool its creator made or none: dmxp_segment_blob_pool tells
 * (and a channel creation with .blobs fails with DMXP_E_NO_BLOB_POOL on a segment without
 * one). */
static inline dmxp_status dmxp_segment_open_or_create_shm_pool(
    dmxp_segment *seg, const char *name, size_t size, int64_t timeout_ms,
    const dmxp_trust *trust, const dmxp_blob_class *classes, size_t class_count, int *created,
    dmxp_error *err) {
    dmxp_trust t;
    dmxp__pool_req pool = {classes, class_count};
    if (created) *created = 0;
    dmxp_status s = dmxp__resolve_trust(trust, 0, &t, err);
    if (s == DMXP_OK) s = dmxp__check_create_args(seg, size, t.mode, t.peer_records, err);
    if (s == DMXP_OK) s = dmxp__check_pool_req(&pool, size, err);
    if (s == DMXP_OK) s = dmxp_check_shm_name(name, err);
    if (s != DMXP_OK) return s;
    return dmxp__open_or_create(0, seg, name, size, &t, dmxp__trust_gid(&t), &pool, timeout_ms,
                                created, err);
}

/* dmxp_segment_open_or_create_shm_pool for a file path. */
static inline dmxp_status dmxp_segment_open_or_create_path_pool(
    dmxp_segment *seg, const char *path, size_t size, int64_t timeout_ms,
    const dmxp_trust *trust, const dmxp_blob_class *classes, size_t class_count, int *created,
    dmxp_error *err) {
    dmxp_trust t;
    dmxp__pool_req pool = {classes, class_count};
    if (created) *created = 0;
    dmxp_status s = dmxp__resolve_trust(trust, 0, &t, err);
    if (s == DMXP_OK) s = dmxp__check_create_args(seg, size, t.mode, t.peer_records, err);
    if (s == DMXP_OK) s = dmxp__check_pool_req(&pool, size, err);
    if (s == DMXP_OK) s = dmxp_check_path(path, err);
    if (s != DMXP_OK) return s;
    return dmxp__open_or_create(1, seg, path, size, &t, dmxp__trust_gid(&t), &pool, timeout_ms,
                                created, err);
}

/* The segment's blob pool (PROTOCOL.md §13) as validated when it was attached (or made when
 * it was formatted): its offset, length and classes, smallest first. NULL when it has none.
 * Not a snapshot: the geometry is never re-read. */
static inline const dmxp_blob_pool_geometry *dmxp_segment_blob_pool(const dmxp_segment *seg) {
    return seg != NULL && seg->pool.class_count != 0 ? &seg->pool : NULL;
}

/* Segment-level accessors (snapshots). */
static inline uint32_t dmxp_segment_channel_count(const dmxp_segment *seg) {
    return dmxp__load(&dmxp__hdr(seg)->channel_count, DMXP__ACQ);
}

static inline uint64_t dmxp_segment_free_space(const dmxp_segment *seg) {
    uint64_t c = dmxp__load(&dmxp__hdr(seg)->band_cursor, DMXP__RLX);
    return c < seg->len ? seg->len - c : 0;
}

/* Records of the segment's peer table as this handle read them at attach (or chose them at
 * format): 256 for a segment whose header says 0, else the header's peer_records (§11.1).
 * Not a snapshot: the field is never re-read. At most that many handles can register. */
static inline uint32_t dmxp_segment_peer_records(const dmxp_segment *seg) {
    return dmxp__table_records(seg->peer_records);
}

/* ------------------------------------------------------------------------------------------ */
/* Channels (PROTOCOL.md §4.2, §5)                                                            */
/* ------------------------------------------------------------------------------------------ */

static inline void dmxp__bind(const dmxp_segment *seg, uint32_t id, uint64_t cap, uint64_t band,
                              uint32_t flags, uint32_t limit, dmxp_channel *ch) {
    ch->entry = dmxp__entry(seg, id);
    ch->channel_flags = flags;
    ch->max_message = limit;
    ch->slots = (dmxp_slot *)(void *)(seg->base + band);
    ch->capacity = cap;
    ch->mask = cap - 1;
    ch->band_offset = band;
    ch->id = id;
    ch->pid = seg->pid;
    ch->base = seg->base;
    ch->segment_len = seg->len;
    ch->peer_records = dmxp__table_records(seg->peer_records);
    ch->send_peer = NULL;
    ch->recv_peer = NULL;
    dmxp__watch *watches[2] = {&ch->send_watch, &ch->recv_watch};
    for (int i = 0; i < 2; i++) {
        dmxp__init(&watches[i]->misses, 0);
        dmxp__init(&watches[i]->position, 0);
        dmxp__init(&watches[i]->since, 0);
        dmxp__init(&watches[i]->next, 0);
        dmxp__init(&watches[i]->pause, 0);
        dmxp__init(&watches[i]->last, 0);
    }
    dmxp__init(&ch->unblock_ns, DMXP_UNBLOCK_TIMEOUT_NS);
    dmxp__init(&ch->revoked, 0);
    dmxp__init(&ch->stuck_looks, 0);
    dmxp__init(&ch->timestamps, 1);
    ch->pool = seg->pool;
    ch->send_index = 0;
    ch->recv_index = 0;
    dmxp__init(&ch->bad_refs, 0);
    dmxp__init(&ch->reclaim_ns, 0);
}

/* Opens created channel `id` after validating its entry and checking its band against every
 * other channel's, then its flags and message limit (§12.1: DMXP_E_UNKNOWN_CHANNEL_FLAGS,
 * DMXP_E_MAX_MESSAGE_SIZE_OUT_OF_RANGE), which the handle caches with the geometry.
 * DMXP_E_NOT_FOUND (or DMXP_E_BEING_CREATED) when it does not exist yet. */
static inline dmxp_status dmxp_channel_open(const dmxp_segment *seg, uint32_t id,
                                            dmxp_channel *ch, dmxp_error *err) {
    if (seg == NULL || seg->base == NULL || ch == NULL)
        return dmxp__fail(err, DMXP_E_INVALID_ARGUMENT, -1, "channel", 0, 0, 0);
    if (id >= DMXP_MAX_CHANNELS)
        return dmxp__fail(err, DMXP_E_INVALID_CHANNEL_ID, -1, NULL, id, 0, 0);
    uint64_t cap, band;
    uint32_t state;
    dmxp_status s = dmxp__geometry(seg, id, &cap, &band, &state, err);
    if (s != DMXP_OK) return s;
    if (cap == 0)
        return dmxp__fail(err,
                          state == DMXP_STATE_CREATING ? DMXP_E_BEING_CREATED : DMXP_E_NOT_FOUND,
                          (int32_t)id, NULL, 0, 0, 0);
    s = dmxp__check_overlap(seg, id, cap, band, err);
    if (s != DMXP_OK) return s;
    uint32_t flags, limit;
    s = dmxp__check_runs(seg, id, cap, &flags, &limit, err);
    if (s != DMXP_OK) return s;
    dmxp__bind(seg, id, cap, band, flags, limit, ch);
    return DMXP_OK;
}

/* Opens channel `id`, waiting up to timeout_ms for it to be created. */
static inline dmxp_status dmxp_channel_open_wait(const dmxp_segment *seg, uint32_t id,
                                                 int64_t timeout_ms, dmxp_channel *ch,
                                                 dmxp_error *err) {
    int64_t deadline = dmxp__ms_deadline(timeout_ms);
    for (;;) {
        dmxp_status s = dmxp_channel_open(seg, id, ch, err);
        if (s != DMXP_E_NOT_FOUND && s != DMXP_E_BEING_CREATED) return s;
        if ((int64_t)dmxp_now_ns() >= deadline) return s;
        dmxp__sleep_ns(1000000);
    }
}

/* One past the last byte of any valid band or of the blob pool (HEADER_SIZE when there are
 * none). */
static inline uint64_t dmxp__end_of_bands(const dmxp_segment *seg) {
    uint64_t end = DMXP_HEADER_SIZE;
    if (seg->pool.class_count != 0) end = seg->pool.offset + seg->pool.len;
    for (uint32_t id = 0; id < DMXP_MAX_CHANNELS; id++) {
        uint64_t cap, band;
        if (dmxp__geometry(seg, id, &cap, &band, NULL, NULL) == DMXP_OK && cap != 0) {
            uint64_t e = band + cap * DMXP_SLOT_SIZE;
            if (e > end) end = e;
        }
    }
    return end;
}

/* Carves `need` bytes from band_cursor by CAS (§5 reserve_band). */
static inline dmxp_status dmxp__reserve_band(const dmxp_segment *seg, uint64_t need,
                                             uint64_t *start, dmxp_error *err) {
    DMXP_ATOMIC(uint64_t) *cursor = &dmxp__hdr(seg)->band_cursor;
    uint64_t c = dmxp__load(cursor, DMXP__RLX);
    for (uint32_t i = 0; i < DMXP_RETRY_LIMIT; i++) {
        if (c == 0) {
            /* A segment made without a band allocator: adopt the end of the last band. Racing
             * adopters compute the same value; the CAS lets one of them install it. */
            uint64_t adopted = dmxp__end_of_bands(seg);
            uint64_t expected = 0;
            if (dmxp__cas_strong(cursor, &expected, adopted, DMXP__ACQREL,
                                 DMXP__RLX))
                c = adopted;
            else
                c = expected;
        }
        if (c < DMXP_HEADER_SIZE || c > seg->len || c % DMXP_SLOT_ALIGN != 0)
            return dmxp__fail(err, DMXP_E_BAND_CURSOR_OUT_OF_RANGE, -1, NULL, c, seg->len, 0);
        if (need > seg->len - c)
            return dmxp__fail(err, DMXP_E_OUT_OF_SPACE, -1, NULL, need, seg->len - c, 0);
        if (dmxp__cas_weak(cursor, &c, c + need, DMXP__ACQREL, DMXP__RLX)) {
            *start = c;
            return DMXP_OK;
        }
    }
    return dmxp__fail(err, DMXP_E_BUSY, -1, "band_cursor", 0, 0, 0);
}

static inline void dmxp__zero_slot(dmxp_slot *s) {
    dmxp_slot_meta *m = &s->meta;
    dmxp__store(&m->message_id, 0, DMXP__RLX);
    dmxp__store(&m->timestamp_ns, 0, DMXP__RLX);
    dmxp__store(&m->channel_id, 0, DMXP__RLX);
    dmxp__store(&m->message_type, 0, DMXP__RLX);
    dmxp__store(&m->sender_pid, 0, DMXP__RLX);
    dmxp__store(&m->sender_runtime, 0, DMXP__RLX);
    dmxp__store(&m->flags, 0, DMXP__RLX);
    dmxp__store(&m->payload_len, 0, DMXP__RLX);
    dmxp__store(&m->reserved, 0, DMXP__RLX);
    dmxp__store(&s->run_slots, 0, DMXP__RLX);
    dmxp__store(&s->run_index, 0, DMXP__RLX);
    dmxp__store(&s->zero0, 0, DMXP__RLX);
    for (size_t i = 0; i < DMXP_PAYLOAD_WORDS; i++)
        dmxp__store(&s->payload[i], 0, DMXP__RLX);
    for (size_t i = 0; i < 8; i++) dmxp__store(&s->zero1[i], 0, DMXP__RLX);
}

static inline int dmxp__valid_capacity(uint64_t cap) {
    return dmxp__is_pow2(cap) && cap >= DMXP_MIN_CAPACITY && cap <= DMXP_MAX_CAPACITY;
}

/* One attempt of §5 open_or_create; `blobs`: the channel gets DMXP_CHANNEL_BLOBS (the caller
 * checked that the segment has a pool). */
static inline dmxp_status dmxp__open_or_create_once(const dmxp_segment *seg, uint32_t id,
                                                    uint64_t capacity, uint32_t runs_limit,
                                                    int blobs, dmxp_channel *ch, int *created,
                                                    dmxp_error *err) {
    dmxp_channel_entry *e = dmxp__entry(seg, id);
    if (dmxp__load(&e->capacity, DMXP__ACQ) != 0)
        return dmxp_channel_open(seg, id, ch, err); /* exists, whatever its capacity */
    if (blobs && seg->pool.class_count == 0) /* before the claim: nothing written */
        return dmxp__fail(err, DMXP_E_NO_BLOB_POOL, (int32_t)id, "blobs", 0, 0, 0);
    uint32_t expected = DMXP_STATE_EMPTY;
    if (!dmxp__cas_strong(&e->state, &expected, DMXP_STATE_CREATING,
                          DMXP__ACQ, DMXP__ACQ)) {
        dmxp_status s = dmxp_channel_open(seg, id, ch, err);
        if (s == DMXP_E_NOT_FOUND)
            return dmxp__fail(err, DMXP_E_BEING_CREATED, (int32_t)id, NULL, 0, 0, 0);
        return s;
    }
    /* This process holds the claim. Record who, so a creator dying here can be identified. */
    dmxp__store(&e->creator_pid, seg->pid, DMXP__RLX);
    uint64_t band = 0;
    dmxp_status s = dmxp__reserve_band(seg, capacity * DMXP_SLOT_SIZE, &band, err);
    /* A scribbled band_cursor could point into the blob pool: never zero its blocks. */
    if (s == DMXP_OK && dmxp__overlaps_pool(&seg->pool, band, capacity * DMXP_SLOT_SIZE))
        s = dmxp__fail(err, DMXP_E_BLOB_POOL_OVERLAP, (int32_t)id, NULL, band, seg->pool.offset,
                       seg->pool.len);
    if (s != DMXP_OK) {
        dmxp__store(&e->state, DMXP_STATE_EMPTY, DMXP__REL); /* give the id back */
        return s;
    }
    dmxp_slot *slots = (dmxp_slot *)(void *)(seg->base + band);
    for (uint64_t k = 0; k < capacity; k++) {
        dmxp__zero_slot(&slots[k]);
        dmxp__store(&slots[k].sequence, k, DMXP__RLX);
    }
    /* runs_limit: 0 (a channel of single-slot messages), or the checked limit of §12.1. */
    uint32_t flags = (runs_limit ? DMXP_CHANNEL_RUNS : 0u) | (blobs ? DMXP_CHANNEL_BLOBS : 0u);
    dmxp__store(&e->channel_id, id, DMXP__RLX);
    dmxp__store(&e->flags, flags, DMXP__RLX);
    dmxp__store(&e->max_message_size, runs_limit, DMXP__RLX);
    dmxp__store(&e->band_offset, band, DMXP__RLX);
    dmxp__store(&e->creator_pid, seg->pid, DMXP__RLX);
    dmxp__store(&e->not_empty_seq, 0, DMXP__RLX);
    dmxp__store(&e->not_empty_waiters, 0, DMXP__RLX);
    dmxp__store(&e->not_full_seq, 0, DMXP__RLX);
    dmxp__store(&e->not_full_waiters, 0, DMXP__RLX);
    dmxp__store(&e->head, 0, DMXP__RLX);
    dmxp__store(&e->tail, 0, DMXP__RLX);
    dmxp__fetch_add(&dmxp__hdr(seg)->channel_count, 1, DMXP__ACQREL);
    dmxp__store(&e->capacity, capacity, DMXP__REL); /* publication point */
    dmxp__store(&e->state, DMXP_STATE_READY, DMXP__REL);
    dmxp__bind(seg, id, capacity, band, flags, runs_limit ? runs_limit : DMXP_MSG_INLINE, ch);
    if (created) *created = 1;
    return DMXP_OK;
}

/* Options of a channel creation (dmxp_channel_open_or_create_ex, dmxp_channel_create_ex);
 * NULL means all zero. */
typedef struct dmxp_channel_opts {
    /* The largest message the channel takes, in bytes (PROTOCOL.md §12.1). 0 or at most
     * DMXP_MSG_INLINE (960): a channel of single-slot messages, as dmxp_channel_open_or_create
     * makes. Above: the channel carries runs (DMXP_CHANNEL_RUNS) and takes messages of up to
     * this many bytes; it must be at most capacity * 960 and below 2^32, else
     * DMXP_E_INVALID_MAX_MESSAGE_SIZE. A message of L > 960 bytes needs ceil(L / 960) free
     * slots at once, so a limit near capacity * 960 makes a large send wait for an almost
     * empty ring: `dmxp` uses at most capacity / 2 * 960 unless asked for more. Ignored when
     * the channel exists already (it keeps its own limit: dmxp_channel_max_message_size). */
    uint64_t max_message_size;
    /* Non-zero: the channel carries references to blocks of the segment's blob pool
     * (DMXP_CHANNEL_BLOBS, PROTOCOL.md §13.1): loans committed with dmxp_blob_commit, received
     * in place with dmxp_blob_receive; inline messages (and runs, with max_message_size) travel
     * on it as on any channel. The segment must have a pool (DMXP_E_NO_BLOB_POOL otherwise,
     * nothing written). Ignored when the channel exists already (dmxp_channel_flags tells). */
    int blobs;
} dmxp_channel_opts;

/* The limit a creation with `opts` writes into the entry: 0 (no runs) or 961..; fails when
 * the ring of `capacity` slots cannot hold it. */
static inline dmxp_status dmxp__runs_limit(const dmxp_channel_opts *opts, uint64_t capacity,
                                           uint32_t id, uint32_t *limit, dmxp_error *err) {
    uint64_t want = opts ? opts->max_message_size : 0;
    *limit = 0;
    if (want <= DMXP_MSG_INLINE) return DMXP_OK;
    uint64_t most = dmxp__most_message(capacity);
    if (want > most)
        return dmxp__fail(err, DMXP_E_INVALID_MAX_MESSAGE_SIZE, (int32_t)id, "max_message_size",
                          want, capacity, most);
    *limit = (uint32_t)want;
    return DMXP_OK;
}

/* dmxp_channel_open_or_create with creation options (dmxp_channel_opts: the max message
 * size of a channel that carries runs, PROTOCOL.md §12; .blobs for a channel that carries blob
 * references, §13). An existing channel is opened as it is, whatever its capacity, limit and
 * flags (dmxp_channel_capacity, dmxp_channel_max_message_size, dmxp_channel_flags tell).
 * DMXP_E_INVALID_MAX_MESSAGE_SIZE (found = the limit asked for, value2 = capacity, value3 =
 * the most it allows) before anything is written when the limit does not fit the capacity
 * asked for; DMXP_E_NO_BLOB_POOL (channel = id) before anything is written when .blobs asks
 * to create a channel in a segment without a blob pool. */
static inline dmxp_status dmxp_channel_open_or_create_ex(const dmxp_segment *seg, uint32_t id,
                                                         uint64_t capacity,
                                                         const dmxp_channel_opts *opts,
                                                         int64_t timeout_ms, dmxp_channel *ch,
                                                         int *created, dmxp_error *err) {
    if (created) *created = 0;
    if (seg == NULL || seg->base == NULL || ch == NULL)
        return dmxp__fail(err, DMXP_E_INVALID_ARGUMENT, -1, "channel", 0, 0, 0);
    if (!dmxp__valid_capacity(capacity))
        return dmxp__fail(err, DMXP_E_INVALID_CAPACITY, -1, NULL, capacity, 0, 0);
    if (id >= DMXP_MAX_CHANNELS)
        return dmxp__fail(err, DMXP_E_INVALID_CHANNEL_ID, -1, NULL, id, 0, 0);
    uint32_t limit;
    dmxp_status s = dmxp__runs_limit(opts, capacity, id, &limit, err);
    if (s != DMXP_OK) return s;
    int blobs = opts != NULL && opts->blobs != 0;
    int64_t deadline = dmxp__ms_deadline(timeout_ms);
    for (;;) {
        s = dmxp__open_or_create_once(seg, id, capacity, limit, blobs, ch, created, err);
        if (s != DMXP_E_BEING_CREATED) return s;
        if ((int64_t)dmxp_now_ns() >= deadline) return s;
        dmxp__sleep_ns(1000000);
    }
}

/* Creates channel `id` with `capacity` slots (a power of two, 2..2^32), or opens it if it
 * already exists, whatever its capacity (ch->capacity tells). Retries for up to timeout_ms
 * while another process holds the creation claim (DMXP_E_BEING_CREATED after that).
 * *created (optional) is 1 when this call made the channel. The channel carries single-slot
 * messages (up to 960 bytes); dmxp_channel_open_or_create_ex makes one for longer ones. */
static inline dmxp_status dmxp_channel_open_or_create(const dmxp_segment *seg, uint32_t id,
                                                      uint64_t capacity, int64_t timeout_ms,
                                                      dmxp_channel *ch, int *created,
                                                      dmxp_error *err) {
    return dmxp_channel_open_or_create_ex(seg, id, capacity, NULL, timeout_ms, ch, created, err);
}

/* Strict create with options: DMXP_E_CHANNEL_EXISTS (found = its capacity) if the channel
 * was there. */
static inline dmxp_status dmxp_channel_create_ex(const dmxp_segment *seg, uint32_t id,
                                                 uint64_t capacity,
                                                 const dmxp_channel_opts *opts,
                                                 dmxp_channel *ch, dmxp_error *err) {
    int created = 0;
    dmxp_status s =
        dmxp_channel_open_or_create_ex(seg, id, capacity, opts, 0, ch, &created, err);
    if (s == DMXP_OK && !created)
        return dmxp__fail(err, DMXP_E_CHANNEL_EXISTS, (int32_t)id, NULL, ch->capacity, 0, 0);
    return s;
}

/* Strict create: DMXP_E_CHANNEL_EXISTS (found = its capacity) if the channel was there. */
static inline dmxp_status dmxp_channel_create(const dmxp_segment *seg, uint32_t id,
                                              uint64_t capacity, dmxp_channel *ch,
                                              dmxp_error *err) {
    return dmxp_channel_create_ex(seg, id, capacity, NULL, ch, err);
}

/* The handle's cached geometry and limits (read once at open, §4.3, §12.1). */
static inline uint64_t dmxp_channel_capacity(const dmxp_channel *ch) { return ch->capacity; }
/* The largest message the channel takes: its max_message_size when it carries runs
 * (DMXP_CHANNEL_RUNS), else DMXP_MSG_INLINE (960). */
static inline uint32_t dmxp_channel_max_message_size(const dmxp_channel *ch) {
    return ch->max_message;
}
/* The entry's flags (DMXP_CHANNEL_RUNS, DMXP_CHANNEL_BLOBS, or 0). */
static inline uint32_t dmxp_channel_flags(const dmxp_channel *ch) { return ch->channel_flags; }

/* An opt-in refusal of runs (PROTOCOL.md §12.1), for code that cannot take a message longer
 * than DMXP_MSG_INLINE (960) bytes: fixed 960-byte buffers, code that speaks only §6. Call it
 * right after opening the channel. DMXP_OK when the channel has no DMXP_CHANNEL_RUNS flag (as
 * validated and cached at open: never re-read), else DMXP_E_RUNS_NOT_SUPPORTED with err
 * (optional) naming the channel: err->channel = id, field "flags", found = its max message
 * size, value2 = the flags (dmxp_error_format: "channel N: carries messages longer than 960
 * bytes ..."). The handle stays valid either way; what to do with a refused one is the
 * caller's choice. A NULL ch is DMXP_E_INVALID_ARGUMENT. */
static inline dmxp_status dmxp_channel_require_single_slot(const dmxp_channel *ch,
                                                           dmxp_error *err) {
    if (ch == NULL) return dmxp__fail(err, DMXP_E_INVALID_ARGUMENT, -1, "channel", 0, 0, 0);
    if ((ch->channel_flags & DMXP_CHANNEL_RUNS) == 0) return DMXP_OK;
    return dmxp__fail(err, DMXP_E_RUNS_NOT_SUPPORTED, (int32_t)ch->id, "flags", ch->max_message,
                      ch->channel_flags, 0);
}

/* DMXP_OK when a message of `len` bytes fits the channel (dmxp_try_send and the other single
 * sends), else DMXP_E_TOO_LARGE, with err (optional) naming the channel, found = len and
 * value2 = the limit (dmxp_error_format: "message of N bytes exceeds the limit of M bytes"). */
static inline dmxp_status dmxp_check_message_size(const dmxp_channel *ch, size_t len,
                                                  dmxp_error *err) {
    if (len <= ch->max_message) return DMXP_OK;
    return dmxp__fail(err, DMXP_E_TOO_LARGE, (int32_t)ch->id, "payload_len", len,
                      ch->max_message, 0);
}

/* Snapshots of the cursors and waiter counts. */
static inline uint64_t dmxp_channel_head(const dmxp_channel *ch) {
    return dmxp__load(&ch->entry->head, DMXP__RLX);
}
static inline uint64_t dmxp_channel_tail(const dmxp_channel *ch) {
    return dmxp__load(&ch->entry->tail, DMXP__RLX);
}
/* Messages queued, clamped to 0..capacity. */
static inline uint64_t dmxp_channel_depth(const dmxp_channel *ch) {
    uint64_t h = dmxp__load(&ch->entry->head, DMXP__ACQ);
    uint64_t t = dmxp__load(&ch->entry->tail, DMXP__ACQ);
    uint64_t d = t > h ? t - h : 0;
    return d > ch->capacity ? ch->capacity : d;
}

/* ------------------------------------------------------------------------------------------ */
/* The ring (PROTOCOL.md §6)                                                                  */
/* ------------------------------------------------------------------------------------------ */

DMXP__INLINE dmxp_slot *dmxp__slot(const dmxp_channel *ch, uint64_t position) {
    /* The cached mask keeps every index inside the validated band. */
    return &ch->slots[position & ch->mask];
}

/* ThreadSanitizer does not model atomic_thread_fence (GCC refuses it under -Werror=tsan).
 * Under TSan the waker reads the waiter count with a seq-cst read-modify-write instead of a
 * fence and a load: an RMW on the same word as the waiter's registration is either ordered
 * after it (and sees the waiter) or is read by it (and then the waiter's re-check sees the
 * publication), which C11 and TSan both understand. Production builds keep the fence, which
 * needs no write to the shared cache line. */
#if defined(__SANITIZE_THREAD__)
#define DMXP__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DMXP__TSAN 1
#endif
#endif

/* The waking half of the wake rule, out of line: a hot path that finds nobody waiting keeps
 * no registers for it. */
DMXP__NOINLINE DMXP__COLD void dmxp__bump_and_wake(DMXP_ATOMIC(uint32_t) *word) {
    dmxp__fetch_add(word, 1, DMXP__REL);
    dmxp__futex_wake_all(word);
}

/* Wake rule (§7.2): no syscall when nobody waits. */
DMXP__INLINE void dmxp__notify(DMXP_ATOMIC(uint32_t) *word, DMXP_ATOMIC(uint32_t) *waiters) {
#if defined(DMXP__TSAN)
    if (dmxp__fetch_add(waiters, 0, DMXP__SEQ) != 0) {
#else
    dmxp__fence(DMXP__SEQ);
    if (dmxp__load(waiters, DMXP__RLX) != 0) {
#endif
        dmxp__bump_and_wake(word);
    }
}

DMXP__INLINE void dmxp__notify_consumers(const dmxp_channel *ch) {
    dmxp__notify(&ch->entry->not_empty_seq, &ch->entry->not_empty_waiters);
}

DMXP__INLINE void dmxp__notify_producers(const dmxp_channel *ch) {
    dmxp__notify(&ch->entry->not_full_seq, &ch->entry->not_full_waiters);
}

/* Intents (§11.4): written before each claiming CAS, cleared after the last publish/free.
 * The count is stored with release, so that a repairer that reads it with acquire sees the
 * position and flags stored before it (relaxed) and everything the owner did before (in
 * particular the publish or free of its previous claim). intent_flags (§12.5:
 * DMXP_INTENT_RUN for a run, 0 otherwise) is written before the count, so a repairer that
 * reads the count with acquire sees the flags of the same claim. */
DMXP__INLINE void dmxp__intent_set(dmxp_peer_record *r, uint64_t position, uint64_t n,
                                   uint32_t flags) {
    dmxp__store(&r->intent_position, position, DMXP__RLX);
    dmxp__store(&r->intent_flags, flags, DMXP__RLX);
    dmxp__store(&r->intent_count, (uint32_t)n, DMXP__REL);
}

DMXP__INLINE void dmxp__intent_clear(dmxp_peer_record *r) {
    if (r == NULL) return;
    dmxp__store(&r->intent_count, 0, DMXP__REL);
    dmxp__store(&r->intent_flags, 0, DMXP__RLX); /* cleared with the intent (§12.5) */
}

/* Claims up to `max` consecutive free positions with one CAS on tail. A registered handle
 * names the positions in its intent before the CAS; on failure the intent is cleared, on
 * success the caller clears it after the last publish. */
DMXP__INLINE dmxp_status dmxp__claim_send_at(const dmxp_channel *ch, uint64_t max,
                                             uint64_t *first, uint64_t *count,
                                             dmxp_slot **first_slot) {
    DMXP_ATOMIC(uint64_t) *tail_p = &ch->entry->tail;
    dmxp_peer_record *peer = ch->send_peer;
    int wrote_intent = 0;
    if (max > UINT32_MAX) max = UINT32_MAX; /* intent_count is 32 bits */
    uint64_t tail = dmxp__load(tail_p, DMXP__RLX);
    for (uint32_t i = 0; i < DMXP_RETRY_LIMIT; i++) {
        dmxp_slot *slot = dmxp__slot(ch, tail);
        uint64_t seq = dmxp__load(&slot->sequence, DMXP__ACQ);
        int64_t d = dmxp__diff(seq, tail);
        if (d == 0) {
            uint64_t n = 1;
            while (n < max &&
                   dmxp__load(&dmxp__slot(ch, tail + n)->sequence, DMXP__ACQ) ==
                       tail + n)
                n++;
            if (peer) {
                dmxp__intent_set(peer, tail, n, 0);
                wrote_intent = 1;
            }
            /* Release: whoever reads the moved tail with acquire sees the intent. */
            if (dmxp__cas_weak(tail_p, &tail, tail + n, DMXP__REL,
                               DMXP__RLX)) {
                *first = tail;
                *count = n;
                *first_slot = slot;
                return DMXP_OK;
            }
            /* tail now holds the current value */
        } else if (d < 0) {
            if (wrote_intent) dmxp__intent_clear(peer);
            return DMXP_E_FULL; /* the slot still holds the message of tail - capacity */
        } else {
            tail = dmxp__load(tail_p, DMXP__RLX); /* another producer took it */
        }
    }
    if (wrote_intent) dmxp__intent_clear(peer);
    return DMXP_E_BUSY;
}

DMXP__INLINE dmxp_status dmxp__claim_send(const dmxp_channel *ch, uint64_t max,
                                          uint64_t *first, uint64_t *count) {
    dmxp_slot *slot;
    return dmxp__claim_send_at(ch, max, first, count, &slot);
}

/* Positions a message of `len` bytes takes: 1 up to DMXP_MSG_INLINE, else ceil(len / 960). */
static inline uint64_t dmxp__slots_for(size_t len) {
    return len <= DMXP_MSG_INLINE ? 1 : ((uint64_t)len + DMXP_MSG_INLINE - 1) / DMXP_MSG_INLINE;
}

/* Claims the k (2 <= k <= capacity) consecutive positions of a run with one CAS on tail
 * (§12.3): only when the slots of all k are free, never part of a run. DMXP_E_FULL when one of
 * them still holds the previous lap's message (the run does not fit now). A registered handle
 * names the run in its intent (intent_flags DMXP_INTENT_RUN) before the CAS; on failure the
 * intent is cleared, on success the caller clears it after the last publish. */
static inline dmxp_status dmxp__claim_run(const dmxp_channel *ch, uint64_t k, uint64_t *first) {
    DMXP_ATOMIC(uint64_t) *tail_p = &ch->entry->tail;
    dmxp_peer_record *peer = ch->send_peer;
    int wrote_intent = 0;
    uint64_t tail = dmxp__load(tail_p, DMXP__RLX);
    for (uint32_t i = 0; i < DMXP_RETRY_LIMIT; i++) {
        int64_t d = dmxp__diff(dmxp__load(&dmxp__slot(ch, tail)->sequence, DMXP__ACQ), tail);
        if (d == 0) {
            uint64_t j = 1;
            int64_t dj = 0;
            for (; j < k; j++) {
                dj = dmxp__diff(dmxp__load(&dmxp__slot(ch, tail + j)->sequence, DMXP__ACQ),
                                tail + j);
                if (dj != 0) break;
            }
            if (j == k) { /* all k slots are free: they stay so until our CAS (§6.3) */
                if (peer) {
                    dmxp__intent_set(peer, tail, k, DMXP_INTENT_RUN);
                    wrote_intent = 1;
                }
                if (dmxp__cas_weak(tail_p, &tail, tail + k, DMXP__REL, DMXP__RLX)) {
                    *first = tail;
                    return DMXP_OK;
                }
                continue; /* tail now holds the current value */
            }
            if (dj < 0) {
                if (wrote_intent) dmxp__intent_clear(peer);
                return DMXP_E_FULL; /* the run does not fit now */
            }
            tail = dmxp__load(tail_p, DMXP__RLX); /* another producer moved on */
        } else if (d < 0) {
            if (wrote_intent) dmxp__intent_clear(peer);
            return DMXP_E_FULL;
        } else {
            tail = dmxp__load(tail_p, DMXP__RLX);
        }
    }
    if (wrote_intent) dmxp__intent_clear(peer);
    return DMXP_E_BUSY;
}

/* What dmxp__claim_recv returns (the position in *first) when nothing is published at head
 * but a later position is: PENDING of PROTOCOL.md §6.2. Internal: positive, so no public call
 * ever returns it (the receives wait for the position instead, see DMXP_PENDING_WAIT_NS). */
#define DMXP__PENDING ((dmxp_status)1)


/* Called when nothing is published at `head`. 1 when a later position holds a message: a
 * send that has completed is queued behind one still in flight (§6.2), so the channel is not
 * empty. Scans head + 1 .. min(tail, head + capacity), stopping at the first published
 * position. 0 when none is: empty. -1 when the scan found none but `head` was published (or
 * taken) meanwhile: then positions behind it may have been consumed during the scan, which
 * proves nothing, and the caller looks at head again. While head stays unpublished nobody can
 * consume past it, so a message queued when the scan began is still there when it is read.
 * Runs only on a miss; with tail <= head + 1 (the plain empty ring, or one claim in flight)
 * it costs one load of tail. At most one lap of the cached capacity is read, so a hostile
 * tail cannot lengthen the scan past the band. */
static inline DMXP__COLD int dmxp__queued_behind(const dmxp_channel *ch, uint64_t head) {
    uint64_t tail = dmxp__load(&ch->entry->tail, DMXP__ACQ);
    int64_t in_flight = dmxp__diff(tail, head);
    if (in_flight <= 1) return 0; /* nothing claimed after head */
    uint64_t n = (uint64_t)in_flight < ch->capacity ? (uint64_t)in_flight : ch->capacity;
    for (uint64_t k = 1; k < n; k++) {
        uint64_t p = head + k;
        if (dmxp__load(&dmxp__slot(ch, p)->sequence, DMXP__ACQ) == p + 1) return 1;
    }
    uint64_t seq = dmxp__load(&dmxp__slot(ch, head)->sequence, DMXP__ACQ);
    return dmxp__diff(seq, head + 1) >= 0 ? -1 : 0;
}

/* What a receive claimed (dmxp__claim_recv_take, PROTOCOL.md §12.4). */
#define DMXP__CLAIM_SLOTS 0   /* *count single-slot positions: messages, markers, bad lengths */
#define DMXP__CLAIM_RUN 1     /* one run of *count positions, every slot published; *needed = L */
#define DMXP__CLAIM_BAD_RUN 2 /* the start of a run that fails the checks, claimed alone: it is
                                 dropped as corrupt (*needed = its payload_len) */
#define DMXP__CLAIM_ORPHAN 3  /* a continuation whose start is gone, claimed alone: freed and
                                 passed over like a SKIP marker, not reported */
#define DMXP__CLAIM_BLOB 4    /* a slot flagged BLOB (§13.5), claimed alone; *needed = the length
                                 its reference gives (peeked: checked again after the claim) */

/* What a receive's claim takes at the head (dmxp__claim_recv_take): a copying receive or a
 * batch takes everything (a blob is copied out of its block); a blob receive takes blobs and
 * markers, and refuses anything else with DMXP_E_NOT_A_BLOB, consuming nothing. */
#define DMXP__TAKE_ANY 0u
#define DMXP__TAKE_BLOB 1u

/* A run's start as a consumer finds it (§12.4): 2 <= k <= capacity, 960 < L <= the channel's
 * limit, and k == ceil(L / 960). */
static inline int dmxp__run_shape_ok(const dmxp_channel *ch, uint64_t k, uint64_t len) {
    return k >= 2 && k <= ch->capacity && len > DMXP_MSG_INLINE && len <= ch->max_message &&
           k == dmxp__slots_for((size_t)len);
}

/* Claims up to `max` consecutive published positions with one CAS on head. With
 * buf_cap != SIZE_MAX, refuses (consuming nothing) when the first message is longer. When
 * nothing is published at head: DMXP_E_EMPTY if nothing is queued behind it either, else
 * DMXP__PENDING with *first = head (the caller waits for it).
 *
 * Blobs (§13.5) are looked at first: a slot flagged BLOB (and not SKIP or LOST) is claimed
 * alone (DMXP__CLAIM_BLOB, *needed = the length in its reference), on any channel (the finish
 * drops it as corrupt where the channel carries no blobs, so a reference is never delivered as
 * a message); with buf_cap != SIZE_MAX on a channel that carries blobs, one whose reference is
 * longer than buf_cap (and no longer than the largest block) is refused
 * (DMXP_E_BUFFER_TOO_SMALL, nothing consumed). With
 * take == DMXP__TAKE_BLOB (max 1) only blobs, markers and orphan continuations are claimed;
 * anything else is DMXP_E_NOT_A_BLOB with *first = head, nothing consumed.
 *
 * Runs (§12.4): the flags of the slot at head (read after the acquire of its sequence) decide.
 * A continuation (RUN_CONT) is claimed alone (DMXP__CLAIM_ORPHAN). A run's start (RUN) whose
 * run_slots and payload_len fail dmxp__run_shape_ok, or whose continuations are not all
 * published, is claimed alone too (DMXP__CLAIM_BAD_RUN); a valid one longer than buf_cap is
 * refused with DMXP_E_BUFFER_TOO_SMALL (*needed = its length); otherwise the whole run is
 * claimed with one CAS (DMXP__CLAIM_RUN, *count = k, *needed = L), named in the intent with
 * DMXP_INTENT_RUN, whatever `max` is. Everything else is DMXP__CLAIM_SLOTS, whose count stops
 * before a slot flagged RUN or RUN_CONT: a batch never takes part of a run. */
static inline dmxp_status dmxp__claim_recv_take(const dmxp_channel *ch, uint64_t max,
                                                size_t buf_cap, uint64_t *first,
                                                uint64_t *count, uint32_t *needed,
                                                uint32_t *kind, uint32_t take) {
    DMXP_ATOMIC(uint64_t) *head_p = &ch->entry->head;
    dmxp_peer_record *peer = ch->recv_peer;
    int wrote_intent = 0;
    if (max > UINT32_MAX) max = UINT32_MAX; /* intent_count is 32 bits */
    uint64_t head = dmxp__load(head_p, DMXP__RLX);
    for (uint32_t i = 0; i < DMXP_RETRY_LIMIT; i++) {
        dmxp_slot *slot = dmxp__slot(ch, head);
        uint64_t seq = dmxp__load(&slot->sequence, DMXP__ACQ);
        int64_t d = dmxp__diff(seq, head + 1);
        if (d == 0) {
            /* Advisory peeks: re-read and re-checked after the claim. */
            uint16_t flags = dmxp__load(&slot->meta.flags, DMXP__RLX);
            uint32_t what = DMXP__CLAIM_SLOTS;
            uint64_t n = 1;
            int marker = (flags & (DMXP_FLAG_SKIP | DMXP_FLAG_LOST)) != 0;
            if (!marker && (flags & DMXP_FLAG_BLOB)) {
                what = DMXP__CLAIM_BLOB;
                uint32_t len = (uint32_t)(dmxp__load(&slot->payload[1], DMXP__RLX) >> 32);
                *needed = len;
                /* A length past the largest block cannot be a valid reference: it is claimed
                 * (and dropped as corrupt) rather than refused for ever. */
                if (take == DMXP__TAKE_ANY && buf_cap != SIZE_MAX && len > buf_cap &&
                    (ch->channel_flags & DMXP_CHANNEL_BLOBS) && ch->pool.class_count != 0 &&
                    len <= ch->pool.classes[ch->pool.class_count - 1].block_size) {
                    if (wrote_intent) dmxp__intent_clear(peer);
                    return DMXP_E_BUFFER_TOO_SMALL;
                }
            } else if (take == DMXP__TAKE_BLOB && !marker && !(flags & DMXP_FLAG_RUN_CONT)) {
                if (wrote_intent) dmxp__intent_clear(peer);
                *first = head;
                return DMXP_E_NOT_A_BLOB; /* an inline message or a run: nothing consumed */
            } else if (flags & DMXP_FLAG_RUN_CONT) {
                what = DMXP__CLAIM_ORPHAN;
            } else if (flags & DMXP_FLAG_RUN) {
                uint32_t k = dmxp__load(&slot->run_slots, DMXP__RLX);
                uint32_t len = dmxp__load(&slot->meta.payload_len, DMXP__RLX);
                *needed = len;
                if (!dmxp__run_shape_ok(ch, k, len)) {
                    what = DMXP__CLAIM_BAD_RUN;
                } else if (buf_cap != SIZE_MAX && len > buf_cap) {
                    if (wrote_intent) dmxp__intent_clear(peer);
                    return DMXP_E_BUFFER_TOO_SMALL;
                } else {
                    uint64_t j = 1;
                    while (j < k && dmxp__load(&dmxp__slot(ch, head + j)->sequence,
                                               DMXP__ACQ) == head + j + 1)
                        j++;
                    /* An honest start is published last: a continuation still unpublished
                     * means the run is broken. */
                    if (j < k) {
                        what = DMXP__CLAIM_BAD_RUN;
                    } else {
                        what = DMXP__CLAIM_RUN;
                        n = k;
                    }
                }
            } else {
                if (buf_cap != SIZE_MAX) {
                    uint32_t len = dmxp__load(&slot->meta.payload_len, DMXP__RLX);
                    if ((flags & (DMXP_FLAG_SKIP | DMXP_FLAG_LOST)) == 0 &&
                        len <= DMXP_MSG_INLINE && len > buf_cap) {
                        *needed = len;
                        if (wrote_intent) dmxp__intent_clear(peer);
                        return DMXP_E_BUFFER_TOO_SMALL;
                    }
                }
                while (n < max) {
                    dmxp_slot *next = dmxp__slot(ch, head + n);
                    if (dmxp__load(&next->sequence, DMXP__ACQ) != head + n + 1 ||
                        (dmxp__load(&next->meta.flags, DMXP__RLX) &
                         (DMXP_FLAG_RUN | DMXP_FLAG_RUN_CONT | DMXP_FLAG_BLOB)) != 0)
                        break; /* a batch stops before a run and before a blob (§13.5) */
                    n++;
                }
            }
            if (peer) {
                dmxp__intent_set(peer, head, n, what == DMXP__CLAIM_RUN ? DMXP_INTENT_RUN : 0);
                wrote_intent = 1;
            }
            if (dmxp__cas_weak(head_p, &head, head + n, DMXP__REL,
                               DMXP__RLX)) {
                *first = head;
                *count = n;
                *kind = what;
                return DMXP_OK;
            }
        } else if (d < 0) {
            /* Nothing sent at head, or its producer has not published yet. */
            if (wrote_intent) dmxp__intent_clear(peer);
            int queued = dmxp__queued_behind(ch, head);
            if (queued > 0) {
                *first = head;
                *count = 0;
                return DMXP__PENDING;
            }
            if (queued == 0) return DMXP_E_EMPTY;
            /* head moved on during the scan: look at it again */
        } else {
            head = dmxp__load(head_p, DMXP__RLX); /* another consumer took it */
        }
    }
    if (wrote_intent) dmxp__intent_clear(peer);
    return DMXP_E_BUSY;
}

/* dmxp__claim_recv_take of a copying receive or a batch (DMXP__TAKE_ANY). */
static inline dmxp_status dmxp__claim_recv_kind(const dmxp_channel *ch, uint64_t max,
                                                size_t buf_cap, uint64_t *first,
                                                uint64_t *count, uint32_t *needed,
                                                uint32_t *kind) {
    return dmxp__claim_recv_take(ch, max, buf_cap, first, count, needed, kind, DMXP__TAKE_ANY);
}

/* dmxp__claim_recv_kind without the kind (for callers that handle single-slot positions). */
static inline dmxp_status dmxp__claim_recv(const dmxp_channel *ch, uint64_t max, size_t buf_cap,
                                           uint64_t *first, uint64_t *count, uint32_t *needed) {
    uint32_t kind;
    return dmxp__claim_recv_kind(ch, max, buf_cap, first, count, needed, &kind);
}

/* The pending position a receive is waiting for (§6.2), and since when (ns). */
typedef struct dmxp__pending {
    int tracking;
    uint64_t position;
    int64_t since;
} dmxp__pending;

/* Waits until position `position` has moved (published, repaired, or taken by another
 * consumer) or until give_up_at (ns): 1 moved, 0 gave up. Defined with the blocking code. */
static inline int dmxp__await_position(const dmxp_channel *ch, uint64_t position,
                                       int64_t give_up_at);

/* dmxp__claim_recv that waits out a pending head (§6.2): while a later position holds a
 * message, it waits for the head position and claims again, and returns DMXP_E_EMPTY only
 * once that position has not moved for DMXP_PENDING_WAIT_NS since `pend` first saw it. With
 * wait == 0 it returns DMXP__PENDING instead (a blocking caller sleeps on its own, within its
 * deadline) and `pend` may be NULL. */
static inline dmxp_status dmxp__claim_recv_settled(const dmxp_channel *ch, uint64_t max,
                                                   size_t buf_cap, uint64_t *first,
                                                   uint64_t *count, uint32_t *needed,
                                                   uint32_t *kind, dmxp__pending *pend,
                                                   int wait, uint32_t take) {
    for (uint32_t i = 0; i < DMXP_RETRY_LIMIT; i++) {
        dmxp_status s =
            dmxp__claim_recv_take(ch, max, buf_cap, first, count, needed, kind, take);
        if (s != DMXP__PENDING || !wait) return s;
        if (!pend->tracking || pend->position != *first) {
            pend->tracking = 1;
            pend->position = *first;
            pend->since = (int64_t)dmxp_now_ns();
        }
        if (!dmxp__await_position(ch, *first, pend->since + DMXP_PENDING_WAIT_NS))
            return DMXP_E_EMPTY; /* stopped between claim and publish for the whole bound */
    }
    return DMXP_E_BUSY;
}

/* Payload words (PROTOCOL.md §1.3, §6.1): aligned 8-byte relaxed atomic stores and loads,
 * little-endian, the last word zero-padded.
 *
 * Why not memcpy: the slot is peer-writable memory. Even between the sequence acquire that
 * grants our claim and the release that ends it, a buggy or hostile peer (or a repairer that
 * revoked the claim, §11.7) may store into the same bytes; in C a plain access that races
 * with another write is undefined behaviour, and the protocol forbids plain memcpy on live
 * slots (§1.3, §6.6). So every access to the slot is an 8-byte relaxed atomic of an aligned
 * payload word: a racing peer can garble the bytes we copy, never cause anything worse. The
 * copies are still cheap: a relaxed 8-byte atomic is a plain mov on x86-64 and a plain
 * ldr/str on AArch64 (no fence, no lock), and the loops below move blocks of 8, 4 or 2 words
 * with no per-word branch or bounds check (the word count is at most 120: every caller has
 * checked len <= 960 before the copy). The private side is moved with memcpy of 8 bytes at a
 * time (one mov each). Wider accesses (SSE/AVX loads, memcpy) would not be atomic accesses in
 * the C memory model; 8-byte relaxed atomics are the conservative choice the protocol names.
 *
 * The tail (len % 8 bytes) is one more word. A send builds it from exactly the tail bytes of
 * the caller's buffer, never reading past data + len: for len >= 8 with one unaligned load of
 * the buffer's last 8 bytes, shifted down (the bytes before the tail were read already); for
 * len < 8 from 4-, 2- and 1-byte pieces. A receive writes exactly len bytes into the caller's
 * buffer, never past buf + len: for len >= 8 the tail as the unaligned 8 bytes ending at
 * buf + len (the last whole word's top bytes again, then the tail word's), for len < 8 with
 * 4-, 2- and 1-byte stores. */
DMXP__INLINE uint64_t dmxp__get8(const unsigned char *p) {
    uint64_t w;
    memcpy(&w, p, 8); /* private memory */
    return w;
}

DMXP__INLINE void dmxp__put8(unsigned char *p, uint64_t w) { memcpy(p, &w, 8); }

/* The last, partial word of a payload of len bytes (len % 8 != 0), zero-padded. */
DMXP__INLINE uint64_t dmxp__tail_word(const unsigned char *src, size_t len) {
    size_t rem = len % 8;
    if (len >= 8) /* the 8 bytes ending at src + len; the tail is their top rem bytes */
        return dmxp__get8(src + len - 8) >> (8 * (8 - rem));
    uint64_t w = 0;
    unsigned shift = 0;
    if (rem & 4) {
        uint32_t v;
        memcpy(&v, src, 4);
        w = v;
        src += 4;
        shift = 32;
    }
    if (rem & 2) {
        uint16_t v;
        memcpy(&v, src, 2);
        w |= (uint64_t)v << shift;
        src += 2;
        shift += 16;
    }
    if (rem & 1) w |= (uint64_t)*src << shift;
    return w;
}

/* n (1, 2, 4 or 8) payload words between the slot (d) and private memory (p). */
#define DMXP__PUT1(d, p, k) dmxp__store(&(d)[k], dmxp__get8((p) + 8 * (k)), DMXP__RLX)
#define DMXP__GET1(d, p, k) dmxp__put8((p) + 8 * (k), dmxp__load(&(d)[k], DMXP__RLX))
#define DMXP__PUT2(d, p, k) (DMXP__PUT1(d, p, k), DMXP__PUT1(d, p, (k) + 1))
#define DMXP__GET2(d, p, k) (DMXP__GET1(d, p, k), DMXP__GET1(d, p, (k) + 1))
#define DMXP__PUT4(d, p, k) (DMXP__PUT2(d, p, k), DMXP__PUT2(d, p, (k) + 2))
#define DMXP__GET4(d, p, k) (DMXP__GET2(d, p, k), DMXP__GET2(d, p, (k) + 2))
#define DMXP__PUT8(d, p, k) (DMXP__PUT4(d, p, k), DMXP__PUT4(d, p, (k) + 4))
#define DMXP__GET8(d, p, k) (DMXP__GET4(d, p, k), DMXP__GET4(d, p, (k) + 4))

/* The words 0 .. words - 1 (words <= 120) are moved in blocks of 8, 4, 2 or 1, the last block
 * of each size ending at the last word and overlapping the one before it: a word moved twice
 * gets the same value twice (or, if a peer scribbles on the slot meanwhile, a garbled one: the
 * bytes delivered may be garbled, no access strays). No access leaves words 0 .. words - 1, on
 * either side. */
DMXP__INLINE void dmxp__payload_store(dmxp_slot *slot, const unsigned char *src, size_t len) {
    DMXP_ATOMIC(uint64_t) *dst = slot->payload;
    size_t words = len / 8; /* whole words; <= 120 since len <= 960 */
    if (words >= 8) {
        for (size_t i = 0; i + 8 < words; i += 8) DMXP__PUT8(dst, src, i);
        DMXP__PUT8(dst, src, words - 8);
    } else if (words >= 4) {
        DMXP__PUT4(dst, src, 0);
        if (words > 4) DMXP__PUT4(dst, src, words - 4);
    } else if (words >= 2) {
        DMXP__PUT2(dst, src, 0);
        if (words > 2) DMXP__PUT1(dst, src, 2);
    } else if (words) {
        DMXP__PUT1(dst, src, 0);
    }
    if (len % 8) dmxp__store(&dst[words], dmxp__tail_word(src, len), DMXP__RLX);
}

DMXP__INLINE void dmxp__payload_load(dmxp_slot *slot, unsigned char *dst, size_t len) {
    DMXP_ATOMIC(uint64_t) *src = slot->payload;
    size_t words = len / 8, rem = len % 8;
    if (words >= 8) {
        for (size_t i = 0; i + 8 < words; i += 8) DMXP__GET8(src, dst, i);
        DMXP__GET8(src, dst, words - 8);
    } else if (words >= 4) {
        DMXP__GET4(src, dst, 0);
        if (words > 4) DMXP__GET4(src, dst, words - 4);
    } else if (words >= 2) {
        DMXP__GET2(src, dst, 0);
        if (words > 2) DMXP__GET1(src, dst, 2);
    } else if (words == 0) {
        if (rem == 0) return;
        /* len < 8: the tail alone, as 4-, 2- and 1-byte stores */
        uint64_t w = dmxp__load(&src[0], DMXP__RLX);
        unsigned char *p = dst;
        if (rem & 4) {
            uint32_t v = (uint32_t)w;
            memcpy(p, &v, 4);
            p += 4;
            w >>= 32;
        }
        if (rem & 2) {
            uint16_t v = (uint16_t)w;
            memcpy(p, &v, 2);
            p += 2;
            w >>= 16;
        }
        if (rem & 1) *p = (unsigned char)w;
        return;
    } else {
        DMXP__GET1(src, dst, 0);
    }
    if (rem) {
        /* The 8 bytes ending at dst + len: the top 8 - rem bytes of the last whole word (moved
         * already: the same bytes again) and the rem bytes of the tail word. */
        uint64_t last = dmxp__load(&src[words - 1], DMXP__RLX);
        uint64_t tail = dmxp__load(&src[words], DMXP__RLX);
        dmxp__put8(dst + len - 8, last >> (8 * rem) | tail << (8 * (8 - rem)));
    }
}

/* Adjacent slot fields as one naturally aligned 8-byte relaxed atomic word (PROTOCOL.md §1.3:
 * meta fields are accessed only by the process holding the slot's claim, so the width of the
 * access changes nothing for other clients). The words at slot offsets 8 (message_id), 16
 * (timestamp_ns), 24 (channel_id, message_type), 32 (sender_pid, sender_runtime, flags), 40
 * (payload_len, the zero bytes 44..48) and 48 (run_slots, run_index), little-endian (checked
 * at the top). may_alias: the word overlaps fields declared with narrower types. */
#if defined(__GNUC__)
typedef uint64_t dmxp__word64 __attribute__((may_alias, aligned(8)));
#define dmxp__slot_word(s, off) ((dmxp__word64 *)(void *)((unsigned char *)(s) + (off)))
#define dmxp__word_load(s, off) __atomic_load_n(dmxp__slot_word(s, off), __ATOMIC_RELAXED)
#define dmxp__word_store(s, off, v) __atomic_store_n(dmxp__slot_word(s, off), (v), __ATOMIC_RELAXED)
#endif

/* dmxp_meta copies the slot's meta bytes 0..32 (message_id .. flags) as they lie. */
DMXP_ASSERT_AT(dmxp_meta, message_id, 0);
DMXP_ASSERT_AT(dmxp_meta, timestamp_ns, 8);
DMXP_ASSERT_AT(dmxp_meta, channel_id, 16);
DMXP_ASSERT_AT(dmxp_meta, message_type, 20);
DMXP_ASSERT_AT(dmxp_meta, sender_pid, 24);
DMXP_ASSERT_AT(dmxp_meta, sender_runtime, 28);
DMXP_ASSERT_AT(dmxp_meta, flags, 30);
DMXP_ASSERT_AT(dmxp_meta, payload_len, 32);

/* Test hook: DMXP_TEST_HOOK(point, ch, position) runs at the points below, where a repair by
 * a peer revokes a claim (PROTOCOL.md §11.7). A test defines it before including this header
 * to play the repairer there; otherwise it is nothing. */
#define DMXP_HOOK_AFTER_PAYLOAD 1 /* a send wrote the payload, has not checked its claim yet */
#define DMXP_HOOK_BEFORE_PUBLISH 2 /* a send wrote the metadata, is about to CAS sequence */
#define DMXP_HOOK_BEFORE_FREE 3 /* a receive read the slot, is about to CAS sequence */
#define DMXP_HOOK_REPAIR_TAKEN 4 /* a repair pass took the dead record of index `position`
                                     over, has not read its intent yet */
#define DMXP_HOOK_AFTER_PEEK 5 /* a receive's fast path peeked at the published slot at head,
                                  has not claimed it yet */
#ifndef DMXP_TEST_HOOK
#define DMXP_TEST_HOOK(point, ch, position) ((void)0)
#endif

/* Mutable per-handle state through a const handle (see dmxp_channel). */
static inline dmxp_channel *dmxp__mut(const dmxp_channel *ch) { return (dmxp_channel *)ch; }

static inline dmxp_status dmxp__revoked(const dmxp_channel *ch) {
    dmxp__fetch_add(&dmxp__mut(ch)->revoked, 1, DMXP__RLX);
    return DMXP_E_REVOKED;
}

/* Writes and publishes claimed position `position` (§6.1, §11.7): the payload first, then a
 * check that the slot is still in the claimed state (a repair may have tombstoned it while the
 * payload was copied: its metadata is then left alone), then the metadata, then the publish as
 * a CAS from the claimed state. DMXP_OK, or DMXP_E_REVOKED (nothing more stored). */
DMXP__INLINE dmxp_status dmxp__publish_at(const dmxp_channel *ch, dmxp_slot *s,
                                          uint64_t position, const void *data, size_t part,
                                          size_t len, uint32_t message_type, uint16_t flags,
                                          uint64_t timestamp, uint64_t message_id,
                                          uint32_t run_slots, uint32_t run_index) {
    dmxp__payload_store(s, (const unsigned char *)data, part);
    DMXP_TEST_HOOK(DMXP_HOOK_AFTER_PAYLOAD, ch, position);
    if (dmxp__load(&s->sequence, DMXP__RLX) != position) return dmxp__revoked(ch);
#if defined(__GNUC__)
    /* Six words instead of eleven fields: the same bytes (little-endian). */
    dmxp__word_store(s, 8, message_id);
    dmxp__word_store(s, 16, timestamp);
    dmxp__word_store(s, 24, (uint64_t)ch->id | (uint64_t)message_type << 32);
    dmxp__word_store(s, 32, (uint64_t)ch->pid | (uint64_t)DMXP_RUNTIME_C << 32 |
                                (uint64_t)flags << 48);
    dmxp__word_store(s, 40, (uint64_t)(uint32_t)len); /* payload_len; reserved 0 */
    dmxp__word_store(s, 48, (uint64_t)run_slots | (uint64_t)run_index << 32);
#else
    dmxp_slot_meta *m = &s->meta;
    dmxp__store(&m->message_id, message_id, DMXP__RLX);
    dmxp__store(&m->timestamp_ns, timestamp, DMXP__RLX);
    dmxp__store(&m->channel_id, ch->id, DMXP__RLX);
    dmxp__store(&m->message_type, message_type, DMXP__RLX);
    dmxp__store(&m->sender_pid, ch->pid, DMXP__RLX);
    dmxp__store(&m->sender_runtime, (uint16_t)DMXP_RUNTIME_C, DMXP__RLX);
    dmxp__store(&m->flags, flags, DMXP__RLX);
    dmxp__store(&m->payload_len, (uint32_t)len, DMXP__RLX);
    dmxp__store(&m->reserved, 0, DMXP__RLX);
    dmxp__store(&s->run_slots, run_slots, DMXP__RLX);
    dmxp__store(&s->run_index, run_index, DMXP__RLX);
#endif
    DMXP_TEST_HOOK(DMXP_HOOK_BEFORE_PUBLISH, ch, position);
    uint64_t expected = position;
    /* Release: the consumer that sees position + 1 with acquire sees the message. */
    if (!dmxp__cas_strong(&s->sequence, &expected, position + 1,
                          DMXP__REL, DMXP__RLX))
        return dmxp__revoked(ch);
    return DMXP_OK;
}

/* dmxp__publish_at the slot of `position`. */
DMXP__INLINE dmxp_status dmxp__publish_slot(const dmxp_channel *ch, uint64_t position,
                                            const void *data, size_t part, size_t len,
                                            uint32_t message_type, uint16_t flags,
                                            uint64_t timestamp, uint64_t message_id,
                                            uint32_t run_slots, uint32_t run_index) {
    return dmxp__publish_at(ch, dmxp__slot(ch, position), position, data, part, len,
                            message_type, flags, timestamp, message_id, run_slots, run_index);
}

/* dmxp__publish_slot for a single-slot message of `len` (<= 960) bytes at `position`. */
DMXP__INLINE dmxp_status dmxp__publish(const dmxp_channel *ch, uint64_t position,
                                       const void *data, size_t len, uint32_t message_type,
                                       uint16_t flags, uint64_t timestamp) {
    return dmxp__publish_slot(ch, position, data, len, len, message_type, flags, timestamp,
                              position, 0, 0);
}

/* Frees consumed position h for the producer one lap later, by a CAS from the claimed state
 * (h + 1 -> h + capacity, release). 0 when it failed: a peer repaired the position (freed it,
 * and the slot may already hold the next lap's message), so the claim was revoked. */
DMXP__INLINE int dmxp__free_at(const dmxp_channel *ch, dmxp_slot *slot, uint64_t position) {
    DMXP_TEST_HOOK(DMXP_HOOK_BEFORE_FREE, ch, position);
    uint64_t expected = position + 1;
    return dmxp__cas_strong(&slot->sequence, &expected, position + ch->capacity, DMXP__REL,
                            DMXP__RLX);
}

DMXP__INLINE int dmxp__free(const dmxp_channel *ch, uint64_t position) {
    return dmxp__free_at(ch, dmxp__slot(ch, position), position);
}

/* Copies the meta of slot s into *out; *flags and *payload_len are the values copied (so
 * that the caller decides on exactly what it delivers, without reading *out back). */
DMXP__INLINE void dmxp__read_meta_as(dmxp_slot *s, dmxp_meta *out, uint16_t *flags,
                                     uint32_t *payload_len) {
#if defined(__GNUC__)
    /* Four words (message_id .. flags) copied as they lie, then payload_len. */
    uint64_t w[4] = {dmxp__word_load(s, 8), dmxp__word_load(s, 16), dmxp__word_load(s, 24),
                     dmxp__word_load(s, 32)};
    uint32_t len = dmxp__load(&s->meta.payload_len, DMXP__RLX);
    memcpy(out, w, sizeof w); /* private memory */
    out->payload_len = len;
    *flags = (uint16_t)(w[3] >> 48);
    *payload_len = len;
#else
    dmxp_slot_meta *m = &s->meta;
    out->message_id = dmxp__load(&m->message_id, DMXP__RLX);
    out->timestamp_ns = dmxp__load(&m->timestamp_ns, DMXP__RLX);
    out->channel_id = dmxp__load(&m->channel_id, DMXP__RLX);
    out->message_type = dmxp__load(&m->message_type, DMXP__RLX);
    out->sender_pid = dmxp__load(&m->sender_pid, DMXP__RLX);
    out->sender_runtime = dmxp__load(&m->sender_runtime, DMXP__RLX);
    out->flags = *flags = dmxp__load(&m->flags, DMXP__RLX);
    out->payload_len = *payload_len = dmxp__load(&m->payload_len, DMXP__RLX);
#endif
}

DMXP__INLINE void dmxp__read_meta(dmxp_slot *s, dmxp_meta *out) {
#if defined(__GNUC__)
    uint16_t flags;
    uint32_t len;
    dmxp__read_meta_as(s, out, &flags, &len);
#else
    dmxp_slot_meta *m = &s->meta;
    out->message_id = dmxp__load(&m->message_id, DMXP__RLX);
    out->timestamp_ns = dmxp__load(&m->timestamp_ns, DMXP__RLX);
    out->channel_id = dmxp__load(&m->channel_id, DMXP__RLX);
    out->message_type = dmxp__load(&m->message_type, DMXP__RLX);
    out->sender_pid = dmxp__load(&m->sender_pid, DMXP__RLX);
    out->sender_runtime = dmxp__load(&m->sender_runtime, DMXP__RLX);
    out->flags = dmxp__load(&m->flags, DMXP__RLX);
    out->payload_len = dmxp__load(&m->payload_len, DMXP__RLX);
#endif
}

/* `limit`: the channel's max message size for a single send, DMXP_MSG_INLINE for a batch
 * item (§12.3: batches carry single-slot messages only). */
DMXP__INLINE dmxp_status dmxp__check_outgoing(size_t len, size_t limit,
                                              const dmxp_send_opts *opts) {
    if (len > limit) return DMXP_E_TOO_LARGE;
    if (opts && (opts->flags & DMXP_FLAGS_PROTOCOL_MASK)) return DMXP_E_RESERVED_FLAGS;
    return DMXP_OK;
}

/* The stuck watch of the non-blocking calls (defined with the recovery code below): a miss
 * (full send, empty receive) returns 1 when it ran a repair that made progress (try again);
 * a hit ends the streak. `send` here and in the stuck watch below: 0 for a receive, else the
 * positions the send needs at tail (1, or a run's k), which are all looked at for a slot a
 * stuck consumer holds. */
static inline int dmxp__miss(const dmxp_channel *ch, int send);
DMXP__INLINE void dmxp__hit(const dmxp_channel *ch, int send);

/* The timestamp_ns of a message this handle sends: CLOCK_MONOTONIC, or 0 ("unknown", §8)
 * when its timestamps are off (dmxp_channel_set_timestamps). */
DMXP__INLINE uint64_t dmxp__stamp(const dmxp_channel *ch) {
    return dmxp__load(&ch->timestamps, DMXP__RLX) ? dmxp_now_ns() : 0;
}

/* Sends a run of len > 960 bytes (§12.3): claims its k positions with one CAS, writes and
 * publishes the continuations in order (RUN_CONT), then the first slot (RUN), the run's
 * publication point. A continuation found revoked (§11.7) ends it: nothing more is published,
 * not even the first slot (the repair that revoked it settles the run, §12.5). */
DMXP__NOINLINE dmxp_status dmxp__send_run(const dmxp_channel *ch, const unsigned char *data,
                                          size_t len, const dmxp_send_opts *opts,
                                          uint64_t *message_id) {
    uint64_t k = dmxp__slots_for(len), t;
    dmxp_status s = dmxp__claim_run(ch, k, &t);
    if (s != DMXP_OK) return s;
    uint64_t now = dmxp__stamp(ch);
    uint32_t type = opts ? opts->message_type : 0;
    uint16_t flags = opts ? opts->flags : 0;
    for (uint64_t i = 1; i < k && s == DMXP_OK; i++) {
        size_t off = (size_t)i * DMXP_MSG_INLINE;
        size_t part = len - off < DMXP_MSG_INLINE ? len - off : DMXP_MSG_INLINE;
        s = dmxp__publish_slot(ch, t + i, data + off, part, len, type,
                               (uint16_t)(flags | DMXP_FLAG_RUN_CONT), now, t, (uint32_t)k,
                               (uint32_t)i);
    }
    if (s == DMXP_OK)
        s = dmxp__publish_slot(ch, t, data, DMXP_MSG_INLINE, len, type,
                               (uint16_t)(flags | DMXP_FLAG_RUN), now, t, (uint32_t)k, 0);
    dmxp__intent_clear(ch->send_peer); /* after the last publish (or its failed CAS) */
    if (s == DMXP_OK) dmxp__notify_consumers(ch);
    if (message_id) *message_id = t;
    return s;
}

/* One send, without the stuck watch (the blocking calls keep their own). */
DMXP__INLINE dmxp_status dmxp__send_once(const dmxp_channel *ch, const void *data, size_t len,
                                         const dmxp_send_opts *opts, uint64_t *message_id) {
    dmxp_status s = dmxp__check_outgoing(len, ch->max_message, opts);
    if (s != DMXP_OK) return s;
    if (len && data == NULL) return DMXP_E_INVALID_ARGUMENT;
    if (len > DMXP_MSG_INLINE)
        return dmxp__send_run(ch, (const unsigned char *)data, len, opts, message_id);
    uint64_t pos, n;
    dmxp_slot *slot;
    s = dmxp__claim_send_at(ch, 1, &pos, &n, &slot);
    if (s != DMXP_OK) return s;
    s = dmxp__publish_at(ch, slot, pos, data, len, len, opts ? opts->message_type : 0,
                         opts ? opts->flags : 0, dmxp__stamp(ch), pos, 0, 0);
    dmxp__intent_clear(ch->send_peer); /* after the last publish (or its failed CAS) */
    if (s == DMXP_OK) dmxp__notify_consumers(ch); /* a revoking repair has woken them */
    if (message_id) *message_id = pos;
    return s;
}

/* dmxp__send_once, out of line: the retries after a miss (one inlined copy is enough). */
DMXP__NOINLINE dmxp_status dmxp__send_again(const dmxp_channel *ch, const void *data, size_t len,
                                            const dmxp_send_opts *opts, uint64_t *message_id) {
    return dmxp__send_once(ch, data, len, opts, message_id);
}

/* Sends one message of up to dmxp_channel_max_message_size(ch) bytes (DMXP_E_TOO_LARGE
 * beyond, nothing sent: dmxp_check_message_size names length and limit). A message longer
 * than 960 bytes travels as a run of ceil(len / 960) consecutive slots (PROTOCOL.md §12) and
 * needs that many free at once: DMXP_E_FULL until they are. DMXP_E_FULL when every slot holds
 * an unconsumed message. *message_id (optional) is the position it took (a run's first),
 * also with DMXP_E_REVOKED: a peer repaired that position before the publish (PROTOCOL.md
 * §11.7), so the message may or may not have been delivered. After DMXP_MISS_STREAK full
 * results in a row, a full ring is checked for a slot a dead consumer holds, which is repaired
 * once stuck for DMXP_STUCK_GRACE_NS. */
static inline dmxp_status dmxp_try_send(const dmxp_channel *ch, const void *data, size_t len,
                                        const dmxp_send_opts *opts, uint64_t *message_id) {
    dmxp_status s = dmxp__send_once(ch, data, len, opts, message_id);
    if (s == DMXP_E_FULL && dmxp__miss(ch, (int)dmxp__slots_for(len))) /* len <= limit */
        s = dmxp__send_again(ch, data, len, opts, message_id);
    if (s == DMXP_OK || s == DMXP_E_REVOKED) dmxp__hit(ch, 1);
    return s;
}

/* What a batch send did (dmxp_try_send_batch_counts). */
typedef struct dmxp_send_counts {
    size_t claimed;    /* messages taken from the batch, datas[0 .. claimed), with the ids
                          first_id .. first_id + claimed - 1 */
    size_t published;  /* of them, published */
    size_t revoked;    /* of them, revoked (§11.7): may or may not have been delivered */
    uint64_t first_id;
} dmxp_send_counts;

/* Sends up to n messages (datas[i] of lens[i] bytes) claimed with one CAS, in order: as many
 * as there are free consecutive slots, at least one. Each position is published on its own;
 * one a peer repaired meanwhile is revoked (counted, nothing more written to it) and the rest
 * go on. Every payload is checked before anything is sent: a batch carries single-slot
 * messages only, so an item longer than 960 bytes is refused with DMXP_E_TOO_LARGE even on a
 * channel that carries runs (PROTOCOL.md §12.3). DMXP_OK when at least one message
 * was taken; DMXP_E_FULL when none could be (with the stuck watch of dmxp_try_send). */
static inline dmxp_status dmxp_try_send_batch_counts(const dmxp_channel *ch,
                                                     const void *const *datas,
                                                     const size_t *lens, size_t n,
                                                     const dmxp_send_opts *opts,
                                                     dmxp_send_counts *counts) {
    dmxp_send_counts local;
    if (counts == NULL) counts = &local;
    memset(counts, 0, sizeof *counts);
    if (n == 0) return DMXP_OK;
    for (size_t i = 0; i < n; i++) {
        dmxp_status s = dmxp__check_outgoing(lens[i], DMXP_MSG_INLINE, opts);
        if (s != DMXP_OK) return s;
        if (lens[i] && datas[i] == NULL) return DMXP_E_INVALID_ARGUMENT;
    }
    uint64_t first, count;
    dmxp_status s = dmxp__claim_send(ch, (uint64_t)n, &first, &count);
    if (s == DMXP_E_FULL && dmxp__miss(ch, 1)) s = dmxp__claim_send(ch, (uint64_t)n, &first, &count);
    if (s != DMXP_OK) return s;
    dmxp__hit(ch, 1);
    uint64_t now = dmxp__stamp(ch);
    uint32_t type = opts ? opts->message_type : 0;
    uint16_t flags = opts ? opts->flags : 0;
    /* The slots of first, first + 1, ... in turn (wrapping at the band's end): the same
     * addresses as dmxp__slot, without the multiplication per position. */
    dmxp_slot *slot = dmxp__slot(ch, first), *end = ch->slots + ch->capacity;
    size_t published = 0;
    for (uint64_t k = 0; k < count; k++) {
        if (dmxp__publish_at(ch, slot, first + k, datas[k], lens[k], lens[k], type, flags, now,
                             first + k, 0, 0) == DMXP_OK)
            published++;
        if (++slot == end) slot = ch->slots;
    }
    counts->published = published;
    counts->revoked = (size_t)count - published;
    dmxp__intent_clear(ch->send_peer); /* after the last publish */
    if (counts->published) dmxp__notify_consumers(ch);
    counts->claimed = (size_t)count;
    counts->first_id = first;
    return DMXP_OK;
}

/* dmxp_try_send_batch_counts with *sent = messages taken from the batch (datas[0 .. *sent),
 * ids *first_id, *first_id + 1, ...). A position revoked by a peer's repair (§11.7) is among
 * them, and counted in dmxp_channel_revoked(ch); dmxp_try_send_batch_counts tells them apart. */
static inline dmxp_status dmxp_try_send_batch(const dmxp_channel *ch, const void *const *datas,
                                              const size_t *lens, size_t n,
                                              const dmxp_send_opts *opts, size_t *sent,
                                              uint64_t *first_id) {
    dmxp_send_counts c;
    dmxp_status s = dmxp_try_send_batch_counts(ch, datas, lens, n, opts, &c);
    if (sent) *sent = c.claimed;
    if (first_id && c.claimed) *first_id = c.first_id;
    return s;
}

/* A receive whose free found position `pos` repaired (§11.7): the copy (`copied` bytes of
 * buf) is discarded, *meta is zero but for message_id, the revocation counted. */
DMXP__NOINLINE DMXP__COLD dmxp_status dmxp__discard(const dmxp_channel *ch, uint64_t pos,
                                                    void *buf, size_t copied, dmxp_meta *meta) {
    if (copied) memset(buf, 0, copied);
    memset(meta, 0, sizeof *meta);
    meta->message_id = pos;
    return dmxp__revoked(ch);
}

/* Reads, copies and frees claimed position `pos`: DMXP_OK (a message), DMXP_E_EMPTY (a SKIP
 * marker, passed over), DMXP_E_LOST, DMXP_E_CORRUPT_MESSAGE, or DMXP_E_REVOKED when the free
 * found the position repaired: then the copy is discarded (the bytes written to buf are
 * zeroed, *len is 0: they may be the next lap's) and *meta is zero but for message_id. The
 * intent is cleared in every case. */
DMXP__INLINE dmxp_status dmxp__finish_recv_at(const dmxp_channel *ch, dmxp_slot *slot,
                                              uint64_t pos, void *buf, size_t cap,
                                              dmxp_meta *meta, size_t *len) {
    uint16_t flags;
    uint32_t plen;
    dmxp__read_meta_as(slot, meta, &flags, &plen);
    dmxp_status s;
    size_t copied = 0;
    size_t fits = cap < DMXP_MSG_INLINE ? cap : DMXP_MSG_INLINE;
    /* A BLOB flag here (written after the claim's peek) is never delivered as a message. */
    if ((flags & (DMXP_FLAG_SKIP | DMXP_FLAG_LOST | DMXP_FLAG_BLOB)) == 0 &&
        plen <= fits) { /* a message */
        copied = plen;
        dmxp__payload_load(slot, (unsigned char *)buf, copied);
        s = DMXP_OK;
    } else if (flags & DMXP_FLAG_SKIP) {
        s = DMXP_E_EMPTY; /* marker: free and go on */
    } else if (flags & DMXP_FLAG_LOST) {
        meta->message_id = pos;
        s = DMXP_E_LOST;
    } else { /* payload_len > 960, or > cap only if a peer rewrote the slot after our peek
              * (or it set BLOB) */
        meta->message_id = pos;
        s = DMXP_E_CORRUPT_MESSAGE;
    }
    int freed = dmxp__free_at(ch, slot, pos);
    dmxp__intent_clear(ch->recv_peer); /* after the free (or its failed CAS) */
    if (!freed) return dmxp__discard(ch, pos, buf, copied, meta);
    dmxp__notify_producers(ch);
    if (len) *len = copied;
    return s;
}

DMXP__INLINE dmxp_status dmxp__finish_recv(const dmxp_channel *ch, uint64_t pos, void *buf,
                                           size_t cap, dmxp_meta *meta, size_t *len) {
    return dmxp__finish_recv_at(ch, dmxp__slot(ch, pos), pos, buf, cap, meta, len);
}

/* Reads, copies and frees the run of k positions at h claimed whole (DMXP__CLAIM_RUN, §12.4),
 * whose start showed k slots and L bytes: k and L are read again, then each continuation must
 * carry RUN_CONT, message_id h, its run_index and payload_len L, else the run is corrupt. The
 * message is copied part by part into buf (at least L bytes; NULL: nothing is copied and the
 * run is dropped as corrupt), never more than L bytes, and every position is freed whatever
 * was found. DMXP_OK (*meta the first slot's, *len = L), DMXP_E_CORRUPT_MESSAGE (meta's
 * message_id h and payload_len L; the bytes copied zeroed), or DMXP_E_REVOKED when a free
 * found its position repaired (counted once; the copy discarded as in dmxp__finish_recv). The
 * intent is cleared in every case. */
static inline dmxp_status dmxp__finish_run(const dmxp_channel *ch, uint64_t h, uint64_t k,
                                           uint32_t total, unsigned char *buf, dmxp_meta *meta,
                                           size_t *len) {
    dmxp_slot *first = dmxp__slot(ch, h);
    dmxp__read_meta(first, meta);
    int corrupt = buf == NULL || dmxp__load(&first->run_slots, DMXP__RLX) != k ||
                  meta->payload_len != total;
    size_t copied = 0;
    for (uint64_t i = 0; i < k && !corrupt; i++) {
        dmxp_slot *s = dmxp__slot(ch, h + i);
        if (i > 0 && ((dmxp__load(&s->meta.flags, DMXP__RLX) & DMXP_FLAG_RUN_CONT) == 0 ||
                      dmxp__load(&s->meta.message_id, DMXP__RLX) != h ||
                      dmxp__load(&s->run_index, DMXP__RLX) != i ||
                      dmxp__load(&s->meta.payload_len, DMXP__RLX) != total)) {
            corrupt = 1;
            break;
        }
        size_t part = total - copied < DMXP_MSG_INLINE ? total - copied : DMXP_MSG_INLINE;
        dmxp__payload_load(s, buf + copied, part);
        copied += part;
    }
    int revoked = 0;
    for (uint64_t i = 0; i < k; i++)
        if (!dmxp__free(ch, h + i)) revoked = 1;
    dmxp__intent_clear(ch->recv_peer); /* after the last free */
    if (copied && (revoked || corrupt)) memset(buf, 0, copied);
    if (revoked) {
        memset(meta, 0, sizeof *meta);
        meta->message_id = h;
        return dmxp__revoked(ch);
    }
    dmxp__notify_producers(ch);
    if (corrupt) {
        meta->message_id = h;
        meta->payload_len = total;
        return DMXP_E_CORRUPT_MESSAGE;
    }
    if (len) *len = total;
    return DMXP_OK;
}

/* Frees position `pos`, claimed alone as a broken run's start (DMXP__CLAIM_BAD_RUN: then
 * DMXP_E_CORRUPT_MESSAGE, meta's message_id pos and payload_len `total`) or as an orphan
 * continuation (DMXP__CLAIM_ORPHAN: then DMXP_E_EMPTY, passed over like a SKIP marker); or
 * DMXP_E_REVOKED. The intent is cleared. */
static inline dmxp_status dmxp__finish_alone(const dmxp_channel *ch, uint64_t pos,
                                             uint32_t kind, uint32_t total, dmxp_meta *meta) {
    dmxp__read_meta(dmxp__slot(ch, pos), meta);
    int freed = dmxp__free(ch, pos);
    dmxp__intent_clear(ch->recv_peer);
    if (!freed) {
        memset(meta, 0, sizeof *meta);
        meta->message_id = pos;
        return dmxp__revoked(ch);
    }
    dmxp__notify_producers(ch);
    if (kind == DMXP__CLAIM_ORPHAN) return DMXP_E_EMPTY;
    meta->message_id = pos;
    meta->payload_len = total;
    return DMXP_E_CORRUPT_MESSAGE;
}

/* --- The blob pool's blocks (PROTOCOL.md §13.3) ------------------------------------------
 * Every address below comes from the geometry validated at attach and cached in the handle
 * (dmxp_blob_pool_geometry), with the class and block checked against it first: a reference
 * read from a slot, or a tag, can name nothing outside the pool's validated ranges. */

/* A tag: state (bits 0-7), owner (8-31: a peer record index + 1, or 0), generation (32-63). */
static inline uint64_t dmxp__tag(uint32_t state, uint32_t owner, uint32_t generation) {
    return (uint64_t)(state & 0xFFu) | (uint64_t)(owner & 0xFFFFFFu) << 8 |
           (uint64_t)generation << 32;
}
static inline uint32_t dmxp__tag_state(uint64_t t) { return (uint32_t)(t & 0xFFu); }
static inline uint32_t dmxp__tag_owner(uint64_t t) { return (uint32_t)(t >> 8) & 0xFFFFFFu; }
static inline uint32_t dmxp__tag_generation(uint64_t t) { return (uint32_t)(t >> 32); }

static inline dmxp_blob_pool_header *dmxp__pool_header(unsigned char *base,
                                                       const dmxp_blob_pool_geometry *pool) {
    return (dmxp_blob_pool_header *)(void *)(base + pool->offset);
}

static inline dmxp_blob_class_desc *dmxp__pool_class(unsigned char *base,
                                                     const dmxp_blob_pool_geometry *pool,
                                                     uint32_t c) {
    return (dmxp_blob_class_desc *)(void *)(base + pool->offset + DMXP_BLOB_POOL_HEADER_SIZE +
                                            (uint64_t)c * DMXP_BLOB_CLASS_SIZE);
}

/* Block j < block_count of class c < class_count: its header and its words. */
static inline dmxp_block_header *dmxp__block_header(unsigned char *base,
                                                    const dmxp_blob_pool_geometry *pool,
                                                    uint32_t c, uint32_t j) {
    return (dmxp_block_header *)(void *)(base + pool->classes[c].headers_offset +
                                         (uint64_t)j * DMXP_BLOCK_HEADER_SIZE);
}

static inline DMXP_ATOMIC(uint64_t) *dmxp__block_words(unsigned char *base,
                                                       const dmxp_blob_pool_geometry *pool,
                                                       uint32_t c, uint32_t j) {
    return (DMXP_ATOMIC(uint64_t) *)(void *)(base + pool->classes[c].data_offset +
                                             (uint64_t)j * pool->classes[c].block_size);
}

/* The reference in the two payload words of a slot (bytes 1..4 ignored). */
static inline dmxp_blob_ref dmxp__ref_decode(uint64_t w0, uint64_t w1) {
    dmxp_blob_ref r;
    r.class_index = (uint8_t)(w0 & 0xFFu);
    r.block = (uint32_t)(w0 >> 32);
    r.generation = (uint32_t)w1;
    r.length = (uint32_t)(w1 >> 32);
    return r;
}

/* 1 when `r` names a block of the pool and its length fits the block (§13.5). */
static inline int dmxp__ref_in_pool(const dmxp_blob_pool_geometry *pool, const dmxp_blob_ref *r) {
    return r->class_index < pool->class_count &&
           r->block < pool->classes[r->class_index].block_count &&
           (uint64_t)r->length <= pool->classes[r->class_index].block_size;
}

/* §13.3 wake(free_seq): producers waiting for a block, after one was freed (no system call
 * when none waits, §7.2). */
static inline void dmxp__notify_block_freed(unsigned char *base,
                                            const dmxp_blob_pool_geometry *pool) {
    if (pool->class_count == 0) return;
    dmxp_blob_pool_header *h = dmxp__pool_header(base, pool);
    dmxp__notify(&h->free_seq, &h->free_waiters);
}

/* The bytes of a block (§13.3) move like a slot's payload (§1.3): aligned 8-byte relaxed
 * atomic words only, so that a peer racing on the block garbles bytes and causes nothing worse.
 * Whole words in blocks of 8 (no per-word branch); a partial word at either end is loaded,
 * merged (a store) or cut (a load), so no access leaves the words that hold bytes
 * off .. off + n. The caller has checked the range against the block. */
static inline void dmxp__words_read(DMXP_ATOMIC(uint64_t) *w, size_t off, unsigned char *dst,
                                    size_t n) {
    if (n == 0) return;
    size_t i = off / 8, k = off % 8;
    if (k != 0) {
        unsigned char b[8];
        dmxp__put8(b, dmxp__load(&w[i], DMXP__RLX));
        size_t take = 8 - k < n ? 8 - k : n;
        memcpy(dst, b + k, take); /* private memory */
        dst += take;
        n -= take;
        i++;
    }
    DMXP_ATOMIC(uint64_t) *src = w + i;
    size_t words = n / 8, j = 0;
    for (; j + 8 <= words; j += 8) DMXP__GET8(src, dst, j);
    for (; j < words; j++) DMXP__GET1(src, dst, j);
    if (n % 8 != 0) {
        unsigned char b[8];
        dmxp__put8(b, dmxp__load(&src[words], DMXP__RLX));
        memcpy(dst + 8 * words, b, n % 8);
    }
}

static inline void dmxp__word_merge(DMXP_ATOMIC(uint64_t) *w, size_t within,
                                    const unsigned char *src, size_t n) {
    unsigned char b[8];
    dmxp__put8(b, dmxp__load(w, DMXP__RLX));
    memcpy(b + within, src, n); /* private memory */
    dmxp__store(w, dmxp__get8(b), DMXP__RLX);
}

static inline void dmxp__words_write(DMXP_ATOMIC(uint64_t) *w, size_t off,
                                     const unsigned char *src, size_t n) {
    if (n == 0) return;
    size_t i = off / 8, k = off % 8;
    if (k != 0) {
        size_t take = 8 - k < n ? 8 - k : n;
        dmxp__word_merge(&w[i], k, src, take);
        src += take;
        n -= take;
        i++;
    }
    DMXP_ATOMIC(uint64_t) *dst = w + i;
    size_t words = n / 8, j = 0;
    for (; j + 8 <= words; j += 8) DMXP__PUT8(dst, src, j);
    for (; j < words; j++) DMXP__PUT1(dst, src, j);
    if (n % 8 != 0) dmxp__word_merge(&dst[words], 0, src + 8 * words, n % 8);
}

/* The reference of a claimed slot at `pos` flagged BLOB (flags and plen as read after the
 * claim), checked as §13.5 says before anything of the pool is touched: the channel carries
 * blobs, the flags have no RUN or RUN_CONT, payload_len is 16, the reference names a block of
 * the cached geometry with a length that fits it, and that block's tag (acquire) is exactly
 * (QUEUED, 0, generation) while its header names this channel and position. 1 with *r, *hdr
 * and *tag (the value read) when it is; 0 for a bad, stale or forged reference, whose block
 * (if any) is left alone. */
static inline int dmxp__claimed_ref(const dmxp_channel *ch, dmxp_slot *slot, uint64_t pos,
                                    uint16_t flags, uint32_t plen, dmxp_blob_ref *r,
                                    dmxp_block_header **hdr, uint64_t *tag) {
    if ((ch->channel_flags & DMXP_CHANNEL_BLOBS) == 0 || ch->pool.class_count == 0 ||
        (flags & (DMXP_FLAG_RUN | DMXP_FLAG_RUN_CONT)) != 0 || plen != DMXP_BLOB_REF_LEN)
        return 0;
    *r = dmxp__ref_decode(dmxp__load(&slot->payload[0], DMXP__RLX),
                          dmxp__load(&slot->payload[1], DMXP__RLX));
    if (!dmxp__ref_in_pool(&ch->pool, r)) return 0;
    dmxp_block_header *h = dmxp__block_header(ch->base, &ch->pool, r->class_index, r->block);
    uint64_t t = dmxp__load(&h->tag, DMXP__ACQ);
    if (t != dmxp__tag(DMXP_BLOCK_QUEUED, 0, r->generation) ||
        dmxp__load(&h->channel_id, DMXP__RLX) != ch->id ||
        dmxp__load(&h->position, DMXP__RLX) != pos)
        return 0;
    *hdr = h;
    *tag = t;
    return 1;
}

/* A bad reference consumed (§13.5): counted in the handle, reported as corrupt. */
static inline dmxp_status dmxp__bad_ref(const dmxp_channel *ch, uint64_t pos, uint32_t plen,
                                        dmxp_meta *meta) {
    dmxp__fetch_add(&dmxp__mut(ch)->bad_refs, 1, DMXP__RLX);
    meta->message_id = pos;
    meta->payload_len = plen;
    return DMXP_E_CORRUPT_MESSAGE;
}

/* The copying receive of a claimed BLOB slot at `pos` (DMXP__CLAIM_BLOB, §13.5): the reference
 * is checked (dmxp__claimed_ref), the block's `length` bytes are copied into buf (at least
 * that many: cap; with `owned`, into memory malloc'd here, *owned, which the caller frees),
 * the block is freed straight from QUEUED (CAS from the tag read: no peer record is needed,
 * the claim on the slot keeps the block queued) and only then the slot. DMXP_OK (*meta the
 * slot's, payload_len the blob's length, flags with DMXP_FLAG_BLOB; *len = length);
 * DMXP_E_CORRUPT_MESSAGE for a bad reference (its block left alone) or one rewritten since the
 * claim's peek to a length that no longer fits (its block freed: the message is consumed),
 * counted in dmxp_channel_blob_bad_refs; DMXP_E_REVOKED (the copy discarded) when the free of
 * the slot, or of the block, found it taken by a repair (§11.7, §13.6). The intent is cleared
 * in every case. */
static inline dmxp_status dmxp__finish_blob_copy(const dmxp_channel *ch, uint64_t pos,
                                                 unsigned char *buf, size_t cap,
                                                 unsigned char **owned, dmxp_meta *meta,
                                                 size_t *len) {
    dmxp_slot *slot = dmxp__slot(ch, pos);
    uint16_t flags;
    uint32_t plen;
    dmxp__read_meta_as(slot, meta, &flags, &plen);
    dmxp_blob_ref r;
    memset(&r, 0, sizeof r);
    dmxp_block_header *h = NULL;
    uint64_t tag = 0;
    int valid = dmxp__claimed_ref(ch, slot, pos, flags, plen, &r, &h, &tag);
    size_t copied = 0;
    int fits = 0, block_freed = 0, block_taken = 0;
    if (valid) {
        if (owned) {
            *owned = (unsigned char *)malloc(r.length ? r.length : 1);
            buf = *owned;
            cap = buf ? r.length : 0;
        }
        if ((size_t)r.length <= cap) {
            dmxp__words_read(dmxp__block_words(ch->base, &ch->pool, r.class_index, r.block), 0,
                             buf, r.length);
            copied = r.length;
            fits = 1;
        }
        uint64_t expected = tag;
        if (dmxp__cas_strong(&h->tag, &expected, dmxp__tag(DMXP_BLOCK_FREE, 0, r.generation),
                             DMXP__REL, DMXP__RLX))
            block_freed = 1;
        else
            block_taken = 1; /* reclaimed under the claim: the claim was revoked */
    }
    int freed = dmxp__free_at(ch, slot, pos);
    dmxp__intent_clear(ch->recv_peer); /* after the free (or its failed CAS) */
    if (block_freed) dmxp__notify_block_freed(ch->base, &ch->pool);
    if (freed) dmxp__notify_producers(ch);
    if (!freed || block_taken) return dmxp__discard(ch, pos, buf, copied, meta);
    if (!valid || !fits) return dmxp__bad_ref(ch, pos, plen, meta);
    meta->payload_len = r.length;
    if (len) *len = copied;
    return DMXP_OK;
}

/* One receive, without the stuck watch (the blocking calls keep their own). A pending head
 * (§6.2) is waited for as dmxp__claim_recv_settled does; with wait == 0 DMXP__PENDING is
 * returned instead (and `pend` may be NULL). */
static inline dmxp_status dmxp__recv_once(const dmxp_channel *ch, void *buf, size_t cap,
                                          dmxp_meta *meta, size_t *len, dmxp__pending *pend,
                                          int wait) {
    dmxp_meta local;
    if (meta == NULL) meta = &local;
    if (len) *len = 0;
    if (cap && buf == NULL) return DMXP_E_INVALID_ARGUMENT;
    for (uint32_t i = 0; i < DMXP_RETRY_LIMIT; i++) {
        uint64_t pos = 0, n = 0;
        uint32_t needed = 0, kind = DMXP__CLAIM_SLOTS;
        dmxp_status s = dmxp__claim_recv_settled(ch, 1, cap, &pos, &n, &needed, &kind, pend,
                                                 wait, DMXP__TAKE_ANY);
        if (s == DMXP_E_BUFFER_TOO_SMALL) {
            memset(meta, 0, sizeof *meta);
            meta->payload_len = needed;
            return s;
        }
        if (s != DMXP_OK) return s;
        if (kind == DMXP__CLAIM_RUN) /* needed <= cap: checked before the claim */
            s = dmxp__finish_run(ch, pos, n, needed, (unsigned char *)buf, meta, len);
        else if (kind == DMXP__CLAIM_BLOB)
            s = dmxp__finish_blob_copy(ch, pos, (unsigned char *)buf, cap, NULL, meta, len);
        else if (kind != DMXP__CLAIM_SLOTS)
            s = dmxp__finish_alone(ch, pos, kind, needed, meta);
        else
            s = dmxp__finish_recv(ch, pos, buf, cap, meta, len);
        if (s != DMXP_E_EMPTY) return s;
    }
    return DMXP_E_BUSY;
}

/* What dmxp__recv_fast returns when the position at head is not a plain single-slot message
 * that fits (or its claim lost a race): nothing was claimed, the general path decides.
 * Internal, positive, never returned by a public call. */
#define DMXP__SLOW ((dmxp_status)3)
/* What dmxp__recv_fast returns when nothing is published at head and nothing was claimed
 * after it (tail - head <= 1): the EMPTY of dmxp__claim_recv_kind, decided on the same loads
 * (head relaxed, its sequence and tail with acquire), nothing claimed, no intent written. */
#define DMXP__NOTHING ((dmxp_status)4)

/* The common receive: the position at head is published and its slot, peeked at after the
 * acquire of its sequence, holds a plain message (no SKIP, LOST, RUN or RUN_CONT flag) of at
 * most min(cap, 960) bytes. Then it is claimed with one CAS on head (a registered handle's
 * intent written before, as in dmxp__claim_recv_kind) and read, copied and freed by
 * dmxp__finish_recv, which re-reads everything it decides on (the peek is advisory, §6.2).
 * Anything else, and a lost CAS, returns DMXP__SLOW with nothing claimed (the intent
 * cleared): dmxp__recv_once then does what it always did. The caller has set *len to 0 and
 * checked buf. */
DMXP__INLINE dmxp_status dmxp__recv_fast(const dmxp_channel *ch, void *buf, size_t cap,
                                         dmxp_meta *meta, size_t *len) {
    DMXP_ATOMIC(uint64_t) *head_p = &ch->entry->head;
    uint64_t head = dmxp__load(head_p, DMXP__RLX);
    dmxp_slot *slot = dmxp__slot(ch, head);
    uint64_t seq = dmxp__load(&slot->sequence, DMXP__ACQ);
    if (seq != head + 1) {
        if (dmxp__diff(seq, head + 1) < 0 &&
            dmxp__diff(dmxp__load(&ch->entry->tail, DMXP__ACQ), head) <= 1)
            return DMXP__NOTHING;
        return DMXP__SLOW;
    }
    uint16_t flags = dmxp__load(&slot->meta.flags, DMXP__RLX);
    uint32_t plen = dmxp__load(&slot->meta.payload_len, DMXP__RLX);
    size_t fits = cap < DMXP_MSG_INLINE ? cap : DMXP_MSG_INLINE;
    if ((flags & (DMXP_FLAG_SKIP | DMXP_FLAG_LOST | DMXP_FLAG_RUN | DMXP_FLAG_RUN_CONT |
                  DMXP_FLAG_BLOB)) != 0 ||
        plen > fits)
        return DMXP__SLOW;
    DMXP_TEST_HOOK(DMXP_HOOK_AFTER_PEEK, ch, head);
    dmxp_peer_record *peer = ch->recv_peer;
    if (peer) dmxp__intent_set(peer, head, 1, 0);
    /* Release: whoever reads the moved head with acquire sees the intent (§11.4). */
    if (!dmxp__cas_strong(head_p, &head, head + 1, DMXP__REL, DMXP__RLX)) {
        dmxp__intent_clear(peer);
        return DMXP__SLOW;
    }
    return dmxp__finish_recv_at(ch, slot, head, buf, cap, meta, len);
}

/* Receives one message into buf (cap bytes). SKIP markers are passed over. A message longer
 * than one slot (a run, PROTOCOL.md §12) is delivered whole, its meta the first slot's
 * (payload_len the whole length, flags with DMXP_FLAG_RUN); a continuation whose start is
 * gone is passed over like a SKIP marker. A blob (on a channel that carries them, PROTOCOL.md
 * §13.5) is copied out of its block, which is freed (no registration needed): payload_len the
 * blob's length, flags with DMXP_FLAG_BLOB; its reference's length decides
 * DMXP_E_BUFFER_TOO_SMALL before the claim. A slot flagged BLOB on a channel without blobs, or
 * with a bad reference, is DMXP_E_CORRUPT_MESSAGE: a reference is never delivered as a
 * message. Returns:
 *  DMXP_OK                  meta (optional) and *len filled;
 *  DMXP_E_EMPTY             nothing is queued: nothing published at the head, nor behind it.
 *                           When the head position is claimed by a producer that has not
 *                           published it yet while a later position holds a message
 *                           (PROTOCOL.md §6.2), the call waits for the head position instead:
 *                           a short spin, then futex sleeps on not_empty in short slices,
 *                           repairing a dead claimer after DMXP_STUCK_GRACE_NS; it reports
 *                           DMXP_E_EMPTY only if that position stays unpublished for
 *                           DMXP_PENDING_WAIT_NS (1 s: its producer is stopped);
 *  DMXP_E_BUFFER_TOO_SMALL  nothing consumed; meta->payload_len = the size needed (a
 *                           buffer of dmxp_channel_max_message_size(ch) bytes always
 *                           suffices for inline messages and runs: 960 on a channel without
 *                           runs; a blob may need up to dmxp_channel_blob_max(ch));
 *  DMXP_E_LOST              a LOST tombstone was consumed; meta->message_id says which;
 *  DMXP_E_CORRUPT_MESSAGE   a slot with payload_len > 960 outside a run, or a run cut short
 *                           or inconsistent (§12.4), was consumed and dropped (counted once
 *                           per run); meta->message_id and meta->payload_len say which;
 *  DMXP_E_REVOKED           a peer repaired the claimed position before it was freed
 *                           (§11.7): nothing delivered, the bytes copied into buf zeroed,
 *                           *len 0, meta->message_id says which position;
 *  DMXP_E_BUSY              gave up after DMXP_RETRY_LIMIT retries.
 * The slot is freed (sequence = position + capacity) in every case where one was claimed and
 * not revoked. After DMXP_MISS_STREAK empty results in a row, an empty channel is checked for
 * a position a dead producer left unpublished, which is repaired (then received as
 * DMXP_E_LOST) once stuck for DMXP_STUCK_GRACE_NS. */
/* dmxp_try_recv after an empty look whose miss ran a repair that made progress: one more
 * receive (out of line). */
DMXP__NOINLINE dmxp_status dmxp__try_recv_again(const dmxp_channel *ch, void *buf, size_t cap,
                                                dmxp_meta *meta, size_t *len) {
    dmxp__pending pend = {0, 0, 0};
    dmxp_status s = dmxp__recv_once(ch, buf, cap, meta, len, &pend, 1);
    if (s == DMXP_OK || s == DMXP_E_LOST || s == DMXP_E_CORRUPT_MESSAGE || s == DMXP_E_REVOKED)
        dmxp__hit(ch, 0);
    return s;
}

/* dmxp_try_recv's general path (out of line, so that the common one stays small): anything
 * but a plain message at head or an empty ring, a lost race, or a SKIP marker written after
 * the peek (which was consumed and is passed over). */
DMXP__NOINLINE dmxp_status dmxp__try_recv_slow(const dmxp_channel *ch, void *buf, size_t cap,
                                               dmxp_meta *meta, size_t *len) {
    dmxp__pending pend = {0, 0, 0};
    dmxp_status s = dmxp__recv_once(ch, buf, cap, meta, len, &pend, 1);
    if (s == DMXP_E_EMPTY && dmxp__miss(ch, 0))
        s = dmxp__recv_once(ch, buf, cap, meta, len, &pend, 1);
    if (s == DMXP_OK || s == DMXP_E_LOST || s == DMXP_E_CORRUPT_MESSAGE || s == DMXP_E_REVOKED)
        dmxp__hit(ch, 0);
    return s;
}

static inline dmxp_status dmxp_try_recv(const dmxp_channel *ch, void *buf, size_t cap,
                                        dmxp_meta *meta, size_t *len) {
    dmxp_meta local;
    if (len) *len = 0;
    if (cap && buf == NULL) return DMXP_E_INVALID_ARGUMENT;
    dmxp_status s = dmxp__recv_fast(ch, buf, cap, meta ? meta : &local, len);
    if (s == DMXP__NOTHING) /* empty: the miss streak, then maybe one more look */
        return dmxp__miss(ch, 0) ? dmxp__try_recv_again(ch, buf, cap, meta, len) : DMXP_E_EMPTY;
    if (s == DMXP__SLOW || s == DMXP_E_EMPTY) return dmxp__try_recv_slow(ch, buf, cap, meta, len);
    /* A message; or LOST, CORRUPT, REVOKED: a peer rewrote the slot after the peek, and it was
     * consumed all the same. */
    dmxp__hit(ch, 0);
    return s;
}

/* What a batch receive consumed (dmxp_try_recv_batch_counts). */
typedef struct dmxp_recv_counts {
    size_t delivered; /* messages handed to the callback */
    size_t lost;      /* LOST tombstones consumed (messages of producers that died, §11) */
    size_t corrupt;   /* slots with payload_len > 960 (or broken runs, §12.4), consumed and
                         dropped */
    size_t revoked;   /* positions a peer repaired before they were freed (§11.7), whatever
                         they held: not delivered */
} dmxp_recv_counts;

/* Receives up to `max` messages claimed with one CAS, calling deliver(ctx, meta, payload, len)
 * for each (after its slot is freed); on_lost (optional) is called with the message_id of each
 * LOST tombstone. Each position is freed on its own; one whose free finds it repaired by a
 * peer (§11.7) is counted in `revoked` and not delivered. SKIP markers are passed over and
 * counted nowhere. The count stops before a message longer than one slot (a run, PROTOCOL.md
 * §12.4) and before a blob (§13.5); a batch that starts with one delivers that run or blob
 * alone, copied into memory malloc'd for the call (if that fails, the message is consumed and
 * counted corrupt; a blob's block is freed either way); a continuation whose start is gone is
 * passed over; a bad blob reference is counted corrupt. DMXP_OK when at least one position was consumed, else
 * DMXP_E_EMPTY / DMXP_E_BUSY (with the stuck watch of dmxp_try_recv, and its wait for a head
 * position claimed but unpublished while a later one holds a message). */
static inline dmxp_status dmxp_try_recv_batch_counts(const dmxp_channel *ch, size_t max,
                                                     dmxp_deliver_fn deliver,
                                                     void (*on_lost)(void *ctx, uint64_t id),
                                                     void *ctx, dmxp_recv_counts *counts) {
    dmxp_recv_counts local;
    if (counts == NULL) counts = &local;
    memset(counts, 0, sizeof *counts);
    if (max == 0) return DMXP_OK;
    uint64_t first = 0, count = 0;
    uint32_t needed = 0, what = DMXP__CLAIM_SLOTS;
    dmxp__pending pend = {0, 0, 0};
    dmxp_status s = dmxp__claim_recv_settled(ch, (uint64_t)max, SIZE_MAX, &first, &count,
                                             &needed, &what, &pend, 1, DMXP__TAKE_ANY);
    if (s == DMXP_E_EMPTY && dmxp__miss(ch, 0))
        s = dmxp__claim_recv_settled(ch, (uint64_t)max, SIZE_MAX, &first, &count, &needed,
                                     &what, &pend, 1, DMXP__TAKE_ANY);
    if (s != DMXP_OK) return s;
    dmxp__hit(ch, 0);
    if (what != DMXP__CLAIM_SLOTS) {
        /* A run, alone (§12.4), copied into memory of its own, or a position claimed alone. */
        dmxp_meta meta;
        if (what == DMXP__CLAIM_RUN) {
            unsigned char *whole = (unsigned char *)malloc(needed);
            size_t got = 0;
            s = dmxp__finish_run(ch, first, count, needed, whole, &meta, &got);
            if (s == DMXP_OK) {
                counts->delivered++;
                if (deliver) deliver(ctx, &meta, whole, got);
            }
            free(whole);
        } else if (what == DMXP__CLAIM_BLOB) {
            /* A blob (§13.5), copied into memory of its own and its block released. */
            unsigned char *whole = NULL;
            size_t got = 0;
            s = dmxp__finish_blob_copy(ch, first, NULL, 0, &whole, &meta, &got);
            if (s == DMXP_OK) {
                counts->delivered++;
                if (deliver) deliver(ctx, &meta, whole, got);
            }
            free(whole);
        } else {
            s = dmxp__finish_alone(ch, first, what, needed, &meta);
        }
        if (s == DMXP_E_CORRUPT_MESSAGE) counts->corrupt++;
        if (s == DMXP_E_REVOKED) counts->revoked++;
        return DMXP_OK; /* DMXP_E_EMPTY from an orphan: passed over, counted nowhere */
    }
    unsigned char buf[DMXP_MSG_INLINE];
    int freed_any = 0;
    /* The slots of first, first + 1, ... in turn, wrapping at the band's end (as dmxp__slot). */
    dmxp_slot *next = dmxp__slot(ch, first), *end = ch->slots + ch->capacity;
    for (uint64_t k = 0; k < count; k++) {
        uint64_t pos = first + k;
        dmxp_slot *slot = next;
        if (++next == end) next = ch->slots;
        dmxp_meta meta;
        uint16_t mflags;
        uint32_t plen;
        dmxp__read_meta_as(slot, &meta, &mflags, &plen);
        int kind; /* 0 message, 1 skip, 2 lost, 3 corrupt (a BLOB flag set after the count) */
        if ((mflags & (DMXP_FLAG_SKIP | DMXP_FLAG_LOST | DMXP_FLAG_BLOB)) == 0 &&
            plen <= DMXP_MSG_INLINE) {
            kind = 0;
            dmxp__payload_load(slot, buf, plen);
        } else if (mflags & DMXP_FLAG_SKIP)
            kind = 1;
        else if (mflags & DMXP_FLAG_LOST)
            kind = 2;
        else
            kind = 3;
        int freed = dmxp__free_at(ch, slot, pos); /* every claimed position is freed (or revoked) */
        if (k + 1 == count) dmxp__intent_clear(ch->recv_peer); /* after the last free */
        if (!freed) {
            counts->revoked++;
            (void)dmxp__revoked(ch);
            continue; /* what was read may be the next lap's: dropped */
        }
        freed_any = 1;
        if (kind == 0) {
            counts->delivered++;
            if (deliver) deliver(ctx, &meta, buf, plen);
        } else if (kind == 2) {
            counts->lost++;
            if (on_lost) on_lost(ctx, pos);
        } else if (kind == 3) {
            counts->corrupt++;
        }
    }
    if (freed_any) dmxp__notify_producers(ch);
    return DMXP_OK;
}

/* dmxp_try_recv_batch_counts with *delivered = messages handed over and *dropped = positions
 * consumed without one (LOST tombstones, corrupt lengths and revoked positions). */
static inline dmxp_status dmxp_try_recv_batch(const dmxp_channel *ch, size_t max,
                                              dmxp_deliver_fn deliver, void *ctx,
                                              size_t *delivered, size_t *dropped) {
    dmxp_recv_counts c;
    dmxp_status s = dmxp_try_recv_batch_counts(ch, max, deliver, NULL, ctx, &c);
    if (delivered) *delivered = c.delivered;
    if (dropped) *dropped = c.lost + c.corrupt + c.revoked;
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* Peers and crash recovery (PROTOCOL.md §11)                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Reads /proc/<pid>/stat: *state (field 3) and *start_time (field 22, clock ticks since
 * boot). Fields are counted after the LAST ')' because the command name may hold any byte.
 * Returns 0 on success, else an errno (ENOENT: no such process). */
static inline int dmxp__proc_stat(uint32_t pid, char *state, uint64_t *start_time) {
    char path[48], buf[1024];
    snprintf(path, sizeof path, "/proc/%u/stat", (unsigned)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
        if (got == sizeof buf - 1) break;
    }
    close(fd);
    buf[got] = 0;
    const char *p = strrchr(buf, ')');
    if (p == NULL) return EINVAL;
    p++;
    /* After ')': " S ppid pgrp ..." — field 3 is the state, field 22 the start time. */
    int field = 2;
    const char *tok = p;
    char st = 0;
    uint64_t start = 0;
    int have_start = 0;
    while (*tok) {
        while (*tok == ' ') tok++;
        if (*tok == 0) break;
        field++;
        if (field == 3) st = *tok;
        if (field == 22) {
            uint64_t v = 0;
            const char *d = tok;
            while (*d >= '0' && *d <= '9') v = v * 10 + (uint64_t)(*d++ - '0');
            if (d == tok) return EINVAL;
            start = v;
            have_start = 1;
            break;
        }
        while (*tok && *tok != ' ') tok++;
    }
    if (!have_start || st == 0) return EINVAL;
    *state = st;
    *start_time = start;
    return 0;
}

/* The start time (field 22 of /proc/<pid>/stat) of process `pid`, or 0 if unknown. */
static inline uint64_t dmxp_process_start_time(uint32_t pid) {
    char st;
    uint64_t start = 0;
    return dmxp__proc_stat(pid, &st, &start) == 0 ? start : 0;
}

/* This process's pid namespace (§11.2): the inode of /proc/self/ns/pid, 0 if unknown. */
static inline uint64_t dmxp_pid_namespace(void) {
    struct stat st;
    if (stat("/proc/self/ns/pid", &st) != 0) return 0;
    return (uint64_t)st.st_ino;
}

/* Who this process is, as it registers in and judges the peer table (§11.2, §11.5). */
typedef struct dmxp_identity {
    uint32_t pid;
    uint64_t start_time; /* field 22 of /proc/<pid>/stat; 0 if unknown */
    uint64_t pid_ns;     /* dmxp_pid_namespace(); 0 if unknown */
} dmxp_identity;

/* This process's identity. The start time and namespace are read once and cached with the pid
 * they were read for; a cached pid that differs from getpid() means this is a child forked
 * since (which must not register with its parent's start time: checkers would take it for a
 * reused pid, that is dead), so they are read again. Any thread may call it. */
static inline dmxp_identity dmxp_self_identity(void) {
    static DMXP_ATOMIC(uint32_t) cached_pid;
    static DMXP_ATOMIC(uint64_t) cached_start, cached_ns;
    dmxp_identity me;
    me.pid = (uint32_t)getpid();
    if (dmxp__load(&cached_pid, DMXP__ACQ) == me.pid) {
        me.start_time = dmxp__load(&cached_start, DMXP__RLX);
        me.pid_ns = dmxp__load(&cached_ns, DMXP__RLX);
        return me;
    }
    me.start_time = dmxp_process_start_time(me.pid);
    me.pid_ns = dmxp_pid_namespace();
    /* Threads of one process that race here store the same values; the pid goes last. */
    dmxp__store(&cached_start, me.start_time, DMXP__RLX);
    dmxp__store(&cached_ns, me.pid_ns, DMXP__RLX);
    dmxp__store(&cached_pid, me.pid, DMXP__REL);
    return me;
}

/* §11.5: 1 when the process a record names is dead: kill(pid, 0) fails with ESRCH, or it is a
 * zombie (state Z, or X), or start_time != 0 and the process now at that pid started at
 * another time (the pid was reused). EPERM from kill means alive (another uid). This does not
 * apply the "own pid is alive" rule; the repair does. */
static inline int dmxp_peer_dead(uint32_t pid, uint64_t start_time) {
    if (pid == 0) return 0;
    /* No process has a pid above INT_MAX; kill() would read it as a process group. */
    if (pid > (uint32_t)INT_MAX) return 1;
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) return 1;
    char st;
    uint64_t now_start;
    int e = dmxp__proc_stat(pid, &st, &now_start);
    if (e == ENOENT || e == ESRCH) return 1; /* exited between kill and open */
    if (e != 0) return 0;                    /* cannot tell: alive */
    if (st == 'Z' || st == 'X') return 1;
    return start_time != 0 && now_start != start_time;
}

/* dmxp_peer_dead for a record's (pid, start_time, pid_ns), judged from pid namespace my_ns: a
 * record of another pid namespace (pid_ns non-zero and not my_ns) names a pid this process
 * cannot see (a container sharing /dev/shm sees it as ESRCH), so it counts as alive. */
static inline int dmxp__record_dead(uint32_t pid, uint64_t start_time, uint64_t pid_ns,
                                    uint64_t my_ns) {
    if (pid_ns != 0 && pid_ns != my_ns) return 0;
    return dmxp_peer_dead(pid, start_time);
}

/* dmxp__record_dead from this process's own pid namespace. */
static inline int dmxp_peer_record_dead(uint32_t pid, uint64_t start_time, uint64_t pid_ns) {
    return dmxp__record_dead(pid, start_time, pid_ns, dmxp_self_identity().pid_ns);
}

/* Locates the peer table (§11.1), installing it first when `install` and there is none: the
 * handle's ch->peer_records records (read at attach, never from the header again), which is
 * also the size its range and its overlap with the channel bands are checked with, and the
 * number of records every caller may index. */
static inline dmxp_status dmxp__peer_table(const dmxp_channel *ch, int install,
                                           dmxp_peer_record **out, dmxp_error *err) {
    dmxp_segment seg;
    memset(&seg, 0, sizeof seg);
    seg.base = ch->base;
    seg.len = ch->segment_len;
    seg.mapped_len = (size_t)ch->segment_len;
    seg.peer_records = ch->peer_records;
    seg.pool = ch->pool;
    uint64_t size = dmxp__table_size(ch->peer_records);
    DMXP_ATOMIC(uint64_t) *slot = &dmxp__hdr(&seg)->peer_table_offset;
    uint64_t table = dmxp__load(slot, DMXP__ACQ);
    *out = NULL;
    if (table == 0) {
        if (!install) return DMXP_OK;
        uint64_t start = 0;
        dmxp_status s = dmxp__reserve_band(&seg, size, &start, err);
        if (s != DMXP_OK) return s;
        /* A scribbled band_cursor could point into the blob pool: never zero its blocks. */
        if (dmxp__overlaps_pool(&ch->pool, start, size))
            return dmxp__fail(err, DMXP_E_BLOB_POOL_OVERLAP, -1, NULL, start, ch->pool.offset,
                              ch->pool.len);
        dmxp_peer_record *r = (dmxp_peer_record *)(void *)(ch->base + start);
        for (uint32_t i = 0; i < ch->peer_records; i++) {
            dmxp__store(&r[i].pid, 0, DMXP__RLX);
            dmxp__store(&r[i].runtime, 0, DMXP__RLX);
            dmxp__store(&r[i].role, 0, DMXP__RLX);
            dmxp__store(&r[i].start_time, 0, DMXP__RLX);
            dmxp__store(&r[i].channel_id, 0, DMXP__RLX);
            dmxp__store(&r[i].intent_count, 0, DMXP__RLX);
            dmxp__store(&r[i].intent_position, 0, DMXP__RLX);
            dmxp__store(&r[i].pid_ns, 0, DMXP__RLX);
            dmxp__store(&r[i].waiting, 0, DMXP__RLX);
            dmxp__store(&r[i].intent_flags, 0, DMXP__RLX);
            for (size_t k = 0; k < 2; k++) dmxp__store(&r[i].zero[k], 0, DMXP__RLX);
        }
        uint64_t expected = 0;
        /* Release: the zeroed records are visible to whoever sees the offset. A loser uses
         * the winner's table; its own carved bytes (the table's size) stay unused. */
        if (dmxp__cas_strong(slot, &expected, start, DMXP__ACQREL,
                             DMXP__ACQ))
            table = start;
        else
            table = expected;
    }
    if (!dmxp__peer_table_in_range(table, size, ch->segment_len) || table == 0)
        return dmxp__fail(err, DMXP_E_PEER_TABLE_OUT_OF_RANGE, -1, NULL, table,
                          ch->segment_len, size);
    uint64_t end = table + size;
    for (uint32_t id = 0; id < DMXP_MAX_CHANNELS; id++) {
        uint64_t cap, band;
        if (dmxp__geometry(&seg, id, &cap, &band, NULL, NULL) != DMXP_OK || cap == 0) continue;
        if (band < end && table < band + cap * DMXP_SLOT_SIZE)
            return dmxp__fail(err, DMXP_E_PEER_TABLE_OVERLAPS_BAND, (int32_t)id, NULL, table, 0,
                              0);
    }
    if (dmxp__overlaps_pool(&ch->pool, table, size)) /* §13.2: refused, as a band there */
        return dmxp__fail(err, DMXP_E_BLOB_POOL_OVERLAP, -1, NULL, table, ch->pool.offset,
                          ch->pool.len);
    *out = (dmxp_peer_record *)(void *)(ch->base + table);
    return DMXP_OK;
}

/* What dmxp_channel_recover (and dmxp_free_dead_records) did. */
typedef struct dmxp_recover_report {
    uint32_t records_freed;   /* dead peers' records taken over and freed */
    uint32_t records_deferred; /* dead records given back unrepaired, intent intact, because
                                  another intent covers a stuck position of theirs (or their
                                  channel changed meanwhile); a later pass retries them */
    uint64_t lost;            /* LOST tombstones published for positions of dead producers
                                 (one per run: §12.5) */
    uint64_t freed;           /* slots freed for positions claimed by dead consumers */
    uint32_t liveness_checks; /* records whose owner's liveness was judged (at most once per
                                 record and pass: one snapshot, however many positions) */
    uint64_t skipped;         /* SKIP markers published for the continuations of a dead
                                 producer's run (§12.5): not messages, counted nowhere else */
    uint64_t blocks_reclaimed; /* blob-pool blocks the freed records owned (LOANED or HELD),
                                  given back to the pool first (PROTOCOL.md §13.6, rule 1) */
} dmxp_recover_report;

/* The liveness of one record as judged in a pass, keyed by what was read. */
typedef struct dmxp__judged {
    uint64_t start;
    uint64_t ns;
    uint32_t pid;
    uint32_t verdict; /* 0 not judged yet, 1 alive, 2 dead */
} dmxp__judged;

/* A pass over the peer table (a repair pass, a sweep): the `records` records it covers (the
 * handle's peer_records: every loop of the pass stops there) and their liveness as judged once
 * in the pass (§11.5), keyed by what was read: a record that changed owner meanwhile (another
 * pid, start time or namespace) is judged again. So a pass costs at most one judgement per
 * record however many positions its intents name, which matters with thousands of records.
 * The verdicts of the default table of 256 live in `local` (6 KiB on the stack); those of a
 * larger one are allocated for the pass (up to 384 KiB for 16384 records, too much for a
 * stack frame). */
typedef struct dmxp__liveness {
    dmxp_identity me;
    uint32_t records;
    uint32_t checks;
    dmxp__judged *judged; /* `records` entries: `local`, or allocated */
    dmxp__judged local[DMXP_PEER_RECORDS];
} dmxp__liveness;

/* Record i < l->records, read as (pid, start, ns): 1 when judged dead. */
static inline int dmxp__dead_at(dmxp__liveness *l, uint32_t i, uint32_t pid, uint64_t start,
                                uint64_t ns) {
    if (pid == 0 || pid == l->me.pid) return 0; /* free, or ours: alive (never a torn read) */
    dmxp__judged *j = &l->judged[i];
    if (j->verdict == 0 || j->pid != pid || j->start != start || j->ns != ns) {
        j->pid = pid;
        j->start = start;
        j->ns = ns;
        j->verdict = dmxp__record_dead(pid, start, ns, l->me.pid_ns) ? 2 : 1;
        l->checks++;
    }
    return j->verdict == 2;
}

/* §11.9 give_back_wait: run by whoever frees the record `d` of a dead owner (a repair pass, a
 * sweep). If the owner died counted in a wait count of its channel (d.waiting = 1 or 2), the
 * freer takes the word back to 0 by CAS and decrements that count of the channel entry (in the
 * header's channel table, at a fixed offset for every id below 256, so nothing outside the
 * segment is touched), never below 0. Exactly one of the owner (its swap after the wait) and
 * the freer wins the word, so the count is undone once even if the owner was misjudged dead
 * (a freer that loses the CAS leaves the word to the owner). Any other non-zero value, or a
 * channel id of 256 or more, is garbage and is cleared. 1 when a count was given back. */
static inline int dmxp__give_back_wait(unsigned char *base, dmxp_peer_record *d) {
    uint32_t k = dmxp__load(&d->waiting, DMXP__ACQ);
    if (k == DMXP_WAITING_NONE) return 0;
    uint32_t id = dmxp__load(&d->channel_id, DMXP__RLX);
    if ((k == DMXP_WAITING_NOT_EMPTY || k == DMXP_WAITING_NOT_FULL) && id < DMXP_MAX_CHANNELS) {
        uint32_t expected = k;
        /* A failed CAS: the owner (misjudged dead) took the word back itself, and may be
         * waiting again already; its word is left alone. */
        if (!dmxp__cas_strong(&d->waiting, &expected, DMXP_WAITING_NONE,
                              DMXP__ACQREL, DMXP__ACQ))
            return 0;
        dmxp_channel_entry *e = &((dmxp_segment_layout *)(void *)base)->channels[id];
        DMXP_ATOMIC(uint32_t) *count =
            k == DMXP_WAITING_NOT_EMPTY ? &e->not_empty_waiters : &e->not_full_waiters;
        uint32_t c = dmxp__load(count, DMXP__RLX);
        for (uint32_t i = 0; i < DMXP_RETRY_LIMIT && c != 0; i++)
            if (dmxp__cas_weak(count, &c, c - 1, DMXP__SEQ, DMXP__RLX))
                return 1;
        return 0; /* already 0 (a peer zeroed it): nothing to give back */
    }
    /* A garbage value, or a channel id with no entry: nothing to give back. */
    dmxp__store(&d->waiting, DMXP_WAITING_NONE, DMXP__RLX);
    return 0;
}

/* Tests replace it to play an allocation failure. */
#ifndef DMXP_CALLOC
#define DMXP_CALLOC calloc
#endif

/* Starts a pass over a table of `records` records by this process: its own identity, not the
 * segment's pid (this may be a forked child), and no verdict yet. 0 when the verdicts of a
 * table larger than the default could not be allocated: the pass then covers no record
 * (l->records == 0), so it judges, frees and repairs nothing rather than judge every record
 * again for each position (a later pass retries; a stuck position is still unblocked after
 * the unblock timeout, §11.8). Pair with dmxp__liveness_end. */
static inline int dmxp__liveness_init(dmxp__liveness *l, uint32_t records) {
    memset(l, 0, sizeof *l);
    l->me = dmxp_self_identity();
    l->judged = records <= DMXP_PEER_RECORDS
                    ? l->local
                    : (dmxp__judged *)DMXP_CALLOC(records, sizeof *l->judged);
    if (l->judged == NULL) return 0;
    l->records = records;
    return 1;
}

static inline void dmxp__liveness_end(dmxp__liveness *l) {
    if (l->judged != l->local) free(l->judged);
    l->judged = NULL;
    l->records = 0;
}

/* One pass over the peer table (the sweep, the repair): what it does to `table`, judging
 * liveness through `l` and counting into `report`. */
typedef void (*dmxp__pass_fn)(const dmxp_channel *ch, dmxp_peer_record *table,
                              dmxp__liveness *l, dmxp_recover_report *report);

/* The frame dmxp_free_dead_records and dmxp_channel_recover share: `report` (optional) zeroed,
 * the table looked up (never installed: a segment without one has nothing to free or repair,
 * DMXP_OK), a fresh liveness cache for the handle's records, `pass`, then the count of
 * liveness checks it made. DMXP_E_OS when the cache could not be allocated (nothing done). */
static inline dmxp_status dmxp__run_pass(const dmxp_channel *ch, dmxp_recover_report *report,
                                         dmxp__pass_fn pass) {
    dmxp_recover_report local;
    if (report == NULL) report = &local;
    memset(report, 0, sizeof *report);
    if (ch == NULL || ch->base == NULL) return DMXP_E_INVALID_ARGUMENT;
    dmxp_peer_record *table;
    dmxp_status s = dmxp__peer_table(ch, 0, &table, NULL);
    if (s != DMXP_OK || table == NULL) return s;
    dmxp__liveness l;
    if (!dmxp__liveness_init(&l, ch->peer_records)) return DMXP_E_OS;
    pass(ch, table, &l, report);
    report->liveness_checks = l.checks;
    dmxp__liveness_end(&l);
    return DMXP_OK;
}

/* §11.6 takeover of record `d`, whose owner (dead_pid, dead_start as read) was judged dead, by
 * process `my_pid`: the dead owner's start time is cleared (CAS from the value judged, so a
 * newer one stays) before our pid goes in by CAS, so that a checker never reads our pid beside
 * the dead start time (and judges us dead). Its pid_ns is 0 or ours (a record of another
 * namespace is never judged dead), so it can stay. 1 when the record is now ours; 0 when
 * someone else frees or repairs it, or it changed hands. Shared by the repair and the sweep
 * (§11.10) so that two of them never both take one record. */
static inline int dmxp__take_over(dmxp_peer_record *d, uint32_t dead_pid, uint64_t dead_start,
                                  uint32_t my_pid) {
    uint64_t st = dead_start;
    (void)dmxp__cas_strong(&d->start_time, &st, 0, DMXP__RLX, DMXP__RLX);
    uint32_t expected = dead_pid;
    return dmxp__cas_strong(&d->pid, &expected, my_pid, DMXP__ACQREL,
                            DMXP__RLX);
}

/* Gives a record taken over with dmxp__take_over back to its owner as it was: its start time,
 * then its pid (release, last, as a registrant writes them). For a misjudged owner (the sweep
 * saw an intent appear) or a record a later repair pass must retry (deferred, intent intact). */
static inline void dmxp__restore_owner(dmxp_peer_record *d, uint32_t dead_pid,
                                       uint64_t dead_start) {
    dmxp__store(&d->start_time, dead_start, DMXP__RLX);
    dmxp__store(&d->pid, dead_pid, DMXP__REL);
}

/* §13.6 rule 1: frees every block of the pool whose tag is (LOANED or HELD, index + 1, g), by
 * a CAS from the tag read to (FREE, 0, g), and wakes producers waiting for a block. Run by
 * whoever frees dead record `index`, while it holds the record (after the takeover CAS on pid,
 * before the release store that frees it). One pass over the pool's headers (bounded).
 * Returns the blocks freed. */
static inline uint32_t dmxp__reclaim_owner(unsigned char *base,
                                           const dmxp_blob_pool_geometry *pool,
                                           uint32_t index) {
    uint32_t freed = 0, owner = index + 1;
    for (uint32_t c = 0; c < pool->class_count; c++) {
        dmxp_block_header *h = dmxp__block_header(base, pool, c, 0);
        for (uint32_t j = 0; j < pool->classes[c].block_count; j++) {
            uint64_t t = dmxp__load(&h[j].tag, DMXP__ACQ);
            uint32_t st = dmxp__tag_state(t);
            if ((st != DMXP_BLOCK_LOANED && st != DMXP_BLOCK_HELD) || dmxp__tag_owner(t) != owner)
                continue;
            if (dmxp__cas_strong(&h[j].tag, &t,
                                 dmxp__tag(DMXP_BLOCK_FREE, 0, dmxp__tag_generation(t)),
                                 DMXP__ACQREL, DMXP__RLX))
                freed++;
        }
    }
    if (freed) dmxp__notify_block_freed(base, pool);
    return freed;
}

/* Frees a record taken over from a dead owner: first gives the blob-pool blocks it owns back
 * (§13.6 rule 1, with the handle's cached pool geometry; none without a pool) and the wait
 * count it died in (§11.9), then clears its identity and, last with release, its pid (a
 * registrant that takes the free record sees the clears). `index` is the record's index in
 * the table. `clear_intent`: the repair also drops the intent it has just repaired; the sweep
 * frees only records it saw with none, and leaves the word as §11.10 does. Returns the blocks
 * given back. */
static inline uint32_t dmxp__free_taken(unsigned char *base, const dmxp_blob_pool_geometry *pool,
                                        dmxp_peer_record *d, uint32_t index, int clear_intent) {
    uint32_t blocks = dmxp__reclaim_owner(base, pool, index);
    (void)dmxp__give_back_wait(base, d);
    if (clear_intent) {
        dmxp__store(&d->intent_count, 0, DMXP__RLX);
        dmxp__store(&d->intent_flags, 0, DMXP__RLX);
    }
    dmxp__store(&d->pid_ns, 0, DMXP__RLX);
    dmxp__store(&d->start_time, 0, DMXP__RLX);
    dmxp__store(&d->pid, 0, DMXP__REL); /* free again */
    return blocks;
}

/* §11.10 sweep: frees every record of `table` (its l->records records) whose owner is judged
 * dead (§11.5, once per record: `l` caches the verdicts) and that holds no intent, taking it
 * over as a repair does (takeover, §11.6) so that two sweepers, or a sweeper and a repairer,
 * never both free it, and giving its blob-pool blocks (§13.6 rule 1) and its wait (§11.9)
 * back. A record with an intent is left to the repair of its channel; one that shows an intent
 * once taken over had a live owner (only a live owner writes one): misjudged, it is given back
 * untouched. Returns how many records were freed; *blocks (optional) gets the blocks given
 * back. */
static inline uint32_t dmxp__sweep(const dmxp_channel *ch, dmxp_peer_record *table,
                                   dmxp__liveness *l, uint64_t *blocks) {
    uint32_t freed = 0;
    for (uint32_t i = 0; i < l->records; i++) {
        dmxp_peer_record *d = &table[i];
        uint32_t pid = dmxp__load(&d->pid, DMXP__ACQ);
        if (pid == 0 || pid == l->me.pid) continue; /* free, or ours: alive */
        if (dmxp__load(&d->intent_count, DMXP__ACQ) != 0) continue;
        uint64_t st = dmxp__load(&d->start_time, DMXP__ACQ);
        uint64_t ns = dmxp__load(&d->pid_ns, DMXP__RLX);
        if (!dmxp__dead_at(l, i, pid, st, ns)) continue;
        if (!dmxp__take_over(d, pid, st, l->me.pid)) continue;
        if (dmxp__load(&d->intent_count, DMXP__ACQ) != 0) {
            dmxp__restore_owner(d, pid, st); /* misjudged: only a live owner writes an intent */
            continue;
        }
        uint32_t b = dmxp__free_taken(ch->base, &ch->pool, d, i, 0);
        if (blocks) *blocks += b;
        freed++;
    }
    return freed;
}

/* The sweep as a pass of dmxp_free_dead_records (below). */
static inline void dmxp__sweep_pass(const dmxp_channel *ch, dmxp_peer_record *table,
                                    dmxp__liveness *l, dmxp_recover_report *report) {
    report->records_freed = dmxp__sweep(ch, table, l, &report->blocks_reclaimed);
}

/* Frees the records of dead peers that hold no intent, whatever their channel (PROTOCOL.md
 * §11.10), giving back the blob-pool blocks they owned (§13.6 rule 1: report->blocks_reclaimed)
 * and the wait counts they died in (§11.9), so that the records of peers
 * killed while idle do not pile up until the table is full. dmxp_channel_register runs it
 * before it takes a record; tools may call it at any time. Liveness is judged once per record
 * (§11.5: a record of another pid namespace counts as alive; our own pid is never judged).
 * `report` (optional) gets records_freed and liveness_checks. DMXP_OK (also when the segment
 * has no peer table yet), or a corrupt peer_table_offset. */
static inline dmxp_status dmxp_free_dead_records(const dmxp_channel *ch,
                                                 dmxp_recover_report *report) {
    return dmxp__run_pass(ch, report, dmxp__sweep_pass);
}

/* Takes a free record of `table` for this handle in `role` (§11.3), as process `me`. */
static inline dmxp_status dmxp__register_one(dmxp_channel *ch, dmxp_peer_record *table,
                                             const dmxp_identity *me, uint16_t role,
                                             dmxp_peer_record **slot, uint32_t *index,
                                             dmxp_error *err) {
    if (*slot) return DMXP_OK;
    for (uint32_t i = 0; i < ch->peer_records; i++) {
        dmxp_peer_record *r = &table[i];
        uint32_t expected = 0;
        if (!dmxp__cas_strong(&r->pid, &expected, me->pid, DMXP__ACQ,
                              DMXP__RLX))
            continue;
        dmxp__store(&r->runtime, (uint16_t)DMXP_RUNTIME_C, DMXP__RLX);
        dmxp__store(&r->role, role, DMXP__RLX);
        dmxp__store(&r->channel_id, ch->id, DMXP__RLX);
        dmxp__store(&r->intent_count, 0, DMXP__RLX);
        dmxp__store(&r->intent_position, 0, DMXP__RLX);
        dmxp__store(&r->intent_flags, 0, DMXP__RLX);
        dmxp__store(&r->waiting, DMXP_WAITING_NONE, DMXP__RLX);
        dmxp__store(&r->pid_ns, me->pid_ns, DMXP__RLX);
        /* Last, with release: a checker that reads this start time sees the fields above. */
        dmxp__store(&r->start_time, me->start_time, DMXP__REL);
        *slot = r;
        *index = i; /* the owner of this role's blocks is i + 1 (§13.3) */
        return DMXP_OK;
    }
    return dmxp__fail(err, DMXP_E_PEER_TABLE_FULL, (int32_t)ch->id, "pid", ch->peer_records, 0,
                      0);
}

/* Registers this handle in the segment's peer table (§11.3) as a producer
 * (DMXP_ROLE_PRODUCER), a consumer (DMXP_ROLE_CONSUMER) or both (their OR: two records), so
 * that a position it claimed is repaired if this process dies before publishing or freeing
 * it, and a wait count it dies in is given back (§11.9). The first registration on a segment
 * carves the table from the band area: dmxp_segment_peer_records records of 64 bytes (16 KiB
 * for the default 256, up to 1 MiB). Before it takes a record, it frees the records of dead
 * peers that hold no intent (dmxp_free_dead_records, §11.10). At most that many handles of all
 * processes together are registered at once: DMXP_E_PEER_TABLE_FULL (found = the records)
 * beyond, and a segment created with a larger peer_records holds more.
 *
 * A registered handle must be used for its role by ONE thread at a time (its record holds one
 * intent); give each thread its own handle (dmxp_channel_open again) and register each. Blob
 * loans and in-place blob receives (PROTOCOL.md §13) need the registration: the record is the
 * owner of their blocks.
 * Release the records with dmxp_channel_close.
 *
 * On failure (DMXP_E_PEER_TABLE_FULL, DMXP_E_OUT_OF_SPACE, a corrupt peer_table_offset) the
 * handle still works exactly as before, only without crash protection: a claim of its left by
 * a crash stalls the channel. Callers that want protection should report the failure. */
static inline dmxp_status dmxp_channel_register(dmxp_channel *ch, unsigned roles,
                                                dmxp_error *err) {
    if (ch == NULL || ch->base == NULL || roles == 0 ||
        (roles & ~(DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER)) != 0)
        return dmxp__fail(err, DMXP_E_INVALID_ARGUMENT, -1, "roles", roles, 0, 0);
    int need_send = (roles & DMXP_ROLE_PRODUCER) && ch->send_peer == NULL;
    int need_recv = (roles & DMXP_ROLE_CONSUMER) && ch->recv_peer == NULL;
    if (!need_send && !need_recv) return DMXP_OK;
    dmxp_peer_record *table;
    dmxp_status s = dmxp__peer_table(ch, 1, &table, err);
    if (s != DMXP_OK) return s;
    dmxp__liveness l;
    /* Without memory for the verdicts the sweep covers nothing: dead idle records stay, and a
     * later registration or repair pass frees them. */
    (void)dmxp__liveness_init(&l, ch->peer_records);
    (void)dmxp__sweep(ch, table, &l, NULL);
    dmxp__liveness_end(&l);
    if (need_send) {
        s = dmxp__register_one(ch, table, &l.me, DMXP_ROLE_PRODUCER, &ch->send_peer,
                               &ch->send_index, err);
        if (s != DMXP_OK) return s;
    }
    if (need_recv) {
        s = dmxp__register_one(ch, table, &l.me, DMXP_ROLE_CONSUMER, &ch->recv_peer,
                               &ch->recv_index, err);
        if (s != DMXP_OK) return s;
    }
    return DMXP_OK;
}

/* Which roles this handle is registered for (0 = none: no crash protection). */
static inline unsigned dmxp_channel_registered(const dmxp_channel *ch) {
    return (ch->send_peer ? DMXP_ROLE_PRODUCER : 0u) | (ch->recv_peer ? DMXP_ROLE_CONSUMER : 0u);
}

/* Frees a record of this handle (§11.3 leave), but only if it holds this process's pid (§11.5):
 * a forked child that closes a handle it inherited leaves its parent's record alone, and so
 * does a process whose record a peer took over meanwhile. Before it lets the record go, the
 * blob-pool blocks the record still owns (loans neither committed nor abandoned, received
 * blocks not released) go back to the pool (§13.6: a client that closes a handle gives its
 * blocks back first; rule 1's scan, for record `index`). */
static inline void dmxp__leave(const dmxp_channel *ch, dmxp_peer_record **slot, uint32_t index) {
    dmxp_peer_record *r = *slot;
    *slot = NULL;
    if (r == NULL) return;
    uint32_t me = (uint32_t)getpid();
    if (dmxp__load(&r->pid, DMXP__ACQ) != me) return;
    (void)dmxp__reclaim_owner(ch->base, &ch->pool, index);
    dmxp__store(&r->intent_count, 0, DMXP__RLX);
    dmxp__store(&r->intent_flags, 0, DMXP__RLX);
    dmxp__store(&r->waiting, DMXP_WAITING_NONE, DMXP__RLX);
    /* A free record keeps no start time, so that the next owner's record never shows its own
     * pid with a stale start time (which would look like a reused pid). */
    dmxp__store(&r->start_time, 0, DMXP__RLX);
    uint32_t expected = me; /* a CAS: never clears a record a repairer took over */
    dmxp__cas_strong(&r->pid, &expected, 0, DMXP__REL, DMXP__RLX);
}

/* Leaves the peer table: frees this handle's records if this process registered them (a
 * forked child that inherited the handle does not free its parent's). The handle stays
 * usable, unregistered. Call it before dmxp_segment_close. Blob-pool blocks (PROTOCOL.md §13)
 * the handle still owns are given back first: commit or abandon its loans and release its
 * views before (afterwards they report DMXP_E_REVOKED, and a view's bytes may be reused). */
static inline void dmxp_channel_close(dmxp_channel *ch) {
    if (ch == NULL) return;
    dmxp__leave(ch, &ch->send_peer, ch->send_index);
    dmxp__leave(ch, &ch->recv_peer, ch->recv_index);
}

/* §11.6 covered(c, p, role, i): 1 when some record e other than record `except` (the dead
 * record being repaired), with pid != 0 and the same channel `id` and `role`, has an intent
 * covering position `p` (intent_count read with acquire, then intent_position; wrapping:
 * intent_position <= p < intent_position + intent_count) and either comes before it in the
 * table (e's own repair, in this pass or another, handles p) or is not dead (its owner holds p,
 * is repairing e, or is about to learn that its CAS failed). Liveness goes through the pass's
 * cache `l`, so the whole pass judges each record at most once; our own pid is alive. The
 * records looked at are the pass's l->records. */
static inline int dmxp__covered(dmxp_peer_record *table, uint32_t except, uint32_t id,
                                uint16_t role, uint64_t p, dmxp__liveness *l) {
    for (uint32_t i = 0; i < l->records; i++) {
        if (i == except) continue;
        dmxp_peer_record *e = &table[i];
        uint32_t pid = dmxp__load(&e->pid, DMXP__ACQ);
        if (pid == 0) continue;
        uint32_t count = dmxp__load(&e->intent_count, DMXP__ACQ);
        uint64_t first = dmxp__load(&e->intent_position, DMXP__RLX);
        if (count == 0 || p - first >= (uint64_t)count) continue; /* wrapping */
        if (dmxp__load(&e->channel_id, DMXP__RLX) != id ||
            dmxp__load(&e->role, DMXP__RLX) != role)
            continue;
        if (i < except) return 1;
        uint64_t start = dmxp__load(&e->start_time, DMXP__ACQ);
        uint64_t ns = dmxp__load(&e->pid_ns, DMXP__RLX);
        if (!dmxp__dead_at(l, i, pid, start, ns)) return 1;
    }
    return 0;
}

/* A marker (§6.4) for position `p`, still claimed and unpublished: `flags` DMXP_FLAG_LOST (a
 * tombstone, naming `sender_pid` and `sender_runtime`, 0 when unknown) or DMXP_FLAG_SKIP (with
 * them 0): the metadata first (payload_len 0, no run fields), then the publish as a CAS
 * p -> p + 1 (release), so that a claimer that publishes meanwhile wins and its message's
 * state is never written over (§11.7). 1 when the marker was published. */
static inline int dmxp__marker(const dmxp_channel *ch, uint64_t p, uint16_t flags,
                               uint32_t sender_pid, uint16_t sender_runtime) {
    dmxp_slot *slot = dmxp__slot(ch, p);
    if (dmxp__load(&slot->sequence, DMXP__ACQ) != p) return 0;
    dmxp_slot_meta *m = &slot->meta;
    dmxp__store(&m->message_id, p, DMXP__RLX);
    dmxp__store(&m->timestamp_ns, 0, DMXP__RLX);
    dmxp__store(&m->channel_id, ch->id, DMXP__RLX);
    dmxp__store(&m->message_type, 0, DMXP__RLX);
    dmxp__store(&m->sender_pid, sender_pid, DMXP__RLX);
    dmxp__store(&m->sender_runtime, sender_runtime, DMXP__RLX);
    dmxp__store(&m->flags, flags, DMXP__RLX);
    dmxp__store(&m->payload_len, 0, DMXP__RLX);
    dmxp__store(&m->reserved, 0, DMXP__RLX);
    dmxp__store(&slot->run_slots, 0, DMXP__RLX);
    dmxp__store(&slot->run_index, 0, DMXP__RLX);
    uint64_t expected = p;
    return dmxp__cas_strong(&slot->sequence, &expected, p + 1, DMXP__REL,
                            DMXP__RLX);
}

/* A LOST tombstone (§6.4) for position `p` naming the dead producer (dmxp__marker). */
static inline int dmxp__tombstone(const dmxp_channel *ch, uint64_t p, uint32_t sender_pid,
                                  uint16_t sender_runtime) {
    return dmxp__marker(ch, p, (uint16_t)DMXP_FLAG_LOST, sender_pid, sender_runtime);
}

/* Frees position `p`, still published and claimed by a consumer that never freed it, for the
 * next lap: a CAS p + 1 -> p + capacity (release), so that a claimer that frees it meanwhile
 * wins (§11.7). 1 when freed. */
static inline int dmxp__force_free(const dmxp_channel *ch, uint64_t p) {
    uint64_t expected = p + 1;
    return dmxp__cas_strong(&dmxp__slot(ch, p)->sequence, &expected,
                            p + ch->capacity, DMXP__REL, DMXP__RLX);
}

/* The positions loop of §11.6 for dead record `i` (taken over), of `role`, whose intent is
 * [p0, p0 + count): each position claimed within the last lap before the cursor (read first,
 * with acquire: the intents of whoever claimed behind it are then visible to `covered`) and
 * still stuck (claimed-unpublished for a producer, claimed-unfreed for a consumer) is
 * tombstoned or freed unless another intent covers it; the sequence is read again after the
 * intents. Wakes the other side if it repaired anything. 1 when a position was skipped because
 * it is covered: the record must then be given back, intent intact, for a later pass. */
static inline int dmxp__repair_intent(const dmxp_channel *ch, dmxp_peer_record *table,
                                      uint32_t i, uint16_t role, uint64_t p0, uint32_t count,
                                      uint32_t intent_flags, uint32_t dead_pid,
                                      uint16_t runtime, dmxp__liveness *l,
                                      dmxp_recover_report *report) {
    int producer = role == DMXP_ROLE_PRODUCER;
    /* §12.5: a dead producer's run is one message: its continuations p0 + 1 .. get SKIP
     * markers, then p0 (published last by an honest sender) the LOST tombstone. */
    int run = producer && (intent_flags & DMXP_INTENT_RUN) != 0;
    uint64_t n = count < ch->capacity ? (uint64_t)count : ch->capacity;
    uint64_t cursor =
        dmxp__load(producer ? &ch->entry->tail : &ch->entry->head, DMXP__ACQ);
    int deferred = 0, repaired = 0;
    for (uint64_t k = 0; k < n; k++) {
        /* In a run's order, p0 + 1 .. p0 + n - 1 then p0; otherwise p0 .. p0 + n - 1. */
        uint64_t p = run ? p0 + (k + 1) % n : p0 + k;
        uint64_t behind = cursor - p; /* wrapping */
        if (behind == 0 || behind > ch->capacity) continue; /* not claimed, or an older lap */
        uint64_t stuck = producer ? p : p + 1;
        DMXP_ATOMIC(uint64_t) *seq = &dmxp__slot(ch, p)->sequence;
        if (dmxp__load(seq, DMXP__ACQ) != stuck) continue;
        if (dmxp__covered(table, i, ch->id, role, p, l)) {
            deferred = 1;
            continue;
        }
        /* Re-read after the intents: an owner that finished meanwhile has moved it on. */
        if (dmxp__load(seq, DMXP__ACQ) != stuck) continue;
        if (run && p != p0) {
            /* A part of the run: passed over by consumers, not a message of its own. */
            if (!dmxp__marker(ch, p, (uint16_t)DMXP_FLAG_SKIP, 0, 0)) continue;
            report->skipped++;
        } else if (producer) {
            /* Should the owner be alive after all, its publish CAS (from p) fails: revoked. */
            if (!dmxp__tombstone(ch, p, dead_pid, runtime)) continue;
            report->lost++;
        } else {
            /* Freed; a live owner's free CAS (from p + 1) fails: revoked. */
            if (!dmxp__force_free(ch, p)) continue;
            report->freed++;
        }
        repaired = 1;
    }
    if (repaired) {
        if (producer)
            dmxp__notify_consumers(ch);
        else
            dmxp__notify_producers(ch);
    }
    return deferred;
}

/* The loop of dmxp_channel_recover (below). */
static inline void dmxp__repair_pass(const dmxp_channel *ch, dmxp_peer_record *table,
                                     dmxp__liveness *l, dmxp_recover_report *report) {
    for (uint32_t i = 0; i < l->records; i++) {
        dmxp_peer_record *d = &table[i];
        uint32_t dead_pid = dmxp__load(&d->pid, DMXP__ACQ);
        if (dead_pid == 0 || dead_pid == l->me.pid) continue; /* free, or ours: alive */
        /* Other channels' intents are left alone; their idle records are freed like ours. */
        if (dmxp__load(&d->channel_id, DMXP__RLX) != ch->id &&
            dmxp__load(&d->intent_count, DMXP__ACQ) != 0)
            continue;
        uint64_t dead_start = dmxp__load(&d->start_time, DMXP__ACQ);
        uint64_t dead_ns = dmxp__load(&d->pid_ns, DMXP__RLX);
        if (!dmxp__dead_at(l, i, dead_pid, dead_start, dead_ns)) continue;
        if (!dmxp__take_over(d, dead_pid, dead_start, l->me.pid)) continue;
        dmxp__store(&d->start_time, l->me.start_time, DMXP__REL); /* d is now ours */
        DMXP_TEST_HOOK(DMXP_HOOK_REPAIR_TAKEN, ch, i);
        uint32_t count = dmxp__load(&d->intent_count, DMXP__ACQ);
        uint64_t p0 = dmxp__load(&d->intent_position, DMXP__RLX);
        uint32_t intent_flags = dmxp__load(&d->intent_flags, DMXP__RLX); /* §12.5 */
        uint16_t role = dmxp__load(&d->role, DMXP__RLX);
        uint16_t runtime = dmxp__load(&d->runtime, DMXP__RLX);
        int deferred = 0;
        if (count != 0 && dmxp__load(&d->channel_id, DMXP__RLX) != ch->id)
            deferred = 1; /* it changed between the two reads: not ours to repair after all */
        else if (count != 0 && (role == DMXP_ROLE_PRODUCER || role == DMXP_ROLE_CONSUMER))
            deferred = dmxp__repair_intent(ch, table, i, role, p0, count, intent_flags,
                                           dead_pid, runtime, l, report);
        /* (any other role word: no cursor to repair against, the record is just freed) */
        if (deferred) {
            dmxp__restore_owner(d, dead_pid, dead_start); /* intent intact, for a later pass */
            report->records_deferred++;
        } else {
            report->blocks_reclaimed += dmxp__free_taken(ch->base, &ch->pool, d, i, 1);
            report->records_freed++;
        }
    }
}

/* One repair pass for this channel (§11.6). Each record with another pid than ours whose owner
 * is judged dead is taken over by CAS (its start time cleared first), except the records of
 * other channels that hold an intent, which are left alone (a repair never touches a channel
 * the repairer has not opened). A dead record with no intent is freed whatever its channel. A
 * dead record of this channel has each position of its intent that is still claimed-unpublished
 * (producer) tombstoned as LOST, or still claimed-unfreed (consumer) freed, unless another
 * intent covers it (dmxp__covered: an earlier record of the table, or a live one); a dead
 * producer's run (intent_flags DMXP_INTENT_RUN, §12.5) gets SKIP markers on its stuck
 * continuations (report->skipped), then the one LOST tombstone on its first position. If a
 * position was skipped for that, or the record's channel changed meanwhile (not ours after
 * all), the record is given back to its dead owner (start time restored, then its pid),
 * intent intact, and a later pass repairs it (records_deferred); otherwise its wait count is
 * given back (§11.9) and the record freed (records_freed). Liveness (§11.5: a record of another
 * pid namespace counts as alive, our own pid is never judged) is judged once per record and
 * pass. The blocking calls run this by themselves once the channel has been stuck for
 * DMXP_STUCK_GRACE_NS, the non-blocking ones after DMXP_MISS_STREAK misses in a row and the
 * same grace; tools may call it at any time. A peer wrongly judged dead learns it from its
 * next publish or free (DMXP_E_REVOKED, §11.7). Every record freed first gives back the
 * blob-pool blocks it owned (§13.6 rule 1: report->blocks_reclaimed). `report` is optional.
 * DMXP_OK, or a corrupt peer_table_offset. */
static inline dmxp_status dmxp_channel_recover(const dmxp_channel *ch,
                                               dmxp_recover_report *report) {
    return dmxp__run_pass(ch, report, dmxp__repair_pass);
}

/* Sets how long a position must stay stuck before this handle's calls unblock it whatever
 * its holder's liveness (PROTOCOL.md §11.8): a receive writes a LOST tombstone for a position
 * a producer claimed and never published, a send frees a slot a consumer claimed and never
 * freed. The holder keeps its peer record and learns of it from its own publish or free
 * (DMXP_E_REVOKED, §11.7). 0 or UINT64_MAX: never (only dead peers' positions are repaired).
 * The default is DMXP_UNBLOCK_TIMEOUT_NS. May be called while other threads use the handle. */
static inline void dmxp_channel_set_unblock_timeout(dmxp_channel *ch, uint64_t ns) {
    dmxp__store(&ch->unblock_ns, ns, DMXP__RLX);
}

/* This handle's unblock timeout (0 or UINT64_MAX: never). */
static inline uint64_t dmxp_channel_unblock_timeout(const dmxp_channel *ch) {
    return dmxp__load(&ch->unblock_ns, DMXP__RLX);
}

/* Whether this handle's sends stamp each message's timestamp_ns with CLOCK_MONOTONIC (on != 0,
 * the default) or leave it 0, which the protocol reads as "unknown" (PROTOCOL.md §8): the
 * clock read is the largest cost of a send that the ring does not need. Every send of the
 * handle follows it (dmxp_try_send, dmxp_send_timeout, the batches, runs); receives are
 * unaffected. The same switch as the Rust ChannelBuilder::with_timestamps. May be called
 * while other threads use the handle. */
static inline void dmxp_channel_set_timestamps(dmxp_channel *ch, int on) {
    dmxp__store(&ch->timestamps, on ? 1u : 0u, DMXP__RLX);
}

/* 1 when this handle's sends stamp timestamp_ns (dmxp_channel_set_timestamps), else 0. */
static inline int dmxp_channel_timestamps(const dmxp_channel *ch) {
    return dmxp__load(&ch->timestamps, DMXP__RLX) != 0;
}

/* A watch on one stuck position (§11.6, §11.8), for the blocking calls on the stack and for the
 * non-blocking ones copied in and out of the handle's dmxp__watch. */
typedef struct dmxp__stuck {
    int tracking;
    uint64_t position;
    int64_t since; /* first seen stuck there */
    int64_t next;  /* the next repair pass is due */
    int64_t pause; /* the pause before it */
    int64_t last;  /* the last pass ran (since, before the first) */
} dmxp__stuck;

/* 1 when the channel is stuck for a receiver (send == 0: nothing published at head while tail
 * is past it) or a sender (send = the positions it needs at tail, 1 or a run's k: the first
 * of the slots of tail .. tail + send - 1 that is not free holds a message a consumer claimed
 * and never freed). *position is the stuck position. */
static inline int dmxp__stuck_at(const dmxp_channel *ch, int send, uint64_t *position) {
    if (!send) {
        uint64_t h = dmxp__load(&ch->entry->head, DMXP__ACQ);
        uint64_t seq = dmxp__load(&dmxp__slot(ch, h)->sequence, DMXP__ACQ);
        uint64_t t = dmxp__load(&ch->entry->tail, DMXP__ACQ);
        *position = h;
        return seq == h && dmxp__diff(t, h) > 0;
    }
    uint64_t t = dmxp__load(&ch->entry->tail, DMXP__ACQ);
    uint64_t want = (uint64_t)send < ch->capacity ? (uint64_t)send : ch->capacity;
    uint64_t at = t;
    uint64_t seq = dmxp__load(&dmxp__slot(ch, at)->sequence, DMXP__ACQ);
    for (uint64_t i = 1; i < want && seq == at; i++) { /* past the free slots of a run */
        at = t + i;
        seq = dmxp__load(&dmxp__slot(ch, at)->sequence, DMXP__ACQ);
    }
    uint64_t prev = at - ch->capacity;
    uint64_t h = dmxp__load(&ch->entry->head, DMXP__ACQ);
    *position = prev;
    return seq == prev + 1 && dmxp__diff(h, prev) > 0;
}

/* dmxp__stuck_at, counted in dmxp_channel_stuck_looks. */
static inline int dmxp__looks_stuck(const dmxp_channel *ch, int send, uint64_t *position) {
    dmxp__fetch_add(&dmxp__mut(ch)->stuck_looks, 1, DMXP__RLX);
    return dmxp__stuck_at(ch, send, position);
}

/* The length of the run a registered producer of this channel claimed at `position`, if its
 * record names one there (intent_flags, §12.5); 0 otherwise, or on a channel without runs. */
static inline uint64_t dmxp__run_intent_at(const dmxp_channel *ch, uint64_t position) {
    dmxp_peer_record *table = NULL;
    if ((ch->channel_flags & DMXP_CHANNEL_RUNS) == 0 ||
        dmxp__peer_table(ch, 0, &table, NULL) != DMXP_OK || table == NULL)
        return 0;
    for (uint32_t i = 0; i < ch->peer_records; i++) {
        dmxp_peer_record *r = &table[i];
        uint32_t count = dmxp__load(&r->intent_count, DMXP__ACQ);
        if (count > 1 && (dmxp__load(&r->intent_flags, DMXP__RLX) & DMXP_INTENT_RUN) != 0 &&
            dmxp__load(&r->pid, DMXP__RLX) != 0 &&
            dmxp__load(&r->role, DMXP__RLX) == DMXP_ROLE_PRODUCER &&
            dmxp__load(&r->channel_id, DMXP__RLX) == ch->id &&
            dmxp__load(&r->intent_position, DMXP__RLX) == position)
            return count < ch->capacity ? count : ch->capacity;
    }
    return 0;
}

/* Unblocks `position`, stuck past the unblock timeout with its holder alive (§11.8), if it is
 * still the channel's stuck position: a LOST tombstone for a receiver (metadata first, then a
 * CAS h -> h + 1, so a publish that got there first wins), a freeing CAS (p + 1 -> p +
 * capacity) for a sender. The holder's record is left alone. Wakes the other side. 1 when it
 * unblocked the position. */
static inline int dmxp__unblock(const dmxp_channel *ch, int send, uint64_t position) {
    uint64_t now_at;
    if (!dmxp__stuck_at(ch, send, &now_at) || now_at != position) return 0;
    if (!send) {
        /* A run its holder's record names (§12.5): its claimed continuations get SKIP markers
         * first, so that the whole run costs one unblock timeout and one loss. */
        uint64_t run = dmxp__run_intent_at(ch, position);
        uint64_t tail = dmxp__load(&ch->entry->tail, DMXP__ACQ);
        int repaired = 0;
        for (uint64_t k = 1; k < run; k++) {
            uint64_t p = position + k;
            if (dmxp__diff(tail, p) > 0) repaired |= dmxp__marker(ch, p, (uint16_t)DMXP_FLAG_SKIP, 0, 0);
        }
        repaired |= dmxp__tombstone(ch, position, 0, 0); /* the holder is not known here */
        if (!repaired) return 0;
        dmxp__notify_consumers(ch);
        return 1;
    }
    if (!dmxp__force_free(ch, position)) return 0;
    dmxp__notify_producers(ch);
    return 1;
}

/* When the watched position is due for unblocking: INT64_MAX when never. */
static inline int64_t dmxp__unblock_at(const dmxp_channel *ch, const dmxp__stuck *st) {
    uint64_t t = dmxp__load(&ch->unblock_ns, DMXP__RLX);
    if (t == 0 || t == UINT64_MAX || t > (uint64_t)(INT64_MAX - st->since)) return INT64_MAX;
    return st->since + (int64_t)t;
}

/* When the watch is next due for a pass: the backed-off re-check, or the unblock timeout if
 * that comes first and no pass has run since it passed. */
static inline int64_t dmxp__stuck_due(const dmxp_channel *ch, const dmxp__stuck *st) {
    int64_t unblock_at = dmxp__unblock_at(ch, st);
    return unblock_at > st->last && unblock_at < st->next ? unblock_at : st->next;
}

/* One look of a watch that found the channel stuck at `pos` at time `now`: starts watching a
 * new position (the grace first); once due, runs a repair pass (§11.6) and, when the position
 * has been stuck for the unblock timeout and the pass did not move it, unblocks it (§11.8). A
 * pass that moved nothing doubles the pause before the next, up to DMXP_STUCK_MAX_RECHECK_NS.
 * 1 when something was repaired or unblocked (try again). */
static inline int dmxp__stuck_look(const dmxp_channel *ch, int send, dmxp__stuck *st,
                                   uint64_t pos, int64_t now) {
    if (!st->tracking || st->position != pos) {
        st->tracking = 1;
        st->position = pos;
        st->since = now;
        st->last = now;
        st->pause = DMXP_STUCK_GRACE_NS;
        st->next = now + DMXP_STUCK_GRACE_NS;
        return 0;
    }
    if (now < dmxp__stuck_due(ch, st)) return 0;
    st->last = now;
    dmxp_recover_report rep;
    int moved = dmxp_channel_recover(ch, &rep) == DMXP_OK &&
                (send ? rep.freed : rep.lost + rep.skipped) != 0;
    if (!moved && now >= dmxp__unblock_at(ch, st)) moved = dmxp__unblock(ch, send, pos);
    if (!moved) {
        st->pause = st->pause >= DMXP_STUCK_MAX_RECHECK_NS / 2 ? DMXP_STUCK_MAX_RECHECK_NS
                                                              : st->pause * 2;
        st->next = now + st->pause;
    }
    return moved;
}

/* Called by a blocking loop before it sleeps: looks whether the channel is stuck, runs what
 * dmxp__stuck_look finds due, and returns the deadline of the next sleep: no later than the
 * watch's next pass while stuck, so the condition is re-checked then. */
static inline int64_t dmxp__stuck_step(const dmxp_channel *ch, int send, dmxp__stuck *st,
                                       int64_t deadline) {
    uint64_t pos;
    if (!dmxp__looks_stuck(ch, send, &pos)) {
        st->tracking = 0;
        return deadline;
    }
    (void)dmxp__stuck_look(ch, send, st, pos, (int64_t)dmxp_now_ns());
    int64_t due = dmxp__stuck_due(ch, st);
    return due < deadline ? due : deadline;
}

/* The non-blocking calls' stuck watch (declared with the ring code). A miss lengthens the
 * handle's streak; from DMXP_MISS_STREAK misses in a row on, each miss looks whether the
 * channel is stuck and runs what dmxp__stuck_look finds due: repair passes from
 * DMXP_STUCK_GRACE_NS on, backing off, and the unblock once the position has been stuck for
 * the handle's unblock timeout. Threads sharing an unregistered handle share its watch: races
 * between them only move a pass earlier or later, and a pass (or an unblock of a position
 * still stuck) is safe at any time. */
static inline int dmxp__miss(const dmxp_channel *ch, int send) {
    dmxp__watch *w = send ? &dmxp__mut(ch)->send_watch : &dmxp__mut(ch)->recv_watch;
    uint32_t misses = dmxp__load(&w->misses, DMXP__RLX);
    /* A streak's first miss forgets any watch left over (a hit clears `since` only when it
     * ends a streak, below: threads racing on a shared handle can leave one behind). */
    if (misses == 0 && dmxp__load(&w->since, DMXP__RLX) != 0)
        dmxp__store(&w->since, 0, DMXP__RLX);
    if (misses < DMXP_MISS_STREAK) {
        dmxp__store(&w->misses, ++misses, DMXP__RLX);
        if (misses < DMXP_MISS_STREAK) return 0;
    }
    uint64_t pos;
    if (!dmxp__looks_stuck(ch, send, &pos)) {
        if (dmxp__load(&w->since, DMXP__RLX) != 0)
            dmxp__store(&w->since, 0, DMXP__RLX);
        return 0;
    }
    int64_t now = (int64_t)dmxp_now_ns();
    if (now == 0) now = 1; /* since == 0 means "not watching" */
    dmxp__stuck st;
    st.since = dmxp__load(&w->since, DMXP__RLX);
    st.tracking = st.since != 0;
    st.position = dmxp__load(&w->position, DMXP__RLX);
    st.next = dmxp__load(&w->next, DMXP__RLX);
    st.pause = dmxp__load(&w->pause, DMXP__RLX);
    st.last = dmxp__load(&w->last, DMXP__RLX);
    int moved = dmxp__stuck_look(ch, send, &st, pos, now);
    dmxp__store(&w->position, st.position, DMXP__RLX);
    dmxp__store(&w->next, st.next, DMXP__RLX);
    dmxp__store(&w->pause, st.pause, DMXP__RLX);
    dmxp__store(&w->last, st.last, DMXP__RLX);
    dmxp__store(&w->since, st.since, DMXP__RLX);
    return moved;
}

DMXP__INLINE void dmxp__hit(const dmxp_channel *ch, int send) {
    dmxp__watch *w = send ? &dmxp__mut(ch)->send_watch : &dmxp__mut(ch)->recv_watch;
    /* One load: a handle in steady flow writes nothing here. `since` is non-zero only within
     * a streak (dmxp__miss sets it from the DMXP_MISS_STREAK-th miss on and clears it at a
     * streak's first miss), so a hit that ends no streak has nothing to clear. */
    if (dmxp__load(&w->misses, DMXP__RLX) != 0) {
        dmxp__store(&w->misses, 0, DMXP__RLX);
        if (dmxp__load(&w->since, DMXP__RLX) != 0)
            dmxp__store(&w->since, 0, DMXP__RLX);
    }
}

/* Positions of this handle's claims found revoked by a peer's repair (§11.7), every call
 * counted (the batch calls count each position). */
static inline uint64_t dmxp_channel_revoked(const dmxp_channel *ch) {
    return dmxp__load(&ch->revoked, DMXP__RLX);
}

/* How many times calls on this handle read the other side's cursor to look for a stuck
 * channel (§11.6): blocking calls before each sleep, non-blocking ones only past a streak of
 * DMXP_MISS_STREAK misses. A diagnostic (and what the tests check the streak with). */
static inline uint64_t dmxp_channel_stuck_looks(const dmxp_channel *ch) {
    return dmxp__load(&ch->stuck_looks, DMXP__RLX);
}

/* ------------------------------------------------------------------------------------------ */
/* Blocking (PROTOCOL.md §7)                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* True when the position at head has been published (a message or a marker). */
static inline int dmxp_has_message(const dmxp_channel *ch) {
    uint64_t h = dmxp__load(&ch->entry->head, DMXP__RLX);
    return dmxp__load(&dmxp__slot(ch, h)->sequence, DMXP__ACQ) == h + 1;
}

/* True when the position at tail is free. */
static inline int dmxp_has_free_slot(const dmxp_channel *ch) {
    uint64_t t = dmxp__load(&ch->entry->tail, DMXP__RLX);
    return dmxp__load(&dmxp__slot(ch, t)->sequence, DMXP__ACQ) == t;
}

/* True when the `n` positions from tail on are free: a run of n slots fits now (§12.3). */
static inline int dmxp_has_free_slots(const dmxp_channel *ch, uint64_t n) {
    uint64_t t = dmxp__load(&ch->entry->tail, DMXP__RLX);
    if (n == 0) n = 1;
    if (n > ch->capacity) return 0;
    for (uint64_t i = 0; i < n; i++)
        if (dmxp__load(&dmxp__slot(ch, t + i)->sequence, DMXP__ACQ) != t + i) return 0;
    return 1;
}

/* The readiness tests of the blocking calls: a message at head, or `n` free slots at tail. */
static inline int dmxp__ready_message(const dmxp_channel *ch, uint64_t n) {
    (void)n;
    return dmxp_has_message(ch);
}
static inline int dmxp__ready_free(const dmxp_channel *ch, uint64_t n) {
    return dmxp_has_free_slots(ch, n);
}

/* One registered sleep of at most one slice (§7.2 wait_until). Returns 1 if ready() held.
 * `rec` is the handle's peer record for this role (NULL when unregistered) and `kind` the
 * DMXP_WAITING_* value naming `waiters` (§11.9): the record says which count the handle is in
 * while it is, so that whoever frees the record after this process's death gives the count
 * back. Afterwards the handle takes the word back with a swap and leaves the count only if it
 * still held `kind`: a freer that misjudged it dead and won the word has already done so. */
static inline int dmxp__wait_once(const dmxp_channel *ch,
                                  int (*ready)(const dmxp_channel *, uint64_t), uint64_t n,
                                  DMXP_ATOMIC(uint32_t) *word, DMXP_ATOMIC(uint32_t) *waiters,
                                  dmxp_peer_record *rec, uint32_t kind, int64_t deadline) {
    dmxp__fetch_add(waiters, 1, DMXP__SEQ);
    /* After the count: a record that says "waiting" is always counted. */
    if (rec) dmxp__store(&rec->waiting, kind, DMXP__REL);
    uint32_t v = dmxp__load(word, DMXP__SEQ);
#if !defined(DMXP__TSAN)
    dmxp__fence(DMXP__SEQ);
#endif
    int is_ready = ready(ch, n);
    if (!is_ready) {
        int64_t left = deadline - (int64_t)dmxp_now_ns();
        if (left > DMXP_WAIT_SLICE_NS) left = DMXP_WAIT_SLICE_NS;
        if (left > 0) (void)dmxp__futex_wait(word, v, left);
    }
    if (rec == NULL ||
        dmxp__exchange(&rec->waiting, DMXP_WAITING_NONE, DMXP__ACQREL) == kind)
        dmxp__fetch_sub(waiters, 1, DMXP__SEQ);
    return is_ready;
}

/* A pause hint for spin loops. */
static inline void dmxp__pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

/* 1 when `position`, found claimed but unpublished at head, has moved on: it is published
 * (a message, a marker, a LOST tombstone) or head has left it (another consumer took it). */
static inline int dmxp__position_moved(const dmxp_channel *ch, uint64_t position) {
    if (dmxp__load(&ch->entry->head, DMXP__RLX) != position) return 1;
    uint64_t seq = dmxp__load(&dmxp__slot(ch, position)->sequence, DMXP__ACQ);
    return dmxp__diff(seq, position + 1) >= 0;
}

/* Waits for a pending head position (§6.2; declared with the ring code): DMXP_PENDING_SPINS
 * re-checks with a pause hint (a producer preempted between claim and publish usually
 * finishes within them), then yields the processor in a loop, each
 * yield preceded by the stuck check of the blocking calls (never a futex sleep): while the
 * position stays claimed-unpublished, repair passes run from DMXP_STUCK_GRACE_NS on (§11.6), tombstoning the position if its claimer is
 * dead, and once the handle's unblock timeout has passed it is tombstoned anyway (§11.8). 1
 * when it moved, 0 when give_up_at passed first. */
static inline int dmxp__await_position(const dmxp_channel *ch, uint64_t position,
                                       int64_t give_up_at) {
    for (uint32_t i = 0; i < DMXP_PENDING_SPINS; i++) {
        if (dmxp__position_moved(ch, position)) return 1;
        dmxp__pause();
    }
    /* Then yield the processor (a producer preempted mid-send gets it back), with the stuck
     * check of the blocking calls in between; never a futex sleep, so a channel in steady
     * flow makes no system call but sched_yield. The watch counts from when the position
     * was first seen pending, so that an unblock timeout no longer than DMXP_PENDING_WAIT_NS
     * comes due before the wait gives up. */
    int64_t seen = give_up_at - DMXP_PENDING_WAIT_NS;
    dmxp__stuck stuck = {1, position, seen, seen + DMXP_STUCK_GRACE_NS, DMXP_STUCK_GRACE_NS, seen};
    for (;;) {
        if (dmxp__position_moved(ch, position)) return 1;
        (void)dmxp__stuck_step(ch, 0, &stuck, give_up_at);
        if (dmxp__position_moved(ch, position)) return 1;
        if ((int64_t)dmxp_now_ns() >= give_up_at) {
            /* One more look now that give_up_at has passed: the step above may have read the
             * clock just before it (a preemption in between), and an unblock timeout equal to
             * the pending wait (the default) comes due only then. */
            (void)dmxp__stuck_step(ch, 0, &stuck, give_up_at);
            return dmxp__position_moved(ch, position);
        }
        sched_yield();
    }
}

/* What a wait of one side of ch waits on (§7.2, §11.9): a receiver's (send 0) for a message,
 * on not_empty_seq, counted in not_empty_waiters and named NOT_EMPTY in its consumer record; a
 * sender's (send nonzero) for free slots, on not_full_seq, not_full_waiters, NOT_FULL and its
 * producer record. Shared by the blocking waits and the io_uring wait fd's arm. */
typedef struct dmxp__wait_side {
    int (*ready)(const dmxp_channel *, uint64_t);
    DMXP_ATOMIC(uint32_t) *word;
    DMXP_ATOMIC(uint32_t) *waiters;
    dmxp_peer_record *rec;
    uint32_t kind;
} dmxp__wait_side;

static inline dmxp__wait_side dmxp__wait_side_of(const dmxp_channel *ch, int send) {
    dmxp__wait_side side;
    side.ready = send ? dmxp__ready_free : dmxp__ready_message;
    side.word = send ? &ch->entry->not_full_seq : &ch->entry->not_empty_seq;
    side.waiters = send ? &ch->entry->not_full_waiters : &ch->entry->not_empty_waiters;
    side.rec = send ? ch->send_peer : ch->recv_peer;
    side.kind = send ? DMXP_WAITING_NOT_FULL : DMXP_WAITING_NOT_EMPTY;
    return side;
}

static inline dmxp_status dmxp__wait_until(const dmxp_channel *ch, int send, int64_t timeout_ns) {
    dmxp__wait_side side = dmxp__wait_side_of(ch, send);
    int64_t deadline = dmxp__deadline(timeout_ns);
    dmxp__stuck stuck = {0, 0, 0, 0, 0, 0};
    uint64_t n = send ? (uint64_t)send : 1;
    for (;;) {
        if (side.ready(ch, n)) return DMXP_OK;
        int64_t until = dmxp__stuck_step(ch, send, &stuck, deadline);
        if (dmxp__wait_once(ch, side.ready, n, side.word, side.waiters, side.rec, side.kind,
                            until))
            return DMXP_OK;
        if ((int64_t)dmxp_now_ns() >= deadline)
            return side.ready(ch, n) ? DMXP_OK : DMXP_E_TIMEOUT;
    }
}

/* Sleeps on the channel's not_empty futex until a message is published at head, for at most
 * timeout_ns (DMXP_FOREVER: no deadline). DMXP_OK or DMXP_E_TIMEOUT. While the head position
 * stays claimed-unpublished for DMXP_STUCK_GRACE_NS it runs dmxp_channel_recover (§11.6). */
static inline dmxp_status dmxp_wait_message(const dmxp_channel *ch, int64_t timeout_ns) {
    return dmxp__wait_until(ch, 0, timeout_ns);
}

/* Sleeps on the channel's not_full futex until the slot at tail is free, repairing a slot
 * claimed and never freed by a dead consumer (§11.6) like dmxp_wait_message. */
static inline dmxp_status dmxp_wait_free_slot(const dmxp_channel *ch, int64_t timeout_ns) {
    return dmxp__wait_until(ch, 1, timeout_ns);
}

/* dmxp_try_recv, sleeping while the channel is empty, for at most timeout_ns (DMXP_FOREVER:
 * no deadline). DMXP_E_TIMEOUT when nothing arrived in time. A position left unpublished by a
 * dead producer is repaired after DMXP_STUCK_GRACE_NS and then received as DMXP_E_LOST. A
 * head position claimed and not yet published with a message queued behind it (§6.2) is
 * waited for like an empty ring, within the caller's deadline: DMXP_E_TIMEOUT if it is still
 * unpublished then (only the non-blocking calls wait for it on their own). */
static inline dmxp_status dmxp_recv_timeout(const dmxp_channel *ch, void *buf, size_t cap,
                                            dmxp_meta *meta, size_t *len, int64_t timeout_ns) {
    /* The common case first (dmxp__recv_fast), before the deadline's clock read. */
    dmxp_meta local;
    if (len) *len = 0;
    if (cap && buf == NULL) return DMXP_E_INVALID_ARGUMENT;
    dmxp_status first = dmxp__recv_fast(ch, buf, cap, meta ? meta : &local, len);
    if (first != DMXP__SLOW && first != DMXP__NOTHING && first != DMXP_E_EMPTY) return first;
    int64_t deadline = dmxp__deadline(timeout_ns);
    dmxp__stuck stuck = {0, 0, 0, 0, 0, 0};
    for (;;) {
        /* A pending head is slept on like an empty one, on the same word. */
        dmxp_status s = dmxp__recv_once(ch, buf, cap, meta, len, NULL, 0);
        if (s != DMXP_E_EMPTY && s != DMXP__PENDING) return s;
        int64_t until = dmxp__stuck_step(ch, 0, &stuck, deadline);
        dmxp__wait_once(ch, dmxp__ready_message, 1, &ch->entry->not_empty_seq,
                        &ch->entry->not_empty_waiters, ch->recv_peer, DMXP_WAITING_NOT_EMPTY,
                        until);
        if ((int64_t)dmxp_now_ns() >= deadline) {
            s = dmxp__recv_once(ch, buf, cap, meta, len, NULL, 0);
            return s == DMXP_E_EMPTY || s == DMXP__PENDING ? DMXP_E_TIMEOUT : s;
        }
    }
}

/* dmxp_try_send, sleeping while the channel is full, for at most timeout_ns: a message longer
 * than 960 bytes waits until all the slots of its run are free. A slot left claimed by a dead
 * consumer is repaired after DMXP_STUCK_GRACE_NS. */
static inline dmxp_status dmxp_send_timeout(const dmxp_channel *ch, const void *data,
                                            size_t len, const dmxp_send_opts *opts,
                                            uint64_t *message_id, int64_t timeout_ns) {
    /* The first attempt before the deadline's clock read: a send that finds room needs none. */
    dmxp_status s = dmxp__send_once(ch, data, len, opts, message_id);
    if (s != DMXP_E_FULL) return s;
    int64_t deadline = dmxp__deadline(timeout_ns);
    dmxp__stuck stuck = {0, 0, 0, 0, 0, 0};
    for (int first = 1;; first = 0) {
        if (!first) s = dmxp__send_again(ch, data, len, opts, message_id);
        if (s != DMXP_E_FULL) return s;
        uint64_t need = dmxp__slots_for(len); /* len <= the limit: FULL is never TOO_LARGE */
        int64_t until = dmxp__stuck_step(ch, (int)need, &stuck, deadline);
        dmxp__wait_once(ch, dmxp__ready_free, need, &ch->entry->not_full_seq,
                        &ch->entry->not_full_waiters, ch->send_peer, DMXP_WAITING_NOT_FULL,
                        until);
        if ((int64_t)dmxp_now_ns() >= deadline) {
            s = dmxp__send_again(ch, data, len, opts, message_id);
            return s == DMXP_E_FULL ? DMXP_E_TIMEOUT : s;
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The blob pool (PROTOCOL.md §13): zero-copy payloads of any size                            */
/* ------------------------------------------------------------------------------------------ */

/* A segment made with a blob pool (dmxp_segment_create_shm_pool, _open_or_create_shm_pool,
 * the _path variants, dmxp_segment_format_memory_pool) has up to DMXP_MAX_BLOB_CLASSES size
 * classes of fixed-size blocks. A producer loans a block, writes its payload into it in place
 * and commits it: the ring carries a 16-byte reference (one slot, whatever the size). A
 * consumer receives the block in place, reads it where it lies, and releases it.
 *
 *     static const dmxp_blob_class classes[] = {{65536, 32}, {1048576, 8}, {4194304, 6}};
 *     dmxp_segment_open_or_create_shm_pool(&seg, "/dmxp_alloc", DMXP_DEFAULT_SEGMENT_SIZE,
 *                                          5000, NULL, classes, 3, NULL, &err);
 *     dmxp_channel_opts opts = {0};
 *     opts.blobs = 1;
 *     dmxp_channel_open_or_create_ex(&seg, 0, 1024, &opts, 5000, &tx, NULL, &err);
 *     dmxp_channel_register(&tx, DMXP_ROLE_PRODUCER, &err);  // a loan needs a record
 *     dmxp_loan loan;
 *     dmxp_blob_loan_timeout(&tx, len, &loan, DMXP_FOREVER);  // waits for a free block
 *     dmxp_loan_write(&loan, 0, bytes, len);                  // 8-byte atomic words
 *     dmxp_blob_commit_timeout(&loan, len, NULL, &id, DMXP_FOREVER);
 *     ...
 *     dmxp_blob_view view;                                     // rx registered as a consumer
 *     if (dmxp_blob_receive_timeout(&rx, &view, DMXP_FOREVER) == DMXP_OK) {
 *         dmxp_blob_read(&view, 0, out, view.len);             // or read in pieces, in place
 *         if (dmxp_blob_release(&view) == DMXP_E_REVOKED) { ... do not trust `out` ... }
 *     }
 *
 * - Owners. A block belongs to one party at a time, named in its tag: the producer's peer
 *   record while loaned, the message while queued, the consumer's record while held. So loans
 *   and in-place receives need a handle registered (dmxp_channel_register) by this process for
 *   that role: DMXP_E_NOT_REGISTERED otherwise. Each change of owner is one CAS of the tag.
 * - Sizes. A loan takes a block of the smallest class that fits (then larger ones); longer
 *   than the largest block (dmxp_channel_blob_max) is DMXP_E_TOO_LARGE, nothing tried. Every
 *   fitting block taken is DMXP_E_POOL_EXHAUSTED (after one dmxp_blob_reclaim, at most every
 *   DMXP_BLOB_RECLAIM_PAUSE_NS per handle); dmxp_blob_loan_timeout waits on the pool's
 *   free_seq futex word, in slices, for a release.
 * - Inline messages (and runs) travel on a BLOBS channel as on any other. dmxp_blob_receive
 *   takes blobs only: at an inline message it returns DMXP_E_NOT_A_BLOB, consuming nothing
 *   (receive that one with dmxp_try_recv). The copying receives (dmxp_try_recv,
 *   dmxp_recv_timeout, the batches) take blobs too: they copy the block's bytes out and free
 *   it (DMXP_E_BUFFER_TOO_SMALL, nothing consumed, when the buffer is shorter, judged by the
 *   reference's length before the claim: meta->payload_len says how long); a batch stops
 *   before a blob, and one that starts with a blob delivers it alone, copied into memory
 *   malloc'd for the call. A copying receive needs no registration (its claim on the slot
 *   keeps the block queued while it copies). Meta of a blob: payload_len = the blob's length,
 *   flags with DMXP_FLAG_BLOB.
 * - Bad references. A reference that names no block of the validated geometry, a length past
 *   its block, or a block whose tag or header does not say "queued for this message" (stale:
 *   another generation; forged) is consumed and reported DMXP_E_CORRUPT_MESSAGE (batches count
 *   it in `corrupt`), counted in dmxp_channel_blob_bad_refs, and its block left alone. Every
 *   offset, length and generation read from the segment is checked against the geometry
 *   cached at attach before any access; every loop is bounded (a loan tries each block of a
 *   class once, a reclaim scans each block once).
 * - Crash recovery (§13.6). Whoever frees the record of a dead peer (a repair pass, the sweep
 *   of every registration and of dmxp_free_dead_records) first gives back the blocks it owned
 *   (dmxp_recover_report.blocks_reclaimed). dmxp_blob_reclaim also frees the blocks of records
 *   that are free (a peer that exited without closing) and queued blocks whose message left
 *   its ring (a producer that died between queuing and publishing, a consumer that died
 *   before taking it). dmxp_channel_close gives back what the handle still owns.
 * - Revocation (§11.7, §13.6). A producer or consumer judged dead (wrongly) finds its tag
 *   changed: its commit publishes a SKIP marker and returns DMXP_E_REVOKED, its release
 *   returns DMXP_E_REVOKED (what it read may have been overwritten by the block's next owner).
 * - A waiting loan counts itself in the pool's free_waiters but cannot name that count in its
 *   peer record (§11.9 has no kind for it): a loan killed while it waits leaves the count one
 *   too high, which costs later releases a futex_wake each, nothing else. */

/* The pool of a channel that carries blobs (DMXP_CHANNEL_BLOBS), as validated at attach, or
 * NULL. */
static inline const dmxp_blob_pool_geometry *dmxp_channel_blob_pool(const dmxp_channel *ch) {
    if (ch == NULL || (ch->channel_flags & DMXP_CHANNEL_BLOBS) == 0 || ch->pool.class_count == 0)
        return NULL;
    return &ch->pool;
}

/* The longest blob a loan on this channel can hold: its pool's largest block size; 0 on a
 * channel that carries no blobs. */
static inline uint64_t dmxp_channel_blob_max(const dmxp_channel *ch) {
    const dmxp_blob_pool_geometry *pool = dmxp_channel_blob_pool(ch);
    return pool ? pool->classes[pool->class_count - 1].block_size : 0;
}

/* Blob references this handle's receives found bad, stale or forged (§13.5), consumed and
 * dropped as DMXP_E_CORRUPT_MESSAGE. */
static inline uint64_t dmxp_channel_blob_bad_refs(const dmxp_channel *ch) {
    return dmxp__load(&ch->bad_refs, DMXP__RLX);
}

/* Counts of one class's blocks by state (a snapshot, for tools and tests). */
typedef struct dmxp_blob_class_stats {
    uint64_t block_size;
    uint32_t block_count;
    uint32_t free;
    uint32_t loaned;
    uint32_t queued;
    uint32_t held;
    uint32_t invalid; /* a state byte that is none of the four (a scribbled tag) */
} dmxp_blob_class_stats;

/* Counts of a pool's blocks (dmxp_segment_blob_stats, dmxp_channel_blob_stats). */
typedef struct dmxp_blob_stats {
    uint32_t class_count; /* 0: no pool */
    uint32_t reserved;
    uint64_t free;        /* FREE blocks of every class */
    uint64_t used;        /* the others */
    dmxp_blob_class_stats classes[DMXP_MAX_BLOB_CLASSES];
} dmxp_blob_stats;

static inline void dmxp__blob_stats(unsigned char *base, const dmxp_blob_pool_geometry *pool,
                                    dmxp_blob_stats *out) {
    memset(out, 0, sizeof *out);
    out->class_count = pool->class_count;
    for (uint32_t c = 0; c < pool->class_count; c++) {
        dmxp_blob_class_stats *st = &out->classes[c];
        st->block_size = pool->classes[c].block_size;
        st->block_count = pool->classes[c].block_count;
        dmxp_block_header *h = dmxp__block_header(base, pool, c, 0);
        for (uint32_t j = 0; j < st->block_count; j++) {
            switch (dmxp__tag_state(dmxp__load(&h[j].tag, DMXP__RLX))) {
            case DMXP_BLOCK_FREE: st->free++; break;
            case DMXP_BLOCK_LOANED: st->loaned++; break;
            case DMXP_BLOCK_QUEUED: st->queued++; break;
            case DMXP_BLOCK_HELD: st->held++; break;
            default: st->invalid++; break;
            }
        }
        out->free += st->free;
        out->used += (uint64_t)st->block_count - st->free;
    }
}

/* Counts the segment's blocks by state, class by class (one relaxed pass: a snapshot).
 * out->class_count is 0 for a segment without a pool. DMXP_E_INVALID_ARGUMENT for NULLs. */
static inline dmxp_status dmxp_segment_blob_stats(const dmxp_segment *seg, dmxp_blob_stats *out) {
    if (seg == NULL || seg->base == NULL || out == NULL) return DMXP_E_INVALID_ARGUMENT;
    dmxp__blob_stats(seg->base, &seg->pool, out);
    return DMXP_OK;
}

/* dmxp_segment_blob_stats through a channel handle (the segment's pool, whatever the
 * channel's flags). */
static inline dmxp_status dmxp_channel_blob_stats(const dmxp_channel *ch, dmxp_blob_stats *out) {
    if (ch == NULL || ch->base == NULL || out == NULL) return DMXP_E_INVALID_ARGUMENT;
    dmxp__blob_stats(ch->base, &ch->pool, out);
    return DMXP_OK;
}

/* What dmxp_blob_reclaim did. */
typedef struct dmxp_blob_reclaim_report {
    uint32_t records_freed;   /* dead idle records freed by its sweep (§11.10) */
    uint32_t liveness_checks; /* records whose owner's liveness the sweep judged */
    uint64_t dead_owners;     /* rule 1: blocks those records owned */
    uint64_t leaked;          /* rule 2: LOANED or HELD blocks whose owner record is free (or
                                 names no record of the table) */
    uint64_t queued;          /* rule 3: QUEUED blocks whose message has left its ring */
} dmxp_blob_reclaim_report;

/* The geometry of channel `id` as a reclaim pass checks it (once per channel and pass). */
typedef struct dmxp__reclaim_channel {
    uint32_t state; /* 0 not looked at, 1 valid, 2 not created or invalid */
    uint64_t capacity;
    uint64_t band;
} dmxp__reclaim_channel;

/* Frees the blob-pool blocks nobody will free (PROTOCOL.md §13.6), in one bounded pass over
 * the pool after a sweep: the sweep (dmxp_free_dead_records, §11.10) frees the dead peers'
 * idle records and, with each, the blocks it owned (rule 1); then rule 2 frees every LOANED or
 * HELD block whose owner record is free (its tag loaded with acquire before the record's pid,
 * so a registration that came after the tag was read is not taken for the owner), and rule 3
 * every QUEUED block whose header names a position of a channel (opened and validated as
 * dmxp_channel_open does, once per channel) that has been freed since: its slot's sequence
 * (acquire) has reached position + capacity, so whoever took the block would have moved its
 * tag first. Each block is freed by a CAS from the tag read, so a block that moved on is left
 * alone; producers waiting for a block are woken. A loan runs it when it finds the pool
 * exhausted (at most every DMXP_BLOB_RECLAIM_PAUSE_NS per handle); tools may run it at any
 * time. Any handle of the segment will do (the pool is the segment's). DMXP_OK (also without a
 * pool: nothing to do); DMXP_E_INVALID_ARGUMENT for a NULL handle. A corrupt peer table
 * (DMXP_E_PEER_TABLE_OUT_OF_RANGE, ...) skips rules 1 and 2, not rule 3. `report` is
 * optional. */
static inline dmxp_status dmxp_blob_reclaim(const dmxp_channel *ch,
                                            dmxp_blob_reclaim_report *report) {
    dmxp_blob_reclaim_report local;
    if (report == NULL) report = &local;
    memset(report, 0, sizeof *report);
    if (ch == NULL || ch->base == NULL) return DMXP_E_INVALID_ARGUMENT;
    const dmxp_blob_pool_geometry *pool = &ch->pool;
    if (pool->class_count == 0) return DMXP_OK;
    dmxp_recover_report swept;
    int table_ok = dmxp_free_dead_records(ch, &swept) == DMXP_OK;
    report->records_freed = swept.records_freed;
    report->liveness_checks = swept.liveness_checks;
    report->dead_owners = swept.blocks_reclaimed;
    dmxp_peer_record *table = NULL;
    if (table_ok) table_ok = dmxp__peer_table(ch, 0, &table, NULL) == DMXP_OK;
    /* The segment as the handle validated it, to open the channels rule 3 names. */
    dmxp_segment seg;
    memset(&seg, 0, sizeof seg);
    seg.base = ch->base;
    seg.len = ch->segment_len;
    seg.mapped_len = (size_t)ch->segment_len;
    seg.peer_records = ch->peer_records;
    seg.pool = ch->pool;
    dmxp__reclaim_channel channels[DMXP_MAX_CHANNELS];
    memset(channels, 0, sizeof channels);
    for (uint32_t c = 0; c < pool->class_count; c++) {
        dmxp_block_header *h = dmxp__block_header(ch->base, pool, c, 0);
        for (uint32_t j = 0; j < pool->classes[c].block_count; j++) {
            uint64_t t = dmxp__load(&h[j].tag, DMXP__ACQ); /* first: rules 2 and 3 */
            uint32_t st = dmxp__tag_state(t);
            int gone = 0;
            if (st == DMXP_BLOCK_LOANED || st == DMXP_BLOCK_HELD) {
                if (!table_ok) continue;
                uint32_t o = dmxp__tag_owner(t);
                /* An owner of no record (0, past the table, or no table yet) is a scribble: no
                 * honest peer owns the block. */
                gone = o == 0 || table == NULL || o - 1 >= ch->peer_records ||
                       dmxp__load(&table[o - 1].pid, DMXP__ACQ) == 0;
            } else if (st == DMXP_BLOCK_QUEUED) {
                uint32_t id = dmxp__load(&h[j].channel_id, DMXP__RLX);
                uint64_t p = dmxp__load(&h[j].position, DMXP__RLX);
                if (id >= DMXP_MAX_CHANNELS) {
                    gone = 1; /* a scribbled channel id: nothing can take the block */
                } else {
                    dmxp__reclaim_channel *rc = &channels[id];
                    if (rc->state == 0) {
                        uint32_t flags, limit;
                        rc->state = 2;
                        if (dmxp__geometry(&seg, id, &rc->capacity, &rc->band, NULL, NULL) ==
                                DMXP_OK &&
                            rc->capacity != 0 &&
                            dmxp__check_overlap(&seg, id, rc->capacity, rc->band, NULL) ==
                                DMXP_OK &&
                            dmxp__check_runs(&seg, id, rc->capacity, &flags, &limit, NULL) ==
                                DMXP_OK)
                            rc->state = 1;
                    }
                    if (rc->state == 1) {
                        dmxp_slot *slots = (dmxp_slot *)(void *)(ch->base + rc->band);
                        uint64_t seq =
                            dmxp__load(&slots[p & (rc->capacity - 1)].sequence, DMXP__ACQ);
                        gone = dmxp__diff(seq, p + rc->capacity) >= 0;
                    }
                }
            }
            if (gone && dmxp__cas_strong(&h[j].tag, &t,
                                         dmxp__tag(DMXP_BLOCK_FREE, 0, dmxp__tag_generation(t)),
                                         DMXP__ACQREL, DMXP__RLX)) {
                if (st == DMXP_BLOCK_QUEUED)
                    report->queued++;
                else
                    report->leaked++;
            }
        }
    }
    if (report->leaked + report->queued != 0) dmxp__notify_block_freed(ch->base, pool);
    return DMXP_OK;
}

/* The owner a blob call of this handle acts as: its record for `rec` (the producer's for a
 * loan, the consumer's for a receive), which this process must hold. */
static inline dmxp_status dmxp__blob_owner(const dmxp_channel *ch, dmxp_peer_record *rec,
                                           uint32_t index, uint32_t *owner, uint32_t *pid) {
    if ((ch->channel_flags & DMXP_CHANNEL_BLOBS) == 0 || ch->pool.class_count == 0)
        return DMXP_E_NOT_A_BLOB_CHANNEL;
    if (rec == NULL) return DMXP_E_NOT_REGISTERED;
    uint32_t me = (uint32_t)getpid(); /* not the handle's pid: this may be a forked child */
    if (dmxp__load(&rec->pid, DMXP__RLX) != me) return DMXP_E_NOT_REGISTERED;
    *owner = index + 1;
    *pid = me;
    return DMXP_OK;
}

/* §13.3 loan(len): the classes from the smallest that fits, each from a rotating hint
 * (fetch_add on next_hint), each block tried once: a FREE tag is CASed to (LOANED, owner,
 * generation + 1). DMXP_OK with *loan filled, or DMXP_E_POOL_EXHAUSTED. */
static inline dmxp_status dmxp__loan_once(const dmxp_channel *ch, size_t len, uint32_t owner,
                                          uint32_t pid, dmxp_loan *loan) {
    const dmxp_blob_pool_geometry *pool = &ch->pool;
    for (uint32_t c = 0; c < pool->class_count; c++) {
        const dmxp_blob_class_geometry *g = &pool->classes[c];
        if (g->block_size < (uint64_t)len) continue;
        uint32_t count = g->block_count; /* 1..2^24 */
        uint32_t start =
            dmxp__fetch_add(&dmxp__pool_class(ch->base, pool, c)->next_hint, 1, DMXP__RLX) % count;
        dmxp_block_header *h = dmxp__block_header(ch->base, pool, c, 0);
        for (uint32_t i = 0; i < count; i++) {
            uint32_t j = start + i < count ? start + i : start + i - count;
            uint64_t t = dmxp__load(&h[j].tag, DMXP__ACQ);
            if (dmxp__tag_state(t) != DMXP_BLOCK_FREE) continue;
            uint32_t generation = dmxp__tag_generation(t) + 1; /* wraps */
            if (!dmxp__cas_strong(&h[j].tag, &t, dmxp__tag(DMXP_BLOCK_LOANED, owner, generation),
                                  DMXP__ACQREL, DMXP__RLX))
                continue;
            dmxp__store(&h[j].owner_pid, pid, DMXP__RLX);
            dmxp__store(&h[j].length, (uint32_t)len, DMXP__RLX);
            loan->words = dmxp__block_words(ch->base, pool, c, j);
            loan->data = (unsigned char *)(void *)loan->words;
            loan->len = len;
            loan->block_size = (size_t)g->block_size;
            loan->ref.class_index = (uint8_t)c;
            loan->ref.block = j;
            loan->ref.generation = generation;
            loan->ref.length = (uint32_t)len;
            loan->channel = ch;
            loan->header = &h[j];
            loan->owner = owner;
            loan->live = 1;
            return DMXP_OK;
        }
    }
    return DMXP_E_POOL_EXHAUSTED;
}

/* An exhausted loan's reclaim: dmxp_blob_reclaim, unless this handle ran one less than
 * DMXP_BLOB_RECLAIM_PAUSE_NS ago. 1 when it freed a block (try the loan again). */
static inline int dmxp__loan_reclaim(const dmxp_channel *ch) {
    int64_t now = (int64_t)dmxp_now_ns();
    if (now == 0) now = 1; /* 0 means "never" */
    int64_t last = dmxp__load(&ch->reclaim_ns, DMXP__RLX);
    if (last != 0 && now - last < DMXP_BLOB_RECLAIM_PAUSE_NS) return 0;
    dmxp__store(&dmxp__mut(ch)->reclaim_ns, now, DMXP__RLX);
    dmxp_blob_reclaim_report rep;
    if (dmxp_blob_reclaim(ch, &rep) != DMXP_OK) return 0;
    return rep.dead_owners + rep.leaked + rep.queued != 0;
}

/* The checks of a loan: a producer handle of a BLOBS channel registered by this process, a
 * length that fits the largest block. */
static inline dmxp_status dmxp__loan_prepare(const dmxp_channel *ch, size_t len,
                                             dmxp_loan *loan, uint32_t *owner, uint32_t *pid) {
    if (loan == NULL) return DMXP_E_INVALID_ARGUMENT;
    memset(loan, 0, sizeof *loan);
    if (ch == NULL || ch->base == NULL) return DMXP_E_INVALID_ARGUMENT;
    dmxp_status s = dmxp__blob_owner(ch, ch->send_peer, ch->send_index, owner, pid);
    if (s != DMXP_OK) return s;
    if ((uint64_t)len > dmxp_channel_blob_max(ch)) return DMXP_E_TOO_LARGE;
    return DMXP_OK;
}

/* Loans a block of at least `len` bytes from the segment's blob pool (PROTOCOL.md §13.3), to
 * be written in place (dmxp_loan_write, or through loan->data as dmxp_loan explains) and sent
 * with dmxp_blob_commit, or given back with dmxp_blob_abandon. Non-blocking. The block is the
 * first free one of the smallest class that fits (then of the larger classes); it is owned by
 * the handle's producer record, so that a crash mid-loan can be reclaimed (§13.6). Returns:
 *  DMXP_OK                    *loan filled (loan->len = len, loan->data its bytes);
 *  DMXP_E_TOO_LARGE           len exceeds the largest block (dmxp_channel_blob_max): nothing
 *                             tried;
 *  DMXP_E_POOL_EXHAUSTED      every block that could hold it is taken, also after one
 *                             dmxp_blob_reclaim (run at most every DMXP_BLOB_RECLAIM_PAUSE_NS
 *                             per handle);
 *  DMXP_E_NOT_A_BLOB_CHANNEL  the channel has no DMXP_CHANNEL_BLOBS;
 *  DMXP_E_NOT_REGISTERED      the handle is not registered as a producer by this process
 *                             (dmxp_channel_register; a forked child registers its own);
 *  DMXP_E_INVALID_ARGUMENT    a NULL pointer.
 * *loan is zeroed (not live) on every failure. A registered handle is used by one thread at a
 * time, and so are its loans; a handle may hold several loans at once. */
static inline dmxp_status dmxp_blob_loan(const dmxp_channel *ch, size_t len, dmxp_loan *loan) {
    uint32_t owner = 0, pid = 0;
    dmxp_status s = dmxp__loan_prepare(ch, len, loan, &owner, &pid);
    if (s != DMXP_OK) return s;
    s = dmxp__loan_once(ch, len, owner, pid, loan);
    if (s == DMXP_E_POOL_EXHAUSTED && dmxp__loan_reclaim(ch))
        s = dmxp__loan_once(ch, len, owner, pid, loan);
    return s;
}

/* dmxp_blob_loan, waiting while the pool is exhausted for at most timeout_ns (DMXP_FOREVER:
 * no deadline): on the pool's free_seq futex word (counted in free_waiters, §7.2), which every
 * release and abandon bumps when somebody waits, in slices of at most DMXP_WAIT_SLICE_NS, the
 * loan tried again after each wake-up or slice, and dmxp_blob_reclaim run again at most every
 * DMXP_BLOB_RECLAIM_PAUSE_NS (a consumer that died holding blocks is reclaimed so).
 * DMXP_E_TIMEOUT when no block came free in time; the other results as dmxp_blob_loan. */
static inline dmxp_status dmxp_blob_loan_timeout(const dmxp_channel *ch, size_t len,
                                                 dmxp_loan *loan, int64_t timeout_ns) {
    dmxp_status s = dmxp_blob_loan(ch, len, loan);
    if (s != DMXP_E_POOL_EXHAUSTED) return s;
    uint32_t owner = 0, pid = 0;
    s = dmxp__loan_prepare(ch, len, loan, &owner, &pid);
    if (s != DMXP_OK) return s;
    int64_t deadline = dmxp__deadline(timeout_ns);
    dmxp_blob_pool_header *ph = dmxp__pool_header(ch->base, &ch->pool);
    for (;;) {
        /* §7.2 wait_until: register, read the word, fence, re-check (the loan itself). */
        dmxp__fetch_add(&ph->free_waiters, 1, DMXP__SEQ);
        uint32_t v = dmxp__load(&ph->free_seq, DMXP__SEQ);
#if !defined(DMXP__TSAN)
        dmxp__fence(DMXP__SEQ);
#endif
        s = dmxp__loan_once(ch, len, owner, pid, loan);
        if (s == DMXP_E_POOL_EXHAUSTED) {
            int64_t left = deadline - (int64_t)dmxp_now_ns();
            if (left > DMXP_WAIT_SLICE_NS) left = DMXP_WAIT_SLICE_NS;
            if (left > 0) (void)dmxp__futex_wait(&ph->free_seq, v, left);
        }
        dmxp__fetch_sub(&ph->free_waiters, 1, DMXP__SEQ);
        if (s != DMXP_E_POOL_EXHAUSTED) return s;
        if (dmxp__loan_reclaim(ch)) continue;
        if ((int64_t)dmxp_now_ns() >= deadline) {
            s = dmxp__loan_once(ch, len, owner, pid, loan);
            return s == DMXP_E_POOL_EXHAUSTED ? DMXP_E_TIMEOUT : s;
        }
    }
}

/* Writes n bytes of src at byte `offset` of a live loan, as 8-byte relaxed atomic words (a
 * partial word at either end is merged with the bytes around it). DMXP_E_INVALID_ARGUMENT (and
 * nothing written) when the loan is not live or offset + n runs past loan->len. */
static inline dmxp_status dmxp_loan_write(dmxp_loan *loan, size_t offset, const void *src,
                                          size_t n) {
    if (loan == NULL || !loan->live || offset > loan->len || n > loan->len - offset ||
        (n && src == NULL))
        return DMXP_E_INVALID_ARGUMENT;
    dmxp__words_write(loan->words, offset, (const unsigned char *)src, n);
    return DMXP_OK;
}

/* Reads n bytes at byte `offset` of a live loan back into dst (as dmxp_loan_write). */
static inline dmxp_status dmxp_loan_read(const dmxp_loan *loan, size_t offset, void *dst,
                                         size_t n) {
    if (loan == NULL || !loan->live || offset > loan->len || n > loan->len - offset ||
        (n && dst == NULL))
        return DMXP_E_INVALID_ARGUMENT;
    dmxp__words_read(loan->words, offset, (unsigned char *)dst, n);
    return DMXP_OK;
}

/* Stores little-endian word `index` (bytes 8 x index .. + 8) of a live loan with one relaxed
 * atomic store: index < ceil(loan->len / 8), else DMXP_E_INVALID_ARGUMENT. The bytes of the
 * last word past loan->len are the block's (a commit of len bytes zeroes those past len). */
static inline dmxp_status dmxp_loan_store_word(dmxp_loan *loan, size_t index, uint64_t value) {
    if (loan == NULL || !loan->live || index >= (loan->len + 7) / 8)
        return DMXP_E_INVALID_ARGUMENT;
    dmxp__store(&loan->words[index], value, DMXP__RLX);
    return DMXP_OK;
}

/* Gives a live loan back to the pool unsent (§13.3 abandon: a CAS (LOANED, owner, g) -> (FREE,
 * 0, g), then a wake of producers waiting for a block). The loan is spent either way.
 * DMXP_OK, or DMXP_E_REVOKED when the block had been reclaimed (this producer was judged dead,
 * §13.6; counted in dmxp_channel_revoked); DMXP_E_INVALID_ARGUMENT when not live. */
static inline dmxp_status dmxp_blob_abandon(dmxp_loan *loan) {
    if (loan == NULL || !loan->live) return DMXP_E_INVALID_ARGUMENT;
    const dmxp_channel *ch = loan->channel;
    loan->live = 0;
    loan->data = NULL;
    uint64_t expected = dmxp__tag(DMXP_BLOCK_LOANED, loan->owner, loan->ref.generation);
    if (!dmxp__cas_strong(&loan->header->tag, &expected,
                          dmxp__tag(DMXP_BLOCK_FREE, 0, loan->ref.generation), DMXP__REL,
                          DMXP__RLX))
        return dmxp__revoked(ch);
    dmxp__notify_block_freed(ch->base, &ch->pool);
    return DMXP_OK;
}

/* §13.4 send_blob, once: claim one position (intent and CAS on tail, as a send), name it in the
 * block header, hand the block to the ring (CAS LOANED -> QUEUED, release), publish the
 * 16-byte reference with DMXP_FLAG_BLOB. FULL and BUSY leave the loan live. */
static inline dmxp_status dmxp__commit_once(dmxp_loan *loan, size_t len, uint32_t type,
                                            uint16_t flags, uint64_t *message_id) {
    const dmxp_channel *ch = loan->channel;
    uint64_t pos, n;
    dmxp_slot *slot;
    dmxp_status s = dmxp__claim_send_at(ch, 1, &pos, &n, &slot);
    if (s != DMXP_OK) return s;
    if (message_id) *message_id = pos;
    loan->live = 0;
    loan->data = NULL;
    dmxp_block_header *h = loan->header;
    uint32_t g = loan->ref.generation;
    /* The header names the position before the ring gets the block (§13.6 rule 3). */
    dmxp__store(&h->channel_id, ch->id, DMXP__RLX);
    dmxp__store(&h->position, pos, DMXP__RLX);
    dmxp__store(&h->length, (uint32_t)len, DMXP__RLX);
    uint64_t expected = dmxp__tag(DMXP_BLOCK_LOANED, loan->owner, g);
    if (!dmxp__cas_strong(&h->tag, &expected, dmxp__tag(DMXP_BLOCK_QUEUED, 0, g), DMXP__REL,
                          DMXP__RLX)) {
        /* The loan was reclaimed (this producer was judged dead): give the position up. */
        (void)dmxp__marker(ch, pos, (uint16_t)DMXP_FLAG_SKIP, 0, 0);
        dmxp__intent_clear(ch->send_peer);
        dmxp__notify_consumers(ch);
        return dmxp__revoked(ch);
    }
    unsigned char ref[DMXP_BLOB_REF_LEN];
    dmxp__put8(ref, (uint64_t)loan->ref.class_index | (uint64_t)loan->ref.block << 32);
    dmxp__put8(ref + 8, (uint64_t)g | (uint64_t)(uint32_t)len << 32);
    s = dmxp__publish_at(ch, slot, pos, ref, DMXP_BLOB_REF_LEN, DMXP_BLOB_REF_LEN, type,
                         (uint16_t)(flags | DMXP_FLAG_BLOB), dmxp__stamp(ch), pos, 0, 0);
    dmxp__intent_clear(ch->send_peer); /* after the publish (or its failed CAS) */
    /* Revoked: the position was tombstoned; the QUEUED block is reclaimed once it is freed. */
    if (s == DMXP_OK) dmxp__notify_consumers(ch);
    return s;
}

/* The checks of a commit, before anything is claimed; and the zero padding of the last word
 * after `len` (as a slot's send pads its payload, §8). */
static inline dmxp_status dmxp__commit_prepare(dmxp_loan *loan, size_t len,
                                               const dmxp_send_opts *opts) {
    if (loan == NULL || !loan->live) return DMXP_E_INVALID_ARGUMENT;
    if (len > loan->len) return DMXP_E_TOO_LARGE;
    if (opts && (opts->flags & DMXP_FLAGS_PROTOCOL_MASK)) return DMXP_E_RESERVED_FLAGS;
    if (len % 8 != 0) {
        static const unsigned char zeros[8] = {0};
        dmxp__words_write(loan->words, len, zeros, 8 - len % 8); /* inside the block */
    }
    return DMXP_OK;
}

/* Sends the first `len` bytes (at most loan->len) of a live loan as one message on the loan's
 * channel (PROTOCOL.md §13.4): claims a position, names it in the block header, hands the
 * block to the ring and publishes the 16-byte reference (flags: opts->flags | DMXP_FLAG_BLOB;
 * message_type from opts). Non-blocking. *message_id (optional) is the position taken. Returns:
 *  DMXP_OK                  sent; the loan is spent (the block is the message's now);
 *  DMXP_E_FULL, DMXP_E_BUSY no position now: the loan stays live (retry, or abandon it);
 *  DMXP_E_REVOKED           the loan was reclaimed before the hand-over (this producer was
 *                           judged dead, §13.6: a SKIP marker takes the position), or the
 *                           position was repaired before the publish (§11.7: the block is
 *                           reclaimed when the position is freed); the loan is spent, counted
 *                           in dmxp_channel_revoked;
 *  DMXP_E_TOO_LARGE         len > loan->len; DMXP_E_RESERVED_FLAGS opts set protocol bits;
 *                           DMXP_E_INVALID_ARGUMENT the loan is not live: nothing done, the
 *                           loan as it was.
 * The rest of the last word after len is zeroed first. After DMXP_MISS_STREAK full rings in a
 * row the stuck watch of dmxp_try_send runs, as for a send. */
static inline dmxp_status dmxp_blob_commit(dmxp_loan *loan, size_t len,
                                           const dmxp_send_opts *opts, uint64_t *message_id) {
    dmxp_status s = dmxp__commit_prepare(loan, len, opts);
    if (s != DMXP_OK) return s;
    const dmxp_channel *ch = loan->channel;
    uint32_t type = opts ? opts->message_type : 0;
    uint16_t flags = opts ? opts->flags : 0;
    s = dmxp__commit_once(loan, len, type, flags, message_id);
    if (s == DMXP_E_FULL && dmxp__miss(ch, 1)) s = dmxp__commit_once(loan, len, type, flags, message_id);
    if (s == DMXP_OK || s == DMXP_E_REVOKED) dmxp__hit(ch, 1);
    return s;
}

/* dmxp_blob_commit, sleeping while the ring is full for at most timeout_ns (DMXP_FOREVER: no
 * deadline), as dmxp_send_timeout does (a slot left claimed by a dead consumer is repaired
 * after DMXP_STUCK_GRACE_NS). DMXP_E_TIMEOUT when no slot came free: the loan stays live. */
static inline dmxp_status dmxp_blob_commit_timeout(dmxp_loan *loan, size_t len,
                                                   const dmxp_send_opts *opts,
                                                   uint64_t *message_id, int64_t timeout_ns) {
    dmxp_status s = dmxp__commit_prepare(loan, len, opts);
    if (s != DMXP_OK) return s;
    const dmxp_channel *ch = loan->channel;
    uint32_t type = opts ? opts->message_type : 0;
    uint16_t flags = opts ? opts->flags : 0;
    s = dmxp__commit_once(loan, len, type, flags, message_id);
    if (s != DMXP_E_FULL) return s;
    int64_t deadline = dmxp__deadline(timeout_ns);
    dmxp__stuck stuck = {0, 0, 0, 0, 0, 0};
    for (;;) {
        int64_t until = dmxp__stuck_step(ch, 1, &stuck, deadline);
        dmxp__wait_once(ch, dmxp__ready_free, 1, &ch->entry->not_full_seq,
                        &ch->entry->not_full_waiters, ch->send_peer, DMXP_WAITING_NOT_FULL,
                        until);
        s = dmxp__commit_once(loan, len, type, flags, message_id);
        if (s != DMXP_E_FULL) return s;
        if ((int64_t)dmxp_now_ns() >= deadline) return DMXP_E_TIMEOUT;
    }
}

/* §13.5 receive_blob for claimed BLOB slot `pos`: the reference checked (dmxp__claimed_ref),
 * the block taken for this consumer (CAS (QUEUED, 0, g) -> (HELD, owner, g)) before the slot is
 * freed; a revoked free gives the block straight back. */
static inline dmxp_status dmxp__finish_blob_take(const dmxp_channel *ch, uint64_t pos,
                                                 uint32_t owner, uint32_t pid,
                                                 dmxp_blob_view *view) {
    dmxp_slot *slot = dmxp__slot(ch, pos);
    uint16_t flags;
    uint32_t plen;
    dmxp__read_meta_as(slot, &view->meta, &flags, &plen);
    dmxp_blob_ref r;
    memset(&r, 0, sizeof r);
    dmxp_block_header *h = NULL;
    uint64_t tag = 0;
    int taken = dmxp__claimed_ref(ch, slot, pos, flags, plen, &r, &h, &tag) &&
                dmxp__cas_strong(&h->tag, &tag, dmxp__tag(DMXP_BLOCK_HELD, owner, r.generation),
                                 DMXP__ACQREL, DMXP__RLX);
    if (taken) dmxp__store(&h->owner_pid, pid, DMXP__RLX);
    int freed = dmxp__free_at(ch, slot, pos);
    dmxp__intent_clear(ch->recv_peer); /* after the free (or its failed CAS) */
    if (!freed) {
        if (taken) { /* the claim was revoked (§13.6): release the block at once */
            uint64_t held = dmxp__tag(DMXP_BLOCK_HELD, owner, r.generation);
            if (dmxp__cas_strong(&h->tag, &held, dmxp__tag(DMXP_BLOCK_FREE, 0, r.generation),
                                 DMXP__REL, DMXP__RLX))
                dmxp__notify_block_freed(ch->base, &ch->pool);
        }
        memset(&view->meta, 0, sizeof view->meta);
        view->meta.message_id = pos;
        return dmxp__revoked(ch);
    }
    dmxp__notify_producers(ch);
    if (!taken) return dmxp__bad_ref(ch, pos, plen, &view->meta);
    view->words = dmxp__block_words(ch->base, &ch->pool, r.class_index, r.block);
    view->data = (const unsigned char *)(void *)view->words;
    view->len = r.length;
    view->meta.payload_len = r.length;
    view->ref = r;
    view->channel = ch;
    view->header = h;
    view->owner = owner;
    view->live = 1;
    return DMXP_OK;
}

/* One blob receive, without the stuck watch (a pending head as in dmxp__recv_once). */
static inline dmxp_status dmxp__blob_recv_once(const dmxp_channel *ch, dmxp_blob_view *view,
                                               uint32_t owner, uint32_t pid,
                                               dmxp__pending *pend, int wait) {
    for (uint32_t i = 0; i < DMXP_RETRY_LIMIT; i++) {
        uint64_t pos = 0, n = 0;
        uint32_t needed = 0, kind = DMXP__CLAIM_SLOTS;
        dmxp_status s = dmxp__claim_recv_settled(ch, 1, SIZE_MAX, &pos, &n, &needed, &kind, pend,
                                                 wait, DMXP__TAKE_BLOB);
        if (s == DMXP_E_NOT_A_BLOB) view->meta.message_id = pos;
        if (s != DMXP_OK) return s;
        if (kind == DMXP__CLAIM_BLOB) return dmxp__finish_blob_take(ch, pos, owner, pid, view);
        if (kind == DMXP__CLAIM_SLOTS) {
            /* A SKIP marker (passed over) or a LOST tombstone; a slot rewritten since the peek
             * into a message is dropped as corrupt (nothing is copied). */
            s = dmxp__finish_recv(ch, pos, NULL, 0, &view->meta, NULL);
            if (s == DMXP_OK) {
                view->meta.message_id = pos;
                s = DMXP_E_CORRUPT_MESSAGE;
            }
        } else if (kind == DMXP__CLAIM_RUN) {
            s = dmxp__finish_run(ch, pos, n, needed, NULL, &view->meta, NULL); /* corrupt */
        } else {
            s = dmxp__finish_alone(ch, pos, kind, needed, &view->meta); /* an orphan: EMPTY */
        }
        if (s != DMXP_E_EMPTY) return s;
    }
    return DMXP_E_BUSY;
}

/* The checks of a blob receive: a consumer handle of a BLOBS channel registered by this
 * process. */
static inline dmxp_status dmxp__blob_recv_prepare(const dmxp_channel *ch, dmxp_blob_view *view,
                                                  uint32_t *owner, uint32_t *pid) {
    if (view == NULL) return DMXP_E_INVALID_ARGUMENT;
    memset(view, 0, sizeof *view);
    if (ch == NULL || ch->base == NULL) return DMXP_E_INVALID_ARGUMENT;
    return dmxp__blob_owner(ch, ch->recv_peer, ch->recv_index, owner, pid);
}

/* Receives the next message in place if it is a blob (PROTOCOL.md §13.5): the block is taken
 * for this consumer (QUEUED -> HELD, owner its record) before the ring slot is freed, so the
 * ring moves on while the block is read, and a handle may hold several blocks at once.
 * Non-blocking. SKIP markers and orphan continuations are passed over. Returns:
 *  DMXP_OK                    *view filled: view->data / view->len the message in the block
 *                             (read it with dmxp_blob_read, see dmxp_blob_view), view->meta
 *                             its metadata (payload_len = len, flags with DMXP_FLAG_BLOB);
 *                             held until dmxp_blob_release;
 *  DMXP_E_NOT_A_BLOB          the message at the head is inline (or a run): nothing consumed,
 *                             view->meta.message_id = its position; take it with dmxp_try_recv
 *                             (which takes blobs too);
 *  DMXP_E_EMPTY               nothing queued (a pending head is waited for as dmxp_try_recv
 *                             does);
 *  DMXP_E_LOST                a LOST tombstone consumed; view->meta.message_id says which;
 *  DMXP_E_CORRUPT_MESSAGE     a bad, stale or forged reference (or a slot that is no message)
 *                             consumed and dropped, its block left alone; view->meta has
 *                             message_id and payload_len; counted in dmxp_channel_blob_bad_refs;
 *  DMXP_E_REVOKED             a peer repaired the position before it was freed (§11.7): the
 *                             block, if taken, is given back; nothing delivered;
 *  DMXP_E_NOT_A_BLOB_CHANNEL, DMXP_E_NOT_REGISTERED (a consumer record of this process is
 *                             needed), DMXP_E_INVALID_ARGUMENT, DMXP_E_BUSY.
 * *view is live only with DMXP_OK. The stuck watch of dmxp_try_recv runs after
 * DMXP_MISS_STREAK empty results in a row. */
static inline dmxp_status dmxp_blob_receive(const dmxp_channel *ch, dmxp_blob_view *view) {
    uint32_t owner = 0, pid = 0;
    dmxp_status s = dmxp__blob_recv_prepare(ch, view, &owner, &pid);
    if (s != DMXP_OK) return s;
    dmxp__pending pend = {0, 0, 0};
    s = dmxp__blob_recv_once(ch, view, owner, pid, &pend, 1);
    if (s == DMXP_E_EMPTY && dmxp__miss(ch, 0))
        s = dmxp__blob_recv_once(ch, view, owner, pid, &pend, 1);
    if (s != DMXP_E_EMPTY && s != DMXP_E_BUSY) dmxp__hit(ch, 0);
    return s;
}

/* dmxp_blob_receive, sleeping while the channel is empty, for at most timeout_ns (DMXP_FOREVER:
 * no deadline), as dmxp_recv_timeout does (a position left unpublished by a dead producer is
 * repaired after DMXP_STUCK_GRACE_NS, then received as DMXP_E_LOST). DMXP_E_TIMEOUT when
 * nothing arrived; DMXP_E_NOT_A_BLOB at once for an inline message at the head. */
static inline dmxp_status dmxp_blob_receive_timeout(const dmxp_channel *ch, dmxp_blob_view *view,
                                                    int64_t timeout_ns) {
    uint32_t owner = 0, pid = 0;
    dmxp_status s = dmxp__blob_recv_prepare(ch, view, &owner, &pid);
    if (s != DMXP_OK) return s;
    int64_t deadline = dmxp__deadline(timeout_ns);
    dmxp__stuck stuck = {0, 0, 0, 0, 0, 0};
    for (;;) {
        s = dmxp__blob_recv_once(ch, view, owner, pid, NULL, 0);
        if (s != DMXP_E_EMPTY && s != DMXP__PENDING) return s;
        int64_t until = dmxp__stuck_step(ch, 0, &stuck, deadline);
        dmxp__wait_once(ch, dmxp__ready_message, 1, &ch->entry->not_empty_seq,
                        &ch->entry->not_empty_waiters, ch->recv_peer, DMXP_WAITING_NOT_EMPTY,
                        until);
        if ((int64_t)dmxp_now_ns() >= deadline) {
            s = dmxp__blob_recv_once(ch, view, owner, pid, NULL, 0);
            return s == DMXP_E_EMPTY || s == DMXP__PENDING ? DMXP_E_TIMEOUT : s;
        }
    }
}

/* Copies n bytes at byte `offset` of a live view into dst, as 8-byte relaxed atomic loads.
 * DMXP_E_INVALID_ARGUMENT (nothing copied) when the view is not live or offset + n runs past
 * view->len. The bytes are garbled, never out of bounds, if a peer writes the block meanwhile:
 * dmxp_blob_release says whether that can have happened (DMXP_E_REVOKED). */
static inline dmxp_status dmxp_blob_read(const dmxp_blob_view *view, size_t offset, void *dst,
                                         size_t n) {
    if (view == NULL || !view->live || offset > view->len || n > view->len - offset ||
        (n && dst == NULL))
        return DMXP_E_INVALID_ARGUMENT;
    dmxp__words_read(view->words, offset, (unsigned char *)dst, n);
    return DMXP_OK;
}

/* Loads little-endian word `index` (bytes 8 x index .. + 8) of a live view into *out with one
 * relaxed atomic load: index < ceil(view->len / 8), else DMXP_E_INVALID_ARGUMENT. The bytes of
 * the last word past view->len are zero from an honest producer (its commit pads them). */
static inline dmxp_status dmxp_blob_load_word(const dmxp_blob_view *view, size_t index,
                                              uint64_t *out) {
    if (view == NULL || !view->live || out == NULL || index >= (view->len + 7) / 8)
        return DMXP_E_INVALID_ARGUMENT;
    *out = dmxp__load(&view->words[index], DMXP__RLX);
    return DMXP_OK;
}

/* Gives a received block back to the pool (§13.3 release: a CAS (HELD, owner, g) -> (FREE, 0,
 * g), then a wake of producers waiting for a block). The view is spent either way. DMXP_OK,
 * or DMXP_E_REVOKED when the block had been reclaimed while held (this consumer was judged
 * dead, §13.6): what was read may have been overwritten, so do not act on it (counted in
 * dmxp_channel_revoked); DMXP_E_INVALID_ARGUMENT when the view is not live. */
static inline dmxp_status dmxp_blob_release(dmxp_blob_view *view) {
    if (view == NULL || !view->live) return DMXP_E_INVALID_ARGUMENT;
    const dmxp_channel *ch = view->channel;
    view->live = 0;
    view->data = NULL;
    uint64_t expected = dmxp__tag(DMXP_BLOCK_HELD, view->owner, view->ref.generation);
    if (!dmxp__cas_strong(&view->header->tag, &expected,
                          dmxp__tag(DMXP_BLOCK_FREE, 0, view->ref.generation), DMXP__REL,
                          DMXP__RLX))
        return dmxp__revoked(ch);
    dmxp__notify_block_freed(ch->base, &ch->pool);
    return DMXP_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Waiting from an event loop (PROTOCOL.md §7.4): a pollable wake-up fd                       */
/* ------------------------------------------------------------------------------------------ */

/* A dmxp_wait_fd is an io_uring that this process owns, on which the wait of a channel handle
 * is submitted as an IORING_OP_FUTEX_WAIT on the channel's wait word: the same word, the same
 * registration and the same wake-ups as a thread blocked in dmxp_recv_timeout, so senders and
 * receivers of every client wake it unchanged (and pay nothing while nobody waits). When the
 * wait completes, the kernel posts a completion on the ring and the ring's fd turns readable:
 * an event loop polls it (epoll, poll, select) like a socket. Linux 6.7 or later; no liburing.
 *
 *     dmxp_wait_fd w;
 *     if (dmxp_wait_fd_open(&w, &err) != DMXP_OK) ...        // poll instead (below)
 *     epoll_ctl(ep, EPOLL_CTL_ADD, dmxp_wait_fd_fd(&w), &ev); // ev.events = EPOLLIN
 *     for (;;) {
 *         while (dmxp_try_recv(&ch, buf, sizeof buf, &meta, &len) == DMXP_OK) use(buf, len);
 *         dmxp_status s = dmxp_channel_arm_message_wait(&ch, &w, &err);
 *         if (s == DMXP_READY) continue;                     // a message came meanwhile
 *         if (s != DMXP_ARMED) ...                           // an error: poll instead
 *         int n = epoll_wait(ep, events, 16, dmxp_wait_fd_timeout_ms(&w)); // EINTR: harmless
 *         dmxp_wait_fd_complete(&w, &err);                   // readable, or the slice ended
 *     }
 *     dmxp_wait_fd_close(&w);                                // before dmxp_segment_close
 *
 * One round (§7.4 async_wait): dmxp_channel_arm_message_wait (dmxp_channel_arm_free_slots_wait
 * for a sender) counts the handle in the channel's not_empty_waiters (not_full_waiters) and
 * names that count in the handle's peer record if it is registered (§11.9), reads the wait
 * word, fences, and re-checks the ring: DMXP_READY if it is ready (the registration is undone
 * then), otherwise it makes sure a futex wait on the word, expecting the value read, is pending
 * on the ring and returns DMXP_ARMED. dmxp_wait_fd_complete ends the round, whether the fd
 * turned readable or the loop gives up (its timeout, a shutdown): it reaps the completions and
 * undoes the registration exactly once (a swap of the record's `waiting` word, as the blocking
 * calls do). A completion, whatever its result (woken, -EAGAIN: the word had moved, -ECANCELED),
 * only means "look at the ring again"; a message is taken only by the receive that starts each
 * round, never by the wait.
 *
 * - At most one futex wait is in flight per wait fd. A wait still pending from an earlier round
 *   on the same word (the round was completed without a wake-up) is reused, not submitted again:
 *   it was queued before the new round's registration, so any wake issued after that reaches
 *   it. Arming on another word (another channel, or the other side) cancels and reaps it first.
 *   Arming again before completing ends the earlier round's registration and starts a new one.
 * - One wait fd per handle and role you wait on at once; a loop over several channels keeps one
 *   wait fd for each (examples/epoll_consumer.c). A registered handle's record names one wait at
 *   a time: do not arm two wait fds on one registered handle and role, nor arm one while a
 *   thread blocks on that handle and role.
 * - Use a wait fd from one thread, the one that polls it: the kernel completes the futex wait
 *   through the thread that submitted it (task work, run when that thread next leaves the
 *   kernel; a thread asleep in epoll_wait or poll is woken for it). epoll_wait may then return
 *   -1 with EINTR: call it again.
 * - Bounded slices (§7.3, §7.4): wait no longer than dmxp_wait_fd_timeout_ms (at most
 *   DMXP_WAIT_SLICE_NS, 100 ms; sooner while the channel looks stuck), then complete the round
 *   and arm again. Each arm runs the stuck watch of the blocking calls (§11.6, §11.8: the repair
 *   of a dead peer from DMXP_STUCK_GRACE_NS on, the unblock after the handle's unblock timeout),
 *   so a waker that died between publishing and waking delays the loop, never strands it.
 * - Close (dmxp_wait_fd_close) cancels and reaps a pending wait and undoes a registration left
 *   armed. Close the wait fd, or complete its round, before dmxp_channel_close of the handle it
 *   waited for and before dmxp_segment_close (the words it waits on are in the mapping).
 * - Fork: a child inherits the parent's ring (the same kernel object). In the child every call
 *   but dmxp_wait_fd_close returns DMXP_E_INVALID_ARGUMENT, and dmxp_wait_fd_close releases the
 *   child's copies (fd, mappings) without touching the parent's ring or registration; open a
 *   wait fd of its own in the child.
 * - Fallback: where dmxp_wait_fd_open fails (DMXP_E_UNSUPPORTED: no io_uring, or a kernel
 *   without IORING_OP_FUTEX_WAIT; or an OS error), or a later call fails, poll instead: re-check
 *   the ring at a bounded interval (1 ms, say) with the non-blocking calls, and do not arm: a
 *   poller counted in a wait count would make every send pay a futex_wake for nobody. Setting
 *   DMXP_ASYNC_POLL=1 in the environment makes dmxp_wait_fd_open fail with DMXP_E_UNSUPPORTED,
 *   as it forces the Rust client's fallback (for tests and filtered systems).
 *
 * The wait fd's fields are its own: use the functions (stats may be read directly). */

/* io_uring, as much of its ABI (<linux/io_uring.h>) as the wait fd needs, under names of its
 * own: the system header may predate IORING_OP_FUTEX_WAIT (Linux 6.7) and names some SQE fields
 * differently from version to version, and it would bring <linux/fs.h> into every unit that
 * includes dmxp.h. The static assertions below check the layout; tests/test_wait_fd.c checks
 * it against <linux/io_uring.h> too. */
#define DMXP__IORING_OP_ASYNC_CANCEL 14u
#define DMXP__IORING_OP_FUTEX_WAIT 51u /* Linux 6.7 */
#define DMXP__IORING_REGISTER_PROBE 8u
#define DMXP__IO_URING_OP_SUPPORTED 1u
#define DMXP__IORING_ENTER_GETEVENTS 1u
#define DMXP__IORING_ENTER_EXT_ARG 8u
#define DMXP__IORING_FEAT_SINGLE_MMAP 1u
#define DMXP__IORING_FEAT_EXT_ARG 0x100u
#define DMXP__IORING_OFF_SQ_RING 0
#define DMXP__IORING_OFF_CQ_RING 0x8000000
#define DMXP__IORING_OFF_SQES 0x10000000
/* futex2 flags of the wait: a 32-bit word, and never FUTEX2_PRIVATE (128), for the reason of
 * §7.3 (a private futex is keyed by this process's address space). */
#define DMXP__FUTEX2_SIZE_U32 0x02u
#define DMXP__FUTEX_BITSET_MATCH_ANY UINT64_C(0xFFFFFFFF)
/* Submission queue entries asked for: one futex wait and one cancel are in flight at most. */
#define DMXP__WAIT_FD_ENTRIES 4u
/* The most entries a ring may report and still be used (the kernel rounds 4 up to 4 / 8). */
#define DMXP__WAIT_FD_MAX_ENTRIES 64u

/* The system call numbers: the same on every architecture (io_uring came after the syscall
 * tables were unified), alpha aside. */
#if defined(__NR_io_uring_setup) && defined(__NR_io_uring_enter) && defined(__NR_io_uring_register)
#define DMXP__NR_IO_URING_SETUP __NR_io_uring_setup
#define DMXP__NR_IO_URING_ENTER __NR_io_uring_enter
#define DMXP__NR_IO_URING_REGISTER __NR_io_uring_register
#elif !defined(__alpha__)
#define DMXP__NR_IO_URING_SETUP 425
#define DMXP__NR_IO_URING_ENTER 426
#define DMXP__NR_IO_URING_REGISTER 427
#endif

typedef struct dmxp__uring_sqe { /* struct io_uring_sqe */
    uint8_t opcode;
    uint8_t flags;
    uint16_t ioprio;
    int32_t fd;           /* FUTEX_WAIT: the futex2 flags */
    uint64_t off;         /* FUTEX_WAIT: the expected value (addr2) */
    uint64_t addr;        /* FUTEX_WAIT: the word; ASYNC_CANCEL: the user_data to cancel */
    uint32_t len;
    uint32_t op_flags;    /* rw_flags, futex_flags, cancel_flags, ...: 0 here */
    uint64_t user_data;
    uint16_t buf_index;
    uint16_t personality;
    int32_t file_index;   /* splice_fd_in */
    uint64_t addr3;       /* FUTEX_WAIT: the bitset */
    uint64_t pad2;
} dmxp__uring_sqe;

typedef struct dmxp__uring_cqe { /* struct io_uring_cqe */
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
} dmxp__uring_cqe;

typedef struct dmxp__uring_sq_offsets { /* struct io_sqring_offsets */
    uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
    uint64_t user_addr;
} dmxp__uring_sq_offsets;

typedef struct dmxp__uring_cq_offsets { /* struct io_cqring_offsets */
    uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
    uint64_t user_addr;
} dmxp__uring_cq_offsets;

typedef struct dmxp__uring_params { /* struct io_uring_params */
    uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd;
    uint32_t resv[3];
    dmxp__uring_sq_offsets sq_off;
    dmxp__uring_cq_offsets cq_off;
} dmxp__uring_params;

typedef struct dmxp__uring_probe_op { /* struct io_uring_probe_op */
    uint8_t op;
    uint8_t resv;
    uint16_t flags;
    uint32_t resv2;
} dmxp__uring_probe_op;

typedef struct dmxp__uring_probe { /* struct io_uring_probe, with room for 256 opcodes */
    uint8_t last_op;
    uint8_t ops_len;
    uint16_t resv;
    uint32_t resv2[3];
    dmxp__uring_probe_op ops[256];
} dmxp__uring_probe;

typedef struct dmxp__uring_getevents_arg { /* struct io_uring_getevents_arg */
    uint64_t sigmask;
    uint32_t sigmask_sz;
    uint32_t min_wait_usec; /* pad before Linux 6.12 */
    uint64_t ts;
} dmxp__uring_getevents_arg;

typedef struct dmxp__uring_timespec { /* struct __kernel_timespec */
    int64_t tv_sec;
    int64_t tv_nsec;
} dmxp__uring_timespec;

DMXP_ASSERT_AT(dmxp__uring_sqe, fd, 4);
DMXP_ASSERT_AT(dmxp__uring_sqe, off, 8);
DMXP_ASSERT_AT(dmxp__uring_sqe, addr, 16);
DMXP_ASSERT_AT(dmxp__uring_sqe, len, 24);
DMXP_ASSERT_AT(dmxp__uring_sqe, op_flags, 28);
DMXP_ASSERT_AT(dmxp__uring_sqe, user_data, 32);
DMXP_ASSERT_AT(dmxp__uring_sqe, buf_index, 40);
DMXP_ASSERT_AT(dmxp__uring_sqe, file_index, 44);
DMXP_ASSERT_AT(dmxp__uring_sqe, addr3, 48);
DMXP__STATIC_ASSERT(sizeof(dmxp__uring_sqe) == 64, "io_uring_sqe is 64 bytes");
DMXP_ASSERT_AT(dmxp__uring_cqe, res, 8);
DMXP__STATIC_ASSERT(sizeof(dmxp__uring_cqe) == 16, "io_uring_cqe is 16 bytes");
DMXP_ASSERT_AT(dmxp__uring_sq_offsets, array, 24);
DMXP_ASSERT_AT(dmxp__uring_sq_offsets, user_addr, 32);
DMXP_ASSERT_AT(dmxp__uring_cq_offsets, cqes, 20);
DMXP__STATIC_ASSERT(sizeof(dmxp__uring_sq_offsets) == 40 && sizeof(dmxp__uring_cq_offsets) == 40,
                    "io_sqring_offsets and io_cqring_offsets are 40 bytes");
DMXP_ASSERT_AT(dmxp__uring_params, features, 20);
DMXP_ASSERT_AT(dmxp__uring_params, sq_off, 40);
DMXP_ASSERT_AT(dmxp__uring_params, cq_off, 80);
DMXP__STATIC_ASSERT(sizeof(dmxp__uring_params) == 120, "io_uring_params is 120 bytes");
DMXP_ASSERT_AT(dmxp__uring_probe, ops, 16);
DMXP__STATIC_ASSERT(sizeof(dmxp__uring_probe_op) == 8, "io_uring_probe_op is 8 bytes");
DMXP_ASSERT_AT(dmxp__uring_getevents_arg, ts, 16);
DMXP__STATIC_ASSERT(sizeof(dmxp__uring_getevents_arg) == 24, "io_uring_getevents_arg is 24 bytes");
DMXP__STATIC_ASSERT(sizeof(dmxp__uring_timespec) == 16, "__kernel_timespec is 16 bytes");

/* Counters of one wait fd, since it was opened (read them directly: w.stats.woken). */
typedef struct dmxp_wait_fd_stats {
    uint64_t submitted; /* IORING_OP_FUTEX_WAIT operations submitted */
    uint64_t reused;    /* arms that kept a wait still pending from an earlier round */
    uint64_t completed; /* completions of those waits reaped, whatever their result */
    uint64_t woken;     /* of those, result 0: woken by a futex_wake (not -EAGAIN: the word had
                           moved before the kernel queued the wait; not -ECANCELED) */
} dmxp_wait_fd_stats;

/* A pollable wake-up fd (see the top of this section). Its fields are the wait fd's own. */
typedef struct dmxp_wait_fd {
    int fd;            /* the ring's fd (close-on-exec); -1 when not open */
    uint32_t pid;      /* the process that opened it (a forked child must not use the ring) */
    uint32_t features; /* io_uring_params.features */
    /* The rings as the kernel sized them: every pointer below was checked at open to lie
     * inside its mapping, and indexes are masked with entries - 1 (entries a power of two). */
    uint32_t sq_entries;
    uint32_t cq_entries;
    unsigned char *sq_ring;
    size_t sq_ring_len;
    unsigned char *cq_ring; /* == sq_ring when the kernel maps both at once (SINGLE_MMAP) */
    size_t cq_ring_len;
    dmxp__uring_sqe *sqes; /* sq_entries entries */
    size_t sqes_len;
    DMXP_ATOMIC(uint32_t) *sq_head;
    DMXP_ATOMIC(uint32_t) *sq_tail;
    uint32_t *sq_array; /* sq_entries indexes */
    DMXP_ATOMIC(uint32_t) *cq_head;
    DMXP_ATOMIC(uint32_t) *cq_tail;
    const dmxp__uring_cqe *cqes; /* cq_entries entries */
    /* The futex wait not reaped yet (user_data 0: none; cancels use 0) and the word it is on. */
    uint64_t in_flight;
    const void *in_flight_word;
    uint64_t next_user_data;
    /* The round's registration (waiters NULL: none): the count it is in, the record that names
     * it (NULL for an unregistered handle) and the DMXP_WAITING_* value naming the count. */
    DMXP_ATOMIC(uint32_t) *waiters;
    dmxp_peer_record *rec;
    uint32_t kind;
    /* The stuck watch of the blocking calls, kept from round to round for one channel and
     * side, and the end of the round's slice (CLOCK_MONOTONIC ns). */
    int watch_send;
    const dmxp_channel_entry *watch_entry;
    dmxp__stuck stuck;
    int64_t until;
    dmxp_wait_fd_stats stats;
} dmxp_wait_fd;

/* A closed, empty wait fd (the stats are kept unless `stats` is set). */
static inline void dmxp__wait_fd_reset(dmxp_wait_fd *w, int stats) {
    dmxp_wait_fd_stats keep = w->stats;
    memset(w, 0, sizeof *w);
    w->fd = -1;
    if (!stats) w->stats = keep;
}

/* Unmaps the rings and closes the fd: the kernel tears the ring down, and anything still in
 * flight on it, once no process holds the fd any more. Touches no ring memory. */
static inline void dmxp__wait_fd_release(dmxp_wait_fd *w) {
    if (w->sqes != NULL) (void)munmap((void *)w->sqes, w->sqes_len);
    if (w->cq_ring != NULL && w->cq_ring != w->sq_ring)
        (void)munmap((void *)w->cq_ring, w->cq_ring_len);
    if (w->sq_ring != NULL) (void)munmap((void *)w->sq_ring, w->sq_ring_len);
    if (w->fd >= 0) (void)close(w->fd);
    dmxp__wait_fd_reset(w, 0);
}

/* The 32-bit ring field at `off` of a mapping of `len` bytes, or NULL when it does not lie
 * (4-aligned) inside it. */
static inline DMXP_ATOMIC(uint32_t) *dmxp__ring_u32(unsigned char *base, size_t len, uint32_t off) {
    if (off % 4 != 0 || len < 4 || off > len - 4) return NULL;
    return (DMXP_ATOMIC(uint32_t) *)(void *)(base + off);
}

/* Maps `len` bytes of w's ring at `offset` (one of the DMXP__IORING_OFF_*) into *out; when
 * the mmap fails, releases w (what was mapped before, and the fd) and fails naming `what`. */
static inline dmxp_status dmxp__wait_fd_map(dmxp_wait_fd *w, size_t len, uint64_t offset,
                                            const char *what, void **out, dmxp_error *err) {
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, w->fd, (off_t)offset);
    if (m == MAP_FAILED) {
        int e = errno;
        dmxp__wait_fd_release(w);
        return dmxp__fail_os(err, DMXP_E_OS, what, e);
    }
    *out = m;
    return DMXP_OK;
}

/* -errno, or the system call's non-negative result. */
static inline int dmxp__uring_enter(int fd, uint32_t to_submit, uint32_t min_complete,
                                    uint32_t flags, const void *arg, size_t argsz) {
#if defined(DMXP__NR_IO_URING_ENTER)
    long r = syscall(DMXP__NR_IO_URING_ENTER, fd, to_submit, min_complete, flags, arg, argsz);
    return r < 0 ? -errno : (int)r;
#else
    (void)fd, (void)to_submit, (void)min_complete, (void)flags, (void)arg, (void)argsz;
    return -ENOSYS;
#endif
}

/* Opens a wait fd: an io_uring of 4 entries, set up with no flags (no SQPOLL, no
 * DEFER_TASKRUN: completions are posted without this process entering the ring, so that the
 * fd turns readable on its own, §7.4), probed for IORING_OP_FUTEX_WAIT and ASYNC_CANCEL, its
 * rings mapped. DMXP_E_UNSUPPORTED when this system cannot do it: io_uring_setup failed with
 * ENOSYS, EPERM, EACCES or EINVAL (no io_uring, kernel.io_uring_disabled, a seccomp filter;
 * field "io_uring_setup", os_errno), the kernel lacks the opcodes (field
 * "IORING_OP_FUTEX_WAIT", Linux before 6.7), or DMXP_ASYNC_POLL is set to something other
 * than "" or "0" (field "DMXP_ASYNC_POLL"); the caller then polls (see above). DMXP_E_OS for
 * other failures (EMFILE, ENOMEM, a failed mmap). On failure w is left closed (fd -1), and
 * dmxp_wait_fd_close on it does nothing. */
static inline dmxp_status dmxp_wait_fd_open(dmxp_wait_fd *w, dmxp_error *err) {
    if (w == NULL) return dmxp__fail(err, DMXP_E_INVALID_ARGUMENT, -1, "w", 0, 0, 0);
    dmxp__wait_fd_reset(w, 1);
    const char *forced = getenv("DMXP_ASYNC_POLL");
    if (forced != NULL && forced[0] != 0 && strcmp(forced, "0") != 0)
        return dmxp__fail_detail(err, DMXP_E_UNSUPPORTED, "DMXP_ASYNC_POLL", 0, 0, 0,
                                 "DMXP_ASYNC_POLL=%.32s in the environment: poll instead of "
                                 "an io_uring futex wait (PROTOCOL.md §7.4)",
                                 forced);
#if !defined(DMXP__NR_IO_URING_SETUP)
    return dmxp__fail_detail(err, DMXP_E_UNSUPPORTED, "io_uring_setup", 0, 0, 0,
                             "no io_uring system call numbers for this architecture");
#else
    dmxp__uring_params p;
    memset(&p, 0, sizeof p);
    long fd = syscall(DMXP__NR_IO_URING_SETUP, DMXP__WAIT_FD_ENTRIES, &p);
    if (fd < 0) {
        int e = errno;
        return dmxp__fail_os(err,
                             e == ENOSYS || e == EPERM || e == EACCES || e == EINVAL
                                 ? DMXP_E_UNSUPPORTED
                                 : DMXP_E_OS,
                             "io_uring_setup", e);
    }
    w->fd = (int)fd;
    w->pid = (uint32_t)getpid();
    w->features = p.features;
    w->next_user_data = 1;

    dmxp__uring_probe probe;
    memset(&probe, 0, sizeof probe); /* the kernel refuses a probe that is not zeroed */
    if (syscall(DMXP__NR_IO_URING_REGISTER, w->fd, DMXP__IORING_REGISTER_PROBE, &probe, 256u) < 0) {
        int e = errno;
        dmxp__wait_fd_release(w);
        return dmxp__fail_os(err, e == EINVAL || e == ENOSYS ? DMXP_E_UNSUPPORTED : DMXP_E_OS,
                             "IORING_REGISTER_PROBE", e);
    }
    if (probe.ops_len <= DMXP__IORING_OP_FUTEX_WAIT ||
        (probe.ops[DMXP__IORING_OP_FUTEX_WAIT].flags & DMXP__IO_URING_OP_SUPPORTED) == 0 ||
        (probe.ops[DMXP__IORING_OP_ASYNC_CANCEL].flags & DMXP__IO_URING_OP_SUPPORTED) == 0) {
        dmxp__wait_fd_release(w);
        return dmxp__fail_detail(err, DMXP_E_UNSUPPORTED, "IORING_OP_FUTEX_WAIT", probe.ops_len,
                                 0, 0,
                                 "the kernel has no IORING_OP_FUTEX_WAIT (opcode %u, Linux 6.7 "
                                 "or later; it knows %u opcodes): poll instead (PROTOCOL.md "
                                 "§7.4)",
                                 DMXP__IORING_OP_FUTEX_WAIT, (unsigned)probe.ops_len);
    }

    /* The geometry the kernel reported, checked before anything is mapped with it. */
    uint32_t sq_n = p.sq_entries, cq_n = p.cq_entries;
    if (!dmxp__is_pow2(sq_n) || sq_n > DMXP__WAIT_FD_MAX_ENTRIES || !dmxp__is_pow2(cq_n) ||
        cq_n > 2 * DMXP__WAIT_FD_MAX_ENTRIES || p.sq_off.array % 4 != 0 ||
        p.cq_off.cqes % 8 != 0) {
        dmxp__wait_fd_release(w);
        return dmxp__fail_detail(err, DMXP_E_UNSUPPORTED, "io_uring_params", sq_n, cq_n, 0,
                                 "io_uring_setup reported a ring this client cannot use (%u "
                                 "submission and %u completion entries)",
                                 (unsigned)sq_n, (unsigned)cq_n);
    }
    size_t sq_len = (size_t)p.sq_off.array + (size_t)sq_n * sizeof(uint32_t);
    size_t cq_len = (size_t)p.cq_off.cqes + (size_t)cq_n * sizeof(dmxp__uring_cqe);
    int single = (p.features & DMXP__IORING_FEAT_SINGLE_MMAP) != 0;
    if (single) sq_len = cq_len = sq_len > cq_len ? sq_len : cq_len;
    void *m;
    dmxp_status s =
        dmxp__wait_fd_map(w, sq_len, DMXP__IORING_OFF_SQ_RING, "mmap (io_uring SQ ring)", &m, err);
    if (s != DMXP_OK) return s;
    w->sq_ring = (unsigned char *)m;
    w->sq_ring_len = sq_len;
    if (single) {
        w->cq_ring = w->sq_ring;
    } else {
        s = dmxp__wait_fd_map(w, cq_len, DMXP__IORING_OFF_CQ_RING, "mmap (io_uring CQ ring)", &m,
                              err);
        if (s != DMXP_OK) return s;
        w->cq_ring = (unsigned char *)m;
    }
    w->cq_ring_len = cq_len;
    size_t sqes_len = (size_t)sq_n * sizeof(dmxp__uring_sqe);
    s = dmxp__wait_fd_map(w, sqes_len, DMXP__IORING_OFF_SQES, "mmap (io_uring SQEs)", &m, err);
    if (s != DMXP_OK) return s;
    w->sqes = (dmxp__uring_sqe *)m;
    w->sqes_len = sqes_len;
    /* Every field inside its mapping; the arrays end exactly at sq_len / cq_len (or before,
     * for the smaller ring of a single mapping). */
    w->sq_head = dmxp__ring_u32(w->sq_ring, sq_len, p.sq_off.head);
    w->sq_tail = dmxp__ring_u32(w->sq_ring, sq_len, p.sq_off.tail);
    w->cq_head = dmxp__ring_u32(w->cq_ring, cq_len, p.cq_off.head);
    w->cq_tail = dmxp__ring_u32(w->cq_ring, cq_len, p.cq_off.tail);
    w->sq_array = (uint32_t *)(void *)(w->sq_ring + p.sq_off.array);
    w->cqes = (const dmxp__uring_cqe *)(const void *)(w->cq_ring + p.cq_off.cqes);
    w->sq_entries = sq_n;
    w->cq_entries = cq_n;
    if (w->sq_head == NULL || w->sq_tail == NULL || w->cq_head == NULL || w->cq_tail == NULL) {
        dmxp__wait_fd_release(w);
        return dmxp__fail_detail(err, DMXP_E_UNSUPPORTED, "io_uring_params", 0, 0, 0,
                                 "io_uring_setup reported ring offsets outside the rings");
    }
    for (uint32_t i = 0; i < sq_n; i++) w->sq_array[i] = i; /* SQE i at ring index i */
    return DMXP_OK;
#endif
}

/* The fd to poll for readability (EPOLLIN / POLLIN): readable while a completion waits to be
 * reaped by dmxp_wait_fd_complete. -1 when the wait fd is not open. */
static inline int dmxp_wait_fd_fd(const dmxp_wait_fd *w) { return w == NULL ? -1 : w->fd; }

/* 1 while a futex wait submitted by this wait fd has not been reaped (a round's wait, or one
 * parked by a round completed without a wake-up, to be reused by the next arm on its word). */
static inline int dmxp_wait_fd_pending(const dmxp_wait_fd *w) {
    return w != NULL && w->fd >= 0 && w->in_flight != 0;
}

/* When the armed round's slice ends (CLOCK_MONOTONIC ns, as dmxp_now_ns): at most
 * DMXP_WAIT_SLICE_NS after the arm, sooner while the channel looks stuck (the stuck watch's
 * next pass). 0 when no round is armed. */
static inline int64_t dmxp_wait_fd_deadline_ns(const dmxp_wait_fd *w) {
    return w == NULL || w->waiters == NULL ? 0 : w->until;
}

/* Milliseconds from now to dmxp_wait_fd_deadline_ns, rounded up, for epoll_wait / poll: 0 to
 * 100 (0 when the slice has ended or no round is armed). Never -1: wait in bounded slices. */
static inline int dmxp_wait_fd_timeout_ms(const dmxp_wait_fd *w) {
    if (w == NULL || w->waiters == NULL) return 0;
    int64_t left = w->until - (int64_t)dmxp_now_ns();
    if (left <= 0) return 0;
    int64_t ms = (left + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* DMXP_E_INVALID_ARGUMENT unless the wait fd is open and was opened by this process. */
static inline dmxp_status dmxp__wait_fd_usable(const dmxp_wait_fd *w, dmxp_error *err) {
    if (w == NULL || w->fd < 0)
        return dmxp__fail_detail(err, DMXP_E_INVALID_ARGUMENT, "w", 0, 0, 0,
                                 "the wait fd is not open (dmxp_wait_fd_open)");
    uint32_t me = (uint32_t)getpid();
    if (w->pid != me)
        return dmxp__fail_detail(err, DMXP_E_INVALID_ARGUMENT, "w", w->pid, me, 0,
                                 "the wait fd was opened by pid %u and inherited by pid %u "
                                 "across fork: close it here and open one of this process",
                                 (unsigned)w->pid, (unsigned)me);
    return DMXP_OK;
}

/* Undoes the round's registration exactly once (§7.4, §11.9): the record's `waiting` word is
 * taken back with a swap, and the count left only if it still named it (a freer that judged
 * this process dead and won the word has given the count back already). */
static inline void dmxp__wait_fd_unregister(dmxp_wait_fd *w) {
    if (w->waiters == NULL) return;
    if (w->rec == NULL ||
        dmxp__exchange(&w->rec->waiting, DMXP_WAITING_NONE, DMXP__ACQREL) == w->kind)
        dmxp__fetch_sub(w->waiters, 1, DMXP__SEQ);
    w->waiters = NULL;
    w->rec = NULL;
    w->kind = DMXP_WAITING_NONE;
}

/* Reaps every posted completion; 1 when one was the futex wait in flight (then none is). A
 * result other than 0 (woken), -EAGAIN (the word had moved), -EINTR, -ECANCELED or -ETIMEDOUT
 * means the kernel refused the wait: *refused gets its errno. Cancels' own completions (user
 * data 0) and stale ones are passed over. */
static inline int dmxp__wait_fd_reap(dmxp_wait_fd *w, int *refused) {
    uint32_t head = dmxp__load(w->cq_head, DMXP__RLX); /* ours to move */
    uint32_t tail = dmxp__load(w->cq_tail, DMXP__ACQ);
    if (tail - head > w->cq_entries) tail = head + w->cq_entries; /* never past the ring */
    int completed = 0;
    for (; head != tail; head++) {
        const dmxp__uring_cqe *c = &w->cqes[head & (w->cq_entries - 1)];
        uint64_t user_data = c->user_data;
        int32_t res = c->res;
        if (user_data == 0 || user_data != w->in_flight) continue;
        w->in_flight = 0;
        w->in_flight_word = NULL;
        completed = 1;
        w->stats.completed++;
        if (res == 0)
            w->stats.woken++;
        else if (res != -EAGAIN && res != -EINTR && res != -ECANCELED && res != -ETIMEDOUT)
            *refused = -res;
    }
    dmxp__store(w->cq_head, head, DMXP__REL);
    return completed;
}

/* Writes one SQE into the submission ring (not submitted yet). 0 when the ring is full. */
static inline int dmxp__wait_fd_push(dmxp_wait_fd *w, uint8_t opcode, int32_t fd, uint64_t addr,
                                     uint64_t off, uint64_t addr3, uint64_t user_data) {
    uint32_t tail = dmxp__load(w->sq_tail, DMXP__RLX); /* ours to move */
    uint32_t head = dmxp__load(w->sq_head, DMXP__ACQ);
    if (tail - head >= w->sq_entries) return 0;
    uint32_t i = tail & (w->sq_entries - 1);
    dmxp__uring_sqe *sqe = &w->sqes[i];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = opcode;
    sqe->fd = fd;
    sqe->addr = addr;
    sqe->off = off;
    sqe->addr3 = addr3;
    sqe->user_data = user_data;
    w->sq_array[i] = i;
    /* Release: the kernel reads the entry after it reads the tail. */
    dmxp__store(w->sq_tail, tail + 1, DMXP__REL);
    return 1;
}

/* Entries written and not yet taken by the kernel. */
static inline uint32_t dmxp__wait_fd_unsubmitted(const dmxp_wait_fd *w) {
    return dmxp__load(w->sq_tail, DMXP__RLX) - dmxp__load(w->sq_head, DMXP__ACQ);
}

/* Cancels the futex wait in flight (IORING_OP_ASYNC_CANCEL) and reaps it: the kernel
 * completes it at once with -ECANCELED (or it had completed already). Each look into the ring
 * waits at most 10 ms and there are at most 8: never a hang. A wait that could not be reaped
 * is forgotten: its completion, when it comes, is passed over as stale, and the kernel drops it
 * with the ring at the latest. */
static inline void dmxp__wait_fd_cancel(dmxp_wait_fd *w) {
    int refused = 0;
    if (w->in_flight == 0 || dmxp__wait_fd_reap(w, &refused)) return;
    if (dmxp__wait_fd_push(w, (uint8_t)DMXP__IORING_OP_ASYNC_CANCEL, 0, w->in_flight, 0, 0, 0)) {
        int ext = (w->features & DMXP__IORING_FEAT_EXT_ARG) != 0;
        for (int i = 0; i < 8 && w->in_flight != 0; i++) {
            dmxp__uring_timespec ts = {0, 10000000};
            dmxp__uring_getevents_arg arg;
            memset(&arg, 0, sizeof arg);
            arg.ts = (uint64_t)(uintptr_t)&ts;
            int r = ext ? dmxp__uring_enter(w->fd, dmxp__wait_fd_unsubmitted(w), 1,
                                            DMXP__IORING_ENTER_GETEVENTS |
                                                DMXP__IORING_ENTER_EXT_ARG,
                                            &arg, sizeof arg)
                        : dmxp__uring_enter(w->fd, dmxp__wait_fd_unsubmitted(w), 0,
                                            DMXP__IORING_ENTER_GETEVENTS, NULL, 0);
            if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY) break;
            if (dmxp__wait_fd_reap(w, &refused)) break;
            if (!ext) dmxp__sleep_ns(1000000);
        }
    }
    w->in_flight = 0;
    w->in_flight_word = NULL;
}

/* A refusal of the futex wait by the kernel (the errno of its completion, or of the submit). */
static inline dmxp_status dmxp__wait_fd_refused(dmxp_error *err, int e) {
    return dmxp__fail_os(err,
                         e == EINVAL || e == EOPNOTSUPP || e == ENOSYS ? DMXP_E_UNSUPPORTED
                                                                       : DMXP_E_OS,
                         "IORING_OP_FUTEX_WAIT", e);
}

/* Submits IORING_OP_FUTEX_WAIT on `word`, expecting `v`: a shared (never private) 32-bit
 * futex wait on any bitset. The kernel compares and queues it inside io_uring_enter, atomically
 * with respect to futex_wake (§7.4 "No lost wake-up"); a word that has moved completes it at
 * once with -EAGAIN. It reads the word by address only then: a queued wait is found by its
 * futex key (the shared object and offset), and the ring is closed before the mapping goes. */
static inline dmxp_status dmxp__wait_fd_submit(dmxp_wait_fd *w, DMXP_ATOMIC(uint32_t) *word,
                                               uint32_t v, dmxp_error *err) {
    uint64_t user_data = w->next_user_data;
    w->next_user_data = user_data + 1 == 0 ? 1 : user_data + 1;
    uint32_t tail = dmxp__load(w->sq_tail, DMXP__RLX);
    if (!dmxp__wait_fd_push(w, (uint8_t)DMXP__IORING_OP_FUTEX_WAIT, (int32_t)DMXP__FUTEX2_SIZE_U32,
                            (uint64_t)(uintptr_t)(void *)word, (uint64_t)v,
                            DMXP__FUTEX_BITSET_MATCH_ANY, user_data))
        return dmxp__fail_os(err, DMXP_E_OS, "io_uring submission queue full", EBUSY);
    int r = 0;
    for (int i = 0; i < 8 && dmxp__wait_fd_unsubmitted(w) != 0; i++) {
        r = dmxp__uring_enter(w->fd, dmxp__wait_fd_unsubmitted(w), 0, 0, NULL, 0);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) break;
    }
    if (dmxp__wait_fd_unsubmitted(w) != 0) {
        /* Not taken (no SQPOLL: the kernel reads the ring only inside io_uring_enter): take
         * the entry back, so that a later enter does not submit it. */
        if (dmxp__load(w->sq_head, DMXP__ACQ) == tail) dmxp__store(w->sq_tail, tail, DMXP__REL);
        return dmxp__fail_os(err, DMXP_E_OS, "io_uring_enter", r < 0 ? -r : EAGAIN);
    }
    w->in_flight = user_data;
    w->in_flight_word = (const void *)word;
    w->stats.submitted++;
    return DMXP_OK;
}

/* One round's arm (§7.4 async_wait) on the not_empty (send == 0) or not_full (send == 1, n
 * slots) side of ch. */
static inline dmxp_status dmxp__wait_fd_arm(const dmxp_channel *ch, dmxp_wait_fd *w, int send,
                                            uint64_t n, dmxp_error *err) {
    if (ch == NULL || ch->entry == NULL)
        return dmxp__fail(err, DMXP_E_INVALID_ARGUMENT, -1, "ch", 0, 0, 0);
    dmxp_status s = dmxp__wait_fd_usable(w, err);
    if (s != DMXP_OK) return s;
    if (send && (n == 0 || n > ch->capacity))
        return dmxp__fail_detail(err, DMXP_E_INVALID_ARGUMENT, "slots", n, ch->capacity, 0,
                                 "a wait for %llu free slots on a ring of %llu",
                                 (unsigned long long)n, (unsigned long long)ch->capacity);
    dmxp__wait_side side = dmxp__wait_side_of(ch, send);

    /* An earlier round not completed: this one replaces it. */
    dmxp__wait_fd_unregister(w);
    if (side.ready(ch, n)) return DMXP_READY;
    /* A wait parked by an earlier round is reaped if it completed meanwhile (a new one is
     * submitted below), and cancelled if it waits on another word: one in flight at most. */
    int refused = 0;
    (void)dmxp__wait_fd_reap(w, &refused);
    if (refused != 0) return dmxp__wait_fd_refused(err, refused);
    if (w->in_flight != 0 && w->in_flight_word != (const void *)side.word) dmxp__wait_fd_cancel(w);
    /* The stuck watch of the blocking calls (§11.6, §11.8) before each sleep, and the slice. */
    if (w->watch_entry != ch->entry || w->watch_send != send) {
        w->watch_entry = ch->entry;
        w->watch_send = send;
        w->stuck.tracking = 0;
    }
    int64_t slice_end = (int64_t)dmxp_now_ns() + DMXP_WAIT_SLICE_NS;
    w->until = dmxp__stuck_step(ch, send ? (int)(n < INT_MAX ? n : INT_MAX) : 0, &w->stuck,
                                slice_end);

    /* Registered exactly as a blocking wait (§7.2 wait_until, §11.9). */
    dmxp__fetch_add(side.waiters, 1, DMXP__SEQ);
    /* After the count: a record that says "waiting" is always counted. */
    if (side.rec) dmxp__store(&side.rec->waiting, side.kind, DMXP__REL);
    w->waiters = side.waiters;
    w->rec = side.rec;
    w->kind = side.kind;
    uint32_t v = dmxp__load(side.word, DMXP__SEQ);
#if !defined(DMXP__TSAN)
    dmxp__fence(DMXP__SEQ);
#endif
    if (side.ready(ch, n)) {
        dmxp__wait_fd_unregister(w);
        return DMXP_READY;
    }
    if (w->in_flight != 0) { /* parked on this word before the registration: it will do */
        w->stats.reused++;
        return DMXP_ARMED;
    }
    s = dmxp__wait_fd_submit(w, side.word, v, err);
    if (s != DMXP_OK) {
        dmxp__wait_fd_unregister(w);
        return s;
    }
    /* Completed already (-EAGAIN: the word moved since v was read; or refused): look at the
     * ring again now rather than poll an fd that is no longer readable. */
    if (dmxp__wait_fd_reap(w, &refused)) {
        dmxp__wait_fd_unregister(w);
        return refused != 0 ? dmxp__wait_fd_refused(err, refused) : DMXP_READY;
    }
    return DMXP_ARMED;
}

/* Arms a wait for a message on ch (PROTOCOL.md §7.4): counts the handle in not_empty_waiters
 * (and names that in its consumer record, if registered), reads not_empty_seq, fences and
 * re-checks. DMXP_READY: a message is at head (or the word had moved): receive now, nothing is
 * armed. DMXP_ARMED (DMXP_OK): a futex wait is pending on the wait fd; poll dmxp_wait_fd_fd for
 * up to dmxp_wait_fd_timeout_ms, then dmxp_wait_fd_complete. Runs the repair of a channel stuck
 * on a dead producer like dmxp_wait_message (§11.6). Errors: DMXP_E_INVALID_ARGUMENT (w not
 * open, or inherited across fork), DMXP_E_OS (the submission failed: errno in os_errno), or
 * DMXP_E_UNSUPPORTED (the kernel refused the wait): nothing is left registered; poll instead. */
static inline dmxp_status dmxp_channel_arm_message_wait(const dmxp_channel *ch, dmxp_wait_fd *w,
                                                        dmxp_error *err) {
    return dmxp__wait_fd_arm(ch, w, 0, 1, err);
}

/* The same for a sender: arms a wait until the `slots` positions from tail on are free (1 for
 * a message of up to 960 bytes; a run of k slots for a longer one, §12.3), on not_full_seq,
 * counted in not_full_waiters (and named in the producer record). `slots` 0 or above the
 * capacity: DMXP_E_INVALID_ARGUMENT. Runs the repair of a slot left claimed by a dead consumer
 * like dmxp_wait_free_slot. */
static inline dmxp_status dmxp_channel_arm_free_slots_wait(const dmxp_channel *ch,
                                                           dmxp_wait_fd *w, uint64_t slots,
                                                           dmxp_error *err) {
    return dmxp__wait_fd_arm(ch, w, 1, slots, err);
}

/* Ends the armed round: reaps the completions (the wait's, if it came) and undoes the round's
 * registration. Call it when the fd turned readable, and also when the loop stops waiting
 * without that (the slice ended, a timeout of its own, a shutdown): a wait still pending is
 * parked for the next arm on its word, and costs senders nothing meanwhile (it is not counted).
 * Then look at the ring (receive) and arm again. DMXP_OK (also when no round was armed);
 * DMXP_E_UNSUPPORTED or DMXP_E_OS when the kernel refused the wait (poll instead), and
 * DMXP_E_INVALID_ARGUMENT for a wait fd not open or inherited across fork. */
static inline dmxp_status dmxp_wait_fd_complete(dmxp_wait_fd *w, dmxp_error *err) {
    dmxp_status s = dmxp__wait_fd_usable(w, err);
    if (s != DMXP_OK) return s;
    int refused = 0;
    (void)dmxp__wait_fd_reap(w, &refused);
    dmxp__wait_fd_unregister(w);
    return refused != 0 ? dmxp__wait_fd_refused(err, refused) : DMXP_OK;
}

/* Closes a wait fd: undoes a registration left armed, cancels and reaps a pending futex wait,
 * unmaps the rings and closes the fd. In a forked child (a wait fd inherited from the parent)
 * it only releases the child's copies of the fd and mappings. Harmless on a wait fd that is
 * closed or whose open failed. The stats stay readable. */
static inline void dmxp_wait_fd_close(dmxp_wait_fd *w) {
    if (w == NULL || w->fd < 0) return;
    if (w->pid == (uint32_t)getpid()) {
        dmxp__wait_fd_unregister(w);
        dmxp__wait_fd_cancel(w);
    }
    dmxp__wait_fd_release(w);
}

#if defined(__cplusplus)
} /* extern "C" */
#endif

#endif /* DMXP_H */
