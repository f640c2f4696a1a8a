/*
 * test_tree.c: capture and materialize round trips on real trees (every entry
 * type, sparse files, odd names, deep paths, overlayfs uppers, random trees),
 * dedup across captures, and corruption detection. A tree comparison helper
 * walks two trees with *at calls (so paths longer than PATH_MAX work) and
 * compares type, mode, owner, mtime in ns, size, content, symlink target, rdev,
 * xattrs, hardlink groups and sparse layout.
 *
 * Runs as root in CI (devices, chown, trusted.* xattrs, overlay mounts); as
 * another user the root-only parts are skipped with a loud message.
 */
#include "testutil.h"

#include "cairn/alloc.h"
#include "cairn/chunker.h"
#include "cairn/crypto.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "cairn/manifest.h"
#include "cairn/store.h"
#include "cairn/tree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

static bool is_root;

/* ---- fixture ---- */

struct fx {
    char *dir;
    struct cairn_store *s;
    struct cairn_domain *d;
};

static void fx_open(struct fx *f, const char *tag)
{
    memset(f, 0, sizeof(*f));
    f->dir = tu_tempdir(tag);
    assert_int_equal(cairn_crypto_init(), CAIRN_OK);
    assert_int_equal(cairn_store_open(&f->s, tu_path("%s/store", f->dir), true), CAIRN_OK);
    uint8_t key[CAIRN_KEY_BYTES];
    cairn_random_bytes(key, sizeof(key));
    assert_int_equal(cairn_domain_new(&f->d, key), CAIRN_OK);
}

static void fx_close(struct fx *f)
{
    cairn_domain_destroy(&f->d);
    cairn_store_close(&f->s);
    tu_rmrf(f->dir);
    free(f->dir);
}

static void capture(struct fx *f, const char *src, unsigned flags, struct cairn_tree_ref *ref,
                    struct cairn_tree_stats *st)
{
    struct cairn_tree_opts o = {.flags = flags};
    int rc = cairn_tree_capture(f->s, f->d, src, &o, ref, st);
    if (rc != CAIRN_OK)
        fail_msg("capture %s: %s: %s", src, cairn_err_name(rc), cairn_err_msg());
}

static void materialize(struct fx *f, const struct cairn_tree_ref *ref, const char *dest, unsigned flags)
{
    struct cairn_tree_opts o = {.flags = flags};
    struct cairn_tree_stats st;
    int rc = cairn_tree_materialize(f->s, f->d, ref, dest, &o, &st);
    if (rc != CAIRN_OK)
        fail_msg("materialize to %s: %s: %s", dest, cairn_err_name(rc), cairn_err_msg());
}

/* ---- building trees with *at calls (odd names, deep paths) ---- */

static int xopenat_dir(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        fail_msg("open dir %s: %s", name, strerror(errno));
    return fd;
}

static void mk_dir(int dirfd, const char *name, mode_t mode)
{
    if (mkdirat(dirfd, name, mode) != 0)
        fail_msg("mkdir %s: %s", name, strerror(errno));
    fchmodat(dirfd, name, mode, 0);
}

static void mk_file(int dirfd, const char *name, const void *data, size_t n)
{
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        fail_msg("create %s: %s", name, strerror(errno));
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, (const uint8_t *)data + off, n - off);
        if (w <= 0)
            fail_msg("write %s: %s", name, strerror(errno));
        off += (size_t)w;
    }
    close(fd);
}

static void mk_random_file(int dirfd, const char *name, size_t n, uint64_t *seed)
{
    uint8_t *b = malloc(n ? n : 1);
    tu_fill_random(seed, b, n);
    mk_file(dirfd, name, b, n);
    free(b);
}

static void set_mtime(int dirfd, const char *name, int64_t sec, long nsec)
{
    struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
    if (utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW) != 0)
        fail_msg("utimensat %s: %s", name, strerror(errno));
}

static void set_xattr(int dirfd, const char *name, const char *xname, const void *val, size_t len)
{
    char p[512];
    snprintf(p, sizeof(p), "/proc/self/fd/%d/%s", dirfd, name);
    if (lsetxattr(p, xname, val, len, 0) != 0)
        fail_msg("setxattr %s on %s: %s", xname, name, strerror(errno));
}

/* ---- comparison ---- */

/*
 * Comparison failures abort the test, or (soft mode, for the comparator's own
 * test, in a forked child) write the message to cmp_fd and exit 1.
 */
#include <sys/wait.h>
static int cmp_fd = -1;
static char cmp_msg[1024];
#define CMP_FAIL(...)                                                \
    do {                                                             \
        if (cmp_fd >= 0) {                                           \
            dprintf(cmp_fd, __VA_ARGS__);                            \
            _exit(1);                                                \
        }                                                            \
        fail_msg(__VA_ARGS__);                                       \
    } while (0)

struct hlrec {
    char *path;
    ino_t a, b;
};

struct cmp {
    struct hlrec *hl;
    size_t nhl, cap;
};

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char **list_names(int dirfd, size_t *n)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fdopendir(fd);
    if (!d)
        CMP_FAIL("cannot list a directory: %s", strerror(errno));
    char **v = NULL;
    size_t cnt = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            v = realloc(v, cap * sizeof(*v));
        }
        v[cnt++] = strdup(de->d_name);
    }
    closedir(d);
    if (cnt > 1)
        qsort(v, cnt, sizeof(*v), name_cmp);
    *n = cnt;
    return v;
}

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* xattrs of dirfd/name (or of fd itself when name is NULL) as a sorted "name=value\n" string */
static char *xattr_dump(int dirfd, const char *name)
{
    char p[512], list[65536];
    ssize_t n;
    if (name) {
        snprintf(p, sizeof(p), "/proc/self/fd/%d/%s", dirfd, name);
        n = llistxattr(p, list, sizeof(list));
    } else {
        n = flistxattr(dirfd, list, sizeof(list));
    }
    if (n < 0)
        n = 0;
    char *names[1100];
    size_t cnt = 0;
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(list + i) + 1)
        if (cnt < 1100)
            names[cnt++] = list + i;
    if (cnt > 1)
        qsort(names, cnt, sizeof(char *), name_cmp);
    size_t cap = 1024, len = 0;
    char *out = malloc(cap);
    out[0] = 0;
    for (size_t i = 0; i < cnt; i++) {
        static char val[65536 + 1];
        ssize_t v = name ? lgetxattr(p, names[i], val, sizeof(val) - 1) : fgetxattr(dirfd, names[i], val, sizeof(val) - 1);
        if (v < 0)
            v = 0;
        size_t need = len + strlen(names[i]) + (size_t)v * 2 + 4;
        if (need >= cap) {
            cap = need * 2;
            out = realloc(out, cap);
        }
        len += (size_t)snprintf(out + len, cap - len, "%s=", names[i]);
        for (ssize_t k = 0; k < v; k++)
            len += (size_t)snprintf(out + len, cap - len, "%02x", (unsigned char)val[k]);
        out[len++] = '\n';
        out[len] = 0;
    }
    return out;
}

