/*
 * test_tree_hostile.c: manifests that decode (or nearly) but try to make
 * materialize write outside dest: entries through symlinks made by the
 * manifest or already in dest, hardlinks through symlinks, names that exist in
 * dest as symlinks to outside files or directories, "..", absolute paths, bad
 * chunk references. Each must fail with a clear error (CAIRN_ECORRUPT where the
 * manifest is at fault) or replace the link inside dest, and nothing outside
 * dest may be created or changed: a fingerprint of an outside directory (and
 * of dest's parent) is compared before and after every case.
 */
#include "testutil.h"

#include "cairn/alloc.h"
#include "cairn/chunker.h"
#include "cairn/crypto.h"
#include "cairn/err.h"
#include "cairn/manifest.h"
#include "cairn/store.h"
#include "cairn/tree.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

struct fx {
    char *dir;      /* store and dest live here */
    char *outside;  /* an absolute directory outside dest: /tmp/outside-XXXXXX */
    char *dest;
    struct cairn_store *s;
    struct cairn_domain *d;
    struct cairn_codec *c;
    struct cairn_manifest m;
};

static struct fx F;

/* A fingerprint of a directory: every path, type, mode, size, mtime, content hash. */
static char *fingerprint(const char *dir)
{
    char out[4096];
    snprintf(out, sizeof(out), "%s.fp", F.dir);
    int rc = tu_sh("cd '%s' && (find . -printf '%%p %%y %%m %%s %%T@ %%l\\n'; "
                   "find . -type f -exec sha256sum {} +) 2>&1 | sort > '%s'",
                   dir, out);
    assert_int_equal(rc, 0);
    size_t n;
    uint8_t *b = tu_read_file(out, &n);
    assert_non_null(b);
    b[n] = 0;
    unlink(out);
    return (char *)b;
}

static char *fp_outside;

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof(F));
    F.dir = tu_tempdir("tree-hostile");
    char tmpl[] = "/tmp/outside-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    F.outside = strdup(tmpl);
    tu_write_file(tu_path("%s/victim", F.outside), "original", 8);
    assert_int_equal(mkdir(tu_path("%s/sub", F.outside), 0755), 0);
    tu_write_file(tu_path("%s/sub/secret", F.outside), "secret", 6);
    F.dest = strdup(tu_path("%s/dest", F.dir));
    assert_int_equal(cairn_crypto_init(), CAIRN_OK);
    assert_int_equal(cairn_store_open(&F.s, tu_path("%s/store", F.dir), true), CAIRN_OK);
    uint8_t key[CAIRN_KEY_BYTES];
    cairn_random_bytes(key, sizeof(key));
    assert_int_equal(cairn_domain_new(&F.d, key), CAIRN_OK);
    assert_int_equal(cairn_codec_new(&F.c, 3), CAIRN_OK);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cairn_codec_destroy(&F.c);
    cairn_domain_destroy(&F.d);
    cairn_store_close(&F.s);
    tu_rmrf(F.dir);
    tu_rmrf(F.outside);
    free(F.dir);
    free(F.outside);
    free(F.dest);
    return 0;
}

/* Each case: fresh dest, fresh manifest, fingerprints of what must not change. */
static void case_begin(void)
{
    tu_rmrf(F.dest);
    assert_int_equal(mkdir(F.dest, 0755), 0);
    cairn_manifest_init(&F.m);
}

static void snapshot_outside(void)
{
    free(fp_outside);
    fp_outside = fingerprint(F.outside);
}

static void check_outside_unchanged(void)
{
    char *o = fingerprint(F.outside);
    assert_string_equal(o, fp_outside);
    free(o);
    /* dest's siblings: only "dest" and "store" */
    int rc = tu_sh("test \"$(ls -A '%s' | sort | tr '\\n' ' ')\" = 'dest store '", F.dir);
    assert_int_equal(rc, 0);
}

