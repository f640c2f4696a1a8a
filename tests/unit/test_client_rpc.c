/*
 * test_client_rpc.c: libcairn against a scripted coordinator endpoint.
 *
 * The far end is a real CURVE ROUTER of proto/ (real keys, ZAP allow-list,
 * real codec) run by a thread of this test, answering the way
 * docs/internals/cluster.md says the coordinator does, so that we can also
 * make it misbehave on purpose: answer out of order, answer a request id that
 * was never sent, answer with an error, hold a job "running" for a while.
 * The real coordinator is exercised by test_client_cluster.c.
 *
 * - ping, cluster.status, app.create (admin token from a file, app "_admin"),
 *   admin.clock.advance: fields reach the wire and come back parsed.
 * - job.submit: app and token on the envelope, typed params, a generated
 *   req_id ("rq-" + 16 hex) or the caller's; the result map becomes JSON.
 * - Error replies keep the coordinator's code and message (client copy too).
 * - An unknown client key gets no answer: ETIMEDOUT naming the allow-list.
 * - Pipelined calls: replies out of order and a stray rid are matched by rid;
 *   a synchronous call in between keeps the early replies for cairn_job_recv.
 * - cairn_job_submit_many keeps the window and counts successes and failures.
 * - Waiting: a job that is still running is re-polled with job.get until done.
 */