static void cmp_meta(const char *rel, const struct stat *a, const struct stat *b, bool check_mtime)
{
    if ((a->st_mode & S_IFMT) != (b->st_mode & S_IFMT))
        CMP_FAIL("'%s': type 0%o vs 0%o", rel, a->st_mode & S_IFMT, b->st_mode & S_IFMT);
    if (!S_ISLNK(a->st_mode) && (a->st_mode & 07777) != (b->st_mode & 07777))
        CMP_FAIL("'%s': mode 0%o vs 0%o", rel, a->st_mode & 07777, b->st_mode & 07777);
    if (is_root && (a->st_uid != b->st_uid || a->st_gid != b->st_gid))
        CMP_FAIL("'%s': owner %u:%u vs %u:%u", rel, a->st_uid, a->st_gid, b->st_uid, b->st_gid);
    if (check_mtime &&
        (a->st_mtim.tv_sec != b->st_mtim.tv_sec || a->st_mtim.tv_nsec != b->st_mtim.tv_nsec))
        CMP_FAIL("'%s': mtime %lld.%09ld vs %lld.%09ld", rel, (long long)a->st_mtim.tv_sec, a->st_mtim.tv_nsec,
                 (long long)b->st_mtim.tv_sec, b->st_mtim.tv_nsec);
}

/* Data regions of a file as (start, end) pairs. */
static size_t data_regions(int fd, off_t size, off_t *out, size_t max)
{
    size_t n = 0;
    off_t off = 0;
    while (off < size && n + 2 <= max) {
        off_t d = lseek(fd, off, SEEK_DATA);
        if (d < 0)
            break;
        off_t h = lseek(fd, d, SEEK_HOLE);
        if (h < 0)
            h = size;
        out[n++] = d;
        out[n++] = h;
        off = h;
    }
    return n;
}

static void cmp_file(const char *rel, int fa, int fb, const struct stat *sa, const struct stat *sb)
{
    if (sa->st_size != sb->st_size)
        CMP_FAIL("'%s': size %lld vs %lld", rel, (long long)sa->st_size, (long long)sb->st_size);
    bool sparse = (off_t)sa->st_blocks * 512 < sa->st_size;
    off_t ra[256], rb[256];
    size_t na = 0, nb = 0;
    if (sparse) {
        na = data_regions(fa, sa->st_size, ra, 256);
        nb = data_regions(fb, sb->st_size, rb, 256);
        if (na != nb || memcmp(ra, rb, na * sizeof(off_t)) != 0)
            CMP_FAIL("'%s': sparse layout differs (%zu vs %zu region bounds)", rel, na, nb);
        if (sb->st_blocks > sa->st_blocks + 64)
            CMP_FAIL("'%s': %lld blocks vs %lld: holes were filled", rel, (long long)sa->st_blocks,
                     (long long)sb->st_blocks);
    } else {
        ra[0] = 0;
        ra[1] = sa->st_size;
        na = 2;
    }
    static uint8_t ba[1 << 20], bb[1 << 20];
    for (size_t r = 0; r < na; r += 2) {
        for (off_t off = ra[r]; off < ra[r + 1];) {
            size_t want = (size_t)CAIRN_MIN((off_t)sizeof(ba), ra[r + 1] - off);
            ssize_t x = pread(fa, ba, want, off), y = pread(fb, bb, want, off);
            if (x != (ssize_t)want || y != (ssize_t)want)
                CMP_FAIL("'%s': short read at %lld", rel, (long long)off);
            if (memcmp(ba, bb, want) != 0)
                CMP_FAIL("'%s': content differs in [%lld, %lld)", rel, (long long)off, (long long)(off + (off_t)want));
            off += (off_t)want;
        }
    }
}

static void cmp_dir(struct cmp *c, int da, int db, const char *rel);

