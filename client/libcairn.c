/*
 * libcairn.c: the C client API (cairn/cairn.h) over the wire protocol
 * (proto/PROTOCOL.md, docs/internals/cluster.md "Client").
 *
 * Design
 *   - One DEALER socket per client, CURVE-authenticated with the client's key
 *     pair and pinned to the coordinator's public key. Requests carry a request
 *     id (rid) from a per-client counter; replies are matched by rid, so a late
 *     reply to a call that already timed out is recognised and dropped.
 *   - Synchronous calls send, then receive until their own rid comes back or
 *     the deadline (timeout + any server-side wait) passes. The coordinator
 *     never answers an unknown client key (ZAP refuses the handshake), so the
 *     timeout message names the allow-list as a likely cause.
 *   - Pipelined calls (cairn_job_*_send / cairn_job_recv) live in a small
 *     table of calls in flight; a reply to one of them that arrives while a
 *     synchronous call waits is stashed, in arrival order, for cairn_job_recv.
 *   - Tokens live in the client struct and in request messages only; both are
 *     wiped (explicit_bzero, cairn_msg_destroy) and never formatted.
 *
 * Errors: every public call that fails leaves the message in cairn_err_msg()
 * and copies it into the client (cairn_client_err_msg), so a caller that made
 * other cairn calls since can still report it.
 */
#include "cairn/cairn.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/crypto.h"
#include "cairn/transport.h"
#include "client_int.h"
#include "client_json.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>

#define WAIT_STEP_MS 600000u  /* longest server-side wait one request may ask for (PROTOCOL.md) */
#define SOCK_HWM 10000        /* queue depth: more than any window the benchmark uses */
#define WINDOW_MAX 4096u
#define RESULT_JSON_MAX (16u << 20)
#define TOKEN_FILE_MAX 4096
#define ADMIN_APP "_admin"

/* ---- errors ---------------------------------------------------------------------------------- */

/* Copy the thread's error message into the client; returns rc. */
static int keep_err(struct cairn_client *c, int rc)
{
    if (rc != CAIRN_OK && c)
        snprintf(c->err, sizeof(c->err), "%s", cairn_err_msg());
    return rc;
}

const char *cairn_client_err_msg(const struct cairn_client *c) { return c ? c->err : ""; }

/* "10 s", "2.5 s", "250 ms" */
static void fmt_secs(char *out, size_t cap, uint64_t ms)
{
    if (ms < 1000)
        snprintf(out, cap, "%" PRIu64 " ms", ms);
    else if (ms % 1000 == 0)
        snprintf(out, cap, "%" PRIu64 " s", ms / 1000);
    else
        snprintf(out, cap, "%.1f s", (double)ms / 1000.0);
}

static int timeout_err(const struct cairn_client *c, uint64_t ms)
{
    char t[32];
    fmt_secs(t, sizeof(t), ms);
    return cairn_err_set(CAIRN_ETIMEDOUT,
                         "no answer from the coordinator at %s within %s (is it running, and is this client's "
                         "public key on its clients allow-list?)",
                         c->endpoint, t);
}

/* ---- keys ------------------------------------------------------------------------------------ */

int cairn_keypair_generate(const char *path, bool overwrite, char public_z85[41])
{
    if (!path || !*path)
        return cairn_err_set(CAIRN_EINVAL, "no key pair file given");
    struct stat st;
    if (!overwrite && lstat(path, &st) == 0)
        return cairn_err_set(CAIRN_EEXIST, "'%s' already exists (not overwriting a key pair)", path);
    int rc = cairn_crypto_init();
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_curve_keys k;
    rc = cairn_curve_keypair(&k);
    if (rc == CAIRN_OK)
        rc = cairn_curve_keys_write(path, &k);
    if (rc == CAIRN_OK && public_z85)
        memcpy(public_z85, k.public_z85, CAIRN_CURVE_Z85_LEN + 1);
    cairn_curve_keys_clear(&k);
    return rc;
}

int cairn_key_public_export(const char *keypair_path, const char *out_path, char public_z85[41])
{
    char pub[CAIRN_CURVE_Z85_LEN + 1];
    if (!keypair_path || !*keypair_path)
        return cairn_err_set(CAIRN_EINVAL, "no key file given");
    CAIRN_FORWARD_IF_ERROR(cairn_curve_public_read(keypair_path, pub));
    if (out_path)
        CAIRN_FORWARD_IF_ERROR(cairn_curve_public_write(out_path, pub));
    if (public_z85)
        memcpy(public_z85, pub, sizeof(pub));
    return CAIRN_OK;
}

/* ---- the client ------------------------------------------------------------------------------ */

/* Hex token text (surrounding white space ignored) into bytes; `what` names the source. */
static int token_parse_hex(const char *what, const char *text, size_t len, uint8_t out[CAIRN_TOKEN_MAX],
                           size_t *out_len)
{
    while (len && strchr(" \t\r\n", text[0])) {
        text++;
        len--;
    }
    while (len && strchr(" \t\r\n", text[len - 1]))
        len--;
    if (len < 32 || len > 2 * CAIRN_TOKEN_MAX || len % 2)
        return cairn_err_set(CAIRN_EINVAL, "%s: a token is 32..128 hex digits (found %zu characters)", what, len);
    char hex[2 * CAIRN_TOKEN_MAX + 1];
    memcpy(hex, text, len);
    hex[len] = '\0';
    int rc = cairn_hex_decode(out, len / 2, hex);
    explicit_bzero(hex, sizeof(hex));
    if (rc != CAIRN_OK)
        return cairn_err_set(CAIRN_EINVAL, "%s: a token is hex digits only", what);
    *out_len = len / 2;
    return CAIRN_OK;
}

static int token_read_file(const char *what, const char *path, uint8_t out[CAIRN_TOKEN_MAX], size_t *out_len)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = cairn_file_read_all(path, TOKEN_FILE_MAX, &data, &len);
    if (rc != CAIRN_OK) {
        /* keep the OS detail but say which variable pointed there */
        char detail[1024];
        snprintf(detail, sizeof(detail), "%s", cairn_err_msg());
        return cairn_err_set(rc, "%s: cannot read token file '%s': %s", what, path, detail);
    }
    char src[1200];
    snprintf(src, sizeof(src), "%s (token file '%s')", what, path);
    rc = token_parse_hex(src, (const char *)data, len, out, out_len);
    explicit_bzero(data, len);
    cairn_free(data);
    return rc;
}

void cairn_client_destroy(struct cairn_client **cp)
{
    if (!cp || !*cp)
        return;
    struct cairn_client *c = *cp;
    cairn_sock_destroy(&c->sock);
    cairn_net_destroy(&c->net);
    for (size_t i = 0; i < c->nstash; i++)
        cairn_msg_destroy(&c->stash[i]);
    cairn_free(c->stash);
    cairn_free(c->pend);
    cairn_free(c->endpoint);
    cairn_free(c->app);
    cairn_free(c->app_hint);
    cairn_free(c->admin_token_file);
    explicit_bzero(c->token, sizeof(c->token));
    cairn_free(c);
    *cp = NULL;
}

/*
 * The common constructor. key_var / coord_var name where the key files came
 * from (environment variable or option) for messages.
 */
static int client_open(const struct cairn_client_opts *o, const char *key_var, const char *coord_var,
                       struct cairn_client **out)
{
    *out = NULL;
    struct cairn_curve_keys keys;
    memset(&keys, 0, sizeof(keys));
    char server[CAIRN_CURVE_Z85_LEN + 1] = "";
    struct cairn_client *c = NULL;
    int rc = CAIRN_OK;

