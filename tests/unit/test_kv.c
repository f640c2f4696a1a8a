/* test_kv.c: the RocksDB adapter on a real database on disk: values small and in blob files, batches,
 * prefix iteration, exact existence tests, persistence, locking, damaged blob files, and the read-only
 * open beside a writer (this process and another one). */
#include "testutil.h"

#include "cairn/err.h"
#include "cairn/kv.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void put_str(struct cairn_kv *kv, const char *k, const char *v)
{
    assert_int_equal(cairn_kv_put(kv, k, strlen(k), v, strlen(v)), CAIRN_OK);
}

static void expect_val(struct cairn_kv *kv, const void *k, size_t klen, const void *v, size_t vlen)
{
    uint8_t *got = NULL;
    size_t n = 0;
    assert_int_equal(cairn_kv_get(kv, k, klen, &got, &n), CAIRN_OK);
    assert_int_equal(n, vlen);
    if (vlen)
        assert_memory_equal(got, v, vlen);
    cairn_kv_free(got);
}

static void expect_has(struct cairn_kv *kv, const void *k, size_t klen, bool want)
{
    bool found = !want;
    assert_int_equal(cairn_kv_has(kv, k, klen, &found), CAIRN_OK);
    assert_true(found == want);
}

static void test_open_missing(void **state)
{
    (void)state;
    char *dir = tu_tempdir("kv");
    struct cairn_kv *kv = (struct cairn_kv *)1;
    assert_int_equal(cairn_kv_open(&kv, tu_path("%s/absent", dir), false), CAIRN_ENOTFOUND);
    assert_null(kv);
    assert_non_null(strstr(cairn_err_msg(), "absent"));
    cairn_kv_close(&kv); /* NULL-safe */
    cairn_kv_close(NULL);
    tu_rmrf(dir);
    free(dir);
}

static void test_put_get_has_delete(void **state)
{
    (void)state;
    char *dir = tu_tempdir("kv");
    const char *db = tu_path("%s/db", dir);
    struct cairn_kv *kv = NULL;
    assert_int_equal(cairn_kv_open(&kv, db, true), CAIRN_OK);

    put_str(kv, "alpha", "one");
    expect_val(kv, "alpha", 5, "one", 3);
    /* empty value is a present key, not a missing one */
    assert_int_equal(cairn_kv_put(kv, "empty", 5, "", 0), CAIRN_OK);
    expect_val(kv, "empty", 5, "", 0);
    expect_has(kv, "empty", 5, true);
    /* binary key with NULs, and a value large enough for a blob file */
    uint8_t bkey[9] = {0, 1, 0, 2, 0xff, 0, 0, 3, 0};
    size_t big_n = 200 * 1024;
    uint8_t *big = malloc(big_n);
    uint64_t seed = 7;
    tu_fill_random(&seed, big, big_n);
    assert_int_equal(cairn_kv_put(kv, bkey, sizeof(bkey), big, big_n), CAIRN_OK);
    expect_val(kv, bkey, sizeof(bkey), big, big_n);

    uint8_t *v = (uint8_t *)1;
    size_t n = 1;
    assert_int_equal(cairn_kv_get(kv, "missing", 7, &v, &n), CAIRN_ENOTFOUND);
    assert_null(v);
    assert_int_equal(n, 0);
    expect_has(kv, "missing", 7, false);
    expect_has(kv, "alpha", 5, true);

    /* overwrite, then delete */
    put_str(kv, "alpha", "two");
    expect_val(kv, "alpha", 5, "two", 3);
    assert_int_equal(cairn_kv_delete(kv, "alpha", 5), CAIRN_OK);
    expect_has(kv, "alpha", 5, false);
    assert_int_equal(cairn_kv_get(kv, "alpha", 5, &v, &n), CAIRN_ENOTFOUND);
    assert_int_equal(cairn_kv_delete(kv, "never-there", 11), CAIRN_OK);
    assert_int_equal(cairn_kv_sync(kv), CAIRN_OK);

    /* persistence: everything is back after close and reopen (values now in SST and blob files) */
    cairn_kv_close(&kv);
    assert_null(kv);
    assert_int_equal(cairn_kv_open(&kv, db, false), CAIRN_OK);
    expect_val(kv, bkey, sizeof(bkey), big, big_n);
    expect_val(kv, "empty", 5, "", 0);
    expect_has(kv, bkey, sizeof(bkey), true);
    expect_has(kv, "empty", 5, true);
    expect_has(kv, "alpha", 5, false);
    cairn_kv_close(&kv);
    free(big);
    tu_rmrf(dir);
    free(dir);
}

