/*
 * test_cpp — dmxp.h used from C++17 (built with -std=c++17 -Wall -Wextra -Werror, under
 * ASan+UBSan and, for the in-process checks, TSan), and linked with test_cpp_c.c, the same
 * header compiled as C11.
 *
 *   test_cpp [GOLDEN]       the in-process checks below; GOLDEN is segment_v1.bin
 *   test_cpp producer <channels> <count> [capacity] --segment NAME [--batch N]
 *   test_cpp consumer <channels> <count> --segment NAME [--wait SECONDS] [--batch N]
 *
 * producer and consumer speak the interop contract of the examples (channels 0..channels,
 * indices 0..count, payload pattern(channel, index, default_len(index)), one thread per
 * channel); scripts/test-c.sh runs them against the Rust examples in both directions. The
 * consumer checks every payload, and fails on a corrupt, duplicated, lost or missing message.
 *
 * In-process checks:
 *   layout     the C++ view of every struct of dmxp.h (size, alignment, offsets) is the C
 *              view (test_cpp_c.c); the structs are standard-layout and trivially copyable;
 *              std::atomic and the __atomic builtins are lock-free at every width used
 *   same bytes the same calls from C and from C++ make byte-identical segments (timestamps
 *              aside)
 *   mixed      a handle opened in C++ is used by the C code and the reverse, on one segment
 *   ring       FULL, EMPTY, TOO_LARGE, RESERVED_FLAGS, BUFFER_TOO_SMALL, metadata, error text
 *   batch      dmxp_try_send_batch from std::vector, dmxp_try_recv_batch into a lambda
 *   golden     the committed golden segment, written by Rust, read from C++
 *   blocking   a receive woken by a std::thread's send, a receive that times out
 *   threads    std::thread producers and consumers with registered handles on an shm
 *              segment: every message received exactly once
 */
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "../dmxp.h"
#include "../examples/dmxp_pattern.h"
#include "test_cpp_c.h"

#ifndef GOLDEN_PATH
#define GOLDEN_PATH "../../dmxp-nostd/tests/golden/segment_v1.bin"
#endif

namespace {

std::atomic<int> checks{0};

[[noreturn]] void fail(const char *file, int line, const std::string &what) {
    std::fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what.c_str());
    std::exit(1);
}

