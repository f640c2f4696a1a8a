/* test_store.c: the chunk store on a real RocksDB: dedup, round trips, missing and foreign chunks,
 * persistence, locking, damaged values (through the kv and inside the blob files on disk) caught as
 * ECORRUPT naming the chunk and counted by the scrub, repair by put_raw, and 4 threads at once. */
#include "testutil.h"

#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct fx {
    char *dir;
    const char *db;
    struct cairn_domain *d, *other;
    struct cairn_codec *c;
    struct cairn_store *s;
    uint8_t *out;
};

static int setup(void **state)
{
    static const uint8_t master[CAIRN_KEY_BYTES] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    struct fx *f = calloc(1, sizeof(*f));
    if (cairn_crypto_init() != CAIRN_OK)
        return -1;
    f->dir = tu_tempdir("store");
    f->db = strdup(tu_path("%s/db", f->dir));
    if (cairn_domain_new_managed(&f->d, master, "store-app") != CAIRN_OK ||
        cairn_domain_new_managed(&f->other, master, "other-app") != CAIRN_OK ||
        cairn_codec_new(&f->c, CAIRN_CODEC_DEFAULT_LEVEL) != CAIRN_OK ||
        cairn_store_open(&f->s, f->db, true) != CAIRN_OK)
        return -1;
    f->out = malloc(CAIRN_CODEC_MAX_PLAIN);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    cairn_store_close(&f->s);
    cairn_codec_destroy(&f->c);
    cairn_domain_destroy(&f->d);
    cairn_domain_destroy(&f->other);
    tu_rmrf(f->dir);
    free(f->dir);
    free((void *)f->db);
    free(f->out);
    free(f);
    return 0;
}

static void hex_of(char out[2 * CAIRN_CHUNK_ID_BYTES + 1], const uint8_t *id)
{
    cairn_hex_encode(out, id, CAIRN_CHUNK_ID_BYTES);
}

static void expect_chunk(struct fx *f, const uint8_t *id, const uint8_t *want, size_t n)
{
    size_t len = 0;
    int rc = cairn_store_get_chunk(f->s, f->c, f->d, id, f->out, CAIRN_CODEC_MAX_PLAIN, &len);
    if (rc != CAIRN_OK)
        fail_msg("get_chunk: %s: %s", cairn_err_name(rc), cairn_err_msg());
    assert_int_equal(len, n);
    if (n)
        assert_memory_equal(f->out, want, n);
}

static uint8_t *random_bytes(uint64_t seed, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    tu_fill_random(&seed, p, n);
    return p;
}