/* has() must be exact: never true for a missing key, never false for a present one, in memtable or on disk. */
static void test_has_is_exact(void **state)
{
    (void)state;
    char *dir = tu_tempdir("kv");
    const char *db = tu_path("%s/db", dir);
    struct cairn_kv *kv = NULL;
    assert_int_equal(cairn_kv_open(&kv, db, true), CAIRN_OK);
    uint8_t val[5000];
    memset(val, 0x5a, sizeof(val));
    char key[32];
    for (int i = 0; i < 2000; i += 2) {
        int kl = snprintf(key, sizeof(key), "key-%06d", i);
        /* alternate small values and blob-sized values */
        assert_int_equal(cairn_kv_put(kv, key, (size_t)kl, val, (i % 4) ? 10 : sizeof(val)), CAIRN_OK);
    }
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 2000; i++) {
            int kl = snprintf(key, sizeof(key), "key-%06d", i);
            expect_has(kv, key, (size_t)kl, i % 2 == 0);
        }
        cairn_kv_close(&kv);
        assert_int_equal(cairn_kv_open(&kv, db, false), CAIRN_OK);
    }
    /* deletions are seen by has() on disk too */
    for (int i = 0; i < 2000; i += 4) {
        int kl = snprintf(key, sizeof(key), "key-%06d", i);
        assert_int_equal(cairn_kv_delete(kv, key, (size_t)kl), CAIRN_OK);
    }
    cairn_kv_close(&kv);
    assert_int_equal(cairn_kv_open(&kv, db, false), CAIRN_OK);
    for (int i = 0; i < 2000; i++) {
        int kl = snprintf(key, sizeof(key), "key-%06d", i);
        expect_has(kv, key, (size_t)kl, i % 2 == 0 && i % 4 != 0);
    }
    cairn_kv_close(&kv);
    tu_rmrf(dir);
    free(dir);
}

static void test_batch(void **state)
{
    (void)state;
    char *dir = tu_tempdir("kv");
    struct cairn_kv *kv = NULL;
    assert_int_equal(cairn_kv_open(&kv, tu_path("%s/db", dir), true), CAIRN_OK);
    put_str(kv, "gone", "x");
    struct cairn_kv_batch *b = NULL;
    assert_int_equal(cairn_kv_batch_new(&b), CAIRN_OK);
    assert_int_equal(cairn_kv_batch_count(b), 0);
    cairn_kv_batch_put(b, "a", 1, "1", 1);
    cairn_kv_batch_put(b, "b", 1, "2", 1);
    cairn_kv_batch_delete(b, "gone", 4);
    assert_int_equal(cairn_kv_batch_count(b), 3);
    /* nothing is visible before the commit */
    expect_has(kv, "a", 1, false);
    assert_int_equal(cairn_kv_batch_commit(kv, b), CAIRN_OK);
    assert_int_equal(cairn_kv_batch_count(b), 0);
    expect_val(kv, "a", 1, "1", 1);
    expect_val(kv, "b", 1, "2", 1);
    expect_has(kv, "gone", 4, false);
    /* reuse */
    cairn_kv_batch_put(b, "c", 1, "3", 1);
    assert_int_equal(cairn_kv_batch_commit(kv, b), CAIRN_OK);
    expect_val(kv, "c", 1, "3", 1);
    cairn_kv_batch_destroy(&b);
    assert_null(b);
    cairn_kv_batch_destroy(&b);
    cairn_kv_close(&kv);
    tu_rmrf(dir);
    free(dir);
}

struct seen {
    char keys[64][16];
    size_t klens[64];
    int n;
};

