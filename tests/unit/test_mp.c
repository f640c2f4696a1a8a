/* test_mp.c: the msgpack subset: standard smallest encodings at every boundary, and a reader that refuses
 * truncated, oversized, mistyped and deeply nested input with sticky errors. */
#include "testutil.h"

#include "cairn/err.h"
#include "cairn/mp.h"

#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

static struct cairn_buf enc_uint(uint64_t v)
{
    struct cairn_buf b;
    cairn_buf_init(&b, 0);
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, &b);
    cairn_mp_write_uint(&w, v);
    assert_int_equal(w.err, CAIRN_OK);
    return b;
}

static struct cairn_buf enc_int(int64_t v)
{
    struct cairn_buf b;
    cairn_buf_init(&b, 0);
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, &b);
    cairn_mp_write_int(&w, v);
    assert_int_equal(w.err, CAIRN_OK);
    return b;
}

static void test_uint_boundaries(void **state)
{
    (void)state;
    static const struct { uint64_t v; size_t len; uint8_t tag; } cases[] = {
        {0, 1, 0x00}, {1, 1, 0x01}, {127, 1, 0x7f}, {128, 2, 0xcc}, {255, 2, 0xcc}, {256, 3, 0xcd},
        {65535, 3, 0xcd}, {65536, 5, 0xce}, {UINT32_MAX, 5, 0xce}, {(uint64_t)UINT32_MAX + 1, 9, 0xcf},
        {(uint64_t)INT64_MAX, 9, 0xcf}, {(uint64_t)INT64_MAX + 1, 9, 0xcf}, {UINT64_MAX, 9, 0xcf},
    };
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(cases); i++) {
        struct cairn_buf b = enc_uint(cases[i].v);
        assert_int_equal(b.len, cases[i].len);
        assert_int_equal(b.data[0], cases[i].tag);
        struct cairn_mp_reader r;
        uint64_t u;
        cairn_mp_reader_init(&r, b.data, b.len);
        assert_int_equal(cairn_mp_read_uint(&r, &u), CAIRN_OK);
        assert_true(u == cases[i].v);
        assert_int_equal(cairn_mp_remaining(&r), 0);
        /* read as signed: fits unless above INT64_MAX */
        int64_t s;
        cairn_mp_reader_init(&r, b.data, b.len);
        if (cases[i].v <= (uint64_t)INT64_MAX) {
            assert_int_equal(cairn_mp_read_int(&r, &s), CAIRN_OK);
            assert_true((uint64_t)s == cases[i].v);
        } else {
            assert_int_equal(cairn_mp_read_int(&r, &s), CAIRN_ECORRUPT);
        }
        cairn_buf_release(&b);
    }
    /* exact bytes of the spec (big-endian payloads) */
    struct cairn_buf b = enc_uint(0x01020304u);
    assert_memory_equal(b.data, "\xce\x01\x02\x03\x04", 5);
    cairn_buf_release(&b);
    b = enc_uint(200);
    assert_memory_equal(b.data, "\xcc\xc8", 2);
    cairn_buf_release(&b);
}

