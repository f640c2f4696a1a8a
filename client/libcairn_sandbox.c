/*
 * libcairn_sandbox.c: the sandbox calls of libcairn (cairn/cairn.h
 * "sandboxes"): create, exec (collected and streamed), snapshot-fs, ls,
 * terminate. docs/internals/sandboxes.md is the agreement behind them. The
 * job helpers here (run_job & co.) are shared with libcairn_snapshot.c
 * (mounts, directory and memory snapshots) through client_int.h.
 *
 * - create, snapshot-fs and terminate start jobs: the request asks the
 *   coordinator to wait (wait_ms), and job.get long-polls until the job has
 *   finished; a job that failed becomes the call's error with the job's code
 *   and message. Their results name the new object `id` (PROTOCOL.md §5); the
 *   names of the agreement (`sandbox`, `image`) are accepted too.
 * - exec is one RPC whose reply comes when the command has ended: the
 *   deadline is the command's timeout plus the client's, or none.
 * - exec.stream is the one STREAM message: replies with the request's rid and
 *   seq 0, 1, 2, ... carry output, the last one `done` and `exit_code`. They
 *   are handed to the callback strictly in seq order (a reply that arrives
 *   early waits in a small reorder buffer; a repeated seq is dropped). Without
 *   a command timeout there is no deadline: after 30 s of silence a ping checks
 *   that the coordinator still answers, so a vanished coordinator ends the
 *   call with ETIMEDOUT instead of hanging it.
 */
#include "cairn/cairn.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/transport.h"
#include "client_int.h"

#include <inttypes.h>
#include <stdio.h>

#define JOB_WAIT_MS 600000u     /* what a job-starting request asks the coordinator to wait */
#define PROGRESS_WAIT_MS 1000u  /* the same with a progress callback: report once a second */
#define EXEC_SLACK_MS 5000u     /* beyond the command's timeout: the kill and the reply's trip */
#define EXEC_NO_LIMIT_MS 86400000u /* a collected exec without a timeout waits up to a day */
#define PROBE_AFTER_MS 30000u   /* silence on a stream before checking the coordinator */
#define REORDER_MAX 1024u

static int check_id(const char *what, const char *id)
{
    if (!id || !*id || strlen(id) > CAIRN_ID_MAX)
        return cairn_err_set(CAIRN_EINVAL, "%s: an id is 1..%d bytes (got '%.80s')", what, CAIRN_ID_MAX, id ? id : "");
    return CAIRN_OK;
}

static int check_req_id(const char *req_id)
{
    if (req_id && (!*req_id || strlen(req_id) > 64))
        return cairn_err_set(CAIRN_EINVAL, "req_id must be 1..64 bytes");
    return CAIRN_OK;
}

/* An app request of type t (auth done), or NULL with the error set in *rc. */
static struct cairn_msg *app_req(struct cairn_client *c, enum cairn_msg_type t, const char *what, int *rc)
{
    struct cairn_msg *m = cairn__msg_new(t);
    if (!m) {
        *rc = CAIRN_ENOMEM;
        return NULL;
    }
    *rc = cairn__auth_app(c, m, what);
    if (*rc != CAIRN_OK)
        cairn_msg_destroy(&m);
    return m;
}

static void set_req_id(struct cairn_msg *m, const char *req_id)
{
    char gen[24];
    if (!req_id) {
        cairn__gen_id(gen, "rq-");
        req_id = gen;
    }
    cairn_msg_set_str(m, "req_id", req_id);
}

/* A string of a job's result: the first of the keys present. */
static void result_str(const struct cairn_msg *rep, const char *k1, const char *k2, char *out, size_t cap)
{
    const struct cairn_mval *res = cairn_msg_get(rep, "result");
    out[0] = '\0';
    if (!res)
        return;
    cairn__copy_str(cairn_mval_get(res, k1), out, cap);
    if (!out[0] && k2)
        cairn__copy_str(cairn_mval_get(res, k2), out, cap);
}

/*
 * Run a job-starting request to the end; a failed job is the error. *final (may be NULL) gets the last reply.
 * what is "sandbox <stage>"; the client's progress callback, if any, sees the job as <stage>.
 */
