/*
 * coord_exec.c: sandbox.exec and sandbox.exec.stream (docs/internals/sandboxes.md
 * "Exec"): each starts a sandbox-exec job on the sandbox's worker; the
 * worker sends the command's output as job.output messages while it runs,
 * and the coordinator either collects them (sandbox.exec: each stream kept up
 * to COORD_EXEC_MAX_STREAM, `truncated` set beyond) or forwards each one to
 * the client as a stream reply (seq 0, 1, 2, ..., then one with done and
 * exit_code, or an error reply).
 *
 * Flow control (the point of the design): a worker keeps at most 8 job.output
 * messages per job unacknowledged, and the coordinator acknowledges one only
 * once its forward was queued on the client's connection. When the client's
 * queue is full (cairn_sock_send: EAGAIN, the client reads slowly) the
 * forward and its acknowledgement wait in the exec's FIFO and are retried on
 * every loop turn (coord_exec_flush), so a slow client stalls the command's
 * output at the worker instead of filling the coordinator's memory. A client
 * that went away (ENOTFOUND on a forward) ends the stream: the job fails
 * (ECANCELED) and every held output, and every later one, is answered with an
 * error, which tells the worker to kill the command.
 *
 * Lifetime of a struct coord_exec (one per exec request; in c->execs):
 *   created by coord_exec_on_request, attached to its job by coord_job_create
 *   (j->exec, x->j) before the job can end;
 *   the job's end (coord_exec_finish_apply) detaches it and queues the last
 *   reply; it is freed once its FIFO is empty (exec_done), or at once when its
 *   client went away (exec_gone), or at shutdown (coord_exec_free_all).
 * Ordering: job.output messages of a job arrive in order on the worker's
 * connection; a seq below the next expected one is a resend and is only
 * acknowledged. The worker sends job.result after its outputs were
 * acknowledged, so the result never overtakes an output.
 */
#include "coord.h"

#include "coord_value.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <inttypes.h>
#include <stdio.h>

#define STREAM_DATA_MAX (1u << 20) /* sandbox.exec.stream reply field "data" */

struct exec_item {
    struct cairn_msg *fwd;  /* reply to the client (NULL: nothing to forward) */
    struct cairn_msg *ack;  /* reply to the worker's job.output, sent once fwd is queued (or NULL) */
    struct exec_item *next;
};

struct coord_exec {
    struct coord_exec *prev, *next; /* c->execs */
    struct cairn_msg *req;          /* owned: the client's request (route, rid, type) */
    bool stream;
    bool stalled;                   /* counted in c->nstalled */
    struct coord_job *j;            /* its job while it runs */
    char job[COORD_JOB_ID_LEN + 1];
    uint64_t next_in;               /* next job.output seq expected */
    uint64_t next_out;              /* next stream reply seq */
    struct cairn_buf out, err;      /* sandbox.exec: what is kept of each stream */
    bool truncated;
    struct exec_item *head, *tail;  /* stream: forwards waiting for room */
    size_t pending;
};

static void item_free(struct exec_item *it)
{
    cairn_msg_destroy(&it->fwd);
    cairn_msg_destroy(&it->ack);
    cairn_free(it);
}

static void set_stalled(struct coord *c, struct coord_exec *x, bool on)
{
    if (x->stalled == on)
        return;
    x->stalled = on;
    if (on)
        c->nstalled++;
    else
        c->nstalled--;
}

static void exec_free(struct coord *c, struct coord_exec *x)
{
    set_stalled(c, x, false);
    if (x->prev)
        x->prev->next = x->next;
    else if (c->execs == x)
        c->execs = x->next;
    if (x->next)
        x->next->prev = x->prev;
    while (x->head) {
        struct exec_item *it = x->head;
        x->head = it->next;
        item_free(it);
    }
    if (x->j)
        x->j->exec = NULL;
    cairn_msg_destroy(&x->req);
    cairn_buf_release(&x->out);
    cairn_buf_release(&x->err);
    cairn_free(x);
}

void coord_exec_attach(struct coord_exec *x, struct coord_job *j)
{
    x->j = j;
    memcpy(x->job, j->rec.id, sizeof(x->job));
}

void coord_exec_free_all(struct coord *c)
{
    while (c->execs)
        exec_free(c, c->execs);
}