static void test_int_boundaries(void **state)
{
    (void)state;
    static const struct { int64_t v; size_t len; uint8_t tag; } cases[] = {
        {0, 1, 0x00}, {127, 1, 0x7f}, {128, 2, 0xcc}, {-1, 1, 0xff}, {-32, 1, 0xe0}, {-33, 2, 0xd0},
        {-128, 2, 0xd0}, {-129, 3, 0xd1}, {-32768, 3, 0xd1}, {-32769, 5, 0xd2}, {INT32_MIN, 5, 0xd2},
        {(int64_t)INT32_MIN - 1, 9, 0xd3}, {INT64_MIN, 9, 0xd3}, {INT64_MIN + 1, 9, 0xd3},
        {INT64_MAX, 9, 0xcf}, {65536, 5, 0xce},
    };
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(cases); i++) {
        struct cairn_buf b = enc_int(cases[i].v);
        assert_int_equal(b.len, cases[i].len);
        assert_int_equal(b.data[0], cases[i].tag);
        struct cairn_mp_reader r;
        int64_t s;
        cairn_mp_reader_init(&r, b.data, b.len);
        assert_int_equal(cairn_mp_read_int(&r, &s), CAIRN_OK);
        assert_true(s == cases[i].v);
        assert_int_equal(cairn_mp_remaining(&r), 0);
        uint64_t u;
        cairn_mp_reader_init(&r, b.data, b.len);
        assert_int_equal(cairn_mp_read_uint(&r, &u), cases[i].v < 0 ? CAIRN_ECORRUPT : CAIRN_OK);
        cairn_buf_release(&b);
    }
    struct cairn_buf b = enc_int(-33);
    assert_memory_equal(b.data, "\xd0\xdf", 2);
    cairn_buf_release(&b);
    /* other writers may use a wider or signed encoding for a small value: all are read */
    static const uint8_t wide[][9] = {
        {0xd0, 0x05}, {0xd1, 0x00, 0x05}, {0xd2, 0, 0, 0, 0x05}, {0xd3, 0, 0, 0, 0, 0, 0, 0, 0x05},
        {0xcd, 0x00, 0x05}, {0xcf, 0, 0, 0, 0, 0, 0, 0, 0x05},
    };
    static const size_t wlen[] = {2, 3, 5, 9, 3, 9};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(wlen); i++) {
        struct cairn_mp_reader r;
        uint64_t u;
        cairn_mp_reader_init(&r, wide[i], wlen[i]);
        assert_int_equal(cairn_mp_read_uint(&r, &u), CAIRN_OK);
        assert_int_equal(u, 5);
    }
    /* int16 -2 */
    struct cairn_mp_reader r;
    int64_t s;
    cairn_mp_reader_init(&r, (const uint8_t *)"\xd1\xff\xfe", 3);
    assert_int_equal(cairn_mp_read_int(&r, &s), CAIRN_OK);
    assert_int_equal(s, -2);
}

static void check_payload(bool is_str, size_t len, size_t hdr, uint8_t tag)
{
    uint8_t *p = malloc(len ? len : 1);
    uint64_t seed = len + 1;
    tu_fill_random(&seed, p, len);
    struct cairn_buf b;
    cairn_buf_init(&b, 0);
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, &b);
    if (is_str)
        cairn_mp_write_str(&w, (const char *)p, len);
    else
        cairn_mp_write_bin(&w, p, len);
    assert_int_equal(w.err, CAIRN_OK);
    assert_int_equal(b.len, hdr + len);
    assert_int_equal(b.data[0], tag);
    struct cairn_mp_reader r;
    const uint8_t *q;
    uint32_t n;
    cairn_mp_reader_init(&r, b.data, b.len);
    if (is_str)
        assert_int_equal(cairn_mp_read_str(&r, &q, &n, UINT32_MAX), CAIRN_OK);
    else
        assert_int_equal(cairn_mp_read_bin(&r, &q, &n, UINT32_MAX), CAIRN_OK);
    assert_int_equal(n, len);
    if (len)
        assert_memory_equal(q, p, len);
    assert_ptr_equal(q, b.data + hdr);
    /* the same value over the caller's limit by one */
    if (len) {
        cairn_mp_reader_init(&r, b.data, b.len);
        int rc = is_str ? cairn_mp_read_str(&r, &q, &n, (uint32_t)len - 1)
                        : cairn_mp_read_bin(&r, &q, &n, (uint32_t)len - 1);
        assert_int_equal(rc, CAIRN_ETOOBIG);
        assert_null(q);
    }
    /* skip steps over it exactly */
    cairn_mp_reader_init(&r, b.data, b.len);
    assert_int_equal(cairn_mp_skip(&r), CAIRN_OK);
    assert_int_equal(cairn_mp_remaining(&r), 0);
    cairn_buf_release(&b);
    free(p);
}

