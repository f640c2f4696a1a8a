/*
 * test_coord_api.c: the real cairn-coordinator binary, started as a child
 * process on free ports with temp keys and files, spoken to over CURVE with
 * cairn/transport.h, stopped by its pid.
 *
 * - ping / app.create / cluster.status / job.submit / job.get flows, with a
 *   config file plus flags (dashed spellings too).
 * - Garbage frames do not stop it; SIGTERM exits 0; tokens and keys never
 *   appear in its log.
 * - A restart keeps apps, jobs, the idempotency index.
 * - Start-up refusals: a world-readable master key, a missing admin token, an
 *   unknown setting; --init-master-key / --init-admin-token never overwrite;
 *   deploy/coordinator.conf.example is what --print-example-config prints.
 * - Dispatch throughput: a fake worker thread acknowledges and completes
 *   noop jobs at once; the client keeps a window of job.submit long polls
 *   open; jobs/s end to end is printed (and must clear a floor that a loaded
 *   shared CI machine still meets; CAIRN_BENCH_STRICT=1 asks for 5000/s).
 */
#include "test_coord_fixture.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0};
    socklen_t al = sizeof(a);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &al), 0);
    close(s);
    return ntohs(a.sin_port);
}

/* A whole file as a NUL-terminated string (NULL if missing). */
static char *read_text(const char *path)
{
    size_t n = 0;
    uint8_t *b = tu_read_file(path, &n);
    if (b)
        b[n] = '\0'; /* tu_read_file allocates one spare byte */
    return (char *)b;
}

struct api {
    struct fx f;
    pid_t pid;
    char log[4096];
    int cport, wport;
};

static void write_config(struct api *a)
{
    char conf[8192];
    struct fx *f = &a->f;
    a->cport = free_port();
    a->wport = free_port();
    snprintf(f->client_ep, sizeof(f->client_ep), "tcp://127.0.0.1:%d", a->cport);
    snprintf(f->worker_ep, sizeof(f->worker_ep), "tcp://127.0.0.1:%d", a->wport);
    int n = snprintf(conf, sizeof(conf),
                     "# test config\n"
                     "data_dir = %s/data\n"
                     "keys = %s/coord.key\n"
                     "clients_allow = %s/clients.allow   # comment after a value\n"
                     "workers_allow = %s/workers.allow\n"
                     "admin_token_file = %s/admin.token\n"
                     "master_key = %s/master.key\n"
                     "client_endpoint = %s\n"
                     "worker_endpoint = tcp://127.0.0.1:1\n" /* the flag below wins */
                     "log_level = info\n",
                     f->dir, f->dir, f->dir, f->dir, f->dir, f->dir, f->client_ep);
    tu_write_file(tu_path("%s/coordinator.conf", f->dir), conf, (size_t)n);
    snprintf(a->log, sizeof(a->log), "%s/coordinator.log", f->dir);
}

