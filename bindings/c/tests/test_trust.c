/* Attach trust (PROTOCOL.md §3.4): an object owned by another user, or granting more than the
 * mode asked for, is refused before anything is mapped, and the explicit opt-ins (trusted
 * owner, mode, group access) let it through; file segments behind a symbolic link or in a
 * directory others may rewrite are refused, and nothing is written through a link; malformed
 * names are refused before any system call.
 *
 * Needs root, to hand objects to another user (uid/gid 65534). Without it every check here
 * would be vacuous, so it prints a loud SKIP line and exits 0. */
#include "check.h"

#define OTHER 65534u /* "nobody": an owner that is not us */
#define SEG_SIZE (1u << 20)

static char name[64];     /* /dmxp_c_trust_<pid> */
static char shm_path[96]; /* /dev/shm/dmxp_c_trust_<pid> */
static char dir[64];      /* a private directory for the file cases */

/* ---- helpers --------------------------------------------------------------------------- */

/* 1 when this process maps `path` (a line of /proc/self/maps ending with it). */
static int mapped(const char *path) {
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f != NULL);
    char line[4096];
    size_t n = strlen(path);
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        const char *deleted = " (deleted)";
        size_t len = strlen(line), d = strlen(deleted);
        if (len >= d && strcmp(line + len - d, deleted) == 0) len -= d;
        if (len >= n && memcmp(line + len - n, path, n) == 0 &&
            (len == n || line[len - n - 1] == ' '))
            found = 1;
    }
    fclose(f);
    return found;
}

/* FNV-1a over the whole file. */
static uint64_t checksum(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    unsigned char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++) h = (h ^ buf[i]) * UINT64_C(0x100000001b3);
    CHECK(n == 0);
    close(fd);
    return h;
}

static struct stat stat_of(const char *path) {
    struct stat st;
    CHECK(lstat(path, &st) == 0);
    return st;
}

static int exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Hands the shm object `name` to uid:gid with `mode`, through a descriptor. */
static void give_shm(uid_t uid, gid_t gid, mode_t mode) {
    int fd = shm_open(name, O_RDWR, 0);
    CHECK(fd >= 0);
    CHECK(fchown(fd, uid, gid) == 0);
    CHECK(fchmod(fd, mode) == 0);
    close(fd);
}

/* The shm object `name`, formatted by this client as root (or left empty), then given away. */
static void foreign_shm(int format, uid_t uid, gid_t gid, mode_t mode) {
    shm_unlink(name);
    if (format) {
        dmxp_segment s;
        dmxp_error err;
        CHECK_OK(dmxp_segment_create_shm(&s, name, SEG_SIZE, 0600, &err));
        dmxp_segment_close(&s);
    } else {
        int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
        CHECK(fd >= 0);
        close(fd);
    }
    give_shm(uid, gid, mode);
}

/* Computed here, not with the client's own helper, so a broken helper cannot hide a case. */
static int in_my_groups(gid_t g) {
    if (getegid() == g) return 1;
    gid_t list[1024];
    int n = getgroups(1024, list);
    CHECK(n >= 0);
    for (int i = 0; i < n; i++)
        if (list[i] == g) return 1;
    return 0;
}

static dmxp_trust trust_of(int has_uid, uint32_t uid, uint32_t mode) {
    dmxp_trust t = DMXP_TRUST_DEFAULT;
    t.has_trusted_uid = has_uid;
    t.trusted_uid = uid;
    t.mode = mode;
    return t;
}

/* A segment handle full of a known pattern: a refused call must leave it so. */
static dmxp_segment poisoned;
static void poison(dmxp_segment *seg) {
    memset(&poisoned, 0x5a, sizeof poisoned);
    memcpy(seg, &poisoned, sizeof *seg);
}
static int untouched(const dmxp_segment *seg) {
    return memcmp(seg, &poisoned, sizeof *seg) == 0;
}

/* What a producer does once it has a segment: had a refused call succeeded, this writes to
 * the object, which the checksum comparisons below then catch. */
static void use_if_opened(dmxp_status s, dmxp_segment *seg) {
    if (s != DMXP_OK) return;
    dmxp_channel ch;
    dmxp_error err;
    if (dmxp_channel_open_or_create(seg, 0, 8, 0, &ch, NULL, &err) == DMXP_OK)
        dmxp_try_send(&ch, "leak", 4, NULL, NULL);
    dmxp_segment_close(seg);
}