#include "testutil.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/cairn.h"
#include "cairn/err.h"
#include "cairn/proto.h"
#include "cairn/transport.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define APP "default"
static const uint8_t app_token[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                      17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const uint8_t admin_token[32] = {0xaa, 0xbb, 0xcc, 0xdd, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                        17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 0xee};

enum mode { M_NORMAL, M_HOLD3, M_RUNNING_THEN_DONE, M_FAIL_ODD };

struct fx {
    char *dir;
    struct cairn_net *net;
    struct cairn_curve_keys server;
    struct cairn_sock *srv;
    char endpoint[128];
    pthread_t thread;
    atomic_bool stop;
    _Atomic int mode;
    atomic_int submits, gets;
    atomic_int bad; /* requests that broke the contract: checked by the tests */
    char last_req_id[80];
    char last_params[512];
    pthread_mutex_t mu;
};

static void bad(struct fx *f, const char *why)
{
    fprintf(stderr, "server: %s\n", why);
    atomic_fetch_add(&f->bad, 1);
}

static void send_reply(struct fx *f, struct cairn_msg **rep)
{
    if (cairn_sock_send(f->srv, *rep) != CAIRN_OK)
        bad(f, cairn_err_msg());
    cairn_msg_destroy(rep);
}

static bool token_is(const struct cairn_msg *m, const char *app, const uint8_t *tok, size_t n)
{
    const uint8_t *p = NULL;
    size_t len = 0;
    cairn_msg_token(m, &p, &len);
    const char *a = cairn_msg_app(m);
    return a && !strcmp(a, app) && len == n && !memcmp(p, tok, n);
}

static struct cairn_msg *job_reply(const struct cairn_msg *req, const char *id, const char *state, int code)
{
    struct cairn_msg *rep = cairn_msg_reply(req, CAIRN_OK, NULL);
    cairn_msg_set_str(rep, "job", id);
    cairn_msg_set_str(rep, "kind", "noop");
    cairn_msg_set_str(rep, "state", state);
    if (!strcmp(state, "succeeded")) {
        cairn_msg_set_str(rep, "worker", "w1");
        struct cairn_mval *res = cairn_msg_set_map(rep, "result");
        cairn_mval_put_str(rep, res, "worker", "w1");
    } else if (!strcmp(state, "failed")) {
        cairn_msg_set_u64(rep, "err_code", (uint64_t)code);
        cairn_msg_set_str(rep, "err_msg", "worker 'w1' died (no heartbeat for 5.0 s)");
    }
    return rep;
}

/* Record params as text "k=v;..." for the tests. */
static void record_params(struct fx *f, const struct cairn_msg *m)
{
    const struct cairn_mval *p = cairn_msg_get(m, "params");
    char buf[512] = "";
    size_t off = 0;
    for (size_t i = 0; p && i < cairn_mval_len(p); i++) {
        const char *k = NULL;
        const struct cairn_mval *v = NULL;
        cairn_mval_entry(p, i, &k, &v);
        uint64_t u = 0;
        const char *s = NULL;
        size_t n = 0;
        bool b = false;
        int w = 0;
        switch (cairn_mval_kind(v)) {
        case CAIRN_MV_UINT: cairn_mval_u64(v, &u); w = snprintf(buf + off, sizeof(buf) - off, "%s=u%llu;", k, (unsigned long long)u); break;
        case CAIRN_MV_STR: cairn_mval_str(v, &s, &n); w = snprintf(buf + off, sizeof(buf) - off, "%s=s%.*s;", k, (int)n, s); break;
        case CAIRN_MV_BOOL: cairn_mval_bool(v, &b); w = snprintf(buf + off, sizeof(buf) - off, "%s=b%d;", k, b); break;
        case CAIRN_MV_ARRAY: w = snprintf(buf + off, sizeof(buf) - off, "%s=a%zu;", k, cairn_mval_len(v)); break;
        default: w = snprintf(buf + off, sizeof(buf) - off, "%s=?;", k); break;
        }
        if (w > 0 && (size_t)w < sizeof(buf) - off)
            off += (size_t)w;
    }
    const char *rq = NULL;
    size_t rn = 0;
    cairn_msg_get_str(m, "req_id", &rq, &rn);
    pthread_mutex_lock(&f->mu);
    snprintf(f->last_params, sizeof(f->last_params), "%s", buf);
    snprintf(f->last_req_id, sizeof(f->last_req_id), "%.*s", (int)rn, rq ? rq : "");
    pthread_mutex_unlock(&f->mu);
}

static void *server_main(void *arg)
{
    struct fx *f = arg;
    struct cairn_msg *held[3] = {NULL, NULL, NULL};
    int nheld = 0;
    while (!atomic_load(&f->stop)) {
        struct cairn_msg *m = NULL;
        int rc = cairn_sock_recv(f->srv, 50, &m);
        if (rc == CAIRN_ETIMEDOUT)
            continue;
        if (rc != CAIRN_OK) {
            if (m) {
                struct cairn_msg *rep = cairn_msg_reply(m, rc, cairn_err_msg());
                send_reply(f, &rep);
            }
            cairn_msg_destroy(&m);
            continue;
        }
        struct cairn_msg *rep = NULL;
        int mode = atomic_load(&f->mode);
        switch (cairn_msg_type(m)) {
        case CAIRN_MSG_PING:
            rep = cairn_msg_reply(m, CAIRN_OK, NULL);
            cairn_msg_set_str(rep, "version", "test-1");
            cairn_msg_set_u64(rep, "proto", 1);
            cairn_msg_set_u64(rep, "now", 1234);
            break;
        case CAIRN_MSG_CLUSTER_STATUS: {
            if (!token_is(m, APP, app_token, sizeof(app_token))) {
                rep = cairn_msg_reply(m, CAIRN_EAUTH, "invalid app token for app 'default'");
                break;
            }
            rep = cairn_msg_reply(m, CAIRN_OK, NULL);
            struct cairn_mval *ws = cairn_msg_set_array(rep, "workers");
            for (int i = 0; i < 2; i++) {
                struct cairn_mval *w = cairn_mval_push_map(rep, ws);
                cairn_mval_put_str(rep, w, "id", i ? "w2" : "w1");
                cairn_mval_put_str(rep, w, "addr", i ? "tcp://127.0.0.1:7311" : "tcp://127.0.0.1:7310");
                cairn_mval_put_bool(rep, w, "alive", i == 0);
                cairn_mval_put_u64(rep, w, "chunks", 10 + (uint64_t)i);
                cairn_mval_put_u64(rep, w, "bytes", 4096);
                cairn_mval_put_u64(rep, w, "sandboxes", 0);
                cairn_mval_put_u64(rep, w, "last_seen", 999);
            }
            cairn_msg_set_u64(rep, "epoch", 7);
            cairn_msg_set_u64(rep, "replicas", 2);
            break;
        }
        case CAIRN_MSG_APP_CREATE:
            if (!token_is(m, "_admin", admin_token, sizeof(admin_token))) {
                rep = cairn_msg_reply(m, CAIRN_EAUTH, "invalid admin token");
                break;
            }
            rep = cairn_msg_reply(m, CAIRN_OK, NULL);
            cairn_msg_set_str(rep, "app", "new");
            cairn_msg_set_bin(rep, "token", app_token, sizeof(app_token));
            break;
        case CAIRN_MSG_ADMIN_CLOCK_ADVANCE: {
            uint64_t s = 0;
            cairn_msg_get_u64(m, "seconds", &s);
            rep = cairn_msg_reply(m, CAIRN_OK, NULL);
            cairn_msg_set_u64(rep, "now", s * 1000000000ull);
            break;
        }
        case CAIRN_MSG_JOB_SUBMIT: {
            int k = atomic_fetch_add(&f->submits, 1);
            if (!token_is(m, APP, app_token, sizeof(app_token))) {
                rep = cairn_msg_reply(m, CAIRN_EAUTH, "invalid app token for app 'default'");
                break;
            }
            record_params(f, m);
            char id[32];
            snprintf(id, sizeof(id), "jb-%016x", k);
            if (mode == M_HOLD3) {
                held[nheld++] = m;
                m = NULL;
                if (nheld == 3) {
                    /* a reply to a request id nobody sent, then 3, 1, 2 */
                    struct cairn_msg *stray = job_reply(held[0], "jb-stray", "succeeded", 0);
                    cairn_msg_set_rid(stray, 424242);
                    send_reply(f, &stray);
                    int order[3] = {2, 0, 1};
                    for (int i = 0; i < 3; i++) {
                        const char *rq = NULL;
                        size_t rn = 0;
                        cairn_msg_get_str(held[order[i]], "req_id", &rq, &rn);
                        char jid[80];
                        snprintf(jid, sizeof(jid), "jb-%.*s", (int)rn, rq);
                        struct cairn_msg *r = job_reply(held[order[i]], jid, "succeeded", 0);
                        send_reply(f, &r);
                    }
                    for (int i = 0; i < 3; i++)
                        cairn_msg_destroy(&held[i]);
                    nheld = 0;
                }
                break;
            }
            if (mode == M_RUNNING_THEN_DONE)
                rep = job_reply(m, id, "running", 0);
            else if (mode == M_FAIL_ODD && (k % 2))
                rep = job_reply(m, id, "failed", CAIRN_EUNAVAILABLE);
            else
                rep = job_reply(m, id, "succeeded", 0);
            break;
        }
        case CAIRN_MSG_JOB_GET: {
            int k = atomic_fetch_add(&f->gets, 1);
            const char *id = NULL;
            size_t n = 0;
            cairn_msg_get_str(m, "job", &id, &n);
            uint64_t wait = 0;
            cairn_msg_opt_u64(m, "wait_ms", 0, &wait);
            char jid[80];
            snprintf(jid, sizeof(jid), "%.*s", (int)n, id);
            if (!strcmp(jid, "jb-missing")) {
                rep = cairn_msg_reply(m, CAIRN_ENOTFOUND, "no job 'jb-missing'");
                break;
            }
            if (mode == M_RUNNING_THEN_DONE && k < 2) {
                if (wait > 0)
                    usleep(20000); /* a short long-poll */
                rep = job_reply(m, jid, "running", 0);
            } else {
                rep = job_reply(m, jid, "succeeded", 0);
            }
            break;
        }
        default:
            rep = cairn_msg_reply(m, CAIRN_EUNSUPPORTED, "not in this test");
            break;
        }
        if (rep)
            send_reply(f, &rep);
        cairn_msg_destroy(&m);
    }
    for (int i = 0; i < nheld; i++)
        cairn_msg_destroy(&held[i]);
    return NULL;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    pthread_mutex_init(&f->mu, NULL);
    f->dir = tu_tempdir("client-rpc");
    char pub[41];
    assert_int_equal(cairn_keypair_generate(tu_path("%s/client.key", f->dir), false, pub), CAIRN_OK);
    assert_int_equal(cairn_curve_keypair(&f->server), CAIRN_OK);
    assert_int_equal(cairn_curve_public_write(tu_path("%s/coordinator.pub", f->dir), f->server.public_z85), CAIRN_OK);
    char hex[65];
    cairn_hex_encode(hex, admin_token, sizeof(admin_token));
    char line[80];
    snprintf(line, sizeof(line), "%s\n", hex);
    tu_write_file(tu_path("%s/admin.token", f->dir), line, strlen(line));
    assert_int_equal(cairn_net_new(&f->net), CAIRN_OK);
    const char *keys[1] = {pub};
    assert_int_equal(cairn_net_allow_set(f->net, "clients", keys, 1), CAIRN_OK);
    assert_int_equal(cairn_sock_server(f->net, "tcp://127.0.0.1:*", &f->server, "clients", NULL, &f->srv), CAIRN_OK);
    snprintf(f->endpoint, sizeof(f->endpoint), "%s", cairn_sock_endpoint(f->srv));
    assert_int_equal(pthread_create(&f->thread, NULL, server_main, f), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    atomic_store(&f->stop, true);
    pthread_join(f->thread, NULL);
    cairn_sock_destroy(&f->srv);
    cairn_net_destroy(&f->net);
    cairn_curve_keys_clear(&f->server);
    tu_rmrf(f->dir);
    free(f->dir);
    pthread_mutex_destroy(&f->mu);
    free(f);
    return 0;
}

static struct cairn_client *client(struct fx *f, bool with_app, unsigned timeout_ms)
{
    struct cairn_client_opts o = {
        .endpoint = f->endpoint,
        .coordinator_key_file = tu_path("%s/coordinator.pub", f->dir),
        .client_key_file = tu_path("%s/client.key", f->dir),
        .app = with_app ? APP : NULL,
        .token = with_app ? app_token : NULL,
        .token_len = with_app ? sizeof(app_token) : 0,
        .admin_token_file = tu_path("%s/admin.token", f->dir),
        .timeout_ms = timeout_ms,
    };
    struct cairn_client *c = NULL;
    int rc = cairn_client_new(&o, &c);
    if (rc != CAIRN_OK)
        fail_msg("client_new: %s", cairn_err_msg());
    return c;
}

static void test_ping_status_admin(void **state)
{
    struct fx *f = *state;
    struct cairn_client *c = client(f, true, 5000);
    struct cairn_ping_info pi;
    assert_int_equal(cairn_ping(c, &pi), CAIRN_OK);
    assert_string_equal(pi.version, "test-1");
    assert_int_equal(pi.proto, 1);
    assert_int_equal(pi.now_ns, 1234);
    assert_true(pi.rtt_ns > 0);

    struct cairn_cluster_status *s = NULL;
    assert_int_equal(cairn_cluster_status(c, &s), CAIRN_OK);
    assert_int_equal(s->nworkers, 2);
    assert_int_equal(s->epoch, 7);
    assert_int_equal(s->replicas, 2);
    assert_string_equal(s->workers[0].id, "w1");
    assert_string_equal(s->workers[1].addr, "tcp://127.0.0.1:7311");
    assert_true(s->workers[0].alive);
    assert_false(s->workers[1].alive);
    assert_int_equal(s->workers[1].chunks, 11);
    assert_int_equal(s->workers[0].last_seen_ns, 999);
    assert_int_equal(cairn_cluster_status_alive(s), 1);
    cairn_cluster_status_free(&s);
    assert_null(s);

    uint8_t tok[CAIRN_TOKEN_MAX];
    size_t n = 0;
    assert_int_equal(cairn_app_create(c, "new", tok, &n), CAIRN_OK);
    assert_int_equal(n, 32);
    assert_memory_equal(tok, app_token, 32);
    assert_int_equal(cairn_app_create(c, "Bad Name", tok, &n), CAIRN_EINVAL);

    int64_t now = 0;
    assert_int_equal(cairn_admin_clock_advance(c, 29 * 86400, &now), CAIRN_OK);
    assert_int_equal(now, 29ll * 86400 * 1000000000ll);
    assert_int_equal(cairn_admin_clock_advance(c, 0, &now), CAIRN_EINVAL);
    cairn_client_destroy(&c);
    assert_null(c);
    cairn_client_destroy(&c);

    /* without app: ping works, app calls say what is missing */
    c = client(f, false, 5000);
    assert_int_equal(cairn_ping(c, &pi), CAIRN_OK);
    assert_int_equal(cairn_cluster_status(c, &s), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_client_err_msg(c), "opts.app"));
    cairn_client_destroy(&c);
    assert_int_equal(atomic_load(&f->bad), 0);
}

static void test_submit_and_errors(void **state)
{
    struct fx *f = *state;
    struct cairn_client *c = client(f, true, 5000);
    struct cairn_params *p = cairn_params_new();
    assert_int_equal(cairn_params_parse_kv(p, "bytes=1048576", false), CAIRN_OK);
    assert_int_equal(cairn_params_set_str(p, "worker", "w1"), CAIRN_OK);
    assert_int_equal(cairn_params_parse_kv(p, "ids=[a,b,c]", false), CAIRN_OK);
    assert_int_equal(cairn_params_set_bool(p, "fast", true), CAIRN_OK);
    struct cairn_job *j = NULL;
    assert_int_equal(cairn_job_submit(c, "noop", p, NULL, 0, &j), CAIRN_OK);
    assert_int_equal(j->state, CAIRN_JOB_SUCCEEDED);
    assert_string_equal(j->worker, "w1");
    assert_string_equal(j->result_json, "{\"worker\":\"w1\"}");
    assert_int_equal(strncmp(j->id, "jb-", 3), 0);
    cairn_job_free(&j);
    assert_null(j);
    pthread_mutex_lock(&f->mu);
    assert_string_equal(f->last_params, "bytes=u1048576;worker=sw1;ids=a3;fast=b1;");
    assert_int_equal(strlen(f->last_req_id), 19);
    assert_int_equal(strncmp(f->last_req_id, "rq-", 3), 0);
    pthread_mutex_unlock(&f->mu);

    assert_int_equal(cairn_job_submit(c, "noop", NULL, "my-req-1", 0, &j), CAIRN_OK);
    cairn_job_free(&j);
    pthread_mutex_lock(&f->mu);
    assert_string_equal(f->last_req_id, "my-req-1");
    assert_string_equal(f->last_params, "");
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(cairn_job_submit(c, "", NULL, NULL, 0, &j), CAIRN_EINVAL);
    assert_null(j);

    /* an error reply keeps its code and message */
    assert_int_equal(cairn_job_get(c, "jb-missing", 0, &j), CAIRN_ENOTFOUND);
    assert_null(j);
    assert_string_equal(cairn_err_msg(), "no job 'jb-missing'");
    assert_string_equal(cairn_client_err_msg(c), "no job 'jb-missing'");

    /* a wrong token is the coordinator's EAUTH */
    struct cairn_client_opts o = {
        .endpoint = f->endpoint,
        .coordinator_key_file = tu_path("%s/coordinator.pub", f->dir),
        .client_key_file = tu_path("%s/client.key", f->dir),
        .app = APP,
        .token = admin_token,
        .token_len = sizeof(admin_token),
    };
    struct cairn_client *c2 = NULL;
    assert_int_equal(cairn_client_new(&o, &c2), CAIRN_OK);
    assert_int_equal(cairn_job_submit(c2, "noop", NULL, NULL, 0, &j), CAIRN_EAUTH);
    assert_non_null(strstr(cairn_err_msg(), "invalid app token"));
    /* and admin calls without an admin token file say so */
    uint8_t tok[CAIRN_TOKEN_MAX];
    size_t n;
    assert_int_equal(cairn_app_create(c2, "x", tok, &n), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_err_msg(), "admin_token_file"));
    cairn_client_destroy(&c2);

    /* a failed job is a successful call with state failed */
    atomic_store(&f->mode, M_FAIL_ODD);
    atomic_store(&f->submits, 1);
    assert_int_equal(cairn_job_submit(c, "noop", NULL, NULL, CAIRN_WAIT_FOREVER, &j), CAIRN_OK);
    assert_int_equal(j->state, CAIRN_JOB_FAILED);
    assert_int_equal(j->err_code, CAIRN_EUNAVAILABLE);
    assert_string_equal(j->err_msg, "worker 'w1' died (no heartbeat for 5.0 s)");
    assert_null(j->result_json);
    cairn_job_free(&j);
    atomic_store(&f->mode, M_NORMAL);
    cairn_params_destroy(&p);
    cairn_client_destroy(&c);
    assert_int_equal(atomic_load(&f->bad), 0);
}