static int run_job(struct cairn_client *c, struct cairn_msg **req, const char *what, struct cairn_job **job,
                   struct cairn_msg **final)
{
    struct cairn_job *j = NULL;
    struct cairn_msg *rep = NULL;
    const char *stage = !strncmp(what, "sandbox ", 8) ? what + 8 : what;
    unsigned wait = c->progress ? PROGRESS_WAIT_MS : JOB_WAIT_MS;
    cairn_msg_set_u64(*req, "wait_ms", wait);
    int rc = cairn__job_run(c, req, wait, stage, c->progress, c->progress_arg, &j, &rep);
    if (rc == CAIRN_OK)
        rc = cairn__job_err(j, what);
    if (rc != CAIRN_OK) {
        cairn_job_free(&j);
        cairn_msg_destroy(&rep);
        return rc;
    }
    *job = j;
    if (final)
        *final = rep;
    else
        cairn_msg_destroy(&rep);
    return CAIRN_OK;
}

static int put_strs(struct cairn_msg *m, const char *field, const char *what, const char *const *v, size_t n,
                    size_t max, size_t min_len)
{
    if (n > max)
        return cairn_err_set(CAIRN_ETOOBIG, "%s: at most %zu entries (got %zu)", what, max, n);
    struct cairn_mval *arr = cairn_msg_set_array(m, field);
    for (size_t i = 0; i < n; i++) {
        size_t len = v[i] ? strlen(v[i]) : 0;
        if (!v[i] || len < min_len || len > 4096)
            return cairn_err_set(CAIRN_EINVAL, "%s[%zu]: %zu bytes (%zu..4096 allowed)", what, i, len, min_len);
        cairn_mval_push_str(m, arr, v[i]);
    }
    return CAIRN_OK;
}

static int check_env(const char *const *env, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *eq = env[i] ? strchr(env[i], '=') : NULL;
        if (!eq || eq == env[i])
            return cairn_err_set(CAIRN_EINVAL, "environment entry '%.80s' is not NAME=value", env[i] ? env[i] : "");
    }
    return CAIRN_OK;
}

/* The helpers above, for libcairn_snapshot.c (client_int.h). */
int cairn__check_id(const char *what, const char *id) { return check_id(what, id); }
int cairn__check_req_id(const char *req_id) { return check_req_id(req_id); }
struct cairn_msg *cairn__app_req(struct cairn_client *c, enum cairn_msg_type t, const char *what, int *rc)
{
    return app_req(c, t, what, rc);
}

int cairn__ls_pages(struct cairn_client *c, enum cairn_msg_type t, const char *what, const char *field,
                    const struct cairn__ls_filter *filter, cairn__ls_page_fn page, void *arg)
{
    char after[CAIRN_ID_MAX + 1] = "";
    int rc = CAIRN_OK;
    for (;;) {
        struct cairn_msg *m = app_req(c, t, what, &rc), *rep = NULL;
        if (!m)
            break;
        cairn_msg_set_u64(m, "limit", CAIRN__LS_PAGE);
        if (after[0])
            cairn_msg_set_str(m, "after", after);
        if (filter && filter->str_key && filter->str_val)
            cairn_msg_set_str(m, filter->str_key, filter->str_val);
        if (filter && filter->bool_key && filter->bool_val)
            cairn_msg_set_bool(m, filter->bool_key, true);
        rc = cairn__call(c, &m, 0, &rep);
        if (rc != CAIRN_OK)
            break;
        const struct cairn_mval *arr = NULL;
        size_t n = 0;
        cairn_msg_get_array(rep, field, &arr, &n);
        rc = page(arg, arr, n);
        char next[CAIRN_ID_MAX + 1];
        cairn__copy_str(cairn_msg_get(rep, "next"), next, sizeof(next));
        cairn_msg_destroy(&rep);
        if (rc != CAIRN_OK || !next[0] || n == 0 || !strcmp(next, after))
            break;
        snprintf(after, sizeof(after), "%s", next);
    }
    return rc;
}
void cairn__set_req_id(struct cairn_msg *m, const char *req_id) { set_req_id(m, req_id); }
void cairn__result_str(const struct cairn_msg *rep, const char *k1, const char *k2, char *out, size_t cap)
{
    result_str(rep, k1, k2, out, cap);
}
int cairn__run_job(struct cairn_client *c, struct cairn_msg **req, const char *what, struct cairn_job **job,
                   struct cairn_msg **final)
{
    return run_job(c, req, what, job, final);
}