void coord_exec_release_all(struct coord *c)
{
    while (c->execs) {
        struct coord_exec *x = c->execs;
        struct cairn_msg *r = cairn_msg_reply(x->req, CAIRN_EUNAVAILABLE,
                                              "the coordinator is shutting down; the command may still run");
        coord_send(c, c->csock, &r);
        exec_free(c, x);
    }
}

/* The client went away: the job ends, the worker hears it with every held and later output. */
static void exec_gone(struct coord *c, struct coord_exec *x)
{
    char why[160];
    snprintf(why, sizeof(why), "the client of sandbox.exec.stream went away (job '%s')", x->job);
    cairn_info("%s: stopping the command", why);
    while (x->head) {
        struct exec_item *it = x->head;
        x->head = it->next;
        if (it->ack) {
            struct cairn_msg *no = cairn_msg_reply(it->ack, CAIRN_ECANCELED, why);
            coord_send(c, c->wsock, &no);
        }
        item_free(it);
    }
    x->tail = NULL;
    x->pending = 0;
    struct coord_job *j = x->j;
    if (j) {
        j->exec = NULL;
        x->j = NULL;
        coord_job_fail(c, j, CAIRN_ECANCELED, why);
    }
    exec_free(c, x);
}

/*
 * Send what the FIFO holds, in order, while the client's queue takes it; each
 * acknowledgement goes to the worker once its forward is queued. Frees x when
 * it is empty and its job ended (the caller must not use x afterwards).
 */
static void exec_flush(struct coord *c, struct coord_exec *x)
{
    while (x->head) {
        struct exec_item *it = x->head;
        if (it->fwd) {
            int rc = cairn_sock_send(c->csock, it->fwd);
            if (rc == CAIRN_EAGAIN) {
                set_stalled(c, x, true);
                return;
            }
            if (rc != CAIRN_OK) {
                cairn_debug("forward exec output of job '%s': %s", x->job, cairn_err_msg());
                exec_gone(c, x);
                return;
            }
        }
        if (it->ack)
            coord_send(c, c->wsock, &it->ack);
        x->head = it->next;
        if (!x->head)
            x->tail = NULL;
        x->pending--;
        item_free(it);
    }
    set_stalled(c, x, false);
    if (!x->j)
        exec_free(c, x);
}

static int exec_push(struct coord_exec *x, struct cairn_msg *fwd, struct cairn_msg *ack)
{
    struct exec_item *it = cairn_calloc(1, sizeof(*it));
    if (!it) {
        cairn_msg_destroy(&fwd);
        cairn_msg_destroy(&ack);
        return cairn_err_set(CAIRN_ENOMEM, "out of memory forwarding exec output");
    }
    it->fwd = fwd;
    it->ack = ack;
    if (x->tail)
        x->tail->next = it;
    else
        x->head = it;
    x->tail = it;
    x->pending++;
    return CAIRN_OK;
}

void coord_exec_flush(struct coord *c)
{
    for (struct coord_exec *x = c->execs, *next; x && c->nstalled; x = next) {
        next = x->next;
        if (x->stalled)
            exec_flush(c, x);
    }
}

/* ---- requests ---------------------------------------------------------------------------------- */