static void collect(struct cairn_kv *kv, const void *prefix, size_t plen, struct seen *s)
{
    struct cairn_kv_iter *it = NULL;
    s->n = 0;
    assert_int_equal(cairn_kv_iter_new(kv, prefix, plen, &it), CAIRN_OK);
    for (;;) {
        const uint8_t *k, *v;
        size_t kl, vl;
        bool done;
        assert_int_equal(cairn_kv_iter_next(it, &k, &kl, &v, &vl, &done), CAIRN_OK);
        if (done)
            break;
        assert_true(kl <= 16);
        assert_true(s->n < 64);
        /* value is the key reversed in our fixture: check it came along */
        assert_int_equal(vl, kl);
        for (size_t i = 0; i < kl; i++)
            assert_int_equal(v[i], k[kl - 1 - i]);
        memcpy(s->keys[s->n], k, kl);
        s->klens[s->n++] = kl;
    }
    /* after the end, stays at the end */
    const uint8_t *k, *v;
    size_t kl, vl;
    bool done = false;
    assert_int_equal(cairn_kv_iter_next(it, &k, &kl, &v, &vl, &done), CAIRN_OK);
    assert_true(done);
    cairn_kv_iter_destroy(&it);
    assert_null(it);
}

static void test_prefix_iteration(void **state)
{
    (void)state;
    char *dir = tu_tempdir("kv");
    struct cairn_kv *kv = NULL;
    assert_int_equal(cairn_kv_open(&kv, tu_path("%s/db", dir), true), CAIRN_OK);
    static const struct { const char *k; size_t n; } keys[] = {
        {"a", 1}, {"b", 1}, {"b\x00", 2}, {"ba", 2}, {"bz", 2}, {"b\xff", 2}, {"b\xff\xff", 3},
        {"c", 1}, {"\xff", 1}, {"\xff\xff", 2}, {"\xff\xff\x01", 3},
    };
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(keys); i++) {
        char rev[16];
        for (size_t j = 0; j < keys[i].n; j++)
            rev[j] = keys[i].k[keys[i].n - 1 - j];
        assert_int_equal(cairn_kv_put(kv, keys[i].k, keys[i].n, rev, keys[i].n), CAIRN_OK);
    }
    struct seen s;
    for (int round = 0; round < 2; round++) {
        collect(kv, "b", 1, &s);
        assert_int_equal(s.n, 6);
        assert_memory_equal(s.keys[0], "b", 1);
        assert_memory_equal(s.keys[1], "b\x00", 2);
        assert_memory_equal(s.keys[5], "b\xff\xff", 3);
        collect(kv, "b\xff", 2, &s);
        assert_int_equal(s.n, 2);
        collect(kv, "\xff\xff", 2, &s);
        assert_int_equal(s.n, 2);
        collect(kv, "\xff", 1, &s);
        assert_int_equal(s.n, 3);
        collect(kv, "q", 1, &s);
        assert_int_equal(s.n, 0);
        collect(kv, "", 0, &s);
        assert_int_equal(s.n, (int)CAIRN_ARRAY_LEN(keys));
        /* key order is byte order */
        for (int i = 1; i < s.n; i++) {
            size_t m = CAIRN_MIN(s.klens[i - 1], s.klens[i]);
            int c = memcmp(s.keys[i - 1], s.keys[i], m);
            assert_true(c < 0 || (c == 0 && s.klens[i - 1] < s.klens[i]));
        }
        /* again from SST files */
        cairn_kv_close(&kv);
        assert_int_equal(cairn_kv_open(&kv, tu_path("%s/db", dir), false), CAIRN_OK);
    }
    cairn_kv_close(&kv);
    tu_rmrf(dir);
    free(dir);
}

static void test_second_open_is_busy(void **state)
{
    (void)state;
    char *dir = tu_tempdir("kv");
    const char *db = tu_path("%s/db", dir);
    struct cairn_kv *a = NULL, *b = NULL;
    assert_int_equal(cairn_kv_open(&a, db, true), CAIRN_OK);
    assert_int_equal(cairn_kv_open(&b, db, true), CAIRN_EBUSY);
    assert_null(b);
    assert_non_null(strstr(cairn_err_msg(), "in use"));
    assert_non_null(strstr(cairn_err_msg(), db));
    /* and from another process */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct cairn_kv *c = NULL;
        int rc = cairn_kv_open(&c, db, true);
        _exit(rc == CAIRN_EBUSY && strstr(cairn_err_msg(), "in use") ? 0 : 1);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    cairn_kv_close(&a);
    /* free again once closed */
    assert_int_equal(cairn_kv_open(&b, db, false), CAIRN_OK);
    cairn_kv_close(&b);
    tu_rmrf(dir);
    free(dir);
}

