/* test_err.c: the error table is stable, messages are per thread, buffers respect their limits. */
#include "testutil.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void test_codes_are_stable(void **state)
{
    (void)state;
    /* numbers cross the wire: pin them */
    assert_int_equal(CAIRN_OK, 0);
    assert_int_equal(CAIRN_EINVAL, 1);
    assert_int_equal(CAIRN_ECORRUPT, 4);
    assert_int_equal(CAIRN_ENOTFOUND, 5);
    assert_int_equal(CAIRN_EKEY, 8);
    assert_int_equal(CAIRN_EEXPIRED, 17);
    assert_int_equal(CAIRN_EINTERNAL, 20);
    assert_string_equal(cairn_err_name(CAIRN_ECORRUPT), "ECORRUPT");
    assert_string_equal(cairn_err_name(9999), "EUNKNOWN");
    assert_string_equal(cairn_strerror(CAIRN_ENOTFOUND), "not found");
    for (int i = 0; i < CAIRN_ERR__STABLE_LIMIT; i++)
        assert_string_not_equal(cairn_err_name(i), "EUNKNOWN");
}

static void *other_thread(void *arg)
{
    (void)arg;
    cairn_err_set(CAIRN_EIO, "thread message");
    return NULL;
}

static void test_message_per_thread(void **state)
{
    (void)state;
    assert_int_equal(cairn_err_set(CAIRN_ECORRUPT, "chunk %s bad", "ab12"), CAIRN_ECORRUPT);
    pthread_t t;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, NULL);
    assert_string_equal(cairn_err_msg(), "chunk ab12 bad");
    assert_int_equal(cairn_err_code(), CAIRN_ECORRUPT);
    /* adding context to the previous message, with the message itself as an argument */
    cairn_err_set(CAIRN_EIO, "snapshot 'x': %s", cairn_err_msg());
    assert_string_equal(cairn_err_msg(), "snapshot 'x': chunk ab12 bad");
    cairn_err_clear();
    assert_string_equal(cairn_err_msg(), "");
}

static void test_buf_limit(void **state)
{
    (void)state;
    struct cairn_buf b;
    cairn_buf_init(&b, 10);
    assert_int_equal(cairn_buf_append(&b, "0123456789", 10), CAIRN_OK);
    assert_int_equal(cairn_buf_append(&b, "x", 1), CAIRN_ETOOBIG);
    assert_int_equal(b.len, 10);
    cairn_buf_release(&b);
}

static void test_hex(void **state)
{
    (void)state;
    uint8_t in[3] = {0x00, 0xab, 0xff}, out[3];
    char hex[7];
    cairn_hex_encode(hex, in, 3);
    assert_string_equal(hex, "00abff");
    assert_int_equal(cairn_hex_decode(out, 3, "00ABff"), CAIRN_OK);
    assert_memory_equal(in, out, 3);
    assert_int_equal(cairn_hex_decode(out, 3, "00abfg"), CAIRN_EINVAL);
    assert_int_equal(cairn_hex_decode(out, 3, "00ab"), CAIRN_EINVAL);
}

static void test_atomic_replace(void **state)
{
    (void)state;
    char *dir = tu_tempdir("err");
    const char *p = tu_path("%s/key", dir);
    assert_int_equal(cairn_file_replace_atomic(p, "secret1", 7, 0600), CAIRN_OK);
    assert_int_equal(cairn_file_replace_atomic(p, "second", 6, 0600), CAIRN_OK);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    uint8_t *data;
    size_t n;
    assert_int_equal(cairn_file_read_all(p, 100, &data, &n), CAIRN_OK);
    assert_int_equal(n, 6);
    assert_memory_equal(data, "second", 6);
    cairn_free(data);
    assert_int_equal(cairn_file_read_all(p, 3, &data, &n), CAIRN_ETOOBIG);
    assert_int_equal(cairn_file_read_all(tu_path("%s/missing", dir), 3, &data, &n), CAIRN_ENOTFOUND);
    assert_non_null(strstr(cairn_err_msg(), "missing"));
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_are_stable),
        cmocka_unit_test(test_message_per_thread),
        cmocka_unit_test(test_buf_limit),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_atomic_replace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