static void test_unknown_key_times_out(void **state)
{
    struct fx *f = *state;
    assert_int_equal(cairn_keypair_generate(tu_path("%s/stranger.key", f->dir), false, NULL), CAIRN_OK);
    assert_int_equal(cairn_keypair_generate(tu_path("%s/stranger.key", f->dir), false, NULL), CAIRN_EEXIST);
    struct cairn_client_opts o = {
        .endpoint = f->endpoint,
        .coordinator_key_file = tu_path("%s/coordinator.pub", f->dir),
        .client_key_file = tu_path("%s/stranger.key", f->dir),
        .timeout_ms = 400,
    };
    struct cairn_client *c = NULL;
    assert_int_equal(cairn_client_new(&o, &c), CAIRN_OK);
    struct cairn_ping_info pi;
    uint64_t t0 = cairn_now_mono_ns();
    assert_int_equal(cairn_ping(c, &pi), CAIRN_ETIMEDOUT);
    uint64_t el = cairn_now_mono_ns() - t0;
    assert_true(el >= 390000000ull && el < 3000000000ull);
    assert_non_null(strstr(cairn_client_err_msg(c), "no answer from the coordinator at tcp://127.0.0.1:"));
    assert_non_null(strstr(cairn_client_err_msg(c), "within 400 ms"));
    assert_non_null(strstr(cairn_client_err_msg(c), "clients allow-list"));
    cairn_client_destroy(&c);

    /* missing options are named */
    o.client_key_file = NULL;
    assert_int_equal(cairn_client_new(&o, &c), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_err_msg(), "client_key_file"));
    o.client_key_file = tu_path("%s/nope.key", f->dir);
    assert_int_equal(cairn_client_new(&o, &c), CAIRN_ENOTFOUND);
    assert_null(c);
}