/* Start the daemon with --config plus extra flags (NULL-terminated); returns at once. */
static pid_t spawn(struct api *a, const char *const *extra)
{
    const char *argv[32];
    int n = 0;
    argv[n++] = CAIRN_COORDINATOR_BIN;
    argv[n++] = "--config";
    argv[n++] = strdup(tu_path("%s/coordinator.conf", a->f.dir));
    argv[n++] = "--worker-endpoint";
    argv[n++] = a->f.worker_ep;
    for (int i = 0; extra && extra[i] && n < 30; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(a->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    free((void *)argv[2]);
    return pid;
}

/* Wait for the child to exit (up to ms); its exit status, or -1 if it did not. */
static int wait_exit(pid_t pid, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        int st = 0;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(10000);
    }
    return -1;
}

static void stop_daemon(struct api *a, int want_status)
{
    if (a->pid <= 0)
        return;
    cairn_sock_destroy(&a->f.client);
    assert_int_equal(kill(a->pid, SIGTERM), 0);
    int st = wait_exit(a->pid, 15000);
    if (st < 0) {
        kill(a->pid, SIGKILL);
        waitpid(a->pid, NULL, 0);
    }
    a->pid = 0;
    assert_int_equal(st, want_status);
}

/* Start and wait until it answers a ping. */
static void start_daemon(struct api *a, const char *const *extra)
{
    a->pid = spawn(a, extra);
    fx_client_connect(&a->f, &a->f.client_keys);
    for (int i = 0; i < 100; i++) {
        struct cairn_msg *m = fx_req(&a->f, CAIRN_MSG_PING, NULL, NULL, 0);
        struct cairn_msg *r = fx_call_on(&a->f, a->f.client, &m, 200);
        if (r) {
            assert_int_equal(cairn_msg_code(r), CAIRN_OK);
            cairn_msg_destroy(&r);
            return;
        }
        int st = wait_exit(a->pid, 10);
        if (st >= 0) {
            char *log = read_text(a->log);
            fail_msg("the coordinator exited with %d: %s", st, log ? log : "");
        }
    }
    fail_msg("the coordinator did not answer within 20 s");
}

static int setup(void **state)
{
    struct api *a = calloc(1, sizeof(*a));
    fx_files(&a->f, "coord_api", 1);
    write_config(a);
    *state = a;
    return 0;
}

static int teardown(void **state)
{
    struct api *a = *state;
    if (a->pid > 0) {
        kill(a->pid, SIGKILL);
        waitpid(a->pid, NULL, 0);
    }
    fx_teardown(&a->f);
    free(a);
    return 0;
}

static bool log_contains(struct api *a, const char *needle)
{
    char *log = read_text(a->log);
    bool found = log && strstr(log, needle);
    free(log);
    return found;
}

static void test_flows_and_signals(void **state)
{
    struct api *a = *state;
    struct fx *f = &a->f;
    start_daemon(a, NULL);

    struct cairn_msg *m = fx_req(f, CAIRN_MSG_PING, NULL, NULL, 0);
    cairn_msg_set_bin(m, "echo", "xyz", 3);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    const uint8_t *e;
    size_t el;
    assert_int_equal(cairn_msg_get_bin(r, "echo", &e, &el), CAIRN_OK);
    assert_int_equal(el, 3);
    assert_true(fx_u64(r, "now") > 0);
    cairn_msg_destroy(&r);

    fx_create_app(f, "app1", f->app_token, &f->app_token_len);
    m = fx_app_req(f, CAIRN_MSG_CLUSTER_STATUS);
    r = fx_expect(f, &m, CAIRN_OK);
    const struct cairn_mval *ws;
    size_t nw = 99;
    assert_int_equal(cairn_msg_get_array(r, "workers", &ws, &nw), CAIRN_OK);
    assert_int_equal(nw, 0);
    assert_int_equal(fx_u64(r, "replicas"), 2);
    cairn_msg_destroy(&r);

    r = fx_submit(f, "noop", "first", NULL, 0);
    assert_string_equal(fx_str(r, "state"), "queued");
    cairn_msg_destroy(&r);

    /* a worker joins over the worker endpoint (set by a dashed flag) and gets the job */
    fx_worker_register(f, 0);
    struct cairn_msg *d = fx_next_dispatch(f, 0, 3000);
    assert_non_null(d);
    fx_ack(f, 0, d, CAIRN_OK);
    assert_int_equal(fx_result(f, 0, fx_str(d, "job"), 0, NULL), CAIRN_OK);
    r = fx_job_get(f, fx_str(d, "job"), 2000);
    assert_string_equal(fx_str(r, "state"), "succeeded");
    cairn_msg_destroy(&r);
    cairn_msg_destroy(&d);

    /* garbage, then still alive */
    uint64_t seed = 5;
    for (int i = 0; i < 200; i++) {
        uint8_t junk[512];
        tu_fill_random(&seed, junk, sizeof(junk));
        const uint8_t *fr[3] = {junk, junk + 100, junk + 200};
        size_t lens[3] = {(size_t)(tu_rand(&seed) % 512), 7, 0};
        if (i % 3 == 0)
            junk[0] = 0x84; /* a map header: deeper into the decoder */
        assert_int_equal(cairn_sock_send_raw(f->client, NULL, fr, lens, 1 + (size_t)(i % 3)), CAIRN_OK);
    }
    m = fx_req(f, CAIRN_MSG_PING, NULL, NULL, 0);
    r = fx_call_on(f, f->client, &m, 5000);
    assert_non_null(r);
    cairn_msg_destroy(&r);

    /* SIGHUP reloads the allow-lists and keeps serving */
    assert_int_equal(kill(a->pid, SIGHUP), 0);
    m = fx_req(f, CAIRN_MSG_PING, NULL, NULL, 0);
    r = fx_call_on(f, f->client, &m, 5000);
    assert_non_null(r);
    cairn_msg_destroy(&r);

    stop_daemon(a, 0);
    assert_true(log_contains(a, "created app 'app1'"));
    assert_true(log_contains(a, "worker 'w1' joined"));
    assert_true(log_contains(a, "stopped"));
    char hex[129];
    cairn_hex_encode(hex, f->app_token, f->app_token_len);
    assert_false(log_contains(a, hex));
    assert_false(log_contains(a, f->admin_hex));
    assert_false(log_contains(a, f->coord_keys.secret_z85));
}

static void test_restart_keeps_records(void **state)
{
    struct api *a = *state;
    struct fx *f = &a->f;
    start_daemon(a, (const char *const[]){"--test-clock", NULL});
    fx_create_app(f, "app1", f->app_token, &f->app_token_len);
    struct cairn_msg *r = fx_submit(f, "noop", "keep-me", NULL, 0);
    char *id = strdup(fx_str(r, "job"));
    cairn_msg_destroy(&r);
    struct cairn_msg *m = fx_admin_req(f, CAIRN_MSG_ADMIN_CLOCK_ADVANCE);
    cairn_msg_set_u64(m, "seconds", 3600);
    r = fx_expect(f, &m, CAIRN_OK);
    uint64_t advanced = fx_u64(r, "now");
    cairn_msg_destroy(&r);
    stop_daemon(a, 0);

    start_daemon(a, (const char *const[]){"--test-clock", NULL});
    r = fx_job_get(f, id, 0);
    assert_int_equal(cairn_msg_code(r), CAIRN_OK);
    assert_string_equal(fx_str(r, "state"), "queued");
    cairn_msg_destroy(&r);
    r = fx_submit(f, "noop", "keep-me", NULL, 0);
    assert_string_equal(fx_str(r, "job"), id);
    cairn_msg_destroy(&r);
    m = fx_req(f, CAIRN_MSG_PING, NULL, NULL, 0);
    r = fx_expect(f, &m, CAIRN_OK);
    assert_true(fx_u64(r, "now") >= advanced);
    cairn_msg_destroy(&r);
    /* creating it again: EEXIST */
    m = fx_admin_req(f, CAIRN_MSG_APP_CREATE);
    cairn_msg_set_str(m, "name", "app1");
    r = fx_expect(f, &m, CAIRN_EEXIST);
    cairn_msg_destroy(&r);
    stop_daemon(a, 0);
    free(id);
}

static int run_tool(struct api *a, const char *const *args)
{
    const char *argv[16];
    int n = 0;
    argv[n++] = CAIRN_COORDINATOR_BIN;
    for (int i = 0; args[i]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(a->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return wait_exit(pid, 20000);
}

static void test_startup_and_tools(void **state)
{
    struct api *a = *state;
    struct fx *f = &a->f;
    const char *conf = strdup(tu_path("%s/coordinator.conf", f->dir));
    const char *mk = strdup(tu_path("%s/new.master.key", f->dir));
    const char *tok = strdup(tu_path("%s/new.admin.token", f->dir));

    assert_int_equal(run_tool(a, (const char *const[]){"--init-master-key", mk, NULL}), 0);
    size_t n = 0;
    uint8_t *k1 = tu_read_file(mk, &n);
    assert_int_equal(n, 32);
    struct stat st;
    assert_int_equal(stat(mk, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(run_tool(a, (const char *const[]){"--init-master-key", mk, NULL}), CAIRN_EEXIST);
    uint8_t *k2 = tu_read_file(mk, &n);
    assert_memory_equal(k1, k2, 32);
    free(k1);
    free(k2);
    assert_int_equal(run_tool(a, (const char *const[]){"--init-admin-token", tok, NULL}), 0);
    uint8_t *t = tu_read_file(tok, &n);
    assert_int_equal(n, 64);
    for (int i = 0; i < 64; i++)
        assert_non_null(strchr("0123456789abcdef", t[i]));
    free(t);
    assert_int_equal(stat(tok, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(run_tool(a, (const char *const[]){"--init-admin-token", tok, NULL}), CAIRN_EEXIST);

    /* the example config in deploy/ is the table's */
    unlink(a->log);
    assert_int_equal(run_tool(a, (const char *const[]){"--print-example-config", NULL}), 0);
    char *printed = read_text(a->log);
    char *shipped = read_text(CAIRN_SOURCE_DIR "/deploy/coordinator.conf.example");
    assert_non_null(printed);
    assert_non_null(shipped);
    assert_string_equal(printed, shipped);
    free(printed);
    free(shipped);

    /* refusals at start-up, each with its code */
    assert_int_equal(run_tool(a, (const char *const[]){"--config", conf, "--no_such_setting", "1", NULL}),
                     CAIRN_EINVAL);
    assert_int_equal(run_tool(a, (const char *const[]){"--config", conf, "--heartbeat_timeout", "1s", NULL}),
                     CAIRN_EINVAL);
    chmod(tu_path("%s/master.key", f->dir), 0644);
    assert_int_equal(run_tool(a, (const char *const[]){"--config", conf, NULL}), CAIRN_EPERM);
    assert_true(log_contains(a, "master key"));
    chmod(tu_path("%s/master.key", f->dir), 0600);
    assert_int_equal(run_tool(a, (const char *const[]){"--config", conf, "--master_key", tok, NULL}), CAIRN_EKEY);
    assert_int_equal(run_tool(a, (const char *const[]){"--config", conf, "--admin_token_file", "/nonexistent", NULL}),
                     CAIRN_ENOTFOUND);
    assert_int_equal(run_tool(a, (const char *const[]){"--config", conf, "--admin_token_file", mk, NULL}),
                     CAIRN_EKEY);

    /* and the made files work: start on them, create an app with the new admin token */
    uint8_t *hex = tu_read_file(tok, &n);
    char hs[65];
    memcpy(hs, hex, 64);
    hs[64] = '\0';
    free(hex);
    assert_int_equal(cairn_hex_decode(f->admin_raw, 32, hs), CAIRN_OK);
    start_daemon(a, (const char *const[]){"--master-key", mk, "--admin-token-file", tok, NULL});
    fx_create_app(f, "app1", f->app_token, &f->app_token_len);
    stop_daemon(a, 0);
    free((void *)conf);
    free((void *)mk);
    free((void *)tok);
}

/* ---- throughput ---- */

struct bench_worker {
    struct fx *f;
    atomic_bool stop;
    atomic_ulong done;
};

static void *bench_worker_main(void *arg)
{
    struct bench_worker *bw = arg;
    struct fx *f = bw->f;
    struct cairn_sock *s = NULL;
    if (cairn_sock_client(f->net, f->worker_ep, &f->w[0].keys, f->coord_keys.public_z85, NULL, &s) != CAIRN_OK)
        return NULL;
    uint64_t rid = 1000000;
    struct cairn_msg *reg = cairn_msg_new(CAIRN_MSG_WORKER_REGISTER);
    cairn_msg_set_rid(reg, rid++);
    cairn_msg_set_str(reg, "id", "w1");
    cairn_msg_set_str(reg, "peer", "tcp://127.0.0.1:7310");
    cairn_msg_set_str(reg, "public_key", f->w[0].keys.public_z85);
    cairn_msg_set_u64(reg, "capacity", 8);
    cairn_msg_set_str(reg, "fingerprint", "runsc-none");
    cairn_sock_send(s, reg);
    cairn_msg_destroy(&reg);
    while (!atomic_load(&bw->stop)) {
        struct cairn_msg *m = NULL;
        if (cairn_sock_recv(s, 20, &m) != CAIRN_OK) {
            cairn_msg_destroy(&m);
            continue;
        }
        if (!cairn_msg_is_reply(m)) {
            struct cairn_msg *ack = cairn_msg_reply(m, CAIRN_OK, NULL);
            cairn_sock_send(s, ack);
            cairn_msg_destroy(&ack);
            if (cairn_msg_type(m) == CAIRN_MSG_JOB_DISPATCH) {
                const char *job = NULL;
                cairn_msg_get_str(m, "job", &job, NULL);
                struct cairn_msg *res = cairn_msg_new(CAIRN_MSG_JOB_RESULT);
                cairn_msg_set_rid(res, rid++);
                cairn_msg_set_str(res, "job", job);
                cairn_msg_set_u64(res, "err_code", 0);
                struct cairn_mval *mv = cairn_msg_set_map(res, "result");
                cairn_mval_put_str(res, mv, "worker", "w1");
                while (cairn_sock_send(s, res) == CAIRN_EAGAIN)
                    usleep(100);
                cairn_msg_destroy(&res);
                atomic_fetch_add(&bw->done, 1);
            }
        }
        cairn_msg_destroy(&m);
    }
    cairn_sock_destroy(&s);
    return NULL;
}

static void test_dispatch_throughput(void **state)
{
    struct api *a = *state;
    struct fx *f = &a->f;
    start_daemon(a, (const char *const[]){"--log_level", "warn", "--heartbeat_timeout", "60s", NULL});
    fx_create_app(f, "app1", f->app_token, &f->app_token_len);
    struct bench_worker bw = {.f = f};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, bench_worker_main, &bw), 0);
    /* wait until the worker is alive */
    for (int i = 0;; i++) {
        struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_CLUSTER_STATUS);
        struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
        size_t nw = 0;
        const struct cairn_mval *ws;
        cairn_msg_get_array(r, "workers", &ws, &nw);
        cairn_msg_destroy(&r);
        if (nw == 1)
            break;
        assert_true(i < 200);
        usleep(10000);
    }

    enum { N = 20000, WINDOW = 1000 };
    uint64_t t0 = cairn_now_mono_ns();
    size_t sent = 0, ok = 0, replies = 0;
    char req[32];
    while (replies < N) {
        while (sent < N && sent - replies < WINDOW) {
            struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_JOB_SUBMIT);
            cairn_msg_set_str(m, "kind", "noop");
            snprintf(req, sizeof(req), "bench-%zu", sent);
            cairn_msg_set_str(m, "req_id", req);
            cairn_msg_set_map(m, "params");
            cairn_msg_set_u64(m, "wait_ms", 30000);
            int rc = cairn_sock_send(f->client, m);
            cairn_msg_destroy(&m);
            if (rc == CAIRN_EAGAIN)
                break;
            assert_int_equal(rc, CAIRN_OK);
            sent++;
        }
        struct cairn_msg *r = NULL;
        int rc = cairn_sock_recv(f->client, 10000, &r);
        if (rc != CAIRN_OK)
            fail_msg("bench: %zu of %zu replies, then %s", replies, sent, cairn_err_name(rc));
        replies++;
        if (cairn_msg_code(r) == CAIRN_OK && !strcmp(fx_str(r, "state"), "succeeded"))
            ok++;
        cairn_msg_destroy(&r);
    }
    double secs = (double)(cairn_now_mono_ns() - t0) / 1e9;
    double rate = N / secs;
    print_message("dispatch throughput: %d noop jobs end to end in %.2f s = %.0f jobs/s (worker ran %lu)\n", N,
                  secs, rate, (unsigned long)atomic_load(&bw.done));
    atomic_store(&bw.stop, true);
    pthread_join(th, NULL);
    assert_int_equal(ok, N);
    const char *strict = getenv("CAIRN_BENCH_STRICT");
    assert_true(rate >= (strict && *strict == '1' ? 5000.0 : 1000.0));
    stop_daemon(a, 0);
}

int main(void)
{
    cairn_log_set_level(CAIRN_LOG_WARN);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_flows_and_signals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_keeps_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_startup_and_tools, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_throughput, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
