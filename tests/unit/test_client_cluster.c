/*
 * test_client_cluster.c: libcairn, the `cairn` CLI and deploy/local-cluster.sh
 * against a real cluster (cairn-coordinator + 2 cairn-worker processes on
 * loopback), brought up and torn down by the script itself.
 *
 * - up (--no-default-image: images and sandboxes are test_sandbox_cli.sh's) prints
 *   the export lines; the CLI with them: ping, cluster status (both
 *   workers alive), `job submit noop --wait` prints the result, `job get`;
 * - libcairn: status, submit with wait, the same req_id returns the same job,
 *   pinning to a worker, an unknown worker fails the job with ENOTFOUND,
 *   wrong token EAUTH, app create EEXIST, clock advance EPERM (no test clock),
 *   an unknown client key ETIMEDOUT, and cairn_job_submit_many (the dispatch
 *   benchmark's path) with 16 jobs in flight;
 * - up again changes nothing (same pids); down stops every process;
 * - as root, deploy/netns-cluster.sh: a worker whose link is cut is declared
 *   dead and comes back when healed; down removes namespaces and bridge.
 * Skipped when the daemons are not built.
 */
#include "testutil.h"

#include "cairn/bytes.h"
#include "cairn/cairn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *dir;
static int base_port;

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

static bool have_daemons(void)
{
    return access(CAIRN_BUILD_DIR "/coordinator/cairn-coordinator", X_OK) == 0 &&
           access(CAIRN_BUILD_DIR "/worker/cairn-worker", X_OK) == 0;
}

/* Run a deploy script command for the cluster in `d`; output in d/last.out, d/last.err. */
static int script(const char *name, const char *d, const char *args)
{
    return tu_sh("cd '%s' && CAIRN_BUILD='%s' bash '%s/deploy/%s' %s --dir '%s' >'%s/last.out' 2>'%s/last.err'",
                 CAIRN_SRC_DIR, CAIRN_BUILD_DIR, CAIRN_SRC_DIR, name, args, d, d, d);
}

/* Run the CLI with the cluster's environment; stdout in dir/cli.out. */
static int cli(const char *args)
{
    return tu_sh("cd '%s' && eval \"$(cat env.sh)\" && '%s' %s >cli.out 2>cli.err", dir, CAIRN_CLI_PATH, args);
}

static int setup(void **state)
{
    (void)state;
    dir = tu_tempdir("client-cluster");
    if (!have_daemons())
        return 0;
    /* a base port of our own; the script refuses ports in use, so try a few */
    for (int attempt = 0; attempt < 4; attempt++) {
        base_port = 20000 + (int)((getpid() * 7 + attempt * 131) % 2000) * 16;
        char args[128];
        snprintf(args, sizeof(args), "up --workers 2 --no-default-image --base-port %d", base_port);
        if (script("local-cluster.sh", dir, args) == 0) {
            tu_sh("cp '%s/last.out' '%s/env.sh'", dir, dir);
            return 0;
        }
        char *err = slurp(tu_path("%s/last.err", dir));
        bool busy = strstr(err, "in use") != NULL;
        fprintf(stderr, "local-cluster.sh up failed:\n%s\n", err);
        free(err);
        if (!busy)
            break;
    }
    return -1;
}

static int teardown(void **state)
{
    (void)state;
    if (have_daemons())
        script("local-cluster.sh", dir, "down");
    tu_rmrf(dir);
    free(dir);
    return 0;
}