static void cmp_entry(struct cmp *c, int da, int db, const char *name, const char *rel)
{
    struct stat sa, sb;
    if (fstatat(da, name, &sa, AT_SYMLINK_NOFOLLOW) != 0)
        CMP_FAIL("'%s': stat a: %s", rel, strerror(errno));
    if (fstatat(db, name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
        CMP_FAIL("'%s': missing in b: %s", rel, strerror(errno));
    cmp_meta(rel, &sa, &sb, true);
    char *xa = xattr_dump(da, name), *xb = xattr_dump(db, name);
    if (strcmp(xa, xb) != 0)
        CMP_FAIL("'%s': xattrs differ:\n%s---\n%s", rel, xa, xb);
    free(xa);
    free(xb);
    if (S_ISREG(sa.st_mode)) {
        int fa = openat(da, name, O_RDONLY | O_NOFOLLOW), fb = openat(db, name, O_RDONLY | O_NOFOLLOW);
        if (fa < 0 || fb < 0)
            CMP_FAIL("'%s': cannot open", rel);
        cmp_file(rel, fa, fb, &sa, &sb);
        close(fa);
        close(fb);
        if (sa.st_nlink > 1 || sb.st_nlink > 1) {
            if (c->nhl == c->cap) {
                c->cap = c->cap ? c->cap * 2 : 16;
                c->hl = realloc(c->hl, c->cap * sizeof(*c->hl));
            }
            c->hl[c->nhl++] = (struct hlrec){strdup(rel), sa.st_ino, sb.st_ino};
            if (sa.st_nlink != sb.st_nlink)
                CMP_FAIL("'%s': nlink %lu vs %lu", rel, (unsigned long)sa.st_nlink, (unsigned long)sb.st_nlink);
        }
    } else if (S_ISLNK(sa.st_mode)) {
        char ta[8192], tb[8192];
        ssize_t x = readlinkat(da, name, ta, sizeof(ta)), y = readlinkat(db, name, tb, sizeof(tb));
        if (x != y || x < 0 || memcmp(ta, tb, (size_t)x) != 0)
            CMP_FAIL("'%s': symlink targets differ", rel);
    } else if (S_ISCHR(sa.st_mode) || S_ISBLK(sa.st_mode)) {
        if (sa.st_rdev != sb.st_rdev)
            CMP_FAIL("'%s': rdev differs", rel);
    } else if (S_ISDIR(sa.st_mode)) {
        int fa = openat(da, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW),
            fb = openat(db, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        if (fa < 0 || fb < 0)
            CMP_FAIL("'%s': cannot open the directory", rel);
        cmp_dir(c, fa, fb, rel);
        close(fa);
        close(fb);
    }
}

static void cmp_dir(struct cmp *c, int da, int db, const char *rel)
{
    size_t na, nb;
    char **a = list_names(da, &na), **b = list_names(db, &nb);
    for (size_t i = 0, j = 0; i < na || j < nb;) {
        int k = i == na ? 1 : j == nb ? -1 : strcmp(a[i], b[j]);
        if (k < 0)
            CMP_FAIL("'%s/%s' only in a", rel, a[i]);
        if (k > 0)
            CMP_FAIL("'%s/%s' only in b", rel, b[j]);
        i++;
        j++;
    }
    for (size_t i = 0; i < na; i++) {
        size_t l = strlen(rel) + strlen(a[i]) + 2;
        char *sub = malloc(l);
        snprintf(sub, l, "%s/%s", rel, a[i]);
        cmp_entry(c, da, db, a[i], sub);
        free(sub);
    }
    free_names(a, na);
    free_names(b, nb);
}

enum { CMP_ROOT = 1 };

/* Compare trees a and b; with CMP_ROOT also the roots' own metadata. */
static void tree_compare(const char *a, const char *b, unsigned flags)
{
    int fa = open(a, O_RDONLY | O_DIRECTORY), fb = open(b, O_RDONLY | O_DIRECTORY);
    if (fa < 0 || fb < 0)
        CMP_FAIL("cannot open '%s' or '%s'", a, b);
    struct cmp c = {0};
    if (flags & CMP_ROOT) {
        struct stat sa, sb;
        fstat(fa, &sa);
        fstat(fb, &sb);
        cmp_meta(".", &sa, &sb, true);
        char *xa = xattr_dump(fa, NULL), *xb = xattr_dump(fb, NULL);
        if (strcmp(xa, xb) != 0)
            CMP_FAIL("root: xattrs differ:\n%s---\n%s", xa, xb);
        free(xa);
        free(xb);
    }
    cmp_dir(&c, fa, fb, ".");
    /* hardlink structure: same inode groups on both sides */
    for (size_t i = 0; i < c.nhl; i++)
        for (size_t j = i + 1; j < c.nhl; j++)
            if ((c.hl[i].a == c.hl[j].a) != (c.hl[i].b == c.hl[j].b))
                CMP_FAIL("hardlink groups differ for '%s' and '%s'", c.hl[i].path, c.hl[j].path);
    for (size_t i = 0; i < c.nhl; i++)
        free(c.hl[i].path);
    free(c.hl);
    close(fa);
    close(fb);
    /* the restored root's mtime may only be compared after the walk (reading does not change it) */
}

/* Soft compare (in a child process): true when equal, else false with the difference in cmp_msg. */
static bool trees_equal(const char *a, const char *b)
{
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        cmp_fd = pfd[1];
        tree_compare(a, b, CMP_ROOT);
        _exit(0);
    }
    close(pfd[1]);
    ssize_t n = read(pfd[0], cmp_msg, sizeof(cmp_msg) - 1);
    cmp_msg[n > 0 ? n : 0] = 0;
    close(pfd[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st) == 0;
}

/* ---- cases ---- */

/* The comparator itself must see every kind of difference, or the round trips prove nothing. */
static void test_comparator(void **state)
{
    (void)state;
    char *dir = tu_tempdir("tree-cmp");
    char *a = strdup(tu_path("%s/a", dir)), *b = strdup(tu_path("%s/b", dir));
    assert_int_equal(mkdir(a, 0755), 0);
    int r = open(a, O_RDONLY | O_DIRECTORY);
    uint64_t seed = 1;
    mk_dir(r, "d", 0755);
    mk_random_file(r, "d/f", 100000, &seed);
    mk_file(r, "g", "0123456789", 10);
    mk_file(r, "h", "0123456789", 10);
    assert_int_equal(linkat(r, "g", r, "d/g2", 0), 0);
    assert_int_equal(symlinkat("target", r, "l"), 0);
    set_xattr(r, "d/f", "user.a", "1", 1);
    int fd = openat(r, "sp", O_WRONLY | O_CREAT, 0644);
    assert_int_equal(ftruncate(fd, 1 << 24), 0);
    assert_int_equal(pwrite(fd, "x", 1, 1 << 20), 1);
    close(fd);
    close(r);
    struct {
        const char *what, *cmd;
    } muts[] = {
        {"content", "printf Z | dd of=B/d/f bs=1 seek=50000 conv=notrunc status=none"},
        {"mode", "chmod 600 B/d/f"},
        {"mtime ns", "touch -m -d '2001-01-01 00:00:00.000000001' B/h"},
        {"dir mtime", "touch -m -d '2001-01-01' B/d"},
        {"root mode", "chmod 700 B"},
        {"xattr value", "setfattr -n user.a -v 2 B/d/f"},
        {"extra xattr", "setfattr -n user.b -v 2 B/h"},
        {"symlink target", "rm B/l && ln -s other B/l"},
        {"extra file", "touch B/new"},
        {"missing file", "rm B/h"},
        {"type", "rm B/h && mkdir B/h"},
        {"size", "truncate -s 11 B/h"},
        {"hardlink groups", "rm B/d/g2 && ln B/h B/d/g2"},
        {"hardlink broken", "rm B/d/g2 && cp -p B/g B/d/g2"},
        {"hole filled", "dd if=/dev/zero of=B/sp bs=1M count=1 conv=notrunc status=none"},
        {"owner", "chown 1:1 B/h"},
    };
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(muts); i++) {
        if (!is_root && strstr(muts[i].what, "owner"))
            continue;
        tu_rmrf(b);
        assert_int_equal(tu_sh("cp -a --sparse=always '%s' '%s'", a, b), 0);
        assert_true(trees_equal(a, b));
        char cmd[1024], *o = cmd;
        for (const char *p = muts[i].cmd; *p && o < cmd + sizeof(cmd) - 300; p++) {
            if (*p == 'B') {
                o += snprintf(o, 300, "'%s'", b);
            } else {
                *o++ = *p;
            }
        }
        *o = 0;
        assert_int_equal(tu_sh("%s", cmd), 0);
        if (!strstr(muts[i].what, "mtime")) /* only the intended change: copy every mtime back */
            tu_sh("cd '%s' && find . -depth -exec touch -h -m -r '%s/{}' '%s/{}' \\; 2>/dev/null", a, a, b);
        bool eq = trees_equal(a, b);
        if (eq)
            fail_msg("the comparator missed a change of %s", muts[i].what);
        fprintf(stderr, "comparator sees %s: %s\n", muts[i].what, cmp_msg);
    }
    tu_rmrf(dir);
    free(a);
    free(b);
    free(dir);
}

static void test_empty_dir(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "tree-empty");
    char *src = strdup(tu_path("%s/src", f.dir)), *dst = strdup(tu_path("%s/dst/sub", f.dir));
    assert_int_equal(mkdir(src, 0751), 0);
    chmod(src, 0751);
    struct cairn_tree_ref ref;
    struct cairn_tree_stats st;
    capture(&f, src, 0, &ref, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.dirs, 1);
    assert_int_equal(st.files, 0);
    assert_true(ref.n_chunks >= 1);
    assert_true(ref.manifest_len > 0);
    materialize(&f, &ref, dst, 0); /* dest and its parent are created */
    tree_compare(src, dst, CMP_ROOT);
    cairn_tree_ref_release(&ref);
    assert_null(ref.chunks);
    cairn_tree_ref_release(&ref);
    free(src);
    free(dst);
    fx_close(&f);
}

static int count_chunk(void *arg, const uint8_t id[CAIRN_CHUNK_ID_BYTES])
{
    (void)id;
    (*(size_t *)arg)++;
    return CAIRN_OK;
}

static char *log_path;
static int log_fd = -1;

static void log_to_file(const char *dir)
{
    free(log_path);
    log_path = strdup(tu_path("%s/log.txt", dir));
    log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    assert_true(log_fd >= 0);
    cairn_log_set_fd(log_fd);
}

static char *log_restore(void)
{
    cairn_log_set_fd(2);
    close(log_fd);
    log_fd = -1;
    size_t n;
    uint8_t *b = tu_read_file(log_path, &n);
    b[n] = 0;
    fputs((char *)b, stderr);
    return (char *)b;
}

static void test_all_types(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "tree-types");
    char *src = strdup(tu_path("%s/src", f.dir));
    char *dst = strdup(tu_path("%s/dst", f.dir));
    assert_int_equal(mkdir(src, 0755), 0);
    int r = open(src, O_RDONLY | O_DIRECTORY);
    uint64_t seed = 42;

    mk_dir(r, "d", 0755);
    mk_dir(r, "d/sub", 02775);
    mk_dir(r, "sticky", 01777);
    mk_file(r, "empty", "", 0);
    mk_file(r, "d/empty2", "", 0);
    const size_t sizes[] = {1, 100, 16383, 16384, 16385, 65535, 65536, 65537, 262143, 262144, 262145, 1000000};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(sizes); i++)
        mk_random_file(r, tu_path("d/f%zu", sizes[i]), sizes[i], &seed);
    mk_file(r, "d/suid", "#!/bin/sh\n", 10);
    fchmodat(r, "d/suid", 04755, 0);
    mk_file(r, "d/sgid", "x", 1);
    fchmodat(r, "d/sgid", 02711, 0);
    mk_file(r, "zero", "", 0);
    fchmodat(r, "zero", is_root ? 0 : 0400, 0); /* capture must be able to read it */
    assert_int_equal(symlinkat("d/f100", r, "link_rel"), 0);
    assert_int_equal(symlinkat("/nonexistent/target", r, "d/link_abs"), 0);
    assert_int_equal(symlinkat("dangling", r, "link_dangling"), 0);
    assert_int_equal(mkfifoat(r, "fifo", 0640), 0);
    /* three names for one inode, in walk order that differs from the sort order */
    mk_random_file(r, "d/sub/zz_hl", 70000, &seed);
    assert_int_equal(linkat(r, "d/sub/zz_hl", r, "a_hl", 0), 0);
    assert_int_equal(linkat(r, "d/sub/zz_hl", r, "d/m_hl", 0), 0);
    set_xattr(r, "d/f100", "user.one", "value1", 6);
    set_xattr(r, "d/f100", "user.empty", "", 0);
    set_xattr(r, "d", "user.dirattr", "\x00\x01\xff", 3);
    uint8_t big[4000];
    tu_fill_random(&seed, big, sizeof(big));
    set_xattr(r, "d/f1", "user.big", big, sizeof(big));
    if (is_root) {
        assert_int_equal(mknodat(r, "chr", S_IFCHR | 0620, makedev(1, 3)), 0);
        assert_int_equal(mknodat(r, "d/blk", S_IFBLK | 0600, makedev(7, 200)), 0);
        set_xattr(r, "d/f100", "trusted.t1", "tv", 2);
        set_xattr(r, "link_rel", "trusted.onlink", "L", 1);
        set_xattr(r, "fifo", "trusted.onfifo", "F", 1);
        assert_int_equal(fchownat(r, "d/f1", 1234, 5678, 0), 0);
        assert_int_equal(fchownat(r, "d/suid", 1000, 1000, 0), 0);
        fchmodat(r, "d/suid", 04755, 0); /* chown cleared suid */
        assert_int_equal(fchownat(r, "link_rel", 4321, 8765, AT_SYMLINK_NOFOLLOW), 0);
        assert_int_equal(fchownat(r, "d/sub", 99, 98, 0), 0);
    } else {
        fprintf(stderr, "!!! NOT ROOT: skipping devices, chown and trusted.* xattrs in test_all_types\n");
    }
    /* a socket is skipped with a warning */
    int sk = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/sock", src);
    bool have_sock = strlen(src) + 6 < sizeof(sa.sun_path) && bind(sk, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    /* mtimes last (creating entries changes the directories') */
    set_mtime(r, "d/f100", 1234567890, 123456789);
    set_mtime(r, "link_rel", 1000000000, 1);
    set_mtime(r, "fifo", -1000000000 + 7, 999999999);
    set_mtime(r, "d/sub", 1600000000, 5);
    set_mtime(r, "d", 1500000000, 500);
    set_mtime(r, ".", 1400000000, 400);
    close(r);

    log_to_file(f.dir);
    struct cairn_tree_ref ref;
    struct cairn_tree_stats st;
    capture(&f, src, 0, &ref, &st);
    char *log = log_restore();
    if (have_sock) {
        assert_int_equal(st.skipped, 1);
        assert_non_null(strstr(log, "socket"));
        assert_non_null(strstr(log, "sock'"));
        unlink(sa.sun_path);
        set_mtime(AT_FDCWD, src, 1400000000, 400);
    }
    close(sk);
    free(log);
    assert_int_equal(st.hardlinks, 2);
    assert_int_equal(st.symlinks, 3);
    assert_int_equal(st.specials, is_root ? 3 : 1);
    assert_int_equal(st.dirs, 4);
    assert_int_equal(st.files, 5 + CAIRN_ARRAY_LEN(sizes) + 1);
    assert_true(st.chunks > 0 && st.chunks_new > 0 && st.stored_bytes > 0);

    /* the manifest: "a_hl" (first in sort order) is the file, the others link to it */
    struct cairn_codec *c;
    struct cairn_manifest m;
    assert_int_equal(cairn_codec_new(&c, 3), CAIRN_OK);
    assert_int_equal(cairn_manifest_load(f.s, c, f.d, &ref, &m), CAIRN_OK);
    assert_string_equal(m.entries[0].path, ".");
    size_t nfile = 0, nlinks = 0, pieces = 0;
    for (size_t i = 0; i < m.n; i++) {
        const struct cairn_entry *e = &m.entries[i];
        if (!strcmp(e->path, "a_hl")) {
            assert_int_equal(e->type, CAIRN_ET_FILE);
            assert_int_equal(e->size, 70000);
            nfile++;
        }
        if (e->type == CAIRN_ET_HARDLINK) {
            assert_string_equal(e->target, "a_hl");
            nlinks++;
        }
        for (uint32_t j = 0; j < e->n_pieces; j++)
            pieces += !e->pieces[j].hole;
    }
    assert_int_equal(nfile, 1);
    assert_int_equal(nlinks, 2);
    size_t nchunks = 0;
    assert_int_equal(cairn_tree_chunks(f.s, f.d, &ref, count_chunk, &nchunks), CAIRN_OK);
    assert_int_equal(nchunks, pieces + ref.n_chunks);
    cairn_manifest_release(&m);
    cairn_codec_destroy(&c);

    materialize(&f, &ref, dst, 0);
    tree_compare(src, dst, CMP_ROOT);
    /* materializing again onto the same dest (plain merge) replaces everything in place, whatever is there */
    assert_int_equal(tu_sh("cd '%s' && rm d/f100 && mkdir -p d/f100/x/y && touch d/f100/x/y/z && rm fifo && "
                           "ln -s / fifo && rm -rf d/sub && echo > d/sub && setfattr -n user.extra -v 1 d",
                           dst),
                     0);
    materialize(&f, &ref, dst, 0);
    tree_compare(src, dst, CMP_ROOT);

    /* exclude */
    struct cairn_tree_ref ref2;
    const char *ex[] = {"d/sub", "fifo/"};
    struct cairn_tree_opts o = {.exclude = ex, .n_exclude = 2};
    assert_int_equal(cairn_tree_capture(f.s, f.d, src, &o, &ref2, &st), CAIRN_OK);
    assert_int_equal(st.dirs, 3);
    char *dst2 = strdup(tu_path("%s/dst2", f.dir));
    materialize(&f, &ref2, dst2, 0);
    struct stat sb;
    assert_int_equal(fstatat(AT_FDCWD, tu_path("%s/d/sub", dst2), &sb, AT_SYMLINK_NOFOLLOW), -1);
    assert_int_equal(fstatat(AT_FDCWD, tu_path("%s/fifo", dst2), &sb, AT_SYMLINK_NOFOLLOW), -1);
    assert_int_equal(fstatat(AT_FDCWD, tu_path("%s/d/f100", dst2), &sb, AT_SYMLINK_NOFOLLOW), 0);
    cairn_tree_ref_release(&ref2);
    free(dst2);

    cairn_tree_ref_release(&ref);
    free(dst);
    free(src);
    fx_close(&f);
}

