/*
 * test_crypto.c: CSEK rules and messages, the DEK envelope (round trip, wrong
 * key, wrong image, tampering), managed domains, known-answer vectors that pin
 * every derivation of crypto.h, key files, and that no error message ever
 * carries key bytes.
 *
 * The known answers were computed once with this implementation and checked
 * independently with Python's hashlib.blake2b (crypto_kdf_derive_from_key is
 * BLAKE2b keyed with K, salt = le64(subkey id) || 0^8, personal = "cairn-ch" ||
 * 0^8). Changing them orphans every stored chunk and wrapped key.
 */
#include "testutil.h"

#include "cairn/bytes.h"
#include "cairn/crypto.h"
#include "cairn/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* master = 00 01 .. 1f, app "kat-app" */
#define KAT_MANAGED_DOMAIN_ID "6356b1e218099cf089322f7819892e14"
#define KAT_MANAGED_CHUNK_ABC \
    "8356c741b483d7f44b674e7c0dc334242dc28d25242a543727b02e64c3e6a9ba"
/* domain key = 11 * 32 */
#define KAT_DOMAIN_ID "21e875b99781580fae8d9d96afb38dbd"
#define KAT_CHUNK_EMPTY \
    "9b6b6b6740603b58f47e7beaa55facf9595b16baf6d7038eda7bd26199ac6c08"
/* BLAKE2b-128("abc") */
#define KAT_CHECKSUM_ABC "cf4ab791c62b8d2b2109c90275287816"
/* dek = a5 * 32 wrapped under KAT_CSEK for image "im-kat" (nonce was random when made) */
#define KAT_CSEK "cairn test customer key 0123456789"
#define KAT_WRAPPED "c6d8fa2202a212f116e69d33d70492c95aa79f9b18d520d4b40dc16d5bb00034bf69bca4" \
    "7c27508f31286c72651eb731dfa398a38dd2a6e957323e41ce0bb3da792b9a7490e5422c"

/* Printable on purpose: a leak into a message would be easy to spot with strstr. */
#define SECRET_CSEK "SECRETKEY-SECRETKEY-SECRETKEY-42"

static void hex(char *out, const uint8_t *in, size_t n)
{
    cairn_hex_encode(out, in, n);
}

static bool printing(void)
{
    return getenv("CAIRN_PRINT_GOLDEN") != NULL;
}

static void check_hex(const char *name, const uint8_t *got, size_t n, const char *want)
{
    char h[2 * 64 + 1];
    hex(h, got, n);
    if (printing()) /* print every value, then fail below if any differs */
        printf("%s = \"%s\"%s\n", name, h, strcmp(h, want) ? "  (differs)" : "");
    else
        assert_string_equal(h, want);
}

/* No secret in the last message: neither raw bytes nor hex. */
static void assert_msg_clean(const uint8_t *key, size_t len)
{
    const char *m = cairn_err_msg();
    assert_true(strlen(m) > 0);
    size_t probe = len < 8 ? len : 8;
    for (size_t i = 0; i + probe <= len; i++)
        assert_null(memmem(m, strlen(m), key + i, probe));
    char h[2 * 8 + 1];
    for (size_t i = 0; i + 4 <= len; i++) {
        hex(h, key + i, 4);
        assert_null(strstr(m, h));
    }
}

static int setup(void **state)
{
    (void)state;
    return cairn_crypto_init() == CAIRN_OK ? 0 : -1;
}

static void test_init_idempotent(void **state)
{
    (void)state;
    assert_int_equal(cairn_crypto_init(), CAIRN_OK);
    assert_int_equal(cairn_crypto_init(), CAIRN_OK);
}

