/*
 * test_codec.c: the stored chunk format. Round trips of every kind of chunk,
 * compression only when it shrinks, deterministic encoding, and every kind of
 * damage (flipped bytes in header, body and trailer, truncation, wrong domain,
 * unknown version) is caught as the right error naming the chunk, never a crash.
 * Prints encode/decode throughput at zstd levels 3 and 1.
 */
#include "testutil.h"

#include "cairn/bytes.h"
#include "cairn/codec.h"
#include "cairn/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct fixture {
    struct cairn_domain *d, *other;
    struct cairn_codec *c;
    uint8_t *plain, *stored, *out;
};

static int setup(void **state)
{
    static struct fixture f;
    memset(&f, 0, sizeof(f));
    if (cairn_crypto_init() != CAIRN_OK)
        return -1;
    uint8_t master[CAIRN_KEY_BYTES];
    memset(master, 0x42, sizeof(master));
    if (cairn_domain_new_managed(&f.d, master, "codec-app") != CAIRN_OK ||
        cairn_domain_new_managed(&f.other, master, "other-app") != CAIRN_OK ||
        cairn_codec_new(&f.c, CAIRN_CODEC_DEFAULT_LEVEL) != CAIRN_OK)
        return -1;
    f.plain = malloc(CAIRN_CODEC_MAX_PLAIN + 1);
    f.stored = malloc(cairn_codec_bound(CAIRN_CODEC_MAX_PLAIN + 1));
    f.out = malloc(CAIRN_CODEC_MAX_PLAIN);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    cairn_codec_destroy(&f->c);
    cairn_domain_destroy(&f->d);
    cairn_domain_destroy(&f->other);
    free(f->plain);
    free(f->stored);
    free(f->out);
    return 0;
}

static void fill_text(uint64_t *st, uint8_t *buf, size_t n)
{
    static const char *words[] = {"snapshot ", "restore ", "chunk ", "the ", "a ", "of ",
                                  "sandbox ", "image ", "\n", "error: ", "ok ", "worker-7 "};
    size_t off = 0;
    while (off < n) {
        const char *w = words[tu_rand(st) % (sizeof(words) / sizeof(words[0]))];
        size_t wl = strlen(w);
        if (wl > n - off)
            wl = n - off;
        memcpy(buf + off, w, wl);
        off += wl;
    }
}

/* Encode plain[0..len) into f->stored; returns the stored length, id in `id`. */
static size_t encode(struct fixture *f, size_t len, uint8_t id[CAIRN_CHUNK_ID_BYTES])
{
    size_t n = 0;
    cairn_chunk_id(f->d, f->plain, len, id);
    int rc = cairn_codec_encode(f->c, f->d, id, f->plain, len, f->stored,
                                cairn_codec_bound(len), &n);
    if (rc != CAIRN_OK)
        fail_msg("encode %zu bytes: %s: %s", len, cairn_err_name(rc), cairn_err_msg());
    assert_true(n <= cairn_codec_bound(len));
    return n;
}

static void round_trip(struct fixture *f, size_t len, int expect_zstd)
{
    uint8_t id[CAIRN_CHUNK_ID_BYTES];
    size_t n = encode(f, len, id);
    struct cairn_chunk_header h;
    assert_int_equal(cairn_codec_parse_header(f->stored, n, &h), CAIRN_OK);
    assert_int_equal(h.version, CAIRN_CODEC_VERSION);
    assert_int_equal(h.plain_len, len);
    assert_memory_equal(h.domain_id, cairn_domain_id(f->d), CAIRN_DOMAIN_ID_BYTES);
    if (expect_zstd >= 0)
        assert_int_equal(!!(h.flags & CAIRN_CODEC_FLAG_ZSTD), expect_zstd);
    /* the flag is set exactly when the stored body is smaller than the plaintext */
    size_t body = n - CAIRN_CODEC_HEADER_BYTES - CAIRN_CODEC_TAG_BYTES - CAIRN_CHECKSUM_BYTES;
    if (h.flags & CAIRN_CODEC_FLAG_ZSTD)
        assert_true(body < len);
    else
        assert_int_equal(body, len);
    assert_int_equal(cairn_codec_verify(f->stored, n), CAIRN_OK);

    size_t got = 12345;
    memset(f->out, 0xee, len);
    int rc = cairn_codec_decode(f->c, f->d, id, f->stored, n, f->out, CAIRN_CODEC_MAX_PLAIN, &got);
    if (rc != CAIRN_OK)
        fail_msg("decode %zu bytes: %s: %s", len, cairn_err_name(rc), cairn_err_msg());
    assert_int_equal(got, len);
    if (len)
        assert_memory_equal(f->out, f->plain, len);
}