static void test_pipelined_out_of_order(void **state)
{
    struct fx *f = *state;
    struct cairn_client *c = client(f, true, 5000);
    atomic_store(&f->mode, M_HOLD3);
    uint64_t t[3];
    const char *rq[3] = {"rq-a", "rq-b", "rq-c"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(cairn_job_submit_send(c, "noop", NULL, rq[i], 1000, &t[i]), CAIRN_OK);
    assert_int_equal(cairn_client_in_flight(c), 3);
    /* a synchronous call while the three are answered: their replies are kept */
    struct cairn_ping_info pi;
    usleep(100000);
    assert_int_equal(cairn_ping(c, &pi), CAIRN_OK);
    int seen = 0;
    for (int k = 0; k < 3; k++) {
        uint64_t ticket = 0;
        struct cairn_job *j = NULL;
        assert_int_equal(cairn_job_recv(c, 2000, &ticket, &j), CAIRN_OK);
        int i = ticket == t[0] ? 0 : ticket == t[1] ? 1 : ticket == t[2] ? 2 : -1;
        assert_true(i >= 0);
        char want[16];
        snprintf(want, sizeof(want), "jb-%s", rq[i]);
        assert_string_equal(j->id, want);
        seen |= 1 << i;
        cairn_job_free(&j);
    }
    assert_int_equal(seen, 7);
    assert_int_equal(cairn_client_in_flight(c), 0);
    uint64_t ticket = 1;
    struct cairn_job *j = NULL;
    assert_int_equal(cairn_job_recv(c, 10, &ticket, &j), CAIRN_EINVAL);
    assert_int_equal(ticket, 0);

    /* nothing arrives in time: ETIMEDOUT with no ticket; the call stays in flight */
    atomic_store(&f->mode, M_HOLD3);
    cairn_client_timeout_set(c, 300);
    assert_int_equal(cairn_job_submit_send(c, "noop", NULL, "rq-x", 0, &t[0]), CAIRN_OK);
    assert_int_equal(cairn_job_recv(c, 50, &ticket, &j), CAIRN_ETIMEDOUT);
    assert_int_equal(ticket, 0);
    assert_int_equal(cairn_client_in_flight(c), 1);
    /* its own deadline passes: ETIMEDOUT for that ticket, and the call is over */
    assert_int_equal(cairn_job_recv(c, -1, &ticket, &j), CAIRN_ETIMEDOUT);
    assert_int_equal(ticket, t[0]);
    assert_null(j);
    assert_non_null(strstr(cairn_client_err_msg(c), "within 300 ms"));
    assert_int_equal(cairn_client_in_flight(c), 0);
    cairn_client_destroy(&c);
    atomic_store(&f->mode, M_NORMAL);
}

static void test_submit_many(void **state)
{
    struct fx *f = *state;
    struct cairn_client *c = client(f, true, 5000);
    atomic_store(&f->mode, M_NORMAL);
    struct cairn_submit_stats st;
    assert_int_equal(cairn_job_submit_many(c, "noop", NULL, 300, 16, &st), CAIRN_OK);
    assert_int_equal(st.succeeded, 300);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.errors, 0);
    assert_true(st.lat_p50_ns > 0 && st.lat_p50_ns <= st.lat_p99_ns && st.lat_p99_ns <= st.lat_max_ns);
    assert_true(st.elapsed_ns > 0);
    assert_int_equal(cairn_client_in_flight(c), 0);

    atomic_store(&f->mode, M_FAIL_ODD);
    atomic_store(&f->submits, 0);
    assert_int_equal(cairn_job_submit_many(c, "noop", NULL, 10, 4, &st), CAIRN_EUNAVAILABLE);
    assert_int_equal(st.succeeded, 5);
    assert_int_equal(st.failed, 5);
    assert_non_null(strstr(cairn_client_err_msg(c), "5 of 10 jobs failed"));

    /* jobs still running when the first reply comes are re-polled */
    atomic_store(&f->mode, M_RUNNING_THEN_DONE);
    atomic_store(&f->gets, 0);
    assert_int_equal(cairn_job_submit_many(c, "noop", NULL, 3, 3, &st), CAIRN_OK);
    assert_int_equal(st.succeeded, 3);
    atomic_store(&f->mode, M_NORMAL);
    cairn_client_destroy(&c);
}

