/*
 * test_coord_fixture.h: what the coordinator tests share (header-only, one
 * copy per test executable): a temp dir with real key files, allow-lists, an
 * admin token and a master key; a coordinator config over them; a client and
 * fake workers on real CURVE sockets; request helpers.
 *
 * In-process mode (test_coord_jobs): the test owns the struct coord and
 * drives its loop with coord_step() while it waits for replies, so every
 * interleaving is deterministic. Child-process mode (test_coord_api): the
 * real binary runs and the helpers just wait on the sockets (fx.c == NULL).
 */
#ifndef CAIRN_TEST_COORD_FIXTURE_H
#define CAIRN_TEST_COORD_FIXTURE_H

#include "testutil.h"

#include "coord.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/log.h"
#include "cairn/proto.h"
#include "cairn/transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FX_MAX_WORKERS 4
#define FX_MAX_STASH 64

struct fx_worker {
    char id[32];
    struct cairn_curve_keys keys;
    struct cairn_sock *s;
    uint64_t rid;
    uint64_t epoch;
    struct cairn_msg *stash[FX_MAX_STASH]; /* job.dispatch messages that arrived while the test waited for */
    size_t nstash;                         /* something else (fx_wk_call), oldest first */
};

struct fx {
    char *dir;
    struct cairn_curve_keys coord_keys, client_keys, stranger_keys;
    uint8_t admin_raw[32];
    char admin_hex[65];
    struct coord_config cfg;
    struct coord *c;            /* in-process coordinator, or NULL */
    char client_ep[256], worker_ep[256];
    struct cairn_net *net;      /* the test's own context (client side) */
    struct cairn_sock *client;
    uint64_t rid;
    struct fx_worker w[FX_MAX_WORKERS];
    uint8_t app_token[64];
    size_t app_token_len;
};

static inline void fx_set(struct fx *f, const char *name, const char *value)
{
    if (cairn_config_set(coord_options, coord_noptions, &f->cfg, name, value, "test") != CAIRN_OK)
        fail_msg("config %s=%s: %s", name, value, cairn_err_msg());
}

static inline void fx_write_private(const char *path, const void *data, size_t n)
{
    tu_write_file(path, data, n);
    chmod(path, 0600);
}

/* Files and keys; cfg with defaults, test-friendly timings and tcp://127.0.0.1:* endpoints. */
static inline void fx_files(struct fx *f, const char *tag, int nworkers)
{
    f->dir = tu_tempdir(tag);
    assert_int_equal(cairn_crypto_init(), CAIRN_OK);
    assert_int_equal(cairn_curve_keypair(&f->coord_keys), CAIRN_OK);
    assert_int_equal(cairn_curve_keypair(&f->client_keys), CAIRN_OK);
    assert_int_equal(cairn_curve_keypair(&f->stranger_keys), CAIRN_OK);
    assert_int_equal(cairn_curve_keys_write(tu_path("%s/coord.key", f->dir), &f->coord_keys), CAIRN_OK);
    char allow[4096];
    snprintf(allow, sizeof(allow), "# clients\n%s test client\n", f->client_keys.public_z85);
    tu_write_file(tu_path("%s/clients.allow", f->dir), allow, strlen(allow));
    size_t off = (size_t)snprintf(allow, sizeof(allow), "# workers\n");
    for (int i = 0; i < nworkers && i < FX_MAX_WORKERS; i++) {
        snprintf(f->w[i].id, sizeof(f->w[i].id), "w%d", i + 1);
        assert_int_equal(cairn_curve_keypair(&f->w[i].keys), CAIRN_OK);
        off += (size_t)snprintf(allow + off, sizeof(allow) - off, "%s %s\n", f->w[i].keys.public_z85, f->w[i].id);
    }
    tu_write_file(tu_path("%s/workers.allow", f->dir), allow, strlen(allow));
    cairn_random_bytes(f->admin_raw, sizeof(f->admin_raw));
    cairn_hex_encode(f->admin_hex, f->admin_raw, 32);
    char tok[80];
    snprintf(tok, sizeof(tok), "%s\n", f->admin_hex);
    fx_write_private(tu_path("%s/admin.token", f->dir), tok, strlen(tok));
    uint8_t mk[32];
    cairn_random_bytes(mk, sizeof(mk));
    fx_write_private(tu_path("%s/master.key", f->dir), mk, sizeof(mk));

    assert_int_equal(cairn_config_defaults(coord_options, coord_noptions, &f->cfg), CAIRN_OK);
    fx_set(f, "data_dir", tu_path("%s/data", f->dir));
    fx_set(f, "keys", tu_path("%s/coord.key", f->dir));
    fx_set(f, "clients_allow", tu_path("%s/clients.allow", f->dir));
    fx_set(f, "workers_allow", tu_path("%s/workers.allow", f->dir));
    fx_set(f, "admin_token_file", tu_path("%s/admin.token", f->dir));
    fx_set(f, "master_key", tu_path("%s/master.key", f->dir));
    fx_set(f, "client_endpoint", "tcp://127.0.0.1:*");
    fx_set(f, "worker_endpoint", "tcp://127.0.0.1:*");
    fx_set(f, "heartbeat_interval", "100ms");
    fx_set(f, "heartbeat_timeout", "3s"); /* tests of deaths restart with a shorter one */
    assert_int_equal(cairn_net_new(&f->net), CAIRN_OK);
}