static void test_round_trips(void **state)
{
    struct fixture *f = *state;
    uint64_t seed = 11;

    tu_fill_random(&seed, f->plain, 65536);
    round_trip(f, 65536, 0); /* random does not shrink */
    memset(f->plain, 0, 65536);
    round_trip(f, 65536, 1);
    fill_text(&seed, f->plain, 70000);
    round_trip(f, 70000, 1);
    f->plain[0] = 'x';
    round_trip(f, 1, 0);
    round_trip(f, 0, 0);
    tu_fill_random(&seed, f->plain, 40);
    round_trip(f, 40, 0);

    /* the largest chunk, both compressible and not */
    fill_text(&seed, f->plain, CAIRN_CODEC_MAX_PLAIN);
    round_trip(f, CAIRN_CODEC_MAX_PLAIN, 1);
    tu_fill_random(&seed, f->plain, CAIRN_CODEC_MAX_PLAIN);
    round_trip(f, CAIRN_CODEC_MAX_PLAIN, 0);

    /* one over the max: ETOOBIG naming the chunk */
    uint8_t id[CAIRN_CHUNK_ID_BYTES];
    char hex[2 * CAIRN_CHUNK_ID_BYTES + 1];
    size_t n = 99;
    cairn_chunk_id(f->d, f->plain, CAIRN_CODEC_MAX_PLAIN + 1, id);
    cairn_hex_encode(hex, id, sizeof(id));
    assert_int_equal(cairn_codec_encode(f->c, f->d, id, f->plain, CAIRN_CODEC_MAX_PLAIN + 1,
                                        f->stored, cairn_codec_bound(CAIRN_CODEC_MAX_PLAIN + 1), &n),
                     CAIRN_ETOOBIG);
    assert_int_equal(n, 0);
    assert_non_null(strstr(cairn_err_msg(), hex));
    /* too small an output buffer is refused up front */
    assert_int_equal(cairn_codec_encode(f->c, f->d, id, f->plain, 100, f->stored,
                                        cairn_codec_bound(100) - 1, &n),
                     CAIRN_EINVAL);
}

static void test_deterministic(void **state)
{
    struct fixture *f = *state;
    uint64_t seed = 5;
    fill_text(&seed, f->plain, 50000);
    uint8_t id[CAIRN_CHUNK_ID_BYTES];
    size_t n1 = encode(f, 50000, id);
    uint8_t *copy = malloc(n1);
    memcpy(copy, f->stored, n1);

    /* a second codec (fresh contexts) gives the same bytes too */
    struct cairn_codec *c2 = NULL;
    assert_int_equal(cairn_codec_new(&c2, CAIRN_CODEC_DEFAULT_LEVEL), CAIRN_OK);
    size_t n2 = encode(f, 50000, id);
    assert_int_equal(n1, n2);
    assert_memory_equal(copy, f->stored, n1);
    size_t n3 = 0;
    assert_int_equal(cairn_codec_encode(c2, f->d, id, f->plain, 50000, f->stored,
                                        cairn_codec_bound(50000), &n3),
                     CAIRN_OK);
    assert_int_equal(n1, n3);
    assert_memory_equal(copy, f->stored, n1);
    cairn_codec_destroy(&c2);
    assert_null(c2);
    cairn_codec_destroy(&c2);
    cairn_codec_destroy(NULL);
    free(copy);
}

