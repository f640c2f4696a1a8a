/*
 * test_client_cli.c: the `cairn` executable's contract, run as a process
 * (exit status, stdout, stderr), for everything that needs no cluster:
 *
 * - usage: no command is EINVAL (usage on stderr), --help prints it on stdout;
 * - errors: "cairn: NAME: message" on stderr, or with --json (anywhere on the
 *   line) exactly one {"error": {"code", "name", "message"}} line on stdout;
 *   exit status = the cairn error number;
 * - image, sandbox and snapshot commands (issue 5/6 ones included: mount,
 *   unmount, snapshot-dir, snapshot, restore, snapshot ls/show/rm) are in the
 *   usage and check their arguments before connecting (--gpu, --ttl,
 *   --timeout DUR, --env, --count, the command after `--`, stdin over 64 KiB,
 *   paths, --enable-snapshot with --gpu);
 * - --key-file: an empty, 15-byte, 513-byte or over-4096-byte file gets
 *   cairn_csek_validate's message with EINVAL (1), a missing one ENOTFOUND
 *   (5) naming it, all before any connection and with --json too; the key's
 *   bytes never appear in any output; with a key file the process cannot
 *   dump core (RLIMIT_CORE 0/0, seen in /proc while it waits on a fifo);
 * - keygen: key pair file mode 0600, public key alone on stdout, EEXIST
 *   without --force, --public writes a 0644 public key file of the same key;
 * - environment: a missing variable is EINVAL naming it;
 * - a coordinator that does not answer is ETIMEDOUT (14) within --timeout;
 * - argument checks happen before any connection (bad --param, bad duration).
 */
#include "testutil.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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
    static const char *const usage_lines[] = {
        "sandbox mount SB PATH [IMAGE] [--key-file F]", "sandbox unmount SB PATH",
        "sandbox snapshot-dir SB PATH [--key-file F] [--ttl DUR]", "sandbox snapshot SB",
        "sandbox restore SN [--count N] [--worker W]", "snapshot ls | show SN | rm SN", "8 EKEY"};
    for (size_t i = 0; i < sizeof(usage_lines) / sizeof(usage_lines[0]); i++)
        if (!strstr(r.out, usage_lines[i]))
            fail_msg("usage lacks '%s'", usage_lines[i]);
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

    /* the issue 5/6 commands exist: without a cluster they get as far as the environment */
    r = run("", "sandbox mount sb-1 /data --json");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.out, "CAIRN_COORDINATOR is not set"));
    run_free(&r);
    static const char *const now[] = {"sandbox unmount sb-1 /d", "sandbox snapshot-dir sb-1 /d", "sandbox snapshot sb-1",
                                      "sandbox restore sn-1", "snapshot ls", "snapshot show sn-1", "snapshot rm sn-1"};
    for (size_t i = 0; i < sizeof(now) / sizeof(now[0]); i++) {
        r = run("", now[i]);
        if (r.status != 1 || !strstr(r.err, "CAIRN_COORDINATOR is not set"))
            fail_msg("cairn %s: %d '%s'", now[i], r.status, r.err);
        run_free(&r);
    }
    r = run("", "snapshot frobnicate");
    assert_int_equal(r.status, 1);
    assert_string_equal(r.err, "cairn: EINVAL: unknown command 'snapshot frobnicate'; see cairn --help\n");
    run_free(&r);
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
        /* issues 5 and 6 */
        {"sandbox create --enable-snapshot --gpu 1", 1, "sandboxes with snapshots enabled cannot have GPUs"},
        {"sandbox mount sb-1", 1, "needs more arguments"},
        {"sandbox mount sb-1 /d im-1 extra", 1, "unexpected argument 'extra'"},
        {"sandbox mount sb-1 /d --ttl 1h", 1, "'sandbox mount' takes no --ttl option"},
        {"sandbox mount sb-1 data", 1, "sandbox mount: the path 'data' is not absolute"},
        {"sandbox mount sb-1 /", 1, "the path cannot be '/'"},
        {"sandbox mount sb-1 /d --key-file", 1, "option '--key-file' needs a value"},
        {"sandbox unmount sb-1", 1, "needs more arguments"},
        {"sandbox unmount sb-1 /d /e", 1, "unexpected argument '/e'"},
        {"sandbox unmount sb-1 /d --key-file k", 1, "takes no --key-file option"},
        {"sandbox unmount sb-1 rel", 1, "is not absolute"},
        {"sandbox snapshot-dir sb-1", 1, "needs more arguments"},
        {"sandbox snapshot-dir sb-1 /d --ttl soon", 1, "--ttl 'soon' is not a duration"},
        {"sandbox snapshot-dir sb-1 /d --ttl 10ms", 1, "at least 1s"},
        {"sandbox snapshot-dir sb-1 rel", 1, "is not absolute"},
        {"sandbox snapshot", 1, "needs more arguments"},
        {"sandbox snapshot sb-1 sb-2", 1, "unexpected argument 'sb-2'"},
        {"sandbox snapshot sb-1 --ttl 1h", 1, "takes no --ttl option"},
        {"sandbox restore", 1, "needs more arguments"},
        {"sandbox restore sn-1 --count 0", 1, "--count '0' must be 1..256"},
        {"sandbox restore sn-1 --count 257", 1, "--count '257' must be 1..256"},
        {"sandbox restore sn-1 --count many", 1, "--count 'many'"},
        {"sandbox restore sn-1 --window 2", 1, "takes no --window option"},
        {"sandbox restore sn-1 --image x", 1, "takes no --image option"},
        {"snapshot ls extra", 1, "unexpected argument"},
        {"snapshot ls --all", 1, "'snapshot ls' takes no --all option"},
        {"snapshot show", 1, "needs more arguments"},
        {"snapshot rm a b", 1, "unexpected argument"},
        /* arguments fine: the calls time out (nothing listens) */
        {"sandbox mount sb-1 /d", 14, "no answer"},
        {"sandbox snapshot-dir sb-1 /d --ttl 7d", 14, "no answer"},
        {"sandbox restore sn-1 --count 4 --worker w1", 14, "no answer"},
        {"snapshot ls", 14, "no answer"},
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