static inline void fx_client_connect(struct fx *f, const struct cairn_curve_keys *k)
{
    cairn_sock_destroy(&f->client);
    if (cairn_sock_client(f->net, f->client_ep, k, f->coord_keys.public_z85, NULL, &f->client) != CAIRN_OK)
        fail_msg("client: %s", cairn_err_msg());
}

/* In-process coordinator over f->cfg; connects the client. */
static inline void fx_coord_start(struct fx *f)
{
    if (coord_new(&f->c, &f->cfg) != CAIRN_OK)
        fail_msg("coord_new: %s", cairn_err_msg());
    snprintf(f->client_ep, sizeof(f->client_ep), "%s", cairn_sock_endpoint(f->c->csock));
    snprintf(f->worker_ep, sizeof(f->worker_ep), "%s", cairn_sock_endpoint(f->c->wsock));
    fx_client_connect(f, &f->client_keys);
}

static inline void fx_worker_close(struct fx *f, int i)
{
    cairn_sock_destroy(&f->w[i].s);
}

static inline void fx_coord_stop(struct fx *f)
{
    for (int i = 0; i < FX_MAX_WORKERS; i++)
        fx_worker_close(f, i);
    cairn_sock_destroy(&f->client);
    coord_destroy(&f->c);
    assert_null(f->c);
}

/* Drop every stashed dispatch (fx_wk_call). */
static inline void fx_stash_drop(struct fx *f)
{
    for (int i = 0; i < FX_MAX_WORKERS; i++)
        while (f->w[i].nstash)
            cairn_msg_destroy(&f->w[i].stash[--f->w[i].nstash]);
}

static inline void fx_teardown(struct fx *f)
{
    fx_stash_drop(f);
    fx_coord_stop(f);
    cairn_net_destroy(&f->net);
    cairn_config_release(coord_options, coord_noptions, &f->cfg);
    for (int i = 0; i < FX_MAX_WORKERS; i++)
        cairn_curve_keys_clear(&f->w[i].keys);
    tu_rmrf(f->dir);
    free(f->dir);
}

/* Turn the coordinator's loop (in-process) or just wait (child process). */
static inline void fx_pump(struct fx *f, int ms)
{
    if (f->c) {
        if (coord_step(f->c, ms) != CAIRN_OK)
            fail_msg("coord_step: %s", cairn_err_msg());
    } else {
        usleep((useconds_t)ms * 1000);
    }
}

/* Receive on s, pumping the coordinator; NULL after timeout_ms. */
static inline struct cairn_msg *fx_recv(struct fx *f, struct cairn_sock *s, int timeout_ms)
{
    uint64_t end = cairn_now_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        struct cairn_msg *m = NULL;
        int rc = cairn_sock_recv(s, f->c ? 0 : 20, &m);
        if (rc == CAIRN_OK)
            return m;
        if (rc != CAIRN_ETIMEDOUT)
            fail_msg("recv: %s: %s", cairn_err_name(rc), cairn_err_msg());
        if (cairn_now_mono_ns() > end)
            return NULL;
        if (f->c)
            fx_pump(f, 5);
    }
}

