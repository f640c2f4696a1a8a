/*
 * worker_exec.c: sandbox-exec (docs/internals/sandboxes.md "Exec"): a command run in a sandbox, its output
 * streamed to the coordinator as job.output while it is produced.
 *
 * Params: runtime_id, argv (array of str), env (array of "K=V" or map), workdir, stdin (bin, at most
 * 64 KiB), timeout_ms. Result: exit_code, ms. A timeout kills the command and the job succeeds with exit
 * code 137; an unknown or vanished sandbox is ENOTFOUND naming it.
 *
 * Threads: the command runs on an exec thread of the job's own (cairn_sandbox_exec calls its output
 * callback on the thread that runs it, and only when output arrives), which queues what it reads; the job
 * thread turns the queue into job.output frames and sends them on its own DEALER to the coordinator (the
 * acknowledgements come back on that socket, so the flow control needs nothing from the main thread).
 *
 * Frames: one stream per frame, in order, seq 0, 1, 2, ... A frame leaves when it holds FRAME_TARGET bytes,
 * when its first byte is COALESCE old, when the other stream has output, or when the command ended.
 * At most WINDOW frames are unacknowledged: while the window is full the pending frame keeps growing up to
 * FRAME_MAX, then the queue up to QUEUE_MAX, then the exec thread waits in its callback, so the command
 * blocks on a full pipe: a slow client slows the command down, memory stays bounded.
 *
 * Stops: an error reply to a job.output (the coordinator gives up: the client went away) cancels the command
 * (cairn_exec_opts.cancel: runsc kill -pid) and fails the job with that code; so does the abandon flag
 * (shutdown, no result), the job's deadline, and ACK_TIMEOUT without any acknowledgement while frames are
 * outstanding. The result is sent only after every frame was acknowledged, so the coordinator has all the
 * output before it learns the outcome (the two travel on different sockets).
 */
#include "worker_jobs_int.h"

#include "cairn/alloc.h"
#include "cairn/bytes.h"
#include "cairn/err.h"
#include "cairn/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#define FRAME_TARGET (64u << 10)
#define FRAME_MAX (1u << 20)
#define COALESCE_NS (20ull * 1000000ull)
#define WINDOW 8u
#define QUEUE_MAX (1u << 20)
#define ACK_TIMEOUT_NS (60000ull * 1000000ull)
#define STDIN_MAX (64u << 10)
#define PAUSED_RETRY_NS (10000ull * 1000000ull)

struct piece {
    struct piece *next;
    int stream;
    size_t len, off;
    uint8_t data[];
};

/* The exec thread's side: the command and the queue of its output. */
struct xq {
    pthread_mutex_t mu;
    pthread_cond_t cv_data, cv_space;
    struct piece *head, *tail; /* mu */
    size_t bytes;              /* mu: queued, not yet taken */
    bool done;                 /* mu: the exec returned */
    int rc, exit_code;         /* mu, once done */
    char msg[1024];            /* mu, once done */
    atomic_int cancel;
    struct cairn_sandbox *sb;
    struct cairn_exec_opts o;
};

static int on_output(int stream, const uint8_t *data, size_t len, void *arg)
{
    struct xq *q = arg;
    struct piece *p = cairn_malloc(sizeof(*p) + len);
    if (!p)
        return cairn_err_set(CAIRN_ENOMEM, "out of memory queueing exec output");
    p->next = NULL;
    p->stream = stream;
    p->len = len;
    p->off = 0;
    memcpy(p->data, data, len);
    pthread_mutex_lock(&q->mu);
    while (q->bytes >= QUEUE_MAX && !atomic_load(&q->cancel)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&q->cv_space, &q->mu, &ts);
    }
    bool cancel = atomic_load(&q->cancel);
    if (!cancel) {
        if (q->tail)
            q->tail->next = p;
        else
            q->head = p;
        q->tail = p;
        q->bytes += len;
        pthread_cond_signal(&q->cv_data);
    }
    pthread_mutex_unlock(&q->mu);
    if (cancel) {
        cairn_free(p);
        return cairn_err_set(CAIRN_ECANCELED, "exec output no longer wanted");
    }
    return CAIRN_OK;
}

