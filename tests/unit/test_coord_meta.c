/*
 * test_coord_meta.c: the coordinator's metadata records, indexes and stored
 * values, on a real RocksDB.
 *
 * - App, worker and job records round-trip, with and without their optional
 *   fields; small values (epoch, clock, queue entries) too.
 * - Hostile records: every truncation, every single-byte flip, duplicated,
 *   missing, mistyped, over-long and NUL-bearing fields, trailing bytes and
 *   unknown versions are refused with ECORRUPT/EVERSION naming the key, never
 *   a crash (run under ASan in CI); unknown fields are skipped.
 * - Stored params/results: pack/unpack round trip (nested, floats, nil),
 *   bytes outside the wire model are ECORRUPT.
 * - Image, sandbox and upload records (issue 4): round trips, copies, every
 *   truncation and byte flip, and the specific lies (a ready image without a
 *   layer, manifests not made of 36-byte entries, ids of the wrong kind, a
 *   running sandbox without a worker, a runtime id that is not hex).
 * - The hash-map index under churn; the sorted id vector of the paged lists;
 *   the store across close/reopen, and its layout version.
 */
#include "testutil.h"

#include "coord.h"
#include "coord_map.h"
#include "coord_meta.h"
#include "coord_value.h"

#include "cairn/alloc.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "cairn/mp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void job_sample(struct coord_job_rec *j, bool finished)
{
    memset(j, 0, sizeof(*j));
    memcpy(j->id, "jb-0123456789abcdef", 20);
    snprintf(j->app, sizeof(j->app), "app1");
    snprintf(j->kind, sizeof(j->kind), "noop");
    snprintf(j->req_id, sizeof(j->req_id), "req/with/slashes");
    j->state = finished ? COORD_JOB_FAILED : COORD_JOB_RUNNING;
    j->seq = 0x123456789ull;
    j->created_ns = 1700000000000000000ll;
    j->updated_ns = j->created_ns + 5;
    snprintf(j->worker, sizeof(j->worker), "w1");
    static const uint8_t params[] = {0x81, 0xa1, 'n', 0x07};
    j->params = cairn_memdup(params, sizeof(params));
    j->params_len = sizeof(params);
    if (finished) {
        j->err_code = CAIRN_EUNAVAILABLE;
        j->err_msg = cairn_strdup("worker 'w1' died (no heartbeat for 5.0 s)");
    }
}

static void encode_job(const struct coord_job_rec *j, uint8_t **out, size_t *len)
{
    struct cairn_buf b;
    cairn_buf_init(&b, 1 << 20);
    assert_int_equal(coord_job_encode(j, &b), CAIRN_OK);
    *out = cairn_buf_detach(&b, len);
}

static void test_job_roundtrip(void **state)
{
    (void)state;
    for (int fin = 0; fin < 2; fin++) {
        struct coord_job_rec j, back;
        job_sample(&j, fin);
        uint8_t *enc;
        size_t len;
        encode_job(&j, &enc, &len);
        assert_int_equal(coord_job_decode(enc, len, "j/x", &back), CAIRN_OK);
        assert_string_equal(back.id, j.id);
        assert_string_equal(back.app, "app1");
        assert_string_equal(back.kind, "noop");
        assert_string_equal(back.req_id, "req/with/slashes");
        assert_int_equal(back.state, j.state);
        assert_int_equal(back.seq, j.seq);
        assert_int_equal(back.created_ns, j.created_ns);
        assert_int_equal(back.updated_ns, j.updated_ns);
        assert_string_equal(back.worker, "w1");
        assert_int_equal(back.params_len, j.params_len);
        assert_memory_equal(back.params, j.params, j.params_len);
        if (fin) {
            assert_int_equal(back.err_code, CAIRN_EUNAVAILABLE);
            assert_string_equal(back.err_msg, j.err_msg);
        } else {
            assert_null(back.err_msg);
        }
        assert_null(back.result);
        coord_job_rec_release(&back);
        cairn_free(enc);
        coord_job_rec_release(&j);
        assert_null(j.params);
    }
    /* a succeeded job with a result, never dispatched fields absent */
    struct coord_job_rec j, back;
    job_sample(&j, false);
    j.state = COORD_JOB_SUCCEEDED;
    static const uint8_t res[] = {0x82, 0xa1, 'a', 0xc3, 0xa1, 'b', 0x90};
    j.result = cairn_memdup(res, sizeof(res));
    j.result_len = sizeof(res);
    uint8_t *enc;
    size_t len;
    encode_job(&j, &enc, &len);
    assert_int_equal(coord_job_decode(enc, len, "j/x", &back), CAIRN_OK);
    assert_int_equal(back.result_len, sizeof(res));
    assert_memory_equal(back.result, res, sizeof(res));
    coord_job_rec_release(&back);
    cairn_free(enc);
    j.state = COORD_JOB_QUEUED;
    j.worker[0] = '\0';
    encode_job(&j, &enc, &len);
    assert_int_equal(coord_job_decode(enc, len, "j/x", &back), CAIRN_OK);
    assert_string_equal(back.worker, "");
    coord_job_rec_release(&back);
    cairn_free(enc);
    coord_job_rec_release(&j);
}