static struct cairn_entry *add(const char *path, uint8_t type, uint32_t mode)
{
    struct cairn_entry *e = cairn_manifest_add(&F.m);
    assert_non_null(e);
    e->path = cairn_strdup(path);
    e->type = type;
    e->mode = mode;
    e->uid = getuid();
    e->gid = getgid();
    e->mtime_ns = 1600000000000000000ll;
    return e;
}

static void add_symlink(const char *path, const char *target)
{
    struct cairn_entry *e = add(path, CAIRN_ET_SYMLINK, 0777);
    e->target = cairn_strdup(target);
}

static void add_file(const char *path, const char *data)
{
    struct cairn_entry *e = add(path, CAIRN_ET_FILE, 0644);
    size_t n = strlen(data);
    e->size = n;
    if (n) {
        uint8_t id[CAIRN_CHUNK_ID_BYTES];
        struct cairn_put_result res;
        assert_int_equal(cairn_store_put_chunk(F.s, F.c, F.d, (const uint8_t *)data, n, id, &res), CAIRN_OK);
        assert_int_equal(cairn_entry_add_piece(e, id, (uint32_t)n, false), CAIRN_OK);
    }
}

static void add_hardlink(const char *path, const char *target)
{
    struct cairn_entry *e = add(path, CAIRN_ET_HARDLINK, 0644);
    e->target = cairn_strdup(target);
}

/* Store the manifest (sorted as given: some cases are deliberately out of order) and materialize it. */
static int run(unsigned flags)
{
    struct cairn_tree_ref ref;
    int rc = cairn_manifest_store(F.s, F.c, F.d, &F.m, &ref, NULL);
    cairn_manifest_release(&F.m);
    if (rc != CAIRN_OK)
        return rc; /* the encoder may refuse some hostile shapes already */
    struct cairn_tree_opts o = {.flags = flags, .threads = 2};
    rc = cairn_tree_materialize(F.s, F.d, &ref, F.dest, &o, NULL);
    fprintf(stderr, "  -> %s: %s\n", cairn_err_name(rc), rc ? cairn_err_msg() : "");
    cairn_tree_ref_release(&ref);
    return rc;
}

static void expect_corrupt(int rc)
{
    assert_int_equal(rc, CAIRN_ECORRUPT);
    assert_true(strlen(cairn_err_msg()) > 0);
}

/* ---- cases ---- */

static void test_symlink_then_child(void **state)
{
    (void)state;
    /* symlink "a" -> the absolute outside dir, then "a/x" */
    case_begin();
    snapshot_outside();
    add("." , CAIRN_ET_DIR, 0755);
    add_symlink("a", F.outside);
    add_file("a/x", "pwned");
    expect_corrupt(run(0));
    check_outside_unchanged();

    /* symlink "a" -> "..", then "a/x" (would land in dest's parent) */
    case_begin();
    add_symlink("a", "..");
    add_file("a/x", "pwned");
    expect_corrupt(run(0));
    check_outside_unchanged();

    /* the same in overlay mode, and with a directory under the symlink */
    case_begin();
    add_symlink("a", F.outside);
    add("a/newdir", CAIRN_ET_DIR, 0755);
    expect_corrupt(run(CAIRN_TREE_OVERLAY));
    check_outside_unchanged();
}