static void test_sparse(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "tree-sparse");
    char *src = strdup(tu_path("%s/src", f.dir));
    char *dst = strdup(tu_path("%s/dst", f.dir));
    assert_int_equal(mkdir(src, 0755), 0);
    int r = open(src, O_RDONLY | O_DIRECTORY);
    uint64_t seed = 7;
    uint8_t buf[20000];
    tu_fill_random(&seed, buf, sizeof(buf));
    int fd = openat(r, "sparse", O_WRONLY | O_CREAT, 0644);
    assert_int_equal(ftruncate(fd, 1ll << 30), 0);
    assert_int_equal(pwrite(fd, buf, 5000, 1 << 20), 5000);
    assert_int_equal(pwrite(fd, buf, 20000, 700ll << 20), 20000);
    close(fd);
    fd = openat(r, "holes_only", O_WRONLY | O_CREAT, 0600);
    assert_int_equal(ftruncate(fd, 10 << 20), 0);
    close(fd);
    fd = openat(r, "tail_data", O_WRONLY | O_CREAT, 0600); /* hole then data to EOF */
    assert_int_equal(pwrite(fd, buf, 3000, 3 << 20), 3000);
    close(fd);
    close(r);

    struct cairn_tree_ref ref;
    struct cairn_tree_stats st;
    capture(&f, src, 0, &ref, &st);
    assert_true(st.bytes < (1 << 20)); /* holes are not data */
    struct cairn_codec *c;
    struct cairn_manifest m;
    assert_int_equal(cairn_codec_new(&c, 3), CAIRN_OK);
    assert_int_equal(cairn_manifest_load(f.s, c, f.d, &ref, &m), CAIRN_OK);
    for (size_t i = 0; i < m.n; i++) {
        const struct cairn_entry *e = &m.entries[i];
        if (!strcmp(e->path, "holes_only")) {
            assert_true(e->n_pieces >= 1);
            for (uint32_t j = 0; j < e->n_pieces; j++)
                assert_true(e->pieces[j].hole);
        }
        if (!strcmp(e->path, "sparse")) {
            size_t data = 0;
            for (uint32_t j = 0; j < e->n_pieces; j++)
                data += e->pieces[j].hole ? 0 : e->pieces[j].len;
            assert_true(data >= 25000 && data <= 2 * 4096 + 25000);
            assert_true(e->pieces[0].hole);
            assert_true(e->pieces[e->n_pieces - 1].hole);
        }
    }
    cairn_manifest_release(&m);
    cairn_codec_destroy(&c);
    materialize(&f, &ref, dst, 0);
    tree_compare(src, dst, CMP_ROOT);
    struct stat sb;
    assert_int_equal(stat(tu_path("%s/holes_only", dst), &sb), 0);
    assert_int_equal(sb.st_blocks, 0);
    assert_int_equal(stat(tu_path("%s/sparse", dst), &sb), 0);
    assert_true(sb.st_blocks * 512 < (1 << 20));
    cairn_tree_ref_release(&ref);
    free(dst);
    free(src);
    fx_close(&f);
}