/* ---- create ---------------------------------------------------------------------------------- */

static int sandbox_create(struct cairn_client *c, const struct cairn_sandbox_opts *o, struct cairn_sandbox_ref *out)
{
    static const struct cairn_sandbox_opts none;
    if (!o)
        o = &none;
    char image[CAIRN_ID_MAX + 1] = "";
    int rc = check_req_id(o->req_id);
    if (rc == CAIRN_OK && o->gpu > 16)
        rc = cairn_err_set(CAIRN_EINVAL, "sandbox create: at most 16 GPUs (asked %u)", o->gpu);
    /* the coordinator refuses it too (snapshots.md); saying so here needs no round trip */
    if (rc == CAIRN_OK && o->enable_snapshot && o->gpu > 0)
        rc = cairn_err_set(CAIRN_EINVAL, "sandboxes with snapshots enabled cannot have GPUs");
    if (rc == CAIRN_OK && o->worker)
        rc = check_id("sandbox create: worker", o->worker);
    if (rc == CAIRN_OK && o->workdir && (o->workdir[0] != '/' || strlen(o->workdir) > 4096))
        rc = cairn_err_set(CAIRN_EINVAL, "sandbox create: the working directory '%.80s' must be an absolute path",
                           o->workdir);
    if (rc == CAIRN_OK)
        rc = check_env(o->env, o->nenv);
    if (rc == CAIRN_OK && o->image)
        rc = cairn_image_resolve(c, o->image, image);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_msg *m = app_req(c, CAIRN_MSG_SANDBOX_CREATE, "sandbox create", &rc), *rep = NULL;
    if (!m)
        return rc;
    set_req_id(m, o->req_id);
    if (image[0])
        cairn_msg_set_str(m, "image", image);
    if (o->ncmd)
        rc = put_strs(m, "cmd", "sandbox create: cmd", o->cmd, o->ncmd, 256, 0);
    if (rc == CAIRN_OK && o->nenv)
        rc = put_strs(m, "env", "sandbox create: env", o->env, o->nenv, 256, 1);
    if (o->workdir)
        cairn_msg_set_str(m, "workdir", o->workdir);
    if (o->enable_snapshot)
        cairn_msg_set_bool(m, "enable_snapshot", true);
    if (o->gpu)
        cairn_msg_set_u64(m, "gpu", o->gpu);
    if (o->worker)
        cairn_msg_set_str(m, "worker", o->worker);
    if (rc != CAIRN_OK) {
        cairn_msg_destroy(&m);
        return rc;
    }
    struct cairn_job *j = NULL;
    rc = run_job(c, &m, "sandbox create", &j, &rep);
    if (rc != CAIRN_OK)
        return rc;
    result_str(rep, "id", "sandbox", out->id, sizeof(out->id));
    result_str(rep, "worker", NULL, out->worker, sizeof(out->worker));
    if (!out->worker[0])
        snprintf(out->worker, sizeof(out->worker), "%s", j->worker);
    snprintf(out->job, sizeof(out->job), "%s", j->id);
    if (!out->id[0])
        rc = cairn_err_set(CAIRN_EPROTO, "sandbox create: job %s succeeded without a sandbox id in its result", j->id);
    cairn_job_free(&j);
    cairn_msg_destroy(&rep);
    return rc;
}

int cairn_sandbox_create(struct cairn_client *c, const struct cairn_sandbox_opts *opts, struct cairn_sandbox_ref *out)
{
    memset(out, 0, sizeof(*out));
    return cairn__keep_err(c, sandbox_create(c, opts, out));
}

/* ---- exec ------------------------------------------------------------------------------------ */