static void test_csek_validate(void **state)
{
    (void)state;
    uint8_t key[600];
    memset(key, 'k', sizeof(key));
    assert_int_equal(cairn_csek_validate(key, 0), CAIRN_EKEY);
    assert_string_equal(cairn_err_msg(), "encryption key is empty");
    assert_int_equal(cairn_csek_validate(NULL, 0), CAIRN_EKEY);
    assert_int_equal(cairn_csek_validate(key, 15), CAIRN_EKEY);
    assert_string_equal(cairn_err_msg(), "encryption key is too short: 15 bytes (at least 16)");
    assert_int_equal(cairn_csek_validate(key, 16), CAIRN_OK);
    assert_int_equal(cairn_csek_validate(key, 512), CAIRN_OK);
    assert_int_equal(cairn_csek_validate(key, 513), CAIRN_EKEY);
    assert_string_equal(cairn_err_msg(), "encryption key is too long: 513 bytes (at most 512)");
}

static void test_wrap_round_trip_and_failures(void **state)
{
    (void)state;
    const uint8_t *csek = (const uint8_t *)SECRET_CSEK;
    size_t csek_len = strlen(SECRET_CSEK);
    struct cairn_secret *dek = NULL, *back = NULL;
    assert_int_equal(cairn_dek_generate(&dek), CAIRN_OK);
    assert_int_equal(dek->len, CAIRN_KEY_BYTES);

    uint8_t w[CAIRN_WRAPPED_DEK_BYTES], w2[CAIRN_WRAPPED_DEK_BYTES];
    assert_int_equal(cairn_dek_wrap(csek, csek_len, "im-1", dek, w), CAIRN_OK);
    assert_int_equal(cairn_dek_unwrap(csek, csek_len, "im-1", w, &back), CAIRN_OK);
    assert_int_equal(back->len, CAIRN_KEY_BYTES);
    assert_memory_equal(back->bytes, dek->bytes, CAIRN_KEY_BYTES);
    cairn_secret_destroy(&back);
    assert_null(back);

    /* wrapping twice uses fresh nonces */
    assert_int_equal(cairn_dek_wrap(csek, csek_len, "im-1", dek, w2), CAIRN_OK);
    assert_memory_not_equal(w, w2, sizeof(w));

    /* wrong key (one byte off, and a shorter prefix) */
    uint8_t wrong[64];
    memcpy(wrong, csek, csek_len);
    wrong[csek_len - 1] ^= 1;
    assert_int_equal(cairn_dek_unwrap(wrong, csek_len, "im-1", w, &back), CAIRN_EKEY);
    assert_string_equal(cairn_err_msg(), "wrong encryption key for image im-1");
    assert_null(back);
    assert_msg_clean(csek, csek_len);
    assert_msg_clean(wrong, csek_len);
    assert_int_equal(cairn_dek_unwrap(csek, csek_len - 1, "im-1", w, &back), CAIRN_EKEY);
    assert_null(back);

    /* wrong image id: the envelope is bound to its image */
    assert_int_equal(cairn_dek_unwrap(csek, csek_len, "im-2", w, &back), CAIRN_EKEY);
    assert_non_null(strstr(cairn_err_msg(), "im-2"));
    assert_null(back);

    /* any tampered byte (nonce, ciphertext, tag) fails */
    for (size_t i = 0; i < sizeof(w); i++) {
        uint8_t t[CAIRN_WRAPPED_DEK_BYTES];
        memcpy(t, w, sizeof(t));
        t[i] ^= 0x80;
        assert_int_equal(cairn_dek_unwrap(csek, csek_len, "im-1", t, &back), CAIRN_EKEY);
        assert_null(back);
    }

    /* invalid csek sizes are refused before any crypto, with the size rule */
    assert_int_equal(cairn_dek_wrap(csek, 15, "im-1", dek, w2), CAIRN_EKEY);
    assert_non_null(strstr(cairn_err_msg(), "too short: 15 bytes"));
    assert_msg_clean(csek, 15);
    assert_int_equal(cairn_dek_unwrap(csek, 0, "im-1", w, &back), CAIRN_EKEY);
    assert_string_equal(cairn_err_msg(), "encryption key is empty");
    uint8_t big[513];
    memset(big, 'S', sizeof(big));
    memcpy(big, csek, csek_len);
    assert_int_equal(cairn_dek_unwrap(big, sizeof(big), "im-1", w, &back), CAIRN_EKEY);
    assert_msg_clean(big, sizeof(big));
    assert_int_equal(cairn_dek_wrap(csek, csek_len, "", dek, w2), CAIRN_EINVAL);

    /* max-size csek works */
    assert_int_equal(cairn_dek_wrap(big, 512, "im-big", dek, w2), CAIRN_OK);
    assert_int_equal(cairn_dek_unwrap(big, 512, "im-big", w2, &back), CAIRN_OK);
    assert_memory_equal(back->bytes, dek->bytes, CAIRN_KEY_BYTES);
    cairn_secret_destroy(&back);

    cairn_secret_destroy(&dek);
    cairn_secret_destroy(&dek); /* NULL-safe */
    cairn_secret_destroy(NULL);
}