static void test_odd_names(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "tree-names");
    char *src = strdup(tu_path("%s/src", f.dir));
    char *dst = strdup(tu_path("%s/dst", f.dir));
    assert_int_equal(mkdir(src, 0755), 0);
    int r = open(src, O_RDONLY | O_DIRECTORY);
    mk_file(r, "with space", "a", 1);
    mk_file(r, "new\nline", "b", 1);
    mk_file(r, "bad\xff\xfe utf8", "c", 1);
    mk_file(r, "-dash", "d", 1);
    mk_file(r, "back\\slash*?", "e", 1);
    mk_dir(r, " ", 0700);
    mk_file(r, " /x", "f", 1);
    char longname[256];
    memset(longname, 'L', 255);
    longname[255] = 0;
    mk_file(r, longname, "g", 1);
    /* a chain of 255-byte directory names: the deepest path is far beyond PATH_MAX */
    int cur = dup(r);
    char comp[256];
    for (int i = 0; i < 40; i++) { /* deeper than the directory chain's fd window */
        memset(comp, 'a' + (i % 26), 255);
        comp[255] = 0;
        mk_dir(cur, comp, 0755);
        int next = xopenat_dir(cur, comp);
        close(cur);
        cur = next;
    }
    mk_file(cur, "bottom", "deep", 4);
    assert_int_equal(symlinkat("../../..", cur, "up"), 0);
    close(cur);
    close(r);

    struct cairn_tree_ref ref;
    struct cairn_tree_stats st;
    capture(&f, src, 0, &ref, &st);
    assert_int_equal(st.dirs, 1 + 1 + 40);
    materialize(&f, &ref, dst, 0);
    tree_compare(src, dst, CMP_ROOT);
    cairn_tree_ref_release(&ref);

    /* a tree where the deep chain's top is a file: applied onto dst, the whole chain is deleted */
    char *src2 = strdup(tu_path("%s/src2", f.dir));
    assert_int_equal(mkdir(src2, 0755), 0);
    memset(comp, 'a', 255);
    tu_write_file(tu_path("%s/%s", src2, comp), "now a file", 10);
    capture(&f, src2, 0, &ref, &st);
    materialize(&f, &ref, dst, 0);
    struct stat sb;
    assert_int_equal(lstat(tu_path("%s/%s", dst, comp), &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    cairn_tree_ref_release(&ref);
    free(src2);
    /* nftw (tu_rmrf) cannot go deeper than PATH_MAX; GNU rm can */
    assert_int_equal(tu_sh("rm -rf '%s/src' '%s/dst'", f.dir, f.dir), 0);
    free(dst);
    free(src);
    fx_close(&f);
}

static void test_dedup(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "tree-dedup");
    char *src = strdup(tu_path("%s/src", f.dir));
    char *copy = strdup(tu_path("%s/copy", f.dir));
    assert_int_equal(mkdir(src, 0755), 0);
    int r = open(src, O_RDONLY | O_DIRECTORY);
    uint64_t seed = 99;
    for (int i = 0; i < 20; i++)
        mk_random_file(r, tu_path("f%02d", i), 100000 + (size_t)i * 37000, &seed);
    mk_random_file(r, "big", 3 << 20, &seed);
    close(r);

    struct cairn_tree_ref r1, r2, r3;
    struct cairn_tree_stats s1, s2, s3;
    capture(&f, src, 0, &r1, &s1);
    assert_true(s1.chunks_new > 20);
    capture(&f, src, 0, &r2, &s2);
    assert_int_equal(s2.chunks_new, 0); /* data and manifest chunks all dedup */
    assert_int_equal(s2.stored_bytes, 0);
    assert_int_equal(s2.chunks, s1.chunks);
    assert_int_equal(r1.n_chunks, r2.n_chunks);
    assert_int_equal(r1.manifest_len, r2.manifest_len);
    assert_memory_equal(r1.chunks, r2.chunks, r1.n_chunks * sizeof(*r1.chunks));

    /* a copy with a few bytes changed in the middle of the big file */
    assert_int_equal(tu_sh("cp -a '%s' '%s'", src, copy), 0);
    int fd = open(tu_path("%s/big", copy), O_WRONLY);
    assert_int_equal(pwrite(fd, "CHANGED", 7, 1500000), 7);
    close(fd);
    capture(&f, copy, 0, &r3, &s3);
    fprintf(stderr, "dedup: first %llu new chunks, again %llu, one change %llu\n",
            (unsigned long long)s1.chunks_new, (unsigned long long)s2.chunks_new,
            (unsigned long long)s3.chunks_new);
    assert_true(s3.chunks_new >= 1);
    assert_true(s3.chunks_new <= 2 + r3.n_chunks + 1);
    assert_true(s3.stored_bytes < 2 * CAIRN_CHUNK_MAX + 65536);
    cairn_tree_ref_release(&r1);
    cairn_tree_ref_release(&r2);
    cairn_tree_ref_release(&r3);
    free(copy);
    free(src);
    fx_close(&f);
}

