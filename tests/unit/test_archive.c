/*
 * test_archive.c: tarballs imported as trees (archive.h), on real files and a
 * real store. A tree with every entry type is archived with GNU tar (pax with
 * xattrs and ns mtimes; gnu format; gzip, zstd and xz), imported, materialized
 * and compared with the original (type, mode, owner, mtime, content, sparse
 * layout, symlink targets, rdev, xattrs, hardlink groups); a tarball and its
 * directory share their data chunks; OCI whiteouts; tar replacement rules;
 * hostile tarballs written byte by byte (absolute paths, "..", bad hardlinks,
 * truncation, garbage) fail with CAIRN_ECORRUPT naming the entry; streams from
 * a pipe and stdin. Prints the import rate of a ~200 MB tarball (info only).
 *
 * Runs as root in CI (devices, owners, trusted.* xattrs); as another user the
 * root-only parts are left out with a message.
 */
#include "testutil.h"

#include "cairn/alloc.h"
#include "cairn/archive.h"
#include "cairn/codec.h"
#include "cairn/crypto.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "cairn/manifest.h"
#include "cairn/pool.h"
#include "cairn/store.h"
#include "cairn/tree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
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

static void import(struct fx *f, const char *path, unsigned flags, struct cairn_tree_ref *ref,
                   struct cairn_tree_stats *st)
{
    struct cairn_tree_opts o = {.flags = flags, .threads = 2};
    struct cairn_tree_stats tmp;
    int rc = cairn_tree_import_auto(f->s, f->d, path, &o, ref, st ? st : &tmp);
    if (rc != CAIRN_OK)
        fail_msg("import %s: %s: %s", path, cairn_err_name(rc), cairn_err_msg());
}

static void materialize(struct fx *f, const struct cairn_tree_ref *ref, const char *dest, unsigned flags)
{
    struct cairn_tree_opts o = {.flags = flags, .threads = 2};
    struct cairn_tree_stats st;
    int rc = cairn_tree_materialize(f->s, f->d, ref, dest, &o, &st);
    if (rc != CAIRN_OK)
        fail_msg("materialize to %s: %s: %s", dest, cairn_err_name(rc), cairn_err_msg());
}

static void load_manifest(struct fx *f, const struct cairn_tree_ref *ref, struct cairn_manifest *m)
{
    struct cairn_codec *c = NULL;
    assert_int_equal(cairn_codec_new(&c, 0), CAIRN_OK);
    int rc = cairn_manifest_load(f->s, c, f->d, ref, m);
    cairn_codec_destroy(&c);
    if (rc != CAIRN_OK)
        fail_msg("manifest load: %s: %s", cairn_err_name(rc), cairn_err_msg());
}

static const struct cairn_entry *find(const struct cairn_manifest *m, const char *path)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->entries[i].path, path) == 0)
            return &m->entries[i];
    return NULL;
}

/* ---- building trees ---- */

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

#define SPARSE_SIZE (16u << 20)

/* Every entry type, odd names, xattrs, owners, a sparse file, ns mtimes. */
static void build_tree(const char *dir)
{
    assert_int_equal(mkdir(dir, 0755), 0);
    int r = open(dir, O_RDONLY | O_DIRECTORY);
    assert_true(r >= 0);
    uint64_t seed = 42;
    mk_dir(r, "d", 0750);
    mk_dir(r, "d/sub", 0700);
    mk_dir(r, "empty dir", 0755);
    mk_file(r, "empty", "", 0);
    mk_file(r, "small", "hello, archive", 14);
    mk_random_file(r, "d/big", 1536 * 1024 + 123, &seed); /* several chunks */
    mk_file(r, "d/sub/with space", "spaces", 6);
    mk_file(r, "new\nline", "newline", 7);
    mk_file(r, "bad\xff\xfename", "not utf-8", 9);
    mk_file(r, "caf\xc3\xa9", "utf-8", 5);
    char longname[201];
    memset(longname, 'L', 200);
    longname[200] = 0;
    mk_file(r, tu_path("d/sub/%s", longname), "long", 4);
    assert_int_equal(linkat(r, "small", r, "d/small-link", 0), 0);
    assert_int_equal(symlinkat("small", r, "sym"), 0);
    assert_int_equal(symlinkat("../nowhere/\xff odd", r, "d/dangling"), 0);
    assert_int_equal(mkfifoat(r, "fifo", 0640), 0);
    /* sparse: data at 1 MiB and 9 MiB, a hole at the end */
    int fd = openat(r, "sparse", O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, SPARSE_SIZE), 0);
    uint8_t *b = malloc(300000);
    tu_fill_random(&seed, b, 300000);
    assert_int_equal(pwrite(fd, b, 100000, 1 << 20), 100000);
    assert_int_equal(pwrite(fd, b + 100000, 200000, 9 << 20), 200000);
    free(b);
    close(fd);
    set_xattr(r, "small", "user.note", "hello", 5);
    set_xattr(r, "d/big", "user.bin", "\0\1\2\377", 4);
    set_xattr(r, "d", "user.dir", "on a dir", 8);
    if (is_root) {
        assert_int_equal(mknodat(r, "null", S_IFCHR | 0666, makedev(1, 3)), 0);
        assert_int_equal(mknodat(r, "loop", S_IFBLK | 0660, makedev(7, 200)), 0);
        assert_int_equal(fchownat(r, "d/big", 1234, 5678, AT_SYMLINK_NOFOLLOW), 0);
        assert_int_equal(fchownat(r, "sym", 99, 98, AT_SYMLINK_NOFOLLOW), 0);
        assert_int_equal(fchownat(r, "d/sub", 4000000000u, 7, AT_SYMLINK_NOFOLLOW), 0);
        set_xattr(r, "small", "trusted.t", "tv", 2);
    }
    assert_int_equal(fchmodat(r, "d/big", 04755, 0), 0);
    /* mtimes with ns, contents before their directories */
    const char *names[] = {"empty", "small", "d/big", "d/sub/with space", "new\nline", "bad\xff\xfename",
                           "caf\xc3\xa9", "sym", "d/dangling", "fifo", "sparse", "d/sub", "d", "empty dir"};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(names); i++)
        set_mtime(r, names[i], 1600000000 + (int64_t)i * 1000, 123456789 + (long)i);
    set_mtime(r, tu_path("d/sub/%s", longname), 1500000000, 5);
    set_mtime(r, "d/sub", 1600000000, 1);
    if (is_root) {
        set_mtime(r, "null", 1600000100, 7);
        set_mtime(r, "loop", 1600000200, 8);
    }
    set_mtime(r, ".", 1700000000, 999999999);
    close(r);
}