static void test_app_worker_roundtrip(void **state)
{
    (void)state;
    struct coord_app_rec a = {.created_ns = -5}, ab;
    snprintf(a.name, sizeof(a.name), "my-app.1_x");
    memset(a.token_hash, 0xab, sizeof(a.token_hash));
    struct cairn_buf b;
    cairn_buf_init(&b, 4096);
    assert_int_equal(coord_app_encode(&a, &b), CAIRN_OK);
    assert_int_equal(coord_app_decode(b.data, b.len, "a/my-app.1_x", &ab), CAIRN_OK);
    assert_string_equal(ab.name, a.name);
    assert_memory_equal(ab.token_hash, a.token_hash, 32);
    assert_int_equal(ab.created_ns, -5);
    cairn_buf_release(&b);

    for (int withv = 0; withv < 2; withv++) {
        struct coord_worker_rec w = {0}, wb;
        snprintf(w.id, sizeof(w.id), "node-1.example:7310");
        memset(w.public_key, 'A', 40);
        w.peer = cairn_strdup("tcp://10.0.0.2:7310");
        w.fingerprint = cairn_strdup("runsc-none");
        w.version = withv ? cairn_strdup("0.1.0") : NULL;
        w.capacity = 8;
        w.chunks = UINT64_MAX;
        w.bytes = 1ull << 40;
        w.sandboxes = 3;
        w.alive = true;
        w.last_seen_ns = 123;
        w.registered_ns = 45;
        cairn_buf_init(&b, 4096);
        assert_int_equal(coord_worker_encode(&w, &b), CAIRN_OK);
        assert_int_equal(coord_worker_decode(b.data, b.len, "w/x", &wb), CAIRN_OK);
        assert_string_equal(wb.id, w.id);
        assert_string_equal(wb.public_key, w.public_key);
        assert_string_equal(wb.peer, w.peer);
        assert_string_equal(wb.fingerprint, w.fingerprint);
        if (withv)
            assert_string_equal(wb.version, "0.1.0");
        else
            assert_null(wb.version);
        assert_int_equal(wb.chunks, UINT64_MAX);
        assert_int_equal(wb.bytes, 1ull << 40);
        assert_true(wb.alive);
        assert_int_equal(wb.last_seen_ns, 123);
        assert_int_equal(wb.registered_ns, 45);
        cairn_buf_release(&b);
        coord_worker_rec_release(&wb);
        coord_worker_rec_release(&w);
        assert_null(w.peer);
    }

    char out[32];
    uint64_t u;
    int64_t i;
    cairn_buf_init(&b, 64);
    assert_int_equal(coord_str_encode("jb-0123456789abcdef", &b), CAIRN_OK);
    assert_int_equal(coord_str_decode(b.data, b.len, "q/x", out, 19), CAIRN_OK);
    assert_string_equal(out, "jb-0123456789abcdef");
    assert_int_equal(coord_str_decode(b.data, b.len, "q/x", out, 10), CAIRN_ECORRUPT); /* too long for the caller */
    cairn_buf_release(&b);
    assert_int_equal(coord_u64_encode(UINT64_MAX, &b), CAIRN_OK);
    assert_int_equal(coord_u64_decode(b.data, b.len, "m/epoch", &u), CAIRN_OK);
    assert_int_equal(u, UINT64_MAX);
    cairn_buf_release(&b);
    assert_int_equal(coord_i64_encode(INT64_MIN, &b), CAIRN_OK);
    assert_int_equal(coord_i64_decode(b.data, b.len, "m/clock", &i), CAIRN_OK);
    assert_true(i == INT64_MIN);
    assert_int_equal(coord_u64_decode(b.data, b.len, "m/epoch", &u), CAIRN_ECORRUPT);
    assert_non_null(strstr(cairn_err_msg(), "'m/epoch'"));
    cairn_buf_release(&b);
}

/* Every prefix and every single-byte change of a valid record: an error or a valid record, never a crash. */
static void test_hostile_mutations(void **state)
{
    (void)state;
    struct coord_job_rec j, back;
    job_sample(&j, true);
    uint8_t *enc;
    size_t len;
    encode_job(&j, &enc, &len);
    coord_job_rec_release(&j);
    for (size_t n = 0; n < len; n++) {
        int rc = coord_job_decode(enc, n, "j/jb-0123456789abcdef", &back);
        assert_int_not_equal(rc, CAIRN_OK);
        assert_true(rc == CAIRN_ECORRUPT || rc == CAIRN_EVERSION);
        assert_non_null(strstr(cairn_err_msg(), "'j/jb-0123456789abcdef'"));
        assert_null(back.params);
        assert_null(back.err_msg);
    }
    uint8_t *mut = malloc(len);
    size_t ok = 0;
    for (size_t pos = 0; pos < len; pos++) {
        for (int v = 0; v < 256; v += 7) {
            memcpy(mut, enc, len);
            mut[pos] = (uint8_t)v;
            int rc = coord_job_decode(mut, len, "j/x", &back);
            if (rc == CAIRN_OK) {
                ok++;
                assert_true(back.state <= COORD_JOB_FAILED);
                assert_true(strlen(back.id) == 19);
                coord_job_rec_release(&back);
            } else {
                assert_true(rc == CAIRN_ECORRUPT || rc == CAIRN_EVERSION);
            }
        }
    }
    assert_true(ok > 0); /* some flips (e.g. inside strings) keep a valid record */
    free(mut);

    /* the same for workers and apps */
    struct coord_worker_rec w = {0}, wb;
    snprintf(w.id, sizeof(w.id), "w1");
    memset(w.public_key, 'k', 40);
    w.peer = cairn_strdup("tcp://h:1");
    w.fingerprint = cairn_strdup("fp");
    struct cairn_buf b;
    cairn_buf_init(&b, 4096);
    assert_int_equal(coord_worker_encode(&w, &b), CAIRN_OK);
    coord_worker_rec_release(&w);
    for (size_t n = 0; n < b.len; n++) {
        assert_int_not_equal(coord_worker_decode(b.data, n, "w/w1", &wb), CAIRN_OK);
        assert_null(wb.peer);
    }
    cairn_buf_release(&b);
    struct coord_app_rec a = {0}, ab;
    snprintf(a.name, sizeof(a.name), "app");
    assert_int_equal(coord_app_encode(&a, &b), CAIRN_OK);
    for (size_t n = 0; n < b.len; n++)
        assert_int_not_equal(coord_app_decode(b.data, n, "a/app", &ab), CAIRN_OK);
    cairn_buf_release(&b);
    cairn_free(enc);
}