static void test_wait_repolls(void **state)
{
    struct fx *f = *state;
    struct cairn_client *c = client(f, true, 5000);
    atomic_store(&f->mode, M_RUNNING_THEN_DONE);
    atomic_store(&f->gets, 0);
    struct cairn_job *j = NULL;
    /* no wait: the submit's answer as it is */
    assert_int_equal(cairn_job_submit(c, "noop", NULL, NULL, 0, &j), CAIRN_OK);
    assert_int_equal(j->state, CAIRN_JOB_RUNNING);
    assert_false(cairn_job_finished(j));
    char id[80];
    snprintf(id, sizeof(id), "%s", j->id);
    cairn_job_free(&j);
    /* waiting: job.get until it finished (the server says running twice) */
    assert_int_equal(cairn_job_get(c, id, CAIRN_WAIT_FOREVER, &j), CAIRN_OK);
    assert_int_equal(j->state, CAIRN_JOB_SUCCEEDED);
    assert_int_equal(atomic_load(&f->gets), 3);
    cairn_job_free(&j);
    atomic_store(&f->mode, M_NORMAL);
    cairn_client_destroy(&c);
}

static void test_env(void **state)
{
    struct fx *f = *state;
    struct cairn_client *c = NULL;
    unsetenv("CAIRN_COORDINATOR");
    assert_int_equal(cairn_client_new_from_env(&c), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_err_msg(), "CAIRN_COORDINATOR is not set"));
    setenv("CAIRN_COORDINATOR", f->endpoint, 1);
    unsetenv("CAIRN_COORDINATOR_KEY");
    assert_int_equal(cairn_client_new_from_env(&c), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_err_msg(), "CAIRN_COORDINATOR_KEY is not set"));
    setenv("CAIRN_COORDINATOR_KEY", tu_path("%s/coordinator.pub", f->dir), 1);
    setenv("CAIRN_CLIENT_KEY", tu_path("%s/client.key", f->dir), 1);
    unsetenv("CAIRN_APP");
    unsetenv("CAIRN_TOKEN");
    unsetenv("CAIRN_TOKEN_FILE");
    unsetenv("CAIRN_ADMIN_TOKEN_FILE");
    setenv("CAIRN_TIMEOUT_MS", "soon", 1);
    assert_int_equal(cairn_client_new_from_env(&c), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_err_msg(), "CAIRN_TIMEOUT_MS"));
    setenv("CAIRN_TIMEOUT_MS", "3000", 1);
    assert_int_equal(cairn_client_new_from_env(&c), CAIRN_OK);
    struct cairn_cluster_status *s = NULL;
    assert_int_equal(cairn_cluster_status(c, &s), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_err_msg(), "CAIRN_APP is not set"));
    uint8_t tok[CAIRN_TOKEN_MAX];
    size_t n;
    assert_int_equal(cairn_app_create(c, "x", tok, &n), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_err_msg(), "CAIRN_ADMIN_TOKEN_FILE is not set"));
    cairn_client_destroy(&c);

    setenv("CAIRN_APP", APP, 1);
    assert_int_equal(cairn_client_new_from_env(&c), CAIRN_OK);
    assert_int_equal(cairn_cluster_status(c, &s), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_err_msg(), "CAIRN_TOKEN_FILE"));
    cairn_client_destroy(&c);

    char hex[65];
    cairn_hex_encode(hex, app_token, sizeof(app_token));
    char line[80];
    snprintf(line, sizeof(line), "  %s\n\n", hex);
    tu_write_file(tu_path("%s/app.token", f->dir), line, strlen(line));
    setenv("CAIRN_TOKEN_FILE", tu_path("%s/app.token", f->dir), 1);
    setenv("CAIRN_ADMIN_TOKEN_FILE", tu_path("%s/admin.token", f->dir), 1);
    assert_int_equal(cairn_client_new_from_env(&c), CAIRN_OK);
    assert_int_equal(cairn_cluster_status(c, &s), CAIRN_OK);
    cairn_cluster_status_free(&s);
    assert_int_equal(cairn_app_create(c, "new", tok, &n), CAIRN_OK);
    cairn_client_destroy(&c);

    setenv("CAIRN_TOKEN", "00", 1); /* wins over the file, and is checked by the first app call */
    assert_int_equal(cairn_client_new_from_env(&c), CAIRN_OK);
    struct cairn_ping_info pi;
    assert_int_equal(cairn_ping(c, &pi), CAIRN_OK);
    assert_int_equal(cairn_cluster_status(c, &s), CAIRN_EINVAL);
    assert_non_null(strstr(cairn_err_msg(), "CAIRN_TOKEN: a token is 32..128 hex digits"));
    cairn_client_destroy(&c);
    setenv("CAIRN_TOKEN_FILE", tu_path("%s/missing.token", f->dir), 1);
    unsetenv("CAIRN_TOKEN");
    assert_int_equal(cairn_client_new_from_env(&c), CAIRN_OK);
    assert_int_equal(cairn_cluster_status(c, &s), CAIRN_ENOTFOUND);
    assert_non_null(strstr(cairn_err_msg(), "missing.token"));
    cairn_client_destroy(&c);
    setenv("CAIRN_TOKEN", hex, 1);
    assert_int_equal(cairn_client_new_from_env(&c), CAIRN_OK);
    assert_int_equal(cairn_cluster_status(c, &s), CAIRN_OK);
    cairn_cluster_status_free(&s);
    cairn_client_destroy(&c);
    const char *vars[] = {"CAIRN_COORDINATOR", "CAIRN_COORDINATOR_KEY", "CAIRN_CLIENT_KEY", "CAIRN_APP", "CAIRN_TOKEN",
                          "CAIRN_TOKEN_FILE", "CAIRN_ADMIN_TOKEN_FILE", "CAIRN_TIMEOUT_MS"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ping_status_admin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submit_and_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_key_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_out_of_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submit_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_repolls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