static void expect_corrupt(struct fixture *f, const uint8_t id[CAIRN_CHUNK_ID_BYTES],
                           const uint8_t *stored, size_t n, const char *what)
{
    char hex[2 * CAIRN_CHUNK_ID_BYTES + 1];
    cairn_hex_encode(hex, id, CAIRN_CHUNK_ID_BYTES);
    size_t got = 7;
    int rc = cairn_codec_decode(f->c, f->d, id, stored, n, f->out, CAIRN_CODEC_MAX_PLAIN, &got);
    if (rc != CAIRN_ECORRUPT)
        fail_msg("%s: expected ECORRUPT, got %s (%s)", what, cairn_err_name(rc), cairn_err_msg());
    if (!strstr(cairn_err_msg(), hex))
        fail_msg("%s: message does not name the chunk: %s", what, cairn_err_msg());
    assert_int_equal(got, 0);
}

/* Flip a bit at every offset of a compressed and an uncompressed chunk. */
static void test_flipped_bytes(void **state)
{
    struct fixture *f = *state;
    uint64_t seed = 77;
    for (int variant = 0; variant < 2; variant++) {
        size_t len = 3000;
        if (variant == 0)
            fill_text(&seed, f->plain, len);
        else
            tu_fill_random(&seed, f->plain, len);
        uint8_t id[CAIRN_CHUNK_ID_BYTES];
        size_t n = encode(f, len, id);
        uint8_t *copy = malloc(n);
        for (size_t i = 0; i < n; i++) {
            memcpy(copy, f->stored, n);
            copy[i] ^= (uint8_t)(1u << (i % 8));
            const char *cls = i < CAIRN_CODEC_HEADER_BYTES ? "header"
                              : i < n - CAIRN_CHECKSUM_BYTES ? "body"
                                                             : "trailer";
            char what[64];
            snprintf(what, sizeof(what), "variant %d %s byte %zu", variant, cls, i);
            expect_corrupt(f, id, copy, n, what);
            assert_int_equal(cairn_codec_verify(copy, n), CAIRN_ECORRUPT);
        }
        /* a different chunk id (nonce and AD) fails too */
        uint8_t id2[CAIRN_CHUNK_ID_BYTES];
        memcpy(id2, id, sizeof(id2));
        id2[31] ^= 1;
        expect_corrupt(f, id2, f->stored, n, "wrong chunk id");
        free(copy);
    }
}

/*
 * Damage that passes the keyless checksum (someone recomputed it): the header
 * fields, the AEAD and the length checks must still catch it.
 */
static void fix_checksum(uint8_t *stored, size_t n)
{
    cairn_checksum(stored, n - CAIRN_CHECKSUM_BYTES, stored + n - CAIRN_CHECKSUM_BYTES);
}