#define CHECK(cond) \
    ((void)checks.fetch_add(1), (cond) ? (void)0 : fail(__FILE__, __LINE__, #cond))
#define CHECK_EQ(a, b)                                                                    \
    do {                                                                                  \
        checks.fetch_add(1);                                                              \
        const auto a_ = (a);                                                              \
        const auto b_ = (b);                                                              \
        if (!(a_ == b_))                                                                  \
            fail(__FILE__, __LINE__,                                                      \
                 std::string(#a) + " == " + std::to_string(a_) + ", expected " #b " == " + \
                     std::to_string(b_));                                                 \
    } while (0)
#define CHECK_STATUS(expr, expected)                                                      \
    do {                                                                                  \
        checks.fetch_add(1);                                                              \
        const dmxp_status got_ = (expr);                                                  \
        if (got_ != (expected))                                                           \
            fail(__FILE__, __LINE__,                                                      \
                 std::string(#expr) + " returned " + dmxp_status_name(got_) +             \
                     ", expected " + dmxp_status_name(expected));                         \
    } while (0)
#define CHECK_OK(expr) CHECK_STATUS(expr, DMXP_OK)

/* --- layout ------------------------------------------------------------------------------ */

// The layout structs are plain C structs in C++ too: memcpy-able, passable to C code.
static_assert(std::is_standard_layout<dmxp_header>::value, "header: standard layout");
static_assert(std::is_standard_layout<dmxp_channel_entry>::value, "entry: standard layout");
static_assert(std::is_standard_layout<dmxp_slot>::value, "slot: standard layout");
static_assert(std::is_standard_layout<dmxp_peer_record>::value, "peer record: standard layout");
static_assert(std::is_standard_layout<dmxp_channel>::value, "handle: standard layout");
static_assert(std::is_trivially_copyable<dmxp_segment_layout>::value, "layout: trivial");
static_assert(std::is_trivially_copyable<dmxp_channel>::value, "channel handle: trivial");
static_assert(std::is_trivially_copyable<dmxp_segment>::value, "segment handle: trivial");
static_assert(std::is_standard_layout<dmxp_wait_fd>::value, "wait fd: standard layout");
static_assert(std::is_trivially_copyable<dmxp_wait_fd>::value, "wait fd: trivial");
static_assert(sizeof(dmxp_slot) == DMXP_SLOT_SIZE && alignof(dmxp_slot) == 8, "slot");
static_assert(sizeof(dmxp_channel_entry) == DMXP_CHANNEL_ENTRY_SIZE, "entry");
static_assert(sizeof(dmxp_segment_layout) == DMXP_HEADER_SIZE, "header + table");
static_assert(offsetof(dmxp_segment_layout, channels[3].head) == 1536, "PROTOCOL.md 2.3");
// The fields are the plain integers, aligned to their size like _Atomic in C.
static_assert(std::is_same<std::remove_cv<decltype(dmxp_header::magic)>::type, uint64_t>::value,
              "u64 field");
static_assert(alignof(DMXP_ATOMIC(uint64_t)) == 8 && alignof(DMXP_ATOMIC(int64_t)) == 8 &&
                  alignof(DMXP_ATOMIC(uint32_t)) == 4 && alignof(DMXP_ATOMIC(uint16_t)) == 2,
              "field alignment");
// What the header's __atomic operations compile to is lock-free, as std::atomic says.
static_assert(std::atomic<uint64_t>::is_always_lock_free, "64-bit atomics lock-free");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "32-bit atomics lock-free");
static_assert(std::atomic<uint16_t>::is_always_lock_free, "16-bit atomics lock-free");
static_assert(sizeof(std::atomic<uint64_t>) == 8 && alignof(std::atomic<uint64_t>) == 8,
              "std::atomic<uint64_t> is a u64 field's twin");

void test_layout() {
    const std::array<uint64_t, DMXP_TEST_LAYOUT_COUNT> cpp = {{
#define DMXP_TEST_LAYOUT_VALUE(e) static_cast<uint64_t>(e),
        DMXP_TEST_LAYOUT(DMXP_TEST_LAYOUT_VALUE)
#undef DMXP_TEST_LAYOUT_VALUE
    }};
    static const char *const names[] = {
#define DMXP_TEST_LAYOUT_NAME(e) #e,
        DMXP_TEST_LAYOUT(DMXP_TEST_LAYOUT_NAME)
#undef DMXP_TEST_LAYOUT_NAME
    };
    std::array<uint64_t, DMXP_TEST_LAYOUT_COUNT> c{};
    CHECK_EQ(test_c_layout(c.data(), c.size()), c.size());
    for (size_t i = 0; i < c.size(); i++)
        if (c[i] != cpp[i])
            fail(__FILE__, __LINE__,
                 std::string(names[i]) + ": C says " + std::to_string(c[i]) + ", C++ says " +
                     std::to_string(cpp[i]));
    checks += static_cast<int>(c.size());
}

/* --- memory ------------------------------------------------------------------------------ */

struct free_deleter {
    void operator()(void *p) const { std::free(p); }
};
using segment_memory = std::unique_ptr<unsigned char, free_deleter>;

// Zeroed, 128-aligned memory standing for a segment.
segment_memory zeroed(size_t len) {
    const size_t rounded = (len + 127) / 128 * 128;
    segment_memory mem(static_cast<unsigned char *>(std::aligned_alloc(DMXP_SEGMENT_ALIGN, rounded)));
    CHECK(mem != nullptr);
    std::memset(mem.get(), 0, rounded);
    return mem;
}

std::string error_text(const dmxp_error &err) {
    std::array<char, 512> buf{};
    dmxp_error_format(&err, buf.data(), buf.size());
    return buf.data();
}

// The timestamps of every slot of every channel, zeroed: all that differs between two runs.
void mask_timestamps(unsigned char *mem) {
    auto *layout = reinterpret_cast<dmxp_segment_layout *>(mem);
    for (const dmxp_channel_entry &e : layout->channels) {
        const uint64_t cap = __atomic_load_n(&e.capacity, __ATOMIC_RELAXED);
        const uint64_t band = __atomic_load_n(&e.band_offset, __ATOMIC_RELAXED);
        for (uint64_t i = 0; i < cap; i++) {
            auto *slot = reinterpret_cast<dmxp_slot *>(mem + band + i * DMXP_SLOT_SIZE);
            __atomic_store_n(&slot->meta.timestamp_ns, uint64_t{0}, __ATOMIC_RELAXED);
        }
    }
}

void test_same_bytes() {
    segment_memory from_c = zeroed(DMXP_TEST_BUILD_SIZE), from_cpp = zeroed(DMXP_TEST_BUILD_SIZE);
    dmxp_segment seg_c{}, seg_cpp{};
    CHECK_OK(test_c_build_segment(from_c.get(), &seg_c));
    CHECK_OK(test_build_segment(from_cpp.get(), &seg_cpp));
    CHECK(seg_c.base != seg_cpp.base);
    CHECK_EQ(seg_c.len, seg_cpp.len);
    CHECK_EQ(seg_c.peer_records, seg_cpp.peer_records);
    mask_timestamps(from_c.get());
    mask_timestamps(from_cpp.get());
    CHECK(std::memcmp(from_c.get(), from_cpp.get(), DMXP_TEST_BUILD_SIZE) == 0);
    // And the C++ one validates from C's point of view as well as C++'s.
    dmxp_segment again{};
    dmxp_error err{};
    CHECK_OK(dmxp_segment_attach_memory(&again, from_cpp.get(), DMXP_TEST_BUILD_SIZE, &err));
    CHECK_OK(dmxp_segment_validate_all(&again, &err));
    CHECK_EQ(dmxp_segment_channel_count(&again), 2u);
}

void test_mixed_handles() {
    segment_memory mem = zeroed(DMXP_TEST_BUILD_SIZE);
    dmxp_segment seg{};
    dmxp_error err{};
    CHECK_OK(dmxp_segment_format_memory(&seg, mem.get(), DMXP_TEST_BUILD_SIZE, 1, &err));
    dmxp_channel cpp_handle{}, c_handle{};
    CHECK_OK(dmxp_channel_create(&seg, 5, 8, &cpp_handle, &err));
    CHECK_OK(test_c_open(&seg, 5, &c_handle));
    CHECK(c_handle.entry == cpp_handle.entry && c_handle.slots == cpp_handle.slots);
    CHECK_EQ(c_handle.capacity, uint64_t{8});

    // C sends through the C++ handle; C++ receives through the C one; and back.
    CHECK_OK(test_c_send(&cpp_handle, "from C", 71));
    std::array<char, 64> buf{};
    dmxp_meta meta{};
    size_t len = 0;
    CHECK_OK(dmxp_try_recv(&c_handle, buf.data(), buf.size(), &meta, &len));
    CHECK(std::string(buf.data(), len) == "from C");
    CHECK_EQ(meta.message_type, 71u);
    CHECK_EQ(meta.channel_id, 5u);
    const dmxp_send_opts opts{72, 0x4200};
    CHECK_OK(dmxp_try_send(&c_handle, "from C++", 8, &opts, nullptr));
    CHECK_OK(test_c_recv(&cpp_handle, buf.data(), buf.size(), &meta, &len));
    CHECK(std::string(buf.data(), len) == "from C++");
    CHECK_EQ(meta.message_type, 72u);
    CHECK_EQ(meta.flags, uint16_t{0x4200});
    CHECK_EQ(meta.sender_runtime, uint16_t{DMXP_RUNTIME_C});

    // A registration made in C++ is left by the C code.
    CHECK_OK(dmxp_channel_register(&cpp_handle, DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER, &err));
    CHECK_EQ(dmxp_channel_registered(&cpp_handle), DMXP_ROLE_PRODUCER | DMXP_ROLE_CONSUMER);
    CHECK_OK(test_c_send(&cpp_handle, "registered", 73));
    CHECK_OK(dmxp_try_recv(&cpp_handle, buf.data(), buf.size(), &meta, &len));
    test_c_close(&cpp_handle);
    CHECK_EQ(dmxp_channel_registered(&cpp_handle), 0u);

    // One clock: C's and C++'s dmxp_now_ns agree and advance.
    const uint64_t a = dmxp_now_ns(), b = test_c_now_ns(), c = dmxp_now_ns();
    CHECK(a != 0 && a <= b && b <= c);
}

void test_ring() {
    const size_t size = DMXP_HEADER_SIZE + 16 * DMXP_SLOT_SIZE;
    segment_memory mem = zeroed(size);
    dmxp_segment seg{};
    dmxp_error err{};
    CHECK_OK(dmxp_segment_format_memory(&seg, mem.get(), size, 7, &err));
    dmxp_channel ch{};
    CHECK_OK(dmxp_channel_create(&seg, 0, 4, &ch, &err));
    CHECK_STATUS(dmxp_channel_create(&seg, 0, 4, &ch, &err), DMXP_E_CHANNEL_EXISTS);
    CHECK(error_text(err).find("already exists") != std::string::npos);
    CHECK_STATUS(dmxp_channel_create(&seg, 1, 3, &ch, &err), DMXP_E_INVALID_CAPACITY);
    CHECK_OK(dmxp_channel_open(&seg, 0, &ch, &err));

    std::array<unsigned char, DMXP_MSG_INLINE> buf{};
    dmxp_meta meta{};
    size_t len = 0;
    CHECK_STATUS(dmxp_try_recv(&ch, buf.data(), buf.size(), &meta, &len), DMXP_E_EMPTY);
    const std::vector<std::string> words = {"alpha", "", std::string(DMXP_MSG_INLINE, 'x'), "d"};
    for (size_t i = 0; i < words.size(); i++) {
        const dmxp_send_opts opts{static_cast<uint32_t>(i), 0x0100};
        uint64_t id = 99;
        CHECK_OK(dmxp_try_send(&ch, words[i].data(), words[i].size(), &opts, &id));
        CHECK_EQ(id, uint64_t{i});
    }
    CHECK_STATUS(dmxp_try_send(&ch, "full", 4, nullptr, nullptr), DMXP_E_FULL);
    CHECK_EQ(dmxp_channel_depth(&ch), uint64_t{4});
    // Too small a buffer consumes nothing and says how much is needed.
    CHECK_STATUS(dmxp_try_recv(&ch, buf.data(), 2, &meta, &len), DMXP_E_BUFFER_TOO_SMALL);
    CHECK_EQ(meta.payload_len, 5u);
    for (size_t i = 0; i < words.size(); i++) {
        CHECK_OK(dmxp_try_recv(&ch, buf.data(), buf.size(), &meta, &len));
        CHECK(std::string(reinterpret_cast<const char *>(buf.data()), len) == words[i]);
        CHECK_EQ(meta.message_id, uint64_t{i});
        CHECK_EQ(meta.message_type, static_cast<uint32_t>(i));
        CHECK_EQ(meta.flags, uint16_t{0x0100});
        CHECK_EQ(meta.sender_pid, seg.pid);
        CHECK_EQ(meta.sender_runtime, uint16_t{DMXP_RUNTIME_C});
        CHECK(meta.timestamp_ns != 0);
    }
    CHECK_STATUS(dmxp_try_recv(&ch, buf.data(), buf.size(), &meta, &len), DMXP_E_EMPTY);
    const std::string too_long(DMXP_MSG_INLINE + 1, 'y');
    CHECK_STATUS(dmxp_try_send(&ch, too_long.data(), too_long.size(), nullptr, nullptr),
                 DMXP_E_TOO_LARGE);
    const dmxp_send_opts reserved{0, DMXP_FLAG_LOST};
    CHECK_STATUS(dmxp_try_send(&ch, "r", 1, &reserved, nullptr), DMXP_E_RESERVED_FLAGS);

    // Errors render the same from C++: status names, messages, dmxp_error_format.
    CHECK(std::string(dmxp_status_name(DMXP_E_FULL)) == "DMXP_E_FULL");
    CHECK(std::string(dmxp_strerror(DMXP_E_EMPTY)) == "channel empty");
    CHECK_STATUS(dmxp_channel_open(&seg, 300, &ch, &err), DMXP_E_INVALID_CHANNEL_ID);
    CHECK(error_text(err) == "channel id 300 out of range (0..256)");
    dmxp_trust trust = DMXP_TRUST_DEFAULT;
    CHECK_EQ(trust.mode, 0u);
    trust.mode = 0600;
    CHECK_STATUS(dmxp_check_shm_name("no-slash", &err), DMXP_E_INVALID_ARGUMENT);
    CHECK(error_text(err).find("starts with '/'") != std::string::npos);
}

void test_batch() {
    const size_t size = DMXP_HEADER_SIZE + 64 * DMXP_SLOT_SIZE;
    segment_memory mem = zeroed(size);
    dmxp_segment seg{};
    dmxp_error err{};
    CHECK_OK(dmxp_segment_format_memory(&seg, mem.get(), size, 8, &err));
    dmxp_channel ch{};
    CHECK_OK(dmxp_channel_create(&seg, 2, 32, &ch, &err));

    std::vector<std::string> sent;
    for (int i = 0; i < 40; i++) sent.push_back("message " + std::to_string(i));
    std::vector<const void *> datas;
    std::vector<size_t> lens;
    for (const std::string &s : sent) {
        datas.push_back(s.data());
        lens.push_back(s.size());
    }
    size_t done = 0, n = 0;
    uint64_t first = 0;
    CHECK_OK(dmxp_try_send_batch(&ch, datas.data(), lens.data(), datas.size(), nullptr, &n, &first));
    CHECK_EQ(n, size_t{32}); // as many as fit
    CHECK_EQ(first, uint64_t{0});
    done = n;

    // The callback is a captureless lambda (a plain function pointer for the C API); the
    // context is a std::vector.
    std::vector<std::string> got;
    auto deliver = [](void *ctx, const dmxp_meta *meta, const void *payload, size_t len) {
        auto *out = static_cast<std::vector<std::string> *>(ctx);
        if (meta->payload_len != len) std::abort();
        out->emplace_back(static_cast<const char *>(payload), len);
    };
    size_t delivered = 0, dropped = 0;
    CHECK_OK(dmxp_try_recv_batch(&ch, 20, deliver, &got, &delivered, &dropped));
    CHECK_EQ(delivered, size_t{20});
    CHECK_EQ(dropped, size_t{0});
    CHECK_OK(dmxp_try_send_batch(&ch, datas.data() + done, lens.data() + done, datas.size() - done,
                                 nullptr, &n, &first));
    CHECK_EQ(n, size_t{8});
    CHECK_EQ(first, uint64_t{32});
    dmxp_recv_counts counts{};
    while (dmxp_try_recv_batch_counts(&ch, 7, deliver, nullptr, &got, &counts) == DMXP_OK)
        CHECK_EQ(counts.lost + counts.corrupt + counts.revoked, size_t{0});
    CHECK(got == sent);
}

/* --- golden ------------------------------------------------------------------------------ */

void test_golden(const char *path) {
    constexpr size_t golden_size = 104960;
    segment_memory mem = zeroed(golden_size + 128);
    std::FILE *f = std::fopen(path, "rb");
    if (f == nullptr) fail(__FILE__, __LINE__, std::string("cannot open ") + path);
    const size_t got = std::fread(mem.get(), 1, golden_size + 1, f);
    std::fclose(f);
    CHECK_EQ(got, golden_size);

    const auto *layout = reinterpret_cast<const dmxp_segment_layout *>(mem.get());
    CHECK_EQ(__atomic_load_n(&layout->header.magic, __ATOMIC_ACQUIRE), DMXP_MAGIC);
    CHECK_EQ(__atomic_load_n(&layout->channels[1].band_offset, __ATOMIC_RELAXED),
             uint64_t{102784});
    dmxp_segment seg{};
    dmxp_error err{};
    CHECK_OK(dmxp_segment_attach_memory(&seg, mem.get(), golden_size, &err));
    CHECK_OK(dmxp_segment_validate_all(&seg, &err));
    dmxp_channel ch0{}, ch1{};
    CHECK_OK(dmxp_channel_open(&seg, 0, &ch0, &err));
    CHECK_OK(dmxp_channel_open(&seg, 1, &ch1, &err));
    struct expected {
        const dmxp_channel *ch;
        uint64_t id, ts;
        uint32_t type;
        uint16_t flags;
        const char *text;
    };
    const expected msgs[] = {
        {&ch0, 1, 1000000001, 2, 0x0100, "DMXP golden segment v1"},
        {&ch0, 2, 1000000002, 3, 0x0000,
         "The quick brown fox jumps over the lazy dog; 0123456789 ok."},
        {&ch1, 0, 1000000003, 7, 0x0100, ""},
        {&ch1, 1, 1000000004, 8, 0x0300, "ninebytes"},
    };
    for (const expected &m : msgs) {
        std::array<char, DMXP_MSG_INLINE> buf{};
        dmxp_meta meta{};
        size_t len = 0;
        CHECK_OK(dmxp_try_recv(m.ch, buf.data(), buf.size(), &meta, &len));
        CHECK_EQ(meta.message_id, m.id);
        CHECK_EQ(meta.timestamp_ns, m.ts);
        CHECK_EQ(meta.message_type, m.type);
        CHECK_EQ(meta.flags, m.flags);
        CHECK_EQ(meta.sender_pid, 4242u);
        CHECK_EQ(meta.sender_runtime, uint16_t{DMXP_RUNTIME_RUST});
        CHECK(std::string(buf.data(), len) == m.text);
    }
    CHECK_STATUS(dmxp_try_recv(&ch0, nullptr, 0, nullptr, nullptr), DMXP_E_EMPTY);
    CHECK_STATUS(dmxp_try_recv(&ch1, nullptr, 0, nullptr, nullptr), DMXP_E_EMPTY);
}

/* --- blocking and threads ---------------------------------------------------------------- */

void test_blocking() {
    const size_t size = DMXP_HEADER_SIZE + 8 * DMXP_SLOT_SIZE;
    segment_memory mem = zeroed(size);
    dmxp_segment seg{};
    dmxp_error err{};
    CHECK_OK(dmxp_segment_format_memory(&seg, mem.get(), size, 9, &err));
    dmxp_channel rx{}, tx{};
    CHECK_OK(dmxp_channel_create(&seg, 0, 2, &rx, &err));
    CHECK_OK(dmxp_channel_open(&seg, 0, &tx, &err));

    std::array<char, 16> buf{};
    size_t len = 0;
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_STATUS(dmxp_recv_timeout(&rx, buf.data(), buf.size(), nullptr, &len, 30000000),
                 DMXP_E_TIMEOUT);
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(30));

    std::thread sender([&tx] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (dmxp_send_timeout(&tx, "wake", 4, nullptr, nullptr, DMXP_FOREVER) != DMXP_OK)
            std::abort();
    });
    CHECK_OK(dmxp_recv_timeout(&rx, buf.data(), buf.size(), nullptr, &len, 10000000000));
    sender.join();
    CHECK(std::string(buf.data(), len) == "wake");
}

// An shm segment for the life of the object (RAII: closed and unlinked on the way out).
class shm_segment {
  public:
    shm_segment(std::string name, size_t size) : name_(std::move(name)) {
        dmxp_error err{};
        const dmxp_status s = dmxp_segment_create_shm(&seg_, name_.c_str(), size, 0600, &err);
        if (s != DMXP_OK) fail(__FILE__, __LINE__, "create " + name_ + ": " + error_text(err));
    }
    ~shm_segment() {
        dmxp_segment_close(&seg_);
        (void)dmxp_shm_unlink(name_.c_str(), nullptr);
    }
    shm_segment(const shm_segment &) = delete;
    shm_segment &operator=(const shm_segment &) = delete;
    const dmxp_segment *get() const { return &seg_; }
    const std::string &name() const { return name_; }

  private:
    std::string name_;
    dmxp_segment seg_{};
};

void test_threads() {
    const shm_segment shm("/dmxp_test_cpp_" + std::to_string(dmxp_self_identity().pid), 1u << 22);
    constexpr uint64_t per_producer = 20000;
    constexpr int producers = 2, consumers = 2;
    dmxp_channel creator{};
    dmxp_error err{};
    CHECK_OK(dmxp_channel_create(shm.get(), 0, 64, &creator, &err));

    std::vector<std::atomic<int>> seen(producers * per_producer);
    std::atomic<uint64_t> received{0};
    std::atomic<int> bad{0};
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; p++)
        threads.emplace_back([&, p] {
            dmxp_channel ch{}; // one registered handle per thread
            if (dmxp_channel_open(shm.get(), 0, &ch, nullptr) != DMXP_OK ||
                dmxp_channel_register(&ch, DMXP_ROLE_PRODUCER, nullptr) != DMXP_OK) {
                bad++;
                return;
            }
            std::array<unsigned char, DMXP_MSG_INLINE> buf{};
            for (uint64_t i = 0; i < per_producer; i++) {
                const uint64_t index = static_cast<uint64_t>(p) * per_producer + i;
                const size_t len =
                    dmxp_pattern_encode(0, index, dmxp_pattern_default_len(index), buf.data());
                if (dmxp_send_timeout(&ch, buf.data(), len, nullptr, nullptr, 10000000000) !=
                    DMXP_OK) {
                    bad++;
                    break;
                }
            }
            dmxp_channel_close(&ch);
        });
    for (int c = 0; c < consumers; c++)
        threads.emplace_back([&] {
            dmxp_channel ch{};
            if (dmxp_channel_open(shm.get(), 0, &ch, nullptr) != DMXP_OK ||
                dmxp_channel_register(&ch, DMXP_ROLE_CONSUMER, nullptr) != DMXP_OK) {
                bad++;
                return;
            }
            std::array<unsigned char, DMXP_MSG_INLINE> buf{};
            while (received.load() < producers * per_producer) {
                size_t len = 0;
                const dmxp_status s =
                    dmxp_recv_timeout(&ch, buf.data(), buf.size(), nullptr, &len, 20000000);
                if (s == DMXP_E_TIMEOUT) continue;
                uint64_t channel = 0, index = 0;
                if (s != DMXP_OK ||
                    dmxp_pattern_decode(buf.data(), len, &channel, &index) != DMXP_PATTERN_OK ||
                    channel != 0 || index >= seen.size() || seen[index]++ != 0) {
                    bad++;
                    break;
                }
                received++;
            }
            dmxp_channel_close(&ch);
        });
    for (std::thread &t : threads) t.join();
    CHECK_EQ(bad.load(), 0);
    CHECK_EQ(received.load(), producers * per_producer);
    CHECK(std::all_of(seen.begin(), seen.end(), [](const std::atomic<int> &s) { return s == 1; }));
    CHECK_EQ(dmxp_channel_depth(&creator), uint64_t{0});
}