static int exec_req(struct cairn_client *c, enum cairn_msg_type t, const char *sb, const char *const *argv,
                    size_t argc, const struct cairn_exec_opts *o, struct cairn_msg **out)
{
    *out = NULL;
    static const struct cairn_exec_opts none;
    if (!o)
        o = &none;
    CAIRN_FORWARD_IF_ERROR(check_id("sandbox exec", sb));
    if (argc < 1 || !argv || !argv[0] || !argv[0][0])
        return cairn_err_set(CAIRN_EINVAL, "sandbox exec: no command given");
    if (o->stdin_len > CAIRN_EXEC_STDIN_MAX)
        return cairn_err_set(CAIRN_ETOOBIG, "sandbox exec: stdin of %zu bytes (at most %u bytes can be passed)",
                             o->stdin_len, CAIRN_EXEC_STDIN_MAX);
    if (o->workdir && (o->workdir[0] != '/' || strlen(o->workdir) > 4096))
        return cairn_err_set(CAIRN_EINVAL, "sandbox exec: the working directory '%.80s' must be an absolute path",
                             o->workdir);
    if (o->timeout_ms > 86400000u)
        return cairn_err_set(CAIRN_EINVAL, "sandbox exec: a timeout is at most 24 h");
    CAIRN_FORWARD_IF_ERROR(check_env(o->env, o->nenv));
    int rc = CAIRN_OK;
    struct cairn_msg *m = app_req(c, t, "sandbox exec", &rc);
    if (!m)
        return rc;
    cairn_msg_set_str(m, "sandbox", sb);
    rc = put_strs(m, "argv", "sandbox exec: argv", argv, argc, 256, 0);
    if (rc == CAIRN_OK && o->nenv)
        rc = put_strs(m, "env", "sandbox exec: env", o->env, o->nenv, 256, 1);
    if (o->workdir)
        cairn_msg_set_str(m, "workdir", o->workdir);
    if (o->stdin_data)
        cairn_msg_set_bin(m, "stdin", o->stdin_data, o->stdin_len);
    if (o->timeout_ms)
        cairn_msg_set_u64(m, "timeout_ms", o->timeout_ms);
    if (rc != CAIRN_OK) {
        cairn_msg_destroy(&m);
        return rc;
    }
    *out = m;
    return CAIRN_OK;
}

void cairn_exec_result_free(struct cairn_exec_result **r)
{
    if (!r || !*r)
        return;
    cairn_free((*r)->out);
    cairn_free((*r)->err);
    cairn_free(*r);
    *r = NULL;
}

/* A bin field copied with a terminating NUL. */
static int copy_bin(const struct cairn_msg *m, const char *field, uint8_t **out, size_t *len)
{
    const uint8_t *p = NULL;
    size_t n = 0;
    cairn_msg_get_bin(m, field, &p, &n);
    *out = cairn_malloc(n + 1);
    if (!*out)
        return cairn_err_set(CAIRN_ENOMEM, "sandbox exec: out of memory for %zu bytes of %s", n, field);
    if (n)
        memcpy(*out, p, n);
    (*out)[n] = 0;
    *len = n;
    return CAIRN_OK;
}

static int sandbox_exec(struct cairn_client *c, const char *sb, const char *const *argv, size_t argc,
                        const struct cairn_exec_opts *o, struct cairn_exec_result **out)
{
    struct cairn_msg *m = NULL, *rep = NULL;
    CAIRN_FORWARD_IF_ERROR(exec_req(c, CAIRN_MSG_SANDBOX_EXEC, sb, argv, argc, o, &m));
    uint64_t t = o ? o->timeout_ms : 0;
    unsigned wait = t ? (unsigned)t + EXEC_SLACK_MS : EXEC_NO_LIMIT_MS;
    int rc = cairn__call(c, &m, wait, &rep);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_exec_result *r = cairn_calloc(1, sizeof(*r));
    if (!r) {
        rc = cairn_err_set(CAIRN_ENOMEM, "sandbox exec: out of memory");
        goto out;
    }
    int64_t code = 0;
    cairn_msg_get_i64(rep, "exit_code", &code);
    r->exit_code = (int)code;
    cairn_msg_opt_bool(rep, "truncated", false, &r->truncated);
    rc = copy_bin(rep, "stdout", &r->out, &r->out_len);
    if (rc == CAIRN_OK)
        rc = copy_bin(rep, "stderr", &r->err, &r->err_len);
    if (rc == CAIRN_OK) {
        *out = r;
        r = NULL;
    }
out:
    cairn_exec_result_free(&r);
    cairn_msg_destroy(&rep);
    return rc;
}