static void format_text(const dmxp_error *err, char *text, size_t len) {
    CHECK(dmxp_error_format(err, text, len) > 0);
}

#define CHECK_TEXT(text, needle)                                                      \
    do {                                                                              \
        check_count++;                                                                \
        if (strstr((text), (needle)) == NULL) {                                       \
            fprintf(stderr, "%s:%d: \"%s\" does not contain \"%s\"\n", __FILE__,      \
                    __LINE__, (text), (needle));                                      \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

/* ---- names ----------------------------------------------------------------------------- */

static void names_refused(void) {
    dmxp_segment seg;
    dmxp_error err;
    char long_name[258];
    long_name[0] = '/';
    memset(long_name + 1, 'n', 255); /* '/' and 255 bytes: one too many */
    long_name[256] = 0;
    const char *bad[] = {"/a\nb", "/a\x7f", "/a/b", long_name, "/x\x01y", "", "noslash", "/"};
    const char *stored[] = {"/dev/shm/a\nb", "/dev/shm/a\x7f", "/dev/shm/x\x01y"};
    dmxp_trust open_all = trust_of(1, OTHER, 0777);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        /* Refused before any system call: errno stays as it was. */
        errno = 0;
        CHECK_STATUS(dmxp_segment_open_shm(&seg, bad[i], 0, &err), DMXP_E_INVALID_ARGUMENT);
        CHECK_EQ_U64(errno, 0);
        CHECK(strcmp(err.field, "name") == 0);
        CHECK_STATUS(dmxp_segment_open_shm_trusting(&seg, bad[i], 0, &open_all, &err),
                     DMXP_E_INVALID_ARGUMENT);
        CHECK_EQ_U64(errno, 0);
        CHECK_STATUS(dmxp_segment_create_shm(&seg, bad[i], SEG_SIZE, 0600, &err),
                     DMXP_E_INVALID_ARGUMENT);
        CHECK_EQ_U64(errno, 0);
        CHECK_STATUS(dmxp_segment_open_or_create_shm(&seg, bad[i], SEG_SIZE, 0600, 0, NULL, &err),
                     DMXP_E_INVALID_ARGUMENT);
        CHECK_STATUS(
            dmxp_segment_open_or_create_shm_ex(&seg, bad[i], SEG_SIZE, 0, &open_all, NULL, &err),
            DMXP_E_INVALID_ARGUMENT);
        CHECK_STATUS(dmxp_shm_unlink(bad[i], &err), DMXP_E_INVALID_ARGUMENT);
        CHECK_EQ_U64(errno, 0);
    }
    char longest_path[300];
    snprintf(longest_path, sizeof longest_path, "/dev/shm%s", long_name);
    CHECK(!exists(longest_path));
    for (size_t i = 0; i < sizeof stored / sizeof stored[0]; i++) CHECK(!exists(stored[i]));
    /* The messages say what is wrong. */
    char text[512];
    CHECK_STATUS(dmxp_segment_open_shm(&seg, "/a\nb", 0, &err), DMXP_E_INVALID_ARGUMENT);
    CHECK_EQ_U64(err.found, 2);
    format_text(&err, text, sizeof text);
    CHECK_TEXT(text, "control character (0x0a) at byte 2");
    CHECK(strchr(text, '\n') == NULL);
    CHECK_STATUS(dmxp_segment_open_shm(&seg, "/a/b", 0, &err), DMXP_E_INVALID_ARGUMENT);
    format_text(&err, text, sizeof text);
    CHECK_TEXT(text, "'/' at byte 2");
    CHECK_STATUS(dmxp_segment_open_shm(&seg, long_name, 0, &err), DMXP_E_INVALID_ARGUMENT);
    format_text(&err, text, sizeof text);
    CHECK_TEXT(text, "longer than 255 bytes");

    /* The longest valid name, '/' and 254 bytes, works with the default calls. */
    char longest[256];
    snprintf(longest, sizeof longest, "/dmxp_c_trust_%ld_", (long)getpid());
    size_t at = strlen(longest);
    memset(longest + at, 'm', 255 - at);
    longest[255] = 0;
    shm_unlink(longest);
    CHECK_OK(dmxp_segment_create_shm(&seg, longest, SEG_SIZE, 0600, &err));
    dmxp_segment_close(&seg);
    CHECK_OK(dmxp_segment_open_shm(&seg, longest, 0, &err));
    dmxp_segment_close(&seg);
    CHECK_OK(dmxp_shm_unlink(longest, &err));

    /* File paths: no control characters. */
    char p1[128], p2[128], p3[128];
    snprintf(p1, sizeof p1, "%s/a\nb", dir);
    snprintf(p2, sizeof p2, "%s/a\x7f", dir);
    snprintf(p3, sizeof p3, "%s/\x1b[2J", dir);
    const char *bad_paths[] = {p1, p2, p3};
    for (size_t i = 0; i < 3; i++) {
        errno = 0;
        CHECK_STATUS(dmxp_segment_open_path(&seg, bad_paths[i], 0, &err),
                     DMXP_E_INVALID_ARGUMENT);
        CHECK_EQ_U64(errno, 0);
        CHECK(strcmp(err.field, "path") == 0);
        CHECK_STATUS(dmxp_segment_open_path_trusting(&seg, bad_paths[i], 0, &open_all, &err),
                     DMXP_E_INVALID_ARGUMENT);
        CHECK_STATUS(dmxp_segment_create_path(&seg, bad_paths[i], SEG_SIZE, 0600, &err),
                     DMXP_E_INVALID_ARGUMENT);
        CHECK_EQ_U64(errno, 0);
        CHECK_STATUS(
            dmxp_segment_open_or_create_path(&seg, bad_paths[i], SEG_SIZE, 0600, 0, NULL, &err),
            DMXP_E_INVALID_ARGUMENT);
        CHECK_STATUS(dmxp_segment_open_or_create_path_ex(&seg, bad_paths[i], SEG_SIZE, 0,
                                                         &open_all, NULL, &err),
                     DMXP_E_INVALID_ARGUMENT);
        CHECK_EQ_U64(errno, 0);
        CHECK(!exists(bad_paths[i]));
    }
    CHECK_STATUS(dmxp_segment_open_path(&seg, p1, 0, &err), DMXP_E_INVALID_ARGUMENT);
    format_text(&err, text, sizeof text);
    CHECK_TEXT(text, "control character (0x0a)");
    /* A path must name a file, not a directory. */
    char slash[128];
    snprintf(slash, sizeof slash, "%s/", dir);
    CHECK_STATUS(dmxp_segment_open_or_create_path(&seg, slash, SEG_SIZE, 0600, 0, NULL, &err),
                 DMXP_E_INVALID_ARGUMENT);
    CHECK_STATUS(dmxp_segment_open_path(&seg, slash, 0, &err), DMXP_E_INVALID_ARGUMENT);
}

/* ---- owner and mode of shm objects ----------------------------------------------------- */

static void foreign_owner_refused(void) {
    dmxp_segment seg;
    dmxp_error err;
    char text[512], expect[256];
    int created = 7;

    /* An empty object of another user, world-writable: not even its size is looked at. */
    foreign_shm(0, OTHER, OTHER, 0666);
    poison(&seg);
    CHECK_STATUS(dmxp_segment_open_shm(&seg, name, 0, &err), DMXP_E_UNTRUSTED);
    CHECK(untouched(&seg));
    CHECK_EQ_U64(err.found, OTHER);
    CHECK_EQ_U64(err.value2, 0666);
    CHECK_EQ_U64(err.value3, 0600);
    CHECK(strcmp(err.field, "owner and mode") == 0);
    format_text(&err, text, sizeof text);
    snprintf(expect, sizeof expect,
             "shm segment %s: owned by uid 65534 with mode 0666; expected owner uid 0 and a "
             "mode within 0600",
             name);
    CHECK_TEXT(text, expect);
    CHECK_TEXT(text, ".trusted_uid = 65534 and .mode = 0666");
    CHECK(!mapped(shm_path));

    poison(&seg);
    CHECK_STATUS(dmxp_segment_open_or_create_shm(&seg, name, SEG_SIZE, 0600, 0, &created, &err),
                 DMXP_E_UNTRUSTED);
    CHECK(untouched(&seg));
    CHECK_EQ_U64(created, 0);
    format_text(&err, text, sizeof text);
    CHECK_TEXT(text, expect);
    CHECK_STATUS(dmxp_segment_open_or_create_shm_ex(&seg, name, SEG_SIZE, 0, NULL, NULL, &err),
                 DMXP_E_UNTRUSTED);
    CHECK(untouched(&seg));
    /* Not sized, chowned or chmodded by the attempts. */
    struct stat st = stat_of(shm_path);
    CHECK_EQ_U64(st.st_size, 0);
    CHECK_EQ_U64(st.st_uid, OTHER);
    CHECK_EQ_U64(st.st_mode & 07777, 0666);

    /* Trusting the owner does not widen the mode ... */
    dmxp_trust owner_only = trust_of(1, OTHER, 0);
    CHECK_STATUS(dmxp_segment_open_shm_trusting(&seg, name, 0, &owner_only, &err),
                 DMXP_E_UNTRUSTED);
    CHECK(strcmp(err.field, "mode") == 0);
    CHECK_EQ_U64(err.value3, 0600);
    format_text(&err, text, sizeof text);
    CHECK_TEXT(text, "owned by uid 65534 with mode 0666");
    CHECK_TEXT(text, "a mode within 0600");
    CHECK_STATUS(dmxp_segment_open_or_create_shm_ex(&seg, name, SEG_SIZE, 0, &owner_only, NULL,
                                                    &err),
                 DMXP_E_UNTRUSTED);
    /* ... and asking for the mode does not trust the owner. */
    dmxp_trust mode_only = trust_of(0, 0, 0666);
    CHECK_STATUS(dmxp_segment_open_shm_trusting(&seg, name, 0, &mode_only, &err),
                 DMXP_E_UNTRUSTED);
    CHECK(strcmp(err.field, "owner") == 0);
    CHECK_STATUS(dmxp_segment_open_or_create_shm(&seg, name, SEG_SIZE, 0666, 0, NULL, &err),
                 DMXP_E_UNTRUSTED);
    CHECK(strcmp(err.field, "owner") == 0);
    /* Trusting another uid is not trusting this one. */
    dmxp_trust wrong_uid = trust_of(1, OTHER - 1, 0666);
    CHECK_STATUS(dmxp_segment_open_shm_trusting(&seg, name, 0, &wrong_uid, &err),
                 DMXP_E_UNTRUSTED);

    /* Both opt-ins: past the trust check, to the "being created" wait (the object is empty). */
    dmxp_trust both = trust_of(1, OTHER, 0666);
    CHECK_STATUS(dmxp_segment_open_shm_trusting(&seg, name, 0, &both, &err), DMXP_E_NOT_READY);
    CHECK_STATUS(dmxp_segment_open_or_create_shm_ex(&seg, name, SEG_SIZE, 0, &both, NULL, &err),
                 DMXP_E_NOT_READY);
    CHECK_EQ_U64(stat_of(shm_path).st_size, 0); /* still never sized by an attacher */

    /* A real segment (formatted by this client as root, then given away): refused by default,
     * with nothing left mapped, and accepted with both opt-ins. */
    foreign_shm(1, OTHER, OTHER, 0666);
    poison(&seg);
    CHECK_STATUS(dmxp_segment_open_shm(&seg, name, 0, &err), DMXP_E_UNTRUSTED);
    CHECK(untouched(&seg));
    CHECK(!mapped(shm_path));
    CHECK_STATUS(dmxp_segment_open_or_create_shm(&seg, name, SEG_SIZE, 0600, 0, NULL, &err),
                 DMXP_E_UNTRUSTED);
    CHECK(untouched(&seg));
    CHECK(!mapped(shm_path));
    CHECK_STATUS(dmxp_segment_open_shm_trusting(&seg, name, 0, &owner_only, &err),
                 DMXP_E_UNTRUSTED);
    CHECK(!mapped(shm_path));

    CHECK_OK(dmxp_segment_open_shm_trusting(&seg, name, 0, &both, &err));
    CHECK_EQ_U64(seg.len, SEG_SIZE);
    CHECK_EQ_U64(seg.mapped_len, SEG_SIZE);
    CHECK(mapped(shm_path)); /* the maps check above can see a mapping */
    dmxp_segment_close(&seg);
    CHECK(!mapped(shm_path));
    created = 7;
    CHECK_OK(dmxp_segment_open_or_create_shm_ex(&seg, name, 4 * SEG_SIZE, 0, &both, &created,
                                                &err));
    CHECK_EQ_U64(created, 0);
    CHECK_EQ_U64(seg.len, SEG_SIZE); /* used as is */
    dmxp_channel ch;
    CHECK_OK(dmxp_channel_open_or_create(&seg, 0, 8, 0, &ch, NULL, &err));
    CHECK_OK(dmxp_try_send(&ch, "ok", 2, NULL, NULL));
    dmxp_segment_close(&seg);

    /* A descriptor checked by hand, as a caller of dmxp_segment_open_fd would. */
    int fd = shm_open(name, O_RDWR, 0);
    CHECK(fd >= 0);
    CHECK_STATUS(dmxp_check_trust_fd(fd, "shm segment by fd", NULL, &err), DMXP_E_UNTRUSTED);
    format_text(&err, text, sizeof text);
    CHECK_TEXT(text, "shm segment by fd: owned by uid 65534 with mode 0666");
    CHECK_OK(dmxp_check_trust_fd(fd, "shm segment by fd", &both, &err));
    close(fd);

    /* Owned by us but with a bit outside the asked mode: refused on the mode alone. */
    give_shm(0, 0, 0604);
    CHECK_STATUS(dmxp_segment_open_shm(&seg, name, 0, &err), DMXP_E_UNTRUSTED);
    CHECK(strcmp(err.field, "mode") == 0);
    CHECK_EQ_U64(err.found, 0);
    CHECK_EQ_U64(err.value2, 0604);
    format_text(&err, text, sizeof text);
    CHECK_TEXT(text, "owned by uid 0 with mode 0604; expected owner uid 0 and a mode within 0600");
    CHECK(!mapped(shm_path));
    /* A narrower mode than asked is fine. */
    give_shm(0, 0, 0400);
    CHECK_OK(dmxp_segment_open_shm(&seg, name, 0, &err));
    dmxp_segment_close(&seg);
    CHECK_OK(dmxp_shm_unlink(name, &err));
}

/* ---- group access ----------------------------------------------------------------------- */

static void group_access(void) {
    dmxp_segment seg;
    dmxp_error err;
    char text[512];
    int created = 7;
    dmxp_trust group = DMXP_TRUST_DEFAULT;
    group.group_access = 1;
    dmxp_trust named = group;
    named.has_gid = 1;
    named.gid = OTHER;

    /* Ours, 0660: the default policy (0600) refuses the group bits ... */
    foreign_shm(1, 0, 0, 0660);
    CHECK_STATUS(dmxp_segment_open_shm(&seg, name, 0, &err), DMXP_E_UNTRUSTED);
    CHECK(strcmp(err.field, "mode") == 0);
    CHECK_EQ_U64(err.found, 0);
    CHECK_EQ_U64(err.value2, 0660);
    CHECK_EQ_U64(err.value3, 0600);
    format_text(&err, text, sizeof text);
    CHECK_TEXT(text, "owned by uid 0 with mode 0660; expected owner uid 0 and a mode within 0600");
    CHECK(!mapped(shm_path));
    CHECK_STATUS(dmxp_segment_open_or_create_shm(&seg, name, SEG_SIZE, 0600, 0, NULL, &err),
                 DMXP_E_UNTRUSTED);
    /* ... the mode argument of open_or_create is the mode asked for ... */
    CHECK_OK(dmxp_segment_open_or_create_shm(&seg, name, SEG_SIZE, 0660, 0, &created, &err));
    CHECK_EQ_U64(created, 0);
    dmxp_segment_close(&seg);
    /* ... and group access asks for 0660. */
    CHECK_OK(dmxp_segment_open_shm_trusting(&seg, name, 0, &group, &err));
    CHECK_EQ_U64(seg.len, SEG_SIZE);
    dmxp_segment_close(&seg);
    created = 7;
    CHECK_OK(dmxp_segment_open_or_create_shm_ex(&seg, name, SEG_SIZE, 0, &group, &created, &err));
    CHECK_EQ_U64(created, 0);
    dmxp_segment_close(&seg);
    /* Group access does not reach other bits. */
    give_shm(0, 0, 0664);
    CHECK_STATUS(dmxp_segment_open_shm_trusting(&seg, name, 0, &group, &err), DMXP_E_UNTRUSTED);
    CHECK(strcmp(err.field, "mode") == 0);

    /* Owned by another user, in our group: trusted only through group access. */
    give_shm(OTHER, 0, 0660);
    dmxp_trust mode_660 = trust_of(0, 0, 0660);
    CHECK_STATUS(dmxp_segment_open_shm_trusting(&seg, name, 0, &mode_660, &err),
                 DMXP_E_UNTRUSTED);
    CHECK(strcmp(err.field, "owner") == 0);
    CHECK_OK(dmxp_segment_open_shm_trusting(&seg, name, 0, &group, &err));
    dmxp_segment_close(&seg);
    /* A named group must be the object's. */
    CHECK_STATUS(dmxp_segment_open_shm_trusting(&seg, name, 0, &named, &err), DMXP_E_UNTRUSTED);
    CHECK(strcmp(err.field, "owner") == 0);
    format_text(&err, text, sizeof text);
    CHECK_TEXT(text, "owned by uid 65534, group gid 0, with mode 0660; expected owner uid 0 or "
                     "group gid 65534 and a mode within 0660");

    /* Another user's group: only when named (unless this process happens to be in it). */
    give_shm(OTHER, OTHER, 0660);
    if (!in_my_groups(OTHER)) {
        CHECK_STATUS(dmxp_segment_open_shm_trusting(&seg, name, 0, &group, &err),
                     DMXP_E_UNTRUSTED);
        format_text(&err, text, sizeof text);
        CHECK_TEXT(text, "or one of this process's groups");
    }
    CHECK_OK(dmxp_segment_open_shm_trusting(&seg, name, 0, &named, &err));
    dmxp_segment_close(&seg);
    CHECK_OK(dmxp_shm_unlink(name, &err));

    /* Creating with a named group: the new segment is the group's, mode 0660. */
    created = 7;
    CHECK_OK(dmxp_segment_open_or_create_shm_ex(&seg, name, SEG_SIZE, 0, &named, &created, &err));
    CHECK_EQ_U64(created, 1);
    dmxp_segment_close(&seg);
    struct stat st = stat_of(shm_path);
    CHECK_EQ_U64(st.st_gid, OTHER);
    CHECK_EQ_U64(st.st_uid, 0);
    CHECK_EQ_U64(st.st_mode & 07777, 0660);
    CHECK_OK(dmxp_shm_unlink(name, &err));
}

/* ---- symbolic links and other non-files ------------------------------------------------ */

static void symlinks_refused(void) {
    dmxp_segment seg;
    dmxp_error err;
    char text[512];
    char target[128], link_path[128], absent[128], dangling[128], fifo[128], shm_link[128];
    snprintf(target, sizeof target, "%s/target", dir);
    snprintf(link_path, sizeof link_path, "%s/link", dir);
    snprintf(absent, sizeof absent, "%s/absent", dir);
    snprintf(dangling, sizeof dangling, "%s/dangling", dir);
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    snprintf(shm_link, sizeof shm_link, "%s_link", name);

    /* A root-only file shaped like a segment, and a link to it. */
    CHECK_OK(dmxp_segment_create_path(&seg, target, SEG_SIZE, 0600, &err));
    dmxp_segment_close(&seg);
    uint64_t sum = checksum(target);
    CHECK(symlink(target, link_path) == 0);
    dmxp_trust anything = trust_of(1, OTHER, 0777);
    int created = 7;

    poison(&seg);
    dmxp_status s = dmxp_segment_open_path(&seg, link_path, 0, &err);
    use_if_opened(s, &seg);
    CHECK_STATUS(s, DMXP_E_UNTRUSTED);
    CHECK(strcmp(err.field, "symlink") == 0);
    format_text(&err, text, sizeof text);
    char expect[256];
    snprintf(expect, sizeof expect, "file segment %s: is a symbolic link", link_path);
    CHECK_TEXT(text, expect);
    CHECK(untouched(&seg));
    s = dmxp_segment_open_path_trusting(&seg, link_path, 0, &anything, &err);
    use_if_opened(s, &seg);
    CHECK_STATUS(s, DMXP_E_UNTRUSTED); /* no opt-in reaches through a link */
    s = dmxp_segment_open_or_create_path(&seg, link_path, SEG_SIZE, 0600, 0, &created, &err);
    use_if_opened(s, &seg);
    CHECK_STATUS(s, DMXP_E_UNTRUSTED);
    CHECK_EQ_U64(created, 0);
    s = dmxp_segment_open_or_create_path_ex(&seg, link_path, SEG_SIZE, 0, &anything, NULL, &err);
    use_if_opened(s, &seg);
    CHECK_STATUS(s, DMXP_E_UNTRUSTED);
    /* Exclusive create never replaces the link nor writes through it. */
    s = dmxp_segment_create_path(&seg, link_path, SEG_SIZE, 0600, &err);
    use_if_opened(s, &seg);
    CHECK_STATUS(s, DMXP_E_SEGMENT_EXISTS);
    CHECK(S_ISLNK(stat_of(link_path).st_mode));
    CHECK(!mapped(target));
    CHECK_EQ_U64(checksum(target), sum);

    /* A dangling link: create does not create its target, attach refuses the link. */
    CHECK(symlink(absent, dangling) == 0);
    CHECK_STATUS(dmxp_segment_create_path(&seg, dangling, SEG_SIZE, 0600, &err),
                 DMXP_E_SEGMENT_EXISTS);
    CHECK(!exists(absent));
    s = dmxp_segment_open_or_create_path(&seg, dangling, SEG_SIZE, 0600, 0, NULL, &err);
    use_if_opened(s, &seg);
    CHECK_STATUS(s, DMXP_E_UNTRUSTED);
    CHECK(!exists(absent));
    CHECK_STATUS(dmxp_segment_open_path(&seg, dangling, 0, &err), DMXP_E_UNTRUSTED);

    /* A link planted in /dev/shm under a segment name. */
    char shm_link_path[160];
    snprintf(shm_link_path, sizeof shm_link_path, "/dev/shm%s", shm_link);
    unlink(shm_link_path);
    CHECK(symlink(target, shm_link_path) == 0);
    s = dmxp_segment_open_shm(&seg, shm_link, 0, &err);
    use_if_opened(s, &seg);
    CHECK_STATUS(s, DMXP_E_UNTRUSTED);
    CHECK(strcmp(err.field, "symlink") == 0);
    format_text(&err, text, sizeof text);
    CHECK_TEXT(text, "is a symbolic link");
    s = dmxp_segment_open_or_create_shm(&seg, shm_link, SEG_SIZE, 0600, 0, NULL, &err);
    use_if_opened(s, &seg);
    CHECK_STATUS(s, DMXP_E_UNTRUSTED);
    s = dmxp_segment_open_or_create_shm_ex(&seg, shm_link, SEG_SIZE, 0, &anything, NULL, &err);
    use_if_opened(s, &seg);
    CHECK_STATUS(s, DMXP_E_UNTRUSTED);
    CHECK(S_ISLNK(stat_of(shm_link_path).st_mode));
    CHECK(unlink(shm_link_path) == 0);
    CHECK(!mapped(target));
    CHECK_EQ_U64(checksum(target), sum);

    /* Not a regular file (T1): a FIFO at the path. */
    CHECK(mkfifo(fifo, 0600) == 0);
    CHECK_STATUS(dmxp_segment_open_path(&seg, fifo, 0, &err), DMXP_E_UNTRUSTED);
    CHECK(strcmp(err.field, "type") == 0);
    format_text(&err, text, sizeof text);
    CHECK_TEXT(text, "not a regular file");
    CHECK_STATUS(dmxp_segment_open_or_create_path_ex(&seg, fifo, SEG_SIZE, 0, &anything, NULL,
                                                     &err),
                 DMXP_E_UNTRUSTED);
    CHECK(S_ISFIFO(stat_of(fifo).st_mode));

    /* The target itself is ours and 0600: the default policy accepts it. */
    CHECK_OK(dmxp_segment_open_path(&seg, target, 0, &err));
    CHECK_EQ_U64(seg.len, SEG_SIZE);
    CHECK(mapped(target));
    dmxp_segment_close(&seg);
    CHECK_EQ_U64(checksum(target), sum);

    unlink(fifo);
    unlink(dangling);
    unlink(link_path);
    unlink(target);
}

/* ---- the directory of a file segment ---------------------------------------------------- */

static void parent_directory(void) {
    dmxp_segment seg;
    dmxp_error err;
    char text[512];
    char sub[128], path[160], other[160];
    snprintf(sub, sizeof sub, "%s/shared", dir);
    snprintf(path, sizeof path, "%s/seg", sub);
    snprintf(other, sizeof other, "%s/other", sub);
    CHECK(mkdir(sub, 0700) == 0);
    CHECK_OK(dmxp_segment_create_path(&seg, path, SEG_SIZE, 0600, &err));
    dmxp_segment_close(&seg);
    uint64_t sum = checksum(path);
    dmxp_trust anything = trust_of(1, OTHER, 0777);

    /* Writable by others, not sticky: anyone could swap the segment. */
    CHECK(chmod(sub, 0777) == 0);
    poison(&seg);
    dmxp_status s = dmxp_segment_open_path(&seg, path, 0, &err);
    use_if_opened(s, &seg);
    CHECK_STATUS(s, DMXP_E_UNTRUSTED);
    CHECK(untouched(&seg));
    CHECK(strcmp(err.field, "directory") == 0);
    CHECK_EQ_U64(err.found, 0);
    CHECK_EQ_U64(err.value2, 0777);
    format_text(&err, text, sizeof text);
    CHECK_TEXT(text, "mode 0777) is writable by others and not sticky");
    CHECK_TEXT(text, path);
    s = dmxp_segment_open_path_trusting(&seg, path, 0, &anything, &err);
    use_if_opened(s, &seg);
    CHECK_STATUS(s, DMXP_E_UNTRUSTED);
    s = dmxp_segment_open_or_create_path(&seg, path, SEG_SIZE, 0600, 0, NULL, &err);
    use_if_opened(s, &seg);
    CHECK_STATUS(s, DMXP_E_UNTRUSTED);
    s = dmxp_segment_open_or_create_path_ex(&seg, path, SEG_SIZE, 0, &anything, NULL, &err);
    use_if_opened(s, &seg);
    CHECK_STATUS(s, DMXP_E_UNTRUSTED);
    CHECK(!mapped(path));
    CHECK_EQ_U64(checksum(path), sum);
    /* Creating there is refused too, and leaves nothing behind. */
    s = dmxp_segment_create_path(&seg, other, SEG_SIZE, 0600, &err);
    use_if_opened(s, &seg);
    CHECK_STATUS(s, DMXP_E_UNTRUSTED);
    s = dmxp_segment_open_or_create_path(&seg, other, SEG_SIZE, 0600, 0, NULL, &err);
    use_if_opened(s, &seg);
    CHECK_STATUS(s, DMXP_E_UNTRUSTED);
    CHECK(!exists(other));
    /* Others' write bit alone is enough. */
    CHECK(chmod(sub, 0703) == 0);
    CHECK_STATUS(dmxp_segment_open_path(&seg, path, 0, &err), DMXP_E_UNTRUSTED);

    /* Sticky (like /tmp): others may add entries but not replace ours. */
    CHECK(chmod(sub, 01777) == 0);
    CHECK_OK(dmxp_segment_open_path(&seg, path, 0, &err));
    CHECK_EQ_U64(seg.len, SEG_SIZE);
    dmxp_segment_close(&seg);
    int created = 7;
    CHECK_OK(dmxp_segment_open_or_create_path(&seg, path, SEG_SIZE, 0600, 0, &created, &err));
    CHECK_EQ_U64(created, 0);
    dmxp_segment_close(&seg);
    CHECK_OK(dmxp_segment_create_path(&seg, other, SEG_SIZE, 0600, &err));
    dmxp_segment_close(&seg);
    /* Group-writable only: not "others". */
    CHECK(chmod(sub, 0770) == 0);
    CHECK_OK(dmxp_segment_open_path(&seg, path, 0, &err));
    dmxp_segment_close(&seg);
    /* A relative path is checked against its directory too. */
    char cwd[4096];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK(chdir(sub) == 0);
    CHECK(chmod(".", 0777) == 0);
    CHECK_STATUS(dmxp_segment_open_path(&seg, "seg", 0, &err), DMXP_E_UNTRUSTED);
    CHECK(strcmp(err.field, "directory") == 0);
    CHECK(chmod(".", 0700) == 0);
    CHECK_OK(dmxp_segment_open_path(&seg, "seg", 0, &err));
    dmxp_segment_close(&seg);
    CHECK(chdir(cwd) == 0);

    unlink(path);
    unlink(other);
    rmdir(sub);
}

int main(void) {
    if (geteuid() != 0) {
        printf("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
               "!!! SKIP test_trust: not root (euid %u). It hands objects to another user and\n"
               "!!! so needs root; NOTHING of the attach-trust rules was tested.\n"
               "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
               (unsigned)geteuid());
        return 0;
    }
    snprintf(name, sizeof name, "/dmxp_c_trust_%ld", (long)getpid());
    snprintf(shm_path, sizeof shm_path, "/dev/shm%s", name);
    snprintf(dir, sizeof dir, "/tmp/dmxp_c_trust_XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    names_refused();
    foreign_owner_refused();
    group_access();
    symlinks_refused();
    parent_directory();
    shm_unlink(name);
    CHECK(rmdir(dir) == 0);
    TEST_DONE("test_trust");
}