/* Hand-built records: each is one specific lie. */
struct kvp {
    const char *k;
    int type; /* 0 uint, 1 str, 2 bin, 3 bool, 4 map{}, 5 nil, 6 negative int */
    uint64_t u;
    const char *s;
};

static void build(struct cairn_buf *b, const struct kvp *f, size_t n, const uint8_t *tail, size_t tail_len)
{
    struct cairn_mp_writer w;
    cairn_buf_init(b, 1 << 20);
    cairn_mp_writer_init(&w, b);
    cairn_mp_write_map(&w, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        cairn_mp_write_str(&w, f[i].k, strlen(f[i].k));
        switch (f[i].type) {
        case 0: cairn_mp_write_uint(&w, f[i].u); break;
        case 1: cairn_mp_write_str(&w, f[i].s, f[i].u ? f[i].u : strlen(f[i].s)); break;
        case 2: cairn_mp_write_bin(&w, f[i].s, f[i].u); break;
        case 3: cairn_mp_write_bool(&w, f[i].u != 0); break;
        case 4: cairn_mp_write_map(&w, 0); break;
        case 5: cairn_mp_write_nil(&w); break;
        case 6: cairn_mp_write_int(&w, -1); break;
        }
    }
    if (tail)
        cairn_buf_append(b, tail, tail_len);
    assert_int_equal(w.err, CAIRN_OK);
}

static int decode_job_fields(const struct kvp *f, size_t n, const uint8_t *tail, size_t tail_len)
{
    struct cairn_buf b;
    struct coord_job_rec r;
    build(&b, f, n, tail, tail_len);
    int rc = coord_job_decode(b.data, b.len, "j/jb-0123456789abcdef", &r);
    if (rc == CAIRN_OK)
        coord_job_rec_release(&r);
    cairn_buf_release(&b);
    return rc;
}

static void test_hostile_fields(void **state)
{
    (void)state;
    char big[2000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    struct kvp good[] = {
        {"v", 0, 1, NULL},         {"id", 1, 0, "jb-0123456789abcdef"}, {"app", 1, 0, "a"},
        {"kind", 1, 0, "noop"},    {"req_id", 1, 0, "r"},              {"state", 0, 0, NULL},
        {"seq", 0, 5, NULL},       {"created", 0, 1, NULL},             {"params", 4, 0, NULL},
        {"future", 1, 0, "skip"},  /* unknown: skipped */
    };
    size_t ng = CAIRN_ARRAY_LEN(good);
    assert_int_equal(decode_job_fields(good, ng, NULL, 0), CAIRN_OK);

    struct {
        size_t idx;
        struct kvp bad;
        int want;
        const char *names;
    } cases[] = {
        {0, {"v", 0, 2, NULL}, CAIRN_EVERSION, "version 2"},
        {1, {"id", 1, 0, "jb-0123456789ABCDEF"}, CAIRN_ECORRUPT, "'id'"},
        {1, {"id", 1, 0, "jb-0123"}, CAIRN_ECORRUPT, "'id'"},
        {1, {"id", 0, 7, NULL}, CAIRN_ECORRUPT, "'id'"},
        {2, {"app", 1, 0, big}, CAIRN_ECORRUPT, "'app'"},
        {2, {"app", 1, 0, ""}, CAIRN_ECORRUPT, "'app'"},
        {3, {"kind", 1, 3, "a\0b"}, CAIRN_ECORRUPT, "NUL"},
        {5, {"state", 0, 4, NULL}, CAIRN_ECORRUPT, "'state'"},
        {5, {"state", 6, 0, NULL}, CAIRN_ECORRUPT, "'state'"},
        {6, {"seq", 1, 0, "5"}, CAIRN_ECORRUPT, "'seq'"},
        {7, {"created", 5, 0, NULL}, CAIRN_ECORRUPT, "'created'"},
        {8, {"params", 1, 0, "{}"}, CAIRN_ECORRUPT, "'params'"},
        {8, {"params", 5, 0, NULL}, CAIRN_ECORRUPT, "'params'"},
        {9, {"id", 1, 0, "jb-0123456789abcdef"}, CAIRN_ECORRUPT, "twice"},
        {9, {"err_msg", 1, 0, big}, CAIRN_ECORRUPT, "'err_msg'"},
        {9, {"err_code", 0, 1ull << 40, NULL}, CAIRN_ECORRUPT, "'err_code'"},
        {9, {"future", 4, 0, NULL}, CAIRN_OK, NULL},
    };
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(cases); i++) {
        struct kvp f[CAIRN_ARRAY_LEN(good)];
        memcpy(f, good, sizeof(good));
        f[cases[i].idx] = cases[i].bad;
        int rc = decode_job_fields(f, ng, NULL, 0);
        if (rc != cases[i].want)
            fail_msg("case %zu: got %s (%s)", i, cairn_err_name(rc), cairn_err_msg());
        if (cases[i].names && !strstr(cairn_err_msg(), cases[i].names))
            fail_msg("case %zu: message '%s' lacks %s", i, cairn_err_msg(), cases[i].names);
        if (rc != CAIRN_OK)
            assert_non_null(strstr(cairn_err_msg(), "'j/jb-0123456789abcdef'"));
    }
    /* every required field missing in turn */
    for (size_t drop = 0; drop < 9; drop++) {
        struct kvp f[CAIRN_ARRAY_LEN(good)];
        size_t n = 0;
        for (size_t i = 0; i < ng; i++)
            if (i != drop)
                f[n++] = good[i];
        int rc = decode_job_fields(f, n, NULL, 0);
        assert_int_equal(rc, CAIRN_ECORRUPT);
        assert_non_null(strstr(cairn_err_msg(), "is missing"));
    }
    /* running without a worker, failed without an error code */
    struct kvp f[CAIRN_ARRAY_LEN(good)];
    memcpy(f, good, sizeof(good));
    f[5].u = COORD_JOB_RUNNING;
    assert_int_equal(decode_job_fields(f, ng, NULL, 0), CAIRN_ECORRUPT);
    f[5].u = COORD_JOB_FAILED;
    assert_int_equal(decode_job_fields(f, ng, NULL, 0), CAIRN_ECORRUPT);
    /* trailing bytes, a map claiming more fields than there are, a non-map */
    static const uint8_t tail[] = {0x00};
    assert_int_equal(decode_job_fields(good, ng, tail, 1), CAIRN_ECORRUPT);
    static const uint8_t liar[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'v'};
    struct coord_job_rec r;
    assert_int_equal(coord_job_decode(liar, sizeof(liar), "j/x", &r), CAIRN_ECORRUPT);
    static const uint8_t arr[] = {0x91, 0x01};
    assert_int_equal(coord_job_decode(arr, sizeof(arr), "j/x", &r), CAIRN_ECORRUPT);
    assert_int_equal(coord_job_decode(NULL, 0, "j/x", &r), CAIRN_ECORRUPT);
    /* deeply nested params are refused by the skip bound, not by the stack */
    uint8_t deep[600];
    size_t dn = 0;
    for (int i = 0; i < 100; i++) {
        deep[dn++] = 0x81;
        deep[dn++] = 0xa1;
        deep[dn++] = 'k';
    }
    deep[dn++] = 0x80;
    struct cairn_buf b;
    build(&b, good, 8, NULL, 0); /* everything before params */
    b.data[0] = 0x89;            /* 9 fields: the 9th is ours */
    struct cairn_mp_writer w;
    cairn_mp_writer_init(&w, &b);
    cairn_mp_write_str(&w, "params", 6);
    cairn_buf_append(&b, deep, dn);
    assert_int_equal(coord_job_decode(b.data, b.len, "j/x", &r), CAIRN_ECORRUPT);
    cairn_buf_release(&b);
}