int cairn_sandbox_exec(struct cairn_client *c, const char *sb, const char *const *argv, size_t argc,
                       const struct cairn_exec_opts *opts, struct cairn_exec_result **out)
{
    *out = NULL;
    return cairn__keep_err(c, sandbox_exec(c, sb, argv, argc, opts, out));
}

struct stream_state {
    cairn_output_fn fn;
    void *arg;
    uint64_t next_seq;
    bool done;
    int exit_code;
    struct cairn_msg **early; /* replies that came before their turn */
    size_t nearly, capearly;
};

/* Hand one in-order reply to the callback (or record the end). */
static int stream_deliver(struct stream_state *s, const struct cairn_msg *m)
{
    s->next_seq++;
    bool done = false;
    cairn_msg_opt_bool(m, "done", false, &done);
    const uint8_t *p = NULL;
    size_t n = 0;
    if (cairn_msg_get_bin(m, "data", &p, &n) == CAIRN_OK && n) {
        uint64_t stream = 1;
        cairn_msg_opt_u64(m, "stream", 1, &stream);
        int rc = s->fn(s->arg, (int)stream, p, n);
        if (rc != CAIRN_OK)
            return cairn_err_code() == rc ? rc
                                          : cairn_err_set(rc, "sandbox exec: the output callback stopped the call");
    }
    if (done) {
        int64_t code = 0;
        if (cairn_msg_get_i64(m, "exit_code", &code) != CAIRN_OK)
            return cairn_err_set(CAIRN_EPROTO, "sandbox exec: the last reply has no exit code");
        s->exit_code = (int)code;
        s->done = true;
    }
    return CAIRN_OK;
}

/* Take a stream reply (*m), deliver it and whatever it unblocks. */
static int stream_take(struct stream_state *s, struct cairn_msg **m)
{
    uint64_t seq = 0;
    if (cairn_msg_get_u64(*m, "seq", &seq) != CAIRN_OK) {
        cairn_msg_destroy(m);
        return cairn_err_set(CAIRN_EPROTO, "sandbox exec: a stream reply without seq");
    }
    if (seq < s->next_seq) { /* a repeat */
        cairn_msg_destroy(m);
        return CAIRN_OK;
    }
    if (seq > s->next_seq) {
        for (size_t i = 0; i < s->nearly; i++) {
            uint64_t q = 0;
            cairn_msg_get_u64(s->early[i], "seq", &q);
            if (q == seq) { /* a repeat of one that waits */
                cairn_msg_destroy(m);
                return CAIRN_OK;
            }
        }
        if (s->nearly >= REORDER_MAX) {
            cairn_msg_destroy(m);
            return cairn_err_set(CAIRN_EPROTO, "sandbox exec: reply %" PRIu64 " is missing while %u later ones came",
                                 s->next_seq, REORDER_MAX);
        }
        if (cairn_array_grow((void **)&s->early, &s->capearly, s->nearly + 1, sizeof(*s->early)) != CAIRN_OK) {
            cairn_msg_destroy(m);
            return cairn_err_set(CAIRN_ENOMEM, "sandbox exec: out of memory");
        }
        s->early[s->nearly++] = *m;
        *m = NULL;
        return CAIRN_OK;
    }
    int rc = stream_deliver(s, *m);
    cairn_msg_destroy(m);
    while (rc == CAIRN_OK && !s->done) {
        size_t i = 0;
        for (; i < s->nearly; i++) {
            uint64_t q = 0;
            cairn_msg_get_u64(s->early[i], "seq", &q);
            if (q == s->next_seq)
                break;
        }
        if (i == s->nearly)
            break;
        struct cairn_msg *e = s->early[i];
        s->early[i] = s->early[--s->nearly];
        rc = stream_deliver(s, e);
        cairn_msg_destroy(&e);
    }
    return rc;
}

