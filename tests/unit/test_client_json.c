/*
 * test_client_json.c: the JSON writers behind `cairn --json` and job results
 * (client/client_json.h), and the job params builder of libcairn.
 *
 * - Strings: quotes, backslashes and every control character are escaped;
 *   well-formed UTF-8 passes through; malformed UTF-8 (stray continuation
 *   bytes, overlongs, surrogates, truncated sequences, > U+10FFFF) becomes
 *   \ufffd; U+2028/2029 are escaped; embedded NUL bytes survive as \u0000.
 * - Decoded msgpack values (a real message, encoded and decoded) become JSON
 *   with maps in wire order, bin as hex, nested arrays.
 * - cairn_params_parse_kv types values as the CLI documents, and the params
 *   reach the wire as a msgpack map (checked by encoding a job.submit).
 */
#include "testutil.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/cairn.h"
#include "cairn/err.h"
#include "cairn/proto.h"
#include "client_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* JSON of a string of n bytes; caller frees. */
static char *jstr(const char *s, size_t n)
{
    struct cairn_buf b;
    cairn_buf_init(&b, 0);
    assert_int_equal(cairn__json_str(&b, s, n), CAIRN_OK);
    assert_int_equal(cairn__json_finish(&b), CAIRN_OK);
    char *out = strdup((char *)b.data);
    cairn_buf_release(&b);
    return out;
}

static void expect_str(const char *in, size_t n, const char *want)
{
    char *got = jstr(in, n);
    if (strcmp(got, want))
        fail_msg("json of %zu bytes: got %s want %s", n, got, want);
    free(got);
}