/* ---- chunk_stored: the ids of the data chunks, reported while the capture runs ---- */

struct seen {
    pthread_mutex_t mu;
    uint8_t (*ids)[CAIRN_CHUNK_ID_BYTES];
    size_t n, cap;
};

static void seen_add(void *arg, const uint8_t id[CAIRN_CHUNK_ID_BYTES])
{
    struct seen *s = arg;
    pthread_mutex_lock(&s->mu);
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->ids = realloc(s->ids, s->cap * sizeof(*s->ids));
    }
    memcpy(s->ids[s->n++], id, CAIRN_CHUNK_ID_BYTES);
    pthread_mutex_unlock(&s->mu);
}

static bool seen_has(const struct seen *s, const uint8_t *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (!memcmp(s->ids[i], id, CAIRN_CHUNK_ID_BYTES))
            return true;
    return false;
}

static int all_add(void *arg, const uint8_t id[CAIRN_CHUNK_ID_BYTES])
{
    seen_add(arg, id);
    return CAIRN_OK;
}

static void test_chunk_stored(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "tree-stored");
    char *src = strdup(tu_path("%s/src", f.dir));
    assert_int_equal(mkdir(src, 0755), 0);
    int r = open(src, O_RDONLY | O_DIRECTORY);
    uint64_t seed = 7;
    for (int i = 0; i < 6; i++)
        mk_random_file(r, tu_path("f%d", i), 50000 + (size_t)i * 90000, &seed);
    mk_random_file(r, "big", 2 << 20, &seed);
    assert_int_equal(symlinkat("f1", r, "link"), 0);
    close(r);

    for (int round = 0; round < 2; round++) { /* the second time every chunk is already held */
        struct seen sn = {.mu = PTHREAD_MUTEX_INITIALIZER}, all = {.mu = PTHREAD_MUTEX_INITIALIZER};
        struct cairn_tree_opts o = {.threads = 3, .chunk_stored = seen_add, .chunk_stored_arg = &sn};
        struct cairn_tree_ref ref;
        struct cairn_tree_stats st;
        assert_int_equal(cairn_tree_capture(f.s, f.d, src, &o, &ref, &st), CAIRN_OK);
        assert_int_equal(sn.n, st.chunks); /* once per data chunk submitted */
        assert_int_equal(cairn_tree_chunks(f.s, f.d, &ref, all_add, &all), CAIRN_OK);
        /* every id reported is the tree's; every chunk of the tree is reported, except the manifest's */
        for (size_t i = 0; i < sn.n; i++)
            assert_true(seen_has(&all, sn.ids[i]));
        size_t unreported = 0;
        for (size_t i = 0; i < all.n; i++)
            if (!seen_has(&sn, all.ids[i])) {
                bool manifest = false;
                for (uint32_t k = 0; k < ref.n_chunks; k++)
                    manifest |= !memcmp(ref.chunks[k].id, all.ids[i], CAIRN_CHUNK_ID_BYTES);
                assert_true(manifest);
                unreported++;
            }
        assert_true(unreported <= ref.n_chunks);
        /* and each one is in the store when reported (checked here after the fact: it stays) */
        for (size_t i = 0; i < sn.n; i++) {
            bool found = false;
            assert_int_equal(cairn_store_has_chunk(f.s, cairn_domain_id(f.d), sn.ids[i], &found), CAIRN_OK);
            assert_true(found);
        }
        cairn_tree_ref_release(&ref);
        free(sn.ids);
        free(all.ids);
    }
    free(src);
    fx_close(&f);
}

/* ---- overlayfs ---- */