static int sandbox_exec_stream(struct cairn_client *c, const char *sb, const char *const *argv, size_t argc,
                               const struct cairn_exec_opts *o, cairn_output_fn fn, void *arg, int *exit_code)
{
    if (!fn)
        return cairn_err_set(CAIRN_EINVAL, "sandbox exec: no output callback");
    struct cairn_msg *m = NULL;
    CAIRN_FORWARD_IF_ERROR(exec_req(c, CAIRN_MSG_SANDBOX_EXEC_STREAM, sb, argv, argc, o, &m));
    struct stream_state s = {.fn = fn, .arg = arg};
    uint64_t rid = 0, probe_rid = 0, probe_sent = 0;
    int rc = cairn__ensure_reached(c);
    if (rc == CAIRN_OK)
        rc = cairn_msg_build_error(m);
    if (rc == CAIRN_OK)
        rc = cairn__send_req(c, m, &rid);
    cairn_msg_destroy(&m);
    if (rc != CAIRN_OK)
        return rc;
    uint64_t t = o ? o->timeout_ms : 0;
    uint64_t start = cairn_now_mono_ns();
    uint64_t deadline = t ? start + (t + EXEC_SLACK_MS + c->timeout_ms) * 1000000ull : 0;
    uint64_t last_heard = start;
    while (!s.done) {
        uint64_t now = cairn_now_mono_ns();
        if (deadline && now >= deadline) {
            rc = cairn__timeout_err(c, t + EXEC_SLACK_MS + c->timeout_ms);
            break;
        }
        if (probe_rid && now - probe_sent >= (uint64_t)c->timeout_ms * 1000000ull) {
            rc = cairn_err_set(CAIRN_ETIMEDOUT,
                               "sandbox exec: the coordinator at %s stopped answering while the command ran "
                               "(no answer to a ping within %u ms)",
                               c->endpoint, c->timeout_ms);
            break;
        }
        if (!deadline && !probe_rid && now - last_heard >= (uint64_t)PROBE_AFTER_MS * 1000000ull) {
            struct cairn_msg *ping = cairn__msg_new(CAIRN_MSG_PING);
            if (!ping) {
                rc = CAIRN_ENOMEM;
                break;
            }
            rc = cairn__send_req(c, ping, &probe_rid);
            cairn_msg_destroy(&ping);
            if (rc != CAIRN_OK)
                break;
            probe_sent = now;
        }
        int ms = 1000;
        if (deadline)
            ms = (int)CAIRN_MIN((uint64_t)1000, (deadline - now + 999999) / 1000000);
        struct cairn_msg *r = NULL;
        rc = cairn_sock_recv(c->sock, ms, &r);
        if (rc == CAIRN_ETIMEDOUT) {
            rc = CAIRN_OK;
            continue;
        }
        if (rc != CAIRN_OK) {
            bool ours = r && cairn_msg_rid(r) == rid;
            cairn_msg_destroy(&r);
            if (ours)
                break;
            if (rc == CAIRN_EPROTO || rc == CAIRN_ETOOBIG || rc == CAIRN_EVERSION) {
                rc = CAIRN_OK;
                continue;
            }
            break;
        }
        c->reached = true;
        last_heard = cairn_now_mono_ns();
        if (probe_rid && cairn_msg_rid(r) == probe_rid) {
            probe_rid = 0;
            cairn_msg_destroy(&r);
            continue;
        }
        if (cairn_msg_rid(r) != rid || !cairn_msg_is_reply(r)) {
            cairn__stash_or_drop(c, &r);
            continue;
        }
        if (cairn_msg_type(r) != CAIRN_MSG_SANDBOX_EXEC_STREAM) {
            rc = cairn_err_set(CAIRN_EPROTO, "reply of type '%s' to a 'sandbox.exec.stream' request",
                               cairn_msg_type_name(cairn_msg_type(r)));
            cairn_msg_destroy(&r);
            break;
        }
        rc = cairn__reply_err(r);
        if (rc != CAIRN_OK) {
            cairn_msg_destroy(&r);
            break;
        }
        rc = stream_take(&s, &r);
        if (rc != CAIRN_OK)
            break;
    }
    for (size_t i = 0; i < s.nearly; i++)
        cairn_msg_destroy(&s.early[i]);
    cairn_free(s.early);
    if (rc == CAIRN_OK)
        *exit_code = s.exit_code;
    return rc;
}

