/*
 * test_client_cli.c: the `cairn` executable's contract, run as a process
 * (exit status, stdout, stderr), for everything that needs no cluster:
 *
 * - usage: no command is EINVAL (usage on stderr), --help prints it on stdout;
 * - errors: "cairn: NAME: message" on stderr, or with --json (anywhere on the
 *   line) exactly one {"error": {"code", "name", "message"}} line on stdout;
 *   exit status = the cairn error number;
 * - later-issue commands (sandbox, image, snapshot) are EUNSUPPORTED (11);
 * - keygen: key pair file mode 0600, public key alone on stdout, EEXIST
 *   without --force, --public writes a 0644 public key file of the same key;
 * - environment: a missing variable is EINVAL naming it;
 * - a coordinator that does not answer is ETIMEDOUT (14) within --timeout;
 * - argument checks happen before any connection (bad --param, bad duration).
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct run {
    int status;
    char *out, *err;
};

static char *dir;

static char *slurp(const char *path)
{
    size_t n = 0;
    uint8_t *d = tu_read_file(path, &n);
    char *s = calloc(1, n + 1);
    if (d)
        memcpy(s, d, n);
    free(d);
    return s;
}

/* Run `cairn ARGS` with ENV prefix (shell words) in the test dir. */
static struct run run(const char *envs, const char *args)
{
    struct run r;
    r.status = tu_sh("cd '%s' && env -u CAIRN_COORDINATOR -u CAIRN_COORDINATOR_KEY -u CAIRN_CLIENT_KEY -u CAIRN_APP "
                     "-u CAIRN_TOKEN -u CAIRN_TOKEN_FILE -u CAIRN_ADMIN_TOKEN_FILE -u CAIRN_TIMEOUT_MS %s '%s' %s "
                     ">out.txt 2>err.txt",
                     dir, envs, CAIRN_CLI_PATH, args);
    r.out = slurp(tu_path("%s/out.txt", dir));
    r.err = slurp(tu_path("%s/err.txt", dir));
    return r;
}

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

static int setup(void **state)
{
    (void)state;
    dir = tu_tempdir("client-cli");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tu_rmrf(dir);
    free(dir);
    return 0;
}

static size_t lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_usage_and_errors(void **state)
{
    (void)state;
    struct run r = run("", "");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "usage: cairn"));
    assert_string_equal(r.out, "");
    run_free(&r);

    r = run("", "--help");
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "usage: cairn"));
    assert_null(strstr(r.out, "sandbox create")); /* not in the usage until it exists */
    run_free(&r);

    r = run("", "frobnicate");
    assert_int_equal(r.status, 1);
    assert_string_equal(r.err, "cairn: EINVAL: unknown command 'frobnicate'; see cairn --help\n");
    run_free(&r);

    r = run("", "frobnicate --json");
    assert_int_equal(r.status, 1);
    assert_string_equal(r.out, "{\"error\":{\"code\":1,\"name\":\"EINVAL\",\"message\":"
                               "\"unknown command 'frobnicate'; see cairn --help\"}}\n");
    assert_string_equal(r.err, "");
    run_free(&r);

    r = run("", "sandbox create --json");
    assert_int_equal(r.status, 11);
    assert_string_equal(r.out, "{\"error\":{\"code\":11,\"name\":\"EUNSUPPORTED\",\"message\":"
                               "\"'sandbox create' is not implemented yet\"}}\n");
    run_free(&r);
    r = run("", "image import x.tar");
    assert_int_equal(r.status, 11);
    assert_string_equal(r.err, "cairn: EUNSUPPORTED: 'image import' is not implemented yet\n");
    run_free(&r);

    r = run("", "ping --bogus");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "unknown option '--bogus'"));
    run_free(&r);
    r = run("", "ping --worker w1");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "'ping' takes no --worker option"));
    run_free(&r);
    r = run("", "cluster status extra");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "unexpected argument 'extra'"));
    run_free(&r);
    r = run("", "--json job submit");
    assert_int_equal(r.status, 1);
    assert_int_equal(lines(r.out), 1);
    assert_non_null(strstr(r.out, "needs more arguments"));
    run_free(&r);
}