/* ---- comparison (after test_tree.c's, with the precision as a parameter) ---- */

enum { CMP_NS = 1, CMP_XATTRS = 2 };

struct hlrec {
    char *path;
    ino_t a, b;
};

struct cmp {
    unsigned flags;
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
        fail_msg("cannot list a directory: %s", strerror(errno));
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

/* xattrs of dirfd/name (or of dirfd itself when name is NULL) as sorted "name=hex\n" lines */
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
    char *names[256];
    size_t cnt = 0;
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(list + i) + 1)
        if (cnt < 256)
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

static void cmp_meta(const struct cmp *c, const char *rel, const struct stat *a, const struct stat *b)
{
    if ((a->st_mode & S_IFMT) != (b->st_mode & S_IFMT))
        fail_msg("'%s': type 0%o vs 0%o", rel, a->st_mode & S_IFMT, b->st_mode & S_IFMT);
    if (!S_ISLNK(a->st_mode) && (a->st_mode & 07777) != (b->st_mode & 07777))
        fail_msg("'%s': mode 0%o vs 0%o", rel, a->st_mode & 07777, b->st_mode & 07777);
    if (is_root && (a->st_uid != b->st_uid || a->st_gid != b->st_gid))
        fail_msg("'%s': owner %u:%u vs %u:%u", rel, a->st_uid, a->st_gid, b->st_uid, b->st_gid);
    long na = (c->flags & CMP_NS) ? a->st_mtim.tv_nsec : 0, nb = (c->flags & CMP_NS) ? b->st_mtim.tv_nsec : 0;
    if (a->st_mtim.tv_sec != b->st_mtim.tv_sec || na != nb)
        fail_msg("'%s': mtime %lld.%09ld vs %lld.%09ld", rel, (long long)a->st_mtim.tv_sec, a->st_mtim.tv_nsec,
                 (long long)b->st_mtim.tv_sec, b->st_mtim.tv_nsec);
}

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
        fail_msg("'%s': size %lld vs %lld", rel, (long long)sa->st_size, (long long)sb->st_size);
    bool sparse = (off_t)sa->st_blocks * 512 < sa->st_size;
    off_t ra[256], rb[256];
    size_t na = 2;
    ra[0] = 0;
    ra[1] = sa->st_size;
    if (sparse) {
        na = data_regions(fa, sa->st_size, ra, 256);
        size_t nb = data_regions(fb, sb->st_size, rb, 256);
        if (na != nb || memcmp(ra, rb, na * sizeof(off_t)) != 0)
            fail_msg("'%s': sparse layout differs (%zu vs %zu region bounds)", rel, na, nb);
        if (sb->st_blocks > sa->st_blocks + 64)
            fail_msg("'%s': %lld blocks vs %lld: holes were filled", rel, (long long)sa->st_blocks,
                     (long long)sb->st_blocks);
    }
    static uint8_t ba[1 << 20], bb[1 << 20];
    for (size_t r = 0; r < na; r += 2) {
        for (off_t off = ra[r]; off < ra[r + 1];) {
            size_t want = (size_t)CAIRN_MIN((off_t)sizeof(ba), ra[r + 1] - off);
            ssize_t x = pread(fa, ba, want, off), y = pread(fb, bb, want, off);
            if (x != (ssize_t)want || y != (ssize_t)want)
                fail_msg("'%s': short read at %lld", rel, (long long)off);
            if (memcmp(ba, bb, want) != 0)
                fail_msg("'%s': content differs in [%lld, %lld)", rel, (long long)off, (long long)(off + (off_t)want));
            off += (off_t)want;
        }
    }
}

static void cmp_dir(struct cmp *c, int da, int db, const char *rel);

static void cmp_xattrs(const struct cmp *c, const char *rel, int da, int db, const char *name)
{
    if (!(c->flags & CMP_XATTRS))
        return;
    char *xa = xattr_dump(da, name), *xb = xattr_dump(db, name);
    if (strcmp(xa, xb) != 0)
        fail_msg("'%s': xattrs differ:\n%s---\n%s", rel, xa, xb);
    free(xa);
    free(xb);
}