int cairn_sandbox_exec_stream(struct cairn_client *c, const char *sb, const char *const *argv, size_t argc,
                              const struct cairn_exec_opts *opts, cairn_output_fn fn, void *arg, int *exit_code)
{
    *exit_code = 0;
    return cairn__keep_err(c, sandbox_exec_stream(c, sb, argv, argc, opts, fn, arg, exit_code));
}

/* ---- snapshot-fs, terminate ------------------------------------------------------------------ */

static int snapshot_fs(struct cairn_client *c, const char *sb, uint64_t ttl_s, const char *req_id,
                       struct cairn_snapshot_fs_result *out)
{
    int rc = check_id("sandbox snapshot-fs", sb);
    if (rc == CAIRN_OK)
        rc = check_req_id(req_id);
    if (rc == CAIRN_OK && ttl_s > 3153600000ull)
        rc = cairn_err_set(CAIRN_EINVAL, "sandbox snapshot-fs: a TTL is at most 100 years");
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_msg *m = app_req(c, CAIRN_MSG_SANDBOX_SNAPSHOT_FS, "sandbox snapshot-fs", &rc), *rep = NULL;
    if (!m)
        return rc;
    cairn_msg_set_str(m, "sandbox", sb);
    set_req_id(m, req_id);
    if (ttl_s)
        cairn_msg_set_u64(m, "ttl_s", ttl_s);
    struct cairn_job *j = NULL;
    rc = run_job(c, &m, "sandbox snapshot-fs", &j, &rep);
    if (rc != CAIRN_OK)
        return rc;
    result_str(rep, "id", "image", out->image, sizeof(out->image));
    const struct cairn_mval *res = cairn_msg_get(rep, "result");
    out->pause_ms = res ? cairn__get_u64(cairn_mval_get(res, "pause_ms")) : 0;
    snprintf(out->job, sizeof(out->job), "%s", j->id);
    if (!out->image[0])
        rc = cairn_err_set(CAIRN_EPROTO, "sandbox snapshot-fs: job %s succeeded without an image id in its result",
                           j->id);
    cairn_job_free(&j);
    cairn_msg_destroy(&rep);
    return rc;
}

int cairn_sandbox_snapshot_fs(struct cairn_client *c, const char *sb, uint64_t ttl_s, const char *req_id,
                              struct cairn_snapshot_fs_result *out)
{
    memset(out, 0, sizeof(*out));
    return cairn__keep_err(c, snapshot_fs(c, sb, ttl_s, req_id, out));
}

static int sandbox_terminate(struct cairn_client *c, const char *sb, const char *req_id)
{
    int rc = check_id("sandbox terminate", sb);
    if (rc == CAIRN_OK)
        rc = check_req_id(req_id);
    if (rc != CAIRN_OK)
        return rc;
    struct cairn_msg *m = app_req(c, CAIRN_MSG_SANDBOX_TERMINATE, "sandbox terminate", &rc);
    if (!m)
        return rc;
    cairn_msg_set_str(m, "sandbox", sb);
    set_req_id(m, req_id);
    struct cairn_job *j = NULL;
    rc = run_job(c, &m, "sandbox terminate", &j, NULL);
    cairn_job_free(&j);
    return rc;
}

int cairn_sandbox_terminate(struct cairn_client *c, const char *sb, const char *req_id)
{
    return cairn__keep_err(c, sandbox_terminate(c, sb, req_id));
}

/* ---- ls -------------------------------------------------------------------------------------- */

static void sandbox_info_clear(struct cairn_sandbox_info *sb)
{
    for (size_t i = 0; i < sb->nmounts; i++)
        cairn_free(sb->mounts[i].path);
    cairn_free(sb->mounts);
    sb->mounts = NULL;
    sb->nmounts = 0;
}

void cairn_sandbox_list_free(struct cairn_sandbox_list **l)
{
    if (!l || !*l)
        return;
    for (size_t i = 0; i < (*l)->n; i++)
        sandbox_info_clear(&(*l)->sandboxes[i]);
    cairn_free((*l)->sandboxes);
    cairn_free(*l);
    *l = NULL;
}