static void test_value_pack_unpack(void **state)
{
    (void)state;
    /* build a wire value with every kind, pack it, unpack it, compare by re-packing */
    struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
    struct cairn_mval *p = cairn_msg_set_map(m, "params");
    cairn_mval_put_u64(m, p, "u", UINT64_MAX);
    cairn_mval_put_i64(m, p, "i", -42);
    cairn_mval_put_bool(m, p, "b", true);
    cairn_mval_put_str(m, p, "s", "hello");
    cairn_mval_put_bin(m, p, "bin", "\x00\x01\x02", 3);
    struct cairn_mval *arr = cairn_mval_put_array(m, p, "arr");
    cairn_mval_push_u64(m, arr, 1);
    struct cairn_mval *inner = cairn_mval_push_map(m, arr);
    cairn_mval_put_str(m, inner, "deep", "x");
    assert_int_equal(cairn_msg_build_error(m), CAIRN_OK);
    struct cairn_buf b1, b2;
    cairn_buf_init(&b1, 1 << 20);
    cairn_buf_init(&b2, 1 << 20);
    assert_int_equal(coord_value_pack(cairn_msg_get(m, "params"), &b1), CAIRN_OK);
    struct cairn_msg *holder = NULL;
    const struct cairn_mval *v = NULL;
    assert_int_equal(coord_value_unpack(b1.data, b1.len, "params", &holder, &v), CAIRN_OK);
    assert_int_equal(coord_value_pack(v, &b2), CAIRN_OK);
    assert_int_equal(b1.len, b2.len);
    assert_memory_equal(b1.data, b2.data, b1.len);
    int64_t iv;
    assert_int_equal(cairn_mval_i64(cairn_mval_get(v, "i"), &iv), CAIRN_OK);
    assert_int_equal(iv, -42);
    cairn_msg_destroy(&holder);
    /* floats and nil, written by hand (a float 64 and a nil in a map) */
    static const uint8_t fl[] = {0x82, 0xa1, 'f', 0xcb, 0x40, 0x09, 0x21, 0xf9, 0xf0, 0x1b, 0x86, 0x6e,
                                 0xa1, 'n', 0xc0};
    assert_int_equal(coord_value_unpack(fl, sizeof(fl), "result", &holder, &v), CAIRN_OK);
    double d = 0;
    assert_int_equal(cairn_mval_f64(cairn_mval_get(v, "f"), &d), CAIRN_OK);
    assert_true(d > 3.14158 && d < 3.14160);
    cairn_buf_release(&b2);
    assert_int_equal(coord_value_pack(v, &b2), CAIRN_OK);
    assert_int_equal(b2.len, sizeof(fl));
    assert_memory_equal(b2.data, fl, sizeof(fl));
    cairn_msg_destroy(&holder);
    /* coord_value_set puts it into a message field */
    struct cairn_msg *r = cairn_msg_new(CAIRN_MSG_JOB_DISPATCH);
    assert_int_equal(coord_value_set(r, "params", b1.data, b1.len, "params"), CAIRN_OK);
    uint64_t u;
    assert_int_equal(cairn_mval_u64(cairn_mval_get(cairn_msg_get(r, "params"), "u"), &u), CAIRN_OK);
    assert_true(u == UINT64_MAX);
    cairn_msg_destroy(&r);

    /* outside the wire model: not a map, trailing bytes, a truncated value, an int key, too deep */
    static const uint8_t notmap[] = {0x91, 0x01};
    static const uint8_t trailing[] = {0x80, 0x80};
    static const uint8_t trunc[] = {0x81, 0xa1, 'k'};
    static const uint8_t intkey[] = {0x81, 0x01, 0x01};
    uint8_t deep[64];
    size_t dn = 0;
    for (int i = 0; i < 8; i++) {
        deep[dn++] = 0x81;
        deep[dn++] = 0xa1;
        deep[dn++] = 'k';
    }
    deep[dn++] = 0x80;
    const uint8_t *bad[] = {notmap, trailing, trunc, intkey, deep};
    size_t lens[] = {sizeof(notmap), sizeof(trailing), sizeof(trunc), sizeof(intkey), dn};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(bad); i++) {
        int rc = coord_value_unpack(bad[i], lens[i], "result of job 'x'", &holder, &v);
        if (rc != CAIRN_ECORRUPT)
            fail_msg("bad value %zu: %s", i, cairn_err_name(rc));
        assert_null(holder);
        assert_non_null(strstr(cairn_err_msg(), "result of job 'x'"));
    }
    cairn_buf_release(&b1);
    cairn_buf_release(&b2);
    cairn_msg_destroy(&m);
}