/* --- producer and consumer (the interop command lines) ----------------------------------- */

struct options {
    uint32_t channels = 0;
    uint64_t count = 0;
    uint64_t capacity = DMXP_DEFAULT_CAPACITY;
    std::string segment = DMXP_DEFAULT_SEGMENT_NAME;
    uint64_t wait_s = 30;
    size_t batch = 1;
};

[[noreturn]] void usage() {
    std::fprintf(stderr,
                 "usage: test_cpp [GOLDEN]\n"
                 "       test_cpp producer <channels> <count> [capacity] --segment NAME [--batch N]\n"
                 "       test_cpp consumer <channels> <count> --segment NAME [--wait S] [--batch N]\n");
    std::exit(2);
}

uint64_t number(const char *text) {
    char *end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != 0 || text[0] == '-') usage();
    return v;
}

options parse(int argc, char **argv) {
    options o;
    std::vector<uint64_t> positional;
    for (int i = 2; i < argc; i++) {
        const std::string a = argv[i];
        if (a == "--segment" && i + 1 < argc)
            o.segment = argv[++i];
        else if (a == "--wait" && i + 1 < argc)
            o.wait_s = number(argv[++i]);
        else if (a == "--batch" && i + 1 < argc)
            o.batch = static_cast<size_t>(std::max<uint64_t>(1, number(argv[++i])));
        else if (a.compare(0, 2, "--") == 0 || positional.size() == 3)
            usage();
        else
            positional.push_back(number(argv[i]));
    }
    if (positional.size() < 2 || positional[0] > DMXP_MAX_CHANNELS) usage();
    o.channels = static_cast<uint32_t>(positional[0]);
    o.count = positional[1];
    if (positional.size() == 3) o.capacity = positional[2];
    return o;
}

