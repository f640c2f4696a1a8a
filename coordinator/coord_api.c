/*
 * coord_api.c: what the coordinator does with each message it receives.
 *
 * Routing rules (PROTOCOL.md routes, cluster.md):
 * - The client endpoint serves the CLIENT_* routes only; the worker endpoint
 *   the WORKER routes, plus replies to our own job.dispatch / membership
 *   requests. Anything else is answered EPROTO (never for a one-way type,
 *   which has no reply), replies from clients are dropped.
 * - Authentication per route, before the type is even looked at:
 *   CLIENT_ANY   none (ping)
 *   CLIENT_APP   the envelope's app must exist and its token hash must match
 *                (constant-time), else EAUTH "invalid app token for app 'x'"
 *                -- the same answer for an unknown app, so the reply never
 *                reveals which apps exist;
 *   CLIENT_ADMIN app "_admin" and the admin token, else EAUTH.
 *   Tokens are compared as BLAKE2b-256 hashes (cairn_token_hash); a token may
 *   arrive raw (32 bytes) or as its 64 hex characters (how the token files
 *   store it), both hash the same.
 * - A client type of the model without a handler here (none today: a
 *   message added to the model before its code) answers EUNSUPPORTED
 *   "not implemented yet" (after authentication).
 * - A frame that failed to decode is answered with the decode error when its
 *   type and route could be read (a shell), else dropped. The daemon never
 *   stops on input.
 * Secrets: tokens are never logged or formatted into replies; the app token
 * created by app.create lives in the reply's SECRET field (wiped on destroy)
 * and in guarded memory before that.
 */
#include "coord.h"

#include "cairn/alloc.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <stdarg.h>
#include <stdio.h>

int coord_send(struct coord *c, struct cairn_sock *s, struct cairn_msg **m)
{
    CAIRN_UNUSED(c);
    if (!*m)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory building a message");
    int rc = cairn_sock_send(s, *m);
    if (rc == CAIRN_ENOTFOUND || rc == CAIRN_EAGAIN)
        cairn_debug("send %s: %s", cairn_msg_type_name(cairn_msg_type(*m)), cairn_err_msg());
    else if (rc != CAIRN_OK)
        cairn_warn("send %s: %s", cairn_msg_type_name(cairn_msg_type(*m)), cairn_err_msg());
    cairn_msg_destroy(m);
    return rc;
}