/* ---- image, sandbox, upload records (issue 4) ---------------------------------------------------- */

static void image_sample(struct coord_image_rec *r)
{
    memset(r, 0, sizeof(*r));
    memcpy(r->id, "im-0123456789abcdef", 20);
    snprintf(r->app, sizeof(r->app), "app1");
    memcpy(r->kind, "fs", 3);
    r->name = cairn_strdup("my image");
    memcpy(r->parent, "im-00000000000000aa", 20);
    memcpy(r->origin, "im-00000000000000aa", 20);
    r->depth = 3;
    r->manifest_len = 9999;
    r->manifest_size = 72;
    r->manifest = cairn_malloc(72);
    memset(r->manifest, 0x5a, 72);
    memset(r->domain, 0x11, 16);
    r->state = COORD_IMAGE_READY;
    r->created_ns = 1700000000000000000ll;
    r->last_used_ns = 1700000000000000001ll;
    r->expires_ns = 1700000060000000000ll;
    snprintf(r->retention, sizeof(r->retention), "ttl:60");
    r->size = 1;
    r->files = 2;
    r->stored = 3;
    memcpy(r->job, "jb-00000000000000ff", 20);
}

static void sandbox_sample(struct coord_sandbox_rec *r, bool failed)
{
    memset(r, 0, sizeof(*r));
    memcpy(r->id, "sb-0123456789abcdef", 20);
    snprintf(r->app, sizeof(r->app), "app1");
    snprintf(r->worker, sizeof(r->worker), "w1");
    memcpy(r->image, "im-0123456789abcdef", 20);
    memset(r->runtime_id, 'a', 32);
    r->state = failed ? COORD_SBX_FAILED : COORD_SBX_RUNNING;
    r->created_ns = 5;
    r->updated_ns = 6;
    static const uint8_t cmd[] = {0x92, 0xa2, 's', 'h', 0xa0}; /* ["sh", ""] */
    r->cmd = cairn_memdup(cmd, sizeof(cmd));
    r->cmd_len = sizeof(cmd);
    r->enable_snapshot = true;
    memcpy(r->job, "jb-00000000000000ff", 20);
    if (failed) {
        r->err_code = CAIRN_EUNAVAILABLE;
        r->err_msg = cairn_strdup("worker 'w1' died");
    }
    static const uint8_t rep[] = {0x81, 0xa1, 'x', 0x07}; /* {"x": 7} */
    r->report = cairn_memdup(rep, sizeof(rep));
    r->report_len = sizeof(rep);
}

typedef int (*dec_fn)(const uint8_t *, size_t, const char *, void *);
typedef void (*rel_fn)(void *);
static int dec_image(const uint8_t *p, size_t n, const char *k, void *r) { return coord_image_decode(p, n, k, r); }
static int dec_sandbox(const uint8_t *p, size_t n, const char *k, void *r) { return coord_sandbox_decode(p, n, k, r); }
static int dec_upload(const uint8_t *p, size_t n, const char *k, void *r) { return coord_upload_decode(p, n, k, r); }
static void rel_image(void *r) { coord_image_rec_release(r); }
static void rel_sandbox(void *r) { coord_sandbox_rec_release(r); }
static void rel_upload(void *r) { coord_upload_rec_release(r); }

/* Every truncation refused naming the key; byte flips never crash (ASan) and are refused or valid. */
static void hostile(const uint8_t *enc, size_t len, dec_fn dec, rel_fn rel, void *scratch)
{
    for (size_t n = 0; n < len; n++) {
        int rc = dec(enc, n, "x/key", scratch);
        assert_true(rc == CAIRN_ECORRUPT || rc == CAIRN_EVERSION);
        assert_non_null(strstr(cairn_err_msg(), "'x/key'"));
    }
    uint8_t *mut = malloc(len);
    for (size_t pos = 0; pos < len; pos++)
        for (int v = 0; v < 256; v += 5) {
            memcpy(mut, enc, len);
            mut[pos] = (uint8_t)v;
            int rc = dec(mut, len, "x/key", scratch);
            if (rc == CAIRN_OK)
                rel(scratch);
            else
                assert_true(rc == CAIRN_ECORRUPT || rc == CAIRN_EVERSION || rc == CAIRN_ENOMEM);
        }
    free(mut);
}