    if (!o || !o->endpoint || !*o->endpoint)
        return cairn_err_set(CAIRN_EINVAL, "no coordinator endpoint given (%s)", coord_var ? "CAIRN_COORDINATOR" : "opts.endpoint");
    if (!o->client_key_file || !*o->client_key_file)
        return cairn_err_set(CAIRN_EINVAL, "no client key pair file given (%s)", key_var);
    if ((!o->coordinator_key_file || !*o->coordinator_key_file) && (!o->coordinator_key || !*o->coordinator_key))
        return cairn_err_set(CAIRN_EINVAL, "no coordinator public key given (%s)",
                             coord_var ? coord_var : "opts.coordinator_key_file");
    if (o->token && (o->token_len < 16 || o->token_len > CAIRN_TOKEN_MAX))
        return cairn_err_set(CAIRN_EINVAL, "app token must be 16..%d bytes (got %zu)", CAIRN_TOKEN_MAX, o->token_len);

    rc = cairn_crypto_init();
    if (rc != CAIRN_OK)
        return rc;
    c = cairn_calloc(1, sizeof(*c));
    if (!c)
        return cairn_err_set(CAIRN_ENOMEM, "client: out of memory");
    c->timeout_ms = o->timeout_ms ? o->timeout_ms : CAIRN_CLIENT_TIMEOUT_MS;
    uint64_t r;
    cairn_random_bytes(&r, sizeof(r));
    c->next_rid = (r >> 16) | 1; /* random start: replies meant for an earlier client are never matched */
    c->endpoint = cairn_strdup(o->endpoint);
    if (!c->endpoint) {
        rc = cairn_err_set(CAIRN_ENOMEM, "client: out of memory");
        goto fail;
    }
    if (o->app && *o->app) {
        c->app = cairn_strdup(o->app);
        if (!c->app) {
            rc = cairn_err_set(CAIRN_ENOMEM, "client: out of memory");
            goto fail;
        }
    }
    if (o->token) {
        memcpy(c->token, o->token, o->token_len);
        c->token_len = o->token_len;
    }
    if (o->admin_token_file && *o->admin_token_file) {
        c->admin_token_file = cairn_strdup(o->admin_token_file);
        if (!c->admin_token_file) {
            rc = cairn_err_set(CAIRN_ENOMEM, "client: out of memory");
            goto fail;
        }
    }

    rc = cairn_curve_keys_read(o->client_key_file, &keys);
    if (rc != CAIRN_OK) {
        char d[1024];
        snprintf(d, sizeof(d), "%s", cairn_err_msg());
        rc = cairn_err_set(rc, "%s: %s", key_var, d);
        goto fail;
    }
    if (o->coordinator_key_file && *o->coordinator_key_file) {
        rc = cairn_curve_public_read(o->coordinator_key_file, server);
        if (rc != CAIRN_OK) {
            char d[1024];
            snprintf(d, sizeof(d), "%s", cairn_err_msg());
            rc = cairn_err_set(rc, "%s: %s", coord_var ? coord_var : "coordinator key", d);
            goto fail;
        }
    } else {
        if (!cairn_curve_key_valid(o->coordinator_key)) {
            rc = cairn_err_set(CAIRN_EINVAL, "coordinator public key is not a 40-character Z85 key");
            goto fail;
        }
        memcpy(server, o->coordinator_key, CAIRN_CURVE_Z85_LEN + 1);
    }
    rc = cairn_net_new(&c->net);
    if (rc != CAIRN_OK)
        goto fail;
    struct cairn_sock_opts so = {.hwm = SOCK_HWM};
    rc = cairn_sock_client(c->net, c->endpoint, &keys, server, &so, &c->sock);
    if (rc != CAIRN_OK)
        goto fail;
    cairn_curve_keys_clear(&keys);
    *out = c;
    return CAIRN_OK;
fail:
    cairn_curve_keys_clear(&keys);
    cairn_client_destroy(&c);
    return rc;
}

int cairn_client_new(const struct cairn_client_opts *opts, struct cairn_client **out)
{
    int rc = client_open(opts, "opts.client_key_file", NULL, out);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_client *c = *out;
    if (!c->app || !c->token_len) {
        c->app_hint = cairn_strdup(!c->app ? "no app given (opts.app)" : "no app token given (opts.token)");
        if (!c->app_hint) {
            cairn_client_destroy(out);
            return cairn_err_set(CAIRN_ENOMEM, "client: out of memory");
        }
    }
    c->admin_hint = "no admin token file given (opts.admin_token_file)";
    return CAIRN_OK;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

int cairn_client_new_from_env(struct cairn_client **out)
{
    *out = NULL;
    struct cairn_client_opts o;
    memset(&o, 0, sizeof(o));
    uint8_t token[CAIRN_TOKEN_MAX];
    size_t token_len = 0;
    char hint[1100] = "";
    int hint_code = CAIRN_EINVAL;
    int rc = CAIRN_OK;

    static const char *const required[] = {"CAIRN_COORDINATOR", "CAIRN_COORDINATOR_KEY", "CAIRN_CLIENT_KEY"};
    for (size_t i = 0; i < CAIRN_ARRAY_LEN(required); i++)
        if (!env(required[i]))
            return cairn_err_set(CAIRN_EINVAL,
                                 "%s is not set (the cluster's environment: run `eval \"$(deploy/local-cluster.sh env)\"` "
                                 "or export CAIRN_COORDINATOR, CAIRN_COORDINATOR_KEY and CAIRN_CLIENT_KEY)",
                                 required[i]);
    o.endpoint = env("CAIRN_COORDINATOR");
    o.coordinator_key_file = env("CAIRN_COORDINATOR_KEY");
    o.client_key_file = env("CAIRN_CLIENT_KEY");
    o.app = env("CAIRN_APP");
    o.admin_token_file = env("CAIRN_ADMIN_TOKEN_FILE");
    const char *t = env("CAIRN_TIMEOUT_MS");
    if (t) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(t, &end, 10);
        if (errno || !end || *end || t[0] == '-' || v < 1 || v > 3600000)
            return cairn_err_set(CAIRN_EINVAL, "CAIRN_TIMEOUT_MS: '%s' is not a number of milliseconds (1..3600000)", t);
        o.timeout_ms = (unsigned)v;
    }
    /*
     * A bad token is reported by the first app call, not here: ping and admin
     * calls do not need it (local-cluster.sh pings before the token file exists).
     */
    int trc = CAIRN_OK;
    if (env("CAIRN_TOKEN"))
        trc = token_parse_hex("CAIRN_TOKEN", env("CAIRN_TOKEN"), strlen(env("CAIRN_TOKEN")), token, &token_len);
    else if (env("CAIRN_TOKEN_FILE"))
        trc = token_read_file("CAIRN_TOKEN_FILE", env("CAIRN_TOKEN_FILE"), token, &token_len);
    if (trc != CAIRN_OK) {
        token_len = 0;
        hint_code = trc;
    }
    if (token_len) {
        o.token = token;
        o.token_len = token_len;
    }
    if (trc != CAIRN_OK)
        snprintf(hint, sizeof(hint), "%s", cairn_err_msg());
    else if (!o.app)
        snprintf(hint, sizeof(hint), "CAIRN_APP is not set (app calls need CAIRN_APP and CAIRN_TOKEN_FILE or CAIRN_TOKEN)");
    else if (!token_len)
        snprintf(hint, sizeof(hint), "neither CAIRN_TOKEN_FILE nor CAIRN_TOKEN is set (the token of app '%.64s')", o.app);
    rc = client_open(&o, "CAIRN_CLIENT_KEY", "CAIRN_COORDINATOR_KEY", out);
    if (rc != CAIRN_OK)
        goto out;
    if (hint[0]) {
        (*out)->app_hint = cairn_strdup(hint);
        (*out)->app_hint_code = hint_code;
        if (!(*out)->app_hint) {
            cairn_client_destroy(out);
            rc = cairn_err_set(CAIRN_ENOMEM, "client: out of memory");
            goto out;
        }
    }
    (*out)->admin_hint = "CAIRN_ADMIN_TOKEN_FILE is not set (admin calls need the cluster's admin token file)";
out:
    explicit_bzero(token, sizeof(token));
    return rc;
}