/* Flip one byte in the middle of every blob file: reading the value must fail as corrupt, not return other bytes. */
static void test_damaged_blob_file(void **state)
{
    (void)state;
    char *dir = tu_tempdir("kv");
    const char *db = tu_path("%s/db", dir);
    struct cairn_kv *kv = NULL;
    assert_int_equal(cairn_kv_open(&kv, db, true), CAIRN_OK);
    size_t n = 100 * 1024;
    uint8_t *val = malloc(n);
    uint64_t seed = 99;
    tu_fill_random(&seed, val, n);
    assert_int_equal(cairn_kv_put(kv, "victim", 6, val, n), CAIRN_OK);
    cairn_kv_close(&kv);

    DIR *dh = opendir(db);
    assert_non_null(dh);
    int blobs = 0;
    struct dirent *de;
    while ((de = readdir(dh))) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 5, ".blob") != 0)
            continue;
        const char *p = tu_path("%s/%s", db, de->d_name);
        int fd = open(p, O_RDWR);
        assert_true(fd >= 0);
        struct stat st;
        assert_int_equal(fstat(fd, &st), 0);
        off_t mid = st.st_size / 2;
        uint8_t c;
        assert_int_equal(pread(fd, &c, 1, mid), 1);
        c ^= 0x40;
        assert_int_equal(pwrite(fd, &c, 1, mid), 1);
        close(fd);
        blobs++;
    }
    closedir(dh);
    assert_true(blobs >= 1);

    assert_int_equal(cairn_kv_open(&kv, db, false), CAIRN_OK);
    uint8_t *got = NULL;
    size_t gn = 0;
    assert_int_equal(cairn_kv_get(kv, "victim", 6, &got, &gn), CAIRN_ECORRUPT);
    assert_null(got);
    assert_non_null(strstr(cairn_err_msg(), "Corruption"));
    /* the verified iterator reports it; the unverified one hands the damaged bytes over for the caller to judge */
    struct cairn_kv_iter *it = NULL;
    const uint8_t *k, *v;
    size_t kl, vl;
    bool done = false;
    assert_int_equal(cairn_kv_iter_new(kv, "", 0, &it), CAIRN_OK);
    assert_int_equal(cairn_kv_iter_next(it, &k, &kl, &v, &vl, &done), CAIRN_ECORRUPT);
    cairn_kv_iter_destroy(&it);
    assert_int_equal(cairn_kv_iter_new_unverified(kv, "", 0, &it), CAIRN_OK);
    assert_int_equal(cairn_kv_iter_next(it, &k, &kl, &v, &vl, &done), CAIRN_OK);
    assert_false(done);
    assert_int_equal(vl, n);
    assert_memory_not_equal(v, val, n);
    cairn_kv_iter_destroy(&it);
    cairn_kv_close(&kv);
    free(val);
    tu_rmrf(dir);
    free(dir);
}

/* ls -i of DIR/LOG and the number of LOG.old* files, to see that a read-only open leaves the writer's files alone */
static void log_state(const char *db, ino_t *ino, int *olds)
{
    struct stat st;
    *ino = stat(tu_path("%s/LOG", db), &st) == 0 ? st.st_ino : 0;
    *olds = 0;
    DIR *dh = opendir(db);
    assert_non_null(dh);
    struct dirent *e;
    while ((e = readdir(dh)) != NULL)
        if (!strncmp(e->d_name, "LOG.old", 7))
            (*olds)++;
    closedir(dh);
}

static void expect_keys(struct cairn_kv *kv, const char *want)
{
    char got[256] = "";
    struct cairn_kv_iter *it = NULL;
    const uint8_t *k, *v;
    size_t kl, vl;
    bool done = false;
    assert_int_equal(cairn_kv_iter_new(kv, "", 0, &it), CAIRN_OK);
    for (;;) {
        assert_int_equal(cairn_kv_iter_next(it, &k, &kl, &v, &vl, &done), CAIRN_OK);
        if (done)
            break;
        assert_true(strlen(got) + kl + 2 < sizeof(got));
        strncat(got, (const char *)k, kl);
        strncat(got, " ", 2);
    }
    cairn_kv_iter_destroy(&it);
    assert_string_equal(got, want);
}

