/* test_config.c: the option table (file, flags, defaults, errors), durations, the test clock and rendezvous placement. */
#include "testutil.h"

#include "cairn/clock.h"
#include "cairn/config.h"
#include "cairn/err.h"
#include "cairn/placement.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cfg {
    char *name;
    uint64_t count;
    uint64_t timeout_ms;
    bool verbose;
};

static const struct cairn_opt table[] = {
    {"name", CAIRN_OPT_STR, offsetof(struct cfg, name), "node", 0, 0, "node name"},
    {"count", CAIRN_OPT_UINT, offsetof(struct cfg, count), "3", 1, 10, "how many"},
    {"timeout", CAIRN_OPT_DURATION, offsetof(struct cfg, timeout_ms), "5s", 1, 0, "how long"},
    {"verbose", CAIRN_OPT_BOOL, offsetof(struct cfg, verbose), "false", 0, 0, "chatty"},
};
#define N CAIRN_ARRAY_LEN(table)

static void test_defaults_file_flags(void **state)
{
    (void)state;
    struct cfg c;
    assert_int_equal(cairn_config_defaults(table, N, &c), CAIRN_OK);
    assert_string_equal(c.name, "node");
    assert_int_equal(c.count, 3);
    assert_int_equal(c.timeout_ms, 5000);
    assert_false(c.verbose);

    char *dir = tu_tempdir("config");
    const char *p = tu_path("%s/c.conf", dir);
    const char *text = "# a comment\n\nname = alpha  # trailing\ncount=7\ntimeout = 250ms\n";
    tu_write_file(p, text, strlen(text));
    char *argv[] = {"prog", "--count", "9", "--config", (char *)p, "--verbose", "--timeout=2m"};
    assert_int_equal(cairn_config_parse_args(table, N, &c, 7, argv, "prog", NULL), CAIRN_OK);
    assert_string_equal(c.name, "alpha");
    assert_int_equal(c.count, 9); /* flags win over the file wherever --config stands */
    assert_int_equal(c.timeout_ms, 120000);
    assert_true(c.verbose);

    const char *badtext = "name = x\ncount = 11\n";
    tu_write_file(p, badtext, strlen(badtext));
    assert_int_equal(cairn_config_load_file(table, N, &c, p), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_err_msg(), ":2"));
    assert_non_null(strstr(cairn_err_msg(), "count"));
    const char *unknown = "colour = red\n";
    tu_write_file(p, unknown, strlen(unknown));
    assert_int_equal(cairn_config_load_file(table, N, &c, p), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_err_msg(), "unknown setting 'colour'"));

    char *argv2[] = {"prog", "--nope", "1"};
    assert_int_equal(cairn_config_parse_args(table, N, &c, 3, argv2, "prog", NULL), CAIRN_EINVAL);
    char *argv3[] = {"prog", "--count"};
    assert_int_equal(cairn_config_parse_args(table, N, &c, 2, argv3, "prog", NULL), CAIRN_EINVAL);
    char *argv4[] = {"prog", "--verbose=maybe"};
    assert_int_equal(cairn_config_parse_args(table, N, &c, 2, argv4, "prog", NULL), CAIRN_EINVAL);
    assert_int_equal(cairn_config_load_file(table, N, &c, tu_path("%s/missing", dir)), CAIRN_ENOTFOUND);

    FILE *f = fopen(tu_path("%s/example", dir), "w");
    cairn_config_write_example(table, N, f, "test daemon");
    fclose(f);
    /* the example is itself a valid config */
    assert_int_equal(cairn_config_load_file(table, N, &c, tu_path("%s/example", dir)), CAIRN_OK);
    assert_int_equal(c.count, 3);

    cairn_config_release(table, N, &c);
    assert_null(c.name);
    tu_rmrf(dir);
    free(dir);
}

static void test_durations(void **state)
{
    (void)state;
    uint64_t ms;
    assert_int_equal(cairn_duration_parse("29d", &ms), CAIRN_OK);
    assert_int_equal(ms, 29ull * 86400000);
    assert_int_equal(cairn_duration_parse("90", &ms), CAIRN_OK);
    assert_int_equal(ms, 90000);
    assert_int_equal(cairn_duration_parse("1h", &ms), CAIRN_OK);
    assert_int_equal(ms, 3600000);
    assert_int_equal(cairn_duration_parse("5x", &ms), CAIRN_EINVAL);
    assert_int_equal(cairn_duration_parse("-5s", &ms), CAIRN_EINVAL);
    assert_int_equal(cairn_duration_parse("", &ms), CAIRN_EINVAL);
    assert_int_equal(cairn_duration_parse("99999999999999999999d", &ms), CAIRN_EINVAL);
}

static void test_clock(void **state)
{
    (void)state;
    struct cairn_clock real, test;
    cairn_clock_init(&real, false, 0);
    cairn_clock_init(&test, true, 0);
    assert_int_equal(cairn_clock_advance(&real, 1000), CAIRN_EPERM);
    int64_t before = cairn_clock_now_ns(&test);
    assert_int_equal(cairn_clock_advance(&test, 29ll * 86400 * 1000000000ll), CAIRN_OK);
    assert_true(cairn_clock_now_ns(&test) - before >= 29ll * 86400 * 1000000000ll);
    assert_int_equal(cairn_clock_advance(&test, -1), CAIRN_EINVAL);
}

static void test_placement(void **state)
{
    (void)state;
    const char *w[] = {"w1", "w2", "w3", "w4", "w5"};
    uint8_t dom[16] = {1}, id[32];
    size_t out[5], counts[5] = {0};
    uint64_t seed = 5;
    for (int i = 0; i < 5000; i++) {
        tu_fill_random(&seed, id, sizeof(id));
        assert_int_equal(cairn_placement_pick(w, 5, 2, dom, id, out), 2);
        assert_int_not_equal(out[0], out[1]);
        counts[out[0]]++;
        counts[out[1]]++;
        /* deterministic, and removing a worker that was not chosen changes nothing */
        size_t again[2];
        cairn_placement_pick(w, 5, 2, dom, id, again);
        assert_memory_equal(out, again, sizeof(again));
        size_t skip = 0;
        while (skip == out[0] || skip == out[1])
            skip++;
        const char *fewer[4];
        size_t k = 0;
        for (size_t j = 0; j < 5; j++)
            if (j != skip)
                fewer[k++] = w[j];
        size_t o2[2];
        cairn_placement_pick(fewer, 4, 2, dom, id, o2);
        assert_string_equal(fewer[o2[0]], w[out[0]]);
        assert_string_equal(fewer[o2[1]], w[out[1]]);
    }
    for (int j = 0; j < 5; j++) /* each of 5 workers holds ~2/5 of 5000 chunks */
        assert_true(counts[j] > 1700 && counts[j] < 2300);
    assert_int_equal(cairn_placement_pick(w, 1, 2, dom, id, out), 1);
    /* pinned value (checked with Python hashlib.blake2b): changing the hash would move every stored chunk */
    uint8_t zid[32] = {0};
    printf("score(w1, 0, 0) = %llu\n", (unsigned long long)cairn_placement_score("w1", (uint8_t[16]){0}, zid));
    assert_true(cairn_placement_score("w1", (uint8_t[16]){0}, zid) == 18193495279832423249ull);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_file_flags),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_clock),
        cmocka_unit_test(test_placement),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