// One line per failure, collected from the channel threads.
class failures {
  public:
    void add(uint32_t channel, const std::string &what) {
        const std::lock_guard<std::mutex> lock(mutex_);
        lines_.push_back("channel " + std::to_string(channel) + ": " + what);
    }
    int report(const char *who) const {
        for (const std::string &l : lines_) std::fprintf(stderr, "%s: %s\n", who, l.c_str());
        return lines_.empty() ? 0 : 1;
    }

  private:
    std::mutex mutex_;
    std::vector<std::string> lines_;
};

int run_producer(const options &o) {
    dmxp_segment seg{};
    dmxp_error err{};
    if (dmxp_segment_open_or_create_shm(&seg, o.segment.c_str(), DMXP_DEFAULT_SEGMENT_SIZE,
                                        DMXP_DEFAULT_MODE, 5000, nullptr, &err) != DMXP_OK) {
        std::fprintf(stderr, "test_cpp producer: %s: %s\n", o.segment.c_str(), error_text(err).c_str());
        return 1;
    }
    failures failed;
    std::vector<std::thread> threads;
    for (uint32_t c = 0; c < o.channels; c++)
        threads.emplace_back([&, c] {
            dmxp_channel ch{};
            dmxp_error e{};
            if (dmxp_channel_open_or_create(&seg, c, o.capacity, 5000, &ch, nullptr, &e) != DMXP_OK)
                return failed.add(c, "open: " + error_text(e));
            (void)dmxp_channel_register(&ch, DMXP_ROLE_PRODUCER, nullptr);
            std::vector<std::array<unsigned char, DMXP_MSG_INLINE>> bufs(o.batch);
            std::vector<const void *> datas(o.batch);
            std::vector<size_t> lens(o.batch);
            for (uint64_t next = 0; next < o.count;) {
                const size_t n = static_cast<size_t>(std::min<uint64_t>(o.batch, o.count - next));
                for (size_t k = 0; k < n; k++) {
                    const uint64_t index = next + k;
                    lens[k] = dmxp_pattern_encode(c, index, dmxp_pattern_default_len(index),
                                                  bufs[k].data());
                    datas[k] = bufs[k].data();
                }
                for (size_t done = 0; done < n;) {
                    size_t sent = 0;
                    dmxp_status s = dmxp_try_send_batch(&ch, datas.data() + done, lens.data() + done,
                                                        n - done, nullptr, &sent, nullptr);
                    if (s == DMXP_OK) {
                        done += sent;
                        continue;
                    }
                    if (s == DMXP_E_FULL) s = dmxp_wait_free_slot(&ch, 60000000000);
                    if (s != DMXP_OK) {
                        dmxp_channel_close(&ch);
                        return failed.add(c, std::string("send: ") + dmxp_status_name(s));
                    }
                }
                next += n;
            }
            dmxp_channel_close(&ch);
        });
    for (std::thread &t : threads) t.join();
    dmxp_segment_close(&seg);
    if (failed.report("test_cpp producer") != 0) return 1;
    std::printf("test_cpp producer: sent %" PRIu64 " messages on each of %u channels of %s%s\n",
                o.count, o.channels, o.segment.c_str(), o.batch > 1 ? " (batches)" : "");
    return 0;
}