static void test_str_bin_boundaries(void **state)
{
    (void)state;
    check_payload(true, 0, 1, 0xa0);
    check_payload(true, 31, 1, 0xbf);
    check_payload(true, 32, 2, 0xd9);
    check_payload(true, 255, 2, 0xd9);
    check_payload(true, 256, 3, 0xda);
    check_payload(true, 65535, 3, 0xda);
    check_payload(true, 65536, 5, 0xdb);
    check_payload(false, 0, 2, 0xc4);
    check_payload(false, 255, 2, 0xc4);
    check_payload(false, 256, 3, 0xc5);
    check_payload(false, 65535, 3, 0xc5);
    check_payload(false, 65536, 5, 0xc6);
}

static void check_container(bool is_map, uint32_t n, size_t hdr, uint8_t tag)
{
    struct cairn_buf b;
    cairn_buf_init(&b, 0);
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, &b);
    if (is_map)
        cairn_mp_write_map(&w, n);
    else
        cairn_mp_write_array(&w, n);
    assert_int_equal(b.len, hdr);
    assert_int_equal(b.data[0], tag);
    for (uint32_t i = 0; i < (is_map ? 2 * n : n); i++)
        cairn_mp_write_uint(&w, i & 0x7f);
    assert_int_equal(w.err, CAIRN_OK);
    struct cairn_mp_reader r;
    uint32_t got;
    cairn_mp_reader_init(&r, b.data, b.len);
    if (is_map)
        assert_int_equal(cairn_mp_read_map(&r, &got, UINT32_MAX), CAIRN_OK);
    else
        assert_int_equal(cairn_mp_read_array(&r, &got, UINT32_MAX), CAIRN_OK);
    assert_int_equal(got, n);
    if (n) {
        cairn_mp_reader_init(&r, b.data, b.len);
        int rc = is_map ? cairn_mp_read_map(&r, &got, n - 1) : cairn_mp_read_array(&r, &got, n - 1);
        assert_int_equal(rc, CAIRN_ETOOBIG);
    }
    cairn_mp_reader_init(&r, b.data, b.len);
    assert_int_equal(cairn_mp_skip(&r), CAIRN_OK);
    assert_int_equal(cairn_mp_remaining(&r), 0);
    cairn_buf_release(&b);
}

static void test_container_boundaries(void **state)
{
    (void)state;
    check_container(false, 0, 1, 0x90);
    check_container(false, 15, 1, 0x9f);
    check_container(false, 16, 3, 0xdc);
    check_container(false, 65535, 3, 0xdc);
    check_container(false, 65536, 5, 0xdd);
    check_container(true, 0, 1, 0x80);
    check_container(true, 15, 1, 0x8f);
    check_container(true, 16, 3, 0xde);
    check_container(true, 65535, 3, 0xde);
    check_container(true, 65536, 5, 0xdf);
}

static void test_nil_bool(void **state)
{
    (void)state;
    struct cairn_buf b;
    cairn_buf_init(&b, 0);
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, &b);
    cairn_mp_write_nil(&w);
    cairn_mp_write_bool(&w, true);
    cairn_mp_write_bool(&w, false);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "\xc0\xc3\xc2", 3);
    struct cairn_mp_reader r;
    bool v;
    cairn_mp_reader_init(&r, b.data, b.len);
    assert_true(cairn_mp_peek_nil(&r));
    assert_int_equal(cairn_mp_read_nil(&r), CAIRN_OK);
    assert_false(cairn_mp_peek_nil(&r));
    assert_int_equal(cairn_mp_read_bool(&r, &v), CAIRN_OK);
    assert_true(v);
    assert_int_equal(cairn_mp_read_bool(&r, &v), CAIRN_OK);
    assert_false(v);
    assert_false(cairn_mp_peek_nil(&r)); /* at the end */
    assert_int_equal(cairn_mp_read_nil(&r), CAIRN_ECORRUPT);
    cairn_buf_release(&b);
}

