/*
 * test_csek_store.c: the customer-supplied-key flow over the real storage core.
 *
 * A tree is captured into a RocksDB store in a CSEK domain (a random DEK wrapped under the key), the
 * store is closed, and then every byte the store left on disk is searched for the key and the DEK,
 * raw and in hex: neither may appear. The tree then restores with the right key, and a wrong, short,
 * long or empty key is refused before anything is written.
 */
#include "testutil.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/crypto.h"
#include "cairn/err.h"
#include "cairn/store.h"
#include "cairn/tree.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define IMAGE_ID "im-0123456789abcdef"

static bool contains(const uint8_t *hay, size_t n, const void *needle, size_t m)
{
    return n >= m && memmem(hay, n, needle, m) != NULL;
}

/* Search every regular file below dir for needle (raw, lower hex, upper hex). Returns the number of hits. */
static int search_tree(const char *dir, const uint8_t *needle, size_t m)
{
    char hex[2 * 512 + 1], uhex[2 * 512 + 1];
    cairn_hex_encode(hex, needle, m);
    for (size_t i = 0; i <= 2 * m; i++)
        uhex[i] = (char)(hex[i] >= 'a' && hex[i] <= 'f' ? hex[i] - 32 : hex[i]);
    int hits = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        struct stat st;
        assert_int_equal(lstat(path, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            hits += search_tree(path, needle, m);
        } else if (S_ISREG(st.st_mode)) {
            size_t n;
            uint8_t *data = tu_read_file(path, &n);
            assert_non_null(data);
            if (contains(data, n, needle, m) || contains(data, n, hex, 2 * m) || contains(data, n, uhex, 2 * m)) {
                printf("key material found in %s\n", path);
                hits++;
            }
            free(data);
        }
    }
    closedir(d);
    return hits;
}

static void make_tree(const char *src)
{
    uint64_t seed = 99;
    static uint8_t buf[300000];
    assert_int_equal(tu_sh("mkdir -p '%s/project/sub'", src), 0);
    const char *text = "private data\n";
    tu_write_file(tu_path("%s/project/state.txt", src), text, strlen(text));
    tu_fill_random(&seed, buf, sizeof(buf));
    tu_write_file(tu_path("%s/project/sub/blob.bin", src), buf, sizeof(buf));
    memset(buf, 'a', sizeof(buf));
    tu_write_file(tu_path("%s/project/sub/text.txt", src), buf, sizeof(buf));
}