static void cmp_entry(struct cmp *c, int da, int db, const char *name, const char *rel)
{
    struct stat sa, sb;
    if (fstatat(da, name, &sa, AT_SYMLINK_NOFOLLOW) != 0)
        fail_msg("'%s': stat a: %s", rel, strerror(errno));
    if (fstatat(db, name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
        fail_msg("'%s': missing in b: %s", rel, strerror(errno));
    cmp_meta(c, rel, &sa, &sb);
    cmp_xattrs(c, rel, da, db, name);
    if (S_ISREG(sa.st_mode)) {
        int fa = openat(da, name, O_RDONLY | O_NOFOLLOW), fb = openat(db, name, O_RDONLY | O_NOFOLLOW);
        if (fa < 0 || fb < 0)
            fail_msg("'%s': cannot open", rel);
        cmp_file(rel, fa, fb, &sa, &sb);
        close(fa);
        close(fb);
        if (sa.st_nlink != sb.st_nlink)
            fail_msg("'%s': nlink %lu vs %lu", rel, (unsigned long)sa.st_nlink, (unsigned long)sb.st_nlink);
        if (sa.st_nlink > 1) {
            if (c->nhl == c->cap) {
                c->cap = c->cap ? c->cap * 2 : 16;
                c->hl = realloc(c->hl, c->cap * sizeof(*c->hl));
            }
            c->hl[c->nhl++] = (struct hlrec){strdup(rel), sa.st_ino, sb.st_ino};
        }
    } else if (S_ISLNK(sa.st_mode)) {
        char ta[8192], tb[8192];
        ssize_t x = readlinkat(da, name, ta, sizeof(ta)), y = readlinkat(db, name, tb, sizeof(tb));
        if (x != y || x < 0 || memcmp(ta, tb, (size_t)x) != 0)
            fail_msg("'%s': symlink targets differ", rel);
    } else if (S_ISCHR(sa.st_mode) || S_ISBLK(sa.st_mode)) {
        if (sa.st_rdev != sb.st_rdev)
            fail_msg("'%s': rdev differs", rel);
    } else if (S_ISDIR(sa.st_mode)) {
        int fa = openat(da, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW),
            fb = openat(db, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        if (fa < 0 || fb < 0)
            fail_msg("'%s': cannot open the directory", rel);
        cmp_dir(c, fa, fb, rel);
        close(fa);
        close(fb);
    }
}

static void cmp_dir(struct cmp *c, int da, int db, const char *rel)
{
    size_t na, nb;
    char **a = list_names(da, &na), **b = list_names(db, &nb);
    for (size_t i = 0, j = 0; i < na || j < nb; i++, j++) {
        int k = i == na ? 1 : j == nb ? -1 : strcmp(a[i], b[j]);
        if (k < 0)
            fail_msg("'%s/%s' only in a", rel, a[i]);
        if (k > 0)
            fail_msg("'%s/%s' only in b", rel, b[j]);
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

/* Compare trees a and b, roots included (a tarball of "." carries the root's metadata). */
static void tree_compare(const char *a, const char *b, unsigned flags)
{
    int fa = open(a, O_RDONLY | O_DIRECTORY), fb = open(b, O_RDONLY | O_DIRECTORY);
    if (fa < 0 || fb < 0)
        fail_msg("cannot open '%s' or '%s'", a, b);
    struct cmp c = {.flags = flags};
    cmp_dir(&c, fa, fb, ".");
    for (size_t i = 0; i < c.nhl; i++)
        for (size_t j = i + 1; j < c.nhl; j++)
            if ((c.hl[i].a == c.hl[j].a) != (c.hl[i].b == c.hl[j].b))
                fail_msg("hardlink groups differ for '%s' and '%s'", c.hl[i].path, c.hl[j].path);
    for (size_t i = 0; i < c.nhl; i++)
        free(c.hl[i].path);
    free(c.hl);
    struct stat sa, sb;
    assert_int_equal(fstat(fa, &sa), 0);
    assert_int_equal(fstat(fb, &sb), 0);
    cmp_meta(&c, ".", &sa, &sb);
    cmp_xattrs(&c, ".", fa, fb, NULL);
    close(fa);
    close(fb);
}

/* ---- writing tarballs byte by byte (ustar), for hostile and exact cases ---- */

struct tw {
    FILE *f;
};

static void tw_open(struct tw *t, const char *path)
{
    t->f = fopen(path, "wb");
    assert_non_null(t->f);
}

/* A NUL-terminated octal field of width bytes. */
static void octal(uint8_t *dst, size_t width, uint64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%0*llo", (int)(width - 1), (unsigned long long)v);
    assert_true(n == (int)(width - 1));
    memcpy(dst, tmp, width);
}

static void tw_header(struct tw *t, const char *name, char type, unsigned mode, uint64_t size, const char *link)
{
    uint8_t h[512];
    memset(h, 0, sizeof(h));
    size_t nl = strlen(name);
    assert_true(nl <= 100);
    memcpy(h, name, nl);
    octal(h + 100, 8, mode);
    octal(h + 108, 8, 0);
    octal(h + 116, 8, 0);
    octal(h + 124, 12, size);
    octal(h + 136, 12, 1600000000ull);
    memset(h + 148, ' ', 8);
    h[156] = (uint8_t)type;
    if (link) {
        assert_true(strlen(link) <= 100);
        memcpy(h + 157, link, strlen(link));
    }
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    unsigned sum = 0;
    for (size_t i = 0; i < sizeof(h); i++)
        sum += h[i];
    octal(h + 148, 7, sum);
    h[155] = ' ';
    assert_int_equal(fwrite(h, 1, sizeof(h), t->f), sizeof(h));
}

static void tw_data(struct tw *t, const void *data, size_t n)
{
    static const uint8_t zero[512];
    assert_int_equal(fwrite(data, 1, n, t->f), n);
    if (n % 512)
        assert_int_equal(fwrite(zero, 1, 512 - n % 512, t->f), 512 - n % 512);
}

static void tw_file(struct tw *t, const char *name, const char *content)
{
    tw_header(t, name, '0', 0644, strlen(content), NULL);
    tw_data(t, content, strlen(content));
}

static void tw_close(struct tw *t)
{
    static const uint8_t zero[1024];
    assert_int_equal(fwrite(zero, 1, sizeof(zero), t->f), sizeof(zero));
    assert_int_equal(fclose(t->f), 0);
    t->f = NULL;
}

static int count_chunk(void *arg, const uint8_t id[CAIRN_CHUNK_ID_BYTES])
{
    (void)id;
    (*(size_t *)arg)++;
    return CAIRN_OK;
}

struct idset {
    uint8_t (*ids)[CAIRN_CHUNK_ID_BYTES];
    size_t n, cap;
};

static int collect(void *arg, const uint8_t id[CAIRN_CHUNK_ID_BYTES])
{
    struct idset *s = arg;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->ids = realloc(s->ids, s->cap * sizeof(*s->ids));
    }
    memcpy(s->ids[s->n++], id, CAIRN_CHUNK_ID_BYTES);
    return CAIRN_OK;
}

static bool idset_has(const struct idset *s, const uint8_t *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (memcmp(s->ids[i], id, CAIRN_CHUNK_ID_BYTES) == 0)
            return true;
    return false;
}

/* ---- cases ---- */

/* GNU tar in several formats and compressions: import, materialize, compare with the original. */
static void test_roundtrip(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "arc-rt");
    char *src = strdup(tu_path("%s/src", f.dir));
    build_tree(src);
    struct {
        const char *name, *opts;
        unsigned cmp;
    } v[] = {
        {"posix.tar", "--xattrs --sparse --numeric-owner --format=posix", CMP_NS | CMP_XATTRS},
        {"default.tar", "--xattrs --sparse --numeric-owner", CMP_NS | CMP_XATTRS},
        {"gnu.tar", "--sparse --numeric-owner --format=gnu", 0},
        {"posix.tar.gz", "--xattrs --sparse --numeric-owner --format=posix -z", CMP_NS | CMP_XATTRS},
        {"posix.tar.zst", "--xattrs --sparse --numeric-owner --format=posix --zstd", CMP_NS | CMP_XATTRS},
        {"gnu.tar.xz", "--sparse --numeric-owner --format=gnu -J", 0},
    };
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(v); i++) {
        const char *tarball = tu_path("%s/%s", f.dir, v[i].name);
        assert_int_equal(tu_sh("tar %s -cf '%s' -C '%s' .", v[i].opts, tarball, src), 0);
        struct cairn_tree_ref ref;
        struct cairn_tree_stats st;
        import(&f, tarball, 0, &ref, &st);
        print_message("%-14s %llu entries: %llu files, %llu dirs, %llu symlinks, %llu hardlinks, %llu specials, "
                      "%llu chunks (%llu new)\n",
                      v[i].name, (unsigned long long)st.entries, (unsigned long long)st.files,
                      (unsigned long long)st.dirs, (unsigned long long)st.symlinks, (unsigned long long)st.hardlinks,
                      (unsigned long long)st.specials, (unsigned long long)st.chunks,
                      (unsigned long long)st.chunks_new);
        assert_int_equal(st.hardlinks, 1);
        assert_int_equal(st.symlinks, 2);
        assert_int_equal(st.specials, is_root ? 3 : 1);
        char *dest = strdup(tu_path("%s/out-%zu", f.dir, i));
        materialize(&f, &ref, dest, 0);
        tree_compare(src, dest, v[i].cmp);
        /* the sparse file stayed sparse in the manifest too */
        struct cairn_manifest m;
        load_manifest(&f, &ref, &m);
        const struct cairn_entry *sp = find(&m, "sparse");
        assert_non_null(sp);
        assert_int_equal(sp->size, SPARSE_SIZE);
        uint64_t holes = 0;
        for (uint32_t j = 0; j < sp->n_pieces; j++)
            holes += sp->pieces[j].hole ? sp->pieces[j].len : 0;
        assert_int_equal(holes, SPARSE_SIZE - 300000 - (4096 - 100000 % 4096) - (4096 - 200000 % 4096) % 4096);
        cairn_manifest_release(&m);
        tu_rmrf(dest);
        free(dest);
        cairn_tree_ref_release(&ref);
    }
    free(src);
    fx_close(&f);
}

/* The same tree as a directory and as a tarball: the second adds no data chunk. */
static void test_dedup_dir_and_tarball(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "arc-dedup");
    char *src = strdup(tu_path("%s/src", f.dir));
    build_tree(src);
    const char *tarball = tu_path("%s/t.tar.zst", f.dir);
    assert_int_equal(tu_sh("tar --xattrs --sparse --numeric-owner --zstd -cf '%s' -C '%s' .", tarball, src), 0);
    char *tb = strdup(tarball);

    struct cairn_tree_ref r1, r2;
    struct cairn_tree_stats s1, s2;
    import(&f, src, 0, &r1, &s1); /* a directory: capture */
    struct idset seen = {0};
    assert_int_equal(cairn_tree_chunks(f.s, f.d, &r1, collect, &seen), CAIRN_OK);
    import(&f, tb, 0, &r2, &s2); /* a tarball */
    assert_int_equal(s1.bytes, s2.bytes);
    assert_int_equal(s1.chunks, s2.chunks);
    assert_true(s2.chunks_new <= r2.n_chunks); /* the manifest's own chunks at most */
    struct idset now = {0};
    assert_int_equal(cairn_tree_chunks(f.s, f.d, &r2, collect, &now), CAIRN_OK);
    for (size_t i = 0; i < now.n; i++) {
        bool manifest = false;
        for (uint32_t j = 0; j < r2.n_chunks; j++)
            manifest |= memcmp(r2.chunks[j].id, now.ids[i], CAIRN_CHUNK_ID_BYTES) == 0;
        if (!manifest && !idset_has(&seen, now.ids[i]))
            fail_msg("data chunk %zu of the tarball's tree is not in the directory's", i);
    }
    print_message("dir: %llu chunks, %llu new; tarball: %llu chunks, %llu new (manifest: %u chunks)\n",
                  (unsigned long long)s1.chunks, (unsigned long long)s1.chunks_new, (unsigned long long)s2.chunks,
                  (unsigned long long)s2.chunks_new, r2.n_chunks);
    /* and the same tarball again: nothing new at all, the same manifest */
    struct cairn_tree_ref r3;
    struct cairn_tree_stats s3;
    import(&f, tb, 0, &r3, &s3);
    assert_int_equal(s3.chunks_new, 0);
    assert_int_equal(r3.n_chunks, r2.n_chunks);
    assert_memory_equal(r3.chunks[0].id, r2.chunks[0].id, CAIRN_CHUNK_ID_BYTES);
    free(seen.ids);
    free(now.ids);
    cairn_tree_ref_release(&r1);
    cairn_tree_ref_release(&r2);
    cairn_tree_ref_release(&r3);
    free(tb);
    free(src);
    fx_close(&f);
}

/* An OCI / docker layer: .wh. files become whiteouts, .wh..wh..opq an opaque directory. */
static void test_oci_layer(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "arc-oci");
    const char *layer = tu_path("%s/layer", f.dir);
    assert_int_equal(mkdir(layer, 0755), 0);
    int r = open(layer, O_RDONLY | O_DIRECTORY);
    mk_dir(r, "etc", 0755);
    mk_file(r, "etc/hosts", "127.0.0.1 localhost\n", 20);
    mk_file(r, ".wh.removed", "", 0);
    mk_file(r, "etc/.wh.passwd", "", 0);
    mk_dir(r, "d", 0711);
    mk_file(r, "d/.wh..wh..opq", "", 0);
    mk_file(r, "d/new", "new", 3);
    mk_file(r, "keep", "kept", 4);
    mk_file(r, ".wh.keep", "", 0); /* same layer: a whiteout hides lower layers only */
    mk_dir(r, ".wh..wh.plnk", 0700); /* aufs metadata: skipped with what is below it */
    mk_file(r, ".wh..wh.plnk/123.456", "x", 1);
    close(r);
    char *tarball = strdup(tu_path("%s/layer.tar.gz", f.dir));
    assert_int_equal(tu_sh("tar --numeric-owner -czf '%s' -C '%s' .", tarball, layer), 0);

    struct cairn_tree_ref ref;
    struct cairn_tree_stats st;
    import(&f, tarball, 0, &ref, &st);
    assert_int_equal(st.whiteouts, 2);
    assert_int_equal(st.skipped, 2);
    struct cairn_manifest m;
    load_manifest(&f, &ref, &m);
    for (size_t i = 0; i < m.n; i++)
        assert_null(strstr(m.entries[i].path, ".wh."));
    assert_int_equal(find(&m, "removed")->type, CAIRN_ET_WHITEOUT);
    assert_int_equal(find(&m, "etc/passwd")->type, CAIRN_ET_WHITEOUT);
    assert_int_equal(find(&m, "keep")->type, CAIRN_ET_FILE);
    assert_int_equal(find(&m, "d")->type, CAIRN_ET_DIR);
    assert_int_equal(find(&m, "d")->flags, CAIRN_EF_OPAQUE);
    assert_int_equal(find(&m, "d")->mode, 0711);
    assert_int_equal(find(&m, "etc")->flags, 0);
    cairn_manifest_release(&m);

    if (is_root) {
        char *up = strdup(tu_path("%s/upper", f.dir));
        materialize(&f, &ref, up, CAIRN_TREE_OVERLAY);
        struct stat sb;
        assert_int_equal(lstat(tu_path("%s/removed", up), &sb), 0);
        assert_true(S_ISCHR(sb.st_mode));
        assert_int_equal(sb.st_rdev, makedev(0, 0));
        assert_int_equal(lstat(tu_path("%s/etc/passwd", up), &sb), 0);
        assert_true(S_ISCHR(sb.st_mode) && sb.st_rdev == makedev(0, 0));
        char v[8];
        assert_int_equal(getxattr(tu_path("%s/d", up), "trusted.overlay.opaque", v, sizeof(v)), 1);
        assert_int_equal(v[0], 'y');
        assert_int_equal(getxattr(tu_path("%s/etc", up), "trusted.overlay.opaque", v, sizeof(v)), -1);
        size_t n;
        uint8_t *data = tu_read_file(tu_path("%s/d/new", up), &n);
        assert_non_null(data);
        assert_memory_equal(data, "new", 3);
        free(data);
        assert_int_equal(lstat(tu_path("%s/keep", up), &sb), 0);
        assert_true(S_ISREG(sb.st_mode));
        assert_int_equal(lstat(tu_path("%s/.wh..wh.plnk", up), &sb), -1);
        free(up);
    } else {
        print_message("not root: overlay materialize of the layer not checked\n");
    }
    char *plain = strdup(tu_path("%s/plain", f.dir));
    materialize(&f, &ref, plain, 0); /* a whiteout in a fresh tree: nothing */
    struct stat sb;
    assert_int_equal(lstat(tu_path("%s/removed", plain), &sb), -1);
    assert_int_equal(lstat(tu_path("%s/d/new", plain), &sb), 0);
    free(plain);

    /* a char 0/0 device is a whiteout only in overlay mode */
    if (is_root) {
        const char *up2 = tu_path("%s/up2", f.dir);
        assert_int_equal(mkdir(up2, 0755), 0);
        assert_int_equal(mknod(tu_path("%s/up2/gone", f.dir), S_IFCHR, makedev(0, 0)), 0);
        char *t2 = strdup(tu_path("%s/up2.tar", f.dir));
        assert_int_equal(tu_sh("tar -cf '%s' -C '%s/up2' .", t2, f.dir), 0);
        struct cairn_tree_ref r2;
        import(&f, t2, CAIRN_TREE_OVERLAY, &r2, &st);
        assert_int_equal(st.whiteouts, 1);
        cairn_tree_ref_release(&r2);
        import(&f, t2, 0, &r2, &st);
        assert_int_equal(st.whiteouts, 0);
        assert_int_equal(st.specials, 1);
        cairn_tree_ref_release(&r2);
        free(t2);
    }
    /* ".wh..wh..opq" at the top makes the root opaque */
    struct tw t;
    char *t3 = strdup(tu_path("%s/rootopq.tar", f.dir));
    tw_open(&t, t3);
    tw_file(&t, ".wh..wh..opq", "");
    tw_file(&t, "a", "A");
    tw_close(&t);
    struct cairn_tree_ref r3;
    import(&f, t3, 0, &r3, NULL);
    load_manifest(&f, &r3, &m);
    assert_string_equal(m.entries[0].path, ".");
    assert_int_equal(m.entries[0].flags, CAIRN_EF_OPAQUE);
    cairn_manifest_release(&m);
    cairn_tree_ref_release(&r3);
    free(t3);
    cairn_tree_ref_release(&ref);
    free(tarball);
    fx_close(&f);
}