/* A client request with app/token set. */
static inline struct cairn_msg *fx_req(struct fx *f, enum cairn_msg_type t, const char *app, const void *tok, size_t toklen)
{
    struct cairn_msg *m = cairn_msg_new(t);
    assert_non_null(m);
    cairn_msg_set_rid(m, ++f->rid);
    if (app)
        cairn_msg_set_app(m, app);
    if (tok)
        cairn_msg_set_token(m, tok, toklen);
    return m;
}

static inline struct cairn_msg *fx_app_req(struct fx *f, enum cairn_msg_type t)
{
    return fx_req(f, t, "app1", f->app_token, f->app_token_len);
}

static inline struct cairn_msg *fx_admin_req(struct fx *f, enum cairn_msg_type t)
{
    return fx_req(f, t, COORD_ADMIN_APP, f->admin_raw, sizeof(f->admin_raw));
}

/* Send *m on the client and wait for the reply to it (destroys *m). */
static inline struct cairn_msg *fx_call_on(struct fx *f, struct cairn_sock *s, struct cairn_msg **m, int timeout_ms)
{
    uint64_t rid = cairn_msg_rid(*m);
    if (cairn_sock_send(s, *m) != CAIRN_OK)
        fail_msg("send: %s", cairn_err_msg());
    cairn_msg_destroy(m);
    uint64_t end = cairn_now_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        int left = (int)((end - cairn_now_mono_ns()) / 1000000ull);
        if (cairn_now_mono_ns() >= end)
            return NULL;
        struct cairn_msg *r = fx_recv(f, s, left > 0 ? left : 1);
        if (!r)
            return NULL;
        if (cairn_msg_rid(r) == rid)
            return r;
        cairn_msg_destroy(&r); /* a late answer to an earlier, timed-out call */
    }
}

static inline struct cairn_msg *fx_call(struct fx *f, struct cairn_msg **m)
{
    struct cairn_msg *r = fx_call_on(f, f->client, m, 5000);
    if (!r)
        fail_msg("no reply within 5 s");
    return r;
}

/* Call and expect a code; returns the reply (caller destroys). */
static inline struct cairn_msg *fx_expect(struct fx *f, struct cairn_msg **m, int code)
{
    struct cairn_msg *r = fx_call(f, m);
    if (cairn_msg_code(r) != code)
        fail_msg("expected %s, got %s: %s", cairn_err_name(code), cairn_err_name(cairn_msg_code(r)),
                 cairn_msg_text(r) ? cairn_msg_text(r) : "");
    return r;
}

static inline void fx_create_app(struct fx *f, const char *name, uint8_t *tok, size_t *toklen)
{
    struct cairn_msg *m = fx_admin_req(f, CAIRN_MSG_APP_CREATE);
    cairn_msg_set_str(m, "name", name);
    struct cairn_msg *r = fx_expect(f, &m, CAIRN_OK);
    const uint8_t *t;
    size_t tl;
    assert_int_equal(cairn_msg_get_bin(r, "token", &t, &tl), CAIRN_OK);
    assert_true(tl >= 16 && tl <= 64);
    memcpy(tok, t, tl);
    *toklen = tl;
    cairn_msg_destroy(&r);
}

/* job.submit; returns the reply (code checked OK). */
static inline struct cairn_msg *fx_submit(struct fx *f, const char *kind, const char *req_id, const char *pin,
                                   uint64_t wait_ms)
{
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_JOB_SUBMIT);
    cairn_msg_set_str(m, "kind", kind);
    cairn_msg_set_str(m, "req_id", req_id);
    struct cairn_mval *p = cairn_msg_set_map(m, "params");
    cairn_mval_put_u64(m, p, "n", 7);
    if (pin)
        cairn_mval_put_str(m, p, "worker", pin);
    if (wait_ms)
        cairn_msg_set_u64(m, "wait_ms", wait_ms);
    struct cairn_msg *r = fx_call_on(f, f->client, &m, (int)wait_ms + 5000);
    if (!r)
        fail_msg("no reply to job.submit");
    if (cairn_msg_code(r) != CAIRN_OK)
        fail_msg("job.submit: %s: %s", cairn_err_name(cairn_msg_code(r)), cairn_msg_text(r) ? cairn_msg_text(r) : "");
    return r;
}