static void test_put_get_dedup(void **state)
{
    struct fx *f = *state;
    uint8_t id[CAIRN_CHUNK_ID_BYTES], id2[CAIRN_CHUNK_ID_BYTES];
    struct cairn_put_result res;
    size_t n = 64 * 1024;
    uint8_t *p = random_bytes(1, n);
    assert_int_equal(cairn_store_put_chunk(f->s, f->c, f->d, p, n, id, &res), CAIRN_OK);
    assert_true(res.was_new);
    assert_true(res.stored_len >= n); /* random: stored raw plus header, tag, checksum */
    expect_chunk(f, id, p, n);
    /* the same plaintext again: one lookup, nothing written */
    assert_int_equal(cairn_store_put_chunk(f->s, f->c, f->d, p, n, id2, &res), CAIRN_OK);
    assert_false(res.was_new);
    assert_int_equal(res.stored_len, 0);
    assert_memory_equal(id, id2, sizeof(id));
    bool found = false;
    assert_int_equal(cairn_store_has_chunk(f->s, cairn_domain_id(f->d), id, &found), CAIRN_OK);
    assert_true(found);
    /* ids come from the domain key: the same bytes in another domain are another chunk */
    assert_int_equal(cairn_store_put_chunk(f->s, f->c, f->other, p, n, id2, &res), CAIRN_OK);
    assert_true(res.was_new);
    assert_memory_not_equal(id, id2, sizeof(id));

    /* compressible, empty and largest chunks */
    uint8_t *z = calloc(1, CAIRN_CODEC_MAX_PLAIN);
    assert_int_equal(cairn_store_put_chunk(f->s, f->c, f->d, z, 200000, id, &res), CAIRN_OK);
    assert_true(res.was_new && res.stored_len < 2000);
    expect_chunk(f, id, z, 200000);
    assert_int_equal(cairn_store_put_chunk(f->s, f->c, f->d, z, 0, id, &res), CAIRN_OK);
    assert_true(res.was_new);
    expect_chunk(f, id, z, 0);
    uint8_t *big = random_bytes(2, CAIRN_CODEC_MAX_PLAIN);
    assert_int_equal(cairn_store_put_chunk(f->s, f->c, f->d, big, CAIRN_CODEC_MAX_PLAIN, id, &res), CAIRN_OK);
    expect_chunk(f, id, big, CAIRN_CODEC_MAX_PLAIN);
    assert_int_equal(cairn_store_put_chunk(f->s, f->c, f->d, z, CAIRN_CODEC_MAX_PLAIN + 1, id, &res), CAIRN_ETOOBIG);
    /* res may be NULL */
    assert_int_equal(cairn_store_put_chunk(f->s, f->c, f->d, p, 100, id, NULL), CAIRN_OK);
    expect_chunk(f, id, p, 100);

    struct cairn_store_scan scan;
    assert_int_equal(cairn_store_scrub(f->s, &scan, NULL, NULL), CAIRN_OK);
    assert_int_equal(scan.chunks, 6);
    assert_int_equal(scan.corrupt, 0);
    assert_true(scan.bytes > 2 * n + CAIRN_CODEC_MAX_PLAIN);
    free(p);
    free(z);
    free(big);
}

static void test_missing_and_foreign(void **state)
{
    struct fx *f = *state;
    uint8_t id[CAIRN_CHUNK_ID_BYTES];
    char hex[2 * CAIRN_CHUNK_ID_BYTES + 1], dom[2 * CAIRN_DOMAIN_ID_BYTES + 1];
    memset(id, 0xab, sizeof(id));
    hex_of(hex, id);
    size_t len = 99;
    assert_int_equal(cairn_store_get_chunk(f->s, f->c, f->d, id, f->out, CAIRN_CODEC_MAX_PLAIN, &len),
                     CAIRN_ENOTFOUND);
    assert_int_equal(len, 0);
    assert_non_null(strstr(cairn_err_msg(), hex));
    cairn_hex_encode(dom, cairn_domain_id(f->d), CAIRN_DOMAIN_ID_BYTES);
    assert_non_null(strstr(cairn_err_msg(), dom));
    assert_non_null(strstr(cairn_err_msg(), "not found"));
    bool found = true;
    assert_int_equal(cairn_store_has_chunk(f->s, cairn_domain_id(f->d), id, &found), CAIRN_OK);
    assert_false(found);

    /* a chunk of domain d is not readable through another domain */
    uint8_t *p = random_bytes(3, 5000);
    assert_int_equal(cairn_store_put_chunk(f->s, f->c, f->d, p, 5000, id, NULL), CAIRN_OK);
    int rc = cairn_store_get_chunk(f->s, f->c, f->other, id, f->out, CAIRN_CODEC_MAX_PLAIN, &len);
    assert_true(rc == CAIRN_ENOTFOUND || rc == CAIRN_ECORRUPT);
    /* not even when its bytes are planted under the other domain's key */
    uint8_t key[CAIRN_STORE_CHUNK_KEY_BYTES], okey[CAIRN_STORE_CHUNK_KEY_BYTES];
    cairn_store_chunk_key(key, cairn_domain_id(f->d), id);
    cairn_store_chunk_key(okey, cairn_domain_id(f->other), id);
    uint8_t *val;
    size_t vlen;
    assert_int_equal(cairn_kv_get(cairn_store_kv(f->s), key, sizeof(key), &val, &vlen), CAIRN_OK);
    assert_int_equal(cairn_kv_put(cairn_store_kv(f->s), okey, sizeof(okey), val, vlen), CAIRN_OK);
    assert_int_equal(cairn_store_get_chunk(f->s, f->c, f->other, id, f->out, CAIRN_CODEC_MAX_PLAIN, &len),
                     CAIRN_ECORRUPT);
    hex_of(hex, id);
    assert_non_null(strstr(cairn_err_msg(), hex));
    /* and put_raw refuses a value whose header names another domain */
    assert_int_equal(cairn_store_put_raw(f->s, cairn_domain_id(f->other), id, val, vlen), CAIRN_ECORRUPT);
    assert_non_null(strstr(cairn_err_msg(), "domain"));
    /* the planted value is caught by the scrub (header domain != key domain) */
    struct cairn_store_scan scan;
    assert_int_equal(cairn_store_scrub(f->s, &scan, NULL, NULL), CAIRN_OK);
    assert_int_equal(scan.chunks, 2);
    assert_int_equal(scan.corrupt, 1);
    cairn_kv_free(val);
    free(p);
}