static void test_managed_domains(void **state)
{
    (void)state;
    uint8_t master[CAIRN_KEY_BYTES], master2[CAIRN_KEY_BYTES];
    for (int i = 0; i < CAIRN_KEY_BYTES; i++) {
        master[i] = (uint8_t)i;
        master2[i] = (uint8_t)(i + 1);
    }
    struct cairn_domain *a = NULL, *a2 = NULL, *b = NULL, *m2 = NULL;
    assert_int_equal(cairn_domain_new_managed(&a, master, "app-a"), CAIRN_OK);
    assert_int_equal(cairn_domain_new_managed(&a2, master, "app-a"), CAIRN_OK);
    assert_int_equal(cairn_domain_new_managed(&b, master, "app-b"), CAIRN_OK);
    assert_int_equal(cairn_domain_new_managed(&m2, master2, "app-a"), CAIRN_OK);

    assert_memory_equal(cairn_domain_id(a), cairn_domain_id(a2), CAIRN_DOMAIN_ID_BYTES);
    assert_memory_not_equal(cairn_domain_id(a), cairn_domain_id(b), CAIRN_DOMAIN_ID_BYTES);
    assert_memory_not_equal(cairn_domain_id(a), cairn_domain_id(m2), CAIRN_DOMAIN_ID_BYTES);
    assert_memory_equal(cairn__domain_enc_key(a), cairn__domain_enc_key(a2), CAIRN_KEY_BYTES);
    assert_memory_not_equal(cairn__domain_enc_key(a), cairn__domain_enc_key(b), CAIRN_KEY_BYTES);

    const uint8_t data[] = "the same plaintext in two apps";
    uint8_t ia[CAIRN_CHUNK_ID_BYTES], ia2[CAIRN_CHUNK_ID_BYTES], ib[CAIRN_CHUNK_ID_BYTES];
    cairn_chunk_id(a, data, sizeof(data), ia);
    cairn_chunk_id(a2, data, sizeof(data), ia2);
    cairn_chunk_id(b, data, sizeof(data), ib);
    assert_memory_equal(ia, ia2, sizeof(ia));
    assert_memory_not_equal(ia, ib, sizeof(ia));

    /* the enc key, id key and domain id are distinct subkeys */
    assert_memory_not_equal(cairn__domain_enc_key(a), cairn_domain_id(a), CAIRN_DOMAIN_ID_BYTES);

    /* app name rules */
    struct cairn_domain *bad = NULL;
    assert_int_equal(cairn_domain_new_managed(&bad, master, ""), CAIRN_EINVAL);
    assert_null(bad);
    assert_int_equal(cairn_domain_new_managed(&bad, master, NULL), CAIRN_EINVAL);
    char longapp[300];
    memset(longapp, 'x', sizeof(longapp));
    longapp[256] = '\0';
    assert_int_equal(cairn_domain_new_managed(&bad, master, longapp), CAIRN_EINVAL);
    longapp[255] = '\0';
    assert_int_equal(cairn_domain_new_managed(&bad, master, longapp), CAIRN_OK);
    cairn_domain_destroy(&bad);
    assert_null(bad);

    cairn_domain_destroy(&a);
    cairn_domain_destroy(&a2);
    cairn_domain_destroy(&b);
    cairn_domain_destroy(&m2);
    cairn_domain_destroy(&a); /* NULL-safe */
    cairn_domain_destroy(NULL);
}