static void test_readonly_beside_writer(void **state)
{
    (void)state;
    char *dir = tu_tempdir("kv");
    char *db = strdup(tu_path("%s/db", dir));
    struct cairn_kv *rw = NULL, *ro = (struct cairn_kv *)1;

    assert_int_equal(cairn_kv_open_readonly(&ro, db), CAIRN_ENOTFOUND);
    assert_null(ro);
    assert_non_null(strstr(cairn_err_msg(), db));

    /* some data flushed to SST and blob files, some only in the WAL (a put and a delete) */
    size_t big_n = 100 * 1024;
    uint8_t *big = malloc(big_n);
    uint64_t seed = 5;
    tu_fill_random(&seed, big, big_n);
    assert_int_equal(cairn_kv_open(&rw, db, true), CAIRN_OK);
    put_str(rw, "a", "1");
    assert_int_equal(cairn_kv_put(rw, "b", 1, big, big_n), CAIRN_OK);
    cairn_kv_close(&rw);
    assert_int_equal(cairn_kv_open(&rw, db, false), CAIRN_OK);
    put_str(rw, "c", "3");
    assert_int_equal(cairn_kv_delete(rw, "a", 1), CAIRN_OK);
    ino_t ino0;
    int olds0;
    log_state(db, &ino0, &olds0);

    /* the writer holds the LOCK: a read-only open still works and sees both */
    assert_int_equal(cairn_kv_open_readonly(&ro, db), CAIRN_OK);
    assert_non_null(ro);
    expect_val(ro, "b", 1, big, big_n);
    expect_val(ro, "c", 1, "3", 1);
    expect_has(ro, "a", 1, false);
    expect_keys(ro, "b c ");
    /* writes are refused with a clear message; nothing reaches the database */
    assert_int_equal(cairn_kv_put(ro, "x", 1, "y", 1), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_err_msg(), "read-only"));
    assert_int_equal(cairn_kv_delete(ro, "c", 1), CAIRN_EINVAL);
    struct cairn_kv_batch *b = NULL;
    assert_int_equal(cairn_kv_batch_new(&b), CAIRN_OK);
    cairn_kv_batch_put(b, "x", 1, "y", 1);
    assert_int_equal(cairn_kv_batch_commit(ro, b), CAIRN_EINVAL);
    assert_int_equal(cairn_kv_batch_count(b), 0);
    cairn_kv_batch_destroy(&b);
    assert_int_equal(cairn_kv_sync(ro), CAIRN_OK);
    expect_has(ro, "x", 1, false);

    /* later writes are seen by a new read-only open, not by the old one */
    put_str(rw, "d", "4");
    expect_has(ro, "d", 1, false);
    struct cairn_kv *ro2 = NULL;
    assert_int_equal(cairn_kv_open_readonly(&ro2, db), CAIRN_OK);
    expect_keys(ro2, "b c d ");
    cairn_kv_close(&ro2);
    cairn_kv_close(&ro);
    assert_null(ro);

    /* and from another process, while this one writes */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct cairn_kv *c = NULL;
        int ok = cairn_kv_open_readonly(&c, db) == CAIRN_OK;
        bool found = false;
        ok = ok && cairn_kv_has(c, "d", 1, &found) == CAIRN_OK && found;
        cairn_kv_close(&c);
        _exit(ok ? 0 : 1);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    /* the writer was not disturbed: its info LOG was not rotated, it still writes, and reopens with everything */
    ino_t ino1;
    int olds1;
    log_state(db, &ino1, &olds1);
    assert_true(ino1 == ino0);
    assert_int_equal(olds1, olds0);
    put_str(rw, "e", "5");
    cairn_kv_close(&rw);
    assert_int_equal(cairn_kv_open(&rw, db, false), CAIRN_OK);
    expect_keys(rw, "b c d e ");
    cairn_kv_close(&rw);
    free(big);
    free(db);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_missing),
        cmocka_unit_test(test_put_get_has_delete),
        cmocka_unit_test(test_has_is_exact),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_prefix_iteration),
        cmocka_unit_test(test_second_open_is_busy),
        cmocka_unit_test(test_damaged_blob_file),
        cmocka_unit_test(test_readonly_beside_writer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