static void test_persistence_and_delete(void **state)
{
    struct fx *f = *state;
    enum { N = 50 };
    uint8_t ids[N][CAIRN_CHUNK_ID_BYTES];
    uint8_t *data[N];
    size_t lens[N];
    for (int i = 0; i < N; i++) {
        lens[i] = 100 + (size_t)i * 3000; /* inline values and blob values */
        data[i] = random_bytes(100 + (uint64_t)i, lens[i]);
        assert_int_equal(cairn_store_put_chunk(f->s, f->c, f->d, data[i], lens[i], ids[i], NULL), CAIRN_OK);
    }
    assert_int_equal(cairn_store_sync(f->s), CAIRN_OK);
    assert_int_equal(cairn_store_delete_chunk(f->s, cairn_domain_id(f->d), ids[7]), CAIRN_OK);
    cairn_store_close(&f->s);
    assert_null(f->s);
    cairn_store_close(&f->s);
    assert_int_equal(cairn_store_open(&f->s, f->db, false), CAIRN_OK);
    for (int i = 0; i < N; i++) {
        if (i == 7) {
            size_t len;
            assert_int_equal(cairn_store_get_chunk(f->s, f->c, f->d, ids[i], f->out, CAIRN_CODEC_MAX_PLAIN, &len),
                             CAIRN_ENOTFOUND);
            continue;
        }
        expect_chunk(f, ids[i], data[i], lens[i]);
        struct cairn_put_result res;
        uint8_t id[CAIRN_CHUNK_ID_BYTES];
        assert_int_equal(cairn_store_put_chunk(f->s, f->c, f->d, data[i], lens[i], id, &res), CAIRN_OK);
        assert_false(res.was_new);
    }
    struct cairn_store_scan scan;
    assert_int_equal(cairn_store_scrub(f->s, &scan, NULL, NULL), CAIRN_OK);
    assert_int_equal(scan.chunks, N - 1);
    assert_int_equal(scan.corrupt, 0);
    /* other users' keys in the same kv are not chunks */
    assert_int_equal(cairn_kv_put(cairn_store_kv(f->s), "s-snapshot", 10, "x", 1), CAIRN_OK);
    assert_int_equal(cairn_kv_put(cairn_store_kv(f->s), "m", 1, "y", 1), CAIRN_OK);
    assert_int_equal(cairn_store_scrub(f->s, &scan, NULL, NULL), CAIRN_OK);
    assert_int_equal(scan.chunks, N - 1);
    for (int i = 0; i < N; i++)
        free(data[i]);
}

static void test_second_open_busy(void **state)
{
    struct fx *f = *state;
    struct cairn_store *s2 = (struct cairn_store *)1;
    assert_int_equal(cairn_store_open(&s2, f->db, true), CAIRN_EBUSY);
    assert_null(s2);
    assert_non_null(strstr(cairn_err_msg(), "in use by another process"));
    assert_non_null(strstr(cairn_err_msg(), f->db));
    struct cairn_store *s3 = NULL;
    assert_int_equal(cairn_store_open(&s3, tu_path("%s/absent", f->dir), false), CAIRN_ENOTFOUND);
    assert_null(s3);
}