static void test_dest_has_symlinked_dir(void **state)
{
    (void)state;
    /* dest already holds "d" -> outside; the manifest writes "d/f" without a "d" entry */
    case_begin();
    assert_int_equal(symlink(F.outside, tu_path("%s/d", F.dest)), 0);
    snapshot_outside();
    add_file("d/f", "pwned");
    expect_corrupt(run(0));
    assert_non_null(strstr(cairn_err_msg(), "symlink"));
    check_outside_unchanged();

    /* the same with "d/sub/secret" (an existing outside file) and a whiteout through it */
    case_begin();
    assert_int_equal(symlink(F.outside, tu_path("%s/d", F.dest)), 0);
    add_file("d/sub/secret", "overwritten");
    expect_corrupt(run(0));
    check_outside_unchanged();

    case_begin();
    assert_int_equal(symlink(F.outside, tu_path("%s/d", F.dest)), 0);
    add("d/victim", CAIRN_ET_WHITEOUT, 0);
    expect_corrupt(run(0));
    check_outside_unchanged();

    /* symlink one level down: dest/real/link -> outside, manifest "real/link/f" */
    case_begin();
    assert_int_equal(mkdir(tu_path("%s/real", F.dest), 0755), 0);
    assert_int_equal(symlink(F.outside, tu_path("%s/real/link", F.dest)), 0);
    add("real", CAIRN_ET_DIR, 0755);
    add_file("real/link/f", "pwned");
    expect_corrupt(run(0));
    check_outside_unchanged();

    /* when the manifest says "d" is a directory, the symlink is replaced by one inside dest */
    case_begin();
    assert_int_equal(symlink(F.outside, tu_path("%s/d", F.dest)), 0);
    add("d", CAIRN_ET_DIR, 0755);
    add_file("d/f", "fine");
    assert_int_equal(run(0), CAIRN_OK);
    check_outside_unchanged();
    struct stat st;
    assert_int_equal(lstat(tu_path("%s/d", F.dest), &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(lstat(tu_path("%s/d/f", F.dest), &st), 0);
    assert_true(S_ISREG(st.st_mode));
}

static void test_hardlink_through_symlink(void **state)
{
    (void)state;
    /* "s" -> outside dir (made by the manifest); "h" hardlinks "s/victim" */
    case_begin();
    snapshot_outside();
    add_symlink("s", F.outside);
    add_hardlink("z", "s/victim");
    expect_corrupt(run(0));
    check_outside_unchanged();

    /* "s" -> outside already in dest; the manifest claims a file "s/victim" then links to it */
    case_begin();
    assert_int_equal(symlink(F.outside, tu_path("%s/s", F.dest)), 0);
    add_file("s/victim", "x");
    add_hardlink("z", "s/victim");
    expect_corrupt(run(0));
    check_outside_unchanged();

    /* a hardlink to a path that is not a file entry of the manifest (an existing dest file) */
    case_begin();
    tu_write_file(tu_path("%s/existing", F.dest), "e", 1);
    add_hardlink("z", "existing");
    expect_corrupt(run(0));
    check_outside_unchanged();

    /* a valid hardlink still works */
    case_begin();
    add("t", CAIRN_ET_DIR, 0755);
    add_file("t/f", "shared");
    add_hardlink("u", "t/f");
    assert_int_equal(run(0), CAIRN_OK);
    struct stat a, b;
    assert_int_equal(stat(tu_path("%s/t/f", F.dest), &a), 0);
    assert_int_equal(stat(tu_path("%s/u", F.dest), &b), 0);
    assert_int_equal(a.st_ino, b.st_ino);
    check_outside_unchanged();
}

static void test_name_is_symlink_to_outside(void **state)
{
    (void)state;
    /* every entry type created where dest has a symlink to an outside file or dir */
    static const uint8_t types[] = {CAIRN_ET_FILE, CAIRN_ET_DIR, CAIRN_ET_SYMLINK, CAIRN_ET_HARDLINK,
                                    CAIRN_ET_FIFO, CAIRN_ET_WHITEOUT};
    for (int overlay = 0; overlay < 2; overlay++) {
        for (size_t i = 0; i < CAIRN_ARRAY_LEN(types); i++) {
            for (int to_dir = 0; to_dir < 2; to_dir++) {
                case_begin();
                const char *target = to_dir ? F.outside : tu_path("%s/victim", F.outside);
                assert_int_equal(symlink(target, tu_path("%s/n", F.dest)), 0);
                snapshot_outside();
                fprintf(stderr, "type %u over a symlink to an outside %s (%s mode)\n", types[i],
                        to_dir ? "dir" : "file", overlay ? "overlay" : "plain");
                switch (types[i]) {
                case CAIRN_ET_FILE: add_file("n", "new content"); break;
                case CAIRN_ET_DIR: {
                    struct cairn_entry *e = add("n", CAIRN_ET_DIR, 0700);
                    e->flags = CAIRN_EF_OPAQUE; /* plain mode empties an existing dir: never the outside one */
                    add_file("n/inner", "i");
                    break;
                }
                case CAIRN_ET_SYMLINK: add_symlink("n", "elsewhere"); break;
                case CAIRN_ET_HARDLINK:
                    add_file("a", "linked");
                    add_hardlink("n", "a");
                    break;
                case CAIRN_ET_FIFO: add("n", CAIRN_ET_FIFO, 0600); break;
                case CAIRN_ET_WHITEOUT: add("n", CAIRN_ET_WHITEOUT, 0); break;
                }
                int rc = run(overlay ? CAIRN_TREE_OVERLAY : 0);
                if (rc != CAIRN_OK && types[i] == CAIRN_ET_WHITEOUT && overlay && geteuid() != 0) {
                    fprintf(stderr, "!!! NOT ROOT: this kernel refuses whiteout devices to us\n");
                } else {
                    assert_int_equal(rc, CAIRN_OK);
                    bool gone_ok = types[i] == CAIRN_ET_WHITEOUT && !overlay;
                    struct stat st;
                    int l = lstat(tu_path("%s/n", F.dest), &st);
                    if (gone_ok) {
                        assert_int_equal(l, -1); /* the symlink was deleted, not what it points to */
                    } else {
                        assert_int_equal(l, 0);
                        if (types[i] != CAIRN_ET_SYMLINK)
                            assert_false(S_ISLNK(st.st_mode));
                    }
                }
                check_outside_unchanged();
                size_t n;
                uint8_t *v = tu_read_file(tu_path("%s/victim", F.outside), &n);
                assert_int_equal(n, 8);
                assert_memory_equal(v, "original", 8);
                free(v);
            }
        }
    }
}

static void test_bad_paths(void **state)
{
    (void)state;
    const char *bad[] = {"../escape", "/abs", "a/../../escape", "a//b", "./x", "x/.", "a/"};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(bad); i++) {
        case_begin();
        snapshot_outside();
        fprintf(stderr, "path '%s'\n", bad[i]);
        add(".", CAIRN_ET_DIR, 0755);
        if (!strncmp(bad[i], "a/", 2))
            add("a", CAIRN_ET_DIR, 0755);
        add_file(bad[i], "pwned");
        int rc = run(0);
        assert_int_not_equal(rc, CAIRN_OK);
        assert_int_equal(rc, CAIRN_ECORRUPT);
        check_outside_unchanged();
        assert_int_equal(tu_sh("test ! -e '%s/escape'", F.dir), 0);
    }
    /* out of order and duplicate entries */
    case_begin();
    add_file("b", "1");
    add_file("a", "2");
    expect_corrupt(run(0));
    case_begin();
    add_file("a", "1");
    add_file("a", "2");
    expect_corrupt(run(0));
    /* a hardlink target that is a symlink entry */
    case_begin();
    add_symlink("l", F.outside);
    add_hardlink("m", "l");
    expect_corrupt(run(0));
    check_outside_unchanged();
}

static void test_bad_chunks(void **state)
{
    (void)state;
    /* a chunk that is not in the store */
    case_begin();
    snapshot_outside();
    struct cairn_entry *e = add("missing", CAIRN_ET_FILE, 0644);
    uint8_t id[CAIRN_CHUNK_ID_BYTES];
    memset(id, 0xab, sizeof(id));
    e->size = 100;
    assert_int_equal(cairn_entry_add_piece(e, id, 100, false), CAIRN_OK);
    int rc = run(0);
    assert_int_not_equal(rc, CAIRN_OK);
    assert_non_null(strstr(cairn_err_msg(), "abababab"));
    check_outside_unchanged();

    /* a piece whose length does not match its chunk */
    case_begin();
    struct cairn_put_result res;
    assert_int_equal(cairn_store_put_chunk(F.s, F.c, F.d, (const uint8_t *)"0123456789", 10, id, &res), CAIRN_OK);
    e = add("short", CAIRN_ET_FILE, 0644);
    e->size = 5;
    assert_int_equal(cairn_entry_add_piece(e, id, 5, false), CAIRN_OK);
    expect_corrupt(run(0));
    check_outside_unchanged();

    /* a manifest reference that does not add up */
    struct cairn_tree_ref ref = {0};
    struct cairn_piece p = {.len = 10};
    memcpy(p.id, id, sizeof(id));
    ref.chunks = &p;
    ref.n_chunks = 1;
    ref.manifest_len = 11;
    struct cairn_tree_opts o = {0};
    assert_int_equal(cairn_tree_materialize(F.s, F.d, &ref, F.dest, &o, NULL), CAIRN_ECORRUPT);
    /* a chunk that is not a manifest */
    ref.manifest_len = 10;
    assert_int_equal(cairn_tree_materialize(F.s, F.d, &ref, F.dest, &o, NULL), CAIRN_ECORRUPT);
    check_outside_unchanged();
}

static void test_overlay_xattrs_reserved(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        fprintf(stderr, "!!! NOT ROOT: skipping test_overlay_xattrs_reserved (trusted.* xattrs)\n");
        skip();
    }
    /* a forged manifest carrying overlayfs's own xattrs: only the opaque flag may set one */
    case_begin();
    struct cairn_entry *e = add("d", CAIRN_ET_DIR, 0755);
    e->flags = CAIRN_EF_OPAQUE;
    e->xattrs = cairn_calloc(2, sizeof(*e->xattrs));
    e->xattrs[0] = (struct cairn_xattr){cairn_strdup("trusted.overlay.redirect"), cairn_memdup("/etc", 4), 4};
    e->xattrs[1] = (struct cairn_xattr){cairn_strdup("user.ok"), cairn_memdup("1", 1), 1};
    e->n_xattrs = 2;
    add_file("f", "x");
    e = &F.m.entries[1];
    e->xattrs = cairn_calloc(1, sizeof(*e->xattrs));
    e->xattrs[0] = (struct cairn_xattr){cairn_strdup("trusted.overlay.metacopy"), cairn_memdup("", 0), 0};
    e->n_xattrs = 1;
    assert_int_equal(run(CAIRN_TREE_OVERLAY), CAIRN_OK);
    char v[16];
    const char *d = tu_path("%s/d", F.dest);
    assert_int_equal(getxattr(d, "trusted.overlay.redirect", v, sizeof(v)), -1);
    assert_int_equal(getxattr(d, "trusted.overlay.opaque", v, sizeof(v)), 1);
    assert_int_equal(getxattr(d, "user.ok", v, sizeof(v)), 1);
    assert_int_equal(getxattr(tu_path("%s/f", F.dest), "trusted.overlay.metacopy", v, sizeof(v)), -1);
}

int main(void)
{
    if (geteuid() != 0)
        fprintf(stderr, "!!! test_tree_hostile is not running as root: trusted.* checks are skipped\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_symlink_then_child),
        cmocka_unit_test(test_dest_has_symlinked_dir),
        cmocka_unit_test(test_hardlink_through_symlink),
        cmocka_unit_test(test_name_is_symlink_to_outside),
        cmocka_unit_test(test_bad_paths),
        cmocka_unit_test(test_bad_chunks),
        cmocka_unit_test(test_overlay_xattrs_reserved),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    free(fp_outside);
    return rc;
}