static void expect_content(const char *path, const char *want)
{
    size_t n;
    uint8_t *data = tu_read_file(path, &n);
    if (!data)
        fail_msg("'%s' is missing", path);
    if (n != strlen(want) || memcmp(data, want, n) != 0)
        fail_msg("'%s': got '%.*s', want '%s'", path, (int)n, (const char *)data, want);
    free(data);
}

/* Tar semantics: later entries replace earlier ones; missing parents; path normalisation. */
static void test_replace_and_parents(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "arc-repl");
    char *tarball = strdup(tu_path("%s/t.tar", f.dir));
    struct tw t;
    tw_open(&t, tarball);
    tw_file(&t, "a", "v1");
    tw_file(&t, "a", "v2x");
    tw_header(&t, "dd/", '5', 0700, 0, NULL);
    tw_file(&t, "dd/f", "in dd");
    tw_header(&t, "dd", '5', 0751, 0, NULL); /* a directory again: metadata only */
    tw_file(&t, "f", "old");
    tw_header(&t, "h", '1', 0644, 0, "f");
    tw_header(&t, "h2", '1', 0644, 0, "./h"); /* a link to a link: the same group */
    tw_file(&t, "f", "new"); /* the links keep the old data */
    tw_file(&t, "g", "G");
    tw_header(&t, "./g2", '1', 0644, 0, "./g");
    tw_file(&t, "x/y/z", "deep"); /* x and x/y are missing */
    tw_file(&t, "./p//q/./r", "normalised");
    tw_header(&t, "s", '2', 0777, 0, "tgt");
    tw_file(&t, "s", "now a file");
    tw_header(&t, "e/", '5', 0755, 0, NULL);
    tw_file(&t, "e", "an empty dir replaced");
    tw_header(&t, "fifo", '6', 0644, 0, NULL);
    tw_close(&t);

    struct cairn_tree_ref ref;
    struct cairn_tree_stats st;
    import(&f, tarball, 0, &ref, &st);
    struct cairn_manifest m;
    load_manifest(&f, &ref, &m);
    const struct cairn_entry *x = find(&m, "x");
    assert_non_null(x);
    assert_int_equal(x->type, CAIRN_ET_DIR);
    assert_int_equal(x->mode, 0755);
    assert_int_equal(x->uid, 0);
    assert_int_equal(x->mtime_ns, 0);
    assert_non_null(find(&m, "x/y"));
    assert_non_null(find(&m, "p/q/r"));
    assert_null(find(&m, "."));
    assert_int_equal(find(&m, "dd")->mode, 0751);
    assert_int_equal(find(&m, "h")->type, CAIRN_ET_FILE); /* "h" sorts before "h2": the group's file */
    assert_int_equal(find(&m, "h2")->type, CAIRN_ET_HARDLINK);
    assert_string_equal(find(&m, "h2")->target, "h");
    assert_int_equal(find(&m, "g")->type, CAIRN_ET_FILE);
    assert_string_equal(find(&m, "g2")->target, "g");
    assert_int_equal(find(&m, "fifo")->type, CAIRN_ET_FIFO);
    assert_int_equal(find(&m, "a")->mtime_ns, 1600000000ll * 1000000000ll);
    cairn_manifest_release(&m);

    char *dest = strdup(tu_path("%s/out", f.dir));
    materialize(&f, &ref, dest, 0);
    expect_content(tu_path("%s/a", dest), "v2x");
    expect_content(tu_path("%s/dd/f", dest), "in dd");
    expect_content(tu_path("%s/f", dest), "new");
    expect_content(tu_path("%s/h", dest), "old");
    expect_content(tu_path("%s/h2", dest), "old");
    expect_content(tu_path("%s/x/y/z", dest), "deep");
    expect_content(tu_path("%s/p/q/r", dest), "normalised");
    expect_content(tu_path("%s/s", dest), "now a file");
    expect_content(tu_path("%s/e", dest), "an empty dir replaced");
    struct stat a, b;
    assert_int_equal(stat(tu_path("%s/h", dest), &a), 0);
    assert_int_equal(stat(tu_path("%s/h2", dest), &b), 0);
    assert_int_equal(a.st_ino, b.st_ino);
    assert_int_equal(stat(tu_path("%s/f", dest), &b), 0);
    assert_int_equal(b.st_nlink, 1);
    assert_int_equal(stat(tu_path("%s/g2", dest), &b), 0);
    assert_int_equal(b.st_nlink, 2);
    assert_int_equal(stat(tu_path("%s/dd", dest), &b), 0);
    assert_int_equal(b.st_mode & 07777, 0751);
    assert_int_equal(stat(tu_path("%s/x", dest), &b), 0);
    assert_int_equal(b.st_mtime, 0);

    /* excludes apply as in capture */
    const char *ex[] = {"./dd/", "x/y"};
    struct cairn_tree_opts o = {.exclude = ex, .n_exclude = 2};
    struct cairn_tree_ref r2;
    assert_int_equal(cairn_archive_import(f.s, f.d, tarball, &o, &r2, &st), CAIRN_OK);
    load_manifest(&f, &r2, &m);
    assert_null(find(&m, "dd"));
    assert_null(find(&m, "dd/f"));
    assert_null(find(&m, "x/y/z"));
    assert_null(find(&m, "x")); /* only ever implied by x/y/z */
    assert_non_null(find(&m, "p/q/r"));
    cairn_manifest_release(&m);
    cairn_tree_ref_release(&r2);

    free(dest);
    cairn_tree_ref_release(&ref);
    free(tarball);
    fx_close(&f);
}