static void *exec_thread(void *arg)
{
    struct xq *q = arg;
    pthread_setname_np(pthread_self(), "cairn-cmd");
    int code = -1, rc;
    uint64_t t0 = cairn_now_mono_ns();
    for (;;) {
        rc = cairn_sandbox_exec(q->sb, &q->o, &code);
        /* paused (a filesystem snapshot takes a moment): wait for the resume rather than fail */
        if (rc != CAIRN_EAGAIN || atomic_load(&q->cancel) || cairn_now_mono_ns() - t0 >= PAUSED_RETRY_NS)
            break;
        nanosleep(&(struct timespec){0, 20000000}, NULL);
    }
    pthread_mutex_lock(&q->mu);
    q->done = true;
    q->rc = rc;
    q->exit_code = code;
    snprintf(q->msg, sizeof(q->msg), "%s", rc == CAIRN_OK ? "" : cairn_err_msg());
    pthread_cond_signal(&q->cv_data);
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* The job thread's side. */
struct xs {
    struct jt *t;
    const struct job *jb;
    struct xq *q;
    struct cairn_buf frame;
    int frame_stream;
    uint64_t frame_first_ns;
    uint64_t seq;
    uint64_t inflight[WINDOW]; /* rids of unacknowledged job.output */
    unsigned n_inflight;
    uint64_t last_ack_ns;
    uint64_t frames, bytes;
    int stop_rc;
    char stop_msg[1024];
};

static void stop(struct xs *x, int rc)
{
    if (x->stop_rc)
        return;
    x->stop_rc = rc;
    snprintf(x->stop_msg, sizeof(x->stop_msg), "%s", cairn_err_msg());
    atomic_store(&x->q->cancel, 1);
    pthread_mutex_lock(&x->q->mu);
    pthread_cond_broadcast(&x->q->cv_space);
    pthread_mutex_unlock(&x->q->mu);
}

static void take_acks(struct xs *x, uint64_t now)
{
    struct jt *t = x->t;
    for (;;) {
        struct cairn_msg *m = NULL;
        int rc = cairn_sock_recv(t->coord, 0, &m);
        if (rc != CAIRN_OK) {
            cairn_msg_destroy(&m);
            if (rc == CAIRN_EPROTO || rc == CAIRN_ETOOBIG || rc == CAIRN_EVERSION)
                continue;
            return;
        }
        for (unsigned i = 0; i < x->n_inflight; i++) {
            if (!cairn_msg_is_reply(m) || cairn_msg_rid(m) != x->inflight[i])
                continue;
            x->inflight[i] = x->inflight[--x->n_inflight];
            x->last_ack_ns = now;
            int code = cairn_msg_code(m);
            if (code != CAIRN_OK)
                stop(x, cairn_err_set(code, "output of job '%s' refused by the coordinator: %s", x->jb->id,
                                      cairn_msg_text(m) ? cairn_msg_text(m) : cairn_err_name(code)));
            break;
        }
        cairn_msg_destroy(&m);
    }
}

static void send_frame(struct xs *x, uint64_t now)
{
    struct jt *t = x->t;
    struct cairn_msg *m = cairn_msg_new(CAIRN_MSG_JOB_OUTPUT);
    if (!m) {
        stop(x, cairn_err_set(CAIRN_ENOMEM, "out of memory for a job.output"));
        return;
    }
    uint64_t rid = ++t->coord_rid;
    cairn_msg_set_rid(m, rid);
    cairn_msg_set_str(m, "job", x->jb->id);
    cairn_msg_set_u64(m, "seq", x->seq);
    cairn_msg_set_u64(m, "stream", (uint64_t)x->frame_stream);
    cairn_msg_add_frame(m, x->frame.data, x->frame.len);
    int rc = cairn_sock_send(t->coord, m);
    cairn_msg_destroy(&m);
    if (rc != CAIRN_OK) {
        stop(x, cairn_err_set(rc, "job.output of job '%s' not sent: %s", x->jb->id, cairn_err_msg()));
        return;
    }
    if (x->n_inflight == 0)
        x->last_ack_ns = now; /* the acknowledgement clock starts with the first outstanding frame */
    x->inflight[x->n_inflight++] = rid;
    x->seq++;
    x->frames++;
    x->bytes += x->frame.len;
    x->frame.len = 0;
}

/* Move queued output into the pending frame; *switch_pending: the next output is of the other stream. */
static void pull(struct xs *x, uint64_t now, bool *switch_pending, bool *done)
{
    struct xq *q = x->q;
    size_t limit = x->n_inflight < WINDOW ? FRAME_TARGET : FRAME_MAX;
    *switch_pending = false;
    pthread_mutex_lock(&q->mu);
    while (q->head && x->frame.len < limit) {
        struct piece *p = q->head;
        if (x->frame.len > 0 && p->stream != x->frame_stream) {
            *switch_pending = true;
            break;
        }
        if (x->frame.len == 0) {
            x->frame_stream = p->stream;
            x->frame_first_ns = now;
        }
        size_t take = CAIRN_MIN(p->len - p->off, limit - x->frame.len);
        if (!x->stop_rc)
            cairn_buf_append(&x->frame, p->data + p->off, take); /* within max: limit <= FRAME_MAX */
        p->off += take;
        q->bytes -= take;
        if (p->off == p->len) {
            q->head = p->next;
            if (!q->head)
                q->tail = NULL;
            cairn_free(p);
        }
    }
    if (q->head && x->frame.len > 0 && q->head->stream != x->frame_stream)
        *switch_pending = true;
    *done = q->done && !q->head;
    pthread_cond_signal(&q->cv_space);
    pthread_mutex_unlock(&q->mu);
}

static void wait_for_work(struct xs *x, uint64_t now)
{
    uint64_t until = now + 100000000ull;
    if (x->frame.len > 0)
        until = CAIRN_MIN(until, x->frame_first_ns + COALESCE_NS);
    if (x->n_inflight > 0) {
        /* acknowledgements come on the socket, output on the queue: poll the one, look at the other soon */
        struct cairn_sock *s = x->t->coord;
        uint64_t ready = 0;
        int ms = until > now ? (int)CAIRN_MIN((until - now) / 1000000u + 1, 10u) : 0;
        cairn_sock_poll(&s, 1, ms, &ready);
        return;
    }
    pthread_mutex_lock(&x->q->mu);
    if (!x->q->head && !x->q->done && until > now) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (until - now);
        ts.tv_sec += (time_t)(ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        pthread_cond_timedwait(&x->q->cv_data, &x->q->mu, &ts);
    }
    pthread_mutex_unlock(&x->q->mu);
}

int cairn_wk__run_sandbox_exec(struct jt *t, const struct job *jb, struct cairn_msg *res)
{
    const char *rid = NULL, *workdir = NULL;
    const uint8_t *in = NULL;
    size_t in_len = 0;
    uint64_t timeout = 0;
    const struct cairn_mval *sv = cairn_wk__param(jb, "stdin"), *tv = cairn_wk__param(jb, "timeout_ms");
    if (sv && cairn_mval_kind(sv) != CAIRN_MV_NIL &&
        (cairn_mval_bin(sv, &in, &in_len) != CAIRN_OK || in_len > STDIN_MAX))
        return cairn_err_set(CAIRN_EINVAL, "sandbox-exec: params.stdin must be bin of at most %u bytes", STDIN_MAX);
    if (tv && (cairn_mval_u64(tv, &timeout) != CAIRN_OK || timeout > UINT32_MAX))
        return cairn_err_set(CAIRN_EINVAL, "sandbox-exec: params.timeout_ms must be a number of ms below 2^32");
    CAIRN_FORWARD_IF_ERROR(cairn_wk__param_str(jb, "workdir", false, &workdir));
    if (workdir && *workdir && workdir[0] != '/')
        return cairn_err_set(CAIRN_EINVAL, "sandbox-exec: params.workdir '%.200s' is not absolute", workdir);

    struct wk_strv argv = {0}, env = {0};
    struct cairn_sandbox *sb = NULL;
    struct xq *q = NULL;
    struct xs x = {.t = t, .jb = jb};
    cairn_buf_init(&x.frame, FRAME_MAX);
    bool started = false;
    pthread_t th;
    int rc = cairn_wk__strv_array(jb, "argv", &argv);
    if (rc == CAIRN_OK && (!argv.v || argv.n == 0 || !argv.v[0][0]))
        rc = cairn_err_set(CAIRN_EINVAL, "sandbox-exec: params.argv must be a non-empty array of strings");
    if (rc == CAIRN_OK)
        rc = cairn_wk__strv_env(jb, &env);
    if (rc == CAIRN_OK)
        rc = cairn_wk__sandbox_of(t, jb, &sb, &rid);
    if (rc == CAIRN_OK)
        rc = cairn_wk__coord(t);
    if (rc != CAIRN_OK)
        goto out;
    if (!(q = cairn_calloc(1, sizeof(*q)))) {
        rc = cairn_err_set(CAIRN_ENOMEM, "out of memory for an exec");
        goto out;
    }
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv_data, NULL);
    pthread_cond_init(&q->cv_space, NULL);
    atomic_init(&q->cancel, 0);
    q->sb = sb;
    q->o = (struct cairn_exec_opts){
        .argv = argv.v,
        .env = env.v,
        .cwd = workdir && *workdir ? workdir : NULL,
        .stdin_data = in,
        .stdin_len = in_len,
        .timeout_ms = (uint32_t)timeout,
        .on_output = on_output,
        .arg = q,
        .cancel = &q->cancel,
    };
    x.q = q;
    uint64_t t0 = cairn_now_mono_ns();
    int pe = pthread_create(&th, NULL, exec_thread, q);
    if (pe != 0) {
        rc = cairn_err_set_errno(CAIRN_EIO, pe, "sandbox-exec: start the exec thread");
        goto out;
    }
    started = true;
    for (;;) {
        uint64_t now = cairn_now_mono_ns();
        take_acks(&x, now);
        if (!x.stop_rc && (rc = cairn_wk__job_check(t, jb)) != CAIRN_OK)
            stop(&x, rc);
        if (!x.stop_rc && x.n_inflight > 0 && now - x.last_ack_ns >= ACK_TIMEOUT_NS)
            stop(&x, cairn_err_set(CAIRN_ETIMEDOUT, "the coordinator acknowledged no output of job '%s' for %llu s",
                                   jb->id, (unsigned long long)(ACK_TIMEOUT_NS / 1000000000ull)));
        bool switch_pending = false, done = false;
        pull(&x, now, &switch_pending, &done);
        if (x.stop_rc) {
            x.frame.len = 0; /* nobody wants it */
            if (done)
                break;
        } else if (x.frame.len > 0 && x.n_inflight < WINDOW &&
                   (x.frame.len >= FRAME_TARGET || now - x.frame_first_ns >= COALESCE_NS || switch_pending ||
                    done)) {
            send_frame(&x, now);
            continue; /* more may be ready to go */
        } else if (done && x.frame.len == 0 && x.n_inflight == 0) {
            break;
        }
        wait_for_work(&x, now);
    }
    pthread_join(th, NULL);
    started = false;
    uint64_t ms = (cairn_now_mono_ns() - t0) / 1000000u;
    if (x.stop_rc) {
        rc = cairn_err_set(x.stop_rc, "%s", x.stop_msg);
        goto out;
    }
    int code = q->exit_code;
    rc = q->rc;
    if (rc == CAIRN_ETIMEDOUT) {
        code = 137; /* the command's fate is its exit code */
        rc = CAIRN_OK;
    } else if (rc == CAIRN_EUNAVAILABLE) {
        rc = cairn_err_set(CAIRN_ENOTFOUND, "sandbox '%s' is gone: %s", rid, q->msg);
        goto out;
    } else if (rc != CAIRN_OK) {
        rc = cairn_err_set(rc, "%s", q->msg);
        goto out;
    }
    cairn_debug("job '%s': exec '%s' in %s exited %d after %llu ms; %llu frames, %llu bytes of output", jb->id,
                argv.v[0], rid, code, (unsigned long long)ms, (unsigned long long)x.frames,
                (unsigned long long)x.bytes);
    struct cairn_mval *r = cairn_msg_set_map(res, "result");
    cairn_mval_put_i64(res, r, "exit_code", code);
    cairn_mval_put_u64(res, r, "ms", ms);
out:
    if (started) {
        atomic_store(&q->cancel, 1);
        pthread_join(th, NULL);
    }
    if (q) {
        while (q->head) {
            struct piece *p = q->head;
            q->head = p->next;
            cairn_free(p);
        }
        pthread_mutex_destroy(&q->mu);
        pthread_cond_destroy(&q->cv_data);
        pthread_cond_destroy(&q->cv_space);
        cairn_free(q);
    }
    cairn_buf_release(&x.frame);
    cairn_sandbox_release(&sb);
    cairn_wk__strv_release(&argv);
    cairn_wk__strv_release(&env);
    return rc;
}