static void test_keygen(void **state)
{
    (void)state;
    struct run r = run("", "keygen --out client.key");
    assert_int_equal(r.status, 0);
    assert_int_equal(strlen(r.out), 41);
    char pub[41];
    memcpy(pub, r.out, 40);
    pub[40] = '\0';
    run_free(&r);
    struct stat st;
    assert_int_equal(stat(tu_path("%s/client.key", dir), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    r = run("", "keygen --out client.key");
    assert_int_equal(r.status, 6);
    assert_non_null(strstr(r.err, "cairn: EEXIST: 'client.key' already exists"));
    run_free(&r);

    r = run("", "keygen --public client.key client.pub");
    assert_int_equal(r.status, 0);
    assert_int_equal(strncmp(r.out, pub, 40), 0);
    run_free(&r);
    assert_int_equal(stat(tu_path("%s/client.pub", dir), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    r = run("", "--json keygen --public client.pub");
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, pub));
    assert_non_null(strstr(r.out, "\"public_key\":"));
    run_free(&r);

    r = run("", "keygen --out client.key --force --json");
    assert_int_equal(r.status, 0);
    assert_null(strstr(r.out, pub)); /* a new key */
    assert_non_null(strstr(r.out, "\"file\":\"client.key\""));
    run_free(&r);

    r = run("", "keygen");
    assert_int_equal(r.status, 1);
    run_free(&r);
    r = run("", "keygen --public missing.key");
    assert_int_equal(r.status, 5);
    run_free(&r);
}

static void test_environment(void **state)
{
    (void)state;
    struct run r = run("", "keygen --out c.key");
    assert_int_equal(r.status, 0);
    run_free(&r);
    r = run("", "keygen --out s.key");
    run_free(&r);

    r = run("", "ping");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "cairn: EINVAL: CAIRN_COORDINATOR is not set"));
    run_free(&r);
    r = run("CAIRN_COORDINATOR=tcp://127.0.0.1:1", "cluster status --json");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.out, "CAIRN_COORDINATOR_KEY is not set"));
    run_free(&r);

    const char *base = "CAIRN_COORDINATOR=tcp://127.0.0.1:9 CAIRN_COORDINATOR_KEY=s.key CAIRN_CLIENT_KEY=c.key";
    char envs[512];
    r = run(base, "cluster status");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "CAIRN_APP is not set"));
    run_free(&r);
    snprintf(envs, sizeof(envs), "%s CAIRN_APP=default CAIRN_TOKEN_FILE=nope.token", base);
    r = run(envs, "job get jb-1");
    assert_int_equal(r.status, 5);
    assert_non_null(strstr(r.err, "CAIRN_TOKEN_FILE: cannot read token file 'nope.token'"));
    run_free(&r);
    r = run(base, "app create foo");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "CAIRN_ADMIN_TOKEN_FILE is not set"));
    run_free(&r);

    /* nothing listens: ETIMEDOUT within the timeout, naming the endpoint */
    r = run(base, "ping --timeout 300");
    assert_int_equal(r.status, 14);
    assert_non_null(strstr(r.err, "cairn: ETIMEDOUT: no answer from the coordinator at tcp://127.0.0.1:9 within 300 ms"));
    run_free(&r);
    snprintf(envs, sizeof(envs), "%s CAIRN_TIMEOUT_MS=250 CAIRN_APP=default CAIRN_TOKEN=%s", base,
             "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
    r = run(envs, "job submit --wait noop --json");
    assert_int_equal(r.status, 14);
    assert_non_null(strstr(r.out, "\"name\":\"ETIMEDOUT\""));
    assert_non_null(strstr(r.out, "within 250 ms"));
    run_free(&r);
    r = run(envs, "job submit noop --param nokey");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "not key=value"));
    run_free(&r);
    r = run(envs, "job get jb-1 --wait=soon");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "--wait 'soon'"));
    run_free(&r);
    r = run(envs, "admin clock advance forever");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "not a duration"));
    run_free(&r);
    r = run(envs, "admin clock advance 1500ms");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "whole seconds"));
    run_free(&r);
    r = run(envs, "ping --timeout abc");
    assert_int_equal(r.status, 1);
    run_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_usage_and_errors),
        cmocka_unit_test(test_keygen),
        cmocka_unit_test(test_environment),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