typedef void (*build_fn)(struct tw *t);

static void h_absolute(struct tw *t) { tw_file(t, "/etc/passwd", "root"); }
static void h_dotdot(struct tw *t) { tw_file(t, "../escape", "x"); }
static void h_dotdot_mid(struct tw *t)
{
    tw_file(t, "ok", "fine");
    tw_file(t, "a/b/../../../up", "x");
}
static void h_link_missing(struct tw *t) { tw_header(t, "hl", '1', 0644, 0, "nope"); }
static void h_link_later(struct tw *t)
{
    tw_header(t, "hl", '1', 0644, 0, "later");
    tw_file(t, "later", "x");
}
static void h_link_dir(struct tw *t)
{
    tw_header(t, "dir/", '5', 0755, 0, NULL);
    tw_header(t, "hl", '1', 0644, 0, "dir");
}
static void h_link_abs(struct tw *t)
{
    tw_file(t, "f", "x");
    tw_header(t, "hl", '1', 0644, 0, "/f");
}
static void h_below_symlink(struct tw *t)
{
    tw_header(t, "lnk", '2', 0777, 0, "/etc");
    tw_file(t, "lnk/passwd", "owned");
}
static void h_dir_replaced(struct tw *t)
{
    tw_header(t, "dir/", '5', 0755, 0, NULL);
    tw_file(t, "dir/f", "x");
    tw_header(t, "dir", '2', 0777, 0, "/etc");
}
static void h_root_file(struct tw *t) { tw_header(t, "./", '2', 0777, 0, "elsewhere"); }
static void h_bad_whiteout(struct tw *t) { tw_file(t, "d/.wh..", ""); }
static void h_escape_name(struct tw *t) { tw_file(t, "/\x1b[2J\ttitle", "x"); }
static void h_empty_symlink(struct tw *t) { tw_header(t, "empty-link", '2', 0777, 0, ""); }