/* A sample document and a reader that walks it field by field. */
static void write_sample(struct cairn_buf *b)
{
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, b);
    cairn_mp_write_map(&w, 3);
    cairn_mp_write_str(&w, "name", 4);
    cairn_mp_write_str(&w, "a fairly long string value past 32 bytes", 40);
    cairn_mp_write_str(&w, "nums", 4);
    cairn_mp_write_array(&w, 5);
    cairn_mp_write_uint(&w, 7);
    cairn_mp_write_uint(&w, 300);
    cairn_mp_write_int(&w, -70000);
    cairn_mp_write_uint(&w, UINT64_MAX);
    cairn_mp_write_nil(&w);
    cairn_mp_write_str(&w, "blob", 4);
    cairn_mp_write_bin(&w, "\x00\x01\x02\x03", 4);
    assert_int_equal(w.err, CAIRN_OK);
}

static int read_sample(const uint8_t *p, size_t n)
{
    struct cairn_mp_reader r;
    cairn_mp_reader_init(&r, p, n);
    uint32_t c, len;
    const uint8_t *s;
    uint64_t u;
    int64_t i;
    cairn_mp_read_map(&r, &c, 16);
    cairn_mp_read_str(&r, &s, &len, 16);
    cairn_mp_read_str(&r, &s, &len, 100);
    cairn_mp_read_str(&r, &s, &len, 16);
    cairn_mp_read_array(&r, &c, 16);
    cairn_mp_read_uint(&r, &u);
    cairn_mp_read_uint(&r, &u);
    cairn_mp_read_int(&r, &i);
    cairn_mp_read_uint(&r, &u);
    cairn_mp_read_nil(&r);
    cairn_mp_read_str(&r, &s, &len, 16);
    cairn_mp_read_bin(&r, &s, &len, 16);
    return r.err;
}

static void test_truncation_everywhere(void **state)
{
    (void)state;
    struct cairn_buf b;
    cairn_buf_init(&b, 0);
    write_sample(&b);
    assert_int_equal(read_sample(b.data, b.len), CAIRN_OK);
    for (size_t cut = 0; cut < b.len; cut++) {
        /* a copy of exactly cut bytes, so ASan sees any read past the end */
        uint8_t *t = malloc(cut ? cut : 1);
        memcpy(t, b.data, cut);
        assert_int_equal(read_sample(t, cut), CAIRN_ECORRUPT);
        struct cairn_mp_reader r;
        cairn_mp_reader_init(&r, t, cut);
        assert_int_equal(cairn_mp_skip(&r), CAIRN_ECORRUPT);
        free(t);
    }
    cairn_buf_release(&b);
}

static void test_counts_past_the_end(void **state)
{
    (void)state;
    struct cairn_mp_reader r;
    uint32_t n;
    const uint8_t *p;
    /* array32 claiming 4 billion elements, 3 bytes left: refused before any allocation could follow */
    cairn_mp_reader_init(&r, (const uint8_t *)"\xdd\xff\xff\xff\xff\x01\x02\x03", 8);
    assert_int_equal(cairn_mp_read_array(&r, &n, UINT32_MAX), CAIRN_ECORRUPT);
    assert_int_equal(n, 0);
    /* map16 of 10 pairs (20 values) with 15 bytes left */
    uint8_t m[18] = {0xde, 0x00, 0x0a};
    cairn_mp_reader_init(&r, m, sizeof(m));
    assert_int_equal(cairn_mp_read_map(&r, &n, UINT32_MAX), CAIRN_ECORRUPT);
    /* str32 and bin32 lengths past the end */
    cairn_mp_reader_init(&r, (const uint8_t *)"\xdb\xff\xff\xff\xff" "abc", 8);
    assert_int_equal(cairn_mp_read_str(&r, &p, &n, UINT32_MAX), CAIRN_ECORRUPT);
    cairn_mp_reader_init(&r, (const uint8_t *)"\xc6\x00\x00\x00\x04" "abc", 8);
    assert_int_equal(cairn_mp_read_bin(&r, &p, &n, UINT32_MAX), CAIRN_ECORRUPT);
    /* and skip agrees */
    cairn_mp_reader_init(&r, (const uint8_t *)"\xdd\xff\xff\xff\xff\x01\x02\x03", 8);
    assert_int_equal(cairn_mp_skip(&r), CAIRN_ECORRUPT);
    cairn_mp_reader_init(&r, (const uint8_t *)"\xc7\xff\x01", 3);
    assert_int_equal(cairn_mp_skip(&r), CAIRN_ECORRUPT);
}