static inline const char *fx_str(const struct cairn_msg *r, const char *field)
{
    const char *s = NULL;
    if (cairn_msg_get_str(r, field, &s, NULL) != CAIRN_OK)
        return "";
    return s;
}

static inline uint64_t fx_u64(const struct cairn_msg *r, const char *field)
{
    uint64_t v = UINT64_MAX;
    cairn_msg_get_u64(r, field, &v);
    return v;
}

static inline struct cairn_msg *fx_job_get(struct fx *f, const char *id, uint64_t wait_ms)
{
    struct cairn_msg *m = fx_app_req(f, CAIRN_MSG_JOB_GET);
    cairn_msg_set_str(m, "job", id);
    if (wait_ms)
        cairn_msg_set_u64(m, "wait_ms", wait_ms);
    struct cairn_msg *r = fx_call_on(f, f->client, &m, (int)wait_ms + 5000);
    if (!r)
        fail_msg("no reply to job.get");
    return r;
}

/* ---- fake workers ---- */

static inline void fx_worker_connect(struct fx *f, int i)
{
    cairn_sock_destroy(&f->w[i].s);
    if (cairn_sock_client(f->net, f->worker_ep, &f->w[i].keys, f->coord_keys.public_z85, NULL, &f->w[i].s) !=
        CAIRN_OK)
        fail_msg("worker client: %s", cairn_err_msg());
}

static inline struct cairn_msg *fx_worker_req(struct fx *f, int i, enum cairn_msg_type t)
{
    struct cairn_msg *m = cairn_msg_new(t);
    cairn_msg_set_rid(m, ++f->w[i].rid);
    return m;
}

static inline struct cairn_msg *fx_register_msg(struct fx *f, int i, const char *id, const char *pub)
{
    struct cairn_msg *m = fx_worker_req(f, i, CAIRN_MSG_WORKER_REGISTER);
    cairn_msg_set_str(m, "id", id);
    cairn_msg_set_str(m, "peer", tu_path("tcp://127.0.0.1:%d", 7310 + i));
    cairn_msg_set_str(m, "public_key", pub);
    cairn_msg_set_u64(m, "capacity", 8);
    cairn_msg_set_str(m, "fingerprint", "runsc-none");
    return m;
}

/* Acknowledge a membership message to worker i, remembering its epoch. */
static inline void fx_membership_ack(struct fx *f, int i, const struct cairn_msg *r)
{
    uint64_t e = 0;
    cairn_msg_get_u64(r, "epoch", &e);
    f->w[i].epoch = e;
    struct cairn_msg *ack = cairn_msg_reply(r, CAIRN_OK, NULL);
    cairn_sock_send(f->w[i].s, ack);
    cairn_msg_destroy(&ack);
}

/*
 * Worker-side call: send, then wait for the reply with that rid; other
 * messages (membership, job.dispatch) that arrive meanwhile are acknowledged
 * (membership) or kept for the caller in *other (first one only; NULL-able).
 */
static inline struct cairn_msg *fx_wcall(struct fx *f, int i, struct cairn_msg **m, struct cairn_msg **other)
{
    uint64_t rid = cairn_msg_rid(*m);
    if (cairn_sock_send(f->w[i].s, *m) != CAIRN_OK)
        fail_msg("worker send: %s", cairn_err_msg());
    cairn_msg_destroy(m);
    for (int tries = 0; tries < 100; tries++) {
        struct cairn_msg *r = fx_recv(f, f->w[i].s, 5000);
        if (!r)
            fail_msg("worker %d: no reply within 5 s", i);
        if (cairn_msg_is_reply(r) && cairn_msg_rid(r) == rid)
            return r;
        if (!cairn_msg_is_reply(r) && cairn_msg_type(r) == CAIRN_MSG_MEMBERSHIP) {
            fx_membership_ack(f, i, r);
            cairn_msg_destroy(&r);
            continue;
        }
        if (other && !*other) {
            *other = r;
            continue;
        }
        cairn_msg_destroy(&r);
    }
    fail_msg("worker %d: reply lost", i);
    return NULL;
}