static void write_hostile(const char *path, build_fn fn)
{
    struct tw t;
    tw_open(&t, path);
    fn(&t);
    tw_close(&t);
}

static void expect_corrupt(struct fx *f, const char *path, const char *needle)
{
    struct cairn_tree_ref ref;
    struct cairn_tree_stats st;
    memset(&ref, 0xab, sizeof(ref));
    int rc = cairn_archive_import(f->s, f->d, path, NULL, &ref, &st);
    if (rc != CAIRN_ECORRUPT)
        fail_msg("%s: %s (%s), expected ECORRUPT", path, cairn_err_name(rc), cairn_err_msg());
    const char *msg = cairn_err_msg();
    print_message("  %s\n", msg);
    if (needle && !strstr(msg, needle))
        fail_msg("message '%s' does not name '%s'", msg, needle);
    for (const char *c = msg; *c; c++)
        assert_true((unsigned char)*c >= 0x20 && (unsigned char)*c < 0x7f);
    assert_int_equal(ref.n_chunks, 0);
    assert_null(ref.chunks);
}

/* Hostile tarballs: CAIRN_ECORRUPT naming the entry, no tree, no crash. */
static void test_hostile(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "arc-hostile");
    struct {
        build_fn fn;
        const char *needle;
    } cases[] = {
        {h_absolute, "'/etc/passwd'"},
        {h_dotdot, "'../escape'"},
        {h_dotdot_mid, "'a/b/../../../up'"},
        {h_link_missing, "'nope'"},
        {h_link_later, "'later'"},
        {h_link_dir, "not a file"},
        {h_link_abs, "absolute"},
        {h_below_symlink, "'lnk/passwd'"},
        {h_dir_replaced, "entries below it"},
        {h_root_file, "root"},
        {h_bad_whiteout, "whiteout"},
        {h_escape_name, "\\x1b[2J\\x09title"},
        {h_empty_symlink, "'empty-link'"},
    };
    const char *p = tu_path("%s/h.tar", f.dir);
    char *path = strdup(p);
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(cases); i++) {
        write_hostile(path, cases[i].fn);
        expect_corrupt(&f, path, cases[i].needle);
    }

    /* truncated in the middle of a file, plain and compressed */
    uint64_t seed = 7;
    size_t n = 1 << 20;
    uint8_t *big = malloc(n);
    tu_fill_random(&seed, big, n);
    struct tw t;
    tw_open(&t, path);
    tw_file(&t, "first", "ok");
    tw_header(&t, "big file", '0', 0644, n, NULL);
    tw_data(&t, big, n);
    tw_file(&t, "after", "ok");
    tw_close(&t);
    free(big);
    assert_int_equal(tu_sh("gzip -1 -c '%s' > '%s.gz' && zstd -q -c '%s' > '%s.zst'", path, path, path, path), 0);
    assert_int_equal(truncate(path, 400000), 0);
    expect_corrupt(&f, path, "'big file'");
    assert_int_equal(tu_sh("f='%s.gz'; truncate -s $(( $(stat -c %%s \"$f\") / 2 )) \"$f\"", path), 0);
    expect_corrupt(&f, tu_path("%s.gz", path), "'big file'");
    assert_int_equal(tu_sh("f='%s.zst'; truncate -s $(( $(stat -c %%s \"$f\") / 2 )) \"$f\"", path), 0);
    expect_corrupt(&f, tu_path("%s.zst", path), "'big file'");

    /* garbage, and garbage after a gzip magic */
    uint8_t junk[65536];
    tu_fill_random(&seed, junk, sizeof(junk));
    tu_write_file(path, junk, sizeof(junk));
    expect_corrupt(&f, path, "h.tar");
    junk[0] = 0x1f;
    junk[1] = 0x8b;
    junk[2] = 8;
    junk[3] = 0;
    tu_write_file(path, junk, sizeof(junk));
    expect_corrupt(&f, path, "h.tar");
    /* a damaged header checksum in the middle */
    tw_open(&t, path);
    tw_file(&t, "one", "1");
    tw_file(&t, "two", "2");
    tw_close(&t);
    int fd = open(path, O_RDWR);
    assert_int_equal(pwrite(fd, "Z", 1, 1024 + 150), 1);
    close(fd);
    expect_corrupt(&f, path, "'one'");

    /* errors that are not corruption */
    struct cairn_tree_ref ref;
    assert_int_equal(cairn_archive_import(f.s, f.d, tu_path("%s/missing.tar", f.dir), NULL, &ref, NULL),
                     CAIRN_ENOTFOUND);
    assert_int_equal(cairn_tree_import_auto(f.s, f.d, tu_path("%s/missing", f.dir), NULL, &ref, NULL),
                     CAIRN_ENOTFOUND);
    assert_int_equal(cairn_archive_import(f.s, f.d, f.dir, NULL, &ref, NULL), CAIRN_EINVAL);
    /* an empty file is an empty archive */
    tu_write_file(path, "", 0);
    assert_int_equal(cairn_archive_import(f.s, f.d, path, NULL, &ref, NULL), CAIRN_OK);
    struct cairn_manifest m;
    load_manifest(&f, &ref, &m);
    assert_int_equal(m.n, 0);
    cairn_manifest_release(&m);
    cairn_tree_ref_release(&ref);
    free(path);
    fx_close(&f);
}