static void test_object_records(void **state)
{
    (void)state;
    struct cairn_buf b;
    cairn_buf_init(&b, 1 << 20);

    /* image: round trip, copy, hostile */
    struct coord_image_rec im, ib, ic;
    image_sample(&im);
    assert_int_equal(coord_image_encode(&im, &b), CAIRN_OK);
    assert_int_equal(coord_image_decode(b.data, b.len, "i/im-0123456789abcdef", &ib), CAIRN_OK);
    assert_string_equal(ib.id, im.id);
    assert_string_equal(ib.kind, "fs");
    assert_string_equal(ib.name, "my image");
    assert_string_equal(ib.parent, im.parent);
    assert_string_equal(ib.origin, im.origin);
    assert_int_equal(ib.depth, 3);
    assert_int_equal(ib.manifest_len, 9999);
    assert_int_equal(ib.manifest_size, 72);
    assert_memory_equal(ib.manifest, im.manifest, 72);
    assert_memory_equal(ib.domain, im.domain, 16);
    assert_int_equal(ib.state, COORD_IMAGE_READY);
    assert_int_equal(ib.expires_ns, im.expires_ns);
    assert_string_equal(ib.retention, "ttl:60");
    assert_string_equal(ib.job, im.job);
    assert_int_equal(coord_image_rec_copy(&ic, &ib), CAIRN_OK);
    assert_ptr_not_equal(ic.manifest, ib.manifest);
    assert_memory_equal(ic.manifest, im.manifest, 72);
    coord_image_rec_release(&ic);
    coord_image_rec_release(&ib);
    hostile(b.data, b.len, dec_image, rel_image, &ib);
    cairn_buf_release(&b);
    /* a pending base without name or manifest */
    coord_image_rec_release(&im);
    memset(&im, 0, sizeof(im));
    memcpy(im.id, "im-0123456789abcdef", 20);
    snprintf(im.app, sizeof(im.app), "app1");
    memcpy(im.kind, "base", 5);
    im.depth = 1;
    im.state = COORD_IMAGE_PENDING;
    assert_int_equal(coord_image_encode(&im, &b), CAIRN_OK);
    assert_int_equal(coord_image_decode(b.data, b.len, "i/x", &ib), CAIRN_OK);
    assert_null(ib.name);
    assert_string_equal(ib.parent, "");
    assert_string_equal(ib.retention, "never");
    coord_image_rec_release(&ib);
    cairn_buf_release(&b);
    /* lies: a ready image without a layer, a manifest that is not 36-byte entries, a bad id */
    im.state = COORD_IMAGE_READY;
    assert_int_equal(coord_image_encode(&im, &b), CAIRN_OK);
    assert_int_equal(coord_image_decode(b.data, b.len, "i/x", &ib), CAIRN_ECORRUPT);
    assert_non_null(strstr(cairn_err_msg(), "manifest"));
    cairn_buf_release(&b);
    im.manifest = cairn_malloc(35);
    memset(im.manifest, 0, 35);
    im.manifest_size = 35;
    assert_int_equal(coord_image_encode(&im, &b), CAIRN_OK);
    assert_int_equal(coord_image_decode(b.data, b.len, "i/x", &ib), CAIRN_ECORRUPT);
    cairn_buf_release(&b);
    coord_image_rec_release(&im);
    memcpy(im.id, "sb-0123456789abcdef", 20);
    assert_int_equal(coord_image_encode(&im, &b), CAIRN_OK);
    assert_int_equal(coord_image_decode(b.data, b.len, "i/x", &ib), CAIRN_ECORRUPT);
    assert_non_null(strstr(cairn_err_msg(), "'id'"));
    cairn_buf_release(&b);

    /* sandbox */
    struct coord_sandbox_rec sb, sbb, sbc;
    for (int failed = 0; failed < 2; failed++) {
        sandbox_sample(&sb, failed);
        assert_int_equal(coord_sandbox_encode(&sb, &b), CAIRN_OK);
        assert_int_equal(coord_sandbox_decode(b.data, b.len, "s/sb-0123456789abcdef", &sbb), CAIRN_OK);
        assert_string_equal(sbb.id, sb.id);
        assert_string_equal(sbb.worker, "w1");
        assert_string_equal(sbb.runtime_id, sb.runtime_id);
        assert_int_equal(sbb.state, sb.state);
        assert_int_equal(sbb.cmd_len, sb.cmd_len);
        assert_memory_equal(sbb.cmd, sb.cmd, sb.cmd_len);
        assert_true(sbb.enable_snapshot);
        assert_int_equal(sbb.report_len, sb.report_len);
        if (failed) {
            assert_int_equal(sbb.err_code, CAIRN_EUNAVAILABLE);
            assert_string_equal(sbb.err_msg, "worker 'w1' died");
        } else {
            assert_null(sbb.err_msg);
        }
        assert_int_equal(coord_sandbox_rec_copy(&sbc, &sbb), CAIRN_OK);
        assert_memory_equal(sbc.report, sb.report, sb.report_len);
        coord_sandbox_rec_release(&sbc);
        coord_sandbox_rec_release(&sbb);
        hostile(b.data, b.len, dec_sandbox, rel_sandbox, &sbb);
        cairn_buf_release(&b);
        coord_sandbox_rec_release(&sb);
    }
    /* lies: running without a worker, a runtime id that is not hex */
    sandbox_sample(&sb, false);
    sb.worker[0] = '\0';
    assert_int_equal(coord_sandbox_encode(&sb, &b), CAIRN_OK);
    assert_int_equal(coord_sandbox_decode(b.data, b.len, "s/x", &sbb), CAIRN_ECORRUPT);
    cairn_buf_release(&b);
    snprintf(sb.worker, sizeof(sb.worker), "w1");
    sb.runtime_id[5] = 'Z';
    assert_int_equal(coord_sandbox_encode(&sb, &b), CAIRN_OK);
    assert_int_equal(coord_sandbox_decode(b.data, b.len, "s/x", &sbb), CAIRN_ECORRUPT);
    assert_non_null(strstr(cairn_err_msg(), "runtime_id"));
    cairn_buf_release(&b);
    coord_sandbox_rec_release(&sb);

    /* upload */
    struct coord_upload_rec up = {0}, ub;
    snprintf(up.app, sizeof(up.app), "app1");
    snprintf(up.upload, sizeof(up.upload), "client/upload 1");
    memcpy(up.job, "jb-00000000000000ff", 20);
    memcpy(up.image, "im-0123456789abcdef", 20);
    up.name = cairn_strdup("default");
    snprintf(up.format, sizeof(up.format), "tar");
    up.has_size = true;
    up.size = 1ull << 40;
    up.created_ns = up.updated_ns = 9;
    assert_int_equal(coord_upload_encode(&up, &b), CAIRN_OK);
    assert_int_equal(coord_upload_decode(b.data, b.len, "u/app1/client/upload 1", &ub), CAIRN_OK);
    assert_string_equal(ub.upload, up.upload);
    assert_string_equal(ub.name, "default");
    assert_string_equal(ub.format, "tar");
    assert_true(ub.has_size);
    assert_int_equal(ub.size, 1ull << 40);
    coord_upload_rec_release(&ub);
    hostile(b.data, b.len, dec_upload, rel_upload, &ub);
    cairn_buf_release(&b);
    coord_upload_rec_release(&up);

    /* keys */
    char key[COORD_KEY_MAX];
    assert_int_equal(coord_key_image(key, "im-0123456789abcdef"), 21);
    assert_string_equal(key, "i/im-0123456789abcdef");
    char name[129];
    memset(name, 'n', 128);
    name[128] = '\0';
    char app[65];
    memset(app, 'a', 64);
    app[64] = '\0';
    assert_int_equal(coord_key_name(key, app, name), 2 + 64 + 1 + 128);
    assert_true(coord_obj_id_valid("sb-0123456789abcdef", 19, "sb-"));
    assert_false(coord_obj_id_valid("sb-0123456789abcdeF", 19, "sb-"));
    assert_false(coord_obj_id_valid("im-0123456789abcdef", 19, "sb-"));
}