const char *cairn_client_endpoint(const struct cairn_client *c) { return c->endpoint; }

void cairn_client_progress_set(struct cairn_client *c, cairn_progress_fn fn, void *arg)
{
    c->progress = fn;
    c->progress_arg = fn ? arg : NULL;
}

void cairn_client_timeout_set(struct cairn_client *c, unsigned timeout_ms)
{
    c->timeout_ms = timeout_ms ? timeout_ms : CAIRN_CLIENT_TIMEOUT_MS;
}

size_t cairn_client_in_flight(const struct cairn_client *c) { return c->npend; }

/* ---- requests -------------------------------------------------------------------------------- */

static int auth_app(struct cairn_client *c, struct cairn_msg *m, const char *what)
{
    if (c->app_hint)
        return cairn_err_set(c->app_hint_code ? c->app_hint_code : CAIRN_EINVAL, "%s: %s", what, c->app_hint);
    cairn_msg_set_app(m, c->app);
    cairn_msg_set_token(m, c->token, c->token_len);
    return CAIRN_OK;
}

static int auth_admin(struct cairn_client *c, struct cairn_msg *m, const char *what)
{
    if (!c->admin_token_file)
        return cairn_err_set(CAIRN_EINVAL, "%s: %s", what, c->admin_hint);
    uint8_t tok[CAIRN_TOKEN_MAX];
    size_t len = 0;
    int rc = token_read_file("admin token", c->admin_token_file, tok, &len);
    if (rc == CAIRN_OK) {
        cairn_msg_set_app(m, ADMIN_APP);
        cairn_msg_set_token(m, tok, len);
    }
    explicit_bzero(tok, sizeof(tok));
    return rc;
}

static uint64_t deadline_after(const struct cairn_client *c, unsigned wait_ms)
{
    return cairn_now_mono_ns() + ((uint64_t)c->timeout_ms + wait_ms) * 1000000ull;
}

/* Send m with a fresh rid. */
static int send_req(struct cairn_client *c, struct cairn_msg *m, uint64_t *rid)
{
    *rid = c->next_rid++;
    if (c->next_rid == 0)
        c->next_rid = 1;
    cairn_msg_set_rid(m, *rid);
    int rc = cairn_sock_send(c->sock, m);
    if (rc == CAIRN_EAGAIN)
        return cairn_err_set(CAIRN_EAGAIN, "too many requests queued for the coordinator at %s", c->endpoint);
    return rc;
}

static ssize_t pend_find(const struct cairn_client *c, uint64_t rid)
{
    for (size_t i = 0; i < c->npend; i++)
        if (c->pend[i].rid == rid)
            return (ssize_t)i;
    return -1;
}

static void pend_remove(struct cairn_client *c, size_t i)
{
    c->pend[i] = c->pend[c->npend - 1];
    c->npend--;
}

/* A received reply nobody synchronous waits for: keep it if a call in flight owns it. */
static void stash_or_drop(struct cairn_client *c, struct cairn_msg **m)
{
    if (pend_find(c, cairn_msg_rid(*m)) >= 0 &&
        cairn_array_grow((void **)&c->stash, &c->capstash, c->nstash + 1, sizeof(*c->stash)) == CAIRN_OK) {
        c->stash[c->nstash++] = *m;
        *m = NULL;
        return;
    }
    cairn_msg_destroy(m); /* stale (a call that timed out) or not ours */
}

/* The error a reply carries, as a cairn error with the coordinator's message. */
static int reply_err(const struct cairn_msg *m)
{
    int code = cairn_msg_code(m);
    if (code == CAIRN_OK)
        return CAIRN_OK;
    const char *text = cairn_msg_text(m);
    return cairn_err_set(code, "%s", text && *text ? text : cairn_strerror(code));
}

static int call(struct cairn_client *c, struct cairn_msg **req, unsigned wait_ms, struct cairn_msg **reply);

/*
 * Before the first call that asks the coordinator to wait (up to 600 s), make
 * sure it answers at all: an unreachable coordinator or a key missing from its
 * allow-list then shows within the client's timeout, not the long-poll's.
 */
static int ensure_reached(struct cairn_client *c)
{
    if (c->reached)
        return CAIRN_OK;
    struct cairn_msg *ping = cairn_msg_new(CAIRN_MSG_PING), *rep = NULL;
    if (!ping)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory building a ping");
    int rc = call(c, &ping, 0, &rep);
    cairn_msg_destroy(&rep);
    return rc;
}

/*
 * One synchronous round trip. Takes req (destroyed here). On CAIRN_OK *reply is
 * a successful reply of the same type; an error reply becomes its code.
 */
static int call(struct cairn_client *c, struct cairn_msg **req, unsigned wait_ms, struct cairn_msg **reply)
{
    *reply = NULL;
    enum cairn_msg_type type = cairn_msg_type(*req);
    uint64_t rid = 0;
    if (wait_ms && !c->reached) {
        int r = ensure_reached(c);
        if (r != CAIRN_OK) {
            cairn_msg_destroy(req);
            return r;
        }
    }
    int rc = cairn_msg_build_error(*req);
    if (rc == CAIRN_OK)
        rc = send_req(c, *req, &rid);
    cairn_msg_destroy(req);
    if (rc != CAIRN_OK)
        return rc;
    uint64_t deadline = deadline_after(c, wait_ms);
    for (;;) {
        uint64_t now = cairn_now_mono_ns();
        if (now >= deadline)
            return timeout_err(c, (uint64_t)c->timeout_ms + wait_ms);
        int ms = (int)((deadline - now + 999999) / 1000000);
        struct cairn_msg *m = NULL;
        rc = cairn_sock_recv(c->sock, ms, &m);
        if (rc == CAIRN_ETIMEDOUT)
            continue;
        if (rc != CAIRN_OK) {
            /* a malformed reply: ours fails with the decode error; others are dropped */
            if (m && cairn_msg_rid(m) == rid) {
                cairn_msg_destroy(&m);
                return rc;
            }
            cairn_msg_destroy(&m);
            if (rc == CAIRN_EPROTO || rc == CAIRN_ETOOBIG || rc == CAIRN_EVERSION)
                continue;
            return rc;
        }
        c->reached = true;
        if (cairn_msg_rid(m) != rid || !cairn_msg_is_reply(m)) {
            stash_or_drop(c, &m);
            continue;
        }
        if (cairn_msg_type(m) != type) {
            cairn_msg_destroy(&m);
            return cairn_err_set(CAIRN_EPROTO, "reply of type '%s' to a '%s' request", cairn_msg_type_name(cairn_msg_type(m)),
                                 cairn_msg_type_name(type));
        }
        rc = reply_err(m);
        if (rc != CAIRN_OK) {
            cairn_msg_destroy(&m);
            return rc;
        }
        *reply = m;
        return CAIRN_OK;
    }
}

static struct cairn_msg *msg_new(enum cairn_msg_type t)
{
    struct cairn_msg *m = cairn_msg_new(t);
    if (!m)
        cairn_err_set(CAIRN_ENOMEM, "out of memory building a '%s' request", cairn_msg_type_name(t));
    return m;
}

/* Copy a string field into a fixed buffer ("" when absent). */
static void copy_str(const struct cairn_mval *v, char *out, size_t cap)
{
    const char *s = NULL;
    size_t n = 0;
    out[0] = '\0';
    if (v && cairn_mval_str(v, &s, &n) == CAIRN_OK)
        snprintf(out, cap, "%.*s", (int)CAIRN_MIN(n, cap - 1), s);
}

static uint64_t get_u64(const struct cairn_mval *v)
{
    uint64_t x = 0;
    if (v)
        cairn_mval_u64(v, &x);
    return x;
}

/* ---- ping, status, admin --------------------------------------------------------------------- */