static struct cairn_client *client(const char *app_token_file, const char *client_key, unsigned timeout_ms)
{
    char endpoint[64];
    snprintf(endpoint, sizeof(endpoint), "tcp://127.0.0.1:%d", base_port);
    uint8_t tok[CAIRN_TOKEN_MAX];
    size_t toklen = 0;
    if (app_token_file) {
        char *hex = slurp(app_token_file);
        size_t n = strcspn(hex, "\n");
        hex[n] = '\0';
        assert_int_equal(cairn_hex_decode(tok, n / 2, hex), CAIRN_OK);
        toklen = n / 2;
        free(hex);
    }
    struct cairn_client_opts o = {
        .endpoint = endpoint,
        .coordinator_key_file = tu_path("%s/keys/coordinator.pub", dir),
        .client_key_file = client_key ? client_key : tu_path("%s/keys/client.key", dir),
        .app = "default",
        .token = toklen ? tok : NULL,
        .token_len = toklen,
        .admin_token_file = tu_path("%s/admin.token", dir),
        .timeout_ms = timeout_ms,
    };
    struct cairn_client *c = NULL;
    if (cairn_client_new(&o, &c) != CAIRN_OK)
        fail_msg("client: %s", cairn_err_msg());
    return c;
}

static void test_cli(void **state)
{
    (void)state;
    if (!have_daemons())
        skip();
    char *env = slurp(tu_path("%s/env.sh", dir));
    assert_non_null(strstr(env, "export CAIRN_COORDINATOR=tcp://127.0.0.1:"));
    assert_non_null(strstr(env, "export CAIRN_TOKEN_FILE="));
    assert_non_null(strstr(env, "export CAIRN_ADMIN_TOKEN_FILE="));
    free(env);
    struct stat st;
    assert_int_equal(stat(tu_path("%s/default.token", dir), &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    assert_int_equal(cli("ping"), 0);
    assert_int_equal(cli("cluster status --json"), 0);
    char *out = slurp(tu_path("%s/cli.out", dir));
    assert_non_null(strstr(out, "\"id\":\"w1\""));
    assert_non_null(strstr(out, "\"alive\":2"));
    free(out);
    assert_int_equal(cli("job submit noop --wait"), 0);
    out = slurp(tu_path("%s/cli.out", dir));
    assert_non_null(strstr(out, "{\"worker\":\"w"));
    free(out);
    assert_int_equal(cli("job submit noop --worker w2"), 0);
    out = slurp(tu_path("%s/cli.out", dir));
    assert_int_equal(strncmp(out, "jb-", 3), 0);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "--json job get %.*s --wait 5000", (int)strcspn(out, "\n"), out);
    free(out);
    assert_int_equal(cli(cmd), 0);
    out = slurp(tu_path("%s/cli.out", dir));
    assert_non_null(strstr(out, "\"state\":\"succeeded\""));
    assert_non_null(strstr(out, "\"worker\":\"w2\""));
    free(out);
    assert_int_equal(cli("job submit noop --count 50 --window 8 --json"), 0);
    out = slurp(tu_path("%s/cli.out", dir));
    assert_non_null(strstr(out, "\"succeeded\":50,"));
    free(out);
    assert_int_equal(cli("job submit noop --worker nosuch --wait"), 5);
    assert_int_equal(cli("app create default"), 6);
    assert_int_equal(cli("admin clock advance 29d"), 12);
    assert_int_equal(cli("job get jb-0000000000000000"), 5);
}

static void test_library(void **state)
{
    (void)state;
    if (!have_daemons())
        skip();
    struct cairn_client *c = client(tu_path("%s/default.token", dir), NULL, 5000);
    struct cairn_cluster_status *s = NULL;
    assert_int_equal(cairn_cluster_status(c, &s), CAIRN_OK);
    assert_int_equal(s->nworkers, 2);
    assert_int_equal(cairn_cluster_status_alive(s), 2);
    assert_true(s->replicas >= 1);
    assert_true(s->workers[0].last_seen_ns > 0);
    cairn_cluster_status_free(&s);

    struct cairn_job *j = NULL, *j2 = NULL;
    assert_int_equal(cairn_job_submit(c, "noop", NULL, "same-req", CAIRN_WAIT_FOREVER, &j), CAIRN_OK);
    assert_int_equal(j->state, CAIRN_JOB_SUCCEEDED);
    assert_non_null(j->result_json);
    assert_int_equal(cairn_job_submit(c, "noop", NULL, "same-req", 0, &j2), CAIRN_OK);
    assert_string_equal(j->id, j2->id);
    cairn_job_free(&j);
    cairn_job_free(&j2);

    struct cairn_params *p = cairn_params_new();
    assert_int_equal(cairn_params_set_str(p, "worker", "w1"), CAIRN_OK);
    assert_int_equal(cairn_params_set_u64(p, "sleep_ms", 50), CAIRN_OK);
    assert_int_equal(cairn_job_submit(c, "noop", p, NULL, 10000, &j), CAIRN_OK);
    assert_int_equal(j->state, CAIRN_JOB_SUCCEEDED);
    assert_string_equal(j->worker, "w1");
    cairn_job_free(&j);
    assert_int_equal(cairn_params_set_str(p, "worker", "nosuch"), CAIRN_OK);
    assert_int_equal(cairn_job_submit(c, "noop", p, NULL, 10000, &j), CAIRN_OK);
    assert_int_equal(j->state, CAIRN_JOB_FAILED);
    assert_int_equal(j->err_code, CAIRN_ENOTFOUND);
    assert_non_null(strstr(j->err_msg, "nosuch"));
    cairn_job_free(&j);
    cairn_params_destroy(&p);

    struct cairn_submit_stats st;
    assert_int_equal(cairn_job_submit_many(c, "noop", NULL, 200, 16, &st), CAIRN_OK);
    assert_int_equal(st.succeeded, 200);
    assert_int_equal(st.failed + st.errors, 0);
    print_message("submit_many: 200 noop jobs, window 16: %.0f jobs/s, p50 %.2f ms, p99 %.2f ms\n",
                  200.0 / ((double)st.elapsed_ns / 1e9), (double)st.lat_p50_ns / 1e6, (double)st.lat_p99_ns / 1e6);

    uint8_t tok[CAIRN_TOKEN_MAX];
    size_t n = 0;
    assert_int_equal(cairn_app_create(c, "second", tok, &n), CAIRN_OK);
    assert_int_equal(n, 32);
    assert_int_equal(cairn_app_create(c, "second", tok, &n), CAIRN_EEXIST);
    int64_t now = 0;
    assert_int_equal(cairn_admin_clock_advance(c, 60, &now), CAIRN_EPERM);
    cairn_client_destroy(&c);

    /* the admin token is not an app token */
    c = client(tu_path("%s/admin.token", dir), NULL, 5000);
    assert_int_equal(cairn_cluster_status(c, &s), CAIRN_EAUTH);
    assert_non_null(strstr(cairn_client_err_msg(c), "invalid app token for app 'default'"));
    cairn_client_destroy(&c);

    /* a key that is not on the clients allow-list gets no answer */
    assert_int_equal(cairn_keypair_generate(tu_path("%s/stranger.key", dir), false, NULL), CAIRN_OK);
    c = client(NULL, tu_path("%s/stranger.key", dir), 500);
    struct cairn_ping_info pi;
    assert_int_equal(cairn_ping(c, &pi), CAIRN_ETIMEDOUT);
    assert_non_null(strstr(cairn_client_err_msg(c), "allow-list"));
    cairn_client_destroy(&c);
}

/* Running, not a zombie (the daemons are orphans: whoever adopts them may reap late). */
static bool alive(pid_t pid)
{
    char st[512] = "";
    FILE *f = fopen(tu_path("/proc/%d/stat", (int)pid), "r"); /* size 0 in stat(): read it as a stream */
    if (!f)
        return false;
    size_t n = fread(st, 1, sizeof(st) - 1, f);
    fclose(f);
    st[n] = '\0';
    const char *p = strrchr(st, ')');
    return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static void test_rerun_and_down(void **state)
{
    (void)state;
    if (!have_daemons())
        skip();
    char *before = slurp(tu_path("%s/pids/w1.pid", dir));
    char args[128];
    snprintf(args, sizeof(args), "up --workers 2 --no-default-image --base-port %d", base_port);
    assert_int_equal(script("local-cluster.sh", dir, args), 0);
    char *after = slurp(tu_path("%s/pids/w1.pid", dir));
    assert_string_equal(before, after);
    assert_int_equal(script("local-cluster.sh", dir, "status"), 0);
    assert_int_equal(script("local-cluster.sh", dir, "env"), 0);
    char *env = slurp(tu_path("%s/last.out", dir));
    char *first = slurp(tu_path("%s/env.sh", dir));
    assert_string_equal(env, first);
    free(env);
    free(first);

    pid_t pid = (pid_t)strtol(after, NULL, 10);
    assert_true(alive(pid));
    assert_int_equal(script("local-cluster.sh", dir, "down"), 0);
    assert_false(alive(pid));
    assert_int_not_equal(access(tu_path("%s/pids/w1.pid", dir), F_OK), 0);
    assert_int_equal(script("local-cluster.sh", dir, "down"), 0); /* again: nothing to do */
    assert_int_not_equal(script("local-cluster.sh", dir, "status"), 0);
    free(before);
    free(after);
}

static void test_netns_cut_heal(void **state)
{
    (void)state;
    if (!have_daemons() || geteuid() != 0 || tu_sh("ip netns list >/dev/null 2>&1") != 0)
        skip();
    char *nd = tu_tempdir("client-netns");
    int subnet = 100 + getpid() % 100;
    char args[128];
    snprintf(args, sizeof(args), "up --workers 2 --no-default-image --subnet %d", subnet);
    int rc = script("netns-cluster.sh", nd, args);
    if (rc != 0) {
        char *err = slurp(tu_path("%s/last.err", nd));
        fprintf(stderr, "netns-cluster.sh up failed:\n%s\n", err);
        free(err);
    }
    assert_int_equal(rc, 0);
    tu_sh("cp '%s/last.out' '%s/env.sh'", nd, nd);
    assert_int_equal(script("netns-cluster.sh", nd, "cut w2"), 0);
    /* dead after the heartbeat timeout (5 s) */
    bool dead = false;
    for (int i = 0; i < 40 && !dead; i++) {
        usleep(250000);
        tu_sh("cd '%s' && eval \"$(cat env.sh)\" && '%s' cluster status --json >st.json 2>&1", nd, CAIRN_CLI_PATH);
        char *out = slurp(tu_path("%s/st.json", nd));
        dead = strstr(out, "\"id\":\"w2\"") && strstr(out, "\"alive\":1,");
        free(out);
    }
    assert_true(dead);
    assert_int_equal(script("netns-cluster.sh", nd, "heal w2"), 0);
    bool back = false;
    for (int i = 0; i < 60 && !back; i++) {
        usleep(250000);
        tu_sh("cd '%s' && eval \"$(cat env.sh)\" && '%s' cluster status --json >st.json 2>&1", nd, CAIRN_CLI_PATH);
        char *out = slurp(tu_path("%s/st.json", nd));
        back = strstr(out, "\"alive\":2,") != NULL;
        free(out);
    }
    assert_true(back);
    assert_int_equal(script("netns-cluster.sh", nd, "down"), 0);
    /* no namespace or bridge of this cluster is left */
    assert_int_equal(tu_sh("h=$(printf %%s \"$(cd '%s' && pwd)\" | sha256sum | cut -c1-8); "
                           "ip netns list | grep -q \"$h\" || ip link show \"cb-$h\" >/dev/null 2>&1", nd), 1);
    tu_rmrf(nd);
    free(nd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_library),
        cmocka_unit_test(test_rerun_and_down),
        cmocka_unit_test(test_netns_cut_heal),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