static void test_sticky_errors(void **state)
{
    (void)state;
    const uint8_t data[] = {0xc4, 0x05, 'a', 'b', 'c', 'd', 'e', 0xc0};
    struct cairn_mp_reader r;
    const uint8_t *p;
    uint32_t n;
    cairn_mp_reader_init(&r, data, sizeof(data));
    assert_int_equal(cairn_mp_read_bin(&r, &p, &n, 4), CAIRN_ETOOBIG);
    assert_non_null(strstr(cairn_err_msg(), "limit"));
    size_t left = cairn_mp_remaining(&r);
    /* valid input after the failure is not read: the first error stays */
    assert_int_equal(cairn_mp_read_bin(&r, &p, &n, 100), CAIRN_ETOOBIG);
    assert_int_equal(cairn_mp_read_nil(&r), CAIRN_ETOOBIG);
    assert_int_equal(cairn_mp_skip(&r), CAIRN_ETOOBIG);
    assert_false(cairn_mp_peek_nil(&r));
    assert_int_equal(cairn_mp_remaining(&r), left);

    /* writer: a buffer limit is sticky too */
    struct cairn_buf b;
    cairn_buf_init(&b, 4);
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, &b);
    cairn_mp_write_uint(&w, 1);
    cairn_mp_write_str(&w, "too long for it", 15);
    assert_int_equal(w.err, CAIRN_ETOOBIG);
    cairn_mp_write_nil(&w);
    assert_int_equal(w.err, CAIRN_ETOOBIG);
    assert_int_equal(b.len, 2); /* 0x01 and the fixstr header; nothing after the failure */
    cairn_buf_release(&b);
}

static void test_wrong_types(void **state)
{
    (void)state;
    struct cairn_mp_reader r;
    const uint8_t *p;
    uint32_t n;
    uint64_t u;
    int64_t i;
    bool v;
    cairn_mp_reader_init(&r, (const uint8_t *)"\xc4\x01" "x", 3);
    assert_int_equal(cairn_mp_read_str(&r, &p, &n, 10), CAIRN_ECORRUPT);
    cairn_mp_reader_init(&r, (const uint8_t *)"\xa1" "x", 2);
    assert_int_equal(cairn_mp_read_bin(&r, &p, &n, 10), CAIRN_ECORRUPT);
    cairn_mp_reader_init(&r, (const uint8_t *)"\x81\x01\x02", 3);
    assert_int_equal(cairn_mp_read_array(&r, &n, 10), CAIRN_ECORRUPT);
    cairn_mp_reader_init(&r, (const uint8_t *)"\x91\x01", 2);
    assert_int_equal(cairn_mp_read_map(&r, &n, 10), CAIRN_ECORRUPT);
    cairn_mp_reader_init(&r, (const uint8_t *)"\xc0", 1);
    assert_int_equal(cairn_mp_read_bool(&r, &v), CAIRN_ECORRUPT);
    cairn_mp_reader_init(&r, (const uint8_t *)"\xc2", 1);
    assert_int_equal(cairn_mp_read_nil(&r), CAIRN_ECORRUPT);
    cairn_mp_reader_init(&r, (const uint8_t *)"\xa1" "x", 2);
    assert_int_equal(cairn_mp_read_uint(&r, &u), CAIRN_ECORRUPT);
    cairn_mp_reader_init(&r, (const uint8_t *)"\xca\x00\x00\x00\x00", 5); /* float32 */
    assert_int_equal(cairn_mp_read_int(&r, &i), CAIRN_ECORRUPT);
    cairn_mp_reader_init(&r, (const uint8_t *)"\xff", 1); /* -1 */
    assert_int_equal(cairn_mp_read_uint(&r, &u), CAIRN_ECORRUPT);
    cairn_mp_reader_init(&r, (const uint8_t *)"\xc1", 1); /* never used */
    assert_int_equal(cairn_mp_skip(&r), CAIRN_ECORRUPT);
    cairn_mp_reader_init(&r, NULL, 0);
    assert_int_equal(cairn_mp_read_uint(&r, &u), CAIRN_ECORRUPT);
}