static void test_damage_behind_checksum(void **state)
{
    struct fixture *f = *state;
    uint64_t seed = 3;
    fill_text(&seed, f->plain, 20000);
    uint8_t id[CAIRN_CHUNK_ID_BYTES];
    size_t n = encode(f, 20000, id);
    uint8_t *copy = malloc(n);

    /* unknown version: EVERSION, not corruption */
    memcpy(copy, f->stored, n);
    copy[0] = 2;
    fix_checksum(copy, n);
    size_t got;
    assert_int_equal(cairn_codec_decode(f->c, f->d, id, copy, n, f->out, CAIRN_CODEC_MAX_PLAIN, &got),
                     CAIRN_EVERSION);
    struct cairn_chunk_header h;
    assert_int_equal(cairn_codec_parse_header(copy, n, &h), CAIRN_EVERSION);
    assert_int_equal(cairn_codec_verify(copy, n), CAIRN_EVERSION);

    /* every other header byte, with a valid checksum */
    for (size_t i = 1; i < CAIRN_CODEC_HEADER_BYTES; i++) {
        memcpy(copy, f->stored, n);
        copy[i] ^= 0x01;
        fix_checksum(copy, n);
        char what[48];
        snprintf(what, sizeof(what), "header byte %zu behind checksum", i);
        expect_corrupt(f, id, copy, n, what);
    }
    /* body bytes, with a valid checksum: the AEAD catches them */
    for (size_t i = CAIRN_CODEC_HEADER_BYTES; i < n - CAIRN_CHECKSUM_BYTES; i += 97) {
        memcpy(copy, f->stored, n);
        copy[i] ^= 0x40;
        fix_checksum(copy, n);
        expect_corrupt(f, id, copy, n, "body behind checksum");
    }
    /* a forged, larger plain_len with a caller buffer of the true size: corruption, not ETOOBIG */
    memcpy(copy, f->stored, n);
    cairn_store_le32(copy + 4, 21000);
    fix_checksum(copy, n);
    assert_int_equal(cairn_codec_decode(f->c, f->d, id, copy, n, f->out, 20000, &got), CAIRN_ECORRUPT);
    /* a plain_len over the maximum */
    memcpy(copy, f->stored, n);
    cairn_store_le32(copy + 4, CAIRN_CODEC_MAX_PLAIN + 1);
    fix_checksum(copy, n);
    expect_corrupt(f, id, copy, n, "plain_len over max");
    assert_int_equal(cairn_codec_parse_header(copy, n, &h), CAIRN_ECORRUPT);
    free(copy);
}

static void test_wrong_domain(void **state)
{
    struct fixture *f = *state;
    uint64_t seed = 8;
    fill_text(&seed, f->plain, 10000);
    uint8_t id[CAIRN_CHUNK_ID_BYTES];
    size_t n = encode(f, 10000, id);
    char hex[2 * CAIRN_CHUNK_ID_BYTES + 1];
    cairn_hex_encode(hex, id, sizeof(id));
    size_t got = 1;
    assert_int_equal(cairn_codec_decode(f->c, f->other, id, f->stored, n, f->out,
                                        CAIRN_CODEC_MAX_PLAIN, &got),
                     CAIRN_ECORRUPT);
    assert_non_null(strstr(cairn_err_msg(), hex));
    assert_non_null(strstr(cairn_err_msg(), "domain"));
    assert_int_equal(got, 0);

    /* a value re-labelled with the other domain's id (checksum fixed) fails the AEAD */
    uint8_t *copy = malloc(n);
    memcpy(copy, f->stored, n);
    memcpy(copy + 8, cairn_domain_id(f->other), CAIRN_DOMAIN_ID_BYTES);
    fix_checksum(copy, n);
    assert_int_equal(cairn_codec_decode(f->c, f->other, id, copy, n, f->out, CAIRN_CODEC_MAX_PLAIN,
                                        &got),
                     CAIRN_ECORRUPT);
    free(copy);

    /* an output buffer smaller than the plaintext is refused */
    assert_int_equal(cairn_codec_decode(f->c, f->d, id, f->stored, n, f->out, 9999, &got),
                     CAIRN_ETOOBIG);
}