static void test_vec(void **state)
{
    (void)state;
    struct coord_vec v = {0};
    enum { N = 3000 };
    char (*ids)[20] = calloc(N, sizeof(*ids));
    uint64_t seed = 3;
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof(ids[i]), "sb-%016llx", (unsigned long long)tu_rand(&seed));
        assert_int_equal(coord_vec_insert(&v, ids[i], ids[i]), CAIRN_OK);
    }
    assert_int_equal(v.n, N);
    for (size_t i = 1; i < v.n; i++)
        assert_true(strcmp(v.v[i - 1].id, v.v[i].id) < 0);
    /* replace keeps one entry */
    assert_int_equal(coord_vec_insert(&v, ids[7], ids[7]), CAIRN_OK);
    assert_int_equal(v.n, N);
    /* after: strictly greater, also for ids not in the vector */
    size_t i = coord_vec_after(&v, v.v[10].id);
    assert_int_equal(i, 11);
    assert_int_equal(coord_vec_after(&v, NULL), 0);
    assert_int_equal(coord_vec_after(&v, "sb-"), 0);
    assert_int_equal(coord_vec_after(&v, "sb-g"), N);
    for (int k = 0; k < N; k += 2)
        coord_vec_remove(&v, ids[k]);
    coord_vec_remove(&v, "sb-nothere");
    assert_int_equal(v.n, N / 2);
    for (size_t k = 1; k < v.n; k++)
        assert_true(strcmp(v.v[k - 1].id, v.v[k].id) < 0);
    coord_vec_release(&v);
    coord_vec_release(&v);
    free(ids);
}

static void test_map(void **state)
{
    (void)state;
    struct coord_map m;
    coord_map_init(&m);
    enum { N = 20000 };
    char (*keys)[24] = calloc(N, sizeof(*keys));
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "jb-%016x", i * 2654435761u);
        assert_int_equal(coord_map_sput(&m, keys[i], keys[i]), CAIRN_OK);
    }
    assert_int_equal(coord_map_count(&m), N);
    for (int round = 0; round < 3; round++) {
        for (int i = round; i < N; i += 3)
            assert_ptr_equal(coord_map_sdel(&m, keys[i]), keys[i]);
        for (int i = 0; i < N; i++)
            assert_ptr_equal(coord_map_sget(&m, keys[i]), (i % 3) == round ? NULL : keys[i]);
        for (int i = round; i < N; i += 3)
            assert_int_equal(coord_map_sput(&m, keys[i], keys[i]), CAIRN_OK);
    }
    assert_int_equal(coord_map_count(&m), N);
    size_t pos = 0, seen = 0;
    const void *k;
    size_t kl;
    void *v;
    while (coord_map_next(&m, &pos, &k, &kl, &v)) {
        assert_ptr_equal(k, v);
        seen++;
    }
    assert_int_equal(seen, N);
    /* 8-byte binary keys (dispatch rids) */
    uint64_t rid = 77;
    assert_int_equal(coord_map_put(&m, &rid, sizeof(rid), &rid), CAIRN_OK);
    uint64_t probe = 77;
    assert_ptr_equal(coord_map_get(&m, &probe, sizeof(probe)), &rid);
    assert_null(coord_map_get(&m, "nope", 4));
    assert_null(coord_map_del(&m, "nope", 4));
    coord_map_release(&m);
    coord_map_release(&m);
    free(keys);
}