/* --key-file: checked before any connection (no environment at all here), never echoed. */
static void test_key_files(void **state)
{
    (void)state;
    static const char key[] = "THE-KEY-BYTES-0123456789-abcdef"; /* 31 bytes, printable so a leak is easy to see */
    tu_write_file(tu_path("%s/empty.key", dir), "", 0);
    tu_write_file(tu_path("%s/k15.key", dir), key, 15);
    tu_write_file(tu_path("%s/k16.key", dir), key, 16);
    char big[5000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = key[i % (sizeof(key) - 1)];
    tu_write_file(tu_path("%s/k513.key", dir), big, 513);
    tu_write_file(tu_path("%s/k512.key", dir), big, 512);
    tu_write_file(tu_path("%s/k5000.key", dir), big, sizeof(big));
    assert_int_equal(mkdir(tu_path("%s/keydir", dir), 0700), 0);
    static const struct {
        const char *file;
        int status;
        const char *msg; /* the whole stderr line after "cairn: NAME: " */
    } cases[] = {
        {"empty.key", 1, "EINVAL: encryption key is empty"},
        {"k15.key", 1, "EINVAL: encryption key is too short: 15 bytes (at least 16)"},
        {"k513.key", 1, "EINVAL: encryption key is too long: 513 bytes (at most 512)"},
        {"k5000.key", 1, "EINVAL: encryption key is too long: more than 4096 bytes (at most 512)"},
        {"missing.key", 5, "ENOTFOUND: --key-file 'missing.key' does not exist"},
        {"keydir", 3, "EIO: --key-file: read key file keydir"},
        /* good keys: then the environment is what is missing */
        {"k16.key", 1, "EINVAL: CAIRN_COORDINATOR is not set"},
        {"k512.key", 1, "EINVAL: CAIRN_COORDINATOR is not set"},
    };
    static const char *const cmds[] = {"sandbox mount sb-1 /data im-0000000000000001 --key-file",
                                       "sandbox snapshot-dir sb-1 /data --ttl 1h --key-file"};
    for (size_t k = 0; k < sizeof(cmds) / sizeof(cmds[0]); k++) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            char args[256], want[256];
            snprintf(args, sizeof(args), "%s%s%s", cmds[k], k ? "=" : " ", cases[i].file);
            snprintf(want, sizeof(want), "cairn: %s", cases[i].msg);
            struct run r = run("", args);
            if (r.status != cases[i].status || strncmp(r.err, want, strlen(want)) != 0 || r.out[0])
                fail_msg("cairn %s: status %d, stderr '%s' (wanted %d, '%s')", args, r.status, r.err, cases[i].status,
                         want);
            assert_null(strstr(r.err, "THE-KEY"));
            assert_null(strstr(r.err, "0123456789"));
            run_free(&r);
            /* --json: one error object, same code and message */
            char jargs[300];
            snprintf(jargs, sizeof(jargs), "%s --json", args);
            r = run("", jargs);
            assert_int_equal(r.status, cases[i].status);
            assert_int_equal(lines(r.out), 1);
            assert_non_null(strstr(r.out, strchr(cases[i].msg, ':') + 2));
            assert_null(strstr(r.out, "THE-KEY"));
            assert_string_equal(r.err, "");
            run_free(&r);
        }
    }
    /* a good key and a coordinator that does not answer: the error never shows the key */
    struct run r = run("", "keygen --out c3.key");
    run_free(&r);
    r = run("", "keygen --out s3.key");
    run_free(&r);
    const char *envs = "CAIRN_COORDINATOR=tcp://127.0.0.1:9 CAIRN_COORDINATOR_KEY=s3.key CAIRN_CLIENT_KEY=c3.key "
                       "CAIRN_APP=default CAIRN_TOKEN=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff "
                       "CAIRN_TIMEOUT_MS=300";
    r = run(envs, "--json sandbox snapshot-dir sb-1 /data --key-file k512.key");
    assert_int_equal(r.status, 14);
    assert_null(strstr(r.out, "THE-KEY"));
    assert_null(strstr(r.err, "THE-KEY"));
    run_free(&r);
}