static void test_truncated(void **state)
{
    struct fixture *f = *state;
    uint64_t seed = 21;
    for (int variant = 0; variant < 2; variant++) {
        size_t len = 5000;
        if (variant == 0)
            fill_text(&seed, f->plain, len);
        else
            tu_fill_random(&seed, f->plain, len);
        uint8_t id[CAIRN_CHUNK_ID_BYTES];
        size_t n = encode(f, len, id);
        for (size_t cut = 0; cut < n; cut++) {
            /* an exact-size heap copy so ASan sees any read past the end */
            uint8_t *t = malloc(cut ? cut : 1);
            memcpy(t, f->stored, cut);
            size_t got = 3;
            int rc = cairn_codec_decode(f->c, f->d, id, t, cut, f->out, CAIRN_CODEC_MAX_PLAIN, &got);
            assert_int_equal(rc, CAIRN_ECORRUPT);
            assert_int_equal(got, 0);
            assert_int_equal(cairn_codec_verify(t, cut), CAIRN_ECORRUPT);
            struct cairn_chunk_header h;
            rc = cairn_codec_parse_header(t, cut, &h);
            assert_int_equal(rc, cut < CAIRN_CODEC_HEADER_BYTES ? CAIRN_ECORRUPT : CAIRN_OK);
            free(t);
        }
    }
    assert_int_equal(cairn_codec_verify(NULL, 0), CAIRN_ECORRUPT);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Prints MB/s of plaintext through encode and decode; no timing assertion. */
static void test_throughput(void **state)
{
    struct fixture *f = *state;
    const size_t chunk = 64 * 1024, total = 32u * 1024 * 1024;
    uint8_t *data = malloc(total);
    uint64_t seed = 2024;
    fill_text(&seed, data, total / 2);
    tu_fill_random(&seed, data + total / 2, total / 8); /* some incompressible chunks */
    fill_text(&seed, data + total / 2 + total / 8, total - total / 2 - total / 8);
    size_t nchunks = total / chunk;
    uint8_t(*ids)[CAIRN_CHUNK_ID_BYTES] = malloc(nchunks * CAIRN_CHUNK_ID_BYTES);
    size_t bound = cairn_codec_bound(chunk);
    uint8_t *stored = malloc(nchunks * bound);
    size_t *lens = malloc(nchunks * sizeof(*lens));
    for (size_t i = 0; i < nchunks; i++)
        cairn_chunk_id(f->d, data + i * chunk, chunk, ids[i]);

    const int levels[] = {3, 1};
    for (size_t l = 0; l < CAIRN_ARRAY_LEN(levels); l++) {
        struct cairn_codec *c = NULL;
        assert_int_equal(cairn_codec_new(&c, levels[l]), CAIRN_OK);
        size_t stored_total = 0;
        double t0 = now_s();
        for (size_t i = 0; i < nchunks; i++) {
            assert_int_equal(cairn_codec_encode(c, f->d, ids[i], data + i * chunk, chunk,
                                                stored + i * bound, bound, &lens[i]),
                             CAIRN_OK);
            stored_total += lens[i];
        }
        double enc = now_s() - t0;
        t0 = now_s();
        for (size_t i = 0; i < nchunks; i++) {
            size_t got;
            assert_int_equal(cairn_codec_decode(c, f->d, ids[i], stored + i * bound, lens[i], f->out,
                                                CAIRN_CODEC_MAX_PLAIN, &got),
                             CAIRN_OK);
            assert_int_equal(got, chunk);
        }
        double dec = now_s() - t0;
        assert_memory_equal(f->out, data + (nchunks - 1) * chunk, chunk);
        printf("codec zstd level %d: encode %.0f MB/s, decode %.0f MB/s, ratio %.2f (32 MiB, 64 KiB chunks)\n",
               levels[l], (double)total / enc / 1e6, (double)total / dec / 1e6,
               (double)total / (double)stored_total);
        cairn_codec_destroy(&c);
    }
    free(data);
    free(ids);
    free(stored);
    free(lens);
}

static void test_bad_level(void **state)
{
    (void)state;
    struct cairn_codec *c = NULL;
    assert_int_equal(cairn_codec_new(&c, 1000), CAIRN_EINVAL);
    assert_null(c);
    assert_int_equal(cairn_codec_new(&c, -1), CAIRN_OK);
    cairn_codec_destroy(&c);
    assert_int_equal(cairn_codec_bound(0), 56);
    assert_int_equal(cairn_codec_bound(SIZE_MAX), SIZE_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_flipped_bytes),
        cmocka_unit_test(test_damage_behind_checksum),
        cmocka_unit_test(test_wrong_domain),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_bad_level),
        cmocka_unit_test(test_throughput),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