static inline void fx_worker_register(struct fx *f, int i)
{
    if (!f->w[i].s)
        fx_worker_connect(f, i);
    struct cairn_msg *m = fx_register_msg(f, i, f->w[i].id, f->w[i].keys.public_z85);
    struct cairn_msg *r = fx_wcall(f, i, &m, NULL);
    if (cairn_msg_code(r) != CAIRN_OK)
        fail_msg("register %s: %s: %s", f->w[i].id, cairn_err_name(cairn_msg_code(r)),
                 cairn_msg_text(r) ? cairn_msg_text(r) : "");
    f->w[i].epoch = fx_u64(r, "epoch");
    assert_true(fx_u64(r, "heartbeat_ms") > 0);
    cairn_msg_destroy(&r);
}

/* Heartbeat listing jobs (NULL-terminated ids); returns the reply. */
static inline struct cairn_msg *fx_heartbeat(struct fx *f, int i, const char *const *jobs)
{
    struct cairn_msg *m = fx_worker_req(f, i, CAIRN_MSG_WORKER_HEARTBEAT);
    cairn_msg_set_str(m, "id", f->w[i].id);
    cairn_msg_set_u64(m, "chunks", 1);
    cairn_msg_set_u64(m, "bytes", 2);
    cairn_msg_set_u64(m, "sandboxes", 0);
    struct cairn_mval *a = cairn_msg_set_array(m, "jobs");
    for (size_t k = 0; jobs && jobs[k]; k++)
        cairn_mval_push_str(m, a, jobs[k]);
    return fx_wcall(f, i, &m, NULL);
}

/* Wait for the next job.dispatch to worker i (acknowledging membership); NULL after timeout. */
static inline struct cairn_msg *fx_next_dispatch(struct fx *f, int i, int timeout_ms)
{
    uint64_t end = cairn_now_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (cairn_now_mono_ns() < end) {
        struct cairn_msg *r = fx_recv(f, f->w[i].s, 50);
        if (!r)
            continue;
        if (!cairn_msg_is_reply(r) && cairn_msg_type(r) == CAIRN_MSG_JOB_DISPATCH)
            return r;
        if (!cairn_msg_is_reply(r) && cairn_msg_type(r) == CAIRN_MSG_MEMBERSHIP)
            fx_membership_ack(f, i, r);
        cairn_msg_destroy(&r);
    }
    return NULL;
}

static inline void fx_ack(struct fx *f, int i, const struct cairn_msg *dispatch, int code)
{
    struct cairn_msg *ack = cairn_msg_reply(dispatch, code, code ? "busy" : NULL);
    assert_int_equal(cairn_sock_send(f->w[i].s, ack), CAIRN_OK);
    cairn_msg_destroy(&ack);
}

/* job.result from worker i; returns the ack's code. */
static inline int fx_result(struct fx *f, int i, const char *job, uint32_t code, const char *msg)
{
    struct cairn_msg *m = fx_worker_req(f, i, CAIRN_MSG_JOB_RESULT);
    cairn_msg_set_str(m, "job", job);
    cairn_msg_set_u64(m, "err_code", code);
    if (msg)
        cairn_msg_set_str(m, "err_msg", msg);
    if (!code) {
        struct cairn_mval *res = cairn_msg_set_map(m, "result");
        cairn_mval_put_str(m, res, "worker", f->w[i].id);
        cairn_mval_put_u64(m, res, "answer", 42);
    }
    struct cairn_msg *r = fx_wcall(f, i, &m, NULL);
    int rc = cairn_msg_code(r);
    cairn_msg_destroy(&r);
    return rc;
}

/* ---- fake workers that keep dispatches for later (sandbox, snapshot and retention tests) ---------------- */

/* Keep a dispatch for later, acknowledging it (the worker accepted the job). */
static inline void fx_stash_dispatch(struct fx *f, int i, struct cairn_msg *d)
{
    fx_ack(f, i, d, CAIRN_OK);
    assert_true(f->w[i].nstash < FX_MAX_STASH);
    f->w[i].stash[f->w[i].nstash++] = d;
}