/* A SANDBOX record into sb; on error sb holds nothing to free. */
static int sandbox_from_rec(const struct cairn_mval *r, struct cairn_sandbox_info *sb)
{
    memset(sb, 0, sizeof(*sb));
    cairn__copy_str(cairn_mval_get(r, "id"), sb->id, sizeof(sb->id));
    cairn__copy_str(cairn_mval_get(r, "state"), sb->state, sizeof(sb->state));
    cairn__copy_str(cairn_mval_get(r, "worker"), sb->worker, sizeof(sb->worker));
    cairn__copy_str(cairn_mval_get(r, "image"), sb->image, sizeof(sb->image));
    cairn__copy_str(cairn_mval_get(r, "restored_from"), sb->restored_from, sizeof(sb->restored_from));
    sb->created_at_ns = (int64_t)cairn__get_u64(cairn_mval_get(r, "created_at"));
    const struct cairn_mval *es = cairn_mval_get(r, "enable_snapshot");
    if (es)
        cairn_mval_bool(es, &sb->enable_snapshot);
    sb->gpu = (unsigned)cairn__get_u64(cairn_mval_get(r, "gpu"));
    const struct cairn_mval *mounts = cairn_mval_get(r, "mounts");
    size_t n = mounts && cairn_mval_kind(mounts) == CAIRN_MV_ARRAY ? cairn_mval_len(mounts) : 0;
    if (n == 0)
        return CAIRN_OK;
    sb->mounts = cairn_calloc(n, sizeof(*sb->mounts));
    if (!sb->mounts)
        return cairn_err_set(CAIRN_ENOMEM, "sandbox %s: out of memory for %zu mounts", sb->id, n);
    for (size_t i = 0; i < n; i++) {
        const struct cairn_mval *m = cairn_mval_at(mounts, i);
        const char *p = "";
        size_t len = 0;
        if (cairn_mval_str(cairn_mval_get(m, "path"), &p, &len) != CAIRN_OK) {
            p = "";
            len = 0;
        }
        struct cairn_mount_info *mi = &sb->mounts[i];
        mi->path = cairn_strndup(p, len);
        if (!mi->path) {
            sandbox_info_clear(sb);
            return cairn_err_set(CAIRN_ENOMEM, "sandbox %s: out of memory for its mounts", sb->id);
        }
        sb->nmounts = i + 1;
        cairn__copy_str(cairn_mval_get(m, "image"), mi->image, sizeof(mi->image));
        const struct cairn_mval *cs = cairn_mval_get(m, "csek");
        if (cs)
            cairn_mval_bool(cs, &mi->csek);
    }
    return CAIRN_OK;
}

struct sandbox_pages {
    struct cairn_sandbox_list *l;
    size_t cap;
};

static int sandbox_page(void *arg, const struct cairn_mval *arr, size_t n)
{
    struct sandbox_pages *p = arg;
    struct cairn_sandbox_list *l = p->l;
    if (n && cairn_array_grow((void **)&l->sandboxes, &p->cap, l->n + n, sizeof(*l->sandboxes)) != CAIRN_OK)
        return cairn_err_set(CAIRN_ENOMEM, "sandbox ls: out of memory for %zu sandboxes", l->n + n);
    for (size_t i = 0; i < n; i++) {
        CAIRN_FORWARD_IF_ERROR(sandbox_from_rec(cairn_mval_at(arr, i), &l->sandboxes[l->n]));
        l->n++;
    }
    return CAIRN_OK;
}

static int sandbox_ls(struct cairn_client *c, bool all, struct cairn_sandbox_list **out)
{
    struct sandbox_pages p = {.l = cairn_calloc(1, sizeof(*p.l))};
    if (!p.l)
        return cairn_err_set(CAIRN_ENOMEM, "sandbox ls: out of memory");
    const struct cairn__ls_filter filter = {.bool_key = "all", .bool_val = all};
    int rc = cairn__ls_pages(c, CAIRN_MSG_SANDBOX_LS, "sandbox ls", "sandboxes", &filter, sandbox_page, &p);
    if (rc != CAIRN_OK) {
        cairn_sandbox_list_free(&p.l);
        return rc;
    }
    *out = p.l;
    return CAIRN_OK;
}

int cairn_sandbox_ls(struct cairn_client *c, bool all, struct cairn_sandbox_list **out)
{
    *out = NULL;
    return cairn__keep_err(c, sandbox_ls(c, all, out));
}