static void test_known_answers(void **state)
{
    (void)state;
    uint8_t master[CAIRN_KEY_BYTES], key[CAIRN_KEY_BYTES], out[CAIRN_CHUNK_ID_BYTES];
    for (int i = 0; i < CAIRN_KEY_BYTES; i++)
        master[i] = (uint8_t)i;
    memset(key, 0x11, sizeof(key));

    struct cairn_domain *m = NULL, *d = NULL;
    assert_int_equal(cairn_domain_new_managed(&m, master, "kat-app"), CAIRN_OK);
    check_hex("KAT_MANAGED_DOMAIN_ID", cairn_domain_id(m), CAIRN_DOMAIN_ID_BYTES,
              KAT_MANAGED_DOMAIN_ID);
    cairn_chunk_id(m, (const uint8_t *)"abc", 3, out);
    check_hex("KAT_MANAGED_CHUNK_ABC", out, sizeof(out), KAT_MANAGED_CHUNK_ABC);

    assert_int_equal(cairn_domain_new(&d, key), CAIRN_OK);
    check_hex("KAT_DOMAIN_ID", cairn_domain_id(d), CAIRN_DOMAIN_ID_BYTES, KAT_DOMAIN_ID);
    cairn_chunk_id(d, NULL, 0, out);
    check_hex("KAT_CHUNK_EMPTY", out, sizeof(out), KAT_CHUNK_EMPTY);

    uint8_t sum[CAIRN_CHECKSUM_BYTES];
    cairn_checksum((const uint8_t *)"abc", 3, sum);
    check_hex("KAT_CHECKSUM_ABC", sum, sizeof(sum), KAT_CHECKSUM_ABC);

    /* the KEK derivation is pinned through a stored envelope */
    const uint8_t *csek = (const uint8_t *)KAT_CSEK;
    struct cairn_secret *dek = NULL;
    uint8_t w[CAIRN_WRAPPED_DEK_BYTES];
    if (printing()) {
        assert_int_equal(cairn_secret_new(&dek, CAIRN_KEY_BYTES), CAIRN_OK);
        memset(dek->bytes, 0xa5, CAIRN_KEY_BYTES);
        assert_int_equal(cairn_dek_wrap(csek, strlen(KAT_CSEK), "im-kat", dek, w), CAIRN_OK);
        char h[2 * sizeof(w) + 1];
        hex(h, w, sizeof(w));
        printf("KAT_WRAPPED = \"%s\"\n", h);
        cairn_secret_destroy(&dek);
    }
    assert_int_equal(cairn_hex_decode(w, sizeof(w), KAT_WRAPPED), CAIRN_OK);
    assert_int_equal(cairn_dek_unwrap(csek, strlen(KAT_CSEK), "im-kat", w, &dek), CAIRN_OK);
    uint8_t want[CAIRN_KEY_BYTES];
    memset(want, 0xa5, sizeof(want));
    assert_memory_equal(dek->bytes, want, sizeof(want));
    cairn_secret_destroy(&dek);

    cairn_domain_destroy(&m);
    cairn_domain_destroy(&d);
}