static void test_escapes(void **state)
{
    (void)state;
    expect_str("plain", 5, "\"plain\"");
    expect_str("", 0, "\"\"");
    expect_str("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
    expect_str("\n\r\t\b\f", 5, "\"\\n\\r\\t\\b\\f\"");
    expect_str("\x01\x1f\x7f", 3, "\"\\u0001\\u001f\x7f\"");
    expect_str("a\0b", 3, "\"a\\u0000b\"");
    expect_str("/", 1, "\"/\"");
}

static void test_utf8(void **state)
{
    (void)state;
    expect_str("\xc3\xa9t\xc3\xa9", 5, "\"\xc3\xa9t\xc3\xa9\"");         /* été */
    expect_str("\xe2\x82\xac", 3, "\"\xe2\x82\xac\"");                     /* € */
    expect_str("\xf0\x9f\x98\x80", 4, "\"\xf0\x9f\x98\x80\"");             /* emoji */
    expect_str("\x80", 1, "\"\\ufffd\"");                                  /* stray continuation */
    expect_str("\xc0\xaf", 2, "\"\\ufffd\\ufffd\"");                       /* overlong '/' */
    expect_str("\xe0\x80\xaf", 3, "\"\\ufffd\\ufffd\\ufffd\"");            /* overlong, 3 bytes */
    expect_str("\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\"");            /* surrogate D800 */
    expect_str("\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); /* > U+10FFFF */
    expect_str("\xe2\x82", 2, "\"\\ufffd\\ufffd\"");                       /* truncated */
    expect_str("ok\xff", 3, "\"ok\\ufffd\"");
    expect_str("\xe2\x80\xa8|\xe2\x80\xa9", 7, "\"\\u2028|\\u2029\"");
}

static void test_cstr_null_and_numbers(void **state)
{
    (void)state;
    struct cairn_buf b;
    cairn_buf_init(&b, 0);
    assert_int_equal(cairn__json_raw(&b, "{"), CAIRN_OK);
    assert_int_equal(cairn__json_key(&b, "a", true), CAIRN_OK);
    assert_int_equal(cairn__json_cstr(&b, NULL), CAIRN_OK);
    assert_int_equal(cairn__json_key(&b, "u", false), CAIRN_OK);
    assert_int_equal(cairn__json_u64(&b, UINT64_MAX), CAIRN_OK);
    assert_int_equal(cairn__json_key(&b, "i", false), CAIRN_OK);
    assert_int_equal(cairn__json_i64(&b, INT64_MIN), CAIRN_OK);
    assert_int_equal(cairn__json_raw(&b, "}"), CAIRN_OK);
    assert_int_equal(cairn__json_finish(&b), CAIRN_OK);
    assert_string_equal((char *)b.data, "{\"a\":null,\"u\":18446744073709551615,\"i\":-9223372036854775808}");
    cairn_buf_release(&b);

    /* the buffer's limit is honoured */
    cairn_buf_init(&b, 8);
    assert_int_equal(cairn__json_str(&b, "0123456789", 10), CAIRN_ETOOBIG);
    cairn_buf_release(&b);
}

/* Encode then decode m, so values are read back the way a client sees a reply. */
static struct cairn_msg *roundtrip(struct cairn_msg *m)
{
    uint8_t *env = NULL;
    size_t len = 0;
    int rc = cairn_msg_encode(m, &env, &len);
    if (rc != CAIRN_OK)
        fail_msg("encode: %s", cairn_err_msg());
    const uint8_t *frames[1] = {env};
    size_t lens[1] = {len};
    struct cairn_msg *d = NULL;
    assert_int_equal(cairn_msg_decode(frames, lens, 1, &d), CAIRN_OK);
    cairn_free(env);
    return d;
}

static void test_mval(void **state)
{
    (void)state;
    struct cairn_msg *req = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
    assert_non_null(req);
    struct cairn_msg *m = cairn_msg_reply(req, CAIRN_OK, NULL);
    assert_non_null(m);
    cairn_msg_set_str(m, "job", "jb-0123456789abcdef");
    cairn_msg_set_str(m, "state", "succeeded");
    struct cairn_mval *res = cairn_msg_set_map(m, "result");
    cairn_mval_put_str(m, res, "worker", "w\"1");
    cairn_mval_put_u64(m, res, "chunks", 42);
    cairn_mval_put_i64(m, res, "neg", -5);
    cairn_mval_put_bool(m, res, "ok", true);
    cairn_mval_put_bin(m, res, "domain", "\x00\xff\x10", 3);
    struct cairn_mval *arr = cairn_mval_put_array(m, res, "ids");
    cairn_mval_push_str(m, arr, "a");
    cairn_mval_push_bool(m, arr, false);
    struct cairn_mval *inner = cairn_mval_push_map(m, arr);
    cairn_mval_put_u64(m, inner, "x", 1);
    struct cairn_msg *d = roundtrip(m);

    struct cairn_buf b;
    cairn_buf_init(&b, 0);
    assert_int_equal(cairn__json_mval(&b, cairn_msg_get(d, "result")), CAIRN_OK);
    assert_int_equal(cairn__json_finish(&b), CAIRN_OK);
    assert_string_equal((char *)b.data, "{\"worker\":\"w\\\"1\",\"chunks\":42,\"neg\":-5,\"ok\":true,"
                                        "\"domain\":\"00ff10\",\"ids\":[\"a\",false,{\"x\":1}]}");
    cairn_buf_release(&b);

    cairn_buf_init(&b, 0);
    assert_int_equal(cairn__json_mval(&b, NULL), CAIRN_OK);
    assert_int_equal(cairn__json_finish(&b), CAIRN_OK);
    assert_string_equal((char *)b.data, "null");
    cairn_buf_release(&b);

    cairn_msg_destroy(&d);
    cairn_msg_destroy(&m);
    cairn_msg_destroy(&req);
    assert_null(req);
}

static void test_params(void **state)
{
    (void)state;
    struct cairn_params *p = cairn_params_new();
    assert_non_null(p);
    assert_int_equal(cairn_params_parse_kv(p, "bytes=1048576", false), CAIRN_OK);
    assert_int_equal(cairn_params_parse_kv(p, "seed=-7", false), CAIRN_OK);
    assert_int_equal(cairn_params_parse_kv(p, "flag=true", false), CAIRN_OK);
    assert_int_equal(cairn_params_parse_kv(p, "ids=[ab,cd,]", false), CAIRN_OK);
    assert_int_equal(cairn_params_parse_kv(p, "none=[]", false), CAIRN_OK);
    assert_int_equal(cairn_params_parse_kv(p, "name=x=y", false), CAIRN_OK);
    assert_int_equal(cairn_params_parse_kv(p, "num=123", true), CAIRN_OK);
    assert_int_equal(cairn_params_parse_kv(p, "bytes=2", false), CAIRN_OK); /* replaces */
    assert_int_equal(cairn_params_count(p), 7);
    assert_int_equal(cairn_params_parse_kv(p, "novalue", false), CAIRN_EINVAL);
    assert_int_equal(cairn_params_parse_kv(p, "=v", false), CAIRN_EINVAL);
    assert_int_equal(cairn_params_parse_kv(p, "big=99999999999999999999", false), CAIRN_EINVAL);
    assert_int_equal(cairn_params_set_str(p, "", "v"), CAIRN_EINVAL);

    /* build the wire map the way libcairn does: through a job.submit, encoded and decoded */
    struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
    cairn_msg_set_app(m, "default");
    cairn_msg_set_token(m, "0123456789abcdef", 16);
    cairn_msg_set_str(m, "kind", "noop");
    cairn_msg_set_str(m, "req_id", "rq-1");
    struct cairn_mval *map = cairn_msg_set_map(m, "params");
    cairn_mval_put_u64(m, map, "bytes", 2);
    struct cairn_msg *d = roundtrip(m);
    assert_non_null(cairn_msg_get(d, "params"));
    cairn_msg_destroy(&d);
    cairn_msg_destroy(&m);

    /* limits */
    char key[300];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    assert_int_equal(cairn_params_set_u64(p, key, 1), CAIRN_EINVAL);
    for (int i = 0; i < 300; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%d", i);
        int rc = cairn_params_set_u64(p, k, (uint64_t)i);
        if (rc != CAIRN_OK) {
            assert_int_equal(rc, CAIRN_EINVAL);
            assert_int_equal(cairn_params_count(p), 256);
            break;
        }
    }
    assert_int_equal(cairn_params_count(p), 256);
    cairn_params_destroy(&p);
    assert_null(p);
    cairn_params_destroy(&p); /* NULL-safe */
}

static void test_job_state_names(void **state)
{
    (void)state;
    assert_string_equal(cairn_job_state_name(CAIRN_JOB_QUEUED), "queued");
    assert_string_equal(cairn_job_state_name(CAIRN_JOB_FAILED), "failed");
    assert_string_equal(cairn_job_state_name((enum cairn_job_state)99), "unknown");
    struct cairn_job j;
    memset(&j, 0, sizeof(j));
    j.state = CAIRN_JOB_RUNNING;
    assert_false(cairn_job_finished(&j));
    j.state = CAIRN_JOB_SUCCEEDED;
    assert_true(cairn_job_finished(&j));
    assert_false(cairn_job_finished(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_cstr_null_and_numbers),
        cmocka_unit_test(test_mval),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_job_state_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