void coord_exec_on_request(struct coord *c, struct cairn_msg **mp)
{
    struct cairn_msg *m = *mp, *pm = NULL;
    const char *app = cairn_msg_app(m), *id = "", *workdir = NULL;
    const struct cairn_mval *argv = NULL, *env = NULL;
    const uint8_t *in = NULL;
    size_t nargv = 0, nenv = 0, in_len = 0;
    uint64_t timeout_ms = 0;
    struct coord_exec *x = NULL;
    struct cairn_buf pb;
    cairn_buf_init(&pb, COORD_RECORD_MAX);
    cairn_msg_get_str(m, "sandbox", &id, NULL);
    cairn_msg_get_array(m, "argv", &argv, &nargv);
    if (cairn_msg_get_array(m, "env", &env, &nenv) != CAIRN_OK)
        env = NULL;
    if (cairn_msg_get_str(m, "workdir", &workdir, NULL) != CAIRN_OK)
        workdir = NULL;
    if (cairn_msg_get_bin(m, "stdin", &in, &in_len) != CAIRN_OK)
        in = NULL;
    cairn_msg_opt_u64(m, "timeout_ms", 0, &timeout_ms);
    struct coord_sandbox *sb = NULL;
    int rc = coord_sandbox_usable(c, app, id, &sb);
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, rc, "%s", cairn_err_msg());
        goto out;
    }
    if (!argv || nargv == 0) {
        coord_reply_error(c, c->csock, m, CAIRN_EINVAL, "exec needs a command (argv)");
        goto out;
    }
    if (in && in_len > COORD_STDIN_MAX) {
        coord_reply_error(c, c->csock, m, CAIRN_ETOOBIG, "stdin of %zu bytes: at most %d on this path", in_len,
                          COORD_STDIN_MAX);
        goto out;
    }
    pm = cairn_msg_new(CAIRN_MSG_JOB_SUBMIT);
    x = cairn_calloc(1, sizeof(*x));
    if (!pm || !x) {
        coord_reply_error(c, c->csock, m, CAIRN_ENOMEM, "out of memory");
        goto out;
    }
    struct cairn_mval *p = cairn_msg_set_map(pm, "params");
    cairn_mval_put_str(pm, p, "runtime_id", sb->rec.runtime_id);
    cairn_mval_put_str(pm, p, "sandbox", sb->rec.id);
    cairn_mval_put_str(pm, p, "worker", sb->rec.worker);
    cairn_mval_put_value(pm, p, "argv", argv);
    if (env)
        cairn_mval_put_value(pm, p, "env", env);
    if (workdir)
        cairn_mval_put_str(pm, p, "workdir", workdir);
    if (in)
        cairn_mval_put_bin(pm, p, "stdin", in, in_len);
    cairn_mval_put_u64(pm, p, "timeout_ms", timeout_ms);
    rc = cairn_msg_build_error(pm);
    if (rc == CAIRN_OK)
        rc = coord_value_pack(cairn_msg_get(pm, "params"), &pb);
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->csock, m, rc, "exec in sandbox '%s': %s", id, cairn_err_msg());
        goto out;
    }
    x->stream = cairn_msg_type(m) == CAIRN_MSG_SANDBOX_EXEC_STREAM;
    x->req = m;
    cairn_buf_init(&x->out, COORD_EXEC_MAX_STREAM);
    cairn_buf_init(&x->err, COORD_EXEC_MAX_STREAM);
    x->next = c->execs;
    if (c->execs)
        c->execs->prev = x;
    c->execs = x;
    *mp = NULL; /* x->req */
    struct coord_job_spec spec = {.app = app, .kind = COORD_KIND_SBX_EXEC_S, .params = pb.data,
                                  .params_len = pb.len, .pin = sb->rec.worker, .state = COORD_JOB_QUEUED,
                                  .exec = x};
    char jid[COORD_JOB_ID_LEN + 1];
    rc = coord_job_create(c, &spec, jid);
    if (rc != CAIRN_OK) {
        coord_reply_error(c, c->csock, x->req, rc, "exec in sandbox '%s': %s", id, cairn_err_msg());
        x->j = NULL;
        exec_free(c, x);
    }
    x = NULL; /* answered when its job ends (perhaps already) */
out:
    cairn_free(x);
    cairn_msg_destroy(&pm);
    cairn_buf_release(&pb);
}

/* ---- job.output -------------------------------------------------------------------------------- */

static void collect(struct coord_exec *x, uint64_t stream, const uint8_t *p, size_t n)
{
    struct cairn_buf *b = stream == 2 ? &x->err : &x->out;
    size_t room = COORD_EXEC_MAX_STREAM - b->len, take = CAIRN_MIN(room, n);
    if (take && cairn_buf_append(b, p, take) != CAIRN_OK)
        take = 0;
    if (take < n)
        x->truncated = true;
}