/*
 * Random damage to a real pax tarball (byte flips anywhere, truncations): the
 * import either fails cleanly (ECORRUPT, ETOOBIG) or stores a manifest that the
 * hostile-input decoder accepts. Never a crash (this runs under ASan in CI).
 */
static void test_mutations(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "arc-mut");
    char *src = strdup(tu_path("%s/src", f.dir));
    assert_int_equal(mkdir(src, 0755), 0);
    int r = open(src, O_RDONLY | O_DIRECTORY);
    mk_dir(r, "d", 0755);
    for (int i = 0; i < 8; i++)
        mk_file(r, tu_path("d/f%d", i), "some content", 4 + (size_t)i);
    mk_file(r, "x", "xattr holder", 12);
    set_xattr(r, "x", "user.k", "value", 5);
    assert_int_equal(linkat(r, "x", r, "d/x-link", 0), 0);
    assert_int_equal(symlinkat("d/f1", r, "sym"), 0);
    char longname[180];
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = 0;
    mk_file(r, longname, "long", 4);
    int fd = openat(r, "sparse", O_WRONLY | O_CREAT, 0644);
    assert_int_equal(ftruncate(fd, 1 << 20), 0);
    assert_int_equal(pwrite(fd, "data", 4, 300000), 4);
    close(fd);
    close(r);
    char *good = strdup(tu_path("%s/good.tar", f.dir)), *bad = strdup(tu_path("%s/bad.tar", f.dir));
    assert_int_equal(tu_sh("tar --xattrs --sparse --numeric-owner --format=posix -cf '%s' -C '%s' .", good, src), 0);
    size_t n;
    uint8_t *orig = tu_read_file(good, &n);
    assert_non_null(orig);
    uint8_t *buf = malloc(n);
    uint64_t seed = 2024;
    size_t ok = 0, corrupt = 0;
    for (int it = 0; it < 300; it++) {
        memcpy(buf, orig, n);
        size_t len = n;
        if (it % 10 == 9) {
            len = (size_t)(tu_rand(&seed) % n);
        } else {
            int flips = 1 + (int)(tu_rand(&seed) % 4);
            for (int k = 0; k < flips; k++) {
                size_t pos = (size_t)(tu_rand(&seed) % n);
                if (it % 2) /* aim at headers (pax records included): the first 512 bytes of blocks */
                    pos = (size_t)(tu_rand(&seed) % (n / 512)) * 512 + (size_t)(tu_rand(&seed) % 512);
                buf[pos] = (uint8_t)tu_rand(&seed);
            }
        }
        tu_write_file(bad, buf, len);
        struct cairn_tree_opts o = {.threads = 1, .flags = it % 3 == 0 ? CAIRN_TREE_OVERLAY : 0};
        struct cairn_tree_ref ref;
        int rc = cairn_archive_import(f.s, f.d, bad, &o, &ref, NULL);
        if (rc == CAIRN_OK) {
            struct cairn_manifest m;
            load_manifest(&f, &ref, &m); /* the decoder validates paths, order, links, sizes */
            cairn_manifest_release(&m);
            cairn_tree_ref_release(&ref);
            ok++;
        } else if (rc == CAIRN_ECORRUPT || rc == CAIRN_ETOOBIG) {
            assert_int_equal(ref.n_chunks, 0);
            corrupt++;
        } else {
            fail_msg("iteration %d: %s: %s", it, cairn_err_name(rc), cairn_err_msg());
        }
    }
    print_message("300 damaged tarballs: %zu imported, %zu refused\n", ok, corrupt);
    free(buf);
    free(orig);
    free(good);
    free(bad);
    free(src);
    fx_close(&f);
}