/* With a key file the CLI turns core dumps off before reading it: watch it wait on a fifo. */
static void test_key_file_no_core(void **state)
{
    (void)state;
    const char *fifo = tu_path("%s/key.fifo", dir);
    char *fifo_path = strdup(fifo);
    assert_int_equal(mkfifo(fifo_path, 0600), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int nul = open("/dev/null", O_RDWR);
        dup2(nul, 1);
        dup2(nul, 2);
        unsetenv("CAIRN_COORDINATOR");
        execl(CAIRN_CLI_PATH, "cairn", "sandbox", "mount", "sb-1", "/data", "--key-file", fifo_path, (char *)NULL);
        _exit(127);
    }
    char limits[64];
    snprintf(limits, sizeof(limits), "/proc/%d/limits", (int)pid);
    bool zero = false;
    for (int i = 0; i < 200 && !zero; i++) { /* up to 10 s on a busy machine */
        char text[8192] = ""; /* /proc files have no size: read them with stdio */
        FILE *pf = fopen(limits, "r");
        if (pf) {
            size_t n = fread(text, 1, sizeof(text) - 1, pf);
            text[n] = '\0';
            fclose(pf);
        }
        char *line = strstr(text, "Max core file size");
        if (line) {
            char soft[32] = "", hard[32] = "";
            if (sscanf(line + strlen("Max core file size"), "%31s %31s", soft, hard) == 2 && !strcmp(soft, "0") &&
                !strcmp(hard, "0"))
                zero = true;
        }
        if (!zero) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    /* let it go: a good key, then it stops at the missing environment */
    int fd = open(fifo_path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "0123456789abcdef0123", 20), 20);
    close(fd);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    free(fifo_path);
    assert_true(zero);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_usage_and_errors),
        cmocka_unit_test(test_sandbox_args),
        cmocka_unit_test(test_keygen),
        cmocka_unit_test(test_environment),
        cmocka_unit_test(test_key_files),
        cmocka_unit_test(test_key_file_no_core),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