void coord_reply_error(struct coord *c, struct cairn_sock *s, const struct cairn_msg *req, int code,
                       const char *fmt, ...)
{
    char text[CAIRN_PROTO_MAX_TEXT + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    struct cairn_msg *r = cairn_msg_reply(req, code, text);
    coord_send(c, s, &r);
}

bool coord_page_start(struct coord *c, const struct cairn_msg *m, const char *field, bool ok, struct coord_page *pg)
{
    *pg = (struct coord_page){.field = field, .limit = COORD_LIST_DEFAULT};
    cairn_msg_opt_u64(m, "limit", COORD_LIST_DEFAULT, &pg->limit);
    if (cairn_msg_get_str(m, "after", &pg->after, NULL) != CAIRN_OK)
        pg->after = NULL;
    if (pg->limit < 1 || pg->limit > COORD_LIST_MAX)
        pg->limit = COORD_LIST_DEFAULT;
    pg->r = cairn_msg_reply(m, CAIRN_OK, NULL);
    if (!pg->r || !ok) {
        cairn_msg_destroy(&pg->r);
        coord_reply_error(c, c->csock, m, CAIRN_ENOMEM, "out of memory listing %s", field);
        return false;
    }
    pg->arr = cairn_msg_set_array(pg->r, field);
    return true;
}

struct cairn_mval *coord_page_add(struct coord_page *pg, const char *id)
{
    if (pg->n == pg->limit) { /* one more exists: the page ends at `last` */
        cairn_msg_set_str(pg->r, "next", pg->last);
        return NULL;
    }
    pg->last = id;
    pg->n++;
    return cairn_mval_push_map(pg->r, pg->arr);
}

void coord_page_send(struct coord *c, const struct cairn_msg *m, struct coord_page *pg)
{
    if (cairn_msg_build_error(pg->r) != CAIRN_OK) {
        cairn_msg_destroy(&pg->r);
        coord_reply_error(c, c->csock, m, CAIRN_ENOMEM, "list %s: %s", pg->field, cairn_err_msg());
        return;
    }
    coord_send(c, c->csock, &pg->r);
}

static bool is_hex(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = p[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')))
            return false;
    }
    return true;
}

bool coord_token_ok(const uint8_t *tok, size_t len, const uint8_t want[CAIRN_TOKEN_HASH_BYTES])
{
    uint8_t raw[32], h[CAIRN_TOKEN_HASH_BYTES];
    if (!tok)
        tok = (const uint8_t *)"", len = 0;
    if (len == 64 && is_hex(tok, 64)) {
        char hex[65];
        memcpy(hex, tok, 64);
        hex[64] = '\0';
        for (size_t i = 0; i < 64; i++)
            if (hex[i] >= 'A' && hex[i] <= 'F')
                hex[i] = (char)(hex[i] - 'A' + 'a');
        if (cairn_hex_decode(raw, sizeof(raw), hex) == CAIRN_OK) {
            tok = raw;
            len = sizeof(raw);
        }
        explicit_bzero(hex, sizeof(hex));
    }
    cairn_token_hash(tok, len, h);
    bool ok = cairn_const_equal(h, want, sizeof(h));
    explicit_bzero(raw, sizeof(raw));
    explicit_bzero(h, sizeof(h));
    return ok;
}

static bool auth_app(struct coord *c, const struct cairn_msg *m)
{
    static const uint8_t nobody[CAIRN_TOKEN_HASH_BYTES] = {0};
    const char *app = cairn_msg_app(m);
    const uint8_t *tok;
    size_t len;
    cairn_msg_token(m, &tok, &len);
    const struct coord_app *a = app ? coord_map_sget(&c->apps, app) : NULL;
    /* hash even for an unknown app: the answer's timing does not tell whether the app exists */
    bool ok = coord_token_ok(tok, len, a ? a->rec.token_hash : nobody);
    return ok && a;
}

static bool auth_admin(struct coord *c, const struct cairn_msg *m)
{
    const char *app = cairn_msg_app(m);
    const uint8_t *tok;
    size_t len;
    cairn_msg_token(m, &tok, &len);
    bool ok = coord_token_ok(tok, len, c->admin_hash);
    return ok && app && !strcmp(app, COORD_ADMIN_APP);
}

static uint64_t now_u64(struct coord *c)
{
    int64_t t = cairn_clock_now_ns(&c->clock);
    return t < 0 ? 0 : (uint64_t)t;
}

/* ---- client handlers --------------------------------------------------------------------------- */

static void on_ping(struct coord *c, const struct cairn_msg *m)
{
    struct cairn_msg *r = cairn_msg_reply(m, CAIRN_OK, NULL);
    if (r) {
        cairn_msg_set_str(r, "version", CAIRN_VERSION);
        cairn_msg_set_u64(r, "proto", CAIRN_PROTO_VERSION);
        cairn_msg_set_u64(r, "now", now_u64(c));
        const uint8_t *e;
        size_t el;
        if (cairn_msg_get_bin(m, "echo", &e, &el) == CAIRN_OK)
            cairn_msg_set_bin(r, "echo", e, el);
    }
    coord_send(c, c->csock, &r);
}

static void on_status(struct coord *c, const struct cairn_msg *m)
{
    struct cairn_msg *r = cairn_msg_reply(m, CAIRN_OK, NULL);
    if (r)
        coord_status_fill(c, r);
    coord_send(c, c->csock, &r);
}

static void on_app_create(struct coord *c, const struct cairn_msg *m)
{
    const char *name = NULL;
    size_t len = 0;
    struct cairn_secret *tok = NULL;
    struct coord_app *a = NULL;
    cairn_msg_get_str(m, "name", &name, &len);
    if (!name || !coord_app_name_valid(name, len)) {
        coord_reply_error(c, c->csock, m, CAIRN_EINVAL,
                          "invalid app name: 1..64 of a-z 0-9 . _ -, not starting with '_', '.' or '-'");
        return;
    }
    if (coord_map_sget(&c->apps, name)) {
        coord_reply_error(c, c->csock, m, CAIRN_EEXIST, "app '%s' already exists", name);
        return;
    }
    int rc = cairn_secret_random(&tok, 32);
    a = rc == CAIRN_OK ? cairn_calloc(1, sizeof(*a)) : NULL;
    if (!a) {
        coord_reply_error(c, c->csock, m, CAIRN_ENOMEM, "out of memory creating app '%s'", name);
        goto out;
    }
    memcpy(a->rec.name, name, len);
    a->rec.name[len] = '\0';
    a->rec.created_ns = cairn_clock_now_ns(&c->clock);
    coord_map_init(&a->names);
    cairn_token_hash(tok->bytes, tok->len, a->rec.token_hash);
    rc = coord_meta_put_app(c->kv, &a->rec);
    if (rc == CAIRN_OK)
        rc = coord_map_sput(&c->apps, a->rec.name, a);
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, rc, "create app '%s': %s", name, cairn_err_msg());
        goto out;
    }
    cairn_info("created app '%s'", a->rec.name);
    struct cairn_msg *r = cairn_msg_reply(m, CAIRN_OK, NULL);
    if (r) {
        cairn_msg_set_str(r, "app", a->rec.name);
        cairn_msg_set_bin(r, "token", tok->bytes, tok->len);
    }
    a = NULL; /* owned by the map */
    coord_send(c, c->csock, &r);