/* A stream that cannot seek: a pipe, and "-" (stdin). Same manifest as from the file. */
static void test_pipe_and_stdin(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "arc-pipe");
    char *src = strdup(tu_path("%s/src", f.dir));
    build_tree(src);
    char *tarball = strdup(tu_path("%s/t.tar.gz", f.dir));
    assert_int_equal(tu_sh("tar --xattrs --sparse --numeric-owner -czf '%s' -C '%s' .", tarball, src), 0);
    struct cairn_tree_ref r1, r2, r3;
    import(&f, tarball, 0, &r1, NULL);

    FILE *p = popen(tu_path("cat '%s'", tarball), "r");
    assert_non_null(p);
    struct cairn_tree_opts o = {.threads = 2};
    int rc = cairn_archive_import_fd(f.s, f.d, fileno(p), "pipe", &o, &r2, NULL);
    pclose(p);
    if (rc != CAIRN_OK)
        fail_msg("pipe: %s", cairn_err_msg());
    assert_int_equal(r2.n_chunks, r1.n_chunks);
    assert_memory_equal(r2.chunks[0].id, r1.chunks[0].id, CAIRN_CHUNK_ID_BYTES);

    int save = dup(0), fd = open(tarball, O_RDONLY);
    assert_true(save >= 0 && fd >= 0);
    assert_int_equal(dup2(fd, 0), 0);
    close(fd);
    rc = cairn_tree_import_auto(f.s, f.d, "-", &o, &r3, NULL);
    assert_int_equal(dup2(save, 0), 0);
    close(save);
    if (rc != CAIRN_OK)
        fail_msg("stdin: %s", cairn_err_msg());
    assert_int_equal(r3.n_chunks, r1.n_chunks);
    assert_memory_equal(r3.chunks[0].id, r1.chunks[0].id, CAIRN_CHUNK_ID_BYTES);
    size_t n = 0;
    assert_int_equal(cairn_tree_chunks(f.s, f.d, &r3, count_chunk, &n), CAIRN_OK);
    assert_true(n > 10);
    cairn_tree_ref_release(&r1);
    cairn_tree_ref_release(&r2);
    cairn_tree_ref_release(&r3);
    free(tarball);
    free(src);
    fx_close(&f);
}

/* ~200 MB tarball: the import rate (info only) and the peak memory. */
static void test_throughput(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, "arc-speed");
    char *tarball = strdup(tu_path("%s/big.tar", f.dir));
    size_t file_len = 48u << 20, nfiles = 4; /* a multiple of the 4 MiB writes */
    uint8_t *buf = malloc(4u << 20);
    uint64_t seed = 99;
    struct tw t;
    tw_open(&t, tarball);
    for (size_t i = 0; i < nfiles; i++) {
        tw_header(&t, tu_path("data/file-%zu", i), '0', 0644, file_len, NULL);
        for (size_t off = 0; off < file_len; off += 4u << 20) {
            tu_fill_random(&seed, buf, 4u << 20);
            if (i % 2) /* half of it compressible */
                for (size_t k = 0; k < (4u << 20); k += 64)
                    memset(buf + k, 'a', 48);
            assert_int_equal(fwrite(buf, 1, 4u << 20, t.f), 4u << 20);
        }
    }
    tw_close(&t);
    free(buf);
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    struct cairn_tree_opts o = {0};
    struct cairn_tree_ref ref;
    struct cairn_tree_stats st;
    uint64_t t0 = cairn_now_mono_ns();
    int rc = cairn_archive_import(f.s, f.d, tarball, &o, &ref, &st);
    uint64_t ns = cairn_now_mono_ns() - t0;
    getrusage(RUSAGE_SELF, &ru1);
    if (rc != CAIRN_OK)
        fail_msg("import: %s", cairn_err_msg());
    double mb = (double)(file_len * nfiles) / 1e6;
    print_message("import of a %.0f MB tarball: %.2f s, %.0f MB/s (%u threads), %llu chunks, stored %.0f MB; "
                  "peak RSS %ld MB (was %ld MB)\n",
                  mb, (double)ns / 1e9, mb / ((double)ns / 1e9), cairn_cpu_count(), (unsigned long long)st.chunks,
                  (double)st.stored_bytes / 1e6, ru1.ru_maxrss / 1024, ru0.ru_maxrss / 1024);
    assert_int_equal(st.bytes, file_len * nfiles);
    assert_int_equal(st.files, nfiles);
    cairn_tree_ref_release(&ref);
    free(tarball);
    fx_close(&f);
}

int main(void)
{
    is_root = geteuid() == 0;
    if (!is_root)
        fprintf(stderr, "test_archive: NOT ROOT: devices, owners and trusted.* xattrs are not checked\n");
    cairn_log_set_level(CAIRN_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_dedup_dir_and_tarball),
        cmocka_unit_test(test_oci_layer),
        cmocka_unit_test(test_replace_and_parents),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_pipe_and_stdin),
        cmocka_unit_test(test_throughput),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