int cairn_ping(struct cairn_client *c, struct cairn_ping_info *out)
{
    memset(out, 0, sizeof(*out));
    struct cairn_msg *req = msg_new(CAIRN_MSG_PING), *rep = NULL;
    if (!req)
        return keep_err(c, CAIRN_ENOMEM);
    uint64_t t0 = cairn_now_mono_ns();
    int rc = call(c, &req, 0, &rep);
    if (rc != CAIRN_OK)
        return keep_err(c, rc);
    out->rtt_ns = cairn_now_mono_ns() - t0;
    copy_str(cairn_msg_get(rep, "version"), out->version, sizeof(out->version));
    uint64_t v = 0;
    cairn_msg_get_u64(rep, "proto", &v);
    out->proto = (unsigned)v;
    v = 0;
    cairn_msg_opt_u64(rep, "now", 0, &v);
    out->now_ns = (int64_t)v;
    cairn_msg_destroy(&rep);
    return CAIRN_OK;
}

void cairn_cluster_status_free(struct cairn_cluster_status **s)
{
    if (!s || !*s)
        return;
    cairn_free((*s)->workers);
    cairn_free(*s);
    *s = NULL;
}

size_t cairn_cluster_status_alive(const struct cairn_cluster_status *s)
{
    size_t n = 0;
    for (size_t i = 0; s && i < s->nworkers; i++)
        n += s->workers[i].alive;
    return n;
}

int cairn_cluster_status(struct cairn_client *c, struct cairn_cluster_status **out)
{
    *out = NULL;
    struct cairn_msg *req = msg_new(CAIRN_MSG_CLUSTER_STATUS), *rep = NULL;
    struct cairn_cluster_status *s = NULL;
    if (!req)
        return keep_err(c, CAIRN_ENOMEM);
    int rc = auth_app(c, req, "cluster status");
    if (rc != CAIRN_OK) {
        cairn_msg_destroy(&req);
        return keep_err(c, rc);
    }
    rc = call(c, &req, 0, &rep);
    if (rc != CAIRN_OK)
        return keep_err(c, rc);
    s = cairn_calloc(1, sizeof(*s));
    if (!s) {
        rc = cairn_err_set(CAIRN_ENOMEM, "cluster status: out of memory");
        goto out;
    }
    uint64_t v = 0;
    cairn_msg_get_u64(rep, "epoch", &s->epoch);
    cairn_msg_get_u64(rep, "replicas", &v);
    s->replicas = (unsigned)v;
    v = 0;
    cairn_msg_opt_u64(rep, "now", 0, &v);
    s->now_ns = (int64_t)v;
    const struct cairn_mval *arr = NULL;
    size_t n = 0;
    if (cairn_msg_get_array(rep, "workers", &arr, &n) == CAIRN_OK && n) {
        s->workers = cairn_calloc(n, sizeof(*s->workers));
        if (!s->workers) {
            rc = cairn_err_set(CAIRN_ENOMEM, "cluster status: out of memory for %zu workers", n);
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            const struct cairn_mval *w = cairn_mval_at(arr, i);
            struct cairn_worker_info *wi = &s->workers[i];
            copy_str(cairn_mval_get(w, "id"), wi->id, sizeof(wi->id));
            copy_str(cairn_mval_get(w, "addr"), wi->addr, sizeof(wi->addr));
            copy_str(cairn_mval_get(w, "fingerprint"), wi->fingerprint, sizeof(wi->fingerprint));
            const struct cairn_mval *a = cairn_mval_get(w, "alive");
            if (a)
                cairn_mval_bool(a, &wi->alive);
            wi->chunks = get_u64(cairn_mval_get(w, "chunks"));
            wi->bytes = get_u64(cairn_mval_get(w, "bytes"));
            wi->sandboxes = get_u64(cairn_mval_get(w, "sandboxes"));
            wi->last_seen_ns = (int64_t)get_u64(cairn_mval_get(w, "last_seen"));
            wi->capacity = get_u64(cairn_mval_get(w, "capacity"));
        }
        s->nworkers = n;
    }
    *out = s;
    s = NULL;
out:
    cairn_cluster_status_free(&s);
    cairn_msg_destroy(&rep);
    return keep_err(c, rc);
}