int run_consumer(const options &o) {
    dmxp_segment seg{};
    dmxp_error err{};
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(o.wait_s);
    dmxp_status s;
    while ((s = dmxp_segment_open_shm(&seg, o.segment.c_str(), 1000, &err)) == DMXP_E_NO_SEGMENT &&
           std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (s != DMXP_OK) {
        std::fprintf(stderr, "test_cpp consumer: %s: %s\n", o.segment.c_str(), error_text(err).c_str());
        return 1;
    }
    const int64_t wait_ns = static_cast<int64_t>(o.wait_s) * 1000000000;
    failures failed;
    std::vector<std::thread> threads;
    for (uint32_t c = 0; c < o.channels; c++)
        threads.emplace_back([&, c] {
            dmxp_channel ch{};
            dmxp_error e{};
            if (dmxp_channel_open_wait(&seg, c, static_cast<int64_t>(o.wait_s) * 1000, &ch, &e) !=
                DMXP_OK)
                return failed.add(c, "open: " + error_text(e));
            (void)dmxp_channel_register(&ch, DMXP_ROLE_CONSUMER, nullptr);
            struct state {
                uint32_t channel;
                std::vector<bool> seen;
                uint64_t unique = 0, corrupt = 0, duplicated = 0;
                void take(const dmxp_meta &meta, const void *payload, size_t len) {
                    uint64_t pc = 0, index = 0;
                    if (dmxp_pattern_decode(static_cast<const unsigned char *>(payload), len, &pc,
                                            &index) != DMXP_PATTERN_OK ||
                        pc != channel || meta.channel_id != channel || index >= seen.size())
                        corrupt++;
                    else if (seen[index])
                        duplicated++;
                    else {
                        seen[index] = true;
                        unique++;
                    }
                }
            } st{c, std::vector<bool>(o.count), 0, 0, 0};
            std::array<unsigned char, DMXP_MSG_INLINE> buf{};
            uint64_t lost = 0;
            dmxp_status rs = DMXP_OK;
            while (st.unique < o.count && st.corrupt == 0 && st.duplicated == 0) {
                if (o.batch > 1) {
                    dmxp_recv_counts counts{};
                    rs = dmxp_try_recv_batch_counts(
                        &ch, o.batch,
                        [](void *ctx, const dmxp_meta *meta, const void *payload, size_t len) {
                            static_cast<state *>(ctx)->take(*meta, payload, len);
                        },
                        nullptr, &st, &counts);
                    lost += counts.lost + counts.corrupt + counts.revoked;
                    if (rs == DMXP_E_EMPTY) rs = dmxp_wait_message(&ch, wait_ns);
                } else {
                    dmxp_meta meta{};
                    size_t len = 0;
                    rs = dmxp_recv_timeout(&ch, buf.data(), buf.size(), &meta, &len, wait_ns);
                    if (rs == DMXP_OK) st.take(meta, buf.data(), len);
                }
                if (rs == DMXP_E_LOST || lost != 0) {
                    failed.add(c, "a LOST tombstone, corrupt slot or revoked claim");
                    break;
                }
                if (rs != DMXP_OK) {
                    failed.add(c, std::string("receive: ") + dmxp_status_name(rs) + " after " +
                                      std::to_string(st.unique) + " messages");
                    break;
                }
            }
            dmxp_channel_close(&ch);
            if (st.corrupt != 0 || st.duplicated != 0)
                failed.add(c, std::to_string(st.corrupt) + " corrupt, " +
                                  std::to_string(st.duplicated) + " duplicated");
            else if (rs == DMXP_OK)
                std::printf("test_cpp consumer: channel %u: %" PRIu64 " messages, all verified\n",
                            c, st.unique);
        });
    for (std::thread &t : threads) t.join();
    dmxp_segment_close(&seg);
    return failed.report("test_cpp consumer");
}

} // namespace

int main(int argc, char **argv) {
    if (argc > 1 && std::strcmp(argv[1], "producer") == 0) return run_producer(parse(argc, argv));
    if (argc > 1 && std::strcmp(argv[1], "consumer") == 0) return run_consumer(parse(argc, argv));
    if (argc > 2) usage();
    test_layout();
    test_same_bytes();
    test_mixed_handles();
    test_ring();
    test_batch();
    test_golden(argc > 1 ? argv[1] : GOLDEN_PATH);
    test_blocking();
    test_threads();
    std::printf("test_cpp: ok (%d checks)\n", checks.load());
    return 0;
}