out:
    cairn_free(a);
    cairn_secret_destroy(&tok);
}

static void on_clock_advance(struct coord *c, const struct cairn_msg *m)
{
    uint64_t s = 0;
    cairn_msg_get_u64(m, "seconds", &s);
    if (!c->cfg->test_clock) {
        coord_reply_error(c, c->csock, m, CAIRN_EPERM,
                          "the clock can only be advanced on a coordinator started with --test-clock");
        return;
    }
    /* the offset stays under 2^62 ns (146 years), so real time + offset never overflows */
    const int64_t max_offset = INT64_C(1) << 62;
    int64_t old = cairn_clock_offset_ns(&c->clock);
    if (s == 0 || old > max_offset || s > (uint64_t)(max_offset - old) / 1000000000ull) {
        coord_reply_error(c, c->csock, m, CAIRN_EINVAL, "cannot advance the clock by %llu s",
                          (unsigned long long)s);
        return;
    }
    int64_t ns = (int64_t)s * 1000000000ll;
    /* persisted first: a restart keeps the advanced time */
    int rc = coord_meta_put_i64(c->kv, COORD_KEY_CLOCK, old + ns);
    if (rc == CAIRN_OK)
        rc = cairn_clock_advance(&c->clock, ns);
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, rc, "%s", cairn_err_msg());
        return;
    }
    cairn_info("test clock advanced by %llu s", (unsigned long long)s);
    coord_retention_sweep(c); /* issue 5: what expired is marked before the reply */
    struct cairn_msg *r = cairn_msg_reply(m, CAIRN_OK, NULL);
    if (r)
        cairn_msg_set_u64(r, "now", now_u64(c));
    coord_send(c, c->csock, &r);
}

void coord_api_on_client(struct coord *c, struct cairn_msg *m)
{
    unsigned type = cairn_msg_type(m);
    const struct cairn_proto_msginfo *mi = cairn_proto_msginfo(type);
    if (cairn_msg_is_reply(m)) {
        cairn_debug("dropped a %s reply from a client", cairn_msg_type_name(type));
        goto out;
    }
    if (!mi || (mi->route != CAIRN_ROUTE_CLIENT_ANY && mi->route != CAIRN_ROUTE_CLIENT_APP &&
                mi->route != CAIRN_ROUTE_CLIENT_ADMIN)) {
        c->stats.bad_messages++;
        if (!mi || mi->shape != CAIRN_SHAPE_ONEWAY)
            coord_reply_error(c, c->csock, m, CAIRN_EPROTO, "message '%s' is not served on the client endpoint",
                              cairn_msg_type_name(type));
        goto out;
    }
    if (mi->route == CAIRN_ROUTE_CLIENT_APP && !auth_app(c, m)) {
        const char *app = cairn_msg_app(m);
        cairn_debug("refused %s: bad token for app '%s'", mi->name, app ? app : "");
        coord_reply_error(c, c->csock, m, CAIRN_EAUTH, "invalid app token for app '%s'", app ? app : "");
        goto out;
    }
    if (mi->route == CAIRN_ROUTE_CLIENT_ADMIN && !auth_admin(c, m)) {
        cairn_debug("refused %s: bad admin token", mi->name);
        coord_reply_error(c, c->csock, m, CAIRN_EAUTH, "invalid admin token (admin calls use app '%s')",
                          COORD_ADMIN_APP);
        goto out;
    }
    switch (type) {
    case CAIRN_MSG_PING: on_ping(c, m); break;
    case CAIRN_MSG_CLUSTER_STATUS: on_status(c, m); break;
    case CAIRN_MSG_APP_CREATE: on_app_create(c, m); break;
    case CAIRN_MSG_ADMIN_CLOCK_ADVANCE: on_clock_advance(c, m); break;
    case CAIRN_MSG_JOB_SUBMIT: coord_job_on_submit(c, &m); break;
    case CAIRN_MSG_JOB_GET: coord_job_on_get(c, &m); break;
    case CAIRN_MSG_IMAGE_IMPORT: coord_image_on_import(c, &m); break;
    case CAIRN_MSG_IMAGE_LS: coord_image_on_ls(c, m); break;
    case CAIRN_MSG_IMAGE_SHOW: coord_image_on_show(c, m); break;
    case CAIRN_MSG_IMAGE_RM: coord_image_on_rm(c, m); break;
    case CAIRN_MSG_SANDBOX_CREATE: coord_sandbox_on_create(c, &m); break;
    case CAIRN_MSG_SANDBOX_EXEC:
    case CAIRN_MSG_SANDBOX_EXEC_STREAM: coord_exec_on_request(c, &m); break;
    case CAIRN_MSG_SANDBOX_LS: coord_sandbox_on_ls(c, m); break;
    case CAIRN_MSG_SANDBOX_TERMINATE: coord_sandbox_on_terminate(c, &m); break;
    case CAIRN_MSG_SANDBOX_SNAPSHOT_FS: coord_sandbox_on_snapshot_fs(c, &m); break;
    case CAIRN_MSG_SANDBOX_MOUNT: coord_sandbox_on_mount(c, &m); break;              /* issue 5 */
    case CAIRN_MSG_SANDBOX_UNMOUNT: coord_sandbox_on_unmount(c, &m); break;          /* issue 5 */
    case CAIRN_MSG_SANDBOX_SNAPSHOT_DIR: coord_sandbox_on_snapshot_dir(c, &m); break; /* issue 5 */
    case CAIRN_MSG_SANDBOX_SNAPSHOT: coord_sandbox_on_snapshot(c, &m); break; /* issue 6 */
    case CAIRN_MSG_SANDBOX_RESTORE: coord_sandbox_on_restore(c, &m); break;
    case CAIRN_MSG_SNAPSHOT_LS: coord_snapshot_on_ls(c, m); break;
    case CAIRN_MSG_SNAPSHOT_SHOW: coord_snapshot_on_show(c, m); break;
    case CAIRN_MSG_SNAPSHOT_RM: coord_snapshot_on_rm(c, m); break;
    default: /* a type of the model without a handler yet */
        coord_reply_error(c, c->csock, m, CAIRN_EUNSUPPORTED, "'%s' is not implemented yet", mi->name);
    }
out:
    cairn_msg_destroy(&m);
}