struct corrupt_seen {
    int n;
    uint8_t domain[CAIRN_DOMAIN_ID_BYTES];
    uint8_t id[CAIRN_CHUNK_ID_BYTES];
};

static void on_corrupt(void *arg, const uint8_t *domain_id, const uint8_t *id)
{
    struct corrupt_seen *s = arg;
    s->n++;
    memcpy(s->domain, domain_id, CAIRN_DOMAIN_ID_BYTES);
    memcpy(s->id, id, CAIRN_CHUNK_ID_BYTES);
}

/* (1) a byte of a stored value flipped (written back through the kv): caught, named, counted, repaired. */
static void test_corrupt_value(void **state)
{
    struct fx *f = *state;
    uint8_t id[CAIRN_CHUNK_ID_BYTES], other_id[CAIRN_CHUNK_ID_BYTES];
    char hex[2 * CAIRN_CHUNK_ID_BYTES + 1];
    uint8_t *p = random_bytes(5, 30000), *q = random_bytes(6, 300);
    assert_int_equal(cairn_store_put_chunk(f->s, f->c, f->d, p, 30000, id, NULL), CAIRN_OK);
    assert_int_equal(cairn_store_put_chunk(f->s, f->c, f->d, q, 300, other_id, NULL), CAIRN_OK);
    hex_of(hex, id);
    uint8_t key[CAIRN_STORE_CHUNK_KEY_BYTES];
    cairn_store_chunk_key(key, cairn_domain_id(f->d), id);
    struct cairn_kv *kv = cairn_store_kv(f->s);
    uint8_t *good, *bad;
    size_t vlen;
    assert_int_equal(cairn_kv_get(kv, key, sizeof(key), &good, &vlen), CAIRN_OK);
    /* header, body and trailer: every damage is ECORRUPT naming the chunk, never data */
    size_t spots[] = {1, 5, 10, 24, vlen / 2, vlen - 17, vlen - 1};
    for (size_t k = 0; k < CAIRN_ARRAY_LEN(spots); k++) {
        bad = malloc(vlen);
        memcpy(bad, good, vlen);
        bad[spots[k]] ^= 0x01;
        assert_int_equal(cairn_kv_put(kv, key, sizeof(key), bad, vlen), CAIRN_OK);
        size_t len = 7;
        memset(f->out, 0, 30000);
        assert_int_equal(cairn_store_get_chunk(f->s, f->c, f->d, id, f->out, CAIRN_CODEC_MAX_PLAIN, &len),
                         CAIRN_ECORRUPT);
        assert_int_equal(len, 0);
        if (!strstr(cairn_err_msg(), hex))
            fail_msg("message '%s' lacks the chunk id", cairn_err_msg());

        struct corrupt_seen seen = {0};
        struct cairn_store_scan scan;
        assert_int_equal(cairn_store_scrub(f->s, &scan, on_corrupt, &seen), CAIRN_OK);
        assert_int_equal(scan.chunks, 2);
        assert_int_equal(scan.corrupt, 1);
        assert_int_equal(seen.n, 1);
        assert_memory_equal(seen.id, id, sizeof(id));
        assert_memory_equal(seen.domain, cairn_domain_id(f->d), CAIRN_DOMAIN_ID_BYTES);
        /* a replica must not accept the damaged copy */
        assert_int_equal(cairn_store_put_raw(f->s, cairn_domain_id(f->d), id, bad, vlen), CAIRN_ECORRUPT);
        assert_non_null(strstr(cairn_err_msg(), hex));
        free(bad);
    }
    /* truncated value */
    assert_int_equal(cairn_kv_put(kv, key, sizeof(key), good, 20), CAIRN_OK);
    size_t len;
    assert_int_equal(cairn_store_get_chunk(f->s, f->c, f->d, id, f->out, CAIRN_CODEC_MAX_PLAIN, &len), CAIRN_ECORRUPT);
    /* repair from a good copy (what a replica sends) */
    assert_int_equal(cairn_store_put_raw(f->s, cairn_domain_id(f->d), id, good, vlen), CAIRN_OK);
    expect_chunk(f, id, p, 30000);
    expect_chunk(f, other_id, q, 300);
    struct cairn_store_scan scan;
    assert_int_equal(cairn_store_scrub(f->s, &scan, NULL, NULL), CAIRN_OK);
    assert_int_equal(scan.corrupt, 0);
    /* a value stored under the wrong chunk id fails the AEAD (the id is in the associated data) */
    uint8_t wrong_key[CAIRN_STORE_CHUNK_KEY_BYTES];
    cairn_store_chunk_key(wrong_key, cairn_domain_id(f->d), other_id);
    assert_int_equal(cairn_kv_put(kv, wrong_key, sizeof(wrong_key), good, vlen), CAIRN_OK);
    assert_int_equal(cairn_store_get_chunk(f->s, f->c, f->d, other_id, f->out, CAIRN_CODEC_MAX_PLAIN, &len),
                     CAIRN_ECORRUPT);
    cairn_kv_free(good);
    free(p);
    free(q);
}