static void test_secrets(void **state)
{
    (void)state;
    struct cairn_secret *s = NULL, *r1 = NULL, *r2 = NULL;
    assert_int_equal(cairn_secret_new(&s, 48), CAIRN_OK);
    uint8_t zero[48] = {0};
    assert_memory_equal(s->bytes, zero, 48);
    cairn_secret_destroy(&s);
    assert_int_equal(cairn_secret_new(&s, 0), CAIRN_OK);
    assert_int_equal(s->len, 0);
    cairn_secret_destroy(&s);
    assert_int_equal(cairn_secret_random(&r1, 32), CAIRN_OK);
    assert_int_equal(cairn_secret_random(&r2, 32), CAIRN_OK);
    assert_memory_not_equal(r1->bytes, r2->bytes, 32);
    cairn_secret_destroy(&r1);
    cairn_secret_destroy(&r2);

    uint8_t a[16], b[16];
    cairn_random_bytes(a, sizeof(a));
    cairn_random_bytes(b, sizeof(b));
    assert_memory_not_equal(a, b, sizeof(a));
}

static void test_key_files(void **state)
{
    (void)state;
    char *dir = tu_tempdir("crypto");
    struct cairn_secret *s = NULL;
    const char *secret = SECRET_CSEK; /* 32 bytes */

    const char *ok = tu_path("%s/ok.key", dir);
    tu_write_file(ok, secret, strlen(secret));
    assert_int_equal(cairn_secret_read_file(&s, ok, 16, 512), CAIRN_OK);
    assert_int_equal(s->len, strlen(secret));
    assert_memory_equal(s->bytes, secret, s->len);
    cairn_secret_destroy(&s);

    /* raw bytes, taken whole: a trailing newline and NUL bytes are part of the key */
    const char *raw = tu_path("%s/raw.key", dir);
    const uint8_t rawkey[20] = {0, 1, 2, 0, 0xff, 'a', '\n', 0, 0, 0, 9, 8, 7, 6, 5, 4, 3, 2, 1, '\n'};
    tu_write_file(raw, rawkey, sizeof(rawkey));
    assert_int_equal(cairn_secret_read_file(&s, raw, 16, 512), CAIRN_OK);
    assert_int_equal(s->len, sizeof(rawkey));
    assert_memory_equal(s->bytes, rawkey, sizeof(rawkey));
    cairn_secret_destroy(&s);

    /* exact-size master key */
    assert_int_equal(cairn_secret_read_file(&s, ok, 32, 32), CAIRN_OK);
    cairn_secret_destroy(&s);

    /* too long / too short / empty: EKEY, names the file and the rule, never the content */
    assert_int_equal(cairn_secret_read_file(&s, ok, 16, 31), CAIRN_EKEY);
    assert_null(s);
    assert_non_null(strstr(cairn_err_msg(), "ok.key"));
    assert_non_null(strstr(cairn_err_msg(), "too long"));
    assert_msg_clean((const uint8_t *)secret, strlen(secret));
    assert_int_equal(cairn_secret_read_file(&s, ok, 33, 512), CAIRN_EKEY);
    assert_non_null(strstr(cairn_err_msg(), "too short: 32 bytes (at least 33)"));
    assert_msg_clean((const uint8_t *)secret, strlen(secret));
    const char *empty = tu_path("%s/empty.key", dir);
    tu_write_file(empty, "", 0);
    assert_int_equal(cairn_secret_read_file(&s, empty, 16, 512), CAIRN_EKEY);
    assert_non_null(strstr(cairn_err_msg(), "empty"));

    /* missing file, directory */
    assert_int_equal(cairn_secret_read_file(&s, tu_path("%s/missing.key", dir), 16, 512),
                     CAIRN_ENOTFOUND);
    assert_non_null(strstr(cairn_err_msg(), "missing.key"));
    assert_int_equal(cairn_secret_read_file(&s, dir, 16, 512), CAIRN_EIO);
    assert_null(s);

    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_idempotent),
        cmocka_unit_test(test_csek_validate),
        cmocka_unit_test(test_wrap_round_trip_and_failures),
        cmocka_unit_test(test_managed_domains),
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_secrets),
        cmocka_unit_test(test_key_files),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