void coord_api_on_worker(struct coord *c, struct cairn_msg *m)
{
    unsigned type = cairn_msg_type(m);
    const struct cairn_proto_msginfo *mi = cairn_proto_msginfo(type);
    if (cairn_msg_is_reply(m)) {
        if (type == CAIRN_MSG_JOB_DISPATCH)
            coord_job_on_dispatch_reply(c, m);
        else if (type == CAIRN_MSG_MEMBERSHIP && cairn_msg_code(m) != CAIRN_OK)
            cairn_debug("a worker refused membership: %s: %s", cairn_err_name(cairn_msg_code(m)),
                        cairn_msg_text(m) ? cairn_msg_text(m) : "");
        goto out;
    }
    if (!mi || mi->route != CAIRN_ROUTE_WORKER) {
        c->stats.bad_messages++;
        if (!mi || mi->shape != CAIRN_SHAPE_ONEWAY)
            coord_reply_error(c, c->wsock, m, CAIRN_EPROTO, "message '%s' is not served on the worker endpoint",
                              cairn_msg_type_name(type));
        goto out;
    }
    switch (type) {
    case CAIRN_MSG_WORKER_REGISTER: coord_worker_on_register(c, m); break;
    case CAIRN_MSG_WORKER_HEARTBEAT: coord_worker_on_heartbeat(c, m); break;
    case CAIRN_MSG_JOB_RESULT: coord_job_on_result(c, m); break;
    case CAIRN_MSG_JOB_PROGRESS: coord_job_on_progress(c, m); break;
    case CAIRN_MSG_UPLOAD_READ: coord_upload_on_read(c, m); break;
    case CAIRN_MSG_JOB_OUTPUT: coord_exec_on_output(c, m); break;
    case CAIRN_MSG_JOB_REFS: coord_refs_on_job_refs(c, m); break; /* issue 5 */
    default:
        if (mi->shape != CAIRN_SHAPE_ONEWAY)
            coord_reply_error(c, c->wsock, m, CAIRN_EUNSUPPORTED, "'%s' is not implemented yet", mi->name);
    }
out:
    cairn_msg_destroy(&m);
}

void coord_api_on_bad(struct coord *c, struct cairn_sock *s, int rc, struct cairn_msg *shell)
{
    char why[CAIRN_PROTO_MAX_TEXT + 1];
    snprintf(why, sizeof(why), "%s", cairn_err_msg());
    c->stats.bad_messages++;
    cairn_debug("undecodable message on the %s endpoint: %s: %s", s == c->csock ? "client" : "worker",
                cairn_err_name(rc), why);
    if (shell) {
        const struct cairn_proto_msginfo *mi = cairn_proto_msginfo(cairn_msg_type(shell));
        unsigned t = cairn_msg_type(shell);
        bool answerable = t >= 1 && t <= 65535 && !cairn_msg_is_reply(shell) &&
                          cairn_msg_route(shell).len > 0 && !(mi && mi->shape == CAIRN_SHAPE_ONEWAY);
        if (answerable)
            coord_reply_error(c, s, shell, rc, "%s", why);
    }
    cairn_msg_destroy(&shell);
}