static void test_overlay(void **state)
{
    (void)state;
    if (!is_root) {
        fprintf(stderr, "!!! NOT ROOT: skipping test_overlay (needs mount -t overlay)\n");
        skip();
    }
    struct fx f;
    fx_open(&f, "tree-ovl");
    char *lower = strdup(tu_path("%s/lower", f.dir)), *upper = strdup(tu_path("%s/upper", f.dir));
    char *work = strdup(tu_path("%s/work", f.dir)), *merged = strdup(tu_path("%s/merged", f.dir));
    char *m1 = strdup(tu_path("%s/m1", f.dir));
    assert_int_equal(tu_sh("mkdir -p '%s' '%s' '%s' '%s'", lower, upper, work, merged), 0);
    uint64_t seed = 5;
    int l = open(lower, O_RDONLY | O_DIRECTORY);
    mk_dir(l, "keep", 0755);
    mk_random_file(l, "keep/a", 5000, &seed);
    mk_random_file(l, "keep/gone", 5000, &seed);
    mk_random_file(l, "keep/moved", 70000, &seed);
    mk_random_file(l, "keep/append", 100, &seed);
    mk_file(l, "keep/chmod", "m", 1);
    mk_dir(l, "opq", 0755);
    mk_random_file(l, "opq/old1", 100, &seed);
    mk_dir(l, "opq/olddir", 0755);
    mk_random_file(l, "opq/olddir/x", 100, &seed);
    mk_dir(l, "rmdir", 0755);
    mk_random_file(l, "rmdir/y", 100, &seed);
    mk_file(l, "top", "t", 1);
    set_mtime(l, "keep", 1500000000, 0);
    close(l);

    int rc = tu_sh("mount -t overlay overlay -o 'lowerdir=%s,upperdir=%s,workdir=%s' '%s'", lower, upper, work, merged);
    if (rc != 0) {
        fprintf(stderr, "!!! overlay mount failed: skipping test_overlay\n");
        free(lower), free(upper), free(work), free(merged), free(m1);
        fx_close(&f);
        skip();
    }
    assert_int_equal(tu_sh("cd '%s' && rm keep/gone && mv keep/moved keep/moved2 && echo more >> keep/append && "
                           "chmod 600 keep/chmod && rm -rf opq && mkdir opq && echo new > opq/new && "
                           "rm -rf rmdir && echo n > newfile && mkdir -p newdir/sub && echo z > newdir/sub/z && "
                           "setfattr -n user.k -v v keep && touch -d @1600000000 keep/a",
                           merged),
                     0);
    /* the merged view, for comparisons after umount */
    struct cairn_tree_ref mref, uref;
    struct cairn_tree_stats st;
    capture(&f, merged, 0, &mref, &st);
    assert_int_equal(umount(merged), 0);

    capture(&f, upper, CAIRN_TREE_OVERLAY, &uref, &st);
    assert_true(st.whiteouts >= 3); /* keep/gone, keep/moved, rmdir */
    struct cairn_codec *c;
    struct cairn_manifest m;
    assert_int_equal(cairn_codec_new(&c, 3), CAIRN_OK);
    assert_int_equal(cairn_manifest_load(f.s, c, f.d, &uref, &m), CAIRN_OK);
    bool opaque_seen = false;
    for (size_t i = 0; i < m.n; i++) {
        const struct cairn_entry *e = &m.entries[i];
        if (!strcmp(e->path, "opq")) {
            assert_int_equal(e->type, CAIRN_ET_DIR);
            assert_true(e->flags & CAIRN_EF_OPAQUE);
            opaque_seen = true;
        }
        if (!strcmp(e->path, "keep/gone") || !strcmp(e->path, "rmdir"))
            assert_int_equal(e->type, CAIRN_ET_WHITEOUT);
        for (uint32_t j = 0; j < e->n_xattrs; j++)
            assert_true(strncmp(e->xattrs[j].name, "trusted.overlay.", 16) != 0);
    }
    assert_true(opaque_seen);
    cairn_manifest_release(&m);
    cairn_codec_destroy(&c);

    materialize(&f, &mref, m1, 0); /* the merged view as plain files */

    /* overlay mode: an upper dir again; mounted over the lower it gives the merged view */
    char *u2 = strdup(tu_path("%s/u2", f.dir)), *w2 = strdup(tu_path("%s/w2", f.dir));
    materialize(&f, &uref, u2, CAIRN_TREE_OVERLAY);
    struct stat sb;
    assert_int_equal(lstat(tu_path("%s/keep/gone", u2), &sb), 0);
    assert_true(S_ISCHR(sb.st_mode) && sb.st_rdev == makedev(0, 0));
    char v[8] = {0};
    assert_int_equal(lgetxattr(tu_path("%s/opq", u2), "trusted.overlay.opaque", v, sizeof(v)), 1);
    assert_int_equal(v[0], 'y');
    assert_int_equal(tu_sh("mkdir -p '%s'", w2), 0);
    assert_int_equal(tu_sh("mount -t overlay overlay -o 'lowerdir=%s,upperdir=%s,workdir=%s' '%s'", lower, u2, w2,
                           merged),
                     0);
    tree_compare(m1, merged, CMP_ROOT);
    assert_int_equal(umount(merged), 0);

    /* plain mode onto a copy of the lower: exactly the merged view */
    char *l2 = strdup(tu_path("%s/l2", f.dir));
    assert_int_equal(tu_sh("cp -a '%s' '%s'", lower, l2), 0);
    materialize(&f, &uref, l2, 0);
    tree_compare(m1, l2, CMP_ROOT);

    cairn_tree_ref_release(&mref);
    cairn_tree_ref_release(&uref);
    free(lower), free(upper), free(work), free(merged), free(m1), free(u2), free(w2), free(l2);
    fx_close(&f);
}

/* ---- property test: random trees ---- */

static const char alphabet[] = {'a', 'b', 'Z', ' ', '\n', '\t', '-', '.', '\\', '*', '\xff', '\xc3', '\x01', '~'};

static void rand_name(uint64_t *s, char *out, size_t cap, int idx)
{
    size_t len = 1 + tu_rand(s) % 12;
    if (tu_rand(s) % 20 == 0)
        len = 200 + tu_rand(s) % 56;
    if (len > 240)
        len = 240;
    if (len > cap - 8)
        len = cap - 8;
    for (size_t i = 0; i < len; i++)
        out[i] = alphabet[tu_rand(s) % sizeof(alphabet)];
    /* unique and never "." or "..": a numeric suffix */
    snprintf(out + len - (len > 4 ? 4 : 0), 8, "_%d", idx);
}

static size_t rand_size(uint64_t *s)
{
    static const size_t edges[] = {0, 1, 16383, 16384, 16385, 65536, 262143, 262144, 262145, 524289};
    switch (tu_rand(s) % 4) {
    case 0: return edges[tu_rand(s) % CAIRN_ARRAY_LEN(edges)];
    case 1: return tu_rand(s) % 2000;
    case 2: return tu_rand(s) % 200000;
    default: return tu_rand(s) % 700000;
    }
}

struct gen {
    uint64_t seed;
    int counter;
    size_t bytes;
};

static void gen_dir(struct gen *g, int root, int dirfd, const char *rel, int depth)
{
    int n = depth == 0 ? 5 + (int)(tu_rand(&g->seed) % 8) : 1 + (int)(tu_rand(&g->seed) % 7);
    for (int i = 0; i < n; i++) {
        char name[300];
        rand_name(&g->seed, name, sizeof(name), g->counter++);
        int kind = (int)(tu_rand(&g->seed) % 10);
        if (kind < 2 && depth < 4) {
            mk_dir(dirfd, name, 0700);
            int sub = xopenat_dir(dirfd, name);
            gen_dir(g, root, sub, name, depth + 1);
            static const mode_t dmodes[] = {0755, 0700, 0555, 01777, 02750, 0};
            mode_t dm = dmodes[tu_rand(&g->seed) % CAIRN_ARRAY_LEN(dmodes)];
            if (tu_rand(&g->seed) % 3 == 0)
                set_xattr(dirfd, name, "user.dir", name, strlen(name));
            fchmod(sub, is_root ? dm : dm | 0500); /* not root: capture must be able to read it */
            if (is_root)
                fchown(sub, (uid_t)(tu_rand(&g->seed) % 3000), (gid_t)(tu_rand(&g->seed) % 3000));
            struct timespec ts[2] = {{(time_t)(tu_rand(&g->seed) % 2000000000), (long)(tu_rand(&g->seed) % 1000000000)}};
            ts[1] = ts[0];
            futimens(sub, ts);
            close(sub);
        } else if (kind < 8) {
            size_t sz = g->bytes > (6u << 20) ? tu_rand(&g->seed) % 100 : rand_size(&g->seed);
            g->bytes += sz;
            if (tu_rand(&g->seed) % 4 == 0 && sz > 0) {
                /* repeated content: the same block twice (dedup inside a tree) */
                uint8_t *b = malloc(sz);
                uint64_t s2 = sz;
                tu_fill_random(&s2, b, sz);
                mk_file(dirfd, name, b, sz);
                free(b);
            } else {
                mk_random_file(dirfd, name, sz, &g->seed);
            }
            if (tu_rand(&g->seed) % 3 == 0) {
                char val[64];
                size_t vl = tu_rand(&g->seed) % sizeof(val);
                tu_fill_random(&g->seed, val, vl);
                set_xattr(dirfd, name, "user.x", val, vl);
            }
            if (is_root && tu_rand(&g->seed) % 4 == 0)
                set_xattr(dirfd, name, "trusted.t", "1", 1);
            if (is_root)
                fchownat(dirfd, name, (uid_t)(tu_rand(&g->seed) % 70000), (gid_t)(tu_rand(&g->seed) % 70000), 0);
            static const mode_t fmodes[] = {0644, 0600, 0755, 0400, 04755, 02755, 01644, 0, 07777};
            mode_t fm = fmodes[tu_rand(&g->seed) % CAIRN_ARRAY_LEN(fmodes)];
            fchmodat(dirfd, name, is_root ? fm : fm | 0400, 0);
            /* hardlink some files from the root (names at the root, any depth target) */
            if (tu_rand(&g->seed) % 6 == 0) {
                char ln[32];
                snprintf(ln, sizeof(ln), "hl_%d", g->counter++);
                if (linkat(dirfd, name, root, ln, 0) != 0)
                    fail_msg("link: %s", strerror(errno));
            }
            set_mtime(dirfd, name, (int64_t)(tu_rand(&g->seed) % 4000000000ull) - 1000000000, (long)(tu_rand(&g->seed) % 1000000000));
        } else if (kind < 9) {
            char target[300];
            rand_name(&g->seed, target, sizeof(target), g->counter++);
            assert_int_equal(symlinkat(target, dirfd, name), 0);
            set_mtime(dirfd, name, (int64_t)(tu_rand(&g->seed) % 2000000000), 0);
        } else {
            assert_int_equal(mkfifoat(dirfd, name, 0600), 0);
            fchmodat(dirfd, name, 0640, 0);
        }
    }
    (void)rel;
}