static void test_skip(void **state)
{
    (void)state;
    /* every standard type outside our subset is stepped over too */
    const uint8_t doc[] = {
        0xca, 1, 2, 3, 4,                         /* float32 */
        0xcb, 1, 2, 3, 4, 5, 6, 7, 8,             /* float64 */
        0xd4, 1, 9,                               /* fixext1 */
        0xd8, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, /* fixext16 */
        0xc7, 2, 1, 0xaa, 0xbb,                   /* ext8 */
        0x82, 0xa1, 'k', 0x91, 0xc0, 0x01, 0xc3,  /* {"k": [nil], 1: true} */
        0xc0,
    };
    struct cairn_mp_reader r;
    cairn_mp_reader_init(&r, doc, sizeof(doc));
    for (int i = 0; i < 6; i++)
        assert_int_equal(cairn_mp_skip(&r), CAIRN_OK);
    assert_int_equal(cairn_mp_remaining(&r), 1);
    assert_int_equal(cairn_mp_read_nil(&r), CAIRN_OK);

    /* nesting: 32 levels are fine, 33 and the 40-level bomb are refused */
    uint8_t bomb[64];
    for (int depth = 30; depth <= 40; depth++) {
        memset(bomb, 0x91, (size_t)depth);
        bomb[depth] = 0xc0;
        cairn_mp_reader_init(&r, bomb, (size_t)depth + 1);
        int rc = cairn_mp_skip(&r);
        assert_int_equal(rc, depth <= 32 ? CAIRN_OK : CAIRN_ECORRUPT);
    }
    /* a long input of nested arrays stops at the limit, not at the end of the input */
    uint8_t *wide = malloc(100000);
    memset(wide, 0x91, 100000);
    cairn_mp_reader_init(&r, wide, 100000);
    assert_int_equal(cairn_mp_skip(&r), CAIRN_ECORRUPT);
    free(wide);
}

/* Random garbage never crashes the reader, and every failure is one of the documented codes. */
static void test_garbage(void **state)
{
    (void)state;
    uint64_t seed = 42;
    uint8_t buf[256];
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = tu_rand(&seed) % sizeof(buf);
        tu_fill_random(&seed, buf, n);
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, buf, n);
        struct cairn_mp_reader r;
        cairn_mp_reader_init(&r, copy, n);
        while (cairn_mp_remaining(&r) && !r.err)
            cairn_mp_skip(&r);
        assert_true(r.err == CAIRN_OK || r.err == CAIRN_ECORRUPT);
        cairn_mp_reader_init(&r, copy, n);
        uint32_t c;
        const uint8_t *p;
        if (cairn_mp_read_array(&r, &c, 1000) == CAIRN_OK)
            assert_true(c <= n);
        cairn_mp_reader_init(&r, copy, n);
        if (cairn_mp_read_str(&r, &p, &c, 1000) == CAIRN_OK)
            assert_true(p + c <= copy + n);
        free(copy);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uint_boundaries),
        cmocka_unit_test(test_int_boundaries),
        cmocka_unit_test(test_str_bin_boundaries),
        cmocka_unit_test(test_container_boundaries),
        cmocka_unit_test(test_nil_bool),
        cmocka_unit_test(test_truncation_everywhere),
        cmocka_unit_test(test_counts_past_the_end),
        cmocka_unit_test(test_sticky_errors),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_skip),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
