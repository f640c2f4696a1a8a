/*
 * test_client_cli.c: the `cairn` executable's contract, run as a process
 * (exit status, stdout, stderr), for everything that needs no cluster:
 *
 * - usage: no command is EINVAL (usage on stderr), --help prints it on stdout;
 * - errors: "cairn: NAME: message" on stderr, or with --json (anywhere on the
 *   line) exactly one {"error": {"code", "name", "message"}} line on stdout;
 *   exit status = the cairn error number;
 * - later-issue commands (sandbox mount/snapshot/restore..., snapshot *) are
 *   EUNSUPPORTED (11); image and sandbox commands are in the usage and check
 *   their arguments before connecting (--gpu, --ttl, --timeout DUR, --env,
 *   the command after `--`, stdin over 64 KiB);
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
    assert_non_null(strstr(r.out, "sandbox create [--image ID|NAME]"));
    assert_non_null(strstr(r.out, "image import PATH|TARBALL"));
    assert_null(strstr(r.out, "sandbox mount")); /* not in the usage until it exists */
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

    r = run("", "sandbox mount sb-1 /data --json");
    assert_int_equal(r.status, 11);
    assert_string_equal(r.out, "{\"error\":{\"code\":11,\"name\":\"EUNSUPPORTED\",\"message\":"
                               "\"'sandbox mount' is not implemented yet\"}}\n");
    run_free(&r);
    static const char *const later[] = {"sandbox unmount sb-1 /d", "sandbox snapshot-dir sb-1 /d", "sandbox snapshot sb-1",
                                        "sandbox restore sn-1", "snapshot ls", "snapshot show sn-1", "snapshot rm sn-1"};
    for (size_t i = 0; i < sizeof(later) / sizeof(later[0]); i++) {
        r = run("", later[i]);
        assert_int_equal(r.status, 11);
        assert_non_null(strstr(r.err, "is not implemented yet"));
        run_free(&r);
    }
    r = run("", "image frobnicate");
    assert_int_equal(r.status, 1);
    assert_string_equal(r.err, "cairn: EINVAL: unknown command 'image frobnicate'; see cairn --help\n");
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

/* Argument checks of the image and sandbox commands: all before any connection (nothing listens on :9). */
static void test_sandbox_args(void **state)
{
    (void)state;
    struct run r = run("", "keygen --out c2.key");
    run_free(&r);
    r = run("", "keygen --out s2.key");
    run_free(&r);
    const char *envs = "CAIRN_COORDINATOR=tcp://127.0.0.1:9 CAIRN_COORDINATOR_KEY=s2.key CAIRN_CLIENT_KEY=c2.key "
                       "CAIRN_APP=default CAIRN_TOKEN=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff "
                       "CAIRN_TIMEOUT_MS=300";
    static const struct {
        const char *args;
        int status;
        const char *needle;
    } cases[] = {
        {"sandbox create --gpu 17 </dev/null", 1, "--gpu '17' must be 1..16"},
        {"sandbox create --gpu x </dev/null", 1, "--gpu 'x'"},
        {"sandbox create --env NOEQUALS", 1, "--env 'NOEQUALS' is not NAME=value"},
        {"sandbox create --env =x", 1, "is not NAME=value"},
        {"sandbox create extra", 1, "unexpected argument 'extra'"},
        {"sandbox create --ttl 1h", 1, "'sandbox create' takes no --ttl option"},
        {"sandbox create --", 1, "no command after '--'"},
        {"sandbox exec sb-1 </dev/null", 1, "no command"},
        {"sandbox exec sb-1 -- </dev/null", 1, "no command"},
        {"sandbox exec </dev/null", 1, "needs more arguments"},
        {"sandbox exec sb-1 --timeout soon -- true </dev/null", 1, "--timeout 'soon' is not a duration"},
        {"sandbox exec sb-1 --image x -- true </dev/null", 1, "takes no --image option"},
        {"sandbox exec sb-1 ls -- true </dev/null", 1, "unexpected 'ls' before '--'"},
        {"sandbox snapshot-fs sb-1 --ttl never", 1, "--ttl 'never' is not a duration"},
        {"sandbox snapshot-fs sb-1 --ttl 500ms", 1, "at least 1s"},
        {"sandbox snapshot-fs", 1, "needs more arguments"},
        {"sandbox ls extra", 1, "unexpected argument"},
        {"sandbox terminate", 1, "needs more arguments"},
        {"image import", 1, "needs more arguments"},
        {"image import a b", 1, "unexpected argument 'b'"},
        {"image ls --all", 1, "'image ls' takes no --all option"},
        {"image show", 1, "needs more arguments"},
        {"image rm a b", 1, "unexpected argument"},
        /* stdin: more than 64 KiB is refused before connecting */
        {"sandbox exec sb-1 -- cat < big.bin", 10, "more than 65536 bytes"},
        /* arguments fine: the call times out (nothing listens) */
        {"sandbox exec sb-1 --timeout 2s --env A=1 --workdir /tmp -- ls -la --json-not-ours </dev/null", 14,
         "no answer from the coordinator"},
        {"sandbox ls --all", 14, "no answer"},
        {"image import /nonexistent/dir", 5, "/nonexistent/dir"},
    };
    tu_sh("head -c 70000 /dev/zero > '%s/big.bin'", dir);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        r = run(envs, cases[i].args);
        if (r.status != cases[i].status || !strstr(r.err, cases[i].needle))
            fail_msg("cairn %s: status %d, stderr '%s' (wanted %d and '%s')", cases[i].args, r.status, r.err,
                     cases[i].status, cases[i].needle);
        run_free(&r);
    }
    /* --json errors of the new commands: one object on stdout */
    r = run(envs, "--json sandbox create --gpu 99");
    assert_int_equal(r.status, 1);
    assert_int_equal(lines(r.out), 1);
    assert_non_null(strstr(r.out, "{\"error\":{\"code\":1,\"name\":\"EINVAL\""));
    run_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_usage_and_errors),
        cmocka_unit_test(test_sandbox_args),
        cmocka_unit_test(test_keygen),
        cmocka_unit_test(test_environment),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