int cairn_app_create(struct cairn_client *c, const char *name, uint8_t token[CAIRN_TOKEN_MAX], size_t *token_len)
{
    *token_len = 0;
    if (!name || !*name || strlen(name) > 64 || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789._-") != strlen(name))
        return keep_err(c, cairn_err_set(CAIRN_EINVAL, "app name '%.80s' must be 1..64 characters of [a-z0-9._-]",
                                         name ? name : ""));
    struct cairn_msg *req = msg_new(CAIRN_MSG_APP_CREATE), *rep = NULL;
    if (!req)
        return keep_err(c, CAIRN_ENOMEM);
    cairn_msg_set_str(req, "name", name);
    int rc = auth_admin(c, req, "app create");
    if (rc != CAIRN_OK) {
        cairn_msg_destroy(&req);
        return keep_err(c, rc);
    }
    rc = call(c, &req, 0, &rep);
    if (rc != CAIRN_OK)
        return keep_err(c, rc);
    const uint8_t *p = NULL;
    size_t n = 0;
    rc = cairn_msg_get_bin(rep, "token", &p, &n);
    if (rc == CAIRN_OK && (n == 0 || n > CAIRN_TOKEN_MAX))
        rc = cairn_err_set(CAIRN_EPROTO, "app.create reply: token of %zu bytes", n);
    else if (rc != CAIRN_OK)
        rc = cairn_err_set(CAIRN_EPROTO, "app.create reply has no token");
    if (rc == CAIRN_OK) {
        memcpy(token, p, n);
        *token_len = n;
    }
    cairn_msg_destroy(&rep); /* wipes the token field */
    return keep_err(c, rc);
}

int cairn_admin_clock_advance(struct cairn_client *c, uint64_t seconds, int64_t *now_ns)
{
    if (seconds < 1 || seconds > 3153600000ull)
        return keep_err(c, cairn_err_set(CAIRN_EINVAL, "clock advance: %" PRIu64 " s is outside 1 s..100 years", seconds));
    struct cairn_msg *req = msg_new(CAIRN_MSG_ADMIN_CLOCK_ADVANCE), *rep = NULL;
    if (!req)
        return keep_err(c, CAIRN_ENOMEM);
    cairn_msg_set_u64(req, "seconds", seconds);
    int rc = auth_admin(c, req, "clock advance");
    if (rc != CAIRN_OK) {
        cairn_msg_destroy(&req);
        return keep_err(c, rc);
    }
    rc = call(c, &req, 0, &rep);
    if (rc != CAIRN_OK)
        return keep_err(c, rc);
    uint64_t v = 0;
    cairn_msg_get_u64(rep, "now", &v);
    if (now_ns)
        *now_ns = (int64_t)v;
    cairn_msg_destroy(&rep);
    return CAIRN_OK;
}

/* ---- params ---------------------------------------------------------------------------------- */

enum pkind { P_STR = 1, P_U64, P_I64, P_BOOL, P_STRS };

struct param {
    char *key;
    enum pkind kind;
    char *s;
    uint64_t u;
    int64_t i;
    bool b;
    char **arr;
    size_t n, cap;
};

struct cairn_params {
    struct param *v;
    size_t n, cap;
};

#define PARAMS_MAX 256u
#define PARAM_KEY_MAX 256u
#define PARAM_STR_MAX 65536u

struct cairn_params *cairn_params_new(void)
{
    struct cairn_params *p = cairn_calloc(1, sizeof(*p));
    if (!p)
        cairn_err_set(CAIRN_ENOMEM, "params: out of memory");
    return p;
}

static void param_clear_value(struct param *e)
{
    CAIRN_FREE(e->s);
    for (size_t j = 0; j < e->n; j++)
        cairn_free(e->arr[j]);
    CAIRN_FREE(e->arr);
    e->n = e->cap = 0;
}

void cairn_params_destroy(struct cairn_params **pp)
{
    if (!pp || !*pp)
        return;
    struct cairn_params *p = *pp;
    for (size_t i = 0; i < p->n; i++) {
        param_clear_value(&p->v[i]);
        cairn_free(p->v[i].key);
    }
    cairn_free(p->v);
    cairn_free(p);
    *pp = NULL;
}

size_t cairn_params_count(const struct cairn_params *p) { return p ? p->n : 0; }

/* The entry for key, created (with an empty value) when missing. */
static int param_slot(struct cairn_params *p, const char *key, struct param **out)
{
    if (!p)
        return cairn_err_set(CAIRN_EINVAL, "params: NULL params");
    if (!key || !*key || strlen(key) > PARAM_KEY_MAX)
        return cairn_err_set(CAIRN_EINVAL, "params: a key is 1..%u bytes", PARAM_KEY_MAX);
    for (size_t i = 0; i < p->n; i++)
        if (!strcmp(p->v[i].key, key)) {
            *out = &p->v[i];
            return CAIRN_OK;
        }
    if (p->n >= PARAMS_MAX)
        return cairn_err_set(CAIRN_EINVAL, "params: more than %u keys", PARAMS_MAX);
    if (cairn_array_grow((void **)&p->v, &p->cap, p->n + 1, sizeof(*p->v)) != CAIRN_OK)
        return cairn_err_set(CAIRN_ENOMEM, "params: out of memory");
    struct param *e = &p->v[p->n];
    memset(e, 0, sizeof(*e));
    e->key = cairn_strdup(key);
    if (!e->key)
        return cairn_err_set(CAIRN_ENOMEM, "params: out of memory");
    p->n++;
    *out = e;
    return CAIRN_OK;
}

int cairn_params_set_str(struct cairn_params *p, const char *key, const char *value)
{
    if (!value)
        return cairn_err_set(CAIRN_EINVAL, "params: NULL value for '%.64s'", key ? key : "");
    if (strlen(value) > PARAM_STR_MAX)
        return cairn_err_set(CAIRN_EINVAL, "params: value of '%.64s' is over %u bytes", key ? key : "", PARAM_STR_MAX);
    char *d = cairn_strdup(value);
    if (!d)
        return cairn_err_set(CAIRN_ENOMEM, "params: out of memory");
    struct param *e = NULL;
    int rc = param_slot(p, key, &e);
    if (rc != CAIRN_OK) {
        cairn_free(d);
        return rc;
    }
    param_clear_value(e);
    e->kind = P_STR;
    e->s = d;
    return CAIRN_OK;
}

int cairn_params_set_u64(struct cairn_params *p, const char *key, uint64_t value)
{
    struct param *e = NULL;
    CAIRN_FORWARD_IF_ERROR(param_slot(p, key, &e));
    param_clear_value(e);
    e->kind = P_U64;
    e->u = value;
    return CAIRN_OK;
}

int cairn_params_set_i64(struct cairn_params *p, const char *key, int64_t value)
{
    if (value >= 0)
        return cairn_params_set_u64(p, key, (uint64_t)value);
    struct param *e = NULL;
    CAIRN_FORWARD_IF_ERROR(param_slot(p, key, &e));
    param_clear_value(e);
    e->kind = P_I64;
    e->i = value;
    return CAIRN_OK;
}

int cairn_params_set_bool(struct cairn_params *p, const char *key, bool value)
{
    struct param *e = NULL;
    CAIRN_FORWARD_IF_ERROR(param_slot(p, key, &e));
    param_clear_value(e);
    e->kind = P_BOOL;
    e->b = value;
    return CAIRN_OK;
}

int cairn_params_set_array(struct cairn_params *p, const char *key)
{
    struct param *e = NULL;
    CAIRN_FORWARD_IF_ERROR(param_slot(p, key, &e));
    param_clear_value(e);
    e->kind = P_STRS;
    return CAIRN_OK;
}

int cairn_params_add_str(struct cairn_params *p, const char *key, const char *value)
{
    if (!value || strlen(value) > PARAM_STR_MAX)
        return cairn_err_set(CAIRN_EINVAL, "params: element of '%.64s' is NULL or over %u bytes", key ? key : "",
                             PARAM_STR_MAX);
    struct param *e = NULL;
    CAIRN_FORWARD_IF_ERROR(param_slot(p, key, &e));
    if (e->kind != P_STRS) {
        param_clear_value(e);
        e->kind = P_STRS;
    }
    if (e->n >= PARAMS_MAX)
        return cairn_err_set(CAIRN_EINVAL, "params: array '%.64s' has more than %u elements", key, PARAMS_MAX);
    if (cairn_array_grow((void **)&e->arr, &e->cap, e->n + 1, sizeof(*e->arr)) != CAIRN_OK)
        return cairn_err_set(CAIRN_ENOMEM, "params: out of memory");
    e->arr[e->n] = cairn_strdup(value);
    if (!e->arr[e->n])
        return cairn_err_set(CAIRN_ENOMEM, "params: out of memory");
    e->n++;
    return CAIRN_OK;
}

static bool all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

int cairn_params_parse_kv(struct cairn_params *p, const char *kv, bool as_string)
{
    const char *eq = kv ? strchr(kv, '=') : NULL;
    if (!eq || eq == kv)
        return cairn_err_set(CAIRN_EINVAL, "param '%.80s' is not key=value", kv ? kv : "");
    size_t klen = (size_t)(eq - kv);
    if (klen > PARAM_KEY_MAX)
        return cairn_err_set(CAIRN_EINVAL, "param key of %zu bytes (at most %u)", klen, PARAM_KEY_MAX);
    char key[PARAM_KEY_MAX + 1];
    memcpy(key, kv, klen);
    key[klen] = '\0';
    const char *v = eq + 1;
    size_t vlen = strlen(v);
    if (as_string)
        return cairn_params_set_str(p, key, v);
    if (all_digits(v) || (v[0] == '-' && all_digits(v + 1))) {
        errno = 0;
        char *end = NULL;
        if (v[0] == '-') {
            long long x = strtoll(v, &end, 10);
            if (errno == 0 && end && !*end)
                return cairn_params_set_i64(p, key, (int64_t)x);
        } else {
            unsigned long long x = strtoull(v, &end, 10);
            if (errno == 0 && end && !*end)
                return cairn_params_set_u64(p, key, (uint64_t)x);
        }
        return cairn_err_set(CAIRN_EINVAL, "param '%s': %.40s is out of the 64-bit range", key, v);
    }
    if (!strcmp(v, "true") || !strcmp(v, "false"))
        return cairn_params_set_bool(p, key, v[0] == 't');
    if (vlen >= 2 && v[0] == '[' && v[vlen - 1] == ']') {
        CAIRN_FORWARD_IF_ERROR(cairn_params_set_array(p, key));
        const char *s = v + 1, *end = v + vlen - 1;
        if (s == end)
            return CAIRN_OK;
        for (;;) {
            const char *comma = memchr(s, ',', (size_t)(end - s));
            const char *stop = comma ? comma : end;
            char *el = cairn_strndup(s, (size_t)(stop - s));
            if (!el)
                return cairn_err_set(CAIRN_ENOMEM, "params: out of memory");
            int rc = cairn_params_add_str(p, key, el);
            cairn_free(el);
            if (rc != CAIRN_OK)
                return rc;
            if (!comma)
                return CAIRN_OK;
            s = comma + 1;
        }
    }
    return cairn_params_set_str(p, key, v);
}

/* Write params into the message's "params" map (always present: the field is required). */
static void params_put(struct cairn_msg *m, const struct cairn_params *p)
{
    struct cairn_mval *map = cairn_msg_set_map(m, "params");
    for (size_t i = 0; p && i < p->n; i++) {
        const struct param *e = &p->v[i];
        switch (e->kind) {
        case P_STR: cairn_mval_put_str(m, map, e->key, e->s); break;
        case P_U64: cairn_mval_put_u64(m, map, e->key, e->u); break;
        case P_I64: cairn_mval_put_i64(m, map, e->key, e->i); break;
        case P_BOOL: cairn_mval_put_bool(m, map, e->key, e->b); break;
        case P_STRS: {
            struct cairn_mval *arr = cairn_mval_put_array(m, map, e->key);
            for (size_t j = 0; j < e->n; j++)
                cairn_mval_push_str(m, arr, e->arr[j]);
            break;
        }
        }
    }
}

/* ---- jobs ------------------------------------------------------------------------------------ */

static const char *const state_names[] = {"unknown", "queued", "running", "succeeded", "failed"};

const char *cairn_job_state_name(enum cairn_job_state s)
{
    return (unsigned)s < CAIRN_ARRAY_LEN(state_names) ? state_names[s] : "unknown";
}

bool cairn_job_finished(const struct cairn_job *j)
{
    return j && (j->state == CAIRN_JOB_SUCCEEDED || j->state == CAIRN_JOB_FAILED);
}

void cairn_job_free(struct cairn_job **j)
{
    if (!j || !*j)
        return;
    cairn_free((*j)->err_msg);
    cairn_free((*j)->result_json);
    cairn_free(*j);
    *j = NULL;
}

/* A job status reply (job.submit, job.get) into a new struct cairn_job. */
static int job_from_reply(const struct cairn_msg *m, struct cairn_job **out)
{
    *out = NULL;
    struct cairn_buf b;
    cairn_buf_init(&b, RESULT_JSON_MAX);
    struct cairn_job *j = cairn_calloc(1, sizeof(*j));
    int rc = CAIRN_OK;
    if (!j)
        return cairn_err_set(CAIRN_ENOMEM, "job: out of memory");
    copy_str(cairn_msg_get(m, "job"), j->id, sizeof(j->id));
    copy_str(cairn_msg_get(m, "kind"), j->kind, sizeof(j->kind));
    copy_str(cairn_msg_get(m, "state"), j->state_name, sizeof(j->state_name));
    copy_str(cairn_msg_get(m, "worker"), j->worker, sizeof(j->worker));
    j->state = CAIRN_JOB_UNKNOWN;
    for (size_t i = 1; i < CAIRN_ARRAY_LEN(state_names); i++)
        if (!strcmp(j->state_name, state_names[i]))
            j->state = (enum cairn_job_state)i;
    uint64_t v = 0;
    cairn_msg_opt_u64(m, "err_code", 0, &v);
    j->err_code = (int)v;
    if (j->state == CAIRN_JOB_FAILED && j->err_code == CAIRN_OK)
        j->err_code = CAIRN_EINTERNAL; /* a failed job always reports a code; never show failure as 0 */
    cairn_msg_opt_u64(m, "done", 0, &j->done);
    cairn_msg_opt_u64(m, "total", 0, &j->total);
    const char *s = NULL;
    size_t n = 0;
    if (cairn_msg_get_str(m, "err_msg", &s, &n) == CAIRN_OK)
        j->err_msg = cairn_strndup(s, n);
    else
        j->err_msg = cairn_strdup(j->state == CAIRN_JOB_FAILED ? cairn_strerror(j->err_code) : "");
    if (!j->err_msg) {
        rc = cairn_err_set(CAIRN_ENOMEM, "job: out of memory");
        goto out;
    }
    const struct cairn_mval *res = cairn_msg_get(m, "result");
    if (res) {
        rc = cairn__json_mval(&b, res);
        if (rc == CAIRN_OK)
            rc = cairn__json_finish(&b);
        if (rc != CAIRN_OK)
            goto out;
        j->result_json = (char *)cairn_buf_detach(&b, NULL);
    }
    if (!j->id[0])
        rc = cairn_err_set(CAIRN_EPROTO, "job reply without a job id");
out:
    cairn_buf_release(&b);
    if (rc != CAIRN_OK)
        cairn_job_free(&j);
    *out = j;
    return rc;
}

static unsigned step_wait(uint32_t wait_ms) { return wait_ms > WAIT_STEP_MS ? WAIT_STEP_MS : wait_ms; }

static int build_submit(struct cairn_client *c, const char *kind, const struct cairn_params *params,
                        const char *req_id, unsigned wait_ms, struct cairn_msg **out)
{
    *out = NULL;
    if (!kind || !*kind || strlen(kind) > 32)
        return cairn_err_set(CAIRN_EINVAL, "job kind '%.40s' must be 1..32 bytes", kind ? kind : "");
    if (req_id && (!*req_id || strlen(req_id) > 64))
        return cairn_err_set(CAIRN_EINVAL, "req_id must be 1..64 bytes");
    struct cairn_msg *m = msg_new(CAIRN_MSG_JOB_SUBMIT);
    if (!m)
        return CAIRN_ENOMEM;
    int rc = auth_app(c, m, "job submit");
    if (rc != CAIRN_OK) {
        cairn_msg_destroy(&m);
        return rc;
    }
    char gen[20];
    if (!req_id) {
        uint8_t r[8];
        cairn_random_bytes(r, sizeof(r));
        memcpy(gen, "rq-", 3);
        cairn_hex_encode(gen + 3, r, sizeof(r));
        req_id = gen;
    }
    cairn_msg_set_str(m, "kind", kind);
    cairn_msg_set_str(m, "req_id", req_id);
    params_put(m, params);
    if (wait_ms)
        cairn_msg_set_u64(m, "wait_ms", wait_ms);
    *out = m;
    return CAIRN_OK;
}

static int build_get(struct cairn_client *c, const char *id, unsigned wait_ms, struct cairn_msg **out)
{
    *out = NULL;
    if (!id || !*id || strlen(id) > 64)
        return cairn_err_set(CAIRN_EINVAL, "job id '%.80s' must be 1..64 bytes", id ? id : "");
    struct cairn_msg *m = msg_new(CAIRN_MSG_JOB_GET);
    if (!m)
        return CAIRN_ENOMEM;
    int rc = auth_app(c, m, "job get");
    if (rc != CAIRN_OK) {
        cairn_msg_destroy(&m);
        return rc;
    }
    cairn_msg_set_str(m, "job", id);
    if (wait_ms)
        cairn_msg_set_u64(m, "wait_ms", wait_ms);
    *out = m;
    return CAIRN_OK;
}

/* Long-poll job.get until the job finished or wait_ms (from `start`) is over. Takes *jp. */
static int job_wait_more(struct cairn_client *c, uint64_t start_ns, uint32_t wait_ms, struct cairn_job **jp)
{
    while (!cairn_job_finished(*jp)) {
        unsigned step = WAIT_STEP_MS;
        if (wait_ms != CAIRN_WAIT_FOREVER) {
            uint64_t spent_ms = (cairn_now_mono_ns() - start_ns) / 1000000ull;
            if (spent_ms >= wait_ms)
                break;
            step = step_wait((uint32_t)(wait_ms - spent_ms));
        }
        struct cairn_msg *req = NULL, *rep = NULL;
        int rc = build_get(c, (*jp)->id, step, &req);
        if (rc == CAIRN_OK)
            rc = call(c, &req, step, &rep);
        if (rc != CAIRN_OK)
            return rc;
        struct cairn_job *j = NULL;
        rc = job_from_reply(rep, &j);
        cairn_msg_destroy(&rep);
        if (rc != CAIRN_OK)
            return rc;
        cairn_job_free(jp);
        *jp = j;
    }
    return CAIRN_OK;
}

int cairn_job_submit(struct cairn_client *c, const char *kind, const struct cairn_params *params,
                     const char *req_id, uint32_t wait_ms, struct cairn_job **out)
{
    *out = NULL;
    uint64_t start = cairn_now_mono_ns();
    struct cairn_msg *req = NULL, *rep = NULL;
    struct cairn_job *j = NULL;
    unsigned step = step_wait(wait_ms);
    int rc = build_submit(c, kind, params, req_id, step, &req);
    if (rc == CAIRN_OK)
        rc = call(c, &req, step, &rep);
    if (rc == CAIRN_OK)
        rc = job_from_reply(rep, &j);
    cairn_msg_destroy(&rep);
    if (rc == CAIRN_OK && wait_ms)
        rc = job_wait_more(c, start, wait_ms, &j);
    if (rc != CAIRN_OK) {
        cairn_job_free(&j);
        return keep_err(c, rc);
    }
    *out = j;
    return CAIRN_OK;
}

int cairn_job_get(struct cairn_client *c, const char *id, uint32_t wait_ms, struct cairn_job **out)
{
    *out = NULL;
    uint64_t start = cairn_now_mono_ns();
    struct cairn_msg *req = NULL, *rep = NULL;
    struct cairn_job *j = NULL;
    unsigned step = step_wait(wait_ms);
    int rc = build_get(c, id, step, &req);
    if (rc == CAIRN_OK)
        rc = call(c, &req, step, &rep);
    if (rc == CAIRN_OK)
        rc = job_from_reply(rep, &j);
    cairn_msg_destroy(&rep);
    if (rc == CAIRN_OK && wait_ms)
        rc = job_wait_more(c, start, wait_ms, &j);
    if (rc != CAIRN_OK) {
        cairn_job_free(&j);
        return keep_err(c, rc);
    }
    *out = j;
    return CAIRN_OK;
}

/* ---- pipelined calls ------------------------------------------------------------------------- */

/* Send an async request (takes *m) and record it as in flight. */
static int async_send(struct cairn_client *c, struct cairn_msg **m, unsigned wait_ms, uint64_t t0_ns,
                      uint64_t *ticket)
{
    *ticket = 0;
    enum cairn_msg_type type = cairn_msg_type(*m);
    int rc = cairn_array_grow((void **)&c->pend, &c->cappend, c->npend + 1, sizeof(*c->pend));
    if (rc != CAIRN_OK) {
        cairn_msg_destroy(m);
        return cairn_err_set(CAIRN_ENOMEM, "out of memory for calls in flight");
    }
    uint64_t rid = 0;
    rc = wait_ms ? ensure_reached(c) : CAIRN_OK;
    if (rc == CAIRN_OK)
        rc = cairn_msg_build_error(*m);
    if (rc == CAIRN_OK)
        rc = send_req(c, *m, &rid);
    cairn_msg_destroy(m);
    if (rc != CAIRN_OK)
        return rc;
    c->pend[c->npend++] = (struct cairn__pending){
        .rid = rid, .type = type, .t0_ns = t0_ns ? t0_ns : cairn_now_mono_ns(),
        .deadline_ns = deadline_after(c, wait_ms), .wait_ms = wait_ms};
    *ticket = rid;
    return CAIRN_OK;
}

int cairn_job_submit_send(struct cairn_client *c, const char *kind, const struct cairn_params *params,
                          const char *req_id, uint32_t wait_ms, uint64_t *ticket)
{
    struct cairn_msg *m = NULL;
    unsigned step = step_wait(wait_ms);
    int rc = build_submit(c, kind, params, req_id, step, &m);
    if (rc == CAIRN_OK)
        rc = async_send(c, &m, step, 0, ticket);
    return keep_err(c, rc);
}

static int get_send_t0(struct cairn_client *c, const char *id, uint32_t wait_ms, uint64_t t0, uint64_t *ticket)
{
    struct cairn_msg *m = NULL;
    unsigned step = step_wait(wait_ms);
    int rc = build_get(c, id, step, &m);
    if (rc == CAIRN_OK)
        rc = async_send(c, &m, step, t0, ticket);
    return rc;
}

int cairn_job_get_send(struct cairn_client *c, const char *id, uint32_t wait_ms, uint64_t *ticket)
{
    return keep_err(c, get_send_t0(c, id, wait_ms, 0, ticket));
}

/* Turn a reply owned by in-flight call i into its result; the call is over. */
static int async_finish(struct cairn_client *c, size_t i, struct cairn_msg **m, uint64_t *ticket, uint64_t *t0,
                        struct cairn_job **out)
{
    struct cairn__pending p = c->pend[i];
    pend_remove(c, i);
    *ticket = p.rid;
    if (t0)
        *t0 = p.t0_ns;
    int rc = CAIRN_OK;
    if (cairn_msg_type(*m) != p.type)
        rc = cairn_err_set(CAIRN_EPROTO, "reply of type '%s' to a '%s' request", cairn_msg_type_name(cairn_msg_type(*m)),
                           cairn_msg_type_name(p.type));
    if (rc == CAIRN_OK)
        rc = reply_err(*m);
    if (rc == CAIRN_OK)
        rc = job_from_reply(*m, out);
    cairn_msg_destroy(m);
    return rc;
}

static int job_recv(struct cairn_client *c, int timeout_ms, uint64_t *ticket, uint64_t *t0, struct cairn_job **out)
{
    *ticket = 0;
    *out = NULL;
    while (c->nstash) {
        struct cairn_msg *m = c->stash[0];
        memmove(c->stash, c->stash + 1, (c->nstash - 1) * sizeof(*c->stash));
        c->nstash--;
        ssize_t i = pend_find(c, cairn_msg_rid(m));
        if (i >= 0)
            return async_finish(c, (size_t)i, &m, ticket, t0, out);
        cairn_msg_destroy(&m); /* its call was abandoned */
    }
    if (c->npend == 0)
        return cairn_err_set(CAIRN_EINVAL, "no job call in flight");
    uint64_t start = cairn_now_mono_ns();
    for (;;) {
        uint64_t now = cairn_now_mono_ns();
        size_t first = 0;
        for (size_t i = 1; i < c->npend; i++)
            if (c->pend[i].deadline_ns < c->pend[first].deadline_ns)
                first = i;
        if (now >= c->pend[first].deadline_ns) {
            struct cairn__pending p = c->pend[first];
            pend_remove(c, first);
            *ticket = p.rid;
            if (t0)
                *t0 = p.t0_ns;
            return timeout_err(c, (uint64_t)c->timeout_ms + p.wait_ms);
        }
        uint64_t wait_ns = c->pend[first].deadline_ns - now;
        if (timeout_ms >= 0) {
            uint64_t left = start + (uint64_t)timeout_ms * 1000000ull;
            if (now >= left)
                return cairn_err_set(CAIRN_ETIMEDOUT, "no reply within %d ms", timeout_ms);
            wait_ns = CAIRN_MIN(wait_ns, left - now);
        }
        struct cairn_msg *m = NULL;
        int rc = cairn_sock_recv(c->sock, (int)((wait_ns + 999999) / 1000000), &m);
        if (rc == CAIRN_ETIMEDOUT)
            continue;
        ssize_t i = m ? pend_find(c, cairn_msg_rid(m)) : -1;
        if (rc != CAIRN_OK) {
            if (i >= 0) {
                struct cairn__pending p = c->pend[i];
                pend_remove(c, (size_t)i);
                *ticket = p.rid;
                if (t0)
                    *t0 = p.t0_ns;
                cairn_msg_destroy(&m);
                return rc;
            }
            cairn_msg_destroy(&m);
            if (rc == CAIRN_EPROTO || rc == CAIRN_ETOOBIG || rc == CAIRN_EVERSION)
                continue;
            return rc;
        }
        c->reached = true;
        if (i < 0 || !cairn_msg_is_reply(m)) {
            cairn_msg_destroy(&m);
            continue;
        }
        return async_finish(c, (size_t)i, &m, ticket, t0, out);
    }
}

int cairn_job_recv(struct cairn_client *c, int timeout_ms, uint64_t *ticket, struct cairn_job **out)
{
    return keep_err(c, job_recv(c, timeout_ms, ticket, NULL, out));
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int cairn_job_submit_many(struct cairn_client *c, const char *kind, const struct cairn_params *params, size_t n,
                          size_t window, struct cairn_submit_stats *st)
{
    memset(st, 0, sizeof(*st));
    if (c->npend)
        return keep_err(c, cairn_err_set(CAIRN_EBUSY, "submit_many: %zu other calls are in flight", c->npend));
    if (window == 0)
        window = 1;
    if (window > WINDOW_MAX)
        window = WINDOW_MAX;
    uint64_t *lat = n ? cairn_calloc(n, sizeof(*lat)) : NULL;
    if (n && !lat)
        return keep_err(c, cairn_err_set(CAIRN_ENOMEM, "submit_many: out of memory for %zu latencies", n));
    size_t sent = 0, nlat = 0;
    int rc = CAIRN_OK;
    char first_msg[1024] = "";
    uint64_t start = cairn_now_mono_ns(), last = start;
    const unsigned wait = 60000; /* each call waits for its job; longer jobs are re-polled */
    while (sent < n || c->npend) {
        while (sent < n && c->npend < window) {
            uint64_t ticket = 0;
            struct cairn_msg *m = NULL;
            rc = build_submit(c, kind, params, NULL, wait, &m);
            if (rc == CAIRN_OK)
                rc = async_send(c, &m, wait, 0, &ticket);
            if (rc != CAIRN_OK)
                goto out; /* a local failure (no app, queue full): no point sending the rest */
            sent++;
        }
        uint64_t ticket = 0, t0 = 0;
        struct cairn_job *j = NULL;
        int r = job_recv(c, -1, &ticket, &t0, &j);
        last = cairn_now_mono_ns();
        if (r != CAIRN_OK && ticket == 0) {
            rc = r;
            goto out;
        }
        if (r != CAIRN_OK) {
            st->errors++;
            if (!st->first_err) {
                st->first_err = r;
                snprintf(first_msg, sizeof(first_msg), "%s", cairn_err_msg());
            }
            continue;
        }
        if (!cairn_job_finished(j)) {
            if (j->state == CAIRN_JOB_QUEUED || j->state == CAIRN_JOB_RUNNING) {
                /* first reply of a submit counts it as accepted; re-polls do not */
                uint64_t nt = 0;
                rc = get_send_t0(c, j->id, wait, t0, &nt);
                cairn_job_free(&j);
                if (rc != CAIRN_OK)
                    goto out;
                continue;
            }
        }
        if (j->state == CAIRN_JOB_SUCCEEDED) {
            st->succeeded++;
        } else {
            st->failed++;
            if (!st->first_err) {
                st->first_err = j->err_code ? j->err_code : CAIRN_EINTERNAL;
                snprintf(first_msg, sizeof(first_msg), "job %s: %s", j->id, j->err_msg);
            }
        }
        if (nlat < n)
            lat[nlat++] = last - t0;
        cairn_job_free(&j);
    }
out:
    st->submitted = st->succeeded + st->failed;
    st->elapsed_ns = last - start;
    if (nlat) {
        qsort(lat, nlat, sizeof(*lat), cmp_u64);
        st->lat_p50_ns = lat[nlat / 2];
        st->lat_p99_ns = lat[CAIRN_MIN(nlat - 1, (nlat * 99) / 100)];
        st->lat_max_ns = lat[nlat - 1];
    }
    cairn_free(lat);
    if (rc != CAIRN_OK) {
        /* abandon what is still in flight: late replies are dropped by rid */
        c->npend = 0;
        return keep_err(c, rc);
    }
    if (st->first_err)
        return keep_err(c, cairn_err_set(st->first_err, "%" PRIu64 " of %zu jobs failed, %" PRIu64
                                                         " calls refused or timed out; first: %s",
                                         st->failed, n, st->errors, first_msg));
    return CAIRN_OK;
}

/* ---- for the other libcairn files (client_int.h) ---------------------------------------------- */

int cairn__keep_err(struct cairn_client *c, int rc) { return keep_err(c, rc); }
int cairn__timeout_err(const struct cairn_client *c, uint64_t ms) { return timeout_err(c, ms); }
int cairn__auth_app(struct cairn_client *c, struct cairn_msg *m, const char *what) { return auth_app(c, m, what); }
struct cairn_msg *cairn__msg_new(enum cairn_msg_type t) { return msg_new(t); }
int cairn__send_req(struct cairn_client *c, struct cairn_msg *m, uint64_t *rid) { return send_req(c, m, rid); }
void cairn__stash_or_drop(struct cairn_client *c, struct cairn_msg **m) { stash_or_drop(c, m); }
int cairn__reply_err(const struct cairn_msg *m) { return reply_err(m); }
int cairn__ensure_reached(struct cairn_client *c) { return ensure_reached(c); }
int cairn__call(struct cairn_client *c, struct cairn_msg **req, unsigned wait_ms, struct cairn_msg **reply)
{
    return call(c, req, wait_ms, reply);
}
int cairn__job_from_reply(const struct cairn_msg *m, struct cairn_job **out) { return job_from_reply(m, out); }
void cairn__copy_str(const struct cairn_mval *v, char *out, size_t cap) { copy_str(v, out, cap); }
uint64_t cairn__get_u64(const struct cairn_mval *v) { return get_u64(v); }

void cairn__gen_id(char *out, const char *prefix)
{
    uint8_t r[8];
    cairn_random_bytes(r, sizeof(r));
    size_t n = strlen(prefix);
    memcpy(out, prefix, n);
    cairn_hex_encode(out + n, r, sizeof(r));
}

#define PROGRESS_POLL_MS 1000u

int cairn__job_run(struct cairn_client *c, struct cairn_msg **req, unsigned req_wait_ms, const char *stage,
                   cairn_progress_fn progress, void *progress_arg, struct cairn_job **job, struct cairn_msg **final)
{
    *job = NULL;
    *final = NULL;
    struct cairn_msg *rep = NULL;
    struct cairn_job *j = NULL;
    int rc = call(c, req, req_wait_ms, &rep);
    if (rc == CAIRN_OK)
        rc = job_from_reply(rep, &j);
    while (rc == CAIRN_OK && !cairn_job_finished(j)) {
        if (progress)
            progress(progress_arg, stage, j->done, j->total);
        unsigned step = progress ? PROGRESS_POLL_MS : WAIT_STEP_MS;
        struct cairn_msg *get = NULL, *next = NULL;
        rc = build_get(c, j->id, step, &get);
        if (rc == CAIRN_OK)
            rc = call(c, &get, step, &next);
        struct cairn_job *nj = NULL;
        if (rc == CAIRN_OK)
            rc = job_from_reply(next, &nj);
        if (rc != CAIRN_OK) {
            cairn_msg_destroy(&next);
            break;
        }
        cairn_msg_destroy(&rep);
        rep = next;
        cairn_job_free(&j);
        j = nj;
    }
    if (rc != CAIRN_OK) {
        cairn_msg_destroy(&rep);
        cairn_job_free(&j);
        return rc;
    }
    if (progress && j->state == CAIRN_JOB_SUCCEEDED && (j->done || j->total))
        progress(progress_arg, stage, j->total ? j->total : j->done, j->total);
    *job = j;
    *final = rep;
    return CAIRN_OK;
}

int cairn__job_err(const struct cairn_job *j, const char *what)
{
    if (j->state == CAIRN_JOB_SUCCEEDED)
        return CAIRN_OK;
    if (j->state == CAIRN_JOB_FAILED)
        return cairn_err_set(j->err_code ? j->err_code : CAIRN_EINTERNAL, "%s",
                             j->err_msg && *j->err_msg ? j->err_msg : cairn_strerror(j->err_code));
    return cairn_err_set(CAIRN_EPROTO, "%s: job %s ended in state '%s'", what, j->id, j->state_name);
}
