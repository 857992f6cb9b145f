/*
 * hello — the smallest DMXP program: creates an shm segment, sends one message on channel 0,
 * receives it, and removes the segment. Valid C11 and C++; it includes <dmxp.h> as a program
 * built against an installed copy does (make -C bindings/c install), after a system header
 * (the include order does not matter):
 *
 *   cc  -std=c11 -o hello hello.c $(pkg-config --cflags --libs dmxp)
 *   c++ -std=c++17 -x c++ -o hello_cpp hello.c $(pkg-config --cflags --libs dmxp)
 *
 *   hello [NAME]        NAME: the shm segment to use (default /dmxp_hello_<pid>)
 */
#include <stdio.h>

#include <dmxp.h>

#if defined(__cplusplus)
#define LANGUAGE "C++"
#else
#define LANGUAGE "C"
#endif

int main(int argc, char **argv) {
    char name[128];
    if (argc > 1)
        snprintf(name, sizeof name, "%s", argv[1]);
    else
        snprintf(name, sizeof name, "/dmxp_hello_%u", (unsigned)dmxp_self_identity().pid);

    dmxp_segment seg;
    dmxp_channel ch;
    dmxp_error err;
    dmxp_status s = dmxp_segment_create_shm(&seg, name, (size_t)1 << 20, DMXP_DEFAULT_MODE, &err);
    if (s == DMXP_OK) {
        s = dmxp_channel_create(&seg, 0, 8, &ch, &err);
        if (s != DMXP_OK) dmxp_segment_close(&seg);
    }
    if (s != DMXP_OK) {
        char msg[512];
        dmxp_error_format(&err, msg, sizeof msg);
        fprintf(stderr, "hello: %s: %s\n", name, msg);
        return 1;
    }

    uint64_t id = 0;
    char buf[DMXP_MSG_INLINE];
    size_t len = 0;
    dmxp_meta meta;
    s = dmxp_try_send(&ch, "hello", 5, NULL, &id);
    if (s == DMXP_OK) s = dmxp_recv_timeout(&ch, buf, sizeof buf, &meta, &len, 1000000000);
    if (s == DMXP_OK)
        printf("hello (%s): received \"%.*s\", message %llu of channel %u, through %s\n",
               LANGUAGE, (int)len, buf, (unsigned long long)meta.message_id, meta.channel_id,
               name);
    else
        fprintf(stderr, "hello: %s\n", dmxp_strerror(s));
    dmxp_segment_close(&seg);
    (void)dmxp_shm_unlink(name, NULL);
    return s == DMXP_OK ? 0 : 1;
}