static void test_store_reopen(void **state)
{
    (void)state;
    char *dir = tu_tempdir("coord_meta");
    const char *data = tu_path("%s/data", dir);
    struct cairn_kv *kv = NULL;
    assert_int_equal(coord_meta_open(&kv, data), CAIRN_OK);
    struct coord_app_rec a = {.created_ns = 9};
    snprintf(a.name, sizeof(a.name), "app1");
    assert_int_equal(coord_meta_put_app(kv, &a), CAIRN_OK);
    struct coord_job_rec j;
    job_sample(&j, false);
    struct cairn_kv_batch *b = NULL;
    assert_int_equal(cairn_kv_batch_new(&b), CAIRN_OK);
    assert_int_equal(coord_meta_batch_job(b, &j), CAIRN_OK);
    assert_int_equal(cairn_kv_batch_commit(kv, b), CAIRN_OK);
    cairn_kv_batch_destroy(&b);
    assert_int_equal(coord_meta_put_u64(kv, COORD_KEY_EPOCH, 41), CAIRN_OK);
    assert_int_equal(coord_meta_put_i64(kv, COORD_KEY_CLOCK, -7), CAIRN_OK);
    char key[COORD_KEY_MAX];
    size_t kl = coord_key_req(key, "app1", "r1");
    assert_string_equal(key, "r/app1/r1");
    struct cairn_buf idv;
    cairn_buf_init(&idv, 64);
    coord_str_encode(j.id, &idv);
    assert_int_equal(cairn_kv_put(kv, key, kl, idv.data, idv.len), CAIRN_OK);
    cairn_buf_release(&idv);
    cairn_kv_close(&kv);
    assert_null(kv);

    assert_int_equal(coord_meta_open(&kv, data), CAIRN_OK);
    struct coord_job_rec back;
    assert_int_equal(coord_meta_get_job(kv, j.id, &back), CAIRN_OK);
    assert_string_equal(back.req_id, j.req_id);
    coord_job_rec_release(&back);
    assert_int_equal(coord_meta_get_job(kv, "jb-ffffffffffffffff", &back), CAIRN_ENOTFOUND);
    uint64_t e;
    int64_t c;
    assert_int_equal(coord_meta_get_u64(kv, COORD_KEY_EPOCH, &e), CAIRN_OK);
    assert_int_equal(e, 41);
    assert_int_equal(coord_meta_get_i64(kv, COORD_KEY_CLOCK, &c), CAIRN_OK);
    assert_int_equal(c, -7);
    char id[COORD_JOB_ID_LEN + 1];
    assert_int_equal(coord_meta_get_req(kv, "app1", "r1", id), CAIRN_OK);
    assert_string_equal(id, j.id);
    assert_int_equal(coord_meta_get_req(kv, "app1", "r2", id), CAIRN_ENOTFOUND);
    /* a damaged job record is ECORRUPT naming its key */
    size_t jkl = coord_key_job(key, j.id);
    assert_int_equal(cairn_kv_put(kv, key, jkl, "\x81\xa1v", 3), CAIRN_OK);
    assert_int_equal(coord_meta_get_job(kv, j.id, &back), CAIRN_ECORRUPT);
    assert_non_null(strstr(cairn_err_msg(), "'j/jb-0123456789abcdef'"));
    /* an index entry that is not a job id */
    assert_int_equal(cairn_kv_put(kv, "r/app1/r3", 9, "\xa3xyz", 4), CAIRN_OK);
    assert_int_equal(coord_meta_get_req(kv, "app1", "r3", id), CAIRN_ECORRUPT);
    /* a store of a future layout is refused */
    assert_int_equal(coord_meta_put_u64(kv, COORD_KEY_SCHEMA, 99), CAIRN_OK);
    cairn_kv_close(&kv);
    assert_int_equal(coord_meta_open(&kv, data), CAIRN_EVERSION);
    assert_null(kv);
    coord_job_rec_release(&j);

    /* key helpers */
    assert_int_equal(coord_key_queue(key, 0x1f), 18);
    assert_string_equal(key, "q/000000000000001f");
    char pr[64];
    coord_key_printable(pr, sizeof(pr), (const uint8_t *)"a/\x01'x", 5);
    assert_string_equal(pr, "a/\\x01\\x27x");
    assert_true(coord_app_name_valid("a-b.c_d9", 8));
    assert_false(coord_app_name_valid("_admin", 6));
    assert_false(coord_app_name_valid("A", 1));
    assert_true(coord_job_id_valid("jb-0123456789abcdef", 19));
    assert_false(coord_job_id_valid("jb-0123456789abcdeg", 19));
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    cairn_log_set_level(CAIRN_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_job_roundtrip),
        cmocka_unit_test(test_app_worker_roundtrip),
        cmocka_unit_test(test_hostile_mutations),
        cmocka_unit_test(test_hostile_fields),
        cmocka_unit_test(test_value_pack_unpack),
        cmocka_unit_test(test_map),
        cmocka_unit_test(test_object_records),
        cmocka_unit_test(test_vec),
        cmocka_unit_test(test_store_reopen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