/* (2) a byte flipped inside the RocksDB blob file on disk: reading that chunk fails, others still read. */
static void test_corrupt_on_disk(void **state)
{
    struct fx *f = *state;
    uint8_t big_id[CAIRN_CHUNK_ID_BYTES], ids[10][CAIRN_CHUNK_ID_BYTES];
    uint8_t *big = random_bytes(7, 128 * 1024);
    uint8_t *small[10];
    assert_int_equal(cairn_store_put_chunk(f->s, f->c, f->d, big, 128 * 1024, big_id, NULL), CAIRN_OK);
    for (int i = 0; i < 10; i++) {
        small[i] = random_bytes(20 + (uint64_t)i, 1000); /* stored inline in the SST (< 4 KiB) */
        assert_int_equal(cairn_store_put_chunk(f->s, f->c, f->d, small[i], 1000, ids[i], NULL), CAIRN_OK);
    }
    cairn_store_close(&f->s);

    DIR *dh = opendir(f->db);
    assert_non_null(dh);
    int blobs = 0;
    struct dirent *de;
    while ((de = readdir(dh))) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 5, ".blob") != 0)
            continue;
        int fd = open(tu_path("%s/%s", f->db, de->d_name), O_RDWR);
        assert_true(fd >= 0);
        struct stat st;
        assert_int_equal(fstat(fd, &st), 0);
        assert_true(st.st_size > 128 * 1024); /* the big chunk's value fills the file */
        off_t mid = st.st_size / 2;
        uint8_t c;
        assert_int_equal(pread(fd, &c, 1, mid), 1);
        c ^= 0x10;
        assert_int_equal(pwrite(fd, &c, 1, mid), 1);
        close(fd);
        blobs++;
    }
    closedir(dh);
    assert_int_equal(blobs, 1);

    assert_int_equal(cairn_store_open(&f->s, f->db, false), CAIRN_OK);
    char hex[2 * CAIRN_CHUNK_ID_BYTES + 1];
    hex_of(hex, big_id);
    size_t len = 5;
    memset(f->out, 0, 128 * 1024);
    assert_int_equal(cairn_store_get_chunk(f->s, f->c, f->d, big_id, f->out, CAIRN_CODEC_MAX_PLAIN, &len),
                     CAIRN_ECORRUPT);
    assert_int_equal(len, 0);
    if (!strstr(cairn_err_msg(), hex))
        fail_msg("message '%s' lacks the chunk id", cairn_err_msg());
    for (int i = 0; i < 10; i++)
        expect_chunk(f, ids[i], small[i], 1000);
    /* the scrub goes past the damaged record and counts it */
    struct corrupt_seen seen = {0};
    struct cairn_store_scan scan;
    assert_int_equal(cairn_store_scrub(f->s, &scan, on_corrupt, &seen), CAIRN_OK);
    assert_int_equal(scan.chunks, 11);
    assert_int_equal(scan.corrupt, 1);
    assert_memory_equal(seen.id, big_id, CAIRN_CHUNK_ID_BYTES);
    /* has() had to read the value: it reports the damage */
    bool found = false;
    assert_int_equal(cairn_store_has_chunk(f->s, cairn_domain_id(f->d), big_id, &found), CAIRN_ECORRUPT);
    assert_non_null(strstr(cairn_err_msg(), hex));
    /* writing the same plaintext again heals it instead of deduplicating against the damaged copy */
    struct cairn_put_result res;
    uint8_t id2[CAIRN_CHUNK_ID_BYTES];
    assert_int_equal(cairn_store_put_chunk(f->s, f->c, f->d, big, 128 * 1024, id2, &res), CAIRN_OK);
    assert_true(res.was_new);
    expect_chunk(f, big_id, big, 128 * 1024);
    assert_int_equal(cairn_store_has_chunk(f->s, cairn_domain_id(f->d), big_id, &found), CAIRN_OK);
    assert_true(found);
    assert_int_equal(cairn_store_scrub(f->s, &scan, NULL, NULL), CAIRN_OK);
    assert_int_equal(scan.corrupt, 0);
    free(big);
    for (int i = 0; i < 10; i++)
        free(small[i]);
}