static void test_csek_round_trip_and_no_key_on_disk(void **state)
{
    (void)state;
    assert_int_equal(cairn_crypto_init(), CAIRN_OK);
    char *dir = tu_tempdir("csek");
    const char *src = tu_path("%s/src", dir);
    char storedir[4096], dest[4096];
    snprintf(storedir, sizeof(storedir), "%s/store", dir);
    snprintf(dest, sizeof(dest), "%s/dest", dir);
    make_tree(src);

    uint8_t csek[32];
    cairn_random_bytes(csek, sizeof(csek));
    struct cairn_secret *dek = NULL, *dek2 = NULL;
    struct cairn_domain *dom = NULL, *dom2 = NULL;
    uint8_t wrapped[CAIRN_WRAPPED_DEK_BYTES];
    assert_int_equal(cairn_dek_generate(&dek), CAIRN_OK);
    assert_int_equal(cairn_dek_wrap(csek, sizeof(csek), IMAGE_ID, dek, wrapped), CAIRN_OK);
    assert_int_equal(cairn_domain_new(&dom, dek->bytes), CAIRN_OK);

    struct cairn_store *st = NULL;
    assert_int_equal(cairn_store_open(&st, storedir, true), CAIRN_OK);
    struct cairn_tree_ref ref;
    struct cairn_tree_stats stats;
    memset(&ref, 0, sizeof(ref));
    memset(&stats, 0, sizeof(stats));
    assert_int_equal(cairn_tree_capture(st, dom, src, NULL, &ref, &stats), CAIRN_OK);
    /* the image record keeps only the wrapped DEK */
    assert_int_equal(cairn_kv_put(cairn_store_kv(st), "i" IMAGE_ID, strlen("i" IMAGE_ID), wrapped, sizeof(wrapped)),
                     CAIRN_OK);
    assert_int_equal(cairn_store_sync(st), CAIRN_OK);
    cairn_store_close(&st);

    /* positive control: the search does find what the store holds (the wrapped DEK) */
    assert_true(search_tree(storedir, wrapped, sizeof(wrapped)) >= 1);
    /* nothing the store wrote holds the key or the DEK, raw or in hex */
    assert_int_equal(search_tree(storedir, csek, sizeof(csek)), 0);
    assert_int_equal(search_tree(storedir, dek->bytes, dek->len), 0);
    /* and the plaintext is not there either */
    assert_int_equal(search_tree(storedir, (const uint8_t *)"private data", 12), 0);

    /* wrong, short, long and empty keys are refused before any work, each with its own message */
    uint8_t wrong[32];
    memcpy(wrong, csek, sizeof(wrong));
    wrong[5] ^= 1;
    assert_int_equal(cairn_dek_unwrap(wrong, sizeof(wrong), IMAGE_ID, wrapped, &dek2), CAIRN_EKEY);
    assert_non_null(strstr(cairn_err_msg(), "wrong encryption key"));
    assert_null(dek2);
    uint8_t big[513] = {0};
    assert_int_equal(cairn_dek_unwrap(csek, 15, IMAGE_ID, wrapped, &dek2), CAIRN_EKEY);
    assert_non_null(strstr(cairn_err_msg(), "too short"));
    assert_int_equal(cairn_dek_unwrap(big, 513, IMAGE_ID, wrapped, &dek2), CAIRN_EKEY);
    assert_non_null(strstr(cairn_err_msg(), "too long"));
    assert_int_equal(cairn_dek_unwrap(csek, 0, IMAGE_ID, wrapped, &dek2), CAIRN_EKEY);
    assert_non_null(strstr(cairn_err_msg(), "empty"));
    struct stat sb;
    assert_int_not_equal(stat(dest, &sb), 0); /* nothing was materialised */

    /* the right key restores the exact tree */
    assert_int_equal(cairn_store_open(&st, storedir, false), CAIRN_OK);
    uint8_t *rec = NULL;
    size_t reclen = 0;
    assert_int_equal(cairn_kv_get(cairn_store_kv(st), "i" IMAGE_ID, strlen("i" IMAGE_ID), &rec, &reclen), CAIRN_OK);
    assert_int_equal(reclen, CAIRN_WRAPPED_DEK_BYTES);
    assert_int_equal(cairn_dek_unwrap(csek, sizeof(csek), IMAGE_ID, rec, &dek2), CAIRN_OK);
    cairn_kv_free(rec);
    assert_memory_equal(dek2->bytes, dek->bytes, 32);
    assert_int_equal(cairn_domain_new(&dom2, dek2->bytes), CAIRN_OK);
    assert_int_equal(cairn_tree_materialize(st, dom2, &ref, dest, NULL, &stats), CAIRN_OK);
    assert_int_equal(tu_sh("diff -r '%s' '%s'", src, dest), 0);

    /* a managed (other) domain cannot read the CSEK chunks */
    struct cairn_domain *managed = NULL;
    uint8_t master[32] = {7};
    assert_int_equal(cairn_domain_new_managed(&managed, master, "default"), CAIRN_OK);
    assert_int_not_equal(cairn_tree_materialize(st, managed, &ref, tu_path("%s/dest2", dir), NULL, &stats), CAIRN_OK);

    cairn_domain_destroy(&managed);
    cairn_store_close(&st);
    cairn_tree_ref_release(&ref);
    cairn_domain_destroy(&dom);
    cairn_domain_destroy(&dom2);
    cairn_secret_destroy(&dek);
    cairn_secret_destroy(&dek2);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csek_round_trip_and_no_key_on_disk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