static void test_random_trees(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "tree-prop");
    for (int t = 0; t < 20; t++) {
        char *src = strdup(tu_path("%s/src%d", f.dir, t));
        char *dst = strdup(tu_path("%s/dst%d", f.dir, t));
        assert_int_equal(mkdir(src, 0755), 0);
        int r = open(src, O_RDONLY | O_DIRECTORY);
        uint64_t z = 0x9E3779B97F4A7C15ull * (uint64_t)(t + 1); /* splitmix64: unrelated seeds */
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        struct gen g = {.seed = z ^ (z >> 31)};
        gen_dir(&g, r, r, "", 0);
        struct timespec ts[2] = {{1700000000 + t, t}, {1700000000 + t, t}};
        futimens(r, ts);
        close(r);
        struct cairn_tree_ref ref;
        struct cairn_tree_stats st;
        capture(&f, src, 0, &ref, &st);
        fprintf(stderr, "random tree %d: %llu entries (%llu files, %llu dirs, %llu links, %llu hardlinks), %llu bytes\n",
                t, (unsigned long long)st.entries, (unsigned long long)st.files, (unsigned long long)st.dirs,
                (unsigned long long)st.symlinks, (unsigned long long)st.hardlinks, (unsigned long long)st.bytes);
        struct cairn_tree_opts o = {.threads = 1 + (unsigned)(t % 3)};
        int rc = cairn_tree_materialize(f.s, f.d, &ref, dst, &o, &st);
        if (rc != CAIRN_OK)
            fail_msg("tree %d: %s", t, cairn_err_msg());
        tree_compare(src, dst, CMP_ROOT);
        cairn_tree_ref_release(&ref);
        tu_rmrf(src);
        free(src);
        tu_rmrf(dst);
        free(dst);
    }
    fx_close(&f);
}

/* ---- corruption ---- */

static void flip_stored(struct fx *f, const uint8_t id[CAIRN_CHUNK_ID_BYTES])
{
    uint8_t key[CAIRN_STORE_CHUNK_KEY_BYTES];
    cairn_store_chunk_key(key, cairn_domain_id(f->d), id);
    struct cairn_kv *kv = cairn_store_kv(f->s);
    uint8_t *val;
    size_t vlen;
    assert_int_equal(cairn_kv_get(kv, key, sizeof(key), &val, &vlen), CAIRN_OK);
    uint8_t *copy = malloc(vlen);
    memcpy(copy, val, vlen);
    cairn_kv_free(val);
    copy[vlen / 2] ^= 0x40;
    assert_int_equal(cairn_kv_put(kv, key, sizeof(key), copy, vlen), CAIRN_OK);
    free(copy);
}

static void test_corruption(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "tree-corrupt");
    char *src = strdup(tu_path("%s/src", f.dir));
    assert_int_equal(mkdir(src, 0755), 0);
    int r = open(src, O_RDONLY | O_DIRECTORY);
    uint64_t seed = 3;
    mk_random_file(r, "a", 300000, &seed);
    mk_random_file(r, "b", 1000, &seed);
    close(r);
    struct cairn_tree_ref ref;
    struct cairn_tree_stats st;
    capture(&f, src, 0, &ref, &st);

    struct cairn_codec *c;
    struct cairn_manifest m;
    assert_int_equal(cairn_codec_new(&c, 3), CAIRN_OK);
    assert_int_equal(cairn_manifest_load(f.s, c, f.d, &ref, &m), CAIRN_OK);
    const struct cairn_entry *e = NULL;
    for (size_t i = 0; i < m.n; i++)
        if (!strcmp(m.entries[i].path, "a"))
            e = &m.entries[i];
    assert_non_null(e);
    assert_true(e->n_pieces >= 2);
    uint8_t id[CAIRN_CHUNK_ID_BYTES];
    memcpy(id, e->pieces[1].id, sizeof(id));
    char hex[2 * CAIRN_CHUNK_ID_BYTES + 1];
    cairn_hex_encode(hex, id, sizeof(id));
    cairn_manifest_release(&m);
    flip_stored(&f, id);

    struct cairn_tree_opts o = {0};
    int rc = cairn_tree_materialize(f.s, f.d, &ref, tu_path("%s/dst", f.dir), &o, &st);
    assert_int_equal(rc, CAIRN_ECORRUPT);
    fprintf(stderr, "corrupt data chunk: %s\n", cairn_err_msg());
    assert_non_null(strstr(cairn_err_msg(), hex));

    /* a damaged manifest chunk */
    cairn_hex_encode(hex, ref.chunks[0].id, CAIRN_CHUNK_ID_BYTES);
    flip_stored(&f, ref.chunks[0].id);
    rc = cairn_tree_materialize(f.s, f.d, &ref, tu_path("%s/dst2", f.dir), &o, &st);
    assert_int_equal(rc, CAIRN_ECORRUPT);
    fprintf(stderr, "corrupt manifest chunk: %s\n", cairn_err_msg());
    assert_non_null(strstr(cairn_err_msg(), hex));
    /* a reference whose lengths do not add up */
    ref.manifest_len++;
    assert_int_equal(cairn_manifest_load(f.s, c, f.d, &ref, &m), CAIRN_ECORRUPT);
    cairn_codec_destroy(&c);
    cairn_tree_ref_release(&ref);
    free(src);
    fx_close(&f);
}

int main(void)
{
    is_root = geteuid() == 0;
    if (!is_root)
        fprintf(stderr, "!!! test_tree is not running as root: owner, device, trusted.* and overlay checks are skipped\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_comparator),
        cmocka_unit_test(test_empty_dir),
        cmocka_unit_test(test_all_types),
        cmocka_unit_test(test_sparse),
        cmocka_unit_test(test_odd_names),
        cmocka_unit_test(test_dedup),
        cmocka_unit_test(test_chunk_stored),
        cmocka_unit_test(test_overlay),
        cmocka_unit_test(test_random_trees),
        cmocka_unit_test(test_corruption),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(log_path);
    return rc;
}