void coord_exec_on_output(struct coord *c, struct cairn_msg *m)
{
    const char *id = "";
    uint64_t seq = 0, stream = 1;
    cairn_msg_get_str(m, "job", &id, NULL);
    cairn_msg_get_u64(m, "seq", &seq);
    cairn_msg_get_u64(m, "stream", &stream);
    const uint8_t *data = (const uint8_t *)"";
    size_t len = 0;
    if (cairn_msg_frame_count(m) > 0 && cairn_msg_frame(m, 0, &data, &len) != CAIRN_OK)
        len = 0;
    struct coord_job *j = coord_job_find(c, id);
    if (!j) {
        /* ended (or its client went away): the worker stops the command */
        coord_reply_error(c, c->wsock, m, CAIRN_ENOTFOUND, "job '%s' is not running (its client may have gone)", id);
        return;
    }
    if (j->rec.state != COORD_JOB_RUNNING || !j->w || !coord_worker_key_ok(j->w, m)) {
        coord_reply_error(c, c->wsock, m, CAIRN_EPERM, "job '%s' does not run on this worker", id);
        return;
    }
    if (j->kind_id != COORD_KIND_SBX_EXEC) {
        coord_reply_error(c, c->wsock, m, CAIRN_EINVAL, "job '%s' (%s) has no output", id, j->rec.kind);
        return;
    }
    struct coord_exec *x = j->exec;
    struct cairn_msg *ack = cairn_msg_reply(m, CAIRN_OK, NULL);
    if (!x || seq < x->next_in) { /* nobody waits (the coordinator restarted), or a resend */
        coord_send(c, c->wsock, &ack);
        return;
    }
    if (!x->stream) {
        x->next_in = seq + 1;
        collect(x, stream, data, len);
        coord_send(c, c->wsock, &ack);
        return;
    }
    if (x->pending >= COORD_EXEC_MAX_PENDING) {
        cairn_msg_destroy(&ack);
        coord_reply_error(c, c->wsock, m, CAIRN_EAGAIN, "job '%s': too many unacknowledged outputs", id);
        return;
    }
    x->next_in = seq + 1;
    /* each piece of at most 1 MiB is one stream reply; the last one carries the acknowledgement */
    size_t off = 0;
    do {
        size_t n = CAIRN_MIN(len - off, (size_t)STREAM_DATA_MAX);
        struct cairn_msg *fwd = NULL;
        if (len > 0) {
            fwd = cairn_msg_reply(x->req, CAIRN_OK, NULL);
            if (fwd) {
                cairn_msg_set_u64(fwd, "seq", x->next_out++);
                cairn_msg_set_u64(fwd, "stream", stream);
                cairn_msg_set_bin(fwd, "data", data + off, n);
            }
        }
        off += n;
        bool last = off >= len;
        if (exec_push(x, fwd, last ? ack : NULL) != CAIRN_OK)
            return; /* out of memory: no acknowledgement, the worker sends it again */
        if (last)
            ack = NULL;
    } while (off < len);
    exec_flush(c, x);
}

/* ---- the job's end ----------------------------------------------------------------------------- */

int coord_exec_finish_prepare(struct coord *c, struct coord_job *j, struct coord_finish *f)
{
    CAIRN_UNUSED(c);
    int64_t code = 0;
    if (f->state == COORD_JOB_SUCCEEDED &&
        (!f->result || cairn_mval_i64(cairn_mval_get(f->result, "exit_code"), &code) != CAIRN_OK)) {
        f->state = COORD_JOB_FAILED;
        f->code = CAIRN_EPROTO;
        snprintf(f->msg, sizeof(f->msg), "worker '%s' reported no exit_code for job '%s'", j->rec.worker,
                 j->rec.id);
        f->has_msg = true;
    }
    return CAIRN_OK;
}

void coord_exec_finish_apply(struct coord *c, struct coord_job *j, struct coord_finish *f, bool apply)
{
    struct coord_exec *x = j->exec;
    if (!apply || !x)
        return;
    j->exec = NULL;
    x->j = NULL;
    int64_t exit_code = 0;
    bool ok = f->state == COORD_JOB_SUCCEEDED;
    if (ok)
        cairn_mval_i64(cairn_mval_get(f->result, "exit_code"), &exit_code);
    const char *why = f->has_msg ? f->msg : f->why;
    struct cairn_msg *r = cairn_msg_reply(x->req, ok ? CAIRN_OK : (int)f->code, ok ? NULL : why);
    if (r && ok && x->stream) {
        cairn_msg_set_u64(r, "seq", x->next_out++);
        cairn_msg_set_bool(r, "done", true);
        cairn_msg_set_i64(r, "exit_code", exit_code);
    } else if (r && ok) {
        cairn_msg_set_i64(r, "exit_code", exit_code);
        cairn_msg_set_bin(r, "stdout", x->out.len ? x->out.data : (const uint8_t *)"", x->out.len);
        cairn_msg_set_bin(r, "stderr", x->err.len ? x->err.data : (const uint8_t *)"", x->err.len);
        if (x->truncated)
            cairn_msg_set_bool(r, "truncated", true);
    }
    if (!x->stream) {
        coord_send(c, c->csock, &r);
        exec_free(c, x);
        return;
    }
    /* behind any output still waiting for room */
    if (r && exec_push(x, r, NULL) != CAIRN_OK)
        cairn_error("job '%s': the last stream reply is lost: %s", j->rec.id, cairn_err_msg());
    exec_flush(c, x);
}