/* 4 threads putting and getting at once, each with its own codec; half of the chunks shared by all. */
struct worker {
    struct fx *f;
    int idx;
    int failures;
    int news;
};

#define PER_THREAD 150

static void chunk_for(int thread, int i, uint8_t *buf, size_t *n)
{
    /* even i: the same content in every thread (dedup races), odd i: thread-private */
    uint64_t seed = (i % 2 == 0) ? (uint64_t)i + 1000 : (uint64_t)(thread + 1) * 100000 + (uint64_t)i;
    *n = 500 + (size_t)(i * 997) % 20000;
    tu_fill_random(&seed, buf, *n);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct cairn_codec *c = NULL;
    uint8_t *buf = malloc(CAIRN_CODEC_MAX_PLAIN), *out = malloc(CAIRN_CODEC_MAX_PLAIN);
    uint8_t ids[PER_THREAD][CAIRN_CHUNK_ID_BYTES];
    if (cairn_codec_new(&c, 1) != CAIRN_OK) {
        w->failures++;
        goto out;
    }
    for (int i = 0; i < PER_THREAD; i++) {
        size_t n;
        chunk_for(w->idx, i, buf, &n);
        struct cairn_put_result res;
        if (cairn_store_put_chunk(w->f->s, c, w->f->d, buf, n, ids[i], &res) != CAIRN_OK)
            w->failures++;
        w->news += res.was_new;
        /* read back something written earlier, maybe by another thread */
        int j = i / 2;
        size_t len = 0;
        chunk_for(w->idx, j, buf, &n);
        if (cairn_store_get_chunk(w->f->s, c, w->f->d, ids[j], out, CAIRN_CODEC_MAX_PLAIN, &len) != CAIRN_OK ||
            len != n || memcmp(out, buf, n) != 0)
            w->failures++;
    }
out:
    cairn_codec_destroy(&c);
    free(buf);
    free(out);
    return NULL;
}

static void test_concurrency(void **state)
{
    struct fx *f = *state;
    pthread_t t[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){.f = f, .idx = i};
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    int news = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
        news += w[i].news;
    }
    /* 75 shared + 4 * 75 private chunks; a shared one may be reported new by more than one racing thread */
    int unique = PER_THREAD / 2 + 4 * (PER_THREAD / 2);
    assert_true(news >= unique);
    struct cairn_store_scan scan;
    assert_int_equal(cairn_store_scrub(f->s, &scan, NULL, NULL), CAIRN_OK);
    assert_int_equal(scan.chunks, unique);
    assert_int_equal(scan.corrupt, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get_dedup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_and_foreign, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persistence_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_open_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_on_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrency, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