/* Worker-side call: the reply to *m; dispatches meanwhile are stashed, membership acknowledged. */
static inline struct cairn_msg *fx_wk_call(struct fx *f, int i, struct cairn_msg **m)
{
    uint64_t rid = cairn_msg_rid(*m);
    assert_int_equal(cairn_sock_send(f->w[i].s, *m), CAIRN_OK);
    cairn_msg_destroy(m);
    for (;;) {
        struct cairn_msg *r = fx_recv(f, f->w[i].s, 5000);
        if (!r)
            fail_msg("worker %d: no reply within 5 s", i);
        if (cairn_msg_is_reply(r) && cairn_msg_rid(r) == rid)
            return r;
        if (!cairn_msg_is_reply(r) && cairn_msg_type(r) == CAIRN_MSG_MEMBERSHIP)
            fx_membership_ack(f, i, r);
        else if (!cairn_msg_is_reply(r) && cairn_msg_type(r) == CAIRN_MSG_JOB_DISPATCH) {
            fx_stash_dispatch(f, i, r);
            continue;
        }
        cairn_msg_destroy(&r);
    }
}

/* The next job.dispatch of worker i (stashed ones first), acknowledged with ack_code (CAIRN_OK: accepted;
   stashed ones were accepted already), or NULL after timeout_ms. */
static inline struct cairn_msg *fx_wk_dispatch_ack(struct fx *f, int i, int timeout_ms, int ack_code)
{
    uint64_t end = cairn_now_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    struct fx_worker *w = &f->w[i];
    for (;;) {
        if (w->nstash) {
            struct cairn_msg *d = w->stash[0];
            memmove(&w->stash[0], &w->stash[1], (w->nstash - 1) * sizeof(w->stash[0]));
            w->nstash--;
            return d;
        }
        if (!w->s || cairn_now_mono_ns() > end)
            return NULL;
        struct cairn_msg *r = fx_recv(f, w->s, 20);
        if (!r)
            continue;
        if (!cairn_msg_is_reply(r) && cairn_msg_type(r) == CAIRN_MSG_JOB_DISPATCH) {
            fx_ack(f, i, r, ack_code);
            return r;
        }
        if (!cairn_msg_is_reply(r) && cairn_msg_type(r) == CAIRN_MSG_MEMBERSHIP)
            fx_membership_ack(f, i, r);
        cairn_msg_destroy(&r);
    }
}

static inline struct cairn_msg *fx_wk_dispatch(struct fx *f, int i, int timeout_ms)
{
    return fx_wk_dispatch_ack(f, i, timeout_ms, CAIRN_OK);
}

/* The next job.dispatch of any worker (*wi: which), or NULL after timeout_ms. */
static inline struct cairn_msg *fx_wk_dispatch_any(struct fx *f, int *wi, int timeout_ms)
{
    uint64_t end = cairn_now_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (cairn_now_mono_ns() < end) {
        for (int i = 0; i < FX_MAX_WORKERS; i++) {
            if (!f->w[i].s && !f->w[i].nstash)
                continue;
            struct cairn_msg *d = fx_wk_dispatch(f, i, 1);
            if (d) {
                *wi = i;
                return d;
            }
        }
    }
    return NULL;
}

/* A dispatch's params map, and its fields ("" / UINT64_MAX / false when absent). */
static inline const struct cairn_mval *fx_params(const struct cairn_msg *d)
{
    const struct cairn_mval *p = NULL;
    size_t n = 0;
    assert_int_equal(cairn_msg_get_map(d, "params", &p, &n), CAIRN_OK);
    return p;
}

static inline const char *fx_pstr(const struct cairn_mval *map, const char *key)
{
    const char *s = NULL;
    size_t n = 0;
    if (cairn_mval_str(cairn_mval_get(map, key), &s, &n) != CAIRN_OK)
        return "";
    return s;
}

static inline uint64_t fx_pu64(const struct cairn_mval *map, const char *key)
{
    uint64_t v = UINT64_MAX;
    cairn_mval_u64(cairn_mval_get(map, key), &v);
    return v;
}

static inline bool fx_pbool(const struct cairn_mval *map, const char *key)
{
    bool v = false;
    cairn_mval_bool(cairn_mval_get(map, key), &v);
    return v;
}

#endif
